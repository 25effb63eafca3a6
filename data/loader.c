/*
 * loader.c: batches of windows from token shards (contract in loader.h).
 *
 * Windows are numbered globally, shard after shard: window w lives in the
 * shard s with first[s] <= w < first[s + 1], at token offset
 * (w - first[s]) * T. A shard of n tokens holds (n - 1) / T windows.
 * An epoch's order is the identity (sequential) or a Fisher-Yates
 * permutation from an RNG seeded by (seed, epoch) alone, so any rank can
 * rebuild any epoch's order from the two numbers of the cursor, and every
 * rank builds the same one without talking to the others.
 */
#include "loader.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Windows held by a shard of n tokens: offsets k*T with k*T + T + 1 <= n. */
static uint64_t shard_windows(uint64_t n, int T) { return n ? (n - 1) / (uint64_t)T : 0; }

/* Uniform integer in [0, n), n >= 1, without modulo bias: reject the top
 * 2^64 mod n values (they would make small results more likely). */
static uint64_t rng_below(Rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n; /* = 2^64 mod n */
    for (;;) {
        uint64_t x = rng_u64(r);
        if (x >= threshold) return x % n;
    }
}

void loader_permute(uint64_t *o, uint64_t n, uint64_t seed, uint64_t epoch) {
    Rng r;
    /* hash_mix64 spreads (seed, epoch) so neighbouring epochs get unrelated streams */
    rng_seed(&r, hash_mix64(seed) ^ hash_mix64(epoch + 0x9e3779b97f4a7c15ULL));
    for (uint64_t i = 0; i < n; i++) o[i] = i;
    for (uint64_t i = n > 0 ? n - 1 : 0; i > 0; i--) {
        uint64_t j = rng_below(&r, i + 1);
        uint64_t t = o[i];
        o[i] = o[j];
        o[j] = t;
    }
}

/* order = a permutation of [0, n_windows) for L->epoch. */
static void build_order(Loader *L) {
    loader_permute(L->order, L->n_windows, L->seed, L->epoch);
    L->order_epoch = L->epoch;
    L->order_valid = 1;
}

int loader_init(Loader *L, const Shard *const *shards, int nshards, int B, int T, int rank,
                int world, int shuffle, int doc_mask, uint64_t seed, Err *e) {
    memset(L, 0, sizeof *L);
    if (B < 1 || T < 1) return err_set(e, "loader: batch %d x %d must be at least 1 x 1", B, T);
    if (world < 1 || rank < 0 || rank >= world)
        return err_set(e, "loader: rank %d is outside [0, %d)", rank, world);
    if (nshards < 1 || !shards) return err_set(e, "loader: no token shards given");
    const Shard *s0 = shards[0];
    for (int i = 0; i < nshards; i++) {
        const Shard *s = shards[i];
        if (!s || !s->map_base) return err_set(e, "loader: shard %d is not open", i);
        if (s->vocab != s0->vocab || s->tokenizer_id != s0->tokenizer_id || s->eot != s0->eot)
            return err_set(e, "%s: tokenizer (vocab %d, id %" PRIu64 ", eot %d) differs from "
                           "%.100s's (vocab %d, id %" PRIu64 ", eot %d)", s->path, s->vocab,
                           s->tokenizer_id, s->eot, s0->path, s0->vocab, s0->tokenizer_id, s0->eot);
    }

    uint64_t *first = xmalloc(((size_t)nshards + 1) * sizeof *first);
    uint64_t tokens = 0;
    first[0] = 0;
    for (int i = 0; i < nshards; i++) {
        first[i + 1] = first[i] + shard_windows(shards[i]->n_tokens, T);
        tokens += shards[i]->n_tokens;
    }
    uint64_t W = first[nshards], rows = (uint64_t)B * (uint64_t)world;
    if (W < rows) {
        free(first);
        if (nshards == 1)
            return err_set(e, "%s: %" PRIu64 " tokens is shorter than one batch of %" PRIu64
                           " x (%d+1) tokens", s0->path, tokens, rows, T);
        return err_set(e, "%s: %" PRIu64 " tokens in %d shards is shorter than one batch of %"
                       PRIu64 " x (%d+1) tokens (%" PRIu64 " windows, a window never spans two "
                       "shards)", s0->path, tokens, nshards, rows, T, W);
    }
    if (W > SIZE_MAX / sizeof(uint64_t)) {
        free(first);
        return err_set(e, "%s: %" PRIu64 " windows are too many to shuffle on this host", s0->path, W);
    }

    L->B = B;
    L->T = T;
    L->rank = rank;
    L->world = world;
    L->shuffle = shuffle != 0;
    L->doc_mask = doc_mask != 0;
    L->seed = seed;
    L->shards = xmalloc((size_t)nshards * sizeof *L->shards);
    memcpy(L->shards, shards, (size_t)nshards * sizeof *L->shards);
    L->nshards = nshards;
    L->eot = s0->eot;
    L->n_windows = W;
    L->first = first;
    if (L->shuffle) L->order = xmalloc((size_t)W * sizeof *L->order);
    return 0;
}

