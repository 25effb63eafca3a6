/*
 * spm.c: SentencePiece BPE (spm.h has the file format and the algorithm).
 *
 * Reading: a small protobuf wire-format reader (varints, fixed32/64,
 * length-delimited fields; groups are rejected) walks ModelProto and the
 * parts of its specs that change encoding or decoding.
 *
 * Encoding cuts the normalized text into chunks at character boundaries no
 * merge can cross: between bytes a and b when no mergeable piece holds a
 * then b (a 256 x 256 bit table built on load), and next to a user-defined
 * symbol (never merged). A merge result is a piece, so none can straddle such
 * a boundary and no pair across it is ever a candidate: each chunk merges on
 * its own exactly as sentencepiece merges the whole text at once. A chunk is
 * a doubly linked list of symbols and a binary max-heap of candidate pairs
 * (score, then leftmost); a popped pair whose symbols changed since it was
 * pushed is dropped (a side is empty or their sizes no longer add up; sizes
 * only grow, so this is exact), as in sentencepiece's bpe_model.cc, for
 * O(n log n) per chunk. Chunks are mostly words, and a long call caches
 * chunk -> ids, so a repeated word is merged once. One exception: sentencepiece
 * splits an UNUSED result back with the last candidate pair pushed for that
 * piece anywhere in the text, which depends on the global push order, so a
 * model with UNUSED pieces is encoded as one chunk, uncached.
 */
#include "spm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPACE "\xe2\x96\x81"        /* U+2581 LOWER ONE EIGHTH BLOCK: the whitespace marker */
#define REPLACEMENT "\xef\xbf\xbd"  /* U+FFFD: what an invalid UTF-8 byte becomes */
#define UNK_SURFACE " \xe2\x81\x87 " /* " ⁇ ": trainer_spec.unk_surface's default */

/* Length of the valid UTF-8 character at p[0..n), n >= 1, or 0 if none
 * starts there; sentencepiece's rules (util.cc DecodeUTF8): no overlong
 * forms, no surrogates, nothing above U+10FFFF. */
static int utf8_len(const uint8_t *p, size_t n) {
    uint32_t c = p[0], cp;
#define TRAIL(x) (((x) & 0xc0) == 0x80)
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) {
        if (n < 2 || !TRAIL(p[1])) return 0;
        cp = (c & 0x1f) << 6 | (p[1] & 0x3f);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xf0) == 0xe0) {
        if (n < 3 || !TRAIL(p[1]) || !TRAIL(p[2])) return 0;
        cp = (c & 0x0f) << 12 | (p[1] & 0x3f) << 6 | (p[2] & 0x3f);
        return cp >= 0x800 && (cp < 0xd800 || cp >= 0xe000) ? 3 : 0;
    }
    if ((c & 0xf8) == 0xf0) {
        if (n < 4 || !TRAIL(p[1]) || !TRAIL(p[2]) || !TRAIL(p[3])) return 0;
        cp = (c & 0x07) << 18 | (p[1] & 0x3f) << 12 | (p[2] & 0x3f) << 6 | (p[3] & 0x3f);
        return cp >= 0x10000 && cp <= 0x10ffff ? 4 : 0;
    }
#undef TRAIL
    return 0;
}

/* Bytes of the character whose lead byte is c, by its top four bits (for
 * text already normalized to valid UTF-8): sentencepiece's OneCharLen. */
static int char_len(uint8_t c) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

// ---------------------------------------------------------------------------
// protobuf wire format

enum { PB_OK, PB_TRUNC, PB_BAD };
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct Pb {
    const uint8_t *p, *end;
} Pb;

typedef struct PbField {
    uint32_t num;        /* field number */
    int wt;              /* wire type WT_* */
    uint64_t v;          /* WT_VARINT, WT_I64, WT_I32 value */
    const uint8_t *data; /* WT_LEN bytes */
    size_t len;
} PbField;

static int pb_varint(Pb *b, uint64_t *v) {
    uint64_t r = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (b->p == b->end) return PB_TRUNC;
        uint8_t c = *b->p++;
        if (sh == 63 && c > 1) return PB_BAD; /* more than 64 bits */
        r |= (uint64_t)(c & 0x7f) << sh;
        if (c < 0x80) {
            *v = r;
            return PB_OK;
        }
    }
    return PB_BAD;
}

