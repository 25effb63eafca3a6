/*
 * ops_cuda.h: the CUDA backend's context (ops_cuda.cu fills the op table
 * `ops_cuda` declared in ops.h). Compiled only with LC_CUDA (make CUDA=1).
 *
 * One context = one device, one stream, one cuBLASLt handle and the
 * workspaces, all made by cuda_ctx_init; every op of ops_cuda takes it as
 * its first argument. Storage (see ops.h's conventions): activations bf16
 * in float-sized slots, per-row statistics (rstd, lse, row_loss) float32,
 * parameters, gradients and AdamW moments float32, and a bf16 shadow of
 * each parameter buffer registered with ops_cuda.bind_params.
 */
#ifndef LLAMAC_MODEL_OPS_CUDA_H
#define LLAMAC_MODEL_OPS_CUDA_H

#include <stddef.h>

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Open device 0: returns a context, or NULL with e set when no CUDA device
 * is usable ("--device cuda: no CUDA GPU found (...)"). Free with
 * cuda_ctx_free (NULL is fine). */
void *cuda_ctx_init(Err *e);
void cuda_ctx_free(void *ctx);
/* 0 when a CUDA device is usable, else -1 with e set as cuda_ctx_init does. */
int cuda_device_check(Err *e);

/* Free and total device memory in bytes (cudaMemGetInfo). */
void cuda_mem_info(void *ctx, size_t *free_b, size_t *total_b);
/* Bytes allocated by this backend since cuda_ctx_init (alloc, frees not
 * subtracted, plus the workspaces): its peak, as allocations happen at start-up. */
size_t cuda_mem_peak(void *ctx);
/* The device's name, e.g. "NVIDIA H100 80GB HBM3". */
const char *cuda_device_name(void *ctx);

#ifdef __cplusplus
}
#endif

#endif
