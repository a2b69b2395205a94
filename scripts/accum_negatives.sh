#!/usr/bin/env bash
# Measures effective-batch negatives under accumulation by kNN / linear probe at the same
# optimiser step count, on the CPU: each (data, switch, seed) trains `tiny` with small
# micro-batches and accumulation, then `launcher eval` scores it.
# Makes the figures of results/2026-12-05-accumulation-negatives.md.
#
# Usage: scripts/accum_negatives.sh OUT_DIR DATA STEPS "SEEDS" "FLAGS"
#   scripts/accum_negatives.sh runs/acc synthetic 200 "0 1" "--workers 1 --batch 8 --accumulation 4"
# (DATA as for --data, and also what `launcher eval` scores, so it must be labelled: synthetic,
# or DIR/<class>/<image>.) BIN (default target/release/launcher) picks the launcher binary.
# Prints one line per run: data, switch, seed, loss first -> last, kNN, probe.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$1" data="$2" steps="$3" seeds="$4" flags="$5"
bin="${BIN:-target/release/launcher}"
[[ -x $bin ]] || { echo "build first: cargo build --release --bins (or set BIN)" >&2; exit 1; }
mkdir -p "$out"
for seed in $seeds; do
    for switch in effective-negatives no-effective-negatives; do
        run="$out/$switch-s$seed"
        rm -rf "$run"
        # shellcheck disable=SC2086 # $flags is a list of flags
        $bin --device cpu --preset tiny --data "$data" --steps "$steps" --seed "$seed" $flags \
            --"$switch" --checkpoint-every 0 --out "$run" >"$run.train.log" 2>&1
        $bin eval --checkpoint "$run/last" --data "$data" >"$run.eval.log" 2>&1
        loss="$(grep -o 'loss [0-9.]* -> [0-9.]*' "$run.train.log" | tail -1)"
        knn="$(grep -i 'knn' "$run.eval.log" | tail -1 | tr -s ' ')"
        probe="$(grep -i 'linear' "$run.eval.log" | tail -1 | tr -s ' ')"
        echo "$data | $switch | seed $seed | $loss | $knn | $probe"
    done
done
