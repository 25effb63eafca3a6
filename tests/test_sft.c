/*
 * test_sft.c: SFT examples and rows (data/sft.h) and `llamac sft`.
 *
 * The masks are checked against the chat templates' own rendering (whose
 * ids test_chat.c checks against the published formats) for each data
 * format; packing against its invariants (every example once per epoch,
 * contiguous, positions restarting, targets = the next token where
 * trained, rows within T); the bad inputs by their one-line messages with
 * file and line; the command by a kill + resume that must give the same
 * bits as a straight run.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/loader.h"
#include "../data/sft.h"
#include "../model/ops.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tsft"

static SftOpts opts(int tpl) {
    SftOpts o = {SFT_AUTO, SFT_LOSS_AUTO, tpl, "text", 4096, 0, 1, NULL};
    return o;
}

static int load(SftSet *s, const char *jsonl, const Tokenizer *t, const SftOpts *o, Err *e) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    test_put(DIR "/x.jsonl", jsonl);
    return sft_load(s, DIR "/x.jsonl", t, o, e);
}

/* example i of s equals ids/mask of ct, with mask[0] forced to 0 */
static void expect_example(const SftSet *s, size_t i, const ChatTokens *ct, const char *what) {
    size_t n = s->off[i + 1] - s->off[i];
    EXPECT(n == ct->n, "%s: %zu tokens, expected %zu", what, n, ct->n);
    for (size_t k = 0; k < n && k < ct->n; k++) {
        EXPECT(s->ids[s->off[i] + k] == ct->ids[k], "%s: id %zu", what, k);
        int want = k > 0 && ct->mask[k];
        EXPECT(s->mask[s->off[i] + k] == want, "%s: mask %zu is %d, expected %d", what, k, s->mask[s->off[i] + k], want);
    }
}

