/*
 * quant.c: see quant.h. The type table (name, block size, block bytes,
 * dequantiser) is ggml's: gguf-py's constants.py GGML_QUANT_SIZES gives the
 * sizes, quants.py the layouts the dequantisers follow (element order and
 * float32 rounding included, so values are bit-identical to
 * gguf.quants.dequantize; scripts/gguf_ref.py checks this). NF4 follows
 * bitsandbytes (its codebook, its double quantisation); the quantisers
 * follow ggml's reference ones (quantize_row_*_ref), which are what
 * llama.cpp writes without an importance matrix.
 */
#include "quant.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// ---------------------------------------------------------------------------
// scalars

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline float h2f(const uint8_t *p);

float quant_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | man << 13; /* inf, nan */
    } else if (exp) {
        u = sign | (exp + 112) << 23 | man << 13;
    } else if (man) { /* subnormal: normalise */
        int s = 0;
        while (!(man & 0x400)) man <<= 1, s++;
        u = sign | (uint32_t)(113 - s) << 23 | (man & 0x3ff) << 13;
    } else {
        u = sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* NaN as numpy makes it: the top payload bits, kept a NaN */
uint16_t quant_float_to_half(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)(u >> 16 & 0x8000);
    uint32_t a = u & 0x7fffffff, ex = a >> 23, man = a & 0x7fffff;
    if (a > 0x7f800000) {
        uint16_t h = (uint16_t)(0x7c00 | man >> 13);
        return sign | (h == 0x7c00 ? 0x7c01 : h);
    }
    if (a >= 0x477ff000) return sign | 0x7c00;      /* 65520 and up round to infinity */
    if (a < 0x33000000) return sign;                /* at most 2^-25: rounds to zero */
    uint32_t h, rem, half;
    if (ex < 113) {                                 /* a half subnormal: units of 2^-24 */
        uint32_t m = man | 0x800000, sh = 126 - ex;
        h = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
    } else {
        h = (ex - 112) << 10 | man >> 13, rem = man & 0x1fff, half = 0x1000;
    }
    if (rem > half || (rem == half && (h & 1))) h++; /* a carry into the exponent is right */
    return sign | (uint16_t)h;
}

static inline float h2f(const uint8_t *p) { return quant_half_to_float(rd16(p)); }

// ---------------------------------------------------------------------------
// dequantisers: one block of the type from b into y

#define QK 32   /* elements per block of the legacy types */
#define QK_K 256 /* ... of the K types */

static void dq_f32(const uint8_t *b, float *y) { memcpy(y, b, 4); }
static void dq_f16(const uint8_t *b, float *y) { *y = h2f(b); }
static void dq_bf16(const uint8_t *b, float *y) {
    uint32_t u = (uint32_t)rd16(b) << 16;
    memcpy(y, &u, 4);
}

/* Q8_0: f16 d, int8 q[32]; y = d * q */
static void dq_q8_0(const uint8_t *b, float *y) {
    float d = h2f(b);
    for (int i = 0; i < QK; i++) y[i] = d * (float)(int8_t)b[2 + i];
}

/* Q4_0: f16 d, q[16] nibbles: low nibble of byte j is element j, high is j + 16; y = d * (q - 8) */
static void dq_q4_0(const uint8_t *b, float *y) {
    float d = h2f(b);
    const uint8_t *q = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (float)((q[j] & 0xf) - 8);
        y[j + QK / 2] = d * (float)((q[j] >> 4) - 8);
    }
}

/* Q4_1: f16 d, f16 m, q[16]; y = d * q + m */
static void dq_q4_1(const uint8_t *b, float *y) {
    float d = h2f(b), m = h2f(b + 2);
    const uint8_t *q = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (float)(q[j] & 0xf) + m;
        y[j + QK / 2] = d * (float)(q[j] >> 4) + m;
    }
}

/* Q5_0: f16 d, uint32 qh (bit i: the fifth bit of element i), q[16]; y = d * (q - 16) */
static void dq_q5_0(const uint8_t *b, float *y) {
    float d = h2f(b);
    uint32_t qh = rd32(b + 2);
    const uint8_t *q = b + 6;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (q[j] & 0xf) | ((qh >> j) & 1) << 4, hi = (q[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (float)(lo - 16);
        y[j + QK / 2] = d * (float)(hi - 16);
    }
}

/* Q5_1: f16 d, f16 m, qh, q[16]; y = d * q + m */
static void dq_q5_1(const uint8_t *b, float *y) {
    float d = h2f(b), m = h2f(b + 2);
    uint32_t qh = rd32(b + 4);
    const uint8_t *q = b + 8;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (q[j] & 0xf) | ((qh >> j) & 1) << 4, hi = (q[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (float)lo + m;
        y[j + QK / 2] = d * (float)hi + m;
    }
}

/* The 8 six-bit (scale, min) pairs of a Q4_K/Q5_K block packed in 12 bytes:
 * pairs 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); pairs
 * 4-7 in the nibbles of bytes 8-11 plus the top 2 bits of bytes 0-7. */
static void k_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], q[128]: 8 sub-blocks of 32; sub-block
 * 2c (2c + 1) is the low (high) nibbles of q[32c .. 32c + 32);
 * y = (d * sc) * q - dmin * mn */
static void dq_q4_k(const uint8_t *b, float *y) {
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *s = b + 4, *q = b + 16;
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k_scale_min(s, j, &sc, &mn);
        float ds = d * (float)sc, dm = dmin * (float)mn;
        const uint8_t *qq = q + 32 * (j / 2);
        int shift = 4 * (j & 1);
        for (int l = 0; l < 32; l++) y[32 * j + l] = ds * (float)((qq[l] >> shift) & 0xf) - dm;
    }
}

/* Q5_K: as Q4_K with qh[32] between the scales and q: bit j of qh[l] is the
 * fifth bit of element l of sub-block j */
static void dq_q5_k(const uint8_t *b, float *y) {
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *s = b + 4, *qh = b + 16, *q = b + 48;
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k_scale_min(s, j, &sc, &mn);
        float ds = d * (float)sc, dm = dmin * (float)mn;
        const uint8_t *qq = q + 32 * (j / 2);
        int shift = 4 * (j & 1);
        for (int l = 0; l < 32; l++) {
            int v = ((qq[l] >> shift) & 0xf) | ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = ds * (float)v - dm;
        }
    }
}

/* Q6_K: ql[128], qh[64], int8 scales[16], f16 d. Element e (h = e / 128,
 * k = e % 128 / 32, i = e % 32): low 4 bits from ql[64h + 32(k & 1) + i]
 * (nibble k / 2), high 2 bits (qh[32h + i] >> 2k) & 3; y = (d * scales[e / 16]) * (q - 32) */
static void dq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = h2f(b + 208);
    for (int e = 0; e < QK_K; e++) {
        int h = e / 128, k = e % 128 / 32, i = e % 32;
        int lo = (ql[64 * h + 32 * (k & 1) + i] >> (4 * (k / 2))) & 0xf;
        int hi = (qh[32 * h + i] >> (2 * k)) & 3;
        y[e] = d * (float)sc[e / 16] * (float)((lo | hi << 4) - 32);
    }
}

