/*
 * test_engine.c: the sampling engine (model/engine.h) on the tiny preset
 * with GQA and llama3 RoPE scaling: its logits and log-probabilities against
 * a teacher-forced full forward, the same tokens whatever the batch (slots,
 * rows per forward, pool size, samples sharing a prompt or not), greedy
 * against the one-sequence KV cache, adapters, sessions, and errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/engine.h"
#include "../model/llama.h"
#include "test.h"
#include "tests.h"

static void tiny(LlamaConfig *c) {
    config_preset("tiny", c, NULL);
    c->tied = 1; c->rope_theta = 500000; c->rope_scaling = ROPE_SCALING_LLAMA3;
    c->rope_factor = 8; c->rope_low_freq = 1; c->rope_high_freq = 4; c->rope_orig_ctx = 16;
}

static void model(Llama *m, const LlamaConfig *c, int T, const LoraConfig *lc) {
    Err e;
    LlamaOpts o = {LLAMA_GRADS_NONE, lc, 0, NULL, 0};
    LC_ASSERT(llama_init_opts(m, c, &ops_cpu, NULL, 1, T, &o, &e) == 0);
    params_init(&m->t, m->params, c->n_layers, 21);
    /* larger weights than the init's: peaked distributions, so that greedy
     * has no near ties and sampling has something to choose from */
    for (size_t i = 0; i < m->t.size; i++) m->params[i] *= 2;
    if (lc) {
        Rng r;
        rng_seed(&r, 5);
        for (size_t i = 0; i < m->lt.size; i++) m->lora_params[i] = 0.1f * rng_normal(&r);
    }
}

/* What the callbacks saw: every sample's tokens, log-probs and logits. */
#define MAXS 64
#define MAXT 48
typedef struct {
    int V, n[MAXS], tok[MAXS][MAXT], finish[MAXS], done;
    float lp[MAXS][MAXT], lp1[MAXS][MAXT];
    float *logits; /* (MAXS, MAXT, V) */
    int per_req;   /* samples per request: index = req * per_req + sample */
    int split;     /* one request per sample: index = req */
    int stop_at;   /* on_token finishes a sample at this many tokens (0: never) */
} Seen;

static int seen_token(void *ud, EngineSeq *s) {
    Seen *z = ud;
    int i = z->split ? s->req : s->req * z->per_req + s->sample;
    LC_ASSERT(i < MAXS && s->n <= MAXT);
    if (z->logits) memcpy(z->logits + ((size_t)i * MAXT + s->n - 1) * z->V, s->logits, (size_t)z->V * sizeof(float));
    return z->stop_at > 0 && s->n == z->stop_at;
}

static void seen_done(void *ud, EngineSeq *s) {
    Seen *z = ud;
    int i = z->split ? s->req : s->req * z->per_req + s->sample;
    z->n[i] = s->n;
    z->finish[i] = s->finish;
    memcpy(z->tok[i], s->tokens, (size_t)s->n * sizeof(int));
    if (s->logprob) {
        memcpy(z->lp[i], s->logprob, (size_t)s->n * sizeof(float));
        memcpy(z->lp1[i], s->logprob_t1, (size_t)s->n * sizeof(float));
    }
    z->done++;
}

static void prompt_of(int i, int V, int *p, int *np) {
    Rng r;
    rng_seed(&r, 100 + i);
    *np = 1 + (i * 7) % 23;
    for (int t = 0; t < *np; t++) p[t] = (int)(rng_u64(&r) % V);
}

/* nreq prompts x nsamp samples through an engine with these options. */
static void run(Llama *m, const EngineOpts *eo, const SampleParams *sp, int nreq, int nsamp, int split, int max_new,
                Seen *z) {
    Engine *g;
    Err e;
    LC_ASSERT(engine_init(&g, m, eo, &e) == 0);
    z->per_req = nsamp;
    z->split = split;
    EngineCallbacks cb = {seen_token, seen_done, z};
    for (int i = 0; i < nreq; i++) {
        int p[32], np;
        prompt_of(i, m->c.vocab, p, &np);
        /* split: one request per sample, numbered from first_sample */
        for (int j = 0; j < (split ? nsamp : 1); j++) {
            EngineRequest rq = {p, np, split ? 1 : nsamp, max_new, *sp, 77 + (uint64_t)i, split ? j : 0, NULL, 0, 1, 0, NULL};
            int id = engine_add(g, &rq, &e);
            EXPECT(id >= 0, "engine_add: %s", e.msg);
        }
    }
    engine_run(g, &cb);
    engine_free(g);
}

