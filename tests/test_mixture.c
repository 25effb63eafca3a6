/*
 * test_mixture.c: weighted mixtures of pretraining sources (data/mixture.h)
 * and `llamac pretrain --train NAME=SHARDS:WEIGHT`: realised proportions
 * against the weights, a source sequence independent of batch size and
 * ranks, each source's own epochs, exact seeks, a one-source mixture equal
 * to the loader, a killed and resumed mixture run equal to the straight one,
 * per-source validation, and one error line for each bad input.
 *
 * Fixtures are written to build/tm: shards whose tokens name their source
 * (source k holds tokens in [k * 16, k * 16 + 16)), so a row tells where it
 * came from.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/mixture.h"
#include "../data/shard.h"
#include "test.h"
#include "tests.h"

#define TM "build/tm"
#define V 64
#define TEST_MIX_CURSOR MIX_CURSOR_WORDS(MIX_MAX_SOURCES)

/* A shard of n tokens in [k * 16, k * 16 + 16), eot -1, tokenizer id tid. */
static void put_shard(const char *path, int k, uint64_t n, uint64_t tid) {
    int32_t *t = xmalloc((size_t)(n ? n : 1) * sizeof *t);
    for (uint64_t i = 0; i < n; i++) t[i] = k * 16 + (int32_t)(i * 7 % 16);
    Err e = {{0}};
    mkdir(TM, 0755);
    LC_ASSERT(shard_write(path, t, n, V, -1, tid, 1, &e) == 0);
    free(t);
}

typedef struct {
    Shard s[4];
    const Shard *p[4];
    int n;
} Fix;

/* Sources k = 0..n-1 of sizes[k] tokens, one shard each. */
static void fix_open(Fix *f, const uint64_t *sizes, int n) {
    memset(f, 0, sizeof *f);
    for (int k = 0; k < n; k++) {
        char path[64];
        snprintf(path, sizeof path, TM "/src%d-%llu.bin", k, (unsigned long long)sizes[k]);
        put_shard(path, k, sizes[k], 99);
        Err e = {{0}};
        LC_ASSERT(shard_open(&f->s[k], path, &e) == 0);
        f->p[k] = &f->s[k];
    }
    f->n = n;
}

static void fix_close(Fix *f) {
    for (int k = 0; k < f->n; k++) shard_close(&f->s[k]);
}

static int mix_open(Mixture *M, Fix *f, const double *w, int B, int T, uint64_t seed) {
    static const char *names[4] = {"web", "code", "books", "math"};
    MixSource s[4];
    for (int k = 0; k < f->n; k++) {
        MixSource m = {names[k], w[k], &f->p[k], 1};
        s[k] = m;
    }
    Err e = {{0}};
    int rc = mixture_init(M, s, f->n, B, T, 1, 1, seed, "--train", &e);
    EXPECT(rc == 0, "mixture_init: %s", e.msg);
    return rc;
}

void mixture_proportions(void) {
    static const double sets[][4] = {{1, 1, 0, 0}, {3, 1, 0, 0}, {0.7, 0.2, 0.1, 0}, {5, 3, 1, 1}, {0.02, 0.98, 0, 0}};
    static const int ks[] = {2, 2, 3, 4, 2};
    const uint64_t sizes[4] = {4000, 3000, 2000, 1000};
    Fix f;
    fix_open(&f, sizes, 4);
    for (int i = 0; i < 5; i++) {
        int k = ks[i], B = 8, T = 16;
        f.n = k;
        Mixture M;
        if (mix_open(&M, &f, sets[i], B, T, 42 + (uint64_t)i)) continue;
        int32_t *tok = xmalloc((size_t)B * T * sizeof *tok), *tgt = xmalloc((size_t)B * T * sizeof *tgt);
        int src[8];
        long count[4] = {0};
        for (int b = 0; b < 10000 / B; b++) {
            mixture_next(&M, tok, tgt, NULL, src);
            for (int r = 0; r < B; r++) {
                count[src[r]]++;
                EXPECT(tok[(size_t)r * T] / 16 == src[r], "row of source %d holds token %d", src[r], tok[(size_t)r * T]);
            }
        }
        double tot = 0;
        for (int j = 0; j < k; j++) tot += sets[i][j];
        for (int j = 0; j < k; j++) {
            double got = count[j] / 10000.0, want = sets[i][j] / tot;
            EXPECT(got > want - 0.01 && got < want + 0.01, "weights set %d, source %d: %.4f of rows, weight %.4f", i, j,
                   got, want);
            EXPECT(mixture_taken(&M, j) == (uint64_t)count[j], "taken %llu, counted %ld",
                   (unsigned long long)mixture_taken(&M, j), count[j]);
        }
        free(tok);
        free(tgt);
        mixture_free(&M);
    }
    f.n = 4;
    fix_close(&f);
}

