/*
 * sched.c: linear warmup + cosine decay to min_frac * lr (Touvron et al.
 * 2023, section 2.2: "cosine learning rate schedule, with warmup of 2000
 * steps, and decay final learning rate down to 10% of the peak").
 */
#include "sched.h"

#include <math.h>

int sched_init(Sched *s, double lr, long warmup, long total, double min_frac,
               double max_warmup_frac, Err *e) {
    if (!(lr > 0) || !isfinite(lr)) return err_set(e, "--lr: must be positive, got %g", lr);
    if (total < 1) return err_set(e, "--steps: must be at least 1, got %ld", total);
    if (warmup < 0) return err_set(e, "--warmup: must be >= 0, got %ld", warmup);
    if (!(min_frac >= 0 && min_frac <= 1))
        return err_set(e, "--lr-min-frac: must be in [0, 1], got %g", min_frac);
    if (!(max_warmup_frac >= 0 && max_warmup_frac <= 1))
        return err_set(e, "--warmup-frac: must be in [0, 1], got %g", max_warmup_frac);
    long cap = (long)floor(max_warmup_frac * (double)total);
    s->lr = lr;
    s->min_frac = min_frac;
    s->total = total;
    s->warmup = warmup < cap ? warmup : cap;
    return 0;
}

double sched_lr(const Sched *s, long step) {
    if (step < s->warmup) return s->lr * (double)(step + 1) / (double)s->warmup;
    double span = (double)(s->total - s->warmup);
    double p = (double)(step - s->warmup) / (span < 1 ? 1 : span);
    if (p > 1) p = 1;
    double lo = s->min_frac * s->lr;
    return lo + (s->lr - lo) * 0.5 * (1.0 + cos(M_PI * p));
}
