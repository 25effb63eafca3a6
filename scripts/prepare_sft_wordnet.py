#!/usr/bin/env python3
"""Instruction data for `make demo-sft` from WordNet 3.0 (Debian's
wordnet-base; Princeton's WordNet licence lets it be used and copied).

Each example is one chat turn: the user asks what a common English word
means, the assistant answers with the first sense's gloss in one sentence:

    user:      What does the word "fold" mean?
    assistant: Fold (noun): the act of folding.

"Common" = the lemma is a single lower-case word whose first sense is tagged
in the SemCor corpus at least --min-tags times (index.<pos>'s tagsense_cnt),
so the base model has seen the word. Words are split into train and
held-out sets by a seeded shuffle (a word in one split never appears in the
other). Writes train.jsonl, val.jsonl and prompts.txt (held-out questions
for the before/after answers) to --out. Standard library only.
"""
import argparse
import json
import os
import random
import re
import sys

POS = {"noun": "n", "verb": "v", "adj": "a"}


def glosses(root, pos):
    """synset offset -> first gloss sentence, from data.<pos>"""
    out = {}
    with open(os.path.join(root, "data." + pos), encoding="latin-1") as f:
        for line in f:
            if line.startswith("  ") or "|" not in line:
                continue
            off = line.split(" ", 1)[0]
            gloss = line.split("|", 1)[1].strip()
            gloss = gloss.split(";")[0].strip()  # the definition, not the examples
            gloss = re.sub(r"\s+", " ", gloss)
            if gloss.startswith('"') or len(gloss) < 8:
                continue
            out[off] = gloss
    return out


def index_entries(root, pos):
    """(lemma, SemCor-tagged senses, synset offsets by sense) of every entry of index.<pos>"""
    with open(os.path.join(root, "index." + pos), encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            p = line.split()
            synset_cnt, p_cnt = int(p[2]), int(p[3])
            rest = p[4 + p_cnt:]
            yield p[0], int(rest[1]), rest[2:2 + synset_cnt]


def words(root, pos, min_tags):
    """(lemma, first-sense offset) of common single words, from index.<pos>"""
    out = []
    for lemma, tagsense, offsets in index_entries(root, pos):
        if tagsense >= min_tags and re.fullmatch(r"[a-z]{3,12}", lemma):
            out.append((lemma, offsets[0]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--out", default="build/sft_demo")
    ap.add_argument("--min-tags", type=int, default=4)
    ap.add_argument("--val", type=int, default=64, help="held-out words")
    ap.add_argument("--prompts", type=int, default=6, help="held-out questions answered before and after")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.wordnet, "data.noun")):
        sys.exit(f"prepare_sft_wordnet.py: no WordNet in {a.wordnet} (apt-get install wordnet-base)")
    ex = {}
    for pos, tag in POS.items():
        g = glosses(a.wordnet, pos)
        for lemma, off in words(a.wordnet, pos, a.min_tags):
            if off in g and lemma not in ex:  # one sense per word: the most frequent part of speech first
                ex[lemma] = (pos, g[off])
    items = sorted(ex.items())
    random.Random(a.seed).shuffle(items)
    val, train = items[:a.val], items[a.val:]
    os.makedirs(a.out, exist_ok=True)

    def conv(w, pos, gloss):
        return {"messages": [
            {"role": "user", "content": f'What does the word "{w}" mean?'},
            {"role": "assistant", "content": f"{w.capitalize()} ({pos}): {gloss}."}]}

    for name, part in (("train", train), ("val", val)):
        with open(os.path.join(a.out, name + ".jsonl"), "w") as f:
            for w, (pos, gloss) in part:
                f.write(json.dumps(conv(w, pos, gloss)) + "\n")
    with open(os.path.join(a.out, "prompts.txt"), "w") as f:
        for w, (pos, gloss) in val[:a.prompts]:
            f.write(f"{w}\t{pos}\t{gloss}\n")
    print(f"prepare_sft_wordnet.py: {len(train)} training and {len(val)} held-out definitions "
          f"(WordNet 3.0, SemCor-tagged >= {a.min_tags}) in {a.out}/")


if __name__ == "__main__":
    main()
