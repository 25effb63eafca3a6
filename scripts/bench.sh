#!/usr/bin/env bash
# make bench: see scripts/bench.py. Extra arguments pass through
# (e.g. BENCH_ARGS="--configs 15m:256:8 --rounds 5").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 scripts/bench.py ${BENCH_ARGS:-} "$@"
# BENCH_LORA=1: also the LoRA step against PEFT (scripts/bench_lora.py; also
# `make bench-lora` alone, BENCH_LORA_ARGS passes through).
if [ "${BENCH_LORA:-0}" = 1 ]; then
    python3 scripts/bench_lora.py ${BENCH_LORA_ARGS:-}
fi
# Tokenizer encoding speed on one core against tokenizers, tiktoken and
# sentencepiece (scripts/bench_tok.py; the packages of
# scripts/requirements-tok.txt in the venv tests/test_tok.c uses).
VENV="${LLAMAC_VENV:-$HOME/.cache/llamac-venv}"
if "$VENV/bin/python" -c 'import tokenizers, tiktoken, sentencepiece' >/dev/null 2>&1; then
    "$VENV/bin/python" scripts/bench_tok.py ${BENCH_TOK_ARGS:-}
else
    echo "bench: tokenizer part skipped: no tokenizers/tiktoken/sentencepiece in $VENV" \
         "(make test installs scripts/requirements-tok.txt there)" >&2
fi
