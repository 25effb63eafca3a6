/*
 * cmd_tokenize.c: `llamac tokenize train` learns a byte-level BPE tokenizer
 * from text or JSONL files; `llamac tokenize encode` turns documents into a
 * token shard (an end-of-text token after every document), streaming on
 * every core (tokstream.h), optionally holding out a fraction of the
 * documents as a validation shard and splitting large outputs. `ids`,
 * `special`, `chat` and `bench` show what any tokenizer kind (tok.h) makes
 * of a file, a special-token name or a chat JSONL file, and how fast.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/bpe.h"
#include "../../data/chat.h"
#include "../../data/jsonl.h"
#include "../../data/tok.h"
#include "../../data/shard.h"
#include "../../data/shardset.h"
#include "../../data/tokstream.h"
#include "../proc/cli.h"
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

/* --shard-size: a count of tokens (K, M, G: thousands, millions,
 * billions) or of bytes on disk (KB, MB, GB: 10^3.., divided by the
 * shard's bytes per token). */
static const struct {
    const char *suffix;
    double mult;
    int bytes;
} size_units[] = {
    {"", 1, 0}, {"K", 1e3, 0}, {"M", 1e6, 0}, {"G", 1e9, 0}, {"KB", 1e3, 1}, {"MB", 1e6, 1}, {"GB", 1e9, 1},
};

static int parse_shard_size(const char *s, int token_bytes, uint64_t *tokens, Err *e) {
    char *end;
    double v = strtod(s, &end);
    int nu = (int)(sizeof size_units / sizeof size_units[0]);
    for (int i = 0; end != s && i < nu; i++)
        if (strcmp(end, size_units[i].suffix) == 0) {
            double t = v * size_units[i].mult / (size_units[i].bytes ? token_bytes : 1);
            if (!(t >= 1 && t < 1e18)) break;
            *tokens = (uint64_t)t;
            return 0;
        }
    return err_set(e, "--shard-size: '%s' is not a size (tokens: 100M; bytes: 200MB; at least one token)", s);
}

static const char *const bad_utf8_names[] = {"refuse", "skip"}; /* indexed by DOCS_UTF8_* */

