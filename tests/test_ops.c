/*
 * test_ops.c: every op of the table checked against finite differences
 * (gradcheck.h) on random seeded inputs with odd sizes, GQA, a document
 * mask, ignore labels and llama3 rope scaling. One row per OpId in `cases`
 * (a _Static_assert keeps the table complete); a CUDA backend will be
 * checked against the CPU backend from the same rows.
 *
 * Tolerances: central differences with h = 1e-2 on O(1) float32 inputs carry
 * a truncation error ~h^2 * f''' (~1e-4 relative) and float32 rounding in f of
 * ~1e-7 * |f| / h; rtol 1e-2 with atol 1e-3 of the tensor's largest gradient
 * is far above both and far below any real bug (a wrong term is O(1)).
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../model/config.h"
#include "../model/lora.h"
#include "../model/ops.h"
#include "../model/ops_cpu_engine.h"
#include "gradcheck.h"
#include "test.h"
#include "tests.h"

static const Ops *O = &ops_cpu;
static const GcOpts GC = {48, 1e-2f, 1e-2, 1e-3};

#define NEW(n) ((float *)xcalloc((n), sizeof(float)))

static void check(const char *what, GcFn f, void *ud, float *x, const float *ana, size_t n, Rng *r) {
    double worst;
    gradcheck(what, f, ud, x, ana, n, &GC, r, &worst);
    if (getenv("LLAMAC_TEST_VERBOSE")) printf("    %-24s worst rel err %.2e\n", what, worst);
}

// ----------------------------------------------------------------------------
// embedding

typedef struct { int N, D, V; int *tok; float *emb, *out, *r; } EmbedCase;

static double embed_f(void *ud) {
    EmbedCase *c = ud;
    O->embed_fwd(NULL, c->out, c->tok, c->emb, c->N, c->D);
    return gc_project(c->out, c->r, (size_t)c->N * c->D);
}

static void case_embed(Rng *r) {
    EmbedCase c = {13, 37, 11, 0, 0, 0, 0};
    c.tok = xmalloc(c.N * sizeof(int));
    for (int i = 0; i < c.N; i++) c.tok[i] = (int)(rng_u64(r) % c.V); /* repeats on purpose */
    c.emb = NEW(c.V * c.D); c.out = NEW(c.N * c.D); c.r = NEW(c.N * c.D);
    gc_randn(r, c.emb, c.V * c.D, 1); gc_randn(r, c.r, c.N * c.D, 1);
    float *g = NEW(c.V * c.D);
    for (int i = 0; i < c.V * c.D; i++) g[i] = 0.5f; /* backward accumulates */
    O->embed_bwd(NULL, g, c.r, c.tok, c.N, c.D);
    for (int i = 0; i < c.V * c.D; i++) g[i] -= 0.5f;
    check("embed.demb", embed_f, &c, c.emb, g, c.V * c.D, r);
    free(c.tok); free(c.emb); free(c.out); free(c.r); free(g);
}

// ----------------------------------------------------------------------------
// RMSNorm

typedef struct { int N, D; float *x, *w, *out, *rstd, *r; } NormCase;

static double norm_f(void *ud) {
    NormCase *c = ud;
    O->rmsnorm_fwd(NULL, c->out, c->rstd, c->x, c->w, c->N, c->D, 1e-5f);
    return gc_project(c->out, c->r, (size_t)c->N * c->D);
}

static void case_rmsnorm(Rng *r) {
    NormCase c = {7, 45, 0, 0, 0, 0, 0};
    size_t n = (size_t)c.N * c.D;
    c.x = NEW(n); c.w = NEW(c.D); c.out = NEW(n); c.rstd = NEW(c.N); c.r = NEW(n);
    gc_randn(r, c.x, n, 1); gc_randn(r, c.r, n, 1);
    for (int j = 0; j < c.D; j++) c.w[j] = 1.0f + 0.3f * rng_normal(r);
    norm_f(&c);
    float *dx = NEW(n), *dw = NEW(c.D);
    for (size_t i = 0; i < n; i++) dx[i] = 1.0f; /* residual: += */
    O->rmsnorm_bwd(NULL, dx, dw, c.r, c.x, c.w, c.rstd, c.N, c.D);
    float *dx2 = NEW(n); /* a frozen gain (LoRA): dw NULL, the same dx */
    for (size_t i = 0; i < n; i++) dx2[i] = 1.0f;
    O->rmsnorm_bwd(NULL, dx2, NULL, c.r, c.x, c.w, c.rstd, c.N, c.D);
    EXPECT(memcmp(dx, dx2, n * sizeof(float)) == 0, "rmsnorm_bwd with dw NULL changes dx");
    free(dx2);
    for (size_t i = 0; i < n; i++) dx[i] -= 1.0f;
    check("rmsnorm.dx", norm_f, &c, c.x, dx, n, r);
    check("rmsnorm.dw", norm_f, &c, c.w, dw, c.D, r);
    free(c.x); free(c.w); free(c.out); free(c.rstd); free(c.r); free(dx); free(dw);
}

// ----------------------------------------------------------------------------
// linear

typedef struct { int N, I, Oo; float *x, *w, *out, *r; } MatCase;

static double mat_f(void *ud) {
    MatCase *c = ud;
    O->matmul_fwd(NULL, c->out, c->x, c->w, c->N, c->I, c->Oo);
    return gc_project(c->out, c->r, (size_t)c->N * c->Oo);
}

static void case_matmul(Rng *r) {
    MatCase c = {7, 13, 11, 0, 0, 0, 0};
    c.x = NEW(c.N * c.I); c.w = NEW(c.Oo * c.I); c.out = NEW(c.N * c.Oo); c.r = NEW(c.N * c.Oo);
    gc_randn(r, c.x, c.N * c.I, 1); gc_randn(r, c.w, c.Oo * c.I, 1); gc_randn(r, c.r, c.N * c.Oo, 1);
    float *dx = NEW(c.N * c.I), *dx2 = NEW(c.N * c.I), *dw = NEW(c.Oo * c.I);
    for (int i = 0; i < c.Oo * c.I; i++) dw[i] = 2.0f;
    for (int i = 0; i < c.N * c.I; i++) dx[i] = 9.0f, dx2[i] = 3.0f;
    O->matmul_bwd(NULL, dx, dw, c.r, c.x, c.w, c.N, c.I, c.Oo, 0);  /* dx overwritten */
    O->matmul_bwd(NULL, dx2, NULL, c.r, c.x, c.w, c.N, c.I, c.Oo, 1); /* dx accumulated */
    for (int i = 0; i < c.Oo * c.I; i++) dw[i] -= 2.0f;
    for (int i = 0; i < c.N * c.I; i++) EXPECT(fabsf(dx2[i] - 3.0f - dx[i]) < 1e-5f, "accum_dx at %d", i);
    check("matmul.dx", mat_f, &c, c.x, dx, c.N * c.I, r);
    check("matmul.dw", mat_f, &c, c.w, dw, c.Oo * c.I, r);
    free(c.x); free(c.w); free(c.out); free(c.r); free(dx); free(dx2); free(dw);
}

// ----------------------------------------------------------------------------
// RoPE with llama3 scaling and positions restarting per document

typedef struct { int N, nh, HS; int *pos; float *cs, *sn, *x, *y, *r; } RopeCase;

static double rope_f(void *ud) {
    RopeCase *c = ud;
    size_t n = (size_t)c->N * c->nh * c->HS;
    memcpy(c->y, c->x, n * sizeof(float));
    O->rope_fwd(NULL, c->y, c->pos, c->cs, c->sn, c->N, c->nh, c->HS);
    return gc_project(c->y, c->r, n);
}

/* cos/sin tables (T, HS/2) as llama.c builds them */
static void rope_tables(const LlamaConfig *cfg, int T, float *cs, float *sn) {
    int half = config_head_size(cfg) / 2;
    float f[512];
    config_rope_inv_freq(cfg, f);
    for (int p = 0; p < T; p++)
        for (int i = 0; i < half; i++) {
            float a = (float)p * f[i];
            cs[p * half + i] = (float)cos(a);
            sn[p * half + i] = (float)sin(a);
        }
}

static void case_rope(Rng *r) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.dim = 3 * 20; cfg.n_heads = 3; /* HS = 20 */
    cfg.rope_theta = 500000; cfg.rope_scaling = ROPE_SCALING_LLAMA3;
    cfg.rope_factor = 8; cfg.rope_low_freq = 1; cfg.rope_high_freq = 4; cfg.rope_orig_ctx = 48;
    RopeCase c = {19, 3, 20, 0, 0, 0, 0, 0, 0};
    int T = c.N, half = c.HS / 2;
    size_t n = (size_t)c.N * c.nh * c.HS;
    c.pos = xmalloc(c.N * sizeof(int));
    for (int t = 0; t < c.N; t++) c.pos[t] = t < 7 ? t : t - 7; /* a second document at t = 7 */
    c.cs = NEW(T * half); c.sn = NEW(T * half);
    rope_tables(&cfg, T, c.cs, c.sn);
    c.x = NEW(n); c.y = NEW(n); c.r = NEW(n);
    gc_randn(r, c.x, n, 1); gc_randn(r, c.r, n, 1);
    float *dx = NEW(n);
    memcpy(dx, c.r, n * sizeof(float));
    O->rope_bwd(NULL, dx, c.pos, c.cs, c.sn, c.N, c.nh, c.HS);
    check("rope.dx", rope_f, &c, c.x, dx, n, r);
    /* position 0 is the identity; restarting positions give equal rotations */
    rope_f(&c);
    for (int j = 0; j < c.HS; j++) EXPECT(c.y[j] == c.x[j], "rope at pos 0 must be the identity");
    free(c.pos); free(c.cs); free(c.sn); free(c.x); free(c.y); free(c.r); free(dx);
}

