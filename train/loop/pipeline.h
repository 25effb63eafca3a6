/*
 * pipeline.h: pipeline parallelism in the training loop (--pp P; DESIGN.md,
 * "Distribution"; the schedules are dist/pp.h's).
 *
 * Rank r is stage r / DP, replica r % DP. Stage s holds layers
 * [l0[s], l0[s+1]) (the first also the embedding, the last the final norm
 * and the fused LM head + loss) and trains only the parameters of its
 * layers: its part [own_lo, own_hi) of the flat parameter buffer (with
 * tied embeddings the first stage owns the embedding, the last holds a
 * copy: it sends its gradient to the first and gets the new weights after
 * each step). Activations travel forward and their gradients backward
 * between neighbouring stages of the same replica with non-blocking
 * point-to-point messages; each micro-batch in flight has its own set of
 * the stage's activations (llama_stage_bind). Every rank still draws the
 * whole global batch, so a checkpoint resumes on any P and DP.
 *
 * The pipeline is a strategy the training loop uses, not a second owner of
 * it: the loop lends it what it needs through a PipeCtx (its model, its
 * trained buffer and gradients, the layer map, its micro-batches and the
 * --pp-* flags) and calls pipe_*; nothing here knows the Trainer.
 */
#ifndef LLAMAC_TRAIN_PIPELINE_H
#define LLAMAC_TRAIN_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "../../model/llama.h"

/* What the training loop lends the pipeline (copied by pipe_open; what the
 * pointers point to stays the caller's and must outlive the Pipe). */
typedef struct PipeCtx {
    Llama *m;                   /* the trained model: B, T, backend, activations */
    const LlamaConfig *c;       /* its config (the split weighs layers by it) */
    float *params, *grads;      /* the trained buffer and its gradients (size floats each: the
                                 * model's, or with LoRA the adapters') */
    size_t size;
    const size_t *bucket;       /* (L + 1) layer l's part of the buffer is [bucket[l], bucket[l+1]) */
    long k0, k1;                /* this replica's micro-batches of each step */
    long seed;                  /* --seed: the LoRA dropout mask of (step, micro-batch) */
    long timeout;               /* --pp-timeout: seconds a stage waits for a message */
    const char *schedule;       /* --pp-schedule */
    const char *layers;         /* --pp-layers, or NULL: split by cost */
    const char *timeline;       /* --pp-timeline FILE, or NULL */
} PipeCtx;

typedef struct Pipe Pipe;

/* Split the layers (cx->layers or by cost) over dist_grid()'s stages, set
 * this rank's layers, allocate the activation sets of the schedule's most
 * micro-batches in flight. Errors: the split's, the schedule name's (*out
 * NULL then). Release with pipe_close. */
int pipe_open(Pipe **out, const PipeCtx *cx, Err *e);
void pipe_close(Pipe *p); /* NULL: nothing */

/* The start-up line: the grid, the schedule and each stage's layers with
 * its share of the FLOPs. */
void pipe_banner(const Pipe *p);

/* The range [lo, hi) of the trained buffer that stage s owns (s's layers;
 * 0.. for the first, ..size for the last). This rank's stage is
 * dist_grid()->stage. */
void pipe_stage_range(const Pipe *p, int s, size_t *lo, size_t *hi);

/* The loss of the last stage: run m's layers [l0, L) and the head on
 * micro-batch k (already set in m), return its loss and, when training,
 * leave the gradient of the last residual in m->dres (llama_head_backward).
 * NAN with e on an error. */
typedef double (*PipeHead)(void *ud, Llama *m, int l0, long k, Err *e);

/* One step's forwards and backwards over this replica's micro-batches
 * [cx->k0, cx->k1) of tk/tg/ps (accum blocks of B*T), on the schedule,
 * accumulating this stage's gradients (the tied embedding's summed into the
 * first stage). Returns the summed loss of the last stage (0 on the
 * others). grad_scale: 1 / the step's trained tokens; head NULL: the fused
 * cross-entropy head. The first step a Pipe runs warms caches and
 * allocators: pipe_report leaves it out. */
double pipe_step(Pipe *p, const int32_t *tk, const int32_t *tg, const int32_t *ps, float grad_scale, long step,
                 PipeHead head, void *hud, Err *e);

/* Forwards only, of micro-batches [k0, k1) of tk/tg/ps through the stages
 * on model mm (cx->m, or a frozen copy of it), head on the last stage (the
 * stage's layers and the head). Collective over this replica's stages.
 * Returns 0, or -1 with e. */
int pipe_forward(Pipe *p, Llama *mm, const int32_t *tk, const int32_t *tg, const int32_t *ps, long k0, long k1,
                 PipeHead head, void *hud, Err *e);

/* The world rank of the first replica's last stage (whose results a
 * broadcast spreads). */
int pipe_last_rank(const Pipe *p);

/* Give back the memory of the weights this stage never reads (the other
 * stages' layers; full training on the CPU: a frozen LoRA base stays
 * whole). Before the first step, after any resume. */
void pipe_release(Pipe *p);

/* After the optimizer step: the tied embedding from the first stage to the
 * last. */
void pipe_tie_weights(Pipe *p);

/* Every stage's trained parameters onto rank 0 (which writes outputs and
 * samples). Collective. */
void pipe_gather(Pipe *p);

/* Rank 0 prints each stage's measured idle fraction against the bubble
 * (P-1)/(M+P-1) and the schedule simulated with the stage's measured
 * forward and backward times, and the activation memory of each stage; with
 * cx->timeline it writes the last step's ops per stage as JSON.
 * Collective. */
void pipe_report(Pipe *p);

#endif
