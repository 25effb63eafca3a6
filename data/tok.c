/*
 * tok.c: see tok.h. Detection reads the first bytes of the file; each kind
 * is one row of a table of functions (load, free, encode, decode, token
 * bytes, special id), so adding a kind is adding a row.
 */
#include "tok.h"

#include <jansson.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bbpe.h"
#include "gguf.h"
#include "spm.h"

// ---------------------------------------------------------------------------
// special tokens named in the text, for kinds whose encoder has no such mode

/* Leftmost-longest special name at or after text[i]: its start (len if
 * none), with *id and *n its id and byte length. */
typedef size_t (*NextSpecial)(const Tokenizer *t, const char *text, size_t len, size_t i, int *id,
                              size_t *n);
typedef size_t (*PlainEncode)(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                              size_t *cap);

/* Encode the text between special names with enc, the names as their ids. */
static size_t encode_split(const Tokenizer *t, const char *text, size_t len, NextSpecial next,
                           PlainEncode enc, int32_t **ids, size_t *cap) {
    int32_t *part = NULL;
    size_t pcap = 0, n = 0;
    for (size_t i = 0; i <= len;) {
        int id = -1;
        size_t m = 0, j = next(t, text, len, i, &id, &m);
        size_t k = enc(t, text + i, j - i, &part, &pcap);
        if (n + k + 1 > *cap) {
            *cap = 2 * (n + k + 1);
            *ids = xrealloc(*ids, *cap * sizeof **ids);
        }
        if (k) memcpy(*ids + n, part, k * sizeof *part);
        n += k;
        if (j == len) break;
        (*ids)[n++] = id;
        i = j + m;
    }
    free(part);
    return n;
}

// ---------------------------------------------------------------------------
// kind: llamac's own BPE

static int llamac_load(Tokenizer *t, const char *path, Err *e) {
    t->bpe = xcalloc(1, sizeof *t->bpe);
    if (bpe_load(t->bpe, path, e)) return -1;
    t->vocab = t->bpe->vocab;
    t->bos = t->bpe->bos;
    t->eos = t->bpe->eos;
    t->eot = bpe_special_id(t->bpe, BPE_EOT);
    if (t->eot < 0) t->eot = t->eos;
    t->id = t->bpe->id;
    return 0;
}

static void llamac_free(Tokenizer *t) {
    if (t->bpe) bpe_free(t->bpe);
    free(t->bpe);
    t->bpe = NULL;
}

static size_t llamac_next_special(const Tokenizer *t, const char *text, size_t len, size_t i, int *id,
                                  size_t *n) {
    const Bpe *b = t->bpe;
    for (; i < len; i++) {
        const char *p = memchr(text + i, '<', len - i); /* every llamac special starts with '<' */
        if (!p) return len;
        i = (size_t)(p - text);
        size_t best = 0;
        for (int k = 0; k < b->n_special; k++) {
            size_t m = strlen(b->special[k]);
            if (m > best && m <= len - i && memcmp(text + i, b->special[k], m) == 0) {
                best = m;
                *id = 256 + b->n_merges + k;
            }
        }
        if (best) {
            *n = best;
            return i;
        }
    }
    return len;
}

static size_t llamac_plain(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *cap) {
    return bpe_encode(t->bpe, text, len, ids, cap);
}

static size_t llamac_encode(const Tokenizer *t, const char *text, size_t len, int special,
                            int32_t **ids, size_t *cap) {
    if (!special) return bpe_encode(t->bpe, text, len, ids, cap);
    return encode_split(t, text, len, llamac_next_special, llamac_plain, ids, cap);
}

static size_t llamac_decode(const Tokenizer *t, const int32_t *ids, size_t n, char **out,
                            size_t *cap) {
    return bpe_decode(t->bpe, ids, n, out, cap);
}

static const char *llamac_token_bytes(const Tokenizer *t, int id, size_t *len) {
    return bpe_token_bytes(t->bpe, id, len);
}

static int llamac_special_id(const Tokenizer *t, const char *name) {
    return bpe_special_id(t->bpe, name);
}

