/*
 * lora.h: LoRA adapters (Hu et al. 2021) as PEFT defines them, on any subset
 * of the seven linear modules of a Llama decoder layer:
 *
 *   y = W x + s * B (A (dropout(x))),   A (r, Din), B (Dout, r)
 *   s = alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023)
 *
 * The adapters are a second, small parameter buffer with its own ParamTable
 * (names as PEFT's without the "base_model.model." prefix and without the
 * adapter name: "model.layers.3.self_attn.q_proj.lora_A.weight"), in the
 * order PEFT's state_dict lists them (layer, then module in the order of
 * the base table, A before B). Gradients and AdamW moments use the same
 * table. With adapters attached the base gets no gradient buffer, no AdamW
 * moments and no weight-gradient GEMMs: only input gradients flow through
 * it (llama_init_opts with LLAMA_GRADS_INPUT).
 *
 * Dropout (PEFT's nn.Dropout on the adapter's input, inverted: kept values
 * scaled by 1/(1-p)) draws no stored mask: element i of module m's input in
 * layer l keeps iff lora_keep(seed, l, m, i) says so, a counter-based hash
 * the CPU and CUDA backends compute identically, so the backward recomputes
 * the mask and recomputation needs nothing extra. llama_lora_seed changes the
 * seed every micro-batch; a fixed seed gives a fixed mask (gradient checks).
 */
#ifndef LLAMAC_MODEL_LORA_H
#define LLAMAC_MODEL_LORA_H

#include "config.h"
#include "params.h"

/* The seven target modules, in the base table's order (PEFT names). */
typedef enum {
    LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_NMOD
} LoraModule;

#define LORA_ALL_LINEAR ((1u << LORA_NMOD) - 1)

typedef enum { LORA_INIT_KAIMING = 0, LORA_INIT_GAUSSIAN = 1 } LoraInit;

typedef struct LoraConfig {
    int r;            /* rank, 1 <= r <= min(Din, Dout) of every target */
    float alpha;      /* lora_alpha > 0 */
    float dropout;    /* lora_dropout in [0, 1) */
    int rslora;       /* use_rslora: s = alpha / sqrt(r) */
    unsigned targets; /* bit (1 << LoraModule) per adapted module */
    /* layers_to_transform: layer l adapted iff layers[l] (all when
     * all_layers is set) */
    int all_layers;
    unsigned char layers[LC_MAX_LAYERS];
    int init;         /* LoraInit */
    /* PEFT's modules_to_save=["score"]: a classifier's (reward model's)
     * head trained whole beside the adapters, as a copy of the base's
     * score.weight kept in the adapter buffer (the last tensor of its
     * table, "score.weight"); needs c->num_labels > 0 */
    int head;
} LoraConfig;

/* PEFT's name of module m ("q_proj", ..., "down_proj"). */
const char *lora_module_name(int m);

/* (Din, Dout) of module m in config c: q (D, H*HS), k and v (D, KV*HS),
 * o (H*HS, D), gate and up (D, F), down (F, D). */
void lora_module_dims(const LlamaConfig *c, int m, int *din, int *dout);

/* Whether module m of layer l carries an adapter under lc. */
static inline int lora_adapted(const LoraConfig *lc, int l, int m) {
    return (lc->targets >> m & 1u) && (lc->all_layers || lc->layers[l]);
}

/* The defaults a PEFT LoraConfig has (r 8, alpha 8, dropout 0, no rsLoRA,
 * all layers, Kaiming init) with the given targets. */
void lora_config_default(LoraConfig *lc, unsigned targets);

/* Parse target_modules as PEFT's list: "q_proj,v_proj", "all-linear" (every
 * linear but the LM head), separated by commas; the short forms q, k, v, o,
 * gate, up, down are accepted too. Unknown module -> -1 with
 * "--lora-targets: unknown module 'x' (known: q_proj ... down_proj,
 * all-linear)". */
