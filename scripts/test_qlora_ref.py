#!/usr/bin/env python3
"""QLoRA in `llamac sft --base-quant` against PEFT + bitsandbytes, and
against LoRA on the dequantised base (run by scripts/test_ref.sh).

    python scripts/test_qlora_ref.py [--llamac build/llamac] [--work build/test_qlora_ref]

The data, tokenizer and replay are scripts/test_sft_ref.py's: its six
conversations under the Llama 3 template, packed; llamac writes each
micro-batch it trains on (--dump-batches) and the reference replays them.

  (a) NF4: a tiny random Llama (dims multiples of 64, NF4's block) as a
      Hugging Face directory. llamac trains 10 steps with --base-quant nf4
      (the decoder's linears quantised at load, embedding, head and norms
      float32), LoRA r 16, alpha 32 on q,k,v,o, warmup + cosine, weight
      decay, clipping, from a PEFT adapter with B nonzero (--lora-init DIR).
      The reference is transformers' load of the same directory with
      BitsAndBytesConfig(nf4, double quant, float32 compute) on the CPU
      (bitsandbytes 0.50.2's Linear4bit; lm_head stays float as there),
      PeftModel.from_pretrained of the same adapter and torch AdamW on the
      same micro-batches. Checks: bitsandbytes' dequantised NF4 weights
      equal llamac's (a --merged-out of a run whose adapters stay ~0),
      per-step losses and gradient norms, the final adapter within TOL_NF4;
      and the losses differ from LoRA on the float base (the base really is
      quantised on both sides).
  (b) GGUF types: the same kind of model, dims multiples of 256 (the
      k-quants' super-block, so no type falls back), written by `llamac
      quantize --type T` for each of q8_0 ... q6_k, and converted back by
      `llamac convert` to a float32 checkpoint (dequantised). 5 LoRA steps
      (every linear) of `--model T.gguf --base-quant keep` (every matrix,
      embedding and head too, held in T) equal 5 steps of `--model
      T_f32.h5` within TOL_GGUF: losses, gradient norms, adapters; and the
      dequantised base llamac trains on equals the converted file's.
      llamac only: PyTorch makes the initial adapter.

torch runs on one thread: bitsandbytes' NF4 offset (the mean absmax) is
summed in per-thread chunks otherwise (scripts/nf4_ref.py), and llamac
follows the one-thread order.

Prints PASS/FAIL per check and "test_qlora_ref: N passed, M failed"; exit 1
on any failure.
"""

import argparse
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_llama import doc_mask  # noqa: E402  (the additive document mask)
from refcheck import check, run, summary  # noqa: E402
from test_sft_ref import CONVS, LLAMA3_SPECIALS, read_jsonl, sched_lr, train_tokenizer, write_jsonl  # noqa: E402

# (a): |a - b| <= TOL_NF4 * max|b| per step / per tensor (issue 24). Both
# sides hold the same NF4 bytes and dequantise them to the same floats; what
# is left is float32 summation order (OpenBLAS vs torch), as in
# scripts/test_sft_ref.py's LoRA check. Measured here: losses 2e-7,
# gradient norms 3e-6, adapters after ten AdamW steps 1.5e-5.
TOL_NF4 = 1e-4
# (b): the same program on the same floats, once dequantised a tile at a time
# inside the op (ops.h qmatmul_*) and once loaded dequantised: only the
# GEMMs' blocking could differ. Measured here: bit-identical (0) for every type.
TOL_GGUF = 1e-5
# merged_base: what its lr-1e-30 step adds, at most |B| (1e-30) * |A| * r * scale
DEQ_TOL = 1e-20

SPEC_A = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=256, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)
SPEC_B = dict(SPEC_A, hidden_size=256, intermediate_size=512)
GGUF_TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"]
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# one schedule for both parts: warmup, cosine, decay and clipping all active
# (the NF4 run's norms are ~2.5-5.4: clip 3.5 takes both branches)
B, T, LR, WARMUP, WFRAC, MINF, WD, CLIP, SEED = 2, 128, 3e-3, 2, 0.5, 0.1, 0.1, 3.5, 11


