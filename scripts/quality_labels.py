#!/usr/bin/env python3
"""Labelled JSONL for llamac data quality-train, from the demo corpus.

High quality ("hq"): the corpus documents as they are (Shakespeare and
Milton paragraphs, scripts/prepare_corpus.py). Low quality ("lq"), as many
again, in four kinds that web-scale filters meet:
  - shuffled: a corpus document with its words in random order (the same
    words, so only the bigram features can tell it apart);
  - boilerplate: licence, cookie and navigation sentences repeated;
  - lorem: lorem-ipsum filler;
  - spam: keyword lists and prices.
Lines are shuffled with --seed. Standard library only.

    python3 scripts/quality_labels.py [--corpus build/corpus/train.jsonl] [--out build/quality/labels.jsonl]
"""

import argparse
import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BOILER = [
    "This eBook is for the use of anyone anywhere at no cost and with almost no restrictions whatsoever.",
    "We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
    "Home | About | Contact | Privacy Policy | Terms of Service | Sitemap",
    "Click here to subscribe to our newsletter and never miss an update.",
    "All rights reserved. No part of this page may be reproduced without permission.",
    "Share this article on Facebook Twitter LinkedIn Email Print",
]
LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip "
         "ex ea commodo consequat").split()
SPAM = ["cheap", "best", "price", "buy", "now", "free", "shipping", "discount", "online", "deal", "sale", "offer",
        "casino", "loans", "replica", "watches", "pills", "download", "crack", "keygen"]


def lq_doc(rng, hq_words):
    kind = rng.choice(["shuffled", "shuffled", "boilerplate", "lorem", "spam"])
    if kind == "shuffled":
        w = list(rng.choice(hq_words))
        rng.shuffle(w)
        return kind, " ".join(w)
    if kind == "boilerplate":
        return kind, "\n".join(rng.choice(BOILER) for _ in range(rng.randint(5, 40)))
    if kind == "lorem":
        return kind, " ".join(rng.choice(LOREM) for _ in range(rng.randint(50, 600)))
    return kind, "\n".join(" ".join(rng.choice(SPAM) for _ in range(rng.randint(3, 8))) + f" ${rng.randint(1, 999)}.99"
                           for _ in range(rng.randint(5, 50)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "build", "corpus", "train.jsonl"))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "quality", "labels.jsonl"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="at most this many corpus documents (0: all)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with open(args.corpus, encoding="utf-8") as f:
        hq = [json.loads(line)["text"] for line in f]
    if args.limit:
        hq = hq[:args.limit]
    hq_words = [t.split() for t in hq]
    rows = [{"label": "hq", "kind": "corpus", "text": t} for t in hq]
    for _ in range(len(hq)):
        kind, text = lq_doc(rng, hq_words)
        rows.append({"label": "lq", "kind": kind, "text": text})
    rng.shuffle(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"quality_labels: {len(hq)} hq + {len(rows) - len(hq)} lq -> {args.out}")


if __name__ == "__main__":
    main()
