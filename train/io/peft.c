/*
 * peft.c: PEFT adapter directories in and out (contract in peft.h). The
 * config is checked key by key against a table of what llamac computes, so
 * an option that would change the numbers is never silently dropped; the
 * weights go from the mapped safetensors file into the adapter buffer by
 * name, as hf.c does for base models.
 */
#include "peft.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "iofile.h"
#include "safetensors.h"

int peft_is_dir(const char *path) {
    char p[4096];
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    snprintf(p, sizeof p, "%s/" PEFT_CONFIG, path);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

// ----------------------------------------------------------------------------
// adapter_config.json in

/* Keys that only describe the file or matter only beside an option that is
 * refused anyway (megatron_core names megatron_config's module,
 * qalora_group_size belongs to use_qalora, ensure_weight_tying to adapters
 * on tied embeddings, which llamac has none of). */
static const char *const info_keys[] = {
    "base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping",
    "megatron_core", "qalora_group_size", "ensure_weight_tying",
};

/* Keys read into the LoraConfig below. */
static const char *const read_keys[] = {
    "r", "lora_alpha", "lora_dropout", "use_rslora", "target_modules", "layers_to_transform",
    "init_lora_weights", "bias", "fan_in_fan_out", "peft_type", "task_type", "modules_to_save",
};

static int in_list(const char *k, const char *const *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(k, v[i]) == 0) return 1;
    return 0;
}

/* null, false, {}, [], "": what PEFT writes for an option that is off. */
static int neutral(const json_t *v) {
    return json_is_null(v) || json_is_false(v) || (json_is_object(v) && json_object_size(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0) || (json_is_string(v) && !*json_string_value(v));
}

/* "<path>: <key> = <value> is not supported by llamac<why>" */
static int unsupported(Err *e, const char *path, const char *key, const json_t *v, const char *why) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    int rc = err_set(e, "%s: %s = %.40s%s is not supported by llamac%s", path, key, s ? s : "?",
                     s && strlen(s) > 40 ? "..." : "", why);
    free(s);
    return rc;
}

/* A target_modules entry: a module name ("q_proj"), or a full module path
 * ("model.layers.3.self_attn.q_proj": what PEFT writes for "all-linear" on
 * models with few layers), which names its layer too (-1: every layer). */
static int target_entry(const char *s, int n_layers, int *mod, int *layer) {
    const char *dot = strrchr(s, '.'), *name = dot ? dot + 1 : s;
    *mod = -1;
    *layer = -1;
    for (int i = 0; i < LORA_NMOD && *mod < 0; i++)
        if (strcmp(name, lora_module_name(i)) == 0) *mod = i;
    if (*mod < 0) return -1;
    if (!dot) return 0;
    const char *l = strstr(s, "layers.");
    char *end;
    long v = l ? strtol(l + 7, &end, 10) : -1;
    if (!l || end == l + 7 || *end != '.' || v < 0 || v >= n_layers) return -1;
    *layer = (int)v;
    return 0;
}

/* targets, and in lc->layers / lc->all_layers the layers full module paths
 * name (every layer when none does); modules named with different layer
 * sets cannot be one LoraConfig and are refused */
