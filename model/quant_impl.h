/*
 * quant_impl.h: what quant.c and quant_avx2.c share: the AVX2+FMA
 * dequantisers that quant_rows and quant_row_part take on CPUs that have
 * them. Each gives the bits of quant.c's scalar dequantiser of its type
 * (the same float32 operations per value, in the same order: a multiply
 * then an add is two roundings, never an fma); tests/test_ops.c's
 * ops_qdequant compares the two paths on every keepable type.
 */
#ifndef LLAMAC_MODEL_QUANT_IMPL_H
#define LLAMAC_MODEL_QUANT_IMPL_H

#include <stdint.h>

/* nb whole blocks of one type from src into dst (nb * block values, =) */
typedef void (*QuantBlocksFn)(const uint8_t *src, int64_t nb, float *dst);

/* 1 if this CPU runs the AVX2+FMA dequantisers (0 on other
 * architectures); the caller also honours LLAMAC_QUANT_PORTABLE. */
int quant_avx2_ok(void);
/* The AVX2 dequantiser of a ggml type, or NULL where only the scalar one
 * exists. */
QuantBlocksFn quant_avx2_blocks(uint32_t type);
/* NF4 blocks [b0, b0 + nb) (global block numbers: absmax2 is per group of
 * QUANT_NF4_GROUP of them) from blocks (block b0's first byte) into dst;
 * absmax2 (unaligned float32s) and offset as quant.h describes, code and
 * dyn the NF4 codebook and the dynamic map. 0 if not built for AVX2. */
int quant_avx2_nf4(const uint8_t *blocks, int64_t b0, int64_t nb, const uint8_t *absmax2, float offset,
                   const float *code, const float *dyn, float *dst);

#endif
