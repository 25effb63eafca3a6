/*
 * bpe.h: a byte-level BPE tokenizer (Sennrich et al. 2016; byte-level as in
 * GPT-2 and Llama 3's tiktoken): trainer, encoder, decoder and file format.
 *
 * Ids: 0..255 are the raw bytes, 256 + i is merge i, and the special tokens
 * take the last n_special ids. Any byte string encodes, and
 * decode(encode(x)) == x for every x (NUL and invalid UTF-8 included).
 *
 * Pre-tokenization: the text is cut into chunks and merges never cross a
 * chunk boundary. Two splits exist:
 *
 * The split regex (file version 2; what bpe_train uses): a PCRE2 pattern
 * recorded in the file, by default Llama 3's (BPE_DEFAULT_PATTERN, the one
 * llama.cpp calls "llama-bpe" and Hugging Face's Llama 3 tokenizer.json
 * carries). Each match is a chunk and so is each gap between matches (for
 * Llama 3's pattern, gaps only hold bytes that are not valid UTF-8, which
 * the regex does not match: every byte string still encodes losslessly).
 * \s / \S mean Unicode White_Space, as in tokenizer.json (bbpe.h). As
 * Hugging Face's ignore_merges and llama.cpp's llama-bpe do, a chunk that is
 * itself a token is that token; otherwise the merges apply. So llama.cpp
 * and transformers tokenize exported models as llamac does, up to two
 * limits: a chunk longer than BPE_MAX_CHUNK bytes is cut at a character
 * boundary (the references keep it whole; only runs of over 1 KiB of one
 * class, e.g. spaces, differ), and bytes that are not UTF-8 (which the
 * references never see: they take str).
 *
 * llamac's own split (file version 1, kept so that old tokenizer files and
 * their shards encode as before; bpe_chunk_end): hand-written over bytes,
 * in the spirit of the Llama 3 / GPT-4 split pattern. Classes: letter =
 * A-Z a-z and every byte >= 0x80 (so UTF-8 text stays together), digit =
 * 0-9, newline = \r \n, blank = space \t \v \f, punct = every other byte
 * (NUL and controls too). At position i, with c = text[i]:
 *   digit                     -> that one digit (numbers split into digits,
 *                                as the Llama papers do)
 *   letter                    -> the run of letters
 *   punct                     -> the run of punct
 *   ' ' before letter / punct -> the space plus the run of that class
 *   newline                   -> the run of newlines
 *   blank                     -> the run of blanks, less its last byte when
 *                                that is a space followed by a letter or
 *                                punct, which then leads the next chunk
 *                                (as in GPT-2: "a  b" is "a" " " " b")
 * and no chunk is longer than BPE_MAX_CHUNK bytes (a longer run is cut), so
 * one chunk's merge work is bounded. It is none of llama.cpp's splits.
 *
 * File (little-endian): uint32 magic BPE_MAGIC ("CTOK"), uint32 version,
 * uint32 vocab, uint32 n_merges, uint32 n_special, n_merges x (int32 a,
 * int32 b), n_special x (uint32 len, len bytes), [version 2: uint32 len,
 * len bytes: the split pattern], uint64 id. vocab must equal 256 + n_merges
 * + n_special; id is recomputed on load and must match. A tokenizer without
 * a pattern is saved as version 1, byte for byte as before.
 */
#ifndef LLAMAC_DATA_BPE_H
#define LLAMAC_DATA_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "bbpe.h"
#include "merges.h"

#define BPE_MAGIC 0x4b4f5443u /* bytes "CTOK" read as a little-endian uint32 */
#define BPE_VERSION 2         /* 1: llamac's own split, 2: a split pattern */
#define BPE_DEFAULT_PATTERN BBPE_LLAMA3_PATTERN
#define BPE_MAX_PATTERN 4096  /* longest split pattern in a file, in bytes */
#define BPE_MAX_VOCAB (1 << 21) /* 16x Llama 3's 128256; bounds a bad header */
#define BPE_MAX_CHUNK 1024      /* longest pre-tokenizer chunk, in bytes */
#define BPE_MAX_SPECIAL_LEN 255 /* longest special-token name, in bytes */

/* The special tokens bpe_train adds, in id order after the merges: Llama 3's
 * document markers and the chat-template header/turn markers. */
#define BPE_BOS "<|begin_of_text|>"
#define BPE_EOS "<|end_of_text|>"
#define BPE_START_HEADER "<|start_header_id|>"
#define BPE_END_HEADER "<|end_header_id|>"
#define BPE_EOT "<|eot_id|>"

