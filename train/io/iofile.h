/*
 * iofile.h: what the model-file formats (ckpt, hf, gguf, peft) share, so
 * that none of them calls another: directories written atomically, JSON
 * written and fsync'd, the shortest decimal of a float, and the check every
 * loader runs on the tensors it read.
 */
#ifndef LLAMAC_TRAIN_IO_IOFILE_H
#define LLAMAC_TRAIN_IO_IOFILE_H

#include <stddef.h>

#include "../../model/base.h"

/* Writing a directory atomically (HF exports, PEFT adapters):
 * iofile_dir_begin refuses an existing non-directory or, without force, a
 * non-empty directory, and creates the empty "<dir>.tmp.<pid>" (its path into
 * tmp[0..n)); the caller writes and fsyncs its files there; iofile_dir_commit
 * fsyncs tmp and renames it to dir (a full dir is moved aside first and
 * removed after), or removes tmp and fails; iofile_dir_abort removes tmp. */
int iofile_dir_begin(const char *dir, int force, char *tmp, size_t n, Err *e);
int iofile_dir_commit(const char *dir, const char *tmp, Err *e);
void iofile_dir_abort(const char *tmp);

/* Write j to path (indented, keys in insertion order) and fsync it. */
struct json_t;
int iofile_json_write(const char *path, const struct json_t *j, Err *e);

/* The shortest decimal that reads back as f, as a double (JSON reals: 1e-05,
 * not 9.99999974737875e-06). */
double iofile_short_real(float f);

/* Non-finite weights (issue 16): every loader (safetensors tensors of a HF
 * directory, GGUF tensors after dequantising, HDF5 checkpoint groups, PEFT
 * adapter weights) passes each tensor it read through this check. 0 if the
 * n floats at x are finite; else -1 with "<path>: tensor <name> holds K
 * non-finite values (NaN or Inf) of n ..." — or, once
 * iofile_allow_nonfinite(1) was called (the --allow-nonfinite flag, cli.h),
 * that fact as a warning on stderr and 0. */
int iofile_check_finite(const char *path, const char *name, const float *x, size_t n, Err *e);
/* The same verdict for a quantised tensor found with `bad` of its `rows`
 * rows dequantising to NaN or Inf (a damaged block scale). */
int iofile_nonfinite_rows(const char *path, const char *name, size_t bad, size_t rows, Err *e);
void iofile_allow_nonfinite(int on);

#endif
