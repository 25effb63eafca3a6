/*
 * merges.c: the pair map and the merge loop of merges.h.
 *
 * The loop has two forms with one result. Short chunks (nearly every word)
 * scan the pairs for the lowest rank at each step: O(n^2), but n is small
 * and the scan is branch-light. Longer ones keep the symbols as a linked
 * list and a min-heap of (rank << 32 | position) candidates, so the lowest
 * rank pops first and the leftmost on ties (positions never move, so their
 * order is the text's): O(n log n). A popped candidate is checked lazily:
 * it counts only if the pair now at that position still has that rank.
 */
#include "merges.h"
#include "minheap.h"

#include "../model/base.h"

#include <stdlib.h>
#include <string.h>

#define SCAN_MAX 64    /* chunks up to this many ids merge by scanning */
#define STACK_MAX 1024 /* up to this many, the heap form's arrays live on the stack (32 KiB) */
#define NO_RANK UINT32_MAX

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; /* never 0 = empty */
}

// ---------------------------------------------------------------------------
// the map

static void alloc_slots(MergeMap *m, uint64_t n) {
    uint64_t size = 16;
    while (size < 2 * n) size <<= 1;
    m->slot = xcalloc(size, sizeof *m->slot);
    m->mask = size - 1;
    m->n = 0;
}

void merges_init(MergeMap *m, uint64_t n) { alloc_slots(m, n); }

void merges_free(MergeMap *m) {
    if (!m) return;
    free(m->slot);
    memset(m, 0, sizeof *m);
}

static inline uint64_t get(const MergeMap *m, uint64_t key) {
    for (uint64_t h = hash_mix64(key) & m->mask;; h = (h + 1) & m->mask) {
        const MergeSlot *s = &m->slot[h];
        if (s->key == key) return s->val;
        if (s->key == 0) return MERGES_NONE;
    }
}

uint64_t merges_get(const MergeMap *m, int32_t a, int32_t b) { return get(m, pair_key(a, b)); }

static void grow(MergeMap *m) {
    MergeSlot *old = m->slot;
    uint64_t omask = m->mask, n = m->n;
    alloc_slots(m, m->mask + 1);
    for (uint64_t i = 0; i <= omask; i++) {
        if (!old[i].key) continue;
        uint64_t h = hash_mix64(old[i].key) & m->mask;
        while (m->slot[h].key) h = (h + 1) & m->mask;
        m->slot[h] = old[i];
    }
    m->n = n;
    free(old);
}

static inline MergeSlot *find(MergeMap *m, uint64_t key) {
    uint64_t h = hash_mix64(key) & m->mask;
    while (m->slot[h].key && m->slot[h].key != key) h = (h + 1) & m->mask;
    return &m->slot[h];
}

/* A new key that would make the table more than half full grows it first
 * (so a tiktoken file's pairs land in the slots they always did: gguf.c's
 * export reads equal-rank pairs in slot order). */
uint64_t merges_put(MergeMap *m, int32_t a, int32_t b, uint64_t v) {
    LC_DASSERT(v != MERGES_NONE);
    uint64_t key = pair_key(a, b);
    MergeSlot *s = find(m, key);
    if (s->key) {
        uint64_t old = s->val;
        s->val = v;
        return old;
    }
    if ((m->n + 1) * 2 > m->mask) {
        grow(m);
        s = find(m, key);
    }
    s->key = key;
    s->val = v;
    m->n++;
    return MERGES_NONE;
}

// ---------------------------------------------------------------------------
// the merge loop

static inline uint32_t rank_of(uint64_t v) { return (uint32_t)(v >> 32); }

/* Short chunks: pv[i] is the value of pair (i, i + 1); merge the first
 * lowest-ranked one and close the gap. */
static int merge_scan(const MergeMap *m, int32_t *id, int n) {
    uint64_t pv[SCAN_MAX];
    for (int i = 0; i + 1 < n; i++) pv[i] = merges_get(m, id[i], id[i + 1]);
    while (n > 1) {
        int best = 0;
        for (int i = 1; i + 1 < n; i++)
            if (rank_of(pv[i]) < rank_of(pv[best])) best = i;
        if (rank_of(pv[best]) == NO_RANK) break;
        id[best] = (int32_t)(uint32_t)pv[best];
        memmove(id + best + 1, id + best + 2, (size_t)(n - best - 2) * sizeof *id);
        memmove(pv + best + 1, pv + best + 2, (size_t)(n - best - 3 > 0 ? n - best - 3 : 0) * sizeof *pv);
        n--;
        if (best > 0) pv[best - 1] = merges_get(m, id[best - 1], id[best]);
        if (best + 1 < n) pv[best] = merges_get(m, id[best], id[best + 1]);
    }
    return n;
}

/* push the pair starting at position i (value v) if it merges */
static inline void push(uint64_t *heap, size_t *nh, uint64_t v, int32_t i) {
    if (rank_of(v) != NO_RANK) minheap_push(heap, nh, (uint64_t)rank_of(v) << 32 | (uint32_t)i);
}

/* Longer chunks: linked symbols (id -1 once merged into its left) and a heap
 * of (rank, position); nxt, prv hold n entries, heap 3n (n - 1 at the
 * start, + 2 per merge, fewer than n merges). */
static int merge_heap(const MergeMap *m, int32_t *id, int n, int32_t *nxt, int32_t *prv, uint64_t *heap) {
    size_t nh = 0;
    for (int i = 0; i < n; i++) nxt[i] = i + 1 < n ? i + 1 : -1, prv[i] = i - 1;
    for (int i = 0; i + 1 < n; i++) push(heap, &nh, merges_get(m, id[i], id[i + 1]), i);
    while (nh) {
        uint64_t top = minheap_pop(heap, &nh);
        int32_t pos = (int32_t)(uint32_t)top, q = nxt[pos];
        if (id[pos] < 0 || q < 0) continue;
        uint64_t v = merges_get(m, id[pos], id[q]);
        if (rank_of(v) != (uint32_t)(top >> 32)) continue; /* stale */
        id[pos] = (int32_t)(uint32_t)v;
        id[q] = -1;
        nxt[pos] = nxt[q];
        if (nxt[q] >= 0) prv[nxt[q]] = pos;
        if (prv[pos] >= 0) push(heap, &nh, merges_get(m, id[prv[pos]], id[pos]), prv[pos]);
        if (nxt[pos] >= 0) push(heap, &nh, merges_get(m, id[pos], id[nxt[pos]]), pos);
    }
    int k = 0;
    for (int i = 0; i >= 0; i = nxt[i]) id[k++] = id[i];
    return k;
}

int merges_apply(const MergeMap *m, int32_t *id, int n) {
    if (n < 2) return n;
    if (n <= SCAN_MAX) return merge_scan(m, id, n);
    if (n <= STACK_MAX) {
        int32_t nxt[STACK_MAX], prv[STACK_MAX];
        uint64_t heap[3 * STACK_MAX];
        return merge_heap(m, id, n, nxt, prv, heap);
    }
    int32_t *nxt = xmalloc((size_t)n * sizeof *nxt), *prv = xmalloc((size_t)n * sizeof *prv);
    uint64_t *heap = xmalloc(3 * (size_t)n * sizeof *heap);
    int k = merge_heap(m, id, n, nxt, prv, heap);
    free(nxt);
    free(prv);
    free(heap);
    return k;
}
