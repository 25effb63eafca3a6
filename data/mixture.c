/*
 * mixture.c: weighted sources of token shards (contract in mixture.h).
 *
 * A mixture of one source delegates to the loader as it is (whole batches,
 * two-word cursor). With several, each source is a Loader of B = 1 over its
 * own shards, seeded by (seed, source index), so its cursor (epoch, pos)
 * advances one window per row it contributes and wraps at exactly its
 * window count; the global row counter is then the sum over sources of
 * epoch x windows + pos, which mixture_seek checks.
 */
#include "mixture.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN 0x9e3779b97f4a7c15ULL

int mixture_check_name(const char *name, const char *flag, Err *e) {
    size_t n = strlen(name);
    if (n == 0) return err_set(e, "%s: a source needs a name before '='", flag);
    if (n >= MIX_NAME_MAX) return err_set(e, "%s: source name '%.60s' is longer than %d characters", flag, name, MIX_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return err_set(e, "%s: source name '%.60s' may hold only letters, digits, '_', '-' and '.'", flag, name);
    }
    return 0;
}

int mixture_parse_weight(const char *text, const char *flag, const char *name, double *w, Err *e) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end != '\0')
        return err_set(e, "%s %s: weight '%.40s' is not a number", flag, name, text);
    if (!isfinite(v) || !(v > 0))
        return err_set(e, "%s %s: weight %.40s must be positive and finite", flag, name, text);
    *w = v;
    return 0;
}

/* The seed of source k's own window order (k > 0 of a real mixture). */
static uint64_t source_seed(uint64_t seed, int k) { return hash_mix64(seed ^ hash_mix64((uint64_t)k + GOLDEN)); }

/* The block permutations' seed and the offsets' key: both from seed alone. */
static uint64_t mix_key(uint64_t seed) { return hash_mix64(seed ^ 0x6d69787475726521ULL); /* "mixture!" */ }

/* Row r's uniform, given its block's strata order perm. */
static double row_uniform(const uint64_t *perm, uint64_t seed, uint64_t r) {
    uint64_t h = hash_mix64(mix_key(seed) + (r + 1) * GOLDEN); /* splitmix64 at counter r */
    double off = (double)(h >> 11) * 0x1p-53;
    return ((double)perm[r % MIX_BLOCK] + off) / MIX_BLOCK;
}

static int pick(const double *cum, int k, double u) {
    for (int i = 0; i < k - 1; i++)
        if (u < cum[i]) return i;
    return k - 1;
}

int mixture_source_of(const double *cum, int k, uint64_t seed, uint64_t r) {
    uint64_t perm[MIX_BLOCK];
    loader_permute(perm, MIX_BLOCK, mix_key(seed), r / MIX_BLOCK);
    return pick(cum, k, row_uniform(perm, seed, r));
}

/* Windows of T+1 tokens in a shard of n tokens (loader.c's rule). */
static uint64_t windows_of(uint64_t n, int T) { return n ? (n - 1) / (uint64_t)T : 0; }

int mixture_init(Mixture *M, const MixSource *s, int k, int B, int T, int shuffle, int doc_mask, uint64_t seed,
                 const char *flag, Err *e) {
    memset(M, 0, sizeof *M);
    if (k < 1 || k > MIX_MAX_SOURCES) return err_set(e, "%s: %d sources (1 to %d)", flag, k, MIX_MAX_SOURCES);
    const Shard *s0 = NULL;
    double total = 0;
    for (int i = 0; i < k; i++) {
        if (k > 1 || s[i].name) {
            if (mixture_check_name(s[i].name, flag, e)) return -1;
            for (int j = 0; j < i; j++)
                if (strcmp(s[j].name, s[i].name) == 0)
                    return err_set(e, "%s: source name '%s' is given twice", flag, s[i].name);
        }
        char wt[32];
        snprintf(wt, sizeof wt, "%g", s[i].weight);
        if (!isfinite(s[i].weight) || !(s[i].weight > 0))
            return err_set(e, "%s %s: weight %s must be positive and finite", flag, s[i].name ? s[i].name : "", wt);
        if (s[i].nshards < 1) return err_set(e, "%s %s: no shard given", flag, s[i].name ? s[i].name : "");
        uint64_t tokens = 0, windows = 0;
        for (int j = 0; j < s[i].nshards; j++) {
            const Shard *sh = s[i].shards[j];
            if (!s0) s0 = sh;
            if (sh->vocab != s0->vocab || sh->tokenizer_id != s0->tokenizer_id || sh->eot != s0->eot)
                return err_set(e, "%s: made by another tokenizer (vocab %d, id %016" PRIx64 ", eot %d) than %.100s "
                               "(vocab %d, id %016" PRIx64 ", eot %d): one dataset needs one tokenizer", sh->path,
                               sh->vocab, sh->tokenizer_id, sh->eot, s0->path, s0->vocab, s0->tokenizer_id, s0->eot);
            tokens += sh->n_tokens;
            windows += windows_of(sh->n_tokens, T);
        }
        if (k > 1 && tokens == 0)
            return err_set(e, "%s %s: its shards hold no tokens", flag, s[i].name);
        if (k > 1 && windows == 0)
            return err_set(e, "%s %s: %" PRIu64 " tokens hold no window of T+1 = %d tokens inside one shard",
                           flag, s[i].name, tokens, T + 1);
        M->tokens[i] = tokens;
        M->weight[i] = s[i].weight;
        total += s[i].weight;
        snprintf(M->name[i], MIX_NAME_MAX, "%s", s[i].name ? s[i].name : "");
    }
    M->K = k;
    M->B = B;
    M->T = T;
    M->seed = seed;
    double acc = 0;
    for (int i = 0; i < k; i++) {
        acc += M->weight[i];
        M->cum[i] = acc / total;
    }
    M->cum[k - 1] = 1.0;
    for (int i = 0; i < k; i++) {
        int rows = k == 1 ? B : 1;
        uint64_t sd = k == 1 ? seed : source_seed(seed, i);
        if (loader_init(&M->src[i], s[i].shards, s[i].nshards, rows, T, 0, 1, shuffle, doc_mask, sd, e)) {
            mixture_free(M);
            return -1;
        }
    }
    return 0;
}

