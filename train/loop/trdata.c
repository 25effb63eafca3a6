/*
 * trdata.c: token windows and SFT rows as the trainer's batch sources
 * (trdata.h), moved here from cmd_pretrain.c and cmd_sft.c so that
 * distill draws exactly the rows those modes do.
 */
#include "trdata.h"

#include <string.h>

int trdata_shards_open(TrShards *set, const CliList *paths, const char *flag, Err *e) {
    memset(set, 0, sizeof *set);
    if (paths->n == 0) return err_set(e, "%s: no shard given", flag);
    for (int i = 0; i < paths->n && i < TRDATA_MAX_SHARDS; i++) {
        if (shard_open(&set->s[i], paths->v[i], e)) return -1;
        set->p[i] = &set->s[i];
        set->n++;
        if (set->s[i].tokenizer_id != set->s[0].tokenizer_id || set->s[i].vocab != set->s[0].vocab)
            return err_set(e, "%s: made by a different tokenizer than %s", paths->v[i], paths->v[0]);
    }
    return 0;
}

void trdata_shards_close(TrShards *set) {
    for (int i = 0; i < set->n; i++) shard_close(&set->s[i]);
    set->n = 0;
}

uint64_t trdata_shards_hash(const TrShards *set) {
    uint64_t h = 0x6c6c616d61632d73ULL; /* "llamac-s" */
    for (int i = 0; i < set->n; i++) {
        const Shard *s = &set->s[i];
        size_t n = (size_t)s->n_tokens;
        int32_t buf[4096];
        for (size_t k = 0; k < n; k += 4096) {
            size_t m = n - k < 4096 ? n - k : 4096;
            shard_read(s, k, m, buf);
            for (size_t j = 0; j < m; j++) { /* FNV-1a over the ids, as pack_hash */
                h = (h ^ (uint32_t)buf[j]) * 0x100000001b3ULL;
                h ^= h >> 29;
            }
        }
        h = hash_mix64(h ^ s->n_tokens);
    }
    return h ? h : 1;
}

// ----------------------------------------------------------------------------
// windows

static int win_next(void *ud, int32_t *tok, int32_t *tgt, int32_t *pos, Err *e) {
    (void)e;
    WinSource *s = ud;
    loader_next_rows(s->L, tok, tgt, pos, s->keys);
    return 0;
}

static void win_tell(const void *ud, uint64_t *cur) {
    const Loader *L = ((const WinSource *)ud)->L;
    cur[0] = L->epoch;
    cur[1] = L->pos;
}

static int win_seek(void *ud, const uint64_t *cur, Err *e) {
    return loader_seek(((WinSource *)ud)->L, cur[0], cur[1], e);
}

TrainData trdata_windows(WinSource *src, uint64_t tokenizer_id, const char *name, uint64_t data_id) {
    TrainData d = {src, name, tokenizer_id, data_id, win_next, win_tell, win_seek, src->L->n_windows, "windows", 0, 2,
                   NULL, 0, NULL, NULL, NULL};
    return d;
}

// ----------------------------------------------------------------------------
// SFT rows

static void dump_ints(FILE *f, const char *key, const int32_t *x, size_t n) {
    fprintf(f, ", \"%s\": [", key);
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", x[i]);
    fputc(']', f);
}

static int rows_next(void *ud, int32_t *tok, int32_t *tgt, int32_t *pos, Err *e) {
    RowSource *s = ud;
    sft_rows_next_ids(s->rows, tok, tgt, pos, s->keys);
    if (s->dump) {
        size_t n = (size_t)s->rows->B * (size_t)s->rows->T;
        fprintf(s->dump, "{\"B\": %d, \"T\": %d", s->rows->B, s->rows->T);
        dump_ints(s->dump, "tokens", tok, n);
        dump_ints(s->dump, "targets", tgt, n);
        dump_ints(s->dump, "pos", pos, n);
        fputs("}\n", s->dump);
        if (ferror(s->dump)) return err_set(e, "--dump-batches: write error");
    }
    return 0;
}

static void rows_tell(const void *ud, uint64_t *cur) {
    const SftRows *r = ((const RowSource *)ud)->rows;
    cur[0] = r->epoch;
    cur[1] = r->pos;
}

static int rows_seek(void *ud, const uint64_t *cur, Err *e) {
    return sft_rows_seek(((RowSource *)ud)->rows, cur[0], cur[1], e);
}

TrainData trdata_rows(RowSource *src, const char *name, uint64_t tokenizer_id, uint64_t data_id) {
    TrainData d = {src, name, tokenizer_id, data_id, rows_next, rows_tell, rows_seek,
                   src->rows ? src->rows->nrows : 0, "rows", 1, 2, NULL, 0, NULL, NULL, NULL};
    return d;
}

int trdata_sft_load(const char *mode, const char *path, const Tokenizer *tok, const SftOpts *so, const TrainOpts *o,
                    int packed, const char *what, SftSet *set, SftRows *rows, Err *e) {
    double t0 = time_now();
    if (sft_load(set, path, tok, so, e)) return -1;
    int pad = tok->eos >= 0 ? tok->eos : 0;
    if (sft_rows_init(rows, set, (int)o->B, (int)o->T, packed, pad, (uint64_t)o->seed, path, e)) return -1;
    double fill = rows->nrows ? (double)rows->slots_used / ((double)rows->nrows * (double)o->T) : 0;
    printf("%s %s: %s, %s format: %zu examples (%ld lines; %ld truncated, %ld dropped as longer than "
           "--max-length %d, %ld with no trained token), %zu tokens, %ld trained; %zu rows of %ld (%s, %.1f%% "
           "filled) in %.2f s\n", mode, what, path, sft_format_name(set->format), set->n, set->lines, set->truncated,
           set->dropped_long, so->max_len, set->dropped_empty, set->ntok, set->trained, rows->nrows, o->T,
           packed ? "packed" : "padded", 100 * fill, time_now() - t0);
    return 0;
}
