#!/usr/bin/env python3
"""make bench: llamac's training step against PyTorch on this CPU.

For each (preset, T) it runs `llamac bench --json` and scripts/bench_torch.py
(transformers LlamaForCausalLM, float32, eager + SDPA, torch's default
threads) on the same shapes and batch, alternating them `--rounds` times so
both see the same machine noise, and prints medians: tokens/s, achieved
GFLOP/s (6N + 12*L*H*HS*T per token, DESIGN.md), the fraction of the SGEMM
peak llamac measured in the same run, peak resident memory, and the ratios.
Standard library only; torch lives in the reference venv (scripts/test_ref.sh).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("LLAMAC_VENV", os.path.expanduser("~/.cache/llamac-venv"))
SHAPES = {  # dim, layers, heads, kv heads, hidden, vocab, tied (model/config.c)
    "15m": (288, 6, 6, 6, 768, 32000, 1),
    "42m": (512, 8, 8, 8, 1376, 32000, 1),
    "110m": (768, 12, 12, 12, 2048, 32000, 1),
}


def venv_imports(modules):
    """Whether VENV's python exists and imports MODULES ("torch, transformers")."""
    py = os.path.join(VENV, "bin", "python")
    return os.path.exists(py) and subprocess.run([py, "-c", "import " + modules], capture_output=True).returncode == 0


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="15m:256:8,15m:1024:2,42m:256:8,42m:1024:2",
                    help="comma-separated preset:T:B")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each peer")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (median)")
    ap.add_argument("--no-torch", action="store_true", help="llamac only")
    ap.add_argument("--no-pretrain", action="store_true", help="skip the pretraining-throughput part")
    ap.add_argument("--no-ckpt", action="store_true", help="skip the checkpoint save/load part")
    args = ap.parse_args()

    py = os.path.join(VENV, "bin", "python")
    have_torch = not args.no_torch and venv_imports("torch, transformers")
    if not have_torch and not args.no_torch:
        print("bench: no torch in %s (run `make test-ref` once to create it); llamac only" % VENV)

    llamac = os.path.join(ROOT, "build", "llamac")
    # the SGEMM peak in its own process, so its buffers stay out of the RSS figures
    j = run_json([llamac, "bench", "--preset", "tiny", "--seq", "32", "--steps", "1", "--sgemm", "2048", "--json"])
    rows, peak, blas = [], j["sgemm_peak_gflops"], j["blas"]
    for spec in args.configs.split(","):
        preset, T, B = spec.split(":")
        lc, pt = [], []
        for r in range(args.rounds):
            j = run_json([llamac, "bench", "--preset", preset, "--seq", T, "--batch", B,
                          "--steps", str(args.steps), "--json"])
            lc.append(j)
            if have_torch:
                d, L, H, KV, F, V, tied = SHAPES[preset]
                pt.append(run_json([py, os.path.join(ROOT, "scripts", "bench_torch.py"),
                                    "--dim", str(d), "--layers", str(L), "--heads", str(H),
                                    "--kv-heads", str(KV), "--hidden", str(F), "--vocab", str(V),
                                    "--tied", str(tied), "--batch", B, "--seq", T,
                                    "--steps", str(args.steps)]))
            print("  %s T=%s B=%s round %d: llamac %.0f tok/s%s" % (
                preset, T, B, r + 1, j["tokens_per_s"],
                ", pytorch %.0f tok/s" % pt[-1]["tokens_per_s"] if pt else ""), flush=True)
        fpt = lc[0]["flops_per_token"]
        row = {
            "preset": preset, "T": int(T), "B": int(B),
            "lc_tps": statistics.median(j["tokens_per_s"] for j in lc),
            "lc_rss": max(j["peak_rss_mb"] for j in lc),
        }
        row["lc_gflops"] = row["lc_tps"] * fpt / 1e9
        if pt:
            row["pt_tps"] = statistics.median(j["tokens_per_s"] for j in pt)
            row["pt_gflops"] = row["pt_tps"] * fpt / 1e9
            row["pt_rss"] = max(j["peak_rss_mb"] for j in pt)
            row["torch"] = pt[0]["torch"]
        rows.append(row)

    print()
    print("CPU: %d cores; llamac: OpenBLAS %s, %d threads; SGEMM peak %.1f GFLOP/s (2048^3, best of 10)"
          % (os.cpu_count(), blas, lc[0]["threads"], peak))
    if rows and "torch" in rows[0]:
        print("PyTorch %s, eager, SDPA attention, default threads" % rows[0]["torch"])
    print("medians of %d alternating runs x %d timed steps; one step = forward + backward + clip + AdamW"
          % (args.rounds, args.steps))
    print()
    print("| preset | T | B | llamac tok/s | GFLOP/s | % of SGEMM peak | peak RSS MiB |"
          " PyTorch tok/s | GFLOP/s | peak RSS MiB | llamac / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pt = ("%.0f | %.1f | %.0f | **%.2fx**" % (r["pt_tps"], r["pt_gflops"], r["pt_rss"], r["lc_tps"] / r["pt_tps"])
              if "pt_tps" in r else "- | - | - | -")
        print("| %s | %d | %d | %.0f | %.1f | %.0f%% | %.0f | %s |" % (
            r["preset"], r["T"], r["B"], r["lc_tps"], r["lc_gflops"], 100 * r["lc_gflops"] / peak,
            r["lc_rss"], pt))
    if not args.no_pretrain:
        pretrain_bench(args, llamac, py if have_torch else None)
    if not args.no_ckpt:
        ckpt_bench(args, llamac)
    return 0


