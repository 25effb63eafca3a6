/*
 * cmd_rl.c: `llamac rl`: online reinforcement learning from rewards
 * (DESIGN.md, "Rewards and online RL"; docs/rl.md): GRPO, RLOO, online
 * DPO and PPO with a value model, on the shared loop of
 * train/loop/trainer.c through its TrainLoss hook.
 *
 * One rollout loop serves every method. Rollout r (every --num-iterations
 * x --mini-batches optimizer steps): the next --prompts-per-step prompts
 * (an order shuffled per epoch from --seed), G samples of each from the
 * current policy through the sampling engine (with their log-probabilities
 * at the sampling temperature: the "old" ones), their rewards
 * (loop/rewards.h), the reference's log-probabilities where the method
 * needs them (the adapters off, or a frozen copy), and the advantages
 * (loop/rlalgo.h). Each optimizer step then trains one mini-batch of its
 * groups: the policy forward through the LM head's per-row op at the
 * temperature (every completion token's log-probability, never the (N, V)
 * logits), the method's loss and d loss / d logp on the host, and the
 * backward from the head with those as row weights.
 *
 * Under MPI each data-parallel rank samples, rewards and scores its share
 * of the rollout's groups; the rollout is then gathered on every rank (a
 * group never leaves the rank that sampled it), each rank trains its share
 * of a mini-batch, and the gradients reduce as in pretraining. A checkpoint
 * in the middle of a rollout keeps it (/state/aux), so a resumed run takes
 * the same steps.
 *
 * --fixed-rollouts FILE bypasses the sampling (the reference check against
 * TRL, scripts/test_rl_ref.py): each rollout takes the next G x P lines
 * {"prompt_index": i, "completion_ids": [...], "reward": x (optional)};
 * the old log-probabilities are then the policy's own (as TRL's with one
 * iteration).
 */
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/dpo.h"
#include "../../dist/dist.h"
#include "../io/peft.h"
#include "../io/source.h"
#include "../loop/ftdata.h"
#include "../loop/rewards.h"
#include "../loop/rlalgo.h"
#include "../loop/rollout.h"
#include "../loop/run.h"
#include "../loop/trainer.h"
#include "../proc/cli.h"
#include "cmds.h"

/* One sample of a rollout. */
typedef struct {
    uint32_t prompt;   /* index in the prompt set */
    int32_t n;         /* completion tokens (the stop id included) */
    int32_t finish;    /* FinishReason */
    int32_t ntext;     /* bytes of its text */
    double reward;     /* the rewards' total */
    double shaped;     /* the reward the advantage is computed from (RLOO: less beta x its KL) */
    double adv;        /* the method's advantage */
    int active;        /* trained (0: --mask-truncated-completions dropped it) */
} Smp;

/* A rollout: P prompts x G samples, sample k = p * G + j. */
typedef struct {
    long index;        /* rollout number from 0; -1: none yet */
    size_t ns;         /* samples */
    Smp *s;            /* (ns) */
    int32_t *tok;      /* (ns, max_tokens) completion tokens */
    float *old, *ref;  /* (ns, max_tokens) log-probabilities: sampling policy, reference */
    float *val;        /* (ns, max_tokens) PPO: the value model's values at sampling (t <= n) */
    double *padv, *pret; /* (ns, max_tokens) PPO: per-token advantages (whitened) and returns */
    char **text;       /* (ns) the completions' texts, NUL-terminated */
    double *per;       /* (ns, nsrc) each reward source's value */
    uint32_t *prompts; /* (P) */
    RolloutText *txt;  /* (ns) while sampling */
    long gen_tokens;
} Roll;

typedef struct {
    /* flags */
    RlAlgo algo;
    long G, P, mini_batches, iterations, mask_truncated, kl_ratio, normalize_adv;
    double beta, eps, eps_high, val_temp;
    RlScale scale;
    RlLossType loss_type;
    DpoLoss dpo_loss;
    const char *fixed;
    const char *rollouts_out, *val_out;
    FILE *vdump;
    /* PPO */
    double gamma, lam, vf_coef, cliprange_value;
    RlKl kl_est;
    long whiten_rewards;
    Trainer vt;          /* the value model (a classifier with num_labels 1) and its AdamW */
    int has_value;
    float *vs_dev, *vd_dev, *vs_host, *vd_host; /* (N) its scores and d loss / d score */
    double ppo[16];      /* PPO metrics: the rollout's [0, 6), the step's [6, 16) */
    char value_src[4096];
    /* inputs */
    Rollout ro, vro;   /* the prompts (and the held-out ones) with the policy's tokenizer */
    int has_val;
    Rewards *rw;
    int nsrc;
    SampleParams sp, vsp;
    long max_tokens;
    char **prompt_text;  /* (prompts) decoded, for the rewards */
    char **vprompt_text;
    /* the run */
    Trainer *tr;
    Engine *g;
    Llama ref;           /* full fine-tuning: the frozen reference */
    int has_ref, need_ref;
    Roll roll, vroll;    /* the rollout in progress; the held-out answers of a validation */
    uint32_t *perm;      /* (P) a step's order of the rollout's groups */
    size_t *mb_list;     /* (P * G) a step's samples */
    uint64_t epoch, pos; /* prompt cursor: position pos of epoch's order */
    uint32_t *order;
    uint64_t order_epoch;
    long steps_done;
    FILE *fixed_f;
    long fixed_line;
    FILE *dump;
    /* the micro-batch's host and device buffers */
    int32_t *tok, *tgt, *pos_b;
    int32_t *slot_smp, *slot_t; /* per slot: sample, completion token index (-1: none) */
    float *rs_host, *rl_host, *rs_dev;
    double *seq_lp;      /* (ns) summed log-probabilities of a micro-batch's samples */
    /* the step's metrics */
    double st_gen, st_rew, st_ref, st_train;
    RlStats rst;
    double dst[4];       /* online DPO: pairs, summed k1 of both samples, chosen ahead of rejected, beta x margin */
    long step_tokens;
    int reward_norm;     /* --reward-norm: each rollout's rewards normalised after the gather */
    long micro_slots;    /* slots the last pack_micro filled (tokens forward and backward) */
    int share;           /* a prompt laid out once before its samples (not --no-shared-prompt) */
    double m_loss;
    /* validation */
    double v_reward, *v_src;
    long v_n;
} Rl;

static long steps_per_rollout(const Rl *R) { return R->mini_batches * R->iterations; }

// ----------------------------------------------------------------------------
// prompts: an order shuffled per epoch from the seed, and the cursor

static void prompt_order(Rl *R, uint64_t epoch) {
    size_t n = R->ro.ps.n;
    if (R->order && R->order_epoch == epoch) return;
    if (!R->order) R->order = xmalloc(n * sizeof *R->order);
    for (size_t i = 0; i < n; i++) R->order[i] = (uint32_t)i;
    Rng r;
    rng_seed(&r, (uint64_t)R->tr->o.seed * 0x9e3779b97f4a7c15ULL + epoch + 1);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_u64(&r) % i);
        uint32_t t = R->order[i - 1];
        R->order[i - 1] = R->order[j];
        R->order[j] = t;
    }
    R->order_epoch = epoch;
}

static uint32_t next_prompt(Rl *R) {
    if (R->pos >= R->ro.ps.n) R->epoch++, R->pos = 0;
    prompt_order(R, R->epoch);
    return R->order[R->pos++];
}

// ----------------------------------------------------------------------------
// the rollout buffer, its wire format (the DP gather and /state/aux)

/* ns samples of nprompts prompts, max_tokens each, nsrc reward sources. */
static void roll_alloc(Roll *b, size_t ns, size_t nprompts, size_t mt, int nsrc) {
    b->index = -1;
    b->ns = ns;
    b->s = xcalloc(ns, sizeof *b->s);
    b->tok = xcalloc(ns * mt, sizeof *b->tok);
    b->old = xcalloc(ns * mt, sizeof *b->old);
    b->ref = xcalloc(ns * mt, sizeof *b->ref);
    b->val = xcalloc(ns * mt, sizeof *b->val);
    b->padv = xcalloc(ns * mt, sizeof *b->padv);
    b->pret = xcalloc(ns * mt, sizeof *b->pret);
    b->text = xcalloc(ns, sizeof *b->text);
    b->per = xcalloc(ns * (size_t)(nsrc ? nsrc : 1), sizeof *b->per);
    b->prompts = xcalloc(nprompts, sizeof *b->prompts);
    b->txt = xcalloc(ns, sizeof *b->txt);
}

static void roll_free(Roll *b) {
    for (size_t k = 0; b->text && k < b->ns; k++) free(b->text[k]);
    for (size_t k = 0; b->txt && k < b->ns; k++) rollout_text_free(&b->txt[k]);
    free(b->s); free(b->tok); free(b->old); free(b->ref); free(b->val); free(b->padv); free(b->pret); free(b->text); free(b->per); free(b->prompts); free(b->txt);
    memset(b, 0, sizeof *b);
}

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

/* PPO's values of a sample: t = 0 .. n (TRL's padding_mask_p1: one past the
 * last token), at most max_tokens; none for the other methods. */
static size_t val_slots(const Rl *R, const Smp *s) {
    if (R->algo != RL_PPO) return 0;
    return (size_t)s->n < (size_t)R->max_tokens ? (size_t)s->n + 1 : (size_t)R->max_tokens;
}

static void put(Buf *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 256;
        w->p = xrealloc(w->p, w->cap);
    }
    memcpy(w->p + w->n, p, n);
    w->n += n;
}

/* Samples [k0, k1) of the rollout as bytes. */
static void roll_pack(const Rl *R, size_t k0, size_t k1, Buf *w) {
    const Roll *b = &R->roll;
    size_t mt = (size_t)R->max_tokens;
    int64_t hdr[4] = {b->index, (int64_t)k0, (int64_t)k1, R->nsrc};
    put(w, hdr, sizeof hdr);
    put(w, b->prompts, (size_t)R->P * sizeof *b->prompts);
    for (size_t k = k0; k < k1; k++) {
        const Smp *s = &b->s[k];
        put(w, s, sizeof *s);
        put(w, b->per + k * (size_t)R->nsrc, (size_t)R->nsrc * sizeof *b->per);
        put(w, b->tok + k * mt, (size_t)s->n * sizeof *b->tok);
        put(w, b->old + k * mt, (size_t)s->n * sizeof *b->old);
        put(w, b->ref + k * mt, (size_t)s->n * sizeof *b->ref);
        put(w, b->val + k * mt, (size_t)val_slots(R, s) * sizeof *b->val);
        put(w, b->text[k] ? b->text[k] : "", (size_t)s->ntext);
    }
}

static int take(const char **p, const char *end, void *out, size_t n) {
    if ((size_t)(end - *p) < n) return -1;
    memcpy(out, *p, n);
    *p += n;
    return 0;
}

