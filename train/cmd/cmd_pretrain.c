/*
 * cmd_pretrain.c: `llamac pretrain`: pretrain a Llama from scratch on token
 * shards. The loop (accumulation, clipping, AdamW on the schedule, progress
 * line, metrics, validation, checkpoints, exact --resume) is the shared one
 * of train/loop/trainer.c; this file supplies what pretraining has of its own:
 * the model shape (--preset, --set, vocab from the shards) and batches of
 * token windows from the shards through the deterministic loader.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proc/cli.h"
#include "cmds.h"
#include "../loop/trainer.h"
#include "../loop/trdata.h"

int cmd_pretrain(int argc, char **argv, Err *e) {
    const char *preset = "15m";
    long shuffle = 1, doc_mask = 1;
    CliList train = {{0}, 0}, val = {{0}, 0}, set = {{0}, 0};
    TrainOpts o;
    trainer_opts_default(&o);
    CliFlag flags[8 + TRAINER_NFLAGS] = {
        {"train", CLI_LIST, &train, 0, 0, "training shard (repeatable)"},
        {"val", CLI_LIST, &val, 0, 0, "validation shard (repeatable; none: no validation)"},
        {"preset", CLI_STR, &preset, 0, 0, "model shape (llamac inspect --help); vocab comes from the shards"},
        {"set", CLI_LIST, &set, 0, 0, "override a model field, e.g. --set n_layers=4 (repeatable)"},
        {"shuffle", CLI_INT, &shuffle, 0, 1, "1: shuffled windows each epoch; 0: in file order"},
        {"doc-mask", CLI_INT, &doc_mask, 0, 1, "1: attention and RoPE positions restart at each end-of-text"},
    };
    int nf = 6;
    nf += trainer_flags(&o, flags + nf);
    int help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac pretrain [config.ini] --train SHARD [--val SHARD] [flags]",
                 "Pretrain a Llama from scratch on token shards (llamac tokenize makes them).\n"
                 "A config file holds the same keys as the flags (key = value; a [model] section\n"
                 "holds model fields); flags win. Defaults are the Llama recipe: AdamW (0.9, 0.95,\n"
                 "1e-5), weight decay 0.1 on matrices, clip 1.0, warmup then cosine to 10%.",
                 flags, nf);
        return 0;
    }
    if (trainer_check(&o, e)) return -1;
    ShardSet tr, va;
    memset(&va, 0, sizeof va);
    if (trdata_shards_open(&tr, &train, "--train", e)) { trdata_shards_close(&tr); return -1; }
    int rc = -1;
    Trainer t;
    Loader L, LV;
    memset(&t, 0, sizeof t);
    memset(&L, 0, sizeof L);
    memset(&LV, 0, sizeof LV);
    if (val.n && trdata_shards_open(&va, &val, "--val", e)) goto out;
    if (va.n && va.s[0].tokenizer_id != tr.s[0].tokenizer_id) {
        err_set(e, "%s: made by a different tokenizer than the training shards", val.v[0]);
        goto out;
    }
    LlamaConfig c;
    if (config_preset(preset, &c, e)) goto out;
    c.vocab = tr.s[0].vocab;
    for (int i = 0; i < set.n; i++)
        if (config_set_kv(&c, set.v[i], e)) goto out;
    if (c.vocab != tr.s[0].vocab) {
        err_set(e, "--set vocab=%d: the shards hold ids of a %d-word vocabulary", c.vocab, tr.s[0].vocab);
        goto out;
    }
    if (trainer_open(&t, &o, "pretrain", &c, NULL, e)) goto out;
    if (loader_init(&L, tr.p, tr.n, (int)o.B, (int)o.T, 0, 1, (int)shuffle, (int)doc_mask, (uint64_t)o.seed, e))
        goto out;
    if (va.n && loader_init(&LV, va.p, va.n, (int)o.B, (int)o.T, 0, 1, 0, (int)doc_mask, (uint64_t)o.seed, e))
        goto out;
    WinSource ws = {&L, NULL}, wv = {&LV, NULL};
    TrainData dt = trdata_windows(&ws, &tr, train.v[0], 0), dv = trdata_windows(&wv, &va, va.n ? val.v[0] : NULL, 0);
    rc = trainer_run(&t, &dt, va.n ? &dv : NULL, NULL, flags, nf, e);
out:
    loader_free(&LV);
    loader_free(&L);
    trainer_close(&t);
    trdata_shards_close(&tr);
    trdata_shards_close(&va);
    return rc;
}