// ---------------------------------------------------------------------------
// the AVX2 dequantisers

/* AVX2+FMA dequantisers for the types a QLoRA base or a
 * decoded GGUF file is usually in (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, NF4),
 * compiled with a target attribute and taken at run time (quant_avx2_ok),
 * so the binary still runs on any x86-64. Training dequantises every frozen
 * linear about three times a step and the engine once per decoded token, so
 * values per second matter (bench/quant_bench.c).
 *
 * Each kernel reproduces its scalar twin in quant.c operation by operation:
 * the integers are exact in any order, and each float32 operation of the
 * scalar expression is one vector operation here (a product then a sum is
 * _mm256_mul_ps then _mm256_add_ps; the build's -ffp-contract=off keeps
 * GCC from fusing them, as it keeps it from fusing the scalar code). Half
 * scales go through half_to_float below, which is quant_half_to_float's
 * arithmetic for normal numbers and quant_half_to_float itself otherwise
 * (F16C's vcvtph2ps would quieten a signalling NaN, which the scalar path
 * keeps as it is).
 */

/* nb whole blocks of one type from src into dst (nb * block values, =) */
typedef void (*QuantBlocksFn)(const uint8_t *src, int64_t nb, float *dst);

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

static int quant_avx2_ok(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

static inline float half_to_float(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    uint32_t e = h & 0x7c00u;
    if (e == 0 || e == 0x7c00u) return quant_half_to_float(h); /* zero, subnormal, inf, NaN */
    uint32_t u = (uint32_t)(h & 0x8000u) << 16 | ((((uint32_t)h & 0x7fffu) << 13) + (112u << 23));
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* 8 bytes (the low half of v) as floats, unsigned or signed */
static inline AVX2 __m256 u8f(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
static inline AVX2 __m256 i8f(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
static inline AVX2 __m128i hi64(__m128i v) { return _mm_unpackhi_epi64(v, v); }

/* Q8_0: y = d * q */
static AVX2 void dqv_q8_0(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        __m256 d = _mm256_set1_ps(half_to_float(b));
        for (int g = 0; g < 4; g++)
            _mm256_storeu_ps(y + 8 * g, _mm256_mul_ps(d, i8f(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * g)))));
    }
}

/* the 16 bytes of 32 nibbles: elements 0-15 low nibbles, 16-31 high */
static inline AVX2 void nibbles16(const uint8_t *q, __m128i *lo, __m128i *hi) {
    __m128i v = _mm_loadu_si128((const __m128i *)q), m = _mm_set1_epi8(0x0f);
    *lo = _mm_and_si128(v, m);
    *hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
}

/* Q4_0: y = d * (q - 8), the subtraction in integers */
static AVX2 void dqv_q4_0(const uint8_t *b, int64_t nb, float *y) {
    const __m128i eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        __m256 d = _mm256_set1_ps(half_to_float(b));
        __m128i lo, hi;
        nibbles16(b + 2, &lo, &hi);
        lo = _mm_sub_epi8(lo, eight), hi = _mm_sub_epi8(hi, eight);
        _mm256_storeu_ps(y, _mm256_mul_ps(d, i8f(lo)));
        _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, i8f(hi64(lo))));
        _mm256_storeu_ps(y + 16, _mm256_mul_ps(d, i8f(hi)));
        _mm256_storeu_ps(y + 24, _mm256_mul_ps(d, i8f(hi64(hi))));
    }
}

/* Q4_1: y = d * q + m, two roundings */
static AVX2 void dqv_q4_1(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32) {
        __m256 d = _mm256_set1_ps(half_to_float(b)), m = _mm256_set1_ps(half_to_float(b + 2));
        __m128i lo, hi;
        nibbles16(b + 4, &lo, &hi);
        _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(d, u8f(lo)), m));
        _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_mul_ps(d, u8f(hi64(lo))), m));
        _mm256_storeu_ps(y + 16, _mm256_add_ps(_mm256_mul_ps(d, u8f(hi)), m));
        _mm256_storeu_ps(y + 24, _mm256_add_ps(_mm256_mul_ps(d, u8f(hi64(hi))), m));
    }
}

/* quant.c's k_scale_min */
static inline void kv_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* 32 bytes as four vectors of 8 floats: bytes 0-7, 8-15, 16-23, 24-31 */
#define STORE32(y, v, CONV, OP)                                                   \
    do {                                                                          \
        __m128i v0_ = _mm256_castsi256_si128(v), v1_ = _mm256_extracti128_si256(v, 1); \
        _mm256_storeu_ps((y), OP(CONV(v0_)));                                     \
        _mm256_storeu_ps((y) + 8, OP(CONV(hi64(v0_))));                           \
        _mm256_storeu_ps((y) + 16, OP(CONV(v1_)));                                \
        _mm256_storeu_ps((y) + 24, OP(CONV(hi64(v1_))));                          \
    } while (0)

/* Q4_K: y = (d * sc) * q - dmin * mn, the scale products in scalar float32
 * as quant.c forms them */
static AVX2 void dqv_q4_k(const uint8_t *b, int64_t nb, float *y) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < nb; i++, b += 144, y += 256) {
        float d = half_to_float(b), dmin = half_to_float(b + 2);
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            kv_scale_min(b + 4, j, &sc, &mn);
            __m256 ds = _mm256_set1_ps(d * (float)sc), dm = _mm256_set1_ps(dmin * (float)mn);
            __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * (j / 2)));
            v = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(v, 4) : v, m4);
#define Q4K_OP(f) _mm256_sub_ps(_mm256_mul_ps(ds, f), dm)
            STORE32(y + 32 * j, v, u8f, Q4K_OP);
#undef Q4K_OP
        }
    }
}

/* Q6_K: y = (d * sc) * (q - 32), the scale product in scalar float32; the
 * 32 values of (h, k) in quant.c's order come from 32 consecutive bytes of
 * ql and of qh */
static AVX2 void dqv_q6_k(const uint8_t *b, int64_t nb, float *y) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), c32 = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < nb; i++, b += 210, y += 256) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = half_to_float(b + 208);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++) {
                __m256i l = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32 * (k & 1)));
                __m256i hb = _mm256_loadu_si256((const __m256i *)(qh + 32 * h));
                l = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(l, 4) : l, m4);
                hb = _mm256_and_si256(_mm256_srlv_epi32(hb, _mm256_set1_epi32(2 * k)), m2);
                __m256i v = _mm256_sub_epi8(_mm256_or_si256(l, _mm256_slli_epi16(hb, 4)), c32);
                int e = 128 * h + 32 * k;
                __m256 s0 = _mm256_set1_ps(d * (float)sc[e / 16]), s1 = _mm256_set1_ps(d * (float)sc[e / 16 + 1]);
                __m128i v0 = _mm256_castsi256_si128(v), v1 = _mm256_extracti128_si256(v, 1);
                _mm256_storeu_ps(y + e, _mm256_mul_ps(s0, i8f(v0)));
                _mm256_storeu_ps(y + e + 8, _mm256_mul_ps(s0, i8f(hi64(v0))));
                _mm256_storeu_ps(y + e + 16, _mm256_mul_ps(s1, i8f(v1)));
                _mm256_storeu_ps(y + e + 24, _mm256_mul_ps(s1, i8f(hi64(v1))));
            }
    }
}

