/*
 * sample.h: next-token sampling from logits, per sequence: repetition
 * penalty, temperature, top-k, top-p (nucleus, Holtzman et al. 2019),
 * min-p, and the log-probability of the drawn token. Temperature 0 is
 * greedy. The random number is given by the caller: a sequence draws
 * sample_uniform(seed, step), a pure function of its own seed and its
 * token's index, so its tokens never depend on what else is in the batch,
 * on the order sequences are sampled in, or on a resume.
 */
#ifndef LLAMAC_MODEL_SAMPLE_H
#define LLAMAC_MODEL_SAMPLE_H

#include <stdint.h>

#include "base.h"

typedef struct SampleParams {
    float temperature; /* 0: greedy (argmax, ties to the lowest id) */
    int top_k;         /* keep the k most likely and any tied with the k-th,
                        * as torch.topk's threshold does (0: off) */
    float top_p;       /* keep the smallest set with this much of the mass
                        * top-k kept, ties by id (1: off) */
    float min_p;       /* drop tokens below min_p * p(most likely) (0: off) */
    float rep_penalty; /* CTRL / transformers: a seen token's logit l becomes
                        * l / r if l > 0, else l * r (1: off) */
} SampleParams;

/* temperature 1, nothing else: plain sampling from the model */
#define SAMPLE_PARAMS_DEFAULT ((SampleParams){1.0f, 0, 1.0f, 0.0f, 1.0f})

/* Checks each field's range; -1 with e naming the flag (--temperature ...). */
int sample_params_check(const SampleParams *p, Err *e);

/* Scratch of one sampling call, V entries each (one per thread). */
typedef struct SampleWork {
    int vocab;
    float *prob; /* unnormalised probabilities, e^((l - max) / T) */
    int *idx;
    float *adj; /* logits after the repetition penalty, then scratch */
    uint8_t *seen;
} SampleWork;
void sample_work_init(SampleWork *w, int vocab);
void sample_work_free(SampleWork *w);

/* What one draw returns. */
typedef struct SampleOut {
    int token;
    /* log softmax(logits / T)[token] over the whole vocabulary, with T the
     * temperature (1 when greedy), before the repetition penalty and the
     * top-k/top-p/min-p truncation: the probability TRL's GRPO, RLOO and
     * PPO compute in their teacher-forced forward ("old" log-probs) */
    float logprob;
    float logprob_t1; /* the same at temperature 1 */
} SampleOut;

/* The uniform in [0, 1) for token `step` of the stream `seed` (53 bits,
 * counter-based: no state). */
double sample_uniform(uint64_t seed, uint64_t step);

/* The seed of sample j of a request seeded with `seed`: its own stream. */
uint64_t sample_seed(uint64_t seed, uint64_t j);

/* Draw a token from host logits (V = w->vocab; not modified; finite, or
 * -inf for a token never to draw) with the uniform u in [0, 1): the
 * inverse CDF over the kept tokens in id order. seen (n_seen ids in [0, V),
 * may repeat) are the tokens the repetition penalty applies to (the prompt
 * and the completion so far). A pure function of its arguments. */
SampleOut sample_token(const SampleParams *p, const float *logits, const int *seen, int n_seen, double u,
                       SampleWork *w);

/* The tokens sample_token can draw with these arguments (those the
 * truncation keeps, probability > 0; greedy: the argmax), ascending, into
 * ids (room for V). Returns their count. The draw's inverse CDF walks them
 * in this order. */
int sample_kept(const SampleParams *p, const float *logits, const int *seen, int n_seen, int *ids,
                SampleWork *w);

/* ---- a sampler with its own stream, for one-sequence callers */
typedef struct Sampler {
    SampleParams p;
    uint64_t seed; /* the stream: sample_seed(seed given, 0), that of sample 0
                    * of an engine request with the same seed */
    uint64_t step; /* draws so far: the next one uses sample_uniform(seed, step) */
    SampleWork w;
} Sampler;

/* Validate (temperature >= 0, top_k >= 0, 0 < top_p <= 1; no min-p, no
 * repetition penalty) and allocate scratch. Returns 0 or -1 naming the
 * flag; sample_free takes s either way. */
int sample_init(Sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed, Err *e);
void sample_free(Sampler *s);

/* Draw a token id from host logits (V); logits are not modified. */
int sample_next(Sampler *s, const float *logits);

#endif
