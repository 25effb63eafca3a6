/*
 * prompts.c: prompt JSONL and stop strings (see prompts.h).
 */
#include "prompts.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "jsonl.h"

typedef struct {
    PromptSet *s;
    const Tokenizer *t;
    const PromptOpts *o;
    ChatTokens ct;
    ChatMsg *msgs;
    int msg_cap;
    int32_t *enc;
    size_t enc_cap;
} Loading;

static void push_ids(PromptSet *s, const int32_t *ids, size_t n) {
    if (s->ntok + n > s->cap_tok) {
        s->cap_tok = 2 * (s->ntok + n) + 1024;
        s->ids = xrealloc(s->ids, s->cap_tok * sizeof *s->ids);
    }
    memcpy(s->ids + s->ntok, ids, n * sizeof *ids);
    s->ntok += n;
}

/* The ids of a message list with the generation prompt after it. */
static int render(Loading *L, const json_t *list, const char *field, const char *where, Err *e) {
    if (L->o->tpl < 0) return err_set(e, "%s: \"%s\" is a message list, which needs a chat template: %s", where, field, L->o->tpl_why);
    int n = 0;
    if (chat_msgs_from_json(list, &L->msgs, &L->msg_cap, &n, where, e)) return -1;
    if (n == 0) return err_set(e, "%s: \"%s\" is an empty list", where, field);
    if (L->msgs[n - 1].role == CHAT_ASSISTANT)
        return err_set(e, "%s: the last message is the assistant's: there is nothing to reply to", where);
    if (chat_encode_sys(L->t, (ChatTemplate)L->o->tpl, L->o->system, L->msgs, n, &L->ct, where, e)) return -1;
    push_ids(L->s, L->ct.ids, L->ct.n);
    L->s->messages = 1;
    return 0;
}

static int load_line(void *ud, json_t *obj, const char *where, Err *e) {
    Loading *L = ud;
    PromptSet *s = L->s;
    static const char *const keys[] = {"prompt", "messages", "prompt_ids"};
    json_t *v[3];
    int have = 0;
    for (int k = 0; k < 3; k++) have += (v[k] = json_object_get(obj, keys[k])) != NULL;
    if (have == 0) return err_set(e, "%s: no \"prompt\", \"messages\" or \"prompt_ids\"", where);
    if (have > 1) return err_set(e, "%s: more than one of \"prompt\", \"messages\" and \"prompt_ids\"", where);
    if (s->n == s->cap) {
        s->cap = 2 * s->cap + 64;
        s->off = xrealloc(s->off, (s->cap + 1) * sizeof *s->off);
        s->stop_off = xrealloc(s->stop_off, (s->cap + 1) * sizeof *s->stop_off);
        s->line = xrealloc(s->line, s->cap * sizeof *s->line);
        s->obj = xrealloc(s->obj, s->cap * sizeof *s->obj);
    }
    size_t start = s->ntok, stop0 = s->nstop;
    int rc = 0;
    if (v[0] && json_is_string(v[0])) {
        const char *text = json_string_value(v[0]);
        size_t len = json_string_length(v[0]);
        size_t n = L->o->special ? tok_encode_special(L->t, text, len, &L->enc, &L->enc_cap)
                                 : tok_encode(L->t, text, len, &L->enc, &L->enc_cap);
        push_ids(s, L->enc, n);
    } else if (v[0] && json_is_array(v[0])) {
        rc = render(L, v[0], "prompt", where, e);
    } else if (v[0]) {
        rc = err_set(e, "%s: \"prompt\" must be a string or a list of messages", where);
    } else if (v[1]) {
        rc = json_is_array(v[1]) ? render(L, v[1], "messages", where, e)
                                 : err_set(e, "%s: \"messages\" must be a list of messages", where);
    } else {
        if (!json_is_array(v[2])) return err_set(e, "%s: \"prompt_ids\" must be a list of token ids", where);
        size_t i;
        json_t *x;
        json_array_foreach(v[2], i, x) {
            json_int_t id = json_is_integer(x) ? json_integer_value(x) : -1;
            if (id < 0 || id >= L->t->vocab) {
                s->ntok = start;
                return json_is_integer(x) ? err_set(e, "%s: \"prompt_ids\"[%zu] = %lld is outside the vocabulary [0, %d)",
                                                    where, i, (long long)id, L->t->vocab)
                                          : err_set(e, "%s: \"prompt_ids\"[%zu] is not an integer", where, i);
            }
            int32_t id32 = (int32_t)id;
            push_ids(s, &id32, 1);
        }
    }
    if (rc) {
        s->ntok = start;
        return -1;
    }
    size_t n = s->ntok - start;
    if (n == 0) {
        s->ntok = start;
        return err_set(e, "%s: prompt %zu is empty (no tokens)", where, s->n);
    }
    if (L->o->max_len > 0 && n >= (size_t)L->o->max_len) {
        s->ntok = start;
        return err_set(e, "%s: prompt %zu has %zu tokens: too long for %s, which must also hold a sampled token",
                       where, s->n, n, L->o->max_why ? L->o->max_why : "the context");
    }
    json_t *st = json_object_get(obj, "stop");
    if (st) {
        char what[300];
        snprintf(what, sizeof what, "%s: \"stop\"", where);
        if (prompts_stops_json(st, &s->stop, &s->nstop, &s->cap_stop, what, e)) {
            s->ntok = start;
            while (s->nstop > stop0) free(s->stop[--s->nstop]);
            return -1;
        }
    }
    s->off[s->n] = start;
    s->off[s->n + 1] = s->ntok;
    s->stop_off[s->n] = stop0;
    s->stop_off[s->n + 1] = s->nstop;
    s->line[s->n] = strtol(strrchr(where, ':') + 1, NULL, 10);
    s->obj[s->n] = json_incref(obj);
    s->n++;
    return 0;
}

