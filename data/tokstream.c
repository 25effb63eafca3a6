/*
 * tokstream.c: tokenize encode on docstream (tokstream.h). map encodes a
 * document into its slot (ids then the end-of-text id) and decides its
 * split; emit appends the slot to the split's output, closing a shard when
 * it holds shard_tokens tokens. Finished shards wait under their .tmp names
 * and are renamed together once everything succeeded, so a failed run
 * replaces nothing; a split output then removes the higher-numbered shards
 * an earlier, longer run left, so NAME.bin always expands to this run's.
 * All threads share one Tokenizer: tok_encode only reads it (tok.h); the
 * encoders' mutable state is per thread (chunkcache.h: PCRE2 match data,
 * the chunk cache) or per call (spm.c), and each thread here has its own
 * ids buffer.
 */
#include "tokstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shard.h"
#include "shardset.h"

int tokstream_is_val(uint64_t i, long val_per_mille) {
    uint64_t h = i * 0x9e3779b97f4a7c15ULL;
    return (long)((h >> 33) % 1000) < val_per_mille;
}

// ----------------------------------------------------------------------------
// one output: a shard, or a numbered series of them

typedef struct {
    const char *base;
    uint64_t shard_tokens;  /* 0: one file named base */
    const Tokenizer *t;
    ShardWriter w;
    char **done;            /* final paths of finished shards (data in "<path>.tmp") */
    int ndone;
    uint64_t tokens, docs;
} Out;

static int out_open(Out *o, Err *e) {
    char path[SHARD_PATH_MAX + 16];
    if (o->shard_tokens) shardset_name(path, sizeof path, o->base, o->ndone);
    else snprintf(path, sizeof path, "%s", o->base);
    return shard_writer_open(&o->w, path, o->t->vocab, o->t->eos, o->t->id, e);
}

static int out_finish(Out *o, Err *e) {
    if (shard_writer_finish(&o->w, e)) return -1;
    o->done = xrealloc(o->done, (size_t)(o->ndone + 1) * sizeof *o->done);
    size_t n = strlen(o->w.path);
    o->done[o->ndone] = xmalloc(n + 1);
    memcpy(o->done[o->ndone++], o->w.path, n + 1);
    return 0;
}

/* Append one document's tokens (its end-of-text id last). */
static int out_add(Out *o, const int32_t *tok, size_t n, Err *e) {
    o->tokens += n;
    o->docs++;
    while (n > 0) {
        if (!o->w.live && out_open(o, e)) return -1;
        size_t m = n;
        if (o->shard_tokens && o->shard_tokens - o->w.n_tokens < m) m = (size_t)(o->shard_tokens - o->w.n_tokens);
        if (shard_writer_add(&o->w, tok, m, e)) return -1;
        if (m == n) o->w.n_docs++; /* the shard holds this document's end-of-text */
        tok += m;
        n -= m;
        if (o->shard_tokens && o->w.n_tokens == o->shard_tokens && out_finish(o, e)) return -1;
    }
    return 0;
}

/* Finish the last shard (an empty output is one empty shard). */
static int out_end(Out *o, Err *e) {
    if (!o->w.live && o->ndone == 0 && out_open(o, e)) return -1;
    if (o->w.live && out_finish(o, e)) return -1;
    return 0;
}

/* Rename the finished shards over their names; drop a longer run's rest. */
static int out_publish(Out *o, Err *e) {
    for (int i = 0; i < o->ndone; i++) {
        char tmp[SHARD_PATH_MAX + 8];
        snprintf(tmp, sizeof tmp, "%s.tmp", o->done[i]);
        if (rename(tmp, o->done[i]) != 0) return err_set(e, "%s: cannot rename %s over it", o->done[i], tmp);
    }
    /* what an earlier run under the same name left that a directory, a glob
     * or the name itself would read with this run's shards: a longer split
     * run's rest, or the other form (one file vs a numbered series) */
    char path[SHARD_PATH_MAX + 16];
    struct stat sb;
    for (int k = o->shard_tokens ? o->ndone : 0;; k++) {
        shardset_name(path, sizeof path, o->base, k);
        if (stat(path, &sb) != 0 || unlink(path) != 0) break;
    }
    if (o->shard_tokens && stat(o->base, &sb) == 0) unlink(o->base);
    return 0;
}

/* Remove what a failed run made (unpublished shards) and free. */
static void out_free(Out *o, int failed) {
    shard_writer_abort(&o->w);
    for (int i = 0; i < o->ndone; i++) {
        if (failed) {
            char tmp[SHARD_PATH_MAX + 8];
            snprintf(tmp, sizeof tmp, "%s.tmp", o->done[i]);
            unlink(tmp);
        }
        free(o->done[i]);
    }
    free(o->done);
    o->done = NULL;
    o->ndone = 0;
}

// ----------------------------------------------------------------------------
// map and emit

typedef struct {
    const Tokenizer *t;
    long val_per_mille;
    int32_t **ids;   /* (nthreads) each thread's tok_encode buffer */
    size_t *cap;
    Out out[2];
    uint64_t text_bytes;
} Enc;

static int enc_map(void *ud, int thread, DocItem *d, Err *e) {
    (void)e;
    Enc *x = ud;
    size_t k = tok_encode(x->t, d->text, d->len, &x->ids[thread], &x->cap[thread]);
    int32_t *b = docstream_buf(d, (k + 1) * sizeof(int32_t));
    if (k) memcpy(b, x->ids[thread], k * sizeof(int32_t));
    b[k] = x->t->eos;
    d->nbuf = (k + 1) * sizeof(int32_t);
    d->keep = x->out[1].base ? tokstream_is_val(d->index, x->val_per_mille) : 0;
    return 0;
}

static int enc_emit(void *ud, DocItem *d, Err *e) {
    Enc *x = ud;
    x->text_bytes += d->len;
    return out_add(&x->out[d->keep], d->buf, d->nbuf / sizeof(int32_t), e);
}

int tokstream_encode(const Tokenizer *t, const char *const *inputs, int n, const TokStreamOpts *o,
                     TokStreamStats *st, Err *e) {
    TokStreamStats dummy;
    if (!st) st = &dummy;
    memset(st, 0, sizeof *st);
    if (t->eos < 0) return err_set(e, "tokenize encode: the tokenizer has no end-of-text id to separate documents");
    int nt = docstream_threads();
    Enc x;
    memset(&x, 0, sizeof x);
    x.t = t;
    x.val_per_mille = o->val_per_mille;
    x.ids = xcalloc((size_t)nt, sizeof *x.ids);
    x.cap = xcalloc((size_t)nt, sizeof *x.cap);
    const char *base[2] = {o->out, o->val_out};
    for (int s = 0; s < 2; s++) {
        x.out[s].base = base[s];
        x.out[s].shard_tokens = o->shard_tokens;
        x.out[s].t = t;
    }
    int rc = docstream_run(inputs, n, &o->ds, enc_map, enc_emit, &x, &st->ds, e);
    for (int s = 0; s < 2 && !rc; s++)
        if (x.out[s].base) rc = out_end(&x.out[s], e);
    for (int s = 0; s < 2 && !rc; s++)
        if (x.out[s].base) rc = out_publish(&x.out[s], e);
    for (int s = 0; s < 2; s++) {
        st->tokens[s] = x.out[s].tokens;
        st->docs[s] = x.out[s].docs;
        st->shards[s] = x.out[s].ndone;
        out_free(&x.out[s], rc != 0);
    }
    st->text_bytes = x.text_bytes;
    for (int i = 0; i < nt; i++) free(x.ids[i]);
    free(x.ids);
    free(x.cap);
    return rc;
}
