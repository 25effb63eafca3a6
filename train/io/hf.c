/*
 * hf.c: Hugging Face Llama directories in and out (contract in hf.h). The weights go from the mapped safetensors files straight into
 * the parameter buffer, one tensor at a time, converting the dtype on the
 * way; export writes a temporary directory and renames it into place.
 */
#include "hf.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../data/bbpe.h"
#include "../../data/spm.h"
#include "../../data/tok.h"
#include "iofile.h"
#include "safetensors.h"

#define HF_CONFIG "config.json"
#define HF_WEIGHTS "model.safetensors"
#define HF_INDEX "model.safetensors.index.json"

int hf_is_dir(const char *path) {
    char p[4096];
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    snprintf(p, sizeof p, "%s/" HF_CONFIG, path);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir without trailing slashes into out */
static void strip_slashes(const char *dir, char *out, size_t n) {
    snprintf(out, n, "%s", dir);
    for (size_t k = strlen(out); k > 1 && out[k - 1] == '/'; k--) out[k - 1] = 0;
}

/* ---- config.json in -------------------------------------------------------- */

/* Integer key: missing -> def (or an error when def < 0 means required). */
static int get_int(const char *path, json_t *j, const char *key, long def, long lo, long hi, int *out, Err *e) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return err_set(e, "%s: missing %s", path, key);
        *out = (int)def;
        return 0;
    }
    if (!json_is_integer(v)) return err_set(e, "%s: %s must be an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return err_set(e, "%s: %s = %lld is out of range [%ld, %ld]", path, key, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

static int get_num(const char *path, json_t *j, const char *key, double def, int required, float *out, Err *e) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        if (required) return err_set(e, "%s: missing %s", path, key);
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v)) return err_set(e, "%s: %s must be a number", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

static int parse_config(const char *path, json_t *j, LlamaConfig *c, Err *e) {
    if (!json_is_object(j)) return err_set(e, "%s: not a JSON object", path);
    json_t *arch = json_object_get(j, "architectures"), *mt = json_object_get(j, "model_type");
    int llama = 0, cls = 0;
    if (arch && !json_is_null(arch)) {
        if (!json_is_array(arch)) return err_set(e, "%s: architectures must be a list", path);
        size_t k;
        json_t *a;
        json_array_foreach(arch, k, a) {
            const char *as = json_is_string(a) ? json_string_value(a) : "";
            llama |= strcmp(as, "LlamaForCausalLM") == 0;
            cls |= strcmp(as, "LlamaForSequenceClassification") == 0;
        }
        if (!llama && !cls) {
            json_t *a0 = json_array_get(arch, 0);
            return err_set(e, "%s: unsupported architecture %.64s (only LlamaForCausalLM and "
                              "LlamaForSequenceClassification)", path,
                           json_is_string(a0) ? json_string_value(a0) : "(none)");
        }
        llama = 1;
    }
    if (mt && !json_is_null(mt)) {
        if (!json_is_string(mt) || strcmp(json_string_value(mt), "llama") != 0)
            return err_set(e, "%s: unsupported model_type %.64s (only llama)", path,
                           json_is_string(mt) ? json_string_value(mt) : "(not a string)");
        llama = 1;
    }
    if (!llama) return err_set(e, "%s: neither architectures nor model_type says this is a Llama", path);
    memset(c, 0, sizeof *c);
    const long BIG = 1L << 30;
    if (get_int(path, j, "hidden_size", -1, 1, BIG, &c->dim, e) ||
        get_int(path, j, "num_hidden_layers", -1, 1, LC_MAX_LAYERS, &c->n_layers, e) ||
        get_int(path, j, "num_attention_heads", -1, 1, BIG, &c->n_heads, e) ||
        get_int(path, j, "num_key_value_heads", c->n_heads, 1, BIG, &c->n_kv_heads, e) ||
        get_int(path, j, "intermediate_size", -1, 1, BIG, &c->hidden, e) ||
        get_int(path, j, "vocab_size", -1, 2, BIG, &c->vocab, e) ||
        get_int(path, j, "max_position_embeddings", 2048, 1, BIG, &c->max_seq, e) ||
        get_num(path, j, "rms_norm_eps", 1e-6, 0, &c->norm_eps, e))
        return -1;
    /* head_dim (transformers: absent or null means hidden_size / num_attention_heads);
     * kept only where it differs, so the same model reads the same either way */
    if (get_int(path, j, "head_dim", 0, 1, BIG, &c->head_dim, e)) return -1;
    if (c->head_dim && c->dim % c->n_heads == 0 && c->head_dim == c->dim / c->n_heads) c->head_dim = 0;
    if (!c->head_dim && c->dim % c->n_heads != 0)
        return err_set(e, "%s: hidden_size %d is not a multiple of num_attention_heads %d and head_dim is not set",
                       path, c->dim, c->n_heads);
    static const char *const biases[] = {"attention_bias", "mlp_bias"};
    for (int k = 0; k < 2; k++)
        if (json_is_true(json_object_get(j, biases[k]))) return err_set(e, "%s: %s is not supported", path, biases[k]);
    json_t *act = json_object_get(j, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return err_set(e, "%s: hidden_act %.32s is not supported (only silu)",
                       path, json_is_string(act) ? json_string_value(act) : "(not a string)");
    json_t *tie = json_object_get(j, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie)) return err_set(e, "%s: tie_word_embeddings must be true or false", path);
    c->tied = json_is_true(tie);
    c->pad_id = -1;
    if (cls) { /* transformers: num_labels is the size of id2label (2 when neither is written) */
        json_t *nl = json_object_get(j, "num_labels"), *ids = json_object_get(j, "id2label");
        if (nl && !json_is_integer(nl)) return err_set(e, "%s: num_labels must be an integer", path);
        if (ids && !json_is_object(ids)) return err_set(e, "%s: id2label must be an object", path);
        json_int_t n = nl ? json_integer_value(nl) : ids ? (json_int_t)json_object_size(ids) : 2;
        if (n < 1 || n > 65536) return err_set(e, "%s: num_labels %lld is out of range", path, (long long)n);
        c->num_labels = (int)n;
        c->tied = 0; /* the score head replaces the LM head */
        json_t *pad = json_object_get(j, "pad_token_id");
        if (pad && !json_is_null(pad) && !json_is_integer(pad))
            return err_set(e, "%s: pad_token_id must be an integer or null", path);
        if (json_is_integer(pad)) c->pad_id = (int)json_integer_value(pad);
    }

    /* RoPE: transformers 5 writes rope_parameters (with rope_theta inside),
     * earlier versions rope_scaling (or null) and a top-level rope_theta */
    json_t *rp = json_object_get(j, "rope_parameters");
    if (!json_is_object(rp)) rp = json_object_get(j, "rope_scaling");
    if (!json_is_object(rp)) rp = NULL;
    if (get_num(path, j, "rope_theta", 10000.0, 0, &c->rope_theta, e)) return -1;
    if (rp && json_object_get(rp, "rope_theta") && get_num(path, rp, "rope_theta", 0, 1, &c->rope_theta, e))
        return -1;
    json_t *type = rp ? json_object_get(rp, "rope_type") : NULL;
    if (rp && !type) type = json_object_get(rp, "type");
    const char *ts = json_is_string(type) ? json_string_value(type) : "default";
    if (strcmp(ts, "llama3") == 0) {
        c->rope_scaling = ROPE_SCALING_LLAMA3;
        float ctx = 0;
        if (get_num(path, rp, "factor", 0, 1, &c->rope_factor, e) ||
            get_num(path, rp, "low_freq_factor", 0, 1, &c->rope_low_freq, e) ||
            get_num(path, rp, "high_freq_factor", 0, 1, &c->rope_high_freq, e) ||
            get_num(path, rp, "original_max_position_embeddings", 0, 1, &ctx, e))
            return -1;
        c->rope_orig_ctx = (int)ctx;
    } else if (strcmp(ts, "default") != 0) {
        return err_set(e, "%s: rope type %.32s is not supported (default, llama3)", path, ts);
    }
    Err ve;
    if (config_validate(c, &ve)) return err_set(e, "%s: %s", path, ve.msg);
    return 0;
}

int hf_config(const char *dir, LlamaConfig *c, Err *e) {
    char path[4096], d[4096];
    strip_slashes(dir, d, sizeof d);
    snprintf(path, sizeof path, "%s/" HF_CONFIG, d);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        if (access(path, R_OK) != 0) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
        char jq[2 * ERR_QUOTE_CAP]; /* jansson quotes the text near the error */
        return err_set(e, "%s: not valid JSON: %s (line %d)", path, err_quote(jq, sizeof jq, je.text, strlen(je.text)), je.line);
    }
    int rc = parse_config(path, j, c, e);
    json_decref(j);
    if (rc == 0) {
        const char *base = strrchr(d, '/');
        snprintf(c->name, sizeof c->name, "%s", base ? base + 1 : d);
    }
    return rc;
}

