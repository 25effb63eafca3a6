/*
 * source.c: the one way in for model files (contract in source.h). A path
 * is told apart by its content: a directory holding config.json is a Hugging
 * Face directory, a file starting "GGUF" a GGUF file, one starting with the
 * HDF5 signature an llamac checkpoint. A LoRA checkpoint that names its base
 * by path has that base opened through source_open again: whatever kind it
 * is, the checkpoint's content hash decides whether it is the right one.
 */
#include "source.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../data/gguf.h"
#include "../../data/tok.h"
#include "../../model/lora.h"
#include "gguf.h"
#include "hf.h"

int source_open(ModelSource *s, const char *path, Err *e) {
    memset(s, 0, sizeof *s);
    if (snprintf(s->path, sizeof s->path, "%s", path) >= (int)sizeof s->path)
        return err_set(e, "%.200s...: path too long", path);
    if (hf_is_dir(path)) {
        s->kind = SOURCE_HF;
        if (hf_tokenizer(path, s->tokenizer, sizeof s->tokenizer)) s->tokenizer[0] = 0;
        return hf_config(path, &s->c, e);
    }
    struct stat st;
    if (stat(path, &st) != 0) return err_set(e, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return err_set(e, "%s: a directory without config.json", path);
    if (gguf_is_file(path)) {
        s->kind = SOURCE_GGUF;
        if (gguf_llama_config(path, &s->c, e)) return -1;
        /* the vocabulary inside, when llamac reads it, is the model's tokenizer */
        Tokenizer tok;
        Err te;
        if (tok_load(&tok, path, &te) == 0) {
            s->tokenizer_id = tok.id;
            snprintf(s->tokenizer, sizeof s->tokenizer, "%s", path);
            tok_free(&tok);
        }
        return 0;
    }
    if (!ckpt_is_hdf5(path))
        return err_set(e, "%s: neither a Hugging Face directory, a GGUF file nor an llamac checkpoint (HDF5)", path);
    s->kind = SOURCE_CKPT;
    if (ckpt_info(path, &s->ck, e)) return -1;
    s->c = s->ck.c;
    s->tokenizer_id = s->ck.tokenizer_id;
    return 0;
}

/* The base a LoRA checkpoint names, into params: opened as any source, of
 * the checkpoint's config (ckpt_load_lora then checks its content hash). */
static int load_base(const char *path, const char *base, const LlamaConfig *c, const ParamTable *t, float *params,
                     Err *e) {
    ModelSource b;
    Err be = {{0}};
    char diff[128];
    int rc = source_open(&b, base, &be);
    if (rc == 0 && ckpt_config_diff(&b.c, c, diff, sizeof diff))
        rc = err_set(&be, "%s: config differs (%s: base vs model)", base, diff);
    if (rc == 0) rc = source_load(&b, t, params, &be);
    return rc ? err_set(e, "%s: its base: %s", path, be.msg) : 0;
}

int source_load_lora(const char *path, const LlamaConfig *c, const ParamTable *bt, float *base_params,
                     CkptLora *lora, AdamW *opt, CkptState *st, Err *e) {
    CkptInfo info;
    if (base_params) {
        if (ckpt_info(path, &info, e)) return -1;
        if (info.has_lora && info.lora_base[0] && load_base(path, info.lora_base, c, bt, base_params, e)) return -1;
    }
    return ckpt_load_lora(path, c, bt, base_params, lora, opt, st, e);
}

/* A LoRA checkpoint as a plain model: base + merged adapters. */
static int load_merged(const ModelSource *s, const ParamTable *t, float *params, Err *e) {
    CkptLora cl = {.lc = s->ck.lora};
    ParamTable lt;
    if (lora_build(&cl.lc, &s->c, &lt, e)) return -1;
    cl.t = &lt;
    cl.params = xalloc_aligned(lt.size * sizeof(float));
    memset(cl.params, 0, lt.size * sizeof(float));
    int rc = source_load_lora(s->path, &s->c, t, params, &cl, NULL, NULL, e);
    if (rc == 0) lora_merge(&cl.lc, &s->c, t, params, &lt, cl.params, 1);
    free(cl.params);
    params_free(&lt);
    return rc;
}

int source_load(const ModelSource *s, const ParamTable *t, float *params, Err *e) {
    switch (s->kind) {
    case SOURCE_HF: return hf_load(s->path, t, params, e);
    case SOURCE_GGUF: return gguf_llama_load(s->path, &s->c, t, params, e);
    case SOURCE_CKPT:
        if (s->ck.has_lora) return load_merged(s, t, params, e);
        return ckpt_load(s->path, &s->c, t, params, NULL, NULL, e);
    }
    LC_FATAL("source_load: kind %d", (int)s->kind);
}

int source_load_as(const ModelSource *s, const LlamaConfig *c, const ParamTable *t, float *params, uint64_t seed,
                   Err *e) {
    if (c->num_labels == s->c.num_labels) return source_load(s, t, params, e);
    if (s->c.num_labels)
        return err_set(e, "%s: a classification model (num_labels %d) cannot be trained as %s", s->path,
                       s->c.num_labels, c->num_labels ? "one with another number of labels" : "a language model");
    ParamTable st;
    if (params_build(&s->c, &st, e)) return -1;
    float *w = xalloc_aligned(st.size * sizeof(float));
    memset(w, 0, st.size * sizeof(float));
    int rc = source_load(s, &st, w, e);
    for (int i = 0; rc == 0 && i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        int k = params_find(&st, p->name);
        if (k >= 0) {
            LC_ASSERT(st.p[k].numel == p->numel);
            memcpy(params + p->offset, w + st.p[k].offset, p->numel * sizeof(float));
            continue;
        }
        /* the new head: transformers' _init_weights for a Linear, normal(0, initializer_range 0.02) */
        LC_ASSERT(strcmp(p->name, "score.weight") == 0);
        Rng r;
        rng_seed(&r, seed ^ 0x73636f7265ULL /* "score" */);
        for (size_t j = 0; j < p->numel; j++) params[p->offset + j] = 0.02f * rng_normal(&r);
    }
    free(w);
    params_free(&st);
    return rc;
}

const char *source_tokenizer(const ModelSource *s, const char *given, Err *e) {
    if (given) return given;
    if (!s->tokenizer[0]) {
        err_set(e, "--tokenizer: required: %s does not carry its tokenizer (give the one it was trained with)",
                s->path);
        return NULL;
    }
    return s->tokenizer;
}
