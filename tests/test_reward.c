/*
 * test_reward.c: reward models (`llamac reward`, train/cmd/cmd_reward.c) and
 * their data (data/dpo.h with margins, dropped long pairs, whole rows).
 *
 * Data: a line's "margin" kept per pair and a non-numeric one refused with
 * file:line; with drop_long a pair longer than max_len dropped and counted
 * (TRL's RewardTrainer), never truncated; whole rows put every token of a
 * sequence in the input with no targets. The command: from a model whose
 * score head is zero every reward is 0, so step 1's loss is exactly
 * log(1 + e^m) for pairs of margin m (log 2 without), accuracy 0 (strict)
 * and margin 0; training raises held-out accuracy; two micro-batches of 2
 * give the step of one of 4; a LoRA run (adapters + whole head) killed and
 * resumed gives the straight run's bits; --hf-out writes a
 * LlamaForSequenceClassification directory; bad inputs give one line.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/dpo.h"
#include "../train/io/ckpt.h"
#include "../train/io/source.h"
#include "test.h"
#include "tests.h"

#define DIR "build/treward"

static char tokp[512];


static void put(const char *name, const char *text) {
    char p[256];
    snprintf(p, sizeof p, DIR "/%s", name);
    test_put(p, text);
}

void reward_data(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    Tokenizer t;
    test_chat_tokenizer(&t);
    SftOpts o = {SFT_PROMPT, SFT_LOSS_COMPLETION, -1, "text", 64, 1, 0, NULL};
    put("m.jsonl", "{\"prompt\": \"a b\", \"chosen\": \" c\", \"rejected\": \" d\", \"margin\": 2.5}\n"
                   "{\"prompt\": \"a b\", \"chosen\": \" e\", \"rejected\": \" f\"}\n"
                   "{\"prompt\": \"a\", \"chosen\": \" x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x "
                   "x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x\", \"rejected\": \" y\"}\n");
    DpoSet s;
    Err e;
    int rc = dpo_load(&s, DIR "/m.jsonl", &t, &o, &e);
    EXPECT(rc == 0, "load: %s", e.msg);
    if (!rc) {
        EXPECT(s.n == 2 && s.dropped_long == 1 && s.truncated == 0, "%zu pairs, %ld dropped, %ld truncated", s.n,
               s.dropped_long, s.truncated);
        EXPECT(s.margin && s.margin[0] == 2.5 && s.margin[1] == 0 && s.has_margin == 1, "margins");
        DpoRows r;
        rc = dpo_rows_init(&r, &s, 1, 32, 1, 1, t.eos, 1, "m", &e);
        EXPECT(rc == 0, "rows: %s", e.msg);
        if (!rc) {
            int32_t tok[32], tgt[32], pos[32];
            dpo_rows_fill(&r, 0, tok, tgt, pos, &r.ring[0]);
            const DpoBatch *bt = &r.ring[0];
            size_t want = s.off[2 * bt->pair[0] + 2] - s.off[2 * bt->pair[0]], got = 0;
            for (int n = 0; n < 32; n++) {
                got += bt->seg[n] >= 0 && bt->seg[n] < 2;
                EXPECT(tgt[n] == LC_IGNORE, "a target in a whole row");
            }
            EXPECT(got == want, "whole row: %zu slots for the first pair, want %zu (every token)", got, want);
            /* the last slot of chosen holds its last token (EOS for strings) */
            int last = -1;
            for (int n = 0; n < 32; n++)
                if (bt->seg[n] == 0) last = n;
            EXPECT(last >= 0 && tok[last] == s.ids[s.off[2 * bt->pair[0] + 1] - 1], "last token of chosen");
            dpo_rows_free(&r);
        }
        dpo_free(&s);
    }
    put("bad.jsonl", "{\"prompt\": \"a\", \"chosen\": \" c\", \"rejected\": \" d\"}\n"
                     "{\"prompt\": \"a\", \"chosen\": \" c\", \"rejected\": \" d\", \"margin\": \"big\"}\n");
    rc = dpo_load(&s, DIR "/bad.jsonl", &t, &o, &e);
    EXPECT(rc == -1 && strstr(e.msg, DIR "/bad.jsonl:2: \"margin\" must be a number"), "margin: %s", e.msg);
    tok_free(&t);
}

