/*
 * test_dpo.c: preference pairs (data/dpo.h), the DPO losses and `llamac dpo`.
 *
 * Pairs: each format's sequences against SFT's rendering of the same
 * prompt and completion; the HH layout against the explicit prompt; the
 * bad inputs by their one-line messages with file and line. Losses: every
 * type against its formula in double on random log-ratios, and the
 * hand-written derivative against central differences. The model-level
 * gradient (head op weights, backward) against finite differences of the
 * DPO loss of a tiny Llama. The command: full and LoRA runs, the reference
 * cache (written, reused, refused for another model or other data), a
 * kill + resume that must give the same bits as a straight run, and the
 * bad flags.
 */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/dpo.h"
#include "../model/llama.h"
#include "../model/ops.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tdpo"

static SftOpts opts(int tpl, int max_len) {
    SftOpts o = {SFT_PROMPT, SFT_LOSS_COMPLETION, tpl, "text", max_len, 0, 1, NULL};
    return o;
}

static int load(DpoSet *s, const char *jsonl, const Tokenizer *t, const SftOpts *o, Err *e) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    test_put(DIR "/x.jsonl", jsonl);
    return dpo_load(s, DIR "/x.jsonl", t, o, e);
}

/* sequence q of s equals ex (ids; mask from index pl on) */
static void expect_seq(const DpoSet *s, size_t q, const ChatTokens *ex, size_t pl, const char *what) {
    size_t n = s->off[q + 1] - s->off[q];
    EXPECT(n == ex->n, "%s: %zu tokens, expected %zu", what, n, ex->n);
    for (size_t k = 0; k < n && k < ex->n; k++) {
        EXPECT(s->ids[s->off[q] + k] == ex->ids[k], "%s: id %zu", what, k);
        EXPECT(s->mask[s->off[q] + k] == (k >= pl), "%s: mask %zu", what, k);
    }
}

static size_t first_one(const ChatTokens *t) {
    size_t i = 0;
    while (i < t->n && !t->mask[i]) i++;
    return i;
}