def ckpt_bench(args, llamac):
    """Checkpoint save/load of the 110M preset with AdamW state against the
    disk's sequential write speed (llamac bench --ckpt measures both in one
    run, interleaved, so a busy disk slows both alike)."""
    d = os.path.join(ROOT, "build")
    j = run_json([llamac, "bench", "--preset", "110m", "--ckpt", d, "--rounds", str(args.rounds), "--json"])
    print()
    print("Checkpoints: 110m with AdamW moments (%.0f MB per file), medians of %d rounds, in %s" % (
        j["mb"], args.rounds, d))
    print()
    print("| save s | save MB/s | load s | load MB/s | disk write MB/s (8 MiB writes + fsync) | save / disk |")
    print("|---|---|---|---|---|---|")
    print("| %.2f | %.0f | %.2f | %.0f | %.0f | **%.0f%%** |" % (
        j["save_s"], j["save_mb_s"], j["load_s"], j["load_mb_s"], j["disk_mb_s"],
        100 * j["save_mb_s"] / j["disk_mb_s"]))


def step_rates(text):
    """tokens/s of each 'step i/N | ... | X tok/s' line of llamac pretrain"""
    return [float(line.split(" tok/s")[0].rsplit("| ", 1)[1])
            for line in text.splitlines() if line.startswith("step ") and " tok/s" in line]


def pretrain_bench(args, llamac, py):
    """Pretraining with data loading (llamac pretrain on the demo shards)
    against the step benchmark at the same shape, and against PyTorch
    training on the same shard; plus tokenizer encoding speed."""
    demo = os.path.join(ROOT, "build", "demo")
    if not os.path.exists(os.path.join(demo, "train.bin")):
        subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, check=True,
                       env=dict(os.environ, DEMO_PREP_ONLY="1"), capture_output=True)
    enc = subprocess.run([llamac, "tokenize", "encode", "--tokenizer", os.path.join(demo, "tok.bin"),
                          "--input", os.path.join(ROOT, "build", "corpus", "train.jsonl"),
                          "--out", os.path.join(demo, "bench.bin")],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    mbs = float(enc.split(" MB/s")[0].rsplit("(", 1)[1])
    B, T, steps = "8", "256", 6
    d, L, H, KV, F, V, tied = SHAPES["15m"]
    pre, step, pt = [], [], []
    for r in range(args.rounds):
        out = subprocess.run([llamac, "pretrain", "--train", os.path.join(demo, "train.bin"), "--preset", "15m",
                              "--batch", B, "--seq", T, "--steps", str(steps + 1), "--shuffle", "0",
                              "--peak-gflops", "1", "--out", os.path.join(demo, "bench.h5"),
                              "--ckpt-dir", os.path.join(demo, "ckpt-bench")],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
        pre.append(statistics.median(step_rates(out)[1:]))
        step.append(run_json([llamac, "bench", "--preset", "15m", "--set", "vocab=4096", "--batch", B,
                              "--seq", T, "--steps", str(steps), "--json"])["tokens_per_s"])
        if py:
            pt.append(run_json([py, os.path.join(ROOT, "scripts", "bench_torch.py"), "--dim", str(d),
                                "--layers", str(L), "--heads", str(H), "--kv-heads", str(KV), "--hidden", str(F),
                                "--vocab", "4096", "--tied", str(tied), "--batch", B, "--seq", T,
                                "--steps", str(steps), "--shard", os.path.join(demo, "train.bin")])["tokens_per_s"])
        print("  pretrain round %d: llamac pretrain %.0f tok/s, llamac bench %.0f tok/s%s" % (
            r + 1, pre[-1], step[-1], ", pytorch on the shard %.0f tok/s" % pt[-1] if pt else ""), flush=True)
    p, s = statistics.median(pre), statistics.median(step)
    print()
    print("Pretraining throughput, 15m shape with the demo's 4096-word vocabulary, B=%s T=%s, "
          "data loading included, medians of %d rounds:" % (B, T, args.rounds))
    print()
    print("| llamac pretrain tok/s | llamac bench (step only) tok/s | pretrain / bench |%s" % (
        " PyTorch on the same shard tok/s | llamac / PyTorch |" if pt else ""))
    print("|---|---|---|%s" % ("---|---|" if pt else ""))
    print("| %.0f | %.0f | %.3f |%s" % (p, s, p / s, " %.0f | **%.2fx** |" % (
        statistics.median(pt), p / statistics.median(pt)) if pt else ""))
    print()
    print("Tokenizer: llamac tokenize encode, one core, 6.2 MB of JSONL (parsing included): %.1f MB/s" % mbs)


if __name__ == "__main__":
    sys.exit(main())
