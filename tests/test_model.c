/*
 * test_model.c: the whole model. Finite-difference checks of the loss with
 * respect to sampled coordinates of every parameter tensor (untied MHA; tied
 * GQA with documents and llama3 rope scaling), layer-range splits, document
 * positions, parameter counts of the published models, overfitting one
 * batch, and bad batches.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/llama.h"
#include "../optim/adamw.h"
#include "../optim/sched.h"
#include "gradcheck.h"
#include "test.h"
#include "tests.h"

typedef struct {
    Llama m;
    long ntgt;
} ModelCase;

static double model_loss(void *ud) {
    ModelCase *c = ud;
    return llama_forward(&c->m, 0, c->m.c.n_layers, 0) / (double)c->ntgt;
}

/* Random batch: tokens, next-token targets with ~20% ignored, positions
 * with documents when docs. */
static void random_batch(Rng *r, int B, int T, int V, int docs, int *tok, int *tgt, int *pos) {
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(r) % V);
    for (int b = 0; b < B; b++) {
        int p = 0;
        for (int t = 0; t < T; t++) {
            if (docs && t > 0 && rng_uniform(r) < 0.2f) p = 0;
            pos[b * T + t] = p++;
            tgt[b * T + t] = rng_uniform(r) < 0.2f ? LC_IGNORE : (int)(rng_u64(r) % V);
        }
    }
}

/* Parameters big enough that every path carries signal: std 0.3 matrices,
 * norm gains 1 + 0.2 N(0,1). */
static void random_params(Llama *m, Rng *r) {
    for (int i = 0; i < m->t.n; i++) {
        const ParamInfo *p = &m->t.p[i];
        float *x = m->params + p->offset;
        for (size_t j = 0; j < p->numel; j++)
            x[j] = p->ndim == 1 ? 1.0f + 0.2f * rng_normal(r) : 0.3f * rng_normal(r);
    }
}

static void whole_model_check(LlamaConfig *cfg, int B, int T, int docs, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    ModelCase c;
    Err e;
    LC_ASSERT(llama_init(&c.m, cfg, &ops_cpu, NULL, B, T, 1, &e) == 0);
    random_params(&c.m, &r);
    int *tok = xmalloc(B * T * sizeof(int)), *tgt = xmalloc(B * T * sizeof(int)), *pos = xmalloc(B * T * sizeof(int));
    random_batch(&r, B, T, cfg->vocab, docs, tok, tgt, pos);
    LC_ASSERT(llama_set_batch(&c.m, tok, tgt, pos, &e) == 0);
    c.ntgt = llama_count_targets(tgt, (size_t)B * T);
    memset(c.m.grads, 0, c.m.t.size * sizeof(float));
    double l = llama_forward(&c.m, 0, cfg->n_layers, 1.0f / c.ntgt) / c.ntgt;
    llama_backward(&c.m, 0, cfg->n_layers);
    EXPECT(isfinite(l) && l > 0, "loss %g", l);
    EXPECT_NEAR(model_loss(&c), l, 1e-6 * l); /* forward without grads gives the same loss */
    /* every tensor, 6 sampled coordinates each */
    GcOpts o = {6, 1e-2f, 2e-2, 2e-3};
    int bad = 0;
    for (int i = 0; i < c.m.t.n; i++) {
        const ParamInfo *p = &c.m.t.p[i];
        bad += gradcheck(p->name, model_loss, &c, c.m.params + p->offset, c.m.grads + p->offset,
                         p->numel, &o, &r, NULL);
    }
    EXPECT(bad == 0, "%d coordinates out of tolerance", bad);
    llama_free(&c.m);
    free(tok); free(tgt); free(pos);
}

void model_gradcheck_untied(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.dim = 24; cfg.n_layers = 2; cfg.n_heads = 4; cfg.n_kv_heads = 4; cfg.hidden = 37;
    cfg.vocab = 29; cfg.max_seq = 32; cfg.tied = 0;
    whole_model_check(&cfg, 2, 11, 0, 42);
}

void model_gradcheck_tied_gqa_docs(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.dim = 32; cfg.n_layers = 2; cfg.n_heads = 4; cfg.n_kv_heads = 2; cfg.hidden = 45;
    cfg.vocab = 31; cfg.max_seq = 32; cfg.tied = 1; cfg.rope_theta = 500000;
    cfg.rope_scaling = ROPE_SCALING_LLAMA3; cfg.rope_factor = 8; cfg.rope_low_freq = 1;
    cfg.rope_high_freq = 4; cfg.rope_orig_ctx = 24;
    whole_model_check(&cfg, 2, 13, 1, 43);
}