void dpo_formats(void) {
    Tokenizer t;
    test_chat_tokenizer(&t);
    Err e = {{0}};
    DpoSet s;
    /* strings: SFT's prompt rendering of each completion (BOS, EOS) */
    SftOpts o = opts(-1, 4096);
    EXPECT(load(&s, "{\"prompt\": \"Hi there\", \"chosen\": \" Hello!\", \"rejected\": \" How are you?\"}\n", &t, &o,
                &e) == 0, "%s", e.msg);
    SftRender b;
    sft_render_init(&b, &t, &o, SFT_LOSS_COMPLETION);
    json_t *p = json_string("Hi there"), *c = json_string(" Hello!"), *r = json_string(" How are you?");
    ChatTokens ch = {0}, rj = {0};
    LC_ASSERT(sft_render_prompt(&b, p, c, "chosen", "x", &e) == 0);
    for (size_t i = 0; i < b.ex.n; i++) {
        ChatTokens *x = &ch;
        if (x->n == x->cap) x->cap = 2 * x->cap + 8, x->ids = realloc(x->ids, x->cap * 4), x->mask = realloc(x->mask, x->cap);
        x->ids[x->n] = b.ex.ids[i], x->mask[x->n++] = b.ex.mask[i];
    }
    LC_ASSERT(sft_render_prompt(&b, p, r, "rejected", "x", &e) == 0);
    size_t pl = first_one(&ch) < first_one(&b.ex) ? first_one(&ch) : first_one(&b.ex);
    if (s.n == 1) {
        expect_seq(&s, 0, &ch, pl, "strings chosen");
        expect_seq(&s, 1, &b.ex, pl, "strings rejected");
        EXPECT(s.ids[0] == t.bos && s.ids[s.off[1] - 1] == t.eos, "BOS / EOS");
    }
    EXPECT(s.n == 1 && pl > 1, "%zu pairs, prompt %zu", s.n, pl);
    dpo_free(&s);
    /* HH strings: the shared prefix is the prompt, as TRL's extract_prompt
     * (the space goes to the completions) */
    EXPECT(load(&s, "{\"chosen\": \"Hi there Hello!\", \"rejected\": \"Hi there How are you?\"}\n", &t, &o, &e) == 0,
           "%s", e.msg);
    if (s.n == 1) {
        expect_seq(&s, 0, &ch, pl, "HH chosen");
        expect_seq(&s, 1, &b.ex, pl, "HH rejected");
    }
    dpo_free(&s);
    json_decref(p); json_decref(c); json_decref(r);
    /* messages (TRL's conversational format) and HH conversations give the same */
    SftOpts oc = opts(CHAT_LLAMA3, 4096);
    const char *conv = "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi there\"}], \"chosen\": [{\"role\": "
                       "\"assistant\", \"content\": \"Hello!\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": "
                       "\"Fine.\"}]}\n"
                       "{\"chosen\": [{\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": \"assistant\", "
                       "\"content\": \"Hello!\"}], \"rejected\": [{\"role\": \"user\", \"content\": \"Hi there\"}, "
                       "{\"role\": \"assistant\", \"content\": \"Fine.\"}]}\n";
    EXPECT(load(&s, conv, &t, &oc, &e) == 0, "%s", e.msg);
    EXPECT(s.n == 2, "%zu pairs", s.n);
    if (s.n == 2) {
        for (int q = 0; q < 2; q++) {
            size_t a = s.off[q + 1] - s.off[q], z = s.off[q + 3] - s.off[q + 2];
            EXPECT(a == z && memcmp(s.ids + s.off[q], s.ids + s.off[q + 2], a * 4) == 0 &&
                   memcmp(s.mask + s.off[q], s.mask + s.off[q + 2], a) == 0, "HH messages differ from prompt/chosen");
        }
        ChatMsg m[2] = {{CHAT_USER, "Hi there", 8}, {CHAT_ASSISTANT, "Hello!", 6}};
        ChatTokens full = {0}, pr = {0};
        LC_ASSERT(chat_encode(&t, CHAT_LLAMA3, m, 2, &full, "x", &e) == 0);
        LC_ASSERT(chat_encode(&t, CHAT_LLAMA3, m, 1, &pr, "x", &e) == 0); /* with the assistant header */
        expect_seq(&s, 0, &full, pr.n, "messages chosen");
        chat_tokens_free(&full);
        chat_tokens_free(&pr);
    }
    dpo_free(&s);
    /* truncation: sequences keep their first max_len tokens; a prompt that
     * fills max_len drops the pair */
    SftOpts ot = opts(-1, (int)pl + 2);
    EXPECT(load(&s, "{\"prompt\": \"Hi there\", \"chosen\": \" Hello! How are you? Fine.\", \"rejected\": \" Fine.\"}\n"
                    "{\"prompt\": \"Hi there How are you? Fine. Hello! You are helpful.\", \"chosen\": \" Fine.\", "
                    "\"rejected\": \" Hello!\"}\n", &t, &ot, &e) == 0, "%s", e.msg);
    EXPECT(s.n == 1 && s.truncated == 1 && s.dropped_long == 1 && s.off[1] == pl + 2, "n %zu truncated %ld dropped %ld",
           s.n, s.truncated, s.dropped_long);
    dpo_free(&s);
    chat_tokens_free(&ch);
    chat_tokens_free(&rj);
    sft_render_free(&b);
    tok_free(&t);
}

