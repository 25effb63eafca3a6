/*
 * test_sample.c: the sampler against brute force written apart from it:
 * the kept set of every truncation rule from sorting the whole vocabulary
 * in double; the draw's token frequencies over a grid of uniforms against
 * the kept, renormalised probabilities; greedy ties; the repetition penalty
 * against its formula; the log-probabilities against log softmax in double;
 * the counter-based uniforms; bad parameters; a timing line at V = 49152.
 */
#include <stdlib.h>
#include <string.h>

#include "../model/sample.h"
#include "test.h"
#include "tests.h"

// ----------------------------------------------------------------------------
// the reference: everything in double, the whole vocabulary sorted

static const double *ref_p;
static int ref_by_p(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (ref_p[i] != ref_p[j]) return ref_p[i] < ref_p[j] ? 1 : -1;
    return (i > j) - (i < j);
}

/* The penalised logits, by the formula of transformers'
 * RepetitionPenaltyLogitsProcessor: each distinct seen id once. */
static void ref_penalise(float *x, const float *logits, int V, const int *seen, int n_seen, float r) {
    memcpy(x, logits, (size_t)V * sizeof(float));
    for (int j = 0; j < n_seen; j++) {
        int t = seen[j], first = 1;
        for (int k = 0; k < j; k++) first &= seen[k] != t;
        if (first) x[t] = logits[t] < 0 ? logits[t] * r : logits[t] / r;
    }
}

/* Within this relative distance a decision is left to rounding: the
 * sampler's probabilities are floats (exp to ~2e-7), the reference's
 * doubles, so a cumulative mass this close to top_p * M, two unequal
 * probabilities this close at a cut, or one this close to min_p * p_max
 * may fall either way. */
#define REF_AMBIGUOUS 1e-5

static int near(double a, double b) {
    return a != b && fabs(a - b) <= REF_AMBIGUOUS * fabs(b);
}

/* keep[i] = 1 for the kept tokens; q[i] their probability renormalised over
 * the kept set (0 elsewhere). Returns the number kept; *amb (if not NULL)
 * gets whether a decision was within REF_AMBIGUOUS. */
static int ref_keep(const SampleParams *sp, const float *logits, int V, const int *seen, int n_seen, int *keep,
                    double *q, int *amb) {
    float *x = xmalloc((size_t)V * sizeof(float));
    double *p = xmalloc((size_t)V * sizeof(double));
    int *ord = xmalloc((size_t)V * sizeof(int));
    ref_penalise(x, logits, V, seen, n_seen, sp->rep_penalty);
    int best = 0, a = 0;
    for (int i = 0; i < V; i++) {
        keep[i] = 0, q[i] = 0;
        if (x[i] > x[best]) best = i;
    }
    int n = 0;
    if (sp->temperature == 0) {
        keep[best] = 1, q[best] = 1, n = 1;
        goto out;
    }
    for (int i = 0; i < V; i++) {
        p[i] = exp(((double)x[i] - x[best]) / sp->temperature); /* the max is 1 */
        ord[i] = i;
    }
    ref_p = p;
    qsort(ord, (size_t)V, sizeof(int), ref_by_p);
    int len = V; /* kept: ord[0 .. len) */
    if (sp->top_k > 0 && sp->top_k < V) { /* ties with the k-th stay */
        double pk = p[ord[sp->top_k - 1]];
        for (len = sp->top_k; len < V && p[ord[len]] == pk; len++) {}
        a |= (len < V && near(p[ord[len]], pk)) || (sp->top_k > 1 && near(p[ord[sp->top_k - 2]], pk));
    }
    if (sp->top_p < 1) {
        double mass = 0, cum = 0, want;
        for (int j = 0; j < len; j++) mass += p[ord[j]];
        want = (double)sp->top_p * mass;
        for (int j = 0; j < len; j++) {
            double before = cum;
            cum += p[ord[j]];
            if (cum >= want) {
                a |= fabs(cum - want) <= REF_AMBIGUOUS * mass || fabs(before - want) <= REF_AMBIGUOUS * mass;
                a |= j + 1 < len && near(p[ord[j + 1]], p[ord[j]]);
                len = j + 1;
                break;
            }
        }
    }
    for (int j = 0; j < V; j++) a |= near(p[ord[j]], (double)sp->min_p);
    while (len > 1 && p[ord[len - 1]] < (double)sp->min_p) len--;
    double mass = 0;
    for (int j = 0; j < len; j++) mass += p[ord[j]];
    for (int j = 0; j < len; j++) keep[ord[j]] = 1, q[ord[j]] = p[ord[j]] / mass;
    n = len;
out:
    if (amb) *amb = a;
    free(x), free(p), free(ord);
    return n;
}

