#!/usr/bin/env python3
"""`llamac dpo` against TRL's DPOTrainer (run by scripts/test_ref.sh).

What: a tiny random Llama from transformers (saved as a Hugging Face
directory), a byte-level BPE tokenizer.json (scripts/test_chat_ref.py's),
four preference pairs (TRL's standard format: prompt, chosen, rejected
strings). Both sides train 10 steps on the same pairs, one batch of all
four per step (so the data order cannot differ), lr constant, no weight
decay, no clipping, torch's AdamW defaults (beta2 0.999, eps 1e-8):

  tokens   `llamac dpo --dump` equals TRL's tokenized dataset (prompt_ids +
           chosen_ids, and the completion mask);
  LoRA     PEFT adapters (r 4, alpha 8, every linear; the initial adapter
           saved by PEFT and given to llamac as --lora-init), the reference
           being the base with the adapters off on both sides;
  full     every weight trained, the reference a frozen copy (TRL's
           ref_model=None copy; llamac's frozen copy);
  cache    full again with llamac's --ref-cache (TRL: precompute_ref_log_probs);

per step: the loss, rewards/chosen, rewards/rejected, rewards/margins,
rewards/accuracies, logps/chosen, logps/rejected, logits/chosen,
logits/rejected equal within TOL; after 10 steps the adapters (LoRA) or
every weight (full) equal within TOL; each loss type (sigmoid with label
smoothing 0, robust with 0.2, ipo, hinge) on the LoRA case.

TRL 1.16.0 is after v0.29: its "sigmoid" loss is -logsigmoid(beta * h) and
ignores label_smoothing (the conservative form -(1-ls) logsigmoid(beta h) -
ls logsigmoid(-beta h), which llamac's sigmoid computes, was TRL's up to
v0.28 and is torchtune's); so label smoothing is compared on "robust",
whose formula TRL 1.16 keeps, and sigmoid at ls = 0 where both agree.

Prints PASS/FAIL per check and "test_dpo_ref: N passed, M failed"; exit 1 on
any failure.
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

TOL = 1e-5
STEPS = 10
LR = 5e-4
BETA = 0.1
KEYS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
        "logps/rejected", "logits/chosen", "logits/rejected"]
SPEC = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, max_position_embeddings=128, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)
PAIRS = [
    {"prompt": "What colour is the sky?", "chosen": " It is blue.", "rejected": " It is green, I think."},
    {"prompt": "Hello there, how are you", "chosen": " Fine, thanks.", "rejected": " Go away."},
    {"prompt": "You are helpful. Name a fox", "chosen": " The quick brown fox.", "rejected": " A lazy dog."},
    {"prompt": "assistant user system", "chosen": " system", "rejected": " user assistant user"},
]


def build_base(path, vocab):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**SPEC, vocab_size=vocab, attention_bias=False, mlp_bias=False, hidden_act="silu",
                      use_cache=False)
    torch.manual_seed(5)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the 0.02 init, so the steps move the log-probabilities
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    m.save_pretrained(path, safe_serialization=True)


def trl_run(base, tpath, data, work, loss_type, ls, lora, precompute, ad0=None):
    """TRL's per-step metrics and the trained model"""
    import torch
    from datasets import Dataset
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer
    torch.manual_seed(0)
    tok = PreTrainedTokenizerFast(tokenizer_file=tpath, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                  pad_token="<|end_of_text|>")
    model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
    if lora:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, ad0, is_trainable=True)
    rec = []

    class Rec(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training:
                m = self._metrics["train"]
                rec.append(dict({"loss": float(loss.detach())}, **{k: float(m[k][-1]) for k in KEYS}))
            return loss

    cfg = DPOConfig(output_dir=os.path.join(work, "trl_out"), per_device_train_batch_size=len(data),
                    gradient_accumulation_steps=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
                    weight_decay=0.0, max_grad_norm=0.0, max_steps=STEPS, logging_steps=1, report_to=[],
                    save_strategy="no", beta=BETA, loss_type=[loss_type], label_smoothing=ls, max_length=64,
                    gradient_checkpointing=False, bf16=False, use_cpu=True, seed=0, dataloader_drop_last=False,
                    precompute_ref_log_probs=precompute, disable_tqdm=True)
    tr = Rec(model=model, args=cfg, train_dataset=Dataset.from_list(data), processing_class=tok)
    tr.train()
    return rec, tr


def llamac_run(a, base, tpath, work, tag, extra):
    d = os.path.join(work, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cmd = [a.llamac, "dpo", "--model", base, "--tokenizer", tpath, "--data", os.path.join(work, "pairs.jsonl"),
           "--bos", "0", "--packing", "0", "--batch", str(len(PAIRS)), "--seq", "64", "--max-length", "33",
           "--steps", str(STEPS), "--lr", str(LR), "--warmup", "0", "--lr-min-frac", "1", "--weight-decay", "0",
           "--beta2", "0.999", "--eps", "1e-8", "--clip", "0", "--beta", str(BETA), "--peak-gflops", "1",
           "--metrics", os.path.join(d, "m.jsonl"), "--ckpt-dir", os.path.join(d, "ck"), "--out",
           os.path.join(d, "out.h5"), "--adapter-out", os.path.join(d, "adapter"), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if not check(f"{tag}: llamac dpo runs", r.returncode == 0, r.stderr.strip()):
        return None, d
    rows = [json.loads(x) for x in open(os.path.join(d, "m.jsonl")) if '"loss"' in x]
    return rows, d


def compare_steps(tag, got, want):
    ok = len(got) == len(want) == STEPS
    worst, where = 0.0, ""
    for s, (g, w) in enumerate(zip(got, want)):
        for k in ["loss"] + KEYS:
            dv = abs(g[k] - w[k])
            if dv > worst:
                worst, where = dv, f"step {s + 1} {k}: llamac {g[k]:.9g}, TRL {w[k]:.9g}"
    check(f"{tag}: per-step loss, rewards, logps, logits equal TRL's within {TOL} ({len(got)} steps, "
          f"worst {worst:.2e})", ok and worst <= TOL, where if ok else f"{len(got)} vs {len(want)} steps")
    if ok:
        check(f"{tag}: the loss moves (step 1 {want[0]['loss']:.5f}, step {STEPS} {want[-1]['loss']:.5f})",
              abs(want[-1]["loss"] - want[0]["loss"]) > 1e-3, "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_dpo_ref")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    import torch
    from safetensors.numpy import load_file
    from test_chat_ref import train_tokenizer
    tpath = os.path.join(a.work, "tokenizer.json")
    tok = train_tokenizer(tpath)
    base = os.path.join(a.work, "base")
    build_base(base, tok.get_vocab_size())
    with open(os.path.join(a.work, "pairs.jsonl"), "w") as f:
        for p in PAIRS:
            f.write(json.dumps(p) + "\n")

    # tokens: llamac's pairs against TRL's tokenized dataset
    dump = os.path.join(a.work, "dump.jsonl")
    r = subprocess.run([a.llamac, "dpo", "--model", base, "--tokenizer", tpath, "--data",
                        os.path.join(a.work, "pairs.jsonl"), "--bos", "0", "--seq", "64", "--dump", dump],
                       capture_output=True, text=True)
    if check("llamac dpo --dump runs", r.returncode == 0, r.stderr.strip()):
        from datasets import Dataset
        from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
        from trl import DPOConfig, DPOTrainer
        hft = PreTrainedTokenizerFast(tokenizer_file=tpath, bos_token="<|begin_of_text|>",
                                      eos_token="<|end_of_text|>", pad_token="<|end_of_text|>")
        t = DPOTrainer(model=LlamaForCausalLM.from_pretrained(base), processing_class=hft,
                       args=DPOConfig(output_dir=os.path.join(a.work, "trl_tok"), report_to=[], use_cpu=True,
                                      bf16=False, gradient_checkpointing=False),
                       train_dataset=Dataset.from_list(PAIRS))
        got = [json.loads(x) for x in open(dump)]
        for i, (g, w) in enumerate(zip(got, t.train_dataset)):
            for side in ("chosen", "rejected"):
                ids = list(w["prompt_ids"]) + list(w[side + "_ids"])
                mask = [0] * len(w["prompt_ids"]) + [1] * len(w[side + "_ids"])
                check(f"pair {i} {side}: ids and completion mask equal TRL's ({len(ids)} tokens)",
                      g[side] == ids and g[side + "_mask"] == mask,
                      f"\n  llamac {g[side]} {g[side + '_mask']}\n  TRL    {ids} {mask}")
        check("as many pairs as TRL", len(got) == len(t.train_dataset) == len(PAIRS), f"{len(got)}")

    # LoRA: the initial adapter from PEFT, for both sides
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM
    ad0 = os.path.join(a.work, "ad0")
    torch.manual_seed(1)
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(base, dtype=torch.float32),
                        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                                   target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"]))
    pm.save_pretrained(ad0)
    for loss_type, ls in (("sigmoid", 0.0), ("robust", 0.2), ("ipo", 0.0), ("hinge", 0.0)):
        tag = f"lora {loss_type}" + (f" ls {ls}" if ls else "")
        want, tr = trl_run(base, tpath, PAIRS, a.work, loss_type, ls, True, False, ad0)
        got, d = llamac_run(a, base, tpath, a.work, tag.replace(" ", "_"),
                            ["--lora-init", ad0, "--loss-type", loss_type, "--label-smoothing", str(ls)])
        if got is None:
            continue
        compare_steps(tag, got, want)
        if loss_type != "sigmoid":
            continue
        tdir = os.path.join(a.work, "trl_adapter")
        tr.model.save_pretrained(tdir)
        tw, lw = load_file(os.path.join(tdir, "adapter_model.safetensors")), \
            load_file(os.path.join(d, "adapter", "adapter_model.safetensors"))
        worst = max((float(np.abs(tw[k] - lw[k]).max()) for k in tw if k in lw), default=math.inf)
        check(f"{tag}: the adapters after {STEPS} steps equal TRL's within {TOL} ({len(tw)} tensors, worst "
              f"{worst:.2e})", set(tw) == set(lw) and worst <= TOL, f"keys {sorted(set(tw) ^ set(lw))[:4]}")

    # full fine-tuning: a frozen copy, then the reference cache
    import h5py
    for tag, extra, pre in (("full", [], False), ("full --ref-cache", ["--ref-cache", os.path.join(a.work, "ref.bin")], True)):
        if pre and os.path.exists(os.path.join(a.work, "ref.bin")):
            os.remove(os.path.join(a.work, "ref.bin"))
        want, tr = trl_run(base, tpath, PAIRS, a.work, "sigmoid", 0.0, False, pre)
        got, d = llamac_run(a, base, tpath, a.work, tag.replace(" ", "_").replace("-", ""), extra)
        if got is None:
            continue
        compare_steps(tag, got, want)
        sd = {k: v.detach().numpy() for k, v in tr.model.state_dict().items()}
        worst, n = 0.0, 0
        with h5py.File(os.path.join(d, "out.h5"), "r") as f:
            for k, v in sd.items():
                if "model/" + k in f:
                    worst = max(worst, float(np.abs(f["model/" + k][...] - v).max()))
                    n += 1
        check(f"{tag}: every weight after {STEPS} steps equals TRL's within {TOL} ({n} tensors, worst {worst:.2e})",
              n == len(sd) and worst <= TOL, f"{n} of {len(sd)} tensors found")
    return summary("test_dpo_ref")


if __name__ == "__main__":
    sys.exit(main())
