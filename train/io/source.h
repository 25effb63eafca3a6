/*
 * source.h: the one way in for model files. Every command that takes
 * --model opens it here: an llamac checkpoint (HDF5, ckpt.h), a Hugging Face
 * directory (hf.h) or a GGUF file (gguf.h), told apart by their content.
 * Each format's module knows only its own format; this module is the only
 * one that knows them all, and the only one that follows a reference from
 * one file to another (a LoRA checkpoint naming its base, which may be any
 * source, resolved here through the same way in).
 *
 * Usage: source_open (config, tokenizer), then build the parameter table
 * from s.c and source_load the weights into it.
 */
#ifndef LLAMAC_TRAIN_IO_SOURCE_H
#define LLAMAC_TRAIN_IO_SOURCE_H

#include <stdint.h>

#include "../../model/config.h"
#include "../../model/params.h"
#include "ckpt.h"

typedef enum { SOURCE_CKPT, SOURCE_HF, SOURCE_GGUF } SourceKind;

typedef struct ModelSource {
    SourceKind kind;
    char path[4096];
    LlamaConfig c;
    /* The tokenizer that came with the model: its id (a checkpoint's
     * recorded tokenizer_id; a GGUF's vocabulary when llamac reads it; 0 for a
     * HF directory, whose tokenizer.json is not read here) and, where the
     * source holds the tokenizer itself, its file (the GGUF itself, the HF
     * directory's tokenizer.json or tokenizer.model), else "". */
    uint64_t tokenizer_id;
    char tokenizer[4200];
    CkptInfo ck; /* kind SOURCE_CKPT: what the file holds (ckpt_info) */
} ModelSource;

/* The tokenizer to load: `given` (--tokenizer) when not NULL, else the one
 * the model carries (a GGUF's vocabulary, a HF directory's tokenizer.json);
 * NULL with e ("--tokenizer: required: ... does not carry its tokenizer")
 * when it carries none (a checkpoint). */
const char *source_tokenizer(const ModelSource *s, const char *given, Err *e);

/* Open path as a model source: its kind, config and tokenizer. A path that
 * is none of them is an error naming it. */
int source_open(ModelSource *s, const char *path, Err *e);

/* The source's weights into params, laid out by t (built from s->c). A LoRA
 * checkpoint loads as the model it stands for: its base (stored in it, or
 * the source it names, opened here and checked by content hash) with the
 * adapters merged in. */
int source_load(const ModelSource *s, const ParamTable *t, float *params, Err *e);

/* The source's weights into the table t of config c, which may differ from
 * the source's in one way: c a classifier (a reward model, num_labels > 0)
 * made from a causal LM, whose trunk loads by name (its LM head is left
 * out) and whose score head is drawn from normal(0, 0.02) with seed, as
 * transformers initialises a head the checkpoint lacks. Otherwise
 * source_load. Errors: source_load's; a classifier asked to become
 * something else. */
int source_load_as(const ModelSource *s, const LlamaConfig *c, const ParamTable *t, float *params, uint64_t seed,
                   Err *e);

/* A quantised base (DESIGN.md "Quantised weights"): the type each entry of
 * t (params_build(c)) is held in for --base-quant `how` (NULL: all float32),
 * into qtypes (t->n):
 *   "keep": s must be a GGUF file; every 2-D weight of the decoder, the
 *     embedding and an untied LM head stays in the type the file stores it
 *     in when that type can stay quantised (quant_keepable), the rest (F32,
 *     F16, BF16 tensors, norms) float32; a tensor in a type llamac reads but
 *     cannot keep is an error naming it and the types it can;
 *   a type name (nf4, q8_0, q4_k, ...; quant_parse): the decoder's seven
 *     linear weights of every layer quantised to it at load, the embedding,
 *     head and norms float32 (bitsandbytes' choice); a row length that is
 *     not a whole number of the type's blocks is an error naming a type that
 *     fits.
 * Returns the number of quantised entries (0 for how NULL), or -1 with e. */
int source_quant_plan(const ModelSource *s, const LlamaConfig *c, const ParamTable *t, const char *how,
                      uint32_t *qtypes, Err *e);

/* source_load_as for a table with quantised entries (params_set_quant):
 * the float entries into params, the quantised ones into qdata (host
 * memory, t->qsize bytes): copied as the GGUF stores them where it stores
 * them in their type, else read as float32 a tensor at a time and quantised
 * (quant_quantize), so loading never holds the float32 model whole (except a
 * LoRA checkpoint, merged first). */
int source_load_quant(const ModelSource *s, const LlamaConfig *c, const ParamTable *t, float *params,
                      uint8_t *qdata, uint64_t seed, Err *e);

/* A model held partly quantised (t after params_set_quant; params its
 * float buffer, qdata its quantised bytes, host memory) as plain float32
 * into out, laid out by ft (params_build's table of the same config): the
 * float tensors copied, the quantised ones dequantised. */
void source_quant_dense(const ParamTable *t, const float *params, const uint8_t *qdata, const ParamTable *ft,
                        float *out);

/* Content hash of a model held partly quantised: its float buffer (t->size
 * floats) and its quantised bytes (t->qsize). */
uint64_t source_quant_hash(const ParamTable *t, const float *params, const uint8_t *qdata);

/* Resume a LoRA checkpoint (ckpt_load_lora's contract): when it names its
 * base by reference, that base is loaded into base_params through
 * source_open / source_load first ("<path>: its base: <why>" when it cannot
 * be), then the checkpoint's adapters, optimizer and state. */
int source_load_lora(const char *path, const LlamaConfig *c, const ParamTable *bt, float *base_params,
                     CkptLora *lora, AdamW *opt, CkptState *st, Err *e);

// ----------------------------------------------------------------------------
// the one way out (convert and prune): a model in one of the three forms

struct Tokenizer;

typedef enum { SOURCE_SAVE_CKPT, SOURCE_SAVE_HF, SOURCE_SAVE_GGUF } SourceSaveFormat;

/* What a written model carries besides its weights. */
typedef struct SourceSave {
    int format;                  /* SourceSaveFormat */
    const struct Tokenizer *tok; /* the model's tokenizer, or NULL */
    const char *tokpath;         /* its file (a HF OUT copies it), with tok */
    const char *chat_template;   /* Jinja text (HF, GGUF), or NULL */
    uint64_t tokenizer_id;       /* a checkpoint's recorded id (tok's when tok) */
    const char *name;            /* GGUF general.name (NULL: c->name) */
    int gguf_type;               /* GgufType of a GGUF's matrices */
    int force;                   /* a HF OUT: replace an existing directory */
} SourceSave;

/* The form out names: .gguf GGUF, .h5 a checkpoint, anything else a
 * Hugging Face directory (convert's rule for a checkpoint IN). */
SourceSaveFormat source_save_format(const char *out);

/* Format name from --format: "ckpt", "hf" or "gguf"; -1 with e otherwise. */
int source_save_parse(const char *name, SourceSaveFormat *f, Err *e);

/* Write c's weights (t, params) to out in o->format through that format's
 * writer (ckpt_save, hf_save_tok / hf_save, gguf_save), atomically as each
 * does. Returns 0 or -1 with the writer's message. */
int source_save(const char *out, const LlamaConfig *c, const ParamTable *t, const float *params, const SourceSave *o,
                Err *e);

#endif