// ----------------------------------------------------------------------------
// attention

typedef struct {
    int B, T, H, KV, HS;
    int *pos, *spans;
    float *q, *k, *v, *out, *lse, *r, *scratch;
} AttnCase;

/* The attention ops' spans of positions (B x T): attn_spans of each row. */
static int *spans_of(const int *pos, int B, int T) {
    int *sp = xmalloc((size_t)B * T * 3 * sizeof(int));
    for (int b = 0; b < B; b++) LC_ASSERT(attn_spans(pos + (size_t)b * T, T, sp + (size_t)b * T * 3) < 0);
    return sp;
}

static double attn_f(void *ud) {
    AttnCase *c = ud;
    O->attn_fwd(NULL, c->out, c->lse, c->q, c->k, c->v, c->spans, c->scratch, c->B, c->T, c->H, c->KV, c->HS);
    return gc_project(c->out, c->r, (size_t)c->B * c->T * c->H * c->HS);
}

/* Whether query t sees key j (ops.h's rule, read off the positions by
 * walking back): its document starts at the last position 0; a branch (a
 * position that does not continue the one before) sees the document's
 * first pos[branch start] tokens and itself. */
static int attn_sees(const int *pb, int t, int j) {
    int d = t, s = t;
    while (pb[d] != 0) d--;
    while (s > d && pb[s - 1] == pb[s] - 1) s--;
    if (j > t || j < d) return 0;
    return s == d || j >= s || j < d + pb[s];
}

/* Direct softmax attention in double for one query row (the definition). */
static void attn_naive(const AttnCase *c, int b, int h, int t, double *o) {
    int G = c->H / c->KV, kh = h / G, lo = 0;
    const int *pb = c->pos + (size_t)b * c->T;
    const float *q = c->q + ((size_t)(b * c->T + t) * c->H + h) * c->HS;
    double mx = -1e300, w[512], sum = 0;
    for (int j = lo; j <= t; j++) {
        w[j] = -1e300;
        if (!attn_sees(pb, t, j)) continue;
        const float *kk = c->k + ((size_t)(b * c->T + j) * c->KV + kh) * c->HS;
        double s = 0;
        for (int d = 0; d < c->HS; d++) s += (double)q[d] * kk[d];
        w[j] = s / sqrt((double)c->HS);
        if (w[j] > mx) mx = w[j];
    }
    for (int j = lo; j <= t; j++) sum += (w[j] = attn_sees(pb, t, j) ? exp(w[j] - mx) : 0.0);
    for (int d = 0; d < c->HS; d++) o[d] = 0;
    for (int j = lo; j <= t; j++) {
        const float *vv = c->v + ((size_t)(b * c->T + j) * c->KV + kh) * c->HS;
        for (int d = 0; d < c->HS; d++) o[d] += w[j] / sum * vv[d];
    }
}

/* Documents of random lengths when docs, else one causal row; with docs 2
 * some documents branch: a prompt, then completions that each continue
 * its first p tokens (the prefix-shared packing); docs 3: long branches,
 * whose holes cover whole key tiles and blocks (a 5-token prompt,
 * branches of 70 and 90 from it and of 40 from its third token), then
 * documents of 37. */
static void attn_positions(Rng *r, int *pos, int B, int T, int docs) {
    static const int start[] = {0, 5, 75, 165, 205}, from[] = {0, 5, 5, 3};
    for (int b = 0; b < B && docs == 3; b++)
        for (int t = 0, i = 0; t < T; t++) {
            while (i < 4 && t >= start[i + 1]) i++;
            pos[b * T + t] = i < 4 ? from[i] + t - start[i] : (t - 205) % 37;
        }
    for (int b = 0; b < B && docs < 3; b++) {
        int p = 0, trunk = 0, branched = 0;
        for (int t = 0; t < T; t++) {
            if (docs && t > 0 && rng_uniform(r) < 0.08f) p = 0, trunk = 0, branched = 0;
            else if (docs == 2 && trunk > 2 && rng_uniform(r) < 0.15f) {
                p = 1 + (int)(rng_uniform(r) * (float)trunk) % trunk;
                branched = 1;
            }
            if (!branched) trunk++;
            pos[b * T + t] = p++;
        }
    }
}

static void attn_case(Rng *r, int B, int T, int H, int KV, int HS, int docs, const char *tag) {
    AttnCase c = {B, T, H, KV, HS, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    size_t nq = (size_t)B * T * H * HS, nk = (size_t)B * T * KV * HS;
    c.pos = xmalloc((size_t)B * T * sizeof(int));
    attn_positions(r, c.pos, B, T, docs);
    c.spans = spans_of(c.pos, B, T);
    if (docs >= 2) { /* the positions branch, and attn_spans takes them */
        int branches = 0, *sp = xmalloc((size_t)T * 3 * sizeof(int));
        for (int b = 0; b < B; b++) {
            EXPECT(attn_spans(c.pos + (size_t)b * T, T, sp) < 0, "%s: attn_spans refuses a valid tree", tag);
            for (int t = 0; t < T; t++) branches += sp[3 * t + 1] < sp[3 * t + 2];
        }
        EXPECT(branches > T / 4, "%s: only %d queries in branches", tag, branches);
        free(sp);
    }
    c.q = NEW(nq); c.k = NEW(nk); c.v = NEW(nk); c.out = NEW(nq); c.r = NEW(nq);
    c.lse = NEW((size_t)B * H * T);
    c.scratch = NEW(O->scratch_floats(NULL, B, T, H, HS, 2, 2));
    gc_randn(r, c.q, nq, 1); gc_randn(r, c.k, nk, 1); gc_randn(r, c.v, nk, 1); gc_randn(r, c.r, nq, 1);
    attn_f(&c);
    /* forward against the definition, every row */
    double o[64], maxerr = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                attn_naive(&c, b, h, t, o);
                for (int d = 0; d < HS; d++)
                    maxerr = fmax(maxerr, fabs(o[d] - c.out[((size_t)(b * T + t) * H + h) * HS + d]));
            }
    EXPECT(maxerr < 1e-5, "%s: forward differs from the definition by %g", tag, maxerr);
    float *dq = NEW(nq), *dk = NEW(nk), *dv = NEW(nk);
    for (size_t i = 0; i < nk; i++) dk[i] = dv[i] = 7.0f; /* must be overwritten */
    O->attn_bwd(NULL, dq, dk, dv, c.r, c.out, c.lse, c.q, c.k, c.v, c.spans, c.scratch, B, T, H, KV, HS);
    char name[64];
    snprintf(name, sizeof name, "%s.dq", tag); check(name, attn_f, &c, c.q, dq, nq, r);
    snprintf(name, sizeof name, "%s.dk", tag); check(name, attn_f, &c, c.k, dk, nk, r);
    snprintf(name, sizeof name, "%s.dv", tag); check(name, attn_f, &c, c.v, dv, nk, r);
    free(c.pos); free(c.spans); free(c.q); free(c.k); free(c.v); free(c.out); free(c.r); free(c.lse); free(c.scratch);
    free(dq); free(dk); free(dv);
}

static void case_attn(Rng *r) {
    attn_case(r, 2, 23, 3, 3, 6, 0, "attn.mha");
    attn_case(r, 2, 29, 4, 2, 8, 1, "attn.gqa_docs");
    attn_case(r, 1, 17, 4, 1, 4, 1, "attn.mqa_docs");
    attn_case(r, 2, 41, 4, 2, 8, 2, "attn.gqa_tree");
}