typedef struct Bpe {
    int vocab;               /* V: total ids = 256 + n_merges + n_special */
    int n_merges;
    int32_t (*merges)[2];    /* (n_merges, 2): merge i makes id 256 + i from (a, b) */
    int n_special;
    char **special;          /* (n_special) NUL-terminated names; id 256 + n_merges + k */
    int bos, eos;            /* ids of BPE_BOS and BPE_EOS */
    char *pattern;           /* the split regex; NULL: llamac's own split (version 1) */
    uint64_t id;             /* FNV-1a 64 over the merges (int32 a, int32 b LE each)
                              * then each special (uint32 len LE, bytes), then
                              * the pattern (uint32 len LE, bytes) if any: the
                              * tokenizer's identity, recorded in data shards */
    /* private: built from merges and specials */
    char *tok_bytes;         /* every token's bytes, back to back */
    int64_t *tok_off;        /* (vocab + 1): token i is tok_bytes[tok_off[i] .. tok_off[i+1]) */
    MergeMap ranks;          /* (a, b) -> merges_val(merge index i, id 256 + i) */
    struct pcre2_real_code_8 *re; /* pattern compiled (MATCH_INVALID_UTF) */
    int32_t *word_id;        /* with a pattern: token bytes -> merged id, -1 empty */
    uint64_t word_mask;
} Bpe;

/* Train on texts[0..ntexts) (lengths lens[i]; any bytes) to `vocab` total ids:
 * 256 byte tokens, vocab - 256 - 5 merges, then the 5 special tokens above.
 * Each merge joins the adjacent pair with the highest count over all chunks
 * (overlapping pairs counted, as in GPT-2 / minbpe); ties go to the smallest
 * (a, b). Deterministic. If the corpus runs out of pairs first, training
 * stops early and t->vocab is smaller than asked. Fills *t (free with
 * bpe_free). Returns 0, or -1 with "--vocab: ..." if vocab < 256 + 5 + 1 or
 * vocab > BPE_MAX_VOCAB. */
int bpe_train(Bpe *t, const char *const *texts, const size_t *lens, int ntexts, int vocab,
              Err *e);

/* bpe_train with the split given: a PCRE2 pattern (UTF; "--pattern: bad
 * split pattern ..." if it does not compile), or NULL for llamac's own
 * split (version 1; bpe_train before the pattern existed). bpe_train is
 * bpe_train_split with BPE_DEFAULT_PATTERN. */
int bpe_train_split(Bpe *t, const char *const *texts, const size_t *lens, int ntexts, int vocab,
                    const char *pattern, Err *e);

/* Write t to path atomically ("<path>.tmp" then rename). Returns 0, or -1
 * with "<path>: cannot write (...)". */
int bpe_save(const Bpe *t, const char *path, Err *e);

/* Read a tokenizer written by bpe_save into *t (free with bpe_free). Returns
 * 0, or -1 with one line naming the file: "cannot open", "not a llamac
 * tokenizer (bad magic)", "unsupported version N", "truncated", "merge i
 * refers to unknown id X", "corrupted (checksum mismatch)", ...; *t is then
 * zeroed. */
int bpe_load(Bpe *t, const char *path, Err *e);

/* Release what bpe_train / bpe_load put in t and zero it; a zeroed t is fine. */
void bpe_free(Bpe *t);

/* End (exclusive) of the pre-tokenizer chunk that starts at text[i], i < len,
 * under llamac's own split (version 1): the rules above. Always > i. */
size_t bpe_chunk_end(const char *text, size_t len, size_t i);

/* End of the chunk at text[i] under t's split (its pattern, else
 * bpe_chunk_end). Always > i. Thread-safe. */
size_t bpe_split_end(const Bpe *t, const char *text, size_t len, size_t i);

/* Encode text[0..len) (any bytes) to ids written to (*ids)[0..n), growing *ids
 * with realloc (*cap is its capacity in ids; *ids = NULL, *cap = 0 is a fine
 * start; the caller frees *ids with free()). Returns n (0 for len == 0).
 * Special-token names in the text are ordinary text, never special ids.
 * Within each chunk (with a pattern: that is not itself a token) the pair of
 * lowest merge index is merged first (leftmost on ties), which reproduces
 * the training order. Thread-safe: t is only read;
 * each calling thread keeps a 4 MiB cache of recent chunks (chunkcache.h:
 * one per thread for bpe and bbpe, keyed by t->id, freed when the thread
 * exits). */
size_t bpe_encode(const Bpe *t, const char *text, size_t len, int32_t **ids, size_t *cap);

/* Decode ids[0..n) to bytes written to (*out)[0..m), growing *out with
 * realloc (*cap its capacity in bytes; caller frees with free()); special ids
 * decode to their names. No NUL is appended. Returns m, or (size_t)-1 if an
 * id is outside [0, vocab). */
size_t bpe_decode(const Bpe *t, const int32_t *ids, size_t n, char **out, size_t *cap);

/* The bytes of token id (not NUL-terminated; borrowed from t): returns the
 * pointer and sets *len. NULL and *len = 0 if id is outside [0, vocab). */
const char *bpe_token_bytes(const Bpe *t, int id, size_t *len);

/* Id of the special token named name, or -1 if t has none of that name. */
int bpe_special_id(const Bpe *t, const char *name);

#endif
