#!/usr/bin/env python3
"""make bench-qlora: LoRA on a base held quantised (QLoRA), on this CPU.

Four parts (--parts), each against the target it is about (issue 24):
  keep   SmolLM2-135M-Instruct from its Q4_1 GGUF (scripts/fetch_smollm2.sh),
         `llamac sft --base-quant keep` (the file's own types, the tied
         embedding / head included) against float32 LoRA on the same GGUF
         dequantised at load (no --base-quant); targets: peak RSS <= 0.40x,
         tokens/s >= 0.85x.
  peft   the same model as a float32 Hugging Face directory (`llamac
         convert`), PEFT + bitsandbytes QLoRA (NF4, double quantisation,
         float32 compute, gradient checkpointing) against `llamac sft
         --base-quant nf4` on that directory (NF4 from the same float
         weights, bit-identical to bitsandbytes) and against the keep run;
         targets: llamac >= 2x PEFT's tokens/s at <= 0.5x its peak RSS.
  1b     a Llama 3.2 1B shape (dim 2048, 16 layers, 32 / 8 heads, hidden
         8192, vocab 128256, tied) with random weights, written once as a
         float32 HF directory tensor by tensor and quantised by `llamac
         quantize --type q4_k_m` (the float directory is deleted after);
         one QLoRA step (keep) at B 1, T 2048 with recomputation; target:
         peak RSS <= 2.5 GiB.
  decode `llamac sample --quant keep` against llama.cpp on SmolLM2's Q4_1
         GGUF and a Q8_0 one (`llamac quantize --type q8_0`), through
         scripts/bench_sample.py's scenarios a (one sequence, decode tok/s)
         and b (64 prompts x 8 samples, batched tok/s); targets: a >= 0.8x
         llama.cpp's, b above it.

Training rows (keep, peft) share everything else: the WordNet chat data of
scripts/prepare_sft_wordnet.py (build/sft_demo/train.jsonl), ChatML, packed
rows (document mask), LoRA r 16 alpha 32 on q,k,v,o, B 1, T 512 (the
issue's anchors), recomputation on, seed 1, AdamW on the adapters (llamac's
settings, scripts/bench_sft.py's). PEFT trains the very rows llamac trained
(llamac's --dump-batches of the float run: tokens, targets, positions) with
a causal mask over each packed row (transformers on the CPU has no document
mask; the cost is the same). tokens/s counts B*T per step over the steps
after --warmup (llamac: its --metrics step times; PEFT: perf_counter around
each step). Each run is its own process; peak RSS is the child's ru_maxrss
(os.wait4; the parent never imports torch). Runs alternate, the order
rotating every round; medians (RSS: the largest).

Writes the log and the tables to bench/results/cpu-<date>-qlora.txt (--out).
Installs nothing: the reference venv (scripts/requirements-ref.txt, with
bitsandbytes) and llama.cpp's (scripts/venv_llamacpp.sh) are used where
they exist, and the parts that need them say how to make them when not.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sft import BETA2, CLIP, DATA, EPS, HF, LR, ROOT, VENV, WD, prepare, read_jsonl, run_child, run_worker  # noqa: E402
from bench_sample import machine_line  # noqa: E402
from hf_llama import llama_config, llama_shapes  # noqa: E402

WORK = os.path.join(ROOT, "build", "bench_qlora")
LLAMAC = os.path.join(ROOT, "build", "llamac")
VENV_LLAMACPP = os.environ.get("LLAMAC_VENV_LLAMACPP", os.path.expanduser("~/.cache/llamac-venv-llamacpp"))
PARTS = ("keep", "peft", "1b", "decode")
R, ALPHA, TARGETS = 16, 32, "q,k,v,o"
# Llama 3.2 1B: dim, layers, heads, kv heads, hidden, vocab (tied); context 2048 (the run's T)
SHAPE_1B = (2048, 16, 32, 8, 8192, 128256)
GIB = 1024.0  # MiB


# ---------------------------------------------------------------- llamac runs

def run_llamac(a, tag, model, tokenizer, extra, seq, batch, steps, dump=False):
    """One `llamac sft` run; {"tps", "step_s", "rss", "steps"}; exits on failure."""
    d = os.path.join(WORK, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    met = os.path.join(d, "metrics.jsonl")
    cmd = [LLAMAC, "sft", "--model", model, "--tokenizer", tokenizer, "--template", "chatml", "--data", DATA,
           "--batch", str(batch), "--seq", str(seq), "--steps", str(steps), "--lr", str(LR), "--beta2", str(BETA2),
           "--eps", str(EPS), "--weight-decay", str(WD), "--clip", str(CLIP), "--lora-r", str(R), "--lora-alpha",
           str(ALPHA), "--lora-targets", TARGETS, "--recompute", "1", "--peak-gflops", "1", "--seed", "1",
           "--metrics", met, "--ckpt-dir", os.path.join(d, "ck"), "--adapter-out", os.path.join(d, "adapter"),
           "--out", os.path.join(d, "out.h5")] + extra
    if dump:
        cmd += ["--dump-batches", os.path.join(d, "batches.jsonl")]
    log = os.path.join(d, "log.txt")
    t0 = time.perf_counter()
    rc, rss = run_child(cmd, log)
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"bench-qlora: llamac failed (exit {rc}); see {log}")
    el = [x["elapsed_s"] for x in read_jsonl(met) if "grad_norm" in x]
    dt = [el[i] - (el[i - 1] if i else 0.0) for i in range(len(el))]
    w = min(a.warmup, len(dt) - 1)
    return {"tps": batch * seq * (len(dt) - w) / sum(dt[w:]), "step_s": statistics.median(dt[w:]), "rss": rss,
            "steps": dt, "wall_s": wall, "dir": d}


def run_peft(a, py, batches):
    d = os.path.join(WORK, "peft")
    os.makedirs(d, exist_ok=True)
    cmd = [py, os.path.abspath(__file__), "--worker", "peft", "--batches", batches, "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--threads", str(a.threads)]
    return run_worker(cmd, d, "bench-qlora: PEFT")


def peft_worker(a):
    """PEFT + bitsandbytes QLoRA in this process on --batches' rows; writes timings to --result."""
    import bitsandbytes
    import peft
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
    model = AutoModelForCausalLM.from_pretrained(HF, quantization_config=q, dtype=torch.float32, device_map="cpu",
                                                 attn_implementation="sdpa")
    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                 gradient_checkpointing_kwargs={"use_reentrant": False})
    model = peft.get_peft_model(model, peft.LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                                                       task_type="CAUSAL_LM",
                                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.config.use_cache = False
    model.train()
    n4 = sum(1 for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, BETA2), eps=EPS, weight_decay=WD)
    rows = read_jsonl(a.batches)
    if len(rows) < a.warmup + a.steps:
        sys.exit(f"bench-qlora: {a.batches} holds {len(rows)} batches, fewer than {a.warmup + a.steps}")
    times = []
    for s in range(a.warmup + a.steps):
        b = rows[s]
        B, T = b["B"], b["T"]
        tok = torch.tensor(b["tokens"]).view(B, T)
        tgt = torch.tensor(b["targets"]).view(B, T)
        pos = torch.tensor(b["pos"]).view(B, T)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=tok, position_ids=pos, use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(-1), ignore_index=-1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        times.append(time.perf_counter() - t0)
    w = a.warmup
    res = {"tps": B * T * a.steps / sum(times[w:]), "step_s": statistics.median(times[w:]), "steps": times,
           "threads": torch.get_num_threads(), "linear4bit": n4, "trainable": sum(p.numel() for p in params),
           "loss": float(loss), "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
           f"peft {peft.__version__}, bitsandbytes {bitsandbytes.__version__}"}
    with open(a.result, "w") as f:
        json.dump(res, f)


