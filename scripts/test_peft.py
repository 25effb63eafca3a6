#!/usr/bin/env python3
"""LoRA adapters between llamac and Hugging Face PEFT (run by scripts/test_ref.sh).

What: builds a tiny random Llama with transformers (3 layers, GQA, untied
head), saves it as a HF directory and imports it with `llamac convert HF
model.h5`. Then:

  (a) llamac -> PEFT: `llamac convert model.h5 AD --lora-init ...` (B made
      nonzero with the testing flag --lora-init-b); PeftModel.from_pretrained
      on the same base loads it (every lora_A/lora_B equal to the file's,
      scaling as configured) and its logits equal `llamac logits --adapter`
      and the logits of `llamac convert --adapter` (merged), within ATOL;
  (b) PEFT -> llamac: get_peft_model with random nonzero A and B for q,v;
      all-linear; rsLoRA; layers_to_transform; gaussian init with dropout;
      save_pretrained; llamac's logits with --adapter and of the merged
      checkpoint equal PEFT's; the merged HF export equals PEFT's
      merge_and_unload weights; the merged GGUF export is the GGUF of the
      merged checkpoint byte for byte (test_convert.py checks that one);
  (d) LoRA checkpoints: `llamac convert base.h5 lora.h5 --adapter AD
      --keep-adapter` (and --base-ref) read with h5py: /lora/<name> equal to
      PEFT's saved tensors, its attributes (r, alpha, targets, layers),
      /model equal to the base (or absent, with base_path); `llamac convert
      lora.h5 AD2 --peft` loads in PEFT with PEFT's logits; `llamac logits`
      of the LoRA checkpoint (merged on load) equals PEFT's;
  (c) PEFT adapters llamac must refuse (use_dora, bias "all", a regex
      target_modules, rank_pattern, modules_to_save) are refused with one
      line naming the option.

Prints PASS/FAIL per check and "test_peft: N passed, M failed"; exits 1 on
any failure.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

from refcheck import check, run, summary

# Logits tolerance: llamac's C forward and transformers' eager float32
# forward sum in different orders (scripts/test_convert.py uses the same);
# merging adds one float32 rounding per weight, far below it.
ATOL = 1e-4
# Merged weights: W + s*B@A in float32 on both sides, rounded once each.
WTOL = 1e-6
TOKENS = [1, 7, 42, 3, 99, 250, 17, 8, 64, 5, 128, 2]

SPEC = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, vocab_size=256, max_position_embeddings=64, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)


def build_base(path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**SPEC, attention_bias=False, mlp_bias=False, hidden_act="silu", use_cache=False)
    torch.manual_seed(5)
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
    model.save_pretrained(path)


def load_base(path):
    import torch
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


def logits_of(model):
    import torch
    with torch.no_grad():
        return model(input_ids=torch.tensor([TOKENS]), use_cache=False).logits[0].float().numpy()


def llamac_logits(llamac, work, tag, *args):
    out = os.path.join(work, f"{tag}.logits")
    r = run(llamac, "logits", *args, "--tokens", ",".join(map(str, TOKENS)), "--out", out)
    if r.returncode != 0:
        return None
    return np.fromfile(out, dtype=np.float32).reshape(len(TOKENS), SPEC["vocab_size"])


def close(tag, got, ref):
    if got is None:
        return check(tag, False, "llamac failed")
    err = float(np.abs(got - ref).max())
    return check(f"{tag} (max |diff| {err:.2e})", err <= ATOL, f"exceeds {ATOL}")


def compare_llamac(llamac, work, tag, h5, ad, ref):
    """llamac's logits with the adapter, and of the merged model, against ref."""
    close(f"{tag}: llamac logits --adapter == PEFT", llamac_logits(llamac, work, tag + "_ad", "--model", h5,
                                                                 "--adapter", ad), ref)
    merged = os.path.join(work, f"{tag}_merged.h5")
    if os.path.exists(merged):
        os.remove(merged)
    if check(f"{tag}: convert --adapter -> checkpoint", run(llamac, "convert", h5, merged, "--adapter", ad)
             .returncode == 0):
        close(f"{tag}: merged checkpoint's logits == PEFT", llamac_logits(llamac, work, tag + "_m",
                                                                          "--model", merged), ref)


