/*
 * gguf.c: see gguf.h. The file is mapped read-only; gguf_open walks it once
 * with a bounds-checked cursor, recording where each value and tensor lies,
 * so every later lookup reads only bytes already checked. The type table
 * (name, block size, block bytes, dequantiser) is ggml's: gguf-py's
 * constants.py GGML_QUANT_SIZES gives the sizes, quants.py the layouts the
 * dequantisers follow (element order and float32 rounding included, so
 * values are bit-identical to gguf.quants.dequantize; scripts/gguf_ref.py
 * checks this).
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_KEY_LEN (1 << 16)   /* longer keys and names mean a damaged file */
#define MAX_NAME_LEN (1 << 10)

// ---------------------------------------------------------------------------
// scalars

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

float gguf_half_to_float(uint16_t h) {
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

static inline float h2f(const uint8_t *p) { return gguf_half_to_float(rd16(p)); }

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

typedef struct {
    const char *name;
    int block;      /* elements per block */
    int bytes;      /* bytes per block */
    void (*dq)(const uint8_t *b, float *y); /* NULL: known but not dequantised */
} TypeInfo;

/* ggml's types by number (gguf-py constants.py GGML_QUANT_SIZES); a name
 * NULL is a number ggml does not use */
static const TypeInfo types[] = {
    [0] = {"F32", 1, 4, dq_f32},        [1] = {"F16", 1, 2, dq_f16},
    [2] = {"Q4_0", 32, 18, dq_q4_0},    [3] = {"Q4_1", 32, 20, dq_q4_1},
    [6] = {"Q5_0", 32, 22, dq_q5_0},    [7] = {"Q5_1", 32, 24, dq_q5_1},
    [8] = {"Q8_0", 32, 34, dq_q8_0},    [9] = {"Q8_1", 32, 40, NULL},
    [10] = {"Q2_K", 256, 84, NULL},     [11] = {"Q3_K", 256, 110, NULL},
    [12] = {"Q4_K", 256, 144, dq_q4_k}, [13] = {"Q5_K", 256, 176, dq_q5_k},
    [14] = {"Q6_K", 256, 210, dq_q6_k}, [15] = {"Q8_K", 256, 292, NULL},
    [16] = {"IQ2_XXS", 256, 66, NULL},  [17] = {"IQ2_XS", 256, 74, NULL},
    [18] = {"IQ3_XXS", 256, 98, NULL},  [19] = {"IQ1_S", 256, 50, NULL},
    [20] = {"IQ4_NL", 32, 18, NULL},    [21] = {"IQ3_S", 256, 110, NULL},
    [22] = {"IQ2_S", 256, 82, NULL},    [23] = {"IQ4_XS", 256, 136, NULL},
    [24] = {"I8", 1, 1, NULL},          [25] = {"I16", 1, 2, NULL},
    [26] = {"I32", 1, 4, NULL},         [27] = {"I64", 1, 8, NULL},
    [28] = {"F64", 1, 8, NULL},         [29] = {"IQ1_M", 256, 56, NULL},
    [30] = {"BF16", 1, 2, dq_bf16},     [34] = {"TQ1_0", 256, 54, NULL},
    [35] = {"TQ2_0", 256, 66, NULL},    [39] = {"MXFP4", 32, 17, NULL},
};
#define N_TYPES (sizeof types / sizeof types[0])

static const TypeInfo *type_info(uint32_t t) { return t < N_TYPES && types[t].name ? &types[t] : NULL; }

const char *gguf_type_name(uint32_t type) {
    const TypeInfo *ti = type_info(type);
    return ti ? ti->name : NULL;
}

int gguf_type_supported(uint32_t type) {
    const TypeInfo *ti = type_info(type);
    return ti && ti->dq;
}

int gguf_dequantize(uint32_t type, const void *src, int64_t n, float *dst) {
    const TypeInfo *ti = type_info(type);
    if (!ti || !ti->dq) return -1;
    LC_ASSERT(n % ti->block == 0);
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / ti->block; i++) ti->dq(b + i * ti->bytes, dst + i * ti->block);
    return 0;
}

static void supported_list(char *buf, size_t n) {
    size_t m = 0;
    buf[0] = 0;
    for (size_t t = 0; t < N_TYPES && m < n; t++)
        if (types[t].dq) m += (size_t)snprintf(buf + m, n - m, "%s%s", m ? ", " : "", types[t].name);
}

