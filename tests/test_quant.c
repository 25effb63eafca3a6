/*
 * test_quant.c: model/quant.c's quantisers and `llamac quantize`. Per block
 * type: the dequantised RMSE of random rows against a bound, vectors on the
 * type's own grid that come back exactly, zero and constant blocks, rows
 * quantised alone vs together; then the command on two small random models
 * (rows of 256 and 512 so the K types are used as such; rows of 64 and 48 so
 * every fallback is), each tensor's type read back and its values equal to
 * the original quantised and dequantised in that type; and its bad inputs.
 * scripts/test_quant_ref.py checks the bytes against llama.cpp and gguf-py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/gguf.h"
#include "../model/params.h"
#include "../model/quant.h"
#include "../train/io/ckpt.h"
#include "../train/io/gguf.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tquant"

/* The block types, and the RMSE bound for standard normal values: 1.3x
 * what each measures over (64, 1024) values (Q8_0 0.0054, Q4_0 0.086, Q4_1
 * 0.078, Q5_0 0.043, Q5_1 0.038, Q4_K 0.072, Q5_K 0.036, Q6_K 0.018). */
static const struct {
    uint32_t type;
    double rmse;
} qtypes[] = {
    {QUANT_Q8_0, 0.007}, {QUANT_Q4_0, 0.112}, {QUANT_Q4_1, 0.102}, {QUANT_Q5_0, 0.056},
    {QUANT_Q5_1, 0.05}, {QUANT_Q4_K, 0.093}, {QUANT_Q5_K, 0.047}, {QUANT_Q6_K, 0.023},
};
#define N_QTYPES ((int)(sizeof qtypes / sizeof qtypes[0]))

/* src (rows, cols) through type and back into dst; F32 and F16 too */
static void roundtrip(uint32_t type, const float *src, int64_t rows, int64_t cols, float *dst) {
    if (type == QUANT_F32) {
        memcpy(dst, src, (size_t)(rows * cols) * sizeof(float));
    } else if (type == QUANT_F16) {
        for (int64_t i = 0; i < rows * cols; i++) dst[i] = quant_half_to_float(quant_float_to_half(src[i]));
    } else {
        uint8_t *q = xmalloc(quant_bytes(type, rows, cols));
        LC_ASSERT(quant_quantize(type, src, rows, cols, q) == 0);
        LC_ASSERT(quant_dequantize(type, q, rows * cols, dst) == 0);
        free(q);
    }
}