/* The decode op against attn_fwd's last row: same keys, GQA. */
static void case_attn_decode(Rng *r) {
    int T = 37, H = 6, KV = 2, HS = 10;
    AttnCase c = {1, T, H, KV, HS, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    size_t nq = (size_t)T * H * HS, nk = (size_t)T * KV * HS;
    c.pos = xmalloc(T * sizeof(int));
    for (int t = 0; t < T; t++) c.pos[t] = t;
    c.spans = spans_of(c.pos, 1, T);
    c.q = NEW(nq); c.k = NEW(nk); c.v = NEW(nk); c.out = NEW(nq); c.r = NEW(nq); c.lse = NEW(H * T);
    c.scratch = NEW(O->scratch_floats(NULL, 1, T, H, HS, 2, 2));
    gc_randn(r, c.q, nq, 1); gc_randn(r, c.k, nk, 1); gc_randn(r, c.v, nk, 1);
    attn_f(&c);
    float out[64];
    for (int S = 1; S <= T; S += 9) {
        O->attn_decode(NULL, out, c.q + (size_t)(S - 1) * H * HS, c.k, c.v, c.scratch, S, H, KV, HS);
        double d = 0;
        for (int i = 0; i < H * HS; i++) d = fmax(d, fabs(out[i] - c.out[(size_t)(S - 1) * H * HS + i]));
        EXPECT(d < 1e-5, "attn_decode at S=%d differs from attn_fwd by %g", S, d);
    }
    free(c.pos); free(c.spans); free(c.q); free(c.k); free(c.v); free(c.out); free(c.r); free(c.lse); free(c.scratch);
}

// ----------------------------------------------------------------------------
// SwiGLU

typedef struct { size_t n; float *g, *u, *out, *r; } SwiCase;

static double swi_f(void *ud) {
    SwiCase *c = ud;
    O->swiglu_fwd(NULL, c->out, c->g, c->u, c->n);
    return gc_project(c->out, c->r, c->n);
}

static void case_swiglu(Rng *r) {
    SwiCase c = {101, 0, 0, 0, 0};
    c.g = NEW(c.n); c.u = NEW(c.n); c.out = NEW(c.n); c.r = NEW(c.n);
    gc_randn(r, c.g, c.n, 2); gc_randn(r, c.u, c.n, 1); gc_randn(r, c.r, c.n, 1);
    float *dg = NEW(c.n), *du = NEW(c.n);
    O->swiglu_bwd(NULL, dg, du, c.r, c.g, c.u, c.n);
    check("swiglu.dg", swi_f, &c, c.g, dg, c.n, r);
    check("swiglu.du", swi_f, &c, c.u, du, c.n, r);
    free(c.g); free(c.u); free(c.out); free(c.r); free(dg); free(du);
}

// ----------------------------------------------------------------------------
// LM head + cross-entropy

typedef struct { int N, D, V; int *tgt; float *x, *w, *scratch, *rowl; float scale; } CeCase;

static double ce_f(void *ud) {
    CeCase *c = ud;
    return c->scale * O->lmhead_ce(NULL, NULL, NULL, c->rowl, c->x, c->w, c->tgt, c->scratch, c->N, c->D, c->V, 0);
}

static void case_lmhead(Rng *r) {
    CeCase c = {9, 13, 37, 0, 0, 0, 0, 0, 0};
    c.tgt = xmalloc(c.N * sizeof(int));
    int nt = 0;
    for (int i = 0; i < c.N; i++) {
        c.tgt[i] = (i % 4 == 1) ? LC_IGNORE : (int)(rng_u64(r) % c.V);
        nt += c.tgt[i] != LC_IGNORE;
    }
    c.scale = 1.0f / nt;
    c.x = NEW(c.N * c.D); c.w = NEW(c.V * c.D); c.rowl = NEW(c.N);
    c.scratch = NEW(O->scratch_floats(NULL, 1, c.N, 1, 2, c.V, c.D));
    gc_randn(r, c.x, c.N * c.D, 1); gc_randn(r, c.w, c.V * c.D, 0.5f);
    float *dx = NEW(c.N * c.D), *dw = NEW(c.V * c.D);
    for (int i = 0; i < c.V * c.D; i++) dw[i] = 1.0f;
    double loss = O->lmhead_ce(NULL, dx, dw, c.rowl, c.x, c.w, c.tgt, c.scratch, c.N, c.D, c.V, c.scale);
    for (int i = 0; i < c.V * c.D; i++) dw[i] -= 1.0f;
    /* loss against log-softmax computed directly in double */
    double ref = 0, rowsum = 0;
    for (int n = 0; n < c.N; n++) {
        rowsum += c.rowl[n];
        if (c.tgt[n] == LC_IGNORE) { EXPECT(c.rowl[n] == 0, "ignored row %d has loss", n); continue; }
        double l[64], mx = -1e300, s = 0;
        for (int v = 0; v < c.V; v++) {
            l[v] = 0;
            for (int d = 0; d < c.D; d++) l[v] += (double)c.x[n * c.D + d] * c.w[v * c.D + d];
            mx = fmax(mx, l[v]);
        }
        for (int v = 0; v < c.V; v++) s += exp(l[v] - mx);
        ref += mx + log(s) - l[c.tgt[n]];
    }
    EXPECT_NEAR(loss, ref, 1e-4 * fabs(ref));
    EXPECT_NEAR(rowsum, loss, 1e-4 * fabs(ref));
    check("lmhead_ce.dx", ce_f, &c, c.x, dx, c.N * c.D, r);
    check("lmhead_ce.dw", ce_f, &c, c.w, dw, c.V * c.D, r);
    free(c.tgt); free(c.x); free(c.w); free(c.rowl); free(c.scratch); free(dx); free(dw);
}

/* A batch of mostly ignored rows (RL's and completion-only SFT's prompt
 * rows, to which lmhead makes no logits): lmhead_rows, or qlmhead on type
 * *qt (NULL: the float head), against the same op on the trained rows alone
 * (a dense batch: lmhead's path before it skipped rows) within SPARSE_TOL,
 * and against the head in double within REF_TOL; ignored rows must get
 * exactly 0. 12000 rows: the first 1100 trained (a contiguous chunk of 1024
 * read in place), then 2.5% of the rest, scattered (gathered chunks): 88%
 * ignored. Errors are relative to each tensor's largest value. */
#define SPARSE_TOL 1e-6 /* the same float32 arithmetic: rounding (dW's order) at most */
#define REF_TOL 2e-5    /* float32 against double: up to 7e-6 measured (Q5_K's dx) */

static double rel_diff(const float *a, const float *b, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst / (scale > 0 ? scale : 1);
}

static double ref_err(const float *a, const double *ref, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - ref[i]));
    return worst / (scale > 0 ? scale : 1);
}

static double head_call(const uint32_t *qt, float *dx, float *dw, float *rl, float *rm, const float *x, const float *w,
                        const QTensor *q, const int *tgt, const float *rs, float *scratch, float *work, int N, int D,
                        int V) {
    return qt ? O->qlmhead(NULL, dx, rl, rm, x, q, tgt, rs, 0.0f, scratch, work, N)
              : O->lmhead_rows(NULL, dx, dw, rl, rm, x, w, tgt, rs, scratch, N, D, V);
}

static void lmhead_sparse(Rng *r, const uint32_t *qt) {
    int N = 12000, D = qt ? quant_block(*qt) : 24, V = 40, nt = 0, ok = 1;
    QTensor q;
    uint8_t *qd = qt ? test_qtensor_rand(r, *qt, V, D, &q) : NULL;
    float *x = NEW((size_t)N * D), *w = NEW((size_t)V * D), *rs = NEW(N), *dx = NEW((size_t)N * D);
    float *dw = NEW((size_t)V * D), *rl = NEW(N), *rm = NEW(N), *work = qt ? NEW(O->qwork_floats(NULL, D)) : NULL;
    float *scratch = NEW(O->scratch_floats(NULL, 1, N, 1, 2, V, D));
    /* the trained rows alone (suffix c), and the double reference (_ref) */
    float *xc = NEW((size_t)N * D), *rsc = NEW(N), *dxc = NEW((size_t)N * D), *dwc = NEW((size_t)V * D);
    float *rlc = NEW(N), *rmc = NEW(N);
    double *dx_ref = xcalloc((size_t)N * D, sizeof(double)), *dw_ref = xcalloc((size_t)V * D, sizeof(double));
    double *rl_ref = xcalloc(N, sizeof(double)), *rm_ref = xcalloc(N, sizeof(double)), loss_ref = 0;
    int *tgt = xmalloc(N * sizeof(int)), *tgtc = xmalloc(N * sizeof(int)), *idx = xmalloc(N * sizeof(int));
    gc_randn(r, x, (size_t)N * D, 1); gc_randn(r, rs, N, 1);
    if (qt)
        quant_rows(&q, 0, V, w);
    else
        gc_randn(r, w, (size_t)V * D, 0.5f);
    for (int n = 0; n < N; n++) {
        int keep = n < 1100 || rng_u64(r) % 1000 < 25;
        tgt[n] = keep ? (int)(rng_u64(r) % V) : LC_IGNORE;
        if (!keep) continue;
        memcpy(xc + (size_t)nt * D, x + (size_t)n * D, D * sizeof(float));
        rsc[nt] = rs[n], tgtc[nt] = tgt[n], idx[nt++] = n;
    }
    for (size_t i = 0; i < (size_t)N * D; i++) dx[i] = NAN; /* every row written, ignored ones 0 */
    for (int n = 0; n < N; n++) rl[n] = rm[n] = NAN;
    for (size_t i = 0; i < (size_t)V * D; i++) dw[i] = dwc[i] = 0.5f, dw_ref[i] = 0.5; /* dw accumulates */
    for (int n = 0; n < N; n++) {
        if (tgt[n] == LC_IGNORE) continue;
        double l[40], mx = -1e300, s = 0, m = 0;
        for (int v = 0; v < V; v++) {
            l[v] = 0;
            for (int d = 0; d < D; d++) l[v] += (double)x[(size_t)n * D + d] * w[v * D + d];
            mx = fmax(mx, l[v]);
            m += l[v];
        }
        for (int v = 0; v < V; v++) s += exp(l[v] - mx);
        rl_ref[n] = mx + log(s) - l[tgt[n]];
        rm_ref[n] = m / V;
        loss_ref += rl_ref[n];
        for (int v = 0; v < V; v++) {
            double g = rs[n] * (exp(l[v] - mx) / s - (v == tgt[n]));
            for (int d = 0; d < D; d++) {
                dx_ref[(size_t)n * D + d] += g * w[v * D + d];
                dw_ref[v * D + d] += g * x[(size_t)n * D + d];
            }
        }
    }
    double loss = head_call(qt, dx, dw, rl, rm, x, w, &q, tgt, rs, scratch, work, N, D, V);
    double lc = head_call(qt, dxc, dwc, rlc, rmc, xc, w, &q, tgtc, rsc, scratch, work, nt, D, V);
    const char *name = qt ? quant_name(*qt) : "f32";
    /* ignored rows exactly 0; trained ones as the dense batch's */
    double es = 0, dxmax = 0;
    for (size_t i = 0; i < (size_t)nt * D; i++) dxmax = fmax(dxmax, fabs(dxc[i]));
    for (int n = 0, k = 0; n < N; n++) {
        if (k < nt && idx[k] == n) {
            es = fmax(es, fabs(rl[n] - rlc[k]) / fabs(rlc[k]));
            es = fmax(es, fabs(rm[n] - rmc[k]) / fmax(fabs(rmc[k]), 1e-30));
            for (int d = 0; d < D; d++) es = fmax(es, fabs(dx[(size_t)n * D + d] - dxc[(size_t)k * D + d]) / dxmax);
            k++;
            continue;
        }
        ok &= rl[n] == 0 && rm[n] == 0;
        for (int d = 0; d < D; d++) ok &= dx[(size_t)n * D + d] == 0;
    }
    es = fmax(es, qt ? 0 : rel_diff(dw, dwc, (size_t)V * D));
    EXPECT(ok, "%s: an ignored row's loss, mean or dx is not 0", name);
    EXPECT(fabs(loss - lc) <= SPARSE_TOL * lc && es <= SPARSE_TOL,
           "%s, %d of %d rows: loss %.9g, dense %.9g; rows or dw differ by %.2e", name, nt, N, loss, lc, es);
    double e[5] = {fabs(loss - loss_ref) / loss_ref, ref_err(rl, rl_ref, N), ref_err(rm, rm_ref, N),
                   ref_err(dx, dx_ref, (size_t)N * D), qt ? 0 : ref_err(dw, dw_ref, (size_t)V * D)};
    EXPECT(e[0] <= REF_TOL && e[1] <= REF_TOL && e[2] <= REF_TOL && e[3] <= REF_TOL && e[4] <= REF_TOL,
           "%s against double: loss %.2e, row loss %.2e, row mean %.2e, dx %.2e, dw %.2e", name, e[0], e[1], e[2],
           e[3], e[4]);
    if (getenv("LLAMAC_TEST_VERBOSE"))
        printf("    lmhead sparse %-5s %d of %d rows: vs dense %.1e; vs double: loss %.1e rows %.1e means %.1e dx %.1e "
               "dw %.1e\n", name, nt, N, fmax(fabs(loss - lc) / lc, es), e[0], e[1], e[2], e[3], e[4]);
    free(qd); free(x); free(w); free(rs); free(dx); free(dw); free(rl); free(rm); free(work); free(scratch);
    free(xc); free(rsc); free(dxc); free(dwc); free(rlc); free(rmc);
    free(dx_ref); free(dw_ref); free(rl_ref); free(rm_ref); free(tgt); free(tgtc); free(idx);
}

