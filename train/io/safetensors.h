/*
 * safetensors.h: read and write Hugging Face .safetensors files.
 *
 * Format (github.com/huggingface/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON (may be padded with spaces), then the
 * data. The JSON maps each tensor name to {"dtype": "F32", "shape": [..],
 * "data_offsets": [begin, end]} with offsets relative to the start of the
 * data; an optional "__metadata__" entry maps strings to strings. Tensors
 * are row-major, little-endian.
 *
 * safetensors_open maps the file read-only and checks the whole header up
 * front, as the reference library does: a header length beyond the file,
 * JSON that is not an object of tensor entries, an unknown dtype, a shape
 * whose byte size differs from its data_offsets, offsets beyond the file,
 * and tensors that overlap or leave holes in the data are each an error
 * "<file>: <problem>". Reading converts F32, F16 and BF16 to float32 straight
 * from the mapping into the caller's buffer (no intermediate copy).
 */
#ifndef LLAMAC_TRAIN_SAFETENSORS_H
#define LLAMAC_TRAIN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../../model/base.h"

#define SAFETENSORS_MAX_DIMS 8
#define SAFETENSORS_MAX_HEADER (100u << 20) /* the reference library's limit */

typedef struct SafetensorsTensor {
    char *name;
    char dtype[8];      /* "F32", "BF16", ... as in the file */
    int elem_size;      /* bytes per element */
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    size_t begin, end;  /* byte range in the data section */
} SafetensorsTensor;

typedef struct Safetensors {
    char *path;
    const unsigned char *map;  /* whole file, read-only mapping */
    size_t size;               /* file size in bytes */
    size_t data_start;         /* 8 + header length */
    SafetensorsTensor *t;      /* n entries, in header order */
    int n;
} Safetensors;

/* Map and validate path (see above). Free with safetensors_close, which
 * also tolerates a zeroed struct. Returns 0 or -1 with e. */
int safetensors_open(Safetensors *f, const char *path, Err *e);
void safetensors_close(Safetensors *f);

/* Index of the tensor called name, or -1. */
int safetensors_find(const Safetensors *f, const char *name);

/* Convert tensor i (F32, F16 or BF16) to float32 into dst (numel floats,
 * overwritten). Another dtype -> -1 with "<file>: tensor <name> has dtype
 * I8 (supported: F32, F16, BF16)". */
int safetensors_read_f32(const Safetensors *f, int i, float *dst, Err *e);

/* A tensor to write: float32, row-major. */
typedef struct SafetensorsOut {
    const char *name;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    const float *data;
} SafetensorsOut;

/* Write the n tensors as F32 to path (created or truncated), with
 * {"__metadata__": {"format": "pt"}} (what transformers expects), the header
 * padded to 8 bytes, and fsync. Not atomic by itself: callers write under a
 * temporary name and rename. Returns 0 or -1 with e. */
int safetensors_write(const char *path, const SafetensorsOut *t, int n, Err *e);

#endif
