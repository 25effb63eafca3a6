/*
 * config.c: preset table, validation and RoPE frequencies.
 *
 * Hidden sizes of the llama2.c shapes follow its rule: 4*D*2/3 rounded up
 * to a multiple of 32 (288 -> 768, 512 -> 1376, 768 -> 2048). The real shapes
 * are the values of the published Hugging Face config.json files.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* name, D, L, H, KV, F, V, ctx, eps, theta, scaling, factor, low, high, orig, tied,
 * num_labels, pad_id (causal LMs: 0, -1), head_dim (0: D/H) */
static const LlamaConfig presets[] = {
    {"tiny", 64, 2, 4, 2, 96, 256, 128, 1e-5f, 10000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 0, 0, -1, 0},
    {"15m", 288, 6, 6, 6, 768, 32000, 1024, 1e-5f, 10000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 1, 0, -1, 0},
    {"42m", 512, 8, 8, 8, 1376, 32000, 1024, 1e-5f, 10000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 1, 0, -1, 0},
    {"110m", 768, 12, 12, 12, 2048, 32000, 1024, 1e-5f, 10000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 1, 0, -1, 0},
    {"llama1-7b", 4096, 32, 32, 32, 11008, 32000, 2048, 1e-6f, 10000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 0, 0, -1, 0},
    {"llama2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 1e-5f, 10000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 0, 0, -1, 0},
    {"llama3-8b", 4096, 32, 32, 8, 14336, 128256, 8192, 1e-5f, 500000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 0, 0, -1, 0},
    {"llama3.1-8b", 4096, 32, 32, 8, 14336, 128256, 131072, 1e-5f, 500000.0f, ROPE_SCALING_LLAMA3, 8.0f, 1.0f, 4.0f, 8192, 0, 0, -1, 0},
    {"llama3.2-1b", 2048, 16, 32, 8, 8192, 128256, 131072, 1e-5f, 500000.0f, ROPE_SCALING_LLAMA3, 32.0f, 1.0f, 4.0f, 8192, 1, 0, -1, 0},
    {"llama3.2-3b", 3072, 28, 24, 8, 8192, 128256, 131072, 1e-5f, 500000.0f, ROPE_SCALING_LLAMA3, 32.0f, 1.0f, 4.0f, 8192, 1, 0, -1, 0},
    /* SmolLM2-135M (HuggingFaceTB's config.json): 106,203,456 non-embedding parameters, 134,515,008 in all */
    {"smollm2-135m", 576, 30, 9, 3, 1536, 49152, 8192, 1e-5f, 100000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 1, 0, -1, 0},
    /* llamac prune targets at about half its non-embedding parameters (docs/prune.md):
     * width (Minitron's kind): D 576 -> 384, F 1536 -> 1024, all 9/3 heads of 64, all 30 layers:
     * 53,107,584 non-embedding (50.006%), 71,981,952 in all */
    {"smollm2-135m-half", 384, 30, 9, 3, 1024, 49152, 8192, 1e-5f, 100000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 1, 0, -1, 64},
    /* depth: 15 of the 30 layers: 53,102,016 non-embedding (50.000%), 81,413,568 in all */
    {"smollm2-135m-half-depth", 576, 15, 9, 3, 1536, 49152, 8192, 1e-5f, 100000.0f, ROPE_SCALING_NONE, 0, 0, 0, 0, 1, 0, -1, 0},
};
#define N_PRESETS ((int)(sizeof presets / sizeof presets[0]))

static const char *const preset_names[N_PRESETS + 1] = {
    "tiny", "15m", "42m", "110m", "llama1-7b", "llama2-7b", "llama3-8b",
    "llama3.1-8b", "llama3.2-1b", "llama3.2-3b", "smollm2-135m", "smollm2-135m-half",
    "smollm2-135m-half-depth", NULL,
};

const char *const *config_preset_names(void) { return preset_names; }

int config_preset(const char *name, LlamaConfig *c, Err *e) {
    for (int i = 0; i < N_PRESETS; i++) {
        LC_ASSERT(strcmp(presets[i].name, preset_names[i]) == 0);
        if (strcmp(name, presets[i].name) == 0) {
            *c = presets[i];
            return 0;
        }
    }
    char list[320] = "";
    for (int i = 0; i < N_PRESETS; i++) {
        strncat(list, presets[i].name, sizeof list - strlen(list) - 1);
        if (i + 1 < N_PRESETS) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return err_set(e, "unknown preset '%s' (known: %s)", name, list);
}

int config_validate(const LlamaConfig *c, Err *e) {
    if (c->dim <= 0) return err_set(e, "dim: must be positive, got %d", c->dim);
    if (c->n_layers <= 0) return err_set(e, "n_layers: must be positive, got %d", c->n_layers);
    if (c->n_heads <= 0) return err_set(e, "n_heads: must be positive, got %d", c->n_heads);
    if (c->n_kv_heads <= 0) return err_set(e, "n_kv_heads: must be positive, got %d", c->n_kv_heads);
    if (c->hidden <= 0) return err_set(e, "hidden: must be positive, got %d", c->hidden);
    if (c->vocab <= 1) return err_set(e, "vocab: must be at least 2, got %d", c->vocab);
    if (c->max_seq <= 0) return err_set(e, "max_seq: must be positive, got %d", c->max_seq);
    if (c->n_heads % c->n_kv_heads != 0)
        return err_set(e, "n_heads: %d is not divisible by n_kv_heads %d", c->n_heads, c->n_kv_heads);
    if (c->head_dim < 0) return err_set(e, "head_dim: must be >= 0 (0: dim/n_heads), got %d", c->head_dim);
    if (c->head_dim == 0 && c->dim % c->n_heads != 0)
        return err_set(e, "dim: %d is not divisible by n_heads %d (set head_dim for another head size)", c->dim,
                       c->n_heads);
    if (config_head_size(c) % 2 != 0)
        return err_set(e, "head_dim: head size %d must be even for RoPE", config_head_size(c));
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return err_set(e, "norm_eps: must be in (0, 1), got %g", c->norm_eps);
    if (!(c->rope_theta > 1)) return err_set(e, "rope_theta: must be > 1, got %g", c->rope_theta);
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        if (!(c->rope_factor >= 1)) return err_set(e, "rope_factor: must be >= 1, got %g", c->rope_factor);
        if (!(c->rope_high_freq > c->rope_low_freq && c->rope_low_freq > 0))
            return err_set(e, "rope_high_freq: must exceed rope_low_freq > 0 (got %g, %g)",
                           c->rope_high_freq, c->rope_low_freq);
        if (c->rope_orig_ctx <= 0) return err_set(e, "rope_orig_ctx: must be positive, got %d", c->rope_orig_ctx);
    } else if (c->rope_scaling != ROPE_SCALING_NONE) {
        return err_set(e, "rope_scaling: unknown kind %d", c->rope_scaling);
    }
    if (c->num_labels < 0) return err_set(e, "num_labels: must be >= 0, got %d", c->num_labels);
    if (c->num_labels && c->tied)
        return err_set(e, "tied: a classification model's score head cannot share the embedding");
    if (c->num_labels && c->pad_id >= c->vocab)
        return err_set(e, "pad_id: %d is outside the vocabulary of %d", c->pad_id, c->vocab);
    return 0;
}

void config_rope_inv_freq(const LlamaConfig *c, float *inv_freq) {
    int HS = config_head_size(c);
    for (int i = 0; i < HS / 2; i++) {
        /* transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), float32 */
        float expo = (float)(2 * i) / (float)HS;
        float f = 1.0f / powf(c->rope_theta, expo);
        if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
            /* transformers _compute_llama3_parameters, same branch structure */
            float low_wavelen = (float)c->rope_orig_ctx / c->rope_low_freq;
            float high_wavelen = (float)c->rope_orig_ctx / c->rope_high_freq;
            float wavelen = 2.0f * (float)M_PI / f;
            float g = wavelen > low_wavelen ? f / c->rope_factor : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                float smooth = ((float)c->rope_orig_ctx / wavelen - c->rope_low_freq) /
                               (c->rope_high_freq - c->rope_low_freq);
                g = (1.0f - smooth) * g / c->rope_factor + smooth * g;
            }
            f = g;
        }
        inv_freq[i] = f;
    }
}

