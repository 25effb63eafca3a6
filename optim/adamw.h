/*
 * adamw.h: AdamW with decoupled weight decay (Loshchilov & Hutter 2019) over
 * the flat parameter buffer, with global gradient-norm clipping. Moments use
 * the parameter table's layout; decay applies to tensors whose table entry
 * says so (2-D matrices by default). Defaults are the Llama papers'.
 */
#ifndef LLAMAC_OPTIM_ADAMW_H
#define LLAMAC_OPTIM_ADAMW_H

#include "../model/ops.h"
#include "../model/params.h"

typedef struct AdamWConfig {
    float beta1;        /* 0.9 */
    float beta2;        /* 0.95 */
    float eps;          /* 1e-5 */
    float weight_decay; /* 0.1 */
    float clip;         /* global norm, 1.0; 0 turns clipping off */
    int decay_all;      /* 1: decay norms too (default 0: matrices only) */
} AdamWConfig;

#define ADAMW_DEFAULTS {0.9f, 0.95f, 1e-5f, 0.1f, 1.0f, 0}

typedef struct AdamW {
    AdamWConfig cfg;
    const Ops *ops;
    void *ctx;
    float *m, *v;       /* moments, table layout, backend memory */
    size_t size;        /* floats */
    long t;             /* optimizer steps taken */
} AdamW;

/* Validate cfg (betas in [0, 1), eps > 0, decay >= 0, clip >= 0) and
 * allocate zeroed moments for table t. Returns 0 or -1. */
int adamw_init(AdamW *a, const AdamWConfig *cfg, const ParamTable *t, const Ops *ops, void *ctx,
               Err *e);
/* The same with moments of n floats (a ZeRO-1 shard of the buffer: only
 * that much is allocated, so the optimizer memory per rank falls). */
int adamw_init_n(AdamW *a, const AdamWConfig *cfg, size_t n, const Ops *ops, void *ctx, Err *e);
void adamw_free(AdamW *a);

/* Global L2 norm of the gradient buffer (padding is zero), in double. */
double adamw_grad_norm(const AdamW *a, const float *grads);

/* One step at learning rate lr: clip (scale = clip / (norm + 1e-6) when the
 * norm exceeds clip, as torch.nn.utils.clip_grad_norm_), then AdamW per
 * tensor. norm is the value from adamw_grad_norm. Gradients are read, not
 * changed. */
void adamw_step(AdamW *a, const ParamTable *t, float *params, const float *grads, double norm,
                float lr);

#endif