/* The same rows, in the same order, whether drawn 4 or 8 at a time, and the
 * source of row r is the same computed alone in any order (another rank). */
void mixture_order_independent(void) {
    const uint64_t sizes[3] = {900, 500, 300};
    const double w[3] = {2, 1, 1};
    Fix f;
    fix_open(&f, sizes, 3);
    int T = 8, rows = 1600;
    Mixture a, b;
    if (mix_open(&a, &f, w, 4, T, 7) || mix_open(&b, &f, w, 8, T, 7)) return;
    int32_t *ta = xmalloc((size_t)rows * T * sizeof *ta), *tb = xmalloc((size_t)rows * T * sizeof *tb);
    int32_t *ga = xmalloc((size_t)rows * T * sizeof *ga), *gb = xmalloc((size_t)rows * T * sizeof *gb);
    int *sa = xmalloc((size_t)rows * sizeof *sa), *sb = xmalloc((size_t)rows * sizeof *sb);
    for (int r = 0; r < rows; r += 4) mixture_next(&a, ta + (size_t)r * T, ga + (size_t)r * T, NULL, sa + r);
    for (int r = 0; r < rows; r += 8) mixture_next(&b, tb + (size_t)r * T, gb + (size_t)r * T, NULL, sb + r);
    EXPECT(memcmp(sa, sb, (size_t)rows * sizeof *sa) == 0, "sources differ between B = 4 and B = 8");
    EXPECT(memcmp(ta, tb, (size_t)rows * T * sizeof *ta) == 0, "tokens differ between B = 4 and B = 8");
    EXPECT(memcmp(ga, gb, (size_t)rows * T * sizeof *ga) == 0, "targets differ between B = 4 and B = 8");
    int bad = 0;
    for (int r = rows - 1; r >= 0; r -= 2) bad += mixture_source_of(a.cum, 3, 7, (uint64_t)r) != sa[r];
    for (int r = 0; r < rows; r += 2) bad += mixture_source_of(a.cum, 3, 7, (uint64_t)r) != sa[r];
    EXPECT(bad == 0, "%d rows' sources differ when computed alone", bad);
    /* another seed, another sequence */
    int same = 0;
    for (int r = 0; r < rows; r++) same += mixture_source_of(a.cum, 3, 8, (uint64_t)r) == sa[r];
    EXPECT(same < rows * 3 / 4, "seed 8 repeats seed 7's sources (%d of %d)", same, rows);
    free(ta); free(tb); free(ga); free(gb); free(sa); free(sb);
    mixture_free(&a);
    mixture_free(&b);
    fix_close(&f);
}

/* A small source wraps more often; each counts its own epochs, an epoch
 * being one pass over all its windows. */
