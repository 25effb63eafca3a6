/*
 * test_chat.c: the Llama 2, Llama 3, Llama 3.1 and ChatML chat templates
 * and their detection from Jinja templates (data/chat.h). The
 * expected ids are spelled out from the published formats as one string
 * per turn (special tokens written by name and parsed by
 * tok_encode_special, or <s> / </s> ids placed by hand), for a two-turn
 * conversation with a system prompt, with the assistant mask; then the
 * JSONL reader's and the CLI's bad inputs. Runs on llamac's own BPE
 * (trained here), which has Llama 3's special tokens, and ChatML on a small
 * tokenizer.json written here, so no Python (scripts/test_chat_ref.py
 * checks ChatML against jinja2 + tokenizers in make test-ref).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/chat.h"
#include "../model/params.h"
#include "../train/io/ckpt.h"
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
    size_t n = test_words(text, sizeof text, w, 17, 5);
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
    test_put(at("good.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                          "{\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n\n"
                          "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, "
                          "{\"role\": \"user\", \"content\": \"Q\"}]}\n");
    test_put(at("role.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n"
                          "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                          "{\"role\": \"bot\", \"content\": \"x\"}]}\n");
    test_put(at("content.jsonl"), "{\"messages\": [{\"role\": \"user\"}]}\n");
    test_put(at("nomsg.jsonl"), "{\"text\": \"hi\"}\n");
    test_put(at("json.jsonl"), "{\"messages\": [\n");
    test_put(at("order.jsonl"), "{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}\n");
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
        {"good.jsonl", "vicuna", "--template: unknown template 'vicuna' (expected llama2, llama3, llama3.1 or chatml)"},
        {"good.jsonl", "chatml", "good.jsonl:1: the chatml template needs the token <|im_start|>, which the tokenizer lacks"},
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

// ---------------------------------------------------------------------------
// ChatML and template detection

/* A tokenizer.json with ChatML's tokens: the 256 bytes in GPT-2's byte
 * alphabet, merges that make "user", "assistant"-like pieces and " H",
 * <|im_start|>, <|im_end|> and <|endoftext|> as special added tokens. */
static void chatml_tokenizer(Tokenizer *t) {
    if (!dir[0]) { /* own_tokenizer makes the directory */
        Tokenizer x;
        own_tokenizer(&x);
        tok_free(&x);
    }
    static const char *const merges[][2] = {{"u", "s"}, {"us", "e"}, {"use", "r"}, {"Ġ", "H"},
                                            {"a", "s"}, {"as", "s"}, {"Ċ", "Ċ"}, {"i", "s"}};
    int nm = (int)(sizeof merges / sizeof merges[0]);
    FILE *f = fopen(at("chatml.json"), "wb");
    LC_ASSERT(f);
    fputs("{\"version\": \"1.0\", \"added_tokens\": [", f);
    static const char *const added[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"};
    for (int k = 0; k < 3; k++)
        fprintf(f, "%s{\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
                   "\"rstrip\": false, \"normalized\": false, \"special\": true}", k ? ", " : "", 256 + nm + k,
                added[k]);
    fputs("], \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
          "\"trim_offsets\": true, \"use_regex\": true}, \"post_processor\": null, \"decoder\": {\"type\": "
          "\"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true}, "
          "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": "
          "null, \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": "
          "false, \"vocab\": {", f);
    int next = 256;
    for (int b = 0; b < 256; b++) { /* GPT-2's byte -> code point map */
        int cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 ? b : next++;
        char u[4];
        int n = cp < 0x80 ? (u[0] = (char)cp, 1) : (u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), 2);
        fprintf(f, "%s\"%s%.*s\": %d", b ? ", " : "", cp == '"' || cp == '\\' ? "\\" : "", n, u, b);
    }
    for (int k = 0; k < nm; k++) fprintf(f, ", \"%s%s\": %d", merges[k][0], merges[k][1], 256 + k);
    fputs("}, \"merges\": [", f);
    for (int k = 0; k < nm; k++) fprintf(f, "%s\"%s %s\"", k ? ", " : "", merges[k][0], merges[k][1]);
    fputs("]}}\n", f);
    fclose(f);
    Err e = {{0}};
    LC_ASSERT(tok_load(t, at("chatml.json"), &e) == 0 || (fprintf(stderr, "%s\n", e.msg), 0));
}

