/*
 * sft.c: SFT examples (see sft.h): JSONL lines to (ids, mask) through the
 * chat templates, then rows of T slots packed best-fit-decreasing
 * (data/pack.h).
 */
#include "sft.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonl.h"
#include "loader.h"
#include "pack.h"

static const char *const format_names[SFT_FORMAT_COUNT] = {"auto", "messages", "prompt", "alpaca", "text"};
static const char *const loss_names[] = {"auto", "assistant", "completion", "all"};

const char *sft_format_name(SftFormat f) { return (unsigned)f < SFT_FORMAT_COUNT ? format_names[f] : "?"; }

int sft_format_parse(const char *s, SftFormat *f, Err *e) {
    for (int i = 0; i < SFT_FORMAT_COUNT; i++)
        if (strcmp(s, format_names[i]) == 0) return *f = (SftFormat)i, 0;
    return err_set(e, "--format: unknown format '%.40s' (expected auto, messages, prompt, alpaca or text)", s);
}

int sft_loss_parse(const char *s, SftLoss *l, Err *e) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, loss_names[i]) == 0) return *l = (SftLoss)i, 0;
    return err_set(e, "--loss: unknown loss mask '%.40s' (expected auto, assistant, completion or all)", s);
}

void sft_free(SftSet *s) {
    free(s->ids);
    free(s->mask);
    free(s->off);
    memset(s, 0, sizeof *s);
}

// ----------------------------------------------------------------------------
// one example

typedef SftRender Builder;

/* Alpaca's prompt without a template (Taori et al. 2023, Stanford Alpaca's
 * PROMPT_DICT). */
static void alpaca_prompt(char **buf, size_t *cap, const char *ins, const char *inp) {
    const char *fmt = inp && *inp
        ? "Below is an instruction that describes a task, paired with an input that provides further "
          "context. Write a response that appropriately completes the request.\n\n### Instruction:\n%s"
          "\n\n### Input:\n%s\n\n### Response:\n"
        : "Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n%s\n\n### Response:\n%s";
    size_t need = strlen(fmt) + strlen(ins) + (inp ? strlen(inp) : 0) + 1;
    if (need > *cap) *buf = xrealloc(*buf, *cap = need);
    snprintf(*buf, need, fmt, ins, inp && *inp ? inp : "");
}

/* Standard (string) prompt + completion, as TRL tokenizes them: the ids of
 * the prompt, and of prompt + completion; the completion is what follows
 * the longest common prefix. BOS first (when asked), EOS last. */
static void plain_pair(Builder *b, const char *p, size_t np, const char *c, size_t nc) {
    const Tokenizer *t = b->t;
    ChatTokens *ex = &b->ex;
    if (b->o->bos && t->bos >= 0) chat_tokens_push(ex, (int32_t[]){t->bos}, 1, 0);
    size_t k = tok_encode(t, p, np, &b->enc, &b->enc_cap);
    ChatTokens *pp = &b->tmp;
    pp->n = 0;
    chat_tokens_push(pp, b->enc, k, 0);
    char *joined = xmalloc(np + nc + 1);
    memcpy(joined, p, np);
    memcpy(joined + np, c, nc);
    size_t m = tok_encode(t, joined, np + nc, &b->enc, &b->enc_cap);
    free(joined);
    size_t common = 0;
    while (common < k && common < m && pp->ids[common] == b->enc[common]) common++;
    int all = b->loss == SFT_LOSS_ALL;
    chat_tokens_push(ex, b->enc, common, all);
    chat_tokens_push(ex, b->enc + common, m - common, 1);
    if (t->eos >= 0 && (m == 0 || b->enc[m - 1] != t->eos)) chat_tokens_push(ex, (int32_t[]){t->eos}, 1, 1);
}

