/*
 * chat.c: see chat.h for the formats. Each template is one function
 * that appends ids with their mask bit; the JSONL reader turns lines into
 * ChatMsg arrays borrowed from jansson's strings.
 */
#include "chat.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonl.h"

static const char *const role_names[CHAT_ROLE_COUNT] = {"system", "user", "assistant"};
static const char *const template_names[CHAT_TEMPLATE_COUNT] = {"llama2", "llama3", "llama3.1", "chatml"};

const char *chat_role_name(ChatRole r) {
    return (unsigned)r < CHAT_ROLE_COUNT ? role_names[r] : "?";
}

int chat_template_parse(const char *name, ChatTemplate *tpl, Err *e) {
    for (int i = 0; i < CHAT_TEMPLATE_COUNT; i++)
        if (strcmp(name, template_names[i]) == 0) {
            *tpl = (ChatTemplate)i;
            return 0;
        }
    return err_set(e, "--template: unknown template '%.64s' (expected llama2, llama3, llama3.1 or chatml)", name);
}

const char *chat_template_name(ChatTemplate tpl) {
    return (unsigned)tpl < CHAT_TEMPLATE_COUNT ? template_names[tpl] : "?";
}

void chat_tokens_free(ChatTokens *out) {
    if (!out) return;
    free(out->ids);
    free(out->mask);
    memset(out, 0, sizeof *out);
}

void chat_tokens_push(ChatTokens *o, const int32_t *ids, size_t n, int mask) {
    if (n == 0) return; /* o->ids may still be NULL: no arithmetic on it (UBSan, the dpo fuzz harness) */
    if (o->n + n > o->cap) {
        o->cap = 2 * (o->n + n) + 64;
        o->ids = xrealloc(o->ids, o->cap * sizeof *o->ids);
        o->mask = xrealloc(o->mask, o->cap);
    }
    memcpy(o->ids + o->n, ids, n * sizeof *ids);
    memset(o->mask + o->n, mask, n);
    o->n += n;
}

static void push1(ChatTokens *o, int32_t id, int mask) { chat_tokens_push(o, &id, 1, mask); }

/* length of the Python-whitespace character at s[0..n) (0 if none) */
static size_t space_len(const uint8_t *s, size_t n) {
    if (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x1f)) return 1;
    if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (n >= 3 && s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80) return 3;             /* U+1680 */
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 && (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 ||
                                                   s[2] == 0xaf)) return 3;          /* U+2000-200A, 2028, 2029, 202F */
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) return 3;             /* U+205F */
    if (n >= 3 && s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80) return 3;             /* U+3000 */
    return 0;
}

/* Python's str.strip(): *s, *n narrowed */
static void strip(const char **s, size_t *n) {
    const uint8_t *p = (const uint8_t *)*s;
    size_t a = 0, z = *n, k;
    while (a < z && (k = space_len(p + a, z - a))) a += k;
    for (;;) { /* from the right: try each width a character can have */
        size_t w = 0;
        for (size_t c = 1; c <= 3 && c <= z - a && !w; c++)
            if (space_len(p + z - c, c) == c && (c == 1 || (p[z - c] & 0xc0) != 0x80)) w = c;
        if (!w) break;
        z -= w;
    }
    *s += a;
    *n = z - a;
}

/* ids of text[0..n) (special-token names stay text) appended with mask */
static void push_text(ChatTokens *o, const Tokenizer *t, const char *text, size_t n, int mask,
                      int32_t **tmp, size_t *tcap) {
    size_t k = tok_encode(t, text, n, tmp, tcap);
    chat_tokens_push(o, *tmp, k, mask);
}

/* a growing byte string */
typedef struct {
    char *s;
    size_t n, cap;
} Str;

static void str_add(Str *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n) + 64;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void str_cat(Str *b, const char *s) { str_add(b, s, strlen(s)); }

// ---------------------------------------------------------------------------
// Llama 2

