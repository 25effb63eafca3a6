/*
 * test_convert.c: safetensors reader/writer, Hugging Face directories in and
 * out, the GGUF writer's layout, and `llamac convert` / `llamac logits`
 * through the binary: good round trips, and every bad input (unsupported
 * architecture or dtype, lying headers, missing tensors) giving one error
 * line that names the file, exit 1, and nothing existing overwritten; a
 * classifier (reward model) out and in, and refused as GGUF.
 * The comparison with transformers, h5py and gguf is scripts/test_convert.py.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/bpe.h"
#include "../model/params.h"
#include "../train/io/ckpt.h"
#include "../train/io/hf.h"
#include "../train/io/gguf.h"
#include "../train/io/safetensors.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tconv"

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    if (n) LC_ASSERT(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static size_t read_file(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return n;
}

static void setup(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
}

/* A safetensors file from a header string and raw data bytes. */
static void write_st(const char *path, const char *header, const void *data, size_t n) {
    size_t hl = strlen(header);
    char *buf = xmalloc(8 + hl + n);
    for (int k = 0; k < 8; k++) buf[k] = (char)((uint64_t)hl >> (8 * k));
    memcpy(buf + 8, header, hl);
    if (n) memcpy(buf + 8 + hl, data, n);
    write_file(path, buf, 8 + hl + n);
    free(buf);
}

/* A 2-layer GQA model small enough to write by hand. */
static LlamaConfig small_config(int tied, int llama3) {
    LlamaConfig c = {.dim = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .hidden = 24, .vocab = 11,
                     .max_seq = 32, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tied = tied};
    snprintf(c.name, sizeof c.name, "small");
    if (llama3) {
        c.rope_theta = 500000.0f;
        c.rope_scaling = ROPE_SCALING_LLAMA3;
        c.rope_factor = 32.0f;
        c.rope_low_freq = 1.0f;
        c.rope_high_freq = 4.0f;
        c.rope_orig_ctx = 24;
    }
    return c;
}

/* Random parameters for c (caller frees both). */
static float *random_params(const LlamaConfig *c, ParamTable *t, uint64_t seed) {
    Err e;
    LC_ASSERT(params_build(c, t, &e) == 0);
    float *p = xalloc_aligned(t->size * sizeof(float));
    params_init(t, p, c->n_layers, seed);
    Rng r; /* norm gains away from 1 */
    rng_seed(&r, seed + 1);
    for (int i = 0; i < t->n; i++)
        if (t->p[i].ndim == 1)
            for (size_t k = 0; k < t->p[i].numel; k++) p[t->p[i].offset + k] = 1.0f + 0.1f * rng_normal(&r);
    return p;
}

/* ---- safetensors ---------------------------------------------------------------- */

void convert_safetensors_roundtrip(void) {
    setup();
    float a[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 65504}, b[3] = {0.25f, -7, 1e20f}, z[1] = {0};
    SafetensorsOut out[3] = {
        {"a.weight", 2, {2, 3}, a}, {"b", 1, {3}, b}, {"empty", 2, {0, 4}, z},
    };
    Err e;
    EXPECT(safetensors_write(DIR "/rt.safetensors", out, 3, &e) == 0, "write: %s", e.msg);
    Safetensors f;
    if (safetensors_open(&f, DIR "/rt.safetensors", &e) != 0) {
        EXPECT(0, "open: %s", e.msg);
        return;
    }
    EXPECT(f.n == 3, "%d tensors", f.n);
    EXPECT(f.data_start % 8 == 0, "data starts at %zu, not 8-aligned", f.data_start);
    int ia = safetensors_find(&f, "a.weight"), ib = safetensors_find(&f, "b");
    EXPECT(ia >= 0 && ib >= 0 && safetensors_find(&f, "c") < 0, "find");
    if (ia >= 0 && ib >= 0) {
        EXPECT(strcmp(f.t[ia].dtype, "F32") == 0 && f.t[ia].ndim == 2 && f.t[ia].shape[0] == 2 &&
                   f.t[ia].shape[1] == 3, "a's header");
        float ra[6], rb[3];
        EXPECT(safetensors_read_f32(&f, ia, ra, &e) == 0 && safetensors_read_f32(&f, ib, rb, &e) == 0, "read");
        EXPECT(memcmp(ra, a, sizeof a) == 0 && memcmp(rb, b, sizeof b) == 0, "values differ after round trip");
    }
    safetensors_close(&f);
    /* the metadata entry transformers looks for */
    static char buf[4096];
    read_file(DIR "/rt.safetensors", buf, sizeof buf);
    EXPECT(strstr(buf + 8, "\"__metadata__\":{\"format\":\"pt\"}") != NULL, "no format pt metadata: %s", buf + 8);

    /* F16 and BF16 widen exactly: normal, negative, max, subnormal, Inf */
    uint16_t h[6] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x3555};
    float hw[6] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-8f, INFINITY, 0.333251953125f};
    uint16_t bf[3] = {0x3f80, 0xbf00, 0x4049};
    float bw[3] = {1.0f, -0.5f, 3.140625f};
    unsigned char data[18];
    memcpy(data, h, 12);
    memcpy(data + 12, bf, 6);
    write_st(DIR "/half.safetensors",
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[0,12]},"
             "\"bf\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[12,18]}}",
             data, sizeof data);
    if (safetensors_open(&f, DIR "/half.safetensors", &e) != 0) {
        EXPECT(0, "open half: %s", e.msg);
        return;
    }
    float rh[6], rbf[3];
    EXPECT(safetensors_read_f32(&f, safetensors_find(&f, "h"), rh, &e) == 0, "read F16: %s", e.msg);
    EXPECT(safetensors_read_f32(&f, safetensors_find(&f, "bf"), rbf, &e) == 0, "read BF16: %s", e.msg);
    for (int k = 0; k < 6; k++) EXPECT(rh[k] == hw[k], "F16 %04x -> %g, expected %g", h[k], rh[k], hw[k]);
    for (int k = 0; k < 3; k++) EXPECT(rbf[k] == bw[k], "BF16 %04x -> %g, expected %g", bf[k], rbf[k], bw[k]);
    safetensors_close(&f);
}

