/*
 * test_lora.c: the LoRA adapter contract (model/lora.h): PEFT names and
 * order of the adapter table, flag parsing and validation messages, scale,
 * initialisation statistics, merge against a direct double computation and
 * the dropout hash's keep rate.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/llama.h"
#include "../model/lora.h"
#include "test.h"
#include "tests.h"

/* GQA, odd FFN width: every module has its own (Din, Dout). */
static LlamaConfig small_config(void) {
    LlamaConfig c;
    config_preset("tiny", &c, NULL);
    c.dim = 24; c.n_layers = 3; c.n_heads = 4; c.n_kv_heads = 2; c.hidden = 37; c.vocab = 29;
    return c;
}

void lora_table(void) {
    LlamaConfig c = small_config();
    LoraConfig lc;
    ParamTable t;
    Err e;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 4;
    LC_ASSERT(lora_build(&lc, &c, &t, &e) == 0);
    EXPECT(t.n == 3 * 7 * 2, "all-linear over 3 layers: %d tensors", t.n);
    EXPECT(strcmp(t.p[0].name, "model.layers.0.self_attn.q_proj.lora_A.weight") == 0, "%s", t.p[0].name);
    EXPECT(strcmp(t.p[1].name, "model.layers.0.self_attn.q_proj.lora_B.weight") == 0, "%s", t.p[1].name);
    EXPECT(strcmp(t.p[13].name, "model.layers.0.mlp.down_proj.lora_B.weight") == 0, "%s", t.p[13].name);
    EXPECT(strcmp(t.p[14].name, "model.layers.1.self_attn.q_proj.lora_A.weight") == 0, "%s", t.p[14].name);
    /* k_proj: A (r, D), B (KV*HS, r); down_proj: A (r, F), B (D, r) */
    EXPECT(t.p[2].shape[0] == 4 && t.p[2].shape[1] == 24, "k A shape");
    EXPECT(t.p[3].shape[0] == 12 && t.p[3].shape[1] == 4, "k B shape %lld", (long long)t.p[3].shape[0]);
    EXPECT(t.p[12].shape[0] == 4 && t.p[12].shape[1] == 37, "down A shape");
    EXPECT(t.p[13].shape[0] == 24 && t.p[13].shape[1] == 4, "down B shape");
    for (int i = 0; i < t.n; i++) {
        EXPECT(t.p[i].decay == 1, "%s: PEFT decays every trainable tensor", t.p[i].name);
        EXPECT(t.p[i].offset % PARAMS_ALIGN == 0, "%s misaligned", t.p[i].name);
    }
    float *buf = xcalloc(t.size, sizeof(float));
    LoraWeights w;
    lora_point(&lc, &c, &t, buf, &w);
    EXPECT(w.layer[2][LORA_UP].B == buf + t.p[2 * 14 + 11].offset, "point: layer 2 up B");
    params_free(&t);
    free(buf);

    /* q, v on layers 0 and 2 only */
    Err e2;
    LC_ASSERT(lora_parse_targets("q_proj,v_proj", &lc.targets, &e2) == 0);
    LC_ASSERT(lora_parse_layers("0,2", &lc, c.n_layers, &e2) == 0);
    LC_ASSERT(lora_build(&lc, &c, &t, &e) == 0);
    EXPECT(t.n == 8, "q,v on 2 layers: %d tensors", t.n);
    EXPECT(strcmp(t.p[4].name, "model.layers.2.self_attn.q_proj.lora_A.weight") == 0, "%s", t.p[4].name);
    EXPECT(strcmp(t.p[7].name, "model.layers.2.self_attn.v_proj.lora_B.weight") == 0, "%s", t.p[7].name);
    buf = xcalloc(t.size, sizeof(float));
    lora_point(&lc, &c, &t, buf, &w);
    EXPECT(w.layer[1][LORA_Q].A == NULL && w.layer[0][LORA_K].A == NULL, "unadapted pairs are NULL");
    params_free(&t);
    free(buf);
    EXPECT(strcmp(lora_module_name(LORA_GATE), "gate_proj") == 0, "module name");
}

