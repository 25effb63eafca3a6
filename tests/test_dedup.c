/*
 * test_dedup.c: llamac data dedup and the quality classifier (data/dedup.h,
 * data/qclass.h, train/cmd/cmd_data_dedup.c, cmd_data_quality.c).
 *
 * Values pinned against datatrove 0.10.1 / numpy / xxhash (normalised
 * text, words, XXH64, the first permutation coefficients) so a change that
 * breaks the datatrove match fails here without the reference venv
 * (scripts/test_dedup_ref.py checks whole corpora). MinHash behaviour is
 * checked against the band formula on crafted documents of known Jaccard
 * similarity; the classifier on a synthetic split (ordered phrases vs the
 * same words shuffled, which only bigram features separate).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/dedup.h"
#include "../data/qclass.h"
#include "test.h"
#include "tests.h"

static void tpath(char *out, size_t n, const char *name) {
    snprintf(out, n, "/tmp/llamac_test_dedup_%d_%s", (int)getpid(), name);
}

// ----------------------------------------------------------------------------
// datatrove's text, hash and permutations

void dedup_datatrove_pins(void) {
    /* simplify_text and spaCy's words, as datatrove 0.10.1 computes them */
    static const struct {
        const char *in, *norm, *words;
    } cases[] = {
        {"\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 fa\xc3\xa7" "ade \xe2\x80\x94 \xe2\x80\x9cquoted\xe2\x80\x9d 3.14,159 and 1,000 x "
         "12km; He cannot\xe2\x80\x94won\xe2\x80\x99t\xe2\x80\x94go. \xc4\xb0stanbul \xd0\x81\xd0\xbb\xd0\xba\xd0\xb0",
         "unicode facade quoted 0 0 and 0 x 0km he cannot won t go istanbul \xd0\xb5\xd0\xbb\xd0\xba\xd0\xb0",
         "unicode facade quoted 0 0 and 0 x 0 km he can not won t go istanbul \xd0\xb5\xd0\xbb\xd0\xba\xd0\xb0"},
        {"Gonna see 5 kg at 10am, I'm sure.", "gonna see 0 kg at 0am i m sure", "gon na see 0 kg at 0am i m sure"},
        {"  \t\n ", "", ""},
    };
    char norm[512], words[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = dedup_normalize(cases[i].in, strlen(cases[i].in), norm);
        EXPECT(n == strlen(norm) && strcmp(norm, cases[i].norm) == 0, "case %zu: normalised '%s'", i, norm);
        dedup_words(norm, n, words);
        EXPECT(strcmp(words, cases[i].words) == 0, "case %zu: words '%s'", i, words);
    }
    /* xxhash.xxh64_intdigest */
    const char *fox = "the quick brown fox jumps over the lazy dog and more";
    EXPECT(dedup_xxh64("", 0, 0) == 17241709254077376921ULL, "xxh64('')");
    EXPECT(dedup_xxh64(fox, strlen(fox), 0) == 11438897666172433447ULL, "xxh64(fox)");
    /* np.random.RandomState(1).randint(1, 2**61-1, uint64, 112), then (0, 2**61-1) */
    MinhashParams p;
    minhash_params_init(&p, 5, 14, 8, 1);
    EXPECT(p.a[0] == 775169054918279404ULL && p.b[0] == 1062448801025099917ULL && p.a[3] == 965365488286768774ULL &&
               p.b[111] == 1097409548522419201ULL,
           "permutations: a0 %llu b0 %llu", (unsigned long long)p.a[0], (unsigned long long)p.b[0]);
    minhash_params_free(&p);
}

// ----------------------------------------------------------------------------
// MinHash against the band formula

/* word K spelt in letters (digits would all normalise to "0") */
static size_t word(char *out, char lead, int k) {
    size_t o = 0;
    out[o++] = lead;
    do out[o++] = (char)('a' + k % 26), k /= 26;
    while (k);
    out[o++] = ' ';
    return o;
}

/* n distinct words (K from base), with every step-th word (from offset)
 * replaced by a fresh one (lead z, not q: no spaCy exception starts with either); step 0: none */
static size_t crafted(char *out, int n, int base, int step, int offset, int fresh) {
    size_t o = 0;
    for (int i = 0; i < n; i++) o += step && i % step == offset ? word(out + o, 'z', fresh + i) : word(out + o, 'q', base + i);
    out[o] = 0;
    return o;
}

