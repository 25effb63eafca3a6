/*
 * sample.c: one token from one row of logits, in the order transformers'
 * generate and vLLM apply the steps: the repetition penalty on the logits
 * (CTRL, Keskar et al. 2019, as RepetitionPenaltyLogitsProcessor), the
 * temperature, then top-k, top-p over what top-k kept (TopPLogitsWarper
 * after TopKLogitsWarper) and min-p; one inverse-CDF draw with the caller's
 * uniform over the kept tokens in id order.
 *
 * Speed (the engine samples hundreds of rows of V = 49152 a step): no sort
 * of the vocabulary. exp is a polynomial the compiler vectorises; the kept
 * set is a prefix of the order (probability down, id up), found by
 * bisecting a probability threshold over its float bits, each step one
 * vectorised pass counting the tokens at or above it and their mass (over
 * a copy of the tokens between the brackets once they are few), until
 * fewer than SAMPLE_WINDOW lie between; only those are ordered (a heap).
 * Bounds start the search near the answer: llama2.c's for top-p, the least
 * of chunk maxima for top-k. No allocation: SampleWork holds the scratch;
 * no state outside it, so one SampleWork per thread is thread-safe.
 *
 * The log-probabilities are of the model's own distribution, before the
 * penalty and the truncation: log softmax(logits / T), normaliser summed in
 * double after subtracting the max.
 */
#include "sample.h"
#include "vecmath.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// parameters and streams

int sample_params_check(const SampleParams *p, Err *e) {
    if (!(p->temperature >= 0)) return err_set(e, "--temperature: must be >= 0, got %g", p->temperature);
    /* infinite T would make 0 * -inf = NaN of a masked (-inf) logit */
    if (p->temperature > FLT_MAX) return err_set(e, "--temperature: must be finite, got %g", p->temperature);
    if (p->top_k < 0) return err_set(e, "--top-k: must be >= 0, got %d", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return err_set(e, "--top-p: must be in (0, 1], got %g", p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1)) return err_set(e, "--min-p: must be in [0, 1), got %g", p->min_p);
    if (!(p->rep_penalty > 0)) return err_set(e, "--repetition-penalty: must be > 0, got %g", p->rep_penalty);
    if (p->rep_penalty > FLT_MAX) return err_set(e, "--repetition-penalty: must be finite, got %g", p->rep_penalty);
    return 0;
}

/* splitmix64's increment, the golden ratio in 64 bits (Steele, Lea, Flood
 * 2014): the counter of a stream steps by it */
#define GOLDEN 0x9e3779b97f4a7c15ull

/* Token `step` of stream `seed` is splitmix64's output number step + 1 from
 * the state hash_mix64(seed): a pure function, as Philox is for JAX and
 * vLLM's per-request generators. Two seeds' streams overlap only if their
 * states lie a few billion steps apart on the 2^64 cycle. */
double sample_uniform(uint64_t seed, uint64_t step) {
    uint64_t h = hash_mix64(hash_mix64(seed) + (step + 1) * GOLDEN);
    return (double)(h >> 11) * 0x1.0p-53; /* the top 53 bits: [0, 1) */
}

/* The xor keeps sample seeds off the request's own stream states; the
 * odd multiplier makes j -> seed a bijection (distinct j, distinct seeds). */
uint64_t sample_seed(uint64_t seed, uint64_t j) {
    return hash_mix64(hash_mix64(seed ^ 0xd1b54a32d192ed03ull) + (j + 1) * GOLDEN);
}

void sample_work_init(SampleWork *w, int vocab) {
    LC_ASSERT(vocab > 0);
    w->vocab = vocab;
    w->prob = xmalloc((size_t)vocab * sizeof(float));
    w->idx = xmalloc((size_t)vocab * sizeof(int));
    w->adj = xmalloc((size_t)vocab * sizeof(float));
    w->seen = xcalloc((size_t)vocab, 1);
}

void sample_work_free(SampleWork *w) {
    free(w->prob);
    free(w->idx);
    free(w->adj);
    free(w->seen);
    memset(w, 0, sizeof *w);
}

