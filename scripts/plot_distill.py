#!/usr/bin/env python3
"""Draw make demo-distill's validation curves as one PNG.

    python scripts/plot_distill.py RUN.jsonl... --out CURVES.png --tokens-per-step N [--teacher LOSS]

Each RUN.jsonl is a `llamac distill --metrics` file; its validation lines
({"step", "val_loss", "eval_ce", "eval_kd"}) give one curve of the held-out
cross-entropy (eval_ce: the data's loss whatever the kd weight, so the runs
compare) against the tokens trained (step x N). The teacher's loss on the
same shard, when given, is a horizontal line. The label of a curve is its
file name without .jsonl. Exit 1 with a reason if a file has no validation.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_metrics import read  # noqa: E402


def curve(path):
    pts = read(path, ("eval_ce",))["eval_ce"]
    if not pts:
        sys.exit(f"plot_distill.py: {path}: no validation lines (eval_ce)")
    return [x for x, _ in pts], [y for _, y in pts]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens-per-step", type=int, required=True)
    ap.add_argument("--teacher", type=float, default=None)
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in a.runs:
        xs, ys = curve(p)
        ax.plot([x * a.tokens_per_step for x in xs], ys, marker="o", ms=3,
                label=os.path.basename(p).removesuffix(".jsonl"))
    if a.teacher is not None:
        ax.axhline(a.teacher, color="k", ls="--", lw=1, label="teacher")
    ax.set_xlabel("tokens trained")
    ax.set_ylabel("held-out cross-entropy (nats/token)")
    ax.set_title("llamac make demo-distill: SmolLM2-135M-Instruct pruned to half, trained back")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
