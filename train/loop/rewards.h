/*
 * rewards.h: the rewards of RL rollouts (DESIGN.md, "Rewards and online
 * RL"): a weighted sum of sources, each a number per completion:
 *
 *   reward models   --reward-model SPEC (scorer.h: llamac or Hugging Face
 *                   classification models, weights in the spec); the prompt
 *                   line's "messages"/"prompt" and the completion are
 *                   rendered with each model's own tokenizer and template,
 *                   so the policy's and a reward model's tokenizers may
 *                   differ
 *   answer          --reward-answer FIELD: 1 if the completion's final
 *                   answer equals the prompt line's FIELD (a string, a
 *                   number, or a list of accepted answers), else 0
 *   regex           --reward-regex PATTERN: 1 if the POSIX extended regular
 *                   expression matches somewhere in the completion, else 0
 *   length          --reward-length MIN:MAX: 1 if the completion has
 *                   MIN..MAX tokens, else 0
 *   cmd             --reward-cmd "PROGRAM ARGS": a long-running subprocess
 *                   (sh -c) that reads one JSON object per completion on
 *                   its stdin and answers one number per line on its
 *                   stdout, in order
 *
 * Source names (for --reward-weights "name=w,..." and the metrics
 * rewards/<name>/mean): "answer", "regex", "length", "cmd", and each reward
 * model's path. Weights default to 1 (a reward model's from its spec).
 *
 * The final answer (answer): the text inside the last \boxed{...}, else
 * after the last "answer:" / "Answer:" / "ANSWER:" (to the end of that
 * line, or the next non-empty line when that is blank), else the
 * completion's last non-empty line; then trimmed of white space,
 * surrounding quotes, '*', '`' and '$', and trailing '.', '!', ','. It
 * equals an accepted answer when both read whole as numbers (strtod) and
 * |a - b| <= 1e-6 * max(1, |b|), else when they are equal ignoring ASCII
 * case.
 *
 * The reward program's input, one line per completion: the prompt line's
 * object with "completion" (the text) and "finish" ("stop" or "length")
 * added, and "prompt" set to the prompt's text when the line has no
 * "prompt" field (a "messages" or "prompt_ids" line). Its answers are read
 * as decimal numbers (strtod, whole line, finite), each flushed as it is
 * written. Failures are one error line each: the program exited (with its
 * status) or closed its output early, did not answer within
 * --reward-timeout seconds, answered a line that is not a number, or
 * answered more lines than it was sent (lines already there after a call's
 * answers or within 30 ms of them, or found at the start of the next call).
 * After a failure the program is stopped and every later call returns the
 * same line. Its stderr is llamac's.
 *
 * Then, in order: --missing-eos-penalty P subtracts P from the total of
 * each completion that did not end on a stop (TRL's missing_eos_penalty);
 * --reward-clip C clips the total to [-C, C]; --reward-norm 1 normalises
 * the totals of each call to mean 0, std 1 (Bessel, + 1e-8).
 */
#ifndef LLAMAC_TRAIN_REWARDS_H
#define LLAMAC_TRAIN_REWARDS_H

#include <jansson.h>
#include <stddef.h>

#include "../../model/base.h"
#include "scorer.h"

typedef struct RewardOpts {
    ScorerOpts scorer;        /* .spec NULL: no reward model */
    const char *answer;       /* --reward-answer FIELD, or NULL */
    const char *regex;        /* --reward-regex, or NULL */
    const char *length;       /* --reward-length "MIN:MAX", or NULL */
    const char *cmd;          /* --reward-cmd, or NULL */
    const char *weights;      /* --reward-weights "name=w,...", or NULL */
    double timeout;           /* --reward-timeout seconds for each answer (default 60) */
    double missing_eos_penalty; /* 0: none */
    double clip;              /* 0: none */
    int norm;                 /* 1: normalise each call's totals */
} RewardOpts;

/* One completion to reward (borrowed). */
typedef struct RewardItem {
    json_t *line;             /* the prompt line's object */
    const char *prompt_text;  /* the prompt as text (decoded, template applied) */
    const char *completion;   /* its text, NUL-terminated */
    long ntokens;             /* completion tokens */
    int stopped;              /* ended on a stop id or string (else: length) */
} RewardItem;

typedef struct Rewards Rewards;

/* Open every source of o: -1 with one line ("--reward-regex: ...: <regerror>",
 * "--reward-length: expected MIN:MAX ...", "--reward-weights: no source
 * named 'x' (the sources: answer, cmd)", the scorer's, "--reward-cmd: ...
 * could not start"), also when o names no source at all ("no reward: give
 * --reward-model, --reward-answer, --reward-regex, --reward-length or
 * --reward-cmd"). */
int rewards_open(Rewards **r, const RewardOpts *o, Err *e);

/* Check each prompt line has what the sources need before any sampling:
 * -1 with "<where>: no \"FIELD\" field (--reward-answer FIELD)" or a field
 * of another type. where(i) names prompt i's line. */
int rewards_check_line(const Rewards *r, json_t *line, const char *where, Err *e);

/* Sources, and source k's name and weight: the reward models first, in
 * the spec's order, then answer, regex, length, cmd (those given). */
int rewards_count(const Rewards *r);
const char *rewards_name(const Rewards *r, int k);
double rewards_weight(const Rewards *r, int k);

/* Rewards of items[0..n): per (n, count, may be NULL) each source's value,
 * total[i] the weighted sum after the penalty, clip and normalisation
 * above. -1 with one line on a failure (the reward program's, a scorer
 * error naming the item). n = 0 does nothing. Not thread-safe: one call at
 * a time per Rewards (SIGPIPE is blocked in the calling thread during the
 * call). */
int rewards_score(Rewards *r, const RewardItem *items, size_t n, double *per, double *total, Err *e);

/* The final answer of text (see above) into out (at most n - 1 bytes and
 * NUL); and whether it equals an accepted answer v (a JSON string, number,
 * or list of them). */
void rewards_final_answer(const char *text, char *out, size_t n);
int rewards_answer_match(const char *answer, json_t *v);

void rewards_close(Rewards *r);

#endif