// ----------------------------------------------------------------------------
// vector loops: plain C that GCC vectorises, compiled for AVX2+FMA and for
// baseline x86-64 and picked at load time (VECTOR_CLONES, vec_max:
// vecmath.h). The exp here is its own: for x <= 0 only, more accurate than
// vecmath.h's exp_approx, whose rounding the training ops' tests pin.

/* e^x for x <= 0 (a logit minus the max, over T). x = n ln2 + r with |r| <=
 * ln2/2 (Cody-Waite: ln2 in a short high part and a low part, so n ln2 is
 * exact); e^r by a degree-6 polynomial (a Chebyshev fit, relative error
 * 2.5e-9 before rounding; about 1.6e-7 in float) evaluated by Estrin's
 * scheme, whose short dependency chains run a third faster than Horner's
 * here; 2^n through the exponent bits. Below -87 (e^-87 ~ 1.6e-38) and
 * -inf: 0; NaN stays NaN. */
static inline __attribute__((always_inline)) float exp_neg(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    float t = xc * 1.44269504f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
    float r2 = r * r, r4 = r2 * r2;
    float p = (1.0f + r * 1.00000004f) + r2 * (0.500000005f + r * 0.166664155f) +
              r4 * ((0.0416663529f + r * 0.0083751264f) + r2 * 0.00139411084f);
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    uint32_t bits = (tb << 23) + (127u << 23); /* n's low bits sit in t's mantissa */
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    float y = p * two_n;
    return x < -87.0f ? 0.0f : y;
}

/* GCC vector extensions (not intrinsics): the same source for both clones. */
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef uint64_t v4u __attribute__((vector_size(32)));

/* Sum over eight double lanes in a fixed order (vectorised, deterministic). */
static inline __attribute__((always_inline)) double sum8(const float *y, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += y[i + k];
    for (; i < n; i++) acc[0] += y[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Returns sum_i exp((x[i] - mx) / t) in double; out[i] gets the terms
 * when out is not NULL. A division, as transformers' logits / T (a
 * multiply by 1/T would shift every exponent by the rounding of 1/T; the
 * divide costs nothing next to the exp). Blocks of EXP_BLOCK stay in L1
 * between the exp and the sum. */
#define EXP_BLOCK 512
VECTOR_CLONES static double exp_sum(float *out, const float *x, int n, float mx, float t) {
    float buf[EXP_BLOCK];
    double s = 0;
    for (int b = 0; b < n; b += EXP_BLOCK) {
        int m = n - b < EXP_BLOCK ? n - b : EXP_BLOCK;
        float *y = out ? out + b : buf;
        for (int i = 0; i < m; i++) y[i] = exp_neg((x[b + i] - mx) / t);
        s += sum8(y, m);
    }
    return s;
}

/* The lanes of e[0..8) that are >= t: their count into *c (subtracting
 * the -1 of each true lane) and their sum in double into *m. */
static inline __attribute__((always_inline)) void lanes_ge(const float *e, float t, v8i *c, v4d *m) {
    v8f tv = {t, t, t, t, t, t, t, t}, v;
    memcpy(&v, e, sizeof v);
    v8i ge = v >= tv;
    *c -= ge;
    v8f x = (v8f)(ge & (v8i)v);
    v4f lo, hi; /* the halves (vextractf128) */
    memcpy(&lo, &x, sizeof lo);
    memcpy(&hi, (const char *)&x + sizeof lo, sizeof hi);
    *m += __builtin_convertvector(lo, v4d) + __builtin_convertvector(hi, v4d);
}

static inline __attribute__((always_inline)) double lanes_sum(const v4d *m) {
    return ((*m)[0] + (*m)[1]) + ((*m)[2] + (*m)[3]);
}

/* The number of e[i] >= t and their sum (the same set always gives the same
 * bits, whatever the threshold that picked it: lanes not taken add 0). */
VECTOR_CLONES static double mass_ge(const float *e, int n, float t, int *cnt) {
    v8i c = {0};
    v4d m = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) lanes_ge(e + i, t, &c, &m);
    int cn = c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7];
    double s = lanes_sum(&m);
    for (; i < n; i++)
        if (e[i] >= t) cn++, s += e[i];
    *cnt = cn;
    return s;
}

