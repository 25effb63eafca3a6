/*
 * cmd_generate.c: `llamac generate`: prompt in, text out, streamed token by
 * token: one request of one sample through the sampling engine
 * (run_generate), with temperature, top-k, top-p and a seed; tokens/s at
 * the end on stderr so stdout is only the text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proc/cli.h"
#include "cmds.h"
#include "../io/source.h"
#include "../proc/device.h"
#include "../loop/run.h"

int cmd_generate(int argc, char **argv, Err *e) {
    const char *model = NULL, *tokpath = NULL, *prompt = "", *device = "cpu", *adapter = NULL, *quant = NULL;
    long max_tokens = 256, top_k = 0, seed = 42, ctx = 0;
    int special = 0;
    double temperature = 0.8, top_p = 0.95;
    CliFlag flags[] = {
        {"model", CLI_STR, &model, 0, 0, "model: checkpoint (HDF5, from llamac pretrain or convert) or GGUF"},
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer file the model was trained with (default: the one a GGUF or HF directory carries)"},
        {"prompt", CLI_STR, &prompt, 0, 0, "text to continue"},
        {"special", CLI_BOOL, &special, 0, 0, "special-token names in the prompt (<|im_start|>) become their ids"},
        {"max-tokens", CLI_INT, &max_tokens, 1, 1 << 24, "tokens to generate at most"},
        {"temperature", CLI_FLOAT, &temperature, 0, 100, "softmax temperature (0: greedy)"},
        {"top-k", CLI_INT, &top_k, 0, 1 << 24, "sample from the k most likely tokens (0: off)"},
        {"top-p", CLI_FLOAT, &top_p, 0, 1, "nucleus sampling mass in (0, 1] (1: off)"},
        {"seed", CLI_INT, &seed, 0, 1L << 62, "sampling seed"},
        {"ctx", CLI_INT, &ctx, 0, 1 << 24, "context length for the KV cache (0: prompt + --max-tokens, at most the model's)"},
        {"adapter", CLI_STR, &adapter, 0, 0, "PEFT LoRA adapter directory to apply (from llamac sft or PEFT)"},
        {"quant", CLI_STR, &quant, 0, 0, "hold the weights quantised while decoding: keep (a GGUF file's own types), or quantise at load to nf4, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k"},
        {"device", CLI_STR, &device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac generate --model FILE [--tokenizer FILE] --prompt TEXT [flags]",
                 "Continue a prompt, streaming the text as it is generated (KV cache).", flags, nf);
        return 0;
    }
    if (!model) return err_set(e, "--model: required");
    if (device_check(device, e)) return -1;
    ModelSource ms;
    if (source_open(&ms, model, e)) return -1;
    if (!(tokpath = source_tokenizer(&ms, tokpath, e))) return -1;
    LlamaConfig c = ms.c;
    uint64_t model_tok = ms.tokenizer_id;
    Tokenizer tok;
    if (tok_load(&tok, tokpath, e)) return -1;
    int rc = -1;
    int32_t *ids = NULL;
    if (tok.id != model_tok || tok.vocab > c.vocab) {
        err_set(e, "%s: not the tokenizer %s was trained with", tokpath, model);
        goto out_tok;
    }
    size_t cap = 0, np = special ? tok_encode_special(&tok, prompt, strlen(prompt), &ids, &cap)
                                 : tok_encode(&tok, prompt, strlen(prompt), &ids, &cap);
    if (np == 0) { /* an empty prompt starts from end-of-text, the document separator */
        if (cap < 1) ids = xrealloc(ids, sizeof *ids);
        ids[0] = tok.eos;
        np = 1;
    }
    /* the cache holds what this run can reach, not the model's whole
     * context (8192 positions of a 30-layer model are gigabytes) */
    if (ctx == 0) ctx = (long)np + max_tokens < c.max_seq ? (long)np + max_tokens : c.max_seq;
    if (ctx > c.max_seq) {
        err_set(e, "--ctx: %ld exceeds the model's context length %d", ctx, c.max_seq);
        goto out_tok;
    }
    if ((long)np >= ctx) {
        err_set(e, "--prompt: %zu tokens do not fit the context of %ld tokens", np, ctx);
        goto out_tok;
    }
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = (float)temperature;
    sp.top_k = (int)top_k;
    sp.top_p = (float)top_p;
    if (sample_params_check(&sp, e)) goto out_tok;
    Llama m;
    Device dev;
    /* the engine keeps its own KV cache and activations: the model is its weights */
    if (device_load_model(&dev, device, model, adapter, quant, &c, &m, 1, 1, e)) goto out_tok;
    fputs(prompt, stdout);
    fflush(stdout);
    double t_pre, t_gen;
    EngineOpts eo = {1, 0, (int)ctx, ctx, 1}; /* one sequence; m's copies go once packed */
    int n = run_generate(&m, &tok, &sp, (uint64_t)seed, ids, (int)np, (int)max_tokens, &eo, stdout, &t_pre, &t_gen, e);
    if (n >= 0) {
        printf("\n");
        fflush(stdout);
        fprintf(stderr, "llamac: %zu prompt tokens in %.3f s, %d tokens generated in %.3f s (%.1f tok/s)\n", np,
                t_pre, n, t_gen, t_gen > 0 ? n / t_gen : 0.0);
        rc = 0;
    }
    llama_free(&m);
    device_close(&dev);
out_tok:
    free(ids);
    tok_free(&tok);
    return rc;
}
