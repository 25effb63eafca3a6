/*
 * spm.h: SentencePiece BPE tokenizers (Llama 1/2's tokenizer.model), read from
 * the serialized ModelProto without a protobuf library, encoding and decoding
 * exactly as the sentencepiece library does (tests/test_spm.c checks ids and
 * decoded text against it on scripts/spm_ref.py's model and texts).
 *
 * File: a protobuf ModelProto. The fields read (others are skipped):
 *   1 pieces (repeated): 1 piece (bytes), 2 score (float), 3 type (SPM_*)
 *   2 trainer_spec: 3 model_type (1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR),
 *     24 treat_whitespace_as_suffix, 25 split_digits, 35 byte_fallback,
 *     44 unk_surface, 45..48 unk/bos/eos/pad piece names
 *   3 normalizer_spec: 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
 *     4 remove_extra_whitespaces, 5 escape_whitespaces (proto2 defaults: true)
 *   5 denormalizer_spec: 2 precompiled_charsmap
 * Supported: model_type BPE, no precompiled_charsmap (the "identity" rule, as
 * in Llama's model), whitespace as prefix; anything else is a load error.
 *
 * Encoding, as sentencepiece does it:
 *  1. normalize: empty text stays empty; every invalid UTF-8 byte (overlong
 *     forms, surrogates and > U+10FFFF included) becomes U+FFFD; with
 *     add_dummy_prefix a "▁" (U+2581) is put in front; with
 *     escape_whitespaces each ' ' becomes "▁"; with remove_extra_whitespaces
 *     leading and trailing spaces go and inner runs collapse to one.
 *  2. split into characters, except that the longest USER_DEFINED piece
 *     starting at a position is one symbol that never merges.
 *  3. merge: repeatedly join the adjacent pair whose concatenation is a piece
 *     (NORMAL, USER_DEFINED or UNUSED) of highest score, leftmost on ties.
 *  4. an UNUSED result is split back into the two symbols it was made from
 *     (recursively); a symbol that is no piece is the unknown piece, which
 *     with byte_fallback becomes one <0xNN> piece per byte, and without it
 *     one unk id per run of unknown symbols.
 * split_digits only shapes training (no piece holds two digits): encoding
 * reads it and does nothing with it, as sentencepiece.
 *
 * Decoding: CONTROL pieces decode to nothing, the unknown piece to
 * unk_surface (" ⁇ "), runs of byte pieces to their bytes with each invalid
 * UTF-8 byte as U+FFFD, other pieces to their text with "▁" as ' '; the
 * first piece's leading "▁" is dropped (the dummy prefix) while nothing has
 * been output yet.
 */
#ifndef LLAMAC_DATA_SPM_H
#define LLAMAC_DATA_SPM_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"

/* ModelProto.SentencePiece.Type */
enum { SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER_DEFINED = 4, SPM_UNUSED = 5,
       SPM_BYTE = 6 };

#define SPM_MAX_VOCAB (1 << 24) /* 128x Llama 3's vocab; bounds a bad file */

typedef struct Spm {
    int vocab;                 /* V: pieces; id i is the i-th piece of the file */
    char *bytes;               /* every piece's bytes back to back, each NUL-terminated */
    uint32_t *off;             /* (V + 1): piece i is bytes[off[i] .. off[i+1] - 1) */
    float *score;              /* (V) merge priority, higher first */
    uint8_t *type;             /* (V) SPM_* */
    int unk, bos, eos, pad;    /* ids; bos/eos/pad are -1 when the model has none */
    int byte_fallback, split_digits;
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    int byte_id[256];          /* id of the piece <0xNN>, -1 when absent */
    char *unk_surface;         /* what the unknown piece decodes to */
    uint64_t id;               /* FNV-1a 64 over the file's bytes: the tokenizer's
                                * identity, recorded in data shards */
    /* private: built on load */
    uint64_t *map;             /* open addressing piece -> hash tag << 32 | (id + 1), 0 = empty */
    uint32_t map_mask;         /* map size - 1 (a power of two) */
    int max_len;               /* longest mergeable piece, bytes */
    uint64_t *bigram;          /* (256 * 4) bit a*256+b: bytes a, b adjacent in a mergeable piece */
    int32_t *user;             /* USER_DEFINED ids sorted by first byte */
    int32_t user_start[257];   /* user[user_start[c] .. user_start[c+1]) start with byte c */
    int has_unused;            /* any UNUSED piece (disables chunking, see spm.c) */
} Spm;

/* Read a SentencePiece model into *s (free with spm_free). Returns 0, or -1
 * with one line naming the file: "cannot open (...)", "empty file",
 * "truncated", "not a SentencePiece model (bad protobuf)", "model type
 * UNIGRAM not supported (supported: BPE)", "normalization rule 'nmt_nfkc'
 * not supported (supported: identity)", "piece 7 duplicates piece 3", ...;
 * *s is then zeroed. */
int spm_load(Spm *s, const char *path, Err *e);

/* A SentencePiece BPE given as arrays (GGUF's "llama" vocabulary, tok.c):
 * piece i is piece[i][0..piece_len[i]) (no NUL needed) with score[i] and
 * type[i] (SPM_*; NULL: 0 scores / all NORMAL); byte fallback is on when
 * there are BYTE pieces; normalization is llama.cpp's (dummy prefix per
 * add_dummy_prefix, spaces as "▁", extra whitespace kept); bos/eos ids
 * (-1: by name, as spm_load). Nothing of a is kept. */
typedef struct SpmSpec {
    int vocab;
    const char *const *piece;
    const size_t *piece_len;
    const float *score;
    const int32_t *type;
    int add_dummy_prefix;
    int bos, eos;
} SpmSpec;

/* Build *s from a (free with spm_free); errors as spm_load's, naming path. */
int spm_init(Spm *s, const SpmSpec *a, const char *path, Err *e);

/* Release what spm_load put in s and zero it; a zeroed s is fine. */
void spm_free(Spm *s);

/* Encode text[0..len) (any bytes) to ids written to (*ids)[0..n), growing
 * *ids with realloc (*cap its capacity in ids; *ids = NULL, *cap = 0 is a
 * fine start; the caller frees *ids with free()). No BOS/EOS is added, and
 * control-piece text ("<s>") in the input is ordinary text. Returns n (0 for
 * len == 0). Thread-safe: s is only read. O(n log n) in the text length. */
size_t spm_encode(const Spm *s, const char *text, size_t len, int32_t **ids, size_t *cap);

/* Decode ids[0..n) to UTF-8 text written to (*out)[0..m), growing *out with
 * realloc (*cap its capacity in bytes; caller frees with free()); no NUL is
 * appended. Returns m, or (size_t)-1 if an id is outside [0, vocab). */
size_t spm_decode(const Spm *s, const int32_t *ids, size_t n, char **out, size_t *cap);

/* The raw piece string of id (NUL-terminated, borrowed from s; "▁" not
 * replaced) and its length in *len (if len is not NULL); NULL if id is
 * outside [0, vocab). */
const char *spm_piece(const Spm *s, int id, size_t *len);

/* Id of the piece spelled exactly piece (any type), or -1 if none. */
int spm_piece_id(const Spm *s, const char *piece);

#endif