void sft_formats(void) {
    Tokenizer t;
    test_chat_tokenizer(&t);
    Err e = {{0}};
    SftSet s;
    /* messages: the template's ids and assistant mask; one BOS */
    SftOpts o = opts(CHAT_LLAMA3);
    const char *conv = "{\"messages\": [{\"role\": \"system\", \"content\": \"You are helpful.\"}, "
                       "{\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": \"assistant\", \"content\": "
                       "\"Hello!\"}, {\"role\": \"user\", \"content\": \"How are you?\"}, {\"role\": \"assistant\", "
                       "\"content\": \"Fine.\"}]}\n";
    EXPECT(load(&s, conv, &t, &o, &e) == 0, "%s", e.msg);
    ChatMsg m[5] = {{CHAT_SYSTEM, "You are helpful.", 16}, {CHAT_USER, "Hi there", 8}, {CHAT_ASSISTANT, "Hello!", 6},
                    {CHAT_USER, "How are you?", 12}, {CHAT_ASSISTANT, "Fine.", 5}};
    ChatTokens ct = {0};
    LC_ASSERT(chat_encode(&t, CHAT_LLAMA3, m, 5, &ct, "x", &e) == 0);
    if (s.n == 1) expect_example(&s, 0, &ct, "messages");
    EXPECT(s.format == SFT_MESSAGES && s.n == 1 && s.ids[0] == t.bos && s.ids[1] != t.bos, "format / BOS");
    long trained = 0;
    for (size_t k = 0; k < ct.n; k++) trained += ct.mask[k];
    EXPECT(s.trained == trained && trained > 2, "trained %ld vs %ld", s.trained, trained);
    sft_free(&s);
    /* --loss all: everything but the first token */
    o.loss = SFT_LOSS_ALL;
    EXPECT(load(&s, conv, &t, &o, &e) == 0, "%s", e.msg);
    EXPECT(s.trained == (long)ct.n - 1, "loss all: %ld of %zu", s.trained, ct.n);
    sft_free(&s);

    /* conversational prompt-completion: the completion's tokens only */
    o = opts(CHAT_LLAMA3);
    EXPECT(load(&s, "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi there\"}], \"completion\": [{\"role\": "
                    "\"assistant\", \"content\": \"Hello!\"}]}\n", &t, &o, &e) == 0, "%s", e.msg);
    LC_ASSERT(chat_encode(&t, CHAT_LLAMA3, m + 1, 2, &ct, "x", &e) == 0);
    if (s.n == 1) expect_example(&s, 0, &ct, "prompt-completion (messages)");
    EXPECT(s.format == SFT_PROMPT, "format %d", s.format);
    sft_free(&s);

    /* alpaca with a template: one user turn (instruction, blank line, input), one assistant turn */
    EXPECT(load(&s, "{\"instruction\": \"Hi\", \"input\": \"there\", \"output\": \"Hello!\"}\n", &t, &o, &e) == 0,
           "%s", e.msg);
    ChatMsg am[2] = {{CHAT_USER, "Hi\n\nthere", 9}, {CHAT_ASSISTANT, "Hello!", 6}};
    LC_ASSERT(chat_encode(&t, CHAT_LLAMA3, am, 2, &ct, "x", &e) == 0);
    if (s.n == 1) expect_example(&s, 0, &ct, "alpaca");
    EXPECT(s.format == SFT_ALPACA, "format %d", s.format);
    sft_free(&s);

    /* string prompt-completion, no template: BOS, prompt, completion, EOS;
     * the completion and EOS trained */
    o = opts(-1);
    EXPECT(load(&s, "{\"prompt\": \"Hi there\", \"completion\": \" Hello!\"}\n", &t, &o, &e) == 0, "%s", e.msg);
    int32_t *ids = NULL;
    size_t cap = 0, np = tok_encode(&t, "Hi there", 8, &ids, &cap);
    int32_t pids[64];
    memcpy(pids, ids, np * sizeof *ids);
    size_t nf = tok_encode(&t, "Hi there Hello!", 15, &ids, &cap);
    size_t n = s.n ? s.off[1] : 0;
    EXPECT(n == nf + 2 && s.ids[0] == t.bos && s.ids[n - 1] == t.eos, "plain pair: %zu tokens, want %zu", n, nf + 2);
    for (size_t k = 1; k + 1 < n && k - 1 < nf; k++) {
        EXPECT(s.ids[k] == ids[k - 1], "plain pair id %zu", k);
        int in_prompt = k - 1 < np && pids[k - 1] == ids[k - 1];
        EXPECT(s.mask[k] == !in_prompt, "plain pair mask %zu", k);
    }
    EXPECT(n && s.mask[n - 1] == 1 && s.mask[0] == 0, "EOS trained, BOS not");
    sft_free(&s);

    /* text: BOS + ids + EOS, all trained but BOS */
    EXPECT(load(&s, "{\"text\": \"Hi there\"}\n", &t, &o, &e) == 0, "%s", e.msg);
    EXPECT(s.format == SFT_TEXT && s.n == 1 && s.off[1] == np + 2 && s.trained == (long)np + 1, "text");
    sft_free(&s);

    /* Llama 3.1's system block takes its date from the options, never the clock */
    o = opts(CHAT_LLAMA31);
    o.date = "01 Dec 2026";
    EXPECT(load(&s, conv, &t, &o, &e) == 0, "%s", e.msg);
    char *text = NULL;
    size_t tc = 0, tl = s.n ? tok_decode(&t, s.ids, s.off[1], &text, &tc) : 0;
    EXPECT(tl && memmem(text, tl, "Today Date: 01 Dec 2026\n\nYou are helpful.", 41), "llama3.1 date: %.*s", (int)tl, text);
    free(text);
    sft_free(&s);

    /* truncation and dropping are counted */
    o = opts(CHAT_LLAMA3);
    LC_ASSERT(chat_encode(&t, CHAT_LLAMA3, m, 3, &ct, "x", &e) == 0); /* up to the first reply */
    o.max_len = (int)ct.n + 2;
    EXPECT(load(&s, conv, &t, &o, &e) == 0, "%s", e.msg);
    EXPECT(s.truncated == 1 && s.n == 1 && s.off[s.n] == (size_t)o.max_len, "truncated %ld, %zu tokens", s.truncated,
           s.off[s.n]);
    sft_free(&s);
    o.drop_long = 1;
    char two[4096];
    snprintf(two, sizeof two, "%s{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", "
                              "\"content\": \"Fine.\"}]}\n", conv);
    EXPECT(load(&s, two, &t, &o, &e) == 0, "%s", e.msg);
    EXPECT(s.dropped_long == 1 && s.n == 1, "dropped %ld, kept %zu", s.dropped_long, s.n);
    sft_free(&s);
    free(ids);
    chat_tokens_free(&ct);
    tok_free(&t);
}

