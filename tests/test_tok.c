/*
 * test_tok.c: the tokenizer interface (data/tok.h) against the reference
 * libraries. scripts/tok_ref.py trains a Llama 3 style byte-level BPE with
 * Hugging Face `tokenizers`, writes it as tokenizer.json (both merge forms)
 * and as a tiktoken file loaded by `tiktoken`, and records their ids and
 * decoded text for a 1 MiB mixed text (invalid UTF-8 included) and
 * hand-picked edge cases; llamac must agree exactly, for each kind, with
 * special tokens off and on. Also: llamac's own BPE behind the interface,
 * and every bad tokenizer file (in-process and through the binary).
 *
 * The Python side runs in the venv ${LLAMAC_VENV:-~/.cache/llamac-venv},
 * created and filled from scripts/requirements-tok.txt when the imports
 * fail; without Python or the packages the test fails, saying so.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/chat.h"
#include "../data/tok.h"
#include "test.h"
#include "tests.h"

static char dir[256];

/* the scratch folder (about 15 MB of references), removed at exit */
static void remove_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "test_tok: could not remove %s\n", dir);
}

static void make_dir(void) {
    if (dir[0]) return;
    snprintf(dir, sizeof dir, "/tmp/llamac_test_%d_tok", (int)getpid());
    mkdir(dir, 0755);
    atexit(remove_dir);
}

static const char *path_in(const char *name) {
    static char buf[16][512]; /* a few live at once */
    static int k;
    k = (k + 1) % 16;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    fwrite(data, 1, n, f);
    fclose(f);
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = xmalloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

/* Run scripts/tok_ref.py into dir once per process; 0 if it worked. */
static int ref_status = -1;
static int need_ref(void) {
    if (ref_status >= 0) return ref_status;
    make_dir();
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "V=\"${LLAMAC_VENV:-$HOME/.cache/llamac-venv}\"; P=\"$V/bin/python\"; "
             "if ! \"$P\" -c 'import tokenizers, tiktoken' >/dev/null 2>&1; then "
             "  echo 'test_tok: installing scripts/requirements-tok.txt into' \"$V\" >&2; "
             "  { [ -x \"$P\" ] || python3 -m venv \"$V\"; } && "
             "  \"$P\" -m pip install -q -r scripts/requirements-tok.txt >&2 || exit 3; "
             "fi; \"$P\" scripts/tok_ref.py %s >%s/ref.log 2>&1 || { cat %s/ref.log >&2; exit 4; }",
             dir, dir, dir);
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    if (rc == 3) printf("    tok_ref: Python or the packages of scripts/requirements-tok.txt are "
                        "unavailable (venv ${LLAMAC_VENV:-~/.cache/llamac-venv})\n");
    else if (rc) printf("    tok_ref: scripts/tok_ref.py failed (exit %d)\n", rc);
    ref_status = rc != 0;
    return ref_status;
}

/* A whole-file reader of tok_ref.py's u32/int32 records. */
typedef struct {
    char *buf;
    size_t n, pos;
} Rd;

static uint32_t rd_u32(Rd *r) {
    uint32_t v = 0;
    if (r->pos + 4 <= r->n) memcpy(&v, r->buf + r->pos, 4);
    r->pos += 4;
    return v;
}

static const char *rd_bytes(Rd *r, size_t k) {
    const char *p = r->buf + r->pos;
    r->pos += k;
    return r->pos <= r->n ? p : NULL;
}

/* printable excerpt of ids around i */
static void show_ids(const char *what, const int32_t *ids, size_t n, size_t i) {
    printf("      %s:", what);
    for (size_t k = i > 3 ? i - 3 : 0; k < n && k < i + 6; k++) printf(" %d", ids[k]);
    printf("\n");
}

