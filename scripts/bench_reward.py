#!/usr/bin/env python3
"""make bench-reward: reward-model training with `llamac reward` against TRL's RewardTrainer on this CPU.

Same model (SmolLM2-135M-Instruct as a float32 Hugging Face directory, made
by scripts/bench_sft.py's prepare(): scripts/fetch_smollm2.sh's GGUF through
`llamac convert`; both sides put a new score head [1, 576] on it), the same
batch, float32 on both, the same threads (OMP_NUM_THREADS and torch's), no
activation recomputation (TRL gradient_checkpointing=False), AdamW with the
same settings (scripts/bench_sft.py's). Two configurations: full
fine-tuning, and LoRA r 16 alpha 32 on q,k,v,o with the score head trained
whole (llamac --lora-r 16 --lora-alpha 32; PEFT LoraConfig task_type
SEQ_CLS, modules_to_save ["score"]).

The pairs are the DPO demo's (scripts/prepare_pairs_wordnet.py: WordNet
definitions, the true one chosen, another word's rejected, as ChatML
conversations with SmolLM2's default system turn). The run trains the first
--batch of them at every step, so both sides see the same batch at every
step whatever their shuffling: B pairs per step, no packing (llamac
--packing 0: a row of 2 * --max-length slots per pair; TRL pads the batch to
its longest sequence), the same --max-length. tokens/s counts the pairs'
tokens (no padding): TRL's from each step's attention mask, llamac's from
the set's token count it prints, checked equal. Step times: llamac's from
its --metrics rows, TRL's from a callback; the steps after --warmup.

The rs row (--configs rs): one round of `llamac rs` per --rounds with
SmolLM2 as the policy and a reward model made from it once (one LoRA step
on the pairs, merged), 8 of the pairs' prompts x 4 samples of at most 32
tokens, LoRA SFT on the kept samples: samples/s over the round and its split
into sampling (model load included), scoring and training, from rs's last
line. llamac only: TRL has no rejection-sampling trainer.

Each run is its own process; peak RSS is the child's ru_maxrss (os.wait4;
this parent never imports torch, see scripts/bench_dpo.py). Runs alternate
llamac / TRL, the order swapped every round; the table shows medians of the
rounds (RSS: the largest). Writes the log and the table to
bench/results/cpu-<date>-reward.txt (--out). Orchestration is standard
library only; the TRL side runs in the reference venv.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sft import BETA2, CLIP, EPS, HF, LR, ROOT, VENV, WD, prepare, read_jsonl, run_child, run_worker  # noqa: E402

WORK = os.path.join(ROOT, "build", "bench_reward")
PAIRS = os.path.join(WORK, "pairs.jsonl")
CONFIGS = ("full", "lora", "rs")
LORA_R, LORA_ALPHA = 16, 32
RS_PROMPTS, RS_K, RS_TOKENS, RS_STEPS = 8, 4, 32, 2  # the rs row: prompts, samples each, tokens each, SFT steps


def make_pairs(batch):
    """the first `batch` of the DPO demo's pairs into PAIRS; the pair lines"""
    os.makedirs(WORK, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "prepare_pairs_wordnet.py"),
                    os.path.join(ROOT, "build", "sft_demo"), WORK], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(WORK, "train.jsonl")) as f:
        lines = f.readlines()[:batch]
    if len(lines) < batch:
        sys.exit(f"bench-reward: only {len(lines)} pairs, fewer than --batch {batch}")
    with open(PAIRS, "w") as f:
        f.writelines(lines)


def run_llamac(a, config):
    d = os.path.join(WORK, f"llamac_{config}")
    os.makedirs(d, exist_ok=True)
    met = os.path.join(d, "metrics.jsonl")
    if os.path.exists(met):
        os.remove(met)
    cmd = [os.path.join(ROOT, "build", "llamac"), "reward", "--model", HF, "--tokenizer",
           os.path.join(HF, "tokenizer.json"), "--data", PAIRS, "--template", "chatml", "--packing", "0",
           "--batch", str(a.batch), "--seq", str(2 * a.max_length), "--max-length", str(a.max_length),
           "--steps", str(a.warmup + a.steps), "--lr", str(LR), "--beta2", str(BETA2), "--eps", str(EPS),
           "--weight-decay", str(WD), "--clip", str(CLIP), "--recompute", "0", "--peak-gflops", "1", "--seed", "1",
           "--metrics", met, "--ckpt-dir", os.path.join(d, "ck"), "--out", os.path.join(d, "reward.h5")]
    if config == "lora":
        cmd += ["--lora-r", str(LORA_R), "--lora-alpha", str(LORA_ALPHA), "--lora-targets", "q,k,v,o",
                "--adapter-out", os.path.join(d, "adapter")]
    log = os.path.join(d, "log.txt")
    rc, rss = run_child(cmd, log)
    if rc != 0:
        sys.exit(f"bench-reward: llamac failed (exit {rc}); see {log}")
    with open(log) as f:
        m = re.search(r"^reward train: .*?: (\d+) pairs .*?, (\d+) tokens;", f.read(), re.M)
    if not m or int(m.group(1)) != a.batch:
        sys.exit(f"bench-reward: llamac did not train {a.batch} pairs per step (pairs over --max-length?); see {log}")
    el = [x["elapsed_s"] for x in read_jsonl(met) if "grad_norm" in x]
    tokens = int(m.group(2))  # the whole set: every step's batch
    return {"tps": tokens * a.steps / (el[-1] - el[a.warmup - 1] if a.warmup else el[-1]), "rss": rss,
            "tokens_per_step": tokens, "step_s": statistics.median(el[i] - el[i - 1] for i in range(max(a.warmup, 1), len(el)))}


