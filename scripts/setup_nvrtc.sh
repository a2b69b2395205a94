#!/usr/bin/env bash
# Installs NVRTC (and the CUDA headers it needs) from NVIDIA's PyPI wheels into
# <repo>/.venv-cuda, so the CUDA kernels can be compiled on machines WITHOUT a GPU or a CUDA
# toolkit (CI, laptops). Nothing here needs a GPU.
#
# Usage:
#   eval "$(scripts/setup_nvrtc.sh)"            # NVRTC + headers (what CI needs)
#   eval "$(scripts/setup_nvrtc.sh --ptxas)"    # also ptxas, for scripts/ptxas_report.sh
#
# stdout is only `export` lines (so `eval` works); progress goes to stderr. It prints:
#   MOCO_NVRTC_LIB      folder holding libnvrtc.so.13 (also prepended to LD_LIBRARY_PATH,
#                       because cudarc dlopen()s NVRTC by file name)
#   MOCO_NVRTC_INCLUDE  folder holding cuda_fp16.h (passed to NVRTC as --include-path)
#   MOCO_PTXAS          path of ptxas (only with --ptxas)
#
# Idempotent: a stamp file records the pinned versions; a second run installs nothing.
set -euo pipefail

# Pinned so CI compiles with the same NVRTC every time. 13.0 matches cudarc's `cuda-13000`
# bindings (Cargo.toml); cudarc looks for `libnvrtc.so.13` (its major version), which these
# wheels ship under that exact name, so no symlink is needed (checked below anyway).
NVRTC_VERSION="${MOCO_NVRTC_VERSION:-13.0.88}"
RUNTIME_VERSION="${MOCO_CUDA_RUNTIME_VERSION:-13.0.96}"
NVCC_VERSION="${MOCO_NVCC_VERSION:-13.0.88}"

want_ptxas=0
for arg in "$@"; do
    case "$arg" in
        --ptxas) want_ptxas=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "setup_nvrtc.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-cuda"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup_nvrtc: creating $venv" >&2
    "$python" -m venv "$venv" >&2
fi

packages=("nvidia-cuda-nvrtc==$NVRTC_VERSION" "nvidia-cuda-runtime==$RUNTIME_VERSION")
if [[ $want_ptxas == 1 ]]; then
    packages+=("nvidia-cuda-nvcc==$NVCC_VERSION")
fi
# The stamp lists every pinned package installed so far, one per line, so a plain run after
# a --ptxas run (or a pin change) installs only when something is missing.
stamp="$venv/.moco-stamp"
missing=0
for pkg in "${packages[@]}"; do
    if [[ ! -f "$stamp" ]] || ! grep -qxF "$pkg" "$stamp"; then missing=1; fi
done
if [[ $missing == 1 ]]; then
    echo "setup_nvrtc: installing ${packages[*]} (about 175 MB, once; 500 MB with --ptxas)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
    printf '%s\n' "${packages[@]}" >>"$stamp"
fi

# The wheels put everything under site-packages/nvidia/cu13/{lib,include,bin}. Ask Python
# where site-packages is rather than guessing the python3.X folder name.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cu="$site/nvidia/cu13"
lib="$cu/lib"
include="$cu/include"

if [[ ! -f "$lib/libnvrtc.so.13" ]]; then
    # cudarc (cuda-13000) tries libnvrtc.so, libnvrtc.so.13, .12, .11, ... but no versioned
    # minor names; link whatever the wheel ships to the name cudarc looks for.
    found="$(ls "$lib"/libnvrtc.so.13* 2>/dev/null | head -n1 || true)"
    if [[ -z "$found" ]]; then
        echo "setup_nvrtc: no libnvrtc.so.13* under $lib; the wheel layout changed" >&2
        exit 1
    fi
    ln -sf "$(basename "$found")" "$lib/libnvrtc.so.13"
fi
if [[ ! -f "$include/cuda_fp16.h" ]]; then
    echo "setup_nvrtc: no cuda_fp16.h under $include; the wheel layout changed" >&2
    exit 1
fi

echo "export MOCO_NVRTC_LIB='$lib'"
echo "export MOCO_NVRTC_INCLUDE='$include'"
echo "export LD_LIBRARY_PATH='$lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
if [[ $want_ptxas == 1 ]]; then
    ptxas="$cu/bin/ptxas"
    if [[ ! -x "$ptxas" ]]; then
        ptxas="$(find "$site/nvidia" -name ptxas -type f | head -n1 || true)"
    fi
    if [[ -z "$ptxas" || ! -x "$ptxas" ]]; then
        echo "setup_nvrtc: nvidia-cuda-nvcc installed but no ptxas found under $site/nvidia" >&2
        exit 1
    fi
    echo "export MOCO_PTXAS='$ptxas'"
fi
