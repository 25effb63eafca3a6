/*
 * dedup.c: text normalisation, XXH64, numpy's MT19937 draw, MinHash
 * signatures, band sorting and union-find for llamac data dedup (dedup.h).
 *
 * Everything that decides a signature follows datatrove 0.10.1 so that
 * signatures are bit-identical on the text it covers: simplify_text's order
 * (lower case, numbers, punctuation, whitespace, diacritics), the spaCy
 * English tokenizer's splits that survive punctuation removal
 * (contractions such as "cannot" -> "can not", units after a digit such as
 * "0km" -> "0 km"), XXH64 of the space-joined n-gram, and the permutation
 * coefficients numpy's legacy RandomState(seed).randint draws (MT19937,
 * 64-bit draws as two 32-bit outputs high word first, masked rejection).
 * The tables below (punctuation code points, contraction splits) are
 * datatrove's and spaCy's data, listed from their releases.
 */
#include "dedup.h"

#include <stdlib.h>
#include <math.h>
#include <string.h>

// ----------------------------------------------------------------------------
// XXH64 (the xxHash specification: five primes, 32-byte stripes)

static const uint64_t XP1 = 11400714785074694791ULL, XP2 = 14029467366897019727ULL, XP3 = 1609587929392839161ULL,
                      XP4 = 9650029242287828579ULL, XP5 = 2870177450012600261ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t xround(uint64_t acc, uint64_t in) { return rotl64(acc + in * XP2, 31) * XP1; }
static inline uint64_t xmerge(uint64_t acc, uint64_t v) { return (acc ^ xround(0, v)) * XP1 + XP4; }

uint64_t dedup_xxh64(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = data, *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + XP1 + XP2, v2 = seed + XP2, v3 = seed, v4 = seed - XP1;
        for (; p + 32 <= end; p += 32) {
            v1 = xround(v1, rd64(p));
            v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16));
            v4 = xround(v4, rd64(p + 24));
        }
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xmerge(h, v1), h = xmerge(h, v2), h = xmerge(h, v3), h = xmerge(h, v4);
    } else {
        h = seed + XP5;
    }
    h += (uint64_t)n;
    for (; p + 8 <= end; p += 8) h = rotl64(h ^ xround(0, rd64(p)), 27) * XP1 + XP4;
    if (p + 4 <= end) h = rotl64(h ^ (uint64_t)rd32(p) * XP1, 23) * XP2 + XP3, p += 4;
    for (; p < end; p++) h = rotl64(h ^ (uint64_t)*p * XP5, 11) * XP1;
    h ^= h >> 33, h *= XP2, h ^= h >> 29, h *= XP3, h ^= h >> 32;
    return h;
}

// ----------------------------------------------------------------------------
// Normalisation (datatrove's simplify_text with the default TextNormConfig)

/* datatrove's PUNCTUATION and TERMINAL_PUNCTUATION at or above U+00A0,
 * sorted (below: ASCII punctuation and C0/C1 controls, by range) */
