/*
 * tok.h: one tokenizer interface over every kind llamac reads, so the
 * commands (tokenize, pretrain, generate, chat/SFT) never ask which kind
 * they hold.
 *
 * Kinds, detected from the file's content (never its name):
 *   TOK_LLAMAC    llamac's own byte-level BPE (bpe.h; magic "CTOK")
 *   TOK_HF        Hugging Face tokenizer.json with a byte-level BPE model
 *                 (Llama 3; bbpe.h), a JSON object whose first byte is '{'
 *   TOK_TIKTOKEN  a tiktoken file, lines "base64token rank" (Llama 3's
 *                 tokenizer.model; bbpe.h), with Meta's 256 special tokens
 *   TOK_SPM       a SentencePiece model (protobuf; Llama 1/2; spm.h)
 *   TOK_GGUF      the vocabulary in a GGUF file (magic "GGUF"; gguf.h):
 *                 tokenizer.ggml.model "gpt2" is a byte-level BPE (bbpe.h:
 *                 tokens in GPT-2's byte alphabet, merges in rank order,
 *                 CONTROL/UNKNOWN types special tokens, USER_DEFINED added
 *                 ones, tokenizer.ggml.pre named to llama.cpp's split regexes:
 *                 llama-bpe/llama3, gpt2, smollm, starcoder, refact,
 *                 default); "llama" is SentencePiece (pieces, scores, types;
 *                 such a tokenizer then has kind TOK_SPM). bos/eos/eot/pad
 *                 from tokenizer.ggml.{bos,eos,eot,padding}_token_id. Another
 *                 model or pre-tokenizer name is an error naming it.
 *
 * Ids: every kind has vocab ids [0, vocab). bos / eos are the
 * begin-/end-of-text ids (eos separates documents in shards); eot is the
 * end-of-turn id a chat reply ends with (<|eot_id|> where the tokenizer has
 * it, else eos). Any of them is -1 if the tokenizer has none.
 *
 * Text is bytes. The byte-level kinds (TOK_HF, TOK_TIKTOKEN) follow their
 * reference libraries, which only take str: bytes that are not valid UTF-8
 * are first replaced by U+FFFD, one per maximal ill-formed subsequence, as
 * Python's bytes.decode("utf-8", "replace") does, so llamac's ids for raw
 * bytes equal the reference's ids for the text Python decodes them to.
 * TOK_LLAMAC encodes any bytes losslessly.
 *
 * Special tokens: tok_encode treats special-token names in the text as
 * ordinary text; tok_encode_special turns them into their ids (what
 * tiktoken's allowed_special="all" and Hugging Face's default do).
 * Non-special added tokens of a tokenizer.json are matched by both, as
 * Hugging Face always matches them. A SentencePiece model's special tokens
 * are its CONTROL pieces and the unknown piece (<s>, </s>, <unk>); the text
 * between them is encoded as separate texts (each with the dummy prefix).
 *
 * Decoding: every kind but SentencePiece gives the tokens' bytes back to
 * back (special tokens as their names). SentencePiece decodes as the
 * sentencepiece library does: CONTROL pieces give nothing, the first
 * piece's leading space (the dummy prefix) goes, runs of byte pieces that
 * are not UTF-8 become U+FFFD; its tok_token_bytes are the pieces with "▁"
 * as ' ' (the streaming view of the same text).
 */
#ifndef LLAMAC_DATA_TOK_H
#define LLAMAC_DATA_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "bpe.h"

typedef enum { TOK_LLAMAC, TOK_HF, TOK_TIKTOKEN, TOK_SPM, TOK_GGUF, TOK_KIND_COUNT } TokKind;

struct Bbpe;
struct TokSpm;