/* Bytes from roll_pack into the rollout: -1 when they do not fit this run. */
static int roll_unpack(Rl *R, const void *data, size_t n) {
    Roll *b = &R->roll;
    const char *p = data, *end = p + n;
    size_t mt = (size_t)R->max_tokens;
    int64_t hdr[4];
    if (take(&p, end, hdr, sizeof hdr) || hdr[1] < 0 || hdr[2] < hdr[1] || (size_t)hdr[2] > b->ns || hdr[3] != R->nsrc)
        return -1;
    if (take(&p, end, b->prompts, (size_t)R->P * sizeof *b->prompts)) return -1;
    b->index = hdr[0];
    for (size_t k = (size_t)hdr[1]; k < (size_t)hdr[2]; k++) {
        Smp *s = &b->s[k];
        if (take(&p, end, s, sizeof *s) || s->n < 0 || (size_t)s->n > mt || s->ntext < 0 || s->prompt >= R->ro.ps.n ||
            s->finish < FINISH_NONE || s->finish > FINISH_CTX)
            return -1;
        if (take(&p, end, b->per + k * (size_t)R->nsrc, (size_t)R->nsrc * sizeof *b->per) ||
            take(&p, end, b->tok + k * mt, (size_t)s->n * sizeof *b->tok) ||
            take(&p, end, b->old + k * mt, (size_t)s->n * sizeof *b->old) ||
            take(&p, end, b->ref + k * mt, (size_t)s->n * sizeof *b->ref) ||
            take(&p, end, b->val + k * mt, (size_t)val_slots(R, s) * sizeof *b->val))
            return -1;
        free(b->text[k]);
        b->text[k] = xmalloc((size_t)s->ntext + 1);
        if (take(&p, end, b->text[k], (size_t)s->ntext)) return -1;
        b->text[k][s->ntext] = '\0';
    }
    return p == end ? 0 : -1;
}

// ----------------------------------------------------------------------------
// sampling

typedef struct {
    Rl *R;
    Roll *b;
    const Rollout *ro;
    size_t G;
    long outstanding;
} Gen;

static int on_token(void *ud, EngineSeq *s) {
    Gen *x = ud;
    size_t k = (size_t)(uintptr_t)s->user * x->G + (size_t)s->sample;
    uint32_t i = x->b->prompts[(uintptr_t)s->user];
    const PromptSet *ps = &x->ro->ps;
    size_t k0 = ps->stop_off[i], k1 = ps->stop_off[i + 1];
    return rollout_text_token(&x->b->txt[k], x->ro, s->tokens[s->n - 1], NULL, 0, ps->stop + k0, k1 - k0);
}

static void on_done(void *ud, EngineSeq *s) {
    Gen *x = ud;
    Rl *R = x->R;
    Roll *b = x->b;
    size_t k = (size_t)(uintptr_t)s->user * x->G + (size_t)s->sample, mt = (size_t)R->max_tokens;
    Smp *sm = &b->s[k];
    RolloutText *t = &b->txt[k];
    sm->n = s->n;
    sm->finish = t->stopped ? FINISH_STOP : s->finish;
    memcpy(b->tok + k * mt, s->tokens, (size_t)s->n * sizeof *b->tok);
    if (s->logprob) memcpy(b->old + k * mt, s->logprob, (size_t)s->n * sizeof *b->old);
    char *txt = NULL;
    size_t cap = 0, n = tok_utf8_lossy(t->text ? t->text : "", t->len, &txt, &cap);
    free(b->text[k]);
    b->text[k] = txt ? txt : xcalloc(1, 1);
    if (!txt) n = 0;
    b->text[k][n] = '\0';
    sm->ntext = (int32_t)n;
    rollout_text_free(t);
    b->gen_tokens += s->n;
    x->outstanding--;
}

/* Samples of prompts b->prompts[p0, p1) (G each at sp) into b through the
 * engine, seeded from (seed, rollout index) as `llamac sample` seeds prompt
 * p of a file. */
static int sample_prompts(Rl *R, Roll *b, const Rollout *ro, size_t p0, size_t p1, int G, const SampleParams *sp,
                          uint64_t seed, Err *e) {
    Gen x = {R, b, ro, (size_t)G, 0};
    EngineCallbacks cb = {on_token, on_done, &x};
    engine_sync_weights(R->g);
    for (size_t p = p0; p < p1; p++) {
        uint32_t i = b->prompts[p];
        EngineRequest rq;
        memset(&rq, 0, sizeof rq);
        rq.prompt = ro->ps.ids + ro->ps.off[i];
        rq.n_prompt = (int)(ro->ps.off[i + 1] - ro->ps.off[i]);
        rq.n = G;
        rq.max_new = (int)R->max_tokens;
        rq.sp = *sp;
        rq.seed = sample_seed(seed, p);
        rq.stop_ids = ro->stop_ids;
        rq.n_stop_ids = ro->n_stop_ids;
        rq.logprobs = 1;
        rq.user = (void *)(uintptr_t)p;
        for (int j = 0; j < G; j++) memset(&b->txt[p * (size_t)G + (size_t)j], 0, sizeof *b->txt);
        if (engine_add(R->g, &rq, e) < 0) return -1;
        x.outstanding += G;
    }
    engine_run(R->g, &cb);
    return 0;
}

/* --fixed-rollouts: samples [k0, k1) of the rollout from the file's next
 * lines (every rank reads the whole rollout's lines, keeping its own). */
static int fixed_read(Rl *R, size_t k0, size_t k1, double *given, Err *e) {
    Roll *b = &R->roll;
    size_t mt = (size_t)R->max_tokens;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (R->fixed_line < b->index * (long)b->ns) { /* a resumed run: the rollouts before this one */
        if (getline(&line, &cap, R->fixed_f) <= 0) {
            free(line);
            return err_set(e, "%s: ended at line %ld before rollout %ld", R->fixed, R->fixed_line, b->index);
        }
        R->fixed_line++;
    }
    for (size_t k = 0; k < b->ns && rc == 0; k++) {
        ssize_t got = getline(&line, &cap, R->fixed_f);
        R->fixed_line++;
        if (got <= 0) {
            rc = err_set(e, "%s: ended at line %ld, rollout %ld needs %zu more lines", R->fixed, R->fixed_line,
                         b->index, b->ns - k);
            break;
        }
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        json_t *ids = o ? json_object_get(o, "completion_ids") : NULL, *pi = o ? json_object_get(o, "prompt_index") : NULL;
        json_t *rw = o ? json_object_get(o, "reward") : NULL;
        size_t g = k / (size_t)R->G;
        if (!o || !json_is_array(ids) || !json_is_integer(pi) || json_array_size(ids) == 0 ||
            json_array_size(ids) > mt || (rw && !json_is_number(rw))) {
            rc = err_set(e, "%s:%ld: want {\"prompt_index\": I, \"completion_ids\": [1 to %zu ids], \"reward\": x}",
                         R->fixed, R->fixed_line, mt);
        } else if (k % (size_t)R->G == 0 && (json_integer_value(pi) < 0 || (size_t)json_integer_value(pi) >= R->ro.ps.n)) {
            rc = err_set(e, "%s:%ld: prompt_index %lld: the prompt file has %zu", R->fixed, R->fixed_line,
                         (long long)json_integer_value(pi), R->ro.ps.n);
        } else if (k % (size_t)R->G != 0 && (size_t)json_integer_value(pi) != b->prompts[g]) {
            rc = err_set(e, "%s:%ld: prompt_index %lld inside a group of prompt %u (--group %ld lines a prompt)",
                         R->fixed, R->fixed_line, (long long)json_integer_value(pi), b->prompts[g], R->G);
        } else {
            if (k % (size_t)R->G == 0) b->prompts[g] = (uint32_t)json_integer_value(pi);
            given[k] = rw ? json_number_value(rw) : NAN;
            size_t np = R->ro.ps.off[b->prompts[g] + 1] - R->ro.ps.off[b->prompts[g]];
            if (np + json_array_size(ids) - 1 + (R->algo == RL_PPO) > (size_t)R->tr->o.T) {
                rc = err_set(e, "%s:%ld: prompt and completion take %zu tokens, more than the %ld a row holds",
                             R->fixed, R->fixed_line, np + json_array_size(ids), R->tr->o.T);
            } else if (k >= k0 && k < k1) {
                Smp *s = &b->s[k];
                s->n = (int32_t)json_array_size(ids);
                s->finish = FINISH_LENGTH;
                for (int t = 0; t < s->n && rc == 0; t++) {
                    json_t *id = json_array_get(ids, (size_t)t);
                    json_int_t v = json_is_integer(id) ? json_integer_value(id) : -1;
                    if (v < 0 || v >= R->ro.tok.vocab) {
                        rc = err_set(e, "%s:%ld: completion id %d is not a token id of the tokenizer (0 to %d)",
                                     R->fixed, R->fixed_line, t, R->ro.tok.vocab - 1);
                        break;
                    }
                    b->tok[k * mt + (size_t)t] = (int32_t)v;
                    for (int q = 0; q < R->ro.n_stop_ids; q++)
                        if (v == R->ro.stop_ids[q] && t == s->n - 1) s->finish = FINISH_STOP;
                }
                char *txt = NULL;
                size_t tc = 0, n = rc ? 0 : tok_decode(&R->ro.tok, b->tok + k * mt,
                                                         (size_t)s->n - (s->finish == FINISH_STOP), &txt, &tc);
                if (n == (size_t)-1) n = 0;
                free(b->text[k]);
                b->text[k] = xmalloc(n + 1);
                if (n) memcpy(b->text[k], txt, n);
                b->text[k][n] = '\0';
                free(txt);
                s->ntext = (int32_t)n;
            }
        }
        json_decref(o);
    }
    free(line);
    return rc;
}

// ----------------------------------------------------------------------------
// teacher-forced log-probabilities of rollout samples

/* Where pack_micro is in the (B, T) rows: the next free slot, and the
 * prompt whose slots the row holds last (-1: none), that the next sample of
 * the same prompt may branch from (ops.h: a position that restarts inside
 * the document starts a branch). */
typedef struct {
    int row, col;
    long open;
} Place;

static int prompt_len(const Rl *R, size_t k) {
    uint32_t p = R->roll.s[k].prompt;
    return (int)(R->ro.ps.off[p + 1] - R->ro.ps.off[p]);
}

/* The first slot of sample k's completion slots (n + extra of them, from
 * position np - 1: its last prompt token on, predicting its tokens) and,
 * in *trunk, where its prompt's first np - 1 slots start: after the open
 * prompt (shared) or at a fresh copy. -1 when the rows are full. */
static long place(const Rl *R, Place *pl, size_t k, int extra, long *trunk) {
    int B = (int)R->tr->o.B, T = (int)R->tr->o.T, np = prompt_len(R, k);
    int need = R->roll.s[k].n + extra;
    long p = (long)R->roll.s[k].prompt;
    *trunk = -1;
    if (R->share && pl->open == p && pl->col + need <= T) { /* a branch of the open prompt */
        long at = (long)pl->row * T + pl->col;
        pl->col += need;
        return at;
    }
    need += np - 1;
    if (need > T) return -1;
    if (pl->col + need > T) pl->row++, pl->col = 0;
    if (pl->row >= B) return -1;
    *trunk = (long)pl->row * T + pl->col;
    pl->col += need;
    pl->open = p;
    return *trunk + np - 1;
}

/* Pack samples list[next..n) into the (B, T) rows of R->tok, tgt, pos_b;
 * returns the first sample left out. A sample is its prompt then its
 * completion, in np + n - 1 slots (+ extra: its last token as an input, for
 * PPO's value one past it) at positions 0 .. np + n - 2; with R->share the
 * samples of one prompt that follow each other in a row lay the prompt out
 * once and branch from it (the same numbers, fewer slots: GRPO's G
 * completions cost one prompt, not G). With pair, both samples of a pair
 * go in the same micro-batch. The slots record which sample and completion
 * token they train. */
