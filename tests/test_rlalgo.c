/*
 * test_rlalgo.c: the RL arithmetic (train/loop/rlalgo.h). Hand-computed
 * fixtures (the expected numbers worked out in exact arithmetic or with a few
 * lines of Python, written as literals), central finite differences of every
 * loss's derivative away from the clip kinks, the parse errors, and the
 * values TRL's own code gives on the same inputs (rlalgo_trl:
 * tests/fixtures/rl/rl_ref.json, or LLAMAC_RL_REF, from
 * scripts/test_rl_ref.py).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../train/loop/rlalgo.h"
#include "test.h"
#include "tests.h"

#define N_(a) (sizeof(a) / sizeof((a)[0]))

/* Hand fixtures are double arithmetic on a few values: a few ulps apart. */
#define HAND_TOL 1e-12

static void expect_vec(const char *what, const double *got, const double *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        EXPECT(fabs(got[i] - want[i]) <= HAND_TOL * fmax(1, fabs(want[i])), "%s[%zu] = %.17g, expected %.17g", what,
               i, got[i], want[i]);
}

// ----------------------------------------------------------------------------
// parsing

void rlalgo_parse(void) {
    Err e;
    RlAlgo a;
    RlScale s;
    RlLossType l;
    RlKl k;
    for (int i = 0; i < RL_ALGO_COUNT; i++)
        EXPECT(rl_algo_parse(rl_algo_name((RlAlgo)i), &a, &e) == 0 && a == (RlAlgo)i, "algo %d", i);
    for (int i = 0; i < RL_SCALE_COUNT; i++)
        EXPECT(rl_scale_parse(rl_scale_name((RlScale)i), &s, &e) == 0 && s == (RlScale)i, "scale %d", i);
    for (int i = 0; i < RL_LOSS_COUNT; i++)
        EXPECT(rl_loss_type_parse(rl_loss_type_name((RlLossType)i), &l, &e) == 0 && l == (RlLossType)i, "loss %d", i);
    EXPECT(rl_kl_parse("k1", &k, &e) == 0 && k == RL_KL_K1, "k1");
    EXPECT(rl_kl_parse("k3", &k, &e) == 0 && k == RL_KL_K3, "k3");
    EXPECT(strcmp(rl_algo_name(RL_ONLINE_DPO), "online-dpo") == 0, "online-dpo name");
    static const struct {
        int which;
        const char *in, *msg;
    } bad[] = {
        {0, "PPO", "--algo: 'PPO' is not one of ppo, grpo, rloo, online-dpo"},
        {0, "", "--algo: '' is not one of ppo, grpo, rloo, online-dpo"},
        {1, "groups", "--scale-rewards: 'groups' is not one of group, batch, none"},
        {2, "x", "--loss-type: 'x' is not one of grpo, bnpo, dr_grpo, dapo"},
        {2, "dr-grpo", "--loss-type: 'dr-grpo' is not one of grpo, bnpo, dr_grpo, dapo"},
        {3, "k2", "--kl-estimator: 'k2' is not one of k1, k3"},
    };
    for (size_t i = 0; i < N_(bad); i++) {
        memset(&e, 0, sizeof e);
        int rc = bad[i].which == 0   ? rl_algo_parse(bad[i].in, &a, &e)
                 : bad[i].which == 1 ? rl_scale_parse(bad[i].in, &s, &e)
                 : bad[i].which == 2 ? rl_loss_type_parse(bad[i].in, &l, &e)
                                     : rl_kl_parse(bad[i].in, &k, &e);
        EXPECT(rc == -1 && strcmp(e.msg, bad[i].msg) == 0, "'%s': rc %d, '%s'", bad[i].in, rc, e.msg);
    }
}

// ----------------------------------------------------------------------------
// hand-computed fixtures

