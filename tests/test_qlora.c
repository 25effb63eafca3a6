/*
 * test_qlora.c: a model whose frozen weights stay quantised (DESIGN.md,
 * "Quantised weights") against the float32 model built from the same
 * dequantised weights, for every type a weight can stay in: the loss, each
 * row's loss, the adapters' gradients (with and without recomputation), the
 * DPO head's row-weighted backward, and the engine's greedy tokens and
 * logits; then the command line's bad inputs, each one line.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/gguf.h"
#include "../data/tok.h"
#include "../model/engine.h"
#include "../model/llama.h"
#include "../model/quant.h"
#include "../train/io/ckpt.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tqlora"

/* dim 256, hidden 512: whole blocks of every type (the K types' 256) */
static void shape(LlamaConfig *c) {
    Err e;
    LC_ASSERT(config_preset("tiny", c, &e) == 0);
    c->dim = 256, c->n_layers = 2, c->n_heads = 4, c->n_kv_heads = 2, c->hidden = 512, c->tied = 0;
    c->vocab = 96;
}

/* Every 2-D weight of t in type ty (norms float32). */
static uint32_t *plan(const ParamTable *t, uint32_t ty) {
    uint32_t *q = xcalloc((size_t)t->n, sizeof *q);
    for (int i = 0; i < t->n; i++) q[i] = t->p[i].ndim == 2 ? ty : 0;
    return q;
}

/* The pair: f float32 with the dequantised weights, q holding them
 * quantised; both with the same adapters on every linear. */
static void pair(Llama *f, Llama *q, uint32_t ty, int grads, int recompute, int B, int T) {
    LlamaConfig c;
    shape(&c);
    Err e;
    LoraConfig lc;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 4;
    lc.alpha = 8;
    ParamTable t;
    LC_ASSERT(params_build(&c, &t, &e) == 0);
    uint32_t *qt = plan(&t, ty);
    LlamaOpts of = {grads, &lc, recompute, NULL, 0}, oq = {grads, &lc, recompute, qt, 0};
    LC_ASSERT(llama_init_opts(f, &c, &ops_cpu, NULL, B, T, &of, &e) == 0);
    EXPECT(llama_init_opts(q, &c, &ops_cpu, NULL, B, T, &oq, &e) == 0, "init: %s", e.msg);
    Rng r;
    rng_seed(&r, 11);
    float *w = xmalloc((size_t)c.hidden * c.dim * 4 > (size_t)c.vocab * c.dim * 4 ? (size_t)c.hidden * c.dim * 4
                                                                                      : (size_t)c.vocab * c.dim * 4);
    for (int i = 0; i < t.n; i++) {
        const ParamInfo *p = &t.p[i], *pq = &q->t.p[i];
        float *dst = f->params + p->offset;
        for (size_t k = 0; k < p->numel; k++) w[k] = p->ndim == 1 ? 1.0f + 0.1f * rng_normal(&r) : 0.05f * rng_normal(&r);
        if (!pq->qtype) {
            memcpy(dst, w, p->numel * sizeof(float));
            memcpy(q->params + pq->offset, w, p->numel * sizeof(float));
            continue;
        }
        LC_ASSERT(quant_quantize(ty, w, p->shape[0], p->shape[1], q->qdata + pq->qoffset) == 0);
        quant_rows(&q->qt[i], 0, (int)p->shape[0], dst); /* f: the weights q holds, dequantised */
    }
    for (size_t k = 0; k < f->lt.size; k++) f->lora_params[k] = q->lora_params[k] = 0.05f * rng_normal(&r);
    free(w);
    free(qt);
    params_free(&t);
}

static double rel(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), s = fmax(s, fabs(b[i]));
    return d / (s > 0 ? s : 1);
}

static void batch(Llama *m, int B, int T, int V) {
    int *tok = xmalloc((size_t)B * T * sizeof(int)), *tgt = xmalloc((size_t)B * T * sizeof(int));
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int)(rng_u64(&r) % V);
        tgt[i] = i % 5 == 0 ? LC_IGNORE : (int)(rng_u64(&r) % V);
    }
    Err e;
    LC_ASSERT(llama_set_batch(m, tok, tgt, NULL, &e) == 0);
    free(tok);
    free(tgt);
}

