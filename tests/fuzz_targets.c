/*
 * fuzz_targets.c: one entry point per file parser of llamac (issue 16), each
 * taking a memory buffer, in the style of OSS-Fuzz's LLVMFuzzerTestOneInput.
 * The parsers take paths, so the buffer is written to a file in a private
 * directory under /dev/shm (tmpfs: no disk I/O per input) with the name the
 * parser expects (suffixes matter: ".jsonl", "config.json"). Inputs that
 * hold two files (a Hugging Face directory, a PEFT adapter) are split by
 * fuzz_split: a 2-byte little-endian length of the first part, then the
 * parts.
 *
 * Every entry runs the parser as llamac would, then uses what it returned
 * (reads tensors, encodes a text, walks tokens), so that a parser that
 * accepts a lie is caught by ASan when the lie is used. Sizes a file may
 * claim are bounded (FUZZ_MAX_FLOATS) so that a well-formed but huge model
 * is skipped rather than allocated.
 *
 * The same table serves libFuzzer (tests/fuzz_main.c, `make fuzz`, clang
 * with ASan + UBSan) and `make test` (tests/test_fuzz.c replays the seed
 * corpus and the committed crashers in tests/fuzz/<name>/ through it).
 */
#include "fuzz_targets.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/bbpe.h"
#include "../data/bpe.h"
#include "../data/chat.h"
#include "../data/dpo.h"
#include "../data/gguf.h"
#include "../data/jsonl.h"
#include "../data/prompts.h"
#include "../data/qclass.h"
#include "../data/sft.h"
#include "../data/shard.h"
#include "../data/spm.h"
#include "../data/tcache.h"
#include "../data/tok.h"
#include "../model/params.h"
#include "../train/io/ckpt.h"
#include "../train/proc/cli.h"
#include "../train/io/hf.h"
#include "../train/io/gguf.h"
#include "../train/io/source.h"
#include "../train/io/peft.h"
#include "../train/io/safetensors.h"
#include "../train/loop/rewards.h"
#include "../train/loop/scorer.h"

/* Largest model (floats) a fuzz input may make the harness allocate. */
#define FUZZ_MAX_FLOATS (1u << 20)

static char fuzz_dir[64];

/* The private directory, made on first use (removed by nobody: tmpfs). */
static const char *dir(void) {
    if (!fuzz_dir[0]) {
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/llamac-fuzz-%ld",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (long)getpid());
        mkdir(fuzz_dir, 0700);
    }
    return fuzz_dir;
}

/* Write d[0..n) to <dir>/<name> and return that path (static buffer per
 * slot: two files at once). */
static const char *put(int slot, const char *name, const uint8_t *d, size_t n) {
    static char paths[2][160];
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", dir(), name);
    FILE *f = fopen(paths[slot], "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    fclose(f);
    return paths[slot];
}

/* Split d into two parts (see the file comment): a's length first. */
static void split(const uint8_t *d, size_t n, const uint8_t **a, size_t *na, const uint8_t **b, size_t *nb) {
    size_t k = n >= 2 ? (size_t)(d[0] | d[1] << 8) : 0;
    size_t rest = n >= 2 ? n - 2 : 0;
    if (k > rest) k = rest;
    *a = d + (n >= 2 ? 2 : n);
    *na = k;
    *b = *a + k;
    *nb = rest - k;
}

/* A tokenizer for the SFT and chat harnesses: the committed llamac one. */
static const Tokenizer *fixture_tok(void) {
    static Tokenizer t;
    static int loaded;
    if (!loaded) {
        Err e;
        const char *p = getenv("LLAMAC_FUZZ_TOKENIZER");
        if (tok_load(&t, p ? p : "tests/fixtures/bpe_v1.tok", &e)) {
            fprintf(stderr, "fuzz: %s (run from the repository root)\n", e.msg);
            abort();
        }
        loaded = 1;
    }
    return &t;
}

/* Use what a tokenizer says it holds: every token's bytes, and an encode and
 * decode of a fixed text. */
static void use_tok(const Tokenizer *t) {
    size_t len, total = 0;
    for (int i = 0; i < t->vocab; i++) {
        const char *b = tok_token_bytes(t, i, &len);
        if (b && len) total += (unsigned char)b[0] + (unsigned char)b[len - 1];
    }
    int32_t *ids = NULL;
    size_t cap = 0;
    static const char text[] = "Hello world, \xc3\xa9t\xc3\xa9 <|endoftext|>\n\t 12345 \xf0\x9f\x99\x82 \xff";
    size_t n = tok_encode(t, text, sizeof text - 1, &ids, &cap);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->vocab) abort(); /* an id outside the vocabulary is a bug */
    char *out = NULL;
    size_t ocap = 0;
    if (tok_decode(t, ids, n, &out, &ocap) == (size_t)-1) abort();
    free(out);
    free(ids);
    (void)total;
}

