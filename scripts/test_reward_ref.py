#!/usr/bin/env python3
"""`llamac reward` against TRL's RewardTrainer (run by scripts/test_ref.sh).

What: a tiny random LlamaForSequenceClassification (num_labels 1,
pad_token_id = EOS as TRL sets it) saved as a Hugging Face directory with a
byte-level BPE tokenizer (scripts/test_chat_ref.py's), and preference
pairs (TRL's standard format: prompt, chosen, rejected strings; a variant
with a "margin" field). Both sides train STEPS steps from the same weights
on the same pairs, lr constant (LR), no warmup, no weight decay, no clipping,
torch's AdamW defaults (beta2 0.999, eps 1e-8), in these cases:

  full             every weight trained;
  full center      center_rewards_coefficient 0.01;
  full margin      the pairs' "margin" fields;
  full accum       3 micro-batches of 8 pairs per step (gradient
                   accumulation; TRL: gradient_accumulation_steps 3);
  lora             PEFT LoRA r 8, alpha 16 on every linear with
                   modules_to_save ["score"] (task_type SEQ_CLS); the
                   initial adapter saved by PEFT is llamac's --lora-init;
  lora center margin  the same with both options.

Every pair of the set is in every optimizer step (one micro-batch of all
pairs, or accumulated micro-batches that cover them), so llamac's seeded
row order and TRL's sampler cannot make the steps differ (llamac reward
writes no record of its order to replay; TRL gets the set once per step
with its sequential sampler). Checks:

  per step   loss, accuracy, margin, min_reward, mean_reward, max_reward of
             llamac's --metrics equal TRL's within TOL (TRL logs the mean
             over micro-batches of each; min and max are taken here over
             the micro-batches, i.e. over the step's rewards, as llamac);
  weights    full: every tensor of llamac's --hf-out directory equals TRL's
             trained model; LoRA: llamac's --adapter-out (lora_A, lora_B
             and the score head under PEFT's key base_model.model.score.weight)
             equals TRL's saved adapter, and --hf-out (merged) equals
             PEFT's merge_and_unload; within TOL;
  scoring    AutoModelForSequenceClassification on --hf-out (and on
             `llamac convert` of the --out checkpoint; LoRA: of the
             initial model with --adapter-out merged) scores
             held-out texts as TRL's trained model does (ATOL: the weights
             agree within TOL), and PeftModel.from_pretrained with llamac's
             adapter scores them as the merged --hf-out;
             `llamac score --reward-model HFDIR` equals transformers on the
             same directory within TOL, and (LoRA) `--reward-model
             INIT+ADAPTER` equals PEFT on the same adapter.

Prints PASS/FAIL per check and "test_reward_ref: N passed, M failed"; exit
1 on any failure.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcheck import check, summary  # noqa: E402

# Per-step metrics and trained weights: both sides in float32, summed in
# other orders (OpenBLAS vs torch's CPU GEMMs); scripts/test_dpo_ref.py
# holds the same tolerance over 10 AdamW steps.
TOL = 1e-5
# Scores of two models whose weights agree within TOL (TRL's vs llamac's):
# a forward through 2 layers multiplies the weight differences by O(1)
# activations and sums O(D) of them.
ATOL = 1e-4
STEPS = 10
# Smaller than scripts/test_dpo_ref.py's 5e-4: at 5e-4 and above the full
# runs' loss falls towards 0, where AdamW's m / sqrt(v) of vanishing
# gradients turns their last-bit differences into weight differences of
# up to ~1e-5 (measured: 1.7e-5 at 1e-3, 8e-6 at 5e-4, 3e-6 at 2e-4).
LR = 2e-4
SEQ = 64
MAXLEN = SEQ // 2  # llamac's --max-length: a pair (chosen then rejected) fills one row of SEQ
KEYS = ["loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward"]
SPEC = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, max_position_embeddings=128, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)
EOS = "<|end_of_text|>"
BOS = "<|begin_of_text|>"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# 24 pairs from a few prompts: short enough that prompt + completion + EOS
# stays within MAXLEN tokens (checked against TRL's tokenized dataset).
PROMPTS = ["What colour is the sky?", "Hello there, how are you", "You are helpful. Name a fox",
           "assistant user system", "Say something kind.", "The quick brown fox"]
GOOD = [" It is blue.", " Fine, thanks.", " The quick brown fox.", " system", " You did well today.",
        " jumps over the dog."]
BAD = [" It is green, I think.", " Go away.", " A lazy dog.", " user assistant user", " No.", " sat."]


def make_pairs():
    pairs = []
    for k in range(24):
        i, j = k % len(PROMPTS), (k // len(PROMPTS)) % 4
        chosen = GOOD[i] if j != 3 else GOOD[(i + 1) % len(GOOD)]
        rejected = BAD[(i + j) % len(BAD)]
        pairs.append({"prompt": PROMPTS[i], "chosen": chosen, "rejected": rejected})
    return pairs


PAIRS = make_pairs()
# Llama 2's margins are levels of preference (Table 27: 0, 1/3, 2/3, 1)
MARGINS = [round(m, 6) for m in [0.0, 1 / 3, 2 / 3, 1.0] * 6]
HELD = [{"prompt": "What colour is the sky?", "completion": " It is blue, I think."},
        {"prompt": "Name a fox", "completion": " The brown fox."},
        {"prompt": "Hello there", "completion": " Go away, you lazy dog."},
        {"prompt": "Say something", "completion": " You are kind."},
        {"prompt": "system user", "completion": " assistant"},
        {"prompt": "The sky is", "completion": " green."}]


def hf_tokenizer(tpath):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_file=tpath, bos_token=BOS, eos_token=EOS, pad_token=EOS)


def build_base(path, tok):
    """LlamaForSequenceClassification, weights normal(0, 0.08) (larger than the
    0.02 init, so the rewards differ between texts), pad = eos, and the
    tokenizer files beside it."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification
    cfg = LlamaConfig(**SPEC, vocab_size=len(tok), attention_bias=False, mlp_bias=False, hidden_act="silu",
                      use_cache=False, num_labels=1, pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id)
    torch.manual_seed(5)
    m = LlamaForSequenceClassification(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    m.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def load_cls(path):
    import torch
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()


def trl_run(init, tok, data, work, center, micro, accum, ad0=None):
    """TRL's per-step metrics (aggregated over the step's micro-batches) and the trainer"""
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer
    torch.manual_seed(0)
    model = load_cls(init)
    if ad0:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, ad0, is_trainable=True)
    rec = []

    class Rec(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training:
                m = self._metrics["train"]
                rec.append(dict({"step": self.state.global_step, "loss": float(loss.detach())},
                                **{k: float(m[k][-1]) for k in KEYS[1:]}))
            return loss

    # the dataset repeated once per step: with the sequential sampler step s
    # trains on exactly the pairs of copy s
    cfg = RewardConfig(output_dir=os.path.join(work, "trl_out"), per_device_train_batch_size=micro,
                       gradient_accumulation_steps=accum, learning_rate=LR, lr_scheduler_type="constant",
                       warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, adam_beta1=0.9, adam_beta2=0.999,
                       adam_epsilon=1e-8, max_steps=STEPS, logging_steps=1, report_to=[], save_strategy="no",
                       center_rewards_coefficient=center, max_length=MAXLEN, gradient_checkpointing=False,
                       bf16=False, use_cpu=True, seed=0, dataloader_drop_last=False, disable_tqdm=True,
                       train_sampling_strategy="sequential")
    tr = Rec(model=model, args=cfg, train_dataset=Dataset.from_list(data * STEPS), processing_class=tok)
    tr.train()
    steps = []
    for s in range(STEPS):
        mb = [r for r in rec if r["step"] == s]
        if not mb:
            break
        steps.append({"loss": sum(r["loss"] for r in mb) / len(mb),
                      "accuracy": sum(r["accuracy"] for r in mb) / len(mb),
                      "margin": sum(r["margin"] for r in mb) / len(mb),
                      "mean_reward": sum(r["mean_reward"] for r in mb) / len(mb),
                      "min_reward": min(r["min_reward"] for r in mb),
                      "max_reward": max(r["max_reward"] for r in mb)})
    return steps, tr


def llamac_run(a, init, work, tag, data, micro, accum, extra):
    d = os.path.join(work, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    path = os.path.join(d, "pairs.jsonl")
    with open(path, "w") as f:
        for p in data:
            f.write(json.dumps(p) + "\n")
    cmd = [a.llamac, "reward", "--model", init, "--tokenizer", os.path.join(init, "tokenizer.json"), "--data", path,
           "--bos", "0", "--packing", "0", "--batch", str(micro), "--seq", str(SEQ), "--max-length", str(MAXLEN),
           "--batch-tokens", str(micro * accum * SEQ), "--steps", str(STEPS), "--lr", str(LR), "--warmup", "0",
           "--lr-min-frac", "1", "--weight-decay", "0", "--beta1", "0.9", "--beta2", "0.999", "--eps", "1e-8",
           "--clip", "0", "--peak-gflops", "1", "--metrics", os.path.join(d, "m.jsonl"), "--ckpt-dir",
           os.path.join(d, "ck"), "--out", os.path.join(d, "rm.h5"), "--hf-out", os.path.join(d, "hf"),
           "--adapter-out", os.path.join(d, "adapter"), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if not check(f"{tag}: llamac reward runs", r.returncode == 0, r.stderr.strip()):
        return None, d
    if not check(f"{tag}: llamac trains on all {len(data)} pairs", f": {len(data)} pairs (" in r.stdout,
                 next((x for x in r.stdout.splitlines() if "pairs (" in x), r.stdout[-300:])):
        return None, d
    rows = [json.loads(x) for x in open(os.path.join(d, "m.jsonl"))]
    return [x for x in rows if "loss" in x and "step" in x and not any(k.startswith("eval_") for k in x)], d


def compare_steps(tag, got, want):
    ok = len(got) == len(want) == STEPS
    worst, where = 0.0, ""
    for s, (g, w) in enumerate(zip(got, want)):
        for k in KEYS:
            if k not in g:
                ok, where = False, f"step {s + 1}: llamac's metrics lack {k}"
                continue
            dv = abs(g[k] - w[k])
            if dv > worst:
                worst, where = dv, f"step {s + 1} {k}: llamac {g[k]:.9g}, TRL {w[k]:.9g}"
    check(f"{tag}: per-step {', '.join(KEYS)} equal TRL's within {TOL} ({len(got)} steps, worst {worst:.2e})",
          ok and worst <= TOL, where if where else f"{len(got)} vs {len(want)} steps")


def max_diff(a, b):
    """the largest |a - b| over the tensors both hold, and its tensor"""
    d = [(float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()), k)
         for k in set(a) & set(b)]
    return max(d, default=(math.inf, "(none)"))


def compare_tensors(tag, what, got, want):
    same = set(got) == set(want)
    worst, where = max_diff(got, want)
    check(f"{tag}: {what} equal TRL's within {TOL} ({len(want)} tensors, worst {worst:.2e})", same and worst <= TOL,
          f"keys differ: {sorted(set(got) ^ set(want))[:4]}" if not same else f"exceeds {TOL} in {where}")


def scores(model, tok, items):
    """TRL's rendering: prompt + completion + EOS as one text; the reward is
    read by transformers at the last token that is not the pad (= EOS)."""
    import torch
    out = []
    with torch.no_grad():
        for it in items:
            ids = tok(it["prompt"] + it["completion"] + EOS)["input_ids"]
            out.append(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))
    return np.array(out)


def llamac_scores(a, spec, work, tag):
    """`llamac score` of HELD with the reward model spec (a directory, or
    BASE+ADAPTER)."""
    held = os.path.join(work, "held.jsonl")
    with open(held, "w") as f:
        for it in HELD:
            f.write(json.dumps(it) + "\n")
    out = os.path.join(work, f"{tag}_scores.jsonl")
    r = subprocess.run([a.llamac, "score", "--reward-model", spec, "--data", held, "--bos", "0", "--out", out],
                       capture_output=True, text=True)
    if not check(f"{tag}: llamac score runs", r.returncode == 0, r.stderr.strip()):
        return np.full(len(HELD), np.nan)
    return np.array([json.loads(x)["reward"] for x in open(out)])


def check_scoring(a, tag, d, tok, ref_model, init, lora):
    """--hf-out through transformers against TRL's model, and llamac score."""
    hf = os.path.join(d, "hf")
    with open(os.path.join(hf, "config.json")) as f:
        cfg = json.load(f)
    check(f"{tag}: --hf-out is a LlamaForSequenceClassification, num_labels 1, pad_token_id {tok.eos_token_id}",
          cfg.get("architectures") == ["LlamaForSequenceClassification"] and len(cfg.get("id2label", {})) == 1
          and cfg.get("pad_token_id") == tok.eos_token_id, f"{cfg.get('architectures')} {cfg.get('pad_token_id')}")
    from safetensors.numpy import load_file
    sd = load_file(os.path.join(hf, "model.safetensors"))
    check(f"{tag}: --hf-out holds score.weight [1, {SPEC['hidden_size']}] and no lm_head",
          "score.weight" in sd and sd["score.weight"].shape == (1, SPEC["hidden_size"]) and
          "lm_head.weight" not in sd, f"{sorted(k for k in sd if 'model.' not in k)}")
    check(f"{tag}: --hf-out carries its tokenizer", os.path.exists(os.path.join(hf, "tokenizer.json")))
    mine = load_cls(hf)
    got, want = scores(mine, tok, HELD), scores(ref_model, tok, HELD)
    err = float(np.abs(got - want).max())
    check(f"{tag}: transformers on --hf-out scores held-out texts as TRL's model (max |diff| {err:.1e})",
          err <= ATOL, f"{got} vs {want}")
    # llamac convert of the --out checkpoint (LoRA: of the initial model with --adapter-out merged, the
    # score head included) to a HF directory gives --hf-out's scores
    conv, src = os.path.join(d, "hf_convert"), os.path.join(d, "rm.h5")
    r = None
    if lora:
        src = os.path.join(d, "merged_by_convert.h5")
        if os.path.exists(src):
            os.remove(src)
        r = subprocess.run([a.llamac, "convert", init, src, "--adapter", os.path.join(d, "adapter")],
                           capture_output=True, text=True)
    if r is None or r.returncode == 0:
        r = subprocess.run([a.llamac, "convert", src, conv, "--force", "--tokenizer",
                            os.path.join(hf, "tokenizer.json")], capture_output=True, text=True)
    what = "convert INIT --adapter, then" if lora else "convert --out"
    if check(f"{tag}: llamac {what} -> HF directory", r.returncode == 0, r.stderr.strip()):
        cs = scores(load_cls(conv), tok, HELD)
        err = float(np.abs(cs - got).max())
        check(f"{tag}: the converted checkpoint scores as --hf-out (max |diff| {err:.1e})", err <= TOL, f"{cs}")
    ls = llamac_scores(a, hf, a.work, tag.replace(" ", "_"))
    err = float(np.abs(ls - got).max())
    check(f"{tag}: llamac score equals transformers on --hf-out within {TOL} (max |diff| {err:.1e})",
          err <= TOL, f"{ls} vs {got}")
    return mine


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_reward_ref")
    ap.add_argument("--trl-only", action="store_true", help="run and print TRL's side only (no llamac)")
    ap.add_argument("--cases", default="", help="run only the cases whose tag contains this text")
    a = ap.parse_args()
    a.llamac = os.path.abspath(a.llamac)
    os.makedirs(a.work, exist_ok=True)
    import datasets
    import torch
    from safetensors.numpy import load_file
    from test_chat_ref import train_tokenizer
    datasets.disable_progress_bars()
    tpath = os.path.join(a.work, "tokenizer.json")
    train_tokenizer(tpath)
    tok = hf_tokenizer(tpath)
    init = os.path.join(a.work, "init")
    shutil.rmtree(init, ignore_errors=True)
    build_base(init, tok)
    margin_pairs = [dict(p, margin=m) for p, m in zip(PAIRS, MARGINS)]

    # the data as TRL prepares it: every pair kept, every sequence within MAXLEN
    lens = [len(tok(p["prompt"] + p[s] + EOS)["input_ids"]) for p in PAIRS for s in ("chosen", "rejected")]
    check(f"{len(PAIRS)} pairs, sequences of {min(lens)}..{max(lens)} tokens (within --max-length {MAXLEN})",
          max(lens) <= MAXLEN, f"{max(lens)}")

    # LoRA: the initial adapter from PEFT (SEQ_CLS: the score head a trained copy)
    from peft import LoraConfig, get_peft_model
    ad0 = os.path.join(a.work, "ad0")
    shutil.rmtree(ad0, ignore_errors=True)
    torch.manual_seed(1)
    pm = get_peft_model(load_cls(init), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                   task_type="SEQ_CLS", target_modules=LORA_TARGETS,
                                                   modules_to_save=["score"]))
    pm.save_pretrained(ad0)
    ad0_keys = sorted(load_file(os.path.join(ad0, "adapter_model.safetensors")))
    check("PEFT saves the trained head as base_model.model.score.weight",
          "base_model.model.score.weight" in ad0_keys, f"{[k for k in ad0_keys if 'lora' not in k]}")

    n = len(PAIRS)
    cases = [  # tag, data, center, micro, accum, lora, llamac flags
        ("full", PAIRS, None, n, 1, False, []),
        ("full center", PAIRS, 0.01, n, 1, False, ["--center-rewards-coefficient", "0.01"]),
        ("full margin", margin_pairs, None, n, 1, False, []),
        ("full accum", PAIRS, None, n // 3, 3, False, []),
        ("lora", PAIRS, None, n, 1, True, ["--lora-init", ad0]),
        ("lora center margin", margin_pairs, 0.01, n, 1, True, ["--lora-init", ad0, "--center-rewards-coefficient",
                                                                 "0.01"]),
    ]
    for tag, data, center, micro, accum, lora, extra in cases:
        if a.cases not in tag:
            continue
        want, tr = trl_run(init, tok, data, a.work, center, micro, accum, ad0 if lora else None)
        print(f"== {tag}: TRL per step")
        for s, w in enumerate(want):
            print(f"  {s + 1:2d} " + " ".join(f"{k} {w[k]:.7f}" for k in KEYS))
        check(f"{tag}: TRL's loss moves (step 1 {want[0]['loss']:.5f}, step {len(want)} {want[-1]['loss']:.5f})",
              len(want) == STEPS and abs(want[-1]["loss"] - want[0]["loss"]) > 1e-3)
        if a.trl_only:
            continue
        got, d = llamac_run(a, init, a.work, tag.replace(" ", "_"), data, micro, accum, extra)
        if got is None:
            continue
        compare_steps(tag, got, want)
        if lora:
            tdir = os.path.join(a.work, "trl_adapter_" + tag.replace(" ", "_"))
            shutil.rmtree(tdir, ignore_errors=True)
            tr.model.save_pretrained(tdir)
            compare_tensors(tag, f"adapters and score head after {STEPS} steps (--adapter-out)",
                            load_file(os.path.join(d, "adapter", "adapter_model.safetensors")),
                            load_file(os.path.join(tdir, "adapter_model.safetensors")))
            with open(os.path.join(d, "adapter", "adapter_config.json")) as f:
                acfg = json.load(f)
            check(f"{tag}: --adapter-out's config says SEQ_CLS with the score head",
                  acfg.get("task_type") == "SEQ_CLS" and "score" in (acfg.get("modules_to_save") or []), f"{acfg}")
            merged = {k: v.detach().numpy() for k, v in tr.model.merge_and_unload().state_dict().items()}
            compare_tensors(tag, "merged weights (--hf-out vs merge_and_unload)",
                            load_file(os.path.join(d, "hf", "model.safetensors")), merged)
            ref = tr.model.eval()
        else:
            sd = {k: v.detach().numpy() for k, v in tr.model.state_dict().items()}
            compare_tensors(tag, f"every weight after {STEPS} steps (--hf-out)",
                            load_file(os.path.join(d, "hf", "model.safetensors")), sd)
            ref = tr.model.eval()
        mine = check_scoring(a, tag, d, tok, ref, init, lora)
        if lora:  # PEFT reads llamac's adapter (the head under its key) onto the initial model
            from peft import PeftModel
            pl = PeftModel.from_pretrained(load_cls(init), os.path.join(d, "adapter")).eval()
            got_s, want_s = scores(pl, tok, HELD), scores(mine, tok, HELD)
            err = float(np.abs(got_s - want_s).max())
            check(f"{tag}: PeftModel.from_pretrained(llamac's adapter) scores as the merged --hf-out "
                  f"(max |diff| {err:.1e})", err <= ATOL, f"{got_s} vs {want_s}")
            ls = llamac_scores(a, f"{init}+{os.path.join(d, 'adapter')}", a.work, tag.replace(" ", "_") + "_peft")
            err = float(np.abs(ls - got_s).max())
            check(f"{tag}: llamac score --reward-model INIT+ADAPTER equals PEFT on it within {TOL} (max |diff| "
                  f"{err:.1e})", err <= TOL, f"{ls} vs {got_s}")
    return summary("test_reward_ref")


if __name__ == "__main__":
    sys.exit(main())
