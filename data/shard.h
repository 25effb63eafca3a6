/*
 * shard.h: token shard files, the pretraining corpus on disk.
 *
 * A shard is a 64-byte little-endian header followed by n_tokens tokens of
 * token_bytes each (uint16 when vocab <= 65536, int32 otherwise):
 *
 *   offset  type    field
 *    0      uint32  magic         "LCSH" (0x4853434C read as little-endian)
 *    4      uint32  version       SHARD_VERSION
 *    8      uint32  token_bytes   2 or 4, fixed by vocab
 *   12      uint32  vocab         every token is < vocab
 *   16      uint64  n_tokens
 *   24      uint64  tokenizer_id  identity of the tokenizer that made it
 *   32      int32   eot           end-of-text id between documents, -1 if none
 *   36      uint32  n_docs
 *   40      zeros up to 64
 *
 * Files are written atomically (path.tmp, then rename; the streaming writer
 * patches the header's counts at the end) and mapped read-only
 * on open, after a full validation so that later reads need no checks (the
 * llm.c data loader's header + magic/version, without its asserts).
 */
#ifndef LLAMAC_DATA_SHARD_H
#define LLAMAC_DATA_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"

#define SHARD_MAGIC 0x4853434Cu /* the bytes "LCSH" read as a little-endian uint32 */
#define SHARD_VERSION 1
#define SHARD_HEADER_BYTES 64
#define SHARD_PATH_MAX 512

typedef struct Shard {
    char path[SHARD_PATH_MAX];
    int vocab;             /* tokens are in [0, vocab) */
    int token_bytes;       /* 2 or 4 */
    int eot;               /* end-of-text id, -1 if the shard has none */
    uint64_t n_tokens;
    uint64_t tokenizer_id;
    uint32_t n_docs;
    const void *data;      /* (n_tokens) uint16 or int32, little-endian; NULL if n_tokens == 0 */
    /* private: the mapping */
    void *map_base;
    size_t map_len;
} Shard;

/* Write tokens[0..n) to path atomically: the data goes to "<path>.tmp",
 * is flushed to disk, then renamed over path, so path never holds a partial
 * file. token_bytes follows from vocab (2 if vocab <= 65536, else 4). Checks
 * vocab >= 1, eot in [-1, vocab) and every token in [0, vocab). Returns 0, or
 * -1 with e = "<path>: <problem>" (and no file left behind). */
int shard_write(const char *path, const int32_t *tokens, uint64_t n, int vocab, int eot,
                uint64_t tokenizer_id, uint32_t n_docs, Err *e);

/* A shard written piece by piece (tokenize encode streams documents into
 * it): tokens go through a fixed buffer to "<path>.tmp", the header's
 * n_tokens and n_docs are patched in at the end. Memory is the buffer
 * (SHARD_WRITER_BUF bytes), whatever the shard's size. The fields up to
 * n_docs are public to read; n_docs is the caller's to count. */
#define SHARD_WRITER_BUF ((size_t)1 << 20)

typedef struct ShardWriter {
    char path[SHARD_PATH_MAX], tmp[SHARD_PATH_MAX + 8];
    int vocab, eot, token_bytes;
    uint64_t tokenizer_id;
    uint64_t n_tokens;      /* tokens added so far */
    uint32_t n_docs;        /* documents: counted by the caller, written at finish */
    /* private */
    int live;               /* 1 between open and finish/abort */
    int fd;
    unsigned char *buf;     /* (SHARD_WRITER_BUF) */
    size_t nbuf;
} ShardWriter;

/* Create "<path>.tmp" with a provisional header (the same checks as
 * shard_write on path, vocab and eot). 0, or -1 with e ("<path>: ...",
 * nothing left behind, *w zeroed). */
int shard_writer_open(ShardWriter *w, const char *path, int vocab, int eot, uint64_t tokenizer_id, Err *e);

/* Append tokens[0..n), each checked to be in [0, vocab) (the message names
 * its index in the shard). 0, or -1 with e (the writer stays open: abort
 * it). */
int shard_writer_add(ShardWriter *w, const int32_t *tokens, size_t n, Err *e);

/* Flush, write the final header, fsync and close: the complete shard is
 * then "<path>.tmp" (w->tmp), for the caller to rename (shard_writer_close
 * does it). 0, or -1 with e (the .tmp file removed). */
int shard_writer_finish(ShardWriter *w, Err *e);

/* shard_writer_finish, then rename "<path>.tmp" over path. 0 or -1 with e
 * (nothing left behind). */
int shard_writer_close(ShardWriter *w, Err *e);

/* Give up: close and remove "<path>.tmp". Tolerates a zeroed, finished or
 * already-aborted writer (it then removes nothing). */
void shard_writer_abort(ShardWriter *w);

/* Open path, map it read-only and validate it: header (magic, version,
 * token_bytes against vocab, eot), size == 64 + n_tokens * token_bytes, and
 * every token < vocab (one scan at open). On success fills *s and returns 0;
 * the caller releases it with shard_close. On failure returns -1 with
 * e = "<path>: <problem>" and leaves *s zeroed (shard_close is harmless). */
int shard_open(Shard *s, const char *path, Err *e);

/* Unmap and zero *s. Tolerates a zeroed or already-closed shard. */
void shard_close(Shard *s);

/* out[0..n) = tokens [i, i + n) of s, widened to int32. i + n <= n_tokens. */
void shard_read(const Shard *s, uint64_t i, uint64_t n, int32_t *out);

/* Token i (< n_tokens) of s. */
static inline int32_t shard_token(const Shard *s, uint64_t i) {
    LC_DASSERT(i < s->n_tokens);
    return s->token_bytes == 2 ? (int32_t)((const uint16_t *)s->data)[i]
                               : ((const int32_t *)s->data)[i];
}

#endif
