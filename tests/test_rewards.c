/*
 * test_rewards.c: the rewards of RL completions (train/loop/rewards.h):
 *
 *   - the final answer of a completion and its match against a field;
 *   - regex and length checks, weights, and the order penalty, clip, norm;
 *   - bad flags and prompt lines: one error line each;
 *   - the reward program: a well-behaved one (its input lines, kept alive
 *     across calls, no deadlock with both pipes full) and each failure
 *     with its exact line (exits, killed, hangs, not a number, too many or
 *     too few lines, cannot start), and no zombie left by rewards_close.
 *
 * Reward models go through scorer.h, tested on tiny checkpoints by
 * test_cmd_score.c; its model builder is file-private, so here only the
 * wiring is checked (a missing model is the scorer's error at open).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../train/loop/rewards.h"
#include "test.h"
#include "tests.h"

#define RD "build/trewards"

// ----------------------------------------------------------------------------
// final answers

void rewards_final_answer_cases(void) {
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"so \\boxed{\\frac{1}{2}} it is", "\\frac{1}{2}"},
        {"first \\boxed{1}, then \\boxed{2}.", "2"},
        {"$\\boxed{3}$", "3"},
        {"unclosed \\boxed{5 and\nAnswer: 6", "6"},
        {"Answer: 42.", "42"},
        {"blah\nANSWER: \"Paris\"!\nmore text", "Paris"},
        {"answer: 1\nAnswer: 2\n", "2"},
        {"**Answer:** `x = 3`", "x = 3"},
        {"Answer:\n\n  17\n", "17"},
        {"We compute.\nThe result is\n**12**\n\n", "12"},
        {"It's 'yes',", "It's 'yes"},
        {"'yes'", "yes"},
        {"", ""},
        {"\n  \n", ""},
    };
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewards_final_answer(cases[i].text, out, sizeof out);
        EXPECT(strcmp(out, cases[i].want) == 0, "case %zu: got '%s', want '%s'", i, out, cases[i].want);
    }
    rewards_final_answer("Answer: 123456", out, 4); /* at most n - 1 bytes */
    EXPECT(strcmp(out, "123") == 0, "cut: '%s'", out);
}

