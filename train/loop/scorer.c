/*
 * scorer.c: rewards from reward models (see scorer.h): the spec, each model
 * loaded onto its device with its tokenizer and template, items rendered as
 * the pair loader renders a pair's side (data/dpo.c through
 * sft_render_prompt), packed into rows with the document mask, and each
 * item's reward read at its last non-pad token.
 *
 * A batch runs at (rows, longest row) rather than the (B, T) the model was
 * built for: every buffer is row-major and sized for B x T, so a smaller
 * (B', T') uses their first rows (llama_prefill does the same with T). A
 * handful of short items then costs their tokens, not B x T.
 */
#include "scorer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../data/chat.h"
#include "../../data/pack.h"
#include "../../data/sft.h"
#include "../../data/tok.h"
#include "../../model/lora.h"
#include "../io/hf.h"
#include "../io/peft.h"
#include "../io/source.h"
#include "../proc/device.h"
#include "ftdata.h"

/* Rows and tokens per row when ScorerOpts leaves them 0: eight rows of
 * the model's context, at most 1024 tokens (most reward data is a prompt
 * and a reply well under it; --seq raises it). The rows items are packed
 * into are shorter still: the call's longest item, at least SCORER_ROW
 * tokens. Attention costs a row's length squared whatever its documents,
 * so 256 samples of 80 tokens packed into 2048-token rows took 2.2x the
 * time (and 2.4x the memory) of rows of 128 (make bench-reward's rs row,
 * 2026-12-07). */
#define SCORER_B 8
#define SCORER_T 1024
#define SCORER_ROW 256

// ----------------------------------------------------------------------------
// the spec

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

int scorer_spec_parse(const char *spec, ScorerSpec **out, int *n, Err *e) {
    *out = NULL;
    *n = 0;
    if (!spec || !*spec) return err_set(e, "--reward-model: empty (give PATH[:WEIGHT],...)");
    int cap = 0;
    ScorerSpec *v = NULL;
    char q[96];
    for (const char *p = spec;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0) {
            free(v);
            return err_set(e, "--reward-model: an empty model in \"%s\"", err_quote(q, sizeof q, spec, strlen(spec)));
        }
        if (len >= sizeof v->name) {
            free(v);
            return err_set(e, "--reward-model: a model path of %zu bytes is too long", len);
        }
        if (*n == cap) v = xrealloc(v, (size_t)(cap = 2 * cap + 4) * sizeof *v);
        ScorerSpec *s = &v[(*n)++];
        memset(s, 0, sizeof *s);
        memcpy(s->name, p, len);
        s->weight = 1.0;
        char *colon = strrchr(s->name, ':');
        if (colon) {
            const char *w = colon + 1;
            *colon = 0; /* the name alone, for the messages */
            char *wend;
            double x = strtod(w, &wend);
            if (!*w || *wend || wend == w) {
                int rc = err_set(e, "--reward-model: the weight \"%s\" of %.100s is not a number",
                                 err_quote(q, sizeof q, w, strlen(w)), s->name);
                free(v);
                return rc;
            }
            if (!isfinite(x)) {
                int rc = err_set(e, "--reward-model: the weight of %.100s is not finite", s->name);
                free(v);
                return rc;
            }
            s->weight = x;
        }
        if (!s->name[0]) {
            free(v);
            return err_set(e, "--reward-model: a weight without a model path in \"%s\"",
                           err_quote(q, sizeof q, spec, strlen(spec)));
        }
        char *plus = strrchr(s->name, '+');
        if (plus && !exists(s->name)) {
            size_t nb = (size_t)(plus - s->name);
            if (nb == 0 || !plus[1]) {
                int rc = err_set(e, "--reward-model: %.100s: BASE+ADAPTER_DIR needs both", s->name);
                free(v);
                return rc;
            }
            memcpy(s->base, s->name, nb);
            snprintf(s->adapter, sizeof s->adapter, "%s", plus + 1);
        } else {
            snprintf(s->base, sizeof s->base, "%s", s->name);
        }
        for (int k = 0; k + 1 < *n; k++)
            if (strcmp(v[k].name, s->name) == 0) {
                int rc = err_set(e, "--reward-model: %.100s is named twice", s->name);
                free(v);
                return rc;
            }
        if (!end) break;
        p = end + 1;
    }
    *out = v;
    return 0;
}

