/*
 * lora.c: everything of lora.h that is not an op: module names and shapes,
 * the PEFT defaults, parsing and validation of the flags, the adapter table
 * (params_add, so offsets are aligned like the base table's), initialisation
 * and merging into host base weights.
 *
 * Initialisation follows PEFT's LoraLayer.reset_lora_parameters: lora_A gets
 * nn.init.kaiming_uniform_(a = sqrt(5)), i.e. U(-b, b) with
 * b = sqrt(3) * sqrt(2 / (1 + a^2)) / sqrt(fan_in) = 1 / sqrt(Din); with
 * init_lora_weights = "gaussian" it gets normal(0, std = 1 / r); lora_B is 0.
 */
#include "lora.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const module_names[LORA_NMOD] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};
/* the short forms of --lora-targets */
static const char *const module_short[LORA_NMOD] = {"q", "k", "v", "o", "gate", "up", "down"};

const char *lora_module_name(int m) {
    LC_ASSERT(m >= 0 && m < LORA_NMOD);
    return module_names[m];
}

void lora_module_dims(const LlamaConfig *c, int m, int *din, int *dout) {
    int HS = config_head_size(c), D = c->dim, Q = c->n_heads * HS, KVD = c->n_kv_heads * HS;
    static const int in_is_d[LORA_NMOD] = {1, 1, 1, 0, 1, 1, 0};
    int out[LORA_NMOD] = {Q, KVD, KVD, D, c->hidden, c->hidden, D};
    LC_ASSERT(m >= 0 && m < LORA_NMOD);
    *din = in_is_d[m] ? D : m == LORA_O ? Q : c->hidden;
    *dout = out[m];
}

void lora_config_default(LoraConfig *lc, unsigned targets) {
    memset(lc, 0, sizeof *lc);
    lc->r = 8;
    lc->alpha = 8.0f;
    lc->dropout = 0.0f;
    lc->rslora = 0;
    lc->targets = targets;
    lc->all_layers = 1;
    lc->init = LORA_INIT_KAIMING;
}

// ----------------------------------------------------------------------------
// flags

/* Next comma-separated word of *s, blanks trimmed, into w (len < n). */
static int next_word(const char **s, char *w, size_t n) {
    const char *p = *s, *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    *s = *end ? end + 1 : end;
    while (p < end && isspace((unsigned char)*p)) p++;
    while (end > p && isspace((unsigned char)end[-1])) end--;
    size_t k = (size_t)(end - p);
    if (k >= n) k = n - 1;
    memcpy(w, p, k);
    w[k] = 0;
    return (int)k;
}

int lora_parse_targets(const char *s, unsigned *targets, Err *e) {
    unsigned t = 0;
    char w[64];
    const char *p = s;
    if (!*s) return err_set(e, "--lora-targets: empty list (known: q_proj ... down_proj, all-linear)");
    for (;;) {
        int more = strchr(p, ',') != NULL;
        if (!next_word(&p, w, sizeof w))
            return err_set(e, "--lora-targets: empty module name in '%s'", s);
        int m = -1;
        if (strcmp(w, "all-linear") == 0) {
            t |= LORA_ALL_LINEAR;
            m = LORA_NMOD;
        }
        for (int i = 0; i < LORA_NMOD && m < 0; i++)
            if (strcmp(w, module_names[i]) == 0 || strcmp(w, module_short[i]) == 0) m = i;
        if (m < 0)
            return err_set(e, "--lora-targets: unknown module '%s' (known: q_proj k_proj v_proj o_proj "
                           "gate_proj up_proj down_proj, all-linear)", w);
        if (m < LORA_NMOD) t |= 1u << m;
        if (!more) break;
    }
    *targets = t;
    return 0;
}

/* Strict non-negative integer of a whole word. */
static int word_int(const char *w, long *v) {
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*w)) return -1;
    *v = strtol(w, &end, 10);
    return errno || *end ? -1 : 0;
}

