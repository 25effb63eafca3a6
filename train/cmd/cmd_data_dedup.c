/*
 * cmd_data_dedup.c: `llamac data dedup`: exact and near-duplicate removal
 * over JSONL, in two streaming passes (data/docstream.h, every core).
 *
 * Pass 1 maps each document to its exact key (XXH64 of the normalised
 * text) and its MinHash signature (data/dedup.h); the ordered emit keeps
 * the first document of each exact key and appends each band of the
 * others' signatures to that bucket's temporary file (as datatrove writes
 * one signature file per bucket). Then, one bucket at a time, the bands
 * are read back, sorted and equal neighbours joined in a union-find; each
 * cluster keeps its root (datatrove's choice). Pass 2 reads the input
 * again and writes the kept lines unchanged, in order.
 * Memory per document: 1 byte of state, 4 of document number, 16 to 32 of
 * the exact-key table while reading; while clustering 8 * rows of one
 * bucket's bands, 8 of sort and 8 of union-find. Disk: 8 * buckets * rows
 * bytes (896 with 14 x 8) in temporary files, removed at exit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/dedup.h"
#include "../../data/docstream.h"
#include "../../data/outfile.h"
#include "../proc/cli.h"
#include "cmds.h"

enum { ST_NOSIG = 0, ST_SIG = 1, ST_EXACT = 2 }; /* per document state after pass 1 */

/* open-addressing set of 64-bit exact keys (0 marks an empty slot, so key 0
 * is kept aside) */
typedef struct KeySet {
    uint64_t *slot;
    size_t cap, n;
    int has_zero;
} KeySet;

/* Insert k; returns 1 if it was already there. */
static int keyset_add(KeySet *s, uint64_t k) {
    if (k == 0) {
        int had = s->has_zero;
        s->has_zero = 1;
        return had;
    }
    if (2 * (s->n + 1) > s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 1024;
        uint64_t *ns = xcalloc(nc, sizeof(uint64_t));
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i])
                for (size_t j = hash_mix64(s->slot[i]) & (nc - 1);; j = (j + 1) & (nc - 1))
                    if (!ns[j]) {
                        ns[j] = s->slot[i];
                        break;
                    }
        free(s->slot);
        s->slot = ns, s->cap = nc;
    }
    for (size_t j = hash_mix64(k) & (s->cap - 1);; j = (j + 1) & (s->cap - 1)) {
        if (s->slot[j] == k) return 1;
        if (!s->slot[j]) {
            s->slot[j] = k, s->n++;
            return 0;
        }
    }
}

typedef struct Dedup {
    int exact, minhash;
    MinhashParams p;
    MinhashScratch *sc; /* one per thread */
    /* pass 1 results, by document number (documents read, in order) */
    uint8_t *state;
    size_t n, cap;
    uint32_t *sigdoc; /* (nsig) the documents whose bands are in bf, in order */
    size_t nsig, sigcap;
    FILE *bf[64];     /* (buckets) temporary files of bands, rows uint64 each */
    KeySet seen;
    uint64_t nexact, nnosig;
    /* pass 2 */
    const uint8_t *keep;
    FILE *out;
    const char *out_path;
    size_t seq;
    uint64_t written;
} Dedup;

static int dedup_map(void *ud, int thread, DocItem *d, Err *e) {
    (void)e;
    Dedup *x = ud;
    MinhashScratch *sc = &x->sc[thread];
    size_t B = (size_t)x->p.buckets, R = (size_t)x->p.rows;
    d->keep = 0;
    if (x->minhash) {
        uint64_t *sig = docstream_buf(d, (size_t)B * R * sizeof(uint64_t));
        d->keep = minhash_signature(&x->p, d->text, d->len, sig, sc) > 0;
    }
    if (x->exact) d->u64 = x->minhash ? dedup_xxh64(sc->norm, sc->nnorm, 0) : dedup_exact_key(d->text, d->len, sc);
    return 0;
}

