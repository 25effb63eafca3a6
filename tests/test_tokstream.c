/*
 * test_tokstream.c: `tokenize encode` streaming on every core (tokstream.h)
 * against the serial path it replaced, kept here as the reference: every
 * document through docs_each and tok_encode into one array, the split
 * decided by the document's index, written with shard_write. The streamed
 * shards must be those bytes for any thread count and batch size; a split
 * output read back as one dataset (shardset.h) must be the unsplit one; and
 * the command's bad inputs give one stderr line each.
 */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../data/bpe.h"
#include "../data/jsonl.h"
#include "../data/loader.h"
#include "../data/shard.h"
#include "../data/shardset.h"
#include "../data/tok.h"
#include "../data/tokstream.h"
#include "test.h"
#include "tests.h"

static char dir[256];

/* dir/name; a ring of 32 buffers, so keep a result that must live longer */
static const char *at(const char *name) {
    static char buf[32][512];
    static int k;
    k = (k + 1) % 32;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void remove_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "test_tokstream: could not remove %s\n", dir);
}

static const char *words[] = {"the ", "king ", "and ", "queen ", "of ", "Denmark ", "caf\xc3\xa9 ", "\xe6\x97\xa5\xe6\x9c\xac ",
                              "\xf0\x9f\x99\x82 ", "1234 ", "\"quoted\" ", "back\\slash ", "line\n", ", ", ". ", "tab\t"};
#define NWORDS ((int)(sizeof words / sizeof words[0]))

/* A tokenizer (llamac's BPE, 600 ids) and a corpus: docs.jsonl (400
 * documents of 0 to ~3000 bytes, one empty, blank lines between some) and
 * whole.txt (one document). */
static void setup(Tokenizer *t) {
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/llamac_test_%d_tokstream", (int)getpid());
        mkdir(dir, 0755);
        atexit(remove_dir);
    }
    static char text[40000];
    size_t n = test_words(text, sizeof text, words, NWORDS, 7);
    const char *texts[1] = {text};
    size_t lens[1] = {n};
    Bpe b;
    Err e = {{0}};
    LC_ASSERT(bpe_train(&b, texts, lens, 1, 600, &e) == 0);
    LC_ASSERT(bpe_save(&b, at("tok.bin"), &e) == 0);
    bpe_free(&b);
    LC_ASSERT(tok_load(t, at("tok.bin"), &e) == 0 && t->eos >= 0);
    FILE *f = fopen(at("docs.jsonl"), "wb");
    LC_ASSERT(f);
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < 400; i++) {
        fprintf(f, "{\"id\": %d, \"text\": \"", i);
        int nw = i == 17 ? 0 : (int)(rng_u64(&r) % (i % 10 == 0 ? 600 : 60));
        for (int k = 0; k < nw; k++)
            for (const char *p = words[rng_u64(&r) % NWORDS]; *p; p++) {
                if (*p == '\n') fputs("\\n", f);
                else if (*p == '\t') fputs("\\t", f);
                else if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
                else fputc(*p, f);
            }
        fputs(i % 13 ? "\"}\n" : "\"}\n\n", f);
    }
    fclose(f);
    test_put(at("whole.txt"), "A whole file is one document.\nIts lines stay together. caf\xc3\xa9\n");
}

/* The serial reference: the encode loop tokenize encode ran before it streamed. */
typedef struct {
    const Tokenizer *t;
    int32_t *ids[2];
    size_t n[2], cap[2];
    uint32_t docs[2];
    uint64_t doc;
    long val_per_mille;
} Serial;

static int serial_doc(void *ud, const char *text, size_t len, Err *e) {
    (void)e;
    Serial *x = ud;
    uint64_t h = x->doc++ * 0x9e3779b97f4a7c15ULL;
    int s = (long)((h >> 33) % 1000) < x->val_per_mille;
    int32_t *tmp = NULL;
    size_t tcap = 0, k = tok_encode(x->t, text, len, &tmp, &tcap);
    if (x->n[s] + k + 1 > x->cap[s]) {
        x->cap[s] = 2 * (x->n[s] + k + 1);
        x->ids[s] = xrealloc(x->ids[s], x->cap[s] * sizeof(int32_t));
    }
    if (k) memcpy(x->ids[s] + x->n[s], tmp, k * sizeof(int32_t));
    x->n[s] += k;
    x->ids[s][x->n[s]++] = x->t->eos;
    x->docs[s]++;
    free(tmp);
    return 0;
}

