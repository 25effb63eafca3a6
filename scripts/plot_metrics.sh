#!/usr/bin/env bash
# plot_metrics.sh METRICS.jsonl OUT.png TITLE: draw a metrics file with
# scripts/plot_metrics.py in the reference venv; plot_metrics.sh --rs-curve
# OUT.png CURVE.jsonl...: llamac rs's best/median-of-k curves with
# scripts/plot_rs_curve.py; plot_metrics.sh --py SCRIPT.py ARGS...: any
# plotting script (make demo-distill's); installing matplotlib
# (scripts/requirements-plot.txt) there on first use. The demos call it;
# a failure only means no picture (exit 1 with a reason), never a failed run.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${LLAMAC_VENV:-$HOME/.cache/llamac-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || exit 1
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null ||
    "$VENV/bin/python" -m pip install -q -r scripts/requirements-plot.txt || exit 1
if [ "$1" = "--py" ]; then
    shift
    exec "$VENV/bin/python" "$@"
fi
if [ "$1" = "--rs-curve" ]; then
    out=$2
    shift 2
    exec "$VENV/bin/python" scripts/plot_rs_curve.py "$@" --out "$out"
fi
"$VENV/bin/python" scripts/plot_metrics.py "$1" --out "$2" --title "$3"
