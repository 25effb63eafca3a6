/*
 * test_nf4.c: NF4 (model/quant.h) against bitsandbytes and on its own.
 * nf4_fixture reads a case scripts/nf4_ref.py wrote with bitsandbytes 0.50
 * on the CPU (the committed tests/fixtures/nf4/nf4_4x128.bin, or the file
 * LLAMAC_NF4_REF names, as scripts/test_nf4_ref.py does for each of its
 * cases): llamac's quantisation of the input must be bitsandbytes' state
 * byte for byte, and dequantising that state must give bitsandbytes'
 * float32 values bit for bit, the whole tensor and row by row. The other
 * tests need no reference: the error bound of a round trip, a last group of
 * fewer than 256 blocks, blocks and tensors of zeros.
 *
 * Case file (little-endian): "LNF4", version 1, rows, cols, flags (bit 0:
 * the input is there) as uint32; then [input float32 (rows, cols)], the
 * quantised tensor (quant_bytes(QUANT_NF4, rows, cols) bytes, llamac's
 * layout), bitsandbytes' dequantised float32 (rows, cols).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/quant.h"
#include "test.h"
#include "tests.h"

#define NF4_MAGIC 0x34464e4cu /* "LNF4" */
#define NF4_VERSION 1
#define BB (QUANT_NF4_BLOCK / 2 + 1) /* bytes per block */

typedef struct {
    int rows, cols, has_x;
    float *x, *y;  /* (rows, cols) */
    uint8_t *q;    /* quant_bytes */
    size_t qbytes;
} Nf4Case;

static void case_free(Nf4Case *c) {
    free(c->x), free(c->y), free(c->q);
    memset(c, 0, sizeof *c);
}

/* -1 with e on a malformed file */
static int case_read(const char *path, Nf4Case *c, Err *e) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open", path);
    uint32_t h[5];
    int rc = -1;
    if (fread(h, 4, 5, f) != 5) err_set(e, "%s: truncated header", path);
    else if (h[0] != NF4_MAGIC || h[1] != NF4_VERSION) err_set(e, "%s: not an NF4 case (version 1)", path);
    else if (h[2] < 1 || h[2] > (1u << 16) || h[3] < 64 || h[3] > (1u << 16) || h[3] % 64)
        err_set(e, "%s: bad shape (%u, %u)", path, h[2], h[3]);
    else {
        c->rows = (int)h[2], c->cols = (int)h[3], c->has_x = h[4] & 1;
        size_t n = (size_t)c->rows * (size_t)c->cols;
        c->qbytes = quant_bytes(QUANT_NF4, c->rows, c->cols);
        c->x = xmalloc(n * sizeof(float)), c->y = xmalloc(n * sizeof(float)), c->q = xmalloc(c->qbytes);
        if ((c->has_x && fread(c->x, 4, n, f) != n) || fread(c->q, 1, c->qbytes, f) != c->qbytes ||
            fread(c->y, 4, n, f) != n || fgetc(f) != EOF)
            err_set(e, "%s: truncated or too long", path);
        else rc = 0;
    }
    fclose(f);
    if (rc) case_free(c);
    return rc;
}

/* "block b codes" / "block b absmax code" / "offset" / "absmax2[g]" / "padding": where byte i lies */
static void where(const Nf4Case *c, size_t i, char *buf, size_t cap) {
    size_t nb = (size_t)c->rows * (size_t)c->cols / QUANT_NF4_BLOCK, aux = c->qbytes - (1 + (nb + 255) / 256) * 4;
    if (i < nb * BB) snprintf(buf, cap, "block %zu %s", i / BB, i % BB == BB - 1 ? "absmax code" : "codes");
    else if (i < aux) snprintf(buf, cap, "padding");
    else if (i < aux + 4) snprintf(buf, cap, "offset");
    else snprintf(buf, cap, "absmax2[%zu]", (i - aux) / 4 - 1);
}

/* count of values of a and b that differ in any bit; the first in *first */
static size_t bits_differ(const float *a, const float *b, size_t n, size_t *first) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, 4) != 0 && bad++ == 0) *first = i;
    return bad;
}

