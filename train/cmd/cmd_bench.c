/*
 * cmd_bench.c: `llamac bench`: time full training steps (forward, backward,
 * gradient norm, AdamW) of a preset on random tokens, full or LoRA (frozen
 * base, AdamW on the adapters; --lora-r), optionally with activation
 * recomputation (--recompute), report tokens/s,
 * achieved GFLOP/s (DESIGN.md's 6N + 12LHT count) against the SGEMM peak
 * measured in the same run, peak resident memory, and with --ops where the
 * time goes per op (the op table wrapped by a timing table). With --ckpt DIR
 * it times checkpoint saves and loads of the preset with AdamW state instead,
 * against the disk's sequential write speed measured in the same run.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../model/llama.h"
#include "../../optim/adamw.h"
#include "../../optim/sched.h"
#include "../proc/blas_env.h"
#include "../io/ckpt.h"
#include "../loop/run.h"
#include "../proc/cli.h"
#include "cmds.h"

// ----------------------------------------------------------------------------
// a timing wrapper around an op table: same contract, each call timed by
// op id (the CPU backend is synchronous, so wall time is the op's time)

static const Ops *base;
static double op_time[OP_COUNT];
static long op_calls[OP_COUNT];

#define TIMED(id, call) \
    do { double t0_ = time_now(); call; op_time[id] += time_now() - t0_; op_calls[id]++; } while (0)

static void p_embed_fwd(void *c, float *o, const int *t, const float *e, int N, int D) { TIMED(OP_EMBED, base->embed_fwd(c, o, t, e, N, D)); }
static void p_embed_bwd(void *c, float *d, const float *o, const int *t, int N, int D) { TIMED(OP_EMBED, base->embed_bwd(c, d, o, t, N, D)); }
static void p_rms_fwd(void *c, float *o, float *r, const float *x, const float *w, int N, int D, float eps) { TIMED(OP_RMSNORM, base->rmsnorm_fwd(c, o, r, x, w, N, D, eps)); }
static void p_rms_bwd(void *c, float *dx, float *dw, const float *d, const float *x, const float *w, const float *r, int N, int D) { TIMED(OP_RMSNORM, base->rmsnorm_bwd(c, dx, dw, d, x, w, r, N, D)); }
static void p_mm_fwd(void *c, float *o, const float *x, const float *w, int N, int Din, int Dout) { TIMED(OP_MATMUL, base->matmul_fwd(c, o, x, w, N, Din, Dout)); }
static void p_mm_bwd(void *c, float *dx, float *dw, const float *d, const float *x, const float *w, int N, int Din, int Dout, int a) { TIMED(OP_MATMUL, base->matmul_bwd(c, dx, dw, d, x, w, N, Din, Dout, a)); }
static void p_lora_fwd(void *c, float *y, float *h, const float *x, const float *A, const float *B, float *w, int N, int Din, int Dout, int r, float s, float p, uint64_t sd, int l, int m) { TIMED(OP_LORA, base->lora_fwd(c, y, h, x, A, B, w, N, Din, Dout, r, s, p, sd, l, m)); }
static void p_lora_bwd(void *c, float *dx, float *dA, float *dB, const float *dy, const float *x, const float *h, const float *A, const float *B, float *w, int N, int Din, int Dout, int r, float s, float p, uint64_t sd, int l, int m) { TIMED(OP_LORA, base->lora_bwd(c, dx, dA, dB, dy, x, h, A, B, w, N, Din, Dout, r, s, p, sd, l, m)); }
static void p_rope_fwd(void *c, float *x, const int *p, const float *cs, const float *sn, int N, int nh, int HS) { TIMED(OP_ROPE, base->rope_fwd(c, x, p, cs, sn, N, nh, HS)); }
static void p_rope_bwd(void *c, float *x, const int *p, const float *cs, const float *sn, int N, int nh, int HS) { TIMED(OP_ROPE, base->rope_bwd(c, x, p, cs, sn, N, nh, HS)); }
static void p_attn_fwd(void *c, float *o, float *l, const float *q, const float *k, const float *v, const int *p, float *s, int B, int T, int H, int KV, int HS) { TIMED(OP_ATTN, base->attn_fwd(c, o, l, q, k, v, p, s, B, T, H, KV, HS)); }
static void p_attn_bwd(void *c, float *dq, float *dk, float *dv, const float *d, const float *o, const float *l, const float *q, const float *k, const float *v, const int *p, float *s, int B, int T, int H, int KV, int HS) { TIMED(OP_ATTN, base->attn_bwd(c, dq, dk, dv, d, o, l, q, k, v, p, s, B, T, H, KV, HS)); }
static void p_swi_fwd(void *c, float *o, const float *g, const float *u, size_t n) { TIMED(OP_SWIGLU, base->swiglu_fwd(c, o, g, u, n)); }
static void p_swi_bwd(void *c, float *dg, float *du, const float *d, const float *g, const float *u, size_t n) { TIMED(OP_SWIGLU, base->swiglu_bwd(c, dg, du, d, g, u, n)); }
static double p_ce(void *c, float *dx, float *dw, float *rl, const float *x, const float *w, const int *t, float *s, int N, int D, int V, float sc) { double r; TIMED(OP_LMHEAD_CE, r = base->lmhead_ce(c, dx, dw, rl, x, w, t, s, N, D, V, sc)); return r; }
static void p_add(void *c, float *y, const float *x, size_t n) { TIMED(OP_ADD, base->add(c, y, x, n)); }
static double p_sumsq(void *c, const float *x, size_t n) { double r; TIMED(OP_SUMSQ, r = base->sumsq(c, x, n)); return r; }
static void p_scale(void *c, float *x, float s, size_t n) { TIMED(OP_SCALE, base->scale(c, x, s, n)); }
static void p_adamw(void *c, float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps, float wd, int t, float gs) { TIMED(OP_ADAMW, base->adamw(c, p, g, m, v, n, lr, b1, b2, eps, wd, t, gs)); }

static Ops profiled(const Ops *b) {
    base = b;
    Ops o = *b;
    o.name = "profiled";
    o.embed_fwd = p_embed_fwd; o.embed_bwd = p_embed_bwd;
    o.rmsnorm_fwd = p_rms_fwd; o.rmsnorm_bwd = p_rms_bwd;
    o.matmul_fwd = p_mm_fwd;   o.matmul_bwd = p_mm_bwd;
    o.lora_fwd = p_lora_fwd;   o.lora_bwd = p_lora_bwd;
    o.rope_fwd = p_rope_fwd;   o.rope_bwd = p_rope_bwd;
    o.attn_fwd = p_attn_fwd;   o.attn_bwd = p_attn_bwd;
    o.swiglu_fwd = p_swi_fwd;  o.swiglu_bwd = p_swi_bwd;
    o.lmhead_ce = p_ce;        o.add = p_add;
    o.sumsq = p_sumsq;         o.scale = p_scale;
    o.adamw = p_adamw;
    return o;
}

// ----------------------------------------------------------------------------

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n), which it sorts. */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Seconds to write n bytes sequentially to path with write() and fsync (what
 * `dd bs=8M conv=fsync` measures); the file is removed after. */