static int parse_targets(const char *path, const json_t *v, const LlamaConfig *c, unsigned *targets,
                         LoraConfig *lc, Err *e) {
    *targets = 0;
    lc->all_layers = 1;
    if (!v || json_is_null(v)) { /* PEFT's default for model_type llama */
        *targets = 1u << LORA_Q | 1u << LORA_V;
        return 0;
    }
    if (json_is_string(v)) {
        if (strcmp(json_string_value(v), "all-linear") == 0) {
            *targets = LORA_ALL_LINEAR;
            return 0;
        }
        return unsupported(e, path, "target_modules", v,
                           " (a string is a regular expression to PEFT: give a list of module names or "
                           "\"all-linear\")");
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return err_set(e, "%s: target_modules must be a non-empty list of module names", path);
    static unsigned char seen[LORA_NMOD][LC_MAX_LAYERS];
    memset(seen, 0, sizeof seen);
    size_t k;
    json_t *x;
    json_array_foreach(v, k, x) {
        const char *s = json_string_value(x);
        int m, l;
        if (!s || target_entry(s, c->n_layers, &m, &l))
            return err_set(e, "%s: target_modules: unknown module '%.60s' (llamac adapts q_proj k_proj v_proj "
                           "o_proj gate_proj up_proj down_proj, by name or as model.layers.N.<part>.<name>)", path,
                           s ? s : "(not a string)");
        *targets |= 1u << m;
        for (int i = 0; i < c->n_layers; i++)
            if (l < 0 || l == i) seen[m][i] = 1;
    }
    int first = -1;
    for (int m = 0; m < LORA_NMOD; m++) {
        if (!(*targets >> m & 1)) continue;
        if (first < 0) first = m;
        else if (memcmp(seen[m], seen[first], (size_t)c->n_layers))
            return err_set(e, "%s: target_modules: %s and %s are adapted on different layers (llamac needs one "
                           "layer set for all targets)", path, lora_module_name(first), lora_module_name(m));
    }
    for (int i = 0; i < c->n_layers; i++) lc->all_layers &= seen[first][i];
    memcpy(lc->layers, seen[first], (size_t)c->n_layers);
    return 0;
}

static int parse_layers(const char *path, const json_t *v, const LlamaConfig *c, LoraConfig *lc, Err *e) {
    lc->all_layers = 1;
    memset(lc->layers, 0, sizeof lc->layers);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) && (!json_is_array(v) || json_array_size(v) == 0))
        return err_set(e, "%s: layers_to_transform must be null, a layer index or a non-empty list of them", path);
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t k = 0; k < n; k++) {
        const json_t *x = json_is_array(v) ? json_array_get(v, k) : v;
        if (!json_is_integer(x))
            return err_set(e, "%s: layers_to_transform must hold layer indices (integers)", path);
        json_int_t l = json_integer_value(x);
        if (l < 0 || l >= c->n_layers)
            return err_set(e, "%s: layers_to_transform: layer %lld out of range [0, %d) of the base model", path,
                           (long long)l, c->n_layers);
        lc->layers[l] = 1;
    }
    lc->all_layers = 0;
    return 0;
}

/* modules_to_save: a copy of a base module trained whole and saved under
 * its own name. llamac keeps one, a classifier's score head; PEFT's
 * SEQ_CLS adds "classifier" and "score" to the list (so a saved list reads
 * ["score", "classifier", "score"]), and "classifier" names no module of a
 * Llama. *head = 1 when the list names "score". */
static int parse_modules_to_save(const char *path, const json_t *v, const LlamaConfig *c, int *head, Err *e) {
    *head = 0;
    if (!v || neutral(v)) return 0;
    if (!json_is_array(v)) return unsupported(e, path, "modules_to_save", v, " (a list of module names)");
    size_t k;
    json_t *x;
    json_array_foreach(v, k, x) {
        const char *s = json_string_value(x);
        if (s && strcmp(s, "score") == 0) *head = 1;
        else if (!s || strcmp(s, "classifier") != 0)
            return unsupported(e, path, "modules_to_save", v, " (only [\"score\"], a reward model's head)");
    }
    if (*head && c->num_labels <= 0)
        return err_set(e, "%s: modules_to_save [\"score\"] trains a classifier's head, the base model is a causal "
                       "LM (no score.weight)", path);
    return 0;
}

