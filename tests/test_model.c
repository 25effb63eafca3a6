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

/* A head size other than D / H (Hugging Face's head_dim; pruned models):
 * 3 query heads of 8 over 1 KV head on D = 20, so H*HS = 24 != D and D is no
 * multiple of H. */
void model_gradcheck_head_dim(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.dim = 20; cfg.n_layers = 2; cfg.n_heads = 3; cfg.n_kv_heads = 1; cfg.head_dim = 8; cfg.hidden = 27;
    cfg.vocab = 29; cfg.max_seq = 32; cfg.tied = 0;
    Err e;
    EXPECT(config_validate(&cfg, &e) == 0, "head_dim config refused: %s", e.msg);
    whole_model_check(&cfg, 2, 11, 1, 44);
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
    /* branches (ops.h): a restart inside the document's first run is one; past it, or the row not starting
     * at 0, or a negative position, is refused with its column */
    static const int ok[][4] = {{0, 1, 2, 1}, {0, 1, 2, 2}, {0, 1, 1, 2}}, no[][4] = {{0, 1, 0, 2}, {1, 2, 3, 4},
                                                                                   {0, 1, -1, 0}, {0, 1, 1, 3}};
    for (int i = 0; i < 3; i++)
        EXPECT(llama_set_batch(&m, tok, tgt, ok[i], &e) == 0, "branching pos %d: %s", i, e.msg);
    for (int i = 0; i < 4; i++)
        EXPECT(llama_set_batch(&m, tok, tgt, no[i], &e) < 0 && strstr(e.msg, "is inconsistent"), "bad pos %d: %s", i,
               e.msg);
    llama_free(&m);
}

/* Generation with the KV cache gives the logits of a full forward pass at
 * every position (GQA, llama3 rope scaling, tied head). */
static void kv_cache_case(int head_dim) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.head_dim = head_dim;
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
    /* a prefilled prompt continues as the token-by-token cache does */
    Llama p;
    LC_ASSERT(llama_init(&p, &cfg, &ops_cpu, NULL, 1, T, 0, &e) == 0);
    memcpy(p.params, a.params, a.t.size * sizeof(float));
    int np = 23;
    llama_prefill(&p, tok, np);
    worst = 0;
    for (int t = np; t < T; t++) {
        llama_decode(&p, tok[t], t);
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(p.logits[v] - full[(size_t)t * V + v]));
    }
    EXPECT(worst < 1e-5, "logits after llama_prefill differ from the full forward by %g", worst);
    EXPECT(p.T == T, "llama_prefill left T = %d", p.T);
    llama_free(&p);
    free(full);
    llama_free(&a);
    llama_free(&b);
}

void model_kv_cache(void) {
    kv_cache_case(0);
    kv_cache_case(24); /* 4 heads of 24 on D = 64 */
}

// ----------------------------------------------------------------------------
// LoRA adapters and activation recomputation

/* The LoRA model's loss against finite differences in every adapter tensor
 * (both A and B random, so both get gradient signal), with dropout under a
 * fixed seed; with grads FULL also every base tensor (the adapters' dx path
 * feeds them). */
