#!/usr/bin/env bash
# moco-rs against the PyTorch reference on the same machine, in one command: runs
# `launcher bench` and scripts/pytorch_reference.py at matching shapes, prints the ratios and
# writes results/<date>-compare-<device>.md (machine, commands, figures, what differs).
#
#   scripts/compare.sh                       # CPU: tiny preset + full width at 64 px, both
#                                            # sides, 5 interleaved repeats each (~8 min)
#   scripts/compare.sh --device cuda         # GPU: 224 px, batch 32/64/96/128, recompute on
#                                            # and off, then the largest batch in 8 GiB
#
# CPU: two cases, fp32, the same thread count on both sides (rayon threads =
# torch.set_num_threads): `tiny`, the tiny preset's shapes (width 0.125, 64 px, batch 32, its
# heads, queue, SGD and shuffle BN), and `full64`, the same with ResNet-50 at full width, 64 px,
# batch 8. Repeats alternate the two sides (AB, BA, ...), ours on batches from a pre-made pool
# (the step alone, as the reference measures it); one more run of ours on tiny goes through the
# live loader (does the loader keep up?). No run is discarded except failed ones (listed).
# CUDA: the optimized preset (AdamW, AMP, shuffle BN) with accumulation 1 and a queue of
# ~76800 keys (a multiple of 2 x batch), against torchvision-topology ResNet-50 with AMP and
# channels_last. The 8 GiB search caps our arena (--vram-limit) and torch's caching allocator
# (set_per_process_memory_fraction) and bisects the batch over multiples of 8.
#
# Options: --device cpu|cuda  --steps N  --warmup N  --repeats N  --threads N  --cases "tiny full64"
#          --batches "32 64 96 128"  --recompute on|off|both  --only all|throughput|fit
#          --fit-max B (largest batch tried in the 8 GiB search, default 512)
#          --out DIR (where the results file goes; default results/)
# On a GPU machine with a 10-minute limit per command, split the run, e.g.
#   scripts/compare.sh --device cuda --only throughput --recompute off --out "$OUT/results"
#   scripts/compare.sh --device cuda --only throughput --recompute on --out "$OUT/results"
#   scripts/compare.sh --device cuda --only fit --out "$OUT/results"
# Environment: LAUNCHER (a launcher binary; default: cargo build --release, or gpu-bin/launcher
# where there is no cargo), PYTHON (a python with torch; CPU default: the .venv-fixtures venv,
# made by scripts/torch_venv.sh; CUDA default: python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)" # before anything of ours runs
say() { echo "compare: $*" >&2; }
die() { say "$*"; exit 1; }

device=cpu steps="" warmup="" repeats="" threads="" batches="32 64 96 128" recompute=both only=all cases="tiny full64"
fit_max=512 out_dir="$root/results"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --device) device="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batches) batches="$2"; shift 2 ;;
    --cases) cases="$2"; shift 2 ;;
    --recompute) recompute="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --fit-max) fit_max="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
case "$device" in cpu | cuda) ;; *) die "--device must be cpu or cuda" ;; esac
case "$recompute" in on) rc_modes=(1) ;; off) rc_modes=(0) ;; both) rc_modes=(0 1) ;; *) die "--recompute on|off|both" ;; esac
if [[ $device == cpu ]]; then
    steps="${steps:-20}" warmup="${warmup:-3}" repeats="${repeats:-5}" threads="${threads:-$(nproc)}"
else
    steps="${steps:-20}" warmup="${warmup:-5}" repeats="${repeats:-1}"
fi

# ---- the two programs ----
if [[ -n ${LAUNCHER:-} ]]; then
    launcher="$LAUNCHER"
elif command -v cargo >/dev/null 2>&1; then
    say "cargo build --release -p moco-launcher"
    cargo build --release -p moco-launcher >&2
    launcher="$root/target/release/launcher"
elif [[ -x $root/gpu-bin/launcher ]]; then
    launcher="$root/gpu-bin/launcher"
else
    die "no launcher: install Rust, set LAUNCHER, or run scripts/prepare_gpu_bin.sh elsewhere"
fi
if [[ $device == cuda ]]; then
    eval "$(scripts/gpu_env.sh)"
    python="${PYTHON:-python3}"
else
    python="$(scripts/torch_venv.sh)"
fi
"$python" -c 'import torch' || die "$python has no torch"

work="$(mktemp -d "${TMPDIR:-/tmp}/moco-compare.XXXXXX")"
trap 'rm -rf "$work"' EXIT
: >"$work/runs.jsonl"
: >"$work/commands.txt"
loads=()