/* compare llamac with one expect file; returns the number of bad cases */
static int compare(const Tokenizer *t, const char *tokname, const char *mode, Rd *cases,
                   int ncases) {
    char name[64];
    snprintf(name, sizeof name, "%s_%s.bin", tokname, mode);
    Rd ex = {0};
    ex.buf = read_file(path_in(name), &ex.n);
    EXPECT(ex.buf, "%s missing", name);
    if (!ex.buf) return 1;
    int special = strcmp(mode, "special") == 0, bad = 0;
    int lossy = strncmp(tokname, "hf", 2) == 0; /* tokenizers decodes to str, tiktoken to bytes */
    int32_t *ids = NULL, *ref = NULL;
    size_t cap = 0, dcap = 0, lcap = 0, rcap = 0;
    char *dec = NULL, *txt = NULL;
    cases->pos = 4;
    for (int c = 0; c < ncases; c++) {
        uint32_t len = rd_u32(cases);
        const char *text = rd_bytes(cases, len);
        uint32_t nref = rd_u32(&ex);
        const char *refb = rd_bytes(&ex, 4 * (size_t)nref);
        if (nref > rcap) ref = xrealloc(ref, (rcap = nref) * sizeof *ref);
        if (refb && nref) memcpy(ref, refb, 4 * (size_t)nref); /* the file's ints are unaligned */
        uint32_t dlen = rd_u32(&ex);
        const char *dref = rd_bytes(&ex, dlen);
        LC_ASSERT(text && refb && dref);
        size_t n = special ? tok_encode_special(t, text, len, &ids, &cap)
                           : tok_encode(t, text, len, &ids, &cap);
        size_t i = 0;
        while (i < n && i < nref && ids[i] == ref[i]) i++;
        if (i < n || i < nref) {
            if (bad++ < 3) {
                printf("    %s %s case %d (%u bytes): %zu ids, reference %u, first difference at id %zu\n",
                       tokname, mode, c, len, n, nref, i);
                show_ids("llamac   ", ids, n, i);
                show_ids("reference", ref, nref, i);
            }
            EXPECT(0, "%s %s case %d: ids differ", tokname, mode, c);
            continue;
        }
        size_t m = tok_decode(t, ids, n, &dec, &dcap), mraw = m;
        EXPECT(m != (size_t)-1, "decode failed");
        const char *got = dec;
        if (lossy) {
            m = tok_utf8_lossy(dec, m, &txt, &lcap);
            got = txt;
        }
        if (m != dlen || (m && memcmp(got, dref, m) != 0)) {
            bad++;
            EXPECT(0, "%s %s case %d: decoded text differs (%zu bytes, reference %u)", tokname,
                   mode, c, m, dlen);
        }
        /* streaming: token bytes concatenate to the decode */
        size_t off = 0, k = 0;
        int same = 1;
        for (size_t j = 0; j < n && same; j++) {
            const char *p = tok_token_bytes(t, ids[j], &k);
            same = p && off + k <= mraw && memcmp(dec + off, p, k) == 0;
            off += k;
        }
        same = same && off == mraw;
        EXPECT(same, "%s case %d: token bytes do not concatenate to the decoded bytes", tokname, c);
    }
    free(ids);
    free(ref);
    free(dec);
    free(txt);
    free(ex.buf);
    return bad;
}

void tok_reference(void) {
    if (need_ref()) {
        EXPECT(0, "the reference tokenizers could not run (see above); CI installs them");
        return;
    }
    Rd cases = {0};
    cases.buf = read_file(path_in("cases.bin"), &cases.n);
    EXPECT(cases.buf, "cases.bin missing");
    if (!cases.buf) return;
    int ncases = (int)rd_u32(&cases);
    static const struct {
        const char *file, *name;
        TokKind kind;
    } toks[] = {
        {"tokenizer.json", "hf", TOK_HF},
        {"tokenizer_str.json", "hfstr", TOK_HF},
        {"tokenizer_gpt2.json", "hfgpt2", TOK_HF},
        {"llama3.tiktoken", "tiktoken", TOK_TIKTOKEN},
    };
    for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
        Tokenizer t;
        Err e = {{0}};
        double t0 = time_now();
        int rc = tok_load(&t, path_in(toks[k].file), &e);
        double t1 = time_now();
        EXPECT(rc == 0, "load %s: %s", toks[k].file, e.msg);
        if (rc) continue;
        EXPECT(t.kind == toks[k].kind, "%s detected as %s", toks[k].file, tok_kind_name(t.kind));
        EXPECT(t.vocab == 3256 + 256 + (t.kind == TOK_HF ? 3 : 0), "%s: vocab %d", toks[k].file, t.vocab);
        EXPECT(t.bos == 3256 && t.eos == 3257 && t.eot == 3256 + 9, "%s: bos %d eos %d eot %d",
               toks[k].file, t.bos, t.eos, t.eot);
        EXPECT(tok_special_id(&t, "<|start_header_id|>") == 3256 + 6 &&
               tok_special_id(&t, "<|reserved_special_token_250|>") == 3256 + 255 &&
               tok_special_id(&t, "<|reserved_special_token_251|>") == -1 &&
               tok_special_id(&t, "<|nope|>") == -1, "%s: special ids", toks[k].file);
        int bad = compare(&t, toks[k].name, "plain", &cases, ncases);
        bad += compare(&t, toks[k].name, "special", &cases, ncases);
        printf("    %-9s %-15s loaded in %.0f ms, %d cases x 2 modes, %d differ\n", toks[k].name,
               tok_kind_name(t.kind), 1e3 * (t1 - t0), ncases, bad);
        tok_free(&t);
    }
    free(cases.buf);
}