/* open must fail with a message holding the path and `want`. */
static void expect_bad(const char *name, const char *header, size_t data_bytes, size_t file_bytes, const char *want) {
    static unsigned char zeros[256];
    char path[256];
    snprintf(path, sizeof path, DIR "/bad_%s.safetensors", name);
    write_st(path, header, zeros, data_bytes);
    if (file_bytes) LC_ASSERT(truncate(path, (off_t)file_bytes) == 0);
    Safetensors f;
    Err e = {{0}};
    int rc = safetensors_open(&f, path, &e);
    EXPECT(rc == -1, "%s: opened a bad file", name);
    EXPECT(strstr(e.msg, path) && strstr(e.msg, want), "%s: message '%s' lacks '%s'", name, e.msg, want);
    if (rc == 0) safetensors_close(&f);
}

void convert_safetensors_bad(void) {
    setup();
    expect_bad("beyond", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0,
               "beyond the 8 data bytes");
    expect_bad("overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, 0, "overlap");
    expect_bad("size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0,
               "span 8 bytes, its F32 shape needs 12");
    expect_bad("hole",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               12, 0, "belong to no tensor");
    expect_bad("trailing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, 0,
               "trailing data bytes");
    expect_bad("dtype", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "unknown dtype Q4");
    expect_bad("negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, 0,
               "data_offsets must be");
    expect_bad("json", "{\"a\":{\"dtype\":\"F32\",", 0, 0, "header JSON");
    expect_bad("notobj", "[1, 2]", 0, 0, "not a JSON object");
    /* header length larger than the file: cut the file inside the header */
    expect_bad("hlen", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 20,
               "is larger than the file");
    expect_bad("short", "{}", 0, 5, "too short");
    /* a known but unconvertible dtype opens, and reading says so */
    static const unsigned char i8[4] = {1, 2, 3, 4};
    write_st(DIR "/i8.safetensors", "{\"a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}", i8, 4);
    Safetensors f;
    Err e = {{0}};
    EXPECT(safetensors_open(&f, DIR "/i8.safetensors", &e) == 0, "I8 file: %s", e.msg);
    float out[4];
    EXPECT(safetensors_read_f32(&f, 0, out, &e) == -1 && strstr(e.msg, "dtype I8 (supported: F32, F16, BF16)") &&
               strstr(e.msg, DIR "/i8.safetensors"),
           "I8 read: %s", e.msg);
    safetensors_close(&f);
}

/* ---- HF directories and GGUF layout (in process) --------------------------------- */

static int params_equal(const ParamTable *t, const float *a, const float *b) {
    for (int i = 0; i < t->n; i++)
        if (memcmp(a + t->p[i].offset, b + t->p[i].offset, t->p[i].numel * sizeof(float)) != 0) return 0;
    return 1;
}

void convert_hf_roundtrip(void) {
    setup();
    for (int v = 0; v < 2; v++) {
        LlamaConfig c = small_config(v, v), c2;
        ParamTable t;
        float *p = random_params(&c, &t, 42 + v);
        char dir[128];
        snprintf(dir, sizeof dir, DIR "/hf_rt%d", v);
        Err e = {{0}};
        EXPECT(hf_save(dir, &c, &t, p, 3, 4, 1, &e) == 0, "save: %s", e.msg);
        EXPECT(hf_is_dir(dir), "%s is not a HF dir", dir);
        EXPECT(hf_config(dir, &c2, &e) == 0, "config: %s", e.msg);
        char diff[128];
        EXPECT(ckpt_config_diff(&c, &c2, diff, sizeof diff) == 0, "config differs after round trip: %s", diff);
        EXPECT(strncmp(c2.name, "hf_rt", 5) == 0, "name %s", c2.name);
        float *q = xalloc_aligned(t.size * sizeof(float));
        EXPECT(hf_load(dir, &t, q, &e) == 0, "load: %s", e.msg);
        EXPECT(params_equal(&t, p, q), "parameters differ after the round trip (variant %d)", v);
        static char js[8192];
        char cp[192];
        snprintf(cp, sizeof cp, "%s/config.json", dir);
        read_file(cp, js, sizeof js);
        EXPECT(strstr(js, "\"rms_norm_eps\": 1e-") && !strstr(js, "9.99") && strstr(js, "\"eos_token_id\": 4") &&
                   strstr(js, "\"bos_token_id\": 3") && strstr(js, "\"LlamaForCausalLM\""),
               "config.json: %s", js);
        /* an existing non-empty directory needs force, and stays as it was */
        EXPECT(hf_save(dir, &c, &t, q, -1, -1, 0, &e) == -1 && strstr(e.msg, "not empty") &&
                   strstr(e.msg, dir),
               "overwrote without force: %s", e.msg);
        read_file(cp, js, sizeof js);
        EXPECT(strstr(js, "\"eos_token_id\": 4") != NULL, "config.json changed by a refused save");
        free(p);
        free(q);
        params_free(&t);
    }
}

/* A transformers 4.x style config.json (Llama 3.1): rope_scaling with a
 * top-level rope_theta, no head_dim, no num_key_value_heads. */
void convert_hf_config_legacy(void) {
    setup();
    mkdir(DIR "/legacy", 0755);
    const char *js = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 96,"
                     " \"num_hidden_layers\": 3, \"num_attention_heads\": 8, \"vocab_size\": 100,"
                     " \"max_position_embeddings\": 131072, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0,"
                     " \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
                     " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
                     " \"torch_dtype\": \"bfloat16\", \"pretraining_tp\": 1}";
    write_file(DIR "/legacy/config.json", js, strlen(js));
    LlamaConfig c;
    Err e;
    EXPECT(hf_config(DIR "/legacy", &c, &e) == 0, "legacy config: %s", e.msg);
    EXPECT(c.dim == 64 && c.hidden == 96 && c.n_layers == 3 && c.n_heads == 8 && c.n_kv_heads == 8 &&
               c.vocab == 100 && c.max_seq == 131072 && !c.tied,
           "shape fields");
    EXPECT(c.norm_eps == 1e-5f && c.rope_theta == 500000.0f && c.rope_scaling == ROPE_SCALING_LLAMA3 &&
               c.rope_factor == 8.0f && c.rope_low_freq == 1.0f && c.rope_high_freq == 4.0f &&
               c.rope_orig_ctx == 8192,
           "rope fields");
}

void convert_gguf_layout(void) {
    /* names */
    static const char *pairs[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"},
        {"model.layers.12.self_attn.o_proj.weight", "blk.12.attn_output.weight"},
        {"model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"},
        {"model.layers.1.input_layernorm.weight", "blk.1.attn_norm.weight"},
        {"model.layers.1.post_attention_layernorm.weight", "blk.1.ffn_norm.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    char out[96];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        EXPECT(gguf_tensor_name(pairs[i][0], out, sizeof out) == 0 && strcmp(out, pairs[i][1]) == 0, "%s -> %s",
               pairs[i][0], out);
    EXPECT(gguf_tensor_name("model.rotary_emb.inv_freq", out, sizeof out) == -1, "inv_freq has no name");
    /* permute: head h, row 2i + j of the file = row j*HS/2 + i of HF; inverse */
    enum { NH = 3, HS = 8, COLS = 2 };
    float src[NH * HS * COLS], dst[NH * HS * COLS], back[NH * HS * COLS];
    for (int k = 0; k < NH * HS * COLS; k++) src[k] = (float)k;
    gguf_permute_rows(dst, src, NH, HS, COLS);
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < HS / 2; i++)
            for (int j = 0; j < 2; j++)
                EXPECT(dst[(h * HS + 2 * i + j) * COLS + 1] == src[(h * HS + j * HS / 2 + i) * COLS + 1],
                       "permute h %d i %d j %d", h, i, j);
    gguf_unpermute_rows(back, dst, NH, HS, COLS);
    EXPECT(memcmp(back, src, sizeof src) == 0, "unpermute does not invert permute");
    /* rope factors: 1 for short wavelengths, factor for long, between in between */
    LlamaConfig c = small_config(1, 1);
    c.dim = 32, c.rope_orig_ctx = 256; /* HS 8: wavelengths 6.3, 167, 4443, 118000 */
    float f[4];
    gguf_rope_factors(&c, f);
    double wl = 2 * M_PI * pow(500000.0, 0.25), s = (256 / wl - 1) / (4 - 1);
    EXPECT(f[0] == 1.0f, "wavelength 6.3 < 256/4: factor %g, expected 1", f[0]);
    EXPECT_NEAR(f[1], 1 / ((1 - s) / 32 + s), 1e-5 * f[1]);
    EXPECT(f[2] == 32.0f && f[3] == 32.0f, "wavelengths > 256: factors %g %g, expected 32", f[2], f[3]);
}

/* ---- through the binary -------------------------------------------------------- */


/* A good HF directory of c: config.json from the exporter, then patched. */
static void make_hf(const char *dir, const LlamaConfig *c, uint64_t seed) {
    ParamTable t;
    float *p = random_params(c, &t, seed);
    Err e;
    LC_ASSERT(hf_save(dir, c, &t, p, -1, -1, 1, &e) == 0);
    free(p);
    params_free(&t);
}

/* Replace the first occurrence of from by to in dir/config.json. */
static void patch_config(const char *dir, const char *from, const char *to) {
    static char js[8192], outj[8400];
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    read_file(path, js, sizeof js);
    char *at = strstr(js, from);
    LC_ASSERT(at);
    snprintf(outj, sizeof outj, "%.*s%s%s", (int)(at - js), js, to, at + strlen(from));
    write_file(path, outj, strlen(outj));
}

/* exit 1, one stderr line "llamac: error: ..." holding every `want`, and the
 * guard file still holding "keep". */
static void expect_cli_error(const char *what, int rc, const char *want1, const char *want2) {
    int lines = 0;
    for (const char *s = test_err; *s; s++) lines += *s == '\n';
    EXPECT(rc == 1, "%s: exit %d, stderr %s", what, rc, test_err);
    EXPECT(lines == 1 && strncmp(test_err, "llamac: error: ", 15) == 0, "%s: stderr not one error line: %s", what,
           test_err);
    EXPECT(strstr(test_err, want1) && (!want2 || strstr(test_err, want2)), "%s: '%s' lacks '%s' / '%s'", what,
           test_err, want1, want2 ? want2 : "");
    char keep[16] = "";
    read_file(DIR "/guard.h5", keep, sizeof keep);
    EXPECT(strcmp(keep, "keep") == 0, "%s: the existing output was overwritten", what);
}

void convert_cli(void) {
    setup();
    LlamaConfig c = small_config(0, 1);
    ParamTable t;
    float *p = random_params(&c, &t, 7);
    Err e;
    const char *hf = DIR "/cli_hf";
    LC_ASSERT(hf_save(hf, &c, &t, p, -1, -1, 1, &e) == 0);
    remove(DIR "/cli.h5");
    int rc = test_llamac("convert %s " DIR "/cli.h5", hf);
    EXPECT(rc == 0 && strstr(test_out, "checkpoint"), "HF -> checkpoint: %s", test_err);
    rc = test_llamac("convert %s " DIR "/cli.h5", hf);
    EXPECT(rc == 1 && strstr(test_err, "exists (--force replaces it)"), "existing checkpoint: %s", test_err);
    rc = test_llamac("convert --force %s " DIR "/cli.h5", hf);
    EXPECT(rc == 0, "--force: %s", test_err);
    rc = test_llamac("convert " DIR "/cli.h5 " DIR "/cli_back --force");
    EXPECT(rc == 0 && strstr(test_out, "Hugging Face"), "checkpoint -> HF: %s", test_err);
    LlamaConfig c2;
    float *q = xalloc_aligned(t.size * sizeof(float));
    EXPECT(hf_config(DIR "/cli_back", &c2, &e) == 0 && hf_load(DIR "/cli_back", &t, q, &e) == 0,
           "reading the export: %s", e.msg);
    EXPECT(params_equal(&t, p, q), "HF -> checkpoint -> HF changed the weights");
    remove(DIR "/cli.gguf");
    rc = test_llamac("convert " DIR "/cli.h5 " DIR "/cli.gguf");
    char head[8] = "";
    read_file(DIR "/cli.gguf", head, 5);
    EXPECT(rc == 0 && memcmp(head, "GGUF", 4) == 0, "checkpoint -> GGUF: %s", test_err);
    struct stat st;
    EXPECT(stat(DIR "/cli.gguf", &st) == 0 && (size_t)st.st_size > t.numel * 4, "GGUF size");
    /* logits: the same from the HF directory and from the checkpoint */
    rc = test_llamac("logits --model %s --tokens 1,5,10,0 --out " DIR "/l1.bin", hf);
    EXPECT(rc == 0, "logits HF: %s", test_err);
    rc = test_llamac("logits --model " DIR "/cli.h5 --tokens 1,5,10,0 --out " DIR "/l2.bin");
    EXPECT(rc == 0, "logits checkpoint: %s", test_err);
    static char l1[4096], l2[4096];
    size_t n1 = read_file(DIR "/l1.bin", l1, sizeof l1), n2 = read_file(DIR "/l2.bin", l2, sizeof l2);
    EXPECT(n1 == 4 * 11 * sizeof(float) && n1 == n2 && memcmp(l1, l2, n1) == 0, "logits differ (%zu, %zu bytes)",
           n1, n2);
    rc = test_llamac("logits --model " DIR "/cli.h5 --tokens 1,11 --out " DIR "/l3.bin");
    EXPECT(rc == 1 && strstr(test_err, "--tokens"), "token out of range: %s", test_err);
    free(p);
    free(q);
    params_free(&t);
}

/* --tokenizer: its id goes into an import; an export checks it and writes
 * its bos/eos ids. */
void convert_cli_tokenizer(void) {
    setup();
    static const char *texts[2] = {"the cat sees the dog and the dog sees the cat", "a b c a b c a b c"};
    size_t lens[2] = {strlen(texts[0]), strlen(texts[1])};
    Bpe a, b;
    Err e;
    LC_ASSERT(bpe_train(&a, texts, lens, 2, 270, &e) == 0 && bpe_train(&b, texts, lens, 1, 268, &e) == 0);
    LC_ASSERT(bpe_save(&a, DIR "/tok_a.bin", &e) == 0 && bpe_save(&b, DIR "/tok_b.bin", &e) == 0);
    LlamaConfig c = small_config(1, 0);
    c.vocab = 280;
    const char *hf = DIR "/tok_hf";
    make_hf(hf, &c, 3);
    remove(DIR "/tok.h5");
    int rc = test_llamac("convert %s " DIR "/tok.h5 --tokenizer " DIR "/tok_a.bin", hf);
    EXPECT(rc == 0, "import with a tokenizer: %s", test_err);
    CkptInfo info;
    EXPECT(ckpt_info(DIR "/tok.h5", &info, &e) == 0 && info.tokenizer_id == a.id, "tokenizer id not recorded");
    rc = test_llamac("convert " DIR "/tok.h5 " DIR "/tok_out --force --tokenizer " DIR "/tok_a.bin");
    EXPECT(rc == 0, "export with the tokenizer: %s", test_err);
    static char js[8192], want[64];
    read_file(DIR "/tok_out/config.json", js, sizeof js);
    snprintf(want, sizeof want, "\"eos_token_id\": %d", a.eos);
    EXPECT(a.eos >= 0 && strstr(js, want), "config.json lacks %s", want);
    snprintf(want, sizeof want, "\"bos_token_id\": %d", a.bos);
    EXPECT(a.bos < 0 || strstr(js, want), "config.json lacks %s", want);
    rc = test_llamac("convert " DIR "/tok.h5 " DIR "/tok_out2 --tokenizer " DIR "/tok_b.bin");
    EXPECT(rc == 1 && strstr(test_err, "tok_b.bin: not the tokenizer"), "wrong tokenizer: %s", test_err);
    c.vocab = 260;
    make_hf(hf, &c, 3);
    rc = test_llamac("convert %s " DIR "/tok2.h5 --tokenizer " DIR "/tok_a.bin", hf);
    EXPECT(rc == 1 && strstr(test_err, "tokens do not fit the model's vocab_size 260"), "vocab: %s", test_err);
    bpe_free(&a);
    bpe_free(&b);
}

/* A classifier (reward model): HF directory out and in (score.weight, no
 * lm_head, LlamaForSequenceClassification, pad_token_id the config's pad_id
 * else the EOS id), checkpoint -> HF with its tokenizer -> checkpoint,
 * inspect naming the head, and GGUF refused with one line. */
void convert_classifier(void) {
    setup();
    LlamaConfig c = small_config(0, 0), c2;
    c.num_labels = 1, c.pad_id = -1, c.vocab = 280;
    ParamTable t;
    float *p = random_params(&c, &t, 17), *q = xalloc_aligned(t.size * sizeof(float));
    Err e = {{0}};
    static char js[8192];
    static const struct { int pad, eos; const char *want; } pads[] = {
        {-1, 4, "\"pad_token_id\": 4"}, {2, 4, "\"pad_token_id\": 2"}, {-1, -1, "\"pad_token_id\": null"}};
    for (size_t k = 0; k < sizeof pads / sizeof pads[0]; k++) {
        c.pad_id = pads[k].pad;
        EXPECT(hf_save(DIR "/cls_hf", &c, &t, p, 3, pads[k].eos, 1, &e) == 0, "save: %s", e.msg);
        read_file(DIR "/cls_hf/config.json", js, sizeof js);
        EXPECT(strstr(js, "\"LlamaForSequenceClassification\"") && strstr(js, pads[k].want) &&
                   strstr(js, "\"0\": \"LABEL_0\"") && strstr(js, "\"tie_word_embeddings\": false"),
               "config.json (pad %d, eos %d): %s", pads[k].pad, pads[k].eos, js);
        EXPECT(hf_config(DIR "/cls_hf", &c2, &e) == 0 && c2.num_labels == 1 && !c2.tied &&
                   c2.pad_id == (pads[k].pad >= 0 ? pads[k].pad : pads[k].eos),
               "config back: %s (num_labels %d, pad %d)", e.msg, c2.num_labels, c2.pad_id);
    }
    Safetensors f;
    if (safetensors_open(&f, DIR "/cls_hf/model.safetensors", &e) == 0) {
        int k = safetensors_find(&f, "score.weight");
        EXPECT(k >= 0 && f.t[k].shape[0] == 1 && f.t[k].shape[1] == 16 && safetensors_find(&f, "lm_head.weight") < 0 &&
                   f.n == t.n, "score.weight [1, 16] and no lm_head.weight (%d tensors)", f.n);
        safetensors_close(&f);
    } else {
        EXPECT(0, "open: %s", e.msg);
    }
    EXPECT(hf_load(DIR "/cls_hf", &t, q, &e) == 0 && params_equal(&t, p, q), "HF round trip: %s", e.msg);

    /* through the binary, with a tokenizer (its EOS becomes the pad) */
    static const char *texts[1] = {"the cat sees the dog and the dog sees the cat"};
    size_t len = strlen(texts[0]);
    Bpe b;
    LC_ASSERT(bpe_train(&b, texts, &len, 1, 270, &e) == 0 && bpe_save(&b, DIR "/cls_tok.bin", &e) == 0);
    LC_ASSERT(b.eos >= 0);
    c.pad_id = -1;
    remove(DIR "/cls.h5");
    LC_ASSERT(ckpt_save(DIR "/cls.h5", &c, &t, p, b.id, NULL, NULL, &e) == 0);
    int rc = test_llamac("convert " DIR "/cls.h5 " DIR "/cls_out --force --tokenizer " DIR "/cls_tok.bin");
    EXPECT(rc == 0 && access(DIR "/cls_out/tokenizer.json", R_OK) == 0, "checkpoint -> HF: %s", test_err);
    char want[64];
    read_file(DIR "/cls_out/config.json", js, sizeof js);
    snprintf(want, sizeof want, "\"pad_token_id\": %d", b.eos);
    EXPECT(strstr(js, want) != NULL, "config.json lacks %s: %s", want, js);
    read_file(DIR "/cls_out/tokenizer_config.json", js, sizeof js);
    EXPECT(!strstr(js, "\"pad_token\": null") && strstr(js, "\"pad_token\": \"<|end_of_text|>\""),
           "tokenizer_config.json's pad_token is not the EOS: %s", js);
    remove(DIR "/cls_back.h5");
    rc = test_llamac("convert " DIR "/cls_out " DIR "/cls_back.h5");
    CkptInfo info;
    EXPECT(rc == 0 && ckpt_info(DIR "/cls_back.h5", &info, &e) == 0 && info.c.num_labels == 1 &&
               info.c.pad_id == b.eos,
           "HF -> checkpoint: %s %s (num_labels %d, pad %d)", test_err, e.msg, info.c.num_labels, info.c.pad_id);
    float *r = xalloc_aligned(t.size * sizeof(float));
    EXPECT(test_source_load(DIR "/cls_back.h5", &t, r, &e) == 0 && params_equal(&t, p, r),
           "checkpoint -> HF -> checkpoint changed the weights: %s", e.msg);
    rc = test_llamac("inspect " DIR "/cls_back.h5 --lora-r 4");
    EXPECT(rc == 0 && strstr(test_out, "score (1 x 16)") && strstr(test_out, "head score (1 x 16), pad id") &&
               !strstr(test_out, "lm_head"), "inspect: %s %s", test_out, test_err);
    /* GGUF: refused before anything is written */
    remove(DIR "/cls.gguf");
    rc = test_llamac("convert " DIR "/cls.h5 " DIR "/cls.gguf");
    int lines = 0;
    for (const char *s = test_err; *s; s++) lines += *s == '\n';
    EXPECT(rc == 1 && lines == 1 && strstr(test_err, DIR "/cls.gguf: a classifier (reward model, 1 label") &&
               strstr(test_err, "llama.cpp has no sequence-classification architecture") &&
               access(DIR "/cls.gguf", F_OK) != 0 && access(DIR "/cls.gguf.tmp", F_OK) != 0,
           "GGUF export of a classifier: %d %s", rc, test_err);
    GgufOpts go = {.type = GGUF_F32, .name = "cls"};
    EXPECT(gguf_save(DIR "/cls2.gguf", &c, &t, p, &go, &e) == -1 && strstr(e.msg, "has no GGUF form") &&
               access(DIR "/cls2.gguf", F_OK) != 0, "gguf_save of a classifier: %s", e.msg);
    bpe_free(&b);
    free(p), free(q), free(r);
    params_free(&t);
}

void convert_cli_errors(void) {
    setup();
    LlamaConfig c = small_config(0, 0);
    const char *bad = DIR "/bad_hf";
    char shard[256];
    snprintf(shard, sizeof shard, "%s/model.safetensors", bad);
    write_file(DIR "/guard.h5", "keep", 4);
#define CONVERT() test_llamac("convert --force %s " DIR "/guard.h5", bad)

    make_hf(bad, &c, 1);
    patch_config(bad, "\"LlamaForCausalLM\"", "\"MistralForCausalLM\"");
    expect_cli_error("architecture", CONVERT(), "bad_hf/config.json: unsupported architecture MistralForCausalLM",
                     NULL);
    make_hf(bad, &c, 1);
    patch_config(bad, "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"");
    expect_cli_error("model_type", CONVERT(), "bad_hf/config.json: unsupported model_type gpt2", NULL);
    make_hf(bad, &c, 1);
    patch_config(bad, "\"head_dim\": 4", "\"head_dim\": 8"); /* a valid Llama whose tensors do not fit it */
    expect_cli_error("head_dim", CONVERT(), "bad_hf/model.safetensors: tensor model.layers.0.self_attn.q_proj.weight",
                     "has shape [16, 16], config.json needs [32, 16]");
    make_hf(bad, &c, 1);
    patch_config(bad, "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"");
    expect_cli_error("rope type", CONVERT(), "bad_hf/config.json: rope type yarn", NULL);
    make_hf(bad, &c, 1);
    patch_config(bad, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    expect_cli_error("missing tensor", CONVERT(), "bad_hf/model.safetensors: missing tensor",
                     "model.layers.2.self_attn.q_proj.weight");
    make_hf(bad, &c, 1);
    patch_config(bad, "\"intermediate_size\": 24", "\"intermediate_size\": 25");
    expect_cli_error("shape", CONVERT(), "bad_hf/model.safetensors: tensor model.layers.0.mlp.gate_proj.weight",
                     "has shape [24, 16], config.json needs [25, 16]");

    /* safetensors files that lie, or hold dtypes we do not read: a one-layer
     * MHA model of dim 2 whose tensors are written by hand */
    LlamaConfig m = {.dim = 2, .n_layers = 1, .n_heads = 1, .n_kv_heads = 1, .hidden = 2, .vocab = 2,
                     .max_seq = 8, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tied = 1};
    make_hf(bad, &m, 2);
    static const char *names[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                                  "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                                  "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                                  "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
                                  "model.layers.0.input_layernorm.weight",
                                  "model.layers.0.post_attention_layernorm.weight", "model.norm.weight"};
    enum { NT = 11 };
    static unsigned char data[1024];
    char hdr[4096];
    /* kind: 0 good F32, 1 I8 on the first tensor, 2 F64, 3 offsets beyond
     * the file, 4 overlapping, 5 wrong size for the shape */
    for (int kind = 0; kind < 6; kind++) {
        int o = snprintf(hdr, sizeof hdr, "{");
        size_t at = 0;
        for (int i = 0; i < NT; i++) {
            int two = i < 8;
            size_t n = two ? 4 : 2, sz = 4;
            const char *dt = "F32";
            if (i == 0 && kind == 1) dt = "I8", sz = 1;
            if (i == 0 && kind == 2) dt = "F64", sz = 8;
            size_t b = at, end = at + n * sz;
            if (i == 1 && kind == 4) b -= 8, end -= 8;
            if (i == 2 && kind == 5) end -= 4;
            if (i == NT - 1 && kind == 3) end += 400;
            o += snprintf(hdr + o, sizeof hdr - (size_t)o,
                          "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                          i ? "," : "", names[i], dt, two ? "[2,2]" : "[2]", b, end);
            at = end;
        }
        snprintf(hdr + o, sizeof hdr - (size_t)o, "}");
        write_st(shard, hdr, data, kind == 3 ? at - 400 : at);
        int r = CONVERT();
        if (kind == 0) {
            EXPECT(r == 0, "hand-written good file: %s", test_err);
            write_file(DIR "/guard.h5", "keep", 4);
        } else {
            static const char *want[] = {NULL, "has dtype I8 (supported: F32, F16, BF16)",
                                         "has dtype F64 (supported: F32, F16, BF16)", "lie beyond the",
                                         "overlap in the data", "needs 16"};
            expect_cli_error(want[kind], r, "bad_hf/model.safetensors: ", want[kind]);
        }
    }
    /* header length larger than the file */
    make_hf(bad, &m, 2);
    LC_ASSERT(truncate(shard, 100) == 0);
    expect_cli_error("header length", CONVERT(), "bad_hf/model.safetensors: header length",
                     "is larger than the file (100 bytes)");
    /* shards: an index naming a file that is not there, or a path outside */
    make_hf(bad, &m, 2);
    char idx[256];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", bad);
    const char *one = "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}";
    write_file(idx, one, strlen(one));
    expect_cli_error("index missing tensor", CONVERT(), "model.safetensors.index.json: missing tensor",
                     "model.layers.0.self_attn.q_proj.weight");
    static char js[8192];
    int o = snprintf(js, sizeof js, "{\"weight_map\": {");
    for (int i = 0; i < NT; i++)
        o += snprintf(js + o, sizeof js - (size_t)o, "%s\"%s\": \"%s\"", i ? ", " : "", names[i],
                      i < 5 ? "model.safetensors" : "model-00002-of-00002.safetensors");
    snprintf(js + o, sizeof js - (size_t)o, "}}");
    write_file(idx, js, strlen(js));
    expect_cli_error("missing shard", CONVERT(), "bad_hf/model-00002-of-00002.safetensors: cannot open", NULL);
    for (char *s = strstr(js, "model-00002"); s; s = strstr(s, "model-00002")) memcpy(s, "../../bad.", 10);
    write_file(idx, js, strlen(js));
    expect_cli_error("shard path", CONVERT(), "model.safetensors.index.json: tensor", "must be a file name");
    remove(idx);
    /* neither kind of model; a HF export onto a full directory */
    write_file(DIR "/junk.bin", "junk", 4);
    expect_cli_error("junk input", test_llamac("convert --force " DIR "/junk.bin " DIR "/guard.h5"), "junk.bin: neither",
                     NULL);
    expect_cli_error("missing input", test_llamac("convert --force " DIR "/nothere " DIR "/guard.h5"), "nothere", NULL);
    make_hf(bad, &m, 2);
    remove(DIR "/small.h5");
    EXPECT(test_llamac("convert %s " DIR "/small.h5", bad) == 0, "convert: %s", test_err);
    int r = test_llamac("convert " DIR "/small.h5 %s", bad);
    expect_cli_error("export onto a full directory", r, "bad_hf: directory exists and is not empty", NULL);
    EXPECT(test_llamac("convert " DIR "/small.h5") == 1 && strstr(test_err, "expected IN and OUT"), "one path: %s", test_err);
    EXPECT(test_llamac("convert --help") == 0 && strstr(test_out, ".gguf"), "help: %s", test_out);
#undef CONVERT
}
