/*
 * ops_cpu_qrows.c: the sampling engine's linear on a quantised weight
 * (ops.h qmatmul_rows) on the CPU: out(N, Dout) = x(N, Din) w^T with w a
 * QTensor, read block by block as it is stored.
 *
 * The summation order, which every path here reproduces bit for bit: output
 * (n, o) is the dot product of input row n with w's row o dequantised
 * (each value exactly quant_rows' float32, quant.c's expression for the
 * type) over eight lanes: lane l = 0..7 is one fused multiply-add chain
 * acc_l = fmaf(w[k], x[k], acc_l) from +0 over k = l, l + 8, l + 16, ... <
 * Din in increasing k; then the lanes are summed as
 *   ((acc_0 + acc_4) + (acc_2 + acc_6)) + ((acc_1 + acc_5) + (acc_3 + acc_7))
 * (lanes_sum; what hsum8 does to one AVX2 vector). Nothing in it depends
 * on N, on the row's place among the N, on the thread count (threads split
 * the output rows), or on the path:
 *   - fused (AVX2+FMA, the six common types, few rows): tiles of up to 4
 *     weight rows by up to 2 input rows, one vector accumulator per
 *     output; the tile's weight rows are dequantised 32 values at a time in
 *     registers (the float32 operations of quant_avx2.c's dequantisers) and
 *     each vector of 8 values feeds its column of the tile; no float copy
 *     of a weight row is ever stored;
 *   - buffered (AVX2+FMA, any type, or many rows): 4 weight rows at a time
 *     dequantised whole by quant_rows into the work buffer, then tiles of 4
 *     by 3 input rows over it (the dequantisation is shared by all N rows);
 *   - portable (any CPU, LLAMAC_ROWS_PORTABLE): quant_rows_portable one row
 *     at a time, then the lanes above in C with fmaf.
 * Unlike llama.cpp (int8 dot products on the activations quantised to
 * Q8), the activations stay float32 (DESIGN.md: compute in float32), so the
 * result is within float32 rounding of the exact product of x and the
 * dequantised matrix.
 */
#include "ops.h"
#include "ops_cpu_engine.h"

#include <math.h>
#include <omp.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#define QR_ROWS 4   /* weight rows of a tile (and of a thread's share) */
#define QR_FUSED_N 3 /* at most this many input rows take the fused path */

size_t cpu_qrows_thread_floats(int Din) { return (size_t)QR_ROWS * Din + 16; }

static inline float lanes_sum(const float a[8]) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

static inline void store_out(float *o, float s, float add) {
    if (add == 0.0f)
        *o = s;
    else
        *o += add * s;
}

/* the order above on one dequantised row w (n a multiple of 8) */
static float dot_lanes(const float *w, const float *x, int n) {
    float a[8] = {0};
    for (int k = 0; k < n; k += 8)
        for (int l = 0; l < 8; l++) a[l] = fmaf(w[k + l], x[k + l], a[l]);
    return lanes_sum(a);
}