static double disk_write_s(const char *path, size_t n, Err *e) {
    size_t chunk = 8u << 20;
    char *buf = xmalloc(chunk);
    for (size_t i = 0; i < chunk; i++) buf[i] = (char)(i * 31 + 7);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        free(buf);
        return err_set(e, "--ckpt: cannot create %s", path);
    }
    double t0 = time_now();
    int ok = 1;
    for (size_t done = 0; done < n && ok;) {
        size_t k = n - done < chunk ? n - done : chunk;
        ok = write(fd, buf, k) == (ssize_t)k;
        done += k;
    }
    ok = ok && fsync(fd) == 0;
    double dt = time_now() - t0;
    close(fd);
    unlink(path);
    free(buf);
    return ok ? dt : err_set(e, "--ckpt: cannot write %s (disk full?)", path);
}

/* Save and load a checkpoint of c with AdamW moments, `rounds` times each,
 * beside the disk's write speed. */
static int bench_ckpt(const LlamaConfig *c, const char *dir, int rounds, int json, Err *e) {
    ParamTable t;
    if (params_build(c, &t, e)) return -1;
    float *params = xmalloc(t.size * sizeof(float));
    params_init(&t, params, c->n_layers, 1);
    AdamW opt;
    AdamWConfig ac = ADAMW_DEFAULTS;
    if (adamw_init(&opt, &ac, &t, &ops_cpu, NULL, e)) { free(params); params_free(&t); return -1; }
    for (size_t i = 0; i < t.size; i++) opt.m[i] = params[i] * 0.1f, opt.v[i] = params[i] * params[i];
    opt.t = 100;
    uint64_t cursor[2] = {0, 0};
    CkptState st = {100, 100 * 256, 1, 3e-4, 1, cursor, {1, 2, 3, 4}, "bench = 1\n", 0, 0, 2, NULL, 0};
    char path[4096], raw[4096];
    snprintf(path, sizeof path, "%s/llamac-bench.h5", dir);
    snprintf(raw, sizeof raw, "%s/llamac-bench.raw", dir);
    double *ts = xmalloc(3 * (size_t)rounds * sizeof(double)), *tl = ts + rounds, *td = tl + rounds;
    struct stat sb = {0};
    int rc = 0;
    for (int r = 0; r < rounds && rc == 0; r++) {
        double t0 = time_now();
        if ((rc = ckpt_save(path, c, &t, params, 0, &opt, &st, e))) break;
        ts[r] = time_now() - t0;
        stat(path, &sb);
        t0 = time_now();
        CkptState got;
        if ((rc = ckpt_load(path, c, &t, params, &opt, &got, e))) break;
        tl[r] = time_now() - t0;
        ckpt_state_free(&got);
        double d = disk_write_s(raw, (size_t)sb.st_size, e);
        if (d < 0) { rc = -1; break; }
        td[r] = d;
    }
    unlink(path);
    if (rc == 0) {
        double mb = sb.st_size / 1e6, s = median(ts, rounds), l = median(tl, rounds), d = median(td, rounds);
        if (json)
            printf("{\"peer\":\"llamac\",\"what\":\"ckpt\",\"preset\":\"%s\",\"mb\":%.1f,\"save_s\":%.3f,"
                   "\"load_s\":%.3f,\"disk_write_s\":%.3f,\"save_mb_s\":%.1f,\"load_mb_s\":%.1f,"
                   "\"disk_mb_s\":%.1f}\n", c->name, mb, s, l, d, mb / s, mb / l, mb / d);
        else {
            printf("llamac bench --ckpt: %s with AdamW state, %.1f MB per checkpoint, median of %d in %s\n",
                   c->name, mb, rounds, dir);
            printf("  save %.2f s = %.0f MB/s (write, fsync, rename)\n", s, mb / s);
            printf("  load %.2f s = %.0f MB/s (page cache warm after the save)\n", l, mb / l);
            printf("  disk sequential write (8 MiB writes + fsync, same bytes) %.2f s = %.0f MB/s\n", d, mb / d);
            printf("  save speed = %.0f%% of the disk's\n", 100 * d / s);
        }
    }
    free(ts);
    adamw_free(&opt);
    free(params);
    params_free(&t);
    return rc;
}

