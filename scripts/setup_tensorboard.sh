#!/usr/bin/env bash
# Installs TensorBoard from PyPI into <repo>/.venv-tb, for the test that reads the run folder's
# events files back with TensorBoard's own reader (tests/tests/tensorboard.rs) and for looking
# at runs (`.venv-tb/bin/tensorboard --logdir runs/`). No GPU and no TensorFlow needed.
#
# Usage:
#   eval "$(scripts/setup_tensorboard.sh)"
#
# stdout is only `export` lines (so `eval` works); progress and errors go to stderr. It prints:
#   MOCO_TB_PYTHON   the venv's python, which can import tensorboard
#
# Idempotent: a stamp file records the pinned version; a second run installs nothing. The first
# run downloads about 35 MB (tensorboard and its dependencies; pip's cache keeps them).
set -euo pipefail

TB_VERSION="${MOCO_TENSORBOARD_VERSION:-2.21.0}"

case "${1:-}" in
    "") ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup_tensorboard.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-tb"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup_tensorboard: creating $venv" >&2
    if ! "$python" -m venv "$venv" >&2; then
        echo "setup_tensorboard: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        rm -rf "$venv"
        exit 1
    fi
fi

stamp="$venv/.moco-stamp"
pkg="tensorboard==$TB_VERSION"
if [[ ! -f "$stamp" ]] || ! grep -qxF "$pkg" "$stamp"; then
    echo "setup_tensorboard: installing $pkg (about 35 MB, once)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$pkg" >&2
    printf '%s\n' "$pkg" >"$stamp"
fi

# Fail here, with Python's message, rather than in the test.
"$venv/bin/python" -c 'from tensorboard.backend.event_processing import event_accumulator' >&2

echo "export MOCO_TB_PYTHON='$venv/bin/python'"
