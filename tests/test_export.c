/*
 * test_export.c: what exports write besides float32 weights: the GGUF
 * encodings (F16, BF16, Q8_0) against values worked out by hand, the GGUF
 * file's sizes per type, the chat template it carries, and the bad
 * --type / --template lines of `llamac convert`. scripts/test_convert.py
 * checks the same files byte for byte against numpy and gguf.quants.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/chat.h"
#include "../model/params.h"
#include "../train/io/ckpt.h"
#include "../train/io/gguf.h"
#include "test.h"
#include "tests.h"

#define DIR "build/texport"

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void export_gguf_encodings(void) {
    /* F16: round to nearest even at every edge (normal, subnormal, overflow) */
    static const struct {
        float x;
        uint16_t h;
    } f16[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {0.0f, 0x0000}, {-0.0f, 0x8000}, {0.1f, 0x2e66},
        {65504.0f, 0x7bff}, {65519.99f, 0x7bff}, {65520.0f, 0x7c00}, {1e9f, 0x7c00}, {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00}, {0x1p-14f, 0x0400}, {0x1p-24f, 0x0001}, {0x1p-25f, 0x0000}, {0x1.8p-25f, 0x0001},
        {0x1.8p-24f, 0x0002}, /* 1.5 units: tie to even 2 */
        {0x1.004p0f, 0x3c01},  /* 1 + 2^-10: one ulp */
        {0x1.001p0f, 0x3c00},  /* 1 + 2^-12: below half an ulp, down */
        {0x1.002p0f, 0x3c00},  /* 1 + 2^-11: tie, to even */
        {0x1.006p0f, 0x3c02},  /* 1 + 3 * 2^-11: tie, to even (up) */
        {0x1.ffcp-15f, 0x0400}, /* 2^-14 - 2^-25: 1023.5 units, to even 1024 = the smallest normal */
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++) {
        uint16_t h;
        gguf_to_f16(&h, &f16[i].x, 1);
        if (h != f16[i].h) bad++, printf("    f16(%a) = %04x, expected %04x\n", (double)f16[i].x, h, f16[i].h);
    }
    EXPECT(bad == 0, "%d F16 conversions wrong", bad);
    float nan = bits_f(0x7fc00000);
    uint16_t h;
    gguf_to_f16(&h, &nan, 1);
    EXPECT((h & 0x7c00) == 0x7c00 && (h & 0x3ff), "f16 NaN %04x", h);
    /* BF16: ggml's fp32_to_bf16 */
    static const struct {
        uint32_t u;
        uint16_t h;
    } bf[] = {
        {0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, {0x3f818000, 0x3f82}, {0x3f808001, 0x3f81},
        {0xbf7fffff, 0xbf80}, {0x7f7fffff, 0x7f80}, {0x7f800000, 0x7f80}, {0x7f800001, 0x7fc0}, {0xffc00000, 0xffc0},
    };
    bad = 0;
    for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
        float x = bits_f(bf[i].u);
        gguf_to_bf16(&h, &x, 1);
        if (h != bf[i].h) bad++, printf("    bf16(%08x) = %04x, expected %04x\n", bf[i].u, h, bf[i].h);
    }
    EXPECT(bad == 0, "%d BF16 conversions wrong", bad);
    /* Q8_0: max|x| = 127 gives d = 1 (f16 0x3c00) and q = round half away from zero */
    float x[64] = {127, -2.5f, 2.5f, 0.49f, -126.6f, 0.5f, -0.5f, 64};
    uint8_t q[68];
    gguf_to_q8_0(q, x, 64);
    static const int8_t want[8] = {127, -3, 3, 0, -127, 1, -1, 64};
    EXPECT(q[0] == 0x00 && q[1] == 0x3c && memcmp(q + 2, want, 8) == 0 && q[10] == 0, "q8_0 block 1: %02x%02x %d %d %d",
           q[1], q[0], (int8_t)q[3], (int8_t)q[4], (int8_t)q[6]);
    int zero = 1; /* an all-zero block: d = 0, q = 0 */
    for (int i = 34; i < 68; i++) zero &= q[i] == 0;
    EXPECT(zero, "q8_0 zero block");
    /* d = 0.5 / 127: the f16 of that, and 0.25 -> round(63.5) = 64 */
    float y[32] = {0.5f, 0.25f, -0.5f};
    gguf_to_q8_0(q, y, 32);
    uint16_t d16;
    float d = 0.5f / 127.0f;
    gguf_to_f16(&d16, &d, 1);
    EXPECT(memcmp(q, &d16, 2) == 0 && (int8_t)q[2] == 127 && (int8_t)q[4] == -127 && (int8_t)q[3] == 64,
           "q8_0 block 2: %d %d %d", (int8_t)q[2], (int8_t)q[3], (int8_t)q[4]);
}