int lora_parse_layers(const char *s, LoraConfig *lc, int n_layers, Err *e) {
    unsigned char sel[LC_MAX_LAYERS] = {0};
    char w[64];
    const char *p = s;
    int any = 0;
    if (!*s) return err_set(e, "--lora-layers: empty list");
    for (;;) {
        int more = strchr(p, ',') != NULL;
        if (!next_word(&p, w, sizeof w)) return err_set(e, "--lora-layers: empty item in '%s'", s);
        long lo, hi;
        char *dash = strchr(w, '-');
        if (dash) {
            *dash = 0;
            if (word_int(w, &lo) || word_int(dash + 1, &hi))
                return err_set(e, "--lora-layers: '%s-%s' is not a layer range", w, dash + 1);
            if (hi < lo) return err_set(e, "--lora-layers: empty range %ld-%ld", lo, hi);
        } else {
            if (word_int(w, &lo)) return err_set(e, "--lora-layers: '%s' is not a layer number", w);
            hi = lo;
        }
        if (hi >= n_layers)
            return err_set(e, "--lora-layers: layer %ld out of range [0, %d)", hi, n_layers);
        for (long l = lo; l <= hi; l++) sel[l] = 1, any = 1;
        if (!more) break;
    }
    LC_ASSERT(any);
    lc->all_layers = 0;
    memcpy(lc->layers, sel, sizeof sel);
    return 0;
}

int lora_validate(const LoraConfig *lc, const LlamaConfig *c, Err *e) {
    if (lc->r <= 0) return err_set(e, "--lora-r: must be positive, got %d", lc->r);
    if (!(lc->alpha > 0) || !isfinite(lc->alpha))
        return err_set(e, "--lora-alpha: must be positive, got %g", (double)lc->alpha);
    if (!(lc->dropout >= 0 && lc->dropout < 1))
        return err_set(e, "--lora-dropout: must be in [0, 1), got %g", (double)lc->dropout);
    if (lc->targets & ~LORA_ALL_LINEAR)
        return err_set(e, "--lora-targets: unknown module bits 0x%x", lc->targets & ~LORA_ALL_LINEAR);
    if (!lc->targets) return err_set(e, "--lora-targets: no target module");
    if (lc->head && c->num_labels <= 0)
        return err_set(e, "modules_to_save: only a classification model (num_labels > 0) has a score head to train");
    if (lc->init != LORA_INIT_KAIMING && lc->init != LORA_INIT_GAUSSIAN)
        return err_set(e, "--lora-init: unknown initialisation %d", lc->init);
    if (c->n_layers > LC_MAX_LAYERS)
        return err_set(e, "n_layers: %d exceeds the supported %d", c->n_layers, LC_MAX_LAYERS);
    if (!lc->all_layers) {
        int any = 0;
        for (int l = 0; l < LC_MAX_LAYERS; l++) {
            if (!lc->layers[l]) continue;
            if (l >= c->n_layers)
                return err_set(e, "--lora-layers: layer %d out of range [0, %d)", l, c->n_layers);
            any = 1;
        }
        if (!any) return err_set(e, "--lora-layers: no layer selected");
    }
    for (int m = 0; m < LORA_NMOD; m++) {
        if (!(lc->targets >> m & 1u)) continue;
        int din, dout;
        lora_module_dims(c, m, &din, &dout);
        int lim = din < dout ? din : dout;
        if (lc->r > lim)
            return err_set(e, "--lora-r: %d exceeds min(in, out) = %d of %s", lc->r, lim, module_names[m]);
    }
    return 0;
}

int lora_config_from_flags(LoraConfig *lc, long r, double alpha, double dropout, const char *targets,
                           const char *layers, int rslora, const LlamaConfig *c, Err *e) {
    unsigned t = 1u << LORA_Q | 1u << LORA_K | 1u << LORA_V | 1u << LORA_O;
    if (targets && lora_parse_targets(targets, &t, e)) return -1;
    lora_config_default(lc, t);
    if (r < 1 || r > 1 << 20) return err_set(e, "--lora-r: must be in [1, %d], got %ld", 1 << 20, r);
    if (alpha < 0) return err_set(e, "--lora-alpha: must be positive, got %g", alpha);
    lc->r = (int)r;
    lc->alpha = alpha == 0 ? (float)r : (float)alpha;
    lc->dropout = (float)dropout;
    lc->rslora = rslora != 0;
    if (layers && lora_parse_layers(layers, lc, c->n_layers, e)) return -1;
    return lora_validate(lc, c, e);
}

float lora_scale(const LoraConfig *lc) {
    /* PEFT computes the scaling in Python double, applied to float32 */
    return (float)(lc->rslora ? lc->alpha / sqrt((double)lc->r) : (double)lc->alpha / lc->r);
}

