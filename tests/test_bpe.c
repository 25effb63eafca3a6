/*
 * test_bpe.c: the byte-level BPE tokenizer. Round trips on any bytes (NUL,
 * invalid UTF-8, Unicode, empty input), a merge table worked out by hand,
 * the trainer and the encoder against slow from-the-definition versions
 * written here (recount every pair each step; merge the lowest-rank pair
 * everywhere, minbpe-style), save/load, every kind of bad file, and encode
 * speed. Files go to /tmp under names carrying the process id.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/bpe.h"
#include "test.h"
#include "tests.h"


// ---------------------------------------------------------------------------
// helpers

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "/tmp/llamac_test_%d_bpe_%s", (int)getpid(), name);
}

static const char *const words[] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "that", "was", "for", "on", "with", "as",
    "he", "she", "they", "at", "by", "this", "from", "had", "not", "but", "what", "all", "were",
    "when", "we", "there", "can", "an", "your", "which", "their", "said", "if", "do", "will",
    "each", "about", "how", "up", "out", "them", "then", "many", "some", "so", "these", "would",
    "other", "into", "has", "more", "her", "two", "like", "him", "see", "time", "could", "no",
    "make", "than", "first", "been", "its", "who", "now", "people", "my", "made", "over", "did",
    "down", "only", "way", "find", "use", "may", "water", "long", "little", "very", "after",
    "words", "called", "just", "where", "most", "know", "get", "through", "back", "much",
    "before", "go", "good", "new", "write", "our", "used", "me", "man", "too", "any", "day",
    "same", "right", "look", "think", "also", "around", "another", "came", "come", "work",
    "three", "word", "must", "because", "does", "part", "even", "place", "well", "such",
    "tokenizer", "training", "language", "model", "sentence", "paragraph", "beautiful",
};
#define N_WORDS (sizeof words / sizeof words[0])

/* English-like text of n bytes: words drawn with a skew towards the start of
 * the list, capitals after a full stop, commas, numbers and newlines.
 * NUL-terminated; caller frees. */
static char *english(Rng *r, size_t n) {
    char *s = xmalloc(n + 64); /* one step adds < 64 bytes */
    size_t k = 0;
    int cap = 1;
    while (k < n) {
        float u = rng_uniform(r);
        size_t w = (size_t)(u * u * (float)N_WORDS);
        const char *word = words[w < N_WORDS ? w : N_WORDS - 1];
        size_t len = strlen(word);
        if (k && s[k - 1] != '\n') s[k++] = ' ';
        memcpy(s + k, word, len);
        if (cap) s[k] = (char)(s[k] - 'a' + 'A');
        k += len;
        cap = 0;
        uint64_t x = rng_u64(r) % 100;
        if (x < 3) {
            k += (size_t)sprintf(s + k, " %d", (int)(rng_u64(r) % 2000));
        } else if (x < 8) {
            s[k++] = ',';
        } else if (x < 16) {
            s[k++] = '.';
            cap = 1;
            if (x < 10) s[k++] = '\n';
        }
    }
    s[k < n ? k : n] = 0;
    return s;
}

/* pattern: the split (NULL: llamac's own, file version 1) */
static Bpe train_english_split(int vocab, size_t nbytes, uint64_t seed, const char *pattern) {
    Rng r;
    rng_seed(&r, seed);
    char *text = english(&r, nbytes);
    const char *texts[1] = {text};
    size_t lens[1] = {strlen(text)};
    Bpe t;
    Err e = {{0}};
    int rc = bpe_train_split(&t, texts, lens, 1, vocab, pattern, &e);
    LC_ASSERT(rc == 0);
    free(text);
    return t;
}

static Bpe train_english(int vocab, size_t nbytes, uint64_t seed) {
    return train_english_split(vocab, nbytes, seed, BPE_DEFAULT_PATTERN);
}

/* the two splits every reference test runs with */
static const char *const splits[2] = {NULL, BPE_DEFAULT_PATTERN};

/* encode then decode; 1 if the bytes come back and every id is a non-special
 * id in range */
static int roundtrip(const Bpe *t, const char *s, size_t n, size_t *nids) {
    int32_t *ids = NULL;
    size_t cap = 0, bcap = 0;
    char *back = NULL;
    size_t m = bpe_encode(t, s, n, &ids, &cap);
    int ok = 1;
    for (size_t i = 0; i < m; i++) ok &= ids[i] >= 0 && ids[i] < 256 + t->n_merges;
    size_t k = bpe_decode(t, ids, m, &back, &bcap);
    ok &= k == n && (n == 0 || memcmp(back, s, n) == 0);
    if (nids) *nids = m;
    free(ids);
    free(back);
    return ok;
}

/* The encoder from the definition: in each chunk of t's split (with a
 * pattern: a chunk that is a token is that token, the lowest such id), find
 * the pair of lowest merge index, merge all its occurrences left to right,
 * repeat. */
