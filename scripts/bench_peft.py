#!/usr/bin/env python3
"""PEFT peer for the llamac LoRA training-step benchmark (scripts/bench_lora.py).

Builds a float32 LlamaForCausalLM of the given shape (transformers, eager
attention, CPU), wraps it with peft.get_peft_model(LoraConfig(r, alpha,
target_modules, dropout 0)) and times LoRA training steps on one random
batch: zero_grad, forward (logits) + F.cross_entropy over all B*T positions,
backward, clip_grad_norm_(1.0) over the adapters, AdamW step over the
adapters (lr 3e-4, betas (0.9, 0.95), eps 1e-5, weight_decay 0.1), the same
step `llamac bench --lora-r R --lora-targets ...` times. torch's default
thread count is left alone. Run it as its own process: peak_rss_mb is this
process's ru_maxrss.

Prints exactly one JSON line on stdout:
  {"peer":"peft","torch":...,"peft":...,"threads":...,"step_s_median":...,
   "step_s_all":[...],"tokens_per_s":...,"peak_rss_mb":...,"trainable":...}
"""

import argparse
import json
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description="PEFT LoRA training-step benchmark peer for llamac")
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--tied", type=int, choices=(0, 1), default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=0, help="0: same as r")
    ap.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj",
                    help="comma-separated module names, or all-linear")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be >= 1")

    import peft
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    config = LlamaConfig(
        hidden_size=args.dim, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or args.heads, intermediate_size=args.hidden,
        vocab_size=args.vocab, max_position_embeddings=max(args.seq, 1), rms_norm_eps=1e-5,
        tie_word_embeddings=bool(args.tied), use_cache=False, attention_dropout=0.0, pad_token_id=None)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).float()
    targets = "all-linear" if args.lora_targets == "all-linear" else args.lora_targets.split(",")
    lc = peft.LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha or args.lora_r, target_modules=targets,
                         lora_dropout=0.0, bias="none")
    model = peft.get_peft_model(model, lc)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    g = torch.Generator().manual_seed(args.seed)
    tok = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    tgt = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)

    times = []
    for s in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=tok, use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, args.vocab), tgt.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if s >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({
        "peer": "peft", "torch": torch.__version__, "peft": peft.__version__,
        "threads": torch.get_num_threads(), "step_s_median": round(med, 5),
        "step_s_all": [round(t, 5) for t in times], "tokens_per_s": round(args.batch * args.seq / med, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "trainable": sum(p.numel() for p in params), "loss": round(loss.item(), 5)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