# run SIDE CASE PURPOSE REPEAT CMD...: runs CMD, takes the JSON line it prints last, tags it and
# appends it to runs.jsonl. Exit 3 = "does not fit" (its JSON says so); other failures are
# recorded with their exit status and the tail of their output.
run() {
    local side="$1" case_="$2" purpose="$3" rep="$4"
    shift 4
    local log="$work/log.$side.$case_.$purpose.$rep" rc=0
    loads+=("$(cut -d' ' -f1-3 /proc/loadavg)")
    say "$side $case_ ($purpose, repeat $rep)"
    "$@" >"$log.out" 2>"$log.err" || rc=$?
    local line
    line="$(grep '^{' "$log.out" | tail -n1 || true)"
    if [[ -z $line ]]; then
        line="{\"fits\": null, \"error\": $("$python" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-600:]))' <"$log.err")}"
    fi
    "$python" - "$side" "$case_" "$purpose" "$rep" "$rc" "$line" >>"$work/runs.jsonl" <<'PY'
import json, sys
side, case, purpose, rep, rc, line = sys.argv[1:]
d = json.loads(line)
d.update(side=side, case=case, purpose=purpose, repeat=int(rep), exit=int(rc))
print(json.dumps(d))
PY
    if ((rc != 0 && rc != 3)); then say "  failed (exit $rc): $(tail -n 2 "$log.err" | tr '\n' ' ')"; fi
    return 0
}

# The JSON field KEY of the last run of SIDE/CASE/PURPOSE.
field() {
    "$python" - "$work/runs.jsonl" "$@" <<'PY'
import json, sys
path, side, case, purpose, key = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r["side"] == side and r["case"] == case and r["purpose"] == purpose]
v = rows[-1].get(key) if rows else None
print("" if v is None else (str(v).lower() if isinstance(v, bool) else v))
PY
}

ours() {
    echo "$launcher bench $*" >>"$work/commands.txt"
    "$launcher" bench "$@"
}
torch_ref() {
    echo "$python scripts/pytorch_reference.py $*" >>"$work/commands.txt"
    "$python" scripts/pytorch_reference.py "$@"
}

if [[ $device == cpu ]]; then
    # ---- CPU: the tiny preset, and full-width ResNet-50 at 64 px, batch 8 ----
    # Repeats are interleaved A/B per case and the order alternates (AB, BA, AB, ...), so a
    # slow spell of a loaded machine hits both sides alike; the report takes each side's
    # median over repeats, its min-max, and the median (min-max) of the per-repeat ratios.
    # Ours runs first in repeat 1: the reference gets the shapes ours reported.
    for r in $(seq 1 "$repeats"); do
        for case_ in $cases; do
            case "$case_" in
            tiny) shape=() ;;
            full64) shape=(--width 1 --image-size 64 --batch 8) ;;
            *) die "unknown case $case_ (tiny, full64)" ;;
            esac
            common=(--device cpu --preset tiny "${shape[@]}" --threads "$threads" --steps "$steps" --warmup "$warmup")
            ours_run() { run moco_rs "$case_" step "$r" ours "${common[@]}" --feed pool --loader-batches 0; }
            ref_run() {
                g() { field moco_rs "$case_" step "$1"; }
                [[ -n $(g width) ]] || die "launcher bench printed no figures for $case_; see the error above"
                run pytorch "$case_" step "$r" torch_ref --device cpu --width "$(g width)" --image-size "$(g image_size)" \
                    --batch "$(g batch)" --queue "$(g queue)" --proj-hidden "$(g proj_hidden)" --dim "$(g dim)" \
                    --pred-hidden "$(g pred_hidden)" --optimizer "$(g optimizer)" --shuffle-groups "$(g shuffle_groups)" \
                    --T "$(g temperature)" --dataset-size "$(g dataset_size)" --threads "$threads" \
                    --steps "$steps" --warmup "$warmup"
            }
            if ((r % 2 == 1)); then ours_run; ref_run; else ref_run; ours_run; fi
        done
    done
    # Once, after the timed pairs: does the live loader keep up with the tiny step?
    if [[ " $cases " == *" tiny "* ]]; then
        run moco_rs tiny loader 1 ours --device cpu --preset tiny --threads "$threads" --steps "$steps" \
            --warmup "$warmup" --feed loader
    fi