#define SHAPE "--preset tiny --set dim=64 --set hidden=160 --set n_layers=2 --batch 2 --seq 32"

/* A tokenizer, a causal base, pairs (a pattern chosen, noise rejected) and
 * a reward model whose score head is zero. */
static void need_inputs(void) {
    static int done;
    if (done) return;
    done = 1;
    Tokenizer t;
    snprintf(tokp, sizeof tokp, "%s", test_chat_tokenizer(&t));
    tok_free(&t);
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    FILE *f = fopen(DIR "/pairs.jsonl", "wb"), *g = fopen(DIR "/val.jsonl", "wb"), *h = fopen(DIR "/text.jsonl", "wb");
    FILE *mg = fopen(DIR "/margin.jsonl", "wb");
    LC_ASSERT(f && g && h && mg);
    static const char *w[] = {"Hi", "there", "you", "are", "helpful", "Fine", "How", "Hello"};
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < 120; i++) {
        char q[256] = "", a[256] = "", b[256] = "";
        int k = 2 + (int)(rng_u64(&r) % 3);
        for (int j = 0; j < k; j++) {
            strcat(q, w[rng_u64(&r) % 8]), strcat(q, " ");
            strcat(a, w[j % 4]), strcat(a, " ");
            strcat(b, w[rng_u64(&r) % 8]), strcat(b, " ");
        }
        strcat(b, "you");
        fprintf(i < 100 ? f : g, "{\"prompt\": \"%s\", \"chosen\": \"%s\", \"rejected\": \"%s\"}\n", q, a, b);
        if (i < 20) fprintf(mg, "{\"prompt\": \"%s\", \"chosen\": \"%s\", \"rejected\": \"%s\", \"margin\": 1}\n", q, a, b);
        fprintf(h, "{\"text\": \"%s %s %s\"}\n", q, a, b);
    }
    fclose(f); fclose(g); fclose(h); fclose(mg);
    int rc = test_llamac("tokenize encode --tokenizer %s --input " DIR "/text.jsonl --field text --out " DIR "/s.bin", tokp);
    EXPECT(rc == 0, "encode: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " SHAPE " --steps 2 --ckpt-dir " DIR "/pck --out " DIR
                     "/base.h5 --peak-gflops 1");
    EXPECT(rc == 0, "base model: %s", test_err);
    /* the base as a reward model (a new head), then that head zeroed */
    rc = test_llamac("reward --model " DIR "/base.h5 --tokenizer %s --data " DIR "/pairs.jsonl --batch 2 --seq 32 "
                     "--steps 1 --lr 1e-9 --peak-gflops 1 --ckpt-dir " DIR "/zck --out " DIR "/rm0.h5", tokp);
    EXPECT(rc == 0 && strstr(test_out, "a causal LM: new score head"), "reward from a causal LM: %s", test_err);
    ModelSource ms;
    Err e;
    LC_ASSERT(source_open(&ms, DIR "/rm0.h5", &e) == 0);
    EXPECT(ms.c.num_labels == 1 && ms.c.pad_id >= 0 && !ms.c.tied, "reward config: labels %d pad %d tied %d",
           ms.c.num_labels, ms.c.pad_id, ms.c.tied);
    ParamTable pt;
    LC_ASSERT(params_build(&ms.c, &pt, &e) == 0);
    float *p = xcalloc(pt.size, sizeof(float));
    LC_ASSERT(source_load(&ms, &pt, p, &e) == 0);
    int k = params_find(&pt, "score.weight");
    LC_ASSERT(k >= 0);
    memset(p + pt.p[k].offset, 0, pt.p[k].numel * sizeof(float));
    EXPECT(ckpt_save(DIR "/zero.h5", &ms.c, &pt, p, ms.tokenizer_id, NULL, NULL, &e) == 0, "save: %s", e.msg);
    free(p);
    params_free(&pt);
}

