/*
 * bpe.c: byte-level BPE. See bpe.h for the pre-tokenizer rules, the ids and
 * the file format.
 *
 * Training (Sennrich et al. 2016, with the bookkeeping of fast trainers such
 * as Hugging Face tokenizers): count the distinct chunks once, then merge on
 * the distinct chunks ("words") weighted by their counts. Each pair keeps its
 * count and the list of words it occurs in; a max-heap with lazy deletion
 * picks the best pair. A merge rewrites only the words that hold the pair and
 * updates the counts of the pairs in those words, so a step costs the size of
 * the affected words, not of the corpus.
 *
 * The split: llamac's own rules (bpe_chunk_end) or a PCRE2 pattern, matched
 * from each chunk's start with the thread's match state (chunkcache.h).
 *
 * Encoding: per chunk (with a pattern, a chunk found whole among the
 * tokens is that token), merges.c's loop merges the lowest-index pair
 * first, leftmost on ties: the order training created them in. Words
 * repeat, so each thread keeps a direct-mapped cache chunk -> ids
 * (chunkcache.h), tagged with the tokenizer id. That per-thread state is
 * the only global state; the cache is a pure memo (same id = same merges =
 * same encoding), so bpe_encode takes a const Bpe and is safe to call from
 * many threads at once.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "bpe.h"
#include "chunkcache.h"

#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the special tokens bpe_train adds, in id order */
static const char *const special_names[] = {
    BPE_BOS, BPE_EOS, BPE_START_HEADER, BPE_END_HEADER, BPE_EOT,
};
#define N_SPECIAL ((int)(sizeof special_names / sizeof special_names[0]))

/* Total bytes of all tokens: bounds a hostile file whose merges double a
 * token's length each time (2 GiB fits int64 offsets; real tables are MBs). */
#define MAX_TOKEN_BYTES ((int64_t)1 << 31)

// ---------------------------------------------------------------------------
// pre-tokenizer

enum { C_LETTER, C_DIGIT, C_PUNCT, C_NL, C_BLANK };

static inline int byte_class(uint8_t c) {
    if (c >= 0x80 || (unsigned)((c | 0x20) - 'a') < 26u) return C_LETTER;
    if ((unsigned)(c - '0') < 10u) return C_DIGIT;
    if (c == ' ' || c == '\t' || c == '\v' || c == '\f') return C_BLANK;
    if (c == '\n' || c == '\r') return C_NL;
    return C_PUNCT;
}

size_t bpe_chunk_end(const char *text, size_t len, size_t i) {
    const uint8_t *s = (const uint8_t *)text;
    size_t lim = len - i > BPE_MAX_CHUNK ? i + BPE_MAX_CHUNK : len;
    int c = byte_class(s[i]);
    size_t j = i + 1;
    if (c == C_DIGIT) return j;
    if (c == C_BLANK) {
        if (s[i] == ' ' && j < lim) {
            int k = byte_class(s[j]);
            if (k == C_LETTER || k == C_PUNCT) {
                while (++j < lim && byte_class(s[j]) == k) {}
                return j;
            }
        }
        while (j < lim && byte_class(s[j]) == C_BLANK) j++;
        if (j < len && j - 1 > i && s[j - 1] == ' ') {
            int k = byte_class(s[j]);
            if (k == C_LETTER || k == C_PUNCT) return j - 1; /* " word" keeps its space */
        }
        return j;
    }
    while (j < lim && byte_class(s[j]) == c) j++;
    return j;
}

/* the chunk at s[i] under the compiled pattern re: a match starting at i,
 * else the gap up to the next match; at most BPE_MAX_CHUNK bytes, cut at a
 * UTF-8 character boundary */
static size_t regex_end(const pcre2_code *re, ChunkLocal *l, const uint8_t *s, size_t len, size_t i) {
    int rc = pcre2_match(re, s, len, i, 0, l->md, l->mc);
    size_t j = len;
    if (rc >= 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(l->md);
        j = ov[0] > i ? ov[0] : ov[1];
        if (j <= i) { /* an empty match: one character */
            j = i + 1;
            while (j < len && (s[j] & 0xc0) == 0x80) j++;
        }
    } else if (rc != PCRE2_ERROR_NOMATCH) {
        LC_FATAL("PCRE2 match error %d", rc);
    }
    if (j - i > BPE_MAX_CHUNK) {
        j = i + BPE_MAX_CHUNK;
        while (j > i + 1 && (s[j] & 0xc0) == 0x80) j--;
    }
    return j;
}

