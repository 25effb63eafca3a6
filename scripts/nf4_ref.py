#!/usr/bin/env python3
"""NF4 reference cases for llamac's NF4 (model/quant.c), written by
bitsandbytes itself on the CPU: quantize_4bit(quant_type="nf4",
blocksize=64, compress_statistics=True) of float32 input, its state put in
llamac's layout (model/quant.h), and dequantize_4bit's float32 output.

    python scripts/nf4_ref.py OUT.bin [--rows R] [--cols C] [--kind K] [--seed S]

Kinds: normal (rows of random scales), ties (values that scale exactly onto
the midpoints between NF4 codes), special (zero blocks, one huge outlier,
absmax below 1e-38, a constant block), codes (no input: a made-up state whose
absmax codes run through all 256 entries of the dynamic map and whose nibbles
through all 16 NF4 codes, dequantised only).

The case file is what tests/test_nf4.c reads (nf4_fixture; see its header):
"LNF4", version 1, rows, cols, flags (bit 0: input present) as uint32, the
input float32, the quantised tensor, the dequantised float32.
tests/fixtures/nf4/nf4_4x128.bin is `nf4_ref.py tests/fixtures/nf4/nf4_4x128.bin`
(4 x 128, normal, seed 1); scripts/test_nf4_ref.py regenerates it and
compares byte for byte.

torch runs on one thread: with several, torch sums tensors of 32768 values
or more in per-thread chunks, and bitsandbytes' offset (the mean absmax) may
move by an ulp with the thread count; llamac follows the one-thread order.
"""
import argparse
import struct
import sys

import numpy as np
import torch

import bitsandbytes.functional as F
from bitsandbytes.functional import QuantState

MAGIC = 0x34464E4C  # "LNF4"
VERSION = 1
BLOCK = 64
GROUP = 256


def llamac_layout(packed, codes, absmax2, offset, rows, cols):
    """bitsandbytes' state as llamac stores it: per block of 64 values its
    32 bytes of nibbles (bitsandbytes' bytes, unchanged) then its absmax
    code; zeros to a multiple of 16 bytes; float32 offset, absmax2[...]."""
    nb = rows * cols // BLOCK
    packed = np.asarray(packed, np.uint8).reshape(nb, BLOCK // 2)
    blocks = np.concatenate([packed, np.asarray(codes, np.uint8).reshape(nb, 1)], axis=1).tobytes()
    pad = (-len(blocks)) % 16
    aux = np.concatenate([[np.float32(offset)], np.asarray(absmax2, np.float32)]).astype("<f4").tobytes()
    return blocks + b"\0" * pad + aux


def quantize(x):
    """bitsandbytes' NF4 of x (rows, cols) float32: (llamac bytes, dequantised)."""
    rows, cols = x.shape
    t = torch.from_numpy(x.copy())
    q, st = F.quantize_4bit(t, quant_type="nf4", blocksize=BLOCK, compress_statistics=True)
    assert st.nested and st.state2.blocksize == GROUP and st.blocksize == BLOCK
    assert torch.equal(st.state2.code, F.create_dynamic_map(signed=True)), "the nested map is not create_dynamic_map()"
    y = F.dequantize_4bit(q, st).numpy()
    raw = llamac_layout(q.numpy().reshape(-1), st.absmax.numpy(), st.state2.absmax.numpy(), st.offset.item(),
                        rows, cols)
    return raw, y


def dequantize_made_up(rng, rows, cols):
    """A state no quantiser made: absmax codes 0..255 in turn, random nibbles
    (all 16 in every block), random absmax2 and offset; bitsandbytes
    dequantises it."""
    nb = rows * cols // BLOCK
    nibbles = np.stack([rng.permutation(16) for _ in range(nb * BLOCK // 16)]).reshape(-1).astype(np.uint8)
    packed = (nibbles[0::2] << 4 | nibbles[1::2]).astype(np.uint8)
    codes = (np.arange(nb) % 256).astype(np.uint8)
    ng = (nb + GROUP - 1) // GROUP
    absmax2 = rng.uniform(0.01, 2.0, ng).astype(np.float32)
    offset = np.float32(rng.uniform(0.5, 1.5))
    dyn = F.create_dynamic_map(signed=True)
    state2 = QuantState(absmax=torch.from_numpy(absmax2), code=dyn, blocksize=GROUP, dtype=torch.float32)
    st = QuantState(absmax=torch.from_numpy(codes), shape=torch.Size([rows, cols]), dtype=torch.float32,
                    blocksize=BLOCK, code=F.get_4bit_type("nf4", device="cpu"), quant_type="nf4",
                    offset=torch.tensor(offset), state2=state2)
    y = F.dequantize_4bit(torch.from_numpy(packed).reshape(-1, 1), st).numpy()
    return llamac_layout(packed, codes, absmax2, offset, rows, cols), y


def make_input(kind, rng, rows, cols):
    if kind == "normal":
        scale = rng.uniform(0.01, 2.0, (rows, 1))
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    if kind == "ties":
        # each block: absmax 2^k (so x * (1 / absmax) is exact) and values at
        # the midpoints between NF4 codes, where bucketize picks the lower code
        code = F.get_4bit_type("nf4", device="cpu")
        mid = ((code[:-1] + code[1:]) / 2).numpy()
        x = rng.choice(np.concatenate([mid, code.numpy()]), size=(rows * cols // BLOCK, BLOCK)).astype(np.float32)
        x[:, 0] = 1.0
        x *= np.float32(2.0) ** rng.integers(-6, 6, (x.shape[0], 1)).astype(np.float32)
        return x.reshape(rows, cols)
    if kind == "special":
        x = rng.standard_normal((rows * cols // BLOCK, BLOCK)).astype(np.float32)
        nb = x.shape[0]
        x[1::7] = 0.0                                    # zero blocks
        x[2::11] = np.float32(3.0)                       # constant blocks
        x[3::13] *= np.float32(1e-40)                    # absmax below 1e-38 (subnormal)
        x[5 % nb, 17] = np.float32(-4.0e4)               # one huge outlier
        x[nb // 2] = -x[nb // 2 - 1]                     # a block and its negation
        return x.reshape(rows, cols)
    raise SystemExit(f"nf4_ref.py: unknown kind '{kind}'")


def write_case(path, rows, cols, x, raw, y):
    with open(path, "wb") as f:
        f.write(struct.pack("<5I", MAGIC, VERSION, rows, cols, 1 if x is not None else 0))
        if x is not None:
            f.write(x.astype("<f4").tobytes())
        f.write(raw)
        f.write(np.ascontiguousarray(y, dtype="<f4").tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=128)
    ap.add_argument("--kind", default="normal", choices=["normal", "ties", "special", "codes"])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.rows < 1 or a.cols < BLOCK or a.cols % BLOCK:
        sys.exit(f"nf4_ref.py: cols must be a positive multiple of {BLOCK}")
    torch.set_num_threads(1)
    rng = np.random.default_rng(a.seed)
    if a.kind == "codes":
        x = None
        raw, y = dequantize_made_up(rng, a.rows, a.cols)
    else:
        x = make_input(a.kind, rng, a.rows, a.cols)
        raw, y = quantize(x)
    write_case(a.out, a.rows, a.cols, x, raw, y)


if __name__ == "__main__":
    main()