/* lmhead_rows: f = sum_n row_scale[n] * row_loss[n], whose gradient is the
 * op's weighted backward; row_mean against the logits in double */
typedef struct { CeCase ce; float *rs, *mean; } RowsCase;

static double rows_f(void *ud) {
    RowsCase *c = ud;
    O->lmhead_rows(NULL, NULL, NULL, c->ce.rowl, NULL, c->ce.x, c->ce.w, c->ce.tgt, NULL, c->ce.scratch, c->ce.N,
                   c->ce.D, c->ce.V);
    double f = 0;
    for (int n = 0; n < c->ce.N; n++) f += (double)c->rs[n] * c->ce.rowl[n];
    return f;
}

static void case_lmhead_rows(Rng *r) {
    RowsCase c = {{11, 13, 37, 0, 0, 0, 0, 0, 0}, 0, 0};
    CeCase *e = &c.ce;
    e->tgt = xmalloc(e->N * sizeof(int));
    for (int i = 0; i < e->N; i++) e->tgt[i] = (i % 3 == 2) ? LC_IGNORE : (int)(rng_u64(r) % e->V);
    e->x = NEW(e->N * e->D); e->w = NEW(e->V * e->D); e->rowl = NEW(e->N);
    e->scratch = NEW(O->scratch_floats(NULL, 1, e->N, 1, 2, e->V, e->D));
    c.rs = NEW(e->N); c.mean = NEW(e->N);
    gc_randn(r, e->x, e->N * e->D, 1); gc_randn(r, e->w, e->V * e->D, 0.5f); gc_randn(r, c.rs, e->N, 1);
    float *dx = NEW(e->N * e->D), *dw = NEW(e->V * e->D), *rl = NEW(e->N);
    for (int i = 0; i < e->V * e->D; i++) dw[i] = 1.0f;
    double loss = O->lmhead_rows(NULL, dx, dw, e->rowl, c.mean, e->x, e->w, e->tgt, c.rs, e->scratch, e->N, e->D, e->V);
    for (int i = 0; i < e->V * e->D; i++) dw[i] -= 1.0f;
    /* the same sum and row losses as lmhead_ce */
    double ce = O->lmhead_ce(NULL, NULL, NULL, rl, e->x, e->w, e->tgt, e->scratch, e->N, e->D, e->V, 0);
    EXPECT(loss == ce, "lmhead_rows sum %.9g vs lmhead_ce %.9g", loss, ce);
    for (int n = 0; n < e->N; n++) {
        EXPECT(rl[n] == e->rowl[n], "row %d: loss %g vs lmhead_ce %g", n, e->rowl[n], rl[n]);
        double m = 0;
        for (int v = 0; v < e->V; v++)
            for (int d = 0; d < e->D; d++) m += (double)e->x[n * e->D + d] * e->w[v * e->D + d];
        m = e->tgt[n] == LC_IGNORE ? 0 : m / e->V;
        EXPECT_NEAR(c.mean[n], m, 1e-5 * (1 + fabs(m)));
    }
    check("lmhead_rows.dx", rows_f, &c, e->x, dx, e->N * e->D, r);
    check("lmhead_rows.dw", rows_f, &c, e->w, dw, e->V * e->D, r);
    free(e->tgt); free(e->x); free(e->w); free(e->rowl); free(e->scratch); free(dx); free(dw); free(rl);
    free(c.rs); free(c.mean);
    lmhead_sparse(r, NULL);
}

// ----------------------------------------------------------------------------
// vector ops and AdamW (exact formulas; the gradient is the identity)

static void case_add(Rng *r) {
    float y[37], x[37], y0[37];
    gc_randn(r, y, 37, 1); gc_randn(r, x, 37, 1);
    memcpy(y0, y, sizeof y);
    O->add(NULL, y, x, 37);
    for (int i = 0; i < 37; i++) EXPECT(y[i] == y0[i] + x[i], "add at %d", i);
}

static void case_sumsq(Rng *r) {
    size_t n = 100003; /* more than one 4096 block, odd tail */
    float *x = NEW(n);
    gc_randn(r, x, n, 1);
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    EXPECT_NEAR(O->sumsq(NULL, x, n), ref, 1e-9 * ref);
    free(x);
}

static void case_scale(Rng *r) {
    float x[19], x0[19];
    gc_randn(r, x, 19, 1);
    memcpy(x0, x, sizeof x);
    O->scale(NULL, x, 0.37f, 19);
    for (int i = 0; i < 19; i++) EXPECT(x[i] == x0[i] * 0.37f, "scale at %d", i);
}

static void case_adamw(Rng *r) {
    enum { n = 29 };
    float p[n], g[n], m[n], v[n];
    double pd[n], md[n], vd[n];
    gc_randn(r, p, n, 1); gc_randn(r, g, n, 1);
    memset(m, 0, sizeof m); memset(v, 0, sizeof v);
    for (int i = 0; i < n; i++) pd[i] = p[i], md[i] = vd[i] = 0;
    double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-5, wd = 0.1, gs = 0.5;
    for (int t = 1; t <= 3; t++) {
        O->adamw(NULL, p, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, t, (float)gs);
        for (int i = 0; i < n; i++) {
            double gi = g[i] * gs;
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            double mh = md[i] / (1 - pow(b1, t)), vh = vd[i] / (1 - pow(b2, t));
            pd[i] = pd[i] * (1 - lr * wd) - lr * mh / (sqrt(vh) + eps);
        }
    }
    for (int i = 0; i < n; i++) EXPECT_NEAR(p[i], pd[i], 2e-6 * (1 + fabs(pd[i])));
}

// ----------------------------------------------------------------------------
// LoRA side path: y += s * dropout(x) A^T B^T, dropout with a fixed seed (the
// mask is a function of the seed, so f is smooth in x, A and B)

typedef struct { int N, I, Oo, R; float s, p; float *x, *A, *B, *y0, *y, *h, *work, *r; } LoraCase;

static double lora_f(void *ud) {
    LoraCase *c = ud;
    memcpy(c->y, c->y0, (size_t)c->N * c->Oo * sizeof(float)); /* y += : start from y0 */
    O->lora_fwd(NULL, c->y, c->h, c->x, c->A, c->B, c->work, c->N, c->I, c->Oo, c->R, c->s, c->p, 99, 3, 5);
    return gc_project(c->y, c->r, (size_t)c->N * c->Oo);
}

