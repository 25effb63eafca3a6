/*
 * gradcheck.c: central differences in double around float32 inputs.
 */
#include "gradcheck.h"

#include <math.h>
#include <string.h>

#include "test.h"

double gc_project(const float *out, const float *r, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

void gc_randn(Rng *r, float *x, size_t n, float std) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(r);
}

int gradcheck(const char *what, GcFn f, void *ud, float *x, const float *ana, size_t n,
              const GcOpts *o, Rng *r, double *worst) {
    double gmax = 0.0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(ana[i]));
    size_t k = n <= (size_t)o->nsample ? n : (size_t)o->nsample;
    int bad = 0;
    double w = 0.0;
    for (size_t s = 0; s < k; s++) {
        size_t i = n <= (size_t)o->nsample ? s : (size_t)(rng_u64(r) % n);
        float x0 = x[i];
        /* the step actually taken, after float rounding */
        float xp = x0 + o->h, xm = x0 - o->h;
        x[i] = xp;
        double fp = f(ud);
        x[i] = xm;
        double fm = f(ud);
        x[i] = x0;
        double num = (fp - fm) / ((double)xp - (double)xm);
        double err = fabs(num - ana[i]);
        double tol = o->rtol * fmax(fabs(num), fabs(ana[i])) + o->atol * gmax;
        double rel = err / (fmax(fabs(num), fabs(ana[i])) + o->atol * gmax + 1e-30);
        if (rel > w) w = rel;
        if (!(err <= tol)) {
            if (bad < 3)
                test_fail(__FILE__, __LINE__, "%s[%zu]: numeric %.7g vs analytic %.7g", what, i, num, (double)ana[i]);
            bad++;
        }
    }
    if (worst) *worst = w;
    return bad;
}
