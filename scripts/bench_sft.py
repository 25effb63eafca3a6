#!/usr/bin/env python3
"""make bench-sft: LoRA SFT with `llamac sft` against TRL's SFTTrainer + PEFT on this CPU.

Same model (SmolLM2-135M-Instruct: scripts/fetch_smollm2.sh's GGUF, turned
into a float32 Hugging Face directory by `llamac convert`, its tokenizer
saved beside it by transformers), same data (build/sft_demo/train.jsonl from
scripts/prepare_sft_wordnet.py: WordNet definitions as chat turns), ChatML
(SmolLM2's template; TRL's with {% generation %} markers, loss on the
assistant turns on both sides), packing on (best-fit-decreasing on both,
document mask; TRL packing_strategy "bfd" runs padding-free), the same LoRA
rank, alpha, targets, batch, sequence length and steps, no activation
recomputation on either side (llamac --recompute 0; TRL
gradient_checkpointing=False, where TRL's default is True: --recompute 1
turns it on for both), float32 on both (TRL's default bf16=True is turned
off: this CPU has no bf16 matrix units and autocast ran each step ~10x
slower), AdamW with the same betas, eps, weight decay and clipping.

Each run is its own process; peak RSS is the child's ru_maxrss (os.wait4).
tokens/s counts the examples' tokens (not padding) over the steps after the
warm-up ones: llamac's from its --dump-batches rows and --metrics step
times, TRL's from the padding-free batches' input_ids and a callback's step
times. Runs alternate llamac / TRL (the order swapped every round) so both
see the same machine noise; the table shows medians (RSS: the largest).

The quick default (3 timed steps after 1 warm-up, 3 rounds, B 4, T 256)
finishes in a few minutes on 2 cores; use e.g. --steps 10 --rounds 5 on a
quiet machine for the README's numbers. Orchestration is standard library
only; the TRL side runs in the reference venv (scripts/requirements-ref.txt).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("LLAMAC_VENV", os.path.expanduser("~/.cache/llamac-venv"))
WORK = os.path.join(ROOT, "build", "bench_sft")
HF = os.path.join(WORK, "smollm2_hf")
DATA = os.path.join(ROOT, "build", "sft_demo", "train.jsonl")
TARGETS = {"q,k,v,o": "q_proj,k_proj,v_proj,o_proj", "all-linear": "all-linear"}
# The optimiser both sides use (llamac's defaults; TRL's are set to them)
LR, BETA2, EPS, WD, CLIP = 2e-4, 0.95, 1e-5, 0.1, 1.0


def run_child(cmd, log):
    """Run cmd to completion; (exit status, peak RSS of the child in MiB)."""
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_maxrss / 1024.0  # Linux: KiB


def run_worker(cmd, d, who):
    """Run a reference worker (cmd + --result d/result.json) in its own
    process; its result dict with "rss" (its peak RSS, MiB) added. Exits
    naming who and d/log.txt when it fails."""
    out, log = os.path.join(d, "result.json"), os.path.join(d, "log.txt")
    if os.path.exists(out):
        os.remove(out)
    rc, rss = run_child(cmd + ["--result", out], log)
    if rc != 0:
        sys.exit(f"{who} failed (exit {rc}); see {log}")
    with open(out) as f:
        res = json.load(f)
    res["rss"] = rss
    return res


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- inputs

def prepare(py):
    os.makedirs(WORK, exist_ok=True)
    gguf = subprocess.run(["sh", "scripts/fetch_smollm2.sh"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    if not os.path.exists(os.path.join(HF, "model.safetensors")):
        subprocess.run([os.path.join(ROOT, "build", "llamac"), "convert", gguf, HF, "--force"], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(os.path.join(HF, "tokenizer.json")):  # transformers reads the GGUF's tokenizer
        subprocess.run([py, __file__, "--worker", "tokenizer", "--gguf", gguf], cwd=ROOT, check=True)
    if not os.path.exists(DATA):
        subprocess.run([sys.executable, "scripts/prepare_sft_wordnet.py"], cwd=ROOT, check=True)
    return gguf


def save_tokenizer(gguf):
    from transformers import AutoTokenizer
    t = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    t.save_pretrained(HF)


# ---------------------------------------------------------------- the two sides

def pad_id():
    """llamac pads rows with the tokenizer's EOS, which for SmolLM2's
    tokenizer.json is <|endoftext|> (data/bbpe.c's EOS names)."""
    with open(os.path.join(HF, "tokenizer.json")) as f:
        added = json.load(f)["added_tokens"]
    return next((t["id"] for t in added if t["content"] == "<|endoftext|>"), 0)


def run_llamac(args, targets, tag):
    d = os.path.join(WORK, tag)
    os.makedirs(d, exist_ok=True)
    met, bat = os.path.join(d, "metrics.jsonl"), os.path.join(d, "batches.jsonl")
    for p in (met, bat):
        if os.path.exists(p):
            os.remove(p)
    steps = args.warmup + args.steps
    cmd = [os.path.join(ROOT, "build", "llamac"), "sft", "--model", HF, "--tokenizer",
           os.path.join(HF, "tokenizer.json"), "--data", DATA, "--template", "chatml", "--batch", str(args.batch),
           "--seq", str(args.seq), "--steps", str(steps), "--lr", str(LR), "--beta2", str(BETA2), "--eps", str(EPS),
           "--weight-decay", str(WD), "--clip", str(CLIP), "--lora-r", str(args.r), "--lora-alpha", str(args.r),
           "--lora-targets", TARGETS[targets], "--recompute", str(args.recompute), "--peak-gflops", "1", "--seed", "1", "--metrics", met,
           "--dump-batches", bat, "--ckpt-dir", os.path.join(d, "ck"), "--adapter-out", os.path.join(d, "adapter"),
           "--out", os.path.join(d, "out.h5")]
    rc, rss = run_child(cmd, os.path.join(d, "log.txt"))
    if rc != 0:
        sys.exit(f"bench-sft: llamac failed (exit {rc}); see {d}/log.txt")
    m = [x for x in read_jsonl(met) if "grad_norm" in x]
    pad = pad_id()
    real = []
    for b in read_jsonl(bat):  # per micro-batch: slots holding example tokens (each row's trailing padding excluded)
        B, T, tok, tgt = b["B"], b["T"], b["tokens"], b["targets"]
        n = 0
        for r in range(B):
            k = T
            while k > 0 and tok[r * T + k - 1] == pad and tgt[r * T + k - 1] == -1:
                k -= 1
            n += k
        real.append(n)
    el = [x["elapsed_s"] for x in m]
    dt = [el[i] - (el[i - 1] if i else 0.0) for i in range(len(el))]
    w = args.warmup
    return {"tps": sum(real[w:]) / sum(dt[w:]), "rss": rss, "step_s": statistics.median(dt[w:]),
            "loss": m[-1]["loss"], "tokens_per_step": statistics.median(real[w:])}


def run_trl(args, targets, tag, py):
    d = os.path.join(WORK, tag)
    os.makedirs(d, exist_ok=True)
    cmd = [py, __file__, "--worker", "trl", "--recompute", str(args.recompute), "--targets", targets, "--batch", str(args.batch), "--seq",
           str(args.seq), "--steps", str(args.steps), "--warmup", str(args.warmup), "--r", str(args.r)]
    return run_worker(cmd, d, "bench-sft: TRL")


def trl_worker(args):
    """One TRL SFTTrainer + PEFT run in this process; writes its timings to --result."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_chat_ref import SMOLLM2_GEN  # SmolLM2's ChatML with {% generation %} markers

    tok = AutoTokenizer.from_pretrained(HF)
    tok.chat_template = SMOLLM2_GEN
    model = AutoModelForCausalLM.from_pretrained(HF, dtype=torch.float32, attn_implementation="sdpa")
    t = TARGETS[args.targets]
    peft = LoraConfig(r=args.r, lora_alpha=args.r, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules="all-linear" if t == "all-linear" else t.split(","))
    cfg = SFTConfig(output_dir=os.path.join(WORK, "trl_out"), max_length=args.seq, packing=True,
                    packing_strategy="bfd", assistant_only_loss=True, per_device_train_batch_size=args.batch,
                    gradient_accumulation_steps=1, max_steps=args.warmup + args.steps, learning_rate=LR,
                    lr_scheduler_type="cosine", warmup_steps=0, weight_decay=WD, adam_beta1=0.9, adam_beta2=BETA2,
                    adam_epsilon=EPS, max_grad_norm=CLIP, gradient_checkpointing=bool(args.recompute),
                    bf16=False, fp16=False, logging_steps=1,
                    save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, seed=1,
                    disable_tqdm=True)
    times, tokens = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            tokens.append(int(inputs["input_ids"].numel()))  # padding-free: the examples' tokens only
            return super().training_step(model, inputs, *rest, **kw)

    ds = load_dataset("json", data_files=DATA, split="train")
    tr = Counting(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=peft,
                  callbacks=[Timer()])
    # timing starts at the first step's batch: on_step_begin runs before the batch is drawn in 5.x's loop
    out = tr.train()
    w = args.warmup
    res = {"tps": sum(tokens[w:]) / sum(times[w:]), "step_s": statistics.median(times[w:]),
           "loss": float(out.training_loss), "tokens_per_step": statistics.median(tokens[w:]),
           "threads": torch.get_num_threads(), "padding_free": bool(tr.padding_free)}
    with open(args.result, "w") as f:
        json.dump(res, f)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="q,k,v,o,all-linear",
                    help="LoRA target sets, comma-separated among q,k,v,o and all-linear")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    ap.add_argument("--r", type=int, default=16, help="LoRA rank (alpha = r)")
    ap.add_argument("--recompute", type=int, choices=[0, 1], default=0,
                    help="1: recompute activations on both sides (llamac --recompute 1; TRL "
                         "gradient_checkpointing=True, its default)")
    ap.add_argument("--worker", choices=["trl", "tokenizer"], help=argparse.SUPPRESS)
    ap.add_argument("--gguf", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "trl":
        return trl_worker(args)
    if args.worker == "tokenizer":
        return save_tokenizer(args.gguf)

    sets = ["q,k,v,o" if "q,k,v,o" in args.targets else None, "all-linear" if "all-linear" in args.targets else None]
    sets = [s for s in sets if s]
    py = os.path.join(VENV, "bin", "python")
    if subprocess.run([py, "-c", "import torch, transformers, peft, trl, datasets"], capture_output=True).returncode:
        sys.exit(f"bench-sft: no torch/transformers/peft/trl/datasets in {VENV} (pip install -r "
                 "scripts/requirements-ref.txt there)")
    prepare(py)
    print(f"bench-sft: SmolLM2-135M-Instruct (float32), {os.path.relpath(DATA, ROOT)}, ChatML, packing on, "
          f"recompute {args.recompute}, "
          f"LoRA r {args.r} alpha {args.r}, B {args.batch}, T {args.seq}, {args.warmup} + {args.steps} steps, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs", flush=True)
    rows = []
    for targets in sets:
        lc, tr = [], []
        tag = targets.replace(",", "")
        for r in range(args.rounds):
            order = ("llamac", "trl") if r % 2 == 0 else ("trl", "llamac")
            for side in order:
                if side == "llamac":
                    lc.append(run_llamac(args, targets, f"llamac_{tag}"))
                else:
                    tr.append(run_trl(args, targets, f"trl_{tag}", py))
            print(f"  {targets} round {r + 1}: llamac {lc[-1]['tps']:.0f} tok/s {lc[-1]['rss']:.0f} MiB, "
                  f"TRL {tr[-1]['tps']:.0f} tok/s {tr[-1]['rss']:.0f} MiB", flush=True)
        row = {"targets": targets,
               "lc_tps": statistics.median(x["tps"] for x in lc), "tr_tps": statistics.median(x["tps"] for x in tr),
               "lc_rss": max(x["rss"] for x in lc), "tr_rss": max(x["rss"] for x in tr),
               "lc_tok": statistics.median(x["tokens_per_step"] for x in lc),
               "tr_tok": statistics.median(x["tokens_per_step"] for x in tr),
               "threads": tr[-1]["threads"], "padding_free": tr[-1]["padding_free"]}
        rows.append(row)
    print()
    print(f"LoRA SFT, SmolLM2-135M-Instruct, WordNet chat data, packed, r {args.r}, B {args.batch}, T {args.seq}, "
          f"recompute {args.recompute}, "
          f"median of {args.rounds} rounds x {args.steps} steps (after {args.warmup} warm-up), this CPU "
          f"({os.cpu_count()} cores; torch {rows[0]['threads']} threads):")
    print()
    print("| LoRA targets | llamac tok/s | TRL tok/s | speed | llamac peak RSS | TRL peak RSS | memory |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w in rows:
        print(f"| {w['targets']} | {w['lc_tps']:.0f} | {w['tr_tps']:.0f} | {w['lc_tps'] / w['tr_tps']:.2f}x | "
              f"{w['lc_rss']:.0f} MiB | {w['tr_rss']:.0f} MiB | {w['lc_rss'] / w['tr_rss']:.2f}x |")
    print()
    print("tokens/s: the examples' tokens (no padding) per second of training step; tokens per step (median): " +
          ", ".join(f"{w['targets']}: llamac {w['lc_tok']:.0f}, TRL {w['tr_tok']:.0f}" for w in rows) +
          f". Targets: >= 2x TRL's tokens/s at <= 0.5x its peak RSS. TRL padding-free: {rows[0]['padding_free']}.")
    ok = all(w["lc_tps"] >= 2 * w["tr_tps"] and w["lc_rss"] <= 0.5 * w["tr_rss"] for w in rows)
    print("targets met" if ok else "targets NOT met: " + "; ".join(
        f"{w['targets']}: {w['lc_tps'] / w['tr_tps']:.2f}x speed, {w['lc_rss'] / w['tr_rss']:.2f}x memory"
        for w in rows))


if __name__ == "__main__":
    sys.exit(main())