/* A parser, then (when it took the file) the tokenizer it makes, used. */
static void load_and_use(const char *path) {
    Tokenizer t;
    Err e;
    if (tok_load(&t, path, &e) == 0) {
        use_tok(&t);
        tok_free(&t);
    }
}

// ----------------------------------------------------------------------------
// the entry points

static void fuzz_tok_llamac(const uint8_t *d, size_t n) {
    Bpe b;
    Err e;
    if (bpe_load(&b, put(0, "tok.bin", d, n), &e) == 0) bpe_free(&b);
    else return;
    load_and_use(put(0, "tok.bin", d, n)); /* through tok_load, and used */
}

static void fuzz_tokenizer_json(const uint8_t *d, size_t n) {
    const char *path = put(0, "tokenizer.json", d, n);
    Bbpe b;
    Err e;
    if (bbpe_load_json(&b, path, &e) == 0) {
        bbpe_free(&b);
        load_and_use(path);
    }
}

static void fuzz_tiktoken(const uint8_t *d, size_t n) {
    const char *path = put(0, "tokenizer.model", d, n);
    Bbpe b;
    Err e;
    if (bbpe_load_tiktoken(&b, path, &e) == 0) {
        bbpe_free(&b);
        load_and_use(path);
    }
}

static void fuzz_spm(const uint8_t *d, size_t n) {
    const char *path = put(0, "sp.model", d, n);
    Spm s;
    Err e;
    if (spm_load(&s, path, &e) == 0) {
        spm_free(&s);
        load_and_use(path);
    }
}

static void fuzz_shard(const uint8_t *d, size_t n) {
    Shard s;
    Err e;
    if (shard_open(&s, put(0, "x.bin", d, n), &e)) return;
    int32_t tok[16];
    uint64_t k = s.n_tokens < 16 ? s.n_tokens : 16;
    shard_read(&s, 0, k, tok);
    if (s.n_tokens >= k) shard_read(&s, s.n_tokens - k, k, tok);
    for (uint64_t i = 0; i < k; i++)
        if (tok[i] < 0 || tok[i] >= s.vocab) abort(); /* shard_open checks the ids */
    shard_close(&s);
}

/* Open and load a model from path into a bounded buffer, as every command
 * does (source.h). */
static void load_model(const char *path) {
    ParamTable t;
    Err e;
    ModelSource src;
    if (source_open(&src, path, &e) || params_build(&src.c, &t, &e)) return;
    if (t.size <= FUZZ_MAX_FLOATS) {
        float *p = xalloc_aligned(t.size * sizeof(float));
        source_load(&src, &t, p, &e);
        free(p);
    }
    params_free(&t);
}

/* The model held as --base-quant keep holds it: the plan, the float part,
 * the quantised blocks copied and every row dequantised. */
static void load_model_kept(const char *path) {
    ParamTable t;
    Err e;
    ModelSource src;
    if (source_open(&src, path, &e) || params_build(&src.c, &t, &e)) return;
    uint32_t *qt = xcalloc((size_t)t.n, sizeof *qt);
    if (source_quant_plan(&src, &src.c, &t, "keep", qt, &e) >= 0) {
        params_set_quant(&t, qt);
        if (t.size <= FUZZ_MAX_FLOATS && t.qsize <= 4 * FUZZ_MAX_FLOATS) {
            float *p = xalloc_aligned(t.size * sizeof(float));
            uint8_t *q = xcalloc(t.qsize + 1, 1);
            if (source_load_quant(&src, &src.c, &t, p, q, 1, &e) == 0) {
                float *row = xmalloc(sizeof(float) * (size_t)src.c.hidden * 4 + sizeof(float) * (size_t)src.c.dim * 4);
                for (int i = 0; i < t.n; i++)
                    if (t.p[i].qtype) {
                        QTensor x = quant_tensor(t.p[i].qtype, (int)t.p[i].shape[0], (int)t.p[i].shape[1],
                                                 q + t.p[i].qoffset);
                        for (int r = 0; r < x.rows; r++) quant_rows(&x, r, 1, row);
                    }
                free(row);
            }
            free(p);
            free(q);
        }
    }
    free(qt);
    params_free(&t);
}