// ---------------------------------------------------------------------------
// kinds: byte-level BPE from tokenizer.json or tiktoken (bbpe.h)

static int bb_fill(Tokenizer *t) {
    t->vocab = t->bb->vocab;
    t->bos = t->bb->bos;
    t->eos = t->bb->eos;
    t->eot = t->bb->eot;
    t->id = t->bb->id;
    return 0;
}

/* tokenizer_config.json's bos_token / eos_token (a string, or an object
 * with "content") beside a tokenizer.json: what transformers uses, where
 * tokenizer.json alone does not say (SmolLM2's EOS is <|im_end|>, not the
 * <|endoftext|> the name search finds). Names outside the vocabulary, and
 * an unreadable file, leave the ids found by name. */
static void hf_config_specials(Tokenizer *t, const char *path) {
    const char *slash = strrchr(path, '/');
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
    /* numbers as reals: model_max_length is int(1e30) in what transformers saves without one */
    json_t *j = json_load_file(cfg, JSON_DECODE_INT_AS_REAL, NULL);
    if (!j) return;
    static const char *const keys[2] = {"bos_token", "eos_token"};
    int *ids[2] = {&t->bos, &t->eos};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(j, keys[k]);
        if (json_is_object(v)) v = json_object_get(v, "content");
        int id = json_is_string(v) ? tok_special_id(t, json_string_value(v)) : -1;
        if (id < 0) continue;
        if (k == 1 && t->eot == t->eos) t->eot = id; /* a reply ends where the model's EOS is */
        *ids[k] = id;
    }
    json_decref(j);
}

static int hf_load(Tokenizer *t, const char *path, Err *e) {
    t->bb = xcalloc(1, sizeof *t->bb);
    if (bbpe_load_json(t->bb, path, e) || bb_fill(t)) return -1;
    hf_config_specials(t, path);
    return 0;
}

static int tiktoken_load(Tokenizer *t, const char *path, Err *e) {
    t->bb = xcalloc(1, sizeof *t->bb);
    return bbpe_load_tiktoken(t->bb, path, e) ? -1 : bb_fill(t);
}

static void bb_free(Tokenizer *t) {
    if (t->bb) bbpe_free(t->bb);
    free(t->bb);
    t->bb = NULL;
}

static size_t bb_encode(const Tokenizer *t, const char *text, size_t len, int special,
                        int32_t **ids, size_t *cap) {
    return bbpe_encode(t->bb, text, len, special, ids, cap);
}

static size_t bb_decode(const Tokenizer *t, const int32_t *ids, size_t n, char **out,
                        size_t *cap) {
    return bbpe_decode(t->bb, ids, n, out, cap);
}

static const char *bb_token_bytes(const Tokenizer *t, int id, size_t *len) {
    return bbpe_token_bytes(t->bb, id, len);
}

static int bb_special_id(const Tokenizer *t, const char *name) {
    return bbpe_special_id(t->bb, name);
}

// ---------------------------------------------------------------------------
// kind: SentencePiece (spm.h)

struct TokSpm {
    Spm s;
    char *bytes;       /* every id's bytes for streaming, back to back */
    int64_t *off;      /* (V + 1) */
    int32_t *special;  /* (nspecial) CONTROL and UNKNOWN ids, matched by name */
    int nspecial;
};

