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
// NF4 (bitsandbytes)

/* NF4 rows [r0, r0 + n) of q into dst: see the NF4 section of quant.h. */
static void nf4_rows(const QTensor *q, int r0, int n, float *dst) {
    (void)q, (void)r0, (void)n, (void)dst;
    LC_FATAL("NF4 dequantisation: not written yet");
}

static int nf4_quantize(const float *src, int64_t rows, int64_t cols, uint8_t *dst) {
    (void)src, (void)rows, (void)cols, (void)dst;
    return -1;
}

// ---------------------------------------------------------------------------
// quantisers: float32 -> blocks (ggml's reference quantisers)

/* Q8_0: d = max|x| / 127, q = roundf(x / d) (quantize_row_q8_0_ref) */
static void q_q8_0(const float *x, uint8_t *y) {
    float amax = 0;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t dh = quant_float_to_half(d);
    memcpy(y, &dh, 2);
    for (int j = 0; j < QK; j++) y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
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
    [2] = {"Q4_0", 32, 18, dq_q4_0, NULL, 1},    [3] = {"Q4_1", 32, 20, dq_q4_1, NULL, 1},
    [6] = {"Q5_0", 32, 22, dq_q5_0, NULL, 1},    [7] = {"Q5_1", 32, 24, dq_q5_1, NULL, 1},
    [8] = {"Q8_0", 32, 34, dq_q8_0, q_q8_0, 1},  [9] = {"Q8_1", 32, 40, NULL, NULL, 0},
    [10] = {"Q2_K", 256, 84, NULL, NULL, 0},     [11] = {"Q3_K", 256, 110, NULL, NULL, 0},
    [12] = {"Q4_K", 256, 144, dq_q4_k, NULL, 1}, [13] = {"Q5_K", 256, 176, dq_q5_k, NULL, 1},
    [14] = {"Q6_K", 256, 210, dq_q6_k, NULL, 1}, [15] = {"Q8_K", 256, 292, NULL, NULL, 0},
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

int quant_dequantize(uint32_t type, const void *src, int64_t n, float *dst) {
    const TypeInfo *ti = type_info(type);
    if (!ti || !ti->dq) return -1;
    LC_ASSERT(n % ti->block == 0);
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / ti->block; i++) ti->dq(b + i * ti->bytes, dst + i * ti->block);
    return 0;
}

void quant_rows(const QTensor *q, int r0, int n, float *dst) {
    LC_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= q->rows);
    if (q->type == QUANT_NF4) {
        nf4_rows(q, r0, n, dst);
        return;
    }
    int rc = quant_dequantize(q->type, q->data + (size_t)r0 * q->row_bytes, (int64_t)n * q->cols, dst);
    LC_ASSERT(rc == 0);
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
