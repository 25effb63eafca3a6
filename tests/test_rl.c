/*
 * test_rl.c: online RL (`llamac rl`, train/cmd/cmd_rl.c) through the real
 * binary on a random tiny policy (tokenizer tests/fixtures/bpe_v1.tok).
 *
 *   - GRPO, RLOO and online DPO end to end with LoRA and a reward program:
 *     the metrics under TRL's names, the rollouts file, the same seed the
 *     same run;
 *   - fixed completions (sampling bypassed): the first step's loss is the
 *     hand-written one from the rollout's advantages (GRPO dapo at ratio 1:
 *     -sum_i A_i n_i / sum_i n_i; RLOO: -mean A_i);
 *   - resume: runs stopped inside a rollout (two mini-batches a rollout)
 *     and at its end continue with the losses of the uninterrupted run;
 *   - data parallelism: 2 ranks give one process's losses on the same
 *     fixed completions;
 *   - bad input: one line each (an unknown --algo, G 1's warning, a missing
 *     reward field, a reward program that dies, ...).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/tok.h"
#include "../model/config.h"
#include "../model/params.h"
#include "../train/io/ckpt.h"
#include "test.h"
#include "tests.h"

#define RLD "build/trl"
#define TOKF "tests/fixtures/bpe_v1.tok"
#define POLICY "--policy " RLD "/policy.h5 --tokenizer " TOKF " --template llama3"
/* a reward program: 1 when the completion has an 'e', else 0 */
#define RCMD "--reward-cmd \"python3 " RLD "/rw.py\""

static void need_policy(void) {
    mkdir("build", 0755);
    mkdir(RLD, 0755);
    if (access(RLD "/policy.h5", R_OK) == 0 && access(RLD "/rw.py", R_OK) == 0 && access(RLD "/rm.h5", R_OK) == 0) return;
    Tokenizer t;
    Err e = {{0}};
    LC_ASSERT(tok_load(&t, TOKF, &e) == 0);
    test_tiny_model(RLD "/policy.h5", t.vocab, t.id, 0, 11);
    test_tiny_model(RLD "/rm.h5", t.vocab, t.id, 1, 12);
    test_tiny_model(RLD "/rm_other.h5", t.vocab, t.id ^ 1, 1, 13); /* another tokenizer's */
    tok_free(&t);
    test_put(RLD "/rw.py", "import json, sys\nfor l in sys.stdin:\n"
                           "    print(int('e' in json.loads(l)['completion']), flush=True)\n");
    test_put(RLD "/p.jsonl",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"the cat\"}], \"answer\": \"cat\"}\n"
             "{\"messages\": [{\"role\": \"user\", \"content\": \"a dog and a bird\"}], \"answer\": \"dog\"}\n"
             "{\"messages\": [{\"role\": \"user\", \"content\": \"hello there\"}], \"answer\": \"hi\"}\n"
             "{\"messages\": [{\"role\": \"user\", \"content\": \"one two three\"}], \"answer\": \"3\"}\n");
}

/* Every "loss" of a metrics file (training records) into out[0..max). */
static int losses(const char *path, double *out, int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1 << 14];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *l = o ? json_object_get(o, "loss") : NULL;
        if (l) out[n++] = json_number_value(l);
        json_decref(o);
    }
    fclose(f);
    return n;
}

/* The first training record of a metrics file (caller decrefs). */
static json_t *first_record(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char line[1 << 14];
    json_t *r = NULL;
    while (!r && fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        if (o && json_object_get(o, "loss")) r = o;
        else json_decref(o);
    }
    fclose(f);
    return r;
}

#define RUN_GRPO "rl --algo grpo " POLICY " --prompts " RLD "/p.jsonl --val-prompts " RLD "/p.jsonl " RCMD \
                 " --group 4 --prompts-per-step 2 --max-tokens 6 --steps 3 --lora-r 4 --lr 1e-2 --seed 5 --val-every 3 "