void dedup_minhash_bands(void) {
    MinhashParams p;
    minhash_params_init(&p, 5, 14, 8, 1);
    MinhashScratch sc = {0};
    enum { NP = 20, NW = 400, K = 14 * 8 };
    static char text[16384];
    static uint64_t sig[2 * NP][K], band[2 * NP * 8];
    uint32_t doc[2 * NP];
    /* pairs 0..9: one word in 400 replaced (Jaccard 391/401 = 0.975: collide
     * with probability 1 - (1 - 0.975^8)^14 > 0.999999); pairs 10..19: every
     * 4th word replaced (no 5-gram survives: Jaccard 0, never collide) */
    double est_hi = 0, est_lo = 0;
    for (int k = 0; k < NP; k++) {
        int base = 1000 * k;
        size_t n = crafted(text, NW, base, 0, 0, 0);
        EXPECT(minhash_signature(&p, text, n, sig[2 * k], &sc) == NW - 4, "shingles");
        n = k < 10 ? crafted(text, NW, base, NW, 200, 500000) : crafted(text, NW, base, 4, 1, 500000);
        EXPECT(minhash_signature(&p, text, n, sig[2 * k + 1], &sc) == NW - 4, "shingles");
        int same = 0;
        for (int h = 0; h < K; h++) same += sig[2 * k][h] == sig[2 * k + 1][h];
        if (k < 10) est_hi += same / (double)K / 10;
        else est_lo += same / (double)K / 10;
    }
    /* the fraction of equal minhashes estimates the Jaccard similarity */
    EXPECT_NEAR(est_hi, 391.0 / 401.0, 0.05);
    EXPECT_NEAR(est_lo, 0.0, 0.02);
    EXPECT(minhash_pair_prob(0.975, 14, 8) > 0.999999 && minhash_pair_prob(0.3, 14, 8) < 0.001, "band formula");
    DedupUF u;
    dedup_uf_init(&u, 2 * NP);
    for (int b = 0; b < 14; b++) {
        for (int i = 0; i < 2 * NP; i++) {
            memcpy(band + i * 8, sig[i] + b * 8, 8 * sizeof(uint64_t));
            doc[i] = (uint32_t)i;
        }
        minhash_cluster_bucket(band, doc, 2 * NP, 8, &u);
    }
    for (int k = 0; k < NP; k++) {
        int joined = dedup_uf_find(&u, (uint32_t)(2 * k)) == dedup_uf_find(&u, (uint32_t)(2 * k + 1));
        EXPECT(joined == (k < 10), "pair %d: joined %d", k, joined);
        if (k < 10) EXPECT(dedup_uf_find(&u, (uint32_t)(2 * k)) == (uint32_t)(2 * k), "pair %d: the first is kept", k);
    }
    for (int k = 1; k < NP; k++) EXPECT(dedup_uf_find(&u, 0) != dedup_uf_find(&u, (uint32_t)(2 * k)), "pairs apart");
    dedup_uf_free(&u);
    /* a signature does not depend on the scratch's history */
    MinhashScratch fresh = {0};
    uint64_t again[K];
    size_t n = crafted(text, NW, 0, 0, 0, 0);
    minhash_signature(&p, text, n, again, &fresh);
    EXPECT(memcmp(again, sig[0], sizeof again) == 0, "signature with a fresh scratch");
    EXPECT(minhash_signature(&p, "too few words here", 18, again, &fresh) == 0, "under 5 words: no signature");
    minhash_scratch_free(&fresh);
    minhash_scratch_free(&sc);
    minhash_params_free(&p);
}

// ----------------------------------------------------------------------------
// llamac data dedup