void mixture_epochs(void) {
    const uint64_t sizes[2] = {8 * 400 + 1, 8 * 10 + 1}; /* 400 and 10 windows of T = 8 */
    const double w[2] = {1, 1};
    Fix f;
    fix_open(&f, sizes, 2);
    Mixture M;
    if (mix_open(&M, &f, w, 1, 8, 3)) return;
    int32_t tok[8], tgt[8];
    int src[1], in_epoch = 0;
    for (int b = 0; b < 400; b++) {
        mixture_next(&M, tok, tgt, NULL, src);
        in_epoch += src[0] == 1 && M.src[1].epoch == 0;
    }
    uint64_t t0 = mixture_taken(&M, 0), t1 = mixture_taken(&M, 1);
    EXPECT(t0 + t1 == 400, "rows %llu + %llu", (unsigned long long)t0, (unsigned long long)t1);
    /* an epoch ends lazily: the draw after a source's last window starts the next */
    EXPECT(M.src[1].epoch == (t1 - 1) / 10 && M.src[0].epoch == 0, "epochs %llu, %llu after %llu, %llu rows",
           (unsigned long long)M.src[0].epoch, (unsigned long long)M.src[1].epoch, (unsigned long long)t0,
           (unsigned long long)t1);
    EXPECT(M.src[1].epoch >= 15, "the small source wrapped only %llu times", (unsigned long long)M.src[1].epoch);
    EXPECT(in_epoch == 10, "the small source's first epoch had %d rows, not its 10 windows", in_epoch);
    mixture_free(&M);
    /* 30 rows of the small source: three whole epochs */
    Mixture S;
    const double w2[2] = {1e-9, 1};
    if (mix_open(&S, &f, w2, 1, 8, 5)) return;
    for (int rows1 = 0; rows1 < 30;) {
        mixture_next(&S, tok, tgt, NULL, src);
        rows1 += src[0] == 1;
    }
    EXPECT(S.src[1].epoch == 2 && S.src[1].pos == 10, "after 30 rows: epoch %llu pos %llu",
           (unsigned long long)S.src[1].epoch, (unsigned long long)S.src[1].pos);
    mixture_free(&S);
    fix_close(&f);
}

/* tell / seek: a mixture moved to a cursor continues exactly; a cursor of
 * another mixture is refused. */
void mixture_seek_exact(void) {
    const uint64_t sizes[3] = {700, 170, 90};
    const double w[3] = {3, 2, 1};
    Fix f;
    fix_open(&f, sizes, 3);
    int B = 4, T = 8;
    Mixture a, b;
    if (mix_open(&a, &f, w, B, T, 11) || mix_open(&b, &f, w, B, T, 11)) return;
    int32_t ta[32], ga[32], pa[32], tb[32], gb[32], pb[32];
    for (int i = 0; i < 37; i++) mixture_next(&a, ta, ga, pa, NULL);
    uint64_t cur[TEST_MIX_CURSOR];
    EXPECT(mixture_cursor_words(&a) == 7, "cursor words %d", mixture_cursor_words(&a));
    mixture_tell(&a, cur);
    EXPECT(cur[0] == 37 * 4, "row counter %llu", (unsigned long long)cur[0]);
    Err e = {{0}};
    EXPECT(mixture_seek(&b, cur, &e) == 0, "seek: %s", e.msg);
    for (int i = 0; i < 60; i++) {
        mixture_next(&a, ta, ga, pa, NULL);
        mixture_next(&b, tb, gb, pb, NULL);
        EXPECT(memcmp(ta, tb, sizeof ta) == 0 && memcmp(ga, gb, sizeof ga) == 0 && memcmp(pa, pb, sizeof pa) == 0,
               "batch %d after the seek differs", i);
    }
    cur[0] += 1;
    EXPECT(mixture_seek(&b, cur, &e) == -1 && strstr(e.msg, "another mixture"), "a wrong row counter: %s", e.msg);
    cur[0] -= 1;
    cur[2] = 1000;
    EXPECT(mixture_seek(&b, cur, &e) == -1 && strstr(e.msg, "outside"), "a position past the source: %s", e.msg);
    /* rewind */
    uint64_t zero[TEST_MIX_CURSOR] = {0};
    EXPECT(mixture_seek(&b, zero, &e) == 0 && b.row == 0, "rewind: %s", e.msg);
    mixture_free(&a);
    mixture_free(&b);
    fix_close(&f);
}

/* One source is the loader: the same batches (shuffled, across epochs) and
 * its two-word cursor. */