int gguf_tensor_f32(const Gguf *g, const GgufTensor *t, float *dst, Err *e) {
    if (!gguf_type_supported(t->type)) {
        char list[160];
        supported_list(list, sizeof list);
        return err_set(e, "%s: tensor %s has type %s, which llamac does not dequantise (supported: %s)", g->path,
                       t->name, gguf_type_name(t->type), list);
    }
    gguf_dequantize(t->type, t->data, t->numel, dst);
    return 0;
}

// ---------------------------------------------------------------------------
// open: a bounds-checked cursor over the map

typedef struct {
    const uint8_t *p, *end;
    const char *path;
    Err *e;
} Cur;

static const char *const value_names[GGUF_VALUE_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array",
    "uint64", "int64", "float64"};
static const int value_size[GGUF_VALUE_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static int need(Cur *c, uint64_t n, const char *what) {
    if ((uint64_t)(c->end - c->p) < n)
        return err_set(c->e, "%s: truncated (%s runs past the end of the file)", c->path, what);
    return 0;
}

static int get_u32(Cur *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    *v = rd32(c->p);
    c->p += 4;
    return 0;
}

static int get_u64(Cur *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    *v = rd64(c->p);
    c->p += 8;
    return 0;
}

/* a string: *s at its bytes, *n its length (<= max) */
static int get_str(Cur *c, const uint8_t **s, uint64_t *n, uint64_t max, const char *what) {
    if (get_u64(c, n, what)) return -1;
    if (*n > max) return err_set(c->e, "%s: %s is %llu bytes long (damaged file?)", c->path, what,
                                 (unsigned long long)*n);
    if (need(c, *n, what)) return -1;
    *s = c->p;
    c->p += *n;
    return 0;
}

/* A metadata key or tensor name (at most max bytes, read as `what`): a
 * NUL-terminated copy in *out, owned by the Gguf from the moment it is made
 * (set even when it is refused), which is neither empty nor holds a NUL.
 * Messages name it "<entry> <i>" and its "<field>". */
static int get_name(Cur *c, const char **out, uint64_t max, const char *what, const char *entry, int i,
                    const char *field) {
    const uint8_t *s = NULL; /* set before use; gcc cannot see it once get_str inlines */
    uint64_t n = 0;
    if (get_str(c, &s, &n, max, what)) return -1;
    if (n == 0) return err_set(c->e, "%s: %s %d has an empty %s", c->path, entry, i, field);
    char *copy = xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = 0;
    *out = copy;
    if (memchr(copy, 0, n)) return err_set(c->e, "%s: %s %d: %s holds a NUL byte", c->path, entry, i, field);
    return 0;
}

/* skip one value of type t (checked); arrays hold scalars or strings */
static int skip_value(Cur *c, uint32_t t, GgufKV *kv, const char *what) {
    if (t >= GGUF_VALUE_TYPE_COUNT)
        return err_set(c->e, "%s: %s has unknown value type %u", c->path, what, t);
    kv->type = t;
    kv->n = 1;
    kv->data = c->p;
    if (t == GGUF_STRING) {
        const uint8_t *s;
        uint64_t n;
        return get_str(c, &s, &n, UINT64_MAX, what);
    }
    if (t != GGUF_ARRAY) {
        if (need(c, (uint64_t)value_size[t], what)) return -1;
        if (t == GGUF_BOOL && *c->p > 1)
            return err_set(c->e, "%s: %s is a bool of value %u (not 0 or 1)", c->path, what, *c->p);
        c->p += value_size[t];
        return 0;
    }
    uint32_t et;
    uint64_t n;
    if (get_u32(c, &et, what) || get_u64(c, &n, what)) return -1;
    if (et == GGUF_ARRAY) return err_set(c->e, "%s: %s is an array of arrays (not supported)", c->path, what);
    if (et >= GGUF_VALUE_TYPE_COUNT)
        return err_set(c->e, "%s: %s is an array of unknown type %u", c->path, what, et);
    kv->elem_type = et;
    kv->n = n;
    kv->data = c->p;
    if (et == GGUF_STRING) {
        if (n > (uint64_t)(c->end - c->p) / 8) /* every element needs its 8-byte length */
            return err_set(c->e, "%s: truncated (%s: %llu strings cannot fit in the file)", c->path, what,
                           (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *s;
            uint64_t len;
            if (get_str(c, &s, &len, UINT64_MAX, what)) return -1;
        }
        return 0;
    }
    uint64_t sz = (uint64_t)value_size[et];
    if (n > (uint64_t)(c->end - c->p) / sz)
        return err_set(c->e, "%s: truncated (%s: %llu %s values run past the end of the file)", c->path, what,
                       (unsigned long long)n, value_names[et]);
    c->p += n * sz;
    return 0;
}

int gguf_is_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4];
    int ok = fread(m, 1, 4, f) == 4 && memcmp(m, GGUF_MAGIC, 4) == 0;
    fclose(f);
    return ok;
}