static size_t pack_micro(Rl *R, const size_t *list, size_t n, size_t next, int pair, int extra) {
    Trainer *tr = R->tr;
    const Roll *b = &R->roll;
    size_t N = (size_t)tr->o.B * (size_t)tr->o.T, mt = (size_t)R->max_tokens, k = next;
    Place pl = {0, 0, -1};
    R->micro_slots = 0;
    for (size_t q = 0; q < N; q++) R->tok[q] = 0, R->tgt[q] = LC_IGNORE, R->pos_b[q] = 0, R->slot_smp[q] = -1, R->slot_t[q] = -1;
    while (k < n) {
        size_t unit = pair && k + 1 < n ? 2 : 1;
        Place p2 = pl;
        long trunk;
        int fits = 1;
        for (size_t u = 0; u < unit && fits; u++) fits = place(R, &p2, list[k + u], extra, &trunk) >= 0;
        if (!fits) {
            LC_ASSERT(k > next); /* a micro-batch holds at least one sequence (or pair): T and B are checked */
            break;
        }
        for (size_t u = 0; u < unit; u++, k++) {
            size_t sk = list[k];
            const Smp *s = &b->s[sk];
            const int32_t *pid = R->ro.ps.ids + R->ro.ps.off[s->prompt];
            int np = prompt_len(R, sk), len = np + s->n;
            long at0 = place(R, &pl, sk, extra, &trunk);
            for (int q = 0; trunk >= 0 && q < np - 1; q++) { /* the prompt's slots: no target */
                R->tok[trunk + q] = pid[q];
                R->pos_b[trunk + q] = q;
            }
            R->micro_slots += (trunk >= 0 ? np - 1 : 0) + s->n + extra;
            for (int q = np - 1; q + 1 < len + extra; q++) {
                size_t at = (size_t)(at0 + q - (np - 1));
                R->tok[at] = q < np ? pid[q] : b->tok[sk * mt + (size_t)(q - np)];
                R->pos_b[at] = q;
                if (q + 1 == len) { /* extra: the last token as an input, for the value one past it */
                    R->slot_smp[at] = (int32_t)sk;
                    R->slot_t[at] = s->n;
                } else {
                    R->tgt[at] = b->tok[sk * mt + (size_t)(q + 1 - np)];
                    R->slot_smp[at] = (int32_t)sk;
                    R->slot_t[at] = q + 1 - np;
                }
            }
        }
    }
    return k;
}

/* The forward of the packed micro-batch through m (head at temperature
 * temp, adapters as set), leaving each slot's log-probability in
 * R->rl_host as -row_loss. */
static int micro_forward(Rl *R, Llama *m, float temp, Err *e) {
    size_t N = (size_t)m->B * m->T;
    if (llama_set_batch(m, R->tok, R->tgt, R->pos_b, e)) return -1;
    m->head_temp = temp;
    llama_forward_rows(m, NULL);
    m->head_temp = 0;
    m->ops->download(m->ctx, R->rl_host, m->row_loss, N * sizeof(float));
    return 0;
}

/* Log-probabilities of samples list[0..n) into dst (old or ref) under the
 * reference (ref 1: adapters off or the frozen copy) or the policy. */
static int logps_of(Rl *R, const size_t *list, size_t n, int ref, float temp, float *dst, Err *e) {
    Trainer *tr = R->tr;
    Llama *m = ref && R->has_ref ? &R->ref : &tr->m;
    size_t N = (size_t)tr->o.B * tr->o.T, mt = (size_t)R->max_tokens;
    int en = m->lora_enabled, drop = m->lora_train;
    if (ref) m->lora_enabled = 0;
    m->lora_train = 0;
    int rc = 0;
    for (size_t next = 0; next < n && rc == 0;) {
        next = pack_micro(R, list, n, next, R->algo == RL_ONLINE_DPO, 0);
        if ((rc = micro_forward(R, m, temp, e))) break;
        for (size_t q = 0; q < N; q++)
            if (R->slot_smp[q] >= 0) dst[(size_t)R->slot_smp[q] * mt + (size_t)R->slot_t[q]] = -R->rl_host[q];
    }
    m->lora_enabled = en;
    m->lora_train = drop;
    return rc;
}

/* PPO: the value model's scores of the packed micro-batch into R->vs_host
 * (every slot; no gradient yet). */
static int value_forward(Rl *R, Err *e) {
    Llama *v = &R->vt.m;
    size_t N = (size_t)v->B * v->T;
    if (llama_set_batch(v, R->tok, R->tgt, R->pos_b, e)) return -1;
    llama_forward_score(v, 0, R->vs_dev);
    v->ops->download(v->ctx, R->vs_host, R->vs_dev, N * sizeof(float));
    return 0;
}

/* PPO: the values at sampling of samples list[0..n) into b->val: value t of
 * a sample is the score of the slot predicting its token t (t = n: the
 * slot of its last token). */
static int values_of(Rl *R, const size_t *list, size_t n, Err *e) {
    Roll *b = &R->roll;
    Llama *v = &R->vt.m;
    size_t N = (size_t)v->B * v->T, mt = (size_t)R->max_tokens;
    int drop = v->lora_train, rc = 0;
    v->lora_train = 0;
    for (size_t next = 0; next < n && rc == 0;) {
        next = pack_micro(R, list, n, next, 0, 1);
        if ((rc = value_forward(R, e))) break;
        for (size_t q = 0; q < N; q++)
            if (R->slot_smp[q] >= 0 && (size_t)R->slot_t[q] < mt)
                b->val[(size_t)R->slot_smp[q] * mt + (size_t)R->slot_t[q]] = R->vs_host[q];
    }
    v->lora_train = drop;
    return rc;
}

// ----------------------------------------------------------------------------
// the rollout: sample, reward, reference, gather, advantages

static int reward_samples(Rl *R, Roll *b, const Rollout *ro, char **ptext, size_t k0, size_t k1, const double *given,
                          Err *e) {
    size_t n = k1 - k0;
    if (n == 0) return 0;
    RewardItem *it = xcalloc(n, sizeof *it);
    double *total = xmalloc(n * sizeof *total), *per = xmalloc(n * (size_t)R->nsrc * sizeof *per + 1);
    int need = 0;
    for (size_t q = 0; q < n; q++) {
        size_t k = k0 + q;
        const Smp *s = &b->s[k];
        it[q] = (RewardItem){ro->ps.obj[s->prompt], ptext[s->prompt], b->text[k], s->n, s->finish == FINISH_STOP};
        need |= !given || isnan(given[k]);
    }
    int rc = 0;
    if (need && R->rw) rc = rewards_score(R->rw, it, n, per, total, e);
    else if (need) rc = err_set(e, "%s: a line without \"reward\" and no reward source", R->fixed);
    for (size_t q = 0; q < n && rc == 0; q++) {
        size_t k = k0 + q;
        b->s[k].reward = given && !isnan(given[k]) ? given[k] : total[q];
        if (need) memcpy(b->per + k * (size_t)R->nsrc, per + q * (size_t)R->nsrc, (size_t)R->nsrc * sizeof *per);
        else memset(b->per + k * (size_t)R->nsrc, 0, (size_t)R->nsrc * sizeof *per);
    }
    free(it);
    free(total);
    free(per);
    return rc;
}

/* PPO (TRL 1.12.0): the per-token rewards (the KL penalty on every token,
 * the score one past the last), GAE over the values at sampling, whitened
 * advantages and the returns; and the rollout's objective/ metrics. */
static void ppo_advantages(Rl *R) {
    Roll *b = &R->roll;
    size_t ns = b->ns, mt = (size_t)R->max_tokens, n = ns * mt;
    double *lp = xcalloc(n, sizeof *lp), *rf = xcalloc(n, sizeof *rf), *vl = xcalloc(n, sizeof *vl);
    double *rw = xmalloc(n * sizeof *rw), *kl = xmalloc(n * sizeof *kl), *sc = xmalloc(ns * sizeof *sc);
    int *len = xmalloc(ns * sizeof *len);
    for (size_t k = 0; k < ns; k++) {
        const Smp *s = &b->s[k];
        len[k] = s->n;
        sc[k] = s->reward;
        for (size_t t = 0; t < (size_t)s->n; t++) lp[k * mt + t] = b->old[k * mt + t], rf[k * mt + t] = b->ref[k * mt + t];
        for (size_t t = 0; t < val_slots(R, s); t++) vl[k * mt + t] = b->val[k * mt + t];
    }
    rl_ppo_rewards(lp, rf, sc, len, ns, (int)mt, R->kl_est, R->beta, rw, kl);
    if (R->whiten_rewards) { /* TRL: over t <= n (shift_mean False), then 0 beyond */
        uint8_t *mask = xmalloc(n);
        for (size_t k = 0; k < ns; k++)
            for (size_t t = 0; t < mt; t++) mask[k * mt + t] = t <= (size_t)len[k];
        rl_masked_whiten(rw, mask, n, 0);
        for (size_t q = 0; q < n; q++) rw[q] = mask[q] ? rw[q] : 0;
        free(mask);
    }
    rl_gae(rw, vl, len, ns, (int)mt, R->gamma, R->lam, b->padv, b->pret);
    double skl = 0, sent = 0, sscore = 0, eos = 0;
    for (size_t k = 0; k < ns; k++) {
        for (size_t t = 0; t < (size_t)len[k]; t++) skl += kl[k * mt + t], sent -= lp[k * mt + t];
        sscore += sc[k];
        eos += b->s[k].finish == FINISH_STOP;
    }
    /* objective/kl, objective/entropy (TRL's: the summed -logp of the sampled tokens), non_score_reward,
     * rlhf_reward, scores, val/num_eos_tokens */
    R->ppo[0] = skl / (double)ns;
    R->ppo[1] = sent / (double)ns;
    R->ppo[2] = -R->beta * skl / (double)ns;
    R->ppo[3] = sscore / (double)ns + R->ppo[2];
    R->ppo[4] = sscore / (double)ns;
    R->ppo[5] = eos;
    free(lp); free(rf); free(vl); free(rw); free(kl); free(sc); free(len);
}

/* The advantages from the gathered rollout (every rank the same). */
static void advantages(Rl *R) {
    for (size_t k = 0; k < R->roll.ns; k++) {
        R->roll.s[k].active = !(R->mask_truncated && R->roll.s[k].finish != FINISH_STOP);
        R->roll.s[k].shaped = R->roll.s[k].reward;
    }
    if (R->algo == RL_PPO) {
        ppo_advantages(R);
        return;
    }
    Roll *b = &R->roll;
    size_t ns = b->ns, mt = (size_t)R->max_tokens;
    double *r = xmalloc(ns * sizeof *r), *adv = xmalloc(ns * sizeof *adv);
    for (size_t k = 0; k < ns; k++) {
        Smp *s = &b->s[k];
        r[k] = s->reward;
        if (R->algo == RL_RLOO && R->beta != 0) { /* TRL: the summed k1 of the sampling policy, a reward */
            double kl = 0;
            for (int t = 0; t < s->n; t++) kl += (double)b->old[k * mt + (size_t)t] - (double)b->ref[k * mt + (size_t)t];
            r[k] -= R->beta * kl;
        }
    }
    if (R->algo == RL_GRPO) rl_grpo_advantages(r, ns, (int)R->G, R->scale, adv, NULL);
    else if (R->algo == RL_RLOO) rl_rloo_advantages(r, ns, (int)R->G, (int)R->normalize_adv, adv);
    else for (size_t k = 0; k < ns; k++) adv[k] = 0;
    for (size_t k = 0; k < ns; k++) b->s[k].adv = adv[k], b->s[k].shaped = r[k];
    free(r);
    free(adv);
}