static uint64_t le_bytes(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Read the next field of b into *f. PB_TRUNC when it runs past the end. */
static int pb_next(Pb *b, PbField *f) {
    uint64_t key, n;
    int rc = pb_varint(b, &key);
    if (rc) return rc;
    if (key >> 32 || key >> 3 == 0) return PB_BAD; /* field numbers are 1 .. 2^29-1 */
    f->num = (uint32_t)(key >> 3);
    f->wt = (int)(key & 7);
    size_t left = (size_t)(b->end - b->p);
    switch (f->wt) {
    case WT_VARINT: return pb_varint(b, &f->v);
    case WT_I64:
    case WT_I32:
        n = f->wt == WT_I64 ? 8 : 4;
        if (left < n) return PB_TRUNC;
        f->v = le_bytes(b->p, (int)n);
        b->p += n;
        return PB_OK;
    case WT_LEN:
        if ((rc = pb_varint(b, &n))) return rc;
        if (n > (uint64_t)(b->end - b->p)) return PB_TRUNC;
        f->data = b->p;
        f->len = (size_t)n;
        b->p += n;
        return PB_OK;
    default: return PB_BAD; /* groups (3, 4) are long deprecated; 6 and 7 do not exist */
    }
}

/* ModelProto.SentencePiece, pointing into the file buffer */
typedef struct PieceRef {
    const uint8_t *str;
    size_t len;
    float score;
    int64_t type;
} PieceRef;

/* The fields of the specs that matter, with their proto2 defaults. */
typedef struct Specs {
    int64_t model_type;      /* 1 UNIGRAM (default), 2 BPE, 3 WORD, 4 CHAR */
    int ws_suffix, split_digits, byte_fallback;
    PbField unk_surface;     /* data NULL when absent (then " ⁇ ") */
    PbField names[4];        /* unk, bos, eos, pad piece names; data NULL = default */
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    PbField norm_name;
    size_t charsmap_len, denorm_charsmap_len;
} Specs;

/* Inside a complete sub-message, running off its end is malformed, not a
 * truncated file: every error there is PB_BAD. */
#define PB_WANT(f, w) \
    do { if ((f).wt != (w)) return PB_BAD; } while (0)

static int parse_piece(const uint8_t *d, size_t n, PieceRef *r) {
    Pb b = {d, d + n};
    PbField f;
    r->str = NULL;
    r->len = 0;
    r->score = 0.0f;
    r->type = SPM_NORMAL;
    while (b.p < b.end) {
        if (pb_next(&b, &f)) return PB_BAD;
        if (f.num == 1) {
            PB_WANT(f, WT_LEN);
            r->str = f.data;
            r->len = f.len;
        } else if (f.num == 2) {
            PB_WANT(f, WT_I32);
            uint32_t u = (uint32_t)f.v;
            memcpy(&r->score, &u, sizeof u);
        } else if (f.num == 3) {
            PB_WANT(f, WT_VARINT);
            r->type = (int64_t)f.v;
        }
    }
    return PB_OK;
}

static int parse_trainer(const uint8_t *d, size_t n, Specs *sp) {
    Pb b = {d, d + n};
    PbField f;
    while (b.p < b.end) {
        if (pb_next(&b, &f)) return PB_BAD;
        switch (f.num) {
        case 3: PB_WANT(f, WT_VARINT); sp->model_type = (int64_t)f.v; break;
        case 24: PB_WANT(f, WT_VARINT); sp->ws_suffix = f.v != 0; break;
        case 25: PB_WANT(f, WT_VARINT); sp->split_digits = f.v != 0; break;
        case 35: PB_WANT(f, WT_VARINT); sp->byte_fallback = f.v != 0; break;
        case 44: PB_WANT(f, WT_LEN); sp->unk_surface = f; break;
        case 45: case 46: case 47: case 48:
            PB_WANT(f, WT_LEN);
            sp->names[f.num - 45] = f;
            break;
        default: break;
        }
    }
    return PB_OK;
}

static int parse_normalizer(const uint8_t *d, size_t n, Specs *sp, int denorm) {
    Pb b = {d, d + n};
    PbField f;
    while (b.p < b.end) {
        if (pb_next(&b, &f)) return PB_BAD;
        if (f.num == 2) {
            PB_WANT(f, WT_LEN);
            *(denorm ? &sp->denorm_charsmap_len : &sp->charsmap_len) = f.len;
        } else if (denorm) {
            continue;
        } else if (f.num == 1) {
            PB_WANT(f, WT_LEN);
            sp->norm_name = f;
        } else if (f.num >= 3 && f.num <= 5) {
            PB_WANT(f, WT_VARINT);
            int v = f.v != 0;
            if (f.num == 3) sp->add_dummy_prefix = v;
            else if (f.num == 4) sp->remove_extra_whitespaces = v;
            else sp->escape_whitespaces = v;
        }
    }
    return PB_OK;
}

// ---------------------------------------------------------------------------
// piece map: open addressing, piece bytes -> id

static uint32_t piece_len(const Spm *s, int id) { return s->off[id + 1] - s->off[id] - 1; }

/* A fast hash of short byte strings (pieces are ~2-16 bytes): 8 bytes at a
 * time, multiply-xorshift mixing (the murmur3 finalizer's constants). Only
 * this process reads the map, so byte order does not matter. */
static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = (uint64_t)n * 0x9e3779b97f4a7c15ull, w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)(uint8_t)p[i] << (8 * i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdull;
    return h ^ h >> 32;
}

/* Map entries are (hash >> 32) << 32 | (id + 1), 0 = empty: the tag rejects
 * almost every other piece in the probe sequence without touching its bytes. */
