#!/usr/bin/env python3
"""Reference fixtures for llamac, produced with Hugging Face transformers.

What: builds two tiny LlamaForCausalLM models (float32, CPU, eager attention)
and writes one binary fixture per model into --out (default tests/fixtures):

  ref_llama2.bin  MHA, plain RoPE (theta 1e4), untied lm_head, one sequence
                  per row (positions 0..T-1).
  ref_llama3.bin  GQA (4 q heads, 2 kv heads), llama3 RoPE scaling (the 8 rope
                  frequencies of the 16-wide heads fall in all three regions:
                  high / smoothed / low), tied embeddings, and 2-3 packed
                  documents per row: positions restart at 0 at every document
                  start and attention never crosses a document boundary.
  ref_llama_hd.bin  head_dim 16 apart from the width (4 q heads, 2 kv heads on
                  hidden_size 48: q_proj (64, 48)), as a width-pruned model
                  has (llamac prune); untied, one sequence per row.

Each file holds the config, the batch (tokens, targets, positions), the
initial weights, the logits, the mean cross-entropy loss, the gradient of
every parameter, and the trajectory of 10 AdamW steps (warmup + cosine LR,
gradient clipping, decoupled weight decay on 2-D weights only): the loss and
pre-clip gradient norm of each step and the weights after the last one.

Why: the C implementation loads the same initial weights and batch and must
reproduce the forward pass, the backward pass and the optimizer to float32
tolerance. transformers is the independent "what Llama means" oracle; running
it here, once, keeps the C tests free of Python.

The run is deterministic (fixed seeds, deterministic algorithms, one thread):
running it twice gives identical files; scripts/test_ref.sh regenerates the
fixtures and compares them with the committed ones (scripts/ref_compare.py).

File format (little-endian), also read by read_ref() below:
  header: b"LREF", uint32 version (=1), uint32 number of records
  record: uint32 name length, name bytes (no NUL), uint32 dtype (0 float32,
          1 int32), uint32 ndim, ndim x int64 dims, then prod(dims) elements.
  Scalars are stored with ndim 1, dims [1].

Record names: config.*, tokens, targets, pos, param.<HF name>, logits, loss,
grad.<HF name>, train.* (train.lrs: the LR used at each of the 10 steps),
final.<HF name>. <HF name> follows model.named_parameters() order; a tied
model has no lm_head.weight (named_parameters() dedups it).

Only numpy is needed to read files (torch/transformers are imported lazily),
so ref_compare.py can import read_ref without them.
"""

import argparse
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np

MAGIC = b"LREF"
VERSION = 1
DT_F32, DT_I32 = 0, 1

B, T = 2, 32
TRAIN_STEPS = 10
WARMUP = 3
PEAK_LR = 1e-2
MIN_LR_FRAC = 0.1
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
ADAM_EPS = 1e-5
# Gradient clipping threshold, chosen so that clipping is active on some steps
# but not all, for both models (asserted below), so the C side is tested on
# both branches of clip_grad_norm_. 1.0 would clip every one of the 10 steps
# of both models (pre-clip norms here are ~1.0-3.8), and the no-clip path
# would go untested. With 1.5, llama2 clips steps 0-7 and llama3 steps 0-5.
# No norm may lie within 5% of CLIP, so that a different float32 summation
# order cannot flip a step's clip decision.
CLIP = 1.5
CLIP_MARGIN = 0.05
IGNORE_FRAC = 0.15

MODELS = {
    "llama2": dict(
        seed=1234,
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=172, vocab_size=256, max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        docs=None,  # one sequence per row
    ),
    "llama3": dict(
        seed=4321,
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=160, vocab_size=256, max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 48},
        tie_word_embeddings=True,
        # document lengths per row (sum = T): row 0 has 2 documents, row 1 has 3
        docs=[[13, 19], [7, 14, 11]],
    ),
    # head_dim apart from the width (a width-pruned model, llamac prune): 4
    # query heads of 16 over 2 KV heads on hidden_size 48, so q_proj is
    # (64, 48) and o_proj (48, 64)
    "llama_hd": dict(
        seed=2472,
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=128, vocab_size=256, max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        docs=None,
    ),
}


# ---------------------------------------------------------------- file format

