#!/usr/bin/env python3
"""`llamac prune` against transformers (run by scripts/test_ref.sh).

What: a tiny random LlamaForCausalLM (GQA 4/2 heads of 8, dim 32, 3 layers,
ffn 40, untied) saved as a HF directory, a calibration shard of random tokens,
then `llamac prune --target layers=2,heads=2,kv_heads=1,ffn=24,dim=24` to a HF
directory with --importances. Independently, in PyTorch with forward hooks
(Model-Optimizer's way, arXiv 2407.14679's statistics) on the same batches:

  1. the calibration loss of the teacher, and every importance: Block
     Influence from the hidden states, the skip loss from the model with that
     layer deleted, head and KV-group scores from o_proj's input, MLP channel
     scores from down_proj's input, embedding channel scores from every
     input/post-attention RMSNorm output, within RTOL;
  2. transformers loads the pruned directory (head_dim 8 on hidden_size 24)
     with no missing or unexpected keys; its weights are the teacher's sliced
     at the kept indices, bit for bit; its loss equals llamac's loss_after.

Prints PASS/FAIL per check and "test_prune_ref: N passed, M failed"; exits 1
on any failure.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcheck import check, run, summary  # noqa: E402

B, T, NB = 2, 16, 2
RTOL = 1e-4  # float32 sums in another order over a few hundred terms
D, L, H, KV, F, V = 32, 3, 4, 2, 40, 64
HS = D // H


def write_shard(path, tokens, vocab):
    """llamac token shard (data/shard.h): 64-byte header, uint16 tokens; tokenizer id 0 (a HF directory's)."""
    hdr = struct.pack("<IIIIQQiI", 0x4853434C, 1, 2, vocab, len(tokens), 0, -1, 1)
    with open(path, "wb") as f:
        f.write(hdr + b"\0" * (64 - len(hdr)))
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def batches(tokens):
    """(NB) pairs of (B, T) input and target arrays: consecutive windows of T + 1, as cmd_prune makes them"""
    out = []
    for b in range(NB):
        rows = [tokens[(b * B + r) * T:(b * B + r) * T + T + 1] for r in range(B)]
        x = np.array([w[:-1] for w in rows], dtype=np.int64)
        y = np.array([w[1:] for w in rows], dtype=np.int64)
        out.append((x, y))
    return out


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_prune_ref")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(7)
    torch.set_num_threads(1)
    cfg = LlamaConfig(hidden_size=D, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=KV,
                      intermediate_size=F, vocab_size=V, max_position_embeddings=64, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # larger weights than the init's so that every part matters
        for n, p in model.named_parameters():
            p.mul_(4.0) if p.ndim == 2 else p.copy_(1 + 0.1 * torch.randn(p.shape))
    teacher = os.path.join(a.work, "teacher")
    model.save_pretrained(teacher, safe_serialization=True)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, V, NB * B * T + 1).tolist()
    write_shard(os.path.join(a.work, "calib.bin"), tokens, V)
    out, imp = os.path.join(a.work, "pruned"), os.path.join(a.work, "imp.json")
    r = run(a.llamac, "prune", "--model", teacher, "--calib", os.path.join(a.work, "calib.bin"), "--batch", B,
            "--seq", T, "--calib-batches", NB, "--target", "layers=2,heads=2,kv_heads=1,ffn=24,dim=24", "--out",
            out, "--format", "hf", "--force", "--importances", imp)
    if not check("llamac prune runs", r.returncode == 0, r.stderr):
        return summary("test_prune_ref")
    j = json.load(open(imp))

    # --- the statistics with hooks
    acc = {}

    def hook(key, which):
        def f(mod, inp, outp):
            x = (inp[0] if which == "in" else outp).detach().double()  # (B, T, n)
            m = x.abs().mean(dim=1)  # mean over the sequence
            acc[key] = acc.get(key, 0) + (m * m).sum(dim=0)  # L2 over batch rows (squares summed)
        return f

    bi = np.zeros(L)

    def layer_hook(i):
        def f(mod, args, kwargs, outp):
            hin = (args[0] if args else kwargs["hidden_states"]).detach().double()
            hout = (outp[0] if isinstance(outp, tuple) else outp).detach().double()
            bi[i] += float((1 - torch.nn.functional.cosine_similarity(hin, hout, dim=-1)).sum())
        return f

    hs = []
    for i, layer in enumerate(model.model.layers):
        hs += [layer.self_attn.o_proj.register_forward_hook(hook(("att", i), "in")),
               layer.mlp.down_proj.register_forward_hook(hook(("ffn", i), "in")),
               layer.input_layernorm.register_forward_hook(hook(("ln1", i), "out")),
               layer.post_attention_layernorm.register_forward_hook(hook(("ln2", i), "out")),
               layer.register_forward_hook(layer_hook(i), with_kwargs=True)]

    def loss_of(m, bs):
        tot, n = 0.0, 0
        with torch.no_grad():
            for x, y in bs:
                logits = m(torch.tensor(x), use_cache=False).logits.double()
                tot += float(torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.tensor(y).reshape(-1),
                                                               reduction="sum"))
                n += y.size
        return tot / n

    bs = batches(tokens)
    loss = loss_of(model, bs)
    for h in hs:
        h.remove()
    bi /= NB * B * T
    check("loss before", abs(j["loss_before"] - loss) <= RTOL * loss, f"{j['loss_before']} vs {loss}")
    check("block influence", rel(j["layer_block_influence"], bi) <= RTOL, f"{j['layer_block_influence']} vs {bi}")
    head = np.array([[np.sqrt(acc[("att", i)].numpy().reshape(H, HS).sum(1))] for i in range(L)]).reshape(L, H)
    check("head scores", rel(j["heads"], head) <= RTOL, f"max rel {rel(j['heads'], head)}")
    grp = np.sqrt((head.reshape(L, KV, H // KV) ** 2).sum(-1))
    check("kv group scores", rel(j["kv_groups"], grp) <= RTOL, f"max rel {rel(j['kv_groups'], grp)}")
    ffn = np.array([np.sqrt(acc[("ffn", i)].numpy()) for i in range(L)])
    check("mlp channel scores", rel(j["ffn_channels"], ffn) <= RTOL, f"max rel {rel(j['ffn_channels'], ffn)}")
    emb = sum(np.sqrt(acc[(k, i)].numpy()) for i in range(L) for k in ("ln1", "ln2"))
    check("embedding channel scores", rel(j["embedding_channels"], emb) <= RTOL,
          f"max rel {rel(j['embedding_channels'], emb)}")
    skip = []
    for i in range(L):
        m2 = LlamaForCausalLM(cfg).float().eval()
        m2.load_state_dict(model.state_dict())
        del m2.model.layers[i]
        for k, layer in enumerate(m2.model.layers):
            layer.self_attn.layer_idx = k
        skip.append(loss_of(m2, bs) - loss)
    check("skip loss", np.max(np.abs(np.array(j["layer_skip_loss_delta"]) - skip)) <= RTOL * loss,
          f"{j['layer_skip_loss_delta']} vs {skip}")

    # --- the pruned directory in transformers
    pm, info = LlamaForCausalLM.from_pretrained(out, output_loading_info=True, torch_dtype=torch.float32)
    pm.eval()
    check("pruned loads (no missing / unexpected keys)", not info["missing_keys"] and not info["unexpected_keys"],
          str(info))
    check("pruned head_dim", pm.config.head_dim == HS and pm.config.hidden_size == 24, str(pm.config))
    k = j["kept"]
    sd, ps = model.state_dict(), pm.state_dict()
    dim = np.array(k["embedding_channels"])
    same = np.array_equal(ps["model.embed_tokens.weight"].numpy(), sd["model.embed_tokens.weight"].numpy()[:, dim])
    same &= np.array_equal(ps["lm_head.weight"].numpy(), sd["lm_head.weight"].numpy()[:, dim])
    for i, l0 in enumerate(k["layers"]):
        p, s = f"model.layers.{i}.", f"model.layers.{l0}."
        qr = np.concatenate([np.arange(h * HS, (h + 1) * HS) for h in k["heads"][i]])
        kr = np.concatenate([np.arange(g * HS, (g + 1) * HS) for g in k["kv_groups"][i]])
        fr = np.array(k["ffn_channels"][i])
        w = lambda n: sd[s + n].numpy()  # noqa: E731
        want = {"self_attn.q_proj.weight": w("self_attn.q_proj.weight")[qr][:, dim],
                "self_attn.k_proj.weight": w("self_attn.k_proj.weight")[kr][:, dim],
                "self_attn.v_proj.weight": w("self_attn.v_proj.weight")[kr][:, dim],
                "self_attn.o_proj.weight": w("self_attn.o_proj.weight")[dim][:, qr],
                "mlp.gate_proj.weight": w("mlp.gate_proj.weight")[fr][:, dim],
                "mlp.up_proj.weight": w("mlp.up_proj.weight")[fr][:, dim],
                "mlp.down_proj.weight": w("mlp.down_proj.weight")[dim][:, fr],
                "input_layernorm.weight": w("input_layernorm.weight")[dim],
                "post_attention_layernorm.weight": w("post_attention_layernorm.weight")[dim]}
        for n, v in want.items():
            same &= np.array_equal(ps[p + n].numpy(), v)
    check("pruned weights are the teacher's at the kept indices", bool(same))
    after = loss_of(pm, bs)
    check("loss after", abs(j["loss_after"] - after) <= RTOL * after, f"{j['loss_after']} vs {after}")
    return summary("test_prune_ref")


if __name__ == "__main__":
    sys.exit(main())
