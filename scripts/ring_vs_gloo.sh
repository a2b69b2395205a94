#!/usr/bin/env bash
# Our TCP ring all-reduce (worker/examples/ring_bench.rs) next to torch.distributed's Gloo
# all-reduce (scripts/gloo_allreduce_bench.py), on loopback, at the same sizes and process
# counts, measured the same way (slowest rank per call after a barrier, median of --iters,
# busbw = 2 (W-1)/W * bytes / time as nccl-tests defines it). Prints the table and writes
# results/<date>-ring-vs-gloo.md.
#
#   scripts/ring_vs_gloo.sh [--worlds "2 4"] [--sizes-mb 1,4,16,64,256] [--iters 7]
#                           [--repeats 3] [--out DIR]
#
# Each (world, side) pair runs --repeats times, interleaved ours/Gloo, and the report takes
# the median busbw per size (loopback numbers move with whatever else the machine runs).
# Environment: PYTHON (a python with torch; default: the .venv-fixtures venv made by
# scripts/torch_venv.sh), RING_BENCH (a ring_bench binary; default: cargo build --release).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)" # before anything of ours runs
say() { echo "ring_vs_gloo: $*" >&2; }
die() { say "$*"; exit 1; }

worlds="2 4" sizes="1,4,16,64,256" iters=7 repeats=3 out_dir="$root/results"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --worlds) worlds="$2"; shift 2 ;;
    --sizes-mb) sizes="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

if [[ -n ${RING_BENCH:-} ]]; then
    ring="$RING_BENCH"
else
    say "cargo build --release -p moco-worker --example ring_bench"
    cargo build --release -p moco-worker --example ring_bench >&2
    ring="$root/target/release/examples/ring_bench"
fi
python="$(scripts/torch_venv.sh)"

work="$(mktemp -d "${TMPDIR:-/tmp}/moco-ring-gloo.XXXXXX")"
trap 'rm -rf "$work"' EXIT
: >"$work/commands.txt"
: >"$work/loads.txt"

# side world repeat cmd... -> $work/<side>.w<world>.r<repeat>.txt
bench() {
    local side="$1" w="$2" r="$3"
    shift 3
    echo "$*" >>"$work/commands.txt"
    echo "$side $w $r $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/loads.txt"
    say "$side, world $w, repeat $r"
    "$@" >"$work/$side.w$w.r$r.txt" 2>"$work/$side.w$w.r$r.err" || die "$side world $w failed: $(tail -n 3 "$work/$side.w$w.r$r.err")"
}

for ((r = 1; r <= repeats; r++)); do
    for w in $worlds; do
        bench ring "$w" "$r" "$ring" --world "$w" --sizes-mb "$sizes" --iters "$iters"
        bench gloo "$w" "$r" "$python" scripts/gloo_allreduce_bench.py --world "$w" --sizes-mb "$sizes" --iters "$iters"
    done
done

