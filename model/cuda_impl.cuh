/*
 * cuda_impl.cuh: what the CUDA backend's .cu files share (ops_cuda.cu,
 * cuda_attn.cu, cuda_quant.cu): the checked-call macros, bf16, warp and
 * block reductions, and the attention and dequantisation entry points. Not
 * for C code.
 */
#ifndef LLAMAC_MODEL_CUDA_IMPL_CUH
#define LLAMAC_MODEL_CUDA_IMPL_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

extern "C" {
#include "base.h"
#include "ops.h"
#include "quant.h"
}

typedef __nv_bfloat16 bf16;

/* Resource failures abort with file:line (STYLE.md: CUDA_CHECK). */
#define CK(x)                                                                              \
    do {                                                                                   \
        cudaError_t ck_ = (x);                                                             \
        if (ck_ != cudaSuccess) lc_fatal_at(__FILE__, __LINE__, "CUDA: %s: %s", #x,        \
                                            cudaGetErrorString(ck_));                      \
    } while (0)
#define LTK(x)                                                                             \
    do {                                                                                   \
        cublasStatus_t lt_ = (x);                                                          \
        if (lt_ != CUBLAS_STATUS_SUCCESS) lc_fatal_at(__FILE__, __LINE__, "cuBLASLt: %s: status %d", #x, \
                                                      (int)lt_);                           \
    } while (0)

static __device__ inline float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ inline float warp_max(float v) {
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Whole-block reductions (blockDim a multiple of 32, at most 1024); red is
 * 32 floats of shared memory; every thread gets the result. */
static __device__ inline float block_sum(float v, float *red) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32, nw = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (l == 0) red[w] = v;
    __syncthreads();
    v = l < nw ? red[l] : 0.0f;
    return warp_sum(v);
}
static __device__ inline float block_max(float v, float *red) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32, nw = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (l == 0) red[w] = v;
    __syncthreads();
    v = l < nw ? red[l] : -INFINITY;
    return warp_max(v);
}

/* ---- attention (cuda_attn.cu): layouts and contracts of ops.h's attn_*,
 * activations bf16, lse float32, spans (B, T, 3) ints; scratch holds
 * B*H*T floats (the backward's delta). */
void attn_init(const cudaDeviceProp *prop);
void attn_fwd(cudaStream_t s, bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
              const int *spans, int B, int T, int H, int KV, int HS);
void attn_bwd(cudaStream_t s, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
              const float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const int *spans,
              float *scratch, int B, int T, int H, int KV, int HS);
void attn_decode(cudaStream_t s, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, float *scratch,
                 int S, int H, int KV, int HS);
/* ops.h's attn_paged; the pools k, v are (rows, KV*HS) bf16, row r at
 * element r*KV*HS; ptab, slot, len device ints. */
void attn_paged(cudaStream_t s, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, const int *ptab,
                const int *slot, const int *len, int N, int H, int KV, int HS, int P, int maxp);

/* ---- quantised weights (cuda_quant.cu). cuda_quant_init copies NF4's code
 * books to the current device (once per context, before the first call).
 * cuda_quant_rows: dst (n, q->cols) bf16 = rows idx[0 .. n) of q (idx a
 * device int array), or rows r0 .. r0 + n when idx is NULL; q->data device
 * memory, q a keepable type. Each value is quant_rows' float32 value
 * rounded to bf16 (round to nearest even). */
/* ---- distillation (cuda_kd.cu): the rows of a chunk of lmhead_kd (ops.h):
 * logits (rows, V) float32 of the student, tlogits those of a dense
 * teacher or NULL with ids / lp (rows, K) (sparse); tgt (rows); writes tot,
 * rce, rkd (rows) float32 (the weighted total, ce, divergence; 0 for
 * ignored rows) and, with grad, dl (rows, V) bf16 = scale * dlogits. */
void kd_rows_launch(cudaStream_t s, float *tot, float *rce, float *rkd, bf16 *dl, const float *logits,
                    const float *tlogits, const int *ids, const float *lp, int K, const int *tgt, int rows, int V,
                    const KdSpec *kd, float scale, int grad);

void cuda_quant_init(void);
void cuda_quant_rows(cudaStream_t s, bf16 *dst, const QTensor *q, int r0, int n, const int *idx);

#endif