/* two loads of the same file share the id; other tokenizers differ */
void tok_ids(void) {
    if (need_ref()) {
        EXPECT(0, "the reference tokenizers could not run (see above)");
        return;
    }
    Tokenizer a, b, c, d;
    Err e = {{0}};
    EXPECT(tok_load(&a, path_in("tokenizer.json"), &e) == 0, "%s", e.msg);
    EXPECT(tok_load(&b, path_in("tokenizer.json"), &e) == 0, "%s", e.msg);
    EXPECT(tok_load(&c, path_in("tokenizer_str.json"), &e) == 0, "%s", e.msg);
    EXPECT(tok_load(&d, path_in("llama3.tiktoken"), &e) == 0, "%s", e.msg);
    EXPECT(a.id == b.id, "same file, different ids");
    EXPECT(a.id != c.id && a.id != d.id && c.id != d.id, "different tokenizers share an id");
    /* special-token text: plain vs special, and ids out of range */
    const char *s = "a<|eot_id|>b";
    int32_t *ids = NULL;
    size_t cap = 0;
    size_t n = tok_encode_special(&d, s, strlen(s), &ids, &cap);
    EXPECT(n == 3 && ids[1] == d.eot, "encode_special: %zu ids", n);
    n = tok_encode(&d, s, strlen(s), &ids, &cap);
    EXPECT(n > 3, "plain encode made a special id");
    for (size_t i = 0; i < n; i++) EXPECT(ids[i] < 3256, "special id %d in plain encode", ids[i]);
    char *out = NULL;
    size_t ocap = 0, len;
    int32_t badid[2] = {1, d.vocab};
    EXPECT(tok_decode(&d, badid, 2, &out, &ocap) == (size_t)-1, "out-of-range id decoded");
    EXPECT(tok_token_bytes(&d, -1, &len) == NULL && len == 0, "token bytes of -1");
    /* threads encoding with one const tokenizer (each its own cache and
     * PCRE2 state) agree with one thread */
    Rd cs = {0};
    cs.buf = read_file(path_in("cases.bin"), &cs.n);
    EXPECT(cs.buf && cs.n > (1 << 20), "cases.bin");
    if (cs.buf) {
        const char *text = cs.buf + 8; /* case 0: the 1 MiB text */
        int agree = 1;
        int32_t *serial[16] = {NULL};
        size_t ns[16], scap[16] = {0};
        for (int k = 0; k < 16; k++)
            ns[k] = tok_encode(&a, text + 65536 * k, 65536, &serial[k], &scap[k]);
        #pragma omp parallel for num_threads(4) reduction(&& : agree)
        for (int k = 0; k < 16; k++) {
            int32_t *mine = NULL;
            size_t mcap = 0, m = tok_encode(&a, text + 65536 * k, 65536, &mine, &mcap);
            agree = agree && m == ns[k] && memcmp(mine, serial[k], m * sizeof *mine) == 0;
            free(mine);
        }
        EXPECT(agree, "threads disagree with one thread");
        for (int k = 0; k < 16; k++) free(serial[k]);
        free(cs.buf);
    }
    free(ids);
    free(out);
    tok_free(&a);
    tok_free(&b);
    tok_free(&c);
    tok_free(&d);
    tok_free(&d); /* a zeroed tokenizer frees fine */
}