size_t bpe_split_end(const Bpe *t, const char *text, size_t len, size_t i) {
    if (!t->re) return bpe_chunk_end(text, len, i);
    return regex_end(t->re, chunkcache_local(), (const uint8_t *)text, len, i);
}

// ---------------------------------------------------------------------------
// tables shared by train and load

static uint64_t compute_id(const Bpe *t) {
    uint64_t h = HASH_FNV_OFFSET;
    for (int i = 0; i < t->n_merges; i++)
        for (int k = 0; k < 2; k++) h = hash_fnv1a_u32(h, (uint32_t)t->merges[i][k]);
    for (int i = 0; i < t->n_special; i++) {
        uint32_t v = (uint32_t)strlen(t->special[i]);
        h = hash_fnv1a(hash_fnv1a_u32(h, v), t->special[i], v);
    }
    if (t->pattern) {
        uint32_t v = (uint32_t)strlen(t->pattern);
        h = hash_fnv1a(hash_fnv1a_u32(h, v), t->pattern, v);
    }
    return h;
}

/* From t->merges and t->special, check them and build vocab, the token bytes,
 * the rank map, bos/eos and id. Errors name `name` (the file). */
static int build_tables(Bpe *t, const char *name, Err *e) {
    int nm = t->n_merges;
    t->vocab = 256 + nm + t->n_special;
    merges_init(&t->ranks, (uint64_t)nm);
    t->tok_off = xmalloc(((size_t)t->vocab + 1) * sizeof *t->tok_off);
    int64_t *off = t->tok_off; /* first lengths, then prefix sums */
    for (int i = 0; i < 256; i++) off[i] = 1;
    for (int i = 0; i < nm; i++) {
        int32_t a = t->merges[i][0], b = t->merges[i][1];
        if (a < 0 || a >= 256 + i || b < 0 || b >= 256 + i)
            return err_set(e, "%s: merge %d refers to unknown id %d", name, i,
                           (a < 0 || a >= 256 + i) ? a : b);
        uint64_t old = merges_put(&t->ranks, a, b, merges_val((uint32_t)i, 256 + i));
        if (old != MERGES_NONE)
            return err_set(e, "%s: merge %d repeats merge %d (%d, %d)", name, i, (int)(old >> 32),
                           a, b);
        off[256 + i] = off[a] + off[b];
        if (off[256 + i] > MAX_TOKEN_BYTES)
            return err_set(e, "%s: merge %d makes a token longer than %lld bytes", name, i,
                           (long long)MAX_TOKEN_BYTES);
    }
    t->bos = t->eos = -1;
    for (int k = 0; k < t->n_special; k++) {
        size_t n = strlen(t->special[k]);
        if (n == 0 || n > BPE_MAX_SPECIAL_LEN)
            return err_set(e, "%s: special token %d has length %zu (must be 1..%d)", name, k, n,
                           BPE_MAX_SPECIAL_LEN);
        for (int j = 0; j < k; j++)
            if (strcmp(t->special[j], t->special[k]) == 0)
                return err_set(e, "%s: special token %s appears twice", name, t->special[k]);
        off[256 + nm + k] = (int64_t)n;
        if (strcmp(t->special[k], BPE_BOS) == 0) t->bos = 256 + nm + k;
        if (strcmp(t->special[k], BPE_EOS) == 0) t->eos = 256 + nm + k;
    }
    if (t->bos < 0) return err_set(e, "%s: no %s special token", name, BPE_BOS);
    if (t->eos < 0) return err_set(e, "%s: no %s special token", name, BPE_EOS);
    int64_t total = 0;
    for (int i = 0; i < t->vocab; i++) {
        int64_t n = off[i];
        off[i] = total;
        total += n;
        if (total > MAX_TOKEN_BYTES)
            return err_set(e, "%s: tokens total more than %lld bytes", name,
                           (long long)MAX_TOKEN_BYTES);
    }
    off[t->vocab] = total;
    t->tok_bytes = xmalloc((size_t)total);
    for (int i = 0; i < 256; i++) t->tok_bytes[i] = (char)i;
    for (int i = 0; i < nm; i++) {
        int32_t a = t->merges[i][0], b = t->merges[i][1];
        char *dst = t->tok_bytes + off[256 + i];
        memcpy(dst, t->tok_bytes + off[a], (size_t)(off[a + 1] - off[a]));
        memcpy(dst + (off[a + 1] - off[a]), t->tok_bytes + off[b], (size_t)(off[b + 1] - off[b]));
    }
    for (int k = 0; k < t->n_special; k++)
        memcpy(t->tok_bytes + off[256 + nm + k], t->special[k], strlen(t->special[k]));
    if (t->pattern) {
        if (!(t->re = bbpe_compile_pattern(t->pattern, 1, name, e))) return -1;
        /* merged tokens by their bytes (the first id of equal bytes), for whole chunks */
        t->word_mask = hash_pow2_at_least(2 * (uint64_t)nm) - 1;
        t->word_id = xmalloc((t->word_mask + 1) * sizeof *t->word_id);
        memset(t->word_id, 0xff, (t->word_mask + 1) * sizeof *t->word_id);
        for (int i = 256; i < 256 + nm; i++) {
            const char *b = t->tok_bytes + off[i];
            size_t n = (size_t)(off[i + 1] - off[i]);
            uint64_t h = hash_mix64(hash_fnv1a(HASH_FNV_OFFSET, b, n)) & t->word_mask;
            for (;; h = (h + 1) & t->word_mask) {
                int32_t k = t->word_id[h];
                if (k < 0) {
                    t->word_id[h] = i;
                    break;
                }
                if ((size_t)(off[k + 1] - off[k]) == n && memcmp(t->tok_bytes + off[k], b, n) == 0) break;
            }
        }
    }
    t->id = compute_id(t);
    return 0;
}

