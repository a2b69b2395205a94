#!/usr/bin/env python3
"""Benchmark of the hybrid-MoCo training step in PyTorch: the baseline moco-rs is measured against.

The same step as scripts/make_fixtures.py (and /work/shared/MOCO.md) at full head size:
torchvision ResNet-50 v1.5 (width-scalable like topology.rs; at --width 1 it is exactly
torchvision's resnet50 without fc), projector 2048-4096-256 (last BN affine-free), predictor
256-4096-256, momentum encoder (EMA of parameters), queue of 65536 keys with own-image masking,
LARS (MoCo v3; `--optimizer sgd|adamw` for the presets that use those), T = 0.2, m = 0.99.
`--shuffle-groups G` computes the momentum encoder's BN statistics on G sub-batches of a
permuted batch (shuffle BN, as the `tiny` and seed presets do). On CUDA it uses AMP (fp16
autocast + GradScaler) and channels_last; `--recompute` checkpoints every bottleneck of the
query encoder; `--vram-limit-gib` caps the caching allocator (8 emulates an 8 GiB card), and a
step that does not fit prints `"fits": false` and exits with status 3.

    .venv-fixtures/bin/python scripts/pytorch_reference.py --device cpu --width 0.125 \\
        --image-size 64 --batch 32 --queue 1024 --proj-hidden 256 --dim 64 --pred-hidden 256 \\
        --optimizer sgd --shuffle-groups 2 --steps 5 --warmup 2
    python scripts/pytorch_reference.py --device cuda --batch 64 --image-size 224

Prints one line per timed step on stderr and, last on stdout, one JSON line: median step time,
images/s (images, each seen as two views, per second), peak memory (torch.cuda.max_memory_allocated
on CUDA; peak RSS on CPU) and the share of the step spent in forward (query forwards, EMA, key
forwards, loss), backward, and optimiser (unscale, optimiser, scaler update, enqueue).
`baseline_rss_bytes` is the RSS before the model is built (the torch library alone), so the
step's own host memory is the peak minus it.
Phase boundaries are CUDA events on GPU (one synchronize per step), wall clock on CPU.
Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import LARS, Backbone, predictor, projector  # noqa: E402  (same model code)


class QueryEncoder(nn.Module):
    def __init__(self, width: float, proj_hidden: int, dim: int, pred_hidden: int, recompute: bool):
        super().__init__()
        self.backbone = Backbone(width, 3)
        self.projector = projector(self.backbone.feat_dim, proj_hidden, dim)
        self.predictor = predictor(dim, pred_hidden)
        self.recompute = recompute

    def features(self, x):
        bb = self.backbone
        x = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4):
            for block in layer:
                if self.recompute and torch.is_grad_enabled():
                    # Note: BN running stats move again on recomputation (as in any PyTorch
                    # activation checkpointing of BN); the benchmark does not read them.
                    x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        return torch.flatten(bb.avgpool(x), 1)

    def forward(self, x):
        return self.predictor(self.projector(self.features(x)))


class SplitBatchNorm(nn.Module):
    """Shuffle BN on one process: BN statistics per sub-batch (the caller permutes the batch
    first). Each group runs the native BN kernel on a contiguous slice of the batch."""

    def __init__(self, bn: nn.Module, groups: int):
        super().__init__()
        self.bn = bn
        self.groups = groups

    def forward(self, x):
        if not self.training or self.groups == 1:
            return self.bn(x)
        return torch.cat([self.bn(part) for part in x.chunk(self.groups)], dim=0)


def split_bn(module: nn.Module, groups: int) -> None:
    """Replace every BatchNorm of `module` (in place) by its SplitBatchNorm."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            setattr(module, name, SplitBatchNorm(child, groups))
        else:
            split_bn(child, groups)


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class KeyEncoder(nn.Module):
    """The momentum encoder: a copy of the query's backbone + projector made at init."""

    def __init__(self, q: QueryEncoder):
        super().__init__()
        self.backbone = copy.deepcopy(q.backbone)
        self.projector = copy.deepcopy(q.projector)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.projector(self.backbone(x))


