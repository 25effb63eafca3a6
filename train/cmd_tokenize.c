/*
 * cmd_tokenize.c: `llamac tokenize train` learns a byte-level BPE tokenizer
 * from text or JSONL files; `llamac tokenize encode` turns documents into a
 * token shard (an end-of-text token after every document), optionally
 * holding out a fraction of the documents as a validation shard.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/bpe.h"
#include "../data/jsonl.h"
#include "../data/shard.h"
#include "cli.h"
#include "cmds.h"

// ----------------------------------------------------------------------------
// train

typedef struct {
    char **text;
    size_t *len;
    int n, cap;
    size_t bytes, max_bytes;
} Texts;

static int collect(void *ud, const char *text, size_t len, Err *e) {
    (void)e;
    Texts *t = ud;
    if (t->bytes >= t->max_bytes) return 0;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 1024;
        t->text = xrealloc(t->text, (size_t)t->cap * sizeof *t->text);
        t->len = xrealloc(t->len, (size_t)t->cap * sizeof *t->len);
    }
    t->text[t->n] = xmalloc(len + 1);
    memcpy(t->text[t->n], text, len);
    t->len[t->n++] = len;
    t->bytes += len;
    return 0;
}

static int tokenize_train(int argc, char **argv, Err *e) {
    const char *out = NULL, *field = "text";
    long vocab = 8192, max_mb = 256;
    CliList in = {{0}, 0};
    CliFlag flags[] = {
        {"input", CLI_LIST, &in, 0, 0, "text file (one document) or .jsonl (one per line); repeatable"},
        {"field", CLI_STR, &field, 0, 0, "JSON field holding the text"},
        {"vocab", CLI_INT, &vocab, 259, 1 << 20, "vocabulary size: 256 bytes + merges + special tokens"},
        {"max-mb", CLI_INT, &max_mb, 1, 1 << 20, "train on at most this many MB of text"},
        {"out", CLI_STR, &out, 0, 0, "tokenizer file to write"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac tokenize train --input FILE... --vocab N --out TOKENIZER",
                 "Learn a byte-level BPE tokenizer (digits split one by one, <|begin_of_text|> and\n"
                 "<|end_of_text|> special tokens) from text or JSONL files.", flags, nf);
        return 0;
    }
    if (!in.n) return err_set(e, "--input: required");
    if (!out) return err_set(e, "--out: required");
    Texts t = {0};
    t.max_bytes = (size_t)max_mb << 20;
    int rc = -1;
    for (int i = 0; i < in.n; i++)
        if (docs_each(in.v[i], field, collect, &t, e)) goto done;
    if (t.bytes == 0) {
        err_set(e, "%s: no text to train on", in.v[0]);
        goto done;
    }
    double t0 = time_now();
    Bpe b;
    if (bpe_train(&b, (const char *const *)t.text, t.len, t.n, (int)vocab, e)) goto done;
    double dt = time_now() - t0;
    if (bpe_save(&b, out, e) == 0) {
        printf("tokenizer: %d ids (%d merges) learned from %.1f MB in %.1f s, written to %s (id %016llx)\n",
               b.vocab, b.n_merges, t.bytes / 1e6, dt, out, (unsigned long long)b.id);
        rc = 0;
    }
    bpe_free(&b);
done:
    for (int i = 0; i < t.n; i++) free(t.text[i]);
    free(t.text);
    free(t.len);
    return rc;
}

// ----------------------------------------------------------------------------
// encode

typedef struct {
    const Bpe *tok;
    int32_t *ids[2];   /* train, val */
    size_t n[2], cap[2];
    uint32_t docs[2];
    long doc;
    long val_per_mille;
    size_t bytes;
} Enc;

