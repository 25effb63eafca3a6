/*
 * cmd_rs.c: `llamac rs`: rejection-sampling fine-tuning as Llama 2-Chat did
 * it (arXiv 2307.09288 §3.2.3; docs/reward.md). Round R = 1, 2, ...:
 *   (a) K samples of every prompt from the current policy through the
 *       engine (loop/rollout.h), at temperature 1.2 by default (the paper's
 *       best for 10-100 samples, its Figure 8), seeded --seed + R - 1 as
 *       `llamac sample` seeds (round 1 is `llamac sample --seed S` exactly);
 *   (b) every sample scored by the reward models (loop/scorer.h) as text:
 *       re-tokenised by each model, a message prompt as the conversation
 *       before the reply, a text prompt and its completion as strings;
 *   (c) per prompt the best sample kept (the first on ties) when its reward
 *       reaches --threshold (data/rejection.h): DIR/round-R/sft.jsonl, with
 *       samples.jsonl (every sample, its reward, which was kept) and
 *       curve.jsonl (best and median of the first k samples, k = 1, 2, 4,
 *       ..., K, averaged over prompts: the paper's Figure 7);
 *   (d) `llamac sft` in-process on sft.jsonl from the current policy, with
 *       the flags after `--`; its result is the next round's policy.
 * The policy of round R > 1: without LoRA DIR/round-(R-1)/policy.h5; with
 * LoRA (--lora-r after --) the base --policy with DIR/round-(R-1)/adapter,
 * which round R continues (--lora-init): one adapter fine-tuned round after
 * round, as full fine-tuning continues from the last policy.
 *
 * One process (the sampling is not split over MPI ranks yet). The reward
 * models stay loaded for the whole run beside the policy or the trainer.
 */
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../data/rejection.h"
#include "../../dist/dist.h"
#include "../io/iofile.h"
#include "../io/peft.h"
#include "../io/source.h"
#include "../loop/ftdata.h"
#include "../loop/rollout.h"
#include "../loop/run.h"
#include "../loop/scorer.h"
#include "../proc/cli.h"
#include "../proc/device.h"
#include "cmds.h"

/* Items scored per scorer call: progress lines between calls, and a
 * bounded list of texts (the scorer batches and packs them itself). */
#define SCORE_CHUNK 256

/* The flags. */
typedef struct {
    const char *policy, *tokpath, *tname, *prompts, *out_dir, *device;
    const char *rm, *rm_tok, *rm_tpl;
    long K, rounds, seed, rm_batch, rm_seq;
    RolloutFlags r;     /* the sampler's and the engine's */
    double threshold;
    int special;
    const char *pool;   /* "round": each round's best; "all": the best of every round so far */
} Opts;

/* One sample of the round. */
typedef struct {
    RolloutText txt;  /* while it runs; then its text, valid UTF-8 */
    int finish, ntok;
} Sample;

typedef struct {
    Opts o;
    int sft_argc;       /* the words after "--", for llamac sft */
    char **sft_argv;
    Rollout ro;
    int opened;
    json_t **prompt;    /* (N) prompt i as JSON: a message list, or a string */
    Scorer *sc;
    SampleParams sp;
    Sample *smp;        /* (N * K) this round's samples, prompt-major */
    long outstanding, finished, gen_tokens;
    double t_sample, t_score, t_train;
    long samples;       /* over all rounds */
    char model[4400];   /* the current policy: a model source ... */
    char adapter[4400]; /* ... and, with LoRA after round 1, its adapter ("" none) */
    /* --pool all: prompt i's best sample over the rounds so far (reward
     * -INFINITY and no text before one was kept) */
    int pool_all;
    double *pool_reward;  /* (N) */
    char **pool_text;     /* (N) malloc'd, NUL-terminated */
    size_t *pool_len;     /* (N) */
} Rs;

/* dir/name into buf[cap]: -1 with e when it does not fit. */
static int path_join(char *buf, size_t cap, const char *dir, const char *name, Err *e) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return err_set(e, "--out-dir %.200s: path too long", dir);
    return 0;
}

