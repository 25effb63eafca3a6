/*
 * peft.h: LoRA adapters as Hugging Face PEFT saves them, in and out.
 *
 * A PEFT adapter directory holds adapter_config.json (PEFT's LoraConfig)
 * and adapter_model.safetensors whose keys are the adapter table's names
 * (model/lora.h) behind "base_model.model.":
 *
 *   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight (r, Din)
 *   base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight (Dout, r)
 *   base_model.model.score.weight (num_labels, D)  (lc.head: a reward model)
 *
 * A reward model's adapter (LoraConfig.head) is PEFT's task_type "SEQ_CLS"
 * with modules_to_save ["score"]: the head trained whole, saved under the
 * base's own name (PEFT strips its "modules_to_save.default." wrapper).
 * Read: modules_to_save naming "score" (and "classifier", which SEQ_CLS
 * adds and which names no Llama module) or task_type "SEQ_CLS" (PEFT then
 * adds "score" itself) sets lc.head, and needs a classifier base
 * (num_labels > 0), else an error naming the key. Written: task_type
 * "SEQ_CLS", modules_to_save ["classifier", "score"], PEFT's own list for
 * SEQ_CLS.
 *
 * Import maps r, lora_alpha, lora_dropout, use_rslora, target_modules (a
 * list of module names, "all-linear", or null: PEFT's Llama default q_proj,
 * v_proj), layers_to_transform (null, an int or a list) and
 * init_lora_weights (true, "gaussian", false) onto a LoraConfig, and refuses
 * with one line naming the option anything that would change the numbers
 * in a way llamac does not compute: bias other than "none", fan_in_fan_out,
 * a target_modules regex, another peft_type or task_type, modules_to_save
 * other than the score head, and every other
 * key (use_dora, rank_pattern, alpha_pattern, lora_bias,
 * layers_pattern, megatron_config, exclude_modules, loftq, ..., and keys of
 * newer PEFT versions) unless its value is neutral (null, false, {}, [],
 * ""). Keys that only describe the file (base_model_name_or_path, revision,
 * inference_mode, peft_version, auto_mapping) are read or ignored. The
 * tensors must be exactly the table's: a missing one, an extra one (an
 * adapter for more layers, or on lm_head) or another shape (an adapter for
 * another base) is an error naming the tensor; damaged files are refused by
 * safetensors_open.
 *
 * Export writes the two files (float32) through iofile_dir_begin/commit:
 * "<dir>.tmp.<pid>", fsync, rename; an existing non-empty dir is an error
 * unless force.
 */
#ifndef LLAMAC_TRAIN_PEFT_H
#define LLAMAC_TRAIN_PEFT_H

#include <stddef.h>

#include "../../model/lora.h"

#define PEFT_CONFIG "adapter_config.json"
#define PEFT_WEIGHTS "adapter_model.safetensors"
#define PEFT_PREFIX "base_model.model."

/* An adapter loaded for one base config. */
typedef struct PeftAdapter {
    LoraConfig lc;
    ParamTable t;        /* lora_build(&lc, base config) */
    float *params;       /* (t.size) adapter weights, padding zero */
    char base_name[256]; /* base_model_name_or_path, "" when null */
} PeftAdapter;

/* 1 if path is a directory holding adapter_config.json. */
int peft_is_dir(const char *path);

/* Read dir/adapter_config.json into lc, checked against the base config c
 * (lora_validate); base_name (n bytes, may be NULL) gets
 * base_model_name_or_path. Returns 0 or -1 with "<dir>/adapter_config.json:
 * <what>". */
int peft_read_config(const char *dir, const LlamaConfig *c, LoraConfig *lc, char *base_name, size_t n,
                     Err *e);

/* Read the config and the weights of dir for base c into a (see above).
 * Free with peft_free (tolerates a zeroed struct). Returns 0 or -1 with e;
 * a is then zeroed. */
int peft_load(const char *dir, const LlamaConfig *c, PeftAdapter *a, Err *e);
void peft_free(PeftAdapter *a);

/* Write the adapter (lc, its table t and weights params, host float32) as a
 * PEFT directory; base_name (may be NULL) becomes base_model_name_or_path.
 * Returns 0 or -1 with e; an existing dir is then untouched. */
int peft_save(const char *dir, const LoraConfig *lc, const ParamTable *t, const float *params,
              const char *base_name, int force, Err *e);

#endif
