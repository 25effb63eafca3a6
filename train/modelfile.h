/*
 * modelfile.h: llamac's own model file, until HDF5 checkpoints land: the
 * config, the tokenizer's identity and every parameter by Hugging Face name,
 * float32, with a checksum. Written to a temporary name and renamed, so a
 * crash never leaves a half-written file under the real name.
 *
 * Layout (little-endian): uint32 magic "LCMD", uint32 version; int32 dim,
 * n_layers, n_heads, n_kv_heads, hidden, vocab, max_seq, rope_scaling,
 * rope_orig_ctx, tied; float32 norm_eps, rope_theta, rope_factor,
 * rope_low_freq, rope_high_freq; uint64 tokenizer id; uint32 tensor count;
 * per tensor: uint32 name length, name, uint32 ndim, int64 shape[2],
 * float32 data; last, uint64 FNV-1a of all bytes before it.
 */
#ifndef LLAMAC_TRAIN_MODELFILE_H
#define LLAMAC_TRAIN_MODELFILE_H

#include "../model/llama.h"

#define MODELFILE_MAGIC 0x444d434cu /* "LCMD" */
#define MODELFILE_VERSION 1

/* Save m's parameters (downloaded from the backend) with its config. */
int modelfile_save(const char *path, const Llama *m, uint64_t tokenizer_id, Err *e);

/* Read only the config and tokenizer id (to size a model before loading). */
int modelfile_read_config(const char *path, LlamaConfig *c, uint64_t *tokenizer_id, Err *e);

/* Load parameters into m, built from the file's config (checked equal);
 * every tensor of m's table must be present with its shape. */
int modelfile_load(const char *path, Llama *m, Err *e);

#endif
