/*
 * bbpe.c: byte-level BPE by merge rank; see bbpe.h for the encoding steps
 * and the two file formats' readers.
 *
 * Facts this follows (Hugging Face tokenizers, tiktoken, Meta's llama3
 * tokenizer.py): GPT-2's byte-to-unicode table (the 188 printable Latin-1
 * bytes stand for themselves, the other 68 for U+0100 upward in byte
 * order); added tokens matched leftmost-longest before pre-tokenization; a
 * Split with behavior Isolated keeps matches and gaps as pieces; a merge
 * joins the lowest-ranked adjacent pair, leftmost on ties; Meta's 256
 * special tokens follow the base ranks in this order: begin_of_text,
 * end_of_text, reserved 0-3, start_header_id, end_header_id, reserved 4,
 * eot_id, reserved 5-250.
 *
 * Speed: pieces repeat, so each thread keeps a direct-mapped cache piece ->
 * ids (tagged with the tokenizer id, as bpe.c does); a miss merges with
 * merges.c's loop (an O(n^2) scan for short pieces, a heap for long ones).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "bbpe.h"
#include "chunkcache.h"

#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* a fast hash of a short byte string (the maps hash millions of pieces) */
static inline uint64_t hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = hash_mix64(h ^ w);
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    return hash_mix64(h ^ w ^ ((uint64_t)n << 59));
}

// ---------------------------------------------------------------------------
// UTF-8

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if ill-formed;
 * then *bad is the length of its maximal ill-formed prefix (>= 1). Ranges
 * from Unicode's Table 3-7 (no overlongs, no surrogates, <= U+10FFFF). */
static inline size_t utf8_seq(const uint8_t *s, size_t n, size_t *bad) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c == 0xe0) need = 2, lo = 0xa0;
    else if (c == 0xed) need = 2, hi = 0x9f;
    else if (c >= 0xe1 && c <= 0xef) need = 2;
    else if (c == 0xf0) need = 3, lo = 0x90;
    else if (c == 0xf4) need = 3, hi = 0x8f;
    else if (c >= 0xf1 && c <= 0xf3) need = 3;
    else {
        *bad = 1;
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        if (k >= n || s[k] < lo || s[k] > hi) {
            *bad = k;
            return 0;
        }
        lo = 0x80, hi = 0xbf;
    }
    return need + 1;
}

/* length of the longest valid UTF-8 prefix of s[0..n) */
static size_t utf8_valid_len(const uint8_t *s, size_t n) {
    size_t i = 0, bad;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(s + i, n - i, &bad);
        if (!k) return i;
        i += k;
    }
    return n;
}

size_t bbpe_utf8_lossy(const char *text, size_t n, char **out, size_t *cap) {
    const uint8_t *s = (const uint8_t *)text;
    if (3 * n > *cap) { /* each input byte gives at most 3 output bytes */
        *cap = 3 * n + 16;
        *out = xrealloc(*out, *cap);
    }
    uint8_t *o = (uint8_t *)*out;
    size_t m = 0, i = 0, bad;
    while (i < n) {
        size_t k = utf8_seq(s + i, n - i, &bad);
        if (k) {
            memcpy(o + m, s + i, k);
            m += k;
            i += k;
        } else {
            o[m++] = 0xef, o[m++] = 0xbf, o[m++] = 0xbd;
            i += bad;
        }
    }
    return m;
}

/* Decode one well-formed UTF-8 character at s (n > 0 bytes): *k its length. */
static uint32_t utf8_cp(const uint8_t *s, size_t n, size_t *k) {
    size_t bad;
    *k = utf8_seq(s, n, &bad);
    if (*k == 0) {
        *k = 1;
        return 0xfffd;
    }
    if (*k == 1) return s[0];
    uint32_t cp = s[0] & (0x7f >> *k);
    for (size_t i = 1; i < *k; i++) cp = cp << 6 | (s[i] & 0x3f);
    return cp;
}

// ---------------------------------------------------------------------------
// GPT-2's byte <-> unicode table

