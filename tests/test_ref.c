/*
 * test_ref.c: llamac against PyTorch/transformers on the same tiny models.
 * scripts/ref_llama.py builds a Llama 2 style model (MHA, untied) and a
 * Llama 3 style model (GQA, theta 500000, llama3 rope scaling, tied
 * embeddings, packed documents), and one whose head_dim is not
 * hidden_size / heads (a width-pruned shape), with LlamaForCausalLM and writes their
 * weights, a batch, the logits, the loss, every gradient, and 10 steps of
 * torch.optim.AdamW with warmup/cosine/clipping into tests/fixtures/ref_*.bin
 * (committed, so this test needs no Python). Here llamac loads the same
 * weights and batch and must reproduce all of it.
 *
 * Tolerances (float32 everywhere on both sides; the two compute the same
 * sums in different orders, so differences are rounding, a few ulps per
 * operation compounded through 2 layers):
 *   logits    |a - b| <= 2e-5 + 1e-4 |b|        (values O(1); measured ~1e-6)
 *   loss      relative 1e-5
 *   gradients per tensor: max |a - b| <= 1e-4 * max |b|   (measured ~1e-6)
 *   training  losses relative 1e-4; weights after 10 steps |a - b| <= 1e-4
 *             (Adam divides by sqrt(v): a coordinate whose gradient is
 *             near zero moves by up to lr per step either way, so the
 *             drift grows with the steps; measured max ~1e-5).
 * The LoRA fixtures (PEFT, scripts/ref_lora.py) are checked further down.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/llama.h"
#include "../optim/adamw.h"
#include "../optim/sched.h"
#include "test.h"
#include "tests.h"

#define REF_MAGIC 0x4645524cu /* "LREF" little-endian */
#define REF_VERSION 1

typedef struct {
    char name[96];
    int dtype; /* 0 float32, 1 int32 */
    int ndim;
    int64_t dims[4];
    size_t n;
    void *data;
} RefRec;

typedef struct {
    RefRec *r;
    int n;
} RefFile;

static void ref_free(RefFile *f) {
    for (int i = 0; i < f->n; i++) free(f->r[i].data);
    free(f->r);
    memset(f, 0, sizeof *f);
}

/* Read a fixture; -1 with e = "<path>: <problem>" on any malformation. */
static int ref_read(const char *path, RefFile *f, Err *e) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(e, "%s: cannot open", path);
    uint32_t hdr[3];
    if (fread(hdr, 4, 3, fp) != 3) { fclose(fp); return err_set(e, "%s: truncated header", path); }
    if (hdr[0] != REF_MAGIC) { fclose(fp); return err_set(e, "%s: bad magic", path); }
    if (hdr[1] != REF_VERSION) { fclose(fp); return err_set(e, "%s: version %u, expected %d", path, hdr[1], REF_VERSION); }
    if (hdr[2] > 10000) { fclose(fp); return err_set(e, "%s: implausible record count %u", path, hdr[2]); }
    f->r = xcalloc(hdr[2] ? hdr[2] : 1, sizeof(RefRec));
    for (uint32_t i = 0; i < hdr[2]; i++) {
        RefRec *r = &f->r[f->n];
        uint32_t len, dt, nd;
        if (fread(&len, 4, 1, fp) != 1 || len == 0 || len >= sizeof r->name ||
            fread(r->name, 1, len, fp) != len || fread(&dt, 4, 1, fp) != 1 || fread(&nd, 4, 1, fp) != 1 ||
            dt > 1 || nd < 1 || nd > 4 || fread(r->dims, 8, nd, fp) != nd) {
            fclose(fp);
            ref_free(f);
            return err_set(e, "%s: truncated or malformed record %u", path, i);
        }
        r->dtype = (int)dt;
        r->ndim = (int)nd;
        r->n = 1;
        for (uint32_t d = 0; d < nd; d++) r->n *= (size_t)r->dims[d];
        r->data = xmalloc(r->n * 4);
        f->n++;
        if (fread(r->data, 4, r->n, fp) != r->n) {
            fclose(fp);
            ref_free(f);
            return err_set(e, "%s: truncated data in record %u", path, i);
        }
    }
    fclose(fp);
    return 0;
}

