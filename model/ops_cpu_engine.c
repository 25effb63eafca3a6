/*
 * ops_cpu_engine.c: the CPU ops of the sampling engine (ops.h, "the
 * sampling engine"): a linear, paged attention and row copies, each
 * computing a row the same way whatever the batch.
 *
 * The linear is hand-written instead of an sgemm call for two reasons
 * (anchors/engine.md): OpenBLAS packs the whole weight matrix on every call,
 * which at one row per step costs three times the weight reads, and a
 * library is free to sum in another order for another M (sgemv vs sgemm
 * differ in nine outputs of ten). Here every output is one dot product of
 * an input row and a weight row, read in place: eight lanes of fused
 * multiply-adds over Din (lane i takes the elements i, i + 8, ...; a short
 * tail is zero-padded), then the lanes summed in one fixed tree. A tile of
 * MR rows by NR outputs shares the loads; the tile shapes, the row blocking
 * and the threads' split of Dout change which outputs are computed together,
 * never how one is summed, so a row's result does not depend on N, on its
 * place in the batch or on the thread count. The portable path spells the
 * same lanes in C with fmaf and gives the same bits.
 */
#include "ops.h"
#include "ops_cpu_vec.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "ops_cpu_engine.h"

#define MR_BLOCK 64 /* rows of x kept in L2 while the weights stream past */
#define NR 4        /* outputs per tile */

// ----------------------------------------------------------------------------
// the linear, portable: eight lanes in C

static inline float lanes_sum(const float a[8]) {
    /* the tree of the AVX2 path: (l0+l4)+(l2+l6) and (l1+l5)+(l3+l7) */
    float s0 = a[0] + a[4], s1 = a[1] + a[5], s2 = a[2] + a[6], s3 = a[3] + a[7];
    return (s0 + s2) + (s1 + s3);
}

static inline void store_out(float *o, float s, float add) {
    if (add == 0.0f)
        *o = s;
    else
        *o += add * s;
}

static void tile_portable(const float *x, size_t xs, const float *w, size_t ws, float *out, size_t os, int mr,
                          int nr, int K, float add) {
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            const float *a = x + i * xs, *b = w + j * ws;
            float acc[8] = {0};
            int k = 0;
            for (; k + 8 <= K; k += 8)
                for (int l = 0; l < 8; l++) acc[l] = fmaf(a[k + l], b[k + l], acc[l]);
            for (int l = 0; k + l < K; l++) acc[l] = fmaf(a[k + l], b[k + l], acc[l]);
            store_out(out + i * os + j, lanes_sum(acc), add);
        }
}

// ----------------------------------------------------------------------------
// the linear, AVX2 + FMA

#if defined(__x86_64__) && defined(__GNUC__)
#define ROWS_AVX2 1
#define AVX2 __attribute__((target("avx2,fma")))

static inline AVX2 __attribute__((always_inline)) float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l0+l4 .. l3+l7 */
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));   /* (l0+l4)+(l2+l6), (l1+l5)+(l3+l7) */
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* An MR x NC tile (compile-time sizes after inlining): acc[i][j] is the
 * dot product of x row i and w row j. */
static inline AVX2 __attribute__((always_inline)) void tile_avx2(const float *x, size_t xs, const float *w,
                                                                 size_t ws, float *out, size_t os, const int MR,
                                                                 const int NC, int K, __m256i tail, float add) {
    __m256 acc[4][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NC; j++) acc[i][j] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[NR];
        for (int j = 0; j < NC; j++) wv[j] = _mm256_loadu_ps(w + j * ws + k);
        for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * xs + k);
            for (int j = 0; j < NC; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k < K) { /* masked loads read zeros past the end: 0 * 0 adds nothing */
        __m256 wv[NR];
        for (int j = 0; j < NC; j++) wv[j] = _mm256_maskload_ps(w + j * ws + k, tail);
        for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_maskload_ps(x + i * xs + k, tail);
            for (int j = 0; j < NC; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NC; j++) store_out(out + i * os + j, hsum8(acc[i][j]), add);
}