void rlalgo_grpo_adv(void) {
    /* r = 1 2 | 3 6 (G 2): group means 1.5, 4.5, group stds sqrt(1/2),
     * sqrt(9/2); the batch's mean 3, std sqrt(14/3) (Bessel) */
    const double r[4] = {1, 2, 3, 6};
    double adv[4], sd[4];
    rl_grpo_advantages(r, 4, 2, RL_SCALE_GROUP, adv, sd);
    const double grp[4] = {-0.7070067953266834, 0.7070067953266834, -0.7070734494244885, 0.7070734494244885};
    expect_vec("group adv", adv, grp, 4);
    const double sds[2] = {0.70710678118654757, 2.1213203435596424};
    expect_vec("group std", sd, sds, 2);
    rl_grpo_advantages(r, 4, 2, RL_SCALE_BATCH, adv, sd);
    const double bat[4] = {-0.23144431115337563, 0.23144431115337563, -0.6943329334601269, 0.6943329334601269};
    expect_vec("batch adv", adv, bat, 4);
    expect_vec("batch's group std", sd, sds, 2);
    rl_grpo_advantages(r, 4, 2, RL_SCALE_NONE, adv, NULL);
    const double non[4] = {-0.5, 0.5, -1.5, 1.5};
    expect_vec("none adv", adv, non, 4);
    /* G = 1: each reward is its group's mean, so 0 under every scale */
    for (int s = 0; s < RL_SCALE_COUNT; s++) {
        for (int i = 0; i < 4; i++) adv[i] = sd[i] = 7;
        rl_grpo_advantages(r, 4, 1, (RlScale)s, adv, sd);
        for (int i = 0; i < 4; i++)
            EXPECT(adv[i] == 0 && sd[i] == 0, "G 1 scale %s: adv[%d] %g std %g", rl_scale_name((RlScale)s), i, adv[i],
                   sd[i]);
    }
    /* equal rewards: std 0, advantage 0 (no division by zero: + 1e-4) */
    const double eq[3] = {0.5, 0.5, 0.5};
    rl_grpo_advantages(eq, 3, 3, RL_SCALE_GROUP, adv, sd);
    EXPECT(adv[0] == 0 && adv[1] == 0 && adv[2] == 0 && sd[0] == 0, "equal rewards");
}

void rlalgo_rloo_adv(void) {
    /* baselines (12 - r_i) / 3 = 11/3 10/3 3 2: adv = -8/3 -4/3 0 4 (= 4/3 (r - 3)) */
    const double r[4] = {1, 2, 3, 6};
    double adv[4];
    rl_rloo_advantages(r, 4, 4, 0, adv);
    const double loo[4] = {-8.0 / 3, -4.0 / 3, 0, 4};
    expect_vec("loo", adv, loo, 4);
    /* normalised: mean 0, std 4/3 sqrt(14/3), + 1e-4 */
    rl_rloo_advantages(r, 4, 4, 1, adv);
    const double nrm[4] = {-0.9257879580313136, -0.4628939790156568, 0, 1.3886819370469705};
    expect_vec("normalised", adv, nrm, 4);
    /* G 2: pairs 1 2 and 3 6 give -1 1 -3 3 */
    rl_rloo_advantages(r, 4, 2, 0, adv);
    const double pairs[4] = {-1, 1, -3, 3};
    expect_vec("pairs", adv, pairs, 4);
    for (int norm = 0; norm < 2; norm++) {
        rl_rloo_advantages(r, 4, 1, norm, adv);
        for (int i = 0; i < 4; i++) EXPECT(adv[i] == 0, "G 1 normalize %d: adv[%d] %g", norm, i, adv[i]);
        rl_rloo_advantages(r, 1, 1, norm, adv);
        EXPECT(adv[0] == 0, "one reward, normalize %d: %g", norm, adv[0]);
    }
}

void rlalgo_whiten(void) {
    /* 1 2 4 under the mask (100 outside): mean 7/3, Bessel variance
     * (16/9 + 1/9 + 25/9) / 2 = 7/3 */
    double x[4] = {1, 2, 100, 4};
    const uint8_t m[4] = {1, 1, 0, 1};
    rl_masked_whiten(x, m, 4, 1);
    const double w[4] = {-0.8728715590735306, -0.21821788976838274, 100, 1.0910894488419132};
    expect_vec("whiten", x, w, 4);
    double y[4] = {1, 2, 100, 4};
    rl_masked_whiten(y, m, 4, 0);
    const double ws[4] = {w[0] + 7.0 / 3, w[1] + 7.0 / 3, 100, w[3] + 7.0 / 3};
    expect_vec("whiten shift_mean 0", y, ws, 4);
    /* one entry: variance 0 here (TRL: NaN), so it whitens to 0 */
    double z[2] = {3, 5};
    const uint8_t m1[2] = {0, 1};
    rl_masked_whiten(z, m1, 2, 1);
    EXPECT(z[0] == 3 && z[1] == 0, "one entry: %g %g", z[0], z[1]);
}