/* the merged token whose bytes are s[0..n), or -1 */
static int32_t word_of(const Bpe *t, const uint8_t *s, size_t n) {
    for (uint64_t h = hash_mix64(hash_fnv1a(HASH_FNV_OFFSET, s, n)) & t->word_mask;; h = (h + 1) & t->word_mask) {
        int32_t k = t->word_id[h];
        if (k < 0) return -1;
        if ((size_t)(t->tok_off[k + 1] - t->tok_off[k]) == n && memcmp(t->tok_bytes + t->tok_off[k], s, n) == 0)
            return k;
    }
}

void bpe_free(Bpe *t) {
    if (!t) return;
    free(t->merges);
    for (int i = 0; t->special && i < t->n_special; i++) free(t->special[i]);
    free(t->special);
    free(t->tok_bytes);
    free(t->tok_off);
    merges_free(&t->ranks);
    free(t->pattern);
    pcre2_code_free(t->re);
    free(t->word_id);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------------------
// training: distinct chunks

typedef struct {
    uint64_t h;
    size_t off;    /* into ChunkMap.bytes */
    uint32_t len;  /* 0 = empty slot */
    int64_t count;
} ChunkSlot;

typedef struct {
    ChunkSlot *slot;
    uint64_t mask;
    size_t n;
    char *bytes;
    size_t nbytes, capbytes;
} ChunkMap;

static void chunk_map_grow(ChunkMap *m) {
    uint64_t size = (m->mask + 1) * 2;
    ChunkSlot *s = xcalloc(size, sizeof *s);
    for (uint64_t i = 0; i <= m->mask; i++) {
        if (!m->slot[i].len) continue;
        uint64_t h = m->slot[i].h & (size - 1);
        while (s[h].len) h = (h + 1) & (size - 1);
        s[h] = m->slot[i];
    }
    free(m->slot);
    m->slot = s;
    m->mask = size - 1;
}

static void chunk_map_add(ChunkMap *m, const char *p, uint32_t len) {
    uint64_t hv = hash_fnv1a(HASH_FNV_OFFSET, p, len), h = hv & m->mask;
    for (; m->slot[h].len; h = (h + 1) & m->mask) {
        ChunkSlot *s = &m->slot[h];
        if (s->h == hv && s->len == len && memcmp(m->bytes + s->off, p, len) == 0) {
            s->count++;
            return;
        }
    }
    if (m->nbytes + len > m->capbytes) {
        m->capbytes = (m->nbytes + len) * 2;
        m->bytes = xrealloc(m->bytes, m->capbytes);
    }
    memcpy(m->bytes + m->nbytes, p, len);
    m->slot[h] = (ChunkSlot){hv, m->nbytes, len, 1};
    m->nbytes += len;
    if (++m->n * 2 > m->mask) chunk_map_grow(m);
}

// ---------------------------------------------------------------------------
// training: symbols, pairs, heap

/* The distinct chunks laid end to end as one array of symbols. A merge
 * never compacts it: the merged right symbol becomes DEAD and the links skip
 * it, so a position names the same symbol for the whole run and the pairs
 * can list where they occur by the position of their left symbol. */
#define DEAD (-1)

typedef struct {
    int32_t a, b;
    int64_t count;   /* weighted occurrences now */
    int64_t orig;    /* count at the start of the current step (once touched) */
    uint32_t stamp;  /* step that last touched it */
    int32_t nwhere, capwhere;
    int64_t *where;  /* left positions of its occurrences, increasing; some
                      * stale (checked on use) */
} Pair;

typedef struct {
    int64_t count;
    int32_t a, b, p;
} HeapEnt;

typedef struct {
    int32_t *sym;       /* (nsym) symbol id, DEAD once merged into its left */
    int64_t *nxt, *prv; /* (nsym) next/previous live symbol of the chunk, -1 at its ends */
    int32_t *word;      /* (nsym) which chunk the position belongs to */
    int64_t *wcnt;      /* (nwords) how often that chunk occurs in the corpus */
    Pair *p;
    int32_t np, capp;
    MergeMap pairs;     /* (a, b) -> index in p */
    HeapEnt *heap;
    size_t nheap, capheap;
    int32_t *touched;   /* pairs whose count the current step changed */
    int32_t ntouched, captouched;
} Trainer;

/* index of pair (a, b), added with count 0 if new */
static int32_t pair_get(Trainer *T, int32_t a, int32_t b) {
    uint64_t v = merges_get(&T->pairs, a, b);
    if (v != MERGES_NONE) return (int32_t)v;
    if (T->np == T->capp) {
        T->capp = T->capp ? 2 * T->capp : 1024;
        T->p = xrealloc(T->p, (size_t)T->capp * sizeof *T->p);
    }
    int32_t i = T->np++;
    T->p[i] = (Pair){.a = a, .b = b};
    merges_put(&T->pairs, a, b, (uint64_t)i);
    return i;
}

static void where_add(Pair *p, int64_t pos) {
    if (p->nwhere && p->where[p->nwhere - 1] == pos) return;
    if (p->nwhere == p->capwhere) {
        LC_ASSERT(p->capwhere < INT32_MAX / 2);
        p->capwhere = p->capwhere ? 2 * p->capwhere : 4;
        p->where = xrealloc(p->where, (size_t)p->capwhere * sizeof *p->where);
    }
    p->where[p->nwhere++] = pos;
}

/* heap order: higher count first, then the smaller (a, b) */
static inline int heap_before(const HeapEnt *x, const HeapEnt *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static void heap_push(Trainer *T, int32_t p) {
    if (T->nheap == T->capheap) {
        T->capheap = T->capheap ? 2 * T->capheap : 1024;
        T->heap = xrealloc(T->heap, T->capheap * sizeof *T->heap);
    }
    HeapEnt x = {T->p[p].count, T->p[p].a, T->p[p].b, p};
    size_t i = T->nheap++;
    while (i > 0 && heap_before(&x, &T->heap[(i - 1) / 2])) {
        T->heap[i] = T->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    T->heap[i] = x;
}

static HeapEnt heap_pop(Trainer *T) {
    HeapEnt top = T->heap[0], x = T->heap[--T->nheap];
    size_t i = 0, n = T->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(&T->heap[c + 1], &T->heap[c])) c++;
        if (!heap_before(&T->heap[c], &x)) break;
        T->heap[i] = T->heap[c];
        i = c;
    }
    if (n) T->heap[i] = x;
    return top;
}

/* count of pair (a, b) += d, remembering its count before this step */
static void pair_add(Trainer *T, int32_t a, int32_t b, int64_t d, uint32_t step) {
    int32_t p = pair_get(T, a, b);
    Pair *q = &T->p[p];
    if (q->stamp != step) {
        q->stamp = step;
        q->orig = q->count;
        if (T->ntouched == T->captouched) {
            T->captouched = T->captouched ? 2 * T->captouched : 1024;
            T->touched = xrealloc(T->touched, (size_t)T->captouched * sizeof *T->touched);
        }
        T->touched[T->ntouched++] = p;
    }
    q->count += d;
}

/* Merge pair pi = (a, b) into c at each of its occurrences, left to right
 * (so "aaa" gives "c a"), with exact pair counts. At an occurrence x a b y
 * the pairs (x, a), (a, b), (b, y) go and (x, c), (c, y) come; when x is the
 * c of the previous occurrence the bookkeeping still adds up, since that
 * occurrence counted (c, a) in with y = a. */
static void apply_merge(Trainer *T, int32_t pi, int32_t c, uint32_t step) {
    int32_t a = T->p[pi].a, b = T->p[pi].b;
    int64_t *wl = T->p[pi].where; /* not appended to below: new pairs all hold c */
    int32_t nwl = T->p[pi].nwhere;
    T->ntouched = 0;
    for (int32_t k = 0; k < nwl; k++) {
        int64_t pos = wl[k], q = T->nxt[pos];
        if (T->sym[pos] != a || q < 0 || T->sym[q] != b) continue; /* stale */
        int64_t cnt = T->wcnt[T->word[pos]], x = T->prv[pos], y = T->nxt[q];
        pair_add(T, a, b, -cnt, step);
        if (x >= 0) {
            pair_add(T, T->sym[x], a, -cnt, step);
            pair_add(T, T->sym[x], c, cnt, step);
            where_add(&T->p[pair_get(T, T->sym[x], c)], x);
        }
        if (y >= 0) {
            pair_add(T, b, T->sym[y], -cnt, step);
            pair_add(T, c, T->sym[y], cnt, step);
            where_add(&T->p[pair_get(T, c, T->sym[y])], pos);
        }
        T->sym[pos] = c;
        T->sym[q] = DEAD;
        T->nxt[pos] = y;
        if (y >= 0) T->prv[y] = pos;
    }
    LC_ASSERT(T->p[pi].count == 0); /* every occurrence was merged */
    free(T->p[pi].where);           /* (a, b) can never form again */
    T->p[pi].where = NULL;
    T->p[pi].nwhere = T->p[pi].capwhere = 0;
    for (int32_t k = 0; k < T->ntouched; k++) {
        int32_t p = T->touched[k];
        if (T->p[p].count != T->p[p].orig && T->p[p].count > 0) heap_push(T, p);
    }
}

int bpe_train(Bpe *t, const char *const *texts, const size_t *lens, int ntexts, int vocab,
              Err *e) {
    return bpe_train_split(t, texts, lens, ntexts, vocab, BPE_DEFAULT_PATTERN, e);
}

int bpe_train_split(Bpe *t, const char *const *texts, const size_t *lens, int ntexts, int vocab,
                    const char *pattern, Err *e) {
    memset(t, 0, sizeof *t);
    if (vocab < 256 + N_SPECIAL + 1)
        return err_set(e, "--vocab: must be at least %d (256 bytes + %d special tokens + "
                          "1 merge), got %d", 256 + N_SPECIAL + 1, N_SPECIAL, vocab);
    if (vocab > BPE_MAX_VOCAB)
        return err_set(e, "--vocab: must be at most %d, got %d", BPE_MAX_VOCAB, vocab);
    int target = vocab - 256 - N_SPECIAL;
    if (pattern && strlen(pattern) > BPE_MAX_PATTERN)
        return err_set(e, "--pattern: longer than %d bytes", BPE_MAX_PATTERN);
    pcre2_code *re = NULL;
    if (pattern && !(re = bbpe_compile_pattern(pattern, 1, "--pattern", e))) return -1;
    ChunkLocal *l = re ? chunkcache_local() : NULL;

    /* 1. distinct chunks and their counts (one-byte chunks never merge) */
    ChunkMap cm = {.slot = xcalloc(1 << 16, sizeof(ChunkSlot)), .mask = (1 << 16) - 1};
    for (int d = 0; d < ntexts; d++) {
        const char *s = texts[d];
        for (size_t i = 0, j; i < lens[d]; i = j) {
            j = re ? regex_end(re, l, (const uint8_t *)s, lens[d], i) : bpe_chunk_end(s, lens[d], i);
            if (j - i > 1) chunk_map_add(&cm, s + i, (uint32_t)(j - i));
        }
    }

    /* 2. the chunks end to end as linked symbols */
    Trainer T = {0};
    LC_ASSERT(cm.n < INT32_MAX);
    size_t nsym = cm.nbytes ? cm.nbytes : 1;
    T.sym = xmalloc(nsym * sizeof *T.sym);
    T.nxt = xmalloc(nsym * sizeof *T.nxt);
    T.prv = xmalloc(nsym * sizeof *T.prv);
    T.word = xmalloc(nsym * sizeof *T.word);
    T.wcnt = xmalloc((cm.n ? cm.n : 1) * sizeof *T.wcnt);
    int64_t g = 0;
    int32_t nw = 0;
    for (uint64_t i = 0; i <= cm.mask; i++) {
        const ChunkSlot *s = &cm.slot[i];
        if (!s->len) continue;
        for (uint32_t k = 0; k < s->len; k++, g++) {
            T.sym[g] = (uint8_t)cm.bytes[s->off + k];
            T.prv[g] = k ? g - 1 : -1;
            T.nxt[g] = k + 1 < s->len ? g + 1 : -1;
            T.word[g] = nw;
        }
        T.wcnt[nw++] = s->count;
    }
    free(cm.slot);
    free(cm.bytes);

    /* 3. pair counts and occurrence lists, then the heap */
    merges_init(&T.pairs, 1 << 15);
    for (int64_t i = 0; i < g; i++) {
        if (T.nxt[i] < 0) continue;
        int32_t p = pair_get(&T, T.sym[i], T.sym[i + 1]);
        T.p[p].count += T.wcnt[T.word[i]];
        where_add(&T.p[p], i);
    }
    for (int32_t p = 0; p < T.np; p++) heap_push(&T, p);

    /* 4. merge the best pair until the vocabulary is full or no pair is left */
    t->merges = xmalloc((size_t)target * sizeof *t->merges);
    int nm = 0;
    while (nm < target && T.nheap) {
        HeapEnt top = heap_pop(&T);
        if (top.count != T.p[top.p].count || top.count <= 0) continue; /* stale */
        t->merges[nm][0] = top.a;
        t->merges[nm][1] = top.b;
        apply_merge(&T, top.p, 256 + nm, (uint32_t)nm + 1);
        nm++;
    }

    for (int32_t p = 0; p < T.np; p++) free(T.p[p].where);
    free(T.p);
    merges_free(&T.pairs);
    free(T.heap);
    free(T.touched);
    free(T.sym);
    free(T.nxt);
    free(T.prv);
    free(T.word);
    free(T.wcnt);

    t->merges = xrealloc(t->merges, (size_t)(nm ? nm : 1) * sizeof *t->merges);
    t->n_merges = nm;
    t->n_special = N_SPECIAL;
    t->special = xmalloc(N_SPECIAL * sizeof *t->special);
    for (int k = 0; k < N_SPECIAL; k++) {
        size_t n = strlen(special_names[k]) + 1;
        t->special[k] = memcpy(xmalloc(n), special_names[k], n);
    }
    pcre2_code_free(re);
    if (pattern) t->pattern = memcpy(xmalloc(strlen(pattern) + 1), pattern, strlen(pattern) + 1);
    int rc = build_tables(t, "bpe_train", e);
    LC_ASSERT(rc == 0); /* merges made here are valid by construction */
    return 0;
}

// ---------------------------------------------------------------------------
// encoding

/* A chunk: with a pattern, a whole token if it is one (ignore_merges) */
static int encode_word(const Bpe *t, const uint8_t *s, int n, int32_t *out) {
    if (t->word_id) {
        int32_t w = word_of(t, s, (size_t)n);
        if (w >= 0) {
            out[0] = w;
            return 1;
        }
    }
    for (int i = 0; i < n; i++) out[i] = s[i];
    return merges_apply(&t->ranks, out, n);
}

size_t bpe_encode(const Bpe *t, const char *text, size_t len, int32_t **ids, size_t *cap) {
    if (len == 0) return 0;
    ChunkLocal *l = chunkcache_claim(t->id);
    CacheSlot *cache = l->slot;
    int32_t *out = *ids;
    size_t n = 0, c = *cap;
    for (size_t i = 0, j; i < len; i = j) {
        j = t->re ? regex_end(t->re, l, (const uint8_t *)text, len, i) : bpe_chunk_end(text, len, i);
        size_t clen = j - i;
        if (n + clen > c) {
            c = c * 2 > n + clen ? c * 2 : n + clen + 256;
            out = xrealloc(out, c * sizeof *out);
        }
        const uint8_t *s = (const uint8_t *)text + i;
        if (clen == 1) {
            out[n++] = s[0];
            continue;
        }
        if (clen > CHUNK_CACHE_KEY) {
            n += (size_t)encode_word(t, s, (int)clen, out + n);
            continue;
        }
        uint64_t h = hash_fnv1a(HASH_FNV_OFFSET, s, clen);
        CacheSlot *slot = chunk_slot(cache, h);
        if (chunk_hit(slot, h, s, clen)) {
            memcpy(out + n, slot->ids, slot->nids * sizeof *out);
            n += slot->nids;
            continue;
        }
        int m = encode_word(t, s, (int)clen, out + n);
        chunk_store(slot, h, s, clen, out + n, (size_t)m);
        n += (size_t)m;
    }
    *ids = out;
    *cap = c;
    return n;
}

// ---------------------------------------------------------------------------
// decoding

const char *bpe_token_bytes(const Bpe *t, int id, size_t *len) {
    if (id < 0 || id >= t->vocab) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)(t->tok_off[id + 1] - t->tok_off[id]);
    return t->tok_bytes + t->tok_off[id];
}