#define RM_ARGS "reward --tokenizer %s --batch 4 --seq 48 --lr 3e-3 --warmup 2 --seed 4 --peak-gflops 1 "

/* Zero head: every reward 0, so step 1 is the formula's value exactly. */
void reward_first_step(void) {
    need_inputs();
    system("rm -rf " DIR "/Z*");
    static const struct { const char *data, *extra; double loss; } cases[] = {
        {"pairs", "", 0.6931471805599453},                                   /* log 2 */
        {"margin", "", 1.3132616875182228},                                  /* log(1 + e) */
        {"pairs", "--center-rewards-coefficient 0.01 ", 0.6931471805599453}, /* (0 + 0)^2 adds nothing */
    };
    for (int i = 0; i < 3; i++) {
        char m[64];
        snprintf(m, sizeof m, DIR "/Z%d.jsonl", i);
        int rc = test_llamac(RM_ARGS "--model " DIR "/zero.h5 --data " DIR "/%s.jsonl --steps 2 %s--ckpt-dir " DIR
                             "/Z%d --metrics %s --out " DIR "/Z%d.h5", tokp, cases[i].data, cases[i].extra, i, m, i);
        EXPECT(rc == 0, "case %d: %s", i, test_err);
        EXPECT_NEAR(test_metric(m, 1, "loss"), cases[i].loss, 1e-6);
        EXPECT(test_metric(m, 1, "accuracy") == 0 && test_metric(m, 1, "margin") == 0, "case %d: accuracy %g margin %g", i,
               test_metric(m, 1, "accuracy"), test_metric(m, 1, "margin"));
        EXPECT(test_metric(m, 1, "min_reward") == 0 && test_metric(m, 1, "max_reward") == 0, "case %d: rewards not 0", i);
        EXPECT(test_metric(m, 2, "loss") < cases[i].loss, "case %d: step 2 loss %g did not fall", i, test_metric(m, 2, "loss"));
    }
    EXPECT(strstr(test_out, "center-rewards coefficient 0.01"), "start-up line: %s", test_out);
}

/* Training learns the pattern: held-out accuracy rises; the HF export is
 * a sequence classifier; accumulation gives the same steps. */
