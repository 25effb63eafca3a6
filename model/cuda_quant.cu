/*
 * cuda_quant.cu: the CUDA twins of quant.c's dequantisers: rows of a
 * QTensor in device memory into bf16 rows, for the quantised ops of
 * ops_cuda.cu (a tile of weight rows before a GEMM, or gathered embedding
 * rows). One kernel per type (a template over it, picked from a table),
 * one thread per element, grid-stride.
 *
 * Bit-faithful: each element is the float32 value quant.c's dequantiser
 * gives (so gguf-py's and bitsandbytes'), then rounded once to bf16 (round
 * to nearest even, __float2bfloat16). quant.c rounds every product and sum
 * on its own (ISO C, no contraction; numpy and bitsandbytes do the same),
 * while nvcc fuses a * b + c into one FMA by default: every multiply and add
 * here is __fmul_rn / __fadd_rn / __fsub_rn, which are never fused, in
 * quant.c's order. Halves convert exactly (__half2float); a NaN stays a NaN
 * but its payload is the hardware's (a NaN weight is refused at load).
 * NF4's code books are quant.c's tables, copied once by cuda_quant_init.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "base.h"
#include "quant.h"
}
#include "cuda_impl.cuh"

__device__ float d_nf4_code[16];
__device__ float d_nf4_dyn[256];

void cuda_quant_init(void) {
    CK(cudaMemcpyToSymbol(d_nf4_code, quant_nf4_code(), sizeof d_nf4_code));
    CK(cudaMemcpyToSymbol(d_nf4_dyn, quant_nf4_dyn(), sizeof d_nf4_dyn));
}

// ----------------------------------------------------------------------------
// one element: value e (0 .. cols-1) of a row whose blocks start at row;
// rb0 is the row's first block counted over the whole tensor (NF4's
// second-level scales are per 256 blocks of the tensor), aux NF4's
// {offset, absmax2[...]}. Blocks are byte-aligned only: read byte by byte.

static __device__ __forceinline__ float ld_half(const uint8_t *p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | p[1] << 8)));
}
static __device__ __forceinline__ uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* the 4-bit code of element i (0..31) of a legacy block's 16 bytes q:
 * byte i holds i (low nibble) and i + 16 (high) */
static __device__ __forceinline__ int nib32(const uint8_t *q, int i) {
    return i < 16 ? q[i] & 0xf : q[i - 16] >> 4;
}
/* sub-block j's 6-bit (scale, min) of Q4_K/Q5_K (quant.c's k_scale_min) */
static __device__ __forceinline__ void k_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

template <uint32_t TYPE>
static __device__ __forceinline__ float dq_elem(const uint8_t *row, int e, int64_t rb0, const float *aux) {
    if constexpr (TYPE == QUANT_Q8_0) { /* d * q */
        const uint8_t *b = row + (size_t)(e / 32) * 34;
        return __fmul_rn(ld_half(b), (float)(int8_t)b[2 + e % 32]);
    } else if constexpr (TYPE == QUANT_Q4_0) { /* d * (q - 8) */
        const uint8_t *b = row + (size_t)(e / 32) * 18;
        return __fmul_rn(ld_half(b), (float)(nib32(b + 2, e % 32) - 8));
    } else if constexpr (TYPE == QUANT_Q4_1) { /* d * q + m */
        const uint8_t *b = row + (size_t)(e / 32) * 20;
        return __fadd_rn(__fmul_rn(ld_half(b), (float)nib32(b + 4, e % 32)), ld_half(b + 2));
    } else if constexpr (TYPE == QUANT_Q5_0) { /* d * (q - 16), bit i of qh the fifth bit */
        const uint8_t *b = row + (size_t)(e / 32) * 22;
        int i = e % 32, v = nib32(b + 6, i) | (int)((ld32(b + 2) >> i) & 1) << 4;
        return __fmul_rn(ld_half(b), (float)(v - 16));
    } else if constexpr (TYPE == QUANT_Q5_1) { /* d * q + m */
        const uint8_t *b = row + (size_t)(e / 32) * 24;
        int i = e % 32, v = nib32(b + 8, i) | (int)((ld32(b + 4) >> i) & 1) << 4;
        return __fadd_rn(__fmul_rn(ld_half(b), (float)v), ld_half(b + 2));
    } else if constexpr (TYPE == QUANT_Q4_K || TYPE == QUANT_Q5_K) { /* (d * sc) * q - dmin * mn */
        const int five = TYPE == QUANT_Q5_K;
        const uint8_t *b = row + (size_t)(e / 256) * (five ? 176 : 144);
        int k = e % 256, j = k / 32, l = k % 32, sc, mn;
        k_scale_min(b + 4, j, &sc, &mn);
        float ds = __fmul_rn(ld_half(b), (float)sc), dm = __fmul_rn(ld_half(b + 2), (float)mn);
        const uint8_t *q = b + (five ? 48 : 16) + 32 * (j / 2);
        int v = (q[l] >> (4 * (j & 1))) & 0xf;
        if (five) v |= ((b[16 + l] >> j) & 1) << 4;
        return __fsub_rn(__fmul_rn(ds, (float)v), dm);
    } else if constexpr (TYPE == QUANT_Q6_K) { /* (d * scales[k / 16]) * (q - 32) */
        const uint8_t *b = row + (size_t)(e / 256) * 210;
        int k = e % 256, h = k / 128, s = k % 128 / 32, i = k % 32;
        int lo = (b[64 * h + 32 * (s & 1) + i] >> (4 * (s / 2))) & 0xf;
        int hi = (b[128 + 32 * h + i] >> (2 * s)) & 3;
        float ds = __fmul_rn(ld_half(b + 208), (float)(int8_t)b[192 + k / 16]);
        return __fmul_rn(ds, (float)((lo | hi << 4) - 32));
    } else { /* NF4: nf4[code] * (dyn[absmax code] * absmax2[group] + offset) */
        static_assert(TYPE == QUANT_NF4, "a type without a dequantiser");
        int bi = e / QUANT_NF4_BLOCK, i = e % QUANT_NF4_BLOCK;
        const uint8_t *b = row + (size_t)bi * (QUANT_NF4_BLOCK / 2 + 1);
        int64_t gb = rb0 + bi;
        float scale = __fadd_rn(__fmul_rn(d_nf4_dyn[b[QUANT_NF4_BLOCK / 2]], aux[1 + gb / QUANT_NF4_GROUP]), aux[0]);
        int code = i & 1 ? b[i / 2] & 0xf : b[i / 2] >> 4;
        return __fmul_rn(d_nf4_code[code], scale);
    }
}

