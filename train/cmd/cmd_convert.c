/*
 * cmd_convert.c: `llamac convert IN OUT`: models between llamac checkpoints,
 * Hugging Face directories and GGUF. The direction comes from the paths:
 *
 *   IN a HF directory (config.json) -> OUT a checkpoint (or OUT.gguf)
 *   IN a checkpoint                 -> OUT.gguf: GGUF for llama.cpp
 *                                   -> OUT.h5: a checkpoint (weights only)
 *                                   -> else OUT a HF directory
 *
 * With --adapter A (a PEFT LoRA directory) the adapter is merged into the
 * weights in float32 (lora_merge) before any of these writes, or, with
 * --keep-adapter, stored unmerged beside them in a LoRA checkpoint (/lora;
 * --base-ref stores a reference to IN instead of its weights). A LoRA
 * checkpoint as IN converts as its merged model, or with --peft to a PEFT
 * adapter directory of its adapters. With --lora-init, OUT is a new PEFT
 * adapter directory for IN (PEFT's initialisation, B = 0 unless the testing
 * flag --lora-init-b gives it noise so that the adapter does something; a
 * classifier's adapter also trains a copy of IN's score head, PEFT's
 * SEQ_CLS). A classifier (reward model) has no GGUF form and is refused.
 *
 * The weights are loaded once into one parameter buffer and written from
 * it; an existing OUT is replaced only with --force, and only by a complete
 * file or directory (each writer goes through a temporary name + rename).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../data/chat.h"
#include "../../data/tok.h"
#include "../io/ckpt.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../io/hf.h"
#include "../io/source.h"
#include "../io/gguf.h"
#include "../io/peft.h"

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The flags of --lora-init. */
typedef struct LoraFlags {
    int init;
    long r, seed;
    double alpha, dropout, init_b;
    const char *targets, *layers;
    int rslora, gaussian;
} LoraFlags;

/* The base's score head into head ((num_labels, D) floats). */
static int base_head(const ModelSource *ms, float *head, Err *e) {
    ParamTable bt;
    if (params_build(&ms->c, &bt, e)) return -1;
    float *w = xalloc_aligned(bt.size * sizeof(float));
    int rc = source_load(ms, &bt, w, e), i = params_find(&bt, "score.weight");
    LC_ASSERT(i >= 0);
    if (rc == 0) memcpy(head, w + bt.p[i].offset, bt.p[i].numel * sizeof(float));
    free(w);
    params_free(&bt);
    return rc;
}

/* A fresh adapter for ms from the flags, written to out as a PEFT dir; a
 * classifier's adapter trains a copy of its score head, as PEFT's SEQ_CLS
 * does (modules_to_save), so the base's head is read for it. */
static int lora_init_dir(const char *in, const char *out, const ModelSource *ms, const LoraFlags *f, int force,
                         Err *e) {
    const LlamaConfig *c = &ms->c;
    LoraConfig lc;
    if (lora_config_from_flags(&lc, f->r, f->alpha, f->dropout, f->targets, f->layers, f->rslora, c, e)) return -1;
    lc.init = f->gaussian ? LORA_INIT_GAUSSIAN : LORA_INIT_KAIMING;
    lc.head = c->num_labels > 0;
    ParamTable t;
    if (lora_build(&lc, c, &t, e)) return -1;
    float *p = xalloc_aligned(t.size * sizeof(float));
    memset(p, 0, t.size * sizeof(float));
    lora_init_weights(&lc, &t, p, (uint64_t)f->seed);
    if (lc.head && base_head(ms, p + t.p[t.n - 1].offset, e)) {
        free(p);
        params_free(&t);
        return -1;
    }
    if (f->init_b > 0) { /* testing: B ~ normal(0, init_b) instead of 0 */
        Rng r;
        rng_seed(&r, (uint64_t)f->seed ^ 0x5eedb0b0u);
        for (int i = 1; i < t.n - lc.head; i += 2)
            for (size_t k = 0; k < t.p[i].numel; k++) p[t.p[i].offset + k] = (float)f->init_b * rng_normal(&r);
    }
    int rc = peft_save(out, &lc, &t, p, in, force, e);
    if (rc == 0)
        printf("llamac: new LoRA adapter for %s -> %s (PEFT): r %d, alpha %g, %d tensors, %zu parameters\n", in, out,
               lc.r, (double)lc.alpha, t.n, t.numel);
    free(p);
    params_free(&t);
    return rc;
}