static QuantBlocksFn quant_avx2_blocks(uint32_t type) {
    switch (type) {
    case QUANT_Q8_0: return dqv_q8_0;
    case QUANT_Q4_0: return dqv_q4_0;
    case QUANT_Q4_1: return dqv_q4_1;
    case QUANT_Q4_K: return dqv_q4_k;
    case QUANT_Q6_K: return dqv_q6_k;
    default: return NULL;
    }
}

/* NF4: the block's 16 products code[k] * scale in two vectors (the scalar
 * path's table), then each value a lookup: byte i gives elements 2i (high
 * nibble) and 2i + 1 (low nibble) */
static AVX2 void nf4_run(const uint8_t *blk, int64_t b0, int64_t nb, const uint8_t *absmax2, float offset,
                         const float *code, const float *dyn, float *y) {
    const int bb = QUANT_NF4_BLOCK / 2 + 1;
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0), m4 = _mm256_set1_epi32(0xf);
    const __m256 clo = _mm256_loadu_ps(code), chi = _mm256_loadu_ps(code + 8);
    for (int64_t b = b0; b < b0 + nb; b++, blk += bb, y += QUANT_NF4_BLOCK) {
        float a2;
        memcpy(&a2, absmax2 + (size_t)(b / QUANT_NF4_GROUP) * sizeof(float), sizeof a2);
        float scale = dyn[blk[bb - 1]] * a2;
        scale = scale + offset;
        __m256 s = _mm256_set1_ps(scale), tlo = _mm256_mul_ps(clo, s), thi = _mm256_mul_ps(chi, s);
        for (int i = 0; i < QUANT_NF4_BLOCK / 2; i += 8) {
            __m128i v = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(blk + i)), dup);
            for (int half = 0; half < 2; half++) {
                __m256i idx = _mm256_cvtepu8_epi32(half ? hi64(v) : v);
                idx = _mm256_and_si256(_mm256_srlv_epi32(idx, shift), m4);
                __m256 lo = _mm256_permutevar8x32_ps(tlo, idx), hi = _mm256_permutevar8x32_ps(thi, idx);
                __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)); /* bit 3: the upper table */
                _mm256_storeu_ps(y + 2 * i + 8 * half, _mm256_blendv_ps(lo, hi, sel));
            }
        }
    }
}

static int quant_avx2_nf4(const uint8_t *blocks, int64_t b0, int64_t nb, const uint8_t *absmax2, float offset,
                   const float *code, const float *dyn, float *dst) {
    nf4_run(blocks, b0, nb, absmax2, offset, code, dyn, dst);
    return 1;
}

#else

static int quant_avx2_ok(void) { return 0; }
static QuantBlocksFn quant_avx2_blocks(uint32_t type) {
    (void)type;
    return NULL;
}
static int quant_avx2_nf4(const uint8_t *blocks, int64_t b0, int64_t nb, const uint8_t *absmax2, float offset,
                   const float *code, const float *dyn, float *dst) {
    (void)blocks, (void)b0, (void)nb, (void)absmax2, (void)offset, (void)code, (void)dyn, (void)dst;
    return 0;
}

#endif

// ---------------------------------------------------------------------------
// NF4 (bitsandbytes)
//
// Everything here reproduces, float32 operation by float32 operation,
// bitsandbytes 0.50's CPU path (scripts/test_nf4_ref.py checks it bit for
// bit): quantize_4bit runs its PyTorch "default" kernel, the nested absmax
// quantisation its C++ quantize_cpu (a 65,536-entry lookup table, not a
// nearest search), dequantisation its C++ kernels plus one torch add.
// Multiply-adds that must round twice are written as separate statements,
// so that no compiler may fuse them (C's FP_CONTRACT acts within one
// expression); the one fused multiply-add is an explicit fmaf.

static size_t nf4_aux_at(int64_t rows, int64_t cols);

/* bitsandbytes' NF4 codebook (get_4bit_type("nf4"), float32): 16 normal
 * quantiles scaled to [-1, 1], with an exact zero at code 7 */
static const float nf4_code[16] = {
    -1.0f, -0.696192801f, -0.525073051f, -0.394917488f,
    -0.284441382f, -0.18477343f, -0.0910500363f, 0.0f,
    0.0795802996f, 0.160930201f, 0.246112302f, 0.337915242f,
    0.440709829f, 0.562617004f, 0.722956836f, 1.0f,
};

/* bitsandbytes' dynamic 8-bit map, create_dynamic_map(signed=True) as
 * float32: the code book of the double-quantised absmax (its entry 0 is
 * -0.99297, not -1; 0 is entry 127, 1.0 entry 255) */
