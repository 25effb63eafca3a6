/*
 * cmd_distill.c: `llamac distill` (a student trained on a teacher's
 * next-token distributions; DESIGN.md "Distillation and pruning") and
 * `llamac teacher-cache` (the teacher's top-K log-probabilities written
 * once, data/tcache.h). docs/distill.md is the user's page.
 *
 * distill is a TrainLoss on the one trainer loop (train/loop/trainer.h):
 * per micro-batch the teacher's final normed hidden state (online: a
 * frozen second Llama on the same device, float32 or held quantised with
 * --teacher-quant) or its cached top-K rows, the student's hidden state,
 * then the fused head lmhead_kd (model/ops.h: the student's logits and the
 * teacher's made a chunk of rows at a time, never B x T x V) with loss
 * (1 - alpha) CE + alpha * D (times tau^2 with --kd-t2 1), the final norm's
 * backward and the decoder's. The data are pretraining shards (--train,
 * every position trained) or SFT JSONL (--data, masked positions skipped),
 * drawn by train/loop/trdata.c exactly as pretrain and sft draw them; each
 * row's key (window number, packed row index) finds its cached teacher
 * rows, so resume and data parallelism need nothing of their own. On
 * pipeline stages (--pp) the teacher lives on the last stage, whose head
 * (kd_head) runs it for each micro-batch in flight.
 *
 * Invariants: teacher and student share one tokenizer (checked by id and
 * vocabulary); a cache is used only with the data, T, tau, tokenizer (and,
 * when --teacher is given, the teacher) it was made from.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/tcache.h"
#include "../../dist/dist.h"
#include "../io/ckpt.h"
#include "../io/source.h"
#include "../proc/cli.h"
#include "../proc/device.h"
#include "../loop/ftdata.h"
#include "../loop/pipeline.h"
#include "../loop/run.h"
#include "../loop/trainer.h"
#include "../loop/trdata.h"
#include "cmds.h"

// ----------------------------------------------------------------------------
// the data: token shards (--train) or SFT JSONL (--data), train and val

typedef struct KdData {
    int shards;                /* 1: token shards; 0: SFT JSONL */
    TrShards ss[TCACHE_NSPLIT];
    Loader L[TCACHE_NSPLIT];
    WinSource ws[TCACHE_NSPLIT];
    SftSet set[TCACHE_NSPLIT];
    SftRows rows[TCACHE_NSPLIT];
    RowSource rs[TCACHE_NSPLIT];
    TrainData td[TCACHE_NSPLIT];
    int has[TCACHE_NSPLIT];
    uint64_t id[TCACHE_NSPLIT]; /* the rows' identity (the cache's data_id) */
    uint64_t *keys[TCACHE_NSPLIT]; /* (B) the last drawn micro-batch's row keys */
    uint64_t tokenizer_id;
} KdData;

/* The flags both commands take for their data. */
typedef struct KdDataOpts {
    CliList train;             /* token shards */
    FtData fd;                 /* --data JSONL, --val, --template, ... */
} KdDataOpts;

/* The data's identity mixed with what cuts it into rows (T; the document
 * mask of shards, packing of SFT rows): rows of other lengths are other
 * rows. */
static uint64_t rows_id(uint64_t content, uint64_t salt, long T) {
    uint64_t h = hash_mix64(content ^ hash_mix64(salt + 0x9e3779b97f4a7c15ULL) ^ hash_mix64((uint64_t)T * 31 + 7));
    return h ? h : 1;
}

/* Open the data of o (B, T, seed) as the trainer's sources, with every
 * row's key reported. tok: the student's tokenizer (NULL with shards and
 * no --tokenizer). */
static int kd_data_open(KdData *d, const char *mode, KdDataOpts *dopt, const Tokenizer *tok, const TrainOpts *o,
                        Err *e) {
    memset(d, 0, sizeof *d);
    FtData *fd = &dopt->fd;
    d->shards = dopt->train.n > 0;
    for (int s = 0; s < TCACHE_NSPLIT; s++) d->keys[s] = xcalloc((size_t)o->B, sizeof(uint64_t));
    if (d->shards) {
        CliList val = {{fd->val}, fd->val ? 1 : 0};
        if (trdata_shards_open(&d->ss[0], &dopt->train, "--train", e)) return -1;
        if (fd->val && trdata_shards_open(&d->ss[1], &val, "--val", e)) return -1;
        d->tokenizer_id = d->ss[0].s[0].tokenizer_id;
        if (fd->val && d->ss[1].s[0].tokenizer_id != d->tokenizer_id)
            return err_set(e, "%s: made by a different tokenizer than the training shards", fd->val);
        if (tok && tok->id != d->tokenizer_id)
            return err_set(e, "%s: not the tokenizer that made %s", o->tokpath, dopt->train.v[0]);
        for (int s = 0; s < (fd->val ? 2 : 1); s++) {
            /* training windows shuffled per epoch, validation in file order; the document mask on */
            if (loader_init(&d->L[s], d->ss[s].p, d->ss[s].n, (int)o->B, (int)o->T, 0, 1, s == 0, 1,
                            (uint64_t)o->seed, e))
                return -1;
            d->ws[s] = (WinSource){&d->L[s], d->keys[s]};
            d->id[s] = rows_id(trdata_shards_hash(&d->ss[s]), 1 /* windows, doc mask on */, o->T);
            d->td[s] = trdata_windows(&d->ws[s], d->tokenizer_id, s ? fd->val : dopt->train.v[0], s ? 0 : d->id[s]);
            d->has[s] = 1;
        }
        printf("%s data: %s: %llu windows of %ld tokens%s\n", mode, dopt->train.v[0],
               (unsigned long long)loader_windows(&d->L[0]), o->T, fd->val ? " (validation windows in order)" : "");
        return 0;
    }
    SftOpts so = {SFT_AUTO, SFT_LOSS_AUTO, -1, "text", 0, 0, 0, CHAT_LLAMA31_DATE};
    if (ftdata_check(fd, o, 1, &so, e)) return -1;
    if (!fd->tpl_name) { /* the template the tokenizer comes with, if any */
        ChatTemplate tpl;
        int found = chat_template_of(tok, o->tokpath, &tpl, NULL, e);
        if (found < 0) return -1;
        if (found) so.tpl = (int)tpl;
    }
    so.bos = ftdata_bos(fd, tok);
    d->tokenizer_id = tok->id;
    for (int s = 0; s < (fd->val ? 2 : 1); s++) {
        const char *path = s ? fd->val : fd->data;
        if (trdata_sft_load(mode, path, tok, &so, o, (int)fd->packing, s ? "val" : "train", &d->set[s], &d->rows[s], e))
            return -1;
        d->rs[s] = (RowSource){&d->rows[s], NULL, d->keys[s]};
        d->id[s] = rows_id(sft_hash(&d->set[s], (int)fd->packing), 2 /* SFT rows */, o->T);
        d->td[s] = trdata_rows(&d->rs[s], path, tok->id, s ? 0 : d->id[s]);
        d->has[s] = 1;
    }
    return 0;
}

