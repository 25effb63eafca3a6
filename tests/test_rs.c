/*
 * test_rs.c: rejection sampling (`llamac rs`, data/rejection.h).
 *
 *   - selection: the largest reward, the first sample on ties, dropped
 *     below --threshold, the same answer every time;
 *   - the best / median-of-k curve on a hand-worked example, with samples
 *     left unscored (empty ones);
 *   - the SFT data it writes: rendered by the sft loader (data/sft.h),
 *     only the kept reply (messages) or completion (text) is trained;
 *   - bad input: one stderr line each, nothing written;
 *   - end to end on a random tiny policy and a random tiny reward model
 *     (num_labels 1), tokenizer tests/fixtures/bpe_v1.tok: 1 round of K 2
 *     over 3 prompts with a 2-step sft, its files, and a second run with
 *     the same seed giving the same samples and selection, and round 1
 *     equal to `llamac sample` at that seed; LoRA over 2 rounds (one
 *     adapter continued) with two weighted reward models and empty samples.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/rejection.h"
#include "../data/sft.h"
#include "../data/tok.h"
#include "../model/config.h"
#include "../model/params.h"
#include "../train/io/ckpt.h"
#include "test.h"
#include "tests.h"

#define RD "build/trs"
#define TOKF "tests/fixtures/bpe_v1.tok"

void rs_select(void) {
    double a[] = {0.5, 2.0, -1.0, 2.0, 1.0};
    EXPECT(rejection_best(a, 5, -INFINITY) == 1, "ties: the first of the two 2.0 (index 1)");
    for (int rep = 0; rep < 3; rep++) EXPECT(rejection_best(a, 5, -INFINITY) == 1, "the same pick every time");
    double same[] = {3, 3, 3};
    EXPECT(rejection_best(same, 3, -INFINITY) == 0, "all tied: sample 0");
    EXPECT(rejection_best(a, 5, 2.0) == 1, "a best equal to the threshold is kept");
    EXPECT(rejection_best(a, 5, 2.0000001) == -1, "a best below the threshold drops the prompt");
    double neg[] = {-5, -3, -4};
    EXPECT(rejection_best(neg, 3, -INFINITY) == 1, "negative rewards: the largest, -3");
    EXPECT(rejection_best(neg, 3, 0) == -1, "negative rewards under threshold 0: dropped");
    EXPECT(rejection_best(a, 1, -INFINITY) == 0, "K 1: the one sample");
    double un[] = {NAN, 1.0, NAN, 1.0};
    EXPECT(rejection_best(un, 4, -INFINITY) == 1, "not scored (NaN) never wins; ties: the first scored");
    double none[] = {NAN, NAN};
    EXPECT(rejection_best(none, 2, -INFINITY) == -1, "nothing scored: nothing kept");
}

void rs_curve(void) {
    int ks[REJECTION_MAX_KS];
    int n = rejection_ks(6, ks);
    EXPECT(n == 4 && ks[0] == 1 && ks[1] == 2 && ks[2] == 4 && ks[3] == 6, "K 6: 1 2 4 6 (got %d values)", n);
    n = rejection_ks(8, ks);
    EXPECT(n == 4 && ks[3] == 8 && ks[2] == 4, "K 8: 1 2 4 8");
    n = rejection_ks(1, ks);
    EXPECT(n == 1 && ks[0] == 1, "K 1: 1");
    /* two prompts of K 4, by hand:
     *   p0 = 1 3 2 0: k1 best 1 med 1; k2 best 3 med 2; k4 best 3 med (1+2)/2 = 1.5
     *   p1 = 4 4 -2 6: k1 4 4; k2 4 4; k4 6 (4+4)/2 = 4
     * means: k1 2.5 2.5; k2 3.5 3; k4 4.5 2.75 */
    double r[] = {1, 3, 2, 0, 4, 4, -2, 6};
    n = rejection_ks(4, ks);
    double best[REJECTION_MAX_KS], med[REJECTION_MAX_KS];
    size_t cnt[REJECTION_MAX_KS];
    rejection_curve(r, 2, 4, ks, n, best, med, cnt);
    EXPECT(n == 3 && cnt[0] == 2 && cnt[2] == 2, "K 4: 3 points over 2 prompts");
    EXPECT_NEAR(best[0], 2.5, 1e-12);
    EXPECT_NEAR(med[0], 2.5, 1e-12);
    EXPECT_NEAR(best[1], 3.5, 1e-12);
    EXPECT_NEAR(med[1], 3.0, 1e-12);
    EXPECT_NEAR(best[2], 4.5, 1e-12);
    EXPECT_NEAR(med[2], 2.75, 1e-12);
    /* an odd count: the middle value; p0's first 3 = 1 3 2 -> 2, p1's 4 4 -2 -> 4 */
    int k3 = 3;
    rejection_curve(r, 2, 4, &k3, 1, best, med, NULL);
    EXPECT_NEAR(med[0], 3.0, 1e-12);
    EXPECT_NEAR(best[0], 3.5, 1e-12);
    /* unscored samples are left out: p0 = nan 3 nan 0, p1 = nan nan nan 6
     *   k1: no prompt; k2: p0 alone, 3 3; k4: p0 best 3 med 1.5, p1 6 6 -> 4.5 3.75 */
    double u[] = {NAN, 3, NAN, 0, NAN, NAN, NAN, 6};
    rejection_curve(u, 2, 4, ks, 3, best, med, cnt);
    EXPECT(cnt[0] == 0 && isnan(best[0]) && isnan(med[0]), "k 1: no scored sample, NaN (count %zu)", cnt[0]);
    EXPECT(cnt[1] == 1 && cnt[2] == 2, "counts %zu %zu", cnt[1], cnt[2]);
    EXPECT_NEAR(best[1], 3.0, 1e-12);
    EXPECT_NEAR(med[1], 3.0, 1e-12);
    EXPECT_NEAR(best[2], 4.5, 1e-12);
    EXPECT_NEAR(med[2], 3.75, 1e-12);
    /* the input is left as it was (sorting works on a copy) */
    EXPECT(r[0] == 1 && r[1] == 3 && r[3] == 0 && r[7] == 6, "rewards reordered by the curve");
}

