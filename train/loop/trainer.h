/*
 * trainer.h: the one training loop of pretrain, sft and dpo (DESIGN.md,
 * "The training loop").
 *
 * A step draws `accum` micro-batches of (B, T) from the command's data
 * source, normalises the loss by the step's total count of trained tokens
 * (targets != LC_IGNORE), so accumulation gives the gradient of the whole
 * global batch, runs forward and backward on each, clips the global gradient
 * norm, steps AdamW on the warmup + cosine schedule, prints the progress
 * line and writes the JSONL metrics, validates every --val-every steps,
 * checkpoints every --save-every steps, at the end and on SIGINT/SIGTERM
 * (keeping the last --keep), resumes exactly (--resume PATH|auto), and
 * stops on a NaN/Inf loss or gradient norm.
 *
 * A command supplies only what differs: its own flags beside the shared
 * ones (trainer_flags), the model config and where the initial weights come
 * from, and a TrainData per split (where batches come from, the data
 * cursor a checkpoint saves). Lifetimes: trainer_open, trainer_run,
 * trainer_close.
 */
#ifndef LLAMAC_TRAIN_TRAINER_H
#define LLAMAC_TRAIN_TRAINER_H

#include <stdint.h>
#include <stdio.h>

#include "../../data/tok.h"
#include "../../model/llama.h"
#include "../../optim/adamw.h"
#include "../../optim/sched.h"
#include "../io/source.h"
#include "../proc/cli.h"
#include "../proc/device.h"

/* The flags every training mode shares; trainer_flags declares them. */
typedef struct TrainOpts {
    long B, T, batch_tokens, steps, warmup, val_every, val_batches, seed;
    long log_every, save_every, keep, sample_tokens;
    double lr, min_frac, warmup_frac, wd, clip, beta1, beta2, eps, peak;
    const char *out, *ckpt_dir, *resume, *metrics, *device, *tokpath, *prompt;
    /* LoRA (lora_r > 0; PEFT's names and defaults) and recomputation */
    long lora_r, rslora, recompute;
    double lora_alpha, lora_dropout;
    const char *lora_targets, *lora_layers, *lora_init;
    const char *adapter_out, *merged_out; /* LoRA: the PEFT adapter, the merged model */
    const char *hf_out;    /* also the trained (merged) model as a Hugging Face directory */
    const char *base_quant; /* LoRA: hold the frozen base quantised (source_quant_plan: keep or a type), or NULL */
    long lora_head;        /* LoRA on a classifier: train its score head whole (PEFT's modules_to_save ["score"]) */
    long zero;             /* 1: ZeRO-1, AdamW moments sharded over the data-parallel ranks */
    /* pipeline parallelism (pipeline.h) */
    long pp, pp_timeout;   /* stages; seconds a stage waits for a message before it stops the job */
    const char *pp_schedule, *pp_layers, *pp_timeline;
} TrainOpts;

/* The Llama recipe (DESIGN.md) with pretraining's schedule: lr 5e-4,
 * warmup 2000 (capped at --warmup-frac), B 8, T 256, 1000 steps. A mode
 * changes what differs after this call. */
void trainer_opts_default(TrainOpts *o);

/* Write the shared flag rows (pointing into o) to flags[0..); returns how
 * many (at most TRAINER_NFLAGS). */
#define TRAINER_NFLAGS 48
int trainer_flags(TrainOpts *o, CliFlag *flags);

