/*
 * ops_cpu_qrows.c: the sampling engine's linear on a quantised weight
 * (ops.h qmatmul_rows) on the CPU: out(N, Dout) = x(N, Din) w^T with w a
 * QTensor, read block by block as it is stored.
 *
 * Every block type here is, per group of 32 values (a block, or a K-type
 * sub-block, or half an NF4 block), integer codes q (NF4: its codebook's
 * floats) with float32 scales: value = a * q + c, a per 16 values (two
 * scales a0, a1 per group for Q6_K, one for the rest), c per group (Q4_1,
 * Q5_1: the min; Q4_K, Q5_K: -dmin * mn; else none). a and c are formed as
 * quant.c forms them, so a * q + c in two roundings is quant_rows' value.
 *
 * The summation order, which every path reproduces bit for bit: output
 * (n, o) keeps eight lanes acc_l, l = 0..7, from +0. Group g covers
 * k = 32g .. 32g + 31 as four vectors V0..V3 of eight (lane l of Vv is
 * k = 32g + 8v + l). Per lane, with x the input row:
 *   one scale:   p = q*x (V0); p = fmaf(q, x, p) for V1, V2, V3;
 *                acc = fmaf(a, p, acc);
 *                with a min: sx = x(V0) + x(V1) + x(V2) + x(V3) (left to
 *                right), acc = fmaf(c, sx, acc);
 *   two scales:  p = q*x (V0); p = fmaf(q, x, p) (V1); acc = fmaf(a0, p, acc);
 *                p = q*x (V2); p = fmaf(q, x, p) (V3); acc = fmaf(a1, p, acc);
 * groups in increasing g; then
 *   out = ((acc_0 + acc_4) + (acc_2 + acc_6)) + ((acc_1 + acc_5) + (acc_3 + acc_7))
 * (lanes_sum; what hsum8 does to a vector). The scale multiplies a
 * group's partial sum instead of each value, which takes two of the four
 * float operations per value off a Q4_1 dot product (llama.cpp's block dot
 * products factor the same way, in integers). Nothing depends on N, on the
 * row's place among the N, on the thread count (threads split the output
 * rows) or on the path:
 *   - fused (AVX2+FMA+F16C, the six common types, few rows): tiles of up
 *     to 4 weight rows by up to 2 input rows, one accumulator vector per
 *     output; each group's codes are unpacked in registers and feed the
 *     tile's column; no float copy of a weight row is ever stored;
 *   - buffered (AVX2, any type, or many rows): 4 weight rows at a time
 *     unpacked into codes and scales in the work buffer (the six types by
 *     the same vector code, the others by the portable unpacker), then
 *     tiles of 2 weight rows by 3 input rows over them;
 *   - portable (any CPU, LLAMAC_ROWS_PORTABLE): the scalar unpacker one
 *     row at a time, then the lanes above in C with fmaf.
 * Unlike llama.cpp (int8 products with the activations quantised to Q8)
 * the activations stay float32 (DESIGN.md: compute in float32), so the
 * result is within float32 rounding of the exact product of x and the
 * dequantised matrix (tests/test_ops.c: 1e-5 of the double product).
 */
#include "ops.h"
#include "ops_cpu_engine.h"

#include <math.h>
#include <omp.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#define QR_ROWS 4    /* weight rows of a tile (and of a thread's share) */
#define QR_FUSED_N 3 /* at most this many input rows take the fused path */
#define QR_BUF_RX 3 /* input rows of a buffered tile (by 2 weight rows) */
#define QR_SC 3      /* floats of scales per group: a0, a1, c */
#define QR_PREFETCH 1 /* tiles of rows ahead the fused tile prefetches: decoding streams the weights from
                        * memory, and one tile ahead took one-thread decoding from ~42 to ~55 tok/s */

/* per row: Din codes and Din / 32 * QR_SC scales */
static size_t row_floats(int Din) { return (size_t)Din + (size_t)Din / 32 * QR_SC; }

size_t cpu_qrows_thread_floats(int Din) { return (size_t)QR_ROWS * row_floats(Din) + 16; }

/* what kind of scales a type has */
static int two_scales(uint32_t t) { return t == QUANT_Q6_K; }
static int has_min(uint32_t t) { return t == QUANT_Q4_1 || t == QUANT_Q5_1 || t == QUANT_Q4_K || t == QUANT_Q5_K; }

