#!/usr/bin/env bash
# Create (once) the venv with TRL 1.12.0 for scripts/test_rl_ref.py's PPO
# reference (PPOTrainer lives in trl/experimental/ppo there and was dropped
# later), at ${LLAMAC_VENV_TRL112:-$HOME/.cache/llamac-venv-trl112}, and
# print its python.
#
# TRL 1.12 and 1.16 cannot share one site-packages, but everything TRL
# imports (torch, transformers, accelerate, datasets) can: the venv is made
# from the main venv's python (${LLAMAC_VENV:-$HOME/.cache/llamac-venv},
# scripts/test_ref.sh creates it) without system site-packages, TRL 1.12.0
# goes into its own site-packages with --no-deps
# (scripts/requirements-trl112.txt), and a .pth file appends the main venv's
# site-packages to sys.path. The venv's own directory comes first on sys.path,
# so `import trl` finds 1.12.0 and the rest resolves to the main venv: a few
# MB from PyPI instead of a second torch. Nothing is done when the venv
# already imports trl 1.12.0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MAIN="${LLAMAC_VENV:-$HOME/.cache/llamac-venv}"
VENV="${LLAMAC_VENV_TRL112:-$HOME/.cache/llamac-venv-trl112}"
PY="$VENV/bin/python"
ok() { "$PY" -c 'import trl, torch; assert trl.__version__ == "1.12.0", trl.__version__' >/dev/null 2>&1; }
if [ -x "$PY" ] && ok; then
    echo "$PY"
    exit 0
fi
[ -x "$MAIN/bin/python" ] || { echo "venv-trl112: no main venv at $MAIN (run make test-ref once)" >&2; exit 1; }
[ -x "$PY" ] || { echo "venv-trl112: creating venv $VENV" >&2; "$MAIN/bin/python" -m venv "$VENV"; }
main_site=$("$MAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own_site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$main_site" >"$own_site/llamac-main-venv.pth"
"$PY" -m pip install -q --no-deps -r scripts/requirements-trl112.txt >&2
ok || { echo "venv-trl112: $PY does not import trl 1.12.0 with torch" >&2; exit 1; }
echo "$PY"