static void lora_case(Rng *r, int N, int I, int Oo, int R, float s, float p, const char *tag) {
    LoraCase c = {N, I, Oo, R, s, p, 0, 0, 0, 0, 0, 0, 0, 0};
    size_t nx = (size_t)N * I, ny = (size_t)N * Oo, na = (size_t)R * I, nb = (size_t)Oo * R;
    c.x = NEW(nx); c.A = NEW(na); c.B = NEW(nb); c.y0 = NEW(ny); c.y = NEW(ny); c.h = NEW((size_t)N * R);
    c.r = NEW(ny); c.work = NEW(ops_lora_work_floats(N, I, Oo, R, p));
    gc_randn(r, c.x, nx, 1); gc_randn(r, c.A, na, 0.5f); gc_randn(r, c.B, nb, 0.5f);
    gc_randn(r, c.y0, ny, 1); gc_randn(r, c.r, ny, 1);
    lora_f(&c);
    /* forward against the definition in double, with the mask from lora_keep */
    double maxerr = 0;
    int dropped = 0;
    for (int n = 0; n < N; n++) {
        double hh[16];
        for (int k = 0; k < R; k++) {
            hh[k] = 0;
            for (int i = 0; i < I; i++) {
                size_t ix = (size_t)n * I + i;
                int keep = p == 0 || lora_keep(99, 3, 5, ix, p);
                dropped += !keep && k == 0;
                hh[k] += keep ? (double)c.x[ix] / (1 - p) * c.A[k * I + i] : 0;
            }
            maxerr = fmax(maxerr, fabs(hh[k] - c.h[n * R + k]));
        }
        for (int o = 0; o < Oo; o++) {
            double v = c.y0[n * Oo + o];
            for (int k = 0; k < R; k++) v += s * hh[k] * c.B[o * R + k];
            maxerr = fmax(maxerr, fabs(v - c.y[n * Oo + o]));
        }
    }
    EXPECT(maxerr < 1e-4, "%s: forward differs from the definition by %g", tag, maxerr);
    EXPECT(p == 0 ? dropped == 0 : dropped > 0, "%s: %d inputs dropped", tag, dropped);
    float *dx = NEW(nx), *dA = NEW(na), *dB = NEW(nb);
    for (size_t i = 0; i < nx; i++) dx[i] = 1.0f; /* all three accumulate */
    for (size_t i = 0; i < na; i++) dA[i] = 2.0f;
    for (size_t i = 0; i < nb; i++) dB[i] = 3.0f;
    O->lora_bwd(NULL, dx, dA, dB, c.r, c.x, c.h, c.A, c.B, c.work, N, I, Oo, R, s, p, 99, 3, 5);
    for (size_t i = 0; i < nx; i++) dx[i] -= 1.0f;
    for (size_t i = 0; i < na; i++) dA[i] -= 2.0f;
    for (size_t i = 0; i < nb; i++) dB[i] -= 3.0f;
    char name[64];
    snprintf(name, sizeof name, "%s.dx", tag); check(name, lora_f, &c, c.x, dx, nx, r);
    snprintf(name, sizeof name, "%s.dA", tag); check(name, lora_f, &c, c.A, dA, na, r);
    snprintf(name, sizeof name, "%s.dB", tag); check(name, lora_f, &c, c.B, dB, nb, r);
    /* NULL outputs are skipped; dx alone gives the same dx */
    float *dx2 = NEW(nx);
    O->lora_bwd(NULL, dx2, NULL, NULL, c.r, c.x, c.h, c.A, c.B, c.work, N, I, Oo, R, s, p, 99, 3, 5);
    double d = 0;
    for (size_t i = 0; i < nx; i++) d = fmax(d, fabs(dx2[i] - dx[i]));
    EXPECT(d < 1e-5, "%s: dx without dA/dB differs by %g", tag, d);
    free(c.x); free(c.A); free(c.B); free(c.y0); free(c.y); free(c.h); free(c.r); free(c.work);
    free(dx); free(dA); free(dB); free(dx2);
}

static void case_lora(Rng *r) {
    lora_case(r, 9, 13, 11, 3, 2.0f, 0.0f, "lora");
    lora_case(r, 7, 17, 6, 4, 0.7f, 0.3f, "lora.dropout");
    lora_case(r, 5, 8, 19, 1, 1.5f, 0.5f, "lora.r1");
    /* more rows than one OPS_LORA_CHUNK: chunked products and partial sums */
    lora_case(r, 2 * OPS_LORA_CHUNK + 37, 10, 7, 3, 1.0f, 0.2f, "lora.chunks");
    lora_case(r, OPS_LORA_CHUNK + 1, 6, 9, 2, 0.5f, 0.0f, "lora.chunks_p0");
}

// ----------------------------------------------------------------------------
// the sampling engine's ops: inference only (no backward to check by finite
// differences), so each is checked against its definition in double and for
// batch invariance: a row computed among others gives the same bits as alone

static void matmul_rows_case(Rng *r, int N, int Din, int Dout, const char *tag) {
    size_t nx = (size_t)N * Din, nw = (size_t)Dout * Din, no = (size_t)N * Dout;
    float *x = NEW(nx), *w = NEW(nw), *out = NEW(no), *one = NEW(Dout), *acc = NEW(no);
    gc_randn(r, x, nx, 1); gc_randn(r, w, nw, 1); gc_randn(r, acc, no, 1);
    float *wp = NEW(O->rows_pack_floats(NULL, Din, Dout));
    O->rows_pack(NULL, wp, w, Din, Dout);
    O->matmul_rows(NULL, out, x, wp, N, Din, Dout, 0.0f);
    double maxerr = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Dout; o++) {
            double d = 0;
            for (int i = 0; i < Din; i++) d += (double)x[(size_t)n * Din + i] * w[(size_t)o * Din + i];
            maxerr = fmax(maxerr, fabs(d - out[(size_t)n * Dout + o]) / (1 + fabs(d)));
        }
    EXPECT(maxerr < 1e-5, "%s: differs from the definition by %g", tag, maxerr);
    /* bit for bit the one fused multiply-add chain over k, on every CPU path */
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Dout; o++) {
            float c = 0.0f;
            for (int i = 0; i < Din; i++) c = fmaf(x[(size_t)n * Din + i], w[(size_t)o * Din + i], c);
            bad += memcmp(&c, out + (size_t)n * Dout + o, sizeof c) != 0;
        }
    EXPECT(bad == 0, "%s: %d outputs differ from the fmaf chain", tag, bad);
    bad = 0;
    for (int n = 0; n < N; n += N > 3 ? N / 3 : 1) {
        O->matmul_rows(NULL, one, x + (size_t)n * Din, wp, 1, Din, Dout, 0.0f);
        bad += memcmp(one, out + (size_t)n * Dout, (size_t)Dout * sizeof(float)) != 0;
    }
    EXPECT(bad == 0, "%s: %d rows differ from the same row run alone", tag, bad);
    /* add: out += s * (x w^T) */
    float *acc0 = NEW(no);
    memcpy(acc0, acc, no * sizeof(float));
    O->matmul_rows(NULL, acc, x, wp, N, Din, Dout, 0.5f);
    double d = 0;
    for (size_t i = 0; i < no; i++) d = fmax(d, fabs(acc[i] - (acc0[i] + 0.5f * out[i])));
    EXPECT(d < 1e-6, "%s: add differs by %g", tag, d);
    free(x); free(w); free(wp); free(out); free(one); free(acc); free(acc0);
}

static void case_matmul_rows(Rng *r) {
    matmul_rows_case(r, 1, 64, 37, "matmul_rows.N1");
    matmul_rows_case(r, 7, 37, 19, "matmul_rows.tail");     /* Dout not a multiple of the panel */
    matmul_rows_case(r, 600, 96, 45, "matmul_rows.blocks"); /* more rows than one block */
    matmul_rows_case(r, 3, 5, 3, "matmul_rows.tiny");
}

/* Attention over paged pools against the definition in double: n_seq
 * sequences of different lengths whose pages are interleaved in the pool,
 * every position of each as one row. */
static void attn_paged_case(Rng *r, int HS) {
    int H = 6, KV = 2, P = 4, G = H / KV, KVD = KV * HS;
    enum { NSEQ = 3 };
    int lens[NSEQ] = {1, 9, 37}, maxp = 10, npages = 0;
    for (int s = 0; s < NSEQ; s++) npages += (lens[s] + P - 1) / P;
    int *ptab = xmalloc((size_t)NSEQ * maxp * sizeof(int));
    for (int i = 0; i < NSEQ * maxp; i++) ptab[i] = -1;
    /* pages handed out round-robin from the end of the pool */
    for (int p = 0, next = npages - 1; p < maxp; p++)
        for (int s = 0; s < NSEQ; s++)
            if (p * P < lens[s]) ptab[s * maxp + p] = next--;
    float *k = NEW((size_t)npages * P * KVD), *v = NEW((size_t)npages * P * KVD);
    gc_randn(r, k, (size_t)npages * P * KVD, 1); gc_randn(r, v, (size_t)npages * P * KVD, 1);
    int N = 0;
    for (int s = 0; s < NSEQ; s++) N += lens[s];
    int *slot = xmalloc(N * sizeof(int)), *len = xmalloc(N * sizeof(int));
    for (int s = 0, n = 0; s < NSEQ; s++)
        for (int t = 0; t < lens[s]; t++, n++) { slot[n] = s; len[n] = t + 1; }
    float *q = NEW((size_t)N * H * HS), *out = NEW((size_t)N * H * HS), *one = NEW(H * HS);
    gc_randn(r, q, (size_t)N * H * HS, 1);
    O->attn_paged(NULL, out, q, k, v, ptab, slot, len, N, H, KV, HS, P, maxp);
    double maxerr = 0;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((size_t)n * H + h) * HS;
            double sc[64], mx = -1e300, sum = 0;
            for (int j = 0; j < len[n]; j++) {
                const float *kr = k + ((size_t)ptab[slot[n] * maxp + j / P] * P + j % P) * KVD + (h / G) * HS;
                double d = 0;
                for (int c = 0; c < HS; c++) d += (double)qh[c] * kr[c];
                sc[j] = d / sqrt((double)HS);
                mx = fmax(mx, sc[j]);
            }
            for (int j = 0; j < len[n]; j++) sum += exp(sc[j] - mx);
            for (int c = 0; c < HS; c++) {
                double o = 0;
                for (int j = 0; j < len[n]; j++)
                    o += exp(sc[j] - mx) / sum *
                         v[((size_t)ptab[slot[n] * maxp + j / P] * P + j % P) * KVD + (h / G) * HS + c];
                maxerr = fmax(maxerr, fabs(o - out[((size_t)n * H + h) * HS + c]));
            }
        }
    EXPECT(maxerr < 1e-5, "attn_paged HS=%d: differs from the definition by %g", HS, maxerr);
    int bad = 0;
    for (int n = 0; n < N; n++) {
        O->attn_paged(NULL, one, q + (size_t)n * H * HS, k, v, ptab, slot + n, len + n, 1, H, KV, HS, P, maxp);
        bad += memcmp(one, out + (size_t)n * H * HS, (size_t)H * HS * sizeof(float)) != 0;
    }
    EXPECT(bad == 0, "attn_paged HS=%d: %d of %d rows differ from the same row run alone", HS, bad, N);
    free(ptab); free(k); free(v); free(slot); free(len); free(q); free(out); free(one);
}

