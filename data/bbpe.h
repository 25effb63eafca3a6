/*
 * bbpe.h: byte-level BPE by merge rank, the model behind Llama 3's two
 * tokenizer files: Hugging Face tokenizer.json (model.type "BPE" with the
 * ByteLevel pre-tokenizer/decoder) and tiktoken (Meta's tokenizer.model).
 *
 * Encoding, in the reference libraries' order:
 *   1. bytes that are not valid UTF-8 become U+FFFD (tok.h says why);
 *   2. added tokens are cut out of the text first, leftmost-longest (Hugging
 *      Face's AddedVocabulary: tokens with normalized=false first, then the
 *      others in what is left); special ones only when asked;
 *   3. each other segment is pre-tokenized by the file's steps: Split (the
 *      regex read from the file, each match and each gap a piece; PCRE2 with
 *      UTF + UCP, JIT) and ByteLevel (optional prefix space; use_regex
 *      splits with GPT-2's pattern); tiktoken files use the Llama 3 pattern;
 *   4. a piece found whole in the vocabulary is that token when the file
 *      says ignore_merges (tiktoken always does); otherwise its bytes merge,
 *      the adjacent pair of lowest rank first, leftmost on ties, until no
 *      pair has a rank. tokenizer.json ranks pairs by their line in
 *      "merges"; tiktoken ranks a pair by the rank of its concatenation.
 * \s and \S in a pattern mean Unicode White_Space (what Oniguruma and Rust's
 * regex use) and are rewritten to that explicit class before PCRE2 sees
 * them: PCRE2's own \s also matches U+180E.
 *
 * Token bytes: a vocabulary string maps back through GPT-2's byte-to-unicode
 * table when all its characters are in it, else it stands for its own UTF-8
 * (as Hugging Face's ByteLevel decoder does); tiktoken tokens are their
 * base64-decoded bytes, specials their names.
 */
#ifndef LLAMAC_DATA_BBPE_H
#define LLAMAC_DATA_BBPE_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "merges.h"

/* Llama 3's split pattern (tiktoken's cl100k one), for tiktoken files,
 * which do not carry their pattern. */
#define BBPE_LLAMA3_PATTERN                                                               \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Meta's llama3 tokenizer.py gives a tiktoken file this many special tokens
 * after its base ranks. */
#define BBPE_LLAMA3_N_SPECIAL 256
#define BBPE_MAX_STEPS 8    /* pre-tokenizer steps in a Sequence */
#define BBPE_MAX_VOCAB (1 << 22)

struct pcre2_real_code_8;

typedef struct BbpeAdded {
    char *text;       /* (len) the token's content, as it appears in text */
    size_t len;
    int id;
    int special;      /* 1: matched only by tok_encode_special */
    int normalized;   /* Hugging Face: matched in the second pass */
} BbpeAdded;

typedef struct BbpeStep {
    int byte_level;   /* 0: Split on re; 1: ByteLevel */
    int prefix_space; /* ByteLevel: add " " to a piece not starting with one */
    struct pcre2_real_code_8 *re; /* NULL: no split (ByteLevel use_regex=false) */
} BbpeStep;

typedef struct Bbpe {
    int tiktoken;          /* 1: tiktoken file, 0: tokenizer.json */
    int vocab;             /* V */
    int bos, eos, eot, unk; /* -1 if none */
    int ignore_merges;     /* a piece found whole in the vocab is not merged */
    uint64_t id;           /* FNV-1a 64 over everything that decides the ids */
    int byte_id[256];      /* id of each single byte, -1 if none */
    char *tok_bytes;       /* every token's bytes, back to back */
    int64_t *tok_off;      /* (V + 1) token i is tok_bytes[tok_off[i] .. tok_off[i+1]) */
    int n_steps;
    BbpeStep step[BBPE_MAX_STEPS];
    int n_added;
    BbpeAdded *added;      /* (n_added) */
    /* private: hash maps and lookup tables */
    MergeMap pairs;        /* (a, b) -> merges_val(rank, new id) */
    int32_t *word_id;      /* bytes -> base token id, open addressing on the token's */
    uint64_t word_mask;    /*   own bytes; -1 empty */
    int32_t *added_slot;   /* bytes -> index into added, -1 empty */
    uint64_t added_mask;
    int added_lens[64];    /* distinct added-token lengths, longest first */
    int n_added_lens;
    uint8_t added_first[2][2][256]; /* [normalized][include special][byte]: a token starts so */
} Bbpe;