/* The trained ids of example i of s, as text. */
static void trained_text(const Tokenizer *t, const SftSet *s, size_t i, int trained, char *out, size_t cap) {
    size_t len = 0;
    for (size_t k = s->off[i]; k < s->off[i + 1]; k++) {
        if (s->mask[k] != trained) continue;
        size_t l;
        const char *b = tok_token_bytes(t, s->ids[k], &l);
        if (len + l < cap) memcpy(out + len, b, l);
        len += l < cap - len ? l : 0;
    }
    out[len < cap ? len : cap - 1] = 0;
}

/* The SFT lines rs writes, read back by the sft loader: the kept reply is
 * trained, the prompt is not. */
void rs_sft_data(void) {
    mkdir("build", 0755);
    mkdir(RD, 0755);
    Tokenizer t;
    Err e = {{0}};
    LC_ASSERT(tok_load(&t, TOKF, &e) == 0);
    json_t *obj = json_loads("{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, "
                             "{\"role\": \"user\", \"content\": \"hello there\"}], \"id\": 7}", 0, NULL);
    json_t *p = rejection_prompt(obj);
    EXPECT(json_is_array(p) && json_array_size(p) == 2, "the messages of a messages line");
    json_t *ex = rejection_sft_example(p, "a fine reply", 12);
    char *line = json_dumps(ex, JSON_COMPACT);
    EXPECT(line && strcmp(line, "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
                                "\"content\":\"hello there\"},{\"role\":\"assistant\",\"content\":\"a fine reply\"}]}") == 0,
           "messages example: %s", line);
    EXPECT(json_array_size(p) == 2, "the prompt's list is not changed by the example");
    FILE *f = fopen(RD "/msgs.jsonl", "w");
    fprintf(f, "%s\n", line);
    fclose(f);
    free(line);
    json_decref(ex);
    json_decref(p);
    json_decref(obj);
    SftOpts so = {SFT_AUTO, SFT_LOSS_AUTO, CHAT_LLAMA3, "text", 128, 0, 0, NULL};
    SftSet s;
    EXPECT(sft_load(&s, RD "/msgs.jsonl", &t, &so, &e) == 0, "sft_load: %s", e.msg);
    if (s.n == 1) {
        char tr[512], un[512];
        trained_text(&t, &s, 0, 1, tr, sizeof tr);
        trained_text(&t, &s, 0, 0, un, sizeof un);
        EXPECT(s.format == SFT_MESSAGES, "read back as the messages format");
        EXPECT(strncmp(tr, "a fine reply", 12) == 0, "trained: '%s', want the reply (and the end of turn)", tr);
        EXPECT(strstr(un, "hello there") && strstr(un, "be brief") && !strstr(un, "fine reply"),
               "untrained: '%s': the prompt, not the reply", un);
        sft_free(&s);
    }
    /* a text prompt: prompt-completion, only the completion (and EOS) trained */
    obj = json_loads("{\"prompt\": \"the cat\"}", 0, NULL);
    p = rejection_prompt(obj);
    ex = rejection_sft_example(p, " sat down", 9);
    line = json_dumps(ex, JSON_COMPACT);
    EXPECT(line && strcmp(line, "{\"prompt\":\"the cat\",\"completion\":\" sat down\"}") == 0, "text example: %s", line);
    f = fopen(RD "/text.jsonl", "w");
    fprintf(f, "%s\n", line);
    fclose(f);
    free(line);
    json_decref(ex);
    json_decref(p);
    json_decref(obj);
    so.tpl = -1;
    EXPECT(sft_load(&s, RD "/text.jsonl", &t, &so, &e) == 0, "sft_load: %s", e.msg);
    if (s.n == 1) {
        char tr[512], un[512];
        trained_text(&t, &s, 0, 1, tr, sizeof tr);
        trained_text(&t, &s, 0, 0, un, sizeof un);
        EXPECT(s.format == SFT_PROMPT, "read back as the prompt format");
        EXPECT(strcmp(tr, " sat down") == 0 || strncmp(tr, "sat down", 8) == 0 || strstr(tr, "sat down"),
               "trained: '%s'", tr);
        EXPECT(strstr(un, "the cat") && !strstr(un, "sat"), "untrained: '%s'", un);
        sft_free(&s);
    }
    /* prompt_ids lines have no text of their own */
    obj = json_loads("{\"prompt_ids\": [1, 2]}", 0, NULL);
    EXPECT(rejection_prompt(obj) == NULL, "prompt_ids: no prompt value");
    json_decref(obj);
    json_t *num = json_integer(3);
    EXPECT(rejection_sft_example(num, "x", 1) == NULL, "a number is no prompt");
    json_decref(num);
    tok_free(&t);
}