// ----------------------------------------------------------------------------
// (a) sampling

static int on_token(void *ud, EngineSeq *s) {
    Rs *S = ud;
    Sample *x = (Sample *)s->user + s->sample;
    size_t i = (size_t)((Sample *)s->user - S->smp) / (size_t)S->o.K;
    const PromptSet *ps = &S->ro.ps;
    size_t k0 = ps->stop_off[i], k1 = ps->stop_off[i + 1];
    return rollout_text_token(&x->txt, &S->ro, s->tokens[s->n - 1], NULL, 0, ps->stop + k0, k1 - k0);
}

static void on_done(void *ud, EngineSeq *s) {
    Rs *S = ud;
    Sample *x = (Sample *)s->user + s->sample;
    x->finish = x->txt.stopped ? FINISH_STOP : s->finish;
    x->ntok = s->n;
    /* the text as valid UTF-8 (a sample may end inside a character) */
    char *t = NULL;
    size_t cap = 0, n = tok_utf8_lossy(x->txt.text ? x->txt.text : "", x->txt.len, &t, &cap);
    rollout_text_free(&x->txt);
    x->txt.text = t ? t : xcalloc(1, 1);
    x->txt.len = n;
    x->txt.cap = cap;
    S->outstanding--;
    S->finished++;
    S->gen_tokens += s->n;
}

/* K samples of every prompt from the current policy, into S->smp. */
static int sample_round(Rs *S, int r, Err *e) {
    const Opts *o = &S->o;
    size_t N = S->ro.ps.n, K = (size_t)o->K;
    double t0 = time_now();
    ModelSource ms;
    if (source_open(&ms, S->model, e)) return -1;
    Device dev;
    Llama m;
    if (device_load_model(&dev, o->device, S->model, S->adapter[0] ? S->adapter : NULL, NULL, &ms.c, &m, 1, 1, e))
        return -1;
    Engine *g = NULL;
    EngineOpts eo = {(int)o->r.max_seqs, (int)o->r.max_rows, (int)S->ro.ctx, o->r.kv_tokens, 1};
    int rc = engine_init(&g, &m, &eo, e);
    S->smp = xcalloc(N * K, sizeof *S->smp);
    S->outstanding = S->finished = S->gen_tokens = 0;
    EngineCallbacks cb = {on_token, on_done, S};
    size_t next = 0;
    double t_loop = time_now(), t_print = t_loop;
    while (rc == 0) {
        while (next < N && S->outstanding < 2 * o->r.max_seqs) {
            if (rollout_add(g, &S->ro, o->prompts, next, (int)K, (int)o->r.max_tokens, &S->sp,
                            (uint64_t)o->seed + (uint64_t)r - 1, S->smp + next * K, e)) {
                rc = -1;
                break;
            }
            S->outstanding += (long)K;
            next++;
        }
        if (rc || S->outstanding == 0) break;
        engine_step(g, &cb);
        double now = time_now(), el = now - t_loop;
        if (now - t_print >= 1.0 && S->finished < (long)(N * K)) {
            char c1[32];
            printf("rs: round %d/%ld | sampled %ld/%zu | %.1f samples/s | %.0f tok/s | %s elapsed\n", r, o->rounds,
                   S->finished, N * K, S->finished / el, S->gen_tokens / el, run_clock(el, c1, sizeof c1));
            fflush(stdout);
            t_print = now;
        }
    }
    engine_free(g);
    llama_free(&m);
    device_close(&dev);
    double dt = time_now() - t0;
    S->t_sample += dt;
    if (rc == 0) {
        char c1[32];
        printf("rs: round %d/%ld: %zu samples (%ld tokens) of %s%s%s in %s: %.1f samples/s, %.0f tok/s\n", r,
               o->rounds, N * K, S->gen_tokens, S->model, S->adapter[0] ? " + " : "", S->adapter,
               run_clock(dt, c1, sizeof c1), (double)(N * K) / dt, S->gen_tokens / dt);
        S->samples += (long)(N * K);
    }
    return rc;
}