static void fuzz_hf(const uint8_t *d, size_t n) {
    const uint8_t *a, *b;
    size_t na, nb;
    split(d, n, &a, &na, &b, &nb);
    char hf[160];
    snprintf(hf, sizeof hf, "%s/hf", dir());
    mkdir(hf, 0700);
    put(0, "hf/config.json", a, na);
    const char *st = put(1, "hf/model.safetensors", b, nb);
    Safetensors f; /* the weights file alone, every tensor read */
    Err e;
    if (safetensors_open(&f, st, &e) == 0) {
        for (int i = 0; i < f.n; i++) {
            size_t numel = 1;
            for (int k = 0; k < f.t[i].ndim; k++) numel *= (size_t)f.t[i].shape[k];
            if (numel > FUZZ_MAX_FLOATS) continue;
            float *x = xmalloc(numel * sizeof(float) + 1);
            safetensors_read_f32(&f, i, x, &e);
            free(x);
        }
        safetensors_close(&f);
    }
    LlamaConfig c;
    if (hf_config(hf, &c, &e) == 0) load_model(hf);
}

static void fuzz_ckpt(const uint8_t *d, size_t n) {
    const char *path = put(0, "ckpt.h5", d, n);
    CkptInfo info;
    Err e;
    if (ckpt_info(path, &info, &e)) return;
    load_model(path);
    ParamTable t; /* and the training state, as a resume reads it */
    if (params_build(&info.c, &t, &e)) return;
    if (t.size <= FUZZ_MAX_FLOATS) {
        float *p = xalloc_aligned(t.size * sizeof(float));
        CkptState st;
        if (ckpt_load(path, &info.c, &t, p, NULL, &st, &e) == 0) ckpt_state_free(&st);
        free(p);
    }
    params_free(&t);
}

static void fuzz_ini(const uint8_t *d, size_t n) {
    CliArgs a;
    Err e;
    if (cli_config(put(0, "x.ini", d, n), &a, &e) == 0) cli_args_free(&a);
}

static int count_doc(void *ud, const char *text, size_t len, Err *e) {
    (void)e;
    *(size_t *)ud += len ? (unsigned char)text[len - 1] : 0;
    return 0;
}

static void fuzz_jsonl(const uint8_t *d, size_t n) {
    size_t sum = 0;
    Err e;
    docs_each(put(0, "x.jsonl", d, n), "text", count_doc, &sum, &e);
}

static int count_chat(void *ud, const ChatMsg *msgs, int n, const char *where, Err *e) {
    ChatTokens out = {0};
    (void)ud;
    chat_encode(fixture_tok(), CHAT_LLAMA2, msgs, n, &out, where, e);
    chat_tokens_free(&out);
    return 0;
}

static void fuzz_chat_jsonl(const uint8_t *d, size_t n) {
    Err e;
    chat_jsonl_each(put(0, "chat.jsonl", d, n), count_chat, NULL, &e);
}

static void fuzz_gguf(const uint8_t *d, size_t n) {
    const char *path = put(0, "x.gguf", d, n);
    Gguf g;
    Err e;
    if (gguf_open(&g, path, &e) == 0) {
        for (int i = 0; i < g.n_tensors; i++) {
            if (g.t[i].numel > (int64_t)FUZZ_MAX_FLOATS || !gguf_type_supported(g.t[i].type)) continue;
            float *x = xmalloc((size_t)g.t[i].numel * sizeof(float) + 1);
            gguf_tensor_f32(&g, &g.t[i], x, &e);
            free(x);
        }
        gguf_close(&g);
    }
    load_and_use(path); /* its vocabulary, and the model it describes */
    LlamaConfig c;
    if (gguf_llama_config(path, &c, &e) == 0) {
        load_model(path);
        load_model_kept(path);
    }
}

/* The base an adapter is read against: two layers, every projection. */
static LlamaConfig peft_base(void) {
    LlamaConfig c = {.dim = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .hidden = 24, .vocab = 11,
                     .max_seq = 32, .norm_eps = 1e-5f, .rope_theta = 10000.0f};
    return c;
}