void test_tiny_model(const char *path, int V, uint64_t tok_id, int num_labels, uint64_t seed) {
    LlamaConfig c;
    Err e = {{0}};
    LC_ASSERT(config_preset("tiny", &c, &e) == 0);
    c.vocab = V;
    c.num_labels = num_labels;
    if (num_labels) c.pad_id = 0;
    ParamTable pt;
    LC_ASSERT(params_build(&c, &pt, &e) == 0);
    float *p = xalloc_aligned(pt.size * sizeof(float));
    memset(p, 0, pt.size * sizeof(float));
    params_init(&pt, p, c.n_layers, seed);
    LC_ASSERT(ckpt_save(path, &c, &pt, p, tok_id, NULL, NULL, &e) == 0);
    free(p);
    params_free(&pt);
}

static void need_models(void) {
    mkdir("build", 0755);
    mkdir(RD, 0755);
    if (access(RD "/policy.h5", R_OK) == 0 && access(RD "/rm.h5", R_OK) == 0 && access(RD "/rm2.h5", R_OK) == 0) return;
    Tokenizer t;
    Err e = {{0}};
    LC_ASSERT(tok_load(&t, TOKF, &e) == 0);
    test_tiny_model(RD "/policy.h5", t.vocab, t.id, 0, 5);
    test_tiny_model(RD "/rm.h5", t.vocab, t.id, 1, 6);
    test_tiny_model(RD "/rm2.h5", t.vocab, t.id, 1, 7);
    tok_free(&t);
}

#define POLICY "--policy " RD "/policy.h5 --tokenizer " TOKF " --template llama3"
#define RM "--reward-model " RD "/rm.h5 --reward-tokenizer " TOKF " --reward-template llama3"