void dedup_cli(void) {
    char in[256], out[256], out2[256], cl[256], cl2[256];
    tpath(in, sizeof in, "in.jsonl"), tpath(out, sizeof out, "out.jsonl"), tpath(out2, sizeof out2, "out2.jsonl");
    tpath(cl, sizeof cl, "cl.jsonl"), tpath(cl2, sizeof cl2, "cl2.jsonl");
    FILE *f = fopen(in, "w");
    LC_ASSERT(f);
    static char text[16384];
    /* 0: A; 1: B; 2: A again in capitals with other punctuation (exact);
     * 3: B with one word changed (near); 4: C; 5: short; 6: A exactly;
     * then 60 distinct documents */
    crafted(text, 300, 0, 0, 0, 0);
    fprintf(f, "{\"id\": 0, \"text\": \"%s.\"}\n", text);
    crafted(text, 300, 10000, 0, 0, 0);
    fprintf(f, "{\"id\": 1, \"text\": \"%s\"}\n", text);
    crafted(text, 300, 0, 0, 0, 0);
    for (char *c = text; *c; c++) *c = *c == 'q' ? 'Q' : *c == ' ' ? ',' : *c; /* the same after normalisation */
    fprintf(f, "{\"id\": 2, \"text\": \"  %s!\"}\n", text);
    crafted(text, 300, 10000, 300, 150, 900000);
    fprintf(f, "{\"id\": 3, \"text\": \"%s\"}\n", text);
    crafted(text, 300, 20000, 0, 0, 0);
    fprintf(f, "{\"id\": 4, \"text\": \"%s\"}\n", text);
    fprintf(f, "{\"id\": 5, \"text\": \"four words only here\"}\n");
    crafted(text, 300, 0, 0, 0, 0);
    fprintf(f, "{\"id\": 6, \"text\": \"%s.\"}\n", text);
    for (int k = 0; k < 60; k++) {
        crafted(text, 50, 100000 + 1000 * k, 0, 0, 0);
        fprintf(f, "{\"id\": %d, \"text\": \"%s\"}\n", 7 + k, text);
    }
    fclose(f);
    int rc = test_llamac("data dedup --input %s --out %s --clusters %s", in, out, cl);
    EXPECT(rc == 0, "dedup: %s", test_err);
    EXPECT(strstr(test_out, "67 documents in, 64 kept; dropped 2 exact duplicates, 1 near duplicates") != NULL,
           "counts: %s", test_out);
    EXPECT(strstr(test_out, "1 clusters, sizes 2 x1") && strstr(test_out, "1 documents under 5 words"), "clusters: %s",
           test_out);
    char *o = test_slurp(out), *c = test_slurp(cl);
    EXPECT(o && strncmp(o, "{\"id\": 0,", 9) == 0 && strstr(o, "{\"id\": 1,") && !strstr(o, "{\"id\": 2,") &&
               !strstr(o, "{\"id\": 3,") && strstr(o, "{\"id\": 4,") && strstr(o, "{\"id\": 5,") &&
               !strstr(o, "{\"id\": 6,") && strstr(o, "{\"id\": 66,"),
           "kept lines: first occurrences, unchanged, in order");
    EXPECT(c && strcmp(c, "{\"cluster\": 0, \"size\": 2, \"kept\": 1, \"docs\": [1, 3]}\n") == 0, "clusters file: %s",
           c ? c : "(none)");
    /* batches of about 1 KB (a few documents each) and one thread: the same
     * output and clusters */
    rc = test_llamac("data dedup --input %s --out %s --clusters %s --batch-mb 0.001", in, out2, cl2);
    char *o2 = test_slurp(out2), *c2 = test_slurp(cl2);
    EXPECT(rc == 0 && o2 && c2 && strcmp(o, o2) == 0 && strcmp(c, c2) == 0, "batch size changes the result");
    free(o2), free(c2);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s data dedup --input %s --out %s --clusters %s >/dev/null",
             test_llamac_path, in, out2, cl2);
    rc = system(cmd);
    o2 = test_slurp(out2), c2 = test_slurp(cl2);
    EXPECT(rc == 0 && o2 && c2 && strcmp(o, o2) == 0 && strcmp(c, c2) == 0, "thread count changes the result");
    free(o2), free(c2), free(o), free(c);
    /* exact only: 3 (near) stays */
    rc = test_llamac("data dedup --input %s --out %s --minhash 0", in, out);
    EXPECT(rc == 0 && strstr(test_out, "67 documents in, 65 kept; dropped 2 exact"), "exact only: %s", test_out);
    remove(in), remove(out), remove(out2), remove(cl), remove(cl2);
}

