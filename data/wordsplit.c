/*
 * wordsplit.c: spaCy's English tokenizer algorithm (wordsplit.h) over the
 * settings in wordsplit_en.inc. Facts followed (spaCy 3.8 tokenizer): spans
 * alternate between whitespace and the rest, a single ' ' after a token is
 * not a token; a span that is a special case becomes its tokens; otherwise
 * the loop strips one prefix and one suffix per round (the prefix regex
 * anchored at the start, the suffix regex's leftmost match reaching the end,
 * searched after the prefix) and stops early when what remains, or what
 * remains without the new prefix or suffix, is a special case; the core is
 * then a special case, a URL, or split at each infix match except one at
 * its start. Afterwards a special case whose affix-only tokenization
 * appears as adjacent tokens replaces them (longest first, then leftmost).
 *
 * Threads share the compiled patterns and the special-case index (written
 * once by wordsplit_init); each WordSplit owns its match data.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "wordsplit.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "../model/base.h"

typedef struct WordSpecial {
    const char *s;
    unsigned char len[5]; /* token byte lengths, 0-terminated */
} WordSpecial;

#include "wordsplit_en.inc"

#define NSPECIAL ((int)(sizeof WS_SPECIALS / sizeof WS_SPECIALS[0]))
#define NSENT ((int)(sizeof WS_SENT_PUNCT / sizeof WS_SENT_PUNCT[0]))
#define SPECIAL_SLOTS 8192 /* the special cases' hash table: 4x the rows (most lookups miss) */
#define PAT_MAX 16 /* tokens of a special case's affix-only split (the longest is 11) */

typedef struct {
    size_t slen;
    int matcher;            /* 1: the special-case matcher looks for it */
    int npat;
    uint32_t pat[PAT_MAX];  /* the affix-only split's token lengths */
} SpecialInfo;

static struct {
    pcre2_code *prefix, *suffix, *infix, *url, *punct, *alpha;
    SpecialInfo info[NSPECIAL];
    int max_pat;
    unsigned char first[256]; /* first bytes of matcher specials */
    int16_t slot[SPECIAL_SLOTS]; /* 1 + row of WS_SPECIALS, 0: empty */
    size_t max_special;          /* bytes of the longest special case */
    int ready;
} G;

// ----------------------------------------------------------------------------
// characters

size_t wordsplit_space_len(const unsigned char *s, size_t n) {
    if (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x1f)) return 1;
    if (s[0] < 0x80) return 0;
    if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (n >= 3 && s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80) return 3; /* U+1680 */
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 && (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
        return 3; /* U+2000-200A, 2028, 2029, 202F */
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) return 3; /* U+205F */
    if (n >= 3 && s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80) return 3; /* U+3000 */
    return 0;
}

static size_t char_len(const unsigned char *s, size_t n) {
    size_t k = utf8_seq_len(s, n);
    return k ? k : 1;
}

/* ASCII characters of Unicode category P (the others, $+<=>^`|~, are S) */
static const char ASCII_PUNCT[] = "!\"#%&'()*,-./:;?@[\\]_{}";

int wordsplit_is_punct(const char *s, size_t n) {
    if (!n) return 0;
    int ascii = 1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) ascii = 0;
        else if (!s[i] || !strchr(ASCII_PUNCT, s[i])) return 0; /* NUL is Cc */
    if (ascii) return 1;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(G.punct, NULL);
    int rc = pcre2_match(G.punct, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

int wordsplit_sent_punct(const char *s, size_t n) {
    if (!n || n > 4 || utf8_seq_len((const unsigned char *)s, n) != n) return 0; /* one character each */
    for (int i = 0; i < NSENT; i++)
        if (strlen(WS_SENT_PUNCT[i]) == n && !memcmp(WS_SENT_PUNCT[i], s, n)) return 1;
    return 0;
}

// ----------------------------------------------------------------------------
// special cases and regexes

_Static_assert(SPECIAL_SLOTS >= 4 * NSPECIAL, "special-case table at most a quarter full");

static uint64_t special_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static int special_find(const char *s, size_t n) {
    if (n > G.max_special) return -1;
    for (size_t i = special_hash(s, n) & (SPECIAL_SLOTS - 1);; i = (i + 1) & (SPECIAL_SLOTS - 1)) {
        int k = G.slot[i] - 1;
        if (k < 0) return -1;
        if (G.info[k].slen == n && !memcmp(WS_SPECIALS[k].s, s, n)) return k;
    }
}

static pcre2_code *compile(const char *pat) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK,
                                   &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        LC_FATAL("wordsplit: pattern does not compile at %zu: %s", (size_t)eo, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT support the interpreter runs */
    return re;
}

/* first match of re in s[0..n) from byte at; 1 with [*a, *b), or 0 */
static int search(pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, size_t at, size_t *a, size_t *b) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc < 0) return 0;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *a = ov[0];
    *b = ov[1];
    return 1;
}

