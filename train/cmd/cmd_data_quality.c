/*
 * cmd_data_quality.c: `llamac data quality-train` (a fastText-style
 * classifier, data/qclass.h, trained on labelled JSONL) and `llamac data
 * quality` (score documents on every core, keep those with P(hq) at or
 * above a threshold).
 *
 * Training streams the input once per epoch (data/docstream.h): features
 * and labels are computed on every core, the SGD steps run in input order
 * on the calling thread, so a run is deterministic whatever the thread
 * count. A fixed fraction of documents (chosen by a hash of their number
 * and the seed) is held out; their features are kept in memory after the
 * first epoch and scored after each epoch (loss, accuracy at 0.5).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/docstream.h"
#include "../../data/outfile.h"
#include "../../data/qclass.h"
#include "../proc/cli.h"
#include "cmds.h"

static int parse_bad_utf8(const char *bad, int *mode, Err *e) {
    if (strcmp(bad, "refuse") == 0) *mode = DOCS_UTF8_REFUSE;
    else if (strcmp(bad, "skip") == 0) *mode = DOCS_UTF8_SKIP;
    else return err_set(e, "--bad-utf8: expected refuse or skip, not '%s'", bad);
    return 0;
}

/* features of d into its buffer; returns the count */
static size_t doc_features(DocItem *d, uint32_t buckets) {
    uint32_t *f = docstream_buf(d, (d->len + 1) * sizeof(uint32_t));
    size_t nf = qclass_features(d->text, d->len, buckets, f);
    d->nbuf = nf * sizeof(uint32_t);
    return nf;
}

// ----------------------------------------------------------------------------
// quality-train

typedef struct Train {
    QClass m;
    const char *label_field, *pos, *neg;
    long val_per_mille;
    uint64_t seed;
    int epoch;
    float lr;
    float *h;
    /* held-out set, filled in the first epoch */
    uint32_t *vf;
    size_t vn, vcap;
    size_t *voff; /* (nval + 1) offsets into vf */
    uint8_t *vlab;
    size_t nval, valcap;
    /* this epoch */
    double loss;
    uint64_t ntrain, correct, npos;
} Train;

static int is_val(const Train *t, uint64_t index) {
    return (long)(hash_mix64(index ^ (t->seed * 0x9e3779b97f4a7c15ULL)) % 1000) < t->val_per_mille;
}

static int train_map(void *ud, int thread, DocItem *d, Err *e) {
    (void)thread;
    Train *t = ud;
    json_t *v = json_is_object(d->json) ? json_object_get(d->json, t->label_field) : NULL;
    if (!v) return err_set(e, "%s: no label field '%s'", d->where, t->label_field);
    if (json_is_string(v) && strcmp(json_string_value(v), t->pos) == 0) d->keep = 1;
    else if (json_is_string(v) && strcmp(json_string_value(v), t->neg) == 0) d->keep = 0;
    else if (json_is_boolean(v)) d->keep = json_is_true(v);
    else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        d->keep = (int)json_integer_value(v);
    else {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        err_set(e, "%s: label %.40s is neither '%s' nor '%s' (nor 1/0, true/false)", d->where, s ? s : "?", t->pos,
                t->neg);
        free(s);
        return -1;
    }
    doc_features(d, t->m.buckets);
    return 0;
}

static int train_emit(void *ud, DocItem *d, Err *e) {
    (void)e;
    Train *t = ud;
    const uint32_t *f = d->buf;
    size_t nf = d->nbuf / sizeof(uint32_t);
    if (is_val(t, d->index)) {
        if (t->epoch == 0) {
            if (t->vn + nf > t->vcap) t->vf = xrealloc(t->vf, (t->vcap = 2 * (t->vn + nf) + 1024) * sizeof(uint32_t));
            if (t->nval + 2 > t->valcap) {
                t->valcap = 2 * t->valcap + 64;
                t->voff = xrealloc(t->voff, t->valcap * sizeof(size_t));
                t->vlab = xrealloc(t->vlab, t->valcap);
            }
            memcpy(t->vf + t->vn, f, nf * sizeof(uint32_t));
            t->voff[t->nval] = t->vn;
            t->vlab[t->nval++] = (uint8_t)d->keep;
            t->vn += nf;
            t->voff[t->nval] = t->vn;
        }
        return 0;
    }
    double p = qclass_prob(&t->m, f, nf, t->h);
    t->correct += (p >= 0.5) == (d->keep == 1);
    t->loss += qclass_sgd(&t->m, f, nf, d->keep, t->lr, t->h);
    t->ntrain++;
    t->npos += d->keep;
    return 0;
}

