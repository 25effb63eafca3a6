/*
 * gguf.c: the GGUF v3 writer for llama-architecture models (format and
 * conventions in gguf.h). Two passes over the tensor table: the header and
 * infos (offsets known from the sizes alone), then the data, one tensor at
 * a time; q/k go through a one-tensor scratch buffer for the permute, and
 * F16 / BF16 / block-type matrices (model/quant.c's quantisers) through a
 * second for their encoding.
 */
#include "gguf.h"

#include "../../model/quant.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../data/bbpe.h"
#include "../../data/gguf.h"
#include "../../data/spm.h"
#include "../../model/quant.h"
#include "iofile.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c writes the host's float32 bytes and assumes a little-endian host"
#endif

/* metadata value types and ggml tensor types: data/gguf.h's, shared with the reader */
/* llama.cpp's token types (the same numbers as SentencePiece's) */
enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

/* per GgufType: its name, ggml type and general.file_type (LLAMA_FTYPE) */
static const struct {
    const char *name;
    uint32_t ggml, ftype;
} types[GGUF_TYPE_COUNT] = {
    [GGUF_F32] = {"f32", GGML_TYPE_F32, 0},
    [GGUF_F16] = {"f16", GGML_TYPE_F16, 1},
    [GGUF_BF16] = {"bf16", GGML_TYPE_BF16, 32},
    [GGUF_Q8_0] = {"q8_0", GGML_TYPE_Q8_0, 7},
};

int gguf_type_parse(const char *name, GgufType *type, Err *e) {
    for (int i = 0; i < GGUF_TYPE_COUNT; i++)
        if (strcmp(name, types[i].name) == 0) {
            *type = (GgufType)i;
            return 0;
        }
    return err_set(e, "--type: unknown type '%.32s' (expected f32, f16, bf16 or q8_0)", name);
}

const char *gguf_export_type_name(GgufType type) {
    return (unsigned)type < GGUF_TYPE_COUNT ? types[type].name : "?";
}

/* The ggml type tensor i is stored as: o->qtypes' when given (1-D ones
 * F32 always); else 1-D ones F32, and Q8_0 needs rows that are whole
 * blocks, else F16 (llama.cpp's converter's fallback). */
static uint32_t tensor_type(const GgufOpts *o, int i, const ParamInfo *p) {
    if (p->ndim < 2) return GGML_TYPE_F32;
    if (o->qtypes) return o->qtypes[i];
    if (o->type == GGUF_Q8_0 && p->shape[1] % GGUF_Q8_0_BLOCK != 0) return GGML_TYPE_F16;
    return types[o->type].ggml;
}

static uint64_t tensor_bytes(uint32_t ty, const ParamInfo *p) {
    if (ty == GGML_TYPE_F32) return (uint64_t)p->numel * 4;
    if (ty == GGML_TYPE_F16 || ty == GGML_TYPE_BF16) return (uint64_t)p->numel * 2;
    return quant_bytes(ty, p->shape[0], p->shape[1]);
}

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