def part_a(llamac, work, hf, h5):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    cases = [("a_qv", ["--lora-r", "4", "--lora-targets", "q_proj,v_proj"]),
             ("a_all_rs", ["--lora-r", "2", "--lora-alpha", "5", "--lora-targets", "all-linear",
                           "--lora-rslora", "--lora-layers", "0,2"])]
    for tag, flags in cases:
        ad = os.path.join(work, tag)
        r = run(llamac, "convert", h5, ad, "--lora-init", "--seed", "3", "--lora-init-b", "0.05", "--force", *flags)
        if not check(f"{tag}: llamac convert --lora-init", r.returncode == 0):
            continue
        with open(os.path.join(ad, "adapter_config.json")) as f:
            cfg = json.load(f)
        pm = PeftModel.from_pretrained(load_base(hf), ad).eval()
        sd = load_file(os.path.join(ad, "adapter_model.safetensors"))
        mine = {k: v for k, v in pm.state_dict().items() if "lora_" in k}
        # PEFT's module keys carry the adapter name: ...q_proj.lora_A.default.weight
        want = {k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight",
                                                                            ".lora_B.default.weight"): v
                for k, v in sd.items()}
        same = set(mine) == set(want) and all(torch.equal(mine[k], want[k]) for k in want)
        check(f"{tag}: PEFT loads every tensor ({len(want)})", same, f"{set(mine) ^ set(want)}")
        check(f"{tag}: B is nonzero", all(v.abs().max() > 0 for k, v in sd.items() if "lora_B" in k))
        layer = pm.base_model.model.model.layers[0].self_attn.q_proj
        s_want = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg["use_rslora"] else cfg["r"])
        check(f"{tag}: PEFT's scaling {layer.scaling['default']:.4f}", abs(layer.scaling["default"] - s_want) < 1e-9)
        compare_llamac(llamac, work, tag, h5, ad, logits_of(pm))


def peft_adapter(hf, path, seed, **kw):
    """A PEFT adapter with random nonzero A and B, saved to path; its logits
    and merge_and_unload's state dict."""
    import torch
    from peft import LoraConfig, get_peft_model
    pm = get_peft_model(load_base(hf), LoraConfig(task_type="CAUSAL_LM", **kw))
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape))
    pm.eval()
    pm.save_pretrained(path)
    ref = logits_of(pm)
    merged = {k: v.numpy() for k, v in pm.merge_and_unload().state_dict().items()}
    return ref, merged


def part_b(llamac, work, hf, h5):
    from safetensors.numpy import load_file
    cases = [("b_qv", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])),
             ("b_all_linear", dict(r=3, lora_alpha=6, target_modules="all-linear")),
             ("b_rslora", dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["k_proj", "o_proj", "up_proj"])),
             ("b_layers", dict(r=2, lora_alpha=2, target_modules=["q_proj", "down_proj"], layers_to_transform=[1])),
             ("b_gauss_dropout", dict(r=4, lora_alpha=4, init_lora_weights="gaussian", lora_dropout=0.1,
                                      target_modules=["gate_proj", "v_proj"]))]
    for i, (tag, kw) in enumerate(cases):
        ad = os.path.join(work, tag)
        shutil.rmtree(ad, ignore_errors=True)
        ref, merged = peft_adapter(hf, ad, 100 + i, **kw)
        compare_llamac(llamac, work, tag, h5, ad, ref)
        out = os.path.join(work, f"{tag}_merged_hf")
        if check(f"{tag}: convert --adapter -> HF directory",
                 run(llamac, "convert", h5, out, "--adapter", ad, "--force").returncode == 0):
            got = load_file(os.path.join(out, "model.safetensors"))
            keys = set(got) == set(merged)
            err = max(float(np.abs(got[k] - merged[k]).max()) for k in got) if keys else float("inf")
            check(f"{tag}: merged weights == PEFT merge_and_unload (max |diff| {err:.1e})", keys and err <= WTOL,
                  f"keys {set(got) ^ set(merged)}" if not keys else f"exceeds {WTOL}")
        g = os.path.join(work, f"{tag}_merged.gguf")
        if os.path.exists(g):
            os.remove(g)
        if check(f"{tag}: convert --adapter -> GGUF", run(llamac, "convert", h5, g, "--adapter", ad).returncode == 0):
            g2 = os.path.join(work, f"{tag}_via_ckpt.gguf")
            if os.path.exists(g2):
                os.remove(g2)
            ok = run(llamac, "convert", os.path.join(work, f"{tag}_merged.h5"), g2).returncode == 0
            with open(g, "rb") as a, open(g2, "rb") as b:
                check(f"{tag}: merged GGUF == GGUF of the merged checkpoint", ok and a.read() == b.read(),
                      "bytes differ")