// ----------------------------------------------------------------------------
// (b) scoring

/* Rewards of the round's samples into total (N * K) and per (N * K *
 * models); an empty sample (the policy ended at once) is not scored, since
 * neither a reward model nor SFT takes an empty reply: NaN. */
static int score_round(Rs *S, int r, double *per, double *total, Err *e) {
    size_t N = S->ro.ps.n, K = (size_t)S->o.K, n = N * K;
    int nm = scorer_count(S->sc);
    double t0 = time_now(), t_print = t0;
    ScoreItem *items = xmalloc(SCORE_CHUNK * sizeof *items);
    char (*where)[160] = xmalloc(SCORE_CHUNK * sizeof *where); /* "<prompts>:<line> sample <j>" */
    size_t *at = xmalloc(SCORE_CHUNK * sizeof *at);             /* item m is sample at[m] */
    double *pm = xmalloc(SCORE_CHUNK * (size_t)nm * sizeof *pm + 1), *tm = xmalloc(SCORE_CHUNK * sizeof *tm);
    size_t k = 0, scored = 0;
    int rc = 0;
    while (k < n && rc == 0) {
        size_t m = 0;
        for (; k < n && m < SCORE_CHUNK; k++) {
            const RolloutText *x = &S->smp[k].txt;
            if (x->len == 0) {
                total[k] = NAN;
                for (int q = 0; q < nm; q++) per[k * (size_t)nm + q] = NAN;
                continue;
            }
            snprintf(where[m], sizeof where[m], "%.100s:%ld sample %zu", S->o.prompts, S->ro.ps.line[k / K], k % K);
            items[m] = (ScoreItem){S->prompt[k / K], json_stringn(x->text, x->len), where[m]};
            at[m++] = k;
        }
        Err se = {{0}};
        if (m && scorer_score(S->sc, items, m, pm, tm, &se)) rc = err_set(e, "round %d: scoring: %s", r, se.msg);
        for (size_t q = 0; q < m; q++) {
            json_decref(items[q].completion);
            total[at[q]] = tm[q];
            memcpy(per + at[q] * (size_t)nm, pm + q * (size_t)nm, (size_t)nm * sizeof *per);
        }
        scored += m;
        double now = time_now();
        if (rc == 0 && k < n && now - t_print >= 1.0) {
            printf("rs: round %d/%ld | scored %zu/%zu | %.1f samples/s\n", r, S->o.rounds, k, n, k / (now - t0));
            fflush(stdout);
            t_print = now;
        }
    }
    free(items);
    free(where);
    free(at);
    free(pm);
    free(tm);
    double dt = time_now() - t0;
    S->t_score += dt;
    if (rc == 0) {
        char c1[32];
        printf("rs: round %d/%ld: %zu samples scored by %d reward model%s in %s: %.1f samples/s", r, S->o.rounds,
               scored, nm, nm > 1 ? "s" : "", run_clock(dt, c1, sizeof c1), (double)scored / dt);
        if (scored < n) printf(" (%zu empty, not scored)", n - scored);
        printf("\n");
    }
    return rc;
}

// ----------------------------------------------------------------------------
// (c) selection and the round's files

static json_t *real_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* A reward as llamac score writes it: float32 in its shortest decimal. */
static json_t *reward_json(double v) { return isfinite(v) ? json_real(iofile_short_real((float)v)) : json_null(); }

static int put_line(FILE *f, json_t *j) {
    int rc = j ? json_dumpf(j, f, JSON_COMPACT) : -1;
    json_decref(j);
    return rc || fputc('\n', f) == EOF ? -1 : 0;
}

/* samples.jsonl, sft.jsonl, curve.jsonl under dir, and the table; *kept
 * the prompts kept. */
