/*
 * ckpt.h: checkpoints in HDF5 (DESIGN.md, "Checkpoints (HDF5)").
 *
 * One file per checkpoint, readable by h5dump and h5py:
 *
 *   /                      attributes: format = "llamac-checkpoint",
 *                          version = CKPT_VERSION, complete = 1 (written last)
 *   /config                attributes: every LlamaConfig field by name
 *                          (dim, n_layers, ..., rope_theta, tied) and
 *                          tokenizer_id (uint64)
 *   /model/<HF name>       float32 dataset of the tensor's logical shape
 *                          (e.g. /model/model.layers.0.self_attn.q_proj.weight)
 *   /optim                 attributes: t (steps taken), beta1, beta2, eps,
 *                          weight_decay, clip, decay_all      (when saved)
 *   /optim/m/<HF name>, /optim/v/<HF name>   AdamW moments, same shapes
 *   /lora                  (LoRA runs) attributes: r, alpha, dropout, rslora,
 *                          targets ("q_proj,v_proj", PEFT names), layers
 *                          ("all" or "0,2-3"), init ("kaiming"/"gaussian"),
 *                          head (1, only when a reward model's score head
 *                          is trained: /lora/score.weight, its copy),
 *                          and, when the base is stored by reference,
 *                          base_path and base_hash (then there is no /model)
 *   /lora/<adapter name>   float32 adapter tensors, e.g.
 *                          /lora/model.layers.0.self_attn.q_proj.lora_A.weight
 *                          (a LoRA run's /optim/m, /optim/v hold the moments
 *                          of these, its optimizer's parameters)
 *   /state                 attributes: step, tokens, seed, lr, world;
 *                          data_id, model_id (uint64, when not 0);
 *                          datasets cursor (world, n) uint64: every
 *                          data-parallel rank's data cursor, n = 2 for one
 *                          loader (epoch, pos), 1 + 2K for a mixture of K
 *                          sources (row, then each (epoch, pos)); rng (4) uint64, and
 *                          run_config (a string: the run's flags as
 *                          "key = value" lines)                (when saved)
 *
 * Every dataset carries a `checksum` attribute (uint64, ckpt_hash of its
 * bytes) that loading verifies, so a flipped bit in tensor data is reported
 * rather than trained on. The file's first CKPT_UB bytes (an HDF5 user
 * block, which h5py and h5dump skip) are llamac's content table: the file
 * size, the raw-data ranges and a hash of HDF5's structure, checked before
 * HDF5 parses anything (a damaged structure can crash libhdf5). Tensors are stored whole under their logical names,
 * so a checkpoint does not depend on the number of ranks that wrote it.
 *
 * Crash safety: ckpt_save writes "<path>.tmp", sets `complete` last, closes
 * and fsyncs it, then renames it over path and fsyncs the directory. A kill at
 * any moment leaves either the old file or the new one under path. Before
 * libhdf5 writes, the save claims the file's space (fallocate): no room
 * (a full disk, RLIMIT_FSIZE) is one error line and no temporary file, never
 * a write failing inside libhdf5, which leaves the file open in the library
 * and crashes it at exit. Test hook:
 * with LLAMAC_CKPT_KILL_AFTER=N in the environment, ckpt_save raises SIGKILL
 * on its own process once it has written N tensors in all (over every save
 * of the process: the crash-safety test).
 */
#ifndef LLAMAC_TRAIN_CKPT_H
#define LLAMAC_TRAIN_CKPT_H

#include <stdint.h>
#include <stdio.h>

#include "../../model/config.h"
#include "../../model/lora.h"
#include "../../model/params.h"
#include "../../optim/adamw.h"

#define CKPT_VERSION 2
/* Bytes of the content table before HDF5's part of the file (ckpt.c): the
 * file's size, its datasets' raw-data ranges and a hash of everything else,
 * checked before HDF5 reads the file. */
#define CKPT_UB 65536

/* Rewrite path's content table for its present bytes (tests: a file edited
 * through HDF5 that should still load as far as its contents allow). */
