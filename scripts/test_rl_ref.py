#!/usr/bin/env python3
"""llamac's RL arithmetic (train/loop/rlalgo.c) against TRL's own code.

    python scripts/test_rl_ref.py [--llamac build/llamac] [--work build/test_rl_ref]
                                  [--fixture tests/fixtures/rl/rl_ref.json]

Draws seeded inputs (rewards, per-token logp / old / ref, masks, values),
has TRL compute every quantity rlalgo.h promises, in float64, and writes them
with the inputs to WORK/rl_ref.json; `build/tests rlalgo_trl` (beside
--llamac) with LLAMAC_RL_REF naming that file recomputes them with rlalgo.c
and must agree within 1e-12 + 1e-10 |ref| (the same double formulas; it prints
the largest differences). --fixture writes the file there as well (the
committed tests/fixtures/rl/rl_ref.json that `make test` reads without
Python); without it the fresh file is also compared with the committed one.

  GRPO (trl 1.16.0, this venv): GRPOTrainer._compute_loss itself, called on a
    stub `self` whose _get_per_token_logps_and_entropies returns the given
    logp (a leaf: d loss / d logp by autograd), for loss_type grpo, bnpo,
    dr_grpo, dapo, beta 0 and 0.04, ratio != 1 on both sides of the clip and
    ratio 1 (no old_per_token_logps: TRL's logp.detach()), and its logged
    clip_ratio/low_mean, high_mean and kl. The advantages are inline in
    _generate_and_score_completions: transcribed below with TRL's own nanstd.
  RLOO (trl 1.16.0): RLOOTrainer._compute_loss on a stub the same way; the
    KL-shaped rewards and leave-one-out advantages transcribed from
    RLOOTrainer._generate_and_score_completions with TRL's nanstd.
  PPO (trl 1.12.0, trl/experimental/ppo; a second venv made by
    scripts/venv_trl112.sh, this script re-run there with --ppo-json):
    masked_mean, masked_whiten and first_true_indices are TRL's; the reward,
    GAE and loss steps of PPOTrainer.train are inline there and transcribed
    line for line below.

Prints PASS/FAIL per check and "test_rl_ref: N passed, M failed".
"""
import argparse
import json
import math
import os
import subprocess
import sys
import warnings
from collections import defaultdict
from types import SimpleNamespace

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from refcheck import check, summary  # noqa: E402

F64 = torch.float64


def flat(x):
    return [float(v) for v in x.detach().reshape(-1).tolist()]


def right_mask(lens, T):
    return (torch.arange(T).unsqueeze(0) < torch.tensor(lens).unsqueeze(1)).long()


# ----------------------------------------------------------------------------
# GRPO and RLOO (trl 1.16.0)