/* Loss, row losses and adapter gradients of one forward and backward. */
static void train_case(uint32_t ty, int recompute) {
    int B = 2, T = 12;
    Llama f, q;
    pair(&f, &q, ty, LLAMA_GRADS_INPUT, recompute, B, T);
    batch(&f, B, T, f.c.vocab);
    batch(&q, B, T, q.c.vocab);
    double lf = llama_forward(&f, 0, f.c.n_layers, 0.01f), lq = llama_forward(&q, 0, q.c.n_layers, 0.01f);
    llama_backward(&f, 0, f.c.n_layers);
    llama_backward(&q, 0, q.c.n_layers);
    const char *n = quant_name(ty);
    EXPECT(fabs(lq - lf) <= 1e-5 * fabs(lf), "%s%s: loss %.9g vs float32 %.9g", n, recompute ? " recompute" : "", lq, lf);
    double d = rel(q.row_loss, f.row_loss, (size_t)B * T);
    EXPECT(d < 1e-5, "%s: row losses differ by %g", n, d);
    d = rel(q.lora_grads, f.lora_grads, f.lt.size);
    EXPECT(d < 1e-5, "%s%s: adapter gradients differ by %g (relative to the largest)", n,
           recompute ? " recompute" : "", d);
    /* DPO's head: row-weighted backward */
    float rs[24];
    for (int i = 0; i < B * T; i++) rs[i] = 0.01f * (float)(i % 7 - 3);
    memset(f.lora_grads, 0, f.lt.size * sizeof(float));
    memset(q.lora_grads, 0, q.lt.size * sizeof(float));
    float mf[24], mq[24];
    double rf = llama_forward_rows(&f, mf), rq = llama_forward_rows(&q, mq);
    llama_head_backward(&f, rs);
    llama_head_backward(&q, rs);
    llama_backward(&f, 0, f.c.n_layers);
    llama_backward(&q, 0, q.c.n_layers);
    EXPECT(fabs(rq - rf) <= 1e-5 * fabs(rf) && rel(mq, mf, (size_t)B * T) < 1e-5, "%s: DPO rows' forward differs",
           n);
    d = rel(q.lora_grads, f.lora_grads, f.lt.size);
    EXPECT(d < 1e-5, "%s: DPO head's adapter gradients differ by %g", n, d);
    llama_free(&f);
    llama_free(&q);
}

void qlora_model_types(void) {
    for (int i = 0; i < TEST_NQTYPES; i++) {
        train_case(test_qtypes[i], 0);
        train_case(test_qtypes[i], 1);
    }
}

/* what greedy decoding gave request 0's first sample: each step's logits
 * (V = 96) and token */
typedef struct {
    float lg[8 * 96];
    int tok[8];
} Seen;

static int seen_tok(void *ud, EngineSeq *s) {
    Seen *z = ud;
    if (s->req == 0 && s->sample == 0) {
        memcpy(z->lg + (size_t)(s->n - 1) * 96, s->logits, 96 * sizeof(float));
        z->tok[s->n - 1] = s->tokens[s->n - 1];
    }
    return 0;
}
static void seen_done(void *ud, EngineSeq *s) { (void)ud, (void)s; }

/* Greedy decoding of prompt p through an engine of `slots` slots on m:
 * request 0 (n samples), then, if other, a second prompt decoded beside it */
static void greedy(Llama *m, int slots, int n, int other, Seen *z) {
    Engine *g;
    Err e;
    EngineOpts eo = {slots, 0, 32, 0, 0};
    LC_ASSERT(engine_init(&g, m, &eo, &e) == 0);
    int p[5] = {1, 7, 3, 9, 4}, p2[3] = {2, 5, 8};
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0;
    EngineRequest rq = {p, 5, n, 8, sp, 5, 0, NULL, 0, 0, 0, NULL}, rq2 = {p2, 3, 2, 8, sp, 6, 0, NULL, 0, 0, 0, NULL};
    LC_ASSERT(engine_add(g, &rq, &e) >= 0);
    if (other) LC_ASSERT(engine_add(g, &rq2, &e) >= 0);
    EngineCallbacks cb = {seen_tok, seen_done, z};
    engine_run(g, &cb);
    engine_free(g);
}

/* Greedy decoding through the engine: the quantised model's tokens are the
 * float32 model's on the dequantised weights and its logits within 1e-5
 * (qmatmul_rows sums in its own fixed order, not matmul_rows'); and a
 * sequence decoded beside four others (5 rows a step: the CPU's path for
 * many rows) gives the bits it gives alone (1 row: the fused path). */
