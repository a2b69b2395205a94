#!/usr/bin/env bash
# The project's test command (README): every unit and integration test of the workspace, on
# the CPU, with no CUDA needed.
#
# `cargo test --workspace` also builds the `launcher` and `worker` binaries from the current
# sources before any test starts (each of their packages has an integration test of its own),
# and the tests/ crate runs those binaries as a user would (see tests/lib.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace "$@"
