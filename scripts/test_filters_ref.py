#!/usr/bin/env python3
"""llamac data filter against datatrove's Gopher and C4 filters (make test-ref).

The same documents go through datatrove 0.10.1's GopherQualityFilter,
GopherRepetitionFilter and C4QualityFilter (in that order, default
parameters, the first failing filter's reason counting, as in a datatrove
pipeline) and through `llamac data filter --rejected`; the kept sets and
every dropped document's reason must be identical, and so must each
document's words (llamac's --words against datatrove's split_into_words,
which is spaCy's English tokenizer).

Documents: the demo corpus (build/corpus, scripts/prepare_corpus.py: Project
Gutenberg Shakespeare and Milton) cut into pages of 40 lines and into
paragraphs, so that they fall on both sides of the thresholds, plus crafted
cases at the rules' edges (bullets, ellipses, hashes, repeated lines and
n-grams, lorem ipsum, braces, javascript and policy lines, contractions,
abbreviations, URLs, emoticons, non-ASCII punctuation), plus seeded random
documents: lines of words drawn from a small vocabulary full of the rules'
triggers (repeats, bullets, ellipses, braces, cookies), and strings of
characters, punctuation, quotes, spaces and tokenizer exceptions that probe
the word splitting.

Usage: test_filters_ref.py [--llamac build/llamac] [--work DIR] [--max-docs N]
"""
import argparse
import copy
import json
import os
import random
import subprocess
import sys

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.utils.text import split_into_words

CRAFTED = [
    "",
    "word " * 60,
    "The cat and the dog sat with a hat. " * 3,
    "- item one of the list that we have\n- item two of the list\n- item three\n" * 5,
    "• one the of and\n• two with\n• three to be\n" * 20,
    "It was the best of times... and then the worst of times...\n" * 12,
    "#tag #tag the cat and the dog #tag are with the owner of that house " * 8,
    "Don't you think it's fine? I can't say, Mr. Smith, that I'd agree with the U.S. e.g. policy. " * 8,
    "He said--Mr. Jones--that the 3.5km walk (a.m.) was fine:) and well-known to all of them. " * 8,
    "Visit http://example.com/a?b=1 or www.example.org for the terms of the deal and the rest. " * 8,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit. The rest is text and more text.\n" * 6,
    "The function f(x) { return x; } is here. And the cat sat with the dog.\n" * 6,
    "Please enable JavaScript to view the page and the rest of it.\nThe cat sat with the dog on the mat.\n" * 6,
    "This site uses cookies. The cat sat with the dog on the mat and that was that.\n" * 6,
    "« Bonjour », dit-il — et puis… « au revoir ». The cat and the dog sat with the owner.\n" * 8,
    "The end of the line has no punctuation\nAnd neither does this one of the two\n" * 10,
    "A short. Line. Here. And. There. The cat and the dog with that hat sat on the mat to be seen.\n" * 5,
    "the the the the the the the the the the and of to with " * 20,
    "one two three four five six seven eight nine ten eleven twelve " * 12,
    "CHAPTER I.\n\nThe man and the boy went to the sea with that dog.\n\nCHAPTER I.\n\n" * 6,
    "Tabs\tand\u00a0spaces  and\u2003ems: the cat, the dog; and \"quotes\" with 'single' ones [1] [edit].\n" * 8,
    "C++ and :) and <3 and o_O and ¯\\(ツ)/¯ with the cat and the dog of that house. " * 8,
    "(" * 100 + "deep." + ")" * 100 + " the cat and the dog" + "...!!" * 60 + " " + '"' * 70 + "word" + "!?" * 70,
    "The cat sat with the dog.\x00\nA line ends with a NUL\x00\n" + "The dog and the cat ran to the end. \x00 ." * 12,
    "Numbers 1,000 and 2-3 and 10% and $5 and 5$ and 3+4 with the dog and the cat to be. " * 8,
]


VOCAB = ("the be to of and that have with cat dog sat ran a I it's don't Mr. e.g. # ... \u2026 - \u2022 lorem ipsum "
         "javascript cookies { } [1] [edit] 123 4.5 x y zz").split() + ["privacy policy", "terms of use", "\u00e9", "na\u00efve"]
ENDS = ["", ".", "!", "?", '"', "'", "...", "\u2026", ":", ","]
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3 + list(".,;:!?'\"()[]{}<>-_/\\#$%&*+=@^`|~") + [
    "...", "\u2026", "\u2014", "\u2013", "\u00ab", "\u00bb", "\u201c", "\u201d", "\u2018", "\u2019", "\u00e9", "\u00fc", "\u00df",
    "\u0416", "\u03bb", "\u4e2d", "\u20ac", "\u00a3", "\u00b0", "\u00b2", "\u2022", "\U0001f600", "\u2665", "\u00a9", " ", " ", " ",
    " ", "\n", "\t", "\u00a0", "\u2003", "n't", "'s", "Mr.", "U.S.", "e.g.", "http://a.b/c", "www.x.org", ":)", "<3", "C++", "3.5",
    "1,000", "10km", "5$", "$5", "a.m.", "'em", "can't", "won't", "I'm", "o'clock", "and/or", "\u00e4.", "xD", "^_^", "\u00b0C.", "AB."]