void sft_packing(void) {
    /* a synthetic set: 300 examples of 3..60 tokens, ids encode (example, index) */
    SftSet s;
    memset(&s, 0, sizeof s);
    size_t n = 300;
    s.off = xmalloc((n + 1) * sizeof *s.off);
    s.off[0] = 0;
    Rng r;
    rng_seed(&r, 9);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += 3 + rng_u64(&r) % 58, s.off[i + 1] = total;
    s.ids = xmalloc(total * sizeof *s.ids);
    s.mask = xmalloc(total);
    for (size_t i = 0; i < n; i++)
        for (size_t k = s.off[i]; k < s.off[i + 1]; k++)
            s.ids[k] = (int32_t)(i * 100 + (k - s.off[i])), s.mask[k] = (k - s.off[i]) % 3 != 0;
    s.n = n;
    s.ntok = total;
    int B = 4, T = 64;
    SftRows rows;
    Err e = {{0}};
    EXPECT(sft_rows_init(&rows, &s, B, T, 1, 7, 5, "synthetic", &e) == 0, "%s", e.msg);
    size_t slots = total - n, lower = (slots + T - 1) / T;
    EXPECT(rows.nrows >= lower && rows.nrows <= lower + lower / 10 + 1,
           "best-fit-decreasing used %zu rows for %zu slots of %d (lower bound %zu)", rows.nrows, slots, T, lower);
    size_t nb = sft_rows_batches(&rows);
    int32_t *tok = xmalloc((size_t)B * T * sizeof *tok), *tgt = xmalloc((size_t)B * T * sizeof *tgt);
    int32_t *pos = xmalloc((size_t)B * T * sizeof *pos);
    int *seen = xcalloc(n, sizeof *seen);
    uint64_t order0[512];
    for (int epoch = 0; epoch < 2; epoch++) {
        for (size_t b = 0; b < nb; b++) {
            if (epoch == 0 && b < 512) order0[b] = rows.order[rows.pos];
            sft_rows_next(&rows, tok, tgt, pos);
            for (int row = 0; row < B; row++)
                for (int t = 0; t < T; t++) {
                    size_t q = (size_t)row * T + t;
                    if (tok[q] == 7 && tgt[q] == LC_IGNORE) continue; /* padding */
                    size_t i = (size_t)tok[q] / 100, j = (size_t)tok[q] % 100;
                    EXPECT(pos[q] == (int)j, "row %d slot %d: position %d, the token's index %zu", row, t, pos[q], j);
                    size_t len = s.off[i + 1] - s.off[i];
                    int32_t want = s.mask[s.off[i] + j + 1] ? (int32_t)(i * 100 + j + 1) : LC_IGNORE;
                    EXPECT(j + 1 < len && tgt[q] == want, "row %d slot %d: target %d, want %d", row, t, tgt[q], want);
                    if (j == 0) seen[i]++;
                }
        }
        EXPECT(rows.epoch == (uint64_t)epoch + 1 && rows.pos == 0, "epoch wrap: %llu %llu",
               (unsigned long long)rows.epoch, (unsigned long long)rows.pos);
    }
    size_t used_rows = nb * (size_t)B, missing = 0;
    for (size_t i = 0; i < n; i++) missing += seen[i] == 0;
    EXPECT(used_rows < rows.nrows || missing == 0, "%zu examples never seen", missing);
    /* determinism and seek: batch 3 of epoch 1 again */
    EXPECT(sft_rows_seek(&rows, 1, 3 * (uint64_t)B, &e) == 0, "%s", e.msg);
    int32_t *tok2 = xmalloc((size_t)B * T * sizeof *tok2);
    sft_rows_next(&rows, tok2, tgt, pos);
    SftRows again;
    EXPECT(sft_rows_init(&again, &s, B, T, 1, 7, 5, "synthetic", &e) == 0, "%s", e.msg);
    for (int k = 0; k < (int)nb + 4; k++) sft_rows_next(&again, tok, tgt, pos);
    EXPECT(memcmp(tok, tok2, (size_t)B * T * sizeof *tok) == 0, "seek did not give the same batch");
    EXPECT(sft_rows_seek(&rows, 0, 1, &e) == -1 && strstr(e.msg, "not the start of a batch"), "seek check: %s", e.msg);
    /* epochs differ in order */
    int same = 1;
    loader_permute(again.order, again.nrows, 5, 1);
    for (size_t b = 0; b < nb && b < 512; b++) same &= again.order[b * (size_t)B] == order0[b];
    EXPECT(!same, "epoch 1 visits rows in epoch 0's order");
    /* without packing: one example per row */
    sft_rows_free(&again);
    EXPECT(sft_rows_init(&again, &s, B, T, 0, 7, 5, "synthetic", &e) == 0 && again.nrows == n, "unpacked rows");
    sft_rows_free(&again);
    EXPECT(sft_rows_init(&again, &s, 400, T, 0, 7, 5, "synthetic", &e) == -1 && strstr(e.msg, "fewer than one batch"),
           "too few rows: %s", e.msg);
    sft_rows_free(&rows);
    free(tok); free(tok2); free(tgt); free(pos); free(seen);
    sft_free(&s);
}

