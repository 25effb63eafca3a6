/*
 * config.h: the shape of a Llama model and the preset table.
 *
 * Presets: `tiny` for tests; the llama2.c TinyStories shapes `15m`, `42m`,
 * `110m` (tied embeddings as llama2.c trains them, context raised to 1024);
 * and the published shapes of Llama 1/2/3/3.1/3.2 so `inspect` can check
 * parameter counts against the papers.
 */
#ifndef LLAMAC_MODEL_CONFIG_H
#define LLAMAC_MODEL_CONFIG_H

#include "base.h"

typedef enum { ROPE_SCALING_NONE = 0, ROPE_SCALING_LLAMA3 = 1 } RopeScaling;

typedef struct LlamaConfig {
    char name[32];
    int dim;          /* D: model width */
    int n_layers;     /* L */
    int n_heads;      /* H: query heads */
    int n_kv_heads;   /* KV: key/value heads, divides H (GQA) */
    int hidden;       /* F: SwiGLU hidden size */
    int vocab;        /* V */
    int max_seq;      /* context length the model is meant for */
    float norm_eps;   /* RMSNorm epsilon: 1e-6 (Llama 1) or 1e-5 */
    float rope_theta; /* 10000 (Llama 1/2) or 500000 (Llama 3) */
    int rope_scaling; /* RopeScaling */
    float rope_factor;    /* llama3 scaling: factor (8 for 3.1, 32 for 3.2) */
    float rope_low_freq;  /* low_freq_factor (1) */
    float rope_high_freq; /* high_freq_factor (4) */
    int rope_orig_ctx;    /* original_max_position_embeddings (8192) */
    int tied;         /* LM head shares the embedding matrix */
    /* A sequence classifier (transformers' LlamaForSequenceClassification,
     * a reward model with 1): the head is `score.weight` (num_labels, D),
     * never tied, and a sequence's output is read at its last token whose id
     * is not pad_id. 0: a causal LM (the head is the vocabulary's). */
    int num_labels;
    int pad_id;       /* the classifier's pad_token_id (-1: none) */
    /* HS: the head size when it is not D / H (Hugging Face's head_dim; a
     * width- or head-pruned model, llamac prune). 0: D / H. Q = H * HS need
     * not equal D: q_proj is (H*HS, D), o_proj (D, H*HS). */
    int head_dim;
} LlamaConfig;

/* Copy the preset `name` into *c. Unknown name -> -1 with the list of names. */
int config_preset(const char *name, LlamaConfig *c, Err *e);

/* Names of the presets, NULL-terminated (for --help). */
const char *const *config_preset_names(void);

/* Check a config for consistency (positive sizes, H % KV == 0, even head
 * size, ...). Returns 0 or -1 with a message naming the field. */
int config_validate(const LlamaConfig *c, Err *e);

/* HS: head_dim when set, else D / H. */
static inline int config_head_size(const LlamaConfig *c) {
    return c->head_dim > 0 ? c->head_dim : c->dim / c->n_heads;
}

/* Whether HS is D / H (then head_dim need not be written to files). */
static inline int config_head_size_default(const LlamaConfig *c) {
    return c->dim % c->n_heads == 0 && config_head_size(c) == c->dim / c->n_heads;
}

/* RoPE inverse frequencies, HS/2 floats, computed in float32 the way
 * Hugging Face's LlamaRotaryEmbedding does (including "llama3" scaling), so
 * angles match transformers to float32 rounding. */
void config_rope_inv_freq(const LlamaConfig *c, float *inv_freq);

/* Parse "key=value" pairs of the model shape (dim, n_layers, ...) into c.
 * Used by --model-args style flags and tests. Returns 0 or -1. */
int config_set(LlamaConfig *c, const char *key, const char *value, Err *e);

/* The same from one "key=value" word (the --set flag and config files). */
int config_set_kv(LlamaConfig *c, const char *kv, Err *e);

#endif
