/*
 * cmd_logits.c: `llamac logits --model M --tokens 1,2,3 --out FILE`: the
 * next-token logits of every position of one token sequence, as float32
 * (T, V) row-major little-endian, no header. M is a checkpoint or a Hugging
 * Face directory; --adapter A attaches a PEFT LoRA adapter to it (the LoRA
 * forward, not a merge: the reference tests compare both). Positions run through llama_decode (KV cache), which the
 * model tests hold equal to the full forward. The reference tests compare
 * these with transformers' logits for the same tokens.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/llama.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../io/source.h"
#include "../io/peft.h"

/* "1,2,3" -> ids (caller frees); every id in [0, vocab). */
static int parse_tokens(const char *s, int vocab, int **ids, int *n, Err *e) {
    int cap = 16;
    *ids = xmalloc((size_t)cap * sizeof **ids);
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= vocab || (*end && *end != ',')) {
            free(*ids);
            *ids = NULL;
            return err_set(e, "--tokens: bad token id at \"%.20s\" (comma-separated ids in [0, %d))", p, vocab);
        }
        if (*n == cap) *ids = xrealloc(*ids, (size_t)(cap *= 2) * sizeof **ids);
        (*ids)[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return err_set(e, "--tokens: no token ids");
    }
    return 0;
}

int cmd_logits(int argc, char **argv, Err *e) {
    const char *model = NULL, *tokens = NULL, *out = NULL, *adapter = NULL;
    CliFlag flags[] = {
        {"model", CLI_STR, &model, 0, 0, "checkpoint or Hugging Face directory"},
        {"tokens", CLI_STR, &tokens, 0, 0, "comma-separated token ids"},
        {"out", CLI_STR, &out, 0, 0, "output file: float32 (T, V) logits"},
        {"adapter", CLI_STR, &adapter, 0, 0, "PEFT LoRA adapter directory for the model"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    if (cli_parse(argc, argv, flags, nf, NULL, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac logits --model M --tokens 1,2,3 --out FILE",
                 "Write the next-token logits at every position of a token sequence as float32 (T, V).",
                 flags, nf);
        return 0;
    }
    if (!model) return err_set(e, "--model: required");
    if (!tokens) return err_set(e, "--tokens: required");
    if (!out) return err_set(e, "--out: required");
    ModelSource ms;
    int *ids, n;
    if (source_open(&ms, model, e)) return -1;
    LlamaConfig c = ms.c;
    if (parse_tokens(tokens, c.vocab, &ids, &n, e)) return -1;
    Llama m;
    PeftAdapter a;
    memset(&a, 0, sizeof a);
    int rc = -1;
    if (adapter && peft_load(adapter, &c, &a, e)) goto out_ids;
    LlamaOpts o = {.grads = LLAMA_GRADS_NONE, .lora = adapter ? &a.lc : NULL};
    if (llama_init_opts(&m, &c, &ops_cpu, NULL, 1, n, &o, e)) goto out_ids;
    if (source_load(&ms, &m.t, m.params, e)) goto out_model;
    if (adapter) {
        LC_ASSERT(m.lt.size == a.t.size);
        m.ops->upload(m.ctx, m.lora_params, a.params, a.t.size * sizeof(float));
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        err_set(e, "%s: cannot create: %s", tmp, strerror(errno));
        goto out_model;
    }
    int ok = 1;
    for (int p = 0; p < n; p++) {
        llama_decode(&m, ids[p], p);
        ok &= fwrite(m.logits, sizeof(float), (size_t)c.vocab, f) == (size_t)c.vocab;
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, out) != 0) {
        err_set(e, "%s: cannot write: %s", out, strerror(errno));
        remove(tmp);
        goto out_model;
    }
    printf("llamac: logits of %d tokens (vocab %d) -> %s\n", n, c.vocab, out);
    rc = 0;
out_model:
    llama_free(&m);
out_ids:
    peft_free(&a);
    free(ids);
    return rc;
}