static void case_attn_paged(Rng *r) {
    attn_paged_case(r, 12); /* the portable path */
    attn_paged_case(r, 64); /* HS % 8 == 0: the AVX2 path where the CPU has it */
}

static void case_rows(Rng *r) {
    int N = 5, W = 7, M = 11;
    int idx[5] = {9, 0, 4, 10, 2};
    float *src = NEW(N * W), *pool = NEW(M * W), *back = NEW(N * W);
    gc_randn(r, src, N * W, 1);
    O->rows_scatter(NULL, pool, src, idx, N, W);
    O->rows_gather(NULL, back, pool, idx, N, W);
    EXPECT(memcmp(src, back, (size_t)N * W * sizeof(float)) == 0, "rows: gather(scatter(x)) != x");
    EXPECT(pool[1 * W] == 0 && pool[9 * W] == src[0], "rows: scatter wrote the wrong rows");
    free(src); free(pool); free(back);
}

// ----------------------------------------------------------------------------
// quantised weights: each q op against the float op on the dequantised
// matrix (those are checked by finite differences above), for every type a
// weight can stay in, with tiles that end inside the matrix

const uint32_t test_qtypes[TEST_NQTYPES] = {QUANT_Q8_0, QUANT_Q4_0, QUANT_Q4_1, QUANT_Q5_0, QUANT_Q5_1,
                                            QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K, QUANT_NF4};

static void put_half(uint8_t *p, float f) {
    uint16_t h = quant_float_to_half(f);
    memcpy(p, &h, 2);
}

uint8_t *test_qtensor_rand(Rng *r, uint32_t type, int rows, int cols, QTensor *q) {
    size_t bytes = quant_bytes(type, rows, cols), bb = quant_block_bytes(type);
    uint8_t *d = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++) d[i] = (uint8_t)rng_u64(r);
    size_t nb = (size_t)rows * cols / quant_block(type);
    for (size_t b = 0; b < nb; b++) {
        uint8_t *k = d + b * bb;
        float s = 0.01f + 0.04f * rng_uniform(r), m = 0.2f * (rng_uniform(r) - 0.5f);
        switch (type) {
        case QUANT_Q4_1: case QUANT_Q5_1: put_half(k, s), put_half(k + 2, m); break;
        case QUANT_Q4_K: case QUANT_Q5_K: put_half(k, s * 0.1f), put_half(k + 2, fabsf(m) * 0.05f); break;
        case QUANT_Q6_K: put_half(k + 208, s * 0.02f); break;
        case QUANT_NF4: break;
        default: put_half(k, s);
        }
    }
    if (type == QUANT_NF4) { /* {offset, absmax2[...]} after the blocks */
        size_t at = (quant_row_bytes(type, cols) * (size_t)rows + 15) / 16 * 16;
        float *aux = (float *)(d + at);
        size_t ng = (bytes - at) / sizeof(float) - 1;
        aux[0] = 0.5f;
        for (size_t g = 0; g < ng; g++) aux[1 + g] = 0.1f + 0.1f * rng_uniform(r);
    }
    *q = quant_tensor(type, rows, cols, d);
    return d;
}

static void qmatmul_case(Rng *r, uint32_t type, int N, int Dout, int Din) {
    QTensor q;
    uint8_t *qd = test_qtensor_rand(r, type, Dout, Din, &q);
    float *w = NEW((size_t)Dout * Din), *x = NEW((size_t)N * Din), *dy = NEW((size_t)N * Dout);
    float *y0 = NEW((size_t)N * Dout), *y1 = NEW((size_t)N * Dout), *dx0 = NEW((size_t)N * Din);
    float *dx1 = NEW((size_t)N * Din), *work = NEW(O->qwork_floats(NULL, Din));
    quant_rows(&q, 0, Dout, w);
    gc_randn(r, x, (size_t)N * Din, 1); gc_randn(r, dy, (size_t)N * Dout, 1);
    O->matmul_fwd(NULL, y0, x, w, N, Din, Dout);
    O->qmatmul_fwd(NULL, y1, x, &q, work, N);
    double e = rel_diff(y1, y0, (size_t)N * Dout);
    EXPECT(e < 1e-5, "qmatmul %s (%d, %d): forward differs from the dequantised matrix's by %g", quant_name(type),
           Dout, Din, e);
    O->matmul_bwd(NULL, dx0, NULL, dy, x, w, N, Din, Dout, 0);
    O->qmatmul_bwd(NULL, dx1, dy, &q, work, N, 0);
    e = rel_diff(dx1, dx0, (size_t)N * Din);
    EXPECT(e < 1e-5, "qmatmul %s (%d, %d): dx differs by %g", quant_name(type), Dout, Din, e);
    O->matmul_bwd(NULL, dx0, NULL, dy, x, w, N, Din, Dout, 1);
    O->qmatmul_bwd(NULL, dx1, dy, &q, work, N, 1);
    e = rel_diff(dx1, dx0, (size_t)N * Din);
    EXPECT(e < 1e-5, "qmatmul %s: accumulated dx differs by %g", quant_name(type), e);
    free(qd); free(w); free(x); free(dy); free(y0); free(y1); free(dx0); free(dx1); free(work);
}

static void qembed_case(Rng *r, uint32_t type) {
    int V = 23, D = quant_block(type) * 2, N = 9;
    QTensor q;
    uint8_t *qd = test_qtensor_rand(r, type, V, D, &q);
    float *w = NEW((size_t)V * D), *o0 = NEW((size_t)N * D), *o1 = NEW((size_t)N * D), *work = NEW(O->qwork_floats(NULL, D));
    int tok[9];
    for (int i = 0; i < N; i++) tok[i] = (int)(rng_u64(r) % V);
    quant_rows(&q, 0, V, w);
    O->embed_fwd(NULL, o0, tok, w, N, D);
    O->qembed_fwd(NULL, o1, tok, &q, work, N);
    EXPECT(memcmp(o0, o1, (size_t)N * D * sizeof(float)) == 0, "qembed %s: rows differ from the dequantised table's",
           quant_name(type));
    free(qd); free(w); free(o0); free(o1); free(work);
}

/* Finite differences of the quantised ops' own input gradients (the
 * comparisons above tie them to the float ops; this ties each to its own
 * forward): qmatmul's dx, and qlmhead's dx of the summed loss. */
typedef struct { const QTensor *q; float *x, *y, *rr, *work, *scratch, *rl; int *tgt; int N; } QFd;

static double qmm_f(void *ud) {
    QFd *c = ud;
    O->qmatmul_fwd(NULL, c->y, c->x, c->q, c->work, c->N);
    return gc_project(c->y, c->rr, (size_t)c->N * c->q->rows);
}

static double qhead_f(void *ud) {
    QFd *c = ud;
    return O->qlmhead(NULL, NULL, c->rl, NULL, c->x, c->q, c->tgt, NULL, 0.0f, c->scratch, c->work, c->N);
}

static void qmatmul_fd(Rng *r, uint32_t type) {
    int N = 5, Dout = 19, Din = quant_block(type) * 2;
    QTensor q;
    uint8_t *qd = test_qtensor_rand(r, type, Dout, Din, &q);
    QFd c = {&q, NEW((size_t)N * Din), NEW((size_t)N * Dout), NEW((size_t)N * Dout), NEW(O->qwork_floats(NULL, Din)),
             NEW(O->scratch_floats(NULL, 1, N, 1, 2, Dout, Din)), NEW(N), xmalloc(N * sizeof(int)), N};
    gc_randn(r, c.x, (size_t)N * Din, 1); gc_randn(r, c.rr, (size_t)N * Dout, 1);
    float *dx = NEW((size_t)N * Din);
    O->qmatmul_bwd(NULL, dx, c.rr, &q, c.work, N, 0);
    char what[48];
    snprintf(what, sizeof what, "qmatmul.%s.dx", quant_name(type));
    check(what, qmm_f, &c, c.x, dx, (size_t)N * Din, r);
    /* the head: V = Dout rows, the loss summed (scale 1) */
    for (int n = 0; n < N; n++) c.tgt[n] = n == 2 ? LC_IGNORE : (int)(rng_u64(r) % Dout);
    O->qlmhead(NULL, dx, c.rl, NULL, c.x, &q, c.tgt, NULL, 1.0f, c.scratch, c.work, N);
    snprintf(what, sizeof what, "qlmhead.%s.dx", quant_name(type));
    check(what, qhead_f, &c, c.x, dx, (size_t)N * Din, r);
    free(qd); free(c.x); free(c.y); free(c.rr); free(c.work); free(c.scratch); free(c.rl); free(c.tgt); free(dx);
}

