/*
 * ops_cpu_engine.c: the CPU ops of the sampling engine (ops.h, "the
 * sampling engine"): a linear over packed weights, paged attention and row
 * copies, each computing a row the same way whatever the batch.
 *
 * The linear is hand-written instead of an sgemm call for two reasons
 * (anchors/engine.md): OpenBLAS packs the whole weight matrix on every call,
 * which at one row per step costs three times the weight reads, and a
 * library is free to sum in another order for another M (sgemv vs sgemm
 * differ in nine outputs of ten). Here the weights are packed once
 * (rows_pack: panels of 16 output rows, Din-major, so one Din step of a
 * panel is two contiguous vectors) and every output is one chain of fused
 * multiply-adds over k = 0, 1, ..., Din - 1, the same chain as the scalar
 * loop c = fmaf(x[k], w[k], c). Tiles of up to 6 input rows by one panel
 * (12 accumulators, the classic AVX2 register block) share the loads; the
 * tile shapes, the row blocking and the threads' split of the panels change
 * which outputs are computed together, never how one is summed, so a row's
 * result does not depend on N, on its place in the batch, on the thread
 * count, or on the CPU path (the portable loop gives the same bits).
 */
#include "ops.h"
#include "vecmath.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "ops_cpu_engine.h"

#define PANEL 16        /* output rows of a packed panel: two AVX2 vectors */
#define TILE_M 6        /* input rows of a tile */
#define XBLOCK_FLOATS 49152 /* input rows kept in L2 while the panels stream past (192 KiB) */

size_t cpu_rows_pack_floats(void *ctx, int Din, int Dout) {
    (void)ctx;
    return (size_t)((Dout + PANEL - 1) / PANEL) * PANEL * Din;
}

void cpu_rows_pack(void *ctx, float *wp, const float *w, int Din, int Dout) {
    (void)ctx;
    int np = (Dout + PANEL - 1) / PANEL;
#pragma omp parallel for
    for (int p = 0; p < np; p++) {
        float *dst = wp + (size_t)p * PANEL * Din;
        for (int k = 0; k < Din; k++)
            for (int j = 0; j < PANEL; j++) {
                int n = p * PANEL + j;
                dst[(size_t)k * PANEL + j] = n < Dout ? w[(size_t)n * Din + k] : 0.0f;
            }
    }
}

static inline void store_out(float *o, float s, float add) {
    if (add == 0.0f)
        *o = s;
    else
        *o += add * s;
}

/* mr rows of x against one panel: out(mr, nc) */
static void tile_portable(const float *x, int K, const float *wp, float *out, int Dout, int mr, int nc, float add) {
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nc; j++) {
            float c = 0.0f;
            for (int k = 0; k < K; k++) c = fmaf(x[(size_t)i * K + k], wp[(size_t)k * PANEL + j], c);
            store_out(out + (size_t)i * Dout + j, c, add);
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ROWS_AVX2 1
#define AVX2 __attribute__((target("avx2,fma")))

static inline AVX2 __attribute__((always_inline)) void tile_store(float *o, __m256 c0, __m256 c1, int nc,
                                                                  float add) {
    if (nc == PANEL && add == 0.0f) {
        _mm256_storeu_ps(o, c0);
        _mm256_storeu_ps(o + 8, c1);
        return;
    }
    float t[PANEL] __attribute__((aligned(32)));
    _mm256_store_ps(t, c0);
    _mm256_store_ps(t + 8, c1);
    for (int j = 0; j < nc; j++) store_out(o + j, t[j], add);
}

/* MR (<= 6, a constant after inlining) rows against one panel. The
 * accumulators are named variables: in arrays GCC keeps a copy in memory
 * and stores all twelve every step. */
#define ROW_FMA(i, a0, a1)                                                 \
    if (MR > (i)) {                                                        \
        __m256 xv = _mm256_broadcast_ss(x + (size_t)(i) * K + k);          \
        a0 = _mm256_fmadd_ps(xv, w0, a0);                                  \
        a1 = _mm256_fmadd_ps(xv, w1, a1);                                  \
    }
static inline AVX2 __attribute__((always_inline)) void tile_avx2(const float *x, int K, const float *wp, float *out,
                                                                 int Dout, const int MR, int nc, float add) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0, e0 = a0,
           e1 = a0, f0 = a0, f1 = a0;
    for (int k = 0; k < K; k++) {
        __m256 w0 = _mm256_loadu_ps(wp + (size_t)k * PANEL), w1 = _mm256_loadu_ps(wp + (size_t)k * PANEL + 8);
        ROW_FMA(0, a0, a1) ROW_FMA(1, b0, b1) ROW_FMA(2, c0, c1) ROW_FMA(3, d0, d1) ROW_FMA(4, e0, e1)
        ROW_FMA(5, f0, f1)
    }
    tile_store(out, a0, a1, nc, add);
    if (MR > 1) tile_store(out + (size_t)Dout, b0, b1, nc, add);
    if (MR > 2) tile_store(out + (size_t)2 * Dout, c0, c1, nc, add);
    if (MR > 3) tile_store(out + (size_t)3 * Dout, d0, d1, nc, add);
    if (MR > 4) tile_store(out + (size_t)4 * Dout, e0, e1, nc, add);
    if (MR > 5) tile_store(out + (size_t)5 * Dout, f0, f1, nc, add);
}
#undef ROW_FMA