# ---------------------------------------------------------------- the 1B shape

def write_random_hf(d, seed=1):
    """A float32 Llama 3.2 1B-shaped HF directory with random weights (N(0, 0.02), norms 1), the safetensors
    file written a tensor at a time (one tensor in memory, at most the 1 GiB embedding). Needs numpy."""
    import numpy as np
    D, L, H, KV, F, V = SHAPE_1B
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(llama_config(D, F, L, H, KV, V, True, 2048, 500000.0), f)
    shapes = llama_shapes(D, F, L, H, KV, V, True)
    header, off = {}, 0
    for k, s in shapes.items():
        n = 4 * int(np.prod(s))
        header[k] = {"dtype": "F32", "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)  # safetensors: the data starts 8-aligned
    rng = np.random.default_rng(seed)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for k, s in shapes.items():
            x = np.ones(s, np.float32) if len(s) == 1 else rng.standard_normal(s, dtype=np.float32)
            if len(s) > 1:
                x *= 0.02
            f.write(x.tobytes())


def make_1b(py):
    """build/bench_qlora/rand1b_q4_k_m.gguf, made once; (path, the quantize log's summary)"""
    out = os.path.join(WORK, "rand1b_q4_k_m.gguf")
    log = os.path.join(WORK, "quantize1b.log")
    if not os.path.exists(out):
        hf = os.path.join(WORK, "rand1b_hf")
        if not os.path.exists(os.path.join(hf, "model.safetensors")):
            print("  writing the random 1B float32 HF directory (about 5 GB, deleted after)", flush=True)
            subprocess.run([py, os.path.abspath(__file__), "--worker", "rand1b", "--result", hf], check=True)
        with open(log, "w") as f:
            subprocess.run([LLAMAC, "quantize", hf, out[:-5] + ".tmp.gguf", "--type", "q4_k_m", "--force"], cwd=ROOT,
                           check=True, stdout=f, stderr=subprocess.STDOUT)
        os.replace(out[:-5] + ".tmp.gguf", out)
        shutil.rmtree(hf)
    with open(log) as f:
        return out, f.read().strip()


# ---------------------------------------------------------------- decoding

def run_decode(a, gguf, files):
    """scripts/bench_sample.py's scenarios a and b on each file, llamac --quant keep against llama.cpp;
    {name: its --json, or {"skip": why}}"""
    help_text = subprocess.run([LLAMAC, "sample", "--help"], capture_output=True, text=True).stdout
    if "--quant" not in help_text:
        return {n: {"skip": "llamac sample has no --quant here (merge main)"} for n in files}
    if not os.path.exists(os.path.join(VENV_LLAMACPP, "bin", "python")):
        return {n: {"skip": f"no llama.cpp venv at {VENV_LLAMACPP} (bash scripts/venv_llamacpp.sh builds it)"}
                for n in files}
    out = {}
    for name, path in files.items():
        js = os.path.join(WORK, f"decode_{name}.json")
        txt = os.path.join(WORK, f"decode_{name}.txt")
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_sample.py"), "--systems", "llamac,llama.cpp",
               "--scenarios", "a,b", "--rounds", str(a.decode_rounds), "--model", path, "--quant", "keep",
               "--threads", str(a.threads), "--prompts-b", str(a.prompts_b), "--out", txt, "--json", js]
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc != 0 or not os.path.exists(js):
            out[name] = {"skip": f"bench_sample.py failed (exit {rc}); see {os.path.relpath(txt, ROOT)}"}
            continue
        with open(js) as f:
            out[name] = json.load(f)
    return out


