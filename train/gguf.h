/*
 * gguf.h: export a model to GGUF, the file format of llama.cpp (ggml's
 * docs/gguf.md), version 3, little-endian, every tensor float32.
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
 * Vocabulary: given a tokenizer, the tokenizer.ggml.* keys. Byte-level kinds
 * (llamac BPE, tokenizer.json, tiktoken) become llama.cpp's "gpt2" model:
 * tokens spelled in GPT-2's byte-to-unicode alphabet, special tokens as
 * their text with type CONTROL, merges "A B" in rank order, pre-tokenizer
 * "llama-bpe" (Llama 3's split) or, for llamac's own BPE whose split is none
 * of llama.cpp's, "default" (GPT-2's: prompts may then split differently
 * from llamac's encoder, while every id decodes exactly). SentencePiece
 * becomes its "llama" model (pieces, scores, types). Ids past the
 * tokenizer's vocabulary up to the model's are unused "[PAD<id>]" tokens.
 * Without a tokenizer, tokenizer.ggml.model is "no_vocab" (ids in, logits
 * out).
 */
#ifndef LLAMAC_TRAIN_GGUF_H
#define LLAMAC_TRAIN_GGUF_H

#include "../model/config.h"
#include "../model/params.h"
#include "../data/tok.h"

#define GGUF_VERSION 3
#define GGUF_ALIGNMENT 32

/* Write the model (host buffer laid out by t) to path: "<path>.tmp" first,
 * fsync'd, then renamed, so an existing path is replaced only by a complete
 * file. name goes into general.name; tok (NULL: none) the vocabulary.
 * Returns 0 or -1 with e. */
int gguf_save_llama(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
                    const char *name, const Tokenizer *tok, Err *e);

/* llama.cpp's name of the HF tensor hf into out; -1 if it has none. */
int gguf_tensor_name(const char *hf, char *out, size_t n);

/* Reorder the rows of a (n_head * HS, cols) q or k matrix from the HF RoPE
 * layout to llama.cpp's (see above): dst and src must not overlap. */
void gguf_permute_rows(float *dst, const float *src, int n_head, int hs, int64_t cols);
void gguf_unpermute_rows(float *dst, const float *src, int n_head, int hs, int64_t cols);

/* The HS/2 llama3 frequency factors of rope_freqs.weight (c must use
 * ROPE_SCALING_LLAMA3). */
void gguf_rope_factors(const LlamaConfig *c, float *out);

#endif