void mixture_next(Mixture *M, int32_t *tokens, int32_t *targets, int32_t *pos, int *src) {
    int B = M->B, T = M->T;
    if (M->K == 1) {
        loader_next(&M->src[0], tokens, targets, pos);
        if (src) memset(src, 0, (size_t)B * sizeof *src);
        return;
    }
    for (int b = 0; b < B; b++, M->row++) {
        uint64_t blk = M->row / MIX_BLOCK;
        if (!M->perm_valid || M->perm_block != blk) {
            loader_permute(M->perm, MIX_BLOCK, mix_key(M->seed), blk);
            M->perm_block = blk;
            M->perm_valid = 1;
        }
        int k = pick(M->cum, M->K, row_uniform(M->perm, M->seed, M->row));
        size_t o = (size_t)b * T;
        loader_next(&M->src[k], tokens + o, targets + o, pos ? pos + o : NULL);
        if (src) src[b] = k;
    }
}

int mixture_cursor_words(const Mixture *M) { return MIX_CURSOR_WORDS(M->K); }

void mixture_tell(const Mixture *M, uint64_t *cur) {
    if (M->K == 1) {
        cur[0] = M->src[0].epoch;
        cur[1] = M->src[0].pos;
        return;
    }
    cur[0] = M->row;
    for (int k = 0; k < M->K; k++) {
        cur[1 + 2 * k] = M->src[k].epoch;
        cur[2 + 2 * k] = M->src[k].pos;
    }
}

int mixture_seek(Mixture *M, const uint64_t *cur, Err *e) {
    if (M->K == 1) return loader_seek(&M->src[0], cur[0], cur[1], e);
    uint64_t sum = 0;
    for (int k = 0; k < M->K; k++) {
        uint64_t W = loader_windows(&M->src[k]), ep = cur[1 + 2 * k], p = cur[2 + 2 * k];
        if (p > W || ep > UINT64_MAX / W)
            return err_set(e, "mixture: source %s: cursor (epoch %" PRIu64 ", window %" PRIu64 ") is outside its %"
                           PRIu64 " windows", M->name[k], ep, p, W);
        uint64_t rows = ep * W + p;
        if (rows < p || sum + rows < sum)
            return err_set(e, "mixture: source %s: cursor (epoch %" PRIu64 ", window %" PRIu64 ") is out of range",
                           M->name[k], ep, p);
        sum += rows;
    }
    if (sum != cur[0])
        return err_set(e, "mixture: the cursor's sources hold %" PRIu64 " rows, its counter %" PRIu64 ": a cursor of "
                       "another mixture (sources, weights or shards changed)", sum, cur[0]);
    for (int k = 0; k < M->K; k++)
        if (loader_seek(&M->src[k], cur[1 + 2 * k], cur[2 + 2 * k], e)) return -1;
    M->row = cur[0];
    return 0;
}

uint64_t mixture_taken(const Mixture *M, int k) {
    const Loader *L = &M->src[k];
    if (M->K == 1) return L->epoch * (loader_windows(L) / (uint64_t)M->B * (uint64_t)M->B) + L->pos;
    return L->epoch * loader_windows(L) + L->pos;
}

uint64_t mixture_id(const Mixture *M) {
    if (M->K == 1) return 0;
    uint64_t h = HASH_FNV_OFFSET;
    for (int k = 0; k < M->K; k++) {
        uint64_t W = loader_windows(&M->src[k]);
        h = hash_fnv1a(h, M->name[k], strlen(M->name[k]) + 1);
        h = hash_fnv1a(h, &M->weight[k], sizeof M->weight[k]);
        h = hash_fnv1a(h, &W, sizeof W);
    }
    return h ? h : 1;
}

void mixture_free(Mixture *M) {
    for (int k = 0; k < MIX_MAX_SOURCES; k++) loader_free(&M->src[k]);
    memset(M, 0, sizeof *M);
}