static int llama2(const Tokenizer *t, const ChatMsg *m, int n, ChatTokens *o, const char *where,
                  Err *e) {
    if (t->bos < 0 || t->eos < 0)
        return err_set(e, "%s: the llama2 template needs begin- and end-of-text tokens", where);
    int i = 0;
    const ChatMsg *sys = NULL;
    if (n > 0 && m[0].role == CHAT_SYSTEM) sys = &m[i++];
    if (i == n) return err_set(e, "%s: no user message", where);
    Str p = {0};
    int32_t *a = NULL, *b = NULL;
    size_t ca = 0, cb = 0;
    int rc = 0;
    for (int k = 0; i < n; i += 2, k++) {
        if (m[i].role != CHAT_USER || (i + 1 < n && m[i + 1].role != CHAT_ASSISTANT)) {
            int bad = m[i].role != CHAT_USER ? i : i + 1;
            rc = err_set(e, "%s: message %d is %s; llama2 needs user and assistant turns "
                            "alternating after an optional first system message", where, bad + 1,
                         chat_role_name(m[bad].role));
            break;
        }
        /* the prompt: "[INST] {user.strip()} [/INST]", system folded into the first */
        Str u = {0};
        if (k == 0 && sys) {
            str_cat(&u, "<<SYS>>\n");
            str_add(&u, sys->content, sys->len);
            str_cat(&u, "\n<</SYS>>\n\n");
        }
        str_add(&u, m[i].content, m[i].len);
        const char *us = u.s;
        size_t ul = u.n;
        strip(&us, &ul);
        p.n = 0;
        str_cat(&p, "[INST] ");
        str_add(&p, us, ul);
        str_cat(&p, " [/INST]");
        free(u.s);
        push1(o, t->bos, 0);
        if (i + 1 == n) { /* a last user message: the prompt for a reply */
            push_text(o, t, p.s, p.n, 0, &a, &ca);
            break;
        }
        size_t np = tok_encode(t, p.s, p.n, &a, &ca);
        const char *as = m[i + 1].content;
        size_t al = m[i + 1].len;
        strip(&as, &al);
        str_cat(&p, " ");
        str_add(&p, as, al);
        str_cat(&p, " ");
        size_t nt = tok_encode(t, p.s, p.n, &b, &cb);
        /* the reply's ids: those past the prompt's own encoding */
        size_t c = 0;
        while (c < np && c < nt && a[c] == b[c]) c++;
        chat_tokens_push(o, b, c, 0);
        chat_tokens_push(o, b + c, nt - c, 1);
        push1(o, t->eos, 1);
    }
    free(p.s);
    free(a);
    free(b);
    return rc;
}

// ---------------------------------------------------------------------------
// Llama 3

static int llama3(const Tokenizer *t, const ChatMsg *m, int n, int v31, const char *date, ChatTokens *o,
                  const char *where, Err *e) {
    static const char *const need[4] = {"<|begin_of_text|>", "<|start_header_id|>",
                                        "<|end_header_id|>", "<|eot_id|>"};
    int id[4];
    for (int k = 0; k < 4; k++)
        if ((id[k] = tok_special_id(t, need[k])) < 0)
            return err_set(e, "%s: the %s template needs the token %s, which the tokenizer "
                              "lacks", where, v31 ? "llama3.1" : "llama3", need[k]);
    int32_t *tmp = NULL;
    size_t tcap = 0;
    push1(o, id[0], 0);
    int i = 0;
    if (v31) { /* the system block, always there; the first system message goes in it */
        Str b = {0};
        str_cat(&b, "\n\nCutting Knowledge Date: December 2023\nToday Date: ");
        str_cat(&b, date && *date ? date : CHAT_LLAMA31_DATE);
        str_cat(&b, "\n\n");
        if (n > 0 && m[0].role == CHAT_SYSTEM) {
            const char *c = m[0].content;
            size_t len = m[0].len;
            strip(&c, &len);
            str_add(&b, c, len);
            i = 1;
        }
        push1(o, id[1], 0);
        push_text(o, t, "system", 6, 0, &tmp, &tcap);
        push1(o, id[2], 0);
        push_text(o, t, b.s, b.n, 0, &tmp, &tcap);
        push1(o, id[3], 0);
        free(b.s);
    }
    for (; i <= n; i++) {
        if (i == n && n > 0 && m[n - 1].role == CHAT_ASSISTANT) break;
        ChatRole r = i < n ? m[i].role : CHAT_ASSISTANT;
        const char *role = chat_role_name(r);
        push1(o, id[1], 0);
        push_text(o, t, role, strlen(role), 0, &tmp, &tcap);
        push1(o, id[2], 0);
        push_text(o, t, "\n\n", 2, 0, &tmp, &tcap);
        if (i == n) break; /* the header of the reply to generate */
        const char *c = m[i].content;
        size_t len = m[i].len;
        strip(&c, &len);
        int mask = r == CHAT_ASSISTANT;
        push_text(o, t, c, len, mask, &tmp, &tcap);
        push1(o, id[3], mask);
    }
    free(tmp);
    return 0;
}

