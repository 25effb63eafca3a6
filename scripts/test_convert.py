#!/usr/bin/env python3
"""`llamac convert` against the reference libraries (run by scripts/test_ref.sh).

What: builds two tiny random LlamaForCausalLM models with transformers --
Llama 2 style (MHA, untied lm_head, RoPE theta 1e4) and Llama 3.2 style (GQA,
tied embeddings, theta 5e5, llama3 RoPE scaling whose 8 frequencies fall in
all three regions) -- and saves each four ways: float32, float16, bfloat16,
and float32 sharded (max_shard_size small, with model.safetensors.index.json).
For every save:

  1. `llamac convert DIR x.h5`; h5py reads /model/<name> (names, shapes and
     values equal to the saved tensors upcast to float32: exact, since F16
     and BF16 widen exactly) and /config (every field);
  2. `llamac logits` on the checkpoint equals transformers' logits for the
     same tokens (the saved weights loaded in float32) within ATOL;
and for the float32 saves:
  3. `llamac convert x.h5 OUTDIR`: transformers loads OUTDIR with no missing
     or unexpected keys, its weights equal the original's bit for bit and so
     do its logits;
  4. `llamac convert x.h5 x.gguf`; gguf.GGUFReader (PyPI) reads the version,
     alignment, every metadata key (names from gguf's own constants), tensor
     names (gguf's llama tensor list), dims (innermost first), F32 type and
     values: after undoing llama.cpp's q/k row order they equal the HF
     weights. The RoPE meaning of that order and of rope_freqs is checked
     directly: attention scores from the GGUF weights with llama.cpp's
     interleaved RoPE (frequencies divided by rope_freqs) equal those from
     the HF weights with transformers' rotate_half RoPE.
  5. HF directory -> GGUF directly gives the same bytes as via the checkpoint.
  6. `llamac convert x.h5 x.gguf --type f16|bf16|q8_0`: every matrix's bytes
     equal numpy's float16 conversion (f16) or gguf.quants.quantize of the
     float32 weights (bf16, q8_0: llama.cpp's own definition of the
     formats), dequantize gives back what llama.cpp computes with, 1-D
     tensors stay F32, a matrix whose rows are not whole Q8_0 blocks falls
     back to F16, general.file_type names the type; --template writes
     tokenizer.chat_template.
  7. `llamac convert x.h5 HF_DIR --tokenizer T --template llama3.1` for a
     llamac BPE (Llama 3 split) and a tokenizer.json: AutoTokenizer loads the
     directory and gives llamac's ids (`llamac tokenize ids`) for mixed text,
     its apply_chat_template (the exported Jinja) gives `llamac tokenize
     chat`'s ids, pipeline("text-generation") greedy gives `llamac generate
     --temperature 0`'s text, and `convert HF_DIR back.h5` records the
     directory's tokenizer (generate with HF_DIR/tokenizer.json works); a
     SentencePiece model the same way (tokenizer.model copied, LlamaTokenizer;
     ids also equal sentencepiece's; greedy text through model.generate).

Prints PASS/FAIL per check and "test_convert: N passed, M failed"; exits 1
on any failure.
"""

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

from refcheck import check, run as run_llamac, summary

# Logits tolerance: the C forward and transformers' eager float32 forward sum
# in different orders; 1e-4 absolute is what the committed reference
# fixtures use for the same tiny shapes (logits of magnitude ~1).
ATOL = 1e-4
T_TOKENS = 24

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=256,
              max_position_embeddings=64, rms_norm_eps=1e-5)
MODELS = {
    "llama2": dict(COMMON, seed=11, num_key_value_heads=4, intermediate_size=172,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                   tie_word_embeddings=False),
    "llama32": dict(COMMON, seed=22, num_key_value_heads=2, intermediate_size=160,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 48},
                    tie_word_embeddings=True),
}
VARIANTS = [("f32", "float32", None), ("f16", "float16", None), ("bf16", "bfloat16", None),
            ("f32_sharded", "float32", "40KB")]


def run(llamac, *args):
    return run_llamac(llamac, *args).returncode == 0


def build(spec):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    kw = {k: v for k, v in spec.items() if k != "seed"}
    cfg = LlamaConfig(**kw, attention_bias=False, mlp_bias=False, hidden_act="silu", use_cache=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # norm gains away from 1 so that they matter
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
    return model


def load_hf(path):
    import torch
    from transformers import LlamaForCausalLM
    m, info = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager",
                                               output_loading_info=True)
    return m.eval(), info


def hf_logits(model, tokens):
    import torch
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokens]), use_cache=False).logits[0].float().numpy()


def saved_tensors(d):
    """name -> float32 numpy array of every tensor in d's safetensors files."""
    from safetensors import safe_open
    out = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(d, fn), framework="pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k).float().numpy()
    return out