static void kd_data_close(KdData *d) {
    for (int s = 0; s < TCACHE_NSPLIT; s++) {
        loader_free(&d->L[s]);
        trdata_shards_close(&d->ss[s]);
        sft_rows_free(&d->rows[s]);
        sft_free(&d->set[s]);
        free(d->keys[s]);
    }
    memset(d, 0, sizeof *d);
}

/* Rows of split s in storage order (the cache's keys). */
static uint64_t kd_data_nrows(const KdData *d, int s) {
    return d->shards ? loader_windows(&d->L[s]) : d->rows[s].nrows;
}

static void kd_data_row(const KdData *d, int s, uint64_t r, int32_t *tok, int32_t *tgt, int32_t *pos) {
    if (d->shards) loader_window(&d->L[s], r, tok, tgt, pos);
    else sft_rows_fill(&d->rows[s], (size_t)r, tok, tgt, pos);
}

// ----------------------------------------------------------------------------
// the teacher: one tokenizer with the student, its identity, its weights

/* What a model source says of its tokenizer: the id it records (a
 * checkpoint's, a GGUF's; 0: none) and, when it carries the tokenizer
 * (a GGUF, a Hugging Face directory), its vocabulary's hash (0: none). */
static int source_tok(const ModelSource *ms, uint64_t *id, uint64_t *vocab, Err *e) {
    *id = ms->tokenizer_id;
    *vocab = 0;
    if (!ms->tokenizer[0]) return 0;
    Tokenizer t;
    if (tok_load(&t, ms->tokenizer, e)) return -1;
    if (!*id) *id = t.id;
    *vocab = tok_vocab_hash(&t);
    tok_free(&t);
    return 0;
}

/* Teacher and student must share a tokenizer: the same vocabulary size
 * and, where both vocabularies can be read (a tokenizer carried, or the
 * student's --tokenizer stok), the same token for every id; else, where
 * both record one, the same tokenizer id (a file of another format has
 * another id: --tokenizer lets the vocabularies be compared instead). */
static int check_same_tokenizer(const ModelSource *tm, const char *tpath, const ModelSource *sm, const char *spath,
                                const Tokenizer *stok, Err *e) {
    if (tm->c.vocab != sm->c.vocab)
        return err_set(e, "%s: the teacher's vocabulary has %d tokens, the student %s's %d: distillation needs one "
                          "tokenizer", tpath, tm->c.vocab, spath, sm->c.vocab);
    uint64_t tid, tv, sid, sv;
    if (source_tok(tm, &tid, &tv, e) || source_tok(sm, &sid, &sv, e)) return -1;
    if (stok) sid = stok->id, sv = tok_vocab_hash(stok);
    if (tv && sv) {
        if (tv != sv)
            return err_set(e, "%s: the teacher's vocabulary is not the student %s's (the same ids stand for other "
                              "tokens): distillation needs one tokenizer", tpath, spath);
        return 0;
    }
    if (tid && sid && tid != sid)
        return err_set(e, "%s: the teacher's tokenizer (id %016llx) is not the student %s's (id %016llx): "
                          "distillation needs one tokenizer%s", tpath, (unsigned long long)tid, spath,
                       (unsigned long long)sid, stok ? "" : " (or give --tokenizer to compare the vocabularies)");
    return 0;
}

/* The teacher's identity for a cache: the content hash of its float32
 * weights as loaded, mixed with --teacher-quant (a quantised teacher gives
 * other log-probabilities). Loads the weights into host memory once. */
static int teacher_hash(const ModelSource *tm, const char *quant, uint64_t *id, Err *e) {
    ParamTable t;
    if (params_build(&tm->c, &t, e)) return -1;
    float *w = xalloc_aligned(t.size * sizeof(float));
    int rc = source_load(tm, &t, w, e);
    if (!rc) *id = ckpt_hash(w, t.size * sizeof(float));
    if (!rc && quant)
        for (const char *p = quant; *p; p++) *id = hash_mix64(*id ^ (uint64_t)(unsigned char)*p);
    free(w);
    params_free(&t);
    return rc;
}

/* The teacher's logits of rows [n0, n0 + rows) of its last forward into
 * buf (backend memory, rows x V). */
static void teacher_logits(Llama *t, float *buf, int n0, int rows) {
    const float *x = t->xf + (size_t)n0 * t->c.dim;
    if (t->qhead) t->ops->qmatmul_fwd(t->ctx, buf, x, t->qhead, t->qwork, rows);
    else t->ops->matmul_fwd(t->ctx, buf, x, t->w.lm_head, rows, t->c.dim, t->c.vocab);
}

// ----------------------------------------------------------------------------
// the loss: one micro-batch through the teacher (or its cache) and the student

typedef struct KdStats {
    double loss, ce, kd, n; /* sums over trained tokens, and their count */
} KdStats;