static int printable_byte(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/* byte of code point cp under the table, or -1 if cp is not in it */
static int byte_of_cp(uint32_t cp) {
    if (cp < 256) return printable_byte((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    int k = (int)cp - 256; /* the k-th non-printable byte */
    for (int b = 0; b < 256; b++)
        if (!printable_byte(b) && k-- == 0) return b;
    return -1;
}

size_t bbpe_byte_level(const char *in, size_t n, char *out) {
    uint32_t cp[256]; /* byte -> code point: printable bytes stand for themselves, the 68 others take 256, ... */
    for (int b = 0, next = 256; b < 256; b++) cp[b] = printable_byte(b) ? (uint32_t)b : (uint32_t)next++;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cp[(unsigned char)in[i]];
        if (c < 0x80) out[m++] = (char)c;
        else out[m++] = (char)(0xc0 | c >> 6), out[m++] = (char)(0x80 | (c & 0x3f));
    }
    return m;
}

typedef struct { uint32_t rank; int32_t a, b; } RankedPair;
static int ranked_cmp(const void *x, const void *y) {
    uint32_t p = ((const RankedPair *)x)->rank, q = ((const RankedPair *)y)->rank;
    return (p > q) - (p < q);
}

size_t bbpe_merges(const Bbpe *b, int32_t **ab) {
    RankedPair *m = xmalloc(((size_t)b->pairs.mask + 2) * sizeof *m);
    size_t n = 0;
    for (uint64_t i = 0; i <= b->pairs.mask; i++)
        if (b->pairs.slot[i].key) {
            uint64_t k = b->pairs.slot[i].key - 1;
            m[n++] = (RankedPair){(uint32_t)(b->pairs.slot[i].val >> 32), (int32_t)(k >> 32), (int32_t)(k & 0xffffffffu)};
        }
    qsort(m, n, sizeof *m, ranked_cmp);
    *ab = xmalloc((2 * n + 1) * sizeof **ab);
    for (size_t i = 0; i < n; i++) (*ab)[2 * i] = m[i].a, (*ab)[2 * i + 1] = m[i].b;
    free(m);
    return n;
}

/* The bytes a vocabulary string stands for: mapped back through the table
 * when every character is in it, else its own UTF-8. Returns the length
 * written to out (capacity >= n). */
static size_t string_bytes(const char *str, size_t n, uint8_t *out) {
    const uint8_t *s = (const uint8_t *)str;
    size_t m = 0;
    for (size_t i = 0, k; i < n; i += k) {
        int b = byte_of_cp(utf8_cp(s + i, n - i, &k));
        if (b < 0) {
            memcpy(out, s, n);
            return n;
        }
        out[m++] = (uint8_t)b;
    }
    return m;
}

// ---------------------------------------------------------------------------
// maps

static inline const uint8_t *tok_ptr(const Bbpe *b, int id, size_t *n) {
    *n = (size_t)(b->tok_off[id + 1] - b->tok_off[id]);
    return (const uint8_t *)b->tok_bytes + b->tok_off[id];
}

/* base token whose bytes are s[0..n), or -1 */
static inline int32_t word_get(const Bbpe *b, const uint8_t *s, size_t n) {
    for (uint64_t h = hash_bytes(s, n) & b->word_mask;; h = (h + 1) & b->word_mask) {
        int32_t id = b->word_id[h];
        if (id < 0) return -1;
        size_t m;
        const uint8_t *p = tok_ptr(b, id, &m);
        if (m == n && memcmp(p, s, n) == 0) return id;
    }
}

/* add base token id (its bytes already in place); the first id of given bytes wins */
static void word_put(Bbpe *b, int32_t id) {
    size_t n;
    const uint8_t *s = tok_ptr(b, id, &n);
    if (n == 0) return;
    for (uint64_t h = hash_bytes(s, n) & b->word_mask;; h = (h + 1) & b->word_mask) {
        int32_t o = b->word_id[h];
        if (o < 0) {
            b->word_id[h] = id;
            return;
        }
        size_t m;
        const uint8_t *p = tok_ptr(b, o, &m);
        if (m == n && memcmp(p, s, n) == 0) return;
    }
}

/* added token whose content is s[0..n), or -1 */
static int added_get(const Bbpe *b, const uint8_t *s, size_t n) {
    if (!b->n_added) return -1;
    for (uint64_t h = hash_bytes(s, n) & b->added_mask;; h = (h + 1) & b->added_mask) {
        int32_t k = b->added_slot[h];
        if (k < 0) return -1;
        if (b->added[k].len == n && memcmp(b->added[k].text, s, n) == 0) return k;
    }
}

// ---------------------------------------------------------------------------
// building the tables (shared by both readers)

/* Names the reference libraries and chat formats give these ids. */
static const char *const bos_names[] = {"<|begin_of_text|>", "<s>", "<|startoftext|>"};
static const char *const eos_names[] = {"<|end_of_text|>", "</s>", "<|endoftext|>"};
static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>"};

static int find_named(const Bbpe *b, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        int id = bbpe_special_id(b, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

/* \s and \S -> explicit Unicode White_Space classes (see bbpe.h). Returns a
 * new NUL-terminated pattern (caller frees). */
static char *rewrite_pattern(const char *p) {
    static const char ws[] = "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}"
                             "\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";
    size_t n = strlen(p), cap = n * (sizeof ws + 4) + 1, m = 0;
    char *out = xmalloc(cap);
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n) {
            char c = p[i + 1];
            if (c == 's' || (c == 'S' && !in_class)) {
                m += (size_t)sprintf(out + m, "%s%s%s", in_class ? "" : (c == 'S' ? "[^" : "["),
                                     ws, in_class ? "" : "]");
            } else {
                out[m++] = p[i];
                out[m++] = c;
            }
            i++;
            continue;
        }
        if (p[i] == '[' && !in_class) {
            in_class = 1;
            out[m++] = p[i];
            if (i + 1 < n && p[i + 1] == '^') out[m++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') out[m++] = p[++i]; /* "[]...]": literal ] */
            continue;
        }
        if (p[i] == ']' && in_class) in_class = 0;
        out[m++] = p[i];
    }
    out[m] = 0;
    return out;
}

static int compile_step(Bbpe *b, const char *pattern, int byte_level, int prefix,
                        const char *path, Err *e) {
    if (b->n_steps == BBPE_MAX_STEPS)
        return err_set(e, "%s: more than %d pre-tokenizer steps", path, BBPE_MAX_STEPS);
    BbpeStep *s = &b->step[b->n_steps++];
    s->byte_level = byte_level;
    s->prefix_space = prefix;
    b->id = hash_fnv1a_u32(hash_fnv1a_u32(b->id, (uint32_t)byte_level), (uint32_t)prefix);
    if (pattern) b->id = hash_fnv1a(b->id, pattern, strlen(pattern));
    if (!pattern) return 0;
    s->re = bbpe_compile_pattern(pattern, 0, path, e);
    return s->re ? 0 : -1;
}

pcre2_code *bbpe_compile_pattern(const char *pattern, int invalid_utf, const char *where, Err *e) {
    char *pat = rewrite_pattern(pattern);
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | (invalid_utf ? PCRE2_MATCH_INVALID_UTF : 0), &code,
                                   &off, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        err_set(e, "%s: bad split pattern (%s at offset %zu)", where, (char *)msg, (size_t)off);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if no JIT */
    return re;
}

/* With vocab, tok_bytes/tok_off (all ids), added and n_base (ids < n_base are
 * base tokens) in place: the word map, the added map, byte ids, names. */
static void build_maps(Bbpe *b, int n_base) {
    b->word_mask = hash_pow2_at_least(2 * (uint64_t)n_base) - 1;
    b->word_id = xmalloc((b->word_mask + 1) * sizeof *b->word_id);
    memset(b->word_id, 0xff, (b->word_mask + 1) * sizeof *b->word_id);
    for (int i = 0; i < n_base; i++) word_put(b, i);
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        b->byte_id[c] = word_get(b, &byte, 1);
    }
    b->added_mask = hash_pow2_at_least(2 * (uint64_t)b->n_added) - 1;
    b->added_slot = xmalloc((b->added_mask + 1) * sizeof *b->added_slot);
    memset(b->added_slot, 0xff, (b->added_mask + 1) * sizeof *b->added_slot);
    for (int k = 0; k < b->n_added; k++) {
        const BbpeAdded *a = &b->added[k];
        if (added_get(b, (const uint8_t *)a->text, a->len) >= 0) continue; /* first wins */
        uint64_t h = hash_bytes((const uint8_t *)a->text, a->len) & b->added_mask;
        while (b->added_slot[h] >= 0) h = (h + 1) & b->added_mask;
        b->added_slot[h] = k;
        int l = 0;
        while (l < b->n_added_lens && b->added_lens[l] != (int)a->len) l++;
        if (l == b->n_added_lens && l < 64) b->added_lens[b->n_added_lens++] = (int)a->len;
        uint8_t c = (uint8_t)a->text[0];
        b->added_first[a->normalized][1][c] = 1;
        if (!a->special) b->added_first[a->normalized][0][c] = 1;
        b->id = hash_fnv1a_u32(hash_fnv1a_u32(hash_fnv1a_u32(b->id, (uint32_t)a->id), (uint32_t)a->special),
                               (uint32_t)a->normalized);
    }
    for (int i = 1; i < b->n_added_lens; i++) /* longest first */
        for (int j = i; j > 0 && b->added_lens[j] > b->added_lens[j - 1]; j--) {
            int t = b->added_lens[j];
            b->added_lens[j] = b->added_lens[j - 1];
            b->added_lens[j - 1] = t;
        }
    b->bos = find_named(b, bos_names, 3);
    b->eos = find_named(b, eos_names, 3);
    b->eot = find_named(b, eot_names, 3);
    if (b->eot < 0) b->eot = b->eos;
    for (int i = 0; i < b->vocab; i++) {
        size_t n;
        const uint8_t *s = tok_ptr(b, i, &n);
        b->id = hash_fnv1a(hash_fnv1a_u32(b->id, (uint32_t)n), s, n);
    }
    b->id = hash_fnv1a_u32(b->id, (uint32_t)b->ignore_merges);
}

void bbpe_free(Bbpe *b) {
    if (!b) return;
    for (int i = 0; i < b->n_steps; i++) pcre2_code_free(b->step[i].re);
    for (int k = 0; b->added && k < b->n_added; k++) free(b->added[k].text);
    free(b->added);
    free(b->tok_bytes);
    free(b->tok_off);
    merges_free(&b->pairs);
    free(b->word_id);
    free(b->added_slot);
    memset(b, 0, sizeof *b);
}

/* Merge rank r of the pair of vocabulary strings a, b: their ids by the
 * bytes they stand for (unique among base tokens); buf holds la + lb bytes. */
static int add_merge(Bbpe *b, const char *sa, size_t la, const char *sb, size_t lb, size_t r, uint8_t *buf,
                     const char *path, Err *e) {
    size_t ba = string_bytes(sa, la, buf), bb = string_bytes(sb, lb, buf + ba);
    int32_t ia = word_get(b, buf, ba), ib = word_get(b, buf + ba, bb), ic = word_get(b, buf, ba + bb);
    if (ia < 0 || ib < 0 || ic < 0)
        return err_set(e, "%s: merge %zu (%.*s %.*s): %s not in vocab", path, r, (int)(la < 40 ? la : 40), sa,
                       (int)(lb < 40 ? lb : 40), sb, ia < 0 ? "left part" : ib < 0 ? "right part" : "merged token");
    merges_put(&b->pairs, ia, ib, merges_val((uint32_t)r, ic)); /* a later line replaces an earlier, as HF's map does */
    b->id = hash_fnv1a_u32(hash_fnv1a_u32(b->id, (uint32_t)ia), (uint32_t)ib);
    return 0;
}

// ---------------------------------------------------------------------------
// tokenizer.json

/* GPT-2's pattern, which ByteLevel(use_regex=true) splits with */
#define GPT2_PATTERN \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int jtrue(json_t *o, const char *key) { return json_is_true(json_object_get(o, key)); }

/* one pre-tokenizer entry (Split or ByteLevel) */
static int load_pretok(Bbpe *b, json_t *p, int *byte_level, const char *path, Err *e) {
    const char *type = jstr(p, "type");
    if (!type) return err_set(e, "%s: pre_tokenizer without a type", path);
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) return err_set(e, "%s: Sequence without pretokenizers", path);
        for (size_t i = 0; i < json_array_size(list); i++)
            if (load_pretok(b, json_array_get(list, i), byte_level, path, e)) return -1;
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        json_t *pat = json_object_get(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        const char *behavior = jstr(p, "behavior");
        if (!re && !lit) return err_set(e, "%s: Split without a Regex or String pattern", path);
        if (!behavior || strcmp(behavior, "Isolated") != 0)
            return err_set(e, "%s: Split behavior %s not supported (supported: Isolated)", path,
                           behavior ? behavior : "(none)");
        if (jtrue(p, "invert")) return err_set(e, "%s: Split with invert not supported", path);
        if (re) return compile_step(b, re, 0, 0, path, e);
        /* a literal: quote it (\Q...\E cannot hold "\E", so escape by hand) */
        size_t n = strlen(lit);
        char *q = xmalloc(2 * n + 1), *o = q;
        for (size_t i = 0; i < n; i++) {
            if (strchr("\\^$.|?*+()[]{}", lit[i])) *o++ = '\\';
            *o++ = lit[i];
        }
        *o = 0;
        int rc = compile_step(b, q, 0, 0, path, e);
        free(q);
        return rc;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        json_t *ur = json_object_get(p, "use_regex");
        int use_regex = ur ? json_is_true(ur) : 1; /* the library's default */
        *byte_level = 1;
        return compile_step(b, use_regex ? GPT2_PATTERN : NULL, 1, jtrue(p, "add_prefix_space"),
                            path, e);
    }
    return err_set(e, "%s: pre_tokenizer type %s not supported (supported: Split, ByteLevel, "
                      "Sequence)", path, type);
}

/* Fill the tables from the parsed root; b->vocab etc. come out of it. */
static int load_json_root(Bbpe *b, json_t *root, const char *path, Err *e) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return err_set(e, "%s: no \"model\" object (not a tokenizer.json)", path);
    json_t *jt = json_object_get(model, "type");
    if (jt && !json_is_string(jt)) return err_set(e, "%s: model type is not a string", path);
    const char *type = jt ? json_string_value(jt) : json_object_get(model, "merges") ? "BPE" : "(none)";
    if (strcmp(type, "BPE") != 0)
        return err_set(e, "%s: model type %s not supported (supported: BPE)", path, type);
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm))
        return err_set(e, "%s: normalizer %s not supported (supported: none, as in Llama 3; "
                          "Llama 1/2 ship tokenizer.model)", path, jstr(norm, "type") ? jstr(norm, "type") : "?");
    if (jtrue(model, "byte_fallback"))
        return err_set(e, "%s: BPE with byte_fallback not supported (supported: byte-level BPE; "
                          "use the SentencePiece tokenizer.model)", path);
    const char *pre = jstr(model, "continuing_subword_prefix"), *suf = jstr(model, "end_of_word_suffix");
    if ((pre && *pre) || (suf && *suf))
        return err_set(e, "%s: continuing_subword_prefix / end_of_word_suffix not supported", path);
    b->ignore_merges = jtrue(model, "ignore_merges");
    b->id = hash_fnv1a(HASH_FNV_OFFSET, "hf", 2);
    b->unk = -1;

    int byte_level = 0;
    json_t *pt = json_object_get(root, "pre_tokenizer");
    if (pt && !json_is_null(pt) && load_pretok(b, pt, &byte_level, path, e)) return -1;
    if (!byte_level)
        return err_set(e, "%s: not a byte-level BPE (no ByteLevel pre-tokenizer; supported: "
                          "byte-level BPE as in Llama 3)", path);
    json_t *dec = json_object_get(root, "decoder");
    const char *dt = jstr(dec, "type");
    if (!dt || strcmp(dt, "ByteLevel") != 0)
        return err_set(e, "%s: decoder %s not supported (supported: ByteLevel)", path, dt ? dt : "(none)");

    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab)) return err_set(e, "%s: model has no \"vocab\" object", path);
    if (!json_is_array(merges)) return err_set(e, "%s: model has no \"merges\" list", path);
    if (added && !json_is_array(added)) return err_set(e, "%s: \"added_tokens\" is not a list", path);

    /* ids: the vocab's, then the added tokens' */
    int64_t vmax = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= BBPE_MAX_VOCAB)
            return err_set(e, "%s: vocab entry \"%.40s\" has a bad id", path, key);
        if (id > vmax) vmax = id;
    }
    int n_base = (int)(vmax + 1);
    size_t na = added ? json_array_size(added) : 0;
    b->added = xcalloc(na ? na : 1, sizeof *b->added);
    int64_t amax = vmax;
    for (size_t k = 0; k < na; k++) {
        json_t *a = json_array_get(added, k);
        json_t *jid = json_object_get(a, "id");
        const char *content = jstr(a, "content");
        if (!json_is_integer(jid) || !content || !*content || json_integer_value(jid) < 0 ||
            json_integer_value(jid) >= BBPE_MAX_VOCAB)
            return err_set(e, "%s: added token %zu has no content or a bad id", path, k);
        if (jtrue(a, "lstrip") || jtrue(a, "rstrip") || jtrue(a, "single_word"))
            return err_set(e, "%s: added token %s: lstrip/rstrip/single_word not supported", path,
                           content);
        BbpeAdded *x = &b->added[b->n_added++];
        x->len = strlen(content);
        x->text = memcpy(xmalloc(x->len + 1), content, x->len + 1);
        x->id = (int)json_integer_value(jid);
        x->special = jtrue(a, "special");
        json_t *jn = json_object_get(a, "normalized");
        x->normalized = jn ? json_is_true(jn) : !x->special;
        if (x->id > amax) amax = x->id;
    }
    b->vocab = (int)(amax + 1);
    if (b->vocab == 0) return err_set(e, "%s: empty vocabulary", path);

    /* token bytes: lengths, offsets, then the bytes */
    const char **str = xcalloc((size_t)b->vocab, sizeof *str);
    int rc = -1;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (str[id]) {
            err_set(e, "%s: id %lld appears twice in vocab", path, (long long)id);
            goto out;
        }
        str[id] = key;
    }
    for (int k = 0; k < b->n_added; k++)
        if (!str[b->added[k].id] || b->added[k].id >= n_base) str[b->added[k].id] = b->added[k].text;
    for (int i = 0; i < b->vocab; i++)
        if (!str[i]) {
            err_set(e, "%s: id %d has no token (ids must be 0..%d without gaps)", path, i, b->vocab - 1);
            goto out;
        }
    b->tok_off = xmalloc(((size_t)b->vocab + 1) * sizeof *b->tok_off);
    size_t total = 0, maxlen = 0;
    for (int i = 0; i < b->vocab; i++) {
        size_t n = strlen(str[i]);
        total += n;
        if (n > maxlen) maxlen = n;
    }
    b->tok_bytes = xmalloc(total + 1);
    total = 0;
    for (int i = 0; i < b->vocab; i++) {
        b->tok_off[i] = (int64_t)total;
        total += string_bytes(str[i], strlen(str[i]), (uint8_t *)b->tok_bytes + total);
    }
    b->tok_off[b->vocab] = (int64_t)total;
    build_maps(b, n_base);
    const char *unk = jstr(model, "unk_token");
    if (unk) {
        size_t ul = strlen(unk);
        uint8_t *ub = xmalloc(ul + 1);
        b->unk = word_get(b, ub, string_bytes(unk, ul, ub));
        free(ub);
    }

    /* merges: "a b" strings or [a, b] lists; the pair ranks by line */
    size_t nm = json_array_size(merges);
    merges_init(&b->pairs, nm);
    uint8_t *buf = xmalloc(2 * maxlen + 8);
    for (size_t r = 0; r < nm; r++) {
        json_t *m = json_array_get(merges, r);
        const char *sa, *sb;
        size_t la, lb;
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                err_set(e, "%s: merge %zu is not \"a b\"", path, r);
                free(buf);
                goto out;
            }
            sa = s, la = (size_t)(sp - s), sb = sp + 1, lb = strlen(sp + 1);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            sa = json_string_value(json_array_get(m, 0)), la = strlen(sa);
            sb = json_string_value(json_array_get(m, 1)), lb = strlen(sb);
        } else {
            err_set(e, "%s: merge %zu is neither \"a b\" nor [a, b]", path, r);
            free(buf);
            goto out;
        }
        if (la + lb > 2 * maxlen) { /* buf's size: as the GGUF reader checks (found by the fuzz harness) */
            err_set(e, "%s: merge %zu (%.40s) is longer than any token", path, r, sa);
            free(buf);
            goto out;
        }
        if (add_merge(b, sa, la, sb, lb, r, buf, path, e)) {
            free(buf);
            goto out;
        }
    }
    free(buf);
    rc = 0;
