/*
 * safetensors.c: the .safetensors reader (mmap + header validation + dtype
 * conversion) and the F32 writer. Header rules follow the reference
 * library's: every byte of the data section belongs to exactly one tensor.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format and our float32 buffers are little-endian; data is copied as is. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* The dtypes of the format and their sizes; only the float ones convert. */
static const struct {
    const char *name;
    int size;
} dtypes[] = {
    {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
    {"F16", 2}, {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

static int dtype_size(const char *s) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(dtypes[i].name, s) == 0) return dtypes[i].size;
    return 0;
}

void safetensors_close(Safetensors *f) {
    if (f->map) munmap((void *)f->map, f->size);
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int cmp_begin(const void *a, const void *b) {
    const SafetensorsTensor *x = *(const SafetensorsTensor *const *)a, *y = *(const SafetensorsTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* One header entry into *t; -1 with e naming the tensor. */
static int parse_entry(const char *path, const char *name, json_t *v, size_t data_size, SafetensorsTensor *t,
                       Err *e) {
    if (!json_is_object(v)) return err_set(e, "%s: header entry %s is not an object", path, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(off))
        return err_set(e, "%s: tensor %s lacks dtype, shape or data_offsets", path, name);
    const char *ds = json_string_value(dt);
    t->elem_size = dtype_size(ds);
    if (!t->elem_size) return err_set(e, "%s: tensor %s has unknown dtype %.16s", path, name, ds);
    snprintf(t->dtype, sizeof t->dtype, "%s", ds);
    size_t nd = json_array_size(sh);
    if (nd > SAFETENSORS_MAX_DIMS) return err_set(e, "%s: tensor %s has %zu dims (at most %d)", path, name, nd,
                                                  SAFETENSORS_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t bytes = (uint64_t)t->elem_size;
    for (size_t k = 0; k < nd; k++) {
        json_t *d = json_array_get(sh, k);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return err_set(e, "%s: tensor %s has a bad shape entry", path, name);
        t->shape[k] = json_integer_value(d);
        if (t->shape[k] && bytes > UINT64_MAX / (uint64_t)t->shape[k])
            return err_set(e, "%s: tensor %s: shape overflows", path, name);
        bytes *= (uint64_t)t->shape[k];
    }
    json_t *b0 = json_array_get(off, 0), *b1 = json_array_get(off, 1);
    if (json_array_size(off) != 2 || !json_is_integer(b0) || !json_is_integer(b1) || json_integer_value(b0) < 0 ||
        json_integer_value(b1) < json_integer_value(b0))
        return err_set(e, "%s: tensor %s: data_offsets must be [begin, end] with 0 <= begin <= end", path, name);
    t->begin = (size_t)json_integer_value(b0);
    t->end = (size_t)json_integer_value(b1);
    if (t->end > data_size)
        return err_set(e, "%s: tensor %s: data_offsets [%zu, %zu] lie beyond the %zu data bytes of the file", path,
                       name, t->begin, t->end, data_size);
    if (t->end - t->begin != bytes)
        return err_set(e, "%s: tensor %s: data_offsets span %zu bytes, its %s shape needs %llu", path, name,
                       t->end - t->begin, t->dtype, (unsigned long long)bytes);
    return 0;
}

int safetensors_open(Safetensors *f, const char *path, Err *e) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, "%s: not a regular file", path);
    }
    f->path = strdup(path);
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        close(fd);
        err_set(e, "%s: %zu bytes, too short for a safetensors header", path, f->size);
        goto fail;
    }
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        err_set(e, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    f->map = m;
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | f->map[k];
    if (hlen > f->size - 8) {
        err_set(e, "%s: header length %llu is larger than the file (%zu bytes)", path, (unsigned long long)hlen,
                f->size);
        goto fail;
    }
    if (hlen > SAFETENSORS_MAX_HEADER || hlen < 2) {
        err_set(e, "%s: implausible header length %llu", path, (unsigned long long)hlen);
        goto fail;
    }
    f->data_start = 8 + (size_t)hlen;
    size_t data_size = f->size - f->data_start;
    json_error_t je;
    json_t *h = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!h || !json_is_object(h)) {
        char jq[2 * ERR_QUOTE_CAP]; /* jansson quotes the text near the error */
        if (h) err_set(e, "%s: header is not a JSON object", path);
        else err_set(e, "%s: header JSON: %s (byte %d)", path, err_quote(jq, sizeof jq, je.text, strlen(je.text)), je.position);
        json_decref(h);
        goto fail;
    }
    f->t = xcalloc(json_object_size(h) + 1, sizeof *f->t);
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        SafetensorsTensor *t = &f->t[f->n];
        if (parse_entry(path, key, v, data_size, t, e)) {
            json_decref(h);
            goto fail;
        }
        t->name = strdup(key);
        f->n++;
    }
    json_decref(h);
    /* every data byte in exactly one tensor: sorted by begin, each starts
     * where the previous ended, the last ends at the end of the file */
    SafetensorsTensor **s = xmalloc((size_t)(f->n + 1) * sizeof *s);
    for (int i = 0; i < f->n; i++) s[i] = &f->t[i];
    qsort(s, (size_t)f->n, sizeof *s, cmp_begin);
    size_t at = 0;
    int bad = 0;
    for (int i = 0; i < f->n && !bad; i++) {
        if (s[i]->begin < at)
            bad = err_set(e, "%s: tensors %s and %s overlap in the data", path, s[i - 1]->name, s[i]->name);
        else if (s[i]->begin > at)
            bad = err_set(e, "%s: %zu data bytes before tensor %s belong to no tensor", path, s[i]->begin - at,
                          s[i]->name);
        at = s[i]->end;
    }
    if (!bad && at != data_size)
        bad = err_set(e, "%s: %zu trailing data bytes belong to no tensor", path, data_size - at);
    free(s);
    if (bad) goto fail;
    return 0;
fail:
    safetensors_close(f);
    return -1;
}

