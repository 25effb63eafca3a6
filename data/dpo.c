/*
 * dpo.c: preference pairs (see dpo.h): JSONL lines to two rendered
 * sequences through SFT's renderer, rows of pairs, and the losses.
 */
#include "dpo.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonl.h"
#include "loader.h"
#include "pack.h"

// ----------------------------------------------------------------------------
// losses

static const char *const loss_names[DPO_LOSS_COUNT] = {"sigmoid", "robust", "ipo", "hinge"};

const char *dpo_loss_name(DpoLoss l) { return (unsigned)l < DPO_LOSS_COUNT ? loss_names[l] : "?"; }

int dpo_loss_parse(const char *s, DpoLoss *l, Err *e) {
    for (int i = 0; i < DPO_LOSS_COUNT; i++)
        if (strcmp(s, loss_names[i]) == 0) return *l = (DpoLoss)i, 0;
    return err_set(e, "--loss-type: unknown loss '%.40s' (expected sigmoid, robust, ipo or hinge)", s);
}

int dpo_check(double beta, double ls, Err *e) {
    if (!(beta > 0) || !isfinite(beta)) return err_set(e, "--beta: must be positive, got %g", beta);
    if (!(ls >= 0 && ls < 0.5)) return err_set(e, "--label-smoothing: must be in [0, 0.5), got %g", ls);
    return 0;
}

/* log sigmoid(z) without overflow */
static double log_sigmoid(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }
static double sigmoid(double z) { return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)); }

double dpo_loss(DpoLoss l, double beta, double ls, double h, double *dh) {
    double z = beta * h, s = sigmoid(z);
    switch (l) {
    case DPO_SIGMOID: /* d/dz = -(1-ls)(1-s) + ls s */
        *dh = beta * (s - (1 - ls));
        return -(1 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z);
    case DPO_ROBUST: /* d/dz = (-(1-ls)(1-s) - ls s) / (1-2ls) */
        *dh = beta * (s - (1 - ls) / (1 - 2 * ls));
        return (-(1 - ls) * log_sigmoid(z) + ls * log_sigmoid(-z)) / (1 - 2 * ls);
    case DPO_IPO: {
        double d = h - 1 / (2 * beta);
        *dh = 2 * d;
        return d * d;
    }
    case DPO_HINGE:
        *dh = z < 1 ? -beta : 0;
        return z < 1 ? 1 - z : 0;
    default:
        LC_FATAL("unknown DPO loss %d", (int)l);
    }
}

// ----------------------------------------------------------------------------
// pairs

void dpo_free(DpoSet *s) {
    free(s->ids);
    free(s->mask);
    free(s->off);
    free(s->margin);
    memset(s, 0, sizeof *s);
}

static void add_seq(DpoSet *s, const int32_t *ids, const uint8_t *mask, size_t n) {
    if (s->ntok + n > s->cap_tok) {
        s->cap_tok = 2 * (s->ntok + n) + 4096;
        s->ids = xrealloc(s->ids, s->cap_tok * sizeof *s->ids);
        s->mask = xrealloc(s->mask, s->cap_tok);
    }
    if (2 * s->n + 3 > s->cap_seq) {
        s->cap_seq = 4 * s->n + 1024;
        s->off = xrealloc(s->off, s->cap_seq * sizeof *s->off);
    }
    memcpy(s->ids + s->ntok, ids, n * sizeof *ids);
    memcpy(s->mask + s->ntok, mask, n);
    s->ntok += n;
}

/* The HH layout: prompt, chosen and rejected out of two whole
 * conversations (new references; the caller decrefs). */
