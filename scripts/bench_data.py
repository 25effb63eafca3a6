#!/usr/bin/env python3
"""make bench-data: the pretraining-data steps (llamac data ...) against
Hugging Face datatrove on the same documents and cores: documents/s and
peak memory of each side.

    python scripts/bench_data.py [--llamac build/llamac] [--docs N] [--steps filter,...]

Input: the demo corpus (build/corpus, scripts/prepare_corpus.py) cut into
pages of 40 lines and paragraphs, as scripts/test_filters_ref.py cuts it,
repeated until --docs documents, written as one JSONL file per core (so
datatrove's LocalPipelineExecutor gets one task per core: it parallelises by
file). llamac reads the same files (--input, repeated) on every core.

Each step is a row of STEPS: how llamac runs it and which datatrove
pipeline does the same work (reader, the step's blocks, writer, no
compression). Times are wall clock of the whole command, start-up included;
peak memory is the largest sum of resident memory over the command's
process tree (sampled every 50 ms from /proc, so a datatrove run's worker
processes count together). Run on a quiet machine for figures worth
quoting; --docs 2000 proves the script works.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def tree_rss(pid):
    """resident bytes of pid and its descendants (Linux /proc)"""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def measure(cmd, env=None):
    """(seconds, peak tree RSS bytes) of a command; raises on failure"""
    t0 = time.time()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while p.poll() is None:
        peak = max(peak, tree_rss(p.pid))
        time.sleep(0.05)
    dt = time.time() - t0
    out = p.stdout.read().decode(errors="replace")
    if p.returncode:
        sys.exit(f"bench_data: {' '.join(cmd[:4])} ... failed ({p.returncode}):\n{out[-2000:]}")
    return dt, peak, out


DATATROVE = r'''
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
src, out, logs, n, step = sys.argv[1:6]
blocks = {"filter": [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter()]}[step]
LocalPipelineExecutor(
    pipeline=[JsonlReader(src, glob_pattern="*.jsonl"), *blocks, JsonlWriter(out, compression=None)],
    tasks=int(n), workers=int(n), logging_dir=logs,
).run()
'''

# one row per step: name, llamac arguments after `llamac data`, what it is
STEPS = [
    ("filter", lambda ins, out: ["filter", *sum((["--input", i] for i in ins), []), "--out", out, "--quiet"],
     "Gopher quality + Gopher repetition + C4 (default thresholds)"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default=os.environ.get("LLAMAC", "build/llamac"))
    ap.add_argument("--docs", type=int, default=100000)
    ap.add_argument("--steps", default=",".join(s[0] for s in STEPS))
    ap.add_argument("--corpus", default="build/corpus/train.jsonl")
    ap.add_argument("--work", default="build/bench_data")
    ap.add_argument("--python", default=os.path.expanduser("~/.cache/llamac-venv/bin/python"))
    a = ap.parse_args()
    if not os.path.exists(a.corpus):
        subprocess.run([sys.executable, os.path.join(HERE, "prepare_corpus.py"), "--out", os.path.dirname(a.corpus)],
                       check=True)
    from test_filters_ref import pages_and_paragraphs

    base = pages_and_paragraphs(a.corpus, 10 ** 9)
    cores = os.cpu_count() or 1
    shutil.rmtree(a.work, ignore_errors=True)
    src = os.path.join(a.work, "in")
    os.makedirs(src)
    files = [open(os.path.join(src, f"part{i:03d}.jsonl"), "w") for i in range(cores)]
    nbytes = 0
    for i in range(a.docs):
        line = json.dumps({"id": i, "text": base[i % len(base)]}) + "\n"
        nbytes += len(line)
        files[i * cores // a.docs].write(line)
    for f in files:
        f.close()
    ins = sorted(os.path.join(src, f) for f in os.listdir(src))
    print(f"bench_data: {a.docs} documents, {nbytes / 1e6:.1f} MB, {cores} cores, {len(ins)} input files")
    print(f"{'step':<8} {'tool':<10} {'seconds':>8} {'docs/s':>10} {'peak MB':>8}  {'llamac x':>8}")
    rows = []
    for name, argv, what in STEPS:
        if name not in a.steps.split(","):
            continue
        out = os.path.join(a.work, f"{name}.llamac.jsonl")
        t_l, m_l, _ = measure([a.llamac, "data", *argv(ins, out)])
        dout, logs = os.path.join(a.work, f"{name}.dt"), os.path.join(a.work, f"{name}.dtlogs")
        t_d, m_d, _ = measure([a.python, "-c", DATATROVE, src, dout, logs, str(cores), name])
        for tool, t, m in (("llamac", t_l, m_l), ("datatrove", t_d, m_d)):
            print(f"{name:<8} {tool:<10} {t:8.2f} {a.docs / t:10.0f} {m / 1e6:8.0f}  "
                  f"{(t_d / t_l if tool == 'llamac' else 1.0):8.1f}")
        rows.append({"step": name, "what": what, "docs": a.docs, "bytes": nbytes, "cores": cores,
                     "llamac_s": t_l, "llamac_peak_rss": m_l, "datatrove_s": t_d, "datatrove_peak_rss": m_d})
    with open(os.path.join(a.work, "bench_data.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
