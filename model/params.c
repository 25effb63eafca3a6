/*
 * params.c: build the Hugging Face-ordered parameter table, point typed
 * weights into a buffer, and initialise.
 */
#include "params.h"

#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void params_add(ParamTable *t, int *cap, const char *name, int ndim, int64_t d0, int64_t d1,
                int group, int layer) {
    if (t->n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        t->p = xrealloc(t->p, (size_t)*cap * sizeof *t->p);
    }
    ParamInfo *p = &t->p[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim == 2 ? d1 : 1;
    p->numel = (size_t)d0 * (size_t)p->shape[1];
    p->offset = t->size;
    p->decay = ndim == 2;
    p->group = group;
    p->layer = layer;
    t->size += (p->numel + PARAMS_ALIGN - 1) / PARAMS_ALIGN * PARAMS_ALIGN;
    t->numel += p->numel;
}

int params_build(const LlamaConfig *c, ParamTable *t, Err *e) {
    memset(t, 0, sizeof *t);
    if (config_validate(c, e)) return -1;
    if (c->n_layers > LC_MAX_LAYERS)
        return err_set(e, "n_layers: %d exceeds the supported %d", c->n_layers, LC_MAX_LAYERS);
    int cap = 0;
    int64_t D = c->dim, HS = config_head_size(c), Q = c->n_heads * HS, KVD = c->n_kv_heads * HS;
    char n[64];
    params_add(t, &cap, "model.embed_tokens.weight", 2, c->vocab, D, PG_EMBED, -1);
    for (int l = 0; l < c->n_layers; l++) {
        /* order of LlamaDecoderLayer.named_parameters() */
#define L(suffix, nd, d0, d1, g) \
    snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), params_add(t, &cap, n, nd, d0, d1, g, l)
        L("self_attn.q_proj.weight", 2, Q, D, PG_ATTN);
        L("self_attn.k_proj.weight", 2, KVD, D, PG_ATTN);
        L("self_attn.v_proj.weight", 2, KVD, D, PG_ATTN);
        L("self_attn.o_proj.weight", 2, D, Q, PG_ATTN);
        L("mlp.gate_proj.weight", 2, c->hidden, D, PG_MLP);
        L("mlp.up_proj.weight", 2, c->hidden, D, PG_MLP);
        L("mlp.down_proj.weight", 2, D, c->hidden, PG_MLP);
        L("input_layernorm.weight", 1, D, 1, PG_NORM);
        L("post_attention_layernorm.weight", 1, D, 1, PG_NORM);
#undef L
    }
    params_add(t, &cap, "model.norm.weight", 1, D, 1, PG_NORM, -1);
    if (c->num_labels) params_add(t, &cap, "score.weight", 2, c->num_labels, D, PG_HEAD, -1);
    else if (!c->tied) params_add(t, &cap, "lm_head.weight", 2, c->vocab, D, PG_HEAD, -1);
    return 0;
}

void params_free(ParamTable *t) {
    free(t->p);
    memset(t, 0, sizeof *t);
}

void params_point(const LlamaConfig *c, const ParamTable *t, void *base, size_t elem_size,
                  LlamaWeights *w) {
    char *b = base;
    int i = 0;
#define NEXT() (t->p[i].qtype ? (i++, NULL) : b + t->p[i++].offset * elem_size)
    memset(w, 0, sizeof *w);
    w->embed = (float *)NEXT();
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &w->layer[l];
        lw->wq = (float *)NEXT();
        lw->wk = (float *)NEXT();
        lw->wv = (float *)NEXT();
        lw->wo = (float *)NEXT();
        lw->wg = (float *)NEXT();
        lw->wu = (float *)NEXT();
        lw->wd = (float *)NEXT();
        lw->ln1 = (float *)NEXT();
        lw->ln2 = (float *)NEXT();
    }
    w->norm_f = (float *)NEXT();
    w->lm_head = c->tied && !c->num_labels ? w->embed : (float *)NEXT();
#undef NEXT
    LC_ASSERT(i == t->n);
}

void params_set_quant(ParamTable *t, const uint32_t *qtypes) {
    t->size = 0;
    t->qsize = 0;
    for (int i = 0; i < t->n; i++) {
        ParamInfo *p = &t->p[i];
        p->qtype = qtypes[i];
        if (!p->qtype) {
            p->offset = t->size;
            p->qoffset = p->qbytes = 0;
            t->size += (p->numel + PARAMS_ALIGN - 1) / PARAMS_ALIGN * PARAMS_ALIGN;
            continue;
        }
        LC_ASSERT(p->ndim == 2 && quant_keepable(p->qtype) && p->shape[1] % quant_block(p->qtype) == 0);
        p->offset = PARAMS_NONE;
        p->qoffset = t->qsize;
        p->qbytes = quant_bytes(p->qtype, p->shape[0], p->shape[1]);
        t->qsize += (p->qbytes + 63) / 64 * 64;
    }
}

int params_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->p[i].name, name) == 0) return i;
    return -1;
}

void params_init(const ParamTable *t, float *base, int n_layers, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float resid_std = 0.02f / sqrtf(2.0f * n_layers);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        if (p->qtype) continue;
        float *x = base + p->offset;
        if (p->ndim == 1) {
            for (size_t j = 0; j < p->numel; j++) x[j] = 1.0f;
            continue;
        }
        int resid = strstr(p->name, "o_proj") || strstr(p->name, "down_proj");
        float std = resid ? resid_std : 0.02f;
        for (size_t j = 0; j < p->numel; j++) x[j] = std * rng_normal(&r);
    }
}