/* output rows [a, b), portable */
static void qrows_portable(float *out, const float *x, const QTensor *w, float *row, int N, float add, int a, int b) {
    int Din = w->cols, Dout = w->rows;
    for (int o = a; o < b; o++) {
        quant_rows_portable(w, o, 1, row);
        for (int n = 0; n < N; n++)
            store_out(out + (size_t)n * Dout + o, dot_lanes(row, x + (size_t)n * Din, Din), add);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define QR_AVX2 1
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE __attribute__((always_inline)) inline

static INLINE AVX2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* a_l + a_l+4 */
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                       /* (0+4)+(2+6), (1+5)+(3+7) */
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// ----------------------------------------------------------------------------
// decoders: the 32 values [32 s, 32 s + 32) of one row as four vectors of
// eight in order, by the float32 operations of quant.c's scalar
// dequantiser (quant_avx2.c has the same steps storing to memory)

/* quant_half_to_float by F16C: the same float for every half but a
 * signalling NaN, which F16C quietens; every scale is multiplied before
 * use, which quietens it on the scalar path too, so the bits agree */
static INLINE AVX2 float half_to_float(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static INLINE AVX2 __m256 u8f(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
static INLINE AVX2 __m256 i8f(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
static INLINE AVX2 __m128i hi64(__m128i v) { return _mm_unpackhi_epi64(v, v); }

/* what a decoder needs besides the row: NF4's scales and the row's first
 * global block */
typedef struct {
    const uint8_t *absmax2;
    float offset;
    const float *code, *dyn;
    int64_t blocks_per_row;
} QrAux;

/* Q8_0: d * q */
static INLINE AVX2 void dec_q8_0(const uint8_t *row, int s, int r, const QrAux *x, __m256 *y0, __m256 *y1, __m256 *y2, __m256 *y3) {
    (void)r, (void)x;
    const uint8_t *b = row + 34 * (size_t)s;
    __m256 d = _mm256_set1_ps(half_to_float(b));
    *y0 = _mm256_mul_ps(d, i8f(_mm_loadl_epi64((const __m128i *)(b + 2))));
    *y1 = _mm256_mul_ps(d, i8f(_mm_loadl_epi64((const __m128i *)(b + 10))));
    *y2 = _mm256_mul_ps(d, i8f(_mm_loadl_epi64((const __m128i *)(b + 18))));
    *y3 = _mm256_mul_ps(d, i8f(_mm_loadl_epi64((const __m128i *)(b + 26))));
}

/* Q4_0: d * (q - 8), the subtraction in integers */
static INLINE AVX2 void dec_q4_0(const uint8_t *row, int s, int r, const QrAux *x, __m256 *y0, __m256 *y1, __m256 *y2, __m256 *y3) {
    (void)r, (void)x;
    const uint8_t *b = row + 18 * (size_t)s;
    __m256 d = _mm256_set1_ps(half_to_float(b));
    __m128i v = _mm_loadu_si128((const __m128i *)(b + 2)), m = _mm_set1_epi8(0x0f), e = _mm_set1_epi8(8);
    __m128i lo = _mm_sub_epi8(_mm_and_si128(v, m), e), hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), e);
    *y0 = _mm256_mul_ps(d, i8f(lo));
    *y1 = _mm256_mul_ps(d, i8f(hi64(lo)));
    *y2 = _mm256_mul_ps(d, i8f(hi));
    *y3 = _mm256_mul_ps(d, i8f(hi64(hi)));
}

/* Q4_1: d * q + m, two roundings */
static INLINE AVX2 void dec_q4_1(const uint8_t *row, int s, int r, const QrAux *x, __m256 *y0, __m256 *y1, __m256 *y2, __m256 *y3) {
    (void)r, (void)x;
    const uint8_t *b = row + 20 * (size_t)s;
    __m256 d = _mm256_set1_ps(half_to_float(b)), mn = _mm256_set1_ps(half_to_float(b + 2));
    __m128i v = _mm_loadu_si128((const __m128i *)(b + 4)), m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    *y0 = _mm256_add_ps(_mm256_mul_ps(d, u8f(lo)), mn);
    *y1 = _mm256_add_ps(_mm256_mul_ps(d, u8f(hi64(lo))), mn);
    *y2 = _mm256_add_ps(_mm256_mul_ps(d, u8f(hi)), mn);
    *y3 = _mm256_add_ps(_mm256_mul_ps(d, u8f(hi64(hi))), mn);
}

/* quant.c's k_scale_min */
static inline void scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q4_K: (d * sc) * q - dmin * mn, the scale products in scalar float32;
 * sub-block j of block s / 8 */
static INLINE AVX2 void dec_q4_k(const uint8_t *row, int s, int r, const QrAux *x, __m256 *y0, __m256 *y1, __m256 *y2, __m256 *y3) {
    (void)r, (void)x;
    const uint8_t *b = row + 144 * (size_t)(s / 8);
    int j = s % 8, sc, mn;
    scale_min(b + 4, j, &sc, &mn);
    __m256 ds = _mm256_set1_ps(half_to_float(b) * (float)sc), dm = _mm256_set1_ps(half_to_float(b + 2) * (float)mn);
    __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * (j / 2)));
    v = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0f));
    __m128i v0 = _mm256_castsi256_si128(v), v1 = _mm256_extracti128_si256(v, 1);
    *y0 = _mm256_sub_ps(_mm256_mul_ps(ds, u8f(v0)), dm);
    *y1 = _mm256_sub_ps(_mm256_mul_ps(ds, u8f(hi64(v0))), dm);
    *y2 = _mm256_sub_ps(_mm256_mul_ps(ds, u8f(v1)), dm);
    *y3 = _mm256_sub_ps(_mm256_mul_ps(ds, u8f(hi64(v1))), dm);
}