def random_docs(n, seed):
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(1, 25)):
            pre = rng.choice(["", "", "", "- ", "\u2022 ", "  "])
            words = " ".join(rng.choice(VOCAB[:rng.randint(5, len(VOCAB))]) for _ in range(rng.randint(0, 14)))
            lines.append(pre + words + rng.choice(ENDS))
        sep = rng.choice(["\n", "\n", "\n\n", "\r\n"])
        t = sep.join(lines)
        if rng.random() < 0.3:
            t = t + sep + t[:rng.randint(0, len(t))]
        docs.append(t)
        docs.append("".join(rng.choice(CHARS) for _ in range(rng.randint(1, 60))))
    return docs


def pages_and_paragraphs(path, max_docs):
    docs = []
    with open(path) as f:
        for line in f:
            text = json.loads(line)["text"]
            lines = text.split("\n")
            for i in range(0, len(lines), 40):
                docs.append("\n".join(lines[i:i + 40]))
            for para in text.split("\n\n"):
                if len(para) > 200:
                    docs.append(para)
            if len(docs) >= max_docs:
                break
    return docs[:max_docs]


def datatrove_reason(filters, text):
    doc = Document(text=text, id="x")
    for f in filters:
        res = f.filter(copy.copy(doc))
        ok, reason = (res, None) if not isinstance(res, tuple) else res
        if not ok:
            return reason
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default=os.environ.get("LLAMAC", "build/llamac"))
    ap.add_argument("--work", default="build/test_filters_ref")
    ap.add_argument("--corpus", default="build/corpus/train.jsonl")
    ap.add_argument("--max-docs", type=int, default=3000)
    ap.add_argument("--random-docs", type=int, default=1000, help="pairs of seeded random documents")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if not os.path.exists(a.corpus):
        subprocess.run([sys.executable, "scripts/prepare_corpus.py", "--out", os.path.dirname(a.corpus)], check=True)
    texts = CRAFTED + pages_and_paragraphs(a.corpus, a.max_docs) + random_docs(a.random_docs, 26)
    inp = os.path.join(a.work, "in.jsonl")
    with open(inp, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
    filters = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter()]
    want = {}
    for i, t in enumerate(texts):
        r = datatrove_reason(filters, t)
        if r is not None:
            want[i] = r
    out, rej = os.path.join(a.work, "out.jsonl"), os.path.join(a.work, "rejected.jsonl")
    words = os.path.join(a.work, "words.jsonl")
    subprocess.run([a.llamac, "data", "filter", "--input", inp, "--out", out, "--rejected", rej, "--words", words,
                    "--quiet"], check=True)
    got = {}
    with open(rej) as f:
        for line in f:
            o = json.loads(line)
            got[o["id"]] = o["filter_reason"]
    kept = [json.loads(line)["id"] for line in open(out)]
    bad = 0
    if kept != [i for i in range(len(texts)) if i not in want]:
        print("kept sets differ")
        bad += 1
    for i in range(len(texts)):
        if want.get(i) != got.get(i):
            bad += 1
            if bad <= 10:
                print(f"doc {i}: datatrove {want.get(i)}, llamac {got.get(i)}: {texts[i][:100]!r}")
    passed = len(texts) + 1 - bad
    wbad = 0
    with open(words) as f:
        for i, line in enumerate(f):
            w = json.loads(line)
            ref = split_into_words(texts[i])
            if w != list(ref):
                wbad += 1
                if wbad <= 5:
                    k = next((j for j in range(min(len(w), len(ref))) if w[j] != ref[j]), min(len(w), len(ref)))
                    print(f"doc {i} words differ at {k}: datatrove {ref[max(0, k - 2):k + 3]}, llamac {w[max(0, k - 2):k + 3]}")
    if i + 1 != len(texts):
        wbad += 1
    passed += len(texts) - wbad
    reasons = {}
    for r in want.values():
        reasons[r] = reasons.get(r, 0) + 1
    print(f"test_filters_ref: {len(texts)} documents, datatrove kept {len(texts) - len(want)}, dropped {reasons}")
    print(f"test_filters_ref: {bad} documents kept or dropped differently, {wbad} split into different words")
    print(f"test_filters_ref: {passed} passed, {bad + wbad} failed")
    return 1 if bad + wbad else 0


if __name__ == "__main__":
    sys.exit(main())