static void case_qmatmul(Rng *r) {
    for (int i = 0; i < TEST_NQTYPES; i++) qmatmul_fd(r, test_qtypes[i]);
    for (int i = 0; i < TEST_NQTYPES; i++) {
        uint32_t t = test_qtypes[i];
        int blk = quant_block(t);
        qmatmul_case(r, t, 5, 37, 2 * blk);
        /* more rows than one tile (QWORK_FLOATS / Din), the last tile partial */
        qmatmul_case(r, t, 3, (1 << 20) / (blk * 4) + 45, blk * 4);
    }
}

static void case_qembed(Rng *r) {
    for (int i = 0; i < TEST_NQTYPES; i++) qembed_case(r, test_qtypes[i]);
}

/* the quantised head against lmhead_ce / lmhead_rows on the dequantised one:
 * losses, row losses, row means, dx */
static void case_qlmhead(Rng *r) {
    for (int i = 0; i < TEST_NQTYPES; i++) {
        uint32_t t = test_qtypes[i];
        int N = 11, D = quant_block(t) * 2, V = (1 << 20) / D + 37;
        QTensor q;
        uint8_t *qd = test_qtensor_rand(r, t, V, D, &q);
        float *w = NEW((size_t)V * D), *x = NEW((size_t)N * D), *rs = NEW(N);
        float *dx0 = NEW((size_t)N * D), *dx1 = NEW((size_t)N * D), *rl0 = NEW(N), *rl1 = NEW(N);
        float *m0 = NEW(N), *m1 = NEW(N), *work = NEW(O->qwork_floats(NULL, D));
        float *scratch = NEW(O->scratch_floats(NULL, 1, N, 1, 2, V, D));
        int *tgt = xmalloc(N * sizeof(int));
        for (int n = 0; n < N; n++) tgt[n] = n % 4 == 3 ? LC_IGNORE : (int)(rng_u64(r) % V);
        quant_rows(&q, 0, V, w);
        gc_randn(r, x, (size_t)N * D, 1); gc_randn(r, rs, N, 1);
        double l0 = O->lmhead_ce(NULL, dx0, NULL, rl0, x, w, tgt, scratch, N, D, V, 0.25f);
        double l1 = O->qlmhead(NULL, dx1, rl1, NULL, x, &q, tgt, NULL, 0.25f, scratch, work, N);
        EXPECT(fabs(l1 - l0) <= 1e-5 * fabs(l0), "qlmhead %s: loss %.9g vs %.9g", quant_name(t), l1, l0);
        double e = fmax(rel_diff(dx1, dx0, (size_t)N * D), rel_diff(rl1, rl0, N));
        EXPECT(e < 1e-5, "qlmhead %s: dx or row losses differ by %g", quant_name(t), e);
        O->lmhead_rows(NULL, dx0, NULL, rl0, m0, x, w, tgt, rs, scratch, N, D, V);
        O->qlmhead(NULL, dx1, rl1, m1, x, &q, tgt, rs, 0.0f, scratch, work, N);
        e = fmax(rel_diff(dx1, dx0, (size_t)N * D), rel_diff(m1, m0, N));
        EXPECT(e < 1e-5, "qlmhead %s: with row scales, dx or row means differ by %g", quant_name(t), e);
        free(qd); free(w); free(x); free(rs); free(dx0); free(dx1); free(rl0); free(rl1); free(m0); free(m1);
        free(work); free(scratch); free(tgt);
        lmhead_sparse(r, &t);
    }
}

/* qmatmul_rows against the double-precision product with the dequantised
 * matrix (1e-5 relative); then its fixed order: for N = 1 .. 20 every row
 * of a batch is bit for bit that row alone (both CPU paths of few and many
 * rows, tiles of every shape: Dout odd, not a multiple of the 4-row tile),
 * on one thread as on several, and the portable path gives the same bits;
 * add = out + add * (x w^T) with the product rounded first. Din of two
 * blocks, and of several (10 blocks of 32, 3 of 256). */
static void case_qmatmul_rows(Rng *r) {
    enum { NMAX = 20 };
    for (int i = 0; i < TEST_NQTYPES; i++)
        for (int shape = 0; shape < 2; shape++) {
            uint32_t t = test_qtypes[i];
            int blk = quant_block(t), Din = shape == 0 ? blk * 2 : (blk == 256 ? 3 * blk : 10 * blk);
            int Dout = shape == 0 ? 37 : 103;
            QTensor q;
            uint8_t *qd = test_qtensor_rand(r, t, Dout, Din, &q);
            float *w = NEW((size_t)Dout * Din), *x = NEW((size_t)NMAX * Din), *alone = NEW((size_t)NMAX * Dout);
            float *o = NEW((size_t)NMAX * Dout), *ref = NEW((size_t)NMAX * Dout), *work = NEW(O->qwork_floats(NULL, Din));
            quant_rows_portable(&q, 0, Dout, w);
            gc_randn(r, x, (size_t)NMAX * Din, 1);
            for (int n = 0; n < NMAX; n++)
                for (int k = 0; k < Dout; k++) {
                    double s = 0;
                    for (int c = 0; c < Din; c++) s += (double)w[(size_t)k * Din + c] * x[(size_t)n * Din + c];
                    ref[(size_t)n * Dout + k] = (float)s;
                }
            for (int n = 0; n < NMAX; n++) O->qmatmul_rows(NULL, alone + (size_t)n * Dout, x + (size_t)n * Din, &q, work, 1, 0.0f);
            double e = rel_diff(alone, ref, (size_t)NMAX * Dout);
            EXPECT(e < 1e-5, "qmatmul_rows %s Din=%d: differs from the double product by %g", quant_name(t), Din, e);
            size_t bytes = (size_t)NMAX * Dout * sizeof(float);
            for (int N = 1; N <= NMAX; N++) {
                O->qmatmul_rows(NULL, o, x, &q, work, N, 0.0f);
                EXPECT(memcmp(o, alone, (size_t)N * Dout * sizeof(float)) == 0,
                       "qmatmul_rows %s Din=%d N=%d: a row in the batch differs from the row alone", quant_name(t), Din, N);
            }
            if (O == &ops_cpu) {
                cpu_qmatmul_rows_portable(NULL, o, x, &q, work, NMAX, 0.0f);
                EXPECT(memcmp(o, alone, bytes) == 0, "qmatmul_rows %s Din=%d: the portable path differs", quant_name(t), Din);
                int nt = omp_get_max_threads();
                omp_set_num_threads(1);
                O->qmatmul_rows(NULL, o, x, &q, work, NMAX, 0.0f);
                omp_set_num_threads(nt);
                EXPECT(memcmp(o, alone, bytes) == 0, "qmatmul_rows %s Din=%d: one thread differs", quant_name(t), Din);
            }
            for (size_t k = 0; k < (size_t)NMAX * Dout; k++) o[k] = ref[k] = (float)k * 0.25f;
            O->qmatmul_rows(NULL, o, x, &q, work, NMAX, 0.5f);
            for (size_t k = 0; k < (size_t)NMAX * Dout; k++) ref[k] += 0.5f * alone[k];
            EXPECT(memcmp(o, ref, bytes) == 0, "qmatmul_rows %s: add differs", quant_name(t));
            free(qd); free(w); free(x); free(alone); free(o); free(ref); free(work);
        }
}

// ----------------------------------------------------------------------------
// the table

typedef struct {
    OpId id;
    void (*run)(Rng *r);
} OpCase;

static const OpCase cases[] = {
    {OP_EMBED, case_embed},   {OP_RMSNORM, case_rmsnorm}, {OP_MATMUL, case_matmul},
    {OP_ROPE, case_rope},     {OP_ATTN, case_attn},       {OP_ATTN_DECODE, case_attn_decode},
    {OP_SWIGLU, case_swiglu},
    {OP_LMHEAD_CE, case_lmhead}, {OP_ADD, case_add},      {OP_SUMSQ, case_sumsq},
    {OP_SCALE, case_scale},   {OP_ADAMW, case_adamw},     {OP_LORA, case_lora},
    {OP_LMHEAD_ROWS, case_lmhead_rows}, {OP_MATMUL_ROWS, case_matmul_rows},
    {OP_ATTN_PAGED, case_attn_paged}, {OP_ROWS, case_rows}, {OP_QMATMUL, case_qmatmul},
    {OP_QEMBED, case_qembed}, {OP_QLMHEAD, case_qlmhead}, {OP_QMATMUL_ROWS, case_qmatmul_rows},
    {OP_LMHEAD_KD, ops_kd_case}, /* test_kd.c */
};
_Static_assert(sizeof cases / sizeof cases[0] == OP_COUNT, "every op needs a test row");

static void run_op(OpId id) {
    for (size_t i = 0; i < OP_COUNT; i++)
        if (cases[i].id == id) {
            Rng r;
            rng_seed(&r, 1000 + id);
            cases[i].run(&r);
            return;
        }
    LC_FATAL("no case for op %d", id);
}