static int write_round(Rs *S, int r, const char *dir, const double *per, const double *total, size_t *kept, Err *e) {
    const Opts *o = &S->o;
    size_t N = S->ro.ps.n, K = (size_t)o->K;
    int nm = scorer_count(S->sc);
    char path[3][4400];
    const char *names[3] = {"samples.jsonl", "sft.jsonl", "curve.jsonl"};
    FtOut w[3];
    memset(w, 0, sizeof w);
    for (int f = 0; f < 3; f++) {
        if (path_join(path[f], sizeof path[f], dir, names[f], e) || ftdata_out_open(&w[f], names[f], path[f], e))
            goto fail;
    }
    *kept = 0;
    double sum_kept = 0, sum_all = 0;
    size_t n_all = 0;
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        int best = rejection_best(total + i * K, (int)K, o->threshold);
        for (size_t j = 0; j < K; j++) {
            const Sample *x = &S->smp[i * K + j];
            json_t *l = json_pack("{s:I,s:I,s:o}", "index", (json_int_t)i, "sample", (json_int_t)j, "reward",
                                  reward_json(total[i * K + j]));
            if (nm > 1) { /* {model: its reward}, as llamac score */
                json_t *a = json_object();
                for (int k = 0; k < nm; k++)
                    json_object_set_new(a, scorer_name(S->sc, k), reward_json(per[(i * K + j) * (size_t)nm + k]));
                json_object_set_new(l, "rewards", a);
            }
            json_object_set_new(l, "kept", json_boolean((int)j == best));
            json_object_set_new(l, "text", json_stringn(x->txt.text, x->txt.len));
            json_object_set_new(l, "finish_reason", json_string(finish_names[x->finish]));
            json_object_set_new(l, "completion_tokens", json_integer(x->ntok));
            bad |= put_line(w[0].f, l);
            if (!isnan(total[i * K + j])) {
                sum_all += total[i * K + j];
                n_all++;
            }
        }
        const char *text = NULL;
        size_t len = 0;
        double rk = NAN;
        if (best >= 0) {
            const Sample *x = &S->smp[i * K + (size_t)best];
            text = x->txt.text, len = x->txt.len, rk = total[i * K + (size_t)best];
        }
        if (S->pool_all) { /* the best of every round so far: an earlier round wins a tie */
            if (best >= 0 && rk > S->pool_reward[i]) {
                free(S->pool_text[i]);
                S->pool_text[i] = xmalloc(len + 1);
                memcpy(S->pool_text[i], text, len);
                S->pool_text[i][len] = 0;
                S->pool_len[i] = len;
                S->pool_reward[i] = rk;
            }
            if (!S->pool_text[i]) continue;
            text = S->pool_text[i], len = S->pool_len[i], rk = S->pool_reward[i];
        } else if (best < 0) {
            continue;
        }
        bad |= put_line(w[1].f, rejection_sft_example(S->prompt[i], text, len));
        ++*kept;
        sum_kept += rk;
    }
    int ks[REJECTION_MAX_KS];
    int nk = rejection_ks((int)K, ks);
    double best[REJECTION_MAX_KS], med[REJECTION_MAX_KS];
    size_t cnt[REJECTION_MAX_KS];
    rejection_curve(total, N, (int)K, ks, nk, best, med, cnt);
    printf("rs: round %d/%ld: kept %zu of %zu prompts (mean reward: kept %.4f, all scored samples %.4f); reward by "
           "samples per prompt, mean over prompts:\n%8s %12s %12s %8s\n", r, o->rounds, *kept, N,
           *kept ? sum_kept / (double)*kept : NAN, n_all ? sum_all / (double)n_all : NAN, "k", "best", "median",
           "prompts");
    for (int c = 0; c < nk; c++) {
        printf("%8d %12.4f %12.4f %8zu\n", ks[c], best[c], med[c], cnt[c]);
        bad |= put_line(w[2].f, json_pack("{s:i,s:o,s:o,s:I,s:i}", "k", ks[c], "best", real_or_null(best[c]),
                                          "median", real_or_null(med[c]), "prompts", (json_int_t)cnt[c], "round", r));
    }
    int rc = 0;
    for (int f = 0; f < 3; f++)
        if (ftdata_out_close(&w[f], !bad, e)) rc = -1;
    if (bad && !rc) rc = err_set(e, "%s: cannot write", dir);
    if (rc == 0 && *kept == 0)
        rc = err_set(e, "round %d: no prompt's best sample reached --threshold %g: nothing to fine-tune on (see %s)",
                     r, o->threshold, path[0]);
    return rc;
