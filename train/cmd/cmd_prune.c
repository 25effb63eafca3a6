/*
 * cmd_prune.c: `llamac prune`: a smaller Llama from a larger one by
 * structured pruning (model/prune.h; Minitron's importance statistics from
 * forward passes over calibration batches, no backward). Reads any model
 * source, measures the importances, prints them and the calibration loss
 * before and after, and writes the pruned model through source_save
 * (convert's way out) with the teacher's tokenizer.
 *
 * Calibration batches are consecutive windows of T + 1 tokens over the
 * calibration files in the order given (token shards; text or JSONL
 * documents tokenised with the model's tokenizer, an end-of-text after each),
 * so the same flags always measure the same tokens, before and after.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../data/chat.h"
#include "../../data/jsonl.h"
#include "../../data/shard.h"
#include "../../data/tok.h"
#include "../../model/prune.h"
#include "../io/gguf.h"
#include "../io/iofile.h"
#include "../io/source.h"
#include "../proc/cli.h"
#include "cmds.h"

// ----------------------------------------------------------------------------
// calibration tokens

typedef struct {
    int32_t *ids;
    size_t n, cap, need;
    const Tokenizer *tok;
} Calib;

static void calib_push(Calib *k, const int32_t *ids, size_t n) {
    if (k->n + n > k->cap) {
        k->cap = 2 * (k->n + n);
        k->ids = xrealloc(k->ids, k->cap * sizeof(int32_t));
    }
    memcpy(k->ids + k->n, ids, n * sizeof(int32_t));
    k->n += n;
}

static int calib_doc(void *ud, const char *text, size_t len, Err *e) {
    (void)e;
    Calib *k = ud;
    if (k->n >= k->need) return 0;
    int32_t *ids = NULL;
    size_t cap = 0, n = tok_encode(k->tok, text, len, &ids, &cap);
    calib_push(k, ids, n);
    if (k->tok->eos >= 0) calib_push(k, &k->tok->eos, 1);
    free(ids);
    return 0;
}

static int is_shard(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char b[4] = {0};
    int ok = f && fread(b, 1, 4, f) == 4 &&
             ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24) == SHARD_MAGIC;
    if (f) fclose(f);
    return ok;
}

/* The calibration files' tokens (up to k->need) into k. Shards must come
 * from the model's tokenizer (model_tok, vocab); text needs k->tok. */
