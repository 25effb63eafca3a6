/*
 * cmd_reward.c: `llamac reward`: a reward model trained on preference pairs
 * (Bradley-Terry, as Llama 2-Chat's reward models and TRL's RewardTrainer)
 * on the shared loop of train/loop/trainer.c through its TrainLoss hook.
 *
 * The model is the Llama trunk with a score head [1, D] (LlamaConfig
 * num_labels 1: transformers' LlamaForSequenceClassification). From a
 * causal LM the head is new (normal(0, 0.02), transformers' init) and the LM
 * head is left out; a reward model (checkpoint or HF directory) continues.
 * The reward of a sequence is the head at its last token whose id is not
 * the pad id (the tokenizer's EOS when the model names none, as TRL sets
 * it): with pad == EOS a trailing EOS counts as padding, transformers' rule.
 *
 * Loss of the step's pairs j (TRL 1.16 RewardTrainer.compute_loss):
 *   -mean_j log sigmoid(r_c,j - r_r,j - m_j) + c * mean_j (r_c,j + r_r,j)^2
 * with m_j a line's "margin" field (0 without one; Llama 2's preference
 * levels are margin values) and c --center-rewards-coefficient (Eisenstein
 * et al. 2023; 0: off). Its derivative per pair, over the step's P pairs:
 *   d/dr_c = (-sigmoid(-(d_j)) + 2c (r_c + r_r)) / P,
 *   d/dr_r = ( sigmoid(-(d_j)) + 2c (r_c + r_r)) / P,  d_j = r_c - r_r - m_j
 * set at the two rows the rewards were read from, then the head's and the
 * trunk's backward (llama_score_backward, llama_backward).
 *
 * Data: dpo's pair formats and rendering (data/dpo.h: prompt/chosen/
 * rejected as text or messages), every token of a sequence an input (a
 * micro-batch runs at its longest row, as TRL pads to its longest
 * sequence; not on pipeline stages, whose buffers are fixed); pairs
 * with a sequence longer than --max-length are dropped and counted, as TRL
 * does. LoRA trains the adapters and the score head whole (PEFT's
 * modules_to_save ["score"]). Metrics (TRL's names): loss, accuracy (the
 * fraction of pairs with r_c > r_r, strictly), margin (mean r_c - r_r),
 * min_reward, mean_reward, max_reward over both sides; eval_ for validation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/chat.h"
#include "../../data/dpo.h"
#include "../../dist/dist.h"
#include "../loop/ftdata.h"
#include "../loop/pipeline.h"
#include "../loop/trainer.h"
#include "cmds.h"

typedef struct {
    double loss, acc, margin, rsum, rmin, rmax;
    long npairs;
} RmStats;

typedef struct {
    double center;        /* --center-rewards-coefficient */
    int pad;              /* the token whose trailing runs are padding (-1: none) */
    const DpoSet *tset, *vset; /* margins by pair index */
    DpoRows *train_rows;
    float *score_host, *dscore_host; /* (N) */
    float *score_dev, *dscore_dev;   /* (N) backend */
    int *at;              /* (2 * max pairs of a micro-batch) the row each reward is read from */
    int32_t *ctok, *ctgt, *cpos; /* (B * T) a micro-batch cut to its longest row (trim) */
    DpoBatch cbt;         /* its map */
    RmStats st, vst;
    Trainer *tr;          /* during validation */
    /* pipeline stages: what the last stage's head needs of the micro-batches in flight */
    const int32_t *pp_tk;
    const DpoRows *pp_rows;
    const DpoBatch *pp_fixed;
    const DpoSet *pp_set;
    long pp_accum;
    double pp_inv;
    RmStats *pp_st;
} Rm;

// ----------------------------------------------------------------------------
// one micro-batch

static void stats_reset(RmStats *s) {
    memset(s, 0, sizeof *s);
    s->rmin = INFINITY;
    s->rmax = -INFINITY;
}

/* at[s] = the row sequence s of bt is read at: its last slot whose token
 * is not pad (transformers' argmax of index * (id != pad)), or its first
 * slot when every token is pad. */
static void read_rows(const Rm *d, const int32_t *tok, const DpoBatch *bt, size_t N, int *at) {
    for (int s = 0; s < 2 * bt->npairs; s++) at[s] = -1;
    for (size_t n = 0; n < N; n++) {
        int s = bt->seg[n];
        if (s < 0) continue;
        if (at[s] < 0 || tok[n] != d->pad) at[s] = (int)n;
    }
}

static double log_sigmoid(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }
static double sigmoid(double z) { return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)); }