void reward_train(void) {
    need_inputs();
    system("rm -rf " DIR "/T* " DIR "/hf");
    int rc = test_llamac(RM_ARGS "--model " DIR "/base.h5 --data " DIR "/pairs.jsonl --val " DIR "/val.jsonl "
                         "--val-every 15 --steps 30 --ckpt-dir " DIR "/T1 --metrics " DIR "/T1.jsonl --out " DIR
                         "/T1.h5 --hf-out " DIR "/hf", tokp);
    EXPECT(rc == 0, "train: %s", test_err);
    double a1 = test_metric(DIR "/T1.jsonl", 30, "eval_accuracy");
    double l0 = test_metric(DIR "/T1.jsonl", 0, "val_loss"), l1 = test_metric(DIR "/T1.jsonl", 30, "val_loss");
    double m0 = test_metric(DIR "/T1.jsonl", 0, "eval_margin"), m1 = test_metric(DIR "/T1.jsonl", 30, "eval_margin");
    EXPECT(a1 >= 0.8 && l1 < 0.5 * l0 && m1 > m0 + 1, "held-out accuracy %g, loss %g -> %g, margin %g -> %g", a1, l0,
           l1, m0, m1);
    char *cfg = test_slurp(DIR "/hf/config.json");
    EXPECT(cfg && strstr(cfg, "LlamaForSequenceClassification") && strstr(cfg, "\"pad_token_id\"") &&
           strstr(cfg, "LABEL_0"), "config.json: %s", cfg ? cfg : "(none)");
    free(cfg);
    ModelSource ms;
    Err e;
    EXPECT(source_open(&ms, DIR "/hf", &e) == 0 && ms.c.num_labels == 1, "HF reward model reopens: %s", e.msg);
    rc = test_llamac(RM_ARGS "--model " DIR "/base.h5 --data " DIR "/pairs.jsonl --steps 4 --ckpt-dir " DIR
                     "/T2 --metrics " DIR "/T2.jsonl --out " DIR "/T2.h5", tokp);
    EXPECT(rc == 0, "batch 4: %s", test_err);
    rc = test_llamac(RM_ARGS "--model " DIR "/base.h5 --data " DIR "/pairs.jsonl --steps 4 --batch 2 --batch-tokens 192 "
                     "--ckpt-dir " DIR "/T3 --metrics " DIR "/T3.jsonl --out " DIR "/T3.h5", tokp);
    EXPECT(rc == 0, "batch 2 x 2: %s", test_err);
    rc = test_llamac(RM_ARGS "--model " DIR "/base.h5 --data " DIR "/pairs.jsonl --steps 4 --recompute 1 "
                     "--ckpt-dir " DIR "/T4 --metrics " DIR "/T4.jsonl --out " DIR "/T4.h5", tokp);
    EXPECT(rc == 0, "recompute: %s", test_err);
    for (int s = 1; s <= 4; s++) { /* recomputation gives the same bits */
        double a = test_metric(DIR "/T2.jsonl", s, "loss"), b = test_metric(DIR "/T4.jsonl", s, "loss");
        EXPECT(a == b, "step %d: loss %.17g, with --recompute 1 %.17g", s, a, b);
    }
    for (int s = 1; s <= 4; s++) {
        double a = test_metric(DIR "/T2.jsonl", s, "loss"), b = test_metric(DIR "/T3.jsonl", s, "loss");
        double ma = test_metric(DIR "/T2.jsonl", s, "margin"), mb = test_metric(DIR "/T3.jsonl", s, "margin");
        EXPECT(fabs(a - b) < 1e-5 && fabs(ma - mb) < 1e-5, "step %d: loss %g / %g, margin %g / %g", s, a, b, ma, mb);
    }
}

/* LoRA (adapters and the whole head) killed and resumed: the straight run's bits. */
void reward_lora_resume(void) {
    need_inputs();
    system("rm -rf " DIR "/L*");
#define LR_ARGS RM_ARGS "--model " DIR "/zero.h5 --data " DIR "/pairs.jsonl --lora-r 4 --lora-dropout 0.1 --steps 12 "
    char a[2048], b[2048];
    snprintf(a, sizeof a, LR_ARGS "--ckpt-dir " DIR "/LA --metrics " DIR "/LA.jsonl --adapter-out " DIR "/LAad", tokp);
    snprintf(b, sizeof b, LR_ARGS "--save-every 3 --ckpt-dir " DIR "/LB --metrics " DIR "/LB.jsonl --adapter-out " DIR
             "/LBad", tokp);
    int rc = test_llamac("%s", a);
    EXPECT(rc == 0 && strstr(test_out, "LoRA with the score head trained whole"), "LoRA reward: %s", test_err);
    /* the head moved: step 1's rewards are all 0, later ones not */
    EXPECT(test_metric(DIR "/LA.jsonl", 1, "max_reward") == 0 && test_metric(DIR "/LA.jsonl", 12, "max_reward") != 0,
           "the head did not train");
    ckpt_test_kill_resume(NULL, b, DIR "/LB/step-00000006.h5", DIR "/LA/step-00000012.h5", DIR "/LB/step-00000012.h5",
                          DIR "/LA.jsonl", DIR "/LB.jsonl", 12, 0);
}