void gguf_unpermute_row_bytes(void *dst, const void *src, int n_head, int hs, size_t row_bytes) {
    int half = hs / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy((char *)dst + ((size_t)h * hs + j * half + i) * row_bytes,
                       (const char *)src + ((size_t)h * hs + 2 * i + j) * row_bytes, row_bytes);
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

// ---- the vocabulary ----------------------------------------------------------

/* Metadata entries the vocabulary adds (1 without a tokenizer). */
static int vocab_kv_count(const Tokenizer *tok) {
    if (!tok) return 1;
    return 5 + (tok->bos >= 0) + (tok->eos >= 0);
}

/* tokenizer.ggml.*: byte-level kinds as llama.cpp's "gpt2" model (tokens in
 * GPT-2's byte-to-unicode spelling, merges "A B" in rank order), SentencePiece
 * as its "llama" model (pieces, scores, types). Ids from tok->vocab up to the
 * model's V are filled with unused "[PAD<id>]" tokens. */
static void vocab_kv(GgufWriter *w, const Tokenizer *tok, int V) {
    if (!tok) {
        gguf_kv_str(w, "tokenizer.ggml.model", "no_vocab");
        return;
    }
    char pad_name[32];
    if (tok->kind == TOK_SPM) {
        const Spm *s = tok_spm_model(tok);
        gguf_kv_str(w, "tokenizer.ggml.model", "llama");
        gguf_kv_array(w, "tokenizer.ggml.tokens", GGUF_STRING, (uint64_t)V);
        for (int i = 0; i < V; i++) {
            if (i < s->vocab) gguf_put_str(w, s->bytes + s->off[i], s->off[i + 1] - s->off[i] - 1);
            else gguf_put_str(w, pad_name, (size_t)snprintf(pad_name, sizeof pad_name, "[PAD%d]", i));
        }
        gguf_kv_array(w, "tokenizer.ggml.scores", GGUF_FLOAT32, (uint64_t)V);
        for (int i = 0; i < V; i++) {
            float sc = i < s->vocab ? s->score[i] : -1e9f;
            gguf_put(w, &sc, 4);
        }
        gguf_kv_array(w, "tokenizer.ggml.token_type", GGUF_INT32, (uint64_t)V);
        for (int i = 0; i < V; i++) {
            int32_t ty = i < s->vocab ? s->type[i] : TT_UNUSED;
            gguf_put(w, &ty, 4);
        }
        gguf_kv_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)s->unk);
    } else {
        int32_t *type = xmalloc((size_t)V * sizeof *type);
        for (int i = 0; i < V; i++) type[i] = i < tok->vocab ? TT_NORMAL : TT_UNUSED;
        if (tok->kind == TOK_LLAMAC)
            for (int k = 0; k < tok->bpe->n_special; k++) type[256 + tok->bpe->n_merges + k] = TT_CONTROL;
        else
            for (int k = 0; k < tok->bb->n_added; k++)
                type[tok->bb->added[k].id] = tok->bb->added[k].special ? TT_CONTROL : TT_USER_DEFINED;
        gguf_kv_str(w, "tokenizer.ggml.model", "gpt2");
        /* llamac's BPE with Llama 3's split pattern (bpe.h, version 2), a
         * tokenizer.json or tiktoken: "llama-bpe", Llama 3's split (and its
         * whole-piece rule, which llamac's version 2 encoder follows too).
         * llamac's own version 1 split is none of llama.cpp's: "default",
         * GPT-2's. */
        int llama3 = tok->kind != TOK_LLAMAC ||
                     (tok->bpe->pattern && strcmp(tok->bpe->pattern, BPE_DEFAULT_PATTERN) == 0);
        gguf_kv_str(w, "tokenizer.ggml.pre", tok->pre[0] ? tok->pre : llama3 ? "llama-bpe" : "default"); /* a GGUF vocabulary keeps its own */
        gguf_kv_array(w, "tokenizer.ggml.tokens", GGUF_STRING, (uint64_t)V);
        char *buf = NULL;
        size_t cap = 0;
        for (int i = 0; i < V; i++) {
            size_t n = 0;
            const char *b = i < tok->vocab ? tok_token_bytes(tok, i, &n) : NULL;
            if (!b) {
                gguf_put_str(w, pad_name, (size_t)snprintf(pad_name, sizeof pad_name, "[PAD%d]", i));
                continue;
            }
            if (type[i] != TT_NORMAL) { /* special and added tokens keep their text */
                gguf_put_str(w, b, n);
                continue;
            }
            if (2 * n > cap) buf = xrealloc(buf, cap = 2 * n + 64);
            gguf_put_str(w, buf, bbpe_byte_level(b, n, buf));
        }
        gguf_kv_array(w, "tokenizer.ggml.token_type", GGUF_INT32, (uint64_t)V);
        gguf_put(w, type, (size_t)V * 4);
        int32_t *m;
        size_t nm = tok_merges(tok, &m);
        gguf_kv_array(w, "tokenizer.ggml.merges", GGUF_STRING, nm);
        for (size_t i = 0; i < nm; i++) {
            size_t na, nb;
            const char *a = tok_token_bytes(tok, m[2 * i], &na), *b = tok_token_bytes(tok, m[2 * i + 1], &nb);
            if (2 * (na + nb) + 1 > cap) buf = xrealloc(buf, cap = 2 * (na + nb) + 64);
            size_t k = bbpe_byte_level(a, na, buf);
            buf[k++] = ' ';
            k += bbpe_byte_level(b, nb, buf + k);
            gguf_put_str(w, buf, k);
        }
        free(m);
        free(buf);
        free(type);
    }
    if (tok->bos >= 0) gguf_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)tok->bos);
    if (tok->eos >= 0) gguf_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)tok->eos);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}
