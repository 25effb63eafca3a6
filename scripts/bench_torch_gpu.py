#!/usr/bin/env python3
"""bench_torch_gpu.py: the PyTorch side of scripts/bench_gpu.py: pretraining
steps of transformers' LlamaForCausalLM on the GPU, random tokens, AdamW.

--mode eager | compile (torch.compile of the model); attention is SDPA.
--precision amp (default): float32 master weights and AdamW state with
  torch.autocast(bfloat16), what llamac --device cuda keeps (bf16 compute,
  float32 masters); bf16: weights and optimizer state in bfloat16.
Prints one line and writes --json {tokens_per_s, step_ms, max_alloc_gib}.
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    for k, v in [("dim", 768), ("layers", 12), ("heads", 12), ("kv-heads", 12), ("hidden", 2048),
                 ("vocab", 32000), ("tied", 1), ("batch", 16), ("seq", 1024), ("steps", 20), ("warmup", 5)]:
        ap.add_argument(f"--{k}", type=int, default=v)
    ap.add_argument("--mode", default="eager", choices=["eager", "compile"])
    ap.add_argument("--precision", default="amp", choices=["amp", "bf16"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=a.dim, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads, intermediate_size=a.hidden, vocab_size=a.vocab,
                      tie_word_embeddings=bool(a.tied), max_position_embeddings=max(a.seq, 2048),
                      rms_norm_eps=1e-5, attn_implementation="sdpa")
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    model = LlamaForCausalLM(cfg).to(device="cuda", dtype=dtype)
    model.train()
    # llamac's defaults: AdamW(0.9, 0.95, eps 1e-5), weight decay 0.1, clip 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1,
                            fused=True)
    fwd = torch.compile(model) if a.mode == "compile" else model
    x = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "amp"):
            loss = fwd(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):  # compilation and allocator warm-up stay out of the timing
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    r = {"tokens_per_s": a.batch * a.seq / med, "step_ms": 1e3 * med,
         "max_alloc_gib": torch.cuda.max_memory_allocated() / 2**30, "mode": a.mode, "precision": a.precision}
    print(json.dumps(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f)


if __name__ == "__main__":
    main()