static int cmp_offset(const void *a, const void *b) {
    const GgufTensor *x = *(const GgufTensor *const *)a, *y = *(const GgufTensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Walk the mapped file into g (g->map, size, path set). */
static int parse(Gguf *g, Err *e) {
    Cur c = {g->map, g->map + g->size, g->path, e};
    if (g->size < 4 || memcmp(g->map, GGUF_MAGIC, 4) != 0)
        return err_set(e, "%s: not a GGUF file (no \"GGUF\" magic)", g->path);
    c.p += 4;
    uint64_t nt, nkv;
    if (get_u32(&c, &g->version, "the header")) return -1;
    if (g->version != 2 && g->version != 3) {
        if (g->version > 0xffff && (g->version >> 24) <= 3)
            return err_set(e, "%s: a big-endian GGUF (version %u byte-swapped): not supported", g->path,
                           g->version >> 24);
        return err_set(e, "%s: GGUF version %u not supported (supported: 2, 3)", g->path, g->version);
    }
    if (get_u64(&c, &nt, "the header") || get_u64(&c, &nkv, "the header")) return -1;
    /* a metadata entry takes at least 13 bytes, a tensor info at least 29 */
    size_t left = (size_t)(c.end - c.p);
    if (nkv > left / 13) return err_set(e, "%s: claims %llu metadata entries, more than the file can hold",
                                        g->path, (unsigned long long)nkv);
    if (nt > left / 29) return err_set(e, "%s: claims %llu tensors, more than the file can hold", g->path,
                                       (unsigned long long)nt);
    g->n_kv = (int)nkv;
    g->n_tensors = (int)nt;
    g->kv = xcalloc(nkv ? nkv : 1, sizeof *g->kv);
    g->t = xcalloc(nt ? nt : 1, sizeof *g->t);
    char what[96];

    for (int i = 0; i < g->n_kv; i++) {
        uint32_t t;
        snprintf(what, sizeof what, "metadata entry %d", i);
        if (get_name(&c, &g->kv[i].key, MAX_KEY_LEN, what, "metadata entry", i, "key")) return -1;
        if (gguf_find(g, g->kv[i].key) != &g->kv[i])
            return err_set(e, "%s: metadata key %.80s appears twice", g->path, g->kv[i].key);
        snprintf(what, sizeof what, "metadata %.80s", g->kv[i].key);
        if (get_u32(&c, &t, what) || skip_value(&c, t, &g->kv[i], what)) return -1;
    }
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GgufKV *al = gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_UINT32)
            return err_set(e, "%s: general.alignment is a %s, expected uint32", g->path, value_names[al->type]);
        uint32_t a = rd32(al->data);
        if (a == 0 || (a & (a - 1)))
            return err_set(e, "%s: general.alignment %u is not a power of two", g->path, a);
        g->alignment = a;
    }

    for (int i = 0; i < g->n_tensors; i++) {
        GgufTensor *T = &g->t[i];
        uint32_t nd;
        snprintf(what, sizeof what, "tensor info %d", i);
        if (get_name(&c, &T->name, MAX_NAME_LEN, what, "tensor", i, "name")) return -1;
        if (gguf_tensor(g, T->name) != T)
            return err_set(e, "%s: tensor name %.80s appears twice", g->path, T->name);
        snprintf(what, sizeof what, "tensor info %.80s", T->name);
        if (get_u32(&c, &nd, what)) return -1;
        if (nd < 1 || nd > GGUF_MAX_DIMS)
            return err_set(e, "%s: tensor %s has %u dimensions (supported: 1 to %d)", g->path, T->name, nd,
                           GGUF_MAX_DIMS);
        T->ndim = (int)nd;
        T->numel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) T->ne[d] = 1;
        for (int d = 0; d < T->ndim; d++) {
            uint64_t v;
            if (get_u64(&c, &v, what)) return -1;
            if (v == 0 || v > (uint64_t)INT64_MAX / (uint64_t)T->numel || v * (uint64_t)T->numel > (1ull << 48))
                return err_set(e, "%s: tensor %s has a bad dimension %llu", g->path, T->name, (unsigned long long)v);
            T->ne[d] = (int64_t)v;
            T->numel *= (int64_t)v;
        }
        if (get_u32(&c, &T->type, what) || get_u64(&c, &T->offset, what)) return -1;
        const TypeInfo *ti = type_info(T->type);
        if (!ti) return err_set(e, "%s: tensor %s has unknown type %u", g->path, T->name, T->type);
        if (T->ne[0] % ti->block)
            return err_set(e, "%s: tensor %s: %lld values per row is not a whole number of %s blocks (%d)", g->path,
                           T->name, (long long)T->ne[0], ti->name, ti->block);
        T->nbytes = (uint64_t)(T->numel / ti->block) * (uint64_t)ti->bytes;
        if (T->offset % g->alignment)
            return err_set(e, "%s: tensor %s: offset %llu is not a multiple of the alignment %llu", g->path, T->name,
                           (unsigned long long)T->offset, (unsigned long long)g->alignment);
    }

    /* data section: at the next multiple of the alignment */
    uint64_t at = (uint64_t)(c.p - g->map), data0 = (at + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors && data0 > g->size)
        return err_set(e, "%s: truncated (no data section after the tensor infos)", g->path);
    uint64_t room = g->size - (data0 < g->size ? data0 : g->size);
    GgufTensor **by = xmalloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof *by);
    int rc = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        GgufTensor *T = &g->t[i];
        by[i] = T;
        if (T->offset > room || T->nbytes > room - T->offset) {
            rc = err_set(e, "%s: tensor %s: data [%llu, +%llu) runs past the end of the file (truncated or a bad "
                            "offset)", g->path, T->name, (unsigned long long)T->offset,
                         (unsigned long long)T->nbytes);
            break;
        }
        T->data = g->map + data0 + T->offset;
    }
    if (rc == 0) {
        qsort(by, (size_t)g->n_tensors, sizeof *by, cmp_offset);
        for (int i = 1; i < g->n_tensors; i++)
            if (by[i - 1]->offset + by[i - 1]->nbytes > by[i]->offset) {
                rc = err_set(e, "%s: tensors %s and %s overlap in the data section", g->path, by[i - 1]->name,
                             by[i]->name);
                break;
            }
    }
    free(by);
    return rc;
}