void chat_chatml(void) {
    Tokenizer t;
    chatml_tokenizer(&t);
    ChatTokens ct = {0};
    Err e = {{0}};
    /* with a system message: content as it is (no strip), "\n" after <|im_end|> unmasked */
    EXPECT(chat_encode(&t, CHAT_CHATML, conv, 5, &ct, "conv", &e) == 0, "%s", e.msg);
    Want w = {.n = 0};
    want_text(&w, &t, "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n", 1, 0);
    want_text(&w, &t, "  Hi there <|eot_id|>\n", 0, 0);
    want_text(&w, &t, "<|im_end|>\n<|im_start|>assistant\n", 1, 0);
    want_text(&w, &t, "Hello! <|im_end|>", 1, 1);
    want_text(&w, &t, "\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n", 1, 0);
    want_text(&w, &t, "\tFine. [/INST]<|im_end|>", 1, 1);
    want_text(&w, &t, "\n", 1, 0);
    check(&ct, &w, "chatml");
    /* the whole rendering is what the tokenizer makes of the rendered text */
    int32_t *ids = NULL;
    size_t cap = 0;
    const char *full = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n  Hi there ";
    size_t k = tok_encode_special(&t, full, strlen(full), &ids, &cap);
    EXPECT(k < ct.n && memcmp(ids, ct.ids, k * sizeof *ids) == 0, "chatml prefix");
    /* no system message: SmolLM2's default first; ending with a user turn: the reply's prompt */
    EXPECT(chat_encode(&t, CHAT_CHATML, conv + 1, 1, &ct, "conv", &e) == 0, "%s", e.msg);
    Want p = {.n = 0};
    want_text(&p, &t, "<|im_start|>system\n" CHAT_SMOLLM2_SYSTEM "<|im_end|>\n<|im_start|>user\n", 1, 0);
    want_text(&p, &t, "  Hi there <|eot_id|>\n", 0, 0);
    want_text(&p, &t, "<|im_end|>\n<|im_start|>assistant\n", 1, 0);
    check(&ct, &p, "chatml default system");
    /* another default (Qwen2's), or none */
    EXPECT(chat_encode_sys(&t, CHAT_CHATML, NULL, conv + 1, 1, &ct, "conv", &e) == 0, "%s", e.msg);
    Want q = {.n = 0};
    want_text(&q, &t, "<|im_start|>user\n", 1, 0);
    want_text(&q, &t, "  Hi there <|eot_id|>\n", 0, 0);
    want_text(&q, &t, "<|im_end|>\n<|im_start|>assistant\n", 1, 0);
    check(&ct, &q, "chatml no system");
    /* a tokenizer without the ChatML tokens */
    Tokenizer own;
    own_tokenizer(&own);
    EXPECT(chat_encode(&own, CHAT_CHATML, conv, 2, &ct, "f:2", &e) == -1 &&
           strcmp(e.msg, "f:2: the chatml template needs the token <|im_start|>, which the tokenizer lacks") == 0,
           "%s", e.msg);
    EXPECT(chat_encode(&t, CHAT_LLAMA3, conv, 2, &ct, "f:3", &e) == -1 &&
           strstr(e.msg, "f:3: the llama3 template needs the token <|begin_of_text|>"), "%s", e.msg);
    tok_free(&own);
    free(ids);
    chat_tokens_free(&ct);
    tok_free(&t);
}

