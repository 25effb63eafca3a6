/*
 * adamw.c: the optimizer step, one fused pass per tensor through the op
 * table (ops->adamw), so the CPU and a GPU backend share this file.
 */
#include "adamw.h"

#include <math.h>
#include <string.h>

int adamw_init(AdamW *a, const AdamWConfig *cfg, const ParamTable *t, const Ops *ops, void *ctx,
               Err *e) {
    return adamw_init_n(a, cfg, t->size, ops, ctx, e);
}

int adamw_init_n(AdamW *a, const AdamWConfig *cfg, size_t n, const Ops *ops, void *ctx, Err *e) {
    memset(a, 0, sizeof *a);
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1)) return err_set(e, "--beta1: must be in [0, 1), got %g", cfg->beta1);
    if (!(cfg->beta2 >= 0 && cfg->beta2 < 1)) return err_set(e, "--beta2: must be in [0, 1), got %g", cfg->beta2);
    if (!(cfg->eps > 0)) return err_set(e, "--eps: must be positive, got %g", cfg->eps);
    if (!(cfg->weight_decay >= 0)) return err_set(e, "--weight-decay: must be >= 0, got %g", cfg->weight_decay);
    if (!(cfg->clip >= 0)) return err_set(e, "--clip: must be >= 0, got %g", cfg->clip);
    a->cfg = *cfg;
    a->ops = ops;
    a->ctx = ctx;
    a->size = n;
    a->m = ops->alloc(ctx, (n ? n : 1) * sizeof(float));
    a->v = ops->alloc(ctx, (n ? n : 1) * sizeof(float));
    return 0;
}

void adamw_free(AdamW *a) {
    if (a->ops) {
        a->ops->free(a->ctx, a->m);
        a->ops->free(a->ctx, a->v);
    }
    memset(a, 0, sizeof *a);
}

double adamw_grad_norm(const AdamW *a, const float *grads) {
    return sqrt(a->ops->sumsq(a->ctx, grads, a->size));
}

void adamw_step(AdamW *a, const ParamTable *t, float *params, const float *grads, double norm,
                float lr) {
    float gscale = 1.0f;
    if (a->cfg.clip > 0 && norm > a->cfg.clip) gscale = (float)(a->cfg.clip / (norm + 1e-6));
    a->t++;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        float wd = (p->decay || a->cfg.decay_all) ? a->cfg.weight_decay : 0.0f;
        a->ops->adamw(a->ctx, params + p->offset, grads + p->offset, a->m + p->offset,
                      a->v + p->offset, p->numel, lr, a->cfg.beta1, a->cfg.beta2, a->cfg.eps, wd,
                      (int)a->t, gscale);
    }
}