static void dump_rollout(Rl *R) {
    if (!R->dump) return;
    Roll *b = &R->roll;
    for (size_t k = 0; k < b->ns; k++) {
        json_t *o = json_object();
        json_object_set_new(o, "rollout", json_integer(b->index));
        json_object_set_new(o, "prompt", json_integer(b->s[k].prompt));
        json_object_set_new(o, "sample", json_integer((json_int_t)(k % (size_t)R->G)));
        json_object_set_new(o, "completion", json_string(b->text[k] ? b->text[k] : ""));
        json_object_set_new(o, "tokens", json_integer(b->s[k].n));
        json_object_set_new(o, "finish", json_string(finish_names[b->s[k].finish]));
        json_object_set_new(o, "reward", json_real(b->s[k].reward));
        json_object_set_new(o, "advantage", json_real(b->s[k].adv));
        for (int q = 0; q < R->nsrc; q++) {
            char key[4200];
            snprintf(key, sizeof key, "rewards/%s", rewards_name(R->rw, q));
            json_object_set_new(o, key, json_real(b->per[k * (size_t)R->nsrc + (size_t)q]));
        }
        char *s = json_dumps(o, JSON_COMPACT);
        fprintf(R->dump, "%s\n", s);
        free(s);
        json_decref(o);
    }
    fflush(R->dump);
}

static int make_rollout(Rl *R, long index, Err *e) {
    Trainer *tr = R->tr;
    Roll *b = &R->roll;
    size_t P = (size_t)R->P, G = (size_t)R->G;
    b->index = index;
    b->gen_tokens = 0;
    for (size_t p = 0; p < P; p++) b->prompts[p] = next_prompt(R); /* every rank draws them all */
    memset(b->s, 0, b->ns * sizeof *b->s);
    /* this rank's groups */
    size_t p0 = P * (size_t)tr->dp_rank / (size_t)tr->dp, p1 = P * (size_t)(tr->dp_rank + 1) / (size_t)tr->dp;
    size_t k0 = p0 * G, k1 = p1 * G;
    double t0 = time_now(), *given = NULL;
    int rc = 0;
    if (R->fixed) {
        given = xmalloc(b->ns * sizeof *given);
        rc = fixed_read(R, k0, k1, given, e);
    } else {
        uint64_t seed = sample_seed((uint64_t)tr->o.seed, (uint64_t)index);
        rc = sample_prompts(R, b, &R->ro, p0, p1, (int)G, &R->sp, seed, e);
    }
    for (size_t k = k0; k < k1; k++) b->s[k].prompt = b->prompts[k / G];
    double t1 = time_now();
    size_t *list = xmalloc(b->ns * sizeof *list);
    for (size_t k = k0; k < k1; k++) list[k - k0] = k;
    float temp = R->algo == RL_ONLINE_DPO ? 1.0f : (float)R->sp.temperature;
    if (rc == 0 && R->fixed) rc = logps_of(R, list, k1 - k0, 0, temp, b->old, e); /* TRL's with one iteration */
    double t2 = time_now();
    if (rc == 0) rc = reward_samples(R, b, &R->ro, R->prompt_text, k0, k1, given, e);
    double t3 = time_now();
    if (rc == 0 && R->need_ref) rc = logps_of(R, list, k1 - k0, 1, temp, b->ref, e);
    if (rc == 0 && R->algo == RL_PPO) rc = values_of(R, list, k1 - k0, e);
    free(list);
    free(given);
    if (dist_allreduce_max_int(rc != 0)) {
        if (!rc) err_set(e, "rollout %ld failed on another rank", index);
        return -1;
    }
    if (tr->dp > 1) { /* every rank gets every group */
        for (int r = 0; r < tr->dp; r++) {
            Buf w = {0};
            if (r == tr->dp_rank) roll_pack(R, k0, k1, &w);
            uint64_t n = w.n;
            dist_bcast(&n, sizeof n, r);
            if (r != tr->dp_rank) w.p = xmalloc(n ? n : 1);
            dist_bcast(w.p, n, r);
            if (r != tr->dp_rank && roll_unpack(R, w.p, n)) LC_FATAL("rollout %ld: rank %d sent a damaged part", index, r);
            free(w.p);
        }
        long gt = b->gen_tokens;
        dist_allreduce_long(&gt, 1);
        b->gen_tokens = gt;
    }
    if (R->reward_norm) { /* over the whole rollout (every rank's groups), Bessel, + 1e-8 */
        double mean = 0, var = 0;
        for (size_t k = 0; k < b->ns; k++) mean += b->s[k].reward / (double)b->ns;
        for (size_t k = 0; k < b->ns; k++) var += pow(b->s[k].reward - mean, 2) / (double)(b->ns > 1 ? b->ns - 1 : 1);
        for (size_t k = 0; k < b->ns; k++) b->s[k].reward = (b->s[k].reward - mean) / (sqrt(var) + 1e-8);
    }
    advantages(R);
    R->st_gen = t1 - t0 + (R->fixed ? t2 - t1 : 0);
    R->st_rew = t3 - t2;
    R->st_ref = time_now() - t3;
    if (tr->rank == 0) dump_rollout(R);
    return 0;
}

// ----------------------------------------------------------------------------
// one optimizer step: a mini-batch of the rollout's groups

/* The groups of mini-batch mb of iteration it, in order: the identity with
 * one mini-batch, else a permutation of the groups drawn from (seed,
 * rollout, iteration). */
static void minibatch_groups(const Rl *R, long it, long mb, size_t *g0, size_t *ng, uint32_t *perm) {
    size_t P = (size_t)R->P, per = P / (size_t)R->mini_batches;
    for (size_t p = 0; p < P; p++) perm[p] = (uint32_t)p;
    if (R->mini_batches > 1) {
        Rng r;
        rng_seed(&r, sample_seed((uint64_t)R->tr->o.seed ^ 0x5bd1e995ULL, (uint64_t)R->roll.index * 1024 + (uint64_t)it));
        for (size_t i = P; i > 1; i--) {
            size_t j = (size_t)(rng_u64(&r) % i);
            uint32_t t = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = t;
        }
    }
    *g0 = (size_t)mb * per;
    *ng = per;
}

static double rl_step(void *ud, Trainer *tr, const int32_t *tok_, const int32_t *tgt_, const int32_t *pos_, long accum,
                      long step, Err *e) {
    (void)tok_, (void)tgt_, (void)pos_, (void)accum;
    Rl *R = ud;
    Roll *b = &R->roll;
    long S = steps_per_rollout(R), j = step % S;
    R->st_gen = R->st_rew = R->st_ref = 0;
    if (b->index != step / S) {
        if (j != 0) {
            err_set(e, "step %ld is inside rollout %ld, which the checkpoint did not keep", step, step / S);
            return NAN;
        }
        if (make_rollout(R, step / S, e)) return NAN;
    }
    double t1 = time_now();
    long it = j / R->mini_batches, mb = j % R->mini_batches;
    size_t G = (size_t)R->G, mt = (size_t)R->max_tokens, g0, ng;
    uint32_t *perm = R->perm;
    minibatch_groups(R, it, mb, &g0, &ng, perm);
    /* the mini-batch's samples; this rank trains its share of its groups */
    size_t nm = ng * G, *list = R->mb_list;
    long rows = 0, tokens = 0, gen_tokens = 0;
    for (size_t q = 0; q < ng; q++)
        for (size_t s = 0; s < G; s++) {
            size_t k = (size_t)perm[g0 + q] * G + s;
            list[q * G + s] = k;
            rows++; /* TRL's row counts take masked rows too */
            if (b->s[k].active) tokens += b->s[k].n;
        }
    for (size_t k = 0; k < b->ns; k++) gen_tokens += b->s[k].active ? b->s[k].n : 0;
    long vtokens = 0; /* PPO: the value loss's slots (t <= n) */
    for (size_t q = 0; q < nm; q++) vtokens += (long)val_slots(R, &b->s[list[q]]);
    for (int q = 6; q < 16; q++) R->ppo[q] = 0;
    if (R->algo == RL_PPO) R->vt.m.ops->zero(R->vt.m.ctx, R->vt.grads, R->vt.pt->size * sizeof(float));
    size_t q0 = ng * (size_t)tr->dp_rank / (size_t)tr->dp * G, q1 = ng * (size_t)(tr->dp_rank + 1) / (size_t)tr->dp * G;
    Llama *m = &tr->m;
    size_t N = (size_t)tr->o.B * tr->o.T;
    float temp = R->algo == RL_ONLINE_DPO ? 1.0f : (float)R->sp.temperature;
    /* one optimizer step a rollout: the old log-probabilities are this forward's own, detached (TRL's with
     * num_iterations 1: ratio 1 exactly, whatever the engine's rounding or the adapters' dropout) */
    int fresh = S == 1;
    RlLossOpts lo = {R->eps, R->eps_high, R->algo == RL_GRPO ? R->beta : 0, (int)R->kl_ratio};
    memset(&R->rst, 0, sizeof R->rst);
    memset(R->dst, 0, sizeof R->dst);
    double loss = 0;
    long npairs = (long)(nm / 2), ran = 0;
    int rc = 0;
    for (size_t next = q0; next < q1 && rc == 0;) {
        size_t from = next;
        next = pack_micro(R, list, q1, next, R->algo == RL_ONLINE_DPO, R->algo == RL_PPO);
        llama_lora_seed(m, sample_seed(sample_seed((uint64_t)tr->o.seed, (uint64_t)step), (uint64_t)from));
        if ((rc = micro_forward(R, m, temp, e))) break;
        for (size_t q = from; q < next; q++) R->seq_lp[list[q]] = 0;
        ran += R->micro_slots;
        for (size_t q = 0; q < N; q++)
            if (R->slot_smp[q] >= 0 && R->slot_t[q] < b->s[R->slot_smp[q]].n)
                R->seq_lp[R->slot_smp[q]] += -(double)R->rl_host[q];
        /* d loss / d logp of every slot (row weights: minus it) */
        for (size_t q = 0; q < N; q++) R->rs_host[q] = 0;
        if (R->algo == RL_ONLINE_DPO) {
            for (size_t q = from; q + 1 < next; q += 2) {
                size_t a = list[q], c = list[q + 1];
                int ca = b->s[a].reward >= b->s[c].reward; /* chosen: the higher reward, the first on ties */
                size_t ch = ca ? a : c, rj = ca ? c : a;
                double rc_ = 0, rr = 0;
                for (int t = 0; t < b->s[ch].n; t++) rc_ += b->ref[ch * mt + (size_t)t];
                for (int t = 0; t < b->s[rj].n; t++) rr += b->ref[rj * mt + (size_t)t];
                double h = (R->seq_lp[ch] - rc_) - (R->seq_lp[rj] - rr), dh;
                loss += dpo_loss(R->dpo_loss, R->beta, 0, h, &dh) / (double)npairs;
                R->dst[0] += 1;
                R->dst[1] += R->seq_lp[ch] - rc_ + R->seq_lp[rj] - rr;
                R->dst[2] += (R->seq_lp[ch] - rc_) > (R->seq_lp[rj] - rr);
                R->dst[3] += R->beta * h;
                R->seq_lp[ch] = dh / (double)npairs; /* d loss / d (sum logp) */
                R->seq_lp[rj] = -dh / (double)npairs;
            }
            for (size_t q = 0; q < N; q++)
                if (R->slot_smp[q] >= 0) R->rs_host[q] = (float)-R->seq_lp[R->slot_smp[q]];
        } else if (R->algo == RL_RLOO) {
            for (size_t q = from; q < next; q++) {
                size_t k = list[q];
                if (!b->s[k].active) {
                    R->seq_lp[k] = 0;
                    continue;
                }
                double so = 0, d;
                for (int t = 0; t < b->s[k].n; t++) so += b->old[k * mt + (size_t)t];
                if (fresh) so = R->seq_lp[k];
                loss += rl_clip_seq(&lo, R->seq_lp[k], so, b->s[k].adv, &d, &R->rst) / (double)rows;
                R->seq_lp[k] = d / (double)rows;
            }
            for (size_t q = 0; q < N; q++)
                if (R->slot_smp[q] >= 0) R->rs_host[q] = (float)-R->seq_lp[R->slot_smp[q]];
        } else if (R->algo == RL_PPO) { /* the clipped policy loss, a token mean over the mini-batch */
            for (size_t q = 0; q < N; q++) {
                if (R->slot_smp[q] < 0) continue;
                size_t k = (size_t)R->slot_smp[q], t = (size_t)R->slot_t[q];
                if (t >= (size_t)b->s[k].n) continue;
                double lp = -(double)R->rl_host[q], old = fresh ? lp : b->old[k * mt + t], d;
                double l = rl_clip_token(&lo, lp, old, 0, b->padv[k * mt + t], &d, &R->rst);
                loss += l / (double)tokens;
                R->ppo[6] += l / (double)tokens;
                R->ppo[7] += 0.5 * (lp - old) * (lp - old);
                R->rs_host[q] = (float)(-d / (double)tokens);
            }
        } else { /* GRPO */
            for (size_t q = 0; q < N; q++) {
                if (R->slot_smp[q] < 0) continue;
                size_t k = (size_t)R->slot_smp[q], t = (size_t)R->slot_t[q];
                if (!b->s[k].active) continue;
                double w = rl_row_weight(R->loss_type, rows, tokens, b->s[k].n, R->max_tokens, gen_tokens, R->mini_batches);
                double lp = -(double)R->rl_host[q];
                double d, l = rl_clip_token(&lo, lp, fresh ? lp : b->old[k * mt + t], b->ref[k * mt + t], b->s[k].adv,
                                            &d, &R->rst);
                loss += w * l;
                R->rs_host[q] = (float)(-w * d);
            }
        }
        m->ops->upload(m->ctx, R->rs_dev, R->rs_host, N * sizeof(float));
        m->head_temp = temp;
        llama_head_backward(m, R->rs_dev);
        m->head_temp = 0;
        llama_backward(m, 0, m->c.n_layers);
        if (R->algo == RL_PPO) { /* the value model on the same rows: the clipped value loss over t <= n */
            Llama *v = &R->vt.m;
            llama_lora_seed(v, sample_seed(sample_seed((uint64_t)tr->o.seed ^ 0x76616c75ULL, (uint64_t)step), (uint64_t)from));
            if ((rc = value_forward(R, e))) break;
            for (size_t q = 0; q < N; q++) {
                R->vd_host[q] = 0;
                if (R->slot_smp[q] < 0) continue;
                size_t k = (size_t)R->slot_smp[q], t = (size_t)R->slot_t[q];
                if (t >= val_slots(R, &b->s[k])) continue;
                double dv;
                int clipped;
                double l = rl_value_slot(R->vs_host[q], b->val[k * mt + t], b->pret[k * mt + t], R->cliprange_value, &dv,
                                         &clipped);
                loss += R->vf_coef * l / (double)vtokens;
                R->ppo[8] += l / (double)vtokens;
                R->ppo[9] += clipped;
                R->vd_host[q] = (float)(R->vf_coef * dv / (double)vtokens);
            }
            v->ops->upload(v->ctx, R->vd_dev, R->vd_host, N * sizeof(float));
            llama_score_backward(v, R->vd_dev);
            llama_backward(v, 0, v->c.n_layers);
        }
    }
    if (dist_allreduce_max_int(rc != 0)) {
        if (!rc) err_set(e, "step %ld failed on another rank", step);
        return NAN;
    }
    if (tr->world > 1) {
        double v[14] = {R->rst.tokens, R->rst.clip_low, R->rst.clip_high, R->rst.kl, R->rst.ratio, (double)ran,
                        R->dst[0], R->dst[1], R->dst[2], R->dst[3], R->ppo[6], R->ppo[7], R->ppo[8], R->ppo[9]};
        dist_allreduce_f64(v, 14);
        R->rst = (RlStats){v[0], v[1], v[2], v[3], v[4]};
        ran = (long)v[5];
        memcpy(R->dst, v + 6, sizeof R->dst);
        memcpy(R->ppo + 6, v + 10, 4 * sizeof *R->ppo);
    }
    if (R->algo == RL_PPO) { /* the value model's own update (TRL: one optimizer over both; here each its own) */
        R->ppo[10] = trainer_update(&R->vt, step);
        double slots = (double)rows * (double)R->max_tokens; /* TRL's approxkl and ratio: means over every (row, slot) */
        R->ppo[7] /= slots;
        R->ppo[12] = (R->rst.ratio + slots - R->rst.tokens) / slots;
        R->ppo[13] = (R->rst.clip_low + R->rst.clip_high) / (R->rst.tokens > 0 ? R->rst.tokens : 1);
        R->ppo[14] = R->ppo[9] / (double)(vtokens > 0 ? vtokens : 1);
    }
    R->step_tokens = ran;
    R->st_train = time_now() - t1;
    R->steps_done = step + 1;
    R->m_loss = loss;
    return loss; /* this rank's part: the trainer sums the ranks' */
}

