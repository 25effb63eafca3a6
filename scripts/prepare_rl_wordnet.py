#!/usr/bin/env python3
"""Prompts with verifiable answers for `make demo-grpo` from WordNet 3.0
(Debian's wordnet-base, as the SFT demo's scripts/prepare_sft_wordnet.py).

The task: say what kind of thing a common noun names, one of four WordNet
lexicographer files (noun.animal, noun.plant, noun.food, noun.body):

    user:      Is "cat" an animal, a plant, a food or a body part? Answer with just the category.
    assistant: animal
    user:      Is "salmon" an animal, a plant, a food or a body part? Answer with just the category.

The first exchange is a fixed worked example ("cat" is left out of the data):
without it SmolLM2-135M-Instruct never answers with the bare category ('The
answer is "plant".'), so no sample earns the reward and GRPO has no signal.
With it the format is mostly right and the open gap is knowledge: the
untrained model calls many animals plants. "answer" accepts every category
any WordNet sense of the word is in ("salmon": animal and food), bare or
with its article ("an animal"). "Common" = a single lower-case word whose
first sense is in one of the four files and tagged in SemCor at least
--min-tags times. Held-out words are --val-per-category of each category
(a word in one split never appears in the other); a seeded shuffle makes
both files deterministic. Writes train.jsonl and val.jsonl to --out, one
{"messages", "answer", "word", "category"} a line. Standard library only.
"""
import argparse
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_sft_wordnet import index_entries  # noqa: E402  (WordNet's index, read once for both demos)

# lexicographer file number (WordNet's lexnames) -> category, article
CATEGORIES = {5: ("animal", "an"), 20: ("plant", "a"), 13: ("food", "a"), 8: ("body part", "a")}
EXAMPLE = ("cat", "animal")
QUESTION = 'Is "{}" an animal, a plant, a food or a body part? Answer with just the category.'


def lexfiles(root):
    """noun synset offset -> lexicographer file number, from data.noun"""
    out = {}
    with open(os.path.join(root, "data.noun"), encoding="latin-1") as f:
        for line in f:
            if not line.startswith("  "):
                off, lex = line.split(" ", 2)[:2]
                out[off] = int(lex)
    return out


def nouns(root, min_tags, lex):
    """(lemma, first sense's category, every sense's category) from index.noun"""
    out = []
    for lemma, tagsense, offsets in index_entries(root, "noun"):
        first = lex[offsets[0]]
        if tagsense < min_tags or first not in CATEGORIES or not re.fullmatch(r"[a-z]{3,12}", lemma):
            continue
        cats = [CATEGORIES[n][0] for n in CATEGORIES if any(lex[o] == n for o in offsets)]
        out.append((lemma, CATEGORIES[first][0], cats))
    return out


def row(word, category, cats):
    article = {c: a for c, a in CATEGORIES.values()}
    answer = cats + [f"{article[c]} {c}" for c in cats]
    return {"messages": [{"role": "user", "content": QUESTION.format(EXAMPLE[0])},
                         {"role": "assistant", "content": EXAMPLE[1]},
                         {"role": "user", "content": QUESTION.format(word)}],
            "answer": answer, "word": word, "category": category}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--out", default="build/grpo_demo")
    ap.add_argument("--min-tags", type=int, default=1)
    ap.add_argument("--val-per-category", type=int, default=16, help="held-out words of each category")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.wordnet, "data.noun")):
        sys.exit(f"prepare_rl_wordnet.py: no WordNet in {a.wordnet} (apt-get install wordnet-base)")
    words = [w for w in nouns(a.wordnet, a.min_tags, lexfiles(a.wordnet)) if w[0] != EXAMPLE[0]]
    random.Random(a.seed).shuffle(words)
    val, train = [], []
    for w in words:
        (val if sum(v[1] == w[1] for v in val) < a.val_per_category else train).append(w)
    os.makedirs(a.out, exist_ok=True)
    for name, part in (("train", train), ("val", val)):
        with open(os.path.join(a.out, name + ".jsonl"), "w") as f:
            for w in part:
                f.write(json.dumps(row(*w)) + "\n")
    counts = ", ".join(f"{c} {sum(w[1] == c for w in train)}" for c, _ in CATEGORIES.values())
    print(f"prepare_rl_wordnet.py: {len(train)} training prompts ({counts}) and {len(val)} held-out "
          f"(WordNet 3.0, SemCor-tagged >= {a.min_tags}) in {a.out}/")


if __name__ == "__main__":
    main()
