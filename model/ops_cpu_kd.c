/*
 * ops_cpu_kd.c: one row of the fused distillation LM head (ops.h
 * lmhead_kd): the cross-entropy at temperature 1, the divergence between
 * the teacher's and the student's distributions at temperature tau, and
 * the row's dlogits, written in place over the student's logits. The chunk
 * loop and its GEMMs are ops_cpu.c's (lmhead_kd there).
 *
 * Every divergence is over buckets b with log-probabilities lqt_b, lqs_b:
 * the V tokens (a dense teacher), or the teacher's top-K tokens plus a tail
 * bucket with the rest of each side's mass (Megatron's ghost bucket; none
 * when K == V). With G_b = dD / d lqs_b, the chain rule through
 * lqs = s / tau - logsumexp(s / tau) gives, per vocabulary entry u,
 *   dD/ds_u = (G_b(u) * [u in K ? 1 : q_s,u / r_s] - q_s,u * sum_b G_b) / tau
 * FKL: G = -q_t; RKL: G = q_s (lqs - lqt + 1); JSD: G = (1 - beta) q_s
 * (lqs - lm), m = beta q_t + (1 - beta) q_s. Formulas: docs/distill.md.
 *
 * Numbers: exps are exp_approx (vecmath.h, 1.3e-7 relative), every sum
 * over a row accumulates in double and log-probability differences are
 * taken in double, so a row's divergence is good to ~1e-7 of its terms;
 * the dlogits are float. The dense FKL and RKL passes are plain loops over
 * the row that the compiler vectorises (AVX2 clone, VECTOR_CLONES); JSD's
 * mixture needs a log per entry (libm, scalar).
 */
#include "ops_cpu_kd.h"

#include <float.h>
#include <math.h>

#include "base.h"
#include "vecmath.h"

/* The tail masses inside logs are floored here: a teacher whose stored
 * top-K sums to 1 (r_t = 0) would make RKL infinite. 1e-30 is below any
 * mass a float row can hold beside its top entries, so a true tail is
 * never changed. */
#define KD_TAIL_FLOOR 1e-30

void kd_prepare(KdRowArgs *a, const KdSpec *kd, float scale) {
    LC_ASSERT(kd->div >= 0 && kd->div < KD_COUNT);
    LC_ASSERT(kd->tau > 0.0f && kd->beta >= 0.0f && kd->beta <= 1.0f);
    a->div = kd->div;
    if (kd->div == KD_JSD && kd->beta == 0.0f) a->div = KD_FKL; /* TRL's limits, exactly */
    if (kd->div == KD_JSD && kd->beta == 1.0f) a->div = KD_RKL;
    a->it = 1.0f / kd->tau;
    a->beta = kd->beta;
    a->lb = a->div == KD_JSD ? log(a->beta) : 0.0;
    a->l1b = a->div == KD_JSD ? log1p(-a->beta) : 0.0;
    a->ce_w = kd->ce_w;
    a->kdf = (double)kd->kd_w * (kd->t2 ? (double)kd->tau * kd->tau : 1.0);
    a->scale = scale;
}

// ----------------------------------------------------------------------------
// one bucket in double: the divergence's term and G = dD / d lqs

typedef struct {
    double d, g;
} KdTerm;

/* q * (a - b), 0 where q is 0 (0 log 0 = 0, also when a log is -inf) */
static double xd(double q, double a, double b) { return q > 0.0 ? q * (a - b) : 0.0; }

static KdTerm bucket_fkl(double lqt, double lqs, const KdRowArgs *a) {
    (void)a;
    double qt = exp(lqt);
    return (KdTerm){xd(qt, lqt, lqs), -qt};
}

static KdTerm bucket_rkl(double lqt, double lqs, const KdRowArgs *a) {
    (void)a;
    double qs = exp(lqs);
    return (KdTerm){xd(qs, lqs, lqt), qs > 0.0 ? qs * (lqs - lqt + 1.0) : 0.0};
}

/* log m = log(beta q_t + (1 - beta) q_s) from the logs (0 < beta < 1), as
 * a log-sum-exp: no underflow of either product */
static double log_mix(double lqt, double lqs, const KdRowArgs *a) {
    double x = a->lb + lqt, y = a->l1b + lqs, m = x > y ? x : y;
    return m == -INFINITY ? m : m + log1p(exp(-fabs(x - y)));
}