static uint64_t align_up(uint64_t x) { return (x + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT; }

int gguf_save_llama(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
                    const char *name, const Tokenizer *tok, Err *e) {
    GgufOpts o = {.type = GGUF_F32, .name = name, .tok = tok};
    return gguf_save(path, c, t, params, &o, e);
}

int gguf_check_export(const char *path, const LlamaConfig *c, Err *e) {
    if (c->num_labels)
        return err_set(e, "%s: a classifier (reward model, %d label%s, score head) has no GGUF form: llama.cpp has no "
                       "sequence-classification architecture (export a Hugging Face directory or a checkpoint)", path,
                       c->num_labels, c->num_labels > 1 ? "s" : "");
    return 0;
}

int gguf_save(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
              const GgufOpts *o, Err *e) {
    if (gguf_check_export(path, c, e)) return -1;
    const Tokenizer *tok = o->tok;
    LC_ASSERT((unsigned)o->type < GGUF_TYPE_COUNT);
    for (int i = 0; o->qtypes && i < t->n; i++) { /* a block type needs rows of whole blocks */
        const ParamInfo *p = &t->p[i];
        uint32_t ty = tensor_type(o, i, p);
        LC_ASSERT(ty == GGML_TYPE_F32 || ty == GGML_TYPE_F16 || ty == GGML_TYPE_BF16 ||
                  (quant_block(ty) && p->shape[1] % quant_block(ty) == 0));
    }
    int hs = config_head_size(c), scaled = c->rope_scaling == ROPE_SCALING_LLAMA3;
    char tmp[4096], gname[96];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return err_set(e, "%s: path too long", path);
    for (int i = 0; i < t->n; i++)
        if (gguf_tensor_name(t->p[i].name, gname, sizeof gname))
            return err_set(e, "%s: no GGUF name for tensor %s", path, t->p[i].name);
    if (tok && tok->vocab > c->vocab)
        return err_set(e, "%s: the tokenizer's %d tokens do not fit the model's vocab %d", path, tok->vocab, c->vocab);
    GgufWriter w = {fopen(tmp, "wb"), 1, 0, 0};
    if (!w.f) return err_set(e, "%s: cannot create: %s", tmp, strerror(errno));
    /* the kv_* calls below (checked); key_length and value_length only where the head size is not
     * embedding_length / head_count (llama.cpp's default for both) */
    int own_hs = !config_head_size_default(c);
    int n_meta = 14 + 2 * own_hs + vocab_kv_count(tok) + (o->chat_template != NULL);
    gguf_put(&w, "GGUF", 4);
    gguf_put_u32(&w, GGUF_VERSION);
    gguf_put_u64(&w, (uint64_t)(t->n + scaled));
    gguf_put_u64(&w, (uint64_t)n_meta);
    gguf_kv_str(&w, "general.architecture", "llama");
    gguf_kv_str(&w, "general.name", o->name);
    gguf_kv_u32(&w, "general.alignment", GGUF_ALIGNMENT);
    gguf_kv_u32(&w, "general.file_type", o->qtypes ? o->ftype : types[o->type].ftype);
    gguf_kv_u32(&w, "llama.context_length", (uint32_t)c->max_seq);
    gguf_kv_u32(&w, "llama.embedding_length", (uint32_t)c->dim);
    gguf_kv_u32(&w, "llama.block_count", (uint32_t)c->n_layers);
    gguf_kv_u32(&w, "llama.feed_forward_length", (uint32_t)c->hidden);
    gguf_kv_u32(&w, "llama.attention.head_count", (uint32_t)c->n_heads);
    gguf_kv_u32(&w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    gguf_kv_f32(&w, "llama.rope.freq_base", c->rope_theta);
    gguf_kv_f32(&w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    gguf_kv_u32(&w, "llama.rope.dimension_count", (uint32_t)hs);
    if (own_hs) {
        gguf_kv_u32(&w, "llama.attention.key_length", (uint32_t)hs);
        gguf_kv_u32(&w, "llama.attention.value_length", (uint32_t)hs);
    }
    gguf_kv_u32(&w, "llama.vocab_size", (uint32_t)c->vocab);
    vocab_kv(&w, tok, c->vocab);
    if (o->chat_template) gguf_kv_str(&w, "tokenizer.chat_template", o->chat_template);
    LC_ASSERT(w.n_kv == n_meta);

    /* infos: rope_freqs first (as llama.cpp's converter emits it), then the
     * table in HF order */
    uint64_t off = 0;
    int64_t rshape[1] = {hs / 2};
    if (scaled) {
        gguf_put_tensor_info(&w, "rope_freqs.weight", 1, rshape, types[GGUF_F32].ggml, off);
        off = align_up(off + (uint64_t)(hs / 2) * 4);
    }
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        uint32_t ty = tensor_type(o, i, p);
        gguf_tensor_name(p->name, gname, sizeof gname);
        gguf_put_tensor_info(&w, gname, p->ndim, p->shape, ty, off);
        off = align_up(off + tensor_bytes(ty, p));
    }
    gguf_put_pad(&w, GGUF_ALIGNMENT);

    /* data */
    uint64_t data0 = w.at;
    float *scratch = NULL;
    void *enc = NULL;
    if (scaled) {
        float *f = xmalloc((size_t)(hs / 2) * sizeof *f);
        gguf_rope_factors(c, f);
        gguf_put(&w, f, (size_t)(hs / 2) * 4);
        free(f);
        gguf_put_pad(&w, GGUF_ALIGNMENT);
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
        uint32_t ty = tensor_type(o, i, p);
        uint64_t nb = tensor_bytes(ty, p);
        if (ty != GGML_TYPE_F32) {
            enc = xrealloc(enc, nb);
            if (ty == GGML_TYPE_F16) gguf_to_f16(enc, src, p->numel);
            else if (ty == GGML_TYPE_BF16) gguf_to_bf16(enc, src, p->numel);
            else LC_ASSERT(quant_quantize(ty, src, p->shape[0], p->shape[1], enc) == 0);
            src = enc;
        }
        if (o->progress) o->progress(o->progress_arg, i, t->n, ty);
        gguf_put(&w, src, nb);
        gguf_put_pad(&w, GGUF_ALIGNMENT);
    }
    free(scratch);
    free(enc);
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

// ---- in: a GGUF file as a Llama -------------------------------------------------

/* An integer key in [lo, hi] into *out; absent: def (def < 0: required). */
static int gguf_int(const Gguf *g, const char *key, long def, long lo, long hi, int *out, Err *e) {
    int64_t v;
    int r = gguf_get_int(g, key, def < 0, &v, e);
    if (r < 0) return -1;
    if (r == 0) v = def;
    if (v < lo || v > hi)
        return err_set(e, "%s: metadata %s = %lld is out of range [%ld, %ld]", g->path, key, (long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

/* 1 if c's llama3 factors (gguf_rope_factors) are want[0 .. hs/2) */
static int rope_matches(const LlamaConfig *c, const float *want, float *got) {
    int hs = config_head_size(c);
    gguf_rope_factors(c, got);
    for (int i = 0; i < hs / 2; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-5f * fabsf(want[i]))) return 0;
    return 1;
}

/* Llama 3.1 scaling comes as rope_freqs.weight alone (llama.cpp's converter
 * writes no scaling keys), so its parameters are recovered from the factors
 * f_i (gguf.h gives their form): factor is the largest. Only the two
 * wavelengths ctx / low_freq_factor and ctx / high_freq_factor enter the
 * form, so low_freq_factor = 1 loses nothing. Between them,
 * s_i = (1 / f_i - 1 / factor) / (1 - 1 / factor) = A / wavelength_i - B with
 * A = ctx / (high - low), B = low / (high - low): two such entries give
 * ctx = A / B and high = (1 + B) / B. With one, ctx is put just below the
 * first wavelength scaled in full and high solved from s; with none, ctx
 * there and ctx / high between the last unscaled wavelength and it. Meta's
 * values are tried first; the result must reproduce every factor. */
static int gguf_rope_llama3(const Gguf *g, const GgufTensor *rt, LlamaConfig *c, Err *e) {
    int hs = config_head_size(c), nf = hs / 2;
    if (rt->numel != nf || rt->type != GGML_TYPE_F32)
        return err_set(e, "%s: rope_freqs.weight must be %d float32 values (head size / 2)", g->path, nf);
    float *want = xmalloc((size_t)nf * sizeof *want), *got = xmalloc((size_t)nf * sizeof *got);
    double *wl = xmalloc((size_t)nf * sizeof *wl);
    gguf_dequantize(GGML_TYPE_F32, rt->data, nf, want);
    float factor = 0;
    for (int i = 0; i < nf; i++) {
        factor = want[i] > factor ? want[i] : factor;
        wl[i] = 2 * M_PI * pow(c->rope_theta, 2.0 * i / hs); /* 2 pi / frequency */
    }
    int last_one = -1, first_full = nf, n_smooth = 0, i0 = -1, i1 = -1, found = 0;
    for (int i = 0; i < nf; i++) {
        if (fabsf(want[i] - 1.0f) <= 1e-6f) last_one = i;
        else if (fabsf(want[i] - factor) <= 1e-6f * factor) first_full = first_full < i ? first_full : i;
        else {
            n_smooth++;
            if (i0 < 0) i0 = i;
            i1 = i;
        }
    }
    c->rope_scaling = ROPE_SCALING_LLAMA3;
    c->rope_factor = factor;
    c->rope_low_freq = 1.0f;
    double ctx = first_full < nf ? ceil(wl[first_full]) - 1 : ceil(wl[nf - 1]) + 1, hi = 0;
    if (factor > 1 && n_smooth >= 2) {
        double y0 = (1 / (double)want[i0] - 1 / (double)factor) / (1 - 1 / (double)factor);
        double y1 = (1 / (double)want[i1] - 1 / (double)factor) / (1 - 1 / (double)factor);
        double A = (y1 - y0) / (1 / wl[i1] - 1 / wl[i0]), B = A / wl[i0] - y0;
        if (A > 0 && B > 0) ctx = A / B, hi = (1 + B) / B;
    } else if (factor > 1 && n_smooth == 1) {
        double s0 = (1 / (double)want[i0] - 1 / (double)factor) / (1 - 1 / (double)factor);
        if (s0 > 0) hi = 1 + (ctx / wl[i0] - 1) / s0;
    } else if (factor > 1) {
        hi = last_one >= 0 ? (1 + ctx / wl[last_one]) / 2 : 2;
    }
    /* Meta's values first (3.1: 8192, 1, 4), so a file of theirs reads back as written */
    static const int ctxs[] = {8192, 4096, 2048, 16384, 32768, 65536, 131072};
    static const float fl[] = {1, 2, 4, 8, 16, 32};
    for (int a = 0; a < 7 && !found; a++)
        for (int l = 0; l < 6 && !found; l++)
            for (int h = l + 1; h < 6 && !found; h++) {
                c->rope_orig_ctx = ctxs[a];
                c->rope_low_freq = fl[l];
                c->rope_high_freq = fl[h];
                found = rope_matches(c, want, got);
            }
    if (!found && hi > 1 && ctx >= 1 && ctx < (double)(1 << 30)) {
        c->rope_orig_ctx = (int)lround(ctx);
        c->rope_low_freq = 1.0f;
        c->rope_high_freq = (float)hi;
        found = rope_matches(c, want, got);
    }
    free(want);
    free(got);
    free(wl);
    if (!found)
        return err_set(e, "%s: rope_freqs.weight is not Llama 3.1's frequency scaling (not supported)", g->path);
    return 0;
}

static int gguf_config(const Gguf *g, LlamaConfig *c, Err *e) {
    memset(c, 0, sizeof *c);
    const char *arch;
    size_t alen;
    if (gguf_get_str(g, "general.architecture", 1, &arch, &alen, e) < 0) return -1;
    if (alen != 5 || memcmp(arch, "llama", 5) != 0)
        return err_set(e, "%s: architecture %.*s not supported (supported: llama)", g->path, (int)(alen < 40 ? alen : 40),
                       arch);
    const long BIG = 1L << 30;
    if (gguf_int(g, "llama.embedding_length", -1, 1, BIG, &c->dim, e) ||
        gguf_int(g, "llama.block_count", -1, 1, BIG, &c->n_layers, e) ||
        gguf_int(g, "llama.attention.head_count", -1, 1, BIG, &c->n_heads, e) ||
        gguf_int(g, "llama.attention.head_count_kv", c->n_heads, 1, BIG, &c->n_kv_heads, e) ||
        gguf_int(g, "llama.feed_forward_length", -1, 1, BIG, &c->hidden, e) ||
        gguf_int(g, "llama.context_length", -1, 1, BIG, &c->max_seq, e))
        return -1;
    double eps, theta = 10000.0;
    if (gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", 1, &eps, e) < 0 ||
        gguf_get_float(g, "llama.rope.freq_base", 0, &theta, e) < 0)
        return -1;
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    /* the head size: attention.key_length (llama.cpp's n_embd_head_k), by default
     * embedding_length / head_count; value_length and the rotated dimensions must equal it */
    int hs = c->dim % c->n_heads ? 0 : c->dim / c->n_heads, v;
    if (gguf_int(g, "llama.attention.key_length", hs, 0, BIG, &hs, e)) return -1;
    if (hs == 0)
        return err_set(e, "%s: llama.embedding_length %d is not a multiple of head_count %d and "
                          "llama.attention.key_length is not set", g->path, c->dim, c->n_heads);
    static const char *const hs_keys[] = {"llama.rope.dimension_count", "llama.attention.value_length"};
    for (int k = 0; k < 2; k++) {
        v = hs;
        if (gguf_int(g, hs_keys[k], hs, 1, BIG, &v, e)) return -1;
        if (v != hs)
            return err_set(e, "%s: %s = %d, not the head size %d (not supported)", g->path, hs_keys[k], v, hs);
    }
    c->head_dim = c->dim % c->n_heads == 0 && hs == c->dim / c->n_heads ? 0 : hs;
    const char *st;
    size_t sl;
    int r = gguf_get_str(g, "llama.rope.scaling.type", 0, &st, &sl, e);
    if (r < 0) return -1;
    if (r == 1 && !(sl == 4 && memcmp(st, "none", 4) == 0))
        return err_set(e, "%s: rope scaling %.*s not supported (supported: none, Llama 3.1's rope_freqs)", g->path,
                       (int)(sl < 40 ? sl : 40), st);
    /* vocab: the token list, else llama.vocab_size, else the embedding's rows */
    const GgufKV *toks;
    const GgufTensor *emb = gguf_tensor(g, "token_embd.weight");
    r = gguf_get_array(g, "tokenizer.ggml.tokens", 0, GGUF_STRING, &toks, e);
    if (r < 0) return -1;
    if (r == 1) c->vocab = (int)(toks->n < (uint64_t)BIG ? toks->n : (uint64_t)BIG);
    else if (gguf_find(g, "llama.vocab_size")) {
        if (gguf_int(g, "llama.vocab_size", -1, 2, BIG, &c->vocab, e)) return -1;
    } else if (emb && emb->ndim == 2) c->vocab = (int)emb->ne[1];
    else return err_set(e, "%s: missing metadata key llama.vocab_size (and no tokenizer.ggml.tokens)", g->path);
    c->tied = gguf_tensor(g, "output.weight") == NULL;
    const GgufTensor *rt = gguf_tensor(g, "rope_freqs.weight");
    if (rt && gguf_rope_llama3(g, rt, c, e)) return -1;
    const char *name;
    size_t nl;
    r = gguf_get_str(g, "general.name", 0, &name, &nl, e);
    if (r < 0) return -1;
    if (r == 1) snprintf(c->name, sizeof c->name, "%.*s", (int)(nl < sizeof c->name ? nl : sizeof c->name - 1), name);
    Err ve;
    if (config_validate(c, &ve)) return err_set(e, "%s: %s", g->path, ve.msg);
    return 0;
}

int gguf_llama_config(const char *path, LlamaConfig *c, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    int rc = gguf_config(&g, c, e);
    if (rc == 0 && !c->name[0]) {
        const char *base = strrchr(path, '/');
        snprintf(c->name, sizeof c->name, "%s", base ? base + 1 : path);
    }
    gguf_close(&g);
    return rc;
}

/* The GGUF tensor of table entry p (its llama.cpp name into name), or NULL
 * with "<file>: missing tensor ...". */
static const GgufTensor *find_tensor(const Gguf *g, const ParamInfo *p, char name[96], Err *e) {
    LC_ASSERT(gguf_tensor_name(p->name, name, 96) == 0);
    const GgufTensor *x = gguf_tensor(g, name);
    if (!x) err_set(e, "%s: missing tensor %s (%s)", g->path, name, p->name);
    return x;
}

/* 1 for a q_proj, 2 for a k_proj weight (rows llama.cpp stores in its RoPE order), else 0 */
static int rope_rows(const char *hf) {
    size_t len = strlen(hf);
    if (len > 14 && strcmp(hf + len - 14, ".q_proj.weight") == 0) return 1;
    return len > 14 && strcmp(hf + len - 14, ".k_proj.weight") == 0 ? 2 : 0;
}

int gguf_llama_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    int rc = -1, hs = config_head_size(c);
    float *scratch = NULL;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        char name[96];
        const GgufTensor *x = find_tensor(&g, p, name, e);
        if (!x) goto out;
        /* GGUF dims are innermost first: a HF (rows, cols) matrix is [cols, rows] */
        int same = p->ndim == 1 ? x->ndim == 1 && x->ne[0] == p->shape[0]
                                : x->ndim == 2 && x->ne[0] == p->shape[1] && x->ne[1] == p->shape[0];
        if (!same) {
            if (p->ndim == 1)
                err_set(e, "%s: tensor %s has %d dims [%lld, %lld], the metadata needs [%lld]", path, name, x->ndim,
                        (long long)x->ne[0], (long long)x->ne[1], (long long)p->shape[0]);
            else
                err_set(e, "%s: tensor %s has %d dims [%lld, %lld], the metadata needs [%lld, %lld]", path, name,
                        x->ndim, (long long)x->ne[0], (long long)x->ne[1], (long long)p->shape[1],
                        (long long)p->shape[0]);
            goto out;
        }
        float *dst = params + p->offset;
        int is_q = rope_rows(p->name) == 1, is_k = rope_rows(p->name) == 2;
        if (is_q || is_k) { /* llama.cpp's RoPE row order back to HF's (gguf.h) */
            scratch = xrealloc(scratch, p->numel * sizeof *scratch);
            if (gguf_tensor_f32(&g, x, scratch, e)) goto out;
            gguf_unpermute_rows(dst, scratch, is_q ? c->n_heads : c->n_kv_heads, hs, p->shape[1]);
        } else if (gguf_tensor_f32(&g, x, dst, e)) {
            goto out;
        }
        if (iofile_check_finite(path, name, dst, p->numel, e)) goto out;
        gguf_tensor_drop(&g, x);
    }
    rc = 0;
out:
    free(scratch);
    gguf_close(&g);
    return rc;
}

int gguf_llama_tensor_type(const Gguf *g, const char *hf, uint32_t *type, Err *e) {
    char name[96];
    LC_ASSERT(gguf_tensor_name(hf, name, sizeof name) == 0);
    const GgufTensor *x = gguf_tensor(g, name);
    if (!x) return err_set(e, "%s: missing tensor %s (%s)", g->path, name, hf);
    *type = x->type;
    return 0;
}

int gguf_llama_load_quant(const char *path, const LlamaConfig *c, const ParamTable *t, uint8_t *qdata, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    int rc = -1, hs = config_head_size(c);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        if (!p->qtype) continue;
        char name[96];
        const GgufTensor *x = find_tensor(&g, p, name, e);
        if (!x) goto out;
        if (x->ndim != 2 || x->ne[0] != p->shape[1] || x->ne[1] != p->shape[0]) {
            err_set(e, "%s: tensor %s has dims [%lld, %lld], the metadata needs [%lld, %lld]", path, name,
                    (long long)x->ne[0], (long long)x->ne[1], (long long)p->shape[1], (long long)p->shape[0]);
            goto out;
        }
        if (x->type != p->qtype) {
            err_set(e, "%s: tensor %s is %s, the plan says %s", path, name, gguf_type_name(x->type),
                    quant_name(p->qtype));
            goto out;
        }
        uint8_t *dst = qdata + p->qoffset;
        LC_ASSERT(x->nbytes == p->qbytes);
        int is_q = rope_rows(p->name) == 1, is_k = rope_rows(p->name) == 2;
        QTensor q = quant_tensor(p->qtype, (int)p->shape[0], (int)p->shape[1], dst);
        if (is_q || is_k) /* llama.cpp's RoPE row order back to HF's, whole rows of blocks */
            gguf_unpermute_row_bytes(dst, x->data, is_q ? c->n_heads : c->n_kv_heads, hs, q.row_bytes);
        else
            memcpy(dst, x->data, p->qbytes);
        long bad = quant_nonfinite_rows(&q);
        if (bad && iofile_nonfinite_rows(path, name, (size_t)bad, (size_t)q.rows, e)) goto out;
        gguf_tensor_drop(&g, x);
    }
    rc = 0;
out:
    gguf_close(&g);
    return rc;
}

int gguf_llama_print(const char *path, FILE *f, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    int count[64] = {0};
    uint64_t bytes = 0;
    for (int i = 0; i < g.n_tensors; i++) {
        if (g.t[i].type < 64) count[g.t[i].type]++;
        bytes += g.t[i].nbytes;
    }
    fprintf(f, "%s: GGUF v%u, %d metadata entries, %d tensors (%.1f MB):", path, g.version, g.n_kv, g.n_tensors,
            (double)bytes / 1e6);
    for (int k = 0; k < 64; k++)
        if (count[k]) fprintf(f, " %s x%d", gguf_type_name((uint32_t)k), count[k]);
    const char *m = "none", *pre = "-";
    size_t ml = 4, pl = 1;
    Err ig;
    gguf_get_str(&g, "tokenizer.ggml.model", 0, &m, &ml, &ig);
    gguf_get_str(&g, "tokenizer.ggml.pre", 0, &pre, &pl, &ig);
    fprintf(f, "\n  vocabulary: %.*s, pre-tokenizer %.*s, chat template %s\n", (int)ml, m, (int)pl, pre,
            gguf_find(&g, "tokenizer.chat_template") ? "yes" : "no");
    gguf_close(&g);
    return 0;
}