/* ---- safetensors in ------------------------------------------------------------ */

/* Copy tensor k of f into p's slot after checking its shape. */
static int load_tensor(const Safetensors *f, int k, const ParamInfo *p, float *params, Err *e) {
    const SafetensorsTensor *s = &f->t[k];
    int same = s->ndim == p->ndim && s->shape[0] == p->shape[0] && (p->ndim == 1 || s->shape[1] == p->shape[1]);
    if (!same) {
        char got[128] = "", *g = got;
        for (int d = 0; d < s->ndim && g < got + sizeof got - 24; d++)
            g += sprintf(g, "%s%lld", d ? ", " : "", (long long)s->shape[d]);
        if (p->ndim == 1)
            return err_set(e, "%s: tensor %s has shape [%s], config.json needs [%lld]", f->path, p->name, got,
                           (long long)p->shape[0]);
        return err_set(e, "%s: tensor %s has shape [%s], config.json needs [%lld, %lld]", f->path, p->name, got,
                       (long long)p->shape[0], (long long)p->shape[1]);
    }
    if (safetensors_read_f32(f, k, params + p->offset, e)) return -1;
    return iofile_check_finite(f->path, p->name, params + p->offset, p->numel, e);
}

int hf_load(const char *dir, const ParamTable *t, float *params, Err *e) {
    char d[4096], path[4096 + 64];
    strip_slashes(dir, d, sizeof d);
    snprintf(path, sizeof path, "%s/" HF_INDEX, d);
    int rc = -1;
    if (access(path, F_OK) != 0) { /* one file */
        snprintf(path, sizeof path, "%s/" HF_WEIGHTS, d);
        if (access(path, F_OK) != 0) return err_set(e, "%s: no " HF_WEIGHTS " or " HF_INDEX, d);
        Safetensors f;
        if (safetensors_open(&f, path, e)) return -1;
        for (int i = 0; i < t->n; i++) {
            int k = safetensors_find(&f, t->p[i].name);
            if (k < 0) {
                err_set(e, "%s: missing tensor %s", path, t->p[i].name);
                goto out1;
            }
            if (load_tensor(&f, k, &t->p[i], params, e)) goto out1;
        }
        rc = 0;
    out1:
        safetensors_close(&f);
        return rc;
    }
    /* shards: the index maps tensor names to files in dir */
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    char jq[2 * ERR_QUOTE_CAP]; /* jansson quotes the text near the error */
    if (!j) return err_set(e, "%s: not valid JSON: %s (line %d)", path, err_quote(jq, sizeof jq, je.text, strlen(je.text)), je.line);
    json_t *map = json_object_get(j, "weight_map");
    if (!json_is_object(map)) {
        json_decref(j);
        return err_set(e, "%s: no weight_map object", path);
    }
    int nf = 0;
    const char **names = xcalloc((size_t)t->n, sizeof *names);
    Safetensors *files = xcalloc((size_t)t->n, sizeof *files);
    for (int i = 0; i < t->n; i++) { /* the whole index first, then the files */
        json_t *v = json_object_get(map, t->p[i].name);
        const char *fn = json_string_value(v);
        if (!v) {
            err_set(e, "%s: missing tensor %s", path, t->p[i].name);
            goto out;
        }
        if (!fn || !*fn || strchr(fn, '/') || strcmp(fn, ".") == 0 || strcmp(fn, "..") == 0) {
            err_set(e, "%s: tensor %s: shard name must be a file name in the directory", path, t->p[i].name);
            goto out;
        }
    }
    for (int i = 0; i < t->n; i++) {
        const char *fn = json_string_value(json_object_get(map, t->p[i].name));
        int s = 0;
        while (s < nf && strcmp(names[s], fn) != 0) s++;
        if (s == nf) { /* first use of this shard */
            char sp[4096 + 256];
            snprintf(sp, sizeof sp, "%s/%s", d, fn);
            if (safetensors_open(&files[s], sp, e)) goto out;
            names[nf++] = fn;
        }
        int k = safetensors_find(&files[s], t->p[i].name);
        if (k < 0) {
            err_set(e, "%s: missing tensor %s (the index puts it there)", files[s].path, t->p[i].name);
            goto out;
        }
        if (load_tensor(&files[s], k, &t->p[i], params, e)) goto out;
    }
    rc = 0;
out:
    for (int s = 0; s < nf; s++) safetensors_close(&files[s]);
    free(files);
    free(names);
    json_decref(j);
    return rc;
}

