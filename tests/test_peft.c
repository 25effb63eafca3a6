/*
 * test_peft.c: LoRA adapters on disk. In-process: PEFT directories saved and
 * loaded back bit for bit, merge then unmerge restoring the base, every bad
 * adapter_config.json and adapter_model.safetensors refused with one line
 * naming the option or the tensor; a reward model's adapter (SEQ_CLS, the
 * score head under PEFT's key) in every form PEFT writes; LoRA checkpoints (/lora beside /model, or
 * a base by reference with its hash) loaded back bit for bit, and as a
 * merged model. Through the binary: convert --adapter / --lora-init and
 * logits --adapter, good and bad, with the existing output untouched. The
 * comparison with PEFT itself is scripts/test_peft.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../model/llama.h"
#include "../model/lora.h"
#include "../train/io/ckpt.h"
#include "../train/io/source.h"
#include "../train/io/hf.h"
#include "../train/io/iofile.h"
#include "../train/io/peft.h"
#include "../train/io/safetensors.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tpeft"

/* Adapters attached vs merged: the same function summed in another order
 * (x W^T + s (x A^T) B^T vs x (W + s B A)^T), float32 throughout; logits of
 * magnitude ~1 agree to a few ulps of the largest term, 1e-5 leaves room. */
#define LOGITS_TOL 1e-5

static void setup(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
}

static void put_file(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    LC_ASSERT(fwrite(s, 1, n, f) == n);
    fclose(f);
}

static size_t get_file(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return n;
}

/* 3 layers, GQA, FFN width unlike the others: every module its own shape. */
static LlamaConfig base_config(int dim) {
    LlamaConfig c = {.dim = dim, .n_layers = 3, .n_heads = 4, .n_kv_heads = 2, .hidden = 40, .vocab = 19,
                     .max_seq = 16, .norm_eps = 1e-5f, .rope_theta = 10000.0f};
    snprintf(c.name, sizeof c.name, "peftbase");
    return c;
}

static float *base_params(const LlamaConfig *c, ParamTable *t, uint64_t seed) {
    Err e;
    LC_ASSERT(params_build(c, t, &e) == 0);
    float *p = xalloc_aligned(t->size * sizeof(float));
    memset(p, 0, t->size * sizeof(float));
    params_init(t, p, c->n_layers, seed);
    return p;
}

/* Adapter of lc for c with A and B ~ normal(0, 0.1) (B nonzero). */
static float *adapter_params(const LoraConfig *lc, const LlamaConfig *c, ParamTable *t, uint64_t seed) {
    Err e;
    LC_ASSERT(lora_build(lc, c, t, &e) == 0);
    float *p = xalloc_aligned(t->size * sizeof(float));
    memset(p, 0, t->size * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < t->n; i++)
        for (size_t k = 0; k < t->p[i].numel; k++) p[t->p[i].offset + k] = 0.1f * rng_normal(&r);
    return p;
}

static int same_tensors(const ParamTable *t, const float *a, const float *b) {
    for (int i = 0; i < t->n; i++)
        if (memcmp(a + t->p[i].offset, b + t->p[i].offset, t->p[i].numel * sizeof(float)) != 0) return 0;
    return 1;
}

/* An adapter on q, v, down of layers 0 and 2, alpha 12.5, dropout 0.05,
 * rsLoRA, gaussian: every field away from its default. */
static LoraConfig odd_lora(const LlamaConfig *c) {
    LoraConfig lc;
    Err e;
    lora_config_default(&lc, 1u << LORA_Q | 1u << LORA_V | 1u << LORA_DOWN);
    lc.r = 3, lc.alpha = 12.5f, lc.dropout = 0.05f, lc.rslora = 1, lc.init = LORA_INIT_GAUSSIAN;
    LC_ASSERT(lora_parse_layers("0,2", &lc, c->n_layers, &e) == 0);
    return lc;
}

static void save_adapter(const char *dir, const LoraConfig *lc, const LlamaConfig *c, uint64_t seed) {
    ParamTable t;
    float *p = adapter_params(lc, c, &t, seed);
    Err e;
    LC_ASSERT(peft_save(dir, lc, &t, p, "base", 1, &e) == 0);
    free(p);
    params_free(&t);
}

// ----------------------------------------------------------------------------
// round trips

void peft_roundtrip(void) {
    setup();
    LlamaConfig c = base_config(32);
    LoraConfig lc = odd_lora(&c);
    ParamTable t;
    float *p = adapter_params(&lc, &c, &t, 5);
    Err e = {{0}};
    const char *d = DIR "/rt";
    EXPECT(peft_save(d, &lc, &t, p, "my/base", 1, &e) == 0, "save: %s", e.msg);
    EXPECT(peft_is_dir(d) && access(DIR "/rt.tmp", F_OK) != 0, "layout after save");
    PeftAdapter a;
    if (peft_load(d, &c, &a, &e) != 0) {
        EXPECT(0, "load: %s", e.msg);
    } else {
        EXPECT(a.lc.r == 3 && a.lc.alpha == 12.5f && a.lc.dropout == 0.05f && a.lc.rslora &&
                   a.lc.init == LORA_INIT_GAUSSIAN && a.lc.targets == lc.targets && !a.lc.all_layers &&
                   a.lc.layers[0] && !a.lc.layers[1] && a.lc.layers[2],
               "config differs after the round trip");
        EXPECT(strcmp(a.base_name, "my/base") == 0, "base name '%s'", a.base_name);
        EXPECT(a.t.n == t.n && a.t.size == t.size && same_tensors(&t, p, a.params),
               "tensors differ after the round trip");
        peft_free(&a);
    }
    /* PEFT's key names, F32, and adapter_config.json's PEFT fields */
    Safetensors f;
    if (safetensors_open(&f, DIR "/rt/" PEFT_WEIGHTS, &e) == 0) {
        int k = safetensors_find(&f, "base_model.model.model.layers.2.mlp.down_proj.lora_A.weight");
        EXPECT(k >= 0 && strcmp(f.t[k].dtype, "F32") == 0 && f.t[k].shape[0] == 3 && f.t[k].shape[1] == 40,
               "down_proj lora_A key/shape");
        EXPECT(f.n == t.n, "%d tensors in the file, %d in the table", f.n, t.n);
        safetensors_close(&f);
    } else {
        EXPECT(0, "open: %s", e.msg);
    }
    static char js[8192];
    get_file(DIR "/rt/" PEFT_CONFIG, js, sizeof js);
    EXPECT(strstr(js, "\"peft_type\": \"LORA\"") && strstr(js, "\"task_type\": \"CAUSAL_LM\"") &&
               strstr(js, "\"lora_dropout\": 0.05,") && strstr(js, "\"lora_alpha\": 12.5") &&
               strstr(js, "\"use_rslora\": true") && strstr(js, "\"init_lora_weights\": \"gaussian\"") &&
               strstr(js, "\"bias\": \"none\"") && strstr(js, "\"fan_in_fan_out\": false") &&
               strstr(js, "\"inference_mode\": true") && strstr(js, "\"base_model_name_or_path\": \"my/base\""),
           "adapter_config.json: %s", js);
    /* an existing non-empty directory needs force and stays as it was */
    LoraConfig l2 = lc;
    l2.r = 2;
    EXPECT(peft_save(d, &l2, &t, p, NULL, 0, &e) == -1 && strstr(e.msg, "not empty") && strstr(e.msg, d),
           "overwrote without force: %s", e.msg);
    get_file(DIR "/rt/" PEFT_CONFIG, js, sizeof js);
    EXPECT(strstr(js, "\"r\": 3,") != NULL, "adapter_config.json changed by a refused save");
    free(p);
    params_free(&t);
}