def seconds(clock):
    """run_clock's "m:ss" or "h:mm:ss" in seconds"""
    t = 0
    for part in clock.split(":"):
        t = 60 * t + int(part)
    return t


def run_rs(a):
    """One round of `llamac rs` with the policy SmolLM2 and a reward model from it (one LoRA step on the pairs,
    made once): samples per second and the seconds of sampling, scoring and training it reports"""
    d = os.path.join(WORK, "llamac_rs")
    rm = os.path.join(WORK, "rs_reward", "rm.h5")
    if not os.path.exists(rm):  # one LoRA step, merged (rs does not read llamac reward's adapter as BASE+DIR yet)
        os.makedirs(os.path.dirname(rm), exist_ok=True)
        cmd = [os.path.join(ROOT, "build", "llamac"), "reward", "--model", HF, "--tokenizer",
               os.path.join(HF, "tokenizer.json"), "--data", PAIRS, "--template", "chatml", "--packing", "0",
               "--batch", str(a.batch), "--seq", str(2 * a.max_length), "--max-length", str(a.max_length),
               "--steps", "1", "--lr", "1e-3", "--peak-gflops", "1", "--lora-r", str(LORA_R), "--lora-alpha",
               str(LORA_ALPHA), "--ckpt-dir", os.path.join(os.path.dirname(rm), "ck"), "--adapter-out",
               os.path.join(os.path.dirname(rm), "adapter"), "--merged-out", rm + ".tmp"]
        rc, _ = run_child(cmd, os.path.join(os.path.dirname(rm), "log.txt"))
        if rc != 0:
            sys.exit(f"bench-reward: the reward model for rs failed (exit {rc}); see {os.path.dirname(rm)}/log.txt")
        os.replace(rm + ".tmp", rm)
    subprocess.run(["rm", "-rf", d], check=True)
    os.makedirs(d)
    prompts = os.path.join(d, "prompts.jsonl")
    with open(os.path.join(WORK, "train.jsonl")) as f, open(prompts, "w") as out:
        for line in f.readlines()[:RS_PROMPTS]:
            out.write(json.dumps({"messages": json.loads(line)["prompt"]}) + "\n")
    tok = os.path.join(HF, "tokenizer.json")
    cmd = [os.path.join(ROOT, "build", "llamac"), "rs", "--policy", HF, "--tokenizer", tok, "--template", "chatml",
           "--reward-model", rm, "--reward-tokenizer", tok, "--reward-template", "chatml",
           "--prompts", prompts, "--k", str(RS_K), "--max-tokens", str(RS_TOKENS), "--out-dir",
           os.path.join(d, "out"), "--", "--steps", str(RS_STEPS), "--batch", "4", "--seq", "128", "--lora-r",
           str(LORA_R), "--lora-alpha", str(LORA_ALPHA), "--peak-gflops", "1"]
    log = os.path.join(d, "log.txt")
    rc, rss = run_child(cmd, log)
    if rc != 0:
        sys.exit(f"bench-reward: llamac rs failed (exit {rc}); see {log}")
    with open(log) as f:
        m = re.search(r"^rs: done: \d+ rounds, (\d+) samples; sampling \S+ \(([\d.]+) samples/s\), scoring \S+ "
                      r"\(([\d.]+) samples/s\), training (\S+);", f.read(), re.M)
    if not m:
        sys.exit(f"bench-reward: no 'rs: done' line in {log}")
    n = int(m.group(1))
    t = {"sampling": n / float(m.group(2)), "scoring": n / float(m.group(3)), "training": float(seconds(m.group(4)))}
    return {"samples": n, "sps": n / sum(t.values()), "rss": rss, **{k + "_s": v for k, v in t.items()}}


