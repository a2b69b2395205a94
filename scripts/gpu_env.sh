#!/usr/bin/env bash
# Prepares the environment moco-rs needs on a GPU box whose CUDA libraries come from NVIDIA's
# Python wheels (the usual verification machine: driver + PyTorch with nvidia-* wheels, no
# CUDA toolkit on the library path). cudarc loads every library at run time by file name, so:
#   - LD_LIBRARY_PATH gets every nvidia/*/lib folder python3 can see (cuDNN, cuBLAS, NCCL,
#     NVRTC, the CUDA runtime; cu13 or cu12 layouts);
#   - cudarc looks for `libnccl.so`, never `libnccl.so.2` (GPU.md): a link named libnccl.so is
#     made in <repo>/.gpu-libs (nothing is written into site-packages);
#   - NVRTC needs cuda_fp16.h: MOCO_CUDA_INCLUDE points at a folder that has it.
#
# Usage (from anywhere):   eval "$(scripts/gpu_env.sh)"
#
# The launcher and worker no longer need it: they find the libraries themselves (README, "GPU:
# from zero to training"); it stays for other tools (compare.sh, gpu_verify.sh's logs).
# stdout is only `export` lines; what was found (or not) goes to stderr. Never fails hard:
# a missing piece is reported and the rest is still exported.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
links="$root/.gpu-libs"
say() { echo "gpu_env: $*" >&2; }

libdirs=()
includes=()

if command -v "$python" >/dev/null 2>&1; then
    # Every folder of the `nvidia` namespace package (there may be several site-packages).
    found="$("$python" - <<'PY' 2>/dev/null || true
import os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
for root in roots:
    for sub in sorted(os.listdir(root)):
        base = os.path.join(root, sub)
        lib, inc = os.path.join(base, "lib"), os.path.join(base, "include")
        if os.path.isdir(lib):
            print("lib\t" + sub + "\t" + lib)
        if os.path.isfile(os.path.join(inc, "cuda_fp16.h")):
            print("inc\t" + sub + "\t" + inc)
PY
)"
    while IFS=$'\t' read -r kind name dir; do
        [[ -z "${kind:-}" ]] && continue
        if [[ $kind == lib ]]; then
            libdirs+=("$dir")
            say "wheel nvidia/$name: $dir"
        else
            includes+=("$dir")
        fi
    done <<<"$found"
    if [[ ${#libdirs[@]} == 0 ]]; then
        say "python3 sees no nvidia/* wheels (pip install nvidia-cudnn-cu13 nvidia-nccl-cu13 ... or use a CUDA toolkit)"
    fi
else
    say "no $python on PATH; only system CUDA folders are used"
fi

# A system toolkit, if there is one, after the wheels.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d ]] && libdirs+=("$d")
done
for d in /usr/local/cuda/include /usr/local/cuda/targets/x86_64-linux/include; do
    [[ -f $d/cuda_fp16.h ]] && includes+=("$d")
done

# The libnccl.so link cudarc needs.
nccl=""
for d in "${libdirs[@]}"; do
    for f in "$d"/libnccl.so.2 "$d"/libnccl.so.2.*; do
        if [[ -f $f ]]; then nccl="$f"; break 2; fi
    done
done
if [[ -n $nccl ]]; then
    mkdir -p "$links"
    ln -sf "$nccl" "$links/libnccl.so"
    libdirs=("$links" "${libdirs[@]}")
    say "libnccl.so -> $nccl"
else
    say "no libnccl.so.2 found: NCCL collectives will be unavailable (the ring collective still works)"
fi

# Report which library each name resolves to, in the order cudarc tries them.
have() {
    local name
    for name in "$@"; do
        for d in "${libdirs[@]}"; do
            if [[ -e $d/$name ]]; then echo "$d/$name"; return 0; fi
        done
    done
    return 1
}
for want in "cuDNN:libcudnn.so.9 libcudnn.so" "cuBLAS:libcublas.so.13 libcublas.so.12 libcublas.so" \
    "NVRTC:libnvrtc.so.13 libnvrtc.so.12 libnvrtc.so" "NCCL:libnccl.so"; do
    label="${want%%:*}"
    # shellcheck disable=SC2086
    if path="$(have ${want#*:})"; then say "$label: $path"; else say "$label: NOT FOUND"; fi
done
if [[ ${#includes[@]} -gt 0 ]]; then
    say "cuda_fp16.h for NVRTC: ${includes[0]}"
else
    say "cuda_fp16.h NOT FOUND (pip install nvidia-cuda-runtime-cu13, or a CUDA toolkit): kernels cannot compile"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    say "driver: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -n1 || echo '?')"
else
    say "no nvidia-smi: is the NVIDIA driver installed?"
fi

if [[ ${#libdirs[@]} -gt 0 ]]; then
    joined="$(IFS=:; echo "${libdirs[*]}")"
    echo "export LD_LIBRARY_PATH='$joined'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
fi
if [[ ${#includes[@]} -gt 0 ]]; then
    echo "export MOCO_CUDA_INCLUDE='${includes[0]}'"
fi