// ----------------------------------------------------------------------------
// one model

typedef struct {
    ScorerSpec sp;
    LlamaConfig c;
    Tokenizer tok;
    char tokpath[4200];
    SftOpts so;        /* the renderer's options: template, BOS */
    SftRender r;
    int pad;           /* the id read as padding (c.pad_id, else EOS; -1: none) */
    int fill;          /* the id written after a row's items */
    int T;             /* tokens per row */
    Device dev;
    Llama m;
    int loaded;
    float *score;      /* backend (B x T, num_labels) */
} Model;

struct Scorer {
    int n, B;
    Model *mod;
    /* host work buffers, sized for the largest B x T */
    int32_t *tok, *pos;
    float *score;
    /* one model's rendering of a call's items: item i is ids[off[i] .. off[i+1]) */
    int32_t *ids;
    size_t *off, cap_ids, cap_off;
    int *need;
};

/* The tokenizer of a model: --reward-tokenizer, the source's own, else the
 * adapter directory's (PEFT trainers save it beside the adapter). */
static int open_tokenizer(Model *md, const ModelSource *ms, const ScorerOpts *o, Err *e) {
    const char *tp = o->tokenizer;
    if (!tp && ms->tokenizer[0]) tp = ms->tokenizer;
    if (!tp && md->sp.adapter[0] && hf_tokenizer(md->sp.adapter, md->tokpath, sizeof md->tokpath) == 0) tp = md->tokpath;
    if (!tp) return err_set(e, "%.180s: no tokenizer of its own: give --reward-tokenizer", md->sp.name);
    if (tp != md->tokpath) snprintf(md->tokpath, sizeof md->tokpath, "%s", tp);
    if (tok_load(&md->tok, md->tokpath, e)) return -1;
    if ((ms->tokenizer_id && md->tok.id != ms->tokenizer_id) || md->tok.vocab > md->c.vocab)
        return err_set(e, "%.120s: not the tokenizer %.120s was trained with", md->tokpath, md->sp.name);
    return 0;
}

/* The renderer: --reward-template (or the tokenizer's own, or none), BOS
 * by --bos as the fine-tuning modes decide it. */
static int open_renderer(Model *md, const ScorerOpts *o, Err *e) {
    SftOpts *so = &md->so;
    *so = (SftOpts){SFT_PROMPT, SFT_LOSS_COMPLETION, -1, "text", 1 << 30, 0, 0, NULL};
    if (o->tpl_name && strcmp(o->tpl_name, "none") != 0) {
        ChatTemplate t;
        if (chat_template_parse(o->tpl_name, &t, e)) return err_set(e, "--reward-template: unknown template '%.40s' "
                                                                       "(llama2, llama3, llama3.1, chatml or none)",
                                                                    o->tpl_name);
        so->tpl = (int)t;
    } else if (!o->tpl_name) {
        ChatTemplate t;
        int found = chat_template_of(&md->tok, md->tokpath, &t, NULL, e);
        if (found < 0) return -1;
        if (found) so->tpl = (int)t;
    }
    const char *bos = o->bos ? o->bos : "auto";
    if (strcmp(bos, "auto") && strcmp(bos, "0") && strcmp(bos, "1"))
        return err_set(e, "--bos: must be auto, 0 or 1, got '%.40s'", bos);
    FtData fd;
    ftdata_default(&fd);
    fd.bos = bos;
    so->bos = ftdata_bos(&fd, &md->tok);
    sft_render_init(&md->r, &md->tok, so, SFT_LOSS_COMPLETION);
    return 0;
}

