#!/usr/bin/env bash
# make bench: see scripts/bench.py. Extra arguments pass through
# (e.g. BENCH_ARGS="--configs 15m:256:8 --rounds 5").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 scripts/bench.py ${BENCH_ARGS:-} "$@"
