/*
 * dpo.h: preference pairs from JSONL for DPO, the (B, T) rows the trainer
 * draws from them, and the DPO losses with their derivatives.
 *
 * Formats, one JSON object per line (TRL's preference formats):
 *   {"prompt": P, "chosen": C, "rejected": R}   P, C, R strings, or message
 *        lists (conversational: P the turns before the reply, C and R the
 *        assistant replies)
 *   {"chosen": C, "rejected": R}   whole conversations (the Anthropic HH
 *        layout): the prompt is their shared prefix, as TRL's extract_prompt
 *        takes it (the common leading messages; for strings the common
 *        leading characters, less a space just before the split)
 *
 * Rendering is SFT's prompt format (sft_render_prompt: BOS and EOS for
 * strings, the chat template for messages). As TRL does it, the prompt is
 * the part both sequences share with the rendered prompt (the shorter of
 * the two common prefixes), and the completion mask covers the rest.
 * Sequence 2i of a set is pair i's prompt + chosen, 2i+1 its prompt +
 * rejected.
 *
 * Length (max_len tokens per sequence): a pair whose prompt alone has
 * max_len tokens or more is dropped and counted; otherwise each sequence
 * longer than max_len keeps its first max_len tokens (the pair is counted
 * as truncated), or with o->drop_long the pair is dropped and counted (TRL's
 * RewardTrainer). An optional numeric "margin" field is kept per pair
 * (Llama 2's reward-model margin); one that is not a number is an error. Errors naming file:line: not JSON, a missing field,
 * chosen identical to rejected, an empty completion, no shared prompt, the
 * template's errors; and a file with no pair left.
 *
 * Rows: a pair never leaves its row: chosen's n - 1 slots then rejected's
 * (inputs ids[0..n-1), targets ids[1..n), positions restarting at each, the
 * document mask), and with packing several pairs share a row (first-fit
 * decreasing by length); the rest of a row is padding (target LC_IGNORE).
 * Rows are visited in an order shuffled per epoch from (seed, epoch); the
 * cursor (epoch, next row) is what a checkpoint saves. Each micro-batch
 * drawn also leaves a DpoBatch saying which pair and sequence each slot
 * belongs to.
 *
 * Losses of one pair, with h the difference of log-ratios
 *   h = (logp_c - ref_c) - (logp_r - ref_r)
 * (IPO: each log-ratio divided by its completion's token count, as TRL's
 * IPO does) and z = beta * h, ls the label smoothing:
 *   sigmoid  -(1 - ls) log sigmoid(z) - ls log sigmoid(-z)   (the
 *            conservative DPO of TRL up to v0.28 and torchtune)
 *   robust   (-(1 - ls) log sigmoid(z) + ls log sigmoid(-z)) / (1 - 2 ls)
 *   ipo      (h - 1 / (2 beta))^2
 *   hinge    max(0, 1 - z)
 */
#ifndef LLAMAC_DATA_DPO_H
#define LLAMAC_DATA_DPO_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "sft.h"
#include "tok.h"

typedef enum { DPO_SIGMOID, DPO_ROBUST, DPO_IPO, DPO_HINGE, DPO_LOSS_COUNT } DpoLoss;

/* "sigmoid" "robust" "ipo" "hinge"; -1 with "--loss-type: ..." otherwise. */
int dpo_loss_parse(const char *s, DpoLoss *l, Err *e);
const char *dpo_loss_name(DpoLoss l);

/* --beta > 0 and --label-smoothing in [0, 0.5); -1 with the flag's message. */
int dpo_check(double beta, double ls, Err *e);

/* The loss of one pair at h (see above); *dh = d loss / d h. */
double dpo_loss(DpoLoss l, double beta, double ls, double h, double *dh);

/* All pairs of a file: two sequences each, tokens back to back. */
typedef struct DpoSet {
    int32_t *ids;     /* all tokens */
    uint8_t *mask;    /* 1 = completion token (trained) */
    size_t *off;      /* (2n + 1): sequence s is ids[off[s] .. off[s+1]) */
    size_t n, ntok, cap_tok, cap_seq, cap_pair;
    long lines, truncated, dropped_long;
    double *margin;   /* (n) a line's "margin" field (reward models), 0 without one */
    long has_margin;  /* pairs that had one */
} DpoSet;

