/*
 * ops_cpu.c: the CPU backend. float32 everywhere; GEMMs through CBLAS
 * (OpenBLAS built for OpenMP, so a GEMM called inside a parallel region runs
 * on its calling thread); everything else hand-written loops parallelised
 * with OpenMP over rows, heads or columns. Reductions that feed gradients are
 * laid out so each output element is summed by one thread in a fixed order:
 * results do not depend on the thread count's scheduling.
 *
 * Attention is flash-attention shaped (Dao et al. 2022) at block granularity:
 * for each (batch, kv head) a block of query rows meets all keys it may see
 * through two GEMMs with the softmax between them; the forward keeps only the
 * output and the per-row log-sum-exp, and the backward recomputes the
 * probabilities block by block.
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

const char *const op_names[OP_COUNT] = {
    "embed", "rmsnorm", "matmul", "rope", "attn", "attn_decode", "swiglu", "lmhead_ce",
    "add", "sumsq", "scale", "adamw",
};

char *openblas_get_corename(void);
const char *ops_cpu_blas_core(void) { return openblas_get_corename(); }
int ops_cpu_threads(void) { return omp_get_max_threads(); }

/* Query rows per attention block. The forward's GEMMs are fastest with 64;
 * the backward accumulates dK and dV over a block's rows, so longer blocks
 * give those GEMMs a longer inner dimension. Scratch: two (BQ x T) tiles per
 * thread. */
#define ATTN_BQ 64
#define ATTN_BQ_BWD 128
#define ATTN_BQ_MAX (ATTN_BQ > ATTN_BQ_BWD ? ATTN_BQ : ATTN_BQ_BWD)
/* LM head: at most 1024 rows or 128 MiB of logits per chunk; bigger chunks
 * give the dW GEMM a longer inner dimension (measured: 8M -> 32M floats took
 * the 15m step from 1145 to 1219 tokens/s). */
#define CE_ROWS_MAX 1024
#define CE_FLOATS 33554432

// ----------------------------------------------------------------------------
// memory

static void *cpu_alloc(void *ctx, size_t bytes) { (void)ctx; return xalloc_aligned(bytes); }
static void cpu_free(void *ctx, void *p) { (void)ctx; free(p); }
static void cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_zero(void *ctx, void *p, size_t bytes) { (void)ctx; if (bytes) memset(p, 0, bytes); }
static void cpu_sync(void *ctx) { (void)ctx; }

static int ce_rows(int V) {
    int r = CE_FLOATS / V;
    if (r > CE_ROWS_MAX) r = CE_ROWS_MAX;
    return r < 8 ? 8 : r;
}

static size_t cpu_scratch_floats(void *ctx, int B, int T, int H, int HS, int V, int D) {
    (void)ctx; (void)B; (void)HS; (void)D;
    size_t attn = (size_t)omp_get_max_threads() * 2 * ATTN_BQ_MAX * (size_t)T;
    size_t decode = (size_t)H * T;
    size_t ce = (size_t)ce_rows(V) * V;
    attn = attn > decode ? attn : decode;
    return attn > ce ? attn : ce;
}

// ----------------------------------------------------------------------------
// vector math: softmax and SwiGLU spend their time in exp. libm's expf is a
// call per element and does not vectorise without -ffast-math, so exp is
// written as plain arithmetic (x = n ln2 + r, |r| <= ln2/2; e^r by its
// degree-6 Taylor polynomial, error r^7/7! < 1.3e-7; 2^n through the
// exponent bits) and the loops using it are compiled twice, for AVX2+FMA
// (x86-64-v3) and for baseline x86-64, picked at load time by CPU features
// (target_clones; "arch=haswell" would be picked by CPU model, never on AMD).

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