/* forward [0, L) == forward [0, 1) then [1, L); the same for backward */
void model_layer_ranges(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.n_layers = 3;
    int B = 2, T = 16, L = cfg.n_layers;
    Rng r;
    rng_seed(&r, 7);
    Llama a, b;
    Err e;
    LC_ASSERT(llama_init(&a, &cfg, &ops_cpu, NULL, B, T, 1, &e) == 0);
    LC_ASSERT(llama_init(&b, &cfg, &ops_cpu, NULL, B, T, 1, &e) == 0);
    params_init(&a.t, a.params, L, 9);
    memcpy(b.params, a.params, a.t.size * sizeof(float));
    int tok[32], tgt[32], pos[32];
    random_batch(&r, B, T, cfg.vocab, 1, tok, tgt, pos);
    llama_set_batch(&a, tok, tgt, pos, &e);
    llama_set_batch(&b, tok, tgt, pos, &e);
    double la = llama_forward(&a, 0, L, 0.1f);
    llama_backward(&a, 0, L);
    llama_forward(&b, 0, 1, 0.1f);
    /* a later stage receives its input in acts[l0].x */
    double lb = llama_forward(&b, 1, L, 0.1f);
    llama_backward(&b, 1, L);
    llama_backward(&b, 0, 1);
    EXPECT(la == lb, "split forward loss %.9g vs %.9g", lb, la);
    EXPECT(memcmp(a.grads, b.grads, a.t.size * sizeof(float)) == 0, "split backward gradients differ");
    llama_free(&a);
    llama_free(&b);
}

void model_doc_pos(void) {
    int tok[2 * 6] = {5, 9, 2, 7, 2, 1, 2, 3, 3, 2, 4, 4}, pos[12];
    int want[12] = {0, 1, 2, 0, 1, 0, 0, 0, 1, 2, 0, 1};
    llama_doc_pos(tok, 2, 6, 2, pos);
    for (int i = 0; i < 12; i++) EXPECT(pos[i] == want[i], "pos[%d] = %d, want %d", i, pos[i], want[i]);
    llama_doc_pos(tok, 2, 6, -1, pos);
    for (int i = 0; i < 12; i++) EXPECT(pos[i] == i % 6, "pos[%d] without documents", i);
}

/* One fixed batch, AdamW with the default betas: the loss must go near 0. */
void model_overfit(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    int B = 2, T = 32, L = cfg.n_layers, steps = 150;
    Llama m;
    AdamW opt;
    Sched s;
    Err e;
    LC_ASSERT(llama_init(&m, &cfg, &ops_cpu, NULL, B, T, 1, &e) == 0);
    params_init(&m.t, m.params, L, 1);
    AdamWConfig ac = ADAMW_DEFAULTS;
    LC_ASSERT(adamw_init(&opt, &ac, &m.t, &ops_cpu, NULL, &e) == 0);
    LC_ASSERT(sched_init(&s, 1e-2, 10, steps, 0.1, SCHED_MAX_WARMUP_FRAC, &e) == 0);
    Rng r;
    rng_seed(&r, 3);
    int tok[64], tgt[64];
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&r) % cfg.vocab);
    for (int i = 0; i < B * T; i++) tgt[i] = (i + 1) % T ? tok[i + 1] : LC_IGNORE;
    LC_ASSERT(llama_set_batch(&m, tok, tgt, NULL, &e) == 0);
    long n = llama_count_targets(tgt, B * T);
    double first = 0, last = 0;
    for (int step = 0; step < steps; step++) {
        memset(m.grads, 0, m.t.size * sizeof(float));
        double loss = llama_forward(&m, 0, L, 1.0f / n) / n;
        llama_backward(&m, 0, L);
        adamw_step(&opt, &m.t, m.params, m.grads, adamw_grad_norm(&opt, m.grads), (float)sched_lr(&s, step));
        if (step == 0) first = loss;
        last = loss;
    }
    EXPECT(fabs(first - log(cfg.vocab)) < 0.1, "initial loss %.4f, expected about ln(V) = %.4f", first, log(cfg.vocab));
    EXPECT(last < 0.05, "loss after %d steps: %.4f (from %.4f)", steps, last, first);
    adamw_free(&opt);
    llama_free(&m);
}