static int parse_config(const char *path, const json_t *j, const LlamaConfig *c, LoraConfig *lc, char *base_name,
                        size_t nb, Err *e) {
    if (!json_is_object(j)) return err_set(e, "%s: not a JSON object", path);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        if (in_list(key, read_keys, sizeof read_keys / sizeof *read_keys) ||
            in_list(key, info_keys, sizeof info_keys / sizeof *info_keys) || neutral(v))
            continue;
        return unsupported(e, path, key, v, "");
    }
    const json_t *pt = json_object_get(j, "peft_type"), *tt = json_object_get(j, "task_type");
    if (!json_is_string(pt)) return err_set(e, "%s: missing peft_type (a PEFT LoRA adapter has \"LORA\")", path);
    if (strcmp(json_string_value(pt), "LORA") != 0) return unsupported(e, path, "peft_type", pt, " (only LORA)");
    int seq_cls = json_is_string(tt) && strcmp(json_string_value(tt), "SEQ_CLS") == 0, head;
    if (tt && !json_is_null(tt) && !seq_cls &&
        (!json_is_string(tt) || strcmp(json_string_value(tt), "CAUSAL_LM") != 0))
        return unsupported(e, path, "task_type", tt, " (only CAUSAL_LM and SEQ_CLS)");
    if (seq_cls && c->num_labels <= 0)
        return err_set(e, "%s: task_type \"SEQ_CLS\" is an adapter for a classifier (a reward model), the base "
                       "model is a causal LM", path);
    if (parse_modules_to_save(path, json_object_get(j, "modules_to_save"), c, &head, e)) return -1;
    const json_t *bias = json_object_get(j, "bias"), *fifo = json_object_get(j, "fan_in_fan_out");
    if (bias && !json_is_null(bias) && (!json_is_string(bias) || strcmp(json_string_value(bias), "none") != 0))
        return unsupported(e, path, "bias", bias, " (only \"none\")");
    if (fifo && !json_is_false(fifo) && !json_is_null(fifo))
        return unsupported(e, path, "fan_in_fan_out", fifo, " (Llama's nn.Linear weights are (out, in))");

    unsigned targets;
    LoraConfig named; /* the layers full module paths name */
    memset(&named, 0, sizeof named);
    if (parse_targets(path, json_object_get(j, "target_modules"), c, &targets, &named, e)) return -1;
    lora_config_default(lc, targets);
    const json_t *r = json_object_get(j, "r"), *a = json_object_get(j, "lora_alpha"),
                 *d = json_object_get(j, "lora_dropout"), *rs = json_object_get(j, "use_rslora"),
                 *init = json_object_get(j, "init_lora_weights");
    if (r) {
        if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) > (1 << 20))
            return err_set(e, "%s: r must be a positive integer", path);
        lc->r = (int)json_integer_value(r);
    }
    if (a) {
        if (!json_is_number(a) || !(json_number_value(a) > 0) || !isfinite(json_number_value(a)))
            return err_set(e, "%s: lora_alpha must be a positive number", path);
        lc->alpha = (float)json_number_value(a);
    }
    if (d) {
        if (!json_is_number(d) || !(json_number_value(d) >= 0 && json_number_value(d) < 1))
            return err_set(e, "%s: lora_dropout must be a number in [0, 1)", path);
        lc->dropout = (float)json_number_value(d);
    }
    if (rs && !json_is_null(rs)) {
        if (!json_is_boolean(rs)) return err_set(e, "%s: use_rslora must be true or false", path);
        lc->rslora = json_is_true(rs);
    }
    /* the weights come from the file: init only records how they started */
    if (init && !json_is_true(init) && !json_is_false(init) &&
        !(json_is_string(init) && strcmp(json_string_value(init), "gaussian") == 0))
        return unsupported(e, path, "init_lora_weights", init, " (true, \"gaussian\" or false)");
    if (json_is_string(init)) lc->init = LORA_INIT_GAUSSIAN;
    lc->head = head || seq_cls; /* PeftModelForSequenceClassification adds "score" itself */
    if (parse_layers(path, json_object_get(j, "layers_to_transform"), c, lc, e)) return -1;
    if (!named.all_layers) { /* full module paths: their layers (within layers_to_transform, if both) */
        for (int i = 0; i < c->n_layers; i++) lc->layers[i] = named.layers[i] && (lc->all_layers || lc->layers[i]);
        lc->all_layers = 0;
    }
    Err ve;
    if (lora_validate(lc, c, &ve)) return err_set(e, "%s: %s", path, ve.msg);
    if (base_name && nb) {
        const char *bn = json_string_value(json_object_get(j, "base_model_name_or_path"));
        snprintf(base_name, nb, "%s", bn ? bn : "");
    }
    return 0;
}

