/*
 * test_cmd_score.c: the reward scorer (train/loop/scorer.h) and `llamac
 * score` on tiny random reward models built here (preset "tiny" with one
 * label, llamac checkpoints without a tokenizer of their own, the BPE
 * fixture tests/fixtures/bpe_v1.tok):
 *
 *   - a reward is the score head of a direct llama_forward_score over the
 *     item's rendered tokens, read at the last token that is not EOS (the
 *     pad of a model without pad_token_id) or the model's own pad_id;
 *   - batch invariance: an item alone and packed among others, in batches
 *     of other shapes, within 1e-6;
 *   - BASE+ADAPTER equals the merged model;
 *   - weights: A:1,B:0.5 is rA + 0.5 rB; pairs: the fields and the
 *     accuracy line agree;
 *   - bad input: one stderr line each;
 *   - the spec parser.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/sft.h"
#include "../data/tok.h"
#include "../model/llama.h"
#include "../model/lora.h"
#include "../model/ops.h"
#include "../train/io/ckpt.h"
#include "../train/io/peft.h"
#include "../train/io/source.h"
#include "../train/loop/ftdata.h"
#include "../train/loop/scorer.h"
#include "test.h"
#include "tests.h"

#define SD "build/tscore"
#define TOK "tests/fixtures/bpe_v1.tok"

/* A random tiny classifier with num_labels labels (0: a causal LM) at
 * path, for the fixture tokenizer. Weights uniform in +-0.25 so that
 * rewards are O(1) and differ between items. */
static void make_model_pad(const char *path, int num_labels, int pad_id, uint64_t seed) {
    mkdir("build", 0755);
    mkdir(SD, 0755);
    Tokenizer t;
    Err e = {{0}};
    LC_ASSERT(tok_load(&t, TOK, &e) == 0);
    LlamaConfig c;
    LC_ASSERT(config_preset("tiny", &c, &e) == 0);
    c.vocab = t.vocab;
    c.num_labels = num_labels;
    c.pad_id = pad_id;
    ParamTable pt;
    LC_ASSERT(params_build(&c, &pt, &e) == 0);
    float *p = xalloc_aligned(pt.size * sizeof(float));
    memset(p, 0, pt.size * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < pt.n; i++)
        for (size_t k = 0; k < pt.p[i].numel; k++) p[pt.p[i].offset + k] = 0.5f * (rng_uniform(&r) - 0.5f);
    LC_ASSERT(ckpt_save(path, &c, &pt, p, t.id, NULL, NULL, &e) == 0);
    free(p);
    params_free(&pt);
    tok_free(&t);
}

static void make_model(const char *path, int num_labels, uint64_t seed) { make_model_pad(path, num_labels, -1, seed); }

static void need_models(void) {
    if (access(SD "/a.h5", R_OK) != 0) make_model(SD "/a.h5", 1, 1);
    if (access(SD "/b.h5", R_OK) != 0) make_model(SD "/b.h5", 1, 2);
}

/* The reward of (prompt, completion) under the checkpoint at path, the
 * long way: the item rendered as the DPO loader renders a pair's side, one
 * (1, n) batch, the head read at the last token that is not pad (-1: EOS).
 * *ends_eos tells whether that skipped a trailing EOS. */
