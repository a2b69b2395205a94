#!/usr/bin/env bash
# Registers, spills, stack and shared memory per CUDA kernel, for each architecture, with the
# ptxas of NVIDIA's nvidia-cuda-nvcc wheel. No GPU needed.
#
# Usage: scripts/ptxas_report.sh [sm_80 sm_86 sm_90]
# The PTX comes from the same NVRTC compilation the run-time loader uses (dump_ptx example),
# then ptxas -v assembles it for the architecture and reports per kernel.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
eval "$(scripts/setup_nvrtc.sh --ptxas)"

archs=("$@")
if [[ ${#archs[@]} == 0 ]]; then archs=(sm_80 sm_86 sm_90); fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --quiet -p moco-kernels --example dump_ptx

for arch in "${archs[@]}"; do
    cargo run --quiet -p moco-kernels --example dump_ptx -- "$work/$arch" "$arch" >/dev/null
    echo "== $arch ($("$MOCO_PTXAS" --version | tail -n1))"
    printf '%-28s %5s %7s %7s %7s %6s\n' kernel regs spill_st spill_ld stack smem
    for ptx in "$work/$arch"/*.ptx; do
        # ptxas -v prints, per entry: "Compiling entry function 'NAME'", then
        # "N bytes stack frame, N bytes spill stores, N bytes spill loads", then
        # "Used N registers, ... N bytes smem ...". Collect them into one row per kernel.
        "$MOCO_PTXAS" -arch="$arch" -v "$ptx" -o /dev/null 2>&1 | awk '
            /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2); stack = st = ld = 0 }
            /bytes stack frame/ { for (i = 1; i <= NF; i++) { if ($(i+1) == "bytes" && $(i+2) == "stack") stack = $i; if ($(i+2) == "spill" && $(i+3) ~ /^stores/) st = $i; if ($(i+2) == "spill" && $(i+3) ~ /^loads/) ld = $i } }
            /Used [0-9]+ registers/ {
                regs = 0; smem = 0
                for (i = 1; i <= NF; i++) { if ($i == "Used") regs = $(i+1); if ($(i+2) ~ /^smem/) smem = $i }
                printf "%-28s %5s %7s %7s %7s %6s\n", name, regs, st, ld, stack, smem
            }'
    done
done