/* rows [m0, m1) of x against the one panel w of output columns [n, n + nc) */
static AVX2 void panel_avx2(const float *x, const float *w, float *out, int m0, int m1, int n, int nc, int K,
                            int Dout, float add) {
    int m = m0;
    for (; m + TILE_M <= m1; m += TILE_M)
        tile_avx2(x + (size_t)m * K, K, w, out + (size_t)m * Dout + n, Dout, TILE_M, nc, add);
    const float *xm = x + (size_t)m * K;
    float *om = out + (size_t)m * Dout + n;
    switch (m1 - m) {
    case 5: tile_avx2(xm, K, w, om, Dout, 5, nc, add); break;
    case 4: tile_avx2(xm, K, w, om, Dout, 4, nc, add); break;
    case 3: tile_avx2(xm, K, w, om, Dout, 3, nc, add); break;
    case 2: tile_avx2(xm, K, w, om, Dout, 2, nc, add); break;
    case 1: tile_avx2(xm, K, w, om, Dout, 1, nc, add); break;
    }
}

static AVX2 void block_avx2(const float *x, const float *wp, float *out, int m0, int m1, int p0, int p1, int K,
                            int Dout, float add) {
    for (int p = p0; p < p1; p++) {
        int n = p * PANEL, nc = Dout - n < PANEL ? Dout - n : PANEL;
        panel_avx2(x, wp + (size_t)p * PANEL * K, out, m0, m1, n, nc, K, Dout, add);
    }
}
#endif

static void block_portable(const float *x, const float *wp, float *out, int m0, int m1, int p0, int p1, int K,
                           int Dout, float add) {
    for (int p = p0; p < p1; p++) {
        int n = p * PANEL, nc = Dout - n < PANEL ? Dout - n : PANEL;
        tile_portable(x + (size_t)m0 * K, K, wp + (size_t)p * PANEL * K, out + (size_t)m0 * Dout + n, Dout, m1 - m0,
                      nc, add);
    }
}

int cpu_rows_avx2(void) {
#ifdef ROWS_AVX2
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !getenv("LLAMAC_ROWS_PORTABLE");
    return v;
#else
    return 0;
#endif
}

void cpu_matmul_rows(void *ctx, float *out, const float *x, const float *wp, int N, int Din, int Dout, float add) {
    (void)ctx;
    int avx = cpu_rows_avx2(), panels = (Dout + PANEL - 1) / PANEL;
    int mb = XBLOCK_FLOATS / Din / TILE_M * TILE_M;
    if (mb < TILE_M) mb = TILE_M;
#pragma omp parallel
    {
        /* each thread a contiguous range of panels, streamed once per block
         * of input rows */
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int a = (int)((long)panels * t / nt), b = (int)((long)panels * (t + 1) / nt);
        for (int m0 = 0; m0 < N && a < b; m0 += mb) {
            int m1 = m0 + mb < N ? m0 + mb : N;
#ifdef ROWS_AVX2
            if (avx) {
                block_avx2(x, wp, out, m0, m1, a, b, Din, Dout, add);
                continue;
            }
#endif
            (void)avx;
            block_portable(x, wp, out, m0, m1, a, b, Din, Dout, add);
        }
    }
}

// ----------------------------------------------------------------------------
// paged attention: one (row, KV head) per task; the G query heads of the
// group share each key and value row. Keys in position order, ATTN_CHUNK at
// a time, with an online softmax: the same code for a prompt's row in a
// batched prefill and for a decoded token, so both give the same bits.