static int split_shared(json_t *c, json_t *r, json_t **p, json_t **cc, json_t **rr, const char *where, Err *e) {
    if (json_is_string(c) && json_is_string(r)) {
        const char *a = json_string_value(c), *b = json_string_value(r);
        size_t na = json_string_length(c), nb = json_string_length(r), k = 0;
        while (k < na && k < nb && a[k] == b[k]) k++;
        if (k == na || k == nb)
            return err_set(e, "%s: empty completion: \"%s\" is all prompt (the part both share)", where,
                           k == na ? "chosen" : "rejected");
        if (k > 0 && a[k - 1] == ' ') k--; /* TRL's extract_prompt leaves the space to the completions */
        if (k == 0) return err_set(e, "%s: \"chosen\" and \"rejected\" share no prompt (and there is no \"prompt\")", where);
        *p = json_stringn(a, k);
        *cc = json_stringn(a + k, na - k);
        *rr = json_stringn(b + k, nb - k);
        return 0;
    }
    if (!json_is_array(c) || !json_is_array(r))
        return err_set(e, "%s: \"chosen\" and \"rejected\" must both be strings or both message lists", where);
    size_t na = json_array_size(c), nb = json_array_size(r), k = 0;
    while (k < na && k < nb && json_equal(json_array_get(c, k), json_array_get(r, k))) k++;
    if (k == na || k == nb)
        return err_set(e, "%s: empty completion: \"%s\" has no message past the prompt (the messages both share)",
                       where, k == na ? "chosen" : "rejected");
    if (k == 0) return err_set(e, "%s: \"chosen\" and \"rejected\" share no prompt message (and there is no \"prompt\")", where);
    *p = json_array();
    *cc = json_array();
    *rr = json_array();
    for (size_t i = 0; i < na; i++) json_array_append(i < k ? *p : *cc, json_array_get(c, i));
    for (size_t i = k; i < nb; i++) json_array_append(*rr, json_array_get(r, i));
    return 0;
}

static size_t first_masked(const ChatTokens *t) {
    size_t i = 0;
    while (i < t->n && !t->mask[i]) i++;
    return i;
}

/* One line's pair into s (or counted as dropped). */
static int add_pair(DpoSet *s, SftRender *b, ChatTokens *ct, json_t *obj, const SftOpts *o, const char *where, Err *e) {
    json_t *c = json_object_get(obj, "chosen"), *r = json_object_get(obj, "rejected"), *p = json_object_get(obj, "prompt");
    if (!c || !r) return err_set(e, "%s: no field \"%s\"", where, c ? "rejected" : "chosen");
    if (json_equal(c, r)) return err_set(e, "%s: \"chosen\" is identical to \"rejected\"", where);
    json_t *pp = NULL, *cc = NULL, *rr = NULL;
    if (!p) {
        if (split_shared(c, r, &pp, &cc, &rr, where, e)) return -1;
    } else {
        pp = json_incref(p), cc = json_incref(c), rr = json_incref(r);
    }
    int rc = sft_render_prompt(b, pp, cc, "chosen", where, e);
    if (!rc) {
        ct->n = 0; /* keep chosen while rejected renders */
        chat_tokens_push(ct, b->ex.ids, b->ex.n, 0);
        if (ct->n) memcpy(ct->mask, b->ex.mask, ct->n);
        rc = sft_render_prompt(b, pp, rr, "rejected", where, e);
    }
    json_decref(pp); json_decref(cc); json_decref(rr);
    if (rc) return -1;
    ChatTokens *rj = &b->ex;
    size_t pc = first_masked(ct), pr = first_masked(rj), pl = pc < pr ? pc : pr;
    if (pc == ct->n || pr == rj->n)
        return err_set(e, "%s: empty completion: \"%s\" renders no token past the prompt", where,
                       pc == ct->n ? "chosen" : "rejected");
    if (pl == 0) return err_set(e, "%s: empty \"prompt\": nothing to condition the completions on", where);
    json_t *mg = json_object_get(obj, "margin");
    if (mg && !json_is_number(mg))
        return err_set(e, "%s: \"margin\" must be a number (how much chosen is preferred), got %s", where,
                       json_is_string(mg) ? "a string" : "another JSON type");
    s->lines++;
    if (pl >= (size_t)o->max_len || (o->drop_long && (ct->n > (size_t)o->max_len || rj->n > (size_t)o->max_len))) {
        s->dropped_long++;
        return 0;
    }
    if (s->n + 1 > s->cap_pair) {
        s->cap_pair = 2 * s->n + 256;
        s->margin = xrealloc(s->margin, s->cap_pair * sizeof *s->margin);
    }
    s->margin[s->n] = mg ? json_number_value(mg) : 0.0;
    s->has_margin += mg != NULL;
    int cut = 0;
    ChatTokens *seq[2] = {ct, rj};
    for (int k = 0; k < 2; k++) {
        ChatTokens *t = seq[k];
        for (size_t i = pl; i < t->n; i++) t->mask[i] = 1;
        for (size_t i = 0; i < pl; i++) t->mask[i] = 0;
        size_t n = t->n;
        if (n > (size_t)o->max_len) n = (size_t)o->max_len, cut = 1;
        add_seq(s, t->ids, t->mask, n);
        s->off[2 * s->n + 1 + (size_t)k] = s->ntok;
    }
    s->n++;
    s->truncated += cut;
    return 0;
}