/* ---- out ---------------------------------------------------------------------- */


static json_t *hf_config_json(const LlamaConfig *c, int bos_id, int eos_id) {
    json_t *rope = json_object();
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        json_object_set_new(rope, "rope_type", json_string("llama3"));
        json_object_set_new(rope, "factor", json_real(iofile_short_real(c->rope_factor)));
        json_object_set_new(rope, "low_freq_factor", json_real(iofile_short_real(c->rope_low_freq)));
        json_object_set_new(rope, "high_freq_factor", json_real(iofile_short_real(c->rope_high_freq)));
        json_object_set_new(rope, "original_max_position_embeddings", json_integer(c->rope_orig_ctx));
    } else {
        json_object_set_new(rope, "rope_type", json_string("default"));
    }
    json_object_set_new(rope, "rope_theta", json_real(iofile_short_real(c->rope_theta)));
    json_t *j = json_object();
    json_object_set_new(j, "architectures",
                        json_pack("[s]", c->num_labels ? "LlamaForSequenceClassification" : "LlamaForCausalLM"));
    if (c->num_labels) { /* what transformers writes: id2label/label2id, whose size is num_labels */
        json_t *ids = json_object(), *labels = json_object();
        for (int i = 0; i < c->num_labels; i++) {
            char k[32], v[32];
            snprintf(k, sizeof k, "%d", i);
            snprintf(v, sizeof v, "LABEL_%d", i);
            json_object_set_new(ids, k, json_string(v));
            json_object_set_new(labels, v, json_integer(i));
        }
        json_object_set_new(j, "id2label", ids);
        json_object_set_new(j, "label2id", labels);
        /* transformers reads the reward at the last token that is not pad_token_id; TRL's RewardTrainer sets
         * pad = eos when the tokenizer has no pad token, and so does an export without one */
        int pad = c->pad_id >= 0 ? c->pad_id : eos_id;
        json_object_set_new(j, "pad_token_id", pad >= 0 ? json_integer(pad) : json_null());
    }
    json_object_set_new(j, "model_type", json_string("llama"));
    json_object_set_new(j, "hidden_size", json_integer(c->dim));
    json_object_set_new(j, "intermediate_size", json_integer(c->hidden));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(config_head_size(c)));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_seq));
    json_object_set_new(j, "rms_norm_eps", json_real(iofile_short_real(c->norm_eps)));
    /* transformers 5 reads rope_parameters; 4.x reads rope_theta and rope_scaling */
    json_object_set_new(j, "rope_theta", json_real(iofile_short_real(c->rope_theta)));
    json_object_set_new(j, "rope_parameters", rope);
    json_object_set_new(j, "rope_scaling",
                        c->rope_scaling == ROPE_SCALING_LLAMA3 ? json_deep_copy(rope) : json_null());
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "attention_bias", json_false());
    json_object_set_new(j, "mlp_bias", json_false());
    json_object_set_new(j, "bos_token_id", bos_id >= 0 ? json_integer(bos_id) : json_null());
    json_object_set_new(j, "eos_token_id", eos_id >= 0 ? json_integer(eos_id) : json_null());
    json_object_set_new(j, "torch_dtype", json_string("float32"));
    return j;
}



