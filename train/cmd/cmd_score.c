/*
 * cmd_score.c: `llamac score`: the rewards of a JSONL file's texts under
 * one or several reward models (train/loop/scorer.h), each line written
 * back with its rewards; for preference pairs also the pairs' accuracy and
 * mean margin (how well the models rank chosen over rejected).
 *
 * Every line of the file is read and checked before a model loads; the
 * lines are then scored a chunk at a time and written to OUT.tmp, renamed
 * to OUT once whole (a failed run leaves no OUT).
 */
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/jsonl.h"
#include "../loop/ftdata.h"
#include "../loop/run.h"
#include "../loop/scorer.h"
#include "../proc/cli.h"
#include "../proc/device.h"
#include "cmds.h"

/* Lines scored per scorer_score call: enough items for full batches, few
 * enough that the progress line moves. */
#define CHUNK 256

// ----------------------------------------------------------------------------
// the input

typedef struct {
    const char *path;
    json_t **obj;      /* (n) each line's object, owned */
    long *line;        /* (n) its line number */
    size_t n, cap;
    int pairs;         /* -1 until the first line: 1 pairs, 0 single items */
    long first_line;
} Input;

/* A line's kind: 1 a pair, 0 a single item; -1 with e naming the line. */
static int line_kind(json_t *o, const char *where, Err *e) {
    json_t *c = json_object_get(o, "chosen"), *r = json_object_get(o, "rejected");
    if (c || r) {
        if (!c || !r) return err_set(e, "%s: no field \"%s\"", where, c ? "rejected" : "chosen");
        return 1;
    }
    json_t *p = json_object_get(o, "prompt"), *k = json_object_get(o, "completion");
    if (p || k) {
        if (!p || !k) return err_set(e, "%s: no field \"%s\"", where, p ? "completion" : "prompt");
        return 0;
    }
    json_t *m = json_object_get(o, "messages"), *t = json_object_get(o, "text");
    if (m) return json_is_array(m) ? 0 : err_set(e, "%s: \"messages\" must be a list of messages", where);
    if (t) return json_is_string(t) ? 0 : err_set(e, "%s: \"text\" must be a string", where);
    return err_set(e, "%s: nothing to score: no \"prompt\"+\"completion\", \"chosen\"+\"rejected\", \"messages\" or "
                      "\"text\" field", where);
}

static int read_line(void *ud, json_t *o, const char *where, Err *e) {
    Input *in = ud;
    int k = line_kind(o, where, e);
    if (k < 0) return -1;
    long ln = strtol(strrchr(where, ':') + 1, NULL, 10);
    if (in->pairs < 0) {
        in->pairs = k;
        in->first_line = ln;
    } else if (k != in->pairs) {
        return err_set(e, "%s: %s in a file of %s (line %ld is one)", where, k ? "a pair" : "a single item",
                       in->pairs ? "pairs" : "single items", in->first_line);
    }
    if (in->n == in->cap) {
        in->cap = 2 * in->cap + 64;
        in->obj = xrealloc(in->obj, in->cap * sizeof *in->obj);
        in->line = xrealloc(in->line, in->cap * sizeof *in->line);
    }
    in->obj[in->n] = json_incref(o);
    in->line[in->n++] = ln;
    return 0;
}

static void input_free(Input *in) {
    for (size_t i = 0; i < in->n; i++) json_decref(in->obj[i]);
    free(in->obj);
    free(in->line);
    memset(in, 0, sizeof *in);
}