void nf4_fixture(void) {
    const char *path = getenv("LLAMAC_NF4_REF");
    if (!path) path = "tests/fixtures/nf4/nf4_4x128.bin";
    Nf4Case c;
    Err e;
    EXPECT(case_read(path, &c, &e) == 0, "%s", e.msg);
    if (!c.q) return;
    size_t n = (size_t)c.rows * (size_t)c.cols, first = 0, bad;
    QTensor qt = quant_tensor(QUANT_NF4, c.rows, c.cols, c.q);
    /* 1. bitsandbytes' state through llamac's dequantiser */
    float *got = xmalloc(n * sizeof(float));
    quant_rows(&qt, 0, c.rows, got);
    bad = bits_differ(got, c.y, n, &first);
    EXPECT(bad == 0, "%s: dequantised: %zu of %zu values differ, first [%zu]: %.9g, bitsandbytes %.9g", path, bad, n,
           first, got[first], c.y[first]);
    /* 2. one row at a time, and a middle range, equal the whole */
    float *row = xmalloc((size_t)c.cols * sizeof(float));
    size_t rbad = 0;
    for (int r = 0; r < c.rows; r++) {
        quant_rows(&qt, r, 1, row);
        rbad += memcmp(row, got + (size_t)r * (size_t)c.cols, (size_t)c.cols * sizeof(float)) != 0;
    }
    EXPECT(rbad == 0, "%s: %zu rows dequantised alone differ from the whole", path, rbad);
    if (c.rows > 2) {
        float *mid = xmalloc((size_t)(c.rows - 2) * (size_t)c.cols * sizeof(float));
        quant_rows(&qt, 1, c.rows - 2, mid);
        EXPECT(memcmp(mid, got + c.cols, (size_t)(c.rows - 2) * (size_t)c.cols * sizeof(float)) == 0,
               "%s: rows [1, %d) differ from the whole", path, c.rows - 1);
        free(mid);
    }
    /* 3. llamac's quantiser gives bitsandbytes' state */
    if (c.has_x) {
        uint8_t *q = xmalloc(c.qbytes);
        EXPECT(quant_quantize(QUANT_NF4, c.x, c.rows, c.cols, q) == 0, "quantize refused NF4");
        size_t qbad = 0, qfirst = 0;
        for (size_t i = 0; i < c.qbytes; i++)
            if (q[i] != c.q[i] && qbad++ == 0) qfirst = i;
        char at[64] = "";
        if (qbad) where(&c, qfirst, at, sizeof at);
        EXPECT(qbad == 0, "%s: quantised: %zu of %zu bytes differ, first %zu (%s): 0x%02x, bitsandbytes 0x%02x", path,
               qbad, c.qbytes, qfirst, at, q[qfirst], c.q[qfirst]);
        free(q);
    }
    free(row), free(got);
    case_free(&c);
}

/* quantise x (rows, cols) and dequantise it into y; returns the buffer */
static uint8_t *roundtrip(const float *x, int rows, int cols, float *y) {
    uint8_t *q = xmalloc(quant_bytes(QUANT_NF4, rows, cols));
    EXPECT(quant_quantize(QUANT_NF4, x, rows, cols, q) == 0, "quantize refused NF4");
    QTensor qt = quant_tensor(QUANT_NF4, rows, cols, q);
    quant_rows(&qt, 0, rows, y);
    return q;
}

static float aux_float(const uint8_t *q, int rows, int cols, int k) {
    size_t nb = (size_t)rows * (size_t)cols / QUANT_NF4_BLOCK, ng = (nb + 255) / 256;
    float v;
    memcpy(&v, q + quant_bytes(QUANT_NF4, rows, cols) - (1 + ng - (size_t)k) * 4, 4);
    return v;
}

/* Every value within half the widest NF4 gap (-1 to -0.6962, so 0.1520)
 * times its block's absmax, plus the error of that absmax after double
 * quantisation: half the widest gap of the dynamic map (0.0141 between
 * 0.1070 and 0.1211) and one 65536th bin of bitsandbytes' lookup, times the
 * group's absmax2; 1e-6 relative for float32 rounding. Checked per block. */
static void check_bound(const float *x, const float *y, const uint8_t *q, int rows, int cols, const char *what) {
    int64_t nb = (int64_t)rows * cols / QUANT_NF4_BLOCK, worst = -1;
    double wratio = 0;
    for (int64_t b = 0; b < nb; b++) {
        float amax = 0;
        for (int i = 0; i < QUANT_NF4_BLOCK; i++) amax = fmaxf(amax, fabsf(x[b * QUANT_NF4_BLOCK + i]));
        double a2 = aux_float(q, rows, cols, 1 + (int)(b / QUANT_NF4_GROUP));
        double tol = 0.1520 * amax + (0.0141 / 2 + 1.0 / 32768) * a2 + 1e-6 * (amax + fabs(a2)) + 1e-30;
        for (int i = 0; i < QUANT_NF4_BLOCK; i++) {
            double d = fabs((double)x[b * QUANT_NF4_BLOCK + i] - y[b * QUANT_NF4_BLOCK + i]);
            if (d / tol > wratio) wratio = d / tol, worst = b;
        }
    }
    EXPECT(wratio <= 1.0, "%s: block %lld is %.3g times its error bound", what, (long long)worst, wratio);
}