static int find(const Spm *s, const char *p, size_t n) {
    uint64_t h = hash_bytes(p, n), tag = h >> 32 << 32;
    for (uint32_t i = (uint32_t)h & s->map_mask;; i = (i + 1) & s->map_mask) {
        uint64_t v = s->map[i];
        if (v == 0) return -1;
        if ((v & ~0xffffffffull) != tag) continue;
        int id = (int)(uint32_t)v - 1;
        if (piece_len(s, id) == n && memcmp(s->bytes + s->off[id], p, n) == 0) return id;
    }
}

static int mergeable(int type) {
    return type == SPM_NORMAL || type == SPM_USER_DEFINED || type == SPM_UNUSED;
}

/* The byte of a piece spelled exactly "<0xNN>" (upper-case hex, as
 * sentencepiece writes them), or -1. */
static int byte_of_piece(const char *p, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    const char *hi = memchr(hex, p[3], 16), *lo = memchr(hex, p[4], 16);
    if (!hi || !lo || !p[3] || !p[4]) return -1;
    return (int)(hi - hex) * 16 + (int)(lo - hex);
}

// ---------------------------------------------------------------------------
// load

static const char *model_type_name(int64_t t) {
    static const char *const names[] = {"UNIGRAM", "BPE", "WORD", "CHAR"};
    return t >= 1 && t <= 4 ? names[t - 1] : NULL;
}

static int build(Spm *s, const PieceRef *pieces, size_t np, const Specs *sp, const char *path, Err *e);

/* Parse buf[0..n) into *s; -1 with e on any error (the caller frees). */
static int load_buf(Spm *s, const uint8_t *buf, size_t n, const char *path, Err *e) {
    Specs sp;
    memset(&sp, 0, sizeof sp);
    sp.model_type = 1;
    sp.add_dummy_prefix = sp.remove_extra_whitespaces = sp.escape_whitespaces = 1;
    int have_trainer = 0, have_norm = 0;
    PieceRef *pieces = NULL;
    size_t np = 0, pcap = 0;
    int rc = PB_OK;

    Pb b = {buf, buf + n};
    PbField f;
    while (b.p < b.end && rc == PB_OK) {
        if ((rc = pb_next(&b, &f))) break;
        if (f.num >= 1 && f.num <= 5 && f.num != 4 && f.wt != WT_LEN) {
            rc = PB_BAD;
        } else if (f.num == 1) {
            if (np == pcap) {
                pcap = pcap ? 2 * pcap : 1024;
                pieces = xrealloc(pieces, pcap * sizeof *pieces);
            }
            rc = parse_piece(f.data, f.len, &pieces[np++]);
        } else if (f.num == 2) {
            rc = parse_trainer(f.data, f.len, &sp);
            have_trainer = 1;
        } else if (f.num == 3) {
            rc = parse_normalizer(f.data, f.len, &sp, 0);
            have_norm = 1;
        } else if (f.num == 5) {
            rc = parse_normalizer(f.data, f.len, &sp, 1);
        }
    }
    int ret = -1;
    if (rc == PB_TRUNC) {
        err_set(e, "%s: truncated", path);
        goto out;
    }
    if (rc == PB_BAD) {
        err_set(e, "%s: not a SentencePiece model (bad protobuf)", path);
        goto out;
    }
    if (np == 0) {
        err_set(e, "%s: not a SentencePiece model (no pieces)", path);
        goto out;
    }
    if (!have_trainer || !have_norm) {
        err_set(e, "%s: truncated or not a SentencePiece model (no %s)", path,
                have_trainer ? "normalizer_spec" : "trainer_spec");
        goto out;
    }
    if (sp.model_type != 2) {
        const char *name = model_type_name(sp.model_type);
        if (name) err_set(e, "%s: model type %s not supported (supported: BPE)", path, name);
        else err_set(e, "%s: unknown model type %lld (supported: BPE)", path, (long long)sp.model_type);
        goto out;
    }
    if (sp.charsmap_len) {
        char name[ERR_QUOTE_CAP] = "?";
        if (sp.norm_name.data) err_quote(name, sizeof name, sp.norm_name.data, sp.norm_name.len);
        err_set(e, "%s: normalization rule '%s' not supported (supported: identity, no precompiled_charsmap)",
                path, name);
        goto out;
    }
    if (sp.denorm_charsmap_len) {
        err_set(e, "%s: denormalization rules not supported (non-empty denormalizer_spec)", path);
        goto out;
    }
    if (sp.ws_suffix) {
        err_set(e, "%s: treat_whitespace_as_suffix not supported", path);
        goto out;
    }
    ret = build(s, pieces, np, &sp, path, e);
    s->id = hash_fnv1a(HASH_FNV_OFFSET, buf, n);
out:
    free(pieces);
    return ret;
}

/* The tables of *s from the pieces and the specs (model type and
 * normalizer already checked). */
