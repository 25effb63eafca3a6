/*
 * cmd_pretrain.c: `llamac pretrain`: pretrain a Llama from scratch on token
 * shards. The loop (accumulation, clipping, AdamW on the schedule, progress
 * line, metrics, validation, checkpoints, exact --resume) is the shared one
 * of train/loop/trainer.c; this file supplies what pretraining has of its own:
 * the model shape (--preset, --set, vocab from the shards) and batches of
 * token windows from the shards through the deterministic loader.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/loader.h"
#include "../../data/mixture.h"
#include "../../data/shard.h"
#include "../../data/shardset.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../loop/trainer.h"
#include "../loop/trdata.h"

/* The shards of a split, source after source: source k holds
 * p[first[k], first[k + 1]). Plain `--train SHARD` entries are one unnamed
 * source. Each SHARD is a file, a directory, a glob or a split NAME.bin
 * (shardset_expand). */
typedef struct {
    Shard *s;                      /* (cap) */
    const Shard **p;               /* (cap) p[i] = &s[i] */
    int n, cap;
    int nsrc, first[MIX_MAX_SOURCES + 1];
    char *name[MIX_MAX_SOURCES];   /* NULL for the unnamed source */
    double weight[MIX_MAX_SOURCES];
    char *text[MIX_MAX_SOURCES];   /* owned copies of the entries, cut in place */
} Sources;

static void close_shards(Sources *set) {
    for (int i = 0; i < set->n; i++) shard_close(&set->s[i]);
    for (int k = 0; k < MIX_MAX_SOURCES; k++) free(set->text[k]);
    free(set->s);
    free(set->p);
    memset(set, 0, sizeof *set);
}

/* Open the shards spec names (one file, or all that shardset_expand finds). */
static int open_one(Sources *set, const char *spec, const char *flag, Err *e) {
    (void)flag;
    char **paths = NULL;
    int np = 0, rc = shardset_expand(spec, &paths, &np, e);
    for (int i = 0; i < np && !rc; i++) {
        if (set->n == set->cap) {
            set->cap = set->cap ? 2 * set->cap : 16;
            set->s = xrealloc(set->s, (size_t)set->cap * sizeof *set->s);
            set->p = xrealloc(set->p, (size_t)set->cap * sizeof *set->p);
            for (int j = 0; j < set->n; j++) set->p[j] = &set->s[j];
        }
        if ((rc = shard_open(&set->s[set->n], paths[i], e))) break;
        set->p[set->n] = &set->s[set->n];
        set->n++;
        const Shard *a = &set->s[set->n - 1], *b = &set->s[0];
        if (a->tokenizer_id != b->tokenizer_id || a->vocab != b->vocab)
            rc = err_set(e, "%s: made by a different tokenizer than %s", paths[i], b->path);
    }
    for (int i = 0; i < np; i++) free(paths[i]);
    free(paths);
    return rc;
}

/* A named entry: "NAME=..." with NAME made of [A-Za-z0-9_.-] (a path holding
 * '=' after a '/' stays a path). */
static int is_named(const char *v) {
    size_t n = strcspn(v, "=/");
    return v[n] == '=' && n > 0;
}

/* Open a split's shards: plain paths (one source, as before mixtures) or
 * NAME=SHARD[+SHARD...][:WEIGHT] sources (with_weight: the weight is
 * required, else there is none). */
static int open_shards(Sources *set, const CliList *v, const char *flag, int with_weight, Err *e) {
    memset(set, 0, sizeof *set);
    if (v->n == 0) return err_set(e, "%s: no shard given", flag);
    int named = is_named(v->v[0]);
    for (int i = 1; i < v->n; i++)
        if (is_named(v->v[i]) != named)
            return err_set(e, "%s: '%.60s' and '%.60s': give either shards (one source) or NAME=SHARDS%s sources, "
                           "not both", flag, v->v[0], v->v[i], with_weight ? ":WEIGHT" : "");
    if (!named) {
        set->nsrc = 1;
        set->weight[0] = 1;
        for (int i = 0; i < v->n; i++)
            if (open_one(set, v->v[i], flag, e)) return -1;
        set->first[1] = set->n;
        return 0;
    }
    for (int k = 0; k < v->n; k++) {
        char *t = set->text[k] = strdup(v->v[k]), *eq = strchr(t, '=');
        LC_ASSERT(t);
        *eq = '\0';
        set->name[k] = t;
        if (mixture_check_name(t, flag, e)) return -1;
        for (int j = 0; j < k; j++)
            if (strcmp(set->name[j], t) == 0) return err_set(e, "%s: source name '%s' is given twice", flag, t);
        char *shards = eq + 1;
        set->weight[k] = 1;
        if (with_weight) {
            char *colon = strrchr(shards, ':');
            if (!colon)
                return err_set(e, "%s %s: no weight: expected NAME=SHARD[+SHARD...]:WEIGHT", flag, t);
            *colon = '\0';
            if (mixture_parse_weight(colon + 1, flag, t, &set->weight[k], e)) return -1;
        }
        set->first[k] = set->n;
        set->nsrc = k + 1;
        for (char *sh = shards, *plus;; sh = plus + 1) {
            plus = strchr(sh, '+');
            if (plus) *plus = '\0';
            if (!*sh) return err_set(e, "%s %s: an empty shard path", flag, t);
            if (open_one(set, sh, flag, e)) return -1;
            if (!plus) break;
        }
        set->first[k + 1] = set->n;
    }
    return 0;
}

