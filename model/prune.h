/*
 * prune.h: structured pruning of a Llama by activation importance, forward
 * passes only (NVIDIA Minitron, arXiv 2407.14679; the statistics as
 * Model-Optimizer's mcore_minitron computes them). Four kinds of thing are
 * scored over calibration batches and the least important removed, the same
 * number in every layer, so the result is a plain dense Llama:
 *
 *   layers: Block Influence 1 - cos(h_in, h_out) averaged over tokens, and the
 *     loss increase when the layer is skipped;
 *   query heads: on o_proj's input, per channel a = mean over the sequence of
 *     |x|, summed as a^2 over batch rows, square-rooted; a head's score is the
 *     L2 norm of its channels' scores; a KV group's the L2 norm of its heads';
 *   MLP channels: the same statistic on down_proj's input silu(gate) * up;
 *   embedding channels: the same statistic on the output of every
 *     input_layernorm and post_attention_layernorm, the per-norm scores summed
 *     over all of them: one ranking for the embedding, every norm, every
 *     projection's D side and the LM head.
 *
 * Collection reads the activations llama_forward leaves in the model's arena
 * (no hooks in the forward); the model must be on the CPU backend, without
 * recomputation. Kept indices stay in their original order.
 */
#ifndef LLAMAC_MODEL_PRUNE_H
#define LLAMAC_MODEL_PRUNE_H

#include "llama.h"

/* Sums over calibration batches (prune_collect), then scores (prune_finish). */
typedef struct PruneStats {
    LlamaConfig c;
    long batches;
    long tokens;       /* targets counted by the losses */
    double loss_sum;   /* summed loss of the whole model */
    double *skip_sum;  /* (L) summed loss with layer l skipped */
    long skip_batches; /* batches that measured the skip loss (0: --no-skip-loss) */
    double *bi_sum;    /* (L) sum over tokens of 1 - cos(h_in, h_out) */
    long bi_rows;      /* tokens in bi_sum */
    double *att_acc;   /* (L, H*HS) sum over batch rows of (mean_t |o_proj input|)^2 */
    double *ffn_acc;   /* (L, F) the same on down_proj's input */
    double *emb_acc;   /* (L, 2, D) the same on input_layernorm's, post_attention_layernorm's output */
    /* scores, filled by prune_finish */
    double loss;       /* mean loss per target token */
    double *layer_bi;  /* (L) mean Block Influence */
    double *layer_dloss; /* (L) mean loss with the layer skipped minus loss; NAN when not measured */
    double *head;      /* (L, H) */
    double *group;     /* (L, KV) */
    double *ffn;       /* (L, F) */
    double *emb;       /* (D) */
} PruneStats;

/* Zeroed sums for c. Free with prune_stats_free (tolerates a zeroed struct). */
void prune_stats_init(PruneStats *s, const LlamaConfig *c);
void prune_stats_free(PruneStats *s);

/* One calibration batch: m (CPU backend, no recomputation, config s->c) holds
 * it (llama_set_batch with targets); runs the whole forward, adds its loss and
 * activation statistics to s, then (skip_loss) one partial forward per layer
 * with that layer skipped (the residual passed through unchanged), last layer
 * first so that each reuses the untouched prefix. Returns the batch's summed
 * loss. m's activations are overwritten. */
double prune_collect(PruneStats *s, Llama *m, long ntargets, int skip_loss);

/* Scores from the sums (the fields under "scores"). */
void prune_finish(PruneStats *s);

/* The target shape: spec is a preset name (config.h's table) or
 * "layers=N,heads=H,kv_heads=K,ffn=F,dim=D" (any subset; the rest as in
 * from). to gets from's config with the new sizes (and head_dim set when
 * D/H no longer gives the head size). Errors, as "--target: ...": bad syntax,
 * an unknown key or preset, a size larger than from's or below 1, heads not a
 * multiple of kv_heads, more query heads per group than from has, a preset
 * of another vocabulary, head size or family. */
int prune_target(const LlamaConfig *from, const char *spec, LlamaConfig *to, Err *e);

typedef enum { PRUNE_LAYER_BI = 0, PRUNE_LAYER_LOSS = 1 } PruneLayerMetric;

/* What is kept, indices into the teacher's, ascending. */
typedef struct PrunePlan {
    LlamaConfig from, to;
    int layers[LC_MAX_LAYERS]; /* (to.L) */
    int *heads;  /* (to.L, to.H) kept query heads of each kept layer */
    int *groups; /* (to.L, to.KV) kept KV groups */
    int *ffn;    /* (to.L, to.F) */
    int *dim;    /* (to.D) */
} PrunePlan;

/* The most important of each kind under s's scores, to reach to (from
 * prune_target on s->c): layers by metric; per kept layer the KV groups by
 * group score, then in each kept group its best to.H/to.KV query heads; the
 * MLP channels per layer; the embedding channels once. Ties keep the lower
 * index. Free with prune_plan_free. */
void prune_plan(const PruneStats *s, const LlamaConfig *to, int metric, PrunePlan *p);
void prune_plan_free(PrunePlan *p);

/* The pruned weights: src laid out by st (params_build(&p->from)) into dst
 * laid out by dt (params_build(&p->to)); every kept row and column copied,
 * nothing else written (dst's padding stays as it was). */
void prune_apply(const PrunePlan *p, const ParamTable *st, const float *src, const ParamTable *dt, float *dst);

/* Non-embedding parameters of c (params_build's count less the embedding;
 * an untied LM head counts), for the parameter budget printed with presets. */
size_t prune_non_embedding(const LlamaConfig *c);

#endif
