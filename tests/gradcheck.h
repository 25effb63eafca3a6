/*
 * gradcheck.h: finite-difference gradient checks, accumulating in double.
 * A check perturbs sampled coordinates of a float input by +-h, evaluates a
 * scalar function f (a random projection of an op's outputs summed in
 * double, or the model's loss) and compares the central difference with the
 * analytic gradient:  |num - ana| <= rtol * max(|num|, |ana|) + atol * gmax,
 * gmax = the largest analytic gradient of that tensor.
 */
#ifndef LLAMAC_TESTS_GRADCHECK_H
#define LLAMAC_TESTS_GRADCHECK_H

#include <stddef.h>

#include "../model/base.h"

typedef double (*GcFn)(void *ud);

typedef struct GcOpts {
    int nsample;   /* coordinates to check (all when n <= nsample) */
    float h;       /* step */
    double rtol, atol;
} GcOpts;

/* Returns the number of coordinates out of tolerance (0 = pass) and reports
 * them through EXPECT; the worst relative error goes to *worst if not NULL. */
int gradcheck(const char *what, GcFn f, void *ud, float *x, const float *ana, size_t n,
              const GcOpts *o, Rng *r, double *worst);

/* sum_i r[i] * out[i] in double */
double gc_project(const float *out, const float *r, size_t n);

/* Fill x with n normal(0, std) values. */
void gc_randn(Rng *r, float *x, size_t n, float std);

#endif