/* The i in [0, n) with lo <= e[i] < hi, ascending: their ids (id[i], or i
 * when id is NULL) into idx and their values into val (may be e and id:
 * the write never passes the read). Returns their count. Blocks of 32
 * without one are skipped on one test; in the others each lane's test
 * becomes a bit, and only the set bits are visited (the tokens sought lie
 * scattered: a walk over every block holding one costs more than the scan). */
VECTOR_CLONES static int gather_between(const float *e, const int *id, int n, float lo, float hi, int *idx,
                                        float *val) {
    v8f lv = {lo, lo, lo, lo, lo, lo, lo, lo}, hv = {hi, hi, hi, hi, hi, hi, hi, hi};
    v8i bit = {1, 2, 4, 8, 16, 32, 64, 128};
    int k = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        v8i any = {0}, bits = {0};
        for (int j = 0; j < 4; j++) {
            v8f v;
            memcpy(&v, e + i + 8 * j, sizeof v);
            v8i in = (v >= lv) & (v < hv);
            any |= in;
            bits |= in & (bit << (8 * j)); /* lane l of block j: bit 8j + l */
        }
        v4u a = (v4u)any;
        if ((a[0] | a[1] | a[2] | a[3]) == 0) continue;
        uint64_t h[4];
        memcpy(h, &bits, sizeof h);
        uint64_t o = h[0] | h[1] | h[2] | h[3];
        for (uint32_t mask = (uint32_t)o | (uint32_t)(o >> 32); mask; mask &= mask - 1) {
            int j = i + __builtin_ctz(mask);
            idx[k] = id ? id[j] : j;
            val[k++] = e[j];
        }
    }
    for (; i < n; i++) {
        float v = e[i];
        idx[k] = id ? id[i] : i;
        val[k] = v;
        k += v >= lo && v < hi;
    }
    return k;
}

/* One id at a time over [from, to): the first with e >= t and e > 0 at
 * which the running sum *a passes target, or -1 (*last: the last counted). */
static int walk(const float *e, int from, int to, float t, double target, double *a, int *last) {
    for (int i = from; i < to; i++)
        if (e[i] >= t && e[i] > 0) {
            *a += e[i];
            *last = i;
            if (*a > target) return i;
        }
    return -1;
}

/* Inverse CDF over the ids in [from, to) with e >= t and e > 0, in id
 * order, with the running sum *acc: the first id at which it passes target,
 * or -1. Blocks of 32 are summed with lanes_ge and stepped over whole; the
 * block where the sum passes target is walked one id at a time (and if
 * that walk's rounding stays below target, its last kept id is drawn). */
VECTOR_CLONES static int draw_range(const float *e, int from, int to, float t, double target, double *acc) {
    int i = from, last = -1;
    for (; i + 32 <= to; i += 32) {
        v8i c = {0};
        v4d m = {0};
        for (int j = 0; j < 32; j += 8) lanes_ge(e + i + j, t, &c, &m);
        double bm = lanes_sum(&m);
        if (*acc + bm > target) {
            int tok = walk(e, i, i + 32, t, target, acc, &last);
            return tok >= 0 ? tok : last;
        }
        *acc += bm;
    }
    return walk(e, i, to, t, target, acc, &last);
}

// ----------------------------------------------------------------------------
// the kept set
//
// Probabilities are e[i] = exp((x[i] - max) / T) in (0, 1] (the max token's
// is 1), unnormalised. Tokens are ranked by e down, id up; every rule keeps
// a prefix of that ranking, so the kept set is "ranked at or before a cut
// token": e > cut.e, or e == cut.e and id <= cut.id.

typedef struct Cut {
    float e;
    int id;
} Cut;

/* a before b in the ranking */
static inline int ranked_before(const float *e, int a, int b) {
    return e[a] > e[b] || (e[a] == e[b] && a < b);
}

/* Threshold bisection works on the bits of non-negative floats, which order
 * as the floats do. A Level is the set e >= key's float. */
typedef struct Level {
    uint32_t key;
    int cnt;
    double mass;
} Level;

static float key_float(uint32_t k) {
    float f;
    memcpy(&f, &k, sizeof f);
    return f;
}

static uint32_t float_key(float f) {
    uint32_t k;
    memcpy(&k, &f, sizeof k);
    return k;
}