static int tokenize_encode(int argc, char **argv, Err *e) {
    const char *out = NULL, *val_out = NULL, *tokpath = NULL, *field = "text", *shard_size = NULL;
    const char *bad_utf8 = "refuse";
    double val_frac = 0;
    long batch_mb = 16, progress = 1;
    CliList in = {{0}, 0};
    CliFlag flags[] = {
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer: llamac, tokenizer.json, tiktoken or SentencePiece"},
        {"input", CLI_LIST, &in, 0, 0, "text file (one document) or .jsonl (one per line); repeatable"},
        {"field", CLI_STR, &field, 0, 0, "JSON field holding the text"},
        {"out", CLI_STR, &out, 0, 0, "token shard to write (with --shard-size: NAME.bin names NAME_000000.bin...)"},
        {"val-out", CLI_STR, &val_out, 0, 0, "validation shard for the held-out documents"},
        {"val-frac", CLI_FLOAT, &val_frac, 0, 0.5, "fraction of documents held out (needs --val-out)"},
        {"shard-size", CLI_STR, &shard_size, 0, 0, "split outputs every N tokens (100M) or bytes (200MB)"},
        {"bad-utf8", CLI_STR, &bad_utf8, 0, 0, "a document that is not UTF-8: refuse (an error naming file:line) or skip (counted)"},
        {"batch-mb", CLI_INT, &batch_mb, 1, 4096, "input MB read and encoded at a time: memory is a few times this"},
        {"progress", CLI_INT, &progress, 0, 1, "1: a progress line on stderr (MB/s, ETA)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac tokenize encode --tokenizer FILE --input FILE... --out SHARD [flags]",
                 "Encode documents into a token shard, an end-of-text token after each, on every\n"
                 "core (OMP_NUM_THREADS sets how many) in memory bounded by --batch-mb, whatever\n"
                 "the corpus size; the shard is the same bytes on any number of threads. With\n"
                 "--val-out and --val-frac a fraction of documents, chosen by their position in\n"
                 "the input alone, goes to a validation shard instead. With --shard-size the\n"
                 "outputs are split into NAME_000000.bin, NAME_000001.bin, ...; pretrain --train\n"
                 "NAME.bin (or the directory, or a glob) reads them as one dataset.", flags, nf);
        return 0;
    }
    if (!tokpath) return err_set(e, "--tokenizer: required");
    if (!in.n) return err_set(e, "--input: required");
    if (!out) return err_set(e, "--out: required");
    if (val_frac > 0 && !val_out) return err_set(e, "--val-frac: needs --val-out");
    if (val_out) { /* one name for both, as a file or as a split series, would mix or lose them */
        char a[SHARD_PATH_MAX + 16], b[SHARD_PATH_MAX + 16];
        shardset_name(a, sizeof a, out, 0);
        shardset_name(b, sizeof b, val_out, 0);
        if (strcmp(out, val_out) == 0 || strcmp(a, b) == 0)
            return err_set(e, "--val-out: %s names the same shards as --out %s", val_out, out);
    }
    int mode = -1;
    for (int i = 0; i < (int)(sizeof bad_utf8_names / sizeof bad_utf8_names[0]); i++)
        if (strcmp(bad_utf8, bad_utf8_names[i]) == 0) mode = i;
    if (mode < 0) return err_set(e, "--bad-utf8: '%s' is not refuse or skip", bad_utf8);
    Tokenizer tok;
    if (tok_load(&tok, tokpath, e)) return -1;
    if (tok.eos < 0) {
        tok_free(&tok);
        return err_set(e, "%s: no end-of-text token to separate documents", tokpath);
    }
    TokStreamOpts o = {out, val_out, (long)(val_frac * 1000 + 0.5), 0,
                       {field, (size_t)batch_mb << 20, mode, 0, progress ? "tokenize encode" : NULL}};
    if (shard_size && parse_shard_size(shard_size, tok.vocab <= 65536 ? 2 : 4, &o.shard_tokens, e)) {
        tok_free(&tok);
        return -1;
    }
    TokStreamStats st;
    int rc = tokstream_encode(&tok, in.v, in.n, &o, &st, e);
    tok_free(&tok);
    if (rc) return -1;
    if (st.ds.bad_utf8)
        fprintf(stderr, "llamac: warning: skipped %llu documents that are not valid UTF-8 (--bad-utf8 skip)\n",
                (unsigned long long)st.ds.bad_utf8);
    double dt = st.ds.seconds > 0 ? st.ds.seconds : 1e-9;
    int nt = docstream_threads();
    printf("encoded %.1f MB in %.2f s (%.1f MB/s on %d thread%s, peak RSS %.0f MB): ", st.text_bytes / 1e6, dt,
           st.text_bytes / 1e6 / dt, nt, nt == 1 ? "" : "s", peak_rss_bytes() / 1048576.0);
    const char *name[2] = {out, val_out};
    for (int s = 0; s < 2 && name[s]; s++) {
        printf("%s%s %llu tokens in %llu documents", s ? ", " : "", name[s], (unsigned long long)st.tokens[s],
               (unsigned long long)st.docs[s]);
        if (o.shard_tokens) printf(" (%d shards)", st.shards[s]);
    }
    printf("\n");
    return 0;
}

// ----------------------------------------------------------------------------
// ids, special, chat, bench

static char *read_all(const char *path, size_t *n, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(e, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, k;
    char *buf = xmalloc(cap);
    *n = 0;
    while ((k = fread(buf + *n, 1, cap - *n, f)) > 0)
        if ((*n += k) == cap) buf = xrealloc(buf, cap *= 2);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        err_set(e, "%s: read error", path);
        return NULL;
    }
    return buf;
}