void rlalgo_gae(void) {
    /* gamma 0.9, lambda 0.95 (gamma lambda 0.855). Row 0, len 3 = R:
     * rewards 1 0 2, values 0.5 1 0.3:
     *   t2: 2 - 0.3 = 1.7; t1: 0.9 * 0.3 - 1 = -0.73, + 0.855 * 1.7 = 0.7235;
     *   t0: 1 + 0.9 - 0.5 = 1.4, + 0.855 * 0.7235 = 2.0185925.
     * Row 1, len 1: rewards 0.1 1.5 0 (the score one past the token), values
     * 0.2 0.4 0 (the value at t = len kept):
     *   t2: 0; t1: 1.5 - 0.4 = 1.1; t0: 0.1 + 0.36 - 0.2 = 0.26, + 0.9405 = 1.2005.
     * Whitened over 2.0185925 0.7235 1.7 1.2005 (Bessel). */
    const double rw[6] = {1, 0, 2, 0.1, 1.5, 0}, v[6] = {0.5, 1, 0.3, 0.2, 0.4, 0};
    const int len[2] = {3, 1};
    double adv[6], ret[6];
    rl_gae(rw, v, len, 2, 3, 0.9, 0.95, adv, ret);
    const double ret_want[6] = {2.5185925, 1.7235, 2.0, 1.4005, 1.5, 0};
    expect_vec("returns", ret, ret_want, 6);
    const double adv_want[6] = {1.0693397201466912, -1.2086546300997087, 0.5089535585166329, -0.3696386485636154, 0, 0};
    expect_vec("advantages", adv, adv_want, 6);
}

void rlalgo_ppo_rewards(void) {
    /* len 2 (score at t = 2) and len 3 = R (score at the last slot, t = 2);
     * kl_coef 0.1; k1 = logp - ref: 0.2 -0.2 | -0.1 0 0.3 */
    const double logp[6] = {-1.0, -0.5, -9, -0.2, -0.4, -0.6}, ref[6] = {-1.2, -0.3, -7, -0.1, -0.4, -0.9};
    const double score[2] = {2.0, -1.0};
    const int len[2] = {2, 3};
    double rw[6], kl[6];
    rl_ppo_rewards(logp, ref, score, len, 2, 3, RL_KL_K1, 0.1, rw, kl);
    const double kl1[6] = {0.2, -0.2, 0, -0.1, 0, 0.3};
    const double rw1[6] = {-0.02, 0.02, 2.0, 0.01, 0, -1.03};
    expect_vec("k1 kl", kl, kl1, 6);
    expect_vec("k1 rewards", rw, rw1, 6);
    /* k3 = e^x - 1 - x, x = ref - logp: x = -0.2 0.2 | 0.1 0 -0.3 */
    rl_ppo_rewards(logp, ref, score, len, 2, 3, RL_KL_K3, 0.1, rw, NULL);
    const double k3[6] = {0.018730753077981832, 0.021402758160169844, 0, 0.005170918075647707, 0,
                          0.040818220681717865};
    const double rw3[6] = {-0.1 * k3[0], -0.1 * k3[1], 2.0, -0.1 * k3[3], 0, -0.1 * k3[5] - 1.0};
    expect_vec("k3 rewards", rw, rw3, 6);
}