void sft_errors(void) {
    Tokenizer t;
    test_chat_tokenizer(&t);
    struct {
        const char *jsonl;
        int tpl;
        const char *want;
    } cases[] = {
        {"{\"messages\": []}\n{not json\n", CHAT_LLAMA3, DIR "/x.jsonl:1: no messages"},
        {"\n{not json\n", CHAT_LLAMA3, DIR "/x.jsonl:2: not valid JSON"},
        {"[1, 2]\n", CHAT_LLAMA3, DIR "/x.jsonl:1: not a JSON object"},
        {"{\"foo\": 1}\n", CHAT_LLAMA3, DIR "/x.jsonl:1: cannot tell the format"},
        {"{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n", CHAT_LLAMA3, "unknown role 'bot'"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n", CHAT_LLAMA3, "no assistant message"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n",
         CHAT_LLAMA3, "message 1 (user) has empty content"},
        {"{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}, {\"role\": \"user\", \"content\": \"y\"}]}\n",
         CHAT_LLAMA2, "llama2 needs user and assistant turns alternating"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n",
         -1, "chat messages need a chat template"},
        {"{\"prompt\": \"x\"}\n", CHAT_LLAMA3, "cannot tell the format"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n",
         CHAT_CHATML, DIR "/x.jsonl:1: the chatml template needs the token <|im_start|>"},
        {"{\"prompt\": \"x\", \"completion\": [{\"role\": \"assistant\", \"content\": \"y\"}]}\n", CHAT_LLAMA3,
         "must both be strings or both message lists"},
        {"{\"prompt\": \"x\", \"completion\": \"\"}\n", CHAT_LLAMA3, "empty \"completion\""},
        {"{\"instruction\": 3, \"output\": \"y\"}\n", CHAT_LLAMA3, "not a string: \"instruction\""},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n"
         "{\"messages\": 5}\n", CHAT_LLAMA3, DIR "/x.jsonl:2: \"messages\": not a list of messages"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        SftOpts o = opts(cases[i].tpl);
        SftSet s;
        Err e = {{0}};
        int rc = load(&s, cases[i].jsonl, &t, &o, &e);
        EXPECT(rc == -1 && strstr(e.msg, cases[i].want) && !strchr(e.msg, '\n'), "case %zu: '%s', want '%s'", i,
               e.msg, cases[i].want);
        if (!rc) sft_free(&s);
    }
    /* every prompt longer than --max-length: nothing left, said so */
    SftOpts o = opts(CHAT_LLAMA3);
    o.max_len = 4;
    SftSet s;
    Err e = {{0}};
    EXPECT(load(&s, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi there how are you\"}, {\"role\": "
                    "\"assistant\", \"content\": \"Fine.\"}]}\n", &t, &o, &e) == -1 &&
           strstr(e.msg, "no usable example") && strstr(e.msg, "1 with no trained token"), "%s", e.msg);
    tok_free(&t);
}

