/*
 * prune.c: importance statistics from a Llama's activation arena, the target
 * shape, the plan of what to keep, and the sliced weights (prune.h).
 *
 * Statistics accumulate in double: a calibration set of a few hundred
 * thousand tokens sums many small float terms. Every ranking is a stable
 * sort (score descending, index ascending), so equal scores keep the lower
 * index and pruning to the same shape keeps everything in order.
 */
#include "prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void prune_stats_init(PruneStats *s, const LlamaConfig *c) {
    memset(s, 0, sizeof *s);
    s->c = *c;
    size_t L = (size_t)c->n_layers, Q = (size_t)c->n_heads * config_head_size(c);
    s->skip_sum = xcalloc(L, sizeof(double));
    s->bi_sum = xcalloc(L, sizeof(double));
    s->att_acc = xcalloc(L * Q, sizeof(double));
    s->ffn_acc = xcalloc(L * (size_t)c->hidden, sizeof(double));
    s->emb_acc = xcalloc(L * 2 * (size_t)c->dim, sizeof(double));
    s->layer_bi = xcalloc(L, sizeof(double));
    s->layer_dloss = xcalloc(L, sizeof(double));
    s->head = xcalloc(L * (size_t)c->n_heads, sizeof(double));
    s->group = xcalloc(L * (size_t)c->n_kv_heads, sizeof(double));
    s->ffn = xcalloc(L * (size_t)c->hidden, sizeof(double));
    s->emb = xcalloc((size_t)c->dim, sizeof(double));
}

void prune_stats_free(PruneStats *s) {
    double **f[] = {&s->skip_sum, &s->bi_sum, &s->att_acc, &s->ffn_acc, &s->emb_acc, &s->layer_bi,
                    &s->layer_dloss, &s->head, &s->group, &s->ffn, &s->emb};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
}

// ----------------------------------------------------------------------------
// collection

/* acc[j] += (mean over t of |x[b, t, j]|)^2 for every batch row b; x (B, T, n). */
static void seq_mean_abs_sq(double *acc, const float *x, int B, int T, int n) {
    double *a = xcalloc((size_t)n, sizeof(double));
    for (int b = 0; b < B; b++) {
        memset(a, 0, (size_t)n * sizeof(double));
        for (int t = 0; t < T; t++) {
            const float *r = x + ((size_t)b * T + t) * n;
            for (int j = 0; j < n; j++) a[j] += fabsf(r[j]);
        }
        for (int j = 0; j < n; j++) {
            double m = a[j] / T;
            acc[j] += m * m;
        }
    }
    free(a);
}

/* sum over rows of 1 - cos(x_i, y_i); a zero row counts as unchanged (cos 1) */
static double block_influence(const float *x, const float *y, size_t N, int D) {
    double sum = 0;
    for (size_t i = 0; i < N; i++) {
        const float *a = x + i * D, *b = y + i * D;
        double ab = 0, aa = 0, bb = 0;
        for (int d = 0; d < D; d++) {
            ab += (double)a[d] * b[d];
            aa += (double)a[d] * a[d];
            bb += (double)b[d] * b[d];
        }
        sum += aa > 0 && bb > 0 ? 1.0 - ab / sqrt(aa * bb) : 0.0;
    }
    return sum;
}

/* The input of layer l + 1 (or the final norm's). */
static float *layer_out(Llama *m, int l) { return l + 1 < m->c.n_layers ? m->acts[l + 1].x : m->x_out; }

double prune_collect(PruneStats *s, Llama *m, long ntargets, int skip_loss) {
    const LlamaConfig *c = &m->c;
    LC_ASSERT(!m->recompute && c->n_layers == s->c.n_layers && c->dim == s->c.dim);
    int B = m->B, T = m->T, L = c->n_layers, D = c->dim, F = c->hidden;
    int Q = c->n_heads * config_head_size(c);
    size_t N = (size_t)B * T;
    double loss = llama_forward(m, 0, L, 0);
    s->loss_sum += loss;
    s->tokens += ntargets;
    s->batches++;
    s->bi_rows += (long)N;
    for (int l = 0; l < L; l++) {
        const LayerActs *a = &m->acts[l];
        s->bi_sum[l] += block_influence(a->x, layer_out(m, l), N, D);
        seq_mean_abs_sq(s->att_acc + (size_t)l * Q, a->att, B, T, Q);
        seq_mean_abs_sq(s->ffn_acc + (size_t)l * F, a->act, B, T, F);
        seq_mean_abs_sq(s->emb_acc + (size_t)(2 * l) * D, a->xn1, B, T, D);
        seq_mean_abs_sq(s->emb_acc + (size_t)(2 * l + 1) * D, a->xn2, B, T, D);
    }
    if (!skip_loss) return loss;
    s->skip_batches++;
    /* Layer l skipped: its input goes on as its output. Last layer first:
     * skipping l rewrites only the inputs of layers after l, so acts[l].x of
     * every earlier layer is still the full forward's. */
    for (int l = L - 1; l >= 0; l--) {
        float *out = layer_out(m, l);
        m->ops->zero(m->ctx, out, N * D * sizeof(float));
        m->ops->add(m->ctx, out, m->acts[l].x, N * D);
        s->skip_sum[l] += llama_forward(m, l + 1, L, 0);
    }
    return loss;
}

