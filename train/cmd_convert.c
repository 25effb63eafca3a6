/*
 * cmd_convert.c: `llamac convert IN OUT`: models between llamac checkpoints,
 * Hugging Face directories and GGUF. The direction comes from the paths:
 *
 *   IN a HF directory (config.json) -> OUT a checkpoint (or OUT.gguf)
 *   IN a checkpoint                 -> OUT.gguf: GGUF for llama.cpp
 *                                   -> OUT.h5: a checkpoint (weights only)
 *                                   -> else OUT a HF directory
 *
 * The weights are loaded once into one parameter buffer and written from
 * it; an existing OUT is replaced only with --force, and only by a complete
 * file or directory (each writer goes through a temporary name + rename).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/chat.h"
#include "../data/tok.h"
#include "ckpt.h"
#include "cli.h"
#include "cmds.h"
#include "convert.h"
#include "gguf.h"

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int cmd_convert(int argc, char **argv, Err *e) {
    const char *tokpath = NULL, *name = NULL, *tname = NULL, *type_name = NULL;
    int force = 0;
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
                 "A HF directory can also go straight to .gguf.",
                 flags, nf);
        return 0;
    }
    if (npos != 2) return err_set(e, "convert: expected IN and OUT (see llamac convert --help)");
    const char *in = pos[0], *out = pos[1];
    int to_gguf = ends_with(out, ".gguf");
    GgufType gtype = GGUF_F32;
    ChatTemplate tpl;
    if (type_name && gguf_type_parse(type_name, &gtype, e)) return -1;
    if (type_name && !to_gguf) return err_set(e, "--type: only for a GGUF OUT (a name ending in .gguf)");
    if (tname && chat_template_parse(tname, &tpl, e)) return -1;
    struct stat st;
    if (!force && stat(out, &st) == 0 && !S_ISDIR(st.st_mode))
        return err_set(e, "%s: exists (--force replaces it)", out);

    LlamaConfig c;
    uint64_t tok_id;
    int is_hf;
    if (convert_model_config(in, &c, &tok_id, &is_hf, e)) return -1;
    int to_ckpt = !to_gguf && (is_hf || ends_with(out, ".h5"));
    if (to_ckpt && stat(out, &st) == 0 && S_ISDIR(st.st_mode))
        return err_set(e, "%s: is a directory, expected a checkpoint file name", out);
    if (tname && to_ckpt) return err_set(e, "--template: only for a GGUF or Hugging Face OUT (a checkpoint has none)");
    if (tname && !to_gguf && !tokpath)
        return err_set(e, "--template: a Hugging Face OUT keeps it in tokenizer_config.json, which needs --tokenizer");

    int bos = -1, eos = -1;
    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    static char dir_tok[4200];
    if (!tokpath && is_hf && convert_hf_tokenizer(in, dir_tok, sizeof dir_tok) == 0)
        tokpath = dir_tok; /* the directory carries its tokenizer */
    if (tokpath) {
        if (tok_load(&tok, tokpath, e)) return -1;
        int bad = 0;
        if (tok.vocab > c.vocab)
            bad = err_set(e, "%s: %d tokens do not fit the model's vocab_size %d", tokpath, tok.vocab, c.vocab);
        else if (!is_hf && tok_id != tok.id)
            bad = err_set(e, "%s: not the tokenizer %s was trained with", tokpath, in);
        tok_id = tok.id;
        bos = tok.bos, eos = tok.eos;
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
    if (convert_model_load(in, &c, &t, params, e)) goto out;
    double t1 = time_now();
    const char *kind;
    if (to_gguf) {
        kind = "GGUF";
        const char *base = strrchr(in, '/');
        if (!name) name = c.name[0] ? c.name : base ? base + 1 : in;
        GgufOpts go = {gtype, name, tokpath ? &tok : NULL, jinja};
        rc = gguf_save(out, &c, &t, params, &go, e);
    } else if (to_ckpt) {
        kind = "checkpoint";
        rc = ckpt_save(out, &c, &t, params, tok_id, NULL, NULL, e);
    } else {
        kind = "Hugging Face directory";
        if (tokpath) {
            ConvertTok tk = {&tok, tokpath, jinja};
            rc = convert_hf_save_tok(out, &c, &t, params, &tk, force, e);
        } else {
            rc = convert_hf_save(out, &c, &t, params, bos, eos, force, e);
        }
    }
    if (rc == 0) {
        double t2 = time_now(), mb = (double)t.numel * 4 / 1e6;
        struct stat so;
        double wrote = stat(out, &so) == 0 && S_ISREG(so.st_mode) ? (double)so.st_size / 1e6 : mb;
        printf("llamac: %s -> %s (%s%s%s): %d tensors, %zu parameters; read %.1f MB in %.2f s, wrote %.1f MB in "
               "%.2f s\n", in, out, kind, to_gguf ? " " : "", to_gguf ? gguf_type_name(gtype) : "", t.n, t.numel,
               mb, t1 - t0, wrote, t2 - t1);
    }
out:
    if (tokpath) tok_free(&tok);
    free(jinja);
    free(params);
    params_free(&t);
    return rc;
}