/* After llama_forward_score on m: the loss of bt's pairs into st, and with
 * inv > 0 (1 / the step's pairs) the head's backward, leaving the last
 * residual's gradient in m->dres. Returns the pairs' summed loss. */
static double pair_loss(Rm *d, Llama *m, const int32_t *tok, const DpoBatch *bt, const DpoSet *set, double inv,
                        RmStats *st) {
    size_t N = (size_t)m->B * m->T;
    if (m->ops->download_act) m->ops->download_act(m->ctx, d->score_host, d->score_dev, N); /* bf16 on CUDA */
    else m->ops->download(m->ctx, d->score_host, d->score_dev, N * sizeof(float));
    read_rows(d, tok, bt, N, d->at);
    if (inv > 0) memset(d->dscore_host, 0, N * sizeof(float));
    double sum = 0;
    for (int j = 0; j < bt->npairs; j++) {
        double rc = d->score_host[d->at[2 * j]], rr = d->score_host[d->at[2 * j + 1]];
        double mg = set->margin ? set->margin[bt->pair[j]] : 0, z = rc - rr - mg, cs = rc + rr;
        double l = -log_sigmoid(z) + d->center * cs * cs;
        sum += l;
        st->loss += l;
        st->acc += rc > rr;
        st->margin += rc - rr;
        st->rsum += rc + rr;
        st->rmin = fmin(st->rmin, fmin(rc, rr));
        st->rmax = fmax(st->rmax, fmax(rc, rr));
        st->npairs++;
        if (inv > 0) {
            double g = sigmoid(-z), c2 = 2 * d->center * cs;
            d->dscore_host[d->at[2 * j]] += (float)((-g + c2) * inv);
            d->dscore_host[d->at[2 * j + 1]] += (float)((g + c2) * inv);
        }
    }
    if (inv > 0) {
        if (m->ops->upload_act) m->ops->upload_act(m->ctx, d->dscore_dev, d->dscore_host, N);
        else m->ops->upload(m->ctx, d->dscore_dev, d->dscore_host, N * sizeof(float));
        llama_score_backward(m, d->dscore_dev);
    }
    return sum;
}

/* The batch cut to its longest row: rows hold whole pairs from slot 0, so
 * the slots past the last pair token of every row are padding nothing
 * reads; TRL pads a batch to its longest sequence the same way. Writes the
 * first Tb slots of each row to d's compact arrays (and the batch map) and
 * returns Tb (T: nothing to cut). */
static int trim(Rm *d, int B, int T, const int32_t *tok, const int32_t *tgt, const int32_t *pos, const DpoBatch *bt) {
    int Tb = 1;
    for (int b = 0; b < B; b++)
        for (int t = T - 1; t >= Tb; t--)
            if (bt->seg[(size_t)b * T + t] >= 0) {
                Tb = t + 1;
                break;
            }
    if (Tb == T) return T;
    for (int b = 0; b < B; b++) {
        size_t src = (size_t)b * T, dst = (size_t)b * Tb;
        memcpy(d->ctok + dst, tok + src, (size_t)Tb * sizeof *tok);
        memcpy(d->ctgt + dst, tgt + src, (size_t)Tb * sizeof *tgt);
        memcpy(d->cpos + dst, pos + src, (size_t)Tb * sizeof *pos);
        memcpy(d->cbt.seg + dst, bt->seg + src, (size_t)Tb * sizeof *bt->seg);
    }
    d->cbt.npairs = bt->npairs;
    memcpy(d->cbt.pair, bt->pair, (size_t)bt->npairs * sizeof *bt->pair);
    return Tb;
}

/* The forward (and with inv > 0 the backward) of one micro-batch, at its
 * longest row (trim). */
static int micro(Rm *d, Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos, const DpoBatch *bt,
                 const DpoSet *set, double inv, uint64_t lseed, RmStats *st, Err *e) {
    Llama *m = &tr->m;
    int T = m->T, Tb = trim(d, m->B, T, tok, tgt, pos, bt);
    if (Tb < T) {
        tok = d->ctok, tgt = d->ctgt, pos = d->cpos, bt = &d->cbt;
        m->T = Tb; /* the first B x Tb of every (B, T) buffer, as llama_prefill runs a prompt */
    }
    int rc = llama_set_batch(m, tok, tgt, pos, e);
    if (rc == 0) {
        llama_lora_seed(m, lseed);
        llama_forward_score(m, 0, d->score_dev);
        pair_loss(d, m, tok, bt, set, inv, st);
        if (inv > 0) llama_backward(m, 0, m->c.n_layers);
    }
    m->T = T;
    return rc;
}

// ----------------------------------------------------------------------------
// on pipeline stages: the last stage's head does the loss

