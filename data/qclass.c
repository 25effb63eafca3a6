/*
 * qclass.c: hashed unigram + bigram features, the averaged-embedding
 * logistic model, its SGD step and its file (qclass.h).
 *
 * Gradients of the loss L = -log P(label), z = w . h + b, p = sigmoid(z):
 * dL/dz = p - y; dL/dw = (p - y) h; dL/db = p - y; dL/dh = (p - y) w, and
 * each feature's row gets dL/dh / nf (h is their mean; a row that occurs
 * twice gets it twice). The step applies w, b and the rows from the same
 * pre-step values, as fastText's supervised update does.
 */
#include "qclass.h"

#include "outfile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char QCLASS_MAGIC[4] = {'L', 'Q', 'C', 'F'};
#define QCLASS_MAX_DIM 1024
#define QCLASS_MAX_BUCKETS (1u << 28)

void qclass_init(QClass *m, uint32_t buckets, uint32_t dim, uint64_t seed) {
    LC_ASSERT(buckets >= 1 && dim >= 1 && dim <= QCLASS_MAX_DIM);
    m->buckets = buckets, m->dim = dim;
    m->emb = xcalloc((size_t)buckets * dim, sizeof(float));
    m->w = xmalloc(dim * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    float s = 1.0f / sqrtf((float)dim);
    for (uint32_t i = 0; i < dim; i++) m->w[i] = (2 * rng_uniform(&r) - 1) * s;
    m->b = 0;
}

void qclass_free(QClass *m) {
    free(m->emb), free(m->w);
    m->emb = m->w = NULL;
}

static int is_ws(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

size_t qclass_features(const char *text, size_t n, uint32_t buckets, uint32_t *f) {
    const unsigned char *s = (const unsigned char *)text;
    size_t nw = 0, i = 0;
    /* unigrams: the word hashes (32-bit FNV-1a) go to f first, reduced below */
    while (i < n) {
        while (i < n && is_ws(s[i])) i++;
        if (i == n) break;
        uint32_t h = 2166136261u;
        for (; i < n && !is_ws(s[i]); i++) {
            unsigned char c = s[i] >= 'A' && s[i] <= 'Z' ? (unsigned char)(s[i] + 32) : s[i];
            h = (h ^ c) * 16777619u;
        }
        f[nw++] = h;
    }
    size_t nf = nw;
    for (size_t k = 0; k + 1 < nw; k++) f[nf++] = (uint32_t)(((uint64_t)f[k] * 116049371u + f[k + 1]) % buckets);
    for (size_t k = 0; k < nw; k++) f[k] %= buckets;
    return nf;
}

static double logit(const QClass *m, const uint32_t *f, size_t nf, float *h) {
    uint32_t D = m->dim;
    memset(h, 0, D * sizeof(float));
    for (size_t k = 0; k < nf; k++) {
        const float *row = m->emb + (size_t)f[k] * D;
        for (uint32_t d = 0; d < D; d++) h[d] += row[d];
    }
    double z = m->b;
    float inv = nf ? 1.0f / (float)nf : 0;
    for (uint32_t d = 0; d < D; d++) z += (double)m->w[d] * (h[d] *= inv);
    return z;
}

double qclass_prob(const QClass *m, const uint32_t *f, size_t nf, float *h) {
    return 1.0 / (1.0 + exp(-logit(m, f, nf, h)));
}

double qclass_sgd(QClass *m, const uint32_t *f, size_t nf, int label, float lr, float *h) {
    double z = logit(m, f, nf, h);
    double p = 1.0 / (1.0 + exp(-z));
    /* -log sigmoid(z) = log1p(exp(-z)), stable for either sign */
    double loss = label ? (z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z))) : (z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)));
    float g = (float)(p - label);
    if (nf) {
        float scale = lr * g / (float)nf;
        for (size_t k = 0; k < nf; k++) {
            float *row = m->emb + (size_t)f[k] * m->dim;
            for (uint32_t d = 0; d < m->dim; d++) row[d] -= scale * m->w[d];
        }
    }
    for (uint32_t d = 0; d < m->dim; d++) m->w[d] -= lr * g * h[d];
    m->b -= lr * g;
    return loss;
}

// ----------------------------------------------------------------------------
// File