static void fuzz_peft(const uint8_t *d, size_t n) {
    const uint8_t *a, *b;
    size_t na, nb;
    split(d, n, &a, &na, &b, &nb);
    char ad[160];
    snprintf(ad, sizeof ad, "%s/adapter", dir());
    mkdir(ad, 0700);
    put(0, "adapter/adapter_config.json", a, na);
    put(1, "adapter/adapter_model.safetensors", b, nb);
    for (int labels = 0; labels < 2; labels++) { /* a causal base, and a reward model's (modules_to_save score) */
        LlamaConfig c = peft_base();
        c.num_labels = labels;
        PeftAdapter pa;
        Err e;
        if (peft_load(ad, &c, &pa, &e) == 0) peft_free(&pa);
    }
}

/* --reward-model's spec: models, weights, BASE+ADAPTER (train/loop/scorer.h) */
static void fuzz_reward_spec(const uint8_t *d, size_t n) {
    char *s = xmalloc(n + 1);
    memcpy(s, d, n);
    s[n] = 0;
    ScorerSpec *v;
    int k;
    Err e;
    if (scorer_spec_parse(s, &v, &k, &e) == 0) {
        for (int i = 0; i < k; i++)
            if (!v[i].name[0] || !isfinite(v[i].weight)) abort();
        free(v);
    }
    free(s);
}

/* llamac rl --reward-answer: a completion's final answer (rewards.h) and
 * its match against accepted answers of each JSON type */
static void fuzz_reward_answer(const uint8_t *d, size_t n) {
    char *s = xmalloc(n + 1);
    memcpy(s, d, n);
    s[n] = 0;
    char out[64];
    rewards_final_answer(s, out, sizeof out);
    if (strlen(out) >= sizeof out || strlen(out) > n) abort();
    json_t *v[4] = {json_string("plant"), json_real(3.5), json_pack("[si]", "a food", 42), json_string(out)};
    for (int k = 0; k < 4; k++) {
        int m = rewards_answer_match(out, v[k]);
        if (m != 0 && m != 1) abort();
        json_decref(v[k]);
    }
    free(s);
}

static void fuzz_sft(const uint8_t *d, size_t n) {
    const char *path = put(0, "sft.jsonl", d, n);
    static const int tpl[2] = {-1, CHAT_LLAMA2};
    for (int k = 0; k < 2; k++) {
        SftOpts o = {.format = SFT_AUTO, .loss = SFT_LOSS_AUTO, .tpl = tpl[k], .text_field = "text",
                     .max_len = 64, .drop_long = k, .bos = 1};
        SftSet s;
        Err e;
        if (sft_load(&s, path, fixture_tok(), &o, &e) == 0) {
            for (size_t i = 0; i < s.ntok; i++)
                if (s.ids[i] < 0 || s.ids[i] >= fixture_tok()->vocab) abort();
            sft_free(&s);
        }
    }
}

static void fuzz_dpo(const uint8_t *d, size_t n) {
    const char *path = put(0, "dpo.jsonl", d, n);
    static const int tpl[2] = {-1, CHAT_LLAMA2};
    for (int k = 0; k < 2; k++) {
        SftOpts o = {.format = SFT_AUTO, .loss = SFT_LOSS_AUTO, .tpl = tpl[k], .text_field = "text",
                     .max_len = 64, .drop_long = k, .bos = 1};
        DpoSet s;
        Err e;
        if (dpo_load(&s, path, fixture_tok(), &o, &e) == 0) {
            for (size_t i = 0; i < s.ntok; i++)
                if (s.ids[i] < 0 || s.ids[i] >= fixture_tok()->vocab) abort();
            for (size_t i = 0; i < s.n; i++) (void)dpo_pair_slots(&s, i);
            dpo_free(&s);
        }
    }
}