// ---- the tokenizer files ---------------------------------------------------

static int save_dir(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params, int bos_id,
                   int eos_id, const HfTok *tk, int force, Err *e);

/* an added (special or not) token of a tokenizer */
typedef struct {
    int id, special;
    const char *text;
    size_t len;
} Added;

/* The tokenizer's added tokens in id order into *out (caller frees); n. */
static int added_tokens(const Tokenizer *tok, Added **out) {
    int n = 0;
    if (tok->kind == TOK_LLAMAC) {
        const Bpe *b = tok->bpe;
        *out = xmalloc((size_t)(b->n_special + 1) * sizeof **out);
        for (int k = 0; k < b->n_special; k++)
            (*out)[n++] = (Added){256 + b->n_merges + k, 1, b->special[k], strlen(b->special[k])};
    } else if (tok->kind == TOK_SPM) {
        const Spm *s = tok_spm_model(tok);
        *out = xmalloc((size_t)(s->vocab + 1) * sizeof **out);
        for (int i = 0; i < s->vocab; i++)
            if (s->type[i] == SPM_CONTROL || s->type[i] == SPM_UNKNOWN || s->type[i] == SPM_USER_DEFINED)
                (*out)[n++] = (Added){i, s->type[i] != SPM_USER_DEFINED, s->bytes + s->off[i], s->off[i + 1] - s->off[i] - 1};
    } else {
        const Bbpe *b = tok->bb;
        *out = xmalloc((size_t)(b->n_added + 1) * sizeof **out);
        for (int k = 0; k < b->n_added; k++)
            (*out)[n++] = (Added){b->added[k].id, b->added[k].special, b->added[k].text, b->added[k].len};
    }
    return n;
}