void mixture_one_source(void) {
    const uint64_t sizes[1] = {1000};
    Fix f;
    fix_open(&f, sizes, 1);
    MixSource s = {NULL, 1, f.p, 1};
    Mixture M;
    Loader L;
    Err e = {{0}};
    int B = 4, T = 16;
    EXPECT(mixture_init(&M, &s, 1, B, T, 1, 1, 1337, "--train", &e) == 0, "%s", e.msg);
    EXPECT(loader_init(&L, f.p, 1, B, T, 0, 1, 1, 1, 1337, &e) == 0, "%s", e.msg);
    EXPECT(mixture_cursor_words(&M) == 2 && mixture_id(&M) == 0, "one source: %d words, id %llx",
           mixture_cursor_words(&M), (unsigned long long)mixture_id(&M));
    int32_t ta[64], ga[64], pa[64], tb[64], gb[64], pb[64];
    for (int i = 0; i < 50; i++) { /* 62 windows: 15 batches an epoch, 3 epochs */
        mixture_next(&M, ta, ga, pa, NULL);
        loader_next(&L, tb, gb, pb);
        EXPECT(memcmp(ta, tb, sizeof ta) == 0 && memcmp(ga, gb, sizeof ga) == 0 && memcmp(pa, pb, sizeof pa) == 0,
               "batch %d differs from the loader's", i);
    }
    uint64_t cur[2];
    mixture_tell(&M, cur);
    EXPECT(cur[0] == L.epoch && cur[1] == L.pos, "cursor (%llu, %llu), the loader's (%llu, %llu)",
           (unsigned long long)cur[0], (unsigned long long)cur[1], (unsigned long long)L.epoch,
           (unsigned long long)L.pos);
    loader_free(&L);
    mixture_free(&M);
    fix_close(&f);
}

// ----------------------------------------------------------------------------
// the command

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void need_cli_shards(void) {
    static int done;
    if (done) return;
    put_shard(TM "/web0.bin", 0, 3000, 99);
    put_shard(TM "/web1.bin", 0, 2000, 99);
    put_shard(TM "/code.bin", 1, 1500, 99);
    put_shard(TM "/tiny.bin", 2, 16, 99);   /* fewer than one window of T + 1 = 17 */
    put_shard(TM "/empty.bin", 2, 0, 99);
    put_shard(TM "/other.bin", 3, 3000, 12345); /* another tokenizer */
    put_shard(TM "/wv.bin", 0, 600, 99);
    put_shard(TM "/cv.bin", 1, 600, 99);
    done = 1;
}

#define SMALL "--preset tiny --batch 2 --seq 16 --steps 2 --peak-gflops 1 --ckpt-dir " TM "/ck --out " TM "/m.h5 "

