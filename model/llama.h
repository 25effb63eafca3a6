/*
 * llama.h: the Llama decoder, forward and hand-written backward, written once
 * against the Ops table (ops.h). Everything a step needs is allocated by
 * llama_init from (B, T): parameters, optionally gradients, the activation
 * arena and scratch. Forward and backward run over a range of layers
 * [l0, l1) so that a pipeline stage can run its slice: l0 == 0 includes the
 * embedding, l1 == L the final norm and the fused LM head + loss.
 */
#ifndef LLAMAC_MODEL_LLAMA_H
#define LLAMAC_MODEL_LLAMA_H

#include "config.h"
#include "lora.h"
#include "ops.h"
#include "params.h"

/* What the backward needs of one decoder layer; pointers into the arena. */
typedef struct LayerActs {
    float *x;     /* (N, D) layer input (residual stream) */
    float *xn1;   /* (N, D) input_layernorm(x) */
    float *rstd1; /* (N) */
    float *q;     /* (N, H*HS) after RoPE */
    float *k;     /* (N, KV*HS) after RoPE */
    float *v;     /* (N, KV*HS) */
    float *att;   /* (N, H*HS) attention output before o_proj */
    float *lse;   /* (B, H, T) softmax log-sum-exp */
    float *h;     /* (N, D) x + o_proj(att) */
    float *xn2;   /* (N, D) post_attention_layernorm(h) */
    float *rstd2; /* (N) */
    float *gate;  /* (N, F) */
    float *up;    /* (N, F) */
    float *act;   /* (N, F) silu(gate) * up */
    float *lh[LORA_NMOD]; /* (N, r) LoRA h = dropout(x) A^T per adapted module, else NULL */
} LayerActs;

/* What llama_init allocates for training. */
typedef enum {
    LLAMA_GRADS_NONE = 0,  /* inference: no gradient buffers */
    LLAMA_GRADS_FULL = 1,  /* parameter gradients and activation gradients */
    LLAMA_GRADS_INPUT = 2, /* frozen base: activation gradients only, no parameter-gradient
                            * buffer and no weight-gradient GEMMs (LoRA) */
} LlamaGrads;

typedef struct LlamaOpts {
    int grads;              /* LlamaGrads */
    const LoraConfig *lora; /* adapters to attach (copied), or NULL */
    int recompute;          /* keep only each layer's input x in the forward and
                             * recompute the layer inside the backward (one shared
                             * set of per-layer activations) */
    const uint32_t *qtypes; /* a quantised base (DESIGN.md "Quantised weights"):
                             * qtypes[i] the type table entry i is held in (quant.h;
                             * 0: float32), for every entry of params_build's
                             * table; NULL: all float32. Frozen: needs grads
                             * NONE or INPUT. */
    int forward_only;       /* whole-sequence forwards only (no backward, no
                             * llama_decode; grads NONE): recompute's shared
                             * set, and the layer inputs x in two buffers used
                             * in turn, so activations are two layers' worth */
} LlamaOpts;

typedef struct Llama {
    LlamaConfig c;
    ParamTable t;
    const Ops *ops;
    void *ctx;         /* backend context */
    int B, T;
    int grads_mode;    /* LlamaGrads */
    int recompute;
    int forward_only;  /* LlamaOpts.forward_only */
    float *params;     /* t.size floats */
    float *grads;      /* t.size floats, or NULL (inference, frozen base) */
    LlamaWeights w, g; /* typed views of params and grads (g all NULL without grads;
                        * w's fields NULL for tensors held quantised) */
    /* a quantised base (LlamaOpts.qtypes): the tensors t marks with qtype
     * live in qdata (t.qsize bytes, backend memory) as the QTensors qt[i]
     * (t.n, type 0 where float); typed views NULL where float */
    QTensor *qt;
    uint8_t *qdata;
    float *qwork;      /* the q ops' tile buffer (ops->qwork_floats) */
    const QTensor *qembed, *qhead, *ql[LC_MAX_LAYERS][LORA_NMOD];
    /* LoRA adapters (lora.h), when attached: a second parameter buffer with
     * its own table lt; gradients when grads_mode != NONE */
    int lora;          /* adapters attached */
    int lora_enabled;  /* apply them (1 after init; DPO's reference pass sets 0) */
    int lora_train;    /* dropout on (1 after init with gradients; 0 for evaluation) */
    uint64_t lora_seed; /* dropout mask of this micro-batch (llama_lora_seed) */
    float head_temp;   /* llama_forward_rows and llama_head_backward: the logits
                        * divided by it (RL's log-probabilities at the sampling
                        * temperature); 0 or 1: none */
    LoraConfig lc;
    float lora_s;      /* lora_scale(&lc) */
    ParamTable lt;
    float *lora_params, *lora_grads; /* lt.size floats each (grads NULL without grads) */
    LoraWeights la, lg;
    float *lora_work;  /* scratch of the lora ops */
    /* activations: one arena */
    float *arena;
    size_t arena_floats;
    LayerActs acts[LC_MAX_LAYERS];
    float *x_out;      /* (N, D) residual after the last layer */
    float *xf;         /* (N, D) final norm output */
    float *rstdf;      /* (N) */
    float *row_loss;   /* (N) per-token loss of the last forward */
    float *logits;     /* (V) output of llama_decode */
    /* gradient buffers, reused by every layer */
    float *dres;       /* (N, D) gradient of the residual stream */
    float *dxn;        /* (N, D) */
    float *datt;       /* (N, H*HS) */
    float *dq, *dk, *dv;
    float *dgate, *dup, *dact; /* (N, F) */
    float *scratch;
    size_t scratch_floats;
    float *rope_cos, *rope_sin; /* (T, HS/2) */
    int *tokens, *targets, *pos; /* (B, T) on the backend */
    int *spans;                  /* (B, T, 3) on the backend: attn_spans of each row of pos */
    /* Called by llama_backward once layer l's parameter gradients (full or
     * LoRA) are complete for this backward, l = l1-1 down to l0, and with
     * l = -1 after the embedding's (l0 == 0). The data-parallel trainer
     * starts each layer's gradient all-reduce from it. NULL: none. */
    void (*bwd_hook)(void *ud, int l);
    void *bwd_ud;
} Llama;

