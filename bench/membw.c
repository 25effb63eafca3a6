/*
 * membw.c: this machine's memory read bandwidth, for make bench-sample
 * (scripts/bench_sample.py compiles and runs it). One decode step of a
 * single sequence reads every weight once, so tokens/s x bytes of weights
 * per step over this figure is the fraction of the bandwidth a decoder
 * reaches (the roofline of batch-1 decoding).
 *
 * Sums an array of floats (default 1 GiB, far past every cache) with the
 * OpenMP threads OMP_NUM_THREADS asks for, each thread its own contiguous
 * share (schedule static, the same share it first touched, so the pages
 * are local); best of --reps timed passes after one untimed pass. GB/s are
 * 10^9 bytes read per second. `omp simd reduction` lets the compiler
 * vectorise the sum without -ffast-math.
 *
 * Build: cc -O2 -march=native -fopenmp bench/membw.c -o membw
 * Run:   OMP_NUM_THREADS=2 ./membw [--gib 1] [--reps 5]
 */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* value of --name in argv as a positive number, or dflt; exits on a bad one */
static double flag(int argc, char **argv, const char *name, double dflt) {
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) != 0) continue;
        char *end;
        errno = 0;
        double v = strtod(argv[i + 1], &end);
        if (errno || *end || !(v > 0)) {
            fprintf(stderr, "membw: error: %s wants a positive number, got '%s'\n", name, argv[i + 1]);
            exit(1);
        }
        return v;
    }
    return dflt;
}

int main(int argc, char **argv) {
    double gib = flag(argc, argv, "--gib", 1.0);
    int reps = (int)flag(argc, argv, "--reps", 5);
    size_t n = (size_t)(gib * (double)(1u << 30)) / sizeof(float);
    n -= n % 16; /* whole 64-byte lines */
    float *a = aligned_alloc(64, n * sizeof(float));
    if (!a) {
        fprintf(stderr, "membw: error: cannot allocate %.2f GiB\n", gib);
        return 1;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023) * (1.0f / 1024.0f);

    double best = 1e30, sum = 0;
    for (int r = 0; r <= reps; r++) { /* pass 0 is the untimed warm-up */
        float s = 0;
        double t0 = now();
#pragma omp parallel for simd schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += a[i];
        double t = now() - t0;
        if (r > 0 && t < best) best = t;
        sum += s; /* keeps the loop from being dropped */
    }
    printf("membw: %d threads, %.2f GiB read, best of %d: %.1f GB/s (checksum %.3g)\n", omp_get_max_threads(),
           (double)(n * sizeof(float)) / (double)(1u << 30), reps, (double)(n * sizeof(float)) / best / 1e9, sum);
    free(a);
    return 0;
}
