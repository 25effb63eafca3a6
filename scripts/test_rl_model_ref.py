#!/usr/bin/env python3
"""`llamac rl` end to end against TRL 1.16's GRPO, RLOO and online DPO trainers
(run by scripts/test_ref.sh).

    python scripts/test_rl_model_ref.py [--llamac build/llamac] [--work build/test_rl_model_ref] [--only TAG]

What: a tiny random Llama from transformers (saved as a Hugging Face
directory, as scripts/test_dpo_ref.py's), its byte-level BPE tokenizer
(scripts/test_chat_ref.py's), two prompts, and per case a fixed-rollouts
file of 3 rollouts (2 prompts x G completions of 1 to MAX_TOKENS tokens,
some ending with EOS, fixed rewards with ties and distinct values). Sampling
is bypassed on both sides: `llamac rl --fixed-rollouts`; TRL's own trainers
with their generation replaced by the same completions (GRPOTrainer:
its rollout_func hook; RLOOTrainer: _generate; OnlineDPOTrainer: _generate),
the rewards a reward function returning the file's. Both train 3 steps (one
rollout a step: one mini-batch, one iteration, one micro-batch per optimizer
step on both sides) from the same weights and LoRA adapter (r 4, alpha 8,
every linear, dropout 0; PEFT's initial adapter with lora_B redrawn nonzero,
so the adapters matter from step 1 and the reference, the adapters off,
differs from the policy; llamac reads it with --lora-init), lr 1e-3 constant,
no warmup, no weight decay, no clipping, torch's AdamW (beta2 0.999, eps
ADAM_EPS: see its comment).

Per case: llamac's advantages (--rollouts-out) equal TRL's, its per-step
loss (--metrics) TRL's, and the adapters after 3 steps TRL's, each within
TOL absolute (values of order 1; float32 forward and backward on both sides,
whose rounding differences stay near 1e-7; AdamW's first steps move each
weight by about lr whatever its gradient's size, so an adapter difference of
TOL is a 1% disagreement on a step's direction).

Cases: GRPO loss_type dapo, grpo, bnpo, dr_grpo at beta 0; dapo at beta 0.04
(reference: the adapters off, KL times the ratio as TRL's default
use_bias_correction_kl); temperature 0.7 at beta 0 and 0.04; RLOO at beta
0.05 (its summed-k1 reward shaping) and 0; online DPO (sigmoid, beta 0.1).

TRL's reference is set to llamac's: given a PeftModel (a pretrained adapter,
as here) TRL 1.16 makes the reference the initial adapter (GRPO and RLOO with
beta != 0: a frozen "ref" copy of it; online DPO: a copy of the whole model),
while llamac's is always the adapters off (TRL's choice for a fresh adapter
made from peft_config); so the script deletes TRL's "ref" adapter / ref_model
and TRL disables the adapters. With ratio 1 (one iteration) the GRPO
loss_type grpo and RLOO losses are 0 up to rounding (the advantages of a
group sum to 0); there the adapters carry the check.

The metrics llamac logs under TRL's names are compared too; two differ
(failing checks, cmd_rl.c rl_extra): reward_std is the mean of the groups'
stds in llamac, TRL 1.16's is the std of the whole batch's rewards (nanstd);
RLOO's frac_reward_zero_std is TRL's on the KL-shaped rewards (a tied group
is no longer tied at beta != 0), llamac's on the raw rewards.

Layout choices that keep the two sides' inputs identical, not llamac
semantics: the prompts have the same length (TRL left-pads prompts and passes
no position ids, so a shorter prompt's positions would start past 0; llamac
starts every sequence at 0), and no completion holds EOS before its end (TRL
trains the ids it is given; its generation would cut at the first EOS).

Prints PASS/FAIL per check and "test_rl_model_ref: N passed, M failed"; exit 1
on any failure.
"""

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from refcheck import check, summary  # noqa: E402
from test_dpo_ref import SPEC, build_base  # noqa: E402  (the same tiny Llama as the DPO check)

