/*
 * sample.h: next-token sampling from logits: temperature, top-k, top-p
 * (nucleus, Holtzman et al. 2019), seeded. Temperature 0 is greedy.
 */
#ifndef LLAMAC_MODEL_SAMPLE_H
#define LLAMAC_MODEL_SAMPLE_H

#include "base.h"

typedef struct Sampler {
    float temperature; /* 0: argmax */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    Rng rng;
    int vocab;
    float *prob;       /* (V) scratch */
    int *idx;          /* (V) scratch */
} Sampler;

/* Validate (temperature >= 0, top_k >= 0, 0 < top_p <= 1) and allocate
 * scratch. Returns 0 or -1 naming the flag. */
int sample_init(Sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed, Err *e);
void sample_free(Sampler *s);

/* Draw a token id from host logits (V); logits are not modified. */
int sample_next(Sampler *s, const float *logits);

#endif