void prune_finish(PruneStats *s) {
    const LlamaConfig *c = &s->c;
    int L = c->n_layers, H = c->n_heads, KV = c->n_kv_heads, HS = config_head_size(c), F = c->hidden, D = c->dim;
    double nt = s->tokens > 0 ? (double)s->tokens : 1;
    s->loss = s->loss_sum / nt;
    memset(s->emb, 0, (size_t)D * sizeof(double));
    for (int l = 0; l < L; l++) {
        s->layer_bi[l] = s->bi_rows ? s->bi_sum[l] / (double)s->bi_rows : 0;
        s->layer_dloss[l] = s->skip_batches ? s->skip_sum[l] / nt - s->loss : NAN;
        for (int h = 0; h < H; h++) {
            double sq = 0;
            for (int j = 0; j < HS; j++) sq += s->att_acc[(size_t)l * H * HS + (size_t)h * HS + j];
            s->head[(size_t)l * H + h] = sqrt(sq);
        }
        for (int g = 0; g < KV; g++) {
            double sq = 0;
            for (int h = g * (H / KV); h < (g + 1) * (H / KV); h++) sq += s->head[(size_t)l * H + h] * s->head[(size_t)l * H + h];
            s->group[(size_t)l * KV + g] = sqrt(sq);
        }
        for (int f = 0; f < F; f++) s->ffn[(size_t)l * F + f] = sqrt(s->ffn_acc[(size_t)l * F + f]);
        for (int k = 0; k < 2; k++)
            for (int d = 0; d < D; d++) s->emb[d] += sqrt(s->emb_acc[(size_t)(2 * l + k) * D + d]);
    }
}

// ----------------------------------------------------------------------------
// the target shape

typedef struct {
    const char *key;
    size_t off; /* in LlamaConfig */
} TargetKey;

static const TargetKey target_keys[] = {
    {"layers", offsetof(LlamaConfig, n_layers)}, {"heads", offsetof(LlamaConfig, n_heads)},
    {"kv_heads", offsetof(LlamaConfig, n_kv_heads)}, {"ffn", offsetof(LlamaConfig, hidden)},
    {"dim", offsetof(LlamaConfig, dim)},
};
#define N_TARGET_KEYS (int)(sizeof target_keys / sizeof target_keys[0])

/* A SHAPE into want[] (-1: not given). */
static int parse_shape(const char *spec, int *want, Err *e) {
    for (int k = 0; k < N_TARGET_KEYS; k++) want[k] = -1;
    const char *p = spec;
    if (!*p) return err_set(e, "--target: empty (a preset name or layers=N,heads=H,kv_heads=K,ffn=F,dim=D)");
    while (*p) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq || eq == p)
            return err_set(e, "--target: expected key=value, got '%.*s' (keys: layers, heads, kv_heads, ffn, dim)",
                           (int)(end - p), p);
        int k = 0;
        while (k < N_TARGET_KEYS &&
               !(strlen(target_keys[k].key) == (size_t)(eq - p) && memcmp(target_keys[k].key, p, (size_t)(eq - p)) == 0))
            k++;
        if (k == N_TARGET_KEYS)
            return err_set(e, "--target: unknown key '%.*s' (keys: layers, heads, kv_heads, ffn, dim)", (int)(eq - p), p);
        if (want[k] >= 0) return err_set(e, "--target: %s given twice", target_keys[k].key);
        char val[32];
        if ((size_t)(end - eq - 1) >= sizeof val || end == eq + 1)
            return err_set(e, "--target: %s: expected a positive integer, got '%.*s'", target_keys[k].key,
                           (int)(end - eq - 1), eq + 1);
        snprintf(val, sizeof val, "%.*s", (int)(end - eq - 1), eq + 1);
        char *q;
        long v = strtol(val, &q, 10);
        if (*q || q == val || v < 1 || v > (1L << 24))
            return err_set(e, "--target: %s: expected a positive integer, got '%s'", target_keys[k].key, val);
        want[k] = (int)v;
        p = comma ? comma + 1 : end;
        if (comma && !*p) return err_set(e, "--target: trailing comma in '%s'", spec);
    }
    return 0;
}