/* dpo_load's state across the lines of a file */
typedef struct {
    DpoSet *s;
    const SftOpts *o;
    SftRender b;
    ChatTokens ct;    /* chosen, kept while rejected renders */
} Loading;

static int load_line(void *ud, json_t *obj, const char *where, Err *e) {
    Loading *L = ud;
    return add_pair(L->s, &L->b, &L->ct, obj, L->o, where, e);
}

int dpo_load(DpoSet *s, const char *path, const Tokenizer *t, const SftOpts *o, Err *e) {
    memset(s, 0, sizeof *s);
    if (o->max_len < 2) return err_set(e, "--max-length: must be at least 2, got %d", o->max_len);
    s->cap_seq = 1024;
    s->off = xmalloc(s->cap_seq * sizeof *s->off);
    s->off[0] = 0;
    Loading L = {s, o, {0}, {0}};
    sft_render_init(&L.b, t, o, SFT_LOSS_COMPLETION);
    int rc = jsonl_each(path, JSONL_OBJECT, load_line, &L, e);
    sft_render_free(&L.b);
    chat_tokens_free(&L.ct);
    if (!rc && s->n == 0)
        rc = err_set(e, "%s: no usable pair (%ld lines; %ld whose prompt alone has --max-length %d tokens or more "
                        "dropped)", path, s->lines, s->dropped_long, o->max_len);
    if (rc) dpo_free(s);
    return rc;
}

uint64_t dpo_hash(const DpoSet *s) {
    return pack_hash(0x64706fULL /* "dpo" */, s->ids, s->mask, s->ntok, s->off, 2 * s->n + 1);
}

// ----------------------------------------------------------------------------
// rows

void dpo_batch_init(DpoBatch *b, int B, int T) {
    b->npairs = 0;
    b->pair = xmalloc(((size_t)B * T / 2 + 1) * sizeof *b->pair);
    b->seg = xmalloc((size_t)B * T * sizeof *b->seg);
}

void dpo_batch_free(DpoBatch *b) {
    free(b->pair);
    free(b->seg);
    memset(b, 0, sizeof *b);
}

/* Slots of pair i in r's rows. */
static size_t pair_slots(const DpoRows *r, size_t i) {
    return dpo_pair_slots(r->set, i) + (r->whole ? 2 : 0);
}

int dpo_rows_init(DpoRows *r, const DpoSet *s, int B, int T, int packed, int whole, int pad, uint64_t seed,
                  const char *name, Err *e) {
    memset(r, 0, sizeof *r);
    r->whole = whole;
    r->B = B;
    r->T = T;
    r->packed = packed;
    r->pad = pad;
    r->seed = seed;
    r->set = s;
    size_t n = s->n;
    for (size_t i = 0; i < n; i++)
        if (pair_slots(r, i) > (size_t)T)
            return err_set(e, "%s: pair %zu needs %zu slots (chosen and rejected in one row), more than --seq %d",
                           name, i + 1, pair_slots(r, i), T);
    int *need = xmalloc((n ? n : 1) * sizeof *need);
    for (size_t i = 0; i < n; i++) need[i] = (int)pair_slots(r, i);
    pack_rows(need, n, T, packed ? PACK_FIRST_FIT : PACK_NONE, &r->nrows, &r->row_off, &r->items, &r->slots_used);
    free(need);
    if (r->nrows < (size_t)B) {
        err_set(e, "%s: %zu pairs make %zu rows of %d tokens, fewer than one batch of %d", name, n, r->nrows, T, B);
        dpo_rows_free(r);
        return -1;
    }
    r->order = xmalloc(r->nrows * sizeof *r->order);
    loader_permute(r->order, r->nrows, seed, 0);
    for (int k = 0; k < DPO_RING; k++) dpo_batch_init(&r->ring[k], B, T);
    return 0;
}

