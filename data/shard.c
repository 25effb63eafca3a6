/*
 * shard.c: writing and opening token shards (format in shard.h).
 *
 * The header is packed and unpacked byte by byte, so its layout does not
 * depend on struct padding. Every write goes through the streaming writer
 * (shard_write is open + add + close), so a shard written whole and one
 * streamed are the same bytes. The token payload is read in place through the
 * mapping, which is why this file refuses to build on a big-endian host
 * rather than byte-swapping on every read. Validation happens once, at open:
 * after shard_open succeeds every token is known to be < vocab, so the loader
 * and the model can index embeddings without checks.
 */
#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shard.c maps little-endian token files in place and needs a little-endian host"
#endif

/* 2-byte tokens cover every id below 2^16 (GPT-2's 50257, Llama 1/2's 32000);
 * larger vocabularies (Llama 3's 128256) need 4. */
#define SHARD_U16_VOCAB 65536

/* Tokens per vectorised block of the scan at open: small enough for L1/L2. */
#define SHARD_CHUNK 8192

// ----------------------------------------------------------------------------
// little-endian header packing

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int token_bytes_for(int vocab) { return vocab <= SHARD_U16_VOCAB ? 2 : 4; }

// ----------------------------------------------------------------------------
// writing

/* write() all of buf, retrying on short writes and EINTR. */
static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void put_header(unsigned char *hdr, int tb, int vocab, uint64_t n, uint64_t tokenizer_id, int eot,
                       uint32_t n_docs) {
    memset(hdr, 0, SHARD_HEADER_BYTES);
    put_u32(hdr + 0, SHARD_MAGIC);
    put_u32(hdr + 4, SHARD_VERSION);
    put_u32(hdr + 8, (uint32_t)tb);
    put_u32(hdr + 12, (uint32_t)vocab);
    put_u64(hdr + 16, n);
    put_u64(hdr + 24, tokenizer_id);
    put_u32(hdr + 32, (uint32_t)eot);
    put_u32(hdr + 36, n_docs);
}

/* The checks shared by shard_write and shard_writer_open. */
static int check_args(const char *path, int vocab, int eot, Err *e) {
    if (strlen(path) >= SHARD_PATH_MAX)
        return err_set(e, "%.200s...: path longer than %d bytes", path, SHARD_PATH_MAX - 1);
    if (vocab < 1) return err_set(e, "%s: vocabulary size %d must be at least 1", path, vocab);
    if (eot < -1 || eot >= vocab)
        return err_set(e, "%s: end-of-text id %d is outside the vocabulary of %d", path, eot, vocab);
    return 0;
}

int shard_writer_open(ShardWriter *w, const char *path, int vocab, int eot, uint64_t tokenizer_id, Err *e) {
    memset(w, 0, sizeof *w);
    w->fd = -1;
    if (check_args(path, vocab, eot, e)) return -1;
    size_t plen = strlen(path);
    memcpy(w->path, path, plen + 1);
    memcpy(w->tmp, path, plen);
    memcpy(w->tmp + plen, ".tmp", 5);
    w->vocab = vocab;
    w->eot = eot;
    w->token_bytes = token_bytes_for(vocab);
    w->tokenizer_id = tokenizer_id;
    unsigned char hdr[SHARD_HEADER_BYTES];
    put_header(hdr, w->token_bytes, vocab, 0, tokenizer_id, eot, 0);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        err_set(e, "%s: cannot create: %s", w->tmp, strerror(errno));
        memset(w, 0, sizeof *w);
        return -1;
    }
    w->live = 1;
    if (write_all(w->fd, hdr, sizeof hdr) != 0) {
        int saved = errno;
        shard_writer_abort(w);
        return err_set(e, "%s: write failed: %s", path, strerror(saved));
    }
    w->buf = xmalloc(SHARD_WRITER_BUF);
    return 0;
}

static int writer_flush(ShardWriter *w, Err *e) {
    if (w->nbuf && write_all(w->fd, w->buf, w->nbuf) != 0)
        return err_set(e, "%s: write failed: %s", w->path, strerror(errno));
    w->nbuf = 0;
    return 0;
}

int shard_writer_add(ShardWriter *w, const int32_t *tokens, size_t n, Err *e) {
    LC_ASSERT(w->live);
    const uint32_t vocab = (uint32_t)w->vocab;
    const size_t tb = (size_t)w->token_bytes;
    for (size_t i = 0; i < n;) {
        if (w->nbuf + tb > SHARD_WRITER_BUF && writer_flush(w, e)) return -1;
        size_t m = (SHARD_WRITER_BUF - w->nbuf) / tb;
        if (m > n - i) m = n - i;
        uint32_t mx = 0;
        for (size_t j = 0; j < m; j++) mx = (uint32_t)tokens[i + j] > mx ? (uint32_t)tokens[i + j] : mx;
        if (mx >= vocab)
            for (size_t j = 0; j < m; j++)
                if ((uint32_t)tokens[i + j] >= vocab)
                    return err_set(e, "%s: token %d at index %llu is outside the vocabulary of %d", w->path,
                                   tokens[i + j], (unsigned long long)(w->n_tokens + j), w->vocab);
        if (tb == 4) {
            /* int32 little-endian is the in-memory layout */
            memcpy(w->buf + w->nbuf, tokens + i, m * 4);
        } else {
            uint16_t *p = (uint16_t *)(void *)(w->buf + w->nbuf);
            for (size_t j = 0; j < m; j++) p[j] = (uint16_t)tokens[i + j];
        }
        w->nbuf += m * tb;
        w->n_tokens += m;
        i += m;
    }
    return 0;
}