/* Sample i's tokens as index req*nsamp+sample whether split or not. */
static int same_tokens(const Seen *a, const Seen *b, int n) {
    for (int i = 0; i < n; i++)
        if (a->n[i] != b->n[i] || memcmp(a->tok[i], b->tok[i], (size_t)a->n[i] * sizeof(int))) return 0;
    return 1;
}

/* logits and log-probs of every step against one full forward over the
 * prompt and the sampled tokens */
static void check_forced(Llama *m, const Seen *z, int i, int np, const int *p, float temp, const char *tag) {
    const LlamaConfig *c = &m->c;
    int V = c->vocab, n = z->n[i], T = np + n - 1, toks[128];
    memcpy(toks, p, (size_t)np * sizeof(int));
    memcpy(toks + np, z->tok[i], (size_t)(n - 1) * sizeof(int));
    Llama f;
    Err e;
    LlamaOpts o = {LLAMA_GRADS_NONE, m->lora ? &m->lc : NULL, 0, NULL, 0};
    LC_ASSERT(llama_init_opts(&f, c, &ops_cpu, NULL, 1, T, &o, &e) == 0);
    memcpy(f.params, m->params, m->t.size * sizeof(float));
    if (m->lora) memcpy(f.lora_params, m->lora_params, m->lt.size * sizeof(float));
    LC_ASSERT(llama_set_batch(&f, toks, NULL, NULL, &e) == 0);
    llama_forward(&f, 0, c->n_layers, 0);
    float *full = xmalloc((size_t)T * V * sizeof(float));
    ops_cpu.matmul_fwd(NULL, full, f.xf, f.w.lm_head, T, c->dim, V);
    double dl = 0, dlp = 0, dlp1 = 0;
    for (int s = 0; s < n; s++) {
        const float *ref = full + (size_t)(np - 1 + s) * V, *got = z->logits + ((size_t)i * MAXT + s) * V;
        double mx = -1e30, sum = 0, sum1 = 0;
        for (int v = 0; v < V; v++) {
            dl = fmax(dl, fabs(ref[v] - got[v]));
            mx = fmax(mx, ref[v]);
        }
        for (int v = 0; v < V; v++) {
            sum += exp((ref[v] - mx) / temp);
            sum1 += exp(ref[v] - mx);
        }
        int t = z->tok[i][s];
        dlp = fmax(dlp, fabs((ref[t] - mx) / temp - log(sum) - z->lp[i][s]));
        dlp1 = fmax(dlp1, fabs(ref[t] - mx - log(sum1) - z->lp1[i][s]));
    }
    EXPECT(dl < 1e-5, "%s: logits differ from the full forward by %g", tag, dl);
    EXPECT(dlp < 1e-5, "%s: log-probs differ from the full forward's by %g", tag, dlp);
    EXPECT(dlp1 < 1e-5, "%s: log-probs at T=1 differ by %g", tag, dlp1);
    free(full);
    llama_free(&f);
}

static void forced_case(const LlamaConfig *cp, const char *tag) {
    LlamaConfig c = *cp;
    Llama m;
    model(&m, &c, 4, NULL);
    Seen *z = xcalloc(1, sizeof *z);
    z->V = c.vocab;
    z->logits = xcalloc((size_t)MAXS * MAXT * c.vocab, sizeof(float));
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0.7f;
    EngineOpts eo = {8, 16, 96, 0, 0};
    run(&m, &eo, &sp, 5, 2, 0, 30, z);
    EXPECT(z->done == 10, "%d samples done of 10", z->done);
    for (int i = 0; i < 5; i++) {
        int p[32], np;
        prompt_of(i, c.vocab, p, &np);
        for (int j = 0; j < 2; j++) check_forced(&m, z, i * 2 + j, np, p, 0.7f, tag);
        EXPECT(z->finish[i * 2] == FINISH_LENGTH && z->n[i * 2] == 30, "prompt %d: finish %d after %d tokens", i,
               z->finish[i * 2], z->n[i * 2]);
    }
    free(z->logits);
    free(z);
    llama_free(&m);
}

void engine_forced(void) {
    LlamaConfig c;
    tiny(&c);
    forced_case(&c, "engine");
    /* a head size other than D / H (a width-pruned model): 4 heads of 16 on D = 40 */
    c.dim = 40; c.head_dim = 16;
    forced_case(&c, "engine, head_dim 16 on dim 40");
}