int prune_target(const LlamaConfig *from, const char *spec, LlamaConfig *to, Err *e) {
    int want[N_TARGET_KEYS], HS = config_head_size(from);
    *to = *from;
    if (!strchr(spec, '=') && *spec) { /* a preset */
        LlamaConfig p;
        Err pe;
        if (config_preset(spec, &p, &pe)) return err_set(e, "--target: %s", pe.msg);
        if (p.vocab != from->vocab)
            return err_set(e, "--target: preset %s has a vocabulary of %d, the model %d", spec, p.vocab, from->vocab);
        if (config_head_size(&p) != HS)
            return err_set(e, "--target: preset %s has heads of %d, the model %d (heads are removed whole)", spec,
                           config_head_size(&p), HS);
        if (p.rope_theta != from->rope_theta || p.norm_eps != from->norm_eps || p.tied != from->tied)
            return err_set(e, "--target: preset %s is of another family (rope theta %g, norm eps %g, %s head), the "
                              "model has rope theta %g, norm eps %g, %s head; give the shape as layers=...,dim=...",
                           spec, p.rope_theta, p.norm_eps, p.tied ? "tied" : "untied", from->rope_theta,
                           from->norm_eps, from->tied ? "tied" : "untied");
        want[0] = p.n_layers, want[1] = p.n_heads, want[2] = p.n_kv_heads, want[3] = p.hidden, want[4] = p.dim;
        snprintf(to->name, sizeof to->name, "%s", p.name);
    } else {
        if (parse_shape(spec, want, e)) return -1;
        char nm[sizeof to->name];
        snprintf(nm, sizeof nm, "%.22s-pruned", from->name[0] ? from->name : "llama");
        memcpy(to->name, nm, sizeof nm);
    }
    int G = from->n_heads / from->n_kv_heads;
    if (want[2] > from->n_kv_heads) /* before heads is derived from it, so the message names what was given */
        return err_set(e, "--target: kv_heads=%d is larger than the model's %d (pruning only removes)", want[2],
                       from->n_kv_heads);
    if (want[1] < 0 && want[2] >= 0) want[1] = want[2] * G; /* fewer groups, the same heads per group */
    for (int k = 0; k < N_TARGET_KEYS; k++) {
        int have = *(const int *)((const char *)from + target_keys[k].off);
        if (want[k] > have)
            return err_set(e, "--target: %s=%d is larger than the model's %d (pruning only removes)",
                           target_keys[k].key, want[k], have);
        if (want[k] > 0) *(int *)((char *)to + target_keys[k].off) = want[k];
    }
    if (to->n_heads % to->n_kv_heads)
        return err_set(e, "--target: heads=%d is not a multiple of kv_heads=%d (every KV group keeps the same number "
                          "of query heads; give kv_heads to remove whole groups)", to->n_heads, to->n_kv_heads);
    if (to->n_heads / to->n_kv_heads > G)
        return err_set(e, "--target: heads=%d over kv_heads=%d is %d query heads per KV group, the model has %d",
                       to->n_heads, to->n_kv_heads, to->n_heads / to->n_kv_heads, G);
    to->head_dim = to->dim % to->n_heads == 0 && to->dim / to->n_heads == HS ? 0 : HS;
    Err ve;
    return config_validate(to, &ve) ? err_set(e, "--target: %s", ve.msg) : 0;
}

// ----------------------------------------------------------------------------
// the plan

typedef struct {
    double s;
    int i;
} Ranked;

static int by_score(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i - y->i;
}

