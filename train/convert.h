/*
 * convert.h: Hugging Face Llama directories in and out, and "any model
 * source" loading for the commands that take a model.
 *
 * A Hugging Face directory holds config.json (LlamaForCausalLM, model_type
 * "llama") and the weights as model.safetensors, or as shards listed by
 * model.safetensors.index.json ({"weight_map": {tensor: shard file}}).
 * Import reads F32, F16 and BF16 tensors by name straight from the mapped
 * files into the parameter buffer (float32); tensors outside the parameter
 * table (rotary inv_freq, a tied lm_head) are ignored. config.json keys:
 *
 *   hidden_size -> dim, num_hidden_layers -> n_layers, num_attention_heads
 *   -> n_heads, num_key_value_heads -> n_kv_heads (default n_heads),
 *   intermediate_size -> hidden, vocab_size -> vocab,
 *   max_position_embeddings -> max_seq (default 2048), rms_norm_eps ->
 *   norm_eps (default 1e-6), rope_theta -> rope_theta (top level or inside
 *   rope_parameters; default 10000), tie_word_embeddings -> tied (default
 *   false), rope_parameters (transformers 5) or rope_scaling with rope_type
 *   (or type) "default" or "llama3" (factor, low_freq_factor,
 *   high_freq_factor, original_max_position_embeddings).
 *
 * Rejected, with "<dir>/config.json: <why>": another architecture or
 * model_type, head_dim != hidden_size / num_attention_heads, attention or
 * MLP biases, an activation other than silu, another RoPE type.
 *
 * GGUF (data/gguf.h; llama.cpp's "llama" architecture): general.architecture
 * must be llama; llama.embedding_length -> dim, block_count -> n_layers,
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
 * back in the HF RoPE order (gguf_unpermute_rows).
 *
 * Export writes config.json (loadable by transformers' LlamaForCausalLM,
 * float32) and model.safetensors (F32) into "<dir>.tmp.<pid>", fsyncs, and
 * renames it to dir. An existing non-empty dir is an error unless force,
 * which replaces it whole.
 */
#ifndef LLAMAC_TRAIN_CONVERT_H
#define LLAMAC_TRAIN_CONVERT_H

#include <stdint.h>
#include <stdio.h>

#include "../model/config.h"
#include "../model/params.h"

/* 1 if path is a directory holding config.json. */
int convert_is_hf_dir(const char *path);

/* Read dir/config.json into c (name: the directory's base name).
 * Returns 0 or -1 with e. */
int convert_hf_config(const char *dir, LlamaConfig *c, Err *e);

/* Read every tensor of t (built from the directory's config) from dir's
 * safetensors into params (t->size floats; padding untouched). A missing
 * tensor, a shape that differs from the config's, an unsupported dtype or a
 * damaged file is an error naming the file and the tensor. */
int convert_hf_load(const char *dir, const ParamTable *t, float *params, Err *e);

/* Write the model as a Hugging Face directory (see above). bos_id, eos_id
 * >= 0 are written as bos_token_id and eos_token_id, else null. */
int convert_hf_save(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
                    int bos_id, int eos_id, int force, Err *e);

/* A GGUF file's llama metadata as a config (see below) / its tensors,
 * dequantised, into params laid out by t. Errors name the file and the key
 * or tensor. */
int convert_gguf_config(const char *path, LlamaConfig *c, Err *e);
int convert_gguf_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e);

/* One summary of a GGUF file to f (version, tensor types, vocabulary). */
int convert_gguf_print(const char *path, FILE *f, Err *e);

/* A model source, a Hugging Face directory, a GGUF file or an llamac
 * checkpoint: its config, its tokenizer id (0 for a HF directory, and for a
 * GGUF whose vocabulary llamac does not read; else the id of tok_load on the
 * GGUF) and whether it is a HF directory (*is_hf). A path that is none of
 * them is an error naming it. */
int convert_model_config(const char *path, LlamaConfig *c, uint64_t *tokenizer_id, int *is_hf, Err *e);

/* The config and tokenizer id of a model to run (eval, generate): a GGUF
 * file as convert_model_config, anything else a checkpoint (ckpt_info, and
 * its errors). */
int convert_run_config(const char *path, LlamaConfig *c, uint64_t *tokenizer_id, Err *e);

/* Load the source's parameters into params, laid out by t (built from the
 * config convert_model_config returned). */
int convert_model_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e);

#endif
