/*
 * textfilter.c: the Gopher quality, Gopher repetition and C4 checks
 * (textfilter.h), with datatrove's arithmetic: lengths are Python string
 * lengths (code points), lines are str.splitlines(), paragraphs split at
 * "\n\n+" after strip(), fractions compare with ">" or "<" exactly as
 * datatrove writes them, and a threshold of 0 turns a Gopher check off
 * where datatrove tests it for truth first.
 */
#include "textfilter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/base.h"

/* Row order is the checking order; the report lists rows with a reason. */
const TextRule TEXTFILTER_RULES[] = {
    {TF_GOPHER, "gopher_short_doc", "gopher-min-words", TF_NUM, 50, 0, 1e12, "fewer non-symbol words than this"},
    {TF_GOPHER, "gopher_long_doc", "gopher-max-words", TF_NUM, 100000, 0, 1e12, "more non-symbol words than this"},
    {TF_GOPHER, "gopher_below_avg_threshold", "gopher-min-mean-word", TF_NUM, 3, 0, 1e6, "mean non-symbol word length (characters) below this"},
    {TF_GOPHER, "gopher_above_avg_threshold", "gopher-max-mean-word", TF_NUM, 10, 0, 1e6, "mean non-symbol word length above this"},
    {TF_GOPHER, "gopher_too_many_hashes", "gopher-max-symbol-ratio", TF_NUM, 0.1, 0, 1e6, "'#' per word above this (also bounds the next row)"},
    {TF_GOPHER, "gopher_too_many_ellipsis", NULL, TF_NUM, 0.1, 0, 1e6, "'...' and U+2026 per word above --gopher-max-symbol-ratio"},
    {TF_GOPHER, "gopher_too_many_bullets", "gopher-max-bullet-lines", TF_NUM, 0.9, 0, 1, "fraction of lines starting with U+2022 or '-' above this"},
    {TF_GOPHER, "gopher_too_many_end_ellipsis", "gopher-max-ellipsis-lines", TF_NUM, 0.3, 0, 1, "fraction of lines ending with '...' or U+2026 above this"},
    {TF_GOPHER, "gopher_below_alpha_threshold", "gopher-min-alpha-words", TF_NUM, 0.8, 0, 1, "fraction of words with a letter below this"},
    {TF_GOPHER, "gopher_enough_stop_words", "gopher-min-stop-words", TF_NUM, 2, 0, 8, "fewer distinct stop words (the be to of and that have with) than this"},
    {TF_GOPHER_REP, "empty", NULL, TF_NUM, 1, 0, 1, "empty text"},
    {TF_GOPHER_REP, "dup_para_frac", "rep-dup-para-frac", TF_NUM, 0.3, 0, 1, "fraction of paragraphs that repeat an earlier one above this"},
    {TF_GOPHER_REP, "dup_para_char_frac", "rep-dup-para-char-frac", TF_NUM, 0.2, 0, 1, "characters in repeated paragraphs / all characters above this"},
    {TF_GOPHER_REP, "dup_line_frac", "rep-dup-line-frac", TF_NUM, 0.3, 0, 1, "fraction of lines that repeat an earlier one above this"},
    {TF_GOPHER_REP, "dup_line_char_frac", "rep-dup-line-char-frac", TF_NUM, 0.2, 0, 1, "characters in repeated lines / all characters above this"},
    {TF_GOPHER_REP, "top_2_gram", "rep-top-2", TF_NUM, 0.2, 0, 1e6, "characters of the most frequent word 2-gram (times its count) / all above this"},
    {TF_GOPHER_REP, "top_3_gram", "rep-top-3", TF_NUM, 0.18, 0, 1e6, "the same for 3-grams"},
    {TF_GOPHER_REP, "top_4_gram", "rep-top-4", TF_NUM, 0.16, 0, 1e6, "the same for 4-grams"},
    {TF_GOPHER_REP, "duplicated_5_n_grams", "rep-dup-5", TF_NUM, 0.15, 0, 1e6, "characters in repeated word 5-grams / all characters above this"},
    {TF_GOPHER_REP, "duplicated_6_n_grams", "rep-dup-6", TF_NUM, 0.14, 0, 1e6, "the same for 6-grams"},
    {TF_GOPHER_REP, "duplicated_7_n_grams", "rep-dup-7", TF_NUM, 0.13, 0, 1e6, "the same for 7-grams"},
    {TF_GOPHER_REP, "duplicated_8_n_grams", "rep-dup-8", TF_NUM, 0.12, 0, 1e6, "the same for 8-grams"},
    {TF_GOPHER_REP, "duplicated_9_n_grams", "rep-dup-9", TF_NUM, 0.11, 0, 1e6, "the same for 9-grams"},
    {TF_GOPHER_REP, "duplicated_10_n_grams", "rep-dup-10", TF_NUM, 0.10, 0, 1e6, "the same for 10-grams"},
    {TF_C4, NULL, "c4-max-word-length", TF_NUM, 1000, -1, 1e9, "drop lines with a word longer than this (-1: off)"},
    {TF_C4, NULL, "c4-citations", TF_SWITCH, 1, 0, 1, "remove [1], [edit], [citation needed] from lines (1/0)"},
    {TF_C4, NULL, "c4-terminal-punct", TF_SWITCH, 1, 0, 1, "drop lines not ending in . ? ! \" ' or ending in ... (1/0)"},
    {TF_C4, NULL, "c4-min-line-words", TF_NUM, 3, -1, 1e9, "drop lines with fewer whitespace words (-1: off)"},
    {TF_C4, "lorem_ipsum", "c4-lorem-ipsum", TF_SWITCH, 1, 0, 1, "a kept line contains 'lorem ipsum' (1/0)"},
    {TF_C4, NULL, "c4-javascript", TF_SWITCH, 1, 0, 1, "drop lines containing 'javascript' (1/0)"},
    {TF_C4, "curly_bracket", "c4-curly-bracket", TF_SWITCH, 1, 0, 1, "a kept line contains '{' (1/0)"},
    {TF_C4, NULL, "c4-policy", TF_SWITCH, 1, 0, 1, "drop lines naming terms of use, privacy or cookie policy, cookies (1/0)"},
    {TF_C4, "too_few_sentences", "c4-min-sentences", TF_NUM, 5, -1, 1e9, "fewer sentences (spaCy sentencizer) in kept lines (-1: off)"},
};
const int TEXTFILTER_NRULES = (int)(sizeof TEXTFILTER_RULES / sizeof TEXTFILTER_RULES[0]);
const char *const TEXTFILTER_NAMES[TF_NFILTERS] = {"gopher", "gopher-rep", "c4"};

