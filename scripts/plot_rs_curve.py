#!/usr/bin/env python3
"""Draw `llamac rs` reward curves (DIR/round-R/curve.jsonl) as one PNG: the
best and the median reward of the first k samples per prompt, averaged over
prompts, against k (Llama 2's "max vs median reward among N samples",
arXiv 2307.09288 Figure 7), one colour per round.

    python scripts/plot_rs_curve.py DIR/round-1/curve.jsonl [DIR/round-2/curve.jsonl ...] --out curve.png

Each line is {"k", "best", "median", "prompts", "round"}; a line that is not
JSON or lacks a field is an error naming the file and line. The gap between
the two lines at k is what keeping the best of k samples gains over a
typical sample. Run it in the plot venv (scripts/plot_metrics.sh makes it):
~/.cache/llamac-venv/bin/python scripts/plot_rs_curve.py ...
"""

import argparse
import json
import sys


def read(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot_rs_curve: {path}:{n}: not valid JSON ({e.msg})")
            if not isinstance(rec, dict) or not all(isinstance(rec.get(k), (int, float)) for k in ("k", "best", "median")):
                sys.exit(f"plot_rs_curve: {path}:{n}: needs numbers \"k\", \"best\" and \"median\"")
            rows.append(rec)
    if not rows:
        sys.exit(f"plot_rs_curve: {path}: no points")
    return sorted(rows, key=lambda r: r["k"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("curves", nargs="+", help="curve.jsonl files, one per round")
    ap.add_argument("--out", default="curve.png")
    ap.add_argument("--title", default="rejection sampling: reward by samples per prompt")
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, path in enumerate(a.curves):
        rows = read(path)
        ks = [r["k"] for r in rows]
        name = f"round {rows[0].get('round', i + 1)}"
        c = f"C{i % 10}"
        ax.plot(ks, [r["best"] for r in rows], "-o", color=c, label=f"{name}: best of k")
        ax.plot(ks, [r["median"] for r in rows], "--s", color=c, label=f"{name}: median of k")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per prompt k")
    ax.set_ylabel("reward (mean over prompts)")
    ax.set_title(a.title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"plot_rs_curve: {len(a.curves)} round(s) -> {a.out}")


if __name__ == "__main__":
    main()