static const RefRec *ref_get(const RefFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->r[i].name, name) == 0) return &f->r[i];
    return NULL;
}

static double ref_scalar(const RefFile *f, const char *name) {
    const RefRec *r = ref_get(f, name);
    if (!r) { test_fail(__FILE__, __LINE__, "fixture has no %s", name); return 0; }
    return r->dtype ? ((int *)r->data)[0] : ((float *)r->data)[0];
}

static const char *fixture_dir(void) {
    const char *d = getenv("LLAMAC_FIXTURES");
    return d ? d : "tests/fixtures";
}

/* max |a - b| and max |b| */
static void diff(const float *a, const float *b, size_t n, double *maxd, double *maxb) {
    *maxd = *maxb = 0;
    for (size_t i = 0; i < n; i++) {
        *maxd = fmax(*maxd, fabs((double)a[i] - b[i]));
        *maxb = fmax(*maxb, fabs((double)b[i]));
    }
}

/* The record of f named pre<p's name> (the whole name goes to name, cap
 * bytes), or NULL where f has none or its size is not p's. */
static const RefRec *ref_table_rec(const RefFile *f, const char *pre, const ParamInfo *p, char *name, size_t cap) {
    snprintf(name, cap, "%s%s", pre, p->name);
    const RefRec *r = ref_get(f, name);
    return r && r->n == p->numel ? r : NULL;
}

/* Copy the tensors named pre<table name> from f into buf (table t); every
 * tensor must be there with its size. */
static void ref_load_table(const RefFile *f, const char *pre, const ParamTable *t, float *buf) {
    for (int i = 0; i < t->n; i++) {
        char name[160];
        const RefRec *r = ref_table_rec(f, pre, &t->p[i], name, sizeof name);
        EXPECT(r, "%s missing or wrong size", name);
        if (r) memcpy(buf + t->p[i].offset, r->data, r->n * 4);
    }
}

/* The model shape a fixture records. */
static void ref_config(const RefFile *f, const char *file, LlamaConfig *out) {
    LlamaConfig c;
    config_preset("tiny", &c, NULL);
    snprintf(c.name, sizeof c.name, "%s", file);
    c.dim = (int)ref_scalar(f, "config.dim");
    c.n_layers = (int)ref_scalar(f, "config.n_layers");
    c.n_heads = (int)ref_scalar(f, "config.n_heads");
    c.n_kv_heads = (int)ref_scalar(f, "config.n_kv_heads");
    c.hidden = (int)ref_scalar(f, "config.hidden");
    c.vocab = (int)ref_scalar(f, "config.vocab");
    c.max_seq = (int)ref_scalar(f, "config.max_seq");
    c.norm_eps = (float)ref_scalar(f, "config.norm_eps");
    c.rope_theta = (float)ref_scalar(f, "config.rope_theta");
    c.rope_scaling = (int)ref_scalar(f, "config.rope_scaling");
    c.rope_factor = (float)ref_scalar(f, "config.rope_factor");
    c.rope_low_freq = (float)ref_scalar(f, "config.rope_low_freq");
    c.rope_high_freq = (float)ref_scalar(f, "config.rope_high_freq");
    c.rope_orig_ctx = (int)ref_scalar(f, "config.rope_orig_ctx");
    c.tied = (int)ref_scalar(f, "config.tied");
    const RefRec *hd = ref_get(f, "config.head_dim"); /* only where it is not dim / n_heads */
    c.head_dim = hd ? ((int *)hd->data)[0] : 0;
    *out = c;
}