static KdTerm bucket_jsd(double lqt, double lqs, const KdRowArgs *a) {
    double qt = exp(lqt), qs = exp(lqs), lm = log_mix(lqt, lqs, a);
    double gs = (1.0 - a->beta) * xd(qs, lqs, lm);
    return (KdTerm){a->beta * xd(qt, lqt, lm) + gs, gs};
}

static KdTerm (*const bucket[KD_COUNT])(double, double, const KdRowArgs *) = {bucket_fkl, bucket_rkl, bucket_jsd};

// ----------------------------------------------------------------------------
// passes over a row's V entries

/* sum of exp((x - sub) * mul) in double (eight lanes, a fixed order) */
VECTOR_CLONES static double exp_sum(const float *x, float sub, float mul, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += exp_approx((x[i + k] - sub) * mul);
    for (; i < n; i++) acc[0] += exp_approx((x[i] - sub) * mul);
    double s = 0.0;
    for (int k = 0; k < 8; k++) s += acc[k];
    return s;
}

/* The dense divergences (FKL, RKL) in one pass: with
 * lqs = (l - ms) * it - lzs and lqt = (t - mt) * it - lzt, FKL sums
 * q_t (lqt - lqs), RKL q_s (lqs - lqt); the differences in double. */
VECTOR_CLONES static double dense_kl(const float *l, const float *t, int V, float ms, float mt, float it,
                                     double lzs, double lzt, int reverse) {
    double acc[4] = {0};
    double c = lzt - lzs; /* lqs - lqt = (l - ms) * it - (t - mt) * it + c */
    int u = 0;
    for (; u + 4 <= V; u += 4)
        for (int k = 0; k < 4; k++) {
            float a = (l[u + k] - ms) * it, b = (t[u + k] - mt) * it;
            double dif = (double)a - (double)b + c;
            float q = reverse ? exp_approx((float)((double)a - lzs)) : exp_approx((float)((double)b - lzt));
            acc[k] += reverse ? q * dif : -(q * dif);
        }
    for (; u < V; u++) {
        float a = (l[u] - ms) * it, b = (t[u] - mt) * it;
        double dif = (double)a - (double)b + c;
        float q = reverse ? exp_approx((float)((double)a - lzs)) : exp_approx((float)((double)b - lzt));
        acc[0] += reverse ? q * dif : -(q * dif);
    }
    return acc[0] + acc[1] + acc[2] + acc[3];
}

/* dlogits of the cross-entropy part, p1 = softmax(l), for every entry:
 * l = cce * p1 (the one-hot comes after) plus, by mode (a dense row's
 * KdDiv, or 3),
 *   0: FKL   ckd * (q_s - q_t)
 *   1: RKL   ckd * q_s * (lqs - lqt - D)
 *   2: JSD   ckd * (G_u - q_s * sumG), G_u left in t by the divergence pass
 *   3: any divergence over buckets (sparse), every entry as a tail one:
 *            ckd * q_s * (ct - sumG), ct = G_tail / r_s (the K entries are
 *            corrected after) */
VECTOR_CLONES static void dense_grad(float *l, const float *t, int V, int mode, float ms, float mt, float it,
                                     float lzs, float lzt, float lz1, float cce, float ckd, float dsum, float ct) {
    /* one loop per mode, so that each vectorises (a mode test inside the
     * loop kept the compiler from it) */
    switch (mode) {
    case 0:
        for (int u = 0; u < V; u++) {
            float a = (l[u] - ms) * it - lzs, p1 = exp_approx(l[u] - ms - lz1), qs = exp_approx(a);
            l[u] = cce * p1 + ckd * (qs - exp_approx((t[u] - mt) * it - lzt));
        }
        break;
    case 1:
        for (int u = 0; u < V; u++) {
            float a = (l[u] - ms) * it - lzs, p1 = exp_approx(l[u] - ms - lz1), qs = exp_approx(a);
            l[u] = cce * p1 + ckd * (qs * (a - ((t[u] - mt) * it - lzt) - dsum));
        }
        break;
    case 2:
        for (int u = 0; u < V; u++) {
            float a = (l[u] - ms) * it - lzs, p1 = exp_approx(l[u] - ms - lz1), qs = exp_approx(a);
            l[u] = cce * p1 + ckd * (t[u] - qs * dsum);
        }
        break;
    default:
        if (it == 1.0f && lz1 == lzs) { /* p1 and qs are the same bits: one exp */
            for (int u = 0; u < V; u++) {
                float q = exp_approx(l[u] - ms - lzs);
                l[u] = cce * q + ckd * (q * (ct - dsum));
            }
        } else {
            for (int u = 0; u < V; u++) {
                float a = (l[u] - ms) * it - lzs, p1 = exp_approx(l[u] - ms - lz1), qs = exp_approx(a);
                l[u] = cce * p1 + ckd * (qs * (ct - dsum));
            }
        }
    }
}