/* A source of micro-batches. */
typedef struct TrainData {
    void *ud;
    const char *name;      /* what error messages call it, e.g. the first shard's path */
    uint64_t tokenizer_id; /* of the tokenizer that made the data */
    uint64_t data_id;      /* identity of the data (0: not checked on resume) */
    /* Fill one micro-batch of (B, T) host arrays: tokens, targets
     * (LC_IGNORE where untrained) and positions (document mask). */
    int (*next)(void *ud, int32_t *tok, int32_t *tgt, int32_t *pos, Err *e);
    /* The data cursor, ncursor words (trainer_cursor_words), and a seek
     * back to one (checkpoints store it in /state/cursor). seek(ud, all
     * zeros) rewinds (validation uses the same batches each time). */
    void (*tell)(const void *ud, uint64_t *cur);
    int (*seek)(void *ud, const uint64_t *cur, Err *e);
    /* Rows per epoch and what they are ("windows", "rows"), for the
     * start-up line. */
    uint64_t count;
    const char *unit;
    /* 1: report next-token accuracy on trained tokens in validation, and
     * trained tokens/s on the progress line (sft, where targets are masked) */
    int masked;
    /* Words of the cursor, at most TRAIN_CURSOR_MAX; 0 means 2 (a loader's
     * (epoch, pos), what every source had before mixtures). */
    int ncursor;
    /* Validation only: nparts > 0 reports the loss of each part (a mixture's
     * sources) as "<name> <loss>" and val_loss/<name>, and the mean of the
     * parts as the val loss; this TrainData's own next/tell/seek are unused. */
    struct TrainData *parts;
    int nparts;
    /* Training only, may be NULL: ",\"key\":v" JSON members for the step's
     * metrics record (a mixture's realised proportions). */
    void (*report)(const void *ud, char *json, size_t njson);
    /* Training only, may be NULL: state beyond the cursor that a checkpoint
     * keeps (/state/aux; RL: the rollout a step is in the middle of).
     * aux_save returns it (*n bytes, caller frees with free; NULL and 0:
     * none); aux_load takes it back after seek (NULL, 0 when the checkpoint
     * has none), -1 with e when it does not fit the run. */
    void *(*aux_save)(const void *ud, size_t *n);
    int (*aux_load)(void *ud, const void *aux, size_t n, Err *e);
} TrainData;

#define TRAIN_CURSOR_MAX 128
/* d's cursor words (ncursor, or 2 when it is 0). */
static inline int trainer_cursor_words(const TrainData *d) { return d->ncursor ? d->ncursor : 2; }

struct Trainer;

/* A mode whose loss is not the masked cross-entropy (dpo) supplies it. */
typedef struct TrainLoss {
    void *ud;
    /* One optimizer step's forward and backward over its accum micro-batches
     * (tok, tgt, pos: accum blocks of B*T, already drawn), accumulating
     * into tr->grads (zeroed by the trainer); returns the step's loss.
     * Under data parallelism it trains only micro-batches [tr->k0, tr->k1)
     * of them, still normalising by the whole step's count, and the
     * trainer sums the returned losses (and gradients) over the ranks. */
    double (*step)(void *ud, struct Trainer *tr, const int32_t *tok, const int32_t *tgt, const int32_t *pos,
                   long accum, long step, Err *e);
    /* The last step's (or validation's) extra metrics: " | name v" text for
     * the progress line and ",\"name\":v" JSON members. NULL: none. */
    void (*extra)(void *ud, int validation, char *line, size_t nline, char *json, size_t njson);
    /* Validation: the mean loss over nbatches micro-batches of d (rewound
     * before and after), leaving its metrics for extra. NULL: the masked
     * cross-entropy. NaN with e on an error. */
    double (*eval)(void *ud, struct Trainer *tr, TrainData *d, long nbatches, Err *e);
    /* Tokens the last step ran forward and backward (tok/s, MFU and the
     * metrics' "tokens"), summed over the ranks; NULL: accum * B * T. */
    long (*tokens)(void *ud);
    /* What eval returns, for "val <name>" and "val_<name>" (NULL: "loss"). */
    const char *val_name;
} TrainLoss;

