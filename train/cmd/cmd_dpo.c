/*
 * cmd_dpo.c: `llamac dpo`: preference training (Rafailov et al. 2023, DPO,
 * and its robust, IPO and hinge variants; data/dpo.h) on the shared loop
 * of train/loop/trainer.c through its TrainLoss hook.
 *
 * A micro-batch holds whole pairs (chosen and rejected in one row, with the
 * document mask). Its step: the reference log-probabilities (the same
 * model with the LoRA adapters off, a frozen copy for full fine-tuning, or
 * read from --ref-cache), then the policy forward through the LM head's
 * per-row op (llama_forward_rows: every token's log-probability and mean
 * logit, never the (N, V) logits), the loss and d loss / d logp of every
 * sequence on the host, and the backward from the head with those as row
 * weights (llama_head_backward, llama_backward). The loss is the mean over
 * the step's pairs, as TRL's.
 *
 * --ref-cache FILE: the reference log-probabilities of every training and
 * validation pair, computed once before training (in file order) and
 * reused by every later run (a resume included); the file is keyed by the
 * model's weights and the data, and refused when either changed.
 *
 * Metrics (TRL's names): rewards/chosen and rewards/rejected (the mean of
 * beta * (logp - ref)), rewards/accuracies (the fraction of pairs whose
 * chosen reward is larger), rewards/margins, logps/chosen, logps/rejected
 * (mean sums over completion tokens), logits/chosen, logits/rejected (the
 * mean logit over the vocabulary, averaged over completion tokens).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/dpo.h"
#include "../io/ckpt.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../io/source.h"
#include "../../dist/dist.h"
#include "../loop/pipeline.h"
#include "../loop/ftdata.h"
#include "../loop/trainer.h"

typedef struct {
    double loss, rc, rr, acc, margin, lpc, lpr, lgc, lgr;
    long npairs, ntc, ntr;
} DpoStats;

typedef struct {
    DpoLoss loss;
    double beta, ls;
    Llama ref;           /* full fine-tuning without a cache: the frozen copy */
    int has_ref;
    DpoRows *train_rows;
    double *ref_train, *ref_val; /* cached reference logps, 2 per pair (NULL: computed each step) */
    float *rs_host, *rl_host, *mean_host; /* (N) */
    float *rs_dev, *mean_dev;             /* (N) backend */
    double *lp, *rp, *lg;                 /* (2 * max pairs of a micro-batch) */
    long *cnt;
    DpoStats st, vst;
    Trainer *tr;         /* during validation */
    uint64_t seed;
    /* pipeline stages (train/loop/pipeline.h): what the last stage's head needs
     * of the micro-batches in flight */
    double *rp_mb;              /* (accum, 2 * maxp) reference logps per micro-batch */
    size_t maxp;
    const int32_t *pp_tg;       /* the targets of the micro-batches */
    const DpoRows *pp_rows;     /* their batches: dpo_rows_last(pp_rows, pp_accum - 1 - k) */
    const DpoBatch *pp_fixed;   /* or this one */
    long pp_accum;
    const double *pp_refs;      /* cached reference logps by pair, or NULL: rp_mb */
    double pp_inv;              /* 1 / the step's pairs (0: no backward) */
    DpoStats *pp_st;
} Dpo;

// ----------------------------------------------------------------------------
// one micro-batch

/* Sequence log-probabilities of the batch set in m: lp[s] = sum of log p
 * over sequence s's completion tokens; with lg, the sums of the tokens' mean
 * logits per sequence, with cnt their counts. */
