#!/usr/bin/env python3
"""make bench-distill: `llamac distill` against torchtune's knowledge-distillation step on this CPU.

Shapes: the teacher is SmolLM2-135M-Instruct (scripts/fetch_smollm2.sh's
GGUF, turned into a float32 Hugging Face directory by `llamac convert`, as
scripts/bench_sft.py does); the student is its width-pruned half (`llamac
prune --target smollm2-135m-half`: dim 384, hidden 1024, 30 layers, 9 / 3
heads of 64, tied, 72.0 M parameters). Both sides train every student
weight with AdamW (llamac's betas, eps, weight decay and clip) on the same
B x T windows of one shard of token ids (random words through SmolLM2's
tokenizer; llamac's loader draws the windows shuffled, the torchtune worker
in order: the cost of a step does not depend on which), float32, with as many threads as --threads.

llamac rows (each its own process; tokens/s = B*T per step over the steps
after --warmup, from the --metrics step times):
  online  distill --teacher (the float HF directory), --kd-weight 0.5
  keep    distill --teacher (the Q4_1 GGUF) --teacher-quant keep (--keep)
  cache   distill --teacher-cache, the cache written first by `llamac
          teacher-cache --top-k K` (its wall time, size and bytes per
          trained token are reported)
  none    no teacher: `llamac pretrain --preset smollm2-135m-half` on the
          same shard (cross-entropy only; the student's weights are random
          there, which does not change a step's cost)
torchtune rows (torchtune 0.6.1 from the reference venv, one process each):
  online  recipes/knowledge_distillation_single_device.py's train step:
          teacher forward under no_grad, student forward, both models with
          set_num_output_chunks(8), CEWithChunkedOutputLoss and
          ForwardKLWithChunkedOutputLoss on the shifted labels, loss =
          (1 - kd_ratio) CE + kd_ratio KD, backward, scale_grads by 1 /
          tokens, clip_grad_norm_, AdamW step, zero_grad(set_to_none=True)
  none    the same step without the teacher and the KD term
The models are torchtune's own modules (TransformerDecoder,
MultiHeadAttention, llama3_mlp, RMSNorm, TiedLinear, RotaryPositionalEmbeddings)
assembled as torchtune.models.llama3_2's builder assembles them, with
head_dim given (the builder derives it as dim / heads, which the pruned
student, 9 heads of 64 on dim 384, does not satisfy; MultiHeadAttention's
embed_dim, only checked against the heads and kept for a KV cache, is given
as heads x head_dim) and plain RoPE (SmolLM2's;
the builder's Llama 3 scaled RoPE costs the same). Weights are random on
that side: a step's cost does not depend on them. Differences from the
recipe, named here so that the table is read right: torchtune 0.6.1's KD
recipes train LoRA adapters on the student, here every student weight is
trained on both sides (the issue's "full fine-tuning"); the optimiser is
torch.optim.AdamW (foreach, the CPU default). torchtune's package __init__
imports torchao and torchtune.config imports omegaconf, neither installed
(scripts/requirements-ref.txt installs torchtune with --no-deps); the worker
puts empty stand-ins for both into sys.modules before the import: nothing
on the full-precision path calls them.

Peak RSS is each child's ru_maxrss (os.wait4; the parent never imports
torch). Runs alternate, the order rotating every round; medians (RSS: the
largest). The header line names the CPU, the SGEMM peak and the BLAS kernel
(`llamac bench --sgemm`). Writes the log and the table to
bench/results/cpu-<date>-distill.txt (--out).

Quick check: --batch 1 --seq 32 --steps 1 --warmup 1 --rounds 1 --sgemm 256.
"""
import argparse
import datetime
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sft import BETA2, CLIP, EPS, HF, ROOT, VENV, WD, read_jsonl, run_child, run_worker  # noqa: E402
from bench_sample import machine_line  # noqa: E402

WORK = os.path.join(ROOT, "build", "bench_distill")
LLAMAC = os.path.join(ROOT, "build", "llamac")
LR = 1e-4  # llamac distill's default
KD_RATIO = 0.5  # torchtune's kd_ratio default, llamac's --kd-weight default
CHUNKS = 8  # torchtune's CEWithChunkedOutputLoss / ForwardKL...ChunkedOutputLoss default num_output_chunks
# (dim, layers, heads, kv heads, head dim, hidden, vocab): SmolLM2-135M and smollm2-135m-half
TEACHER = (576, 30, 9, 3, 64, 1536, 49152)
STUDENT = (384, 30, 9, 3, 64, 1024, 49152)
ROPE_THETA, NORM_EPS, MAX_SEQ = 100000, 1e-5, 8192
SIDES = ("online", "keep", "cache", "none", "tt-online", "tt-none")
NAMES = {"online": "llamac, online teacher (float32)", "keep": "llamac, online teacher (Q4_1 GGUF, --teacher-quant keep)",
         "cache": "llamac, teacher cache (top-K)", "none": "llamac, no teacher (CE only)",
         "tt-online": "torchtune, online teacher (float32)", "tt-none": "torchtune, no teacher (CE only)"}