int safetensors_find(const Safetensors *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return i;
    return -1;
}

/* IEEE half to float, exact (every half is a float): normals rebias the
 * exponent, subnormals scale the mantissa by 2^-24, Inf/NaN keep their class. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 31, man = h & 1023, bits;
    if (ex == 0) {
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (ex == 31) bits = sign | 0x7f800000u | man << 13;
    else bits = sign | (ex + 112) << 23 | man << 13;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

int safetensors_read_f32(const Safetensors *f, int i, float *dst, Err *e) {
    const SafetensorsTensor *t = &f->t[i];
    const unsigned char *src = f->map + f->data_start + t->begin;
    size_t n = (t->end - t->begin) / (size_t)t->elem_size;
    /* the data may sit at any byte offset: memcpy per element, which
     * compiles to a plain (unaligned) load */
    if (strcmp(t->dtype, "F32") == 0) {
        memcpy(dst, src, n * 4);
    } else if (strcmp(t->dtype, "BF16") == 0) {
#pragma omp parallel for schedule(static) if (n > (1 << 18))
        for (size_t k = 0; k < n; k++) {
            uint16_t b;
            memcpy(&b, src + 2 * k, 2);
            uint32_t bits = (uint32_t)b << 16;
            memcpy(&dst[k], &bits, 4);
        }
    } else if (strcmp(t->dtype, "F16") == 0) {
#pragma omp parallel for schedule(static) if (n > (1 << 18))
        for (size_t k = 0; k < n; k++) {
            uint16_t b;
            memcpy(&b, src + 2 * k, 2);
            dst[k] = half_to_float(b);
        }
    } else {
        return err_set(e, "%s: tensor %s has dtype %s (supported: F32, F16, BF16)", f->path, t->name, t->dtype);
    }
    return 0;
}

int safetensors_write(const char *path, const SafetensorsOut *t, int n, Err *e) {
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        json_t *shape = json_array();
        size_t numel = 1;
        for (int k = 0; k < t[i].ndim; k++) {
            json_array_append_new(shape, json_integer(t[i].shape[k]));
            numel *= (size_t)t[i].shape[k];
        }
        json_t *off = json_pack("[I,I]", (json_int_t)at, (json_int_t)(at + 4 * numel));
        json_object_set_new(h, t[i].name, json_pack("{s:s,s:o,s:o}", "dtype", "F32", "shape", shape,
                                                    "data_offsets", off));
        at += 4 * numel;
    }
    char *js = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    LC_ASSERT(js);
    size_t jl = strlen(js), padded = (jl + 7) / 8 * 8; /* data 8-byte aligned, padding is spaces */
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(js);
        return err_set(e, "%s: cannot create: %s", path, strerror(errno));
    }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)padded >> (8 * k));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(js, 1, jl, fp) == jl;
    for (size_t k = jl; k < padded && ok; k++) ok = fputc(' ', fp) != EOF;
    free(js);
    for (int i = 0; i < n && ok; i++) {
        size_t numel = 1;
        for (int k = 0; k < t[i].ndim; k++) numel *= (size_t)t[i].shape[k];
        ok = fwrite(t[i].data, 4, numel, fp) == numel;
    }
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    if (fclose(fp) != 0) ok = 0;
    if (!ok) return err_set(e, "%s: write failed: %s", path, strerror(errno));
    return 0;
}