void lora_parse(void) {
    unsigned t;
    Err e;
    LC_ASSERT(lora_parse_targets("q_proj, k_proj ,v_proj,o_proj", &t, &e) == 0);
    EXPECT(t == 0xfu, "q,k,v,o: 0x%x", t);
    LC_ASSERT(lora_parse_targets("all-linear", &t, &e) == 0);
    EXPECT(t == LORA_ALL_LINEAR, "all-linear: 0x%x", t);
    LC_ASSERT(lora_parse_targets("q,v,down", &t, &e) == 0);
    EXPECT(t == (1u << LORA_Q | 1u << LORA_V | 1u << LORA_DOWN), "short names: 0x%x", t);
    EXPECT(lora_parse_targets("q_proj,lm_head", &t, &e) < 0 &&
           strncmp(e.msg, "--lora-targets: unknown module 'lm_head'", 40) == 0, "%s", e.msg);
    EXPECT(lora_parse_targets("", &t, &e) < 0 && strstr(e.msg, "--lora-targets:"), "%s", e.msg);
    EXPECT(lora_parse_targets("q_proj,,v_proj", &t, &e) < 0 && strstr(e.msg, "empty"), "%s", e.msg);

    LoraConfig lc;
    lora_config_default(&lc, 1);
    LC_ASSERT(lora_parse_layers("0-2, 5", &lc, 8, &e) == 0);
    EXPECT(!lc.all_layers && lc.layers[0] && lc.layers[2] && !lc.layers[3] && lc.layers[5], "0-2,5");
    EXPECT(lora_parse_layers("1,8", &lc, 8, &e) < 0 && strstr(e.msg, "--lora-layers: layer 8 out of range"),
           "%s", e.msg);
    EXPECT(lora_parse_layers("x", &lc, 8, &e) < 0 && strstr(e.msg, "--lora-layers:"), "%s", e.msg);
    EXPECT(lora_parse_layers("3-1", &lc, 8, &e) < 0 && strstr(e.msg, "--lora-layers:"), "%s", e.msg);
    EXPECT(lora_parse_layers("-1", &lc, 8, &e) < 0 && strstr(e.msg, "--lora-layers:"), "%s", e.msg);
    EXPECT(lora_parse_layers("", &lc, 8, &e) < 0 && strstr(e.msg, "--lora-layers:"), "%s", e.msg);
}

void lora_validate_errors(void) {
    LlamaConfig c = small_config();
    LoraConfig ok, lc;
    Err e;
    lora_config_default(&ok, LORA_ALL_LINEAR);
    EXPECT(lora_validate(&ok, &c, &e) == 0, "defaults: %s", e.msg);
    static const struct { const char *flag; int field; double v; } bad[] = {
        {"--lora-r:", 0, 0}, {"--lora-r:", 0, -3}, {"--lora-r:", 0, 13} /* > KV*HS = 12 */,
        {"--lora-alpha:", 1, 0}, {"--lora-alpha:", 1, -1}, {"--lora-alpha:", 1, NAN},
        {"--lora-dropout:", 2, -0.1}, {"--lora-dropout:", 2, 1.0}, {"--lora-targets:", 3, 0},
        {"--lora-targets:", 3, 1u << LORA_NMOD}, {"--lora-layers:", 4, 3}, {"--lora-layers:", 4, -1},
        {"--lora-init:", 5, 7},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lc = ok;
        switch (bad[i].field) {
        case 0: lc.r = (int)bad[i].v; break;
        case 1: lc.alpha = (float)bad[i].v; break;
        case 2: lc.dropout = (float)bad[i].v; break;
        case 3: lc.targets = (unsigned)bad[i].v; break;
        case 4:
            lc.all_layers = 0;
            if (bad[i].v >= 0) lc.layers[(int)bad[i].v] = 1; /* else: none selected */
            break;
        default: lc.init = (int)bad[i].v; break;
        }
        memset(e.msg, 0, sizeof e.msg);
        EXPECT(lora_validate(&lc, &c, &e) < 0 && strncmp(e.msg, bad[i].flag, strlen(bad[i].flag)) == 0 &&
               !strchr(e.msg, '\n'), "case %zu: '%s'", i, e.msg);
    }
    /* r = 12 fits k/v (12 wide) and the build refuses what validate refuses */
    lc = ok;
    lc.r = 12;
    EXPECT(lora_validate(&lc, &c, &e) == 0, "r = 12: %s", e.msg);
    ParamTable t;
    lc.r = 13;
    EXPECT(lora_build(&lc, &c, &t, &e) < 0 && strstr(e.msg, "k_proj"), "build: %s", e.msg);
    /* q only: 13 fits q (24 x 24) */
    lc.targets = 1u << LORA_Q;
    EXPECT(lora_validate(&lc, &c, &e) == 0, "r = 13 on q: %s", e.msg);
}