/* With t->spm->s loaded: the Tokenizer fields and the per-id bytes. */
static void spm_kind_fill(Tokenizer *t) {
    struct TokSpm *x = t->spm;
    const Spm *s = &x->s;
    t->vocab = s->vocab;
    t->bos = s->bos;
    t->eos = s->eos;
    t->eot = s->eos;
    t->id = s->id;
    /* per-id bytes: "▁" (E2 96 81) -> ' ', <0xNN> -> the byte, CONTROL -> nothing */
    size_t total = 0, len;
    for (int i = 0; i < s->vocab; i++) {
        spm_piece(s, i, &len);
        total += s->type[i] == SPM_UNKNOWN ? strlen(s->unk_surface) : len;
    }
    x->bytes = xmalloc(total + 1);
    x->off = xmalloc(((size_t)s->vocab + 1) * sizeof *x->off);
    x->special = xmalloc(((size_t)s->vocab + 1) * sizeof *x->special);
    size_t m = 0;
    for (int i = 0; i < s->vocab; i++) {
        const char *p = spm_piece(s, i, &len);
        x->off[i] = (int64_t)m;
        if (s->type[i] == SPM_CONTROL || s->type[i] == SPM_UNKNOWN) x->special[x->nspecial++] = i;
        if (s->type[i] == SPM_CONTROL) continue;
        if (s->type[i] == SPM_UNKNOWN) {
            memcpy(x->bytes + m, s->unk_surface, strlen(s->unk_surface));
            m += strlen(s->unk_surface);
        } else if (s->type[i] == SPM_BYTE) {
            for (int b = 0; b < 256; b++)
                if (s->byte_id[b] == i) x->bytes[m++] = (char)b;
        } else {
            for (size_t k = 0; k < len; k++) {
                if (k + 2 < len && (uint8_t)p[k] == 0xe2 && (uint8_t)p[k + 1] == 0x96 &&
                    (uint8_t)p[k + 2] == 0x81) {
                    x->bytes[m++] = ' ';
                    k += 2;
                } else {
                    x->bytes[m++] = p[k];
                }
            }
        }
    }
    x->off[s->vocab] = (int64_t)m;
    t->pad = s->pad;
}

static int spm_kind_load(Tokenizer *t, const char *path, Err *e) {
    t->spm = xcalloc(1, sizeof *t->spm);
    if (spm_load(&t->spm->s, path, e)) return -1;
    spm_kind_fill(t);
    return 0;
}

static void spm_kind_free(Tokenizer *t) {
    if (t->spm) {
        spm_free(&t->spm->s);
        free(t->spm->bytes);
        free(t->spm->off);
        free(t->spm->special);
    }
    free(t->spm);
    t->spm = NULL;
}

static size_t spm_next_special(const Tokenizer *t, const char *text, size_t len, size_t i, int *id,
                               size_t *n) {
    const struct TokSpm *x = t->spm;
    for (; i < len; i++) {
        size_t best = 0, pl;
        for (int k = 0; k < x->nspecial; k++) {
            const char *p = spm_piece(&x->s, x->special[k], &pl);
            if (pl > best && pl <= len - i && memcmp(text + i, p, pl) == 0) {
                best = pl;
                *id = x->special[k];
            }
        }
        if (best) {
            *n = best;
            return i;
        }
    }
    return len;
}

static size_t spm_plain(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *cap) {
    return spm_encode(&t->spm->s, text, len, ids, cap);
}

static size_t spm_kind_encode(const Tokenizer *t, const char *text, size_t len, int special,
                              int32_t **ids, size_t *cap) {
    if (!special) return spm_plain(t, text, len, ids, cap);
    return encode_split(t, text, len, spm_next_special, spm_plain, ids, cap);
}

static size_t spm_kind_decode(const Tokenizer *t, const int32_t *ids, size_t n, char **out,
                              size_t *cap) {
    return spm_decode(&t->spm->s, ids, n, out, cap);
}

static const char *spm_kind_token_bytes(const Tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->vocab) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)(t->spm->off[id + 1] - t->spm->off[id]);
    return t->spm->bytes + t->spm->off[id];
}

static int spm_kind_special_id(const Tokenizer *t, const char *name) {
    for (int k = 0; k < t->spm->nspecial; k++) {
        size_t pl;
        const char *p = spm_piece(&t->spm->s, t->spm->special[k], &pl);
        if (pl == strlen(name) && memcmp(p, name, pl) == 0) return t->spm->special[k];
    }
    return -1;
}

// ---------------------------------------------------------------------------
// kind: the vocabulary inside a GGUF file (gguf.h): llama.cpp's "gpt2"
// (byte-level BPE, bbpe.h) or "llama" (SentencePiece, spm.h) model