def grpo_advantages(rewards, G, scale):
    """trl/trainer/grpo_trainer.py GRPOTrainer._generate_and_score_completions,
    multi_objective_aggregation "sum_then_normalize" (the default), rewards
    already summed over the reward functions."""
    from trl.trainer.utils import nanstd
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, G), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(G, dim=0)
    if scale in ["group", "none"]:
        if G > 1:
            std_rewards = nanstd(rewards.view(-1, G), dim=1)
            std_rewards = std_rewards.repeat_interleave(G, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    else:  # "batch"
        if rewards.numel() > 1:
            std_rewards = nanstd(rewards).expand_as(rewards)
        else:
            std_rewards = torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale != "none":
        advantages = advantages / (std_rewards + 1e-4)
    advantages = torch.nan_to_num(advantages, nan=0.0)
    # each group's std, whatever the scale (rlalgo.h's group_std; TRL logs is_std_zero from std_rewards)
    group_std = nanstd(rewards.view(-1, G), dim=1) if G > 1 else torch.zeros(rewards.numel(), dtype=F64)
    return advantages, group_std


class Accel:
    num_processes = 1
    sync_gradients = True

    def reduce(self, x, reduction="sum"):
        return x

    def gather(self, x):
        return x

    gather_for_metrics = gather


def stub(logp, **kw):
    """The attributes GRPOTrainer/RLOOTrainer._compute_loss read, and a
    _get_per_token_logps_and_entropies that returns the given logp."""
    s = SimpleNamespace(**kw)
    s._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
    s.aux_loss_enabled = False
    s.model = SimpleNamespace(training=True)
    s.accelerator = Accel()
    s._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    return s


def grpo_loss_case(name, g, B, T, lens, loss_type, beta, kl_ratio, eps_low, eps_high, ratio_one, spg):
    from trl import GRPOTrainer
    mask = right_mask(lens, T)
    logp = -(torch.randn(B, T, generator=g, dtype=F64).abs() * 1.5 + 0.05)
    old = logp + torch.randn(B, T, generator=g, dtype=F64) * 0.25
    if ratio_one:
        old = logp.clone()
    ref = logp + torch.randn(B, T, generator=g, dtype=F64) * 0.3
    adv = torch.randn(B, generator=g, dtype=F64)
    gen_tokens = int(mask.sum()) * spg + 3  # the generation batch's tokens (other steps' rows too)
    leaf = logp.clone().requires_grad_(True)
    self = stub(leaf, top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
                beta=beta, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
                current_gradient_accumulation_steps=1, max_completion_length=T, _entropy_bonus_enabled=False,
                args=SimpleNamespace(use_bias_correction_kl=bool(kl_ratio), delta=None, steps_per_generation=spg))
    inputs = {"prompt_ids": torch.zeros(B, 0, dtype=torch.long), "prompt_mask": torch.zeros(B, 0, dtype=torch.long),
              "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "num_items_in_batch": torch.tensor(float(gen_tokens), dtype=F64)}
    if not ratio_one:
        inputs["old_per_token_logps"] = old
    if beta != 0:
        inputs["ref_per_token_logps"] = ref
    loss = GRPOTrainer._compute_loss(self, None, inputs)
    loss.backward()
    m = self._metrics["train"]
    return {"name": name, "loss_type": loss_type, "beta": beta, "kl_ratio": kl_ratio, "eps_low": eps_low,
            "eps_high": eps_high, "B": B, "T": T, "max_len": T, "gen_tokens": gen_tokens, "steps_per_gen": spg,
            "logp": flat(logp), "old": flat(old), "ref": flat(ref), "mask": flat(mask), "adv": flat(adv),
            "loss": float(loss), "grad": flat(leaf.grad), "clip_low": m["clip_ratio/low_mean"][0],
            "clip_high": m["clip_ratio/high_mean"][0], "kl": m["kl"][0] if beta != 0 else 0.0}


def rloo_case(name, g, G, P, T, beta, normalize, eps):
    """RLOO's rewards and advantages (trl/trainer/rloo_trainer.py
    RLOOTrainer._generate_and_score_completions, transcribed) and its loss
    (RLOOTrainer._compute_loss, called)."""
    from trl import RLOOTrainer
    from trl.trainer.utils import nanstd
    B = G * P
    lens = [int(x) for x in torch.randint(1, T + 1, (B,), generator=g)]
    completion_mask = right_mask(lens, T)
    score = torch.randn(B, generator=g, dtype=F64)
    old_per_token_logps = -(torch.randn(B, T, generator=g, dtype=F64).abs() + 0.05)
    ref_per_token_logps = old_per_token_logps + torch.randn(B, T, generator=g, dtype=F64) * 0.2
    logp = old_per_token_logps + torch.randn(B, T, generator=g, dtype=F64) * 0.08
    old_logps = (old_per_token_logps * completion_mask).sum(1)
    # --- transcribed: rewards with the KL penalty, the leave-one-out baseline
    rewards = score.clone()
    if beta != 0.0:
        per_token_kl = old_per_token_logps - ref_per_token_logps
        kl = (per_token_kl * completion_mask).sum(-1)
        rewards = rewards - beta * kl
    grouped_rewards = rewards.view(-1, G)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    if G > 1:
        baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
        advantages = rewards - baselines.view(-1)
    else:
        advantages = torch.zeros_like(rewards)
    if normalize:
        advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
    advantages = torch.nan_to_num(advantages, nan=0.0)
    # --- called: the sequence loss
    leaf = logp.clone().requires_grad_(True)
    self = stub(leaf, epsilon_low=eps, epsilon_high=eps)
    inputs = {"prompt_ids": torch.zeros(B, 0, dtype=torch.long), "prompt_mask": torch.zeros(B, 0, dtype=torch.long),
              "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": completion_mask,
              "old_logps": old_logps, "advantages": advantages}
    loss = RLOOTrainer._compute_loss(self, None, inputs)
    loss.backward()
    m = self._metrics["train"]
    return {"name": name, "G": G, "B": B, "T": T, "beta": beta, "normalize": normalize, "eps": eps,
            "score": flat(score), "old": flat(old_per_token_logps), "ref": flat(ref_per_token_logps),
            "logp": flat(logp), "mask": flat(completion_mask), "reward": flat(rewards), "adv": flat(advantages),
            "loss": float(loss), "grad": flat(leaf.grad), "clip_low": m["clip_ratio/low_mean"][0],
            "clip_high": m["clip_ratio/high_mean"][0]}


def trl116_part():
    import trl
    assert trl.__version__ == "1.16.0", trl.__version__
    out = {"grpo_adv": [], "grpo_loss": [], "rloo": []}
    g = torch.Generator().manual_seed(1234)
    for G, n in ((4, 12), (3, 9), (1, 5)):
        r = torch.randn(n, generator=g, dtype=F64) * 2 + 0.5
        r[1] = r[0] if G > 1 else r[1]  # a tie inside a group
        if G == 3:
            r[3:6] = 0.7  # a group of equal rewards: std 0
        for scale in ("group", "batch", "none"):
            adv, gstd = grpo_advantages(r, G, scale)
            out["grpo_adv"].append({"name": f"G {G} scale {scale}", "G": G, "scale": scale, "r": flat(r),
                                    "adv": flat(adv), "group_std": flat(gstd)})
    B, T = 6, 7
    lens = [7, 3, 5, 0, 1, 6]  # a fully masked row (mask_truncated_completions) and a one-token row
    cases = []
    for lt in ("grpo", "bnpo", "dr_grpo", "dapo"):
        for beta in (0.0, 0.04):
            cases.append((lt, beta, 1, 0.2, 0.28, False, 4))
    cases += [("grpo", 0.04, 1, 0.2, 0.2, True, 1), ("bnpo", 0.04, 0, 0.2, 0.2, False, 1),
              ("dapo", 0.04, 0, 0.2, 0.28, True, 2)]
    for lt, beta, klr, el, eh, one, spg in cases:
        name = f"{lt} beta {beta} kl_ratio {klr} eps {el}/{eh}{' ratio 1' if one else ''} spg {spg}"
        out["grpo_loss"].append(grpo_loss_case(name, g, B, T, lens, lt, beta, klr, el, eh, one, spg))
    for G, P, beta, norm in ((4, 2, 0.0, 0), (4, 2, 0.05, 0), (3, 3, 0.05, 1), (1, 3, 0.05, 1)):
        out["rloo"].append(rloo_case(f"G {G} beta {beta} normalize {norm}", g, G, P, 6, beta, norm, 0.2))
    return out


# ----------------------------------------------------------------------------
# PPO (trl 1.12.0)

def ppo_case(name, g, n, R, lens, kl_estimator, kl_coef, gamma, lam, cliprange, cliprange_value, vf_coef):
    """The rollout arithmetic of trl/experimental/ppo/ppo_trainer.py
    PPOTrainer.train ("Response Processing" to "6. compute advantages and
    returns") and its loss (the micro-batch body), transcribed; masked_mean,
    masked_whiten, first_true_indices and INVALID_LOGPROB are TRL's."""
    from trl.experimental.ppo.ppo_trainer import INVALID_LOGPROB, masked_mean, masked_whiten
    from trl.experimental.utils import first_true_indices
    pad = 0
    responses = torch.randint(1, 50, (n, R), generator=g)
    for i, L in enumerate(lens):
        responses[i, L:] = pad
    logprobs = -(torch.randn(n, R, generator=g, dtype=F64).abs() + 0.05)
    ref_logprobs = logprobs + torch.randn(n, R, generator=g, dtype=F64) * 0.3
    scores = torch.randn(n, generator=g, dtype=F64)
    values = torch.randn(n, R, generator=g, dtype=F64)
    sequence_lengths = first_true_indices(responses == pad) - 1
    inputs = {"len": list(lens), "logp": flat(logprobs), "ref": flat(ref_logprobs), "score": flat(scores),
              "values_in": flat(values)}
    # --- transcribed from PPOTrainer.train
    response_idxs = torch.arange(responses.shape[1], device=responses.device).repeat(responses.shape[0], 1)
    padding_mask = response_idxs > sequence_lengths.unsqueeze(1)
    logprobs = torch.masked_fill(logprobs, padding_mask, INVALID_LOGPROB)
    ref_logprobs = torch.masked_fill(ref_logprobs, padding_mask, INVALID_LOGPROB)
    sequence_lengths_p1 = sequence_lengths + 1
    padding_mask_p1 = response_idxs > (sequence_lengths_p1.unsqueeze(1))
    values = torch.masked_fill(values, padding_mask_p1, 0)
    logr = ref_logprobs - logprobs
    kl = -logr if kl_estimator == "k1" else (logr.exp() - 1) - logr
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    actual_start = torch.arange(rewards.size(0), device=rewards.device)
    actual_end = torch.where(sequence_lengths_p1 < rewards.size(1), sequence_lengths_p1, sequence_lengths)
    rewards[actual_start, actual_end] += scores
    lastgaelam = 0
    advantages_reversed = []
    gen_length = responses.shape[1]
    for t in reversed(range(gen_length)):
        nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], axis=1)
    returns = advantages + values
    advantages = masked_whiten(advantages, ~padding_mask)
    advantages = torch.masked_fill(advantages, padding_mask, 0)
    # --- the loss of one micro-batch holding every row (the update's body)
    new_in = logprobs + torch.randn(n, R, generator=g, dtype=F64) * 0.25
    vpred_in = values + torch.randn(n, R, generator=g, dtype=F64) * 0.3
    new_leaf = new_in.clone().requires_grad_(True)
    v_leaf = vpred_in.clone().requires_grad_(True)
    new_logprobs = torch.masked_fill(new_leaf, padding_mask, INVALID_LOGPROB)
    vpred = torch.masked_fill(v_leaf, padding_mask_p1, 0)
    vpredclipped = torch.clamp(vpred, values - cliprange_value, values + cliprange_value)
    vf_losses1 = torch.square(vpred - returns)
    vf_losses2 = torch.square(vpredclipped - returns)
    vf_loss_max = torch.max(vf_losses1, vf_losses2)
    vf_loss = 0.5 * masked_mean(vf_loss_max, ~padding_mask_p1)
    vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).float(), ~padding_mask_p1)
    logprobs_diff = new_logprobs - logprobs
    ratio = torch.exp(logprobs_diff)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = torch.max(pg_losses, pg_losses2)
    pg_loss = masked_mean(pg_loss_max, ~padding_mask)
    loss = pg_loss + vf_coef * vf_loss
    pg_clipfrac = masked_mean((pg_losses2 > pg_losses).float(), ~padding_mask)
    loss.backward()
    return dict(inputs, name=name, n=n, R=R, kl_estimator=kl_estimator, kl_coef=kl_coef, gamma=gamma, lam=lam,
                cliprange=cliprange, cliprange_value=cliprange_value, vf_coef=vf_coef,
                values=flat(values), new_logp=flat(new_in), vpred=flat(vpred_in), kl=flat(kl),
                rewards=flat(rewards), adv=flat(advantages), ret=flat(returns), pg_loss=float(pg_loss),
                vf_loss=float(vf_loss), loss=float(loss), pg_clipfrac=float(pg_clipfrac),
                vf_clipfrac=float(vf_clipfrac), grad_logp=flat(new_leaf.grad), grad_v=flat(v_leaf.grad))