static int put32(FILE *f, uint32_t v) { return fwrite(&v, 4, 1, f) == 1 ? 0 : -1; }

int qclass_save(const QClass *m, const char *path, Err *e) {
    OutFile of;
    if (outfile_open(&of, path, e)) return -1;
    FILE *f = of.f;
    uint32_t D = m->dim, rows = 0;
    for (uint32_t r = 0; r < m->buckets; r++)
        for (uint32_t d = 0; d < D; d++)
            if (m->emb[(size_t)r * D + d] != 0) {
                rows++;
                break;
            }
    int bad = fwrite(QCLASS_MAGIC, 4, 1, f) != 1 || put32(f, QCLASS_VERSION) || put32(f, QCLASS_KIND_BINARY) ||
              put32(f, m->buckets) || put32(f, D) || put32(f, rows) || fwrite(&m->b, 4, 1, f) != 1 ||
              fwrite(m->w, 4, D, f) != D;
    for (uint32_t r = 0; r < m->buckets && !bad; r++) {
        const float *row = m->emb + (size_t)r * D;
        uint32_t d = 0;
        while (d < D && row[d] == 0) d++;
        if (d < D) bad = put32(f, r) || fwrite(row, 4, D, f) != D;
    }
    if (bad) {
        outfile_drop(&of);
        return err_set(e, "%s: write error", path);
    }
    int rc = outfile_commit(&of, e);
    outfile_drop(&of);
    return rc;
}

static int all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

int qclass_load(QClass *m, const char *path, Err *e) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open", path);
    char magic[4];
    uint32_t hdr[5]; /* version, kind, buckets, dim, rows */
    int rc = -1;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, QCLASS_MAGIC, 4)) {
        err_set(e, "%s: not a llamac quality classifier (bad magic)", path);
        goto done;
    }
    if (fread(hdr, 4, 5, f) != 5) {
        err_set(e, "%s: truncated (header)", path);
        goto done;
    }
    if (hdr[0] != QCLASS_VERSION) {
        err_set(e, "%s: quality classifier file version %u (this llamac reads %d)", path, hdr[0], QCLASS_VERSION);
        goto done;
    }
    if (hdr[1] != QCLASS_KIND_BINARY) {
        err_set(e, "%s: not a binary hq/lq classifier (kind %u)", path, hdr[1]);
        goto done;
    }
    if (hdr[2] < 1 || hdr[2] > QCLASS_MAX_BUCKETS || hdr[3] < 1 || hdr[3] > QCLASS_MAX_DIM || hdr[4] > hdr[2]) {
        err_set(e, "%s: sizes out of range (buckets %u, dim %u, rows %u)", path, hdr[2], hdr[3], hdr[4]);
        goto done;
    }
    uint32_t D = hdr[3];
    m->buckets = hdr[2], m->dim = D;
    m->emb = xcalloc((size_t)m->buckets * D, sizeof(float));
    m->w = xmalloc(D * sizeof(float));
    if (fread(&m->b, 4, 1, f) != 1 || fread(m->w, 4, D, f) != D) {
        err_set(e, "%s: truncated (weights)", path);
        goto done;
    }
    for (uint32_t k = 0; k < hdr[4]; k++) {
        uint32_t r;
        if (fread(&r, 4, 1, f) != 1) {
            err_set(e, "%s: truncated (row %u of %u)", path, k, hdr[4]);
            goto done;
        }
        if (r >= m->buckets) {
            err_set(e, "%s: row index %u out of range (%u buckets)", path, r, m->buckets);
            goto done;
        }
        if (fread(m->emb + (size_t)r * D, 4, D, f) != D) {
            err_set(e, "%s: truncated (row %u of %u)", path, k, hdr[4]);
            goto done;
        }
    }
    if (fgetc(f) != EOF) {
        err_set(e, "%s: trailing bytes after the last row", path);
        goto done;
    }
    if (!isfinite(m->b) || !all_finite(m->w, D) || !all_finite(m->emb, (size_t)m->buckets * D)) {
        err_set(e, "%s: weights that are not finite (NaN or infinity): a diverged training run", path);
        goto done;
    }
    rc = 0;
done:
    fclose(f);
    if (rc) qclass_free(m);
    return rc;
}
