/*
 * dedup.h: exact and near-duplicate document removal (llamac data dedup),
 * computed as Hugging Face datatrove 0.10.1 computes it so the kept
 * documents can be compared one for one (scripts/test_dedup_ref.py).
 *
 * Text is normalised by dedup_normalize (datatrove's simplify_text: lower
 * case, digit runs to "0", punctuation to spaces, whitespace collapsed,
 * diacritics dropped). Exact dedup hashes the normalised text (XXH64) and
 * keeps the first document of each hash. MinHash: the normalised text split
 * into words (spaCy's English rules for punctuation-free text: contractions
 * and units split), word n-grams joined by one space and hashed with XXH64
 * (seed 0), then num_buckets x rows permutations h -> (a*h + b mod 2^64) mod
 * (2^61 - 1) with (a, b) drawn by numpy's RandomState(seed) as datatrove
 * does; the minimum per permutation is the signature. Documents whose bands
 * (rows values each) agree in any bucket are candidates; union-find joins
 * them into clusters and one document per cluster is kept.
 */
#ifndef LLAMAC_DATA_DEDUP_H
#define LLAMAC_DATA_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"

/* datatrove's MinhashConfig defaults */
#define MINHASH_NGRAM 5
#define MINHASH_BUCKETS 14
#define MINHASH_ROWS 8
#define MINHASH_SEED 1
#define MINHASH_PRIME ((1ULL << 61) - 1) /* the Mersenne prime of the permutations */

typedef struct MinhashParams {
    int ngram, buckets, rows;
    uint64_t *a, *b; /* (buckets*rows) permutation coefficients, owned */
} MinhashParams;

/* Per-thread scratch for minhash_signature; zero-initialise, free with
 * minhash_scratch_free. */
typedef struct MinhashScratch {
    char *norm;     /* the last normalised text (minhash_signature, dedup_exact_key) */
    size_t ncap, nnorm;
    char *words;    /* dedup_words of norm */
    size_t wcap;
    uint32_t *start; /* offset of each word in words */
    size_t scap;
} MinhashScratch;

/* XXH64 of p[0..n) with seed (the xxHash specification; the same value as
 * Python's xxhash.xxh64_intdigest). */
uint64_t dedup_xxh64(const void *p, size_t n, uint64_t seed);

/* Normalise s[0..n) (UTF-8) as datatrove's simplify_text with its default
 * TextNormConfig into out (2n + 1 bytes: a byte that is not UTF-8 is taken
 * as Latin-1 and re-encoded in two; NUL-terminated); returns the output
 * length (<= n for UTF-8 input). Covered exactly: ASCII, Latin-1, Latin
 * Extended-A, basic Greek and Cyrillic case; decimal digits of ASCII,
 * Arabic-Indic, Devanagari and full width; every character of datatrove's
 * punctuation list; combining marks U+0300-U+036F. Other characters pass
 * through unchanged (datatrove would lower-case or decompose some). */
size_t dedup_normalize(const char *s, size_t n, char *out);

/* The exact-dedup key of a document: XXH64 of its normalised text. */
uint64_t dedup_exact_key(const char *s, size_t n, MinhashScratch *sc);

/* Fill p for ngram/buckets/rows with the coefficients numpy's
 * RandomState(seed).randint draws for datatrove (a in [1, P), then b in
 * [0, P), P = 2^61 - 1). seed must be in [0, 2^32). Free with
 * minhash_params_free. */
void minhash_params_init(MinhashParams *p, int ngram, int buckets, int rows, uint32_t seed);
void minhash_params_free(MinhashParams *p);

/* The MinHash signature of s[0..n): sig[0..buckets*rows) = min over the
 * document's shingles of each permutation. Returns the number of shingles
 * (n-grams); 0 means the document has fewer than ngram words and no
 * signature (sig untouched): datatrove never pairs such a document. */
size_t minhash_signature(const MinhashParams *p, const char *s, size_t n, uint64_t *sig, MinhashScratch *sc);

/* The words of normalised text norm[0..n) as datatrove's English word
 * tokenizer (spaCy) splits it: written space-separated into out (at least
 * 2n + 1 bytes; NUL-terminated), so a word n-gram joined by spaces is a
 * substring of out. Returns out's length. */
size_t dedup_words(const char *norm, size_t n, char *out);

void minhash_scratch_free(MinhashScratch *sc);

/* Union-find over documents 0..n) with datatrove's rule (union by size; on
 * a tie the root of the first argument stays root), so the document kept
 * per cluster (the root) is the one datatrove keeps when the pairs arrive
 * in the same order (minhash_cluster_bucket's). */
typedef struct DedupUF {
    uint32_t *parent, *size;
    size_t n;
} DedupUF;

void dedup_uf_init(DedupUF *u, size_t n);
uint32_t dedup_uf_find(DedupUF *u, uint32_t x);
void dedup_uf_union(DedupUF *u, uint32_t a, uint32_t b);
void dedup_uf_free(DedupUF *u);

/* Join the documents of one bucket whose bands agree: band[i*rows ..
 * (i+1)*rows) is document doc[i]'s band (i < m). The entries are sorted by
 * (band values, document) and each pair of neighbours with equal bands is
 * joined, first the earlier: the pairs and their order of datatrove's
 * MinhashDedupBuckets, which MinhashDedupCluster joins bucket by bucket.
 * Call once per bucket, in bucket order. Memory: 8 bytes per entry. */
void minhash_cluster_bucket(const uint64_t *band, const uint32_t *doc, size_t m, int rows, DedupUF *u);

/* Probability that two documents of Jaccard similarity s share at least
 * one band: 1 - (1 - s^rows)^buckets. */
double minhash_pair_prob(double s, int buckets, int rows);

#endif