/* The published totals (the Llama papers and Hugging Face model cards). */
void model_param_counts(void) {
    static const struct { const char *name; size_t n; } want[] = {
        {"llama1-7b", 6738415616ULL},   {"llama2-7b", 6738415616ULL},
        {"llama3-8b", 8030261248ULL},   {"llama3.1-8b", 8030261248ULL},
        {"llama3.2-1b", 1235814400ULL}, {"llama3.2-3b", 3212749824ULL},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        LlamaConfig c;
        ParamTable t;
        LC_ASSERT(config_preset(want[i].name, &c, NULL) == 0);
        LC_ASSERT(params_build(&c, &t, NULL) == 0);
        EXPECT(t.numel == want[i].n, "%s: %zu parameters, published %zu", want[i].name, t.numel, want[i].n);
        /* offsets are aligned and increasing; tied models have no lm_head */
        for (int j = 0; j < t.n; j++) EXPECT(t.p[j].offset % PARAMS_ALIGN == 0, "%s misaligned", t.p[j].name);
        EXPECT((params_find(&t, "lm_head.weight") < 0) == c.tied, "%s: lm_head presence", want[i].name);
        params_free(&t);
    }
    LlamaConfig c;
    ParamTable t;
    config_preset("llama3-8b", &c, NULL);
    params_build(&c, &t, NULL);
    EXPECT(strcmp(t.p[1].name, "model.layers.0.self_attn.q_proj.weight") == 0, "HF order: %s", t.p[1].name);
    EXPECT(t.p[2].shape[0] == 1024 && t.p[2].shape[1] == 4096, "k_proj shape (1024, 4096)");
    params_free(&t);
}

void model_batch_errors(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    Llama m;
    Err e;
    EXPECT(llama_init(&m, &cfg, &ops_cpu, NULL, 1, cfg.max_seq + 1, 1, &e) < 0 && strstr(e.msg, "context length"),
           "T above the context: %s", e.msg);
    EXPECT(llama_init(&m, &cfg, &ops_cpu, NULL, 0, 8, 1, &e) < 0 && strstr(e.msg, "batch"), "B = 0: %s", e.msg);
    LlamaConfig bad = cfg;
    bad.n_kv_heads = 3;
    EXPECT(llama_init(&m, &bad, &ops_cpu, NULL, 1, 8, 1, &e) < 0 && strstr(e.msg, "not divisible"), "H %% KV: %s", e.msg);
    LC_ASSERT(llama_init(&m, &cfg, &ops_cpu, NULL, 1, 4, 1, &e) == 0);
    int tok[4] = {1, 2, 3, 4}, tgt[4] = {2, 3, 4, LC_IGNORE}, pos[4] = {0, 1, 0, 1};
    EXPECT(llama_set_batch(&m, tok, tgt, pos, &e) == 0, "good batch: %s", e.msg);
    tok[2] = cfg.vocab;
    EXPECT(llama_set_batch(&m, tok, tgt, NULL, &e) < 0 && strstr(e.msg, "vocabulary"), "token >= V: %s", e.msg);
    tok[2] = 3;
    tgt[0] = -5;
    EXPECT(llama_set_batch(&m, tok, tgt, NULL, &e) < 0 && strstr(e.msg, "target"), "target < 0: %s", e.msg);
    tgt[0] = 2;
    pos[3] = 3;
    EXPECT(llama_set_batch(&m, tok, tgt, pos, &e) < 0 && strstr(e.msg, "position"), "bad pos: %s", e.msg);
    llama_free(&m);
}

/* Generation with the KV cache gives the logits of a full forward pass at
 * every position (GQA, llama3 rope scaling, tied head). */
void model_kv_cache(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.tied = 1; cfg.rope_theta = 500000; cfg.rope_scaling = ROPE_SCALING_LLAMA3;
    cfg.rope_factor = 8; cfg.rope_low_freq = 1; cfg.rope_high_freq = 4; cfg.rope_orig_ctx = 16;
    int T = 40, V = cfg.vocab;
    Llama a, b;
    Err e;
    LC_ASSERT(llama_init(&a, &cfg, &ops_cpu, NULL, 1, T, 0, &e) == 0);
    LC_ASSERT(llama_init(&b, &cfg, &ops_cpu, NULL, 1, T, 0, &e) == 0);
    params_init(&a.t, a.params, cfg.n_layers, 21);
    memcpy(b.params, a.params, a.t.size * sizeof(float));
    Rng r;
    rng_seed(&r, 8);
    int tok[40];
    for (int t = 0; t < T; t++) tok[t] = (int)(rng_u64(&r) % V);
    LC_ASSERT(llama_set_batch(&a, tok, NULL, NULL, &e) == 0);
    llama_forward(&a, 0, cfg.n_layers, 0);
    float *full = xmalloc((size_t)T * V * sizeof(float));
    ops_cpu.matmul_fwd(NULL, full, a.xf, a.w.lm_head, T, cfg.dim, V);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        llama_decode(&b, tok[t], t);
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(b.logits[v] - full[(size_t)t * V + v]));
    }
    EXPECT(worst < 1e-5, "KV-cache logits differ from the full forward by %g", worst);
    free(full);
    llama_free(&a);
    llama_free(&b);
}