static int tokenize_ids(int argc, char **argv, Err *e) {
    const char *tokpath = NULL, *text = NULL;
    int special = 0;
    CliFlag flags[] = {
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer: llamac, tokenizer.json, tiktoken or SentencePiece"},
        {"text", CLI_STR, &text, 0, 0, "text to encode (instead of FILE)"},
        {"special", CLI_BOOL, &special, 0, 0, "special-token names in the text become their ids"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse(argc, argv, flags, nf, pos, 1, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac tokenize ids --tokenizer FILE [--special] (FILE | --text TEXT)",
                 "Print the token ids of a file's bytes (or of --text) on one line.", flags, nf);
        return 0;
    }
    if (!tokpath) return err_set(e, "--tokenizer: required");
    if (!text && npos == 0) return err_set(e, "tokenize ids: give a FILE or --text");
    size_t n = 0;
    char *buf = text ? NULL : read_all(pos[0], &n, e);
    if (!text && !buf) return -1;
    if (text) n = strlen(text);
    Tokenizer tok;
    if (tok_load(&tok, tokpath, e)) {
        free(buf);
        return -1;
    }
    int32_t *ids = NULL;
    size_t cap = 0, k = special ? tok_encode_special(&tok, text ? text : buf, n, &ids, &cap)
                                : tok_encode(&tok, text ? text : buf, n, &ids, &cap);
    for (size_t i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    free(buf);
    tok_free(&tok);
    return 0;
}

static int tokenize_special(int argc, char **argv, Err *e) {
    const char *tokpath = NULL;
    CliFlag flags[] = {
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer: llamac, tokenizer.json, tiktoken or SentencePiece"},
    };
    int nf = 1, help, npos;
    const char *pos[16];
    if (cli_parse(argc, argv, flags, nf, pos, 16, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac tokenize special --tokenizer FILE NAME...",
                 "Print the id of each special token NAME, one per line.", flags, nf);
        return 0;
    }
    if (!tokpath) return err_set(e, "--tokenizer: required");
    Tokenizer tok;
    if (tok_load(&tok, tokpath, e)) return -1;
    int rc = 0;
    for (int i = 0; i < npos && rc == 0; i++) {
        int id = tok_special_id(&tok, pos[i]);
        if (id < 0) rc = err_set(e, "%s: no such special token in %s", pos[i], tokpath);
        else printf("%d\n", id);
    }
    tok_free(&tok);
    return rc;
}

typedef struct {
    const Tokenizer *tok;
    ChatTemplate tpl;
    ChatTokens ct;
    FILE *out;
    long convs;
    size_t tokens, masked;
} ChatRun;

static int chat_one(void *ud, const ChatMsg *msgs, int n, const char *where, Err *e) {
    ChatRun *r = ud;
    if (chat_encode(r->tok, r->tpl, msgs, n, &r->ct, where, e)) return -1;
    fputs("{\"ids\": [", r->out);
    for (size_t i = 0; i < r->ct.n; i++) fprintf(r->out, i ? ", %d" : "%d", r->ct.ids[i]);
    fputs("], \"mask\": [", r->out);
    for (size_t i = 0; i < r->ct.n; i++) {
        fprintf(r->out, i ? ", %d" : "%d", r->ct.mask[i]);
        r->masked += r->ct.mask[i];
    }
    fputs("]}\n", r->out);
    r->convs++;
    r->tokens += r->ct.n;
    return 0;
}

static int tokenize_chat(int argc, char **argv, Err *e) {
    const char *tokpath = NULL, *tname = "llama3", *out = NULL;
    CliFlag flags[] = {
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer: llamac, tokenizer.json, tiktoken or SentencePiece"},
        {"template", CLI_STR, &tname, 0, 0, "chat format: llama2, llama3, llama3.1 or chatml"},
        {"out", CLI_STR, &out, 0, 0, "JSONL file to write (default: stdout)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse(argc, argv, flags, nf, pos, 1, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac tokenize chat --tokenizer FILE --template llama2|llama3|llama3.1|chatml IN.jsonl [--out OUT]",
                 "Render each conversation of a chat JSONL file ({\"messages\": [{\"role\", \"content\"}]})\n"
                 "with the chat template and write one line {\"ids\": [...], \"mask\": [...]} per\n"
                 "conversation; mask 1 marks the assistant tokens training learns from.", flags, nf);
        return 0;
    }
    if (!tokpath) return err_set(e, "--tokenizer: required");
    if (npos == 0) return err_set(e, "tokenize chat: give the chat JSONL file");
    ChatRun r = {0};
    if (chat_template_parse(tname, &r.tpl, e)) return -1;
    Tokenizer tok;
    if (tok_load(&tok, tokpath, e)) return -1;
    r.tok = &tok;
    r.out = stdout;
    char tmp[1040];
    int rc = -1;
    if (out) {
        snprintf(tmp, sizeof tmp, "%s.tmp", out);
        if (!(r.out = fopen(tmp, "w"))) {
            err_set(e, "%s: cannot write", out);
            goto done;
        }
    }
    rc = chat_jsonl_each(pos[0], chat_one, &r, e);
    if (out) {
        int bad = fclose(r.out) != 0;
        if (rc == 0 && (bad || rename(tmp, out) != 0)) rc = err_set(e, "%s: cannot write", out);
        if (rc) remove(tmp);
        else fprintf(stderr, "llamac: %ld conversations, %zu tokens (%zu in replies) written to %s\n",
                     r.convs, r.tokens, r.masked, out);
    }
done:
    chat_tokens_free(&r.ct);
    tok_free(&tok);
    return rc;
}

static int tokenize_bench(int argc, char **argv, Err *e) {
    const char *tokpath = NULL;
    long reps = 5;
    CliFlag flags[] = {
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer: llamac, tokenizer.json, tiktoken or SentencePiece"},
        {"reps", CLI_INT, &reps, 1, 1000, "timed encodes of the whole file (the median is printed)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse(argc, argv, flags, nf, pos, 1, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac tokenize bench --tokenizer FILE [--reps N] TEXTFILE",
                 "Time encoding the whole file in one call on one thread (after one untimed\n"
                 "encode, as a warm cache) and print the median MB/s.", flags, nf);
        return 0;
    }
    if (!tokpath) return err_set(e, "--tokenizer: required");
    if (npos == 0) return err_set(e, "tokenize bench: give a text file");
    size_t n;
    char *text = read_all(pos[0], &n, e);
    if (!text) return -1;
    Tokenizer tok;
    if (tok_load(&tok, tokpath, e)) {
        free(text);
        return -1;
    }
    int32_t *ids = NULL;
    size_t cap = 0, k = tok_encode(&tok, text, n, &ids, &cap);
    double *dt = xmalloc((size_t)reps * sizeof *dt);
    for (long r = 0; r < reps; r++) {
        double t0 = time_now();
        k = tok_encode(&tok, text, n, &ids, &cap);
        dt[r] = time_now() - t0;
        for (long j = r; j > 0 && dt[j] < dt[j - 1]; j--) {
            double x = dt[j];
            dt[j] = dt[j - 1];
            dt[j - 1] = x;
        }
    }
    double med = dt[reps / 2];
    printf("%s %s: %.2f MB, %zu tokens, encode %.2f MB/s (median of %ld, best %.2f MB/s)\n",
           tok_kind_name(tok.kind), tokpath, n / 1e6, k, n / 1e6 / med, reps, n / 1e6 / dt[0]);
    free(dt);
    free(ids);
    free(text);
    tok_free(&tok);
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv, Err *e);
    const char *help;
} subs[] = {
    {"train", tokenize_train, "learn a byte-level BPE tokenizer from text or JSONL files"},
    {"encode", tokenize_encode, "turn documents into token shards for pretrain and eval"},
    {"ids", tokenize_ids, "print the ids of a text (any tokenizer kind)"},
    {"special", tokenize_special, "print the ids of special tokens by name"},
    {"chat", tokenize_chat, "render chat JSONL with the llama2/llama3 template: ids + mask"},
    {"bench", tokenize_bench, "encoding speed on one core, MB/s"},
};

int cmd_tokenize(int argc, char **argv, Err *e) {
    int ns = (int)(sizeof subs / sizeof subs[0]);
    for (int i = 0; argc >= 1 && i < ns; i++)
        if (strcmp(argv[0], subs[i].name) == 0) return subs[i].fn(argc - 1, argv + 1, e);
    if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        printf("usage: llamac tokenize train|encode|ids|special|chat|bench [flags]"
               "   (llamac tokenize train --help)\n\n");
        for (int i = 0; i < ns; i++) printf("  %-8s %s\n", subs[i].name, subs[i].help);
        printf("\ntokenizers: llamac's own (tokenize train), Hugging Face tokenizer.json (byte-level\n"
               "BPE, Llama 3), tiktoken files (Llama 3 tokenizer.model), SentencePiece models (Llama 1/2)\n");
        return 0;
    }
    return err_set(e, "tokenize: expected 'train' or 'encode' (or ids, special, chat, bench; see "
                      "llamac tokenize --help)");
}
