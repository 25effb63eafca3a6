/*
 * pack.c: examples into rows (see pack.h).
 *
 * Best fit keeps the open rows in buckets by remaining room (a stack per
 * room value) with a bitmap of the non-empty buckets, so a placement costs
 * O(T / 64), not O(rows). First fit scans the rows in order from the first
 * one that could still take the smallest item; rows before it stay full.
 */
#include "pack.h"

#include <stdlib.h>
#include <string.h>

#include "../model/base.h"

static const int *sort_need; /* qsort has no user pointer */
static int by_need_desc(const void *a, const void *b) {
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    if (sort_need[i] != sort_need[j]) return sort_need[i] > sort_need[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Items idx[0..n) (sorted by need, decreasing) into rows: row_of[i]; returns the row count. */
static size_t best_fit(const int *need, const uint32_t *idx, size_t n, int T, size_t *row_of) {
    size_t *head = xmalloc(((size_t)T + 1) * sizeof *head), *next = xmalloc((n ? n : 1) * sizeof *next), nrows = 0;
    int *room = xmalloc((n ? n : 1) * sizeof *room);
    size_t nwords = ((size_t)T + 64) / 64;
    uint64_t *bits = xcalloc(nwords, sizeof *bits);
    for (int c = 0; c <= T; c++) head[c] = (size_t)-1;
    for (size_t k = 0; k < n; k++) {
        uint32_t i = idx[k];
        int c = -1;
        for (size_t w = (size_t)need[i] / 64; w < nwords && c < 0; w++) {
            uint64_t m = bits[w];
            if (w == (size_t)need[i] / 64) m &= ~0ULL << (need[i] % 64);
            if (m) c = (int)(w * 64 + (size_t)__builtin_ctzll(m));
        }
        size_t row;
        if (c < 0) {
            row = nrows++;
            room[row] = T;
        } else {
            row = head[c];
            head[c] = next[row];
            if (head[c] == (size_t)-1) bits[c / 64] &= ~(1ULL << (c % 64));
        }
        room[row] -= need[i];
        row_of[i] = row;
        int rr = room[row];
        if (rr > 0) {
            next[row] = head[rr];
            head[rr] = row;
            bits[rr / 64] |= 1ULL << (rr % 64);
        }
    }
    free(head); free(next); free(room); free(bits);
    return nrows;
}

static size_t first_fit(const int *need, const uint32_t *idx, size_t n, int T, size_t *row_of) {
    int *room = xmalloc((n ? n : 1) * sizeof *room);
    int least = n ? need[idx[n - 1]] : 1; /* the smallest need: a row with less room is full */
    size_t first_open = 0, nrows = 0;
    for (size_t k = 0; k < n; k++) {
        int want = need[idx[k]];
        size_t row = first_open;
        while (row < nrows && room[row] < want) row++;
        if (row == nrows) room[nrows++] = T;
        room[row] -= want;
        row_of[idx[k]] = row;
        while (first_open < nrows && room[first_open] < least) first_open++;
    }
    free(room);
    return nrows;
}

void pack_rows(const int *need, size_t n, int T, PackFit fit, size_t *nrows, size_t **row_off, uint32_t **items,
               long *slots_used) {
    uint32_t *idx = xmalloc((n ? n : 1) * sizeof *idx);
    for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
    size_t *row_of = xmalloc((n ? n : 1) * sizeof *row_of), nr = n;
    for (size_t i = 0; i < n; i++) LC_ASSERT(need[i] >= 0 && need[i] <= T);
    if (fit != PACK_NONE) {
        sort_need = need;
        qsort(idx, n, sizeof *idx, by_need_desc);
        nr = fit == PACK_BEST_FIT ? best_fit(need, idx, n, T, row_of) : first_fit(need, idx, n, T, row_of);
    } else {
        for (size_t i = 0; i < n; i++) row_of[i] = i;
    }
    /* items grouped by row; within a row in placement order */
    size_t *off = xcalloc(nr + 1, sizeof *off);
    uint32_t *it = xmalloc((n ? n : 1) * sizeof *it);
    for (size_t i = 0; i < n; i++) off[row_of[i] + 1]++;
    for (size_t k = 0; k < nr; k++) off[k + 1] += off[k];
    size_t *fill = xmalloc((nr ? nr : 1) * sizeof *fill);
    memcpy(fill, off, nr * sizeof *fill);
    long used = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t i = idx[k];
        it[fill[row_of[i]]++] = i;
        used += need[i];
    }
    free(fill);
    free(row_of);
    free(idx);
    *nrows = nr;
    *row_off = off;
    *items = it;
    *slots_used = used;
}

uint64_t pack_hash(uint64_t salt, const int32_t *ids, const uint8_t *mask, size_t ntok, const size_t *off,
                   size_t noff) {
    uint64_t h = 0xcbf29ce484222325ULL ^ salt;
    const size_t nw[3] = {ntok, ntok, noff};
    for (int a = 0; a < 3; a++)
        for (size_t i = 0; i < nw[a]; i++) {
            uint64_t x = a == 0 ? (uint64_t)(uint32_t)ids[i] : a == 1 ? mask[i] : off[i];
            h = (h ^ x) * 0x100000001b3ULL;
            h ^= h >> 29;
        }
    return h ? h : 1;
}

int pack_cursor_check(uint64_t pos, int B, size_t nrows, Err *e) {
    if (pos % (uint64_t)B || pos + (uint64_t)B > nrows)
        return err_set(e, "data cursor: row %llu is not the start of a batch of %d among %zu rows",
                       (unsigned long long)pos, B, nrows);
    return 0;
}