// ----------------------------------------------------------------------------
// the command

#define STEPS 16
/* big enough that a step takes tens of milliseconds, so the kill lands mid-run */
#define BASE_SHAPE "--preset tiny --set dim=128 --set hidden=384 --set n_layers=4 --batch 2 --seq 32"
static char model[512], tokp[512];

/* a tiny pretrained model, its tokenizer and a chat file */
static void need_run_inputs(void) {
    static int done;
    if (done) return;
    done = 1;
    Tokenizer t;
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    /* a copy in a directory of its own: test_chat.c puts a tokenizer_config.json
     * (with a chat template sft would pick up) beside the original */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' " DIR "/own.tok", test_chat_tokenizer(&t));
    LC_ASSERT(system(cmd) == 0);
    snprintf(tokp, sizeof tokp, DIR "/own.tok");
    FILE *f = fopen(DIR "/chat.jsonl", "wb"), *g = fopen(DIR "/other.jsonl", "wb");
    LC_ASSERT(f && g);
    static const char *w[] = {"Hi", "there", "you", "are", "helpful", "Fine", "How", "Hello"};
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 200; i++) {
        char q[256] = "", a[256] = "";
        int k = 2 + (int)(rng_u64(&r) % 6);
        for (int j = 0; j < k; j++) {
            const char *x = w[rng_u64(&r) % 8], *y = w[rng_u64(&r) % 8];
            strcat(q, x), strcat(q, " "), strcat(a, y), strcat(a, " ");
        }
        fprintf(i % 2 ? f : f, "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, {\"role\": \"assistant\", "
                               "\"content\": \"%s\"}]}\n", q, a);
        if (i < 100) fprintf(g, "{\"prompt\": \"%s\", \"completion\": \"%s\"}\n", q, a);
    }
    fclose(f);
    fclose(g);
    tok_free(&t);
    /* the base: a few pretraining steps on a shard of the same text */
    int rc = test_llamac("tokenize encode --tokenizer %s --input " DIR "/chat.jsonl --field messages --out " DIR "/s.bin",
                         tokp);
    if (rc) { /* messages is not a string field: encode the raw file instead */
        rc = test_llamac("tokenize encode --tokenizer %s --input " DIR "/other.jsonl --field prompt --out " DIR "/s.bin",
                         tokp);
    }
    EXPECT(rc == 0, "encode: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " BASE_SHAPE " --steps 2 --ckpt-dir " DIR "/pck --out " DIR
                     "/base.h5 --peak-gflops 1");
    EXPECT(rc == 0, "base model: %s", test_err);
    snprintf(model, sizeof model, DIR "/base.h5");
}

#define SFT_ARGS "sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --template llama3 --batch 8 --seq 128 " \
                 "--steps 16 --lr 3e-3 --warmup 2 --seed 4 --peak-gflops 1 --save-every 4 --keep 2 --tokenizer "

