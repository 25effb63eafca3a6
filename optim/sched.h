/*
 * sched.h: the learning-rate schedule of the Llama papers: linear warmup to
 * the peak, then cosine decay to a floor (10% of the peak).
 */
#ifndef LLAMAC_OPTIM_SCHED_H
#define LLAMAC_OPTIM_SCHED_H

#include "../model/base.h"

typedef struct Sched {
    double lr;        /* peak learning rate */
    double min_frac;  /* floor as a fraction of the peak (0.1) */
    long warmup;      /* warmup steps actually used */
    long total;       /* total optimizer steps */
} Sched;

/* Default cap on the fraction of a run that warmup may take: the 2000-step
 * default warmup never eats a short run (a 1000-step run warms up for 100). */
#define SCHED_MAX_WARMUP_FRAC 0.1

/* warmup is capped at floor(max_warmup_frac * total) when that is smaller;
 * s->warmup holds the value in force. Returns 0 or -1 (bad lr, total < 1,
 * warmup < 0, min_frac or max_warmup_frac outside [0, 1]). */
int sched_init(Sched *s, double lr, long warmup, long total, double min_frac,
               double max_warmup_frac, Err *e);

/* Learning rate for 0-based optimizer step `step`:
 *   step < warmup : lr * (step + 1) / warmup
 *   otherwise     : min + (lr - min) * (1 + cos(pi * p)) / 2,
 *                   p = (step - warmup) / max(1, total - warmup), clamped to 1. */
double sched_lr(const Sched *s, long step);

#endif