static void seq_logps(Dpo *d, Llama *m, int l0, const int32_t *tgt, const DpoBatch *bt, double *lp, double *lg,
                      long *cnt) {
    size_t N = (size_t)m->B * m->T;
    llama_forward_rows_from(m, l0, lg ? d->mean_dev : NULL);
    m->ops->download(m->ctx, d->rl_host, m->row_loss, N * sizeof(float));
    if (lg) m->ops->download(m->ctx, d->mean_host, d->mean_dev, N * sizeof(float));
    for (int s = 0; s < 2 * bt->npairs; s++) {
        lp[s] = 0;
        if (lg) lg[s] = 0, cnt[s] = 0;
    }
    for (size_t n = 0; n < N; n++) {
        int s = bt->seg[n];
        if (s < 0 || tgt[n] == LC_IGNORE) continue;
        lp[s] -= d->rl_host[n];
        if (lg) lg[s] += d->mean_host[n], cnt[s]++;
    }
}

/* The loss of bt's pairs from the policy's logps (d->lp, lg, cnt) and the
 * reference's (d->rp), into st; with inv > 0 the head's backward with
 * d loss / d logp as row weights, leaving the last residual's gradient in
 * m->dres. Returns the pairs' summed loss. */
static double pair_loss(Dpo *d, Llama *m, const int32_t *tgt, const DpoBatch *bt, double inv, DpoStats *st) {
    int np = bt->npairs;
    size_t N = (size_t)m->B * m->T;
    double sum = 0;
    for (int j = 0; j < np; j++) {
        double pc = d->lp[2 * j], pr = d->lp[2 * j + 1], rc = d->rp[2 * j], rr = d->rp[2 * j + 1];
        double sc = 1, sr = 1;
        if (d->loss == DPO_IPO) { /* TRL: each log-ratio over its completion's length */
            sc = 1.0 / (d->cnt[2 * j] ? d->cnt[2 * j] : 1);
            sr = 1.0 / (d->cnt[2 * j + 1] ? d->cnt[2 * j + 1] : 1);
        }
        double h = sc * (pc - rc) - sr * (pr - rr), dh;
        double l = dpo_loss(d->loss, d->beta, d->ls, h, &dh);
        double cr = d->beta * (pc - rc), rj = d->beta * (pr - rr);
        sum += l;
        st->loss += l;
        st->rc += cr;
        st->rr += rj;
        st->acc += cr > rj;
        st->margin += cr - rj;
        st->lpc += pc;
        st->lpr += pr;
        st->lgc += d->lg[2 * j];
        st->lgr += d->lg[2 * j + 1];
        st->ntc += d->cnt[2 * j];
        st->ntr += d->cnt[2 * j + 1];
        st->npairs++;
        /* d loss / d logp: dh * sc for chosen, -dh * sr for rejected; the
         * head wants d loss / d logits = -(d loss / d logp) (softmax - onehot) */
        d->lp[2 * j] = -dh * sc * inv;
        d->lp[2 * j + 1] = dh * sr * inv;
    }
    if (inv > 0) {
        for (size_t n = 0; n < N; n++) {
            int s = bt->seg[n];
            d->rs_host[n] = s < 0 || tgt[n] == LC_IGNORE ? 0.0f : (float)d->lp[s];
        }
        m->ops->upload(m->ctx, d->rs_dev, d->rs_host, N * sizeof(float));
        llama_head_backward(m, d->rs_dev);
    }
    return sum;
}

/* Reference and policy over one micro-batch, the loss of its pairs into st;
 * with inv > 0 also the backward (gradients scaled by inv = 1 / the step's
 * pairs). refs: cached reference logps by pair index, or NULL. */
static int micro(Dpo *d, Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos,
                 const DpoBatch *bt, const double *refs, double inv, uint64_t lseed, DpoStats *st, Err *e) {
    Llama *m = &tr->m;
    int np = bt->npairs;
    if (refs) {
        for (int j = 0; j < np; j++) {
            d->rp[2 * j] = refs[2 * (size_t)bt->pair[j]];
            d->rp[2 * j + 1] = refs[2 * (size_t)bt->pair[j] + 1];
        }
    } else if (d->has_ref) {
        if (llama_set_batch(&d->ref, tok, tgt, pos, e)) return -1;
        seq_logps(d, &d->ref, 0, tgt, bt, d->rp, NULL, NULL);
    }
    if (llama_set_batch(m, tok, tgt, pos, e)) return -1;
    if (!refs && !d->has_ref) { /* LoRA: the same weights, adapters off */
        m->lora_enabled = 0;
        seq_logps(d, m, 0, tgt, bt, d->rp, NULL, NULL);
        m->lora_enabled = 1;
    }
    llama_lora_seed(m, lseed);
    seq_logps(d, m, 0, tgt, bt, d->lp, d->lg, d->cnt);
    pair_loss(d, m, tgt, bt, inv, st);
    if (inv > 0) llama_backward(m, 0, m->c.n_layers);
    return 0;
}