typedef struct Distill {
    KdSpec kd;
    Llama teacher;             /* online teacher (B x T of the student, no gradients) */
    int online;
    int ce_only;               /* --kd-weight 0: no teacher loaded or run, lmhead_ce (a fair CE baseline) */
    TCache cache;              /* or its cache */
    int cached;
    int K;                     /* cached entries per position (0: online) */
    int32_t *ids_h;            /* (N, K) host */
    float *lp_h;               /* (N, K) host */
    int *ids;                  /* (N, K) backend */
    float *lp;                 /* (N, K) backend */
    float *row_ce, *row_kd;    /* (N) backend */
    float *ce_h, *kd_h;        /* (N) host */
    float *scratch;            /* kd_scratch_floats */
    KdData *data;
    uint64_t *step_keys;       /* (accum, B) the row keys of the step's micro-batches */
    long drawn;                /* micro-batches drawn since the last step */
    long accum, B;
    KdStats st, vst;
    /* pipeline stages: what the last stage's head reads of the micro-batches in flight */
    const int32_t *pp_tk, *pp_tg, *pp_ps;
    const uint64_t *pp_keys;
    int pp_split;
    float pp_scale;
    KdStats *pp_st;
} Distill;

/* The head of one micro-batch whose batch is set in the student m (the
 * stage input in acts[l0].x when l0 > 0): the teacher's side (its forward
 * on tok, tgt, pos, or its cached rows by keys), the student's layers
 * [l0, L) and final norm, lmhead_kd, the loss terms summed into st; with
 * scale > 0 (1 / the step's trained tokens) also the head's and the final
 * norm's backward, leaving the last residual's gradient in m->dres.
 * Returns the loss sum, NAN with e on an error. */
static double kd_head_on(Distill *d, Llama *m, int l0, const int32_t *tok, const int32_t *tgt, const int32_t *pos,
                         const uint64_t *keys, int split, float scale, KdStats *st, Err *e) {
    const LlamaConfig *c = &m->c;
    int N = m->B * m->T;
    const float *tx = NULL, *tw = NULL;
    const QTensor *tq = NULL;
    float *work = NULL;
    int Dt = c->dim;
    if (d->online) {
        Llama *t = &d->teacher;
        if (llama_set_batch(t, tok, tgt, pos, e)) return NAN;
        llama_forward_hidden(t, 0);
        tx = t->xf;
        tw = t->qhead ? NULL : t->w.lm_head;
        tq = t->qhead;
        work = t->qwork;
        Dt = t->c.dim;
    } else if (d->cached) {
        if (tcache_rows(&d->cache, split, keys, m->B, m->T, tgt, d->ids_h, d->lp_h, e)) return NAN;
        m->ops->upload(m->ctx, d->ids, d->ids_h, (size_t)N * d->K * sizeof(int));
        m->ops->upload(m->ctx, d->lp, d->lp_h, (size_t)N * d->K * sizeof(float));
    }
    llama_forward_hidden(m, l0);
    int train = scale > 0;
    if (d->ce_only) { /* kd-weight 0: the student's own fused CE head, no teacher forward, kd logged as 0 */
        double l = m->ops->lmhead_ce(m->ctx, train ? m->dxn : NULL, train ? m->g.lm_head : NULL, d->row_ce, m->xf,
                                     m->w.lm_head, m->targets, m->scratch, N, c->dim, c->vocab, scale);
        m->ops->download(m->ctx, d->ce_h, d->row_ce, (size_t)N * sizeof(float));
        for (int n = 0; n < N; n++)
            if (tgt[n] != LC_IGNORE) st->ce += d->ce_h[n], st->n += 1;
        st->loss += l;
        if (train) llama_hidden_backward(m);
        return l;
    }
    double l = m->ops->lmhead_kd(m->ctx, train ? m->dxn : NULL, train ? m->g.lm_head : NULL, d->row_ce, d->row_kd,
                                 m->xf, m->w.lm_head, tx, tw, tq, d->online ? NULL : d->ids,
                                 d->online ? NULL : d->lp, d->K, m->targets, &d->kd, scale, d->scratch, work, N,
                                 c->dim, Dt, c->vocab);
    m->ops->download(m->ctx, d->ce_h, d->row_ce, (size_t)N * sizeof(float));
    m->ops->download(m->ctx, d->kd_h, d->row_kd, (size_t)N * sizeof(float));
    for (int n = 0; n < N; n++) {
        if (tgt[n] == LC_IGNORE) continue;
        st->ce += d->ce_h[n];
        st->kd += d->kd_h[n];
        st->n += 1;
    }
    st->loss += l;
    if (train) llama_hidden_backward(m);
    return l;
}

/* One micro-batch through the teacher (or its cache) and the whole
 * student, with the backward when scale > 0. */
static int micro(Distill *d, Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos,
                 const uint64_t *keys, int split, float scale, uint64_t lseed, KdStats *st, Err *e) {
    Llama *m = &tr->m;
    if (llama_set_batch(m, tok, tgt, pos, e)) return -1;
    llama_lora_seed(m, lseed);
    double l = kd_head_on(d, m, 0, tok, tgt, pos, keys, split, scale, st, e);
    if (isnan(l) && e->msg[0]) return -1;
    if (scale > 0) llama_backward(m, 0, m->c.n_layers);
    return 0;
}

/* PipeHead (train/loop/pipeline.h): micro-batch k of the arrays the step
 * or the validation lent in d->pp, on the last stage. */
static double kd_head(void *ud, Llama *m, int l0, long k, Err *e) {
    Distill *d = ud;
    size_t N = (size_t)m->B * m->T;
    return kd_head_on(d, m, l0, d->pp_tk + k * N, d->pp_tg + k * N, d->pp_ps + k * N, d->pp_keys + k * d->B,
                      d->pp_split, d->pp_scale, d->pp_st, e);
}

static void pp_lend(Distill *d, const int32_t *tok, const int32_t *tgt, const int32_t *pos, const uint64_t *keys,
                    int split, float scale, KdStats *st) {
    d->pp_tk = tok, d->pp_tg = tgt, d->pp_ps = pos, d->pp_keys = keys;
    d->pp_split = split, d->pp_scale = scale, d->pp_st = st;
}

static void stats_reduce(KdStats *st) {
    double v[4] = {st->loss, st->ce, st->kd, st->n};
    dist_allreduce_f64(v, 4);
    *st = (KdStats){v[0], v[1], v[2], v[3]};
}

