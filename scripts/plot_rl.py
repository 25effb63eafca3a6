"""plot_rl.py METRICS.jsonl --out OUT.png --title T: an `llamac rl` run's
reward per rollout (training samples), held-out reward (validation) and KL
to the reference (GRPO's `kl`, PPO's and online DPO's `objective/kl`) by
optimizer step. Run through scripts/plot_metrics.sh --py (matplotlib in
the reference venv)."""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="llamac rl")
    a = ap.parse_args()
    train, val = [], []
    for line in open(a.metrics):
        r = json.loads(line)
        (val if "val_reward" in r else train).append(r)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["reward"] for r in train], ".-", alpha=0.6, label="reward (rollout samples)")
    if val:
        ax.plot([r["step"] for r in val], [r["val_reward"] for r in val], "o-", lw=2, label="held-out reward (greedy)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    kl_key = next((k for k in ("objective/kl", "kl") if train and k in train[0]), None)
    if kl_key:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in train], [r[kl_key] for r in train], "-", color="tab:red", alpha=0.7,
                 label=f"KL to the reference ({kl_key})")
        ax2.set_ylabel("KL", color="tab:red")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(a.title)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