out:
    free(str);
    return rc;
}

int bbpe_load_json(Bbpe *b, const char *path, Err *e) {
    memset(b, 0, sizeof *b);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (strstr(je.text, "unable to open"))
            return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
        /* an error in the last bytes: most likely a cut-off file */
        FILE *f = fopen(path, "rb");
        long size = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
        if (f) fclose(f);
        int cut = size >= 0 && je.position + 8 >= size;
        char jq[2 * ERR_QUOTE_CAP]; /* jansson quotes the text near the error */
        return err_set(e, "%s: not valid JSON (line %d: %s)%s", path, je.line, err_quote(jq, sizeof jq, je.text, strlen(je.text)),
                       cut ? " (truncated?)" : "");
    }
    int rc = json_is_object(root) ? load_json_root(b, root, path, e)
                                  : err_set(e, "%s: not a JSON object", path);
    json_decref(root);
    if (rc) bbpe_free(b);
    return rc;
}

// ---------------------------------------------------------------------------
// tiktoken

static int b64_val(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* standard base64 with padding; returns the decoded length or -1 */
static long b64_decode(const uint8_t *s, size_t n, uint8_t *out) {
    if (n == 0 || n % 4) return -1;
    long m = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0, pad++;
            } else {
                if (pad || (v[k] = b64_val(s[i + k])) < 0) return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[m++] = (uint8_t)(w >> 16);
        if (pad < 2) out[m++] = (uint8_t)(w >> 8);
        if (pad < 1) out[m++] = (uint8_t)w;
    }
    return m;
}