static long rl_tokens(void *ud) { return ((Rl *)ud)->step_tokens; }

/* The step's metrics under TRL's names. */
static void rl_extra(void *ud, int validation, char *line, size_t nline, char *json, size_t njson) {
    Rl *R = ud;
    line[0] = json[0] = '\0';
    if (validation) {
        snprintf(json, njson, ",\"val_reward_n\":%ld", R->v_n);
        for (int q = 0; q < R->nsrc; q++)
            snprintf(json + strlen(json), njson - strlen(json), ",\"val_rewards/%s/mean\":%.6f", rewards_name(R->rw, q),
                     R->v_n ? R->v_src[q] / (double)R->v_n : 0);
        return;
    }
    const Roll *b = &R->roll;
    size_t ns = b->ns, G = (size_t)R->G;
    double mean = 0, var = 0, zero = 0, len = 0, lmin = 1e30, lmax = 0, clipped = 0;
    for (size_t k = 0; k < ns; k++) {
        mean += b->s[k].reward / (double)ns;
        len += b->s[k].n / (double)ns;
        lmin = fmin(lmin, b->s[k].n);
        lmax = fmax(lmax, b->s[k].n);
        clipped += (b->s[k].finish != FINISH_STOP) / (double)ns;
    }
    for (size_t k = 0; k < ns; k++) var += pow(b->s[k].reward - mean, 2) / (double)(ns > 1 ? ns - 1 : 1);
    for (size_t g = 0; g < ns / G; g++) { /* TRL: on the rewards the advantages come from (RLOO's KL-shaped) */
        double m = 0, v = 0;
        for (size_t j = 0; j < G; j++) m += b->s[g * G + j].shaped / (double)G;
        for (size_t j = 0; j < G; j++) v += pow(b->s[g * G + j].shaped - m, 2);
        double sd = G > 1 ? sqrt(v / (double)(G - 1)) : 0;
        zero += (sd <= 1e-8) / (double)(ns / G);
    }
    double tok = R->rst.tokens > 0 ? R->rst.tokens : 1;
    snprintf(line, nline, " | reward %.4f", mean);
    snprintf(json, njson, ",\"rollout\":%ld,\"reward\":%.6f,\"reward_std\":%.6f,\"frac_reward_zero_std\":%.6f,"
             "\"completions/mean_length\":%.3f,\"completions/min_length\":%.0f,\"completions/max_length\":%.0f,"
             "\"completions/clipped_ratio\":%.6f", b->index, mean, sqrt(var), zero, len, lmin, lmax, clipped);
    for (int q = 0; q < R->nsrc; q++) {
        double s = 0;
        for (size_t k = 0; k < ns; k++) s += b->per[k * (size_t)R->nsrc + (size_t)q] / (double)ns;
        snprintf(json + strlen(json), njson - strlen(json), ",\"rewards/%s/mean\":%.6f", rewards_name(R->rw, q), s);
    }
    if (R->algo == RL_PPO) {
        snprintf(json + strlen(json), njson - strlen(json),
                 ",\"objective/kl\":%.6f,\"objective/entropy\":%.6f,\"objective/non_score_reward\":%.6f,"
                 "\"objective/rlhf_reward\":%.6f,\"objective/scores\":%.6f,\"val/num_eos_tokens\":%.0f,"
                 "\"loss/policy_avg\":%.6f,\"policy/approxkl_avg\":%.6g,\"loss/value_avg\":%.6f,\"val/grad_norm\":%.6f,"
                 "\"val/ratio\":%.6f,\"policy/clipfrac_avg\":%.6f,\"val/clipfrac_avg\":%.6f", R->ppo[0], R->ppo[1],
                 R->ppo[2], R->ppo[3], R->ppo[4], R->ppo[5], R->ppo[6], R->ppo[7], R->ppo[8], R->ppo[10], R->ppo[12],
                 R->ppo[13], R->ppo[14]);
        snprintf(line + strlen(line), nline - strlen(line), " | kl %.4f | vf %.4f", R->ppo[0], R->ppo[8]);
    } else if (R->algo == RL_ONLINE_DPO) {
        double np = R->dst[0] > 0 ? R->dst[0] : 1; /* objective/kl: TRL's mean over samples of the summed k1 */
        snprintf(json + strlen(json), njson - strlen(json),
                 ",\"objective/kl\":%.6f,\"rewards/accuracies\":%.6f,\"rewards/margins\":%.6f", R->dst[1] / (2 * np),
                 R->dst[2] / np, R->dst[3] / np);
        snprintf(line + strlen(line), nline - strlen(line), " | kl %.4f", R->dst[1] / (2 * np));
    } else {
        snprintf(json + strlen(json), njson - strlen(json),
                 ",\"clip_ratio/low_mean\":%.6f,\"clip_ratio/high_mean\":%.6f,\"clip_ratio/region_mean\":%.6f",
                 R->rst.clip_low / tok, R->rst.clip_high / tok, (R->rst.clip_low + R->rst.clip_high) / tok);
        if (R->algo == RL_GRPO && R->beta != 0) {
            snprintf(json + strlen(json), njson - strlen(json), ",\"kl\":%.6f", R->rst.kl / tok);
            snprintf(line + strlen(line), nline - strlen(line), " | kl %.4f", R->rst.kl / tok);
        }
    }
    snprintf(json + strlen(json), njson - strlen(json),
             ",\"time/generation\":%.3f,\"time/reward\":%.3f,\"time/reference\":%.3f,\"time/train\":%.3f",
             R->st_gen, R->st_rew, R->st_ref, R->st_train);
    if (R->st_gen > 0)
        snprintf(line + strlen(line), nline - strlen(line), " | gen %.1fs (%.0f tok/s)", R->st_gen,
                 b->gen_tokens / R->st_gen);
}

/* Validation: each held-out prompt once (at --val-temperature), the mean
 * reward. */