static int check_msgs(const ChatMsg *m, int n, int need_assistant, const char *where, Err *e) {
    int has = 0;
    if (n == 0) return err_set(e, "%s: no messages", where);
    for (int i = 0; i < n; i++) {
        if (m[i].len == 0) return err_set(e, "%s: message %d (%s) has empty content", where, i + 1, chat_role_name(m[i].role));
        has |= m[i].role == CHAT_ASSISTANT;
    }
    if (need_assistant && !has) return err_set(e, "%s: no assistant message to train on", where);
    return 0;
}

/* Render messages [0, n) (the prompt being [0, np)) with the template:
 * mask per b->loss (assistant: the template's mask past the prompt;
 * completion: every token past the prompt; all: every token). */
static int chat_pair(Builder *b, const ChatMsg *m, int n, int np, const char *where, Err *e) {
    if (b->o->tpl < 0) return err_set(e, "%s: chat messages need a chat template (--template)", where);
    ChatTemplate tpl = (ChatTemplate)b->o->tpl;
    if (chat_encode_opts(b->t, tpl, CHAT_SMOLLM2_SYSTEM, b->o->date, m, n, &b->tmp, where, e)) return -1;
    size_t cut = 0;
    if (np > 0) {
        ChatTokens pr = {0};
        if (chat_encode_opts(b->t, tpl, CHAT_SMOLLM2_SYSTEM, b->o->date, m, np, &pr, where, e)) return chat_tokens_free(&pr), -1;
        while (cut < pr.n && cut < b->tmp.n && pr.ids[cut] == b->tmp.ids[cut]) cut++;
        chat_tokens_free(&pr);
    }
    for (size_t i = 0; i < b->tmp.n; i++) {
        int k = b->loss == SFT_LOSS_ALL ? 1
              : b->loss == SFT_LOSS_COMPLETION ? i >= cut
              : b->tmp.mask[i] && i >= cut;
        chat_tokens_push(&b->ex, b->tmp.ids + i, 1, k && i > 0);
    }
    return 0;
}

/* A "prompt" or "completion" field: a string, or a message list. */
static int field_msgs(Builder *b, json_t *v, int at, int *n, const char *what, const char *where, Err *e) {
    char w[700];
    snprintf(w, sizeof w, "%s: \"%s\"", where, what);
    ChatMsg *tmp = NULL;
    int cap = 0, k = 0;
    if (chat_msgs_from_json(v, &tmp, &cap, &k, w, e)) return free(tmp), -1;
    if (at + k > b->msg_cap) b->msgs = xrealloc(b->msgs, (size_t)(b->msg_cap = at + k + 8) * sizeof *b->msgs);
    if (k) memcpy(b->msgs + at, tmp, (size_t)k * sizeof *tmp); /* tmp is NULL when k == 0 (UBSan) */
    free(tmp);
    *n = k;
    return 0;
}

void sft_render_init(SftRender *b, const Tokenizer *t, const SftOpts *o, SftLoss loss) {
    memset(b, 0, sizeof *b);
    b->t = t;
    b->o = o;
    b->loss = loss;
}

void sft_render_free(SftRender *b) {
    chat_tokens_free(&b->ex);
    chat_tokens_free(&b->tmp);
    free(b->enc);
    free(b->msgs);
    memset(b, 0, sizeof *b);
}

int sft_render_prompt(SftRender *b, const void *prompt, const void *completion, const char *cname,
                      const char *where, Err *e) {
    json_t *p = (json_t *)prompt, *c = (json_t *)completion;
    b->ex.n = 0;
    if (json_is_string(p) && json_is_string(c)) {
        if (json_string_length(c) == 0) return err_set(e, "%s: empty \"%s\"", where, cname);
        plain_pair(b, json_string_value(p), json_string_length(p), json_string_value(c), json_string_length(c));
        return 0;
    }
    if (!json_is_array(p) || !json_is_array(c))
        return err_set(e, "%s: \"prompt\" and \"%s\" must both be strings or both message lists", where, cname);
    int np = 0, nc = 0;
    if (field_msgs(b, p, 0, &np, "prompt", where, e) || field_msgs(b, c, np, &nc, cname, where, e))
        return -1;
    if (np == 0) return err_set(e, "%s: empty \"prompt\" list", where);
    if (nc == 0) return err_set(e, "%s: empty \"%s\" list", where, cname);
    if (check_msgs(b->msgs, np + nc, 1, where, e)) return -1;
    return chat_pair(b, b->msgs, np + nc, np, where, e);
}

