/*
 * hf.h: Hugging Face Llama directories in and out. Opened by the commands
 * through source.h, the one way in for model files.
 *
 * A Hugging Face directory holds config.json (LlamaForCausalLM, or
 * LlamaForSequenceClassification for a reward model: num_labels from
 * num_labels or the size of id2label, pad_token_id, `score.weight` and no
 * lm_head; model_type "llama") and the weights as model.safetensors, or as shards listed by
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
 * Export writes config.json (loadable by transformers' LlamaForCausalLM,
 * or LlamaForSequenceClassification with id2label, label2id and
 * pad_token_id: the config's pad_id, else the EOS id as TRL's
 * RewardTrainer sets pad = eos, else null;
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
 *                    pad_token (a classifier's pad token, else null),
 *                    model_max_length, chat_template (when given);
 *   generation_config.json  bos_token_id, eos_token_id (with the
 *                    end-of-turn id when it differs).
 * llamac's version 1 BPE files split text their own way, which
 * tokenizer.json cannot say: Llama 3's pattern is written instead (ids
 * decode the same; a prompt may split differently) with a warning.
 *
 * Import: a directory holding tokenizer.json or tokenizer.model carries its
 * tokenizer (hf_tokenizer finds it; `convert` records its id).
 */
#ifndef LLAMAC_TRAIN_IO_HF_H
#define LLAMAC_TRAIN_IO_HF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../model/config.h"
#include "../../model/params.h"

/* 1 if path is a directory holding config.json. */
int hf_is_dir(const char *path);

/* Read dir/config.json into c (name: the directory's base name).
 * Returns 0 or -1 with e. */
int hf_config(const char *dir, LlamaConfig *c, Err *e);

/* Read every tensor of t (built from the directory's config) from dir's
 * safetensors into params (t->size floats; padding untouched). A missing
 * tensor, a shape that differs from the config's, an unsupported dtype or a
 * damaged file is an error naming the file and the tensor. */
int hf_load(const char *dir, const ParamTable *t, float *params, Err *e);

/* Write the model as a Hugging Face directory (see above). bos_id, eos_id
 * >= 0 are written as bos_token_id and eos_token_id, else null. */
int hf_save(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
            int bos_id, int eos_id, int force, Err *e);

struct Tokenizer;

/* What a HF export carries besides the weights. */
typedef struct HfTok {
    const struct Tokenizer *tok; /* NULL: no tokenizer files */
    const char *path;            /* its file (copied for tokenizer.json / SentencePiece) */
    const char *chat_template;   /* Jinja text, or NULL */
} HfTok;

/* hf_save with the tokenizer files above (bos/eos from tk->tok). */
int hf_save_tok(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
                const HfTok *tk, int force, Err *e);

/* The tokenizer file of a HF directory into out: dir/tokenizer.json, else
 * dir/tokenizer.model; 0 if it has one, -1 if neither exists. */
int hf_tokenizer(const char *dir, char *out, size_t n);

#endif