size_t bpe_decode(const Bpe *t, const int32_t *ids, size_t n, char **out, size_t *cap) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab) return (size_t)-1;
        total += (size_t)(t->tok_off[ids[i] + 1] - t->tok_off[ids[i]]);
    }
    if (total > *cap) {
        *out = xrealloc(*out, total);
        *cap = total;
    }
    char *dst = *out;
    for (size_t i = 0; i < n; i++) {
        size_t k = (size_t)(t->tok_off[ids[i] + 1] - t->tok_off[ids[i]]);
        memcpy(dst, t->tok_bytes + t->tok_off[ids[i]], k);
        dst += k;
    }
    return total;
}

int bpe_special_id(const Bpe *t, const char *name) {
    for (int k = 0; k < t->n_special; k++)
        if (strcmp(t->special[k], name) == 0) return 256 + t->n_merges + k;
    return -1;
}

// ---------------------------------------------------------------------------
// file

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int bpe_save(const Bpe *t, const char *path, Err *e) {
    size_t size = 20 + 8 * (size_t)t->n_merges + 8, np = t->pattern ? strlen(t->pattern) : 0;
    for (int k = 0; k < t->n_special; k++) size += 4 + strlen(t->special[k]);
    if (t->pattern) size += 4 + np;
    uint8_t *buf = xmalloc(size), *p = buf;
    put_u32(p, BPE_MAGIC);
    put_u32(p + 4, t->pattern ? 2 : 1);
    put_u32(p + 8, (uint32_t)t->vocab);
    put_u32(p + 12, (uint32_t)t->n_merges);
    put_u32(p + 16, (uint32_t)t->n_special);
    p += 20;
    for (int i = 0; i < t->n_merges; i++, p += 8) {
        put_u32(p, (uint32_t)t->merges[i][0]);
        put_u32(p + 4, (uint32_t)t->merges[i][1]);
    }
    for (int k = 0; k < t->n_special; k++) {
        uint32_t n = (uint32_t)strlen(t->special[k]);
        put_u32(p, n);
        memcpy(p + 4, t->special[k], n);
        p += 4 + n;
    }
    if (t->pattern) {
        put_u32(p, (uint32_t)np);
        memcpy(p + 4, t->pattern, np);
        p += 4 + np;
    }
    put_u32(p, (uint32_t)t->id);
    put_u32(p + 4, (uint32_t)(t->id >> 32));

    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int rc = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = err_set(e, "%s: cannot write (%s)", path, strerror(errno));
    } else {
        size_t wrote = fwrite(buf, 1, size, f);
        int err = errno;
        if (fclose(f) != 0 && wrote == size) {
            err = errno;
            wrote = 0;
        }
        if (wrote != size) {
            rc = err_set(e, "%s: cannot write (%s)", path, strerror(err));
            remove(tmp);
        } else if (rename(tmp, path) != 0) {
            rc = err_set(e, "%s: cannot write (rename: %s)", path, strerror(errno));
            remove(tmp);
        }
    }
    free(tmp);
    free(buf);
    return rc;
}

