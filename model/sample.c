/*
 * sample.c: softmax with temperature in double, then top-k and top-p
 * truncation over the sorted probabilities, then one uniform draw. Ties in
 * the sort are broken by token id, so a seed fixes the output.
 */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int sample_init(Sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed, Err *e) {
    memset(s, 0, sizeof *s);
    if (!(temperature >= 0)) return err_set(e, "--temperature: must be >= 0, got %g", temperature);
    if (top_k < 0) return err_set(e, "--top-k: must be >= 0, got %d", top_k);
    if (!(top_p > 0 && top_p <= 1)) return err_set(e, "--top-p: must be in (0, 1], got %g", top_p);
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->vocab = vocab;
    rng_seed(&s->rng, seed);
    s->prob = xmalloc((size_t)vocab * sizeof(float));
    s->idx = xmalloc((size_t)vocab * sizeof(int));
    return 0;
}

void sample_free(Sampler *s) {
    free(s->prob);
    free(s->idx);
    memset(s, 0, sizeof *s);
}

static const float *sort_prob;
static int by_prob_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_prob[i] != sort_prob[j]) return sort_prob[i] < sort_prob[j] ? 1 : -1;
    return (i > j) - (i < j);
}

int sample_next(Sampler *s, const float *logits) {
    int V = s->vocab, best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->temperature == 0) return best;
    double sum = 0;
    for (int i = 0; i < V; i++) {
        s->prob[i] = (float)exp((double)(logits[i] - logits[best]) / s->temperature);
        sum += s->prob[i];
        s->idx[i] = i;
    }
    int n = V;
    if (s->top_k > 0 || s->top_p < 1) {
        sort_prob = s->prob;
        qsort(s->idx, (size_t)V, sizeof(int), by_prob_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        double cum = 0, keep = 0;
        for (int k = 0; k < n; k++) keep += s->prob[s->idx[k]];
        if (s->top_p < 1) {
            for (int k = 0; k < n; k++) {
                cum += s->prob[s->idx[k]];
                if (cum >= s->top_p * keep) { n = k + 1; break; }
            }
        }
        sum = 0;
        for (int k = 0; k < n; k++) sum += s->prob[s->idx[k]];
    }
    double u = rng_uniform(&s->rng) * sum, acc = 0;
    for (int k = 0; k < n; k++) {
        acc += s->prob[s->idx[k]];
        if (u < acc) return s->idx[k];
    }
    return s->idx[n - 1];
}
