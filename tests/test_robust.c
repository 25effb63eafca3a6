/*
 * test_robust.c: what a hostile or damaged input must not do (issue 16).
 *
 *   - NaN and Inf go through every CPU op without undefined behaviour and
 *     come out non-finite where they went in (so the trainer's NaN/Inf stop
 *     fires), while rows that never saw them stay finite; exp's limits
 *     (e^-Inf = 0, e^+Inf = +Inf) are checked through SwiGLU and attention.
 *   - err_quote / err_set make every message one printable line, whatever
 *     the quoted part holds (newlines, NUL, ANSI escapes, invalid UTF-8).
 *   - a config file whose section header lost its ']' gives a one-line error.
 *   - every model loader (HF safetensors, HDF5 checkpoint, GGUF, PEFT
 *     adapter) refuses NaN/Inf weights with one line naming the file, the
 *     tensor and the count, unless --allow-nonfinite (then a warning).
 * Run under `make SAN=1 test` too: UBSan reports what a plain build hides.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../model/base.h"
#include "../model/lora.h"
#include "../model/ops.h"
#include "../model/params.h"
#include "../train/io/ckpt.h"
#include "../train/proc/cli.h"
#include "../train/io/hf.h"
#include "../train/io/iofile.h"
#include "../train/io/source.h"
#include "../train/io/gguf.h"
#include "../train/io/peft.h"
#include "gradcheck.h"
#include "test.h"
#include "tests.h"

static const Ops *O = &ops_cpu;

#define NEW(n) ((float *)xcalloc((n), sizeof(float)))

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}
static int any_nonfinite(const float *x, size_t n) { return !all_finite(x, n); }
static int all_nan(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) return 0;
    return 1;
}

// ----------------------------------------------------------------------------
// non-finite values through the ops

void robust_ops_elementwise(void) {
    /* SwiGLU: silu(g) * u = g / (1 + e^-g) * u; exp's limits show here */
    const float g[] = {NAN, INFINITY, -INFINITY, 100.0f, -100.0f, 1.0f, 88.9f, -88.9f};
    const float want[] = {NAN, INFINITY, NAN, 100.0f, 0.0f, 0.7310586f, 88.9f, 0.0f};
    size_t n = sizeof g / sizeof g[0];
    float u[8], out[8], dout[8], dg[8], du[8];
    for (size_t i = 0; i < n; i++) u[i] = 1.0f, dout[i] = 1.0f;
    O->swiglu_fwd(NULL, out, g, u, n);
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i])) EXPECT(isnan(out[i]), "silu(%g) = %g, expected NaN", g[i], out[i]);
        else EXPECT(fabsf(out[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])) || out[i] == want[i],
                    "silu(%g) = %g, expected %g", g[i], out[i], want[i]);
    }
    O->swiglu_bwd(NULL, dg, du, dout, g, u, n);
    EXPECT(isnan(dg[0]) && isnan(du[0]), "swiglu_bwd of NaN: dg %g du %g", dg[0], du[0]);
    EXPECT(all_finite(dg + 3, 5) && all_finite(du + 3, 5), "swiglu_bwd of finite g is finite");

    /* add, scale, sumsq, adamw: NaN in, NaN out; Inf in, Inf out */
    float y[4] = {1, 2, 3, 4}, x[4] = {NAN, INFINITY, 1, 1};
    O->add(NULL, y, x, 4);
    EXPECT(isnan(y[0]) && y[1] == INFINITY && y[2] == 4 && y[3] == 5, "add: %g %g %g %g", y[0], y[1], y[2], y[3]);
    O->scale(NULL, y, 2.0f, 4);
    EXPECT(isnan(y[0]) && y[1] == INFINITY && y[2] == 8, "scale: %g %g %g", y[0], y[1], y[2]);
    EXPECT(isnan(O->sumsq(NULL, x, 4)), "sumsq with a NaN is NaN");
    EXPECT(isinf(O->sumsq(NULL, x + 1, 3)), "sumsq with an Inf is Inf");
    float p[4] = {1, 1, 1, 1}, m[4] = {0}, v[4] = {0};
    O->adamw(NULL, p, x, m, v, 4, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 1.0f);
    EXPECT(isnan(p[0]) && all_finite(p + 2, 2), "adamw: p %g %g %g", p[0], p[2], p[3]);

    /* embedding: a NaN row reaches exactly the tokens that use it */
    float emb[3 * 4] = {0}, eo[2 * 4];
    emb[4] = NAN;
    int tok[2] = {1, 2};
    O->embed_fwd(NULL, eo, tok, emb, 2, 4);
    EXPECT(isnan(eo[0]) && all_finite(eo + 4, 4), "embed_fwd: NaN row");

    /* RMSNorm: a non-finite row gives a non-finite row, the others finite */
    const int N = 3, D = 16;
    float *xr = NEW(N * D), *w = NEW(D), *o = NEW(N * D), *rstd = NEW(N), *dx = NEW(N * D), *dw = NEW(D);
    for (int i = 0; i < N * D; i++) xr[i] = 0.1f * (float)(i % 7) - 0.3f;
    for (int i = 0; i < D; i++) w[i] = 1.0f;
    xr[3] = NAN;
    xr[D + 5] = INFINITY;
    O->rmsnorm_fwd(NULL, o, rstd, xr, w, N, D, 1e-5f);
    EXPECT(all_nan(o, D), "rmsnorm of a NaN row is NaN");
    EXPECT(any_nonfinite(o + D, D), "rmsnorm of an Inf row is not finite");
    EXPECT(all_finite(o + 2 * D, D), "rmsnorm of a finite row is finite");
    O->rmsnorm_bwd(NULL, dx, dw, o, xr, w, rstd, N, D);
    EXPECT(any_nonfinite(dx, D) && any_nonfinite(dw, D), "rmsnorm_bwd of a NaN row");

    /* RoPE keeps a NaN in its pair */
    float cs[4 * 2], sn[4 * 2], rx[4];
    for (int i = 0; i < 8; i++) cs[i] = cosf(0.1f * i), sn[i] = sinf(0.1f * i);
    int pos[1] = {3};
    rx[0] = NAN, rx[1] = 1, rx[2] = 1, rx[3] = 1;
    O->rope_fwd(NULL, rx, pos, cs, sn, 1, 1, 4);
    EXPECT(isnan(rx[0]) && isnan(rx[2]) && isfinite(rx[1]) && isfinite(rx[3]), "rope: NaN stays in its pair");

    /* matmul: through BLAS */
    float mo[3 * 5], *mw = NEW(5 * D);
    for (int i = 0; i < 5 * D; i++) mw[i] = 0.01f * (float)i;
    O->matmul_fwd(NULL, mo, xr, mw, N, D, 5);
    EXPECT(all_nan(mo, 5) && any_nonfinite(mo + 5, 5) && all_finite(mo + 10, 5), "matmul rows");
    free(xr); free(w); free(o); free(rstd); free(dx); free(dw); free(mw);
}