def check_h5(tag, h5path, tensors, spec):
    import h5py
    with h5py.File(h5path, "r") as f:
        names = sorted(f["model"].keys())
        want = sorted(k for k in tensors if "rotary_emb" not in k)
        check(f"{tag} h5 tensor names", names == want, f"{set(names) ^ set(want)}")
        bad = [n for n in want if n in f["model"] and not (
            f["model"][n].dtype == np.float32 and f["model"][n].shape == tensors[n].shape
            and np.array_equal(f["model"][n][()], tensors[n]))]
        check(f"{tag} h5 tensor shapes and values", not bad, f"differ: {bad[:4]}")
        a = f["config"].attrs
        rp = spec["rope_parameters"]
        scaled = rp["rope_type"] == "llama3"
        want_cfg = dict(dim=spec["hidden_size"], n_layers=spec["num_hidden_layers"],
                        n_heads=spec["num_attention_heads"], n_kv_heads=spec["num_key_value_heads"],
                        hidden=spec["intermediate_size"], vocab=spec["vocab_size"],
                        max_seq=spec["max_position_embeddings"], norm_eps=spec["rms_norm_eps"],
                        rope_theta=rp["rope_theta"], rope_scaling=1 if scaled else 0,
                        tied=int(spec["tie_word_embeddings"]), tokenizer_id=0)
        if scaled:
            want_cfg.update(rope_factor=rp["factor"], rope_low_freq=rp["low_freq_factor"],
                            rope_high_freq=rp["high_freq_factor"],
                            rope_orig_ctx=rp["original_max_position_embeddings"])
        wrong = {k: (a.get(k), v) for k, v in want_cfg.items()
                 if k not in a or not np.isclose(float(a[k]), float(v), rtol=1e-7, atol=0)}
        check(f"{tag} h5 /config attributes", not wrong, f"(got, want): {wrong}")


def check_logits(tag, llamac, model_path, ref, tokens, work):
    out = os.path.join(work, "logits.bin")
    if not check(f"{tag} llamac logits runs", run(llamac, "logits", "--model", model_path, "--tokens",
                                                 ",".join(map(str, tokens)), "--out", out)):
        return
    got = np.fromfile(out, dtype="<f4")
    if not check(f"{tag} logits size", got.size == ref.size, f"{got.size} vs {ref.size}"):
        return
    err = np.abs(got.reshape(ref.shape) - ref).max()
    check(f"{tag} logits vs transformers (max|diff| {err:.2e} <= {ATOL})", err <= ATOL, f"{err:.3e}")


# ---------------------------------------------------------------- GGUF