// ----------------------------------------------------------------------------
// on pipeline stages: the same, the last stage's head doing the loss

static const DpoBatch *pp_batch(const Dpo *d, long k) {
    return d->pp_fixed ? d->pp_fixed : dpo_rows_last(d->pp_rows, (int)(d->pp_accum - 1 - k));
}

/* PipeHead: the reference's logps of micro-batch k into rp_mb. */
static double ref_head(void *ud, Llama *m, int l0, long k, Err *e) {
    (void)e;
    Dpo *d = ud;
    size_t N = (size_t)m->B * m->T;
    seq_logps(d, m, l0, d->pp_tg + (size_t)k * N, pp_batch(d, k), d->rp_mb + (size_t)k * 2 * d->maxp, NULL, NULL);
    return 0;
}

/* PipeHead: the policy's logps, the loss against the reference and (when
 * training) the head's backward. */
static double policy_head(void *ud, Llama *m, int l0, long k, Err *e) {
    (void)e;
    Dpo *d = ud;
    size_t N = (size_t)m->B * m->T;
    const DpoBatch *bt = pp_batch(d, k);
    const int32_t *tgt = d->pp_tg + (size_t)k * N;
    for (int j = 0; j < bt->npairs; j++)
        for (int c = 0; c < 2; c++)
            d->rp[2 * j + c] = d->pp_refs ? d->pp_refs[2 * (size_t)bt->pair[j] + c] : d->rp_mb[(size_t)k * 2 * d->maxp + 2 * j + c];
    seq_logps(d, m, l0, tgt, bt, d->lp, d->lg, d->cnt);
    return pair_loss(d, m, tgt, bt, d->pp_inv, d->pp_st);
}

/* Without cached reference logps: micro-batches [k0, k1) through the
 * reference (the frozen copy, or the adapters off), into rp_mb on the last
 * stage. */
static int pp_ref(Dpo *d, Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos, long k0, long k1,
                  Err *e) {
    Llama *rm = d->has_ref ? &d->ref : &tr->m;
    int en = rm->lora_enabled;
    rm->lora_enabled = 0;
    int rc = pipe_forward(tr->pipe, rm, tok, tgt, pos, k0, k1, ref_head, d, e);
    rm->lora_enabled = en;
    return rc;
}

/* The metrics are summed on the last stages: every rank gets the sums. */
static void stats_reduce(DpoStats *st) {
    double v[12] = {st->loss, st->rc, st->rr, st->acc, st->margin, st->lpc, st->lpr, st->lgc, st->lgr,
                    (double)st->npairs, (double)st->ntc, (double)st->ntr};
    dist_allreduce_f64(v, 12);
    *st = (DpoStats){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], (long)v[9], (long)v[10], (long)v[11]};
}