static double rl_eval(void *ud, Trainer *tr, TrainData *d, long nbatches, Err *e) {
    (void)d, (void)nbatches;
    Rl *R = ud;
    size_t n = R->vro.ps.n;
    Roll *v = &R->vroll;
    memset(v->s, 0, n * sizeof *v->s);
    size_t p0 = n * (size_t)tr->dp_rank / (size_t)tr->dp, p1 = n * (size_t)(tr->dp_rank + 1) / (size_t)tr->dp;
    int rc = sample_prompts(R, v, &R->vro, p0, p1, 1, &R->vsp, sample_seed((uint64_t)tr->o.seed, 1u << 30), e);
    for (size_t k = p0; k < p1; k++) v->s[k].prompt = (uint32_t)k;
    const double *per = v->per;
    double *sum = xcalloc((size_t)R->nsrc + 1, sizeof *sum); /* the total, then each source */
    if (rc == 0) {
        rc = reward_samples(R, v, &R->vro, R->vprompt_text, p0, p1, NULL, e);
        for (size_t k = p0; k < p1 && rc == 0 && R->vdump; k++) { /* rank 0's share under MPI */
            json_t *o = json_object();
            json_object_set_new(o, "step", json_integer(R->steps_done));
            json_object_set_new(o, "prompt", json_integer((json_int_t)k));
            json_object_set_new(o, "completion", json_string(v->text[k] ? v->text[k] : ""));
            json_object_set_new(o, "reward", json_real(v->s[k].reward));
            char *line = json_dumps(o, JSON_COMPACT);
            fprintf(R->vdump, "%s\n", line);
            free(line);
            json_decref(o);
        }
        if (R->vdump) fflush(R->vdump);
        for (size_t k = p0; k < p1 && rc == 0; k++) {
            sum[0] += v->s[k].reward;
            for (int q = 0; q < R->nsrc; q++) sum[1 + q] += per[k * (size_t)R->nsrc + (size_t)q];
        }
    }
    if (dist_allreduce_max_int(rc != 0)) {
        if (!rc) err_set(e, "validation failed on another rank");
        rc = -1;
    }
    if (rc == 0 && tr->world > 1) dist_allreduce_f64(sum, 1 + R->nsrc);
    for (int q = 0; q < R->nsrc; q++) R->v_src[q] = sum[1 + q];
    double mean = sum[0] / (double)(n ? n : 1);
    free(sum);
    R->v_n = (long)n;
    return rc ? NAN : mean;
}

// ----------------------------------------------------------------------------
// the trainer's view: a cursor over the prompts and the rollout in progress

static int data_next(void *ud, int32_t *tok, int32_t *tgt, int32_t *pos, Err *e) {
    (void)e;
    Rl *R = ud;
    size_t N = (size_t)R->tr->o.B * R->tr->o.T;
    for (size_t q = 0; q < N; q++) tok[q] = 0, tgt[q] = LC_IGNORE, pos[q] = (int32_t)(q % (size_t)R->tr->o.T);
    return 0;
}

static void data_tell(const void *ud, uint64_t *cur) {
    const Rl *R = ud;
    cur[0] = R->epoch;
    cur[1] = R->pos;
}

static int data_seek(void *ud, const uint64_t *cur, Err *e) {
    Rl *R = ud;
    if (cur[1] > R->ro.ps.n) return err_set(e, "prompt cursor %llu past the %zu prompts", (unsigned long long)cur[1], R->ro.ps.n);
    R->epoch = cur[0];
    R->pos = cur[1];
    return 0;
}

/* The state a checkpoint keeps beyond the prompt cursor (/state/aux):
 * the rollout when the checkpoint falls inside one, and with PPO the value
 * model's trained weights and AdamW moments. Layout: u64 rollout bytes,
 * the rollout (roll_pack), u64 value floats F, then F weights, F + F
 * moments, i64 AdamW step. */
static void *data_aux_save(const void *ud, size_t *n) {
    const Rl *R = ud;
    *n = 0;
    int inside = R->roll.index >= 0 && R->steps_done % steps_per_rollout(R) != 0;
    if (!inside && !R->has_value) return NULL;
    Buf w = {0}, r = {0};
    if (inside) roll_pack(R, 0, R->roll.ns, &r);
    uint64_t nr = r.n;
    put(&w, &nr, sizeof nr);
    if (nr) put(&w, r.p, r.n);
    free(r.p);
    uint64_t nv = R->has_value ? R->vt.pt->size : 0;
    put(&w, &nv, sizeof nv);
    if (nv) {
        const Trainer *v = &R->vt;
        float *h = xmalloc(nv * sizeof *h);
        v->m.ops->download(v->m.ctx, h, v->params, nv * sizeof *h);
        put(&w, h, nv * sizeof *h);
        v->m.ops->download(v->m.ctx, h, v->opt.m, nv * sizeof *h); /* backend memory, as the weights */
        put(&w, h, nv * sizeof *h);
        v->m.ops->download(v->m.ctx, h, v->opt.v, nv * sizeof *h);
        put(&w, h, nv * sizeof *h);
        free(h);
        int64_t t = v->opt.t;
        put(&w, &t, sizeof t);
    }
    *n = w.n;
    return w.p;
}

static int data_aux_load(void *ud, const void *aux, size_t n, Err *e) {
    Rl *R = ud;
    const char *p = aux, *end = p ? p + n : NULL;
    uint64_t nr = 0, nv = 0;
    if (!aux) {
        if (R->has_value) return err_set(e, "the checkpoint holds no value model (not a PPO run's)");
        return 0;
    }
    if (take(&p, end, &nr, sizeof nr) || nr > (uint64_t)(end - p)) return err_set(e, "the checkpoint's /state/aux is damaged");
    if (nr && roll_unpack(R, p, nr))
        return err_set(e, "the checkpoint's rollout does not fit this run (other --group, --prompts-per-step, --max-tokens, "
                          "rewards or --algo)");
    p += nr;
    if (take(&p, end, &nv, sizeof nv) || nv != (R->has_value ? R->vt.pt->size : 0) ||
        (uint64_t)(end - p) != nv * 3 * sizeof(float) + (nv ? sizeof(int64_t) : 0))
        return err_set(e, "the checkpoint's value model does not fit this run (another --value-model or --lora-r?)");
    if (nv) {
        Trainer *v = &R->vt;
        v->m.ops->upload(v->m.ctx, v->params, p, nv * sizeof(float));
        v->m.ops->upload(v->m.ctx, v->opt.m, p + nv * sizeof(float), nv * sizeof(float));
        v->m.ops->upload(v->m.ctx, v->opt.v, p + 2 * nv * sizeof(float), nv * sizeof(float));
        int64_t t;
        memcpy(&t, p + 3 * nv * sizeof(float), sizeof t);
        v->opt.t = (long)t;
    }
    if (nr) advantages(R);
    return 0;
}

// ----------------------------------------------------------------------------
// the command

static int decode_prompts(const Rollout *ro, char ***out) {
    size_t n = ro->ps.n;
    *out = xcalloc(n, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        char *t = NULL;
        size_t cap = 0, len = tok_decode(&ro->tok, ro->ps.ids + ro->ps.off[i], ro->ps.off[i + 1] - ro->ps.off[i], &t, &cap);
        (*out)[i] = xmalloc(len + 1);
        memcpy((*out)[i], t ? t : "", len);
        (*out)[i][len] = '\0';
        free(t);
    }
    return 0;
}

/* PPO's value model: --value-model, else the first reward model; a
 * classifier (num_labels 1) reading the policy's tokens, trained beside the
 * policy (LoRA with the policy's settings and its score head whole, or
 * every weight), with its own AdamW on the policy's schedule. */
static int open_value(Rl *R, const TrainOpts *po, const char *value_model, const char *spec, const char *policy, Err *e) {
    char path[4096];
    if (value_model) {
        snprintf(path, sizeof path, "%s", value_model);
    } else {
        ScorerSpec *sp = NULL;
        int n = 0;
        if (scorer_spec_parse(spec, &sp, &n, e)) return -1;
        int adapter = sp[0].adapter[0] != 0;
        snprintf(path, sizeof path, "%s", sp[0].base);
        free(sp);
        if (adapter) return err_set(e, "--value-model: required when the first reward model is BASE+ADAPTER (give a merged one)");
    }
    snprintf(R->value_src, sizeof R->value_src, "%s", path);
    ModelSource ms;
    if (source_open(&ms, path, e)) return -1;
    if (ms.c.num_labels != 1)
        return err_set(e, "--value-model %s: not a classifier with one label (num_labels %d): the value model starts from "
                          "a reward model", path, ms.c.num_labels);
    if ((ms.tokenizer_id && ms.tokenizer_id != R->ro.tok.id) || ms.c.vocab < R->ro.c.vocab)
        return err_set(e, "--value-model %s: its trunk reads another tokenizer than the policy %s (it is fed the policy's "
                          "tokens): give a value model built on the policy's tokenizer", path, policy);
    TrainOpts vo = *po;
    vo.lora_head = po->lora_r > 0;
    vo.resume = NULL;
    vo.metrics = NULL;
    vo.sample_tokens = 0;
    if (peft_is_dir(vo.lora_init)) vo.lora_init = "kaiming"; /* the policy's adapter to continue is not the value's */
    if (trainer_open(&R->vt, &vo, "value", &ms.c, &ms, e)) return -1;
    R->has_value = 1;
    return 0;
}

static void free_texts(char **t, size_t n) {
    for (size_t i = 0; t && i < n; i++) free(t[i]);
    free(t);
}