/* Q6_K: (d * sc) * (q - 32), the scale product in scalar float32; the 32
 * values e = 128 h + 32 k of block s / 8 */
static INLINE AVX2 void dec_q6_k(const uint8_t *row, int s, int r, const QrAux *x, __m256 *y0, __m256 *y1, __m256 *y2, __m256 *y3) {
    (void)r, (void)x;
    const uint8_t *b = row + 210 * (size_t)(s / 8), *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    int h = s % 8 / 4, k = s % 4, e = 128 * h + 32 * k;
    float d = half_to_float(b + 208);
    __m256i l = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32 * (k & 1)));
    __m256i hb = _mm256_loadu_si256((const __m256i *)(qh + 32 * h));
    l = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(l, 4) : l, _mm256_set1_epi8(0x0f));
    hb = _mm256_and_si256(_mm256_srlv_epi32(hb, _mm256_set1_epi32(2 * k)), _mm256_set1_epi8(3));
    __m256i v = _mm256_sub_epi8(_mm256_or_si256(l, _mm256_slli_epi16(hb, 4)), _mm256_set1_epi8(32));
    __m256 s0 = _mm256_set1_ps(d * (float)sc[e / 16]), s1 = _mm256_set1_ps(d * (float)sc[e / 16 + 1]);
    __m128i v0 = _mm256_castsi256_si128(v), v1 = _mm256_extracti128_si256(v, 1);
    *y0 = _mm256_mul_ps(s0, i8f(v0));
    *y1 = _mm256_mul_ps(s0, i8f(hi64(v0)));
    *y2 = _mm256_mul_ps(s1, i8f(v1));
    *y3 = _mm256_mul_ps(s1, i8f(hi64(v1)));
}

/* NF4: half s % 2 of block s / 2 (global block r * blocks_per_row + s / 2):
 * scale = dyn[code] * absmax2 then + offset, value = nf4[nibble] * scale
 * (the 16 products in two vectors, looked up); byte i gives elements 2i
 * (high nibble) and 2i + 1 (low) */
static INLINE AVX2 void dec_nf4(const uint8_t *row, int s, int r, const QrAux *x, __m256 *y0, __m256 *y1, __m256 *y2, __m256 *y3) {
    const int bb = QUANT_NF4_BLOCK / 2 + 1;
    const uint8_t *blk = row + (size_t)bb * (s / 2);
    int64_t gb = (int64_t)r * x->blocks_per_row + s / 2;
    float a2;
    memcpy(&a2, x->absmax2 + (size_t)(gb / QUANT_NF4_GROUP) * sizeof(float), sizeof a2);
    float scale = x->dyn[blk[bb - 1]] * a2;
    scale = scale + x->offset;
    __m256 sv = _mm256_set1_ps(scale), tlo = _mm256_mul_ps(_mm256_loadu_ps(x->code), sv),
           thi = _mm256_mul_ps(_mm256_loadu_ps(x->code + 8), sv);
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0), m4 = _mm256_set1_epi32(0xf);
    __m256 *o[4] = {y0, y1, y2, y3};
    for (int i = 0; i < 2; i++) {
        __m128i v = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(blk + 16 * (s % 2) + 8 * i)), dup);
        for (int half = 0; half < 2; half++) {
            __m256i idx = _mm256_cvtepu8_epi32(half ? hi64(v) : v);
            idx = _mm256_and_si256(_mm256_srlv_epi32(idx, shift), m4);
            __m256 lo = _mm256_permutevar8x32_ps(tlo, idx), hi = _mm256_permutevar8x32_ps(thi, idx);
            *o[2 * i + half] = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
        }
    }
}

// ----------------------------------------------------------------------------
// the fused tile: RW weight rows from r0 by RX input rows, each output one
// vector of eight lane chains over the row's groups of 32 in order