void dpo_errors(void) {
    Tokenizer t;
    test_chat_tokenizer(&t);
    static const struct { const char *jsonl, *want; int tpl; } cases[] = {
        {"{\"prompt\": \"x\", \"chosen\": \"y\"}\n", DIR "/x.jsonl:1: no field \"rejected\"", -1},
        {"\n{\"prompt\": \"x\", \"rejected\": \"y\"}\n", DIR "/x.jsonl:2: no field \"chosen\"", -1},
        {"{\"prompt\": \"x\", \"chosen\": \"y\", \"rejected\": \"y\"}\n", "\"chosen\" is identical to \"rejected\"", -1},
        {"{\"prompt\": \"x\", \"chosen\": \"\", \"rejected\": \"y\"}\n", DIR "/x.jsonl:1: empty \"chosen\"", -1},
        {"{\"prompt\": \"x\", \"chosen\": \"y\", \"rejected\": \"\"}\n", "empty \"rejected\"", -1},
        {"{\"chosen\": \"Hi there\", \"rejected\": \"Hi there you\"}\n", "empty completion: \"chosen\"", -1},
        {"{\"chosen\": \"Hi\", \"rejected\": \"you\"}\n", "share no prompt", -1},
        {"{\"prompt\": [{\"role\": \"user\", \"content\": \"x\"}], \"chosen\": [], \"rejected\": [{\"role\": "
         "\"assistant\", \"content\": \"y\"}]}\n", "empty \"chosen\" list", CHAT_LLAMA3},
        {"{\"prompt\": \"x\", \"chosen\": [{\"role\": \"assistant\", \"content\": \"y\"}], \"rejected\": \"z\"}\n",
         "must both be strings or both message lists", CHAT_LLAMA3},
        {"{\"prompt\": [{\"role\": \"user\", \"content\": \"x\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": "
         "\"y\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"z\"}]}\n", "need a chat template", -1},
        {"{\"prompt\": \"x\", \"chosen\": \"y\", \"rejected\": \"z\"}\nnot json\n", DIR "/x.jsonl:2: not valid JSON", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        SftOpts o = opts(cases[i].tpl, 4096);
        DpoSet s;
        Err e = {{0}};
        int rc = load(&s, cases[i].jsonl, &t, &o, &e);
        EXPECT(rc == -1 && strstr(e.msg, cases[i].want) && !strchr(e.msg, '\n'), "case %zu: '%s', want '%s'", i,
               e.msg, cases[i].want);
        if (!rc) dpo_free(&s);
    }
    /* every prompt longer than --max-length: nothing left, said so */
    SftOpts o = opts(-1, 3);
    DpoSet s;
    Err e = {{0}};
    EXPECT(load(&s, "{\"prompt\": \"Hi there how are you\", \"chosen\": \"Fine.\", \"rejected\": \"Hello!\"}\n", &t, &o,
                &e) == -1 && strstr(e.msg, "no usable pair") && strstr(e.msg, "1 whose prompt alone"), "%s", e.msg);
    EXPECT(dpo_check(0, 0, &e) == -1 && strstr(e.msg, "--beta: must be positive"), "%s", e.msg);
    EXPECT(dpo_check(0.1, 0.5, &e) == -1 && strstr(e.msg, "--label-smoothing: must be in [0, 0.5)"), "%s", e.msg);
    EXPECT(dpo_check(0.1, -0.1, &e) == -1, "negative label smoothing");
    DpoLoss l;
    EXPECT(dpo_loss_parse("kto", &l, &e) == -1 && strstr(e.msg, "--loss-type: unknown loss 'kto'"), "%s", e.msg);
    tok_free(&t);
}

/* every loss type against its formula in double and its derivative against
 * central differences, on random log-ratios */
void dpo_losses(void) {
    Rng r;
    rng_seed(&r, 13);
    for (int i = 0; i < 200; i++) {
        double h = 8 * (rng_uniform(&r) - 0.5), beta = 0.02 + rng_uniform(&r), ls = 0.45 * rng_uniform(&r);
        if (i % 4 == 0) ls = 0;
        double z = beta * h, sg = 1 / (1 + exp(-z)), want[DPO_LOSS_COUNT];
        want[DPO_SIGMOID] = -(1 - ls) * log(sg) - ls * log(1 - sg);
        want[DPO_ROBUST] = (-(1 - ls) * log(sg) + ls * log(1 - sg)) / (1 - 2 * ls);
        want[DPO_IPO] = (h - 1 / (2 * beta)) * (h - 1 / (2 * beta));
        want[DPO_HINGE] = 1 - z > 0 ? 1 - z : 0;
        for (int k = 0; k < DPO_LOSS_COUNT; k++) {
            double dh, dp, dm;
            double v = dpo_loss((DpoLoss)k, beta, ls, h, &dh);
            EXPECT(fabs(v - want[k]) <= 1e-12 * (1 + fabs(want[k])), "%s(h %g, beta %g, ls %g) = %.15g, want %.15g",
                   dpo_loss_name((DpoLoss)k), h, beta, ls, v, want[k]);
            if (k == DPO_HINGE && fabs(1 - z) < 1e-3) continue; /* the kink */
            double eps = 1e-5;
            double fd = (dpo_loss((DpoLoss)k, beta, ls, h + eps, &dp) - dpo_loss((DpoLoss)k, beta, ls, h - eps, &dm)) / (2 * eps);
            EXPECT(fabs(fd - dh) <= 1e-6 * (1 + fabs(dh)), "%s' at h %g: %.12g vs differences %.12g",
                   dpo_loss_name((DpoLoss)k), h, dh, fd);
        }
    }
    double dh;
    EXPECT(fabs(dpo_loss(DPO_SIGMOID, 0.1, 0, 0, &dh) - log(2)) < 1e-15 && fabs(dh + 0.05) < 1e-15, "sigmoid at 0");
    EXPECT(isfinite(dpo_loss(DPO_SIGMOID, 1, 0.1, 800, &dh)) && isfinite(dpo_loss(DPO_ROBUST, 1, 0.1, -800, &dh)),
           "overflow at large |h|");
}

/* rows: every pair once per epoch, chosen and rejected in one row, each a
 * document of its own, targets the next token on completion tokens */
void dpo_rows(void) {
    Tokenizer t;
    test_chat_tokenizer(&t);
    static const char *w[] = {"Hi ", "there ", "you ", "are ", "helpful ", "Fine ", "How ", "Hello "};
    char buf[20000] = "";
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < 40; i++) {
        char q[128] = "", a[128] = "", b[128] = "";
        for (int j = 0, k = 1 + (int)(rng_u64(&r) % 4); j < k; j++) strcat(q, w[rng_u64(&r) % 8]);
        for (int j = 0, k = 1 + (int)(rng_u64(&r) % 5); j < k; j++) strcat(a, w[rng_u64(&r) % 8]);
        snprintf(b, sizeof b, "%s%d", a, i);
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "{\"prompt\": \"%s\", \"chosen\": \"%s\", \"rejected\": "
                 "\"%s\"}\n", q, a, b);
    }
    SftOpts o = opts(-1, 33);
    DpoSet s;
    Err e = {{0}};
    EXPECT(load(&s, buf, &t, &o, &e) == 0 && s.n == 40, "%s", e.msg);
    for (int packed = 0; packed < 2; packed++) {
        DpoRows rows;
        int B = 3, T = 64;
        if (dpo_rows_init(&rows, &s, B, T, packed, 0, 0, 7, "x", &e)) {
            EXPECT(0, "%s", e.msg);
            continue;
        }
        EXPECT(packed ? rows.nrows < 40 : rows.nrows == 40, "packed %d: %zu rows", packed, rows.nrows);
        int32_t tok[3 * 64], tgt[3 * 64], pos[3 * 64];
        int seen[40] = {0};
        for (uint64_t k = 0; k < dpo_rows_batches(&rows); k++) {
            dpo_rows_next(&rows, tok, tgt, pos);
            const DpoBatch *bt = dpo_rows_last(&rows, 0);
            for (int j = 0; j < bt->npairs; j++) {
                uint32_t i = bt->pair[j];
                seen[i]++;
                /* the pair's slots: in one row, chosen then rejected, each from position 0 */
                for (int c = 0; c < 2; c++) {
                    size_t q = 2 * i + (size_t)c, len = s.off[q + 1] - s.off[q];
                    int first = -1, cnt = 0;
                    for (int n = 0; n < B * T; n++)
                        if (bt->seg[n] == 2 * j + c) {
                            if (first < 0) first = n;
                            int kk = n - first;
                            cnt++;
                            EXPECT(n / T == first / T && pos[n] == kk && tok[n] == s.ids[s.off[q] + (size_t)kk],
                                   "pair %u seq %d slot %d", i, c, kk);
                            int32_t want = s.mask[s.off[q] + (size_t)kk + 1] ? s.ids[s.off[q] + (size_t)kk + 1] : LC_IGNORE;
                            EXPECT(tgt[n] == want, "pair %u seq %d target %d", i, c, kk);
                        }
                    EXPECT(cnt == (int)len - 1, "pair %u seq %d: %d slots of %zu tokens", i, c, cnt, len);
                    if (c == 1) {
                        int ch = -1;
                        for (int n = 0; n < B * T && ch < 0; n++)
                            if (bt->seg[n] == 2 * j) ch = n / T;
                        EXPECT(ch == first / T, "pair %u: chosen in row %d, rejected in row %d", i, ch, first / T);
                    }
                }
            }
        }
        int once = 1;
        for (uint64_t i = 0; i < rows.nrows && !packed; i++) once &= seen[i] <= 1;
        EXPECT(once, "a pair drawn twice in an epoch");
        dpo_rows_free(&rows);
    }
    dpo_free(&s);
    tok_free(&t);
}

