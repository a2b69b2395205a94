#!/usr/bin/env python3
"""Ratios and the results file for scripts/compare.sh (stdlib only).

Reads the tagged JSON lines compare.sh collected (one per run of `launcher bench` or
scripts/pytorch_reference.py), prints the comparison and writes a markdown results file with
the machine, the commands, the figures and what differs between the two sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone

sys.dont_write_bytecode = True

MIB = 2**20


def mib(b) -> str:
    return "-" if b is None else f"{b / MIB:.1f} MiB"


def num(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def step_memory(r):
    """Host memory of the step: peak RSS minus the RSS before the model (CPU)."""
    if r.get("peak_memory_kind") == "process_peak_rss" and r.get("baseline_rss_bytes") is not None:
        return r["peak_memory_bytes"] - r["baseline_rss_bytes"]
    return r.get("peak_memory_bytes")


def phase_ms(rows):
    """Median ms per step of each phase: share x median step, per run, then the median."""
    phases = {}
    for r in rows:
        for k, v in (r.get("phase_share") or {}).items():
            phases.setdefault(k, []).append(v * r["median_step_s"] * 1e3)
    return {k: statistics.median(v) for k, v in phases.items()}


CPU_DIFFERENCES = """\
- Same work: ResNet-50 topology at width 0.125 (tiny) or 1 (full64) and 64 px, the tiny preset's projector/predictor
  and queue, SGD (momentum 0.9), shuffle BN with 2 groups on the key side, own-image masking,
  fp32, symmetric loss, EMA, enqueue; both sides time warm steps ended the same way and take
  the median.
- Threads: our rayon compute pool and torch.set_num_threads get the same count. Ours also has
  a loader thread; in the `pool` runs it has finished before timing starts.
- Inputs: ours reuses 4 batches made by the real loader (augmented synthetic tiles, NHWC f32,
  copied into the backend's buffers each step); the reference reuses 4 random NCHW tensors.
  The `loader` rows run ours with the live loader instead (augmentation on the same 2 cores).
- Kernels: ours is the project's CPU backend (NHWC, im2col + the `gemm` crate, hand-written
  BN/pooling); PyTorch uses its own CPU kernels (oneDNN/MKL-DNN convolutions, NCHW).
- Shuffle BN: ours permutes on the host and computes per-group statistics in one BN pass;
  the reference permutes the batch and runs the native BN once per group (`torch.cat`).
- Loss: ours computes the queue block through the sharded-queue path (log-sum-exp pairs, as on
  W ranks, here W = 1); the reference concatenates [batch | queue] logits.
- Phases: ours are exclusive span times (data, forward incl. EMA/keys/loss, backward, comm,
  optimizer incl. enqueue, other = untraced); the reference splits its wall time into forward,
  backward and optimizer (incl. enqueue) at the same boundaries.
- Memory: process peak RSS on both sides, minus the RSS before the model was built (ours:
  after the synthetic tiles were rendered; PyTorch: after `import torch`, ~700 MB of library).
"""

CUDA_DIFFERENCES = """\
- Same work: torchvision ResNet-50 topology at 224 px, projector 2048-4096-256, predictor
  256-4096-256, queue of ~76800 keys (the multiple of 2 x batch nearest to it), AdamW, shuffle
  BN with 2 groups on the key side, AMP (fp16 compute, fp32 masters, dynamic loss scale),
  recompute of every bottleneck when on; accumulation 1; one synchronize per step on both sides.
- Kernels: ours runs cuDNN convolutions and cuBLAS GEMMs in NHWC fp16 plus NVRTC-compiled
  kernels for BN, pooling, softmax and the optimiser; PyTorch uses autocast + channels_last
  with cudnn.benchmark on.
- Inputs: ours copies a host batch (from a pool of 4 loader batches) to the GPU inside each
  step; the reference's 4 input tensors already live on the GPU.