static size_t ref_encode(const Bpe *t, const char *s, size_t n, int32_t *out) {
    int V = t->vocab;
    int32_t *rank = xmalloc((size_t)V * (size_t)V * sizeof *rank);
    for (size_t i = 0; i < (size_t)V * (size_t)V; i++) rank[i] = INT32_MAX;
    for (int i = 0; i < t->n_merges; i++) rank[t->merges[i][0] * V + t->merges[i][1]] = i;
    size_t m = 0;
    for (size_t i = 0, j; i < n; i = j) {
        j = bpe_split_end(t, s, n, i);
        int32_t *w = out + m;
        size_t k = j - i;
        int whole = -1;
        for (int id = 256; t->pattern && k > 1 && id < 256 + t->n_merges && whole < 0; id++) {
            size_t len;
            const char *b = bpe_token_bytes(t, id, &len);
            if (len == k && memcmp(b, s + i, k) == 0) whole = id;
        }
        if (whole >= 0) {
            w[0] = whole;
            m += 1;
            continue;
        }
        for (size_t q = 0; q < k; q++) w[q] = (uint8_t)s[i + q];
        for (;;) {
            int32_t best = INT32_MAX;
            for (size_t q = 0; q + 1 < k; q++)
                if (rank[w[q] * V + w[q + 1]] < best) best = rank[w[q] * V + w[q + 1]];
            if (best == INT32_MAX) break;
            size_t o = 0;
            for (size_t q = 0; q < k;) {
                if (q + 1 < k && w[q] == t->merges[best][0] && w[q + 1] == t->merges[best][1]) {
                    w[o++] = 256 + best;
                    q += 2;
                } else {
                    w[o++] = w[q++];
                }
            }
            k = o;
        }
        m += k;
    }
    free(rank);
    return m;
}

/* 1 if bpe_encode agrees with ref_encode on s */
static int matches_ref(const Bpe *t, const char *s, size_t n) {
    int32_t *ids = NULL, *ref = xmalloc((n ? n : 1) * sizeof *ref);
    size_t cap = 0;
    size_t m = bpe_encode(t, s, n, &ids, &cap);
    size_t mr = ref_encode(t, s, n, ref);
    int ok = m == mr && (m == 0 || memcmp(ids, ref, m * sizeof *ids) == 0);
    free(ids);
    free(ref);
    return ok;
}

// ---------------------------------------------------------------------------
// round trips

void bpe_roundtrip_random(void) {
  for (int sp = 0; sp < 2; sp++) {
    Bpe t = train_english_split(600, 200000, 1, splits[sp]);
    EXPECT(t.vocab == 600, "vocab %d", t.vocab);
    Rng r;
    rng_seed(&r, 2);
    static const uint8_t odd[] = {0x00, 0xff, 0xfe, 0xc0, 0xc1, 0x80, 0xbf, 0xe2, 0xf0, 0xf8,
                                  ' ', '\n', '\r', '\t', 'a', 'e', 't', 'h', '0', '.'};
    char s[3000];
    int bad = 0, bad_ref = 0;
    for (int it = 0; it < 300; it++) {
        size_t n = (size_t)(rng_u64(&r) % (it < 250 ? 200 : 3000));
        for (size_t i = 0; i < n; i++) {
            uint64_t x = rng_u64(&r);
            s[i] = (char)(x % 3 == 0 ? (uint8_t)(x >> 8) : odd[(x >> 8) % sizeof odd]);
        }
        bad += !roundtrip(&t, s, n, NULL);
        bad_ref += !matches_ref(&t, s, n);
    }
    EXPECT(bad == 0, "%d random strings did not round-trip", bad);
    EXPECT(bad_ref == 0, "%d random strings encode unlike the reference", bad_ref);

    /* English-like text round-trips, compresses and matches the reference */
    char *text = english(&r, 20000);
    size_t n = strlen(text), m = 0;
    EXPECT(roundtrip(&t, text, n, &m), "English text did not round-trip");
    EXPECT(m < n / 2, "600-id vocab made %zu ids of %zu bytes", m, n);
    EXPECT(matches_ref(&t, text, n), "English text encodes unlike the reference");
    free(text);

    /* runs longer than one chunk (cut at BPE_MAX_CHUNK) */
    size_t big = 3 * BPE_MAX_CHUNK + 17;
    char *run = xmalloc(big);
    memset(run, 'e', big);
    EXPECT(roundtrip(&t, run, big, NULL), "long run of one letter did not round-trip");
    EXPECT(matches_ref(&t, run, big), "long run encodes unlike the reference");
    for (size_t i = 0; i < big; i++) run[i] = "theandof"[rng_u64(&r) % 8];
    EXPECT(roundtrip(&t, run, big, NULL), "long random word did not round-trip");
    EXPECT(matches_ref(&t, run, big), "long random word encodes unlike the reference");
    free(run);

    /* many threads encoding with one const Bpe (each has its own cache) agree
     * with one thread */
    char *doc = english(&r, 64 * 1024);
    int32_t *serial = NULL, *par = xmalloc(64 * 1024 * sizeof *par);
    size_t scap = 0, off[65] = {0};
    for (int i = 0; i < 64; i++) {
        size_t k = bpe_encode(&t, doc + 1024 * i, 1024, &serial, &scap);
        off[i + 1] = off[i] + k;
        memcpy(par + off[i], serial, k * sizeof *par);
    }
    int disagree = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : disagree)
    for (int i = 0; i < 64; i++) {
        int32_t *mine = NULL;
        size_t mcap = 0, k = bpe_encode(&t, doc + 1024 * i, 1024, &mine, &mcap);
        disagree += k != off[i + 1] - off[i] || memcmp(mine, par + off[i], k * sizeof *mine) != 0;
        free(mine);
    }
    EXPECT(disagree == 0, "%d of 64 pieces encode differently on other threads", disagree);
    free(par);
    free(serial);
    free(doc);

    /* special-token text is ordinary text (roundtrip also checks no special id) */
    const char *st = "<|begin_of_text|>hi<|end_of_text|>";
    EXPECT(roundtrip(&t, st, strlen(st), NULL), "special-token text not ordinary text");
    bpe_free(&t);
  }
}

