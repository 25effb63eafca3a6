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
 *
 * With a tokenizer the directory carries it as AutoTokenizer loads it:
 *   tokenizer.json   a copy of a tokenizer.json source; for llamac's BPE and
 *                    tiktoken, written: model BPE (vocab in GPT-2's byte
 *                    alphabet, merges in rank order, ignore_merges), the
 *                    split pattern (Split, Isolated) then ByteLevel without
 *                    its regex, ByteLevel decoder, the special tokens as
 *                    added tokens, no post-processor (no BOS added, as
 *                    llamac's generate adds none);
 *   tokenizer.model  a copy of a SentencePiece source;
 *   tokenizer_config.json  tokenizer_class, bos/eos/unk tokens,
 *                    added_tokens_decoder, add_bos_token false,
 *                    model_max_length, chat_template (when given);
 *   generation_config.json  bos_token_id, eos_token_id (with the
 *                    end-of-turn id when it differs).
 * llamac's version 1 BPE files split text their own way, which
 * tokenizer.json cannot say: Llama 3's pattern is written instead (ids
 * decode the same; a prompt may split differently) with a warning.
 *
 * Import: a directory holding tokenizer.json or tokenizer.model carries its
 * tokenizer (convert_hf_tokenizer finds it; `convert` records its id).
 */
#ifndef LLAMAC_TRAIN_CONVERT_H
#define LLAMAC_TRAIN_CONVERT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../model/config.h"
#include "../../model/params.h"

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

/* Writing a directory atomically (the export above, PEFT adapters):
 * convert_dir_begin refuses an existing non-directory or, without force, a
 * non-empty directory, and creates the empty "<dir>.tmp.<pid>" (its path into
 * tmp[0..n)); the caller writes and fsyncs its files there; convert_dir_commit
 * fsyncs tmp and renames it to dir (a full dir is moved aside first and
 * removed after), or removes tmp and fails; convert_dir_abort removes tmp. */
int convert_dir_begin(const char *dir, int force, char *tmp, size_t n, Err *e);
int convert_dir_commit(const char *dir, const char *tmp, Err *e);
void convert_dir_abort(const char *tmp);

/* Write j to path (indented, keys in insertion order) and fsync it. */
struct json_t;
int convert_json_write(const char *path, const struct json_t *j, Err *e);

/* The shortest decimal that reads back as f, as a double (JSON reals: 1e-05,
 * not 9.99999974737875e-06). */
double convert_short_real(float f);

/* A GGUF file's llama metadata as a config (see below) / its tensors,
 * dequantised, into params laid out by t. Errors name the file and the key
 * or tensor. */
int convert_gguf_config(const char *path, LlamaConfig *c, Err *e);
int convert_gguf_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e);

struct Tokenizer;

/* What a HF export carries besides the weights. */
typedef struct ConvertTok {
    const struct Tokenizer *tok; /* NULL: no tokenizer files */
    const char *path;            /* its file (copied for tokenizer.json / SentencePiece) */
    const char *chat_template;   /* Jinja text, or NULL */
} ConvertTok;

/* convert_hf_save with the tokenizer files above (bos/eos from tk->tok). */
int convert_hf_save_tok(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
                        const ConvertTok *tk, int force, Err *e);

/* The tokenizer file of a HF directory into out: dir/tokenizer.json, else
 * dir/tokenizer.model; 0 if it has one, -1 if neither exists. */
int convert_hf_tokenizer(const char *dir, char *out, size_t n);

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

/* Non-finite weights (issue 16): every loader (safetensors tensors of a HF
 * directory, GGUF tensors after dequantising, HDF5 checkpoint groups, PEFT
 * adapter weights) passes each tensor it read through this check. 0 if the
 * n floats at x are finite; else -1 with "<path>: tensor <name> holds K
 * non-finite values (NaN or Inf) of n ..." — or, once
 * convert_allow_nonfinite(1) was called (the --allow-nonfinite flag, cli.h),
 * that fact as a warning on stderr and 0. */
int convert_check_finite(const char *path, const char *name, const float *x, size_t n, Err *e);
void convert_allow_nonfinite(int on);

/* Load the source's parameters into params, laid out by t (built from the
 * config convert_model_config returned). */
int convert_model_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e);

#endif
