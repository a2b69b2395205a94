#!/usr/bin/env bash
# Instruction counts of the CPU step, repeatable on a loaded machine: runs `launcher bench` under
# valgrind's callgrind with instrumentation off during start-up (rendering the synthetic tiles,
# building the model), switches it on when the bench says "running ...", and prints the
# instructions per step of each op family (self cost grouped by source file, see
# scripts/callgrind_groups.py). Threads are counted together (callgrind serialises them).
#
#   scripts/callgrind_step.sh OUT_PREFIX [bench flags...]
#   scripts/callgrind_step.sh /tmp/cg.tiny --preset tiny --steps 2 --warmup 1
#   scripts/callgrind_step.sh /tmp/cg.full64 --preset tiny --width 1 --image-size 64 --batch 8 --steps 1 --warmup 1
#
# Environment: LAUNCHER (default target/release/launcher). Writes OUT_PREFIX.callgrind (raw
# profile, for callgrind_annotate) and OUT_PREFIX.md (the grouped table). The counted part is
# warm-up + timed steps; the table divides by their sum.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$1"
shift
launcher="${LAUNCHER:-$root/target/release/launcher}"
[[ -x $launcher ]] || { echo "callgrind_step: no $launcher (cargo build --release -p moco-launcher)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "callgrind_step: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
steps=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in --steps | --warmup) steps=$((steps + args[i + 1])) ;; esac
done
((steps > 0)) || { echo "callgrind_step: give --steps and --warmup explicitly" >&2; exit 1; }
log="$out.log"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.callgrind" \
    "$launcher" bench --device cpu --threads 2 --feed pool --loader-batches 0 --data synthetic:64 "$@" \
    >"$out.stdout" 2>"$log" &
pid=$!
# Instrument from the first warm-up step on.
until grep -q '^running ' "$log" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
done
callgrind_control -i on "$pid" >/dev/null
wait "$pid"
callgrind_annotate --auto=no --threshold=100 "$out.callgrind" >"$out.annotate"
python3 "$root/scripts/callgrind_groups.py" "$out.annotate" "$steps" | tee "$out.md"
