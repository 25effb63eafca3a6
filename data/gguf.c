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

#include "../model/quant.h"

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

float gguf_half_to_float(uint16_t h) { return quant_half_to_float(h); }

const char *gguf_type_name(uint32_t type) { return type == QUANT_NF4 ? NULL : quant_name(type); }

int gguf_type_supported(uint32_t type) { return type != QUANT_NF4 && quant_dequantizes(type); }

int gguf_dequantize(uint32_t type, const void *src, int64_t n, float *dst) {
    return quant_dequantize(type, src, n, dst);
}

int gguf_tensor_f32(const Gguf *g, const GgufTensor *t, float *dst, Err *e) {
    if (!gguf_type_supported(t->type)) {
        return err_set(e, "%s: tensor %s has type %s, which llamac does not dequantise (supported: %s)", g->path,
                       t->name, gguf_type_name(t->type), quant_dequant_list());
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
        const char *tname = gguf_type_name(T->type);
        if (!tname) return err_set(e, "%s: tensor %s has unknown type %u", g->path, T->name, T->type);
        int block = quant_block(T->type);
        if (T->ne[0] % block)
            return err_set(e, "%s: tensor %s: %lld values per row is not a whole number of %s blocks (%d)", g->path,
                           T->name, (long long)T->ne[0], tname, block);
        T->nbytes = (uint64_t)(T->numel / block) * (uint64_t)quant_block_bytes(T->type);
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

void gguf_to_f16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = quant_float_to_half(src[i]);
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
    quant_quantize(QUANT_Q8_0, src, 1, (int64_t)n, dst);
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