int prompts_load(PromptSet *s, const char *path, const Tokenizer *t, const PromptOpts *o, Err *e) {
    memset(s, 0, sizeof *s);
    Loading L = {.s = s, .t = t, .o = o};
    int rc = jsonl_each(path, JSONL_OBJECT, load_line, &L, e);
    chat_tokens_free(&L.ct);
    free(L.msgs);
    free(L.enc);
    if (!rc && s->n == 0) rc = err_set(e, "%s: no prompt in the file", path);
    if (rc) prompts_free(s);
    return rc;
}

void prompts_free(PromptSet *s) {
    for (size_t i = 0; i < s->n; i++) json_decref(s->obj[i]);
    for (size_t i = 0; i < s->nstop; i++) free(s->stop[i]);
    free(s->ids);
    free(s->off);
    free(s->line);
    free(s->obj);
    free(s->stop);
    free(s->stop_off);
    memset(s, 0, sizeof *s);
}

// ----------------------------------------------------------------------------
// stop strings

#define STOP_FORMAT "expected a JSON string or a list of strings (e.g. '\"\\n\\n\"' or '[\"\\n\", \"User:\"]')"

static int push_stop(const json_t *v, char ***out, size_t *n, size_t *cap, const char *what, Err *e) {
    if (!json_is_string(v)) return err_set(e, "%s: " STOP_FORMAT, what);
    size_t len = json_string_length(v);
    if (len == 0) return err_set(e, "%s: an empty stop string would stop every sample at once", what);
    if (strlen(json_string_value(v)) != len) return err_set(e, "%s: a stop string holds a NUL byte", what);
    if (*n == *cap) *out = xrealloc(*out, (*cap = 2 * *cap + 8) * sizeof **out);
    char *c = xmalloc(len + 1);
    memcpy(c, json_string_value(v), len + 1);
    (*out)[(*n)++] = c;
    return 0;
}

int prompts_stops_json(const json_t *v, char ***out, size_t *n, size_t *cap, const char *what, Err *e) {
    if (!json_is_array(v)) return push_stop(v, out, n, cap, what, e);
    size_t n0 = *n, i;
    const json_t *x;
    json_array_foreach(v, i, x) {
        if (push_stop(x, out, n, cap, what, e)) {
            while (*n > n0) free((*out)[--*n]);
            return -1;
        }
    }
    return 0;
}

int prompts_stops_parse(const char *text, char ***out, size_t *n, size_t *cap, const char *what, Err *e) {
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (!v || !(json_is_string(v) || json_is_array(v))) {
        char q[ERR_QUOTE_CAP];
        json_decref(v);
        return err_set(e, "%s: " STOP_FORMAT ", got '%s'", what, err_quote(q, sizeof q, text, strlen(text)));
    }
    int rc = prompts_stops_json(v, out, n, cap, what, e);
    json_decref(v);
    return rc;
}

long stop_find(char *const *stops, size_t n, const char *text, size_t len, size_t from) {
    long best = -1;
    for (size_t k = 0; k < n; k++) {
        size_t L = strlen(stops[k]);
        if (L > len) continue;
        size_t i = from >= L ? from - L + 1 : 0;
        const char *hit = memmem(text + i, len - i, stops[k], L);
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}