static void lora_model_check(LlamaConfig *cfg, const char *targets, const char *layers, int r, float alpha,
                             int rslora, float dropout, int grads, int B, int T, int docs, uint64_t seed) {
    Rng rg;
    rng_seed(&rg, seed);
    ModelCase c;
    Err e;
    LoraConfig lc;
    lora_config_default(&lc, 0);
    LC_ASSERT(lora_parse_targets(targets, &lc.targets, &e) == 0);
    if (layers) LC_ASSERT(lora_parse_layers(layers, &lc, cfg->n_layers, &e) == 0);
    lc.r = r; lc.alpha = alpha; lc.rslora = rslora; lc.dropout = dropout;
    LlamaOpts o = {grads, &lc, 0, NULL, 0};
    LC_ASSERT(llama_init_opts(&c.m, cfg, &ops_cpu, NULL, B, T, &o, &e) == 0);
    EXPECT((c.m.grads == NULL) == (grads == LLAMA_GRADS_INPUT), "base gradient buffer with grads %d", grads);
    random_params(&c.m, &rg);
    /* std 0.1: with s up to 4 the side path is as large as the base path;
     * at 0.3 the loss curves enough within h = 1e-2 to move central
     * differences by ~5% (measured: h = 1e-3 then agrees) */
    for (size_t i = 0; i < c.m.lt.size; i++) c.m.lora_params[i] = 0.1f * rng_normal(&rg);
    llama_lora_seed(&c.m, 1234);
    int *tok = xmalloc(B * T * sizeof(int)), *tgt = xmalloc(B * T * sizeof(int)), *pos = xmalloc(B * T * sizeof(int));
    random_batch(&rg, B, T, cfg->vocab, docs, tok, tgt, pos);
    LC_ASSERT(llama_set_batch(&c.m, tok, tgt, pos, &e) == 0);
    c.ntgt = llama_count_targets(tgt, (size_t)B * T);
    if (c.m.grads) memset(c.m.grads, 0, c.m.t.size * sizeof(float));
    memset(c.m.lora_grads, 0, c.m.lt.size * sizeof(float));
    double l = llama_forward(&c.m, 0, cfg->n_layers, 1.0f / c.ntgt) / c.ntgt;
    llama_backward(&c.m, 0, cfg->n_layers);
    EXPECT(isfinite(l) && l > 0, "loss %g", l);
    EXPECT_NEAR(model_loss(&c), l, 1e-6 * l);
    GcOpts go = {6, 1e-2f, 2e-2, 2e-3};
    int bad = 0;
    for (int i = 0; i < c.m.lt.n; i++) {
        const ParamInfo *p = &c.m.lt.p[i];
        double gmax = 0;
        for (size_t j = 0; j < p->numel; j++) gmax = fmax(gmax, fabs(c.m.lora_grads[p->offset + j]));
        EXPECT(gmax > 0, "%s: zero gradient", p->name);
        bad += gradcheck(p->name, model_loss, &c, c.m.lora_params + p->offset, c.m.lora_grads + p->offset,
                         p->numel, &go, &rg, NULL);
    }
    for (int i = 0; c.m.grads && i < c.m.t.n; i++) {
        const ParamInfo *p = &c.m.t.p[i];
        bad += gradcheck(p->name, model_loss, &c, c.m.params + p->offset, c.m.grads + p->offset, p->numel,
                         &go, &rg, NULL);
    }
    EXPECT(bad == 0, "%d coordinates out of tolerance", bad);
    /* adapters off: the base model's loss exactly */
    c.m.lora_enabled = 0;
    Llama base;
    LC_ASSERT(llama_init(&base, cfg, &ops_cpu, NULL, B, T, 0, &e) == 0);
    memcpy(base.params, c.m.params, c.m.t.size * sizeof(float));
    LC_ASSERT(llama_set_batch(&base, tok, tgt, pos, &e) == 0);
    double l_off = llama_forward(&c.m, 0, cfg->n_layers, 0), l_base = llama_forward(&base, 0, cfg->n_layers, 0);
    EXPECT(l_off == l_base, "adapters off: loss %.9g, base model %.9g", l_off, l_base);
    llama_free(&base);
    llama_free(&c.m);
    free(tok); free(tgt); free(pos);
}

void model_lora_gradcheck_untied(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.dim = 24; cfg.n_layers = 2; cfg.n_heads = 4; cfg.n_kv_heads = 4; cfg.hidden = 37;
    cfg.vocab = 29; cfg.max_seq = 32; cfg.tied = 0;
    lora_model_check(&cfg, "q_proj,v_proj", NULL, 4, 8, 0, 0.0f, LLAMA_GRADS_INPUT, 2, 11, 0, 50);
    lora_model_check(&cfg, "all-linear", NULL, 3, 5, 1, 0.25f, LLAMA_GRADS_INPUT, 2, 11, 0, 51);
}

/* tied head, GQA, documents, dropout, layers_to_transform; and FULL (base
 * and adapters trained together) */
void model_lora_gradcheck_tied_gqa(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.dim = 32; cfg.n_layers = 3; cfg.n_heads = 4; cfg.n_kv_heads = 2; cfg.hidden = 45;
    cfg.vocab = 31; cfg.max_seq = 32; cfg.tied = 1; cfg.rope_theta = 500000;
    lora_model_check(&cfg, "q,k,v,o", "1", 5, 16, 0, 0.1f, LLAMA_GRADS_INPUT, 2, 13, 1, 52);
    lora_model_check(&cfg, "gate,up,down,k", "0,2", 2, 3, 0, 0.3f, LLAMA_GRADS_INPUT, 2, 9, 1, 53);
    lora_model_check(&cfg, "all-linear", "0-1", 2, 4, 0, 0.2f, LLAMA_GRADS_FULL, 1, 9, 1, 54);
}

