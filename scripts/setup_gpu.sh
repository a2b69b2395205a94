#!/usr/bin/env bash
# Installs the CUDA libraries moco-rs loads at run time - NVRTC (+ the cuda_fp16.h headers),
# cuBLAS, cuDNN 9 and NCCL 2 - from NVIDIA's Python wheels into <repo>/.cuda-libs, choosing the
# CUDA major version (12 or 13) that the installed driver supports. The launcher and the
# workers look in .cuda-libs by themselves: nothing needs to be exported afterwards.
#
# Usage:
#   scripts/setup_gpu.sh                    # detect the driver, install what matches it
#   scripts/setup_gpu.sh --dry-run          # say what would be installed, install nothing
#   scripts/setup_gpu.sh --cuda 12          # force the CUDA major (12 or 13)
#   scripts/setup_gpu.sh --driver-cuda 12.4 # pose as a driver supporting CUDA 12.4 (tests)
#   scripts/setup_gpu.sh --target DIR       # install into DIR instead (then MOCO_CUDA_LIBS=DIR)
#
# The driver's CUDA version comes from `nvidia-smi`, else from cuDriverGetVersion in the
# libcuda python3 can load. The NVIDIA driver itself is not installed here (see README, "GPU").
# A system CUDA toolkit with cuDNN and NCCL (CUDA_HOME, /usr/local/cuda, ld.so's paths) needs
# no setup at all: `launcher doctor` says what it found.
#
# Needs python3 with pip and about 2.5 GB of disk (the CUDA 12 set measured 2.5 GB). Idempotent: a stamp records what was
# installed; a second run installs nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/.cuda-libs"
python="${PYTHON:-python3}"
dry=0
force_major=""
driver_cuda="${MOCO_DRIVER_CUDA:-}"
say() { echo "setup_gpu: $*" >&2; }
die() { echo "setup_gpu: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --cuda) force_major="${2:-}"; shift ;;
        --driver-cuda) driver_cuda="${2:-}"; shift ;;
        --target) target="${2:-}"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
if [[ -n $force_major && $force_major != 12 && $force_major != 13 ]]; then
    die "--cuda $force_major: moco-rs is built for CUDA 12 or 13"
fi

# The CUDA version the driver supports, as MAJOR.MINOR, or empty.
detect_driver_cuda() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        local v
        v="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n1)"
        if [[ -n $v ]]; then echo "$v"; return; fi
    fi
    command -v "$python" >/dev/null 2>&1 || return 0
    "$python" - <<'PY' 2>/dev/null || true
import ctypes
for name in ("libcuda.so.1", "libcuda.so"):
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        continue
    v = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
        print(f"{v.value // 1000}.{v.value % 1000 // 10}")
    break
PY
}

if [[ -z $driver_cuda ]]; then
    driver_cuda="$(detect_driver_cuda)"
fi
if [[ -n $driver_cuda ]]; then
    [[ $driver_cuda =~ ^([0-9]+)\.([0-9]+)$ ]] || die "driver CUDA version '$driver_cuda' is not MAJOR.MINOR"
    dmajor="${BASH_REMATCH[1]}"
    dminor="${BASH_REMATCH[2]}"
    say "the NVIDIA driver supports CUDA $driver_cuda"
else
    dmajor=""
    dminor=""
    if [[ -z $force_major ]]; then
        die "no NVIDIA driver found (no nvidia-smi, and python3 cannot load libcuda). Install the driver \
first (CUDA 12 needs >= 525, CUDA 13 needs >= 580; e.g. 'sudo ubuntu-drivers install'), reboot, check with \
nvidia-smi, then run this again. Without a GPU, train with --device cpu. (--cuda 12|13 installs anyway.)"
    fi
fi

if [[ -n $force_major ]]; then
    major="$force_major"
    if [[ -n $dmajor && $major -gt $dmajor ]]; then
        say "warning: --cuda $major is newer than the driver's CUDA $driver_cuda; its kernels will not load"
    fi
elif [[ $dmajor -ge 13 ]]; then
    major=13
elif [[ $dmajor -eq 12 ]]; then
    major=12
else
    die "the driver supports only CUDA $driver_cuda; moco-rs needs CUDA 12 or newer: update the NVIDIA \
driver (>= 525 for CUDA 12, >= 580 for CUDA 13)"
fi

# NVRTC (and the headers of the same release) no newer than the driver: PTX from a newer NVRTC
# is refused by an older driver (cudarc#598). Other libraries only need the same major.
if [[ -n $dmajor && $dmajor -eq $major ]]; then
    nvrtc_pin=">=$major.0,<$major.$((dminor + 1))"
else
    nvrtc_pin=">=$major.0,<$((major + 1))"
fi
if [[ $major == 13 ]]; then
    packages=("nvidia-cuda-nvrtc$nvrtc_pin" "nvidia-cuda-runtime$nvrtc_pin" "nvidia-cublas>=13,<14"
        "nvidia-cudnn-cu13>=9,<10" "nvidia-nccl-cu13>=2,<3")
else
    packages=("nvidia-cuda-nvrtc-cu12$nvrtc_pin" "nvidia-cuda-runtime-cu12$nvrtc_pin" "nvidia-cublas-cu12>=12,<13"
        "nvidia-cudnn-cu12>=9,<10" "nvidia-nccl-cu12>=2,<3")
fi

say "CUDA $major wheels into $target:"
for p in "${packages[@]}"; do say "  $p"; done
cmd=("$python" -m pip install --quiet --disable-pip-version-check --upgrade --target "$target" "${packages[@]}")
if [[ $dry == 1 ]]; then
    say "dry run, would run: ${cmd[*]}"
    exit 0
fi

stamp="$target/.moco-setup-stamp"
want="$(printf '%s\n' "${packages[@]}")"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    say "already installed (remove $stamp to reinstall)"
else
    command -v "$python" >/dev/null 2>&1 || die "no $python on PATH (set PYTHON=...)"
    mkdir -p "$target"
    say "installing (about 2.5 GB, once)"
    "${cmd[@]}" >&2
    printf '%s\n' "${packages[@]}" >"$stamp.tmp" && mv "$stamp.tmp" "$stamp"
fi
if [[ "$target" != "$root/.cuda-libs" ]]; then
    say "installed; the programs look there when MOCO_CUDA_LIBS=$target is set"
fi
say "done. Check with: target/release/launcher doctor"
