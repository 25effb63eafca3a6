/*
 * gguf.h: a Llama model as a GGUF file, llama.cpp's format (ggml's
 * docs/gguf.md), both ways: import through data/gguf.h's container reader
 * (which the tokenizer shares), config and dequantised weights (below); export
 * of version 3, little-endian; matrices as F32, F16, BF16 or
 * Q8_0, 1-D tensors (norms, rope_freqs) always F32 as llama.cpp's
 * converter keeps them.
 *
 * Types (ggml's numbers): F32 = 0; F16 = 1, IEEE half, round to nearest
 * even (numpy's astype(float16)); BF16 = 30, the top 16 bits of the
 * float32 rounded to nearest even, NaN kept quiet (ggml's
 * fp32_to_bf16); Q8_0 = 8, blocks of 32 consecutive values along a row,
 * each { f16 d; int8 q[32] } (34 bytes) with d = max|x| / 127 and q =
 * roundf(x / d) (halves away from zero) computed in float32 with the
 * unrounded d, 0 for an all-zero block (ggml's quantize_row_q8_0_ref). A
 * matrix whose rows are not a multiple of 32 long goes F16 instead, as
 * llama.cpp's converter falls back. general.file_type says the type of the
 * matrices (LLAMA_FTYPE: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7,
 * MOSTLY_BF16 32).
 *
 * Layout: "GGUF", uint32 version 3, uint64 tensor count, uint64 metadata
 * count; the metadata (key: uint64 length + bytes; uint32 value type; value;
 * strings are uint64 length + bytes); one info per tensor (name, uint32
 * ndim, uint64 dims innermost first, uint32 ggml type (F32 = 0), uint64
 * offset into the data section); zero padding to general.alignment (32);
 * the data, each tensor starting at a multiple of the alignment.
 *
 * Names and metadata are llama.cpp's "llama" architecture: token_embd,
 * blk.N.{attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down,
 * attn_norm, ffn_norm}, output_norm, output (absent when tied: llama.cpp
 * then uses token_embd), and llama.{context_length, embedding_length,
 * block_count, feed_forward_length, attention.head_count,
 * attention.head_count_kv, rope.freq_base, attention.layer_norm_rms_epsilon,
 * rope.dimension_count, vocab_size}. A HF matrix (rows, cols) is stored
 * with dims [cols, rows].
 *
 * RoPE layout: llama.cpp rotates adjacent pairs (2i, 2i+1) of a head, while
 * the Hugging Face layout we train in pairs i with i + HS/2. As llama.cpp's
 * convert_hf_to_gguf.py does, the rows of q_proj (per query head) and
 * k_proj (per kv head) are reordered so that row 2i + j of a head in the
 * file is row j*HS/2 + i of the HF head (j = 0, 1); gguf_permute_rows does
 * this and gguf_unpermute_rows undoes it.
 *
 * Llama 3.1 RoPE scaling: llama.cpp divides each rotary frequency by a
 * per-frequency factor from the tensor rope_freqs.weight (HS/2 floats):
 * 1 for wavelengths below original_ctx / high_freq_factor, factor above
 * original_ctx / low_freq_factor, and 1 / ((1 - s) / factor + s) between,
 * with s = (original_ctx / wavelength - low) / (high - low): the same
 * frequencies as Hugging Face's llama3 rope.
 *
 * Chat template: given its Jinja text, tokenizer.chat_template (what
 * llama.cpp's server and chat tools render conversations with).
 *
 * Vocabulary: given a tokenizer, the tokenizer.ggml.* keys. Byte-level kinds
 * (llamac BPE, tokenizer.json, tiktoken) become llama.cpp's "gpt2" model:
 * tokens spelled in GPT-2's byte-to-unicode alphabet, special tokens as
 * their text with type CONTROL, merges "A B" in rank order, pre-tokenizer
 * "llama-bpe" (Llama 3's split: tokenizer.json, tiktoken, and llamac's BPE
 * files of version 2 with Llama 3's pattern, so that llama.cpp tokenizes as
 * llamac does) or, for llamac's version 1 BPE files whose split is none of
 * llama.cpp's, "default" (GPT-2's: prompts may then split differently from
 * llamac's encoder, while every id decodes exactly). SentencePiece
 * becomes its "llama" model (pieces, scores, types). Ids past the
 * tokenizer's vocabulary up to the model's are unused "[PAD<id>]" tokens.
 * Without a tokenizer, tokenizer.ggml.model is "no_vocab" (ids in, logits
 * out).
 */
#ifndef LLAMAC_TRAIN_GGUF_H
#define LLAMAC_TRAIN_GGUF_H

#include <stdio.h>

#include "../../model/config.h"
#include "../../model/params.h"
#include "../../data/gguf.h"
#include "../../data/tok.h"

#define GGUF_VERSION 3
#define GGUF_ALIGNMENT 32

typedef enum { GGUF_F32, GGUF_F16, GGUF_BF16, GGUF_Q8_0, GGUF_TYPE_COUNT } GgufType;