void rs_errors(void) {
    need_models();
    test_put(RD "/p.jsonl", "{\"prompt\": \"the cat\"}\n{\"prompt\": \"a dog\"}\n");
    test_put(RD "/noprompt.jsonl", "{\"prompt\": \"the cat\"}\n\n{\"text\": \"the cat\"}\n");
    test_put(RD "/mixed.jsonl", "{\"prompt\": \"the cat\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
    system("rm -rf " RD "/eout " RD "/taken && mkdir -p " RD "/taken/round-1");
    static const TestCliCase cases[] = {
        {"rs %s --k 0", "--k: 0 is out of range"},
        {"rs " POLICY " --prompts " RD "/p.jsonl --out-dir " RD "/eout", "--reward-model: required"},
        {"rs --reward-model x --prompts " RD "/p.jsonl --out-dir " RD "/eout", "--policy: required"},
        {"rs " POLICY " " RM " --out-dir " RD "/eout", "--prompts: required"},
        {"rs " POLICY " " RM " --prompts " RD "/p.jsonl", "--out-dir: required"},
        {"rs %s --prompts " RD "/noprompt.jsonl", RD "/noprompt.jsonl:3: no \"prompt\", \"messages\" or \"prompt_ids\""},
        {"rs %s --prompts " RD "/mixed.jsonl", RD "/mixed.jsonl:2: a message prompt after text ones (line 1)"},
        {"rs %s --prompts " RD "/missing.jsonl", RD "/missing.jsonl: cannot open"},
        {"rs %s --temperature 1.2 -- --steps 2 --out x.h5", "--out after --: rs sets it"},
        {"rs %s -- --model=x", "--model after --: rs sets it"},
        {"rs %s --out-dir " RD "/taken", "--out-dir " RD "/taken: already holds round-1"},
        {"rs %s --top-p 0", "--top-p: must be in (0, 1]"},
        {"rs %s --rounds 0", "--rounds: 0 is out of range"},
        {"rs %s --reward-model " RD "/policy.h5", RD "/policy.h5: not a reward model (num_labels 0, want 1)"},
        {"rs " POLICY " --reward-model " RD "/rm.h5 --prompts " RD "/p.jsonl --out-dir " RD "/eout",
         RD "/rm.h5: no tokenizer of its own: give --reward-tokenizer"},
    };
    test_cli_refusals(cases, sizeof cases / sizeof cases[0],
                      POLICY " " RM " --prompts " RD "/p.jsonl --k 2 --out-dir " RD "/eout", "");
    EXPECT(access(RD "/eout/round-1/sft.jsonl", F_OK) != 0, "a refused run wrote data");
}

/* The lines of a file, parsed (json_decref each, free the array). */
static int read_jsonl(const char *path, json_t ***out) {
    FILE *f = fopen(path, "r");
    int n = 0, cap = 0;
    *out = NULL;
    char *line = NULL;
    size_t lcap = 0;
    while (f && getline(&line, &lcap, f) > 0) {
        if (n == cap) *out = xrealloc(*out, (size_t)(cap = 2 * cap + 8) * sizeof **out);
        (*out)[n++] = json_loads(line, 0, NULL);
    }
    free(line);
    if (f) fclose(f);
    return n;
}

static void free_jsonl(json_t **l, int n) {
    for (int i = 0; i < n; i++) json_decref(l[i]);
    free(l);
}

static char *slurp_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = xmalloc((size_t)n + 1);
    b[fread(b, 1, (size_t)n, f)] = 0;
    fclose(f);
    return b;
}

#define RS_PROMPTS                                                                \
    "{\"messages\": [{\"role\": \"user\", \"content\": \"the cat\"}]}\n"          \
    "{\"prompt\": [{\"role\": \"user\", \"content\": \"a dog and a bird\"}]}\n"   \
    "{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}], \"stop\": \"zz\"}\n"
#define RS_RUN                                                                                              \
    "rs " POLICY " " RM " --prompts " RD "/e2e.jsonl --k 2 --max-tokens 6 --seed 3 --out-dir %s -- --steps 2 " \
    "--batch 1 --seq 64 --lr 1e-3"

