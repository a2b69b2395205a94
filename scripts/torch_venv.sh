#!/usr/bin/env bash
# Prints the path of a python that has torch, creating the project's fixtures venv if needed:
# $PYTHON if set; else <repo>/.venv-fixtures (reused when its torch imports, otherwise created
# and filled from scripts/requirements-fixtures.txt, which pins the versions the fixtures were
# made with; PyPI's torch wheel is large, see that file).
#
# Usage: python="$(scripts/torch_venv.sh)"       (progress on stderr, the path on stdout)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "torch_venv: $*" >&2; }

if [[ -n ${PYTHON:-} ]]; then
    if "$PYTHON" -c 'import torch' 2>/dev/null; then
        echo "$PYTHON"
        exit 0
    fi
    say "\$PYTHON=$PYTHON cannot import torch"
    exit 1
fi
venv="$root/.venv-fixtures"
if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "$venv/bin/python"
    exit 0
fi
say "creating $venv from scripts/requirements-fixtures.txt (torch is a large download)"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet -r "$root/scripts/requirements-fixtures.txt" >&2
"$venv/bin/python" -c 'import torch' >&2
echo "$venv/bin/python"
