/*
 * test_chat.c: the Llama 2 and Llama 3 chat templates (data/chat.h). The
 * expected ids are spelled out from the published formats as one string
 * per turn (special tokens written by name and parsed by
 * tok_encode_special, or <s> / </s> ids placed by hand), for a two-turn
 * conversation with a system prompt, with the assistant mask; then the
 * JSONL reader's and the CLI's bad inputs. Runs on llamac's own BPE
 * (trained here), which has Llama 3's special tokens, so no Python.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/chat.h"
#include "test.h"
#include "tests.h"

static char dir[256];

static const char *at(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void put(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    fputs(s, f);
    fclose(f);
}

static void remove_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "test_chat: could not remove %s\n", dir);
}

/* llamac's BPE trained on a little chat-like text, saved and loaded as a Tokenizer */
static void own_tokenizer(Tokenizer *t) {
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/llamac_test_%d_chat", (int)getpid());
        mkdir(dir, 0755);
        atexit(remove_dir);
    }
    static char text[30000];
    static const char *w[] = {"You ", "are ", "helpful. ", "Hi ", "there ", "[INST] ", "[/INST] ",
                              "<<SYS>>\n", "\n<</SYS>>\n\n", "Hello! ", "How ", "you? ", "Fine. ",
                              "system ", "user ", "assistant ", "\n\n"};
    Rng r;
    rng_seed(&r, 5);
    size_t n = 0;
    while (n + 16 < sizeof text) {
        const char *x = w[rng_u64(&r) % 17];
        memcpy(text + n, x, strlen(x));
        n += strlen(x);
    }
    const char *texts[1] = {text};
    size_t lens[1] = {n};
    Bpe b;
    Err e = {{0}};
    LC_ASSERT(bpe_train(&b, texts, lens, 1, 500, &e) == 0);
    LC_ASSERT(bpe_save(&b, at("own.tok"), &e) == 0);
    bpe_free(&b);
    LC_ASSERT(tok_load(t, at("own.tok"), &e) == 0);
}

/* expected: ids + mask built piece by piece */
typedef struct {
    int32_t ids[4096];
    uint8_t mask[4096];
    int n;
} Want;

static void want_text(Want *w, const Tokenizer *t, const char *s, int special, int mask) {
    int32_t *ids = NULL;
    size_t cap = 0, k = special ? tok_encode_special(t, s, strlen(s), &ids, &cap)
                                : tok_encode(t, s, strlen(s), &ids, &cap);
    LC_ASSERT(w->n + (int)k < 4096);
    for (size_t i = 0; i < k; i++) w->ids[w->n] = ids[i], w->mask[w->n++] = (uint8_t)mask;
    free(ids);
}

static void want_id(Want *w, int id, int mask) {
    w->ids[w->n] = id;
    w->mask[w->n++] = (uint8_t)mask;
}

static void check(const ChatTokens *got, const Want *w, const char *what) {
    int same = got->n == (size_t)w->n;
    for (int i = 0; same && i < w->n; i++) same = got->ids[i] == w->ids[i] && got->mask[i] == w->mask[i];
    EXPECT(same, "%s: %zu ids, expected %d", what, got->n, w->n);
    if (!same)
        for (int i = 0; i < w->n && i < (int)got->n; i++)
            if (got->ids[i] != w->ids[i] || got->mask[i] != w->mask[i]) {
                printf("    first difference at %d: got %d/%d, expected %d/%d\n", i, got->ids[i],
                       got->mask[i], w->ids[i], w->mask[i]);
                break;
            }
}

/* the conversation: contents with whitespace to strip and special-token text */
static const ChatMsg conv[5] = {
    {CHAT_SYSTEM, "You are helpful.", 16},
    {CHAT_USER, "  Hi there <|eot_id|>\n", 22},
    {CHAT_ASSISTANT, "Hello! ", 7},
    {CHAT_USER, "How are you?", 12},
    {CHAT_ASSISTANT, "\tFine. [/INST]", 14},
};