/* Attention, prefill and decode, on both kernel sets: a NaN key at t = 0
 * poisons every query (all see it); a NaN query at t poisons only row t. */
static void attn_nonfinite(const char *kern) {
    const int T = 21, H = 4, KV = 2, HS = 8;
    size_t nq = (size_t)T * H * HS, nk = (size_t)T * KV * HS;
    float *q = NEW(nq), *k = NEW(nk), *v = NEW(nk), *out = NEW(nq), *lse = NEW(H * T);
    float *dq = NEW(nq), *dk = NEW(nk), *dv = NEW(nk), *dout = NEW(nq);
    float *scratch = NEW(O->scratch_floats(NULL, 1, T, H, HS, 2, 2));
    int *pos = xmalloc(T * sizeof(int));
    Rng r;
    rng_seed(&r, 16);
    for (int t = 0; t < T; t++) pos[t] = t;
    int *sp = xmalloc((size_t)T * 3 * sizeof(int));
    LC_ASSERT(attn_spans(pos, T, sp) < 0);
    for (int round = 0; round < 3; round++) {
        gc_randn(&r, q, nq, 1); gc_randn(&r, k, nk, 1); gc_randn(&r, v, nk, 1); gc_randn(&r, dout, nq, 1);
        int tq = 7;
        if (round == 0) q[(size_t)tq * H * HS] = NAN;        /* head 0 of query 7 */
        if (round == 1) q[(size_t)tq * H * HS] = INFINITY;   /* its scores +-Inf */
        if (round == 2) k[0] = NAN;                          /* key 0, every query */
        O->attn_fwd(NULL, out, lse, q, k, v, sp, scratch, 1, T, H, KV, HS);
        if (round < 2) {
            EXPECT(any_nonfinite(out + (size_t)tq * H * HS, HS), "%s round %d: query %d finite", kern, round, tq);
            EXPECT(all_finite(out, (size_t)tq * H * HS), "%s round %d: earlier queries not finite", kern, round);
        } else
            EXPECT(all_nan(out, HS), "%s: a NaN key 0 must reach query 0's head 0", kern);
        O->attn_bwd(NULL, dq, dk, dv, dout, out, lse, q, k, v, sp, scratch, 1, T, H, KV, HS);
        EXPECT(any_nonfinite(dq, nq) && any_nonfinite(dk, nk), "%s round %d: backward finite", kern, round);
        /* decode: the path the fuzz run found (cpu_attn_decode -> vec_exp_sum) */
        float dec[4 * 8];
        O->attn_decode(NULL, dec, q + (size_t)tq * H * HS, k, v, scratch, tq + 1, H, KV, HS);
        EXPECT(any_nonfinite(dec, HS), "%s round %d: decode finite", kern, round);
    }
    /* a -Inf score (a query of -Inf against positive keys) has weight 0 */
    gc_randn(&r, q, nq, 1);
    for (size_t i = 0; i < nk; i++) k[i] = 1.0f;
    q[0] = -INFINITY;
    O->attn_decode(NULL, out, q, k, v, scratch, 1, H, KV, HS);
    EXPECT(any_nonfinite(out, HS), "%s: decode with every score -Inf is NaN (0/0)", kern);
    EXPECT(all_finite(out + HS, (size_t)(H - 1) * HS), "%s: other heads finite", kern);
    free(q); free(k); free(v); free(out); free(lse); free(dq); free(dk); free(dv); free(dout);
    free(scratch); free(pos); free(sp);
}