static double dpo_step(void *ud, Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos,
                       long accum, long step, Err *e) {
    Dpo *d = ud;
    long micro_n = tr->o.B * tr->o.T, np = 0;
    memset(&d->st, 0, sizeof d->st);
    for (long k = 0; k < accum; k++) np += dpo_rows_last(d->train_rows, (int)(accum - 1 - k))->npairs;
    if (tr->pipe) {
        d->pp_tg = tgt;
        d->pp_rows = d->train_rows;
        d->pp_fixed = NULL;
        d->pp_accum = accum;
        d->pp_refs = d->ref_train;
        d->pp_inv = 1.0 / (double)np;
        d->pp_st = &d->st;
        if (!d->ref_train && pp_ref(d, tr, tok, tgt, pos, tr->k0, tr->k1, e)) return NAN;
        double l = pipe_step(tr->pipe, tok, tgt, pos, 0.0f, step, policy_head, d, e);
        if (isnan(l) && e->msg[0]) return NAN;
        stats_reduce(&d->st);
        return tr->rank == 0 ? d->st.loss / (double)np : 0; /* the trainer sums the ranks' returns */
    }
    for (long k = tr->k0; k < tr->k1; k++) { /* this rank's block (all of them on one rank); np is the step's */
        const DpoBatch *bt = dpo_rows_last(d->train_rows, (int)(accum - 1 - k));
        uint64_t lseed = (uint64_t)tr->o.seed * 0x9e3779b97f4a7c15ULL + (uint64_t)step * 4096 + (uint64_t)k;
        if (micro(d, tr, tok + k * micro_n, tgt + k * micro_n, pos + k * micro_n, bt, d->ref_train, 1.0 / (double)np,
                  lseed, &d->st, e))
            return NAN;
    }
    double part = d->st.loss / (double)np; /* this rank's pairs; the trainer sums the ranks' */
    if (dist_world() > 1) stats_reduce(&d->st); /* the metrics of every rank's pairs */
    return part;
}

static void dpo_extra(void *ud, int validation, char *line, size_t nline, char *json, size_t njson) {
    Dpo *d = ud;
    const DpoStats *s = validation ? &d->vst : &d->st;
    double n = s->npairs ? (double)s->npairs : 1;
    double v[8] = {s->rc / n, s->rr / n, s->acc / n, s->margin / n, s->lpc / n, s->lpr / n,
                   s->ntc ? s->lgc / (double)s->ntc : 0, s->ntr ? s->lgr / (double)s->ntr : 0};
    static const char *const names[8] = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                                         "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"};
    ftdata_extra_format(validation, names, v, 8, line, nline, json, njson);
}

/* FtPairFn: one validation micro-batch (the reference, then the policy). */
static int eval_one(void *ud, const int32_t *tok, const int32_t *tgt, const int32_t *pos, const DpoBatch *bt, Err *e) {
    Dpo *d = ud;
    Trainer *tr = d->tr;
    if (!tr->pipe) return micro(d, tr, tok, tgt, pos, bt, d->ref_val, 0, 0, &d->vst, e);
    d->pp_tg = tgt;
    d->pp_fixed = bt;
    d->pp_refs = d->ref_val;
    d->pp_inv = 0;
    d->pp_st = &d->vst;
    int rc = (!d->ref_val && pp_ref(d, tr, tok, tgt, pos, 0, 1, e)) ||
             pipe_forward(tr->pipe, &tr->m, tok, tgt, pos, 0, 1, policy_head, d, e);
    d->pp_fixed = NULL;
    return rc ? -1 : 0;
}

static double dpo_eval(void *ud, Trainer *tr, TrainData *data, long nbatches, Err *e) {
    Dpo *d = ud;
    memset(&d->vst, 0, sizeof d->vst);
    d->tr = tr;
    int rc = ftdata_pair_eval(tr, data->ud, nbatches, eval_one, d, e);
    if (tr->pipe) stats_reduce(&d->vst);
    if (rc) return NAN;
    return d->vst.npairs ? d->vst.loss / (double)d->vst.npairs : 0;
}

// ----------------------------------------------------------------------------
// reference log-probabilities: a pass in file order, and their cache

#define REF_MAGIC "LCDPORF1"

/* out[2i + c] for every pair of rows->set, with the reference model m
 * (adapters off when it has them), the rows in storage order. */