def ctr(q, k, queue, queue_idx, batch_idx, T):
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    l_batch = q @ k.t()
    l_queue = q @ queue.t().to(q.dtype)
    l_queue = l_queue.masked_fill(queue_idx[None, :] == batch_idx[:, None], float("-inf"))
    logits = torch.cat([l_batch, l_queue], dim=1).float() / T
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2 * T)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def write_profile(prof, path: str, steps: int) -> None:
    """Per-op self CPU time per step, the autograd backward ops apart from the forward ones
    (torch names them `...Backward0`; their kernels appear as children, e.g.
    aten::convolution_backward), written as a markdown table sorted by time."""
    rows = []
    for e in prof.key_averages():
        if e.self_cpu_time_total <= 0:
            continue
        rows.append((e.self_cpu_time_total / steps / 1000.0, e.count / steps, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    with open(path, "w") as f:
        f.write(f"| op (PyTorch, self CPU time) | ms/step | calls/step | share |\n|---|---|---|---|\n")
        for ms, calls, key in rows[:40]:
            f.write(f"| {key} | {ms:.2f} | {calls:.0f} | {ms / total * 100:.1f}% |\n")
        f.write(f"| (all {len(rows)} ops) | {total:.2f} | | 100% |\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--queue", type=int, default=65536)
    ap.add_argument("--proj-hidden", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--pred-hidden", type=int, default=4096)
    ap.add_argument("--dataset-size", type=int, default=100_000, help="image indices wrap here (masking)")
    ap.add_argument("--recompute", action="store_true", help="checkpoint every query bottleneck")
    ap.add_argument("--no-amp", action="store_true", help="fp32 on CUDA")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--optimizer", choices=("lars", "sgd", "adamw"), default="lars")
    ap.add_argument("--lr", type=float, default=None, help="default: the optimiser's recipe, scaled by batch/256")
    ap.add_argument("--wd", type=float, default=None, help="default: the optimiser's recipe")
    ap.add_argument("--shuffle-groups", type=int, default=1, help="key-side shuffle BN groups (1: plain BN)")
    ap.add_argument("--vram-limit-gib", type=float, default=0.0, help="cap the CUDA caching allocator (0: no cap)")
    ap.add_argument("--T", type=float, default=0.2)
    ap.add_argument("--m", type=float, default=0.99)
    ap.add_argument("--profile", metavar="FILE", default=None,
                    help="after the timed steps, profile --profile-steps more with torch.profiler and "
                    "write the per-op table (self CPU time, forward and backward ops apart) to FILE")
    ap.add_argument("--profile-steps", type=int, default=5)
    args = ap.parse_args()

    if args.queue % (2 * args.batch) != 0:
        raise SystemExit(f"--queue {args.queue} must be a multiple of 2*batch = {2 * args.batch}")
    if args.shuffle_groups < 1 or args.batch % args.shuffle_groups != 0:
        raise SystemExit(f"--shuffle-groups {args.shuffle_groups} must divide --batch {args.batch}")
    # The presets' recipes (proto/src/presets.rs): LARS 0.6 / wd 1e-6, SGD 1.0 / 1e-4 (tiny), AdamW 1.5e-4 / 0.1.
    base_lr, wd = {"lars": (0.6, 1e-6), "sgd": (1.0, 1e-4), "adamw": (1.5e-4, 0.1)}[args.optimizer]
    lr = args.lr if args.lr is not None else base_lr * args.batch / 256
    wd = args.wd if args.wd is not None else wd
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA requested but not available")
    amp = device.type == "cuda" and not args.no_amp
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.vram_limit_gib > 0:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_limit_gib * 2**30 / total), device)
    baseline_rss = current_rss_bytes()

    qnet = QueryEncoder(args.width, args.proj_hidden, args.dim, args.pred_hidden, args.recompute)
    knet = KeyEncoder(qnet)
    if args.shuffle_groups > 1:
        split_bn(knet, args.shuffle_groups)
    qnet = qnet.to(device, memory_format=fmt).train()
    knet = knet.to(device, memory_format=fmt).train()
    q_key_params = list(qnet.backbone.parameters()) + list(qnet.projector.parameters())
    k_params = list(knet.parameters())
    assert len(q_key_params) == len(k_params)
    if args.optimizer == "lars":
        opt = LARS(qnet.parameters(), lr=lr, weight_decay=wd, momentum=0.9)
    elif args.optimizer == "sgd":
        opt = torch.optim.SGD(qnet.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    else:
        opt = torch.optim.AdamW(qnet.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=wd)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    queue = F.normalize(torch.randn(args.queue, args.dim, device=device), dim=1)
    queue_idx = torch.full((args.queue,), -1, dtype=torch.int64, device=device)
    ptr = 0
    # A fixed pool of input batches on the device: the benchmark measures the step, not loading.
    pool = [
        torch.randn(args.batch, 3, args.image_size, args.image_size, device=device).contiguous(memory_format=fmt)
        for _ in range(4)
    ]

    def now_marker():
        if device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def elapsed(a, b) -> float:
        if device.type == "cuda":
            return a.elapsed_time(b) / 1000.0
        return b - a

    times, phases = [], {"forward": [], "backward": [], "optimizer": []}
    total = args.warmup + args.steps
    prof = None
    if args.profile:
        if device.type != "cpu":
            raise SystemExit("--profile is for --device cpu (a CPU per-op table)")
        # Profiled steps come after the timed ones (the profiler's overhead stays out of the
        # figures); schedule: the first `total` steps are not recorded.
        prof = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU],
            schedule=torch.profiler.schedule(wait=total, warmup=0, active=args.profile_steps, repeat=1),
        )
        prof.start()
    try:
        for it in range(total + (args.profile_steps if prof else 0)):
            if it == args.warmup and device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
            x1, x2 = pool[it % len(pool)], pool[(it + 1) % len(pool)]
            batch_idx = (torch.arange(args.batch, device=device) + it * args.batch) % args.dataset_size
            t0 = now_marker()
            wall0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                q1 = qnet(x1)
                q2 = qnet(x2)
                with torch.no_grad():
                    # theta_k <- m theta_k + (1 - m) theta_q, one fused multi-tensor op.
                    torch._foreach_lerp_(k_params, [p.detach() for p in q_key_params], 1.0 - args.m)
                    if args.shuffle_groups > 1:
                        perm = torch.randperm(args.batch, device=device)
                        inv = torch.argsort(perm)
                        k1 = knet(x1[perm])[inv]
                        k2 = knet(x2[perm])[inv]
                    else:
                        k1 = knet(x1)
                        k2 = knet(x2)
                loss = ctr(q1, k2, queue, queue_idx, batch_idx, args.T) + ctr(q2, k1, queue, queue_idx, batch_idx, args.T)
            t1 = now_marker()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            t2 = now_marker()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                keys = torch.cat([F.normalize(k1.float(), dim=1), F.normalize(k2.float(), dim=1)])
                queue[ptr : ptr + keys.shape[0]] = keys
                queue_idx[ptr : ptr + keys.shape[0]] = torch.cat([batch_idx, batch_idx])
                ptr = (ptr + keys.shape[0]) % args.queue
            t3 = now_marker()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - wall0
            lossv = float(loss.detach())
            if not torch.isfinite(loss):
                raise SystemExit(f"step {it}: loss is not finite")
            if prof is not None:
                prof.step()
            if args.warmup <= it < total:
                f, b, o = elapsed(t0, t1), elapsed(t1, t2), elapsed(t2, t3)
                times.append(wall)
                phases["forward"].append(f)
                phases["backward"].append(b)
                phases["optimizer"].append(o)
                print(f"step {it - args.warmup}: {wall * 1000:.1f} ms (fwd {f*1000:.1f}, bwd {b*1000:.1f}, opt {o*1000:.1f}) loss {lossv:.4f}", file=sys.stderr)
    except torch.cuda.OutOfMemoryError as e:
        # Does not fit (the device, or --vram-limit-gib): say so in the same JSON shape.
        print(json.dumps({"bench": "pytorch_reference", "device": args.device, "batch": args.batch,
                          "image_size": args.image_size, "recompute": args.recompute, "fits": False,
                          "vram_limit_gib": args.vram_limit_gib, "error": str(e).splitlines()[0]}))
        return 3

    if prof is not None:
        prof.stop()
        write_profile(prof, args.profile, args.profile_steps)
    med = statistics.median(times)
    sums = {k: sum(v) for k, v in phases.items()}
    tot = sum(sums.values())
    result = {
        "bench": "pytorch_reference",
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "image_size": args.image_size,
        "width": args.width,
        "queue": args.queue,
        "proj_hidden": args.proj_hidden,
        "dim": args.dim,
        "pred_hidden": args.pred_hidden,
        "amp": amp,
        "channels_last": fmt == torch.channels_last,
        "recompute": args.recompute,
        "steps": args.steps,
        "warmup": args.warmup,
        "median_step_s": round(med, 6),
        "step_min_s": round(min(times), 6),
        "step_max_s": round(max(times), 6),
        "images_per_s": round(args.batch / med, 3),
        "peak_memory_bytes": peak_memory_bytes(device),
        "peak_memory_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "process_peak_rss",
        "phase_share": {k: round(v / tot, 4) for k, v in sums.items()},
        "last_loss": round(lossv, 6),
        "optimizer": args.optimizer,
        "shuffle_groups": args.shuffle_groups,
        "baseline_rss_bytes": baseline_rss,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "fits": True,
    }
    if device.type == "cuda":
        result["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        result["vram_limit_gib"] = args.vram_limit_gib
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
