#!/usr/bin/env bash
# The project's test command (README): every unit and integration test of the workspace, on
# the CPU, with no CUDA needed.
#
# `cargo test --workspace` also builds the `launcher` and `worker` binaries from the current
# sources before any test starts (each of their packages has an integration test of its own),
# and the tests/ crate runs those binaries as a user would (see tests/lib.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

# CUDA kernels: NVRTC from NVIDIA's PyPI wheels (no GPU or CUDA toolkit needed) compiles every
# kernels/cu/*.cu for sm_80, sm_86 and sm_90 in the cuda_compile test. The first run downloads
# about 175 MB into .venv-cuda; later runs reuse it.
eval "$(scripts/setup_nvrtc.sh)"

# TensorBoard from PyPI (about 35 MB into .venv-tb, once): tests/tests/tensorboard.rs reads the
# run folder's events files back with TensorBoard's own reader. MOCO_NO_TENSORBOARD=1 leaves it
# out (the test then checks the files with the Rust reader only and says so).
if [[ "${MOCO_NO_TENSORBOARD:-}" != 1 ]]; then
    eval "$(scripts/setup_tensorboard.sh)"
fi

cargo test --workspace "$@"