/* One step of training gradients with and without recompute: same loss,
 * same bits (full training, and LoRA with dropout); and llama_memory says
 * recompute keeps less. With fwd_only (no adapters, no gradients) the second
 * model is forward-only instead (a teacher's: two layers' activations, the
 * inputs x in two buffers used in turn): the same loss and final hidden
 * state bit for bit, and less memory than recompute beyond two layers. */
static void recompute_case(const LlamaConfig *cfg, const LoraConfig *lc, int grads, int B, int T, int fwd_only) {
    Llama a, b;
    Err e;
    LC_ASSERT(!fwd_only || (!lc && grads == LLAMA_GRADS_NONE));
    LlamaOpts oa = {grads, lc, 0, NULL, 0}, ob = {grads, lc, !fwd_only, NULL, fwd_only};
    LC_ASSERT(llama_init_opts(&a, cfg, &ops_cpu, NULL, B, T, &oa, &e) == 0);
    LC_ASSERT(llama_init_opts(&b, cfg, &ops_cpu, NULL, B, T, &ob, &e) == 0);
    Rng r;
    rng_seed(&r, 17);
    random_params(&a, &r);
    memcpy(b.params, a.params, a.t.size * sizeof(float));
    if (lc) {
        for (size_t i = 0; i < a.lt.size; i++) a.lora_params[i] = 0.3f * rng_normal(&r);
        memcpy(b.lora_params, a.lora_params, a.lt.size * sizeof(float));
        llama_lora_seed(&a, 9);
        llama_lora_seed(&b, 9);
    }
    int n = B * T, *tok = xmalloc(n * sizeof(int)), *tgt = xmalloc(n * sizeof(int)), *pos = xmalloc(n * sizeof(int));
    random_batch(&r, B, T, cfg->vocab, 1, tok, tgt, pos);
    Llama *ms[2] = {&a, &b};
    double loss[2];
    for (int k = 0; k < 2; k++) {
        LC_ASSERT(llama_set_batch(ms[k], tok, tgt, pos, &e) == 0);
        loss[k] = llama_forward(ms[k], 0, cfg->n_layers, fwd_only ? 0.0f : 0.01f);
        if (fwd_only) llama_forward_hidden(ms[k], 0);
        else llama_backward(ms[k], 0, cfg->n_layers);
    }
    const char *what = fwd_only ? "forward_only" : "recompute";
    EXPECT(loss[0] == loss[1], "%s, %d layers: loss %.9g vs %.9g", what, cfg->n_layers, loss[1], loss[0]);
    if (fwd_only)
        EXPECT(memcmp(a.xf, b.xf, (size_t)n * cfg->dim * sizeof(float)) == 0, "forward_only, %d layers: hidden states differ",
               cfg->n_layers);
    if (a.grads) EXPECT(memcmp(a.grads, b.grads, a.t.size * sizeof(float)) == 0, "recompute: base grads differ");
    if (lc) EXPECT(memcmp(a.lora_grads, b.lora_grads, a.lt.size * sizeof(float)) == 0, "recompute: adapter grads differ");
    LlamaMem ma = llama_memory_opts(cfg, &ops_cpu, B, T, &oa), mb = llama_memory_opts(cfg, &ops_cpu, B, T, &ob);
    if (fwd_only) {
        LlamaOpts orc = {LLAMA_GRADS_NONE, NULL, 1, NULL, 0};
        LlamaMem mr = llama_memory_opts(cfg, &ops_cpu, B, T, &orc);
        EXPECT(cfg->n_layers > 2 ? mb.acts < mr.acts : mb.acts == mr.acts,
               "forward_only, %d layers, keeps %zu bytes of activations, recompute %zu", cfg->n_layers, mb.acts, mr.acts);
    } else {
        EXPECT(mb.acts < ma.acts, "recompute keeps %zu bytes of activations, without %zu", mb.acts, ma.acts);
    }
    EXPECT(ma.acts == a.arena_floats * sizeof(float) + 3 * (size_t)n * sizeof(int), "llama_memory vs the arena");
    EXPECT(mb.acts == b.arena_floats * sizeof(float) + 3 * (size_t)n * sizeof(int), "llama_memory vs the arena (recompute)");
    EXPECT(ma.lora == (lc ? a.lt.size * sizeof(float) : 0) && ma.lora_grads == ma.lora, "adapter bytes");
    EXPECT(ma.grads == (grads == LLAMA_GRADS_FULL ? a.t.size * sizeof(float) : 0), "base gradient bytes");
    llama_free(&a);
    llama_free(&b);
    free(tok); free(tgt); free(pos);
}