static double kd_step(void *ud, Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos, long accum,
                      long step, Err *e) {
    Distill *d = ud;
    long N = tr->o.B * tr->o.T;
    long ntgt = llama_count_targets(tgt, (size_t)(N * accum));
    LC_ASSERT(d->drawn == accum); /* the trainer drew the step's micro-batches through kd_next */
    d->drawn = 0;
    memset(&d->st, 0, sizeof d->st);
    if (tr->pipe) { /* the stages run the step; the last one's head is kd_head */
        pp_lend(d, tok, tgt, pos, d->step_keys, TCACHE_TRAIN, ntgt ? 1.0f / (float)ntgt : 0.0f, &d->st);
        double l = pipe_step(tr->pipe, tok, tgt, pos, 0.0f, step, kd_head, d, e);
        if (isnan(l) && e->msg[0]) return NAN;
        stats_reduce(&d->st);
        return tr->rank == 0 && ntgt ? d->st.loss / (double)ntgt : 0; /* the trainer sums the ranks' returns */
    }
    for (long k = tr->k0; k < tr->k1; k++) { /* this rank's block (all of them on one rank); ntgt is the step's */
        uint64_t lseed = (uint64_t)tr->o.seed * 0x9e3779b97f4a7c15ULL + (uint64_t)step * 4096 + (uint64_t)k;
        if (micro(d, tr, tok + k * N, tgt + k * N, pos + k * N, d->step_keys + k * tr->o.B, TCACHE_TRAIN,
                  ntgt ? 1.0f / (float)ntgt : 0.0f, lseed, &d->st, e))
            return NAN;
    }
    double part = ntgt ? d->st.loss / (double)ntgt : 0; /* this rank's part; the trainer sums the ranks' */
    if (dist_world() > 1) stats_reduce(&d->st);
    return part;
}

/* " | ce v | kd v" (the mean cross-entropy and divergence per trained
 * token, unweighted; kd without the tau^2 factor), and the JSON members. */
static void kd_extra(void *ud, int validation, char *line, size_t nline, char *json, size_t njson) {
    Distill *d = ud;
    const KdStats *s = validation ? &d->vst : &d->st;
    double n = s->n > 0 ? s->n : 1;
    static const char *const names[2] = {"ce", "kd"};
    double v[2] = {s->ce / n, s->kd / n};
    ftdata_extra_format(validation, names, v, 2, line, nline, json, njson);
}

/* Validation: nbatches micro-batches of the val split from its start, no
 * dropout, rewound afterwards; the mixed loss per trained token. */
static double kd_eval(void *ud, Trainer *tr, TrainData *td, long nbatches, Err *e) {
    Distill *d = ud;
    Llama *m = &tr->m;
    size_t N = (size_t)m->B * m->T;
    int32_t *tok = xmalloc(N * sizeof *tok), *tgt = xmalloc(N * sizeof *tgt), *pos = xmalloc(N * sizeof *pos);
    const uint64_t zero[2] = {0, 0};
    memset(&d->vst, 0, sizeof d->vst);
    int drop = m->lora_train, rc = td->seek(td->ud, zero, e);
    m->lora_train = 0;
    for (long b = 0; !rc && b < nbatches; b++) {
        rc = td->next(td->ud, tok, tgt, pos, e);
        if (rc) break;
        if (!tr->pipe) {
            rc = micro(d, tr, tok, tgt, pos, d->data->keys[TCACHE_VAL], TCACHE_VAL, 0.0f, 0, &d->vst, e);
        } else if (dist_grid()->dp_rank == 0) { /* the first replica's stages; its last stage's head */
            pp_lend(d, tok, tgt, pos, d->data->keys[TCACHE_VAL], TCACHE_VAL, 0.0f, &d->vst);
            rc = pipe_forward(tr->pipe, m, tok, tgt, pos, 0, 1, kd_head, d, e);
        }
    }
    if (!rc) rc = td->seek(td->ud, zero, e);
    m->lora_train = drop;
    if (tr->pipe) {
        if (dist_allreduce_max_int(rc != 0) && !rc) rc = err_set(e, "distill validation failed on another rank");
        stats_reduce(&d->vst);
    }
    free(tok); free(tgt); free(pos);
    if (rc) return NAN;
    return d->vst.n > 0 ? d->vst.loss / d->vst.n : 0;
}

/* The training source seen through distill: each drawn micro-batch's row
 * keys kept for the step. */
static int kd_next(void *ud, int32_t *tok, int32_t *tgt, int32_t *pos, Err *e) {
    Distill *d = ud;
    TrainData *in = &d->data->td[TCACHE_TRAIN];
    if (in->next(in->ud, tok, tgt, pos, e)) return -1;
    LC_ASSERT(d->drawn < d->accum);
    memcpy(d->step_keys + d->drawn * d->B, d->data->keys[TCACHE_TRAIN], (size_t)d->B * sizeof *d->step_keys);
    d->drawn++;
    return 0;
}

static void kd_tell(const void *ud, uint64_t *cur) {
    const TrainData *in = &((const Distill *)ud)->data->td[TCACHE_TRAIN];
    in->tell(in->ud, cur);
}

static int kd_seek(void *ud, const uint64_t *cur, Err *e) {
    TrainData *in = &((Distill *)ud)->data->td[TCACHE_TRAIN];
    return in->seek(in->ud, cur, e);
}

// ----------------------------------------------------------------------------
// flags shared by distill and teacher-cache

typedef struct KdFlagsOut {
    const char *teacher, *teacher_quant;
    double tau;
} KdFlagsOut;

/* The data flags' rows (both commands; --epochs with_epochs) into f;
 * returns how many. */
static int data_flags(KdDataOpts *dopt, int with_epochs, CliFlag *f) {
    FtDataFlags ff;
    ftdata_flags(&dopt->fd, &(FtDataHelp){
        "SFT examples (JSONL, as llamac sft reads them: masked positions are skipped); or --train",
        "held-out data: a JSONL file with --data, a token shard with --train",
        "chat template of --data: llama2, llama3, llama3.1, chatml or none (default: the tokenizer's own)",
        "tokens per example of --data (0: --seq + 1)",
        "--data: 1 packs examples into rows (document mask); 0: one padded row each",
        "--data: prepend BOS to untemplated examples: auto (if the tokenizer has one), 1, 0"}, &ff);
    CliFlag rows[] = {
        {"train", CLI_LIST, &dopt->train, 0, 0, "pretraining token shard (repeatable; every position trained); or --data"},
        ff.data, ff.val, ff.tpl, ff.max_len, ff.packing, ff.epochs, ff.bos,
    };
    int n = (int)(sizeof rows / sizeof rows[0]);
    if (!with_epochs) rows[6] = rows[--n]; /* --epochs: only a training run has epochs */
    memcpy(f, rows, (size_t)n * sizeof rows[0]);
    return n;
}

