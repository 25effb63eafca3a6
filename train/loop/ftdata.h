/*
 * ftdata.h: the data flags of the fine-tuning modes (sft and dpo; the
 * reward and RL commands next), declared once beside trainer_flags: --data,
 * --val, --template, --max-length, --packing, --epochs, --bos, and their
 * checks.
 *
 * A mode names its items (examples, pairs) in some help texts, so it
 * passes those; the rows come back by name (FtDataFlags) so that its flag
 * table keeps the order its --help prints. Use: ftdata_default,
 * ftdata_flags, cli_parse_all, ftdata_require, ftdata_check, the tokenizer
 * loaded, ftdata_bos, the data loaded, ftdata_steps.
 */
#ifndef LLAMAC_TRAIN_FTDATA_H
#define LLAMAC_TRAIN_FTDATA_H

#include <stdint.h>

#include "../../data/sft.h"
#include "../../data/tok.h"
#include "../proc/cli.h"
#include "trainer.h"

typedef struct FtData {
    const char *data, *val;   /* JSONL files (val: NULL for none) */
    const char *tpl_name;     /* --template, NULL: the tokenizer's own (or none) */
    const char *bos;          /* "auto", "0", "1" */
    long max_len;             /* tokens per sequence (0: the most a row holds) */
    long packing, epochs;     /* 1: several items per row; passes when --steps is 0 (0: 3) */
} FtData;

/* The mode's wording of the rows that name its items. */
typedef struct FtDataHelp {
    const char *data, *val, *tpl, *max_len, *packing, *bos;
} FtDataHelp;

typedef struct FtDataFlags {
    CliFlag data, val, tpl, max_len, packing, epochs, bos;
} FtDataFlags;

/* Defaults: no files, no template named, --bos auto, --packing 1. */
void ftdata_default(FtData *d);

/* The rows of d's flags (pointing into d) with h's help texts, into *f. */
void ftdata_flags(FtData *d, const FtDataHelp *h, FtDataFlags *f);

/* The inputs every fine-tuning run needs, then trainer_check: -1 with
 * "--model: required ...", "--data: required ...", "--tokenizer: required
 * ..." or trainer_check's message. */
int ftdata_require(const FtData *d, const char *model, const TrainOpts *o, Err *e);

/* --template into so->tpl (-1 when none is named: the caller may take the
 * tokenizer's), --max-length (0: the most that fits; at most T / seqs + 1
 * tokens, seqs the sequences of an item that share a row: 1 an example, 2
 * a pair) into so->max_len, and --bos's value. -1 with the flag's message. */
int ftdata_check(FtData *d, const TrainOpts *o, int seqs, SftOpts *so, Err *e);

/* --bos for tok: auto is 1 when Hugging Face's tokenizer adds BOS itself
 * (a SentencePiece model, or Llama 3's <|begin_of_text|>), never for
 * byte-level GPT-2 style ones. */
int ftdata_bos(const FtData *d, const Tokenizer *tok);

/* With --steps 0: o->steps = (--epochs, default 3) passes of batches_per_epoch
 * micro-batches, accum per step (at least one step per pass); otherwise a
 * warning on stderr that --epochs is ignored, when given. */
void ftdata_steps(const FtData *d, TrainOpts *o, uint64_t batches_per_epoch, long accum);

#endif
