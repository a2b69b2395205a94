#!/usr/bin/env bash
# The device work of one optimiser step on the emulated CUDA device, per rank: host waits,
# bytes each way, kernel launches, cuBLAS/cuDNN/NCCL calls. Each config is trained twice,
# for A and for B steps (both within the first epoch), and the counters of the two runs are
# subtracted and divided by B - A, so start-up, the first uploads and the final checkpoint
# cancel out. Prints a markdown section (for results/); what each run printed goes to stderr.
#
# Usage: scripts/emu_step_counters.sh [A B]      (default 3 6)
# Needs the emulator environment first:  eval "$(scripts/emu_env.sh)"
# BIN (default target/release) holds launcher.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
a="${1:-3}"
b="${2:-6}"
bin="${BIN:-$root/target/release}"
if [[ -z ${MOCO_EMU_LIB:-} ]]; then
    echo "emu_step_counters: run eval \"\$(scripts/emu_env.sh)\" first" >&2
    exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tiny=(--preset tiny --data synthetic:128:64 --batch 8 --queue-size 64 --image-size 32)
optimized=(--preset optimized --data synthetic:64:32 --batch 4 --accumulation 1 --queue-size 256 --image-size 32
    --heartbeat-timeout 600)  # a loaded machine can leave one emulated rank over a minute behind: not a hang
# tiny with SyncBN (MoCo v3's BN): one cross-rank sum per BN layer and pass.
syncbn=("${tiny[@]}" --bn-mode sync)

# run NAME RANKS STEPS ARGS...: trains with counters written per process.
run() {
    local name="$1" ranks="$2" steps="$3"
    shift 3
    local dir="$work/$name-$ranks-$steps"
    mkdir -p "$dir"
    MOCO_EMU_COUNTERS="$dir/counters-{pid}.json" "$bin/launcher" --device cuda --gpus "$ranks" \
        --steps "$steps" --out "$dir/run" "$@" >&2
}

echo "## Device work per optimiser step on the emulated CUDA device"
echo
echo "Measured $(date -u +%Y-%m-%d) on $(uname -m) ($(nproc) cores) with \`scripts/emu_step_counters.sh $a $b\`"
echo "at commit $(git -C "$root" rev-parse --short HEAD): counters of a $b-step run minus those of an $a-step run,"
echo "divided by $((b - a)), per rank (rank 0 shown; every rank does the same work)."
echo
echo "| config | ranks | host waits | of which D2H to pageable | H2D bytes | D2H bytes | kernel launches | cuBLAS | cuDNN | NCCL calls | NCCL bytes | peak device MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for cfg in tiny optimized syncbn; do
    declare -n args="$cfg"
    for ranks in 1 2; do
        run "$cfg" "$ranks" "$a" "${args[@]}"
        run "$cfg" "$ranks" "$b" "${args[@]}"
        python3 - "$work/$cfg-$ranks-$a" "$work/$cfg-$ranks-$b" "$cfg" "$ranks" "$((b - a))" <<'PY'
import glob, json, sys
small, big, cfg, ranks, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def rank0(d):
    # The lowest pid is rank 0 (the launcher starts the ranks in order).
    # The launcher's own file (its pre-flight driver query) launched no kernel: left out.
    files = sorted(glob.glob(d + "/counters-*.json"), key=lambda f: int(f.split("-")[-1].split(".")[0]))
    ranks = [c for c in (json.load(open(f)) for f in files) if c.get("kernel_launches", 0) > 0]
    return ranks[0]
s, b = rank0(small), rank0(big)
per = lambda k: (b[k] - s[k]) / steps
pageable = (b["host_waits_by_reason"].get("cuMemcpyDtoHAsync to pageable memory", 0)
            - s["host_waits_by_reason"].get("cuMemcpyDtoHAsync to pageable memory", 0)) / steps
print(f"| {cfg} | {ranks} | {per('host_waits'):.1f} | {pageable:.1f} | {per('h2d_bytes'):,.0f} | {per('d2h_bytes'):,.0f} | "
      f"{per('kernel_launches'):.0f} | {per('cublas_calls'):.0f} | {per('cudnn_calls'):.0f} | {per('nccl_calls'):.1f} | "
      f"{per('nccl_bytes'):,.0f} | {b['peak_device_bytes'] / 2**20:.1f} |")
PY
    done
done
echo
echo "tiny: \`${tiny[*]}\`; optimized-shaped: \`${optimized[*]}\` (full width, AMP, recompute, AdamW);"
echo "syncbn: tiny with \`--bn-mode sync\`."
