/*
 * gguf.c: the GGUF v3 writer for llama-architecture models (format and
 * conventions in gguf.h). Two passes over the tensor table: the header and
 * infos (offsets known from the sizes alone), then the data, one tensor at
 * a time; only q/k go through a one-tensor scratch buffer for the permute.
 */
#include "gguf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c writes the host's float32 bytes and assumes a little-endian host"
#endif

/* metadata value types (gguf_type) and the one tensor type used */
enum { GGUF_T_UINT32 = 4, GGUF_T_FLOAT32 = 6, GGUF_T_STRING = 8 };
enum { GGML_TYPE_F32 = 0 };
/* general.file_type: LLAMA_FTYPE_ALL_F32 */
#define GGUF_FILE_TYPE_F32 0

/* HF suffix (after "model.layers.N.") -> llama.cpp block tensor */
static const struct {
    const char *hf, *gguf;
} layer_names[] = {
    {"self_attn.q_proj.weight", "attn_q.weight"},   {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},   {"self_attn.o_proj.weight", "attn_output.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
};

int gguf_tensor_name(const char *hf, char *out, size_t n) {
    if (strcmp(hf, "model.embed_tokens.weight") == 0) return snprintf(out, n, "token_embd.weight"), 0;
    if (strcmp(hf, "model.norm.weight") == 0) return snprintf(out, n, "output_norm.weight"), 0;
    if (strcmp(hf, "lm_head.weight") == 0) return snprintf(out, n, "output.weight"), 0;
    int layer, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &used) != 1 || used == 0) return -1;
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++)
        if (strcmp(hf + used, layer_names[i].hf) == 0)
            return snprintf(out, n, "blk.%d.%s", layer, layer_names[i].gguf), 0;
    return -1;
}

void gguf_permute_rows(float *dst, const float *src, int n_head, int hs, int64_t cols) {
    int half = hs / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + ((size_t)h * hs + 2 * i + j) * cols, src + ((size_t)h * hs + j * half + i) * cols,
                       (size_t)cols * sizeof *dst);
}

void gguf_unpermute_rows(float *dst, const float *src, int n_head, int hs, int64_t cols) {
    int half = hs / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + ((size_t)h * hs + j * half + i) * cols, src + ((size_t)h * hs + 2 * i + j) * cols,
                       (size_t)cols * sizeof *dst);
}

void gguf_rope_factors(const LlamaConfig *c, float *out) {
    LC_ASSERT(c->rope_scaling == ROPE_SCALING_LLAMA3);
    int hs = config_head_size(c);
    /* float32 throughout, as llama.cpp's converter computes them with torch */
    float ctx = (float)c->rope_orig_ctx, lo = c->rope_low_freq, hi = c->rope_high_freq, factor = c->rope_factor;
    float lo_wavelen = ctx / lo, hi_wavelen = ctx / hi;
    for (int i = 0; i < hs / 2; i++) {
        float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)hs);
        float wavelen = 2.0f * (float)M_PI / freq;
        if (wavelen < hi_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > lo_wavelen) {
            out[i] = factor;
        } else {
            float s = (ctx / wavelen - lo) / (hi - lo);
            out[i] = 1.0f / ((1.0f - s) / factor + s);
        }
    }
}

/* ---- little-endian writers into a FILE, errors folded into ok ----------- */

typedef struct W {
    FILE *f;
    int ok;
    uint64_t at; /* bytes written */
    int n_kv;    /* metadata entries written */
} W;