/* log softmax(logits / T)[t] in double */
static double ref_logprob(const float *logits, int V, int t, double T) {
    double m = logits[0], s = 0;
    for (int i = 1; i < V; i++) m = logits[i] > m ? logits[i] : m;
    for (int i = 0; i < V; i++) s += exp(((double)logits[i] - m) / T);
    return ((double)logits[t] - m) / T - log(s);
}

/* Logits of one of three kinds: Gaussian with scale sigma, quantised to a
 * few values (ties everywhere), or a peaked head over a flat tail. */
static void make_logits(Rng *r, float *l, int V, int kind, float sigma) {
    for (int i = 0; i < V; i++) {
        float g = rng_normal(r) * sigma;
        if (kind == 1) g = (float)(int)(g * 2) * 0.5f; /* steps of 0.5 */
        if (kind == 2) g = rng_uniform(r) < 0.01f ? 8 + 2 * rng_normal(r) : g;
        l[i] = g;
    }
}

static SampleParams random_params(Rng *r, int V) {
    static const float temps[] = {0.5f, 0.8f, 1.0f, 1.7f};
    static const float top_ps[] = {1.0f, 0.3f, 0.9f, 0.95f, 0.99f};
    static const float min_ps[] = {0.0f, 0.0f, 0.0f, 0.001f, 0.05f, 0.3f};
    const int top_ks[] = {0, 0, 0, 1, 5, 50, V / 3 + 1, V + 3};
    SampleParams p = SAMPLE_PARAMS_DEFAULT;
    p.temperature = temps[rng_u64(r) % 4];
    p.top_k = top_ks[rng_u64(r) % 8];
    p.top_p = rng_u64(r) % 4 ? top_ps[rng_u64(r) % 5] : 0.05f + 0.9f * rng_uniform(r);
    p.min_p = min_ps[rng_u64(r) % 6];
    return p;
}

// ----------------------------------------------------------------------------
// the kept set and the draw

void sample_truncation(void) {
    Rng r;
    rng_seed(&r, 11);
    static const int Vs[] = {1, 2, 7, 60, 1000, 20000};
    int trials = 0, nontrivial = 0, ambiguous = 0;
    for (int vi = 0; vi < 6; vi++) {
        int V = Vs[vi];
        float *l = xmalloc((size_t)V * sizeof(float));
        int *keep = xmalloc((size_t)V * sizeof(int)), *ids = xmalloc((size_t)V * sizeof(int));
        double *q = xmalloc((size_t)V * sizeof(double));
        SampleWork w;
        sample_work_init(&w, V);
        int reps = V >= 20000 ? 30 : 150;
        for (int t = 0; t < reps; t++) {
            int kind = t % 3;
            make_logits(&r, l, V, kind, 0.5f + 3 * rng_uniform(&r));
            SampleParams sp = random_params(&r, V);
            int n = sample_kept(&sp, l, NULL, 0, ids, &w);
            int amb, nref = ref_keep(&sp, l, V, NULL, 0, keep, q, &amb);
            if (amb) {
                ambiguous++;
                continue;
            }
            int same = n == nref;
            for (int j = 0; same && j < n; j++) same = keep[ids[j]] && (j == 0 || ids[j] > ids[j - 1]);
            EXPECT(same, "V %d kind %d T %g top_k %d top_p %.9g min_p %g: kept %d tokens, reference %d", V, kind,
                   sp.temperature, sp.top_k, sp.top_p, sp.min_p, n, nref);
            trials++;
            nontrivial += nref > 1 && nref < V;
        }
        /* all logits equal: top-p keeps the lowest ids, exactly enough */
        for (int i = 0; i < V; i++) l[i] = 0.25f;
        SampleParams sp = SAMPLE_PARAMS_DEFAULT;
        sp.top_p = 0.5f;
        int n = sample_kept(&sp, l, NULL, 0, ids, &w);
        int want = (V + 1) / 2;
        EXPECT(n == want && ids[0] == 0 && ids[n - 1] == want - 1,
               "V %d flat, top_p 0.5: kept %d (ids %d..%d), want %d", V, n, ids[0], ids[n - 1], want);
        /* top-k keeps every token tied with the k-th */
        sp = SAMPLE_PARAMS_DEFAULT;
        sp.top_k = 1;
        n = sample_kept(&sp, l, NULL, 0, ids, &w);
        EXPECT(n == V, "V %d flat, top_k 1: kept %d, want all (ties with the first)", V, n);
        sample_work_free(&w);
        free(l), free(keep), free(ids), free(q);
    }
    EXPECT(nontrivial > trials / 4, "only %d of %d trials truncated anything", nontrivial, trials);
    EXPECT(ambiguous < trials / 20, "%d of %d trials left to rounding", ambiguous, trials);
    printf("    %d trials, %d truncating, %d skipped as left to rounding\n", trials, nontrivial, ambiguous);
}

