#!/usr/bin/env bash
# Puts the emulated CUDA device (kernels/emu) in front of the dynamic loader, so the project's
# real CUDA backend runs on the CPU: builds libmoco_emu.so, links it under the names cudarc
# dlopen()s (libcuda.so, libcublas.so, libcudnn.so, libnccl.so and their usual versioned
# names) in target/emu-lib, and prints `export` lines. NVRTC stays real: the same lines as
# scripts/setup_nvrtc.sh (NVIDIA's PyPI wheels) are printed too.
#
# Usage:   eval "$(scripts/emu_env.sh)"            # release build of the emulator
#          eval "$(scripts/emu_env.sh --debug)"    # dev profile (faster to build)
# then e.g. `target/release/worker selftest --device cuda`. Device settings (memory, name,
# compute capability, ...): see kernels/emu/src/device.rs; counters: MOCO_EMU_COUNTERS.
#
# stdout is only `export` lines; progress goes to stderr. Never use this on a machine whose
# real GPU you want to use: the links shadow the real libraries for that shell.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile=release
for arg in "$@"; do
    case "$arg" in
        --debug) profile=debug ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "emu_env.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

nvrtc_exports="$("$root/scripts/setup_nvrtc.sh")"

target="${CARGO_TARGET_DIR:-$root/target}"
cargo_flags=(-p moco-emu --lib)
[[ $profile == release ]] && cargo_flags+=(--release)
echo "emu_env: building the emulated device ($profile)" >&2
(cd "$root" && cargo build "${cargo_flags[@]}" >&2)

so="$target/$profile/libmoco_emu.so"
if [[ ! -f $so ]]; then
    echo "emu_env: $so was not built" >&2
    exit 1
fi
links="$target/emu-lib/$profile"
mkdir -p "$links"
for name in libcuda.so libcuda.so.1 libcublas.so libcublas.so.13 libcudnn.so libcudnn.so.9 libnccl.so libnccl.so.2; do
    ln -sfn "$so" "$links/$name"
done

echo "$nvrtc_exports" | grep -v '^export LD_LIBRARY_PATH=' || true
nvrtc_lib="$(echo "$nvrtc_exports" | sed -n "s/^export MOCO_NVRTC_LIB='\(.*\)'$/\1/p")"
echo "export MOCO_EMU_LIB='$links'"
echo "export LD_LIBRARY_PATH='$links:$nvrtc_lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