def part_d(llamac, work, hf, h5):
    import h5py
    from peft import PeftModel
    from safetensors.numpy import load_file
    ad = os.path.join(work, "b_layers")  # q_proj, down_proj of layer 1, r 2
    with open(os.path.join(ad, "adapter_config.json")) as f:
        cfg = json.load(f)
    peft_sd = load_file(os.path.join(ad, "adapter_model.safetensors"))
    base = load_file(os.path.join(hf, "model.safetensors"))
    ref = logits_of(PeftModel.from_pretrained(load_base(hf), ad).eval())
    for tag, extra in (("d_lora_ckpt", []), ("d_lora_ckpt_ref", ["--base-ref"])):
        out = os.path.join(work, tag + ".h5")
        if os.path.exists(out):
            os.remove(out)
        if not check(f"{tag}: convert --adapter --keep-adapter",
                     run(llamac, "convert", h5, out, "--adapter", ad, "--keep-adapter", *extra).returncode == 0):
            continue
        with h5py.File(out, "r") as f:
            g = f["lora"]
            names = sorted("base_model.model." + k for k in g.keys())
            check(f"{tag}: h5py /lora names are PEFT's", names == sorted(peft_sd), f"{set(names) ^ set(peft_sd)}")
            same = all(g[k[len("base_model.model."):]].dtype == np.float32 and
                       np.array_equal(g[k[len("base_model.model."):]][()], v) for k, v in peft_sd.items())
            check(f"{tag}: h5py /lora values equal PEFT's", same)
            a = g.attrs
            check(f"{tag}: /lora attributes", int(a["r"]) == cfg["r"] and float(a["alpha"]) == cfg["lora_alpha"]
                  and a["targets"].decode() == "q_proj,down_proj" and a["layers"].decode() == "1"
                  and int(a["rslora"]) == 0, f"{dict(a)}")
            if extra:
                check(f"{tag}: no /model, base_path {a['base_path'].decode()}", "model" not in f and
                      a["base_path"].decode() == h5 and "base_hash" in a)
            else:
                check(f"{tag}: /model equals the base", all(np.array_equal(f["model"][k][()], base[k]) for k in base))
        close(f"{tag}: llamac logits of the LoRA checkpoint == PEFT",
              llamac_logits(llamac, work, tag, "--model", out), ref)
        back = os.path.join(work, tag + "_peft")
        if check(f"{tag}: convert --peft", run(llamac, "convert", out, back, "--peft", "--force").returncode == 0):
            pm = PeftModel.from_pretrained(load_base(hf), back).eval()
            close(f"{tag}: PEFT on the re-exported adapter == PEFT on the original", logits_of(pm), ref)


def part_c(llamac, work, hf, h5):
    """Adapters PEFT writes with options llamac does not compute."""
    base = os.path.join(work, "b_qv")
    cases = [("use_dora", dict(use_dora=True), "use_dora = true"),
             ("bias", dict(bias="all"), "bias = \"all\""),
             ("regex", dict(target_modules=".*q_proj"), "target_modules = \".*q_proj\""),
             ("rank_pattern", dict(rank_pattern={"q_proj": 2}), "rank_pattern"),
             ("modules_to_save", dict(modules_to_save=["lm_head"]), "modules_to_save"),
             ("fan_in_fan_out", dict(fan_in_fan_out=True), "fan_in_fan_out = true")]
    for name, patch, want in cases:
        ad = os.path.join(work, f"c_{name}")
        shutil.rmtree(ad, ignore_errors=True)
        shutil.copytree(base, ad)
        p = os.path.join(ad, "adapter_config.json")
        with open(p) as f:
            cfg = json.load(f)
        cfg.update(patch)
        with open(p, "w") as f:
            json.dump(cfg, f)
        r = run(llamac, "logits", "--model", h5, "--adapter", ad, "--tokens", "1,2", "--out",
                os.path.join(work, "c.logits"))
        lines = r.stderr.strip().splitlines()
        check(f"c_{name}: refused naming the option", r.returncode == 1 and len(lines) == 1 and want in lines[0]
              and "adapter_config.json" in lines[0], f"exit {r.returncode}: {r.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_peft")
    args = ap.parse_args()
    llamac = os.path.abspath(args.llamac)
    os.makedirs(args.work, exist_ok=True)
    hf = os.path.join(args.work, "base_hf")
    h5 = os.path.join(args.work, "base.h5")
    shutil.rmtree(hf, ignore_errors=True)
    build_base(hf)
    if os.path.exists(h5):
        os.remove(h5)
    if check("convert HF -> checkpoint", run(llamac, "convert", hf, h5).returncode == 0):
        close("base logits == transformers", llamac_logits(llamac, args.work, "base", "--model", h5),
              logits_of(load_base(hf)))
        print("== (a) llamac adapters in PEFT")
        part_a(llamac, args.work, hf, h5)
        print("== (b) PEFT adapters in llamac")
        part_b(llamac, args.work, hf, h5)
        print("== (d) LoRA checkpoints")
        part_d(llamac, args.work, hf, h5)
        print("== (c) PEFT options llamac refuses")
        part_c(llamac, args.work, hf, h5)
    return summary("test_peft")


if __name__ == "__main__":
    sys.exit(main())
