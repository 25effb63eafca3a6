/*
 * trdata.h: the training data sources pretrain, sft and distill share, as
 * the trainer's TrainData: token shards cut into windows by the
 * deterministic loader (data/loader.h), and SFT JSONL rendered, masked and
 * packed into rows (data/sft.h).
 *
 * Each source can report, for every row of the micro-batch it last drew,
 * a key that names the row independently of B, the seed and the epoch (the
 * global window number; the packed row's storage index): distill's teacher
 * cache is keyed by it, so the cached rows match whatever order the
 * student's loader draws them in, on any number of ranks and after a
 * resume.
 */
#ifndef LLAMAC_TRAIN_TRDATA_H
#define LLAMAC_TRAIN_TRDATA_H

#include <stdint.h>
#include <stdio.h>

#include "../../data/loader.h"
#include "../../data/sft.h"
#include "../../data/shard.h"
#include "../proc/cli.h"
#include "trainer.h"

#define TRDATA_MAX_SHARDS 32

/* Open token shards (a --train or --val list). */
typedef struct TrShards {
    Shard s[TRDATA_MAX_SHARDS];
    const Shard *p[TRDATA_MAX_SHARDS];
    int n;
} TrShards;

/* Open every path of paths: -1 with "<flag>: no shard given", shard_open's
 * message, or "<path>: made by a different tokenizer than <first>". Close
 * with trdata_shards_close (also after a failure). */
int trdata_shards_open(TrShards *set, const CliList *paths, const char *flag, Err *e);
void trdata_shards_close(TrShards *set);

/* Identity of the shards' tokens, in order (never 0). */
uint64_t trdata_shards_hash(const TrShards *set);

/* A loader as a batch source; keys (B, may be NULL) gets each drawn row's
 * window number. */
typedef struct WinSource {
    Loader *L;
    uint64_t *keys;
} WinSource;

/* The trainer's view of src (borrowed): windows of shards made by the
 * tokenizer tokenizer_id, named name; data_id 0: resumed on any shards of
 * the tokenizer (pretraining). */
TrainData trdata_windows(WinSource *src, uint64_t tokenizer_id, const char *name, uint64_t data_id);

/* SFT rows as a batch source. With dump each drawn micro-batch is also
 * written as one JSONL line {"B", "T", "tokens", "targets" (-1:
 * LC_IGNORE), "pos"} (sft --dump-batches); keys (B, may be NULL) gets each
 * drawn row's storage index. */
typedef struct RowSource {
    SftRows *rows;
    FILE *dump;
    uint64_t *keys;
} RowSource;

/* The trainer's view of src (borrowed): masked rows. */
TrainData trdata_rows(RowSource *src, const char *name, uint64_t tokenizer_id, uint64_t data_id);

/* Load the JSONL split path with tok and so and build its rows (B x T of
 * o, packed or padded, seeded), printing what was kept on a line that
 * starts "<mode> <what>: ". Errors: sft_load's and sft_rows_init's. */
int trdata_sft_load(const char *mode, const char *path, const Tokenizer *tok, const SftOpts *so, const TrainOpts *o,
                    int packed, const char *what, SftSet *set, SftRows *rows, Err *e);

#endif
