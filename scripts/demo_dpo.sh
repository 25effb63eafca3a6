#!/usr/bin/env bash
# make demo-dpo: DPO on the SFT demo's fine-tuned SmolLM2-135M-Instruct, on
# this CPU.
#
# The SFT demo (scripts/demo_sft.sh, run first when build/sft_demo/adapter
# is missing) taught SmolLM2 to answer "What does the word X mean?" with
# WordNet's first gloss. Its adapter is merged into the base (llamac convert
# --adapter): that model is both the policy to train (new LoRA adapters) and
# the reference (the adapters off). Preference pairs come from the same
# WordNet data: for each word the true definition is chosen, another word's
# definition of the same part of speech (after the same "Word (pos):"
# opening) rejected; held-out pairs use words the SFT never saw. Prints the
# held-out answers before and after, and the held-out rewards/accuracies
# (the fraction of pairs where the policy prefers the true definition more
# than the reference does) and margins as training goes; the reference
# log-probabilities are computed once (--ref-cache; reused by a rerun on the
# same pairs, removed when the pairs changed). Sized for a few minutes of
# CPU on 2 cores: 48 training pairs seen once (12 steps of 2 packed rows of
# 256 tokens), 16 held-out pairs validated every 4 steps, 4 held-out words
# asked before and after. Extra arguments go to `llamac dpo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=build/llamac
S=build/sft_demo
D=build/dpo_demo
mkdir -p "$D"

echo "== 1/5 the SFT model: build/sft_demo's adapter merged into SmolLM2-135M-Instruct"
G=$(sh scripts/fetch_smollm2.sh)
SFT=$(bash scripts/demo_sft_model.sh)

echo "== 2/5 preference pairs from WordNet (true definition chosen, another word's rejected)"
old=$(cat "$D/train.jsonl" "$D/val.jsonl" 2>/dev/null | cksum || true) # none on a first run
python3 scripts/prepare_pairs_wordnet.py "$S" "$D"
head -n 1 "$D/val.jsonl"
# a cache of other pairs would be refused: drop it when the pairs changed
[ "$old" = "$(cat "$D/train.jsonl" "$D/val.jsonl" | cksum)" ] || rm -f "$D/ref.bin"

ask() { # $1 = word, $2.. = extra flags: SmolLM2's ChatML prompt, greedy
    local w=$1; shift
    local p
    p=$(printf '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat does the word "%s" mean?<|im_end|>\n<|im_start|>assistant\n' "$w")
    $L generate --model "$SFT" --tokenizer "$G" --special --temperature 0 --max-tokens 30 \
        --prompt "$p" "$@" 2>/dev/null | sed -n '/^<|im_start|>assistant$/,$p' | tail -n +2 | tr '\n' ' '
}
show() { # $1 = before|after, $2.. = extra flags for generate
    local when=$1; shift
    echo "---- held-out words, $when DPO (greedy) ----"
    head -n 4 "$S/prompts.txt" | while IFS=$'\t' read -r w pos gloss; do
        echo "Q: What does the word \"$w\" mean?   (WordNet: $w ($pos): $gloss.)"
        echo "A: $(ask "$w" "$@")"
    done
}

echo "== 3/5 before"
show before

echo "== 4/5 LoRA DPO: r 16 on all linear layers, beta 0.1, the reference the SFT model (cached)"
rm -rf "$D/ckpt"
$L dpo --model "$SFT" --tokenizer "$G" --template chatml \
    --data "$D/train.jsonl" --val "$D/val.jsonl" --ref-cache "$D/ref.bin" \
    --lora-r 16 --lora-alpha 32 --lora-targets all-linear --beta 0.1 \
    --seq 256 --batch 2 --steps 12 --lr 5e-4 --warmup 2 --val-every 4 --val-batches 4 --log-every 2 \
    --ckpt-dir "$D/ckpt" --metrics "$D/metrics.jsonl" --adapter-out "$D/adapter" "$@"

echo "== 5/5 after"
show after --adapter "$D/adapter"
echo
echo "held-out rewards/accuracies by step (the fraction of held-out pairs whose true definition gained more):"
grep '"val_loss"' "$D/metrics.jsonl" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print("  step %3d: val loss %.4f, accuracy %.3f, margin %.3f" % (r["step"], r["val_loss"],
          r["eval_rewards/accuracies"], r["eval_rewards/margins"]))'
echo "== the DPO adapter is a PEFT directory on $SFT: $D/adapter"
