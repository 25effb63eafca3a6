/*
 * ops_cpu_kd.h: the per-row arithmetic of the CPU's fused distillation LM
 * head (ops.h lmhead_kd; ops_cpu_kd.c). ops_cpu.c owns the chunk loop and
 * its GEMMs (student logits, teacher logits, dx, dw) and calls kd_row on
 * each row of a chunk from its OpenMP loop; this file needs nothing of
 * ops_cpu.c, so the two stay one-way.
 */
#ifndef LLAMAC_MODEL_OPS_CPU_KD_H
#define LLAMAC_MODEL_OPS_CPU_KD_H

#include "ops.h"

/* What every row of one call shares, from the KdSpec (kd_prepare). */
typedef struct KdRowArgs {
    int div;          /* the KdDiv computed: KD_JSD at beta 0 / 1 is KD_FKL / KD_RKL */
    float it;         /* 1 / tau */
    double beta;      /* KD_JSD's teacher weight in the mixture */
    double lb, l1b;   /* KD_JSD: log(beta), log(1 - beta) */
    double ce_w, kdf; /* the weights of row_ce and row_kd in the loss: ce_w, kd_w * (tau^2 or 1) */
    float scale;      /* dlogits are scale * d loss / d logits */
} KdRowArgs;

/* Check the spec (asserts: it was validated by the caller's flags) and
 * fill a. */
void kd_prepare(KdRowArgs *a, const KdSpec *kd, float scale);

/* One row that is not ignored: l (V) the student's logits; a dense
 * teacher (ids NULL): t (V) its logits; a sparse one: ids / lp (K) its
 * top-K ids and log-probabilities at tau, and t K floats of workspace.
 * *ce = -log softmax(l)[tgt], *kd = the divergence, both in double. With
 * grad, l = the row's dlogits (scale * d(ce_w * ce + kdf * kd) / d l) and t
 * is clobbered; without, l is left as it was. */
void kd_row(const KdRowArgs *a, float *l, float *t, const int *ids, const float *lp, int K, int tgt, int V,
            int grad, double *ce, double *kd);

#endif