void rl_grpo_e2e(void) {
    need_policy();
    system("rm -rf " RLD "/g1 " RLD "/g2 && mkdir -p " RLD "/g1 " RLD "/g2");
    int rc = test_llamac(RUN_GRPO "--metrics " RLD "/g1/m.jsonl --rollouts-out " RLD "/g1/r.jsonl --ckpt-dir " RLD
                         "/g1/ck --adapter-out " RLD "/g1/ad");
    EXPECT(rc == 0, "rl grpo: %s\n%s", test_err, test_out);
    if (rc) return;
    EXPECT(strstr(test_out, "rl: grpo, 2 prompts a rollout x G 4") && strstr(test_out, "val reward") &&
               strstr(test_out, "| reward "), "start-up, progress and validation lines: %s", test_out);
    json_t *r = first_record(RLD "/g1/m.jsonl");
    static const char *const keys[] = {"reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
                                       "completions/clipped_ratio", "clip_ratio/low_mean", "clip_ratio/high_mean",
                                       "rewards/cmd/mean", "time/generation", "time/train", "tokens"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        EXPECT(r && json_object_get(r, keys[k]), "metrics record without \"%s\"", keys[k]);
    json_decref(r);
    char *a = test_slurp(RLD "/g1/r.jsonl");
    int lines = 0;
    for (char *p = a; p && *p; p++) lines += *p == '\n';
    EXPECT(lines == 24, "rollouts file: %d lines, want 3 rollouts x 8 samples", lines);
    EXPECT(a && strstr(a, "\"advantage\"") && strstr(a, "\"rewards/cmd\""), "rollout records: %.300s", a ? a : "");
    /* the same seed: the same run */
    rc = test_llamac(RUN_GRPO "--metrics " RLD "/g2/m.jsonl --rollouts-out " RLD "/g2/r.jsonl --ckpt-dir " RLD
                     "/g2/ck --adapter-out " RLD "/g2/ad");
    char *b = test_slurp(RLD "/g2/r.jsonl");
    EXPECT(rc == 0 && a && b && strcmp(a, b) == 0, "the same seed gave other rollouts: %s", test_err);
    free(a);
    free(b);
    double la[8], lb[8];
    int na = losses(RLD "/g1/m.jsonl", la, 8), nb = losses(RLD "/g2/m.jsonl", lb, 8);
    EXPECT(na == 3 && nb == 3, "loss lines %d %d", na, nb);
    for (int i = 0; i < na && i < nb; i++) EXPECT(la[i] == lb[i], "step %d: %.17g vs %.17g", i + 1, la[i], lb[i]);
}

/* Fixed completions: 2 prompts x G 2 with given rewards. */
#define FIXED                                                                     \
    "{\"prompt_index\": 0, \"completion_ids\": [5, 6, 7], \"reward\": 1}\n"       \
    "{\"prompt_index\": 0, \"completion_ids\": [8, 9], \"reward\": 0}\n"          \
    "{\"prompt_index\": 2, \"completion_ids\": [10, 11, 12, 13], \"reward\": 0.5}\n" \
    "{\"prompt_index\": 2, \"completion_ids\": [14], \"reward\": 2}\n"

void rl_fixed_loss(void) {
    need_policy();
    test_put(RLD "/fixed.jsonl", FIXED FIXED);
    system("rm -rf " RLD "/f && mkdir -p " RLD "/f");
    /* GRPO dapo, beta 0, one iteration: ratio 1, loss = -sum_i A_i n_i / sum_i n_i */
    int rc = test_llamac("rl --algo grpo " POLICY " --prompts " RLD "/p.jsonl --fixed-rollouts " RLD "/fixed.jsonl "
                         "--group 2 --prompts-per-step 2 --max-tokens 6 --steps 1 --lora-r 4 --lora-dropout 0 --lr 1e-3 "
                         "--metrics " RLD "/f/g.jsonl --rollouts-out " RLD "/f/gr.jsonl --ckpt-dir " RLD "/f/ck --adapter-out " RLD "/f/ad");
    EXPECT(rc == 0, "rl fixed: %s\n%s", test_err, test_out);
    double l[2];
    /* group 0: rewards 1, 0: mean 0.5, std 0.7071: A = +-0.5 / (0.70711 + 1e-4); group 1: 0.5, 2: A = -+0.75 / (1.06066 + 1e-4) */
    double a0 = 0.5 / (sqrt(0.5) + 1e-4), a1 = 0.75 / (sqrt(1.125) + 1e-4);
    double want = -(a0 * 3 - a0 * 2 - a1 * 4 + a1 * 1) / 10.0;
    EXPECT(losses(RLD "/f/g.jsonl", l, 2) == 1, "one loss line");
    EXPECT(fabs(l[0] - want) <= 1e-6, "grpo loss %.9g, want %.9g", l[0], want);
    /* RLOO beta 0: A_i = r_i - the other's reward; loss = -mean A_i */
    rc = test_llamac("rl --algo rloo --beta 0 " POLICY " --prompts " RLD "/p.jsonl --fixed-rollouts " RLD "/fixed.jsonl "
                     "--group 2 --prompts-per-step 2 --max-tokens 6 --steps 1 --lora-r 4 --lora-dropout 0 --lr 1e-3 "
                     "--metrics " RLD "/f/r.jsonl --ckpt-dir " RLD "/f/ckr --adapter-out " RLD "/f/adr");
    EXPECT(rc == 0, "rl rloo fixed: %s\n%s", test_err, test_out);
    EXPECT(losses(RLD "/f/r.jsonl", l, 2) == 1, "one loss line");
    EXPECT(fabs(l[0] - 0.0) <= 1e-6, "rloo loss %.9g, want 0 (advantages 1 -1 -1.5 1.5)", l[0]);
    /* online DPO: 2 samples a prompt; at the reference (step 1), h = 0: loss log 2 */
    rc = test_llamac("rl --algo online-dpo " POLICY " --prompts " RLD "/p.jsonl --fixed-rollouts " RLD "/fixed.jsonl "
                     "--prompts-per-step 2 --max-tokens 6 --steps 1 --lora-r 4 --lora-dropout 0 --lr 1e-3 --batch 2 "
                     "--metrics " RLD "/f/d.jsonl --ckpt-dir " RLD "/f/ckd --adapter-out " RLD "/f/add");
    EXPECT(rc == 0, "rl online-dpo fixed: %s\n%s", test_err, test_out);
    EXPECT(losses(RLD "/f/d.jsonl", l, 2) == 1, "one loss line");
    EXPECT(fabs(l[0] - log(2.0)) <= 1e-6, "online-dpo loss %.9g, want log 2", l[0]);
}

/* Run `run` (a command line ending in a space) from the checkpoint
 * dir/ck/step-<from>.h5 to its end: its losses must be full[from ..
 * steps), bit for bit. */
static void resume_matches(const char *run, const char *dir, int from, const double *full, int steps) {
    int rc = test_llamac("%s--metrics %s/r%d.jsonl --ckpt-dir %s/ck%d --resume %s/ck/step-%08d.h5 --adapter-out %s/ad%d",
                         run, dir, from, dir, from, dir, from, dir, from);
    EXPECT(rc == 0, "resume from %d: %s\n%s", from, test_err, test_out);
    char path[256];
    snprintf(path, sizeof path, "%s/r%d.jsonl", dir, from);
    double l[16];
    int n = losses(path, l, 16);
    EXPECT(n == steps - from, "resume from %d: %d loss lines, want %d", from, n, steps - from);
    for (int i = 0; i < n; i++)
        EXPECT(l[i] == full[from + i], "%s: resumed from step %d: step %d loss %.17g, uninterrupted %.17g", dir, from,
               from + i + 1, l[i], full[from + i]);
}

#define RUN_RES "rl --algo grpo " POLICY " --prompts " RLD "/p.jsonl " RCMD " --group 2 --prompts-per-step 4 " \
                "--mini-batches 2 --max-tokens 5 --steps 6 --lora-r 4 --lr 1e-2 --seed 9 --batch 2 "

void rl_resume(void) {
    need_policy();
    system("rm -rf " RLD "/res && mkdir -p " RLD "/res");
    int rc = test_llamac(RUN_RES "--metrics " RLD "/res/full.jsonl --ckpt-dir " RLD "/res/ck --save-every 1 --keep 10 "
                         "--adapter-out " RLD "/res/ad");
    EXPECT(rc == 0, "rl: %s\n%s", test_err, test_out);
    if (rc) return;
    double full[8];
    EXPECT(losses(RLD "/res/full.jsonl", full, 8) == 6, "6 loss lines");
    /* from step 3 (inside rollout 1: its first mini-batch done) and step 4 (at its end) */
    for (int from = 3; from <= 4; from++) resume_matches(RUN_RES, RLD "/res", from, full, 6);
}

/* LoRA GRPO on each kind of base a user has (an llamac checkpoint, a
 * Hugging Face directory, a GGUF file), killed with SIGKILL inside a rollout
 * (after step 3, the first of rollout 1's two mini-batches) and resumed with
 * --resume auto: the same adapters, moments and losses as a straight run. */
void rl_kill_resume(void) {
    need_policy();
    char bases[3][256];
    ckpt_test_bases(RLD, RLD "/policy.h5", bases);
    for (int k = 0; k < 3; k++) {
        char a[2048], b[2048], ck[256], pa[256], pb[256], ma[256], mb[256];
        snprintf(ma, sizeof ma, RLD "/rbA%d.jsonl", k);
        snprintf(mb, sizeof mb, RLD "/rbB%d.jsonl", k);
#define RB_ARGS "rl --algo grpo --policy %s --tokenizer " TOKF " --template llama3 --prompts " RLD "/p.jsonl " RCMD \
                " --group 2 --prompts-per-step 4 --mini-batches 2 --max-tokens 5 --steps 12 --lora-r 4 --lr 1e-2 " \
                "--seed 9 --batch 2 --save-every 1 --keep 20 --ckpt-dir " RLD "/rb%c%d --adapter-out " RLD "/rbad --metrics %s"
        snprintf(a, sizeof a, RB_ARGS, bases[k], 'A', k, ma);
        snprintf(b, sizeof b, RB_ARGS, bases[k], 'B', k, mb);
        snprintf(ck, sizeof ck, RLD "/rbB%d/step-00000003.h5", k);
        snprintf(pa, sizeof pa, RLD "/rbA%d/step-00000012.h5", k);
        snprintf(pb, sizeof pb, RLD "/rbB%d/step-00000012.h5", k);
        ckpt_test_kill_resume(a, b, ck, pa, pb, ma, mb, 12, 0);
    }
}

#define RUN_PPO "rl --algo ppo " POLICY " --prompts " RLD "/p.jsonl --reward-model " RLD "/rm.h5 --reward-tokenizer " \
                TOKF " --reward-template llama3 --prompts-per-step 2 --num-iterations 2 --max-tokens 5 --lora-r 4 " \
                "--lr 1e-2 --seed 4 --batch 2 --steps 4 "

void rl_ppo(void) {
    need_policy();
    system("rm -rf " RLD "/ppo && mkdir -p " RLD "/ppo");
    int rc = test_llamac(RUN_PPO "--metrics " RLD "/ppo/full.jsonl --ckpt-dir " RLD "/ppo/ck --save-every 1 --keep 10 "
                         "--adapter-out " RLD "/ppo/ad");
    EXPECT(rc == 0, "rl ppo: %s\n%s", test_err, test_out);
    if (rc) return;
    EXPECT(strstr(test_out, "ppo: kl_coef 0.05 (k1, in the reward)") && strstr(test_out, "value: " RLD "/rm.h5"),
           "start-up line: %s", test_out);
    json_t *r = first_record(RLD "/ppo/full.jsonl");
    static const char *const keys[] = {"objective/kl", "objective/entropy", "objective/non_score_reward",
                                       "objective/rlhf_reward", "objective/scores", "policy/approxkl_avg",
                                       "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg",
                                       "val/ratio", "val/num_eos_tokens"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        EXPECT(r && json_object_get(r, keys[k]), "metrics record without \"%s\"", keys[k]);
    /* step 1: the sampling policy itself (ratio 1), whitened advantages: the policy loss is 0, the loss
     * vf_coef x the value loss */
    double pg = r ? json_number_value(json_object_get(r, "loss/policy_avg")) : 1;
    double vf = r ? json_number_value(json_object_get(r, "loss/value_avg")) : 1;
    double l0 = r ? json_number_value(json_object_get(r, "loss")) : 1;
    EXPECT(fabs(pg) <= 1e-5 && fabs(l0 - (pg + 0.1 * vf)) <= 1e-6 * fmax(1, fabs(l0)) && vf > 0,
           "step 1: policy loss %g (want 0), loss %g = %g + 0.1 x %g", pg, l0, pg, vf);
    json_decref(r);
    double full[8];
    EXPECT(losses(RLD "/ppo/full.jsonl", full, 8) == 4, "4 loss lines");
    /* resume inside rollout 0 (step 1 of its 2) and at its end: the value model and its moments come back */
    for (int from = 1; from <= 2; from++) resume_matches(RUN_PPO, RLD "/ppo", from, full, 4);
}

void rl_dist(void) {
    if (!test_have_mpi()) return;
    need_policy();
    test_put(RLD "/fixed4.jsonl", FIXED FIXED FIXED FIXED);
    system("rm -rf " RLD "/d && mkdir -p " RLD "/d");
#define RUN_D "rl --algo grpo --beta 0.04 " POLICY " --prompts " RLD "/p.jsonl --fixed-rollouts " RLD "/fixed4.jsonl " \
              "--group 2 --prompts-per-step 2 --max-tokens 6 --steps 4 --lora-r 4 --lora-dropout 0 --lr 1e-2 --batch 1 "
    int rc = test_llamac(RUN_D "--metrics " RLD "/d/one.jsonl --ckpt-dir " RLD "/d/c1 --adapter-out " RLD "/d/a1");
    EXPECT(rc == 0, "one process: %s", test_err);
    rc = test_mpi_llamac(2, RUN_D "--metrics " RLD "/d/two.jsonl --ckpt-dir " RLD "/d/c2 --adapter-out " RLD "/d/a2");
    EXPECT(rc == 0, "2 ranks: exit %d: %s", rc, test_err);
    double a[8], b[8];
    int na = losses(RLD "/d/one.jsonl", a, 8), nb = losses(RLD "/d/two.jsonl", b, 8);
    EXPECT(na == 4 && nb == 4, "loss lines %d %d", na, nb);
    for (int i = 0; i < na && i < nb; i++)
        EXPECT(fabs(a[i] - b[i]) <= 1e-6 * fmax(1e-3, fabs(a[i])), "step %d: 2 ranks %.9g, one process %.9g", i + 1, b[i], a[i]);
}

void rl_errors(void) {
    need_policy();
    test_put(RLD "/noans.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"the cat\"}], \"answer\": \"cat\"}\n"
                                 "{\"messages\": [{\"role\": \"user\", \"content\": \"a dog\"}]}\n");
    test_put(RLD "/bad1.jsonl", "{\"prompt_index\": 0, \"completion_ids\": [5], \"reward\": 1}\n"
                                "{\"prompt_index\": 0, \"completion_ids\": [5, 1.5], \"reward\": 1}\n");
    test_put(RLD "/bad2.jsonl", "{\"prompt_index\": 0, \"completion_ids\": [5], \"reward\": 1}\n"
                                "{\"prompt_index\": 1, \"completion_ids\": [6], \"reward\": 1}\n");
    test_put(RLD "/bad3.jsonl", "{\"prompt_index\": 0, \"completion_ids\": [5], \"reward\": \"high\"}\n");
    static const TestCliCase cases[] = {
        {"rl --algo sarsa %s", "--algo: 'sarsa'"},
        {"rl --prompts " RLD "/p.jsonl " RCMD, "--policy: required"},
        {"rl " POLICY " " RCMD, "--prompts: required"},
        {"rl %s --algo rloo --group 1", "--group: rloo needs at least 2"},
        {"rl %s --algo online-dpo --group 3", "--group: online-dpo samples 2"},
        {"rl %s --prompts-per-step 3 --mini-batches 2", "--mini-batches 2 does not divide --prompts-per-step 3"},
        {"rl %s --loss-type xyz", "--loss-type: 'xyz'"},
        {"rl %s --scale-rewards all", "--scale-rewards: 'all'"},
        {"rl " POLICY " --prompts " RLD "/p.jsonl --steps 1", "no reward"},
        {"rl " POLICY " --prompts " RLD "/noans.jsonl --reward-answer answer --steps 1",
         RLD "/noans.jsonl:2: no \"answer\" field"},
        {"rl %s --reward-cmd \"exit 3\" --steps 1 --ckpt-dir " RLD "/e1", "--reward-cmd"},
        {"rl %s --algo ppo --reward-answer answer --value-model " RLD "/policy.h5", "not a classifier with one label (num_labels 0)"},
        {"rl %s --algo ppo --reward-answer answer --value-model " RLD "/rm_other.h5", "its trunk reads another tokenizer than the policy"},
        {"rl " POLICY " --prompts " RLD "/p.jsonl --algo ppo --reward-answer answer", "--value-model: required"},
        {"rl %s --group 0", "--group: at least 1 sample a prompt, got 0"},
        {"rl %s --num-iterations 0", "--num-iterations: at least 1 pass over a rollout, got 0"},
        {"rl %s --algo ppo --mask-truncated-completions", "--mask-truncated-completions: grpo and rloo only"},
        {"rl %s --algo online-dpo --batch 1", "--batch: online-dpo packs a pair's two samples"},
        {"rl %s --fixed-rollouts " RLD "/bad1.jsonl --group 2 --steps 1 --ckpt-dir " RLD "/e3",
         RLD "/bad1.jsonl:2: completion id 1 is not a token id of the tokenizer"},
        {"rl %s --fixed-rollouts " RLD "/bad2.jsonl --group 2 --steps 1 --ckpt-dir " RLD "/e4",
         RLD "/bad2.jsonl:2: prompt_index 1 inside a group of prompt 0"},
        {"rl %s --fixed-rollouts " RLD "/bad3.jsonl --group 2 --steps 1 --ckpt-dir " RLD "/e5",
         RLD "/bad3.jsonl:1: want {\"prompt_index\": I"},
        {"rl %s --reward-cmd \"while read l; do echo abc; done\" --steps 1 --ckpt-dir " RLD "/e2", "not a number"},
    };
    test_cli_refusals(cases, (int)(sizeof cases / sizeof cases[0]),
                      POLICY " --prompts " RLD "/p.jsonl --max-tokens 4 --prompts-per-step 2 --lora-r 2", "");
    /* G 1: a warning, and training goes on (advantages 0, loss 0) */
    system("rm -rf " RLD "/g1w");
    int rc = test_llamac("rl " POLICY " --prompts " RLD "/p.jsonl " RCMD " --group 1 --prompts-per-step 2 --max-tokens "
                         "4 --steps 1 --lora-r 2 --ckpt-dir " RLD "/g1w --adapter-out " RLD "/g1w/ad");
    EXPECT(rc == 0 && strstr(test_err, "warning: --group 1: every GRPO advantage is 0"), "G 1: %d %s", rc, test_err);
}

/* Fixed completions: 2 prompts x G 4, lengths 1 to 6. */
#define FIXED4                                                                       \
    "{\"prompt_index\": 1, \"completion_ids\": [5, 6, 7], \"reward\": 1}\n"          \
    "{\"prompt_index\": 1, \"completion_ids\": [8, 9], \"reward\": 0}\n"             \
    "{\"prompt_index\": 1, \"completion_ids\": [20, 21, 22, 23, 24, 25], \"reward\": 0.25}\n" \
    "{\"prompt_index\": 1, \"completion_ids\": [30], \"reward\": 1.5}\n"             \
    "{\"prompt_index\": 3, \"completion_ids\": [10, 11, 12, 13], \"reward\": 0.5}\n" \
    "{\"prompt_index\": 3, \"completion_ids\": [14], \"reward\": 2}\n"               \
    "{\"prompt_index\": 3, \"completion_ids\": [40, 41, 42, 43, 44], \"reward\": 0}\n" \
    "{\"prompt_index\": 3, \"completion_ids\": [50, 51], \"reward\": 1}\n"

/* The "tokens" of a metrics file's first training record. */
static double first_tokens(const char *path) {
    json_t *r = first_record(path);
    double v = r && json_object_get(r, "tokens") ? json_number_value(json_object_get(r, "tokens")) : -1;
    json_decref(r);
    return v;
}

/* Training with each prompt laid out once before its completions (the
 * default) gives the losses of a copy of the prompt per completion, within
 * rounding, in fewer slots: GRPO with a reference and two iterations (the
 * ratio and the KL read the shared layout's log-probabilities), a group
 * split over rows (--seq too short for it: a prompt copy per row), and
 * online DPO's pairs. */
void rl_shared_prompt(void) {
    need_policy();
    test_put(RLD "/fixed4.jsonl", FIXED4 FIXED4);
    test_put(RLD "/fixed.jsonl", FIXED FIXED);
    system("rm -rf " RLD "/sh && mkdir -p " RLD "/sh");
    static const char *const runs[][2] = {
        {"grpo", "--algo grpo --beta 0.04 --num-iterations 2 --group 4 --fixed-rollouts " RLD "/fixed4.jsonl --steps 4"},
        {"dpo", "--algo online-dpo --fixed-rollouts " RLD "/fixed.jsonl --steps 2"},
    };
    static const char *const modes[] = {"--no-shared-prompt", "", "--seq 40"};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        double l[3][8], tok[3];
        int n[3];
        for (int m = 0; m < 3; m++) {
            char dir[128];
            snprintf(dir, sizeof dir, RLD "/sh/%s%d", runs[i][0], m);
            int rc = test_llamac("rl %s " POLICY " --prompts " RLD "/p.jsonl --prompts-per-step 2 --max-tokens 6 --lora-r 4 "
                                 "--lora-dropout 0 --lr 1e-2 --seed 3 %s --metrics %s/m.jsonl --ckpt-dir %s/ck "
                                 "--adapter-out %s/ad",
                                 runs[i][1], modes[m], dir, dir, dir);
            EXPECT(rc == 0, "%s %s: %s\n%s", runs[i][0], modes[m], test_err, test_out);
            char path[160];
            snprintf(path, sizeof path, "%s/m.jsonl", dir);
            n[m] = losses(path, l[m], 8);
            tok[m] = first_tokens(path);
        }
        for (int m = 1; m < 3; m++) {
            EXPECT(n[m] == n[0] && n[0] >= 2, "%s %s: %d loss lines, unshared %d", runs[i][0], modes[m], n[m], n[0]);
            for (int s = 0; s < n[0] && s < n[m]; s++)
                EXPECT(fabs(l[m][s] - l[0][s]) <= 1e-5 * (1 + fabs(l[0][s])), "%s %s: step %d loss %.9g, unshared %.9g",
                       runs[i][0], modes[m], s + 1, l[m][s], l[0][s]);
            EXPECT(tok[m] > 0 && tok[m] < tok[0], "%s %s: %g slots trained, unshared %g", runs[i][0], modes[m], tok[m], tok[0]);
        }
    }
}