/* The split's sources as the mixture takes them. */
static int set_sources(const Sources *set, MixSource *src) {
    for (int k = 0; k < set->nsrc; k++) {
        MixSource m = {set->name[k], set->weight[k], set->p + set->first[k], set->first[k + 1] - set->first[k]};
        src[k] = m;
    }
    return set->nsrc;
}

// ----------------------------------------------------------------------------
// the loader and the mixture as the trainer's data sources

static int mix_next(void *ud, int32_t *tok, int32_t *tgt, int32_t *pos, Err *e) {
    (void)e;
    mixture_next(ud, tok, tgt, pos, NULL);
    return 0;
}

static void mix_tell(const void *ud, uint64_t *cur) { mixture_tell(ud, cur); }

static int mix_seek(void *ud, const uint64_t *cur, Err *e) { return mixture_seek(ud, cur, e); }

/* The realised proportions: each source's share of the rows drawn so far. */
static void mix_report(const void *ud, char *json, size_t n) {
    const Mixture *M = ud;
    uint64_t all = M->row ? M->row : 1;
    json[0] = '\0';
    for (int k = 0; k < M->K; k++)
        snprintf(json + strlen(json), n - strlen(json), ",\"mix/%s\":%.6f", M->name[k],
                 (double)mixture_taken(M, k) / (double)all);
}

static TrainData mix_data(Mixture *M, const Shard *s0, const char *name) {
    uint64_t windows = 0;
    for (int k = 0; k < M->K; k++) windows += loader_windows(&M->src[k]);
    TrainData d = {M, name, s0->tokenizer_id, mixture_id(M), mix_next, mix_tell, mix_seek, windows, "windows", 0,
                   mixture_cursor_words(M), NULL, 0, M->K > 1 ? mix_report : NULL, NULL, NULL};
    return d;
}

/* The start-up lines of named sources. */
static void print_sources(const Mixture *M, const Sources *set) {
    for (int k = 0; k < M->K; k++)
        printf("  source %s: weight %g (%.1f%%), %d shard%s, %" PRIu64 " windows, %" PRIu64 " tokens\n", M->name[k],
               M->weight[k], 100.0 * (M->cum[k] - (k ? M->cum[k - 1] : 0)), set->first[k + 1] - set->first[k],
               set->first[k + 1] - set->first[k] == 1 ? "" : "s", loader_windows(&M->src[k]), M->tokens[k]);
}

