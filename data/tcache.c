/*
 * tcache.c: the teacher cache's file (tcache.h). Read through one mmap;
 * written a record at a time with the row table kept in memory (8 bytes
 * per row) until the split ends. The top-K keeps a min-heap of K keys
 * (the logit's order-preserving bits << 32 | ~id), so a position costs
 * O(V log K) and never sorts the vocabulary.
 */
#include "tcache.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../model/quant.h"
#include "minheap.h"

_Static_assert(sizeof(TCacheHeader) == 144, "the header is 144 bytes on disk");

// ----------------------------------------------------------------------------
// reading

int tcache_open(TCache *c, const char *path, Err *e) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(e, "%s: cannot open the teacher cache", path);
    struct stat st;
    if (fstat(fd, &st) || (size_t)st.st_size < sizeof(TCacheHeader)) {
        close(fd);
        return err_set(e, "%s: not a teacher cache of llamac (too short)", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return err_set(e, "%s: cannot map the teacher cache", path);
    c->map = p;
    c->len = (size_t)st.st_size;
    memcpy(&c->h, c->map, sizeof c->h);
    const TCacheHeader *h = &c->h;
    if (memcmp(h->magic, TCACHE_MAGIC, 8)) return err_set(e, "%s: not a teacher cache of llamac", path);
    if (h->version != TCACHE_VERSION)
        return err_set(e, "%s: teacher cache version %u, this build reads %u", path, h->version, TCACHE_VERSION);
    int ok = h->size == c->len && (h->id_bytes == 2 || h->id_bytes == 4) && (h->lp_bytes == 2 || h->lp_bytes == 4) &&
             h->K >= 1 && h->K <= h->V && h->T >= 1 && h->tau > 0;
    size_t rb = tcache_record_bytes(h);
    for (int s = 0; ok && s < TCACHE_NSPLIT; s++) {
        if (!h->data_id[s]) continue;
        ok = h->rec_off[s] >= sizeof(TCacheHeader) && h->rec_off[s] <= c->len && h->npos[s] <= c->len / rb && h->nrows[s] < c->len / 8 &&
             h->rec_off[s] + h->npos[s] * rb == h->tab_off[s] && h->tab_off[s] <= c->len &&
             (h->nrows[s] + 1) * 8 <= c->len - h->tab_off[s];
        if (ok) {
            uint64_t last;
            memcpy(&last, c->map + h->tab_off[s] + h->nrows[s] * 8, 8);
            ok = last == h->npos[s];
        }
    }
    if (!ok) return err_set(e, "%s: teacher cache truncated or damaged", path);
    return 0;
}

void tcache_close(TCache *c) {
    if (c->map) munmap((void *)c->map, c->len);
    memset(c, 0, sizeof *c);
}

int tcache_rows(const TCache *c, int split, const uint64_t *keys, int B, int T, const int32_t *tgt, int32_t *ids,
                float *logp, Err *e) {
    const TCacheHeader *h = &c->h;
    size_t K = h->K, rb = tcache_record_bytes(h);
    LC_ASSERT(split >= 0 && split < TCACHE_NSPLIT);
    memset(ids, 0, (size_t)B * T * K * sizeof *ids);
    memset(logp, 0, (size_t)B * T * K * sizeof *logp);
    for (int b = 0; b < B; b++) {
        uint64_t key = keys[b], r0, r1;
        if (!h->data_id[split] || key >= h->nrows[split])
            return err_set(e, "%s: row %llu of the %s data is not in the teacher cache (%llu rows)", c->path,
                           (unsigned long long)key, split ? "validation" : "training",
                           (unsigned long long)h->nrows[split]);
        memcpy(&r0, c->map + h->tab_off[split] + key * 8, 8);
        memcpy(&r1, c->map + h->tab_off[split] + key * 8 + 8, 8);
        const int32_t *tg = tgt + (size_t)b * T;
        long n = 0;
        for (int t = 0; t < T; t++) n += tg[t] != LC_IGNORE;
        if (r1 < r0 || r1 > h->npos[split])
            return err_set(e, "%s: teacher cache truncated or damaged (row %llu's records)", c->path,
                           (unsigned long long)key);
        if ((uint64_t)n != r1 - r0)
            return err_set(e, "%s: row %llu holds %llu trained positions in the teacher cache, %ld in the data: made "
                              "from other data", c->path, (unsigned long long)key, (unsigned long long)(r1 - r0), n);
        const uint8_t *rec = c->map + h->rec_off[split] + r0 * rb;
        for (int t = 0; t < T; t++) {
            if (tg[t] == LC_IGNORE) continue;
            int32_t *io = ids + ((size_t)b * T + t) * K;
            float *lo = logp + ((size_t)b * T + t) * K;
            const uint8_t *lp = rec + K * h->id_bytes;
            for (size_t j = 0; j < K; j++) {
                uint32_t id;
                if (h->id_bytes == 2) { uint16_t v; memcpy(&v, rec + 2 * j, 2); id = v; }
                else memcpy(&id, rec + 4 * j, 4);
                if (id >= h->V) /* kd_row indexes the student's logits with it */
                    return err_set(e, "%s: teacher cache damaged (token id %u, vocabulary %u)", c->path, id, h->V);
                io[j] = (int32_t)id;
                if (h->lp_bytes == 2) { uint16_t v; memcpy(&v, lp + 2 * j, 2); lo[j] = quant_half_to_float(v); }
                else memcpy(&lo[j], lp + 4 * j, 4);
            }
            rec += rb;
        }
    }
    return 0;
}

// ----------------------------------------------------------------------------
// the top-K of a position

/* Bits of a float that order as the floats do (NaN aside). */
static uint32_t order_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u >> 31 ? ~u : u | 0x80000000u;
}