typedef struct Trainer {
    TrainOpts o;
    const char *mode;      /* "pretrain", "sft", ...: the start-up line */
    LlamaConfig c;
    Device dev;
    Llama m;
    AdamW opt;
    Sched sched;
    long accum;            /* micro-batches per step */
    /* the parameters AdamW steps, their gradients and table: the model's,
     * or with LoRA the adapters' (the base is frozen) */
    const ParamTable *pt;
    float *params, *grads;
    uint64_t model_id;     /* ckpt_hash of the initial weights (0: fresh) */
    const char *init;      /* the model source, or NULL */
    const char *base_ref;  /* LoRA checkpoints name their base by this path (init), or NULL to hold it:
                            * a base that is not the file's weights (a causal LM given a new score head) */
    /* private */
    Llama gen;             /* CPU copy for samples (B = 1), when sampling */
    Tokenizer tok;
    int has_tok;
    int opened;
    /* data parallelism (dist/dist.h): every rank draws the whole global
     * batch of accum micro-batches (the same data cursor everywhere, so a
     * checkpoint resumes on any number of ranks) and each replica trains
     * micro-batches [k0, k1) of it; gradients are summed over the replicas */
    int rank, world, dp, dp_rank;
    long k0, k1;
    size_t *bucket;        /* (L + 1) layer l's gradients are pt[bucket[l], bucket[l+1]) */
    size_t *shard;         /* (dp + 1) --zero 1: replica r steps pt[shard[r], shard[r+1]) */
    int zero;
    double dp_wait;        /* seconds spent waiting for gradient reductions after the backward */
    /* pipeline parallelism (pipeline.h): this rank trains pt[own_lo,
     * own_hi) (everything without --pp), its AdamW moments cover
     * pt[mlo, mlo + opt.size) (ZeRO: its shard of that) */
    size_t own_lo, own_hi, mlo;
    struct Pipe *pipe;     /* the stages' strategy (pipeline.h), NULL without --pp */
} Trainer;

/* Check the shared flags that need no input (lr > 0, --device), so a bad
 * flag is reported before any file is read. */
int trainer_check(const TrainOpts *o, Err *e);

/* Build the run for config c: the schedule, the device, the model with
 * gradients (with --lora-r: a frozen base with adapters initialised from
 * --seed as PEFT does), and AdamW. init: NULL for a fresh model initialised
 * from --seed, else the model source the command opened (source.h: a
 * checkpoint, a Hugging Face directory, a GGUF file), whose weights are
 * loaded; it must outlive the Trainer (tr->init borrows its path). Errors: --batch-tokens not a multiple of B*T, the
 * schedule's, the device's, the source's. Release with trainer_close (also
 * after a failed open). */
int trainer_open(Trainer *tr, const TrainOpts *o, const char *mode, const LlamaConfig *c,
                 const ModelSource *init, Err *e);

/* Train: resume if asked, then steps until --steps, validating on val (NULL:
 * none), with the loss of loss (NULL: masked cross-entropy), and write --out (with LoRA: the PEFT adapter directory
 * --adapter-out and, when asked, the merged model --merged-out). run_flags/nflags are the command's whole flag
 * table (recorded in checkpoints as the run's config). Returns 0, or -1 with
 * e (also when stopped by a signal, after saving). */
int trainer_run(Trainer *tr, TrainData *train, TrainData *val, const TrainLoss *loss, const CliFlag *run_flags,
                int nflags, Err *e);

/* One optimizer update of a Trainer that trainer_run does not drive (a
 * second model a TrainLoss trains beside the policy: PPO's value model):
 * tr->grads summed over the data-parallel replicas, the global norm clipped
 * to --clip, AdamW at the schedule's lr of step. Returns the norm before
 * clipping. Not on pipeline stages. */
double trainer_update(Trainer *tr, long step);

void trainer_close(Trainer *tr);

/* Mean loss per trained token over nbatches micro-batches of d, rewound
 * first and afterwards (the same batches every validation); with acc not
 * NULL also the fraction of trained tokens whose most likely next token
 * (argmax of the logits) is the target. NaN with e on a data error. */
double trainer_eval(Trainer *tr, TrainData *d, long nbatches, double *acc, Err *e);

/* Trained rows of the last forward (targets tgt, host) whose most likely
 * next token is the target. */
long trainer_count_correct(Trainer *tr, const int32_t *tgt);

/* mkdir -p dir; the error names flag. */
int trainer_mkdir(const char *dir, const char *flag, Err *e);

#endif