static inline float lanes_sum(const float a[8]) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

static inline void store_out(float *o, float s, float add) {
    if (add == 0.0f)
        *o = s;
    else
        *o += add * s;
}

// ----------------------------------------------------------------------------
// the portable unpacker: row r of w into codes q (Din) and scales sc
// (Din / 32 groups of a0, a1, c), quant.c's arithmetic

static inline float rdh(const uint8_t *p) { return quant_half_to_float((uint16_t)(p[0] | p[1] << 8)); }

static void k_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

static void unpack_row(const QTensor *w, int r, float *q, float *sc) {
    const uint8_t *row = w->data + (size_t)r * w->row_bytes;
    int ng = w->cols / 32;
    for (int g = 0; g < ng; g++, q += 32, sc += QR_SC) {
        float a = 0, a1 = 0, c = 0;
        const uint8_t *b;
        switch (w->type) {
        case QUANT_Q8_0:
            b = row + 34 * (size_t)g;
            a = rdh(b);
            for (int i = 0; i < 32; i++) q[i] = (float)(int8_t)b[2 + i];
            break;
        case QUANT_Q4_0:
        case QUANT_Q4_1:
            b = row + (w->type == QUANT_Q4_0 ? 18 : 20) * (size_t)g;
            a = rdh(b);
            if (w->type == QUANT_Q4_1) c = rdh(b + 2), b += 2;
            for (int i = 0; i < 16; i++) {
                int lo = b[2 + i] & 0xf, hi = b[2 + i] >> 4, z = w->type == QUANT_Q4_0 ? 8 : 0;
                q[i] = (float)(lo - z);
                q[i + 16] = (float)(hi - z);
            }
            break;
        case QUANT_Q5_0:
        case QUANT_Q5_1: {
            int one = w->type == QUANT_Q5_1;
            b = row + (one ? 24 : 22) * (size_t)g;
            a = rdh(b);
            if (one) c = rdh(b + 2);
            const uint8_t *h = b + 2 + 2 * one, *qs = h + 4;
            uint32_t qh = (uint32_t)(h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24);
            for (int i = 0; i < 16; i++) {
                int lo = (qs[i] & 0xf) | ((qh >> i) & 1) << 4, hi = (qs[i] >> 4) | ((qh >> (i + 16)) & 1) << 4;
                q[i] = (float)(lo - (one ? 0 : 16));
                q[i + 16] = (float)(hi - (one ? 0 : 16));
            }
            break;
        }
        case QUANT_Q4_K:
        case QUANT_Q5_K: {
            int five = w->type == QUANT_Q5_K, j = g % 8, s, m;
            b = row + (five ? 176 : 144) * (size_t)(g / 8);
            k_scale_min(b + 4, j, &s, &m);
            a = rdh(b) * (float)s;
            c = -(rdh(b + 2) * (float)m);
            const uint8_t *qh = b + 16, *qq = b + (five ? 48 : 16) + 32 * (j / 2);
            for (int i = 0; i < 32; i++) {
                int v = (qq[i] >> (4 * (j & 1))) & 0xf;
                if (five) v |= ((qh[i] >> j) & 1) << 4;
                q[i] = (float)v;
            }
            break;
        }
        case QUANT_Q6_K: {
            b = row + 210 * (size_t)(g / 8);
            const int8_t *s8 = (const int8_t *)(b + 192);
            int h = g % 8 / 4, k = g % 4, e = 128 * h + 32 * k;
            float d = rdh(b + 208);
            a = d * (float)s8[e / 16];
            a1 = d * (float)s8[e / 16 + 1];
            for (int i = 0; i < 32; i++) {
                int lo = (b[64 * h + 32 * (k & 1) + i] >> (4 * (k / 2))) & 0xf;
                int hi = (b[128 + 32 * h + i] >> (2 * k)) & 3;
                q[i] = (float)((lo | hi << 4) - 32);
            }
            break;
        }
        case QUANT_NF4: {
            const int bb = QUANT_NF4_BLOCK / 2 + 1;
            const uint8_t *aux = w->data + ((size_t)w->rows * w->row_bytes + 15) / 16 * 16;
            const float *code = quant_nf4_code(), *dyn = quant_nf4_dyn();
            int64_t gb = (int64_t)r * (w->cols / QUANT_NF4_BLOCK) + g / 2;
            float off, a2;
            memcpy(&off, aux, sizeof off);
            memcpy(&a2, aux + (size_t)(1 + gb / QUANT_NF4_GROUP) * sizeof(float), sizeof a2);
            b = row + (size_t)bb * (g / 2);
            a = dyn[b[bb - 1]] * a2;
            a = a + off;
            for (int i = 0; i < 16; i++) {
                q[2 * i] = code[b[16 * (g % 2) + i] >> 4];
                q[2 * i + 1] = code[b[16 * (g % 2) + i] & 0xf];
            }
            break;
        }
        default: LC_FATAL("qmatmul_rows: type %u", w->type);
        }
        sc[0] = a;
        sc[1] = two_scales(w->type) ? a1 : a;
        sc[2] = c;
    }
}