static inline __attribute__((always_inline)) float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x; /* e^-87 ~ 1.6e-38: below it, 0 for softmax */
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;     /* ln2 split hi + lo */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666667e-2f +
              r * (8.3333333e-3f + r * 1.3888889e-3f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

/* max of x[0..n), n >= 1. GCC does not vectorise a float max reduction
 * without -ffinite-math-only, so eight lanes are spelled out with GCC vector
 * extensions (compare to a mask, then select by bits). */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

VECTOR_CLONES static float vec_max(const float *x, int n) {
    float m = x[0];
    int i = 0;
    if (n >= 8) {
        v8f mv;
        memcpy(&mv, x, sizeof mv);
        for (i = 8; i + 8 <= n; i += 8) {
            v8f xv;
            memcpy(&xv, x + i, sizeof xv);
            v8i gt = xv > mv;
            mv = (v8f)((gt & (v8i)xv) | (~gt & (v8i)mv));
        }
        for (int k = 0; k < 8; k++) m = mv[k] > m ? mv[k] : m;
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* y = exp(x - sub) over n elements, in place; returns the sum (eight
 * partial sums in a fixed order, so vectorised and deterministic) */
VECTOR_CLONES static float vec_exp_sum(float *y, float sub, int n) {
    for (int i = 0; i < n; i++) y[i] = exp_approx(y[i] - sub);
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += y[i + k];
    for (; i < n; i++) acc[0] += y[i];
    float s = 0.0f;
    for (int k = 0; k < 8; k++) s += acc[k];
    return s;
}

VECTOR_CLONES static void vec_scale(float *x, float s, int n) {
    for (int i = 0; i < n; i++) x[i] *= s;
}

// ----------------------------------------------------------------------------
// embedding

static void cpu_embed_fwd(void *ctx, float *out, const int *tok, const float *emb, int N, int D) {
    (void)ctx;
#pragma omp parallel for
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * D, emb + (size_t)tok[n] * D, D * sizeof(float));
}

static void cpu_embed_bwd(void *ctx, float *demb, const float *dout, const int *tok, int N, int D) {
    (void)ctx;
    /* Each thread owns a slice of the columns and walks the rows in order:
     * no atomics, and the sum order is fixed. */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), it = omp_get_thread_num();
        int j0 = (int)((long)D * it / nt), j1 = (int)((long)D * (it + 1) / nt);
        for (int n = 0; n < N; n++) {
            float *d = demb + (size_t)tok[n] * D;
            const float *s = dout + (size_t)n * D;
            for (int j = j0; j < j1; j++) d[j] += s[j];
        }
    }
}

// ----------------------------------------------------------------------------
// RMSNorm (Zhang & Sennrich 2019)

static void cpu_rmsnorm_fwd(void *ctx, float *out, float *rstd, const float *x, const float *w,
                            int N, int D, float eps) {
    (void)ctx;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D;
        float *o = out + (size_t)n * D;
        float ss = 0.0f;
        for (int j = 0; j < D; j++) ss += xn[j] * xn[j];
        float r = 1.0f / sqrtf(ss / D + eps);
        rstd[n] = r;
        for (int j = 0; j < D; j++) o[j] = xn[j] * r * w[j];
    }
}

static void cpu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dout, const float *x,
                            const float *w, const float *rstd, int N, int D) {
    (void)ctx;
    /* dx = rstd * (dxh - xh * mean(dxh * xh)), xh = x * rstd, dxh = dout * w */
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D, *dn = dout + (size_t)n * D;
        float *dxn = dx + (size_t)n * D;
        float r = rstd[n], dot = 0.0f;
        for (int j = 0; j < D; j++) dot += dn[j] * w[j] * xn[j];
        float c = dot * r * r / D;
        for (int j = 0; j < D; j++) dxn[j] += r * (dn[j] * w[j] - xn[j] * c);
    }
    /* dw: column slices per thread, rows in order */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), it = omp_get_thread_num();
        int j0 = (int)((long)D * it / nt), j1 = (int)((long)D * (it + 1) / nt);
        for (int n = 0; n < N; n++) {
            const float *xn = x + (size_t)n * D, *dn = dout + (size_t)n * D;
            float r = rstd[n];
            for (int j = j0; j < j1; j++) dw[j] += dn[j] * xn[j] * r;
        }
    }
}

// ----------------------------------------------------------------------------
// linear

static void cpu_matmul_fwd(void *ctx, float *out, const float *x, const float *w, int N, int Din, int Dout) {
    (void)ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, Dout, Din, 1.0f, x, Din, w, Din, 0.0f, out, Dout);
}

static void cpu_matmul_bwd(void *ctx, float *dx, float *dw, const float *dout, const float *x,
                           const float *w, int N, int Din, int Dout, int accum_dx) {
    (void)ctx;
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Din, Dout, 1.0f, dout, Dout, w, Din,
                    accum_dx ? 1.0f : 0.0f, dx, Din);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Dout, Din, N, 1.0f, dout, Dout, x, Din, 1.0f,
                    dw, Din);
}