void mixture_cli_errors(void) {
    need_cli_shards();
    static const struct { const char *args, *want; } cases[] = {
        {"--train web=" TM "/web0.bin:0 --train code=" TM "/code.bin:1", "--train web: weight 0 must be positive"},
        {"--train web=" TM "/web0.bin:-2 --train code=" TM "/code.bin:1", "--train web: weight -2 must be positive"},
        {"--train web=" TM "/web0.bin:abc --train code=" TM "/code.bin:1", "--train web: weight 'abc' is not a number"},
        {"--train web=" TM "/web0.bin:nan --train code=" TM "/code.bin:1", "--train web: weight nan must be positive"},
        {"--train web=" TM "/web0.bin --train code=" TM "/code.bin:1", "--train web: no weight"},
        {"--train web=" TM "/web0.bin:1 --train code=" TM "/empty.bin:1", "--train code: its shards hold no tokens"},
        {"--train web=" TM "/web0.bin:1 --train code=" TM "/tiny.bin:1", "--train code: 16 tokens hold no window of T+1 = 17"},
        {"--train web=" TM "/web0.bin+" TM "/other.bin:1 --train code=" TM "/code.bin:1", "other.bin: made by a different tokenizer"},
        {"--train web=" TM "/web0.bin:1 --train code=" TM "/other.bin:1", "other.bin: made by a different tokenizer"},
        {"--train web=" TM "/web0.bin:1 --train web=" TM "/code.bin:1", "--train: source name 'web' is given twice"},
        {"--train web=" TM "/web0.bin:1 --train " TM "/code.bin", "give either shards (one source) or NAME=SHARDS:WEIGHT"},
        {"--train w@b=" TM "/web0.bin:1", "may hold only letters"},
        {"--train web=" TM "/web0.bin:1 --train code=" TM "/code.bin:1 --val a=" TM "/wv.bin --val a=" TM "/cv.bin",
         "--val: source name 'a' is given twice"},
        {"--train web=" TM "/web0.bin:1 --val a=" TM "/other.bin", "other.bin: made by a different tokenizer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = test_llamac("pretrain " SMALL "%s", cases[i].args);
        EXPECT(rc == 1, "'%s': exit %d, expected 1", cases[i].args, rc);
        EXPECT(count_lines(test_err) == 1 && strncmp(test_err, "llamac: error: ", 15) == 0,
               "'%s': stderr must be one 'llamac: error:' line, got: %s", cases[i].args, test_err);
        EXPECT(strstr(test_err, cases[i].want), "'%s': stderr '%s' lacks '%s'", cases[i].args, test_err,
               cases[i].want);
    }
}

/* A mixture run killed during a checkpoint and resumed equals the straight
 * run bit for bit (weights, moments, every step's loss); per-source
 * validation and realised proportions land in the metrics; a [data] section
 * is the same run as the flags; a plain run's checkpoint does not resume a
 * mixture. */
#define MIX_RUN "--preset tiny --set n_layers=2 --batch 4 --seq 16 --batch-tokens 128 --steps 24 " \
                "--lr 3e-3 --warmup 4 --seed 5 --peak-gflops 1 --save-every 4 --keep 2 --val-every 12 "     \
                "--val-batches 2 --val web=" TM "/wv.bin --val code=" TM "/cv.bin "
#define MIX_SRC "--train web=" TM "/web0.bin+" TM "/web1.bin:3 --train code=" TM "/code.bin:1 "

void mixture_resume(void) {
    need_cli_shards();
    int rc = system("rm -rf " TM "/A " TM "/B " TM "/C " TM "/P " TM "/A.jsonl " TM "/B.jsonl " TM "/C.jsonl");
    (void)rc;
    rc = test_llamac("pretrain " MIX_RUN MIX_SRC "--ckpt-dir " TM "/A --metrics " TM "/A.jsonl --out " TM "/A.h5");
    EXPECT(rc == 0, "straight run: %s", test_err);
    EXPECT(strstr(test_out, "source web: weight 3 (75.0%), 2 shards, 311 windows, 5000 tokens") &&
           strstr(test_out, "source code: weight 1 (25.0%), 1 shard, 93 windows, 1500 tokens"),
           "start-up lines: %s", test_out);
    EXPECT(strstr(test_out, "| web ") && strstr(test_out, "| code ") && strstr(test_out, "mixture: rows drawn web "),
           "per-source validation or the rows drawn missing: %s", test_out);
    FILE *m = fopen(TM "/A.jsonl", "r");
    static char buf[1 << 16];
    size_t k = m ? fread(buf, 1, sizeof buf - 1, m) : 0;
    buf[k] = 0;
    if (m) fclose(m);
    EXPECT(strstr(buf, "\"val_loss/web\":") && strstr(buf, "\"val_loss/code\":") && strstr(buf, "\"mix/web\":"),
           "metrics lack val_loss/<name> or mix/<name>");
    /* killed while writing its third checkpoint (step 12): 3 x 21 tensors each */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LLAMAC_CKPT_KILL_AFTER=%d %s pretrain " MIX_RUN MIX_SRC "--ckpt-dir " TM "/B --metrics " TM
             "/B.jsonl --out " TM "/B.h5 >" TM "/B.log 2>&1", 2 * 63 + 30, test_llamac_path);
    rc = system(cmd);
    EXPECT(access(TM "/B/step-00000012.h5", F_OK) != 0 && access(TM "/B/step-00000008.h5", F_OK) == 0,
           "the run was not killed during its step-12 checkpoint (status %d)", rc);
    rc = test_llamac("pretrain " MIX_RUN MIX_SRC "--ckpt-dir " TM "/B --metrics " TM "/B.jsonl --out " TM "/B.h5 --resume auto");
    EXPECT(rc == 0, "resume: %s", test_err);
    EXPECT(strstr(test_out, "at step 8 (data row 64 of the mixture)"), "resume line: %s", test_out);
    ckpt_test_same(TM "/A/step-00000024.h5", TM "/B/step-00000024.h5");
    ckpt_test_same_losses(TM "/A.jsonl", TM "/B.jsonl", 24);
    /* the same mixture from a config file's [data] section */
    test_put(TM "/mix.ini", "# two sources\n[data]\nweb = " TM "/web0.bin+" TM "/web1.bin:3\ncode = " TM
                            "/code.bin:1\n");
    rc = test_llamac("pretrain " TM "/mix.ini " MIX_RUN " --ckpt-dir " TM "/C --metrics " TM "/C.jsonl --out " TM "/C.h5");
    EXPECT(rc == 0, "config run: %s", test_err);
    ckpt_test_same(TM "/A/step-00000024.h5", TM "/C/step-00000024.h5");
    /* a plain run's checkpoint (2 words) does not resume a mixture, nor the reverse */
    rc = test_llamac("pretrain " MIX_RUN "--train " TM "/web0.bin --steps 4 --ckpt-dir " TM "/P --out " TM "/P.h5");
    EXPECT(rc == 0, "plain run: %s", test_err);
    rc = test_llamac("pretrain " MIX_RUN MIX_SRC "--ckpt-dir " TM "/P --out " TM "/P.h5 --resume auto");
    EXPECT(rc == 1 && strstr(test_err, "its data cursor has 2 words, this run's data needs 5"), "plain into mixture: %s",
           test_err);
    rc = test_llamac("pretrain " MIX_RUN "--train " TM "/web0.bin --ckpt-dir " TM "/B --out " TM "/P.h5 --resume auto");
    EXPECT(rc == 1 && strstr(test_err, "its data cursor has 5 words, this run's data needs 2"), "mixture into plain: %s",
           test_err);
    /* other weights: another mixture */
    rc = test_llamac("pretrain " MIX_RUN "--train web=" TM "/web0.bin+" TM "/web1.bin:2 --train code=" TM "/code.bin:1 --ckpt-dir "
                     TM "/B --out " TM "/P.h5 --resume auto");
    EXPECT(rc == 1 && strstr(test_err, "trained on other data"), "other weights: %s", test_err);
}

