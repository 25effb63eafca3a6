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
#include "../../model/quant.h"
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

static int load_quant_base(const ModelSource *s, const ParamTable *t, float *params, Err *e);

int source_load_lora(const char *path, const LlamaConfig *c, const ParamTable *bt, float *base_params,
                     CkptLora *lora, AdamW *opt, CkptState *st, Err *e) {
    CkptInfo info;
    if (base_params) {
        if (ckpt_info(path, &info, e)) return -1;
        if (info.has_lora && info.lora_base_quant[0]) { /* the quantised base, checked, then dequantised */
            ModelSource s;
            memset(&s, 0, sizeof s);
            s.kind = SOURCE_CKPT;
            snprintf(s.path, sizeof s.path, "%s", path);
            s.c = *c;
            s.ck = info;
            if (load_quant_base(&s, bt, base_params, e)) return -1;
            return ckpt_load_lora(path, c, bt, NULL, lora, opt, st, e);
        }
        if (info.has_lora && info.lora_base[0] && load_base(path, info.lora_base, c, bt, base_params, e)) return -1;
    }
    return ckpt_load_lora(path, c, bt, base_params, lora, opt, st, e);
}

/* A LoRA checkpoint as a plain model: base + merged adapters (a base held
 * quantised: dequantised, as the adapters saw it). */
static int load_merged(const ModelSource *s, const ParamTable *t, float *params, Err *e) {
    CkptLora cl = {.lc = s->ck.lora};
    ParamTable lt;
    if (lora_build(&cl.lc, &s->c, &lt, e)) return -1;
    cl.t = &lt;
    cl.params = xalloc_aligned(lt.size * sizeof(float));
    memset(cl.params, 0, lt.size * sizeof(float));
    int rc;
    if (s->ck.lora_base_quant[0]) {
        rc = load_quant_base(s, t, params, e);
        if (rc == 0) rc = ckpt_load_lora(s->path, &s->c, t, NULL, &cl, NULL, NULL, e);
    } else {
        rc = source_load_lora(s->path, &s->c, t, params, &cl, NULL, NULL, e);
    }
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

// ----------------------------------------------------------------------------
// quantised bases

static int is_linear(const ParamInfo *p) { return p->layer >= 0 && p->ndim == 2; }

int source_quant_plan(const ModelSource *s, const LlamaConfig *c, const ParamTable *t, const char *how,
                      uint32_t *qtypes, Err *e) {
    memset(qtypes, 0, (size_t)t->n * sizeof *qtypes);
    if (!how) return 0;
    int n = 0;
    if (strcmp(how, "keep") == 0) {
        if (s->kind != SOURCE_GGUF)
            return err_set(e, "--base-quant keep: %s is not a GGUF file (keep trains on the types a GGUF file ships "
                              "in; for another model name a type: nf4, q8_0, q4_0, ...)", s->path);
        Gguf g;
        if (gguf_open(&g, s->path, e)) return -1;
        int rc = 0;
        for (int i = 0; i < t->n && rc == 0; i++) {
            const ParamInfo *p = &t->p[i];
            if (p->ndim != 2 || strcmp(p->name, "score.weight") == 0) continue;
            uint32_t ty;
            if ((rc = gguf_llama_tensor_type(&g, p->name, &ty, e))) break;
            if (quant_keepable(ty)) {
                qtypes[i] = ty;
                n++;
            } else if (ty != QUANT_F32 && ty != QUANT_F16 && ty != QUANT_BF16) {
                rc = err_set(e, "--base-quant keep: %s: tensor %s is %s, which llamac cannot keep quantised (it can: "
                                "%s)", s->path, p->name, quant_name(ty) ? quant_name(ty) : "of an unknown type",
                             quant_keepable_list());
            }
        }
        gguf_close(&g);
        (void)c;
        return rc ? -1 : n;
    }
    uint32_t ty;
    if (quant_parse(how, "--base-quant", &ty, e)) return -1;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        if (!is_linear(p)) continue;
        if (p->shape[1] % quant_block(ty))
            return err_set(e, "--base-quant %s: %s has rows of %lld values, not a whole number of %s's %d-value "
                              "blocks (q8_0, q4_0, q4_1, q5_0, q5_1 need 32, nf4 64)", how, p->name,
                           (long long)p->shape[1], quant_name(ty), quant_block(ty));
        qtypes[i] = ty;
        n++;
    }
    return n;
}

