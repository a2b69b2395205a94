#!/usr/bin/env bash
# What gradient buckets overlapping the backward change per optimiser step on the emulated
# CUDA device, 2 ranks over the NCCL stand-in: NCCL all-reduces, event records, stream waits
# (device-side ordering between the backend's stream and the gradient stream), host waits,
# NCCL bytes. Each --grad-bucket value is trained for A and for B steps and the counters are
# subtracted and divided by B - A (as scripts/emu_step_counters.sh does), rank 0 shown.
#
# The emulator runs a stream only when the host waits (or a collective is queued), so it shows
# the structure of the overlap, not its time: on a GPU, scripts/gpu_verify.sh and
# `launcher bench --device cuda --gpus 2 --grad-bucket N` measure the step time itself.
#
# Usage: scripts/emu_grad_overlap.sh [A B [BUCKET...]]   (default 2 4, buckets 0 65536 4096)
# Needs the emulator on the library path (eval "$(scripts/emu_env.sh)"); BIN (default
# target/release) holds launcher. CONFIG=optimized takes the optimized-shaped run instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
a="${1:-2}"
b="${2:-4}"
shift $(( $# >= 2 ? 2 : $# ))
buckets=("$@")
[[ ${#buckets[@]} -gt 0 ]] || buckets=(0 65536 4096)
bin="${BIN:-$root/target/release}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

case "${CONFIG:-tiny}" in
    tiny) args=(--preset tiny --data synthetic:128:64 --batch 8 --queue-size 64 --image-size 32 --no-amp) ;;
    # A ResNet-50 step takes minutes on the emulator; on a loaded machine one rank can trail the
    # other by more than the default 60 s, which the NCCL watchdog would take for a hung peer.
    optimized) args=(--preset optimized --data synthetic:64:32 --batch 4 --accumulation 1 --queue-size 256 --image-size 32
        --heartbeat-timeout 600) ;;
    *) echo "emu_grad_overlap: CONFIG is tiny or optimized" >&2; exit 2 ;;
esac

echo "| config | --grad-bucket | NCCL all-reduces | NCCL all-gathers | event records | stream waits | host waits | NCCL MiB | kernel launches |"
echo "|---|---|---|---|---|---|---|---|---|"
for bucket in "${buckets[@]}"; do
    for steps in "$a" "$b"; do
        dir="$work/$bucket-$steps"
        mkdir -p "$dir"
        MOCO_EMU_COUNTERS="$dir/counters-{pid}.json" "$bin/launcher" --device cuda --gpus 2 --steps "$steps" \
            --grad-bucket "$bucket" --out "$dir/run" "${args[@]}" >&2
    done
    python3 - "$work/$bucket-$a" "$work/$bucket-$b" "${CONFIG:-tiny}" "$bucket" "$((b - a))" <<'PY'
import glob, json, sys
small, big, cfg, bucket, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def rank0(d):
    # The launcher's own file (its pre-flight driver query) launched no kernel: left out.
    files = sorted(glob.glob(d + "/counters-*.json"), key=lambda f: int(f.split("-")[-1].split(".")[0]))
    ranks = [c for c in (json.load(open(f)) for f in files) if c.get("kernel_launches", 0) > 0]
    return ranks[0]
s, b = rank0(small), rank0(big)
per = lambda f: (f(b) - f(s)) / steps
nccl = lambda name: per(lambda c: c["nccl_by_name"].get(name, 0))
print(f"| {cfg} | {bucket} | {nccl('ncclAllReduce'):.1f} | {nccl('ncclAllGather'):.1f} | "
      f"{per(lambda c: c['event_records']):.1f} | {per(lambda c: c['stream_waits']):.1f} | "
      f"{per(lambda c: c['host_waits']):.1f} | {per(lambda c: c['nccl_bytes']) / 2**20:.2f} | "
      f"{per(lambda c: c['kernel_launches']):.0f} |")
PY
done