static size_t find_prefix(pcre2_match_data *md, const char *s, size_t n) {
    size_t a, b;
    return search(G.prefix, md, s, n, 0, &a, &b) ? b - a : 0;
}

static size_t find_suffix(pcre2_match_data *md, const char *s, size_t n) {
    size_t a, b;
    return search(G.suffix, md, s, n, 0, &a, &b) ? b - a : 0;
}

// ----------------------------------------------------------------------------
// one span

static void push(WordSplit *ws, size_t off, size_t len, int space) {
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? 2 * ws->cap : 256;
        ws->tok = xrealloc(ws->tok, ws->cap * sizeof *ws->tok);
    }
    ws->tok[ws->n++] = (WordTok){(uint32_t)off, (uint32_t)len, space};
}

static void push_special(WordSplit *ws, int k, size_t off, int space) {
    for (int j = 0; WS_SPECIALS[k].len[j]; j++) {
        push(ws, off, WS_SPECIALS[k].len[j], space);
        off += WS_SPECIALS[k].len[j];
    }
}

static int is_special(int specials, const char *s, size_t n) { return specials && n && special_find(s, n) >= 0; }

/* spaCy's _tokenize on text[a..b): affixes, then the core */
static void span_tokenize(WordSplit *ws, const char *text, size_t a, size_t b, int specials, int space) {
    pcre2_match_data *md = ws->md;
    size_t npre = 0, nsuf = 0, pre_at = a; /* affix lengths in ws->aff: prefixes up from 0, suffixes down from the end */
    size_t need = 2 * (b - a) + 2;           /* an affix is at least one byte */
    if (ws->aff_cap < need) {
        ws->aff_cap = need;
        ws->aff = xrealloc(ws->aff, need * sizeof *ws->aff);
    }
    uint32_t *pre = ws->aff, *suf = ws->aff + (b - a) + 1;
    size_t s = a, e = b, last = (size_t)-1;
    while (s < e && e - s != last) {
        if (is_special(specials, text + s, e - s)) break;
        last = e - s;
        size_t pl = find_prefix(md, text + s, e - s);
        if (pl && is_special(specials, text + s + pl, e - s - pl)) {
            pre[npre++] = (uint32_t)pl;
            s += pl;
            break;
        }
        size_t sl = find_suffix(md, text + s + pl, e - s - pl);
        if (sl && is_special(specials, text + s, e - s - sl)) {
            suf[nsuf++] = (uint32_t)sl;
            e -= sl;
            break;
        }
        if (pl && sl && pl + sl <= e - s) {
            pre[npre++] = (uint32_t)pl;
            suf[nsuf++] = (uint32_t)sl;
            s += pl;
            e -= sl;
        } else if (pl) {
            pre[npre++] = (uint32_t)pl;
            s += pl;
        } else if (sl) {
            suf[nsuf++] = (uint32_t)sl;
            e -= sl;
        }
    }
    for (size_t i = 0; i < npre; i++) {
        push(ws, pre_at, pre[i], space);
        pre_at += pre[i];
    }
    if (s < e) {
        int k = specials ? special_find(text + s, e - s) : -1;
        size_t ma, mb;
        if (k >= 0) push_special(ws, k, s, space);
        else if (search(G.url, md, text + s, e - s, 0, &ma, &mb)) push(ws, s, e - s, space);
        else {
            size_t start = 0, at = 0, n = e - s;
            while (at <= n && search(G.infix, md, text + s, n, at, &ma, &mb)) {
                if (mb == ma) { /* an empty match: step one character */
                    at = mb + (mb < n ? char_len((const unsigned char *)text + s + mb, n - mb) : 1);
                    continue;
                }
                at = mb;
                if (ma == 0) continue; /* spaCy keeps an infix at the start attached */
                if (ma != start) push(ws, s + start, ma - start, space);
                push(ws, s + ma, mb - ma, space);
                start = mb;
            }
            if (start < n) push(ws, s + start, n - start, space);
        }
    }
    size_t at = e;
    for (size_t i = nsuf; i-- > 0;) {
        push(ws, at, suf[i], space);
        at += suf[i];
    }
}

