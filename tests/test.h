/*
 * test.h: the in-house test harness (Redis's testhelp.h in spirit). A test
 * is a void function registered in test_main.c's table; EXPECT records a
 * failure with file:line and a message and lets the test go on.
 */
#ifndef LLAMAC_TESTS_TEST_H
#define LLAMAC_TESTS_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

extern int test_failures; /* failures in the running test */

void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define EXPECT(cond, ...) \
    do { if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define EXPECT_NEAR(a, b, tol) \
    do { double a_ = (a), b_ = (b); \
         if (!(fabs(a_ - b_) <= (tol))) \
             test_fail(__FILE__, __LINE__, "%s = %.9g, expected %.9g (tol %g)", #a, a_, b_, (double)(tol)); \
    } while (0)

/* Path of the llamac binary next to the test binary (for CLI tests). */
extern const char *test_llamac_path;

/* Run `<llamac> <args>` (args printf-style, through /bin/sh from the
 * repository root) with stdout and stderr captured, NUL-terminated and cut
 * to size, in test_out and test_err. Returns the exit status, or 128 + the
 * signal that killed it. */
/* Write text to path (a fixture made on the fly); aborts if it cannot. */
void test_put(const char *path, const char *text);

/* A whole file, NUL-terminated (caller frees), or NULL if it cannot be read. */
char *test_slurp(const char *path);

/* A training text for a tokenizer test: words drawn at random (rng_seed(seed),
 * word w[rng_u64 % nw] each time) into text until fewer than 17 of its cap
 * bytes are left; words must be shorter than 16 bytes. Writes no NUL; returns
 * the length. */
size_t test_words(char *text, size_t cap, const char *const *w, int nw, unsigned long long seed);

#define TEST_OUT_MAX (1 << 16)
#define TEST_ERR_MAX (1 << 14)
extern char test_out[TEST_OUT_MAX], test_err[TEST_ERR_MAX];
int test_llamac(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
