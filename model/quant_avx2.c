/*
 * quant_avx2.c: AVX2+FMA dequantisers for the types a QLoRA base or a
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
#include "quant.h"
#include "quant_impl.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

int quant_avx2_ok(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

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
static AVX2 void dq_q8_0(const uint8_t *b, int64_t nb, float *y) {
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
static AVX2 void dq_q4_0(const uint8_t *b, int64_t nb, float *y) {
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
static AVX2 void dq_q4_1(const uint8_t *b, int64_t nb, float *y) {
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
static inline void scale_min(const uint8_t *s, int j, int *sc, int *mn) {
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
static AVX2 void dq_q4_k(const uint8_t *b, int64_t nb, float *y) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < nb; i++, b += 144, y += 256) {
        float d = half_to_float(b), dmin = half_to_float(b + 2);
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            scale_min(b + 4, j, &sc, &mn);
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
static AVX2 void dq_q6_k(const uint8_t *b, int64_t nb, float *y) {
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

QuantBlocksFn quant_avx2_blocks(uint32_t type) {
    switch (type) {
    case QUANT_Q8_0: return dq_q8_0;
    case QUANT_Q4_0: return dq_q4_0;
    case QUANT_Q4_1: return dq_q4_1;
    case QUANT_Q4_K: return dq_q4_k;
    case QUANT_Q6_K: return dq_q6_k;
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

int quant_avx2_nf4(const uint8_t *blocks, int64_t b0, int64_t nb, const uint8_t *absmax2, float offset,
                   const float *code, const float *dyn, float *dst) {
    nf4_run(blocks, b0, nb, absmax2, offset, code, dyn, dst);
    return 1;
}

#else

int quant_avx2_ok(void) { return 0; }
QuantBlocksFn quant_avx2_blocks(uint32_t type) {
    (void)type;
    return NULL;
}
int quant_avx2_nf4(const uint8_t *blocks, int64_t b0, int64_t nb, const uint8_t *absmax2, float offset,
                   const float *code, const float *dyn, float *dst) {
    (void)blocks, (void)b0, (void)nb, (void)absmax2, (void)offset, (void)code, (void)dyn, (void)dst;
    return 0;
}

#endif
