/*
 * base.c: checks, checked allocation, errors, RNG (xoshiro256**, Blackman &
 * Vigna), clock and strict number parsing. See base.h.
 */
#include "base.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

void lc_fatal_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void *lc_xmalloc(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) lc_fatal_at(file, line, "out of memory allocating %zu bytes", n);
    return p;
}

void *lc_xcalloc(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) lc_fatal_at(file, line, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *lc_xrealloc(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) lc_fatal_at(file, line, "out of memory reallocating %zu bytes", n);
    return q;
}

void *lc_xalloc_aligned(size_t n, const char *file, int line) {
    size_t rounded = (n + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) lc_fatal_at(file, line, "out of memory allocating %zu bytes", n);
    memset(p, 0, rounded);
    return p;
}

/* Appends the n bytes at s to out[*m..cap) escaped: valid UTF-8 other than
 * controls as it is, \n \r \t as those escapes, every other byte (NUL,
 * C0 and C1 controls, DEL, bytes of invalid UTF-8) as \xHH; with quote set, a backslash
 * as \\ too (so a quoted \x41 reads back as what the file held). Stops
 * before a piece that would not fit in cap - 4 bytes and then writes "...".
 * out stays NUL-terminated (cap >= 8). */
static void escape_into(char *out, size_t *m, size_t cap, const unsigned char *s, size_t n, int quote) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(s + i, n - i);
        if (k == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0) k = 0; /* C1 controls (CSI U+009B) */
        char piece[4];
        size_t pl;
        unsigned char c = s[i];
        if (k > 1) pl = k;
        else if (k == 1 && c >= 0x20 && c != 0x7f && !(quote && c == '\\')) piece[0] = (char)c, pl = 1;
        else if (c == '\\') piece[0] = '\\', piece[1] = '\\', pl = 2;
        else if (c == '\n' || c == '\r' || c == '\t')
            piece[0] = '\\', piece[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't', pl = 2;
        else piece[0] = '\\', piece[1] = 'x', piece[2] = hex[c >> 4], piece[3] = hex[c & 15], pl = 4;
        if (*m + pl > cap - 4) {
            memcpy(out + *m, "...", 4);
            *m += 3;
            return;
        }
        memcpy(out + *m, k > 1 ? (const char *)s + i : piece, pl);
        *m += pl;
        i += k ? k : 1;
    }
    out[*m] = '\0';
}

size_t utf8_seq_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned char c = s[0];
    size_t k = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (k == 0 || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    /* overlong 3- and 4-byte forms, UTF-16 surrogates, above U+10FFFF (RFC 3629) */
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return k;
}

const char *err_quote(char *buf, size_t cap, const void *s, size_t n) {
    size_t m = 0;
    LC_ASSERT(cap >= 8);
    buf[0] = '\0';
    escape_into(buf, &m, cap, s, n, 1);
    return buf;
}

/* The message is escaped once more as a whole (controls and invalid UTF-8
 * only, backslashes kept), so whatever a caller passed in, e->msg is one
 * printable line. */
int err_set(Err *e, const char *fmt, ...) {
    if (e) {
        char raw[sizeof e->msg];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
        size_t len = n < 0 ? 0 : (size_t)n < sizeof raw ? (size_t)n : sizeof raw - 1, m = 0;
        e->msg[0] = '\0';
        escape_into(e->msg, &m, sizeof e->msg, (const unsigned char *)raw, len, 0);
    }
    return -1;
}

// ----------------------------------------------------------------------------
// hashing

uint64_t hash_fnv1a_u32(uint64_t h, uint32_t v) {
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return hash_fnv1a(h, le, 4);
}

uint64_t hash_pow2_at_least(uint64_t n) {
    uint64_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

// ----------------------------------------------------------------------------
// RNG

/* splitmix64's generator step: a golden-ratio counter, then the finalizer */
static uint64_t splitmix64(uint64_t *x) { return hash_mix64(*x += 0x9e3779b97f4a7c15ULL); }

void rng_seed(Rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float rng_uniform(Rng *r) { return (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float rng_normal(Rng *r) {
    /* Box-Muller in double; u1 in (0, 1] so log never sees 0. */
    double u1 = ((rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

double time_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

// ----------------------------------------------------------------------------
// strict parsing

int parse_int(const char *s, long lo, long hi, long *out, const char *what, Err *e) {
    char *end;
    errno = 0;
    if (!s || !*s) return err_set(e, "%s: expected an integer, got an empty value", what);
    long v = strtol(s, &end, 10);
    char q[ERR_QUOTE_CAP];
    if (*end != '\0' || errno == ERANGE)
        return err_set(e, "%s: '%s' is not an integer", what, err_quote(q, sizeof q, s, strlen(s)));
    if (v < lo || v > hi)
        return err_set(e, "%s: %ld is out of range [%ld, %ld]", what, v, lo, hi);
    *out = v;
    return 0;
}

int parse_float(const char *s, double lo, double hi, double *out, const char *what, Err *e) {
    char *end;
    errno = 0;
    if (!s || !*s) return err_set(e, "%s: expected a number, got an empty value", what);
    double v = strtod(s, &end);
    char q[ERR_QUOTE_CAP];
    if (*end != '\0' || errno == ERANGE || !isfinite(v))
        return err_set(e, "%s: '%s' is not a finite number", what, err_quote(q, sizeof q, s, strlen(s)));
    if (v < lo || v > hi)
        return err_set(e, "%s: %g is out of range [%g, %g]", what, v, lo, hi);
    *out = v;
    return 0;
}

size_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}