/* the name of special id (an added token's text), or NULL */
static json_t *token_name(const Added *a, int n, int id) {
    for (int k = 0; k < n; k++)
        if (a[k].id == id) return json_stringn(a[k].text, a[k].len);
    return json_null();
}

/* tokenizer.json for a byte-level tokenizer that is not one (llamac BPE, tiktoken) */
static json_t *tokenizer_json(const Tokenizer *tok, const char *path, Err *e) {
    Added *ad;
    int na = added_tokens(tok, &ad);
    json_t *added = json_array(), *vocab = json_object(), *merges = json_array();
    uint8_t *is_added = xcalloc((size_t)tok->vocab, 1);
    for (int k = 0; k < na; k++) {
        is_added[ad[k].id] = 1;
        json_array_append_new(added, json_pack("{s:i, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", ad[k].id, "content",
                                               ad[k].text, ad[k].len, "single_word", 0, "lstrip", 0, "rstrip", 0,
                                               "normalized", 0, "special", ad[k].special));
    }
    char *buf = NULL;
    size_t cap = 0;
    json_t *j = NULL;
    for (int i = 0; i < tok->vocab; i++) {
        if (is_added[i]) continue;
        size_t n;
        const char *b = tok_token_bytes(tok, i, &n);
        if (2 * n + 1 > cap) buf = xrealloc(buf, cap = 2 * n + 64);
        buf[bbpe_byte_level(b, n, buf)] = 0;
        json_t *prev = json_object_get(vocab, buf);
        if (prev) {
            err_set(e, "%s: tokens %lld and %d have the same bytes, which tokenizer.json cannot hold", path,
                    (long long)json_integer_value(prev), i);
            goto out;
        }
        json_object_set_new(vocab, buf, json_integer(i));
    }
    int32_t *ab;
    size_t nm = tok_merges(tok, &ab);
    for (size_t i = 0; i < nm; i++) {
        json_t *pair = json_array();
        for (int k = 0; k < 2; k++) {
            size_t n;
            const char *b = tok_token_bytes(tok, ab[2 * i + k], &n);
            if (2 * n + 1 > cap) buf = xrealloc(buf, cap = 2 * n + 64);
            buf[bbpe_byte_level(b, n, buf)] = 0;
            json_array_append_new(pair, json_string(buf));
        }
        json_array_append_new(merges, pair);
    }
    free(ab);
    const char *pattern = tok->kind == TOK_LLAMAC && tok->bpe->pattern ? tok->bpe->pattern : BBPE_LLAMA3_PATTERN;
    if (tok->kind == TOK_LLAMAC && !tok->bpe->pattern)
        fprintf(stderr, "llamac: warning: %s splits text its own way (version 1), which tokenizer.json cannot say; "
                        "tokenizer.json gets Llama 3's split (ids decode the same, a prompt may split differently)\n",
                path);
    json_t *pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                            "pretokenizers", "type", "Split", "pattern", "Regex", pattern, "behavior", "Isolated",
                            "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0);
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                              "byte_fallback", 0, "ignore_merges", 1, "vocab", vocab, "merges", merges);
    vocab = merges = NULL;
    j = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:n, s:{s:s, s:b, s:b, s:b}, s:o}", "version", "1.0",
                  "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer", pre,
                  "post_processor", "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                  "use_regex", 1, "model", model);
    added = NULL;