int lora_parse_targets(const char *s, unsigned *targets, Err *e);

/* Parse layers_to_transform: "0,1,5" or "0-3,7" (clears all_layers). A
 * layer outside [0, n_layers) or a malformed list -> -1 with
 * "--lora-layers: ...". */
int lora_parse_layers(const char *s, LoraConfig *lc, int n_layers, Err *e);

/* Check lc against the base config: r within every target's dimensions,
 * alpha > 0, dropout in [0, 1), targets not empty, layers in range. Each
 * failure names the flag. Returns 0 or -1 with e. */
int lora_validate(const LoraConfig *lc, const LlamaConfig *c, Err *e);

/* The config of the command-line flags --lora-r, --lora-alpha (0: alpha = r,
 * i.e. s = 1), --lora-dropout,
 * --lora-targets (NULL: q,k,v,o), --lora-layers (NULL: all), --lora-rslora,
 * validated against c. Returns 0 or -1 with the failing flag's message. */
int lora_config_from_flags(LoraConfig *lc, long r, double alpha, double dropout, const char *targets,
                           const char *layers, int rslora, const LlamaConfig *c, Err *e);

/* Scale s of lc (alpha / r, or alpha / sqrt(r) with rsLoRA). */
float lora_scale(const LoraConfig *lc);

/* One adapted linear: pointers into the adapter buffer (or its gradients). */
typedef struct LoraPair {
    float *A; /* (r, Din) lora_A.weight */
    float *B; /* (Dout, r) lora_B.weight */
} LoraPair;

/* Typed views of an adapter buffer; NULL pairs for modules not adapted. */
typedef struct LoraWeights {
    LoraPair layer[LC_MAX_LAYERS][LORA_NMOD];
    float *head; /* (num_labels, D) the trained score head (lc->head), else NULL */
} LoraWeights;

/* Build the adapter table for (lc, c): one A and one B per adapted module of
 * each adapted layer, then the score head when lc->head. decay is 1 for both (PEFT applies AdamW's weight decay
 * to every trainable parameter). Returns 0 or -1 (lora_validate's errors). */
int lora_build(const LoraConfig *lc, const LlamaConfig *c, ParamTable *t, Err *e);

/* Point w into base (t->size floats), as params_point does. */
void lora_point(const LoraConfig *lc, const LlamaConfig *c, const ParamTable *t, float *base,
                LoraWeights *w);

/* Initialise host adapter weights as PEFT does (the score head, a copy of
 * the base's, is left to the caller): B = 0; A Kaiming-uniform
 * with a = sqrt(5) (bound 1/sqrt(Din), nn.Linear's default) or, with
 * LORA_INIT_GAUSSIAN, normal(0, 1/r). Deterministic in seed (llamac's RNG:
 * the same distribution as PEFT's, not torch's stream; tests that compare
 * with PEFT load the same A into both). */
void lora_init_weights(const LoraConfig *lc, const ParamTable *t, float *base, uint64_t seed);

/* Merge into (sign = +1) or out of (sign = -1) host base weights laid out by
 * bt: W += sign * s * B A for every adapter, computed in float32 (double
 * accumulation of each dot product). With lc->head, merging (+1) also
 * copies the trained head over the base's score.weight (out of: left). */
void lora_merge(const LoraConfig *lc, const LlamaConfig *c, const ParamTable *bt, float *base_params,
                const ParamTable *lt, const float *lora_params, int sign);

#ifdef __CUDACC__
#define LORA_HD __host__ __device__ /* the CUDA kernels draw the same mask */
#else
#define LORA_HD
#endif

/* Dropout keep decision for element i of module m's input in layer l:
 * 1 keeps. Counter-based (splitmix64 of seed, l, m, i), no state. */
static inline LORA_HD int lora_keep(uint64_t seed, int l, int m, uint64_t i, float p) {
    uint64_t z = seed ^ ((uint64_t)l << 56) ^ ((uint64_t)m << 48) ^ i;
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

#endif
