#!/usr/bin/env python3
"""Draw pipeline timelines (`llamac pretrain --pp P --pp-timeline FILE`) as one PNG.

    python scripts/plot_pp_timeline.py TIMELINE.json [MORE.json ...] --out PLOT.png [--title TEXT]

A timeline file holds one step of a pipelined run, written by rank 0:
{"schedule", "stages", "micro_batches", "bubble", "ops": [{"stage", "op"
("F" or "B"), "mb", "start", "end"}, ...]}, times in seconds from the step's
start. Each file is one panel: a row per stage, a box per forward (blue) and
backward (orange) labelled with its micro-batch, the gaps between them the
stage's idle time; the row's label gives the stage's idle fraction over the
step (first start to last end over all stages) against the bubble of equal
stages (P-1)/(M+P-1). Panels share the time axis, so schedules compare at
a glance. Needs matplotlib (scripts/requirements-plot.txt).
"""

import argparse
import json
import sys

NEED = ("schedule", "stages", "micro_batches", "bubble", "ops")
OP_KEYS = ("stage", "op", "mb", "start", "end")


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            t = json.load(f)
    except OSError as e:
        sys.exit(f"plot_pp_timeline: {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        sys.exit(f"plot_pp_timeline: {path}: not valid JSON ({e.msg}, line {e.lineno})")
    if not isinstance(t, dict) or any(k not in t for k in NEED):
        sys.exit(f"plot_pp_timeline: {path}: not a timeline (needs {', '.join(NEED)})")
    for n, o in enumerate(t["ops"]):
        if not isinstance(o, dict) or any(k not in o for k in OP_KEYS) or o["op"] not in ("F", "B") \
                or not 0 <= o["stage"] < t["stages"]:
            sys.exit(f"plot_pp_timeline: {path}: op {n} is malformed")
    if not t["ops"]:
        sys.exit(f"plot_pp_timeline: {path}: no ops")
    return t


def idle(t):
    """Each stage's idle fraction of the step (first start to last end over all stages)."""
    t0 = min(o["start"] for o in t["ops"])
    span = max(o["end"] for o in t["ops"]) - t0
    busy = [0.0] * t["stages"]
    for o in t["ops"]:
        busy[o["stage"]] += o["end"] - o["start"]
    return [1 - b / span for b in busy] if span > 0 else [0.0] * t["stages"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("timelines", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title")
    args = ap.parse_args()
    tls = [read(p) for p in args.timelines]
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = sum(t["stages"] for t in tls)
    fig, axes = plt.subplots(len(tls), 1, figsize=(12, 1.0 + 0.55 * rows + 0.5 * len(tls)),
                             sharex=True, squeeze=False)
    color = {"F": "tab:blue", "B": "tab:orange"}
    for ax, t in zip(axes[:, 0], tls):
        P = t["stages"]
        t0 = min(o["start"] for o in t["ops"])
        span = max(o["end"] for o in t["ops"]) - t0
        for o in t["ops"]:
            s, a, b = o["stage"], o["start"] - t0, o["end"] - t0
            ax.broken_barh([(a, b - a)], (s - 0.4, 0.8), facecolors=color[o["op"]], edgecolors="black",
                           linewidth=0.5)
            if b - a > span / 120:  # a label only where it fits
                ax.text((a + b) / 2, s, str(o["mb"]), ha="center", va="center", fontsize=7,
                        color="white" if o["op"] == "F" else "black")
        ax.set_yticks(range(P))
        ax.set_yticklabels([f"stage {s}\nidle {100 * f:.0f}%" for s, f in enumerate(idle(t))], fontsize=8)
        ax.set_ylim(P - 0.5, -0.5)  # stage 0 on top
        ax.set_title(f"{t['schedule']}: {P} stages x {t['micro_batches']} micro-batches, bubble (P-1)/(M+P-1) "
                     f"= {100 * t['bubble']:.1f}%, step {span:.2f} s", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds from the step's start")
    handles = [plt.Rectangle((0, 0), 1, 1, color=color[k]) for k in ("F", "B")]
    fig.legend(handles, ["forward (its micro-batch)", "backward (its micro-batch)"], loc="lower center",
               fontsize=8, ncol=2, frameon=False)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(args.out, dpi=90)
    print(f"plot_pp_timeline: {args.out}")


if __name__ == "__main__":
    main()