void model_recompute(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.n_layers = 3;
    recompute_case(&cfg, NULL, LLAMA_GRADS_NONE, 2, 24, 1);
    cfg.n_layers = 4;
    recompute_case(&cfg, NULL, LLAMA_GRADS_NONE, 1, 16, 1);
    cfg.n_layers = 1;
    recompute_case(&cfg, NULL, LLAMA_GRADS_NONE, 1, 16, 1);
    cfg.n_layers = 3;
    recompute_case(&cfg, NULL, LLAMA_GRADS_FULL, 2, 24, 0);
    LoraConfig lc;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 4; lc.dropout = 0.1f;
    recompute_case(&cfg, &lc, LLAMA_GRADS_INPUT, 2, 24, 0);
    LC_ASSERT(lora_parse_layers("1", &lc, cfg.n_layers, NULL) == 0);
    recompute_case(&cfg, &lc, LLAMA_GRADS_FULL, 1, 16, 0);
}

/* Generation with adapters: the KV-cache logits equal a full forward's with
 * the same adapters (dropout off outside training). */
void model_lora_decode(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    int T = 20, V = cfg.vocab;
    LoraConfig lc;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 4; lc.dropout = 0.5f;
    LlamaOpts o = {LLAMA_GRADS_NONE, &lc, 0, NULL, 0};
    Llama a, b;
    Err e;
    LC_ASSERT(llama_init_opts(&a, &cfg, &ops_cpu, NULL, 1, T, &o, &e) == 0);
    LC_ASSERT(llama_init_opts(&b, &cfg, &ops_cpu, NULL, 1, T, &o, &e) == 0);
    EXPECT(!a.lora_train, "no dropout without gradients");
    params_init(&a.t, a.params, cfg.n_layers, 21);
    memcpy(b.params, a.params, a.t.size * sizeof(float));
    Rng r;
    rng_seed(&r, 8);
    for (size_t i = 0; i < a.lt.size; i++) a.lora_params[i] = b.lora_params[i] = 0.1f * rng_normal(&r);
    int tok[20];
    for (int t = 0; t < T; t++) tok[t] = (int)(rng_u64(&r) % V);
    LC_ASSERT(llama_set_batch(&a, tok, NULL, NULL, &e) == 0);
    llama_forward(&a, 0, cfg.n_layers, 0);
    float *full = xmalloc((size_t)T * V * sizeof(float));
    ops_cpu.matmul_fwd(NULL, full, a.xf, a.w.lm_head, T, cfg.dim, V);
    double worst = 0, moved = 0;
    for (int t = 0; t < T; t++) {
        llama_decode(&b, tok[t], t);
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(b.logits[v] - full[(size_t)t * V + v]));
    }
    EXPECT(worst < 1e-5, "LoRA KV-cache logits differ from the full forward by %g", worst);
    /* and the adapters do change the logits */
    b.lora_enabled = 0;
    llama_decode(&b, tok[0], 0);
    for (int v = 0; v < V; v++) moved = fmax(moved, fabs(b.logits[v] - full[v]));
    EXPECT(moved > 1e-4, "adapters off changes the logits by only %g", moved);
    free(full);
    llama_free(&a);
    llama_free(&b);
}

void model_lora_errors(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    LoraConfig lc;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 100; /* > KV*HS = 32 */
    LlamaOpts o = {LLAMA_GRADS_INPUT, &lc, 0, NULL, 0};
    Llama m;
    Err e;
    EXPECT(llama_init_opts(&m, &cfg, &ops_cpu, NULL, 1, 8, &o, &e) < 0 && strncmp(e.msg, "--lora-r:", 9) == 0,
           "r too big: %s", e.msg);
    lc.r = 8;
    lc.dropout = 1;
    EXPECT(llama_init_opts(&m, &cfg, &ops_cpu, NULL, 1, 8, &o, &e) < 0 && strncmp(e.msg, "--lora-dropout:", 15) == 0,
           "dropout 1: %s", e.msg);
}