def unpermute(w, n_head):
    """llama.cpp's q/k row order back to HF's: within each head, file row
    2i + j holds HF row j*HS/2 + i."""
    rows, cols = w.shape
    hs = rows // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(hs // 2):
            for j in range(2):
                out[h * hs + j * hs // 2 + i] = w[h * hs + 2 * i + j]
    return out


def rope_factors_ref(spec):
    """Per-frequency divisors of llama.cpp's rope_freqs, from HF's llama3 rule, float64."""
    rp = spec["rope_parameters"]
    hs = spec["hidden_size"] // spec["num_attention_heads"]
    theta, factor = rp["rope_theta"], rp["factor"]
    lo, hi, ctx = rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    out = []
    for i in range(hs // 2):
        f = theta ** (-2 * i / hs)
        wl = 2 * math.pi / f
        if wl < ctx / hi:
            out.append(1.0)
        elif wl > ctx / lo:
            out.append(factor)
        else:
            s = (ctx / wl - lo) / (hi - lo)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out)


def scores_check(tag, spec, hf_sd, gg, rope_freqs):
    """q.k per head at positions (5, 17) from HF weights + rotate_half RoPE vs
    GGUF weights + interleaved RoPE with frequencies / rope_freqs, float64."""
    H, KV = spec["num_attention_heads"], spec["num_key_value_heads"]
    D = spec["hidden_size"]
    hs = D // H
    theta = spec["rope_parameters"]["rope_theta"]
    inv = np.array([theta ** (-2 * i / hs) for i in range(hs // 2)])
    fac = rope_freqs if rope_freqs is not None else np.ones(hs // 2)
    inv = inv / fac  # what transformers' llama3 inv_freq is (checked separately)
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal(D), rng.standard_normal(D)
    p1, p2 = 5, 17

    def rot_half(v, p):  # HF: pairs (i, i + hs/2)
        v = v.reshape(-1, hs)
        c, s = np.cos(p * inv), np.sin(p * inv)
        a, b = v[:, :hs // 2], v[:, hs // 2:]
        return np.concatenate([a * c - b * s, b * c + a * s], axis=1)

    def rot_inter(v, p):  # llama.cpp: pairs (2i, 2i + 1)
        v = v.reshape(-1, hs // 2, 2)
        c, s = np.cos(p * inv), np.sin(p * inv)
        a, b = v[..., 0], v[..., 1]
        return np.stack([a * c - b * s, b * c + a * s], axis=-1).reshape(-1, hs)

    q_hf = hf_sd["model.layers.0.self_attn.q_proj.weight"].astype(np.float64)
    k_hf = hf_sd["model.layers.0.self_attn.k_proj.weight"].astype(np.float64)
    q_gg = gg["blk.0.attn_q.weight"].astype(np.float64)
    k_gg = gg["blk.0.attn_k.weight"].astype(np.float64)
    qa, ka = rot_half(q_hf @ x1, p2), rot_half(k_hf @ x2, p1)
    qb, kb = rot_inter(q_gg @ x1, p2), rot_inter(k_gg @ x2, p1)
    g = H // KV
    sa = np.array([qa[h] @ ka[h // g] for h in range(H)])
    sb = np.array([qb[h] @ kb[h // g] for h in range(H)])
    err = np.abs(sa - sb).max()
    check(f"{tag} gguf RoPE layout: attention scores equal HF's (max|diff| {err:.1e})", err < 1e-9, f"{err}")


def check_gguf(tag, path, spec, hf_sd, name):
    import gguf
    from gguf import GGUFReader
    r = GGUFReader(path)
    fv = lambda k: r.fields[k].contents() if k in r.fields else None
    rp = spec["rope_parameters"]
    scaled = rp["rope_type"] == "llama3"
    H, KV, D = spec["num_attention_heads"], spec["num_key_value_heads"], spec["hidden_size"]
    K = gguf.Keys
    arch = "llama"
    want = {
        K.General.ARCHITECTURE: arch, K.General.NAME: name, K.General.ALIGNMENT: 32, K.General.FILE_TYPE: 0,
        K.LLM.CONTEXT_LENGTH.format(arch=arch): spec["max_position_embeddings"],
        K.LLM.EMBEDDING_LENGTH.format(arch=arch): D,
        K.LLM.BLOCK_COUNT.format(arch=arch): spec["num_hidden_layers"],
        K.LLM.FEED_FORWARD_LENGTH.format(arch=arch): spec["intermediate_size"],
        K.Attention.HEAD_COUNT.format(arch=arch): H,
        K.Attention.HEAD_COUNT_KV.format(arch=arch): KV,
        K.Rope.FREQ_BASE.format(arch=arch): rp["rope_theta"],
        K.Attention.LAYERNORM_RMS_EPS.format(arch=arch): spec["rms_norm_eps"],
        K.Rope.DIMENSION_COUNT.format(arch=arch): D // H,
        K.LLM.VOCAB_SIZE.format(arch=arch): spec["vocab_size"],
        K.Tokenizer.MODEL: "no_vocab",  # llama.cpp: a model without a vocabulary
    }
    check(f"{tag} gguf version 3", fv("GGUF.version") == 3, f"{fv('GGUF.version')}")
    wrong = {}
    for k, v in want.items():
        got = fv(k)
        same = got == v if isinstance(v, str) else (got is not None and np.isclose(got, v, rtol=1e-7, atol=0))
        if not same:
            wrong[k] = (got, v)
    check(f"{tag} gguf metadata ({len(want)} keys)", not wrong, f"(got, want): {wrong}")

    # tensor names: exactly gguf's llama names for the HF tensors
    L = spec["num_hidden_layers"]
    tn = gguf.TENSOR_NAMES
    MT = gguf.MODEL_TENSOR
    hf2gg = {"model.embed_tokens.weight": tn[MT.TOKEN_EMBD] + ".weight",
             "model.norm.weight": tn[MT.OUTPUT_NORM] + ".weight"}
    if not spec["tie_word_embeddings"]:
        hf2gg["lm_head.weight"] = tn[MT.OUTPUT] + ".weight"
    per = {"self_attn.q_proj": MT.ATTN_Q, "self_attn.k_proj": MT.ATTN_K, "self_attn.v_proj": MT.ATTN_V,
           "self_attn.o_proj": MT.ATTN_OUT, "mlp.gate_proj": MT.FFN_GATE, "mlp.up_proj": MT.FFN_UP,
           "mlp.down_proj": MT.FFN_DOWN, "input_layernorm": MT.ATTN_NORM,
           "post_attention_layernorm": MT.FFN_NORM}
    for l in range(L):
        for h, m in per.items():
            hf2gg[f"model.layers.{l}.{h}.weight"] = tn[m].format(bid=l) + ".weight"
    want_names = set(hf2gg.values()) | ({tn[MT.ROPE_FREQS] + ".weight"} if scaled else set())
    got = {t.name: t for t in r.tensors}
    check(f"{tag} gguf tensor names", set(got) == want_names, f"{set(got) ^ want_names}")
    check(f"{tag} gguf tensors F32, data aligned to 32",
          all(t.tensor_type == gguf.GGMLQuantizationType.F32 and t.data_offset % 32 == 0 for t in r.tensors)
          and r.data_offset % 32 == 0, "type or alignment")
    bad = []
    gg = {}
    for hn, gn in hf2gg.items():
        t = got.get(gn)
        if t is None:
            bad.append(gn)
            continue
        w = np.asarray(t.data, dtype=np.float32)
        ref = hf_sd[hn]
        if list(t.shape) != list(reversed(ref.shape)) or w.shape != ref.shape:  # dims innermost first
            bad.append(f"{gn} shape {list(t.shape)}")
            continue
        gg[gn] = w
        if hn.endswith("q_proj.weight"):
            w = unpermute(w, H)
        elif hn.endswith("k_proj.weight"):
            w = unpermute(w, KV)
        if not np.array_equal(w, ref):
            bad.append(gn)
    check(f"{tag} gguf shapes and values (q/k un-permuted) equal HF", not bad, f"{bad[:4]}")
    rf = None
    if scaled:
        t = got.get("rope_freqs.weight")
        if check(f"{tag} gguf rope_freqs present", t is not None, "missing"):
            rf = np.asarray(t.data, dtype=np.float64)
            ref = rope_factors_ref(spec)
            err = np.abs(rf / ref - 1).max()
            check(f"{tag} gguf rope_freqs = llama3 factors (rel err {err:.1e})", err < 1e-6, f"{rf} vs {ref}")
            regions = {"high" if v == 1 else "low" if v == rp["factor"] else "mid" for v in ref}
            check(f"{tag} rope frequencies cover all three llama3 regions", len(regions) == 3, f"{regions}")
    if "blk.0.attn_q.weight" in gg and "blk.0.attn_k.weight" in gg:
        scores_check(tag, spec, hf_sd, gg, rf)


def check_gguf_types(tag, llamac, h5, spec, hf_sd):
    """GGUF exports with F16, BF16 and Q8_0 matrices against numpy / gguf.quants (hf_sd unused:
    the float32 GGUF, checked against it above, gives the permuted layout)."""
    import gguf
    from gguf import GGUFReader
    from gguf.quants import dequantize, quantize
    Q = gguf.GGMLQuantizationType
    H, KV = spec["num_attention_heads"], spec["num_key_value_heads"]
    ftypes = {"f16": (Q.F16, 1), "bf16": (Q.BF16, 32), "q8_0": (Q.Q8_0, 7)}
    for ty, (qt, ftype) in ftypes.items():
        path = h5[:-3] + f"_{ty}.gguf"
        if not check(f"{tag} convert -> GGUF --type {ty}", run(llamac, "convert", h5, path, "--type", ty,
                                                               "--template", "chatml")):
            continue
        r = GGUFReader(path)
        fv = lambda k: r.fields[k].contents() if k in r.fields else None
        check(f"{tag} gguf {ty} general.file_type {ftype}", fv(gguf.Keys.General.FILE_TYPE) == ftype,
              f"{fv(gguf.Keys.General.FILE_TYPE)}")
        ref32 = {}  # GGUF name -> the float32 tensor as llama.cpp lays it out
        r32 = GGUFReader(h5[:-3] + ".gguf")
        for t in r32.tensors:
            ref32[t.name] = np.asarray(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
        bad, types, fallback = [], set(), 0
        for t in r.tensors:
            w = ref32[t.name]
            if w.ndim == 1:
                if t.tensor_type != Q.F32 or not np.array_equal(np.asarray(t.data), w):
                    bad.append(f"{t.name} 1-D not F32")
                continue
            want_t = qt if qt != Q.Q8_0 or w.shape[-1] % 32 == 0 else Q.F16
            fallback += want_t != qt
            types.add(t.tensor_type)
            if t.tensor_type != want_t:
                bad.append(f"{t.name} type {t.tensor_type.name}, want {want_t.name}")
                continue
            want = w.astype(np.float16) if want_t == Q.F16 else quantize(w, want_t)
            raw = np.asarray(t.data)
            if raw.tobytes() != want.tobytes():
                bad.append(f"{t.name} bytes")
                continue
        what = {"f16": "numpy float16", "bf16": "gguf.quants BF16", "q8_0": "gguf.quants Q8_0"}[ty]
        check(f"{tag} gguf {ty}: every matrix's bytes equal {what} of the float32 weights"
              + (f" ({fallback} F16 fallbacks: rows not whole blocks)" if fallback else ""), not bad, f"{bad[:4]}")
        if ty == "q8_0":
            # what llama.cpp computes with: within half a step d = max|x|/127 of the float32 weights,
            # plus what rounding d to f16 adds (127 * 2^-11 steps)
            errs = []
            for t in r.tensors:
                w = ref32[t.name]
                if w.ndim == 2 and t.tensor_type == Q.Q8_0:
                    deq = dequantize(np.asarray(t.data).view(np.uint8), Q.Q8_0).reshape(w.shape)
                    step = np.abs(w.reshape(-1, 32)).max(axis=1) / 127
                    errs.append((np.abs((deq - w).reshape(-1, 32)).max(axis=1) / np.maximum(step, 1e-30)).max())
            e = max(errs) if errs else 9
            check(f"{tag} gguf q8_0 dequantized within 0.5 step (+ f16 scale rounding) of float32 ({e:.3f})",
                  e <= 0.5 + 127 * 2.0 ** -11 + 1e-6, f"{e}")
        ct = fv("tokenizer.chat_template")
        check(f"{tag} gguf {ty} carries --template chatml as tokenizer.chat_template",
              isinstance(ct, str) and ct.startswith("{% for message in messages %}") and "<|im_start|>" in ct,
              f"{ct!r:.80}")


HF_TEXT = ("The quick brown fox jumps over the lazy dog. It's 1234 o'clock; naïve café 你好 🦙\n"
           "  two  spaces\tand tabs\n\n\nnewlines, don't we'll I'M 3.14159 x1y22z333 ...!!! (a) [b] {c}\n")


def check_hf_tokenizer(llamac, work):
    """HF directories exported with their tokenizer, against transformers."""
    import torch
    from transformers import AutoTokenizer, pipeline
    d = os.path.join(work, "hf_tok")
    os.makedirs(d, exist_ok=True)
    corpus = os.path.join(d, "t.txt")
    with open(corpus, "w") as f:
        f.write(("the king and the queen went to the castle. the cat sat on the mat. " * 30 + HF_TEXT) * 20)
    from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers
    hf = Tokenizer(models.BPE(ignore_merges=True))
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    hf.train([corpus], trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>"]))
    hf.save(os.path.join(d, "tokenizer.json"))
    ok = run(llamac, "tokenize", "train", "--input", corpus, "--vocab", "400", "--out", os.path.join(d, "tok.bin"))
    probe = os.path.join(d, "probe.txt")
    with open(probe, "w") as f:
        f.write(HF_TEXT)
    chats = os.path.join(d, "chats.jsonl")
    convs = [[{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "the king?"},
              {"role": "assistant", "content": "went to the castle."}, {"role": "user", "content": "and the cat"}],
             [{"role": "user", "content": "no system here\n"}]]
    with open(chats, "w") as f:
        for cv in convs:
            f.write(json.dumps({"messages": cv}) + "\n")
    for kind, tokpath in (("llamac BPE", os.path.join(d, "tok.bin")), ("tokenizer.json", os.path.join(d, "tokenizer.json"))):
        tag = f"HF export with tokenizer ({kind})"
        base = os.path.join(d, kind.split()[0].replace(".", "_"))
        out = base + "_hf"
        if not check(f"{tag}: shard, 60 training steps, export", ok and
                     run(llamac, "tokenize", "encode", "--tokenizer", tokpath, "--input", corpus, "--out", base + ".bin")
                     and run(llamac, "pretrain", "--train", base + ".bin", "--preset", "tiny", "--steps", "60",
                             "--batch", "4", "--seq", "64", "--lr", "3e-3", "--warmup", "5", "--ckpt-dir",
                             base + "_ck", "--out", base + ".h5", "--peak-gflops", "1")
                     and run(llamac, "convert", base + ".h5", out, "--force", "--tokenizer", tokpath,
                             "--template", "llama3.1")):
            continue
        names = sorted(os.listdir(out))
        check(f"{tag}: files", {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(names),
              f"{names}")
        at = AutoTokenizer.from_pretrained(out)
        want = [int(i) for i in subprocess.run([llamac, "tokenize", "ids", "--tokenizer", tokpath, probe],
                                               capture_output=True, text=True).stdout.split()]
        got = at(HF_TEXT)["input_ids"]
        check(f"{tag}: AutoTokenizer's ids equal llamac's ({len(want)} ids)", got == want,
              f"\n  hf     {got}\n  llamac {want}")
        cfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
        check(f"{tag}: tokenizer_config bos/eos", cfg["bos_token"] == "<|begin_of_text|>" and
              cfg["eos_token"] == "<|end_of_text|>" and at.bos_token_id == want_id(llamac, tokpath, "<|begin_of_text|>"),
              f"{cfg['bos_token']} {cfg['eos_token']}")
        r = subprocess.run([llamac, "tokenize", "chat", "--tokenizer", tokpath, "--template", "llama3.1", chats],
                           capture_output=True, text=True)
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        same = len(lines) == len(convs)
        for cv, ln in zip(convs, lines):
            ids = at.apply_chat_template(cv, tokenize=True, add_generation_prompt=cv[-1]["role"] != "assistant",
                                         return_dict=True)["input_ids"]
            same = same and list(ids) == ln["ids"]
        check(f"{tag}: apply_chat_template with the exported llama3.1 Jinja equals llamac tokenize chat", same,
              f"{r.stderr} {lines[:1]}")
        prompt = "the king and the"
        g = subprocess.run([llamac, "generate", "--model", base + ".h5", "--tokenizer", tokpath, "--prompt", prompt,
                            "--max-tokens", "20", "--temperature", "0"], capture_output=True, text=True)
        mine = g.stdout[len(prompt):].rstrip("\n") if g.stdout.startswith(prompt) else None
        torch.manual_seed(0)
        pipe = pipeline("text-generation", model=out, tokenizer=out, dtype=torch.float32)
        theirs = pipe(prompt, max_new_tokens=20, do_sample=False, return_full_text=False)[0]["generated_text"]
        check(f"{tag}: pipeline greedy text equals llamac generate --temperature 0 ({mine!r})",
              mine is not None and mine == theirs, f"llamac {mine!r} vs transformers {theirs!r}")
        back = base + "_back.h5"
        ids2 = subprocess.run([llamac, "tokenize", "ids", "--tokenizer", os.path.join(out, "tokenizer.json"), probe],
                              capture_output=True, text=True).stdout.split()
        check(f"{tag}: llamac reads the exported tokenizer.json to the same ids", [int(i) for i in ids2] == want, "")
        check(f"{tag}: convert HF_DIR -> checkpoint records the directory's tokenizer",
              run(llamac, "convert", out, back, "--force") and
              run(llamac, "generate", "--model", back, "--tokenizer", os.path.join(out, "tokenizer.json"),
                  "--prompt", prompt, "--max-tokens", "5"), "")


def check_hf_spm(llamac, work):
    """A SentencePiece model exported to a HF directory (tokenizer.model copied,
    LlamaTokenizer): AutoTokenizer's ids equal llamac's (and sentencepiece's) on
    text without runs of spaces, where transformers' converted Llama tokenizer
    parts from sentencepiece itself (llamac follows sentencepiece); greedy
    generate's decoded text equals llamac generate's."""
    import sentencepiece as spm
    import torch
    from transformers import AutoTokenizer
    d = os.path.join(work, "hf_spm")
    os.makedirs(d, exist_ok=True)
    corpus = os.path.join(d, "t.txt")
    with open(corpus, "w") as f:
        f.write(("the king and the queen went to the castle. the cat sat on the mat. " * 30 +
                 "It's 1234 naïve café\n") * 10)
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(d, "sp"), vocab_size=300,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0, minloglevel=2,
                                   normalization_rule_name="identity", split_digits=True, add_dummy_prefix=True)
    tokpath, base, out = os.path.join(d, "sp.model"), os.path.join(d, "m"), os.path.join(d, "hf")
    tag = "HF export with tokenizer (SentencePiece)"
    if not check(f"{tag}: shard, 60 training steps, export",
                 run(llamac, "tokenize", "encode", "--tokenizer", tokpath, "--input", corpus, "--out", base + ".bin")
                 and run(llamac, "pretrain", "--train", base + ".bin", "--preset", "tiny", "--steps", "60", "--batch",
                         "4", "--seq", "64", "--lr", "3e-3", "--warmup", "5", "--ckpt-dir", base + "_ck", "--out",
                         base + ".h5", "--peak-gflops", "1")
                 and run(llamac, "convert", base + ".h5", out, "--force", "--tokenizer", tokpath, "--template", "llama2")):
        return
    check(f"{tag}: tokenizer.model is a copy", open(tokpath, "rb").read() == open(os.path.join(out, "tokenizer.model"), "rb").read(), "")
    at = AutoTokenizer.from_pretrained(out)
    sp = spm.SentencePieceProcessor(model_file=tokpath)
    probe = os.path.join(d, "probe.txt")
    bad = []
    for text in ["the king and the queen, It's 1234 naïve café", " leading space", "line one\nline two", "x"]:
        with open(probe, "w") as f:
            f.write(text)
        mine = [int(i) for i in subprocess.run([llamac, "tokenize", "ids", "--tokenizer", tokpath, probe],
                                               capture_output=True, text=True).stdout.split()]
        if not (mine == at(text)["input_ids"] == sp.encode(text)):
            bad.append((text, mine, at(text)["input_ids"]))
    check(f"{tag}: AutoTokenizer's ids equal llamac's and sentencepiece's", not bad, f"{bad}")
    prompt = "the king and the"
    g = subprocess.run([llamac, "generate", "--model", base + ".h5", "--tokenizer", tokpath, "--prompt", prompt,
                        "--max-tokens", "20", "--temperature", "0"], capture_output=True, text=True)
    # pipeline("text-generation") pastes the prompt and the decoded new ids, and decoding new ids alone
    # drops the first piece's space (sentencepiece's dummy prefix): compare the decoded whole instead
    mine = g.stdout.rstrip("\n")
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = at(prompt, return_tensors="pt")["input_ids"]
    gen = model.generate(ids, max_new_tokens=20, do_sample=False, generation_config=model.generation_config)
    theirs = at.decode(gen[0], skip_special_tokens=True)
    check(f"{tag}: generate greedy text equals llamac generate --temperature 0 ({mine!r})",
          mine is not None and mine == theirs, f"llamac {mine!r} vs transformers {theirs!r}")


def want_id(llamac, tokpath, name):
    r = subprocess.run([llamac, "tokenize", "special", "--tokenizer", tokpath, name], capture_output=True, text=True)
    return int(r.stdout.split()[-1]) if r.returncode == 0 and r.stdout.split() else None


# ---------------------------------------------------------------- main

def gpt2_byte_decoder():
    """GPT-2's code point -> byte map (the inverse of byte-level spelling)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cps, n = {}, 256
    for b in range(256):
        if b in keep:
            cps[chr(b)] = b
        else:
            cps[chr(n)] = b
            n += 1
    return cps


def check_gguf_vocab(llamac, work):
    """GGUF with a vocabulary: a tiny model trained on shards of a llamac BPE
    and of a tokenizers-trained tokenizer.json, exported with --tokenizer;
    GGUFReader must see llama.cpp's gpt2 vocabulary: every id's token spells
    its bytes (so llamac's ids for a text decode back to the text through the
    GGUF tokens), specials as control tokens, and the merges in rank order
    (equal to tokenizer.json's own list)."""
    from gguf import GGUFReader
    d = os.path.join(work, "vocab")
    os.makedirs(d, exist_ok=True)
    text = ("The quick brown fox jumps over the lazy dog. 1234 naïve café 你好 🦙\n" * 40 +
            "def f(x):\n    return x * 2  # comment\n" * 40)
    with open(os.path.join(d, "t.txt"), "w") as f:
        f.write(text)
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train([os.path.join(d, "t.txt")], trainers.BpeTrainer(
        vocab_size=330, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], show_progress=False))
    hf.save(os.path.join(d, "tokenizer.json"))
    ok = run(llamac, "tokenize", "train", "--input", os.path.join(d, "t.txt"), "--vocab", "320",
             "--out", os.path.join(d, "tok.bin"))
    dec = gpt2_byte_decoder()
    for kind, tokpath in (("llamac BPE", os.path.join(d, "tok.bin")), ("tokenizer.json", os.path.join(d, "tokenizer.json"))):
        tag = f"gguf vocabulary ({kind})"
        base = os.path.join(d, kind.split()[0].replace(".", "_"))
        if not check(f"{tag}: shard, 1 training step, export", ok and
                     run(llamac, "tokenize", "encode", "--tokenizer", tokpath, "--input", os.path.join(d, "t.txt"),
                         "--out", base + ".bin") and
                     run(llamac, "pretrain", "--train", base + ".bin", "--preset", "tiny", "--steps", "1",
                         "--batch", "2", "--seq", "32", "--ckpt-dir", base + "_ck", "--out", base + ".h5",
                         "--peak-gflops", "1") and
                     run(llamac, "convert", base + ".h5", base + ".gguf", "--tokenizer", tokpath)):
            continue
        r = GGUFReader(base + ".gguf")
        fv = lambda k: r.fields[k].contents()
        toks, types = fv("tokenizer.ggml.tokens"), fv("tokenizer.ggml.token_type")
        V = fv("llama.vocab_size")
        check(f"{tag}: model gpt2, {V} tokens and types", fv("tokenizer.ggml.model") == "gpt2" and
              len(toks) == V and len(types) == V, f"{fv('tokenizer.ggml.model')} {len(toks)} {len(types)}")
        ids = subprocess.run([llamac, "tokenize", "ids", "--tokenizer", tokpath, os.path.join(d, "t.txt")],
                             capture_output=True, text=True).stdout.split()
        ids = [int(i) for i in ids]
        back = bytes(b for i in ids for b in (dec[c] for c in toks[i]))
        check(f"{tag}: llamac's ids decode back to the text through the GGUF tokens ({len(ids)} ids)",
              len(ids) > 100 and back == text.encode(), f"{back[:80]!r}")
        bos = fv("tokenizer.ggml.bos_token_id")
        check(f"{tag}: bos is a control token named <|begin_of_text|>",
              toks[bos] == "<|begin_of_text|>" and types[bos] == 3, f"{bos} {toks[bos]} {types[bos]}")
        merges = fv("tokenizer.ggml.merges")
        if kind == "tokenizer.json":
            with open(tokpath) as f:
                jm = json.load(f)["model"]["merges"]
            jm = [m if isinstance(m, str) else " ".join(m) for m in jm]
            check(f"{tag}: merges equal tokenizer.json's, in order ({len(jm)})", merges == jm,
                  f"{merges[:3]} vs {jm[:3]}")
        else:
            check(f"{tag}: 320 - 256 - 5 merges, each joining two tokens into one",
                  len(merges) == 59 and all("".join(m.split(" ")) in toks for m in merges), f"{len(merges)}")
    # SentencePiece (Llama 1/2 settings) -> llama.cpp's "llama" vocabulary
    import sentencepiece as spm
    tag = "gguf vocabulary (SentencePiece)"
    base = os.path.join(d, "sp")
    spm.SentencePieceTrainer.train(input=os.path.join(d, "t.txt"), model_prefix=base, model_type="bpe",
                                   vocab_size=400, byte_fallback=True, split_digits=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=2)
    tokpath = base + ".model"
    if check(f"{tag}: shard, 1 training step, export",
             run(llamac, "tokenize", "encode", "--tokenizer", tokpath, "--input", os.path.join(d, "t.txt"),
                 "--out", base + ".bin") and
             run(llamac, "pretrain", "--train", base + ".bin", "--preset", "tiny", "--steps", "1", "--batch", "2",
                 "--seq", "32", "--ckpt-dir", base + "_ck", "--out", base + ".h5", "--peak-gflops", "1") and
             run(llamac, "convert", base + ".h5", base + ".gguf", "--tokenizer", tokpath)):
        r = GGUFReader(base + ".gguf")
        fv = lambda k: r.fields[k].contents()
        sp = spm.SentencePieceProcessor(model_file=tokpath)
        n = sp.get_piece_size()
        toks, sc, ty = fv("tokenizer.ggml.tokens"), fv("tokenizer.ggml.scores"), fv("tokenizer.ggml.token_type")
        check(f"{tag}: model llama, pieces, scores and types equal sentencepiece's ({n})",
              fv("tokenizer.ggml.model") == "llama" and len(toks) == n and
              all(toks[i] == sp.id_to_piece(i) and sc[i] == sp.get_score(i) for i in range(n)) and
              ty[sp.unk_id()] == 2 and ty[sp.bos_id()] == 3 and ty[sp.piece_to_id("<0x41>")] == 6,
              f"{fv('tokenizer.ggml.model')} {len(toks)}")
        check(f"{tag}: unk/bos/eos ids", (fv("tokenizer.ggml.unknown_token_id"), fv("tokenizer.ggml.bos_token_id"),
              fv("tokenizer.ggml.eos_token_id")) == (sp.unk_id(), sp.bos_id(), sp.eos_id()), "differ")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_convert")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    llamac = args.llamac
    for mname, spec in MODELS.items():
        print(f"== {mname}")
        model = build(spec)
        if spec["rope_parameters"]["rope_type"] == "llama3":  # our reference formula is HF's
            hs = spec["hidden_size"] // spec["num_attention_heads"]
            base = np.array([spec["rope_parameters"]["rope_theta"] ** (-2 * i / hs) for i in range(hs // 2)])
            hf_inv = model.model.rotary_emb.inv_freq.double().numpy()
            err = np.abs(base / rope_factors_ref(spec) / hf_inv - 1).max()
            check(f"{mname} llama3 factors reproduce transformers' inv_freq (rel err {err:.1e})", err < 1e-6,
                  f"{err}")
        tokens = np.random.default_rng(spec["seed"]).integers(0, spec["vocab_size"], T_TOKENS).tolist()
        ref32 = hf_logits(model, tokens)
        for vname, dtype, shard in VARIANTS:
            tag = f"{mname}/{vname}"
            d = os.path.join(args.work, tag.replace("/", "_"))
            kw = {"max_shard_size": shard} if shard else {}
            copy.deepcopy(model).to(getattr(torch, dtype)).save_pretrained(d, **kw)
            if shard:
                check(f"{tag} save is sharded", os.path.exists(os.path.join(d, "model.safetensors.index.json")),
                      "no index")
            h5 = d + ".h5"
            if not check(f"{tag} convert HF -> checkpoint", run(llamac, "convert", d, h5)):
                continue
            tensors = saved_tensors(d)
            check_h5(tag, h5, tensors, spec)
            ref_model, _ = load_hf(d)  # the saved (rounded) weights in float32
            ref = hf_logits(ref_model, tokens)
            check_logits(tag, llamac, h5, ref, tokens, args.work)
            if dtype != "float32":
                continue
            check(f"{tag} saved weights are the model's", np.array_equal(ref, ref32), "differ")
            # 3. back to a HF directory
            out = d + "_export"
            if check(f"{tag} convert checkpoint -> HF", run(llamac, "convert", h5, out)):
                with open(os.path.join(out, "config.json")) as f:
                    json.load(f)
                back, info = load_hf(out)
                keys = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
                check(f"{tag} transformers loads the export cleanly", not any(keys.values()), f"{keys}")
                sd0 = {k: v.numpy() for k, v in model.state_dict().items()}
                sd1 = {k: v.numpy() for k, v in back.state_dict().items()}
                same = set(sd0) == set(sd1) and all(np.array_equal(sd0[k], sd1[k]) for k in sd0)
                check(f"{tag} exported weights equal the original bit for bit", same, "differ")
                check(f"{tag} exported logits equal the original's exactly",
                      np.array_equal(hf_logits(back, tokens), ref32), "differ")
                check(f"{tag} exported tie_word_embeddings", back.config.tie_word_embeddings ==
                      spec["tie_word_embeddings"], f"{back.config.tie_word_embeddings}")
            # 4. GGUF
            gpath = d + ".gguf"
            if check(f"{tag} convert checkpoint -> GGUF", run(llamac, "convert", h5, gpath, "--name", mname)):
                check_gguf(tag, gpath, spec, tensors, mname)
                g2 = d + "_direct.gguf"
                if check(f"{tag} convert HF -> GGUF directly", run(llamac, "convert", d, g2, "--name", mname)):
                    with open(gpath, "rb") as a, open(g2, "rb") as b:
                        check(f"{tag} direct GGUF == GGUF via checkpoint", a.read() == b.read(), "bytes differ")
                if vname == "f32":
                    check_gguf_types(tag, llamac, h5, spec, tensors)
    print("== GGUF vocabulary")
    check_gguf_vocab(llamac, args.work)
    print("== HF export with the tokenizer")
    check_hf_tokenizer(llamac, args.work)
    check_hf_spm(llamac, args.work)
    return summary("test_convert")


if __name__ == "__main__":
    sys.exit(main())