void rewards_answer_match_cases(void) {
    static const struct {
        const char *answer, *json;
        int want;
    } cases[] = {
        {"3.0", "3", 1},          {"3", "\"3.0\"", 1},          {"3.0000001", "3", 1},
        {"3.01", "3", 0},         {"1e3", "1000", 1},           {"2000001", "2000000", 1}, /* 1e-6 relative */
        {"three", "3", 0},        {"paris", "\"Paris\"", 1},    {"Paris", "\" paris \"", 1},
        {"Paris", "[\"London\", \"paris\"]", 1}, {"Rome", "[\"London\", \"Paris\"]", 0},
        {"7", "[\"x\", 7.0]", 1}, {"7", "true", 0},             {"", "\"\"", 1},
        {"-0.5", "\"-.5\"", 1},   {"12a", "\"12A\"", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
        LC_ASSERT(v);
        int got = rewards_answer_match(cases[i].answer, v);
        EXPECT(got == cases[i].want, "case %zu: '%s' vs %s: %d", i, cases[i].answer, cases[i].json, got);
        json_decref(v);
    }
}

// ----------------------------------------------------------------------------
// built-in checks, weights, penalty, clip, norm

void rewards_builtin(void) {
    json_t *line = json_pack("{s:i}", "gold", 42);
    RewardItem it[4] = {
        {line, "P", "so \\boxed{42}", 5, 1},  /* answer, regex, length */
        {line, "P", "so \\boxed{42}", 5, 0},  /* the same, cut by the length limit */
        {line, "P", "41", 50, 0},             /* nothing */
        {line, "P", "we get\n42", 50, 1},     /* answer only */
    };
    RewardOpts o = {0};
    o.answer = "gold";
    o.regex = "box(ed)?\\{[0-9]+\\}";
    o.length = "1:10";
    o.weights = "length=0.5,answer=2";
    o.missing_eos_penalty = 1;
    o.clip = 2;
    Rewards *r;
    Err e = {{0}};
    EXPECT(rewards_open(&r, &o, &e) == 0, "open: %s", e.msg);
    if (!r) return;
    EXPECT(rewards_count(r) == 3, "count %d", rewards_count(r));
    EXPECT(strcmp(rewards_name(r, 0), "answer") == 0 && strcmp(rewards_name(r, 1), "regex") == 0 &&
               strcmp(rewards_name(r, 2), "length") == 0, "names");
    EXPECT(rewards_weight(r, 0) == 2 && rewards_weight(r, 1) == 1 && rewards_weight(r, 2) == 0.5, "weights");
    double per[12], total[4];
    EXPECT(rewards_score(r, it, 4, per, total, &e) == 0, "score: %s", e.msg);
    static const double want_per[12] = {1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0};
    for (int i = 0; i < 12; i++) EXPECT(per[i] == want_per[i], "per[%d] = %g", i, per[i]);
    /* 3.5 clipped; 3.5 - 1 clipped (clip first would give 1); 0 - 1; 2 */
    static const double want[4] = {2, 2, -1, 2};
    for (int i = 0; i < 4; i++) EXPECT_NEAR(total[i], want[i], 1e-12);
    EXPECT(rewards_score(r, it, 0, NULL, total, &e) == 0, "n = 0");
    rewards_close(r);

    o.norm = 1; /* mean 1.25, std (Bessel) 1.5 */
    EXPECT(rewards_open(&r, &o, &e) == 0, "open: %s", e.msg);
    if (!r) return;
    EXPECT(rewards_score(r, it, 4, NULL, total, &e) == 0, "score: %s", e.msg);
    static const double want_norm[4] = {0.5, 0.5, -1.5, 0.5};
    for (int i = 0; i < 4; i++) EXPECT_NEAR(total[i], want_norm[i], 1e-8);
    EXPECT(rewards_score(r, it, 1, NULL, total, &e) == 0 && total[0] == 0, "one item normalises to 0");
    rewards_close(r);
    json_decref(line);
}

// ----------------------------------------------------------------------------
// bad input

/* No child left unreaped (the test binary starts no other children). */
static void expect_no_children(const char *what) {
    int rc = waitpid(-1, NULL, WNOHANG);
    EXPECT(rc == -1 && errno == ECHILD, "%s: a child left behind (waitpid %d)", what, rc);
}

static void open_fails(const RewardOpts *o, const char *want) {
    Rewards *r = (Rewards *)1;
    Err e = {{0}};
    int rc = rewards_open(&r, o, &e);
    EXPECT(rc == -1 && r == NULL, "opened, want '%s'", want);
    EXPECT(strcmp(e.msg, want) == 0, "got  '%s'\n      want '%s'", e.msg, want);
}

void rewards_errors(void) {
    RewardOpts o = {0};
    open_fails(&o, "no reward: give --reward-model, --reward-answer, --reward-regex, --reward-length or --reward-cmd");
    o.regex = "a(b";
    open_fails(&o, "--reward-regex: 'a(b': Unmatched ( or \\(");
    o.regex = NULL;
    o.length = "5:2";
    open_fails(&o, "--reward-length: expected MIN:MAX (token counts, 0 <= MIN <= MAX), got '5:2'");
    o.length = "10";
    open_fails(&o, "--reward-length: expected MIN:MAX (token counts, 0 <= MIN <= MAX), got '10'");
    o.length = NULL;
    o.answer = "gold";
    o.cmd = "cat";
    o.weights = "regex=2";
    open_fails(&o, "--reward-weights: no source named 'regex' (the sources: answer, cmd)");
    o.weights = "answer=x";
    open_fails(&o, "--reward-weights: 'x' is not a number (the weight of answer)");
    o.weights = "answer=1,answer=2";
    open_fails(&o, "--reward-weights: answer given twice");
    o.weights = "answer";
    open_fails(&o, "--reward-weights: expected name=WEIGHT, got 'answer'");
    o.weights = NULL;
    o.scorer.spec = RD "/no-such-model.h5"; /* the scorer's error, after the program started */
    Rewards *r;
    Err e = {{0}};
    EXPECT(rewards_open(&r, &o, &e) == -1 && strstr(e.msg, RD "/no-such-model.h5"), "missing model: '%s'", e.msg);
    expect_no_children("missing model");
    o.scorer.spec = NULL;
    o.cmd = NULL;

    EXPECT(rewards_open(&r, &o, &e) == 0, "open: %s", e.msg);
    if (!r) return;
    static const struct {
        const char *line, *want;
    } lines[] = {
        {"{\"prompt\": \"p\"}", "p.jsonl:3: no \"gold\" field (--reward-answer gold)"},
        {"{\"gold\": null}", "p.jsonl:3: \"gold\" must be a string, a number or a non-empty list of them (--reward-answer gold)"},
        {"{\"gold\": []}", "p.jsonl:3: \"gold\" must be a string, a number or a non-empty list of them (--reward-answer gold)"},
        {"{\"gold\": [1, {}]}", "p.jsonl:3: \"gold\" must be a string, a number or a non-empty list of them (--reward-answer gold)"},
        {"{\"gold\": [1, \"x\"]}", NULL},
        {"{\"gold\": \"x\"}", NULL},
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        json_t *l = json_loads(lines[i].line, 0, NULL);
        LC_ASSERT(l);
        e.msg[0] = 0;
        int rc = rewards_check_line(r, l, "p.jsonl:3", &e);
        if (lines[i].want)
            EXPECT(rc == -1 && strcmp(e.msg, lines[i].want) == 0, "line %zu: '%s'", i, e.msg);
        else
            EXPECT(rc == 0, "line %zu: %s", i, e.msg);
        if (i == 0) { /* rewards_score checks too */
            RewardItem it = {l, "p", "42", 1, 1};
            double t;
            EXPECT(rewards_score(r, &it, 1, NULL, &t, &e) == -1 &&
                   strcmp(e.msg, "item 0: no \"gold\" field (--reward-answer gold)") == 0, "score: '%s'", e.msg);
        }
        json_decref(l);
    }
    rewards_close(r);
}

// ----------------------------------------------------------------------------
// the reward program

static Rewards *open_cmd(const char *cmd, double timeout, Err *e) {
    RewardOpts o = {0};
    o.cmd = cmd;
    o.timeout = timeout;
    Rewards *r = NULL;
    return rewards_open(&r, &o, e) == 0 ? r : NULL;
}

/* n items of one line; the program's answers into v. */
static int run_cmd(Rewards *r, size_t n, double *v, Err *e) {
    json_t *line = json_pack("{s:s}", "id", "x");
    RewardItem *it = xmalloc(n * sizeof *it);
    for (size_t i = 0; i < n; i++) it[i] = (RewardItem){line, "P", "c", 1, 1};
    int rc = rewards_score(r, it, n, v, v + n, e);
    free(it);
    json_decref(line);
    return rc;
}

void rewards_cmd_ok(void) {
    mkdir("build", 0755);
    mkdir(RD, 0755);
    /* the input lines: a number from each field, so one answer checks them all */
    test_put(RD "/r.py", "import json, sys\n"
                         "for l in sys.stdin:\n"
                         "    o = json.loads(l)\n"
                         "    v = len(o['completion']) + 100 * (o['finish'] == 'stop') + 1000 * (o['prompt'] == 'TEXT')\n"
                         "    v += 10000 * (o.get('keep') == [1, 2])\n"
                         "    print(v, flush=True)\n");
    Err e = {{0}};
    Rewards *r = open_cmd("python3 " RD "/r.py", 10, &e);
    EXPECT(r, "open: %s", e.msg);
    if (!r) return;
    json_t *a = json_pack("{s:[i,i]}", "keep", 1, 2), *b = json_pack("{s:s}", "prompt", "own");
    RewardItem it[3] = {
        {a, "TEXT", "héllo\nworld", 2, 1}, /* "prompt" from prompt_text */
        {b, "TEXT", "", 0, 0},             /* its own "prompt" kept */
        {a, "TEXT", "ab\xff", 2, 0},       /* invalid UTF-8 sent as U+FFFD */
    };
    double per[3], total[3];
    EXPECT(rewards_score(r, it, 3, per, total, &e) == 0, "score: %s", e.msg);
    EXPECT(per[0] == 11111 && per[1] == 0 && per[2] == 11003, "answers %g %g %g", per[0], per[1], per[2]);
    EXPECT(total[0] == per[0], "total");
    rewards_close(r);
    json_decref(a);
    json_decref(b);
    expect_no_children("python");

    /* kept alive across calls (the count goes on), and 200 answers of 4 KB to
     * 200 lines of 4 KB: both pipes fill, which a blocking write deadlocks */
    test_put(RD "/big.py", "import sys\n"
                           "for i, l in enumerate(sys.stdin):\n"
                           "    print(str(i + 1) + ' ' * 4000, flush=True)\n");
    r = open_cmd("python3 " RD "/big.py", 10, &e); /* not awk: mawk waits for a block of input */
    EXPECT(r, "open: %s", e.msg);
    if (!r) return;
    char *big = xmalloc(4001);
    memset(big, 'x', 4000);
    big[4000] = 0;
    json_t *l = json_object();
    RewardItem *many = xmalloc(200 * sizeof *many);
    for (int i = 0; i < 200; i++) many[i] = (RewardItem){l, "P", big, 1, 1};
    double v[400];
    EXPECT(rewards_score(r, many, 2, v, v + 2, &e) == 0 && v[0] == 1 && v[1] == 2, "first call: %s", e.msg);
    EXPECT(rewards_score(r, many, 200, v, v + 200, &e) == 0, "big call: %s", e.msg);
    int ok = 1;
    for (int i = 0; i < 200; i++) ok &= v[i] == 3 + i;
    EXPECT(ok, "big call answers");
    rewards_close(r);
    free(many);
    free(big);
    json_decref(l);
    expect_no_children("big.py");
}

/* A program that fails: the call's error (after open succeeded, or open's
 * own when want_open is set and open caught it) is want, and so is the next
 * call's. */
static void cmd_fails(const char *cmd, size_t n, double timeout, const char *want, const char *want_open) {
    Err e = {{0}};
    char full[512], q[ERR_QUOTE_CAP];
    err_quote(q, sizeof q, cmd, strlen(cmd)); /* a backslash shows as \\ */
    snprintf(full, sizeof full, "--reward-cmd '%s': %s", q, want);
    Rewards *r = open_cmd(cmd, timeout, &e);
    if (!r) {
        char fo[512];
        snprintf(fo, sizeof fo, "--reward-cmd '%s': %s", q, want_open ? want_open : "(open must not fail)");
        EXPECT(strcmp(e.msg, fo) == 0, "open: got  '%s'\n      want '%s'", e.msg, fo);
        expect_no_children(cmd);
        return;
    }
    double v[16];
    EXPECT(run_cmd(r, n, v, &e) == -1 && strcmp(e.msg, full) == 0, "got  '%s'\n      want '%s'", e.msg, full);
    e.msg[0] = 0;
    EXPECT(run_cmd(r, n, v, &e) == -1 && strcmp(e.msg, full) == 0, "again: '%s'", e.msg);
    rewards_close(r);
    expect_no_children(cmd);
}

void rewards_cmd_errors(void) {
    cmd_fails("read l; echo 1; read l; echo 2; exit 1", 4, 10, "exited with status 1 after 2 of 4 answers", NULL);
    cmd_fails("read l; echo 1; kill -9 $$", 4, 10, "killed by signal 9 after 1 of 4 answers", NULL);
    cmd_fails("sleep 5", 2, 0.3, "no answer within 0.3 s (--reward-timeout)", NULL);
    cmd_fails("read l; echo 1; read l; echo abc; cat >/dev/null", 4, 10, "answer 2: 'abc' is not a number", NULL);
    cmd_fails("read l; echo inf; cat >/dev/null", 2, 10, "answer 1: 'inf' is not a finite number", NULL);
    cmd_fails("read a; read b; printf '1\\n2\\n3\\n'; cat >/dev/null", 2, 10, "printed 3 lines for 2 completions", NULL);
    cmd_fails("read a; read b; echo 1; exit 0", 2, 10, "exited with status 0 after 1 of 2 answers", NULL);
    cmd_fails("no_such_reward_program_x 2>/dev/null", 1, 10,
              "could not start (sh exited with status 127: no such program)",
              "could not start (sh exited with status 127: no such program)");
    cmd_fails("exit 3", 1, 10, "exited with status 3 after 0 of 1 answers", "exited with status 3 right after starting");

    /* a line after the grace wait: reported by the next call */
    const char *late = "read a; echo 1; sleep 0.2; echo 2; cat >/dev/null";
    Err e = {{0}};
    Rewards *r = open_cmd(late, 10, &e);
    EXPECT(r, "open: %s", e.msg);
    if (!r) return;
    double v[2];
    EXPECT(run_cmd(r, 1, v, &e) == 0 && v[0] == 1, "late: first call: %s", e.msg);
    usleep(400000);
    char want[256];
    snprintf(want, sizeof want, "--reward-cmd '%s': printed a line no completion asked for: '2'", late);
    EXPECT(run_cmd(r, 1, v, &e) == -1 && strcmp(e.msg, want) == 0, "late: '%s'", e.msg);
    rewards_close(r);
    expect_no_children(late);
}