static double direct_reward(const char *path, int pad, const char *prompt, const char *completion, int *ends_eos) {
    Err e = {{0}};
    Tokenizer t;
    LC_ASSERT(tok_load(&t, TOK, &e) == 0);
    SftOpts so = {SFT_PROMPT, SFT_LOSS_COMPLETION, -1, "text", 1 << 20, 0, 0, NULL};
    FtData fd;
    ftdata_default(&fd); /* --bos auto: llamac's BPE has Llama 3's <|begin_of_text|>, so BOS */
    so.bos = ftdata_bos(&fd, &t);
    LC_ASSERT(so.bos == 1);
    SftRender r;
    sft_render_init(&r, &t, &so, SFT_LOSS_COMPLETION);
    json_t *p = json_string(prompt), *c = json_string(completion);
    LC_ASSERT(sft_render_prompt(&r, p, c, "completion", "direct", &e) == 0);
    int n = (int)r.ex.n;
    ModelSource ms;
    LC_ASSERT(source_open(&ms, path, &e) == 0);
    Llama m;
    LC_ASSERT(llama_init(&m, &ms.c, &ops_cpu, NULL, 1, n, 0, &e) == 0);
    LC_ASSERT(source_load(&ms, &m.t, m.params, &e) == 0);
    LC_ASSERT(llama_set_batch(&m, r.ex.ids, NULL, NULL, &e) == 0);
    float *score = xmalloc((size_t)n * sizeof(float));
    llama_forward_score(&m, 0, score);
    int last = n - 1;
    if (pad < 0) pad = t.eos;
    while (last > 0 && r.ex.ids[last] == pad) last--;
    *ends_eos = last == n - 2;
    double v = score[last];
    free(score);
    llama_free(&m);
    json_decref(p);
    json_decref(c);
    sft_render_free(&r);
    tok_free(&t);
    return v;
}

static const char *const prompts[] = {"It was the best of times,", "it was the age of", "Numbers 1234", "the season of",
                                      "caf\xc3\xa9 ", "UTF-8:", "it was"};
static const char *const replies[] = {" it was the worst of times", " wisdom", " and 56, tabs", " Light, it was",
                                      "na\xc3\xafve", " double  spaces; and more and more of it", " the epoch of belief"};
#define NITEMS 7

static Scorer *open_scorer(const char *spec, long B, long T) {
    ScorerOpts o = {spec, TOK, NULL, NULL, NULL, B, T};
    Scorer *s = NULL;
    Err e = {{0}};
    EXPECT(scorer_open(&s, &o, &e) == 0, "scorer_open %s: %s", spec, e.msg);
    return s;
}

/* A reward is the direct forward's at the last non-pad token. */
void cmd_score_direct(void) {
    need_models();
    Scorer *s = open_scorer(SD "/a.h5", 2, 64);
    if (!s) return;
    ScoreItem it[NITEMS];
    json_t *js[2 * NITEMS];
    for (int i = 0; i < NITEMS; i++) {
        js[2 * i] = json_string(prompts[i]);
        js[2 * i + 1] = json_string(replies[i]);
        it[i] = (ScoreItem){js[2 * i], js[2 * i + 1], NULL};
    }
    double tot[NITEMS], per[NITEMS];
    Err e = {{0}};
    EXPECT(scorer_score(s, it, NITEMS, per, tot, &e) == 0, "score: %s", e.msg);
    int eos_seen = 0;
    for (int i = 0; i < NITEMS; i++) {
        int ends_eos;
        double d = direct_reward(SD "/a.h5", -1, prompts[i], replies[i], &ends_eos);
        eos_seen += ends_eos;
        EXPECT_NEAR(per[i], d, 1e-6);
        EXPECT(tot[i] == per[i], "item %d: total %g, model %g (weight 1)", i, tot[i], per[i]);
    }
    EXPECT(eos_seen == NITEMS, "every item ends in EOS, read before it (%d of %d)", eos_seen, NITEMS);
    /* a whole text (no prompt) is the prompt + completion it joins */
    json_t *whole = json_string("It was the best of times, it was the worst of times");
    ScoreItem w = {NULL, whole, NULL};
    double tw;
    EXPECT(scorer_score(s, &w, 1, NULL, &tw, &e) == 0, "whole: %s", e.msg);
    EXPECT_NEAR(tw, tot[0], 1e-6);
    json_decref(whole);
    scorer_close(s);
    /* a model with its own pad_id (not EOS): the trailing EOS is read */
    if (access(SD "/pad.h5", R_OK) != 0) make_model_pad(SD "/pad.h5", 1, 0, 5);
    s = open_scorer(SD "/pad.h5", 2, 64);
    if (s) {
        EXPECT(scorer_score(s, it, NITEMS, per, tot, &e) == 0, "score: %s", e.msg);
        for (int i = 0; i < NITEMS; i++) {
            int ends_eos;
            EXPECT_NEAR(per[i], direct_reward(SD "/pad.h5", 0, prompts[i], replies[i], &ends_eos), 1e-6);
            EXPECT(!ends_eos, "item %d: pad 0 skips nothing", i);
        }
        scorer_close(s);
    }
    for (int i = 0; i < 2 * NITEMS; i++) json_decref(js[i]);
}