static int build(Spm *s, const PieceRef *pieces, size_t np, const Specs *sp_, const char *path, Err *e) {
    const Specs sp = *sp_;
    int ret = -1;
    if (np > SPM_MAX_VOCAB) {
        err_set(e, "%s: %zu pieces, more than %d", path, np, SPM_MAX_VOCAB);
        goto out;
    }

    /* pieces: bytes, offsets, scores, types */
    size_t total = 0;
    for (size_t i = 0; i < np; i++) total += pieces[i].len + 1;
    if (total > UINT32_MAX) {
        err_set(e, "%s: pieces too long (%zu bytes)", path, total);
        goto out;
    }
    s->vocab = (int)np;
    s->bytes = xmalloc(total);
    s->off = xmalloc((np + 1) * sizeof *s->off);
    s->score = xmalloc(np * sizeof *s->score);
    s->type = xmalloc(np);
    s->off[0] = 0;
    s->unk = s->bos = s->eos = s->pad = -1;
    for (int c = 0; c < 256; c++) s->byte_id[c] = -1;
    for (size_t i = 0; i < np; i++) {
        const PieceRef *r = &pieces[i];
        if (r->len == 0) {
            err_set(e, "%s: piece %zu is empty", path, i);
            goto out;
        }
        if (r->type < SPM_NORMAL || r->type > SPM_BYTE) {
            err_set(e, "%s: piece %zu has unknown type %lld", path, i, (long long)r->type);
            goto out;
        }
        memcpy(s->bytes + s->off[i], r->str, r->len);
        s->bytes[s->off[i] + r->len] = '\0';
        s->off[i + 1] = s->off[i] + (uint32_t)r->len + 1;
        s->score[i] = r->score;
        s->type[i] = (uint8_t)r->type;
        if (r->type == SPM_UNKNOWN) {
            if (s->unk >= 0) {
                err_set(e, "%s: pieces %d and %zu are both unknown pieces", path, s->unk, i);
                goto out;
            }
            s->unk = (int)i;
        }
        if (r->type == SPM_BYTE) {
            int byte = byte_of_piece((const char *)r->str, r->len);
            if (!sp.byte_fallback) {
                err_set(e, "%s: byte piece %zu found but byte_fallback is off", path, i);
                goto out;
            }
            if (byte < 0) {
                err_set(e, "%s: piece %zu is a byte piece not spelled <0xNN>", path, i);
                goto out;
            }
            s->byte_id[byte] = (int)i;
        }
    }
    if (s->unk < 0) {
        err_set(e, "%s: no unknown piece", path);
        goto out;
    }
    if (sp.byte_fallback)
        for (int c = 0; c < 256; c++)
            if (s->byte_id[c] < 0) {
                err_set(e, "%s: byte_fallback is on but piece <0x%02X> is missing", path, c);
                goto out;
            }

    /* the map (load factor <= 1/2), rejecting duplicates */
    uint32_t size = 16;
    while (size < 2 * np) size *= 2;
    s->map = xcalloc(size, sizeof *s->map);
    s->map_mask = size - 1;
    for (int i = 0; i < s->vocab; i++) {
        const char *p = s->bytes + s->off[i];
        uint32_t len = piece_len(s, i);
        int dup = find(s, p, len);
        if (dup >= 0) {
            err_set(e, "%s: piece %d duplicates piece %d", path, i, dup);
            goto out;
        }
        uint64_t h = hash_bytes(p, len);
        uint32_t k = (uint32_t)h & s->map_mask;
        while (s->map[k]) k = (k + 1) & s->map_mask;
        s->map[k] = h >> 32 << 32 | ((uint32_t)i + 1);
    }

    /* what encoding needs: longest mergeable piece, byte bigrams inside
     * mergeable pieces, user-defined pieces by first byte */
    s->bigram = xcalloc(256 * 4, sizeof *s->bigram);
    int nuser = 0;
    for (int i = 0; i < s->vocab; i++) {
        if (!mergeable(s->type[i])) continue;
        const uint8_t *p = (const uint8_t *)s->bytes + s->off[i];
        uint32_t len = piece_len(s, i);
        if ((int)len > s->max_len) s->max_len = (int)len;
        for (uint32_t k = 1; k < len; k++) {
            unsigned bit = (unsigned)p[k - 1] << 8 | p[k];
            s->bigram[bit >> 6] |= 1ull << (bit & 63);
        }
        if (s->type[i] == SPM_USER_DEFINED) nuser++;
        if (s->type[i] == SPM_UNUSED) s->has_unused = 1;
    }
    s->user = xmalloc((size_t)(nuser ? nuser : 1) * sizeof *s->user);
    memset(s->user_start, 0, sizeof s->user_start);
    for (int i = 0; i < s->vocab; i++)
        if (s->type[i] == SPM_USER_DEFINED) s->user_start[(uint8_t)s->bytes[s->off[i]] + 1]++;
    for (int c = 0; c < 256; c++) s->user_start[c + 1] += s->user_start[c];
    int fill[256];
    memcpy(fill, s->user_start, sizeof fill);
    for (int i = 0; i < s->vocab; i++)
        if (s->type[i] == SPM_USER_DEFINED) s->user[fill[(uint8_t)s->bytes[s->off[i]]]++] = i;

    /* special ids as sentencepiece's bos_id() etc.: the named piece, if CONTROL */
    static const char *const defaults[4] = {"<unk>", "<s>", "</s>", "<pad>"};
    int *ids[4] = {NULL, &s->bos, &s->eos, &s->pad};
    for (int k = 1; k < 4; k++) {
        const PbField *nm = &sp.names[k];
        int id = nm->data ? find(s, (const char *)nm->data, nm->len)
                          : find(s, defaults[k], strlen(defaults[k]));
        *ids[k] = id >= 0 && s->type[id] == SPM_CONTROL ? id : -1;
    }
    if (sp.unk_surface.data) {
        s->unk_surface = xmalloc(sp.unk_surface.len + 1);
        memcpy(s->unk_surface, sp.unk_surface.data, sp.unk_surface.len);
        s->unk_surface[sp.unk_surface.len] = '\0';
    } else {
        s->unk_surface = xmalloc(sizeof UNK_SURFACE);
        memcpy(s->unk_surface, UNK_SURFACE, sizeof UNK_SURFACE);
    }
    s->byte_fallback = sp.byte_fallback;
    s->split_digits = sp.split_digits;
    s->add_dummy_prefix = sp.add_dummy_prefix;
    s->remove_extra_whitespaces = sp.remove_extra_whitespaces;
    s->escape_whitespaces = sp.escape_whitespaces;
    ret = 0;
out:
    return ret;
}

