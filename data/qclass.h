/*
 * qclass.h: a fastText-style binary quality classifier (DCLM filtered its
 * pool with a fastText model): each word unigram and bigram of a document
 * is hashed into one of `buckets` rows of an embedding table (dim floats),
 * the rows are averaged into h, and P(hq) = sigmoid(w . h + b). Trained by
 * plain SGD on the logistic loss, one document at a time in input order
 * (deterministic), as fastText's supervised mode with a sigmoid output.
 *
 * Words are maximal runs of non-whitespace bytes, ASCII letters lowered;
 * a word hashes as 32-bit FNV-1a (fastText's word hash) and a bigram as
 * h1 * 116049371 + h2 (fastText's n-gram mixing), both modulo buckets.
 *
 * File: "LQCF" magic, u32 version (QCLASS_VERSION), u32 kind (1: binary
 * hq/lq), u32 buckets, u32 dim, u32 rows stored, f32 b, f32 w[dim], then
 * each non-zero embedding row as u32 index + f32[dim] (rows start at zero,
 * so only the rows of seen features are stored), little endian.
 */
#ifndef LLAMAC_DATA_QCLASS_H
#define LLAMAC_DATA_QCLASS_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"

#define QCLASS_VERSION 1
#define QCLASS_KIND_BINARY 1

typedef struct QClass {
    uint32_t buckets, dim;
    float *emb; /* (buckets, dim), owned */
    float *w;   /* (dim) */
    float b;
} QClass;

/* A model of buckets x dim with zero embeddings, w drawn uniform in
 * [-1/sqrt(dim), 1/sqrt(dim)) from seed, b = 0. Free with qclass_free. */
void qclass_init(QClass *m, uint32_t buckets, uint32_t dim, uint64_t seed);
void qclass_free(QClass *m);

/* Hashed features of text[0..n): unigrams then bigrams (in order), each in
 * [0, buckets), into f (at least n + 1 entries: a document of n bytes has
 * at most n/2 + 1 words). Returns the count. */
size_t qclass_features(const char *text, size_t n, uint32_t buckets, uint32_t *f);

/* P(hq) of features f[0..nf); h is scratch of dim floats. No features:
 * sigmoid(b). */
double qclass_prob(const QClass *m, const uint32_t *f, size_t nf, float *h);

/* One SGD step on (f, label in {0, 1}) with learning rate lr; h is scratch
 * of dim floats. Returns the example's loss before the step (-log P of the
 * label). */
double qclass_sgd(QClass *m, const uint32_t *f, size_t nf, int label, float lr, float *h);

/* Save m to path. Errors: "<path>: cannot create", "<path>: write error". */
int qclass_save(const QClass *m, const char *path, Err *e);

/* Load a model saved by qclass_save into m (free with qclass_free).
 * Errors, one line each: cannot open; "not a llamac quality classifier (bad
 * magic)"; "quality classifier file version N (this llamac reads 1)";
 * "not a binary hq/lq classifier (kind N)"; sizes out of range; truncated;
 * trailing bytes; a row index out of range. */
int qclass_load(QClass *m, const char *path, Err *e);

#endif