static const float nf4_dyn[256] = {
    -0.992968738f, -0.978906274f, -0.96484375f, -0.950781226f, -0.936718762f, -0.922656238f, -0.908593774f, -0.89453125f,
    -0.880468726f, -0.866406262f, -0.852343738f, -0.838281274f, -0.82421875f, -0.810156226f, -0.796093762f, -0.782031238f,
    -0.767968774f, -0.75390625f, -0.739843726f, -0.725781262f, -0.711718798f, -0.697656274f, -0.68359375f, -0.669531226f,
    -0.655468762f, -0.641406298f, -0.627343774f, -0.61328125f, -0.599218726f, -0.585156262f, -0.571093798f, -0.557031274f,
    -0.54296875f, -0.528906226f, -0.514843702f, -0.500781238f, -0.486718714f, -0.47265625f, -0.458593726f, -0.444531262f,
    -0.430468738f, -0.416406244f, -0.40234375f, -0.388281226f, -0.374218762f, -0.360156238f, -0.346093744f, -0.33203125f,
    -0.317968726f, -0.303906262f, -0.289843738f, -0.275781274f, -0.26171875f, -0.247656241f, -0.233593747f, -0.219531253f,
    -0.205468744f, -0.19140625f, -0.177343756f, -0.163281247f, -0.149218753f, -0.135156244f, -0.12109375f, -0.107031256f,
    -0.0985937491f, -0.0957812592f, -0.0929687545f, -0.0901562497f, -0.0873437524f, -0.0845312476f, -0.0817187577f, -0.078906253f,
    -0.0760937482f, -0.0732812509f, -0.0704687461f, -0.0676562563f, -0.0648437515f, -0.0620312504f, -0.0592187531f, -0.0564062484f,
    -0.053593751f, -0.05078125f, -0.047968749f, -0.0451562516f, -0.0423437469f, -0.0395312496f, -0.0367187522f, -0.0339062512f,
    -0.0310937501f, -0.028281251f, -0.0254687499f, -0.0226562507f, -0.0198437516f, -0.0170312505f, -0.0142187504f, -0.0114062503f,
    -0.00971874967f, -0.00915624946f, -0.00859375019f, -0.00803124998f, -0.00746874977f, -0.00690625003f, -0.00634374982f, -0.00578125007f,
    -0.00521875033f, -0.00465624966f, -0.00409374991f, -0.00353124971f, -0.00296874996f, -0.00240624999f, -0.00184375001f, -0.00128124992f,
    -0.000943750085f, -0.000831249985f, -0.00071875006f, -0.000606250076f, -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f, -7.7499999e-06f, -3.25000019e-06f, -5.50000038e-07f, 0.0f,
    5.50000038e-07f, 3.25000019e-06f, 7.7499999e-06f, 2.12499981e-05f, 4.37499984e-05f, 6.62500024e-05f, 8.87499991e-05f, 0.000156250011f,
    0.000268750038f, 0.000381250022f, 0.000493750034f, 0.000606250076f, 0.00071875006f, 0.000831249985f, 0.000943750085f, 0.00128124992f,
    0.00184375001f, 0.00240624999f, 0.00296874996f, 0.00353124971f, 0.00409374991f, 0.00465624966f, 0.00521875033f, 0.00578125007f,
    0.00634374982f, 0.00690625003f, 0.00746874977f, 0.00803124998f, 0.00859375019f, 0.00915624946f, 0.00971874967f, 0.0114062503f,
    0.0142187504f, 0.0170312505f, 0.0198437516f, 0.0226562507f, 0.0254687499f, 0.028281251f, 0.0310937501f, 0.0339062512f,
    0.0367187522f, 0.0395312496f, 0.0423437469f, 0.0451562516f, 0.047968749f, 0.05078125f, 0.053593751f, 0.0564062484f,
    0.0592187531f, 0.0620312504f, 0.0648437515f, 0.0676562563f, 0.0704687461f, 0.0732812509f, 0.0760937482f, 0.078906253f,
    0.0817187577f, 0.0845312476f, 0.0873437524f, 0.0901562497f, 0.0929687545f, 0.0957812592f, 0.0985937491f, 0.107031256f,
    0.12109375f, 0.135156244f, 0.149218753f, 0.163281247f, 0.177343756f, 0.19140625f, 0.205468744f, 0.219531253f,
    0.233593747f, 0.247656241f, 0.26171875f, 0.275781274f, 0.289843738f, 0.303906262f, 0.317968726f, 0.33203125f,
    0.346093744f, 0.360156238f, 0.374218762f, 0.388281226f, 0.40234375f, 0.416406244f, 0.430468738f, 0.444531262f,
    0.458593726f, 0.47265625f, 0.486718714f, 0.500781238f, 0.514843702f, 0.528906226f, 0.54296875f, 0.557031274f,
    0.571093798f, 0.585156262f, 0.599218726f, 0.61328125f, 0.627343774f, 0.641406298f, 0.655468762f, 0.669531226f,
    0.68359375f, 0.697656274f, 0.711718798f, 0.725781262f, 0.739843726f, 0.75390625f, 0.767968774f, 0.782031238f,
    0.796093762f, 0.810156226f, 0.82421875f, 0.838281274f, 0.852343738f, 0.866406262f, 0.880468726f, 0.89453125f,
    0.908593774f, 0.922656238f, 0.936718762f, 0.950781226f, 0.96484375f, 0.978906274f, 0.992968738f, 1.0f,
};

const float *quant_nf4_code(void) { return nf4_code; }
const float *quant_nf4_dyn(void) { return nf4_dyn; }

/* torch's row_sum (aten/src/ATen/native/cpu/SumKernel.cpp) of nvec
 * vectors of w lanes (x[i * w + l]) into out[0..w): 4 accumulator rows of
 * vectors (row i, vector k is x's vector 4i + k), flushed through 4 levels
 * of partial sums every 2^p rows (p = max(4, ceil(log2(rows)) / 4)), then
 * the left-over vectors into row 0 and rows 1-3 into row 0. */
static void nf4_row_sum(const float *x, int64_t nvec, int w, float *out) {
    enum { ROWS = 4, LEVELS = 4, WMAX = 8 };
    int64_t nrow = nvec / ROWS, log2 = 0;
    while (((int64_t)1 << log2) < nrow) log2++;
    int64_t power = log2 / LEVELS > 4 ? log2 / LEVELS : 4, step = (int64_t)1 << power, mask = step - 1;
    float acc[LEVELS][ROWS][WMAX] = {{{0}}};
    int64_t i = 0;
    while (i + step <= nrow) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int k = 0; k < ROWS; k++)
                for (int l = 0; l < w; l++) acc[0][k][l] += x[(i * ROWS + k) * w + l];
        for (int lv = 1; lv < LEVELS; lv++) {
            for (int k = 0; k < ROWS; k++)
                for (int l = 0; l < w; l++) {
                    acc[lv][k][l] += acc[lv - 1][k][l];
                    acc[lv - 1][k][l] = 0.0f;
                }
            if (i & (mask << (lv * power))) break;
        }
    }
    for (; i < nrow; i++)
        for (int k = 0; k < ROWS; k++)
            for (int l = 0; l < w; l++) acc[0][k][l] += x[(i * ROWS + k) * w + l];
    for (int lv = 1; lv < LEVELS; lv++)
        for (int k = 0; k < ROWS; k++)
            for (int l = 0; l < w; l++) acc[0][k][l] += acc[lv][k][l];
    for (int64_t r = nrow * ROWS; r < nvec; r++)
        for (int l = 0; l < w; l++) acc[0][0][l] += x[r * w + l];
    for (int k = 1; k < ROWS; k++)
        for (int l = 0; l < w; l++) acc[0][0][l] += acc[0][k][l];
    for (int l = 0; l < w; l++) out[l] = acc[0][0][l];
}

/* torch's float32 sum of x[0..n) on the CPU (cascade_sum): from 8 values
 * on, row_sum over 8-lane vectors (Vectorized<float> of its default and
 * AVX2 kernels), then the scalar tail, then the 8 lanes, in that order;
 * under 8 values, row_sum over the scalars. This is the order of one
 * thread: torch with several threads sums tensors of 32768 values or more
 * in one chunk per thread, which may change the last bit. */
static float nf4_torch_sum(const float *x, int64_t n) {
    float v[8], s = 0.0f;
    if (n < 8) {
        nf4_row_sum(x, n, 1, v);
        return s + v[0];
    }
    nf4_row_sum(x, n / 8, 8, v);
    for (int64_t r = n / 8 * 8; r < n; r++) s += x[r];
    for (int l = 0; l < 8; l++) s += v[l];
    return s;
}

/* One block of 64 values into 32 bytes of codes (bitsandbytes' default
 * quantize_4bit kernel): x * (1 / max(absmax, 1e-38)) clamped to [-1, 1],
 * then torch.bucketize against the 15 midpoints (c[i] + c[i+1]) / 2, which
 * counts the midpoints below the value (a tie goes to the lower code; NaN
 * counts them all, as bucketize's binary search does). Returns the absmax. */
