#!/usr/bin/env bash
# Measures augmentation policies by kNN / linear probe at the same step count, on the CPU:
# each (data, policy, seed) trains `tiny` with 2 workers, then `launcher eval` scores it.
# Makes the figures of results/2026-12-05-aug-policies.md.
#
# Usage: scripts/aug_policies.sh OUT_DIR DATA STEPS "SEEDS" "POLICY[:EXTRA FLAGS]"...
#   scripts/aug_policies.sh runs/aug synthetic 300 "0 1" moco-v3-aerial aerial light
#   scripts/aug_policies.sh runs/aug-digits /tmp/digits32 280 "0" moco-v3 "light:--no-rot90 --vflip-p 0"
# (a policy's extra flags after ':' override single [aug] keys; DATA as for --data, and also
# what `launcher eval` scores, so it must be labelled: synthetic, or DIR/<class>/<image>.)
# Prints one line per run: data, policy, extra flags, seed, final loss, kNN, probe.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$1" data="$2" steps="$3" seeds="$4"
shift 4
bin=target/release/launcher
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$out"
for spec in "$@"; do
    policy="${spec%%:*}"
    extra=""
    [[ $spec == *:* ]] && extra="${spec#*:}"
    tag="$policy$(echo "$extra" | tr -d ' -' | sed 's/^\(.\)/_\1/')"
    for seed in $seeds; do
        run="$out/$tag-s$seed"
        rm -rf "$run"
        # shellcheck disable=SC2086 # $extra is a list of flags
        $bin --device cpu --workers 2 --preset tiny --data "$data" --steps "$steps" --seed "$seed" \
            --aug "$policy" $extra --checkpoint-every 0 --out "$run" >"$run.train.log" 2>&1
        $bin eval --checkpoint "$run/last" --data "$data" >"$run.eval.log" 2>&1
        loss="$(grep -o 'loss [0-9.]* -> [0-9.]*' "$run.train.log" | tail -1)"
        knn="$(grep -i 'knn' "$run.eval.log" | tail -1 | tr -s ' ')"
        probe="$(grep -i 'linear' "$run.eval.log" | tail -1 | tr -s ' ')"
        echo "$data | $policy | $extra | seed $seed | $loss | $knn | $probe"
    done
done