static void serial_encode(const Tokenizer *t, const char *const *in, int nin, long per_mille, const char *out,
                          const char *val) {
    Serial x = {t, {NULL, NULL}, {0, 0}, {0, 0}, {0, 0}, 0, per_mille};
    Err e = {{0}};
    for (int i = 0; i < nin; i++) LC_ASSERT(docs_each(in[i], "text", serial_doc, &x, &e) == 0);
    LC_ASSERT(shard_write(out, x.ids[0], x.n[0], t->vocab, t->eos, t->id, x.docs[0], &e) == 0);
    LC_ASSERT(shard_write(val, x.ids[1], x.n[1], t->vocab, t->eos, t->id, x.docs[1], &e) == 0);
    free(x.ids[0]);
    free(x.ids[1]);
}

static unsigned char *slurp_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = xmalloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *pa = slurp_file(a, &na), *pb = slurp_file(b, &nb);
    int same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return same;
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

void tokstream_serial(void) {
    Tokenizer t;
    setup(&t);
    char p0[512], p1[512];
    snprintf(p0, sizeof p0, "%s", at("docs.jsonl"));
    snprintf(p1, sizeof p1, "%s", at("whole.txt"));
    const char *in[2] = {p0, p1};
    serial_encode(&t, in, 2, 100, at("ref.bin"), at("ref_val.bin"));
    Shard s;
    Err e = {{0}};
    LC_ASSERT(shard_open(&s, at("ref_val.bin"), &e) == 0);
    EXPECT(s.n_docs > 10 && s.n_docs < 100, "the reference holds out %u documents", s.n_docs);
    shard_close(&s);
    int max_threads = docstream_threads();
    const int threads[] = {1, 2, 3};
    const size_t batches[] = {1, 700, 20000, 0}; /* a line a batch, a few lines, many, the default */
    for (int ti = 0; ti < 3; ti++)
        for (int bi = 0; bi < 4; bi++) {
            set_threads(threads[ti]);
            TokStreamOpts o = {at("out.bin"), at("val.bin"), 100, 0, {"text", batches[bi], DOCS_UTF8_REFUSE, 0, NULL}};
            TokStreamStats st;
            int rc = tokstream_encode(&t, in, 2, &o, &st, &e);
            EXPECT(rc == 0, "%d threads, batch %zu: %s", threads[ti], batches[bi], e.msg);
            EXPECT(same_file(at("out.bin"), at("ref.bin")) && same_file(at("val.bin"), at("ref_val.bin")),
                   "%d threads, batch %zu: shards differ from the serial encode", threads[ti], batches[bi]);
            EXPECT(st.docs[0] + st.docs[1] == 401 && st.ds.bad_utf8 == 0, "%d threads: %llu + %llu documents",
                   threads[ti], (unsigned long long)st.docs[0], (unsigned long long)st.docs[1]);
        }
    set_threads(max_threads);
    /* the split is the formula of tokstream.h, document by document */
    for (uint64_t i = 0; i < 1000; i++) {
        uint64_t h = i * 0x9e3779b97f4a7c15ULL;
        EXPECT(tokstream_is_val(i, 100) == ((long)((h >> 33) % 1000) < 100), "split of document %llu",
               (unsigned long long)i);
    }
    tok_free(&t);
}

/* All tokens of the set, in order. */
static int32_t *set_tokens(const ShardSet *set, uint64_t *n, uint64_t *docs) {
    *n = 0;
    *docs = 0;
    for (int i = 0; i < set->n; i++) *n += set->s[i].n_tokens, *docs += set->s[i].n_docs;
    int32_t *v = xmalloc((*n + 1) * sizeof *v);
    uint64_t k = 0;
    for (int i = 0; i < set->n; i++) {
        shard_read(&set->s[i], 0, set->s[i].n_tokens, v + k);
        k += set->s[i].n_tokens;
    }
    return v;
}