TOL = 1e-5
STEPS = 3
LR = 1e-3
# AdamW's epsilon on both sides, not torch's 1e-8: AdamW's first step is lr g / (|g| + eps), so a gradient
# component that cancels to near 0 turns float32 rounding into a step difference of lr x rounding / eps
# (seen with 1e-8: grpo dr_grpo, layers.1 k_proj lora_A, g = 1.2e-9 in a tensor up to 3e-3, rounding near
# 3e-10, adapters 3.8e-5 apart); 1e-6 bounds that to 3e-7 and leaves every other step as Adam's (|g| >> 1e-6)
ADAM_EPS = 1e-6
P = 2
MAX_TOKENS = 8
PROMPT_LEN = 5
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EOS = "<|end_of_text|>"

# metrics both log per step (TRL 1.16's names, which llamac rl uses)
METRICS = ["grad_norm", "reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
           "completions/min_length", "completions/max_length", "completions/clipped_ratio", "clip_ratio/low_mean",
           "clip_ratio/high_mean", "clip_ratio/region_mean", "kl"]

# tag, algo, G, beta, loss type, temperature
CASES = [
    ("grpo dapo", "grpo", 3, 0.0, "dapo", 1.0),
    ("grpo grpo", "grpo", 3, 0.0, "grpo", 1.0),
    ("grpo bnpo", "grpo", 3, 0.0, "bnpo", 1.0),
    ("grpo dr_grpo", "grpo", 3, 0.0, "dr_grpo", 1.0),
    ("grpo dapo beta 0.04", "grpo", 3, 0.04, "dapo", 1.0),
    ("grpo dapo temperature 0.7", "grpo", 4, 0.0, "dapo", 0.7),
    ("grpo dapo beta 0.04 temperature 0.7", "grpo", 4, 0.04, "dapo", 0.7),
    ("rloo beta 0.05", "rloo", 3, 0.05, None, 1.0),
    ("rloo beta 0", "rloo", 3, 0.0, None, 1.0),
    ("online-dpo sigmoid", "online-dpo", 2, 0.1, "sigmoid", 1.0),
]


def build_adapter(base, path):
    """PEFT's initial adapter with lora_B redrawn (PEFT's own init has B = 0)"""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM
    torch.manual_seed(1)
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(base, dtype=torch.float32),
                        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                                   target_modules=TARGETS))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    pm.save_pretrained(path)


def make_rollouts(G, seed, vocab, eos, n_special):
    """STEPS rollouts of P prompts x G: lines in llamac's order (sample p * G + j)"""
    rng = random.Random(seed)
    reward_sets = [[1.0, 0.5, 0.5, -0.25], [0.75, -1.0, 0.0, 2.0], [0.25, 0.25, 0.25, 0.25]]
    rolls = []
    for r in range(STEPS):
        order = [0, 1] if r % 2 == 0 else [1, 0]
        lines = []
        for q, pi in enumerate(order):
            # ties and distinct values; the last rollout's second group all tied (GRPO advantage 0)
            rw = list(reward_sets[2] if (r == STEPS - 1 and q == 1) else reward_sets[(r + q) % 2])[:G]
            rng.shuffle(rw)
            lens = rng.sample(range(1, MAX_TOKENS + 1), G)
            for j in range(G):
                ids = [rng.randrange(n_special, vocab) for _ in range(lens[j])]
                if (r + q + j) % 2 == 0:
                    ids[-1] = eos
                lines.append({"prompt_index": pi, "completion_ids": ids, "reward": rw[j]})
        rolls.append(lines)
    return rolls


class Feed:
    """The fixed rollouts handed to TRL one rollout per generation call"""

    def __init__(self, rolls, prompt_ids):
        self.rolls, self.prompt_ids, self.n, self.rewards = rolls, prompt_ids, 0, None

    def next(self):
        lines = self.rolls[self.n]
        self.n += 1
        self.rewards = [x["reward"] for x in lines]
        return lines

    def reward(self, completions, **kw):
        assert len(completions) == len(self.rewards)
        return list(self.rewards)