/* Meta's names for the special token k of BBPE_LLAMA3_N_SPECIAL */
static void llama3_special(int k, char *buf, size_t cap) {
    static const char *const first[10] = {
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
        "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|reserved_special_token_4|>", "<|eot_id|>"};
    if (k < 10) snprintf(buf, cap, "%s", first[k]);
    else snprintf(buf, cap, "<|reserved_special_token_%d|>", k - 5);
}

/* The line of a tiktoken file that starts at s[i], i < size: returns its
 * end (before "\n" or "\r\n"); *next is where the next line starts, past
 * size for the last line when no newline ends it. */
static size_t line_end(const uint8_t *s, size_t size, size_t i, size_t *next) {
    const uint8_t *nl = memchr(s + i, '\n', size - i);
    size_t j = nl ? (size_t)(nl - s) : size;
    *next = j + 1;
    return j > i && s[j - 1] == '\r' ? j - 1 : j;
}

static int load_tiktoken_buf(Bbpe *b, const uint8_t *s, size_t size, const char *path, Err *e) {
    b->tiktoken = 1;
    b->ignore_merges = 1;
    b->unk = -1;
    b->id = hash_fnv1a(HASH_FNV_OFFSET, "tiktoken", 8);
    /* pass 1: count lines, check the format, total bytes */
    size_t nl = 0, total = 0, line = 0;
    for (size_t i = 0, next; i < size; i = next) {
        size_t end = line_end(s, size, i, &next);
        line++;
        if (end > i) {
            const uint8_t *sp = memchr(s + i, ' ', end - i);
            if (!sp || sp == s + i || sp + 1 == s + end)
                return err_set(e, "%s: line %zu: expected \"base64token rank\"%s", path, line,
                               next > size ? " (truncated?)" : "");
            nl++;
            total += (size_t)(sp - (s + i)) / 4 * 3;
        }
    }
    if (nl == 0) return err_set(e, "%s: no tokens", path);
    if (nl >= BBPE_MAX_VOCAB) return err_set(e, "%s: too many tokens (%zu)", path, nl);
    int n_base = (int)nl;
    b->vocab = n_base + BBPE_LLAMA3_N_SPECIAL;
    uint8_t *bytes = xmalloc(total + 1);
    int64_t *off = xmalloc(((size_t)n_base + 1) * sizeof *off), *len = xmalloc((size_t)n_base * sizeof *len);
    for (int i = 0; i < n_base; i++) off[i] = -1;
    size_t pos = 0;
    line = 0;
    int rc = -1;
    for (size_t i = 0, next; i < size; i = next) {
        size_t end = line_end(s, size, i, &next);
        line++;
        if (end > i) {
            const uint8_t *sp = memchr(s + i, ' ', end - i); /* there: pass 1 checked */
            long m = b64_decode(s + i, (size_t)(sp - (s + i)), bytes + pos);
            if (m <= 0) {
                err_set(e, "%s: line %zu: bad base64 token", path, line);
                goto out;
            }
            long rank = 0;
            const uint8_t *p = sp + 1;
            for (; p < s + end && *p >= '0' && *p <= '9' && rank < BBPE_MAX_VOCAB; p++)
                rank = rank * 10 + (*p - '0');
            if (p != s + end || rank >= n_base) {
                err_set(e, "%s: line %zu: bad rank (ranks must be 0..%d, one per line)", path, line, n_base - 1);
                goto out;
            }
            if (off[rank] >= 0) {
                err_set(e, "%s: line %zu: rank %ld appears twice", path, line, rank);
                goto out;
            }
            off[rank] = (int64_t)pos;
            len[rank] = m;
            pos += (size_t)m;
        }
    }
    /* token bytes in id order: the ranks, then the special names */
    char name[64];
    size_t stotal = 0;
    for (int k = 0; k < BBPE_LLAMA3_N_SPECIAL; k++) {
        llama3_special(k, name, sizeof name);
        stotal += strlen(name);
    }
    b->tok_bytes = xmalloc(pos + stotal + 1);
    b->tok_off = xmalloc(((size_t)b->vocab + 1) * sizeof *b->tok_off);
    size_t t = 0;
    for (int i = 0; i < n_base; i++) {
        b->tok_off[i] = (int64_t)t;
        memcpy(b->tok_bytes + t, bytes + off[i], (size_t)len[i]);
        t += (size_t)len[i];
    }
    b->added = xcalloc(BBPE_LLAMA3_N_SPECIAL, sizeof *b->added);
    for (int k = 0; k < BBPE_LLAMA3_N_SPECIAL; k++) {
        llama3_special(k, name, sizeof name);
        size_t n = strlen(name);
        b->tok_off[n_base + k] = (int64_t)t;
        memcpy(b->tok_bytes + t, name, n);
        t += n;
        BbpeAdded *a = &b->added[b->n_added++];
        a->text = memcpy(xmalloc(n + 1), name, n + 1);
        a->len = n;
        a->id = n_base + k;
        a->special = 1;
    }
    b->tok_off[b->vocab] = (int64_t)t;
    if (compile_step(b, BBPE_LLAMA3_PATTERN, 0, 0, path, e)) goto out;
    build_maps(b, n_base);
    for (int c = 0; c < 256; c++)
        if (b->byte_id[c] < 0) {
            err_set(e, "%s: no token for the single byte 0x%02x (a byte-level vocabulary has all 256)", path, c);
            goto out;
        }
    /* pairs: every split of every token into two tokens merges at its rank */
    uint64_t npairs = 0;
    for (int i = 0; i < n_base; i++) npairs += (uint64_t)(len[i] > 1 ? len[i] - 1 : 0);
    merges_init(&b->pairs, npairs / 2 + 16);
    for (int i = 0; i < n_base; i++) {
        size_t n;
        const uint8_t *p = tok_ptr(b, i, &n);
        if (word_get(b, p, n) != i) continue; /* a duplicate of an earlier token */
        for (size_t k = 1; k < n; k++) {
            int32_t x = word_get(b, p, k), y = word_get(b, p + k, n - k);
            if (x >= 0 && y >= 0) merges_put(&b->pairs, x, y, merges_val((uint32_t)i, i));
        }
    }
    rc = 0;
out:
    free(bytes);
    free(off);
    free(len);
    return rc;
}

