/*
 * quant_bench.c: speed of the quantised-weight kernels, for comparing
 * kernel versions on one machine (not a test: numbers depend on the load
 * of the machine; repeat runs and take the best).
 *
 *   dequant: quant_rows over a whole (rows, cols) matrix, 16 rows at a
 *            time into one buffer that stays in cache (as the training
 *            tiles and the engine's panels do), one thread, in values per
 *            second (best of reps passes);
 *   rows N=n: cpu_qmatmul_rows (the engine's linear) on a (Dout, Din)
 *            matrix for n input rows, with OMP_NUM_THREADS threads, in
 *            microseconds per call and GB/s of quantised weight read.
 *
 * The matrices are SmolLM2-135M's MLP shapes: up (1536, 576) for the
 * 32-value block types and NF4, down (576, 1536) for the K types (their
 * 256-value blocks do not divide 576).
 *
 * Build (after make): cc -O2 -fopenmp -Imodel bench/quant_bench.c build/obj/model/quant.o \
 *   build/obj/model/ops_cpu_engine.o build/obj/model/ops_cpu_qrows.o \
 *   build/obj/model/base.o -lm -o build/quant_bench
 * Run:   OMP_NUM_THREADS=2 build/quant_bench [reps]
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "ops_cpu_engine.h"
#include "quant.h"

static const uint32_t types[] = {QUANT_Q8_0, QUANT_Q4_0, QUANT_Q4_1, QUANT_Q5_0, QUANT_Q5_1,
                                 QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K, QUANT_NF4};

/* random blocks with sane half scales (the bench measures speed, not values) */
static uint8_t *rand_tensor(uint32_t t, int rows, int cols, QTensor *q) {
    size_t bytes = quant_bytes(t, rows, cols), bb = quant_block_bytes(t);
    uint8_t *d = xmalloc(bytes);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < bytes; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        d[i] = (uint8_t)s;
    }
    size_t nb = (size_t)rows * cols / quant_block(t);
    uint16_t h = quant_float_to_half(0.01f);
    for (size_t b = 0; b < nb && t != QUANT_NF4; b++) {
        uint8_t *k = d + b * bb + (t == QUANT_Q6_K ? 208 : 0);
        memcpy(k, &h, 2);
        if (t == QUANT_Q4_1 || t == QUANT_Q5_1 || t == QUANT_Q4_K || t == QUANT_Q5_K) memcpy(k + 2, &h, 2);
    }
    if (t == QUANT_NF4) {
        size_t at = (quant_row_bytes(t, cols) * (size_t)rows + 15) / 16 * 16;
        float *aux = (float *)(d + at);
        for (size_t g = 0; g < (bytes - at) / 4; g++) aux[g] = 0.1f;
    }
    *q = quant_tensor(t, rows, cols, d);
    return d;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    int N[] = {1, 2, 4, 8, 64};
    printf("%-5s %12s", "type", "dequant/s");
    for (size_t i = 0; i < sizeof N / sizeof N[0]; i++) printf("  N=%-3d us (GB/s)", N[i]);
    printf("\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t t = types[ti];
        int k256 = quant_block(t) == 256, rows = k256 ? 576 : 1536, cols = k256 ? 1536 : 576;
        QTensor q;
        uint8_t *d = rand_tensor(t, rows, cols, &q);
        float *y = xmalloc((size_t)rows * cols * sizeof(float));
        double best = 1e9;
        for (int r = 0; r < reps; r++) {
            double t0 = time_now();
            for (int r0 = 0; r0 < rows; r0 += 16) quant_rows(&q, r0, 16, y);
            double dt = time_now() - t0;
            best = dt < best ? dt : best;
        }
        printf("%-5s %10.2fG ", quant_name(t), (double)rows * cols / best * 1e-9);
        float *x = xmalloc((size_t)64 * cols * sizeof(float)), *out = xmalloc((size_t)64 * rows * sizeof(float));
        for (size_t i = 0; i < (size_t)64 * cols; i++) x[i] = (float)(i % 7) * 0.1f;
        float *work = xmalloc((size_t)omp_get_max_threads() * cpu_qrows_thread_floats(cols) * sizeof(float) + 256);
        for (size_t ni = 0; ni < sizeof N / sizeof N[0]; ni++) {
            double b2 = 1e9;
            for (int r = 0; r < reps * 4; r++) {
                double t0 = time_now();
                cpu_qmatmul_rows(NULL, out, x, &q, work, N[ni], 0.0f);
                double dt = time_now() - t0;
                b2 = dt < b2 ? dt : b2;
            }
            printf("  %8.1f (%5.2f)", b2 * 1e6, (double)quant_bytes(t, rows, cols) / b2 * 1e-9);
        }
        printf("\n");
        free(d), free(y), free(x), free(out), free(work);
    }
    return 0;
}