int spm_init(Spm *s, const SpmSpec *a, const char *path, Err *e) {
    memset(s, 0, sizeof *s);
    if (a->vocab <= 0 || a->vocab > SPM_MAX_VOCAB)
        return err_set(e, "%s: %d pieces (must be 1 to %d)", path, a->vocab, SPM_MAX_VOCAB);
    Specs sp;
    memset(&sp, 0, sizeof sp);
    sp.model_type = 2;
    sp.add_dummy_prefix = a->add_dummy_prefix;
    sp.escape_whitespaces = 1;
    PieceRef *pieces = xmalloc((size_t)a->vocab * sizeof *pieces);
    /* the identity of what decides the ids: pieces, scores, types, flags */
    uint64_t h = hash_fnv1a(HASH_FNV_OFFSET, "spm-arrays", 10);
    for (int i = 0; i < a->vocab; i++) {
        pieces[i].str = (const uint8_t *)a->piece[i];
        pieces[i].len = a->piece_len[i];
        pieces[i].score = a->score ? a->score[i] : 0.0f;
        pieces[i].type = a->type ? a->type[i] : SPM_NORMAL;
        if (pieces[i].type == SPM_BYTE) sp.byte_fallback = 1;
        uint64_t rec[3] = {h, (uint64_t)pieces[i].type, 0};
        memcpy(&rec[2], &pieces[i].score, sizeof pieces[i].score);
        h = hash_fnv1a(HASH_FNV_OFFSET, rec, sizeof rec) ^
            hash_fnv1a(HASH_FNV_OFFSET, pieces[i].str, pieces[i].len);
    }
    int rc = build(s, pieces, (size_t)a->vocab, &sp, path, e);
    free(pieces);
    if (rc) {
        spm_free(s);
        return -1;
    }
    uint64_t rec[2] = {h, (uint64_t)a->add_dummy_prefix};
    s->id = hash_fnv1a(HASH_FNV_OFFSET, rec, sizeof rec);
    if (a->bos >= 0 && a->bos < s->vocab) s->bos = a->bos;
    if (a->eos >= 0 && a->eos < s->vocab) s->eos = a->eos;
    return 0;
}

int spm_load(Spm *s, const char *path, Err *e) {
    memset(s, 0, sizeof *s);
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            buf = xrealloc(buf, cap);
        }
        got = fread(buf + n, 1, cap - n, fp);
        n += got;
    } while (got > 0);
    int bad = ferror(fp);
    fclose(fp);
    int rc;
    if (bad) rc = err_set(e, "%s: read error", path);
    else if (n == 0) rc = err_set(e, "%s: empty file, not a SentencePiece model", path);
    else rc = load_buf(s, buf, n, path, e);
    free(buf);
    if (rc) spm_free(s);
    return rc;
}

void spm_free(Spm *s) {
    free(s->bytes);
    free(s->off);
    free(s->score);
    free(s->type);
    free(s->unk_surface);
    free(s->map);
    free(s->bigram);
    free(s->user);
    memset(s, 0, sizeof *s);
}