def build_model(path, spec, vocab, seed):
    """A random Llama saved as a HF directory; weights 4x the 0.02 init (so
    the losses are not all ~log V and the quantisation error is visible)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**spec, vocab_size=vocab, attention_bias=False, mlp_bias=False, hidden_act="silu",
                      use_cache=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
            elif p.ndim == 2:
                p.mul_(4.0)
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)


def load_model(path, nf4=False):
    import torch
    from transformers import BitsAndBytesConfig, LlamaForCausalLM
    kw = {}
    if nf4:
        kw = dict(device_map="cpu", quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32))
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw).eval()


def peft_init(hf, path, seed, **kw):
    """A PEFT adapter on hf with A and B random and nonzero (so step 1 moves
    both), saved to path."""
    import torch
    from peft import LoraConfig, get_peft_model
    pm = get_peft_model(load_model(hf), LoraConfig(task_type="CAUSAL_LM", **kw))
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape))
    shutil.rmtree(path, ignore_errors=True)
    pm.save_pretrained(path)


def sft(llamac, work, tag, model, tpath, data, steps, flags, lr=LR):
    """llamac sft on model for steps; (losses, grad norms, batches, adapter
    dir, the last checkpoint's /lora attributes), or None when it fails.
    Every output goes under work/tag*."""
    import h5py
    met, bat, ad = (os.path.join(work, f"{tag}{x}") for x in (".jsonl", ".batches", "_adapter"))
    for p in (met, bat):
        if os.path.exists(p):
            os.remove(p)
    shutil.rmtree(ad, ignore_errors=True)
    ck = os.path.join(work, f"{tag}_ck")
    r = run(llamac, "sft", "--model", model, "--tokenizer", tpath, "--data", data, "--template", "llama3",
            "--seq", T, "--batch", B, "--steps", steps, "--lr", lr, "--warmup", WARMUP, "--warmup-frac", WFRAC,
            "--lr-min-frac", MINF, "--weight-decay", WD, "--clip", CLIP, "--seed", SEED, "--peak-gflops", 1,
            *flags, "--adapter-out", ad, "--metrics", met, "--dump-batches", bat, "--ckpt-dir", ck,
            "--out", os.path.join(work, f"{tag}.h5"))
    attrs = {}
    last = sorted(f for f in os.listdir(ck) if f.endswith(".h5"))[-1:] if os.path.isdir(ck) else []
    for f in last:  # how the run held its base: base_quant, base_hash
        with h5py.File(os.path.join(ck, f), "r") as h:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h["lora"].attrs.items()}
    shutil.rmtree(ck, ignore_errors=True)
    if r.returncode != 0:
        return None
    st = [x for x in read_jsonl(met) if "grad_norm" in x]
    return [x["loss"] for x in st], [x["grad_norm"] for x in st], read_jsonl(bat), ad, attrs


def worst_rel(got, want):
    """max |a - b| / max|b| over a sequence (losses, norms)."""
    return max(abs(a - b) for a, b in zip(got, want)) / max(abs(b) for b in want)


def compare_adapters(name, got_dir, want_dir, start_dir, tol):
    from safetensors.numpy import load_file
    got = load_file(os.path.join(got_dir, "adapter_model.safetensors"))
    want = load_file(os.path.join(want_dir, "adapter_model.safetensors"))
    start = load_file(os.path.join(start_dir, "adapter_model.safetensors"))
    if not check(f"{name}: the adapter has the reference's {len(want)} tensors", set(got) == set(want),
                 f"{sorted(set(got) ^ set(want))[:6]}"):
        return False
    errs = {k: float(np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()) for k in want}
    k = max(errs, key=errs.get)
    ok = check(f"{name}: final adapter equal (worst rel {errs[k]:.1e}, {k})", errs[k] <= tol, f"exceeds {tol}")
    moved = min(float(np.abs(want[k] - start[k]).max() / np.abs(start[k]).max()) for k in want)
    return check(f"{name}: every adapter tensor moved in training (least {moved:.1e} relative)",
                 moved > 100 * tol) and ok


def merged_base(llamac, work, tag, model, tpath, data, flags):
    """The base llamac trains on, as floats: --merged-out of a one-step run
    at lr 1e-30 from an adapter with B = 0 (kaiming): B moves by ~1e-30, so
    the merge adds < DEQ_TOL to each weight (below the last bit of any
    nonzero one; NF4's code 0.0 gets it whole). {name: array} or None."""
    import h5py
    out = os.path.join(work, f"{tag}_merged.h5")
    if os.path.exists(out):
        os.remove(out)
    if sft(llamac, work, tag, model, tpath, data, 1, [*flags, "--merged-out", out], lr=1e-30) is None:
        return None
    with h5py.File(out, "r") as f:
        return {n: f["model"][n][()] for n in f["model"]}


# ---------------------------------------------------------------- (a) NF4

def replay(ref, batches, steps):
    """PEFT + torch AdamW over llamac's micro-batches (one per step), as
    scripts/test_sft_ref.py's part (c): (losses, pre-clip norms)."""
    import torch
    import torch.nn.functional as F
    ref.train()  # dropout 0: changes nothing, but is what training uses
    params = [p for n, p in ref.named_parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in ref.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), eps=1e-5, weight_decay=WD, foreach=False)
    losses, norms = [], []
    for s in range(steps):
        b = batches[s]
        tok, tgt, pos = (torch.tensor(b[k]).view(B, T) for k in ("tokens", "targets", "pos"))
        doc = torch.cumsum((pos == 0).long(), dim=1)
        opt.zero_grad(set_to_none=True)
        logits = ref(input_ids=tok, position_ids=pos, attention_mask=doc_mask(doc), use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-1)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
        for g in opt.param_groups:
            g["lr"] = sched_lr(s, LR, WARMUP, steps, MINF, WFRAC)
        opt.step()
        losses.append(loss.item())
    return losses, norms


def part_a(llamac, work, tpath, data, vocab):
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from peft import PeftModel
    STEPS = 10
    name = "NF4 QLoRA"
    hf = os.path.join(work, "a_hf")
    build_model(hf, SPEC_A, vocab, seed=7)
    kw = dict(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    flags = ["--lora-r", 16, "--lora-alpha", 32, "--lora-targets", "q_proj,k_proj,v_proj,o_proj"]
    init = os.path.join(work, "a_init")
    peft_init(hf, init, seed=50, **kw)

    # bitsandbytes' NF4 weights against llamac's dequantised base
    qref = load_model(hf, nf4=True)
    got = merged_base(llamac, work, "a_deq", hf, tpath, data, [*flags, "--base-quant", "nf4"])
    if check(f"{name}: llamac --base-quant nf4 --merged-out runs", got is not None):
        nq, worst, wname = 0, 0.0, ""
        for n, mod in qref.named_modules():
            if type(mod).__name__ != "Linear4bit":
                continue
            w = dequantize_4bit(mod.weight.data, mod.weight.quant_state).numpy()
            d = float(np.abs(got[n + ".weight"] - w).max())
            nq += 1
            if d >= worst:
                worst, wname = d, n
        check(f"{name}: llamac's dequantised NF4 equals bitsandbytes' on all {nq} Linear4bit weights "
              f"(max |diff| {worst:.1e}, {wname})", nq == 7 * SPEC_A["num_hidden_layers"] and worst <= DEQ_TOL)
        float_sd = load_model(hf).state_dict()
        same = [n for n in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight")
                if np.array_equal(got[n], float_sd[n].numpy())]  # no adapters on them
        check(f"{name}: embedding, head and final norm stay float32 ({len(same)} of 3 equal)", len(same) == 3)

    res = sft(llamac, work, "a_train", hf, tpath, data, STEPS, [*flags, "--base-quant", "nf4", "--lora-init", init])
    if not check(f"{name}: llamac sft --base-quant nf4 --lora-init PEFT_DIR runs {STEPS} steps", res is not None):
        return
    losses, norms, batches, ad, attrs = res
    check(f"{name}: the run's checkpoint records its base held as nf4", attrs.get("base_quant") == "nf4",
          f"/lora attributes {attrs}")
    if not check(f"{name}: {STEPS} steps, one micro-batch each", len(losses) == STEPS and len(batches) == STEPS,
                 f"{len(losses)} losses, {len(batches)} batches"):
        return
    ref = PeftModel.from_pretrained(qref, init, is_trainable=True)
    ref_losses, ref_norms = replay(ref, batches, STEPS)
    w = worst_rel(losses, ref_losses)
    check(f"{name}: {STEPS} losses equal PEFT + bitsandbytes + torch AdamW (worst rel {w:.1e}; "
          f"{ref_losses[0]:.4f} -> {ref_losses[-1]:.4f})", w <= TOL_NF4,
          f"\n  llamac {losses}\n  torch  {ref_losses}")
    check(f"{name}: the loss falls", ref_losses[-1] < ref_losses[0])
    w = worst_rel(norms, ref_norms)
    clipped = [k for k, g in enumerate(ref_norms) if g > CLIP]
    check(f"{name}: pre-clip gradient norms equal (worst rel {w:.1e}; {min(ref_norms):.2f}..{max(ref_norms):.2f})",
          w <= TOL_NF4, f"\n  llamac {norms}\n  torch  {ref_norms}")
    check(f"{name}: clipping at {CLIP} active on steps {clipped} only", 0 < len(clipped) < STEPS)
    ref_dir = os.path.join(work, "a_ref_adapter")
    shutil.rmtree(ref_dir, ignore_errors=True)
    ref.save_pretrained(ref_dir)
    compare_adapters(name, ad, ref_dir, init, TOL_NF4)

    # not vacuous: the same first batch on the float base gives another loss
    fl = PeftModel.from_pretrained(load_model(hf), init, is_trainable=True)
    ref_fl, _ = replay(fl, batches[:1], 1)
    d = abs(ref_fl[0] - ref_losses[0]) / abs(ref_losses[0])
    check(f"{name}: NF4 moves the first loss off the float base's by {d:.1e} (> 10 x TOL)", d > 10 * TOL_NF4)


# ---------------------------------------------------------------- (b) GGUF

def part_b(llamac, work, tpath, data, vocab):
    STEPS = 5
    hf = os.path.join(work, "b_hf")
    build_model(hf, SPEC_B, vocab, seed=8)
    kw = dict(r=8, lora_alpha=16, target_modules=LINEARS)
    flags = ["--lora-r", 8, "--lora-alpha", 16, "--lora-targets", "all-linear"]
    init = os.path.join(work, "b_init")
    peft_init(hf, init, seed=60, **kw)
    for ty in GGUF_TYPES:
        name = f"GGUF {ty}"
        gg, f32 = os.path.join(work, f"b_{ty}.gguf"), os.path.join(work, f"b_{ty}_f32.h5")
        for p in (gg, f32):
            if os.path.exists(p):
                os.remove(p)
        r = run(llamac, "quantize", hf, gg, "--type", ty, "--tokenizer", tpath)
        if not check(f"{name}: llamac quantize --type {ty}, every matrix {ty} (no fallback)",
                     r.returncode == 0 and f"{ty}" in r.stdout.lower() and "f16" not in r.stdout.lower(),
                     r.stdout[-400:]):
            continue
        r = run(llamac, "convert", gg, f32)
        if not check(f"{name}: llamac convert to float32", r.returncode == 0):
            continue
        import h5py
        with h5py.File(f32, "r") as f:
            want = {n: f["model"][n][()] for n in f["model"]}
        # the tokenizer: the GGUF's own vocabulary, whose identity the float32
        # checkpoint records. It is not tokenizer.json's, rightly: GGUF has no
        # ignore_merges field, and its "llama-bpe" pre-tokenizer means
        # ignore_merges on (data/tok.c), which this tokenizer.json has off
        got = merged_base(llamac, work, f"b_{ty}_deq", gg, gg, data, [*flags, "--base-quant", "keep"])
        if check(f"{name}: llamac --base-quant keep --merged-out runs", got is not None):
            diff = {n: float(np.abs(got[n] - want[n]).max()) for n in want}
            n = max(diff, key=diff.get)
            check(f"{name}: the base held quantised dequantises to the converted file ({len(want)} tensors, "
                  f"max |diff| {diff[n]:.1e}, {n})", set(got) == set(want) and diff[n] <= DEQ_TOL)
        q = sft(llamac, work, f"b_{ty}_keep", gg, gg, data, STEPS,
                [*flags, "--base-quant", "keep", "--lora-init", init])
        fl = sft(llamac, work, f"b_{ty}_f32", f32, gg, data, STEPS, [*flags, "--lora-init", init])
        if not check(f"{name}: {STEPS} steps of --base-quant keep and of the float32 base run",
                     q is not None and fl is not None and len(q[0]) == len(fl[0]) == STEPS):
            continue
        check(f"{name}: the same micro-batches", q[2] == fl[2])
        # not vacuous: one run held the base in the GGUF's blocks (its
        # checkpoint's base hash is over them), the other in float32
        check(f"{name}: the keep run's checkpoint records a quantised base, the float run's none",
              q[4].get("base_quant") == "keep" and "base_quant" not in fl[4]
              and q[4].get("base_hash") != fl[4].get("base_hash"), f"\n  keep {q[4]}\n  f32  {fl[4]}")
        w = worst_rel(q[0], fl[0])
        check(f"{name}: {STEPS} losses equal (worst rel {w:.1e}; {fl[0][0]:.4f} -> {fl[0][-1]:.4f})",
              w <= TOL_GGUF, f"\n  keep {q[0]}\n  f32  {fl[0]}")
        w = worst_rel(q[1], fl[1])
        check(f"{name}: gradient norms equal (worst rel {w:.1e})", w <= TOL_GGUF, f"\n  keep {q[1]}\n  f32  {fl[1]}")
        if compare_adapters(name, q[3], fl[3], init, TOL_GGUF):
            for f in os.listdir(work):  # this type's files, kept only when a check fails
                if f.startswith(f"b_{ty}"):
                    p = os.path.join(work, f)
                    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_qlora_ref")
    args = ap.parse_args()
    llamac = os.path.abspath(args.llamac)
    os.makedirs(args.work, exist_ok=True)
    import torch
    torch.set_num_threads(1)
    import bitsandbytes
    print(f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}")
    tpath = os.path.join(args.work, "tokenizer.json")
    tok = train_tokenizer(tpath, LLAMA3_SPECIALS, "<|begin_of_text|>")
    data = os.path.join(args.work, "convs.jsonl")
    write_jsonl(data, [{"messages": c} for c in CONVS])
    print("== (a) NF4 against PEFT + bitsandbytes")
    part_a(llamac, args.work, tpath, data, tok.get_vocab_size())
    print("== (b) GGUF types against the dequantised base")
    part_b(llamac, args.work, tpath, data, tok.get_vocab_size())
    return summary("test_qlora_ref")


if __name__ == "__main__":
    sys.exit(main())