void chat_llama3(void) {
    Tokenizer t;
    own_tokenizer(&t);
    ChatTokens ct = {0};
    Err e = {{0}};
    EXPECT(chat_encode(&t, CHAT_LLAMA3, conv, 5, &ct, "conv", &e) == 0, "%s", e.msg);
    /* the published format, turn by turn; user special text stays text */
    Want w = {.n = 0};
    want_text(&w, &t, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                      "You are helpful.<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\n", 1, 0);
    want_text(&w, &t, "Hi there <|eot_id|>", 0, 0);
    want_text(&w, &t, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", 1, 0);
    want_text(&w, &t, "Hello!<|eot_id|>", 1, 1);
    want_text(&w, &t, "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n", 1, 0);
    want_text(&w, &t, "Fine. [/INST]<|eot_id|>", 1, 1);
    check(&ct, &w, "llama3");
    EXPECT(ct.ids[0] == t.bos && ct.ids[ct.n - 1] == t.eot && ct.mask[ct.n - 1] == 1, "llama3 ends");
    /* ending with a user turn: the assistant header follows, unmasked */
    EXPECT(chat_encode(&t, CHAT_LLAMA3, conv, 4, &ct, "conv", &e) == 0, "%s", e.msg);
    Want p = {.n = 0};
    memcpy(p.ids, w.ids, sizeof w.ids);
    memcpy(p.mask, w.mask, sizeof w.mask);
    p.n = w.n;
    int32_t *ids = NULL;
    size_t cap = 0, k = tok_encode_special(&t, "Fine. [/INST]<|eot_id|>", 23, &ids, &cap);
    p.n -= (int)k;
    free(ids);
    check(&ct, &p, "llama3 prompt");
    chat_tokens_free(&ct);
    tok_free(&t);
}

void chat_llama2(void) {
    Tokenizer t;
    own_tokenizer(&t);
    ChatTokens ct = {0};
    Err e = {{0}};
    EXPECT(chat_encode(&t, CHAT_LLAMA2, conv, 5, &ct, "conv", &e) == 0, "%s", e.msg);
    /* <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {reply} </s><s>[INST] ...;
     * Meta strips the user text only after the system block is put before it */
    const char *p1 = "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\n  Hi there <|eot_id|> [/INST]";
    const char *p2 = "[INST] How are you? [/INST]";
    Want w = {.n = 0}, a = {.n = 0};
    want_id(&w, t.bos, 0);
    want_text(&w, &t, p1, 0, 0);
    int n1 = w.n;
    want_text(&a, &t, "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\n  Hi there <|eot_id|> [/INST] Hello! ", 0, 1);
    EXPECT(memcmp(a.ids, w.ids + 1, (size_t)(n1 - 1) * sizeof *a.ids) == 0, "prompt ids not a prefix of the turn's");
    for (int i = n1 - 1; i < a.n; i++) want_id(&w, a.ids[i], 1);
    want_id(&w, t.eos, 1);
    want_id(&w, t.bos, 0);
    int s2 = w.n;
    want_text(&w, &t, p2, 0, 0);
    int n2 = w.n - s2;
    a.n = 0;
    want_text(&a, &t, "[INST] How are you? [/INST] Fine. [/INST] ", 0, 1);
    for (int i = n2; i < a.n; i++) want_id(&w, a.ids[i], 1);
    want_id(&w, t.eos, 1);
    check(&ct, &w, "llama2");
    /* without the last reply: <s> + the prompt, no </s> */
    EXPECT(chat_encode(&t, CHAT_LLAMA2, conv, 4, &ct, "conv", &e) == 0, "%s", e.msg);
    w.n = s2 + n2;
    check(&ct, &w, "llama2 prompt");
    /* order errors */
    ChatMsg bad[2] = {{CHAT_ASSISTANT, "x", 1}, {CHAT_USER, "y", 1}};
    EXPECT(chat_encode(&t, CHAT_LLAMA2, bad, 2, &ct, "f:3", &e) == -1 &&
           strstr(e.msg, "f:3: message 1 is assistant"), "%s", e.msg);
    ChatMsg two_sys[2] = {{CHAT_SYSTEM, "x", 1}, {CHAT_SYSTEM, "y", 1}};
    EXPECT(chat_encode(&t, CHAT_LLAMA2, two_sys, 2, &ct, "f:4", &e) == -1 &&
           strstr(e.msg, "f:4: message 2 is system"), "%s", e.msg);
    chat_tokens_free(&ct);
    tok_free(&t);
}


void chat_errors(void) {
    Tokenizer t;
    own_tokenizer(&t);
    tok_free(&t);
    put(at("good.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                          "{\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n\n"
                          "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, "
                          "{\"role\": \"user\", \"content\": \"Q\"}]}\n");
    put(at("role.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n"
                          "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                          "{\"role\": \"bot\", \"content\": \"x\"}]}\n");
    put(at("content.jsonl"), "{\"messages\": [{\"role\": \"user\"}]}\n");
    put(at("nomsg.jsonl"), "{\"text\": \"hi\"}\n");
    put(at("json.jsonl"), "{\"messages\": [\n");
    put(at("order.jsonl"), "{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}\n");
    char args[1024];
    snprintf(args, sizeof args, "tokenize chat --tokenizer %s --template llama3 %s", at("own.tok"),
             at("good.jsonl"));
    int rc = test_llamac("%s", args);
    EXPECT(rc == 0 && strncmp(test_out, "{\"ids\": [", 9) == 0 && strstr(test_out, "\"mask\": [0, 0") &&
           strstr(test_out, "1, 1]}\n{\"ids\""), "chat output: %d %s %s", rc, test_out, test_err);
    static const struct {
        const char *file, *tpl, *want;
    } c[] = {
        {"role.jsonl", "llama3", "role.jsonl:2: message 2: unknown role 'bot' (expected system, user or assistant)"},
        {"content.jsonl", "llama3", "content.jsonl:1: message 1: no string \"content\""},
        {"nomsg.jsonl", "llama3", "nomsg.jsonl:1: no \"messages\" list"},
        {"json.jsonl", "llama3", "json.jsonl:1: not valid JSON"},
        {"order.jsonl", "llama2", "order.jsonl:1: message 1 is assistant"},
        {"good.jsonl", "chatml", "--template: unknown template 'chatml' (expected llama2 or llama3)"},
        {"missing.jsonl", "llama3", "missing.jsonl: cannot open"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        snprintf(args, sizeof args, "tokenize chat --tokenizer %s --template %s %s --out %s",
                 at("own.tok"), c[i].tpl, at(c[i].file), at("o.jsonl"));
        rc = test_llamac("%s", args);
        int lines = 0;
        for (const char *q = test_err; *q; q++) lines += *q == '\n';
        EXPECT(rc == 1 && lines == 1 && strstr(test_err, c[i].want), "%s: exit %d, %s", c[i].file, rc,
               test_err);
    }
    EXPECT(access(at("o.jsonl"), F_OK) != 0, "a failed run left its output file");
}

/* The tokenizer above for other tests (test_sft.c): loaded into t, and its
 * file's path. */
const char *test_chat_tokenizer(Tokenizer *t) {
    own_tokenizer(t);
    return at("own.tok");
}
