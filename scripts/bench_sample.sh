#!/usr/bin/env bash
# make bench-sample: see scripts/bench_sample.py. Prepares its two venvs
# first: the reference one (${LLAMAC_VENV:-~/.cache/llamac-venv}: torch and
# transformers, scripts/requirements-ref.txt, installed only when the imports
# fail, as scripts/test_ref.sh does) and llama.cpp's
# (scripts/venv_llamacpp.sh: llama-cpp-python built from source once, many
# minutes on 2 cores). Arguments pass through (e.g. --rounds 5).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${LLAMAC_VENV:-$HOME/.cache/llamac-venv}"
[ -x "$VENV/bin/python" ] || { echo "bench-sample: creating venv $VENV" >&2; python3 -m venv "$VENV"; }
if ! "$VENV/bin/python" -c 'import torch, transformers, gguf' >/dev/null 2>&1; then
    echo "bench-sample: installing scripts/requirements-ref.txt into $VENV" >&2
    "$VENV/bin/python" -m pip install -q -r scripts/requirements-ref.txt
fi
bash scripts/venv_llamacpp.sh >/dev/null
python3 scripts/bench_sample.py "$@"
