/*
 * params.h: the parameter table. One contiguous float buffer holds every
 * parameter; this table names each tensor (Hugging Face name), its shape and
 * its offset. Gradients, AdamW moments and device copies use the same table,
 * so the optimizer, the all-reduce and checkpoints make one pass over one
 * buffer (llm.c's malloc_and_point_parameters). Offsets are rounded up to 64
 * floats (256 B) for SIMD and cuBLASLt; padding stays zero.
 */
#ifndef LLAMAC_MODEL_PARAMS_H
#define LLAMAC_MODEL_PARAMS_H

#include "config.h"

#define PARAMS_ALIGN 64   /* floats */
#define LC_MAX_LAYERS 128 /* Llama 3.1 405B has 126 */

typedef enum {
    PG_EMBED, PG_ATTN, PG_MLP, PG_NORM, PG_HEAD, PG_COUNT
} ParamGroup;

typedef struct ParamInfo {
    char name[64];  /* Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight */
    int ndim;       /* 1 or 2 */
    int64_t shape[2];
    size_t numel;
    size_t offset;  /* in floats from the start of the buffer */
    int decay;      /* weight decay applies (2-D matrices) */
    int group;      /* ParamGroup, for inspect */
    int layer;      /* decoder layer, or -1 */
    uint32_t qtype; /* held quantised (quant.h's type; a QTensor of qbytes bytes at
                     * qoffset in the model's quantised buffer, nothing in the
                     * float buffer: offset PARAMS_NONE), or 0 */
    size_t qoffset, qbytes;
} ParamInfo;

#define PARAMS_NONE ((size_t)-1) /* offset of a tensor the float buffer does not hold */

typedef struct ParamTable {
    ParamInfo *p;   /* n entries, Hugging Face order */
    int n;
    size_t size;    /* buffer length in floats, padding included */
    size_t numel;   /* parameter count, padding excluded */
    size_t qsize;   /* bytes of the tensors held quantised (params_set_quant) */
} ParamTable;

typedef struct LayerWeights {
    float *wq;  /* (H*HS, D) */
    float *wk;  /* (KV*HS, D) */
    float *wv;  /* (KV*HS, D) */
    float *wo;  /* (D, H*HS) */
    float *wg;  /* (F, D) gate_proj */
    float *wu;  /* (F, D) up_proj */
    float *wd;  /* (D, F) down_proj */
    float *ln1; /* (D) input_layernorm */
    float *ln2; /* (D) post_attention_layernorm */
} LayerWeights;

typedef struct LlamaWeights {
    float *embed;   /* (V, D) */
    LayerWeights layer[LC_MAX_LAYERS];
    float *norm_f;  /* (D) */
    float *lm_head; /* (V, D); aliases embed when tied; a classifier's
                     * score.weight (num_labels, D) */
} LlamaWeights;

/* Build the table from the config alone (no parameter memory). Returns 0 or
 * -1 if the config is invalid. Free with params_free. */
int params_build(const LlamaConfig *c, ParamTable *t, Err *e);
void params_free(ParamTable *t);

/* Append one tensor to t at the next aligned offset (params_build's step,
 * also used by the LoRA table); *cap is t's capacity, 0 for a new table.
 * decay is set for 2-D tensors. */
void params_add(ParamTable *t, int *cap, const char *name, int ndim, int64_t d0, int64_t d1,
                int group, int layer);

/* Point w's fields into base (a buffer of t->size elements of elem_size
 * bytes: 4 for float32, 2 for a bf16 copy). Tied heads alias the embedding.
 * A tensor held quantised gets NULL.
 * The same call points parameters, gradients and moments. */
void params_point(const LlamaConfig *c, const ParamTable *t, void *base, size_t elem_size,
                  LlamaWeights *w);

/* Hold tensor i quantised as qtypes[i] (quant.h; 0: float32) for every i
 * of t->n: those leave the float buffer (offset PARAMS_NONE, the others
 * packed again in order), and get byte ranges (qoffset, qbytes, each
 * 64-aligned) of a quantised buffer of t->qsize bytes. A type that cannot
 * hold the tensor (not keepable, a 1-D tensor, a row length that is not a
 * whole number of blocks) is a bug: the caller chose the types. */
void params_set_quant(ParamTable *t, const uint32_t *qtypes);

/* 1 if any tensor of t is held quantised. */
static inline int params_has_quant(const ParamTable *t) { return t->qsize > 0; }

/* Index of the tensor called name, or -1. */
int params_find(const ParamTable *t, const char *name);

/* Initialise parameters as llama2.c/GPT-2 do: normal(0, 0.02) for matrices,
 * with the residual projections (o_proj, down_proj) scaled by 1/sqrt(2L),
 * ones for norm gains. Deterministic in seed. */
void params_init(const ParamTable *t, float *base, int n_layers, uint64_t seed);

#endif
