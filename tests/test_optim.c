/*
 * test_optim.c: the schedule and AdamW against values worked out by hand
 * (and re-checked with a few lines of Python's math module, not with this
 * code), clipping, gradient accumulation and bad settings.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/llama.h"
#include "../optim/adamw.h"
#include "../optim/sched.h"
#include "test.h"
#include "tests.h"

void optim_sched_values(void) {
    Sched s;
    LC_ASSERT(sched_init(&s, 1.0, 4, 14, 0.1, 1.0, NULL) == 0);
    /* warmup: (step + 1) / 4 */
    EXPECT_NEAR(sched_lr(&s, 0), 0.25, 1e-12);
    EXPECT_NEAR(sched_lr(&s, 2), 0.75, 1e-12);
    EXPECT_NEAR(sched_lr(&s, 3), 1.0, 1e-12);
    /* cosine over 10 steps from 1.0 to 0.1: p = 0, 0.3, 0.5, 1 */
    EXPECT_NEAR(sched_lr(&s, 4), 1.0, 1e-12);
    EXPECT_NEAR(sched_lr(&s, 7), 0.8145033635316129, 1e-12); /* 0.1 + 0.45 (1 + cos 0.3 pi) */
    EXPECT_NEAR(sched_lr(&s, 9), 0.55, 1e-12);
    EXPECT_NEAR(sched_lr(&s, 14), 0.1, 1e-12);
    EXPECT_NEAR(sched_lr(&s, 100), 0.1, 1e-12); /* stays at the floor */
    /* no warmup at all */
    LC_ASSERT(sched_init(&s, 2.0, 0, 3, 0.1, 1.0, NULL) == 0);
    EXPECT_NEAR(sched_lr(&s, 0), 2.0, 1e-12);
}

void optim_sched_cap(void) {
    Sched s;
    LC_ASSERT(sched_init(&s, 3e-4, 2000, 1000, 0.1, SCHED_MAX_WARMUP_FRAC, NULL) == 0);
    EXPECT(s.warmup == 100, "2000-step warmup in a 1000-step run capped to 100, got %ld", s.warmup);
    LC_ASSERT(sched_init(&s, 3e-4, 2000, 100000, 0.1, SCHED_MAX_WARMUP_FRAC, NULL) == 0);
    EXPECT(s.warmup == 2000, "long runs keep the 2000 steps, got %ld", s.warmup);
}

/* A table with one 2-D tensor (decayed) and one 1-D tensor (not decayed). */
static void small_table(ParamTable *t) {
    memset(t, 0, sizeof *t);
    t->n = 2;
    t->p = xcalloc(2, sizeof(ParamInfo));
    t->p[0] = (ParamInfo){"w", 2, {1, 1}, 1, 0, 1, PG_ATTN, 0, 0, 0, 0};
    t->p[1] = (ParamInfo){"g", 1, {1, 1}, 1, PARAMS_ALIGN, 0, PG_NORM, 0, 0, 0, 0};
    t->size = 2 * PARAMS_ALIGN;
    t->numel = 2;
}

void optim_adamw_values(void) {
    ParamTable t;
    small_table(&t);
    AdamW a;
    AdamWConfig c = {0.9f, 0.95f, 1e-5f, 0.1f, 0.0f, 0};
    LC_ASSERT(adamw_init(&a, &c, &t, &ops_cpu, NULL, NULL) == 0);
    float *p = xcalloc(t.size, sizeof(float)), *g = xcalloc(t.size, sizeof(float));
    p[0] = p[PARAMS_ALIGN] = 1.0f;
    /* lr 0.1; gradients 0.5, -0.25, 2.0. Step 1 by hand: p = 1 * (1 - 0.01)
     * - 0.1 * 0.5 / (sqrt(0.0125 / 0.05) + 1e-5) = 0.99 - 0.099998 = 0.890002 */
    const float gs[3] = {0.5f, -0.25f, 2.0f};
    const double want_w[3] = {0.8900019999600007, 0.8542657193451004, 0.7800902409337285};
    const double want_g[3] = {0.9000019999600007, 0.8731657393447004, 0.8075329181267796};
    for (int k = 0; k < 3; k++) {
        g[0] = g[PARAMS_ALIGN] = gs[k];
        adamw_step(&a, &t, p, g, adamw_grad_norm(&a, g), 0.1f);
        EXPECT_NEAR(p[0], want_w[k], 3e-7);             /* float32 of a value near 1 */
        EXPECT_NEAR(p[PARAMS_ALIGN], want_g[k], 3e-7);  /* 1-D: no weight decay */
    }
    EXPECT(a.t == 3, "step count %ld", a.t);
    adamw_free(&a);
    free(p); free(g); params_free(&t);
}

