#!/usr/bin/env bash
# GPU verification run: on a GPU box, from the repository root, with release binaries built
# elsewhere by scripts/prepare_gpu_bin.sh in gpu-bin/. Writes everything under $OUT:
#   $OUT/logs/*.txt                 one log per step
#   $OUT/results/gpu-<date>.md      the dated results file to commit (card, driver, tables)
#
# Steps (each recorded as ok / FAILED / skipped with its time; a failing step never stops
# the others):
#   env        scripts/gpu_env.sh: LD_LIBRARY_PATH from the nvidia wheels, libnccl.so link
#   smi        nvidia-smi and the card/driver summary
#   selftest   gpu-bin/selftest --device cuda: every Backend op, CPU vs CUDA (fp16 and fp32)
#   worker     gpu-bin/worker selftest --device cuda (the same through the product's CLI)
#   train      gpu-bin/launcher --device cuda --preset optimized --vram-limit 8GiB --steps 20
#   pair       scripts/two_ranks_one_gpu.sh: two ranks on GPU 0 over NCCL (own NCCL_HOSTID each),
#              then the same pair with --nccl off (the TCP ring)
#   pytorch    scripts/pytorch_reference.py at batch 64 (and 96 if time is left), if present
#
# Usage: OUT=/some/dir scripts/gpu_verify.sh [step ...]      (default: all steps)
# Dry run on the emulated device (CI, machines without a GPU): `eval "$(scripts/emu_env.sh)"`
# first; with MOCO_EMU_LIB set the env step keeps that environment instead of looking for
# NVIDIA's wheels, the card is the emulator's, and the results file says DRY RUN.
# Environment: GPU_BIN (default gpu-bin), DEADLINE_S (default 570: the whole run, so the
# report is written inside a 10-minute limit), TRAIN_ARGS (replaces the launcher arguments).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-$root/gpu-out}"
bin="${GPU_BIN:-$root/gpu-bin}"
deadline_s="${DEADLINE_S:-570}"
report_reserve_s=20
started=$SECONDS
day="$(date -u +%Y-%m-%d)"
logs="$OUT/logs"
mkdir -p "$logs" "$OUT/results"
say() { echo "gpu_verify: $*" >&2; }