def write_ref(path, records):
    """records: list of (name, np.ndarray float32/int32)."""
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<II", VERSION, len(records)))
        for name, arr in records:
            arr = np.asarray(arr)
            if arr.dtype == np.float32:
                dt, le = DT_F32, "<f4"
            elif arr.dtype == np.int32:
                dt, le = DT_I32, "<i4"
            else:
                raise TypeError(f"{name}: unsupported dtype {arr.dtype}")
            if arr.ndim == 0:
                arr = arr.reshape(1)
            nb = name.encode("ascii")
            f.write(struct.pack("<I", len(nb)))
            f.write(nb)
            f.write(struct.pack("<II", dt, arr.ndim))
            f.write(struct.pack(f"<{arr.ndim}q", *arr.shape))
            f.write(np.ascontiguousarray(arr, dtype=le).tobytes())


def read_ref(path):
    """Read a fixture file: OrderedDict name -> numpy array (float32 / int32)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: bad magic {data[:4]!r}")
    version, n = struct.unpack_from("<II", data, 4)
    if version != VERSION:
        raise ValueError(f"{path}: unsupported version {version}")
    off = 12
    out = OrderedDict()
    for _ in range(n):
        (ln,) = struct.unpack_from("<I", data, off); off += 4
        name = data[off:off + ln].decode("ascii"); off += ln
        dt, nd = struct.unpack_from("<II", data, off); off += 8
        dims = struct.unpack_from(f"<{nd}q", data, off); off += 8 * nd
        le = {DT_F32: "<f4", DT_I32: "<i4"}[dt]
        cnt = int(np.prod(dims, dtype=np.int64))
        arr = np.frombuffer(data, dtype=le, count=cnt, offset=off).reshape(dims)
        off += 4 * cnt
        if name in out:
            raise ValueError(f"{path}: duplicate record {name}")
        out[name] = arr.astype(np.float32 if dt == DT_F32 else np.int32)
    if off != len(data):
        raise ValueError(f"{path}: {len(data) - off} trailing bytes")
    return out


# ---------------------------------------------------------------- helpers

def f32(x):
    return np.asarray(x, dtype=np.float32).reshape(-1) if np.ndim(x) == 0 else np.asarray(x, dtype=np.float32)


def i32(x):
    return np.asarray(x, dtype=np.int32).reshape(-1) if np.ndim(x) == 0 else np.asarray(x, dtype=np.int32)


def t2np(t):
    return t.detach().cpu().numpy().astype(np.float32)


def lr_lambda(s):
    """LR multiplier for 0-based step s: linear warmup, then cosine to MIN_LR_FRAC."""
    if s < WARMUP:
        return (s + 1) / WARMUP
    p = (s - WARMUP) / (TRAIN_STEPS - WARMUP)
    return MIN_LR_FRAC + (1.0 - MIN_LR_FRAC) * 0.5 * (1.0 + math.cos(math.pi * p))


def rope_regions(spec, head_dim):
    """Independent float64 computation of the llama3 rope frequencies and their region."""
    rp = spec["rope_parameters"]
    theta = rp["rope_theta"]
    inv = [1.0 / theta ** (2 * i / head_dim) for i in range(head_dim // 2)]
    if rp["rope_type"] != "llama3":
        return inv, ["none"] * len(inv)
    factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    orig = rp["original_max_position_embeddings"]
    lo_wl, hi_wl = orig / lo, orig / hi
    out, reg = [], []
    for f in inv:  # region decided on the unscaled wavelength
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(f); reg.append("high")
        elif wl > lo_wl:
            out.append(f / factor); reg.append("low")
        else:
            sm = (orig / wl - lo) / (hi - lo)
            out.append((1 - sm) * f / factor + sm * f); reg.append("medium")
    return out, reg


def make_batch(spec, gen):
    import torch
    V = spec["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    targets = torch.full((B, T), -1, dtype=torch.int64)
    targets[:, :-1] = tokens[:, 1:]
    drop = torch.rand((B, T), generator=gen) < IGNORE_FRAC
    targets[drop] = -1
    pos = torch.arange(T, dtype=torch.int64).repeat(B, 1)
    doc = torch.zeros((B, T), dtype=torch.int64)  # document id of each token
    if spec["docs"] is not None:
        for b, lens in enumerate(spec["docs"]):
            assert sum(lens) == T and len(lens) in (2, 3)
            start = 0
            for d, n in enumerate(lens):
                pos[b, start:start + n] = torch.arange(n)
                doc[b, start:start + n] = d
                targets[b, start + n - 1] = -1  # never predict across a boundary
                start += n
    return tokens, targets, pos, doc


def doc_mask(doc):
    """Additive (B,1,T,T) float32 mask: 0 where query i may attend key j
    (same document and j <= i), dtype-min elsewhere. transformers 5.x passes a
    4-D attention_mask through create_causal_mask unchanged
    (_preprocess_mask_arguments early-exits on ndim 4) and eager attention adds
    it to the scores, so it must be additive float, not boolean."""
    import torch
    Bn, Tn = doc.shape
    causal = torch.tril(torch.ones(Tn, Tn, dtype=torch.bool))
    same = doc[:, :, None] == doc[:, None, :]
    allowed = same & causal[None]
    m = torch.zeros((Bn, 1, Tn, Tn), dtype=torch.float32)
    m.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    return m


def forward(model, tokens, pos, mask):
    return model(input_ids=tokens, position_ids=pos, attention_mask=mask, use_cache=False).logits


def loss_fn(logits, targets):
    import torch.nn.functional as F
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)


# ---------------------------------------------------------------- one model

def build(name, spec):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg_kw = {k: v for k, v in spec.items() if k not in ("seed", "docs")}
    config = LlamaConfig(**cfg_kw, initializer_range=0.02, attention_dropout=0.0,
                         attention_bias=False, mlp_bias=False, hidden_act="silu",
                         pad_token_id=None, use_cache=False)
    config._attn_implementation = "eager"
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(config).float()
    assert model.config._attn_implementation == "eager"
    if spec["tie_word_embeddings"]:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "weights not tied"
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    # RMSNorm gains 1 + 0.1*randn so that they matter in the gradients.
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():
        for pn, p in model.named_parameters():
            if pn.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    model.train()  # no dropout anywhere (attention_dropout 0)
    return model, gen


def run_model(name, spec, out_dir):
    import torch

    print(f"== {name}")
    model, gen = build(name, spec)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    # --- rope frequencies: independent check + region report
    ref_inv, regions = rope_regions(spec, head_dim)
    hf_inv = model.model.rotary_emb.inv_freq.double().numpy()
    assert np.allclose(hf_inv, ref_inv, rtol=1e-6, atol=0), (hf_inv, ref_inv)
    theta = spec["rope_parameters"]["rope_theta"]
    for i, (f, r) in enumerate(zip(ref_inv, regions)):
        f0 = 1.0 / theta ** (2 * i / head_dim)
        print(f"  rope freq {i}: base inv_freq {f0:.6e} (wavelen {2 * math.pi / f0:10.2f})"
              f" -> {f:.6e}  region {r}")
    if spec["rope_parameters"]["rope_type"] == "llama3":
        assert set(regions) == {"high", "medium", "low"}, regions
        print("  llama3 rope regions present:", sorted(set(regions)))

    tokens, targets, pos, doc = make_batch(spec, gen)
    mask = doc_mask(doc) if spec["docs"] is not None else None
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    params = [p for _, p in named]
    if spec["tie_word_embeddings"]:
        assert "lm_head.weight" not in names

    records = []
    rp = spec["rope_parameters"]
    scaled = rp["rope_type"] == "llama3"
    records += [
        ("config.dim", i32(cfg.hidden_size)),
        ("config.n_layers", i32(cfg.num_hidden_layers)),
        ("config.n_heads", i32(cfg.num_attention_heads)),
        ("config.n_kv_heads", i32(cfg.num_key_value_heads)),
        ("config.hidden", i32(cfg.intermediate_size)),
        ("config.vocab", i32(cfg.vocab_size)),
        ("config.max_seq", i32(cfg.max_position_embeddings)),
        ("config.rope_scaling", i32(1 if scaled else 0)),
        ("config.rope_orig_ctx", i32(rp["original_max_position_embeddings"] if scaled else 0)),
        ("config.tied", i32(1 if spec["tie_word_embeddings"] else 0)),
    ]
    if "head_dim" in spec:  # only where it is not hidden_size / heads (older fixtures lack it)
        records += [("config.head_dim", i32(spec["head_dim"]))]
    records += [
        ("config.norm_eps", f32(cfg.rms_norm_eps)),
        ("config.rope_theta", f32(rp["rope_theta"])),
        ("config.rope_factor", f32(rp["factor"] if scaled else 0.0)),
        ("config.rope_low_freq", f32(rp["low_freq_factor"] if scaled else 0.0)),
        ("config.rope_high_freq", f32(rp["high_freq_factor"] if scaled else 0.0)),
        ("tokens", i32(tokens.numpy())),
        ("targets", i32(targets.numpy())),
        ("pos", i32(pos.numpy())),
    ]
    records += [("param." + n, t2np(p)) for n, p in named]

    # --- document-mask check: second document of each row alone from position 0
    if spec["docs"] is not None:
        with torch.no_grad():
            packed = forward(model, tokens, pos, mask)
            # transformers' own packed-sequence detection (position_ids, no mask)
            auto = forward(model, tokens, pos, None)
            assert torch.allclose(packed, auto, atol=1e-5, rtol=0), "custom mask != HF packed mask"
            nomask = model(input_ids=tokens, use_cache=False).logits  # positions 0..T-1, causal
            for b, lens in enumerate(spec["docs"]):
                start = 0
                for d, n in enumerate(lens):
                    alone = forward(model, tokens[b:b + 1, start:start + n],
                                    torch.arange(n)[None], None)[0]
                    diff = (packed[b, start:start + n] - alone).abs().max().item()
                    print(f"  row {b} doc {d} [{start}:{start + n}) vs alone: max|diff| {diff:.2e}")
                    assert diff <= 1e-5, diff
                    if d > 0:  # the mask must actually matter
                        leak = (nomask[b, start:start + n] - alone).abs().max().item()
                        assert leak > 1e-3, leak
                    start += n

    # --- forward / backward at the initial weights
    model.zero_grad(set_to_none=True)
    logits = forward(model, tokens, pos, mask)
    loss = loss_fn(logits, targets)
    loss.backward()
    n_used = int((targets != -1).sum())
    print(f"  loss {loss.item():.6f} over {n_used}/{B * T} targets")
    records += [("logits", t2np(logits)), ("loss", f32(loss.item()))]
    for n, p in named:
        assert p.grad is not None, n
    records += [("grad." + n, t2np(p.grad)) for n, p in named]

    # --- 10 AdamW steps on the same batch
    decay = [p for p in params if p.ndim == 2]
    no_decay = [p for p in params if p.ndim == 1]
    assert len(decay) + len(no_decay) == len(params)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=PEAK_LR, betas=BETAS, eps=ADAM_EPS, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    losses, norms, lrs = [], [], []
    for s in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        logits_s = forward(model, tokens, pos, mask)
        loss_s = loss_fn(logits_s, targets)
        loss_s.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        losses.append(loss_s.item()); norms.append(norm.item()); lrs.append(lr)
        print(f"  step {s}: lr {lr:.6f} loss {loss_s.item():.6f} grad_norm {norm.item():.6f}"
              f"{'  CLIPPED' if norm.item() > CLIP else ''}")
    clipped = [s for s, g in enumerate(norms) if g > CLIP]
    print(f"  clip {CLIP}: clipped at steps {clipped}")
    assert 0 < len(clipped) < TRAIN_STEPS, "clipping must be active on some steps but not all"
    assert all(abs(g - CLIP) > CLIP_MARGIN * CLIP for g in norms), "a grad norm is too close to CLIP"
    assert abs(losses[0] - loss.item()) < 1e-6
    records += [
        ("train.lr", f32(PEAK_LR)),
        ("train.warmup", f32(WARMUP)),
        ("train.steps", f32(TRAIN_STEPS)),
        ("train.clip", f32(CLIP)),
        ("train.weight_decay", f32(WEIGHT_DECAY)),
        ("train.beta1", f32(BETAS[0])),
        ("train.beta2", f32(BETAS[1])),
        ("train.eps", f32(ADAM_EPS)),
        ("train.lrs", f32(lrs)),
        ("train.losses", f32(losses)),
        ("train.grad_norms", f32(norms)),
    ]
    records += [("final." + n, t2np(p)) for n, p in named]

    path = os.path.join(out_dir, f"ref_{name}.bin")
    write_ref(path, records)
    back = read_ref(path)  # round-trip check of the writer/reader
    assert list(back) == [r[0] for r in records]
    for (n, a) in records:
        assert back[n].shape == np.asarray(a).reshape(back[n].shape).shape
        assert np.array_equal(back[n], np.asarray(a).reshape(back[n].shape)), n
    print(f"  wrote {path}: {len(records)} records, {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures", help="output directory")
    ap.add_argument("--only", choices=sorted(MODELS), help="generate one model only")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers "
          f"{__import__('transformers').__version__}, numpy {np.__version__}")
    for name, spec in MODELS.items():
        if args.only and name != args.only:
            continue
        run_model(name, spec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
