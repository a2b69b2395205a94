#!/usr/bin/env python3
"""torch.distributed Gloo all-reduce bus bandwidth on loopback, measured like ring_bench.

The counterpart of worker/examples/ring_bench.rs for scripts/ring_vs_gloo.sh: starts --world
copies of itself as ranks on 127.0.0.1, and per size times `all_reduce(SUM)` of a float32
tensor: each sample is the slowest rank's time of one call after a barrier, the figure is the
median of --iters samples after one warm-up call. busbw as nccl-tests defines it:
2 (W-1)/W * bytes / time. Prints the same table as ring_bench, then one JSON line per size.

    .venv-fixtures/bin/python scripts/gloo_allreduce_bench.py --world 2 --sizes-mb 1,4,16,64,256
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(a) -> int:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # no intra-op pool competing with the ranks for the cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=a.rank, world_size=a.world)
    rank, w = a.rank, a.world
    if rank == 0:
        print(f"gloo all-reduce (f32 sum, torch {torch.__version__}), world {w}, median of {a.iters} calls")
        print(f"{'size':>10} {'time (ms)':>12} {'algbw (GB/s)':>14} {'busbw (GB/s)':>14}")
    rows = []
    for mb in a.sizes_mb:
        n = mb * 1_000_000 // 4
        buf = (torch.arange(n, dtype=torch.float32) % 1000) + rank
        samples = []
        for it in range(a.iters + 1):
            dist.barrier()
            t = time.perf_counter()
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            dt = torch.tensor([time.perf_counter() - t], dtype=torch.float64)
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)
            if it > 0:
                samples.append(float(dt))
        # Element 1 after k calls: sum over ranks of (1 + r), times W^(k-1).
        want = sum(1.0 + r for r in range(w)) * w ** a.iters
        if abs(float(buf[1]) - want) > 1e-3 * want:
            raise SystemExit(f"wrong result {float(buf[1])} (expected {want})")
        t = statistics.median(samples)
        nbytes = n * 4
        alg, bus = nbytes / t / 1e9, 2 * (w - 1) / w * nbytes / t / 1e9
        rows.append({"bench": "gloo_allreduce", "world": w, "size_mb": mb, "time_s": t, "algbw_gbs": alg, "busbw_gbs": bus})
        if rank == 0:
            print(f"{mb:>7} MB {t * 1e3:>12.2f} {alg:>14.3f} {bus:>14.3f}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        for r in rows:
            print(json.dumps(r))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--sizes-mb", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 64, 256])
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rank is not None:
        return run_rank(a)
    port = free_port()
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo")
    sizes = ",".join(str(s) for s in a.sizes_mb)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--world", str(a.world), "--sizes-mb", sizes, "--iters", str(a.iters),
             "--rank", str(r), "--port", str(port)],
            env=env,
            stdout=None if r == 0 else subprocess.DEVNULL,
        )
        for r in range(a.world)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"a rank failed: exit codes {codes}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