def run_trl(a, config, py):
    d = os.path.join(WORK, f"trl_{config}")
    os.makedirs(d, exist_ok=True)
    cmd = [py, os.path.abspath(__file__), "--worker", config, "--batch", str(a.batch), "--max-length",
           str(a.max_length), "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads)]
    return run_worker(cmd, d, "bench-reward: TRL")


def trl_worker(a):
    """One TRL RewardTrainer run in this process; writes its timings to --result."""
    import time

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from test_chat_ref import SMOLLM2  # SmolLM2's ChatML, as published

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(HF)
    tok.chat_template = SMOLLM2
    model = AutoModelForSequenceClassification.from_pretrained(HF, num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    peft = None
    if a.worker == "lora":
        peft = LoraConfig(task_type="SEQ_CLS", r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], modules_to_save=["score"])
    cfg = RewardConfig(output_dir=os.path.join(WORK, "trl_out"), max_length=a.max_length,
                       per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
                       max_steps=a.warmup + a.steps, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0,
                       weight_decay=WD, adam_beta1=0.9, adam_beta2=BETA2, adam_epsilon=EPS, max_grad_norm=CLIP,
                       gradient_checkpointing=False, bf16=False, fp16=False, logging_steps=1, save_strategy="no",
                       report_to=[], use_cpu=True, dataloader_num_workers=0, seed=1, disable_tqdm=True)
    times, tokens = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    class Counting(RewardTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            tokens.append(int(inputs["attention_mask"].sum()))  # chosen and rejected, no padding
            return super().training_step(model, inputs, *rest, **kw)

    ds = load_dataset("json", data_files=PAIRS, split="train")
    tr = Counting(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=peft,
                  callbacks=[Timer()])
    tr.train()
    w = a.warmup
    res = {"tps": sum(tokens[w:]) / sum(times[w:]), "step_s": statistics.median(times[w:]),
           "tokens_per_step": statistics.median(tokens[w:]), "threads": torch.get_num_threads(),
           "trained": sum(p.numel() for p in tr.model.parameters() if p.requires_grad)}
    with open(a.result, "w") as f:
        json.dump(res, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="full,lora,rs", help="comma-separated among full, lora, rs")
    ap.add_argument("--batch", type=int, default=4, help="pairs per step")
    ap.add_argument("--max-length", type=int, default=72, help="tokens per sequence (the pairs' longest is 70)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    ap.add_argument("--threads", type=int, default=2, help="threads of each side")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  f"cpu-{datetime.date.today().isoformat()}-reward.txt"))
    ap.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return trl_worker(a)
    configs = [c for c in a.configs.split(",") if c]
    if not configs or any(c not in CONFIGS for c in configs):
        sys.exit(f"bench-reward: --configs: among {', '.join(CONFIGS)}")
    py = os.path.join(VENV, "bin", "python")
    if subprocess.run([py, "-c", "import torch, transformers, peft, trl, datasets"], capture_output=True).returncode:
        sys.exit(f"bench-reward: no torch/transformers/peft/trl/datasets in {VENV} (pip install -r "
                 "scripts/requirements-ref.txt there)")
    prepare(py)
    make_pairs(a.batch)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # llamac's threads; the children inherit it
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    load = os.getloadavg()
    say(f"bench-reward: SmolLM2-135M-Instruct (float32) with a new score head, the first {a.batch} pairs of "
        f"scripts/prepare_pairs_wordnet.py's as every step's batch, ChatML, no packing, max length {a.max_length}, "
        f"{a.warmup} + {a.steps} steps, {a.rounds} rounds, {a.threads} threads each, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} at the start")
    rows, rs = [], []
    for config in configs:
        if config == "rs":
            for r in range(a.rounds):
                rs.append(run_rs(a))
                say(f"  rs round {r + 1}: {rs[-1]['samples']} samples in {rs[-1]['sampling_s']:.1f} s sampling + "
                    f"{rs[-1]['scoring_s']:.1f} s scoring + {rs[-1]['training_s']:.0f} s training: "
                    f"{rs[-1]['sps']:.2f} samples/s, {rs[-1]['rss']:.0f} MiB")
            continue
        lc, tr = [], []
        for r in range(a.rounds):
            for side in (("llamac", "trl") if r % 2 == 0 else ("trl", "llamac")):
                if side == "llamac":
                    lc.append(run_llamac(a, config))
                else:
                    tr.append(run_trl(a, config, py))
            say(f"  {config} round {r + 1}: llamac {lc[-1]['tps']:.0f} tok/s ({lc[-1]['step_s']:.2f} s/step) "
                f"{lc[-1]['rss']:.0f} MiB, TRL {tr[-1]['tps']:.0f} tok/s ({tr[-1]['step_s']:.2f} s/step) "
                f"{tr[-1]['rss']:.0f} MiB")
        if any(x["tokens_per_step"] != lc[0]["tokens_per_step"] for x in tr):
            sys.exit(f"bench-reward: tokens per step differ: llamac {lc[0]['tokens_per_step']}, "
                     f"TRL {[x['tokens_per_step'] for x in tr]}")
        rows.append({"config": config, "lc_tps": statistics.median(x["tps"] for x in lc),
                     "tr_tps": statistics.median(x["tps"] for x in tr), "lc_rss": max(x["rss"] for x in lc),
                     "tr_rss": max(x["rss"] for x in tr), "tokens": lc[0]["tokens_per_step"],
                     "threads": tr[-1]["threads"], "trained": tr[-1]["trained"]})
    if rows:
        table(a, rows, say)
    if rs:
        med = {k: statistics.median(x[k] for x in rs) for k in ("sps", "sampling_s", "scoring_s", "training_s")}
        tot = med["sampling_s"] + med["scoring_s"] + med["training_s"]
        say()
        say(f"llamac rs, one round: policy SmolLM2-135M-Instruct, reward model SmolLM2 + score head (1 LoRA step, merged), "
            f"{RS_PROMPTS} prompts x K {RS_K} samples of at most {RS_TOKENS} tokens at temperature 1.2, then LoRA SFT "
            f"r {LORA_R} on the kept samples ({RS_STEPS} steps of 4 x 128); median of {len(rs)} runs, "
            f"{date_and_load()}:")
        say()
        say("| run | samples/s | sampling | scoring | training | peak RSS |")
        say("| --- | ---: | ---: | ---: | ---: | ---: |")
        say(f"| llamac rs | {med['sps']:.2f} | {med['sampling_s']:.1f} s ({100 * med['sampling_s'] / tot:.0f}%) | "
            f"{med['scoring_s']:.1f} s ({100 * med['scoring_s'] / tot:.0f}%) | {med['training_s']:.0f} s "
            f"({100 * med['training_s'] / tot:.0f}%) | {max(x['rss'] for x in rs):.0f} MiB |")
        say()
        say("samples/s: the round's samples over its sampling (model load included), scoring and training time, "
            "as rs's last line splits it.")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"bench-reward: wrote {os.path.relpath(a.out, ROOT)}")


def table(a, rows, say):
    """the training rows: medians, ratios, the targets"""
    names = {"full": "full fine-tuning", "lora": f"LoRA r {LORA_R} alpha {LORA_ALPHA} q,k,v,o + score"}
    say()
    say(f"Reward model (Bradley-Terry), SmolLM2-135M-Instruct, B {a.batch} pairs ({rows[0]['tokens']} tokens) per "
        f"step, max length {a.max_length}, median of {a.rounds} rounds x {a.steps} steps (after {a.warmup} "
        f"warm-up), {date_and_load()}, {os.cpu_count()} cores; torch {rows[0]['threads']} threads:")
    say()
    say("| config | llamac tok/s | TRL tok/s | speed | llamac peak RSS | TRL peak RSS | memory | targets |")
    say("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for w in rows:
        speed, mem = w["lc_tps"] / w["tr_tps"], w["lc_rss"] / w["tr_rss"]
        verdict = ("speed " + ("met" if speed >= 2 else "missed") + ", memory " + ("met" if mem <= 0.5 else "missed"))
        say(f"| {names[w['config']]} | {w['lc_tps']:.0f} | {w['tr_tps']:.0f} | {speed:.2f}x | {w['lc_rss']:.0f} MiB | "
            f"{w['tr_rss']:.0f} MiB | {mem:.2f}x | {verdict} |")
    say()
    say("tokens/s: the pairs' tokens (chosen and rejected, no padding; the same count on both sides) per second of "
        "training step. Targets: llamac >= 2x TRL's tokens/s at <= 0.5x its peak RSS. TRL trained parameters: " +
        ", ".join(f"{w['config']} {w['trained'] / 1e6:.2f}M" for w in rows) + ".")


def date_and_load():
    load = os.getloadavg()
    return f"{datetime.date.today().isoformat()}, load average {load[0]:.2f} / {load[2]:.2f} (1 / 15 min) at the end"


if __name__ == "__main__":
    sys.exit(main())
