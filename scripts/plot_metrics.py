#!/usr/bin/env python3
"""Draw a llamac metrics file (JSON lines, `llamac pretrain --metrics`) as one PNG.

    python scripts/plot_metrics.py METRICS.jsonl [--out PLOT.png] [--title TEXT] [--keys A+B,C]

The file has one line per optimizer step ({"step", "loss", "lr", "grad_norm",
"tokens_per_s", "mfu", "elapsed_s", "tokens"}) and one per validation
({"step", "val_loss"}); lines of other shapes (a resumed run's repeats,
fields a later version adds) are taken as they come, and a line that is not
JSON is an error naming the file and line. Four panels share the step axis:
training and validation loss, learning rate, gradient norm, tokens/s. The
default OUT is METRICS with .png in place of .jsonl. --keys draws other
fields instead, one panel per comma-separated group, one line per
+-separated key (validation keys, val_*, as dots): `llamac rl`'s
--keys reward+val_reward,objective/kl (make demo-ppo).
"""

import argparse
import json
import os
import sys


def read(path, keys=("loss", "val_loss", "lr", "grad_norm", "tokens_per_s")):
    """{key: [(step, value), ...] by step} of a metrics file, for each of keys"""
    steps = {k: [] for k in keys}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot_metrics: {path}:{n}: not valid JSON ({e.msg})")
            if not isinstance(rec, dict) or "step" not in rec:
                sys.exit(f"plot_metrics: {path}:{n}: no \"step\"")
            for k, v in steps.items():
                if isinstance(rec.get(k), (int, float)):
                    v.append((rec["step"], rec[k]))
    # a resumed run writes some steps again: the last value of a step wins
    return {k: sorted(dict(v).items()) for k, v in steps.items()}


def plot_keys(path, out, title, panels):
    """panels (lists of keys) of a metrics file, side by side over the step axis"""
    m = read(path, tuple(k for p in panels for k in p))
    if not any(m.values()):
        sys.exit(f"plot_metrics: {path}: none of {', '.join(m)}")
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for a, keys in zip(ax[0], panels):
        for k in keys:
            if not m[k]:
                continue
            s, v = [x for x, _ in m[k]], [y for _, y in m[k]]
            a.plot(s, v, "o-" if k.startswith("val_") else "-", ms=4, lw=1.2 if k.startswith("val_") else 0.9, label=k)
            a.annotate(f"{v[-1]:.3f}", (s[-1], v[-1]), textcoords="offset points", xytext=(-28, 8))
        a.set_xlabel("step")
        a.set_ylabel(" / ".join(keys))
        a.legend()
        a.grid(alpha=0.3)
    fig.suptitle(title or os.path.basename(path))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot_metrics: {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics")
    ap.add_argument("--out")
    ap.add_argument("--title")
    ap.add_argument("--keys", help="panels of fields: A+B,C (one panel per comma group)")
    args = ap.parse_args()
    out = args.out or (args.metrics[:-6] if args.metrics.endswith(".jsonl") else args.metrics) + ".png"
    if args.keys:
        return plot_keys(args.metrics, out, args.title, [g.split("+") for g in args.keys.split(",")])
    m = read(args.metrics)
    if not m["loss"] and not m["val_loss"]:
        sys.exit(f"plot_metrics: {args.metrics}: no loss values")
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    xy = lambda k: ([s for s, _ in m[k]], [v for _, v in m[k]])
    a = ax[0][0]
    if m["loss"]:
        a.plot(*xy("loss"), lw=0.8, color="tab:blue", alpha=0.8, label="training loss")
    if m["val_loss"]:
        a.plot(*xy("val_loss"), "o-", ms=3, color="tab:red", label="validation loss")
        s, v = m["val_loss"][-1]
        a.annotate(f"{v:.3f}", (s, v), textcoords="offset points", xytext=(-28, 8), color="tab:red")
    a.set_ylabel("loss (nats / token)")
    a.legend()
    a.grid(alpha=0.3)
    for a, k, label, color in ((ax[0][1], "lr", "learning rate", "tab:green"),
                               (ax[1][0], "grad_norm", "gradient norm (before clipping)", "tab:purple"),
                               (ax[1][1], "tokens_per_s", "tokens / s", "tab:orange")):
        if m[k]:
            a.plot(*xy(k), lw=0.8, color=color)
        a.set_ylabel(label)
        a.grid(alpha=0.3)
    ax[0][1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for a in ax[1]:
        a.set_xlabel("step")
    fig.suptitle(args.title or os.path.basename(args.metrics))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot_metrics: {out}")


if __name__ == "__main__":
    main()