const char *spm_piece(const Spm *s, int id, size_t *len) {
    if (id < 0 || id >= s->vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = piece_len(s, id);
    return s->bytes + s->off[id];
}

int spm_piece_id(const Spm *s, const char *piece) {
    return s->vocab ? find(s, piece, strlen(piece)) : -1;
}

// ---------------------------------------------------------------------------
// encode

typedef struct Sym {
    int32_t prev, next; /* neighbours in the chunk, -1 at its ends */
    uint32_t start;     /* offset in the normalized text */
    uint32_t len;       /* bytes; 0 once merged into its left neighbour */
    int32_t freeze;     /* a user-defined symbol: never merged */
} Sym;

typedef struct Pair {
    float score;        /* the merged piece's score */
    int32_t left, right;
    uint32_t size;      /* merged bytes when pushed: stale if the sides changed */
} Pair;

/* A per-call cache of chunk -> ids, direct-mapped by the chunk's hash: text
 * repeats its words, and a hit skips the merge loop. Key and ids are offsets
 * into the normalized text and the output, both alive for the whole call. */
#define CACHE_SLOTS 8192        /* 128 KiB; sized for ~1 MB calls of mixed text */
#define CACHE_MIN_TEXT 16384    /* smaller calls do not pay for the table */
typedef struct CacheSlot {
    uint32_t key, key_len;      /* norm[key .. key + key_len); key_len 0 = empty */
    uint32_t out, out_n;        /* out[out .. out + out_n) */
} CacheSlot;

typedef struct Work {
    const Spm *s;
    const char *norm;   /* normalized text */
    Sym *sym;
    size_t sym_cap;
    Pair *heap;
    size_t heap_n, heap_cap;
    uint32_t *split;    /* (V) when s->has_unused: left length of the last UNUSED candidate */
    int32_t *out;       /* the caller's ids */
    size_t n, cap;
    int prev_unk;       /* the last symbol emitted was unknown */
    int chunk_unk;      /* the current chunk emitted an unknown symbol */
    CacheSlot *cache;   /* (CACHE_SLOTS) or NULL */
} Work;

/* a before b: higher score, then leftmost (sentencepiece's comparator) */
static int pair_before(const Pair *a, const Pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(Work *w, Pair p) {
    if (w->heap_n == w->heap_cap) {
        w->heap_cap = w->heap_cap ? 2 * w->heap_cap : 256;
        w->heap = xrealloc(w->heap, w->heap_cap * sizeof *w->heap);
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &w->heap[up])) break;
        w->heap[i] = w->heap[up];
        i = up;
    }
    w->heap[i] = p;
}

static Pair heap_pop(Work *w) {
    Pair top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!pair_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* Push the pair (l, r) if their concatenation is a mergeable piece. */
static void try_pair(Work *w, int32_t l, int32_t r) {
    const Spm *s = w->s;
    const Sym *a = &w->sym[l], *b = &w->sym[r];
    if (a->freeze || b->freeze) return;
    uint32_t n = a->len + b->len;
    if ((int)n > s->max_len) return;
    int id = find(s, w->norm + a->start, n);
    if (id < 0 || !mergeable(s->type[id])) return;
    heap_push(w, (Pair){s->score[id], l, r, n});
    if (s->type[id] == SPM_UNUSED) w->split[id] = a->len;
}

static void out_push(Work *w, int32_t id) {
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 256;
        w->out = xrealloc(w->out, w->cap * sizeof *w->out);
    }
    w->out[w->n++] = id;
}

/* Emit the ids of a final symbol: UNUSED pieces split back (recursively),
 * unknown ones to bytes or one unk per run. */
static void emit(Work *w, const char *p, uint32_t len) {
    const Spm *s = w->s;
    int id = find(s, p, len);
    if (id >= 0 && s->type[id] == SPM_UNUSED && w->split[id]) {
        uint32_t k = w->split[id];
        emit(w, p, k);
        emit(w, p + k, len - k);
        return;
    }
    if (id < 0) id = s->unk;
    int unk = s->type[id] == SPM_UNKNOWN;
    if (unk && s->byte_fallback) {
        for (uint32_t i = 0; i < len; i++) out_push(w, s->byte_id[(uint8_t)p[i]]);
    } else if (!(unk && w->prev_unk)) {
        out_push(w, id);
    }
    w->prev_unk = unk;
    w->chunk_unk |= unk;
}

/* BPE over the chunk w->sym[0..n), then emit it. */
static void merge_chunk(Work *w, int32_t n) {
    Sym *sym = w->sym;
    w->heap_n = 0;
    for (int32_t i = 1; i < n; i++) try_pair(w, i - 1, i);
    while (w->heap_n) {
        Pair top = heap_pop(w);
        Sym *a = &sym[top.left], *b = &sym[top.right];
        if (a->len == 0 || b->len == 0 || a->len + b->len != top.size) continue;
        a->len += b->len;
        a->next = b->next;
        if (b->next >= 0) sym[b->next].prev = top.left;
        b->len = 0;
        if (a->prev >= 0) try_pair(w, a->prev, top.left);
        if (a->next >= 0) try_pair(w, top.left, a->next);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) emit(w, w->norm + sym[i].start, sym[i].len);
}

/* The chunk w->sym[0..n): from the cache, or merged and then cached. Its
 * ids depend on its bytes alone, except that without byte fallback a leading
 * unknown symbol joins a preceding one: chunks with an unknown symbol are
 * cached only with byte fallback on. */