static int by_index(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* The k best of score[0..n) (stride apart) into out, ascending. */
static void top_k(const double *score, int n, int stride, int k, int *out) {
    Ranked *r = xmalloc((size_t)n * sizeof *r);
    for (int i = 0; i < n; i++) r[i] = (Ranked){score[(size_t)i * stride], i};
    qsort(r, (size_t)n, sizeof *r, by_score);
    for (int i = 0; i < k; i++) out[i] = r[i].i;
    qsort(out, (size_t)k, sizeof *out, by_index);
    free(r);
}

void prune_plan(const PruneStats *s, const LlamaConfig *to, int metric, PrunePlan *p) {
    const LlamaConfig *c = &s->c;
    memset(p, 0, sizeof *p);
    p->from = *c;
    p->to = *to;
    int H = c->n_heads, KV = c->n_kv_heads, G = H / KV, F = c->hidden;
    int L2 = to->n_layers, H2 = to->n_heads, KV2 = to->n_kv_heads, G2 = H2 / KV2;
    LC_ASSERT(L2 <= c->n_layers && KV2 <= KV && G2 <= G && to->hidden <= F && to->dim <= c->dim);
    top_k(metric == PRUNE_LAYER_LOSS ? s->layer_dloss : s->layer_bi, c->n_layers, 1, L2, p->layers);
    p->heads = xmalloc((size_t)L2 * H2 * sizeof(int));
    p->groups = xmalloc((size_t)L2 * KV2 * sizeof(int));
    p->ffn = xmalloc((size_t)L2 * to->hidden * sizeof(int));
    p->dim = xmalloc((size_t)to->dim * sizeof(int));
    int *hk = xmalloc((size_t)G2 * sizeof(int));
    for (int i = 0; i < L2; i++) {
        int l = p->layers[i];
        top_k(s->group + (size_t)l * KV, KV, 1, KV2, p->groups + (size_t)i * KV2);
        for (int j = 0; j < KV2; j++) {
            int g = p->groups[(size_t)i * KV2 + j];
            top_k(s->head + (size_t)l * H + (size_t)g * G, G, 1, G2, hk);
            for (int k = 0; k < G2; k++) p->heads[(size_t)i * H2 + (size_t)j * G2 + k] = g * G + hk[k];
        }
        top_k(s->ffn + (size_t)l * F, F, 1, to->hidden, p->ffn + (size_t)i * to->hidden);
    }
    top_k(s->emb, c->dim, 1, to->dim, p->dim);
    free(hk);
}

void prune_plan_free(PrunePlan *p) {
    free(p->heads), free(p->groups), free(p->ffn), free(p->dim);
    p->heads = p->groups = p->ffn = p->dim = NULL;
}

// ----------------------------------------------------------------------------
// slicing

/* dst (nr, nc) = src[rows[i], cols[j]] of a (*, src_cols) matrix; rows/cols
 * NULL: the identity. */
static void gather(float *dst, const float *src, int src_cols, const int *rows, int nr, const int *cols, int nc) {
    for (int i = 0; i < nr; i++) {
        const float *s = src + (size_t)(rows ? rows[i] : i) * src_cols;
        float *d = dst + (size_t)i * nc;
        if (!cols) memcpy(d, s, (size_t)nc * sizeof(float));
        else
            for (int j = 0; j < nc; j++) d[j] = s[cols[j]];
    }
}

/* the rows of whole heads: head list (n) of size HS each */
static int *head_rows(const int *heads, int n, int HS) {
    int *r = xmalloc((size_t)n * HS * sizeof(int));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < HS; j++) r[i * HS + j] = heads[i] * HS + j;
    return r;
}

void prune_apply(const PrunePlan *p, const ParamTable *st, const float *src, const ParamTable *dt, float *dst) {
    const LlamaConfig *a = &p->from, *b = &p->to;
    LlamaWeights ws, wd;
    params_point(a, st, (void *)src, sizeof(float), &ws);
    params_point(b, dt, dst, sizeof(float), &wd);
    int HS = config_head_size(a), D = a->dim, D2 = b->dim, F = a->hidden, F2 = b->hidden;
    int Q = a->n_heads * HS, Q2 = b->n_heads * HS, KVD2 = b->n_kv_heads * HS;
    int heads_out = b->num_labels ? b->num_labels : b->vocab;
    gather(wd.embed, ws.embed, D, NULL, a->vocab, p->dim, D2);
    for (int i = 0; i < b->n_layers; i++) {
        const LayerWeights *s = &ws.layer[p->layers[i]];
        LayerWeights *d = &wd.layer[i];
        int *qr = head_rows(p->heads + (size_t)i * b->n_heads, b->n_heads, HS);
        int *kr = head_rows(p->groups + (size_t)i * b->n_kv_heads, b->n_kv_heads, HS);
        const int *fr = p->ffn + (size_t)i * F2;
        gather(d->ln1, s->ln1, 1, p->dim, D2, NULL, 1);
        gather(d->ln2, s->ln2, 1, p->dim, D2, NULL, 1);
        gather(d->wq, s->wq, D, qr, Q2, p->dim, D2);
        gather(d->wk, s->wk, D, kr, KVD2, p->dim, D2);
        gather(d->wv, s->wv, D, kr, KVD2, p->dim, D2);
        gather(d->wo, s->wo, Q, p->dim, D2, qr, Q2);
        gather(d->wg, s->wg, D, fr, F2, p->dim, D2);
        gather(d->wu, s->wu, D, fr, F2, p->dim, D2);
        gather(d->wd, s->wd, F, p->dim, D2, fr, F2);
        free(qr);
        free(kr);
    }
    gather(wd.norm_f, ws.norm_f, 1, p->dim, D2, NULL, 1);
    if (!b->tied) gather(wd.lm_head, ws.lm_head, D, NULL, heads_out, p->dim, D2);
}

size_t prune_non_embedding(const LlamaConfig *c) {
    ParamTable t;
    Err e;
    if (params_build(c, &t, &e)) return 0;
    size_t n = t.numel - (size_t)c->vocab * c->dim;
    params_free(&t);
    return n;
}