// ----------------------------------------------------------------------------
// key=value setting, one row per field (tables over switch ladders)

typedef struct {
    const char *key;
    char kind; /* 'i' int, 'f' float */
    size_t off;
    double lo, hi;
} ConfigField;

#define F(key, kind, lo, hi) {#key, kind, offsetof(LlamaConfig, key), lo, hi}
static const ConfigField fields[] = {
    F(dim, 'i', 1, 1 << 16),         F(n_layers, 'i', 1, 1024),
    F(n_heads, 'i', 1, 1024),        F(n_kv_heads, 'i', 1, 1024),
    F(hidden, 'i', 1, 1 << 18),      F(vocab, 'i', 2, 1 << 24),
    F(max_seq, 'i', 1, 1 << 24),     F(norm_eps, 'f', 1e-12, 0.5),
    F(rope_theta, 'f', 1.0001, 1e12), F(rope_scaling, 'i', 0, 1),
    F(rope_factor, 'f', 1, 1e6),     F(rope_low_freq, 'f', 0, 1e6),
    F(rope_high_freq, 'f', 0, 1e6),  F(rope_orig_ctx, 'i', 1, 1 << 24),
    F(tied, 'i', 0, 1),              F(num_labels, 'i', 0, 1 << 16),
    F(pad_id, 'i', -1, 1 << 24),     F(head_dim, 'i', 0, 1 << 16),
};
#undef F

int config_set(LlamaConfig *c, const char *key, const char *value, Err *e) {
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const ConfigField *f = &fields[i];
        if (strcmp(f->key, key) != 0) continue;
        char *p = (char *)c + f->off;
        if (f->kind == 'i') {
            long v;
            if (parse_int(value, (long)f->lo, (long)f->hi, &v, key, e)) return -1;
            *(int *)p = (int)v;
        } else {
            double v;
            if (parse_float(value, f->lo, f->hi, &v, key, e)) return -1;
            *(float *)p = (float)v;
        }
        return 0;
    }
    return err_set(e, "unknown model field '%s'", key);
}

int config_set_kv(LlamaConfig *c, const char *kv, Err *e) {
    char key[64];
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof key)
        return err_set(e, "--set: expected key=value, got '%s'", kv);
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    return config_set(c, key, eq + 1, e);
}
