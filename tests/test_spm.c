/*
 * test_spm.c: the SentencePiece BPE tokenizer (data/spm.c) against the
 * sentencepiece library. scripts/spm_ref.py trains BPE models with it (the
 * Llama 2 settings; defaults without byte fallback; copies with UNUSED
 * pieces and without dummy prefix and whitespace escaping) and writes its
 * ids and decoded texts for the 1 MiB mixed test text (invalid UTF-8
 * included), hand-picked edge cases, 100 KB texts without spaces, random
 * slices, and decode-only id sequences: every id and every decoded byte
 * must match. Python and sentencepiece come from the venv
 * ${LLAMAC_VENV:-~/.cache/llamac-venv}, created and filled from
 * scripts/requirements-tok.txt when missing; without them these tests fail
 * with the reason, they never skip. Hand-built protobuf files check the
 * algorithm's corners and the bad-input errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../data/spm.h"
#include "test.h"
#include "tests.h"

// ---------------------------------------------------------------------------
// the reference files

static char ref_dir[1024];

/* Run scripts/spm_ref.py into <dir of the llamac binary>/spm_ref once per
 * process. Returns 0, or -1 after recording a failure. */
static int ref_ready(void) {
    static int state; /* 0 not run, 1 ok, -1 failed */
    if (state) {
        if (state < 0) EXPECT(0, "no sentencepiece reference (see above)");
        return state > 0 ? 0 : -1;
    }
    const char *slash = strrchr(test_llamac_path, '/');
    snprintf(ref_dir, sizeof ref_dir, "%.*s/spm_ref", slash ? (int)(slash - test_llamac_path) : 1,
             slash ? test_llamac_path : ".");
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && ( VENV=\"${LLAMAC_VENV:-$HOME/.cache/llamac-venv}\"; PY=\"$VENV/bin/python\"; "
             "{ [ -x \"$PY\" ] || python3 -m venv \"$VENV\"; } && "
             "{ \"$PY\" -c 'import sentencepiece' 2>/dev/null || "
             "\"$PY\" -m pip install -q -r scripts/requirements-tok.txt; } && "
             "\"$PY\" scripts/spm_ref.py '%s' ) >'%s.log' 2>&1",
             ref_dir, ref_dir, ref_dir);
    double t0 = time_now();
    int st = system(cmd);
    if (st != 0) {
        char line[512] = "", last[512] = "";
        snprintf(cmd, sizeof cmd, "%s.log", ref_dir);
        FILE *f = fopen(cmd, "r");
        while (f && fgets(line, sizeof line, f)) memcpy(last, line, sizeof last);
        if (f) fclose(f);
        last[strcspn(last, "\n")] = '\0';
        EXPECT(0, "scripts/spm_ref.py with sentencepiece failed (exit %d; %s.log: %s): CI installs "
               "scripts/requirements-tok.txt into the venv",
               WIFEXITED(st) ? WEXITSTATUS(st) : -1, ref_dir, last);
        state = -1;
        return -1;
    }
    printf("    spm_ref.py: models and references in %s (%.1fs)\n", ref_dir, time_now() - t0);
    state = 1;
    return 0;
}

