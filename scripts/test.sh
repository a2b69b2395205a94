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

# SLURM: tests/tests/slurm.rs brings up a local two-node cluster (scripts/slurm_cluster.sh: it
# installs slurmctld, slurmd, slurm-client and munge with apt-get where missing, about 13 MB) and
# takes it down when its test binary exits. Taking it down here as well means a test binary
# killed half-way (a timeout) leaves no daemons behind to keep CI from finishing; a cluster a
# developer had up before is left alone. Without root the tests print SKIPPED with the reason
# (under CI=true that is a failure).
if [[ $(id -u) == 0 ]] && ! scripts/slurm_cluster.sh status >/dev/null 2>&1; then
    trap 'scripts/slurm_cluster.sh down >/dev/null 2>&1 || true' EXIT
fi

# Network faults: tests/tests/netns_faults.rs joins network namespaces with veth links and
# shapes them with tc (iproute2, in Debian's base image; installed here where missing). Without
# root the tests print SKIPPED with the reason.
if [[ $(id -u) == 0 ]] && ! command -v tc >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >/dev/null; } \
        || echo "test.sh: could not install iproute2; the network-fault tests will say SKIPPED" >&2
fi

cargo test --workspace "$@"