/* Frequencies of each token over a grid of N uniforms against q: the
 * inverse CDF gives token i to an interval of length q_i, so a grid of N
 * points lands within 1 of N q_i there. */
static void check_draw(const SampleParams *sp, const float *l, int V, const int *seen, int n_seen, const char *what) {
    enum { N = 40000 };
    int *keep = xmalloc((size_t)V * sizeof(int)), *hits = xcalloc((size_t)V, sizeof(int));
    double *q = xmalloc((size_t)V * sizeof(double));
    int amb;
    ref_keep(sp, l, V, seen, n_seen, keep, q, &amb);
    EXPECT(!amb, "%s: the reference's kept set is left to rounding (pick other logits)", what);
    SampleWork w;
    sample_work_init(&w, V);
    for (int j = 0; j < N; j++) hits[sample_token(sp, l, seen, n_seen, (j + 0.5) / N, &w).token]++;
    double worst = 0;
    for (int i = 0; i < V; i++) {
        double d = fabs((double)hits[i] / N - q[i]);
        worst = d > worst ? d : worst;
    }
    EXPECT(worst <= 1.0 / N + 1e-9, "%s: a token's frequency is off by %g", what, worst);
    /* u -> token walks the kept ids upwards */
    int prev = -1, ordered = 1;
    for (int j = 0; j < N; j += 97) {
        int t = sample_token(sp, l, seen, n_seen, (j + 0.5) / N, &w).token;
        ordered &= t >= prev;
        prev = t;
    }
    EXPECT(ordered, "%s: the inverse CDF does not walk the ids in order", what);
    sample_work_free(&w);
    free(keep), free(hits), free(q);
}

void sample_draw(void) {
    Rng r;
    rng_seed(&r, 12);
    float l[40];
    char what[160];
    for (int t = 0; t < 24; t++) {
        int V = 5 + (int)(rng_u64(&r) % 36);
        make_logits(&r, l, V, t % 2, 1.5f);
        SampleParams sp = random_params(&r, V);
        snprintf(what, sizeof what, "V %d T %g top_k %d top_p %g min_p %g", V, sp.temperature, sp.top_k, sp.top_p,
                 sp.min_p);
        check_draw(&sp, l, V, NULL, 0, what);
    }
    /* a vocabulary of many 32-token blocks: the draw steps over whole
     * blocks by their sums and walks the one where u falls */
    float *big = xmalloc(1000 * sizeof(float));
    make_logits(&r, big, 1000, 0, 1.0f);
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    check_draw(&sp, big, 1000, NULL, 0, "V 1000, no truncation");
    sp.top_p = 0.9f, sp.temperature = 0.7f;
    check_draw(&sp, big, 1000, NULL, 0, "V 1000, top_p 0.9");
    free(big);
    /* nothing truncated: plain softmax */
    make_logits(&r, l, 30, 0, 2.0f);
    check_draw(&SAMPLE_PARAMS_DEFAULT, l, 30, NULL, 0, "no truncation");
    /* a masked token (-inf) is never drawn */
    l[3] = -INFINITY;
    check_draw(&SAMPLE_PARAMS_DEFAULT, l, 30, NULL, 0, "a -inf logit");
}