static int data_require(const KdDataOpts *dopt, const TrainOpts *o, Err *e) {
    if (dopt->train.n && dopt->fd.data) return err_set(e, "--train and --data: give one (token shards or SFT JSONL)");
    if (!dopt->train.n && !dopt->fd.data)
        return err_set(e, "--train or --data: required (pretraining token shards, or SFT JSONL)");
    if (dopt->fd.data && !o->tokpath) return err_set(e, "--tokenizer: required with --data (the student's tokenizer)");
    return 0;
}

static int check_tau(double tau, Err *e) {
    if (!(tau > 0) || !isfinite(tau)) return err_set(e, "--tau: the temperature must be positive, got %g", tau);
    return 0;
}

// ----------------------------------------------------------------------------
// llamac distill

int cmd_distill(int argc, char **argv, Err *e) {
    const char *teacher = NULL, *student = NULL, *tquant = NULL, *cache_path = NULL, *div = "fkl";
    double alpha = 0.5, tau = 1.0, beta = 0.5;
    long t2 = 0;
    KdDataOpts dopt;
    memset(&dopt, 0, sizeof dopt);
    ftdata_default(&dopt.fd);
    TrainOpts o;
    ftdata_train_defaults(&o, 1e-4 /* Minitron's peak KD learning rate */, "distill.h5", "checkpoints-distill");
    CliFlag flags[24 + TRAINER_NFLAGS] = {
        {"teacher", CLI_STR, &teacher, 0, 0, "the teacher: an llamac checkpoint, a Hugging Face directory or a GGUF file (frozen)"},
        {"student", CLI_STR, &student, 0, 0, "the model to train (e.g. llamac prune's output), any model source"},
    };
    int nf = 2;
    nf += data_flags(&dopt, 1, flags + nf);
    CliFlag more[] = {
        {"teacher-quant", CLI_STR, &tquant, 0, 0, "hold the online teacher quantised: keep (a GGUF's own types) or a type (nf4, q8_0, q4_k, ...); with --teacher-cache: how the cache's teacher was held"},
        {"teacher-cache", CLI_STR, &cache_path, 0, 0, "the teacher's top-K log-probabilities from llamac teacher-cache, instead of running it"},
        {"kd-weight", CLI_FLOAT, &alpha, -1e9, 1e9, "alpha in [0, 1]: loss = (1 - alpha) CE + alpha KD (0.5 is torchtune's kd_ratio; 1: KD only, as Minitron)"},
        {"kd-div", CLI_STR, &div, 0, 0, "the divergence KD: fkl (KL(teacher || student)), rkl (KL(student || teacher)), jsd (TRL's generalised JSD)"},
        {"kd-beta", CLI_FLOAT, &beta, -1e9, 1e9, "jsd: beta in [0, 1], the teacher's weight in the mixture (0: fkl, 1: rkl)"},
        {"tau", CLI_FLOAT, &tau, -1e9, 1e9, "temperature of both distributions in KD (> 0; the CE term is at 1)"},
        {"kd-t2", CLI_INT, &t2, 0, 1, "1: KD multiplied by tau^2 (Hinton; DistillKit, ModelOpt generic); 0: not (TRL, Megatron, torchtune)"},
    };
    memcpy(flags + nf, more, sizeof more);
    nf += (int)(sizeof more / sizeof more[0]);
    nf += trainer_flags(&o, flags + nf);
    int parsed = ftdata_parse(argc, argv, flags, nf,
                              "llamac distill [config.ini] --teacher T --student S (--train SHARD | --data FILE.jsonl "
                              "--tokenizer TOK) [--teacher-cache CACHE] [flags]",
                              "Knowledge distillation: the student is trained on the teacher's next-token distributions\n"
                              "at temperature --tau (a divergence, --kd-div) mixed with the cross-entropy on the data\n"
                              "(--kd-weight). The teacher runs frozen beside the student (--teacher-quant holds it\n"
                              "quantised) or is read from a cache of its top-K log-probabilities (llamac teacher-cache).\n"
                              "Teacher and student must share a tokenizer. The logged ce and kd are per trained token,\n"
                              "unweighted, kd without the tau^2 factor. docs/distill.md.", e);
    if (parsed) return parsed < 0 ? -1 : 0;
    KdSpec kd = {KD_FKL, (float)tau, (float)beta, (float)(1 - alpha), (float)alpha, (int)t2};
    int found = 0;
    for (int k = 0; k < KD_COUNT; k++)
        if (strcmp(div, kd_div_names[k]) == 0) kd.div = k, found = 1;
    if (!found) return err_set(e, "--kd-div: expected fkl, rkl or jsd, got '%.40s'", div);
    if (!(alpha >= 0 && alpha <= 1)) return err_set(e, "--kd-weight: must be in [0, 1], got %g", alpha);
    if (!(beta >= 0 && beta <= 1)) return err_set(e, "--kd-beta: must be in [0, 1], got %g", beta);
    if (check_tau(tau, e)) return -1;
    if (!student) return err_set(e, "--student: required (the model to train)");
    if (!teacher && !cache_path) return err_set(e, "--teacher: required (or --teacher-cache CACHE)");
    if (data_require(&dopt, &o, e) || trainer_check(&o, e)) return -1;
    if (tquant && strcmp(tquant, "keep")) {
        uint32_t ty;
        if (quant_parse(tquant, "--teacher-quant", &ty, e)) return -1;
    }

    ModelSource sm, tm;
    Tokenizer tok;
    int has_tok = 0;
    if (o.tokpath) {
        if (ftdata_open(&sm, student, o.tokpath, &tok, e)) return -1;
        has_tok = 1;
    } else if (source_open(&sm, student, e)) {
        return -1;
    }
    int rc = -1;
    KdData data;
    Trainer t;
    Distill d;
    memset(&data, 0, sizeof data);
    memset(&t, 0, sizeof t);
    memset(&d, 0, sizeof d);
    d.kd = kd;
    uint64_t tid = 0;
    if (teacher) {
        if (source_open(&tm, teacher, e) || check_same_tokenizer(&tm, teacher, &sm, student, has_tok ? &tok : NULL, e))
            goto out;
    }
    if (kd_data_open(&data, "distill", &dopt, has_tok ? &tok : NULL, &o, e)) goto out;
    if (sm.tokenizer_id && sm.tokenizer_id != data.tokenizer_id) {
        err_set(e, "%s: not the tokenizer the student %s was trained with", dopt.train.n ? dopt.train.v[0] : o.tokpath,
                student);
        goto out;
    }
    long accum = o.batch_tokens ? o.batch_tokens / (o.B * o.T) : 1;
    ftdata_steps(&dopt.fd, &o, kd_data_nrows(&data, 0) / (uint64_t)o.B, accum);
    if (cache_path) {
        if (tcache_open(&d.cache, cache_path, e)) goto out;
        d.cached = 1;
        const TCacheHeader *h = &d.cache.h;
        if (h->lp_bytes == 2 && kd.div != KD_FKL && kd.kd_w > 0)
            fprintf(stderr, "llamac: warning: %s: f16 log-probabilities with --kd-div %s: where a peaked teacher's "
                            "rounded top-K sums to 1 the tail's mass is taken as 1e-30, which this divergence "
                            "punishes hard; a cache written with --cache-dtype f32 avoids it\n",
                    cache_path, kd_div_names[kd.div]);
        if ((int)h->V != sm.c.vocab) {
            err_set(e, "%s: a teacher cache of a %u-token vocabulary, the student %s's has %d: distillation needs one "
                       "tokenizer", cache_path, h->V, student, sm.c.vocab);
            goto out;
        }
        /* the tokenizer: the data ids below hash the very token ids the teacher read (a tokenizer
         * file of another format has another id, and the same ids) */
        for (int s = 0; s < TCACHE_NSPLIT; s++)
            if (data.has[s] && !h->data_id[s]) {
                err_set(e, "%s: holds no %s rows (llamac teacher-cache was run without --val)", cache_path,
                        s ? "validation" : "training");
                goto out;
            } else if (data.has[s] && (h->data_id[s] != data.id[s] || (long)h->T != o.T)) {
                err_set(e, "%s: made from other data than %s (%s rows of %u tokens, id %016llx; these are %ld tokens, "
                           "id %016llx): run llamac teacher-cache on this data", cache_path, data.td[s].name,
                        s ? "validation" : "training", h->T, (unsigned long long)h->data_id[s], o.T,
                        (unsigned long long)data.id[s]);
                goto out;
            }
        if (fabs((double)h->tau - tau) > 1e-6 * tau) {
            err_set(e, "%s: log-probabilities at tau %g, this run's --tau is %g: make the cache at this --tau",
                    cache_path, (double)h->tau, tau);
            goto out;
        }
        if (teacher) {
            if (teacher_hash(&tm, tquant, &tid, e)) goto out; /* a cache of a quantised teacher: the same --teacher-quant */
            if (tid != h->teacher_id) {
                err_set(e, "%s: made by another teacher than %s (teacher id %016llx, this one's %016llx)", cache_path,
                        teacher, (unsigned long long)h->teacher_id, (unsigned long long)tid);
                goto out;
            }
        }
        d.K = (int)h->K;
    }
    if (trainer_open(&t, &o, "distill", &sm.c, &sm, e)) goto out;
    Llama *m = &t.m;
    if (m->qhead) {
        err_set(e, "--base-quant %s: the student's LM head would stay quantised, and distill needs a float head "
                   "(quantise to a type instead of keep)", o.base_quant);
        goto out;
    }
    size_t N = (size_t)o.B * o.T;
    d.ce_only = !cache_path && alpha == 0;
    if (!cache_path && !d.ce_only && (!t.pipe || dist_grid()->stage == dist_grid()->pp - 1)) { /* the last stage's */
        if (device_load_into(&t.dev, teacher, NULL, tquant, &tm.c, &d.teacher, (int)o.B, (int)o.T, 1, e)) goto out;
        d.online = 1;
    }
    d.data = &data;
    d.accum = accum;
    d.B = o.B;
    d.step_keys = xcalloc((size_t)accum * o.B, sizeof *d.step_keys);
    d.row_ce = m->ops->alloc(m->ctx, N * sizeof(float));
    d.row_kd = m->ops->alloc(m->ctx, N * sizeof(float));
    d.ce_h = xmalloc(N * sizeof(float));
    d.kd_h = xmalloc(N * sizeof(float));
    d.scratch = m->ops->alloc(m->ctx, m->ops->kd_scratch_floats(m->ctx, (int)N, sm.c.vocab) * sizeof(float));
    if (d.cached) {
        d.ids_h = xmalloc(N * d.K * sizeof(int32_t));
        d.lp_h = xmalloc(N * d.K * sizeof(float));
        d.ids = m->ops->alloc(m->ctx, N * d.K * sizeof(int));
        d.lp = m->ops->alloc(m->ctx, N * d.K * sizeof(float));
    }
    if (d.ce_only)
        printf("distill teacher: %s not loaded: --kd-weight 0 trains on cross-entropy alone (no teacher forward; "
               "its tokenizer was checked)\n", teacher);
    else if (!cache_path)
        printf("distill teacher: %s online%s: dim %d, %d layers, %d/%d heads, vocab %d%s%s\n", teacher,
               t.pipe ? " on the last pipeline stage" : "", tm.c.dim, tm.c.n_layers, tm.c.n_heads, tm.c.n_kv_heads,
               tm.c.vocab, tquant ? ", held quantised: --teacher-quant " : " (float32)", tquant ? tquant : "");
    else
        printf("distill teacher: cache %s: top-%d log-probabilities at tau %g (%zu B per trained token; the rest of "
               "the vocabulary as one tail bucket)\n", cache_path, d.K, (double)d.cache.h.tau,
               tcache_record_bytes(&d.cache.h));
    printf("distill loss: (1 - %g) CE + %g x %sKD, KD = %s at tau %g%s; kd-weight %s\n", alpha, alpha,
           t2 ? "tau^2 " : "", kd.div == KD_FKL ? "forward KL(teacher || student)"
                                  : kd.div == KD_RKL ? "reverse KL(student || teacher)" : "generalised JSD",
           tau, t2 ? " (--kd-t2 1: x tau^2, as Hinton and DistillKit)" : " (--kd-t2 0: no tau^2 factor, as TRL and Megatron)",
           alpha == 0.5 ? "0.5 (torchtune's kd_ratio default)" : "as given");
    if (kd.div == KD_JSD) printf("  jsd beta %g\n", beta);
    TrainData dt = data.td[TCACHE_TRAIN];
    dt.ud = &d;
    dt.next = kd_next;
    dt.tell = kd_tell;
    dt.seek = kd_seek;
    TrainLoss lf = {&d, kd_step, kd_extra, kd_eval, NULL, NULL};
    rc = trainer_run(&t, &dt, data.has[TCACHE_VAL] ? &data.td[TCACHE_VAL] : NULL, &lf, flags, nf, e);
out:
    if (d.online) llama_free(&d.teacher);
    if (t.m.ops) {
        if (d.row_ce) t.m.ops->free(t.m.ctx, d.row_ce);
        if (d.row_kd) t.m.ops->free(t.m.ctx, d.row_kd);
        if (d.scratch) t.m.ops->free(t.m.ctx, d.scratch);
        if (d.ids) t.m.ops->free(t.m.ctx, d.ids);
        if (d.lp) t.m.ops->free(t.m.ctx, d.lp);
    }
    free(d.ce_h); free(d.kd_h); free(d.ids_h); free(d.lp_h); free(d.step_keys);
    tcache_close(&d.cache);
    trainer_close(&t);
    kd_data_close(&data);
    if (has_tok) tok_free(&tok);
    return rc;
}