/* the order above on an unpacked row */
static float dot_portable(const float *q, const float *sc, const float *x, int Din, int two, int mins) {
    float acc[8] = {0};
    for (int k0 = 0; k0 < Din; k0 += 32, sc += QR_SC) {
        const float *qg = q + k0, *xg = x + k0;
        for (int l = 0; l < 8; l++) {
            float p = qg[l] * xg[l];
            p = fmaf(qg[8 + l], xg[8 + l], p);
            if (two) {
                acc[l] = fmaf(sc[0], p, acc[l]);
                p = qg[16 + l] * xg[16 + l];
            } else {
                p = fmaf(qg[16 + l], xg[16 + l], p);
            }
            p = fmaf(qg[24 + l], xg[24 + l], p);
            acc[l] = fmaf(sc[two], p, acc[l]);
            if (mins) {
                float sx = xg[l] + xg[8 + l];
                sx = sx + xg[16 + l];
                sx = sx + xg[24 + l];
                acc[l] = fmaf(sc[2], sx, acc[l]);
            }
        }
    }
    return lanes_sum(acc);
}

/* output rows [a, b), portable */
static void qrows_portable(float *out, const float *x, const QTensor *w, float *buf, int N, float add, int a, int b) {
    int Din = w->cols, Dout = w->rows, two = two_scales(w->type), mins = has_min(w->type);
    float *sc = buf + Din;
    for (int o = a; o < b; o++) {
        unpack_row(w, o, buf, sc);
        for (int n = 0; n < N; n++)
            store_out(out + (size_t)n * Dout + o, dot_portable(buf, sc, x + (size_t)n * Din, Din, two, mins), add);
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
// decoders: group s of one row as four code vectors q0..q3 and its scales
// a0, a1 (= a0 but for Q6_K), c (0 where the type has no min): what
// unpack_row gives, in registers

/* quant_half_to_float by F16C: the same float for every half but a
 * signalling NaN, which F16C quietens; every scale goes through a multiply
 * or fmaf before it reaches a sum, which quietens it on the portable path
 * too, so the bits agree */
static INLINE AVX2 float half_to_float(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static INLINE AVX2 __m256 i8f(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
static INLINE AVX2 __m128i hi64(__m128i v) { return _mm_unpackhi_epi64(v, v); }

/* NF4's scales and codebooks */
typedef struct {
    const uint8_t *absmax2;
    float offset;
    const float *code, *dyn;
    int64_t blocks_per_row;
} QrAux;

#define DEC_ARGS const uint8_t *row, int s, int r, const QrAux *x, __m256 *q0, __m256 *q1, __m256 *q2, __m256 *q3, \
                 float *a0, float *a1, float *c

static INLINE AVX2 void dec_q8_0(DEC_ARGS) {
    (void)r, (void)x;
    const uint8_t *b = row + 34 * (size_t)s;
    *a0 = *a1 = half_to_float(b);
    *c = 0;
    *q0 = i8f(_mm_loadl_epi64((const __m128i *)(b + 2)));
    *q1 = i8f(_mm_loadl_epi64((const __m128i *)(b + 10)));
    *q2 = i8f(_mm_loadl_epi64((const __m128i *)(b + 18)));
    *q3 = i8f(_mm_loadl_epi64((const __m128i *)(b + 26)));
}

/* the 32 nibbles of 16 bytes as int32 vectors: elements 0-7 and 8-15 the
 * low nibbles of bytes 0-7 and 8-15, 16-23 and 24-31 their high nibbles
 * (two widening loads, the nibbles split in 32-bit lanes: fewer shuffles
 * than splitting the bytes first) */
static INLINE AVX2 void nib32(const uint8_t *b, __m256i *e0, __m256i *e1, __m256i *e2, __m256i *e3) {
    __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));
    __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 8)));
    __m256i m = _mm256_set1_epi32(0x0f);
    *e0 = _mm256_and_si256(v0, m), *e1 = _mm256_and_si256(v1, m);
    *e2 = _mm256_srli_epi32(v0, 4), *e3 = _mm256_srli_epi32(v1, 4);
}