static int dedup_emit(void *ud, DocItem *d, Err *e) {
    Dedup *x = ud;
    int B = x->p.buckets;
    if (x->n == UINT32_MAX) return err_set(e, "%s: more than %u documents (split the input)", d->where, UINT32_MAX);
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 4096;
        x->state = xrealloc(x->state, x->cap);
    }
    size_t i = x->n++;
    uint8_t st = d->keep ? ST_SIG : ST_NOSIG;
    if (x->exact && keyset_add(&x->seen, d->u64)) st = ST_EXACT, x->nexact++;
    if (x->minhash && st == ST_NOSIG) x->nnosig++;
    x->state[i] = st;
    if (st == ST_SIG) {
        if (x->nsig == x->sigcap)
            x->sigdoc = xrealloc(x->sigdoc, (x->sigcap = x->sigcap ? 2 * x->sigcap : 4096) * sizeof(uint32_t));
        x->sigdoc[x->nsig++] = (uint32_t)i;
        size_t R = (size_t)x->p.rows;
        for (int b = 0; b < B; b++)
            if (fwrite((const uint64_t *)d->buf + (size_t)b * R, sizeof(uint64_t), R, x->bf[b]) != R)
                return err_set(e, "temporary file of bucket %d: write error (TMPDIR full?)", b);
    }
    return 0;
}

static int write_emit(void *ud, DocItem *d, Err *e) {
    Dedup *x = ud;
    if (x->seq >= x->n) return err_set(e, "%s: the input changed between the two passes (more documents)", d->where);
    if (x->keep[x->seq++]) {
        if (fwrite(d->line, 1, d->nline, x->out) != d->nline || fputc('\n', x->out) == EOF)
            return err_set(e, "%s: write error", x->out_path);
        x->written++;
    }
    return 0;
}

/* Read each bucket's bands back and join equal ones, bucket by bucket. */
static int cluster_buckets(Dedup *x, DedupUF *u, Err *e) {
    size_t R = (size_t)x->p.rows, m = x->nsig;
    uint64_t *band = xmalloc((m ? m : 1) * R * sizeof(uint64_t));
    for (int b = 0; b < x->p.buckets; b++) {
        if (fflush(x->bf[b]) || fseek(x->bf[b], 0, SEEK_SET) || fread(band, sizeof(uint64_t) * R, m, x->bf[b]) != m) {
            free(band);
            return err_set(e, "temporary file of bucket %d: read error", b);
        }
        minhash_cluster_bucket(band, x->sigdoc, m, (int)R, u);
        fclose(x->bf[b]);
        x->bf[b] = NULL;
    }
    free(band);
    return 0;
}

/* Write one JSON line per cluster of two or more documents; fill the
 * cluster count and a size histogram (sizes above 63 counted in [63]). */
static int write_clusters(FILE *f, DedupUF *u, const uint8_t *has, size_t n, uint64_t *nclusters,
                          uint64_t hist[64], Err *e) {
    /* documents of one cluster together: order by (root, document) */
    uint32_t *order = xmalloc((n ? n : 1) * sizeof(uint32_t));
    uint32_t *count = xcalloc(n ? n : 1, sizeof(uint32_t));
    for (size_t i = 0; i < n; i++)
        if (has[i]) count[dedup_uf_find(u, (uint32_t)i)]++;
    /* counting sort by root: start offset of each root */
    size_t off = 0;
    for (size_t r = 0; r < n; r++) {
        uint32_t c = count[r];
        count[r] = (uint32_t)off;
        off += c;
    }
    for (size_t i = 0; i < n; i++)
        if (has[i]) order[count[dedup_uf_find(u, (uint32_t)i)]++] = (uint32_t)i;
    *nclusters = 0;
    memset(hist, 0, 64 * sizeof(uint64_t));
    for (size_t a = 0; a < off;) {
        uint32_t root = dedup_uf_find(u, order[a]);
        size_t b = a;
        while (b < off && dedup_uf_find(u, order[b]) == root) b++;
        if (b - a >= 2) {
            hist[b - a < 63 ? b - a : 63]++;
            if (f) {
                fprintf(f, "{\"cluster\": %llu, \"size\": %zu, \"kept\": %u, \"docs\": [", (unsigned long long)*nclusters,
                        b - a, root);
                for (size_t k = a; k < b; k++) fprintf(f, "%s%u", k > a ? ", " : "", order[k]);
                fprintf(f, "]}\n");
            }
            (*nclusters)++;
        }
        a = b;
    }
    free(order), free(count);
    (void)e;
    return 0;
}

