#!/usr/bin/env python3
"""Check a moco-rs export against PyTorch: the round trip a user's segmentation code relies on.

1. `resnet50().load_state_dict(load_file(export), strict=False)` must report exactly
   fc.weight and fc.bias as missing and nothing unexpected.
2. In eval mode, torchvision's backbone (fc replaced by Identity) on the probe's fixed input
   must give the features moco-rs computed for the same input, within float32 reassociation
   noise (different convolution algorithms sum in different orders).
3. The moco-v3 export, with `module.base_encoder.` stripped and its `fc.*` (the projector)
   dropped, as MoCo v3's main_lincls.py does, loads the same way and gives the same features.

Where the files come from:

    # full-width random export + probe written by the Rust test (no checkpoint needed)
    .venv-fixtures/bin/python scripts/check_export.py --build

    # or files you made yourself (the probe holds `input` NCHW and `features`)
    .venv-fixtures/bin/python scripts/check_export.py --export resnet50.safetensors \\
        --probe probe.safetensors [--mocov3 resnet50-mocov3.safetensors]

Needs torch, torchvision and safetensors (scripts/torch_venv.sh or .venv-fixtures).
Exits 0 when every check passes, 1 otherwise, 2 when PyTorch is not installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

# float32 features of a 16-block network summed in different orders. Measured on the CPU:
# 7e-7 of the largest feature (1.4e-3 on features up to 1.9e3); 1e-5 leaves a factor ten.
RTOL = 1e-5


def build(out_dir: str) -> None:
    """Write the export and probe with the Rust test that produces them."""
    env = dict(os.environ, MOCO_EXPORT_DIR=out_dir)
    cmd = ["cargo", "test", "-p", "moco-worker", "--test", "export", "--", "--exact",
           "writes_files_for_the_pytorch_check"]
    print("+", " ".join(cmd), f"(MOCO_EXPORT_DIR={out_dir})", flush=True)
    subprocess.run(cmd, check=True, env=env)


def features_of(model, x):
    import torch
    model.fc = torch.nn.Identity()
    model.eval()
    with torch.no_grad():
        return model(x)


def compare(name: str, got, want) -> bool:
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    ok = got.shape == want.shape and err <= RTOL * max(scale, 1e-12)
    print(f"{name}: features {tuple(got.shape)}, max |torch - moco-rs| = {err:.3e} "
          f"(max |feature| {scale:.3e}, allowed {RTOL * scale:.3e}): {'ok' if ok else 'MISMATCH'}")
    return ok


def load_checked(name: str, sd: dict):
    import torchvision
    model = torchvision.models.resnet50()
    res = model.load_state_dict(sd, strict=False)
    missing, unexpected = sorted(res.missing_keys), sorted(res.unexpected_keys)
    ok = missing == ["fc.bias", "fc.weight"] and not unexpected
    print(f"{name}: {len(sd)} tensors loaded; missing {missing}; unexpected {unexpected}: "
          f"{'ok' if ok else 'FAILED'}")
    return model, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", help="torchvision-format export (launcher export --format torchvision)")
    ap.add_argument("--mocov3", help="moco-v3-format export of the same checkpoint (optional)")
    ap.add_argument("--probe", help="safetensors with `input` [N,3,H,W] and moco-rs `features` [N,2048]")
    ap.add_argument("--build", action="store_true", help="make all three with the Rust export test first")
    args = ap.parse_args()
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"PyTorch is not installed here ({e}); nothing checked", file=sys.stderr)
        return 2

    tmp = None
    if args.build:
        tmp = tempfile.mkdtemp(prefix="moco-export-check-")
        build(tmp)
        args.export = os.path.join(tmp, "resnet50.safetensors")
        args.mocov3 = os.path.join(tmp, "resnet50-mocov3.safetensors")
        args.probe = os.path.join(tmp, "probe.safetensors")
    if not args.export:
        ap.error("give --export (and --probe), or --build")

    ok = True
    sd = load_file(args.export)
    bad = [k for k, v in sd.items() if v.dtype not in (torch.float32, torch.int64)]
    if bad:
        print(f"tensors neither float32 nor int64: {bad[:5]}")
        ok = False
    model, loaded = load_checked("torchvision export", sd)
    ok &= loaded
    probe = load_file(args.probe) if args.probe else None
    if probe is not None:
        ok &= compare("torchvision export", features_of(model, probe["input"]), probe["features"])
    if args.mocov3:
        full = load_file(args.mocov3)
        prefix = "module.base_encoder."
        # main_lincls.py: keep base_encoder minus its fc (the projector), strip the prefix.
        sd3 = {k[len(prefix):]: v for k, v in full.items()
               if k.startswith(prefix) and not k.startswith(prefix + "fc")}
        model3, loaded3 = load_checked("moco-v3 export (main_lincls keys)", sd3)
        ok &= loaded3
        heads = sorted({k.split(".")[1] for k in full if not k.startswith(prefix)})
        print(f"moco-v3 export also holds: {heads}")
        if probe is not None:
            ok &= compare("moco-v3 export", features_of(model3, probe["input"]), probe["features"])
    print("export round trip:", "PASSED" if ok else "FAILED")
    if tmp:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