static const uint32_t punct_cp[] = {
    0xab, 0xb4, 0xbb, 0x589, 0x61d, 0x61e, 0x61f, 0x6d4, 0x700, 0x701, 0x702, 0x7f9, 0x837, 0x839, 0x83d, 0x83e,
    0x964, 0x965, 0x104a, 0x104b, 0x1362, 0x1367, 0x1368, 0x166e, 0x1735, 0x1736, 0x17d4, 0x17d5, 0x17d6, 0x17d9,
    0x17da, 0x1803, 0x1809, 0x1944, 0x1945, 0x1aa8, 0x1aa9, 0x1aaa, 0x1aab, 0x1b5a, 0x1b5b, 0x1b5e, 0x1b5f, 0x1b7d,
    0x1b7e, 0x1c3b, 0x1c3c, 0x1c7e, 0x1c7f, 0x2013, 0x2014, 0x2019, 0x201c, 0x201d, 0x201e, 0x2026, 0x203c, 0x203d,
    0x2047, 0x2048, 0x2049, 0x2236, 0x2501, 0x25ba, 0x2e2e, 0x2e3c, 0x2e53, 0x2e54, 0x3001, 0x3002, 0x3008, 0x3009,
    0x300a, 0x300b, 0x300c, 0x300d, 0x3010, 0x3011, 0xa4ff, 0xa60e, 0xa60f, 0xa6f3, 0xa6f7, 0xa876, 0xa877, 0xa8ce,
    0xa8cf, 0xa92f, 0xa9c8, 0xa9c9, 0xaa5d, 0xaa5e, 0xaa5f, 0xaaf0, 0xaaf1, 0xabeb, 0xfe52, 0xfe56, 0xfe57, 0xff01,
    0xff05, 0xff08, 0xff09, 0xff0c, 0xff0e, 0xff11, 0xff1a, 0xff1b, 0xff1f, 0xff5e, 0xff61, 0x10a56, 0x10a57, 0x10f55,
    0x10f56, 0x10f57, 0x10f58, 0x10f59, 0x10f86, 0x10f87, 0x10f88, 0x10f89, 0x11047, 0x11048, 0x110be, 0x110bf,
    0x110c0, 0x110c1, 0x11141, 0x11142, 0x11143, 0x111c5, 0x111c6, 0x111cd, 0x111de, 0x111df, 0x11238, 0x11239,
    0x1123b, 0x1123c, 0x112a9, 0x1144b, 0x1144c, 0x115c2, 0x115c3, 0x115c9, 0x115ca, 0x115cb, 0x115cc, 0x115cd,
    0x115ce, 0x115cf, 0x115d0, 0x115d1, 0x115d2, 0x115d3, 0x115d4, 0x115d5, 0x115d6, 0x115d7, 0x11641, 0x11642,
    0x1173c, 0x1173d, 0x1173e, 0x11944, 0x11946, 0x11a42, 0x11a43, 0x11a9b, 0x11a9c, 0x11c41, 0x11c42, 0x11ef7,
    0x11ef8, 0x11f43, 0x11f44, 0x16a6e, 0x16a6f, 0x16af5, 0x16b37, 0x16b38, 0x16b44, 0x16e98, 0x1bc9f, 0x1da88,
};

static int cp_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int is_punct(uint32_t c) {
    if (c < 128) return (c < 32 && c != 9 && c != 10) || c == 127 || (c > 32 && c < 127 && !(c >= '0' && c <= '9') &&
                                                                    !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z'));
    if (c < 160) return 1;
    return bsearch(&c, punct_cp, sizeof punct_cp / sizeof punct_cp[0], sizeof punct_cp[0], cp_cmp) != NULL;
}

/* Python's str.isspace (the \s of re) */
static int is_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* \p{Nd} ranges covered (each ten digits from its zero) */
static const uint32_t digit_zero[] = {0x30, 0x660, 0x6f0, 0x966, 0xff10};
static int is_digit(uint32_t c) {
    for (size_t i = 0; i < sizeof digit_zero / sizeof digit_zero[0]; i++)
        if (c >= digit_zero[i] && c < digit_zero[i] + 10) return 1;
    return 0;
}
/* datatrove's decimal separators between digit runs: . , U+060C U+066B U+2396-U+2398 */
static int is_decsep(uint32_t c) { return c == '.' || c == ',' || c == 0x60c || c == 0x66b || (c >= 0x2396 && c <= 0x2398); }

/* Base letter after lower-casing and NFD minus combining marks, '.' for a
 * letter without a decomposition (kept as lower-cased): U+00E0-U+00FF and
 * U+0100-U+017F. */
static const char latin1_base[] = "aaaaaa.ceeeeiiii.nooooo..uuuuy.y";
static const char latinA_base[] = "aaaaaaccccccccdd..eeeeeeeeeegggggggghh..iiiiiiiii...jjkk.llllll....nnnnnn...oooooo..rrrrrrssssssssttt"
                                  "t..uuuuuuuuuuuuwwyyyzzzzzz.";
_Static_assert(sizeof latin1_base == 33 && sizeof latinA_base == 129, "base tables cover their ranges");

/* Greek and Cyrillic letters with an accent, and their base letter */
static const uint32_t accented[][2] = {
    {0x3ac, 0x3b1}, {0x3ad, 0x3b5}, {0x3ae, 0x3b7}, {0x3af, 0x3b9}, {0x3cc, 0x3bf}, {0x3cd, 0x3c5}, {0x3ce, 0x3c9},
    {0x390, 0x3b9}, {0x3b0, 0x3c5}, {0x3ca, 0x3b9}, {0x3cb, 0x3c5}, {0x451, 0x435}, {0x439, 0x438}, {0x453, 0x433},
    {0x45c, 0x43a}, {0x457, 0x456}, {0x45e, 0x443},
};

static uint32_t lower_cp(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0xc0) return c;
    if (c <= 0xde) return c == 0xd7 ? c : c + 32;
    if (c >= 0x100 && c <= 0x17f) {
        if (c == 0x130) return 'i'; /* "i" + U+0307, whose mark NFD then drops */
        if (c == 0x178) return 0xff;
        if ((c < 0x138 || (c >= 0x14a && c < 0x178)) && c % 2 == 0) return c + 1;
        if (((c >= 0x139 && c < 0x149) || (c >= 0x179 && c < 0x17f)) && c % 2 == 1) return c + 1;
        return c;
    }
    if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
    if (c == 0x386) return 0x3ac;
    if (c >= 0x388 && c <= 0x38a) return c + 37;
    if (c == 0x38c) return 0x3cc;
    if (c == 0x38e || c == 0x38f) return c + 63;
    if (c >= 0x410 && c <= 0x42f) return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
    return c;
}

