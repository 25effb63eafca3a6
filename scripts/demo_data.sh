#!/usr/bin/env bash
# make demo-data: the pretraining-data steps on the demo corpus before it is
# tokenised. Prepares build/corpus (scripts/prepare_corpus.py: Project
# Gutenberg Shakespeare and Milton, as make demo trains on), removes
# duplicates with `llamac data dedup` (exact, then MinHash), drops documents with `llamac data filter` (Gopher and C4 rules,
# datatrove's defaults), then encodes what is left into a shard with the demo
# tokenizer (build/demo/tok.bin from make demo, else one trained here), each
# step printing what it kept and why it dropped the rest. Outputs go to
# build/demo-data; make demo's own shards are not touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=build/llamac
D=build/demo-data
mkdir -p "$D"

echo "== 1/4 corpus: scripts/prepare_corpus.py -> build/corpus"
python3 scripts/prepare_corpus.py --out build/corpus
IN=build/corpus/train.jsonl

echo "== 2/4 dedup: llamac data dedup"
$L data dedup --input "$IN" --out "$D/dedup.jsonl" --clusters "$D/clusters.jsonl"
IN="$D/dedup.jsonl"

echo "== 3/4 filter: llamac data filter (Gopher quality, Gopher repetition, C4)"
$L data filter --input "$IN" --out "$D/filtered.jsonl" --rejected "$D/rejected.jsonl" --quiet

echo "== 4/4 tokenise: llamac tokenize encode"
TOK=build/demo/tok.bin
if [ ! -s "$TOK" ]; then
    TOK="$D/tok.bin"
    $L tokenize train --input "$D/filtered.jsonl" --vocab 4096 --out "$TOK"
fi
$L tokenize encode --tokenizer "$TOK" --input "$D/filtered.jsonl" --out "$D/train.bin"
echo
echo "== dropped documents with their reason: $D/rejected.jsonl"