// ----------------------------------------------------------------------------
// RoPE, Hugging Face rotate_half layout

static void rope_apply(float *x, const int *pos, const float *cos_t, const float *sin_t, int N,
                       int nh, int HS, float sign) {
    int half = HS / 2;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)pos[n] * half, *s = sin_t + (size_t)pos[n] * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + ((size_t)n * nh + h) * HS;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

static void cpu_rope_fwd(void *ctx, float *x, const int *pos, const float *cos_t, const float *sin_t,
                         int N, int nh, int HS) {
    (void)ctx;
    rope_apply(x, pos, cos_t, sin_t, N, nh, HS, 1.0f);
}

/* The rotation is orthogonal, so its transpose (the backward) rotates by -angle. */
static void cpu_rope_bwd(void *ctx, float *dx, const int *pos, const float *cos_t, const float *sin_t,
                         int N, int nh, int HS) {
    (void)ctx;
    rope_apply(dx, pos, cos_t, sin_t, N, nh, HS, -1.0f);
}

// ----------------------------------------------------------------------------
// attention

/* Keys visible to the query rows [i0, i1) of batch row b: [*k0, i1). */
static int block_key_start(const int *pos_b, int i0, int i1) {
    int k0 = i0;
    for (int t = i0; t < i1; t++)
        if (t - pos_b[t] < k0) k0 = t - pos_b[t];
    return k0;
}

static void cpu_attn_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                         const float *v, const int *pos, float *scratch, int B, int T, int H,
                         int KV, int HS) {
    (void)ctx;
    int G = H / KV, qs = H * HS, ks = KV * HS;
    float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel
    {
        float *S = scratch + (size_t)omp_get_thread_num() * 2 * ATTN_BQ_MAX * T;
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                const int *pb = pos + (size_t)b * T;
                const float *kb = k + (size_t)b * T * ks + (size_t)(h / G) * HS;
                const float *vb = v + (size_t)b * T * ks + (size_t)(h / G) * HS;
                for (int i0 = 0; i0 < T; i0 += ATTN_BQ) {
                    int i1 = i0 + ATTN_BQ < T ? i0 + ATTN_BQ : T, nq = i1 - i0;
                    int k0 = block_key_start(pb, i0, i1), nk = i1 - k0;
                    const float *qb = q + ((size_t)b * T + i0) * qs + (size_t)h * HS;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, HS, scale, qb, qs,
                                kb + (size_t)k0 * ks, ks, 0.0f, S, nk);
                    for (int r = 0; r < nq; r++) {
                        int t = i0 + r, lo = t - pb[t] - k0, hi = t - k0; /* visible [lo, hi] */
                        float *s = S + (size_t)r * nk;
                        float mx = vec_max(s + lo, hi - lo + 1);
                        for (int j = 0; j < lo; j++) s[j] = 0.0f;
                        float sum = vec_exp_sum(s + lo, mx, hi - lo + 1);
                        for (int j = hi + 1; j < nk; j++) s[j] = 0.0f;
                        vec_scale(s + lo, 1.0f / sum, hi - lo + 1);
                        lse[((size_t)b * H + h) * T + t] = mx + logf(sum);
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, HS, nk, 1.0f, S, nk,
                                vb + (size_t)k0 * ks, ks, 0.0f,
                                out + ((size_t)b * T + i0) * qs + (size_t)h * HS, qs);
                }
            }
    }
}