static void val_eval(Train *t, double *loss, double *acc) {
    double l = 0;
    uint64_t ok = 0;
    for (size_t i = 0; i < t->nval; i++) {
        double p = qclass_prob(&t->m, t->vf + t->voff[i], t->voff[i + 1] - t->voff[i], t->h);
        int y = t->vlab[i];
        p = p < 1e-12 ? 1e-12 : p > 1 - 1e-12 ? 1 - 1e-12 : p;
        l -= y ? log(p) : log(1 - p);
        ok += (p >= 0.5) == (y == 1);
    }
    *loss = t->nval ? l / (double)t->nval : 0;
    *acc = t->nval ? (double)ok / (double)t->nval : 0;
}

int data_quality_train(int argc, char **argv, Err *e) {
    const char *out = NULL, *field = "text", *label = "label", *pos = "hq", *neg = "lq", *bad = "refuse";
    long epochs = 5, buckets = 1L << 20, dim = 16, seed = 1;
    double lr = 1.0, val_frac = 0.1; /* lr: rows get lr/nf per document (fastText), so long documents need more than 0.1 */
    CliList in = {{0}, 0};
    CliFlag flags[] = {
        {"input", CLI_LIST, &in, 0, 0, "labelled JSONL, one document a line; repeatable"},
        {"out", CLI_STR, &out, 0, 0, "classifier file to write"},
        {"field", CLI_STR, &field, 0, 0, "JSON field holding the text"},
        {"label-field", CLI_STR, &label, 0, 0, "JSON field holding the label"},
        {"positive", CLI_STR, &pos, 0, 0, "label value of high quality (also 1 or true)"},
        {"negative", CLI_STR, &neg, 0, 0, "label value of low quality (also 0 or false)"},
        {"epochs", CLI_INT, &epochs, 1, 1000, "passes over the training documents"},
        {"lr", CLI_FLOAT, &lr, 1e-6, 10, "SGD learning rate, decayed linearly to 0 over the epochs"},
        {"buckets", CLI_INT, &buckets, 1, 1 << 28, "hash buckets of the unigram and bigram features"},
        {"dim", CLI_INT, &dim, 1, 1024, "embedding size (1: a linear model over hashed features, scaled)"},
        {"val-frac", CLI_FLOAT, &val_frac, 0, 0.9, "fraction of documents held out; accuracy printed each epoch"},
        {"seed", CLI_INT, &seed, 0, 1e9, "seed of the initial weights and of the held-out choice"},
        {"bad-utf8", CLI_STR, &bad, 0, 0, "refuse (error naming file:line) or skip (counted, left out)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *p0[1];
    if (cli_parse_all(argc, argv, flags, nf, p0, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac data quality-train --input LABELLED.jsonl... --out MODEL [flags]",
                 "Train a fastText-style quality classifier (as DCLM filtered with): word unigrams\n"
                 "and bigrams hashed into --buckets embedding rows of --dim floats, averaged, then\n"
                 "P(hq) = sigmoid(w.h + b); SGD on the logistic loss in input order (deterministic).\n"
                 "Each line needs the text and a label ('hq'/'lq', 1/0 or true/false). The\n"
                 "file stores only the rows of features seen. Score with llamac data quality.",
                 flags, nf);
        return 0;
    }
    if (!in.n) return err_set(e, "--input: required");
    if (!out) return err_set(e, "--out: required");
    int bad_mode = DOCS_UTF8_REFUSE;
    if (parse_bad_utf8(bad, &bad_mode, e)) return -1;
    Train t;
    memset(&t, 0, sizeof t);
    t.label_field = label, t.pos = pos, t.neg = neg, t.seed = (uint64_t)seed;
    t.val_per_mille = (long)(val_frac * 1000 + 0.5);
    qclass_init(&t.m, (uint32_t)buckets, (uint32_t)dim, (uint64_t)seed);
    t.h = xmalloc((size_t)dim * sizeof(float));
    DocStreamOpts o = {field, 0, bad_mode, 1, NULL};
    DocStreamStats st = {0};
    int rc = -1;
    double t0 = time_now();
    for (t.epoch = 0; t.epoch < epochs; t.epoch++) {
        t.lr = (float)(lr * (double)(epochs - t.epoch) / (double)epochs);
        t.loss = 0, t.ntrain = t.correct = t.npos = 0;
        if (docstream_run(in.v, in.n, &o, train_map, train_emit, &t, &st, e)) goto done;
        if (!t.ntrain) {
            err_set(e, "%s: no training documents (all %llu held out?)", in.v[0], (unsigned long long)t.nval);
            goto done;
        }
        double vl, va;
        val_eval(&t, &vl, &va);
        printf("epoch %d/%ld: lr %.4f, train loss %.4f acc %.4f (%llu docs, %.0f%% hq)", t.epoch + 1, epochs, t.lr,
               t.loss / (double)t.ntrain, (double)t.correct / (double)t.ntrain, (unsigned long long)t.ntrain,
               100.0 * (double)t.npos / (double)t.ntrain);
        if (t.nval) printf(" | held-out loss %.4f acc %.4f (%zu docs)", vl, va, t.nval);
        printf("\n");
        fflush(stdout);
    }
    if (!isfinite(t.m.b) || !isfinite(t.loss)) {
        err_set(e, "quality-train: the training diverged (loss %g): lower --lr (%g); %s not written", t.loss / (double)t.ntrain,
                lr, out);
        goto done;
    }
    if (qclass_save(&t.m, out, e)) goto done;
    printf("quality-train: %s (%ld buckets x %ld dim) in %.2f s", out, buckets, dim, time_now() - t0);
    if (st.bad_utf8) printf("; skipped %llu documents with bad UTF-8 each epoch", (unsigned long long)st.bad_utf8);
    printf("\n");
    rc = 0;
done:
    qclass_free(&t.m);
    free(t.h), free(t.vf), free(t.voff), free(t.vlab);
    return rc;
}

// ----------------------------------------------------------------------------
// quality

typedef struct Score {
    QClass m;
    float *h; /* (threads, dim) */
    double threshold;
    FILE *out, *scores;
    const char *out_path, *scores_path;
    uint64_t n, kept;
    double sum;
    uint64_t hist[10];
} Score;

static int score_map(void *ud, int thread, DocItem *d, Err *e) {
    (void)e;
    Score *s = ud;
    size_t nf = doc_features(d, s->m.buckets);
    d->score = qclass_prob(&s->m, d->buf, nf, s->h + (size_t)thread * s->m.dim);
    return 0;
}

static int score_emit(void *ud, DocItem *d, Err *e) {
    Score *s = ud;
    int keep = d->score >= s->threshold;
    s->n++, s->kept += keep, s->sum += d->score;
    if (!(d->score >= 0 && d->score <= 1)) /* a model file that loads is finite; this guards the index */
        return err_set(e, "document %llu: score %g is not a probability", (unsigned long long)d->index, d->score);
    s->hist[d->score >= 1 ? 9 : (int)(d->score * 10)]++;
    if (keep && (fwrite(d->line, 1, d->nline, s->out) != d->nline || fputc('\n', s->out) == EOF))
        return err_set(e, "%s: write error", s->out_path);
    if (s->scores && fprintf(s->scores, "{\"doc\": %llu, \"score\": %.6f, \"kept\": %s}\n",
                             (unsigned long long)d->index, d->score, keep ? "true" : "false") < 0)
        return err_set(e, "%s: write error", s->scores_path);
    return 0;
}

int data_quality(int argc, char **argv, Err *e) {
    const char *model = NULL, *out = NULL, *scores = NULL, *field = "text", *bad = "refuse";
    double threshold = 0.5;
    double batch_mb = 16;
    CliList in = {{0}, 0};
    CliFlag flags[] = {
        {"model", CLI_STR, &model, 0, 0, "classifier file from llamac data quality-train"},
        {"input", CLI_LIST, &in, 0, 0, "JSONL file (one document a line) or text file; repeatable"},
        {"out", CLI_STR, &out, 0, 0, "JSONL of the kept lines, unchanged and in input order"},
        {"threshold", CLI_FLOAT, &threshold, 0, 1, "keep documents with P(hq) >= this"},
        {"scores", CLI_STR, &scores, 0, 0, "also write every document's score as a JSON line"},
        {"field", CLI_STR, &field, 0, 0, "JSON field holding the text"},
        {"bad-utf8", CLI_STR, &bad, 0, 0, "refuse (error naming file:line) or skip (counted, left out)"},
        {"batch-mb", CLI_FLOAT, &batch_mb, 1e-6, 4096, "MB of input per parallel batch (results do not depend on it)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *p0[1];
    if (cli_parse_all(argc, argv, flags, nf, p0, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac data quality --model MODEL --input IN.jsonl... --out OUT.jsonl [--threshold P]",
                 "Score documents with a quality classifier on every core and keep those with\n"
                 "P(hq) >= --threshold, unchanged and in input order; prints how many were kept\n"
                 "and the score histogram.",
                 flags, nf);
        return 0;
    }
    if (!model) return err_set(e, "--model: required");
    if (!in.n) return err_set(e, "--input: required");
    if (!out) return err_set(e, "--out: required");
    int bad_mode = DOCS_UTF8_REFUSE;
    if (parse_bad_utf8(bad, &bad_mode, e)) return -1;
    Score s;
    memset(&s, 0, sizeof s);
    OutFile of[2];
    memset(of, 0, sizeof of);
    if (qclass_load(&s.m, model, e)) return -1;
    s.threshold = threshold, s.out_path = out, s.scores_path = scores;
    int nt = docstream_threads(), rc = -1;
    s.h = xmalloc((size_t)nt * s.m.dim * sizeof(float));
    DocStreamOpts o = {field, (size_t)(batch_mb * (1 << 20)) + 1, bad_mode, 0, "quality"};
    DocStreamStats st = {0};
    double t0 = time_now();
    const char *outs[3] = {out, scores, model}; /* the model too: an output must not overwrite it */
    if (outfile_step_check(in.v, in.n, outs, 3, e)) goto done;
    if (outfile_open(&of[0], out, e) || (scores && outfile_open(&of[1], scores, e))) goto done;
    s.out = of[0].f, s.scores = of[1].f;
    if (docstream_run(in.v, in.n, &o, score_map, score_emit, &s, &st, e)) goto done;
    s.out = s.scores = NULL;
    if (outfile_commit(&of[0], e) || outfile_commit(&of[1], e)) goto done;
    double dt = time_now() - t0;
    printf("quality: %llu documents in, %llu kept (P(hq) >= %g), %llu dropped below it; mean P(hq) %.3f",
           (unsigned long long)s.n, (unsigned long long)s.kept, threshold, (unsigned long long)(s.n - s.kept),
           s.n ? s.sum / (double)s.n : 0);
    if (st.bad_utf8) printf("; skipped %llu with bad UTF-8", (unsigned long long)st.bad_utf8);
    printf("\nquality: P(hq) histogram by tenths:");
    for (int i = 0; i < 10; i++) printf(" %llu", (unsigned long long)s.hist[i]);
    printf("\nquality: %.1f MB in %.2f s (%.0f docs/s) on %d threads\n", st.bytes / 1e6, dt, dt > 0 ? s.n / dt : 0, nt);
    rc = 0;
done:
    outfile_drop(&of[0]);
    outfile_drop(&of[1]);
    free(s.h);
    qclass_free(&s.m);
    return rc;
}