/* PipeHead: the stage's layers from l0, the head, the loss and (training)
 * the head's backward, for micro-batch k. */
static double stage_head(void *ud, Llama *m, int l0, long k, Err *e) {
    (void)e;
    Rm *d = ud;
    size_t N = (size_t)m->B * m->T;
    const DpoBatch *bt = d->pp_fixed ? d->pp_fixed : dpo_rows_last(d->pp_rows, (int)(d->pp_accum - 1 - k));
    llama_forward_score(m, l0, d->score_dev);
    return pair_loss(d, m, d->pp_tk + (size_t)k * N, bt, d->pp_set, d->pp_inv, d->pp_st);
}

/* Every rank's sums, and the min and max over the ranks that scored pairs. */
static void stats_reduce(RmStats *st) {
    double v[6] = {st->loss, st->acc, st->margin, st->rsum, (double)st->npairs, 0};
    dist_allreduce_f64(v, 5);
    int w = dist_world(), r = dist_rank();
    double *mm = xcalloc(2 * (size_t)w, sizeof *mm);
    mm[2 * r] = st->npairs ? st->rmin : 0;
    mm[2 * r + 1] = st->npairs ? st->rmax : 0;
    long *has = xcalloc((size_t)w, sizeof *has);
    has[r] = st->npairs > 0;
    dist_allreduce_f64(mm, 2 * w);
    dist_allreduce_long(has, w);
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < w; k++)
        if (has[k]) lo = fmin(lo, mm[2 * k]), hi = fmax(hi, mm[2 * k + 1]);
    free(mm);
    free(has);
    *st = (RmStats){v[0], v[1], v[2], v[3], lo, hi, (long)v[4]};
}

static double reward_step(void *ud, Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos,
                          long accum, long step, Err *e) {
    Rm *d = ud;
    long micro_n = tr->o.B * tr->o.T, np = 0;
    stats_reset(&d->st);
    for (long k = 0; k < accum; k++) np += dpo_rows_last(d->train_rows, (int)(accum - 1 - k))->npairs;
    if (tr->pipe) {
        d->pp_tk = tok;
        d->pp_rows = d->train_rows;
        d->pp_fixed = NULL;
        d->pp_set = d->tset;
        d->pp_accum = accum;
        d->pp_inv = 1.0 / (double)np;
        d->pp_st = &d->st;
        double l = pipe_step(tr->pipe, tok, tgt, pos, 0.0f, step, stage_head, d, e);
        if (isnan(l) && e->msg[0]) return NAN;
        stats_reduce(&d->st);
        return tr->rank == 0 ? d->st.loss / (double)np : 0; /* the trainer sums the ranks' returns */
    }
    for (long k = tr->k0; k < tr->k1; k++) { /* this rank's block; np is the whole step's */
        const DpoBatch *bt = dpo_rows_last(d->train_rows, (int)(accum - 1 - k));
        uint64_t lseed = (uint64_t)tr->o.seed * 0x9e3779b97f4a7c15ULL + (uint64_t)step * 4096 + (uint64_t)k;
        if (micro(d, tr, tok + k * micro_n, tgt + k * micro_n, pos + k * micro_n, bt, d->tset, 1.0 / (double)np,
                  lseed, &d->st, e))
            return NAN;
    }
    double part = d->st.loss / (double)np; /* this rank's pairs; the trainer sums the ranks' */
    if (dist_world() > 1) stats_reduce(&d->st);
    return part;
}

