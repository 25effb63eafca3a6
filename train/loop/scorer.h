/*
 * scorer.h: rewards of texts from one or several reward models, summed with
 * weights: what `llamac score`, rejection sampling (`llamac rs`) and the
 * RL rollouts call (DESIGN.md, "Rewards and online RL").
 *
 * A reward model is a classifier with one label (LlamaConfig.num_labels ==
 * 1, model/llama.h's llama_forward_score): an llamac checkpoint, a Hugging
 * Face LlamaForSequenceClassification directory, or either of those as a
 * base with a PEFT adapter that saved the score head (modules_to_save
 * ["score"]), written "BASE+ADAPTER_DIR". Each model renders the texts with
 * its own tokenizer and template (the items are text, never token ids:
 * a policy with another tokenizer is re-tokenised, where TRL refuses), as
 * `llamac reward` rendered its training pairs (sft_render_prompt: BOS and
 * EOS for strings, the chat template for messages), and its reward of an
 * item is the score head at the item's last token whose id is not the
 * model's pad_id (transformers' rule; a model without a pad_id pads with
 * its tokenizer's EOS, as TRL sets it, so a trailing EOS is padding; an
 * item of pad tokens only reads position 0). Items are scored in batches
 * of at most B rows of T tokens, several items packed per row (first fit
 * decreasing) with the document mask, a batch run at the rows and the
 * longest row it holds: each item's reward is that of the item alone, in
 * any batch, on the CPU to float32 rounding (the batch invariance test).
 *
 * BASE+ADAPTER_DIR: the base (any source) is loaded and the PEFT adapter
 * merged into it (lora_merge); a causal-LM base becomes a one-label
 * classifier when the adapter carries the score head (LoraConfig.head, read
 * by peft.c from modules_to_save), else it is not a reward model. The
 * tokenizer is the base's, else the adapter directory's.
 *
 * Spec: "PATH[:WEIGHT],PATH[:WEIGHT],..." (weight default 1.0). Lifetimes:
 * scorer_open, scorer_score (any number of times), scorer_close.
 */
#ifndef LLAMAC_TRAIN_SCORER_H
#define LLAMAC_TRAIN_SCORER_H

#include <jansson.h>
#include <stddef.h>

#include "../../model/base.h"

typedef struct ScorerOpts {
    const char *spec;      /* --reward-model (see above) */
    const char *tokenizer; /* --reward-tokenizer: for every model, NULL: each model's own */
    const char *tpl_name;  /* --reward-template: NULL: each tokenizer's own (none for strings) */
    const char *bos;       /* "auto" (NULL), "0", "1": as ftdata_bos */
    const char *device;    /* "cpu" (NULL) or "cuda" */
    long B, T;             /* rows of a batch and tokens per row (0: 8 and the models' context, at most 1024; items packed into rows of their longest, at least 256) */
} ScorerOpts;

/* One text to score: prompt and completion as a pair's side is given
 * (strings, or message lists: the prompt the turns before the reply, the
 * completion the assistant's reply as a string, a message or a list);
 * prompt NULL: the completion is the whole text (a conversation or a
 * string). Borrowed. */
typedef struct ScoreItem {
    json_t *prompt, *completion;
    const char *where; /* the item in messages ("<file>:<line>"), NULL: "item <index>" */
} ScoreItem;

typedef struct Scorer Scorer;

/* One model of a spec, as scorer_spec_parse reads it. */
typedef struct ScorerSpec {
    char name[4096];    /* the word without its weight: PATH or BASE+ADAPTER_DIR */
    char base[4096];    /* PATH, or BASE */
    char adapter[4096]; /* ADAPTER_DIR, "" for none */
    double weight;      /* finite; 1.0 when not written */
} ScorerSpec;

/* Split spec into its models (*out[0..*n), caller frees *out with free).
 * A word is PATH or PATH:WEIGHT (the weight after the last ':', a number
 * read whole by strtod); PATH is BASE+ADAPTER_DIR when it is not itself an
 * existing file and has a '+' (split at the last one). -1 with one line
 * "--reward-model: ..." for an empty spec or word, a word without a path, a
 * weight that is not a finite number, a model named twice. Touches only
 * the file system (the '+' rule). */
int scorer_spec_parse(const char *spec, ScorerSpec **out, int *n, Err *e);

/* Open every model of o->spec: -1 with one line naming the model ("<path>:
 * not a reward model (num_labels 2, want 1)", "<path>: no tokenizer of its
 * own: give --reward-tokenizer", a spec without a path, a weight that is
 * not a number, ...). */
int scorer_open(Scorer **s, const ScorerOpts *o, Err *e);

/* Number of models, and model k's path and weight. */
int scorer_count(const Scorer *s);
const char *scorer_name(const Scorer *s, int k);
double scorer_weight(const Scorer *s, int k);

/* Rewards of items[0..n): per[i * count + k] model k's reward of item i
 * (per may be NULL), total[i] = sum_k weight_k * per[i * count + k]. An
 * item that does not fit in T tokens (or renders badly) is an error naming
 * its index: "item 12: 4100 tokens, more than the 1024 a row holds". */
int scorer_score(Scorer *s, const ScoreItem *items, size_t n, double *per, double *total, Err *e);

void scorer_close(Scorer *s);

#endif
