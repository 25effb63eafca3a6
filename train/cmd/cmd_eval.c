/*
 * cmd_eval.c: `llamac eval`: mean loss and perplexity of a model file on a
 * token shard or a set of them (shardset.h), walking its windows in order
 * (every window once with --batches 0).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../data/shardset.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../io/source.h"
#include "../proc/device.h"
#include "../loop/run.h"

int cmd_eval(int argc, char **argv, Err *e) {
    const char *model = NULL, *data = NULL, *device = "cpu";
    long B = 8, T = 256, batches = 0, doc_mask = 1;
    CliFlag flags[] = {
        {"model", CLI_STR, &model, 0, 0, "model: checkpoint (HDF5, from llamac pretrain or convert) or GGUF"},
        {"data", CLI_STR, &data, 0, 0, "token shards: a file, directory, glob or split NAME.bin"},
        {"batch", CLI_INT, &B, 1, 1 << 16, "batch size"},
        {"seq", CLI_INT, &T, 2, 1 << 20, "sequence length"},
        {"batches", CLI_INT, &batches, 0, 1L << 40, "batches to evaluate (0: the whole shard once)"},
        {"doc-mask", CLI_INT, &doc_mask, 0, 1, "1: attention and RoPE restart at each end-of-text"},
        {"device", CLI_STR, &device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac eval --model FILE --data SHARD [flags]",
                 "Mean cross-entropy loss per token and perplexity of a model on a shard.", flags, nf);
        return 0;
    }
    if (!model) return err_set(e, "--model: required");
    if (!data) return err_set(e, "--data: required");
    if (device_check(device, e)) return -1;
    ModelSource ms;
    if (source_open(&ms, model, e)) return -1;
    LlamaConfig c = ms.c;
    uint64_t model_tok = ms.tokenizer_id;
    ShardSet s;
    if (shardset_open(&s, &data, 1, "--data", e)) {
        shardset_close(&s);
        return -1;
    }
    int rc = -1;
    if (s.s[0].tokenizer_id != model_tok || s.s[0].vocab != c.vocab) {
        err_set(e, "%s: made by a different tokenizer than the model %s was trained with", data, model);
        goto out_shard;
    }
    Llama m;
    Device dev;
    if (device_load_model(&dev, device, model, NULL, NULL, &c, &m, (int)B, (int)T, e)) goto out_shard;
    Loader L;
    if (loader_init(&L, s.p, s.n, (int)B, (int)T, 0, 1, 0, (int)doc_mask, 0, e)) goto out_model;
    if (batches == 0) batches = (long)(loader_windows(&L) / (uint64_t)B);
    long ntok;
    double t0 = time_now();
    double loss = run_eval_loss(&m, &L, batches, &ntok);
    double dt = time_now() - t0;
    printf("eval %s on %s: %ld batches, %ld tokens: loss %.4f, perplexity %.2f (%.0f tok/s)\n", model, data,
           batches, ntok, loss, exp(loss), ntok / dt);
    rc = 0;
    loader_free(&L);
out_model:
    llama_free(&m);
    device_close(&dev);
out_shard:
    shardset_close(&s);
    return rc;
}