/* lora_merge +1 then -1 gives the base back within float32 rounding, and
 * the merged model's logits are those of W + s B A computed here in double. */
void peft_merge_unmerge(void) {
    LlamaConfig c = base_config(32);
    LoraConfig lc;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 4, lc.alpha = 8;
    ParamTable bt, lt;
    float *w = base_params(&c, &bt, 3), *a = adapter_params(&lc, &c, &lt, 4);
    float *m = xalloc_aligned(bt.size * sizeof(float));
    memcpy(m, w, bt.size * sizeof(float));
    lora_merge(&lc, &c, &bt, m, &lt, a, 1);
    double maxd = 0, maxw = 0;
    for (size_t k = 0; k < bt.size; k++) maxd = fmax(maxd, fabs((double)m[k] - w[k]));
    EXPECT(maxd > 1e-3, "the merge changed nothing (max %g)", maxd);
    lora_merge(&lc, &c, &bt, m, &lt, a, -1);
    for (size_t k = 0; k < bt.size; k++) maxw = fmax(maxw, fabs((double)m[k] - w[k]));
    /* |W| ~ 0.02, |s B A| ~ 0.08: two roundings of values below 0.25 */
    EXPECT(maxw <= 3e-8, "unmerge left max |W' - W| = %g", maxw);
    free(w);
    free(a);
    free(m);
    params_free(&bt);
    params_free(&lt);
}

/* The LoRA forward (adapters attached) against the plain forward of the
 * merged weights: logits of every position (KV-cache decode) and per-token
 * losses of a batch (full forward), for q,v and for all-linear with rsLoRA
 * on a subset of layers. */
void peft_merged_logits(void) {
    LlamaConfig c = base_config(32);
    for (int v = 0; v < 2; v++) {
        LoraConfig lc;
        Err e = {{0}};
        if (v == 0) {
            lora_config_default(&lc, 1u << LORA_Q | 1u << LORA_V);
            lc.r = 4, lc.alpha = 8;
        } else {
            lc = odd_lora(&c);
            lc.targets = LORA_ALL_LINEAR;
        }
        enum { B = 2, T = 7 };
        Llama la, lm;
        LlamaOpts o = {.grads = LLAMA_GRADS_NONE, .lora = &lc};
        LC_ASSERT(llama_init_opts(&la, &c, &ops_cpu, NULL, B, T, &o, &e) == 0);
        LC_ASSERT(llama_init(&lm, &c, &ops_cpu, NULL, B, T, 0, &e) == 0);
        params_init(&la.t, la.params, c.n_layers, 31 + v);
        ParamTable lt;
        float *ap = adapter_params(&lc, &c, &lt, 41 + v);
        LC_ASSERT(lt.size == la.lt.size);
        memcpy(la.lora_params, ap, lt.size * sizeof(float));
        memcpy(lm.params, la.params, la.t.size * sizeof(float));
        lora_merge(&lc, &c, &lm.t, lm.params, &lt, ap, 1);
        int tokens[B * T], targets[B * T];
        for (int k = 0; k < B * T; k++) tokens[k] = (k * 7 + 3) % c.vocab, targets[k] = (k * 5 + 1) % c.vocab;
        double maxd = 0, maxl = 0, dl = 0;
        for (int p = 0; p < T; p++) {
            llama_decode(&la, tokens[p], p);
            llama_decode(&lm, tokens[p], p);
            for (int k = 0; k < c.vocab; k++) {
                maxd = fmax(maxd, fabs((double)la.logits[k] - lm.logits[k]));
                dl = fmax(dl, fabs((double)la.logits[k]));
            }
        }
        EXPECT(maxd <= LOGITS_TOL, "variant %d: decode logits differ by %g (max |logit| %g)", v, maxd, dl);
        LC_ASSERT(llama_set_batch(&la, tokens, targets, NULL, &e) == 0 &&
                  llama_set_batch(&lm, tokens, targets, NULL, &e) == 0);
        double sa = llama_forward(&la, 0, c.n_layers, 0), sm = llama_forward(&lm, 0, c.n_layers, 0);
        for (int k = 0; k < B * T; k++) maxl = fmax(maxl, fabs((double)la.row_loss[k] - lm.row_loss[k]));
        EXPECT(maxl <= LOGITS_TOL && fabs(sa - sm) <= LOGITS_TOL * B * T, "variant %d: losses differ by %g (sum %g vs %g)",
               v, maxl, sa, sm);
        /* and the adapter matters: the base alone differs */
        memcpy(lm.params, la.params, la.t.size * sizeof(float));
        EXPECT(fabs(llama_forward(&lm, 0, c.n_layers, 0) - sa) > 1e-3, "variant %d: the adapter changes nothing", v);
        free(ap);
        params_free(&lt);
        llama_free(&la);
        llama_free(&lm);
    }
}

