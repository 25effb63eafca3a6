/*
 * rlalgo.h: the arithmetic of online RL (DESIGN.md, "Rewards and online
 * RL"): each method's advantages and its per-token (or per-sequence) loss
 * with the derivative by the log-probability, in double precision on the
 * host, with no model. `llamac rl` (train/cmd/cmd_rl.c) gets the
 * log-probabilities from the model and hands the derivatives back to the
 * LM head's backward as row weights; everything a method is beyond the
 * shared rollout loop is here, so it is tested alone against TRL's
 * formulas (scripts/test_rl_ref.py; ../shared/anchors/rlhf.md, section 8).
 *
 * Notation: a completion's tokens t with mask 1; logp the policy's
 * log-probability of the sampled token at the sampling temperature (logits
 * divided by it), old the same under the policy that sampled it (the
 * engine's), ref the reference's (adapters off, or a frozen copy), also at
 * the temperature.
 *
 * GRPO (TRL 1.16.0, GRPOTrainer): rewards in groups of G consecutive
 * completions of one prompt; A_i = r_i - mean(group) divided by
 * (std + 1e-4) with scale group (the group's std), batch (the whole batch's
 * std) or not at all (none); std is Bessel-corrected (n - 1), as TRL's
 * nanstd. A group of one has advantage 0. Per token, with
 * ratio = exp(logp - old):
 *   l = -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)
 *       + beta kl,  kl = exp(ref - logp) - (ref - logp) - 1  (k3)
 * and with kl_ratio (TRL's use_bias_correction_kl, its default) kl times
 * ratio. The step's loss is sum over tokens of w_i l, w_i from
 * rl_row_weight by the loss type.
 *
 * RLOO (TRL 1.16.0, RLOOTrainer): r_i = R_i - beta kl_i with kl_i the
 * summed k1 (old - ref) over the completion (a reward, not differentiated);
 * A_i = r_i - mean of the other G - 1 rewards of the group (optionally
 * normalised over the batch, Bessel, + 1e-4); a sequence-level ratio
 * rho = exp(sum logp - sum old) and l_i = -min(rho A, clip(rho) A), the
 * step's loss the mean over its sequences.
 *
 * PPO (TRL 1.12.0, trl/experimental/ppo, quirks included; rl_ppo_*).
 */
#ifndef LLAMAC_TRAIN_RLALGO_H
#define LLAMAC_TRAIN_RLALGO_H

#include <stddef.h>
#include <stdint.h>

#include "../../model/base.h"

typedef enum { RL_PPO, RL_GRPO, RL_RLOO, RL_ONLINE_DPO, RL_ALGO_COUNT } RlAlgo;
/* "ppo" "grpo" "rloo" "online-dpo"; -1 with "--algo: ..." (naming the
 * four) otherwise. */
int rl_algo_parse(const char *s, RlAlgo *a, Err *e);
const char *rl_algo_name(RlAlgo a);

typedef enum { RL_SCALE_GROUP, RL_SCALE_BATCH, RL_SCALE_NONE, RL_SCALE_COUNT } RlScale;
/* "group" "batch" "none"; -1 with "--scale-rewards: ..." otherwise. */
int rl_scale_parse(const char *s, RlScale *out, Err *e);
const char *rl_scale_name(RlScale s);

typedef enum { RL_LOSS_GRPO, RL_LOSS_BNPO, RL_LOSS_DR_GRPO, RL_LOSS_DAPO, RL_LOSS_COUNT } RlLossType;
/* "grpo" "bnpo" "dr_grpo" "dapo"; -1 with "--loss-type: ..." otherwise. */
int rl_loss_type_parse(const char *s, RlLossType *out, Err *e);
const char *rl_loss_type_name(RlLossType l);

typedef enum { RL_KL_K1, RL_KL_K3 } RlKl;
/* "k1" "k3"; -1 with "--kl-estimator: ..." otherwise. */
int rl_kl_parse(const char *s, RlKl *out, Err *e);

/* GRPO's advantages of n rewards in n / G groups of G (n a multiple of G):
 * adv[i] (=) as above. group_std (n / G, may be NULL) gets each group's std
 * (0 for G = 1), for frac_reward_zero_std. */
void rl_grpo_advantages(const double *r, size_t n, int G, RlScale s, double *adv, double *group_std);

/* RLOO's advantages: adv[i] = r[i] - (sum of its group's other rewards) /
 * (G - 1) (0 for G = 1); normalize: then (adv - mean) / (std + 1e-4) over
 * all n, std Bessel-corrected. */
