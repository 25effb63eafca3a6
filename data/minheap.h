/*
 * minheap.h: a binary min-heap of uint64 keys in a caller's array, for the
 * BPE encoders' merge loop (merges.c), which packs (rank << 32 | pos)
 * into a key so that the lowest rank, then the leftmost position, pops first.
 * The caller sizes the array; *nh is the number of keys in it.
 */
#ifndef LLAMAC_DATA_MINHEAP_H
#define LLAMAC_DATA_MINHEAP_H

#include <stddef.h>
#include <stdint.h>

static inline void minheap_push(uint64_t *heap, size_t *nh, uint64_t v) {
    size_t i = (*nh)++;
    while (i > 0 && v < heap[(i - 1) / 2]) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = v;
}

/* The smallest key, removed (*nh > 0). */
static inline uint64_t minheap_pop(uint64_t *heap, size_t *nh) {
    uint64_t top = heap[0], x = heap[--*nh];
    size_t i = 0, n = *nh;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= x) break;
        heap[i] = heap[c];
        i = c;
    }
    if (n) heap[i] = x;
    return top;
}

#endif