/* Build the model for batches of (B, T); parameters zeroed (use
 * params_init or a load). with_grads allocates gradients and activation
 * gradient buffers (LLAMA_GRADS_FULL). Returns 0, or -1 with e set for a bad
 * config or shape. */
int llama_init(Llama *m, const LlamaConfig *c, const Ops *ops, void *ctx, int B, int T,
               int with_grads, Err *e);
/* The same with options (NULL: inference, no adapters, no recomputation).
 * Adapter weights start at zero: llama_lora_init or an upload sets them. A
 * bad LoRA config fails with lora_validate's message. */
int llama_init_opts(Llama *m, const LlamaConfig *c, const Ops *ops, void *ctx, int B, int T,
                    const LlamaOpts *o, Err *e);
void llama_free(Llama *m);

/* Point m->qt (and the typed views) at m->qdata: after llama_init and
 * whenever qdata's bytes change place (never; kept for symmetry with the
 * float views). Called by llama_init_opts. */
void llama_quant_point(Llama *m);

/* Initialise the adapters as PEFT does (lora_init_weights on the host, then
 * uploaded). */
void llama_lora_init(Llama *m, uint64_t seed);

/* The dropout mask seed of the next forward/backward: set it once per
 * micro-batch (a fixed seed gives a fixed mask). */
static inline void llama_lora_seed(Llama *m, uint64_t seed) { m->lora_seed = seed; }

/* Bytes llama_init would allocate for these shapes (no allocation), split
 * into base parameters, base gradients, activations (arena + scratch, with
 * the activation gradients) and the adapters' parameters and gradients. */
typedef struct LlamaMem {
    size_t params, grads, acts, lora, lora_grads; /* params: float and quantised base weights */
} LlamaMem;
LlamaMem llama_memory(const LlamaConfig *c, const Ops *ops, int B, int T, int with_grads);
LlamaMem llama_memory_opts(const LlamaConfig *c, const Ops *ops, int B, int T, const LlamaOpts *o);

/* Bytes of a whole training step with AdamW: m's buffers plus two float32
 * moments for every float that has a gradient (the adapters alone with a
 * frozen base). */
static inline size_t llama_mem_step_total(const LlamaMem *m) {
    return m->params + m->grads + m->acts + m->lora + m->lora_grads + 2 * (m->grads + m->lora_grads);
}

/* Copy a batch in (host arrays of B*T). targets may hold LC_IGNORE. pos may
 * be NULL for positions 0..T-1 (no documents). Checks token and target
 * ranges and pos consistency; returns 0 or -1 with e. */
int llama_set_batch(Llama *m, const int *tokens, const int *targets, const int *pos, Err *e);

/* Positions from document boundaries: pos[b, t] restarts at 0 after every
 * token equal to sep (the token after an end-of-text starts a new document).
 * sep < 0 gives 0..T-1. Host arrays. */
void llama_doc_pos(const int *tokens, int B, int T, int sep, int *pos);

/* Forward over layers [l0, l1). Returns the summed loss over target tokens
 * when l1 == L (0 otherwise). With grad_scale > 0 (and gradients allocated)
 * the fused LM head also writes the head's gradients, scaled by grad_scale
 * (1 / the number of target tokens in the whole optimizer step), and leaves
 * the gradient of the last residual in dres for llama_backward. For l0 > 0
 * the caller puts the stage input in acts[l0].x. */
double llama_forward(Llama *m, int l0, int l1, float grad_scale);

