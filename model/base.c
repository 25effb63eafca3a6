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

int err_set(Err *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

// ----------------------------------------------------------------------------
// RNG

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

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
    if (*end != '\0' || errno == ERANGE)
        return err_set(e, "%s: '%s' is not an integer", what, s);
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
    if (*end != '\0' || errno == ERANGE || !isfinite(v))
        return err_set(e, "%s: '%s' is not a finite number", what, s);
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
