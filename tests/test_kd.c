/*
 * test_kd.c: the fused distillation LM head (ops.h lmhead_kd), test_ops.c's
 * row for OP_LMHEAD_KD and its neighbours.
 *
 * ops_kd_case, for each row of `confs` (FKL, RKL, JSD at beta 0.5, 0.9 and
 * its exact limits 0 and 1; tau 1, 1.5, 2; T^2 on and off; weights mixed;
 * dense, sparse top-K with K < V and K == V; a quarter of the rows
 * ignored): the loss, row_ce and row_kd against the definitions computed
 * here in double (1e-5 relative), then finite differences of the loss for
 * dx (=) and dw (+=) (test_ops.c's tolerances). Then: sparse K == V equals
 * dense within float rounding; sparse K < V misses the dense loss by
 * exactly the truncation's error, computed in double from the tail's
 * entries (>= 0 for FKL: the log-sum inequality); JSD at beta 0 and 1 gives
 * FKL's and RKL's bits; a quantised teacher head gives the dense loss on
 * its dequantised matrix; more rows than one chunk.

 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/ops.h"
#include "gradcheck.h"
#include "test.h"
#include "tests.h"

static const Ops *O = &ops_cpu;
static const GcOpts GC = {48, 1e-2f, 1e-2, 1e-3};

#define NEW(n) ((float *)xcalloc((n), sizeof(float)))

typedef struct {
    const char *name;
    KdSpec kd;
    int K; /* 0: a dense teacher; > 0: its top K; -1: top V */
} KdConf;

static const KdConf confs[] = {
    {"fkl", {KD_FKL, 1.0f, 0.0f, 0.5f, 0.5f, 0}, 0},
    {"fkl.tau2.t2.kdonly", {KD_FKL, 2.0f, 0.0f, 0.0f, 1.0f, 1}, 0},
    {"rkl", {KD_RKL, 1.0f, 0.0f, 0.3f, 0.7f, 0}, 0},
    {"rkl.tau2.t2", {KD_RKL, 2.0f, 0.0f, 1.0f, 0.25f, 1}, 0},
    {"jsd.b0.5", {KD_JSD, 1.0f, 0.5f, 0.5f, 0.5f, 0}, 0},
    {"jsd.b0.9.tau2.t2", {KD_JSD, 2.0f, 0.9f, 0.2f, 1.0f, 1}, 0},
    {"jsd.b0.tau1.5", {KD_JSD, 1.5f, 0.0f, 0.5f, 0.5f, 0}, 0},
    {"jsd.b1.tau1.5", {KD_JSD, 1.5f, 1.0f, 0.5f, 0.5f, 0}, 0},
    {"fkl.top5.tau2.t2", {KD_FKL, 2.0f, 0.0f, 0.5f, 0.5f, 1}, 5},
    {"rkl.top5", {KD_RKL, 1.0f, 0.0f, 0.5f, 0.5f, 0}, 5},
    {"jsd.b0.5.top5.tau1.5", {KD_JSD, 1.5f, 0.5f, 0.5f, 0.5f, 0}, 5},
    {"fkl.topV.tau2", {KD_FKL, 2.0f, 0.0f, 0.5f, 0.5f, 1}, -1},
    {"rkl.topV", {KD_RKL, 1.0f, 0.0f, 0.5f, 0.5f, 0}, -1},
    {"jsd.b0.9.topV", {KD_JSD, 1.0f, 0.9f, 0.5f, 0.5f, 0}, -1},
};
#define NCONF ((int)(sizeof confs / sizeof confs[0]))

/* One problem: the student head x (N, D) w (V, D), the teacher tx (N, Dt)
 * tw (V, Dt) (dense) or ids / lp (N, K) (sparse, made from the same dense
 * teacher), targets with ignored rows. */
typedef struct {
    int N, D, Dt, V, K;
    float *x, *w, *tx, *tw, *lp, *scratch, *work, *rce, *rkd;
    const QTensor *tq;
    int *tgt, *ids;
    KdSpec kd;
    float scale;
} Kd;

static double kd_call(Kd *c, float *dx, float *dw, int sparse) {
    return O->lmhead_kd(NULL, dx, dw, c->rce, c->rkd, c->x, c->w, sparse ? NULL : c->tx, sparse || c->tq ? NULL : c->tw,
                        sparse ? NULL : c->tq, sparse ? c->ids : NULL, sparse ? c->lp : NULL, c->K, c->tgt, &c->kd,
                        c->scale, c->scratch, c->work, c->N, c->D, c->Dt, c->V);
}