void dedup_cli_errors(void) {
    char in[256], out[256];
    tpath(in, sizeof in, "bad.jsonl"), tpath(out, sizeof out, "bad_out.jsonl");
    FILE *f = fopen(in, "wb");
    LC_ASSERT(f);
    fputs("{\"text\": \"one two three four five six\"}\n{\"text\": \"caf\xe9 bad\"}\n{\"body\": \"x\"}\n", f);
    fclose(f);
    int rc = test_llamac("data dedup --input %s --out %s", in, out);
    EXPECT(rc == 1 && strstr(test_err, "llamac: error: ") && strstr(test_err, ":2: not valid UTF-8") &&
               !strchr(strchr(test_err, '\n') ? strchr(test_err, '\n') + 1 : "", '\n'),
           "refuse: %s", test_err);
    rc = test_llamac("data dedup --input %s --out %s --bad-utf8 skip", in, out);
    EXPECT(rc == 1 && strstr(test_err, ":3: no string field 'text'"), "no text field: %s", test_err);
    rc = test_llamac("data dedup --input %s --out %s --bad-utf8 maybe", in, out);
    EXPECT(rc == 1 && strstr(test_err, "--bad-utf8: expected refuse or skip"), "flag: %s", test_err);
    rc = test_llamac("data dedup --input %s --out %s --exact 0 --minhash 0", in, out);
    EXPECT(rc == 1 && strstr(test_err, "nothing to do"), "both off: %s", test_err);
    f = fopen(in, "wb");
    fputs("{\"text\": \"one two three four five six\"}\n{\"text\": \"caf\xe9 bad\"}\n", f);
    fclose(f);
    rc = test_llamac("data dedup --input %s --out %s --bad-utf8 skip", in, out);
    EXPECT(rc == 0 && strstr(test_out, "1 documents in, 1 kept") && strstr(test_out, "skipped 1 with bad UTF-8"),
           "skip: %s", test_out);
    remove(in), remove(out);
}

// ----------------------------------------------------------------------------
// quality classifier

static const char *const phrases[] = {
    "the old king walked slowly", "into the great hall", "where his loyal servants waited", "for news of the war",
    "and the queen spoke softly", "of the long winter ahead", "while children played outside", "near the frozen river",
};
enum { NPHRASE = 8 };

/* append s and a space at out + o (NUL-terminated); returns the new length */
static size_t put_word(char *out, size_t o, const char *s) {
    size_t n = strlen(s);
    memcpy(out + o, s, n);
    out[o + n] = ' ', out[o + n + 1] = 0;
    return o + n + 1;
}

/* hq: random phrases, each in order; lq: the same words shuffled */
static size_t synth_doc(char *out, Rng *r, int hq) {
    char *w[256];
    int nw = 0;
    size_t o = 0;
    int np = 6 + (int)(rng_u64(r) % 6);
    for (int k = 0; k < np; k++) o = put_word(out, o, phrases[rng_u64(r) % NPHRASE]);
    if (hq) return o;
    static char tmp[8192];
    memcpy(tmp, out, o + 1);
    for (char *t = strtok(tmp, " "); t && nw < 256; t = strtok(NULL, " ")) w[nw++] = t;
    for (int i = nw - 1; i > 0; i--) {
        int j = (int)(rng_u64(r) % (uint64_t)(i + 1));
        char *x = w[i];
        w[i] = w[j], w[j] = x;
    }
    o = 0;
    for (int i = 0; i < nw; i++) o = put_word(out, o, w[i]);
    return o;
}