/* spaCy's _tokenize_affixes: spans of whitespace and the rest */
static void tokenize_affixes(WordSplit *ws, const char *text, size_t len, int specials) {
    const unsigned char *u = (const unsigned char *)text;
    ws->n = 0;
    if (!len) return;
    int in_ws = wordsplit_space_len(u, len) > 0;
    size_t start = 0, i = 0;
    while (i < len) {
        size_t sp = wordsplit_space_len(u + i, len - i);
        size_t k = sp ? sp : char_len(u + i, len - i);
        if ((sp > 0) != in_ws) {
            if (start < i) {
                int kk = specials ? special_find(text + start, i - start) : -1;
                if (kk >= 0) push_special(ws, kk, start, in_ws);
                else span_tokenize(ws, text, start, i, specials, in_ws);
            }
            start = u[i] == ' ' ? i + 1 : i;
            in_ws = !in_ws;
        }
        i += k;
    }
    if (start < len) {
        int kk = specials ? special_find(text + start, len - start) : -1;
        if (kk >= 0) push_special(ws, kk, start, in_ws);
        else span_tokenize(ws, text, start, len, specials, in_ws);
    }
}

// ----------------------------------------------------------------------------
// the special-case matcher

typedef struct {
    int start, len, k;
} Match;

static int match_cmp(const void *pa, const void *pb) { /* spaCy's len_start_cmp, ascending */
    const Match *a = pa, *b = pb;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    return a->start > b->start ? -1 : a->start < b->start ? 1 : 0;
}

static int start_cmp(const void *pa, const void *pb) {
    const Match *a = pa, *b = pb;
    return a->start < b->start ? -1 : a->start > b->start;
}

static void apply_specials(WordSplit *ws, const char *text) {
    Match *m = NULL;
    size_t nm = 0, cm = 0;
    for (size_t i = 0; i < ws->n; i++) {
        if (!G.first[(unsigned char)text[ws->tok[i].off]]) continue;
        for (int L = 1; L <= G.max_pat && i + (size_t)L <= ws->n; L++) {
            const WordTok *t = ws->tok + i;
            if (L > 1 && t[L - 2].off + t[L - 2].len != t[L - 1].off) break; /* spaces between: no special */
            size_t a = t[0].off, b = t[L - 1].off + t[L - 1].len;
            int k = special_find(text + a, b - a);
            if (k < 0 || !G.info[k].matcher || G.info[k].npat != L) continue;
            int same = 1;
            for (int j = 0; j < L && same; j++) same = G.info[k].pat[j] == t[j].len;
            if (!same) continue;
            if (nm == cm) m = xrealloc(m, (cm = cm ? 2 * cm : 16) * sizeof *m);
            m[nm++] = (Match){(int)i, L, k};
        }
    }
    if (!nm) return;
    qsort(m, nm, sizeof *m, match_cmp);
    unsigned char *seen = xcalloc(ws->n, 1);
    Match *kept = xmalloc(nm * sizeof *kept);
    size_t nk = 0;
    for (size_t j = nm; j-- > 0;) {
        Match x = m[j];
        if (!seen[x.start] && !seen[x.start + x.len - 1]) kept[nk++] = x;
        for (int q = x.start; q < x.start + x.len; q++) seen[q] = 1;
    }
    free(seen);
    free(m);
    m = kept;
    qsort(m, nk, sizeof *m, start_cmp);
    if (ws->tmp_cap < ws->n + 8 * nk) {
        ws->tmp_cap = ws->n + 8 * nk;
        ws->tmp = xrealloc(ws->tmp, ws->tmp_cap * sizeof *ws->tmp);
    }
    size_t o = 0, j = 0;
    for (size_t i = 0; i < ws->n;) {
        if (j < nk && (size_t)m[j].start == i) {
            uint32_t off = ws->tok[i].off;
            int sp = ws->tok[i].space;
            for (int q = 0; WS_SPECIALS[m[j].k].len[q]; q++) {
                ws->tmp[o++] = (WordTok){off, WS_SPECIALS[m[j].k].len[q], sp};
                off += WS_SPECIALS[m[j].k].len[q];
            }
            i += (size_t)m[j].len;
            j++;
        } else ws->tmp[o++] = ws->tok[i++];
    }
    if (ws->cap < o) {
        ws->cap = o;
        ws->tok = xrealloc(ws->tok, ws->cap * sizeof *ws->tok);
    }
    memcpy(ws->tok, ws->tmp, o * sizeof *ws->tok);
    ws->n = o;
    free(m);
}

