/*
 * chunkcache.h: the per-thread state of the byte-level BPE encoders (bpe.c,
 * bbpe.c): PCRE2 match state for their split patterns, a scratch buffer,
 * and the cache chunk -> ids they keep, since words repeat: direct-mapped,
 * 2^15 slots of 128 bytes (4 MiB per encoding thread). Chunks up to
 * CHUNK_CACHE_KEY bytes (nearly every word) are cached; a slot is
 * overwritten on a collision. A chunk of n bytes has at most n ids, so the
 * ids always fit. The slots belong to one tokenizer at a time, named by its
 * 64-bit id (Bpe.id, Bbpe.id: hashes of all that decides the ids), and are
 * emptied when another one claims them.
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

struct pcre2_real_match_data_8;
struct pcre2_real_match_context_8;
struct pcre2_real_jit_stack_8;

typedef struct ChunkLocal {
    uint64_t owner;                        /* id of the tokenizer the slots belong to */
    struct pcre2_real_match_data_8 *md;    /* for one pcre2_match at a time */
    struct pcre2_real_match_context_8 *mc; /*   with js as its JIT stack */
    struct pcre2_real_jit_stack_8 *js;
    char *scratch;                         /* (scap) bytes for the encoder's own use */
    size_t scap;
    CacheSlot slot[CHUNK_CACHE_SLOTS];
} ChunkLocal;

/* This thread's state, made on first use (zeroed slots, owner 0) and freed
 * when the thread exits. Never NULL. */
ChunkLocal *chunkcache_local(void);

/* This thread's state with its slots claimed for the tokenizer of id owner
 * (emptied if they held another's). */
ChunkLocal *chunkcache_claim(uint64_t owner);

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