// ---------------------------------------------------------------------------
// ChatML

static int chatml(const Tokenizer *t, const char *system, const ChatMsg *m, int n, ChatTokens *o,
                  const char *where, Err *e) {
    int start = tok_special_id(t, "<|im_start|>"), end = tok_special_id(t, "<|im_end|>");
    if (start < 0 || end < 0)
        return err_set(e, "%s: the chatml template needs the token %s, which the tokenizer lacks", where,
                       start < 0 ? "<|im_start|>" : "<|im_end|>");
    Str b = {0};
    int32_t *a = NULL, *c = NULL;
    size_t ca = 0, cc = 0;
    int with_sys = system && *system && n > 0 && m[0].role != CHAT_SYSTEM;
    for (int i = -with_sys; i <= n; i++) {
        if (i == n && n > 0 && m[n - 1].role == CHAT_ASSISTANT) break;
        ChatRole r = i < 0 ? CHAT_SYSTEM : i < n ? m[i].role : CHAT_ASSISTANT;
        b.n = 0;
        str_cat(&b, chat_role_name(r));
        str_cat(&b, "\n");
        push1(o, start, 0);
        if (i == n) { /* the prompt for a reply */
            push_text(o, t, b.s, b.n, 0, &a, &ca);
            break;
        }
        size_t nh = tok_encode(t, b.s, b.n, &a, &ca);
        if (i < 0) str_cat(&b, system);
        else str_add(&b, m[i].content, m[i].len);
        size_t nt = tok_encode(t, b.s, b.n, &c, &cc);
        size_t k = 0; /* the content's ids: those past the header's own encoding */
        while (k < nh && k < nt && a[k] == c[k]) k++;
        int mask = r == CHAT_ASSISTANT;
        chat_tokens_push(o, c, k, 0);
        chat_tokens_push(o, c + k, nt - k, mask);
        push1(o, end, mask);
        push_text(o, t, "\n", 1, 0, &a, &ca);
    }
    free(b.s);
    free(a);
    free(c);
    return 0;
}

int chat_encode_opts(const Tokenizer *t, ChatTemplate tpl, const char *system, const char *date, const ChatMsg *msgs,
                     int n, ChatTokens *out, const char *where, Err *e) {
    out->n = 0;
    if (tpl == CHAT_LLAMA2) return llama2(t, msgs, n, out, where, e);
    if (tpl == CHAT_LLAMA3 || tpl == CHAT_LLAMA31)
        return llama3(t, msgs, n, tpl == CHAT_LLAMA31, date, out, where, e);
    if (tpl == CHAT_CHATML) return chatml(t, system, msgs, n, out, where, e);
    return err_set(e, "%s: unknown chat template %d", where, (int)tpl);
}

int chat_encode_sys(const Tokenizer *t, ChatTemplate tpl, const char *system, const ChatMsg *msgs,
                    int n, ChatTokens *out, const char *where, Err *e) {
    return chat_encode_opts(t, tpl, system, NULL, msgs, n, out, where, e);
}

int chat_encode(const Tokenizer *t, ChatTemplate tpl, const ChatMsg *msgs, int n,
                ChatTokens *out, const char *where, Err *e) {
    return chat_encode_sys(t, tpl, CHAT_SMOLLM2_SYSTEM, msgs, n, out, where, e);
}

// ---------------------------------------------------------------------------
// Recognising a Jinja template

/* The literal after "<|im_start|>system" + a newline (written as a real
 * newline or as the escape \n) up to "<|im_end|>", unescaped into out, if
 * the template inserts it for a conversation without a system message
 * (its test messages[0]['role'] != 'system' or messages[0].role != ...). */