void qlora_engine(void) {
    for (int i = 0; i < TEST_NQTYPES; i++) {
        Llama f, q;
        const char *tn = quant_name(test_qtypes[i]);
        pair(&f, &q, test_qtypes[i], LLAMA_GRADS_NONE, 0, 1, 32);
        Seen *z = xcalloc(3, sizeof *z);
        greedy(&f, 4, 1, 0, &z[0]);
        greedy(&q, 4, 1, 0, &z[1]);
        EXPECT(memcmp(z[0].tok, z[1].tok, sizeof z[0].tok) == 0, "%s: greedy tokens differ from the float32 model's",
               tn);
        double worst = 0, scale = 0;
        for (int k = 0; k < 8 * 96; k++) {
            worst = fmax(worst, fabs((double)z[1].lg[k] - z[0].lg[k]));
            scale = fmax(scale, fabs(z[0].lg[k]));
        }
        EXPECT(worst <= 1e-5 * scale, "%s: logits differ from the float32 model's by %g (largest %g)", tn, worst, scale);
        greedy(&q, 8, 3, 1, &z[2]);
        EXPECT(memcmp(&z[1], &z[2], sizeof z[1]) == 0, "%s: a sequence decoded in a batch differs from it alone", tn);
        free(z);
        llama_free(&f);
        llama_free(&q);
    }
}

/* Memory: the quantised model's float buffer holds only what is not
 * quantised, and llama_memory says what llama_init allocates. */
void qlora_memory(void) {
    LlamaConfig c;
    shape(&c);
    ParamTable t;
    Err e;
    LC_ASSERT(params_build(&c, &t, &e) == 0);
    uint32_t *qt = plan(&t, QUANT_Q4_0);
    LlamaOpts o = {LLAMA_GRADS_NONE, NULL, 0, qt, 0};
    Llama m;
    LC_ASSERT(llama_init_opts(&m, &c, &ops_cpu, NULL, 1, 8, &o, &e) == 0);
    LlamaMem mem = llama_memory_opts(&c, &ops_cpu, 1, 8, &o);
    size_t want = 0;
    for (int i = 0; i < t.n; i++)
        if (t.p[i].ndim == 2) want += (quant_bytes(QUANT_Q4_0, t.p[i].shape[0], t.p[i].shape[1]) + 63) / 64 * 64;
    EXPECT(m.t.qsize == want, "quantised bytes %zu, expected %zu", m.t.qsize, want);
    EXPECT(mem.params == m.t.size * sizeof(float) + m.t.qsize, "llama_memory params %zu", mem.params);
    EXPECT(m.t.size == (size_t)(2 * c.n_layers + 1) * c.dim, "float buffer of %zu floats: the norms only", m.t.size);
    EXPECT(m.w.layer[0].wq == NULL && m.ql[0][LORA_Q] && m.qembed && m.qhead, "views of quantised tensors");
    /* full training on it: refused */
    Llama x;
    LlamaOpts of = {LLAMA_GRADS_FULL, NULL, 0, qt, 0};
    EXPECT(llama_init_opts(&x, &c, &ops_cpu, NULL, 1, 8, &of, &e) != 0 && strstr(e.msg, "frozen"),
           "full training on a quantised base: '%s'", e.msg);
    llama_free(&m);
    free(qt);
    params_free(&t);
}

// ----------------------------------------------------------------------------
// the command line

static void write_model(const char *path, int vocab, int hidden) {
    LlamaConfig c;
    shape(&c);
    c.tied = 1;
    c.vocab = vocab;
    c.hidden = hidden;
    if (hidden == 64) /* the fuzz seed's size (scripts/fuzz_seeds.py): one layer of 32 */
        c.dim = 32, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1;
    ParamTable t;
    Err e;
    LC_ASSERT(params_build(&c, &t, &e) == 0);
    float *p = xalloc_aligned(t.size * sizeof(float));
    params_init(&t, p, c.n_layers, 5);
    LC_ASSERT(ckpt_save(path, &c, &t, p, 0, NULL, NULL, &e) == 0);
    free(p);
    params_free(&t);
}

/* Rewrite the type of the GGUF tensor `name` in place (the same block size
 * and bytes: Q4_0 <-> IQ4_NL), and return the file offset of its data. */
static long patch_type(const char *path, const char *name, uint32_t type) {
    Gguf g;
    Err e;
    LC_ASSERT(gguf_open(&g, path, &e) == 0);
    const GgufTensor *t = gguf_tensor(&g, name);
    LC_ASSERT(t);
    /* the info: uint64 length, the name, uint32 ndim, ndim uint64 dims, then the uint32 type */
    const uint8_t *at = memmem(g.map, g.size, name, strlen(name));
    LC_ASSERT(at);
    long off = (long)(at - g.map) + (long)strlen(name) + 4 + 8 * (long)t->ndim, data = (long)(t->data - g.map);
    gguf_close(&g);
    FILE *f = fopen(path, "r+b");
    LC_ASSERT(f && fseek(f, off, SEEK_SET) == 0 && fwrite(&type, 4, 1, f) == 1);
    fclose(f);
    return data;
}

