#!/usr/bin/env python3
"""The sampling engine against transformers and llamac's own full forward,
on SmolLM2-135M-Instruct (run by scripts/test_ref.sh).

  1. log-probabilities: `llamac sample` (temperature 0.7, top-p 0.9, two
     samples of six chat prompts, --logprobs-t1) writes each sampled token's
     log softmax(logits / 0.7) and at temperature 1. The same ids teacher-
     forced through transformers' LlamaForCausalLM (float32, the weights
     `llamac convert` writes) give the reference, and so does `llamac
     logits` (llamac's training forward, OpenBLAS GEMMs): the engine sums
     in another order (one fused multiply-add chain per output), so the
     difference is float32 rounding over 30 layers, compared relative to
     the size of the logits.
  2. every sampled token lies in the set transformers' processors keep
     (RepetitionPenalty, Temperature, TopK, TopP, MinP in generate's order)
     for a run with all four on.
  3. greedy ids equal transformers' generate(do_sample=False) for 48 tokens.

Prints PASS/FAIL per check and "test_sample_ref: N passed, M failed".
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from refcheck import check, summary  # noqa: E402

# Against transformers: the logits differ by ~1e-4 over 30 float32 layers
# (test_gguf.py's LOGIT_ATOL); a log-probability moves by about as much.
LOGPROB_ATOL_HF = 2e-3
# Against llamac's own forward: relative to the largest |logit| (~30), the
# issue's 1e-5.
LOGIT_RTOL_SELF = 1e-5

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Give one word that rhymes with cat.",
    "Explain in one sentence what a noun is.",
]


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode:
        print(f"  {' '.join(map(str, cmd))} -> exit {r.returncode}: {r.stderr.strip()[-500:]}")
    return r


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_sample_ref")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    r = run(["sh", os.path.join(HERE, "fetch_smollm2.sh")])
    if r.returncode:
        check("fetch SmolLM2", False, r.stderr[-300:])
        return summary("test_sample_ref")
    gg = r.stdout.strip()
    hf = os.path.join(a.work, "smollm2_hf")
    if not os.path.exists(os.path.join(hf, "model.safetensors")):
        r = run([a.llamac, "convert", gg, hf])
        if r.returncode:
            check("convert", False, r.stderr)
            return summary("test_sample_ref")

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)
    torch.set_num_threads(2)
    # the tokenizer transformers reads from the GGUF itself
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gg), gguf_file=os.path.basename(gg))
    model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32)
    model.eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
               for q in QUESTIONS]
    prompts = [list(p["input_ids"]) if hasattr(p, "keys") else list(p) for p in prompts]
    pfile = os.path.join(a.work, "prompts.jsonl")
    with open(pfile, "w") as f:
        for i, p in enumerate(prompts):
            f.write(json.dumps({"prompt_ids": p, "q": i}) + "\n")

    def sample(tag, *flags):
        out = os.path.join(a.work, f"{tag}.jsonl")
        for suffix in ("", ".settings.json"):
            if os.path.exists(out + suffix):
                os.remove(out + suffix)
        r = run([a.llamac, "sample", "--model", gg, "--prompts", pfile, "--out", out, "--threads", "2", *flags])
        if r.returncode:
            check(f"llamac sample ({tag})", False, r.stderr[-300:])
            return None
        return [json.loads(line) for line in open(out)]

    # 1. log-probabilities against transformers and llamac's own forward
    rows = sample("lp", "--n", 2, "--max-tokens", 24, "--temperature", 0.7, "--top-p", 0.9, "--logprobs-t1")
    if rows:
        d_hf = d_hf1 = d_self = 0.0
        top = 0.0
        for s in rows:
            ids = prompts[s["index"]] + s["token_ids"]
            n, npr = len(s["token_ids"]), len(prompts[s["index"]])
            with torch.no_grad():
                lg = model(torch.tensor([ids[:-1]])).logits[0].numpy()[npr - 1:]
            t = np.array(s["token_ids"])
            lp = log_softmax(lg / 0.7)[np.arange(n), t]
            lp1 = log_softmax(lg)[np.arange(n), t]
            d_hf = max(d_hf, float(np.abs(lp - np.array(s["logprobs"])).max()))
            d_hf1 = max(d_hf1, float(np.abs(lp1 - np.array(s["logprobs_t1"])).max()))
            out = os.path.join(a.work, "self.f32")
            r = run([a.llamac, "logits", "--model", gg, "--tokens", ",".join(map(str, ids[:-1])), "--out", out])
            if r.returncode:
                check("llamac logits", False, r.stderr)
                break
            own = np.fromfile(out, dtype=np.float32).reshape(len(ids) - 1, -1)[npr - 1:]
            top = max(top, float(np.abs(own).max()))
            lps = log_softmax(own.astype(np.float64) / 0.7)[np.arange(n), t]
            d_self = max(d_self, float(np.abs(lps - np.array(s["logprobs"])).max()))
        check(f"{len(rows)} samples' log-probs at T=0.7 against transformers: max diff {d_hf:.2e} "
              f"(atol {LOGPROB_ATOL_HF})", d_hf <= LOGPROB_ATOL_HF)
        check(f"log-probs at T=1 against transformers: max diff {d_hf1:.2e}", d_hf1 <= LOGPROB_ATOL_HF)
        check(f"log-probs against llamac's training forward: max diff {d_self:.2e} "
              f"(<= {LOGIT_RTOL_SELF} x max |logit| {top:.1f} = {LOGIT_RTOL_SELF * top:.1e})",
              d_self <= LOGIT_RTOL_SELF * top)

    # 2. truncation: every token inside transformers' kept set
    rows = sample("trunc", "--n", 2, "--max-tokens", 16, "--temperature", 0.9, "--top-k", 40, "--top-p", 0.8,
                  "--min-p", 0.05, "--repetition-penalty", 1.3)
    if rows:
        procs = [RepetitionPenaltyLogitsProcessor(1.3), TemperatureLogitsWarper(0.9), TopKLogitsWarper(40),
                 TopPLogitsWarper(0.8), MinPLogitsWarper(0.05)]
        outside, total = 0, 0
        for s in rows:
            ids = prompts[s["index"]] + s["token_ids"]
            npr = len(prompts[s["index"]])
            with torch.no_grad():
                lg = model(torch.tensor([ids[:-1]])).logits[0]
            for j, t in enumerate(s["token_ids"]):
                seen = torch.tensor([ids[:npr + j]])
                x = lg[npr - 1 + j][None].clone()
                for p in procs:
                    x = p(seen, x)
                outside += not torch.isfinite(x[0, t]).item()
                total += 1
        check(f"{total} tokens sampled with repetition penalty, top-k, top-p and min-p all inside "
              f"transformers' kept set ({outside} outside)", outside == 0)

    # 3. greedy against generate
    rows = sample("greedy", "--max-tokens", 48, "--temperature", 0, "--ignore-eos")
    if rows:
        same = 0
        for s in rows:
            p = prompts[s["index"]]
            with torch.no_grad():
                # an explicit mask: with pad = EOS, generate would mask the
                # prompt's own <|im_end|> tokens; no EOS suppression, as
                # --ignore-eos samples EOS and goes on
                g = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                   max_new_tokens=48, do_sample=False, eos_token_id=None,
                                   pad_token_id=tok.eos_token_id)[0, len(p):].tolist()
            same += g == s["token_ids"]
            if g != s["token_ids"]:
                k = next(i for i, (x, y) in enumerate(zip(g, s["token_ids"])) if x != y)
                print(f"  prompt {s['index']}: first difference at token {k}")
        check(f"greedy ids equal transformers' generate on {same} of {len(rows)} prompts", same == len(rows))
    return summary("test_sample_ref")


if __name__ == "__main__":
    sys.exit(main())