static int load_impl(Bpe *t, const char *path, const uint8_t *b, size_t size, Err *e) {
    if (size < 4) return err_set(e, "%s: truncated", path);
    if (get_u32(b) != BPE_MAGIC) return err_set(e, "%s: not a llamac tokenizer (bad magic)", path);
    if (size < 20) return err_set(e, "%s: truncated", path);
    uint32_t version = get_u32(b + 4);
    if (version < 1 || version > BPE_VERSION)
        return err_set(e, "%s: unsupported version %u (this build reads 1 to %d)", path, version,
                       BPE_VERSION);
    uint32_t vocab = get_u32(b + 8), nm = get_u32(b + 12), ns = get_u32(b + 16);
    if (vocab > BPE_MAX_VOCAB || nm > BPE_MAX_VOCAB || ns > BPE_MAX_VOCAB ||
        (uint64_t)vocab != 256 + (uint64_t)nm + ns)
        return err_set(e, "%s: vocab %u is not 256 + %u merges + %u special tokens", path,
                       vocab, nm, ns);
    size_t pos = 20;
    if ((size - pos) / 8 < nm) return err_set(e, "%s: truncated", path);
    pos += 8 * (size_t)nm;
    for (uint32_t k = 0; k < ns; k++) {
        if (size - pos < 4) return err_set(e, "%s: truncated", path);
        uint32_t n = get_u32(b + pos);
        pos += 4;
        if (n == 0 || n > BPE_MAX_SPECIAL_LEN)
            return err_set(e, "%s: special token %u has length %u (must be 1..%d)", path, k, n,
                           BPE_MAX_SPECIAL_LEN);
        if (size - pos < n) return err_set(e, "%s: truncated", path);
        if (memchr(b + pos, 0, n))
            return err_set(e, "%s: special token %u holds a NUL byte", path, k);
        pos += n;
    }
    size_t pat_at = 0, pat_len = 0;
    if (version == 2) {
        if (size - pos < 4) return err_set(e, "%s: truncated", path);
        pat_len = get_u32(b + pos);
        pos += 4;
        if (pat_len == 0 || pat_len > BPE_MAX_PATTERN)
            return err_set(e, "%s: split pattern has length %zu (must be 1..%d)", path, pat_len, BPE_MAX_PATTERN);
        if (size - pos < pat_len) return err_set(e, "%s: truncated", path);
        if (memchr(b + pos, 0, pat_len)) return err_set(e, "%s: split pattern holds a NUL byte", path);
        pat_at = pos;
        pos += pat_len;
    }
    if (size - pos < 8) return err_set(e, "%s: truncated", path);
    uint64_t id = get_u32(b + pos) | (uint64_t)get_u32(b + pos + 4) << 32;
    if (size - pos > 8)
        return err_set(e, "%s: unexpected bytes after the checksum", path);
    /* the id is FNV-1a over exactly the bytes between the header and itself */
    if (hash_fnv1a(HASH_FNV_OFFSET, b + 20, pos - 20) != id)
        return err_set(e, "%s: corrupted (checksum mismatch)", path);

    t->n_merges = (int)nm;
    t->merges = xmalloc((nm ? nm : 1) * sizeof *t->merges);
    for (uint32_t i = 0; i < nm; i++) {
        t->merges[i][0] = (int32_t)get_u32(b + 20 + 8 * (size_t)i);
        t->merges[i][1] = (int32_t)get_u32(b + 24 + 8 * (size_t)i);
    }
    t->n_special = (int)ns;
    t->special = xcalloc(ns ? ns : 1, sizeof *t->special);
    pos = 20 + 8 * (size_t)nm;
    for (uint32_t k = 0; k < ns; k++) {
        uint32_t n = get_u32(b + pos);
        t->special[k] = xmalloc(n + 1);
        memcpy(t->special[k], b + pos + 4, n);
        t->special[k][n] = 0;
        pos += 4 + n;
    }
    if (pat_len) {
        t->pattern = xmalloc(pat_len + 1);
        memcpy(t->pattern, b + pat_at, pat_len);
        t->pattern[pat_len] = 0;
    }
    if (build_tables(t, path, e)) return -1;
    LC_ASSERT(t->id == id);
    return 0;
}

