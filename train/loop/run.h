/*
 * run.h: pieces shared by the training and inference commands: validation
 * loss over a loader, streaming generation, the SGEMM peak for MFU, and a
 * clock formatter for progress lines.
 */
#ifndef LLAMAC_TRAIN_RUN_H
#define LLAMAC_TRAIN_RUN_H

#include <stdio.h>

#include "../../data/tok.h"
#include "../../data/loader.h"
#include "../../model/llama.h"
#include "../../model/sample.h"

/* Mean loss per target token over nbatches batches of the loader (B, T must
 * match m's). Returns the mean; *ntok gets the number of target tokens. */
double run_eval_loss(Llama *m, Loader *L, long nbatches, long *ntok);

/* Generate up to max_tokens after the prompt ids with m (B = 1, KV cache),
 * writing decoded bytes to out as they come (if out is not NULL). Stops at
 * the end-of-text or end-of-turn id or at m->T. Returns the number of generated tokens;
 * *prefill_s and *gen_s get the time spent on the prompt and on new tokens. */
int run_generate(Llama *m, const Tokenizer *tok, Sampler *s, const int32_t *prompt, int np,
                 int max_tokens, FILE *out, double *prefill_s, double *gen_s);

/* run_generate continuing a KV cache: the prompt's ids go to positions
 * pos0, pos0 + 1, ... (positions before pos0 keep what an earlier call
 * left: a conversation's earlier turns), generation also stops at the id
 * stop (-1: none), the generated ids (a stop id included; room for
 * max_tokens) go to gen when it is not NULL, and *end gets the position
 * after the last token now in the cache (the stop id and a token sampled
 * at the last position are not in it). pos0 + np < m->T. */
int run_generate_at(Llama *m, const Tokenizer *tok, Sampler *s, const int32_t *prompt, int np, int pos0,
                    int stop, int max_tokens, FILE *out, int32_t *gen, int *end, double *prefill_s,
                    double *gen_s);

/* SGEMM GFLOP/s of this machine (n x n x n, best of reps). */
double run_sgemm_peak(int n, int reps);

/* "1:02:03" or "2:03" */
const char *run_clock(double seconds, char *buf, size_t cap);

#endif
