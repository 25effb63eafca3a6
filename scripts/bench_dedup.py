#!/usr/bin/env python3
"""llamac data dedup against datatrove 0.10.1: documents/s and peak RSS
(make bench-dedup; the lead runs the figures on a quiet machine).

Input: the demo corpus (scripts/prepare_corpus.py) repeated until --docs
documents, each copy with a few words changed (so MinHash finds real
clusters and exact dedup real copies), split into one JSONL shard per core
so datatrove's LocalPipelineExecutor gets one task per core.

Each side runs on every core (--cores, default all):
  llamac:    `llamac data dedup --exact 1 --minhash 1` on the shards (one
             process, OpenMP threads);
  datatrove: exact dedup (ExactDedupSignature / ExactFindDedups /
             ExactDedupFilter, content = simplify_text) then MinHash
             (MinhashDedupSignature / Buckets (14 tasks) / Cluster / Filter)
             with MinhashConfig() defaults, JsonlReader / JsonlWriter,
             LocalPipelineExecutor with --cores workers.
Time is wall clock of the whole run; peak RSS is the largest resident set
of any one process (ru_maxrss of the children; datatrove's workers are
separate processes, so its total may be several times that). Both keep the
same documents (scripts/test_dedup_ref.py checks that); this script checks
the kept counts agree.

    ~/.cache/llamac-venv/bin/python scripts/bench_dedup.py [--docs 20000] [--cores N]
"""

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DATATROVE = r"""
import sys, glob, os
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature, ExactFindDedups, ExactDedupFilter
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupSignature, MinhashDedupBuckets,
                                              MinhashDedupCluster, MinhashDedupFilter)
from datatrove.utils.text import simplify_text

src, work, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
nshards = len(glob.glob(os.path.join(src, "*.jsonl")))
def getter(doc) -> str:
    from datatrove.utils.text import simplify_text  # imported here: the workers unpickle the function alone
    return simplify_text(doc.text)
ecfg = ExactDedupConfig(content_getter=getter)
mcfg = MinhashConfig()
L = os.path.join(work, "logs")
def run(pipeline, tasks, name):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(cores, tasks), logging_dir=f"{L}/{name}").run()
run([JsonlReader(src), ExactDedupSignature(output_folder=f"{work}/esig", config=ecfg)], nshards, "e1")
run([ExactFindDedups(data_folder=f"{work}/esig", output_folder=f"{work}/edup", config=ecfg)], 1, "e2")
run([JsonlReader(src), ExactDedupFilter(data_folder=f"{work}/edup", config=ecfg), JsonlWriter(f"{work}/exact", compression=None)], nshards, "e3")
run([JsonlReader(f"{work}/exact"), MinhashDedupSignature(output_folder=f"{work}/msig", config=mcfg)], nshards, "m1")
run([MinhashDedupBuckets(input_folder=f"{work}/msig", output_folder=f"{work}/mbuck", config=mcfg)], mcfg.num_buckets, "m2")
run([MinhashDedupCluster(input_folder=f"{work}/mbuck", output_folder=f"{work}/mrem", config=mcfg)], 1, "m3")
run([JsonlReader(f"{work}/exact"), MinhashDedupFilter(input_folder=f"{work}/mrem"), JsonlWriter(f"{work}/out", compression=None)], nshards, "m4")
n = 0
for f in glob.glob(f"{work}/out/*.jsonl"):
    n += sum(1 for _ in open(f))
print("KEPT", n)
"""


def make_input(dirpath, ndocs, shards, seed):
    corpus = os.path.join(ROOT, "build", "corpus", "train.jsonl")
    if not os.path.exists(corpus):
        subprocess.run([sys.executable, os.path.join(HERE, "prepare_corpus.py")], check=True)
    base = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    rng = random.Random(seed)
    os.makedirs(dirpath, exist_ok=True)
    files = [open(os.path.join(dirpath, f"shard_{i:03d}.jsonl"), "w", encoding="utf-8") for i in range(shards)]
    nbytes = 0
    for i in range(ndocs):
        t = base[i % len(base)]
        if i >= len(base) and rng.random() < 0.7:  # a near copy: a few words changed
            w = t.split()
            for _ in range(max(1, len(w) // 100)):
                w[rng.randrange(len(w))] = rng.choice(w)
            t = " ".join(w)
        line = json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
        nbytes += len(line.encode())
        files[i * shards // ndocs].write(line)
    for f in files:
        f.close()
    return sorted(os.path.join(dirpath, n) for n in os.listdir(dirpath)), nbytes


def timed(cmd, env=None):
    """wall seconds, the largest child ru_maxrss (MB) of this command, stdout"""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd[:4])}...\n{r.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return dt, max(after, before) / 1024, r.stdout, after > before


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llamac", default=os.path.join(ROOT, "build", "llamac"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench_dedup"))
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    shards, nbytes = make_input(os.path.join(args.work, "in"), args.docs, args.cores, args.seed)
    print(f"bench_dedup: {args.docs} documents, {nbytes / 1e6:.1f} MB in {len(shards)} shards, {args.cores} cores")
    # ru_maxrss of children is a running maximum over all of them, so each
    # side runs under its own fresh interpreter (probe) that reports its own
    env = dict(os.environ, OMP_NUM_THREADS=str(args.cores))
    inputs = sum((["--input", s] for s in shards), [])
    out = os.path.join(args.work, "llamac.jsonl")
    rows = []
    probe = [sys.executable, "-c",
             "import resource,subprocess,sys,time;t=time.perf_counter();"
             "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
             "print(r.stdout);print(r.stderr[-2000:],file=sys.stderr);"
             "print('WALL',time.perf_counter()-t);"
             "print('RSS',resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024);sys.exit(r.returncode)"]
    for name, cmd in (("llamac", [args.llamac, "data", "dedup", *inputs, "--out", out]),
                      ("datatrove", [sys.executable, "-c", DATATROVE, os.path.dirname(shards[0]),
                                     os.path.join(args.work, "dt"), str(args.cores)])):
        _, _, so, _ = timed(probe + cmd, env=env)
        wall = float(so.split("WALL")[1].split()[0])
        rss = float(so.split("RSS")[1].split()[0])
        if name == "llamac":
            kept = int(so.split(" kept;")[0].split()[-1])
        else:
            kept = int(so.split("KEPT")[1].split()[0])
        rows.append((name, wall, rss, kept))
    print(f"| side | seconds | docs/s | peak RSS (MB, largest process) | kept |")
    print(f"|---|---|---|---|---|")
    for name, wall, rss, kept in rows:
        print(f"| {name} | {wall:.2f} | {args.docs / wall:.0f} | {rss:.0f} | {kept} |")
    ratio = rows[1][1] / rows[0][1]
    print(f"bench_dedup: llamac {ratio:.1f}x datatrove's documents/s; kept {rows[0][3]} vs {rows[1][3]}"
          f"{'' if rows[0][3] == rows[1][3] else ' (DIFFER)'}")


if __name__ == "__main__":
    main()
