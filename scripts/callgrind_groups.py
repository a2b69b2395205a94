#!/usr/bin/env python3
"""Groups callgrind_annotate's self costs (file:function lines) into the CPU step's op families
and prints a markdown table of instructions per step (see scripts/callgrind_step.sh).

A line is classified by its function first (allocation, copies, GEMM micro-kernels), then by
the source file its instructions came from (inlined code keeps its own file): batchnorm.rs,
im2col.rs, conv.rs, elementwise.rs, pool.rs, ... under kernels/src/cpu.
"""

import re
import sys

sys.dont_write_bytecode = True

RULES = [
    ("allocation (calloc zeroing, malloc, free)", r"memset|calloc|malloc|_int_free|\bfree\b|cfree|realloc|sysmalloc|mmap|munmap"),
    ("memcpy", r"memcpy|memmove"),
    ("gemm crate (packing, micro-kernels)", r"gemm_f32|gemm_common|gemm-common|gemm-0|gemm_basic|microkernel|pack_"),
    ("im2col / col2im", r"kernels/src/cpu/im2col\.rs"),
    ("conv.rs (chunking, partial sums)", r"kernels/src/cpu/conv\.rs"),
    ("batch norm", r"kernels/src/cpu/batchnorm\.rs"),
    ("elementwise (ReLU, add, fp16 round)", r"kernels/src/cpu/elementwise\.rs"),
    ("pooling", r"kernels/src/cpu/pool\.rs"),
    ("softmax / loss", r"kernels/src/cpu/softmax\.rs"),
    ("optimiser", r"kernels/src/cpu/optim\.rs"),
    ("other kernels/src/cpu", r"kernels/src/cpu/"),
    ("rayon scheduling", r"rayon|crossbeam"),
]


def main() -> int:
    path, steps = sys.argv[1], int(sys.argv[2])
    groups, total = {}, 0
    line_re = re.compile(r"^\s*([\d,]+) \([ \d.]+%\)\s+(.*)$")
    in_body = False
    for line in open(path):
        if "file:function" in line:
            in_body = True
            continue
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        if not in_body:
            continue
        m = line_re.match(line)
        if not m:
            continue
        ir, what = int(m.group(1).replace(",", "")), m.group(2)
        name = "other (std, core iterators, worker)"
        # Inlined std code (zip.rs, iterator.rs...) is charged to the function it was inlined in.
        for g, pat in RULES:
            if re.search(pat, what):
                name = g
                break
        else:
            fn = what.split(":", 1)[-1]
            for g, pat in RULES:
                if re.search(pat.replace(r"kernels/src/cpu/", r"moco_kernels::cpu::").replace(r"\.rs", ""), fn):
                    name = g
                    break
        groups[name] = groups.get(name, 0) + ir
    print(f"| op family (self cost) | instructions per step (M) | share |")
    print("|---|---|---|")
    for g, ir in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {g} | {ir / steps / 1e6:.1f} | {ir / total * 100:.1f}% |")
    print(f"| **total** | **{total / steps / 1e6:.1f}** | 100% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
