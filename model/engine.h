/*
 * engine.h: the sampling engine. Many sequences decoded at once, each with
 * its own KV cache in pages of one pool sized by a token budget; new
 * prompts prefilled in the same forward as the decode rows of running
 * sequences (continuous batching: a finished sequence frees its slot and
 * pages, a queued prompt takes them); K samples of a prompt share the
 * prompt's pages (prefilled once). Every op of the forward computes a row
 * the same way whatever the batch (ops.h, "the sampling engine"), and each
 * sample draws from its own counter-based stream (sample.h), so a sample's
 * tokens depend on its prompt, seed, sample index and the model only.
 *
 * generate, chat, sample, rejection sampling and RL rollouts all decode
 * through this; none has a decode loop of its own.
 */
#ifndef LLAMAC_MODEL_ENGINE_H
#define LLAMAC_MODEL_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "llama.h"
#include "sample.h"

#define ENGINE_PAGE 16 /* tokens per KV page */

typedef struct EngineOpts {
    int max_seqs;   /* sequences decoded at once (slots); 0: 64 */
    int max_rows;   /* token rows of one forward (decode rows + prefill
                     * chunks); 0: 512 */
    int ctx;        /* longest sequence, prompt + completion; 0: the model's */
    long kv_tokens; /* KV pool in tokens (0: max_seqs * ctx) */
    int drop_source; /* after packing the linear weights for the engine,
                      * give back the pages of m's copies (CPU backend; not
                      * the embedding, norms or a tied head): m then only
                      * decodes through this engine. The sample command's
                      * memory. */
} EngineOpts;

typedef enum {
    FINISH_NONE = 0, /* still running */
    FINISH_STOP,     /* a stop id (EOS, end of turn) or, via on_token, a stop string */
    FINISH_LENGTH,   /* max_new tokens */
    FINISH_CTX,      /* the context is full */
} FinishReason;
extern const char *const finish_names[]; /* "", "stop", "length", "context" */

/* One request: a prompt and n samples of it. */
typedef struct EngineRequest {
    const int *prompt; /* copied by engine_add */
    int n_prompt;
    int n;             /* samples (>= 1) */
    int max_new;       /* tokens per sample at most */
    SampleParams sp;
    uint64_t seed;     /* sample j draws from sample_seed(seed, j) */
    int first_sample;  /* index of the first sample (a resumed or split
                        * request: samples first_sample .. + n - 1) */
    const int *stop_ids; /* ids that finish a sample (kept as its last token); copied */
    int n_stop_ids;
    int logprobs;      /* record each token's log-probabilities (SampleOut) */
    int session;       /* > 0: n must be 1 and the sample's KV cache is kept
                        * when it finishes; the next request with the same
                        * session continues it: its prompt is appended after
                        * the cached tokens (every token of the previous turns
                        * except the last sampled one, which the caller puts
                        * first in the new prompt) */
    void *user;
} EngineRequest;

/* A sample as the callbacks see it. */
typedef struct EngineSeq {
    int req;          /* request number (engine_add's return) */
    int sample;       /* first_sample + j */
    void *user;       /* the request's */
    const int *prompt;
    int n_prompt;
    int *tokens;      /* generated so far, n of them */
    float *logprob;   /* (n) when the request asked for logprobs, else NULL */
    float *logprob_t1;
    int n;
    int finish;       /* FinishReason, set before on_done */
    const float *logits; /* on_token only: the V logits the last token was
                          * drawn from (host memory, valid during the call) */
    double t_first;   /* seconds from engine_add to the first token */
} EngineSeq;

typedef struct EngineCallbacks {
    /* after each new token s->tokens[s->n - 1]; return 1 to finish the
     * sample now with FINISH_STOP (a stop string). NULL: none. */
    int (*on_token)(void *ud, EngineSeq *s);
    /* a sample is finished; s is valid during the call only */
    void (*on_done)(void *ud, EngineSeq *s);
    void *ud;
} EngineCallbacks;

typedef struct Engine Engine;

/* Build an engine over m's weights: the linear weights (and adapters) are
 * packed once for matmul_rows; the embedding and norms are read from m.
 * Allocates the packed weights, the KV pool, the activations for max_rows
 * rows and the logits of max_seqs rows on m's backend. Enabling or
 * disabling m's adapters takes effect at the next step. */
int engine_init(Engine **out, Llama *m, const EngineOpts *o, Err *e);

/* Pack m's weights again after they changed (an optimizer step). */
void engine_sync_weights(Engine *g);
void engine_free(Engine *g);

/* Queue a request; returns its number (0, 1, ...) or -1 with e (a prompt
 * that does not fit the context, n < 1, a sample larger than the pool). */
int engine_add(Engine *g, const EngineRequest *r, Err *e);

/* One forward over the scheduled rows, sampling, callbacks. Returns the
 * number of samples still running or queued (0: idle). */
int engine_step(Engine *g, const EngineCallbacks *cb);

/* Run until idle. */
void engine_run(Engine *g, const EngineCallbacks *cb);

/* Drop a session's cache (and its slot). */
void engine_end_session(Engine *g, int session);

/* Tokens a session has cached (0: none). */
int engine_session_len(const Engine *g, int session);

/* Bytes of KV cache per cached token: 2 * layers * KV heads * head size *
 * the backend's activation size (float32 on the CPU). */
size_t engine_kv_bytes_per_token(const LlamaConfig *c, const Ops *ops);

/* Bytes an engine with these options allocates (no allocation): the
 * packed linear weights (and adapters, lc may be NULL), the KV pool, and
 * the activations and logits of one step. The options as engine_init
 * completes them (0: defaults). `llamac inspect` prints it. */
typedef struct EngineMem {
    size_t weights, kv, acts;
    long kv_tokens;
    int max_seqs, max_rows, ctx;
} EngineMem;
EngineMem engine_memory(const LlamaConfig *c, const LoraConfig *lc, const Ops *ops, const EngineOpts *o);

/* Counters since engine_init. */
typedef struct EngineStats {
    long steps, rows, prefill_tokens, decode_tokens, samples_done;
    double t_forward, t_sample; /* seconds */
    long kv_pages, kv_pages_peak, kv_tokens_cap;
    size_t kv_bytes, weight_bytes; /* the KV pool and the packed weights */
} EngineStats;
EngineStats engine_stats(const Engine *g);

#endif