def trl112_part():
    import trl
    assert trl.__version__ == "1.12.0", trl.__version__
    g = torch.Generator().manual_seed(4321)
    # rows ending early, one at R - 1 (score at the last slot) and truncated ones (len R: score on the last token)
    return {"ppo": [
        ppo_case("k1 kl_coef 0.05", g, 5, 8, [3, 8, 1, 7, 5], "k1", 0.05, 1.0, 0.95, 0.2, 0.2, 0.1),
        ppo_case("k3 kl_coef 0.1 gamma 0.9 lambda 0.95", g, 4, 6, [6, 2, 4, 6], "k3", 0.1, 0.9, 0.95, 0.2, 0.2, 0.1),
    ]}


# ----------------------------------------------------------------------------

def trl112_python():
    r = subprocess.run([os.path.join(HERE, "venv_trl112.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/venv_trl112.sh failed: {r.stderr.strip()[-400:]}")
    return r.stdout.strip().splitlines()[-1]


def max_diff(a, b, path=""):
    """The largest |a - b| / (1 + |b|) over two JSON trees of the same shape."""
    if isinstance(b, dict):
        return max([max_diff(a[k], b[k], path) for k in b] or [0.0])
    if isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max([max_diff(x, y, path) for x, y in zip(a, b)] or [0.0])
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return abs(a - b) / (1 + abs(b))
    return 0.0 if a == b else math.inf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_rl_ref")
    ap.add_argument("--fixture", help="also write the reference file here (the committed fixture)")
    ap.add_argument("--ppo-json", help=argparse.SUPPRESS)  # internal: run in the TRL 1.12 venv
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(1)
    if a.ppo_json:
        with open(a.ppo_json, "w") as f:
            json.dump(trl112_part(), f)
        return 0
    import trl
    print(f"torch {torch.__version__}, trl {trl.__version__} (+ trl 1.12.0 for PPO)")
    os.makedirs(a.work, exist_ok=True)
    path = os.path.join(a.work, "rl_ref.json")
    try:
        ref = {"trl": trl.__version__, "trl_ppo": "1.12.0"}
        ref.update(trl116_part())
        ppo = os.path.join(a.work, "ppo.json")
        subprocess.run([trl112_python(), os.path.abspath(__file__), "--ppo-json", ppo], check=True)
        with open(ppo) as f:
            ref.update(json.load(f))
    except Exception as err:
        check("reference", False, f"reference side raised {type(err).__name__}: {str(err)[:400]}")
        return summary("test_rl_ref")
    text = json.dumps(ref, separators=(",", ":")) + "\n"
    with open(path, "w") as f:
        f.write(text)
    if a.fixture:
        os.makedirs(os.path.dirname(a.fixture) or ".", exist_ok=True)
        with open(a.fixture, "w") as f:
            f.write(text)
    committed = os.path.join(HERE, "..", "tests", "fixtures", "rl", "rl_ref.json")
    if not a.fixture and os.path.exists(committed):
        with open(committed) as f:
            d = max_diff(json.load(f), ref)
        check("committed fixture is current", d <= 1e-12, f"max difference {d:g} (regenerate with --fixture)")
    tests = os.path.join(os.path.dirname(a.llamac) or ".", "tests")
    if not os.access(tests, os.X_OK):
        check("rlalgo_trl", False, f"{tests} not found (make build/tests)")
        return summary("test_rl_ref")
    r = subprocess.run([tests, "rlalgo_trl"], capture_output=True, text=True, env=dict(os.environ, LLAMAC_RL_REF=path))
    for line in r.stdout.splitlines():
        if "max" in line:
            print("   ", line.strip())
    check("rlalgo_trl", r.returncode == 0 and "PASS rlalgo_trl" in r.stdout, (r.stdout + r.stderr)[-800:])
    return summary("test_rl_ref")


if __name__ == "__main__":
    sys.exit(main())