static INLINE AVX2 void dec_q4_0(DEC_ARGS) {
    (void)r, (void)x;
    const uint8_t *b = row + 18 * (size_t)s;
    *a0 = *a1 = half_to_float(b);
    *c = 0;
    __m256i e0, e1, e2, e3, e = _mm256_set1_epi32(8);
    nib32(b + 2, &e0, &e1, &e2, &e3);
    *q0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(e0, e)), *q1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(e1, e));
    *q2 = _mm256_cvtepi32_ps(_mm256_sub_epi32(e2, e)), *q3 = _mm256_cvtepi32_ps(_mm256_sub_epi32(e3, e));
}

static INLINE AVX2 void dec_q4_1(DEC_ARGS) {
    (void)r, (void)x;
    const uint8_t *b = row + 20 * (size_t)s;
    *a0 = *a1 = half_to_float(b);
    *c = half_to_float(b + 2);
    __m256i e0, e1, e2, e3;
    nib32(b + 4, &e0, &e1, &e2, &e3);
    *q0 = _mm256_cvtepi32_ps(e0), *q1 = _mm256_cvtepi32_ps(e1);
    *q2 = _mm256_cvtepi32_ps(e2), *q3 = _mm256_cvtepi32_ps(e3);
}

static INLINE AVX2 void dec_q4_k(DEC_ARGS) {
    (void)r, (void)x;
    const uint8_t *b = row + 144 * (size_t)(s / 8);
    int j = s % 8, sc, mn;
    k_scale_min(b + 4, j, &sc, &mn);
    *a0 = *a1 = half_to_float(b) * (float)sc;
    *c = -(half_to_float(b + 2) * (float)mn);
    const uint8_t *qq = b + 16 + 32 * (j / 2);
    __m256i m = _mm256_set1_epi32(0x0f);
    __m256 *o[4] = {q0, q1, q2, q3};
    for (int g = 0; g < 4; g++) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qq + 8 * g)));
        *o[g] = _mm256_cvtepi32_ps(_mm256_and_si256(j & 1 ? _mm256_srli_epi32(v, 4) : v, m));
    }
}

static INLINE AVX2 void dec_q6_k(DEC_ARGS) {
    (void)r, (void)x;
    const uint8_t *b = row + 210 * (size_t)(s / 8), *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    int h = s % 8 / 4, k = s % 4, e = 128 * h + 32 * k;
    float d = half_to_float(b + 208);
    *a0 = d * (float)sc[e / 16];
    *a1 = d * (float)sc[e / 16 + 1];
    *c = 0;
    __m256i l = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32 * (k & 1)));
    __m256i hb = _mm256_loadu_si256((const __m256i *)(qh + 32 * h));
    l = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(l, 4) : l, _mm256_set1_epi8(0x0f));
    hb = _mm256_and_si256(_mm256_srlv_epi32(hb, _mm256_set1_epi32(2 * k)), _mm256_set1_epi8(3));
    __m256i v = _mm256_sub_epi8(_mm256_or_si256(l, _mm256_slli_epi16(hb, 4)), _mm256_set1_epi8(32));
    __m128i v0 = _mm256_castsi256_si128(v), v1 = _mm256_extracti128_si256(v, 1);
    *q0 = i8f(v0), *q1 = i8f(hi64(v0)), *q2 = i8f(v1), *q3 = i8f(hi64(v1));
}

/* NF4: the codebook's 16 floats in two vectors, looked up per nibble; byte
 * i gives elements 2i (high nibble) and 2i + 1 (low) */