static void cpu_attn_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                         const float *out, const float *lse, const float *q, const float *k,
                         const float *v, const int *pos, float *scratch, int B, int T, int H,
                         int KV, int HS) {
    (void)ctx;
    int G = H / KV, qs = H * HS, ks = KV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    /* One task per (batch, kv head): the G query heads sharing it accumulate
     * into its dk, dv on one thread, in a fixed order. */
#pragma omp parallel
    {
        float *P = scratch + (size_t)omp_get_thread_num() * 2 * ATTN_BQ_MAX * T;
        float *dP = P + (size_t)ATTN_BQ_BWD * T;
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int kh = 0; kh < KV; kh++) {
                const int *pb = pos + (size_t)b * T;
                const float *kb = k + (size_t)b * T * ks + (size_t)kh * HS;
                const float *vb = v + (size_t)b * T * ks + (size_t)kh * HS;
                float *dkb = dk + (size_t)b * T * ks + (size_t)kh * HS;
                float *dvb = dv + (size_t)b * T * ks + (size_t)kh * HS;
                for (int t = 0; t < T; t++) {
                    memset(dkb + (size_t)t * ks, 0, HS * sizeof(float));
                    memset(dvb + (size_t)t * ks, 0, HS * sizeof(float));
                }
                for (int h = kh * G; h < (kh + 1) * G; h++)
                    for (int i0 = 0; i0 < T; i0 += ATTN_BQ_BWD) {
                        int i1 = i0 + ATTN_BQ_BWD < T ? i0 + ATTN_BQ_BWD : T, nq = i1 - i0;
                        int k0 = block_key_start(pb, i0, i1), nk = i1 - k0;
                        size_t row0 = ((size_t)b * T + i0) * qs + (size_t)h * HS;
                        const float *qb = q + row0, *ob = out + row0, *dob = dout + row0;
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, HS, scale, qb,
                                    qs, kb + (size_t)k0 * ks, ks, 0.0f, P, nk);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, HS, 1.0f, dob,
                                    qs, vb + (size_t)k0 * ks, ks, 0.0f, dP, nk);
                        for (int r = 0; r < nq; r++) {
                            int t = i0 + r, lo = t - pb[t] - k0, hi = t - k0;
                            float *p = P + (size_t)r * nk, *dp = dP + (size_t)r * nk;
                            float l = lse[((size_t)b * H + h) * T + t];
                            const float *o = ob + (size_t)r * qs, *dO = dob + (size_t)r * qs;
                            float di = 0.0f; /* D_i = rowsum(dO * O) = sum_j P_ij dP_ij */
                            for (int c = 0; c < HS; c++) di += dO[c] * o[c];
                            for (int j = 0; j < lo; j++) p[j] = dp[j] = 0.0f;
                            vec_exp_sum(p + lo, l, hi - lo + 1);
                            for (int j = lo; j <= hi; j++) dp[j] = p[j] * (dp[j] - di) * scale;
                            for (int j = hi + 1; j < nk; j++) p[j] = dp[j] = 0.0f;
                        }
                        /* dq = dS k ; dk += dS^T q ; dv += P^T dO */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, HS, nk, 1.0f, dP,
                                    nk, kb + (size_t)k0 * ks, ks, 0.0f, dq + row0, qs);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, nq, 1.0f, dP,
                                    nk, qb, qs, 1.0f, dkb + (size_t)k0 * ks, ks);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, nq, 1.0f, P, nk,
                                    dob, qs, 1.0f, dvb + (size_t)k0 * ks, ks);
                    }
            }
    }
}

static void cpu_attn_decode(void *ctx, float *out, const float *q, const float *k, const float *v,
                            float *scratch, int S, int H, int KV, int HS) {
    (void)ctx;
    int G = H / KV, ks = KV * HS;
    float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel for
    for (int h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * HS, *kh = k + (size_t)(h / G) * HS, *vh = v + (size_t)(h / G) * HS;
        float *s = scratch + (size_t)h * S, *o = out + (size_t)h * HS;
        for (int j = 0; j < S; j++) {
            float d = 0.0f;
            for (int c = 0; c < HS; c++) d += qh[c] * kh[(size_t)j * ks + c];
            s[j] = d * scale;
        }
        float sum = vec_exp_sum(s, vec_max(s, S), S);
        for (int c = 0; c < HS; c++) o[c] = 0.0f;
        for (int j = 0; j < S; j++) {
            float p = s[j] / sum;
            for (int c = 0; c < HS; c++) o[c] += p * vh[(size_t)j * ks + c];
        }
    }
}

// ----------------------------------------------------------------------------
// SwiGLU (Shazeer 2020)

#define SWIGLU_BLOCK 4096

VECTOR_CLONES static void swiglu_fwd_block(float *out, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) out[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
}

VECTOR_CLONES static void swiglu_bwd_block(float *dg, float *du, const float *dout, const float *g,
                                           const float *u, int n) {
    for (int i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + exp_approx(-g[i]));
        float silu = g[i] * s;
        dg[i] = dout[i] * u[i] * (s + silu * (1.0f - s));
        du[i] = dout[i] * silu;
    }
}

static void cpu_swiglu_fwd(void *ctx, float *out, const float *g, const float *u, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i += SWIGLU_BLOCK)
        swiglu_fwd_block(out + i, g + i, u + i, (int)(n - i < SWIGLU_BLOCK ? n - i : SWIGLU_BLOCK));
}

