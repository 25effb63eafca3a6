/*
 * device.h: `--device cpu|cuda` for the subcommands: picks the op table and
 * opens its context, checks that a model fits before allocating it, and
 * stages parameters (and AdamW moments) through host memory for the code
 * that reads or writes them on the host (initialisation, HDF5 checkpoints).
 * On the CPU the staging is free: host views alias the buffers.
 */
#ifndef LLAMAC_TRAIN_DEVICE_H
#define LLAMAC_TRAIN_DEVICE_H

#include "../../model/llama.h"
#include "../../optim/adamw.h"

typedef struct Device {
    const Ops *ops;
    void *ctx;   /* backend context (NULL on the CPU) */
    int gpu;     /* 1 for cuda */
} Device;

/* Open "cpu" or "cuda". Errors (one line, -1): an unknown name; cuda in a
 * build without LC_CUDA; no usable GPU. */
int device_open(Device *d, const char *name, Err *e);
void device_close(Device *d);
/* The same checks as device_open without opening anything, so a command can
 * reject a bad --device before it reads its inputs. */
int device_check(const char *name, Err *e);

/* On a GPU: fail with how much memory B x T needs (parameters, gradients
 * and AdamW moments when train, activations) against what is free, and
 * suggest a smaller --batch. Always 0 on the CPU. */
int device_check_fits(const Device *d, const LlamaConfig *c, int B, int T, int train, Err *e);
/* The same for a model built with o (a quantised or forward-only model
 * needs less than the plain float32 one). */
int device_check_fits_opts(const Device *d, const LlamaConfig *c, int B, int T, const LlamaOpts *o, Err *e);

/* Host views of a model's parameters (and its adapters' when it has them)
 * and (opt != NULL) AdamW moments (of opt's own size): the
 * same pointers on the CPU, host copies downloaded now on a GPU. v->m and
 * v->opt are shallow copies whose buffers are host memory, for ckpt_save /
 * ckpt_load. device_host_push uploads the view back (after a load);
 * device_host_free releases the copies. */
typedef struct HostView {
    Llama m;
    AdamW opt;
    int owned;
} HostView;
void device_host_view(const Llama *m, const AdamW *opt, HostView *v);
void device_host_push(const HostView *v, Llama *m, AdamW *opt);
void device_host_free(HostView *v);

/* Open device `name` into *d and build *m (no gradients) for batches of
 * (B, T) with the weights of the model source at path, whose config is c,
 * and, when adapter is not NULL, that PEFT adapter directory attached;
 * quant not NULL holds the weights quantised as source_quant_plan says
 * (--quant keep|TYPE: decoding reads them as stored).
 * On failure everything opened is released (*m zeroed, *d closed) and -1
 * returned with e; on success release with llama_free then device_close. */
int device_load_model(Device *d, const char *name, const char *path, const char *adapter, const char *quant,
                      const LlamaConfig *c, Llama *m, int B, int T, Err *e);

/* device_load_model on the device d already open (a second model beside
 * a run's own, e.g. distill's teacher): builds *m there; on failure *m is
 * released and zeroed, d stays open. forward_only: the model only runs
 * whole-sequence forwards (llama_forward_hidden and the like; no backward,
 * no llama_decode), so it holds two layers' activations instead of every
 * layer's (LlamaOpts.forward_only). */
int device_load_into(const Device *d, const char *path, const char *adapter, const char *quant, const LlamaConfig *c,
                     Llama *m, int B, int T, int forward_only, Err *e);

/* params_init through a host view: the same weights on every device. */
void device_params_init(Llama *m, uint64_t seed);

#endif