// ----------------------------------------------------------------------------
// llamac teacher-cache

/* One split's rows in storage order through the teacher, B at a time,
 * their trained positions' top-K into w; a progress line every 2 s. */
static int cache_split(Llama *t, const KdData *d, int s, TCacheWriter *w, float *buf, float *host, int chunk,
                       double t0, uint64_t *done, uint64_t total, Err *e) {
    int B = t->B, T = t->T, V = t->c.vocab;
    size_t N = (size_t)B * T;
    int32_t *tok = xmalloc(N * sizeof *tok), *tgt = xmalloc(N * sizeof *tgt), *pos = xmalloc(N * sizeof *pos);
    uint64_t nrows = kd_data_nrows(d, s);
    double last = time_now();
    int rc = 0;
    tcache_begin_split(w, s);
    for (uint64_t r0 = 0; !rc && r0 < nrows; r0 += (uint64_t)B) {
        int nb = nrows - r0 < (uint64_t)B ? (int)(nrows - r0) : B;
        for (int b = 0; b < B; b++) { /* a short last batch: its spare rows repeat the last one, untrained */
            kd_data_row(d, s, r0 + (uint64_t)(b < nb ? b : nb - 1), tok + (size_t)b * T, tgt + (size_t)b * T,
                        pos + (size_t)b * T);
            if (b >= nb)
                for (int i = 0; i < T; i++) tgt[(size_t)b * T + i] = LC_IGNORE;
        }
        if ((rc = llama_set_batch(t, tok, tgt, pos, e))) break;
        llama_forward_hidden(t, 0);
        for (int n0 = 0; !rc && n0 < nb * T; n0 += chunk) {
            int rows = nb * T - n0 < chunk ? nb * T - n0 : chunk, any = 0;
            for (int r = 0; r < rows; r++) any |= tgt[n0 + r] != LC_IGNORE;
            if (any) {
                teacher_logits(t, buf, n0, rows);
                t->ops->download(t->ctx, host, buf, (size_t)rows * V * sizeof(float));
            }
            for (int r = 0; !rc && r < rows; r++) {
                int n = n0 + r;
                if (tgt[n] != LC_IGNORE) rc = tcache_put(w, host + (size_t)r * V, e), (*done)++;
                if (n % T == T - 1) tcache_end_row(w);
            }
        }
        double now = time_now();
        if (now - last >= 2 || r0 + (uint64_t)B >= nrows) {
            double el = now - t0, tps = *done / (el > 0 ? el : 1);
            char c1[32], c2[32];
            printf("teacher-cache: %s rows %llu/%llu | %llu positions | %.0f tok/s | %s elapsed | ETA %s\n",
                   s ? "val" : "train", (unsigned long long)(r0 + (uint64_t)nb), (unsigned long long)nrows,
                   (unsigned long long)*done, tps, run_clock(el, c1, sizeof c1),
                   run_clock(tps > 0 ? (double)(total - *done) / tps : 0, c2, sizeof c2));
            fflush(stdout);
            last = now;
        }
    }
    free(tok); free(tgt); free(pos);
    return rc;
}

