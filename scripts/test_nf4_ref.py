#!/usr/bin/env python3
"""NF4 in llamac (model/quant.c) against bitsandbytes on the CPU.

    python scripts/test_nf4_ref.py [--llamac build/llamac] [--work build/test_nf4_ref]

1. The committed tests/fixtures/nf4/nf4_4x128.bin regenerates byte for byte
   (scripts/nf4_ref.py with its defaults).
2. For each case below, scripts/nf4_ref.py has bitsandbytes quantise the
   input (quantize_4bit, nf4, blocksize 64, compress_statistics) and
   dequantise it (dequantize_4bit, float32), and `build/tests nf4_fixture`
   (the tests binary beside --llamac) with LLAMAC_NF4_REF naming the case
   must pass: llamac's quantised bytes equal bitsandbytes' state in llamac's
   layout (codes, absmax codes, absmax2, offset), and llamac's dequantisation
   of that state equals bitsandbytes' floats bit for bit, whole and row by
   row. The "codes" case has no input: a made-up state whose absmax codes
   run through all 256 entries of the dynamic map, dequantised only.

Prints PASS/FAIL per check and "test_nf4_ref: N passed, M failed"; exits 1
on any failure.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nf4_ref  # noqa: E402
from refcheck import check, summary  # noqa: E402

# (kind, rows, cols, seed, what it covers)
CASES = [
    ("normal", 4, 128, 2, "8 blocks, one short group"),
    ("normal", 1, 64, 3, "one block: absmax - offset is 0, absmax2 0"),
    ("normal", 1, 448, 4, "7 blocks: torch sums fewer than 8 values as scalars"),
    ("normal", 1, 192, 14, "3 blocks"),
    ("normal", 1, 320, 15, "5 blocks"),
    ("normal", 1, 576, 16, "9 blocks: one vector and a scalar tail"),
    ("normal", 300, 64, 5, "300 blocks: a last group of 44"),
    ("normal", 64, 4096, 6, "4096 blocks: 16 whole groups"),
    ("normal", 1024, 1000 // 64 * 64 + 64, 7, "16384 blocks, cols 1024"),
    ("normal", 640, 4096, 8, "40960 blocks: past torch's 32768-value split (one thread)"),
    ("ties", 300, 64, 9, "values on the midpoints between NF4 codes"),
    ("ties", 64, 1024, 10, "ties, 1024 blocks"),
    ("special", 37, 192, 11, "zero, constant, subnormal-absmax blocks, an outlier"),
    ("special", 512, 640, 12, "special blocks in 5120 blocks"),
    ("codes", 300, 128, 13, "every absmax code and nibble, dequantised"),
]


def tests_binary(llamac):
    return os.path.join(os.path.dirname(llamac) or ".", "tests")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_nf4_ref")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    torch.set_num_threads(1)
    import bitsandbytes
    print(f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")

    fixture = "tests/fixtures/nf4/nf4_4x128.bin"
    regen = os.path.join(a.work, "nf4_4x128.bin")
    r = subprocess.run([sys.executable, os.path.join(HERE, "nf4_ref.py"), regen], capture_output=True, text=True)
    same = r.returncode == 0 and open(regen, "rb").read() == open(fixture, "rb").read()
    check("committed fixture regenerates byte for byte", same, r.stderr[-300:])

    tests = tests_binary(a.llamac)
    for kind, rows, cols, seed, what in CASES:
        name = f"{kind} {rows}x{cols}: {what}"
        try:
            rng = np.random.default_rng(seed)
            if kind == "codes":
                x = None
                raw, y = nf4_ref.dequantize_made_up(rng, rows, cols)
            else:
                x = nf4_ref.make_input(kind, rng, rows, cols)
                raw, y = nf4_ref.quantize(x)
            path = os.path.join(a.work, f"{kind}_{rows}x{cols}.bin")
            nf4_ref.write_case(path, rows, cols, x, raw, y)
        except Exception as err:  # one broken case is one failure, the others still run
            check(name, False, f"bitsandbytes side raised {type(err).__name__}: {str(err)[:300]}")
            continue
        t = subprocess.run([tests, "nf4_fixture"], capture_output=True, text=True,
                           env=dict(os.environ, LLAMAC_NF4_REF=path))
        check(name, t.returncode == 0 and "PASS nf4_fixture" in t.stdout, (t.stdout + t.stderr)[-600:])
    return summary("test_nf4_ref")


if __name__ == "__main__":
    sys.exit(main())