static void chatml_default_system(const char *j, char *out) {
    out[0] = 0;
    if (!strstr(j, "messages[0]['role'] != 'system'") && !strstr(j, "messages[0].role != 'system'") &&
        !strstr(j, "messages[0]['role'] != \"system\"") && !strstr(j, "messages[0].role != \"system\""))
        return;
    const char *p = strstr(j, "<|im_start|>system");
    if (!p) return;
    p += strlen("<|im_start|>system");
    if (*p == '\n') p++;
    else if (p[0] == '\\' && p[1] == 'n') p += 2;
    else return;
    const char *q = strstr(p, "<|im_end|>");
    if (!q) return;
    size_t n = 0;
    for (; p < q && n + 1 < CHAT_MAX_SYSTEM; p++) {
        if (*p == '\'' || *p == '"' || *p == '{' || *p == '}') { /* not one literal */
            out[0] = 0;
            return;
        }
        if (*p == '\\' && p + 1 < q) {
            p++;
            out[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = 0;
}

/* The published templates as their tokenizer_config.json holds them (a
 * Jinja escape \n inside the llama literals, real newlines in SmolLM2's) */
static const char *const jinja[CHAT_TEMPLATE_COUNT] = {
    [CHAT_LLAMA2] =
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
        "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
        "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
        "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
        "{% endfor %}",
    [CHAT_LLAMA3] =
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
        "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}",
    [CHAT_LLAMA31] =
        "{{- bos_token }}{%- if messages and messages[0]['role'] == 'system' %}{%- set system_message = "
        "messages[0]['content'] | trim %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set "
        "system_message = '' %}{%- set loop_messages = messages %}{%- endif %}{{- '<|start_header_id|>system"
        "<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\nToday Date: " CHAT_LLAMA31_DATE
        "\\n\\n' + system_message + '<|eot_id|>' }}{%- for message in loop_messages %}{{- '<|start_header_id|>' "
        "+ message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{%- endif %}",
    [CHAT_CHATML] =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
        "'<|im_start|>system\n" CHAT_SMOLLM2_SYSTEM "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
        "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
};

const char *chat_template_jinja(ChatTemplate tpl) {
    return (unsigned)tpl < CHAT_TEMPLATE_COUNT ? jinja[tpl] : "";
}

int chat_template_beside(const char *tokpath, char **out, Err *e) {
    *out = NULL;
    char path[4200];
    const char *slash = strrchr(tokpath, '/');
    int dn = slash ? (int)(slash - tokpath) : 0;
    snprintf(path, sizeof path, "%.*s%stokenizer_config.json", dn, tokpath, slash ? "/" : "");
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    json_error_t je;
    /* numbers as reals: transformers writes model_max_length int(1e30) when a tokenizer has none, past
     * jansson's integers; only strings are read here */
    json_t *j = json_loadf(f, JSON_DECODE_INT_AS_REAL, &je);
    fclose(f);
    char jq[2 * ERR_QUOTE_CAP]; /* jansson quotes the text near the error */
    if (!j) return err_set(e, "%s: not valid JSON (%s)", path, err_quote(jq, sizeof jq, je.text, strlen(je.text)));
    json_t *ct = json_object_get(j, "chat_template");
    int rc = 0;
    if (json_is_string(ct)) {
        size_t n = json_string_length(ct);
        *out = xmalloc(n + 1);
        memcpy(*out, json_string_value(ct), n + 1);
    } else if (ct && !json_is_null(ct)) {
        rc = err_set(e, "%s: chat_template is not a string (lists of named templates are not supported)", path);
    }
    json_decref(j);
    return rc;
}

int chat_template_detect(const char *j, ChatTemplate *tpl, char *system, Err *e) {
    if (system) system[0] = 0;
    if (strstr(j, "<|im_start|>") && strstr(j, "<|im_end|>")) {
        if (strstr(j, "<think>"))
            return err_set(e, "chat template not supported: ChatML with <think> reasoning blocks (Qwen3's); "
                              "use --template chatml");
        *tpl = CHAT_CHATML;
        if (system) chatml_default_system(j, system);
        return 0;
    }
    if (strstr(j, "<|start_header_id|>") && strstr(j, "<|eot_id|>")) {
        *tpl = strstr(j, "Cutting Knowledge Date") ? CHAT_LLAMA31 : CHAT_LLAMA3;
        return 0;
    }
    if (strstr(j, "[INST]") && strstr(j, "<<SYS>>")) {
        *tpl = CHAT_LLAMA2;
        return 0;
    }
    /* name it by its first characters, on one line */
    char ex[48];
    size_t n = 0;
    for (const char *p = j; *p && n + 4 < sizeof ex; p++) ex[n++] = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
    if (j[n]) { ex[n++] = '.', ex[n++] = '.', ex[n++] = '.'; }
    ex[n] = 0;
    if (strstr(j, "[INST]")) /* Mistral's, Llama 2's without a system block */
        return err_set(e, "chat template not supported: [INST] without <<SYS>> (Mistral-style): \"%s\"", ex);
    return err_set(e, "chat template not supported: \"%s\" (llamac renders llama2, llama3, llama3.1, chatml)", ex);
}

// ---------------------------------------------------------------------------
// JSONL

int chat_msgs_from_json(const void *json_list, ChatMsg **msgs, int *cap, int *n, const char *where,
                        Err *e) {
    json_t *list = (json_t *)json_list;
    if (!json_is_array(list)) return err_set(e, "%s: not a list of messages", where);
    size_t k = json_array_size(list);
    if (k > (size_t)1 << 20) return err_set(e, "%s: %zu messages is too many", where, k);
    if ((int)k > *cap) {
        *cap = (int)k;
        *msgs = xrealloc(*msgs, k * sizeof **msgs);
    }
    for (size_t i = 0; i < k; i++) {
        json_t *m = json_array_get(list, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *c = json_object_get(m, "content");
        if (!json_is_object(m)) return err_set(e, "%s: message %zu is not an object", where, i + 1);
        if (!role) return err_set(e, "%s: message %zu: no string \"role\"", where, i + 1);
        int r = 0;
        while (r < CHAT_ROLE_COUNT && strcmp(role, role_names[r]) != 0) r++;
        if (r == CHAT_ROLE_COUNT)
            return err_set(e, "%s: message %zu: unknown role '%.40s' (expected system, user or "
                              "assistant)", where, i + 1, role);
        if (!json_is_string(c))
            return err_set(e, "%s: message %zu: no string \"content\"", where, i + 1);
        (*msgs)[i] = (ChatMsg){(ChatRole)r, json_string_value(c), json_string_length(c)};
    }
    *n = (int)k;
    return 0;
}

/* the messages of one parsed line into *msgs (borrowing obj's strings) */
static int line_msgs(json_t *obj, ChatMsg **msgs, int *cap, int *n, const char *where, Err *e) {
    json_t *list = json_is_object(obj) ? json_object_get(obj, "messages") : NULL;
    if (!json_is_array(list)) return err_set(e, "%s: no \"messages\" list", where);
    return chat_msgs_from_json(list, msgs, cap, n, where, e);
}

/* chat_jsonl_each's state: the callback and the messages buffer */
typedef struct {
    ChatFn fn;
    void *ud;
    ChatMsg *msgs;
    int mcap;
} ChatWalk;

static int chat_line(void *ud, json_t *obj, const char *where, Err *e) {
    ChatWalk *w = ud;
    int n = 0;
    if (line_msgs(obj, &w->msgs, &w->mcap, &n, where, e)) return -1;
    return w->fn(w->ud, w->msgs, n, where, e);
}

int chat_jsonl_each(const char *path, ChatFn fn, void *ud, Err *e) {
    ChatWalk w = {fn, ud, NULL, 0};
    int rc = jsonl_each(path, JSONL_ALLOW_NUL, chat_line, &w, e);
    free(w.msgs);
    return rc;
}

int chat_template_of(const Tokenizer *t, const char *tokpath, ChatTemplate *tpl, char *system, Err *e) {
    char *jj = NULL;
    const char *src = tokpath, *j = t->chat_template;
    char where[600];
    if (!j) {
        if (chat_template_beside(tokpath, &jj, e)) return -1;
        if (!jj) return 0;
        j = jj;
        const char *slash = strrchr(tokpath, '/');
        snprintf(where, sizeof where, "%.*stokenizer_config.json", slash ? (int)(slash - tokpath + 1) : 0, tokpath);
        src = where;
    }
    Err de;
    int bad = chat_template_detect(j, tpl, system, &de);
    free(jj);
    if (bad) return err_set(e, "%s: %s", src, de.msg);
    return 1;
}