void sample_greedy(void) {
    float l[9] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 3.0f, -7.0f, 0.0f, 1.0f};
    SampleWork w;
    sample_work_init(&w, 9);
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0;
    sp.top_k = 3; /* ignored by greedy */
    sp.top_p = 0.1f;
    for (int j = 0; j < 5; j++) {
        int t = sample_token(&sp, l, NULL, 0, j / 5.0, &w).token;
        EXPECT(t == 1, "greedy over a tie of ids 1, 3, 5 gave %d, want the lowest", t);
    }
    /* the argmax of the penalised logits: 1 and 3 seen, 5 left */
    sp.rep_penalty = 1.5f;
    int seen[3] = {3, 1, 3};
    int t = sample_token(&sp, l, seen, 3, 0.5, &w).token;
    EXPECT(t == 5, "greedy after the penalty gave %d, want 5", t);
    /* all three seen: 3.0 / 1.5 = 2 loses to 2.9 */
    int seen3[3] = {1, 3, 5};
    t = sample_token(&sp, l, seen3, 3, 0.5, &w).token;
    EXPECT(t == 4, "greedy with the three maxima penalised gave %d, want 4", t);
    /* negative logits: -1 * 1.5 = -1.5 loses to -1.2 */
    float neg[3] = {-1.0f, -1.2f, -3.0f};
    SampleWork w3;
    sample_work_init(&w3, 3);
    int s0 = 0;
    t = sample_token(&sp, neg, &s0, 1, 0.5, &w3).token;
    EXPECT(t == 1, "greedy with a penalised negative max gave %d, want 1", t);
    /* r < 1 lifts a seen token: -1.2 * 0.8 = -0.96 beats -1 */
    sp.rep_penalty = 0.8f;
    int s1 = 1;
    t = sample_token(&sp, neg, &s1, 1, 0.5, &w3).token;
    EXPECT(t == 1, "greedy with r = 0.8 gave %d, want 1", t);
    sample_work_free(&w3);
    sample_work_free(&w);
}

void sample_penalty(void) {
    /* positive, negative and zero logits, ids seen more than once */
    float l[8] = {2.0f, -1.0f, 0.0f, 1.5f, -0.5f, 3.0f, 0.7f, -2.0f};
    int seen[7] = {0, 1, 1, 2, 5, 0, 7};
    char what[64];
    static const float rs[] = {1.3f, 0.7f, 2.0f};
    for (int k = 0; k < 3; k++) {
        SampleParams sp = SAMPLE_PARAMS_DEFAULT;
        sp.rep_penalty = rs[k];
        snprintf(what, sizeof what, "penalty %g", rs[k]);
        check_draw(&sp, l, 8, seen, 7, what);
        sp.temperature = 0.6f;
        sp.top_p = 0.8f;
        snprintf(what, sizeof what, "penalty %g, T 0.6, top_p 0.8", rs[k]);
        check_draw(&sp, l, 8, seen, 7, what);
    }
    /* the formula itself, written out: 2 / 1.3, -1 * 1.3, 0, 3 / 1.3, -2 * 1.3 */
    float x[8];
    ref_penalise(x, l, 8, seen, 7, 1.3f);
    float want[8] = {2.0f / 1.3f, -1.3f, 0.0f, 1.5f, -0.5f, 3.0f / 1.3f, 0.7f, -2.0f * 1.3f};
    for (int i = 0; i < 8; i++) EXPECT(x[i] == want[i], "reference penalty of id %d: %g, want %g", i, x[i], want[i]);
    /* the seen marks are cleared for the next call */
    SampleWork w;
    sample_work_init(&w, 8);
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.rep_penalty = 1.3f;
    sample_token(&sp, l, seen, 7, 0.3, &w);
    int clear = 1;
    for (int i = 0; i < 8; i++) clear &= w.seen[i] == 0;
    EXPECT(clear, "seen marks left set after a call");
    sample_work_free(&w);
    check_draw(&SAMPLE_PARAMS_DEFAULT, l, 8, seen, 7, "penalty 1 with seen ids");
}

// ----------------------------------------------------------------------------
// log-probabilities