void lora_scale_values(void) {
    LoraConfig lc;
    lora_config_default(&lc, 1);
    lc.r = 8; lc.alpha = 16;
    EXPECT(lora_scale(&lc) == 2.0f, "alpha/r");
    lc.r = 16; lc.rslora = 1;
    EXPECT(lora_scale(&lc) == 4.0f, "alpha/sqrt(r)");
    lc.r = 7; lc.alpha = 5;
    EXPECT(lora_scale(&lc) == (float)(5.0 / sqrt(7.0)), "rsLoRA r = 7");
}

void lora_init_stats(void) {
    LlamaConfig c = small_config();
    c.dim = 64; c.n_heads = 4; c.n_kv_heads = 4; c.hidden = 256;
    LoraConfig lc;
    ParamTable t;
    Err e;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 16;
    LC_ASSERT(lora_build(&lc, &c, &t, &e) == 0);
    float *a = xmalloc(t.size * sizeof(float)), *b = xmalloc(t.size * sizeof(float));
    for (int init = 0; init < 2; init++) {
        lc.init = init;
        for (size_t i = 0; i < t.size; i++) a[i] = 5.0f;
        lora_init_weights(&lc, &t, a, 11);
        lora_init_weights(&lc, &t, b, 11);
        EXPECT(memcmp(a, b, t.size * sizeof(float)) == 0, "init %d not deterministic", init);
        for (int i = 0; i < t.n; i += 2) {
            const ParamInfo *pa = &t.p[i], *pb = &t.p[i + 1];
            double s1 = 0, s2 = 0, mx = 0;
            for (size_t j = 0; j < pa->numel; j++) {
                double x = a[pa->offset + j];
                s1 += x, s2 += x * x, mx = fmax(mx, fabs(x));
            }
            double n = (double)pa->numel, mean = s1 / n, var = s2 / n - mean * mean, din = (double)pa->shape[1];
            /* U(-b, b), b = 1/sqrt(Din): variance b^2/3; N(0, 1/r^2) */
            double want = init ? 1.0 / (16.0 * 16.0) : 1.0 / (3.0 * din);
            EXPECT(fabs(var / want - 1) < 0.1, "%s init %d: variance %g, want %g", pa->name, init, var, want);
            EXPECT(fabs(mean) < 4 * sqrt(want / n), "%s: mean %g", pa->name, mean);
            if (!init) EXPECT(mx <= 1 / sqrt(din), "%s: |A| %g above 1/sqrt(Din)", pa->name, mx);
            for (size_t j = 0; j < pb->numel; j++) EXPECT(a[pb->offset + j] == 0, "%s not zero", pb->name);
        }
    }
    free(a); free(b);
    params_free(&t);
}