#define ATTN_CHUNK 32
#define ATTN_GMAX 16 /* query heads per KV head at most */
#define ATTN_HSMAX 256

static inline float lanes_sum(const float a[8]) {
    float s0 = a[0] + a[4], s1 = a[1] + a[5], s2 = a[2] + a[6], s3 = a[3] + a[7];
    return (s0 + s2) + (s1 + s3);
}

VECTOR_CLONES static float dot_lanes(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    for (int l = 0; i + l < n; l++) acc[l] += a[i + l] * b[i + l];
    return lanes_sum(acc);
}

VECTOR_CLONES static void axpy_rows(float *o, float p, const float *v, int n) {
    for (int i = 0; i < n; i++) o[i] += p * v[i];
}

VECTOR_CLONES static void scale_rows(float *o, float s, int n) {
    for (int i = 0; i < n; i++) o[i] *= s;
}

/* The key and value rows of positions c0 .. (at most ATTN_CHUNK of them,
 * below len) through the page table; returns how many. */
static inline int chunk_rows(const float **kr, const float **vr, const float *k, const float *v, const int *table,
                             int c0, int len, int KVD, int P) {
    int cn = len - c0 < ATTN_CHUNK ? len - c0 : ATTN_CHUNK;
    for (int j = 0; j < cn; j++) {
        int p = c0 + j;
        size_t row = (size_t)table[p / P] * P + p % P;
        kr[j] = k + row * KVD;
        vr[j] = v + row * KVD;
    }
    return cn;
}

static void attn_one(float *out, const float *q, const float *k, const float *v, const int *table, int len, int G,
                     int KVD, int HS, int P, float scale) {
    float o[ATTN_GMAX][ATTN_HSMAX], s[ATTN_GMAX][ATTN_CHUNK], mx[ATTN_GMAX], l[ATTN_GMAX];
    for (int i = 0; i < G; i++) {
        mx[i] = -INFINITY;
        l[i] = 0.0f;
        memset(o[i], 0, (size_t)HS * sizeof(float));
    }
    for (int c0 = 0; c0 < len; c0 += ATTN_CHUNK) {
        const float *kr[ATTN_CHUNK], *vr[ATTN_CHUNK];
        int cn = chunk_rows(kr, vr, k, v, table, c0, len, KVD, P);
        for (int i = 0; i < G; i++) {
            float m = mx[i];
            for (int j = 0; j < cn; j++) {
                s[i][j] = dot_lanes(q + (size_t)i * HS, kr[j], HS) * scale;
                m = s[i][j] > m ? s[i][j] : m;
            }
            float corr = exp_approx(mx[i] - m); /* the first chunk: e^-inf = 0 */
            l[i] *= corr;
            scale_rows(o[i], corr, HS);
            for (int j = 0; j < cn; j++) {
                s[i][j] = exp_approx(s[i][j] - m);
                l[i] += s[i][j];
            }
            mx[i] = m;
        }
        for (int j = 0; j < cn; j++)
            for (int i = 0; i < G; i++) axpy_rows(o[i], s[i][j], vr[j], HS);
    }
    for (int i = 0; i < G; i++) {
        float inv = 1.0f / l[i];
        for (int c = 0; c < HS; c++) out[(size_t)i * HS + c] = o[i][c] * inv;
    }
}

#ifdef ROWS_AVX2
/* attn_one for HS a multiple of 8 with fused multiply-adds: a score is
 * eight lanes of FMAs over HS then hsum8's tree, four keys at a time (the
 * same chain per score whether its key is in a group of four or alone); an
 * output row is one FMA chain per lane over the keys in order. */