#define FUSED_TILE(NAME, DEC)                                                                                    \
    static INLINE AVX2 void NAME##_tile(const QTensor *w, const QrAux *aux, int r0, const float *x, float *out, \
                                        int Dout, float add, const int RW, const int RX) {                         \
        int Din = w->cols, ns = Din / 32;                                                                        \
        __m256 acc[QR_ROWS][2];                                                                                   \
        for (int i = 0; i < RW; i++)                                                                              \
            for (int j = 0; j < RX; j++) acc[i][j] = _mm256_setzero_ps();                                         \
        for (int s = 0; s < ns; s++)                                                                              \
            for (int i = 0; i < RW; i++) {                                                                        \
                __m256 v0, v1, v2, v3;                                                                            \
                DEC(w->data + (size_t)(r0 + i) * w->row_bytes, s, r0 + i, aux, &v0, &v1, &v2, &v3);               \
                for (int j = 0; j < RX; j++) {                                                                    \
                    const float *xs = x + (size_t)j * Din + 32 * s;                                              \
                    acc[i][j] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(xs), acc[i][j]);                              \
                    acc[i][j] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(xs + 8), acc[i][j]);                          \
                    acc[i][j] = _mm256_fmadd_ps(v2, _mm256_loadu_ps(xs + 16), acc[i][j]);                         \
                    acc[i][j] = _mm256_fmadd_ps(v3, _mm256_loadu_ps(xs + 24), acc[i][j]);                         \
                }                                                                                                 \
            }                                                                                                     \
        for (int i = 0; i < RW; i++)                                                                              \
            for (int j = 0; j < RX; j++) store_out(out + (size_t)j * Dout + r0 + i, hsum8(acc[i][j]), add);      \
    }                                                                                                             \
    static AVX2 void NAME##_rows(const QTensor *w, const QrAux *aux, const float *x, float *out, int N, float add, \
                                 int a, int b) {                                                                  \
        int Din = w->cols, Dout = w->rows;                                                                       \
        for (int r = a; r < b; r += QR_ROWS) {                                                                    \
            int rw = b - r < QR_ROWS ? b - r : QR_ROWS;                                                           \
            for (int n = 0; n < N; n += 2) {                                                                      \
                const float *xn = x + (size_t)n * Din;                                                            \
                float *on = out + (size_t)n * Dout;                                                               \
                int two = N - n >= 2;                                                                             \
                switch (rw * 2 + two) {                                                                           \
                case 9: NAME##_tile(w, aux, r, xn, on, Dout, add, 4, 2); break;                                   \
                case 8: NAME##_tile(w, aux, r, xn, on, Dout, add, 4, 1); break;                                   \
                case 7: NAME##_tile(w, aux, r, xn, on, Dout, add, 3, 2); break;                                   \
                case 6: NAME##_tile(w, aux, r, xn, on, Dout, add, 3, 1); break;                                   \
                case 5: NAME##_tile(w, aux, r, xn, on, Dout, add, 2, 2); break;                                   \
                case 4: NAME##_tile(w, aux, r, xn, on, Dout, add, 2, 1); break;                                   \
                case 3: NAME##_tile(w, aux, r, xn, on, Dout, add, 1, 2); break;                                   \
                default: NAME##_tile(w, aux, r, xn, on, Dout, add, 1, 1); break;                                  \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    }

FUSED_TILE(q8_0, dec_q8_0)
FUSED_TILE(q4_0, dec_q4_0)
FUSED_TILE(q4_1, dec_q4_1)
FUSED_TILE(q4_k, dec_q4_k)
FUSED_TILE(q6_k, dec_q6_k)
FUSED_TILE(nf4, dec_nf4)

typedef void (*FusedRowsFn)(const QTensor *w, const QrAux *aux, const float *x, float *out, int N, float add, int a,
                            int b);

static FusedRowsFn fused_rows(uint32_t type) {
    switch (type) {
    case QUANT_Q8_0: return q8_0_rows;
    case QUANT_Q4_0: return q4_0_rows;
    case QUANT_Q4_1: return q4_1_rows;
    case QUANT_Q4_K: return q4_k_rows;
    case QUANT_Q6_K: return q6_k_rows;
    case QUANT_NF4: return nf4_rows;
    default: return NULL;
    }
}

// ----------------------------------------------------------------------------
// the buffered tile: RW dequantised rows (wb, stride Din) by RX input rows

static INLINE AVX2 void buf_tile(const float *wb, const float *x, int Din, float *out, int Dout, float add, int r0,
                                 const int RW, const int RX) {
    __m256 acc[QR_ROWS][3];
    for (int i = 0; i < RW; i++)
        for (int j = 0; j < RX; j++) acc[i][j] = _mm256_setzero_ps();
    for (int k = 0; k < Din; k += 8) {
        __m256 xv[3];
        for (int j = 0; j < RX; j++) xv[j] = _mm256_loadu_ps(x + (size_t)j * Din + k);
        for (int i = 0; i < RW; i++) {
            __m256 wv = _mm256_loadu_ps(wb + (size_t)i * Din + k);
            for (int j = 0; j < RX; j++) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < RW; i++)
        for (int j = 0; j < RX; j++) store_out(out + (size_t)j * Dout + r0 + i, hsum8(acc[i][j]), add);
}

static AVX2 void qrows_buffered(float *out, const float *x, const QTensor *w, float *wb, int N, float add, int a,
                                int b) {
    int Din = w->cols, Dout = w->rows;
    for (int r = a; r < b; r += QR_ROWS) {
        int rw = b - r < QR_ROWS ? b - r : QR_ROWS;
        quant_rows(w, r, rw, wb);
        for (int n = 0; n < N; n += 3) {
            const float *xn = x + (size_t)n * Din;
            float *on = out + (size_t)n * Dout;
            int rx = N - n < 3 ? N - n : 3;
#define B(RW_, RX_) case (RW_) * 4 + (RX_): buf_tile(wb, xn, Din, on, Dout, add, r, RW_, RX_); break;
            switch (rw * 4 + rx) {
                B(4, 3) B(4, 2) B(4, 1) B(3, 3) B(3, 2) B(3, 1) B(2, 3) B(2, 2) B(2, 1) B(1, 3) B(1, 2) B(1, 1)
            default: LC_FATAL("buf_tile %d x %d", rw, rx);
            }
#undef B
        }
    }
}
#endif

static void qrows_run(float *out, const float *x, const QTensor *w, float *work, int N, float add, int portable) {
    int Din = w->cols, Dout = w->rows, groups = (Dout + QR_ROWS - 1) / QR_ROWS;
    LC_ASSERT(Din % 32 == 0);
#ifdef QR_AVX2
    FusedRowsFn fused = N <= QR_FUSED_N && __builtin_cpu_supports("f16c") ? fused_rows(w->type) : NULL;
    QrAux aux = {0};
    if (w->type == QUANT_NF4) {
        const uint8_t *at = w->data + ((size_t)w->rows * w->row_bytes + 15) / 16 * 16;
        memcpy(&aux.offset, at, sizeof aux.offset);
        aux.absmax2 = at + sizeof(float);
        aux.code = quant_nf4_code();
        aux.dyn = quant_nf4_dyn();
        aux.blocks_per_row = Din / QUANT_NF4_BLOCK;
    }
#endif
#pragma omp parallel
    {
        /* each thread a contiguous range of whole tiles of rows */
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int a = (int)((long)groups * t / nt) * QR_ROWS, b = (int)((long)groups * (t + 1) / nt) * QR_ROWS;
        b = b < Dout ? b : Dout;
        float *tw = work + (size_t)t * cpu_qrows_thread_floats(Din);
        if (portable)
            qrows_portable(out, x, w, tw, N, add, a, b);
#ifdef QR_AVX2
        else if (fused)
            fused(w, &aux, x, out, N, add, a, b);
        else
            qrows_buffered(out, x, w, tw, N, add, a, b);
#endif
    }
}

void cpu_qmatmul_rows(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N, float add) {
    (void)ctx;
    qrows_run(out, x, w, work, N, add, !cpu_rows_avx2());
}

void cpu_qmatmul_rows_portable(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N,
                               float add) {
    (void)ctx;
    qrows_run(out, x, w, work, N, add, 1);
}