void sample_logprob(void) {
    Rng r;
    rng_seed(&r, 13);
    static const int Vs[] = {3, 500, 49152};
    static const float temps[] = {0.0f, 0.7f, 1.0f, 1.3f};
    int *seen = xmalloc(64 * sizeof(int));
    double worst = 0, beyond = 0;
    for (int vi = 0; vi < 3; vi++) {
        int V = Vs[vi];
        float *l = xmalloc((size_t)V * sizeof(float));
        SampleWork w;
        sample_work_init(&w, V);
        for (int t = 0; t < 24; t++) {
            make_logits(&r, l, V, t % 3, 0.5f + 3 * rng_uniform(&r));
            l[rng_u64(&r) % V] -= 1000; /* far below the rest: nothing for the sum */
            SampleParams sp = random_params(&r, V);
            sp.temperature = temps[t % 4];
            int n_seen = t % 2 ? 64 : 0;
            sp.rep_penalty = n_seen ? 1.4f : 1.0f;
            for (int j = 0; j < n_seen; j++) seen[j] = (int)(rng_u64(&r) % V);
            SampleOut o = sample_token(&sp, l, seen, n_seen, rng_uniform(&r), &w);
            double T = sp.temperature > 0 ? sp.temperature : 1.0;
            double want = ref_logprob(l, V, o.token, T), want1 = ref_logprob(l, V, o.token, 1.0);
            /* 1e-6 plus the float rounding of the result itself */
            EXPECT_NEAR(o.logprob, want, 1e-6 + fabs(want) * 0x1p-24);
            EXPECT_NEAR(o.logprob_t1, want1, 1e-6 + fabs(want1) * 0x1p-24);
            double d[2] = {fabs(o.logprob - want), fabs(o.logprob_t1 - want1)};
            double ex[2] = {d[0] - fabs((float)want - want), d[1] - fabs((float)want1 - want1)};
            for (int k = 0; k < 2; k++) {
                worst = d[k] > worst ? d[k] : worst;
                beyond = ex[k] > beyond ? ex[k] : beyond;
            }
            if (T != 1 && V > 3) EXPECT(o.logprob != o.logprob_t1, "T %g: logprob equals logprob_t1", T);
        }
        sample_work_free(&w);
        free(l);
    }
    printf("    logprob: worst error %.3g against double, %.3g beyond the float rounding of the result\n", worst,
           beyond);
    free(seen);
}

// ----------------------------------------------------------------------------
// the streams

void sample_streams(void) {
    enum { S = 64, K = 256 };
    static double u[S][K];
    double sum = 0;
    int bins[16] = {0}, in_range = 1, grid = 1;
    for (int s = 0; s < S; s++)
        for (int k = 0; k < K; k++) {
            double x = sample_uniform((uint64_t)s, (uint64_t)k);
            u[s][k] = x;
            in_range &= x >= 0 && x < 1;
            grid &= x * 0x1p53 == floor(x * 0x1p53);
            sum += x;
            bins[(int)(x * 16)]++;
        }
    EXPECT(in_range, "a uniform outside [0, 1)");
    EXPECT(grid, "a uniform not on the 2^-53 grid");
    EXPECT(sample_uniform(5, 17) == u[5][17] && sample_uniform(63, 0) == u[63][0], "not a pure function");
    /* all S*K distinct: no two seeds or steps give the same value, and no
     * stream is another shifted by one step */
    double *all = xmalloc(sizeof u);
    memcpy(all, u, sizeof u);
    int dup = 0;
    for (int i = 0; i < S * K; i++)
        for (int j = i + 1; j < S * K; j++) dup += all[i] == all[j];
    EXPECT(dup == 0, "%d equal uniforms across seeds and steps", dup);
    free(all);
    /* the mean of 16384 uniforms is 0.5 within 4 sd (sd = 1 / sqrt(12 * 16384)) */
    EXPECT_NEAR(sum / (S * K), 0.5, 4 * 0.00226);
    /* 16 bins of 1024 expected: chi-square with 15 dof below 37.7 (p 0.001) */
    double chi = 0;
    for (int b = 0; b < 16; b++) chi += (bins[b] - 1024.0) * (bins[b] - 1024.0) / 1024.0;
    EXPECT(chi < 37.7, "chi-square over 16 bins %g", chi);
    /* sample seeds: distinct per j, apart from the request seed */
    uint64_t seeds[1000];
    int same = 0;
    for (int j = 0; j < 1000; j++) {
        seeds[j] = sample_seed(42, (uint64_t)j);
        same += seeds[j] == 42 || seeds[j] == sample_seed(43, (uint64_t)j);
        for (int k = 0; k < j; k++) same += seeds[k] == seeds[j];
    }
    EXPECT(same == 0, "%d sample seeds collide", same);
    EXPECT(sample_seed(42, 7) == seeds[7], "sample_seed not a pure function");
}

