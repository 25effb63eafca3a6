/*
 * test_gguf.c: the GGUF reader (data/gguf.h) and what is built on it:
 * dequantisation against gguf-py's own dequantiser (the committed
 * tests/fixtures/gguf_quant.gguf from scripts/gguf_ref.py holds each type's
 * blocks and the expected float32 values; LLAMAC_GGUF_QUANT names another
 * such file, as scripts/test_gguf.py does with a larger one), models in
 * (llamac's own GGUF export read back exactly, q/k rows and Llama 3.1 rope
 * scaling included), vocabularies as tokenizers (tests/fixtures/gguf_vocab.gguf
 * carries the ids Hugging Face tokenizers gives its texts), and every bad input: cut
 * files, lying offsets and sizes, unknown and unsupported tensor types,
 * another architecture, missing metadata, unknown tokenizer model or
 * pre-tokenizer, each one line naming the file and what is wrong, in-process
 * and through the binary (exit 1, nothing existing overwritten). The
 * comparisons with gguf-py, tokenizers and transformers on real files are
 * scripts/test_gguf.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/bpe.h"
#include "../data/chat.h"
#include "../data/gguf.h"
#include "../data/tok.h"
#include "../model/params.h"
#include "../train/io/source.h"
#include "../train/io/gguf.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tgguf"

static void setup(void) { mkdir("build", 0755), mkdir(DIR, 0755); }

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    LC_ASSERT(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = xmalloc(*n + 1);
    LC_ASSERT(fread(b, 1, *n, f) == *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f && fwrite(p, 1, n, f) == n && fclose(f) == 0);
}

static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }

// ---------------------------------------------------------------------------
// dequantisation

void gguf_dequant(void) {
    const char *path = getenv("LLAMAC_GGUF_QUANT");
    if (!path) path = "tests/fixtures/gguf_quant.gguf";
    Gguf g;
    Err e;
    EXPECT(gguf_open(&g, path, &e) == 0, "%s", e.msg);
    if (!g.map) return;
    int types = 0;
    for (int i = 0; i < g.n_tensors; i++) {
        const GgufTensor *t = &g.t[i];
        if (strstr(t->name, ".want")) continue;
        char want_name[128];
        snprintf(want_name, sizeof want_name, "%s.want", t->name);
        const GgufTensor *w = gguf_tensor(&g, want_name);
        EXPECT(w && w->type == GGML_TYPE_F32 && w->numel == t->numel, "%s: no float32 %s", t->name, want_name);
        if (!w) continue;
        EXPECT(strcmp(gguf_type_name(t->type), t->name) == 0, "tensor %s has type %s", t->name,
               gguf_type_name(t->type));
        float *got = xmalloc((size_t)t->numel * sizeof *got);
        EXPECT(gguf_tensor_f32(&g, t, got, &e) == 0, "%s", e.msg);
        int64_t bad = 0, first = -1;
        for (int64_t k = 0; k < t->numel; k++) /* bit for bit (gguf-py computes in float32 too) */
            if (memcmp(got + k, w->data + 4 * k, 4) != 0 && bad++ == 0) first = k;
        float ref = 0;
        if (first >= 0) memcpy(&ref, w->data + 4 * first, 4);
        EXPECT(bad == 0, "%s: %lld of %lld values differ, first at %lld: %.9g, gguf-py %.9g", t->name,
               (long long)bad, (long long)t->numel, (long long)first, first >= 0 ? got[first] : 0.0, ref);
        free(got);
        types++;
    }
    EXPECT(types == 11, "%d types checked, expected 11", types);
    gguf_close(&g);
    /* the half conversion on every bit pattern that is not NaN */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        float f = gguf_half_to_float((uint16_t)h);
        int ex = (int)((h >> 10) & 0x1f), man = (int)(h & 0x3ff);
        double want = ex == 31 ? INFINITY : ex ? ldexp(1.0 + man / 1024.0, ex - 15) : ldexp(man / 1024.0, -14);
        if (h & 0x8000) want = -want;
        if ((double)f != want) {
            EXPECT(0, "half 0x%04x -> %.9g, expected %.9g", h, f, want);
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// models in: llamac's own export, read back exactly

static LlamaConfig tiny(int tied, int scaled, int orig_ctx) {
    LlamaConfig c;
    Err e;
    LC_ASSERT(config_preset("tiny", &c, &e) == 0);
    c.tied = tied;
    c.n_kv_heads = 2; /* GQA: q and k rows unpermuted with their own head counts */
    if (scaled) {     /* Llama 3.1's rope_freqs */
        c.rope_scaling = ROPE_SCALING_LLAMA3;
        c.rope_theta = 500000.0f;
        c.rope_factor = 8.0f;
        c.rope_low_freq = 1.0f;
        c.rope_high_freq = 4.0f;
        c.rope_orig_ctx = orig_ctx;
    }
    return c;
}

static float *random_model(const LlamaConfig *c, ParamTable *t, uint64_t seed) {
    Err e;
    LC_ASSERT(params_build(c, t, &e) == 0);
    float *p = xalloc_aligned(t->size * sizeof(float));
    params_init(t, p, c->n_layers, seed);
    return p;
}

static int same_params(const ParamTable *t, const float *a, const float *b) {
    for (int i = 0; i < t->n; i++)
        if (memcmp(a + t->p[i].offset, b + t->p[i].offset, t->p[i].numel * sizeof *a) != 0) return 0;
    return 1;
}

/* a tiny llama GGUF at path (llamac's exporter), with tok's vocabulary if any */
static void write_model(const char *path, const LlamaConfig *c, const Tokenizer *tok, uint64_t seed) {
    ParamTable t;
    float *p = random_model(c, &t, seed);
    Err e;
    LC_ASSERT(gguf_save_llama(path, c, &t, p, "tiny", tok, &e) == 0);
    free(p);
    params_free(&t);
}

void gguf_model_roundtrip(void) {
    setup();
    /* tied; untied and version 2; Llama 3.1 scaling: Meta's, then others with
     * one and three of the 8 frequencies in the smooth band */
    for (int k = 0; k < 5; k++) {
        LlamaConfig c = tiny(k == 0, k >= 2, k == 2 ? 8192 : k == 3 ? 48 : 200), r;
        if (k == 3) c.rope_factor = 32.0f, c.rope_high_freq = 3.0f, c.rope_theta = 10000.0f;
        if (k == 4) c.rope_factor = 16.0f, c.rope_high_freq = 12.0f, c.rope_theta = 10000.0f;
        ParamTable t;
        float *p = random_model(&c, &t, 11 + (uint64_t)k);
        Err e;
        const char *path = DIR "/rt.gguf";
        LC_ASSERT(gguf_save_llama(path, &c, &t, p, "tiny", NULL, &e) == 0);
        if (k == 1) { /* version 2 has the same layout (3 only added big-endian files) */
            size_t n;
            unsigned char *b = slurp(path, &n);
            put_u32(b + 4, 2);
            spit(path, b, n);
            free(b);
        }
        ModelSource src;
        EXPECT(source_open(&src, path, &e) == 0, "case %d: %s", k, e.msg);
        r = src.c;
        EXPECT(src.tokenizer_id == 0 && src.kind == SOURCE_GGUF && !src.tokenizer[0],
               "case %d: no vocabulary, so no tokenizer id", k);
        EXPECT(r.dim == c.dim && r.n_layers == c.n_layers && r.n_heads == c.n_heads &&
                   r.n_kv_heads == c.n_kv_heads && r.hidden == c.hidden && r.vocab == c.vocab &&
                   r.max_seq == c.max_seq && r.norm_eps == c.norm_eps && r.rope_theta == c.rope_theta &&
                   r.tied == c.tied && r.rope_scaling == c.rope_scaling,
               "case %d: config differs (tied %d/%d vocab %d/%d)", k, r.tied, c.tied, r.vocab, c.vocab);
        if (c.rope_scaling) { /* the same parameters, or (k >= 3) ones giving the same factors */
            float f1[8], f2[8];
            gguf_rope_factors(&c, f1);
            gguf_rope_factors(&r, f2);
            int same = 1;
            for (int i = 0; i < config_head_size(&c) / 2; i++) same &= fabsf(f1[i] - f2[i]) <= 1e-5f * f1[i];
            EXPECT(same && r.rope_factor == c.rope_factor && (k >= 3 || (r.rope_low_freq == c.rope_low_freq &&
                                                                          r.rope_high_freq == c.rope_high_freq &&
                                                                          r.rope_orig_ctx == c.rope_orig_ctx)),
                   "case %d: rope scaling recovered as factor %g low %g high %g ctx %d", k, r.rope_factor,
                   r.rope_low_freq, r.rope_high_freq, r.rope_orig_ctx);
        }
        EXPECT(strcmp(r.name, "tiny") == 0, "name %s (general.name)", r.name);
        float *q = xalloc_aligned(t.size * sizeof(float));
        EXPECT(source_load(&src, &t, q, &e) == 0, "case %d: %s", k, e.msg);
        EXPECT(same_params(&t, p, q), "case %d: the weights changed on the way through GGUF", k);
        free(p);
        free(q);
        params_free(&t);
    }
}

// ---------------------------------------------------------------------------
// vocabularies in

static const char *const texts[] = {
    "the cat sees the dog and the dog sees the cat", "a b c a b c a b c 123 4567",
    "Hello, world!  Tabs\tand\nnewlines\r\n", "na\xc3\xafve caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87",
};
#define NTEXTS (int)(sizeof texts / sizeof texts[0])

/* llamac's BPE trained on texts, saved to DIR/tok.bin, and a tiny model
 * carrying it as a GGUF at path; *b the trained tokenizer */
static void model_with_vocab(const char *path, Bpe *b) {
    size_t lens[NTEXTS];
    for (int i = 0; i < NTEXTS; i++) lens[i] = strlen(texts[i]);
    Err e;
    LC_ASSERT(bpe_train(b, texts, lens, NTEXTS, 300, &e) == 0);
    LC_ASSERT(bpe_save(b, DIR "/tok.bin", &e) == 0);
    Tokenizer t;
    LC_ASSERT(tok_load(&t, DIR "/tok.bin", &e) == 0);
    LlamaConfig c = tiny(1, 0, 0);
    c.vocab = 320;
    write_model(path, &c, &t, 5);
    tok_free(&t);
}

void gguf_tokenizer(void) {
    setup();
    Bpe b;
    Err e;
    model_with_vocab(DIR "/voc.gguf", &b);
    Tokenizer t;
    EXPECT(tok_load(&t, DIR "/voc.gguf", &e) == 0, "%s", e.msg);
    if (!t.bb) {
        bpe_free(&b);
        return;
    }
    EXPECT(t.kind == TOK_GGUF && strcmp(tok_kind_name(t.kind), "gguf") == 0, "kind %s", tok_kind_name(t.kind));
    EXPECT(t.vocab == 320 && t.bos == b.bos && t.eos == b.eos && t.pad == -1 && !t.chat_template,
           "vocab %d bos %d/%d eos %d/%d pad %d", t.vocab, t.bos, b.bos, t.eos, b.eos, t.pad);
    EXPECT(tok_special_id(&t, BPE_EOT) == bpe_special_id(&b, BPE_EOT) && t.eot == t.eos + 3,
           "eot %d, special %d", t.eot, tok_special_id(&t, BPE_EOT));
    int32_t *ids = NULL;
    size_t cap = 0, dcap = 0;
    char *dec = NULL;
    for (int i = 0; i < NTEXTS; i++) { /* every text decodes back (the split is GPT-2's, not llamac's) */
        size_t n = tok_encode(&t, texts[i], strlen(texts[i]), &ids, &cap);
        size_t m = tok_decode(&t, ids, n, &dec, &dcap);
        EXPECT(n > 0 && n < strlen(texts[i]) && m == strlen(texts[i]) && memcmp(dec, texts[i], m) == 0,
               "text %d: %zu ids, %zu bytes back", i, n, m);
    }
    const char *sp = "<|begin_of_text|>hi<|eot_id|>";
    size_t n = tok_encode_special(&t, sp, strlen(sp), &ids, &cap);
    EXPECT(n >= 3 && ids[0] == t.bos && ids[n - 1] == t.eot, "special encoding: %zu ids", n);
    n = tok_encode(&t, sp, strlen(sp), &ids, &cap);
    EXPECT(n > 3 && ids[0] != t.bos, "special names are text in plain encoding");
    free(ids);
    free(dec);
    /* the model file's tokenizer id is its vocabulary's */
    ModelSource src;
    EXPECT(source_open(&src, DIR "/voc.gguf", &e) == 0 && src.tokenizer_id == t.id &&
               strcmp(src.tokenizer, DIR "/voc.gguf") == 0, "model tokenizer id");
    tok_free(&t);
    bpe_free(&b);
}

/* tests/fixtures/gguf_vocab.gguf (scripts/gguf_ref.py vocab): a "gpt2"
 * vocabulary with the smollm pre-tokenizer, and the ids Hugging Face
 * tokenizers gives its test texts, which the file carries as metadata */
void gguf_vocab_fixture(void) {
    const char *path = "tests/fixtures/gguf_vocab.gguf";
    Tokenizer t;
    Gguf g;
    Err e;
    EXPECT(tok_load(&t, path, &e) == 0, "%s", e.msg);
    EXPECT(gguf_open(&g, path, &e) == 0, "%s", e.msg);
    if (!t.bb || !g.map) return;
    EXPECT(t.kind == TOK_GGUF && t.bos == 1 && t.eos == 2 && t.eot == 2 && t.pad == 0 && strcmp(t.pre, "smollm") == 0,
           "kind %d bos %d eos %d eot %d pad %d", t.kind, t.bos, t.eos, t.eot, t.pad);
    const char *tpl;
    size_t tl;
    EXPECT(gguf_get_str(&g, "tokenizer.chat_template", 1, &tpl, &tl, &e) == 1 && t.chat_template &&
               strlen(t.chat_template) == tl && memcmp(t.chat_template, tpl, tl) == 0 &&
               strncmp(t.chat_template, "{% for message in messages %}", 29) == 0,
           "chat template not kept: %s", t.chat_template ? t.chat_template : "(null)");
    EXPECT(tok_special_id(&t, "<|im_start|>") == 1 && tok_special_id(&t, "<tool_call>") == t.vocab - 1,
           "special ids by name");
    int64_t count = 0;
    EXPECT(gguf_get_int(&g, "llamac.test.count", 1, &count, &e) == 1 && count == 9, "%lld texts", (long long)count);
    int32_t *ids = NULL;
    size_t cap = 0;
    for (int k = 0; k < count; k++) {
        char key[64];
        const char *text;
        size_t len;
        snprintf(key, sizeof key, "llamac.test.text.%d", k);
        LC_ASSERT(gguf_get_str(&g, key, 1, &text, &len, &e) == 1);
        for (int special = 0; special < 2; special++) {
            const GgufKV *want;
            snprintf(key, sizeof key, "llamac.test.%s.%d", special ? "special" : "plain", k);
            LC_ASSERT(gguf_get_array(&g, key, 1, GGUF_INT32, &want, &e) == 1);
            size_t n = special ? tok_encode_special(&t, text, len, &ids, &cap) : tok_encode(&t, text, len, &ids, &cap);
            size_t i = 0;
            while (i < n && i < want->n && ids[i] == (int32_t)gguf_array_num(want, i)) i++;
            EXPECT(i == n && i == want->n, "%s: %zu ids, tokenizers %llu, first difference at %zu", key, n,
                   (unsigned long long)want->n, i);
        }
    }
    free(ids);
    gguf_close(&g);
    tok_free(&t);
}

// ---------------------------------------------------------------------------
// bad files

/* the byte offset of the value of metadata key k in buf (after its type) */
static size_t value_at(const unsigned char *buf, size_t n, const char *k) {
    const unsigned char *p = memmem(buf, n, k, strlen(k));
    LC_ASSERT(p);
    return (size_t)(p - buf) + strlen(k) + 4;
}

/* the byte offset of tensor info field f (0 ndim, 1 first dim, 2 type, 3
 * offset) of a 1-D (f 2, 3 assume ndim 1) or any tensor named name */
static size_t info_at(const unsigned char *buf, size_t n, const char *name, int f) {
    const unsigned char *p = memmem(buf, n, name, strlen(name));
    LC_ASSERT(p);
    size_t at = (size_t)(p - buf) + strlen(name);
    uint32_t nd;
    memcpy(&nd, buf + at, 4);
    if (f == 0) return at;
    if (f == 1) return at + 4;
    return at + 4 + 8 * nd + (f == 3 ? 4 : 0);
}

static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

/* Write buf (n bytes) as DIR/bad.gguf and expect model or tokenizer loading
 * (stage 0: config, 1: weights, 2: tokenizer) to fail saying want. */
static void expect_bad(const char *what, const unsigned char *buf, size_t n, int stage, const char *want) {
    const char *path = DIR "/bad.gguf";
    spit(path, buf, n);
    Err e = {{0}};
    LlamaConfig c;
    int rc;
    if (stage == 2) {
        Tokenizer t;
        rc = tok_load(&t, path, &e);
        if (rc == 0) tok_free(&t);
    } else {
        rc = gguf_llama_config(path, &c, &e);
        if (rc == 0 && stage == 1) {
            ParamTable t;
            LC_ASSERT(params_build(&c, &t, &e) == 0);
            float *p = xalloc_aligned(t.size * sizeof(float));
            rc = gguf_llama_load(path, &c, &t, p, &e);
            free(p);
            params_free(&t);
        }
    }
    EXPECT(rc == -1 && strncmp(e.msg, path, strlen(path)) == 0 && strstr(e.msg, want) && !strchr(e.msg, '\n'),
           "%s: rc %d, '%s' lacks '%s'", what, rc, e.msg, want);
}

void gguf_bad_files(void) {
    setup();
    Bpe b;
    model_with_vocab(DIR "/good.gguf", &b);
    bpe_free(&b);
    size_t n;
    unsigned char *good = slurp(DIR "/good.gguf", &n), *x = xmalloc(n);
#define FRESH() memcpy(x, good, n)
    /* cut anywhere: the header, a key, the vocabulary, the tensor infos, the data */
    const char *cut_at[] = {"GGUF", "general.name", "tokenizer.ggml.tokens", "blk.0.attn_q.weight",
                            "output_norm.weight"};
    for (int k = 0; k < 5; k++) {
        const unsigned char *p = memmem(good, n, cut_at[k], strlen(cut_at[k]));
        size_t at = (size_t)(p - good) + (k ? 3 : 6);
        /* early cuts leave too few bytes for the counts the header claims */
        uint64_t nt, nkv;
        memcpy(&nt, good + 8, 8), memcpy(&nkv, good + 16, 8);
        int counts = at >= 24 && (nkv > (at - 24) / 13 || nt > (at - 24) / 29);
        expect_bad(cut_at[k], good, at, 0, counts ? "more than the file can hold" : "truncated");
    }
    expect_bad("cut data", good, n - 100, 0, "runs past the end of the file");
    expect_bad("empty", good, 0, 0, "empty file");
    FRESH();
    x[0] = 'X';
    expect_bad("magic", x, n, 0, "not a GGUF file");
    FRESH();
    put_u32(x + 4, 1);
    expect_bad("version 1", x, n, 0, "GGUF version 1 not supported (supported: 2, 3)");
    FRESH();
    put_u64(x + 8, (uint64_t)1 << 40);
    expect_bad("tensor count", x, n, 0, "tensors, more than the file can hold");
    FRESH();
    put_u64(x + 16, (uint64_t)1 << 40);
    expect_bad("metadata count", x, n, 0, "metadata entries, more than the file can hold");
    /* a string length that lies */
    FRESH();
    put_u64(x + value_at(good, n, "general.name"), (uint64_t)1 << 50);
    expect_bad("string length", x, n, 0, "truncated");
    FRESH();
    put_u32(x + value_at(good, n, "llama.block_count") - 4, 99);
    expect_bad("value type", x, n, 0, "metadata llama.block_count has unknown value type 99");
    FRESH();
    put_u32(x + value_at(good, n, "tokenizer.ggml.tokens"), GGUF_ARRAY); /* the element type */
    expect_bad("nested array", x, n, 0, "array of arrays");
    /* tensor infos that lie */
    const char *q = "blk.0.attn_q.weight", *norm = "output_norm.weight";
    FRESH();
    put_u64(x + info_at(good, n, norm, 3), (uint64_t)1 << 40);
    expect_bad("offset past the end", x, n, 0, "output_norm.weight: data [1099511627776, +256) runs past the end");
    FRESH();
    put_u64(x + info_at(good, n, norm, 3), 4);
    expect_bad("misaligned offset", x, n, 0, "offset 4 is not a multiple of the alignment 32");
    FRESH();
    put_u64(x + info_at(good, n, norm, 3), 0);
    expect_bad("overlap", x, n, 0, "overlap in the data section");
    FRESH();
    put_u64(x + info_at(good, n, norm, 1), 1 << 20);
    expect_bad("size past the end", x, n, 0, "runs past the end of the file");
    FRESH();
    put_u64(x + info_at(good, n, norm, 1), 32);
    expect_bad("shape", x, n, 1, "output_norm.weight has 1 dims [32, 1], the metadata needs [64]");
    FRESH();
    put_u32(x + info_at(good, n, norm, 0), 7);
    expect_bad("dims", x, n, 0, "has 7 dimensions (supported: 1 to 4)");
    FRESH();
    put_u32(x + info_at(good, n, norm, 2), 99);
    expect_bad("unknown type", x, n, 0, "tensor output_norm.weight has unknown type 99");
    FRESH();
    put_u32(x + info_at(good, n, norm, 2), 9); /* Q8_1: 64 values are 80 bytes, inside the 256 */
    expect_bad("unsupported type", x, n, 1,
               "tensor output_norm.weight has type Q8_1, which llamac does not dequantise (supported: F32, F16, "
               "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");
    FRESH();
    put_u32(x + info_at(good, n, norm, 2), 12); /* Q4_K: 64 values per row are not a 256-block */
    expect_bad("partial block", x, n, 0, "64 values per row is not a whole number of Q4_K blocks (256)");
    FRESH();
    x[info_at(good, n, q, 0) - 3] = 'X'; /* blk.0.attn_q.weiXht: the model misses a tensor */
    expect_bad("missing tensor", x, n, 1, "missing tensor blk.0.attn_q.weight");
    /* metadata the model needs */
    FRESH();
    memcpy(x + value_at(good, n, "general.architecture") + 8, "qwen2", 5);
    expect_bad("architecture", x, n, 0, "architecture qwen2 not supported (supported: llama)");
    FRESH();
    memcpy(memmem(x, n, "llama.block_count", 17), "llama.block_cXunt", 17);
    expect_bad("missing key", x, n, 0, "missing metadata key llama.block_count");
    FRESH();
    put_u32(x + value_at(good, n, "llama.embedding_length") - 4, GGUF_FLOAT32);
    expect_bad("key type", x, n, 0, "metadata llama.embedding_length is a float32, expected an integer");
    FRESH();
    put_u32(x + value_at(good, n, "general.alignment"), 24);
    expect_bad("alignment", x, n, 0, "general.alignment 24 is not a power of two");
    FRESH();
    memcpy(memmem(x, n, "llama.block_count", 17), "general.alignment", 17);
    expect_bad("duplicate key", x, n, 0, "metadata key general.alignment appears twice");
    FRESH();
    memcpy(memmem(x, n, "blk.0.attn_k.weight", 19), "blk.0.attn_q.weight", 19);
    expect_bad("duplicate tensor", x, n, 0, "tensor name blk.0.attn_q.weight appears twice");
    /* vocabulary */
    FRESH();
    memcpy(x + value_at(good, n, "tokenizer.ggml.model") + 8, "bert", 4);
    expect_bad("tokenizer model", x, n, 2, "tokenizer model bert not supported (supported: gpt2, llama)");
    FRESH();
    /* the export names llama-bpe (9 bytes) for llamac's Llama 3 split: overwrite all of it */
    memcpy(x + value_at(good, n, "tokenizer.ggml.pre") + 8, "qwen35pre", 9);
    expect_bad("pre-tokenizer", x, n, 2, "pre-tokenizer qwen35pre not supported (supported: llama-bpe, llama3");
    FRESH();
    memcpy(memmem(x, n, "tokenizer.ggml.merges", 21), "tokenizer.ggml.merXes", 21);
    expect_bad("missing merges", x, n, 2, "missing metadata key tokenizer.ggml.merges");
    FRESH();
    put_u32(x + value_at(good, n, "tokenizer.ggml.eos_token_id"), 100000);
    expect_bad("eos id", x, n, 2, "tokenizer.ggml.eos_token_id = 100000 is not a token id (vocab 320)");
    free(x);
    free(good);
#undef FRESH
}

// ---------------------------------------------------------------------------
// through the binary

void gguf_cli(void) {
    setup();
    Bpe b;
    model_with_vocab(DIR "/cli.gguf", &b);
    bpe_free(&b);
    remove(DIR "/cli.h5");
    int rc = test_llamac("convert " DIR "/cli.gguf " DIR "/cli.h5");
    EXPECT(rc == 0 && strstr(test_out, "checkpoint"), "GGUF -> checkpoint: %s", test_err);
    rc = test_llamac("convert " DIR "/cli.gguf " DIR "/cli.h5");
    EXPECT(rc == 1 && strstr(test_err, "exists (--force replaces it)"), "existing output: %s", test_err);
    /* the same logits from the GGUF and from its checkpoint */
    rc = test_llamac("logits --model " DIR "/cli.gguf --tokens 1,5,300,0 --out " DIR "/l1.bin");
    EXPECT(rc == 0, "logits GGUF: %s", test_err);
    rc = test_llamac("logits --model " DIR "/cli.h5 --tokens 1,5,300,0 --out " DIR "/l2.bin");
    EXPECT(rc == 0, "logits checkpoint: %s", test_err);
    size_t n1, n2;
    unsigned char *l1 = slurp(DIR "/l1.bin", &n1), *l2 = slurp(DIR "/l2.bin", &n2);
    EXPECT(n1 == 4 * 320 * sizeof(float) && n1 == n2 && memcmp(l1, l2, n1) == 0, "logits differ (%zu, %zu bytes)",
           n1, n2);
    free(l1);
    free(l2);
    /* the checkpoint remembers the GGUF's vocabulary: generate takes either */
    rc = test_llamac("generate --model " DIR "/cli.h5 --tokenizer " DIR "/cli.gguf --prompt 'the cat' "
                     "--max-tokens 4 --temperature 0");
    EXPECT(rc == 0 && strncmp(test_out, "the cat", 7) == 0, "generate from the checkpoint: %s", test_err);
    rc = test_llamac("generate --model " DIR "/cli.gguf --tokenizer " DIR "/cli.gguf --special "
                     "--prompt '<|begin_of_text|>the cat' --max-tokens 4 --temperature 0");
    EXPECT(rc == 0, "generate from the GGUF: %s", test_err);
    rc = test_llamac("generate --model " DIR "/cli.gguf --tokenizer " DIR "/tok.bin --prompt x");
    EXPECT(rc == 1 && strstr(test_err, "not the tokenizer"), "another tokenizer: %s", test_err);
    rc = test_llamac("tokenize ids --tokenizer " DIR "/cli.gguf --text 'the cat sees'");
    EXPECT(rc == 0 && test_out[0] >= '0' && test_out[0] <= '9', "tokenize ids: %s", test_err);
    /* re-exported, a GGUF keeps its pre-tokenizer and its chat template */
    rc = test_llamac("convert " DIR "/cli.gguf " DIR "/re1.gguf --tokenizer " DIR "/cli.gguf --template llama3 --force");
    EXPECT(rc == 0, "GGUF -> GGUF with a template: %s", test_err);
    rc = test_llamac("convert " DIR "/re1.gguf " DIR "/re2.gguf --tokenizer " DIR "/re1.gguf --type q8_0 --force");
    EXPECT(rc == 0, "GGUF -> GGUF again: %s", test_err);
    Tokenizer t0, t2;
    Err te = {{0}};
    if (tok_load(&t0, DIR "/cli.gguf", &te) == 0) {
        if (tok_load(&t2, DIR "/re2.gguf", &te) == 0) {
            EXPECT(t2.chat_template && strcmp(t2.chat_template, chat_template_jinja(CHAT_LLAMA3)) == 0,
                   "the chat template did not travel: %s", t2.chat_template ? t2.chat_template : "(none)");
            EXPECT(strcmp(t0.pre, t2.pre) == 0 && t0.id == t2.id, "pre-tokenizer '%s' became '%s'", t0.pre, t2.pre);
            tok_free(&t2);
        }
        tok_free(&t0);
    }
    EXPECT(!te.msg[0], "%s", te.msg);
    /* a shard made with the GGUF's vocabulary evaluates on the GGUF model */
    spit(DIR "/doc.txt", texts[0], strlen(texts[0]));
    rc = test_llamac("tokenize encode --tokenizer " DIR "/cli.gguf --input " DIR "/doc.txt --out " DIR "/doc.bin");
    EXPECT(rc == 0, "tokenize encode: %s", test_err);
    rc = test_llamac("eval --model " DIR "/cli.gguf --data " DIR "/doc.bin --batch 1 --seq 8");
    EXPECT(rc == 0 && strstr(test_out, "perplexity"), "eval on the GGUF: %s", test_err);

    /* bad files: one line naming the file, exit 1, the existing output kept */
    size_t n;
    unsigned char *good = slurp(DIR "/cli.gguf", &n);
    spit(DIR "/guard.h5", "keep", 4);
    spit(DIR "/cut.gguf", good, n / 2);
    unsigned char *x = xmalloc(n);
    memcpy(x, good, n);
    memcpy(x + value_at(good, n, "general.architecture") + 8, "mamba", 5);
    spit(DIR "/arch.gguf", x, n);
    memcpy(x, good, n);
    memcpy(x + value_at(good, n, "tokenizer.ggml.pre") + 8, "strangely", 9); /* over llama-bpe */
    spit(DIR "/pre.gguf", x, n);
    static const struct {
        const char *args, *want;
    } bad[] = {
        {"convert --force " DIR "/cut.gguf " DIR "/guard.h5", DIR "/cut.gguf: tensor "},
        {"convert --force " DIR "/arch.gguf " DIR "/guard.h5",
         DIR "/arch.gguf: architecture mamba not supported (supported: llama)"},
        {"logits --model " DIR "/arch.gguf --tokens 1 --out " DIR "/guard.h5", "architecture mamba"},
        {"generate --model " DIR "/cli.gguf --tokenizer " DIR "/pre.gguf --prompt x",
         DIR "/pre.gguf: pre-tokenizer strangely not supported"},
        {"tokenize ids --tokenizer " DIR "/pre.gguf --text x", DIR "/pre.gguf: pre-tokenizer strangely"},
        {"eval --model " DIR "/cut.gguf --data " DIR "/guard.h5", DIR "/cut.gguf: "},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        rc = test_llamac("%s", bad[k].args);
        size_t el = strlen(test_err);
        EXPECT(rc == 1 && strstr(test_err, bad[k].want) && strncmp(test_err, "llamac: error: ", 15) == 0 &&
                   el > 0 && test_err[el - 1] == '\n' && !memchr(test_err, '\n', el - 1),
               "%s: rc %d, stderr '%s' lacks '%s'", bad[k].args, rc, test_err, bad[k].want);
        size_t gn;
        unsigned char *g = slurp(DIR "/guard.h5", &gn);
        EXPECT(gn == 4 && memcmp(g, "keep", 4) == 0, "%s overwrote its output", bad[k].args);
        free(g);
    }
    free(x);
    free(good);
}
