#!/usr/bin/env bash
# Regenerate the reference fixtures with transformers into build/ref and check
# them against the committed ones in tests/fixtures (scripts/ref_compare.py:
# same records, int32 exact, float32 within atol 1e-5 + rtol 1e-4).
# Proves the committed fixtures are what scripts/ref_llama.py produces.
# Then scripts/test_convert.py checks `llamac convert` and `llamac logits`
# ($LLAMAC, default build/llamac) against transformers, h5py and gguf.
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
if ! "$PY" -c 'import torch, transformers, numpy, safetensors, h5py, gguf, sentencepiece, tokenizers, jinja2, peft, trl, datasets' >/dev/null 2>&1; then
    echo "test-ref: installing scripts/requirements-ref.txt into $VENV" >&2
    "$PY" -m pip install -q -r scripts/requirements-ref.txt
fi

rc=0
passed=0
failed=0
mkdir -p build/ref
if "$PY" scripts/ref_llama.py --out build/ref; then
    "$PY" scripts/ref_compare.py tests/fixtures build/ref || rc=$?
else
    rc=$?
    echo "test-ref: scripts/ref_llama.py failed (exit $rc)"
fi
if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

# llamac convert / logits against transformers, h5py and gguf: each of its
# checks counts in the total; a crash before its summary line counts as one
# failure.
LLAMAC="${LLAMAC:-build/llamac}"
crc=0
"$PY" scripts/test_convert.py --llamac "$LLAMAC" --work build/test_convert 2>&1 | tee build/test_convert.log \
    || crc=$?
summary=$(grep -E '^test_convert: [0-9]+ passed, [0-9]+ failed$' build/test_convert.log | tail -1 || true)
if [ -n "$summary" ]; then
    passed=$((passed + $(echo "$summary" | awk '{print $2}')))
    failed=$((failed + $(echo "$summary" | awk '{print $4}')))
else
    failed=$((failed + 1))
fi
[ "$crc" -eq 0 ] || rc=$crc

# LoRA adapters between llamac and PEFT (scripts/test_peft.py): counted as
# test_convert's checks are
prc=0
"$PY" scripts/test_peft.py --llamac "$LLAMAC" --work build/test_peft 2>&1 | tee build/test_peft.log || prc=$?
summary=$(grep -E '^test_peft: [0-9]+ passed, [0-9]+ failed$' build/test_peft.log | tail -1 || true)
if [ -n "$summary" ]; then
    passed=$((passed + $(echo "$summary" | awk '{print $2}')))
    failed=$((failed + $(echo "$summary" | awk '{print $4}')))
else
    failed=$((failed + 1))
fi
[ "$prc" -eq 0 ] || rc=$prc

# llamac's checkpoints through h5py, h5dump and transformers (layout and values)
hrc=0
"$PY" scripts/test_ckpt_h5.py --llamac "$LLAMAC" --dir build/test_ckpt_h5 2>&1 | tee build/test_ckpt_h5.log || hrc=$?
summary=$(grep -E '^test_ckpt_h5: [0-9]+ checks passed, [0-9]+ failed$' build/test_ckpt_h5.log | tail -1 || true)
if [ -n "$summary" ]; then
    passed=$((passed + $(echo "$summary" | awk '{print $2}')))
    failed=$((failed + $(echo "$summary" | awk '{print $5}')))
else
    failed=$((failed + 1))
fi
[ "$hrc" -eq 0 ] || rc=$hrc

# llamac's chat templates against the published Jinja templates (jinja2 + tokenizers)
qrc=0
"$PY" scripts/test_chat_ref.py --llamac "$LLAMAC" --work build/test_chat_ref 2>&1 | tee build/test_chat_ref.log || qrc=$?
summary=$(grep -E '^test_chat_ref: [0-9]+ passed, [0-9]+ failed$' build/test_chat_ref.log | tail -1 || true)
if [ -n "$summary" ]; then
    passed=$((passed + $(echo "$summary" | awk '{print $2}')))
    failed=$((failed + $(echo "$summary" | awk '{print $4}')))
else
    failed=$((failed + 1))
fi
[ "$qrc" -eq 0 ] || rc=$qrc

# llamac dpo against TRL's DPOTrainer (scripts/test_dpo_ref.py): tokens, per-step
# metrics and the trained weights / adapters
drc=0
"$PY" scripts/test_dpo_ref.py --llamac "$LLAMAC" --work build/test_dpo_ref 2>&1 | tee build/test_dpo_ref.log || drc=$?
summary=$(grep -E '^test_dpo_ref: [0-9]+ passed, [0-9]+ failed$' build/test_dpo_ref.log | tail -1 || true)
if [ -n "$summary" ]; then
    passed=$((passed + $(echo "$summary" | awk '{print $2}')))
    failed=$((failed + $(echo "$summary" | awk '{print $4}')))
else
    failed=$((failed + 1))
fi
[ "$drc" -eq 0 ] || rc=$drc

echo "test-ref: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
exit "$rc"