void reward_cli_errors(void) {
    need_inputs();
    put("same.jsonl", "{\"prompt\": \"a\", \"chosen\": \" c\", \"rejected\": \" c\"}\n");
    put("badm.jsonl", "{\"prompt\": \"a\", \"chosen\": \" c\", \"rejected\": \" d\", \"margin\": [1]}\n");
    static const TestCliCase cases[] = {
        {"reward --model " DIR "/base.h5 --tokenizer %s --data " DIR "/same.jsonl",
         DIR "/same.jsonl:1: \"chosen\" is identical to \"rejected\""},
        {"reward --model " DIR "/base.h5 --tokenizer %s --data " DIR "/badm.jsonl",
         DIR "/badm.jsonl:1: \"margin\" must be a number"},
        {"reward --model " DIR "/base.h5 --tokenizer %s --data " DIR "/pairs.jsonl --sample-tokens 8",
         "--sample-tokens: a reward model has no language-model head"},
        {"reward --model " DIR "/base.h5 --tokenizer %s --data " DIR "/pairs.jsonl --center-rewards-coefficient -1",
         "--center-rewards-coefficient"},
    };
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], tokp, " --batch 2 --seq 32 --ckpt-dir " DIR "/E");
}

/* dir/config.json with "key": value put first (a later key of the same
 * name would be a duplicate: only keys the file lacks) */
static void config_add(const char *dir, const char *kv) {
    char p[256];
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *t = test_slurp(p);
    LC_ASSERT(t && t[0] == '{');
    char *u = xmalloc(strlen(t) + strlen(kv) + 8);
    sprintf(u, "{%s,%s", kv, t + 1);
    test_put(p, u);
    free(t);
    free(u);
}

/* Reward models that are not: a classification directory with 2 labels, a
 * score head whose shape is not its config's. One line each, naming it. */
void reward_bad_models(void) {
    need_inputs();
    system("rm -rf " DIR "/bm*");
    int rc = test_llamac("convert " DIR "/zero.h5 " DIR "/bm1 --tokenizer %s", tokp);
    EXPECT(rc == 0, "convert: %s", test_err);
    config_add(DIR "/bm1", "\"num_labels\": 2");
    /* a 2-label classifier as a checkpoint, its HF directory told it has 1 */
    ModelSource ms;
    Err e;
    LC_ASSERT(source_open(&ms, DIR "/zero.h5", &e) == 0);
    LlamaConfig c = ms.c;
    c.num_labels = 2;
    ParamTable pt;
    LC_ASSERT(params_build(&c, &pt, &e) == 0);
    float *p = xcalloc(pt.size, sizeof(float));
    EXPECT(ckpt_save(DIR "/bm2.h5", &c, &pt, p, ms.tokenizer_id, NULL, NULL, &e) == 0, "save: %s", e.msg);
    free(p);
    params_free(&pt);
    rc = test_llamac("convert " DIR "/bm2.h5 " DIR "/bm2 --tokenizer %s", tokp);
    EXPECT(rc == 0, "convert 2 labels: %s", test_err);
    config_add(DIR "/bm2", "\"num_labels\": 1");
    static const TestCliCase cases[] = {
        {"score --reward-model " DIR "/bm1 --data " DIR "/val.jsonl --out " DIR "/bm.jsonl --reward-tokenizer %s",
         DIR "/bm1: not a reward model (num_labels 2, want 1)"},
        {"score --reward-model " DIR "/bm2 --data " DIR "/val.jsonl --out " DIR "/bm.jsonl --reward-tokenizer %s",
         "score.weight"},
        {"reward --model " DIR "/bm2 --data " DIR "/pairs.jsonl --seq 32 --batch 2 --ckpt-dir " DIR "/bmck --tokenizer %s",
         "score.weight"},
        {"reward --model " DIR "/bm2.h5 --data " DIR "/pairs.jsonl --seq 32 --batch 2 --tokenizer %s",
         DIR "/bm2.h5: a classifier with 2 labels, not a reward model (num_labels 1)"},
    };
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], tokp, "");
}