/* Line i's items (one, or chosen then rejected), wheres in w (64+ bytes each). */
static int line_items(const Input *in, size_t i, ScoreItem *it, char (*w)[4200]) {
    json_t *o = in->obj[i];
    if (in->pairs) {
        json_t *p = json_object_get(o, "prompt");
        snprintf(w[0], sizeof w[0], "%s:%ld (chosen)", in->path, in->line[i]);
        snprintf(w[1], sizeof w[1], "%s:%ld (rejected)", in->path, in->line[i]);
        it[0] = (ScoreItem){p, json_object_get(o, "chosen"), w[0]};
        it[1] = (ScoreItem){p, json_object_get(o, "rejected"), w[1]};
        return 2;
    }
    snprintf(w[0], sizeof w[0], "%s:%ld", in->path, in->line[i]);
    json_t *p = json_object_get(o, "prompt"), *c = json_object_get(o, "completion");
    if (!p) c = json_object_get(o, "messages") ? json_object_get(o, "messages") : json_object_get(o, "text");
    it[0] = (ScoreItem){p, c, w[0]};
    return 1;
}

// ----------------------------------------------------------------------------
// the output

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const char *s) {
    size_t n = strlen(s);
    if (b->n + n + 1 > b->cap) b->p = xrealloc(b->p, b->cap = 2 * (b->n + n) + 256);
    memcpy(b->p + b->n, s, n + 1);
    b->n += n;
}

static void buf_json(Buf *b, const json_t *v) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    buf_put(b, s);
    free(s);
}

/* A reward: the float32 the model computed (a weighted total rounded to
 * one) in its shortest decimal; null when not finite (JSON has no Inf). */
static void buf_reward(Buf *b, double x) {
    char s[32];
    float f = (float)x;
    if (!isfinite(f)) {
        buf_put(b, "null");
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(s, sizeof s, "%.*g", p, (double)f);
        if (strtof(s, NULL) == f) break;
    }
    buf_put(b, s);
}

static int our_key(const char *k) {
    static const char *const ours[] = {"reward", "rewards", "reward_chosen", "reward_rejected", "rewards_chosen",
                                       "rewards_rejected"};
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (strcmp(k, ours[i]) == 0) return 1;
    return 0;
}

/* `,"key":total` and, with several models, `,"keys":{name: reward, ...}`. */
static void put_rewards(Buf *b, const Scorer *s, const char *key, const char *keys, double total, const double *per) {
    int K = scorer_count(s);
    buf_put(b, ",\"");
    buf_put(b, key);
    buf_put(b, "\":");
    buf_reward(b, total);
    if (K < 2) return;
    buf_put(b, ",\"");
    buf_put(b, keys);
    buf_put(b, "\":{");
    for (int k = 0; k < K; k++) {
        json_t *name = json_string(scorer_name(s, k));
        if (k) buf_put(b, ",");
        buf_json(b, name);
        json_decref(name);
        buf_put(b, ":");
        buf_reward(b, per[k]);
    }
    buf_put(b, "}");
}

/* Line i written back: its fields, then ours (which replace any it had). */
static void out_line(Buf *b, const Input *in, size_t i, const Scorer *s, const double *total, const double *per) {
    int K = scorer_count(s);
    const char *key;
    json_t *val;
    int first = 1;
    buf_put(b, "{");
    json_object_foreach(in->obj[i], key, val) {
        if (our_key(key)) continue;
        json_t *k = json_string(key);
        if (!first) buf_put(b, ",");
        first = 0;
        buf_json(b, k);
        buf_put(b, ":");
        buf_json(b, val);
        json_decref(k);
    }
    size_t mark = b->n;
    if (in->pairs) {
        put_rewards(b, s, "reward_chosen", "rewards_chosen", total[0], per);
        put_rewards(b, s, "reward_rejected", "rewards_rejected", total[1], per + K);
    } else {
        put_rewards(b, s, "reward", "rewards", total[0], per);
    }
    if (first) memmove(b->p + mark, b->p + mark + 1, b->n - mark), b->n--; /* no field before ours: no comma */
    buf_put(b, "}\n");
}

// ----------------------------------------------------------------------------
// pairs: accuracy and margin, of the total and of each model

typedef struct {
    long pairs, right;
    double margin;
} PairStats;

static void pair_add(PairStats *ps, double c, double r) {
    ps->pairs++;
    ps->right += c > r;
    ps->margin += c - r;
}

// ----------------------------------------------------------------------------
// the command

