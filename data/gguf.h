/*
 * gguf.h: GGUF files (llama.cpp's format, ggml's docs/gguf.md), read and
 * written: the reader below, the container writer at the end. Read:
 * versions 2 and 3, little-endian: the metadata by key, the tensors by name,
 * and any tensor of a supported type dequantised to float32. In data/
 * because both the tokenizer (tok.c reads tokenizer.ggml.*) and the weight
 * importer (train/io/gguf.c) read it. libc only.
 *
 * Layout: "GGUF", uint32 version, uint64 tensor count, uint64 metadata
 * count; each metadata entry a key (uint64 length + bytes), a uint32 value
 * type and the value (strings: uint64 length + bytes; arrays: uint32
 * element type, uint64 count, the elements); then one info per tensor (name,
 * uint32 ndim, uint64 dims innermost first, uint32 ggml type, uint64 offset
 * into the data section); the data section starts at the next multiple of
 * general.alignment (default 32).
 *
 * gguf_open checks everything before anything is used, so a later lookup
 * never reads outside the file: the magic and version, every count against
 * the bytes left, every string and array length, value types, no duplicate
 * keys or tensor names, no nested arrays, general.alignment a power of two,
 * tensor dims (1..4, each >= 1, no overflow), the tensor type (known, and
 * its rows a whole number of blocks), offsets aligned, every tensor's bytes
 * (from its type's block size) inside the file and no two overlapping.
 * Errors are one line "<file>: <what is wrong>".
 *
 * Types (ggml's block layouts, as gguf-py's quants.py decodes them): F32,
 * F16, BF16 and the quantised Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32),
 * Q4_K, Q5_K, Q6_K (blocks of 256) dequantise; the other ggml types are
 * known by name and size (so such a file opens) but their tensors are an
 * error naming the type.
 */
#ifndef LLAMAC_DATA_GGUF_H
#define LLAMAC_DATA_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../model/base.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* metadata value types (gguf.md) */
typedef enum {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4, GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12, GGUF_VALUE_TYPE_COUNT
} GgufValueType;

/* ggml tensor types this reader knows (ggml.h's numbering) */
enum {
    GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3, GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8, GGML_TYPE_Q4_K = 12, GGML_TYPE_Q5_K = 13, GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30
};

typedef struct GgufKV {
    const char *key;     /* NUL-terminated (owned by the Gguf) */
    uint32_t type;       /* GgufValueType */
    uint32_t elem_type;  /* arrays: the elements' type */
    uint64_t n;          /* arrays: element count; else 1 */
    const uint8_t *data; /* in the map: the scalar, the string's length field, or the first element */
} GgufKV;

typedef struct GgufTensor {
    const char *name;        /* NUL-terminated (owned by the Gguf) */
    int ndim;
    int64_t ne[GGUF_MAX_DIMS]; /* dims innermost first; unused ones 1 */
    uint32_t type;           /* ggml type */
    int64_t numel;
    uint64_t offset;         /* into the data section, a multiple of the alignment */
    uint64_t nbytes;
    const uint8_t *data;     /* in the map */
} GgufTensor;

typedef struct Gguf {
    char *path;              /* for messages */
    const uint8_t *map;      /* the whole file, read-only */
    size_t size;
    uint32_t version;
    uint64_t alignment;
    int n_kv, n_tensors;
    GgufKV *kv;              /* (n_kv) in file order */
    GgufTensor *t;           /* (n_tensors) in file order */
} Gguf;

/* 1 if path is a readable file starting with "GGUF". */
int gguf_is_file(const char *path);

/* Map and check path (see above) into *g; close with gguf_close. Returns 0,
 * or -1 with e and *g zeroed. */
int gguf_open(Gguf *g, const char *path, Err *e);

/* Unmap and free; a zeroed g is fine. */
void gguf_close(Gguf *g);

/* The entry with this key, or NULL. */
const GgufKV *gguf_find(const Gguf *g, const char *key);

/* Typed lookups. Each returns 1 when the key is there and *out is set, 0
 * when it is absent and not required (*out untouched), -1 with e when it is
 * absent and required ("<file>: missing metadata key K") or of another type
 * ("<file>: metadata K is a string, expected an integer").
 *   gguf_get_int: any integer type (a uint64 above INT64_MAX is an error);
 *   gguf_get_float: FLOAT32 or FLOAT64; gguf_get_bool: BOOL;
 *   gguf_get_str: STRING, *s borrowed from the map (not NUL-terminated),
 *   *len its length; gguf_get_array: an ARRAY of elements of elem_type,
 *   *kv the entry. */
