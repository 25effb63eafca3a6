/*
 * outfile.h: an output file that replaces its path only when the run that
 * writes it succeeds. It is written as PATH.tmp and renamed over PATH by
 * outfile_commit; a failed run drops the .tmp and leaves PATH as it was, so
 * neither an error halfway through the input nor an output that names an
 * input loses data. For the `llamac data` steps (JSONL in, JSONL out).
 */
#ifndef LLAMAC_DATA_OUTFILE_H
#define LLAMAC_DATA_OUTFILE_H

#include <stdio.h>

#include "../model/base.h"

typedef struct {
    FILE *f;   /* write here (PATH.tmp); NULL when not open */
    char *path;
    char *tmp;
} OutFile;

/* Refuses (-1 with e) when two of paths[0..n) name one file: the same
 * string, or the same device and inode for files that exist. For a step's
 * inputs and outputs together, so that an output never overwrites an input
 * or another output. NULL entries are skipped. */
int outfile_distinct(const char *const *paths, int n, Err *e);

/* A JSONL step's paths checked before anything is read: every input a
 * .jsonl file (docstream_require_jsonl) and no two of inputs and outputs
 * one file (outfile_distinct; NULL outputs skipped). At most 32 inputs and
 * 8 outputs. */
int outfile_step_check(const char *const *ins, int nin, const char *const *outs, int nout, Err *e);

/* Opens PATH.tmp for writing. -1 with "PATH.tmp: cannot create" on failure. */
int outfile_open(OutFile *o, const char *path, Err *e);

/* Flushes, checks for write errors, closes and renames PATH.tmp over PATH.
 * On failure the .tmp is removed and -1 returned with "PATH: write error"
 * (or the rename's error). A file never opened commits as a no-op. */
int outfile_commit(OutFile *o, Err *e);

/* Closes and removes PATH.tmp if it is still open (after an error); a no-op
 * after outfile_commit. Frees the names. */
void outfile_drop(OutFile *o);

#endif