void bpe_roundtrip_unicode(void) {
    static const char *const samples[] = {
        "café naïve résumé façade Ærøskøbing",
        "中文分词测试：我们今天去北京。",
        "日本語のテキストとカタカナ",
        "emoji 😀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
        "Привет, мир! Ελληνικά. עברית. العربية",
        "mixed: a\xcc\x81 (combining) \xe2\x80\x8b(zwsp) \xef\xbb\xbf(bom)",
    };
    /* train on English plus the samples, so multi-byte merges exist */
    Rng r;
    rng_seed(&r, 3);
    char *eng = english(&r, 50000);
    const char *texts[7];
    size_t lens[7];
    texts[0] = eng;
    lens[0] = strlen(eng);
    for (int i = 0; i < 6; i++) {
        texts[i + 1] = samples[i];
        lens[i + 1] = strlen(samples[i]);
    }
    /* llamac's split at 800 ids; the Llama 3 regex makes more distinct English
     * pairs (digit triples, contractions), so the samples' count-1 pairs are
     * reached at a larger vocabulary */
  for (int sp = 0; sp < 2; sp++) {
    Bpe t;
    Err e = {{0}};
    EXPECT(bpe_train_split(&t, texts, lens, 7, sp ? 1600 : 800, splits[sp], &e) == 0, "train: %s", e.msg);
    for (int i = 0; i < 6; i++) {
        size_t n = strlen(samples[i]), m = 0;
        EXPECT(roundtrip(&t, samples[i], n, &m), "sample %d did not round-trip", i);
        EXPECT(m < n, "sample %d: %zu ids for %zu bytes (seen in training)", i, m, n);
        EXPECT(matches_ref(&t, samples[i], n), "sample %d encodes unlike the reference", i);
    }
    /* a UTF-8 word stays one chunk: letters include every byte >= 0x80 */
    const char *w = "北京Ærø";
    EXPECT(bpe_chunk_end(w, strlen(w), 0) == strlen(w), "UTF-8 word split");

    /* random code points of every UTF-8 length */
    char s[4096];
    int bad = 0;
    for (int it = 0; it < 100; it++) {
        size_t n = 0, target = (size_t)(rng_u64(&r) % (sizeof s - 8));
        while (n < target) {
            uint32_t cp, kind = (uint32_t)(rng_u64(&r) % 5);
            cp = kind == 0 ? 0x20 + (uint32_t)(rng_u64(&r) % 0x5f)
               : kind == 1 ? 0x80 + (uint32_t)(rng_u64(&r) % 0x780)
               : kind == 2 ? 0x800 + (uint32_t)(rng_u64(&r) % 0xd000)
               : kind == 3 ? 0x4e00 + (uint32_t)(rng_u64(&r) % 0x5000)
                           : 0x10000 + (uint32_t)(rng_u64(&r) % 0x100000);
            if (cp < 0x80) s[n++] = (char)cp;
            else if (cp < 0x800) {
                s[n++] = (char)(0xc0 | cp >> 6);
                s[n++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                s[n++] = (char)(0xe0 | cp >> 12);
                s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                s[n++] = (char)(0x80 | (cp & 0x3f));
            } else {
                s[n++] = (char)(0xf0 | cp >> 18);
                s[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                s[n++] = (char)(0x80 | (cp & 0x3f));
            }
            if (n > target) break;
        }
        bad += !roundtrip(&t, s, n, NULL);
    }
    EXPECT(bad == 0, "%d random Unicode strings did not round-trip", bad);
    bpe_free(&t);
  }
    free(eng);
}

void bpe_empty(void) {
    Bpe t;
    Err e = {{0}};
    /* an empty corpus trains no merges: the vocabulary is bytes + specials */
    EXPECT(bpe_train(&t, NULL, NULL, 0, 1000, &e) == 0, "train on nothing: %s", e.msg);
    EXPECT(t.n_merges == 0 && t.vocab == 256 + t.n_special, "merges %d vocab %d", t.n_merges,
           t.vocab);
    EXPECT(t.n_special == 5, "n_special %d", t.n_special);
    EXPECT(t.bos == 256 && t.eos == 257, "bos %d eos %d", t.bos, t.eos);
    EXPECT(bpe_special_id(&t, BPE_EOT) == 260, "eot %d", bpe_special_id(&t, BPE_EOT));
    EXPECT(bpe_special_id(&t, "<|nope|>") == -1, "unknown special found");

    int32_t *ids = NULL;
    size_t cap = 0;
    EXPECT(bpe_encode(&t, "", 0, &ids, &cap) == 0, "empty input gave ids");
    EXPECT(bpe_encode(&t, "hello", 5, &ids, &cap) == 5, "no merges: one id per byte");
    EXPECT(ids[0] == 'h' && ids[4] == 'o', "byte ids");
    char *out = NULL;
    size_t ocap = 0;
    EXPECT(bpe_decode(&t, ids, 0, &out, &ocap) == 0, "0 ids gave bytes");
    int32_t sp[2] = {t.bos, t.eos};
    size_t k = bpe_decode(&t, sp, 2, &out, &ocap);
    EXPECT(k == 32 && memcmp(out, "<|begin_of_text|><|end_of_text|>", 32) == 0,
           "specials decode to their names");
    int32_t badid[2] = {'a', t.vocab};
    EXPECT(bpe_decode(&t, badid, 2, &out, &ocap) == (size_t)-1, "out-of-range id decoded");
    badid[1] = -1;
    EXPECT(bpe_decode(&t, badid, 2, &out, &ocap) == (size_t)-1, "negative id decoded");
    size_t len = 1;
    EXPECT(bpe_token_bytes(&t, t.vocab, &len) == NULL && len == 0, "token_bytes out of range");
    const char *p = bpe_token_bytes(&t, 'x', &len);
    EXPECT(p && len == 1 && *p == 'x', "token_bytes of a byte");
    free(ids);
    free(out);
    bpe_free(&t);
    bpe_free(&t); /* a zeroed Bpe frees fine */

    /* texts of length 0 and 1 only: still no pairs */
    const char *texts[2] = {"", "x"};
    size_t lens[2] = {0, 1};
    EXPECT(bpe_train(&t, texts, lens, 2, 300, &e) == 0 && t.n_merges == 0, "trivial corpus");
    bpe_free(&t);

    /* too small and too large vocabularies name the flag */
    EXPECT(bpe_train(&t, texts, lens, 2, 261, &e) == -1 && strstr(e.msg, "--vocab"),
           "vocab 261: %s", e.msg);
    EXPECT(bpe_train(&t, texts, lens, 2, 262, &e) == 0, "vocab 262 (one merge) refused: %s",
           e.msg);
    bpe_free(&t);
    EXPECT(bpe_train(&t, texts, lens, 2, -5, &e) == -1 && strstr(e.msg, "--vocab"),
           "vocab -5: %s", e.msg);
    EXPECT(bpe_train(&t, texts, lens, 2, BPE_MAX_VOCAB + 1, &e) == -1 && strstr(e.msg, "--vocab"),
           "vocab too large: %s", e.msg);
}

// ---------------------------------------------------------------------------
// the merge table

/* The trainer from the definition: every step recounts all adjacent pairs of
 * all chunks (one entry per occurrence, no dedup), takes the largest count,
 * smallest (a, b) on ties, and merges it left to right everywhere. */
static int ref_train(const Bpe *split, const char *const *texts, const size_t *lens, int ntexts, int nmerge,
                     int32_t (*merges)[2]) {
    size_t total = 0, nchunks = 0;
    for (int d = 0; d < ntexts; d++) total += lens[d];
    int32_t *sym = xmalloc((total ? total : 1) * sizeof *sym);
    size_t *start = xmalloc((total + 1) * sizeof *start), *len = xmalloc((total + 1) * sizeof *len);
    size_t o = 0;
    for (int d = 0; d < ntexts; d++)
        for (size_t i = 0, j; i < lens[d]; i = j) {
            j = bpe_split_end(split, texts[d], lens[d], i);
            start[nchunks] = o;
            len[nchunks++] = j - i;
            for (size_t q = i; q < j; q++) sym[o++] = (uint8_t)texts[d][q];
        }
    int V = 256 + nmerge;
    int64_t *cnt = xmalloc((size_t)V * (size_t)V * sizeof *cnt);
    int m = 0;
    for (; m < nmerge; m++) {
        memset(cnt, 0, (size_t)V * (size_t)V * sizeof *cnt);
        for (size_t c = 0; c < nchunks; c++)
            for (size_t q = 0; q + 1 < len[c]; q++)
                cnt[sym[start[c] + q] * V + sym[start[c] + q + 1]]++;
        int64_t best = 0;
        int ba = -1, bb = -1;
        for (int a = 0; a < V; a++)
            for (int b = 0; b < V; b++)
                if (cnt[a * V + b] > best) {
                    best = cnt[a * V + b];
                    ba = a;
                    bb = b;
                }
        if (best == 0) break;
        merges[m][0] = ba;
        merges[m][1] = bb;
        for (size_t c = 0; c < nchunks; c++) {
            int32_t *w = sym + start[c];
            size_t k = 0;
            for (size_t q = 0; q < len[c];) {
                if (q + 1 < len[c] && w[q] == ba && w[q + 1] == bb) {
                    w[k++] = 256 + m;
                    q += 2;
                } else {
                    w[k++] = w[q++];
                }
            }
            len[c] = k;
        }
    }
    free(cnt);
    free(sym);
    free(start);
    free(len);
    return m;
}

typedef struct {
    const char *s;
    size_t n;
} Span;
#define SPAN(lit) {lit, sizeof lit - 1} /* literal with its length: NUL bytes allowed */

/* 1 if the pre-tokenizer cuts s[0..n) into exactly want[0..nwant) */
static int chunks_are(const char *s, size_t n, const Span *want, int nwant) {
    int k = 0;
    for (size_t i = 0, j; i < n; i = j, k++) {
        j = bpe_chunk_end(s, n, i);
        if (k >= nwant || want[k].n != j - i || memcmp(want[k].s, s + i, j - i) != 0) {
            printf("    chunk %d: \"%.*s\"\n", k, (int)(j - i), s + i);
            return 0;
        }
    }
    return k == nwant;
}

void bpe_known_merges(void) {
    /* pre-tokenizer rules, one per line of bpe.h */
    static const Span c1[] = {SPAN("Hello"), SPAN(" "),   SPAN(" world"), SPAN(" "),
                              SPAN("1"),     SPAN("2"),   SPAN("3"),      SPAN("!!"),
                              SPAN("\n\r\n"), SPAN("\t"), SPAN("x"),      SPAN(" ..."),
                              SPAN("  \t"),  SPAN("y")};
    const char s1[] = "Hello  world 123!!\n\r\n\tx ...  \ty";
    EXPECT(chunks_are(s1, sizeof s1 - 1, c1, 14), "chunks 1");
    static const Span c2[] = {SPAN("a"),  SPAN("  "), SPAN(" b"), SPAN("\t"),       SPAN(" c"),
                              SPAN(" "),  SPAN("\n"), SPAN(" "),  SPAN("7"),        SPAN("é"),
                              SPAN(" ñ"), SPAN("\x00\x01"), SPAN(" $")};
    const char s2[] = "a   b\t c \n 7é ñ\x00\x01 $";
    EXPECT(chunks_are(s2, sizeof s2 - 1, c2, 13), "chunks 2");

    /* By hand. texts "aaab aaab ab" -> chunks "aaab", " aaab", " ab" (once each).
     * pair counts: (a,a) 2+2 = 4, (a,b) 1+1+1 = 3, (' ',a) 2.
     *   merge 0: (a,a) -> 256.   chunks [256 a b] [' ' 256 a b] [' ' a b]
     *            counts: (a,b) 3, (256,a) 2, (' ',256) 1, (' ',a) 1
     *   merge 1: (a,b) -> 257.   chunks [256 257] [' ' 256 257] [' ' 257]
     *            counts: (256,257) 2, (' ',256) 1, (' ',257) 1
     *   merge 2: (256,257) -> 258 "aaab".   chunks [258] [' ' 258] [' ' 257]
     *            counts: (' ',258) 1, (' ',257) 1: a tie, smallest pair first
     *   merge 3: (' ',257) -> 259 " ab"
     *   merge 4: (' ',258) -> 260 " aaab", and no pair is left.
     * Encoding "aaaab ab aaab": chunk "aaaab": (a,a) has the lowest index,
     * leftmost first: [256 a a b] -> [256 256 b]; nothing else applies
     * ((256,256) and (256,b) are no merges). " ab" -> [259]; " aaab" -> [260]. */
    const char *texts[1] = {"aaab aaab ab"};
    size_t lens[1] = {12};
    Bpe t;
    Err e = {{0}};
    EXPECT(bpe_train(&t, texts, lens, 1, 256 + 5 + 5, &e) == 0, "train: %s", e.msg);
    static const int32_t want[5][2] = {{'a', 'a'}, {'a', 'b'}, {256, 257}, {' ', 257}, {' ', 258}};
    EXPECT(t.n_merges == 5, "n_merges %d", t.n_merges);
    for (int i = 0; i < 5 && i < t.n_merges; i++)
        EXPECT(t.merges[i][0] == want[i][0] && t.merges[i][1] == want[i][1],
               "merge %d = (%d, %d), want (%d, %d)", i, t.merges[i][0], t.merges[i][1],
               want[i][0], want[i][1]);
    EXPECT(t.bos == 261 && t.eos == 262 && t.vocab == 266, "bos %d eos %d vocab %d", t.bos,
           t.eos, t.vocab);
    int32_t *ids = NULL;
    size_t cap = 0;
    size_t n = bpe_encode(&t, "aaaab ab aaab", 13, &ids, &cap);
    static const int32_t want_ids[] = {256, 256, 'b', 259, 260};
    EXPECT(n == 5 && memcmp(ids, want_ids, sizeof want_ids) == 0,
           "encode: %zu ids [%d %d %d %d %d]", n, ids[0], ids[1], ids[2], n > 3 ? ids[3] : -1,
           n > 4 ? ids[4] : -1);
    size_t len;
    const char *p = bpe_token_bytes(&t, 260, &len);
    EXPECT(len == 5 && memcmp(p, " aaab", 5) == 0, "token 260 is \"%.*s\"", (int)len, p);
    bpe_free(&t);

    /* asking for more ids than the corpus has pairs stops early */
    EXPECT(bpe_train(&t, texts, lens, 1, 1000, &e) == 0 && t.n_merges == 5 && t.vocab == 266,
           "early stop: %d merges, vocab %d", t.n_merges, t.vocab);
    bpe_free(&t);

    /* against the slow trainer, on corpora full of ties (tiny alphabets) and
     * on English-like text; and the encoder against the slow encoder */
    for (int sp = 0; sp < 2; sp++) {
    Bpe split; /* an empty training: only its split is used */
    LC_ASSERT(bpe_train_split(&split, NULL, NULL, 0, 262, splits[sp], &e) == 0);
    Rng r;
    rng_seed(&r, 4);
    for (int trial = 0; trial < 4; trial++) {
        char buf[3][700];
        const char *tx[3];
        size_t tl[3];
        const char *alpha = trial < 2 ? "ab c\n1." : "aab  bxyz\t\xc3\xa9.,!";
        size_t na = strlen(alpha);
        for (int d = 0; d < 3; d++) {
            tl[d] = (size_t)(rng_u64(&r) % 700);
            for (size_t i = 0; i < tl[d]; i++) buf[d][i] = alpha[rng_u64(&r) % na];
            tx[d] = buf[d];
        }
        char *eng = NULL;
        if (trial == 3) { /* English-like text instead of the first text */
            eng = english(&r, 4000);
            tx[0] = eng;
            tl[0] = strlen(eng);
        }
        int nm = 120;
        int32_t(*ref)[2] = xmalloc((size_t)nm * sizeof *ref);
        int nref = ref_train(&split, tx, tl, 3, nm, ref);
        EXPECT(bpe_train_split(&t, tx, tl, 3, 256 + nm + 5, splits[sp], &e) == 0, "train: %s", e.msg);
        EXPECT(t.n_merges == nref, "split %d trial %d: %d merges, reference %d", sp, trial, t.n_merges, nref);
        int first_bad = -1;
        for (int i = 0; i < nref && i < t.n_merges && first_bad < 0; i++)
            if (t.merges[i][0] != ref[i][0] || t.merges[i][1] != ref[i][1]) first_bad = i;
        EXPECT(first_bad < 0, "trial %d: merge %d differs from the reference", trial, first_bad);
        for (int d = 0; d < 3; d++)
            EXPECT(matches_ref(&t, tx[d], tl[d]), "trial %d: text %d encodes unlike the reference",
                   trial, d);
        free(ref);
        free(eng);
        bpe_free(&t);
    }
    bpe_free(&split);
    }
    free(ids);
}

// ---------------------------------------------------------------------------
// files

void bpe_save_load(void) {
    Bpe t = train_english(700, 100000, 5);
    Bpe t2 = train_english(700, 100000, 5);
    EXPECT(t.id == t2.id, "training is not deterministic");
    bpe_free(&t2);
    char path[256], tmp[300];
    tmp_path(path, sizeof path, "tok.bin");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    Err e = {{0}};
    EXPECT(bpe_save(&t, path, &e) == 0, "save: %s", e.msg);
    EXPECT(access(tmp, F_OK) != 0, "%s left behind", tmp);
    Bpe u;
    EXPECT(bpe_load(&u, path, &e) == 0, "load: %s", e.msg);
    if (u.vocab != t.vocab || u.n_merges != t.n_merges) {
        EXPECT(0, "loaded vocab %d merges %d, saved %d %d", u.vocab, u.n_merges, t.vocab,
               t.n_merges);
    } else {
        EXPECT(memcmp(u.merges, t.merges, (size_t)t.n_merges * sizeof *t.merges) == 0, "merges");
        EXPECT(u.id == t.id && u.bos == t.bos && u.eos == t.eos, "id/bos/eos");
        EXPECT(u.n_special == t.n_special, "n_special");
        for (int k = 0; k < t.n_special && k < u.n_special; k++)
            EXPECT(strcmp(u.special[k], t.special[k]) == 0, "special %d", k);
        Rng r;
        rng_seed(&r, 6);
        char *text = english(&r, 5000);
        int32_t *a = NULL, *b = NULL;
        size_t ca = 0, cb = 0;
        size_t na = bpe_encode(&t, text, strlen(text), &a, &ca);
        size_t nb = bpe_encode(&u, text, strlen(text), &b, &cb);
        EXPECT(na == nb && memcmp(a, b, na * sizeof *a) == 0, "encodings differ after load");
        free(a);
        free(b);
        free(text);
    }
    /* saving the loaded tokenizer gives the same bytes */
    char path2[256];
    tmp_path(path2, sizeof path2, "tok2.bin");
    EXPECT(bpe_save(&u, path2, &e) == 0, "save 2: %s", e.msg);
    FILE *f1 = fopen(path, "rb"), *f2 = fopen(path2, "rb");
    int same = f1 && f2;
    while (same) {
        int x = fgetc(f1), y = fgetc(f2);
        same = x == y;
        if (x == EOF) break;
    }
    EXPECT(same, "re-saved file differs");
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    EXPECT(bpe_save(&t, "/nonexistent_dir/x.tok", &e) == -1 &&
               strstr(e.msg, "/nonexistent_dir/x.tok: cannot write"),
           "save to a bad dir: %s", e.msg);
    remove(path);
    remove(path2);
    bpe_free(&u);
    bpe_free(&t);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    LC_ASSERT(f);
    uint8_t *b = xmalloc(1 << 20);
    *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    LC_ASSERT(fwrite(b, 1, n, f) == n);
    fclose(f);
}

/* FNV-1a 64 of the body (after the 20-byte header, before the 8-byte id),
 * written into the id: a file that is wrong but carries a valid checksum */
static void fix_checksum(uint8_t *b, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 20; i < n - 8; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    for (int k = 0; k < 8; k++) b[n - 8 + k] = (uint8_t)(h >> (8 * k));
}

static void put32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

/* load must fail with a message holding the path and `what` */
static void expect_bad(const char *path, const char *what, int line) {
    Bpe t;
    Err e = {{0}};
    int rc = bpe_load(&t, path, &e);
    if (rc != -1 || !strstr(e.msg, path) || !strstr(e.msg, what))
        test_fail(__FILE__, line, "want \"%s\", got rc %d \"%s\"", what, rc, e.msg);
    if (t.merges || t.special || t.vocab) test_fail(__FILE__, line, "*t not zeroed on error");
}

void bpe_bad_files(void) {
    char good[256], bad[256];
    tmp_path(good, sizeof good, "good.tok");
    tmp_path(bad, sizeof bad, "bad.tok");
    Bpe t = train_english_split(300, 20000, 7, NULL); /* the version 1 layout */
    Err e = {{0}};
    LC_ASSERT(bpe_save(&t, good, &e) == 0);
    size_t n;
    uint8_t *b = slurp(good, &n), *c = xmalloc(n + 16);
    EXPECT(n == 20 + 8 * (size_t)t.n_merges + 4 * 5 + 17 + 15 + 19 + 17 + 10 + 8, "size %zu", n);

    expect_bad("/nonexistent_dir/tok.bin", "cannot open", __LINE__);
    size_t cuts[] = {0, 3, 4, 19, 20, 27, n - 60, n - 9, n - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        spit(bad, b, cuts[k]);
        expect_bad(bad, "truncated", __LINE__);
    }
    memcpy(c, b, n);
    c[0] ^= 1;
    spit(bad, c, n);
    expect_bad(bad, "not a llamac tokenizer (bad magic)", __LINE__);
    memcpy(c, b, n);
    put32(c + 4, 7);
    spit(bad, c, n);
    expect_bad(bad, "unsupported version 7", __LINE__);
    memcpy(c, b, n);
    c[20 + 8 * 10] ^= 0x40; /* a merge id */
    spit(bad, c, n);
    expect_bad(bad, "corrupted (checksum mismatch)", __LINE__);
    memcpy(c, b, n);
    c[n - 1] ^= 1; /* the id itself */
    spit(bad, c, n);
    expect_bad(bad, "corrupted (checksum mismatch)", __LINE__);
    memcpy(c, b, n);
    c[n] = 0;
    spit(bad, c, n + 1);
    expect_bad(bad, "unexpected bytes after the checksum", __LINE__);
    memcpy(c, b, n);
    put32(c + 8, (uint32_t)t.vocab + 1);
    spit(bad, c, n);
    expect_bad(bad, "is not 256 +", __LINE__);
    /* wrong in ways the checksum does not catch (it was recomputed) */
    memcpy(c, b, n);
    put32(c + 20 + 8 * 3, 256 + 3); /* merge 3 uses its own id */
    fix_checksum(c, n);
    spit(bad, c, n);
    expect_bad(bad, "merge 3 refers to unknown id 259", __LINE__);
    memcpy(c, b, n);
    put32(c + 20 + 8 * 3 + 4, (uint32_t)-2);
    fix_checksum(c, n);
    spit(bad, c, n);
    expect_bad(bad, "merge 3 refers to unknown id -2", __LINE__);
    memcpy(c, b, n);
    memcpy(c + 20 + 8 * 5, c + 20 + 8 * 2, 8); /* merge 5 = merge 2 */
    fix_checksum(c, n);
    spit(bad, c, n);
    expect_bad(bad, "merge 5 repeats merge 2", __LINE__);
    memcpy(c, b, n);
    c[20 + 8 * (size_t)t.n_merges + 4 + 3] = 'X'; /* <|bXgin_of_text|>: no BOS */
    fix_checksum(c, n);
    spit(bad, c, n);
    expect_bad(bad, "no <|begin_of_text|> special token", __LINE__);
    memcpy(c, b, n);
    c[20 + 8 * (size_t)t.n_merges + 4 + 3] = 0;
    fix_checksum(c, n);
    spit(bad, c, n);
    expect_bad(bad, "special token 0 holds a NUL byte", __LINE__);
    memcpy(c, b, n);
    put32(c + 20 + 8 * (size_t)t.n_merges, 0);
    spit(bad, c, n);
    expect_bad(bad, "special token 0 has length 0", __LINE__);
    /* the good file still loads */
    Bpe u;
    EXPECT(bpe_load(&u, good, &e) == 0, "good file: %s", e.msg);
    bpe_free(&u);
    remove(good);
    remove(bad);
    free(b);
    free(c);
    bpe_free(&t);
}

// ---------------------------------------------------------------------------
// speed

void bpe_speed(void) {
    Rng r;
    rng_seed(&r, 8);
    size_t n = 2 << 20;
    char *text = english(&r, n);
    n = strlen(text);
    const char *texts[1] = {text};
    size_t lens[1] = {n};
    Bpe t;
    Err e = {{0}};
    double t0 = time_now();
    /* 800: the 135-word synthetic language runs out of pairs near 870 */
    EXPECT(bpe_train(&t, texts, lens, 1, 800, &e) == 0, "train: %s", e.msg);
    double t1 = time_now();
    int32_t *ids = NULL;
    size_t cap = 0;
    bpe_encode(&t, text, 1000, &ids, &cap); /* warm the page cache and thread cache */
    double t2 = time_now();
    size_t m = bpe_encode(&t, text, n, &ids, &cap);
    double t3 = time_now();
    char *back = NULL;
    size_t bcap = 0;
    size_t k = bpe_decode(&t, ids, m, &back, &bcap);
    double t4 = time_now();
    EXPECT(k == n && memcmp(back, text, n) == 0, "2 MB text did not round-trip");
    double mbs = (double)n / 1e6 / (t3 - t2);
    printf("    bpe: train %.2f MB to vocab %d in %.2fs; encode %.1f MB/s (%.2f bytes/id), "
           "decode %.0f MB/s\n",
           (double)n / 1e6, t.vocab, t1 - t0, mbs, (double)n / (double)m,
           (double)n / 1e6 / (t4 - t3 > 1e-9 ? t4 - t3 : 1e-9));
    EXPECT(mbs > 1.0, "encode at %.2f MB/s", mbs);
    free(ids);
    free(back);
    free(text);
    bpe_free(&t);
}

// ---------------------------------------------------------------------------
// file versions

/* The text tests/fixtures/bpe_v1.tok was trained on (`llamac tokenize train
 * --vocab 320` before split patterns existed, one document: this x 3). */
static const char v1_text[] =
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness.  Numbers 1234 and 56, tabs\tand  double  spaces; UTF-8: na\xc3\xafve "
    "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87!!\n";

/* A version 1 file (llamac's own split) still loads, encodes as it did when
 * it was written, and training with that split writes it byte for byte. */
void bpe_v1_fixture(void) {
    Bpe t;
    Err e = {{0}};
    EXPECT(bpe_load(&t, "tests/fixtures/bpe_v1.tok", &e) == 0, "%s", e.msg);
    EXPECT(t.pattern == NULL && t.vocab == 320 && t.n_merges == 59, "v1 fields: %d %d", t.vocab, t.n_merges);
    const char probe[] = "It was the  best of times, 1234 caf\xc3\xa9 \xff\xfe wisdom!!\n";
    static const int32_t want[] = {300, 263, 262, 32, 270, 266, 116, 264, 288, 44, 32, 49, 50, 51, 52,
                                   294, 304, 195, 169, 32, 255, 254, 257, 105, 115, 273, 109, 299, 10};
    int32_t *ids = NULL;
    size_t cap = 0, n = bpe_encode(&t, probe, sizeof probe - 1, &ids, &cap);
    EXPECT(n == sizeof want / sizeof want[0] && memcmp(ids, want, sizeof want) == 0, "v1 ids changed (%zu)", n);
    char *text = xmalloc(3 * sizeof v1_text);
    size_t len = 0;
    for (int k = 0; k < 3; k++) memcpy(text + len, v1_text, sizeof v1_text - 1), len += sizeof v1_text - 1;
    const char *texts[1] = {text};
    Bpe u;
    EXPECT(bpe_train_split(&u, texts, &len, 1, 320, NULL, &e) == 0 && u.id == t.id, "v1 retrain: id %llx vs %llx",
           (unsigned long long)u.id, (unsigned long long)t.id);
    char path[256];
    tmp_path(path, sizeof path, "v1.tok");
    EXPECT(bpe_save(&u, path, &e) == 0, "%s", e.msg);
    size_t na, nb;
    uint8_t *a = slurp(path, &na), *b = slurp("tests/fixtures/bpe_v1.tok", &nb);
    EXPECT(na == nb && memcmp(a, b, na) == 0 && a[4] == 1, "a version 1 save differs from the fixture");
    /* the default split on the same text: a version 2 file with Llama 3's pattern */
    Bpe v;
    EXPECT(bpe_train(&v, texts, &len, 1, 320, &e) == 0 && v.pattern && strcmp(v.pattern, BPE_DEFAULT_PATTERN) == 0,
           "default pattern");
    EXPECT(v.id != u.id, "the pattern is not part of the id");
    EXPECT(bpe_save(&v, path, &e) == 0, "%s", e.msg);
    free(a);
    a = slurp(path, &na);
    Bpe w;
    EXPECT(a[4] == 2 && bpe_load(&w, path, &e) == 0 && w.id == v.id && strcmp(w.pattern, v.pattern) == 0,
           "version 2 round trip: %s", e.msg);
    /* "1234" is one chunk "123" + "4" under Llama 3's split, four under llamac's */
    n = bpe_encode(&w, "x 1234", 6, &ids, &cap);
    EXPECT(n >= 3 && ids[n - 1] == '4', "v2 digits: %zu ids", n);
    remove(path);
    bpe_free(&w);
    bpe_free(&v);
    bpe_free(&u);
    bpe_free(&t);
    free(a);
    free(b);
    free(ids);
    free(text);
}

/* Version 2's pattern field: every way it can be wrong */
void bpe_bad_files_v2(void) {
    char good[256], bad[256];
    tmp_path(good, sizeof good, "good2.tok");
    tmp_path(bad, sizeof bad, "bad2.tok");
    Bpe t = train_english(300, 20000, 7);
    Err e = {{0}};
    LC_ASSERT(bpe_save(&t, good, &e) == 0);
    size_t n, np = strlen(BPE_DEFAULT_PATTERN);
    uint8_t *b = slurp(good, &n), *c = xmalloc(n + 16);
    size_t at = n - 8 - np - 4; /* the pattern's length field */
    EXPECT(b[4] == 2 && n == 20 + 8 * (size_t)t.n_merges + 4 * 5 + 17 + 15 + 19 + 17 + 10 + 4 + np + 8, "size %zu", n);
    size_t cuts[] = {at, at + 3, at + 4 + np / 2, n - 9};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        spit(bad, b, cuts[k]);
        expect_bad(bad, "truncated", __LINE__);
    }
    memcpy(c, b, n);
    c[at + 4 + 3] ^= 1; /* the pattern is covered by the checksum */
    spit(bad, c, n);
    expect_bad(bad, "corrupted (checksum mismatch)", __LINE__);
    memcpy(c, b, n);
    put32(c + at, 0);
    spit(bad, c, n);
    expect_bad(bad, "split pattern has length 0", __LINE__);
    memcpy(c, b, n);
    put32(c + at, BPE_MAX_PATTERN + 1);
    spit(bad, c, n);
    expect_bad(bad, "split pattern has length 4097", __LINE__);
    memcpy(c, b, n);
    c[at + 4 + 2] = 0;
    fix_checksum(c, n);
    spit(bad, c, n);
    expect_bad(bad, "split pattern holds a NUL byte", __LINE__);
    memcpy(c, b, n);
    c[at + 4] = '('; /* "((?i:..." never closes */
    c[at + 4 + 1] = '(';
    fix_checksum(c, n);
    spit(bad, c, n);
    expect_bad(bad, "bad split pattern (", __LINE__);
    const char *texts[1] = {"abc"};
    size_t lens[1] = {3};
    Bpe u;
    EXPECT(bpe_train_split(&u, texts, lens, 1, 300, "(", &e) == -1 && strstr(e.msg, "--pattern: bad split pattern ("),
           "bad --pattern: %s", e.msg);
    remove(good);
    remove(bad);
    free(b);
    free(c);
    bpe_free(&t);
}