int bbpe_load_tiktoken(Bbpe *b, const char *path, Err *e) {
    memset(b, 0, sizeof *b);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    size_t cap = 1 << 20, n = 0, k;
    uint8_t *buf = xmalloc(cap);
    while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) buf = xrealloc(buf, cap *= 2);
    }
    int bad = ferror(f);
    fclose(f);
    int rc = bad ? err_set(e, "%s: read error", path) : load_tiktoken_buf(b, buf, n, path, e);
    free(buf);
    if (rc) bbpe_free(b);
    return rc;
}

// ---------------------------------------------------------------------------
// from arrays (GGUF's "gpt2" vocabulary)

int bbpe_init(Bbpe *b, const BbpeSpec *sp, const char *path, Err *e) {
    memset(b, 0, sizeof *b);
    if (sp->vocab <= 0 || sp->vocab > BBPE_MAX_VOCAB)
        return err_set(e, "%s: %d tokens (must be 1 to %d)", path, sp->vocab, BBPE_MAX_VOCAB);
    b->id = hash_fnv1a(HASH_FNV_OFFSET, "arrays", 6);
    b->unk = -1;
    b->ignore_merges = sp->ignore_merges;
    int rc = -1;
    for (int k = 0; k < sp->n_split; k++)
        if (compile_step(b, sp->split[k], 0, 0, path, e)) goto out;
    /* the bytes to ids mapping without a split or a prefix (bytes are ours already) */
    if (compile_step(b, NULL, 1, 0, path, e)) goto out;
    b->vocab = sp->vocab;
    size_t total = 0, maxlen = 0;
    int na = 0;
    for (int i = 0; i < b->vocab; i++) {
        total += sp->tok_len[i];
        if (sp->tok_len[i] > maxlen) maxlen = sp->tok_len[i];
        if (sp->added && sp->added[i]) na++;
    }
    b->tok_off = xmalloc(((size_t)b->vocab + 1) * sizeof *b->tok_off);
    b->tok_bytes = xmalloc(total + 1);
    b->added = xcalloc(na ? (size_t)na : 1, sizeof *b->added);
    total = 0;
    for (int i = 0; i < b->vocab; i++) {
        b->tok_off[i] = (int64_t)total;
        const char *t = sp->tok[i];
        size_t n = sp->tok_len[i];
        if (sp->added && sp->added[i]) { /* added tokens are their own text */
            if (n == 0) {
                err_set(e, "%s: token %d is an empty special token", path, i);
                goto out;
            }
            memcpy(b->tok_bytes + total, t, n);
            total += n;
            BbpeAdded *x = &b->added[b->n_added++];
            x->text = memcpy(xmalloc(n + 1), t, n);
            x->text[n] = 0;
            x->len = n;
            x->id = i;
            x->special = sp->added[i] == BBPE_ADDED_SPECIAL;
        } else {
            total += string_bytes(t, n, (uint8_t *)b->tok_bytes + total);
        }
    }
    b->tok_off[b->vocab] = (int64_t)total;
    build_maps(b, b->vocab);
    if (sp->bos >= 0) b->bos = sp->bos;
    if (sp->eos >= 0) b->eos = sp->eos;
    if (sp->eot >= 0) b->eot = sp->eot;
    if (b->eot < 0) b->eot = b->eos;
    merges_init(&b->pairs, (uint64_t)sp->n_merges);
    uint8_t *buf = xmalloc(2 * maxlen + 8);
    for (int r = 0; r < sp->n_merges; r++) {
        const char *m = sp->merge[r], *spc = memchr(m, ' ', sp->merge_len[r]);
        if (!spc || memchr(spc + 1, ' ', sp->merge_len[r] - (size_t)(spc + 1 - m))) {
            err_set(e, "%s: merge %d is not \"a b\"", path, r);
            free(buf);
            goto out;
        }
        size_t la = (size_t)(spc - m), lb = sp->merge_len[r] - la - 1;
        if (la + lb > 2 * maxlen) {
            err_set(e, "%s: merge %d (%.40s) is longer than any token", path, r, m);
            free(buf);
            goto out;
        }
        if (add_merge(b, m, la, spc + 1, lb, (size_t)r, buf, path, e)) {
            free(buf);
            goto out;
        }
    }
    free(buf);
    rc = 0;
out:
    if (rc) bbpe_free(b);
    return rc;
}

