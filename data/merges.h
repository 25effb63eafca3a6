/*
 * merges.h: the merge table of a byte-level BPE and the merge loop, shared
 * by llamac's own tokenizer (bpe.c) and the byte-level BPE files (bbpe.c:
 * tokenizer.json, tiktoken, GGUF gpt2), which encode a chunk the same way:
 * the adjacent pair of lowest rank merges first, leftmost on ties, until no
 * pair has a rank.
 *
 * MergeMap is an open-addressing hash (linear probing, splitmix64's
 * finalizer over the pair) from a pair of ids (a, b) to a 64-bit value; the
 * encoders store merges_val(rank, new id) in it, bpe.c's trainer the index
 * of its pair record. It stays at most half full (it doubles before a key
 * would pass that).
 */
#ifndef LLAMAC_DATA_MERGES_H
#define LLAMAC_DATA_MERGES_H

#include <stddef.h>
#include <stdint.h>

/* "no such pair": merges_get's miss; as a merges_val its rank field is
 * UINT32_MAX, above every real rank, so it also reads as "never merges" */
#define MERGES_NONE UINT64_MAX

typedef struct MergeSlot {
    uint64_t key; /* (a << 32 | b) + 1 (as uint32s), 0 = empty */
    uint64_t val;
} MergeSlot;

typedef struct MergeMap {
    MergeSlot *slot; /* (mask + 1) */
    uint64_t mask;   /* size - 1, a power of two (at least 16) */
    uint64_t n;      /* keys held, <= (mask + 1) / 2 */
} MergeMap;

/* A merge's value: its rank (the lower merges first; < UINT32_MAX) and the
 * id it makes. */
static inline uint64_t merges_val(uint32_t rank, int32_t id) { return (uint64_t)rank << 32 | (uint32_t)id; }

/* Allocate an empty map of 2n slots rounded up to a power of two (at least
 * 16). Free with merges_free. */
void merges_init(MergeMap *m, uint64_t n);

/* Release the table and zero m; a zeroed m is fine. */
void merges_free(MergeMap *m);

/* The value of (a, b), or MERGES_NONE if the pair is not in m. */
uint64_t merges_get(const MergeMap *m, int32_t a, int32_t b);

/* Set (a, b) to v (v != MERGES_NONE), inserting or overwriting, and grow
 * the table past half full. Returns the value the pair had, or MERGES_NONE
 * if it is new. */
uint64_t merges_put(MergeMap *m, int32_t a, int32_t b, uint64_t v);

/* Merge the ids id[0..n) in place by m's merges_val values: repeatedly the
 * adjacent pair of lowest rank, the leftmost of equal ranks, becomes its new
 * id, until no adjacent pair is in m. Returns the count left (<= n), in
 * id[0..count). Thread-safe (m is only read); allocates only for n > 1024. */
int merges_apply(const MergeMap *m, int32_t *id, int n);

#endif