/* GPT-2's split without its last alternative (llama.cpp's form: what it
 * leaves is a gap, which is a piece all the same) */
#define GGUF_GPT2_SPLIT "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"

/* tokenizer.ggml.pre -> llama.cpp's regex_exprs for it (llama-vocab.cpp),
 * applied in turn; Llama 3's also take a piece found whole in the
 * vocabulary as that token (ignore_merges). */
static const struct {
    const char *name;
    int n, ignore_merges;
    const char *re[4];
} gguf_pres[] = {
    {"llama-bpe", 1, 1, {BBPE_LLAMA3_PATTERN}},
    {"llama3", 1, 1, {BBPE_LLAMA3_PATTERN}},
    {"llama-v3", 1, 1, {BBPE_LLAMA3_PATTERN}},
    {"gpt2", 1, 0, {GGUF_GPT2_SPLIT}},
    {"gpt-2", 1, 0, {GGUF_GPT2_SPLIT}},
    {"smollm", 2, 0, {"\\p{N}", GGUF_GPT2_SPLIT}},
    {"starcoder", 2, 0, {"\\p{N}", GGUF_GPT2_SPLIT}},
    {"refact", 2, 0, {"\\p{N}", GGUF_GPT2_SPLIT}},
    {"default", 4, 0, {"[\\p{P}\\$\\+<=>\\^~\\|]+", GGUF_GPT2_SPLIT, "\\p{N}+", "[0-9][0-9][0-9]"}},
};
#define N_GGUF_PRES (sizeof gguf_pres / sizeof gguf_pres[0])

/* llama.cpp's token types (SentencePiece's numbers) */
enum { GGUF_TT_NORMAL = 1, GGUF_TT_UNKNOWN = 2, GGUF_TT_CONTROL = 3, GGUF_TT_USER_DEFINED = 4,
       GGUF_TT_UNUSED = 5, GGUF_TT_BYTE = 6 };

/* An id key into *id (-1 when absent); out of [0, vocab) is an error. */
static int gguf_tok_id(const Gguf *g, const char *key, int vocab, int *id, Err *e) {
    int64_t v;
    int r = gguf_get_int(g, key, 0, &v, e);
    *id = -1;
    if (r < 0) return -1;
    if (r == 0) return 0;
    if (v < 0 || v >= vocab)
        return err_set(e, "%s: metadata %s = %lld is not a token id (vocab %d)", g->path, key, (long long)v, vocab);
    *id = (int)v;
    return 0;
}

/* token types, checked to be in 1..6 ((*out) caller frees; NULL if absent) */
static int gguf_tok_types(const Gguf *g, int vocab, int32_t **out, Err *e) {
    const GgufKV *kv;
    *out = NULL;
    int r = gguf_get_array(g, "tokenizer.ggml.token_type", 0, GGUF_INT32, &kv, e);
    if (r <= 0) return r;
    if (kv->n != (uint64_t)vocab)
        return err_set(e, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens", g->path,
                       (unsigned long long)kv->n, vocab);
    *out = xmalloc((size_t)vocab * sizeof **out);
    for (int i = 0; i < vocab; i++) {
        (*out)[i] = (int32_t)gguf_array_num(kv, (uint64_t)i);
        if ((*out)[i] < GGUF_TT_NORMAL || (*out)[i] > GGUF_TT_BYTE) {
            err_set(e, "%s: token %d has unknown token type %d", g->path, i, (*out)[i]);
            free(*out);
            *out = NULL;
            return -1;
        }
    }
    return 1;
}