static double rmse(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

void quant_rmse(void) {
    static const int shapes[][2] = {{1, 256}, {7, 512}, {3, 1024}, {64, 1024}};
    Rng r;
    rng_seed(&r, 11);
    for (int s = 0; s < 4; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        size_t n = (size_t)rows * cols;
        float *x = xmalloc(n * sizeof *x), *y = xmalloc(n * sizeof *y);
        for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
        for (int k = 0; k < N_QTYPES; k++) {
            roundtrip(qtypes[k].type, x, rows, cols, y);
            double e = rmse(x, y, n);
            /* one row of 256 is a noisy sample: allow it 1.5x */
            EXPECT(e <= qtypes[k].rmse * (n < 1024 ? 1.5 : 1.0), "%s (%d, %d): rmse %g > %g", quant_name(qtypes[k].type),
                   rows, cols, e, qtypes[k].rmse);
        }
        /* scale does not matter: 1e-3 x gives 1e-3 the error */
        for (size_t i = 0; i < n; i++) x[i] *= 1e-3f;
        for (int k = 0; k < N_QTYPES; k++) {
            roundtrip(qtypes[k].type, x, rows, cols, y);
            double e = rmse(x, y, n);
            EXPECT(e <= 1e-3 * qtypes[k].rmse * (n < 1024 ? 1.5 : 1.0), "%s (%d, %d) * 1e-3: rmse %g",
                   quant_name(qtypes[k].type), rows, cols, e);
        }
        free(x);
        free(y);
    }
}

/* Values on a type's own grid come back exactly: the scale and offset are
 * exact in half precision and every value is a code. */
void quant_known(void) {
    float x[256], y[256];
    for (int j = 0; j < 32; j++) x[j] = 0.5f * (float)(j % 16 - 8); /* Q4_0: max |x| at -4, d 0.5 */
    roundtrip(QUANT_Q4_0, x, 1, 32, y);
    EXPECT(memcmp(x, y, 32 * sizeof *x) == 0, "Q4_0 grid: y[1] = %g, expected %g", (double)y[1], (double)x[1]);
    uint8_t b[210];
    quant_quantize(QUANT_Q4_0, x, 1, 32, b);
    EXPECT(b[0] == 0x00 && b[1] == 0x38 && b[2] == 0x00 && b[3] == 0x11 && b[17] == 0xff,
           "Q4_0 bytes %02x %02x | %02x %02x .. %02x", b[0], b[1], b[2], b[3], b[17]); /* d 0.5 = 0x3800 */
    for (int j = 0; j < 32; j++) x[j] = 0.25f * (float)(j % 16) + 1.0f; /* Q4_1: min 1, d 0.25 */
    roundtrip(QUANT_Q4_1, x, 1, 32, y);
    EXPECT(memcmp(x, y, 32 * sizeof *x) == 0, "Q4_1 grid");
    for (int j = 0; j < 32; j++) x[j] = 0.125f * (float)(j - 16); /* Q5_0: max |x| at -2, d 0.125 */
    roundtrip(QUANT_Q5_0, x, 1, 32, y);
    EXPECT(memcmp(x, y, 32 * sizeof *x) == 0, "Q5_0 grid");
    for (int j = 0; j < 32; j++) x[j] = 0.5f * (float)j - 3.0f; /* Q5_1: min -3, d 0.5 */
    roundtrip(QUANT_Q5_1, x, 1, 32, y);
    EXPECT(memcmp(x, y, 32 * sizeof *x) == 0, "Q5_1 grid");
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) / 16.0f * 127.0f / 127.0f; /* Q8_0: d 1/127, q 8j - 128 */
    x[0] = -1.0f;
    roundtrip(QUANT_Q8_0, x, 1, 32, y);
    double worst = 0;
    for (int j = 0; j < 32; j++) worst = fmax(worst, fabs(x[j] - y[j]));
    EXPECT(worst <= 0.5 / 127 + 1e-6, "Q8_0 ramp: max error %g", worst);
    /* K types: a ramp per sub-block is fit to better than half a step of the finest grid of 63 */
    for (int e = 0; e < 256; e++) x[e] = (float)(e % 32) / 31.0f * (1.0f + (float)(e / 32));
    static const struct {
        uint32_t type;
        double tol; /* of the range 8 */
    } k[] = {{QUANT_Q4_K, 0.07}, {QUANT_Q5_K, 0.035}, {QUANT_Q6_K, 0.02}};
    for (int i = 0; i < 3; i++) {
        roundtrip(k[i].type, x, 1, 256, y);
        worst = 0;
        for (int e = 0; e < 256; e++) worst = fmax(worst, fabs(x[e] - y[e]));
        EXPECT(worst <= k[i].tol * 8 / 2, "%s ramps: max error %g", quant_name(k[i].type), worst);
    }
}

/* An all-zero block is all-zero bytes that dequantise to 0; an all-equal
 * block (of either sign) comes back within half precision of its value. */