// ----------------------------------------------------------------------------
// bad adapters

/* peft_load of dir must fail with a message holding want1 (and want2). */
static void expect_load_error(const char *what, const char *dir, const LlamaConfig *c, const char *want1,
                              const char *want2) {
    PeftAdapter a;
    Err e = {{0}};
    int rc = peft_load(dir, c, &a, &e);
    EXPECT(rc == -1, "%s: loaded", what);
    EXPECT(!strchr(e.msg, '\n') && strstr(e.msg, want1) && (!want2 || strstr(e.msg, want2)),
           "%s: '%s' lacks '%s' / '%s'", what, e.msg, want1, want2 ? want2 : "");
    if (rc == 0) peft_free(&a);
}

/* DIR/bad's adapter_config.json gets "key": value added (replacing the key
 * when present). */
static void config_patch(const char *key_value) {
    static char js[8192], out[9000];
    get_file(DIR "/bad/" PEFT_CONFIG, js, sizeof js);
    char key[64];
    const char *colon = strchr(key_value, ':');
    snprintf(key, sizeof key, "%.*s", (int)(colon - key_value), key_value);
    char *at = strstr(js, key);
    if (at) { /* drop the old "key": value, line (a list may span lines) */
        char *v = strchr(at, ':') + 2, *end = v;
        if (*v == '[' || *v == '{') {
            int depth = 0;
            do depth += (*end == '[' || *end == '{') - (*end == ']' || *end == '}');
            while (*++end && depth > 0);
        }
        char *nl = strchr(end, '\n');
        memmove(at, nl + 1, strlen(nl + 1) + 1);
        char *next = at;
        while (*next == ' ' || *next == '\n') next++;
        if (*next == '}') { /* it was the last key: drop the comma before it */
            char *comma = at;
            while (*comma != ',') comma--;
            *comma = ' ';
        }
    }
    snprintf(out, sizeof out, "{%s,%s", key_value, strchr(js, '{') + 1);
    put_file(DIR "/bad/" PEFT_CONFIG, out, strlen(out));
}

/* A good adapter in DIR/bad, then config_patch(key_value). */
static void config_with(const char *key_value) {
    LlamaConfig c = base_config(32);
    LoraConfig lc;
    lora_config_default(&lc, 1u << LORA_Q | 1u << LORA_V);
    lc.r = 4;
    save_adapter(DIR "/bad", &lc, &c, 9);
    config_patch(key_value);
}