/* LoRA reward models on each kind of base a user has (an llamac
 * checkpoint, a Hugging Face directory, a GGUF file; each a causal LM that
 * gets a new head), killed with SIGKILL mid-run and resumed: the straight
 * run's adapters, head, moments and losses. */
void reward_lora_resume_bases(void) {
    need_inputs();
    char bases[3][256];
    ckpt_test_bases(DIR, DIR "/base.h5", bases);
    for (int k = 0; k < 3; k++) {
        char a[2048], b[2048], ck[256], pa[256], pb[256], ma[256], mb[256];
        snprintf(ma, sizeof ma, DIR "/rbA%d.jsonl", k);
        snprintf(mb, sizeof mb, DIR "/rbB%d.jsonl", k);
#define RB_ARGS RM_ARGS "--model %s --data " DIR "/pairs.jsonl --lora-r 4 --lora-dropout 0.1 --steps 12 " \
                "--save-every 3 --ckpt-dir " DIR "/rb%c%d --adapter-out " DIR "/rbad --metrics %s"
        snprintf(a, sizeof a, RB_ARGS, tokp, bases[k], 'A', k, ma);
        snprintf(b, sizeof b, RB_ARGS, tokp, bases[k], 'B', k, mb);
        snprintf(ck, sizeof ck, DIR "/rbB%d/step-00000006.h5", k);
        snprintf(pa, sizeof pa, DIR "/rbA%d/step-00000012.h5", k);
        snprintf(pb, sizeof pb, DIR "/rbB%d/step-00000012.h5", k);
        ckpt_test_kill_resume(a, b, ck, pa, pb, ma, mb, 12, 0);
    }
}

/* A LoRA reward model made from a causal LM, scored as BASE+ADAPTER (the
 * base given a head by the adapter) and as the merged checkpoint: the same
 * rewards. */
void reward_score_adapter(void) {
    need_inputs();
    system("rm -rf " DIR "/sa*");
    int rc = test_llamac(RM_ARGS "--model " DIR "/base.h5 --data " DIR "/pairs.jsonl --lora-r 4 --steps 3 --ckpt-dir "
                         DIR "/sack --adapter-out " DIR "/sa --merged-out " DIR "/sa.h5", tokp);
    EXPECT(rc == 0, "LoRA reward: %s", test_err);
    rc = test_llamac("score --reward-model " DIR "/base.h5+" DIR "/sa --reward-tokenizer %s --data " DIR
                     "/val.jsonl --out " DIR "/sa_a.jsonl", tokp);
    EXPECT(rc == 0, "score BASE+ADAPTER: %s", test_err);
    rc = test_llamac("score --reward-model " DIR "/sa.h5 --reward-tokenizer %s --data " DIR "/val.jsonl --out " DIR
                     "/sa_m.jsonl", tokp);
    EXPECT(rc == 0, "score merged: %s", test_err);
    FILE *fa = fopen(DIR "/sa_a.jsonl", "r"), *fm = fopen(DIR "/sa_m.jsonl", "r");
    char la[4096], lm[4096];
    int n = 0;
    while (fa && fm && fgets(la, sizeof la, fa) && fgets(lm, sizeof lm, fm)) {
        double a = strtod(strstr(la, "\"reward_chosen\":") + 16, NULL), m = strtod(strstr(lm, "\"reward_chosen\":") + 16, NULL);
        EXPECT(fabs(a - m) <= 1e-5 * (1 + fabs(m)), "line %d: %g as BASE+ADAPTER, %g merged", n + 1, a, m);
        n++;
    }
    EXPECT(n == 20, "%d scored lines, want 20", n);
    if (fa) fclose(fa);
    if (fm) fclose(fm);
}