/* The shard holding window w: binary search for the last first[s] <= w. */
static int find_shard(const Loader *L, uint64_t w) {
    int lo = 0, hi = L->nshards - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (L->first[mid] <= w) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

uint64_t loader_next(Loader *L, int32_t *tokens, int32_t *targets, int32_t *pos) {
    return loader_next_rows(L, tokens, targets, pos, NULL);
}

uint64_t loader_next_rows(Loader *L, int32_t *tokens, int32_t *targets, int32_t *pos, uint64_t *wins) {
    int B = L->B, T = L->T;
    uint64_t rows = (uint64_t)B * (uint64_t)L->world;
    if (L->pos + rows > L->n_windows) { /* the rest of this epoch is short of a batch */
        L->epoch++;
        L->pos = 0;
    }
    if (L->shuffle && (!L->order_valid || L->order_epoch != L->epoch)) build_order(L);

    uint64_t base = L->pos + (uint64_t)L->rank * B;
    for (int b = 0; b < B; b++) {
        uint64_t w = L->shuffle ? L->order[base + b] : base + b;
        if (wins) wins[b] = w;
        loader_window(L, w, tokens + (size_t)b * T, targets + (size_t)b * T, pos ? pos + (size_t)b * T : NULL);
    }
    uint64_t epoch = L->epoch;
    L->pos += rows;
    return epoch;
}

void loader_window(const Loader *L, uint64_t w, int32_t *tok, int32_t *tgt, int32_t *pos) {
    int T = L->T;
    LC_ASSERT(w < L->n_windows);
    int si = find_shard(L, w);
    const Shard *s = L->shards[si];
    uint64_t off = (w - L->first[si]) * (uint64_t)T;
    shard_read(s, off, (uint64_t)T, tok);
    memcpy(tgt, tok + 1, ((size_t)T - 1) * sizeof *tgt);
    tgt[T - 1] = shard_token(s, off + T);
    if (pos) {
        int32_t next = 0;
        int eot = L->doc_mask ? L->eot : -1; /* -1 never matches: tokens are >= 0 */
        for (int t = 0; t < T; t++) {
            pos[t] = next++;
            if (tok[t] == eot) next = 0;
        }
    }
}

int loader_seek(Loader *L, uint64_t epoch, uint64_t pos, Err *e) {
    uint64_t rows = (uint64_t)L->B * (uint64_t)L->world;
    if (pos % rows != 0 || pos > L->n_windows)
        return err_set(e, "loader: cursor position %" PRIu64 " is not a multiple of %" PRIu64
                       " within the %" PRIu64 " windows of an epoch", pos, rows, L->n_windows);
    L->epoch = epoch;
    L->pos = pos;
    return 0;
}

uint64_t loader_windows(const Loader *L) { return L->n_windows; }

void loader_free(Loader *L) {
    free(L->shards);
    free(L->first);
    free(L->order);
    memset(L, 0, sizeof *L);
}