static Level level_at(const float *e, int V, uint32_t key) {
    Level l = {key, 0, 0};
    l.mass = mass_ge(e, V, key_float(key), &l.cnt);
    return l;
}

/* Tokens between two brackets bisected to at most this many are put in
 * order by a heap: a few microseconds, about one bisection step's scan. */
#define SAMPLE_WINDOW 256

/* Does a prefix of cnt tokens with this mass satisfy the rule? top-k:
 * want_cnt > 0 tokens; top-p: want_mass. */
static inline int enough(int cnt, double mass, int want_cnt, double want_mass) {
    return want_cnt > 0 ? cnt >= want_cnt : mass >= want_mass;
}

static void heap_sift(const float *e, int *h, int n, int i) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && ranked_before(e, h[c + 1], h[c])) c++;
        if (!ranked_before(e, h[c], h[i])) return;
        int t = h[c];
        h[c] = h[i];
        h[i] = t;
        i = c;
    }
}

/* The first token in ranking order at which the prefix is enough, given a
 * level lo that is enough and a level hi that is not; with ties, the last
 * token of equal e after it (top-k keeps them). lo.cnt < 0: lo's count and
 * mass are not known yet (a bound known to hold few tokens: they are
 * gathered at once). *pre gets the prefix's count and mass (key: the cut's
 * e). */
static Cut find_cut(const float *e, int V, int *idx, float *val, Level lo, Level hi, int want_cnt, double want_mass,
                    int ties, Level *pre) {
    /* bisect until few tokens lie between; once the window is a quarter
     * of the values scanned or less, the scans go over a copy of the
     * window (ids in idx, values in val; above it, hi's count and mass) */
    const float *arr = e;
    int n = V, copied = 0;
    Level base = {0, 0, 0};
    if (lo.cnt < 0) {
        n = gather_between(e, NULL, V, key_float(lo.key), key_float(hi.key), idx, val);
        arr = val, copied = 1, base = hi;
        lo.cnt = hi.cnt + n, lo.mass = hi.mass + sum8(val, n);
    }
    while (lo.cnt - hi.cnt > SAMPLE_WINDOW && hi.key - lo.key > 1) {
        if (lo.cnt - hi.cnt <= n / 4) {
            n = gather_between(arr, copied ? idx : NULL, n, key_float(lo.key), key_float(hi.key), idx, val);
            LC_ASSERT(n == lo.cnt - hi.cnt);
            arr = val, copied = 1, base = hi;
        }
        uint32_t key = lo.key + (hi.key - lo.key) / 2;
        Level mid = {key, 0, 0};
        mid.mass = mass_ge(arr, n, key_float(key), &mid.cnt);
        mid.cnt += base.cnt, mid.mass += base.mass;
        if (enough(mid.cnt, mid.mass, want_cnt, want_mass)) lo = mid;
        else hi = mid;
    }
    n = gather_between(arr, copied ? idx : NULL, n, key_float(lo.key), key_float(hi.key), idx, val);
    LC_ASSERT(n == lo.cnt - hi.cnt && n > 0);
    int cnt = hi.cnt, last = -1, done = 0;
    double m = hi.mass;
    /* one value (hi = lo + 1): the ids' order is the ranking; else a heap */
    int heap = hi.key - lo.key > 1;
    for (int j = n / 2 - 1; heap && j >= 0; j--) heap_sift(e, idx, n, j);
    for (int j = 0, left = n; j < n; j++, left--) {
        int t = heap ? idx[0] : idx[j];
        if (done && !(ties && e[t] == e[last])) break;
        last = t;
        cnt++, m += e[t];
        done = done || enough(cnt, m, want_cnt, want_mass);
        if (heap) {
            idx[0] = idx[left - 1];
            heap_sift(e, idx, left - 1, 0);
        }
    }
    /* a window that runs out without being enough: the sums of the passes
     * and of the walk rounded apart; its last token is the cut */
    *pre = (Level){float_key(e[last]), cnt, m};
    return (Cut){e[last], last};
}

/* A threshold with at least g tokens at or above it (g chunks each hold
 * one): the least of the maxima of g chunks of e. */