static void encode_chunk(Work *w, int32_t n) {
    if (!w->cache || n < 2) {
        merge_chunk(w, n);
        return;
    }
    uint32_t key = w->sym[0].start, key_len = w->sym[n - 1].start + w->sym[n - 1].len - key;
    CacheSlot *slot = &w->cache[hash_bytes(w->norm + key, key_len) & (CACHE_SLOTS - 1)];
    if (slot->key_len == key_len && memcmp(w->norm + slot->key, w->norm + key, key_len) == 0) {
        if (w->n + slot->out_n > w->cap) {
            while (w->n + slot->out_n > w->cap) w->cap = w->cap ? 2 * w->cap : 256;
            w->out = xrealloc(w->out, w->cap * sizeof *w->out);
        }
        memcpy(w->out + w->n, w->out + slot->out, slot->out_n * sizeof *w->out);
        w->n += slot->out_n;
        w->prev_unk = 0;
        return;
    }
    size_t n0 = w->n;
    w->chunk_unk = 0;
    merge_chunk(w, n);
    if (w->s->byte_fallback || !w->chunk_unk)
        *slot = (CacheSlot){key, key_len, (uint32_t)n0, (uint32_t)(w->n - n0)};
}

/* Length of the longest user-defined piece at p[0..n), 0 if none. */
static inline size_t user_match(const Spm *s, const char *p, size_t n) {
    uint8_t c = (uint8_t)p[0];
    size_t best = 0;
    if (s->user_start[c] == s->user_start[c + 1]) return 0;
    for (int j = s->user_start[c]; j < s->user_start[c + 1]; j++) {
        int id = s->user[j];
        size_t k = piece_len(s, id);
        if (k > best && k <= n && memcmp(s->bytes + s->off[id], p, k) == 0) best = k;
    }
    return best;
}

/* One unit of the normalizer at in[i..len): a user-defined piece, a valid
 * character, or one invalid byte (as U+FFFD). Sets *txt / *n to its text and
 * returns the input bytes it consumes. */
static size_t norm_unit(const Spm *s, const char *in, size_t len, size_t i, const char **txt,
                        size_t *n) {
    size_t k = user_match(s, in + i, len - i);
    if (k == 0) k = (size_t)utf8_len((const uint8_t *)in + i, len - i);
    if (k == 0) {
        *txt = REPLACEMENT;
        *n = 3;
        return 1;
    }
    *txt = in + i;
    *n = k;
    return k;
}

/* Normalize in[0..len) into out (room for 3 * len + 3 bytes); returns the
 * length. sentencepiece's Normalizer::Normalize with an empty charsmap. */
static size_t normalize(const Spm *s, const char *in, size_t len, char *out) {
    size_t i = 0, m = 0;
    const char *ws = s->escape_whitespaces ? SPACE : " ";
    size_t wsn = s->escape_whitespaces ? 3 : 1;
    if (len == 0) return 0;
    const char *t;
    size_t tn;
    if (s->remove_extra_whitespaces)
        while (i < len) {
            size_t c = norm_unit(s, in, len, i, &t, &tn);
            if (!(tn == 1 && t[0] == ' ')) break;
            i += c;
        }
    if (i == len) return 0;
    if (s->add_dummy_prefix) {
        memcpy(out, ws, wsn);
        m = wsn;
    }
    int prev_space = s->remove_extra_whitespaces;
    while (i < len) {
        uint8_t c = (uint8_t)in[i];
        if (c < 0x80 && s->user_start[c] == s->user_start[c + 1]) { /* ASCII fast path */
            i++;
            if (c != ' ') {
                out[m++] = (char)c;
                prev_space = 0;
            } else if (!prev_space) {
                memcpy(out + m, ws, wsn);
                m += wsn;
                prev_space = s->remove_extra_whitespaces;
            }
            continue;
        }
        if (s->user_start[c] == s->user_start[c + 1]) { /* a non-ASCII character: no ' ' */
            int k = utf8_len((const uint8_t *)in + i, len - i);
            memcpy(out + m, k ? in + i : REPLACEMENT, k ? (size_t)k : 3);
            m += k ? (size_t)k : 3;
            i += k ? (size_t)k : 1;
            prev_space = 0;
            continue;
        }
        i += norm_unit(s, in, len, i, &t, &tn);
        while (prev_space && tn > 0 && t[0] == ' ') t++, tn--;
        if (tn > 0) {
            for (size_t k = 0; k < tn; k++) {
                if (t[k] == ' ' && s->escape_whitespaces) {
                    memcpy(out + m, SPACE, 3);
                    m += 3;
                } else {
                    out[m++] = t[k];
                }
            }
            prev_space = t[tn - 1] == ' ';
        }
        if (!s->remove_extra_whitespaces) prev_space = 0;
    }
    if (s->remove_extra_whitespaces)
        while (m >= wsn && memcmp(out + m - wsn, ws, wsn) == 0) m -= wsn;
    return m;
}

