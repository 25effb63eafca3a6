/*
 * run.h: pieces shared by the training and inference commands: validation
 * loss over a loader, streaming generation through the sampling engine,
 * the SGEMM peak for MFU, and a clock formatter for progress lines.
 */
#ifndef LLAMAC_TRAIN_RUN_H
#define LLAMAC_TRAIN_RUN_H

#include <stdio.h>

#include "../../data/tok.h"
#include "../../data/loader.h"
#include "../../model/engine.h"
#include "../../model/llama.h"
#include "../../model/sample.h"

/* Mean loss per target token over nbatches batches of the loader (B, T must
 * match m's). Returns the mean; *ntok gets the number of target tokens. */
double run_eval_loss(Llama *m, Loader *L, long nbatches, long *ntok);

/* Streaming a sample's text as the engine makes it: EngineCallbacks with
 * ud a RunStream. run_stream_token writes each new token's bytes to out
 * (flushed; out may be NULL) unless it is one of the stop ids, and
 * returns 0; run_stream_done keeps the finished sample's tokens, finish
 * reason and time to the first token. Free ids with free(). */
typedef struct RunStream {
    const Tokenizer *tok;
    const int *stop;  /* (nstop) ids that end the text, not part of it */
    int nstop;
    FILE *out;
    int32_t *ids;     /* the last finished sample's tokens (n; cap) */
    int n, cap, finish;
    double t_first;
} RunStream;
int run_stream_token(void *ud, EngineSeq *s);
void run_stream_done(void *ud, EngineSeq *s);

/* The ids that end a reply: tok's end-of-text and end-of-turn ids and
 * extra (-1: none), each once, into ids[0..3). Returns their number. */
int run_stop_ids(const Tokenizer *tok, int extra, int ids[3]);

/* Generate up to max_tokens after the prompt ids with a sampling engine
 * built over m with eo (one sequence: eo->max_seqs 1; eo->ctx > np, at most
 * the model's context; eo->drop_source when m is not used after), one
 * request of one sample seeded `seed`, writing the decoded bytes to out as
 * they come (if out is not NULL). Stops at the end-of-text or end-of-turn
 * id (not written) or when the context is full. Returns the number of
 * generated tokens (the stop id included), or -1 with e (the engine could
 * not be built); *prefill_s gets the time to the first token, *gen_s the
 * time after it. */
int run_generate(Llama *m, const Tokenizer *tok, const SampleParams *sp, uint64_t seed, const int32_t *prompt, int np,
                 int max_tokens, const EngineOpts *eo, FILE *out, double *prefill_s, double *gen_s, Err *e);

/* SGEMM GFLOP/s of this machine (n x n x n, best of reps). */
double run_sgemm_peak(int n, int reps);

/* "1:02:03" or "2:03" */
const char *run_clock(double seconds, char *buf, size_t cap);

#endif
