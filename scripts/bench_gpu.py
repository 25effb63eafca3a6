#!/usr/bin/env python3
"""bench_gpu.py: `make bench-gpu`: pretraining speed of llamac --device cuda
against PyTorch on the same GPU (issue 6, point 5).

For each shape (110m at T=1024; a Llama-3.2-1B shape at T=2048) it writes a
random-token shard of that vocabulary, runs `llamac pretrain --device cuda`
for a few steps and reads its metrics JSONL (tokens/s of the steps after
the warm-up), then runs scripts/bench_torch_gpu.py (transformers'
LlamaForCausalLM in bf16 with SDPA attention, eager and torch.compile, the
same batch and AdamW) and prints one table: tokens/s, MFU against 989
TFLOP/s (H100 bf16 dense, DESIGN.md) and against the bf16 GEMM peak measured
here, peak GPU memory, and the llamac / PyTorch ratios.

MFU = (6 N + 12 L H HS T) * tokens/s / peak (DESIGN.md "How speed is
counted"; N = parameters without the embedding lookup, with the LM head).
Raw output goes to build-cuda/bench-gpu/ (JSON per run + the table).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEAK_H100 = 989e12

# name: (llamac preset, --set overrides, vocab, T, B)
SHAPES = {
    "110m": ("110m", [], 32000, 1024, 16),
    "1b": ("llama3.2-1b", [], 128256, 2048, 4),
}


def write_shard(path, vocab, n_tokens, seed=0):
    """A shard of uniform random tokens (data/shard.h's 64-byte header)."""
    rng = np.random.default_rng(seed)
    tb = 2 if vocab <= 65536 else 4
    toks = rng.integers(0, vocab, size=n_tokens, dtype=np.int64).astype("<u2" if tb == 2 else "<i4")
    hdr = struct.pack("<IIIIQQiI", 0x4853434C, 1, tb, vocab, n_tokens, 0xB3C0, -1, 0).ljust(64, b"\0")
    with open(path, "wb") as f:
        f.write(hdr)
        f.write(toks.tobytes())


def flops_per_token(cfg, T):
    D, L, H, KV, F, V, tied = cfg
    HS = D // H
    per_layer = D * H * HS + 2 * D * KV * HS + H * HS * D + 3 * D * F + 2 * D
    n = L * per_layer + D + V * D  # + final norm + LM head (tied or not, the head's GEMM is done)
    return 6 * n + 12 * L * H * HS * T


CONFIGS = {  # dim, layers, heads, kv heads, hidden, vocab, tied (model/config.c)
    "110m": (768, 12, 12, 12, 2048, 32000, 1),
    "llama3.2-1b": (2048, 16, 32, 8, 8192, 128256, 1),
}


def gemm_peak():
    """bf16 GEMM rate measured here through torch (8192^3, median of 20)."""
    try:
        import torch
    except ImportError:
        return None
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    ts.sort()
    return 2 * n**3 / ts[len(ts) // 2]


class MemPoll:
    """Peak device memory in use (nvidia-smi, every 100 ms) while a run
    goes: the same measure for llamac and PyTorch (whose own
    max_memory_allocated leaves out its caching allocator's reserve)."""

    def __enter__(self):
        self.p = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                   "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        out, _ = self.p.communicate()
        vals = [float(x) for x in out.split() if x.replace(".", "").isdigit()]
        self.peak_gib = max(vals) / 1024 if vals else None


def run_llamac(llamac, name, steps, out, profile=False):
    preset, sets, vocab, T, B = SHAPES[name]
    shard = os.path.join(out, f"rand{vocab}.bin")
    if not os.path.exists(shard):
        write_shard(shard, vocab, (steps + 2) * B * T + 1)
    metrics = os.path.join(out, f"llamac-{name}.jsonl")
    cmd = [llamac, "pretrain", "--device", "cuda", "--preset", preset, "--train", shard, "--batch", str(B),
           "--seq", str(T), "--steps", str(steps), "--warmup", "10", "--lr", "3e-4", "--metrics", metrics,
           "--out", os.path.join(out, f"llamac-{name}.h5"), "--ckpt-dir", os.path.join(out, "ckpt"),
           "--val-every", "0", "--log-every", "5", "--doc-mask", "0"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    env = dict(os.environ, LC_CUDA_PROFILE="1") if profile else None
    with MemPoll() as mp:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    with open(os.path.join(out, f"llamac-{name}{'-profile' if profile else ''}.log"), "w") as f:
        f.write(p.stdout + p.stderr)
    if profile:  # the per-op table ops_cuda prints at exit (see LC_CUDA_PROFILE in model/ops_cuda.cu)
        lines = p.stderr.splitlines()
        i = next((k for k, l in enumerate(lines) if l.startswith("ops_cuda profile")), None)
        print(f"-- {name}: where the step goes\n" + ("\n".join(lines[i:]) if i is not None else "(no profile)"))
        return None
    if p.returncode != 0:
        print(f"llamac {name}: failed ({p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode})")
        return None
    rows = [json.loads(l) for l in open(metrics) if '"loss"' in l]
    tps = [r["tokens_per_s"] for r in rows[3:]] or [rows[-1]["tokens_per_s"]]  # skip warm-up steps
    tps.sort()
    return {"tokens_per_s": tps[len(tps) // 2], "peak_mem_gib": mp.peak_gib, "wall_s": time.time() - t0}


def run_torch(name, steps, mode, out):
    preset, _, vocab, T, B = SHAPES[name]
    cfg = CONFIGS[preset]
    res = os.path.join(out, f"torch-{name}-{mode}.json")
    cmd = [sys.executable, os.path.join(HERE, "bench_torch_gpu.py"), "--dim", str(cfg[0]), "--layers", str(cfg[1]),
           "--heads", str(cfg[2]), "--kv-heads", str(cfg[3]), "--hidden", str(cfg[4]), "--vocab", str(cfg[5]),
           "--tied", str(cfg[6]), "--batch", str(B), "--seq", str(T), "--steps", str(steps), "--mode", mode,
           "--json", res]
    with MemPoll() as mp:
        p = subprocess.run(cmd, capture_output=True, text=True)
    with open(os.path.join(out, f"torch-{name}-{mode}.log"), "w") as f:
        f.write(p.stdout + p.stderr)
    if p.returncode != 0:
        print(f"torch {name} {mode}: failed (see {out}/torch-{name}-{mode}.log)")
        return None
    r = json.load(open(res))
    r["peak_mem_gib"] = mp.peak_gib
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llamac", default=os.environ.get("LLAMAC", os.path.join(ROOT, "build-cuda", "llamac")))
    ap.add_argument("--shapes", default="110m,1b")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--out", default=os.path.join(ROOT, "build-cuda", "bench-gpu"))
    ap.add_argument("--profile", type=int, default=1, help="1: also a run with per-op times (LC_CUDA_PROFILE)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    measured = gemm_peak()
    print(f"peaks: {PEAK_H100 / 1e12:.0f} TFLOP/s (H100 bf16 dense, DESIGN.md); measured bf16 GEMM 8192^3: "
          + (f"{measured / 1e12:.0f} TFLOP/s" if measured else "n/a (no torch)"))
    table = []
    for name in a.shapes.split(","):
        preset, _, vocab, T, B = SHAPES[name]
        fpt = flops_per_token(CONFIGS[preset], T)
        rows = {"llamac": run_llamac(a.llamac, name, a.steps, a.out)}
        for mode in a.modes.split(","):
            rows[f"torch {mode}"] = run_torch(name, a.steps, mode, a.out)
        base = rows.get("torch eager")
        for who, r in rows.items():
            if not r:
                table.append((name, B, T, who, None, None, None, None, None))
                continue
            tps = r["tokens_per_s"]
            ratio = tps / base["tokens_per_s"] if base and who != "torch eager" else None
            table.append((name, B, T, who, tps, fpt * tps / PEAK_H100, fpt * tps / measured if measured else None,
                          r.get("peak_mem_gib"), ratio))
    hdr = f"{'shape':6} {'B':>3} {'T':>5} {'who':14} {'tok/s':>10} {'MFU989':>7} {'MFUgemm':>8} {'mem GiB':>8} {'vs eager':>8}"
    lines = [hdr]
    f = lambda v, s: ("-" if v is None else s % v)
    for name, B, T, who, tps, m1, m2, mem, ratio in table:
        lines.append(f"{name:6} {B:3d} {T:5d} {who:14} {f(tps, '%10.0f'):>10} {f(m1 and 100 * m1, '%6.1f%%'):>7} "
                     f"{f(m2 and 100 * m2, '%7.1f%%'):>8} {f(mem, '%8.1f'):>8} {f(ratio, '%7.2fx'):>8}")
    print("\n".join(lines))
    with open(os.path.join(a.out, "table.txt"), "w") as fo:
        fo.write("\n".join(lines) + "\n")
    if a.profile:
        for name in a.shapes.split(","):
            run_llamac(a.llamac, name, 6, a.out, profile=True)


if __name__ == "__main__":
    main()