- Memory: ours is the arena's peak of live buffers after the warm-up; PyTorch's is
  torch.cuda.max_memory_allocated after the warm-up. Neither counts the CUDA context.
  The 8 GiB search caps only those allocators (our --vram-limit, torch's memory fraction).
"""


def spread(vals, fmt="{:.1f}") -> str:
    """median (min-max) of a list, or '-'."""
    if not vals:
        return "-"
    return f"{fmt.format(statistics.median(vals))} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"


CASE_TITLES = {
    "tiny": "tiny preset (width 0.125, 64 px, batch 32)",
    "full64": "full-width ResNet-50, 64 px, batch 8 (tiny preset's heads, queue, SGD, shuffle BN)",
}


def cpu_case(rows, case, out):
    ours = [r for r in rows if r["side"] == "moco_rs" and r["case"] == case and r["purpose"] == "step" and r.get("median_step_s")]
    ref = [r for r in rows if r["side"] == "pytorch" and r["case"] == case and r["purpose"] == "step" and r.get("median_step_s")]
    out.append(f"### {CASE_TITLES.get(case, case)}")
    out.append("")
    if not ours or not ref:
        out.append("**Incomplete: a side produced no figures; see the failures below.**\n")
        return
    batch = ours[0]["batch"]
    o_ms = [r["median_step_s"] * 1e3 for r in ours]
    t_ms = [r["median_step_s"] * 1e3 for r in ref]
    # Paired ratios: repeat r of ours against repeat r of the reference (run back to back).
    t_by_rep = {r["repeat"]: r["median_step_s"] for r in ref}
    pairs = [r["median_step_s"] / t_by_rep[r["repeat"]] for r in ours if r["repeat"] in t_by_rep]
    o_mem = statistics.median(step_memory(r) for r in ours)
    t_mem = statistics.median(step_memory(r) for r in ref)
    out.append("| figure: median (min-max) over repeats | moco-rs | PyTorch | moco-rs / PyTorch |")
    out.append("|---|---|---|---|")
    out.append(
        f"| step time (ms) | {spread(o_ms)} | {spread(t_ms)} | {ratio(statistics.median(o_ms), statistics.median(t_ms))} "
        f"(paired: {spread(pairs, '{:.2f}')}) |"
    )
    o_ips = [batch / (x / 1e3) for x in o_ms]
    t_ips = [batch / (x / 1e3) for x in t_ms]
    out.append(
        f"| images/s | {spread(o_ips)} | {spread(t_ips)} | {ratio(statistics.median(o_ips), statistics.median(t_ips))} |"
    )
    out.append(f"| step host memory (peak RSS - RSS before the model) | {mib(o_mem)} | {mib(t_mem)} | {ratio(o_mem, t_mem)} |")
    op, tp = phase_ms(ours), phase_ms(ref)
    for p in ["data", "forward", "backward", "comm", "optimizer", "other"]:
        o, t = op.get(p), tp.get(p)
        out.append(
            f"| {p} (ms/step, median) | {'-' if o is None else f'{o:.1f}'} | {'-' if t is None else f'{t:.1f}'} | "
            f"{ratio(o, t) if o and t else '-'} |"
        )
    out.append("")
    out.append(
        f"{len(ours)} repeat(s) of ours, {len(ref)} of the reference, each the median of its timed steps; "
        f"batch {batch}, {ours[0]['threads']} threads each. The paired ratio divides each repeat of ours "
        "by the reference run next to it."
    )
    out.append("")


def cpu_report(rows, out):
    cases = list(dict.fromkeys(r["case"] for r in rows if r["purpose"] == "step"))
    out.append(
        "Rule: every run that finished is counted; a run that failed is left out and listed under "
        "'Failed runs'. Nothing else is discarded: the medians resist a few disturbed repeats and the "
        "min-max shows them."
    )
    out.append("")
    for case in cases:
        cpu_case(rows, case, out)
    ours = [r for r in rows if r["side"] == "moco_rs" and r["case"] == "tiny" and r["purpose"] == "step" and r.get("median_step_s")]
    loader = [r for r in rows if r["side"] == "moco_rs" and r["purpose"] == "loader" and r.get("median_step_s")]
    if loader and ours:
        batch = ours[0]["batch"]
        o_s = med(ours, "median_step_s")
        l_s = med(loader, "median_step_s")
        lp = med(loader, "loader_pairs_per_s")
        data = statistics.median(r["phase_share"]["data"] for r in loader)
        out.append(
            f"With the live loader (tiny, augmenting on the same cores): median step {l_s * 1e3:.1f} ms "
            f"({batch / l_s:.1f} images/s), {data * 100:.1f}% of it waiting for data. The loader alone "
            f"makes {lp:.0f} two-view pairs/s with {loader[0]['loader_threads']} thread(s), "
            f"{lp / (batch / o_s):.1f}x what the step consumes."
        )
        out.append("")
    out.append("Each run, in the order run:")
    out.append("")
    out.append("| case | side | feed | repeat | median step (ms) | min-max over steps (ms) | images/s | peak RSS | load average |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r.get("median_step_s"):
            continue
        mm = f"{r['step_min_s'] * 1e3:.1f}-{r['step_max_s'] * 1e3:.1f}" if "step_min_s" in r else "-"
        feed = r.get("feed", "fixed tensors")
        out.append(
            f"| {r['case']} | {r['side']} | {feed} | {r['repeat']} | {r['median_step_s'] * 1e3:.1f} | {mm} | "
            f"{r['images_per_s']:.1f} | {mib(r['peak_memory_bytes'])} | {r.get('load_average', '-')} |"
        )


def cuda_report(rows, out):
    cases = sorted(
        {r["case"] for r in rows if r["purpose"] == "step"},
        key=lambda c: (int(c.split("-")[0][1:]), c),
    )
    if cases:
        out.append("| batch | recompute | moco-rs img/s | PyTorch img/s | ratio | moco-rs peak | PyTorch peak | ratio | planned (shapes) | measured / planned |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        o = [r for r in rows if r["case"] == c and r["side"] == "moco_rs" and r.get("median_step_s")]
        t = [r for r in rows if r["case"] == c and r["side"] == "pytorch" and r.get("median_step_s")]
        b, rc = c.split("-")
        oi, ti = med(o, "images_per_s"), med(t, "images_per_s")
        om, tm = med(o, "peak_memory_bytes"), med(t, "peak_memory_bytes")
        plan = med(o, "planned_shapes_bytes")
        out.append(
            f"| {b[1:]} | {'on' if rc == 'rc1' else 'off'} | {num(oi)} | {num(ti)} | {ratio(oi, ti)} | "
            f"{mib(om)} | {mib(tm)} | {ratio(om, tm)} | {mib(plan)} | {ratio(om, plan)} |"
        )
    fits = [r for r in rows if r["purpose"] == "fit-result"]
    if fits:
        out.append("")
        out.append("Largest batch (multiple of 8) whose steps fit 8 GiB:")
        out.append("")
        out.append("| recompute | moco-rs | PyTorch |")
        out.append("|---|---|---|")
        for rc in sorted({r["case"] for r in fits}):
            get = lambda side: next((r["largest_batch"] for r in fits if r["case"] == rc and r["side"] == side), "-")
            out.append(f"| {'on' if rc.endswith('1') else 'off'} | {get('moco_rs')} | {get('pytorch')} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--commands", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.runs) if l.strip()]
    machine = dict(l.rstrip("\n").split("=", 1) for l in open(a.machine) if "=" in l)
    commands = [l.rstrip("\n") for l in open(a.commands) if l.strip()]

    out = []
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "CPU: tiny preset and full width at 64 px" if a.device == "cpu" else "CUDA: 224 px, optimized preset's step"
    out.append(f"# moco-rs vs PyTorch reference, {title}, {when}")
    out.append("")
    out.append("Measured by `scripts/compare.sh" + (" --device cuda" if a.device == "cuda" else "") + "`.")
    out.append("")
    out.append("## Machine")
    out.append("")
    for k in ["card", "driver", "cpu", "cores", "uname", "rustc", "commit", "torch", "python"]:
        if machine.get(k):
            out.append(f"- {k}: {machine[k]}")
    if machine.get("load_start"):
        out.append(f"- load average (1, 5, 15 min) before the first run: {machine['load_start']}")
    loads = machine.get("loads", "").split()
    if loads:
        ones = [float(x) for x in loads[0::3]]
        out.append(
            f"- load average (1 min, our own previous run included) before each run: min {min(ones):.2f}, median {statistics.median(ones):.2f}, "
            f"max {max(ones):.2f}; at the end: {machine.get('load_end', '?')}"
        )
    out.append("")
    out.append("## Figures")
    out.append("")
    (cpu_report if a.device == "cpu" else cuda_report)(rows, out)
    failed = [r for r in rows if r.get("exit") not in (0, 3, None)]
    if failed:
        out.append("")
        out.append("Failed runs:")
        out.append("")
        for r in failed:
            out.append(f"- {r['side']} {r['case']} ({r['purpose']}): exit {r['exit']}: `{str(r.get('error', ''))[-300:]}`")
    out.append("")
    out.append("## What differs between the two sides")
    out.append("")
    out.append(CPU_DIFFERENCES if a.device == "cpu" else CUDA_DIFFERENCES)
    out.append("## Commands")
    out.append("")
    out.append("```")
    out.extend(commands)
    out.append("```")
    out.append("")
    out.append("## Raw JSON lines")
    out.append("")
    out.append("```")
    out.extend(json.dumps(r, sort_keys=True) for r in rows)
    out.append("```")
    text = "\n".join(out) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    # The figures on the terminal: everything up to "What differs".
    print(text.split("## What differs")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