int cmd_bench(int argc, char **argv, Err *e) {
    const char *preset = "15m";
    long B = 8, T = 256, steps = 5, warm = 1, seed = 1, sgemm = 0;
    double lr = 3e-4;
    int json = 0, ops = 0, recompute = 0;
    long lora_r = 0;
    double lora_dropout = 0;
    const char *ckdir = NULL, *lora_targets = NULL;
    long rounds = 3;
    CliList set = {{0}, 0};
    CliFlag flags[] = {
        {"preset", CLI_STR, &preset, 0, 0, "model preset (see llamac inspect --help)"},
        {"batch", CLI_INT, &B, 1, 1 << 16, "micro-batch size B"},
        {"seq", CLI_INT, &T, 1, 1 << 20, "sequence length T"},
        {"steps", CLI_INT, &steps, 1, 100000, "timed steps (the median is reported)"},
        {"warmup-steps", CLI_INT, &warm, 0, 1000, "untimed steps first"},
        {"lr", CLI_FLOAT, &lr, 0, 10, "learning rate (must be > 0)"},
        {"seed", CLI_INT, &seed, 0, 1L << 62, "seed for weights and tokens"},
        {"sgemm", CLI_INT, &sgemm, 0, 16384, "also measure the SGEMM peak at this size (0: off)"},
        {"ops", CLI_BOOL, &ops, 0, 1, "print time per op over the timed steps"},
        {"lora-r", CLI_INT, &lora_r, 0, 4096, "time LoRA steps (frozen base, AdamW on adapters) of this rank; 0: full training"},
        {"lora-targets", CLI_STR, &lora_targets, 0, 0, "LoRA target modules (default q_proj,k_proj,v_proj,o_proj)"},
        {"lora-dropout", CLI_FLOAT, &lora_dropout, 0, 1, "LoRA dropout"},
        {"recompute", CLI_BOOL, &recompute, 0, 1, "recompute each layer's activations in the backward"},
        {"json", CLI_BOOL, &json, 0, 1, "print one JSON line instead of text"},
        {"set", CLI_LIST, &set, 0, 0, "override a model field, e.g. --set n_layers=2"},
        {"ckpt", CLI_STR, &ckdir, 0, 0, "time checkpoint save/load in this directory instead of steps"},
        {"rounds", CLI_INT, &rounds, 1, 1000, "save/load rounds with --ckpt (the median is reported)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac bench [flags]",
                 "Time training steps (forward + backward + grad norm + AdamW) on random tokens;\n"
                 "report tokens/s, achieved GFLOP/s and peak memory, optionally against the\n"
                 "SGEMM peak measured in the same run and with a per-op breakdown.",
                 flags, nf);
        return 0;
    }
    if (!(lr > 0)) return err_set(e, "--lr: must be positive, got %g", lr);
    LlamaConfig c;
    if (config_preset(preset, &c, e)) return -1;
    for (int i = 0; i < set.n; i++)
        if (config_set_kv(&c, set.v[i], e)) return -1;
    if (ckdir) return config_validate(&c, e) ? -1 : bench_ckpt(&c, ckdir, (int)rounds, json, e);
    LoraConfig lc;
    if ((lora_r || lora_targets) &&
        lora_config_from_flags(&lc, lora_r ? lora_r : 16, 0, lora_dropout, lora_targets, NULL, 0, &c, e))
        return -1;
    int lora = lora_r || lora_targets;
    Ops prof = profiled(&ops_cpu);
    const Ops *o = ops ? &prof : &ops_cpu;
    LlamaOpts lo = {lora ? LLAMA_GRADS_INPUT : LLAMA_GRADS_FULL, lora ? &lc : NULL, recompute, NULL, 0};
    Llama m;
    if (llama_init_opts(&m, &c, o, NULL, (int)B, (int)T, &lo, e)) return -1;
    params_init(&m.t, m.params, c.n_layers, (uint64_t)seed);
    if (lora) { /* B random, not PEFT's 0, so every product carries data */
        llama_lora_init(&m, (uint64_t)seed);
        Rng rb;
        rng_seed(&rb, (uint64_t)seed + 1);
        for (int i = 1; i < m.lt.n; i += 2)
            for (size_t j = 0; j < m.lt.p[i].numel; j++) m.lora_params[m.lt.p[i].offset + j] = 0.01f * rng_normal(&rb);
    }
    /* what is trained: the adapters, or the whole base */
    const ParamTable *tt = lora ? &m.lt : &m.t;
    float *tp = lora ? m.lora_params : m.params, *tg = lora ? m.lora_grads : m.grads;
    AdamW opt;
    AdamWConfig ac = ADAMW_DEFAULTS;
    if (adamw_init(&opt, &ac, tt, o, NULL, e)) { llama_free(&m); return -1; }
    LlamaMem mem = llama_memory_opts(&c, o, (int)B, (int)T, &lo);
    double est = (double)llama_mem_step_total(&mem);
    size_t n = (size_t)B * T;
    int *tok = xmalloc(n * sizeof(int)), *tgt = xmalloc(n * sizeof(int)), *pos_bt = xmalloc(n * sizeof(int));
    llama_doc_pos(tok, (int)B, (int)T, -1, pos_bt); /* no documents: 0..T-1, made once, not per step */
    Rng r;
    rng_seed(&r, (uint64_t)seed);
    double *dt = xmalloc((size_t)steps * sizeof(double)), loss = 0;
    for (long s = 0; s < warm + steps; s++) {
        if (s == warm) memset(op_time, 0, sizeof op_time), memset(op_calls, 0, sizeof op_calls);
        for (size_t i = 0; i < n; i++) tok[i] = (int)(rng_u64(&r) % c.vocab);
        for (size_t i = 0; i < n; i++) tgt[i] = (int)(rng_u64(&r) % c.vocab);
        double t0 = time_now();
        LC_ASSERT(llama_set_batch(&m, tok, tgt, pos_bt, e) == 0); /* tokens drawn in range */
        o->zero(NULL, tg, tt->size * sizeof(float));
        llama_lora_seed(&m, (uint64_t)s);
        loss = llama_forward(&m, 0, c.n_layers, 1.0f / n) / n;
        llama_backward(&m, 0, c.n_layers);
        double norm = adamw_grad_norm(&opt, tg);
        adamw_step(&opt, tt, tp, tg, norm, (float)lr);
        if (s >= warm) dt[s - warm] = time_now() - t0;
    }
    double *sorted = xmalloc((size_t)steps * sizeof(double)); /* dt stays in step order for --json */
    memcpy(sorted, dt, (size_t)steps * sizeof(double));
    double med = median(sorted, (int)steps);
    double tps = n / med, fpt = llama_train_flops_per_token(&m);
    double gf = fpt * tps / 1e9;
    double peak = sgemm ? run_sgemm_peak((int)sgemm, 10) : 0;
    double rss = peak_rss_bytes() / 1048576.0;
    char mode[160];
    if (lora) snprintf(mode, sizeof mode, "lora r=%d targets=0x%x", lc.r, lc.targets);
    else snprintf(mode, sizeof mode, "full");
    if (json) {
        printf("{\"peer\":\"llamac\",\"preset\":\"%s\",\"batch\":%ld,\"seq\":%ld,\"threads\":%d,\"blas\":\"%s\","
               "\"mode\":\"%s\",\"lora_r\":%d,\"recompute\":%d,\"est_mb\":%.1f,\"step_s_median\":%.5f,\"step_s_all\":[",
               c.name, B, T, ops_cpu_threads(), blas_env_describe(), mode, lora ? lc.r : 0, recompute,
               est / 1048576.0, med);
        for (long s = 0; s < steps; s++) printf("%s%.5f", s ? "," : "", dt[s]);
        printf("],\"tokens_per_s\":%.1f,\"gflops\":%.2f,\"flops_per_token\":%.6g,\"sgemm_peak_gflops\":%.2f,"
               "\"peak_rss_mb\":%.1f,\"loss\":%.5f}\n",
               tps, gf, fpt, peak, rss, loss);
    } else {
        printf("llamac bench: %s B=%ld T=%ld, %s%s, %d threads, OpenBLAS %s\n", c.name, B, T, mode,
               recompute ? ", recompute" : "", ops_cpu_threads(), blas_env_describe());
        printf("step %.1f ms (median of %ld), %.0f tokens/s, %.1f GFLOP/s achieved", med * 1e3, steps, tps, gf);
        if (peak > 0) printf(" = %.0f%% of the %.1f GFLOP/s SGEMM peak", 100 * gf / peak, peak);
        printf(", peak RSS %.0f MiB (step buffers estimated %.0f MiB, as inspect), loss %.3f\n", rss,
               est / 1048576.0, loss);
    }
    if (ops) {
        double tot = 0;
        for (int i = 0; i < OP_COUNT; i++) tot += op_time[i];
        printf("time per op over %ld steps (%.1f ms per step in ops):\n", steps, 1e3 * tot / steps);
        for (int i = 0; i < OP_COUNT; i++)
            if (op_calls[i])
                printf("  %-10s %8.2f ms/step %5.1f%%  (%ld calls)\n", op_names[i], 1e3 * op_time[i] / steps,
                       100 * op_time[i] / tot, op_calls[i] / steps);
    }
    free(tok); free(tgt); free(pos_bt); free(dt); free(sorted);
    adamw_free(&opt);
    llama_free(&m);
    return 0;
}
