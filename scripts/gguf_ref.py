#!/usr/bin/env python3
"""GGUF reference files for llamac's GGUF reader (data/gguf.c), written by
llama.cpp's own Python package (gguf: GGUFWriter, gguf.quants).

    python scripts/gguf_ref.py quant OUT.gguf [--blocks N] [--seed S]

Writes one GGUF (no architecture; tensors only) holding, for each type
llamac dequantises (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
Q5_K, Q6_K), a tensor named after the type with N rows of 2 blocks and the
tensor "<type>.want": gguf.quants.dequantize of it, float32. The blocks
come from gguf.quants.quantize of random normal values where the package
quantises the type; K-type blocks (which it cannot quantise) are random
bytes with sane float16 scales (d, dmin in [1e-3, 1e-1]), which cover every
bit pattern of the packed 6-bit scales and quants. F16 values are random
bit patterns (subnormals and infinities included, no NaN). Deterministic
for a given seed: the committed tests/fixtures/gguf_quant.gguf is
`gguf_ref.py quant tests/fixtures/gguf_quant.gguf` (N = 1, seed 1), which
scripts/test_gguf.py regenerates and compares byte for byte.
"""
import argparse
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
# byte offsets of the float16 scales in a K-type block (gguf/quants.py layouts)
K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def block_bytes(rng, name, rows, cols):
    qt = Q[name]
    blk, size = GGML_QUANT_SIZES[qt]
    if name == "F32":
        return rng.standard_normal((rows, cols)).astype(np.float32)
    if name == "F16":
        bits = rng.integers(0, 1 << 16, size=(rows, cols), dtype=np.uint16)
        nan = (bits & 0x7C00) == 0x7C00
        bits[nan] &= 0xFC00  # keep the infinities, drop NaN payloads
        return bits.view(np.float16)
    if name in K_SCALES:
        raw = rng.integers(0, 256, size=(rows, cols // blk, size), dtype=np.uint8)
        for off in K_SCALES[name]:
            d = rng.uniform(1e-3, 1e-1, size=(rows, cols // blk)).astype(np.float16)
            raw[:, :, off:off + 2] = d.view(np.uint8).reshape(rows, cols // blk, 2)
        return raw.reshape(rows, cols // blk * size)
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2.0)).astype(np.float32)
    return quantize(x, qt)


def write_quant(path, blocks, seed):
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, arch=None)
    w.add_string("general.name", "llamac dequantisation reference")
    for name in TYPES:
        qt = Q[name]
        blk = GGML_QUANT_SIZES[qt][0]
        cols = max(2 * blk, 64)
        t = block_bytes(rng, name, blocks, cols)
        if t.dtype == np.uint8:
            w.add_tensor(name, t, raw_dtype=qt)
            want = dequantize(t, qt)
        elif name == "BF16":
            q = quantize(t, qt)
            w.add_tensor(name, q, raw_dtype=qt)
            want = dequantize(q, qt)
        else:
            w.add_tensor(name, t)
            want = dequantize(t.view(np.uint8).reshape(t.shape[0], -1), qt).reshape(t.shape) \
                if name != "F32" else t
        w.add_tensor(name + ".want", np.ascontiguousarray(want, dtype=np.float32).reshape(blocks, cols))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["quant"])
    ap.add_argument("out")
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    write_quant(a.out, a.blocks, a.seed)
    print(f"gguf_ref: {len(TYPES)} types x {a.blocks} rows -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