int gguf_get_int(const Gguf *g, const char *key, int required, int64_t *out, Err *e);
int gguf_get_float(const Gguf *g, const char *key, int required, double *out, Err *e);
int gguf_get_bool(const Gguf *g, const char *key, int required, int *out, Err *e);
int gguf_get_str(const Gguf *g, const char *key, int required, const char **s, size_t *len, Err *e);
int gguf_get_array(const Gguf *g, const char *key, int required, uint32_t elem_type, const GgufKV **kv,
                   Err *e);

/* The strings of a STRING array entry: (*s)[i], (*len)[i] for i < kv->n,
 * borrowed from the map; the two arrays are the caller's to free(). */
void gguf_strings(const GgufKV *kv, const char ***s, size_t **len);

/* Element i of a numeric array entry (kv->elem_type not STRING/ARRAY),
 * converted to double. */
double gguf_array_num(const GgufKV *kv, uint64_t i);

/* The tensor named name, or NULL. */
const GgufTensor *gguf_tensor(const Gguf *g, const char *name);

/* Name of a ggml type ("Q4_K"), or NULL for a type this reader does not know. */
const char *gguf_type_name(uint32_t type);

/* 1 if tensors of this type dequantise. */
int gguf_type_supported(uint32_t type);

/* Dequantise n values (a whole number of the type's blocks) from src into
 * dst (= float32). Returns 0, or -1 if the type does not dequantise. */
int gguf_dequantize(uint32_t type, const void *src, int64_t n, float *dst);

/* Dequantise tensor t of g into dst (t->numel floats). Returns 0, or -1
 * with "<file>: tensor N has type Q2_K, which llamac does not dequantise
 * (supported: ...)". */
int gguf_tensor_f32(const Gguf *g, const GgufTensor *t, float *dst, Err *e);
/* Give the whole pages of t's bytes in the map back to the kernel (a load
 * that has converted t: the file stays mapped, the bytes read again from
 * the file if touched), so loading a model holds one copy of its weights,
 * not the file and the copy. */
void gguf_tensor_drop(const Gguf *g, const GgufTensor *t);

/* IEEE half (binary16) to float, exact. */
float gguf_half_to_float(uint16_t h);

// ----------------------------------------------------------------------------
// writing: the container (train/io/gguf.c writes a Llama with it)

#define GGUF_Q8_0_BLOCK 32                   /* values per Q8_0 block */
#define GGUF_Q8_0_BYTES (2 + GGUF_Q8_0_BLOCK) /* one block: f16 scale + 32 int8 */

/* Little-endian writes into f; the first failed write clears ok (the caller
 * checks it once at the end), at counts the bytes, n_kv the metadata entries. */
typedef struct GgufWriter {
    FILE *f;
    int ok;
    uint64_t at;
    int n_kv;
} GgufWriter;

void gguf_put(GgufWriter *w, const void *p, size_t n);
void gguf_put_u32(GgufWriter *w, uint32_t v);
void gguf_put_u64(GgufWriter *w, uint64_t v);
/* A string: uint64 length + its n bytes. */
void gguf_put_str(GgufWriter *w, const char *s, size_t n);
/* Metadata entries: the key, the value type, the value; an array's header
 * (element type, count) is followed by the caller's n elements. */
void gguf_kv_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_kv_f32(GgufWriter *w, const char *key, float v);
void gguf_kv_str(GgufWriter *w, const char *key, const char *v);
void gguf_kv_array(GgufWriter *w, const char *key, uint32_t elem_type, uint64_t n);
/* A tensor info: name, ndim, shape[0..ndim) given outermost first (written
 * innermost first, as GGUF stores dims), ggml type, offset into the data. */
void gguf_put_tensor_info(GgufWriter *w, const char *name, int ndim, const int64_t *shape, uint32_t ggml_type,
                          uint64_t offset);
/* Zeros up to the next multiple of alignment (<= 256) of the bytes written. */
void gguf_put_pad(GgufWriter *w, uint32_t alignment);

/* float32 -> F16 (IEEE half, round to nearest even; NaN kept a NaN as
 * numpy's astype does), BF16 (the top 16 bits rounded to nearest even, NaN
 * kept quiet: ggml's fp32_to_bf16), Q8_0 (n a multiple of 32, n / 32 blocks
 * of 34 bytes { f16 d; int8 q[32] }, d = max|x| / 127, q = roundf(x / d):
 * ggml's quantize_row_q8_0_ref), for n values. */
void gguf_to_f16(uint16_t *dst, const float *src, size_t n);
void gguf_to_bf16(uint16_t *dst, const float *src, size_t n);
void gguf_to_q8_0(uint8_t *dst, const float *src, size_t n);

#endif
