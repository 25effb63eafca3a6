/*
 * chunkcache.h: the per-thread cache chunk -> ids that the byte-level BPE
 * encoders (bpe.c, bbpe.c) keep, since words repeat: direct-mapped, 2^15
 * slots of 128 bytes (4 MiB per encoding thread). Chunks up to
 * CHUNK_CACHE_KEY bytes (nearly every word) are cached; a slot is
 * overwritten on a collision. A chunk of n bytes has at most n ids, so the
 * ids always fit. Each encoder owns its slots (and clears them when another
 * tokenizer starts using the thread); this header only reads and writes one.
 */
#ifndef LLAMAC_DATA_CHUNKCACHE_H
#define LLAMAC_DATA_CHUNKCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CHUNK_CACHE_KEY 24
#define CHUNK_CACHE_SLOTS (1u << 15)

typedef struct CacheSlot {
    uint32_t tag;  /* high bits of the chunk hash */
    uint8_t klen;  /* 0 = empty */
    uint8_t nids;
    char key[CHUNK_CACHE_KEY];
    int32_t ids[CHUNK_CACHE_KEY];
} CacheSlot;

/* The slot of a chunk whose 64-bit hash is h. */
static inline CacheSlot *chunk_slot(CacheSlot *slots, uint64_t h) {
    return &slots[h & (CHUNK_CACHE_SLOTS - 1)];
}

/* 1 if slot holds the chunk s[0..n) of hash h. */
static inline int chunk_hit(const CacheSlot *slot, uint64_t h, const uint8_t *s, size_t n) {
    return slot->klen == n && slot->tag == (uint32_t)(h >> 32) && memcmp(slot->key, s, n) == 0;
}

/* Put the chunk s[0..n) (n <= CHUNK_CACHE_KEY) and its m ids in slot. */
static inline void chunk_store(CacheSlot *slot, uint64_t h, const uint8_t *s, size_t n, const int32_t *ids,
                               size_t m) {
    slot->tag = (uint32_t)(h >> 32);
    slot->klen = (uint8_t)n;
    slot->nids = (uint8_t)m;
    memcpy(slot->key, s, n);
    memcpy(slot->ids, ids, m * sizeof *ids);
}

#endif
