/*
 * cmd_quantize.c: `llamac quantize IN OUT.gguf --type T`: any model llamac
 * reads (checkpoint, Hugging Face directory, GGUF of any type, which is
 * dequantised first) to a GGUF of quantised matrices for llama.cpp, written
 * by train/io/gguf.c with model/quant.c's quantisers (ggml's reference ones,
 * no importance matrix: the bytes llama.cpp's quantiser writes).
 *
 * Which type each tensor gets is llama.cpp's (llama-quant.cpp): 1-D tensors
 * (norms) stay F32. A single type (q8_0 ... q6_k) goes on every matrix, as
 * `llama-quantize --pure` does; a mix (q4_k_m, q5_k_m: LLAMA_FTYPE_MOSTLY_
 * Q4_K_M / Q5_K_M) gives Q6_K to the output matrix (a tied token_embd stands
 * for it; Q8_0 when its rows are not whole blocks of the base type), and to
 * attn_v and ffn_down in the layers use_more_bits picks: the first and last
 * eighth and every third between. Then, in both, a matrix whose rows are not
 * whole blocks falls back as llama.cpp's tensor_type_fallback does: Q4_K ->
 * Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 where even 32 does not divide.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../data/chat.h"
#include "../../data/tok.h"
#include "../../model/quant.h"
#include "../io/gguf.h"
#include "../io/source.h"
#include "../proc/cli.h"
#include "cmds.h"

/* The --type values: the base type of the matrices, general.file_type
 * (llama.cpp's LLAMA_FTYPE; a pure K type takes the _S one of its base),
 * whether llama.cpp's mix rules apply. */
static const struct {
    const char *name;
    uint32_t type, ftype;
    int mix;
} kinds[] = {
    {"q8_0", QUANT_Q8_0, 7, 0},    {"q4_0", QUANT_Q4_0, 2, 0},     {"q4_1", QUANT_Q4_1, 3, 0},
    {"q5_0", QUANT_Q5_0, 8, 0},    {"q5_1", QUANT_Q5_1, 9, 0},     {"q4_k", QUANT_Q4_K, 14, 0},
    {"q5_k", QUANT_Q5_K, 16, 0},   {"q6_k", QUANT_Q6_K, 18, 0},    {"q4_k_m", QUANT_Q4_K, 15, 1},
    {"q5_k_m", QUANT_Q5_K, 17, 1},
};
#define N_KINDS ((int)(sizeof kinds / sizeof kinds[0]))
#define KIND_LIST "q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m or q5_k_m"

/* llama.cpp's use_more_bits: layers that get more bits in the _M mixes */
static int more_bits(int l, int n) { return l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2; }

/* llama.cpp's tensor_type_fallback for rows of cols values */
static uint32_t fallback(uint32_t ty, int64_t cols) {
    if (cols % quant_block(ty) == 0) return ty;
    if (ty == QUANT_Q4_K) ty = QUANT_Q5_0;
    else if (ty == QUANT_Q5_K) ty = QUANT_Q5_1;
    else if (ty == QUANT_Q6_K) ty = QUANT_Q8_0;
    return cols % quant_block(ty) == 0 ? ty : QUANT_F16;
}

/* The type of the matrix with GGUF name g (cols per row) under kind k. */
static uint32_t matrix_type(int k, const char *g, int64_t cols, const LlamaConfig *c) {
    uint32_t ty = kinds[k].type;
    int layer = -1;
    if (kinds[k].mix) {
        if (strcmp(g, "output.weight") == 0 || (c->tied && strcmp(g, "token_embd.weight") == 0))
            ty = cols % quant_block(ty) != 0 ? QUANT_Q8_0 : ty != QUANT_Q8_0 ? QUANT_Q6_K : ty;
        else if (sscanf(g, "blk.%d.", &layer) == 1 && (strstr(g, ".attn_v.") || strstr(g, ".ffn_down.")) &&
                 more_bits(layer, c->n_layers))
            ty = QUANT_Q6_K;
    }
    return fallback(ty, cols);
}

