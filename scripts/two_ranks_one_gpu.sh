#!/usr/bin/env bash
# Two worker processes on ONE GPU, started by hand, training `tiny` for a few steps: the
# experiment of ../shared/GPU.md ("NCCL and one GPU"). NCCL >= 2.5 is reported to refuse two
# ranks of one communicator on one GPU; giving each process its own NCCL_HOSTID (and
# NCCL_SOCKET_IFNAME=lo) is reported, unverified, to get around that. `off` runs the same
# pair with --nccl off (gradients and keys over the TCP ring), which should always work.
#
# Usage: scripts/two_ranks_one_gpu.sh BIN_DIR OUT_DIR [nccl|off]
# PAIR_ARGS replaces the training arguments (default: --preset tiny --data synthetic:256 --steps 5).
# Prints both ranks' logs; exits non-zero when either rank failed. Not yet run (no GPU so far).
set -uo pipefail

bin="$1"
out="$2"
mode="${3:-nccl}"
port=$((20000 + RANDOM % 20000))
run="$out/run-two-ranks-$mode"
read -r -a train_args <<<"${PAIR_ARGS:---preset tiny --data synthetic:256 --steps 5}"
pids=()
for r in 0 1; do
    NCCL_HOSTID="moco-rank-$r" NCCL_SOCKET_IFNAME=lo NCCL_DEBUG=WARN \
        "$bin/worker" --device cuda --gpu 0 --nccl "$([[ $mode == off ]] && echo off || echo auto)" \
        --rank "$r" --world-size 2 --master "127.0.0.1:$port" --run-id "two-ranks-$mode" \
        "${train_args[@]}" --out "$run" >"$out/two-ranks-$mode-rank$r.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do
    wait "$p" || rc=1
done
for r in 0 1; do
    echo "==== rank $r ($mode) ===="
    tail -n 30 "$out/two-ranks-$mode-rank$r.log"
done
exit $rc