/* A LoRA checkpoint's adapters as a PEFT directory. */
static int export_peft(const char *in, const char *out, int force, Err *e) {
    CkptInfo info;
    if (!ckpt_is_hdf5(in)) return err_set(e, "%s: --peft needs a LoRA checkpoint (.h5)", in);
    if (ckpt_info(in, &info, e)) return -1;
    if (!info.has_lora) return err_set(e, "%s: not a LoRA checkpoint (no /lora): --peft has no adapters to export", in);
    ParamTable lt;
    if (lora_build(&info.lora, &info.c, &lt, e)) return -1;
    float *lp = xalloc_aligned(lt.size * sizeof(float));
    memset(lp, 0, lt.size * sizeof(float));
    CkptLora cl = {info.lora, &lt, lp, NULL, NULL, 0};
    int rc = ckpt_load_lora(in, &info.c, NULL, NULL, &cl, NULL, NULL, e);
    if (rc == 0) rc = peft_save(out, &info.lora, &lt, lp, info.lora_base[0] ? info.lora_base : info.c.name, force, e);
    if (rc == 0)
        printf("llamac: %s -> %s (PEFT adapter): r %d, alpha %g, %d tensors, %zu parameters\n", in, out,
               info.lora.r, (double)info.lora.alpha, lt.n, lt.numel);
    free(lp);
    params_free(&lt);
    return rc;
}