static uint64_t stored_bytes(uint32_t ty, const ParamInfo *p) {
    if (ty == QUANT_F32) return (uint64_t)p->numel * 4;
    if (ty == QUANT_F16) return (uint64_t)p->numel * 2;
    return quant_bytes(ty, p->shape[0], p->shape[1]);
}

/* "[i/n]" on one line of a terminal, rewritten in place */
static void progress(void *arg, int i, int n, uint32_t ty) {
    (void)ty;
    if (!*(int *)arg) return;
    fprintf(stderr, "\rllamac: quantizing tensor %d/%d", i + 1, n);
    if (i + 1 == n) fputc('\n', stderr);
}

int cmd_quantize(int argc, char **argv, Err *e) {
    const char *type_name = NULL, *tokpath = NULL, *name = NULL;
    int force = 0;
    CliFlag flags[] = {
        {"type", CLI_STR, &type_name, 0, 0,
         "required: " KIND_LIST " (any case). A single type goes on every matrix (llama-quantize --pure); "
         "q4_k_m / q5_k_m are llama.cpp's mixes (Q6_K for the output matrix and for attn_v and ffn_down in "
         "the first and last eighth of the layers and every third between)"},
        {"tokenizer", CLI_STR, &tokpath, 0, 0,
         "tokenizer the GGUF carries (default: IN's own, a GGUF's vocabulary or a HF directory's "
         "tokenizer.json; a checkpoint has none: then the GGUF has no vocabulary)"},
        {"name", CLI_STR, &name, 0, 0, "general.name (default: IN's model name)"},
        {"force", CLI_BOOL, &force, 0, 0, "replace an existing OUT"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[2];
    if (cli_parse(argc, argv, flags, nf, pos, 2, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac quantize IN OUT.gguf --type T [flags]",
                 "Quantise a model for llama.cpp. IN is any model llamac reads: a checkpoint, a Hugging Face\n"
                 "directory or a GGUF (an already quantised GGUF is dequantised, then requantised). OUT is a\n"
                 "GGUF v3 file whose matrices are quantised with ggml's reference quantisers (what llama.cpp\n"
                 "writes without an importance matrix: the same bytes); norms stay F32. Types, in bits per\n"
                 "weight: q8_0 8.5, q6_k 6.56, q5_1 6, q5_k 5.5, q5_0 5.5, q4_1 5, q4_k 4.5, q4_0 4.5; the\n"
                 "mixes q4_k_m and q5_k_m are llama.cpp's Q4_K_M and Q5_K_M. A matrix whose rows are not a\n"
                 "multiple of the type's block falls back as llama.cpp does: Q4_K -> Q5_0, Q5_K -> Q5_1,\n"
                 "Q6_K -> Q8_0 (rows a multiple of 256 needed), F16 when 32 does not divide them.\n"
                 "Prints the tensors per type, the size and bits per weight. docs/quantization.md has more.",
                 flags, nf);
        return 0;
    }
    if (npos != 2) return err_set(e, "quantize: expected IN and OUT.gguf (see llamac quantize --help)");
    const char *in = pos[0], *out = pos[1];
    if (!type_name) return err_set(e, "quantize: --type is required (" KIND_LIST ")");
    int k = -1;
    for (int i = 0; i < N_KINDS; i++)
        if (strcasecmp(type_name, kinds[i].name) == 0) k = i;
    if (k < 0) return err_set(e, "--type: unknown type '%.32s' (expected " KIND_LIST ")", type_name);
    size_t ol = strlen(out);
    if (ol < 5 || strcmp(out + ol - 5, ".gguf") != 0) return err_set(e, "%s: OUT must be a GGUF file (.gguf)", out);
    struct stat st;
    if (!force && stat(out, &st) == 0) return err_set(e, "%s: exists (--force replaces it)", out);
    char dir[4096];
    const char *slash = strrchr(out, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - out) + 1 : 1, slash ? out : ".");
    if (access(dir, W_OK) != 0) return err_set(e, "%s: cannot write there: %s: %s", out, dir, strerror(errno));

    ModelSource ms;
    if (source_open(&ms, in, e)) return -1;
    LlamaConfig c = ms.c;
    if (gguf_check_export(out, &c, e)) return -1;
    ParamTable t;
    Err ve;
    if (params_build(&c, &t, &ve)) return err_set(e, "%s: %s", in, ve.msg);

    /* the vocabulary and chat template the file carries */
    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    char *jinja = NULL;
    float *params = NULL;
    uint32_t *qt = xcalloc((size_t)t.n, sizeof *qt);
    int rc = -1;
    if (!tokpath && ms.tokenizer[0]) tokpath = ms.tokenizer;
    if (tokpath) {
        if (tok_load(&tok, tokpath, e)) {
            tokpath = NULL;
            goto out;
        }
        if (tok.vocab > c.vocab) {
            err_set(e, "%s: %d tokens do not fit the model's vocab_size %d", tokpath, tok.vocab, c.vocab);
            goto out;
        }
        if (ms.kind == SOURCE_CKPT && ms.tokenizer_id != tok.id) {
            err_set(e, "%s: not the tokenizer %s was trained with", tokpath, in);
            goto out;
        }
        if (tok.chat_template) {
            jinja = xmalloc(strlen(tok.chat_template) + 1);
            memcpy(jinja, tok.chat_template, strlen(tok.chat_template) + 1);
        } else if (chat_template_beside(tokpath, &jinja, e)) {
            goto out;
        }
    }

    /* each tensor's type, and what the file will hold */
    enum { N_COUNT = 32 };
    int count[N_COUNT] = {0};
    uint32_t seen[N_COUNT];
    int n_seen = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < t.n; i++) {
        const ParamInfo *p = &t.p[i];
        char g[96];
        LC_ASSERT(gguf_tensor_name(p->name, g, sizeof g) == 0);
        qt[i] = p->ndim < 2 ? QUANT_F32 : matrix_type(k, g, p->shape[1], &c);
        bytes += stored_bytes(qt[i], p);
        int j = 0;
        while (j < n_seen && seen[j] != qt[i]) j++;
        if (j == n_seen) seen[n_seen++] = qt[i];
        count[j]++;
    }

    printf("llamac: quantize %s (%d layers, dim %d, %zu parameters) -> %s as %s\n", in, c.n_layers, c.dim, t.numel,
           out, kinds[k].name);
    fflush(stdout);
    params = xalloc_aligned(t.size * sizeof(float));
    double t0 = time_now();
    if (source_load(&ms, &t, params, e)) goto out;
    double t1 = time_now();
    int tty = isatty(2);
    const char *base = strrchr(in, '/');
    if (!name) name = c.name[0] ? c.name : base ? base + 1 : in;
    GgufOpts go = {.type = GGUF_F32, .name = name, .tok = tokpath ? &tok : NULL, .chat_template = jinja,
                   .qtypes = qt, .ftype = kinds[k].ftype, .progress = progress, .progress_arg = &tty};
    if (gguf_save(out, &c, &t, params, &go, e)) goto out;
    double t2 = time_now();
    char types[512];
    size_t at = 0;
    for (int j = 0; j < n_seen; j++)
        at += (size_t)snprintf(types + at, sizeof types - at, "%s%d %s", j ? ", " : "", count[j], quant_name(seen[j]));
    printf("llamac: wrote %s: %d tensors (%s); %.1f MB of weights, %.2f bits per weight (float32 %.1f MB); "
           "read in %.2f s, quantized and written in %.2f s\n", out, t.n, types, (double)bytes / 1e6,
           (double)bytes * 8 / (double)t.numel, (double)t.numel * 4 / 1e6, t1 - t0, t2 - t1);
    rc = 0;
out:
    if (tokpath) tok_free(&tok);
    free(jinja);
    free(params);
    free(qt);
    params_free(&t);
    return rc;
}