/* lower-cased c without its diacritics; 0: a combining mark (dropped) */
static uint32_t fold_cp(uint32_t c) {
    c = lower_cp(c);
    if (c >= 0x300 && c <= 0x36f) return 0;
    if (c >= 0xe0 && c <= 0xff) return latin1_base[c - 0xe0] == '.' ? c : (uint32_t)latin1_base[c - 0xe0];
    if (c >= 0x100 && c <= 0x17f) return latinA_base[c - 0x100] == '.' ? c : (uint32_t)latinA_base[c - 0x100];
    for (size_t i = 0; i < sizeof accented / sizeof accented[0]; i++)
        if (accented[i][0] == c) return accented[i][1];
    return c;
}

/* Decode the character at s[i] (n bytes left); a byte that does not start
 * a well-formed character stands for itself. */
static uint32_t utf8_at(const unsigned char *s, size_t n, size_t *len) {
    size_t k = utf8_seq_len(s, n);
    if (k <= 1) {
        *len = 1;
        return s[0];
    }
    uint32_t c = s[0] & (0x7f >> k);
    for (size_t i = 1; i < k; i++) c = c << 6 | (s[i] & 0x3f);
    *len = k;
    return c;
}

static size_t utf8_put(char *o, uint32_t c) {
    unsigned char *u = (unsigned char *)o;
    if (c < 0x80) return u[0] = (unsigned char)c, 1;
    if (c < 0x800) return u[0] = (unsigned char)(0xc0 | c >> 6), u[1] = (unsigned char)(0x80 | (c & 0x3f)), 2;
    if (c < 0x10000) {
        u[0] = (unsigned char)(0xe0 | c >> 12), u[1] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
        u[2] = (unsigned char)(0x80 | (c & 0x3f));
        return 3;
    }
    u[0] = (unsigned char)(0xf0 | c >> 18), u[1] = (unsigned char)(0x80 | (c >> 12 & 0x3f));
    u[2] = (unsigned char)(0x80 | (c >> 6 & 0x3f)), u[3] = (unsigned char)(0x80 | (c & 0x3f));
    return 4;
}