static INLINE AVX2 void dec_nf4(DEC_ARGS) {
    const int bb = QUANT_NF4_BLOCK / 2 + 1;
    const uint8_t *blk = row + (size_t)bb * (s / 2);
    int64_t gb = (int64_t)r * x->blocks_per_row + s / 2;
    float a2;
    memcpy(&a2, x->absmax2 + (size_t)(gb / QUANT_NF4_GROUP) * sizeof(float), sizeof a2);
    float scale = x->dyn[blk[bb - 1]] * a2;
    *a0 = *a1 = scale + x->offset;
    *c = 0;
    const __m256 tlo = _mm256_loadu_ps(x->code), thi = _mm256_loadu_ps(x->code + 8);
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0), m4 = _mm256_set1_epi32(0xf);
    __m256 *o[4] = {q0, q1, q2, q3};
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

/* one group of one output: the order of the file's comment. x: the group's
 * 32 inputs; sx: their lane sums (with a min only) */
static INLINE AVX2 __m256 group_fma(__m256 acc, __m256 q0, __m256 q1, __m256 q2, __m256 q3, const float *x, __m256 a0,
                                    __m256 a1, __m256 c, __m256 sx, const int TWO, const int MIN) {
    __m256 p = _mm256_mul_ps(q0, _mm256_loadu_ps(x));
    p = _mm256_fmadd_ps(q1, _mm256_loadu_ps(x + 8), p);
    if (TWO) {
        acc = _mm256_fmadd_ps(a0, p, acc);
        p = _mm256_mul_ps(q2, _mm256_loadu_ps(x + 16));
    } else {
        p = _mm256_fmadd_ps(q2, _mm256_loadu_ps(x + 16), p);
    }
    p = _mm256_fmadd_ps(q3, _mm256_loadu_ps(x + 24), p);
    acc = _mm256_fmadd_ps(TWO ? a1 : a0, p, acc);
    if (MIN) acc = _mm256_fmadd_ps(c, sx, acc);
    return acc;
}

static INLINE AVX2 __m256 group_sx(const float *x) {
    __m256 sx = _mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8));
    sx = _mm256_add_ps(sx, _mm256_loadu_ps(x + 16));
    return _mm256_add_ps(sx, _mm256_loadu_ps(x + 24));
}

// ----------------------------------------------------------------------------
// the fused tile: RW weight rows from r0 by RX input rows

#define FUSED_TILE(NAME, DEC, TWO, MIN)                                                                          \
    static INLINE AVX2 void NAME##_tile(const QTensor *w, const QrAux *aux, int r0, const float *x, float *out, \
                                        int Dout, float add, const int RW, const int RX) {                         \
        int Din = w->cols, ns = Din / 32;                                                                        \
        size_t pf = QR_PREFETCH * QR_ROWS * w->row_bytes, gbytes = w->row_bytes / ns; /* about a group's */     \
        __m256 acc[QR_ROWS][2], sx[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};                              \
        for (int i = 0; i < RW; i++)                                                                              \
            for (int j = 0; j < RX; j++) acc[i][j] = _mm256_setzero_ps();                                         \
        for (int s = 0; s < ns; s++) {                                                                            \
            if (MIN)                                                                                              \
                for (int j = 0; j < RX; j++) sx[j] = group_sx(x + (size_t)j * Din + 32 * s);                    \
            for (int i = 0; i < RW; i++) {                                                                        \
                __m256 q0, q1, q2, q3;                                                                            \
                float a0, a1, c;                                                                                  \
                const uint8_t *row = w->data + (size_t)(r0 + i) * w->row_bytes;                                  \
                _mm_prefetch((const char *)row + (size_t)s * gbytes + pf, _MM_HINT_T0);                               \
                DEC(row, s, r0 + i, aux, &q0, &q1, &q2, &q3, &a0, &a1, &c);                                       \
                __m256 va0 = _mm256_set1_ps(a0), va1 = _mm256_set1_ps(a1), vc = _mm256_set1_ps(c);               \
                for (int j = 0; j < RX; j++)                                                                      \
                    acc[i][j] = group_fma(acc[i][j], q0, q1, q2, q3, x + (size_t)j * Din + 32 * s, va0, va1, vc,  \
                                          sx[j], TWO, MIN);                                                       \
            }                                                                                                     \
        }                                                                                                         \
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
    }                                                                                                             \
    /* rows [r0, r0 + rw) unpacked into buf (codes, then scales), as unpack_row */                               \
    static AVX2 void NAME##_unpack(const QTensor *w, const QrAux *aux, int r0, int rw, float *buf) {              \
        int Din = w->cols, ns = Din / 32;                                                                        \
        for (int i = 0; i < rw; i++) {                                                                            \
            float *q = buf + (size_t)i * row_floats(Din), *sc = q + Din;                                          \
            const uint8_t *row = w->data + (size_t)(r0 + i) * w->row_bytes;                                      \
            for (int s = 0; s < ns; s++) {                                                                        \
                __m256 q0, q1, q2, q3;                                                                            \
                DEC(row, s, r0 + i, aux, &q0, &q1, &q2, &q3, sc + QR_SC * s, sc + QR_SC * s + 1, sc + QR_SC * s + 2); \
                _mm256_storeu_ps(q + 32 * s, q0);                                                                 \
                _mm256_storeu_ps(q + 32 * s + 8, q1);                                                             \
                _mm256_storeu_ps(q + 32 * s + 16, q2);                                                            \
                _mm256_storeu_ps(q + 32 * s + 24, q3);                                                            \
            }                                                                                                     \
        }                                                                                                         \
    }