fail:
    for (int f = 0; f < 3; f++) ftdata_out_close(&w[f], 0, e);
    return -1;
}

// ----------------------------------------------------------------------------
// (d) training

/* The flags after `--` that rs sets itself each round. */
static const char *const owned_flags[] = {"model", "tokenizer", "data", "out", "adapter-out", "lora-init", "template"};

static int check_passthrough(int argc, char **argv, Err *e) {
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) continue;
        const char *name = argv[i] + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        for (size_t k = 0; k < sizeof owned_flags / sizeof owned_flags[0]; k++)
            if (strlen(owned_flags[k]) == len && strncmp(owned_flags[k], name, len) == 0)
                return err_set(e, "--%s after --: rs sets it for every round's llamac sft (give rs's --policy, "
                                  "--tokenizer, --template; the data and outputs are under --out-dir)", owned_flags[k]);
    }
    return 0;
}

/* llamac sft on dir/sft.jsonl from the current policy; then the policy is
 * its result. */
static int train_round(Rs *S, int r, const char *dir, Err *e) {
    const Opts *o = &S->o;
    char data[4400], out[4400], adapter[4400], ckpt[4400], metrics[4400];
    if (path_join(data, sizeof data, dir, "sft.jsonl", e) || path_join(out, sizeof out, dir, "policy.h5", e) ||
        path_join(adapter, sizeof adapter, dir, "adapter", e) || path_join(ckpt, sizeof ckpt, dir, "checkpoints", e) ||
        path_join(metrics, sizeof metrics, dir, "metrics.jsonl", e))
        return -1;
    const char *own[24];
    int n = 0;
    /* a config file first, where llamac sft looks for it */
    int cfg = S->sft_argc > 0 && strncmp(S->sft_argv[0], "--", 2) != 0;
    if (cfg) own[n++] = S->sft_argv[0];
    /* with LoRA the base stays --policy and the adapter goes on */
    const char *base = S->adapter[0] ? o->policy : S->model;
    const char *words[] = {"--model", base, "--tokenizer", S->ro.tokpath, "--data", data, "--out", out,
                           "--adapter-out", adapter, "--ckpt-dir", ckpt, "--metrics", metrics, "--device", o->device};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) own[n++] = words[k];
    if (o->tname) {
        own[n++] = "--template";
        own[n++] = o->tname;
    }
    if (S->adapter[0]) {
        own[n++] = "--lora-init";
        own[n++] = S->adapter;
    }
    int argc = n + S->sft_argc - cfg;
    char **argv = xmalloc((size_t)(argc + 1) * sizeof *argv);
    for (int k = 0; k < n; k++) argv[k] = (char *)own[k];
    for (int k = cfg; k < S->sft_argc; k++) argv[n + k - cfg] = S->sft_argv[k];
    argv[argc] = NULL;
    printf("rs: round %d/%ld: llamac sft", r, o->rounds);
    for (int k = 0; k < argc; k++) printf(" %s", argv[k]);
    printf("\n");
    fflush(stdout);
    double t0 = time_now();
    Err se = {{0}};
    int rc = cmd_sft(argc, argv, &se);
    free(argv);
    S->t_train += time_now() - t0;
    fflush(stdout);
    if (rc) return err_set(e, "round %d: llamac sft: %s", r, se.msg);
    if (peft_is_dir(adapter)) { /* a LoRA run: base + this adapter */
        snprintf(S->model, sizeof S->model, "%s", o->policy);
        snprintf(S->adapter, sizeof S->adapter, "%s", adapter);
    } else if (access(out, R_OK) == 0) {
        snprintf(S->model, sizeof S->model, "%s", out);
        S->adapter[0] = 0;
    } else {
        return err_set(e, "round %d: llamac sft wrote neither %s nor %s", r, out, adapter);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// the command

/* Prompt i as JSON (a "prompt_ids" line decoded to text); every prompt of
 * one kind, message lists or strings, since a round's SFT file has one
 * format. */
static int prompts_json(Rs *S, Err *e) {
    const PromptSet *ps = &S->ro.ps;
    S->prompt = xcalloc(ps->n, sizeof *S->prompt);
    char *raw = NULL, *txt = NULL;
    size_t rcap = 0, tcap = 0;
    for (size_t i = 0; i < ps->n; i++) {
        json_t *p = rejection_prompt(ps->obj[i]);
        if (!p) {
            size_t n = tok_decode(&S->ro.tok, ps->ids + ps->off[i], ps->off[i + 1] - ps->off[i], &raw, &rcap);
            size_t tl = tok_utf8_lossy(raw ? raw : "", n, &txt, &tcap);
            p = json_stringn(txt ? txt : "", tl);
        }
        S->prompt[i] = p;
        if (i && json_is_array(p) != json_is_array(S->prompt[0])) {
            free(raw);
            free(txt);
            return err_set(e, "%s:%ld: a %s prompt after %s ones (line %ld): a round's SFT file has one format; put "
                              "text and message prompts in separate runs", S->o.prompts, ps->line[i],
                           json_is_array(p) ? "message" : "text", json_is_array(p) ? "text" : "message", ps->line[0]);
        }
    }
    free(raw);
    free(txt);
    return 0;
}

/* The words after "--" are llamac sft's: cut them off argv. */
static void split_args(int *argc, char **argv, Rs *S) {
    S->sft_argc = 0;
    S->sft_argv = argv + *argc;
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--") != 0) continue;
        S->sft_argv = argv + i + 1;
        S->sft_argc = *argc - i - 1;
        *argc = i;
        return;
    }
}