else
    # ---- CUDA: 224 px, the optimized preset's step ----
    queue_for() { echo $(((76800 + $1) / (2 * $1) * 2 * $1)); } # nearest multiple of 2B to 76800
    ours_cuda() {
        local b="$1" rc="$2"
        shift 2
        local flag=--no-recompute
        ((rc)) && flag=--recompute
        ours --device cuda --preset optimized --batch "$b" --accumulation 1 --queue-size "$(queue_for "$b")" \
            --feed pool "$flag" "$@"
    }
    torch_cuda() {
        local b="$1" rc="$2"
        shift 2
        local flag=()
        ((rc)) && flag=(--recompute)
        torch_ref --device cuda --image-size 224 --batch "$b" --queue "$(queue_for "$b")" --optimizer adamw \
            --shuffle-groups 2 --dataset-size 2048 "${flag[@]}" "$@"
    }
    if [[ $only == all || $only == throughput ]]; then
        for b in $batches; do
            for rc in "${rc_modes[@]}"; do
                for ((r = 1; r <= repeats; r++)); do
                    run moco_rs "b$b-rc$rc" step "$r" ours_cuda "$b" "$rc" --steps "$steps" --warmup "$warmup" \
                        --loader-batches 4
                    run pytorch "b$b-rc$rc" step "$r" torch_cuda "$b" "$rc" --steps "$steps" --warmup "$warmup"
                done
            done
        done
    fi
    if [[ $only == all || $only == fit ]]; then
        # Largest batch (multiple of 8) whose steps fit 8 GiB; fitting is assumed monotone in the batch.
        fits() { # SIDE B RC -> exit 0 if it fits
            local side="$1" b="$2" rc="$3"
            if [[ $side == moco_rs ]]; then
                run moco_rs "fit-b$b-rc$rc" fit 1 ours_cuda "$b" "$rc" --vram-limit 8GiB --steps 2 --warmup 1 \
                    --loader-batches 0
            else
                run pytorch "fit-b$b-rc$rc" fit 1 torch_cuda "$b" "$rc" --vram-limit-gib 8 --steps 2 --warmup 1
            fi
            [[ $(field "$side" "fit-b$b-rc$rc" fit fits) == true ]]
        }
        for side in moco_rs pytorch; do
            for rc in "${rc_modes[@]}"; do
                lo=0 hi=$((fit_max / 8 + 1)) # in units of 8: lo fits (0 = nothing), hi does not
                while ((hi - lo > 1)); do
                    mid=$(((lo + hi) / 2))
                    if fits "$side" $((mid * 8)) "$rc"; then lo=$mid; else hi=$mid; fi
                done
                echo "{\"side\": \"$side\", \"case\": \"fit-rc$rc\", \"purpose\": \"fit-result\", \"repeat\": 1, \"largest_batch\": $((lo * 8)), \"searched_up_to\": $fit_max}" >>"$work/runs.jsonl"
                say "$side, recompute $rc: largest batch in 8 GiB = $((lo * 8))"
            done
        done
    fi
fi

# ---- machine and report ----
{
    echo "cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)"
    echo "cores=$(nproc)"
    echo "load_start=$load_start"
    echo "uname=$(uname -a)"
    echo "rustc=$(rustc --version 2>/dev/null || { [[ -f gpu-bin/BUILD_INFO ]] && grep '^rustc' gpu-bin/BUILD_INFO | cut -d' ' -f2-; } || echo unknown)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "torch=$("$python" -c 'import torch; print(torch.__version__)')"
    echo "python=$("$python" --version 2>&1)"
    echo "launcher=$launcher"
    echo "loads=${loads[*]}"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    if [[ $device == cuda ]] && command -v nvidia-smi >/dev/null 2>&1; then
        echo "card=$(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader | head -n1)"
        echo "driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)"
    fi
} >"$work/machine.txt"
mkdir -p "$out_dir"
# A partial run (--only, --recompute) gets its own file, so the parts of a GPU session that had
# to be split over several commands do not overwrite each other.
part=""
[[ $only != all ]] && part="$part-$only"
[[ $recompute != both ]] && part="$part-recompute-$recompute"
[[ $device == cpu && $threads != "$(nproc)" ]] && part="$part-threads$threads"
md="$out_dir/$(date -u +%Y-%m-%d)-compare-$device$part.md"
"$python" scripts/compare_report.py --device "$device" --runs "$work/runs.jsonl" --machine "$work/machine.txt" \
    --commands "$work/commands.txt" --out "$md"
say "wrote $md"