// ----------------------------------------------------------------------------
// the model-level gradient: head weights, backward

typedef struct {
    Llama *m;
    const int32_t *tgt;
    const int32_t *seg;
    const double *ref;
    double beta;
    int ipo;
} GradCase;

/* the DPO loss of one row holding one pair */
static double pair_loss(GradCase *g, double *lp, long *cnt) {
    Llama *m = g->m;
    int N = m->B * m->T;
    llama_forward_rows(m, NULL);
    lp[0] = lp[1] = 0;
    cnt[0] = cnt[1] = 0;
    for (int n = 0; n < N; n++)
        if (g->seg[n] >= 0 && g->tgt[n] != LC_IGNORE) lp[g->seg[n]] -= m->row_loss[n], cnt[g->seg[n]]++;
    double sc = g->ipo ? 1.0 / cnt[0] : 1, sr = g->ipo ? 1.0 / cnt[1] : 1, dh;
    double h = sc * (lp[0] - g->ref[0]) - sr * (lp[1] - g->ref[1]);
    return dpo_loss(g->ipo ? DPO_IPO : DPO_SIGMOID, g->beta, 0, h, &dh);
}

void dpo_grad(void) {
    LlamaConfig c;
    Err e = {{0}};
    LC_ASSERT(config_preset("tiny", &c, &e) == 0);
    c.n_layers = 2;
    int B = 1, T = 24, N = B * T;
    for (int ipo = 0; ipo < 2; ipo++) {
        Llama m;
        LC_ASSERT(llama_init(&m, &c, &ops_cpu, NULL, B, T, 1, &e) == 0);
        params_init(&m.t, m.params, c.n_layers, 3);
        int32_t tok[24], tgt[24], pos[24], seg[24];
        Rng r;
        rng_seed(&r, 11);
        /* chosen: 12 tokens (prompt 5), rejected: 9 tokens (prompt 5), padding */
        int lens[2] = {12, 9}, t = 0;
        for (int s = 0; s < 2; s++) {
            int32_t ids[16];
            for (int i = 0; i < lens[s]; i++) ids[i] = i < 5 ? 3 + i : (int32_t)(rng_u64(&r) % (uint64_t)c.vocab);
            for (int i = 0; i + 1 < lens[s]; i++, t++)
                tok[t] = ids[i], tgt[t] = i + 1 >= 5 ? ids[i + 1] : LC_IGNORE, pos[t] = i, seg[t] = s;
        }
        for (int i = 0; t < T; t++, i++) tok[t] = 0, tgt[t] = LC_IGNORE, pos[t] = i, seg[t] = -1;
        double ref[2] = {-40, -35};
        GradCase g = {&m, tgt, seg, ref, 0.3, ipo};
        LC_ASSERT(llama_set_batch(&m, tok, tgt, pos, &e) == 0);
        double lp[2];
        long cnt[2];
        pair_loss(&g, lp, cnt);
        double sc = ipo ? 1.0 / cnt[0] : 1, sr = ipo ? 1.0 / cnt[1] : 1, dh;
        dpo_loss(ipo ? DPO_IPO : DPO_SIGMOID, g.beta, 0, sc * (lp[0] - ref[0]) - sr * (lp[1] - ref[1]), &dh);
        float rs[24];
        for (int n = 0; n < N; n++) rs[n] = seg[n] < 0 ? 0 : seg[n] == 0 ? (float)(-dh * sc) : (float)(dh * sr);
        memset(m.grads, 0, m.t.size * sizeof(float));
        llama_head_backward(&m, rs);
        llama_backward(&m, 0, c.n_layers);
        /* a few coordinates of each kind of weight against central differences */
        const char *names[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                               "model.layers.1.mlp.down_proj.weight", "model.norm.weight"};
        for (int k = 0; k < 4; k++) {
            int ix = params_find(&m.t, names[k]);
            LC_ASSERT(ix >= 0);
            const ParamInfo *pi = &m.t.p[ix];
            for (int trial = 0; trial < 6; trial++) {
                size_t i = pi->offset + (size_t)(rng_u64(&r) % pi->numel);
                float x0 = m.params[i];
                double h = 1e-2, fp, fm;
                m.params[i] = x0 + (float)h;
                fp = pair_loss(&g, lp, cnt);
                m.params[i] = x0 - (float)h;
                fm = pair_loss(&g, lp, cnt);
                m.params[i] = x0;
                double fd = (fp - fm) / (2 * h), an = m.grads[i];
                EXPECT(fabs(fd - an) <= 2e-2 * fabs(fd) + 2e-4, "%s %s[%zu]: analytic %.6g, differences %.6g",
                       ipo ? "ipo" : "sigmoid", names[k], i - pi->offset, an, fd);
            }
        }
        llama_free(&m);
    }
}