static void ref_model(const char *file) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixture_dir(), file);
    RefFile f;
    Err e;
    if (ref_read(path, &f, &e)) { test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    LlamaConfig c;
    ref_config(&f, file, &c);
    const RefRec *tok = ref_get(&f, "tokens"), *tgt = ref_get(&f, "targets"), *pos = ref_get(&f, "pos");
    if (!tok || !tgt || !pos || tok->ndim != 2) { test_fail(__FILE__, __LINE__, "%s: no batch", path); ref_free(&f); return; }
    int B = (int)tok->dims[0], T = (int)tok->dims[1], N = B * T, V = c.vocab, L = c.n_layers;
    Llama m;
    if (llama_init(&m, &c, &ops_cpu, NULL, B, T, 1, &e)) { test_fail(__FILE__, __LINE__, "%s", e.msg); ref_free(&f); return; }
    ref_load_table(&f, "param.", &m.t, m.params); /* weights by Hugging Face name */
    EXPECT(llama_set_batch(&m, tok->data, tgt->data, pos->data, &e) == 0, "%s", e.msg);
    long n = llama_count_targets(tgt->data, N);

    /* logits, loss, gradients */
    memset(m.grads, 0, m.t.size * 4);
    double loss = llama_forward(&m, 0, L, 1.0f / n) / n;
    llama_backward(&m, 0, L);
    float *logits = xmalloc((size_t)N * V * 4);
    ops_cpu.matmul_fwd(NULL, logits, m.xf, m.w.lm_head, N, c.dim, V);
    double d, mb;
    const RefRec *rl = ref_get(&f, "logits");
    EXPECT(rl && rl->n == (size_t)N * V, "logits shape");
    if (rl && rl->n == (size_t)N * V) {
        double worst = 0;
        for (size_t i = 0; i < rl->n; i++) {
            double ref = ((float *)rl->data)[i];
            worst = fmax(worst, fabs(logits[i] - ref) / (2e-5 + 1e-4 * fabs(ref)));
        }
        diff(logits, rl->data, rl->n, &d, &mb);
        EXPECT(worst <= 1.0, "logits: max diff %.3g (max |logit| %.3g)", d, mb);
        if (getenv("LLAMAC_TEST_VERBOSE")) printf("    logits max diff %.3g of %.3g\n", d, mb);
    }
    double rloss = ref_scalar(&f, "loss");
    EXPECT(fabs(loss - rloss) <= 1e-5 * rloss, "loss %.8f vs torch %.8f", loss, rloss);
    double gworst = 0;
    for (int i = 0; i < m.t.n; i++) {
        char name[160];
        const RefRec *r = ref_table_rec(&f, "grad.", &m.t.p[i], name, sizeof name);
        EXPECT(r, "%s missing", name);
        if (!r) continue;
        diff(m.grads + m.t.p[i].offset, r->data, r->n, &d, &mb);
        gworst = fmax(gworst, d / (mb + 1e-30));
        EXPECT(d <= 1e-4 * mb, "%s: max diff %.3g, max |grad| %.3g", name, d, mb);
    }
    if (getenv("LLAMAC_TEST_VERBOSE")) printf("    worst gradient diff / max %.3g\n", gworst);

    /* 10 steps of AdamW + warmup/cosine + clipping on the same batch */
    int steps = (int)ref_scalar(&f, "train.steps");
    AdamWConfig ac = {(float)ref_scalar(&f, "train.beta1"), (float)ref_scalar(&f, "train.beta2"),
                      (float)ref_scalar(&f, "train.eps"), (float)ref_scalar(&f, "train.weight_decay"),
                      (float)ref_scalar(&f, "train.clip"), 0};
    AdamW opt;
    Sched s;
    LC_ASSERT(adamw_init(&opt, &ac, &m.t, &ops_cpu, NULL, &e) == 0);
    LC_ASSERT(sched_init(&s, ref_scalar(&f, "train.lr"), (long)ref_scalar(&f, "train.warmup"), steps, 0.1, 1.0, &e) == 0);
    const RefRec *rlosses = ref_get(&f, "train.losses"), *rnorms = ref_get(&f, "train.grad_norms");
    EXPECT(rlosses && rnorms && (int)rlosses->n == steps, "train records");
    for (int k = 0; k < steps && rlosses && rnorms; k++) {
        memset(m.grads, 0, m.t.size * 4);
        double l = llama_forward(&m, 0, L, 1.0f / n) / n;
        llama_backward(&m, 0, L);
        double norm = adamw_grad_norm(&opt, m.grads);
        adamw_step(&opt, &m.t, m.params, m.grads, norm, (float)sched_lr(&s, k));
        double rl2 = ((float *)rlosses->data)[k], rn = ((float *)rnorms->data)[k];
        EXPECT(fabs(l - rl2) <= 1e-4 * rl2, "step %d loss %.7f vs torch %.7f", k, l, rl2);
        EXPECT(fabs(norm - rn) <= 1e-4 * rn, "step %d grad norm %.7f vs torch %.7f", k, norm, rn);
    }
    double wworst = 0;
    for (int i = 0; i < m.t.n; i++) {
        char name[160];
        const RefRec *r = ref_table_rec(&f, "final.", &m.t.p[i], name, sizeof name);
        EXPECT(r, "%s missing", name);
        if (!r) continue;
        diff(m.params + m.t.p[i].offset, r->data, r->n, &d, &mb);
        wworst = fmax(wworst, d);
        EXPECT(d <= 1e-4, "%s after %d steps: max diff %.3g", name, steps, d);
    }
    if (getenv("LLAMAC_TEST_VERBOSE")) printf("    weights after %d steps: max diff %.3g\n", steps, wworst);
    adamw_free(&opt);
    free(logits);
    llama_free(&m);
    ref_free(&f);
}