void quant_zero_equal(void) {
    float x[256], y[256];
    uint8_t b[256 / 32 * 34 + 256];
    for (int k = 0; k < N_QTYPES; k++) {
        uint32_t t = qtypes[k].type;
        int n = quant_block(t);
        memset(x, 0, sizeof x);
        memset(b, 0xa5, sizeof b);
        LC_ASSERT(quant_quantize(t, x, 1, n, b) == 0);
        /* the symmetric legacy types: d = 0 / -2^(b-1) = -0, codes at the zero point 2^(b-1) */
        uint8_t z[34] = {0};
        if (t == QUANT_Q4_0) z[1] = 0x80, memset(z + 2, 0x88, 16);
        if (t == QUANT_Q5_0) z[1] = 0x80, memset(z + 2, 0xff, 4);
        int nz = 0;
        for (size_t i = 0; i < quant_block_bytes(t); i++) nz += b[i] != (i < 34 ? z[i] : 0);
        EXPECT(nz == 0, "%s: zero block has %d unexpected bytes", quant_name(t), nz);
        quant_dequantize(t, b, n, y);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += y[i] != 0.0f;
        EXPECT(bad == 0, "%s: zero block dequantises to %g", quant_name(t), (double)y[0]);
        static const float c[] = {0.3f, -0.3f, 7.25f, -1e-3f};
        for (int ci = 0; ci < 4; ci++) {
            for (int i = 0; i < n; i++) x[i] = c[ci];
            roundtrip(t, x, 1, n, y);
            double worst = 0;
            for (int i = 0; i < n; i++) worst = fmax(worst, fabs(y[i] - c[ci]));
            /* Q8_0 rounds 127 d to half, the K types the scale twice (6 bits of a half) */
            double tol = fabs(c[ci]) * (n == 256 ? 3e-2 : 2e-3);
            EXPECT(worst <= tol, "%s: all %g -> max error %g", quant_name(t), (double)c[ci], worst);
        }
    }
}

/* Blocks never span rows: a tensor quantised at once equals its rows
 * quantised one by one, and quant_rows reads any run of rows back. */
void quant_rows_independent(void) {
    enum { R = 5, C = 512 };
    float *x = xmalloc(R * C * sizeof *x), *y = xmalloc(R * C * sizeof *y), *z = xmalloc(R * C * sizeof *z);
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < R * C; i++) x[i] = rng_normal(&r) * (1.0f + (float)(i / C)); /* rows of other scales */
    for (int k = 0; k < N_QTYPES; k++) {
        uint32_t t = qtypes[k].type;
        size_t rb = quant_row_bytes(t, C);
        uint8_t *all = xmalloc(quant_bytes(t, R, C)), *one = xmalloc(rb);
        LC_ASSERT(quant_quantize(t, x, R, C, all) == 0);
        int same = 1;
        for (int i = 0; i < R; i++) {
            quant_quantize(t, x + (size_t)i * C, 1, C, one);
            same &= memcmp(one, all + i * rb, rb) == 0;
        }
        EXPECT(same, "%s: rows quantised alone differ", quant_name(t));
        QTensor q = quant_tensor(t, R, C, all);
        quant_rows(&q, 0, R, y);
        quant_rows(&q, 1, 3, z + C);
        quant_rows(&q, 0, 1, z);
        quant_rows(&q, 4, 1, z + 4 * C);
        EXPECT(memcmp(y, z, R * C * sizeof *y) == 0, "%s: quant_rows by parts differ", quant_name(t));
        EXPECT(quant_nonfinite_rows(&q) == 0, "%s: non-finite rows", quant_name(t));
        free(all);
        free(one);
    }
    free(x);
    free(y);
    free(z);
}

// ---------------------------------------------------------------------------
// llamac quantize

/* A random model: A has rows of 256 and 512 (the K types used as such),
 * untied, 4 layers (layers 2 and 3 use more bits in the mixes); B rows of
 * 64, tied, ffn_down rows of 48 (no type fits: F16). */
static void make_model(const char *path, int b, LlamaConfig *c, ParamTable *t, float **p) {
    Err e;
    LC_ASSERT(config_preset("tiny", c, &e) == 0);
    if (!b) c->dim = 256, c->n_layers = 4, c->n_heads = 4, c->n_kv_heads = 2, c->hidden = 512, c->tied = 0;
    else c->hidden = 48, c->tied = 1;
    c->vocab = 320;
    LC_ASSERT(params_build(c, t, &e) == 0);
    *p = xalloc_aligned(t->size * sizeof(float));
    memset(*p, 0, t->size * sizeof(float));
    Rng r;
    rng_seed(&r, 7 + (uint64_t)b);
    for (int i = 0; i < t->n; i++)
        for (size_t k = 0; k < t->p[i].numel; k++) (*p)[t->p[i].offset + k] = 0.02f * rng_normal(&r);
    LC_ASSERT(ckpt_save(path, c, t, *p, 0, NULL, NULL, &e) == 0);
}

