/*
 * cmd_pretrain.c: `llamac pretrain`: pretrain a Llama from scratch on token
 * shards. Each optimizer step draws accum micro-batches of (B, T) from the
 * loader, normalises the loss by the step's total target count (so
 * accumulation gives the gradient of the whole global batch), runs forward
 * and backward on each, clips the global gradient norm and steps AdamW on
 * the warmup + cosine schedule. One progress line per step on stdout, the
 * same figures as JSON lines in the metrics file. Checkpoints (HDF5, ckpt.h)
 * every --save-every steps, at the end and on SIGINT/SIGTERM, the last
 * --keep of them kept; --resume continues a run exactly where it stopped
 * (bit-identical on the CPU: weights, AdamW moments, step, data cursor).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../optim/adamw.h"
#include "../optim/sched.h"
#include "ckpt.h"
#include "cli.h"
#include "cmds.h"
#include "device.h"
#include "run.h"

#define MAX_SHARDS 32

typedef struct {
    Shard s[MAX_SHARDS];
    const Shard *p[MAX_SHARDS];
    int n;
} ShardSet;

static int open_shards(ShardSet *set, const CliList *paths, const char *flag, Err *e) {
    memset(set, 0, sizeof *set);
    if (paths->n == 0) return err_set(e, "%s: no shard given", flag);
    for (int i = 0; i < paths->n; i++) {
        if (shard_open(&set->s[i], paths->v[i], e)) return -1;
        set->p[i] = &set->s[i];
        set->n++;
        if (set->s[i].tokenizer_id != set->s[0].tokenizer_id || set->s[i].vocab != set->s[0].vocab)
            return err_set(e, "%s: made by a different tokenizer than %s", paths->v[i], paths->v[0]);
    }
    return 0;
}

/* SIGINT / SIGTERM: finish the step, save a checkpoint, stop. */
static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static int mkdir_p(const char *dir, Err *e) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0777) && errno != EEXIST) return err_set(e, "--ckpt-dir: cannot create %s (%s)", p, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    return 0;
}

typedef struct {
    const char *dir;
    long keep;
    const char *run_config;
    uint64_t seed;
} CkptPlan;

/* Save the run after `step` steps into dir/step-N.h5 and prune. */
static int save_run(const CkptPlan *cp, const Llama *m, uint64_t tok_id, const AdamW *opt, const Loader *L,
                    long step, long tokens, double lr, Err *e) {
    char path[4096];
    ckpt_step_path(cp->dir, step, path, sizeof path);
    uint64_t cursor[2] = {L->epoch, L->pos};
    CkptState st = {step, tokens, cp->seed, lr, 1, cursor, {0}, (char *)cp->run_config};
    Rng r;
    rng_seed(&r, cp->seed);
    memcpy(st.rng, r.s, sizeof st.rng);
    double t0 = time_now();
    HostView hv; /* host copies of a GPU's buffers for the HDF5 writer */
    device_host_view(m, opt, &hv);
    int src = ckpt_save(path, &m->c, &m->t, hv.m.params, tok_id, &hv.opt, &st, e);
    device_host_free(&hv);
    if (src) return -1;
    double dt = time_now() - t0;
    struct stat sb;
    stat(path, &sb);
    ckpt_prune(cp->dir, (int)cp->keep, NULL);
    printf("checkpoint: %s (%.1f MB in %.2f s, %.0f MB/s)\n", path, sb.st_size / 1e6, dt, sb.st_size / 1e6 / dt);
    fflush(stdout);
    return 0;
}

static void close_shards(ShardSet *set) {
    for (int i = 0; i < set->n; i++) shard_close(&set->s[i]);
    set->n = 0;
}

static void print_sample(Llama *gen, const Llama *m, const Tokenizer *tok, const char *prompt, long max_tokens,
                         uint64_t seed, const char *when) {
    m->ops->download(m->ctx, gen->params, m->params, m->t.size * sizeof(float)); /* gen is on the CPU */
    int32_t *ids = NULL;
    size_t cap = 0, n = tok_encode(tok, prompt, strlen(prompt), &ids, &cap);
    if ((int)n + 1 >= gen->T) n = (size_t)gen->T / 2;
    Sampler s;
    sample_init(&s, m->c.vocab, 0.8f, 0, 0.95f, seed, NULL);
    printf("---- sample %s ----\n%s", when, prompt);
    run_generate(gen, tok, &s, ids, (int)n, (int)max_tokens, stdout, NULL, NULL);
    printf("\n--------\n");
    fflush(stdout);
    sample_free(&s);
    free(ids);
}