void sample_errors(void) {
    static const struct {
        SampleParams p;
        const char *msg;
    } bad[] = {
        {{-0.1f, 0, 1.0f, 0.0f, 1.0f}, "--temperature: must be >= 0"},
        {{NAN, 0, 1.0f, 0.0f, 1.0f}, "--temperature: must be >= 0"},
        {{INFINITY, 0, 1.0f, 0.0f, 1.0f}, "--temperature: must be finite"},
        {{1.0f, -1, 1.0f, 0.0f, 1.0f}, "--top-k: must be >= 0"},
        {{1.0f, 0, 0.0f, 0.0f, 1.0f}, "--top-p: must be in (0, 1]"},
        {{1.0f, 0, 1.01f, 0.0f, 1.0f}, "--top-p: must be in (0, 1]"},
        {{1.0f, 0, NAN, 0.0f, 1.0f}, "--top-p: must be in (0, 1]"},
        {{1.0f, 0, 1.0f, -0.01f, 1.0f}, "--min-p: must be in [0, 1)"},
        {{1.0f, 0, 1.0f, 1.0f, 1.0f}, "--min-p: must be in [0, 1)"},
        {{1.0f, 0, 1.0f, 0.0f, 0.0f}, "--repetition-penalty: must be > 0"},
        {{1.0f, 0, 1.0f, 0.0f, -1.0f}, "--repetition-penalty: must be > 0"},
        {{1.0f, 0, 1.0f, 0.0f, NAN}, "--repetition-penalty: must be > 0"},
        {{1.0f, 0, 1.0f, 0.0f, INFINITY}, "--repetition-penalty: must be finite"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Err e = {{0}};
        int rc = sample_params_check(&bad[i].p, &e);
        EXPECT(rc == -1 && strncmp(e.msg, bad[i].msg, strlen(bad[i].msg)) == 0 && !strchr(e.msg, '\n'),
               "case %zu: rc %d, '%s', want '%s'", i, rc, e.msg, bad[i].msg);
    }
    /* the edges are accepted */
    SampleParams ok = {0.0f, 0, 1.0f, 0.0f, 1.0f}, ok2 = {100.0f, 49152, 1e-6f, 0.999f, 1e-3f};
    EXPECT(sample_params_check(&ok, NULL) == 0 && sample_params_check(&ok2, NULL) == 0, "good parameters refused");
    /* sample_init checks the same and leaves a struct sample_free takes */
    Sampler s;
    Err e = {{0}};
    EXPECT(sample_init(&s, 10, 0.8f, 0, 0.0f, 1, &e) == -1 && strstr(e.msg, "--top-p: must be in (0, 1]"),
           "sample_init: '%s'", e.msg);
    sample_free(&s);
    EXPECT(sample_init(&s, 10, -1.0f, 0, 1.0f, 1, &e) == -1 && strstr(e.msg, "--temperature: must be >= 0"),
           "sample_init: '%s'", e.msg);
    sample_free(&s);
    EXPECT(sample_init(&s, 10, 1.0f, -2, 1.0f, 1, &e) == -1 && strstr(e.msg, "--top-k: must be >= 0"),
           "sample_init: '%s'", e.msg);
    sample_free(&s);
}

// ----------------------------------------------------------------------------
// determinism, threads, speed

void sample_determinism(void) {
    enum { V = 5000, R = 64 };
    Rng r;
    rng_seed(&r, 14);
    float *l = xmalloc((size_t)R * V * sizeof(float));
    make_logits(&r, l, R * V, 0, 2.0f);
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0.9f, sp.top_p = 0.9f, sp.top_k = 100;
    int serial[R], par[R];
    SampleWork w;
    sample_work_init(&w, V);
    for (int i = 0; i < R; i++)
        serial[i] =
            sample_token(&sp, l + (size_t)i * V, NULL, 0, sample_uniform(sample_seed(9, (uint64_t)i), 3), &w).token;
    sample_work_free(&w);
    /* one SampleWork per thread, rows in any order: the same tokens */
#pragma omp parallel
    {
        SampleWork tw;
        sample_work_init(&tw, V);
#pragma omp for schedule(dynamic, 1)
        for (int i = R - 1; i >= 0; i--)
            par[i] = sample_token(&sp, l + (size_t)i * V, NULL, 0, sample_uniform(sample_seed(9, (uint64_t)i), 3), &tw)
                         .token;
        sample_work_free(&tw);
    }
    int same = 0;
    for (int i = 0; i < R; i++) same += serial[i] == par[i];
    EXPECT(same == R, "%d of %d rows sampled differently in parallel", R - same, R);
    /* a Sampler replays its stream; another seed gives another one */
    Sampler a, b, c;
    LC_ASSERT(sample_init(&a, V, 1.0f, 0, 1.0f, 5, NULL) == 0);
    LC_ASSERT(sample_init(&b, V, 1.0f, 0, 1.0f, 5, NULL) == 0);
    LC_ASSERT(sample_init(&c, V, 1.0f, 0, 1.0f, 6, NULL) == 0);
    int ab = 0, ac = 0;
    for (int i = 0; i < R; i++) {
        int ta = sample_next(&a, l + (size_t)i * V);
        ab += ta == sample_next(&b, l + (size_t)i * V);
        ac += ta == sample_next(&c, l + (size_t)i * V);
        /* the stream of sample 0 of a request with seed 5 */
        SampleOut o = sample_token(&SAMPLE_PARAMS_DEFAULT, l + (size_t)i * V, NULL, 0,
                                   sample_uniform(sample_seed(5, 0), (uint64_t)i), &a.w);
        EXPECT(o.token == ta, "row %d: Sampler drew %d, its stream %d", i, ta, o.token);
    }
    EXPECT(ab == R, "the same seed drew %d different tokens", R - ab);
    EXPECT(ac < R / 2, "seeds 5 and 6 drew the same token %d times of %d", ac, R);
    sample_free(&a), sample_free(&b), sample_free(&c);
    free(l);
}

/* Time per sample_token at the engine's vocabulary: each row's best of
 * REPS calls (with another uniform each time), averaged over the R rows,
 * so that other work on the machine inflates it less; printed, not
 * checked (a loaded machine would make any bound flaky). */
static double time_call(const SampleParams *sp, const float *l, int V, int R, const int *seen, int n_seen,
                        SampleWork *w) {
    enum { REPS = 20 };
    double total = 0;
    int sink = 0;
    for (int i = 0; i < R; i++) {
        double best = 1e30;
        for (int k = 0; k < REPS; k++) {
            double u = sample_uniform(1, (uint64_t)(k * R + i)), t0 = time_now();
            sink += sample_token(sp, l + (size_t)i * V, seen, n_seen, u, w).token;
            double dt = time_now() - t0;
            best = dt < best ? dt : best;
        }
        total += best;
    }
    LC_ASSERT(sink >= 0);
    return total / R * 1e6;
}

void sample_speed(void) {
    enum { V = 49152, R = 16 };
    Rng r;
    rng_seed(&r, 15);
    float *l = xmalloc((size_t)R * V * sizeof(float));
    SampleWork w;
    sample_work_init(&w, V);
    static const struct {
        const char *name;
        SampleParams p;
    } cfg[] = {
        {"T 1, nothing", {1.0f, 0, 1.0f, 0.0f, 1.0f}},
        {"T 0.8, nothing", {0.8f, 0, 1.0f, 0.0f, 1.0f}},
        {"T 0.8, top_p 0.95", {0.8f, 0, 0.95f, 0.0f, 1.0f}},
        {"T 1, top_p 0.95", {1.0f, 0, 0.95f, 0.0f, 1.0f}},
        {"T 0.8, top_k 50", {0.8f, 50, 1.0f, 0.0f, 1.0f}},
        {"T 0.8, top_k 50, top_p 0.95", {0.8f, 50, 0.95f, 0.0f, 1.0f}},
        {"T 1, min_p 0.05", {1.0f, 0, 1.0f, 0.05f, 1.0f}},
        {"greedy", {0.0f, 0, 1.0f, 0.0f, 1.0f}},
    };
    static const char *kinds[] = {"gaussian sd 2 (flat)", "peaked head, flat tail"};
    int seen[256];
    for (int j = 0; j < 256; j++) seen[j] = (int)(rng_u64(&r) % V);
    for (int kind = 0; kind < 2; kind++) {
        make_logits(&r, l, R * V, kind == 0 ? 0 : 2, 2.0f);
        printf("    V %d, %s, mean over %d rows of the best of 20 calls:\n", V, kinds[kind], R);
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
            printf("      %-30s %7.1f us/call\n", cfg[c].name, time_call(&cfg[c].p, l, V, R, NULL, 0, &w));
        SampleParams rp = {0.8f, 0, 0.95f, 0.0f, 1.2f};
        printf("      %-30s %7.1f us/call\n", "T 0.8, top_p 0.95, penalty", time_call(&rp, l, V, R, seen, 256, &w));
    }
    sample_work_free(&w);
    free(l);
}