/* The type llama.cpp gives GGUF tensor g of model b under --type kind. */
static uint32_t want_type(int b, const char *kind, const char *g, uint32_t base) {
    if (!strstr(g, ".weight") || strstr(g, "norm")) return QUANT_F32;
    int mix = strlen(kind) == 6, layer = -1; /* q4_k_m, Q5_K_M */
    sscanf(g, "blk.%d.", &layer);
    int big = strstr(g, "attn_v") || strstr(g, "ffn_down");
    if (!b) {
        if (mix && (strcmp(g, "output.weight") == 0 || (big && layer >= 2))) return QUANT_Q6_K;
        return base;
    }
    if (strstr(g, "ffn_down")) return QUANT_F16;
    if (mix && (strcmp(g, "token_embd.weight") == 0 || (big && layer == 1))) return QUANT_Q8_0;
    return base == QUANT_Q4_K ? QUANT_Q5_0 : base == QUANT_Q5_K ? QUANT_Q5_1 : base == QUANT_Q6_K ? QUANT_Q8_0 : base;
}

void quant_cli(void) {
    mkdir(DIR, 0755);
    static const struct {
        const char *kind;
        uint32_t base;
    } kinds[] = {
        {"q8_0", QUANT_Q8_0}, {"q4_0", QUANT_Q4_0}, {"q4_1", QUANT_Q4_1},   {"q5_0", QUANT_Q5_0},
        {"q5_1", QUANT_Q5_1}, {"q4_k", QUANT_Q4_K}, {"q5_k", QUANT_Q5_K},   {"q6_k", QUANT_Q6_K},
        {"q4_k_m", QUANT_Q4_K}, {"Q5_K_M", QUANT_Q5_K},
    };
    for (int b = 0; b < 2; b++) {
        char in[64];
        snprintf(in, sizeof in, DIR "/m%c.h5", 'a' + b);
        LlamaConfig c;
        ParamTable t;
        float *p, *back = NULL, *want = NULL;
        make_model(in, b, &c, &t, &p);
        back = xalloc_aligned(t.size * sizeof(float));
        want = xmalloc(t.size * sizeof(float));
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            char out[96];
            snprintf(out, sizeof out, DIR "/m%c_%s.gguf", 'a' + b, kinds[k].kind);
            remove(out);
            int rc = test_llamac("quantize %s %s --type %s", in, out, kinds[k].kind);
            EXPECT(rc == 0 && strstr(test_out, "bits per weight"), "%s: %d %s %s", out, rc, test_out, test_err);
            if (rc) continue;
            Gguf g;
            Err e;
            LC_ASSERT(gguf_open(&g, out, &e) == 0);
            int wrong = 0;
            for (int i = 0; i < g.n_tensors; i++) {
                uint32_t w = want_type(b, kinds[k].kind, g.t[i].name, kinds[k].base);
                if (g.t[i].type != w)
                    wrong++, printf("    %s %s: %s, expected %s\n", out, g.t[i].name, quant_name(g.t[i].type),
                                    quant_name(w));
            }
            EXPECT(wrong == 0, "%s: %d tensors of the wrong type", out, wrong);
            /* values: each tensor as the original through its file type, rows back in HF order */
            LC_ASSERT(gguf_llama_load(out, &c, &t, back, &e) == 0);
            int bad = 0;
            for (int i = 0; i < t.n; i++) {
                const ParamInfo *pi = &t.p[i];
                char gname[96];
                gguf_tensor_name(pi->name, gname, sizeof gname);
                const GgufTensor *gt = gguf_tensor(&g, gname);
                LC_ASSERT(gt);
                int64_t rows = pi->ndim == 2 ? pi->shape[0] : 1, cols = pi->ndim == 2 ? pi->shape[1] : pi->shape[0];
                roundtrip(gt->type, p + pi->offset, rows, cols, want + pi->offset);
                if (memcmp(want + pi->offset, back + pi->offset, pi->numel * sizeof(float)) != 0)
                    bad++, printf("    %s %s: values differ\n", out, gname);
            }
            EXPECT(bad == 0, "%s: %d tensors' values differ", out, bad);
            gguf_close(&g);
        }
        /* a quantised GGUF as IN: dequantised, then requantised */
        char q4[96], q8[96];
        snprintf(q4, sizeof q4, DIR "/m%c_q4_0.gguf", 'a' + b);
        snprintf(q8, sizeof q8, DIR "/m%c_re_q8_0.gguf", 'a' + b);
        remove(q8);
        int rc = test_llamac("quantize %s %s --type q8_0", q4, q8);
        EXPECT(rc == 0, "requantise: %s", test_err);
        Err e;
        LlamaConfig c4 = c;
        float *mid = xalloc_aligned(t.size * sizeof(float));
        if (rc == 0 && gguf_llama_load(q4, &c4, &t, mid, &e) == 0 && gguf_llama_load(q8, &c, &t, back, &e) == 0) {
            int bad = 0;
            for (int i = 0; i < t.n; i++) {
                const ParamInfo *pi = &t.p[i];
                int64_t cols = pi->ndim == 2 ? pi->shape[1] : pi->shape[0];
                uint32_t ty = pi->ndim < 2 ? QUANT_F32 : cols % 32 ? QUANT_F16 : QUANT_Q8_0;
                roundtrip(ty, mid + pi->offset, (int64_t)pi->numel / cols, cols, want + pi->offset);
                bad += memcmp(want + pi->offset, back + pi->offset, pi->numel * sizeof(float)) != 0;
            }
            EXPECT(bad == 0, "requantised q4_0 -> q8_0: %d tensors differ", bad);
        }
        free(mid);
        free(p);
        free(back);
        free(want);
        params_free(&t);
    }
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