// ----------------------------------------------------------------------------
// the adapter table

int lora_build(const LoraConfig *lc, const LlamaConfig *c, ParamTable *t, Err *e) {
    memset(t, 0, sizeof *t);
    if (config_validate(c, e) || lora_validate(lc, c, e)) return -1;
    int cap = 0;
    char n[64];
    for (int l = 0; l < c->n_layers; l++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!lora_adapted(lc, l, m)) continue;
            int din, dout, g = m <= LORA_O ? PG_ATTN : PG_MLP;
            const char *blk = m <= LORA_O ? "self_attn" : "mlp";
            lora_module_dims(c, m, &din, &dout);
            snprintf(n, sizeof n, "model.layers.%d.%s.%s.lora_A.weight", l, blk, module_names[m]);
            params_add(t, &cap, n, 2, lc->r, din, g, l);
            snprintf(n, sizeof n, "model.layers.%d.%s.%s.lora_B.weight", l, blk, module_names[m]);
            params_add(t, &cap, n, 2, dout, lc->r, g, l);
        }
    if (lc->head) params_add(t, &cap, "score.weight", 2, c->num_labels, c->dim, PG_HEAD, -1);
    return 0;
}

void lora_point(const LoraConfig *lc, const LlamaConfig *c, const ParamTable *t, float *base,
                LoraWeights *w) {
    int i = 0;
    memset(w, 0, sizeof *w);
    for (int l = 0; l < c->n_layers; l++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!lora_adapted(lc, l, m)) continue;
            LC_ASSERT(i + 1 < t->n);
            w->layer[l][m].A = base + t->p[i++].offset;
            w->layer[l][m].B = base + t->p[i++].offset;
        }
    if (lc->head) w->head = base + t->p[i++].offset;
    LC_ASSERT(i == t->n);
}

void lora_init_weights(const LoraConfig *lc, const ParamTable *t, float *base, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    int pairs = t->n - (lc->head != 0);
    LC_ASSERT(pairs % 2 == 0);
    for (int i = 0; i < pairs; i += 2) {
        const ParamInfo *a = &t->p[i], *b = &t->p[i + 1];
        float *A = base + a->offset;
        if (lc->init == LORA_INIT_GAUSSIAN) {
            float std = 1.0f / (float)lc->r;
            for (size_t j = 0; j < a->numel; j++) A[j] = std * rng_normal(&r);
        } else {
            float bound = (float)(1.0 / sqrt((double)a->shape[1]));
            for (size_t j = 0; j < a->numel; j++) A[j] = bound * (2.0f * rng_uniform(&r) - 1.0f);
        }
        memset(base + b->offset, 0, b->numel * sizeof(float));
    }
}

/* The base weight of module m in layer weights lw. */
static float *module_weight(LayerWeights *lw, int m) {
    float *const w[LORA_NMOD] = {lw->wq, lw->wk, lw->wv, lw->wo, lw->wg, lw->wu, lw->wd};
    return w[m];
}

void lora_merge(const LoraConfig *lc, const LlamaConfig *c, const ParamTable *bt, float *base_params,
                const ParamTable *lt, const float *lora_params, int sign) {
    LlamaWeights w; /* 9 + 14 KiB of pointers */
    LoraWeights a;
    LC_ASSERT(sign == 1 || sign == -1);
    params_point(c, bt, base_params, sizeof(float), &w);
    lora_point(lc, c, lt, (float *)lora_params, &a);
    float s = lora_scale(lc);
    int r = lc->r;
    if (lc->head && sign > 0) memcpy(w.lm_head, a.head, (size_t)c->num_labels * c->dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!lora_adapted(lc, l, m)) continue;
            int din, dout;
            lora_module_dims(c, m, &din, &dout);
            float *W = module_weight(&w.layer[l], m);
            const float *A = a.layer[l][m].A, *B = a.layer[l][m].B;
            /* PEFT's get_delta_weight: (B @ A) * scaling in float32 */
            #pragma omp parallel for schedule(static)
            for (int o = 0; o < dout; o++)
                for (int i = 0; i < din; i++) {
                    double acc = 0;
                    for (int k = 0; k < r; k++) acc += (double)B[(size_t)o * r + k] * A[(size_t)k * din + i];
                    float d = (float)acc * s;
                    W[(size_t)o * din + i] += sign > 0 ? d : -d;
                }
        }
}
