/*
 * tokstream.h: documents to token shards on every core in bounded memory
 * (`llamac tokenize encode`). The documents stream through docstream.h:
 * each batch is tokenised in parallel, then its tokens are appended in
 * input order, an end-of-text token after each document, to the training
 * or validation output, written as it goes (ShardWriter, shard.h).
 *
 * Invariants: the shards are the same bytes whatever the thread count and
 * batch size, and the same as encoding the documents one by one into one
 * array and writing it with shard_write (the serial path this replaced). A
 * document goes to validation by its index in the input alone: document i
 * is held out when ((i * 0x9e3779b97f4a7c15) >> 33) % 1000 < val_per_mille
 * (skipped documents keep their index, so skipping one moves no other). A
 * split output is NAME_000000.bin, NAME_000001.bin, ... of exactly
 * shard_tokens tokens each but the last (a document may straddle two);
 * nothing is published until the whole run succeeds.
 *
 * Memory: the docstream batch (raw lines, parsed texts) plus each slot's
 * ids (4 bytes a token) and each thread's tokenizer scratch, and 1 MiB per
 * open shard writer; never the corpus.
 */
#ifndef LLAMAC_DATA_TOKSTREAM_H
#define LLAMAC_DATA_TOKSTREAM_H

#include <stdint.h>

#include "../model/base.h"
#include "docstream.h"
#include "tok.h"

typedef struct TokStreamOpts {
    const char *out;       /* training shard, or the NAME.bin of a split output */
    const char *val_out;   /* validation shard (or split NAME.bin); NULL: none */
    long val_per_mille;    /* documents held out per 1000, by index (needs val_out) */
    uint64_t shard_tokens; /* 0: one shard per output; else split every this many tokens */
    DocStreamOpts ds;      /* field, batch_bytes, bad_utf8, progress */
} TokStreamOpts;

typedef struct TokStreamStats {
    uint64_t tokens[2];    /* written to out, val_out */
    uint64_t docs[2];
    int shards[2];         /* files written */
    uint64_t text_bytes;   /* bytes of document text encoded */
    DocStreamStats ds;     /* the stream's counts (bad_utf8: skipped documents) */
} TokStreamStats;

/* Encode the documents of inputs[0..n) with t (which needs an end-of-text
 * id, t->eos >= 0) into o->out (and o->val_out), on docstream_threads()
 * threads. Returns 0, or -1 with e: the stream's errors ("<file>:<line>:
 * no string field 'text'", "<file>:<line>: not valid UTF-8 (byte N; ...)",
 * ...) and the writers'; on failure no output file is created or replaced.
 * st (may be NULL) gets the counts. */
int tokstream_encode(const Tokenizer *t, const char *const *inputs, int n, const TokStreamOpts *o,
                     TokStreamStats *st, Err *e);

/* The split of document index i: 1 (validation) or 0 (training). */
int tokstream_is_val(uint64_t i, long val_per_mille);

#endif
