#!/usr/bin/env bash
# make demo-ppo: Llama 2-Chat's other step after the reward model, PPO,
# on this CPU: `llamac rl --algo ppo` (docs/rl.md) on the reward-model
# demo's policy and reward model.
#
# Reuses make demo-rlhf's build/rlhf_demo/rm.h5 (a classifier on the SFT
# demo's SmolLM2-135M-Instruct, LoRA merged) and its prompt files when
# there; otherwise runs scripts/demo_rlhf.sh with RLHF_STOP_AFTER_RM=1 (the
# SFT model, WordNet pairs, the reward model; demo-sft first when its adapter
# is missing). 1) The policy's greedy answers to 32 held-out words, scored
# by the reward model. 2) PPO: the SFT model with LoRA r 16 on every linear
# layer is the policy (and, adapters off, the reference), rm.h5 the reward
# model and the value model's start; rollouts of 8 of the 64 training words
# "What does the word X mean?", one answer each at temperature $TEMP,
# --num-iterations optimizer steps on each, the held-out reward (greedy)
# before, every 2 rollouts and at the end. 3) Reward and KL per rollout,
# the held-out answers after, the curves (curves.png). Everything lands in
# build/ppo_demo (metrics.jsonl, rollouts.jsonl, the adapter). The sizes
# are variables (ROLLOUTS=16 make demo-ppo); extra arguments go to
# `llamac rl`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=build/llamac
R=build/rlhf_demo
D=build/ppo_demo
ROLLOUTS=${ROLLOUTS:-8}  # 8 rollouts x 8 prompts: the 64 training words once
ITERS=${ITERS:-4}        # optimizer steps per rollout (TRL's num_ppo_epochs)
TEMP=${TEMP:-0.7}        # TRL's PPO temperature
# LoRA's lr, measured 2026-12-07 (8 rollouts): 3e-4 keeps objective/kl under
# 0.7; 1e-3 with 2 steps a rollout took it to 4.9 and the held-out reward
# from 1.34 to 1.20
LR=${LR:-3e-4}
BETA=${BETA:-0.05}       # kl_coef, TRL's default
mkdir -p "$D"
t0=$(date +%s)

echo "== 1/4 the SFT model and the reward model (make demo-rlhf's, steps 1-3 when missing)"
G=$(sh scripts/fetch_smollm2.sh)
SFT=$(bash scripts/demo_sft_model.sh)
if ! $L inspect "$R/rm.h5" >/dev/null 2>&1 || [ ! -f "$R/rs_prompts.jsonl" ] || [ ! -f "$R/held_prompts.jsonl" ]; then
    RLHF_STOP_AFTER_RM=1 bash scripts/demo_rlhf.sh
else
    echo "reusing $R/rm.h5 and its prompts"
fi

. scripts/demo_held_reward.sh

echo "== 2/4 before"
held_reward "$D" before "before PPO" "$SFT"

echo "== 3/4 PPO: $ROLLOUTS rollouts of 8 training words at temperature $TEMP, $ITERS optimizer steps each, LoRA r 16"
rm -rf "$D/ckpt" "$D/adapter" "$D/metrics.jsonl" "$D/rollouts.jsonl"
t1=$(date +%s)
$L rl --algo ppo --policy "$SFT" --tokenizer "$G" --template chatml \
    --reward-model "$R/rm.h5" --reward-tokenizer "$G" --reward-template chatml \
    --prompts "$R/rs_prompts.jsonl" --val-prompts "$R/held_prompts.jsonl" --val-every $((2 * ITERS)) \
    --prompts-per-step 8 --num-iterations "$ITERS" --steps $((ROLLOUTS * ITERS)) \
    --max-tokens 40 --temperature "$TEMP" --beta "$BETA" --seed 5 \
    --lora-r 16 --lora-alpha 32 --lora-targets all-linear --lr "$LR" --warmup "$ITERS" --seq 256 --batch 4 \
    --ckpt-dir "$D/ckpt" --adapter-out "$D/adapter" --metrics "$D/metrics.jsonl" --rollouts-out "$D/rollouts.jsonl" "$@"
echo "PPO: $(( $(date +%s) - t1 )) s"
echo "reward and KL per rollout (objective/kl: the summed per-token k1 KL to the reference, mean over answers):"
python3 - "$D/metrics.jsonl" <<'EOF'
import json, sys
roll, val = {}, []
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "val_reward" in r:
        val.append((r["step"], r["val_reward"]))
    elif "rollout" in r:
        roll.setdefault(r["rollout"], r)  # the rollout's first optimizer step: its samples' figures
for i, r in sorted(roll.items()):
    print("  rollout %2d: reward %.3f, objective/kl %.3f, rlhf_reward %.3f, length %.1f"
          % (i, r["reward"], r["objective/kl"], r["objective/rlhf_reward"], r["completions/mean_length"]))
print("held-out reward (greedy) by step: " + ", ".join("%d: %.3f" % v for v in val))
EOF

echo "== 4/4 after"
held_reward "$D" after "after PPO" "$SFT" --adapter "$D/adapter"
if bash scripts/plot_metrics.sh --py scripts/plot_metrics.py "$D/metrics.jsonl" --out "$D/curves.png" \
    --keys "reward+val_reward,objective/kl" \
    --title "llamac make demo-ppo: PPO of the SFT demo's SmolLM2-135M-Instruct on demo-rlhf's reward model" >/dev/null; then
    echo "reward and KL curves: $D/curves.png"
else
    echo "no plot: matplotlib could not be installed or could not draw (the metrics are in $D/metrics.jsonl)"
fi
echo "demo-ppo: $(( $(date +%s) - t0 )) s"