void rlalgo_row_weight(void) {
    /* 4 rows, 30 tokens in the step, a row of 6, max_len 16, 120 tokens in a
     * generation of 4 steps */
    EXPECT_NEAR(rl_row_weight(RL_LOSS_GRPO, 4, 30, 6, 16, 120, 4), 1.0 / 24, 1e-15);
    EXPECT_NEAR(rl_row_weight(RL_LOSS_GRPO, 4, 30, 0, 16, 120, 4), 1.0 / 4, 1e-15);
    EXPECT_NEAR(rl_row_weight(RL_LOSS_BNPO, 4, 30, 6, 16, 120, 4), 1.0 / 30, 1e-15);
    EXPECT_NEAR(rl_row_weight(RL_LOSS_BNPO, 4, 0, 0, 16, 120, 4), 1.0, 1e-15);
    EXPECT_NEAR(rl_row_weight(RL_LOSS_DR_GRPO, 4, 30, 6, 16, 120, 4), 1.0 / 64, 1e-15);
    EXPECT_NEAR(rl_row_weight(RL_LOSS_DAPO, 4, 30, 6, 16, 120, 4), 4.0 / 120, 1e-15);
}

// ----------------------------------------------------------------------------
// finite differences

/* Central differences in double with h 1e-6: truncation ~h^2 |l'''| and
 * rounding ~1e-16 / h, about 1e-9 on these O(1) losses; 1e-7 leaves room. */
#define FD_H 1e-6
#define FD_TOL 1e-7
/* Points closer than this to a kink (ratio at a clip bound, value at its
 * clip bound) are skipped: the difference quotient straddles the kink. */
#define FD_KINK 1e-4

static double gauss(Rng *r) { return (double)rng_normal(r); }

void rlalgo_fd(void) {
    Rng r;
    rng_seed(&r, 7);
    const RlLossOpts opts[3] = {{0.2, 0.28, 0, 1}, {0.2, 0.28, 0.04, 1}, {0.2, 0.2, 0.5, 0}};
    int inside = 0, outside = 0, vin = 0, vout = 0;
    for (int it = 0; it < 600; it++) {
        const RlLossOpts *o = &opts[it % 3];
        double logp = -fabs(gauss(&r)) - 0.05, old = logp + 0.3 * gauss(&r), ref = logp + 0.5 * gauss(&r);
        double adv = gauss(&r), ratio = exp(logp - old), d, dp, dm;
        if (fabs(ratio - (1 - o->eps_low)) < FD_KINK || fabs(ratio - (1 + o->eps_high)) < FD_KINK) continue;
        int in = ratio >= 1 - o->eps_low && ratio <= 1 + o->eps_high;
        int clipped = (ratio < 1 - o->eps_low && adv < 0) || (ratio > 1 + o->eps_high && adv > 0);
        inside += in;
        outside += clipped;
        rl_clip_token(o, logp, old, ref, adv, &d, NULL);
        double fd = (rl_clip_token(o, logp + FD_H, old, ref, adv, &dp, NULL) -
                     rl_clip_token(o, logp - FD_H, old, ref, adv, &dm, NULL)) / (2 * FD_H);
        EXPECT(fabs(d - fd) <= FD_TOL * fmax(1, fabs(fd)),
               "token %d (ratio %.4f adv %.3f beta %g kl_ratio %d): d %.12g fd %.12g", it, ratio, adv, o->beta, o->kl_ratio, d, fd);
        if (clipped && o->beta == 0) EXPECT(d == 0, "token %d: clipped with d %g", it, d);
        /* the sequence loss: the same clip on summed log-probabilities */
        double s = 5 * logp, so = s + 0.4 * gauss(&r), rho = exp(s - so);
        if (fabs(rho - (1 - o->eps_low)) >= FD_KINK && fabs(rho - (1 + o->eps_high)) >= FD_KINK) {
            rl_clip_seq(o, s, so, adv, &d, NULL);
            fd = (rl_clip_seq(o, s + FD_H, so, adv, &dp, NULL) - rl_clip_seq(o, s - FD_H, so, adv, &dm, NULL)) /
                 (2 * FD_H);
            EXPECT(fabs(d - fd) <= FD_TOL * fmax(1, fabs(fd)), "seq %d: d %.12g fd %.12g", it, d, fd);
        }
        /* the value loss */
        double vo = gauss(&r), v = vo + 0.4 * gauss(&r), ret = gauss(&r), c = 0.2;
        if (fabs(v - (vo - c)) < FD_KINK || fabs(v - (vo + c)) < FD_KINK) continue;
        int cl;
        rl_value_slot(v, vo, ret, c, &d, &cl);
        fd = (rl_value_slot(v + FD_H, vo, ret, c, &dp, NULL) - rl_value_slot(v - FD_H, vo, ret, c, &dm, NULL)) /
             (2 * FD_H);
        EXPECT(fabs(d - fd) <= FD_TOL * fmax(1, fabs(fd)), "value %d: d %.12g fd %.12g", it, d, fd);
        vin += !cl;
        vout += cl;
    }
    EXPECT(inside > 50 && outside > 50 && vin > 50 && vout > 50, "coverage: %d inside, %d clipped, value %d/%d",
           inside, outside, vin, vout);
    /* the stats of one clipped token each way */
    RlLossOpts o = {0.2, 0.2, 0.04, 1};
    RlStats st = {0};
    double d;
    rl_clip_token(&o, log(0.5), 0, 0, -1, &d, &st);
    rl_clip_token(&o, log(2.0), 0, 0, 1, &d, &st);
    rl_clip_token(&o, 0, 0, 0, 1, &d, &st);
    EXPECT(st.tokens == 3 && st.clip_low == 1 && st.clip_high == 1 && fabs(st.ratio - 3.5) < 1e-15,
           "stats %g %g %g %g", st.tokens, st.clip_low, st.clip_high, st.ratio);
}