/* One round of K 2 over 3 prompts, then the same run again. */
void rs_e2e(void) {
    need_models();
    test_put(RD "/e2e.jsonl", RS_PROMPTS);
    system("rm -rf " RD "/run1 " RD "/run2");
    int rc = test_llamac(RS_RUN, RD "/run1");
    EXPECT(rc == 0, "rs: %s\n%s", test_err, test_out);
    if (rc) return;
    EXPECT(strstr(test_out, "samples/s") && strstr(test_out, "rs: done: 1 rounds, 6 samples") &&
               strstr(test_out, "training") && strstr(test_out, "scoring"),
           "progress and summary: %s", test_out);
    json_t **s, **t, **c;
    int ns = read_jsonl(RD "/run1/round-1/samples.jsonl", &s);
    int nt = read_jsonl(RD "/run1/round-1/sft.jsonl", &t);
    int nc = read_jsonl(RD "/run1/round-1/curve.jsonl", &c);
    EXPECT(ns == 6 && nt == 3 && nc == 2, "samples %d (want 6), sft %d (3), curve %d (2: k 1, 2)", ns, nt, nc);
    if (ns == 6 && nt == 3 && nc == 2) {
        double sum_best = 0, sum_first = 0;
        for (int i = 0; i < 3; i++) {
            json_t *a = s[2 * i], *b = s[2 * i + 1];
            double ra = json_real_value(json_object_get(a, "reward")), rb = json_real_value(json_object_get(b, "reward"));
            int ka = json_is_true(json_object_get(a, "kept")), kb = json_is_true(json_object_get(b, "kept"));
            EXPECT(json_integer_value(json_object_get(a, "index")) == i &&
                       json_integer_value(json_object_get(b, "sample")) == 1, "order of samples.jsonl");
            EXPECT(ka + kb == 1 && (ka ? ra >= rb : rb >= ra), "prompt %d: rewards %g %g, kept %d %d", i, ra, rb, ka, kb);
            const char *kept = json_string_value(json_object_get(ka ? a : b, "text"));
            json_t *msgs = json_object_get(t[i], "messages");
            json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
            EXPECT(json_array_size(msgs) == 2 && kept &&
                       strcmp(json_string_value(json_object_get(last, "role")), "assistant") == 0 &&
                       strcmp(json_string_value(json_object_get(last, "content")), kept) == 0,
                   "sft line %d: the prompt's message and the kept text", i);
            sum_best += ra > rb ? ra : rb;
            sum_first += ra;
        }
        EXPECT(json_integer_value(json_object_get(c[0], "k")) == 1 && json_integer_value(json_object_get(c[1], "k")) == 2,
               "curve ks");
        /* samples.jsonl holds float32 rewards, the curve their double means */
        EXPECT_NEAR(json_real_value(json_object_get(c[0], "best")), sum_first / 3, 1e-6);
        EXPECT_NEAR(json_real_value(json_object_get(c[0], "median")), sum_first / 3, 1e-6);
        EXPECT_NEAR(json_real_value(json_object_get(c[1], "best")), sum_best / 3, 1e-6);
    }
    free_jsonl(s, ns);
    free_jsonl(t, nt);
    free_jsonl(c, nc);
    EXPECT(access(RD "/run1/round-1/policy.h5", R_OK) == 0, "round 1's policy written");
    /* the same seed: the same samples, rewards and selection */
    rc = test_llamac(RS_RUN, RD "/run2");
    EXPECT(rc == 0, "rs again: %s", test_err);
    char *a = slurp_file(RD "/run1/round-1/samples.jsonl"), *b = slurp_file(RD "/run2/round-1/samples.jsonl");
    EXPECT(a && b && strcmp(a, b) == 0, "the same seed gave other samples or another selection");
    free(a);
    free(b);
    a = slurp_file(RD "/run1/round-1/sft.jsonl");
    b = slurp_file(RD "/run2/round-1/sft.jsonl");
    EXPECT(a && b && strcmp(a, b) == 0, "the same seed gave other SFT data");
    free(a);
    free(b);
    /* round 1 samples as llamac sample --seed SEED does, at rs's temperature */
    rc = test_llamac("sample --model " RD "/policy.h5 --tokenizer " TOKF " --template llama3 --prompts " RD
                     "/e2e.jsonl --n 2 --max-tokens 6 --seed 3 --temperature 1.2 --out " RD "/run2/sample.jsonl");
    EXPECT(rc == 0, "sample: %s", test_err);
    json_t **x, **y;
    int nx = read_jsonl(RD "/run1/round-1/samples.jsonl", &x), ny = read_jsonl(RD "/run2/sample.jsonl", &y);
    EXPECT(nx == 6 && ny == 6, "%d and %d lines", nx, ny);
    for (int i = 0; i < nx && i < ny; i++)
        EXPECT(json_equal(json_object_get(x[i], "text"), json_object_get(y[i], "text")),
               "line %d: rs's text differs from llamac sample's", i);
    free_jsonl(x, nx);
    free_jsonl(y, ny);
}