# ---------------------------------------------------------------- main

def load():
    x = os.getloadavg()
    return f"{x[0]:.2f} / {x[2]:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated among " + ", ".join(PARTS))
    ap.add_argument("--seq", type=int, default=512, help="T of the SmolLM2 rows")
    ap.add_argument("--batch", type=int, default=1, help="B of the SmolLM2 rows")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    ap.add_argument("--steps-1b", type=int, default=1, help="steps of the 1B run (its peak RSS is the point)")
    ap.add_argument("--decode-rounds", type=int, default=3, help="bench_sample.py --rounds for the decode part")
    ap.add_argument("--threads", type=int, default=2, help="threads of each side")
    ap.add_argument("--prompts-b", type=int, default=64, help="bench_sample.py --prompts-b: scenario b's prompts "
                    "(x 8 samples x 128 tokens; 64 sequences at once either way)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  f"cpu-{datetime.date.today().isoformat()}-qlora.txt"))
    ap.add_argument("--worker", choices=["peft", "rand1b"], help=argparse.SUPPRESS)
    ap.add_argument("--batches", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "peft":
        return peft_worker(a)
    if a.worker == "rand1b":
        return write_random_hf(a.result)
    parts = [p for p in a.parts.split(",") if p]
    if not parts or any(p not in PARTS for p in parts):
        sys.exit(f"bench-qlora: --parts among {', '.join(PARTS)}")
    py = os.path.join(VENV, "bin", "python")
    if subprocess.run([py, "-c", "import torch, transformers, numpy"], capture_output=True).returncode:
        sys.exit(f"bench-qlora: no torch/transformers/numpy in {VENV} (pip install -r scripts/requirements-ref.txt "
                 "there): they make SmolLM2's tokenizer and the 1B model")
    have_bnb = subprocess.run([py, "-c", "import peft, bitsandbytes"], capture_output=True).returncode == 0
    os.makedirs(WORK, exist_ok=True)
    gguf = prepare(py)
    hf_tok = os.path.join(HF, "tokenizer.json")
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    say(f"bench-qlora: {machine_line()}; load average {load()} (1 / 15 min) at the start")
    say(f"  SmolLM2 rows: {os.path.relpath(gguf, ROOT)}, {os.path.relpath(DATA, ROOT)}, ChatML, packed, LoRA r {R} "
        f"alpha {ALPHA} on {TARGETS}, B {a.batch}, T {a.seq}, recompute, {a.warmup} + {a.steps} steps, "
        f"{a.rounds} rounds, {a.threads} threads each")
    train = "keep" in parts or "peft" in parts
    if "peft" in parts and not have_bnb:
        say(f"  peft: no peft/bitsandbytes in {VENV} (pip install -r scripts/requirements-ref.txt there); "
            "PEFT skipped, llamac nf4 kept")
    sides = []
    if train:
        sides = ["float", "keep"] + (["nf4"] + (["peft"] if have_bnb else []) if "peft" in parts else [])
    res = {s: [] for s in sides}
    steps = a.warmup + a.steps  # round 1 runs float first: its --dump-batches rows are PEFT's
    for r in range(a.rounds if sides else 0):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for s in order:
            if s == "float":
                x = run_llamac(a, "float", gguf, gguf, [], a.seq, a.batch, steps, dump=True)
                shutil.copy(os.path.join(x["dir"], "batches.jsonl"), os.path.join(WORK, "batches.jsonl"))
            elif s == "keep":
                x = run_llamac(a, "keep", gguf, gguf, ["--base-quant", "keep"], a.seq, a.batch, steps)
            elif s == "nf4":
                x = run_llamac(a, "nf4", HF, hf_tok, ["--base-quant", "nf4"], a.seq, a.batch, steps)
            else:
                x = run_peft(a, py, os.path.join(WORK, "batches.jsonl"))
            res[s].append(x)
        say(f"  round {r + 1}: " + ", ".join(f"{s} {res[s][-1]['tps']:.0f} tok/s ({res[s][-1]['step_s']:.2f} s/step) "
                                              f"{res[s][-1]['rss']:.0f} MiB" for s in sides)
            + f"; load {load()}")
    med = {s: statistics.median(x["tps"] for x in res[s]) for s in sides}
    stp = {s: statistics.median(x["step_s"] for x in res[s]) for s in sides}
    rss = {s: max(x["rss"] for x in res[s]) for s in sides}
    if sides:
        names = {"float": "llamac LoRA, float32 base (the Q4_1 GGUF dequantised at load)",
                 "keep": "llamac QLoRA --base-quant keep (Q4_1, Q8_0 embedding/head as stored)",
                 "nf4": "llamac QLoRA --base-quant nf4 (float HF directory, NF4 decoder linears)",
                 "peft": "PEFT + bitsandbytes QLoRA (NF4, double quant, float32 compute, grad. checkpointing)"}
        say()
        say(f"SmolLM2-135M-Instruct, B {a.batch}, T {a.seq}, LoRA r {R} on {TARGETS}, recompute; median of "
            f"{a.rounds} rounds x {a.steps} steps (after {a.warmup}); load average {load()} at the end:")
        say()
        say("| run | tok/s | s/step | peak RSS |")
        say("| --- | ---: | ---: | ---: |")
        for s in sides:
            say(f"| {names[s]} | {med[s]:.0f} | {stp[s]:.2f} | {rss[s]:.0f} MiB |")
        say()
        if "keep" in parts:
            m, v = rss["keep"] / rss["float"], med["keep"] / med["float"]
            say(f"keep vs float LoRA: peak RSS {m:.2f}x (target <= 0.40: {'met' if m <= 0.40 else 'missed'}), "
                f"tokens/s {v:.2f}x (target >= 0.85: {'met' if v >= 0.85 else 'missed'}); the extra time of a keep "
                f"step over a float one (the same GEMMs, plus dequantising every tile of rows, forward, "
                f"recomputation and backward): {stp['keep'] - stp['float']:+.2f} s of {stp['keep']:.2f} s "
                f"({100 * (stp['keep'] - stp['float']) / stp['keep']:.0f}%)")
        if "peft" in res and res["peft"]:
            p = res["peft"][-1]
            for s in ("nf4", "keep"):
                v, m = med[s] / med["peft"], rss[s] / rss["peft"]
                say(f"{s} vs PEFT + bitsandbytes: tokens/s {v:.2f}x (target >= 2: {'met' if v >= 2 else 'missed'}), "
                    f"peak RSS {m:.2f}x (target <= 0.5: {'met' if m <= 0.5 else 'missed'})")
            say(f"PEFT side: {p['versions']}; {p['threads']} threads, {p['linear4bit']} Linear4bit modules, "
                f"{p['trainable'] / 1e6:.2f}M trainable; the rows of llamac's float run (--dump-batches)")
    if "1b" in parts:
        path, qlog = make_1b(py)
        D, L, H, KV, F, V = SHAPE_1B
        say()
        say(f"Llama 3.2 1B shape (dim {D}, {L} layers, {H}/{KV} heads, hidden {F}, vocab {V}, tied), random weights "
            f"as Q4_K_M: {os.path.getsize(path) / 2**20:.0f} MiB GGUF; "
            + next((x.strip() for x in qlog.splitlines() if "wrote" in x), ""))
        x = run_llamac(a, "1b", path, hf_tok, ["--base-quant", "keep"], 2048, 1, a.steps_1b)
        ok = x["rss"] <= 2.5 * GIB
        say("| run | s/step | peak RSS | target <= 2.5 GiB |")
        say("| --- | ---: | ---: | --- |")
        say(f"| QLoRA keep, B 1, T 2048, recompute, r {R} on {TARGETS}, {a.steps_1b} step(s) | "
            f"{statistics.median(x['steps']):.0f} | {x['rss']:.0f} MiB ({x['rss'] / GIB:.2f} GiB) | "
            f"{'met' if ok else 'missed by %.0f MiB' % (x['rss'] - 2.5 * GIB)} |")
    if "decode" in parts:
        q8 = os.path.join(WORK, "smollm2-q8_0.gguf")
        if not os.path.exists(q8):
            subprocess.run([LLAMAC, "quantize", gguf, q8[:-5] + ".tmp.gguf", "--type", "q8_0", "--force"], cwd=ROOT,
                           check=True, stdout=subprocess.DEVNULL)
            os.replace(q8[:-5] + ".tmp.gguf", q8)
        dec = run_decode(a, gguf, {"Q4_1": gguf, "Q8_0": q8})
        say()
        say(f"Decoding, SmolLM2-135M-Instruct, llamac sample --quant keep against llama.cpp (llama-cpp-python) on "
            f"the same file, {a.threads} threads, median of {a.decode_rounds} rounds (scripts/bench_sample.py: a = "
            f"one sequence, greedy, 200 tokens; b = {a.prompts_b} prompts x 8 samples x 128 tokens, 64 sequences at "
            "once):")
        say()
        say("| file | a llamac tok/s | a llama.cpp | a ratio (target >= 0.8) | b llamac tok/s | b llama.cpp | "
            "b ratio (target > 1) | peak RSS a llamac / llama.cpp |")
        say("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, d in dec.items():
            if "skip" in d:
                say(f"| {name} | skipped: {d['skip']} | | | | | | |")
                continue
            lc, cp = d.get("llamac", {}), d.get("llama.cpp", {})

            def cell(side, sc):
                v = side.get(sc, {}).get("value")
                return "-" if v is None else f"{v:.1f}"

            def ratio(sc, target, strict):
                x, y = lc.get(sc, {}).get("value"), cp.get(sc, {}).get("value")
                if x is None or y is None:
                    return "-"
                ok = x / y > target if strict else x / y >= target
                return f"{x / y:.2f}x ({'met' if ok else 'missed'})"
            ra, rb = lc.get("a", {}).get("rss"), cp.get("a", {}).get("rss")
            say(f"| {name} | {cell(lc, 'a')} | {cell(cp, 'a')} | {ratio('a', 0.8, False)} | {cell(lc, 'b')} | "
                f"{cell(cp, 'b')} | {ratio('b', 1.0, True)} | "
                f"{'-' if ra is None else '%.0f' % ra} / {'-' if rb is None else '%.0f' % rb} MiB |")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"bench-qlora: wrote {os.path.relpath(a.out, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