int bpe_load(Bpe *t, const char *path, Err *e) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    /* the header bounds the file size, so a wrong (huge) file is not read whole */
    uint8_t hdr[20];
    size_t n = fread(hdr, 1, sizeof hdr, f);
    size_t bound = sizeof hdr;
    if (n == sizeof hdr && get_u32(hdr) == BPE_MAGIC && get_u32(hdr + 4) >= 1 && get_u32(hdr + 4) <= BPE_VERSION) {
        uint64_t nm = get_u32(hdr + 12), ns = get_u32(hdr + 16);
        if (nm <= BPE_MAX_VOCAB && ns <= BPE_MAX_VOCAB)
            bound += 8 * nm + ns * (4 + BPE_MAX_SPECIAL_LEN) + 8 + (get_u32(hdr + 4) == 2 ? 4 + BPE_MAX_PATTERN : 0);
    }
    uint8_t *buf = xmalloc(bound + 1);
    memcpy(buf, hdr, n);
    if (n == sizeof hdr) n += fread(buf + n, 1, bound + 1 - n, f);
    int bad = ferror(f);
    fclose(f);
    int rc = bad ? err_set(e, "%s: read error", path)
                 : load_impl(t, path, buf, n > bound ? bound + 1 : n, e);
    free(buf);
    if (rc) bpe_free(t);
    return rc;
}
