/*
 * convert.c: Hugging Face Llama directories in and out (contract in
 * convert.h). The weights go from the mapped safetensors files straight into
 * the parameter buffer, one tensor at a time, converting the dtype on the
 * way; export writes a temporary directory and renames it into place.
 */
#include "convert.h"

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

#include "../../data/gguf.h"
#include "../../data/bbpe.h"
#include "../../data/spm.h"
#include "../../data/tok.h"
#include "ckpt.h"
#include "gguf.h"
#include "safetensors.h"

#define HF_CONFIG "config.json"
#define HF_WEIGHTS "model.safetensors"
#define HF_INDEX "model.safetensors.index.json"

int convert_is_hf_dir(const char *path) {
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
    int llama = 0;
    if (arch && !json_is_null(arch)) {
        if (!json_is_array(arch)) return err_set(e, "%s: architectures must be a list", path);
        size_t k;
        json_t *a;
        json_array_foreach(arch, k, a) {
            llama |= json_is_string(a) && strcmp(json_string_value(a), "LlamaForCausalLM") == 0;
        }
        if (!llama) {
            json_t *a0 = json_array_get(arch, 0);
            return err_set(e, "%s: unsupported architecture %.64s (only LlamaForCausalLM)", path,
                           json_is_string(a0) ? json_string_value(a0) : "(none)");
        }
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
    int head_dim;
    if (get_int(path, j, "head_dim", 0, 1, BIG, &head_dim, e)) return -1;
    if (head_dim && (c->dim % c->n_heads != 0 || head_dim != c->dim / c->n_heads))
        return err_set(e, "%s: head_dim %d is not hidden_size / num_attention_heads (%d / %d): not supported", path,
                       head_dim, c->dim, c->n_heads);
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

int convert_hf_config(const char *dir, LlamaConfig *c, Err *e) {
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

/* ---- non-finite weights --------------------------------------------------------- */

/* Set once at start-up from the command line (cli_parse), read by every
 * loader: the one process-wide switch, so no loader signature carries it. */
static int allow_nonfinite;

void convert_allow_nonfinite(int on) { allow_nonfinite = on; }

int convert_check_finite(const char *path, const char *name, const float *x, size_t n, Err *e) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(x[i]);
    if (bad == 0) return 0;
    if (allow_nonfinite) {
        fprintf(stderr, "llamac: warning: %s: tensor %s holds %zu non-finite values (NaN or Inf) of %zu; loaded "
                "anyway (--allow-nonfinite)\n", path, name, bad, n);
        return 0;
    }
    return err_set(e, "%s: tensor %s holds %zu non-finite values (NaN or Inf) of %zu (--allow-nonfinite loads it "
                   "anyway)", path, name, bad, n);
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
    return convert_check_finite(f->path, p->name, params + p->offset, p->numel, e);
}

int convert_hf_load(const char *dir, const ParamTable *t, float *params, Err *e) {
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

/* The shortest decimal that reads back as f, as a double, so config.json
 * says 1e-05 rather than 9.99999974737875e-06. */
double convert_short_real(float f) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

static json_t *hf_config_json(const LlamaConfig *c, int bos_id, int eos_id) {
    json_t *rope = json_object();
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        json_object_set_new(rope, "rope_type", json_string("llama3"));
        json_object_set_new(rope, "factor", json_real(convert_short_real(c->rope_factor)));
        json_object_set_new(rope, "low_freq_factor", json_real(convert_short_real(c->rope_low_freq)));
        json_object_set_new(rope, "high_freq_factor", json_real(convert_short_real(c->rope_high_freq)));
        json_object_set_new(rope, "original_max_position_embeddings", json_integer(c->rope_orig_ctx));
    } else {
        json_object_set_new(rope, "rope_type", json_string("default"));
    }
    json_object_set_new(rope, "rope_theta", json_real(convert_short_real(c->rope_theta)));
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(j, "model_type", json_string("llama"));
    json_object_set_new(j, "hidden_size", json_integer(c->dim));
    json_object_set_new(j, "intermediate_size", json_integer(c->hidden));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(config_head_size(c)));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_seq));
    json_object_set_new(j, "rms_norm_eps", json_real(convert_short_real(c->norm_eps)));
    /* transformers 5 reads rope_parameters; 4.x reads rope_theta and rope_scaling */
    json_object_set_new(j, "rope_theta", json_real(convert_short_real(c->rope_theta)));
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

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_tree(const char *p) { nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int fsync_path(const char *p) {
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* 1 if dir exists and holds anything but . and .. */
static int dir_nonempty(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    struct dirent *de;
    int n = 0;
    while (!n && (de = readdir(dp))) n = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(dp);
    return n;
}

// ---- the tokenizer files ---------------------------------------------------

static int hf_save(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params, int bos_id,
                   int eos_id, const ConvertTok *tk, int force, Err *e);

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
        buf[gguf_byte_level(b, n, buf)] = 0;
        json_t *prev = json_object_get(vocab, buf);
        if (prev) {
            err_set(e, "%s: tokens %lld and %d have the same bytes, which tokenizer.json cannot hold", path,
                    (long long)json_integer_value(prev), i);
            goto out;
        }
        json_object_set_new(vocab, buf, json_integer(i));
    }
    int32_t *ab;
    size_t nm = gguf_merges(tok, &ab);
    for (size_t i = 0; i < nm; i++) {
        json_t *pair = json_array();
        for (int k = 0; k < 2; k++) {
            size_t n;
            const char *b = tok_token_bytes(tok, ab[2 * i + k], &n);
            if (2 * n + 1 > cap) buf = xrealloc(buf, cap = 2 * n + 64);
            buf[gguf_byte_level(b, n, buf)] = 0;
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

static json_t *tokenizer_config(const Tokenizer *tok, const char *chat_template, int max_seq) {
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
    json_object_set_new(j, "pad_token", json_null());
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

/* Write j to path (indented), fsync'd; consumes j. */
static int write_json(const char *path, json_t *j, Err *e) {
    FILE *f = fopen(path, "w");
    int ok = f && json_dumpf(j, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) == 0 &&
             fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (f && fclose(f) != 0 && ok) ok = 0, err = errno;
    json_decref(j);
    return ok ? 0 : err_set(e, "%s: cannot write: %s", path, strerror(err));
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

/* the tokenizer files of the export into tmp (see convert.h) */
static int save_tokenizer(const char *tmp, const LlamaConfig *c, const ConvertTok *tk, Err *e) {
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
    if (write_json(p, tokenizer_config(tok, tk->chat_template, c->max_seq), e)) return -1;
    json_t *g = json_object();
    json_object_set_new(g, "bos_token_id", tok->bos >= 0 ? json_integer(tok->bos) : json_null());
    if (tok->eot >= 0 && tok->eot != tok->eos)
        json_object_set_new(g, "eos_token_id", json_pack("[i, i]", tok->eos, tok->eot));
    else
        json_object_set_new(g, "eos_token_id", tok->eos >= 0 ? json_integer(tok->eos) : json_null());
    snprintf(p, sizeof p, "%s/generation_config.json", tmp);
    return write_json(p, g, e);
}

int convert_hf_tokenizer(const char *dir, char *out, size_t n) {
    static const char *const names[] = {"tokenizer.json", "tokenizer.model"};
    LC_ASSERT(out && n > 0); /* and GCC's -Wformat-truncation under SAN=1 knows it */
    for (int k = 0; k < 2; k++) {
        snprintf(out, n, "%s/%s", dir, names[k]);
        if (access(out, R_OK) == 0) return 0;
    }
    return -1;
}

int convert_dir_begin(const char *dir, int force, char *tmp, size_t n, Err *e) {
    char d[4096];
    strip_slashes(dir, d, sizeof d);
    struct stat st;
    int exists = stat(d, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) return err_set(e, "%s: exists and is not a directory", d);
    if (exists && !force && dir_nonempty(d))
        return err_set(e, "%s: directory exists and is not empty (--force replaces it)", d);
    snprintf(tmp, n, "%s.tmp.%ld", d, (long)getpid());
    rm_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return err_set(e, "%s: cannot create: %s", tmp, strerror(errno));
    return 0;
}

void convert_dir_abort(const char *tmp) { rm_tree(tmp); }

int convert_dir_commit(const char *dir, const char *tmp, Err *e) {
    char d[4096], old[4200];
    strip_slashes(dir, d, sizeof d);
    snprintf(old, sizeof old, "%s.old.%ld", d, (long)getpid());
    if (fsync_path(tmp) != 0) {
        err_set(e, "%s: fsync failed: %s", tmp, strerror(errno));
        goto fail;
    }
    /* into place: an empty directory is replaced by rename itself; a full
     * one (force) is moved aside first and removed after */
    int moved = 0;
    if (dir_nonempty(d)) {
        if (rename(d, old) != 0) {
            err_set(e, "%s: cannot move aside: %s", d, strerror(errno));
            goto fail;
        }
        moved = 1;
    }
    if (rename(tmp, d) != 0) {
        err_set(e, "%s: cannot rename %s into place: %s", d, tmp, strerror(errno));
        if (moved) rename(old, d);
        goto fail;
    }
    if (moved) rm_tree(old);
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", d);
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    fsync_path(slash ? (parent[0] ? parent : "/") : ".");
    return 0;
fail:
    rm_tree(tmp);
    return -1;
}

/* ---- GGUF in ------------------------------------------------------------------ */

/* An integer key in [lo, hi] into *out; absent: def (def < 0: required). */
static int gguf_int(const Gguf *g, const char *key, long def, long lo, long hi, int *out, Err *e) {
    int64_t v;
    int r = gguf_get_int(g, key, def < 0, &v, e);
    if (r < 0) return -1;
    if (r == 0) v = def;
    if (v < lo || v > hi)
        return err_set(e, "%s: metadata %s = %lld is out of range [%ld, %ld]", g->path, key, (long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

/* 1 if c's llama3 factors (gguf_rope_factors) are want[0 .. hs/2) */
static int rope_matches(const LlamaConfig *c, const float *want, float *got) {
    int hs = config_head_size(c);
    gguf_rope_factors(c, got);
    for (int i = 0; i < hs / 2; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-5f * fabsf(want[i]))) return 0;
    return 1;
}

/* Llama 3.1 scaling comes as rope_freqs.weight alone (llama.cpp's converter
 * writes no scaling keys), so its parameters are recovered from the factors
 * f_i (gguf.h gives their form): factor is the largest. Only the two
 * wavelengths ctx / low_freq_factor and ctx / high_freq_factor enter the
 * form, so low_freq_factor = 1 loses nothing. Between them,
 * s_i = (1 / f_i - 1 / factor) / (1 - 1 / factor) = A / wavelength_i - B with
 * A = ctx / (high - low), B = low / (high - low): two such entries give
 * ctx = A / B and high = (1 + B) / B. With one, ctx is put just below the
 * first wavelength scaled in full and high solved from s; with none, ctx
 * there and ctx / high between the last unscaled wavelength and it. Meta's
 * values are tried first; the result must reproduce every factor. */
static int gguf_rope_llama3(const Gguf *g, const GgufTensor *rt, LlamaConfig *c, Err *e) {
    int hs = config_head_size(c), nf = hs / 2;
    if (rt->numel != nf || rt->type != GGML_TYPE_F32)
        return err_set(e, "%s: rope_freqs.weight must be %d float32 values (head size / 2)", g->path, nf);
    float *want = xmalloc((size_t)nf * sizeof *want), *got = xmalloc((size_t)nf * sizeof *got);
    double *wl = xmalloc((size_t)nf * sizeof *wl);
    gguf_dequantize(GGML_TYPE_F32, rt->data, nf, want);
    float factor = 0;
    for (int i = 0; i < nf; i++) {
        factor = want[i] > factor ? want[i] : factor;
        wl[i] = 2 * M_PI * pow(c->rope_theta, 2.0 * i / hs); /* 2 pi / frequency */
    }
    int last_one = -1, first_full = nf, n_smooth = 0, i0 = -1, i1 = -1, found = 0;
    for (int i = 0; i < nf; i++) {
        if (fabsf(want[i] - 1.0f) <= 1e-6f) last_one = i;
        else if (fabsf(want[i] - factor) <= 1e-6f * factor) first_full = first_full < i ? first_full : i;
        else {
            n_smooth++;
            if (i0 < 0) i0 = i;
            i1 = i;
        }
    }
    c->rope_scaling = ROPE_SCALING_LLAMA3;
    c->rope_factor = factor;
    c->rope_low_freq = 1.0f;
    double ctx = first_full < nf ? ceil(wl[first_full]) - 1 : ceil(wl[nf - 1]) + 1, hi = 0;
    if (factor > 1 && n_smooth >= 2) {
        double y0 = (1 / (double)want[i0] - 1 / (double)factor) / (1 - 1 / (double)factor);
        double y1 = (1 / (double)want[i1] - 1 / (double)factor) / (1 - 1 / (double)factor);
        double A = (y1 - y0) / (1 / wl[i1] - 1 / wl[i0]), B = A / wl[i0] - y0;
        if (A > 0 && B > 0) ctx = A / B, hi = (1 + B) / B;
    } else if (factor > 1 && n_smooth == 1) {
        double s0 = (1 / (double)want[i0] - 1 / (double)factor) / (1 - 1 / (double)factor);
        if (s0 > 0) hi = 1 + (ctx / wl[i0] - 1) / s0;
    } else if (factor > 1) {
        hi = last_one >= 0 ? (1 + ctx / wl[last_one]) / 2 : 2;
    }
    /* Meta's values first (3.1: 8192, 1, 4), so a file of theirs reads back as written */
    static const int ctxs[] = {8192, 4096, 2048, 16384, 32768, 65536, 131072};
    static const float fl[] = {1, 2, 4, 8, 16, 32};
    for (int a = 0; a < 7 && !found; a++)
        for (int l = 0; l < 6 && !found; l++)
            for (int h = l + 1; h < 6 && !found; h++) {
                c->rope_orig_ctx = ctxs[a];
                c->rope_low_freq = fl[l];
                c->rope_high_freq = fl[h];
                found = rope_matches(c, want, got);
            }
    if (!found && hi > 1 && ctx >= 1 && ctx < (double)(1 << 30)) {
        c->rope_orig_ctx = (int)lround(ctx);
        c->rope_low_freq = 1.0f;
        c->rope_high_freq = (float)hi;
        found = rope_matches(c, want, got);
    }
    free(want);
    free(got);
    free(wl);
    if (!found)
        return err_set(e, "%s: rope_freqs.weight is not Llama 3.1's frequency scaling (not supported)", g->path);
    return 0;
}

static int gguf_config(const Gguf *g, LlamaConfig *c, Err *e) {
    memset(c, 0, sizeof *c);
    const char *arch;
    size_t alen;
    if (gguf_get_str(g, "general.architecture", 1, &arch, &alen, e) < 0) return -1;
    if (alen != 5 || memcmp(arch, "llama", 5) != 0)
        return err_set(e, "%s: architecture %.*s not supported (supported: llama)", g->path, (int)(alen < 40 ? alen : 40),
                       arch);
    const long BIG = 1L << 30;
    if (gguf_int(g, "llama.embedding_length", -1, 1, BIG, &c->dim, e) ||
        gguf_int(g, "llama.block_count", -1, 1, BIG, &c->n_layers, e) ||
        gguf_int(g, "llama.attention.head_count", -1, 1, BIG, &c->n_heads, e) ||
        gguf_int(g, "llama.attention.head_count_kv", c->n_heads, 1, BIG, &c->n_kv_heads, e) ||
        gguf_int(g, "llama.feed_forward_length", -1, 1, BIG, &c->hidden, e) ||
        gguf_int(g, "llama.context_length", -1, 1, BIG, &c->max_seq, e))
        return -1;
    double eps, theta = 10000.0;
    if (gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", 1, &eps, e) < 0 ||
        gguf_get_float(g, "llama.rope.freq_base", 0, &theta, e) < 0)
        return -1;
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    if (c->dim % c->n_heads)
        return err_set(e, "%s: llama.embedding_length %d is not a multiple of head_count %d", g->path, c->dim,
                       c->n_heads);
    int hs = c->dim / c->n_heads, v;
    static const char *const hs_keys[] = {"llama.rope.dimension_count", "llama.attention.key_length",
                                          "llama.attention.value_length"};
    for (int k = 0; k < 3; k++) {
        v = hs;
        if (gguf_int(g, hs_keys[k], hs, 1, BIG, &v, e)) return -1;
        if (v != hs)
            return err_set(e, "%s: %s = %d, not embedding_length / head_count = %d (not supported)", g->path,
                           hs_keys[k], v, hs);
    }
    const char *st;
    size_t sl;
    int r = gguf_get_str(g, "llama.rope.scaling.type", 0, &st, &sl, e);
    if (r < 0) return -1;
    if (r == 1 && !(sl == 4 && memcmp(st, "none", 4) == 0))
        return err_set(e, "%s: rope scaling %.*s not supported (supported: none, Llama 3.1's rope_freqs)", g->path,
                       (int)(sl < 40 ? sl : 40), st);
    /* vocab: the token list, else llama.vocab_size, else the embedding's rows */
    const GgufKV *toks;
    const GgufTensor *emb = gguf_tensor(g, "token_embd.weight");
    r = gguf_get_array(g, "tokenizer.ggml.tokens", 0, GGUF_STRING, &toks, e);
    if (r < 0) return -1;
    if (r == 1) c->vocab = (int)(toks->n < (uint64_t)BIG ? toks->n : (uint64_t)BIG);
    else if (gguf_find(g, "llama.vocab_size")) {
        if (gguf_int(g, "llama.vocab_size", -1, 2, BIG, &c->vocab, e)) return -1;
    } else if (emb && emb->ndim == 2) c->vocab = (int)emb->ne[1];
    else return err_set(e, "%s: missing metadata key llama.vocab_size (and no tokenizer.ggml.tokens)", g->path);
    c->tied = gguf_tensor(g, "output.weight") == NULL;
    const GgufTensor *rt = gguf_tensor(g, "rope_freqs.weight");
    if (rt && gguf_rope_llama3(g, rt, c, e)) return -1;
    const char *name;
    size_t nl;
    r = gguf_get_str(g, "general.name", 0, &name, &nl, e);
    if (r < 0) return -1;
    if (r == 1) snprintf(c->name, sizeof c->name, "%.*s", (int)(nl < sizeof c->name ? nl : sizeof c->name - 1), name);
    Err ve;
    if (config_validate(c, &ve)) return err_set(e, "%s: %s", g->path, ve.msg);
    return 0;
}

int convert_gguf_config(const char *path, LlamaConfig *c, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    int rc = gguf_config(&g, c, e);
    if (rc == 0 && !c->name[0]) {
        const char *base = strrchr(path, '/');
        snprintf(c->name, sizeof c->name, "%s", base ? base + 1 : path);
    }
    gguf_close(&g);
    return rc;
}

int convert_gguf_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    int rc = -1, hs = config_head_size(c);
    float *scratch = NULL;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        char name[96];
        LC_ASSERT(gguf_tensor_name(p->name, name, sizeof name) == 0);
        const GgufTensor *x = gguf_tensor(&g, name);
        if (!x) {
            err_set(e, "%s: missing tensor %s (%s)", path, name, p->name);
            goto out;
        }
        /* GGUF dims are innermost first: a HF (rows, cols) matrix is [cols, rows] */
        int same = p->ndim == 1 ? x->ndim == 1 && x->ne[0] == p->shape[0]
                                : x->ndim == 2 && x->ne[0] == p->shape[1] && x->ne[1] == p->shape[0];
        if (!same) {
            if (p->ndim == 1)
                err_set(e, "%s: tensor %s has %d dims [%lld, %lld], the metadata needs [%lld]", path, name, x->ndim,
                        (long long)x->ne[0], (long long)x->ne[1], (long long)p->shape[0]);
            else
                err_set(e, "%s: tensor %s has %d dims [%lld, %lld], the metadata needs [%lld, %lld]", path, name,
                        x->ndim, (long long)x->ne[0], (long long)x->ne[1], (long long)p->shape[1],
                        (long long)p->shape[0]);
            goto out;
        }
        float *dst = params + p->offset;
        size_t len = strlen(p->name);
        int is_q = len > 14 && strcmp(p->name + len - 14, ".q_proj.weight") == 0;
        int is_k = len > 14 && strcmp(p->name + len - 14, ".k_proj.weight") == 0;
        if (is_q || is_k) { /* llama.cpp's RoPE row order back to HF's (gguf.h) */
            scratch = xrealloc(scratch, p->numel * sizeof *scratch);
            if (gguf_tensor_f32(&g, x, scratch, e)) goto out;
            gguf_unpermute_rows(dst, scratch, is_q ? c->n_heads : c->n_kv_heads, hs, p->shape[1]);
        } else if (gguf_tensor_f32(&g, x, dst, e)) {
            goto out;
        }
        if (convert_check_finite(path, name, dst, p->numel, e)) goto out;
    }
    rc = 0;
out:
    free(scratch);
    gguf_close(&g);
    return rc;
}

int convert_json_write(const char *path, const json_t *j, Err *e) {
    FILE *f = fopen(path, "w");
    int ok = f && json_dumpf(j, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) == 0 &&
             fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? 0 : err_set(e, "%s: cannot write: %s", path, strerror(errno));
}

static int hf_save(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params, int bos_id,
                   int eos_id, const ConvertTok *tk, int force, Err *e) {
    char tmp[4200], p[4300];
    if (convert_dir_begin(dir, force, tmp, sizeof tmp, e)) return -1;
    json_t *j = hf_config_json(c, bos_id, eos_id);
    snprintf(p, sizeof p, "%s/" HF_CONFIG, tmp);
    int rc = convert_json_write(p, j, e);
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
    return convert_dir_commit(dir, tmp, e);
fail:
    rm_tree(tmp);
    return -1;
}

int convert_hf_save(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
                    int bos_id, int eos_id, int force, Err *e) {
    return hf_save(dir, c, t, params, bos_id, eos_id, NULL, force, e);
}

int convert_hf_save_tok(const char *dir, const LlamaConfig *c, const ParamTable *t, const float *params,
                        const ConvertTok *tk, int force, Err *e) {
    int bos = tk && tk->tok ? tk->tok->bos : -1, eos = tk && tk->tok ? tk->tok->eos : -1;
    return hf_save(dir, c, t, params, bos, eos, tk && tk->tok ? tk : NULL, force, e);
}

int convert_gguf_print(const char *path, FILE *f, Err *e) {
    Gguf g;
    if (gguf_open(&g, path, e)) return -1;
    int count[64] = {0};
    uint64_t bytes = 0;
    for (int i = 0; i < g.n_tensors; i++) {
        if (g.t[i].type < 64) count[g.t[i].type]++;
        bytes += g.t[i].nbytes;
    }
    fprintf(f, "%s: GGUF v%u, %d metadata entries, %d tensors (%.1f MB):", path, g.version, g.n_kv, g.n_tensors,
            (double)bytes / 1e6);
    for (int k = 0; k < 64; k++)
        if (count[k]) fprintf(f, " %s x%d", gguf_type_name((uint32_t)k), count[k]);
    const char *m = "none", *pre = "-";
    size_t ml = 4, pl = 1;
    Err ig;
    gguf_get_str(&g, "tokenizer.ggml.model", 0, &m, &ml, &ig);
    gguf_get_str(&g, "tokenizer.ggml.pre", 0, &pre, &pl, &ig);
    fprintf(f, "\n  vocabulary: %.*s, pre-tokenizer %.*s, chat template %s\n", (int)ml, m, (int)pl, pre,
            gguf_find(&g, "tokenizer.chat_template") ? "yes" : "no");
    gguf_close(&g);
    return 0;
}

/* ---- any model source --------------------------------------------------------- */

int convert_model_config(const char *path, LlamaConfig *c, uint64_t *tokenizer_id, int *is_hf, Err *e) {
    *tokenizer_id = 0;
    *is_hf = convert_is_hf_dir(path);
    if (*is_hf) return convert_hf_config(path, c, e);
    struct stat st;
    if (stat(path, &st) != 0) return err_set(e, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return err_set(e, "%s: a directory without " HF_CONFIG, path);
    if (gguf_is_file(path)) {
        if (convert_gguf_config(path, c, e)) return -1;
        /* the vocabulary inside, when llamac reads it, is the model's tokenizer */
        Tokenizer tok;
        Err te;
        if (tok_load(&tok, path, &te) == 0) {
            *tokenizer_id = tok.id;
            tok_free(&tok);
        }
        return 0;
    }
    if (!ckpt_is_hdf5(path))
        return err_set(e, "%s: neither a Hugging Face directory, a GGUF file nor an llamac checkpoint (HDF5)", path);
    CkptInfo info;
    if (ckpt_info(path, &info, e)) return -1;
    *c = info.c;
    *tokenizer_id = info.tokenizer_id;
    return 0;
}

int convert_run_config(const char *path, LlamaConfig *c, uint64_t *tokenizer_id, Err *e) {
    if (gguf_is_file(path)) {
        int is_hf;
        return convert_model_config(path, c, tokenizer_id, &is_hf, e);
    }
    CkptInfo info;
    if (ckpt_info(path, &info, e)) return -1;
    *c = info.c;
    *tokenizer_id = info.tokenizer_id;
    return 0;
}

int convert_model_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, Err *e) {
    if (convert_is_hf_dir(path)) return convert_hf_load(path, t, params, e);
    if (gguf_is_file(path)) return convert_gguf_load(path, c, t, params, e);
    return ckpt_load(path, c, t, params, NULL, NULL, e);
}