void quant_cli_errors(void) {
    mkdir(DIR, 0755);
    LlamaConfig c;
    ParamTable t;
    float *p;
    make_model(DIR "/mb.h5", 1, &c, &t, &p);
    free(p);
    params_free(&t);
    test_put(DIR "/exists.gguf", "x");
    static const struct {
        const char *args, *want;
    } cases[] = {
        {"quantize " DIR "/mb.h5 " DIR "/bad.gguf --type q3_k", "--type: unknown type 'q3_k' (expected q8_0, q4_0"},
        {"quantize " DIR "/mb.h5 " DIR "/bad.gguf", "quantize: --type is required"},
        {"quantize " DIR "/none.h5 " DIR "/bad.gguf --type q4_0", DIR "/none.h5"},
        {"quantize " DIR "/mb.h5 " DIR "/no/such/dir/bad.gguf --type q4_0",
         DIR "/no/such/dir/bad.gguf: cannot write there: " DIR "/no/such/dir/: No such file or directory"},
        {"quantize " DIR "/mb.h5 " DIR "/bad.bin --type q4_0", DIR "/bad.bin: OUT must be a GGUF file (.gguf)"},
        {"quantize " DIR "/mb.h5 " DIR "/exists.gguf --type q4_0", DIR "/exists.gguf: exists (--force replaces it)"},
        {"quantize " DIR "/mb.h5 --type q4_0", "quantize: expected IN and OUT.gguf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = test_llamac("%s", cases[i].args);
        EXPECT(rc == 1 && count_lines(test_err) == 1 && strstr(test_err, cases[i].want), "'%s': %d %s", cases[i].args,
               rc, test_err);
    }
    EXPECT(access(DIR "/bad.gguf", F_OK) != 0 && access(DIR "/bad.bin", F_OK) != 0, "a failed quantize wrote output");
    int rc = test_llamac("quantize --help");
    EXPECT(rc == 0 && strstr(test_out, "q4_k_m") && strstr(test_out, "falls back"), "--help: %s", test_out);
}