{
    echo "cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)"
    echo "cores=$(nproc)"
    echo "load_start=$load_start"
    echo "uname=$(uname -a)"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "torch=$("$python" -c 'import torch; print(torch.__version__)')"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$work/machine.txt"
mkdir -p "$out_dir"
md="$out_dir/$(date -u +%Y-%m-%d)-ring-vs-gloo.md"
"$python" - "$work" "$md" "$iters" <<'PY'
import glob, json, os, re, statistics, sys
from datetime import datetime, timezone

work, md, iters = sys.argv[1], sys.argv[2], sys.argv[3]
row = re.compile(r"^\s*(\d+) MB\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")
data = {}  # (side, world, size) -> [busbw per repeat]
times = {}
for path in sorted(glob.glob(os.path.join(work, "*.w*.r*.txt"))):
    side, w, _ = os.path.basename(path).split(".")[:3]
    for line in open(path):
        m = row.match(line)
        if m:
            key = (side, int(w[1:]), int(m.group(1)))
            data.setdefault(key, []).append(float(m.group(4)))
            times.setdefault(key, []).append(float(m.group(2)))
machine = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(work, "machine.txt")) if "=" in l)
loads = [l.split() for l in open(os.path.join(work, "loads.txt"))]
ones = [float(l[3]) for l in loads]
commands = [l.rstrip("\n") for l in open(os.path.join(work, "commands.txt"))]
lines = []
when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines.append(f"# Ring all-reduce vs Gloo on loopback, {when}")
lines.append("")
lines.append("Measured by `scripts/ring_vs_gloo.sh`: worker/examples/ring_bench.rs (our TCP ring, f32 sum in")
lines.append("rank order, 512 KiB segments) against scripts/gloo_allreduce_bench.py (torch.distributed Gloo,")
lines.append("f32 SUM), one process per rank on 127.0.0.1. Each figure: the slowest rank's time of one call")
lines.append(f"after a barrier, median of {iters} calls after a warm-up; the table gives the median over")
lines.append(f"{len(set(l[2] for l in loads))} repeat(s). busbw = 2 (W-1)/W x bytes / time (nccl-tests); MB = 10^6 bytes.")
lines.append("")
lines.append("## Machine")
lines.append("")
for k in ["cpu", "cores", "uname", "rustc", "commit", "torch"]:
    lines.append(f"- {k}: {machine.get(k, '?')}")
lines.append(f"- load average (1, 5, 15 min) before the first run: {machine.get('load_start', '?')}")
lines.append(f"- load average (1 min, our own previous run included) before each run: min {min(ones):.2f}, median {statistics.median(ones):.2f}, max {max(ones):.2f}; at the end: {machine.get('load_end', '?')}")
lines.append("")
lines.append("## Bus bandwidth (GB/s)")
lines.append("")
lines.append("| ranks | size | ring time (ms) | ring busbw | Gloo time (ms) | Gloo busbw | ring / Gloo | ring busbw per repeat | Gloo busbw per repeat |")
lines.append("|---|---|---|---|---|---|---|---|---|")
keys = sorted({(w, s) for (_, w, s) in data})
for w, s in keys:
    r, g = data.get(("ring", w, s), []), data.get(("gloo", w, s), [])
    rt, gt = times.get(("ring", w, s), []), times.get(("gloo", w, s), [])
    rm = statistics.median(r) if r else None
    gm = statistics.median(g) if g else None
    f = lambda v: "-" if v is None else f"{v:.3f}"
    t = lambda v: "-" if not v else f"{statistics.median(v):.2f}"
    ratio = f"{rm / gm:.2f}" if rm and gm else "-"
    lines.append(f"| {w} | {s} MB | {t(rt)} | {f(rm)} | {t(gt)} | {f(gm)} | {ratio} | {', '.join(f'{x:.3f}' for x in r)} | {', '.join(f'{x:.3f}' for x in g)} |")
lines.append("")
lines.append("## What differs")
lines.append("")
lines.append("- Both sides are one process per rank over TCP on loopback and reduce float32 sums; the ring")
lines.append("  sums in rank order (deterministic), Gloo uses its own algorithm choice for CPU all-reduce.")
lines.append("- Gloo ranks run with torch.set_num_threads(1); the ring's ranks use one sender thread per")
lines.append("  call besides the caller. On a machine with fewer cores than 2 x ranks, both sides share")
lines.append("  the cores with each other's threads, so the 4-rank figures are CPU-bound as much as")
lines.append("  network-bound.")
lines.append("")
lines.append("## Commands")
lines.append("")
lines.append("```")
lines.extend(commands)
lines.append("```")
lines.append("")
lines.append("## Raw output (first repeat)")
for path in sorted(glob.glob(os.path.join(work, "*.w*.r1.txt"))):
    lines.append("")
    lines.append(f"{os.path.basename(path)}:")
    lines.append("")
    lines.append("```")
    lines.extend(l.rstrip("\n") for l in open(path) if not l.startswith("{"))
    lines.append("```")
text = "\n".join(lines) + "\n"
open(md, "w").write(text)
print(text.split("## What differs")[0])
PY
say "wrote $md"