int cmd_convert(int argc, char **argv, Err *e) {
    const char *tokpath = NULL, *name = NULL, *tname = NULL, *type_name = NULL, *adapter = NULL;
    int force = 0, keep = 0, base_ref = 0, peft = 0;
    LoraFlags lf = {.r = 8, .seed = 1};
    CliFlag flags[] = {
        {"tokenizer", CLI_STR, &tokpath, 0, 0,
         "tokenizer file (any kind llamac reads; default: a HF IN's tokenizer.json or tokenizer.model): its id "
         "goes into an imported checkpoint; on export it must be the checkpoint's, and a HF OUT carries it "
         "(tokenizer.json or tokenizer.model, tokenizer_config.json, generation_config.json)"},
        {"name", CLI_STR, &name, 0, 0, "model name for GGUF's general.name (default: IN's base name)"},
        {"type", CLI_STR, &type_name, 0, 0,
         "GGUF matrix type: f32, f16, bf16 or q8_0 (norms stay f32; default f32)"},
        {"template", CLI_STR, &tname, 0, 0,
         "chat template the export carries: llama2, llama3, llama3.1 or chatml (default: the tokenizer's, "
         "from tokenizer_config.json beside it)"},
        {"force", CLI_BOOL, &force, 0, 0, "replace an existing OUT"},
        {"adapter", CLI_STR, &adapter, 0, 0, "PEFT LoRA adapter directory to merge into the weights (float32)"},
        {"keep-adapter", CLI_BOOL, &keep, 0, 0, "with --adapter: OUT.h5 a LoRA checkpoint, base + unmerged adapter"},
        {"base-ref", CLI_BOOL, &base_ref, 0, 0, "with --keep-adapter: store a reference to IN (path + hash), not IN"},
        {"peft", CLI_BOOL, &peft, 0, 0, "IN a LoRA checkpoint: OUT a PEFT adapter directory of its adapters"},
        {"lora-init", CLI_BOOL, &lf.init, 0, 0, "write a new PEFT adapter directory OUT for IN instead"},
        {"lora-r", CLI_INT, &lf.r, -1e9, 1e9, "--lora-init: rank"},
        {"lora-alpha", CLI_FLOAT, &lf.alpha, -1e30, 1e30, "--lora-init: lora_alpha (0: the rank)"},
        {"lora-dropout", CLI_FLOAT, &lf.dropout, -1e30, 1e30, "--lora-init: lora_dropout"},
        {"lora-targets", CLI_STR, &lf.targets, 0, 0, "--lora-init: modules (q_proj,...,down_proj or all-linear; default q,k,v,o)"},
        {"lora-layers", CLI_STR, &lf.layers, 0, 0, "--lora-init: layers_to_transform (0,1 or 0-3; default all)"},
        {"lora-rslora", CLI_BOOL, &lf.rslora, 0, 0, "--lora-init: rsLoRA scale alpha / sqrt(r)"},
        {"lora-gaussian", CLI_BOOL, &lf.gaussian, 0, 0, "--lora-init: A ~ normal(0, 1/r) (init_lora_weights gaussian)"},
        {"seed", CLI_INT, &lf.seed, 0, 9.2e18, "--lora-init: seed of A"},
        {"lora-init-b", CLI_FLOAT, &lf.init_b, 0, 1e30, "testing: B ~ normal(0, this) instead of 0"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[2];
    if (cli_parse(argc, argv, flags, nf, pos, 2, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac convert IN OUT [flags]",
                 "Convert a model. IN a Hugging Face Llama directory (config.json + model.safetensors or\n"
                 "sharded safetensors with model.safetensors.index.json; F32, F16 or BF16) -> OUT an llamac\n"
                 "checkpoint. IN a checkpoint -> OUT ending in .gguf: GGUF v3 (--type) for llama.cpp; OUT\n"
                 "ending in .h5: a weights-only checkpoint; any other OUT: a Hugging Face directory\n"
                 "(config.json + model.safetensors, F32) that transformers' LlamaForCausalLM loads.\n"
                 "A HF directory can also go straight to .gguf. --adapter merges a PEFT LoRA adapter into\n"
                 "the weights first (--keep-adapter: stores it unmerged in a LoRA checkpoint OUT.h5); a LoRA\n"
                 "checkpoint IN converts as its merged model, or with --peft to a PEFT adapter directory;\n"
                 "--lora-init writes a new PEFT adapter directory OUT for IN.",
                 flags, nf);
        return 0;
    }
    if (npos != 2) return err_set(e, "convert: expected IN and OUT (see llamac convert --help)");
    const char *in = pos[0], *out = pos[1];
    if (lf.init && adapter) return err_set(e, "--lora-init: writes a new adapter, it takes no --adapter");
    if (keep && !adapter) return err_set(e, "--keep-adapter: needs --adapter");
    if (keep && !ends_with(out, ".h5")) return err_set(e, "--keep-adapter: OUT must be a checkpoint (.h5), got %s", out);
    if (base_ref && !keep) return err_set(e, "--base-ref: only with --keep-adapter");
    if (peft && (adapter || lf.init)) return err_set(e, "--peft: exports IN's own adapters, without --adapter or --lora-init");
    if (peft) return export_peft(in, out, force, e);
    int to_gguf = ends_with(out, ".gguf");
    GgufType gtype = GGUF_F32;
    ChatTemplate tpl;
    if (type_name && gguf_type_parse(type_name, &gtype, e)) return -1;
    if (type_name && !to_gguf) return err_set(e, "--type: only for a GGUF OUT (a name ending in .gguf)");
    if (tname && chat_template_parse(tname, &tpl, e)) return -1;
    struct stat st;
    if (lf.init) {
        ModelSource ms;
        if (source_open(&ms, in, e)) return -1;
        return lora_init_dir(in, out, &ms, &lf, force, e);
    }
    if (!force && stat(out, &st) == 0 && !S_ISDIR(st.st_mode))
        return err_set(e, "%s: exists (--force replaces it)", out);

    ModelSource ms;
    if (source_open(&ms, in, e)) return -1;
    LlamaConfig c = ms.c;
    if (to_gguf && gguf_check_export(out, &c, e)) return -1; /* before reading the weights */
    uint64_t tok_id = ms.tokenizer_id;
    int is_hf = ms.kind == SOURCE_HF;
    int to_ckpt = !to_gguf && (is_hf || ends_with(out, ".h5"));
    if (to_ckpt && stat(out, &st) == 0 && S_ISDIR(st.st_mode))
        return err_set(e, "%s: is a directory, expected a checkpoint file name", out);
    if (tname && to_ckpt) return err_set(e, "--template: only for a GGUF or Hugging Face OUT (a checkpoint has none)");
    if (tname && !to_gguf && !tokpath)
        return err_set(e, "--template: a Hugging Face OUT keeps it in tokenizer_config.json, which needs --tokenizer");

    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    if (!tokpath && is_hf && ms.tokenizer[0])
        tokpath = ms.tokenizer; /* the directory carries its tokenizer */
    if (tokpath) {
        if (tok_load(&tok, tokpath, e)) return -1;
        int bad = 0;
        if (tok.vocab > c.vocab)
            bad = err_set(e, "%s: %d tokens do not fit the model's vocab_size %d", tokpath, tok.vocab, c.vocab);
        else if (!is_hf && tok_id != tok.id)
            bad = err_set(e, "%s: not the tokenizer %s was trained with", tokpath, in);
        tok_id = tok.id;
        if (bad) {
            tok_free(&tok);
            return -1;
        }
    }

    /* the chat template: --template's, else the tokenizer directory's own */
    char *jinja = NULL;
    if (tname && tokpath) { /* the export must not carry a template its tokenizer cannot render */
        ChatMsg probe = {CHAT_USER, "", 0};
        ChatTokens ct = {0};
        int bad = chat_encode(&tok, tpl, &probe, 1, &ct, tokpath, e);
        chat_tokens_free(&ct);
        if (bad) {
            tok_free(&tok);
            return -1;
        }
    }
    if (tname) {
        const char *j = chat_template_jinja(tpl);
        jinja = xmalloc(strlen(j) + 1);
        memcpy(jinja, j, strlen(j) + 1);
    } else if (tokpath && tok.chat_template) { /* a GGUF's own template travels with it */
        jinja = xmalloc(strlen(tok.chat_template) + 1);
        memcpy(jinja, tok.chat_template, strlen(tok.chat_template) + 1);
    } else if (tokpath && chat_template_beside(tokpath, &jinja, e)) {
        tok_free(&tok);
        return -1;
    }

    ParamTable t;
    Err ve;
    if (params_build(&c, &t, &ve)) {
        if (tokpath) tok_free(&tok);
        free(jinja);
        return err_set(e, "%s: %s", in, ve.msg);
    }
    float *params = xalloc_aligned(t.size * sizeof(float));
    int rc = -1;
    double t0 = time_now();
    PeftAdapter a; /* read before the base: a bad adapter fails fast */
    memset(&a, 0, sizeof a);
    if (adapter && peft_load(adapter, &c, &a, e)) goto out;
    if (source_load(&ms, &t, params, e)) goto out_adapter;
    if (adapter) {
        if (!keep) {
            lora_merge(&a.lc, &c, &t, params, &a.t, a.params, 1);
            printf("llamac: merged %s (r %d, alpha %g, %d tensors) into %s\n", adapter, a.lc.r, (double)a.lc.alpha,
                   a.t.n, in);
        }
    }
    double t1 = time_now();
    const char *kind = to_gguf ? "GGUF" : to_ckpt ? "checkpoint" : "Hugging Face directory";
    if (keep) {
        kind = base_ref ? "LoRA checkpoint, base by reference" : "LoRA checkpoint";
        CkptLora cl = {a.lc, &a.t, a.params, base_ref ? in : NULL, NULL, 0};
        rc = ckpt_save_lora(out, &c, &t, params, tok_id, &cl, NULL, NULL, e);
    } else {
        const char *base = strrchr(in, '/');
        if (!name) name = c.name[0] ? c.name : base ? base + 1 : in;
        SourceSave so = {to_gguf ? SOURCE_SAVE_GGUF : to_ckpt ? SOURCE_SAVE_CKPT : SOURCE_SAVE_HF,
                         tokpath ? &tok : NULL, tokpath, jinja, tok_id, name, gtype, force};
        rc = source_save(out, &c, &t, params, &so, e);
    }
    if (rc == 0) {
        double t2 = time_now(), mb = (double)t.numel * 4 / 1e6;
        struct stat so;
        double wrote = stat(out, &so) == 0 && S_ISREG(so.st_mode) ? (double)so.st_size / 1e6 : mb;
        printf("llamac: %s -> %s (%s%s%s): %d tensors, %zu parameters; read %.1f MB in %.2f s, wrote %.1f MB in "
               "%.2f s\n", in, out, kind, to_gguf ? " " : "", to_gguf ? gguf_export_type_name(gtype) : "", t.n, t.numel,
               mb, t1 - t0, wrote, t2 - t1);
    }
out_adapter:
    peft_free(&a);
out:
    if (tokpath) tok_free(&tok);
    free(jinja);
    free(params);
    params_free(&t);
    return rc;
}