static int mkdir_round(const Opts *o, int r, char *dir, size_t cap, Err *e) {
    char name[32];
    snprintf(name, sizeof name, "round-%d", r);
    return path_join(dir, cap, o->out_dir, name, e) || trainer_mkdir(dir, "--out-dir", e) ? -1 : 0;
}

static int run(Rs *S, Err *e) {
    Opts *o = &S->o;
    /* inputs first: flags, prompts, then the reward models (before any sampling) */
    if (check_passthrough(S->sft_argc, S->sft_argv, e)) return -1;
    RolloutOpts ro = {o->policy, o->tokpath, o->tname, o->prompts, o->special, o->r.ctx, o->r.max_tokens, 0};
    if (rollout_open(&S->ro, &ro, e)) return -1;
    S->opened = 1;
    if (prompts_json(S, e)) return -1;
    if (S->pool_all) {
        size_t N = S->ro.ps.n;
        S->pool_reward = xmalloc(N * sizeof *S->pool_reward);
        S->pool_text = xcalloc(N, sizeof *S->pool_text);
        S->pool_len = xcalloc(N, sizeof *S->pool_len);
        for (size_t i = 0; i < N; i++) S->pool_reward[i] = -INFINITY;
    }
    for (long r = 1; r <= o->rounds; r++) { /* a fresh --out-dir: no round of another run to mix with */
        char dir[4400], name[32];
        snprintf(name, sizeof name, "round-%ld", r);
        if (path_join(dir, sizeof dir, o->out_dir, name, e)) return -1;
        if (access(dir, F_OK) == 0)
            return err_set(e, "--out-dir %s: already holds round-%ld (another run's?); use another --out-dir or delete it",
                           o->out_dir, r);
    }
    ScorerOpts so = {o->rm, o->rm_tok, o->rm_tpl, NULL, o->device, o->rm_batch, o->rm_seq};
    if (scorer_open(&S->sc, &so, e)) return -1;
    printf("rs: policy %s (%d layers, dim %d); %zu prompts of %s, %ld samples each at temperature %g, up to %ld "
           "tokens; %ld round%s into %s; reward:", o->policy, S->ro.c.n_layers, S->ro.c.dim, S->ro.ps.n, o->prompts,
           o->K, o->r.temperature, o->r.max_tokens, o->rounds, o->rounds > 1 ? "s" : "", o->out_dir);
    for (int k = 0; k < scorer_count(S->sc); k++)
        printf("%s %g x %s", k ? " +" : "", scorer_weight(S->sc, k), scorer_name(S->sc, k));
    printf("\n");
    if (strlen(o->policy) >= sizeof S->model) return err_set(e, "--policy: path too long");
    snprintf(S->model, sizeof S->model, "%s", o->policy);
    size_t n = S->ro.ps.n * (size_t)o->K;
    double *per = xmalloc(n * (size_t)scorer_count(S->sc) * sizeof *per + 1), *total = xmalloc(n * sizeof *total);
    int rc = 0;
    for (int r = 1; r <= o->rounds && rc == 0; r++) {
        char dir[4400];
        size_t kept = 0;
        rc = mkdir_round(o, r, dir, sizeof dir, e) || sample_round(S, r, e) || score_round(S, r, per, total, e) ||
             write_round(S, r, dir, per, total, &kept, e) || train_round(S, r, dir, e);
        for (size_t k = 0; S->smp && k < n; k++) rollout_text_free(&S->smp[k].txt);
        free(S->smp);
        S->smp = NULL;
    }
    free(per);
    free(total);
    if (rc) return -1;
    char c1[32], c2[32], c3[32];
    printf("rs: done: %ld rounds, %ld samples; sampling %s (%.1f samples/s), scoring %s (%.1f samples/s), training "
           "%s; policy %s%s%s\n", o->rounds, S->samples, run_clock(S->t_sample, c1, sizeof c1),
           S->samples / S->t_sample, run_clock(S->t_score, c2, sizeof c2), S->samples / S->t_score,
           run_clock(S->t_train, c3, sizeof c3), S->model, S->adapter[0] ? " + " : "", S->adapter);
    return 0;
}