/* Each item scores the same alone and in batches of any shape. */
void cmd_score_batch_invariance(void) {
    need_models();
    static const long shapes[][2] = {{1, 128}, {2, 64}, {8, 40}, {3, 128}};
    double alone[NITEMS];
    json_t *js[2 * NITEMS];
    ScoreItem it[NITEMS];
    for (int i = 0; i < NITEMS; i++) {
        js[2 * i] = json_string(prompts[i]);
        js[2 * i + 1] = json_string(replies[i]);
        it[i] = (ScoreItem){js[2 * i], js[2 * i + 1], NULL};
    }
    Err e = {{0}};
    Scorer *s = open_scorer(SD "/a.h5", 8, 128);
    if (!s) return;
    for (int i = 0; i < NITEMS; i++) EXPECT(scorer_score(s, &it[i], 1, NULL, &alone[i], &e) == 0, "%s", e.msg);
    scorer_close(s);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        s = open_scorer(SD "/a.h5", shapes[k][0], shapes[k][1]);
        if (!s) continue;
        double tot[NITEMS];
        EXPECT(scorer_score(s, it, NITEMS, NULL, tot, &e) == 0, "batch %ld x %ld: %s", shapes[k][0], shapes[k][1], e.msg);
        for (int i = 0; i < NITEMS; i++) EXPECT_NEAR(tot[i], alone[i], 1e-6);
        /* a subset, another order: the same again */
        ScoreItem sub[3] = {it[5], it[0], it[3]};
        double ts[3];
        EXPECT(scorer_score(s, sub, 3, NULL, ts, &e) == 0, "%s", e.msg);
        EXPECT_NEAR(ts[0], alone[5], 1e-6);
        EXPECT_NEAR(ts[1], alone[0], 1e-6);
        EXPECT_NEAR(ts[2], alone[3], 1e-6);
        scorer_close(s);
    }
    for (int i = 0; i < 2 * NITEMS; i++) json_decref(js[i]);
}

/* BASE+ADAPTER scores as the checkpoint with the adapter merged in; a
 * causal-LM base with an adapter that has no score head is refused. */
