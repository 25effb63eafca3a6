#!/usr/bin/env python3
"""make bench-tokenize: `llamac tokenize encode` on every core against Hugging
Face `tokenizers` encode_batch on the same cores, the same tokenizer.json and
the same text, and llamac's peak memory at growing corpus sizes.

    ~/.cache/llamac-venv/bin/python scripts/bench_tokenize.py [--sizes 250,2500]
        [--threads N] [--vocab 8192] [--llamac build/llamac] [--out build/bench_tokenize]

The corpus is the demo's (scripts/prepare_corpus.py: Shakespeare and Milton
from Project Gutenberg, one JSONL document per work section), repeated to
each size in --sizes (MB of JSONL). The tokenizer is a --vocab byte-level BPE
with Llama 3's split trained by `tokenizers` on the corpus
(scripts/tok_ref.py's recipe), saved as tokenizer.json, which both sides
load. Cached under --out.

For the first size:
  llamac   `tokenize encode` (JSONL parse, encode, shard written) with
           OMP_NUM_THREADS=1 and =N; wall time of the command;
  tokenizers  encode_batch on N threads (RAYON_NUM_THREADS=N,
           TOKENIZERS_PARALLELISM=true) over the same documents, read in
           batches of about 16 MB (llamac's default batch); only the
           encode_batch calls are timed (JSON parsing in Python is not), so
           the comparison favours tokenizers.
MB/s is of document text (UTF-8 bytes of the text fields) on both sides;
both must produce the same number of tokens (llamac's count includes one
end-of-text per document). Peak RSS: llamac's own report (getrusage),
tokenizers' process's ru_maxrss after the run.
For every size: llamac's peak RSS on N threads, so a bounded memory shows as
the same figure at 250 MB and 2.5 GB.

Run it on a quiet machine; --sizes 2 makes a quick check of the script.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

HF_WORKER = r"""
import json, os, resource, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
batch_bytes = int(sys.argv[3])
enc_s, tokens, docs, text_bytes = 0.0, 0, 0, 0
def run(texts):
    global enc_s, tokens
    t = time.perf_counter()
    out = tok.encode_batch(texts, add_special_tokens=False)
    enc_s += time.perf_counter() - t
    tokens += sum(len(e.ids) for e in out)
t0 = time.perf_counter()
texts, held = [], 0
with open(sys.argv[2], "rb") as f:
    for line in f:
        if not line.strip():
            continue
        s = json.loads(line)["text"]
        texts.append(s)
        n = len(s.encode("utf-8"))
        text_bytes += n
        held += len(line)
        docs += 1
        if held >= batch_bytes:
            run(texts)
            texts, held = [], 0
if texts:
    run(texts)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"encode_s": enc_s, "wall_s": wall, "tokens": tokens, "docs": docs,
                  "text_bytes": text_bytes, "rss_mb": rss}))