void ckpt_restamp(const char *path);

/* The training state beside the weights. */
typedef struct CkptState {
    long step;            /* optimizer steps completed */
    long tokens;          /* training tokens consumed */
    uint64_t seed;        /* the run's --seed */
    double lr;            /* learning rate of the last step taken */
    int world;            /* data-parallel ranks: cursor has ncursor * world entries */
    uint64_t *cursor;     /* (world, ncursor): each rank's data cursor, e.g. a
                           * loader's (epoch, pos) (data/mixture.h) */
    uint64_t rng[4];      /* the run's random state (xoshiro256**) */
    char *run_config;     /* NUL-terminated text */
    uint64_t data_id;     /* identity of the training data (sft: a hash of its
                           * tokens and masks), 0 if none; absent in old files */
    uint64_t model_id;    /* identity of the initial weights of a fine-tuning
                           * run (ckpt_hash of them), 0 for pretraining */
    int ncursor;          /* words of each rank's cursor (0 when saving: 2);
                           * a load sets it from the file (2 before mixtures) */
    void *aux;            /* naux bytes of state beyond the cursor (/state/aux: RL's
                           * rollout in progress), NULL and 0 for none; a load
                           * allocates it (freed by ckpt_state_free) */
    size_t naux;
} CkptState;

/* What a checkpoint holds, from ckpt_info. */
typedef struct CkptInfo {
    LlamaConfig c;
    uint64_t tokenizer_id;
    int has_optim, has_state;
    long step;            /* -1 without /state */
    long tokens;
    int has_lora;         /* /lora present: lora holds its config */
    LoraConfig lora;
    char lora_base[512];  /* base_path when the base is a reference, else "" */
    char lora_base_quant[16]; /* base_quant: how the base was held quantised, else "" */
    uint64_t lora_base_hash;  /* base_hash (with lora_base) */
} CkptInfo;

/* The adapters of a LoRA run, beside the base weights. */
typedef struct CkptLora {
    LoraConfig lc;
    const ParamTable *t;  /* adapter table: lora_build(&lc, c) */
    float *params;        /* (t->size) adapter weights, host */
    /* save: NULL stores the base under /model; a path (any model source
     * source.h opens: an llamac checkpoint, a Hugging Face directory, a GGUF
     * file, holding the same base weights) stores only it and the base's
     * content hash, which loading checks */
    const char *base_ref;
    /* a base held quantised (--base-quant): how (source_quant_plan's "keep"
     * or type) and the hash of what the run held (source_quant_hash),
     * stored as base_quant and base_hash; NULL, 0 for a float base */
    const char *base_quant;
    uint64_t base_hash;
} CkptLora;

/* Write a checkpoint of the parameters (host buffer laid out by t) and,
 * when opt / st are non-NULL, the AdamW state (opt->m, opt->v on the host)
 * and the training state. Atomic as described above. Returns 0, or -1 with
 * e = "<path>: <problem>"; the previous file under path is then untouched. */
int ckpt_save(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
              uint64_t tokenizer_id, const AdamW *opt, const CkptState *st, Err *e);

/* A LoRA run's checkpoint: the base (bt, base_params; by reference when
 * lora->base_ref is set), the adapters (lora), and, when opt / st are
 * non-NULL, the AdamW state of the adapters (opt->m, opt->v laid out by
 * lora->t) and the training state. Atomic like ckpt_save. */
int ckpt_save_lora(const char *path, const LlamaConfig *c, const ParamTable *bt, const float *base_params,
                   uint64_t tokenizer_id, const CkptLora *lora, const AdamW *opt, const CkptState *st, Err *e);