// ----------------------------------------------------------------------------
// a row

void kd_row(const KdRowArgs *a, float *l, float *t, const int *ids, const float *lp, int K, int tgt, int V,
            int grad, double *ce, double *kd) {
    LC_DASSERT(tgt >= 0 && tgt < V);
    float it = a->it, ms = vec_max(l, V);
    double zs = exp_sum(l, ms, it, V), lzs = log(zs);
    double lz1 = it == 1.0f ? lzs : log(exp_sum(l, ms, 1.0f, V));
    *ce = lz1 - ((double)l[tgt] - ms);
    float cce = (float)(a->scale * a->ce_w), ckd = (float)(a->scale * a->kdf * it);
    if (!ids) { /* a dense teacher: every token its own bucket */
        float mt = vec_max(t, V);
        double lzt = log(exp_sum(t, mt, it, V)), d, gsum = 0.0;
        if (a->div != KD_JSD) {
            d = dense_kl(l, t, V, ms, mt, it, lzs, lzt, a->div == KD_RKL);
            gsum = d; /* RKL's mode takes D (sum_b G_b = D + 1) */
        } else {
            d = 0.0;
            for (int u = 0; u < V; u++) {
                double lqs = ((double)l[u] - ms) * it - lzs, lqt = ((double)t[u] - mt) * it - lzt;
                KdTerm r = bucket_jsd(lqt, lqs, a);
                d += r.d;
                gsum += r.g;
                if (grad) t[u] = (float)r.g;
            }
        }
        *kd = d;
        if (grad)
            dense_grad(l, t, V, a->div, ms, mt, it, (float)lzs, (float)lzt, (float)lz1, cce, ckd, (float)gsum, 0.0f);
    } else { /* the teacher's top K and, when K < V, the tail bucket */
        KdTerm (*fn)(double, double, const KdRowArgs *) = bucket[a->div];
        double d = 0.0, gsum = 0.0, mt = 0.0, zk = 0.0;
        for (int b = 0; b < K; b++) {
            LC_DASSERT(ids[b] >= 0 && ids[b] < V);
            float s = l[ids[b]];
            t[b] = s; /* kept for the K entries' dlogits below */
            zk += exp_approx((s - ms) * it); /* the same bits as exp_sum's term: zs - zk is the tail's sum */
            KdTerm r = fn(lp[b], ((double)s - ms) * it - lzs, a);
            d += r.d, gsum += r.g, mt += exp((double)lp[b]);
        }
        double ct = 0.0;
        if (K < V) {
            double rt = 1.0 - mt > 0.0 ? 1.0 - mt : 0.0, rs = (zs - zk) / zs;
            double lrt = log(rt > KD_TAIL_FLOOR ? rt : KD_TAIL_FLOOR), lrs = log(rs > KD_TAIL_FLOOR ? rs : KD_TAIL_FLOOR);
            KdTerm r = fn(lrt, lrs, a);
            d += r.d, gsum += r.g;
            ct = rs > KD_TAIL_FLOOR ? r.g / rs : 0.0;
        }
        *kd = d;
        if (grad) {
            dense_grad(l, t, V, 3, ms, 0.0f, it, (float)lzs, 0.0f, (float)lz1, cce, ckd, (float)gsum, (float)ct);
            for (int b = 0; b < K; b++) { /* the K entries: their own G_b in place of the tail's share */
                double lqs = ((double)t[b] - ms) * it - lzs, qs = exp(lqs);
                KdTerm r = fn(lp[b], lqs, a);
                l[ids[b]] += (float)(a->scale * a->kdf * it * (r.g - qs * ct));
            }
        }
    }
    if (grad) l[tgt] -= cce;
}