void sft_resume(void) {
    need_run_inputs();
    system("rm -rf " DIR "/A " DIR "/A.jsonl " DIR "/B " DIR "/B.jsonl");
    int rc = test_llamac(SFT_ARGS "%s --val " DIR "/chat.jsonl --val-every 8 --ckpt-dir " DIR "/A --metrics " DIR
                         "/A.jsonl --out " DIR "/A.h5", tokp);
    EXPECT(rc == 0, "straight sft: %s", test_err);
    EXPECT(strstr(test_out, "sft train: " DIR "/chat.jsonl, messages format: 200 examples"), "start-up: %s", test_out);
    EXPECT(strstr(test_out, "val loss"), "no validation: %s", test_out);
    char args[2048];
    snprintf(args, sizeof args, SFT_ARGS "%s --val " DIR "/chat.jsonl --val-every 8 --ckpt-dir " DIR "/B --metrics "
             DIR "/B.jsonl --out " DIR "/B.h5", tokp);
    ckpt_test_kill_resume(NULL, args, DIR "/B/step-00000008.h5", DIR "/A/step-00000016.h5", DIR "/B/step-00000016.h5",
                          DIR "/A.jsonl", DIR "/B.jsonl", STEPS, 0);
    /* resuming on other data or another model is refused */
    rc = test_llamac(SFT_ARGS "%s --data " DIR "/other.jsonl --ckpt-dir " DIR "/A --out " DIR "/C.h5 --resume " DIR
                     "/A/step-00000016.h5 --steps 20", tokp);
    EXPECT(rc == 1 && strstr(test_err, "trained on other data than " DIR "/other.jsonl"), "other data: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " BASE_SHAPE " --steps 2 --seed 9 --ckpt-dir " DIR "/pck2 --out "
                     DIR "/base2.h5 --peak-gflops 1");
    EXPECT(rc == 0, "second base: %s", test_err);
    char other[2048];
    snprintf(other, sizeof other, "%s", SFT_ARGS);
    char *p = strstr(other, "base.h5");
    memcpy(p, "bas2", 4); /* base.h5 -> bas2.h5 */
    rename(DIR "/base2.h5", DIR "/bas2.h5");
    rc = test_llamac("%s%s --ckpt-dir " DIR "/A --out " DIR "/C.h5 --resume " DIR "/A/step-00000016.h5 --steps 20",
                     other, tokp);
    EXPECT(rc == 1 && strstr(test_err, "fine-tuned from another model than " DIR "/bas2.h5"), "other model: %s", test_err);
    EXPECT(access(DIR "/C.h5", F_OK) != 0, "a failed run wrote its --out");
}

/* A LoRA run on each kind of base a user has (an llamac checkpoint, a Hugging
 * Face directory, a GGUF file), killed with SIGKILL mid-run and resumed:
 * the same adapters, moments and losses as a straight run. The checkpoints
 * name their base by path; a GGUF base could not be resumed once (issue 20). */
void sft_lora_resume_bases(void) {
    need_run_inputs();
    char bases[3][256];
    ckpt_test_bases(DIR, DIR "/base.h5", bases);
    for (int k = 0; k < 3; k++) {
        char a[2048], b[2048], ck[256], ca[256], cb[256], ma[256], mb[256];
        snprintf(ma, sizeof ma, DIR "/rbA%d.jsonl", k);
        snprintf(mb, sizeof mb, DIR "/rbB%d.jsonl", k);
#define RB_ARGS "sft --model %s --data " DIR "/chat.jsonl --template llama3 --batch 8 --seq 128 --steps 16 --lr 3e-3 " \
                "--warmup 2 --seed 4 --peak-gflops 1 --save-every 4 --keep 2 --tokenizer %s --lora-r 4 " \
                "--lora-dropout 0.1 --ckpt-dir " DIR "/rb%c%d --adapter-out " DIR "/rbad --metrics %s"
        snprintf(a, sizeof a, RB_ARGS, bases[k], tokp, 'A', k, ma);
        snprintf(b, sizeof b, RB_ARGS, bases[k], tokp, 'B', k, mb);
        snprintf(ck, sizeof ck, DIR "/rbB%d/step-00000008.h5", k);
        snprintf(ca, sizeof ca, DIR "/rbA%d/step-00000016.h5", k);
        snprintf(cb, sizeof cb, DIR "/rbB%d/step-00000016.h5", k);
        ckpt_test_kill_resume(a, b, ck, ca, cb, ma, mb, STEPS, 0);
    }
}

/* QLoRA on every kind of base: a GGUF's Q8_0 kept, a checkpoint quantised
 * to NF4 at load, a Hugging Face directory to Q8_0, each killed mid-run and
 * resumed: the same adapters, moments and losses
 * as a straight run; a checkpoint resumed on the base held another way is
 * refused. */