void cmd_score_adapter(void) {
    need_models();
    if (access(SD "/causal.h5", R_OK) != 0) make_model(SD "/causal.h5", 0, 3);
    Err e = {{0}};
    ModelSource ms;
    LC_ASSERT(source_open(&ms, SD "/a.h5", &e) == 0);
    LoraConfig lc;
    lora_config_default(&lc, 1u << LORA_Q | 1u << LORA_V | 1u << LORA_DOWN);
    lc.r = 4, lc.alpha = 8;
    ParamTable bt, lt;
    LC_ASSERT(params_build(&ms.c, &bt, &e) == 0 && lora_build(&lc, &ms.c, &lt, &e) == 0);
    float *base = xalloc_aligned(bt.size * sizeof(float)), *ad = xalloc_aligned(lt.size * sizeof(float));
    memset(ad, 0, lt.size * sizeof(float));
    LC_ASSERT(source_load(&ms, &bt, base, &e) == 0);
    Rng r;
    rng_seed(&r, 9);
    for (int i = 0; i < lt.n; i++)
        for (size_t k = 0; k < lt.p[i].numel; k++) ad[lt.p[i].offset + k] = 0.4f * (rng_uniform(&r) - 0.5f);
    LC_ASSERT(peft_save(SD "/adp", &lc, &lt, ad, NULL, 1, &e) == 0);
    lora_merge(&lc, &ms.c, &bt, base, &lt, ad, +1);
    Tokenizer t;
    LC_ASSERT(tok_load(&t, TOK, &e) == 0);
    LC_ASSERT(ckpt_save(SD "/merged.h5", &ms.c, &bt, base, t.id, NULL, NULL, &e) == 0);
    tok_free(&t);
    json_t *p = json_string(prompts[0]), *c = json_string(replies[0]);
    ScoreItem it = {p, c, NULL};
    double ra, rm, rb;
    Scorer *s = open_scorer(SD "/a.h5+" SD "/adp", 2, 64), *m = open_scorer(SD "/merged.h5", 2, 64),
           *a = open_scorer(SD "/a.h5", 2, 64);
    if (s && m && a) {
        EXPECT(scorer_score(s, &it, 1, NULL, &ra, &e) == 0 && scorer_score(m, &it, 1, NULL, &rm, &e) == 0 &&
                   scorer_score(a, &it, 1, NULL, &rb, &e) == 0,
               "%s", e.msg);
        EXPECT_NEAR(ra, rm, 1e-6);
        EXPECT(fabs(ra - rb) > 1e-4, "the adapter changes the reward (%g vs %g)", ra, rb);
        EXPECT(strcmp(scorer_name(s, 0), SD "/a.h5+" SD "/adp") == 0, "name %s", scorer_name(s, 0));
    }
    scorer_close(s);
    scorer_close(m);
    scorer_close(a);
    /* the same adapter on a causal LM: no head to score with */
    LC_ASSERT(source_open(&ms, SD "/causal.h5", &e) == 0);
    ScorerOpts o = {SD "/causal.h5+" SD "/adp", TOK, NULL, NULL, NULL, 2, 64};
    Scorer *bad = NULL;
    EXPECT(scorer_open(&bad, &o, &e) == -1 && strstr(e.msg, "causal.h5+") && strstr(e.msg, "no score head"),
           "causal base: %s", e.msg);
    json_decref(p);
    json_decref(c);
    free(base);
    free(ad);
    params_free(&bt);
    params_free(&lt);
}

// ----------------------------------------------------------------------------
// the command

/* The lines of a JSONL file, parsed (json_decref each, free the array). */
static int read_lines(const char *path, json_t ***out) {
    FILE *f = fopen(path, "rb");
    int n = 0, cap = 0;
    *out = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (f && (len = getline(&line, &lcap, f)) > 0) {
        if (n == cap) *out = xrealloc(*out, (size_t)(cap = 2 * cap + 16) * sizeof **out);
        (*out)[n++] = json_loadb(line, (size_t)len, 0, NULL);
    }
    free(line);
    if (f) fclose(f);
    return n;
}

static void free_lines(json_t **l, int n) {
    for (int i = 0; i < n; i++) json_decref(l[i]);
    free(l);
}