static int gguf_bpe(Tokenizer *t, const Gguf *g, const char **tok, const size_t *len, int vocab,
                    const int32_t *type, Err *e) {
    const char *pre = "default";
    size_t pl = 7;
    if (gguf_get_str(g, "tokenizer.ggml.pre", 0, &pre, &pl, e) < 0) return -1;
    size_t k = 0;
    while (k < N_GGUF_PRES && !(strlen(gguf_pres[k].name) == pl && memcmp(gguf_pres[k].name, pre, pl) == 0)) k++;
    if (k == N_GGUF_PRES) {
        char list[256];
        size_t m = 0;
        for (size_t i = 0; i < N_GGUF_PRES; i++)
            m += (size_t)snprintf(list + m, sizeof list - m, "%s%s", i ? ", " : "", gguf_pres[i].name);
        return err_set(e, "%s: pre-tokenizer %.*s not supported (supported: %s)", g->path, (int)(pl < 40 ? pl : 40),
                       pre, list);
    }
    const GgufKV *mk;
    if (gguf_get_array(g, "tokenizer.ggml.merges", 1, GGUF_STRING, &mk, e) < 0) return -1;
    if (mk->n > (uint64_t)INT32_MAX) return err_set(e, "%s: too many merges", g->path);
    const char **merge;
    size_t *mlen;
    gguf_strings(mk, &merge, &mlen);
    uint8_t *added = xcalloc((size_t)vocab, 1);
    for (int i = 0; type && i < vocab; i++)
        if (type[i] == GGUF_TT_CONTROL || type[i] == GGUF_TT_UNKNOWN) added[i] = BBPE_ADDED_SPECIAL;
        else if (type[i] == GGUF_TT_USER_DEFINED) added[i] = BBPE_ADDED_PLAIN;
    snprintf(t->pre, sizeof t->pre, "%s", gguf_pres[k].name);
    BbpeSpec sp = {vocab, tok, len, added, (int)mk->n, merge, mlen, gguf_pres[k].n, gguf_pres[k].re,
                   gguf_pres[k].ignore_merges, -1, -1, -1};
    int rc = gguf_tok_id(g, "tokenizer.ggml.bos_token_id", vocab, &sp.bos, e) ||
             gguf_tok_id(g, "tokenizer.ggml.eos_token_id", vocab, &sp.eos, e) ||
             gguf_tok_id(g, "tokenizer.ggml.eot_token_id", vocab, &sp.eot, e) ||
             gguf_tok_id(g, "tokenizer.ggml.padding_token_id", vocab, &t->pad, e) ? -1 : 0;
    if (rc == 0) {
        t->bb = xcalloc(1, sizeof *t->bb);
        rc = bbpe_init(t->bb, &sp, g->path, e);
    }
    free(added);
    free(merge);
    free(mlen);
    return rc ? -1 : bb_fill(t);
}

static int gguf_spm(Tokenizer *t, const Gguf *g, const char **tok, const size_t *len, int vocab,
                    const int32_t *type, Err *e) {
    const GgufKV *sk;
    int r = gguf_get_array(g, "tokenizer.ggml.scores", 0, GGUF_FLOAT32, &sk, e);
    if (r < 0) return -1;
    if (r == 1 && sk->n != (uint64_t)vocab)
        return err_set(e, "%s: tokenizer.ggml.scores has %llu entries for %d tokens", g->path,
                       (unsigned long long)sk->n, vocab);
    float *score = xcalloc((size_t)vocab, sizeof *score);
    for (int i = 0; r == 1 && i < vocab; i++) score[i] = (float)gguf_array_num(sk, (uint64_t)i);
    int dummy = 1;
    SpmSpec sp = {vocab, tok, len, score, type, 1, -1, -1};
    int rc = gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", 0, &dummy, e) < 0 ||
             gguf_tok_id(g, "tokenizer.ggml.bos_token_id", vocab, &sp.bos, e) ||
             gguf_tok_id(g, "tokenizer.ggml.eos_token_id", vocab, &sp.eos, e) ? -1 : 0;
    sp.add_dummy_prefix = dummy;
    if (rc == 0) {
        t->spm = xcalloc(1, sizeof *t->spm);
        rc = spm_init(&t->spm->s, &sp, g->path, e);
    }
    free(score);
    if (rc) return -1;
    spm_kind_fill(t);
    int eot = -1;
    if (gguf_tok_id(g, "tokenizer.ggml.eot_token_id", vocab, &eot, e) ||
        gguf_tok_id(g, "tokenizer.ggml.padding_token_id", vocab, &t->pad, e))
        return -1;
    if (eot >= 0) t->eot = eot;
    t->kind = TOK_SPM; /* from here on a SentencePiece tokenizer like any other */
    return 0;
}