void ops_embed(void) { run_op(OP_EMBED); }
void ops_rmsnorm(void) { run_op(OP_RMSNORM); }
void ops_matmul(void) { run_op(OP_MATMUL); }
void ops_rope(void) { run_op(OP_ROPE); }
void ops_attn(void) { run_op(OP_ATTN); }
void ops_attn_decode(void) { run_op(OP_ATTN_DECODE); }
void ops_swiglu(void) { run_op(OP_SWIGLU); }
void ops_lmhead_ce(void) { run_op(OP_LMHEAD_CE); }
void ops_add(void) { run_op(OP_ADD); }
void ops_sumsq(void) { run_op(OP_SUMSQ); }
void ops_scale(void) { run_op(OP_SCALE); }
void ops_adamw(void) { run_op(OP_ADAMW); }
void ops_lora(void) { run_op(OP_LORA); }
void ops_lmhead_rows(void) { run_op(OP_LMHEAD_ROWS); }
void ops_matmul_rows(void) { run_op(OP_MATMUL_ROWS); }
void ops_attn_paged(void) { run_op(OP_ATTN_PAGED); }
void ops_rows(void) { run_op(OP_ROWS); }
void ops_qmatmul(void) { run_op(OP_QMATMUL); }
void ops_qembed(void) { run_op(OP_QEMBED); }
void ops_qlmhead(void) { run_op(OP_QLMHEAD); }
void ops_qmatmul_rows(void) { run_op(OP_QMATMUL_ROWS); }
void ops_lmhead_kd(void) { run_op(OP_LMHEAD_KD); }

/* The dequantisers quant_rows takes (AVX2 on this CPU, unless
 * LLAMAC_QUANT_PORTABLE) against the scalar ones, bit for bit: whole
 * tensors, single rows, parts of rows, on tensors with sane scales and on
 * raw random bytes (half scales that are NaN, infinite, subnormal). NF4's
 * 320 blocks cross a second-level group. */
void ops_qdequant(void) {
    Rng r;
    rng_seed(&r, 4242);
    for (int i = 0; i < TEST_NQTYPES; i++)
        for (int raw = 0; raw < 2; raw++) {
            uint32_t t = test_qtypes[i];
            int blk = quant_block(t), rows = 40, cols = blk * 8;
            QTensor q;
            uint8_t *qd = test_qtensor_rand(&r, t, rows, cols, &q);
            if (raw)
                for (size_t k = 0; k < (size_t)rows * q.row_bytes; k++) qd[k] = (uint8_t)rng_u64(&r);
            size_t n = (size_t)rows * cols;
            float *a = NEW(n), *b = NEW(n);
            quant_rows(&q, 0, rows, a);
            quant_rows_portable(&q, 0, rows, b);
            EXPECT(memcmp(a, b, n * sizeof(float)) == 0, "%s%s: quant_rows differs from the portable path",
                   quant_name(t), raw ? " (raw bytes)" : "");
            quant_rows(&q, 7, 3, a);
            EXPECT(memcmp(a, b + (size_t)7 * cols, (size_t)3 * cols * sizeof(float)) == 0, "%s: rows 7-9 differ",
                   quant_name(t));
            quant_row_part(&q, 33, 3 * blk, 4 * blk, a);
            EXPECT(memcmp(a, b + (size_t)33 * cols + 3 * blk, (size_t)4 * blk * sizeof(float)) == 0,
                   "%s: part of row 33 differs", quant_name(t));
            if (t != QUANT_NF4) {
                EXPECT(quant_dequantize(t, qd, (int64_t)n, a) == 0, "%s: quant_dequantize", quant_name(t));
                EXPECT(memcmp(a, b, n * sizeof(float)) == 0, "%s: quant_dequantize differs", quant_name(t));
            }
            free(qd), free(a), free(b);
        }
}

/* Attention over several query blocks (T > the CPU block of 64 rows) with
 * documents that straddle block edges: forward against the definition. */
void ops_attn_blocks(void) {
    Rng r;
    rng_seed(&r, 77);
    attn_case(&r, 1, 150, 2, 1, 8, 1, "attn.blocks");
    attn_case(&r, 1, 170, 2, 1, 8, 2, "attn.blocks_tree");
}

/* Head sizes the CPU kernels pad (to 16 columns) or not, with several
 * backward key blocks (48 keys, split into two parts whose dq partials are
 * summed), documents and GQA; then the same cases on the portable kernels
 * that CPUs without AVX2+FMA take. */
void ops_attn_kernels(void) {
    for (int portable = 0; portable < 2; portable++) {
        Rng r;
        rng_seed(&r, 78);
        if (portable) setenv("LLAMAC_ATTN_PORTABLE", "1", 1);
        attn_case(&r, 1, 130, 4, 2, 20, 1, portable ? "attn.portable.hs20" : "attn.hs20");
        attn_case(&r, 2, 101, 2, 2, 32, 0, portable ? "attn.portable.hs32" : "attn.hs32");
        attn_case(&r, 1, 61, 3, 1, 6, 1, portable ? "attn.portable.hs6" : "attn.hs6");
        attn_case(&r, 1, 140, 2, 1, 16, 2, portable ? "attn.portable.tree" : "attn.tree");
        attn_case(&r, 1, 260, 2, 1, 16, 3, portable ? "attn.portable.long_branches" : "attn.long_branches");
        unsetenv("LLAMAC_ATTN_PORTABLE");
    }
}

/* The same inputs give bit-identical gradients run after run. */
void ops_deterministic(void) {
    Rng r;
    int B = 2, T = 70, H = 4, KV = 2, HS = 8;
    size_t nq = (size_t)B * T * H * HS, nk = (size_t)B * T * KV * HS;
    float *q = NEW(nq), *k = NEW(nk), *v = NEW(nk), *o = NEW(nq), *lse = NEW(B * H * T), *d = NEW(nq);
    float *dq[2] = {NEW(nq), NEW(nq)}, *dk[2] = {NEW(nk), NEW(nk)}, *dv[2] = {NEW(nk), NEW(nk)};
    float *s = NEW(O->scratch_floats(NULL, B, T, H, HS, 2, 2));
    int *pos = xmalloc((size_t)B * T * sizeof(int));
    for (int i = 0; i < B * T; i++) pos[i] = (i % T) % 31;
    int *sp = spans_of(pos, B, T);
    rng_seed(&r, 5);
    gc_randn(&r, q, nq, 1); gc_randn(&r, k, nk, 1); gc_randn(&r, v, nk, 1); gc_randn(&r, d, nq, 1);
    O->attn_fwd(NULL, o, lse, q, k, v, sp, s, B, T, H, KV, HS);
    for (int rep = 0; rep < 2; rep++)
        O->attn_bwd(NULL, dq[rep], dk[rep], dv[rep], d, o, lse, q, k, v, sp, s, B, T, H, KV, HS);
    free(sp);
    EXPECT(memcmp(dq[0], dq[1], nq * sizeof(float)) == 0, "dq differs between runs");
    EXPECT(memcmp(dk[0], dk[1], nk * sizeof(float)) == 0, "dk differs between runs");
    EXPECT(memcmp(dv[0], dv[1], nk * sizeof(float)) == 0, "dv differs between runs");
    free(q); free(k); free(v); free(o); free(lse); free(d); free(s); free(pos);
    for (int i = 0; i < 2; i++) { free(dq[i]); free(dk[i]); free(dv[i]); }
}

/* The micro-benchmark row of the branch mask: a 150-token prompt with 8
 * completions of 512 laid out once (the hole skipped) against 8 copies of
 * prompt + completion, SmolLM2's heads (9 / 3, HS 64), forward + backward.
 * Printed only; the time depends on the machine's load. */
void attn_branch_bench(void) {
    enum { P = 150, C = 512, G = 8, H = 9, KV = 3, HS = 64, REPS = 2 };
    Rng r;
    rng_seed(&r, 2727);
    for (int share = 0; share < 2; share++) {
        int T = share ? P + G * C : P + C, B = share ? 1 : G, N = B * T;
        int *pos = xmalloc((size_t)N * sizeof(int));
        for (int n = 0; n < N; n++) pos[n] = n % T < P || !share ? n % T : P + (n % T - P) % C;
        int *sp = spans_of(pos, B, T);
        size_t nq = (size_t)N * H * HS, nk = (size_t)N * KV * HS;
        float *q = NEW(nq), *k = NEW(nk), *v = NEW(nk), *o = NEW(nq), *lse = NEW((size_t)N * H), *d = NEW(nq);
        float *dq = NEW(nq), *dk = NEW(nk), *dv = NEW(nk), *s = NEW(O->scratch_floats(NULL, B, T, H, HS, 2, 2));
        gc_randn(&r, q, nq, 1); gc_randn(&r, k, nk, 1); gc_randn(&r, v, nk, 1); gc_randn(&r, d, nq, 1);
        double t0 = 0, t1 = 0, fwd = 0;
        for (int rep = 0; rep <= REPS; rep++) {
            if (rep == 1) t0 = time_now(); /* the first call warms up */
            t1 = time_now();
            O->attn_fwd(NULL, o, lse, q, k, v, sp, s, B, T, H, KV, HS);
            if (rep) fwd += time_now() - t1;
            O->attn_bwd(NULL, dq, dk, dv, d, o, lse, q, k, v, sp, s, B, T, H, KV, HS);
        }
        double all = (time_now() - t0) / REPS * 1e3;
        double sum = 0;
        for (size_t i = 0; i < nq; i++) sum += o[i] + dq[i];
        for (size_t i = 0; i < nk; i++) sum += dk[i] + dv[i];
        EXPECT(isfinite(sum), "attention over branches: outputs or gradients not finite");
        printf("    attn %s B %d T %d: %7.2f ms forward, %7.2f ms backward\n", share ? "prompt + 8 branches" : "8 copies",
               B, T, fwd / REPS * 1e3, all - fwd / REPS * 1e3);
        free(pos); free(sp); free(q); free(k); free(v); free(o); free(lse); free(d); free(dq); free(dk); free(dv);
        free(s);
    }
}
