/*
 * rlalgo.c: the arithmetic of GRPO, RLOO and PPO (rlalgo.h), in double on
 * the host. Each formula follows the TRL code named in its comment (GRPO and
 * RLOO: trl 1.16.0 trainer/grpo_trainer.py, trainer/rloo_trainer.py; PPO:
 * trl 1.12.0 experimental/ppo/ppo_trainer.py) and is checked against it by
 * tests/test_rlalgo.c on tests/fixtures/rl/rl_ref.json
 * (scripts/test_rl_ref.py).
 *
 * Derivatives follow torch's autograd where a min/max or clamp has a kink:
 * clamp passes the gradient on its closed interval, and where the clipped
 * term of a min/max is the one chosen the ratio (or value) is outside that
 * interval, so the chosen term's derivative is 0.
 */
#include "rlalgo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// names

static const char *const algo_names[RL_ALGO_COUNT] = {"ppo", "grpo", "rloo", "online-dpo"};
static const char *const scale_names[RL_SCALE_COUNT] = {"group", "batch", "none"};
static const char *const loss_names[RL_LOSS_COUNT] = {"grpo", "bnpo", "dr_grpo", "dapo"};
static const char *const kl_names[] = {"k1", "k3"};

/* The index of s in names[0..n), or -1 with "<flag>: 's' is not one of a, b". */
static int parse_name(const char *s, const char *const *names, int n, const char *flag, Err *e) {
    for (int i = 0; i < n; i++)
        if (s && strcmp(s, names[i]) == 0) return i;
    char list[128] = "";
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", names[i]);
    err_set(e, "%s: '%s' is not one of %s", flag, s ? s : "", list);
    return -1;
}

int rl_algo_parse(const char *s, RlAlgo *a, Err *e) {
    int i = parse_name(s, algo_names, RL_ALGO_COUNT, "--algo", e);
    if (i < 0) return -1;
    *a = (RlAlgo)i;
    return 0;
}

const char *rl_algo_name(RlAlgo a) { return (unsigned)a < RL_ALGO_COUNT ? algo_names[a] : "?"; }

int rl_scale_parse(const char *s, RlScale *out, Err *e) {
    int i = parse_name(s, scale_names, RL_SCALE_COUNT, "--scale-rewards", e);
    if (i < 0) return -1;
    *out = (RlScale)i;
    return 0;
}

const char *rl_scale_name(RlScale s) { return (unsigned)s < RL_SCALE_COUNT ? scale_names[s] : "?"; }

int rl_loss_type_parse(const char *s, RlLossType *out, Err *e) {
    int i = parse_name(s, loss_names, RL_LOSS_COUNT, "--loss-type", e);
    if (i < 0) return -1;
    *out = (RlLossType)i;
    return 0;
}

const char *rl_loss_type_name(RlLossType l) { return (unsigned)l < RL_LOSS_COUNT ? loss_names[l] : "?"; }

int rl_kl_parse(const char *s, RlKl *out, Err *e) {
    int i = parse_name(s, kl_names, 2, "--kl-estimator", e);
    if (i < 0) return -1;
    *out = (RlKl)i;
    return 0;
}

// ----------------------------------------------------------------------------
// advantages

/* TRL's std epsilon (grpo_trainer.py, rloo_trainer.py: std + 1e-4). */
#define RL_STD_EPS 1e-4

static double mean_of(const double *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / (double)n;
}

/* Bessel-corrected std (TRL's nanstd); 0 for fewer than two values (TRL's
 * zeros_like in the G = 1 and single-reward branches). */
static double std_of(const double *x, size_t n) {
    if (n < 2) return 0;
    double mu = mean_of(x, n), s = 0;
    for (size_t i = 0; i < n; i++) s += (x[i] - mu) * (x[i] - mu);
    return sqrt(s / (double)n * ((double)n / (double)(n - 1)));
}

/* trl 1.16 GRPOTrainer._generate_and_score_completions, sum_then_normalize:
 * the mean is always the group's; the std the group's or the batch's. */
void rl_grpo_advantages(const double *r, size_t n, int G, RlScale s, double *adv, double *group_std) {
    LC_ASSERT(G >= 1 && n % (size_t)G == 0 && (unsigned)s < RL_SCALE_COUNT);
    double batch_std = std_of(r, n);
    for (size_t g = 0; g < n / (size_t)G; g++) {
        const double *rg = r + g * (size_t)G;
        double mu = mean_of(rg, (size_t)G), sd = std_of(rg, (size_t)G);
        if (group_std) group_std[g] = sd;
        double div = s == RL_SCALE_GROUP ? sd + RL_STD_EPS : s == RL_SCALE_BATCH ? batch_std + RL_STD_EPS : 1;
        for (int i = 0; i < G; i++) adv[g * (size_t)G + (size_t)i] = (rg[i] - mu) / div;
    }
}