FUSED_TILE(q8_0, dec_q8_0, 0, 0)
FUSED_TILE(q4_0, dec_q4_0, 0, 0)
FUSED_TILE(q4_1, dec_q4_1, 0, 1)
FUSED_TILE(q4_k, dec_q4_k, 0, 1)
FUSED_TILE(q6_k, dec_q6_k, 1, 0)
FUSED_TILE(nf4, dec_nf4, 0, 0)

typedef void (*FusedRowsFn)(const QTensor *w, const QrAux *aux, const float *x, float *out, int N, float add, int a,
                            int b);
typedef void (*UnpackFn)(const QTensor *w, const QrAux *aux, int r0, int rw, float *buf);

static const struct {
    uint32_t type;
    FusedRowsFn rows;
    UnpackFn unpack;
} fused_types[] = {
    {QUANT_Q8_0, q8_0_rows, q8_0_unpack}, {QUANT_Q4_0, q4_0_rows, q4_0_unpack}, {QUANT_Q4_1, q4_1_rows, q4_1_unpack},
    {QUANT_Q4_K, q4_k_rows, q4_k_unpack}, {QUANT_Q6_K, q6_k_rows, q6_k_unpack}, {QUANT_NF4, nf4_rows, nf4_unpack},
};

// ----------------------------------------------------------------------------
// the buffered tile: RW unpacked rows (wb, stride row_floats) by RX input rows

static INLINE AVX2 void buf_tile(const float *wb, const float *x, int Din, float *out, int Dout, float add, int r0,
                                 const int RW, const int RX, const int TWO, const int MIN) {
    size_t rs = row_floats(Din);
    __m256 acc[2][3], p[2][3];
    for (int i = 0; i < RW; i++)
        for (int j = 0; j < RX; j++) acc[i][j] = _mm256_setzero_ps();
    for (int s = 0; s < Din / 32; s++) {
        const float *sc[2] = {wb + Din + QR_SC * s, wb + rs + Din + QR_SC * s};
        /* group_fma's order, the inputs loaded once for the tile's rows */
        for (int v = 0; v < 4; v++) {
            for (int j = 0; j < RX; j++) {
                __m256 xv = _mm256_loadu_ps(x + (size_t)j * Din + 32 * s + 8 * v);
                for (int i = 0; i < RW; i++) {
                    __m256 qv = _mm256_loadu_ps(wb + (size_t)i * rs + 32 * s + 8 * v);
                    p[i][j] = v == 0 || (TWO && v == 2) ? _mm256_mul_ps(qv, xv) : _mm256_fmadd_ps(qv, xv, p[i][j]);
                }
            }
            if (TWO && v == 1)
                for (int i = 0; i < RW; i++) {
                    __m256 a0 = _mm256_broadcast_ss(sc[i]);
                    for (int j = 0; j < RX; j++) acc[i][j] = _mm256_fmadd_ps(a0, p[i][j], acc[i][j]);
                }
        }
        for (int i = 0; i < RW; i++) {
            __m256 a = _mm256_broadcast_ss(sc[i] + TWO);
            for (int j = 0; j < RX; j++) acc[i][j] = _mm256_fmadd_ps(a, p[i][j], acc[i][j]);
        }
        if (MIN)
            for (int j = 0; j < RX; j++) {
                __m256 sx = group_sx(x + (size_t)j * Din + 32 * s);
                for (int i = 0; i < RW; i++) acc[i][j] = _mm256_fmadd_ps(_mm256_broadcast_ss(sc[i] + 2), sx, acc[i][j]);
            }
    }
    for (int i = 0; i < RW; i++)
        for (int j = 0; j < RX; j++) store_out(out + (size_t)j * Dout + r0 + i, hsum8(acc[i][j]), add);
}