void robust_ops_attn(void) {
    attn_nonfinite("native");
    setenv("LLAMAC_ATTN_PORTABLE", "1", 1);
    attn_nonfinite("portable");
    unsetenv("LLAMAC_ATTN_PORTABLE");
}

void robust_ops_lmhead_lora(void) {
    const int N = 3, D = 8, V = 11, R = 2;
    float *x = NEW(N * D), *w = NEW(V * D), *dx = NEW(N * D), *dw = NEW(V * D), rl[3];
    float *scratch = NEW(O->scratch_floats(NULL, 1, N, 1, 1, V, D));
    Rng r;
    rng_seed(&r, 17);
    gc_randn(&r, x, N * D, 1); gc_randn(&r, w, V * D, 1);
    int tg[3] = {1, 2, 3};
    x[0] = NAN;
    x[D] = INFINITY;
    double loss = O->lmhead_ce(NULL, dx, dw, rl, x, w, tg, scratch, N, D, V, 1.0f);
    EXPECT(isnan(loss), "lmhead_ce with a NaN row: loss %g", loss);
    EXPECT(isnan(rl[0]) && !isfinite(rl[1]) && isfinite(rl[2]), "row losses %g %g %g", rl[0], rl[1], rl[2]);
    EXPECT(any_nonfinite(dx, D) && all_finite(dx + 2 * D, D), "lmhead dx rows");
    float rm[3], rs[3] = {1, 1, 1};
    loss = O->lmhead_rows(NULL, dx, dw, rl, rm, x, w, tg, rs, scratch, N, D, V);
    EXPECT(isnan(loss) && isnan(rl[0]) && isfinite(rl[2]) && isnan(rm[0]) && isfinite(rm[2]),
           "lmhead_rows: loss %g rows %g %g means %g %g", loss, rl[0], rl[2], rm[0], rm[2]);
    EXPECT(any_nonfinite(dx, D) && all_finite(dx + 2 * D, D), "lmhead_rows dx rows");
    /* LoRA side path */
    float *A = NEW(R * D), *B = NEW(V * R), *y = NEW(N * V), *h = NEW(N * R);
    float *work = NEW(ops_lora_work_floats(N, D, V, R, 0.0f) + 1);
    gc_randn(&r, A, R * D, 1); gc_randn(&r, B, V * R, 1);
    O->lora_fwd(NULL, y, h, x, A, B, work, N, D, V, R, 1.0f, 0.0f, 1, 0, 0);
    EXPECT(any_nonfinite(y, V) && all_finite(y + 2 * V, V), "lora_fwd rows");
    free(x); free(w); free(dx); free(dw); free(scratch); free(A); free(B); free(y); free(h); free(work);
}