size_t dedup_normalize(const char *src, size_t n, char *out) {
    /* One pass does simplify_text's steps in order: a digit run (with one
     * separator and more digits) becomes "0"; punctuation and whitespace
     * become one pending space, written only before a later character (so
     * runs collapse and the ends are stripped); every other character is
     * folded (lower case, diacritics). A combining mark between spaces
     * leaves two spaces, as simplify_text's NFD step after the collapse
     * does. Each step only shrinks the text, so out needs n + 1 bytes. */
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0, o = 0, k;
    int pending = 0;
    while (i < n) {
        uint32_t c = utf8_at(s + i, n - i, &k);
        if (is_digit(c)) {
            i += k;
            while (i < n && is_digit(utf8_at(s + i, n - i, &k))) i += k;
            size_t k2;
            if (i < n && is_decsep(utf8_at(s + i, n - i, &k)) && i + k < n && is_digit(utf8_at(s + i + k, n - i - k, &k2))) {
                i += k;
                while (i < n && is_digit(utf8_at(s + i, n - i, &k))) i += k;
            }
            if (pending && o) out[o++] = ' ';
            pending = 0;
            out[o++] = '0';
            continue;
        }
        i += k;
        if (is_space(c) || is_punct(c)) {
            pending = 1;
            continue;
        }
        if (pending && o) out[o++] = ' ';
        pending = 0;
        uint32_t f = fold_cp(c);
        if (f) o += utf8_put(out + o, f);
    }
    while (o && out[o - 1] == ' ') o--;
    out[o] = 0;
    return o;
}

// ----------------------------------------------------------------------------
// Words (spaCy's English tokenizer on punctuation-free lower-case text)

/* spaCy's tokenizer exceptions whose text survives punctuation removal and
 * which split into several tokens (en 3.8), sorted */
static const struct {
    const char *word, *split;
} exc[] = {
    {"aint", "ai nt"}, {"arent", "are nt"}, {"cannot", "can not"}, {"cant", "ca nt"}, {"cantve", "ca nt ve"},
    {"couldnt", "could nt"}, {"couldntve", "could nt ve"}, {"couldve", "could ve"}, {"darent", "dare nt"},
    {"didnt", "did nt"}, {"didntve", "did nt ve"}, {"doesnt", "does nt"}, {"doesntve", "does nt ve"},
    {"dont", "do nt"}, {"dontve", "do nt ve"}, {"gonna", "gon na"}, {"gotta", "got ta"}, {"hadnt", "had nt"},
    {"hadntve", "had nt ve"}, {"hasnt", "has nt"}, {"havent", "have nt"}, {"hed", "he d"}, {"hedve", "he d ve"},
    {"hellve", "he ll ve"}, {"hes", "he s"}, {"howd", "how d"}, {"howdve", "how d ve"}, {"howll", "how ll"},
    {"howllve", "how ll ve"}, {"howre", "how re"}, {"hows", "how s"}, {"howve", "how ve"}, {"id", "i d"},
    {"idve", "i d ve"}, {"illve", "i ll ve"}, {"im", "i m"}, {"ima", "i m a"}, {"isnt", "is nt"}, {"itd", "it d"},
    {"itdve", "it d ve"}, {"itll", "it ll"}, {"itllve", "it ll ve"}, {"ive", "i ve"}, {"maynt", "may nt"},
    {"mayntve", "may nt ve"}, {"mightnt", "might nt"}, {"mightntve", "might nt ve"}, {"mightve", "might ve"},
    {"mustnt", "must nt"}, {"mustntve", "must nt ve"}, {"mustve", "must ve"}, {"neednt", "need nt"},
    {"needntve", "need nt ve"}, {"notve", "not ve"}, {"oughtnt", "ought nt"}, {"oughtntve", "ought nt ve"},
    {"shant", "sha nt"}, {"shantve", "sha nt ve"}, {"shedve", "she d ve"}, {"shellve", "she ll ve"},
    {"shes", "she s"}, {"shouldnt", "should nt"}, {"shouldntve", "should nt ve"}, {"shouldve", "should ve"},
    {"thatd", "that d"}, {"thatdve", "that d ve"}, {"thatll", "that ll"}, {"thatllve", "that ll ve"},
    {"thats", "that s"}, {"thered", "there d"}, {"theredve", "there d ve"}, {"therell", "there ll"},
    {"therellve", "there ll ve"}, {"therere", "there re"}, {"theres", "there s"}, {"thereve", "there ve"},
    {"thesed", "these d"}, {"thesedve", "these d ve"}, {"thesell", "these ll"}, {"thesellve", "these ll ve"},
    {"thesere", "these re"}, {"theseve", "these ve"}, {"theyd", "they d"}, {"theydve", "they d ve"},
    {"theyll", "they ll"}, {"theyllve", "they ll ve"}, {"theyre", "they re"}, {"theyve", "they ve"},
    {"thisd", "this d"}, {"thisdve", "this d ve"}, {"thisll", "this ll"}, {"thisllve", "this ll ve"},
    {"thiss", "this s"}, {"thosed", "those d"}, {"thosedve", "those d ve"}, {"thosell", "those ll"},
    {"thosellve", "those ll ve"}, {"thosere", "those re"}, {"thoseve", "those ve"}, {"wasnt", "was nt"},
    {"wed", "we d"}, {"wedve", "we d ve"}, {"wellve", "we ll ve"}, {"werent", "were nt"}, {"weve", "we ve"},
    {"whatd", "what d"}, {"whatdve", "what d ve"}, {"whatll", "what ll"}, {"whatllve", "what ll ve"},
    {"whatre", "what re"}, {"whats", "what s"}, {"whatve", "what ve"}, {"whend", "when d"}, {"whendve", "when d ve"},
    {"whenll", "when ll"}, {"whenllve", "when ll ve"}, {"whenre", "when re"}, {"whens", "when s"},
    {"whenve", "when ve"}, {"whered", "where d"}, {"wheredve", "where d ve"}, {"wherell", "where ll"},
    {"wherellve", "where ll ve"}, {"wherere", "where re"}, {"wheres", "where s"}, {"whereve", "where ve"},
    {"whod", "who d"}, {"whodve", "who d ve"}, {"wholl", "who ll"}, {"whollve", "who ll ve"}, {"whos", "who s"},
    {"whove", "who ve"}, {"whyd", "why d"}, {"whydve", "why d ve"}, {"whyll", "why ll"}, {"whyllve", "why ll ve"},
    {"whyre", "why re"}, {"whys", "why s"}, {"whyve", "why ve"}, {"wont", "wo nt"}, {"wontve", "wo nt ve"},
    {"wouldnt", "would nt"}, {"wouldntve", "would nt ve"}, {"wouldve", "would ve"}, {"yall", "y all"},
    {"youd", "you d"}, {"youdve", "you d ve"}, {"youll", "you ll"}, {"youllve", "you ll ve"}, {"youre", "you re"},
    {"youve", "you ve"},
};