// ---------------------------------------------------------------------------
// encoding: state of one call

typedef struct {
    const Bbpe *b;
    ChunkLocal *l;                /* this thread's (chunkcache.h) */
    int special;
    int32_t *out;
    size_t n, cap;
} Enc;

static inline void reserve(Enc *x, size_t k) {
    if (x->n + k > x->cap) {
        x->cap = x->cap * 2 > x->n + k ? x->cap * 2 : x->n + k + 256;
        x->out = xrealloc(x->out, x->cap * sizeof *x->out);
    }
}

// ---------------------------------------------------------------------------
// encoding: merging one piece

/* ids of one piece s[0..n) appended to x, without the cache */
static void encode_piece_raw(Enc *x, const uint8_t *s, size_t n) {
    const Bbpe *b = x->b;
    reserve(x, n);
    if (b->ignore_merges || n == 1) {
        int32_t w = word_get(b, s, n);
        if (w >= 0) {
            x->out[x->n++] = w;
            return;
        }
    }
    int32_t *id = x->out + x->n;
    int m = 0;
    for (size_t i = 0; i < n; i++) { /* a byte without a token: unk, or dropped (HF) */
        int32_t v = b->byte_id[s[i]];
        if (v < 0) v = b->unk;
        if (v >= 0) id[m++] = v;
    }
    m = merges_apply(&b->pairs, id, m);
    x->n += (size_t)m;
}

