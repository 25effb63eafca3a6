/*
 * vecmath.h: host loops that model/'s files share: the dispatch attribute
 * for loops compiled twice (AVX2+FMA and baseline x86-64), a vectorisable exp
 * and a vector max (ops_cpu.c, ops_cpu_engine.c, sample.c).
 */
#ifndef LLAMAC_MODEL_VECMATH_H
#define LLAMAC_MODEL_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* Total on every float (issue 16): NaN -> NaN, below -87 (e^-87 ~ 1.6e-38,
 * nothing for softmax) and -Inf -> 0, above 88.72 (ln FLT_MAX) and +Inf ->
 * +Inf, as expf. 2^n comes from the bits of the rounding sum t (its low
 * mantissa bits hold n, as in exp8) in unsigned arithmetic: no float-to-int
 * conversion of a NaN, no shift of a negative value (both undefined). */
static inline __attribute__((always_inline)) float exp_approx(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    float t = xc * 1.44269504f + 12582912.0f;
    float n = t - 12582912.0f;                                 /* round(x / ln2) */
    float r = xc - n * 0.693359375f - n * -2.12194440e-4f;     /* ln2 split hi + lo */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666667e-2f +
              r * (8.3333333e-3f + r * 1.3888889e-3f)))));
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    uint32_t bits = (tb << 23) + (127u << 23);
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    float y = p * two_n; /* NaN stays NaN: p is NaN */
    y = x < -87.0f ? 0.0f : y;
    return x > 88.72f ? INFINITY : y;
}


/* max of x[0..n), n >= 1. GCC does not vectorise a float max reduction
 * without -ffinite-math-only, so eight lanes are spelled out with GCC vector
 * extensions (compare to a mask, then select by bits). */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

VECTOR_CLONES static inline float vec_max(const float *x, int n) {
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

#endif
