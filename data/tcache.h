/*
 * tcache.h: the teacher cache of `llamac teacher-cache` / `distill
 * --teacher-cache` (DESIGN.md "Distillation and pruning"): for every
 * trained position of every row of a training (and optionally a
 * validation) split, the teacher's top-K next tokens and their
 * log-probabilities at temperature tau, log softmax(z / tau), sorted by
 * probability (ties: the lower id first). The remaining mass of the
 * vocabulary is implied, 1 - sum exp(logp), and never stored.
 *
 * File: a 144-byte header (TCacheHeader: magic, version, the teacher's
 * content hash, the tokenizer id, each split's data identity and counts,
 * V, K, tau, T, the widths), then per split the records of its trained
 * positions in row order (K ids, uint16 when V <= 65536 else uint32, then K
 * log-probs, IEEE half by default or float32) and the table of row offsets
 * (nrows + 1 uint64, in records). A row is keyed by what the data loaders
 * report (the global window number of token shards, the storage index of
 * packed SFT rows: trdata.h), so any B, seed, epoch, rank count or resume
 * finds its rows. Written once to "<path>.tmp", flushed and renamed: a
 * reader never sees half a cache. Bytes per trained token: K * (id bytes +
 * log-prob bytes), 4K by default (200 at K = 50).
 */
#ifndef LLAMAC_DATA_TCACHE_H
#define LLAMAC_DATA_TCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../model/base.h"

#define TCACHE_MAGIC "LCTCACH1"
#define TCACHE_VERSION 1u

enum { TCACHE_TRAIN = 0, TCACHE_VAL = 1, TCACHE_NSPLIT = 2 };

typedef struct TCacheHeader {
    char magic[8];
    uint32_t version;
    uint32_t V, K;        /* vocabulary, entries per position (K <= V) */
    uint32_t id_bytes;    /* 2 (V <= 65536) or 4 */
    uint32_t lp_bytes;    /* 2 (IEEE half) or 4 (float32) */
    uint32_t T;           /* row length the rows were cut at */
    float tau;            /* temperature of the log-probabilities (> 0) */
    uint32_t reserved;
    uint64_t teacher_id;  /* content hash of the teacher's weights */
    uint64_t tokenizer_id;
    uint64_t data_id[TCACHE_NSPLIT]; /* identity of each split's rows (0: split absent) */
    uint64_t nrows[TCACHE_NSPLIT];
    uint64_t npos[TCACHE_NSPLIT];    /* records (trained positions) */
    uint64_t rec_off[TCACHE_NSPLIT]; /* file offsets of the records and */
    uint64_t tab_off[TCACHE_NSPLIT]; /* of the row tables */
    uint64_t size;        /* the whole file's bytes */
} TCacheHeader;

/* Bytes of one position's record. */
static inline size_t tcache_record_bytes(const TCacheHeader *h) {
    return (size_t)h->K * (h->id_bytes + h->lp_bytes);
}

/* A cache opened for reading (mapped). */
typedef struct TCache {
    TCacheHeader h;
    const uint8_t *map;
    size_t len;
    char path[4096];
} TCache;

/* Open and map path, checking the magic, version, widths and that the
 * sizes and row tables are consistent: -1 with "<path>: not a teacher
 * cache of llamac", "<path>: version N, this build reads 1", "<path>:
 * truncated or damaged". Close with tcache_close (tolerates a zeroed one). */
int tcache_open(TCache *c, const char *path, Err *e);
void tcache_close(TCache *c);

/* Rows of one micro-batch of split: for row b (B rows of T, keys[b] its
 * key), the records of its trained positions (targets tgt[b*T + t] !=
 * LC_IGNORE, in order) into ids[(b*T + t)*K + j] and logp[...] (host, =;
 * untrained positions get id 0 and log-prob 0). -1 with "<path>: row
 * <key> ... is not in the cache" or "... holds N trained positions, the
 * data M" (other data). */
int tcache_rows(const TCache *c, int split, const uint64_t *keys, int B, int T, const int32_t *tgt, int32_t *ids,
                float *logp, Err *e);

/* The top-K of one position's logits z (V floats) at temperature tau:
 * ids (K) sorted by z descending (ties: lower id first) and logp (K) =
 * z / tau - logsumexp(z / tau), summed in double. */
void tcache_topk(const float *z, int V, float tau, int K, uint32_t *ids, float *logp, uint64_t *heap);

/* Writing: open, then for each split in order (train, then val if any)
 * tcache_begin_split, per row tcache_put for each trained position then
 * tcache_end_row, and tcache_finish. */
typedef struct TCacheWriter {
    TCacheHeader h;
    FILE *f;
    int split;            /* the split being written, -1 before the first */
    uint64_t *tab;        /* row offsets of the split */
    size_t ntab, cap;
    uint64_t row_start;   /* the next row's first record */
    uint8_t *rec;         /* one record */
    uint32_t *ids;        /* (K) */
    float *lp;            /* (K) */
    uint64_t *heap;       /* (K) */
    char path[4096], tmp[4128];
} TCacheWriter;

/* Create "<path>.tmp" for a cache described by h (V, K, id_bytes,
 * lp_bytes, T, tau, teacher_id, tokenizer_id, data_id set; counts filled
 * as it is written). -1 with "<path>.tmp: cannot create". */
int tcache_writer_open(TCacheWriter *w, const char *path, const TCacheHeader *h, Err *e);
void tcache_begin_split(TCacheWriter *w, int split);
/* One trained position from its teacher logits z (V floats, host). */
int tcache_put(TCacheWriter *w, const float *z, Err *e);
void tcache_end_row(TCacheWriter *w);
/* keep: close the split, write the header, flush, fsync and rename to the
 * path (-1 with "<path>: cannot write" and nothing left behind); !keep:
 * remove the temporary file. Frees what open allocated. */
int tcache_finish(TCacheWriter *w, int keep, Err *e);

#endif
