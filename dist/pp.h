/*
 * pp.h: pipeline parallelism's arithmetic (DESIGN.md, "Distribution"):
 * which layers each stage holds, the order in which a stage runs the
 * forwards and backwards of a step's micro-batches (GPipe, 1F1B), how many
 * micro-batches it holds at once, and a simulation of a schedule that gives
 * each stage's idle time (the bubble) from the durations of its work.
 * Pure functions: no MPI, no model; train/loop/pipeline.c runs the schedules.
 *
 * A step's M micro-batches pass stages 0..P-1 forward and P-1..0 backward.
 * GPipe runs all M forwards, then all M backwards: a stage holds the
 * activations of all M. 1F1B (PipeDream-flush, Megatron's default) runs
 * P-1-s forwards first on stage s, then alternates one forward and one
 * backward, then drains the backwards: at most P-s micro-batches in flight.
 * Both leave each stage idle (P-1)/(M+P-1) of the step when the stages cost
 * the same; 1F1B's gain is memory. Interleaved 1F1B (virtual stages) is not
 * implemented.
 */
#ifndef LLAMAC_DIST_PP_H
#define LLAMAC_DIST_PP_H

#include "../model/base.h"
#include "../model/config.h"

enum { PP_GPIPE = 0, PP_1F1B = 1 };

/* One unit of a stage's work: the forward ('F') or backward ('B') of
 * micro-batch mb. */
typedef struct PpOp {
    char kind;
    int mb;
} PpOp;

/* "gpipe" or "1f1b" into *kind; else -1 with e naming the flag. */
int pp_schedule_parse(const char *name, int *kind, Err *e);
const char *pp_schedule_name(int kind);

/* Stage s's order of the 2M ops of a step into ops[0..2M) (backwards in
 * micro-batch order on every stage). Returns 2M. */
int pp_schedule(int kind, int P, int s, int M, PpOp *ops);

/* The most micro-batches held at once (forward run, backward not yet). */
int pp_max_inflight(const PpOp *ops, int n);

/* Layers of each stage: stage s holds [l0[s], l0[s+1]), l0 has P + 1
 * entries. layers NULL or "": balanced by training FLOPs (a layer's 6x its
 * weights plus its attention; the last stage also the LM head), the
 * largest stage as small as it can be. layers "3,1": that many per stage.
 * Errors: more stages than layers, a split that does not add up to the
 * model's layers or has an empty stage, a malformed list. */
int pp_split(const LlamaConfig *c, int T, int P, const char *layers, int *l0, Err *e);

/* The training FLOPs per token of stage s's part (for the split and its
 * start-up line). */
double pp_stage_flops(const LlamaConfig *c, int T, int P, const int *l0, int s);

/* Run the schedule on a model of the stages: stage s's forward takes
 * tf[s], its backward tb[s], messages are free, every op starts as soon as
 * its stage is free and its input has arrived. idle[s] gets the fraction of
 * the step (first start to last end over all stages) stage s spends
 * waiting; returns the step's length. */
double pp_simulate(int kind, int P, int M, const double *tf, const double *tb, double *idle);

/* The bubble of equal stages: (P - 1) / (M + P - 1). */
static inline double pp_bubble(int P, int M) { return (P - 1.0) / (M + P - 1.0); }

#endif