/* Load a Hugging Face tokenizer.json (byte-level BPE) / a tiktoken file into
 * *b (free with bbpe_free). Return 0, or -1 with one line naming the file
 * ("not valid JSON (line L: ...)", "model type Unigram not supported
 * (supported: BPE)", "line L: bad base64", ...); *b is then zeroed. */
int bbpe_load_json(Bbpe *b, const char *path, Err *e);
int bbpe_load_tiktoken(Bbpe *b, const char *path, Err *e);

/* A byte-level BPE given as arrays (GGUF's "gpt2" vocabulary, tok.c): token
 * i is tok[i][0..tok_len[i]) in GPT-2's byte-to-unicode alphabet, or, when
 * added[i] is nonzero, an added token spelled as its own text
 * (BBPE_ADDED_SPECIAL: matched only by special encoding; BBPE_ADDED_PLAIN:
 * always, as llama.cpp's USER_DEFINED); merges "a b" in rank order; the
 * text is split by each regex of split in turn (each match and each gap a
 * piece, as llama.cpp's regex_exprs), then merged. bos/eos/eot are the
 * ids, -1 to find them by name as the file loaders do. Strings need no NUL;
 * nothing is kept of sp. */
enum { BBPE_ADDED_PLAIN = 1, BBPE_ADDED_SPECIAL = 2 };
typedef struct BbpeSpec {
    int vocab;
    const char *const *tok;
    const size_t *tok_len;
    const uint8_t *added;       /* (vocab) or NULL: none */
    int n_merges;
    const char *const *merge;
    const size_t *merge_len;
    int n_split;
    const char *const *split;   /* (n_split) PCRE2 patterns (\s rewritten as above) */
    int ignore_merges;
    int bos, eos, eot;
} BbpeSpec;

/* Build *b from sp (free with bbpe_free); path names the source in errors
 * ("merge 7 (a b): right part not in vocab", "bad split pattern ..."). */
int bbpe_init(Bbpe *b, const BbpeSpec *sp, const char *path, Err *e);

/* Release what a load put in b and zero it; a zeroed b is fine. */
void bbpe_free(Bbpe *b);

/* Encode text[0..len) as above (special: 1 = special added tokens named in
 * the text become their ids) into (*ids)[0..n), grown with realloc (caller
 * frees). Returns n. Thread-safe: each thread keeps a piece cache (4 MiB)
 * and PCRE2 match state (chunkcache.h: one per thread for bpe and bbpe,
 * keyed by b->id), freed when the thread exits. */
size_t bbpe_encode(const Bbpe *b, const char *text, size_t len, int special, int32_t **ids,
                   size_t *cap);

/* Decode as tok_decode (tok.h). Returns the byte count, or (size_t)-1 for an
 * id outside [0, V). */
size_t bbpe_decode(const Bbpe *b, const int32_t *ids, size_t n, char **out, size_t *cap);

/* The bytes of token id (borrowed; not NUL-terminated), NULL and *len = 0
 * if id is outside [0, V). */
const char *bbpe_token_bytes(const Bbpe *b, int id, size_t *len);

/* Compile a split pattern as tokenizer.json patterns are compiled here (\s
 * and \S rewritten as above, PCRE2 UTF + UCP, JIT when there is one);
 * invalid_utf adds PCRE2_MATCH_INVALID_UTF, for subjects that may hold
 * invalid UTF-8 (no pattern character matches it). NULL with "<where>: bad
 * split pattern (...)" in e. Free with pcre2_code_free. */
struct pcre2_real_code_8 *bbpe_compile_pattern(const char *pattern, int invalid_utf, const char *where, Err *e);

/* Id of the added (special or not) token whose content is name, or -1. */
int bbpe_special_id(const Bbpe *b, const char *name);

/* tok_utf8_lossy (tok.h): each maximal ill-formed subsequence -> U+FFFD. */
size_t bbpe_utf8_lossy(const char *s, size_t n, char **out, size_t *cap);

/* GPT-2's byte-to-unicode spelling of the bytes in[0..n) (what byte-level
 * vocabularies in GGUF and tokenizer.json hold: printable bytes stand for
 * themselves, the other 68 for U+0100...) into out, which has room for
 * 2 * n bytes; returns its length. The inverse of what loading does. */
size_t bbpe_byte_level(const char *in, size_t n, char *out);

/* b's merges in rank order: pairs (a, b) of ids as (*ab)[2i], (*ab)[2i + 1]
 * (caller frees). Returns their number. Pairs that share a rank (tiktoken)
 * keep the pair table's slot order. */
size_t bbpe_merges(const Bbpe *b, int32_t **ab);

#endif