typedef struct {
    const char *spec, *data, *out, *tokenizer, *tpl, *bos, *device;
    long B, T, threads;
} Opts;

static int score_all(const Opts *o, const Input *in, Scorer *s, Err *e) {
    int K = scorer_count(s), per_line = in->pairs ? 2 : 1;
    size_t cap = (size_t)CHUNK * per_line;
    ScoreItem *it = xmalloc(cap * sizeof *it);
    char (*w)[4200] = xmalloc(cap * sizeof *w);
    double *total = xmalloc(cap * sizeof *total), *per = xmalloc(cap * (size_t)K * sizeof *per);
    PairStats *st = xcalloc((size_t)K + 1, sizeof *st); /* st[K]: the weighted total */
    FtOut out = {0};
    Buf b = {0};
    int rc = ftdata_out_open(&out, "--out", o->out, e);
    double t0 = time_now(), t_print = t0;
    size_t items = 0;
    for (size_t i0 = 0; rc == 0 && i0 < in->n; i0 += CHUNK) {
        size_t n = in->n - i0 < CHUNK ? in->n - i0 : CHUNK, ni = 0;
        for (size_t i = 0; i < n; i++) ni += (size_t)line_items(in, i0 + i, it + ni, w + ni);
        if ((rc = scorer_score(s, it, ni, per, total, e))) break;
        b.n = 0;
        for (size_t i = 0; i < n; i++) {
            size_t q = i * (size_t)per_line;
            out_line(&b, in, i0 + i, s, total + q, per + q * (size_t)K);
            if (!in->pairs) continue;
            pair_add(&st[K], total[q], total[q + 1]);
            for (int k = 0; k < K; k++) pair_add(&st[k], per[q * (size_t)K + (size_t)k], per[(q + 1) * (size_t)K + (size_t)k]);
        }
        if (b.n && fwrite(b.p, 1, b.n, out.f) != b.n) rc = err_set(e, "--out: cannot write %s", out.tmp);
        items += ni;
        double now = time_now();
        if (now - t_print >= 1.0 && i0 + n < in->n) {
            char c1[32], c2[32];
            double el = now - t0;
            fprintf(stderr, "score: lines %zu/%zu | %.1f items/s | %s elapsed | ETA %s\n", i0 + n, in->n, items / el,
                    run_clock(el, c1, sizeof c1), run_clock(el / (double)(i0 + n) * (double)(in->n - i0 - n), c2, sizeof c2));
            t_print = now;
        }
    }
    if (ftdata_out_close(&out, rc == 0, e)) rc = -1;
    if (rc == 0) {
        double el = time_now() - t0;
        printf("score: %zu %s (%zu items) of %s under %d model%s in %.2f s (%.1f items/s) -> %s\n", in->n,
               in->pairs ? "pairs" : "items", items, o->data, K, K > 1 ? "s" : "", el, el > 0 ? items / el : 0.0, o->out);
        for (int j = 0; in->pairs && j <= (K > 1 ? K : 0); j++) { /* the total, then each model (when several) */
            int k = j == 0 ? K : j - 1;
            const PairStats *p = &st[k];
            printf("score: %s%s: accuracy %.4f (%ld of %ld pairs chosen > rejected), mean margin %.6g\n",
                   k == K ? "" : "  ", k == K ? "total" : scorer_name(s, k), (double)p->right / (double)p->pairs,
                   p->right, p->pairs, p->margin / (double)p->pairs);
        }
    }
    free(b.p);
    free(it);
    free(w);
    free(total);
    free(per);
    free(st);
    return rc;
}

