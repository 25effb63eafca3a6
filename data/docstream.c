/*
 * docstream.c: batches of whole lines read on the calling thread, parsed
 * and mapped on every core, emitted in input order (docstream.h).
 *
 * Lines are appended to one byte buffer (offsets, turned into pointers once
 * the batch is complete, so the buffer may grow while it fills); each line
 * is one slot of a DocItem array that lives for the whole run, so map's
 * per-slot buffers are reused from batch to batch. JSON is parsed inside
 * the parallel loop (jansson has no shared mutable state once its hash seed
 * is set, which docstream_run does first). A failing document does not stop
 * the others of its batch; the stream reports the first failure in input
 * order, so the message is the one a serial walk would give.
 */
#include "docstream.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "jsonl.h"

#define DOCS_BATCH_DEFAULT ((size_t)16 << 20)
#define DOCS_WHERE 320 /* "<file>:<line>" for messages */
/* Documents per batch at most: each slot costs about 1 KB beside its text
 * (the DocItem, its label, the parsed JSON), which for short lines would
 * outgrow the batch's bytes (16 MiB of 80-byte lines is 200,000 slots);
 * 16384 slots bound that to about 16 MB and still give every thread
 * thousands of documents between two emits. */
#define DOCS_MAX_ITEMS 16384

int docstream_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

