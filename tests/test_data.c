/*
 * test_data.c: token shards (round trip, every bad-file message) and the
 * batch loader (determinism, disjoint ranks, document positions, too-short
 * corpora), and every JSONL reader past a UTF-8 byte-order mark. Files go to /tmp under names carrying the process id, so test
 * runs in parallel do not collide, and are removed at the end of each test.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/chat.h"
#include "../data/docstream.h"
#include "../data/dpo.h"
#include "../data/jsonl.h"
#include "../data/loader.h"
#include "../data/sft.h"
#include "../data/shard.h"
#include "../data/tok.h"
#include "test.h"
#include "tests.h"

// ----------------------------------------------------------------------------
// helpers

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "/tmp/llamac_test_%d_%s", (int)getpid(), name);
}

/* Write raw bytes to path (for hand-made bad files). */
static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    if (n) LC_ASSERT(fwrite(p, 1, n, f) == n);
    LC_ASSERT(fclose(f) == 0);
}

/* Read a whole file into a malloc'd buffer; *n = its size. */
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    LC_ASSERT(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = xmalloc((size_t)size);
    LC_ASSERT(fread(p, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    *n = (size_t)size;
    return p;
}

/* A shard of n tokens, token i = (start + i) % vocab (so a token names its
 * offset when start + n <= vocab), written and opened. */
static void make_counting_shard(Shard *s, const char *path, uint64_t start, uint64_t n, int vocab,
                                int eot) {
    int32_t *t = xmalloc(n * sizeof *t);
    for (uint64_t i = 0; i < n; i++) t[i] = (int32_t)((start + i) % (uint64_t)vocab);
    Err e = {{0}};
    LC_ASSERT(shard_write(path, t, n, vocab, eot, 7, 1, &e) == 0);
    LC_ASSERT(shard_open(s, path, &e) == 0);
    free(t);
}

// ----------------------------------------------------------------------------
// shards

static void roundtrip_one(int vocab, int expect_bytes) {
    char path[256], tmp[300];
    tmp_path(path, sizeof path, "roundtrip.bin");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    enum { N = 10007 }; /* odd, larger than one write chunk */
    int32_t *t = xmalloc(N * sizeof *t);
    Rng r;
    rng_seed(&r, 42);
    for (int i = 0; i < N; i++) t[i] = (int32_t)(rng_u64(&r) % (uint64_t)vocab);
    t[0] = vocab - 1; /* the largest id must survive the narrowing to 2 bytes */
    Err e = {{0}};
    EXPECT(shard_write(path, t, N, vocab, 3, 0x1234567890abcdefULL, 17, &e) == 0, "write: %s", e.msg);
    EXPECT(access(tmp, F_OK) != 0, "%s left behind", tmp);
    Shard s;
    EXPECT(shard_open(&s, path, &e) == 0, "open: %s", e.msg);
    EXPECT(s.token_bytes == expect_bytes, "vocab %d: token_bytes %d, expected %d", vocab,
           s.token_bytes, expect_bytes);
    EXPECT(s.vocab == vocab && s.eot == 3 && s.n_docs == 17 && s.n_tokens == N,
           "header fields: vocab %d eot %d n_docs %u n_tokens %llu", s.vocab, s.eot, s.n_docs,
           (unsigned long long)s.n_tokens);
    EXPECT(s.tokenizer_id == 0x1234567890abcdefULL, "tokenizer_id %llx",
           (unsigned long long)s.tokenizer_id);
    EXPECT(strcmp(s.path, path) == 0, "path %s", s.path);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += shard_token(&s, (uint64_t)i) != t[i];
    EXPECT(bad == 0, "vocab %d: %d tokens differ after the round trip", vocab, bad);
    int32_t part[100];
    shard_read(&s, 5000, 100, part);
    EXPECT(memcmp(part, t + 5000, sizeof part) == 0, "shard_read differs");
    /* the file is exactly header + payload */
    size_t n;
    unsigned char *raw = read_bytes(path, &n);
    EXPECT(n == SHARD_HEADER_BYTES + (size_t)N * expect_bytes, "file size %zu", n);
    EXPECT(memcmp(raw, "LCSH", 4) == 0, "magic bytes on disk are not LCSH");
    free(raw);
    shard_close(&s);
    shard_close(&s); /* closing twice is harmless */
    unlink(path);
    free(t);
}

void shard_roundtrip(void) {
    roundtrip_one(300, 2);
    roundtrip_one(65536, 2);
    roundtrip_one(70000, 4);
    /* a header-only shard is valid (the loader rejects it as too short) */
    char path[256];
    tmp_path(path, sizeof path, "empty_payload.bin");
    Err e = {{0}};
    Shard s;
    EXPECT(shard_write(path, NULL, 0, 300, -1, 0, 0, &e) == 0, "write: %s", e.msg);
    EXPECT(shard_open(&s, path, &e) == 0, "open: %s", e.msg);
    EXPECT(s.n_tokens == 0 && s.eot == -1, "n_tokens %llu eot %d", (unsigned long long)s.n_tokens,
           s.eot);
    shard_close(&s);
    /* write-side checks leave no file behind */
    int32_t t[3] = {1, 300, 2};
    unlink(path);
    EXPECT(shard_write(path, t, 3, 300, 0, 0, 1, &e) != 0, "token 300 >= vocab 300 accepted");
    EXPECT(strstr(e.msg, path) && strstr(e.msg, "token 300 at index 1"), "message: %s", e.msg);
    EXPECT(access(path, F_OK) != 0, "a rejected write left %s", path);
}

/* Open path and expect failure with a message naming path and `problem`. */
static void expect_open_error(const char *path, const char *problem) {
    Shard s;
    Err e = {{0}};
    int rc = shard_open(&s, path, &e);
    EXPECT(rc == -1, "%s: opened a bad file (expected '%s')", path, problem);
    EXPECT(strstr(e.msg, path) == e.msg, "message does not start with the path: %s", e.msg);
    EXPECT(strstr(e.msg, problem) != NULL, "expected '%s' in: %s", problem, e.msg);
    EXPECT(strchr(e.msg, '\n') == NULL, "message is not one line: %s", e.msg);
    EXPECT(s.map_base == NULL && s.data == NULL, "failed open left a mapping");
    shard_close(&s);
}

void shard_bad_files(void) {
    char good[256], bad[256];
    tmp_path(good, sizeof good, "good.bin");
    tmp_path(bad, sizeof bad, "bad.bin");
    int32_t t[64];
    for (int i = 0; i < 64; i++) t[i] = i;
    Err e = {{0}};
    LC_ASSERT(shard_write(good, t, 64, 300, 0, 1, 1, &e) == 0);
    size_t n;
    unsigned char *raw = read_bytes(good, &n); /* 64 + 128 bytes */

    unlink(bad);
    expect_open_error(bad, "No such file");
    write_bytes(bad, raw, 0);
    expect_open_error(bad, "empty file");
    write_bytes(bad, raw, 40);
    expect_open_error(bad, "truncated header");

    unsigned char *m = xmalloc(n);
    memcpy(m, raw, n);
    memcpy(m, "GPT2", 4);
    write_bytes(bad, m, n);
    expect_open_error(bad, "not a llamac token shard");

    memcpy(m, raw, n);
    m[4] = 2; /* version 2 */
    write_bytes(bad, m, n);
    expect_open_error(bad, "unsupported version 2");

    memcpy(m, raw, n);
    m[8] = 3; /* token_bytes 3 */
    write_bytes(bad, m, n);
    expect_open_error(bad, "token_bytes 3");

    memcpy(m, raw, n);
    m[8] = 4; /* 4-byte tokens with a 300-token vocabulary */
    write_bytes(bad, m, n);
    expect_open_error(bad, "inconsistent with the vocabulary");

    write_bytes(bad, raw, n - 3); /* 62.5 of 64 tokens */
    expect_open_error(bad, "truncated: header says 64 tokens, file holds 62");

    unsigned char *longer = xcalloc(n + 2, 1); /* two trailing bytes */
    memcpy(longer, raw, n);
    write_bytes(bad, longer, n + 2);
    expect_open_error(bad, "size mismatch");
    free(longer);

    memcpy(m, raw, n);
    m[64 + 2 * 12] = 0x70; /* token 12 = 0x1170 = 4464 */
    m[64 + 2 * 12 + 1] = 0x11;
    write_bytes(bad, m, n);
    expect_open_error(bad, "token 4464 at index 12 is outside the vocabulary of 300");
    free(m);

    /* 4-byte tokens: a negative id is out of range too */
    int32_t *big = xmalloc(20000 * sizeof *big);
    for (int i = 0; i < 20000; i++) big[i] = i * 3;
    LC_ASSERT(shard_write(good, big, 20000, 70000, 5, 1, 1, &e) == 0);
    free(raw);
    raw = read_bytes(good, &n);
    int32_t v = 70000;
    memcpy(raw + 64 + 4 * 19999, &v, 4);
    write_bytes(bad, raw, n);
    expect_open_error(bad, "token 70000 at index 19999 is outside the vocabulary of 70000");
    v = -1;
    memcpy(raw + 64 + 4 * 9000, &v, 4);
    write_bytes(bad, raw, n);
    expect_open_error(bad, "token -1 at index 9000");
    free(big);
    free(raw);

    /* a directory is not a shard */
    expect_open_error("/tmp", "not a regular file");
    unlink(good);
    unlink(bad);
}

// ----------------------------------------------------------------------------
// loader

enum { LB = 3, LT = 8 };

void loader_determinism(void) {
    char path[256];
    tmp_path(path, sizeof path, "det.bin");
    Shard s;
    make_counting_shard(&s, path, 0, 1000, 1000, -1); /* (1000-1)/8 = 124 windows */
    const Shard *sh[1] = {&s};
    Err e = {{0}};
    Loader a, b, c, q;
    LC_ASSERT(loader_init(&a, sh, 1, LB, LT, 0, 1, 1, 0, 11, &e) == 0);
    LC_ASSERT(loader_init(&b, sh, 1, LB, LT, 0, 1, 1, 0, 11, &e) == 0);
    LC_ASSERT(loader_init(&c, sh, 1, LB, LT, 0, 1, 1, 0, 12, &e) == 0);
    LC_ASSERT(loader_init(&q, sh, 1, LB, LT, 0, 1, 0, 0, 11, &e) == 0);
    EXPECT(loader_windows(&a) == 124, "windows %llu", (unsigned long long)loader_windows(&a));
    int32_t ta[LB * LT], ga[LB * LT], pa[LB * LT], tb[LB * LT], gb[LB * LT], pb[LB * LT];
    int same_ab = 1, same_ac = 1, seq_ok = 1, tgt_ok = 1;
    /* 124 / 3 = 41 steps per epoch; 100 steps cross two epoch boundaries */
    uint64_t last_epoch = 0;
    for (int step = 0; step < 100; step++) {
        uint64_t ea = loader_next(&a, ta, ga, pa);
        uint64_t eb = loader_next(&b, tb, gb, pb);
        same_ab &= ea == eb && !memcmp(ta, tb, sizeof ta) && !memcmp(ga, gb, sizeof ga) &&
                   !memcmp(pa, pb, sizeof pa);
        loader_next(&c, tb, gb, pb);
        same_ac &= !memcmp(ta, tb, sizeof ta);
        for (int i = 0; i < LB * LT; i++) tgt_ok &= ga[i] == ta[i] + 1;
        last_epoch = ea;
        /* sequential: step k of an epoch holds windows 3k, 3k+1, 3k+2 */
        uint64_t eq = loader_next(&q, tb, gb, pb);
        EXPECT(eq == (uint64_t)step / 41, "step %d: sequential epoch %llu", step,
               (unsigned long long)eq);
        for (int r = 0; r < LB; r++)
            for (int t = 0; t < LT; t++) {
                int w = (step % 41) * LB + r;
                seq_ok &= tb[r * LT + t] == w * LT + t && gb[r * LT + t] == w * LT + t + 1 &&
                          pb[r * LT + t] == t;
            }
    }
    EXPECT(same_ab, "same seed gave different batches");
    EXPECT(!same_ac, "seeds 11 and 12 gave the same batches");
    EXPECT(seq_ok, "sequential mode does not walk the windows in order");
    EXPECT(tgt_ok, "targets are not the next tokens");
    EXPECT(last_epoch == 2, "after 100 steps of 41 per epoch the epoch is %llu",
           (unsigned long long)last_epoch);

    /* resuming from a saved cursor continues the same stream, mid-epoch */
    Loader r;
    LC_ASSERT(loader_init(&r, sh, 1, LB, LT, 0, 1, 1, 0, 11, &e) == 0);
    EXPECT(loader_seek(&r, a.epoch, a.pos, &e) == 0, "seek: %s", e.msg);
    EXPECT(loader_seek(&r, 0, 1, &e) != 0 && strstr(e.msg, "loader:"), "pos 1 accepted");
    LC_ASSERT(loader_seek(&r, a.epoch, a.pos, &e) == 0);
    loader_next(&a, ta, ga, pa);
    loader_next(&r, tb, gb, pb);
    EXPECT(!memcmp(ta, tb, sizeof ta), "resumed loader differs");
    /* each epoch draws a new permutation */
    LC_ASSERT(loader_seek(&r, 0, 0, &e) == 0);
    EXPECT(loader_next(&r, ta, ga, pa) == 0, "seek to epoch 0");
    LC_ASSERT(loader_seek(&r, 1, 0, &e) == 0);
    EXPECT(loader_next(&r, tb, gb, pb) == 1, "seek to epoch 1");
    EXPECT(memcmp(ta, tb, sizeof ta) != 0, "epochs 0 and 1 start with the same windows");

    loader_free(&a);
    loader_free(&b);
    loader_free(&c);
    loader_free(&q);
    loader_free(&r);
    loader_free(&r); /* freeing twice is harmless */
    shard_close(&s);
    unlink(path);
}

void loader_ranks_disjoint(void) {
    /* two shards, so windows are numbered across a shard boundary; shard 1's
     * tokens continue where shard 0's end, so the first token of a row
     * names its window: (shard, offset) = token < N0 ? (0, token) : (1, token - N0) */
    enum { WORLD = 3, N0 = LT * 37 + 1, N1 = LT * 20 + 5, NW = 37 + 20 };
    char p0[256], p1[256];
    tmp_path(p0, sizeof p0, "rank0.bin");
    tmp_path(p1, sizeof p1, "rank1.bin");
    Shard s0, s1;
    make_counting_shard(&s0, p0, 0, N0, 1000, -1);
    make_counting_shard(&s1, p1, N0, N1, 1000, -1);
    const Shard *sh[2] = {&s0, &s1};
    Err e = {{0}};
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        Loader L[WORLD];
        for (int r = 0; r < WORLD; r++)
            LC_ASSERT(loader_init(&L[r], sh, 2, LB, LT, r, WORLD, shuffle, 0, 5, &e) == 0);
        EXPECT(loader_windows(&L[0]) == NW, "windows %llu, expected %d",
               (unsigned long long)loader_windows(&L[0]), NW);
        int steps = NW / (LB * WORLD); /* 6 full global batches, 3 windows left over */
        int seen[NW] = {0}, distinct = 0, dup = 0, malformed = 0, crosses = 0;
        for (int step = 0; step < steps; step++)
            for (int r = 0; r < WORLD; r++) {
                int32_t tok[LB * LT], tgt[LB * LT];
                uint64_t ep = loader_next(&L[r], tok, tgt, NULL);
                EXPECT(ep == 0, "rank %d step %d in epoch %llu", r, step, (unsigned long long)ep);
                for (int b = 0; b < LB; b++) {
                    int32_t first = tok[b * LT];
                    for (int t = 0; t < LT; t++)
                        malformed += tok[b * LT + t] != first + t || tgt[b * LT + t] != first + t + 1;
                    int shard = first >= N0, off = first - (shard ? N0 : 0);
                    int w = (shard ? 37 : 0) + off / LT;
                    crosses += first + LT + 1 > (shard ? N0 + N1 : N0); /* window past its shard */
                    if (off % LT != 0 || w >= NW) {
                        malformed++;
                        continue;
                    }
                    if (seen[w]) dup++;
                    else distinct++;
                    seen[w] = 1;
                }
            }
        EXPECT(malformed == 0, "shuffle %d: %d tokens or offsets malformed", shuffle, malformed);
        EXPECT(crosses == 0, "shuffle %d: %d windows span two shards", shuffle, crosses);
        EXPECT(dup == 0, "shuffle %d: %d windows drawn twice in one epoch", shuffle, dup);
        EXPECT(distinct == LB * WORLD * steps, "shuffle %d: %d distinct windows, expected %d",
               shuffle, distinct, LB * WORLD * steps);
        /* the next batch starts epoch 1 on every rank */
        int32_t tok[LB * LT], tgt[LB * LT];
        for (int r = 0; r < WORLD; r++) {
            EXPECT(loader_next(&L[r], tok, tgt, NULL) == 1, "rank %d did not roll over", r);
            loader_free(&L[r]);
        }
    }
    shard_close(&s0);
    shard_close(&s1);
    unlink(p0);
    unlink(p1);
}

void loader_doc_boundaries(void) {
    char path[256];
    tmp_path(path, sizeof path, "docs.bin");
    enum { EOT = 0, N = 4 * LT + 1 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = 10 + i;
    /* eot at known places: mid-row, at the end of a row, at the start of a
     * row, and twice in a row */
    int eots[] = {3, 7, 8, 18, 19, 30};
    for (size_t i = 0; i < sizeof eots / sizeof eots[0]; i++) t[eots[i]] = EOT;
    Err e = {{0}};
    LC_ASSERT(shard_write(path, t, N, 100, EOT, 1, 7, &e) == 0);
    Shard s;
    LC_ASSERT(shard_open(&s, path, &e) == 0);
    const Shard *sh[1] = {&s};
    for (int mask = 0; mask <= 1; mask++) {
        Loader L;
        LC_ASSERT(loader_init(&L, sh, 1, 4, LT, 0, 1, 0, mask, 1, &e) == 0);
        int32_t tok[4 * LT], tgt[4 * LT], pos[4 * LT];
        loader_next(&L, tok, tgt, pos);
        /* expected positions, worked out by hand from the eot places above:
         * row 0 = t[0..8):   eot at 3, 7          -> 0 1 2 3 0 1 2 3
         * row 1 = t[8..16):  eot at 8 (column 0)  -> 0 0 1 2 3 4 5 6
         * row 2 = t[16..24): eot at 18, 19        -> 0 1 2 0 0 1 2 3
         * row 3 = t[24..32): eot at 30            -> 0 1 2 3 4 5 6 0 */
        static const int32_t want[4 * LT] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 2, 3, 4, 5, 6,
                                             0, 1, 2, 0, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 0};
        for (int i = 0; i < 4 * LT; i++) {
            int32_t w = mask ? want[i] : i % LT;
            EXPECT(pos[i] == w, "doc_mask %d: pos[%d] = %d, expected %d", mask, i, pos[i], w);
            EXPECT(tok[i] == t[i] && tgt[i] == t[i + 1], "doc_mask %d: token/target %d", mask, i);
        }
        loader_free(&L);
    }
    shard_close(&s);
    unlink(path);
}

void loader_too_short(void) {
    char path[256], p2[256];
    tmp_path(path, sizeof path, "short.bin");
    tmp_path(p2, sizeof p2, "short2.bin");
    Shard s, s2;
    make_counting_shard(&s, path, 0, 2 * LT, 1000, -1); /* 1 window, a batch needs 2 */
    const Shard *sh[2] = {&s, &s2};
    Err e = {{0}};
    Loader L;
    EXPECT(loader_init(&L, sh, 1, 2, LT, 0, 1, 0, 0, 1, &e) == -1, "a too-short shard was accepted");
    EXPECT(strstr(e.msg, path) == e.msg, "message does not start with the shard: %s", e.msg);
    EXPECT(strstr(e.msg, "16 tokens is shorter than one batch of 2 x (8+1) tokens"), "message: %s",
           e.msg);
    /* 2*T + 1 tokens hold exactly 2 windows: just enough */
    shard_close(&s);
    make_counting_shard(&s, path, 0, 2 * LT + 1, 1000, -1);
    EXPECT(loader_init(&L, sh, 1, 2, LT, 0, 1, 0, 0, 1, &e) == 0, "2T+1 tokens rejected: %s", e.msg);
    loader_free(&L);
    /* ... but not for two ranks */
    EXPECT(loader_init(&L, sh, 1, 2, LT, 1, 2, 0, 0, 1, &e) == -1, "world 2 accepted");
    EXPECT(strstr(e.msg, path) == e.msg, "message: %s", e.msg);
    /* two shards of 1.5 windows each: 3 windows of tokens, only 2 usable */
    shard_close(&s);
    make_counting_shard(&s, path, 0, LT + LT / 2 + 1, 1000, -1);
    make_counting_shard(&s2, p2, 0, LT + LT / 2 + 1, 1000, -1);
    EXPECT(loader_init(&L, sh, 2, 3, LT, 0, 1, 0, 0, 1, &e) == -1, "fragmented shards accepted");
    EXPECT(strstr(e.msg, path) == e.msg && strstr(e.msg, "2 windows"), "message: %s", e.msg);
    /* bad settings */
    EXPECT(loader_init(&L, sh, 1, 1, LT, 2, 2, 0, 0, 1, &e) == -1 && strstr(e.msg, "rank 2"),
           "rank 2 of 2 accepted: %s", e.msg);
    EXPECT(loader_init(&L, sh, 1, 0, LT, 0, 1, 0, 0, 1, &e) == -1, "B = 0 accepted");
    loader_free(&L);
    shard_close(&s);
    shard_close(&s2);
    unlink(path);
    unlink(p2);
}

// ----------------------------------------------------------------------------
// JSONL files that start with a UTF-8 byte-order mark (Windows editors write
// one): every reader skips it at the start of the file, and only there

static int count_doc(void *ud, const char *text, size_t len, Err *e) {
    (void)e;
    int *n = ud;
    if (*n == 0) EXPECT(len == 5 && memcmp(text, "first", 5) == 0, "first document '%.*s'", (int)len, text);
    ++*n;
    return 0;
}

static int count_chat(void *ud, const ChatMsg *msgs, int n, const char *where, Err *e) {
    (void)msgs, (void)n, (void)where, (void)e;
    ++*(int *)ud;
    return 0;
}

void jsonl_bom(void) {
#define BOM "\xEF\xBB\xBF"
    static const char *conv = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": "
                              "\"assistant\", \"content\": \"Hello!\"}]}\n";
    static const char *pair = "{\"prompt\": \"Hi there\", \"chosen\": \" Hello!\", \"rejected\": \" Fine.\"}\n";
    char plain[256], bom[256], late[256], text[512];
    tmp_path(plain, sizeof plain, "plain.jsonl");
    tmp_path(bom, sizeof bom, "bom.jsonl");
    tmp_path(late, sizeof late, "late.jsonl");
    Tokenizer t;
    test_chat_tokenizer(&t);
    Err e = {{0}};

    /* documents (tokenize encode) */
    snprintf(text, sizeof text, BOM "{\"text\": \"first\"}\n{\"text\": \"second\"}\n");
    write_bytes(bom, text, strlen(text));
    int ndoc = 0;
    EXPECT(docs_each(bom, "text", count_doc, &ndoc, &e) == 0 && ndoc == 2, "docs_each: %d docs: %s", ndoc, e.msg);

    /* sft: the same examples as without the mark */
    SftOpts o = {SFT_AUTO, SFT_LOSS_AUTO, CHAT_LLAMA3, "text", 4096, 0, 1, NULL};
    SftSet a, b;
    write_bytes(plain, conv, strlen(conv));
    snprintf(text, sizeof text, BOM "%s%s", conv, conv);
    write_bytes(bom, text, strlen(text));
    LC_ASSERT(sft_load(&a, plain, &t, &o, &e) == 0);
    EXPECT(sft_load(&b, bom, &t, &o, &e) == 0, "sft: %s", e.msg);
    EXPECT(b.n == 2 && b.off[1] == a.ntok && memcmp(b.ids, a.ids, a.ntok * sizeof *a.ids) == 0,
           "sft: %zu examples, the first of %zu tokens (%zu without the mark)", b.n, b.n ? b.off[1] : 0, a.ntok);
    sft_free(&a), sft_free(&b);

    /* chat (tokenize chat) */
    int nchat = 0;
    EXPECT(chat_jsonl_each(bom, count_chat, &nchat, &e) == 0 && nchat == 2, "chat: %d lines: %s", nchat, e.msg);

    /* a mark anywhere else is not one: line 2 is refused */
    snprintf(text, sizeof text, "%s" BOM "%s", conv, conv);
    write_bytes(late, text, strlen(text));
    e.msg[0] = 0;
    EXPECT(sft_load(&b, late, &t, &o, &e) != 0 && strstr(e.msg, "late.jsonl:2: not valid JSON"), "late mark: %s", e.msg);

    /* dpo */
    DpoSet da, db;
    SftOpts od = {SFT_PROMPT, SFT_LOSS_COMPLETION, -1, "text", 4096, 0, 1, NULL};
    write_bytes(plain, pair, strlen(pair));
    snprintf(text, sizeof text, BOM "%s", pair);
    write_bytes(bom, text, strlen(text));
    LC_ASSERT(dpo_load(&da, plain, &t, &od, &e) == 0);
    EXPECT(dpo_load(&db, bom, &t, &od, &e) == 0, "dpo: %s", e.msg);
    EXPECT(db.n == 1 && db.ntok == da.ntok && memcmp(db.ids, da.ids, da.ntok * sizeof *da.ids) == 0,
           "dpo: %zu pairs, %zu tokens (%zu without the mark)", db.n, db.ntok, da.ntok);
    dpo_free(&da), dpo_free(&db);
    tok_free(&t);
    unlink(plain), unlink(bom), unlink(late);
#undef BOM
}

// ----------------------------------------------------------------------------
// docstream: parallel map, ordered emit, bounded batches

typedef struct {
    uint64_t next;      /* the index emit expects */
    uint64_t hash;      /* of the emitted texts and map results, in order */
    int order_ok;
} DocsSeen;

static int docs_map(void *ud, int thread, DocItem *d, Err *e) {
    (void)ud, (void)thread, (void)e;
    char *b = docstream_buf(d, d->len + 1);
    for (size_t i = 0; i < d->len; i++) b[i] = (char)(d->text[i] ^ 0x20);
    d->nbuf = d->len;
    d->u64 = hash_fnv1a(1469598103934665603ULL, d->text, d->len);
    return 0;
}

static int docs_emit(void *ud, DocItem *d, Err *e) {
    (void)e;
    DocsSeen *s = ud;
    if (d->index < s->next) s->order_ok = 0;
    s->next = d->index + 1;
    s->hash = hash_fnv1a(s->hash, d->buf, d->nbuf);
    s->hash = hash_mix64(s->hash ^ d->u64);
    return 0;
}

void docstream_order(void) {
    char path[256];
    tmp_path(path, sizeof path, "docs.jsonl");
    FILE *f = fopen(path, "wb");
    EXPECT(f != NULL, "cannot write %s", path);
    if (!f) return;
    uint64_t want = 1469598103934665603ULL;
    for (int i = 0; i < 3000; i++) {
        char text[128];
        int n = snprintf(text, sizeof text, "doc %d %.*s", i, i % 60, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij");
        fprintf(f, "{\"id\": %d, \"text\": \"%s\"}\n%s", i, text, i % 7 ? "" : "\n");
        char x[128];
        for (int k = 0; k < n; k++) x[k] = (char)(text[k] ^ 0x20);
        want = hash_fnv1a(want, x, (size_t)n);
        want = hash_mix64(want ^ hash_fnv1a(1469598103934665603ULL, text, (size_t)n));
    }
    fclose(f);
    const size_t batches[] = {1, 200, 4096, 0}; /* one line a batch, a few lines, many, the default */
    for (int k = 0; k < 4; k++) {
        DocStreamOpts o = {"text", batches[k], DOCS_UTF8_REFUSE, 0, NULL};
        DocsSeen s = {0, 1469598103934665603ULL, 1};
        DocStreamStats st;
        Err e = {{0}};
        const char *p = path;
        int rc = docstream_run(&p, 1, &o, docs_map, docs_emit, &s, &st, &e);
        EXPECT(rc == 0, "batch %zu: %s", batches[k], e.msg);
        EXPECT(s.order_ok && s.next == 3000, "batch %zu: emitted out of order (next %llu)", batches[k],
               (unsigned long long)s.next);
        EXPECT(s.hash == want, "batch %zu: results differ from the serial walk", batches[k]);
        EXPECT(st.docs == 3000 && st.bad_utf8 == 0, "docs %llu", (unsigned long long)st.docs);
    }
    remove(path);
}

void docstream_errors(void) {
    char path[256];
    tmp_path(path, sizeof path, "docs_bad.jsonl");
    /* line 3 has bad UTF-8 in its text, line 5 no text field, line 6 is not JSON */
    static const char bad[] = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\xff\"}\n{\"text\": \"d\"}\n"
                              "{\"txt\": \"e\"}\n{oops\n";
    write_bytes(path, bad, sizeof bad - 1);
    const char *p = path;
    Err e = {{0}};
    DocStreamOpts o = {"text", 0, DOCS_UTF8_REFUSE, 0, NULL};
    DocStreamStats st;
    EXPECT(docstream_run(&p, 1, &o, docs_map, NULL, NULL, &st, &e) == -1 && strstr(e.msg, ":3: not valid UTF-8"),
           "refuse: %s", e.msg);
    o.bad_utf8 = DOCS_UTF8_SKIP;
    EXPECT(docstream_run(&p, 1, &o, docs_map, NULL, NULL, &st, &e) == -1 && strstr(e.msg, ":5: no string field 'text'"),
           "skip: %s", e.msg);
    EXPECT(st.bad_utf8 == 1 && st.docs == 3, "skip counts: %llu bad, %llu docs", (unsigned long long)st.bad_utf8,
           (unsigned long long)st.docs);
    o.batch_bytes = 1; /* the same first error when every line is its own batch */
    EXPECT(docstream_run(&p, 1, &o, docs_map, NULL, NULL, &st, &e) == -1 && strstr(e.msg, ":5: no string field"),
           "one-line batches: %s", e.msg);
    EXPECT(docstream_utf8_check("ab\xc3\xa9z", 5) == 5 && docstream_utf8_check("ab\xc3z", 4) == 2 &&
               docstream_utf8_check("\xed\xa0\x80", 3) == 0, "utf8 check");
    remove(path);
}