/* The weights into host params laid out by the model's table: the source
 * (a causal-LM base under a classifier's table through source_load_as: its
 * trunk by name, a placeholder head), then the adapter merged, whose head
 * replaces the placeholder. */
static int load_weights(Model *md, const ModelSource *ms, const PeftAdapter *a, float *params, Err *e) {
    const ParamTable *t = &md->m.t;
    if (source_load_as(ms, &md->c, t, params, 0, e)) return -1;
    if (a) lora_merge(&a->lc, &md->c, t, params, &a->t, a->params, +1);
    return 0;
}

static int open_model(Model *md, const ScorerOpts *o, int B, Err *e) {
    ModelSource ms;
    if (source_open(&ms, md->sp.base, e)) return -1;
    md->c = ms.c;
    PeftAdapter a;
    memset(&a, 0, sizeof a);
    int causal = ms.c.num_labels == 0, rc = -1;
    if (md->sp.adapter[0]) {
        if (causal) { /* a reward head trained beside the adapters on a causal LM */
            md->c.num_labels = 1;
            md->c.tied = 0;
        }
        if (peft_load(md->sp.adapter, &md->c, &a, e)) return -1;
        if (causal && !a.lc.head) {
            peft_free(&a);
            return err_set(e, "%.160s: not a reward model: the base is a causal LM and the adapter carries no score "
                              "head (modules_to_save [\"score\"])", md->sp.name);
        }
    }
    if (md->c.num_labels != 1) {
        peft_free(&a);
        return err_set(e, "%.180s: not a reward model (num_labels %d, want 1)", md->sp.name, md->c.num_labels);
    }
    if (open_tokenizer(md, &ms, o, e) || open_renderer(md, o, e)) goto out;
    md->pad = md->c.pad_id >= 0 ? md->c.pad_id : md->tok.eos;
    md->fill = md->pad >= 0 ? md->pad : 0;
    long T = o->T ? o->T : (md->c.max_seq < SCORER_T ? md->c.max_seq : SCORER_T);
    if (T > md->c.max_seq) {
        err_set(e, "--seq: %ld exceeds the context length %d of %.120s", T, md->c.max_seq, md->sp.name);
        goto out;
    }
    md->T = (int)T;
    if (device_open(&md->dev, o->device ? o->device : "cpu", e)) goto out;
    if (device_check_fits(&md->dev, &md->c, B, md->T, 0, e) ||
        llama_init_opts(&md->m, &md->c, md->dev.ops, md->dev.ctx, B, md->T, NULL, e)) {
        llama_free(&md->m);
        device_close(&md->dev);
        goto out;
    }
    md->loaded = 1;
    HostView hv;
    device_host_view(&md->m, NULL, &hv);
    rc = load_weights(md, &ms, md->sp.adapter[0] ? &a : NULL, hv.m.params, e);
    if (rc == 0) device_host_push(&hv, &md->m, NULL);
    device_host_free(&hv);
    if (rc == 0)
        md->score = md->m.ops->alloc(md->m.ctx, (size_t)B * md->T * md->c.num_labels * sizeof(float));
out:
    peft_free(&a);
    return rc;
}

static void close_model(Model *md) {
    if (md->loaded) {
        if (md->score) md->m.ops->free(md->m.ctx, md->score);
        llama_free(&md->m);
        device_close(&md->dev);
    }
    sft_render_free(&md->r);
    tok_free(&md->tok);
    memset(md, 0, sizeof *md);
}

// ----------------------------------------------------------------------------
// the scorer