static double f_dense(void *ud) { Kd *c = ud; return c->scale * kd_call(c, NULL, NULL, 0); }
static double f_sparse(void *ud) { Kd *c = ud; return c->scale * kd_call(c, NULL, NULL, 1); }

// ----------------------------------------------------------------------------
// the definitions, in double

/* row n of a (rows, cols) b (V, cols)^T in double */
static void ref_logits(double *out, const float *a, const float *b, int n, int cols, int V) {
    for (int v = 0; v < V; v++) {
        double s = 0;
        for (int k = 0; k < cols; k++) s += (double)a[(size_t)n * cols + k] * b[(size_t)v * cols + k];
        out[v] = s;
    }
}

/* log softmax(z / tau) of V values, in place */
static void ref_logsoftmax(double *z, int V, double tau) {
    double m = -INFINITY, s = 0;
    for (int v = 0; v < V; v++) m = fmax(m, z[v] / tau);
    for (int v = 0; v < V; v++) s += exp(z[v] / tau - m);
    for (int v = 0; v < V; v++) z[v] = z[v] / tau - m - log(s);
}

/* sum over buckets of the divergence, from probabilities */
static double ref_div(const KdSpec *kd, const double *qt, const double *qs, int nb) {
    double d = 0, b = kd->beta;
    int div = kd->div == KD_JSD && b == 0 ? KD_FKL : kd->div == KD_JSD && b == 1 ? KD_RKL : kd->div;
    for (int i = 0; i < nb; i++) {
        if (div == KD_FKL) d += qt[i] > 0 ? qt[i] * log(qt[i] / qs[i]) : 0;
        else if (div == KD_RKL) d += qs[i] > 0 ? qs[i] * log(qs[i] / qt[i]) : 0;
        else {
            double m = b * qt[i] + (1 - b) * qs[i];
            d += (qt[i] > 0 ? b * qt[i] * log(qt[i] / m) : 0) + (qs[i] > 0 ? (1 - b) * qs[i] * log(qs[i] / m) : 0);
        }
    }
    return d;
}

/* The loss and row values of the problem by the definitions: dense, or
 * sparse over the K ids and (K < V) a tail bucket. */
static double ref_loss(const Kd *c, int sparse, double *rce, double *rkd) {
    int V = c->V, K = c->K;
    double *s = malloc(V * sizeof(double)), *s1 = malloc(V * sizeof(double)), *t = malloc(V * sizeof(double));
    double *qt = malloc((V + 1) * sizeof(double)), *qs = malloc((V + 1) * sizeof(double));
    double f = c->kd.t2 ? (double)c->kd.tau * c->kd.tau : 1.0, total = 0;
    for (int n = 0; n < c->N; n++) {
        rce[n] = rkd[n] = 0;
        if (c->tgt[n] == LC_IGNORE) continue;
        ref_logits(s, c->x, c->w, n, c->D, V);
        memcpy(s1, s, V * sizeof(double));
        ref_logsoftmax(s1, V, 1.0);
        rce[n] = -s1[c->tgt[n]];
        ref_logsoftmax(s, V, c->kd.tau);
        int nb;
        if (!sparse) {
            ref_logits(t, c->tx, c->tw, n, c->Dt, V);
            ref_logsoftmax(t, V, c->kd.tau);
            for (int v = 0; v < V; v++) qt[v] = exp(t[v]), qs[v] = exp(s[v]);
            nb = V;
        } else {
            double mt = 0, ms = 0;
            char *in = calloc(V, 1);
            for (int b = 0; b < K; b++) {
                int id = c->ids[(size_t)n * K + b];
                in[id] = 1;
                qt[b] = exp((double)c->lp[(size_t)n * K + b]);
                qs[b] = exp(s[id]);
                mt += qt[b];
            }
            for (int v = 0; v < V; v++) ms += in[v] ? 0 : exp(s[v]);
            free(in);
            nb = K;
            if (K < V) qt[K] = fmax(0, 1 - mt), qs[K] = ms, nb = K + 1;
        }
        rkd[n] = ref_div(&c->kd, qt, qs, nb);
        total += c->kd.ce_w * rce[n] + c->kd.kd_w * f * rkd[n];
    }
    free(s); free(s1); free(t); free(qt); free(qs);
    return total;
}

