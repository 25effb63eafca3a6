/*
 * loader.h: deterministic (B, T) training batches from open token shards.
 *
 * The shards are cut into windows of T+1 tokens at offsets k*T inside each
 * shard (a window never spans two shards; consecutive windows share their
 * boundary token, which is a target in one and an input in the next, as in
 * llm.c). An epoch visits windows in order (sequential) or in a permutation
 * drawn from (seed, epoch) with a Fisher-Yates shuffle. Each step consumes a
 * global batch of B*world windows; rank r takes the r-th block of B, so the
 * ranks see disjoint windows within an epoch. Windows left over at the end of
 * an epoch (fewer than one global batch) are skipped; in shuffle mode they
 * are different ones each epoch.
 *
 * The whole cursor is (epoch, pos): a checkpoint saves those two numbers and
 * a resumed run sets them (loader_seek) to continue the same stream.
 */
#ifndef LLAMAC_DATA_LOADER_H
#define LLAMAC_DATA_LOADER_H

#include <stdint.h>

#include "../model/base.h"
#include "shard.h"

typedef struct Loader {
    /* configuration (read-only after loader_init) */
    int B, T;          /* rows per rank, tokens per row */
    int rank, world;   /* data-parallel rank in [0, world) */
    int shuffle;       /* 0: windows in file order; 1: a new permutation per epoch */
    int doc_mask;      /* 1: pos restarts after every end-of-text token */
    uint64_t seed;
    /* cursor: the epoch of the next batch and the index, in that epoch's
     * window order, where its global batch starts (a multiple of B*world) */
    uint64_t epoch, pos;
    /* private */
    const Shard **shards;  /* (nshards) borrowed; must outlive the loader */
    int nshards;
    int eot;               /* shared end-of-text id, -1 if none */
    uint64_t n_windows;
    uint64_t *first;       /* (nshards + 1) index of each shard's first window */
    uint64_t *order;       /* (n_windows) shuffle mode: window order of order_epoch */
    uint64_t order_epoch;
    int order_valid;
} Loader;

/* Set up a loader over nshards open shards (borrowed: they must stay open
 * until loader_free). The shards must agree on vocab, tokenizer_id and eot.
 * B, T >= 1, rank in [0, world). Errors (-1 with e): bad settings
 * ("loader: ..."), mismatched shards ("<path>: ..."), and shards that hold
 * fewer than B*world windows ("<first path>: N tokens is shorter than one
 * batch of B x (T+1) tokens"). The cursor starts at epoch 0, pos 0. */
int loader_init(Loader *L, const Shard *const *shards, int nshards, int B, int T, int rank,
                int world, int shuffle, int doc_mask, uint64_t seed, Err *e);

/* Draw the next batch for this rank and advance the cursor by one global
 * batch. Writes (=) host arrays of B*T, row-major (B, T):
 *   tokens[b, t]  = window_b[t]
 *   targets[b, t] = window_b[t + 1]
 *   pos[b, t]     = position of tokens[b, t] inside its document: 0 at the
 *                   start of each row and on the token after every eot token
 *                   (doc_mask = 0 or no eot: 0..T-1). pos may be NULL.
 * Returns the epoch the batch belongs to. */
uint64_t loader_next(Loader *L, int32_t *tokens, int32_t *targets, int32_t *pos);

/* loader_next that also writes wins[b] (B, may be NULL) = the global
 * window number of row b (windows numbered shard after shard, in file
 * order, at offsets k*T): a key per row that depends on the shards and T
 * alone, not on B, the seed or the epoch (distill's teacher cache). */
uint64_t loader_next_rows(Loader *L, int32_t *tokens, int32_t *targets, int32_t *pos, uint64_t *wins);

/* Window w (< loader_windows(L)) into one row of T tokens, targets and
 * positions (pos may be NULL), as loader_next draws it. */
void loader_window(const Loader *L, uint64_t w, int32_t *tok, int32_t *tgt, int32_t *pos);

/* Move the cursor to (epoch, pos), e.g. from a checkpoint. pos must be a
 * multiple of B*world and at most loader_windows(L). Returns 0 or -1 with e. */
int loader_seek(Loader *L, uint64_t epoch, uint64_t pos, Err *e);

/* Number of windows per epoch (all shards, all ranks). */
uint64_t loader_windows(const Loader *L);

/* o[0..n) = the permutation of [0, n) that epoch `epoch` of a run seeded
 * with seed visits (Fisher-Yates, Knuth's Algorithm P, from an RNG seeded
 * by (seed, epoch) alone): the loader's window order, and the SFT rows'. */
void loader_permute(uint64_t *o, uint64_t n, uint64_t seed, uint64_t epoch);

/* Release what loader_init allocated and zero *L (the shards stay open).
 * Tolerates a zeroed loader. */
void loader_free(Loader *L);

#endif