static void encode_piece(Enc *x, const uint8_t *s, size_t n) {
    if (n == 0) return;
    if (n > CHUNK_CACHE_KEY) {
        encode_piece_raw(x, s, n);
        return;
    }
    uint64_t h = hash_bytes(s, n);
    CacheSlot *slot = chunk_slot(x->l->slot, h);
    if (chunk_hit(slot, h, s, n)) {
        reserve(x, slot->nids);
        memcpy(x->out + x->n, slot->ids, slot->nids * sizeof *x->out);
        x->n += slot->nids;
        return;
    }
    size_t n0 = x->n;
    encode_piece_raw(x, s, n);
    chunk_store(slot, h, s, n, x->out + n0, x->n - n0);
}

// ---------------------------------------------------------------------------
// encoding: pre-tokenizer steps and added tokens

static void pretok(Enc *x, int k, const uint8_t *s, size_t n);

/* split s by step k's regex, each match and each gap going on to step k + 1 */
static void split_regex(Enc *x, int k, const uint8_t *s, size_t n) {
    const pcre2_code *re = x->b->step[k].re;
    size_t pos = 0, from = 0;
    while (from < n) {
        int rc = pcre2_match(re, s, n, from, PCRE2_NO_UTF_CHECK, x->l->md, x->l->mc);
        if (rc < 0) {
            if (rc != PCRE2_ERROR_NOMATCH) LC_FATAL("PCRE2 match error %d", rc);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->l->md);
        size_t a = ov[0], z = ov[1];
        if (z == a) { /* empty match: step over one character, it stays in the gap */
            size_t c = 1;
            while (a + c < n && (s[a + c] & 0xc0) == 0x80) c++;
            from = a + c;
            continue;
        }
        if (a > pos) pretok(x, k + 1, s + pos, a - pos);
        pretok(x, k + 1, s + a, z - a);
        pos = from = z;
    }
    if (pos < n) pretok(x, k + 1, s + pos, n - pos);
}