void lora_merge_values(void) {
    LlamaConfig c = small_config();
    LoraConfig lc;
    ParamTable bt, lt;
    Err e;
    Rng r;
    rng_seed(&r, 5);
    LC_ASSERT(params_build(&c, &bt, &e) == 0);
    lora_config_default(&lc, 0);
    LC_ASSERT(lora_parse_targets("q_proj,o_proj,down_proj", &lc.targets, &e) == 0);
    LC_ASSERT(lora_parse_layers("1-2", &lc, c.n_layers, &e) == 0);
    lc.r = 3; lc.alpha = 7; lc.rslora = 1;
    LC_ASSERT(lora_build(&lc, &c, &lt, &e) == 0);
    float *w = xmalloc(bt.size * sizeof(float)), *w0 = xmalloc(bt.size * sizeof(float));
    float *a = xmalloc(lt.size * sizeof(float));
    for (size_t i = 0; i < bt.size; i++) w0[i] = w[i] = rng_normal(&r);
    for (size_t i = 0; i < lt.size; i++) a[i] = rng_normal(&r);
    lora_merge(&lc, &c, &bt, w, &lt, a, 1);
    LlamaWeights bw, bw0;
    LoraWeights aw;
    params_point(&c, &bt, w, sizeof(float), &bw);
    params_point(&c, &bt, w0, sizeof(float), &bw0);
    lora_point(&lc, &c, &lt, a, &aw);
    double s = 7 / sqrt(3.0), worst = 0;
    for (int l = 0; l < c.n_layers; l++)
        for (int m = 0; m < LORA_NMOD; m++) {
            float *const ws[LORA_NMOD] = {bw.layer[l].wq, bw.layer[l].wk, bw.layer[l].wv, bw.layer[l].wo,
                                          bw.layer[l].wg, bw.layer[l].wu, bw.layer[l].wd};
            float *const w0s[LORA_NMOD] = {bw0.layer[l].wq, bw0.layer[l].wk, bw0.layer[l].wv, bw0.layer[l].wo,
                                           bw0.layer[l].wg, bw0.layer[l].wu, bw0.layer[l].wd};
            int din, dout;
            lora_module_dims(&c, m, &din, &dout);
            for (int o = 0; o < dout; o++)
                for (int i = 0; i < din; i++) {
                    double d = 0;
                    if (lora_adapted(&lc, l, m))
                        for (int k = 0; k < 3; k++)
                            d += (double)aw.layer[l][m].B[o * 3 + k] * aw.layer[l][m].A[k * din + i];
                    double want = w0s[m][o * din + i] + s * d;
                    worst = fmax(worst, fabs(ws[m][o * din + i] - want) / (1 + fabs(want)));
                }
        }
    EXPECT(worst < 1e-6, "merged weights differ from W + s B A by %g", worst);
    EXPECT(bw.layer[0].wq[5] == bw0.layer[0].wq[5], "layer 0 untouched");
    lora_merge(&lc, &c, &bt, w, &lt, a, -1);
    double back = 0;
    for (size_t i = 0; i < bt.size; i++) back = fmax(back, fabs(w[i] - w0[i]));
    EXPECT(back < 1e-5, "merge then unmerge leaves %g", back);
    free(w); free(w0); free(a);
    params_free(&bt); params_free(&lt);
}

void lora_keep_rate(void) {
    for (int k = 0; k < 3; k++) {
        float p = k == 0 ? 0.0f : k == 1 ? 0.1f : 0.5f;
        long kept = 0, n = 200000, same = 0;
        for (long i = 0; i < n; i++) {
            int a = lora_keep(1234, 3, 2, (uint64_t)i, p);
            kept += a;
            same += a == lora_keep(1234, 3, 2, (uint64_t)i, p);
        }
        EXPECT(same == n, "lora_keep is not a function of its arguments");
        double rate = (double)kept / n;
        EXPECT(fabs(rate - (1 - p)) < 0.005, "p = %g: keep rate %g", p, rate);
    }
    /* layer, module and seed change the mask */
    int diff_l = 0, diff_m = 0, diff_s = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        int a = lora_keep(1, 0, 0, i, 0.5f);
        diff_l += a != lora_keep(1, 1, 0, i, 0.5f);
        diff_m += a != lora_keep(1, 0, 1, i, 0.5f);
        diff_s += a != lora_keep(2, 0, 0, i, 0.5f);
    }
    EXPECT(diff_l > 400 && diff_m > 400 && diff_s > 400, "masks correlate: %d %d %d", diff_l, diff_m, diff_s);
}

/* inspect's LoRA step figure (the first LoRA line: the flags' recompute
 * setting) against the peak RSS of `llamac bench` running that step, within
 * 10%: the buffers are all allocated and zeroed at start-up, so RSS is them
 * plus the process's own ~15 MiB (binary, libraries, OpenBLAS). Two shapes:
 * q,k,v,o without recomputation, all-linear with it. */
