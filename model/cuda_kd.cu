/*
 * cuda_kd.cu: the rows of the fused distillation LM head on the GPU (ops.h
 * lmhead_kd; the CUDA twin of ops_cpu_kd.c, the same formulas in the same
 * order of passes). ops_cuda.cu owns the chunk loop and the GEMMs; here one
 * block of KD_TPB threads per row of a chunk reads the float32 logits of
 * the student (and of a dense teacher), writes the row's cross-entropy,
 * divergence and weighted total (float32) and its bf16 dlogits.
 *
 * Reductions over a row: max and the exp sums in float32 (block_max,
 * block_sum), the divergence and sum_b G_b in double through a fixed tree
 * (so the same inputs give the same bits); buckets of a sparse teacher are
 * summed in double, their exps and logs in double as on the CPU.
 * Deterministic: no atomics. UNTESTED ON HARDWARE: tests/test_gpu.c's
 * gpu_kd compares it with the CPU op.
 */
#include <cuda_runtime.h>
#include <math.h>

extern "C" {
#include "base.h"
#include "ops.h"
}
#include "cuda_impl.cuh"

#define KD_TPB 1024
#define KD_TAIL_FLOOR 1e-30 /* ops_cpu_kd.c's floor of the tail masses inside logs */

/* one bucket: the divergence's term *d and G = dD / d lqs (ops_cpu_kd.c) */
static __device__ void kd_bucket(int div, double lqt, double lqs, double beta, double *d, double *g) {
    double qt = exp(lqt), qs = exp(lqs);
    if (div == KD_FKL) {
        *d = qt > 0.0 ? qt * (lqt - lqs) : 0.0;
        *g = -qt;
    } else if (div == KD_RKL) {
        *d = qs > 0.0 ? qs * (lqs - lqt) : 0.0;
        *g = qs > 0.0 ? qs * (lqs - lqt + 1.0) : 0.0;
    } else {
        double a = log(beta) + lqt, b = log1p(-beta) + lqs, m = a > b ? a : b;
        double lm = m == -INFINITY ? m : m + log1p(exp(-fabs(a - b)));
        double gs = qs > 0.0 ? (1.0 - beta) * qs * (lqs - lm) : 0.0;
        *d = (qt > 0.0 ? beta * qt * (lqt - lm) : 0.0) + gs;
        *g = gs;
    }
}

/* the block's total of v in double, a fixed tree; red KD_TPB doubles */
static __device__ double tree_sum(double v, double *red) {
    __syncthreads();
    red[threadIdx.x] = v;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    return red[0];
}

