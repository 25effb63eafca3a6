/*
 * rollout.h: prompts through the sampling engine, the part that the
 * commands sampling prompt files share (`llamac sample`, `llamac rs`; the
 * RL rollouts next; DESIGN.md, "Rewards and online RL"): the policy's
 * tokenizer, chat template and prompts read and checked once, requests
 * queued with the one seeding rule, and each sample's text built as its
 * tokens arrive and cut at stop strings.
 *
 * Seeding: prompt i's request draws from sample_seed(seed, i) and its
 * sample j from sample_seed(that, j) (engine.h), so a sample depends on the
 * model, its prompt, the seed, i and j only, never on the batch it shared.
 */
#ifndef LLAMAC_TRAIN_ROLLOUT_H
#define LLAMAC_TRAIN_ROLLOUT_H

#include <stddef.h>
#include <stdint.h>

#include "../../data/chat.h"
#include "../../data/prompts.h"
#include "../../data/tok.h"
#include "../../model/config.h"
#include "../../model/engine.h"
#include "../proc/cli.h"

/* The sampler's and the engine's flags, declared once for every command
 * that samples prompt files. */
typedef struct RolloutFlags {
    long max_tokens, top_k, max_seqs, max_rows, kv_tokens, ctx, threads;
    double temperature, top_p, min_p;
} RolloutFlags;

/* Defaults: 256 tokens a sample, no top-k, top-p or min-p, 64 sequences of
 * 512 rows a step, the pool and context derived; temperature as given (the
 * command's own: 0.8 for sample, 1.2 for rs). */
void rollout_flags_default(RolloutFlags *f, double temperature);

/* The flag rows (pointing into f): sampler[] --max-tokens, --temperature,
 * --top-p, --top-k, --min-p; engine[] --max-seqs, --max-rows, --kv-tokens,
 * --ctx, --threads. */
#define ROLLOUT_NSAMPLER 5
#define ROLLOUT_NENGINE 5
void rollout_flags(RolloutFlags *f, CliFlag sampler[ROLLOUT_NSAMPLER], CliFlag engine[ROLLOUT_NENGINE]);

/* The sampler's parameters from f (rep: CTRL's repetition penalty, 1 off),
 * checked: -1 with sample_params_check's message. */
int rollout_params(const RolloutFlags *f, double rep, SampleParams *sp, Err *e);

/* What the inputs are (the flags of the command). */
typedef struct RolloutOpts {
    const char *model;    /* the policy: a checkpoint, HF directory or GGUF file */
    const char *tokpath;  /* NULL: the tokenizer the model carries */
    const char *tname;    /* chat template name, "none", or NULL: the tokenizer's own */
    const char *prompts;  /* JSONL (data/prompts.h) */
    int special;          /* "prompt" text: special-token names become their ids */
    long ctx;             /* longest sequence (0: the longest prompt + max_tokens, at most the model's) */
    long max_tokens;      /* tokens per sample at most */
    int ignore_eos;       /* no stop ids */
} RolloutOpts;

/* The inputs, read. */
typedef struct Rollout {
    LlamaConfig c;        /* the policy's config */
    Tokenizer tok;
    char tokpath[4200];   /* the tokenizer's path (the model's own, or RolloutOpts.tokpath) */
    ChatTemplate tpl;     /* with have_tpl: the template of message prompts */
    int have_tpl;
    PromptSet ps;
    int stop_ids[3], n_stop_ids; /* end of text, end of turn (ChatML's <|im_end|> under its template) */
    long ctx;             /* the context the engine needs (RolloutOpts.ctx, or derived) */
} Rollout;

/* Read everything a bad input can fail on, before any weights load: the
 * model's config, its tokenizer (checked against the model), the template
 * (the named one, else the tokenizer's own), the prompts (each shorter than
 * the context), the context and the stop ids. -1 with one line naming the
 * file (and line): --ctx past the model's, prompts_load's messages, ... On
 * -1 what was read is freed; otherwise free with rollout_free. */
int rollout_open(Rollout *r, const RolloutOpts *o, Err *e);
void rollout_free(Rollout *r);

/* Queue prompt i of r->ps as one request of n samples (first index 0) of
 * at most max_new tokens, seeded sample_seed(seed, i), ending at r's stop
 * ids, recording log-probabilities, user passed to the callbacks. -1 with
 * "<prompts>:<line>: prompt <i>: <engine_add's message>". */
int rollout_add(Engine *g, const Rollout *r, const char *prompts, size_t i, int n, int max_new, const SampleParams *sp,
                uint64_t seed, void *user, Err *e);

/* One sample's text while it runs. A zeroed struct is empty. */
typedef struct RolloutText {
    char *text;           /* len bytes (cap; not NUL-terminated; may be NULL) */
    size_t len, cap, checked; /* text[0..checked) searched for stop strings */
    int stopped;          /* a stop string cut it */
} RolloutText;

/* EngineCallbacks.on_token's work for sample text t: the new token id (a
 * stop id adds nothing: the engine ends the sample, and EOS is not text),
 * its bytes appended, then stops[0..nstops) and own[0..nown) (the prompt's
 * own) looked for over the bytes that could end in them; the text is cut
 * before the earliest match. Returns 1 when the sample must finish (a stop
 * string cut it, now or before), else 0. */
int rollout_text_token(RolloutText *t, const Rollout *r, int id, char *const *stops, size_t nstops, char *const *own,
                       size_t nown);
void rollout_text_free(RolloutText *t);

#endif