// ----------------------------------------------------------------------------
// one-line messages

static int one_printable_line(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 0;
    return 1;
}

void robust_err_quote(void) {
    char q[ERR_QUOTE_CAP];
    EXPECT(strcmp(err_quote(q, sizeof q, "a\nb\r\tc", 6), "a\\nb\\r\\tc") == 0, "newlines: %s", q);
    EXPECT(strcmp(err_quote(q, sizeof q, "a\0b", 3), "a\\x00b") == 0, "NUL: %s", q);
    EXPECT(strcmp(err_quote(q, sizeof q, "\x1b[31mred", 8), "\\x1b[31mred") == 0, "ANSI: %s", q);
    EXPECT(strcmp(err_quote(q, sizeof q, "\xc2\x9b" "2J", 4), "\\xc2\\x9b2J") == 0, "C1 CSI: %s", q);
    EXPECT(strcmp(err_quote(q, sizeof q, "x\xff\xc3(\xed\xa0\x80", 7), "x\\xff\\xc3(\\xed\\xa0\\x80") == 0,
           "invalid UTF-8: %s", q);
    EXPECT(strcmp(err_quote(q, sizeof q, "caf\xc3\xa9 \xe2\x82\xac \\x", 12), "caf\xc3\xa9 \xe2\x82\xac \\\\x") == 0,
           "UTF-8 kept, backslash doubled: %s", q);
    char big[1000];
    memset(big, '\n', sizeof big);
    err_quote(q, sizeof q, big, sizeof big);
    EXPECT(strlen(q) < sizeof q && strcmp(q + strlen(q) - 3, "...") == 0, "cut: %s", q);
    /* err_set escapes whatever reaches it, and cuts at Err's size */
    Err e;
    err_set(&e, "f.ini: bad %s", "x\ny\x1b\xff");
    EXPECT(strcmp(e.msg, "f.ini: bad x\\ny\\x1b\\xff") == 0, "err_set: %s", e.msg);
    char longer[600];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    longer[100] = '\n';
    err_set(&e, "%s", longer);
    EXPECT(one_printable_line(e.msg) && strlen(e.msg) < sizeof e.msg, "long err_set is one line");
}