static void pretok(Enc *x, int k, const uint8_t *s, size_t n) {
    if (n == 0) return;
    if (k == x->b->n_steps) {
        encode_piece(x, s, n);
        return;
    }
    const BbpeStep *st = &x->b->step[k];
    if (st->byte_level && st->prefix_space && s[0] != ' ') {
        uint8_t *t = xmalloc(n + 1);
        t[0] = ' ';
        memcpy(t + 1, s, n);
        if (st->re) split_regex(x, k, t, n + 1);
        else pretok(x, k + 1, t, n + 1);
        free(t);
        return;
    }
    if (st->re) split_regex(x, k, s, n);
    else pretok(x, k + 1, s, n);
}

/* leftmost-longest added token of pass `norm` at or after s[i]: its start
 * (n if none), *k its index */
static size_t next_added(const Enc *x, int norm, const uint8_t *s, size_t n, size_t i, int *k) {
    const Bbpe *b = x->b;
    const uint8_t *first = b->added_first[norm][x->special];
    for (; i < n; i++) {
        if (!first[s[i]]) continue;
        for (int l = 0; l < b->n_added_lens; l++) {
            size_t len = (size_t)b->added_lens[l];
            if (len > n - i) continue;
            int a = added_get(b, s + i, len);
            if (a >= 0 && b->added[a].normalized == norm && (x->special || !b->added[a].special)) {
                *k = a;
                return i;
            }
        }
    }
    return n;
}

/* pass 0 (normalized=false tokens), then pass 1 in what is left, then pre-tokenize */
static void split_added(Enc *x, int norm, const uint8_t *s, size_t n) {
    if (norm == 2 || !x->b->n_added) {
        pretok(x, 0, s, n);
        return;
    }
    size_t pos = 0;
    while (pos < n) {
        int k = -1;
        size_t a = next_added(x, norm, s, n, pos, &k);
        split_added(x, norm + 1, s + pos, a - pos);
        if (a == n) break;
        reserve(x, 1);
        x->out[x->n++] = x->b->added[k].id;
        pos = a + x->b->added[k].len;
    }
}

size_t bbpe_encode(const Bbpe *b, const char *text, size_t len, int special, int32_t **ids,
                   size_t *cap) {
    if (len == 0) return 0;
    ChunkLocal *l = chunkcache_claim(b->id);
    Enc x = {b, l, special ? 1 : 0, *ids, 0, *cap};
    const uint8_t *s = (const uint8_t *)text;
    size_t n = len;
    if (utf8_valid_len(s, n) != n) {
        n = bbpe_utf8_lossy(text, len, &l->scratch, &l->scap);
        s = (const uint8_t *)l->scratch;
    }
    split_added(&x, 0, s, n);
    *ids = x.out;
    *cap = x.cap;
    return x.n;
}

// ---------------------------------------------------------------------------
// decoding

const char *bbpe_token_bytes(const Bbpe *b, int id, size_t *len) {
    if (id < 0 || id >= b->vocab) {
        *len = 0;
        return NULL;
    }
    return (const char *)tok_ptr(b, id, len);
}

size_t bbpe_decode(const Bbpe *b, const int32_t *ids, size_t n, char **out, size_t *cap) {
    size_t total = 0, k;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= b->vocab) return (size_t)-1;
        total += (size_t)(b->tok_off[ids[i] + 1] - b->tok_off[ids[i]]);
    }
    if (total > *cap) {
        *out = xrealloc(*out, total);
        *cap = total;
    }
    char *dst = *out;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = tok_ptr(b, ids[i], &k);
        memcpy(dst, p, k);
        dst += k;
    }
    return total;
}

int bbpe_special_id(const Bbpe *b, const char *name) {
    int k = added_get(b, (const uint8_t *)name, strlen(name));
    return k < 0 ? -1 : b->added[k].id;
}