out:
    json_decref(added);
    json_decref(vocab);
    json_decref(merges);
    free(buf);
    free(is_added);
    free(ad);
    return j;
}

/* pad_id: a classifier's pad token (-1: none, a causal LM's) */
static json_t *tokenizer_config(const Tokenizer *tok, const char *chat_template, int max_seq, int pad_id) {
    Added *ad;
    int na = added_tokens(tok, &ad);
    json_t *dec = json_object();
    for (int k = 0; k < na; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", ad[k].id);
        json_object_set_new(dec, key, json_pack("{s:s%, s:b, s:b, s:b, s:b, s:b}", "content", ad[k].text, ad[k].len,
                                                "lstrip", 0, "normalized", 0, "rstrip", 0, "single_word", 0,
                                                "special", ad[k].special));
    }
    int unk = tok->kind == TOK_SPM ? tok_spm_model(tok)->unk : tok->kind == TOK_LLAMAC ? -1 : tok->bb->unk;
    json_t *j = json_object();
    json_object_set_new(j, "add_bos_token", json_false());
    json_object_set_new(j, "add_eos_token", json_false());
    json_object_set_new(j, "added_tokens_decoder", dec);
    json_object_set_new(j, "bos_token", token_name(ad, na, tok->bos));
    json_object_set_new(j, "eos_token", token_name(ad, na, tok->eos));
    json_object_set_new(j, "unk_token", token_name(ad, na, unk));
    json_object_set_new(j, "pad_token", pad_id >= 0 ? token_name(ad, na, pad_id) : json_null());
    if (chat_template) json_object_set_new(j, "chat_template", json_string(chat_template));
    json_object_set_new(j, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(j, "model_max_length", json_integer(max_seq));
    if (tok->kind == TOK_SPM) {
        /* the slow/fast Llama tokenizer from tokenizer.model; legacy: sentencepiece's own handling of text
         * after special tokens, which is what llamac's SentencePiece encoder reproduces */
        json_object_set_new(j, "tokenizer_class", json_string("LlamaTokenizer"));
        json_object_set_new(j, "legacy", json_true());
    } else {
        json_object_set_new(j, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    }
    free(ad);
    return j;
}

/* iofile_json_write, consuming j. */
static int write_json(const char *path, json_t *j, Err *e) {
    int rc = iofile_json_write(path, j, e);
    json_decref(j);
    return rc;
}

static int copy_file(const char *from, const char *to, Err *e) {
    FILE *in = fopen(from, "rb");
    if (!in) return err_set(e, "%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return err_set(e, "%s: cannot create: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int ok = 1;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in) && fflush(out) == 0 && fsync(fileno(out)) == 0;
    int err = errno;
    fclose(in);
    if (fclose(out) != 0 && ok) ok = 0, err = errno;
    return ok ? 0 : err_set(e, "%s: cannot write: %s", to, strerror(err));
}

/* the tokenizer files of the export into tmp (see hf.h) */
static int save_tokenizer(const char *tmp, const LlamaConfig *c, const HfTok *tk, Err *e) {
    const Tokenizer *tok = tk->tok;
    char p[4300];
    int rc;
    if (tok->kind == TOK_HF || tok->kind == TOK_SPM) {
        snprintf(p, sizeof p, "%s/%s", tmp, tok->kind == TOK_HF ? "tokenizer.json" : "tokenizer.model");
        rc = copy_file(tk->path, p, e);
    } else {
        json_t *j = tokenizer_json(tok, tk->path, e);
        if (!j) return -1;
        snprintf(p, sizeof p, "%s/tokenizer.json", tmp);
        rc = write_json(p, j, e);
    }
    if (rc) return -1;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", tmp);
    int pad = !c->num_labels ? -1 : c->pad_id >= 0 ? c->pad_id : tok->eos; /* as in config.json */
    if (write_json(p, tokenizer_config(tok, tk->chat_template, c->max_seq, pad), e)) return -1;
    json_t *g = json_object();
    json_object_set_new(g, "bos_token_id", tok->bos >= 0 ? json_integer(tok->bos) : json_null());
    if (tok->eot >= 0 && tok->eot != tok->eos)
        json_object_set_new(g, "eos_token_id", json_pack("[i, i]", tok->eos, tok->eot));
    else
        json_object_set_new(g, "eos_token_id", tok->eos >= 0 ? json_integer(tok->eos) : json_null());
    snprintf(p, sizeof p, "%s/generation_config.json", tmp);
    return write_json(p, g, e);
}

int hf_tokenizer(const char *dir, char *out, size_t n) {
    static const char *const names[] = {"tokenizer.json", "tokenizer.model"};
    LC_ASSERT(out && n > 0); /* and GCC's -Wformat-truncation under SAN=1 knows it */
    for (int k = 0; k < 2; k++) {
        snprintf(out, n, "%s/%s", dir, names[k]);
        if (access(out, R_OK) == 0) return 0;
    }
    return -1;
}




static int save_dir(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params, int bos_id,
                   int eos_id, const HfTok *tk, int force, Err *e) {
    char tmp[4200], p[4300];
    if (iofile_dir_begin(dir, force, tmp, sizeof tmp, e)) return -1;
    json_t *j = hf_config_json(c, bos_id, eos_id);
    snprintf(p, sizeof p, "%s/" HF_CONFIG, tmp);
    int rc = iofile_json_write(p, j, e);
    json_decref(j);
    if (rc) goto fail;
    SafetensorsOut *out = xcalloc((size_t)t->n, sizeof *out);
    for (int i = 0; i < t->n; i++) {
        out[i].name = t->p[i].name;
        out[i].ndim = t->p[i].ndim;
        out[i].shape[0] = t->p[i].shape[0];
        out[i].shape[1] = t->p[i].shape[1];
        out[i].data = params + t->p[i].offset;
    }
    snprintf(p, sizeof p, "%s/" HF_WEIGHTS, tmp);
    rc = safetensors_write(p, out, t->n, e);
    free(out);
    if (rc) goto fail;
    if (tk && save_tokenizer(tmp, c, tk, e)) goto fail;
    return iofile_dir_commit(dir, tmp, e);
fail:
    iofile_dir_abort(tmp);
    return -1;
}

int hf_save(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
                    int bos_id, int eos_id, int force, Err *e) {
    return save_dir(dir, c, t, params, bos_id, eos_id, NULL, force, e);
}

int hf_save_tok(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
                        const HfTok *tk, int force, Err *e) {
    int bos = tk && tk->tok ? tk->tok->bos : -1, eos = tk && tk->tok ? tk->tok->eos : -1;
    return save_dir(dir, c, t, params, bos, eos, tk && tk->tok ? tk : NULL, force, e);
}