static inline AVX2 __attribute__((always_inline)) float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static AVX2 void attn_one_avx2(float *out, const float *q, const float *k, const float *v, const int *table, int len,
                               int G, int KVD, int HS, int P, float scale) {
    float o[ATTN_GMAX][ATTN_HSMAX] __attribute__((aligned(32)));
    float s[ATTN_GMAX][ATTN_CHUNK], mx[ATTN_GMAX], l[ATTN_GMAX];
    for (int i = 0; i < G; i++) {
        mx[i] = -INFINITY;
        l[i] = 0.0f;
        memset(o[i], 0, (size_t)HS * sizeof(float));
    }
    for (int c0 = 0; c0 < len; c0 += ATTN_CHUNK) {
        const float *kr[ATTN_CHUNK], *vr[ATTN_CHUNK];
        int cn = chunk_rows(kr, vr, k, v, table, c0, len, KVD, P);
        for (int i = 0; i < G; i++) {
            const float *qi = q + (size_t)i * HS;
            int j = 0;
            for (; j + 4 <= cn; j += 4) {
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (int c = 0; c < HS; c += 8) {
                    __m256 qv = _mm256_loadu_ps(qi + c);
                    a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[j] + c), a0);
                    a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[j + 1] + c), a1);
                    a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[j + 2] + c), a2);
                    a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kr[j + 3] + c), a3);
                }
                s[i][j] = hsum8(a0) * scale;
                s[i][j + 1] = hsum8(a1) * scale;
                s[i][j + 2] = hsum8(a2) * scale;
                s[i][j + 3] = hsum8(a3) * scale;
            }
            for (; j < cn; j++) {
                __m256 a0 = _mm256_setzero_ps();
                for (int c = 0; c < HS; c += 8)
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + c), _mm256_loadu_ps(kr[j] + c), a0);
                s[i][j] = hsum8(a0) * scale;
            }
            float m = mx[i];
            for (int jj = 0; jj < cn; jj++) m = s[i][jj] > m ? s[i][jj] : m;
            float corr = exp_approx(mx[i] - m);
            l[i] *= corr;
            __m256 cv = _mm256_set1_ps(corr);
            for (int c = 0; c < HS; c += 8) _mm256_store_ps(o[i] + c, _mm256_mul_ps(_mm256_load_ps(o[i] + c), cv));
            for (int jj = 0; jj < cn; jj++) {
                s[i][jj] = exp_approx(s[i][jj] - m);
                l[i] += s[i][jj];
            }
            mx[i] = m;
            for (int c = 0; c < HS; c += 8) {
                __m256 acc = _mm256_load_ps(o[i] + c);
                for (int jj = 0; jj < cn; jj++)
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(s[i][jj]), _mm256_loadu_ps(vr[jj] + c), acc);
                _mm256_store_ps(o[i] + c, acc);
            }
        }
    }
    for (int i = 0; i < G; i++) {
        __m256 inv = _mm256_set1_ps(1.0f / l[i]);
        for (int c = 0; c < HS; c += 8) _mm256_storeu_ps(out + (size_t)i * HS + c, _mm256_mul_ps(_mm256_load_ps(o[i] + c), inv));
    }
}
#endif

void cpu_attn_paged(void *ctx, float *out, const float *q, const float *k, const float *v, const int *ptab,
                    const int *slot, const int *len, int N, int H, int KV, int HS, int P, int maxp) {
    (void)ctx;
    int G = H / KV, KVD = KV * HS;
    LC_ASSERT(G <= ATTN_GMAX && HS <= ATTN_HSMAX);
    float scale = 1.0f / sqrtf((float)HS);
    int avx = cpu_rows_avx2() && HS % 8 == 0; /* one path for every row of the run */
    (void)avx;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < KV; g++) {
            size_t qo = (size_t)n * H * HS + (size_t)g * G * HS;
#ifdef ROWS_AVX2
            if (avx) {
                attn_one_avx2(out + qo, q + qo, k + (size_t)g * HS, v + (size_t)g * HS, ptab + (size_t)slot[n] * maxp,
                              len[n], G, KVD, HS, P, scale);
                continue;
            }
#endif
            attn_one(out + qo, q + qo, k + (size_t)g * HS, v + (size_t)g * HS, ptab + (size_t)slot[n] * maxp, len[n],
                     G, KVD, HS, P, scale);
        }
}

// ----------------------------------------------------------------------------
// row copies

void cpu_rows_scatter(void *ctx, float *dst, const float *src, const int *idx, int N, int W) {
    (void)ctx;
    for (int n = 0; n < N; n++) memcpy(dst + (size_t)idx[n] * W, src + (size_t)n * W, (size_t)W * sizeof(float));
}

void cpu_rows_gather(void *ctx, float *dst, const float *src, const int *idx, int N, int W) {
    (void)ctx;
    for (int n = 0; n < N; n++) memcpy(dst + (size_t)n * W, src + (size_t)idx[n] * W, (size_t)W * sizeof(float));
}