/* units spaCy splits off a number ("(?<=[0-9])unit" suffixes) that are
 * lower case, so survive simplify_text's lower-casing */
static const char *const units[] = {
    "km", "km²", "km³", "m", "m²", "m³", "dm", "dm²", "dm³", "cm", "cm²", "cm³", "mm", "mm²", "mm³", "ha", "µm",
    "nm", "yd", "in", "ft", "kg", "g", "mg", "µg", "t", "lb", "oz", "kmh", "mph", "mbar", "mb", "kb", "gb", "tb",
    "км", "км²", "км³", "м", "м²", "м³", "дм", "дм²", "дм³", "см", "см²", "см³", "мм", "мм²", "мм³", "нм", "кг",
    "г", "мг", "мбар", "кб", "мб", "гб", "тб",
};

static int is_unit(const char *w, size_t n) {
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i]) == n && memcmp(units[i], w, n) == 0) return 1;
    return 0;
}

static const char *exc_find(const char *w, size_t n) {
    size_t lo = 0, hi = sizeof exc / sizeof exc[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strncmp(exc[mid].word, w, n);
        if (c == 0 && exc[mid].word[n]) c = 1;
        if (c == 0) return exc[mid].split;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

size_t dedup_words(const char *s, size_t n, char *out) {
    size_t o = 0, i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ') i++;
        size_t j = i;
        while (j < n && s[j] != ' ') j++;
        if (j == i) break;
        if (o) out[o++] = ' ';
        const char *w = s + i, *sp;
        size_t wn = j - i, cut = wn;
        if ((sp = exc_find(w, wn))) {
            memcpy(out + o, sp, strlen(sp));
            o += strlen(sp);
        } else {
            /* the longest unit suffix right after a digit */
            for (size_t k = 1; k < wn; k++)
                if (w[k - 1] >= '0' && w[k - 1] <= '9' && is_unit(w + k, wn - k)) {
                    cut = k;
                    break;
                }
            memcpy(out + o, w, cut);
            o += cut;
            if (cut < wn) {
                out[o++] = ' ';
                memcpy(out + o, w + cut, wn - cut);
                o += wn - cut;
            }
        }
        i = j;
    }
    out[o] = 0;
    return o;
}

// ----------------------------------------------------------------------------
// Signatures

static void grow(void **p, size_t *cap, size_t need, size_t elt) {
    if (*cap >= need) return;
    *cap = need + need / 2 + 64;
    *p = xrealloc(*p, *cap * elt);
}

uint64_t dedup_exact_key(const char *s, size_t n, MinhashScratch *sc) {
    grow((void **)&sc->norm, &sc->ncap, 2 * n + 1, 1); /* a stray non-UTF-8 byte is re-encoded in 2 */
    size_t m = sc->nnorm = dedup_normalize(s, n, sc->norm);
    return dedup_xxh64(sc->norm, m, 0);
}

/* MT19937 (Matsumoto and Nishimura 1998), seeded as numpy's legacy
 * RandomState(int) seeds it (init_genrand) */
typedef struct Mt {
    uint32_t s[624];
    int i;
} Mt;

static void mt_seed(Mt *m, uint32_t seed) {
    m->s[0] = seed;
    for (int i = 1; i < 624; i++) m->s[i] = 1812433253u * (m->s[i - 1] ^ (m->s[i - 1] >> 30)) + (uint32_t)i;
    m->i = 624;
}

static uint32_t mt_next(Mt *m) {
    if (m->i >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (m->s[k] & 0x80000000u) | (m->s[(k + 1) % 624] & 0x7fffffffu);
            m->s[k] = m->s[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1) ? 0x9908b0dfu : 0);
        }
        m->i = 0;
    }
    uint32_t y = m->s[m->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* numpy's masked bounded draw of a uint64 in [lo, lo + rng] */
static uint64_t mt_bounded(Mt *m, uint64_t lo, uint64_t rng) {
    uint64_t mask = rng;
    for (int sh = 1; sh < 64; sh <<= 1) mask |= mask >> sh;
    uint64_t v;
    do {
        uint64_t hi = mt_next(m);
        v = (hi << 32 | mt_next(m)) & mask;
    } while (v > rng);
    return lo + v;
}

void minhash_params_init(MinhashParams *p, int ngram, int buckets, int rows, uint32_t seed) {
    LC_ASSERT(ngram >= 1 && buckets >= 1 && rows >= 1);
    int k = buckets * rows;
    p->ngram = ngram, p->buckets = buckets, p->rows = rows;
    p->a = xmalloc((size_t)k * sizeof(uint64_t));
    p->b = xmalloc((size_t)k * sizeof(uint64_t));
    Mt m;
    mt_seed(&m, seed);
    /* randint(1, P) then randint(0, P): ranges [1, P-1] and [0, P-1] */
    for (int i = 0; i < k; i++) p->a[i] = mt_bounded(&m, 1, MINHASH_PRIME - 2);
    for (int i = 0; i < k; i++) p->b[i] = mt_bounded(&m, 0, MINHASH_PRIME - 1);
}

void minhash_params_free(MinhashParams *p) {
    free(p->a), free(p->b);
    p->a = p->b = NULL;
}

size_t minhash_signature(const MinhashParams *p, const char *s, size_t n, uint64_t *sig, MinhashScratch *sc) {
    grow((void **)&sc->norm, &sc->ncap, 2 * n + 1, 1); /* a stray non-UTF-8 byte is re-encoded in 2 */
    size_t m = sc->nnorm = dedup_normalize(s, n, sc->norm);
    grow((void **)&sc->words, &sc->wcap, 2 * m + 1, 1);
    size_t wl = dedup_words(sc->norm, m, sc->words);
    size_t nw = 0;
    for (size_t i = 0; i < wl; i++)
        if (i == 0 || sc->words[i - 1] == ' ') {
            grow((void **)&sc->start, &sc->scap, nw + 2, sizeof(uint32_t));
            sc->start[nw++] = (uint32_t)i;
        }
    if (nw < (size_t)p->ngram) return 0;
    int K = p->buckets * p->rows;
    for (int k = 0; k < K; k++) sig[k] = UINT64_MAX;
    size_t ng = nw - (size_t)p->ngram + 1;
    for (size_t g = 0; g < ng; g++) {
        size_t a = sc->start[g], last = g + (size_t)p->ngram;
        size_t b = last < nw ? sc->start[last] - 1 : wl; /* end of the n-gram's last word */
        uint64_t h = dedup_xxh64(sc->words + a, b - a, 0);
        /* numpy's uint64 arithmetic wraps: (h*a + b) mod 2^64, then mod P;
         * x mod (2^61 - 1) = (x & P) + (x >> 61), less P once if >= P */
        for (int k = 0; k < K; k++) {
            uint64_t x = h * p->a[k] + p->b[k];
            uint64_t v = (x & MINHASH_PRIME) + (x >> 61);
            v = v >= MINHASH_PRIME ? v - MINHASH_PRIME : v;
            if (v < sig[k]) sig[k] = v;
        }
    }
    return ng;
}

void minhash_scratch_free(MinhashScratch *sc) {
    free(sc->norm), free(sc->words), free(sc->start);
    memset(sc, 0, sizeof *sc);
}

// ----------------------------------------------------------------------------
// Clusters

void dedup_uf_init(DedupUF *u, size_t n) {
    u->n = n;
    u->parent = xmalloc((n ? n : 1) * sizeof(uint32_t));
    u->size = xmalloc((n ? n : 1) * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) u->parent[i] = (uint32_t)i, u->size[i] = 1;
}

uint32_t dedup_uf_find(DedupUF *u, uint32_t x) {
    uint32_t r = x;
    while (u->parent[r] != r) r = u->parent[r];
    while (u->parent[x] != r) {
        uint32_t nx = u->parent[x];
        u->parent[x] = r;
        x = nx;
    }
    return r;
}

void dedup_uf_union(DedupUF *u, uint32_t a, uint32_t b) {
    uint32_t ra = dedup_uf_find(u, a), rb = dedup_uf_find(u, b);
    if (ra == rb) return;
    if (u->size[ra] < u->size[rb]) {
        uint32_t t = ra;
        ra = rb, rb = t;
    }
    u->parent[rb] = ra;
    u->size[ra] += u->size[rb];
}

void dedup_uf_free(DedupUF *u) {
    free(u->parent), free(u->size);
    u->parent = u->size = NULL;
}

/* order of entries i, j: their bands, then their documents */
static int band_cmp(const uint64_t *band, const uint32_t *doc, int rows, uint32_t i, uint32_t j) {
    const uint64_t *x = band + (size_t)i * rows, *y = band + (size_t)j * rows;
    for (int r = 0; r < rows; r++)
        if (x[r] != y[r]) return x[r] < y[r] ? -1 : 1;
    return doc[i] < doc[j] ? -1 : doc[i] > doc[j];
}

void minhash_cluster_bucket(const uint64_t *band, const uint32_t *doc, size_t m, int rows, DedupUF *u) {
    /* bottom-up merge sort of entry numbers (qsort has no context argument) */
    uint32_t *a = xmalloc((m ? m : 1) * sizeof(uint32_t)), *b = xmalloc((m ? m : 1) * sizeof(uint32_t));
    for (size_t i = 0; i < m; i++) a[i] = (uint32_t)i;
    for (size_t w = 1; w < m; w *= 2) {
        for (size_t lo = 0; lo < m; lo += 2 * w) {
            size_t mid = lo + w < m ? lo + w : m, hi = lo + 2 * w < m ? lo + 2 * w : m, i = lo, j = mid, k = lo;
            while (i < mid && j < hi) b[k++] = band_cmp(band, doc, rows, a[j], a[i]) < 0 ? a[j++] : a[i++];
            while (i < mid) b[k++] = a[i++];
            while (j < hi) b[k++] = a[j++];
        }
        uint32_t *t = a;
        a = b, b = t;
    }
    for (size_t i = 1; i < m; i++)
        if (memcmp(band + (size_t)a[i] * rows, band + (size_t)a[i - 1] * rows, (size_t)rows * sizeof(uint64_t)) == 0)
            dedup_uf_union(u, doc[a[i - 1]], doc[a[i]]);
    free(a), free(b);
}

double minhash_pair_prob(double s, int buckets, int rows) { return 1.0 - pow(1.0 - pow(s, rows), buckets); }