/* trl 1.16 RLOOTrainer._generate_and_score_completions: the leave-one-out
 * baseline, then optionally the batch normalisation. */
void rl_rloo_advantages(const double *r, size_t n, int G, int normalize, double *adv) {
    LC_ASSERT(G >= 1 && n % (size_t)G == 0);
    for (size_t g = 0; g < n / (size_t)G; g++) {
        const double *rg = r + g * (size_t)G;
        double sum = 0;
        for (int i = 0; i < G; i++) sum += rg[i];
        for (int i = 0; i < G; i++)
            adv[g * (size_t)G + (size_t)i] = G > 1 ? rg[i] - (sum - rg[i]) / (double)(G - 1) : 0;
    }
    if (!normalize) return;
    /* one value: TRL's nanstd is NaN and nan_to_num makes the advantage 0;
     * std_of's 0 gives (0 - 0) / 1e-4 = 0 as well */
    double mu = mean_of(adv, n), sd = std_of(adv, n);
    for (size_t i = 0; i < n; i++) adv[i] = (adv[i] - mu) / (sd + RL_STD_EPS);
}

// ----------------------------------------------------------------------------
// clipped losses

static double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

/* -min(ratio A, clip(ratio) A) and its derivative by log ratio (d ratio =
 * ratio d logp); the clip counts. */
static double clip_core(const RlLossOpts *o, double ratio, double adv, double *d, RlStats *st) {
    double lo = 1 - o->eps_low, hi = 1 + o->eps_high;
    double l1 = ratio * adv, l2 = clampd(ratio, lo, hi) * adv;
    /* l2 < l1 only when the ratio is outside [lo, hi]: its derivative is 0 */
    *d = l1 <= l2 ? -ratio * adv : 0;
    if (st) {
        st->clip_low += ratio < lo && adv < 0;
        st->clip_high += ratio > hi && adv > 0;
        st->ratio += ratio;
    }
    return l1 <= l2 ? -l1 : -l2;
}

/* trl 1.16 GRPOTrainer._compute_loss, loss types grpo/bnpo/dr_grpo/dapo with
 * importance_sampling_level "token": the KL term is k3 of the current
 * policy's logp, added after the clip (and times the ratio with
 * use_bias_correction_kl). st->kl sums that term as it enters the loss (TRL's
 * logged "kl", times the ratio when kl_ratio). */
double rl_clip_token(const RlLossOpts *o, double logp, double old, double ref, double adv, double *dlogp,
                     RlStats *st) {
    double ratio = exp(logp - old), d;
    double l = clip_core(o, ratio, adv, &d, st);
    if (o->beta != 0) {
        double x = ref - logp, ex = exp(x);
        double kl = ex - x - 1, dkl = 1 - ex; /* d kl / d logp */
        if (o->kl_ratio) {
            dkl = dkl * ratio + kl * ratio;
            kl *= ratio;
        }
        l += o->beta * kl;
        d += o->beta * dkl;
        if (st) st->kl += kl;
    }
    if (st) st->tokens += 1;
    *dlogp = d;
    return l;
}

/* trl 1.16 RLOOTrainer._compute_loss: the same clip on the sequence ratio. */
double rl_clip_seq(const RlLossOpts *o, double seq_logp, double seq_old, double adv, double *dseq, RlStats *st) {
    double l = clip_core(o, exp(seq_logp - seq_old), adv, dseq, st);
    if (st) st->tokens += 1;
    return l;
}

static double maxl(long a, long b) { return (double)(a > b ? a : b); }

/* trl 1.16 GRPOTrainer._compute_loss's aggregation with
 * current_gradient_accumulation_steps 1 and one process. */