/* dst (n, cols) bf16 = rows idx[r] (idx NULL: r0 + r) of the tensor */
template <uint32_t TYPE>
__global__ void k_qrows(bf16 *dst, const uint8_t *data, size_t row_bytes, int cols, const float *aux, int r0, int n,
                        const int *idx) {
    size_t total = (size_t)n * cols;
    int per_row = cols / QUANT_NF4_BLOCK; /* NF4's blocks per row (unused by the others) */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / cols), e = (int)(i % cols);
        int src = idx ? idx[r] : r0 + r;
        float v = dq_elem<TYPE>(data + (size_t)src * row_bytes, e, (int64_t)src * per_row, aux);
        dst[i] = __float2bfloat16(v);
    }
}

typedef void (*QRowsKernel)(bf16 *, const uint8_t *, size_t, int, const float *, int, int, const int *);

/* the types a weight may stay in (quant_keepable) */
static const struct {
    uint32_t type;
    QRowsKernel k;
} qkernels[] = {
    {QUANT_Q8_0, k_qrows<QUANT_Q8_0>}, {QUANT_Q4_0, k_qrows<QUANT_Q4_0>}, {QUANT_Q4_1, k_qrows<QUANT_Q4_1>},
    {QUANT_Q5_0, k_qrows<QUANT_Q5_0>}, {QUANT_Q5_1, k_qrows<QUANT_Q5_1>}, {QUANT_Q4_K, k_qrows<QUANT_Q4_K>},
    {QUANT_Q5_K, k_qrows<QUANT_Q5_K>}, {QUANT_Q6_K, k_qrows<QUANT_Q6_K>}, {QUANT_NF4, k_qrows<QUANT_NF4>},
};

void cuda_quant_rows(cudaStream_t s, bf16 *dst, const QTensor *q, int r0, int n, const int *idx) {
    if (n <= 0) return;
    LC_ASSERT(idx || (r0 >= 0 && r0 + n <= q->rows));
    QRowsKernel k = NULL;
    for (size_t i = 0; i < sizeof qkernels / sizeof qkernels[0]; i++)
        if (qkernels[i].type == q->type) k = qkernels[i].k;
    if (!k) LC_FATAL("ops_cuda: no dequantiser for type %u (%s)", q->type, quant_name(q->type) ? quant_name(q->type) : "?");
    /* NF4's scales follow the blocks at the next multiple of 16 bytes (quant.h) */
    const float *aux = q->type == QUANT_NF4 ? (const float *)(q->data + (q->row_bytes * q->rows + 15) / 16 * 16) : NULL;
    size_t total = (size_t)n * q->cols, blocks = (total + 255) / 256;
    if (blocks > 65535u * 16) blocks = 65535u * 16; /* the grid-stride loop covers the rest */
    k<<<(unsigned)blocks, 256, 0, s>>>(dst, q->data, q->row_bytes, q->cols, aux, r0, n, idx);
    CK(cudaGetLastError());
}