static AVX2 void block_avx2(const float *x, const float *w, float *out, int m0, int m1, int n0, int n1, int K,
                            int Dout, float add) {
    int t = K % 8;
    __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(t), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int n = n0; n < n1; n += NR) {
        const float *wn = w + (size_t)n * K;
        int nc = n1 - n < NR ? n1 - n : NR;
        int m = m0;
        if (nc == NR) {
            for (; m + 2 <= m1; m += 2)
                tile_avx2(x + (size_t)m * K, K, wn, K, out + (size_t)m * Dout + n, Dout, 2, NR, K, tail, add);
            if (m < m1) tile_avx2(x + (size_t)m * K, K, wn, K, out + (size_t)m * Dout + n, Dout, 1, NR, K, tail, add);
        } else {
            for (; m < m1; m++)
                for (int j = 0; j < nc; j++)
                    tile_avx2(x + (size_t)m * K, K, wn + (size_t)j * K, K, out + (size_t)m * Dout + n + j, Dout, 1,
                              1, K, tail, add);
        }
    }
}
#endif

static void block_portable(const float *x, const float *w, float *out, int m0, int m1, int n0, int n1, int K,
                           int Dout, float add) {
    for (int n = n0; n < n1; n += NR) {
        int nc = n1 - n < NR ? n1 - n : NR;
        for (int m = m0; m < m1; m++)
            tile_portable(x + (size_t)m * K, K, w + (size_t)n * K, K, out + (size_t)m * Dout + n, Dout, 1, nc, K,
                          add);
    }
}

static int use_avx2(void) {
#ifdef ROWS_AVX2
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !getenv("LLAMAC_ROWS_PORTABLE");
    return v;
#else
    return 0;
#endif
}

void cpu_matmul_rows(void *ctx, float *out, const float *x, const float *w, int N, int Din, int Dout, float add) {
    (void)ctx;
    int avx = use_avx2();
    int tiles = (Dout + NR - 1) / NR;
#pragma omp parallel
    {
        /* each thread a contiguous range of output tiles: its weight rows
         * stream once per block of MR_BLOCK input rows */
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int a = (int)((long)tiles * t / nt) * NR, b = (int)((long)tiles * (t + 1) / nt) * NR;
        if (b > Dout) b = Dout;
        for (int m0 = 0; m0 < N && a < b; m0 += MR_BLOCK) {
            int m1 = m0 + MR_BLOCK < N ? m0 + MR_BLOCK : N;
#ifdef ROWS_AVX2
            if (avx) {
                block_avx2(x, w, out, m0, m1, a, b, Din, Dout, add);
                continue;
            }
#endif
            (void)avx;
            block_portable(x, w, out, m0, m1, a, b, Din, Dout, add);
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

static void attn_one(float *out, const float *q, const float *k, const float *v, const int *table, int len, int G,
                     int KVD, int HS, int P, float scale) {
    float o[ATTN_GMAX][ATTN_HSMAX], s[ATTN_GMAX][ATTN_CHUNK], mx[ATTN_GMAX], l[ATTN_GMAX];
    for (int i = 0; i < G; i++) {
        mx[i] = -INFINITY;
        l[i] = 0.0f;
        memset(o[i], 0, (size_t)HS * sizeof(float));
    }
    for (int c0 = 0; c0 < len; c0 += ATTN_CHUNK) {
        int cn = len - c0 < ATTN_CHUNK ? len - c0 : ATTN_CHUNK;
        const float *kr[ATTN_CHUNK], *vr[ATTN_CHUNK];
        for (int j = 0; j < cn; j++) {
            int p = c0 + j;
            size_t row = (size_t)table[p / P] * P + p % P;
            kr[j] = k + row * KVD;
            vr[j] = v + row * KVD;
        }
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

void cpu_attn_paged(void *ctx, float *out, const float *q, const float *k, const float *v, const int *ptab,
                    const int *slot, const int *len, int N, int H, int KV, int HS, int P, int maxp) {
    (void)ctx;
    int G = H / KV, KVD = KV * HS;
    LC_ASSERT(G <= ATTN_GMAX && HS <= ATTN_HSMAX);
    float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < KV; g++) {
            size_t qo = (size_t)n * H * HS + (size_t)g * G * HS;
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