/* llamac's own BPE behind the interface: the same ids as bpe_encode */
void tok_llamac(void) {
    make_dir();
    static char text[20000];
    static const char *w[] = {"the ", "cat ", "sat ", "on ", "mat ", "1984 ", "naïve ", "<|eot_id|>"};
    size_t n = test_words(text, sizeof text, w, 7, 3); /* the first 7 words */
    const char *texts[1] = {text};
    size_t lens[1] = {n};
    Bpe b;
    Err e = {{0}};
    LC_ASSERT(bpe_train(&b, texts, lens, 1, 400, &e) == 0);
    LC_ASSERT(bpe_save(&b, path_in("own.tok"), &e) == 0);
    Tokenizer t;
    EXPECT(tok_load(&t, path_in("own.tok"), &e) == 0, "%s", e.msg);
    EXPECT(t.kind == TOK_LLAMAC && t.id == b.id && t.vocab == b.vocab && t.bos == b.bos &&
           t.eos == b.eos && t.eot == bpe_special_id(&b, BPE_EOT), "llamac tokenizer fields");
    int32_t *x = NULL, *y = NULL;
    size_t cx = 0, cy = 0;
    size_t nx = tok_encode(&t, text, n, &x, &cx), ny = bpe_encode(&b, text, n, &y, &cy);
    EXPECT(nx == ny && memcmp(x, y, nx * sizeof *x) == 0, "tok_encode differs from bpe_encode");
    const char *s = "the<|eot_id|><|begin_of_text|>cat<|eot_id";
    nx = tok_encode_special(&t, s, strlen(s), &x, &cx);
    ny = bpe_encode(&b, "the", 3, &y, &cy);
    EXPECT(nx > ny + 2 && memcmp(x, y, ny * sizeof *x) == 0 && x[ny] == t.eot && x[ny + 1] == t.bos,
           "encode_special on llamac's BPE");
    char *out = NULL;
    size_t ocap = 0, m = tok_decode(&t, x, nx, &out, &ocap);
    EXPECT(m == strlen(s) && memcmp(out, s, m) == 0, "llamac special round trip");
    free(x);
    free(y);
    free(out);
    tok_free(&t);
    bpe_free(&b);
}

/* Python's "replace" on the invalid forms of tok_testtext.py */
void tok_utf8(void) {
    static const struct {
        const char *in, *out;
    } c[] = {
        {"abc", "abc"},
        {"\x80", "\xef\xbf\xbd"},
        {"\xc3(", "\xef\xbf\xbd("},
        {"\xe2\x82", "\xef\xbf\xbd"},
        {"\xe2\x82x", "\xef\xbf\xbdx"},
        {"\xf0\x9f\x98", "\xef\xbf\xbd"},
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf0\x9f\x98\x80\xed\x9f\xbf", "\xf0\x9f\x98\x80\xed\x9f\xbf"},
    };
    char *out = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t m = tok_utf8_lossy(c[i].in, strlen(c[i].in), &out, &cap);
        EXPECT(m == strlen(c[i].out) && memcmp(out, c[i].out, m) == 0, "lossy case %zu", i);
    }
    free(out);
}


/* every bad tokenizer file: one error line naming the file, in-process and
 * through `llamac tokenize encode` */