int scorer_open(Scorer **out, const ScorerOpts *o, Err *e) {
    *out = NULL;
    ScorerSpec *sp;
    int n;
    if (scorer_spec_parse(o->spec, &sp, &n, e)) return -1;
    if (o->B < 0 || o->T < 0 || o->T == 1) {
        free(sp);
        return err_set(e, "%s", o->B < 0 ? "--batch: must be at least 1" : "--seq: must be at least 2");
    }
    Scorer *s = xcalloc(1, sizeof *s);
    s->n = n;
    s->B = o->B ? (int)o->B : SCORER_B;
    s->mod = xcalloc((size_t)n, sizeof *s->mod);
    size_t most = 0;
    for (int k = 0; k < n; k++) {
        s->mod[k].sp = sp[k];
        if (open_model(&s->mod[k], o, s->B, e)) {
            free(sp);
            scorer_close(s);
            return -1;
        }
        size_t bt = (size_t)s->B * s->mod[k].T;
        if (bt > most) most = bt;
    }
    free(sp);
    s->tok = xmalloc(most * sizeof *s->tok);
    s->pos = xmalloc(most * sizeof *s->pos);
    s->score = xmalloc(most * sizeof *s->score);
    *out = s;
    return 0;
}

int scorer_count(const Scorer *s) { return s->n; }
const char *scorer_name(const Scorer *s, int k) { return s->mod[k].sp.name; }
double scorer_weight(const Scorer *s, int k) { return s->mod[k].sp.weight; }

void scorer_close(Scorer *s) {
    if (!s) return;
    for (int k = 0; k < s->n; k++) close_model(&s->mod[k]);
    free(s->mod);
    free(s->tok);
    free(s->pos);
    free(s->score);
    free(s->ids);
    free(s->off);
    free(s->need);
    free(s);
}

/* Item it into md->r.ex as a pair's side renders (see scorer.h). */
static int render(Model *md, const ScoreItem *it, const char *where, Err *e) {
    json_t *p = it->prompt, *c = it->completion;
    if (!c) return err_set(e, "%s: nothing to score", where);
    int msgs = json_is_array(c) || json_is_object(c) || json_is_array(p);
    if (msgs && md->so.tpl < 0)
        return err_set(e, "%s: chat messages need a chat template: %.100s comes with none (give --reward-template)",
                       where, md->tokpath);
    json_t *pp = NULL, *cc = NULL;
    if (!p && json_is_string(c)) { /* a whole text: BOS, its ids, EOS, as prompt "" + it */
        pp = json_string("");
        cc = json_incref(c);
    } else if (!p && json_is_array(c)) { /* a whole conversation: its last message is the reply */
        size_t n = json_array_size(c);
        if (n < 2) return err_set(e, "%s: a conversation needs a reply after at least one message", where);
        pp = json_array();
        for (size_t i = 0; i + 1 < n; i++) json_array_append(pp, json_array_get(c, i));
        cc = json_pack("[O]", json_array_get(c, n - 1));
    } else if (json_is_array(p) && json_is_string(c)) { /* the reply as text */
        pp = json_incref(p);
        cc = json_pack("[{s:s,s:O}]", "role", "assistant", "content", c);
    } else if (json_is_array(p) && json_is_object(c)) { /* the reply as one message */
        pp = json_incref(p);
        cc = json_pack("[O]", c);
    } else {
        pp = json_incref(p);
        cc = json_incref(c);
    }
    int rc = sft_render_prompt(&md->r, pp, cc, "completion", where, e);
    json_decref(pp);
    json_decref(cc);
    return rc;
}