size_t docstream_utf8_check(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { /* ASCII runs are the common case */
            i++;
            continue;
        }
        size_t k = utf8_seq_len(u + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

void *docstream_buf(DocItem *d, size_t bytes) {
    if (bytes > d->cap) {
        size_t cap = d->cap ? d->cap : 256;
        while (cap < bytes) cap *= 2;
        d->buf = xrealloc(d->buf, cap);
        d->cap = cap;
    }
    return d->buf;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

// ----------------------------------------------------------------------------
// one batch

typedef struct {
    char *raw;          /* the batch's lines, NUL-terminated each */
    size_t len, cap;
    size_t *off;        /* (cap_items) start of line i in raw */
    size_t *n;          /* its length */
    long *lineno;
    int nitems, cap_items;
    DocItem *it;        /* (cap_items) slots, kept across batches */
    char (*where)[DOCS_WHERE];
} Batch;

static void batch_push(Batch *b, const char *s, size_t n, long lineno) {
    if (b->nitems == b->cap_items) {
        int cap = b->cap_items ? 2 * b->cap_items : 1024;
        b->off = xrealloc(b->off, (size_t)cap * sizeof *b->off);
        b->n = xrealloc(b->n, (size_t)cap * sizeof *b->n);
        b->lineno = xrealloc(b->lineno, (size_t)cap * sizeof *b->lineno);
        b->it = xrealloc(b->it, (size_t)cap * sizeof *b->it);
        memset(b->it + b->cap_items, 0, (size_t)(cap - b->cap_items) * sizeof *b->it);
        b->where = xrealloc(b->where, (size_t)cap * sizeof *b->where);
        b->cap_items = cap;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->len + n + 1) cap *= 2;
        b->raw = xrealloc(b->raw, cap);
        b->cap = cap;
    }
    memcpy(b->raw + b->len, s, n);
    b->raw[b->len + n] = 0;
    b->off[b->nitems] = b->len;
    b->n[b->nitems] = n;
    b->lineno[b->nitems] = lineno;
    b->nitems++;
    b->len += n + 1;
}

static void batch_free(Batch *b) {
    for (int i = 0; i < b->cap_items; i++) free(b->it[i].buf);
    free(b->raw);
    free(b->off);
    free(b->n);
    free(b->lineno);
    free(b->it);
    free(b->where);
    memset(b, 0, sizeof *b);
}

/* Parse (JSONL) and check one slot; 0, or -1 with e. */
static int item_prepare(DocItem *d, int jsonl, const char *field, int bad_utf8, Err *e) {
    size_t bad = docstream_utf8_check(d->line, d->nline);
    if (bad < d->nline) {
        if (bad_utf8 == DOCS_UTF8_SKIP) {
            d->skip = 1;
            return 0;
        }
        return err_set(e, "%s: not valid UTF-8 (byte %zu; --bad-utf8 skip drops such documents)", d->where,
                       bad + 1);
    }
    if (!jsonl) {
        d->text = d->line;
        d->len = d->nline;
        return 0;
    }
    json_error_t je;
    json_t *obj = json_loadb(d->line, d->nline, JSON_ALLOW_NUL, &je);
    if (!obj) {
        char jq[2 * ERR_QUOTE_CAP];
        return err_set(e, "%s: not valid JSON (%s)", d->where, err_quote(jq, sizeof jq, je.text, strlen(je.text)));
    }
    d->json = obj;
    json_t *v = json_is_object(obj) ? json_object_get(obj, field) : NULL;
    if (!v || !json_is_string(v)) return err_set(e, "%s: no string field '%s'", d->where, field);
    d->text = json_string_value(v);
    d->len = json_string_length(v);
    return 0;
}

/* Map the batch in parallel, then emit in order. 0, or -1 with e.
 * A slot's result buffer more than twice the size its last document used
 * is freed: kept, each slot would hold the largest result it ever had, and
 * the sum over 16384 slots would grow with the length of the corpus (rare
 * long documents fall into ever more slots: 99 MB at 250 MB of JSONL, 119
 * MB at 2.5 GB when tokenising); freed, the slots hold at most twice this
 * batch's results. */
static int batch_run(Batch *b, int jsonl, const DocStreamOpts *o, DocMapFn map, DocEmitFn emit, void *ud,
                     uint64_t *index, DocStreamStats *st, Err *e) {
    int n = b->nitems;
    for (int i = 0; i < n; i++) {
        DocItem *d = &b->it[i];
        if (d->cap > 4096 && d->cap > 2 * d->nbuf) { /* see the note above */
            free(d->buf);
            d->buf = NULL;
            d->cap = 0;
        }
        void *buf = d->buf;
        size_t cap = d->cap;
        memset(d, 0, sizeof *d);
        d->buf = buf;
        d->cap = cap;
        d->line = b->raw + b->off[i];
        d->nline = b->n[i];
        d->index = (*index)++;
        d->where = b->where[i];
    }
    long err_at = n;
    Err first = {{0}};
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        DocItem *d = &b->it[i];
        Err ie = {{0}};
        int thread = 0;
#ifdef _OPENMP
        thread = omp_get_thread_num();
#endif
        int rc = item_prepare(d, jsonl, o->field, o->bad_utf8, &ie);
        if (!rc && !d->skip && map) rc = map(ud, thread, d, &ie);
        if (rc) {
#pragma omp critical(docstream_err)
            if (i < err_at) {
                err_at = i;
                first = ie;
            }
        }
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        DocItem *d = &b->it[i];
        if (!rc && i == err_at) {
            *e = first;
            rc = -1;
        }
        if (!rc) {
            if (d->skip)
                st->bad_utf8++;
            else {
                st->docs++;
                if (emit) rc = emit(ud, d, e);
            }
        }
        if (d->json) json_decref(d->json);
        d->json = NULL;
    }
    b->nitems = 0;
    b->len = 0;
    return rc;
}

// ----------------------------------------------------------------------------
// progress

typedef struct {
    const char *label;
    double t0, last;
    uint64_t total;
    int tty;
} Progress;

static void progress_line(Progress *p, const DocStreamStats *st, int final) {
    if (!p->label) return;
    double now = time_now(), dt = now - p->t0;
    if (!final && now - p->last < (p->tty ? 1.0 : 10.0)) return;
    p->last = now;
    double mbs = dt > 0 ? st->bytes / 1e6 / dt : 0.0;
    char eta[32] = "";
    if (!final && mbs > 0 && p->total > st->bytes) {
        double s = (p->total - st->bytes) / 1e6 / mbs;
        snprintf(eta, sizeof eta, ", ETA %dm%02ds", (int)(s / 60), (int)s % 60);
    }
    fprintf(stderr, "%s%s: %.1f of %.1f MB (%.0f%%), %.1f MB/s, %llu docs%s%s", p->tty ? "\r" : "", p->label,
            st->bytes / 1e6, p->total / 1e6, p->total ? 100.0 * st->bytes / p->total : 100.0, mbs,
            (unsigned long long)st->docs, eta, p->tty && !final ? "   " : "\n");
    fflush(stderr);
}

// ----------------------------------------------------------------------------
// the run

static int read_whole(FILE *f, const char *path, Batch *b, Err *e) {
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    size_t k;
    while ((k = fread(buf + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) buf = xrealloc(buf, cap *= 2);
    }
    int bad = ferror(f);
    if (!bad) batch_push(b, buf, len, 1);
    free(buf);
    return bad ? err_set(e, "%s: read error", path) : 0;
}

int docstream_run(const char *const *paths, int npaths, const DocStreamOpts *o, DocMapFn map, DocEmitFn emit,
                  void *ud, DocStreamStats *st, Err *e) {
    DocStreamStats dummy;
    if (!st) st = &dummy;
    memset(st, 0, sizeof *st);
    size_t batch_bytes = o->batch_bytes ? o->batch_bytes : DOCS_BATCH_DEFAULT;
    Progress pg = {o->progress, time_now(), 0, 0, isatty(2)};
    pg.last = pg.t0;
    for (int i = 0; i < npaths; i++) {
        struct stat sb;
        if (!stat(paths[i], &sb) && S_ISREG(sb.st_mode)) pg.total += (uint64_t)sb.st_size;
    }
    json_object_seed(0); /* before any thread makes an object (docstream.c's header) */
    Batch b;
    memset(&b, 0, sizeof b);
    uint64_t index = 0;
    int rc = 0;
    char *line = NULL;
    size_t lcap = 0;
    for (int p = 0; p < npaths && !rc; p++) {
        FILE *f = jsonl_open(paths[p]);
        if (!f) {
            rc = err_set(e, "%s: cannot open", paths[p]);
            break;
        }
        int jsonl = ends_with(paths[p], ".jsonl");
        if (!jsonl) {
            rc = read_whole(f, paths[p], &b, e);
            if (!rc) {
                snprintf(b.where[0], DOCS_WHERE, "%s", paths[p]);
                st->bytes += b.n[0];
                rc = batch_run(&b, 0, o, map, emit, ud, &index, st, e);
            }
            fclose(f);
            progress_line(&pg, st, 0);
            continue;
        }
        ssize_t n;
        long lineno = 0;
        while (!rc && (n = getline(&line, &lcap, f)) >= 0) {
            lineno++;
            st->bytes += (uint64_t)n;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
            if (n == 0) continue;
            batch_push(&b, line, (size_t)n, lineno);
            snprintf(b.where[b.nitems - 1], DOCS_WHERE, "%s:%ld", paths[p], lineno);
            if (b.len >= batch_bytes || b.nitems >= DOCS_MAX_ITEMS) {
                rc = batch_run(&b, 1, o, map, emit, ud, &index, st, e);
                progress_line(&pg, st, 0);
            }
        }
        if (!rc && ferror(f)) rc = err_set(e, "%s: read error", paths[p]);
        if (!rc && b.nitems) rc = batch_run(&b, 1, o, map, emit, ud, &index, st, e);
        fclose(f);
    }
    st->seconds = time_now() - pg.t0;
    if (!rc) progress_line(&pg, st, 1);
    else if (pg.label && pg.tty) fputc('\n', stderr);
    free(line);
    batch_free(&b);
    return rc;
}

int docstream_require_jsonl(const char *const *paths, int n, Err *e) {
    for (int i = 0; i < n; i++)
        if (!ends_with(paths[i], ".jsonl"))
            return err_set(e, "%s: not a .jsonl file (this step reads JSONL and writes the kept lines as they are)",
                           paths[i]);
    return 0;
}