static int gguf_kind_load(Tokenizer *t, const char *path, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    const char *model;
    size_t ml;
    int rc = -1;
    const char **tok = NULL;
    size_t *len = NULL;
    int32_t *type = NULL;
    if (gguf_get_str(&g, "tokenizer.ggml.model", 1, &model, &ml, e) < 0) goto out;
    int is_bpe = ml == 4 && memcmp(model, "gpt2", 4) == 0, is_spm = ml == 5 && memcmp(model, "llama", 5) == 0;
    if (!is_bpe && !is_spm) {
        if (ml == 8 && memcmp(model, "no_vocab", 8) == 0)
            err_set(e, "%s: holds no vocabulary (tokenizer.ggml.model is no_vocab)", path);
        else
            err_set(e, "%s: tokenizer model %.*s not supported (supported: gpt2, llama)", path,
                    (int)(ml < 40 ? ml : 40), model);
        goto out;
    }
    const GgufKV *tk;
    if (gguf_get_array(&g, "tokenizer.ggml.tokens", 1, GGUF_STRING, &tk, e) < 0) goto out;
    if (tk->n == 0 || tk->n > (uint64_t)(is_bpe ? BBPE_MAX_VOCAB : SPM_MAX_VOCAB)) {
        err_set(e, "%s: tokenizer.ggml.tokens has %llu tokens", path, (unsigned long long)tk->n);
        goto out;
    }
    int vocab = (int)tk->n;
    gguf_strings(tk, &tok, &len);
    if (gguf_tok_types(&g, vocab, &type, e) < 0) goto out;
    rc = is_bpe ? gguf_bpe(t, &g, tok, len, vocab, type, e) : gguf_spm(t, &g, tok, len, vocab, type, e);
    const char *tpl;
    size_t tl;
    if (rc == 0 && gguf_get_str(&g, "tokenizer.chat_template", 0, &tpl, &tl, e) == 1) {
        t->chat_template = xmalloc(tl + 1);
        memcpy(t->chat_template, tpl, tl);
        t->chat_template[tl] = 0;
    } else if (rc == 0 && gguf_find(&g, "tokenizer.chat_template")) {
        rc = -1; /* there, but not a string: e says so */
    }
out:
    free(tok);
    free(len);
    free(type);
    gguf_close(&g);
    return rc;
}

/* before gguf_kind_load has chosen, either half may be there */
static void gguf_kind_free(Tokenizer *t) {
    bb_free(t);
    spm_kind_free(t);
}

// ---------------------------------------------------------------------------
// the table

typedef struct {
    const char *name;
    int (*load)(Tokenizer *t, const char *path, Err *e);
    void (*free)(Tokenizer *t);
    size_t (*encode)(const Tokenizer *t, const char *text, size_t len, int special,
                     int32_t **ids, size_t *cap);
    size_t (*decode)(const Tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *cap);
    const char *(*token_bytes)(const Tokenizer *t, int id, size_t *len);
    int (*special_id)(const Tokenizer *t, const char *name);
} TokImpl;

static const TokImpl impls[TOK_KIND_COUNT] = {
    [TOK_LLAMAC] = {"llamac", llamac_load, llamac_free, llamac_encode, llamac_decode,
                    llamac_token_bytes, llamac_special_id},
    [TOK_HF] = {"tokenizer.json", hf_load, bb_free, bb_encode, bb_decode, bb_token_bytes,
                bb_special_id},
    [TOK_TIKTOKEN] = {"tiktoken", tiktoken_load, bb_free, bb_encode, bb_decode, bb_token_bytes,
                      bb_special_id},
    [TOK_SPM] = {"sentencepiece", spm_kind_load, spm_kind_free, spm_kind_encode, spm_kind_decode,
                 spm_kind_token_bytes, spm_kind_special_id},
    [TOK_GGUF] = {"gguf", gguf_kind_load, gguf_kind_free, bb_encode, bb_decode, bb_token_bytes,
                  bb_special_id},
};