int cmd_score(int argc, char **argv, Err *e) {
    Opts o = {.bos = "auto", .device = "cpu"};
    CliFlag flags[] = {
        {"reward-model", CLI_STR, &o.spec, 0, 0,
         "reward models PATH[:WEIGHT],... (checkpoint, HF LlamaForSequenceClassification directory, or "
         "BASE+PEFT_ADAPTER_DIR); the reward is the weighted sum (weight default 1)"},
        {"data", CLI_STR, &o.data, 0, 0,
         "JSONL: prompt+completion, messages or text per line; or pairs: prompt+chosen+rejected, chosen+rejected"},
        {"out", CLI_STR, &o.out, 0, 0, "JSONL written: each input line with its rewards added"},
        {"reward-tokenizer", CLI_STR, &o.tokenizer, 0, 0,
         "tokenizer for every model (default: each model's own: GGUF, HF directory, the adapter's)"},
        {"reward-template", CLI_STR, &o.tpl, 0, 0,
         "chat template of message items: llama2, llama3, llama3.1, chatml or none (default: each tokenizer's own)"},
        {"bos", CLI_STR, &o.bos, 0, 0,
         "BOS before text items: auto (when the tokenizer's HF version adds it), 0 or 1"},
        {"batch", CLI_INT, &o.B, 1, 1 << 16, "rows per forward (default 8)"},
        {"seq", CLI_INT, &o.T, 2, 1 << 20,
         "tokens per row, the longest item (default: the model's context, at most 1024)"},
        {"threads", CLI_INT, &o.threads, 0, 4096, "OpenMP threads (0: as started)"},
        {"device", CLI_STR, &o.device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help(
            "llamac score --reward-model RM[:W],... --data FILE.jsonl --out OUT.jsonl [flags]",
            "Score texts with reward models (num_labels 1: llamac reward's, or transformers'\n"
            "LlamaForSequenceClassification). Each output line is the input line with:\n"
            "  single items:  \"reward\": the weighted sum of the models' rewards\n"
            "  pairs:         \"reward_chosen\", \"reward_rejected\"\n"
            "and, with several models, \"rewards\" (or \"rewards_chosen\", \"rewards_rejected\"):\n"
            "{model: its own reward}, keyed by the model as --reward-model names it. For pairs it\n"
            "prints the accuracy (the share of pairs whose chosen scores strictly above rejected)\n"
            "and the mean margin (chosen - rejected), of the total and of each model.\n"
            "An item renders as llamac reward and dpo render a pair's side: text gets BOS (--bos)\n"
            "and EOS, messages the chat template; its reward is the score head at its last token\n"
            "that is not the model's pad token (with no pad_token_id, EOS is the pad, as TRL sets\n"
            "it). Each item is scored as if alone, whatever the batch. See docs/reward.md.",
            flags, nf);
        return 0;
    }
    if (!o.spec) return err_set(e, "--reward-model: required (PATH[:WEIGHT],...)");
    if (!o.data) return err_set(e, "--data: required (a JSONL file of items or pairs)");
    if (!o.out) return err_set(e, "--out: required (the JSONL file to write)");
    if (device_check(o.device, e)) return -1;
    ScorerSpec *sp;
    int nsp;
    if (scorer_spec_parse(o.spec, &sp, &nsp, e)) return -1; /* a bad spec fails before the data is read */
    free(sp);
    if (o.threads > 0) omp_set_num_threads((int)o.threads);
    Input in = {o.data, NULL, NULL, 0, 0, -1, 0};
    if (jsonl_each(o.data, JSONL_OBJECT, read_line, &in, e)) return input_free(&in), -1;
    if (in.n == 0) return input_free(&in), err_set(e, "%s: no line to score", o.data);
    ScorerOpts so = {o.spec, o.tokenizer, o.tpl, o.bos, o.device, o.B, o.T};
    Scorer *s = NULL;
    int rc = scorer_open(&s, &so, e);
    if (rc == 0) {
        fprintf(stderr, "score: %zu %s from %s;", in.n, in.pairs ? "pairs" : "items", o.data);
        for (int k = 0; k < scorer_count(s); k++)
            fprintf(stderr, "%s %s (weight %g)", k ? "," : "", scorer_name(s, k), scorer_weight(s, k));
        fprintf(stderr, "\n");
        rc = score_all(&o, &in, s, e);
    }
    scorer_close(s);
    input_free(&in);
    return rc;
}