void rl_rloo_advantages(const double *r, size_t n, int G, int normalize, double *adv);

/* The clip range and KL weight of the clipped losses. */
typedef struct RlLossOpts {
    double eps_low, eps_high; /* the ratio is clipped to [1 - eps_low, 1 + eps_high] */
    double beta;              /* GRPO: the k3 KL's weight in the loss (0: none, ref unused) */
    int kl_ratio;             /* GRPO: the KL term times the ratio (TRL's use_bias_correction_kl) */
} RlLossOpts;

/* Counts for the metrics, summed by the loss functions (+=). */
typedef struct RlStats {
    double tokens;            /* tokens (or sequences for RLOO) seen */
    double clip_low, clip_high; /* ratio < 1 - eps_low with A < 0; ratio > 1 + eps_high with A > 0 */
    double kl;                /* sum of the KL term as it enters the loss (GRPO with beta != 0: k3, times the
                               * ratio with kl_ratio; TRL's logged kl) */
    double ratio;             /* sum of ratios */
} RlStats;

/* GRPO's (and PPO's policy) loss of one token and *dlogp = d l / d logp.
 * ref is read only when o->beta != 0. */
double rl_clip_token(const RlLossOpts *o, double logp, double old, double ref, double adv, double *dlogp,
                     RlStats *st);

/* RLOO's loss of one sequence from its summed log-probabilities and
 * *dseq = d l / d (sum logp), the same for each of its tokens. */
double rl_clip_seq(const RlLossOpts *o, double seq_logp, double seq_old, double adv, double *dseq, RlStats *st);

/* The weight of a row's token losses in the step's loss (sum_i w_i sum_t
 * l_t) under GRPO's loss types, for an optimizer step over `rows` rows
 * holding `tokens` completion tokens, a row of `row_tokens`; max_len the
 * completion length limit; gen_tokens the tokens of the whole generation
 * batch and steps_per_gen the optimizer steps it feeds (dapo):
 *   grpo     1 / (rows * max(1, row_tokens))
 *   bnpo     1 / max(1, tokens)
 *   dr_grpo  1 / (rows * max_len)
 *   dapo     steps_per_gen / max(1, gen_tokens)
 * (TRL with one micro-batch per optimizer step.) */
double rl_row_weight(RlLossType l, long rows, long tokens, long row_tokens, long max_len, long gen_tokens,
                     long steps_per_gen);

// ----------------------------------------------------------------------------
// PPO (TRL 1.12.0). Rows of R slots (response_length), row i holding len[i]
// real tokens (1 <= len[i] <= R); arrays are (n, R) row-major.

/* masked_whiten: x over mask's entries, (x - mu) / sqrt(var + 1e-8) with
 * var Bessel-corrected; shift_mean 0 adds mu back. Entries outside the
 * mask are left as they are. One entry has var 0 here (TRL: NaN); an empty
 * mask is a bug (asserted; TRL raises). */
void rl_masked_whiten(double *x, const uint8_t *mask, size_t n, int shift_mean);

/* The per-token rewards: rewards (=) = -kl_coef * kl on t < len[i] (0
 * beyond), kl the k1 (logp - ref) or k3 estimate, then score[i] added at
 * t = len[i] if len[i] < R else R - 1 (TRL's one position after the last
 * token); kl_out (n, R, may be NULL) gets kl (0 beyond len). */
void rl_ppo_rewards(const double *logp, const double *ref, const double *score, const int *len, size_t n, int R,
                    RlKl k, double kl_coef, double *rewards, double *kl_out);

/* GAE: from rewards and values (values on t <= len[i], 0 beyond; TRL's
 * padding_mask_p1), adv and ret (=) over t = R-1 .. 0:
 *   delta = rewards[t] + gamma * values[t+1] - values[t]   (values[R] = 0)
 *   adv[t] = delta + gamma * lambda * adv[t+1];  ret = adv + values
 * then adv whitened over t < len[i] (shift_mean 1) and 0 beyond. */
void rl_gae(const double *rewards, const double *values, const int *len, size_t n, int R, double gamma, double lambda,
            double *adv, double *ret);

/* The clipped value loss of one slot (TRL: 0.5 * max((v - ret)^2,
 * (clip(v, old - c, old + c) - ret)^2), weighed by the caller with the
 * masked mean over t <= len[i]); *dv = d / d v; *clipped = the clipped term
 * was larger (val/clipfrac). */
double rl_value_slot(double v, double v_old, double ret, double cliprange_value, double *dv, int *clipped);

#endif