void qlora_cli_errors(void) {
    mkdir(DIR, 0755);
    const char *h5 = DIR "/m.h5", *g4 = DIR "/m4.gguf", *bad = DIR "/bad.gguf", *nf = DIR "/nf.gguf";
    Tokenizer tok;
    const char *tokp = test_chat_tokenizer(&tok);
    write_model(h5, tok.vocab, 512);
    write_model(DIR "/m320.h5", tok.vocab, 320); /* rows of 320 in down_proj: no whole Q4_K block */
    char cmd[1024], common[512];
    int rc = test_llamac("quantize %s %s --type q4_0 --force", h5, g4);
    EXPECT(rc == 0, "quantize: %s", test_err);
    test_put(DIR "/d.jsonl", "{\"prompt\":\"a b\",\"completion\":\"c d\"}\n");
    snprintf(common, sizeof common, "--tokenizer %s --data " DIR "/d.jsonl --seq 16 --batch 1 --steps 1", tokp);
    static const struct {
        const char *model, *flags, *want;
    } cases[] = {
        {"m4.gguf", "--lora-r 4 --base-quant q2_k", "--base-quant: unknown type 'q2_k' (one of Q8_0, Q4_0"},
        {"m4.gguf", "--base-quant keep", "--base-quant: the base is frozen when quantised: train LoRA adapters"},
        {"m.h5", "--lora-r 4 --base-quant keep", "is not a GGUF file (keep trains on the types a GGUF file ships in"},
        {"m320.h5", "--lora-r 4 --base-quant q4_k", "not a whole number of Q4_K's 256-value blocks"},
        {"m4.gguf", "--lora-r 4 --lora-targets embed_tokens --base-quant keep", "--lora-targets"},
        {"bad.gguf", "--lora-r 4 --base-quant keep", "which llamac cannot keep quantised (it can: Q8_0, Q4_0, Q4_1"},
        {"nf.gguf", "--lora-r 4 --base-quant keep", "rows with non-finite values (a NaN or Inf block scale) "
                                                    "(--allow-nonfinite loads it anyway)"},
        {"trunc.gguf", "--lora-r 4 --base-quant keep", "trunc.gguf: "},
    };
    /* bad: one tensor retyped to IQ4_NL (read by name, not kept); nf: one
     * Q4_0 block's scale an Inf; trunc: the file cut inside its blocks */
    snprintf(cmd, sizeof cmd, "cp %s %s && cp %s %s && head -c 60000 %s > %s/trunc.gguf", g4, bad, g4, nf, g4, DIR);
    LC_ASSERT(system(cmd) == 0);
    patch_type(bad, "blk.1.ffn_up.weight", 20);
    long at = patch_type(nf, "blk.0.ffn_gate.weight", QUANT_Q4_0);
    uint16_t inf = 0x7c00;
    FILE *f = fopen(nf, "r+b");
    LC_ASSERT(f && fseek(f, at + 18 * 5, SEEK_SET) == 0 && fwrite(&inf, 2, 1, f) == 1);
    fclose(f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rc = test_llamac("sft --model %s/%s %s %s", DIR, cases[i].model, common, cases[i].flags);
        EXPECT(rc != 0 && strstr(test_err, cases[i].want) && strncmp(test_err, "llamac: error: ", 15) == 0 &&
                   strchr(test_err, '\n') == test_err + strlen(test_err) - 1,
               "%s %s: exit %d, wanted one line with '%s', got: %s", cases[i].model, cases[i].flags, rc, cases[i].want,
               test_err);
    }
    /* a tiny Q8_0 Llama: the fuzz corpus's seed of a GGUF held as --base-quant keep */
    write_model(DIR "/seed.h5", 16, 64);
    rc = test_llamac("quantize " DIR "/seed.h5 " DIR "/seed_q8.gguf --type q8_0 --force");
    EXPECT(rc == 0, "seed: %s", test_err);
    /* --allow-nonfinite: a warning, it loads and trains (into a NaN loss, which stops it) */
    rc = test_llamac("sft --model %s %s --lora-r 4 --base-quant keep --allow-nonfinite", nf, common);
    EXPECT(strstr(test_err, "loaded anyway (--allow-nonfinite)") && strstr(test_err, "training diverged"),
           "--allow-nonfinite: exit %d: %s", rc, test_err);
    tok_free(&tok);
}