static void fuzz_prompts(const uint8_t *d, size_t n) {
    const char *path = put(0, "prompts.jsonl", d, n);
    static const int tpl[2] = {-1, CHAT_LLAMA2};
    for (int k = 0; k < 2; k++) {
        PromptOpts o = {tpl[k], "no template", NULL, k, 48, "the context"};
        PromptSet s;
        Err e;
        if (prompts_load(&s, path, fixture_tok(), &o, &e) == 0) {
            for (size_t i = 0; i < s.ntok; i++)
                if (s.ids[i] < 0 || s.ids[i] >= fixture_tok()->vocab) abort();
            for (size_t i = 0; i < s.n; i++) { /* each prompt's stop strings over a text */
                if (s.off[i + 1] - s.off[i] == 0 || s.off[i + 1] - s.off[i] >= 48) abort();
                static const char text[] = "Hello there\n\nUser: \xc3\xa9 <|endoftext|>";
                long at = stop_find(s.stop + s.stop_off[i], s.stop_off[i + 1] - s.stop_off[i], text, sizeof text - 1, 3);
                if (at >= (long)sizeof text) abort();
            }
            prompts_free(&s);
        }
    }
    char **stops = NULL; /* the same bytes as a --stop value */
    size_t ns = 0, cap = 0;
    char *z = xmalloc(n + 1);
    memcpy(z, d, n);
    z[n] = 0;
    Err e;
    if (prompts_stops_parse(z, &stops, &ns, &cap, "--stop", &e) == 0)
        (void)stop_find(stops, ns, z, n, 0);
    for (size_t k = 0; k < ns; k++) free(stops[k]);
    free(stops);
    free(z);
}

/* A quality classifier file (data/qclass.h), then a score with it: every
 * row a loaded model holds is read by some feature. */
static void fuzz_qclass(const uint8_t *d, size_t n) {
    QClass m;
    Err e;
    memset(&m, 0, sizeof m);
    if (qclass_load(&m, put(0, "x.qclass", d, n), &e)) return;
    static const char text[] = "the quick brown fox jumps over the lazy dog";
    uint32_t f[sizeof text];
    size_t nf = qclass_features(text, sizeof text - 1, m.buckets, f);
    float *h = xmalloc((size_t)m.dim * sizeof(float) + 1);
    double p = qclass_prob(&m, f, nf, h);
    if (!(p >= 0.0 && p <= 1.0) && !isnan(p)) abort();
    free(h);
    qclass_free(&m);
}

/* A teacher cache (data/tcache.h), then the rows distill would read from
 * each split it holds, every position trained: ids must be in the
 * vocabulary the header claims. */
static void fuzz_tcache(const uint8_t *d, size_t n) {
    TCache c;
    Err e;
    memset(&c, 0, sizeof c);
    if (tcache_open(&c, put(0, "x.tcache", d, n), &e)) return;
    int T = (int)c.h.T, K = (int)c.h.K;
    if (T >= 1 && T <= 64 && K >= 1 && K <= 4096)
        for (int s = 0; s < TCACHE_NSPLIT; s++) {
            if (!c.h.data_id[s]) continue;
            int B = c.h.nrows[s] < 4 ? (int)c.h.nrows[s] : 4;
            uint64_t keys[4] = {0, 1, 2, 3};
            int32_t *tgt = xcalloc((size_t)4 * T, sizeof(int32_t)), *ids = xmalloc((size_t)4 * T * K * sizeof(int32_t));
            float *lp = xmalloc((size_t)4 * T * K * sizeof(float));
            if (B > 0 && !tcache_rows(&c, s, keys, B, T, tgt, ids, lp, &e))
                for (size_t i = 0; i < (size_t)B * T * K; i++)
                    if (ids[i] < 0 || (uint32_t)ids[i] >= c.h.V) abort();
            free(tgt);
            free(ids);
            free(lp);
        }
    tcache_close(&c);
}

const FuzzTarget fuzz_targets[] = {
    {"tok_llamac", fuzz_tok_llamac},   {"tokenizer_json", fuzz_tokenizer_json},
    {"tiktoken", fuzz_tiktoken},       {"spm", fuzz_spm},
    {"shard", fuzz_shard},             {"hf", fuzz_hf},
    {"ckpt", fuzz_ckpt},               {"ini", fuzz_ini},
    {"jsonl", fuzz_jsonl},             {"chat_jsonl", fuzz_chat_jsonl},
    {"gguf", fuzz_gguf},               {"peft", fuzz_peft},
    {"sft", fuzz_sft},                 {"dpo", fuzz_dpo},
    {"prompts", fuzz_prompts},         {"reward_spec", fuzz_reward_spec},
    {"qclass", fuzz_qclass},           {"tcache", fuzz_tcache},
    {"reward_answer", fuzz_reward_answer},
};
const int fuzz_ntargets = (int)(sizeof fuzz_targets / sizeof fuzz_targets[0]);

const FuzzTarget *fuzz_target(const char *name) {
    for (int i = 0; i < fuzz_ntargets; i++)
        if (strcmp(fuzz_targets[i].name, name) == 0) return &fuzz_targets[i];
    return NULL;
}