static void put(W *w, const void *p, size_t n) {
    if (w->ok && fwrite(p, 1, n, w->f) != n) w->ok = 0;
    w->at += n;
}
static void put_u32(W *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(W *w, uint64_t v) { put(w, &v, 8); }
static void put_str(W *w, const char *s) {
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}
static void kv_u32(W *w, const char *k, uint32_t v) {
    w->n_kv++;
    put_str(w, k);
    put_u32(w, GGUF_T_UINT32);
    put_u32(w, v);
}
static void kv_f32(W *w, const char *k, float v) {
    w->n_kv++;
    put_str(w, k);
    put_u32(w, GGUF_T_FLOAT32);
    put(w, &v, 4);
}
static void kv_str(W *w, const char *k, const char *v) {
    w->n_kv++;
    put_str(w, k);
    put_u32(w, GGUF_T_STRING);
    put_str(w, v);
}
static void pad(W *w) {
    static const char zeros[GGUF_ALIGNMENT];
    put(w, zeros, (size_t)((GGUF_ALIGNMENT - w->at % GGUF_ALIGNMENT) % GGUF_ALIGNMENT));
}
static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}
static uint64_t align_up(uint64_t x) { return (x + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT; }

static void tensor_info(W *w, const char *name, int ndim, const int64_t *hf_shape, uint64_t offset) {
    put_str(w, name);
    put_u32(w, (uint32_t)ndim);
    for (int k = ndim - 1; k >= 0; k--) put_u64(w, (uint64_t)hf_shape[k]); /* innermost first */
    put_u32(w, GGML_TYPE_F32);
    put_u64(w, offset);
}

int gguf_save_llama(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
                    const char *name, Err *e) {
    int hs = config_head_size(c), scaled = c->rope_scaling == ROPE_SCALING_LLAMA3;
    char tmp[4096], gname[96];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return err_set(e, "%s: path too long", path);
    for (int i = 0; i < t->n; i++)
        if (gguf_tensor_name(t->p[i].name, gname, sizeof gname))
            return err_set(e, "%s: no GGUF name for tensor %s", path, t->p[i].name);
    W w = {fopen(tmp, "wb"), 1, 0, 0};
    if (!w.f) return err_set(e, "%s: cannot create: %s", tmp, strerror(errno));

    int n_meta = 15; /* the kv_* calls below (checked) */
    put(&w, "GGUF", 4);
    put_u32(&w, GGUF_VERSION);
    put_u64(&w, (uint64_t)(t->n + scaled));
    put_u64(&w, (uint64_t)n_meta);
    kv_str(&w, "general.architecture", "llama");
    kv_str(&w, "general.name", name);
    kv_u32(&w, "general.alignment", GGUF_ALIGNMENT);
    kv_u32(&w, "general.file_type", GGUF_FILE_TYPE_F32);
    kv_u32(&w, "llama.context_length", (uint32_t)c->max_seq);
    kv_u32(&w, "llama.embedding_length", (uint32_t)c->dim);
    kv_u32(&w, "llama.block_count", (uint32_t)c->n_layers);
    kv_u32(&w, "llama.feed_forward_length", (uint32_t)c->hidden);
    kv_u32(&w, "llama.attention.head_count", (uint32_t)c->n_heads);
    kv_u32(&w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    kv_f32(&w, "llama.rope.freq_base", c->rope_theta);
    kv_f32(&w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    kv_u32(&w, "llama.rope.dimension_count", (uint32_t)hs);
    kv_u32(&w, "llama.vocab_size", (uint32_t)c->vocab);
    kv_str(&w, "tokenizer.ggml.model", "no_vocab");
    LC_ASSERT(w.n_kv == n_meta);

    /* infos: rope_freqs first (as llama.cpp's converter emits it), then the
     * table in HF order */
    uint64_t off = 0;
    int64_t rshape[1] = {hs / 2};
    if (scaled) {
        tensor_info(&w, "rope_freqs.weight", 1, rshape, off);
        off = align_up(off + (uint64_t)(hs / 2) * 4);
    }
    for (int i = 0; i < t->n; i++) {
        gguf_tensor_name(t->p[i].name, gname, sizeof gname);
        tensor_info(&w, gname, t->p[i].ndim, t->p[i].shape, off);
        off = align_up(off + (uint64_t)t->p[i].numel * 4);
    }
    pad(&w);

    /* data */
    uint64_t data0 = w.at;
    float *scratch = NULL;
    if (scaled) {
        float *f = xmalloc((size_t)(hs / 2) * sizeof *f);
        gguf_rope_factors(c, f);
        put(&w, f, (size_t)(hs / 2) * 4);
        free(f);
        pad(&w);
    }
    for (int i = 0; i < t->n && w.ok; i++) {
        const ParamInfo *p = &t->p[i];
        const float *src = params + p->offset;
        int is_q = ends_with(p->name, ".q_proj.weight"), is_k = ends_with(p->name, ".k_proj.weight");
        if (is_q || is_k) {
            scratch = xrealloc(scratch, p->numel * sizeof *scratch);
            gguf_permute_rows(scratch, src, is_q ? c->n_heads : c->n_kv_heads, hs, p->shape[1]);
            src = scratch;
        }
        put(&w, src, p->numel * 4);
        pad(&w);
    }
    free(scratch);
    LC_ASSERT(!w.ok || w.at - data0 == off);
    if (w.ok && (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0)) w.ok = 0;
    int err = errno;
    if (fclose(w.f) != 0 && w.ok) w.ok = 0, err = errno;
    if (!w.ok) {
        unlink(tmp);
        return err_set(e, "%s: write failed: %s", tmp, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return err_set(e, "%s: cannot rename %s into place: %s", path, tmp, strerror(err));
    }
    return 0;
}
