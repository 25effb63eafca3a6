#!/usr/bin/env python3
"""Preference pairs from the SFT demo's WordNet data (scripts/prepare_sft_wordnet.py).

For each word the true definition is chosen and another word's definition of
the same part of speech (after the same "Word (pos):" opening) rejected, so a
model can only tell them apart by meaning. Reads SRC/train.jsonl and
SRC/val.jsonl (SFT conversations: user "What does the word X mean?",
assistant "X (pos): gloss"), writes OUT/train.jsonl and OUT/val.jsonl in TRL's
conversational preference format. Held-out pairs use words the SFT never saw.
Deterministic in --seed.
"""
import argparse
import json
import random


def load(path):
    rows = []
    for line in open(path):
        m = json.loads(line)["messages"]
        word, rest = m[1]["content"].split(" (", 1)
        pos, gloss = rest.split("): ", 1)
        rows.append((m[0]["content"], word, pos, gloss))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the SFT demo's folder (train.jsonl, val.jsonl)")
    ap.add_argument("out", help="folder for the pairs")
    ap.add_argument("--train", type=int, default=48, help="training pairs")
    ap.add_argument("--val", type=int, default=16, help="held-out pairs")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    for split, n in (("train", a.train), ("val", a.val)):
        rows = load(f"{a.src}/{split}.jsonl")
        rng.shuffle(rows)
        with open(f"{a.out}/{split}.jsonl", "w") as f:
            for q, word, pos, gloss in rows[:n]:
                other = [r[3] for r in rows if r[2] == pos and r[3] != gloss]
                wrong = rng.choice(other)
                f.write(json.dumps({"prompt": [{"role": "user", "content": q}],
                                    "chosen": [{"role": "assistant", "content": f"{word} ({pos}): {gloss}"}],
                                    "rejected": [{"role": "assistant", "content": f"{word} ({pos}): {wrong}"}]}) + "\n")
        print(f"{a.out}/{split}.jsonl: {min(n, len(rows))} pairs")


if __name__ == "__main__":
    main()