// ----------------------------------------------------------------------------
// a classifier's score head (reward models)

typedef struct {
    Llama m;
    float *score, *w; /* (N) the head's outputs; weights of the projected loss (0 on rows not read) */
} ScoreCase;

/* sum_n w[n] * score[n]: a loss that reads a few rows, as a reward loss does */
static double score_loss(void *ud) {
    ScoreCase *c = ud;
    llama_forward_score(&c->m, 0, c->score);
    return gc_project(c->score, c->w, (size_t)c->m.B * c->m.T);
}

/* Every tensor of a classifier (full), then with LoRA whose table carries
 * the trained head (PEFT's modules_to_save): the adapters and the head's
 * copy, whose outputs replace the base head's while the adapters are on. */
void model_gradcheck_score(void) {
    LlamaConfig cfg;
    config_preset("tiny", &cfg, NULL);
    cfg.dim = 24; cfg.n_layers = 2; cfg.n_heads = 4; cfg.n_kv_heads = 2; cfg.hidden = 37;
    cfg.vocab = 29; cfg.max_seq = 32; cfg.tied = 0; cfg.num_labels = 1; cfg.pad_id = 0;
    int B = 2, T = 11, N = B * T;
    Rng r;
    rng_seed(&r, 61);
    Err e;
    int *tok = xmalloc(N * sizeof(int)), *tgt = xmalloc(N * sizeof(int)), *pos = xmalloc(N * sizeof(int));
    random_batch(&r, B, T, cfg.vocab, 1, tok, tgt, pos);
    for (int n = 0; n < N; n++) tgt[n] = LC_IGNORE;
    for (int lora = 0; lora < 2; lora++) {
        ScoreCase c;
        LoraConfig lc;
        lora_config_default(&lc, LORA_ALL_LINEAR);
        lc.r = 3; lc.alpha = 6; lc.head = 1;
        LlamaOpts o = {lora ? LLAMA_GRADS_INPUT : LLAMA_GRADS_FULL, lora ? &lc : NULL, 0, NULL, 0};
        LC_ASSERT(llama_init_opts(&c.m, &cfg, &ops_cpu, NULL, B, T, &o, &e) == 0);
        EXPECT(params_find(&c.m.t, "score.weight") >= 0 && params_find(&c.m.t, "lm_head.weight") < 0,
               "a classifier's table has score.weight and no lm_head");
        random_params(&c.m, &r);
        if (lora) {
            for (size_t i = 0; i < c.m.lt.size; i++) c.m.lora_params[i] = 0.1f * rng_normal(&r);
            EXPECT(c.m.la.head && strcmp(c.m.lt.p[c.m.lt.n - 1].name, "score.weight") == 0, "LoRA head slot");
        }
        c.score = xmalloc(N * sizeof(float));
        c.w = xcalloc(N, sizeof(float));
        for (int k = 0; k < 4; k++) c.w[rng_u64(&r) % N] = rng_normal(&r); /* a few rows read */
        LC_ASSERT(llama_set_batch(&c.m, tok, tgt, pos, &e) == 0);
        float *grads = lora ? c.m.lora_grads : c.m.grads;
        const ParamTable *t = lora ? &c.m.lt : &c.m.t;
        float *params = lora ? c.m.lora_params : c.m.params;
        memset(grads, 0, t->size * sizeof(float));
        score_loss(&c);
        llama_score_backward(&c.m, c.w);
        llama_backward(&c.m, 0, cfg.n_layers);
        GcOpts go = {6, 1e-2f, 2e-2, 2e-3};
        int bad = 0;
        for (int i = 0; i < t->n; i++) {
            const ParamInfo *p = &t->p[i];
            bad += gradcheck(p->name, score_loss, &c, params + p->offset, grads + p->offset, p->numel, &go, &r, NULL);
        }
        EXPECT(bad == 0, "%s: %d coordinates out of tolerance", lora ? "LoRA" : "full", bad);
        if (lora) { /* adapters off: the base head reads, not the trained copy */
            double on = score_loss(&c);
            c.m.lora_enabled = 0;
            double off = score_loss(&c);
            EXPECT(on != off, "adapters off gives the same score");
        }
        free(c.score);
        free(c.w);
        llama_free(&c.m);
    }
    free(tok); free(tgt); free(pos);
}