void tcache_topk(const float *z, int V, float tau, int K, uint32_t *ids, float *logp, uint64_t *heap) {
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++) mx = z[v] / (double)tau > mx ? z[v] / (double)tau : mx;
    for (int v = 0; v < V; v++) sum += exp(z[v] / (double)tau - mx);
    double lse = mx + log(sum);
    size_t nh = 0;
    for (int v = 0; v < V; v++) { /* keep the K largest keys; a larger key: a larger logit, then a lower id */
        uint64_t key = (uint64_t)order_bits(z[v]) << 32 | (uint32_t)~(uint32_t)v;
        if (nh < (size_t)K) minheap_push(heap, &nh, key);
        else if (key > heap[0]) {
            minheap_pop(heap, &nh);
            minheap_push(heap, &nh, key);
        }
    }
    for (int j = K - 1; j >= 0; j--) { /* smallest first: fill from the end */
        uint64_t key = minheap_pop(heap, &nh);
        uint32_t v = ~(uint32_t)key;
        ids[j] = v;
        logp[j] = (float)(z[v] / (double)tau - lse);
    }
}

// ----------------------------------------------------------------------------
// writing

int tcache_writer_open(TCacheWriter *w, const char *path, const TCacheHeader *h, Err *e) {
    memset(w, 0, sizeof *w);
    w->h = *h;
    memcpy(w->h.magic, TCACHE_MAGIC, 8);
    w->h.version = TCACHE_VERSION;
    for (int s = 0; s < TCACHE_NSPLIT; s++) w->h.nrows[s] = w->h.npos[s] = w->h.rec_off[s] = w->h.tab_off[s] = 0;
    w->split = -1;
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
    w->f = fopen(w->tmp, "wb");
    if (!w->f) return err_set(e, "%s: cannot create", w->tmp);
    TCacheHeader zero;
    memset(&zero, 0, sizeof zero);
    fwrite(&zero, sizeof zero, 1, w->f); /* the real one at the end */
    w->rec = xmalloc(tcache_record_bytes(&w->h));
    w->ids = xmalloc(h->K * sizeof *w->ids);
    w->lp = xmalloc(h->K * sizeof *w->lp);
    w->heap = xmalloc(h->K * sizeof *w->heap);
    return 0;
}

/* The row table of the split being written, after its records. */
static void end_split(TCacheWriter *w) {
    if (w->split < 0) return;
    TCacheHeader *h = &w->h;
    h->tab_off[w->split] = (uint64_t)ftell(w->f);
    h->nrows[w->split] = w->ntab;
    uint64_t last = h->npos[w->split];
    if (w->ntab) fwrite(w->tab, 8, w->ntab, w->f);
    fwrite(&last, 8, 1, w->f);
    w->ntab = 0;
    w->split = -1;
}

void tcache_begin_split(TCacheWriter *w, int split) {
    end_split(w);
    w->split = split;
    w->row_start = 0;
    w->h.rec_off[split] = (uint64_t)ftell(w->f);
}

int tcache_put(TCacheWriter *w, const float *z, Err *e) {
    TCacheHeader *h = &w->h;
    size_t K = h->K;
    tcache_topk(z, (int)h->V, h->tau, (int)K, w->ids, w->lp, w->heap);
    uint8_t *lp = w->rec + K * h->id_bytes;
    for (size_t j = 0; j < K; j++) {
        if (h->id_bytes == 2) { uint16_t v = (uint16_t)w->ids[j]; memcpy(w->rec + 2 * j, &v, 2); }
        else memcpy(w->rec + 4 * j, &w->ids[j], 4);
        if (h->lp_bytes == 2) { uint16_t v = quant_float_to_half(w->lp[j]); memcpy(lp + 2 * j, &v, 2); }
        else memcpy(lp + 4 * j, &w->lp[j], 4);
    }
    if (fwrite(w->rec, tcache_record_bytes(h), 1, w->f) != 1) return err_set(e, "%s: write error", w->tmp);
    h->npos[w->split]++;
    return 0;
}

void tcache_end_row(TCacheWriter *w) {
    if (w->ntab + 1 > w->cap) {
        w->cap = w->cap ? 2 * w->cap : 1024;
        w->tab = xrealloc(w->tab, w->cap * 8);
    }
    w->tab[w->ntab++] = w->row_start; /* the row's first record */
    w->row_start = w->h.npos[w->split];
}

int tcache_finish(TCacheWriter *w, int keep, Err *e) {
    int rc = 0;
    if (w->f) {
        end_split(w);
        TCacheHeader *h = &w->h;
        h->size = (uint64_t)ftell(w->f);
        int bad = fseek(w->f, 0, SEEK_SET) || fwrite(h, sizeof *h, 1, w->f) != 1;
        bad |= fflush(w->f) != 0;
        if (!bad) bad = fsync(fileno(w->f)) != 0;
        bad |= fclose(w->f) != 0;
        w->f = NULL;
        if (keep && (bad || rename(w->tmp, w->path))) rc = err_set(e, "%s: cannot write", w->path);
        if (!keep || rc) remove(w->tmp);
    }
    free(w->tab); free(w->rec); free(w->ids); free(w->lp); free(w->heap);
    w->tab = NULL, w->rec = NULL, w->ids = NULL, w->lp = NULL, w->heap = NULL;
    return rc;
}