void peft_bad_config(void) {
    setup();
    LlamaConfig c = base_config(32);
    static const struct { const char *kv, *want; } cases[] = {
        {"\"use_dora\": true", "use_dora = true is not supported by llamac"},
        {"\"bias\": \"lora_only\"", "bias = \"lora_only\" is not supported by llamac (only \"none\")"},
        {"\"rank_pattern\": {\"q_proj\": 2}", "rank_pattern = {\"q_proj\":2} is not supported"},
        {"\"alpha_pattern\": {\"v_proj\": 4}", "alpha_pattern = {\"v_proj\":4} is not supported"},
        {"\"init_lora_weights\": \"pissa\"", "init_lora_weights = \"pissa\" is not supported"},
        {"\"init_lora_weights\": \"olora\"", "init_lora_weights = \"olora\""},
        {"\"modules_to_save\": [\"lm_head\"]", "modules_to_save = [\"lm_head\"] is not supported"},
        {"\"target_modules\": \".*\\\\.q_proj\"", "target_modules = \".*\\\\.q_proj\" is not supported"},
        {"\"target_modules\": [\"q_proj\", \"lm_head\"]", "target_modules: unknown module 'lm_head'"},
        {"\"target_modules\": []", "target_modules must be a non-empty list"},
        {"\"fan_in_fan_out\": true", "fan_in_fan_out = true is not supported"},
        {"\"lora_bias\": true", "lora_bias = true is not supported"},
        {"\"megatron_config\": {\"tp\": 2}", "megatron_config = {\"tp\":2} is not supported"},
        {"\"layers_pattern\": \"h\"", "layers_pattern = \"h\" is not supported"},
        {"\"exclude_modules\": [\"q_proj\"]", "exclude_modules"},
        {"\"layer_replication\": [[0, 2]]", "layer_replication"},
        {"\"a_future_option\": 2.5", "a_future_option = 2.5 is not supported"},
        {"\"peft_type\": \"IA3\"", "peft_type = \"IA3\" is not supported by llamac (only LORA)"},
        {"\"task_type\": \"TOKEN_CLS\"", "task_type = \"TOKEN_CLS\" is not supported by llamac"},
        {"\"task_type\": \"SEQ_CLS\"", "task_type \"SEQ_CLS\" is an adapter for a classifier"},
        {"\"modules_to_save\": [\"score\"]", "modules_to_save [\"score\"] trains a classifier's head"},
        {"\"modules_to_save\": \"score\"", "modules_to_save = \"score\" is not supported"},
        {"\"r\": 0", "r must be a positive integer"},
        {"\"r\": -2", "r must be a positive integer"},
        {"\"r\": 2.5", "r must be a positive integer"},
        {"\"r\": 17", "--lora-r: 17 exceeds min(in, out) = 16 of v_proj"},
        {"\"lora_alpha\": 0", "lora_alpha must be a positive number"},
        {"\"lora_alpha\": -1", "lora_alpha must be a positive number"},
        {"\"lora_dropout\": 1.0", "lora_dropout must be a number in [0, 1)"},
        {"\"lora_dropout\": -0.1", "lora_dropout must be a number in [0, 1)"},
        {"\"layers_to_transform\": [0, 3]", "layers_to_transform: layer 3 out of range [0, 3)"},
        {"\"layers_to_transform\": []", "layers_to_transform must be"},
        {"\"use_rslora\": \"yes\"", "use_rslora must be true or false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config_with(cases[i].kv);
        expect_load_error(cases[i].kv, DIR "/bad", &c, DIR "/bad/adapter_config.json: ", cases[i].want);
    }
    /* full module paths, as PEFT writes "all-linear" for small models: the
     * modules and the layers they name */
    LoraConfig lc;
    Err fe = {{0}};
    config_with("\"target_modules\": [\"model.layers.0.self_attn.q_proj\", \"model.layers.1.self_attn.q_proj\", "
                "\"model.layers.2.self_attn.q_proj\", \"model.layers.2.mlp.down_proj\", \"model.layers.0.mlp.down_proj\", "
                "\"model.layers.1.mlp.down_proj\"]");
    EXPECT(peft_read_config(DIR "/bad", &c, &lc, NULL, 0, &fe) == 0 && lc.targets == (1u << LORA_Q | 1u << LORA_DOWN) &&
           lc.all_layers, "full paths on every layer: %s (targets %x, all %d)", fe.msg, lc.targets, lc.all_layers);
    config_with("\"target_modules\": [\"model.layers.0.self_attn.v_proj\", \"model.layers.2.self_attn.v_proj\", "
                "\"model.layers.2.self_attn.k_proj\", \"model.layers.0.self_attn.k_proj\"]");
    EXPECT(peft_read_config(DIR "/bad", &c, &lc, NULL, 0, &fe) == 0 && lc.targets == (1u << LORA_K | 1u << LORA_V) &&
           !lc.all_layers && lc.layers[0] && !lc.layers[1] && lc.layers[2], "full paths on layers 0, 2: %s", fe.msg);
    config_with("\"target_modules\": [\"model.layers.0.self_attn.q_proj\", \"model.layers.1.self_attn.q_proj\", "
                "\"model.layers.0.self_attn.v_proj\"]");
    expect_load_error("different layer sets", DIR "/bad", &c, DIR "/bad/adapter_config.json: ",
                      "q_proj and v_proj are adapted on different layers");
    config_with("\"target_modules\": [\"model.layers.7.self_attn.q_proj\"]");
    expect_load_error("a layer past the model", DIR "/bad", &c, DIR "/bad/adapter_config.json: ",
                      "unknown module 'model.layers.7.self_attn.q_proj'");
    /* neutral values of options llamac lacks (here of a key it has never
     * heard of) are fine */
    PeftAdapter a;
    Err e = {{0}};
    config_with("\"a_future_flag\": false");
    EXPECT(peft_load(DIR "/bad", &c, &a, &e) == 0, "a neutral unknown key: %s", e.msg);
    if (e.msg[0] == 0) peft_free(&a);
    /* an int layers_to_transform selects layer 1: the file's layers 0 and 2
     * are then extra tensors */
    config_with("\"layers_to_transform\": 1");
    expect_load_error("int layers_to_transform", DIR "/bad", &c,
                      "unexpected tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", NULL);
    /* not JSON, not an object, no peft_type, no directory */
    put_file(DIR "/bad/" PEFT_CONFIG, "{\"r\": 4,", 8);
    expect_load_error("not JSON", DIR "/bad", &c, "bad/adapter_config.json: not valid JSON", NULL);
    put_file(DIR "/bad/" PEFT_CONFIG, "[4]", 3);
    expect_load_error("not an object", DIR "/bad", &c, "bad/adapter_config.json: not a JSON object", NULL);
    put_file(DIR "/bad/" PEFT_CONFIG, "{\"r\": 4}", 8);
    expect_load_error("no peft_type", DIR "/bad", &c, "bad/adapter_config.json: missing peft_type", NULL);
    expect_load_error("no directory", DIR "/nothere", &c, "nothere/adapter_config.json: cannot open", NULL);
}

void peft_bad_weights(void) {
    setup();
    LlamaConfig c = base_config(32), other = base_config(64), deep = base_config(32);
    deep.n_layers = 5;
    LoraConfig lc;
    lora_config_default(&lc, 1u << LORA_Q | 1u << LORA_V);
    lc.r = 4;
    const char *d = DIR "/badw", *st = DIR "/badw/" PEFT_WEIGHTS;
    /* an adapter for another base: same names, other shapes */
    save_adapter(d, &lc, &other, 1);
    expect_load_error("another dim", d, &c, "badw/adapter_model.safetensors: tensor "
                      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [4, 64]",
                      "the base model needs [4, 32]");
    /* an adapter for a deeper base: names the base lacks */
    save_adapter(d, &lc, &deep, 1);
    expect_load_error("more layers", d, &c, "unexpected tensor base_model.model.model.layers.3.self_attn.q_proj",
                      "3-layer base model");
    /* a tensor missing: the config asks for k_proj too */
    save_adapter(d, &lc, &c, 1);
    static char js[8192];
    get_file(DIR "/badw/" PEFT_CONFIG, js, sizeof js);
    char *q = strstr(js, "\"q_proj\"");
    LC_ASSERT(q);
    memcpy(q, "\"k_proj\"", 8);
    put_file(DIR "/badw/" PEFT_CONFIG, js, strlen(js));
    expect_load_error("missing tensor", d, &c,
                      "missing tensor base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", NULL);
    /* truncated file; header lying about the data; no weights at all; pickle */
    save_adapter(d, &lc, &c, 1);
    struct stat sb;
    LC_ASSERT(stat(st, &sb) == 0);
    LC_ASSERT(truncate(st, sb.st_size - 100) == 0);
    expect_load_error("truncated", d, &c, "badw/adapter_model.safetensors: ", "beyond");
    save_adapter(d, &lc, &c, 1);
    FILE *f = fopen(st, "r+b");
    LC_ASSERT(f);
    unsigned char hl[8] = {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0}; /* header length 2 GiB */
    LC_ASSERT(fwrite(hl, 1, 8, f) == 8);
    fclose(f);
    expect_load_error("lying header length", d, &c, "badw/adapter_model.safetensors: header length", NULL);
    save_adapter(d, &lc, &c, 1);
    char hdr[4096];
    f = fopen(st, "r+b");
    LC_ASSERT(f && fread(hdr, 1, sizeof hdr - 1, f) > 100);
    hdr[sizeof hdr - 1] = 0;
    char *sh = strstr(hdr + 8, "\"shape\":[4,32]");
    LC_ASSERT(sh);
    memcpy(sh, "\"shape\":[4,31]", 14); /* the shape no longer spans its bytes */
    fseek(f, 0, SEEK_SET);
    LC_ASSERT(fwrite(hdr, 1, sizeof hdr - 1, f) == sizeof hdr - 1);
    fclose(f);
    expect_load_error("lying shape", d, &c, "badw/adapter_model.safetensors: ", "F32 shape needs");
    remove(st);
    expect_load_error("no weights", d, &c, "badw: no adapter_model.safetensors", NULL);
    put_file(DIR "/badw/adapter_model.bin", "PK", 2);
    expect_load_error("pickle", d, &c, "adapter_model.bin: PyTorch pickle weights are not read", NULL);
    remove(DIR "/badw/adapter_model.bin");
}

/* A reward model's adapter (PEFT's SEQ_CLS, modules_to_save ["score"]):
 * saved and loaded back bit for bit with the head under PEFT's key, the
 * config forms PEFT writes read as a head, and the head merged as a copy. */
void peft_head(void) {
    setup();
    LlamaConfig c = base_config(32);
    c.num_labels = 1, c.pad_id = 2;
    LoraConfig lc;
    lora_config_default(&lc, 1u << LORA_Q | 1u << LORA_V);
    lc.r = 4, lc.head = 1;
    ParamTable t;
    float *p = adapter_params(&lc, &c, &t, 6);
    Err e = {{0}};
    EXPECT(peft_save(DIR "/head", &lc, &t, p, NULL, 1, &e) == 0, "save: %s", e.msg);
    PeftAdapter a;
    if (peft_load(DIR "/head", &c, &a, &e) == 0) {
        EXPECT(a.lc.head && a.t.n == t.n && a.t.size == t.size && same_tensors(&t, p, a.params),
               "head adapter differs after the round trip (head %d, %d tensors)", a.lc.head, a.t.n);
        peft_free(&a);
    } else {
        EXPECT(0, "load: %s", e.msg);
    }
    Safetensors f;
    if (safetensors_open(&f, DIR "/head/" PEFT_WEIGHTS, &e) == 0) {
        int k = safetensors_find(&f, "base_model.model.score.weight");
        EXPECT(k >= 0 && strcmp(f.t[k].dtype, "F32") == 0 && f.t[k].ndim == 2 && f.t[k].shape[0] == 1 &&
                   f.t[k].shape[1] == 32, "base_model.model.score.weight key/shape");
        EXPECT(f.n == t.n, "%d tensors in the file, %d in the table", f.n, t.n);
        safetensors_close(&f);
    } else {
        EXPECT(0, "open: %s", e.msg);
    }
    static char js[8192];
    get_file(DIR "/head/" PEFT_CONFIG, js, sizeof js);
    const char *mts = strstr(js, "\"modules_to_save\": [");
    EXPECT(strstr(js, "\"task_type\": \"SEQ_CLS\"") && mts && strstr(mts, "\"classifier\"") &&
               strstr(mts, "\"score\""), "adapter_config.json: %s", js);

    /* what PEFT 0.21 writes: SEQ_CLS adds "classifier" and "score" to the
     * user's list, or makes the list; and a list without a task_type */
    static const struct { const char *tt, *mts; int head; } forms[] = {
        {"\"task_type\": \"SEQ_CLS\"", "\"modules_to_save\": [\"score\", \"classifier\", \"score\"]", 1},
        {"\"task_type\": \"SEQ_CLS\"", "\"modules_to_save\": null", 1},
        {"\"task_type\": null", "\"modules_to_save\": [\"score\"]", 1},
        {"\"task_type\": \"CAUSAL_LM\"", "\"modules_to_save\": null", 0},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        LC_ASSERT(peft_save(DIR "/bad", &lc, &t, p, NULL, 1, &e) == 0);
        config_patch(forms[i].tt);
        config_patch(forms[i].mts);
        LoraConfig got;
        EXPECT(peft_read_config(DIR "/bad", &c, &got, NULL, 0, &e) == 0 && got.head == forms[i].head,
               "%s, %s: head %d (%s)", forms[i].tt, forms[i].mts, got.head, e.msg);
    }
    /* the head's tensor without a head in the config, and the reverse */
    expect_load_error("score without modules_to_save", DIR "/bad", &c,
                      "unexpected tensor base_model.model.score.weight", NULL);
    LoraConfig nohead = lc;
    nohead.head = 0;
    ParamTable t0;
    float *p0 = adapter_params(&nohead, &c, &t0, 7);
    LC_ASSERT(peft_save(DIR "/bad", &nohead, &t0, p0, NULL, 1, &e) == 0);
    config_patch("\"task_type\": \"SEQ_CLS\"");
    expect_load_error("SEQ_CLS without a score tensor", DIR "/bad", &c, "missing tensor base_model.model.score.weight",
                      "adapter_config.json asks for it");
    LC_ASSERT(peft_save(DIR "/bad", &lc, &t, p, NULL, 1, &e) == 0);
    config_patch("\"modules_to_save\": [\"score\", \"lm_head\"]");
    expect_load_error("score and lm_head", DIR "/bad", &c, "bad/adapter_config.json: modules_to_save = ",
                      "is not supported by llamac (only [\"score\"]");
    /* an adapter for a 2-label classifier */
    LlamaConfig c2 = c;
    c2.num_labels = 2;
    save_adapter(DIR "/bad", &lc, &c2, 8);
    expect_load_error("2 labels", DIR "/bad", &c, "tensor base_model.model.score.weight has shape [2, 32]",
                      "needs [1, 32]");

    /* merged: the base's head becomes the adapter's copy; unmerge leaves it */
    ParamTable bt;
    float *w = base_params(&c, &bt, 9);
    int hi = params_find(&bt, "score.weight");
    LC_ASSERT(hi >= 0);
    float *m = xalloc_aligned(bt.size * sizeof(float)), *got = xalloc_aligned(bt.size * sizeof(float));
    memcpy(m, w, bt.size * sizeof(float));
    lora_merge(&lc, &c, &bt, m, &t, p, 1);
    EXPECT(memcmp(m + bt.p[hi].offset, p + t.p[t.n - 1].offset, (size_t)c.dim * sizeof(float)) == 0,
           "lora_merge did not copy the head");

    /* a LoRA checkpoint keeps the head (/lora's head attribute), loads as
     * the merged model and goes back to PEFT unchanged */
    remove(DIR "/head.h5");
    CkptLora cl = {lc, &t, p, NULL, NULL, 0};
    EXPECT(ckpt_save_lora(DIR "/head.h5", &c, &bt, w, 0, &cl, NULL, NULL, &e) == 0, "save: %s", e.msg);
    CkptInfo info;
    EXPECT(ckpt_info(DIR "/head.h5", &info, &e) == 0 && info.has_lora && info.lora.head, "info: head %d (%s)",
           info.lora.head, e.msg);
    EXPECT(test_source_load(DIR "/head.h5", &bt, got, &e) == 0 && same_tensors(&bt, m, got),
           "the LoRA checkpoint does not load as the merged model: %s", e.msg);
    int rc = test_llamac("convert " DIR "/head.h5 " DIR "/head_back --peft --force");
    EXPECT(rc == 0, "--peft: %s", test_err);
    if (rc == 0 && peft_load(DIR "/head_back", &c, &a, &e) == 0) {
        EXPECT(a.lc.head && a.t.n == t.n && same_tensors(&t, p, a.params), "LoRA checkpoint -> PEFT lost the head");
        peft_free(&a);
    } else {
        EXPECT(0, "loading the --peft export: %s", e.msg);
    }
    /* convert --lora-init on a classifier: a SEQ_CLS adapter whose head is
     * the base's */
    LC_ASSERT(ckpt_save(DIR "/head_base.h5", &c, &bt, w, 0, NULL, NULL, &e) == 0);
    rc = test_llamac("convert " DIR "/head_base.h5 " DIR "/head_new --lora-init --force --lora-r 2");
    EXPECT(rc == 0, "--lora-init on a classifier: %s", test_err);
    if (rc == 0 && peft_load(DIR "/head_new", &c, &a, &e) == 0) {
        EXPECT(a.lc.head && memcmp(a.params + a.t.p[a.t.n - 1].offset, w + bt.p[hi].offset,
                                   (size_t)c.dim * sizeof(float)) == 0, "the new adapter's head is not the base's");
        peft_free(&a);
    } else {
        EXPECT(0, "loading the --lora-init adapter: %s", e.msg);
    }
    free(w), free(m), free(got), free(p), free(p0);
    params_free(&bt);
    params_free(&t);
    params_free(&t0);
}

// ----------------------------------------------------------------------------
// LoRA checkpoints

void ckpt_lora_roundtrip(void) {
    setup();
    LlamaConfig c = base_config(32);
    LoraConfig lc = odd_lora(&c);
    ParamTable bt, lt;
    float *w = base_params(&c, &bt, 11), *a = adapter_params(&lc, &c, &lt, 12);
    Err e = {{0}};
    AdamWConfig ac = ADAMW_DEFAULTS;
    AdamW opt, opt2;
    LC_ASSERT(adamw_init(&opt, &ac, &lt, &ops_cpu, NULL, &e) == 0 && adamw_init(&opt2, &ac, &lt, &ops_cpu, NULL, &e) == 0);
    Rng r;
    rng_seed(&r, 13);
    for (size_t k = 0; k < lt.size; k++) opt.m[k] = rng_normal(&r), opt.v[k] = rng_uniform(&r);
    opt.t = 9;
    uint64_t cursor[2] = {1, 77};
    CkptState st = {9, 9 * 64, 3, 1e-4, 1, cursor, {5, 6, 7, 8}, "lora_r = 3\n", 0, 0, 2, NULL, 0}, st2;
    CkptLora cl = {lc, &lt, a, NULL, NULL, 0};
    EXPECT(ckpt_save_lora(DIR "/lora.h5", &c, &bt, w, 0x1234, &cl, &opt, &st, &e) == 0, "save: %s", e.msg);
    CkptInfo info;
    EXPECT(ckpt_info(DIR "/lora.h5", &info, &e) == 0 && info.has_lora && info.has_optim && info.lora.r == 3 &&
               info.lora.alpha == 12.5f && info.lora.targets == lc.targets && !info.lora.all_layers &&
               info.lora.layers[2] && !info.lora.layers[1] && !info.lora_base[0],
           "info: %s", e.msg);
    float *w2 = xalloc_aligned(bt.size * sizeof(float)), *a2 = xalloc_aligned(lt.size * sizeof(float));
    CkptLora cl2 = {info.lora, &lt, a2, NULL, NULL, 0};
    EXPECT(source_load_lora(DIR "/lora.h5", &c, &bt, w2, &cl2, &opt2, &st2, &e) == 0, "load: %s", e.msg);
    EXPECT(same_tensors(&bt, w, w2) && same_tensors(&lt, a, a2), "base or adapters differ after load");
    EXPECT(same_tensors(&lt, opt.m, opt2.m) && same_tensors(&lt, opt.v, opt2.v) && opt2.t == 9, "moments differ");
    if (e.msg[0] == 0 && st2.cursor) {
        EXPECT(st2.step == 9 && st2.cursor[1] == 77 && strcmp(st2.run_config, "lora_r = 3\n") == 0, "state");
        ckpt_state_free(&st2);
    }
    /* as a plain model: the base with the adapters merged, bit for bit */
    float *m = xalloc_aligned(bt.size * sizeof(float));
    memcpy(m, w, bt.size * sizeof(float));
    lora_merge(&lc, &c, &bt, m, &lt, a, 1);
    EXPECT(test_source_load(DIR "/lora.h5", &bt, w2, &e) == 0, "plain load: %s", e.msg);
    EXPECT(same_tensors(&bt, m, w2), "source_load of a LoRA checkpoint is not base + merged adapters");
    EXPECT(ckpt_load(DIR "/lora.h5", &c, &bt, w2, &opt2, NULL, &e) == -1 && strstr(e.msg, "a LoRA checkpoint"),
           "full resume from a LoRA checkpoint: %s", e.msg);
    /* other adapters requested */
    cl2.lc.r = 2;
    EXPECT(source_load_lora(DIR "/lora.h5", &c, &bt, w2, &cl2, NULL, NULL, &e) == -1 && strstr(e.msg, "r 3 vs 2"),
           "another rank: %s", e.msg);
    cl2.lc = info.lora;
    EXPECT(ckpt_save(DIR "/full.h5", &c, &bt, w, 0x1234, NULL, NULL, &e) == 0, "save base: %s", e.msg);
    EXPECT(source_load_lora(DIR "/full.h5", &c, &bt, w2, &cl2, NULL, NULL, &e) == -1 && strstr(e.msg, "no /lora"),
           "LoRA load of a full checkpoint: %s", e.msg);

    /* the base by reference: a checkpoint and a HF directory */
    const char *refs[2] = {DIR "/full.h5", DIR "/full_hf"};
    EXPECT(hf_save(DIR "/full_hf", &c, &bt, w, -1, -1, 1, &e) == 0, "HF save: %s", e.msg);
    for (int k = 0; k < 2; k++) {
        CkptLora cr = {lc, &lt, a, refs[k], NULL, 0};
        EXPECT(ckpt_save_lora(DIR "/ref.h5", &c, &bt, w, 0x1234, &cr, &opt, &st, &e) == 0, "save ref: %s", e.msg);
        EXPECT(ckpt_info(DIR "/ref.h5", &info, &e) == 0 && strcmp(info.lora_base, refs[k]) == 0, "ref info");
        memset(w2, 0, bt.size * sizeof(float));
        EXPECT(source_load_lora(DIR "/ref.h5", &c, &bt, w2, &cl2, &opt2, NULL, &e) == 0, "load ref: %s", e.msg);
        EXPECT(same_tensors(&bt, w, w2) && same_tensors(&lt, a, a2), "by reference: base or adapters differ");
        EXPECT(test_source_load(DIR "/ref.h5", &bt, w2, &e) == 0 && same_tensors(&bt, m, w2),
               "by reference, plain load: %s", e.msg);
    }
    /* the referenced base changed, or gone */
    w[bt.p[3].offset] += 1e-3f;
    EXPECT(hf_save(DIR "/full_hf", &c, &bt, w, -1, -1, 1, &e) == 0, "HF save: %s", e.msg);
    EXPECT(source_load_lora(DIR "/ref.h5", &c, &bt, w2, &cl2, NULL, NULL, &e) == -1 &&
               strstr(e.msg, "ref.h5: base build/tpeft/full_hf is not the one this checkpoint was trained on"),
           "changed base: %s", e.msg);
    rename(DIR "/full_hf", DIR "/full_hf_gone");
    EXPECT(test_source_load(DIR "/ref.h5", &bt, w2, &e) == -1 && strstr(e.msg, "ref.h5: its base: ") &&
               strstr(e.msg, "full_hf"),
           "missing base: %s", e.msg);
    iofile_dir_abort(DIR "/full_hf_gone");
    adamw_free(&opt);
    adamw_free(&opt2);
    free(w), free(w2), free(a), free(a2), free(m);
    params_free(&bt);
    params_free(&lt);
}

// ----------------------------------------------------------------------------
// through the binary

/* exit 1, one "llamac: error:" line holding want, and guard untouched. */
static void expect_cli_error(const char *what, int rc, const char *want, const char *guard, const char *keep) {
    int lines = 0;
    for (const char *s = test_err; *s; s++) lines += *s == '\n';
    EXPECT(rc == 1 && lines == 1 && strncmp(test_err, "llamac: error: ", 15) == 0, "%s: exit %d, stderr %s", what,
           rc, test_err);
    EXPECT(strstr(test_err, want), "%s: '%s' lacks '%s'", what, test_err, want);
    char buf[64] = "";
    get_file(guard, buf, sizeof buf);
    EXPECT(strcmp(buf, keep) == 0, "%s: %s was overwritten", what, guard);
}

void peft_cli(void) {
    setup();
    LlamaConfig c = base_config(32);
    ParamTable bt;
    float *w = base_params(&c, &bt, 21);
    Err e;
    LC_ASSERT(ckpt_save(DIR "/cli.h5", &c, &bt, w, 0, NULL, NULL, &e) == 0);
    LoraConfig lc = odd_lora(&c);
    save_adapter(DIR "/cli_ad", &lc, &c, 22);
    /* a new adapter from the command line loads back as asked */
    int rc = test_llamac("convert " DIR "/cli.h5 " DIR "/cli_new --lora-init --force --lora-r 2 --lora-alpha 4 "
                         "--lora-targets q,o_proj,up --lora-layers 1-2 --seed 5 --lora-init-b 0.01");
    EXPECT(rc == 0 && strstr(test_out, "new LoRA adapter"), "--lora-init: %s", test_err);
    PeftAdapter a;
    if (peft_load(DIR "/cli_new", &c, &a, &e) == 0) {
        EXPECT(a.lc.r == 2 && a.lc.alpha == 4 && a.lc.targets == (1u << LORA_Q | 1u << LORA_O | 1u << LORA_UP) &&
                   !a.lc.layers[0] && a.lc.layers[1] && a.lc.layers[2] && a.t.n == 12,
               "--lora-init config");
        float bmax = 0;
        for (size_t k = 0; k < a.t.p[1].numel; k++) bmax = fmaxf(bmax, fabsf(a.params[a.t.p[1].offset + k]));
        EXPECT(bmax > 0, "--lora-init-b left B zero");
        peft_free(&a);
    } else {
        EXPECT(0, "loading the --lora-init adapter: %s", e.msg);
    }
    /* merge: the written model is base + adapter */
    remove(DIR "/cli_merged.h5");
    rc = test_llamac("convert " DIR "/cli.h5 " DIR "/cli_merged.h5 --adapter " DIR "/cli_ad");
    EXPECT(rc == 0 && strstr(test_out, "merged"), "convert --adapter: %s", test_err);
    float *m = xalloc_aligned(bt.size * sizeof(float)), *got = xalloc_aligned(bt.size * sizeof(float));
    memcpy(m, w, bt.size * sizeof(float));
    LC_ASSERT(peft_load(DIR "/cli_ad", &c, &a, &e) == 0);
    lora_merge(&a.lc, &c, &bt, m, &a.t, a.params, 1);
    peft_free(&a);
    EXPECT(test_source_load(DIR "/cli_merged.h5", &bt, got, &e) == 0 && same_tensors(&bt, m, got),
           "the merged checkpoint is not base + adapter: %s", e.msg);
    /* logits --adapter equal the merged model's */
    rc = test_llamac("logits --model " DIR "/cli.h5 --adapter " DIR "/cli_ad --tokens 1,4,9 --out " DIR "/l_ad.bin");
    EXPECT(rc == 0, "logits --adapter: %s", test_err);
    rc = test_llamac("logits --model " DIR "/cli_merged.h5 --tokens 1,4,9 --out " DIR "/l_m.bin");
    EXPECT(rc == 0, "logits merged: %s", test_err);
    static float l1[1024], l2[1024];
    size_t n1 = get_file(DIR "/l_ad.bin", (char *)l1, sizeof l1), n2 = get_file(DIR "/l_m.bin", (char *)l2, sizeof l2);
    EXPECT(n1 == 3 * 19 * 4 && n1 == n2, "logits sizes %zu %zu", n1, n2);
    double maxd = 0;
    for (size_t k = 0; k < n1 / 4 && n1 == n2; k++) maxd = fmax(maxd, fabs((double)l1[k] - l2[k]));
    EXPECT(maxd <= LOGITS_TOL, "logits --adapter differ from the merged model's by %g", maxd);

    /* PEFT -> LoRA checkpoint (unmerged; base in the file or by reference)
     * -> PEFT gives the adapter back bit for bit; the checkpoint loads as
     * the merged model */
    PeftAdapter orig;
    LC_ASSERT(peft_load(DIR "/cli_ad", &c, &orig, &e) == 0);
    for (int ref = 0; ref < 2; ref++) {
        remove(DIR "/cli_lora.h5");
        rc = test_llamac("convert " DIR "/cli.h5 " DIR "/cli_lora.h5 --adapter " DIR "/cli_ad --keep-adapter%s",
                         ref ? " --base-ref" : "");
        EXPECT(rc == 0 && strstr(test_out, "LoRA checkpoint"), "--keep-adapter (ref %d): %s", ref, test_err);
        CkptInfo info;
        EXPECT(ckpt_info(DIR "/cli_lora.h5", &info, &e) == 0 && info.has_lora && info.lora.r == 3 &&
                   strcmp(info.lora_base, ref ? DIR "/cli.h5" : "") == 0,
               "LoRA checkpoint info (ref %d): %s", ref, e.msg);
        EXPECT(test_source_load(DIR "/cli_lora.h5", &bt, got, &e) == 0 && same_tensors(&bt, m, got),
               "the LoRA checkpoint does not load as the merged model (ref %d): %s", ref, e.msg);
        rc = test_llamac("convert " DIR "/cli_lora.h5 " DIR "/cli_back --peft --force");
        EXPECT(rc == 0 && strstr(test_out, "PEFT adapter"), "--peft: %s", test_err);
        if (rc == 0 && peft_load(DIR "/cli_back", &c, &a, &e) == 0) {
            EXPECT(a.t.size == orig.t.size && same_tensors(&orig.t, orig.params, a.params) && a.lc.r == orig.lc.r &&
                       a.lc.alpha == orig.lc.alpha && a.lc.rslora == orig.lc.rslora && a.lc.targets == orig.lc.targets,
                   "PEFT -> LoRA checkpoint -> PEFT changed the adapter (ref %d)", ref);
            peft_free(&a);
        }
    }
    peft_free(&orig);

    /* bad input: one line, exit 1, the existing output untouched */
    put_file(DIR "/guard.h5", "keep", 4);
    mkdir(DIR "/guard_dir", 0755);
    put_file(DIR "/guard_dir/adapter_config.json", "keep", 4);
    LlamaConfig other = base_config(64);
    save_adapter(DIR "/cli_other", &lc, &other, 1);
    config_with("\"use_dora\": true");
    static const struct { const char *args, *want; } cases[] = {
        {"convert --force " DIR "/cli.h5 " DIR "/guard.h5 --adapter " DIR "/cli_other",
         "lora_A.weight has shape [3, 64], the base model needs [3, 32]"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard.h5 --adapter " DIR "/bad",
         "bad/adapter_config.json: use_dora = true is not supported by llamac"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard.h5 --adapter " DIR "/nothere",
         "nothere/adapter_config.json: cannot open"},
        {"logits --model " DIR "/cli.h5 --adapter " DIR "/cli_other --tokens 1 --out " DIR "/guard.h5",
         "the base model needs [3, 32]"},
        {"convert " DIR "/cli.h5 " DIR "/guard_dir --lora-init", "guard_dir: directory exists and is not empty"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --lora-init --lora-targets q_proj,lm_head",
         "--lora-targets: unknown module 'lm_head'"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --lora-init --lora-r 0", "--lora-r: must be in [1, 1048576], got 0"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --lora-init --lora-r 17",
         "--lora-r: 17 exceeds min(in, out) = 16 of k_proj"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --lora-init --lora-alpha -1", "--lora-alpha: must be positive"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --lora-init --lora-dropout 1",
         "--lora-dropout: must be in [0, 1)"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --lora-init --lora-layers 3",
         "--lora-layers: layer 3 out of range [0, 3)"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --lora-init --adapter " DIR "/cli_ad",
         "--lora-init: writes a new adapter, it takes no --adapter"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard.h5 --keep-adapter", "--keep-adapter: needs --adapter"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --adapter " DIR "/cli_ad --keep-adapter",
         "--keep-adapter: OUT must be a checkpoint (.h5)"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard.h5 --base-ref", "--base-ref: only with --keep-adapter"},
        {"convert --force " DIR "/cli.h5 " DIR "/guard_dir --peft", "cli.h5: not a LoRA checkpoint (no /lora)"},
        {"convert --force " DIR "/cli_ad " DIR "/guard_dir --peft", "cli_ad: --peft needs a LoRA checkpoint"},
        {"convert " DIR "/cli_lora.h5 " DIR "/guard_dir --peft", "guard_dir: directory exists and is not empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = test_llamac("%s", cases[i].args);
        int dir = strstr(cases[i].args, "guard_dir") != NULL;
        expect_cli_error(cases[i].args, r, cases[i].want, dir ? DIR "/guard_dir/adapter_config.json" : DIR "/guard.h5",
                         "keep");
    }
    free(w), free(m), free(got);
    params_free(&bt);
}