static float nf4_block(const float *x, const float *mid, uint8_t *out) {
    float amax = 0.0f; /* torch max: a NaN wins */
    for (int i = 0; i < QUANT_NF4_BLOCK; i++) {
        float a = fabsf(x[i]);
        if (a > amax || a != a) amax = a;
    }
    float tiny = 1e-38f, am = amax < tiny ? tiny : amax; /* clamp(min=1e-38) */
    float inv = 1.0f / am;
    uint8_t q[QUANT_NF4_BLOCK];
    for (int i = 0; i < QUANT_NF4_BLOCK; i++) {
        float s = x[i] * inv;
        s = s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s;
        int c = 0;
        for (int k = 0; k < 15; k++) c += !(mid[k] >= s);
        q[i] = (uint8_t)c;
    }
    for (int i = 0; i < QUANT_NF4_BLOCK / 2; i++) out[i] = (uint8_t)(q[2 * i] << 4 | q[2 * i + 1]);
    return amax;
}

/* The code bitsandbytes' quantize_cpu gives v (of a group whose largest
 * |value| is not zero; inv = 1 / that): v * inv clamped to [-1, 1] picks
 * one of 65536 bins, index trunc(fma((v + 1) * 0.5, 65535, 0.5)) (its
 * compiler fuses the last multiply-add; fmaf here), and a bin's code is the
 * number of midpoints (dyn[i] + dyn[i+1]) / 2 below the bin's value
 * 2i / 65535 - 1 (float32). Near a midpoint this is not the nearest code,
 * and 0 is never exact (bins straddle it). */
static uint8_t nf4_absmax_code(float v, float inv, const float *mid) {
    float s = v * inv;
    s = s < -1.0f ? -1.0f : 1.0f < s ? 1.0f : s;
    float t = s + 1.0f;
    t = t * 0.5f;
    float u = fmaf(t, 65535.0f, 0.5f);
    int bin = u == u ? (uint16_t)(int)u : 0; /* cvttss2si's NaN result truncated to 16 bits */
    float fb = (float)bin;
    float val = fb + fb;
    val = val / 65535.0f;
    val = val - 1.0f;
    int lo = 0, hi = 255; /* first midpoint not below val */
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (mid[m] < val) lo = m + 1;
        else hi = m;
    }
    return (uint8_t)lo;
}

/* bitsandbytes' quantize_4bit(nf4, blocksize 64, compress_statistics):
 * absmax per block; offset = torch's mean of them (sum / count); absmax -
 * offset quantised by quantize_blockwise(blocksize 256) with the dynamic map:
 * a group's absmax2 is max |absmax - offset| over its blocks (the last group
 * may have fewer than 256), a group whose absmax2 is 0 gets code 0. */
static int nf4_quantize(const float *src, int64_t rows, int64_t cols, uint8_t *dst) {
    LC_ASSERT(rows > 0 && cols > 0 && cols % QUANT_NF4_BLOCK == 0);
    const int bb = QUANT_NF4_BLOCK / 2 + 1;
    int64_t nb = rows * cols / QUANT_NF4_BLOCK;
    float mid4[15], mid8[255];
    for (int k = 0; k < 15; k++) mid4[k] = (nf4_code[k] + nf4_code[k + 1]) / 2.0f;
    for (int k = 0; k < 255; k++) mid8[k] = (nf4_dyn[k] + nf4_dyn[k + 1]) * 0.5f;
    float *amax = xmalloc((size_t)nb * sizeof(float));
    for (int64_t b = 0; b < nb; b++) amax[b] = nf4_block(src + b * QUANT_NF4_BLOCK, mid4, dst + b * bb);
    float offset = nf4_torch_sum(amax, nb) / (float)nb;
    for (int64_t b = 0; b < nb; b++) amax[b] = amax[b] - offset;
    uint8_t *aux = dst + nf4_aux_at(rows, cols);
    memset(dst + (size_t)nb * bb, 0, (size_t)(aux - dst) - (size_t)nb * bb); /* alignment padding */
    memcpy(aux, &offset, sizeof offset);
    for (int64_t g = 0; g * QUANT_NF4_GROUP < nb; g++) {
        int64_t b0 = g * QUANT_NF4_GROUP, b1 = b0 + QUANT_NF4_GROUP < nb ? b0 + QUANT_NF4_GROUP : nb;
        float m = -INFINITY; /* std::max(m, |v|): a NaN is skipped */
        for (int64_t b = b0; b < b1; b++) {
            float a = fabsf(amax[b]);
            m = m < a ? a : m;
        }
        m = 0.0f > m ? 0.0f : m;
        memcpy(aux + (size_t)(1 + g) * sizeof(float), &m, sizeof m);
        float inv = 1.0f / m;
        for (int64_t b = b0; b < b1; b++)
            dst[b * bb + bb - 1] = m == 0.0f ? 0 : nf4_absmax_code(amax[b], inv, mid8);
    }
    free(amax);
    return 0;
}

/* NF4 blocks [b0, b0 + nb) of q (counted over the whole tensor) into dst:
 * a block's scale is dyn[code] * absmax2 then + offset (bitsandbytes'
 * dequantize_blockwise, then torch's absmax += offset), each value
 * nf4[nibble] * scale (its 4-bit kernel); the 16 products of a block are
 * formed once and looked up per nibble. fast: quant_avx2_nf4 does it. */
static void nf4_blocks(const QTensor *q, int64_t b0, int64_t nb, float *dst, int fast) {
    const int bb = QUANT_NF4_BLOCK / 2 + 1;
    const uint8_t *aux = q->data + nf4_aux_at(q->rows, q->cols);
    float offset;
    memcpy(&offset, aux, sizeof offset);
    if (fast && quant_avx2_nf4(q->data + b0 * bb, b0, nb, aux + sizeof(float), offset, nf4_code, nf4_dyn, dst))
        return;
    for (int64_t b = b0; b < b0 + nb; b++) {
        const uint8_t *blk = q->data + b * bb;
        float a2;
        memcpy(&a2, aux + (size_t)(1 + b / QUANT_NF4_GROUP) * sizeof(float), sizeof a2);
        float scale = nf4_dyn[blk[bb - 1]] * a2;
        scale = scale + offset;
        float tab[16];
        for (int k = 0; k < 16; k++) tab[k] = nf4_code[k] * scale;
        float *y = dst + (b - b0) * QUANT_NF4_BLOCK;
        for (int i = 0; i < QUANT_NF4_BLOCK / 2; i++) {
            y[2 * i] = tab[blk[i] >> 4];
            y[2 * i + 1] = tab[blk[i] & 0xf];
        }
    }
}

// ---------------------------------------------------------------------------
// quantisers: float32 -> blocks (ggml's reference quantisers)

/* Round to the nearest integer, halves to even (the current rounding mode,
 * which C starts in): ggml's nearest_int, for |v| < 2^22. */
static inline int nearest(float v) { return (int)lrintf(v); }

static void put_half(uint8_t *p, float f) {
    uint16_t h = quant_float_to_half(f);
    p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i);
}