static int ref_pass(Dpo *d, Trainer *tr, Llama *m, const DpoRows *rows, double *out, Err *e) {
    size_t N = (size_t)m->B * m->T;
    int32_t *tok = xmalloc(N * sizeof *tok), *tgt = xmalloc(N * sizeof *tgt), *pos = xmalloc(N * sizeof *pos);
    DpoBatch bt;
    dpo_batch_init(&bt, m->B, m->T);
    int en = m->lora_enabled, drop = m->lora_train, rc = 0;
    m->lora_enabled = 0;
    m->lora_train = 0;
    for (size_t r0 = 0; !rc && r0 < rows->nrows; r0 += (size_t)m->B) {
        dpo_rows_fill(rows, r0, tok, tgt, pos, &bt);
        const double *rp = d->rp;
        if (tr->pipe) { /* through the stages; the last one has them */
            d->pp_tg = tgt;
            d->pp_fixed = &bt;
            rc = pipe_forward(tr->pipe, m, tok, tgt, pos, 0, 1, ref_head, d, e);
            d->pp_fixed = NULL;
            rp = d->rp_mb;
            if (rc || tr->rank != pipe_last_rank(tr->pipe)) continue;
        } else {
            rc = llama_set_batch(m, tok, tgt, pos, e);
            if (rc) break;
            seq_logps(d, m, 0, tgt, &bt, d->rp, NULL, NULL);
        }
        for (int j = 0; j < bt.npairs; j++) {
            out[2 * (size_t)bt.pair[j]] = rp[2 * j];
            out[2 * (size_t)bt.pair[j] + 1] = rp[2 * j + 1];
        }
    }
    if (tr->pipe) {
        if (dist_allreduce_max_int(rc != 0) && !rc) rc = err_set(e, "dpo reference pass failed on another rank");
        if (!rc) dist_bcast(out, 2 * rows->set->n * sizeof *out, pipe_last_rank(tr->pipe));
    }
    m->lora_enabled = en;
    m->lora_train = drop;
    dpo_batch_free(&bt);
    free(tok); free(tgt); free(pos);
    return rc;
}

typedef struct {
    char magic[8];
    uint64_t model_id, train_id, val_id, ntrain, nval, checksum;
} RefHeader;

/* 1: read (keys match), 0: no such file, -1: refused or unreadable. */
static int ref_read(const char *path, const RefHeader *want, double *tr, double *va, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    RefHeader h;
    int rc = -1;
    size_t nt = 2 * want->ntrain, nv = 2 * want->nval;
    if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, REF_MAGIC, 8))
        err_set(e, "--ref-cache: %s is not a reference cache of llamac dpo", path);
    else if (h.model_id != want->model_id)
        err_set(e, "--ref-cache: %s holds another model's reference log-probabilities (model id %016llx, --model's "
                   "%016llx); delete it or name another file", path, (unsigned long long)h.model_id,
                (unsigned long long)want->model_id);
    else if (h.train_id != want->train_id || h.val_id != want->val_id || h.ntrain != want->ntrain || h.nval != want->nval)
        err_set(e, "--ref-cache: %s was computed for other data (%llu + %llu pairs; these are %llu + %llu, or "
                   "differ); delete it or name another file", path, (unsigned long long)h.ntrain,
                (unsigned long long)h.nval, (unsigned long long)want->ntrain, (unsigned long long)want->nval);
    else if (fread(tr, sizeof *tr, nt, f) != nt || (nv && fread(va, sizeof *va, nv, f) != nv) ||
             h.checksum != (ckpt_hash(tr, nt * sizeof *tr) ^ (nv ? ckpt_hash(va, nv * sizeof *va) : 0)))
        err_set(e, "--ref-cache: %s is truncated or damaged; delete it", path);
    else
        rc = 1;
    fclose(f);
    return rc;
}

