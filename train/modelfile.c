/*
 * modelfile.c: see modelfile.h. Reads check every length against the file
 * size before trusting it, so a truncated or corrupted file is an error
 * message, never a crash or a huge allocation.
 */
#include "modelfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

typedef struct {
    FILE *f;
    uint64_t h;
    int bad;
} Out;

static void put(Out *o, const void *p, size_t n) {
    if (fwrite(p, 1, n, o->f) != n) o->bad = 1;
    o->h = fnv1a(o->h, p, n);
}

static void put_config(Out *o, const LlamaConfig *c) {
    int32_t iv[10] = {c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->hidden, c->vocab,
                      c->max_seq, c->rope_scaling, c->rope_orig_ctx, c->tied};
    float fv[5] = {c->norm_eps, c->rope_theta, c->rope_factor, c->rope_low_freq, c->rope_high_freq};
    put(o, iv, sizeof iv);
    put(o, fv, sizeof fv);
}

int modelfile_save(const char *path, const Llama *m, uint64_t tokenizer_id, Err *e) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    Out o = {fopen(tmp, "wb"), FNV_INIT, 0};
    if (!o.f) return err_set(e, "%s: cannot create", tmp);
    uint32_t hdr[2] = {MODELFILE_MAGIC, MODELFILE_VERSION}, n = (uint32_t)m->t.n;
    put(&o, hdr, sizeof hdr);
    put_config(&o, &m->c);
    put(&o, &tokenizer_id, sizeof tokenizer_id);
    put(&o, &n, sizeof n);
    float *host = xmalloc(m->t.size * sizeof(float));
    m->ops->download(m->ctx, host, m->params, m->t.size * sizeof(float));
    for (int i = 0; i < m->t.n; i++) {
        const ParamInfo *p = &m->t.p[i];
        uint32_t len = (uint32_t)strlen(p->name), nd = (uint32_t)p->ndim;
        int64_t shape[2] = {p->shape[0], p->ndim == 2 ? p->shape[1] : 1};
        put(&o, &len, sizeof len);
        put(&o, p->name, len);
        put(&o, &nd, sizeof nd);
        put(&o, shape, sizeof shape);
        put(&o, host + p->offset, p->numel * sizeof(float));
    }
    free(host);
    uint64_t h = o.h;
    if (fwrite(&h, sizeof h, 1, o.f) != 1) o.bad = 1;
    if (fflush(o.f) != 0) o.bad = 1;
    if (fclose(o.f) != 0) o.bad = 1;
    if (o.bad) {
        remove(tmp);
        return err_set(e, "%s: write failed (disk full?)", tmp);
    }
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return err_set(e, "%s: cannot rename %s into place", path, tmp);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// reading: the whole file in memory (model files of the sizes trained on the
// CPU are small), every read bounds-checked

typedef struct {
    unsigned char *buf;
    size_t size, off;
    const char *path;
} In;

static int slurp(In *in, const char *path, Err *e) {
    memset(in, 0, sizeof *in);
    in->path = path;
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open", path);
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return err_set(e, "%s: cannot seek", path); }
    long sz = ftell(f);
    rewind(f);
    if (sz < 0) { fclose(f); return err_set(e, "%s: cannot read", path); }
    in->size = (size_t)sz;
    in->buf = xmalloc(in->size ? in->size : 1);
    size_t got = fread(in->buf, 1, in->size, f);
    fclose(f);
    if (got != in->size) { free(in->buf); return err_set(e, "%s: cannot read", path); }
    return 0;
}

static int get(In *in, void *dst, size_t n, Err *e) {
    if (in->size - in->off < n) return err_set(e, "%s: truncated (ends at byte %zu)", in->path, in->size);
    memcpy(dst, in->buf + in->off, n);
    in->off += n;
    return 0;
}