/* dense row_kd - sparse row_kd by the definitions, from the tail's own
 * entries: sum over u outside the K ids of the dense terms, minus the tail
 * bucket's term (for FKL r_t KL(tail_t / r_t || tail_s / r_s) >= 0). */
static double ref_trunc(const Kd *c, int n) {
    int V = c->V, K = c->K;
    double *s = malloc(V * sizeof(double)), *t = malloc(V * sizeof(double)), qt[1], qs[1], a = 0, rt = 0, rs = 0;
    char *in = calloc(V, 1);
    ref_logits(s, c->x, c->w, n, c->D, V);
    ref_logsoftmax(s, V, c->kd.tau);
    ref_logits(t, c->tx, c->tw, n, c->Dt, V);
    ref_logsoftmax(t, V, c->kd.tau);
    for (int b = 0; b < K; b++) in[c->ids[(size_t)n * K + b]] = 1;
    double mt = 0;
    for (int b = 0; b < K; b++) mt += exp((double)c->lp[(size_t)n * K + b]);
    rt = fmax(0, 1 - mt);
    for (int v = 0; v < V; v++) {
        if (in[v]) continue;
        qt[0] = exp(t[v]), qs[0] = exp(s[v]);
        a += ref_div(&c->kd, qt, qs, 1);
        rs += qs[0];
    }
    qt[0] = rt, qs[0] = rs;
    a -= ref_div(&c->kd, qt, qs, 1);
    free(s); free(t); free(in);
    return a;
}

// ----------------------------------------------------------------------------
// problems

/* The teacher's top K at tau (or all V, K = -1, in order of probability)
 * from its dense logits in double: ids and float log-probabilities. */
static void make_topk(Kd *c, int K) {
    int V = c->V;
    c->K = K < 0 ? V : K;
    free(c->ids); free(c->lp);
    c->ids = xmalloc((size_t)c->N * c->K * sizeof(int));
    c->lp = NEW((size_t)c->N * c->K);
    double *t = malloc(V * sizeof(double));
    char *used = malloc(V);
    for (int n = 0; n < c->N; n++) {
        ref_logits(t, c->tx, c->tw, n, c->Dt, V);
        ref_logsoftmax(t, V, c->kd.tau);
        memset(used, 0, V);
        for (int b = 0; b < c->K; b++) {
            int best = -1;
            for (int v = 0; v < V; v++)
                if (!used[v] && (best < 0 || t[v] > t[best])) best = v;
            used[best] = 1;
            c->ids[(size_t)n * c->K + b] = best;
            c->lp[(size_t)n * c->K + b] = (float)t[best];
        }
    }
    free(t); free(used);
}

static void kd_init(Kd *c, Rng *r, int N, int D, int Dt, int V) {
    memset(c, 0, sizeof *c);
    c->N = N, c->D = D, c->Dt = Dt, c->V = V;
    c->x = NEW((size_t)N * D); c->w = NEW((size_t)V * D); c->tx = NEW((size_t)N * Dt); c->tw = NEW((size_t)V * Dt);
    gc_randn(r, c->x, (size_t)N * D, 1); gc_randn(r, c->w, (size_t)V * D, 0.5f);
    gc_randn(r, c->tx, (size_t)N * Dt, 1); gc_randn(r, c->tw, (size_t)V * Dt, 0.6f);
    c->tgt = xmalloc(N * sizeof(int));
    int nt = 0;
    for (int n = 0; n < N; n++) {
        c->tgt[n] = n % 4 == 2 ? LC_IGNORE : (int)(rng_u64(r) % V);
        nt += c->tgt[n] != LC_IGNORE;
    }
    c->scale = 1.0f / nt;
    c->scratch = NEW(O->kd_scratch_floats(NULL, N, V));
    c->work = NEW(O->qwork_floats(NULL, Dt > D ? Dt : D));
    c->rce = NEW(N); c->rkd = NEW(N);
}

static void kd_free(Kd *c) {
    free(c->x); free(c->w); free(c->tx); free(c->tw); free(c->lp); free(c->scratch); free(c->work);
    free(c->rce); free(c->rkd); free(c->tgt); free(c->ids);
}