static void reward_extra(void *ud, int validation, char *line, size_t nline, char *json, size_t njson) {
    Rm *d = ud;
    const RmStats *s = validation ? &d->vst : &d->st;
    double n = s->npairs ? (double)s->npairs : 1;
    double v[5] = {s->acc / n, s->margin / n, s->npairs ? s->rmin : 0, s->rsum / (2 * n), s->npairs ? s->rmax : 0};
    static const char *const names[5] = {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"};
    ftdata_extra_format(validation, names, v, 5, line, nline, json, njson);
}

/* FtPairFn: one validation micro-batch. */
static int eval_one(void *ud, const int32_t *tok, const int32_t *tgt, const int32_t *pos, const DpoBatch *bt, Err *e) {
    Rm *d = ud;
    Trainer *tr = d->tr;
    if (!tr->pipe) return micro(d, tr, tok, tgt, pos, bt, d->vset, 0, 0, &d->vst, e);
    d->pp_tk = tok;
    d->pp_fixed = bt;
    d->pp_set = d->vset;
    d->pp_inv = 0;
    d->pp_st = &d->vst;
    int rc = pipe_forward(tr->pipe, &tr->m, tok, tgt, pos, 0, 1, stage_head, d, e);
    d->pp_fixed = NULL;
    return rc;
}

static double reward_eval(void *ud, Trainer *tr, TrainData *data, long nbatches, Err *e) {
    Rm *d = ud;
    stats_reset(&d->vst);
    d->tr = tr;
    int rc = ftdata_pair_eval(tr, data->ud, nbatches, eval_one, d, e);
    if (tr->pipe) stats_reduce(&d->vst);
    if (rc) return NAN;
    return d->vst.npairs ? d->vst.loss / (double)d->vst.npairs : 0;
}

// ----------------------------------------------------------------------------
// the command

static int load_split(const char *path, const Tokenizer *tok, const SftOpts *so, const TrainOpts *o, int packed,
                      int pad, const char *what, DpoSet *set, DpoRows *rows, Err *e) {
    double t0 = time_now();
    if (dpo_load(set, path, tok, so, e)) return -1;
    if (dpo_rows_init(rows, set, (int)o->B, (int)o->T, packed, 1, pad, (uint64_t)o->seed, path, e)) return -1;
    double fill = rows->nrows ? (double)rows->slots_used / ((double)rows->nrows * (double)o->T) : 0;
    printf("reward %s: %s: %zu pairs (%ld lines; %ld dropped as longer than --max-length %d, as TRL does; %ld with a "
           "margin), %zu tokens; %zu rows of %ld (%s, %.1f%% filled) in %.2f s\n", what, path, set->n, set->lines,
           set->dropped_long, so->max_len, set->has_margin, set->ntok, rows->nrows, o->T,
           packed ? "packed" : "a pair each", 100 * fill, time_now() - t0);
    return 0;
}

int cmd_reward(int argc, char **argv, Err *e) {
    const char *model = NULL;
    double center = 0;
    FtData fd;
    ftdata_default(&fd);
    FtDataFlags ff;
    ftdata_flags(&fd, &(FtDataHelp){
        "preference pairs (JSONL: prompt/chosen/rejected, or chosen/rejected conversations; optional \"margin\")",
        "held-out pairs (JSONL): loss, accuracy and rewards every --val-every steps",
        "chat template: llama2, llama3, llama3.1, chatml, none (required for messages)",
        "tokens per sequence, prompt + completion; longer pairs are dropped (0: --seq / 2)",
        "1: several pairs share a row (document mask); 0: one pair per row",
        "prepend BOS to untemplated pairs: auto (if the tokenizer has one), 1, 0"}, &ff);
    TrainOpts o;
    /* TRL's RewardConfig lr; Llama 2 used 1e-5 (5e-6 for 70B) */
    ftdata_train_defaults(&o, 1e-4, "reward.h5", "checkpoints-reward");
    o.sample_tokens = 0;
    o.lora_head = 1;
    CliFlag flags[16 + TRAINER_NFLAGS] = {
        ff.data, ff.val,
        {"model", CLI_STR, &model, 0, 0, "model to start from: a causal LM (the score head is new) or a reward model; an llamac checkpoint, a Hugging Face directory or a GGUF file"},
        ff.tpl, ff.max_len, ff.packing, ff.epochs, ff.bos,
        {"center-rewards-coefficient", CLI_FLOAT, &center, 0, 1e9, "TRL's: adds c * mean((r_chosen + r_rejected)^2), keeping rewards centred at 0 (0: off; TRL suggests 0.01)"},
    };
    int nf = 9;
    nf += trainer_flags(&o, flags + nf);
    int parsed = ftdata_parse(argc, argv, flags, nf,
                              "llamac reward [config.ini] --model M --tokenizer T --data FILE.jsonl [--val FILE.jsonl] [flags]",
                              "Train a reward model on preference pairs (Bradley-Terry, as Llama 2-Chat and TRL's RewardTrainer):\n"
                              "the Llama trunk plus a score head [1, dim], the reward read at a sequence's last non-padding\n"
                              "token, loss -log sigmoid(r_chosen - r_rejected - margin) with the \"margin\" field of a line\n"
                              "when it has one. --out writes an llamac checkpoint; --hf-out a Hugging Face directory\n"
                              "(LlamaForSequenceClassification) that transformers scores identically. With --lora-r the\n"
                              "adapters and the whole score head train (PEFT's modules_to_save [\"score\"]). Score texts with\n"
                              "`llamac score`.", e);
    if (parsed) return parsed < 0 ? -1 : 0;
    if (o.sample_tokens) return err_set(e, "--sample-tokens: a reward model has no language-model head to sample from");
    if (ftdata_require(&fd, model, &o, e)) return -1;
    SftOpts so = {SFT_PROMPT, SFT_LOSS_COMPLETION, -1, "text", 0, 1, 0, CHAT_LLAMA31_DATE};
    if (ftdata_check(&fd, &o, 2, &so, e)) return -1;
    if (!fd.max_len) so.max_len = (int)(o.T / 2); /* whole sequences: both sides share a row's T slots */
    long accum = o.batch_tokens ? o.batch_tokens / (o.B * o.T) : 1;
    if (accum > DPO_RING) return err_set(e, "--batch-tokens: at most %d micro-batches per step for reward", DPO_RING);

    ModelSource ms;
    Tokenizer tok;
    if (ftdata_open(&ms, model, o.tokpath, &tok, e)) return -1;
    LlamaConfig c = ms.c;
    if (c.num_labels > 1) {
        tok_free(&tok);
        return err_set(e, "%s: a classifier with %d labels, not a reward model (num_labels 1)", model, c.num_labels);
    }
    if (!c.num_labels) { /* a causal LM becomes a reward model */
        c.num_labels = 1;
        c.tied = 0;
        c.pad_id = -1;
    }
    Rm d;
    memset(&d, 0, sizeof d);
    d.center = center;
    d.pad = c.pad_id >= 0 ? c.pad_id : tok.eos; /* TRL: pad_token = eos_token when the tokenizer has none */
    if (c.pad_id < 0) c.pad_id = tok.eos;
    int rc = -1;
    DpoSet ts, vs;
    DpoRows tr, vr;
    Trainer t;
    memset(&ts, 0, sizeof ts); memset(&vs, 0, sizeof vs);
    memset(&tr, 0, sizeof tr); memset(&vr, 0, sizeof vr);
    memset(&t, 0, sizeof t);
    so.bos = ftdata_bos(&fd, &tok);
    int pad_row = tok.eos >= 0 ? tok.eos : 0;
    if (load_split(fd.data, &tok, &so, &o, (int)fd.packing, pad_row, "train", &ts, &tr, e)) goto out;
    if (fd.val && load_split(fd.val, &tok, &so, &o, (int)fd.packing, pad_row, "val", &vs, &vr, e)) goto out;
    ftdata_steps(&fd, &o, dpo_rows_batches(&tr), accum);
    if (trainer_open(&t, &o, "reward", &c, &ms, e)) goto out;
    Llama *m = &t.m;
    size_t N = (size_t)o.B * o.T;
    d.tset = &ts;
    d.vset = &vs;
    d.train_rows = &tr;
    d.score_host = xmalloc(N * sizeof(float));
    d.dscore_host = xmalloc(N * sizeof(float));
    d.score_dev = m->ops->alloc(m->ctx, N * sizeof(float));
    d.dscore_dev = m->ops->alloc(m->ctx, N * sizeof(float));
    d.at = xmalloc((N + 2) * sizeof(int));
    d.ctok = xmalloc(N * sizeof *d.ctok);
    d.ctgt = xmalloc(N * sizeof *d.ctgt);
    d.cpos = xmalloc(N * sizeof *d.cpos);
    dpo_batch_init(&d.cbt, (int)o.B, (int)o.T);
    printf("reward model: %s%s, score head [1, %d], reward at the last token that is not %d (pad), center-rewards "
           "coefficient %g%s\n", model, ms.c.num_labels ? "" : " (a causal LM: new score head, normal(0, 0.02))",
           c.dim, d.pad, center, m->lora ? "; LoRA with the score head trained whole" : "");
    uint64_t data_id = dpo_hash(&ts) ^ 0x7265776172640000ULL; /* "reward" */
    TrainLoss lf = {&d, reward_step, reward_extra, reward_eval, NULL, NULL};
    TrainData dt = ftdata_pair_data(&tr, fd.data, tok.id, data_id, 0);
    TrainData dv = ftdata_pair_data(&vr, fd.val, tok.id, 0, 0);
    rc = trainer_run(&t, &dt, fd.val ? &dv : NULL, &lf, flags, nf, e);
out:
    if (d.score_dev) t.m.ops->free(t.m.ctx, d.score_dev);
    if (d.dscore_dev) t.m.ops->free(t.m.ctx, d.dscore_dev);
    free(d.score_host); free(d.dscore_host); free(d.at);
    free(d.ctok); free(d.ctgt); free(d.cpos);
    if (d.cbt.seg) dpo_batch_free(&d.cbt);
    trainer_close(&t);
    dpo_rows_free(&vr);
    dpo_rows_free(&tr);
    dpo_free(&vs);
    dpo_free(&ts);
    tok_free(&tok);
    return rc;
}