steps=("$@")
if [[ ${#steps[@]} == 0 ]]; then steps=(env smi selftest worker train pair pytorch); fi
wanted() { local s; for s in "${steps[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

# name|status|seconds|log
results=()
record() { results+=("$1|$2|$3|$4"); say "$1: $2 (${3}s)"; }

left() { echo $((deadline_s - (SECONDS - started) - report_reserve_s)); }

# run_step NAME LOG LIMIT_S CMD...: runs CMD with a time limit (capped by the deadline),
# output to $logs/LOG, and records the outcome.
run_step() {
    local name="$1" log="$2" limit="$3"
    shift 3
    local remaining
    remaining="$(left)"
    if ((remaining < 10)); then
        record "$name" "skipped (no time left)" 0 "$log"
        return 0
    fi
    ((limit > remaining)) && limit=$remaining
    local t0=$SECONDS rc=0
    say "$name: $* (limit ${limit}s)"
    if timeout --kill-after=10 "$limit" "$@" >"$logs/$log" 2>&1; then rc=0; else rc=$?; fi
    local status="ok"
    if ((rc == 124 || rc == 137)); then
        status="FAILED (timed out after ${limit}s)"
    elif ((rc != 0)); then
        status="FAILED (exit $rc)"
    fi
    record "$name" "$status" $((SECONDS - t0)) "$log"
}

have_bin() {
    if [[ -x $bin/$1 ]]; then return 0; fi
    record "$2" "skipped (no $bin/$1: run scripts/prepare_gpu_bin.sh where Rust is installed)" 0 "-"
    return 1
}

emulated="${MOCO_EMU_LIB:-}"

# ---- env ----
if wanted env && [[ -n $emulated ]]; then
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >"$logs/gpu_env.txt"
    record env "ok (emulated device from $emulated)" 0 gpu_env.txt
elif wanted env; then
    t0=$SECONDS
    if exports="$(scripts/gpu_env.sh 2>"$logs/gpu_env.txt")"; then
        eval "$exports"
        echo "$exports" >>"$logs/gpu_env.txt"
        record env ok $((SECONDS - t0)) gpu_env.txt
    else
        record env "FAILED (exit $?)" $((SECONDS - t0)) gpu_env.txt
    fi
fi

# ---- smi ----
card="unknown card"
driver="unknown driver"
if wanted smi && [[ -n $emulated ]]; then
    card="${MOCO_EMU_NAME:-moco-emu emulated GPU} (emulated device, kernels/emu)"
    driver="none (emulated)"
    record smi "skipped (emulated device: no nvidia-smi)" 0 -
elif wanted smi; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        run_step smi nvidia-smi.txt 60 nvidia-smi
        card="$(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -n1 || echo unknown)"
        driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || echo unknown)"
        cuda_version="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1 || true)"
        driver="$driver (CUDA ${cuda_version:-?})"
    else
        record smi "FAILED (no nvidia-smi)" 0 -
    fi
fi

# ---- self-tests ----
if wanted selftest && have_bin selftest selftest; then
    run_step selftest selftest-kernels.txt 300 "$bin/selftest" --device cuda
fi
if wanted worker && have_bin worker worker; then
    run_step worker selftest-worker.txt 300 "$bin/worker" selftest --device cuda
fi

# ---- a short training run under an emulated 8 GiB card ----
if wanted train && have_bin launcher train; then
    read -r -a train_args <<<"${TRAIN_ARGS:---device cuda --preset optimized --vram-limit 8GiB --steps 20 --data synthetic --out $OUT/run-optimized}"
    run_step train train-optimized.txt 300 "$bin/launcher" "${train_args[@]}"
fi

# ---- two ranks on one GPU: NCCL with per-process NCCL_HOSTID, then the ring ----
if wanted pair && have_bin worker pair; then
    run_step pair-nccl two-ranks-nccl.txt 120 scripts/two_ranks_one_gpu.sh "$bin" "$logs" nccl
    run_step pair-ring two-ranks-ring.txt 120 scripts/two_ranks_one_gpu.sh "$bin" "$logs" off
fi

# ---- PyTorch reference ----
if wanted pytorch; then
    if [[ -n $emulated ]]; then
        record pytorch "skipped (emulated device: PyTorch needs a real GPU)" 0 -
    elif [[ ! -f scripts/pytorch_reference.py ]]; then
        record pytorch "skipped (no scripts/pytorch_reference.py)" 0 -
    elif ! python3 -c 'import torch, torchvision' >/dev/null 2>&1; then
        record pytorch "skipped (python3 has no torch/torchvision)" 0 -
    else
        for batch in 64 96; do
            run_step "pytorch-b$batch" "pytorch-b$batch.txt" 240 \
                python3 scripts/pytorch_reference.py --device cuda --batch "$batch" --steps 20 --warmup 5
        done
    fi
fi

# ---- the results file ----
md="$OUT/results/gpu-$day.md"
[[ -n $emulated ]] && md="$OUT/results/gpu-dryrun-$day.md"
tail_of() { if [[ -f $logs/$1 ]]; then tail -n "$2" "$logs/$1"; else echo "(no log)"; fi; }
{
    if [[ -n $emulated ]]; then
        echo "# GPU verification, $day: DRY RUN on the emulated device (no GPU; numbers are not GPU figures)"
    else
        echo "# GPU verification, $day"
    fi
    echo
    echo "- card: $card"
    echo "- driver: $driver"
    if [[ -f $bin/BUILD_INFO ]]; then sed 's/^/- /' "$bin/BUILD_INFO"; fi
    echo "- host: $(uname -srm), $(nproc 2>/dev/null || echo '?') CPUs"
    echo "- run by scripts/gpu_verify.sh in $((SECONDS - started)) s"
    echo
    echo "| step | result | seconds | log |"
    echo "|------|--------|---------|-----|"
    for r in "${results[@]}"; do
        IFS='|' read -r name status secs log <<<"$r"
        echo "| $name | $status | $secs | $log |"
    done
    echo
    echo "## Backend self-test (CPU reference vs CUDA)"
    echo
    echo '```'
    tail_of selftest-kernels.txt 200
    echo '```'
    if [[ -f $logs/selftest-worker.txt ]]; then
        echo
        echo "## worker selftest --device cuda (last lines)"
        echo
        echo '```'
        tail_of selftest-worker.txt 15
        echo '```'
    fi
    if [[ -f $logs/train-optimized.txt ]]; then
        echo
        echo "## Training: optimized preset, --vram-limit 8GiB, 20 steps (last lines)"
        echo
        echo '```'
        tail_of train-optimized.txt 40
        echo '```'
        metrics="$(find "$OUT/run-optimized" -name metrics.jsonl 2>/dev/null | head -n1 || true)"
        if [[ -n $metrics ]]; then
            echo
            echo "metrics.jsonl (last 3 lines):"
            echo
            echo '```'
            tail -n 3 "$metrics"
            echo '```'
        fi
    fi
    for mode in nccl ring; do
        if [[ -f $logs/two-ranks-$mode.txt ]]; then
            echo
            echo "## Two ranks on one GPU, $mode (last lines of each rank)"
            echo
            echo '```'
            tail_of "two-ranks-$mode.txt" 40
            echo '```'
        fi
    done
    for batch in 64 96; do
        if [[ -f $logs/pytorch-b$batch.txt ]]; then
            echo
            echo "## PyTorch reference, batch $batch (summary line)"
            echo
            echo '```'
            tail_of "pytorch-b$batch.txt" 1
            echo '```'
        fi
    done
} >"$md"
say "wrote $md"

failed=0
for r in "${results[@]}"; do
    [[ $r == *"|FAILED"* ]] && failed=1
done
exit $failed