void engine_lora(void) {
    LlamaConfig c;
    tiny(&c);
    LoraConfig lc;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 4;
    Llama m;
    model(&m, &c, 4, &lc);
    Seen *z = xcalloc(1, sizeof *z);
    z->V = c.vocab;
    z->logits = xcalloc((size_t)MAXS * MAXT * c.vocab, sizeof(float));
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    EngineOpts eo = {4, 8, 64, 0, 0};
    run(&m, &eo, &sp, 3, 1, 0, 20, z);
    for (int i = 0; i < 3; i++) {
        int p[32], np;
        prompt_of(i, c.vocab, p, &np);
        check_forced(&m, z, i, np, p, 1.0f, "engine.lora");
    }
    free(z->logits);
    free(z);
    llama_free(&m);
}

/* The same samples with 1, 7 and 64 slots, few or many rows per forward, a
 * pool that makes requests wait, and each sample as its own request. */
void engine_batch_invariant(void) {
    LlamaConfig c;
    tiny(&c);
    Llama m;
    model(&m, &c, 4, NULL);
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0.9f;
    sp.top_p = 0.9f;
    enum { NR = 9, NS = 4, NEW = 25 };
    Seen *ref = xcalloc(1, sizeof *ref), *z = xcalloc(1, sizeof *z);
    EngineOpts one = {1, 2, 64, 0, 0};
    run(&m, &one, &sp, NR, NS, 0, NEW, ref);
    EXPECT(ref->done == NR * NS, "%d of %d samples", ref->done, NR * NS);
    struct { EngineOpts o; int split; const char *what; } cases[] = {
        {{7, 16, 64, 0, 0}, 0, "7 slots, 16 rows"},
        {{64, 512, 64, 0, 0}, 0, "64 slots, 512 rows"},
        {{64, 70, 64, 160, 0}, 0, "64 slots, a pool of 160 tokens"},
        {{5, 9, 64, 0, 0}, 1, "each sample its own request"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memset(z, 0, sizeof *z);
        run(&m, &cases[k].o, &sp, NR, NS, cases[k].split, NEW, z);
        EXPECT(z->done == NR * NS, "%s: %d of %d samples", cases[k].what, z->done, NR * NS);
        EXPECT(same_tokens(ref, z, NR * NS), "%s: tokens differ from one slot's", cases[k].what);
        EXPECT(memcmp(ref->lp, z->lp, sizeof z->lp) == 0, "%s: log-probs differ from one slot's", cases[k].what);
    }
    /* samples of a prompt differ from each other (their own streams) */
    int differ = 0;
    for (int i = 0; i < NR; i++) differ += memcmp(ref->tok[i * NS], ref->tok[i * NS + 1], NEW * sizeof(int)) != 0;
    EXPECT(differ >= NR - 1, "only %d of %d prompts have different samples", differ, NR);
    free(ref);
    free(z);
    llama_free(&m);
}

/* Greedy equals the one-sequence KV cache (llama_decode), and a stop id or
 * on_token ends a sample. */
void engine_greedy(void) {
    LlamaConfig c;
    tiny(&c);
    Llama m, d;
    model(&m, &c, 4, NULL);
    model(&d, &c, 64, NULL);
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0;
    Seen *z = xcalloc(1, sizeof *z);
    EngineOpts eo = {4, 8, 64, 0, 0};
    run(&m, &eo, &sp, 3, 1, 0, 30, z);
    for (int i = 0; i < 3; i++) {
        int p[32], np;
        prompt_of(i, c.vocab, p, &np);
        if (np > 1) llama_prefill(&d, p, np - 1);
        int t = p[np - 1], same = 1;
        for (int s = 0; s < 30; s++) {
            llama_decode(&d, t, np - 1 + s);
            int best = 0;
            for (int v = 1; v < c.vocab; v++)
                if (d.logits[v] > d.logits[best]) best = v;
            same &= best == z->tok[i][s];
            t = best;
        }
        EXPECT(same, "prompt %d: greedy tokens differ from llama_decode's", i);
    }
    /* stop ids and on_token */
    Engine *g;
    Err e;
    LC_ASSERT(engine_init(&g, &m, &eo, &e) == 0);
    int p[32], np;
    prompt_of(2, c.vocab, p, &np);
    int stop = z->tok[2][5];
    int first = 0;
    while (z->tok[2][first] != stop) first++;
    EngineRequest rq = {p, np, 1, 30, sp, 1, 0, &stop, 1, 1, 0, NULL};
    memset(z, 0, sizeof *z);
    z->per_req = 1;
    EngineCallbacks cb = {seen_token, seen_done, z};
    engine_add(g, &rq, &e);
    engine_run(g, &cb);
    EXPECT(z->finish[0] == FINISH_STOP && z->n[0] == first + 1 && z->tok[0][first] == stop,
           "stop id: finish %d after %d tokens (want stop after %d)", z->finish[0], z->n[0], first + 1);
    memset(z, 0, sizeof *z);
    z->per_req = 1;
    z->stop_at = 4;
    rq.n_stop_ids = 0;
    engine_add(g, &rq, &e);
    engine_run(g, &cb);
    EXPECT(z->finish[1] == FINISH_STOP && z->n[1] == 4, "on_token: finish %d after %d tokens", z->finish[1], z->n[1]);
    /* the context ends a sample */
    memset(z, 0, sizeof *z);
    z->per_req = 1;
    EngineOpts small = {2, 8, 20, 0, 0};
    Engine *g2;
    LC_ASSERT(engine_init(&g2, &m, &small, &e) == 0);
    rq.n_prompt = 12;
    rq.max_new = 40;
    EXPECT(engine_add(g2, &rq, &e) >= 0, "engine_add: %s", e.msg);
    engine_run(g2, &cb);
    EXPECT(z->finish[0] == FINISH_CTX && z->n[0] == 20 - 12 + 1, "context: finish %d after %d tokens",
           z->finish[0], z->n[0]);
    /* errors */
    rq.n_prompt = 20;
    EXPECT(engine_add(g2, &rq, &e) < 0 && strstr(e.msg, "does not fit the context"), "long prompt: %s", e.msg);
    rq.n_prompt = 3;
    rq.n = 0;
    EXPECT(engine_add(g2, &rq, &e) < 0 && strstr(e.msg, "--n"), "n 0: %s", e.msg);
    engine_free(g2);
    engine_free(g);
    free(z);
    llama_free(&m);
    llama_free(&d);
}

/* A conversation kept in the cache gives what the whole history as one
 * prompt gives. */
void engine_session(void) {
    LlamaConfig c;
    tiny(&c);
    Llama m;
    model(&m, &c, 4, NULL);
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0.8f;
    EngineOpts eo = {3, 8, 96, 0, 0};
    Engine *g;
    Err e;
    LC_ASSERT(engine_init(&g, &m, &eo, &e) == 0);
    Seen *z = xcalloc(1, sizeof *z);
    z->per_req = 1;
    EngineCallbacks cb = {seen_token, seen_done, z};
    int a[32], na, b[32], nb;
    prompt_of(1, c.vocab, a, &na);
    prompt_of(2, c.vocab, b, &nb);
    EngineRequest r1 = {a, na, 1, 10, sp, 5, 0, NULL, 0, 1, 7, NULL};
    engine_add(g, &r1, &e);
    engine_run(g, &cb);
    EXPECT(engine_session_len(g, 7) == na + 9, "session holds %d tokens, want %d", engine_session_len(g, 7), na + 9);
    int turn2[40];
    turn2[0] = z->tok[0][9];
    memcpy(turn2 + 1, b, (size_t)nb * sizeof(int));
    EngineRequest r2 = {turn2, nb + 1, 1, 10, sp, 6, 0, NULL, 0, 1, 7, NULL};
    engine_add(g, &r2, &e);
    engine_run(g, &cb);
    /* the whole history as one prompt, same seed */
    int hist[96], nh = 0;
    memcpy(hist, a, (size_t)na * sizeof(int)); nh = na;
    memcpy(hist + nh, z->tok[0], 10 * sizeof(int)); nh += 10;
    memcpy(hist + nh, b, (size_t)nb * sizeof(int)); nh += nb;
    EngineRequest r3 = {hist, nh, 1, 10, sp, 6, 0, NULL, 0, 1, 0, NULL};
    engine_add(g, &r3, &e);
    engine_run(g, &cb);
    EXPECT(z->n[1] == 10 && memcmp(z->tok[1], z->tok[2], 10 * sizeof(int)) == 0,
           "the session's second turn differs from the whole history as one prompt");
    engine_end_session(g, 7);
    EXPECT(engine_session_len(g, 7) == 0, "session still cached after engine_end_session");
    EngineStats st = engine_stats(g);
    EXPECT(st.kv_pages == 0, "%ld pages still used after every sample finished", st.kv_pages);
    /* what inspect predicts is what the engine took */
    EngineMem em = engine_memory(&c, NULL, &ops_cpu, &eo);
    EXPECT(em.weights == st.weight_bytes && em.kv == st.kv_bytes && em.kv_tokens == st.kv_tokens_cap,
           "engine_memory predicts weights %zu, KV %zu; the engine has %zu, %zu", em.weights, em.kv, st.weight_bytes,
           st.kv_bytes);
    EXPECT(em.kv == (size_t)em.kv_tokens * 2 * c.n_layers * c.n_kv_heads * config_head_size(&c) * sizeof(float),
           "KV bytes %zu for %ld tokens", em.kv, em.kv_tokens);
    engine_free(g);
    free(z);
    llama_free(&m);
}