/* row indices the checks read (the table above, in order) */
enum {
    R_MIN_WORDS, R_MAX_WORDS, R_MIN_MEAN, R_MAX_MEAN, R_HASH, R_ELLIPSIS, R_BULLET, R_END_ELLIPSIS, R_ALPHA, R_STOP,
    R_EMPTY, R_PARA, R_PARA_CHAR, R_LINE, R_LINE_CHAR, R_TOP2, R_TOP3, R_TOP4, R_DUP5, R_DUP6, R_DUP7, R_DUP8,
    R_DUP9, R_DUP10,
    R_C4_WORDLEN, R_C4_CITE, R_C4_PUNCT, R_C4_LINEWORDS, R_C4_LOREM, R_C4_JS, R_C4_CURLY, R_C4_POLICY, R_C4_SENT,
    R_COUNT
};
_Static_assert(R_COUNT == sizeof TEXTFILTER_RULES / sizeof TEXTFILTER_RULES[0], "one enum per rule row");
_Static_assert(R_COUNT <= 64, "TextFilter.thr holds 64");

void textfilter_defaults(TextFilter *f) {
    memset(f, 0, sizeof *f);
    for (int i = 0; i < TF_NFILTERS; i++) f->on[i] = 1;
    for (int i = 0; i < R_COUNT; i++) f->thr[i] = TEXTFILTER_RULES[i].def;
}

// ----------------------------------------------------------------------------
// Python string helpers on UTF-8

/* code points in s[0..n) (len() of the Python string) */
static size_t nchars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* str.splitlines's line boundary at s[i]: its byte length, or 0 */
static size_t line_break(const unsigned char *s, size_t n, size_t i) {
    unsigned char c = s[i];
    if (c == '\r') return (i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
    if (c == '\n' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e)) return 1;
    if (c == 0xc2 && i + 1 < n && s[i + 1] == 0x85) return 2;
    if (c == 0xe2 && i + 2 < n && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) return 3;
    return 0;
}