__global__ void __launch_bounds__(KD_TPB) k_kd(float *tot, float *rce, float *rkd, bf16 *dl, const float *logits,
                                               const float *tlogits, const int *ids, const float *lp, int K,
                                               const int *tgt, int V, int div, float it, double beta, double ce_w,
                                               double kdf, float scale, int grad) {
    __shared__ float red[32];
    __shared__ double dred[KD_TPB];
    int r = blockIdx.x, T = tgt[r];
    const float *l = logits + (size_t)r * V;
    bf16 *d = dl + (size_t)r * V;
    if (T == LC_IGNORE) {
        if (threadIdx.x == 0) tot[r] = rce[r] = rkd[r] = 0.0f;
        if (grad)
            for (int v = threadIdx.x; v < V; v += blockDim.x) d[v] = __float2bfloat16(0.0f);
        return;
    }
    float ms = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) ms = fmaxf(ms, l[v]);
    ms = block_max(ms, red);
    double zs = 0.0, z1 = 0.0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        zs += expf((l[v] - ms) * it);
        z1 += expf(l[v] - ms);
    }
    zs = tree_sum(zs, dred);
    z1 = tree_sum(z1, dred);
    double lzs = log(zs), lz1 = log(z1), dsum = 0.0, gsum = 0.0, ct = 0.0;
    float cce = (float)(scale * ce_w), ckd = (float)(scale * kdf * it);
    if (tlogits) { /* dense: every token a bucket */
        const float *t = tlogits + (size_t)r * V;
        float mt = -INFINITY;
        for (int v = threadIdx.x; v < V; v += blockDim.x) mt = fmaxf(mt, t[v]);
        mt = block_max(mt, red);
        double zt = 0.0;
        for (int v = threadIdx.x; v < V; v += blockDim.x) zt += expf((t[v] - mt) * it);
        double lzt = log(tree_sum(zt, dred));
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            double dd, g;
            kd_bucket(div, ((double)t[v] - mt) * it - lzt, ((double)l[v] - ms) * it - lzs, beta, &dd, &g);
            dsum += dd, gsum += g;
        }
        dsum = tree_sum(dsum, dred);
        gsum = tree_sum(gsum, dred);
        if (grad)
            for (int v = threadIdx.x; v < V; v += blockDim.x) {
                double dd, g, lqs = ((double)l[v] - ms) * it - lzs;
                kd_bucket(div, ((double)t[v] - mt) * it - lzt, lqs, beta, &dd, &g);
                float p1 = expf(l[v] - ms - (float)lz1), qs = (float)exp(lqs);
                float k = (float)g - qs * (float)gsum;
                d[v] = __float2bfloat16(cce * (p1 - (v == T ? 1.0f : 0.0f)) + ckd * k);
            }
    } else { /* sparse: the K ids and, K < V, the tail bucket */
        const int *id = ids + (size_t)r * K;
        const float *lq = lp + (size_t)r * K;
        double mt = 0.0, zk = 0.0;
        for (int b = threadIdx.x; b < K; b += blockDim.x) {
            double dd, g;
            float s = l[id[b]];
            kd_bucket(div, lq[b], ((double)s - ms) * it - lzs, beta, &dd, &g);
            dsum += dd, gsum += g, mt += exp((double)lq[b]);
            zk += expf((s - ms) * it); /* the same float terms as zs's: zs - zk is the tail's sum */
        }
        dsum = tree_sum(dsum, dred);
        gsum = tree_sum(gsum, dred);
        mt = tree_sum(mt, dred);
        zk = tree_sum(zk, dred);
        if (K < V) {
            double rt = 1.0 - mt > 0.0 ? 1.0 - mt : 0.0, rs = (zs - zk) / zs, dd, g;
            kd_bucket(div, log(rt > KD_TAIL_FLOOR ? rt : KD_TAIL_FLOOR), log(rs > KD_TAIL_FLOOR ? rs : KD_TAIL_FLOOR),
                      beta, &dd, &g);
            dsum += dd, gsum += g;
            ct = rs > KD_TAIL_FLOOR ? g / rs : 0.0;
        }
        if (grad) {
            for (int v = threadIdx.x; v < V; v += blockDim.x) { /* every entry as a tail one */
                float p1 = expf(l[v] - ms - (float)lz1), qs = expf((l[v] - ms) * it - (float)lzs);
                d[v] = __float2bfloat16(cce * (p1 - (v == T ? 1.0f : 0.0f)) + ckd * qs * (float)(ct - gsum));
            }
            __syncthreads();
            for (int b = threadIdx.x; b < K; b += blockDim.x) { /* then the K entries, whole */
                int v = id[b];
                double dd, g, lqs = ((double)l[v] - ms) * it - lzs;
                kd_bucket(div, lq[b], lqs, beta, &dd, &g);
                float p1 = expf(l[v] - ms - (float)lz1), qs = (float)exp(lqs);
                d[v] = __float2bfloat16(cce * (p1 - (v == T ? 1.0f : 0.0f)) + ckd * ((float)g - qs * (float)gsum));
            }
        }
    }
    if (threadIdx.x == 0) {
        double ce = lz1 - ((double)l[T] - ms);
        rce[r] = (float)ce;
        rkd[r] = (float)dsum;
        tot[r] = (float)(ce_w * ce + kdf * dsum);
    }
}

void kd_rows_launch(cudaStream_t s, float *tot, float *rce, float *rkd, bf16 *dl, const float *logits,
                               const float *tlogits, const int *ids, const float *lp, int K, const int *tgt, int rows,
                               int V, const KdSpec *kd, float scale, int grad) {
    int div = kd->div;
    if (div == KD_JSD && kd->beta == 0.0f) div = KD_FKL; /* TRL's limits, exactly (ops.h) */
    if (div == KD_JSD && kd->beta == 1.0f) div = KD_RKL;
    double kdf = (double)kd->kd_w * (kd->t2 ? (double)kd->tau * kd->tau : 1.0);
    k_kd<<<rows, KD_TPB, 0, s>>>(tot, rce, rkd, dl, logits, tlogits, ids, lp, K, tgt, V, div, 1.0f / kd->tau,
                                 (double)kd->beta, (double)kd->ce_w, kdf, scale, grad);
    CK(cudaGetLastError());
}