/* Q8_0: d = max|x| / 127, q = roundf(x / d) (quantize_row_q8_0_ref) */
static void q_q8_0(const float *x, uint8_t *y) {
    float amax = 0;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < QK; j++) y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* The value of largest magnitude (the first of equals), sign kept: the
 * symmetric types map it to the most negative code, so that code's whole
 * range [-2^(b-1), 2^(b-1) - 1] is used. */
static float signed_absmax(const float *x) {
    float amax = 0, m = 0;
    for (int j = 0; j < QK; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), m = x[j];
    return m;
}

/* Q4_0 / Q5_0 (quantize_row_q4_0_ref, _q5_0_ref): d = m / -2^(b-1) for the
 * signed absmax m, q = min(2^b - 1, trunc(x / d + 2^(b-1) + 0.5)) in float32
 * with the unrounded d; element j and j + 16 share byte j (low, high
 * nibble), Q5_0's fifth bits in qh (bit j for element j). */
static void q_q4_0(const float *x, uint8_t *y) {
    float d = signed_absmax(x) / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)(x[j] * id + 8.5f), b = (int)(x[j + QK / 2] * id + 8.5f);
        y[2 + j] = (uint8_t)((a < 15 ? a : 15) | (b < 15 ? b : 15) << 4);
    }
}

static void q_q5_0(const float *x, uint8_t *y) {
    float d = signed_absmax(x) / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    put_half(y, d);
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)(x[j] * id + 16.5f), b = (int)(x[j + QK / 2] * id + 16.5f);
        a = a < 31 ? a : 31, b = b < 31 ? b : 31;
        y[6 + j] = (uint8_t)((a & 0xf) | (b & 0xf) << 4);
        qh |= (uint32_t)(a >> 4) << j | (uint32_t)(b >> 4) << (j + QK / 2);
    }
    put32(y + 2, qh);
}

/* Q4_1 / Q5_1 (quantize_row_q4_1_ref, _q5_1_ref): m = min x, d = (max -
 * min) / (2^b - 1), q = trunc((x - m) / d + 0.5) (Q4_1 capped at 15). */
static void q_q4_1(const float *x, uint8_t *y) {
    float mn = x[0], mx = x[0];
    for (int j = 1; j < QK; j++) mn = fminf(mn, x[j]), mx = fmaxf(mx, x[j]);
    float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    put_half(y + 2, mn);
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)((x[j] - mn) * id + 0.5f), b = (int)((x[j + QK / 2] - mn) * id + 0.5f);
        y[4 + j] = (uint8_t)((a < 15 ? a : 15) | (b < 15 ? b : 15) << 4);
    }
}

static void q_q5_1(const float *x, uint8_t *y) {
    float mn = x[0], mx = x[0];
    for (int j = 1; j < QK; j++) mn = fminf(mn, x[j]), mx = fmaxf(mx, x[j]);
    float d = (mx - mn) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    put_half(y, d);
    put_half(y + 2, mn);
    for (int j = 0; j < QK / 2; j++) {
        int a = (uint8_t)((x[j] - mn) * id + 0.5f), b = (uint8_t)((x[j + QK / 2] - mn) * id + 0.5f);
        y[8 + j] = (uint8_t)((a & 0xf) | (b & 0xf) << 4);
        qh |= (uint32_t)((a >> 4) & 1) << j | (uint32_t)((b >> 4) & 1) << (j + QK / 2);
    }
    put32(y + 4, qh);
}

/* The scale and min of one K sub-block of n values (make_qkx2_quants):
 * codes L in [0, nmax] with x ~ scale * L - min, min >= 0, chosen to lower
 * the w-weighted squared error. Start from the plain min/max grid, then try
 * nstep + 1 stretched grids (nmax + rmin + rdelta * is steps over the
 * range) and, for each, the least-squares (scale, min) of its codes (min
 * held at 0 when it would be positive); keep the best. */
static float k_scale_min_search(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                                uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float mn = x[0], mx = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        memset(L, 0, (size_t)n);
        *the_min = -mn;
        return 0.0f;
    }
    float iscale = (float)nmax / (mx - mn), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest(iscale * (x[i] - mn));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * (float)L[i] + mn - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest(iscale * (x[i] - mn));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float s = (sum_w * sum_xl - sum_x * sum_l) / D, m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (m > 0) m = 0, s = sum_xl / sum_l2;
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = s * (float)Laux[i] + m - x[i];
                err += w[i] * (diff * diff);
            }
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err, scale = s, mn = m;
            }
        }
    }
    *the_min = -mn;
    return scale;
}

/* Q4_K / Q5_K (quantize_row_q4_K_ref, _q5_K_ref, no importance matrix):
 * each sub-block of 32 gets a (scale, min) from k_scale_min_search with
 * weights rms(sub-block) + |x|; the block's d and dmin are the largest of
 * them over 63, the six-bit sub-block scale and min nearest(63 * s / max)
 * (capped at 63), packed as k_scale_min unpacks them; the codes are then
 * recomputed against the rounded scales (a sub-block whose scale rounds to
 * 0 keeps the search's codes). */