const char *tok_kind_name(TokKind k) {
    return (unsigned)k < TOK_KIND_COUNT ? impls[k].name : "?";
}

/* The kind of a file from its first bytes (n of them). */
static int detect(const uint8_t *b, size_t n) {
    if (n >= 4 && memcmp(b, GGUF_MAGIC, 4) == 0) return TOK_GGUF;
    /* "CTOK" then a small version (a NUL byte, which no tiktoken line holds) */
    if (n >= 4 && memcmp(b, "CTOK", 4) == 0 && (n < 8 || b[7] == 0)) return TOK_LLAMAC;
    size_t i = 0;
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) i++;
    if (i < n && b[i] == '{') return TOK_HF;
    /* a SentencePiece ModelProto starts with field 1 (pieces), length-delimited */
    if (n >= 2 && b[0] == 0x0a) return TOK_SPM;
    /* tiktoken: base64 then a space */
    for (i = 0; i < n; i++) {
        uint8_t c = b[i];
        int b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || c == '=';
        if (c == ' ' && i > 0) return TOK_TIKTOKEN;
        if (!b64) break;
    }
    return -1;
}

int tok_load(Tokenizer *t, const char *path, Err *e) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    uint8_t head[64];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n == 0) return err_set(e, "%s: empty file (not a tokenizer)", path);
    int kind = detect(head, n);
    if (kind < 0)
        return err_set(e, "%s: unknown tokenizer format (supported: llamac tokenizer, "
                          "tokenizer.json, tiktoken, SentencePiece model, GGUF)", path);
    t->kind = (TokKind)kind;
    t->pad = -1;
    if (impls[kind].load(t, path, e)) {
        tok_free(t);
        return -1;
    }
    return 0;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    if ((unsigned)t->kind < TOK_KIND_COUNT && impls[t->kind].free) impls[t->kind].free(t);
    free(t->chat_template);
    memset(t, 0, sizeof *t);
}

size_t tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *cap) {
    return impls[t->kind].encode(t, text, len, 0, ids, cap);
}

size_t tok_encode_special(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                          size_t *cap) {
    return impls[t->kind].encode(t, text, len, 1, ids, cap);
}

size_t tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *cap) {
    return impls[t->kind].decode(t, ids, n, out, cap);
}

const char *tok_token_bytes(const Tokenizer *t, int id, size_t *len) {
    return impls[t->kind].token_bytes(t, id, len);
}

uint64_t tok_vocab_hash(const Tokenizer *t) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a over (length, bytes) of each id */
    for (int id = 0; id < t->vocab; id++) {
        size_t n = 0;
        const char *b = tok_token_bytes(t, id, &n);
        h = (h ^ (uint64_t)n) * 0x100000001b3ULL;
        for (size_t i = 0; b && i < n; i++) h = (h ^ (uint8_t)b[i]) * 0x100000001b3ULL;
    }
    h = hash_mix64(h ^ (uint64_t)t->vocab);
    return h ? h : 1;
}

int tok_special_id(const Tokenizer *t, const char *name) {
    return impls[t->kind].special_id(t, name);
}

size_t tok_utf8_lossy(const char *s, size_t n, char **out, size_t *cap) {
    return bbpe_utf8_lossy(s, n, out, cap);
}

const struct Spm *tok_spm_model(const Tokenizer *t) { return t->kind == TOK_SPM ? &t->spm->s : NULL; }

size_t tok_merges(const Tokenizer *t, int32_t **ab) {
    LC_ASSERT(t->kind != TOK_SPM);
    if (t->kind != TOK_LLAMAC) return bbpe_merges(t->bb, ab);
    size_t n = (size_t)t->bpe->n_merges;
    *ab = xmalloc((2 * n + 1) * sizeof **ab);
    for (size_t i = 0; i < n; i++) (*ab)[2 * i] = t->bpe->merges[i][0], (*ab)[2 * i + 1] = t->bpe->merges[i][1];
    return n;
}