/* Read path into *s with o's template, BOS and max_len (o->format and
 * o->loss are not used). Errors as above. Free with dpo_free. */
int dpo_load(DpoSet *s, const char *path, const Tokenizer *t, const SftOpts *o, Err *e);
void dpo_free(DpoSet *s);

/* Identity of a set's sequences (tokens, masks, order). */
uint64_t dpo_hash(const DpoSet *s);

/* Slots of pair i in a row: (len(chosen) - 1) + (len(rejected) - 1). */
static inline size_t dpo_pair_slots(const DpoSet *s, size_t i) {
    return s->off[2 * i + 2] - s->off[2 * i] - 2;
}

/* What a micro-batch holds: seg[b*T + t] = 2j (chosen) or 2j + 1
 * (rejected) for a slot of the batch's pair j, -1 for padding; pair[j]
 * the pair's index in the set. */
typedef struct DpoBatch {
    int npairs;
    uint32_t *pair;  /* (capacity B * T / 2) */
    int32_t *seg;    /* (B * T) */
} DpoBatch;

#define DPO_RING 64  /* micro-batches whose DpoBatch is kept (accumulation) */

typedef struct DpoRows {
    int B, T, packed;
    int whole;            /* 1: each sequence's every token is an input (n slots, no targets: reward models) */
    uint64_t seed;
    int pad;              /* token id of padding */
    size_t nrows;
    size_t *row_off;      /* (nrows + 1) into items */
    uint32_t *items;      /* pair indices, row by row */
    const DpoSet *set;    /* borrowed */
    uint64_t epoch, pos;  /* cursor: next row in epoch `epoch`'s order */
    uint64_t *order, order_epoch;
    long slots_used;
    DpoBatch ring[DPO_RING];
    unsigned drawn;       /* micro-batches drawn since the last seek */
} DpoRows;

/* Build rows (B per micro-batch, T slots) over s, which must outlive them;
 * whole: every token of a sequence is an input (targets all LC_IGNORE), for
 * a classifier reading its last token, else DPO's n - 1 input slots.
 * Errors: a pair longer than T slots ("<name>: pair N needs M slots, more
 * than --seq T"), fewer rows than B. Free with dpo_rows_free. */
int dpo_rows_init(DpoRows *r, const DpoSet *s, int B, int T, int packed, int whole, int pad, uint64_t seed,
                  const char *name, Err *e);
void dpo_rows_free(DpoRows *r);

/* The next micro-batch (B x T host arrays, =); rows left over at an epoch's
 * end (fewer than B) are skipped. Its DpoBatch is dpo_rows_last(r, 0). */
void dpo_rows_next(DpoRows *r, int32_t *tok, int32_t *tgt, int32_t *pos);

/* The DpoBatch of the micro-batch drawn `back` draws ago (0: the last);
 * back < DPO_RING and < the draws since the last seek. */
const DpoBatch *dpo_rows_last(const DpoRows *r, int back);

/* Fill one micro-batch with the B rows from row0 in storage order (rows
 * past the last are padding), for a pass over every pair (the reference
 * log-probabilities). Writes its DpoBatch to *out (allocated with
 * dpo_batch_init). */
void dpo_rows_fill(const DpoRows *r, size_t row0, int32_t *tok, int32_t *tgt, int32_t *pos, DpoBatch *out);
void dpo_batch_init(DpoBatch *b, int B, int T);
void dpo_batch_free(DpoBatch *b);

/* Cursor (epoch, pos) and seek; pos a multiple of B below nrows. */
int dpo_rows_seek(DpoRows *r, uint64_t epoch, uint64_t pos, Err *e);

static inline uint64_t dpo_rows_batches(const DpoRows *r) { return r->nrows / (size_t)r->B; }

#endif
