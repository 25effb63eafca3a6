/*
 * pack.h: grouping examples into rows of T slots, for the row builders of
 * SFT examples (sft.c) and preference pairs (dpo.c), so that each keeps
 * only what its items are (one sequence, or a chosen + rejected pair that
 * never leaves its row) and how a row is written out.
 *
 * Item i needs need[i] slots (0 <= need[i] <= T). Without packing each
 * item has a row of its own, in item order. With packing items are sorted
 * by need, largest first (ties by index, so the rows are deterministic),
 * and each is placed in an open row by one of two rules (Johnson 1973):
 *   best fit   the row with the least room that still fits it (SFT's)
 *   first fit  the first row, in order of opening, that fits it (DPO's)
 * else in a new row. Within a row, items keep their placement order.
 *
 * The builders also share the identity of a set (pack_hash, for resume
 * checks) and the check of a saved cursor (pack_cursor_check).
 */
#ifndef LLAMAC_DATA_PACK_H
#define LLAMAC_DATA_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"

typedef enum { PACK_NONE, PACK_BEST_FIT, PACK_FIRST_FIT } PackFit;

/* Rows of items 0..n) (see above): *nrows rows, row k holding
 * items[row_off[k] .. row_off[k+1]) (*row_off: nrows + 1 entries, *items: n;
 * caller frees both with free), *slots_used = the sum of need. */
void pack_rows(const int *need, size_t n, int T, PackFit fit, size_t *nrows, size_t **row_off, uint32_t **items,
               long *slots_used);

/* Identity of a set of sequences stored back to back: the ntok token ids,
 * the ntok mask bytes, then the noff offsets, in that order (a different
 * order is different data). FNV-1a over 64-bit words folded with a
 * multiply-xorshift, from the FNV offset basis ^ salt (the builder's: SFT
 * salts with its packing flag, DPO with "dpo"). Never 0 (0 means "no data
 * id" to the trainer). */
uint64_t pack_hash(uint64_t salt, const int32_t *ids, const uint8_t *mask, size_t ntok, const size_t *off,
                   size_t noff);

/* A cursor restored from a checkpoint (next row pos of an epoch's order of
 * nrows rows, drawn B at a time): 0 when pos is a multiple of B with a whole
 * batch from it; else -1 with "data cursor: row <pos> is not the start of a
 * batch of <B> among <nrows> rows". */
int pack_cursor_check(uint64_t pos, int B, size_t nrows, Err *e);

#endif