/* The step records' "mix/..." members (the realised proportions) and losses
 * of a metrics file, one string and one number per step. */
static int step_records(const char *path, char mix[][256], double *loss, int max) {
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && n < max && fgets(line, sizeof line, f)) {
        const char *l = strstr(line, "\"loss\":"), *m = strstr(line, ",\"mix/");
        if (!l || !m) continue;
        loss[n] = strtod(l + 7, NULL);
        snprintf(mix[n], 256, "%.*s", (int)strcspn(m, "}"), m);
        n++;
    }
    if (f) fclose(f);
    return n;
}

/* Two data-parallel ranks (mpirun) draw the same rows as one process: the
 * same realised proportions at every step, the same losses up to the order
 * of the gradient sums. */
void mixture_mpi(void) {
    if (!test_have_mpi()) return;
    need_cli_shards();
    int rc = system("rm -rf " TM "/D1 " TM "/D2 " TM "/D1.jsonl " TM "/D2.jsonl");
    (void)rc;
    rc = test_llamac("pretrain " MIX_RUN MIX_SRC "--steps 6 --ckpt-dir " TM "/D1 --metrics " TM "/D1.jsonl --out " TM
                     "/D1.h5");
    EXPECT(rc == 0, "one process: %s", test_err);
    rc = test_mpi_llamac(2, "pretrain " MIX_RUN MIX_SRC "--steps 6 --ckpt-dir " TM "/D2 --metrics " TM
                            "/D2.jsonl --out " TM "/D2.h5");
    EXPECT(rc == 0, "mpirun -np 2: %s", test_err);
    static char ma[8][256], mb[8][256];
    double la[8], lb[8];
    int na = step_records(TM "/D1.jsonl", ma, la, 8), nb = step_records(TM "/D2.jsonl", mb, lb, 8);
    EXPECT(na == 6 && nb == 6, "%d and %d step records", na, nb);
    for (int s = 0; s < na && s < nb; s++) {
        EXPECT(strcmp(ma[s], mb[s]) == 0, "step %d: proportions %s on one process, %s on two ranks", s + 1, ma[s], mb[s]);
        EXPECT(fabs(la[s] - lb[s]) <= 1e-5 * fabs(la[s]), "step %d: loss %.9g vs %.9g", s + 1, la[s], lb[s]);
    }
}