typedef struct Tokenizer {
    TokKind kind;
    int vocab;          /* V: ids are [0, vocab) */
    int bos, eos, eot;  /* see above; -1 if none */
    int pad;            /* padding id, -1 if none (SentencePiece's pad, GGUF's padding_token_id) */
    char *chat_template; /* the Jinja chat template the file carries (GGUF's
                          * tokenizer.chat_template), NUL-terminated, NULL if none */
    char pre[32];       /* a GGUF byte-level vocabulary's tokenizer.ggml.pre (its split), else "" */
    uint64_t id;        /* identity of the tokenizer, recorded in shards and model files */
    /* private: the one implementation kind names */
    Bpe *bpe;
    struct Bbpe *bb;
    struct TokSpm *spm; /* the Spm plus per-id bytes (tok.c) */
} Tokenizer;

/* Load path (any kind, detected from its content) into *t; free with
 * tok_free. Returns 0, or -1 with one line naming the file: "cannot open",
 * "unknown tokenizer format (...)", "truncated", "not valid JSON (...)",
 * "model type Unigram not supported (supported: BPE)", ...; *t is then
 * zeroed. */
int tok_load(Tokenizer *t, const char *path, Err *e);

/* Release what tok_load put in t and zero it; a zeroed t is fine. */
void tok_free(Tokenizer *t);

/* Kind name: "llamac", "tokenizer.json", "tiktoken", "sentencepiece", "gguf". */
const char *tok_kind_name(TokKind k);

/* The SentencePiece model behind a TOK_SPM tokenizer (pieces, scores,
 * types, for exporters), NULL for other kinds. */
struct Spm;
const struct Spm *tok_spm_model(const Tokenizer *t);

/* Encode text[0..len) (any bytes) to ids written to (*ids)[0..n), growing
 * *ids with realloc (*cap its capacity in ids; *ids = NULL, *cap = 0 is a
 * fine start; the caller frees *ids with free()). Returns n. No BOS/EOS is
 * added. tok_encode: special-token names are ordinary text;
 * tok_encode_special: they become their ids. Thread-safe (t is only read). */
size_t tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *cap);
size_t tok_encode_special(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                          size_t *cap);

/* Decode ids[0..n) to bytes (*out)[0..m), growing *out with realloc (*cap
 * its capacity; caller frees with free()); special ids decode to their
 * names, no NUL is appended. Returns m, or (size_t)-1 if an id is outside
 * [0, vocab). The bytes may hold invalid UTF-8 (a byte-level token can be
 * part of a character); tok_utf8_lossy makes text of them. */
size_t tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *cap);

/* The bytes token id stands for, for streaming generation (borrowed from t,
 * not NUL-terminated): the pointer, *len set. NULL and *len = 0 if id is
 * outside [0, vocab). Concatenating them gives tok_decode's bytes. */
const char *tok_token_bytes(const Tokenizer *t, int id, size_t *len);

/* Identity of the vocabulary alone: a hash of every id's bytes
 * (tok_token_bytes, 0..vocab-1), the same for one vocabulary read from any
 * format (llamac's file, tokenizer.json, a GGUF), unlike t->id, which
 * depends on the file. Two models whose vocabularies hash alike read ids
 * alike (distill's teacher and student). Never 0. */
uint64_t tok_vocab_hash(const Tokenizer *t);

/* Id of the special (or added) token named name, or -1 if there is none. */
int tok_special_id(const Tokenizer *t, const char *name);

/* Replace each maximal ill-formed UTF-8 subsequence of s[0..n) by U+FFFD
 * (Python's "replace", Rust's from_utf8_lossy), writing (*out)[0..m)
 * (grown with realloc; caller frees). Returns m. */
size_t tok_utf8_lossy(const char *s, size_t n, char **out, size_t *cap);

/* The merges of a byte-level tokenizer (any kind but TOK_SPM) in rank order:
 * pairs (a, b) of ids as (*ab)[2i], (*ab)[2i + 1] (caller frees). Returns
 * their number. What GGUF and tokenizer.json exports write. */
size_t tok_merges(const Tokenizer *t, int32_t **ab);

#endif