size_t spm_encode(const Spm *s, const char *text, size_t len, int32_t **ids, size_t *cap) {
    if (len == 0) return 0;
    char *norm = xmalloc(3 * len + 3);
    size_t nlen = normalize(s, text, len, norm);
    LC_ASSERT(nlen < INT32_MAX); /* 32-bit symbol indices and offsets: 2 GiB per call */
    Work w = {.s = s, .norm = norm, .out = *ids, .cap = *cap};
    if (s->has_unused) w.split = xcalloc((size_t)s->vocab, sizeof *w.split);
    else if (nlen >= CACHE_MIN_TEXT) w.cache = xcalloc(CACHE_SLOTS, sizeof *w.cache);
    int32_t k = 0;          /* symbols in the current chunk */
    for (size_t i = 0; i < nlen;) {
        size_t u = user_match(s, norm + i, nlen - i);
        size_t c = u ? u : (size_t)char_len((uint8_t)norm[i]);
        if (c > nlen - i) c = nlen - i;
        /* a boundary no merge crosses ends the chunk (see the top of the file) */
        if (k > 0 && !s->has_unused) {
            unsigned bit = (unsigned)(uint8_t)norm[i - 1] << 8 | (uint8_t)norm[i];
            if (u || w.sym[k - 1].freeze || !(s->bigram[bit >> 6] >> (bit & 63) & 1)) {
                encode_chunk(&w, k);
                k = 0;
            }
        }
        if ((size_t)k == w.sym_cap) {
            w.sym_cap = w.sym_cap ? 2 * w.sym_cap : 256;
            w.sym = xrealloc(w.sym, w.sym_cap * sizeof *w.sym);
        }
        w.sym[k] = (Sym){k - 1, -1, (uint32_t)i, (uint32_t)c, u > 0};
        if (k > 0) w.sym[k - 1].next = k;
        k++;
        i += c;
    }
    if (k > 0) encode_chunk(&w, k);
    free(norm);
    free(w.cache);
    free(w.sym);
    free(w.heap);
    free(w.split);
    *ids = w.out;
    *cap = w.cap;
    return w.n;
}

// ---------------------------------------------------------------------------
// decode

static void put(char **out, size_t *cap, size_t *m, const char *p, size_t n) {
    if (*m + n > *cap) {
        size_t c = *cap ? 2 * *cap : 256;
        while (c < *m + n) c *= 2;
        *out = xrealloc(*out, c);
        *cap = c;
    }
    memcpy(*out + *m, p, n);
    *m += n;
}

/* Append the bytes of the byte pieces ids[a..b): each valid UTF-8 character
 * as is, each byte that starts none as U+FFFD. */
static void put_bytes(const Spm *s, const int32_t *ids, size_t a, size_t b, char **out,
                      size_t *cap, size_t *m) {
    uint8_t c[4];
    for (size_t i = a; i < b;) {
        size_t n = b - i < 4 ? b - i : 4;
        for (size_t k = 0; k < n; k++) c[k] = (uint8_t)byte_of_piece(spm_piece(s, ids[i + k], NULL), 6);
        int k = utf8_len(c, n);
        if (k) put(out, cap, m, (const char *)c, (size_t)k);
        else put(out, cap, m, REPLACEMENT, 3), k = 1;
        i += (size_t)k;
    }
}

size_t spm_decode(const Spm *s, const int32_t *ids, size_t n, char **out, size_t *cap) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->vocab) return (size_t)-1;
    size_t m = 0, bytes_from = 0;
    int bos_ws = 1, bos_ws_seen = 0;     /* sentencepiece's is_bos_ws / bos_ws_seen */
    int strip = s->add_dummy_prefix || s->remove_extra_whitespaces;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i], type = s->type[id];
        if (type == SPM_BYTE) continue;
        put_bytes(s, ids, bytes_from, i, out, cap, &m);
        bytes_from = i + 1;
        if (bos_ws_seen || m > 0) bos_ws = 0;
        bos_ws_seen = 0;
        if (type == SPM_CONTROL) continue;
        if (type == SPM_UNKNOWN) {
            put(out, cap, &m, s->unk_surface, strlen(s->unk_surface));
            continue;
        }
        const char *p = s->bytes + s->off[id];
        size_t len = piece_len(s, id);
        if (bos_ws && strip && len >= 3 && memcmp(p, SPACE, 3) == 0) {
            p += 3, len -= 3;
            bos_ws_seen = !s->remove_extra_whitespaces;
        }
        for (size_t k = 0; k < len;) {
            if (k + 3 <= len && memcmp(p + k, SPACE, 3) == 0) {
                put(out, cap, &m, " ", 1);
                k += 3;
            } else {
                size_t j = k + 1;
                while (j < len && !(j + 3 <= len && memcmp(p + j, SPACE, 3) == 0)) j++;
                put(out, cap, &m, p + k, j - k);
                k = j;
            }
        }
    }
    put_bytes(s, ids, bytes_from, n, out, cap, &m);
    return m;
}