int cmd_pretrain(int argc, char **argv, Err *e) {
    const char *preset = "15m";
    long shuffle = 1, doc_mask = 1;
    CliList train = {{0}, 0}, val = {{0}, 0}, set = {{0}, 0};
    TrainOpts o;
    trainer_opts_default(&o);
    CliFlag flags[8 + TRAINER_NFLAGS] = {
        {"train", CLI_LIST, &train, 0, 0, "training shards: a file, directory, glob or split NAME.bin (repeatable: one dataset), or a source of a mixture "
                                          "NAME=SHARD[+SHARD...]:WEIGHT (repeatable; each row's source drawn by weight)"},
        {"val", CLI_LIST, &val, 0, 0, "validation shard (repeatable; none: no validation), or NAME=SHARD[+SHARD...] "
                                      "(repeatable: the loss of each, val_loss/NAME, and their mean)"},
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
        cli_help("llamac pretrain [config.ini] --train SHARD [--val SHARD] [flags]\n"
                 "       llamac pretrain [config.ini] --train NAME=SHARD[+SHARD...]:WEIGHT ... [--val NAME=SHARD ...] [flags]",
                 "Pretrain a Llama from scratch on token shards (llamac tokenize makes them).\n"
                 "A config file holds the same keys as the flags (key = value; a [model] section\n"
                 "holds model fields, a [data] section NAME = SHARD[+SHARD...]:WEIGHT sources);\n"
                 "flags win. Defaults are the Llama recipe: AdamW (0.9, 0.95, 1e-5), weight decay\n"
                 "0.1 on matrices, clip 1.0, warmup then cosine to 10%.\n"
                 "Mixtures (docs/data.md): each row's source is drawn by weight from a stream\n"
                 "seeded by --seed, each source keeps its own epochs, and a checkpoint holds the\n"
                 "whole cursor, so --resume continues the same rows. A SHARD is a file, a directory\n"
                 "of *.bin, a glob, or the NAME.bin of a split tokenize encode --shard-size output.",
                 flags, nf);
        return 0;
    }
    if (trainer_check(&o, e)) return -1;
    Sources *tr = xcalloc(1, sizeof *tr), *va = xcalloc(1, sizeof *va);
    int rc = -1;
    Trainer t;
    Mixture M;
    Loader LV[MIX_MAX_SOURCES];
    WinSource wv[MIX_MAX_SOURCES];
    TrainData parts[MIX_MAX_SOURCES];
    memset(&t, 0, sizeof t);
    memset(&M, 0, sizeof M);
    memset(LV, 0, sizeof LV);
    if (open_shards(tr, &train, "--train", 1, e)) goto out;
    if (val.n && open_shards(va, &val, "--val", 0, e)) goto out;
    for (int i = 0; i < va->n; i++)
        if (va->s[i].tokenizer_id != tr->s[0].tokenizer_id || va->s[i].vocab != tr->s[0].vocab) {
            err_set(e, "%s: made by a different tokenizer than the training shards", va->s[i].path);
            goto out;
        }
    LlamaConfig c;
    if (config_preset(preset, &c, e)) goto out;
    c.vocab = tr->s[0].vocab;
    for (int i = 0; i < set.n; i++)
        if (config_set_kv(&c, set.v[i], e)) goto out;
    if (c.vocab != tr->s[0].vocab) {
        err_set(e, "--set vocab=%d: the shards hold ids of a %d-word vocabulary", c.vocab, tr->s[0].vocab);
        goto out;
    }
    /* the model first: its errors (--seq past the context) come before the data's, as ever */
    if (trainer_open(&t, &o, "pretrain", &c, NULL, e)) goto out;
    MixSource src[MIX_MAX_SOURCES];
    int k = set_sources(tr, src);
    if (mixture_init(&M, src, k, (int)o.B, (int)o.T, (int)shuffle, (int)doc_mask, (uint64_t)o.seed, "--train", e))
        goto out;
    for (int i = 0; i < va->nsrc; i++) {
        if (loader_init(&LV[i], va->p + va->first[i], va->first[i + 1] - va->first[i], (int)o.B, (int)o.T, 0, 1, 0,
                        (int)doc_mask, (uint64_t)o.seed, e))
            goto out;
        wv[i] = (WinSource){&LV[i], NULL};
        parts[i] = trdata_windows(&wv[i], va->s[0].tokenizer_id, va->name[i] ? va->name[i] : val.v[0], 0);
    }
    if (tr->name[0]) {
        printf("mixture of %d source%s (rows drawn by weight from --seed %ld):\n", M.K, M.K == 1 ? "" : "s", o.seed);
        print_sources(&M, tr);
    }
    TrainData dt = mix_data(&M, &tr->s[0], tr->name[0] ? tr->name[0] : train.v[0]), dv = parts[0];
    if (va->name[0]) { /* named validation sources: each reported */
        TrainData all = {NULL, "validation", tr->s[0].tokenizer_id, 0, NULL, NULL, NULL, 0, "windows", 0, 2, parts,
                         va->nsrc, NULL, NULL, NULL};
        dv = all;
    }
    rc = trainer_run(&t, &dt, va->n ? &dv : NULL, NULL, flags, nf, e);
    if (rc == 0 && M.K > 1) {
        printf("mixture: rows drawn");
        for (int i = 0; i < M.K; i++)
            printf("%s %s %" PRIu64 " (%.2f%%, weight %.2f%%)", i ? "," : "", M.name[i], mixture_taken(&M, i),
                   100.0 * (double)mixture_taken(&M, i) / (double)(M.row ? M.row : 1),
                   100.0 * (M.cum[i] - (i ? M.cum[i - 1] : 0)));
        printf("\n");
    }
out:
    for (int i = 0; i < MIX_MAX_SOURCES; i++) loader_free(&LV[i]);
    mixture_free(&M);
    trainer_close(&t);
    close_shards(tr);
    close_shards(va);
    free(tr);
    free(va);
    return rc;
}