/* One tensor of s as float32 into dst: a one-entry table through source_load. */
static int load_one(const ModelSource *s, const ParamInfo *p, float *dst, Err *e) {
    ParamTable one;
    int cap = 0;
    memset(&one, 0, sizeof one);
    params_add(&one, &cap, p->name, p->ndim, p->shape[0], p->shape[1], p->group, p->layer);
    int rc = source_load(s, &one, dst, e);
    params_free(&one);
    return rc;
}

int source_load_quant(const ModelSource *s, const LlamaConfig *c, const ParamTable *t, float *params,
                      uint8_t *qdata, uint64_t seed, Err *e) {
    /* the float entries: a table of just them has their offsets in t */
    ParamTable ft;
    int cap = 0, rc = 0;
    memset(&ft, 0, sizeof ft);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        if (p->qtype) continue;
        params_add(&ft, &cap, p->name, p->ndim, p->shape[0], p->shape[1], p->group, p->layer);
        LC_ASSERT(ft.p[ft.n - 1].offset == p->offset);
    }
    int merged = s->kind == SOURCE_CKPT && s->ck.has_lora;
    float *full = NULL;
    ParamTable st;
    memset(&st, 0, sizeof st);
    if (merged) { /* base + adapters exist only as a whole: merge, then take tensors from it */
        rc = params_build(&s->c, &st, e);
        if (rc == 0) {
            full = xalloc_aligned(st.size * sizeof(float));
            rc = source_load(s, &st, full, e);
        }
    }
    if (rc == 0) rc = source_load_as(s, c, &ft, params, seed, e);
    /* kt: t with qtype kept only where a GGUF stores the tensor in its
     * planned type (copied as stored below); the rest are quantised here */
    ParamTable kt = *t;
    kt.p = xmalloc((size_t)t->n * sizeof *kt.p);
    memcpy(kt.p, t->p, (size_t)t->n * sizeof *kt.p);
    int stored = 0;
    if (rc == 0 && s->kind == SOURCE_GGUF) {
        Gguf g;
        rc = gguf_open(&g, s->path, e);
        for (int i = 0; rc == 0 && i < kt.n; i++) {
            uint32_t ty = 0;
            if (kt.p[i].qtype && (rc = gguf_llama_tensor_type(&g, kt.p[i].name, &ty, e)) == 0 && ty != kt.p[i].qtype)
                kt.p[i].qtype = 0;
            stored += kt.p[i].qtype != 0;
        }
        gguf_close(&g); /* zeroed when the open failed */
    } else {
        for (int i = 0; i < kt.n; i++) kt.p[i].qtype = 0;
    }
    float *tmp = NULL;
    for (int i = 0; i < t->n && rc == 0; i++) {
        const ParamInfo *p = &t->p[i];
        if (!p->qtype || kt.p[i].qtype) continue;
        tmp = xrealloc(tmp, p->numel * sizeof(float));
        if (merged) {
            int k = params_find(&st, p->name);
            LC_ASSERT(k >= 0);
            memcpy(tmp, full + st.p[k].offset, p->numel * sizeof(float));
        } else if ((rc = load_one(s, p, tmp, e))) {
            break;
        }
        LC_ASSERT(quant_quantize(p->qtype, tmp, p->shape[0], p->shape[1], qdata + p->qoffset) == 0);
    }
    if (rc == 0 && stored) rc = gguf_llama_load_quant(s->path, &s->c, &kt, qdata, e);
    free(kt.p);
    free(tmp);
    free(full);
    params_free(&st);
    params_free(&ft);
    return rc;
}

/* The quantised base a QLoRA checkpoint names (base_path, base_quant),
 * built as the run built it, checked by its hash, then dequantised into
 * params (laid out by t, the plain table). */