int gguf_open(Gguf *g, const char *path, Err *e) {
    memset(g, 0, sizeof *g);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return err_set(e, "%s: empty file (not a GGUF file)", path);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return err_set(e, "%s: cannot map (%s)", path, strerror(errno));
    g->map = m;
    g->size = (size_t)st.st_size;
    size_t pl = strlen(path) + 1;
    g->path = memcpy(xmalloc(pl), path, pl);
    if (parse(g, e)) {
        gguf_close(g);
        return -1;
    }
    return 0;
}

void gguf_close(Gguf *g) {
    if (!g) return;
    if (g->map) munmap((void *)g->map, g->size);
    free(g->path);
    for (int i = 0; g->kv && i < g->n_kv; i++) free((char *)g->kv[i].key);
    for (int i = 0; g->t && i < g->n_tensors; i++) free((char *)g->t[i].name);
    free(g->kv);
    free(g->t);
    memset(g, 0, sizeof *g);
}

// ---------------------------------------------------------------------------
// lookups

const GgufKV *gguf_find(const Gguf *g, const char *key) {
    for (int i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const GgufTensor *gguf_tensor(const Gguf *g, const char *name) {
    for (int i = 0; i < g->n_tensors; i++)
        if (g->t[i].name && strcmp(g->t[i].name, name) == 0) return &g->t[i];
    return NULL;
}

/* the entry, or 0 (absent, fine) / -1 (absent and required) */
static int lookup(const Gguf *g, const char *key, int required, const GgufKV **kv, Err *e) {
    *kv = gguf_find(g, key);
    if (*kv) return 1;
    return required ? err_set(e, "%s: missing metadata key %s", g->path, key) : 0;
}

static int wrong_type(const Gguf *g, const GgufKV *kv, const char *want, Err *e) {
    if (kv->type == GGUF_ARRAY)
        return err_set(e, "%s: metadata %s is an array of %s, expected %s", g->path, kv->key,
                       value_names[kv->elem_type], want);
    return err_set(e, "%s: metadata %s is a %s, expected %s", g->path, kv->key, value_names[kv->type], want);
}

/* a numeric scalar of type t at p, as double */
static double num_at(uint32_t t, const uint8_t *p) {
    switch (t) {
    case GGUF_UINT8: case GGUF_BOOL: return p[0];
    case GGUF_INT8: return (int8_t)p[0];
    case GGUF_UINT16: return rd16(p);
    case GGUF_INT16: return (int16_t)rd16(p);
    case GGUF_UINT32: return rd32(p);
    case GGUF_INT32: return (int32_t)rd32(p);
    case GGUF_UINT64: return (double)rd64(p);
    case GGUF_INT64: return (double)(int64_t)rd64(p);
    case GGUF_FLOAT32: {
        float f;
        uint32_t u = rd32(p);
        memcpy(&f, &u, 4);
        return f;
    }
    case GGUF_FLOAT64: {
        double d;
        uint64_t u = rd64(p);
        memcpy(&d, &u, 8);
        return d;
    }
    default: LC_FATAL("num_at: type %u is not numeric", t);
    }
}

int gguf_get_int(const Gguf *g, const char *key, int required, int64_t *out, Err *e) {
    const GgufKV *kv;
    int r = lookup(g, key, required, &kv, e);
    if (r <= 0) return r;
    const uint8_t *p = kv->data;
    switch (kv->type) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_UINT16: case GGUF_INT16: case GGUF_UINT32: case GGUF_INT32:
        *out = (int64_t)num_at(kv->type, p);
        return 1;
    case GGUF_INT64: *out = (int64_t)rd64(p); return 1;
    case GGUF_UINT64:
        if (rd64(p) > (uint64_t)INT64_MAX) return err_set(e, "%s: metadata %s is out of range", g->path, key);
        *out = (int64_t)rd64(p);
        return 1;
    default: return wrong_type(g, kv, "an integer", e);
    }
}

int gguf_get_float(const Gguf *g, const char *key, int required, double *out, Err *e) {
    const GgufKV *kv;
    int r = lookup(g, key, required, &kv, e);
    if (r <= 0) return r;
    if (kv->type != GGUF_FLOAT32 && kv->type != GGUF_FLOAT64) return wrong_type(g, kv, "a float", e);
    *out = num_at(kv->type, kv->data);
    return 1;
}

int gguf_get_bool(const Gguf *g, const char *key, int required, int *out, Err *e) {
    const GgufKV *kv;
    int r = lookup(g, key, required, &kv, e);
    if (r <= 0) return r;
    if (kv->type != GGUF_BOOL) return wrong_type(g, kv, "a bool", e);
    *out = kv->data[0];
    return 1;
}

int gguf_get_str(const Gguf *g, const char *key, int required, const char **s, size_t *len, Err *e) {
    const GgufKV *kv;
    int r = lookup(g, key, required, &kv, e);
    if (r <= 0) return r;
    if (kv->type != GGUF_STRING) return wrong_type(g, kv, "a string", e);
    *len = (size_t)rd64(kv->data);
    *s = (const char *)kv->data + 8;
    return 1;
}

int gguf_get_array(const Gguf *g, const char *key, int required, uint32_t elem_type, const GgufKV **out, Err *e) {
    const GgufKV *kv;
    int r = lookup(g, key, required, &kv, e);
    if (r <= 0) return r;
    if (kv->type != GGUF_ARRAY || kv->elem_type != elem_type) {
        char want[48];
        snprintf(want, sizeof want, "an array of %s", value_names[elem_type]);
        return wrong_type(g, kv, want, e);
    }
    *out = kv;
    return 1;
}

void gguf_strings(const GgufKV *kv, const char ***s, size_t **len) {
    LC_ASSERT(kv->type == GGUF_ARRAY && kv->elem_type == GGUF_STRING);
    *s = xmalloc((size_t)(kv->n ? kv->n : 1) * sizeof **s);
    *len = xmalloc((size_t)(kv->n ? kv->n : 1) * sizeof **len);
    const uint8_t *p = kv->data;
    for (uint64_t i = 0; i < kv->n; i++) {
        uint64_t n = rd64(p);
        (*s)[i] = (const char *)p + 8;
        (*len)[i] = (size_t)n;
        p += 8 + n;
    }
}

double gguf_array_num(const GgufKV *kv, uint64_t i) {
    LC_ASSERT(kv->type == GGUF_ARRAY && kv->elem_type != GGUF_STRING && i < kv->n);
    return num_at(kv->elem_type, kv->data + i * (uint64_t)value_size[kv->elem_type]);
}

// ----------------------------------------------------------------------------
// writing: float32 -> F16, BF16, Q8_0 (the inverses of the dequantisers above)

/* IEEE half of f, round to nearest even; NaN as numpy makes it (the top
 * payload bits, kept a NaN) */
static uint16_t f16_of(float f) {
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

void gguf_to_f16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f16_of(src[i]);
}

void gguf_to_bf16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        dst[i] = (u & 0x7fffffff) > 0x7f800000 ? (uint16_t)(u >> 16 | 64) : (uint16_t)((u + 0x7fff + (u >> 16 & 1)) >> 16);
    }
}

