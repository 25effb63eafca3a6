#!/usr/bin/env python3
"""make bench-lora (or BENCH_LORA=1 make bench): llamac's LoRA training step
against Hugging Face transformers + PEFT on this CPU.

For each preset:T:B and each target set it runs, alternating `--rounds`
times so all see the same machine noise:
  llamac bench --lora-r R --lora-targets X --json        (LoRA step)
  llamac bench --lora-r R --lora-targets X --recompute   (LoRA, recomputation)
  scripts/bench_peft.py (PEFT, eager attention, AdamW on the adapters; its
  own process, so its peak RSS is its own)
and once per preset:T:B the full-training step `llamac bench` for the LoRA
vs full comparison, plus the full step with --recompute. It prints medians of
tokens/s and the largest peak RSS of each, and the ratios the README's
targets are about: llamac/PEFT tokens/s (>= 2x), llamac/PEFT peak RSS
(<= 50%), llamac LoRA/full tokens/s (>= 1.3x), recompute on/off.
Standard library only; PEFT lives in the reference venv (scripts/test_ref.sh).
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, SHAPES, VENV, run_json, venv_imports  # noqa: E402  (the step benchmark's shapes and runners)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="15m:256:8,15m:1024:2,42m:256:8,42m:1024:2,110m:256:8,110m:1024:2",
                    help="comma-separated preset:T:B")
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj;all-linear",
                    help="semicolon-separated target sets")
    ap.add_argument("--r", type=int, default=16, help="LoRA rank")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each peer")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (median)")
    ap.add_argument("--no-peft", action="store_true", help="llamac only")
    args = ap.parse_args()

    py = os.path.join(VENV, "bin", "python")
    have_peft = not args.no_peft and venv_imports("torch, transformers, peft")
    if not have_peft and not args.no_peft:
        print("bench-lora: no torch/transformers/peft in %s (run `make test-ref` once); llamac only" % VENV)
    llamac = os.path.join(ROOT, "build", "llamac")

    def lc(preset, T, B, *extra):
        return run_json([llamac, "bench", "--preset", preset, "--seq", T, "--batch", B,
                         "--steps", str(args.steps), "--json"] + list(extra))

    rows = []
    for spec in args.configs.split(","):
        preset, T, B = spec.split(":")
        full, full_rc = [], []
        per = {t: {"lora": [], "rc": [], "peft": []} for t in args.targets.split(";")}
        for rnd in range(args.rounds):
            full.append(lc(preset, T, B))
            full_rc.append(lc(preset, T, B, "--recompute"))
            for tg, d in per.items():
                flags = ["--lora-r", str(args.r), "--lora-targets", tg]
                d["lora"].append(lc(preset, T, B, *flags))
                d["rc"].append(lc(preset, T, B, *flags, "--recompute"))
                if have_peft:
                    dim, L, H, KV, F, V, tied = SHAPES[preset]
                    d["peft"].append(run_json([py, os.path.join(ROOT, "scripts", "bench_peft.py"),
                                               "--dim", str(dim), "--layers", str(L), "--heads", str(H),
                                               "--kv-heads", str(KV), "--hidden", str(F), "--vocab", str(V),
                                               "--tied", str(tied), "--batch", B, "--seq", T,
                                               "--lora-r", str(args.r), "--lora-targets", tg,
                                               "--steps", str(args.steps)]))
                print("  %s T=%s B=%s %s round %d: llamac LoRA %.0f tok/s (recompute %.0f), full %.0f%s" % (
                    preset, T, B, tg, rnd + 1, d["lora"][-1]["tokens_per_s"], d["rc"][-1]["tokens_per_s"],
                    full[-1]["tokens_per_s"],
                    ", PEFT %.0f tok/s" % d["peft"][-1]["tokens_per_s"] if d["peft"] else ""), flush=True)

        def tps(js):
            return statistics.median(j["tokens_per_s"] for j in js)

        def rss(js):
            return max(j["peak_rss_mb"] for j in js)

        for tg, d in per.items():
            rows.append(dict(preset=preset, T=int(T), B=int(B), targets=tg,
                             lora=tps(d["lora"]), lora_rss=rss(d["lora"]), rc=tps(d["rc"]), rc_rss=rss(d["rc"]),
                             full=tps(full), full_rss=rss(full), full_rc=tps(full_rc), full_rc_rss=rss(full_rc),
                             peft=tps(d["peft"]) if d["peft"] else None,
                             peft_rss=rss(d["peft"]) if d["peft"] else None,
                             torch=d["peft"][0]["torch"] + ", peft " + d["peft"][0]["peft"] if d["peft"] else None))

    j = full[0]
    print()
    print("CPU: %d cores; llamac: OpenBLAS %s, %d threads; LoRA r=%d alpha=r dropout 0; "
          "medians of %d alternating runs x %d timed steps" % (os.cpu_count(), j["blas"], j["threads"], args.r,
                                                               args.rounds, args.steps))
    if rows and rows[0]["torch"]:
        print("PEFT peer: torch %s, eager attention, AdamW on the adapters, default threads" % rows[0]["torch"])
    print("one step = forward + backward + clip + AdamW (on the adapters for LoRA)")
    print()
    print("| preset | T | B | targets | llamac LoRA tok/s | RSS MiB | PEFT tok/s | RSS MiB | tok/s vs PEFT |"
          " RSS vs PEFT | llamac full tok/s | LoRA / full | LoRA recompute tok/s | RSS MiB |"
          " full recompute tok/s | full RSS MiB, recompute / without |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pe = ("%.0f | %.0f | **%.2fx** | **%.0f%%**" % (r["peft"], r["peft_rss"], r["lora"] / r["peft"],
                                                        100 * r["lora_rss"] / r["peft_rss"])
              if r["peft"] else "- | - | - | -")
        print("| %s | %d | %d | %s | %.0f | %.0f | %s | %.0f | **%.2fx** | %.0f | %.0f | %.0f | %.0f / %.0f |" % (
            r["preset"], r["T"], r["B"], r["targets"], r["lora"], r["lora_rss"], pe, r["full"], r["lora"] / r["full"],
            r["rc"], r["rc_rss"], r["full_rc"], r["full_rc_rss"], r["full_rss"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