/* Clipping rescales by clip / (norm + 1e-6) above the threshold only: the
 * first moment after one step is (1 - beta1) * the gradient actually used. */
void optim_clip(void) {
    ParamTable t;
    small_table(&t);
    AdamWConfig c = {0.9f, 0.95f, 1e-5f, 0.0f, 1.0f, 0};
    AdamW a;
    float *p = xcalloc(t.size, 4), *g = xcalloc(t.size, 4);
    const float cases[2][2] = {{3.0f, 4.0f}, {0.3f, 0.4f}}; /* norms 5 (clipped) and 0.5 (not) */
    for (int k = 0; k < 2; k++) {
        LC_ASSERT(adamw_init(&a, &c, &t, &ops_cpu, NULL, NULL) == 0);
        g[0] = cases[k][0];
        g[PARAMS_ALIGN] = cases[k][1];
        double norm = adamw_grad_norm(&a, g);
        EXPECT_NEAR(norm, k ? 0.5 : 5.0, 1e-7);
        adamw_step(&a, &t, p, g, norm, 0.1f);
        double used = k ? 1.0 : 1.0 / (5.0 + 1e-6);
        EXPECT_NEAR(a.m[0], 0.1 * 3.0 * used / (k ? 10 : 1), 1e-7);
        EXPECT_NEAR(a.m[PARAMS_ALIGN], 0.1 * 4.0 * used / (k ? 10 : 1), 1e-7);
        adamw_free(&a);
    }
    free(p); free(g); params_free(&t);
}

/* Two micro-batches of 2 rows give the gradient of one batch of 4 rows when
 * the loss is normalised by the step's total target count. */
void optim_accumulation(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    int T = 12, L = cfg.n_layers;
    Llama big, small;
    Err e;
    LC_ASSERT(llama_init(&big, &cfg, &ops_cpu, NULL, 4, T, 1, &e) == 0);
    LC_ASSERT(llama_init(&small, &cfg, &ops_cpu, NULL, 2, T, 1, &e) == 0);
    params_init(&big.t, big.params, L, 5);
    memcpy(small.params, big.params, big.t.size * sizeof(float));
    Rng r;
    rng_seed(&r, 11);
    int tok[48], tgt[48];
    for (int i = 0; i < 48; i++) {
        tok[i] = (int)(rng_u64(&r) % cfg.vocab);
        tgt[i] = i % 5 == 0 ? LC_IGNORE : (int)(rng_u64(&r) % cfg.vocab); /* uneven counts per half */
    }
    long n = llama_count_targets(tgt, 48);
    llama_set_batch(&big, tok, tgt, NULL, &e);
    double lb = llama_forward(&big, 0, L, 1.0f / n);
    llama_backward(&big, 0, L);
    double ls = 0;
    for (int k = 0; k < 2; k++) {
        llama_set_batch(&small, tok + 24 * k, tgt + 24 * k, NULL, &e);
        ls += llama_forward(&small, 0, L, 1.0f / n);
        llama_backward(&small, 0, L);
    }
    EXPECT_NEAR(ls / n, lb / n, 1e-6);
    double maxd = 0, maxg = 0;
    for (size_t i = 0; i < big.t.size; i++) {
        maxd = fmax(maxd, fabs(big.grads[i] - small.grads[i]));
        maxg = fmax(maxg, fabs(big.grads[i]));
    }
    EXPECT(maxd <= 1e-5 * maxg, "accumulated gradients differ by %g (max %g)", maxd, maxg);
    llama_free(&big);
    llama_free(&small);
}

void optim_errors(void) {
    Sched s;
    Err e;
    EXPECT(sched_init(&s, -1e-3, 0, 10, 0.1, 0.1, &e) < 0 && strstr(e.msg, "--lr"), "negative lr: %s", e.msg);
    EXPECT(sched_init(&s, 1e-3, 0, 0, 0.1, 0.1, &e) < 0 && strstr(e.msg, "--steps"), "zero steps: %s", e.msg);
    EXPECT(sched_init(&s, 1e-3, -1, 10, 0.1, 0.1, &e) < 0 && strstr(e.msg, "--warmup"), "negative warmup: %s", e.msg);
    ParamTable t;
    small_table(&t);
    AdamW a;
    AdamWConfig c = ADAMW_DEFAULTS;
    c.beta2 = 1.0f;
    EXPECT(adamw_init(&a, &c, &t, &ops_cpu, NULL, &e) < 0 && strstr(e.msg, "--beta2"), "beta2 = 1: %s", e.msg);
    c = (AdamWConfig)ADAMW_DEFAULTS;
    c.eps = 0;
    EXPECT(adamw_init(&a, &c, &t, &ops_cpu, NULL, &e) < 0 && strstr(e.msg, "--eps"), "eps = 0: %s", e.msg);
    params_free(&t);
}