static int ref_write(const char *path, RefHeader *h, const double *tr, const double *va, Err *e) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    size_t nt = 2 * h->ntrain, nv = 2 * h->nval;
    h->checksum = ckpt_hash(tr, nt * sizeof *tr) ^ (nv ? ckpt_hash(va, nv * sizeof *va) : 0);
    FILE *f = fopen(tmp, "wb");
    if (!f) return err_set(e, "--ref-cache: cannot create %s", tmp);
    int bad = fwrite(h, sizeof *h, 1, f) != 1 || fwrite(tr, sizeof *tr, nt, f) != nt ||
              (nv && fwrite(va, sizeof *va, nv, f) != nv);
    if (bad | fflush(f) | fclose(f) || rename(tmp, path)) {
        remove(tmp);
        return err_set(e, "--ref-cache: cannot write %s", path);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// the command

/* --dump: the pairs as JSONL {"chosen": ids, "chosen_mask": ..., "rejected":
 * ..., "rejected_mask": ...}, for a look at what trains and the TRL test.
 * Written to a temporary name and renamed. */
static int dump_pairs(const DpoSet *s, const char *path, Err *e) {
    FtOut w;
    if (ftdata_out_open(&w, "--dump", path, e)) return -1;
    FILE *f = w.f;
    static const char *const keys[4] = {"{\"chosen\": [", "], \"chosen_mask\": [", "], \"rejected\": [",
                                        "], \"rejected_mask\": ["};
    for (size_t i = 0; i < s->n; i++) {
        for (int part = 0; part < 4; part++) {
            size_t q = 2 * i + (size_t)(part / 2);
            fputs(keys[part], f);
            for (size_t k = s->off[q]; k < s->off[q + 1]; k++)
                fprintf(f, "%s%d", k > s->off[q] ? ", " : "", part % 2 ? s->mask[k] : s->ids[k]);
        }
        fputs("]}\n", f);
    }
    return ftdata_out_close(&w, 1, e);
}

static int load_split(const char *path, const Tokenizer *tok, const SftOpts *so, const TrainOpts *o, int packed,
                      const char *what, DpoSet *set, DpoRows *rows, Err *e) {
    double t0 = time_now();
    if (dpo_load(set, path, tok, so, e)) return -1;
    int pad = tok->eos >= 0 ? tok->eos : 0;
    if (dpo_rows_init(rows, set, (int)o->B, (int)o->T, packed, 0, pad, (uint64_t)o->seed, path, e)) return -1;
    double fill = rows->nrows ? (double)rows->slots_used / ((double)rows->nrows * (double)o->T) : 0;
    printf("dpo %s: %s: %zu pairs (%ld lines; %ld truncated to --max-length %d, %ld dropped as their prompt alone "
           "fills it), %zu tokens; %zu rows of %ld (%s, %.1f%% filled) in %.2f s\n", what, path, set->n, set->lines,
           set->truncated, so->max_len, set->dropped_long, set->ntok, rows->nrows, o->T, packed ? "packed" : "a pair each",
           100 * fill, time_now() - t0);
    return 0;
}

int cmd_dpo(int argc, char **argv, Err *e) {
    const char *model = NULL, *loss_type = "sigmoid", *ref_cache = NULL, *dump = NULL;
    double beta = 0.1, ls = 0;
    FtData fd;
    ftdata_default(&fd);
    FtDataFlags ff;
    ftdata_flags(&fd, &(FtDataHelp){
        "preference pairs (JSONL: prompt/chosen/rejected, or chosen/rejected conversations)",
        "held-out pairs (JSONL): loss and rewards every --val-every steps",
        "chat template: llama2, llama3, llama3.1, chatml, none (required for messages)",
        "tokens per sequence, prompt + completion (0: --seq / 2 + 1)",
        "1: several pairs share a row (document mask); 0: one pair per row",
        "prepend BOS to untemplated pairs: auto (if the tokenizer has one), 1, 0"}, &ff);
    TrainOpts o;
    ftdata_train_defaults(&o, 1e-6 /* TRL's DPOConfig */, "dpo.h5", "checkpoints-dpo");
    CliFlag flags[16 + TRAINER_NFLAGS] = {
        ff.data, ff.val,
        {"model", CLI_STR, &model, 0, 0, "model to train (and the reference): an llamac checkpoint, a Hugging Face directory or a GGUF file"},
        ff.tpl, ff.max_len, ff.packing, ff.epochs, ff.bos,
        {"beta", CLI_FLOAT, &beta, -1e9, 1e9, "DPO beta: strength of the pull towards the reference (> 0)"},
        {"label-smoothing", CLI_FLOAT, &ls, -1e9, 1e9, "probability that a pair's labels are flipped, in [0, 0.5) (sigmoid, robust)"},
        {"loss-type", CLI_STR, &loss_type, 0, 0, "sigmoid (DPO), robust, ipo or hinge"},
        {"ref-cache", CLI_STR, &ref_cache, 0, 0, "file of the reference log-probabilities: computed once, reused by later runs"},
        {"dump", CLI_STR, &dump, 0, 0, "write the pairs as JSONL (ids and completion masks) to this file and stop"},
    };
    int nf = 13;
    nf += trainer_flags(&o, flags + nf);
    int parsed = ftdata_parse(argc, argv, flags, nf,
                              "llamac dpo [config.ini] --model M --tokenizer T --data FILE.jsonl [--val FILE.jsonl] [flags]",
                              "Direct preference optimisation on pairs of a chosen and a rejected completion of one prompt:\n"
                              "the loss pulls the policy's log-probability ratio chosen / rejected above the reference's.\n"
                              "With --lora-r the reference is the same weights with the adapters off; otherwise a frozen\n"
                              "copy, or with --ref-cache log-probabilities computed once before training.", e);
    if (parsed) return parsed < 0 ? -1 : 0;
    Dpo d;
    memset(&d, 0, sizeof d);
    d.beta = beta;
    d.ls = ls;
    if (ftdata_require(&fd, model, &o, e) || dpo_check(beta, ls, e) || dpo_loss_parse(loss_type, &d.loss, e)) return -1;
    SftOpts so = {SFT_PROMPT, SFT_LOSS_COMPLETION, -1, "text", 0, 0, 0, CHAT_LLAMA31_DATE};
    if (ftdata_check(&fd, &o, 2, &so, e)) return -1;
    long accum = o.batch_tokens ? o.batch_tokens / (o.B * o.T) : 1;
    if (accum > DPO_RING) return err_set(e, "--batch-tokens: at most %d micro-batches per step for dpo", DPO_RING);

    ModelSource ms;
    Tokenizer tok;
    if (ftdata_open(&ms, model, o.tokpath, &tok, e)) return -1;
    LlamaConfig c = ms.c;
    int rc = -1;
    DpoSet ts, vs;
    DpoRows tr, vr;
    Trainer t;
    memset(&ts, 0, sizeof ts); memset(&vs, 0, sizeof vs);
    memset(&tr, 0, sizeof tr); memset(&vr, 0, sizeof vr);
    memset(&t, 0, sizeof t);
    so.bos = ftdata_bos(&fd, &tok);
    if (dump) {
        if (dpo_load(&ts, fd.data, &tok, &so, e) || dump_pairs(&ts, dump, e)) goto out;
        printf("dpo: %zu pairs of %s written to %s\n", ts.n, fd.data, dump);
        rc = 0;
        goto out;
    }
    if (load_split(fd.data, &tok, &so, &o, (int)fd.packing, "train", &ts, &tr, e)) goto out;
    if (fd.val && load_split(fd.val, &tok, &so, &o, (int)fd.packing, "val", &vs, &vr, e)) goto out;
    ftdata_steps(&fd, &o, dpo_rows_batches(&tr), accum);
    if (trainer_open(&t, &o, "dpo", &c, &ms, e)) goto out;
    Llama *m = &t.m;
    size_t N = (size_t)o.B * o.T, maxp = N / 2 + 1;
    d.train_rows = &tr;
    d.rs_host = xmalloc(N * sizeof(float));
    d.rl_host = xmalloc(N * sizeof(float));
    d.mean_host = xmalloc(N * sizeof(float));
    d.rs_dev = m->ops->alloc(m->ctx, N * sizeof(float));
    d.mean_dev = m->ops->alloc(m->ctx, N * sizeof(float));
    d.lp = xmalloc(2 * maxp * sizeof(double));
    d.rp = xmalloc(2 * maxp * sizeof(double));
    d.lg = xmalloc(2 * maxp * sizeof(double));
    d.cnt = xmalloc(2 * maxp * sizeof(long));
    d.maxp = maxp;
    d.rp_mb = xmalloc((size_t)(accum > 0 ? accum : 1) * 2 * maxp * sizeof(double));
    uint64_t data_id = dpo_hash(&ts) ^ (uint64_t)d.loss * 0x9e3779b97f4a7c15ULL;
    if (ref_cache) {
        RefHeader h = {REF_MAGIC, t.model_id, dpo_hash(&ts), fd.val ? dpo_hash(&vs) : 0, ts.n, fd.val ? vs.n : 0, 0};
        d.ref_train = xmalloc(2 * ts.n * sizeof(double));
        d.ref_val = fd.val ? xmalloc(2 * vs.n * sizeof(double)) : NULL;
        int got = ref_read(ref_cache, &h, d.ref_train, d.ref_val, e);
        if (got < 0) goto out;
        if (got) {
            printf("dpo reference: %s (%llu + %llu pairs, cached)\n", ref_cache, (unsigned long long)h.ntrain,
                   (unsigned long long)h.nval);
        } else {
            double t0 = time_now();
            /* before training (and before any resume): m holds --model's weights */
            if (ref_pass(&d, &t, m, &tr, d.ref_train, e) || (fd.val && ref_pass(&d, &t, m, &vr, d.ref_val, e)))
                goto out;
            /* every rank holds the values; rank 0 alone writes the file (several would race on its
             * temporary name) and its result is everyone's */
            int wrc = t.rank == 0 ? ref_write(ref_cache, &h, d.ref_train, d.ref_val, e) : 0;
            if (dist_allreduce_max_int(wrc != 0)) {
                if (!wrc) err_set(e, "--ref-cache: rank 0 could not write %s", ref_cache);
                goto out;
            }
            printf("dpo reference: %llu + %llu pairs in %.2f s, cached in %s\n", (unsigned long long)h.ntrain,
                   (unsigned long long)h.nval, time_now() - t0, ref_cache);
        }
    } else if (!m->lora) { /* a frozen copy of the initial weights */
        if (llama_init_opts(&d.ref, &c, m->ops, m->ctx, (int)o.B, (int)o.T, NULL, e)) goto out;
        d.has_ref = 1;
        float *host = xalloc_aligned(m->t.size * sizeof(float));
        m->ops->download(m->ctx, host, m->params, m->t.size * sizeof(float));
        d.ref.ops->upload(d.ref.ctx, d.ref.params, host, m->t.size * sizeof(float));
        free(host);
        printf("dpo reference: a frozen copy of %s (%.1f MB)\n", model, m->t.size * 4 / 1e6);
    } else {
        printf("dpo reference: %s with the LoRA adapters off (no copy)\n", model);
    }
    printf("dpo loss: %s, beta %g, label smoothing %g\n", dpo_loss_name(d.loss), beta, ls);
    TrainLoss lf = {&d, dpo_step, dpo_extra, dpo_eval, NULL, NULL};
    TrainData dt = ftdata_pair_data(&tr, fd.data, tok.id, data_id, 1);
    TrainData dv = ftdata_pair_data(&vr, fd.val, tok.id, 0, 1);
    rc = trainer_run(&t, &dt, fd.val ? &dv : NULL, &lf, flags, nf, e);
out:
    if (d.has_ref) llama_free(&d.ref);
    if (d.rs_dev) t.m.ops->free(t.m.ctx, d.rs_dev);
    if (d.mean_dev) t.m.ops->free(t.m.ctx, d.mean_dev);
    free(d.rs_host); free(d.rl_host); free(d.mean_host);
    free(d.lp); free(d.rp); free(d.lg); free(d.cnt); free(d.rp_mb);
    free(d.ref_train); free(d.ref_val);
    trainer_close(&t);
    dpo_rows_free(&vr);
    dpo_rows_free(&tr);
    dpo_free(&vs);
    dpo_free(&ts);
    tok_free(&tok);
    return rc;
}