"""


def corpus(out, mb):
    src = os.path.join(ROOT, "build", "corpus", "train.jsonl")
    if not os.path.exists(src):
        subprocess.run([sys.executable, os.path.join(HERE, "prepare_corpus.py"), "--out",
                        os.path.join(ROOT, "build", "corpus")], check=True)
    path = os.path.join(out, f"corpus_{mb:g}mb.jsonl")
    want = int(mb * 1e6)
    if os.path.exists(path) and os.path.getsize(path) >= want:
        return path
    with open(src, "rb") as f:
        lines = [l for l in f.read().splitlines(keepends=True) if l.strip()]
    n = 0
    with open(path + ".tmp", "wb") as f:
        while n < want:
            for l in lines:
                f.write(l)
                n += len(l)
                if n >= want:
                    break
    os.replace(path + ".tmp", path)
    return path


def tokenizer(out, vocab, sample):
    path = os.path.join(out, f"tokenizer{vocab}.json")
    if os.path.exists(path):
        return path
    from tok_ref import SPECIALS, train
    text = b""
    with open(sample, "rb") as f:
        for line in f:
            if line.strip():
                text += json.loads(line)["text"].encode("utf-8") + b"\n"
            if len(text) > 8_000_000:
                break
    tok, _ = train(text, vocab - 256 - len(SPECIALS))
    tok.save(path)
    return path


def run_llamac(llamac, tok, data, out, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    shard = os.path.join(out, "bench.bin")
    t = time.perf_counter()
    p = subprocess.run([llamac, "tokenize", "encode", "--tokenizer", tok, "--input", data, "--out", shard,
                        "--progress", "0"], env=env, check=True, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    os.remove(shard)
    m = re.search(r"encoded ([\d.]+) MB .*peak RSS (\d+) MB\): \S+ (\d+) tokens in (\d+) documents", p.stdout)
    if not m:
        sys.exit(f"bench_tokenize: cannot read llamac's summary: {p.stdout}")
    mb = float(m.group(1))
    return {"mbs": mb / wall, "wall_s": wall, "rss_mb": float(m.group(2)), "tokens": int(m.group(3)),
            "docs": int(m.group(4))}


def run_hf(tok, data, threads, batch_bytes):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    p = subprocess.run([sys.executable, "-c", HF_WORKER, tok, data, str(batch_bytes)], env=env, check=True,
                       stdout=subprocess.PIPE, text=True)
    r = json.loads(p.stdout)
    r["mbs"] = r["text_bytes"] / 1e6 / r["encode_s"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default=os.path.join(ROOT, "build", "llamac"))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench_tokenize"))
    ap.add_argument("--sizes", default="250", help="corpus sizes in MB of JSONL, comma-separated (e.g. 250,2500)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--vocab", type=int, default=8192)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sizes = [float(s) for s in a.sizes.split(",")]
    data = [corpus(a.out, s) for s in sizes]
    tok = tokenizer(a.out, a.vocab, data[0])
    n = a.threads

    print(f"corpus {data[0]} ({sizes[0]:g} MB of JSONL), tokenizer {tok}, {n} threads")
    one = run_llamac(a.llamac, tok, data[0], a.out, 1)
    alln = run_llamac(a.llamac, tok, data[0], a.out, n)
    hf = run_hf(tok, data[0], n, 16 << 20)
    if hf["tokens"] + hf["docs"] != alln["tokens"] or hf["docs"] != alln["docs"]:
        print(f"WARNING: token counts differ: llamac {alln['tokens']} (with {alln['docs']} end-of-text), "
              f"tokenizers {hf['tokens']} + {hf['docs']} documents")
    print(f"{'':28s} {'MB/s':>8s} {'peak RSS MB':>12s}")
    print(f"{'llamac, 1 thread':28s} {one['mbs']:8.1f} {one['rss_mb']:12.0f}")
    print(f"{f'llamac, {n} threads':28s} {alln['mbs']:8.1f} {alln['rss_mb']:12.0f}")
    print(f"{f'tokenizers encode_batch, {n}':28s} {hf['mbs']:8.1f} {hf['rss_mb']:12.0f}")
    print(f"llamac {n} threads / 1 thread: {alln['mbs'] / one['mbs']:.2f}x (target >= 1.8x on 2 cores)")
    print(f"llamac / tokenizers on {n} threads: {alln['mbs'] / hf['mbs']:.2f}x (target >= 2x)")

    print("bounded memory: llamac's peak RSS by corpus size")
    rss = []
    for s, d in zip(sizes, data):
        r = alln if d == data[0] else run_llamac(a.llamac, tok, d, a.out, n)
        rss.append(r["rss_mb"])
        print(f"  {s:8g} MB of JSONL: {r['rss_mb']:6.0f} MB peak RSS, {r['mbs']:.1f} MB/s")
    if len(rss) > 1:
        print(f"  largest / smallest peak: {max(rss) / min(rss):.2f} (target: within 1.10)")


if __name__ == "__main__":
    main()