void ref_llama2(void) { ref_model("ref_llama2.bin"); }
void ref_llama3(void) { ref_model("ref_llama3.bin"); }
void ref_llama_hd(void) { ref_model("ref_llama_hd.bin"); }

// ----------------------------------------------------------------------------
// LoRA against PEFT (scripts/ref_lora.py): the base weights and batch of
// ref_llamaN.bin, adapters of several configurations from ref_lora_llamaN.bin.
// Tolerances (float32 on both sides, as above; the adapters' sums are short):
//   loss relative 1e-5; adapter gradients per tensor max |a - b| <= 1e-5 *
//   max |b| (exact zeros stay exact: lora_A's gradient when B = 0);
//   training losses relative 1e-5, pre-clip gradient norms relative 1e-4
//   (measured up to 1.4e-5, at the rsLoRA cases' later steps: Adam moves a
//   coordinate whose gradient is near zero by ~lr either way, and the norm
//   sees those coordinates before the loss does); adapters after 10 steps
//   |a - b| <= 1e-5 * (1 + max |b|) (measured <= 1.2e-6).

/* max over tensors of max |a - b| / (scale + max |b|), a in buf by table t,
 * b the records pre<name>; scale 0 is a pure relative check */
static double ref_table_diff(const RefFile *f, const char *pre, const ParamTable *t, const float *buf,
                             double scale) {
    double worst = 0;
    for (int i = 0; i < t->n; i++) {
        char name[160];
        const RefRec *r = ref_table_rec(f, pre, &t->p[i], name, sizeof name);
        if (!r) { test_fail(__FILE__, __LINE__, "%s missing", name); continue; }
        double d, mb;
        diff(buf + t->p[i].offset, r->data, r->n, &d, &mb);
        double rel = d == 0 ? 0 : d / (scale + mb);
        if (rel > worst) worst = rel;
    }
    return worst;
}