static int load_quant_base(const ModelSource *s, const ParamTable *t, float *params, Err *e) {
    ModelSource b;
    Err be = {{0}};
    char diff[128];
    int rc = source_open(&b, s->ck.lora_base, &be);
    if (rc == 0 && ckpt_config_diff(&b.c, &s->c, diff, sizeof diff))
        rc = err_set(&be, "%s: config differs (%s: base vs model)", s->ck.lora_base, diff);
    ParamTable qt;
    memset(&qt, 0, sizeof qt);
    uint32_t *qtypes = NULL;
    float *fp = NULL;
    uint8_t *qd = NULL;
    if (rc == 0) rc = params_build(&s->c, &qt, &be);
    if (rc == 0) {
        qtypes = xcalloc((size_t)qt.n, sizeof *qtypes);
        rc = source_quant_plan(&b, &s->c, &qt, s->ck.lora_base_quant, qtypes, &be) < 0 ? -1 : 0;
    }
    if (rc == 0) {
        params_set_quant(&qt, qtypes);
        fp = xalloc_aligned(qt.size * sizeof(float));
        qd = xcalloc(qt.qsize ? qt.qsize : 1, 1); /* zero padding: the hash covers it */
        memset(fp, 0, qt.size * sizeof(float));
        rc = source_load_quant(&b, &s->c, &qt, fp, qd, 0, &be);
    }
    if (rc) {
        rc = err_set(e, "%s: its base: %s", s->path, be.msg);
    } else if (source_quant_hash(&qt, fp, qd) != s->ck.lora_base_hash) {
        rc = err_set(e, "%s: base %s (--base-quant %s) is not the one this checkpoint was trained on (content hash "
                        "differs)", s->path, s->ck.lora_base, s->ck.lora_base_quant);
    } else {
        source_quant_dense(&qt, fp, qd, t, params);
    }
    free(qtypes);
    free(fp);
    free(qd);
    params_free(&qt);
    return rc;
}

void source_quant_dense(const ParamTable *t, const float *params, const uint8_t *qdata, const ParamTable *ft,
                        float *out) {
    LC_ASSERT(t->n == ft->n);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i], *d = &ft->p[i];
        LC_ASSERT(strcmp(p->name, d->name) == 0);
        if (!p->qtype) {
            memcpy(out + d->offset, params + p->offset, p->numel * sizeof(float));
            continue;
        }
        QTensor q = quant_tensor(p->qtype, (int)p->shape[0], (int)p->shape[1], qdata + p->qoffset);
        quant_rows(&q, 0, q.rows, out + d->offset);
    }
}

uint64_t source_quant_hash(const ParamTable *t, const float *params, const uint8_t *qdata) {
    uint64_t h[2] = {ckpt_hash(params, t->size * sizeof(float)), qdata ? ckpt_hash(qdata, t->qsize) : 0};
    return ckpt_hash(h, sizeof h);
}

// ----------------------------------------------------------------------------
// the one way out

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

SourceSaveFormat source_save_format(const char *out) {
    return ends_with(out, ".gguf") ? SOURCE_SAVE_GGUF : ends_with(out, ".h5") ? SOURCE_SAVE_CKPT : SOURCE_SAVE_HF;
}

int source_save_parse(const char *name, SourceSaveFormat *f, Err *e) {
    static const char *const names[] = {"ckpt", "hf", "gguf"}; /* SourceSaveFormat order */
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            *f = (SourceSaveFormat)i;
            return 0;
        }
    return err_set(e, "--format: unknown format '%s' (ckpt, hf or gguf)", name);
}

int source_save(const char *out, const LlamaConfig *c, const ParamTable *t, const float *params, const SourceSave *o,
                Err *e) {
    if (o->format == SOURCE_SAVE_GGUF) {
        GgufOpts go = {.type = (GgufType)o->gguf_type, .name = o->name ? o->name : c->name, .tok = o->tok,
                       .chat_template = o->chat_template};
        return gguf_save(out, c, t, params, &go, e);
    }
    if (o->format == SOURCE_SAVE_CKPT)
        return ckpt_save(out, c, t, params, o->tok ? o->tok->id : o->tokenizer_id, NULL, NULL, e);
    if (o->tok) {
        HfTok tk = {o->tok, o->tokpath, o->chat_template};
        return hf_save_tok(out, c, t, params, &tk, o->force, e);
    }
    return hf_save(out, c, t, params, -1, -1, o->force, e);
}