typedef struct {
    size_t a, b;
} Range;

/* str.splitlines() of s[0..n): ranges into r (grown), returns the count */
static size_t splitlines(const char *s, size_t n, Range **r, size_t *cap) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = 0, start = 0;
    for (size_t i = 0; i < n;) {
        size_t b = line_break(u, n, i);
        if (!b) {
            i++;
            continue;
        }
        if (k == *cap) *r = xrealloc(*r, (*cap = *cap ? 2 * *cap : 64) * sizeof **r);
        (*r)[k++] = (Range){start, i};
        i += b;
        start = i;
    }
    if (start < n) {
        if (k == *cap) *r = xrealloc(*r, (*cap = *cap ? 2 * *cap : 64) * sizeof **r);
        (*r)[k++] = (Range){start, n};
    }
    return k;
}

/* str.strip() / lstrip() / rstrip(): narrow [a, b) of s */
static void lstrip(const char *s, size_t *a, size_t b) {
    size_t k;
    while (*a < b && (k = wordsplit_space_len((const unsigned char *)s + *a, b - *a))) *a += k;
}

static void rstrip(const char *s, size_t a, size_t *b) {
    for (;;) {
        size_t w = 0;
        for (size_t c = 1; c <= 3 && c <= *b - a && !w; c++)
            if (wordsplit_space_len((const unsigned char *)s + *b - c, c) == c &&
                (c == 1 || ((unsigned char)s[*b - c] & 0xc0) != 0x80))
                w = c;
        if (!w) return;
        *b -= w;
    }
}

static int starts(const char *s, size_t a, size_t b, const char *p) {
    size_t k = strlen(p);
    return b - a >= k && !memcmp(s + a, p, k);
}

static int ends(const char *s, size_t a, size_t b, const char *p) {
    size_t k = strlen(p);
    return b - a >= k && !memcmp(s + b - k, p, k);
}

/* str.count(p): non-overlapping occurrences */
static size_t count(const char *s, size_t n, const char *p) {
    size_t k = strlen(p), c = 0;
    const char *end = s + n, *q = s;
    while ((size_t)(end - q) >= k && (q = memchr(q, p[0], (size_t)(end - q) - k + 1)))
        if (!memcmp(q, p, k)) c++, q += k;
        else q++;
    return c;
}