int cmd_rs(int argc, char **argv, Err *e) {
    Rs S;
    memset(&S, 0, sizeof S);
    Opts *o = &S.o;
    *o = (Opts){.device = "cpu", .K = 4, .rounds = 1, .seed = 42, .threshold = -INFINITY, .pool = "round"};
    rollout_flags_default(&o->r, 1.2); /* Llama 2's best temperature for 10-100 samples (its Figure 8) */
    CliFlag sf[ROLLOUT_NSAMPLER], ef[ROLLOUT_NENGINE];
    rollout_flags(&o->r, sf, ef);
    split_args(&argc, argv, &S);
    CliFlag flags[] = {
        {"policy", CLI_STR, &o->policy, 0, 0, "the policy to improve: checkpoint, Hugging Face directory or GGUF file"},
        {"tokenizer", CLI_STR, &o->tokpath, 0, 0, "the policy's tokenizer (default: the one it carries: GGUF, HF directory)"},
        {"template", CLI_STR, &o->tname, 0, 0,
         "chat template of message prompts and of the SFT data: llama2, llama3, llama3.1, chatml or none (default: the "
         "tokenizer's)"},
        {"reward-model", CLI_STR, &o->rm, 0, 0,
         "reward models summed with weights: PATH[:WEIGHT],... (a checkpoint or HF directory with num_labels 1, or "
         "BASE+PEFT_DIR)"},
        {"reward-tokenizer", CLI_STR, &o->rm_tok, 0, 0, "tokenizer of every reward model (default: each model's own)"},
        {"reward-template", CLI_STR, &o->rm_tpl, 0, 0, "chat template of the reward models (default: each tokenizer's)"},
        {"reward-batch", CLI_INT, &o->rm_batch, 0, 1 << 16, "rows of a scoring batch (0: the scorer's, 8)"},
        {"reward-seq", CLI_INT, &o->rm_seq, 0, 1 << 24, "tokens per scoring row (0: the models' context, at most 1024)"},
        {"prompts", CLI_STR, &o->prompts, 0, 0,
         "JSONL, one prompt a line: \"prompt\" (text or messages), \"messages\" or \"prompt_ids\"; optional \"stop\""},
        {"out-dir", CLI_STR, &o->out_dir, 0, 0, "where round R writes round-R/{samples,sft,curve}.jsonl and its policy"},
        {"k", CLI_INT, &o->K, 1, 1 << 16, "samples per prompt per round"},
        {"rounds", CLI_INT, &o->rounds, 1, 1000, "rounds of sampling, selection and fine-tuning"},
        {"threshold", CLI_FLOAT, &o->threshold, -1e300, 1e300,
         "keep a prompt's best sample only when its reward is at least this (default: always)"},
        {"pool", CLI_STR, &o->pool, 0, 0,
         "round: fine-tune on each round's best samples; all: on each prompt's best of every round so far, an "
         "earlier round winning a tie (Llama 2 from RLHF V4 on)"},
        sf[0], sf[1], sf[2], sf[3], sf[4],
        {"seed", CLI_INT, &o->seed, 0, 1L << 62, "sampling seed: round R samples as llamac sample --seed SEED+R-1"},
        {"special", CLI_BOOL, &o->special, 0, 0, "special-token names in \"prompt\" text become their ids"},
        ef[0], ef[1], ef[2], ef[3], ef[4],
        {"device", CLI_STR, &o->device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU): sampling and scoring"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac rs --policy P --reward-model RM[:W],... --prompts prompts.jsonl --k K --out-dir DIR "
                 "[--rounds R] [--threshold X] [flags] [-- llamac sft flags]",
                 "Rejection-sampling fine-tuning (Llama 2-Chat). Each round samples K completions of every\n"
                 "prompt from the policy, scores them with the reward models, keeps each prompt's best (the\n"
                 "first on ties; only when it reaches --threshold) as SFT data, and fine-tunes the policy on it\n"
                 "with llamac sft and the flags after --; the result samples the next round. With --lora-r\n"
                 "after --, the policy is --policy plus one adapter every round continues. Round R writes\n"
                 "DIR/round-R/samples.jsonl (every sample, its reward, which was kept), sft.jsonl, curve.jsonl\n"
                 "(best and median reward of the first k samples, k = 1, 2, 4, ..., K, averaged over prompts)\n"
                 "and policy.h5 or adapter/. See docs/reward.md.",
                 flags, nf);
        return 0;
    }
    if (strcmp(o->pool, "round") && strcmp(o->pool, "all"))
        return err_set(e, "--pool: round or all, got '%.40s'", o->pool);
    S.pool_all = strcmp(o->pool, "all") == 0;
    if (!o->policy) return err_set(e, "--policy: required (a checkpoint, Hugging Face directory or GGUF file)");
    if (!o->rm) return err_set(e, "--reward-model: required (PATH[:WEIGHT],...: the reward models that pick the samples)");
    if (!o->prompts) return err_set(e, "--prompts: required (a JSONL file of prompts)");
    if (!o->out_dir) return err_set(e, "--out-dir: required (the directory of the rounds' data and policies)");
    if (dist_world() > 1) return err_set(e, "rs: runs as one process (its sampling is not split over MPI ranks yet)");
    if (rollout_params(&o->r, 1.0, &S.sp, e) || device_check(o->device, e)) return -1;
    if (o->r.threads > 0) omp_set_num_threads((int)o->r.threads);
    int rc = run(&S, e);
    if (S.sc) scorer_close(S.sc);
    for (size_t i = 0; S.prompt && i < S.ro.ps.n; i++) json_decref(S.prompt[i]);
    free(S.prompt);
    for (size_t i = 0; S.pool_text && i < S.ro.ps.n; i++) free(S.pool_text[i]);
    free(S.pool_text);
    free(S.pool_len);
    free(S.pool_reward);
    if (S.opened) rollout_free(&S.ro);
    return rc;
}