PEER = {"online": "tt-online", "keep": "tt-online", "cache": "tt-online", "none": "tt-none"}


# ---------------------------------------------------------------- inputs

WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office door health person "
         "art war history party result change morning reason research girl guy moment air teacher force education").split()


def write_text(path, n_words, seed=1):
    """Random sentences of common words: the same text on every machine."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        left = n_words
        while left > 0:
            k = min(left, rng.randint(8, 20))
            f.write(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".\n")
            left -= k


def shard_tokens(path):
    with open(path, "rb") as f:
        h = f.read(24)
    return struct.unpack("<Q", h[16:24])[0]


def prepare(a, py):
    """The teacher (GGUF and float HF directory), the shard, the pruned student."""
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(os.path.dirname(HF), exist_ok=True)  # bench_sft's folder, shared: absent on a fresh clone
    gguf = subprocess.run(["sh", "scripts/fetch_smollm2.sh"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    if not os.path.exists(os.path.join(HF, "model.safetensors")):
        subprocess.run([LLAMAC, "convert", gguf, HF, "--force"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(os.path.join(HF, "tokenizer.json")):  # transformers reads the GGUF's tokenizer
        subprocess.run([py, os.path.join(ROOT, "scripts", "bench_sft.py"), "--worker", "tokenizer", "--gguf", gguf],
                       cwd=ROOT, check=True)
    # enough windows for every run (the loader wraps around, so this only keeps the cache small)
    need = (a.warmup + a.steps) * a.batch * (a.seq + 1) + a.seq + 1
    shard = os.path.join(WORK, f"train_{need}.bin")
    if not os.path.exists(shard):
        text = os.path.join(WORK, "text.txt")
        write_text(text, need)  # about 1.2 tokens per word: more than enough
        subprocess.run([LLAMAC, "tokenize", "encode", "--tokenizer", os.path.join(HF, "tokenizer.json"), "--input",
                        text, "--out", shard], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    student = os.path.join(WORK, "student.h5")
    if not os.path.exists(student):
        subprocess.run([LLAMAC, "prune", "--model", HF, "--calib", shard, "--target", "smollm2-135m-half", "--seq",
                        str(a.seq), "--batch", "1", "--calib-batches", "1", "--out", student], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return gguf, shard, student


def sgemm_line(n):
    """'SGEMM peak G GFLOP/s (n^3), BLAS KERNEL' from llamac bench --sgemm, in its own process."""
    out = subprocess.run([LLAMAC, "bench", "--preset", "tiny", "--seq", "32", "--steps", "1", "--sgemm", str(n),
                          "--json"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    j = json.loads(out.strip().splitlines()[-1])
    return f"SGEMM peak {j['sgemm_peak_gflops']:.1f} GFLOP/s ({n}^3), BLAS {j['blas']}"


# ---------------------------------------------------------------- llamac

def step_rate(met, a):
    """(tokens/s, median step seconds) from a --metrics file: B*T per step after the warm-up."""
    el = [x["elapsed_s"] for x in read_jsonl(met) if "grad_norm" in x]
    if len(el) < a.warmup + a.steps:
        sys.exit(f"bench-distill: {met}: {len(el)} step lines, expected {a.warmup + a.steps}")
    dt = [el[i] - (el[i - 1] if i else 0.0) for i in range(len(el))][a.warmup:]
    return a.batch * a.seq * len(dt) / sum(dt), statistics.median(dt)


def write_cache(a, shard):
    """llamac teacher-cache over the shard: {"s": wall seconds, "bytes", "rss", "path"}."""
    d = os.path.join(WORK, "cache_write")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    path = os.path.join(d, "teacher.cache")
    t0 = time.perf_counter()
    rc, rss = run_child([LLAMAC, "teacher-cache", "--teacher", HF, "--train", shard, "--top-k", str(a.top_k),
                         "--seq", str(a.seq), "--batch", str(a.batch), "--out", path], os.path.join(d, "log.txt"))
    s = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"bench-distill: llamac teacher-cache failed (exit {rc}); see {d}/log.txt")
    with open(os.path.join(d, "log.txt")) as f:  # its last line: "...: N positions, X MB (...) in S s"
        m = re.search(r": (\d+) positions, .* in ([0-9.]+) s\s*$", f.read().strip().splitlines()[-1])
    if not m:
        sys.exit(f"bench-distill: no 'N positions ... in S s' line at the end of {d}/log.txt")
    return {"s": s, "own_s": float(m.group(2)), "positions": int(m.group(1)), "bytes": os.path.getsize(path),
            "rss": rss, "path": path}


def run_llamac(a, side, shard, student, gguf, cache):
    d = os.path.join(WORK, side)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    met = os.path.join(d, "metrics.jsonl")
    common = ["--train", shard, "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.warmup + a.steps),
              "--lr", str(LR), "--beta2", str(BETA2), "--eps", str(EPS), "--weight-decay", str(WD), "--clip",
              str(CLIP), "--peak-gflops", "1", "--seed", "1",
              "--metrics", met, "--ckpt-dir", os.path.join(d, "ck"), "--out", os.path.join(d, "out.h5")]
    if side == "none":
        cmd = [LLAMAC, "pretrain", "--preset", "smollm2-135m-half"] + common
    else:
        teacher = {"online": ["--teacher", HF], "keep": ["--teacher", gguf, "--teacher-quant", "keep", "--tokenizer",
                                            os.path.join(HF, "tokenizer.json")],  # compare the vocabularies
                   "cache": ["--teacher-cache", cache]}[side]
        cmd = [LLAMAC, "distill", "--student", student, "--kd-weight", str(KD_RATIO)] + teacher + common
    rc, rss = run_child(cmd, os.path.join(d, "log.txt"))
    if rc != 0:
        sys.exit(f"bench-distill: llamac {side} failed (exit {rc}); see {d}/log.txt")
    tps, step_s = step_rate(met, a)
    return {"tps": tps, "step_s": step_s, "rss": rss}


# ---------------------------------------------------------------- torchtune

def stub_missing(names):
    """Empty stand-ins for modules torchtune imports at package level but
    this benchmark never calls (torchao's NF4 types, omegaconf): attribute
    lookups give a class whose instances are identity decorators."""
    import importlib.machinery
    import importlib.util
    import types

    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {"__init__": lambda self, *x, **k: None,
                                   "__call__": lambda self, f=None, *x, **k: f})

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in names:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            m = Stub(spec.name)
            m.__path__ = []
            return m

        def exec_module(self, m):
            pass

    missing = {n for n in names if importlib.util.find_spec(n) is None}
    if missing:
        names = missing
        sys.meta_path.insert(0, Finder())
    return sorted(missing)


def tt_model(shape):
    """torchtune's modules assembled as llama3_2's builder does, head_dim given, plain RoPE, tied head."""
    from torch import nn
    from torchtune.models.llama3._component_builders import llama3_mlp
    from torchtune.modules import (MultiHeadAttention, RMSNorm, RotaryPositionalEmbeddings, TiedLinear,
                                   TransformerDecoder, TransformerSelfAttentionLayer)
    dim, n_layers, heads, kv, hd, hidden, vocab = shape
    rope = RotaryPositionalEmbeddings(dim=hd, max_seq_len=MAX_SEQ, base=ROPE_THETA)
    layers = nn.ModuleList()
    for _ in range(n_layers):
        # embed_dim is only checked (dim % heads) and kept for a KV cache: heads * hd passes the check
        attn = MultiHeadAttention(embed_dim=heads * hd, num_heads=heads, num_kv_heads=kv, head_dim=hd,
                                  q_proj=nn.Linear(dim, heads * hd, bias=False),
                                  k_proj=nn.Linear(dim, kv * hd, bias=False),
                                  v_proj=nn.Linear(dim, kv * hd, bias=False),
                                  output_proj=nn.Linear(heads * hd, dim, bias=False),
                                  pos_embeddings=rope, max_seq_len=MAX_SEQ, attn_dropout=0.0)
        layers.append(TransformerSelfAttentionLayer(attn=attn, mlp=llama3_mlp(dim=dim, hidden_dim=hidden),
                                                    sa_norm=RMSNorm(dim=dim, eps=NORM_EPS),
                                                    mlp_norm=RMSNorm(dim=dim, eps=NORM_EPS)))
    emb = nn.Embedding(vocab, dim)
    return TransformerDecoder(tok_embeddings=emb, layers=layers, max_seq_len=MAX_SEQ, num_heads=heads, head_dim=hd,
                              norm=RMSNorm(dim, eps=NORM_EPS), output=TiedLinear(emb))


def tt_worker(a):
    """torchtune's KD train step (or CE only with --tt-side none) in this process; timings to --result."""
    stubbed = stub_missing({"torchao", "omegaconf"})
    import numpy as np
    import torch
    import torchtune
    from torchtune.modules.loss import CEWithChunkedOutputLoss, ForwardKLWithChunkedOutputLoss
    from torchtune.training import scale_grads
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with open(a.shard, "rb") as f:
        hdr = f.read(64)
        tb, n = struct.unpack("<I", hdr[8:12])[0], struct.unpack("<Q", hdr[16:24])[0]
        ids = np.frombuffer(f.read(n * tb), dtype=np.uint16 if tb == 2 else np.int32).astype(np.int64)
    B, T = a.batch, a.seq
    student = tt_model(STUDENT)
    student.set_num_output_chunks(CHUNKS)
    teacher = None
    if a.tt_side == "online":
        teacher = tt_model(TEACHER)
        teacher.set_num_output_chunks(CHUNKS)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student.train()
    ce_fn = CEWithChunkedOutputLoss(num_output_chunks=CHUNKS)
    kd_fn = ForwardKLWithChunkedOutputLoss(num_output_chunks=CHUNKS)
    opt = torch.optim.AdamW(student.parameters(), lr=LR, betas=(0.9, BETA2), eps=EPS, weight_decay=WD)
    ignore = torch.full((B, 1), ce_fn.ignore_index, dtype=torch.long)
    times = []
    for step in range(a.warmup + a.steps):
        rows = []
        for r in range(B):  # consecutive windows of T tokens, as llamac's loader takes them (targets = next token)
            o = ((step * B + r) * T) % (len(ids) - T - 1)
            rows.append(torch.from_numpy(ids[o:o + T + 1].copy()))
        w = torch.stack(rows)
        tokens, labels = w[:, :T], w[:, :T].clone()
        t0 = time.perf_counter()
        n_tok = (labels != ce_fn.ignore_index).sum()
        logits = student(tokens)
        labels = torch.hstack((labels[..., 1:], ignore))  # the recipe's shift
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(tokens)
            kd = kd_fn(logits, t_logits, labels)
            ce = ce_fn(logits, labels)
            del logits, t_logits
            loss = (1 - KD_RATIO) * ce + KD_RATIO * kd
        else:
            loss = ce_fn(logits, labels)
            del logits
        loss.backward()
        scale_grads(student, 1 / n_tok)
        torch.nn.utils.clip_grad_norm_(student.parameters(), max_norm=CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    dt = times[a.warmup:]
    res = {"tps": B * T * len(dt) / sum(dt), "step_s": statistics.median(dt), "loss": float(loss),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "torchtune": torchtune.__version__,
           "stubbed": stubbed}
    with open(a.result, "w") as f:
        json.dump(res, f)


def run_tt(a, side, shard, py):
    d = os.path.join(WORK, side)
    os.makedirs(d, exist_ok=True)
    cmd = [py, os.path.abspath(__file__), "--worker", "torchtune", "--tt-side", side[3:], "--shard", shard,
           "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--threads", str(a.threads)]
    return run_worker(cmd, d, f"bench-distill: torchtune {side[3:]}")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    ap.add_argument("--top-k", type=int, default=50, help="K of the teacher cache")
    ap.add_argument("--keep", type=int, choices=[0, 1], default=1,
                    help="1: also the row with the Q4_1 GGUF teacher held as its own types")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of each side (default: cores)")
    ap.add_argument("--sgemm", type=int, default=2048, help="size of the SGEMM peak measurement")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  f"cpu-{datetime.date.today().isoformat()}-distill.txt"))
    ap.add_argument("--worker", choices=["torchtune"], help=argparse.SUPPRESS)
    ap.add_argument("--tt-side", choices=["online", "none"], help=argparse.SUPPRESS)
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "torchtune":
        return tt_worker(a)
    py = os.path.join(VENV, "bin", "python")
    if subprocess.run([py, "-c", "import torch, numpy"], capture_output=True).returncode:
        sys.exit(f"bench-distill: no torch/numpy in {VENV} (scripts/test_ref.sh builds it from "
                 "scripts/requirements-ref.txt)")
    if subprocess.run([py, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torchtune') is None)"],
                      capture_output=True).returncode:
        sys.exit(f"bench-distill: no torchtune in {VENV} (pip install --no-deps torchtune==0.6.1 there, as "
                 "scripts/requirements-ref.txt pins it)")
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    say(f"bench-distill: {machine_line()}; {sgemm_line(a.sgemm)}; load average "
        f"{' / '.join(open('/proc/loadavg').read().split()[:2])} (1 / 5 min) at the start")
    gguf, shard, student = prepare(a, py)
    say(f"  teacher SmolLM2-135M-Instruct (dim 576, float32 HF from {os.path.relpath(gguf, ROOT)}), student "
        f"smollm2-135m-half (dim 384, hidden 1024, 30 layers, 9/3 heads of 64; llamac prune), full training, AdamW "
        f"lr {LR}, kd_ratio {KD_RATIO}, forward KL, tau 1; {shard_tokens(shard)} tokens of random words "
        f"({os.path.relpath(shard, ROOT)}); B {a.batch}, T {a.seq}, {a.warmup} + {a.steps} steps, {a.rounds} rounds, "
        f"{a.threads} threads each")
    cache = write_cache(a, shard)
    positions = cache["positions"]  # every position of every window is trained
    say(f"  teacher cache: K {a.top_k}, {cache['bytes']} bytes for {positions} positions = "
        f"{cache['bytes'] / positions:.1f} B/token, written in {cache['own_s']:.2f} s by its own count "
        f"({positions / cache['own_s']:.0f} tokens/s), {cache['s']:.2f} s for the process (model load included), "
        f"peak RSS {cache['rss']:.0f} MiB")
    sides = [s for s in SIDES if s != "keep" or a.keep]
    res = {s: [] for s in sides}
    for r in range(a.rounds):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for s in order:
            res[s].append(run_tt(a, s, shard, py) if s.startswith("tt-") else
                          run_llamac(a, s, shard, student, gguf, cache["path"]))
        say(f"  round {r + 1}: " + ", ".join(f"{s} {res[s][-1]['tps']:.0f} tok/s {res[s][-1]['rss']:.0f} MiB"
                                             for s in sides))
    tt = res["tt-online"][-1]
    if tt["stubbed"]:
        say(f"  torchtune {tt['torchtune']} (torch {tt['torch']}, {tt['threads']} threads): empty stand-ins for "
            f"{', '.join(tt['stubbed'])} (not installed; not called by this step)")
    med = {s: (statistics.median(x["tps"] for x in res[s]), max(x["rss"] for x in res[s]),
               statistics.median(x["step_s"] for x in res[s])) for s in sides}
    say()
    say(f"Distillation step, SmolLM2-135M teacher -> smollm2-135m-half student, full training, B {a.batch}, "
        f"T {a.seq}, median of {a.rounds} rounds x {a.steps} steps (after {a.warmup} warm-up), {a.threads} threads:")
    say()
    say("| run | tokens/s | s/step | peak RSS | vs torchtune: speed | memory |")
    say("| --- | ---: | ---: | ---: | ---: | ---: |")
    for s in sides:
        tps, rss, st = med[s]
        vs = "" if s.startswith("tt-") else \
            f" {tps / med[PEER[s]][0]:.2f}x | {rss / med[PEER[s]][1]:.2f}x |"
        say(f"| {NAMES[s]} | {tps:.0f} | {st:.2f} | {rss:.0f} MiB |" + (vs or " | |"))
    say()
    say(f"Teacher cache (llamac teacher-cache, K {a.top_k}, f16 log-probs): {cache['bytes'] / positions:.1f} B per "
        f"token, {cache['own_s']:.2f} s to write {positions} tokens ({positions / cache['own_s']:.0f} tokens/s; "
        f"{cache['s']:.2f} s with the process start and the teacher's load), peak RSS {cache['rss']:.0f} MiB.")
    say("tokens/s: B*T per second of training step. Speed and memory ratios against torchtune's online row "
        "(llamac's none against torchtune's none). Targets: >= 2x torchtune's tokens/s at <= 0.5x its peak RSS.")
    bad = [s for s in sides if not s.startswith("tt-") and s != "keep"
           and not (med[s][0] >= 2 * med[PEER[s]][0] and med[s][1] <= 0.5 * med[PEER[s]][1])]
    say("targets met" if not bad else "targets NOT met: " + "; ".join(
        f"{s}: {med[s][0] / med[PEER[s]][0]:.2f}x speed, {med[s][1] / med[PEER[s]][1]:.2f}x memory" for s in bad))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"bench-distill: wrote {os.path.relpath(a.out, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