// ----------------------------------------------------------------------------
// the command

#define BASE_SHAPE "--preset tiny --set dim=128 --set hidden=384 --set n_layers=4 --batch 2 --seq 32"
static char tokp[512];

static void need_run_inputs(void) {
    static int done;
    if (done) return;
    done = 1;
    Tokenizer t;
    snprintf(tokp, sizeof tokp, "%s", test_chat_tokenizer(&t));
    tok_free(&t);
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    FILE *f = fopen(DIR "/pairs.jsonl", "wb"), *g = fopen(DIR "/val.jsonl", "wb"), *h = fopen(DIR "/text.jsonl", "wb");
    LC_ASSERT(f && g && h);
    static const char *w[] = {"Hi", "there", "you", "are", "helpful", "Fine", "How", "Hello"};
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 120; i++) {
        char q[256] = "", a[256] = "", b[256] = "";
        int k = 2 + (int)(rng_u64(&r) % 4);
        for (int j = 0; j < k; j++) {
            strcat(q, w[rng_u64(&r) % 8]), strcat(q, " ");
            strcat(a, w[j % 4]), strcat(a, " "); /* chosen: a pattern; rejected: noise */
            strcat(b, w[rng_u64(&r) % 8]), strcat(b, " ");
        }
        strcat(b, "you");
        fprintf(i < 100 ? f : g, "{\"prompt\": [{\"role\": \"user\", \"content\": \"%s\"}], \"chosen\": [{\"role\": "
                                 "\"assistant\", \"content\": \"%s\"}], \"rejected\": [{\"role\": \"assistant\", "
                                 "\"content\": \"%s\"}]}\n", q, a, b);
        fprintf(h, "{\"text\": \"%s %s %s\"}\n", q, a, b);
    }
    fclose(f);
    fclose(g);
    fclose(h);
    int rc = test_llamac("tokenize encode --tokenizer %s --input " DIR "/text.jsonl --field text --out " DIR "/s.bin", tokp);
    EXPECT(rc == 0, "encode: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " BASE_SHAPE " --steps 2 --ckpt-dir " DIR "/pck --out " DIR
                     "/base.h5 --peak-gflops 1");
    EXPECT(rc == 0, "base model: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " BASE_SHAPE " --steps 2 --seed 9 --ckpt-dir " DIR "/pck2 --out "
                     DIR "/base2.h5 --peak-gflops 1");
    EXPECT(rc == 0, "second base: %s", test_err);
}

