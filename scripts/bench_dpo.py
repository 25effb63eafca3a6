#!/usr/bin/env python3
"""make bench-dpo: `llamac dpo` against TRL's DPOTrainer + PEFT on this CPU.

Same model (a random Llama saved as a Hugging Face directory: dim 256, 4
layers, 8/4 heads, hidden 688, the 600-word byte-level BPE of
scripts/test_chat_ref.py), the same pairs (synthetic prompt / chosen /
rejected strings), LoRA r 16 on every linear layer, batch 8 pairs per step,
the same steps; each side twice: the reference from the adapters switched
off at every step, and from log-probabilities computed once before training
(llamac --ref-cache, TRL precompute_ref_log_probs). Each run is its own
process: tokens/s over the steps after the first (tokens = the prompt and
completion tokens of both sequences of every pair trained), and the
process's peak RSS (ru_maxrss from wait4). Prints a table; --json writes the
rows.

The parent never imports torch, tokenizers or TRL (the model, the tokenizer
and the versions come from worker processes): on Linux a child's ru_maxrss
starts from its parent's RSS at fork (the high-water mark of the address
space it replaces at exec is kept), so a parent holding torch (about 750 MB)
would put that floor under every run it measures, llamac's 160 MB included.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SPEC = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
            intermediate_size=688, max_position_embeddings=512, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)
WORDS = ("the quick brown fox jumps over lazy dog you are a helpful assistant named system user hello "
         "there how fine thanks sky blue green").split()


def pairs(n, seed=3):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 24)))
        c = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 20)))
        r = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 20)))
        out.append({"prompt": p, "chosen": c, "rejected": r})
    return out


def trl_worker(a):
    """one TRL run in this process; prints a JSON line"""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer
    torch.manual_seed(0)
    data = [json.loads(x) for x in open(os.path.join(a.work, "pairs.jsonl"))]
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.work, "tokenizer.json"), bos_token="<|begin_of_text|>",
                                  eos_token="<|end_of_text|>", pad_token="<|end_of_text|>")
    model = LlamaForCausalLM.from_pretrained(os.path.join(a.work, "base"), dtype=torch.float32)
    times, ntok = [], []

    class Timed(DPOTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            ntok.append(int(inputs["attention_mask"].sum()))
            loss = super().training_step(model, inputs, num_items_in_batch)
            times.append(time.perf_counter())
            return loss

    cfg = DPOConfig(output_dir=os.path.join(a.work, "trl_out"), per_device_train_batch_size=a.batch,
                    learning_rate=5e-4, lr_scheduler_type="constant", max_steps=a.steps, logging_steps=10 ** 6,
                    report_to=[], save_strategy="no", beta=0.1, max_length=a.max_length, gradient_checkpointing=False,
                    bf16=False, use_cpu=True, seed=0, precompute_ref_log_probs=a.cache, disable_tqdm=True)
    lc = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    t0 = time.perf_counter()
    tr = Timed(model=model, args=cfg, train_dataset=Dataset.from_list(data), processing_class=tok, peft_config=lc)
    tr.train()
    total = time.perf_counter() - t0
    tps = sum(ntok[1:]) / (times[-1] - times[0])
    import trl
    print(json.dumps({"tokens_per_s": tps, "total_s": total, "trl": trl.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


def setup_worker(a):
    """the tokenizer, the random model and the pairs under a.work; prints the vocabulary size"""
    from test_chat_ref import train_tokenizer
    tok = train_tokenizer(os.path.join(a.work, "tokenizer.json"))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(5)
    LlamaForCausalLM(LlamaConfig(**SPEC, vocab_size=tok.get_vocab_size(), use_cache=False)).save_pretrained(
        os.path.join(a.work, "base"), safe_serialization=True)
    with open(os.path.join(a.work, "pairs.jsonl"), "w") as f:
        for p in pairs(a.pairs):
            f.write(json.dumps(p) + "\n")
    print(json.dumps({"vocab": tok.get_vocab_size()}))


def measured(cmd, out):
    """runs cmd with stdout to the file out (stderr kept); returns (exit status, stderr, peak RSS MB, seconds)"""
    t0 = time.perf_counter()
    with open(out, "w") as f, open(out + ".err", "w+") as err:
        p = subprocess.Popen(cmd, stdout=f, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        total = time.perf_counter() - t0
        err.seek(0)
        return status, err.read(), ru.ru_maxrss / 1024, total  # Linux: KiB


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/bench_dpo")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--json")
    ap.add_argument("--trl-worker", action="store_true")
    ap.add_argument("--setup-worker", action="store_true")
    ap.add_argument("--cache", action="store_true")
    a = ap.parse_args()
    if a.trl_worker:
        return trl_worker(a)
    if a.setup_worker:
        return setup_worker(a)
    os.makedirs(a.work, exist_ok=True)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--setup-worker", "--work", a.work, "--pairs",
                        str(a.pairs)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench-dpo: setup failed: {r.stderr.strip()[-2000:]}")
    vocab = json.loads(r.stdout.splitlines()[-1])["vocab"]
    # the tokens of one pair, as both sides count them (prompt + completion, both sequences)
    dump = os.path.join(a.work, "dump.jsonl")
    subprocess.run([a.llamac, "dpo", "--model", os.path.join(a.work, "base"), "--tokenizer",
                    os.path.join(a.work, "tokenizer.json"), "--data", os.path.join(a.work, "pairs.jsonl"), "--bos", "0",
                    "--seq", str(2 * a.max_length), "--max-length", str(a.max_length), "--dump", dump], check=True,
                   capture_output=True)
    lens = [len(r["chosen"]) + len(r["rejected"]) for r in map(json.loads, open(dump))]
    mean_pair = sum(lens) / len(lens)
    res = []
    for cache in (False, True):
        # llamac: its process's peak RSS from wait4
        d = os.path.join(a.work, "llamac_cache" if cache else "llamac")
        subprocess.run(["rm", "-rf", d])
        os.makedirs(d)
        cmd = [a.llamac, "dpo", "--model", os.path.join(a.work, "base"), "--tokenizer",
               os.path.join(a.work, "tokenizer.json"), "--data", os.path.join(a.work, "pairs.jsonl"), "--bos", "0",
               "--packing", "0", "--batch", str(a.batch), "--seq", str(2 * a.max_length), "--max-length",
               str(a.max_length), "--steps", str(a.steps), "--lr", "5e-4", "--warmup", "0", "--lora-r", "16",
               "--lora-alpha", "32", "--lora-targets", "all-linear", "--peak-gflops", "1", "--metrics",
               os.path.join(d, "m.jsonl"), "--ckpt-dir", os.path.join(d, "ck"), "--adapter-out",
               os.path.join(d, "adapter")] + (["--ref-cache", os.path.join(d, "ref.bin")] if cache else [])
        status, err, rss, total = measured(cmd, os.path.join(d, "out.txt"))
        if status != 0:
            sys.exit(f"bench-dpo: llamac dpo failed: {err.strip()}")
        rows = [json.loads(x) for x in open(os.path.join(d, "m.jsonl")) if '"loss"' in x]
        # pairs are drawn B per step: the steps after the first carry (steps - 1) * B pairs of mean_pair tokens
        secs = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
        res.append({"side": "llamac", "ref_cache": cache, "tokens_per_s": (len(rows) - 1) * a.batch * mean_pair / secs,
                    "peak_rss_mb": rss, "total_s": total})
        # TRL + PEFT in a process of its own, measured the same way
        cmd = [sys.executable, os.path.abspath(__file__), "--trl-worker", "--work", a.work, "--batch", str(a.batch),
               "--steps", str(a.steps), "--max-length", str(a.max_length)] + (["--cache"] if cache else [])
        out = os.path.join(a.work, "trl_cache.txt" if cache else "trl.txt")
        status, err, rss, _ = measured(cmd, out)
        line = [x for x in open(out).read().splitlines() if x.startswith("{")]
        if status != 0 or not line:
            sys.exit(f"bench-dpo: TRL run failed: {err.strip()[-2000:]}")
        trl_row = json.loads(line[-1])
        res.append(dict({"side": "TRL+PEFT", "ref_cache": cache, "peak_rss_mb": rss}, **trl_row))
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"DPO, LoRA r 16 all-linear, random Llama dim {SPEC['hidden_size']} x {SPEC['num_hidden_layers']} layers, "
          f"vocab {vocab}; {a.pairs} pairs ({mean_pair:.0f} tokens each), batch {a.batch} pairs, "
          f"{a.steps} steps; TRL {trl_row['trl']}, torch {trl_row['torch']} ({trl_row['threads']} threads); "
          f"peak RSS of each run's own process (this parent: {parent:.0f} MB)")
    print(f"{'':10} {'reference':22} {'tokens/s':>10} {'peak RSS MB':>12} {'run s':>8}")
    for r in res:
        ref = "cached before training" if r["ref_cache"] else "adapters off, per step"
        print(f"{r['side']:10} {ref:22} {r['tokens_per_s']:10.0f} {r['peak_rss_mb']:12.0f} {r['total_s']:8.1f}")
    for cache in (False, True):
        l, t = [r for r in res if r["ref_cache"] == cache]
        print(f"{'cached' if cache else 'per step'}: llamac {l['tokens_per_s'] / t['tokens_per_s']:.2f}x TRL's tokens/s, "
              f"{l['peak_rss_mb'] / t['peak_rss_mb']:.2f}x its peak RSS")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