static int calib_read(Calib *k, const CliList *files, uint64_t model_tok, int vocab, const char *model, Err *e) {
    for (int i = 0; i < files->n && k->n < k->need; i++) {
        const char *p = files->v[i];
        size_t n0 = k->n;
        if (is_shard(p)) {
            Shard s;
            if (shard_open(&s, p, e)) return -1;
            if (s.tokenizer_id != model_tok || s.vocab != vocab) {
                shard_close(&s);
                return err_set(e, "%s: made by a different tokenizer than the model %s was trained with", p, model);
            }
            size_t n = s.n_tokens < k->need - k->n ? (size_t)s.n_tokens : k->need - k->n;
            if (k->n + n > k->cap) {
                k->cap = k->n + n;
                k->ids = xrealloc(k->ids, k->cap * sizeof(int32_t));
            }
            shard_read(&s, 0, n, k->ids + k->n);
            k->n += n;
            shard_close(&s);
        } else {
            if (!k->tok)
                return err_set(e, "%s: text calibration data needs the model's tokenizer (--tokenizer; %s carries none)",
                               p, model);
            if (docs_each(p, "text", calib_doc, k, e)) return -1;
        }
        for (size_t j = n0; j < k->n; j++) /* named here, where the file is known */
            if (k->ids[j] < 0 || k->ids[j] >= vocab)
                return err_set(e, "%s: token %d is outside the model's vocabulary of %d", p, k->ids[j], vocab);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// loss over the batches

typedef struct {
    const int32_t *ids;
    int B, T, eot, batches;
    int *tok, *tgt, *pos;
} Batches;

/* batch b into m: rows of T + 1 consecutive tokens */
static long batch_set(Batches *x, Llama *m, int b) {
    int B = x->B, T = x->T;
    for (int r = 0; r < B; r++) {
        const int32_t *w = x->ids + ((size_t)b * B + r) * T;
        for (int t = 0; t < T; t++) {
            x->tok[r * T + t] = w[t];
            x->tgt[r * T + t] = w[t + 1];
        }
    }
    llama_doc_pos(x->tok, B, T, x->eot, x->pos);
    Err e;
    if (llama_set_batch(m, x->tok, x->tgt, x->pos, &e)) LC_FATAL("calibration batch: %s", e.msg); /* ids checked */
    return llama_count_targets(x->tgt, (size_t)B * T);
}

static double mean_loss(Batches *x, Llama *m) {
    double sum = 0;
    long n = 0;
    for (int b = 0; b < x->batches; b++) {
        n += batch_set(x, m, b);
        sum += llama_forward(m, 0, m->c.n_layers, 0);
    }
    return n ? sum / n : 0;
}

// ----------------------------------------------------------------------------
// printing

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* min / median / max of v[0..n) into out[3] */
static void summary(const double *v, int n, double *out) {
    double *s = xmalloc((size_t)n * sizeof *s);
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    out[0] = s[0], out[1] = s[n / 2], out[2] = s[n - 1];
    free(s);
}

static int kept(const int *list, int n, int i) {
    for (int k = 0; k < n; k++)
        if (list[k] == i) return 1;
    return 0;
}

static void print_importances(const PruneStats *s, const PrunePlan *p, int metric) {
    const LlamaConfig *c = &s->c, *to = &p->to;
    int H = c->n_heads, F = c->hidden;
    printf("importances (%ld batches, %ld tokens; layers ranked by %s):\n", s->batches, s->tokens,
           metric == PRUNE_LAYER_LOSS ? "skip loss" : "block influence");
    printf("  layer  block-infl  skip-loss   heads min/med/max        ffn min/med/max          kept\n");
    for (int l = 0; l < c->n_layers; l++) {
        double h[3], f[3];
        summary(s->head + (size_t)l * H, H, h);
        summary(s->ffn + (size_t)l * F, F, f);
        char dl[32] = "        -"; /* not measured: --no-skip-loss */
        if (!isnan(s->layer_dloss[l])) snprintf(dl, sizeof dl, "%+9.5f", s->layer_dloss[l]);
        printf("  %5d  %10.5f  %s   %6.3g %6.3g %6.3g   %6.3g %6.3g %6.3g   %s\n", l, s->layer_bi[l], dl, h[0], h[1],
               h[2], f[0], f[1], f[2], kept(p->layers, to->n_layers, l) ? "yes" : "-");
    }
    double d[3];
    summary(s->emb, c->dim, d);
    printf("  embedding channels: min %.4g, median %.4g, max %.4g (sum over %d norms); kept %d of %d\n", d[0], d[1],
           d[2], 2 * c->n_layers, to->dim, c->dim);
    printf("  per kept layer: %d of %d query heads (%d of %d KV groups), %d of %d MLP channels\n", to->n_heads, H,
           to->n_kv_heads, c->n_kv_heads, to->hidden, F);
}

static json_t *jarr(const double *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, isnan(v[i]) ? json_null() : json_real(v[i]));
    return a;
}

static json_t *jrows(const double *v, int rows, int n) {
    json_t *a = json_array();
    for (int r = 0; r < rows; r++) json_array_append_new(a, jarr(v + (size_t)r * n, (size_t)n));
    return a;
}

static json_t *jints(const int *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static int write_importances(const char *path, const PruneStats *s, const PrunePlan *p, double after, Err *e) {
    const LlamaConfig *c = &s->c, *to = &p->to;
    int L = c->n_layers, L2 = to->n_layers;
    json_t *j = json_object(), *k = json_object();
    json_object_set_new(j, "batches", json_integer(s->batches));
    json_object_set_new(j, "tokens", json_integer(s->tokens));
    json_object_set_new(j, "loss_before", json_real(s->loss));
    json_object_set_new(j, "loss_after", json_real(after));
    json_object_set_new(j, "layer_block_influence", jarr(s->layer_bi, (size_t)L));
    json_object_set_new(j, "layer_skip_loss_delta", jarr(s->layer_dloss, (size_t)L));
    json_object_set_new(j, "heads", jrows(s->head, L, c->n_heads));
    json_object_set_new(j, "kv_groups", jrows(s->group, L, c->n_kv_heads));
    json_object_set_new(j, "ffn_channels", jrows(s->ffn, L, c->hidden));
    json_object_set_new(j, "embedding_channels", jarr(s->emb, (size_t)c->dim));
    json_t *heads = json_array(), *groups = json_array(), *ffn = json_array();
    for (int i = 0; i < L2; i++) {
        json_array_append_new(heads, jints(p->heads + (size_t)i * to->n_heads, (size_t)to->n_heads));
        json_array_append_new(groups, jints(p->groups + (size_t)i * to->n_kv_heads, (size_t)to->n_kv_heads));
        json_array_append_new(ffn, jints(p->ffn + (size_t)i * to->hidden, (size_t)to->hidden));
    }
    json_object_set_new(k, "layers", jints(p->layers, (size_t)L2));
    json_object_set_new(k, "heads", heads);
    json_object_set_new(k, "kv_groups", groups);
    json_object_set_new(k, "ffn_channels", ffn);
    json_object_set_new(k, "embedding_channels", jints(p->dim, (size_t)to->dim));
    json_object_set_new(j, "kept", k);
    int rc = iofile_json_write(path, j, e);
    json_decref(j);
    return rc;
}

// ----------------------------------------------------------------------------

static const char about[] =
    "A smaller Llama from MODEL (checkpoint, HF directory or GGUF) by structured pruning, as NVIDIA's\n"
    "Minitron does: importances from forward passes over calibration batches (no backward), the least\n"
    "important removed, the same number in every layer, so PRUNED is a plain Llama (docs/prune.md).\n"
    "  layers: block influence 1 - cos(h_in, h_out) over tokens, and the loss increase when the layer\n"
    "    is skipped (both printed; --layer-metric picks which one ranks);\n"
    "  query heads: on o_proj's input, per channel mean |x| over the sequence, L2 over batch rows,\n"
    "    L2 over the head's channels; GQA stays valid: every KV group keeps the same number of query\n"
    "    heads, and fewer kv_heads removes whole groups (ranked by the L2 of their heads);\n"
    "  MLP channels: the same statistic on down_proj's input silu(gate) * up;\n"
    "  embedding channels: the same on every RMSNorm's output, summed over the norms; one ranking for\n"
    "    the embedding, every norm, every projection's D side and the LM head.\n"
    "--target: layers=N,heads=H,kv_heads=K,ffn=F,dim=D (any subset; kv_heads alone keeps the heads per\n"
    "group) or a preset: smollm2-135m-half (SmolLM2-135M at half its non-embedding parameters by width:\n"
    "dim 576 -> 384, ffn 1536 -> 1024, all 30 layers and 9/3 heads of 64: 53,107,584 of 106,203,456\n"
    "non-embedding, 71,981,952 in all) or smollm2-135m-half-depth (15 of its 30 layers: 53,102,016\n"
    "non-embedding, 81,413,568 in all). Heads keep their size; a width-pruned model records head_dim.\n"
    "--calib: token shards of the model's tokenizer, or text / .jsonl documents (field text) tokenised\n"
    "with it; consecutive windows of --seq + 1 tokens, --batch rows a batch, --calib-batches batches.\n"
    "Prints the importances (--importances FILE.json: every score and what was kept) and the\n"
    "calibration loss and perplexity before and after. PRUNED's form: --format, else as convert\n"
    "decides from the name (.gguf GGUF, .h5 checkpoint, else a HF directory); it carries MODEL's tokenizer.";

int cmd_prune(int argc, char **argv, Err *e) {
    const char *model = NULL, *target = NULL, *out = NULL, *format = NULL, *tokflag = NULL, *metric_name = "bi";
    const char *imp_path = NULL, *type_name = NULL;
    long B = 4, T = 0, nbatch = 8;
    int force = 0, no_skip = 0;
    CliList calib = {{0}, 0};
    CliFlag flags[] = {
        {"model", CLI_STR, &model, 0, 0, "the model to prune: checkpoint, HF directory or GGUF"},
        {"calib", CLI_LIST, &calib, 0, 0, "calibration data: token shard, text file or .jsonl (repeatable)"},
        {"target", CLI_STR, &target, 0, 0, "SHAPE (layers=N,heads=H,kv_heads=K,ffn=F,dim=D, any subset) or a preset"},
        {"out", CLI_STR, &out, 0, 0, "where the pruned model goes"},
        {"format", CLI_STR, &format, 0, 0, "ckpt, hf or gguf (default: from --out's name, as convert)"},
        {"type", CLI_STR, &type_name, 0, 0, "GGUF matrix type: f32, f16, bf16 or q8_0 (default f32)"},
        {"tokenizer", CLI_STR, &tokflag, 0, 0, "the model's tokenizer (default: the one MODEL carries)"},
        {"batch", CLI_INT, &B, 1, 1 << 12, "calibration rows per batch"},
        {"seq", CLI_INT, &T, 0, 1 << 20, "calibration sequence length (0: 256, or the model's context if shorter)"},
        {"calib-batches", CLI_INT, &nbatch, 1, 1 << 20, "calibration batches (fewer if the data runs out)"},
        {"layer-metric", CLI_STR, &metric_name, 0, 0, "bi (block influence) or loss (skip loss): ranks layers"},
        {"no-skip-loss", CLI_BOOL, &no_skip, 0, 0, "leave out the skip-loss passes (about L/2 forwards more a batch); layers rank by bi"},
        {"importances", CLI_STR, &imp_path, 0, 0, "write every importance and what was kept to this JSON file"},
        {"force", CLI_BOOL, &force, 0, 0, "replace an existing --out"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac prune --model M --calib DATA --target SHAPE|PRESET --out PRUNED [flags]", about, flags, nf);
        return 0;
    }
    if (!model) return err_set(e, "--model: required");
    if (!calib.n) return err_set(e, "--calib: required");
    if (!target) return err_set(e, "--target: required");
    if (!out) return err_set(e, "--out: required");
    int metric;
    if (strcmp(metric_name, "bi") == 0) metric = PRUNE_LAYER_BI;
    else if (strcmp(metric_name, "loss") == 0) metric = PRUNE_LAYER_LOSS;
    else return err_set(e, "--layer-metric: unknown metric '%s' (bi or loss)", metric_name);
    if (metric == PRUNE_LAYER_LOSS && no_skip) return err_set(e, "--layer-metric loss: needs the skip-loss passes");
    SourceSaveFormat fmt = source_save_format(out);
    if (format && source_save_parse(format, &fmt, e)) return -1;
    GgufType gtype = GGUF_F32;
    if (type_name && gguf_type_parse(type_name, &gtype, e)) return -1;
    if (type_name && fmt != SOURCE_SAVE_GGUF) return err_set(e, "--type: only for a GGUF --out");
    if (!force && fmt != SOURCE_SAVE_HF && access(out, F_OK) == 0)
        return err_set(e, "%s: exists (--force replaces it)", out);

    ModelSource ms;
    if (source_open(&ms, model, e)) return -1;
    LlamaConfig c = ms.c, to;
    if (c.num_labels) return err_set(e, "%s: a classifier (reward model): prune takes causal LMs", model);
    if (prune_target(&c, target, &to, e)) return -1;
    if (fmt == SOURCE_SAVE_GGUF && gguf_check_export(out, &to, e)) return -1;
    if (T == 0) T = c.max_seq < 256 ? c.max_seq : 256;
    if (T < 2) return err_set(e, "--seq: must be at least 2, got %ld", T);
    if (T > c.max_seq) return err_set(e, "--seq: %ld exceeds the context length %d of %s", T, c.max_seq, model);

    /* the tokenizer: needed for text, carried by HF and GGUF outputs */
    Tokenizer tok;
    int have_tok = 0;
    Err te;
    const char *tokpath = source_tokenizer(&ms, tokflag, &te);
    if (tokpath) {
        if (tok_load(&tok, tokpath, e)) return -1;
        have_tok = 1;
        if (tok.vocab > c.vocab) {
            tok_free(&tok);
            return err_set(e, "%s: %d tokens do not fit the model's vocab_size %d", tokpath, tok.vocab, c.vocab);
        }
        if (ms.kind == SOURCE_CKPT && ms.tokenizer_id != tok.id) {
            tok_free(&tok);
            return err_set(e, "%s: not the tokenizer %s was trained with", tokpath, model);
        }
    }
    uint64_t model_tok = have_tok ? tok.id : ms.tokenizer_id;
    char *jinja = NULL;
    int rc = -1;
    Calib k = {NULL, 0, 0, (size_t)nbatch * B * T + 1, have_tok ? &tok : NULL};
    Llama m, pm;
    memset(&m, 0, sizeof m);
    memset(&pm, 0, sizeof pm);
    PruneStats st;
    PrunePlan plan;
    memset(&st, 0, sizeof st);
    memset(&plan, 0, sizeof plan);
    ParamTable dt = {0};
    if (have_tok && tok.chat_template) {
        jinja = xmalloc(strlen(tok.chat_template) + 1);
        memcpy(jinja, tok.chat_template, strlen(tok.chat_template) + 1);
    } else if (have_tok && chat_template_beside(tokpath, &jinja, e)) {
        goto out;
    }
    if (calib_read(&k, &calib, model_tok, c.vocab, model, e)) goto out;
    Batches bx = {k.ids, (int)B, (int)T, have_tok ? tok.eos : -1, k.n > 0 ? (int)((k.n - 1) / ((size_t)B * T)) : 0, NULL, NULL, NULL};
    if (k.n > 0 && bx.eot < 0) { /* a shard's end-of-text id */
        Shard s;
        if (is_shard(calib.v[0]) && shard_open(&s, calib.v[0], &te) == 0) {
            bx.eot = s.eot;
            shard_close(&s);
        }
    }
    if (bx.batches < 1) {
        err_set(e, "%s: %zu calibration tokens, fewer than one batch of %ld x %ld + 1", calib.v[0], k.n, B, T);
        goto out;
    }
    if (bx.batches > nbatch) bx.batches = (int)nbatch;
    bx.tok = xmalloc((size_t)B * T * sizeof(int));
    bx.tgt = xmalloc((size_t)B * T * sizeof(int));
    bx.pos = xmalloc((size_t)B * T * sizeof(int));

    if (llama_init(&m, &c, &ops_cpu, NULL, (int)B, (int)T, 0, e)) goto out_batches;
    double t0 = time_now();
    if (source_load(&ms, &m.t, m.params, e)) goto out_batches;
    double t1 = time_now();
    prune_stats_init(&st, &c);
    for (int b = 0; b < bx.batches; b++) {
        long n = batch_set(&bx, &m, b);
        prune_collect(&st, &m, n, !no_skip);
    }
    prune_finish(&st);
    double t2 = time_now();
    prune_plan(&st, &to, metric, &plan);
    print_importances(&st, &plan, metric);

    if (params_build(&to, &dt, e)) goto out_batches;
    float *dst = xalloc_aligned(dt.size * sizeof(float));
    memset(dst, 0, dt.size * sizeof(float));
    prune_apply(&plan, &m.t, m.params, &dt, dst);
    if (llama_init(&pm, &to, &ops_cpu, NULL, (int)B, (int)T, 0, e)) {
        free(dst);
        goto out_batches;
    }
    memcpy(pm.params, dst, dt.size * sizeof(float));
    double after = mean_loss(&bx, &pm);
    double t3 = time_now();
    size_t ne0 = prune_non_embedding(&c), ne1 = prune_non_embedding(&to);
    printf("calibration loss: before %.4f (perplexity %.2f), after %.4f (perplexity %.2f)\n", st.loss, exp(st.loss),
           after, exp(after));
    printf("shape: dim %d -> %d, layers %d -> %d, heads %d/%d -> %d/%d (head size %d), ffn %d -> %d\n", c.dim, to.dim,
           c.n_layers, to.n_layers, c.n_heads, c.n_kv_heads, to.n_heads, to.n_kv_heads, config_head_size(&to),
           c.hidden, to.hidden);
    printf("parameters: %zu -> %zu; non-embedding %zu -> %zu (%.1f%%)\n", m.t.numel, dt.numel, ne0, ne1,
           100.0 * (double)ne1 / (double)ne0);
    if (imp_path && write_importances(imp_path, &st, &plan, after, e)) {
        free(dst);
        goto out_batches;
    }
    static const char *const kinds[] = {"checkpoint", "Hugging Face directory", "GGUF"};
    SourceSave so = {fmt, have_tok ? &tok : NULL, tokpath, jinja, model_tok, to.name, gtype, force};
    rc = source_save(out, &to, &dt, dst, &so, e);
    free(dst);
    if (rc == 0)
        printf("llamac: %s -> %s (%s): read %.2f s, importances %.2f s (%d batches of %ld x %ld), pruned + "
               "evaluated %.2f s\n", model, out, kinds[fmt], t1 - t0, t2 - t1, bx.batches, B, T, t3 - t2);
out_batches:
    free(bx.tok), free(bx.tgt), free(bx.pos);
out:
    llama_free(&pm);
    llama_free(&m);
    params_free(&dt);
    prune_plan_free(&plan);
    prune_stats_free(&st);
    free(k.ids);
    free(jinja);
    if (have_tok) tok_free(&tok);
    return rc;
}
