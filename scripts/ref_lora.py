#!/usr/bin/env python3
"""LoRA reference fixtures for llamac, produced with Hugging Face PEFT.

What: on the two tiny models of scripts/ref_llama.py (the same build(), seeds
and batch, so the base weights and the batch are those of ref_llama2.bin and
ref_llama3.bin, which the C test loads them from), attach PEFT LoRA adapters
(peft.LoraConfig + get_peft_model, dropout 0) for several configurations and
write one fixture per model into --out (default tests/fixtures):

  ref_lora_llama2.bin  case0: q_proj,v_proj r 4 alpha 8
                       case1: q,k,v,o r 8 alpha 16 rsLoRA
                       case2: all-linear r 2 alpha 4, B = 0 (PEFT's init)
  ref_lora_llama3.bin  case0: q_proj,v_proj r 4 alpha 8, layers_to_transform [1]
                       case1: q,k,v,o r 8 alpha 16 rsLoRA
                       case2: all-linear r 2 alpha 4, B = 0

In every case lora_A is drawn from a seeded generator with PEFT's own
distribution (kaiming_uniform a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and
lora_B is either small random values (so dA is not zero at the first step)
or zero. Each case records the adapter config, the initial adapter weights,
the loss and every adapter gradient at them, then 10 steps of
torch.optim.AdamW over the adapters (weight decay on every trainable tensor,
as PEFT + Trainer give LoRA weights) with ref_llama's warmup + cosine
schedule and clip_grad_norm_: losses, pre-clip norms, the adapter weights
after the last step. The clipping threshold of each case is chosen so that
clipping is active on some steps but not all, with no norm within 1% of it.

Record names (the ref_llama.py file format, LREF version 1):
  base.checksum           sum of the base parameters in float64 (as float32)
  caseK.r, caseK.alpha, caseK.rslora, caseK.targets (bit m per module in
  llamac's order q,k,v,o,gate,up,down), caseK.layers (1 per adapted layer)
  caseK.param.<name>  caseK.loss  caseK.grad.<name>
  caseK.train.clip  caseK.train.losses  caseK.train.grad_norms
  caseK.final.<name>
<name> is PEFT's without "base_model.model." and the adapter name:
"model.layers.0.self_attn.q_proj.lora_A.weight", in PEFT's named_parameters
order (layer, module, A before B) which is llamac's adapter table order.

Deterministic (fixed seeds, one thread): scripts/test_ref.sh regenerates
the files into build/ref and compares them with the committed ones
(scripts/ref_compare.py).
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_llama as R  # noqa: E402  (build, batch, mask, file format, schedule)

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CLIP_FACTORS = (0.8, 0.6, 0.9, 0.5, 0.7, 0.95, 0.85, 0.75, 0.65, 1.05, 1.1, 0.4, 0.3)
# No norm within 1% of the threshold: the adapters' norms sit close together
# (about 0.17-0.21 in llama3 case0, where ref_llama's 5% leaves no room),
# and float32 summation order moves a norm by ~1e-6 relative, so 1% still
# keeps every clip decision the same on both sides.
CLIP_MARGIN = 0.01

CASES = {
    "llama2": [
        dict(targets=["q_proj", "v_proj"], r=4, alpha=8, rslora=False, layers=None, b_zero=False, seed=11),
        dict(targets=["q_proj", "k_proj", "v_proj", "o_proj"], r=8, alpha=16, rslora=True, layers=None,
             b_zero=False, seed=12),
        dict(targets="all-linear", r=2, alpha=4, rslora=False, layers=None, b_zero=True, seed=13),
    ],
    "llama3": [
        dict(targets=["q_proj", "v_proj"], r=4, alpha=8, rslora=False, layers=[1], b_zero=False, seed=21),
        dict(targets=["q_proj", "k_proj", "v_proj", "o_proj"], r=8, alpha=16, rslora=True, layers=None,
             b_zero=False, seed=22),
        dict(targets="all-linear", r=2, alpha=4, rslora=False, layers=None, b_zero=True, seed=23),
    ],
}


def llamac_name(peft_name):
    assert peft_name.startswith("base_model.model."), peft_name
    n = peft_name[len("base_model.model."):]
    assert ".default." in n, n
    return n.replace(".default.", ".")


def run_case(name, spec, k, case, tokens, targets, pos, mask):
    """Returns the records of one case (prefixed caseK.)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = R.build(name, spec)
    kw = dict(r=case["r"], lora_alpha=case["alpha"], target_modules=case["targets"], lora_dropout=0.0,
              bias="none", use_rslora=case["rslora"], init_lora_weights=True)
    if case["layers"] is not None:
        kw["layers_to_transform"] = case["layers"]
    pm = get_peft_model(model, LoraConfig(**kw))
    pm.train()
    named = [(llamac_name(n), p) for n, p in pm.named_parameters() if p.requires_grad]
    assert named and all(".lora_A." in n or ".lora_B." in n for n, _ in named), [n for n, _ in named]
    # adapter weights from a seeded generator: A with PEFT's distribution,
    # B small random or zero
    gen = torch.Generator().manual_seed(case["seed"])
    with torch.no_grad():
        for n, p in named:
            if ".lora_A." in n:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif case["b_zero"]:
                assert float(p.abs().max()) == 0.0, "PEFT's B starts at zero"
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    params = [p for _, p in named]
    tmask = 0
    for m, mod in enumerate(MODULES):
        if any(f".{mod}." in n for n, _ in named):
            tmask |= 1 << m
    L = spec["num_hidden_layers"]
    layers = [1 if any(f"layers.{l}." in n for n, _ in named) else 0 for l in range(L)]
    pre = f"case{k}."
    rec = [(pre + "r", R.i32(case["r"])), (pre + "alpha", R.f32(case["alpha"])),
           (pre + "rslora", R.i32(1 if case["rslora"] else 0)), (pre + "targets", R.i32(tmask)),
           (pre + "layers", R.i32(layers))]
    rec += [(pre + "param." + n, R.t2np(p)) for n, p in named]
    init = [p.detach().clone() for p in params]

    pm.zero_grad(set_to_none=True)
    loss = R.loss_fn(R.forward(pm, tokens, pos, mask), targets)
    loss.backward()
    rec += [(pre + "loss", R.f32(loss.item()))]
    rec += [(pre + "grad." + n, R.t2np(p.grad)) for n, p in named]
    g_b = sum(float(p.grad.abs().max()) for n, p in named if ".lora_B." in n)
    g_a = sum(float(p.grad.abs().max()) for n, p in named if ".lora_A." in n)
    assert g_b > 0 and (g_a > 0) != case["b_zero"], (g_a, g_b)

    # 10 AdamW steps, retried with another clip threshold until clipping is
    # active on some steps but not all and no norm is near the threshold
    g0 = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
    for fac in CLIP_FACTORS:
        clip = float(np.float32(fac * g0))
        with torch.no_grad():
            for p, p0 in zip(params, init):
                p.copy_(p0)
        opt = torch.optim.AdamW(params, lr=R.PEAK_LR, betas=R.BETAS, eps=R.ADAM_EPS,
                                weight_decay=R.WEIGHT_DECAY, foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, R.lr_lambda)
        losses, norms = [], []
        for s in range(R.TRAIN_STEPS):
            opt.zero_grad(set_to_none=True)
            ls = R.loss_fn(R.forward(pm, tokens, pos, mask), targets)
            ls.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            losses.append(ls.item()); norms.append(norm.item())
        clipped = [s for s, g in enumerate(norms) if g > clip]
        if 0 < len(clipped) < R.TRAIN_STEPS and all(abs(g - clip) > CLIP_MARGIN * clip for g in norms):
            break
    else:
        raise AssertionError(f"{name} case{k}: no clip threshold works: norms {norms}")
    print(f"  case{k} {case['targets']} r {case['r']} alpha {case['alpha']} rslora {case['rslora']} "
          f"layers {layers}: loss {loss.item():.6f} -> {losses[-1]:.6f}, clip {clip:.4g} at steps {clipped}")
    rec += [(pre + "train.clip", R.f32(clip)), (pre + "train.losses", R.f32(losses)),
            (pre + "train.grad_norms", R.f32(norms))]
    rec += [(pre + "final." + n, R.t2np(p)) for n, p in named]
    return rec


def run_model(name, out_dir):
    print(f"== {name} (LoRA)")
    spec = R.MODELS[name]
    model, gen = R.build(name, spec)
    tokens, targets, pos, doc = R.make_batch(spec, gen)  # the generator state of ref_llama's run
    mask = R.doc_mask(doc) if spec["docs"] is not None else None
    checksum = sum(float(p.detach().double().sum()) for _, p in model.named_parameters())
    records = [("base.checksum", R.f32(checksum))]
    for k, case in enumerate(CASES[name]):
        records += run_case(name, spec, k, case, tokens, targets, pos, mask)
    path = os.path.join(out_dir, f"ref_lora_{name}.bin")
    R.write_ref(path, records)
    back = R.read_ref(path)
    assert list(back) == [r[0] for r in records]
    print(f"  wrote {path}: {len(records)} records, {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures", help="output directory")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
          f"peft {__import__('peft').__version__}")
    for name in CASES:
        run_model(name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