int cmd_rl(int argc, char **argv, Err *e) {
    Rl R;
    memset(&R, 0, sizeof R);
    TrainOpts o;
    ftdata_train_defaults(&o, 1e-6 /* TRL's GRPOConfig */, "rl.h5", "checkpoints-rl");
    o.B = 0; /* --batch: 0, rows for about 8 sequences of the longest prompt + --max-tokens */
    o.T = 0; /* --seq: 0, rows of the longest prompt + --max-tokens (shared: a whole group) */
    o.steps = 100;
    o.val_every = 10;
    const char *algo = "grpo", *policy = NULL, *prompts = NULL, *val_prompts = NULL, *tname = NULL, *scale = "group";
    const char *loss_type = "dapo", *dpo_type = "sigmoid";
    long special = 0, no_share = 0, G = -1, P = 8, mb = 1, iters = -1, mask_trunc = 0, kl_ratio = 1, norm_adv = 0, whiten = 0;
    double beta = NAN, eps = 0.2, eps_high = NAN, val_temp = 0, gamma = 1.0, lam = 0.95, vf_coef = 0.1, vclip = 0.2;
    const char *value_model = NULL, *kl_est = "k1";
    RewardOpts ropt;
    memset(&ropt, 0, sizeof ropt);
    ropt.timeout = 60;
    RolloutFlags rf;
    rollout_flags_default(&rf, 1.0);
    rf.max_tokens = 64;
    CliFlag sf[ROLLOUT_NSAMPLER], ef[ROLLOUT_NENGINE];
    rollout_flags(&rf, sf, ef);
    CliFlag own[] = {
        {"algo", CLI_STR, &algo, 0, 0, "the method: grpo, rloo, online-dpo or ppo"},
        {"policy", CLI_STR, &policy, 0, 0, "the model to train (and the reference): an llamac checkpoint, a Hugging Face directory or a GGUF file"},
        {"prompts", CLI_STR, &prompts, 0, 0, "JSONL prompts: \"prompt\" (text or messages), \"messages\" or \"prompt_ids\", plus the fields the rewards read"},
        {"val-prompts", CLI_STR, &val_prompts, 0, 0, "held-out prompts: each sampled once every --val-every steps, the mean reward reported"},
        {"template", CLI_STR, &tname, 0, 0, "chat template of message prompts: llama2, llama3, llama3.1, chatml or none (default: the tokenizer's)"},
        {"special", CLI_BOOL, &special, 0, 0, "special-token names in \"prompt\" text become their ids"},
        {"group", CLI_INT, &G, -1, 1 << 12, "samples per prompt, G (TRL's num_generations; default grpo 4, rloo 2, online-dpo 2, ppo 1)"},
        {"prompts-per-step", CLI_INT, &P, 1, 1 << 20, "prompts of a rollout (each sampled G times)"},
        {"mini-batches", CLI_INT, &mb, 1, 1 << 12, "optimizer steps a rollout is split into (its groups shuffled; divides --prompts-per-step)"},
        {"num-iterations", CLI_INT, &iters, -1, 1 << 12, "passes over each rollout (TRL's num_iterations, PPO's num_ppo_epochs; default 1, ppo 4)"},
        {"beta", CLI_FLOAT, &beta, -1e9, 1e9, "grpo: weight of the k3 KL to the reference in the loss (default 0: no reference); rloo: of the summed KL in the reward (0.05); online-dpo: DPO's beta (0.1); ppo: kl_coef, the per-token KL penalty in the reward (0.05)"},
        {"value-model", CLI_STR, &value_model, 0, 0, "ppo: the value model's start, a classifier with num_labels 1 on the policy's tokenizer (default: the first --reward-model, as TRL's example)"},
        {"kl-estimator", CLI_STR, &kl_est, 0, 0, "ppo: k1 (logp - ref, TRL's default) or k3"},
        {"gamma", CLI_FLOAT, &gamma, 0, 1, "ppo: GAE's discount"},
        {"lam", CLI_FLOAT, &lam, 0, 1, "ppo: GAE's lambda"},
        {"vf-coef", CLI_FLOAT, &vf_coef, 0, 1e9, "ppo: weight of the value loss"},
        {"cliprange-value", CLI_FLOAT, &vclip, 0, 1e9, "ppo: the value is clipped to the old value +- this"},
        {"whiten-rewards", CLI_BOOL, &whiten, 0, 0, "ppo: whiten the per-token rewards before GAE"},
        {"epsilon", CLI_FLOAT, &eps, 0, 10, "clip range: the ratio is clipped to [1 - epsilon, 1 + epsilon-high]"},
        {"epsilon-high", CLI_FLOAT, &eps_high, 0, 10, "upper clip range (default: --epsilon; DAPO uses 0.28)"},
        {"loss-type", CLI_STR, &loss_type, 0, 0, "grpo: dapo (default, TRL's: tokens of the rollout), grpo (per sequence), bnpo (tokens of the step) or dr_grpo (rows x --max-tokens); online-dpo: sigmoid or ipo"},
        {"scale-rewards", CLI_STR, &scale, 0, 0, "grpo: advantages divided by the group's std (group, default), the batch's (batch) or not (none); std Bessel-corrected, + 1e-4"},
        {"mask-truncated-completions", CLI_BOOL, &mask_trunc, 0, 0, "completions that hit --max-tokens take no part in the loss"},
        {"kl-ratio", CLI_INT, &kl_ratio, 0, 1, "grpo with beta: the KL term times the importance ratio (TRL's use_bias_correction_kl, default 1)"},
        {"normalize-advantages", CLI_BOOL, &norm_adv, 0, 0, "rloo: advantages normalised over the rollout"},
        {"val-temperature", CLI_FLOAT, &val_temp, 0, 100, "sampling temperature of the held-out prompts (0: greedy)"},
        {"reward-model", CLI_STR, &ropt.scorer.spec, 0, 0, "reward models summed with weights: PATH[:WEIGHT],... (num_labels 1; BASE+PEFT_DIR)"},
        {"reward-tokenizer", CLI_STR, &ropt.scorer.tokenizer, 0, 0, "tokenizer of every reward model (default: each model's own)"},
        {"reward-template", CLI_STR, &ropt.scorer.tpl_name, 0, 0, "chat template of the reward models (default: each tokenizer's)"},
        {"reward-answer", CLI_STR, &ropt.answer, 0, 0, "1 when the completion's final answer equals this field of the prompt's line (a string, number or list)"},
        {"reward-regex", CLI_STR, &ropt.regex, 0, 0, "1 when this POSIX extended regular expression matches the completion"},
        {"reward-length", CLI_STR, &ropt.length, 0, 0, "MIN:MAX: 1 when the completion has MIN..MAX tokens"},
        {"reward-cmd", CLI_STR, &ropt.cmd, 0, 0, "a program (sh -c) reading one JSON line per completion, answering one number per line"},
        {"reward-weights", CLI_STR, &ropt.weights, 0, 0, "name=w,... weights of answer, regex, length, cmd (a reward model's: in its spec)"},
        {"reward-timeout", CLI_FLOAT, &ropt.timeout, 0.001, 1e9, "seconds the reward program may take per answer"},
        {"missing-eos-penalty", CLI_FLOAT, &ropt.missing_eos_penalty, 0, 1e9, "subtracted from the reward of a completion that did not stop"},
        {"reward-clip", CLI_FLOAT, &ropt.clip, 0, 1e9, "clip rewards to [-C, C] (0: off)"},
        {"reward-norm", CLI_BOOL, &ropt.norm, 0, 0, "normalise each rollout's rewards to mean 0, std 1"},
        {"fixed-rollouts", CLI_STR, &R.fixed, 0, 0, "JSONL completions instead of sampling: {\"prompt_index\", \"completion_ids\", \"reward\"} (reference checks)"},
        {"rollouts-out", CLI_STR, &R.rollouts_out, 0, 0, "write every sample (text, reward, advantage) of every rollout here as JSONL"},
        {"val-out", CLI_STR, &R.val_out, 0, 0, "write every validation's held-out answers (step, prompt, text, reward) here as JSONL"},
        {"no-shared-prompt", CLI_BOOL, &no_share, 0, 0, "give every sample its own copy of the prompt in training (slower; the same numbers up to rounding)"},
        sf[0], sf[1], sf[2], sf[3], sf[4], ef[0], ef[1], ef[2], ef[3], ef[4],
    };
    CliFlag flags[sizeof own / sizeof own[0] + TRAINER_NFLAGS];
    int nf = (int)(sizeof own / sizeof own[0]);
    memcpy(flags, own, sizeof own);
    nf += trainer_flags(&o, flags + nf);
    for (int i = 0; i < nf; i++)
        if (!strcmp(flags[i].name, "batch"))
            flags[i].help = "micro-batch size B, rows per forward/backward (default: the rows of about 8 sequences of the "
                            "longest prompt + --max-tokens)";
    int parsed = ftdata_parse(argc, argv, flags, nf,
                              "llamac rl [config.ini] --algo grpo|rloo|online-dpo|ppo --policy P --prompts prompts.jsonl "
                              "REWARDS [--val-prompts held-out.jsonl] [flags]",
                              "Online reinforcement learning: every rollout samples G completions of --prompts-per-step\n"
                              "prompts from the current policy, rewards them (reward models, the answer/regex/length\n"
                              "checks, a program), and trains the policy on the method's advantages and clipped loss\n"
                              "(GRPO, RLOO as TRL 1.16; online DPO: DPO on the best and worst of two samples; PPO as\n"
                              "TRL 1.12, with a value model started from a reward model). Training lays a prompt out once\n"
                              "and its G completions after it, each seeing the prompt and itself (--no-shared-prompt: a copy\n"
                              "each); rows hold a whole group unless --seq is given (at least the longest prompt +\n"
                              "--max-tokens). With --lora-r the reference is the same weights with the adapters off;\n"
                              "otherwise a frozen copy. See docs/rl.md.", e);
    if (parsed) return parsed < 0 ? -1 : 0;
    if (rl_algo_parse(algo, &R.algo, e)) return -1;
    if (!policy) return err_set(e, "--policy: required (a checkpoint, Hugging Face directory or GGUF file)");
    if (!prompts) return err_set(e, "--prompts: required (a JSONL file of prompts)");
    if (G < 0) G = R.algo == RL_GRPO ? 4 : R.algo == RL_PPO ? 1 : 2;
    if (iters < 0) iters = R.algo == RL_PPO ? 4 : 1;
    if (G < 1) return err_set(e, "--group: at least 1 sample a prompt, got %ld", G);
    if (iters < 1) return err_set(e, "--num-iterations: at least 1 pass over a rollout, got %ld", iters);
    if (mask_trunc && (R.algo == RL_PPO || R.algo == RL_ONLINE_DPO))
        return err_set(e, "--mask-truncated-completions: grpo and rloo only (TRL's), not %s", rl_algo_name(R.algo));
    if (R.algo == RL_ONLINE_DPO && o.B && o.B < 2)
        return err_set(e, "--batch: online-dpo packs a pair's two samples into one micro-batch: at least 2 rows");
    if (rl_kl_parse(kl_est, &R.kl_est, e)) return -1;
    if (R.algo == RL_PPO && o.zero) return err_set(e, "--zero: not with --algo ppo (the value model keeps whole moments)");
    if (R.algo == RL_ONLINE_DPO && G != 2) return err_set(e, "--group: online-dpo samples 2 completions a prompt, got %ld", G);
    if (R.algo == RL_RLOO && G < 2) return err_set(e, "--group: rloo needs at least 2 samples a prompt (a leave-one-out baseline), got %ld", G);
    if (R.algo == RL_GRPO && G == 1)
        fprintf(stderr, "warning: --group 1: every GRPO advantage is 0 (a group's reward minus its own mean); nothing is learned\n");
    if (P % mb) return err_set(e, "--mini-batches %ld does not divide --prompts-per-step %ld", mb, P);
    if (isnan(beta)) beta = R.algo == RL_GRPO ? 0.0 : R.algo == RL_ONLINE_DPO ? 0.1 : 0.05;
    if (R.algo == RL_ONLINE_DPO) {
        if (dpo_loss_parse(dpo_type = strcmp(loss_type, "dapo") ? loss_type : "sigmoid", &R.dpo_loss, e)) return -1;
        if (R.dpo_loss != DPO_SIGMOID && R.dpo_loss != DPO_IPO) return err_set(e, "--loss-type: online-dpo takes sigmoid or ipo, got '%s'", loss_type);
        if (dpo_check(beta, 0, e)) return -1;
    } else if (R.algo == RL_GRPO && rl_loss_type_parse(loss_type, &R.loss_type, e)) {
        return -1;
    }
    if (rl_scale_parse(scale, &R.scale, e)) return -1;
    if (trainer_check(&o, e)) return -1;
    R.G = G, R.P = P, R.mini_batches = mb, R.iterations = iters, R.beta = beta, R.eps = eps;
    R.eps_high = isnan(eps_high) ? eps : eps_high;
    R.mask_truncated = mask_trunc, R.kl_ratio = kl_ratio, R.normalize_adv = norm_adv, R.val_temp = val_temp;
    R.max_tokens = rf.max_tokens;
    R.gamma = gamma, R.lam = lam, R.vf_coef = vf_coef, R.cliprange_value = vclip, R.whiten_rewards = whiten;
    R.need_ref = R.algo == RL_ONLINE_DPO || R.algo == RL_PPO || beta != 0; /* PPO: the KL is always reported */
    if (R.algo == RL_PPO && !value_model && !ropt.scorer.spec)
        return err_set(e, "--value-model: required with --algo ppo and no --reward-model (the value model starts from one)");
    if (rollout_params(&rf, 1.0, &R.sp, e)) return -1;
    RolloutFlags vf = rf;
    vf.temperature = val_temp;
    if (rollout_params(&vf, 1.0, &R.vsp, e)) return -1;
    if (rf.threads > 0) omp_set_num_threads((int)rf.threads);

    int rc = -1;
    Trainer t;
    memset(&t, 0, sizeof t);
    RolloutOpts roo = {policy, o.tokpath, tname, prompts, (int)special, rf.ctx, rf.max_tokens, 0};
    if (rollout_open(&R.ro, &roo, e)) return -1;
    if (val_prompts) {
        RolloutOpts vo = roo;
        vo.prompts = val_prompts;
        if (rollout_open(&R.vro, &vo, e)) goto out;
        R.has_val = 1;
    }
    ropt.scorer.device = o.device;
    R.reward_norm = ropt.norm; /* over the whole rollout, not each rank's share (nor validation) */
    ropt.norm = 0;
    int sources = ropt.scorer.spec || ropt.answer || ropt.regex || ropt.length || ropt.cmd;
    if ((sources || !R.fixed) && rewards_open(&R.rw, &ropt, e)) goto out; /* fixed rollouts may carry their rewards */
    R.nsrc = R.rw ? rewards_count(R.rw) : 0;
    R.v_src = xcalloc((size_t)R.nsrc + 1, sizeof *R.v_src);
    for (size_t i = 0; R.rw && i < R.ro.ps.n; i++) {
        char where[4200];
        snprintf(where, sizeof where, "%s:%ld", prompts, R.ro.ps.line[i]);
        if (rewards_check_line(R.rw, R.ro.ps.obj[i], where, e)) goto out;
    }
    for (size_t i = 0; R.rw && R.has_val && i < R.vro.ps.n; i++) {
        char where[4200];
        snprintf(where, sizeof where, "%s:%ld", val_prompts, R.vro.ps.line[i]);
        if (rewards_check_line(R.rw, R.vro.ps.obj[i], where, e)) goto out;
    }
    decode_prompts(&R.ro, &R.prompt_text);
    if (R.has_val) decode_prompts(&R.vro, &R.vprompt_text);
    if (R.fixed && !(R.fixed_f = fopen(R.fixed, "r"))) {
        err_set(e, "--fixed-rollouts: cannot open %s", R.fixed);
        goto out;
    }
    /* rows of the longest prompt + completion */
    long ctx = R.ro.ctx > (R.has_val ? R.vro.ctx : 0) ? R.ro.ctx : R.vro.ctx;
    if (o.T && o.T < ctx) {
        err_set(e, "--seq %ld: shorter than the longest prompt + --max-tokens (%ld tokens; 0: rows of that length)", o.T,
                ctx);
        goto out;
    }
    R.share = !no_share;
    if (!o.T) {
        o.T = ctx;
        long np = 0, grp;
        for (size_t i = 0; i < R.ro.ps.n; i++)
            if ((long)(R.ro.ps.off[i + 1] - R.ro.ps.off[i]) > np) np = (long)(R.ro.ps.off[i + 1] - R.ro.ps.off[i]);
        grp = np - 1 + G * R.max_tokens; /* the prompt once, then G completions */
        grp = grp < R.ro.c.max_seq ? grp : R.ro.c.max_seq;
        /* not PPO: its value model (opened with these rows) may have a shorter context; its G is 1 by default */
        if (R.share && R.algo != RL_PPO && grp > o.T) o.T = grp;
    }
    if (!o.B) { /* about the slots of 8 rows of one sequence; online DPO's pair across 2 rows at least */
        o.B = (8 * ctx + o.T - 1) / o.T;
        o.B = o.B > (R.algo == RL_ONLINE_DPO ? 2 : 1) ? o.B : (R.algo == RL_ONLINE_DPO ? 2 : 1);
    }
    o.batch_tokens = o.B * o.T * dist_world(); /* one (unused) micro-batch a rank: the step trains the rollout's */
    o.tokpath = NULL;
    o.val_batches = 1;
    ModelSource ms;
    if (source_open(&ms, policy, e)) goto out;
    if (trainer_open(&t, &o, "rl", &ms.c, &ms, e)) goto out;
    R.tr = &t;
    Llama *m = &t.m;
    if (t.pipe) {
        err_set(e, "rl: --pp is not supported (data parallelism is)");
        goto out;
    }
    if (R.algo == RL_PPO && open_value(&R, &o, value_model, ropt.scorer.spec, policy, e)) goto out;
    size_t N = (size_t)o.B * o.T;
    R.tok = xmalloc(N * sizeof *R.tok);
    R.tgt = xmalloc(N * sizeof *R.tgt);
    R.pos_b = xmalloc(N * sizeof *R.pos_b);
    R.slot_smp = xmalloc(N * sizeof *R.slot_smp);
    R.slot_t = xmalloc(N * sizeof *R.slot_t);
    R.rs_host = xmalloc(N * sizeof(float));
    R.rl_host = xmalloc(N * sizeof(float));
    R.rs_dev = m->ops->alloc(m->ctx, N * sizeof(float));
    R.seq_lp = xmalloc((size_t)(P * G) * sizeof *R.seq_lp);
    if (R.has_value) {
        Llama *v = &R.vt.m;
        R.vs_dev = v->ops->alloc(v->ctx, N * sizeof(float));
        R.vd_dev = v->ops->alloc(v->ctx, N * sizeof(float));
        R.vs_host = xmalloc(N * sizeof(float));
        R.vd_host = xmalloc(N * sizeof(float));
    }
    roll_alloc(&R.roll, (size_t)(P * G), (size_t)P, (size_t)R.max_tokens, R.nsrc);
    R.perm = xmalloc((size_t)P * sizeof *R.perm);
    R.mb_list = xmalloc((size_t)(P * G) * sizeof *R.mb_list);
    if (R.has_val) { /* the held-out prompts, each sampled once a validation */
        roll_alloc(&R.vroll, R.vro.ps.n, R.vro.ps.n, (size_t)R.max_tokens, R.nsrc);
        for (size_t i = 0; i < R.vro.ps.n; i++) R.vroll.prompts[i] = (uint32_t)i;
    }
    if (R.need_ref && !m->lora) { /* a frozen copy of the initial weights */
        if (llama_init_opts(&R.ref, &ms.c, m->ops, m->ctx, (int)o.B, (int)o.T, NULL, e)) goto out;
        R.has_ref = 1;
        float *host = xalloc_aligned(m->t.size * sizeof(float));
        m->ops->download(m->ctx, host, m->params, m->t.size * sizeof(float));
        R.ref.ops->upload(R.ref.ctx, R.ref.params, host, m->t.size * sizeof(float));
        free(host);
    }
    if (!R.fixed) {
        /* PPO keeps a value one past a completion's last token: a sample stopped by the context must leave
         * that slot in a row */
        EngineOpts eo = {(int)rf.max_seqs, (int)rf.max_rows, (int)ctx - (R.algo == RL_PPO), rf.kv_tokens, 0};
        if (engine_init(&R.g, m, &eo, e)) goto out;
    } else if (R.has_val) {
        err_set(e, "--fixed-rollouts: no --val-prompts (validation samples)");
        goto out;
    }
    if (R.rollouts_out && t.rank == 0 && !(R.dump = fopen(R.rollouts_out, "w"))) {
        err_set(e, "--rollouts-out: cannot create %s", R.rollouts_out);
        goto out;
    }
    if (R.val_out && !R.has_val) {
        err_set(e, "--val-out: give --val-prompts (the held-out prompts it writes the answers of)");
        goto out;
    }
    if (R.val_out && t.rank == 0 && !(R.vdump = fopen(R.val_out, "w"))) {
        err_set(e, "--val-out: cannot create %s", R.val_out);
        goto out;
    }
    printf("rl: %s, %ld prompts a rollout x G %ld samples (temperature %g, up to %ld tokens), %ld mini-batch%s x %ld "
           "iteration%s per rollout; reference: %s; reward:", rl_algo_name(R.algo), P, G, R.sp.temperature,
           R.max_tokens, mb, mb > 1 ? "es" : "", iters, iters > 1 ? "s" : "",
           !R.need_ref ? "none (beta 0)" : m->lora ? "the adapters off" : "a frozen copy");
    for (int k = 0; k < R.nsrc; k++) printf("%s %g x %s", k ? " +" : "", rewards_weight(R.rw, k), rewards_name(R.rw, k));
    printf("\n");
    if (R.algo == RL_GRPO)
        printf("  grpo: loss %s, scale_rewards %s, epsilon %g/%g, beta %g%s\n", rl_loss_type_name(R.loss_type),
               rl_scale_name(R.scale), R.eps, R.eps_high, beta, beta != 0 && kl_ratio ? " (KL times the ratio)" : "");
    else if (R.algo == RL_RLOO)
        printf("  rloo: sequence-level ratio, epsilon %g/%g, beta %g (summed k1 in the reward)%s\n", R.eps, R.eps_high,
               beta, norm_adv ? ", advantages normalised" : "");
    else if (R.algo == RL_ONLINE_DPO)
        printf("  online-dpo: %s loss, beta %g, chosen = the higher reward of the two samples\n", dpo_type, beta);
    else
        printf("  ppo: kl_coef %g (%s, in the reward), gamma %g, lambda %g, cliprange %g, value: %s (%.3fM trained, "
               "cliprange %g, vf_coef %g), %ld epochs\n", beta, kl_est, gamma, lam, eps, R.value_src,
               R.vt.pt->numel / 1e6, vclip, vf_coef, iters);
    uint64_t data_id = hash_fnv1a(0xcbf29ce484222325ULL, R.ro.ps.ids, R.ro.ps.ntok * sizeof *R.ro.ps.ids);
    data_id = hash_fnv1a(data_id, &R.algo, sizeof R.algo);
    TrainData dt = {&R, prompts, R.ro.tok.id, data_id, data_next, data_tell, data_seek, R.ro.ps.n, "prompts", 0, 2,
                    NULL, 0, NULL, data_aux_save, data_aux_load};
    TrainData dv = {&R, val_prompts, R.ro.tok.id, 0, data_next, data_tell, data_seek, R.has_val ? R.vro.ps.n : 0, "prompts",
                    0, 2, NULL, 0, NULL, NULL, NULL};
    TrainLoss lf = {&R, rl_step, rl_extra, rl_eval, rl_tokens, "reward"};
    rc = trainer_run(&t, &dt, R.has_val ? &dv : NULL, &lf, flags, nf, e);
out:
    if (R.g) engine_free(R.g);
    if (R.vs_dev) R.vt.m.ops->free(R.vt.m.ctx, R.vs_dev);
    if (R.vd_dev) R.vt.m.ops->free(R.vt.m.ctx, R.vd_dev);
    free(R.vs_host); free(R.vd_host);
    if (R.has_value) trainer_close(&R.vt);
    if (R.has_ref) llama_free(&R.ref);
    if (R.rs_dev) t.m.ops->free(t.m.ctx, R.rs_dev);
    free(R.tok); free(R.tgt); free(R.pos_b); free(R.slot_smp); free(R.slot_t);
    free(R.rs_host); free(R.rl_host); free(R.seq_lp); free(R.order); free(R.v_src);
    roll_free(&R.roll);
    roll_free(&R.vroll);
    free(R.perm);
    free(R.mb_list);
    if (R.fixed_f) fclose(R.fixed_f);
    if (R.dump) fclose(R.dump);
    if (R.vdump) fclose(R.vdump);
    trainer_close(&t);
    if (R.rw) rewards_close(R.rw);
    free_texts(R.prompt_text, R.ro.ps.n);
    free_texts(R.vprompt_text, R.vro.ps.n);
    if (R.has_val) rollout_free(&R.vro);
    rollout_free(&R.ro);
    return rc;
}