void tok_bad_files(void) {
    make_dir();
    size_t n = 0;
    char *good = NULL;
    if (need_ref() == 0) good = read_file(path_in("tokenizer.json"), &n);
    static const char uni[] = "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}";
    static const char wp[] = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    static const char nobl[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                               " \"pre_tokenizer\": {\"type\": \"Whitespace\"}}";
    static const char b64[] = "IQ== 0\nIg== 1\n!!notbase64 2\n";
    static const char rank[] = "IQ== 0\nIg== x\n";
    static const char trunc_tt[] = "IQ== 0\nIg==";
    write_file(path_in("uni.json"), uni, strlen(uni));
    write_file(path_in("wp.json"), wp, strlen(wp));
    write_file(path_in("nobl.json"), nobl, strlen(nobl));
    write_file(path_in("notjson.json"), "{model: 1", 9);
    write_file(path_in("b64.tiktoken"), b64, strlen(b64));
    write_file(path_in("rank.tiktoken"), rank, strlen(rank));
    write_file(path_in("trunc.tiktoken"), trunc_tt, strlen(trunc_tt));
    write_file(path_in("garbage.bin"), "\x01\x02\x03garbage", 10);
    write_file(path_in("empty.bin"), "", 0);
    write_file(path_in("doc.txt"), "hello world\n", 12);
    if (good) write_file(path_in("trunc.json"), good, n / 2);
    static const struct {
        const char *file, *want;
    } c[] = {
        {"uni.json", "model type Unigram not supported (supported: BPE)"},
        {"wp.json", "model type WordPiece not supported (supported: BPE)"},
        {"nobl.json", "pre_tokenizer type Whitespace not supported"},
        {"notjson.json", "not valid JSON"},
        {"trunc.json", "(truncated?)"},
        {"b64.tiktoken", "line 3: bad base64 token"},
        {"rank.tiktoken", "line 2: bad rank"},
        {"trunc.tiktoken", "line 2: expected \"base64token rank\" (truncated?)"},
        {"garbage.bin", "unknown tokenizer format"},
        {"empty.bin", "empty file"},
        {"missing.json", "cannot open"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        if (!good && strcmp(c[i].file, "trunc.json") == 0) continue;
        Tokenizer t;
        Err e = {{0}};
        const char *p = path_in(c[i].file);
        int rc = tok_load(&t, p, &e);
        EXPECT(rc == -1 && strncmp(e.msg, p, strlen(p)) == 0 && strstr(e.msg, c[i].want),
               "%s: rc %d, '%s' lacks '%s'", c[i].file, rc, e.msg, c[i].want);
        EXPECT(t.vocab == 0 && t.bb == NULL && t.bpe == NULL, "%s: tokenizer not zeroed", c[i].file);
        tok_free(&t);
        rc = test_llamac("tokenize encode --tokenizer %s --input %s --out %s", p, path_in("doc.txt"),
                path_in("x.bin"));
        int lines = 0;
        for (const char *q = test_err; *q; q++) lines += *q == '\n';
        EXPECT(rc == 1 && lines == 1 && strstr(test_err, c[i].want), "llamac on %s: exit %d, %s",
               c[i].file, rc, test_err);
    }
    free(good);
}

/* `llamac tokenize ids/special`: the CLI paths, unknown special names */
void tok_cli(void) {
    if (need_ref()) {
        EXPECT(0, "the reference tokenizers could not run (see above)");
        return;
    }
    char tt[512], hf[512];
    snprintf(tt, sizeof tt, "%s", path_in("llama3.tiktoken"));
    snprintf(hf, sizeof hf, "%s", path_in("tokenizer.json"));
    int rc = test_llamac("tokenize special --tokenizer %s '<|eot_id|>' '<|begin_of_text|>'", tt);
    EXPECT(rc == 0 && strcmp(test_out, "3265\n3256\n") == 0, "special ids: %d %s%s", rc, test_out, test_err);
    rc = test_llamac("tokenize special --tokenizer %s '<|eot_idd|>'", hf);
    EXPECT(rc == 1 && strstr(test_err, "<|eot_idd|>: no such special token in") && strstr(test_err, hf),
           "unknown special: %d %s", rc, test_err);
    write_file(path_in("s.txt"), "hi<|eot_id|>", 12);
    rc = test_llamac("tokenize ids --tokenizer %s %s", tt, path_in("s.txt"));
    EXPECT(rc == 0 && !strstr(test_out, "3265"), "plain ids hold the special id: %s", test_out);
    rc = test_llamac("tokenize ids --tokenizer %s --special %s", tt, path_in("s.txt"));
    EXPECT(rc == 0 && strstr(test_out, " 3265\n"), "--special ids lack it: %s%s", test_out, test_err);
    rc = test_llamac("tokenize encode --tokenizer %s --input %s --out %s", hf, path_in("s.txt"), path_in("s.bin"));
    EXPECT(rc == 0, "encode with tokenizer.json: %s", test_err);
}

/* SentencePiece behind the interface (the model tests/test_spm.c's
 * scripts/spm_ref.py writes beside the binary; made here if absent): the
 * ids of spm_encode, <s> / </s> by name, token bytes, and the Llama 2 chat
 * template with the real <s> and </s>. */
void tok_spm(void) {
    char model[1024];
    const char *slash = strrchr(test_llamac_path, '/');
    snprintf(model, sizeof model, "%.*s/spm_ref/llama.model", slash ? (int)(slash - test_llamac_path) : 1,
             slash ? test_llamac_path : ".");
    if (access(model, R_OK) != 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "mkdir -p \"$(dirname '%s')\" && V=\"${LLAMAC_VENV:-$HOME/.cache/llamac-venv}\"; "
                 "\"$V/bin/python\" scripts/spm_ref.py \"$(dirname '%s')\" >/dev/null 2>&1", model, model);
        int st = system(cmd);
        EXPECT(st == 0, "scripts/spm_ref.py (sentencepiece) failed; CI installs scripts/requirements-tok.txt");
        if (st) return;
    }
    Tokenizer t;
    Err e = {{0}};
    EXPECT(tok_load(&t, model, &e) == 0, "%s", e.msg);
    if (e.msg[0]) return;
    EXPECT(t.kind == TOK_SPM && t.bos == 1 && t.eos == 2 && t.eot == 2, "spm fields: kind %d bos %d eos %d",
           (int)t.kind, t.bos, t.eos);
    EXPECT(tok_special_id(&t, "<s>") == 1 && tok_special_id(&t, "</s>") == 2 &&
           tok_special_id(&t, "<unk>") == 0 && tok_special_id(&t, "hello") == -1, "spm special ids");
    const char *s = "Hello world <s>x</s> 123";
    int32_t *a = NULL, *b = NULL;
    size_t ca = 0, cb = 0;
    size_t na = tok_encode(&t, s, strlen(s), &a, &ca), nb;
    int has = 0;
    for (size_t i = 0; i < na; i++) has |= a[i] == 1 || a[i] == 2;
    EXPECT(!has && na > 6, "plain spm encode made <s> or </s> ids");
    na = tok_encode_special(&t, s, strlen(s), &a, &ca);
    nb = tok_encode(&t, "Hello world ", 12, &b, &cb);
    EXPECT(na > nb + 3 && memcmp(a, b, nb * sizeof *a) == 0 && a[nb] == 1 && a[na - 1] != 2,
           "spm encode_special: %zu ids", na);
    /* streaming bytes: "▁" as ' ', so they spell the text with its dummy prefix */
    nb = tok_encode(&t, "Hello world", 11, &b, &cb);
    char txt[256] = "";
    size_t m = 0, len;
    for (size_t i = 0; i < nb; i++) {
        const char *p = tok_token_bytes(&t, b[i], &len);
        if (p && m + len < sizeof txt) memcpy(txt + m, p, len), m += len;
    }
    EXPECT(m == 12 && memcmp(txt, " Hello world", 12) == 0, "spm token bytes: '%.*s'", (int)m, txt);
    char *out = NULL;
    size_t ocap = 0;
    m = tok_decode(&t, b, nb, &out, &ocap);
    EXPECT(m == 11 && memcmp(out, "Hello world", 11) == 0, "spm decode");
    /* Llama 2 chat: <s> encode("[INST] {u} [/INST] {a} ") </s> */
    ChatMsg conv[2] = {{CHAT_USER, "Hi", 2}, {CHAT_ASSISTANT, "Hello there", 11}};
    ChatTokens ct = {0};
    EXPECT(chat_encode(&t, CHAT_LLAMA2, conv, 2, &ct, "x", &e) == 0, "%s", e.msg);
    na = tok_encode(&t, "[INST] Hi [/INST] Hello there ", 30, &a, &ca);
    nb = tok_encode(&t, "[INST] Hi [/INST]", 17, &b, &cb);
    int same = ct.n == na + 2 && ct.ids[0] == 1 && ct.ids[ct.n - 1] == 2 && ct.mask[ct.n - 1] == 1 &&
               memcmp(ct.ids + 1, a, na * sizeof *a) == 0;
    for (size_t i = 0; same && i < ct.n; i++) same = ct.mask[i] == (i > nb && i < ct.n);
    EXPECT(same, "llama2 chat on SentencePiece: %zu ids", ct.n);
    EXPECT(chat_encode(&t, CHAT_LLAMA3, conv, 2, &ct, "f:1", &e) == -1 &&
           strstr(e.msg, "f:1: the llama3 template needs the token <|begin_of_text|>"), "%s", e.msg);
    chat_tokens_free(&ct);
    free(a);
    free(b);
    free(out);
    tok_free(&t);
}

/* The commands with a tokenizer.json: shards, a short pretraining run with
 * samples, generation, and the identity check against another tokenizer. */
void tok_pipeline(void) {
    if (need_ref()) {
        EXPECT(0, "the reference tokenizers could not run (see above)");
        return;
    }
    char hf[512], tt[512], docs[512], shard[512], model[512], ckpt[512];
    snprintf(hf, sizeof hf, "%s", path_in("tokenizer.json"));
    snprintf(tt, sizeof tt, "%s", path_in("llama3.tiktoken"));
    snprintf(docs, sizeof docs, "%s", path_in("docs.jsonl"));
    snprintf(shard, sizeof shard, "%s", path_in("docs.bin"));
    snprintf(model, sizeof model, "%s", path_in("model.h5"));
    snprintf(ckpt, sizeof ckpt, "%s", path_in("ckpt"));
    FILE *f = fopen(docs, "w");
    LC_ASSERT(f);
    for (int d = 0; d < 200; d++)
        fprintf(f, "{\"text\": \"the cat sat on the mat %d times. Naïve café <|eot_id|>\"}\n", d);
    fclose(f);
    int rc = test_llamac("tokenize encode --tokenizer %s --input %s --out %s", hf, docs, shard);
    EXPECT(rc == 0 && strstr(test_out, "200 documents"), "encode: %s%s", test_out, test_err);
    rc = test_llamac("pretrain --train %s --preset tiny --batch 4 --seq 32 --steps 2 --tokenizer %s "
            "--sample-tokens 4 --prompt 'the cat' --out %s --ckpt-dir %s", shard, hf, model, ckpt);
    EXPECT(rc == 0 && strstr(test_out, "vocab 3515") && strstr(test_out, "---- sample"),
           "pretrain with tokenizer.json: %d %.300s %s", rc, test_out, test_err);
    rc = test_llamac("generate --model %s --tokenizer %s --prompt 'the cat' --max-tokens 5", model, hf);
    EXPECT(rc == 0 && strncmp(test_out, "the cat", 7) == 0, "generate: %d %s %s", rc, test_out, test_err);
    rc = test_llamac("generate --model %s --tokenizer %s --prompt 'the cat' --max-tokens 5", model, tt);
    EXPECT(rc == 1 && strstr(test_err, "not the tokenizer"), "generate with another tokenizer: %s", test_err);
}

static int chat_collect(void *ud, const ChatMsg *msgs, int n, const char *where, Err *e) {
    void **a = ud;
    const Tokenizer *t = a[0];
    ChatTokens *ct = a[1];
    Rd *ex = a[2];
    int *tpl = a[3], *bad = a[4];
    if (chat_encode(t, (ChatTemplate)*tpl, msgs, n, ct, where, e)) return -1;
    uint32_t k = rd_u32(ex);
    const char *p = rd_bytes(ex, 4 * (size_t)k);
    int same = p && ct->n == k;
    for (uint32_t i = 0; same && i < k; i++) {
        int32_t v;
        memcpy(&v, p + 4 * (size_t)i, 4);
        same = ct->ids[i] == v;
    }
    if (!same) printf("    %s: %zu ids, reference %u\n", where, ct->n, k);
    *bad += !same;
    return 0;
}

/* chat_encode on the reference tokenizer.json against the conversations
 * tok_ref.py renders the published ways (HF's Llama 3 template tokenized
 * whole; Meta's Llama 2 turns) */
void tok_chat_reference(void) {
    if (need_ref()) {
        EXPECT(0, "the reference tokenizers could not run (see above)");
        return;
    }
    Tokenizer t;
    Err e = {{0}};
    EXPECT(tok_load(&t, path_in("tokenizer.json"), &e) == 0, "%s", e.msg);
    if (e.msg[0]) return;
    /* the reference fixtures cover Meta's two formats (ChatML is checked
     * against jinja2 by scripts/test_chat_ref.py) */
    for (int tpl = CHAT_LLAMA2; tpl <= CHAT_LLAMA3; tpl++) {
        char name[64];
        snprintf(name, sizeof name, "chat_%s.bin", tpl == CHAT_LLAMA2 ? "llama2" : "llama3");
        Rd ex = {0};
        ex.buf = read_file(path_in(name), &ex.n);
        EXPECT(ex.buf, "%s missing", name);
        ChatTokens ct = {0};
        int bad = 0;
        void *ud[5] = {&t, &ct, &ex, &tpl, &bad};
        EXPECT(chat_jsonl_each(path_in("chat.jsonl"), chat_collect, ud, &e) == 0, "%s", e.msg);
        EXPECT(bad == 0 && ex.pos == ex.n, "%s: %d conversations differ", name, bad);
        chat_tokens_free(&ct);
        free(ex.buf);
    }
    tok_free(&t);
}