void gguf_to_q8_0(uint8_t *dst, const float *src, size_t n) {
    LC_ASSERT(n % GGUF_Q8_0_BLOCK == 0);
    for (size_t b = 0; b < n / GGUF_Q8_0_BLOCK; b++) {
        const float *x = src + b * GGUF_Q8_0_BLOCK;
        uint8_t *y = dst + b * GGUF_Q8_0_BYTES;
        float amax = 0;
        for (int j = 0; j < GGUF_Q8_0_BLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = f16_of(d);
        memcpy(y, &dh, 2);
        for (int j = 0; j < GGUF_Q8_0_BLOCK; j++) y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

// ----------------------------------------------------------------------------
// writing: the container, little-endian, errors folded into ok

void gguf_put(GgufWriter *w, const void *p, size_t n) {
    if (w->ok && fwrite(p, 1, n, w->f) != n) w->ok = 0;
    w->at += n;
}
void gguf_put_u32(GgufWriter *w, uint32_t v) { gguf_put(w, &v, 4); }
void gguf_put_u64(GgufWriter *w, uint64_t v) { gguf_put(w, &v, 8); }
void gguf_put_str(GgufWriter *w, const char *s, size_t n) {
    gguf_put_u64(w, n);
    gguf_put(w, s, n);
}

/* an entry's key and value type */
static void kv_head(GgufWriter *w, const char *key, uint32_t type) {
    w->n_kv++;
    gguf_put_str(w, key, strlen(key));
    gguf_put_u32(w, type);
}
void gguf_kv_u32(GgufWriter *w, const char *key, uint32_t v) {
    kv_head(w, key, GGUF_UINT32);
    gguf_put_u32(w, v);
}
void gguf_kv_f32(GgufWriter *w, const char *key, float v) {
    kv_head(w, key, GGUF_FLOAT32);
    gguf_put(w, &v, 4);
}
void gguf_kv_str(GgufWriter *w, const char *key, const char *v) {
    kv_head(w, key, GGUF_STRING);
    gguf_put_str(w, v, strlen(v));
}
void gguf_kv_array(GgufWriter *w, const char *key, uint32_t elem_type, uint64_t n) {
    kv_head(w, key, GGUF_ARRAY);
    gguf_put_u32(w, elem_type);
    gguf_put_u64(w, n);
}

void gguf_put_tensor_info(GgufWriter *w, const char *name, int ndim, const int64_t *shape, uint32_t ggml_type,
                          uint64_t offset) {
    gguf_put_str(w, name, strlen(name));
    gguf_put_u32(w, (uint32_t)ndim);
    for (int k = ndim - 1; k >= 0; k--) gguf_put_u64(w, (uint64_t)shape[k]); /* innermost first */
    gguf_put_u32(w, ggml_type);
    gguf_put_u64(w, offset);
}

void gguf_put_pad(GgufWriter *w, uint32_t alignment) {
    static const char zeros[256];
    LC_ASSERT(alignment > 0 && alignment <= sizeof zeros);
    gguf_put(w, zeros, (size_t)((alignment - w->at % alignment) % alignment));
}

void gguf_tensor_drop(const Gguf *g, const GgufTensor *t) {
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)t->data + ps - 1) / ps * ps, b = ((uintptr_t)t->data + t->nbytes) / ps * ps;
    (void)g;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}