def trl_run(case, base, ad0, tpath, rolls, prompt_ids, work):
    """TRL's per-step losses, advantages per rollout, and the trained PeftModel"""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
    tag, algo, G, beta, loss_type, temp = case
    torch.manual_seed(0)
    tok = PreTrainedTokenizerFast(tokenizer_file=tpath, bos_token="<|begin_of_text|>", eos_token=EOS, pad_token=EOS)
    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base, dtype=torch.float32), ad0,
                                      is_trainable=True)
    feed = Feed(rolls, prompt_ids)
    losses, advs, mlogs = [], [], []
    data = Dataset.from_list([{"prompt": f"prompt {i}"} for i in range(P)])
    common = dict(output_dir=os.path.join(work, "trl_out"), learning_rate=LR, lr_scheduler_type="constant",
                  warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, adam_beta1=0.9, adam_beta2=0.999,
                  adam_epsilon=ADAM_EPS, optim="adamw_torch", max_steps=STEPS, gradient_accumulation_steps=1,
                  logging_steps=1, report_to=[], save_strategy="no", gradient_checkpointing=False, bf16=False,
                  use_cpu=True, seed=0, disable_tqdm=True, beta=beta)

    def record(cls):
        class Rec(cls):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                losses.append(float(loss.detach()))
                return loss

            def log(self, logs, start_time=None):
                super().log(logs, start_time)  # GRPO's and RLOO's log add their metrics to logs
                if "loss" in logs:
                    mlogs.append(dict(logs))

            def _generate_and_score_completions(self, inputs):
                out = super()._generate_and_score_completions(inputs)
                advs.append([float(x) for x in out["advantages"].reshape(-1)])
                return out
        return Rec

    if algo == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        def rollout_func(prompts, trainer):  # TRL's hook for custom generation
            lines = feed.next()
            assert len(prompts) == len(lines)
            return {"prompt_ids": [list(prompt_ids[x["prompt_index"]]) for x in lines],
                    "completion_ids": [list(x["completion_ids"]) for x in lines], "logprobs": None}

        cfg = GRPOConfig(**common, per_device_train_batch_size=P * G, num_generations=G, steps_per_generation=1,
                         num_iterations=1, loss_type=loss_type, temperature=temp, max_completion_length=MAX_TOKENS,
                         scale_rewards="group", epsilon=0.2, mask_truncated_completions=False)
        tr = record(GRPOTrainer)(model=model, reward_funcs=feed.reward, args=cfg, train_dataset=data,
                                 processing_class=tok, rollout_func=rollout_func)
    elif algo == "rloo":
        from trl import RLOOConfig, RLOOTrainer
        Base = record(RLOOTrainer)

        class Fixed(Base):
            def _generate(self, prompts):
                lines = feed.next()
                assert len(prompts) == len(lines)
                cids = [list(x["completion_ids"]) for x in lines]
                return ([list(prompt_ids[x["prompt_index"]]) for x in lines], cids,
                        self.processing_class.batch_decode(cids, skip_special_tokens=True))

        cfg = RLOOConfig(**common, per_device_train_batch_size=P * G, num_generations=G, steps_per_generation=1,
                         num_iterations=1, temperature=temp, max_completion_length=MAX_TOKENS, epsilon=0.2,
                         normalize_advantages=False, mask_truncated_completions=False)
        tr = Fixed(model=model, reward_funcs=feed.reward, args=cfg, train_dataset=data, processing_class=tok)
    else:
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        class Fixed(OnlineDPOTrainer):
            def _generate(self, model, prompts, images=None):
                # TRL's layout: rows [p0, p1, p0, p1], pair i = (i, i + P); llamac's file: p0s0 p0s1 p1s0 p1s1
                lines = feed.next()
                pairs = [lines[2 * q:2 * q + 2] for q in range(P)]
                rows = [pairs[q][0] for q in range(P)] + [pairs[q][1] for q in range(P)]
                feed.rewards = [x["reward"] for x in rows]
                pid = torch.tensor([prompt_ids[x["prompt_index"]] for x in rows])
                n = max(len(x["completion_ids"]) for x in rows)
                cid = torch.full((len(rows), n), tok.pad_token_id, dtype=torch.long)
                cm = torch.zeros((len(rows), n), dtype=torch.long)
                for i, x in enumerate(rows):
                    cid[i, :len(x["completion_ids"])] = torch.tensor(x["completion_ids"])
                    cm[i, :len(x["completion_ids"])] = 1
                return pid, torch.ones_like(pid), cid, cm, None

            def training_step(self, model, inputs, num_items_in_batch=None):
                loss = super().training_step(model, inputs, num_items_in_batch)
                losses.append(float(loss))
                return loss

        cfg = OnlineDPOConfig(**common, per_device_train_batch_size=P, loss_type=loss_type, max_length=512,
                              max_new_tokens=MAX_TOKENS, temperature=temp)
        tr = Fixed(model=model, reward_funcs=feed.reward, args=cfg, train_dataset=data, processing_class=tok)
    # TRL 1.16 given a PeftModel (a pretrained adapter) makes the reference the initial adapter: GRPO and RLOO
    # with beta != 0 copy it into a frozen "ref" adapter, online DPO copies the whole model; llamac's reference
    # is the adapters off, TRL's own choice for a fresh adapter (peft_config), so TRL is set to that
    if "ref" in tr.model.peft_config:
        tr.model.delete_adapter("ref")
    if algo == "online-dpo":
        tr.ref_model = None
    tr.train()
    return losses, advs, mlogs, tr