static float chunk_bound(const float *e, int V, int g) {
    float b = 1.0f;
    for (int j = 0; j < g; j++) {
        int from = (int)((int64_t)V * j / g), to = (int)((int64_t)V * (j + 1) / g);
        float m = vec_max(e + from, to - from);
        b = m < b ? m : b;
    }
    return b;
}

/* top-k, then top-p over the mass top-k kept, then min-p: the cut of the
 * kept set and its mass. s is the sum of all e. */
static Cut truncate(const SampleParams *p, const float *e, int V, int *idx, float *val, double s, double *kept) {
    Cut cut = {0.0f, V - 1}; /* everything */
    Level all = {0, V, s};
    Level top = {float_key(1.0f) + 1, 0, 0}; /* above the max: nothing */
    *kept = s;
    if (p->top_k > 0 && p->top_k < V) {
        /* start from a bound with at least max(k, 64) tokens: about g ln g
         * of them on any distribution, a few hundred for a small k */
        int g = p->top_k > 64 ? p->top_k : 64;
        Level lo = g <= V / 4 ? (Level){float_key(chunk_bound(e, V, g)), -1, 0} : all;
        /* ties with the k-th are kept, as torch.topk's threshold in
         * TopKLogitsWarper and vLLM keep them */
        Cut k = find_cut(e, V, idx, val, lo, top, p->top_k, 0, 1, &all);
        cut = (Cut){k.e, V - 1};
        *kept = all.mass;
    }
    if (p->top_p < 1) {
        double want = (double)p->top_p * all.mass;
        /* llama2.c's bound: a token below (1 - p) M / (n - 1) is never in
         * the nucleus (all the others below it hold less than 1 - p); a
         * little under it, for rounding, and only used if it checks out */
        if (all.cnt > SAMPLE_WINDOW) {
            double b = (1.0 - p->top_p) * all.mass / (all.cnt - 1) * (1 - 1e-6);
            if (b > key_float(all.key) && b < 1) {
                Level l = level_at(e, V, float_key((float)b));
                if (l.mass >= want) all = l;
            }
        }
        Level pre;
        cut = find_cut(e, V, idx, val, all, top, 0, want, 0, &pre);
        *kept = pre.mass;
    }
    if (p->min_p > 0 && p->min_p > cut.e) { /* min_p * 1, the max token's e */
        cut = (Cut){p->min_p, V - 1};
        int n;
        *kept = mass_ge(e, V, p->min_p, &n);
    }
    return cut;
}

/* Inverse CDF in id order over the kept tokens, whose mass is kept. */
static int draw(const float *e, int V, Cut cut, double kept, double u) {
    double target = u * kept, acc = 0;
    int tok = draw_range(e, 0, cut.id + 1, cut.e, target, &acc);
    if (tok < 0) tok = draw_range(e, cut.id + 1, V, nextafterf(cut.e, INFINITY), target, &acc);
    /* the sums of the truncation and of this walk rounded apart: the last
     * kept token */
    for (int i = V - 1; tok < 0 && i >= 0; i--)
        if (e[i] > 0 && (e[i] > cut.e || (e[i] == cut.e && i <= cut.id))) tok = i;
    LC_ASSERT(tok >= 0);
    return tok;
}

// ----------------------------------------------------------------------------
// one token

/* the first index of the max: argmax with ties to the lowest id */
static int argmax(const float *x, int V) {
    float m = vec_max(x, V);
    for (int i = 0; i < V; i++)
        if (x[i] == m) return i;
    LC_FATAL("argmax: no logit equals the max (NaN logits)");
}

/* transformers' RepetitionPenaltyLogitsProcessor: gather the seen ids'
 * logits, l < 0 ? l * r : l / r, scatter back, so an id seen twice is
 * penalised once. Returns the penalised copy in w->adj. */
static const float *penalise(const float *logits, const int *seen, int n_seen, float r, SampleWork *w) {
    int V = w->vocab;
    memcpy(w->adj, logits, (size_t)V * sizeof(float));
    for (int j = 0; j < n_seen; j++) {
        int t = seen[j];
        LC_ASSERT(t >= 0 && t < V);
        if (w->seen[t]) continue;
        w->seen[t] = 1;
        float l = logits[t];
        w->adj[t] = l < 0 ? l * r : l / r;
    }
    for (int j = 0; j < n_seen; j++) w->seen[seen[j]] = 0;
    return w->adj;
}