static char *ref_path(const char *name) {
    static char p[4200];
    snprintf(p, sizeof p, "%s/%s", ref_dir, name);
    return p;
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = xmalloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* A cursor over a .cases file (format in scripts/spm_ref.py). */
typedef struct {
    const char *p, *end;
    int bad;
} Cur;

static uint32_t cur_u32(Cur *c) {
    uint32_t v = 0;
    if (c->end - c->p < 4) {
        c->bad = 1;
        return 0;
    }
    memcpy(&v, c->p, 4); /* little-endian host (x86-64, as the rest of llamac) */
    c->p += 4;
    return v;
}

static const char *cur_bytes(Cur *c, size_t n) {
    if ((size_t)(c->end - c->p) < n) {
        c->bad = 1;
        return NULL;
    }
    const char *q = c->p;
    c->p += n;
    return q;
}

/* First index where a[0..na) and b[0..nb) differ (min(na, nb) if one is a prefix). */
static size_t first_diff_i32(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Check every case of NAME.cases with NAME.model. */
static void check_model(const char *name, Spm *s) {
    if (ref_ready()) return;
    char file[64];
    Err e = {{0}};
    snprintf(file, sizeof file, "%s.model", name);
    int rc = spm_load(s, ref_path(file), &e);
    EXPECT(rc == 0, "load: %s", e.msg);
    if (rc) return;
    snprintf(file, sizeof file, "%s.cases", name);
    size_t n = 0;
    char *buf = read_all(ref_path(file), &n);
    EXPECT(buf != NULL, "cannot read %s", ref_path(file));
    if (!buf) return;
    Cur c = {buf, buf + n, 0};
    const char *magic = cur_bytes(&c, 4);
    EXPECT(magic && memcmp(magic, "SPMR", 4) == 0 && cur_u32(&c) == 1, "%s: bad header", file);
    int32_t *ids = NULL, *want = NULL;
    char *dec = NULL;
    size_t icap = 0, dcap = 0, wcap = 0;
    int bad_enc = 0, bad_dec = 0;
    uint32_t ncase = cur_u32(&c), ndec = 0;
    for (uint32_t k = 0; k < ncase && !c.bad; k++) {
        uint32_t tl = cur_u32(&c);
        const char *text = cur_bytes(&c, tl);
        uint32_t ni = cur_u32(&c);
        if (ni > wcap) want = xrealloc(want, (wcap = ni) * sizeof *want);
        const char *raw = cur_bytes(&c, (size_t)ni * 4);
        uint32_t dl = cur_u32(&c);
        const char *wdec = cur_bytes(&c, dl);
        if (c.bad) break;
        memcpy(want, raw, (size_t)ni * 4);
        size_t m = spm_encode(s, text, tl, &ids, &icap);
        if ((m != ni || memcmp(ids, want, m * 4) != 0) && bad_enc++ < 3) {
            size_t i = first_diff_i32(ids, m, want, ni);
            EXPECT(0, "%s case %u (%u bytes): %zu ids, sentencepiece %u; first difference at %zu: "
                   "%d '%s' vs %d '%s'", name, k, tl, m, ni, i, i < m ? ids[i] : -1,
                   i < m ? spm_piece(s, ids[i], NULL) : "", i < ni ? want[i] : -1,
                   i < ni ? spm_piece(s, want[i], NULL) : "");
        }
        size_t d = spm_decode(s, want, ni, &dec, &dcap);
        if ((d != dl || memcmp(dec, wdec, dl) != 0) && bad_dec++ < 3)
            EXPECT(0, "%s case %u: decode gives %zu bytes, sentencepiece %u", name, k, d, dl);
    }
    ndec = cur_u32(&c);
    for (uint32_t k = 0; k < ndec && !c.bad; k++) {
        uint32_t ni = cur_u32(&c);
        const char *raw = cur_bytes(&c, (size_t)ni * 4);
        uint32_t dl = cur_u32(&c);
        const char *wdec = cur_bytes(&c, dl);
        if (c.bad) break;
        if (ni > wcap) want = xrealloc(want, (wcap = ni) * sizeof *want);
        memcpy(want, raw, (size_t)ni * 4);
        size_t d = spm_decode(s, want, ni, &dec, &dcap);
        if ((d != dl || memcmp(dec, wdec, dl) != 0) && bad_dec++ < 3)
            EXPECT(0, "%s decode case %u (%u ids, first %d): %zu bytes '%.*s', sentencepiece %u '%.*s'",
                   name, k, ni, ni ? want[0] : -1, d, d == (size_t)-1 ? 0 : (int)d, dec, dl, (int)dl, wdec);
    }
    EXPECT(!c.bad && c.p == c.end, "%s: malformed or short file", file);
    EXPECT(ncase > 100 && ndec > 100, "%s: only %u encode and %u decode cases", file, ncase, ndec);
    EXPECT(spm_decode(s, (int32_t[]){s->vocab}, 1, &dec, &dcap) == (size_t)-1, "id vocab accepted");
    EXPECT(spm_decode(s, (int32_t[]){-1}, 1, &dec, &dcap) == (size_t)-1, "id -1 accepted");
    printf("    %s: %u texts and %u id sequences identical to sentencepiece\n", name, ncase, ndec);
    free(ids);
    free(want);
    free(dec);
    free(buf);
}

void spm_ref_llama(void) {
    Spm s;
    memset(&s, 0, sizeof s);
    check_model("llama", &s);
    if (!s.vocab) return;
    EXPECT(s.vocab == 4000 && s.unk == 0 && s.bos == 1 && s.eos == 2 && s.pad == -1,
           "vocab %d unk %d bos %d eos %d pad %d", s.vocab, s.unk, s.bos, s.eos, s.pad);
    EXPECT(s.byte_fallback && s.split_digits && s.add_dummy_prefix && !s.remove_extra_whitespaces &&
           s.escape_whitespaces, "trainer/normalizer flags");
    EXPECT(spm_piece_id(&s, "<|user|>") == 3 && spm_piece_id(&s, "llamac") == 4 &&
           spm_piece_id(&s, "<0x0A>") == s.byte_id['\n'] && spm_piece_id(&s, "no such piece") == -1,
           "piece ids");
    size_t len = 0;
    EXPECT(spm_piece(&s, 1, &len) && strcmp(spm_piece(&s, 1, &len), "<s>") == 0 && len == 3 &&
           spm_piece(&s, 4000, &len) == NULL && len == 0, "spm_piece");
    spm_free(&s);
}

void spm_ref_plain(void) {
    Spm s;
    memset(&s, 0, sizeof s);
    check_model("plain", &s);
    if (s.vocab)
        EXPECT(!s.byte_fallback && s.remove_extra_whitespaces && s.byte_id[0] == -1, "plain flags");
    spm_free(&s);
}

void spm_ref_raw(void) {
    Spm s;
    memset(&s, 0, sizeof s);
    check_model("raw", &s);
    EXPECT(!s.vocab || (!s.add_dummy_prefix && !s.escape_whitespaces), "raw.model flags");
    spm_free(&s);
}

void spm_ref_unused(void) {
    Spm s;
    memset(&s, 0, sizeof s);
    check_model("unused", &s);
    EXPECT(!s.vocab || s.has_unused, "no UNUSED piece in unused.model");
    spm_free(&s);
}

// ---------------------------------------------------------------------------
// hand-built models: a protobuf writer

typedef struct {
    char b[4096];
    size_t n;
} Buf;

static void put_varint(Buf *b, uint64_t v) {
    do {
        b->b[b->n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void put_len(Buf *b, int field, const void *p, size_t n) {
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void put_int(Buf *b, int field, uint64_t v) {
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, v);
}
static void put_piece(Buf *b, const char *piece, float score, int type) {
    Buf p = {.n = 0};
    put_len(&p, 1, piece, strlen(piece));
    put_varint(&p, 2 << 3 | 5);
    memcpy(p.b + p.n, &score, 4);
    p.n += 4;
    if (type != SPM_NORMAL) put_int(&p, 3, (uint64_t)type);
    put_len(b, 1, p.b, p.n);
}

/* A model: pieces "<unk>" "<s>" "</s>" then the given ones; trainer_spec and
 * normalizer_spec from the given encoded fields. */
static void tiny_model(Buf *m, const char *const *pieces, const float *scores, const int *types, int n,
                       const Buf *trainer, const Buf *norm) {
    m->n = 0;
    put_piece(m, "<unk>", 0, SPM_UNKNOWN);
    put_piece(m, "<s>", 0, SPM_CONTROL);
    put_piece(m, "</s>", 0, SPM_CONTROL);
    for (int i = 0; i < n; i++) put_piece(m, pieces[i], scores[i], types ? types[i] : SPM_NORMAL);
    put_len(m, 2, trainer->b, trainer->n);
    put_len(m, 3, norm->b, norm->n);
}

static const char *tmp_path(const char *name) {
    static char p[4200];
    const char *slash = strrchr(test_llamac_path, '/');
    snprintf(p, sizeof p, "%.*s/spm_%s", slash ? (int)(slash - test_llamac_path) : 1,
             slash ? test_llamac_path : ".", name);
    return p;
}

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t k = fwrite(p, 1, n, f);
    return fclose(f) == 0 && k == n ? 0 : -1;
}

/* Load m (written to a temporary file) and return spm_load's result. */
static int load_buf(Spm *s, const Buf *m, const char *name, Err *e) {
    const char *path = tmp_path(name);
    EXPECT(write_file(path, m->b, m->n) == 0, "cannot write %s", path);
    return spm_load(s, path, e);
}

/* Encode text and compare with the pieces spelled in want (space separated). */
static void expect_pieces(const Spm *s, const char *text, const char *want) {
    int32_t *ids = NULL;
    size_t cap = 0, n = spm_encode(s, text, strlen(text), &ids, &cap);
    char got[512] = "";
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof got - 32; i++)
        k += (size_t)snprintf(got + k, sizeof got - k, "%s%s", i ? " " : "", spm_piece(s, ids[i], NULL));
    EXPECT(strcmp(got, want) == 0, "'%s' -> '%s', want '%s'", text, got, want);
    free(ids);
}

void spm_tiny(void) {
    Buf tr = {.n = 0}, nm = {.n = 0}, m;
    put_int(&tr, 3, 2); /* BPE */
    put_int(&nm, 3, 0); /* no dummy prefix */
    put_int(&nm, 4, 0); /* keep whitespace */
    static const char *const pieces[] = {"a", "b", "c", "aa", "ab", "bc", "ca", "x", "xx", "<u>", "\xe2\x96\x81"};
    static const float scores[] = {-1, -2, -3, -4, -5, -5, -6, -7, 9, 0, -8};
    static const int types[] = {1, 1, 1, 1, 1, 1, 1, 1, SPM_UNUSED, SPM_USER_DEFINED, 1};
    tiny_model(&m, pieces, scores, types, 11, &tr, &nm);
    Spm s;
    Err e = {{0}};
    EXPECT(load_buf(&s, &m, "tiny.model", &e) == 0, "tiny: %s", e.msg);
    if (!s.vocab) return;
    EXPECT(s.unk == 0 && s.bos == 1 && s.eos == 2 && s.pad == -1 && !s.byte_fallback, "tiny ids");
    expect_pieces(&s, "aaa", "aa a");         /* equal scores: the leftmost pair first */
    expect_pieces(&s, "abc", "ab c");         /* "ab" and "bc" tie at -5: leftmost */
    expect_pieces(&s, "cabc", "c ab c");      /* "ab" beats "ca" (-6) and, leftmost, "bc" */
    expect_pieces(&s, "xx", "x x");           /* UNUSED: merged, then split back */
    expect_pieces(&s, "a<u>b", "a <u> b");    /* user-defined: one symbol, never merged */
    expect_pieces(&s, "a b", "a \xe2\x96\x81 b");
    expect_pieces(&s, "aqqzb", "a <unk> b");  /* no byte fallback: one <unk> per run */
    expect_pieces(&s, "", "");
    spm_free(&s);
}

void spm_bad_files(void) {
    Spm s;
    Err e = {{0}};
    static const struct { const char *name, *want; } cases[] = {
        {"nonexistent.model", "cannot open"},
        {"empty.model", "empty file"},
        {"json.model", "not a SentencePiece model (bad protobuf)"},
        {"truncated.model", "truncated"},
        {"cut.model", "truncated or not a SentencePiece model (no trainer_spec)"},
        {"unigram.model", "model type UNIGRAM not supported (supported: BPE)"},
        {"nfkc.model", "normalization rule 'nmt_nfkc' not supported"},
        {"suffix.model", "treat_whitespace_as_suffix not supported"},
        {"dup.model", "piece 4 duplicates piece 3"},
        {"nounk.model", "no unknown piece"},
        {"bytes.model", "byte_fallback is on but piece <0x00> is missing"},
        {"group.model", "not a SentencePiece model (bad protobuf)"},
    };
    /* build the files */
    Buf tr = {.n = 0}, nm = {.n = 0}, m;
    put_int(&tr, 3, 2);
    static const char *const ab[] = {"a", "b"};
    static const float sc[] = {0, 0};
    tiny_model(&m, ab, sc, NULL, 2, &tr, &nm);
    int ok = write_file(tmp_path("empty.model"), "", 0) == 0;
    const char *json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}\n";
    ok &= write_file(tmp_path("json.model"), json, strlen(json)) == 0;
    ok &= write_file(tmp_path("truncated.model"), m.b, m.n - 3) == 0;
    Buf unk = {.n = 0}, bos = {.n = 0};
    put_piece(&unk, "<unk>", 0, SPM_UNKNOWN);
    put_piece(&bos, "<s>", 0, SPM_CONTROL);
    ok &= write_file(tmp_path("cut.model"), m.b, unk.n + bos.n) == 0; /* after two whole pieces */
    Buf bad = tr;
    put_int(&bad, 24, 1);
    tiny_model(&m, ab, sc, NULL, 2, &bad, &nm);
    ok &= write_file(tmp_path("suffix.model"), m.b, m.n) == 0;
    Buf nf = {.n = 0};
    put_len(&nf, 1, "nmt_nfkc", 8);
    put_len(&nf, 2, "\x04\x00\x00\x00xxxxyy", 10);
    tiny_model(&m, ab, sc, NULL, 2, &tr, &nf);
    ok &= write_file(tmp_path("nfkc.model"), m.b, m.n) == 0;
    static const char *const aa[] = {"a", "a"};
    tiny_model(&m, aa, sc, NULL, 2, &tr, &nm);
    ok &= write_file(tmp_path("dup.model"), m.b, m.n) == 0;
    tiny_model(&m, ab, sc, NULL, 2, &tr, &nm);
    ok &= write_file(tmp_path("nounk.model"), m.b + unk.n, m.n - unk.n) == 0; /* drop <unk> */
    bad = tr;
    put_int(&bad, 35, 1);
    tiny_model(&m, ab, sc, NULL, 2, &bad, &nm);
    ok &= write_file(tmp_path("bytes.model"), m.b, m.n) == 0;
    tiny_model(&m, ab, sc, NULL, 2, &tr, &nm);
    m.b[m.n++] = (char)(7 << 3 | 3); /* a start-group field */
    ok &= write_file(tmp_path("group.model"), m.b, m.n) == 0;
    EXPECT(ok, "cannot write the bad files");
    EXPECT(load_buf(&s, &m, "ok.model", &e) == -1, "a model ending in a group loaded");
    tiny_model(&m, ab, sc, NULL, 2, &tr, &nm);
    EXPECT(load_buf(&s, &m, "ok.model", &e) == 0, "the good tiny model: %s", e.msg);
    spm_free(&s);
    int have_ref = ref_ready() == 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int from_ref = strcmp(cases[i].name, "unigram.model") == 0;
        if (from_ref && !have_ref) continue;
        const char *path = from_ref ? ref_path(cases[i].name) : tmp_path(cases[i].name);
        memset(&e, 0, sizeof e);
        int rc = spm_load(&s, path, &e);
        EXPECT(rc == -1 && strstr(e.msg, path) == e.msg && strstr(e.msg, cases[i].want) &&
                   !strchr(e.msg, '\n'),
               "%s: rc %d, '%s', want '%s'", cases[i].name, rc, e.msg, cases[i].want);
        EXPECT(s.vocab == 0 && s.map == NULL, "%s: struct not zeroed after the error", cases[i].name);
    }
    /* the real model cut in the middle of its pieces */
    if (have_ref) {
        size_t n = 0;
        char *b = read_all(ref_path("llama.model"), &n);
        EXPECT(b && write_file(tmp_path("half.model"), b, n / 2) == 0, "cannot copy llama.model");
        int rc = spm_load(&s, tmp_path("half.model"), &e);
        EXPECT(rc == -1 && strstr(e.msg, "truncated"), "half of llama.model: '%s'", e.msg);
        free(b);
    }
}

void spm_speed(void) {
    if (ref_ready()) return;
    Spm s;
    Err e = {{0}};
    if (spm_load(&s, ref_path("llama.model"), &e)) {
        EXPECT(0, "%s", e.msg);
        return;
    }
    /* the 1 MiB text is the first case of llama.cases */
    size_t n = 0;
    char *buf = read_all(ref_path("llama.cases"), &n);
    EXPECT(buf && n > 16, "cannot read llama.cases");
    if (!buf) return;
    uint32_t tl;
    memcpy(&tl, buf + 12, 4);
    const char *text = buf + 16;
    int32_t *ids = NULL;
    size_t cap = 0, m = 0;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = time_now();
        m = spm_encode(&s, text, tl, &ids, &cap);
        double dt = time_now() - t0;
        if (dt < best) best = dt;
    }
    double ours = tl / best / 1e6, theirs = 0;
    FILE *f = fopen(ref_path("speed.txt"), "r");
    EXPECT(f && fscanf(f, "sentencepiece_mb_s %lf", &theirs) == 1, "no speed.txt");
    if (f) fclose(f);
    /* 100 KB without a space: one chunk; O(n log n), not O(n^2) */
    char *word = xmalloc(100000);
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 100000; i++) word[i] = (char)('a' + rng_u64(&r) % 26);
    double t0 = time_now();
    spm_encode(&s, word, 100000, &ids, &cap);
    double tw = time_now() - t0;
    printf("    spm encode (1 thread, best of 5): %.1f MB/s, %zu ids for %.2f MB; sentencepiece "
           "(Python, best of 3): %.1f MB/s; ratio %.1fx; 100 KB without spaces: %.1f ms\n",
           ours, m, tl / 1e6, theirs, theirs > 0 ? ours / theirs : 0.0, tw * 1e3);
    EXPECT(ours >= theirs, "spm_encode %.2f MB/s slower than sentencepiece's %.2f MB/s", ours, theirs);
    EXPECT(tw < 0.5, "100 KB without spaces took %.2fs", tw);
    free(word);
    free(ids);
    free(buf);
    spm_free(&s);
}