void chat_llama31(void) {
    Tokenizer t;
    own_tokenizer(&t);
    ChatTokens ct = {0};
    Err e = {{0}};
    EXPECT(chat_encode(&t, CHAT_LLAMA31, conv, 3, &ct, "conv", &e) == 0, "%s", e.msg);
    Want w = {.n = 0};
    want_text(&w, &t, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                      "You are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n", 1, 0);
    want_text(&w, &t, "Hi there <|eot_id|>", 0, 0);
    want_text(&w, &t, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", 1, 0);
    want_text(&w, &t, "Hello!<|eot_id|>", 1, 1);
    check(&ct, &w, "llama3.1");
    /* no system message: the block is still there, empty after the date */
    EXPECT(chat_encode(&t, CHAT_LLAMA31, conv + 3, 1, &ct, "conv", &e) == 0, "%s", e.msg);
    Want p = {.n = 0};
    want_text(&p, &t, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n", 1, 0);
    check(&ct, &p, "llama3.1 prompt");
    chat_tokens_free(&ct);
    tok_free(&t);
}

/* The published templates (as their tokenizer_config.json / GGUF carry
 * them; abridged where only the markers matter) and what they detect as. */
void chat_detect(void) {
    static const struct {
        const char *jinja;
        int tpl; /* -1: not supported */
        const char *want; /* default system, or the error's text */
    } c[] = {
        /* SmolLM2-135M-Instruct, whole (a real newline inside the literal) */
        {"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
         "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
         "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
         CHAT_CHATML, CHAT_SMOLLM2_SYSTEM},
        /* Qwen2.5's opening (the escape \n in the Jinja source) */
        {"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
         "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are "
         "a helpful assistant.<|im_end|>\\n' }}{%- endif %}", CHAT_CHATML, ""},
        /* Qwen2's: the default behind messages[0]['role'] != 'system' */
        {"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
         "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
         "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
         CHAT_CHATML, "You are a helpful assistant."},
        /* plain ChatML, no default */
        {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
         "'<|im_end|>' + '\\n'}}{% endfor %}", CHAT_CHATML, ""},
        /* Llama 3 8B Instruct */
        {"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
         "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
         "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
         "{% endif %}", CHAT_LLAMA3, ""},
        /* Llama 3.1 / 3.2 (the system block) */
        {"{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n"
         "{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- \"Cutting Knowledge "
         "Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{{- system_message }}\n"
         "{{- \"<|eot_id|>\" }}", CHAT_LLAMA31, ""},
        /* Llama 2 chat */
        {"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
         "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
         "{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}"
         "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
         "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
         "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + "
         "content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}", CHAT_LLAMA2, ""},
        /* not renderable: Qwen3 (<think>), Mistral, Gemma */
        {"{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' }}{%- if '</think>' in "
         "content %}<think>{%- endif %}<|im_end|>{%- endfor %}", -1,
         "chat template not supported: ChatML with <think> reasoning blocks (Qwen3's)"},
        {"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
         "message['content'] + ' [/INST]' }}{% endif %}{% endfor %}", -1,
         "chat template not supported: [INST] without <<SYS>> (Mistral-style): \"{{ bos_token }}{% for message "},
        {"{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + role + '\n' }}{% endfor %}", -1,
         "chat template not supported: \"{{ bos_token }}{% for message in messages %}...\" (llamac renders"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        ChatTemplate tpl = CHAT_TEMPLATE_COUNT;
        char sys[CHAT_MAX_SYSTEM];
        Err e = {{0}};
        int rc = chat_template_detect(c[i].jinja, &tpl, sys, &e);
        if (c[i].tpl < 0) {
            EXPECT(rc == -1 && strstr(e.msg, c[i].want) && !strchr(e.msg, '\n'), "case %zu: %d %s", i, rc, e.msg);
            continue;
        }
        EXPECT(rc == 0 && (int)tpl == c[i].tpl, "case %zu: %d %s -> %s", i, rc, e.msg, chat_template_name(tpl));
        EXPECT(strcmp(sys, c[i].want) == 0, "case %zu: default system '%s', expected '%s'", i, sys, c[i].want);
    }
    /* the templates exports write are recognised as themselves */
    for (int k = 0; k < CHAT_TEMPLATE_COUNT; k++) {
        ChatTemplate tpl = CHAT_TEMPLATE_COUNT;
        char sys[CHAT_MAX_SYSTEM];
        Err e = {{0}};
        EXPECT(chat_template_detect(chat_template_jinja((ChatTemplate)k), &tpl, sys, &e) == 0 && (int)tpl == k &&
                   strcmp(sys, k == CHAT_CHATML ? CHAT_SMOLLM2_SYSTEM : "") == 0,
               "%s's own Jinja: %s %s", chat_template_name((ChatTemplate)k), e.msg, chat_template_name(tpl));
    }
    ChatTemplate tpl;
    Err e = {{0}};
    EXPECT(chat_template_parse("chatml", &tpl, &e) == 0 && tpl == CHAT_CHATML, "parse chatml");
    EXPECT(chat_template_parse("llama3.1", &tpl, &e) == 0 && tpl == CHAT_LLAMA31, "parse llama3.1");
    EXPECT(chat_template_parse("vicuna", &tpl, &e) == -1 &&
           strcmp(e.msg, "--template: unknown template 'vicuna' (expected llama2, llama3, llama3.1 or chatml)") == 0,
           "%s", e.msg);
}

/* `llamac chat` through a pipe on the pipeline test's tiny model (llamac
 * BPE, llama3 template): two lines in, two replies out; the second turn
 * reuses the first turn's prompt from the KV cache and prefills only what
 * follows it; a small --ctx makes a turn start over; and the bad inputs. */
void chat_cli(void) {
    if (access("build/tp/model.h5", R_OK) != 0) pipeline_pretrain();
    const char *M = "--model build/tp/model.h5 --tokenizer build/tp/tok.bin";
    test_put("build/tp/chat_in.txt", "the cat\nand the dog\n");
    int rc = test_llamac("chat %s --template llama3 --max-tokens 12 --temperature 0 < build/tp/chat_in.txt", M);
    int lines = 0;
    for (const char *q = test_out; *q; q++) lines += *q == '\n';
    EXPECT(rc == 0 && lines == 2, "chat: exit %d, %d lines: %s %s", rc, lines, test_out, test_err);
    /* "llamac: turn N: P prompt tokens prefilled (C from the cache), G generated (R tok/s), U of ..." */
    int p1 = -1, c1 = -1, g1 = -1, u1 = -1, p2 = -1, c2 = -1, g2 = -1, u2 = -1;
    const char *t2 = strstr(test_err, "llamac: turn 2:");
    static const char *fmt = "llamac: turn %*d: %d prompt tokens prefilled (%d from the cache), %d generated "
                             "(%*f tok/s), %d of";
    EXPECT(sscanf(test_err, fmt, &p1, &c1, &g1, &u1) == 4 && t2 && sscanf(t2, fmt, &p2, &c2, &g2, &u2) == 4,
           "chat stderr: %s", test_err);
    /* turn 1: the whole prompt; turn 2: turn 1's prompt at least comes from the cache */
    EXPECT(c1 == 0 && p1 > 5 && g1 == 12 && u1 == p1 + g1, "turn 1: %d %d %d %d", p1, c1, g1, u1);
    EXPECT(c2 >= p1 && p2 > 0 && u2 > u1, "turn 2 did not continue the cache: %d %d %d (%s)", c2, p2, u2, test_err);
    /* the same conversation again gives the same replies (greedy) */
    static char first[4096];
    snprintf(first, sizeof first, "%.4000s", test_out);
    rc = test_llamac("chat %s --template llama3 --max-tokens 12 --temperature 0 < build/tp/chat_in.txt", M);
    EXPECT(rc == 0 && strcmp(first, test_out) == 0, "greedy chat differs between runs");
    /* a context too small for two turns: the second starts over */
    rc = test_llamac("chat %s --template llama3 --max-tokens 30 --temperature 0 --ctx 60 < build/tp/chat_in.txt", M);
    EXPECT(rc == 0 && strstr(test_err, "turn 2: the context of 60 tokens is full; starting a new conversation") &&
           strstr(test_err, "turn 2: 30 prompt tokens prefilled (0 from the cache)"), "ctx full: %s", test_err);
    /* a message that does not fit at all */
    rc = test_llamac("chat %s --template llama3 --ctx 20 < build/tp/chat_in.txt", M);
    EXPECT(rc == 1 && strstr(test_err, "stdin:1: the message takes 25 tokens with the template, more than the "
                                       "context of 20"), "%d %s", rc, test_err);
    /* a tokenizer_config.json beside the tokenizer whose template llamac cannot render */
    mkdir("build/tp/hf", 0755);
    test_put("build/tp/hf/tokenizer_config.json", "{\"chat_template\": \"{{ bos_token }}{% for m in messages %}"
                                             "<start_of_turn>{% endfor %}\"}");
    rc = system("cp build/tp/tok.bin build/tp/hf/tok.bin");
    test_put("build/tp/hf2.json", "{");
    static const struct {
        const char *args, *want;
    } c[] = {
        {"--template zz", "--template: unknown template 'zz' (expected llama2, llama3, llama3.1 or chatml)"},
        {"", "--template: required: build/tp/tok.bin comes with no chat template (give llama2, llama3, llama3.1 or chatml)"},
        {"--template chatml", "build/tp/tok.bin: the chatml template needs the token <|im_start|>, which the tokenizer lacks"},
        {"--template llama3 --tokenizer build/tp/val.jsonl", "build/tp/val.jsonl: "},
        {"--template llama3 --model build/tp/nope.h5", "build/tp/nope.h5"},
        {"--template llama3 --max-tokens 0", "--max-tokens: 0 is out of range"},
        {"--template llama3 --ctx 129", "--ctx: 129 exceeds the model's context length 128"},
        {"--tokenizer build/tp/hf/tok.bin", "build/tp/hf/tokenizer_config.json: chat template not supported: \"{{ bos_token }}"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        rc = test_llamac("chat %s %s < build/tp/chat_in.txt", M, c[i].args);
        lines = 0;
        for (const char *q = test_err; *q; q++) lines += *q == '\n';
        EXPECT(rc == 1 && lines == 1 && strstr(test_err, c[i].want), "'%s': exit %d, %s", c[i].args, rc, test_err);
    }
}

/* The tokenizer above for other tests (test_sft.c): loaded into t, and its
 * file's path. */
const char *test_chat_tokenizer(Tokenizer *t) {
    own_tokenizer(t);
    return at("own.tok");
}

/* `llamac chat` with ChatML: a random tiny model on the ChatML
 * tokenizer.json, the template recognised from a tokenizer_config.json
 * beside it (SmolLM2's, so its default system message goes first): two
 * turns, the second continuing the cache. */
void chat_cli_chatml(void) {
    Tokenizer t;
    chatml_tokenizer(&t);
    LlamaConfig c;
    Err e = {{0}};
    LC_ASSERT(config_preset("tiny", &c, &e) == 0);
    c.vocab = t.vocab;
    c.max_seq = 512; /* this tokenizer has few merges: SmolLM2's system message alone is ~80 ids */
    ParamTable pt;
    LC_ASSERT(params_build(&c, &pt, &e) == 0);
    float *p = xalloc_aligned(pt.size * sizeof(float));
    memset(p, 0, pt.size * sizeof(float));
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < pt.n; i++)
        for (size_t k = 0; k < pt.p[i].numel; k++) p[pt.p[i].offset + k] = 0.2f * (rng_uniform(&r) - 0.5f);
    LC_ASSERT(ckpt_save(at("chatml.h5"), &c, &pt, p, t.id, NULL, NULL, &e) == 0);
    free(p);
    params_free(&pt);
    /* the directory's tokenizer_config.json, as a HF directory has it */
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "{\"chat_template\": \"%s\"}",
             "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
             "'<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' "
             "}}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
             "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");
    test_put(at("tokenizer_config.json"), cfg);
    test_put(at("in.txt"), "Hi there\nHow are you?\n");
    int rc = test_llamac("chat --model %s --tokenizer %s --max-tokens 6 --temperature 0 < %s", at("chatml.h5"),
                         at("chatml.json"), at("in.txt"));
    static const char *fmt = "llamac: turn %*d: %d prompt tokens prefilled (%d from the cache), %d generated "
                             "(%*f tok/s), %d of";
    int p1 = -1, c1 = -1, g1 = -1, u1 = -1, p2 = -1, c2 = -1, g2 = -1, u2 = -1;
    const char *t2 = strstr(test_err, "llamac: turn 2:");
    EXPECT(rc == 0 && sscanf(test_err, fmt, &p1, &c1, &g1, &u1) == 4 && t2 && sscanf(t2, fmt, &p2, &c2, &g2, &u2) == 4,
           "chatml chat: %d %s", rc, test_err);
    /* turn 1's prompt is the default system block + the user turn + the reply header */
    ChatMsg m1 = {CHAT_USER, "Hi there", 8};
    ChatTokens ct = {0};
    EXPECT(chat_encode(&t, CHAT_CHATML, &m1, 1, &ct, "x", &e) == 0 && p1 == (int)ct.n && c1 == 0,
           "turn 1 prefilled %d, the SmolLM2 rendering has %zu", p1, ct.n);
    EXPECT(c2 >= p1 && p2 > 0 && u2 > u1, "turn 2 did not continue the cache: %d %d", c2, p2);
    chat_tokens_free(&ct);
    tok_free(&t);
}

/* tokenizer_config.json beside a tokenizer.json names the EOS transformers
 * uses (SmolLM2's <|im_end|>, where the name search finds <|endoftext|>) */
void chat_hf_specials(void) {
    Tokenizer t;
    chatml_tokenizer(&t);
    int im_end = tok_special_id(&t, "<|im_end|>"), eot_before = t.eot;
    EXPECT(im_end >= 0 && t.eos != im_end, "the name search already picked <|im_end|> (%d)", t.eos);
    tok_free(&t);
    test_put(at("tokenizer_config.json"), "{\"bos_token\": null, \"eos_token\": {\"content\": \"<|im_end|>\"}}");
    Err e = {{0}};
    EXPECT(tok_load(&t, at("chatml.json"), &e) == 0, "%s", e.msg);
    EXPECT(t.eos == im_end && (eot_before == -1 || t.eot == im_end || t.eot == eot_before),
           "eos %d eot %d, want %d", t.eos, t.eot, im_end);
    tok_free(&t);
    /* as transformers 5 saves a tokenizer without a length: model_max_length int(1e30), past jansson's
     * integers, must not hide the names (nor be an error to the template reader) */
    test_put(at("tokenizer_config.json"), "{\"backend\": \"tokenizers\", \"eos_token\": \"<|im_end|>\", "
                                          "\"model_max_length\": 1000000000000000019884624838656}");
    EXPECT(tok_load(&t, at("chatml.json"), &e) == 0 && t.eos == im_end, "model_max_length 1e30: eos %d, want %d",
           t.eos, im_end);
    tok_free(&t);
    char *jinja = NULL;
    EXPECT(chat_template_beside(at("chatml.json"), &jinja, &e) == 0 && !jinja, "model_max_length 1e30: %s", e.msg);
    free(jinja);
    test_put(at("tokenizer_config.json"), "{\"eos_token\": \"<|not_a_token|>\"}");
    EXPECT(tok_load(&t, at("chatml.json"), &e) == 0 && t.eos != im_end, "an unknown eos_token changed eos");
    tok_free(&t);
    remove(at("tokenizer_config.json"));
}
