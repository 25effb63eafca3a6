/*
 * pp.c: pipeline schedules, the stage split and the schedule simulation
 * (pp.h).
 */
#include "pp.h"

#include <stdlib.h>
#include <string.h>

int pp_schedule_parse(const char *name, int *kind, Err *e) {
    if (strcmp(name, "gpipe") == 0) *kind = PP_GPIPE;
    else if (strcmp(name, "1f1b") == 0) *kind = PP_1F1B;
    else return err_set(e, "--pp-schedule: expected gpipe or 1f1b, got '%.40s'", name);
    return 0;
}

const char *pp_schedule_name(int kind) { return kind == PP_1F1B ? "1f1b" : "gpipe"; }

int pp_schedule(int kind, int P, int s, int M, PpOp *ops) {
    LC_ASSERT(P >= 1 && s >= 0 && s < P && M >= 1);
    int n = 0, f = 0, b = 0;
    int warm = kind == PP_1F1B ? P - 1 - s : M; /* forwards before the first backward */
    if (warm > M) warm = M;
    while (f < warm) ops[n++] = (PpOp){'F', f++};
    while (f < M) { /* steady state: one forward, one backward */
        ops[n++] = (PpOp){'F', f++};
        ops[n++] = (PpOp){'B', b++};
    }
    while (b < M) ops[n++] = (PpOp){'B', b++};
    LC_ASSERT(n == 2 * M);
    return n;
}

int pp_max_inflight(const PpOp *ops, int n) {
    int live = 0, most = 0;
    for (int i = 0; i < n; i++) {
        live += ops[i].kind == 'F' ? 1 : -1;
        if (live > most) most = live;
    }
    return most;
}

// ----------------------------------------------------------------------------
// the split

static double layer_flops(const LlamaConfig *c, int T) {
    double D = c->dim, HS = config_head_size(c), Q = c->n_heads * HS, KVD = c->n_kv_heads * HS, F = c->hidden;
    double w = 2 * D + D * Q + 2 * D * KVD + Q * D + 3 * D * F;
    return 6 * w + 12.0 * c->n_heads * HS * T;
}

static double head_flops(const LlamaConfig *c) { return 6.0 * c->vocab * c->dim + 6.0 * c->dim; }

double pp_stage_flops(const LlamaConfig *c, int T, int P, const int *l0, int s) {
    return (l0[s + 1] - l0[s]) * layer_flops(c, T) + (s == P - 1 ? head_flops(c) : 0);
}

int pp_split(const LlamaConfig *c, int T, int P, const char *layers, int *l0, Err *e) {
    int L = c->n_layers;
    if (P < 1) return err_set(e, "--pp: must be at least 1, got %d", P);
    if (P > L) return err_set(e, "--pp: %d stages for a model of %d layers (each stage needs a layer)", P, L);
    if (layers && *layers) {
        const char *s = layers;
        int k = 0, sum = 0;
        l0[0] = 0;
        while (*s) {
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || v < 1 || v > L || (*end && *end != ','))
                return err_set(e, "--pp-layers: expected a count of layers (at least 1) per stage, e.g. 3,1; got "
                                  "'%.40s'", layers);
            if (k == P)
                return err_set(e, "--pp-layers: '%.40s' names more than the %d stages of --pp", layers, P);
            sum += (int)v;
            l0[++k] = sum;
            s = *end ? end + 1 : end;
        }
        if (k != P) return err_set(e, "--pp-layers: '%.40s' names %d stages, --pp has %d", layers, k, P);
        if (sum != L) return err_set(e, "--pp-layers: '%.40s' adds up to %d layers, the model has %d", layers, sum, L);
        return 0;
    }
    /* best[s][l]: the smallest largest cost of stages 0..s holding layers
     * [0, l); the head goes with the last stage */
    double lf = layer_flops(c, T), hf = head_flops(c);
    double *best = xmalloc((size_t)P * (L + 1) * sizeof *best);
    int *cut = xmalloc((size_t)P * (L + 1) * sizeof *cut);
    for (int l = 0; l <= L; l++) {
        best[l] = l >= 1 ? l * lf + (P == 1 ? hf : 0) : 1e300;
        cut[l] = 0;
    }
    for (int s = 1; s < P; s++)
        for (int l = 0; l <= L; l++) {
            double b = 1e300;
            int bj = -1;
            for (int j = s; j < l; j++) { /* stage s holds [j, l) */
                double cost = (l - j) * lf + (s == P - 1 ? hf : 0);
                double v = best[(size_t)(s - 1) * (L + 1) + j];
                if (cost > v) v = cost;
                if (v < b - 1e-9 * b) b = v, bj = j;
            }
            best[(size_t)s * (L + 1) + l] = b;
            cut[(size_t)s * (L + 1) + l] = bj;
        }
    l0[P] = L;
    for (int s = P - 1; s >= 1; s--) l0[s] = cut[(size_t)s * (L + 1) + l0[s + 1]];
    l0[0] = 0;
    free(best);
    free(cut);
    for (int s = 0; s < P; s++) LC_ASSERT(l0[s] < l0[s + 1]);
    return 0;
}

// ----------------------------------------------------------------------------
// the simulation

double pp_simulate(int kind, int P, int M, const double *tf, const double *tb, double *idle) {
    PpOp *ops = xmalloc((size_t)P * 2 * M * sizeof *ops);
    double *fdone = xmalloc((size_t)P * M * sizeof(double)), *bdone = xmalloc((size_t)P * M * sizeof(double));
    double *free_at = xcalloc((size_t)P, sizeof(double)), *busy = xcalloc((size_t)P, sizeof(double));
    int *next = xcalloc((size_t)P, sizeof(int));
    for (int s = 0; s < P; s++) pp_schedule(kind, P, s, M, ops + (size_t)s * 2 * M);
    for (size_t i = 0; i < (size_t)P * M; i++) fdone[i] = bdone[i] = -1;
    int left = 2 * M * P;
    while (left) {
        int moved = 0;
        for (int s = 0; s < P; s++) {
            while (next[s] < 2 * M) {
                PpOp op = ops[(size_t)s * 2 * M + next[s]];
                double ready = 0;
                if (op.kind == 'F' && s > 0) ready = fdone[(size_t)(s - 1) * M + op.mb];
                if (op.kind == 'B' && s < P - 1) ready = bdone[(size_t)(s + 1) * M + op.mb];
                if (ready < 0) break; /* its input has not been made yet */
                double t0 = ready > free_at[s] ? ready : free_at[s], d = op.kind == 'F' ? tf[s] : tb[s];
                free_at[s] = t0 + d;
                busy[s] += d;
                (op.kind == 'F' ? fdone : bdone)[(size_t)s * M + op.mb] = t0 + d;
                next[s]++;
                left--;
                moved = 1;
            }
        }
        LC_ASSERT(moved); /* a schedule that deadlocks is a bug */
    }
    double span = 0;
    for (int s = 0; s < P; s++)
        if (free_at[s] > span) span = free_at[s];
    for (int s = 0; s < P; s++) idle[s] = span > 0 ? (span - busy[s]) / span : 0;
    free(ops); free(fdone); free(bdone); free(free_at); free(busy); free(next);
    return span;
}