/* The same file (ckpt_save's, or ckpt_save_lora's when lora is not NULL)
 * written by every rank of the data-parallel grid together (dist.h; all call
 * it with the same arguments), through parallel HDF5 (MPI-IO): the layout
 * does not depend on the number of ranks, each tensor is written whole by
 * one rank, and the temporary name, fsync, rename and completion mark are
 * ckpt_save's (rank 0 renames). own (2 x world offsets): rank r holds
 * the optimizer table's tensors in [own[2r], own[2r+1]) (a pipeline stage's
 * part, a ZeRO-1 shard; the rest of its buffer may be stale), opt->m and
 * opt->v holding only that range; each such tensor is written by one of
 * its holders. NULL: everything whole on every rank. One rank: ckpt_save /
 * ckpt_save_lora. Every rank returns the same result. */
int ckpt_save_dist(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
                   uint64_t tokenizer_id, const CkptLora *lora, const AdamW *opt, const size_t *own,
                   const CkptState *st, Err *e);

/* Load a LoRA checkpoint: lora->lc must equal the file's /lora config
 * (ckpt_info gives it; else "<path>: ... r 8 vs 4"), the adapters go into
 * lora->params, and opt / st as in ckpt_load. The base: a file that holds it
 * (/model) reads it into base_params; a file that names its base by
 * reference (CkptInfo.lora_base) needs base_params already loaded from that
 * base by the caller (this module reads only its own format: source.h's
 * source_load_lora does both) and checks its content hash ("<path>: base
 * <base_path> is not the one this checkpoint was trained on"). Loads back bit
 * for bit what ckpt_save_lora wrote. base_params NULL skips the base
 * (adapters only; bt is then unused). */
int ckpt_load_lora(const char *path, const LlamaConfig *c, const ParamTable *bt, float *base_params,
                   CkptLora *lora, AdamW *opt, CkptState *st, Err *e);

/* Read the config and what else the file holds, without the tensors. Fails
 * with one line naming the file for a missing, truncated, foreign or
 * incomplete (no `complete` mark) file. */
int ckpt_info(const char *path, CkptInfo *info, Err *e);

/* Load parameters into params (laid out by t, built from a config that must
 * equal the file's: else "<path>: checkpoint has dim 288, the model 512"),
 * and, when opt / st are non-NULL, the AdamW moments and step count and the
 * training state (st->cursor and st->run_config are malloc'd: free with
 * ckpt_state_free). A missing tensor, a shape mismatch or a checksum mismatch
 * is an error naming the tensor. A LoRA checkpoint is an error here: as the
 * model it stands for (base + merged adapters) it loads through source.h,
 * which resolves its base; resuming one needs ckpt_load_lora. */
int ckpt_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params,
              AdamW *opt, CkptState *st, Err *e);
void ckpt_state_free(CkptState *st);

/* First field where a and b differ, as "dim 288 vs 512", into buf; returns 0
 * when they are equal (the name is ignored). */
int ckpt_config_diff(const LlamaConfig *a, const LlamaConfig *b, char *buf, size_t n);

/* Checkpoints of a run live in a directory as step-%08ld.h5. Path of the
 * newest complete one into path[0..n): returns 1 when found, 0 when the
 * directory holds none (or does not exist), -1 on error. Incomplete or
 * damaged files are skipped with a warning on stderr. */
int ckpt_latest(const char *dir, char *path, size_t n, Err *e);

/* Path of the checkpoint of step `step` in dir. */
void ckpt_step_path(const char *dir, long step, char *path, size_t n);

/* Delete all but the newest `keep` step-*.h5 files in dir (keep >= 1), and
 * stale *.tmp files left by a crash. Returns the number deleted, -1 on error. */
int ckpt_prune(const char *dir, int keep, Err *e);

/* Print a summary of the file (config, counts, state, sizes) to out. */
int ckpt_print(const char *path, FILE *out, Err *e);

/* 64-bit hash of n bytes (4 independent multiply-xorshift lanes over 8-byte
 * words, then the tail; several GB/s): the dataset checksum. */
uint64_t ckpt_hash(const void *data, size_t n);

/* 1 if path starts with the HDF5 signature (to tell checkpoints from other
 * files before opening). */
int ckpt_is_hdf5(const char *path);

#endif