/* LoRA over two rounds with two weighted reward models: round 2 samples
 * from the base with round 1's adapter and continues it. */
void rs_lora(void) {
    need_models();
    /* a fourth prompt whose stop strings (every ASCII letter, digit and
     * space) cut most samples to nothing: empty samples are not scored */
    char stops[1024] = "[\" \"";
    for (int ch = '0'; ch <= 'z'; ch++)
        if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
            snprintf(stops + strlen(stops), sizeof stops - strlen(stops), ", \"%c\"", ch);
    char prompts[2048];
    snprintf(prompts, sizeof prompts, "%s{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stop\": %s]}\n",
             RS_PROMPTS, stops);
    test_put(RD "/lora.jsonl", prompts);
    system("rm -rf " RD "/lora");
    int rc = test_llamac("rs " POLICY " --reward-model " RD "/rm.h5," RD "/rm2.h5:0.5 --reward-tokenizer " TOKF
                         " --reward-template llama3 --prompts " RD "/lora.jsonl --k 3 --rounds 2 --max-tokens 5 "
                         "--out-dir " RD "/lora -- --steps 2 --batch 1 --seq 64 --lr 1e-3 --lora-r 2");
    EXPECT(rc == 0, "rs: %s\n%s", test_err, test_out);
    if (rc) return;
    EXPECT(strstr(test_out, "of " RD "/policy.h5 + " RD "/lora/round-1/adapter in") &&
               strstr(test_out, "--lora-init " RD "/lora/round-1/adapter") &&
               strstr(test_out, "policy " RD "/policy.h5 + " RD "/lora/round-2/adapter"),
           "round 2 from the base and round 1's adapter: %s", test_out);
    EXPECT(access(RD "/lora/round-2/adapter/adapter_config.json", R_OK) == 0 &&
               access(RD "/lora/round-1/policy.h5", F_OK) != 0, "LoRA writes adapters, no full policy");
    json_t **s;
    int ns = read_jsonl(RD "/lora/round-2/samples.jsonl", &s), empty = 0;
    EXPECT(ns == 12, "round 2: %d samples, want 12", ns);
    for (int i = 0; i < ns; i++) {
        json_t *per = json_object_get(s[i], "rewards");
        if (strcmp(json_string_value(json_object_get(s[i], "text")), "") == 0) {
            EXPECT(json_is_null(json_object_get(s[i], "reward")) && json_is_false(json_object_get(s[i], "kept")) &&
                       json_is_null(json_object_get(per, RD "/rm.h5")),
                   "line %d: an empty sample is neither scored nor kept", i);
            empty++;
            continue;
        }
        double r = json_real_value(json_object_get(s[i], "reward"));
        double a = json_real_value(json_object_get(per, RD "/rm.h5")), b = json_real_value(json_object_get(per, RD "/rm2.h5"));
        EXPECT(json_object_size(per) == 2 && fabs(r - (a + 0.5 * b)) <= 1e-5 * (1 + fabs(r)),
               "line %d: reward %g, models %g and %g weighted 1 and 0.5", i, r, a, b);
    }
    EXPECT(empty > 0, "no empty sample in round 2 (the fourth prompt's stop strings)");
    free_jsonl(s, ns);
}

/* --pool all (Llama 2 from RLHF V4 on): round 2 fine-tunes on each prompt's
 * best sample of rounds 1 and 2 together, an earlier round winning a tie;
 * a bad --pool is one line. */
