/*
 * ops_cpu_engine.h: the CPU backend's engine ops (ops_cpu_engine.c), for
 * its op table in ops_cpu.c. Contracts in ops.h.
 */
#ifndef LLAMAC_MODEL_OPS_CPU_ENGINE_H
#define LLAMAC_MODEL_OPS_CPU_ENGINE_H

#include <stddef.h>

#include "quant.h"

size_t cpu_rows_pack_floats(void *ctx, int Din, int Dout);
void cpu_rows_pack(void *ctx, float *wp, const float *w, int Din, int Dout);
void cpu_matmul_rows(void *ctx, float *out, const float *x, const float *wp, int N, int Din, int Dout, float add);
/* 1 if the engine's linears take their AVX2+FMA kernels: the CPU has
 * them and LLAMAC_ROWS_PORTABLE was not set at the first call (the bits are
 * the same either way) */
int cpu_rows_avx2(void);
/* qmatmul_rows (ops.h; ops_cpu_qrows.c) and the work floats one thread of
 * it uses for inner dimension Din; _portable always takes the portable
 * path (the tests compare the two, bit for bit) */
void cpu_qmatmul_rows(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N, float add);
void cpu_qmatmul_rows_portable(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N,
                               float add);
size_t cpu_qrows_thread_floats(int Din);
void cpu_attn_paged(void *ctx, float *out, const float *q, const float *k, const float *v, const int *ptab,
                    const int *slot, const int *len, int N, int H, int KV, int HS, int P, int maxp);
void cpu_rows_scatter(void *ctx, float *dst, const float *src, const int *idx, int N, int W);
void cpu_rows_gather(void *ctx, float *dst, const float *src, const int *idx, int N, int W);

#endif