void sft_qlora_resume(void) {
    need_run_inputs();
    system("rm -rf " DIR "/qrA* " DIR "/qrB* " DIR "/qrC* " DIR "/qrad");
    int rc = test_llamac("quantize " DIR "/base.h5 " DIR "/base_q8.gguf --type q8_0 --force");
    EXPECT(rc == 0, "quantize: %s", test_err);
    rc = test_llamac("convert " DIR "/base.h5 " DIR "/qr_hf --force");
    EXPECT(rc == 0, "convert: %s", test_err);
    static const struct {
        const char *model, *how;
    } runs[] = {{DIR "/base_q8.gguf", "keep"}, {DIR "/base.h5", "nf4"}, {DIR "/qr_hf", "q8_0"}};
    for (int k = 0; k < 3; k++) {
        char a[2048], b[2048], ck[256], ca[256], cb[256], ma[256], mb[256];
        snprintf(ma, sizeof ma, DIR "/qrA%d.jsonl", k);
        snprintf(mb, sizeof mb, DIR "/qrB%d.jsonl", k);
#define QR_ARGS "sft --model %s --data " DIR "/chat.jsonl --template llama3 --batch 8 --seq 128 --steps 16 --lr 3e-3 " \
                "--warmup 2 --seed 4 --peak-gflops 1 --save-every 4 --keep 2 --tokenizer %s --lora-r 4 " \
                "--lora-dropout 0.1 --base-quant %s --recompute 1 --ckpt-dir " DIR "/qr%c%d --adapter-out " DIR \
                "/qrad --metrics %s"
        snprintf(a, sizeof a, QR_ARGS, runs[k].model, tokp, runs[k].how, 'A', k, ma);
        snprintf(b, sizeof b, QR_ARGS, runs[k].model, tokp, runs[k].how, 'B', k, mb);
        snprintf(ck, sizeof ck, DIR "/qrB%d/step-00000008.h5", k);
        snprintf(ca, sizeof ca, DIR "/qrA%d/step-00000016.h5", k);
        snprintf(cb, sizeof cb, DIR "/qrB%d/step-00000016.h5", k);
        ckpt_test_kill_resume(a, b, ck, ca, cb, ma, mb, STEPS, 0);
    }
    rc = test_llamac(QR_ARGS " --resume " DIR "/qrA1/step-00000016.h5 --steps 20", DIR "/base.h5", tokp, "q8_0", 'C',
                     1, DIR "/qrC.jsonl");
    EXPECT(rc == 1 && strstr(test_err, "trained on a base held as --base-quant nf4, this run's is held as --base-quant "
                                       "q8_0"), "another quantisation: %s", test_err);
}

/* LoRA SFT: killed and resumed, the same adapters, moments and losses as a
 * straight run; the PEFT adapter written at the end */
