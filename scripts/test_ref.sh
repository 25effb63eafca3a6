#!/usr/bin/env bash
# Regenerate the reference fixtures with transformers into build/ref and check
# them against the committed ones in tests/fixtures (scripts/ref_compare.py:
# same records, int32 exact, float32 within atol 1e-5 + rtol 1e-4).
# Proves the committed fixtures are what scripts/ref_llama.py produces.
# Uses (or creates) the venv at ${LLAMAC_VENV:-$HOME/.cache/llamac-venv} and
# installs scripts/requirements-ref.txt into it only when the imports fail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${LLAMAC_VENV:-$HOME/.cache/llamac-venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "test-ref: creating venv $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! "$PY" -c 'import torch, transformers, numpy' >/dev/null 2>&1; then
    echo "test-ref: installing scripts/requirements-ref.txt into $VENV" >&2
    "$PY" -m pip install -q -r scripts/requirements-ref.txt
fi

rc=0
mkdir -p build/ref
if "$PY" scripts/ref_llama.py --out build/ref; then
    "$PY" scripts/ref_compare.py tests/fixtures build/ref || rc=$?
else
    rc=$?
    echo "test-ref: scripts/ref_llama.py failed (exit $rc)"
fi
if [ "$rc" -eq 0 ]; then
    echo "test-ref: 1 passed, 0 failed"
else
    echo "test-ref: 0 passed, 1 failed"
fi
exit "$rc"