// ----------------------------------------------------------------------------
// against TRL (scripts/test_rl_ref.py)

/* Both sides are the same double formulas: a few ulps, amplified at most by
 * exp of O(1) arguments and sums of a few dozen terms; 1e-10 relative plus
 * 1e-12 absolute (for entries that cancel to ~0) is far above that and far
 * below any formula difference. TRL's clip metrics are float32 token means
 * (.float()): 1e-6. TRL's Bessel factor n / (n - 1) is a float32 even on
 * float64 data (trainer/utils.py nanstd and ppo_trainer.py masked_var divide
 * two integer tensors, which torch does in its default float32): GRPO's
 * stds and advantages and PPO's whitened advantages (and what uses them)
 * carry its rounding, up to 2^-24 on the variance, 2^-25 on the std: 1e-7. */
#define TRL_RTOL 1e-10
#define TRL_ATOL 1e-12
#define TRL_F32 1e-6
#define TRL_BESSEL 1e-7

typedef struct {
    const char *name;
    double rtol, atol, max_abs, max_rel;
    long n;
} Acc;

static void acc(Acc *a, double got, double want, const char *where) {
    double d = fabs(got - want);
    a->max_abs = fmax(a->max_abs, d);
    if (want != 0) a->max_rel = fmax(a->max_rel, d / fabs(want));
    a->n++;
    EXPECT(d <= a->atol + a->rtol * fabs(want), "%s: %s %.17g, TRL %.17g", where, a->name, got, want);
}

/* o[key] as n doubles (caller frees), or NULL after a failed EXPECT. */
static double *jarr(json_t *o, const char *key, size_t n) {
    json_t *a = json_object_get(o, key);
    EXPECT(json_is_array(a) && json_array_size(a) == n, "fixture: %s is not an array of %zu", key, n);
    if (!json_is_array(a) || json_array_size(a) != n) return NULL;
    double *x = xmalloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = json_number_value(json_array_get(a, i));
    return x;
}