void lora_memory_rss(void) {
#ifdef __SANITIZE_ADDRESS__
    /* ASan's shadow memory and redzones are part of RSS there (measured +8..10%) */
    printf("    peak RSS comparison skipped: AddressSanitizer build\n");
    return;
#endif
    static const char *shapes[] = {
        "--batch 4 --seq 256 --lora-r 16",
        "--batch 4 --seq 512 --lora-r 8 --lora-targets all-linear --recompute",
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int rc = test_llamac("inspect 15m %s", shapes[i]);
        const char *line = strstr(test_out, "  LoRA r=");
        const char *eq = line ? strstr(line, "): ") : NULL;
        double gib = 0;
        EXPECT(rc == 0 && eq && sscanf(eq, "): %lf GiB", &gib) == 1, "inspect %s: %s%s", shapes[i], test_out, test_err);
        rc = test_llamac("bench --preset 15m --steps 1 --warmup-steps 0 --json %s", shapes[i]);
        const char *p = strstr(test_out, "\"peak_rss_mb\":"), *q = strstr(test_out, "\"est_mb\":");
        double rss = 0, est = 0;
        EXPECT(rc == 0 && p && q && sscanf(p, "\"peak_rss_mb\":%lf", &rss) == 1 && sscanf(q, "\"est_mb\":%lf", &est) == 1,
               "bench %s: %s%s", shapes[i], test_out, test_err);
        double mib = gib * 1024;
        printf("    %s: inspect %.0f MiB, bench estimate %.0f MiB, peak RSS %.0f MiB (%+.1f%%)\n", shapes[i], mib, est,
               rss, 100 * (rss - mib) / mib);
        EXPECT(fabs(est - mib) < 1.5, "bench's estimate %.1f MiB differs from inspect's %.1f MiB", est, mib);
        EXPECT(fabs(rss - mib) <= 0.1 * mib, "%s: peak RSS %.0f MiB vs inspect's %.0f MiB", shapes[i], rss, mib);
    }
}

/* A model with adapters and the same model with the adapters merged into
 * its weights (lora_merge) give the same loss; unmerged, the base's. */
void lora_merge_model(void) {
    LlamaConfig c = small_config();
    c.max_seq = 32;
    LoraConfig lc;
    Err e;
    lora_config_default(&lc, LORA_ALL_LINEAR);
    lc.r = 4; lc.alpha = 6; lc.rslora = 1;
    LC_ASSERT(lora_parse_layers("0,2", &lc, c.n_layers, &e) == 0);
    LlamaOpts o = {LLAMA_GRADS_NONE, &lc, 0, NULL, 0};
    Llama a, b;
    int B = 2, T = 16, tok[32], tgt[32];
    LC_ASSERT(llama_init_opts(&a, &c, &ops_cpu, NULL, B, T, &o, &e) == 0);
    LC_ASSERT(llama_init(&b, &c, &ops_cpu, NULL, B, T, 0, &e) == 0);
    params_init(&a.t, a.params, c.n_layers, 3);
    Rng r;
    rng_seed(&r, 4);
    for (size_t i = 0; i < a.lt.size; i++) a.lora_params[i] = 0.05f * rng_normal(&r);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&r) % c.vocab), tgt[i] = (int)(rng_u64(&r) % c.vocab);
    LC_ASSERT(llama_set_batch(&a, tok, tgt, NULL, &e) == 0 && llama_set_batch(&b, tok, tgt, NULL, &e) == 0);
    double la = llama_forward(&a, 0, c.n_layers, 0);
    memcpy(b.params, a.params, a.t.size * sizeof(float));
    lora_merge(&lc, &c, &b.t, b.params, &a.lt, a.lora_params, 1);
    double lb = llama_forward(&b, 0, c.n_layers, 0);
    EXPECT(fabs(la - lb) <= 1e-5 * la, "merged loss %.9g vs adapters %.9g", lb, la);
    a.lora_enabled = 0;
    double l0 = llama_forward(&a, 0, c.n_layers, 0);
    EXPECT(fabs(l0 - la) > 1e-3 * la, "the adapters do not change the loss (%.9g vs %.9g)", l0, la);
    lora_merge(&lc, &c, &b.t, b.params, &a.lt, a.lora_params, -1);
    double lu = llama_forward(&b, 0, c.n_layers, 0);
    EXPECT(fabs(lu - l0) <= 1e-5 * l0, "unmerged loss %.9g vs base %.9g", lu, l0);
    llama_free(&a);
    llama_free(&b);
}