/* p (lowercase ASCII) in s[a..b) lowercased (ASCII case folding: see docs/data.md) */
static int contains_lower(const char *s, size_t a, size_t b, const char *p) {
    size_t k = strlen(p);
    for (size_t i = a; i + k <= b; i++) {
        size_t j = 0;
        while (j < k && (s[i + j] >= 'A' && s[i + j] <= 'Z' ? s[i + j] | 0x20 : s[i + j]) == p[j]) j++;
        if (j == k) return 1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// hashing words and n-grams

#define HB 0x100000001b3ull /* the polynomial hashes' base (odd) */

static uint64_t hash_bytes(const char *s, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

typedef struct {
    uint64_t h;
    size_t first; /* the item's index of first occurrence */
    size_t count;
    int used;
} Slot;

typedef struct {
    Slot *s;
    size_t cap;
} Table;

static void table_reset(Table *t, size_t items) {
    size_t cap = 16;
    while (cap < 2 * items + 2) cap *= 2;
    if (cap > t->cap) {
        free(t->s);
        t->s = xmalloc(cap * sizeof *t->s);
        t->cap = cap;
    }
    memset(t->s, 0, t->cap * sizeof *t->s);
}

/* Find or insert the item with hash h whose equality eq(ud, idx, other)
 * decides; returns the slot. */
typedef int (*EqFn)(const void *ud, size_t a, size_t b);
static Slot *table_get(Table *t, uint64_t h, size_t idx, EqFn eq, const void *ud) {
    size_t m = t->cap - 1, i = (size_t)hash_mix64(h) & m;
    for (;; i = (i + 1) & m) {
        Slot *s = &t->s[i];
        if (!s->used) {
            *s = (Slot){h, idx, 0, 1};
            return s;
        }
        if (s->h == h && eq(ud, s->first, idx)) return s;
    }
}

typedef struct {
    const char *text;
    const Range *r;
    const WordTok *w;
    int n; /* n-gram size */
} EqCtx;

static int eq_range(const void *ud, size_t a, size_t b) {
    const EqCtx *c = ud;
    Range x = c->r[a], y = c->r[b];
    return x.b - x.a == y.b - y.a && !memcmp(c->text + x.a, c->text + y.a, x.b - x.a);
}

static int eq_words(const void *ud, size_t a, size_t b) { /* word by word (" ".join equality) */
    const EqCtx *c = ud;
    for (int k = 0; k < c->n; k++) {
        const WordTok *x = &c->w[a + k], *y = &c->w[b + k];
        if (x->len != y->len || memcmp(c->text + x->off, c->text + y->off, x->len)) return 0;
    }
    return 1;
}

static int eq_concat(const void *ud, size_t a, size_t b) { /* "".join equality: the bytes, across word ends */
    const EqCtx *c = ud;
    size_t ia = a, ib = b, oa = 0, ob = 0;
    for (;;) {
        while (ia < a + (size_t)c->n && oa == c->w[ia].len) ia++, oa = 0;
        while (ib < b + (size_t)c->n && ob == c->w[ib].len) ib++, ob = 0;
        int ea = ia == a + (size_t)c->n, eb = ib == b + (size_t)c->n;
        if (ea || eb) return ea && eb;
        if (c->text[c->w[ia].off + oa] != c->text[c->w[ib].off + ob]) return 0;
        oa++, ob++;
    }
}

// ----------------------------------------------------------------------------
// the scratch a document needs

typedef struct {
    Range *r;
    size_t rcap;
    WordTok *w;   /* the words (space tokens dropped) */
    size_t nw, wcap;
    size_t *wc;   /* code points of each word */
    uint64_t *wh; /* (nw) each word's polynomial hash of its bytes */
    uint64_t *pw; /* (nw) HB^(its bytes) */
    uint64_t *H;  /* (nw + 1) hash of the concatenated bytes of words [0, i) */
    Table t;
    char *line;   /* C4: a line after citation removal */
    size_t lcap;
} Work;

static Work *work(TextScratch *s) {
    if (!s->buf) s->buf = xcalloc(1, sizeof(Work));
    return s->buf;
}

static void words_of(TextScratch *s, Work *w, const char *text, size_t len) {
    wordsplit_run(&s->ws, text, len);
    if (w->wcap < s->ws.n || !w->H) {
        w->wcap = s->ws.n > 16 ? s->ws.n : 16;
        w->w = xrealloc(w->w, w->wcap * sizeof *w->w);
        w->wc = xrealloc(w->wc, w->wcap * sizeof *w->wc);
        w->wh = xrealloc(w->wh, w->wcap * sizeof *w->wh);
        w->pw = xrealloc(w->pw, w->wcap * sizeof *w->pw);
        w->H = xrealloc(w->H, (w->wcap + 1) * sizeof *w->H);
    }
    w->nw = 0;
    for (size_t i = 0; i < s->ws.n; i++)
        if (!s->ws.tok[i].space) {
            w->w[w->nw] = s->ws.tok[i];
            w->wc[w->nw] = nchars(text + s->ws.tok[i].off, s->ws.tok[i].len);
            w->nw++;
        }
    /* polynomial hashes mod 2^64: a run of words' concatenated bytes hashes to
     * H[b] - H[a] * HB^(its bytes), whatever the word boundaries inside */
    w->H[0] = 0;
    for (size_t i = 0; i < w->nw; i++) {
        uint64_t h = 0, p = 1;
        const unsigned char *c = (const unsigned char *)text + w->w[i].off;
        for (uint32_t j = 0; j < w->w[i].len; j++) h = h * HB + c[j], p *= HB;
        w->wh[i] = h;
        w->pw[i] = p;
        w->H[i + 1] = w->H[i] * p + h;
    }
}

// ----------------------------------------------------------------------------
// Gopher quality (datatrove GopherQualityFilter.filter)

static const char *const STOP_WORDS[] = {"the", "be", "to", "of", "and", "that", "have", "with"};

static int gopher_quality(const double *thr, TextScratch *s, Work *w, const char *text, size_t len) {
    size_t n_words = w->nw, n_ns = 0, ns_chars = 0;
    for (size_t i = 0; i < n_words; i++)
        if (!wordsplit_symbol_word(text + w->w[i].off, w->w[i].len)) n_ns++, ns_chars += w->wc[i];
    if (thr[R_MIN_WORDS] && (double)n_ns < thr[R_MIN_WORDS]) return R_MIN_WORDS;
    if (thr[R_MAX_WORDS] && (double)n_ns > thr[R_MAX_WORDS]) return R_MAX_WORDS;
    double mean = n_ns ? (double)ns_chars / (double)n_ns : NAN; /* numpy: mean of nothing is NaN, no check fires */
    if (thr[R_MIN_MEAN] && mean < thr[R_MIN_MEAN]) return R_MIN_MEAN;
    if (thr[R_MAX_MEAN] && mean > thr[R_MAX_MEAN]) return R_MAX_MEAN;
    double nw = (double)n_words; /* datatrove divides by zero here (an exception); x/0 = inf, 0/0 = NaN */
    if (thr[R_HASH] && (double)count(text, len, "#") / nw > thr[R_HASH]) return R_HASH;
    if (thr[R_HASH] && (double)(count(text, len, "...") + count(text, len, "\xe2\x80\xa6")) / nw > thr[R_HASH])
        return R_ELLIPSIS;
    size_t nl = splitlines(text, len, &w->r, &w->rcap);
    if (thr[R_BULLET] || thr[R_END_ELLIPSIS]) {
        size_t bul = 0, ell = 0;
        for (size_t i = 0; i < nl; i++) {
            size_t a = w->r[i].a, b = w->r[i].b, a2 = a, b2 = b;
            lstrip(text, &a2, b);
            rstrip(text, a, &b2);
            bul += starts(text, a2, b, "\xe2\x80\xa2") || starts(text, a2, b, "-");
            ell += ends(text, a, b2, "...") || ends(text, a, b2, "\xe2\x80\xa6");
        }
        if (thr[R_BULLET] && (double)bul / (double)nl > thr[R_BULLET]) return R_BULLET;
        if (thr[R_END_ELLIPSIS] && (double)ell / (double)nl > thr[R_END_ELLIPSIS]) return R_END_ELLIPSIS;
    }
    if (thr[R_ALPHA]) {
        size_t al = 0;
        for (size_t i = 0; i < n_words; i++) al += wordsplit_has_alpha(&s->ws, text + w->w[i].off, w->w[i].len);
        if ((double)al / nw < thr[R_ALPHA]) return R_ALPHA;
    }
    if (thr[R_STOP]) {
        int seen = 0, nseen = 0;
        for (size_t i = 0; i < n_words && nseen < 8; i++) {
            if (w->w[i].len < 2 || w->w[i].len > 4) continue; /* the stop words' lengths */
            for (int k = 0; k < 8; k++)
                if (!(seen >> k & 1) && w->w[i].len == strlen(STOP_WORDS[k]) &&
                    !memcmp(text + w->w[i].off, STOP_WORDS[k], w->w[i].len))
                    seen |= 1 << k, nseen++;
        }
        if ((double)nseen < thr[R_STOP]) return R_STOP;
    }
    return -1;
}

// ----------------------------------------------------------------------------
// Gopher repetition (datatrove GopherRepetitionFilter.filter)

/* datatrove's find_duplicates over ranges r[0..n): elements seen before, and their code points */
static void find_duplicates(Work *w, const char *text, size_t n, size_t *dup, size_t *dup_chars) {
    table_reset(&w->t, n);
    EqCtx c = {text, w->r, NULL, 0};
    *dup = *dup_chars = 0;
    for (size_t i = 0; i < n; i++) {
        Slot *s = table_get(&w->t, hash_bytes(text + w->r[i].a, w->r[i].b - w->r[i].a, 0xcbf29ce484222325ull), i,
                            eq_range, &c);
        if (s->count++) (*dup)++, *dup_chars += nchars(text + w->r[i].a, w->r[i].b - w->r[i].a);
    }
}

/* split s[a..b) at runs of at least `min` '\n' (re.split(r"\n{min,}")) into w->r */
static size_t split_newlines(Work *w, const char *s, size_t a, size_t b, int min) {
    size_t k = 0, start = a;
    for (size_t i = a; i < b;) {
        size_t j = i;
        while (j < b && s[j] == '\n') j++;
        if (j - i >= (size_t)min) {
            if (k == w->rcap) w->r = xrealloc(w->r, (w->rcap = w->rcap ? 2 * w->rcap : 64) * sizeof *w->r);
            w->r[k++] = (Range){start, i};
            start = j;
        }
        i = j > i ? j : i + 1;
    }
    if (k == w->rcap) w->r = xrealloc(w->r, (w->rcap = w->rcap ? 2 * w->rcap : 64) * sizeof *w->r);
    w->r[k++] = (Range){start, b};
    return k;
}

static int gopher_rep(const double *thr, Work *w, const char *text, size_t len) {
    if (!len) return R_EMPTY;
    double nc = (double)nchars(text, len);
    size_t a = 0, b = len, dup, dupc;
    lstrip(text, &a, b);
    rstrip(text, a, &b);
    size_t np = split_newlines(w, text, a, b, 2);
    find_duplicates(w, text, np, &dup, &dupc);
    if (thr[R_PARA] && (double)dup / (double)np > thr[R_PARA]) return R_PARA;
    if (thr[R_PARA_CHAR] && (double)dupc / nc > thr[R_PARA_CHAR]) return R_PARA_CHAR;
    size_t nl = split_newlines(w, text, 0, len, 1);
    find_duplicates(w, text, nl, &dup, &dupc);
    if (thr[R_LINE] && (double)dup / (double)nl > thr[R_LINE]) return R_LINE;
    if (thr[R_LINE_CHAR] && (double)dupc / nc > thr[R_LINE_CHAR]) return R_LINE_CHAR;
    size_t nw = w->nw;
    for (int n = 2; n <= 4; n++) { /* the most frequent n-gram, the first of equals (Counter.most_common) */
        double t = thr[R_TOP2 + n - 2];
        if (!t || nw < (size_t)n) continue;
        table_reset(&w->t, nw);
        EqCtx c = {text, NULL, w->w, n};
        size_t best = 0, best_first = 0, best_chars = 0;
        for (size_t i = 0; i + n <= nw; i++) {
            uint64_t h = (uint64_t)n;
            for (int k = 0; k < n; k++) h = hash_mix64(h ^ w->wh[i + k]) + w->w[i + k].len;
            Slot *s = table_get(&w->t, h, i, eq_words, &c);
            s->count++;
            if (s->count > best || (s->count == best && s->first < best_first)) {
                best = s->count;
                best_first = s->first;
                size_t ch = (size_t)n - 1;
                for (int k = 0; k < n; k++) ch += w->wc[s->first + k];
                best_chars = ch;
            }
        }
        if ((double)(best_chars * best) / nc > t) return R_TOP2 + n - 2;
    }
    for (int n = 5; n <= 10; n++) { /* datatrove's find_all_duplicate: a repeat skips its n words */
        double t = thr[R_DUP5 + n - 5];
        if (!t) continue;
        size_t rep = 0;
        if (nw >= (size_t)n) {
            table_reset(&w->t, nw);
            EqCtx c = {text, NULL, w->w, n};
            for (size_t i = 0; i + n <= nw;) {
                uint64_t p = 1;
                size_t ch = 0;
                for (int k = 0; k < n; k++) p *= w->pw[i + k], ch += w->wc[i + k];
                Slot *s = table_get(&w->t, w->H[i + n] - w->H[i] * p, i, eq_concat, &c);
                if (s->count++) rep += ch, i += (size_t)n;
                else i++;
            }
        }
        if ((double)rep / nc > t) return R_DUP5 + n - 5;
    }
    return -1;
}

// ----------------------------------------------------------------------------
// C4 quality (datatrove C4QualityFilter.filter, lines as paragraphs)

static const char *const POLICY[] = {"terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"};

/* remove [digits], [edit], [citation needed] (datatrove's CITATION_REGEX) from s[a..b) into w->line */
static size_t remove_citations(Work *w, const char *s, size_t a, size_t b) {
    if (w->lcap < b - a + 1) w->line = xrealloc(w->line, w->lcap = b - a + 1);
    size_t o = 0;
    for (size_t i = a; i < b;) {
        if (s[i] == '[') {
            size_t j = i + 1;
            while (j < b && s[j] >= '0' && s[j] <= '9') j++; /* \d beyond ASCII: see docs/data.md */
            size_t m = 0;
            if (j < b && s[j] == ']') m = j + 1 - i;
            else if (starts(s, i, b, "[edit]")) m = 6;
            else if (starts(s, i, b, "[citation needed]")) m = 17;
            if (m) {
                i += m;
                continue;
            }
        }
        w->line[o++] = s[i++];
    }
    return o;
}

static size_t count_sentences(TextScratch *s, const char *line, size_t n) {
    wordsplit_run(&s->line, line, n);
    if (!s->line.n) return 1; /* datatrove's split_into_sentences gives the whole text back */
    size_t sents = 1;
    int seen = 0;
    for (size_t i = 0; i < s->line.n; i++) {
        const char *t = line + s->line.tok[i].off;
        size_t k = s->line.tok[i].len;
        int in = wordsplit_sent_punct(t, k);
        if (seen && !in && !wordsplit_is_punct(t, k)) sents++, seen = 0;
        else if (in) seen = 1;
    }
    return sents;
}

static int c4(const double *thr, TextScratch *s, Work *w, const char *text, size_t len) {
    size_t nl = splitlines(text, len, &w->r, &w->rcap);
    Range *lines = xmalloc((nl ? nl : 1) * sizeof *lines); /* w->r is reused below */
    memcpy(lines, w->r, nl * sizeof *lines);
    double sents = 0;
    int rc = -1;
    for (size_t li = 0; li < nl && rc < 0; li++) {
        size_t a = lines[li].a, b = lines[li].b;
        lstrip(text, &a, b);
        rstrip(text, a, &b);
        size_t nwords = 0, longest = 0; /* str.split(): whitespace-separated */
        for (size_t i = a; i < b;) {
            size_t k;
            while (i < b && (k = wordsplit_space_len((const unsigned char *)text + i, b - i))) i += k;
            if (i >= b) break;
            size_t st = i;
            while (i < b && !wordsplit_space_len((const unsigned char *)text + i, b - i)) i++;
            nwords++;
            size_t c = nchars(text + st, i - st);
            if (c > longest) longest = c;
        }
        if (thr[R_C4_WORDLEN] != -1 && (double)longest > thr[R_C4_WORDLEN]) continue;
        const char *ln = text + a;
        size_t n = b - a;
        if (thr[R_C4_CITE]) {
            n = remove_citations(w, text, a, b);
            ln = w->line;
        }
        if (thr[R_C4_PUNCT]) {
            int endp = n && ln[n - 1] && strchr(".?!\"'", ln[n - 1]); /* NUL is no punctuation */
            if (!endp || ends(ln, 0, n, "...")) continue;
        }
        if ((double)nwords < thr[R_C4_LINEWORDS]) continue;
        if (thr[R_C4_LOREM] && contains_lower(ln, 0, n, "lorem ipsum")) rc = R_C4_LOREM;
        else if (thr[R_C4_JS] && contains_lower(ln, 0, n, "javascript")) continue;
        else if (thr[R_C4_CURLY] && memchr(ln, '{', n)) rc = R_C4_CURLY;
        else {
            int pol = 0;
            for (int k = 0; k < 6 && thr[R_C4_POLICY] && !pol; k++) pol = contains_lower(ln, 0, n, POLICY[k]);
            if (pol) continue;
            if (thr[R_C4_SENT] != -1) sents += (double)count_sentences(s, ln, n);
        }
    }
    free(lines);
    if (rc >= 0) return rc;
    if (sents < thr[R_C4_SENT]) return R_C4_SENT;
    return -1;
}

// ----------------------------------------------------------------------------

int textfilter_check(const TextFilter *f, TextScratch *s, const char *text, size_t len) {
    Work *w = work(s);
    int rc = -1;
    if (f->on[TF_GOPHER] || f->on[TF_GOPHER_REP]) words_of(s, w, text, len);
    if (f->on[TF_GOPHER]) rc = gopher_quality(f->thr, s, w, text, len);
    if (rc < 0 && f->on[TF_GOPHER_REP]) rc = gopher_rep(f->thr, w, text, len);
    if (rc < 0 && f->on[TF_C4]) rc = c4(f->thr, s, w, text, len);
    return rc;
}

void textfilter_scratch_free(TextScratch *s) {
    Work *w = s->buf;
    if (w) {
        free(w->r);
        free(w->w);
        free(w->wc);
        free(w->wh);
        free(w->pw);
        free(w->H);
        free(w->t.s);
        free(w->line);
        free(w);
    }
    wordsplit_free(&s->ws);
    wordsplit_free(&s->line);
    memset(s, 0, sizeof *s);
}