/* DPO's forward: the whole model like llama_forward(m, 0, L, 0), but the
 * head through lmhead_rows: row_loss gets each row's -log p(target) (0
 * where ignored; p = softmax(logits / m->head_temp) when that is set) and row_mean (backend memory, N floats; may be NULL) each
 * trained row's mean logit. Returns the summed loss. No gradient yet. */
double llama_forward_rows(Llama *m, float *row_mean);
/* The same from layer l0 on (a pipeline's last stage; l0 > 0: the stage
 * input in acts[l0].x). */
double llama_forward_rows_from(Llama *m, int l0, float *row_mean);

/* After llama_forward_rows: the head's backward with a weight per row,
 * d loss / d logits[n] = row_scale[n] * (softmax - onehot(target)) (row_scale:
 * backend memory, N floats), accumulating the head's gradients and leaving
 * the gradient of the last residual in dres for llama_backward. */
void llama_head_backward(Llama *m, const float *row_scale);

/* Layers [l0, L) (l0 > 0: the stage input in acts[l0].x; l0 == 0: from
 * the embedding) and the final norm, leaving the normed hidden state in
 * m->xf (N, D) and no head run: for a caller's own head (distillation's
 * lmhead_kd, the teacher's inference). No gradient yet. */
void llama_forward_hidden(Llama *m, int l0);

/* After llama_forward_hidden and a head that wrote d loss / d xf into
 * m->dxn (N, D, =): the final norm's backward, accumulating its gain's
 * gradient (FULL) and leaving the gradient of the last residual in dres
 * for llama_backward. */
void llama_hidden_backward(Llama *m);

/* A classifier's forward (c.num_labels > 0, e.g. a reward model): layers
 * [l0, L) (l0 > 0: the stage input in acts[l0].x), the final norm, and
 * score (backend memory, (N, num_labels), =) = the score head at every
 * row; the caller reads the rows it wants (a sequence's last non-pad
 * token). The head is the adapters' trained copy when they carry one and
 * are on. No gradient yet. */
void llama_forward_score(Llama *m, int l0, float *score);

/* After llama_forward_score: the head's backward from dscore (backend
 * memory, (N, num_labels), d loss / d score, 0 on rows not read),
 * accumulating the head's (+=) and the final norm's gradients, and leaving
 * the gradient of the last residual in dres for llama_backward. */
void llama_score_backward(Llama *m, const float *dscore);

/* Backward over layers [l1 - 1 .. l0], from dres (the gradient at the output
 * of layer l1 - 1), accumulating into m->grads (FULL) and m->lora_grads;
 * when l0 == 0 it ends with the embedding gradient, otherwise dres holds the
 * gradient of acts[l0].x. With recompute each layer's forward runs again
 * first, from acts[l].x: the gradients are bit-identical to without. */
void llama_backward(Llama *m, int l0, int l1);

/* Generation with a KV cache (batch row 0): run `token` at position pos
 * through the model and leave its next-token logits in m->logits (V, backend
 * memory). The cache is the k and v activations of earlier positions: call
 * with pos = 0, 1, 2, ... in order (a new sequence restarts at pos 0).
 * Requires pos < T and a model built without recompute (the cache needs every
 * layer's k, v). Adapters apply when enabled, without dropout. */
void llama_decode(Llama *m, int token, int pos);

/* The KV cache of positions 0..n-1 from one batched forward over
 * tokens[0..n) (B = 1, no recomputation): what n calls of llama_decode
 * would leave in the cache, at GEMM speed. Follow with llama_decode of the
 * next token at position n. */
void llama_prefill(Llama *m, const int *tokens, int n);

/* Pipelining (train/loop/pipeline.c): a stage of layers [l0, l1) keeps one set
 * of activations per micro-batch in flight. llama_stage_floats is the size
 * of one set (every activation of those layers the backward reads, with
 * recompute only their inputs, and the stage's output acts[l1].x when
 * l1 < L); llama_stage_bind points the model's activations of the stage at
 * such a set in mem (backend memory), where the next forward writes and
 * the next backward reads. */
size_t llama_stage_floats(const Llama *m, int l0, int l1);
void llama_stage_bind(Llama *m, int l0, int l1, float *mem);

/* The RoPE tables of positions 0..T-1 (T x head_size/2 floats each, backend
 * memory) for rope_fwd. */
void llama_rope_upload(const LlamaConfig *c, const Ops *ops, void *ctx, int T, float *cos_t, float *sin_t);

/* Number of targets != LC_IGNORE in a host array of n. */
long llama_count_targets(const int *targets, size_t n);

/* Training FLOPs per token: 6*N + 12*L*H*HS*T (DESIGN.md), N counting every
 * parameter except the embedding lookup but including the LM head. */
double llama_flops_per_token(const LlamaConfig *c, int T);

/* The same for how m trains: with adapters on a frozen base the base does
 * forward + input gradient (4N of the 6N) and the adapters all 6. */
double llama_train_flops_per_token(const Llama *m);

#endif