static int get_header(In *in, LlamaConfig *c, uint64_t *tok_id, Err *e) {
    uint32_t hdr[2];
    if (in->size == 0) return err_set(e, "%s: empty file", in->path);
    if (get(in, hdr, sizeof hdr, e)) return -1;
    if (hdr[0] != MODELFILE_MAGIC) return err_set(e, "%s: not a llamac model file (bad magic)", in->path);
    if (hdr[1] != MODELFILE_VERSION)
        return err_set(e, "%s: unsupported model file version %u (this llamac reads %d)", in->path, hdr[1], MODELFILE_VERSION);
    if (in->size < sizeof(uint64_t) + in->off)
        return err_set(e, "%s: truncated", in->path);
    uint64_t want;
    memcpy(&want, in->buf + in->size - sizeof want, sizeof want);
    if (fnv1a(FNV_INIT, in->buf, in->size - sizeof want) != want)
        return err_set(e, "%s: corrupted or truncated (checksum mismatch)", in->path);
    int32_t iv[10];
    float fv[5];
    if (get(in, iv, sizeof iv, e) || get(in, fv, sizeof fv, e) || get(in, tok_id, sizeof *tok_id, e)) return -1;
    config_preset("tiny", c, NULL);
    snprintf(c->name, sizeof c->name, "file");
    c->dim = iv[0]; c->n_layers = iv[1]; c->n_heads = iv[2]; c->n_kv_heads = iv[3]; c->hidden = iv[4];
    c->vocab = iv[5]; c->max_seq = iv[6]; c->rope_scaling = iv[7]; c->rope_orig_ctx = iv[8]; c->tied = iv[9];
    c->norm_eps = fv[0]; c->rope_theta = fv[1]; c->rope_factor = fv[2]; c->rope_low_freq = fv[3];
    c->rope_high_freq = fv[4];
    Err ce;
    if (config_validate(c, &ce)) return err_set(e, "%s: bad config: %s", in->path, ce.msg);
    return 0;
}

int modelfile_read_config(const char *path, LlamaConfig *c, uint64_t *tokenizer_id, Err *e) {
    In in;
    if (slurp(&in, path, e)) return -1;
    int rc = get_header(&in, c, tokenizer_id, e);
    free(in.buf);
    return rc;
}

int modelfile_load(const char *path, Llama *m, Err *e) {
    In in;
    if (slurp(&in, path, e)) return -1;
    LlamaConfig c;
    uint64_t tok_id;
    int rc = -1;
    uint32_t n = 0;
    float *host = NULL;
    if (get_header(&in, &c, &tok_id, e) || get(&in, &n, sizeof n, e)) goto done;
    if (c.dim != m->c.dim || c.n_layers != m->c.n_layers || c.n_heads != m->c.n_heads ||
        c.n_kv_heads != m->c.n_kv_heads || c.hidden != m->c.hidden || c.vocab != m->c.vocab ||
        c.tied != m->c.tied) {
        err_set(e, "%s: model shape (dim %d, layers %d, vocab %d) does not match the requested model (dim %d, layers %d, vocab %d)",
                path, c.dim, c.n_layers, c.vocab, m->c.dim, m->c.n_layers, m->c.vocab);
        goto done;
    }
    host = xcalloc(m->t.size, sizeof(float));
    char *seen = xcalloc((size_t)m->t.n, 1);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t len = 0, nd = 0;
        char name[128];
        int64_t shape[2];
        if (get(&in, &len, sizeof len, e)) goto done_seen;
        if (len == 0 || len >= sizeof name) { err_set(e, "%s: tensor %u has a bad name length %u", path, k, len); goto done_seen; }
        if (get(&in, name, len, e) || get(&in, &nd, sizeof nd, e) || get(&in, shape, sizeof shape, e)) goto done_seen;
        name[len] = 0;
        int i = params_find(&m->t, name);
        if (i < 0) { err_set(e, "%s: unexpected tensor '%s'", path, name); goto done_seen; }
        const ParamInfo *p = &m->t.p[i];
        if ((int)nd != p->ndim || shape[0] != p->shape[0] || (nd == 2 && shape[1] != p->shape[1])) {
            err_set(e, "%s: tensor '%s' has shape (%lld, %lld), expected (%lld, %lld)", path, name,
                    (long long)shape[0], (long long)shape[1], (long long)p->shape[0], (long long)p->shape[1]);
            goto done_seen;
        }
        if (get(&in, host + p->offset, p->numel * sizeof(float), e)) goto done_seen;
        seen[i] = 1;
    }
    for (int i = 0; i < m->t.n; i++)
        if (!seen[i]) { err_set(e, "%s: missing tensor '%s'", path, m->t.p[i].name); goto done_seen; }
    m->ops->upload(m->ctx, m->params, host, m->t.size * sizeof(float));
    rc = 0;
done_seen:
    free(seen);
done:
    free(host);
    free(in.buf);
    return rc;
}
