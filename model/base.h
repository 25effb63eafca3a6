/*
 * base.h: the lowest layer of llamac, libc only. Checks, checked allocation,
 * the user-error type, a seeded RNG and a wall clock.
 *
 * Three kinds of failure, three mechanisms (STYLE.md):
 *   bugs           -> LC_ASSERT (always on) / LC_DASSERT (DEBUG=1 only)
 *   resource fail  -> xmalloc & friends abort with size and file:line
 *   user input     -> functions return int (0 ok, -1 error) and fill an Err
 *                     with "<file or flag>: <what is wrong>"; main prints it.
 */
#ifndef LLAMAC_MODEL_BASE_H
#define LLAMAC_MODEL_BASE_H

#include <stddef.h>
#include <stdint.h>

#define LC_ASSERT(c) \
    do { if (!(c)) lc_fatal_at(__FILE__, __LINE__, "assert failed: %s", #c); } while (0)
#ifdef LC_DEBUG
#define LC_DASSERT(c) LC_ASSERT(c)
#else
#define LC_DASSERT(c) ((void)0)
#endif
#define LC_FATAL(...) lc_fatal_at(__FILE__, __LINE__, __VA_ARGS__)

void lc_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

#define xmalloc(n) lc_xmalloc((n), __FILE__, __LINE__)
#define xcalloc(n, s) lc_xcalloc((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) lc_xrealloc((p), (n), __FILE__, __LINE__)
void *lc_xmalloc(size_t n, const char *file, int line);
void *lc_xcalloc(size_t n, size_t size, const char *file, int line);
void *lc_xrealloc(void *p, size_t n, const char *file, int line);
/* 64-byte aligned, zeroed; free with free(). */
void *lc_xalloc_aligned(size_t n, const char *file, int line);
#define xalloc_aligned(n) lc_xalloc_aligned((n), __FILE__, __LINE__)

/* A user-facing error: one line, "<file or flag>: <what is wrong>". */
typedef struct Err {
    char msg[256];
} Err;
/* Fill e (if not NULL) and return -1, so callers can `return err_set(...)`.
 * The message comes out as one printable line whatever the arguments hold:
 * control bytes and invalid UTF-8 are escaped (\n, \xHH), and a message too
 * long for msg is cut with "...". */
int err_set(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Quoting file content or user input in a message: writes into buf (cap
 * bytes, at least 8; ERR_QUOTE_CAP is the usual size) the n bytes at s (NULs
 * included) as one printable line: valid UTF-8 as it is, a backslash as \\,
 * \n \r \t, any other control byte or byte of invalid UTF-8 as \xHH; cut with
 * "..." where it would not fit. Returns buf, for use as a "%s" argument. */
#define ERR_QUOTE_CAP 64
const char *err_quote(char *buf, size_t cap, const void *s, size_t n);

/* Length (1-4) of the well-formed UTF-8 character at s (n bytes available),
 * or 0 if the bytes there are not one (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* ---- RNG: xoshiro256** seeded by splitmix64; the whole state is 32 bytes,
 * so a checkpoint can store it and a resumed run continues the stream. */
typedef struct Rng {
    uint64_t s[4];
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
float rng_uniform(Rng *r);          /* [0, 1) with 24 random bits */
float rng_normal(Rng *r);           /* standard normal, Box-Muller */

/* ---- Hashing: the helpers the tokenizers and the loader share. Every value
 * below is part of a stored identity somewhere (tokenizer ids in shards and
 * checkpoints, shard order), so none of them may ever change.
 *
 * FNV-1a 64 (Fowler, Noll, Vo): start from HASH_FNV_OFFSET (or a running
 * hash) and fold in n bytes at p; returns the new hash. */
#define HASH_FNV_OFFSET 0xcbf29ce484222325ull
#define HASH_FNV_PRIME 0x100000001b3ull
/* A body in the header, against the one-liner rule, on purpose: the BPE
 * encoder hashes every pre-token with it and there is no LTO to inline a
 * call from base.c. */
static inline uint64_t hash_fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *s = (const uint8_t *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * HASH_FNV_PRIME;
    return h;
}
/* hash_fnv1a over v's 4 bytes, little-endian on every host. */
uint64_t hash_fnv1a_u32(uint64_t h, uint32_t v);

/* splitmix64's finalizer (Steele, Lea, Flood 2014): a bijection of 64-bit
 * words that spreads nearby keys over a table. In the header for the same
 * reason as hash_fnv1a: the merge loop probes with it per pair. */
static inline uint64_t hash_mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Slot count for an open-addressing table of at least n slots: the smallest
 * power of two >= n, and never under 16. */
uint64_t hash_pow2_at_least(uint64_t n);

/* Monotonic wall clock in seconds. */
double time_now(void);

/* Parse helpers for flags and config values: strict (whole string, range),
 * never atoi. Return 0 or -1 with e = "<what>: <why>". */
int parse_int(const char *s, long lo, long hi, long *out, const char *what, Err *e);
int parse_float(const char *s, double lo, double hi, double *out, const char *what, Err *e);

/* Targets equal to this are ignored by the loss (prompt tokens, padding).
 * Here, not in ops.h, because the data builders (data/) write it into the
 * rows they make and sit below the op table in the include order. */
#define LC_IGNORE (-1)

/* Peak resident set size of this process in bytes (getrusage). */
size_t peak_rss_bytes(void);

#endif