int peft_read_config(const char *dir, const LlamaConfig *c, LoraConfig *lc, char *base_name, size_t n,
                     Err *e) {
    char path[4096 + 32];
    snprintf(path, sizeof path, "%s/" PEFT_CONFIG, dir);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open (not a PEFT adapter directory)", path);
    fclose(f);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    char jq[2 * ERR_QUOTE_CAP]; /* jansson quotes the text near the error */
    if (!j) return err_set(e, "%s: not valid JSON: %s (line %d)", path, err_quote(jq, sizeof jq, je.text, strlen(je.text)), je.line);
    int rc = parse_config(path, j, c, lc, base_name, n, e);
    json_decref(j);
    return rc;
}

// ----------------------------------------------------------------------------
// adapter_model.safetensors in

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    int o = 0;
    buf[0] = 0;
    for (int d = 0; d < ndim && o < (int)n - 24; d++)
        o += snprintf(buf + o, n - (size_t)o, "%s%lld", d ? ", " : "", (long long)shape[d]);
}

static int load_weights(const char *path, const LlamaConfig *c, PeftAdapter *a, Err *e) {
    Safetensors f;
    if (safetensors_open(&f, path, e)) return -1;
    int rc = -1;
    char key[256], got[128], want[128];
    for (int i = 0; i < a->t.n; i++) {
        const ParamInfo *p = &a->t.p[i];
        snprintf(key, sizeof key, PEFT_PREFIX "%s", p->name);
        int k = safetensors_find(&f, key);
        if (k < 0) {
            err_set(e, "%s: missing tensor %s (adapter_config.json asks for it)", path, key);
            goto out;
        }
        const SafetensorsTensor *s = &f.t[k];
        if (s->ndim != 2 || s->shape[0] != p->shape[0] || s->shape[1] != p->shape[1]) {
            shape_str(got, sizeof got, s->ndim, s->shape);
            shape_str(want, sizeof want, 2, p->shape);
            err_set(e, "%s: tensor %s has shape [%s], the base model needs [%s]: an adapter for another model%s%s%s",
                    path, key, got, want, a->base_name[0] ? " (its base: " : "", a->base_name,
                    a->base_name[0] ? ")" : "");
            goto out;
        }
        if (safetensors_read_f32(&f, k, a->params + p->offset, e)) goto out;
        if (iofile_check_finite(path, key, a->params + p->offset, p->numel, e)) goto out;
    }
    for (int k = 0; k < f.n; k++) {
        const char *nm = f.t[k].name;
        size_t np = strlen(PEFT_PREFIX);
        if (strncmp(nm, PEFT_PREFIX, np) != 0 || params_find(&a->t, nm + np) < 0) {
            err_set(e, "%s: unexpected tensor %.100s (not an adapter adapter_config.json describes on this %d-layer "
                    "base model)", path, nm, c->n_layers);
            goto out;
        }
    }
    rc = 0;
out:
    safetensors_close(&f);
    return rc;
}

int peft_load(const char *dir, const LlamaConfig *c, PeftAdapter *a, Err *e) {
    memset(a, 0, sizeof *a);
    if (peft_read_config(dir, c, &a->lc, a->base_name, sizeof a->base_name, e)) return -1;
    char path[4096 + 32];
    snprintf(path, sizeof path, "%s/" PEFT_WEIGHTS, dir);
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(path, sizeof path, "%s/adapter_model.bin", dir);
        if (stat(path, &st) == 0)
            return err_set(e, "%s: PyTorch pickle weights are not read (save with safe_serialization, the default)",
                           path);
        return err_set(e, "%s: no " PEFT_WEIGHTS, dir);
    }
    Err ve;
    if (lora_build(&a->lc, c, &a->t, &ve)) return err_set(e, "%s: %s", dir, ve.msg);
    a->params = xalloc_aligned(a->t.size * sizeof(float));
    memset(a->params, 0, a->t.size * sizeof(float));
    if (load_weights(path, c, a, e)) {
        peft_free(a);
        return -1;
    }
    return 0;
}

void peft_free(PeftAdapter *a) {
    free(a->params);
    a->params = NULL;
    params_free(&a->t);
}

// ----------------------------------------------------------------------------
// out