int cmd_pretrain(int argc, char **argv, Err *e) {
    const char *preset = "15m", *out = "model.h5", *metrics = NULL, *tokpath = NULL;
    const char *prompt = "Once upon a time";
    long B = 8, T = 256, batch_tokens = 0, steps = 1000, warmup = 2000, val_every = 100;
    long val_batches = 20, seed = 1337, shuffle = 1, doc_mask = 1, sample_tokens = 0, log_every = 1;
    long save_every = 0, keep = 3;
    const char *ckpt_dir = "checkpoints", *resume = NULL, *device = "cpu";
    double lr = 5e-4, min_frac = 0.1, warmup_frac = SCHED_MAX_WARMUP_FRAC, wd = 0.1, clip = 1.0;
    double beta1 = 0.9, beta2 = 0.95, eps = 1e-5, peak = 0;
    CliList train = {{0}, 0}, val = {{0}, 0}, set = {{0}, 0};
    CliFlag flags[] = {
        {"train", CLI_LIST, &train, 0, 0, "training shard (repeatable)"},
        {"val", CLI_LIST, &val, 0, 0, "validation shard (repeatable; none: no validation)"},
        {"preset", CLI_STR, &preset, 0, 0, "model shape (llamac inspect --help); vocab comes from the shards"},
        {"set", CLI_LIST, &set, 0, 0, "override a model field, e.g. --set n_layers=4 (repeatable)"},
        {"batch", CLI_INT, &B, 1, 1 << 16, "micro-batch size B (rows per forward/backward)"},
        {"seq", CLI_INT, &T, 2, 1 << 20, "sequence length T"},
        {"batch-tokens", CLI_INT, &batch_tokens, 0, 1L << 40, "tokens per optimizer step, a multiple of B*T (0: B*T, no accumulation)"},
        {"steps", CLI_INT, &steps, 1, 1L << 40, "optimizer steps"},
        {"lr", CLI_FLOAT, &lr, 0, 10, "peak learning rate (> 0)"},
        {"warmup", CLI_INT, &warmup, 0, 1L << 40, "linear warmup steps (capped at --warmup-frac of --steps)"},
        {"warmup-frac", CLI_FLOAT, &warmup_frac, 0, 1, "largest fraction of the run warmup may take"},
        {"lr-min-frac", CLI_FLOAT, &min_frac, 0, 1, "cosine decay floor as a fraction of --lr"},
        {"weight-decay", CLI_FLOAT, &wd, 0, 10, "AdamW decoupled weight decay on 2-D weights"},
        {"beta1", CLI_FLOAT, &beta1, 0, 1, "AdamW beta1"},
        {"beta2", CLI_FLOAT, &beta2, 0, 1, "AdamW beta2"},
        {"eps", CLI_FLOAT, &eps, 0, 1, "AdamW epsilon"},
        {"clip", CLI_FLOAT, &clip, 0, 1e9, "global gradient-norm clip (0: off)"},
        {"val-every", CLI_INT, &val_every, 0, 1L << 40, "validation loss every N steps (0: only at the end)"},
        {"val-batches", CLI_INT, &val_batches, 1, 1L << 30, "batches per validation"},
        {"seed", CLI_INT, &seed, 0, 1L << 62, "seed for initialisation and data order"},
        {"shuffle", CLI_INT, &shuffle, 0, 1, "1: shuffled windows each epoch; 0: in file order"},
        {"doc-mask", CLI_INT, &doc_mask, 0, 1, "1: attention and RoPE positions restart at each end-of-text"},
        {"out", CLI_STR, &out, 0, 0, "model written at the end (HDF5, weights only: for eval, generate, convert)"},
        {"ckpt-dir", CLI_STR, &ckpt_dir, 0, 0, "directory of the run's checkpoints (step-N.h5: weights, AdamW, data cursor)"},
        {"save-every", CLI_INT, &save_every, 0, 1L << 40, "checkpoint every N steps (0: only at the end and on SIGINT/SIGTERM)"},
        {"keep", CLI_INT, &keep, 1, 1 << 20, "checkpoints kept in --ckpt-dir (older ones are deleted)"},
        {"resume", CLI_STR, &resume, 0, 0, "continue from a checkpoint: a path, or auto (the newest in --ckpt-dir; none: start)"},
        {"metrics", CLI_STR, &metrics, 0, 0, "JSON-lines metrics file (one line per step and per validation)"},
        {"peak-gflops", CLI_FLOAT, &peak, 0, 1e9, "peak for MFU in GFLOP/s (0: measure SGEMM here)"},
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer file, for samples before and after training"},
        {"prompt", CLI_STR, &prompt, 0, 0, "prompt of the samples"},
        {"sample-tokens", CLI_INT, &sample_tokens, 0, 1 << 20, "tokens per sample (0: no samples)"},
        {"log-every", CLI_INT, &log_every, 1, 1L << 30, "progress line every N steps"},
        {"device", CLI_STR, &device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac pretrain [config.ini] --train SHARD [--val SHARD] [flags]",
                 "Pretrain a Llama from scratch on token shards (llamac tokenize makes them).\n"
                 "A config file holds the same keys as the flags (key = value; a [model] section\n"
                 "holds model fields); flags win. Defaults are the Llama recipe: AdamW (0.9, 0.95,\n"
                 "1e-5), weight decay 0.1 on matrices, clip 1.0, warmup then cosine to 10%.",
                 flags, nf);
        return 0;
    }
    if (!(lr > 0)) return err_set(e, "--lr: must be positive, got %g", lr);
    if (device_check(device, e)) return -1;
    ShardSet tr, va;
    memset(&va, 0, sizeof va);
    if (open_shards(&tr, &train, "--train", e)) { close_shards(&tr); return -1; }
    int rc = -1;
    if (val.n && open_shards(&va, &val, "--val", e)) goto out_shards;
    if (va.n && va.s[0].tokenizer_id != tr.s[0].tokenizer_id) {
        err_set(e, "%s: made by a different tokenizer than the training shards", val.v[0]);
        goto out_shards;
    }
    LlamaConfig c;
    if (config_preset(preset, &c, e)) goto out_shards;
    c.vocab = tr.s[0].vocab;
    for (int i = 0; i < set.n; i++)
        if (config_set_kv(&c, set.v[i], e)) goto out_shards;
    if (c.vocab != tr.s[0].vocab) {
        err_set(e, "--set vocab=%d: the shards hold ids of a %d-word vocabulary", c.vocab, tr.s[0].vocab);
        goto out_shards;
    }
    long micro = B * T;
    if (batch_tokens == 0) batch_tokens = micro;
    if (batch_tokens % micro != 0) {
        err_set(e, "--batch-tokens: %ld is not a multiple of B*T = %ld", batch_tokens, micro);
        goto out_shards;
    }
    long accum = batch_tokens / micro;
    AdamWConfig ac = {(float)beta1, (float)beta2, (float)eps, (float)wd, (float)clip, 0};
    Sched sched;
    if (sched_init(&sched, lr, warmup, steps, min_frac, warmup_frac, e)) goto out_shards;
    Llama m, gen;
    memset(&gen, 0, sizeof gen);
    Device dev;
    if (device_open(&dev, device, e)) goto out_shards;
    if (device_check_fits(&dev, &c, (int)B, (int)T, 1, e) ||
        llama_init(&m, &c, dev.ops, dev.ctx, (int)B, (int)T, 1, e)) { device_close(&dev); goto out_shards; }
    device_params_init(&m, (uint64_t)seed);
    AdamW opt;
    Loader L, LV;
    memset(&LV, 0, sizeof LV);
    if (adamw_init(&opt, &ac, &m.t, m.ops, m.ctx, e)) goto out_model;
    if (loader_init(&L, tr.p, tr.n, (int)B, (int)T, 0, 1, (int)shuffle, (int)doc_mask, (uint64_t)seed, e)) goto out_opt;
    if (va.n && loader_init(&LV, va.p, va.n, (int)B, (int)T, 0, 1, 0, (int)doc_mask, (uint64_t)seed, e)) goto out_loader;
    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    if (tokpath) {
        if (tok_load(&tok, tokpath, e)) goto out_val;
        if (tok.id != tr.s[0].tokenizer_id) {
            err_set(e, "%s: not the tokenizer that made %s", tokpath, train.v[0]);
            goto out_tok;
        }
        if (sample_tokens && llama_init(&gen, &c, &ops_cpu, NULL, 1, (int)T, 0, e)) goto out_tok;
    }
    /* resume: the same model, optimizer and data position as when saved */
    char rpath[4096] = "";
    long start = 0;
    CkptPlan plan = {ckpt_dir, keep, NULL, (uint64_t)seed};
    if (resume) {
        int found = 1;
        if (strcmp(resume, "auto") == 0) {
            found = ckpt_latest(ckpt_dir, rpath, sizeof rpath, e);
            if (found < 0) goto out_gen;
            if (!found) printf("resume: no checkpoint in %s; starting from scratch\n", ckpt_dir);
        } else {
            snprintf(rpath, sizeof rpath, "%s", resume);
        }
        if (found) {
            CkptInfo info;
            CkptState st;
            char diff[128];
            if (ckpt_info(rpath, &info, e)) goto out_gen;
            if (ckpt_config_diff(&info.c, &c, diff, sizeof diff)) {
                err_set(e, "%s: the checkpoint's model does not match the requested one (%s: checkpoint vs "
                           "--preset/--set)", rpath, diff);
                goto out_gen;
            }
            if (info.tokenizer_id != tr.s[0].tokenizer_id) {
                err_set(e, "%s: trained on shards of another tokenizer than %s", rpath, train.v[0]);
                goto out_gen;
            }
            HostView hv;
            device_host_view(&m, &opt, &hv);
            int lrc = ckpt_load(rpath, &c, &m.t, hv.m.params, &hv.opt, &st, e);
            if (!lrc) device_host_push(&hv, &m, &opt);
            device_host_free(&hv);
            if (lrc) goto out_gen;
            if (st.world != 1) {
                err_set(e, "%s: saved by %d data-parallel ranks; this run has 1", rpath, st.world);
                ckpt_state_free(&st);
                goto out_gen;
            }
            if (st.seed != (uint64_t)seed)
                fprintf(stderr, "warning: %s was trained with --seed %llu, this run has %ld: the data order "
                                "changes\n", rpath, (unsigned long long)st.seed, seed);
            int rc2 = loader_seek(&L, st.cursor[0], st.cursor[1], e);
            start = st.step;
            ckpt_state_free(&st);
            if (rc2) goto out_gen;
            if (start >= steps) {
                err_set(e, "%s: already at step %ld of --steps %ld: nothing to do (raise --steps)", rpath, start, steps);
                goto out_gen;
            }
            printf("resume: %s at step %ld (data epoch %llu, window %llu)\n", rpath, start,
                   (unsigned long long)L.epoch, (unsigned long long)L.pos);
        }
    }
    if (mkdir_p(ckpt_dir, e)) goto out_gen;
    char *run_config = cli_dump(flags, nf);
    plan.run_config = run_config;
    FILE *mf = NULL;
    if (metrics && !(mf = fopen(metrics, start ? "a" : "w"))) {
        err_set(e, "--metrics: cannot create %s", metrics);
        free(run_config);
        goto out_gen;
    }
    if (peak == 0) peak = dev.gpu ? 989e3 : run_sgemm_peak(2048, 5); /* GPU: H100 bf16 dense (DESIGN.md) */
    double fpt = llama_flops_per_token(&c, (int)T);
    printf("pretrain: dim %d, %d layers, %d/%d heads, hidden %d, vocab %d: %.2fM parameters; %ld train windows"
           " of %ld tokens%s\n", c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden, c.vocab, m.t.numel / 1e6,
           (long)loader_windows(&L), T, va.n ? ", validation on" : "");
    printf("  B=%ld T=%ld x %ld micro-batches = %ld tokens/step, %ld steps, lr %g (warmup %ld, cosine to %g), "
           "MFU against %.1f GFLOP/s\n", B, T, accum, batch_tokens, steps, lr, sched.warmup, lr * min_frac, peak);
    if (gen.params && start == 0) print_sample(&gen, &m, &tok, prompt, sample_tokens, (uint64_t)seed, "before training");

    size_t n = (size_t)micro * accum;
    int32_t *tk = xmalloc(n * sizeof *tk), *tg = xmalloc(n * sizeof *tg), *ps = xmalloc(n * sizeof *ps);
    double t_start = time_now(), first_val = NAN, last_val = NAN;
    char c1[32], c2[32];
    if (va.n && start == 0) {
        last_val = first_val = run_eval_loss(&m, &LV, val_batches, NULL);
        loader_seek(&LV, 0, 0, NULL);
        printf("step %ld | val loss %.4f\n", 0L, first_val);
        if (mf) fprintf(mf, "{\"step\":0,\"val_loss\":%.6f}\n", first_val);
    }
    stop_signal = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double lr_now = sched_lr(&sched, start);
    for (long step = start; step < steps; step++) {
        double t0 = time_now();
        for (long k = 0; k < accum; k++) loader_next(&L, tk + k * micro, tg + k * micro, ps + k * micro);
        long ntgt = llama_count_targets(tg, n);
        m.ops->zero(m.ctx, m.grads, m.t.size * sizeof(float));
        double loss = 0;
        for (long k = 0; k < accum; k++) {
            if (llama_set_batch(&m, tk + k * micro, tg + k * micro, ps + k * micro, e)) goto out_loop;
            loss += llama_forward(&m, 0, c.n_layers, ntgt ? 1.0f / ntgt : 0.0f);
            llama_backward(&m, 0, c.n_layers);
        }
        loss /= ntgt ? ntgt : 1;
        double norm = adamw_grad_norm(&opt, m.grads);
        if (!isfinite(loss) || !isfinite(norm)) {
            err_set(e, "step %ld: loss %g, gradient norm %g: training diverged (try a lower --lr)", step, loss, norm);
            goto out_loop;
        }
        lr_now = sched_lr(&sched, step);
        adamw_step(&opt, &m.t, m.params, m.grads, norm, (float)lr_now);
        m.ops->sync(m.ctx);
        double dt = time_now() - t0, el = time_now() - t_start;
        double tps = n / dt, mfu = fpt * tps / (peak * 1e9);
        if ((step + 1) % log_every == 0 || step + 1 == steps)
            printf("step %ld/%ld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | MFU %.1f%% | %s elapsed | ETA %s\n",
                   step + 1, steps, loss, lr_now, norm, tps, 100 * mfu, run_clock(el, c1, sizeof c1),
                   run_clock(el / (step + 1) * (steps - step - 1), c2, sizeof c2));
        if (mf)
            fprintf(mf, "{\"step\":%ld,\"loss\":%.17g,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                        "\"mfu\":%.4f,\"elapsed_s\":%.3f,\"tokens\":%ld}\n",
                    step + 1, loss, lr_now, norm, tps, mfu, el, (long)n * (step + 1));
        if (va.n && ((val_every && (step + 1) % val_every == 0) || step + 1 == steps)) {
            last_val = run_eval_loss(&m, &LV, val_batches, NULL);
            loader_seek(&LV, 0, 0, NULL); /* the same validation batches every time */
            printf("step %ld | val loss %.4f\n", step + 1, last_val);
            if (mf) fprintf(mf, "{\"step\":%ld,\"val_loss\":%.6f}\n", step + 1, last_val);
        }
        fflush(stdout);
        if (mf) fflush(mf);
        if ((save_every && (step + 1) % save_every == 0) || step + 1 == steps || stop_signal) {
            if (save_run(&plan, &m, tr.s[0].tokenizer_id, &opt, &L, step + 1, (long)n * (step + 1), lr_now, e))
                goto out_loop;
        }
        if (stop_signal) {
            err_set(e, "stopped by %s after step %ld; resume with --resume auto (--ckpt-dir %s)",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", step + 1, ckpt_dir);
            goto out_loop;
        }
    }
    if (gen.params) print_sample(&gen, &m, &tok, prompt, sample_tokens, (uint64_t)seed, "after training");
    HostView hv;
    device_host_view(&m, NULL, &hv);
    int src = ckpt_save(out, &m.c, &m.t, hv.m.params, tr.s[0].tokenizer_id, NULL, NULL, e);
    device_host_free(&hv);
    if (src) goto out_loop;
    printf("done: %ld steps in %s", steps - start, run_clock(time_now() - t_start, c1, sizeof c1));
    if (va.n && start == 0) printf(", val loss %.4f -> %.4f", first_val, last_val);
    else if (va.n) printf(", val loss %.4f", last_val);
    printf("; model written to %s\n", out);
    rc = 0;
out_loop:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(tk); free(tg); free(ps);
    free(run_config);
    if (mf) fclose(mf);
out_gen:
    if (gen.params) llama_free(&gen);
out_tok:
    if (tokpath) tok_free(&tok);
out_val:
    if (va.n) loader_free(&LV);
out_loader:
    loader_free(&L);
out_opt:
    adamw_free(&opt);
out_model:
    llama_free(&m);
    device_close(&dev);
out_shards:
    close_shards(&tr);
    close_shards(&va);
    return rc;
}