void dpo_rows_free(DpoRows *r) {
    free(r->row_off);
    free(r->items);
    free(r->order);
    for (int k = 0; k < DPO_RING; k++) dpo_batch_free(&r->ring[k]);
    memset(r, 0, sizeof *r);
}

int dpo_rows_seek(DpoRows *r, uint64_t epoch, uint64_t pos, Err *e) {
    if (pack_cursor_check(pos, r->B, r->nrows, e)) return -1;
    r->epoch = epoch;
    r->pos = pos;
    r->drawn = 0;
    return 0;
}

/* Pairs items[0..n) into row b of a batch from slot 0; padding after. */
static void fill_row(const DpoRows *r, const uint32_t *items, size_t n, int b, int32_t *tok, int32_t *tgt,
                     int32_t *pos, DpoBatch *out) {
    const DpoSet *s = r->set;
    int T = r->T, t = 0;
    int32_t *tk = tok + (size_t)b * T, *tg = tgt + (size_t)b * T, *ps = pos + (size_t)b * T;
    int32_t *sg = out->seg + (size_t)b * T;
    for (size_t k = 0; k < n; k++) {
        int j = out->npairs++;
        out->pair[j] = items[k];
        for (int c = 0; c < 2; c++) {
            size_t q = 2 * (size_t)items[k] + (size_t)c;
            const int32_t *ids = s->ids + s->off[q];
            const uint8_t *mk = s->mask + s->off[q];
            int len = (int)(s->off[q + 1] - s->off[q]), w = r->whole;
            for (int i = 0; i + 1 - w < len; i++, t++) {
                tk[t] = ids[i];
                tg[t] = !w && mk[i + 1] ? ids[i + 1] : LC_IGNORE;
                ps[t] = i;
                sg[t] = 2 * j + c;
            }
        }
    }
    for (int i = 0; t < T; t++, i++) { /* padding: a document of its own, never trained */
        tk[t] = r->pad;
        tg[t] = LC_IGNORE;
        ps[t] = i;
        sg[t] = -1;
    }
}

void dpo_rows_next(DpoRows *r, int32_t *tok, int32_t *tgt, int32_t *pos) {
    if (r->order_epoch != r->epoch) {
        loader_permute(r->order, r->nrows, r->seed, r->epoch);
        r->order_epoch = r->epoch;
    }
    DpoBatch *out = &r->ring[r->drawn % DPO_RING];
    out->npairs = 0;
    for (int b = 0; b < r->B; b++) {
        size_t row = r->order[r->pos + (uint64_t)b];
        fill_row(r, r->items + r->row_off[row], r->row_off[row + 1] - r->row_off[row], b, tok, tgt, pos, out);
    }
    r->drawn++;
    r->pos += (uint64_t)r->B;
    if (r->pos + (uint64_t)r->B > r->nrows) {
        r->epoch++;
        r->pos = 0;
    }
}

const DpoBatch *dpo_rows_last(const DpoRows *r, int back) {
    LC_ASSERT(back >= 0 && back < DPO_RING && (unsigned)back < r->drawn);
    return &r->ring[(r->drawn - 1 - (unsigned)back) % DPO_RING];
}

void dpo_rows_fill(const DpoRows *r, size_t row0, int32_t *tok, int32_t *tgt, int32_t *pos, DpoBatch *out) {
    out->npairs = 0;
    for (int b = 0; b < r->B; b++) {
        size_t row = row0 + (size_t)b;
        if (row < r->nrows) fill_row(r, r->items + r->row_off[row], r->row_off[row + 1] - r->row_off[row], b, tok, tgt, pos, out);
        else fill_row(r, NULL, 0, b, tok, tgt, pos, out);
    }
}