static int count_glob(const char *pat) {
    glob_t g;
    int n = glob(pat, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
    globfree(&g);
    return n;
}

void tokstream_shards(void) {
    Tokenizer t;
    setup(&t);
    char p0[512], sp[3][512];
    snprintf(p0, sizeof p0, "%s", at("docs.jsonl"));
    const char *in[1] = {p0};
    Err e = {{0}};
    TokStreamOpts o = {at("whole.bin"), NULL, 0, 0, {"text", 0, DOCS_UTF8_REFUSE, 0, NULL}};
    TokStreamStats st;
    LC_ASSERT(tokstream_encode(&t, in, 1, &o, &st, &e) == 0);
    mkdir(at("split"), 0755);
    char outp[512];
    snprintf(outp, sizeof outp, "%s", at("split/part.bin"));
    o.out = outp;
    o.shard_tokens = 997;
    o.ds.batch_bytes = 3000;
    EXPECT(tokstream_encode(&t, in, 1, &o, &st, &e) == 0, "split: %s", e.msg);
    int want = (int)((st.tokens[0] + 996) / 997);
    EXPECT(st.shards[0] == want && count_glob(at("split/part_*.bin")) == want, "%d shards, want %d", st.shards[0],
           want);
    ShardSet one, set;
    const char *w = at("whole.bin");
    LC_ASSERT(shardset_open(&one, &w, 1, "--train", &e) == 0);
    uint64_t n1, d1, n2, d2;
    int32_t *a = set_tokens(&one, &n1, &d1);
    /* the split output by its name, by its directory and by a pattern */
    snprintf(sp[0], sizeof sp[0], "%s", at("split/part.bin"));
    snprintf(sp[1], sizeof sp[1], "%s", at("split"));
    snprintf(sp[2], sizeof sp[2], "%s", at("split/part_0*.bin"));
    const char *specs[3] = {sp[0], sp[1], sp[2]};
    for (int k = 0; k < 3; k++) {
        int rc = shardset_open(&set, &specs[k], 1, "--train", &e);
        EXPECT(rc == 0 && set.n == want, "%s: %d shards: %s", specs[k], set.n, e.msg);
        if (rc == 0) {
            int32_t *b = set_tokens(&set, &n2, &d2);
            EXPECT(n1 == n2 && d1 == d2 && memcmp(a, b, n1 * sizeof *a) == 0,
                   "%s: %llu tokens, %llu docs, the unsplit shard %llu, %llu", specs[k], (unsigned long long)n2,
                   (unsigned long long)d2, (unsigned long long)n1, (unsigned long long)d1);
            for (int i = 0; i + 1 < set.n; i++) EXPECT(set.s[i].n_tokens == 997, "shard %d: %llu tokens", i,
                                                       (unsigned long long)set.s[i].n_tokens);
            Loader L;
            EXPECT(loader_init(&L, set.p, set.n, 2, 64, 0, 1, 1, 1, 5, &e) == 0, "loader: %s", e.msg);
            loader_free(&L);
            free(b);
        }
        shardset_close(&set);
    }
    /* a rerun with larger shards leaves none of the old run's behind */
    o.shard_tokens = 5000;
    EXPECT(tokstream_encode(&t, in, 1, &o, &st, &e) == 0, "resplit: %s", e.msg);
    want = (int)((st.tokens[0] + 4999) / 5000);
    EXPECT(count_glob(at("split/part_*.bin")) == want && count_glob(at("split/*.tmp")) == 0,
           "%d files after the rerun, want %d", count_glob(at("split/part_*.bin")), want);
    const char *bad[3] = {at("nothing.bin"), at("split/zz*.bin"), dir};
    const char *msg[3] = {"cannot open (no shard, directory, pattern or split", "matches no file", "no *.bin shard"};
    mkdir(at("emptydir"), 0755);
    bad[2] = at("emptydir");
    for (int k = 0; k < 3; k++) {
        EXPECT(shardset_open(&set, &bad[k], 1, "--train", &e) == -1 && strstr(e.msg, msg[k]), "%s: %s", bad[k],
               e.msg);
        shardset_close(&set);
    }
    shardset_close(&one);
    free(a);
    tok_free(&t);
}

void tokstream_cli(void) {
    Tokenizer t;
    setup(&t);
    tok_free(&t);
    test_put(at("nofield.jsonl"), "{\"text\": \"a\"}\n{\"body\": \"b\"}\n");
    static const char badutf[] = "{\"text\": \"ok\"}\n{\"text\": \"fine\"}\n{\"text\": \"bad \xff here\"}\n"
                                 "{\"text\": \"after\"}\n";
    test_put(at("bad.jsonl"), badutf);
    test_put(at("good.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \"fine\"}\n{\"text\": \"after\"}\n");
    char tail[1200];
    snprintf(tail, sizeof tail, " --tokenizer %s --out %s --progress 0", at("tok.bin"), at("o.bin"));
    static const TestCliCase cases[] = {
        {"tokenize encode --input %s/nofield.jsonl", "nofield.jsonl:2: no string field 'text'"},
        {"tokenize encode --input %s/bad.jsonl", "bad.jsonl:3: not valid UTF-8 (byte 15; --bad-utf8 skip drops"},
        {"tokenize encode --input %s/bad.jsonl --bad-utf8 drop", "--bad-utf8: 'drop' is not refuse or skip"},
        {"tokenize encode --input %s/good.jsonl --shard-size 12QB", "--shard-size: '12QB' is not a size"},
        {"tokenize encode --input %s/good.jsonl --shard-size 0", "--shard-size: '0' is not a size"},
        {"tokenize encode --input %s/missing.jsonl", "missing.jsonl: cannot open"},
    };
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], dir, tail);
    EXPECT(access(at("o.bin"), F_OK) != 0 && access(at("o.bin.tmp"), F_OK) != 0, "a failed run left a file");
    /* --val-out naming --out's shards, as a file or as a split series */
    const char *vo[2] = {"o.bin", "o"};
    for (int k = 0; k < 2; k++) {
        int rc = test_llamac("tokenize encode --input %s --val-out %s --val-frac 0.5%s%s", at("good.jsonl"), at(vo[k]),
                             k ? " --shard-size 2" : "", tail);
        EXPECT(rc == 1 && strstr(test_err, "names the same shards as --out") && access(at("o.bin"), F_OK) != 0,
               "--val-out %s: rc %d: %s", vo[k], rc, test_err);
    }
    /* skip: the bad document is counted and dropped, the others keep their split */
    int rc = test_llamac("tokenize encode --input %s --bad-utf8 skip%s", at("bad.jsonl"), tail);
    EXPECT(rc == 0 && strstr(test_err, "warning: skipped 1 documents that are not valid UTF-8") &&
               strchr(test_err, '\n') == strrchr(test_err, '\n'),
           "skip: rc %d, %s", rc, test_err);
    EXPECT(strstr(test_out, "o.bin") && strstr(test_out, "in 3 documents") && strstr(test_out, "peak RSS"),
           "skip summary: %s", test_out);
    rc = test_llamac("tokenize encode --input %s --tokenizer %s --out %s --progress 0", at("good.jsonl"), at("tok.bin"),
                     at("g.bin"));
    EXPECT(rc == 0 && same_file(at("o.bin"), at("g.bin")), "skip: the shard differs from the clean input's: %s",
           test_err);
    /* a split output through the command, then read by eval's and pretrain's --train syntax */
    rc = test_llamac("tokenize encode --input %s --tokenizer %s --out %s --shard-size 200 --val-out %s --val-frac 0.1",
                     at("docs.jsonl"), at("tok.bin"), at("c.bin"), at("cv.bin"));
    EXPECT(rc == 0 && strstr(test_out, "shards)") && strstr(test_err, "MB/s"), "split: %d %s %s", rc, test_out,
           test_err);
    EXPECT(access(at("c_000000.bin"), F_OK) == 0 && access(at("cv_000000.bin"), F_OK) == 0 &&
               access(at("c.bin"), F_OK) != 0,
           "split names");
    /* the other form under the same name goes: unsplit over split, then split over unsplit */
    rc = test_llamac("tokenize encode --input %s --tokenizer %s --out %s --progress 0", at("docs.jsonl"), at("tok.bin"),
                     at("u.bin"));
    rc |= test_llamac("tokenize encode --input %s --tokenizer %s --out %s --shard-size 200 --progress 0",
                      at("docs.jsonl"), at("tok.bin"), at("u.bin"));
    EXPECT(rc == 0 && access(at("u.bin"), F_OK) != 0 && access(at("u_000000.bin"), F_OK) == 0,
           "split over unsplit: u.bin left behind (%d)", rc);
    rc = test_llamac("tokenize encode --input %s --tokenizer %s --out %s --progress 0", at("docs.jsonl"), at("tok.bin"),
                     at("u.bin"));
    EXPECT(rc == 0 && access(at("u.bin"), F_OK) == 0 && access(at("u_000000.bin"), F_OK) != 0 &&
               access(at("u_000001.bin"), F_OK) != 0,
           "unsplit over split: shards left behind (%d)", rc);
    rc = test_llamac("pretrain --train %s --val %s --preset tiny --batch 2 --seq 16 --steps 1 --val-every 1 --out %s "
                     "--ckpt-dir %s",
                     at("c.bin"), at("cv.bin"), at("m.h5"), at("ck"));
    EXPECT(rc == 0, "pretrain on split shards: %d %.300s %s", rc, test_out, test_err);
    rc = test_llamac("pretrain --train a=%s:3 --train 'b=%s:1' --preset tiny --batch 2 --seq 16 --steps 1 --out %s "
                     "--ckpt-dir %s",
                     at("c.bin"), at("cv_0*.bin"), at("m.h5"), at("ck2"));
    EXPECT(rc == 0 && strstr(test_out, "source a:") && strstr(test_out, "source b:"),
           "a mixture of split shards: %d %.300s %s", rc, test_out, test_err);
}
