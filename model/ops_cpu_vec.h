/*
 * ops_cpu_vec.h: what the CPU backend's files share: the dispatch attribute
 * for loops compiled twice (AVX2+FMA and baseline x86-64) and a vectorisable
 * exp. Internal to the CPU backend (ops_cpu.c, ops_cpu_engine.c).
 */
#ifndef LLAMAC_MODEL_OPS_CPU_VEC_H
#define LLAMAC_MODEL_OPS_CPU_VEC_H

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


#endif
