/*
 * wordsplit.h: English words as datatrove counts them. datatrove's Gopher
 * and C4 filters split text with spaCy's blank English tokenizer (and count
 * C4's sentences with spaCy's sentencizer); this module runs the same
 * algorithm in C on the same settings (data/wordsplit_en.inc, generated from
 * the pinned spaCy by scripts/gen_wordsplit_en.py): Python-whitespace runs
 * separate spans (a single ' ' is dropped, other whitespace becomes a space
 * token), each span is a special case (tokenizer exception) or loses
 * prefixes and suffixes until a special case or nothing is left, the rest is
 * one URL token or is split at infixes, and special cases are then
 * re-matched over adjacent tokens (spaCy's special-case matcher).
 *
 * Tokens are byte ranges of the text (no copies). Regular expressions are
 * PCRE2 (UTF, Unicode properties) translations of spaCy's Python re
 * patterns; where the two engines' classes differ (\w, \d outside ASCII in
 * the URL pattern) the tokens can differ (docs/data.md).
 */
#ifndef LLAMAC_DATA_WORDSPLIT_H
#define LLAMAC_DATA_WORDSPLIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct WordTok {
    uint32_t off, len; /* bytes of the text */
    int space;         /* 1: a whitespace-only token (not a word; spaCy keeps it, datatrove strips it) */
} WordTok;

/* One thread's tokens and match state; zero it, reuse across documents,
 * wordsplit_free at the end. */
typedef struct WordSplit {
    WordTok *tok;
    size_t n, cap;
    void *md;            /* pcre2 match data */
    WordTok *tmp;        /* scratch for the special-case matcher */
    size_t tmp_cap;
    uint32_t *aff;       /* scratch: a span's prefix and suffix lengths */
    size_t aff_cap;
} WordSplit;

/* Compile the patterns and index the special cases, once per process (the
 * later calls return at once; thread-safe after the first returns). Call
 * before any thread splits. Aborts if a pattern does not compile (a bug in
 * the generated table, not user input). */
void wordsplit_init(void);

/* Split text[0..len) (valid UTF-8) into ws->tok[0..ws->n) (overwritten), in
 * text order, space tokens included. */
void wordsplit_run(WordSplit *ws, const char *text, size_t len);

/* 1 if the token's text is one of the sentencizer's sentence-ending
 * characters, 0 if not. */
int wordsplit_sent_punct(const char *s, size_t n);

/* 1 if every character of s[0..n) is Unicode punctuation (category P*, spaCy's
 * is_punct), 0 if not or n is 0. */
int wordsplit_is_punct(const char *s, size_t n);

/* Python's str.isspace on the character at s (n bytes left): its byte length, or 0. */
size_t wordsplit_space_len(const unsigned char *s, size_t n);

/* 1 if every character of s[0..n) is in datatrove's PUNCTUATION_SET (a
 * "symbol" word for GopherQualityFilter), 0 if not; 1 for n == 0. */
int wordsplit_symbol_word(const char *s, size_t n);

/* 1 if some character of s[0..n) is alphabetic (Python's str.isalpha:
 * Unicode letters), 0 if not. Uses ws's match data. */
int wordsplit_has_alpha(WordSplit *ws, const char *s, size_t n);

void wordsplit_free(WordSplit *ws);

#endif