static void q_k_scales(const float *x, uint8_t *y, int nmax, float rmin, int nstep, uint8_t *L) {
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    uint8_t Laux[32], *s = y + 4;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xs[l]);
        scales[j] = k_scale_min_search(32, nmax, xs, w, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f, inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest(inv_scale * scales[j]), lm = (uint8_t)nearest(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63, lm = lm < 63 ? lm : 63;
        if (j < 4) {
            s[j] = ls, s[j + 4] = lm;
        } else {
            s[j + 4] = (uint8_t)((ls & 0xf) | (lm & 0xf) << 4);
            s[j - 4] |= (uint8_t)((ls >> 4) << 6);
            s[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    put_half(y, max_scale / 63.0f);
    put_half(y + 2, max_min / 63.0f);
    float d = h2f(y), dmin = h2f(y + 2);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k_scale_min(s, j, &sc, &mn);
        float ds = d * (float)sc, dm = dmin * (float)mn;
        if (ds == 0.0f) continue;
        for (int l = 0; l < 32; l++) {
            int q = nearest((x[32 * j + l] + dm) / ds);
            L[32 * j + l] = (uint8_t)(q < 0 ? 0 : q > nmax ? nmax : q);
        }
    }
}

static void q_q4_k(const float *x, uint8_t *y) {
    uint8_t L[QK_K];
    q_k_scales(x, y, 15, -1.0f, 20, L);
    uint8_t *q = y + 16;
    for (int c = 0; c < 4; c++) /* sub-blocks 2c, 2c + 1: low, high nibbles */
        for (int l = 0; l < 32; l++) q[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
}

static void q_q5_k(const float *x, uint8_t *y) {
    uint8_t L[QK_K];
    q_k_scales(x, y, 31, -0.5f, 15, L);
    uint8_t *qh = y + 16, *q = y + 48;
    memset(qh, 0, 32);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int a = L[64 * c + l], b = L[64 * c + 32 + l];
            qh[l] |= (uint8_t)((a >> 4) << (2 * c) | (b >> 4) << (2 * c + 1));
            q[32 * c + l] = (uint8_t)((a & 0xf) | (b & 0xf) << 4);
        }
}

/* The symmetric scale of one Q6_K sub-block of 16 (make_qx_quants with
 * weights x^2): codes L = nmax + clamp(nearest(x / s), -nmax, nmax - 1),
 * the scale the least-squares fit of those codes; nineteen grids (-(nmax +
 * 0.1 is) / max, is in [-9, 9]) are tried and the one with the largest
 * (sum w x l)^2 / sum w l^2 (the least weighted error) kept. */
/* The sums of one grid of q6_scale_search: codes clamp(nearest(iscale *
 * x), -nmax, nmax - 1) (into L + nmax when L), weights x^2. */
static void q6_grid(int n, int nmax, const float *x, float iscale, float *sumlx, float *suml2, uint8_t *L) {
    float a = 0, b = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        float w = x[i] * x[i];
        a += w * x[i] * (float)l;
        b += w * (float)l * (float)l;
        if (L) L[i] = (uint8_t)(l + nmax);
    }
    *sumlx = a, *suml2 = b;
}

static float q6_scale_search(int n, int nmax, const float *x, uint8_t *L) {
    float amax = 0, mx = 0, sumlx, suml2;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), mx = x[i];
    if (amax < 1e-15f) { /* ggml's GROUP_MAX_EPS: an all-zero group */
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    q6_grid(n, nmax, x, (float)-nmax / mx, &sumlx, &suml2, L);
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int k = -9; k <= 9; k++) {
        if (k == 0) continue;
        float iscale = -((float)nmax + 0.1f * (float)k) / mx;
        q6_grid(n, nmax, x, iscale, &sumlx, &suml2, NULL);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            q6_grid(n, nmax, x, iscale, &sumlx, &suml2, L);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q6_K (quantize_row_q6_K_ref, no importance matrix): a scale per
 * sub-block of 16 from q6_scale_search; d = -max / 128 for the sub-block
 * scale max of largest magnitude, int8 scales nearest(s / d) (capped at
 * 127); codes recomputed against the rounded scales, clamp(nearest(x /
 * (d * sc)), -32, 31) + 32, laid out as dq_q6_k reads them. */
static void q_q6_k(const float *x, uint8_t *y) {
    uint8_t L[QK_K];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = q6_scale_search(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs) max_abs = fabsf(scales[ib]), max_scale = scales[ib];
    }
    memset(y, 0, 210);
    if (max_abs < 1e-15f) return; /* an all-zero block: d = 0 */
    uint8_t *ql = y, *qh = y + 128, *sc = y + 192;
    float iscale = -128.0f / max_scale;
    put_half(y + 208, 1 / iscale);
    for (int ib = 0; ib < 16; ib++) {
        int v = nearest(iscale * scales[ib]);
        sc[ib] = (uint8_t)(int8_t)(v < 127 ? v : 127);
    }
    float d = h2f(y + 208);
    for (int j = 0; j < 16; j++) {
        float ds = d * (float)(int8_t)sc[j];
        if (ds == 0.0f) continue;
        for (int i = 0; i < 16; i++) {
            int l = nearest(x[16 * j + i] / ds);
            L[16 * j + i] = (uint8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
        }
    }
    for (int h = 0; h < 2; h++) /* halves of 128: element 128h + 32k + i */
        for (int i = 0; i < 32; i++) {
            const uint8_t *Lh = L + 128 * h + i;
            ql[64 * h + i] = (uint8_t)((Lh[0] & 0xf) | (Lh[64] & 0xf) << 4);
            ql[64 * h + 32 + i] = (uint8_t)((Lh[32] & 0xf) | (Lh[96] & 0xf) << 4);
            qh[32 * h + i] = (uint8_t)(Lh[0] >> 4 | (Lh[32] >> 4) << 2 | (Lh[64] >> 4) << 4 | (Lh[96] >> 4) << 6);
        }
}

// ---------------------------------------------------------------------------
// the table

typedef struct {
    const char *name;
    int block;      /* elements per block */
    int bytes;      /* bytes per block */
    void (*dq)(const uint8_t *b, float *y); /* NULL: known but not dequantised */
    void (*q)(const float *x, uint8_t *b);  /* NULL: not written */
    int keep;       /* may stay quantised (QTensor) */
} TypeInfo;

/* ggml's types by number (gguf-py constants.py GGML_QUANT_SIZES); a name
 * NULL is a number ggml does not use */
static const TypeInfo types[] = {
    [0] = {"F32", 1, 4, dq_f32, NULL, 0},        [1] = {"F16", 1, 2, dq_f16, NULL, 0},
    [2] = {"Q4_0", 32, 18, dq_q4_0, q_q4_0, 1},    [3] = {"Q4_1", 32, 20, dq_q4_1, q_q4_1, 1},
    [6] = {"Q5_0", 32, 22, dq_q5_0, q_q5_0, 1},    [7] = {"Q5_1", 32, 24, dq_q5_1, q_q5_1, 1},
    [8] = {"Q8_0", 32, 34, dq_q8_0, q_q8_0, 1},  [9] = {"Q8_1", 32, 40, NULL, NULL, 0},
    [10] = {"Q2_K", 256, 84, NULL, NULL, 0},     [11] = {"Q3_K", 256, 110, NULL, NULL, 0},
    [12] = {"Q4_K", 256, 144, dq_q4_k, q_q4_k, 1}, [13] = {"Q5_K", 256, 176, dq_q5_k, q_q5_k, 1},
    [14] = {"Q6_K", 256, 210, dq_q6_k, q_q6_k, 1}, [15] = {"Q8_K", 256, 292, NULL, NULL, 0},
    [16] = {"IQ2_XXS", 256, 66, NULL, NULL, 0},  [17] = {"IQ2_XS", 256, 74, NULL, NULL, 0},
    [18] = {"IQ3_XXS", 256, 98, NULL, NULL, 0},  [19] = {"IQ1_S", 256, 50, NULL, NULL, 0},
    [20] = {"IQ4_NL", 32, 18, NULL, NULL, 0},    [21] = {"IQ3_S", 256, 110, NULL, NULL, 0},
    [22] = {"IQ2_S", 256, 82, NULL, NULL, 0},    [23] = {"IQ4_XS", 256, 136, NULL, NULL, 0},
    [24] = {"I8", 1, 1, NULL, NULL, 0},          [25] = {"I16", 1, 2, NULL, NULL, 0},
    [26] = {"I32", 1, 4, NULL, NULL, 0},         [27] = {"I64", 1, 8, NULL, NULL, 0},
    [28] = {"F64", 1, 8, NULL, NULL, 0},         [29] = {"IQ1_M", 256, 56, NULL, NULL, 0},
    [30] = {"BF16", 1, 2, dq_bf16, NULL, 0},     [34] = {"TQ1_0", 256, 54, NULL, NULL, 0},
    [35] = {"TQ2_0", 256, 66, NULL, NULL, 0},    [39] = {"MXFP4", 32, 17, NULL, NULL, 0},
};
#define N_TYPES (sizeof types / sizeof types[0])
static const TypeInfo nf4_info = {"NF4", QUANT_NF4_BLOCK, QUANT_NF4_BLOCK / 2 + 1, NULL, NULL, 1};

static const TypeInfo *type_info(uint32_t t) {
    if (t == QUANT_NF4) return &nf4_info;
    return t < N_TYPES && types[t].name ? &types[t] : NULL;
}

const char *quant_name(uint32_t type) {
    const TypeInfo *ti = type_info(type);
    return ti ? ti->name : NULL;
}

int quant_block(uint32_t type) {
    const TypeInfo *ti = type_info(type);
    return ti ? ti->block : 0;
}

size_t quant_block_bytes(uint32_t type) {
    const TypeInfo *ti = type_info(type);
    return ti ? (size_t)ti->bytes : 0;
}

int quant_dequantizes(uint32_t type) {
    const TypeInfo *ti = type_info(type);
    return ti && (ti->dq || type == QUANT_NF4);
}

int quant_keepable(uint32_t type) {
    const TypeInfo *ti = type_info(type);
    return ti && ti->keep;
}

/* the keepable types in the order people know them */
static const uint32_t keep_order[] = {QUANT_Q8_0, QUANT_Q4_0, QUANT_Q4_1, QUANT_Q5_0, QUANT_Q5_1,
                                      QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K, QUANT_NF4};

const char *quant_keepable_list(void) {
    return "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, NF4";
}

const char *quant_dequant_list(void) {
    return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K";
}

int quant_parse(const char *s, const char *what, uint32_t *type, Err *e) {
    for (size_t i = 0; i < sizeof keep_order / sizeof keep_order[0]; i++)
        if (strcasecmp(s, quant_name(keep_order[i])) == 0) {
            *type = keep_order[i];
            return 0;
        }
    char q[ERR_QUOTE_CAP];
    return err_set(e, "%s: unknown type '%s' (one of %s, any case)", what, err_quote(q, sizeof q, s, strlen(s)),
                   quant_keepable_list());
}

size_t quant_row_bytes(uint32_t type, int64_t cols) {
    const TypeInfo *ti = type_info(type);
    LC_ASSERT(ti && cols % ti->block == 0);
    return (size_t)(cols / ti->block) * (size_t)ti->bytes;
}

/* NF4: where the scales start, and how many second-level ones */
static size_t nf4_aux_at(int64_t rows, int64_t cols) {
    return (quant_row_bytes(QUANT_NF4, cols) * (size_t)rows + 15) / 16 * 16;
}

static size_t nf4_groups(int64_t rows, int64_t cols) {
    size_t blocks = (size_t)(rows * cols / QUANT_NF4_BLOCK);
    return (blocks + QUANT_NF4_GROUP - 1) / QUANT_NF4_GROUP;
}

size_t quant_bytes(uint32_t type, int64_t rows, int64_t cols) {
    if (type == QUANT_NF4) return nf4_aux_at(rows, cols) + (1 + nf4_groups(rows, cols)) * sizeof(float);
    return quant_row_bytes(type, cols) * (size_t)rows;
}

QTensor quant_tensor(uint32_t type, int rows, int cols, const void *data) {
    QTensor q = {type, rows, cols, quant_row_bytes(type, cols), data};
    return q;
}

/* 1: the AVX2 dequantisers (the AVX2 section above) where this CPU has them and
 * LLAMAC_QUANT_PORTABLE is not set; 0: the scalar ones above. Both give
 * the same bits. Read once (the first call may come from many threads at
 * once, hence the atomic). */
static int use_fast(void) {
    static _Atomic int v = -1;
    int f = atomic_load_explicit(&v, memory_order_relaxed);
    if (f < 0) {
        f = quant_avx2_ok() && !getenv("LLAMAC_QUANT_PORTABLE");
        atomic_store_explicit(&v, f, memory_order_relaxed);
    }
    return f;
}

/* nb blocks of a dequantising non-NF4 type from src into dst */
static void dequant_run(const TypeInfo *ti, uint32_t type, const uint8_t *src, int64_t nb, float *dst, int fast) {
    QuantBlocksFn f = fast ? quant_avx2_blocks(type) : NULL;
    if (f) {
        f(src, nb, dst);
        return;
    }
    for (int64_t i = 0; i < nb; i++) ti->dq(src + i * ti->bytes, dst + i * ti->block);
}

int quant_dequantize(uint32_t type, const void *src, int64_t n, float *dst) {
    const TypeInfo *ti = type_info(type);
    if (!ti || !ti->dq) return -1;
    LC_ASSERT(n % ti->block == 0);
    dequant_run(ti, type, src, n / ti->block, dst, use_fast());
    return 0;
}

/* blocks [b0, b0 + nb) of q, counted over the whole tensor (rows never
 * share a block), into dst */
static void q_blocks(const QTensor *q, int64_t b0, int64_t nb, float *dst, int fast) {
    if (q->type == QUANT_NF4) {
        nf4_blocks(q, b0, nb, dst, fast);
        return;
    }
    const TypeInfo *ti = type_info(q->type);
    LC_ASSERT(ti && ti->dq);
    dequant_run(ti, q->type, q->data + b0 * ti->bytes, nb, dst, fast);
}

static void q_rows(const QTensor *q, int r0, int n, float *dst, int fast) {
    LC_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= q->rows);
    int64_t per_row = q->cols / quant_block(q->type);
    q_blocks(q, (int64_t)r0 * per_row, (int64_t)n * per_row, dst, fast);
}

void quant_rows(const QTensor *q, int r0, int n, float *dst) { q_rows(q, r0, n, dst, use_fast()); }

void quant_rows_portable(const QTensor *q, int r0, int n, float *dst) { q_rows(q, r0, n, dst, 0); }

void quant_row_part(const QTensor *q, int r, int k0, int n, float *dst) {
    int blk = quant_block(q->type);
    LC_ASSERT(r >= 0 && r < q->rows && k0 >= 0 && n >= 0 && k0 + n <= q->cols && k0 % blk == 0 && n % blk == 0);
    q_blocks(q, ((int64_t)r * q->cols + k0) / blk, n / blk, dst, use_fast());
}

int quant_quantize(uint32_t type, const float *src, int64_t rows, int64_t cols, uint8_t *dst) {
    if (type == QUANT_NF4) return nf4_quantize(src, rows, cols, dst);
    const TypeInfo *ti = type_info(type);
    if (!ti || !ti->q) return -1;
    LC_ASSERT(cols % ti->block == 0);
    int64_t nb = rows * cols / ti->block;
    for (int64_t i = 0; i < nb; i++) ti->q(src + i * ti->block, dst + i * ti->bytes);
    return 0;
}

long quant_nonfinite_rows(const QTensor *q) {
    float *row = xmalloc((size_t)q->cols * sizeof(float));
    long bad = 0;
    for (int r = 0; r < q->rows; r++) {
        quant_rows(q, r, 1, row);
        for (int j = 0; j < q->cols; j++)
            if (!isfinite(row[j])) {
                bad++;
                break;
            }
    }
    free(row);
    return bad;
}
