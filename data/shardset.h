/*
 * shardset.h: one dataset from many token shards. A --train, --val or
 * --data value names a shard file, a directory of shards, a glob pattern,
 * or the --out of a split `tokenize encode` (NAME.bin standing for
 * NAME_000000.bin, NAME_000001.bin, ...); the set opens them all, in
 * order, and checks that one tokenizer made them.
 *
 * Invariants: the list is sorted (a directory's and a pattern's matches by
 * name, so numbered shards come in number order) and never empty; a split
 * output's numbering has no gaps.
 */
#ifndef LLAMAC_DATA_SHARDSET_H
#define LLAMAC_DATA_SHARDSET_H

#include <stddef.h>

#include "../model/base.h"
#include "shard.h"

/* A split output's shard k: "<base without .bin>_%06d.bin" into
 * out[0..cap) (the name tokenize encode --shard-size writes). */
void shardset_name(char *out, size_t cap, const char *base, int k);

/* Expand spec into shard paths, appended to (*paths)[*n..) (grown with
 * realloc; each path malloc'd; the caller frees them and the array):
 *   an existing file          itself
 *   a directory               its *.bin files, by name
 *   a pattern with * ? or [   its matches (glob), by name
 *   NAME.bin (no such file)   NAME_000000.bin, NAME_000001.bin, ... while
 *                             they exist (a split output)
 * Returns 0, or -1 with e: "<spec>: cannot open (no shard, directory,
 * pattern or split NAME_000000.bin of that name)", "<spec>: no *.bin shard in this directory", "<spec>: matches no
 * file". */
int shardset_expand(const char *spec, char ***paths, int *n, Err *e);

typedef struct ShardSet {
    Shard *s;          /* (n) open shards */
    const Shard **p;   /* (n) pointers to them, as loader_init takes */
    int n;
} ShardSet;

/* Open every shard that specs[0..nspecs) expand to, in order, into *set
 * (zeroed first). flag names the option in messages. Errors (-1 with e;
 * what was opened stays in set for shardset_close): "<flag>: no shard
 * given", the expansion's, shard_open's, and "<path>: made by a different
 * tokenizer than <first path>". */
int shardset_open(ShardSet *set, const char *const *specs, int nspecs, const char *flag, Err *e);

/* Close the shards and free the set; tolerates a zeroed set. */
void shardset_close(ShardSet *set);

#endif