static int encode_doc(void *ud, const char *text, size_t len, Err *e) {
    (void)e;
    Enc *x = ud;
    /* every document lands in the same split on every run: by its index */
    uint64_t h = (uint64_t)x->doc++ * 0x9e3779b97f4a7c15ULL;
    int s = (long)((h >> 33) % 1000) < x->val_per_mille;
    int32_t *tmp = NULL;
    size_t tcap = 0, k = bpe_encode(x->tok, text, len, &tmp, &tcap);
    if (x->n[s] + k + 1 > x->cap[s]) {
        x->cap[s] = 2 * (x->n[s] + k + 1);
        x->ids[s] = xrealloc(x->ids[s], x->cap[s] * sizeof(int32_t));
    }
    memcpy(x->ids[s] + x->n[s], tmp, k * sizeof(int32_t));
    x->n[s] += k;
    x->ids[s][x->n[s]++] = x->tok->eos;
    x->docs[s]++;
    x->bytes += len;
    free(tmp);
    return 0;
}

static int tokenize_encode(int argc, char **argv, Err *e) {
    const char *out = NULL, *val_out = NULL, *tokpath = NULL, *field = "text";
    double val_frac = 0;
    CliList in = {{0}, 0};
    CliFlag flags[] = {
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer file (llamac tokenize train)"},
        {"input", CLI_LIST, &in, 0, 0, "text file (one document) or .jsonl (one per line); repeatable"},
        {"field", CLI_STR, &field, 0, 0, "JSON field holding the text"},
        {"out", CLI_STR, &out, 0, 0, "token shard to write"},
        {"val-out", CLI_STR, &val_out, 0, 0, "validation shard for the held-out documents"},
        {"val-frac", CLI_FLOAT, &val_frac, 0, 0.5, "fraction of documents held out (needs --val-out)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac tokenize encode --tokenizer FILE --input FILE... --out SHARD [flags]",
                 "Encode documents into a token shard, an end-of-text token after each; with\n"
                 "--val-out and --val-frac a deterministic fraction of documents goes to a\n"
                 "validation shard instead.", flags, nf);
        return 0;
    }
    if (!tokpath) return err_set(e, "--tokenizer: required");
    if (!in.n) return err_set(e, "--input: required");
    if (!out) return err_set(e, "--out: required");
    if (val_frac > 0 && !val_out) return err_set(e, "--val-frac: needs --val-out");
    Bpe tok;
    if (bpe_load(&tok, tokpath, e)) return -1;
    Enc x = {&tok, {NULL, NULL}, {0, 0}, {0, 0}, {0, 0}, 0, (long)(val_frac * 1000 + 0.5), 0};
    int rc = -1;
    double t0 = time_now();
    for (int i = 0; i < in.n; i++)
        if (docs_each(in.v[i], field, encode_doc, &x, e)) goto done;
    double dt = time_now() - t0;
    if (shard_write(out, x.ids[0], x.n[0], tok.vocab, tok.eos, tok.id, x.docs[0], e)) goto done;
    if (val_out && shard_write(val_out, x.ids[1], x.n[1], tok.vocab, tok.eos, tok.id, x.docs[1], e)) goto done;
    printf("encoded %.1f MB in %.2f s (%.1f MB/s): %s %zu tokens in %u documents", x.bytes / 1e6, dt,
           x.bytes / 1e6 / dt, out, x.n[0], x.docs[0]);
    if (val_out) printf(", %s %zu tokens in %u documents", val_out, x.n[1], x.docs[1]);
    printf("\n");
    rc = 0;
done:
    free(x.ids[0]);
    free(x.ids[1]);
    bpe_free(&tok);
    return rc;
}

int cmd_tokenize(int argc, char **argv, Err *e) {
    if (argc >= 1 && strcmp(argv[0], "train") == 0) return tokenize_train(argc - 1, argv + 1, e);
    if (argc >= 1 && strcmp(argv[0], "encode") == 0) return tokenize_encode(argc - 1, argv + 1, e);
    if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        printf("usage: llamac tokenize train|encode [flags]   (llamac tokenize train --help)\n\n"
               "  train    learn a byte-level BPE tokenizer from text or JSONL files\n"
               "  encode   turn documents into token shards for pretrain and eval\n");
        return 0;
    }
    return err_set(e, "tokenize: expected 'train' or 'encode' (see llamac tokenize --help)");
}