static double num(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

static void write_items(const char *path) {
    FILE *f = fopen(path, "w");
    LC_ASSERT(f);
    for (int i = 0; i < NITEMS; i++) {
        json_t *o = json_pack("{s:s,s:s,s:i}", "prompt", prompts[i], "completion", replies[i], "id", i);
        char *s = json_dumps(o, JSON_COMPACT);
        fprintf(f, "%s\n", s);
        free(s);
        json_decref(o);
    }
    fprintf(f, "{\"text\": \"it was the season of Darkness.\"}\n");
    fclose(f);
}

/* A:1,B:0.5 is rA + 0.5 rB, per-model values as each model alone gives. */
void cmd_score_weights(void) {
    need_models();
    write_items(SD "/items.jsonl");
    int rc = test_llamac("score --reward-model %s/a.h5 --reward-tokenizer %s --data %s/items.jsonl --out %s/ra.jsonl",
                         SD, TOK, SD, SD);
    EXPECT(rc == 0, "score A: %d %s", rc, test_err);
    rc = test_llamac("score --reward-model %s/b.h5 --reward-tokenizer %s --data %s/items.jsonl --out %s/rb.jsonl", SD,
                     TOK, SD, SD);
    EXPECT(rc == 0, "score B: %d %s", rc, test_err);
    rc = test_llamac("score --reward-model %s/a.h5:1,%s/b.h5:0.5 --reward-tokenizer %s --data %s/items.jsonl --out "
                     "%s/rab.jsonl --batch 3 --seq 40",
                     SD, SD, TOK, SD, SD);
    EXPECT(rc == 0, "score A:1,B:0.5: %d %s", rc, test_err);
    EXPECT(access(SD "/rab.jsonl.tmp", F_OK) != 0, "no OUT.tmp left");
    json_t **la, **lb, **l2;
    int na = read_lines(SD "/ra.jsonl", &la), nb = read_lines(SD "/rb.jsonl", &lb), n2 = read_lines(SD "/rab.jsonl", &l2);
    EXPECT(na == NITEMS + 1 && nb == na && n2 == na, "lines %d %d %d", na, nb, n2);
    for (int i = 0; i < na && i < nb && i < n2; i++) {
        double a = num(la[i], "reward"), b = num(lb[i], "reward"), t = num(l2[i], "reward");
        json_t *per = json_object_get(l2[i], "rewards");
        EXPECT(json_object_size(per) == 2 && !json_object_get(la[i], "rewards"), "line %d: rewards %s", i,
               json_dumps(l2[i], 0));
        EXPECT_NEAR(t, a + 0.5 * b, 1e-6 * (1 + fabs(t)));
        EXPECT_NEAR(json_number_value(json_object_get(per, SD "/a.h5")), a, 1e-6 * (1 + fabs(a)));
        EXPECT_NEAR(json_number_value(json_object_get(per, SD "/b.h5")), b, 1e-6 * (1 + fabs(b)));
        if (i < NITEMS)
            EXPECT(json_integer_value(json_object_get(l2[i], "id")) == i &&
                       strcmp(json_string_value(json_object_get(l2[i], "prompt")), prompts[i]) == 0,
                   "line %d keeps its fields", i);
    }
    free_lines(la, na);
    free_lines(lb, nb);
    free_lines(l2, n2);
    EXPECT(strstr(test_out, "score: 8 items"), "summary: %s", test_out);
    rc = test_llamac("score --help");
    EXPECT(rc == 0 && strstr(test_out, "\"reward_chosen\"") && strstr(test_out, "accuracy") &&
               strstr(test_out, "--reward-tokenizer"),
           "help: %s", test_out);
}

/* Pairs: reward_chosen / reward_rejected, and the accuracy line counts
 * the pairs whose chosen scored strictly higher. */
void cmd_score_pairs(void) {
    need_models();
    FILE *f = fopen(SD "/pairs.jsonl", "w");
    LC_ASSERT(f);
    for (int i = 0; i < NITEMS; i++)
        fprintf(f, "{\"prompt\": \"%s\", \"chosen\": \"%s\", \"rejected\": \"%s\"}\n", prompts[i], replies[i],
                replies[(i + 3) % NITEMS]);
    fprintf(f, "{\"chosen\": \"it was the age of wisdom\", \"rejected\": \"it was the age of foolishness\"}\n");
    fclose(f);
    int rc = test_llamac("score --reward-model %s/a.h5,%s/b.h5:2 --reward-tokenizer %s --data %s/pairs.jsonl --out "
                         "%s/pairs_out.jsonl",
                         SD, SD, TOK, SD, SD);
    EXPECT(rc == 0, "score pairs: %d %s", rc, test_err);
    json_t **l;
    int n = read_lines(SD "/pairs_out.jsonl", &l), right = 0, right_a = 0;
    EXPECT(n == NITEMS + 1, "%d lines", n);
    double margin = 0;
    for (int i = 0; i < n; i++) {
        double c = num(l[i], "reward_chosen"), r = num(l[i], "reward_rejected");
        json_t *pc = json_object_get(l[i], "rewards_chosen"), *pr = json_object_get(l[i], "rewards_rejected");
        EXPECT(json_object_get(l[i], "reward_chosen") && json_object_size(pc) == 2 && json_object_size(pr) == 2 &&
                   !json_object_get(l[i], "reward"),
               "line %d: %s", i, json_dumps(l[i], 0));
        double ca = json_number_value(json_object_get(pc, SD "/a.h5")), cb = json_number_value(json_object_get(pc, SD "/b.h5"));
        double ra = json_number_value(json_object_get(pr, SD "/a.h5"));
        EXPECT_NEAR(c, ca + 2 * cb, 1e-6 * (1 + fabs(c)));
        right += c > r;
        right_a += ca > ra;
        margin += c - r;
    }
    free_lines(l, n);
    char want[128];
    snprintf(want, sizeof want, "total: accuracy %.4f (%d of %d pairs", (double)right / n, right, n);
    EXPECT(strstr(test_out, want), "want '%s' in: %s", want, test_out);
    snprintf(want, sizeof want, "%s/a.h5: accuracy %.4f (%d of %d pairs", SD, (double)right_a / n, right_a, n);
    EXPECT(strstr(test_out, want), "want '%s' in: %s", want, test_out);
    snprintf(want, sizeof want, "mean margin %.6g", margin / n);
    EXPECT(strstr(test_out, want), "want '%s' in: %s", want, test_out);
}

/* Bad input: exit 1, one line on stderr naming what is wrong. */
void cmd_score_errors(void) {
    need_models();
    if (access(SD "/two.h5", R_OK) != 0) make_model(SD "/two.h5", 2, 4);
    if (access(SD "/causal.h5", R_OK) != 0) make_model(SD "/causal.h5", 0, 3);
    write_items(SD "/items.jsonl");
    test_put(SD "/nofield.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"foo\": 1}\n");
    test_put(SD "/nocompl.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n");
    test_put(SD "/norej.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\"}\n");
    test_put(SD "/mixed.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"text\": \"a\"}\n");
    test_put(SD "/msgs.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": "
                               "\"assistant\", \"content\": \"yo\"}]}\n");
    test_put(SD "/long.jsonl", "{\"text\": \"it was the best of times, it was the worst of times, it was\"}\n");
    static const struct {
        const char *args, *want;
    } cases[] = {
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/nofield.jsonl --out " SD "/o.jsonl",
         SD "/nofield.jsonl:2: nothing to score"},
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/nocompl.jsonl --out " SD "/o.jsonl",
         SD "/nocompl.jsonl:2: no field \"completion\""},
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/norej.jsonl --out " SD "/o.jsonl",
         SD "/norej.jsonl:1: no field \"rejected\""},
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/mixed.jsonl --out " SD "/o.jsonl",
         SD "/mixed.jsonl:2: a single item in a file of pairs"},
        {"--reward-model " SD "/two.h5 --reward-tokenizer " TOK " --data " SD "/items.jsonl --out " SD "/o.jsonl",
         SD "/two.h5: not a reward model (num_labels 2, want 1)"},
        {"--reward-model " SD "/a.h5," SD "/causal.h5 --reward-tokenizer " TOK " --data " SD "/items.jsonl --out " SD
         "/o.jsonl",
         SD "/causal.h5: not a reward model (num_labels 0, want 1)"},
        {"--reward-model " SD "/a.h5:heavy --reward-tokenizer " TOK " --data " SD "/items.jsonl --out " SD "/o.jsonl",
         "--reward-model: the weight \"heavy\" of " SD "/a.h5 is not a number"},
        {"--reward-model " SD "/a.h5 --data " SD "/items.jsonl --out " SD "/o.jsonl",
         SD "/a.h5: no tokenizer of its own: give --reward-tokenizer"},
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/msgs.jsonl --out " SD "/o.jsonl",
         SD "/msgs.jsonl:1: chat messages need a chat template"},
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/long.jsonl --out " SD "/o.jsonl --seq 8",
         SD "/long.jsonl:1:"},
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/none.jsonl --out " SD "/o.jsonl",
         SD "/none.jsonl: cannot open"},
        {"--reward-model " SD "/a.h5 --reward-tokenizer " TOK " --data " SD "/items.jsonl --out " SD "/o.jsonl "
         "--reward-template nope",
         "--reward-template: unknown template 'nope'"},
        {"--data " SD "/items.jsonl --out " SD "/o.jsonl", "--reward-model: required"},
    };
    unlink(SD "/o.jsonl");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = test_llamac("score %s", cases[i].args);
        /* the error is the last line (a banner may come before it once the models are open) */
        char *err = strstr(test_err, "llamac: error: "), *nl = err ? strchr(err, '\n') : NULL;
        EXPECT(rc == 1 && err && (err == test_err || err[-1] == '\n') && strstr(err, cases[i].want) && nl &&
                   nl[1] == 0,
               "case %zu: rc %d, want '%s', got '%s'", i, rc, cases[i].want, test_err);
        EXPECT(access(SD "/o.jsonl", F_OK) != 0 && access(SD "/o.jsonl.tmp", F_OK) != 0, "case %zu left a file", i);
    }
    int rc = test_llamac("score --reward-model %s/a.h5 --reward-tokenizer %s --data %s/long.jsonl --out %s/o.jsonl "
                         "--seq 8", SD, TOK, SD, SD);
    EXPECT(rc == 1 && strstr(test_err, "tokens, more than the 8 a row of"), "too long: %s", test_err);
}