// ----------------------------------------------------------------------------
// public

void wordsplit_init(void) {
    if (G.ready) return;
    G.prefix = compile(WS_PREFIX);
    G.suffix = compile(WS_SUFFIX);
    G.infix = compile(WS_INFIX);
    G.url = compile(WS_URL);
    G.punct = compile("\\A\\p{P}+\\z");
    G.alpha = compile("\\p{L}"); /* Python str.isalpha: categories Lu Ll Lt Lm Lo */
    WordSplit tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.md = pcre2_match_data_create(16, NULL);
    for (int k = 0; k < NSPECIAL; k++) {
        size_t n = G.info[k].slen = strlen(WS_SPECIALS[k].s), i = special_hash(WS_SPECIALS[k].s, n) & (SPECIAL_SLOTS - 1);
        while (G.slot[i]) i = (i + 1) & (SPECIAL_SLOTS - 1);
        G.slot[i] = (int16_t)(k + 1);
        if (n > G.max_special) G.max_special = n;
    }
    for (int k = 0; k < NSPECIAL; k++) {
        const char *s = WS_SPECIALS[k].s;
        size_t n = G.info[k].slen, a, b;
        /* spaCy adds a special case to its matcher when an affix or infix
         * pattern finds something in it, or it holds a space */
        int hit = find_prefix(tmp.md, s, n) || find_suffix(tmp.md, s, n) || memchr(s, ' ', n) ||
                  search(G.infix, tmp.md, s, n, 0, &a, &b);
        if (!hit) continue;
        tokenize_affixes(&tmp, s, n, 0);
        LC_ASSERT(tmp.n <= PAT_MAX);
        SpecialInfo *in = &G.info[k];
        in->matcher = 1;
        in->npat = (int)tmp.n;
        for (size_t j = 0; j < tmp.n; j++) in->pat[j] = tmp.tok[j].len;
        if (in->npat > G.max_pat) G.max_pat = in->npat;
        G.first[(unsigned char)s[0]] = 1;
    }
    wordsplit_free(&tmp);
    G.ready = 1;
}

void wordsplit_run(WordSplit *ws, const char *text, size_t len) {
    LC_ASSERT(G.ready);
    if (!ws->md) ws->md = pcre2_match_data_create(16, NULL);
    tokenize_affixes(ws, text, len, 1);
    apply_specials(ws, text);
}

void wordsplit_free(WordSplit *ws) {
    free(ws->tok);
    free(ws->tmp);
    free(ws->aff);
    if (ws->md) pcre2_match_data_free(ws->md);
    memset(ws, 0, sizeof *ws);
}

// ----------------------------------------------------------------------------
// character classes datatrove's filters use

static uint32_t decode(const unsigned char *s, size_t k) {
    if (k == 1) return s[0];
    uint32_t c = s[0] & (0x7f >> k);
    for (size_t i = 1; i < k; i++) c = (c << 6) | (s[i] & 0x3f);
    return c;
}

int wordsplit_symbol_word(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    int nd = (int)(sizeof WS_DT_PUNCT / sizeof WS_DT_PUNCT[0]);
    for (size_t i = 0; i < n;) {
        size_t k = char_len(u + i, n - i);
        uint32_t c = decode(u + i, k);
        int lo = 0, hi = nd - 1, found = 0;
        while (lo <= hi && !found) {
            int mid = (lo + hi) / 2;
            if (WS_DT_PUNCT[mid] == c) found = 1;
            else if (WS_DT_PUNCT[mid] < c) lo = mid + 1;
            else hi = mid - 1;
        }
        if (!found) return 0;
        i += k;
    }
    return 1;
}

int wordsplit_has_alpha(WordSplit *ws, const char *s, size_t n) {
    int ascii = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) ascii = 0;
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return 1;
    }
    if (ascii) return 0;
    if (!ws->md) ws->md = pcre2_match_data_create(16, NULL);
    return pcre2_match(G.alpha, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK, ws->md, NULL) >= 0;
}
