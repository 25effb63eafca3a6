/*
 * ftdata.h: the data flags of the fine-tuning modes (sft and dpo; the
 * reward and RL commands next), declared once beside trainer_flags: --data,
 * --val, --template, --max-length, --packing, --epochs, --bos, and their
 * checks.
 *
 * A mode names its items (examples, pairs) in some help texts, so it
 * passes those; the rows come back by name (FtDataFlags) so that its flag
 * table keeps the order its --help prints. Use: ftdata_default,
 * ftdata_flags, ftdata_parse, ftdata_require, ftdata_check, ftdata_open
 * (the model source and its tokenizer), ftdata_bos, the data loaded,
 * ftdata_steps; FtOut for the files a mode writes beside the run (--dump,
 * --dump-batches).
 */
#ifndef LLAMAC_TRAIN_FTDATA_H
#define LLAMAC_TRAIN_FTDATA_H

#include <stdint.h>
#include <stdio.h>

#include "../../data/dpo.h"
#include "../../data/sft.h"
#include "../../data/tok.h"
#include "../io/source.h"
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

/* The fine-tuning modes' training defaults over trainer_opts_default: peak
 * lr (each mode's reference trainer's), no warmup, --steps from --epochs,
 * B 4 rows of T 1024, validation every 50 steps over 10 batches, no sample
 * prompt, and the mode's --out and --ckpt-dir. */
void ftdata_train_defaults(TrainOpts *o, double lr, const char *out, const char *ckpt_dir);

/* The trainer's view of preference-pair rows (dpo, reward): draws
 * micro-batches from r (borrowed), its cursor (epoch, next row); masked as
 * the mode reports (1: trained tokens on the progress line). */
TrainData ftdata_pair_data(DpoRows *r, const char *name, uint64_t tokenizer_id, uint64_t data_id, int masked);

/* Validation over pair rows (dpo, reward): r rewound, nbatches
 * micro-batches drawn, one(ud, tok, tgt, pos, batch, e) on each (on
 * pipeline stages only the first replica calls it, and a failure on any
 * rank fails every rank), LoRA dropout off, r rewound again. 0 or -1 with
 * e. */
typedef int (*FtPairFn)(void *ud, const int32_t *tok, const int32_t *tgt, const int32_t *pos, const DpoBatch *bt,
                        Err *e);
int ftdata_pair_eval(Trainer *tr, DpoRows *r, long nbatches, FtPairFn one, void *ud, Err *e);

/* A TrainLoss.extra's text: " | <eval_>name v" for the progress line and
 * ",\"<eval_>name\":v" JSON members, for n named values. */
void ftdata_extra_format(int validation, const char *const *names, const double *v, int n, char *line, size_t nline,
                         char *json, size_t njson);

/* Defaults: no files, no template named, --bos auto, --packing 1. */
void ftdata_default(FtData *d);

/* The rows of d's flags (pointing into d) with h's help texts, into *f. */
void ftdata_flags(FtData *d, const FtDataHelp *h, FtDataFlags *f);

/* cli_parse_all over flags[0..nf) (no positional arguments), and with --help
 * cli_help(usage, about, flags, nf). Returns -1 (e set by the parser), 1
 * when the help was printed (the command returns 0), 0 to go on. */
int ftdata_parse(int argc, char **argv, const CliFlag *flags, int nf, const char *usage, const char *about,
                 Err *e);

/* The inputs every fine-tuning run needs, then trainer_check: -1 with
 * "--model: required ...", "--data: required ...", "--tokenizer: required
 * ..." or trainer_check's message. */
int ftdata_require(const FtData *d, const char *model, const TrainOpts *o, Err *e);

/* --template into so->tpl (-1 when none is named: the caller may take the
 * tokenizer's), --max-length (0: the most that fits; at most T / seqs + 1
 * tokens, seqs the sequences of an item that share a row: 1 an example, 2
 * a pair) into so->max_len, and --bos's value. -1 with the flag's message. */
int ftdata_check(FtData *d, const TrainOpts *o, int seqs, SftOpts *so, Err *e);

/* The model to fine-tune and its tokenizer: source_open(ms, model), then
 * tok_load(tok, tokpath), then the checks that they belong together: -1
 * with source_open's or tok_load's message, "<tokpath>: not the tokenizer
 * <model> was trained with" (the source records a tokenizer id and tok's
 * differs), or "<tokpath>: <n>-word vocabulary, larger than the model's
 * <V>". On -1 nothing is left to free (tok is freed); on 0 the caller
 * frees tok with tok_free (ms holds nothing to free). */
int ftdata_open(ModelSource *ms, const char *model, const char *tokpath, Tokenizer *tok, Err *e);

/* --bos for tok: auto is 1 when Hugging Face's tokenizer adds BOS itself
 * (a SentencePiece model, or Llama 3's <|begin_of_text|>), never for
 * byte-level GPT-2 style ones. */
int ftdata_bos(const FtData *d, const Tokenizer *tok);

/* With --steps 0: o->steps = (--epochs, default 3) passes of batches_per_epoch
 * micro-batches, accum per step (at least one step per pass); otherwise a
 * warning on stderr that --epochs is ignored, when given. */
void ftdata_steps(const FtData *d, TrainOpts *o, uint64_t batches_per_epoch, long accum);

/* A file a mode writes beside its run (--dump, --dump-batches), so that a
 * reader never sees half of one: written at "<path>.tmp", renamed to path
 * only when it is whole. flag names the file in messages. The caller owns
 * the struct; a zeroed one (f NULL) is closed as a no-op. */
typedef struct FtOut {
    FILE *f;          /* write here between open and close */
    const char *flag; /* "--dump" */
    const char *path; /* borrowed */
    char tmp[4096];   /* "<path>.tmp" */
} FtOut;

/* Create "<path>.tmp" for writing: -1 with "<flag>: cannot create
 * <path>.tmp". */
int ftdata_out_open(FtOut *w, const char *flag, const char *path, Err *e);

/* Close w->f. keep: rename the temporary file to path, -1 with "<flag>:
 * cannot write <path>" (and the temporary removed) when a write failed or
 * the rename did; !keep (the run failed): remove it and return 0. Sets
 * w->f to NULL. */
int ftdata_out_close(FtOut *w, int keep, Err *e);

#endif