void rs_pool(void) {
    need_models();
    test_put(RD "/pool.jsonl", RS_PROMPTS);
    system("rm -rf " RD "/pool");
    int rc = test_llamac("rs " POLICY " " RM " --prompts " RD "/pool.jsonl --k 3 --rounds 2 --max-tokens 6 --pool all "
                         "--out-dir " RD "/pool -- --steps 2 --batch 1 --seq 64 --lr 1e-3 --lora-r 2");
    EXPECT(rc == 0, "rs --pool all: %s\n%s", test_err, test_out);
    if (rc) return;
    json_t **s1, **s2, **sft;
    int n1 = read_jsonl(RD "/pool/round-1/samples.jsonl", &s1), n2 = read_jsonl(RD "/pool/round-2/samples.jsonl", &s2);
    int nf = read_jsonl(RD "/pool/round-2/sft.jsonl", &sft);
    EXPECT(n1 == 9 && n2 == 9 && nf == 3, "%d and %d samples, %d SFT lines", n1, n2, nf);
    int from1 = 0; /* prompts whose pooled best is round 1's: what --pool round would not train on */
    for (int i = 0; n1 == 9 && n2 == 9 && nf == 3 && i < 3; i++) {
        const char *want = NULL;
        double best = -INFINITY;
        int won = 0;
        for (int round = 0; round < 2; round++)
            for (int j = 0; j < 3; j++) {
                json_t *l = (round ? s2 : s1)[3 * i + j], *rw = json_object_get(l, "reward");
                if (!json_is_number(rw) || json_number_value(rw) <= best) continue; /* ties: the earlier */
                best = json_number_value(rw);
                want = json_string_value(json_object_get(l, "text"));
                won = round;
            }
        from1 += won == 0;
        json_t *msgs = json_object_get(sft[i], "messages");
        const char *got = json_string_value(json_object_get(json_array_get(msgs, json_array_size(msgs) - 1), "content"));
        EXPECT(want && got && strcmp(want, got) == 0, "prompt %d: SFT reply '%s', best of both rounds '%s'", i,
               got ? got : "(none)", want ? want : "(none)");
    }
    EXPECT(from1 > 0, "no prompt's best came from round 1: the run does not tell --pool all from round");
    free_jsonl(s1, n1);
    free_jsonl(s2, n2);
    free_jsonl(sft, nf);
    rc = test_llamac("rs " POLICY " " RM " --prompts " RD "/pool.jsonl --k 2 --pool best --out-dir " RD "/pool2");
    EXPECT(rc == 1 && strstr(test_err, "--pool: round or all, got 'best'") && strchr(test_err, '\n') == strrchr(test_err, '\n'),
           "bad --pool: %s", test_err);
}

/* rs from each kind of policy a user has (an llamac checkpoint, a Hugging
 * Face directory, a GGUF file of the same weights): the same samples, the
 * same rewards, a LoRA adapter trained on each. */
void rs_bases(void) {
    need_models();
    test_put(RD "/bases.jsonl", RS_PROMPTS);
    char bases[3][256];
    ckpt_test_bases(RD, RD "/policy.h5", bases);
    char *first = NULL;
    for (int k = 0; k < 3; k++) {
        char dir[64], cmd[256];
        snprintf(dir, sizeof dir, RD "/rsb%d", k);
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        system(cmd);
        int rc = test_llamac("rs --policy %s --tokenizer " TOKF " --template llama3 " RM " --prompts " RD
                             "/bases.jsonl --k 2 --max-tokens 5 --out-dir %s -- --steps 1 --batch 1 --seq 64 --lora-r 2",
                             bases[k], dir);
        EXPECT(rc == 0, "rs on %s: %s", bases[k], test_err);
        char path[128];
        snprintf(path, sizeof path, "%s/round-1/samples.jsonl", dir);
        FILE *f = fopen(path, "rb");
        char *b = xcalloc(1 << 16, 1);
        if (f) fread(b, 1, (1 << 16) - 1, f), fclose(f);
        snprintf(path, sizeof path, "%s/round-1/adapter/adapter_config.json", dir);
        EXPECT(access(path, R_OK) == 0, "rs on %s: no adapter", bases[k]);
        if (!first) first = b;
        else {
            EXPECT(b[0] && strcmp(b, first) == 0, "rs on %s: samples differ from the checkpoint's", bases[k]);
            free(b);
        }
    }
    free(first);
}