static SftFormat detect(json_t *obj, const char *text_field) {
    if (json_object_get(obj, "messages")) return SFT_MESSAGES;
    if (json_object_get(obj, "prompt") && json_object_get(obj, "completion")) return SFT_PROMPT;
    if (json_object_get(obj, "instruction") && json_object_get(obj, "output")) return SFT_ALPACA;
    if (json_object_get(obj, text_field)) return SFT_TEXT;
    return SFT_AUTO;
}

static const char *str_field(json_t *obj, const char *k, size_t *len, int optional, const char *where, Err *e) {
    json_t *v = json_object_get(obj, k);
    if (!v && optional) return *len = 0, "";
    if (!json_is_string(v)) {
        err_set(e, "%s: %s \"%s\"", where, v ? "not a string:" : "no field", k);
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

static int build(Builder *b, json_t *obj, SftFormat f, const char *where, Err *e) {
    b->ex.n = 0;
    size_t l1, l2, l3;
    switch (f) {
    case SFT_MESSAGES: {
        int n = 0;
        json_t *list = json_object_get(obj, "messages");
        if (!list) return err_set(e, "%s: no \"messages\" list", where);
        if (field_msgs(b, list, 0, &n, "messages", where, e) ||
            check_msgs(b->msgs, n, b->loss != SFT_LOSS_ALL, where, e))
            return -1;
        return chat_pair(b, b->msgs, n, 0, where, e);
    }
    case SFT_PROMPT: {
        json_t *p = json_object_get(obj, "prompt"), *c = json_object_get(obj, "completion");
        if (!p || !c) return err_set(e, "%s: no field \"%s\"", where, p ? "completion" : "prompt");
        return sft_render_prompt(b, p, c, "completion", where, e);
    }
    case SFT_ALPACA: {
        const char *ins = str_field(obj, "instruction", &l1, 0, where, e), *inp, *out;
        if (!ins || !(inp = str_field(obj, "input", &l2, 1, where, e)) || !(out = str_field(obj, "output", &l3, 0, where, e)))
            return -1;
        if (l1 == 0 || l3 == 0) return err_set(e, "%s: empty \"%s\"", where, l1 ? "output" : "instruction");
        if (b->o->tpl < 0) {
            char *buf = NULL;
            size_t cap = 0;
            alpaca_prompt(&buf, &cap, ins, inp);
            plain_pair(b, buf, strlen(buf), out, l3);
            free(buf);
            return 0;
        }
        size_t nu = l1 + (l2 ? 2 + l2 : 0);
        char *user = xmalloc(nu + 1);
        memcpy(user, ins, l1);
        if (l2) memcpy(user + l1, "\n\n", 2), memcpy(user + l1 + 2, inp, l2);
        ChatMsg m[2] = {{CHAT_USER, user, nu}, {CHAT_ASSISTANT, out, l3}};
        int rc = chat_pair(b, m, 2, 1, where, e);
        free(user);
        return rc;
    }
    case SFT_TEXT: {
        const char *s = str_field(obj, b->o->text_field, &l1, 0, where, e);
        if (!s) return -1;
        if (l1 == 0) return err_set(e, "%s: empty \"%s\"", where, b->o->text_field);
        const Tokenizer *t = b->t;
        if (b->o->bos && t->bos >= 0) chat_tokens_push(&b->ex, (int32_t[]){t->bos}, 1, 0);
        size_t k = tok_encode(t, s, l1, &b->enc, &b->enc_cap);
        chat_tokens_push(&b->ex, b->enc, k, 1);
        if (t->eos >= 0) chat_tokens_push(&b->ex, (int32_t[]){t->eos}, 1, 1);
        b->ex.mask[0] = 0;
        return 0;
    }
    default:
        return err_set(e, "%s: unknown format", where);
    }
}

static void add_example(SftSet *s, const ChatTokens *ex, size_t n) {
    if (s->ntok + n > s->cap_tok) {
        s->cap_tok = 2 * (s->ntok + n) + 4096;
        s->ids = xrealloc(s->ids, s->cap_tok * sizeof *s->ids);
        s->mask = xrealloc(s->mask, s->cap_tok);
    }
    if (s->n + 2 > s->cap_ex) {
        s->cap_ex = 2 * s->n + 1024;
        s->off = xrealloc(s->off, s->cap_ex * sizeof *s->off);
    }
    memcpy(s->ids + s->ntok, ex->ids, n * sizeof *ex->ids);
    memcpy(s->mask + s->ntok, ex->mask, n);
    s->ntok += n;
    s->off[++s->n] = s->ntok;
}

/* sft_load's state across the lines of a file */
typedef struct {
    SftSet *s;
    const SftOpts *o;
    Builder b;
    SftFormat fmt;    /* o->format, or the first line's once detected */
} Loading;

static int load_line(void *ud, json_t *obj, const char *where, Err *e) {
    Loading *L = ud;
    SftSet *s = L->s;
    const SftOpts *o = L->o;
    if (L->fmt == SFT_AUTO && (L->fmt = detect(obj, o->text_field)) == SFT_AUTO)
        return err_set(e, "%s: cannot tell the format: no \"messages\", \"prompt\"+\"completion\", "
                          "\"instruction\"+\"output\" or \"%s\" field (name one with --format)", where, o->text_field);
    s->format = L->fmt;
    if (L->b.loss == SFT_LOSS_AUTO)
        L->b.loss = o->loss != SFT_LOSS_AUTO ? o->loss
                  : L->fmt == SFT_MESSAGES ? SFT_LOSS_ASSISTANT : L->fmt == SFT_TEXT ? SFT_LOSS_ALL : SFT_LOSS_COMPLETION;
    if (build(&L->b, obj, L->fmt, where, e)) return -1;
    s->lines++;
    size_t n = L->b.ex.n;
    if (n > (size_t)o->max_len) {
        if (o->drop_long) { s->dropped_long++; return 0; }
        n = (size_t)o->max_len;
        s->truncated++;
    }
    long trained = 0;
    for (size_t i = 1; i < n; i++) trained += L->b.ex.mask[i];
    if (trained == 0) { s->dropped_empty++; return 0; }
    s->trained += trained;
    add_example(s, &L->b.ex, n);
    return 0;
}

int sft_load(SftSet *s, const char *path, const Tokenizer *t, const SftOpts *o, Err *e) {
    memset(s, 0, sizeof *s);
    if (o->max_len < 2) return err_set(e, "--max-length: must be at least 2, got %d", o->max_len);
    s->off = xmalloc(1024 * sizeof *s->off);
    s->cap_ex = 1024;
    s->off[0] = 0;
    Loading L = {s, o, {0}, o->format};
    sft_render_init(&L.b, t, o, SFT_LOSS_AUTO);
    int rc = jsonl_each(path, JSONL_OBJECT, load_line, &L, e);
    sft_render_free(&L.b);
    if (!rc && s->n == 0)
        rc = err_set(e, "%s: no usable example (%ld lines; %ld longer than --max-length %d dropped, %ld with no "
                        "trained token left after truncation)", path, s->lines, s->dropped_long, o->max_len,
                     s->dropped_empty);
    if (rc) sft_free(s);
    return rc;
}

uint64_t sft_hash(const SftSet *s, int packed) {
    return pack_hash((uint64_t)packed, s->ids, s->mask, s->ntok, s->off, s->n + 1);
}

// ----------------------------------------------------------------------------
// rows

int sft_rows_init(SftRows *r, const SftSet *s, int B, int T, int packed, int pad, uint64_t seed,
                  const char *name, Err *e) {
    memset(r, 0, sizeof *r);
    r->B = B;
    r->T = T;
    r->packed = packed;
    r->pad = pad;
    r->seed = seed;
    r->set = s;
    size_t n = s->n;
    for (size_t i = 0; i < n; i++)
        if (s->off[i + 1] - s->off[i] > (size_t)T + 1)
            return err_set(e, "%s: example %zu has %zu tokens, more than --seq + 1 = %d", name, i + 1,
                           s->off[i + 1] - s->off[i], T + 1);
    int *need = xmalloc((n ? n : 1) * sizeof *need); /* an example of n tokens fills n - 1 slots */
    for (size_t i = 0; i < n; i++) need[i] = (int)(s->off[i + 1] - s->off[i]) - 1;
    pack_rows(need, n, T, packed ? PACK_BEST_FIT : PACK_NONE, &r->nrows, &r->row_off, &r->items, &r->slots_used);
    free(need);
    if (r->nrows < (size_t)B) {
        err_set(e, "%s: %zu examples make %zu rows of %d tokens, fewer than one batch of %d", name, n, r->nrows, T, B);
        sft_rows_free(r);
        return -1;
    }
    r->order = xmalloc(r->nrows * sizeof *r->order);
    loader_permute(r->order, r->nrows, seed, 0);
    r->order_epoch = 0;
    return 0;
}

void sft_rows_free(SftRows *r) {
    free(r->row_off);
    free(r->items);
    free(r->order);
    memset(r, 0, sizeof *r);
}

int sft_rows_seek(SftRows *r, uint64_t epoch, uint64_t pos, Err *e) {
    if (pack_cursor_check(pos, r->B, r->nrows, e)) return -1;
    r->epoch = epoch;
    r->pos = pos;
    return 0;
}

void sft_rows_next(SftRows *r, int32_t *tok, int32_t *tgt, int32_t *pos) { sft_rows_next_ids(r, tok, tgt, pos, NULL); }

void sft_rows_fill(const SftRows *r, size_t row, int32_t *tk, int32_t *tg, int32_t *ps) {
    const SftSet *s = r->set;
    int T = r->T, t = 0;
    for (size_t k = r->row_off[row]; k < r->row_off[row + 1]; k++) {
        uint32_t i = r->items[k];
        const int32_t *ids = s->ids + s->off[i];
        const uint8_t *mk = s->mask + s->off[i];
        int n = (int)(s->off[i + 1] - s->off[i]);
        for (int j = 0; j + 1 < n; j++, t++) {
            tk[t] = ids[j];
            tg[t] = mk[j + 1] ? ids[j + 1] : LC_IGNORE;
            ps[t] = j;
        }
    }
    for (int j = 0; t < T; t++, j++) { /* padding: a document of its own, never trained */
        tk[t] = r->pad;
        tg[t] = LC_IGNORE;
        ps[t] = j;
    }
}

void sft_rows_next_ids(SftRows *r, int32_t *tok, int32_t *tgt, int32_t *pos, uint64_t *ids) {
    if (r->order_epoch != r->epoch) {
        loader_permute(r->order, r->nrows, r->seed, r->epoch);
        r->order_epoch = r->epoch;
    }
    size_t T = (size_t)r->T;
    for (int b = 0; b < r->B; b++) {
        size_t row = r->order[r->pos + (uint64_t)b];
        if (ids) ids[b] = row;
        sft_rows_fill(r, row, tok + b * T, tgt + b * T, pos + b * T);
    }
    r->pos += (uint64_t)r->B;
    if (r->pos + (uint64_t)r->B > r->nrows) {
        r->epoch++;
        r->pos = 0;
    }
}