double rl_row_weight(RlLossType l, long rows, long tokens, long row_tokens, long max_len, long gen_tokens,
                     long steps_per_gen) {
    LC_ASSERT(rows >= 1);
    switch (l) {
    case RL_LOSS_GRPO: return 1.0 / ((double)rows * maxl(1, row_tokens));
    case RL_LOSS_BNPO: return 1.0 / maxl(1, tokens);
    case RL_LOSS_DR_GRPO: LC_ASSERT(max_len >= 1); return 1.0 / ((double)rows * (double)max_len);
    case RL_LOSS_DAPO: LC_ASSERT(steps_per_gen >= 1); return (double)steps_per_gen / maxl(1, gen_tokens);
    default: LC_FATAL("rl_row_weight: loss type %d", (int)l);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// PPO (trl 1.12.0 experimental/ppo/ppo_trainer.py)

/* TRL's masked_whiten epsilon: rsqrt(var + 1e-8). */
#define RL_WHITEN_EPS 1e-8

/* masked_mean / masked_var(unbiased) / masked_whiten. TRL raises on an empty
 * mask (asserted here: the caller always has a token) and gives NaN
 * everywhere for a single entry (0 * 1/0); here a single entry has variance
 * 0, so it whitens to 0 (shift_mean 1) or stays (shift_mean 0). */
void rl_masked_whiten(double *x, const uint8_t *mask, size_t n, int shift_mean) {
    double cnt = 0, s = 0;
    for (size_t i = 0; i < n; i++)
        if (mask[i]) cnt += 1, s += x[i];
    LC_ASSERT(cnt > 0);
    double mu = s / cnt, v = 0;
    for (size_t i = 0; i < n; i++)
        if (mask[i]) v += (x[i] - mu) * (x[i] - mu);
    v = cnt > 1 ? v / cnt * (cnt / (cnt - 1)) : 0;
    double inv = 1 / sqrt(v + RL_WHITEN_EPS);
    for (size_t i = 0; i < n; i++)
        if (mask[i]) x[i] = (x[i] - mu) * inv + (shift_mean ? 0 : mu);
}

/* PPOTrainer.train, "4. compute rewards": TRL fills logp and ref beyond the
 * last token with INVALID_LOGPROB on both, so the KL there is 0. */
void rl_ppo_rewards(const double *logp, const double *ref, const double *score, const int *len, size_t n, int R,
                    RlKl k, double kl_coef, double *rewards, double *kl_out) {
    for (size_t i = 0; i < n; i++) {
        LC_ASSERT(len[i] >= 1 && len[i] <= R);
        for (int t = 0; t < R; t++) {
            size_t j = i * (size_t)R + (size_t)t;
            double kl = 0;
            if (t < len[i]) {
                double logr = ref[j] - logp[j];
                kl = k == RL_KL_K1 ? -logr : (exp(logr) - 1) - logr;
            }
            if (kl_out) kl_out[j] = kl;
            rewards[j] = -kl_coef * kl;
        }
        int end = len[i] < R ? len[i] : R - 1; /* sequence_lengths_p1, or the last slot */
        rewards[i * (size_t)R + (size_t)end] += score[i];
    }
}

/* PPOTrainer.train, "6. compute advantages and returns": the GAE runs over
 * every slot (TRL does not mask inside the loop: the zeros beyond len do it),
 * returns before the whitening, the whitening over all rows' tokens. */
void rl_gae(const double *rewards, const double *values, const int *len, size_t n, int R, double gamma, double lambda,
            double *adv, double *ret) {
    uint8_t *mask = xmalloc(n * (size_t)R);
    for (size_t i = 0; i < n; i++) {
        LC_ASSERT(len[i] >= 1 && len[i] <= R);
        double last = 0;
        for (int t = R - 1; t >= 0; t--) {
            size_t j = i * (size_t)R + (size_t)t;
            double next = t < R - 1 ? values[j + 1] : 0;
            double delta = rewards[j] + gamma * next - values[j];
            last = delta + gamma * lambda * last;
            adv[j] = last;
            ret[j] = last + values[j];
            mask[j] = t < len[i];
        }
    }
    rl_masked_whiten(adv, mask, n * (size_t)R, 1);
    for (size_t j = 0; j < n * (size_t)R; j++)
        if (!mask[j]) adv[j] = 0;
    free(mask);
}

/* PPOTrainer.train's value loss term (before the masked mean and 0.5 vf_coef
 * outside the max, here inside): where the clipped term is larger the value
 * is outside its clip interval and the derivative is 0. */
double rl_value_slot(double v, double v_old, double ret, double cliprange_value, double *dv, int *clipped) {
    double vc = clampd(v, v_old - cliprange_value, v_old + cliprange_value);
    double l1 = (v - ret) * (v - ret), l2 = (vc - ret) * (vc - ret);
    int c = l2 > l1;
    if (clipped) *clipped = c;
    *dv = c ? 0 : v - ret;
    return 0.5 * (c ? l2 : l1);
}
