/*
 * quant.h: quantised tensors. The block types of ggml (GGUF files) and NF4
 * as bitsandbytes defines it, their sizes, dequantisation (bit-identical to
 * gguf-py's quants.py and to bitsandbytes) and quantisation, and the QTensor
 * a frozen weight is held in when it stays quantised (DESIGN.md, "Quantised
 * weights"): the linear op's forward and input-gradient backward read it a
 * tile of rows at a time (ops.h, qmatmul_*). libc only; data/gguf.c reads
 * and writes GGUF files through it.
 *
 * Types are numbered as ggml numbers them (ggml.h), so a GGUF tensor's type
 * is its QuantType; NF4, which ggml does not have, is QUANT_NF4.
 *
 * NF4 (Dettmers et al. 2023, bitsandbytes' quantize_4bit with
 * quant_type="nf4", blocksize 64, compress_statistics=True): each block of
 * 64 values is 32 bytes of 4-bit codes into the NF4 codebook (element 2i in
 * the high nibble of byte i, 2i + 1 in the low nibble, bitsandbytes' order)
 * and one byte, the block's absmax quantised by the dynamic 8-bit map
 * (create_dynamic_map(signed=True); double quantisation); a block is 33
 * bytes. The absmax of block b is dyn[code_b] * absmax2[b / 256] + offset
 * (float32 in that order), absmax2 one float32 per group of 256 blocks
 * (counted over the whole tensor; the last group may be shorter, its
 * absmax2 the largest |absmax - offset| of its own blocks), offset the mean
 * absmax subtracted before the second quantisation; value = nf4[code] *
 * absmax (float32). A QTensor of NF4 keeps after its rows * row_bytes block
 * bytes, at the next multiple of 16 bytes, the floats { offset, absmax2[0],
 * absmax2[1], ... }: one buffer of quant_bytes() holds the whole tensor.
 * Both directions are bitsandbytes 0.50's CPU results bit for bit
 * (scripts/test_nf4_ref.py): codes by torch.bucketize on the midpoints (a
 * tie takes the lower code), absmax codes by bitsandbytes' 65536-bin lookup
 * table (not always the nearest entry), offset by torch's one-thread float32
 * sum (torch with several threads splits tensors of 32768 blocks or more
 * and may differ from itself in the offset's last bit).
 */
#ifndef LLAMAC_MODEL_QUANT_H
#define LLAMAC_MODEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "base.h"

/* ggml's numbering (the ones llamac names) and NF4 */
enum {
    QUANT_F32 = 0, QUANT_F16 = 1, QUANT_Q4_0 = 2, QUANT_Q4_1 = 3, QUANT_Q5_0 = 6, QUANT_Q5_1 = 7,
    QUANT_Q8_0 = 8, QUANT_Q4_K = 12, QUANT_Q5_K = 13, QUANT_Q6_K = 14, QUANT_BF16 = 30,
    QUANT_NF4 = 1000
};

#define QUANT_NF4_BLOCK 64   /* values per NF4 block */
#define QUANT_NF4_GROUP 256  /* NF4 blocks per second-level (absmax2) scale */

/* A weight (rows, cols) held quantised: row r's blocks are the row_bytes
 * bytes at data + r * row_bytes (cols a whole number of blocks, so rows
 * never share a block); NF4 then its scales (above). data is backend
 * memory. */
typedef struct QTensor {
    uint32_t type;
    int rows, cols;
    size_t row_bytes;
    const uint8_t *data;
} QTensor;

/* Name of a type ("Q4_K", "NF4"), or NULL for a number ggml does not use. */
const char *quant_name(uint32_t type);
/* Values and bytes per block; 0 for an unknown type. */
int quant_block(uint32_t type);
size_t quant_block_bytes(uint32_t type);
/* 1 if tensors of this type dequantise to float32 (F32, F16, BF16, the
 * eight block types llamac reads, NF4). */
int quant_dequantizes(uint32_t type);
/* 1 if a frozen weight may stay in this type (QTensor): Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, NF4; quant_keepable_list names them
 * ("Q8_0, Q4_0, ..."), quant_dequant_list the dequantising ones. */
int quant_keepable(uint32_t type);
const char *quant_keepable_list(void);
const char *quant_dequant_list(void);
/* A type from its name, case-insensitive ("q4_k", "NF4"); keepable types
 * only. -1 with e = "<what>: unknown type 'x' (one of ...)". */
int quant_parse(const char *s, const char *what, uint32_t *type, Err *e);

/* Bytes of one row of cols values (cols a multiple of the block), and of a
 * whole (rows, cols) tensor: rows * row bytes, plus NF4's scales. */
size_t quant_row_bytes(uint32_t type, int64_t cols);
size_t quant_bytes(uint32_t type, int64_t rows, int64_t cols);
/* A QTensor over data (host or backend memory) of that shape. */
QTensor quant_tensor(uint32_t type, int rows, int cols, const void *data);

/* Dequantise n values (a whole number of blocks) of a type other than NF4
 * from src into dst (=). Returns 0, or -1 for a type that does not
 * dequantise. */
int quant_dequantize(uint32_t type, const void *src, int64_t n, float *dst);
/* Rows [r0, r0 + n) of q (host memory) into dst (n, cols) (=). On CPUs
 * with AVX2+FMA the vector dequantisers (quant.c's AVX2 section) unless
 * LLAMAC_QUANT_PORTABLE is set in the environment when first called; the
 * bits are the same either way. quant_rows_portable always takes the
 * scalar ones (the tests compare the two). */
void quant_rows(const QTensor *q, int r0, int n, float *dst);
void quant_rows_portable(const QTensor *q, int r0, int n, float *dst);
/* Values [k0, k0 + n) of row r of q into dst (n floats, =); k0 and n
 * multiples of the block. What quant_rows gives for those columns. */
void quant_row_part(const QTensor *q, int r, int k0, int n, float *dst);

/* Quantise src (rows, cols), host memory, into dst (quant_bytes bytes) as
 * type (a keepable type; cols a multiple of its block). The block types
 * follow ggml's reference quantisers (no importance matrix); NF4 is
 * bitsandbytes' quantize_4bit with double quantisation. Returns 0, or -1 for
 * a type it cannot write. */
int quant_quantize(uint32_t type, const float *src, int64_t rows, int64_t cols, uint8_t *dst);

/* NF4's two code books, float32, as nf4 dequantisation reads them: the 16
 * values of the 4-bit codes and the 256 entries of the dynamic map of the
 * absmax codes. Static storage; a backend copies them into its own memory
 * (the CUDA dequantiser). */
const float *quant_nf4_code(void);
const float *quant_nf4_dyn(void);

/* 0 if every value of q (host memory) dequantises to a finite float, else
 * the number of rows holding a NaN or Inf (a damaged scale). */
long quant_nonfinite_rows(const QTensor *q);

/* IEEE half (binary16) <-> float32: exact, and round to nearest even (NaN
 * kept a NaN). */
float quant_half_to_float(uint16_t h);
uint16_t quant_float_to_half(float f);

#endif