static double max_abs(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static double max_absv(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

/* one conf: values against the definitions, then finite differences */
static void conf_case(Kd *c, const KdConf *k, Rng *r) {
    c->kd = k->kd;
    int sparse = k->K != 0;
    if (sparse) make_topk(c, k->K);
    size_t nx = (size_t)c->N * c->D, nw = (size_t)c->V * c->D;
    float *dx = NEW(nx), *dw = NEW(nw);
    for (size_t i = 0; i < nx; i++) dx[i] = 7.0f; /* overwritten */
    for (size_t i = 0; i < nw; i++) dw[i] = 1.0f; /* accumulated */
    double loss = kd_call(c, dx, dw, sparse);
    for (size_t i = 0; i < nw; i++) dw[i] -= 1.0f;
    double *rce = malloc(c->N * sizeof(double)), *rkd = malloc(c->N * sizeof(double));
    double ref = ref_loss(c, sparse, rce, rkd);
    EXPECT(fabs(loss - ref) <= 1e-5 * fmax(1, fabs(ref)), "%s: loss %.9g, definition %.9g", k->name, loss, ref);
    for (int n = 0; n < c->N; n++) {
        EXPECT(fabs(c->rce[n] - rce[n]) <= 1e-5 * fmax(1, fabs(rce[n])), "%s: row %d ce %.9g, definition %.9g",
               k->name, n, c->rce[n], rce[n]);
        EXPECT(fabs(c->rkd[n] - rkd[n]) <= 1e-5 * fmax(1, fabs(rkd[n])), "%s: row %d kd %.9g, definition %.9g",
               k->name, n, c->rkd[n], rkd[n]);
        if (c->tgt[n] == LC_IGNORE) {
            EXPECT(c->rce[n] == 0 && c->rkd[n] == 0, "%s: ignored row %d has a loss", k->name, n);
            EXPECT(max_absv(dx + (size_t)n * c->D, c->D) == 0, "%s: ignored row %d has a gradient", k->name, n);
        }
    }
    char what[64];
    double wx, ww, e = 0;
    for (int n = 0; n < c->N; n++) e = fmax(e, fmax(fabs(c->rce[n] - rce[n]), fabs(c->rkd[n] - rkd[n])));
    snprintf(what, sizeof what, "lmhead_kd.%s.dx", k->name);
    gradcheck(what, sparse ? f_sparse : f_dense, c, c->x, dx, nx, &GC, r, &wx);
    snprintf(what, sizeof what, "lmhead_kd.%s.dw", k->name);
    gradcheck(what, sparse ? f_sparse : f_dense, c, c->w, dw, nw, &GC, r, &ww);
    if (getenv("LLAMAC_TEST_VERBOSE"))
        printf("    %-22s loss - definition %+.1e, rows %.1e; worst rel err dx %.1e dw %.1e\n", k->name, loss - ref, e,
               wx, ww);
    free(dx); free(dw); free(rce); free(rkd);
}

/* sparse against dense on the same teacher: K == V the same within float
 * rounding, K < V short by the truncation's error */
static void sparse_vs_dense(Kd *c, const KdSpec *kd, int K) {
    c->kd = *kd;
    make_topk(c, K);
    size_t nx = (size_t)c->N * c->D;
    float *dx0 = NEW(nx), *dx1 = NEW(nx), *kd0 = NEW(c->N);
    double l0 = kd_call(c, dx0, NULL, 0);
    memcpy(kd0, c->rkd, c->N * sizeof(float));
    double l1 = kd_call(c, dx1, NULL, 1);
    const char *nm = kd_div_names[kd->div];
    if (K < 0) {
        EXPECT(fabs(l1 - l0) <= 1e-5 * fabs(l0), "%s top V: loss %.9g, dense %.9g", nm, l1, l0);
        EXPECT(max_abs(kd0, c->rkd, c->N) <= 1e-5, "%s top V: row_kd differs from dense by %g", nm,
               max_abs(kd0, c->rkd, c->N));
        EXPECT(max_abs(dx0, dx1, nx) <= 1e-5 * max_absv(dx0, nx), "%s top V: dx differs from dense by %g", nm,
               max_abs(dx0, dx1, nx));
    } else {
        for (int n = 0; n < c->N; n++) {
            if (c->tgt[n] == LC_IGNORE) continue;
            double got = (double)kd0[n] - c->rkd[n], want = ref_trunc(c, n);
            EXPECT(fabs(got - want) <= 2e-6 + 1e-5 * fabs(want), "%s top %d row %d: dense - sparse %.9g, truncation %.9g",
                   nm, K, n, got, want);
            if (kd->div == KD_FKL) EXPECT(want >= 0 && got >= -2e-6, "%s top %d row %d: truncation %g < 0", nm, K, n, got);
        }
    }
    free(dx0); free(dx1); free(kd0);
}

/* a quantised teacher head against the dense one on its dequantised matrix */
static void quant_teacher(Rng *r) {
    for (int i = 0; i < TEST_NQTYPES; i++) {
        uint32_t t = test_qtypes[i];
        Kd c;
        kd_init(&c, r, 9, 13, quant_block(t) * 2, 37);
        QTensor q;
        uint8_t *qd = test_qtensor_rand(r, t, c.V, c.Dt, &q);
        quant_rows(&q, 0, c.V, c.tw);
        c.kd = (KdSpec){KD_JSD, 1.5f, 0.5f, 0.5f, 0.5f, 1};
        size_t nx = (size_t)c.N * c.D;
        float *dx0 = NEW(nx), *dx1 = NEW(nx);
        double l0 = kd_call(&c, dx0, NULL, 0);
        c.tq = &q;
        double l1 = kd_call(&c, dx1, NULL, 0);
        EXPECT(fabs(l1 - l0) <= 1e-5 * fabs(l0), "%s teacher: loss %.9g, dequantised %.9g", quant_name(t), l1, l0);
        EXPECT(max_abs(dx0, dx1, nx) <= 1e-5 * max_absv(dx0, nx), "%s teacher: dx differs by %g", quant_name(t),
               max_abs(dx0, dx1, nx));
        free(dx0); free(dx1); free(qd);
        kd_free(&c);
    }
}

void ops_kd_case(Rng *r) {
    Kd c;
    kd_init(&c, r, 9, 13, 11, 37);
    for (int i = 0; i < NCONF; i++) conf_case(&c, &confs[i], r);
    /* JSD's beta 0 and 1 are FKL and RKL bit for bit */
    size_t nx = (size_t)c.N * c.D;
    float *a = NEW(nx), *b = NEW(nx);
    for (int end = 0; end < 2; end++) {
        c.kd = (KdSpec){end ? KD_RKL : KD_FKL, 1.5f, 0.0f, 0.5f, 0.5f, 1};
        double la = kd_call(&c, a, NULL, 0);
        c.kd.div = KD_JSD, c.kd.beta = end ? 1.0f : 0.0f;
        double lb = kd_call(&c, b, NULL, 0);
        EXPECT(la == lb && memcmp(a, b, nx * sizeof(float)) == 0, "jsd beta %d differs from %s", end, end ? "rkl" : "fkl");
    }
    free(a); free(b);
    for (int d = 0; d < KD_COUNT; d++) {
        KdSpec kd = {d, 2.0f, 0.7f, 0.5f, 0.5f, 1};
        sparse_vs_dense(&c, &kd, -1);
        sparse_vs_dense(&c, &kd, 6);
        sparse_vs_dense(&c, &kd, 1);
    }
    kd_free(&c);
    quant_teacher(r);
    /* more rows than a chunk: the values of every row */
    kd_init(&c, r, 1100, 5, 4, 37);
    c.kd = (KdSpec){KD_RKL, 2.0f, 0.0f, 0.5f, 0.5f, 1};
    double *rce = malloc(c.N * sizeof(double)), *rkd = malloc(c.N * sizeof(double));
    for (int sparse = 0; sparse < 2; sparse++) {
        if (sparse) make_topk(&c, 4);
        double l = kd_call(&c, NULL, NULL, sparse), ref = ref_loss(&c, sparse, rce, rkd), e = 0;
        for (int n = 0; n < c.N; n++) e = fmax(e, fabs(c.rkd[n] - rkd[n]) + fabs(c.rce[n] - rce[n]));
        EXPECT(fabs(l - ref) <= 1e-5 * fabs(ref) && e < 1e-5, "%d chunked rows (sparse %d): loss %.9g vs %.9g, rows %g",
               c.N, sparse, l, ref, e);
    }
    free(rce); free(rkd);
    kd_free(&c);
}

// ----------------------------------------------------------------------------
// against torchtune and TRL (scripts/test_kd_ref.py)

/* Case file (little-endian): "LKDR", version 1, then int32 N, V, div, t2;
 * float32 tau, beta, ce_w, kd_w; char name[64]; int32 targets (N);
 * float32 student and teacher logits (N, V) each; then the reference's
 * float64 mixed loss (the mean over the rows not ignored), row_kd (N),
 * row_ce (N) and d loss / d student logits (N, V). */
#define KDR_MAGIC 0x52444b4cu /* "LKDR" */
#define KDR_VERSION 1
/* The bar: values and gradients within 1e-6 (relative to values
 * above 1); both sides are float32 arithmetic on the same float32 logits,
 * which agree to a few 1e-7. */
#define KDR_TOL 1e-6

static int rd(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }

void kd_ref(void) {
    const char *path = getenv("LLAMAC_KD_REF");
    if (!path) path = "tests/fixtures/kd/kd_ref.bin";
    FILE *f = fopen(path, "rb");
    EXPECT(f != NULL, "%s: cannot open", path);
    if (!f) return;
    uint32_t hdr[2];
    int32_t dims[4];
    float par[4];
    char name[65] = {0};
    int ok = rd(f, hdr, sizeof hdr) && hdr[0] == KDR_MAGIC && hdr[1] == KDR_VERSION && rd(f, dims, sizeof dims) &&
             rd(f, par, sizeof par) && rd(f, name, 64) && dims[0] > 0 && dims[1] > 0 && dims[2] >= 0 && dims[2] < KD_COUNT;
    EXPECT(ok, "%s: not a version %d case file", path, KDR_VERSION);
    if (!ok) { fclose(f); return; }
    int N = dims[0], V = dims[1];
    size_t nv = (size_t)N * V;
    int *tgt = xmalloc(N * sizeof(int));
    float *s = NEW(nv), *t = NEW(nv), *eye = NEW((size_t)V * V), *dx = NEW(nv), *rce = NEW(N), *rkd = NEW(N);
    double loss_ref, *kd_ref = xmalloc(N * sizeof(double)), *ce_ref = xmalloc(N * sizeof(double));
    double *g_ref = xmalloc(nv * sizeof(double));
    ok = rd(f, tgt, N * sizeof(int)) && rd(f, s, nv * sizeof(float)) && rd(f, t, nv * sizeof(float)) &&
         rd(f, &loss_ref, sizeof loss_ref) && rd(f, kd_ref, N * sizeof(double)) && rd(f, ce_ref, N * sizeof(double)) &&
         rd(f, g_ref, nv * sizeof(double));
    fclose(f);
    EXPECT(ok, "%s: truncated", path);
    if (ok) {
        KdSpec kd = {dims[2], par[0], par[1], par[2], par[3], dims[3]};
        int nt = 0;
        for (int n = 0; n < N; n++) nt += tgt[n] != LC_IGNORE;
        for (int v = 0; v < V; v++) eye[(size_t)v * V + v] = 1.0f; /* identity heads: x and tx are the logits */
        float *sc = NEW(O->kd_scratch_floats(NULL, N, V)), *work = NEW(O->qwork_floats(NULL, V));
        double loss = O->lmhead_kd(NULL, dx, NULL, rce, rkd, s, eye, t, eye, NULL, NULL, NULL, 0, tgt, &kd,
                                   1.0f / nt, sc, work, N, V, V, V) / nt;
        double eg = 0, er = 0;
        for (size_t i = 0; i < nv; i++) eg = fmax(eg, fabs(dx[i] - g_ref[i]));
        for (int n = 0; n < N; n++)
            er = fmax(er, fmax(fabs(rkd[n] - kd_ref[n]), fabs(rce[n] - ce_ref[n])) / fmax(1, fabs(ce_ref[n])));
        printf("    %s: loss %.9f (reference %.9f), max |d| rows %.1e, d loss/d logits %.1e\n", name, loss, loss_ref,
               er, eg);
        EXPECT(fabs(loss - loss_ref) <= KDR_TOL * fmax(1, fabs(loss_ref)), "%s: loss %.9g, reference %.9g", name, loss,
               loss_ref);
        EXPECT(er <= KDR_TOL, "%s: row values differ by %.2e", name, er);
        EXPECT(eg <= KDR_TOL, "%s: gradients differ by %.2e", name, eg);
        free(sc); free(work);
    }
    free(tgt); free(s); free(t); free(eye); free(dx); free(rce); free(rkd); free(kd_ref); free(ce_ref); free(g_ref);
}

// ----------------------------------------------------------------------------
// time per call (the micro-benchmark row): lmhead_ce and lmhead_kd with a
// dense teacher (FKL, JSD) and a top-64 one, forward + backward, one small
// shape so that make test stays quick; the numbers depend on the machine's
// load (TBD on a quiet one: docs/distill.md)

void kd_bench(void) {
    enum { N = 64, D = 128, Dt = 192, V = 2048, K = 64, REPS = 2 };
    Rng r;
    rng_seed(&r, 2525);
    Kd c;
    kd_init(&c, &r, N, D, Dt, V);
    c.kd = (KdSpec){KD_FKL, 2.0f, 0.5f, 0.5f, 0.5f, 1};
    make_topk(&c, K);
    float *dx = NEW((size_t)N * D), *dw = NEW((size_t)V * D), *sc = NEW(O->scratch_floats(NULL, 1, N, 1, 2, V, D));
    const char *what[4] = {"lmhead_ce", "lmhead_kd fkl dense", "lmhead_kd jsd dense", "lmhead_kd fkl top-64"};
    for (int k = 0; k < 4; k++) {
        c.kd.div = k == 2 ? KD_JSD : KD_FKL;
        double t0 = 0, l = 0;
        for (int rep = 0; rep <= REPS; rep++) {
            if (rep == 1) t0 = time_now(); /* the first call warms up */
            l = k == 0 ? O->lmhead_ce(NULL, dx, dw, c.rce, c.x, c.w, c.tgt, sc, N, D, V, c.scale)
                       : kd_call(&c, dx, dw, k == 3);
        }
        double ms = (time_now() - t0) / REPS * 1e3;
        EXPECT(isfinite(l), "%s: loss %g", what[k], l);
        printf("    %-22s N %d D %d Dt %d V %d: %7.2f ms per call (forward + backward)\n", what[k], N, D, Dt, V, ms);
    }
    free(dx); free(dw); free(sc);
    kd_free(&c);
}

/* lmhead_rows at SmolLM2's head (D 576, V 49152) on an RL-like batch: 3% of
 * the 512 rows trained (the rest prompt rows, LC_IGNORE), forward + backward.
 * Printed only; the time depends on the machine's load. */
void head_bench(void) {
    enum { N = 512, D = 576, V = 49152, REPS = 2 };
    Rng r;
    rng_seed(&r, 2626);
    float *x = NEW((size_t)N * D), *w = NEW((size_t)V * D), *dx = NEW((size_t)N * D), *dw = NEW((size_t)V * D);
    float *rl = NEW(N), *rm = NEW(N), *rs = NEW(N), *sc = NEW(O->scratch_floats(NULL, 1, N, 1, 2, V, D));
    int *tgt = xmalloc(N * sizeof(int)), nt = 0;
    for (size_t i = 0; i < (size_t)N * D; i++) x[i] = rng_normal(&r);
    for (size_t i = 0; i < (size_t)V * D; i++) w[i] = 0.05f * rng_normal(&r);
    for (int n = 0; n < N; n++) { /* a completion of 5 tokens after each 160 prompt rows: 15 of 512 */
        tgt[n] = n % 168 >= 163 ? (int)(rng_u64(&r) % V) : LC_IGNORE;
        nt += tgt[n] != LC_IGNORE;
        rs[n] = 1.0f;
    }
    double t0 = 0, l = 0;
    for (int rep = 0; rep <= REPS; rep++) {
        if (rep == 1) t0 = time_now(); /* the first call warms up */
        l = O->lmhead_rows(NULL, dx, dw, rl, rm, x, w, tgt, rs, sc, N, D, V);
    }
    double ms = (time_now() - t0) / REPS * 1e3;
    EXPECT(isfinite(l), "lmhead_rows: loss %g", l);
    printf("    lmhead_rows N %d D %d V %d, %d rows trained: %8.2f ms per call (forward + backward)\n", N, D, V, nt, ms);
    free(x); free(w); free(dx); free(dw); free(rl); free(rm); free(rs); free(sc); free(tgt);
}