/* The rewards of items[0..n) under model k into per[i * count + k]. */
static int score_model(Scorer *s, int k, const ScoreItem *items, size_t n, double *per, Err *e) {
    Model *md = &s->mod[k];
    int B = s->B, T = md->T, NL = md->c.num_labels;
    if (n + 1 > s->cap_off) {
        s->off = xrealloc(s->off, (s->cap_off = 2 * n + 16) * sizeof *s->off);
        s->need = xrealloc(s->need, s->cap_off * sizeof *s->need);
    }
    s->off[0] = 0;
    for (size_t i = 0; i < n; i++) {
        char w[64];
        const char *where = items[i].where;
        if (!where) snprintf(w, sizeof w, "item %zu", i), where = w;
        if (render(md, &items[i], where, e)) return -1;
        const ChatTokens *x = &md->r.ex;
        if (x->n > (size_t)T)
            return err_set(e, "%s: %zu tokens, more than the %d a row of %.100s holds (raise --seq)", where, x->n, T,
                           md->sp.name);
        if (x->n == 0) return err_set(e, "%s: renders no token", where);
        if (s->off[i] + x->n > s->cap_ids) s->ids = xrealloc(s->ids, (s->cap_ids = 2 * (s->off[i] + x->n) + 4096) * sizeof *s->ids);
        memcpy(s->ids + s->off[i], x->ids, x->n * sizeof *x->ids);
        s->off[i + 1] = s->off[i] + x->n;
        s->need[i] = (int)x->n;
    }
    int R = SCORER_ROW; /* the packed rows' length (see the top) */
    for (size_t i = 0; i < n; i++) R = s->need[i] > R ? s->need[i] : R;
    if (R > T) R = T;
    size_t nrows, *row_off;
    uint32_t *rows;
    long used;
    pack_rows(s->need, n, R, PACK_FIRST_FIT, &nrows, &row_off, &rows, &used);
    int rc = 0;
    for (size_t r0 = 0; r0 < nrows && rc == 0; r0 += (size_t)B) {
        int Bb = nrows - r0 < (size_t)B ? (int)(nrows - r0) : B, Tb = 0;
        for (int b = 0; b < Bb; b++) {
            int len = 0;
            for (size_t j = row_off[r0 + b]; j < row_off[r0 + b + 1]; j++) len += s->need[rows[j]];
            if (len > Tb) Tb = len;
        }
        for (int b = 0; b < Bb; b++) { /* each item a document, then padding as one of its own */
            int32_t *tk = s->tok + (size_t)b * Tb, *ps = s->pos + (size_t)b * Tb;
            int t = 0;
            for (size_t j = row_off[r0 + b]; j < row_off[r0 + b + 1]; j++) {
                size_t i = rows[j];
                for (int q = 0; q < s->need[i]; q++, t++) tk[t] = s->ids[s->off[i] + (size_t)q], ps[t] = q;
            }
            for (int q = 0; t < Tb; t++, q++) tk[t] = md->fill, ps[t] = q;
        }
        Llama *m = &md->m;
        m->B = Bb, m->T = Tb; /* the first rows of every (B, T) buffer (see the top) */
        rc = llama_set_batch(m, s->tok, NULL, s->pos, e);
        if (rc == 0) {
            llama_forward_score(m, 0, md->score);
            size_t cnt = (size_t)Bb * Tb * NL;
            if (m->ops->download_act) m->ops->download_act(m->ctx, s->score, md->score, cnt);
            else m->ops->download(m->ctx, s->score, md->score, cnt * sizeof(float));
        }
        m->B = B, m->T = T;
        for (int b = 0; rc == 0 && b < Bb; b++) {
            size_t at = (size_t)b * Tb;
            for (size_t j = row_off[r0 + b]; j < row_off[r0 + b + 1]; j++) {
                size_t i = rows[j];
                const int32_t *ids = s->ids + s->off[i];
                int last = s->need[i] - 1;
                while (last > 0 && ids[last] == md->pad) last--; /* transformers: the last non-pad token */
                per[i * (size_t)s->n + (size_t)k] = s->score[(at + (size_t)last) * NL];
                at += (size_t)s->need[i];
            }
        }
    }
    free(row_off);
    free(rows);
    return rc;
}

int scorer_score(Scorer *s, const ScoreItem *items, size_t n, double *per, double *total, Err *e) {
    if (n == 0) return 0;
    double *own = per ? NULL : xmalloc(n * (size_t)s->n * sizeof *own), *pv = per ? per : own;
    int rc = 0;
    for (int k = 0; k < s->n && rc == 0; k++) rc = score_model(s, k, items, n, pv, e);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        double t = 0;
        for (int k = 0; k < s->n; k++) t += s->mod[k].sp.weight * pv[i * (size_t)s->n + (size_t)k];
        total[i] = t;
    }
    free(own);
    return rc;
}
