#!/usr/bin/env python3
"""Check llamac's HDF5 checkpoints with h5py and transformers (make test-ref).

Trains a tiny model for 3 steps with `llamac pretrain`, then reads the
checkpoint with h5py and checks the layout DESIGN.md promises: root
attributes, /config, every /model/<Hugging Face name> with its shape, the
AdamW moments /optim/m and /optim/v, and /state. The values are checked
through an independent implementation: the /model tensors are loaded into
transformers' LlamaForCausalLM, whose mean loss on the shard's first windows
must equal `llamac eval` on the same windows (within 2e-4: eval prints four
decimals, plus float32 summation order), and
h5dump must read the file too.

    python scripts/test_ckpt_h5.py [--llamac build/llamac] [--dir build/ckpt-h5]
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys

import h5py
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

V, T, B = 64, 32, 4


def write_shard(path, tokens, vocab, eot):
    """The LCSH shard format of data/shard.h (uint16 tokens)."""
    hdr = struct.pack("<IIIIQQiI", 0x4853434C, 1, 2, vocab, len(tokens), 1234, eot, 1)
    hdr += b"\0" * (64 - len(hdr))
    with open(path, "wb") as f:
        f.write(hdr + np.asarray(tokens, dtype="<u2").tobytes())


def hf_names(c):
    names = ["model.embed_tokens.weight"]
    for i in range(c["n_layers"]):
        p = f"model.layers.{i}."
        names += [p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
                  p + "self_attn.o_proj.weight", p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight",
                  p + "mlp.down_proj.weight", p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    names.append("model.norm.weight")
    if not c["tied"]:
        names.append("lm_head.weight")
    return names


def shape_of(name, c):
    D, F, HS = c["dim"], c["hidden"], c["dim"] // c["n_heads"]
    if name.endswith("norm.weight"):
        return (D,)
    table = {"q_proj": (c["n_heads"] * HS, D), "k_proj": (c["n_kv_heads"] * HS, D),
             "v_proj": (c["n_kv_heads"] * HS, D), "o_proj": (D, c["n_heads"] * HS), "gate_proj": (F, D),
             "up_proj": (F, D), "down_proj": (D, F), "embed_tokens": (c["vocab"], D), "lm_head": (c["vocab"], D)}
    for k, v in table.items():
        if k in name:
            return v
    raise KeyError(name)


class Checker:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("  FAIL:", what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--dir", default="build/ckpt-h5")
    a = ap.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, V, size=6000)
    write_shard(f"{a.dir}/train.bin", tokens, V, 0)
    run = [a.llamac, "pretrain", "--train", f"{a.dir}/train.bin", "--preset", "tiny", "--batch", str(B),
           "--seq", str(T), "--steps", "3", "--save-every", "1", "--keep", "5", "--lr", "1e-2", "--warmup", "1",
           "--ckpt-dir", f"{a.dir}/ck", "--out", f"{a.dir}/model.h5", "--doc-mask", "0", "--peak-gflops", "1"]
    subprocess.run(run, check=True, stdout=subprocess.DEVNULL)
    ck = Checker()
    path = f"{a.dir}/ck/step-00000003.h5"
    with h5py.File(path, "r") as f:
        ck.check(f.attrs["format"] == b"llamac-checkpoint" or f.attrs["format"] == "llamac-checkpoint",
                 f"format attribute {f.attrs.get('format')!r}")
        ck.check(int(f.attrs["complete"]) == 1, "complete mark")
        cfg = {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in f["config"].attrs.items()}
        c = {k: int(cfg[k]) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden", "vocab", "tied")}
        ck.check(c == {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden": 96, "vocab": V,
                       "tied": 0}, f"/config {c}")
        names = hf_names(c)
        for grp in ("model", "optim/m", "optim/v"):
            got = sorted(f[grp].keys())
            ck.check(got == sorted(names), f"/{grp} names: {got}")
            for n in names:
                if n in f[grp]:
                    d = f[grp][n]
                    ck.check(d.shape == shape_of(n, c), f"/{grp}/{n} shape {d.shape}")
                    ck.check(d.dtype == np.float32, f"/{grp}/{n} dtype {d.dtype}")
                    ck.check("checksum" in d.attrs, f"/{grp}/{n} checksum attribute")
        ck.check(int(f["optim"].attrs["t"]) == 3, "AdamW t")
        v = np.concatenate([f["optim/v"][n][()].ravel() for n in names])
        ck.check(bool((v >= 0).all()) and float(v.max()) > 0, "second moments are non-negative and not all 0")
        st = f["state"]
        ck.check(int(st.attrs["step"]) == 3 and int(st.attrs["tokens"]) == 3 * B * T, "state step/tokens")
        ck.check(st["cursor"].shape == (1, 2) and int(st["cursor"][0, 1]) == 3 * B, f"cursor {st['cursor'][()]}")
        rc = bytes(st["run_config"][()]).rstrip(b"\0").decode()
        ck.check("steps = 3" in rc and "preset = tiny" in rc, f"run_config: {rc!r}")
        sd = {n: torch.from_numpy(f["model"][n][()]) for n in names}
        hf = LlamaConfig(vocab_size=V, hidden_size=c["dim"], intermediate_size=c["hidden"],
                         num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
                         num_key_value_heads=c["n_kv_heads"], max_position_embeddings=int(cfg["max_seq"]),
                         rms_norm_eps=float(cfg["norm_eps"]), rope_theta=float(cfg["rope_theta"]),
                         tie_word_embeddings=bool(c["tied"]), attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(hf).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    ck.check(not unexpected and all("rotary" in m for m in missing), f"state_dict: {missing} {unexpected}")
    # the shard's windows in file order: k*T .. k*T + T + 1
    nb = 2
    x = np.stack([tokens[k * T:k * T + T + 1] for k in range(nb * B)])
    with torch.no_grad():
        logits = model(torch.from_numpy(x[:, :-1]).long()).logits
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(x[:, 1:]).long().reshape(-1))
    out = subprocess.run([a.llamac, "eval", "--model", path, "--data", f"{a.dir}/train.bin", "--batch", str(B),
                          "--seq", str(T), "--batches", str(nb), "--doc-mask", "0"], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(r"loss ([0-9.]+)", out)
    ours = float(m.group(1)) if m else float("nan")
    # eval prints 4 decimals (rounding <= 5e-5) + float32 summation differences
    ck.check(abs(ours - float(ref)) < 2e-4, f"llamac eval loss {ours} vs transformers {float(ref):.6f}")
    print(f"  checkpoint values: llamac eval loss {ours:.4f}, transformers on the h5py tensors {float(ref):.4f}")
    if shutil.which("h5dump"):
        r = subprocess.run(["h5dump", "-H", path], capture_output=True, text=True)
        ck.check(r.returncode == 0 and "model.layers.1.mlp.down_proj.weight" in r.stdout, "h5dump -H")
    print(f"test_ckpt_h5: {ck.passed} checks passed, {ck.failed} failed")
    sys.exit(1 if ck.failed else 0)


if __name__ == "__main__":
    main()