/* adapter_config.json as PEFT's LoraConfig.save_pretrained writes it (keys
 * sorted), with the defaults of the options llamac does not have; no
 * peft_version, since no PEFT wrote it. */
static json_t *config_json(const LoraConfig *lc, const char *base_name) {
    json_t *targets = json_array(), *layers = json_null();
    for (int m = 0; m < LORA_NMOD; m++)
        if (lc->targets >> m & 1u) json_array_append_new(targets, json_string(lora_module_name(m)));
    if (!lc->all_layers) {
        layers = json_array();
        for (int l = 0; l < LC_MAX_LAYERS; l++)
            if (lc->layers[l]) json_array_append_new(layers, json_integer(l));
    }
    float al = lc->alpha;
    json_t *alpha = al == floorf(al) && fabsf(al) < 1e9f ? json_integer((json_int_t)al)
                                                          : json_real(iofile_short_real(al));
    json_t *j = json_object();
    json_object_set_new(j, "alpha_pattern", json_object());
    json_object_set_new(j, "auto_mapping", json_null());
    json_object_set_new(j, "base_model_name_or_path", base_name && *base_name ? json_string(base_name) : json_null());
    json_object_set_new(j, "bias", json_string("none"));
    json_object_set_new(j, "fan_in_fan_out", json_false());
    json_object_set_new(j, "inference_mode", json_true());
    json_object_set_new(j, "init_lora_weights",
                        lc->init == LORA_INIT_GAUSSIAN ? json_string("gaussian") : json_true());
    json_object_set_new(j, "layers_pattern", json_null());
    json_object_set_new(j, "layers_to_transform", layers);
    json_object_set_new(j, "loftq_config", json_object());
    json_object_set_new(j, "lora_alpha", alpha);
    json_object_set_new(j, "lora_bias", json_false());
    json_object_set_new(j, "lora_dropout", json_real(iofile_short_real(lc->dropout)));
    json_object_set_new(j, "megatron_config", json_null());
    json_object_set_new(j, "megatron_core", json_string("megatron.core"));
    /* PEFT's own list for task_type SEQ_CLS; PEFT loading it adds both names again */
    json_object_set_new(j, "modules_to_save", lc->head ? json_pack("[ss]", "classifier", "score") : json_null());
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "r", json_integer(lc->r));
    json_object_set_new(j, "rank_pattern", json_object());
    json_object_set_new(j, "revision", json_null());
    json_object_set_new(j, "target_modules", targets);
    json_object_set_new(j, "task_type", json_string(lc->head ? "SEQ_CLS" : "CAUSAL_LM"));
    json_object_set_new(j, "use_dora", json_false());
    json_object_set_new(j, "use_rslora", json_boolean(lc->rslora));
    return j;
}

int peft_save(const char *dir, const LoraConfig *lc, const ParamTable *t, const float *params,
              const char *base_name, int force, Err *e) {
    char tmp[4200], p[4300];
    if (iofile_dir_begin(dir, force, tmp, sizeof tmp, e)) return -1;
    json_t *j = config_json(lc, base_name);
    snprintf(p, sizeof p, "%s/" PEFT_CONFIG, tmp);
    int rc = iofile_json_write(p, j, e);
    json_decref(j);
    if (rc) goto fail;
    SafetensorsOut *out = xcalloc((size_t)t->n, sizeof *out);
    char (*names)[96] = xcalloc((size_t)t->n, sizeof *names);
    for (int i = 0; i < t->n; i++) {
        snprintf(names[i], sizeof names[i], PEFT_PREFIX "%s", t->p[i].name);
        out[i].name = names[i];
        out[i].ndim = t->p[i].ndim;
        out[i].shape[0] = t->p[i].shape[0];
        out[i].shape[1] = t->p[i].shape[1];
        out[i].data = params + t->p[i].offset;
    }
    snprintf(p, sizeof p, "%s/" PEFT_WEIGHTS, tmp);
    rc = safetensors_write(p, out, t->n, e);
    free(out);
    free(names);
    if (rc) goto fail;
    return iofile_dir_commit(dir, tmp, e);
fail:
    iofile_dir_abort(tmp);
    return -1;
}