#define BUF_KIND(NAME, TWO, MIN)                                                                                  \
    static AVX2 void NAME(const float *wb, const float *x, int Din, float *out, int Dout, float add, int r0,      \
                          int rw, int rx) {                                                                       \
        switch (rw * 4 + rx) {                                                                                    \
        case 11: buf_tile(wb, x, Din, out, Dout, add, r0, 2, 3, TWO, MIN); break;                                 \
        case 10: buf_tile(wb, x, Din, out, Dout, add, r0, 2, 2, TWO, MIN); break;                                 \
        case 9: buf_tile(wb, x, Din, out, Dout, add, r0, 2, 1, TWO, MIN); break;                                  \
        case 7: buf_tile(wb, x, Din, out, Dout, add, r0, 1, 3, TWO, MIN); break;                                  \
        case 6: buf_tile(wb, x, Din, out, Dout, add, r0, 1, 2, TWO, MIN); break;                                  \
        case 5: buf_tile(wb, x, Din, out, Dout, add, r0, 1, 1, TWO, MIN); break;                                  \
        default: LC_FATAL("buf_tile %d x %d", rw, rx);                                                            \
        }                                                                                                         \
    }
BUF_KIND(buf_plain, 0, 0)
BUF_KIND(buf_min, 0, 1)
BUF_KIND(buf_two, 1, 0)

static AVX2 void qrows_buffered(float *out, const float *x, const QTensor *w, const QrAux *aux, UnpackFn unpack,
                                float *wb, int N, float add, int a, int b) {
    int Din = w->cols, Dout = w->rows;
    void (*tile)(const float *, const float *, int, float *, int, float, int, int, int) =
        two_scales(w->type) ? buf_two : has_min(w->type) ? buf_min : buf_plain;
    for (int r = a; r < b; r += QR_ROWS) {
        int rw = b - r < QR_ROWS ? b - r : QR_ROWS;
        if (unpack)
            unpack(w, aux, r, rw, wb);
        else
            for (int i = 0; i < rw; i++) {
                float *q = wb + (size_t)i * row_floats(Din);
                unpack_row(w, r + i, q, q + Din);
            }
        for (int i0 = 0; i0 < rw; i0 += 2)
            for (int n = 0; n < N; n += QR_BUF_RX)
                tile(wb + (size_t)i0 * row_floats(Din), x + (size_t)n * Din, Din, out + (size_t)n * Dout, Dout, add,
                     r + i0, rw - i0 < 2 ? rw - i0 : 2, N - n < QR_BUF_RX ? N - n : QR_BUF_RX);
    }
}
#endif

static void qrows_run(float *out, const float *x, const QTensor *w, float *work, int N, float add, int portable) {
    int Din = w->cols, Dout = w->rows, groups = (Dout + QR_ROWS - 1) / QR_ROWS;
    LC_ASSERT(Din % 32 == 0);
#ifdef QR_AVX2
    FusedRowsFn fused = NULL;
    UnpackFn unpack = NULL;
    if (!portable && __builtin_cpu_supports("f16c"))
        for (size_t i = 0; i < sizeof fused_types / sizeof fused_types[0]; i++)
            if (fused_types[i].type == w->type) fused = fused_types[i].rows, unpack = fused_types[i].unpack;
    if (N > QR_FUSED_N) fused = NULL;
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
            qrows_buffered(out, x, w, &aux, unpack, tw, N, add, a, b);
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
