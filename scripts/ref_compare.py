#!/usr/bin/env python3
"""Compare two sets of llamac reference fixtures (scripts/ref_llama.py and
scripts/ref_lora.py output).

usage: ref_compare.py A_DIR B_DIR

For ref_llama{2,3}.bin and ref_lora_llama{2,3}.bin in both directories, every record must
have the same name (in the same order), dtype and shape; int32 records must be
exactly equal; float32 records must satisfy |a - b| <= ATOL + RTOL * |b|.

Why a tolerance for float32: a different torch build (other BLAS, other SIMD
width, other thread split) may reorder float32 sums, which changes the last
bits of the results, and 10 training steps amplify that a little. The values
here are O(1) (weights, logits, grads, losses), so ATOL 1e-5 + RTOL 1e-4 is
about 100 float32 ulps: loose enough for summation order, far too tight to
hide a real change (a different init, batch, mask or optimizer setting moves
values by orders of magnitude more). The same build, run twice, is bit-exact.

Prints the max abs/rel difference per model and one final line; exits 1 on
any mismatch (or a missing file), 0 otherwise.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_llama import read_ref  # noqa: E402  (numpy-only reader)

FILES = ("ref_llama2.bin", "ref_llama3.bin", "ref_llama_hd.bin", "ref_lora_llama2.bin", "ref_lora_llama3.bin")
ATOL = 1e-5
RTOL = 1e-4
# the reported relative difference is |a-b| / max(|b|, REL_FLOOR), so that
# near-zero entries (tiny grads) do not make it meaningless; informational only
REL_FLOOR = 1e-3


def compare_file(pa, pb):
    """Return (list of error strings, max abs diff, max rel diff, worst record)."""
    errs = []
    try:
        a, b = read_ref(pa), read_ref(pb)
    except (OSError, ValueError) as e:
        return [str(e)], 0.0, 0.0, ""
    if list(a) != list(b):
        only_a = [n for n in a if n not in b]
        only_b = [n for n in b if n not in a]
        if only_a or only_b:
            errs.append(f"record names differ: only in A {only_a[:5]}, only in B {only_b[:5]}")
        else:
            errs.append("record order differs")
    max_abs = max_rel = 0.0
    worst = ""
    for name in a:
        if name not in b:
            continue
        x, y = a[name], b[name]
        if x.dtype != y.dtype:
            errs.append(f"{name}: dtype {x.dtype} vs {y.dtype}")
            continue
        if x.shape != y.shape:
            errs.append(f"{name}: shape {x.shape} vs {y.shape}")
            continue
        if x.dtype == np.int32:
            if not np.array_equal(x, y):
                errs.append(f"{name}: int32 values differ at {int(np.sum(x != y))} places")
            continue
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            errs.append(f"{name}: non-finite values")
            continue
        xd, yd = x.astype(np.float64), y.astype(np.float64)
        d = np.abs(xd - yd)
        if d.size:
            ad = float(d.max())
            rd = float((d / np.maximum(np.abs(yd), REL_FLOOR)).max())
            if ad > max_abs:
                max_abs, worst = ad, name
            max_rel = max(max_rel, rd)
        bad = d > ATOL + RTOL * np.abs(yd)
        if bad.any():
            i = np.unravel_index(int(np.argmax(d - (ATOL + RTOL * np.abs(yd)))), d.shape)
            errs.append(f"{name}: {int(bad.sum())} values out of tolerance, "
                        f"worst at {tuple(int(k) for k in i)}: {xd[i]:.8g} vs {yd[i]:.8g}")
    return errs, max_abs, max_rel, worst


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    da, db = argv[1], argv[2]
    n_bad = 0
    for fn in FILES:
        errs, ma, mr, worst = compare_file(os.path.join(da, fn), os.path.join(db, fn))
        status = "OK" if not errs else "MISMATCH"
        print(f"{fn}: {status}  max abs diff {ma:.3e} ({worst or '-'}), max rel diff {mr:.3e} (vs max(|b|,{REL_FLOOR:g}))")
        for e in errs[:20]:
            print(f"  {e}")
        if len(errs) > 20:
            print(f"  ... {len(errs) - 20} more")
        n_bad += bool(errs)
    print(f"ref_compare: {len(FILES) - n_bad}/{len(FILES)} fixture files match "
          f"(atol {ATOL:g}, rtol {RTOL:g}) between {da} and {db}")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
