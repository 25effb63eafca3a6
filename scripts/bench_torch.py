#!/usr/bin/env python3
"""PyTorch peer for the llamac CPU training-step benchmark.

Builds a float32 LlamaForCausalLM of the given shape (transformers, sdpa
attention by default) and times full training steps on one random batch:
zero_grad, forward (logits only) + F.cross_entropy over all B*T positions,
backward, clip_grad_norm_(1.0), AdamW step (lr 3e-4, betas (0.9, 0.95),
eps 1e-5, weight_decay 0.1, torch's default foreach choice). torch's default
thread count is left alone so the peer runs the way PyTorch users run it.

Prints exactly one JSON line on stdout:
  {"peer":"pytorch","torch":...,"threads":...,"step_s_median":...,
   "step_s_all":[...],"tokens_per_s":...,"peak_rss_mb":...}
tokens_per_s = batch*seq / step_s_median; peak_rss_mb = ru_maxrss / 1024.
"""

import argparse
import json
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description="PyTorch training-step benchmark peer for llamac")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--hidden", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tied", type=int, choices=(0, 1), default=0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    ap.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard", default=None,
                    help="llamac token shard: train on its windows in order (data loading timed) "
                         "instead of one random batch")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    import numpy as np  # noqa: F401  (used with --shard)

    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    config = LlamaConfig(
        hidden_size=args.dim, num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads if args.kv_heads else args.heads,
        intermediate_size=args.hidden, vocab_size=args.vocab,
        max_position_embeddings=max(args.seq, 1), rms_norm_eps=1e-5,
        tie_word_embeddings=bool(args.tied), use_cache=False,
        attention_dropout=0.0, pad_token_id=None)
    config._attn_implementation = args.attn
    model = LlamaForCausalLM(config).float()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)

    gen = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    shard, cursor = None, [0]
    if args.shard:
        import numpy as np
        # data/shard.h: 64-byte header (uint32 magic, version, token bytes, vocab, ...), then tokens
        head = np.fromfile(args.shard, dtype=np.uint32, count=4)
        width = np.uint16 if head[2] == 2 else np.int32
        shard = np.memmap(args.shard, dtype=width, mode="r", offset=64)
        if int(head[3]) != args.vocab:
            ap.error("--vocab %d does not match the shard's %d" % (args.vocab, head[3]))

    def next_batch():
        # B consecutive windows of T + 1 tokens at offsets k * T, as llamac's sequential loader
        n = args.batch * args.seq
        if cursor[0] + n + 1 > len(shard):
            cursor[0] = 0
        w = torch.from_numpy(np.asarray(shard[cursor[0]:cursor[0] + n + 1], dtype=np.int64))
        cursor[0] += n
        x = torch.stack([w[b * args.seq:(b + 1) * args.seq] for b in range(args.batch)])
        y = torch.stack([w[b * args.seq + 1:(b + 1) * args.seq + 1] for b in range(args.batch)])
        return x, y

    def step():
        nonlocal tokens, targets
        if shard is not None:
            tokens, targets = next_batch()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=tokens, use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, args.vocab), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        loss.item()  # CPU: already synchronous; keeps the timing honest anyway
        times.append(time.perf_counter() - t0)

    med = statistics.median(times)
    out = {
        "peer": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "step_s_median": med,
        "step_s_all": times,
        "tokens_per_s": args.batch * args.seq / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