def llamac_run(a, case, base, tpath, prompts, fixed, d):
    tag, algo, G, beta, loss_type, temp = case
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cmd = [a.llamac, "rl", "--algo", algo, "--policy", base, "--tokenizer", tpath, "--prompts", prompts,
           "--fixed-rollouts", fixed, "--group", str(G), "--prompts-per-step", str(P), "--mini-batches", "1",
           "--num-iterations", "1", "--beta", str(beta), "--temperature", str(temp), "--max-tokens", str(MAX_TOKENS),
           "--lora-init", os.path.join(os.path.dirname(d), "ad0"), "--lora-dropout", "0",
           "--steps", str(STEPS), "--lr", str(LR), "--warmup", "0", "--lr-min-frac", "1", "--weight-decay", "0",
           "--beta1", "0.9", "--beta2", "0.999", "--eps", str(ADAM_EPS), "--clip", "0", "--peak-gflops", "1",
           "--batch", "8", "--val-every", "0", "--metrics", os.path.join(d, "m.jsonl"),
           "--rollouts-out", os.path.join(d, "rollouts.jsonl"), "--ckpt-dir", os.path.join(d, "ck"),
           "--out", os.path.join(d, "out.h5"), "--adapter-out", os.path.join(d, "adapter")]
    if loss_type:
        cmd += ["--loss-type", loss_type]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if not check(f"{tag}: llamac rl runs", r.returncode == 0, (r.stderr or r.stdout).strip()[-2000:]):
        return None, None, None
    rows = [json.loads(x) for x in open(os.path.join(d, "m.jsonl"))]
    losses = [x["loss"] for x in rows if "loss" in x and "val_loss" not in x]
    dump = [json.loads(x) for x in open(os.path.join(d, "rollouts.jsonl"))]
    advs = [[x["advantage"] for x in dump if x["rollout"] == r] for r in range(STEPS)]
    return losses, advs, [x for x in rows if "loss" in x and "val_loss" not in x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_rl_model_ref")
    ap.add_argument("--only", default=None, help="run the cases whose tag starts with this")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from safetensors.numpy import load_file
    from test_chat_ref import train_tokenizer
    tpath = os.path.join(a.work, "tokenizer.json")
    tok = train_tokenizer(tpath)
    vocab, eos = tok.get_vocab_size(), tok.token_to_id(EOS)
    n_special = 1 + max(tok.token_to_id(s) for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                                      "<|begin_of_text|>", EOS, "<|start_header_id|>",
                                                      "<|end_header_id|>", "<|eot_id|>"))
    base = os.path.join(a.work, "base")
    build_base(base, vocab)
    ad0 = os.path.join(a.work, "ad0")
    build_adapter(base, ad0)
    rng = random.Random(3)
    prompt_ids = [[rng.randrange(n_special, vocab) for _ in range(PROMPT_LEN)] for _ in range(P)]
    prompts = os.path.join(a.work, "prompts.jsonl")
    with open(prompts, "w") as f:
        for ids in prompt_ids:
            f.write(json.dumps({"prompt_ids": ids}) + "\n")

    for ci, case in enumerate(CASES):
        tag, algo, G = case[0], case[1], case[2]
        if a.only and not tag.startswith(a.only):
            continue
        d = os.path.join(a.work, tag.replace(" ", "_"))
        rolls = make_rollouts(G, 100 + ci, vocab, eos, n_special)
        fixed = d + ".fixed.jsonl"
        with open(fixed, "w") as f:
            for lines in rolls:
                for x in lines:
                    f.write(json.dumps(x) + "\n")
        got, gadv, glog = llamac_run(a, case, base, tpath, prompts, fixed, d)
        if got is None:
            continue
        want, wadv, wlog, tr = trl_run(case, base, ad0, tpath, rolls, prompt_ids, a.work)
        if algo != "online-dpo":
            ok = len(gadv) == len(wadv) == STEPS and all(len(g) == len(w) for g, w in zip(gadv, wadv))
            worst = max((abs(x - y) for g, w in zip(gadv, wadv) for x, y in zip(g, w)), default=math.inf)
            check(f"{tag}: advantages of {STEPS} rollouts equal TRL's within {TOL} (worst {worst:.2e})",
                  ok and worst <= TOL, f"\n  llamac {gadv}\n  TRL    {wadv}")
        if algo != "online-dpo":  # the metrics llamac logs under TRL's names (llamac writes them with %.6f)
            bad, n = [], 0
            for s, (g, w) in enumerate(zip(glog, wlog)):
                for k in METRICS:
                    if k in g and k in w:
                        n += 1
                        tol = 5e-4 if k.endswith("_length") else TOL  # llamac writes lengths with %.3f
                        if abs(g[k] - float(w[k])) > tol:
                            bad.append(f"step {s + 1} {k}: llamac {g[k]}, TRL {float(w[k]):.6g}")
            check(f"{tag}: {n} logged metrics of {len(glog)} steps equal TRL's within {TOL} (lengths 5e-4)",
                  not bad and n > 0 and len(glog) == len(wlog) == STEPS, "; ".join(bad[:4]))
        ok = len(got) == len(want) == STEPS
        diffs = [abs(g - w) for g, w in zip(got, want)]
        worst = max(diffs, default=math.inf)
        check(f"{tag}: per-step loss equals TRL's within {TOL} (worst {worst:.2e})", ok and worst <= TOL,
              f"\n  llamac {got}\n  TRL    {want}")
        tdir = os.path.join(d, "trl_adapter")
        tr.model.save_pretrained(tdir)
        tw = load_file(os.path.join(tdir, "adapter_model.safetensors"))
        lw = load_file(os.path.join(d, "adapter", "adapter_model.safetensors"))
        w0 = load_file(os.path.join(ad0, "adapter_model.safetensors"))
        worst = max((float(np.abs(tw[k] - lw[k]).max()) for k in tw if k in lw), default=math.inf)
        moved = max((float(np.abs(tw[k] - w0[k]).max()) for k in tw if k in w0), default=0.0)
        check(f"{tag}: the adapters after {STEPS} steps equal TRL's within {TOL} ({len(tw)} tensors, worst "
              f"{worst:.2e}; moved up to {moved:.2e})", set(tw) == set(lw) and worst <= TOL and moved > 10 * TOL,
              f"keys {sorted(set(tw) ^ set(lw))[:4]}")
        print(f"  {tag}: loss llamac {[f'{x:.8f}' for x in got]} TRL {[f'{x:.8f}' for x in want]}")
    return summary("test_rl_model_ref")


if __name__ == "__main__":
    sys.exit(main())