void nf4_roundtrip(void) {
    Rng r;
    rng_seed(&r, 41);
    const int rows = 64, cols = 256; /* 256 blocks: one whole group */
    float *x = xmalloc(rows * cols * sizeof(float)), *y = xmalloc(rows * cols * sizeof(float));
    for (int i = 0; i < rows; i++) {
        float s = 0.01f + rng_uniform(&r); /* rows of different scales */
        for (int j = 0; j < cols; j++) x[i * cols + j] = s * rng_normal(&r);
    }
    uint8_t *q = roundtrip(x, rows, cols, y);
    check_bound(x, y, q, rows, cols, "normal rows");
    double se = 0, sx = 0;
    for (int i = 0; i < rows * cols; i++) se += (x[i] - y[i]) * (double)(x[i] - y[i]), sx += x[i] * (double)x[i];
    /* NF4 on normal data: relative MSE ~0.01 (QLoRA's information-theoretic
     * design point); 0.02 leaves room and still catches a wrong codebook */
    EXPECT(se / sx < 0.02, "normalised MSE %.4g", se / sx);
    QTensor qt = quant_tensor(QUANT_NF4, rows, cols, q);
    EXPECT(quant_nonfinite_rows(&qt) == 0, "non-finite rows after a round trip");
    free(q), free(x), free(y);
}

/* 300 blocks: a second group of 44. Its absmax2 is the largest
 * |absmax - offset| over those 44 blocks alone. */
void nf4_partial_group(void) {
    Rng r;
    rng_seed(&r, 42);
    const int rows = 300, cols = 64;
    float *x = xmalloc(rows * cols * sizeof(float)), *y = xmalloc(rows * cols * sizeof(float));
    for (int i = 0; i < rows * cols; i++) x[i] = rng_normal(&r) * (i >= 256 * 64 ? 5.0f : 1.0f);
    uint8_t *q = roundtrip(x, rows, cols, y);
    EXPECT(quant_bytes(QUANT_NF4, rows, cols) == (size_t)(300 * BB + 4) + 3 * 4, "quant_bytes %zu",
           quant_bytes(QUANT_NF4, rows, cols));
    float amax[300], off = aux_float(q, rows, cols, 0);
    double mean = 0;
    for (int b = 0; b < 300; b++) {
        amax[b] = 0;
        for (int i = 0; i < 64; i++) amax[b] = fmaxf(amax[b], fabsf(x[b * 64 + i]));
        mean += amax[b];
    }
    EXPECT_NEAR(off, mean / 300, 1e-5 * mean / 300);
    float g[2] = {0, 0};
    for (int b = 0; b < 300; b++) g[b / 256] = fmaxf(g[b / 256], fabsf(amax[b] - off));
    float g0 = g[0], g1 = g[1];
    EXPECT(aux_float(q, rows, cols, 1) == g0 && aux_float(q, rows, cols, 2) == g1,
           "absmax2 %.9g %.9g, expected %.9g %.9g", aux_float(q, rows, cols, 1), aux_float(q, rows, cols, 2), g0, g1);
    check_bound(x, y, q, rows, cols, "partial group");
    free(q), free(x), free(y);
}

/* A zero block gets codes 7 (NF4's exact zero) and dequantises to zeros;
 * an all-zero tensor has offset 0, absmax2 0 and only zeros. */
void nf4_zero_blocks(void) {
    Rng r;
    rng_seed(&r, 43);
    const int rows = 3, cols = 320; /* 15 blocks; 4 and 9 are zero */
    float x[3 * 320], y[3 * 320];
    for (int i = 0; i < rows * cols; i++) x[i] = (i / 64 == 4 || i / 64 == 9) ? 0.0f : rng_normal(&r);
    uint8_t *q = roundtrip(x, rows, cols, y);
    for (int b = 4; b <= 9; b += 5) {
        int codes = 0, zeros = 0;
        for (int i = 0; i < 32; i++) codes += q[b * BB + i] == 0x77;
        for (int i = 0; i < 64; i++) zeros += y[b * 64 + i] == 0.0f;
        EXPECT(codes == 32 && zeros == 64, "zero block %d: %d bytes 0x77, %d zeros", b, codes, zeros);
    }
    check_bound(x, y, q, rows, cols, "with zero blocks");
    free(q);
    memset(x, 0, sizeof x);
    q = roundtrip(x, rows, cols, y);
    int zeros = 0;
    for (int i = 0; i < rows * cols; i++) zeros += y[i] == 0.0f;
    EXPECT(zeros == rows * cols && aux_float(q, rows, cols, 0) == 0.0f && aux_float(q, rows, cols, 1) == 0.0f,
           "zero tensor: %d zeros, offset %g, absmax2 %g", zeros, aux_float(q, rows, cols, 0), aux_float(q, rows, cols, 1));
    free(q);
}