static void ref_lora_case(const RefFile *base, const RefFile *f, int k, const LlamaConfig *c) {
    char pre[32], key[64];
    Err e;
    snprintf(pre, sizeof pre, "case%d.", k);
#define KEY(x) (snprintf(key, sizeof key, "%s%s", pre, x), key)
    LoraConfig lc;
    lora_config_default(&lc, (unsigned)ref_scalar(f, KEY("targets")));
    lc.r = (int)ref_scalar(f, KEY("r"));
    lc.alpha = (float)ref_scalar(f, KEY("alpha"));
    lc.rslora = (int)ref_scalar(f, KEY("rslora"));
    const RefRec *lay = ref_get(f, KEY("layers"));
    EXPECT(lay && (int)lay->n == c->n_layers, "%slayers", pre);
    if (!lay || (int)lay->n != c->n_layers) return;
    lc.all_layers = 0;
    for (int l = 0; l < c->n_layers; l++) lc.layers[l] = ((int *)lay->data)[l] != 0;
    const RefRec *tok = ref_get(base, "tokens"), *tgt = ref_get(base, "targets"), *pos = ref_get(base, "pos");
    int B = (int)tok->dims[0], T = (int)tok->dims[1], L = c->n_layers;
    LlamaOpts o = {LLAMA_GRADS_INPUT, &lc, 0, NULL, 0};
    Llama m;
    if (llama_init_opts(&m, c, &ops_cpu, NULL, B, T, &o, &e)) { test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    /* PEFT's table has exactly llamac's tensors, in llamac's order */
    int npeft = 0, order_ok = 1;
    for (int i = 0; i < f->n; i++) {
        if (strncmp(f->r[i].name, pre, strlen(pre)) || strncmp(f->r[i].name + strlen(pre), "param.", 6)) continue;
        const char *nm = f->r[i].name + strlen(pre) + 6;
        order_ok &= npeft < m.lt.n && strcmp(nm, m.lt.p[npeft].name) == 0;
        npeft++;
    }
    EXPECT(npeft == m.lt.n && order_ok, "%s: PEFT has %d adapter tensors, llamac %d (or another order)", pre, npeft, m.lt.n);
    ref_load_table(base, "param.", &m.t, m.params);
    snprintf(key, sizeof key, "%sparam.", pre);
    ref_load_table(f, key, &m.lt, m.lora_params);
    LC_ASSERT(llama_set_batch(&m, tok->data, tgt->data, pos->data, &e) == 0);
    long n = llama_count_targets(tgt->data, (size_t)B * T);

    memset(m.lora_grads, 0, m.lt.size * 4);
    double loss = llama_forward(&m, 0, L, 1.0f / n) / n;
    llama_backward(&m, 0, L);
    double rloss = ref_scalar(f, KEY("loss"));
    EXPECT(fabs(loss - rloss) <= 1e-5 * rloss, "%s loss %.8f vs PEFT %.8f", pre, loss, rloss);
    snprintf(key, sizeof key, "%sgrad.", pre);
    double gw = ref_table_diff(f, key, &m.lt, m.lora_grads, 0);
    EXPECT(gw <= 1e-5, "%s adapter gradients: worst max diff / max |grad| %.3g", pre, gw);

    int steps = (int)ref_scalar(base, "train.steps");
    AdamWConfig ac = {(float)ref_scalar(base, "train.beta1"), (float)ref_scalar(base, "train.beta2"),
                      (float)ref_scalar(base, "train.eps"), (float)ref_scalar(base, "train.weight_decay"),
                      (float)ref_scalar(f, KEY("train.clip")), 0};
    AdamW opt;
    Sched s;
    LC_ASSERT(adamw_init(&opt, &ac, &m.lt, &ops_cpu, NULL, &e) == 0);
    LC_ASSERT(sched_init(&s, ref_scalar(base, "train.lr"), (long)ref_scalar(base, "train.warmup"), steps, 0.1, 1.0, &e) == 0);
    const RefRec *rlosses = ref_get(f, KEY("train.losses"));
    const RefRec *rnorms = ref_get(f, KEY("train.grad_norms"));
    EXPECT(rlosses && rnorms && (int)rlosses->n == steps, "%s train records", pre);
    double lw = 0, nw = 0;
    for (int st = 0; st < steps && rlosses && rnorms; st++) {
        memset(m.lora_grads, 0, m.lt.size * 4);
        double l = llama_forward(&m, 0, L, 1.0f / n) / n;
        llama_backward(&m, 0, L);
        double norm = adamw_grad_norm(&opt, m.lora_grads);
        adamw_step(&opt, &m.lt, m.lora_params, m.lora_grads, norm, (float)sched_lr(&s, st));
        double rl2 = ((float *)rlosses->data)[st], rn = ((float *)rnorms->data)[st];
        lw = fmax(lw, fabs(l - rl2) / rl2);
        nw = fmax(nw, fabs(norm - rn) / rn);
    }
    EXPECT(lw <= 1e-5 && nw <= 1e-4, "%s 10 steps: loss rel diff %.3g, grad norm rel diff %.3g", pre, lw, nw);
    snprintf(key, sizeof key, "%sfinal.", pre);
    double ww = ref_table_diff(f, key, &m.lt, m.lora_params, 1.0);
    EXPECT(ww <= 1e-5, "%s adapters after %d steps: worst diff %.3g", pre, steps, ww);
    if (getenv("LLAMAC_TEST_VERBOSE"))
        printf("    %s r %d: loss %.2e, grads %.2e, steps loss %.2e norm %.2e, final weights %.2e\n", pre, lc.r,
               fabs(loss - rloss) / rloss, gw, lw, nw, ww);
#undef KEY
    adamw_free(&opt);
    llama_free(&m);
}

static void ref_lora(const char *basefile, const char *lorafile) {
    char path[512];
    RefFile base, f;
    Err e;
    snprintf(path, sizeof path, "%s/%s", fixture_dir(), basefile);
    if (ref_read(path, &base, &e)) { test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    snprintf(path, sizeof path, "%s/%s", fixture_dir(), lorafile);
    if (ref_read(path, &f, &e)) { test_fail(__FILE__, __LINE__, "%s", e.msg); ref_free(&base); return; }
    LlamaConfig c;
    ref_config(&base, basefile, &c);
    /* the LoRA fixture was made on these very base weights */
    double sum = 0;
    for (int i = 0; i < base.n; i++)
        if (strncmp(base.r[i].name, "param.", 6) == 0)
            for (size_t j = 0; j < base.r[i].n; j++) sum += ((float *)base.r[i].data)[j];
    double want = ref_scalar(&f, "base.checksum");
    EXPECT(fabs(sum - want) <= 1e-6 * (1 + fabs(want)), "%s: base checksum %.9g, fixture %.9g", lorafile, sum, want);
    int k = 0;
    for (;; k++) {
        char key[32];
        snprintf(key, sizeof key, "case%d.r", k);
        if (!ref_get(&f, key)) break;
        ref_lora_case(&base, &f, k, &c);
    }
    EXPECT(k >= 3, "%s: %d cases", lorafile, k);
    ref_free(&f);
    ref_free(&base);
}

void ref_lora_llama2(void) { ref_lora("ref_llama2.bin", "ref_lora_llama2.bin"); }
void ref_lora_llama3(void) { ref_lora("ref_llama3.bin", "ref_lora_llama3.bin"); }

/* The fixture reader rejects truncated files and wrong magic or version. */
void ref_fixture_errors(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/ref_llama2.bin", fixture_dir());
    FILE *in = fopen(path, "rb");
    EXPECT(in != NULL, "cannot open %s", path);
    if (!in) return;
    unsigned char buf[4096];
    size_t got = fread(buf, 1, sizeof buf, in);
    fclose(in);
    const char *tmp = "build/ref_bad.bin";
    RefFile f;
    Err e;
    struct { size_t keep; int byte; unsigned char val; const char *want; } cases[] = {
        {got, 0, 'X', "bad magic"}, {got, 4, 9, "version"}, {10, -1, 0, "truncated"}, {got, -1, 0, "truncated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char b2[4096];
        memcpy(b2, buf, got);
        if (cases[i].byte >= 0) b2[cases[i].byte] = cases[i].val;
        FILE *out = fopen(tmp, "wb");
        fwrite(b2, 1, cases[i].keep, out);
        fclose(out);
        int rc = ref_read(tmp, &f, &e);
        EXPECT(rc < 0 && strstr(e.msg, cases[i].want), "case %zu: %s", i, rc < 0 ? e.msg : "accepted");
        if (rc == 0) ref_free(&f);
    }
    remove(tmp);
}