#define DPO_ARGS "dpo --data " DIR "/pairs.jsonl --template llama3 --batch 4 --seq 96 --steps 12 --lr 2e-3 " \
                 "--warmup 2 --seed 4 --peak-gflops 1 --save-every 3 --keep 2 --beta 0.5 --tokenizer "

double test_metric(const char *path, int step, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    char buf[8192], k[128], st[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    snprintf(st, sizeof st, "{\"step\":%d,", step);
    double v = NAN;
    while (isnan(v) && fgets(buf, sizeof buf, f)) {
        char *p = strstr(buf, k);
        if (p && strncmp(buf, st, strlen(st)) == 0) v = strtod(p + strlen(k), NULL);
    }
    fclose(f);
    return v;
}

/* full fine-tuning with a frozen copy, and the same with the reference cache:
 * the same losses; the cache reused and refused for other inputs */
void dpo_full_and_cache(void) {
    need_run_inputs();
    system("rm -rf " DIR "/F* " DIR "/ref.bin*");
    int rc = test_llamac(DPO_ARGS "%s --model " DIR "/base.h5 --val " DIR "/val.jsonl --val-every 6 --ckpt-dir " DIR
                         "/F1 --metrics " DIR "/F1.jsonl --out " DIR "/F1.h5", tokp);
    EXPECT(rc == 0, "full dpo: %s", test_err);
    EXPECT(strstr(test_out, "dpo train: " DIR "/pairs.jsonl: 100 pairs") && strstr(test_out, "a frozen copy"),
           "start-up: %s", test_out);
    EXPECT(strstr(test_out, "rewards/accuracies") && strstr(test_out, "eval_rewards/margins"), "metrics: %s", test_out);
    /* step 1: the policy is the reference: loss log 2, rewards 0 */
    EXPECT_NEAR(test_metric(DIR "/F1.jsonl", 1, "loss"), log(2), 1e-6);
    EXPECT_NEAR(test_metric(DIR "/F1.jsonl", 1, "rewards/chosen"), 0, 1e-6);
    double acc0 = test_metric(DIR "/F1.jsonl", 0, "eval_rewards/accuracies"), acc1 = test_metric(DIR "/F1.jsonl", 12, "eval_rewards/accuracies");
    EXPECT(acc1 > 0.6 && acc1 > acc0, "held-out reward accuracy %g -> %g", acc0, acc1);
    rc = test_llamac(DPO_ARGS "%s --model " DIR "/base.h5 --val " DIR "/val.jsonl --val-every 6 --ckpt-dir " DIR
                     "/F2 --metrics " DIR "/F2.jsonl --out " DIR "/F2.h5 --ref-cache " DIR "/ref.bin", tokp);
    EXPECT(rc == 0 && strstr(test_out, "cached in " DIR "/ref.bin"), "cache written: %s%s", test_out, test_err);
    EXPECT(!strstr(test_out, "frozen copy"), "a frozen copy with a cache");
    for (int s = 1; s <= 12; s++) {
        double a = test_metric(DIR "/F1.jsonl", s, "loss"), b = test_metric(DIR "/F2.jsonl", s, "loss");
        EXPECT(fabs(a - b) < 1e-4 * (1 + fabs(a)), "step %d: loss %g with the copy, %g with the cache", s, a, b);
    }
    rc = test_llamac(DPO_ARGS "%s --model " DIR "/base.h5 --ckpt-dir " DIR "/F3 --out " DIR "/F3.h5 --ref-cache "
                     DIR "/ref.bin --val " DIR "/val.jsonl --steps 2", tokp);
    EXPECT(rc == 0 && strstr(test_out, "cached)"), "cache reused: %s%s", test_out, test_err);
    struct stat before, after;
    stat(DIR "/ref.bin", &before);
    rc = test_llamac(DPO_ARGS "%s --model " DIR "/base2.h5 --ckpt-dir " DIR "/F4 --out " DIR "/F4.h5 --ref-cache "
                     DIR "/ref.bin --val " DIR "/val.jsonl", tokp);
    EXPECT(rc == 1 && strstr(test_err, "holds another model's reference") && strchr(test_err, '\n') == strrchr(test_err, '\n'),
           "other model: %s", test_err);
    rc = test_llamac(DPO_ARGS "%s --model " DIR "/base.h5 --ckpt-dir " DIR "/F4 --out " DIR "/F4.h5 --ref-cache "
                     DIR "/ref.bin", tokp);
    EXPECT(rc == 1 && strstr(test_err, "was computed for other data"), "other data: %s", test_err);
    stat(DIR "/ref.bin", &after);
    EXPECT(before.st_mtime == after.st_mtime && before.st_size == after.st_size, "a refused cache was rewritten");
    EXPECT(access(DIR "/F4.h5", F_OK) != 0, "a failed run wrote its --out");
}

/* gradient accumulation: two micro-batches of 2 rows give the step of one
 * micro-batch of 4 (the same rows, the loss the mean over the step's pairs) */
void dpo_accum(void) {
    need_run_inputs();
    system("rm -rf " DIR "/G*");
    int rc = test_llamac(DPO_ARGS "%s --model " DIR "/base.h5 --steps 4 --ckpt-dir " DIR "/G1 --metrics " DIR
                         "/G1.jsonl --out " DIR "/G1.h5", tokp);
    EXPECT(rc == 0, "batch 4: %s", test_err);
    rc = test_llamac(DPO_ARGS "%s --model " DIR "/base.h5 --steps 4 --batch 2 --batch-tokens 384 --ckpt-dir " DIR
                     "/G2 --metrics " DIR "/G2.jsonl --out " DIR "/G2.h5", tokp);
    EXPECT(rc == 0, "batch 2 x 2: %s", test_err);
    for (int s = 1; s <= 4; s++) {
        double a = test_metric(DIR "/G1.jsonl", s, "loss"), b = test_metric(DIR "/G2.jsonl", s, "loss");
        double ra = test_metric(DIR "/G1.jsonl", s, "rewards/margins"), rb = test_metric(DIR "/G2.jsonl", s, "rewards/margins");
        EXPECT(fabs(a - b) < 1e-4 && fabs(ra - rb) < 1e-4, "step %d: loss %g / %g, margins %g / %g", s, a, b, ra, rb);
    }
}

/* LoRA DPO (reference: adapters off) killed and resumed, with the cache:
 * the same adapters, moments and losses as a straight run */
void dpo_lora_resume(void) {
    need_run_inputs();
    system("rm -rf " DIR "/L* " DIR "/lref.bin " DIR "/ad*");
#define LARGS " --model " DIR "/base.h5 --lora-r 4 --lora-targets all-linear --lora-dropout 0.1 --steps 16 "
    for (int cache = 0; cache < 2; cache++) {
        const char *rc_flag = cache ? " --ref-cache " DIR "/lref.bin" : "";
        char a[2048], b[2048];
        snprintf(a, sizeof a, DPO_ARGS "%s" LARGS "%s --ckpt-dir " DIR "/LA%d --metrics " DIR "/LA%d.jsonl "
                 "--adapter-out " DIR "/adA%d --merged-out " DIR "/LA%d.h5", tokp, rc_flag, cache, cache, cache, cache);
        snprintf(b, sizeof b, DPO_ARGS "%s" LARGS "%s --ckpt-dir " DIR "/LB%d --metrics " DIR "/LB%d.jsonl "
                 "--adapter-out " DIR "/adB%d", tokp, rc_flag, cache, cache, cache);
        int rc = test_llamac("%s", a);
        EXPECT(rc == 0, "straight LoRA dpo: %s", test_err);
        EXPECT(cache || strstr(test_out, "adapters off"), "reference: %s", test_out);
        EXPECT(access(DIR "/adA0/adapter_model.safetensors", F_OK) == 0, "no PEFT adapter written");
        EXPECT(cache || access(DIR "/LA0.h5", F_OK) == 0, "no merged model written");
        char ck[256], pa[256], pb[256], ma[256], mb[256];
        snprintf(ck, sizeof ck, DIR "/LB%d/step-00000006.h5", cache);
        snprintf(pa, sizeof pa, DIR "/LA%d/step-00000016.h5", cache);
        snprintf(pb, sizeof pb, DIR "/LB%d/step-00000016.h5", cache);
        snprintf(ma, sizeof ma, DIR "/LA%d.jsonl", cache);
        snprintf(mb, sizeof mb, DIR "/LB%d.jsonl", cache);
        ckpt_test_kill_resume(NULL, b, ck, pa, pb, ma, mb, 16, 0);
    }
}

/* LoRA DPO on each kind of base a user has (an llamac checkpoint, a Hugging
 * Face directory, a GGUF file), killed with SIGKILL mid-run and resumed: the
 * same adapters, moments and losses as a straight run (issue 20). */
void dpo_lora_resume_bases(void) {
    need_run_inputs();
    char bases[3][256];
    ckpt_test_bases(DIR, DIR "/base.h5", bases);
    for (int k = 0; k < 3; k++) {
        char a[2048], b[2048], ck[256], pa[256], pb[256], ma[256], mb[256];
        snprintf(ma, sizeof ma, DIR "/rbA%d.jsonl", k);
        snprintf(mb, sizeof mb, DIR "/rbB%d.jsonl", k);
#define RB_ARGS DPO_ARGS "%s --model %s --lora-r 4 --lora-targets all-linear --lora-dropout 0.1 --steps 16 " \
                "--ckpt-dir " DIR "/rb%c%d --adapter-out " DIR "/rbad --metrics %s"
        snprintf(a, sizeof a, RB_ARGS, tokp, bases[k], 'A', k, ma);
        snprintf(b, sizeof b, RB_ARGS, tokp, bases[k], 'B', k, mb);
        snprintf(ck, sizeof ck, DIR "/rbB%d/step-00000006.h5", k);
        snprintf(pa, sizeof pa, DIR "/rbA%d/step-00000016.h5", k);
        snprintf(pb, sizeof pb, DIR "/rbB%d/step-00000016.h5", k);
        ckpt_test_kill_resume(a, b, ck, pa, pb, ma, mb, 16, 0);
    }
}

void dpo_cli_errors(void) {
    need_run_inputs();
    static const TestCliCase cases[] = {
        {"dpo --data x.jsonl --tokenizer t", "--model: required"},
        {"dpo --model " DIR "/base.h5 --tokenizer t", "--data: required"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl", "--tokenizer: required"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --beta 0", "--beta: must be positive"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --beta -1", "--beta: must be positive"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --label-smoothing 0.5",
         "--label-smoothing: must be in [0, 0.5)"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --label-smoothing -0.1",
         "--label-smoothing: must be in [0, 0.5)"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --loss-type kto", "--loss-type: unknown loss 'kto'"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --seq 32 --max-length 20",
         "--max-length: 20 does not fit a pair in a row of --seq 32"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s", "need a chat template"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/missing.jsonl --tokenizer %s --template llama3", DIR "/missing.jsonl: cannot open"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --template llama3 --seq 96 --max-length 4",
         "no usable pair"},
        {"dpo --model " DIR "/base.h5 --data " DIR "/bad1.jsonl --tokenizer %s --template llama3 --seq 96",
         DIR "/bad1.jsonl:1: \"chosen\" is identical to \"rejected\""},
        {"dpo --model " DIR "/base.h5 --data " DIR "/bad2.jsonl --tokenizer %s --seq 96", DIR "/bad2.jsonl:2: no field \"rejected\""},
        {"dpo --model " DIR "/base.h5 --data " DIR "/bad3.jsonl --tokenizer %s --seq 96", DIR "/bad3.jsonl:1: empty \"chosen\""},
        {"dpo --model " DIR "/base.h5 --data " DIR "/pairs.jsonl --tokenizer %s --template llama3 --seq 96 --batch 4000",
         "fewer than one batch of 4000"},
    };
    test_put(DIR "/bad1.jsonl", "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"chosen\": [{\"role\": \"assistant\", "
                           "\"content\": \"Fine\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"Fine\"}]}\n");
    test_put(DIR "/bad2.jsonl", "{\"prompt\": \"Hi\", \"chosen\": \"x\", \"rejected\": \"y\"}\n{\"prompt\": \"Hi\", \"chosen\": \"x\"}\n");
    test_put(DIR "/bad3.jsonl", "{\"prompt\": \"Hi\", \"chosen\": \"\", \"rejected\": \"y\"}\n");
    test_put(DIR "/E.h5", "keep");
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], tokp, " --out " DIR "/E.h5 --ckpt-dir " DIR "/E");
    FILE *f = fopen(DIR "/E.h5", "r");
    char buf[8] = "";
    if (f) {
        if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
        fclose(f);
    }
    EXPECT(strcmp(buf, "keep") == 0, "a failed run overwrote its --out");
}