/* The distribution of one call: greedy, the argmax of the penalised logits
 * (returned); else -1, with w->prob holding the penalised e, *cut and *kept
 * the kept set. *s_raw gets sum exp((logits - mraw) / T) when that came
 * along (no penalty), else -1. */
static int distribution(const SampleParams *p, const float *logits, float mraw, const int *seen, int n_seen,
                        SampleWork *w, Cut *cut, double *kept, double *s_raw) {
    int V = w->vocab;
    const float *x = p->rep_penalty != 1 && n_seen > 0 ? penalise(logits, seen, n_seen, p->rep_penalty, w) : logits;
    *s_raw = -1;
    if (p->temperature == 0) return argmax(x, V);
    float mx = x == logits ? mraw : vec_max(x, V);
    double s = exp_sum(w->prob, x, V, mx, p->temperature);
    LC_ASSERT(s >= 1); /* the max's term is 1; NaN: a NaN logit, a bug upstream */
    if (x == logits) *s_raw = s;
    *cut = truncate(p, w->prob, V, w->idx, w->adj, s, kept); /* x is spent: adj is scratch */
    return -1;
}

/* the max of the raw logits, which must be finite */
static float raw_max(const float *logits, int V) {
    float m = vec_max(logits, V);
    LC_ASSERT(isfinite(m)); /* a NaN/+inf logit or nothing but -inf: a bug upstream */
    return m;
}

SampleOut sample_token(const SampleParams *p, const float *logits, const int *seen, int n_seen, double u,
                       SampleWork *w) {
    int V = w->vocab;
    LC_ASSERT(u >= 0 && u < 1);
    float mraw = raw_max(logits, V);
    Cut cut;
    double kept, s_t;
    SampleOut o = {0, 0, 0};
    o.token = distribution(p, logits, mraw, seen, n_seen, w, &cut, &kept, &s_t);
    if (o.token < 0) o.token = draw(w->prob, V, cut, kept, u);
    /* log softmax(logits / T)[token], T = 1 when greedy */
    double T = p->temperature > 0 ? p->temperature : 1.0;
    if (s_t < 0) s_t = exp_sum(NULL, logits, V, mraw, (float)T);
    LC_ASSERT(s_t >= 1);
    double l = (double)logits[o.token] - mraw;
    o.logprob = (float)(l / T - log(s_t));
    o.logprob_t1 = T == 1 ? o.logprob : (float)(l - log(exp_sum(NULL, logits, V, mraw, 1.0f)));
    return o;
}

int sample_kept(const SampleParams *p, const float *logits, const int *seen, int n_seen, int *ids,
                SampleWork *w) {
    Cut cut;
    double kept, s_t;
    int tok = distribution(p, logits, raw_max(logits, w->vocab), seen, n_seen, w, &cut, &kept, &s_t);
    if (tok >= 0) {
        ids[0] = tok;
        return 1;
    }
    const float *e = w->prob;
    int n = 0;
    for (int i = 0; i < w->vocab; i++)
        if (e[i] > 0 && (e[i] > cut.e || (e[i] == cut.e && i <= cut.id))) ids[n++] = i;
    return n;
}

// ----------------------------------------------------------------------------
// one sequence

int sample_init(Sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed, Err *e) {
    memset(s, 0, sizeof *s);
    s->p = SAMPLE_PARAMS_DEFAULT;
    s->p.temperature = temperature;
    s->p.top_k = top_k;
    s->p.top_p = top_p;
    if (sample_params_check(&s->p, e)) return -1;
    s->seed = sample_seed(seed, 0); /* the stream of sample 0 of an engine request with this seed */
    sample_work_init(&s->w, vocab);
    return 0;
}

void sample_free(Sampler *s) {
    sample_work_free(&s->w);
    memset(s, 0, sizeof *s);
}

int sample_next(Sampler *s, const float *logits) {
    return sample_token(&s->p, logits, NULL, 0, sample_uniform(s->seed, s->step++), &s->w).token;
}