static double jnum(json_t *o, const char *key) { return json_number_value(json_object_get(o, key)); }
static long jint(json_t *o, const char *key) { return (long)json_integer_value(json_object_get(o, key)); }
static const char *jstr(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void trl_grpo_adv(json_t *c, Acc *aa, Acc *as) {
    Err e;
    RlScale s;
    int G = (int)jint(c, "G");
    size_t n = json_array_size(json_object_get(c, "r"));
    double *r = jarr(c, "r", n), *adv = jarr(c, "adv", n), *sd = jarr(c, "group_std", n / (size_t)G);
    if (rl_scale_parse(jstr(c, "scale"), &s, &e) == 0 && r && adv && sd) {
        double *ga = xmalloc(n * sizeof(double)), *gs = xmalloc(n * sizeof(double));
        rl_grpo_advantages(r, n, G, s, ga, gs);
        for (size_t i = 0; i < n; i++) acc(aa, ga[i], adv[i], jstr(c, "name"));
        for (size_t i = 0; i < n / (size_t)G; i++) acc(as, gs[i], sd[i], jstr(c, "name"));
        free(ga); free(gs);
    }
    free(r); free(adv); free(sd);
}

static void trl_grpo_loss(json_t *c, Acc *al, Acc *ag, Acc *am) {
    Err e;
    RlLossType lt;
    const char *name = jstr(c, "name");
    long B = jint(c, "B"), T = jint(c, "T");
    size_t n = (size_t)(B * T);
    double *logp = jarr(c, "logp", n), *old = jarr(c, "old", n), *ref = jarr(c, "ref", n), *mask = jarr(c, "mask", n);
    double *adv = jarr(c, "adv", (size_t)B), *grad = jarr(c, "grad", n);
    if (rl_loss_type_parse(jstr(c, "loss_type"), &lt, &e) == 0 && logp && old && ref && mask && adv && grad) {
        RlLossOpts o = {jnum(c, "eps_low"), jnum(c, "eps_high"), jnum(c, "beta"), (int)jint(c, "kl_ratio")};
        RlStats st = {0};
        long tokens = 0;
        for (size_t i = 0; i < n; i++) tokens += mask[i] != 0;
        double loss = 0;
        for (long b = 0; b < B; b++) {
            long rt = 0;
            for (long t = 0; t < T; t++) rt += mask[b * T + t] != 0;
            double w = rl_row_weight(lt, B, tokens, rt, jint(c, "max_len"), jint(c, "gen_tokens"),
                                     jint(c, "steps_per_gen"));
            for (long t = 0; t < T; t++) {
                size_t j = (size_t)(b * T + t);
                double d = 0;
                if (mask[j] != 0) loss += w * rl_clip_token(&o, logp[j], old[j], ref[j], adv[b], &d, &st);
                acc(ag, w * d, grad[j], name);
            }
        }
        acc(al, loss, jnum(c, "loss"), name);
        acc(am, st.clip_low / st.tokens, jnum(c, "clip_low"), name);
        acc(am, st.clip_high / st.tokens, jnum(c, "clip_high"), name);
        acc(am, st.kl / st.tokens, jnum(c, "kl"), name);
    }
    free(logp); free(old); free(ref); free(mask); free(adv); free(grad);
}

static void trl_rloo(json_t *c, Acc *arw, Acc *aa, Acc *al, Acc *ag, Acc *am) {
    const char *name = jstr(c, "name");
    long B = jint(c, "B"), T = jint(c, "T");
    int G = (int)jint(c, "G");
    size_t n = (size_t)(B * T);
    double *score = jarr(c, "score", (size_t)B), *old = jarr(c, "old", n), *ref = jarr(c, "ref", n);
    double *logp = jarr(c, "logp", n), *mask = jarr(c, "mask", n), *rw = jarr(c, "reward", (size_t)B);
    double *adv = jarr(c, "adv", (size_t)B), *grad = jarr(c, "grad", n);
    if (score && old && ref && logp && mask && rw && adv && grad) {
        double beta = jnum(c, "beta"), eps = jnum(c, "eps");
        double *r = xmalloc((size_t)B * sizeof(double)), *a = xmalloc((size_t)B * sizeof(double));
        /* the caller's reward shaping (rlalgo.h): R - beta sum_t (old - ref) */
        for (long b = 0; b < B; b++) {
            double kl = 0;
            for (long t = 0; t < T; t++) kl += mask[b * T + t] * (old[b * T + t] - ref[b * T + t]);
            r[b] = score[b] - beta * kl;
            acc(arw, r[b], rw[b], name);
        }
        rl_rloo_advantages(r, (size_t)B, G, (int)jint(c, "normalize"), a);
        RlLossOpts o = {eps, eps, 0, 0};
        RlStats st = {0};
        double loss = 0;
        for (long b = 0; b < B; b++) {
            acc(aa, a[b], adv[b], name);
            double s = 0, so = 0, d;
            for (long t = 0; t < T; t++) s += mask[b * T + t] * logp[b * T + t], so += mask[b * T + t] * old[b * T + t];
            loss += rl_clip_seq(&o, s, so, a[b], &d, &st) / (double)B;
            for (long t = 0; t < T; t++) acc(ag, mask[b * T + t] != 0 ? d / (double)B : 0, grad[b * T + t], name);
        }
        acc(al, loss, jnum(c, "loss"), name);
        acc(am, st.clip_low / st.tokens, jnum(c, "clip_low"), name);
        acc(am, st.clip_high / st.tokens, jnum(c, "clip_high"), name);
        free(r); free(a);
    }
    free(score); free(old); free(ref); free(logp); free(mask); free(rw); free(adv); free(grad);
}

enum { P_KL, P_RW, P_VAL, P_ADV, P_RET, P_PG, P_VF, P_LOSS, P_GL, P_GV, P_CLIP, P_COUNT };

static void trl_ppo(json_t *c, Acc *ac) {
    Err e;
    RlKl k;
    const char *name = jstr(c, "name");
    long nr = jint(c, "n");
    int R = (int)jint(c, "R");
    size_t n = (size_t)nr * (size_t)R;
    json_t *jl = json_object_get(c, "len");
    int *len = xmalloc((size_t)nr * sizeof(int));
    for (long i = 0; i < nr; i++) len[i] = (int)json_integer_value(json_array_get(jl, (size_t)i));
    double *logp = jarr(c, "logp", n), *ref = jarr(c, "ref", n), *score = jarr(c, "score", (size_t)nr);
    double *vin = jarr(c, "values_in", n), *vals = jarr(c, "values", n), *kl = jarr(c, "kl", n);
    double *rw = jarr(c, "rewards", n), *adv = jarr(c, "adv", n), *ret = jarr(c, "ret", n);
    double *nl = jarr(c, "new_logp", n), *vp = jarr(c, "vpred", n), *gl = jarr(c, "grad_logp", n);
    double *gv = jarr(c, "grad_v", n);
    if (rl_kl_parse(jstr(c, "kl_estimator"), &k, &e) == 0 && logp && ref && score && vin && vals && kl && rw && adv &&
        ret && nl && vp && gl && gv) {
        double *b = xmalloc(8 * n * sizeof(double));
        double *mrw = b, *mkl = b + n, *mv = b + 2 * n, *ma = b + 3 * n, *mr = b + 4 * n, *dl = b + 5 * n,
               *dv = b + 6 * n;
        rl_ppo_rewards(logp, ref, score, len, (size_t)nr, R, k, jnum(c, "kl_coef"), mrw, mkl);
        for (long i = 0; i < nr; i++)
            for (int t = 0; t < R; t++) mv[i * R + t] = t <= len[i] ? vin[i * R + t] : 0; /* padding_mask_p1 */
        rl_gae(mrw, mv, len, (size_t)nr, R, jnum(c, "gamma"), jnum(c, "lam"), ma, mr);
        for (size_t j = 0; j < n; j++) {
            acc(&ac[P_KL], mkl[j], kl[j], name);
            acc(&ac[P_RW], mrw[j], rw[j], name);
            acc(&ac[P_VAL], mv[j], vals[j], name);
            acc(&ac[P_ADV], ma[j], adv[j], name);
            acc(&ac[P_RET], mr[j], ret[j], name);
        }
        /* the update: pg over t < len, the value loss over t <= len */
        double cr = jnum(c, "cliprange"), crv = jnum(c, "cliprange_value"), vf_coef = jnum(c, "vf_coef");
        RlLossOpts o = {cr, cr, 0, 0};
        RlStats st = {0};
        double pg = 0, vf = 0, np = 0, nv = 0, vclip = 0;
        for (long i = 0; i < nr; i++)
            for (int t = 0; t < R; t++) {
                size_t j = (size_t)(i * R + t);
                dl[j] = dv[j] = 0;
                if (t < len[i]) pg += rl_clip_token(&o, nl[j], logp[j], 0, ma[j], &dl[j], &st), np++;
                if (t <= len[i]) {
                    int cl;
                    vf += rl_value_slot(vp[j], mv[j], mr[j], crv, &dv[j], &cl);
                    vclip += cl;
                    nv++;
                }
            }
        pg /= np;
        vf /= nv;
        acc(&ac[P_PG], pg, jnum(c, "pg_loss"), name);
        acc(&ac[P_VF], vf, jnum(c, "vf_loss"), name);
        acc(&ac[P_LOSS], pg + vf_coef * vf, jnum(c, "loss"), name);
        for (size_t j = 0; j < n; j++) {
            acc(&ac[P_GL], dl[j] / np, gl[j], name);
            acc(&ac[P_GV], vf_coef * dv[j] / nv, gv[j], name);
        }
        acc(&ac[P_CLIP], (st.clip_low + st.clip_high) / np, jnum(c, "pg_clipfrac"), name);
        acc(&ac[P_CLIP], vclip / nv, jnum(c, "vf_clipfrac"), name);
        free(b);
    }
    free(len); free(logp); free(ref); free(score); free(vin); free(vals); free(kl); free(rw); free(adv); free(ret);
    free(nl); free(vp); free(gl); free(gv);
}

void rlalgo_trl(void) {
    const char *path = getenv("LLAMAC_RL_REF");
    if (!path) path = "tests/fixtures/rl/rl_ref.json";
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    EXPECT(root != NULL, "%s: %s (line %d)", path, je.text, je.line);
    if (!root) return;
#define A(nm) {nm, TRL_RTOL, TRL_ATOL, 0, 0, 0}
#define A32(nm) {nm, TRL_F32, TRL_F32, 0, 0, 0}
#define AB(nm) {nm, TRL_BESSEL, TRL_ATOL, 0, 0, 0}
    Acc g[] = {AB("grpo advantages (f32 Bessel)"), AB("grpo group std (f32 Bessel)"), A("grpo loss"),
               A("grpo d loss/d logp"),
               A32("grpo clip fractions, kl (f32)")};
    Acc rl[] = {A("rloo rewards"), A("rloo advantages"), A("rloo loss"), A("rloo d loss/d logp"),
                A32("rloo clip fractions (f32)")};
    Acc pp[P_COUNT] = {A("ppo kl"), A("ppo rewards"), A("ppo values"), AB("ppo advantages (f32 Bessel)"),
                       A("ppo returns"), AB("ppo pg loss (f32 Bessel)"), A("ppo vf loss"), AB("ppo loss (f32 Bessel)"),
                       AB("ppo d loss/d logp (f32 Bessel)"),
                       A("ppo d loss/d value"), A32("ppo clipfracs (f32)")};
#undef A
#undef A32
#undef AB
    json_t *c;
    size_t i, cases = 0;
    json_array_foreach(json_object_get(root, "grpo_adv"), i, c) trl_grpo_adv(c, &g[0], &g[1]), cases++;
    json_array_foreach(json_object_get(root, "grpo_loss"), i, c) trl_grpo_loss(c, &g[2], &g[3], &g[4]), cases++;
    json_array_foreach(json_object_get(root, "rloo"), i, c)
        trl_rloo(c, &rl[0], &rl[1], &rl[2], &rl[3], &rl[4]), cases++;
    json_array_foreach(json_object_get(root, "ppo"), i, c) trl_ppo(c, pp), cases++;
    EXPECT(cases >= 26, "%s: %zu cases", path, cases);
    printf("    TRL %s (PPO %s), %zu cases\n", jstr(root, "trl"), jstr(root, "trl_ppo"), cases);
    const Acc *all[3] = {g, rl, pp};
    const size_t cnt[3] = {N_(g), N_(rl), N_(pp)};
    for (int s = 0; s < 3; s++)
        for (size_t q = 0; q < cnt[s]; q++) {
            const Acc *a = &all[s][q];
            EXPECT(a->n > 0, "%s: no values compared", a->name);
            printf("    %-34s %5ld values, max |diff| %.1e, max rel %.1e\n", a->name, a->n, a->max_abs, a->max_rel);
        }
    json_decref(root);
}