/* What an export writes besides the weights. */
typedef struct GgufOpts {
    GgufType type;             /* of the matrices (when qtypes is NULL) */
    const char *name;          /* general.name */
    const Tokenizer *tok;      /* the vocabulary; NULL: none (no_vocab) */
    const char *chat_template; /* Jinja text; NULL: none */
    /* Per tensor of the table (t->n): its ggml type (F32, F16, BF16 or a
     * block type model/quant.c quantises, cols a multiple of its block;
     * 1-D tensors are F32 whatever it says), written with general.file_type
     * ftype; NULL: type and its rules above. */
    const uint32_t *qtypes;
    uint32_t ftype;
    /* Called after tensor i of n is encoded as ggml type ty; NULL: none. */
    void (*progress)(void *arg, int i, int n, uint32_t ty);
    void *progress_arg;
} GgufOpts;

/* "f32" / "f16" / "bf16" / "q8_0" -> *type; -1 with "--type: unknown type
 * '...' (expected f32, f16, bf16 or q8_0)". */
int gguf_type_parse(const char *name, GgufType *type, Err *e);
const char *gguf_export_type_name(GgufType type);

/* 0 if a model of config c can be written as GGUF, else -1 with "<path>:
 * <why>": a classifier (num_labels > 0, a reward model) has no llama.cpp
 * architecture. */
int gguf_check_export(const char *path, const LlamaConfig *c, Err *e);

/* Write the model (host buffer laid out by t) to path: "<path>.tmp" first,
 * fsync'd, then renamed, so an existing path is replaced only by a complete
 * file. Returns 0 or -1 with e (gguf_check_export's too). */
int gguf_save(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
              const GgufOpts *o, Err *e);

/* gguf_save with F32 matrices and no chat template. */
int gguf_save_llama(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
                    const char *name, const Tokenizer *tok, Err *e);

/* llama.cpp's name of the HF tensor hf into out; -1 if it has none. */
int gguf_tensor_name(const char *hf, char *out, size_t n);

/* Reorder the rows of a (n_head * HS, cols) q or k matrix from the HF RoPE
 * layout to llama.cpp's (see above): dst and src must not overlap. */
void gguf_permute_rows(float *dst, const float *src, int n_head, int hs, int64_t cols);
void gguf_unpermute_rows(float *dst, const float *src, int n_head, int hs, int64_t cols);
/* gguf_unpermute_rows for rows of row_bytes bytes each (a quantised
 * tensor's rows of blocks). */
void gguf_unpermute_row_bytes(void *dst, const void *src, int n_head, int hs, size_t row_bytes);

/* The HS/2 llama3 frequency factors of rope_freqs.weight (c must use
 * ROPE_SCALING_LLAMA3). */
void gguf_rope_factors(const LlamaConfig *c, float *out);

/* Import (llama.cpp's "llama" architecture, read with data/gguf.h):
 * general.architecture must be llama; llama.embedding_length -> dim, block_count -> n_layers,
 * attention.head_count -> n_heads, attention.head_count_kv -> n_kv_heads
 * (default n_heads), feed_forward_length -> hidden, context_length ->
 * max_seq, attention.layer_norm_rms_epsilon -> norm_eps, rope.freq_base ->
 * rope_theta (default 10000); vocab from the length of tokenizer.ggml.tokens,
 * else llama.vocab_size; tied when there is no output.weight; a
 * rope_freqs.weight tensor is Llama 3.1 scaling (its parameters recovered
 * from the factors); rope.scaling.type other than none, and a
 * rope.dimension_count / key_length / value_length other than the head
 * size, are rejected. Tensors (token_embd, blk.N.attn_q, ..., gguf.h's
 * names) of any type gguf.h dequantises become float32, q and k rows put
 * back in the HF RoPE order (gguf_unpermute_rows). */

/* A GGUF file's llama metadata as a config (name: general.name, else the
 * file's base name) / its tensors, dequantised, into params laid out by t.
 * Errors name the file and the key or tensor. */
int gguf_llama_config(const char *path, LlamaConfig *c, Err *e);
int gguf_llama_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e);

/* The tensors of t held quantised (ParamInfo.qtype, params_set_quant) as
 * the file stores them, into qdata (host memory, t->qsize bytes) at their
 * qoffset: the blocks copied (q and k rows put back in HF order), never
 * converted; each tensor's type must be its qtype ("<file>: tensor N is
 * Q4_1, the plan says Q8_0": a bug of the caller's plan). A block that
 * dequantises to NaN or Inf (a damaged scale) is an error naming the tensor
 * unless --allow-nonfinite. Float entries of t are skipped. */
int gguf_llama_load_quant(const char *path, const LlamaConfig *c, const ParamTable *t, uint8_t *qdata, Err *e);

/* The ggml type the file stores the tensor of HF name `hf` in, or -1 with
 * e when the file lacks it. */
int gguf_llama_tensor_type(const Gguf *g, const char *hf, uint32_t *type, Err *e);

/* One summary of a GGUF file to f (version, tensor types, vocabulary). */
int gguf_llama_print(const char *path, FILE *f, Err *e);

#endif