int shard_writer_finish(ShardWriter *w, Err *e) {
    LC_ASSERT(w->live);
    if (writer_flush(w, e)) {
        shard_writer_abort(w);
        return -1;
    }
    unsigned char hdr[SHARD_HEADER_BYTES];
    put_header(hdr, w->token_bytes, w->vocab, w->n_tokens, w->tokenizer_id, w->eot, w->n_docs);
    int rc = 0;
    ssize_t k;
    do k = pwrite(w->fd, hdr, sizeof hdr, 0);
    while (k < 0 && errno == EINTR);
    if (k != (ssize_t)sizeof hdr) rc = -1;
    /* the data must be on disk before a rename publishes it */
    if (rc == 0) rc = fsync(w->fd);
    int saved = errno;
    if (close(w->fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    w->fd = -1;
    w->live = 0;
    free(w->buf);
    w->buf = NULL;
    if (rc != 0) {
        unlink(w->tmp);
        return err_set(e, "%s: write failed: %s", w->path, strerror(saved ? saved : EIO));
    }
    return 0;
}

int shard_writer_close(ShardWriter *w, Err *e) {
    if (shard_writer_finish(w, e)) return -1;
    if (rename(w->tmp, w->path) != 0) {
        int saved = errno;
        unlink(w->tmp);
        return err_set(e, "%s: write failed: %s", w->path, strerror(saved));
    }
    return 0;
}

void shard_writer_abort(ShardWriter *w) {
    if (w->live) {
        close(w->fd);
        unlink(w->tmp);
    }
    free(w->buf);
    w->buf = NULL;
    w->live = 0;
    w->fd = -1;
}

int shard_write(const char *path, const int32_t *tokens, uint64_t n, int vocab, int eot,
                uint64_t tokenizer_id, uint32_t n_docs, Err *e) {
    if (check_args(path, vocab, eot, e)) return -1;
    if (n > 0 && !tokens)
        return err_set(e, "%s: no tokens given for %llu tokens", path, (unsigned long long)n);
    /* a bad token is refused before any file is made */
    for (uint64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return err_set(e, "%s: token %d at index %llu is outside the vocabulary of %d", path,
                           tokens[i], (unsigned long long)i, vocab);
    ShardWriter w;
    if (shard_writer_open(&w, path, vocab, eot, tokenizer_id, e)) return -1;
    w.n_docs = n_docs;
    if (shard_writer_add(&w, tokens, (size_t)n, e)) {
        shard_writer_abort(&w);
        return -1;
    }
    return shard_writer_close(&w, e);
}

// ----------------------------------------------------------------------------
// opening

/* Largest of the m tokens at p: plain reductions that compilers vectorise. */
static uint32_t max_u16(const uint16_t *p, uint64_t m) {
    uint16_t mx = 0;
    for (uint64_t j = 0; j < m; j++) mx = p[j] > mx ? p[j] : mx;
    return mx;
}

static uint32_t max_u32(const uint32_t *p, uint64_t m) {
    uint32_t mx = 0;
    for (uint64_t j = 0; j < m; j++) mx = p[j] > mx ? p[j] : mx;
    return mx;
}

/* First index in [0, n_tokens) whose token is >= vocab, or n_tokens if
 * none; int32 tokens compare as uint32, so negatives count as bad. Only a
 * block whose max fails is searched element by element. Blocks run in
 * parallel when the shard is large (page faults on a cold mapping dominate). */
static uint64_t find_bad(const Shard *s) {
    const uint64_t n = s->n_tokens, nblocks = (n + SHARD_CHUNK - 1) / SHARD_CHUNK;
    const uint32_t vocab = (uint32_t)s->vocab;
    uint64_t bad = nblocks;
#pragma omp parallel for schedule(static) reduction(min : bad) if (nblocks > 64)
    for (uint64_t b = 0; b < nblocks; b++) {
        uint64_t off = b * SHARD_CHUNK, m = n - off < SHARD_CHUNK ? n - off : SHARD_CHUNK;
        uint32_t mx = s->token_bytes == 2 ? max_u16((const uint16_t *)s->data + off, m)
                                          : max_u32((const uint32_t *)s->data + off, m);
        if (mx >= vocab && b < bad) bad = b;
    }
    if (bad == nblocks) return n;
    for (uint64_t i = bad * SHARD_CHUNK;; i++)
        if ((uint32_t)shard_token(s, i) >= vocab) return i;
}

/* Check the header and the file size; fill the scalar fields of s. */
static int check_header(Shard *s, const unsigned char *h, uint64_t size, Err *e) {
    const char *path = s->path;
    uint32_t magic = get_u32(h + 0), version = get_u32(h + 4), tb = get_u32(h + 8);
    uint32_t vocab = get_u32(h + 12);
    uint64_t n = get_u64(h + 16);
    int32_t eot = (int32_t)get_u32(h + 32);
    if (magic != SHARD_MAGIC) return err_set(e, "%s: not a llamac token shard (bad magic)", path);
    if (version != SHARD_VERSION)
        return err_set(e, "%s: unsupported version %u (this build reads version %d)", path,
                       version, SHARD_VERSION);
    if (tb != 2 && tb != 4) return err_set(e, "%s: token_bytes %u is not 2 or 4", path, tb);
    if (vocab < 1 || vocab > INT32_MAX)
        return err_set(e, "%s: vocabulary size %u is invalid", path, vocab);
    if ((int)tb != token_bytes_for((int)vocab))
        return err_set(e, "%s: token_bytes %u is inconsistent with the vocabulary of %u (expected %d)",
                       path, tb, vocab, token_bytes_for((int)vocab));
    if (eot < -1 || eot >= (int32_t)vocab)
        return err_set(e, "%s: end-of-text id %d is outside the vocabulary of %u", path, eot, vocab);
    uint64_t payload = size - SHARD_HEADER_BYTES, held = payload / tb;
    if (n > held)
        return err_set(e, "%s: truncated: header says %llu tokens, file holds %llu", path,
                       (unsigned long long)n, (unsigned long long)held);
    if (payload != n * tb)
        return err_set(e, "%s: size mismatch: header says %llu tokens, file holds %llu bytes of tokens",
                       path, (unsigned long long)n, (unsigned long long)payload);
    s->vocab = (int)vocab;
    s->token_bytes = (int)tb;
    s->eot = eot;
    s->n_tokens = n;
    s->tokenizer_id = get_u64(h + 24);
    s->n_docs = get_u32(h + 36);
    return 0;
}

int shard_open(Shard *s, const char *path, Err *e) {
    memset(s, 0, sizeof *s);
    size_t plen = strlen(path);
    if (plen >= SHARD_PATH_MAX)
        return err_set(e, "%.200s...: path longer than %d bytes", path, SHARD_PATH_MAX - 1);
    memcpy(s->path, path, plen + 1); /* not snprintf: GCC's -Wformat-truncation misfires here under SAN=1 */

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(e, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err_set(e, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(e, "%s: not a regular file", path);
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size == 0) {
        err_set(e, "%s: empty file", path);
        goto fail;
    }
    if (size < SHARD_HEADER_BYTES) {
        err_set(e, "%s: truncated header (%llu bytes, a header is %d)", path,
                (unsigned long long)size, SHARD_HEADER_BYTES);
        goto fail;
    }
    if (size > SIZE_MAX) {
        err_set(e, "%s: too large to map on this host", path);
        goto fail;
    }
    void *base = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
        err_set(e, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    s->map_base = base;
    s->map_len = (size_t)size;
    if (check_header(s, base, size, e) != 0) goto fail;
    s->data = s->n_tokens ? (const unsigned char *)base + SHARD_HEADER_BYTES : NULL;

    /* Every token must index the embedding. uint16 tokens with a full 2^16
     * vocabulary are valid by construction. */
    uint64_t bad = s->n_tokens;
    if ((s->token_bytes == 2 && s->vocab < SHARD_U16_VOCAB) || s->token_bytes == 4) bad = find_bad(s);
    if (bad < s->n_tokens) {
        err_set(e, "%s: token %d at index %llu is outside the vocabulary of %d", path,
                shard_token(s, bad), (unsigned long long)bad, s->vocab);
        goto fail;
    }
    return 0;

fail:
    if (fd >= 0) close(fd);
    shard_close(s);
    return -1;
}

void shard_close(Shard *s) {
    if (s->map_base) munmap(s->map_base, s->map_len);
    memset(s, 0, sizeof *s);
}

void shard_read(const Shard *s, uint64_t i, uint64_t n, int32_t *out) {
    LC_DASSERT(i <= s->n_tokens && n <= s->n_tokens - i);
    if (n == 0) return; /* an empty shard has data == NULL: no pointer arithmetic on it (UBSan) */
    if (s->token_bytes == 2) {
        const uint16_t *p = (const uint16_t *)s->data + i;
        for (uint64_t j = 0; j < n; j++) out[j] = p[j];
    } else {
        memcpy(out, (const int32_t *)s->data + i, n * sizeof(int32_t));
    }
}