void sft_lora_resume(void) {
    need_run_inputs();
    system("rm -rf " DIR "/LA " DIR "/LA.jsonl " DIR "/LB " DIR "/LB.jsonl " DIR "/adA " DIR "/adB");
#define LORA_ARGS " --lora-r 4 --lora-targets all-linear --lora-dropout 0.1 --val " DIR "/chat.jsonl --val-every 8 "
    int rc = test_llamac(SFT_ARGS "%s" LORA_ARGS "--ckpt-dir " DIR "/LA --metrics " DIR "/LA.jsonl --adapter-out " DIR
                         "/adA --merged-out " DIR "/LA.h5", tokp);
    EXPECT(rc == 0, "straight LoRA sft: %s", test_err);
    EXPECT(strstr(test_out, "LoRA r 4, alpha 4, dropout 0.1 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"),
           "start-up: %s", test_out);
    EXPECT(access(DIR "/adA/adapter_config.json", F_OK) == 0 && access(DIR "/adA/adapter_model.safetensors", F_OK) == 0,
           "no PEFT adapter written");
    EXPECT(access(DIR "/LA.h5", F_OK) == 0, "no merged model written");
    char args[2048];
    snprintf(args, sizeof args, SFT_ARGS "%s" LORA_ARGS "--ckpt-dir " DIR "/LB --metrics " DIR "/LB.jsonl --adapter-out "
             DIR "/adB", tokp);
    ckpt_test_kill_resume(NULL, args, DIR "/LB/step-00000008.h5", DIR "/LA/step-00000016.h5",
                          DIR "/LB/step-00000016.h5", DIR "/LA.jsonl", DIR "/LB.jsonl", STEPS, 0);
    /* a full run's checkpoint does not resume a LoRA run */
    rc = test_llamac(SFT_ARGS "%s" LORA_ARGS "--ckpt-dir " DIR "/A --resume " DIR "/A/step-00000016.h5 --steps 20", tokp);
    EXPECT(rc == 1 && strstr(test_err, "a full training run's checkpoint, this run trains LoRA adapters"), "%s", test_err);
    /* the adapter and the merged model give the same logits */
    rc = test_llamac("logits --model " DIR "/base.h5 --adapter " DIR "/adA --tokens 5,6,7,8,9 --out " DIR "/la.f32");
    EXPECT(rc == 0, "logits --adapter: %s", test_err);
    rc = test_llamac("logits --model " DIR "/LA.h5 --tokens 5,6,7,8,9 --out " DIR "/lm.f32");
    EXPECT(rc == 0, "logits merged: %s", test_err);
    FILE *fa = fopen(DIR "/la.f32", "rb"), *fb = fopen(DIR "/lm.f32", "rb");
    float xa[4096], xb[4096];
    size_t na = fa ? fread(xa, 4, 4096, fa) : 0, nb = fb ? fread(xb, 4, 4096, fb) : 0;
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    double worst = 0;
    for (size_t i = 0; i < na && i < nb; i++) worst = fmax(worst, fabs((double)xa[i] - xb[i]));
    EXPECT(na > 0 && na == nb && worst < 1e-4, "adapter vs merged logits: %zu vs %zu values, max diff %g", na, nb, worst);
    /* generate --adapter: the merged model's greedy text */
    char ga[TEST_OUT_MAX];
    rc = test_llamac("generate --model " DIR "/base.h5 --adapter " DIR "/adA --tokenizer %s --prompt 'Hi there' "
                     "--temperature 0 --max-tokens 12", tokp);
    EXPECT(rc == 0, "generate --adapter: %s", test_err);
    snprintf(ga, sizeof ga, "%s", test_out);
    rc = test_llamac("generate --model " DIR "/LA.h5 --tokenizer %s --prompt 'Hi there' --temperature 0 --max-tokens 12",
                     tokp);
    EXPECT(rc == 0 && strcmp(ga, test_out) == 0, "generate: adapter '%s' vs merged '%s'", ga, test_out);
    rc = test_llamac("generate --model " DIR "/base.h5 --adapter " DIR "/nope --tokenizer %s --prompt hi", tokp);
    EXPECT(rc == 1 && strstr(test_err, DIR "/nope"), "missing adapter: %s", test_err);
}

void sft_cli_errors(void) {
    need_run_inputs();
    static const TestCliCase cases[] = {
        {"sft --data x.jsonl --tokenizer t", "--model: required"},
        {"sft --model " DIR "/base.h5 --tokenizer t", "--data: required"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl", "--tokenizer: required"},
        {"sft --model " DIR "/nope.h5 --data " DIR "/chat.jsonl --tokenizer t", DIR "/nope.h5"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --tokenizer %s --template llama9",
         "--template: unknown template 'llama9'"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --tokenizer %s --format csv", "--format: unknown format 'csv'"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --tokenizer %s --loss some", "--loss: unknown loss mask"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --tokenizer %s --truncation cut", "--truncation: expected keep or drop"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --tokenizer %s --seq 32 --max-length 40",
         "--max-length: 40 exceeds --seq + 1 = 33"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --tokenizer %s", "chat messages need a chat template"},
        {"sft --model " DIR "/base.h5 --data " DIR "/missing.jsonl --tokenizer %s --template llama3", DIR "/missing.jsonl: cannot open"},
        {"sft --model " DIR "/base.h5 --data " DIR "/chat.jsonl --tokenizer %s --template llama3 --seq 64 --batch 4000",
         "fewer than one batch of 4000"},
    };
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], tokp, " --out " DIR "/E.h5 --ckpt-dir " DIR "/E");
    EXPECT(access(DIR "/E.h5", F_OK) != 0, "a failed run wrote its --out");
}