int data_dedup(int argc, char **argv, Err *e) {
    const char *out = NULL, *field = "text", *clusters = NULL, *bad = "refuse";
    long exact = 1, minhash = 1, ngram = MINHASH_NGRAM, buckets = MINHASH_BUCKETS, rows = MINHASH_ROWS,
         seed = MINHASH_SEED;
    double batch_mb = 16;
    CliList in = {{0}, 0};
    CliFlag flags[] = {
        {"input", CLI_LIST, &in, 0, 0, "JSONL file (one document a line) or text file (one document); repeatable"},
        {"out", CLI_STR, &out, 0, 0, "JSONL of the kept lines, unchanged and in input order"},
        {"field", CLI_STR, &field, 0, 0, "JSON field holding the text"},
        {"exact", CLI_INT, &exact, 0, 1, "1: drop documents whose normalised text repeats an earlier one's"},
        {"minhash", CLI_INT, &minhash, 0, 1, "1: drop near duplicates (MinHash + LSH), one kept per cluster"},
        {"ngram", CLI_INT, &ngram, 1, 64, "words per shingle (datatrove's default)"},
        {"buckets", CLI_INT, &buckets, 1, 64, "LSH bands (datatrove's num_buckets)"},
        {"rows", CLI_INT, &rows, 1, 64, "hashes per band (datatrove's hashes_per_bucket)"},
        {"seed", CLI_INT, &seed, 0, 4294967295.0, "seed of the permutations (numpy RandomState, as datatrove)"},
        {"clusters", CLI_STR, &clusters, 0, 0, "write each near-duplicate cluster as a JSON line (document numbers)"},
        {"bad-utf8", CLI_STR, &bad, 0, 0, "refuse (error naming file:line) or skip (counted, left out)"},
        {"batch-mb", CLI_FLOAT, &batch_mb, 1e-6, 4096, "MB of input per parallel batch (results do not depend on it)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac data dedup --input IN.jsonl... --out OUT.jsonl [flags]",
                 "Remove exact duplicates (same text after datatrove's normalisation: lower case,\n"
                 "digits to 0, punctuation to spaces, whitespace collapsed, accents dropped; the\n"
                 "first is kept) and near duplicates: MinHash over word n-grams, LSH with\n"
                 "--buckets bands of --rows hashes (pairs of Jaccard similarity s collide with\n"
                 "probability 1-(1-s^rows)^buckets: 14x8 is 0.92 at s=0.8, 0.05 at s=0.5), clusters\n"
                 "by union-find, one document kept per cluster. Signatures and the kept documents\n"
                 "are datatrove 0.10.1's (MinhashDedup* with its defaults). Two passes over the\n"
                 "input; memory per document about 40 bytes, 8*rows+20 while clustering, never\n"
                 "the text; 8*buckets*rows bytes per document of temporary files in TMPDIR.",
                 flags, nf);
        return 0;
    }
    if (!in.n) return err_set(e, "--input: required");
    if (!out) return err_set(e, "--out: required");
    if (!exact && !minhash) return err_set(e, "--exact and --minhash: both off, nothing to do");
    int bad_mode = DOCS_UTF8_REFUSE;
    if (strcmp(bad, "refuse") == 0) bad_mode = DOCS_UTF8_REFUSE;
    else if (strcmp(bad, "skip") == 0) bad_mode = DOCS_UTF8_SKIP;
    else return err_set(e, "--bad-utf8: expected refuse or skip, not '%s'", bad);
    if (buckets * rows > 64 * 64) return err_set(e, "--buckets x --rows: at most 4096 hashes");

    const char *outs[2] = {out, minhash ? clusters : NULL};
    if (outfile_step_check(in.v, in.n, outs, 2, e)) return -1;
    OutFile oo, oc;
    memset(&oc, 0, sizeof oc);
    if (outfile_open(&oo, out, e)) return -1;
    if (minhash && clusters && outfile_open(&oc, clusters, e)) {
        outfile_drop(&oo);
        return -1;
    }
    Dedup x;
    memset(&x, 0, sizeof x);
    x.exact = (int)exact, x.minhash = (int)minhash;
    minhash_params_init(&x.p, (int)ngram, (int)buckets, (int)rows, (uint32_t)seed);
    int nt = docstream_threads();
    x.sc = xcalloc((size_t)nt, sizeof(MinhashScratch));
    DocStreamOpts o = {field, (size_t)(batch_mb * (1 << 20)) + 1, bad_mode, 0, "dedup: signatures"};
    DocStreamStats st1 = {0}, st2 = {0};
    DedupUF u = {0};
    uint8_t *keep = NULL;
    int rc = -1;
    double t0 = time_now();
    for (int b = 0; minhash && b < buckets; b++)
        if (!(x.bf[b] = tmpfile())) {
            err_set(e, "cannot create a temporary file for the signatures (set TMPDIR)");
            goto done;
        }
    if (docstream_run(in.v, in.n, &o, dedup_map, dedup_emit, &x, &st1, e)) goto done;

    size_t n = x.n;
    free(x.seen.slot);
    memset(&x.seen, 0, sizeof x.seen);
    dedup_uf_init(&u, n);
    uint8_t *has = xcalloc(n ? n : 1, 1);
    for (size_t i = 0; i < n; i++) has[i] = x.state[i] == ST_SIG;
    if (minhash && cluster_buckets(&x, &u, e)) {
        free(has);
        goto done;
    }
    uint64_t ncl = 0, hist[64], nnear = 0;
    if (write_clusters(oc.f, &u, has, n, &ncl, hist, e)) {
        free(has);
        goto done;
    }
    keep = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        keep[i] = x.state[i] != ST_EXACT && (!has[i] || dedup_uf_find(&u, (uint32_t)i) == i);
        nnear += has[i] && !keep[i];
    }
    free(has);

    x.out = oo.f;
    x.keep = keep, x.out_path = out;
    o.progress = "dedup: writing";
    if (docstream_run(in.v, in.n, &o, NULL, write_emit, &x, &st2, e)) goto done;
    if (x.seq != n) {
        err_set(e, "%s: the input changed between the two passes (fewer documents)", in.v[in.n - 1]);
        goto done;
    }
    x.out = NULL;
    if (outfile_commit(&oo, e) || outfile_commit(&oc, e)) goto done;
    double dt = time_now() - t0;
    printf("dedup: %zu documents in, %llu kept; dropped %llu exact duplicates, %llu near duplicates", n,
           (unsigned long long)x.written, (unsigned long long)x.nexact, (unsigned long long)nnear);
    if (st1.bad_utf8) printf("; skipped %llu with bad UTF-8", (unsigned long long)st1.bad_utf8);
    printf("\n");
    if (minhash) {
        printf("dedup: MinHash %ld-grams, %ld buckets x %ld rows, seed %ld: %llu clusters", ngram, buckets, rows, seed,
               (unsigned long long)ncl);
        const char *sep = ", sizes ";
        for (int s = 2; s < 64; s++)
            if (hist[s]) printf("%s%s%d x%llu", sep, s == 63 ? ">=" : "", s, (unsigned long long)hist[s]), sep = " ";
        if (x.nnosig) printf("; %llu documents under %ld words never match", (unsigned long long)x.nnosig, ngram);
        printf("\n");
    }
    printf("dedup: %.1f MB in %.2f s (%.0f docs/s, %.1f MB/s) on %d threads, peak RSS %.0f MB\n", st1.bytes / 1e6, dt,
           dt > 0 ? n / dt : 0, dt > 0 ? st1.bytes / 1e6 / dt : 0, nt, peak_rss_bytes() / 1e6);
    rc = 0;
done:
    outfile_drop(&oo);
    outfile_drop(&oc);
    for (int t = 0; t < nt; t++) minhash_scratch_free(&x.sc[t]);
    for (int b = 0; b < 64; b++)
        if (x.bf[b]) fclose(x.bf[b]);
    free(x.sc), free(x.state), free(x.sigdoc), free(x.seen.slot), free(keep);
    dedup_uf_free(&u);
    minhash_params_free(&x.p);
    return rc;
}