static void cpu_swiglu_bwd(void *ctx, float *dg, float *du, const float *dout, const float *g,
                           const float *u, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i += SWIGLU_BLOCK) {
        int k = (int)(n - i < SWIGLU_BLOCK ? n - i : SWIGLU_BLOCK);
        swiglu_bwd_block(dg + i, du + i, dout + i, g + i, u + i, k);
    }
}

// ----------------------------------------------------------------------------
// LM head + cross-entropy

/* Chunked over rows of tokens rather than over the vocabulary: a chunk's
 * (rows x V) logits live in scratch, so memory is bounded by CE_FLOATS and
 * no GEMM is recomputed (a vocabulary split needs an online log-sum-exp and
 * a second logits GEMM in the backward; the LM head is the largest GEMM of
 * the small models). */
static double cpu_lmhead_ce(void *ctx, float *dx, float *dw, float *row_loss, const float *x,
                            const float *w, const int *targets, float *scratch, int N, int D, int V,
                            float scale) {
    (void)ctx;
    int R = ce_rows(V);
    double total = 0.0;
    for (int n0 = 0; n0 < N; n0 += R) {
        int nr = n0 + R < N ? R : N - n0;
        float *lg = scratch;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, V, D, 1.0f, x + (size_t)n0 * D, D,
                    w, D, 0.0f, lg, V);
        double chunk = 0.0;
#pragma omp parallel for reduction(+ : chunk)
        for (int r = 0; r < nr; r++) {
            float *l = lg + (size_t)r * V;
            int tgt = targets[n0 + r];
            if (tgt == LC_IGNORE) {
                if (row_loss) row_loss[n0 + r] = 0.0f;
                if (dx) memset(l, 0, (size_t)V * sizeof(float));
                continue;
            }
            float lt = l[tgt], mx = vec_max(l, V);
            float sum = vec_exp_sum(l, mx, V); /* l now holds exp(logit - max) */
            float loss = mx + logf(sum) - lt;
            if (row_loss) row_loss[n0 + r] = loss;
            chunk += loss;
            if (dx) {
                vec_scale(l, scale / sum, V); /* scale * softmax */
                l[tgt] -= scale;
            }
        }
        total += chunk;
        if (dx) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, D, V, 1.0f, lg, V, w, D, 0.0f,
                        dx + (size_t)n0 * D, D);
            if (dw)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, D, nr, 1.0f, lg, V,
                            x + (size_t)n0 * D, D, 1.0f, dw, D);
        }
    }
    return total;
}

// ----------------------------------------------------------------------------
// vector ops and AdamW

static void cpu_add(void *ctx, float *y, const float *x, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static double cpu_sumsq(void *ctx, const float *x, size_t n) {
    (void)ctx;
    /* Fixed-size blocks summed in order: the result does not depend on the
     * thread count. */
    enum { BLK = 4096 };
    size_t nb = (n + BLK - 1) / BLK;
    double total = 0.0;
    for (size_t b0 = 0; b0 < nb; b0 += 256) {
        double part[256];
        size_t b1 = b0 + 256 < nb ? b0 + 256 : nb;
#pragma omp parallel for
        for (size_t b = b0; b < b1; b++) {
            size_t i1 = (b + 1) * BLK < n ? (b + 1) * BLK : n;
            double s = 0.0;
            for (size_t i = b * BLK; i < i1; i++) s += (double)x[i] * x[i];
            part[b - b0] = s;
        }
        for (size_t b = b0; b < b1; b++) total += part[b - b0];
    }
    return total;
}

static void cpu_scale(void *ctx, float *x, float s, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                      float b1, float b2, float eps, float wd, int t, float gscale) {
    (void)ctx;
    /* torch.optim.AdamW (foreach=False): p *= 1 - lr*wd;
     * p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps) */
    float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
    float step = lr / bc1, bc2s = sqrtf(bc2), decay = 1.0f - lr * wd;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        float mi = m[i] = b1 * m[i] + (1.0f - b1) * gi;
        float vi = v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) / bc2s + eps);
    }
}

const Ops ops_cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .scratch_floats = cpu_scratch_floats,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .attn_decode = cpu_attn_decode,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .lmhead_ce = cpu_lmhead_ce,
    .add = cpu_add,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .adamw = cpu_adamw,
};
