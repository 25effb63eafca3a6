#!/usr/bin/env python3
"""llamac data dedup against Hugging Face datatrove 0.10.1 (make test-ref).

Documents: the demo corpus (scripts/prepare_corpus.py: Shakespeare and
Milton, whole paragraphs of about 4 KB) with injected duplicates, shuffled
with a fixed seed:
  - exact copies after normalisation (case, whitespace, punctuation and
    digits changed), which exact dedup must drop keeping the first;
  - near copies with a few words replaced, deleted or inserted (Jaccard of
    5-gram shingles from ~0.95 down to ~0.3, so some cluster and some not);
  - Project Gutenberg style licence headers (a fixed paragraph of
    boilerplate with a different title and etext number) in front of short
    distinct texts: the real near-duplicate signal of Gutenberg dumps.

Checks, each on the same JSONL and parameters:
  1. exact: llamac --exact 1 --minhash 0 keeps the same documents as
     datatrove's ExactDedupSignature/ExactFindDedups/ExactDedupFilter with
     content_getter = simplify_text(doc.text) (llamac's stated
     normalisation; datatrove's exact dedup hashes whatever the getter
     returns);
  2. minhash: llamac --exact 0 --minhash 1 against datatrove's
     MinhashDedupSignature/Buckets/Cluster/Filter with MinhashConfig()
     defaults (5-grams, 14 x 8, seed 1, xxhash 64-bit, English = spaCy
     words): the same clusters (as sets of documents) and the same kept
     documents; both sets of kept lines written identically;
  3. signatures: datatrove's get_signature per document against llamac's
     (through --clusters, indirectly) is implied by 2; the kept-document
     comparison is exact, tolerance 0.

    python3 scripts/test_dedup_ref.py --llamac build/llamac --work build/test_dedup_ref
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BOILERPLATE = (
    "The Project Gutenberg EBook of {title}. This eBook is for the use of anyone anywhere at no cost and "
    "with almost no restrictions whatsoever. You may copy it, give it away or re-use it under the terms of "
    "the Project Gutenberg License included with this eBook or online at www.gutenberg.org. Title: {title}. "
    "Release Date: {month}, {year} [EBook #{num}]. Language: English. Character set encoding: ASCII. "
    "*** START OF THIS PROJECT GUTENBERG EBOOK {utitle} *** Produced by volunteers of the Online Distributed "
    "Proofreading Team. Please read the legal small print and other information about the eBook and "
    "Project Gutenberg at the bottom of this file. Included is important information about your specific "
    "rights and restrictions in how the file may be used. You can also find out about how to make a "
    "donation to Project Gutenberg, and how to get involved."
)


def corpus_docs(limit):
    path = os.path.join(ROOT, "build", "corpus", "train.jsonl")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(HERE, "prepare_corpus.py")], check=True)
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
            if len(docs) == limit:
                break
    return docs


def make_docs(n_real, seed):
    rng = random.Random(seed)
    real = corpus_docs(n_real)
    out = [("real", t) for t in real]
    vocab = sorted({w for t in real[:50] for w in t.split()})
    for i in range(n_real // 10):  # exact after normalisation
        t = rng.choice(real)
        v = rng.choice([t, t.upper(), "  " + t.replace(" ", "   ") + "\n", t.replace(".", "!").replace(",", ";")])
        out.append(("exact", v))
    for i in range(n_real // 5):  # near copies, a varying number of edits
        words = rng.choice(real).split()
        edits = max(1, int(len(words) * rng.choice([0.002, 0.01, 0.03, 0.08, 0.2])))
        for _ in range(edits):
            k = rng.randrange(len(words))
            op = rng.random()
            if op < 0.5:
                words[k] = rng.choice(vocab)
            elif op < 0.75 and len(words) > 10:
                del words[k]
            else:
                words.insert(k, rng.choice(vocab))
        out.append(("near", " ".join(words)))
    months = ["January", "March", "May", "July", "October"]
    for i in range(12):  # licence boilerplate in front of short distinct texts
        title = " ".join(rng.sample(vocab, 3)).strip(".,;:!?")
        head = BOILERPLATE.format(title=title, utitle=title.upper(), month=rng.choice(months),
                                  year=1990 + i, num=1000 + 37 * i)
        tail = " ".join(rng.sample(vocab, 6))
        out.append(("licence", head + "\n\n" + tail))
    rng.shuffle(out)
    return out


def run_llamac(args, inp, outp, *flags):
    cmd = [args.llamac, "data", "dedup", "--input", inp, "--out", outp, *flags]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"llamac failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def kept_ids(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["id"] for line in f]


def datatrove_exact(docs, work):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                      ExactFindDedups)
    from datatrove.utils.text import simplify_text

    def getter(doc) -> str:
        return simplify_text(doc.text)

    cfg = ExactDedupConfig(content_getter=getter)
    sig, dup = os.path.join(work, "dt_exact_sig"), os.path.join(work, "dt_exact_dup")
    mk = lambda: (Document(text=t, id=str(i)) for i, (_, t) in enumerate(docs))
    ExactDedupSignature(output_folder=sig, config=cfg).run(mk(), rank=0, world_size=1)
    ExactFindDedups(data_folder=sig, output_folder=dup, config=cfg).run(rank=0, world_size=1)
    return [int(d.id) for d in ExactDedupFilter(data_folder=dup, config=cfg).run(mk(), rank=0, world_size=1)]


def datatrove_minhash(docs, work):
    import struct

    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)

    cfg = MinhashConfig()
    sig, buck, rem = (os.path.join(work, d) for d in ("dt_mh_sig", "dt_mh_buckets", "dt_mh_remove"))
    mk = lambda: (Document(text=t, id=str(i)) for i, (_, t) in enumerate(docs))
    MinhashDedupSignature(output_folder=sig, config=cfg).run(mk(), rank=0, world_size=1)
    for b in range(cfg.num_buckets):
        MinhashDedupBuckets(input_folder=sig, output_folder=buck, config=cfg).run(rank=b, world_size=cfg.num_buckets)
    MinhashDedupCluster(input_folder=buck, output_folder=rem, config=cfg, save_cluster_id=True).run(world_size=1)
    kept = [int(d.id) for d in MinhashDedupFilter(input_folder=rem).run(mk(), rank=0, world_size=1)]
    clusters = {}
    cpath = os.path.join(rem, "000000.clusters")
    if os.path.exists(cpath):
        data = open(cpath, "rb").read()
        for k in range(0, len(data), 8):
            doc, cid = struct.unpack("<2I", data[k:k + 8])
            clusters.setdefault(cid, []).append(doc)
    return kept, sorted(sorted(c) for c in clusters.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llamac", default=os.path.join(ROOT, "build", "llamac"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "test_dedup_ref"))
    ap.add_argument("--docs", type=int, default=300, help="real documents before injection")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    docs = make_docs(args.docs, args.seed)
    inp = os.path.join(args.work, "in.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for i, (kind, t) in enumerate(docs):
            f.write(json.dumps({"id": i, "kind": kind, "text": t}, ensure_ascii=False) + "\n")
    kinds = {k: sum(1 for d in docs if d[0] == k) for k in ("real", "exact", "near", "licence")}
    print(f"test_dedup_ref: {len(docs)} documents {kinds}")
    passed = failed = 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        passed += ok
        failed += not ok

    # 1. exact
    out = os.path.join(args.work, "exact.jsonl")
    print(run_llamac(args, inp, out, "--exact", "1", "--minhash", "0"), end="")
    ours, ref = kept_ids(out), datatrove_exact(docs, args.work)
    check("exact dedup keeps datatrove's documents", ours == ref,
          f"llamac {len(ours)}, datatrove {len(ref)} kept; differ on {len(set(ours) ^ set(ref))}")

    # 2. minhash
    out = os.path.join(args.work, "minhash.jsonl")
    cl = os.path.join(args.work, "clusters.jsonl")
    print(run_llamac(args, inp, out, "--exact", "0", "--minhash", "1", "--clusters", cl), end="")
    ours = kept_ids(out)
    ours_cl = sorted(sorted(json.loads(line)["docs"]) for line in open(cl))
    ref, ref_cl = datatrove_minhash(docs, args.work)
    check("minhash clusters equal datatrove's", ours_cl == ref_cl,
          f"llamac {len(ours_cl)} clusters ({sum(map(len, ours_cl))} docs), datatrove {len(ref_cl)} "
          f"({sum(map(len, ref_cl))} docs)")
    check("minhash keeps datatrove's documents", ours == ref,
          f"llamac {len(ours)}, datatrove {len(ref)} kept; differ on {len(set(ours) ^ set(ref))}")
    injected_near = sum(1 for c in ours_cl for d in c if docs[d][0] in ("near", "licence"))
    lic = [d for c in ours_cl for d in c if docs[d][0] == "licence"]
    check("minhash finds injected near copies and licence headers", injected_near > 0 and len(lic) >= 2,
          f"{injected_near} injected documents in clusters, {len(lic)} of {kinds['licence']} licence headers")
    print(f"test_dedup_ref: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
