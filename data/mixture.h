/*
 * mixture.h: pretraining batches drawn from several weighted sources of
 * token shards (DESIGN.md, "Pretraining data").
 *
 * The source of global row r (rows counted from the start of the run over
 * every micro-batch, every step) is a pure function of (seed, r): a uniform
 * u in [0, 1), which the cumulative weights map to a source. The uniforms
 * are stratified over blocks of MIX_BLOCK rows: in block b, row j's u lies in
 * stratum perm_b[j] of MIX_BLOCK equal strata (perm_b a permutation drawn
 * from (seed, b), loader_permute) at an offset hashed from (seed, r). So
 * every block holds each source's share to within two rows (the realised
 * proportions track the weights tightly, not only on average), the order
 * inside a block is random, and the source sequence does not depend on how
 * rows are split into micro-batches, over ranks, or across a resume.
 * Each source is its own stream of windows (data/loader.h with one row per
 * draw): its rows are taken from that stream in order, and it counts its
 * own epochs (a small source wraps more often than a big one); an epoch
 * visits every window of the source, shuffled per (source seed, epoch).
 *
 * The cursor is 1 + 2K words: the global row counter, then (epoch, pos) of
 * each source. A mixture of one source is exactly the loader (loader.h):
 * whole batches of B rows, its two-word cursor (epoch, pos), its seed, so
 * the plain `--train SHARD` runs and their checkpoints are unchanged.
 */
#ifndef LLAMAC_DATA_MIXTURE_H
#define LLAMAC_DATA_MIXTURE_H

#include <stdint.h>

#include "../model/base.h"
#include "loader.h"
#include "shard.h"

#define MIX_MAX_SOURCES 32
#define MIX_NAME_MAX 48
#define MIX_BLOCK 64
/* cursor words of a mixture of k sources */
#define MIX_CURSOR_WORDS(k) ((k) == 1 ? 2 : 1 + 2 * (k))

/* One source as the caller describes it. */
typedef struct MixSource {
    const char *name;            /* [A-Za-z0-9_.-], unique, shorter than MIX_NAME_MAX */
    double weight;               /* > 0 and finite; weights need not sum to 1 */
    const Shard *const *shards;  /* (nshards) open shards, borrowed: open until mixture_free */
    int nshards;
} MixSource;

typedef struct Mixture {
    int K, B, T;
    uint64_t seed;
    char name[MIX_MAX_SOURCES][MIX_NAME_MAX];
    double weight[MIX_MAX_SOURCES]; /* as given */
    double cum[MIX_MAX_SOURCES];    /* cumulative normalised weights; cum[K-1] = 1 */
    uint64_t tokens[MIX_MAX_SOURCES];
    Loader src[MIX_MAX_SOURCES];    /* K == 1: the loader of B rows; K > 1: one row per draw */
    uint64_t row;                   /* K > 1: global rows drawn so far */
    /* private: the strata order of block perm_block (valid when perm_valid) */
    uint64_t perm[MIX_BLOCK], perm_block;
    int perm_valid;
} Mixture;

/* Check a source name: 0, or -1 with e = "<flag>: ..." (empty, too long,
 * characters outside [A-Za-z0-9_.-]). */
int mixture_check_name(const char *name, const char *flag, Err *e);

/* Parse a weight: a finite number > 0. 0, or -1 with
 * e = "<flag> <name>: weight '<text>' ...". */
int mixture_parse_weight(const char *text, const char *flag, const char *name, double *w, Err *e);

/* Set up a mixture of k sources (1 <= k <= MIX_MAX_SOURCES) for micro-batches
 * of B rows of T tokens, seeded by seed; shuffle and doc_mask as in
 * loader_init. Errors (-1 with e, every message prefixed by flag): a bad or
 * duplicate name, a weight not > 0, shards of different tokenizers (within
 * a source or across sources: vocab, tokenizer id, end-of-text id), a
 * source holding no tokens or fewer windows than it needs (k == 1: one
 * batch of B, as the loader; k > 1: one window of T+1 tokens). The cursor
 * starts at row 0. */
int mixture_init(Mixture *M, const MixSource *s, int k, int B, int T, int shuffle, int doc_mask, uint64_t seed,
                 const char *flag, Err *e);

/* The source of global row r of a mixture with these cumulative weights
 * (k of them): a pure function of (seed, r). */
int mixture_source_of(const double *cum, int k, uint64_t seed, uint64_t r);

/* Draw the next micro-batch of B rows (loader_next's arrays and layout; pos
 * may be NULL) and advance the cursor by B rows. Every caller that draws the
 * same global sequence (each rank of a data-parallel run) gets the same
 * rows. src (may be NULL) gets each row's source index, (B). */
void mixture_next(Mixture *M, int32_t *tokens, int32_t *targets, int32_t *pos, int *src);

/* Cursor words of M: MIX_CURSOR_WORDS(K). */
int mixture_cursor_words(const Mixture *M);

/* cur[0..mixture_cursor_words) = the cursor: K == 1 (epoch, pos) of the
 * loader; K > 1 (row, epoch_0, pos_0, ..., epoch_{K-1}, pos_{K-1}). */
void mixture_tell(const Mixture *M, uint64_t *cur);

/* Move to a cursor from mixture_tell (e.g. a checkpoint's). All zeros
 * rewinds. Errors (-1 with e): a position outside a source's epoch, or
 * per-source positions that do not add up to the row counter (a cursor of
 * another mixture). */
int mixture_seek(Mixture *M, const uint64_t *cur, Err *e);

/* Rows drawn from source k since row 0 (epochs x windows + pos; K == 1: all
 * rows). */
uint64_t mixture_taken(const Mixture *M, int k);

/* Identity of the mixture for checkpoints (names, weights, windows per
 * source); 0 for one source (a plain run's checkpoints carry no data id). */
uint64_t mixture_id(const Mixture *M);

/* Release the loaders and zero *M (the shards stay open). Tolerates a
 * zeroed mixture. */
void mixture_free(Mixture *M);

#endif