/* A small model saved as a checkpoint, for the CLI tests (tok_id: the
 * tokenizer it records) */
static void model_file_tok(const char *path, uint64_t tok_id) {
    mkdir(DIR, 0755);
    LlamaConfig c;
    Err e;
    LC_ASSERT(config_preset("tiny", &c, &e) == 0);
    c.vocab = 300; /* room for the tests' tokenizers */
    ParamTable t;
    LC_ASSERT(params_build(&c, &t, &e) == 0);
    float *p = xalloc_aligned(t.size * sizeof(float));
    memset(p, 0, t.size * sizeof(float));
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < t.n; i++)
        for (size_t k = 0; k < t.p[i].numel; k++) p[t.p[i].offset + k] = rng_uniform(&r) - 0.5f;
    LC_ASSERT(ckpt_save(path, &c, &t, p, tok_id, NULL, NULL, &e) == 0);
    free(p);
    params_free(&t);
}

static void model_file(const char *path) { model_file_tok(path, 0); }

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

void export_gguf_cli(void) {
    model_file(DIR "/m.h5");
    long size[4];
    static const char *const ty[4] = {"f32", "f16", "bf16", "q8_0"};
    for (int k = 0; k < 4; k++) {
        char out[128];
        snprintf(out, sizeof out, DIR "/m_%s.gguf", ty[k]);
        remove(out);
        int rc = test_llamac("convert " DIR "/m.h5 %s --type %s --template llama3", out, ty[k]);
        EXPECT(rc == 0 && strstr(test_out, ty[k]), "--type %s: %s %s", ty[k], test_out, test_err);
        size[k] = file_size(out);
    }
    /* matrices at 4, 2, 2 and 34/32 bytes per value; norms F32 in all */
    EXPECT(size[1] < size[0] * 0.55 && size[1] == size[2] && size[3] < size[1] * 0.6 && size[3] > size[1] * 0.5,
           "sizes f32 %ld f16 %ld bf16 %ld q8_0 %ld", size[0], size[1], size[2], size[3]);
    /* the chat template is in the file, verbatim */
    static char buf[1 << 16];
    FILE *f = fopen(DIR "/m_q8_0.gguf", "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    int found = 0;
    for (size_t i = 0; i + 23 < n && !found; i++) found = memcmp(buf + i, "tokenizer.chat_template", 23) == 0;
    EXPECT(found, "no tokenizer.chat_template key");
    /* bad input: one line, exit 1, nothing written */
    static const struct {
        const char *args, *want;
    } c[] = {
        {"convert " DIR "/m.h5 " DIR "/bad.gguf --type q4_0", "--type: unknown type 'q4_0' (expected f32, f16, bf16 or q8_0)"},
        {"convert " DIR "/m.h5 " DIR "/bad_dir --type f16", "--type: only for a GGUF OUT (a name ending in .gguf)"},
        {"convert " DIR "/m.h5 " DIR "/bad.gguf --template vicuna", "--template: unknown template 'vicuna'"},
        {"convert " DIR "/m.h5 " DIR "/m_f32.gguf --type f16", DIR "/m_f32.gguf: exists (--force replaces it)"},
        {"convert " DIR "/m.h5 " DIR "/bad.h5 --template llama3", "--template: only for a GGUF or Hugging Face OUT"},
        {"convert " DIR "/m.h5 " DIR "/bad_dir --template llama3", "--template: a Hugging Face OUT keeps it in "
                                                                   "tokenizer_config.json, which needs --tokenizer"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        int rc = test_llamac("%s", c[i].args);
        EXPECT(rc == 1 && count_lines(test_err) == 1 && strstr(test_err, c[i].want), "'%s': %d %s", c[i].args, rc,
               test_err);
    }
    EXPECT(access(DIR "/bad.gguf", F_OK) != 0 && access(DIR "/bad_dir", F_OK) != 0 && access(DIR "/bad.h5", F_OK) != 0,
           "a failed convert wrote output");
    EXPECT(file_size(DIR "/m_f32.gguf") == size[0], "the existing GGUF was touched");
}

/* A HF export carries the tokenizer: llamac's BPE (Llama 3 split) as a
 * tokenizer.json that llamac reads back to the same ids, the configs, the
 * chat template; the directory imports with its tokenizer's id. */
void export_hf_tokenizer(void) {
    mkdir(DIR, 0755);
    static char text[20000];
    static const char *w[] = {"the ", "cat's ", "sat ", "on 1234 ", "mat.\n", "naïve ", "  x", "\t"};
    size_t n = test_words(text, sizeof text, w, 8, 9);
    const char *texts[1] = {text};
    Bpe b;
    Err e = {{0}};
    LC_ASSERT(bpe_train(&b, texts, &n, 1, 290, &e) == 0 && bpe_save(&b, DIR "/tok.bin", &e) == 0);
    model_file_tok(DIR "/mt.h5", b.id);
    int rc = test_llamac("convert " DIR "/mt.h5 " DIR "/hf --force --tokenizer " DIR "/tok.bin --template llama3.1");
    EXPECT(rc == 0 && access(DIR "/hf/tokenizer.json", R_OK) == 0 && access(DIR "/hf/tokenizer_config.json", R_OK) == 0 &&
               access(DIR "/hf/generation_config.json", R_OK) == 0 && !strstr(test_err, "warning"),
           "export: %d %s", rc, test_err);
    Tokenizer t;
    EXPECT(tok_load(&t, DIR "/hf/tokenizer.json", &e) == 0 && t.kind == TOK_HF, "%s", e.msg);
    int32_t *a = NULL, *c = NULL;
    size_t ca = 0, cc = 0, na = bpe_encode(&b, text, n, &a, &ca), nc = t.kind == TOK_HF ? tok_encode(&t, text, n, &c, &cc) : 0;
    EXPECT(na == nc && memcmp(a, c, na * sizeof *a) == 0, "the exported tokenizer.json encodes differently (%zu vs %zu ids)",
           na, nc);
    EXPECT(t.bos == b.bos && t.eos == b.eos && t.vocab == b.vocab, "exported bos/eos/vocab");
    char *jinja = NULL;
    EXPECT(chat_template_beside(DIR "/hf/tokenizer.json", &jinja, &e) == 0 && jinja &&
           strcmp(jinja, chat_template_jinja(CHAT_LLAMA31)) == 0, "chat_template in tokenizer_config.json");
    free(jinja);
    /* back: the directory's tokenizer id goes into the checkpoint */
    remove(DIR "/back.h5");
    rc = test_llamac("convert " DIR "/hf " DIR "/back.h5");
    CkptInfo info;
    EXPECT(rc == 0 && ckpt_info(DIR "/back.h5", &info, &e) == 0 && info.tokenizer_id == t.id,
           "import records the directory's tokenizer: %s", test_err);
    /* a template the tokenizer cannot render is refused */
    rc = test_llamac("convert " DIR "/mt.h5 " DIR "/hf_bad --tokenizer " DIR "/tok.bin --template chatml");
    EXPECT(rc == 1 && strstr(test_err, DIR "/tok.bin: the chatml template needs the token <|im_start|>") &&
               access(DIR "/hf_bad", F_OK) != 0, "chatml on llamac BPE: %s", test_err);
    /* a version 1 tokenizer exports with a warning (its split is not expressible) */
    Bpe v1;
    LC_ASSERT(bpe_train_split(&v1, texts, &n, 1, 290, NULL, &e) == 0 && bpe_save(&v1, DIR "/tok1.bin", &e) == 0);
    model_file_tok(DIR "/m1.h5", v1.id);
    rc = test_llamac("convert " DIR "/m1.h5 " DIR "/hf1 --force --tokenizer " DIR "/tok1.bin");
    EXPECT(rc == 0 && strstr(test_err, "warning: " DIR "/tok1.bin splits text its own way"), "v1 export: %s", test_err);
    free(a);
    free(c);
    tok_free(&t);
    bpe_free(&b);
    bpe_free(&v1);
}