/* Trained positions of split s (for the ETA). */
static uint64_t count_positions(const KdData *d, int s, int T) {
    if (d->shards) return kd_data_nrows(d, s) * (uint64_t)T;
    return (uint64_t)d->set[s].trained;
}

int cmd_teacher_cache(int argc, char **argv, Err *e) {
    const char *teacher = NULL, *out = NULL, *tquant = NULL, *dtype = "f16";
    double tau = 1.0;
    long topk = 50;
    KdDataOpts dopt;
    memset(&dopt, 0, sizeof dopt);
    ftdata_default(&dopt.fd);
    TrainOpts o;
    ftdata_train_defaults(&o, 1e-4, "unused.h5", "unused");
    CliFlag flags[24] = {
        {"teacher", CLI_STR, &teacher, 0, 0, "the teacher: an llamac checkpoint, a Hugging Face directory or a GGUF file"},
    };
    int nf = 1;
    nf += data_flags(&dopt, 0, flags + nf);
    CliFlag more[] = {
        {"top-k", CLI_INT, &topk, 1, 1 << 24, "K: the teacher's most probable tokens kept per position (at most the vocabulary)"},
        {"out", CLI_STR, &out, 0, 0, "the cache file (written to OUT.tmp, renamed when whole)"},
        {"tau", CLI_FLOAT, &tau, -1e9, 1e9, "temperature of the cached log-probabilities (> 0; distill --tau must match)"},
        {"cache-dtype", CLI_STR, &dtype, 0, 0, "log-probabilities as f16 (2 bytes) or f32 (4 bytes, exact)"},
        {"teacher-quant", CLI_STR, &tquant, 0, 0, "hold the teacher quantised: keep (a GGUF's own types) or a type (nf4, q8_0, ...)"},
        {"batch", CLI_INT, &o.B, 1, 1 << 16, "rows per teacher forward"},
        {"seq", CLI_INT, &o.T, 2, 1 << 20, "sequence length T: must be distill's --seq (rows are cut at it)"},
        {"tokenizer", CLI_STR, &o.tokpath, 0, 0, "the teacher's tokenizer (required with --data unless the teacher carries one)"},
        {"device", CLI_STR, &o.device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
    };
    memcpy(flags + nf, more, sizeof more);
    nf += (int)(sizeof more / sizeof more[0]);
    int parsed = ftdata_parse(argc, argv, flags, nf,
                              "llamac teacher-cache --teacher T (--train SHARD | --data FILE.jsonl) --top-k K --out CACHE "
                              "[--tau TAU] [flags]",
                              "The teacher's top-K next tokens and log-probabilities at --tau for every trained position\n"
                              "of the data (and of --val), written once for llamac distill --teacher-cache. Bytes per\n"
                              "trained token: K x (2 or 4 for an id, 2 or 4 for a log-probability). docs/distill.md.", e);
    if (parsed) return parsed < 0 ? -1 : 0;
    if (dist_world() > 1)
        return err_set(e, "teacher-cache: runs as one process (its rows are not split over MPI ranks yet)");
    if (!teacher) return err_set(e, "--teacher: required (the model whose distributions are cached)");
    if (!out) return err_set(e, "--out: required (the cache file)");
    if (check_tau(tau, e)) return -1;
    if (strcmp(dtype, "f16") && strcmp(dtype, "f32"))
        return err_set(e, "--cache-dtype: expected f16 or f32, got '%.40s'", dtype);
    if (dopt.train.n && dopt.fd.data) return err_set(e, "--train and --data: give one (token shards or SFT JSONL)");
    if (!dopt.train.n && !dopt.fd.data)
        return err_set(e, "--train or --data: required (pretraining token shards, or SFT JSONL)");
    if (device_check(o.device, e)) return -1;
    ModelSource tm;
    if (source_open(&tm, teacher, e)) return -1;
    if (topk > tm.c.vocab)
        return err_set(e, "--top-k: %ld is more than the teacher's vocabulary of %d tokens", topk, tm.c.vocab);
    Tokenizer tok;
    int has_tok = 0;
    if (dopt.fd.data) { /* SFT: the teacher's tokenizer renders the examples */
        const char *tp = source_tokenizer(&tm, o.tokpath, e);
        if (!tp) return -1;
        o.tokpath = tp;
        if (ftdata_open(&tm, teacher, tp, &tok, e)) return -1;
        has_tok = 1;
    }
    int rc = -1;
    KdData data;
    Device dev;
    Llama t;
    TCacheWriter w;
    memset(&data, 0, sizeof data);
    memset(&dev, 0, sizeof dev);
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    int dev_open = 0;
    uint64_t tid, done = 0, total = 0;
    float *buf = NULL, *host = NULL;
    const int chunk = 64;
    if (kd_data_open(&data, "teacher-cache", &dopt, has_tok ? &tok : NULL, &o, e)) goto out;
    if (tm.tokenizer_id && tm.tokenizer_id != data.tokenizer_id) {
        err_set(e, "%s: made by another tokenizer than the teacher %s's", data.td[0].name, teacher);
        goto out;
    }
    if (teacher_hash(&tm, tquant, &tid, e)) goto out;
    if (device_open(&dev, o.device, e)) goto out;
    dev_open = 1;
    if (device_load_into(&dev, teacher, NULL, tquant, &tm.c, &t, (int)o.B, (int)o.T, 1, e)) goto out;
    TCacheHeader h;
    memset(&h, 0, sizeof h);
    h.V = (uint32_t)tm.c.vocab;
    h.K = (uint32_t)topk;
    h.id_bytes = tm.c.vocab <= 65536 ? 2 : 4;
    h.lp_bytes = strcmp(dtype, "f32") == 0 ? 4 : 2;
    h.T = (uint32_t)o.T;
    h.tau = (float)tau;
    h.teacher_id = tid;
    h.tokenizer_id = data.tokenizer_id;
    for (int s = 0; s < TCACHE_NSPLIT; s++) h.data_id[s] = data.has[s] ? data.id[s] : 0;
    for (int s = 0; s < TCACHE_NSPLIT; s++) total += data.has[s] ? count_positions(&data, s, (int)o.T) : 0;
    printf("teacher-cache: %s (dim %d, %d layers, vocab %d) -> %s: top-%ld at tau %g, %u B per trained token (ids "
           "%u B, log-probs %s), about %.1f MB for %llu positions\n", teacher, tm.c.dim, tm.c.n_layers, tm.c.vocab, out,
           topk, tau, (unsigned)tcache_record_bytes(&h), h.id_bytes, dtype, total * tcache_record_bytes(&h) / 1e6,
           (unsigned long long)total);
    if (tcache_writer_open(&w, out, &h, e)) goto out;
    buf = t.ops->alloc(t.ctx, (size_t)chunk * tm.c.vocab * sizeof(float));
    host = xmalloc((size_t)chunk * tm.c.vocab * sizeof(float));
    double t0 = time_now();
    for (int s = 0; s < TCACHE_NSPLIT; s++)
        if (data.has[s] && cache_split(&t, &data, s, &w, buf, host, chunk, t0, &done, total, e)) goto out;
    rc = tcache_finish(&w, 1, e);
    if (!rc)
        printf("teacher-cache: %s: %llu positions, %.1f MB (%zu B per trained token) in %.1f s\n", out,
               (unsigned long long)done, (double)w.h.size / 1e6, tcache_record_bytes(&w.h), time_now() - t0);
out:
    if (rc) tcache_finish(&w, 0, e);
    if (buf) t.ops->free(t.ctx, buf);
    free(host);
    if (t.ops) llama_free(&t);
    if (dev_open) device_close(&dev);
    kd_data_close(&data);
    if (has_tok) tok_free(&tok);
    return rc;
}