void robust_ini_section(void) {
    char path[] = "/tmp/llamac_robust_XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0, "mkstemp");
    if (fd < 0) return;
    const char *text = "steps = 3\n[mode king\nlr = 1e-3\n[model]\ndim = 8\n";
    EXPECT(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write");
    close(fd);
    CliArgs a;
    Err e = {{0}};
    EXPECT(cli_config(path, &a, &e) != 0, "an unclosed section header is an error");
    EXPECT(one_printable_line(e.msg) && strstr(e.msg, "line 2"), "one line naming line 2: %s", e.msg);
    /* a header holding an escape sequence comes back quoted */
    FILE *f = fopen(path, "wb");
    const char *t2 = "[x\x1b[2Jy]\nsteps = 3\n";
    EXPECT(f && fwrite(t2, 1, strlen(t2), f) == strlen(t2), "write");
    if (f) fclose(f);
    EXPECT(cli_config(path, &a, &e) != 0, "unknown section");
    EXPECT(strstr(e.msg, "[x\\x1b[2Jy]") != NULL, "quoted section: %s", e.msg);
    /* through the binary: exit 1, one line on stderr */
    int rc = test_llamac("pretrain %s --train /nonexistent", path);
    const char *nl = strchr(test_err, '\n');
    EXPECT(rc == 1 && nl && nl[1] == '\0' && strstr(test_err, "\\x1b"), "rc %d: %s", rc, test_err);
    unlink(path);
}

// ----------------------------------------------------------------------------
// non-finite weights refused by every loader

#define RDIR "build/trobust"

static int last_one_line(const char *s) {
    const char *nl = strchr(s, '\n');
    return nl && nl[1] == '\0';
}

void robust_nonfinite_loaders(void) {
    mkdir(RDIR, 0755);
    LlamaConfig c = {.dim = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .hidden = 24, .vocab = 11,
                     .max_seq = 32, .norm_eps = 1e-5f, .rope_theta = 10000.0f};
    snprintf(c.name, sizeof c.name, "nan");
    ParamTable t;
    Err e = {{0}};
    LC_ASSERT(params_build(&c, &t, &e) == 0);
    float *p = xalloc_aligned(t.size * sizeof(float)), *q = xalloc_aligned(t.size * sizeof(float));
    params_init(&t, p, c.n_layers, 5);
    int bad = params_find(&t, "model.layers.1.mlp.up_proj.weight");
    LC_ASSERT(bad >= 0);
    p[t.p[bad].offset + 3] = NAN;
    p[t.p[bad].offset + 7] = -INFINITY;
    char want[128];
    snprintf(want, sizeof want, "holds 2 non-finite values (NaN or Inf) of %zu", t.p[bad].numel);
    const char *paths[3] = {RDIR "/hf", RDIR "/nan.h5", RDIR "/nan.gguf"};
    EXPECT(hf_save(paths[0], &c, &t, p, -1, -1, 1, &e) == 0, "hf save: %s", e.msg);
    EXPECT(ckpt_save(paths[1], &c, &t, p, 0, NULL, NULL, &e) == 0, "ckpt save: %s", e.msg);
    EXPECT(gguf_save_llama(paths[2], &c, &t, p, "nan", NULL, &e) == 0, "gguf save: %s", e.msg);
    const char *names[3] = {"model.layers.1.mlp.up_proj.weight", "/model/model.layers.1.mlp.up_proj.weight",
                            "blk.1.ffn_up.weight"};
    for (int i = 0; i < 3; i++) {
        e.msg[0] = 0;
        ModelSource src;
        EXPECT(source_open(&src, paths[i], &e) == 0, "%s: %s", paths[i], e.msg);
        EXPECT(source_load(&src, &t, q, &e) == -1, "%s: loaded non-finite weights", paths[i]);
        EXPECT(strstr(e.msg, paths[i]) && strstr(e.msg, names[i]) && strstr(e.msg, want), "%s: %s", paths[i],
               e.msg);
        iofile_allow_nonfinite(1);
        EXPECT(source_load(&src, &t, q, &e) == 0, "%s with allow: %s", paths[i], e.msg);
        iofile_allow_nonfinite(0);
        EXPECT(isnan(q[t.p[bad].offset + 3]), "%s: the NaN is loaded as it is", paths[i]);
    }
    /* a PEFT adapter */
    LoraConfig lc;
    ParamTable lt;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 2, lc.alpha = 4;
    LC_ASSERT(lora_build(&lc, &c, &lt, &e) == 0);
    float *lp = xalloc_aligned(lt.size * sizeof(float));
    lp[lt.p[1].offset] = INFINITY;
    EXPECT(peft_save(RDIR "/adapter", &lc, &lt, lp, "base", 1, &e) == 0, "peft save: %s", e.msg);
    PeftAdapter a;
    EXPECT(peft_load(RDIR "/adapter", &c, &a, &e) == -1 && strstr(e.msg, "adapter_model.safetensors: tensor") &&
               strstr(e.msg, lt.p[1].name) && strstr(e.msg, "holds 1 non-finite"),
           "adapter: %s", e.msg);
    iofile_allow_nonfinite(1);
    EXPECT(peft_load(RDIR "/adapter", &c, &a, &e) == 0, "adapter with allow: %s", e.msg);
    iofile_allow_nonfinite(0);
    peft_free(&a);
    /* through the binary: one line and exit 1; --allow-nonfinite warns and runs */
    int rc = test_llamac("logits --model " RDIR "/hf --tokens 1,2 --out " RDIR "/logits.bin");
    EXPECT(rc == 1 && last_one_line(test_err) && strstr(test_err, names[0]) && strstr(test_err, want),
           "rc %d: %s", rc, test_err);
    rc = test_llamac("logits --model " RDIR "/hf --tokens 1,2 --out " RDIR "/logits.bin --allow-nonfinite");
    EXPECT(rc == 0 && strstr(test_err, "warning") && strstr(test_err, "--allow-nonfinite"), "rc %d: %s", rc,
           test_err);
    free(p); free(q); free(lp);
    params_free(&t);
    params_free(&lt);
}