void qclass_synthetic(void) {
    /* 2000 training and 400 held-out documents, half shuffled; unigram
     * counts match between the classes, so accuracy needs the bigrams */
    QClass m;
    qclass_init(&m, 1u << 16, 16, 1);
    Rng r;
    rng_seed(&r, 7);
    static char text[8192];
    static uint32_t f[8192];
    float h[16];
    for (int epoch = 0; epoch < 3; epoch++) {
        rng_seed(&r, 7);
        for (int i = 0; i < 2000; i++) {
            int hq = (int)(rng_u64(&r) & 1);
            size_t n = synth_doc(text, &r, hq);
            size_t nf = qclass_features(text, n, m.buckets, f);
            qclass_sgd(&m, f, nf, hq, 1.0f * (3 - epoch) / 3, h);
        }
    }
    rng_seed(&r, 99);
    int ok = 0;
    double probs[400];
    for (int i = 0; i < 400; i++) {
        int hq = (int)(rng_u64(&r) & 1);
        size_t n = synth_doc(text, &r, hq);
        size_t nf = qclass_features(text, n, m.buckets, f);
        probs[i] = qclass_prob(&m, f, nf, h);
        ok += (probs[i] >= 0.5) == hq;
    }
    EXPECT(ok >= 380, "held-out accuracy %d/400 (want >= 95%%)", ok);
    /* save / load: identical scores; other versions and kinds refused */
    char path[256], bad[256];
    tpath(path, sizeof path, "model.qc"), tpath(bad, sizeof bad, "model_v2.qc");
    Err e = {{0}};
    EXPECT(qclass_save(&m, path, &e) == 0, "save: %s", e.msg);
    QClass l;
    EXPECT(qclass_load(&l, path, &e) == 0, "load: %s", e.msg);
    int same = 1;
    rng_seed(&r, 99);
    for (int i = 0; i < 400 && l.emb; i++) {
        int hq = (int)(rng_u64(&r) & 1);
        size_t n = synth_doc(text, &r, hq);
        size_t nf = qclass_features(text, n, l.buckets, f);
        same &= qclass_prob(&l, f, nf, h) == probs[i];
    }
    EXPECT(same, "scores after a save/load round trip differ");
    qclass_free(&l);
    size_t nb;
    FILE *fi = fopen(path, "rb");
    LC_ASSERT(fi);
    static unsigned char buf[1 << 22];
    nb = fread(buf, 1, sizeof buf, fi);
    fclose(fi);
    struct {
        size_t off;
        unsigned char v;
        size_t len;
        const char *msg;
    } cases[] = {
        {4, 2, nb, "quality classifier file version 2 (this llamac reads 1)"},
        {8, 3, nb, "not a binary hq/lq classifier (kind 3)"},
        {0, 'X', nb, "not a llamac quality classifier (bad magic)"},
        {0, 'L', nb - 3, "truncated"},
        {0, 'L', 10, "truncated (header)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        unsigned char keep = buf[cases[k].off];
        buf[cases[k].off] = cases[k].v;
        FILE *fo = fopen(bad, "wb");
        fwrite(buf, 1, cases[k].len, fo);
        fclose(fo);
        buf[cases[k].off] = keep;
        EXPECT(qclass_load(&l, bad, &e) == -1 && strstr(e.msg, cases[k].msg), "case %zu: %s", k, e.msg);
    }
    /* through the binary: one error line */
    char in[256], out[256];
    tpath(in, sizeof in, "q.jsonl"), tpath(out, sizeof out, "q_out.jsonl");
    test_put(in, "{\"text\": \"the old king walked slowly into the great hall\"}\n");
    buf[4] = 2;
    FILE *fo = fopen(bad, "wb");
    fwrite(buf, 1, nb, fo);
    fclose(fo);
    int rc = test_llamac("data quality --model %s --input %s --out %s", bad, in, out);
    EXPECT(rc == 1 && strstr(test_err, "llamac: error: ") && strstr(test_err, "version 2 (this llamac reads 1)") &&
               strchr(test_err, '\n') == test_err + strlen(test_err) - 1,
           "wrong version via the binary: %s", test_err);
    rc = test_llamac("data quality --model %s --input %s --out %s --threshold 0.5", path, in, out);
    EXPECT(rc == 0 && strstr(test_out, "1 documents in, 1 kept"), "quality: %s %s", test_out, test_err);
    remove(path), remove(bad), remove(in), remove(out);
    qclass_free(&m);
}

void qclass_cli(void) {
    /* quality-train on a labelled file: held-out accuracy printed per epoch */
    char in[256], model[256];
    tpath(in, sizeof in, "lab.jsonl"), tpath(model, sizeof model, "lab.qc");
    FILE *f = fopen(in, "w");
    LC_ASSERT(f);
    Rng r;
    rng_seed(&r, 3);
    static char text[8192];
    for (int i = 0; i < 600; i++) {
        int hq = i % 2;
        synth_doc(text, &r, hq);
        fprintf(f, "{\"text\": \"%s\", \"label\": %s}\n", text, i % 4 == 0 ? "\"lq\"" : i % 4 == 1 ? "\"hq\"" : hq ? "1" : "0");
    }
    fclose(f);
    int rc = test_llamac("data quality-train --input %s --out %s --epochs 3 --buckets 65536 --val-frac 0.2", in, model);
    const char *last = strstr(test_out, "epoch 3/3");
    const char *acc = last ? strstr(last, "held-out loss") : NULL;
    double a = acc ? atof(strstr(acc, "acc ") + 4) : 0;
    EXPECT(rc == 0 && a >= 0.9, "quality-train: held-out acc %.3f: %s %s", a, test_out, test_err);
    f = fopen(in, "w");
    fputs("{\"text\": \"a b\", \"label\": \"maybe\"}\n", f);
    fclose(f);
    rc = test_llamac("data quality-train --input %s --out %s", in, model);
    EXPECT(rc == 1 && strstr(test_err, ":1: label \"maybe\" is neither 'hq' nor 'lq'"), "bad label: %s", test_err);
    remove(in), remove(model);
}