/* The spec: paths, weights, BASE+ADAPTER, and its refusals. */
void cmd_score_spec(void) {
    ScorerSpec *s;
    int n;
    Err e = {{0}};
    EXPECT(scorer_spec_parse("a.h5", &s, &n, &e) == 0 && n == 1 && strcmp(s[0].name, "a.h5") == 0 &&
               strcmp(s[0].base, "a.h5") == 0 && !s[0].adapter[0] && s[0].weight == 1.0,
           "one path: %s", e.msg);
    free(s);
    EXPECT(scorer_spec_parse("a.h5:0.5,dir/b:-2,c:1e-3", &s, &n, &e) == 0 && n == 3 && s[0].weight == 0.5 &&
               strcmp(s[1].name, "dir/b") == 0 && s[1].weight == -2 && s[2].weight == 1e-3 &&
               strcmp(s[2].name, "c") == 0,
           "weights: %s", e.msg);
    free(s);
    EXPECT(scorer_spec_parse("no/base+no/adapter:3", &s, &n, &e) == 0 && n == 1 &&
               strcmp(s[0].name, "no/base+no/adapter") == 0 && strcmp(s[0].base, "no/base") == 0 &&
               strcmp(s[0].adapter, "no/adapter") == 0 && s[0].weight == 3,
           "base+adapter: %s", e.msg);
    free(s);
    /* an existing file with a '+' in its name is a path, not a base and an adapter */
    mkdir("build", 0755);
    mkdir(SD, 0755);
    test_put(SD "/x+y", "");
    EXPECT(scorer_spec_parse(SD "/x+y", &s, &n, &e) == 0 && n == 1 && !s[0].adapter[0], "x+y: %s", e.msg);
    free(s);
    static const struct {
        const char *spec, *want;
    } bad[] = {
        {"", "--reward-model: empty"},
        {"a.h5,,b.h5", "--reward-model: an empty model"},
        {"a.h5,", "--reward-model: an empty model"},
        {":2", "--reward-model: a weight without a model path"},
        {"a.h5:", "the weight \"\" of a.h5 is not a number"},
        {"a.h5:x1", "the weight \"x1\" of a.h5 is not a number"},
        {"a.h5:1.5x", "the weight \"1.5x\" of a.h5 is not a number"},
        {"a.h5:inf", "the weight of a.h5 is not finite"},
        {"a.h5:nan", "the weight of a.h5 is not finite"},
        {"a.h5,b.h5:2,a.h5:3", "a.h5 is named twice"},
        {"+adp", "BASE+ADAPTER_DIR needs both"},
        {"base+", "BASE+ADAPTER_DIR needs both"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = NULL;
        EXPECT(scorer_spec_parse(bad[i].spec, &s, &n, &e) == -1 && strstr(e.msg, bad[i].want) && !s,
               "'%s': want '%s', got '%s'", bad[i].spec, bad[i].want, e.msg);
    }
}
