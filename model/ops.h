/*
 * ops.h: the backend op table, the single source of truth for what a backend
 * must provide. The model (llama.c) is written once as calls into an Ops
 * table; the CPU backend (ops_cpu.c) fills it with float32 code over CBLAS
 * and OpenMP, and a CUDA backend fills the same table with bf16 kernels.
 *
 * Conventions for every op:
 *   - the first argument is the backend context (NULL on the CPU);
 *   - pointers are backend memory (host on the CPU); activations are the
 *     backend's activation dtype (float32 on the CPU), parameters, gradients
 *     and AdamW moments are float32 everywhere;
 *   - shapes are plain ints, row-major, contiguous; N = B*T rows;
 *   - backward ops `+=` into parameter gradients and `=` into activation
 *     gradients, except where the contract says `+=` (the residual stream);
 *     the caller zeroes parameter gradients once per optimizer step.
 *   - a backend may store activations in a narrower dtype inside the
 *     float-sized slots the model gives it: the CUDA backend keeps every
 *     (N, ...) activation and activation gradient in bf16 (the first half
 *     of the slot's bytes), while the per-row statistics rstd, lse and
 *     row_loss, the RoPE tables, parameters, gradients and AdamW moments
 *     stay float32. So only the backend reads activations: hosts use
 *     download_act. add works on activations; scale and sumsq on float32
 *     (gradients). Weights passed to matmul/lmhead_ce must lie in a buffer
 *     given to bind_params when the backend has that hook.
 *   - pos (B, T) is each token's position inside its document. It drives both
 *     RoPE (positions restart per document) and the document mask: query t
 *     may attend key j iff t - pos[t] <= j <= t. Without documents pos = t.
 *     A position p > 0 that does not continue the token before it starts a
 *     branch: a sibling continuation of its document's first p tokens (a
 *     prompt laid out once, then each of its completions after it, the
 *     prefix-shared packing of docs/rl.md). A branch token sees its
 *     document's first p tokens and its own branch up to itself, not the
 *     branches before it. attn_spans gives each query's keys: the attention
 *     ops take those spans.
 */
#ifndef LLAMAC_MODEL_OPS_H
#define LLAMAC_MODEL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "base.h" /* LC_IGNORE */
#include "quant.h"

typedef enum {
    OP_EMBED, OP_RMSNORM, OP_MATMUL, OP_ROPE, OP_ATTN, OP_ATTN_DECODE, OP_SWIGLU, OP_LMHEAD_CE,
    OP_ADD, OP_SUMSQ, OP_SCALE, OP_ADAMW, OP_LORA, OP_LMHEAD_ROWS, OP_MATMUL_ROWS, OP_ATTN_PAGED,
    OP_ROWS, OP_QMATMUL, OP_QEMBED, OP_QLMHEAD, OP_QMATMUL_ROWS, OP_LMHEAD_KD, OP_COUNT
} OpId;

/* Knowledge distillation (lmhead_kd; docs/distill.md): the divergence D
 * between the teacher's and the student's next-token distributions at
 * temperature tau, p_t = softmax(t / tau), p_s = softmax(s / tau):
 *   KD_FKL  KL(p_t || p_s)                      (forward; torchtune, Minitron)
 *   KD_RKL  KL(p_s || p_t)                      (reverse)
 *   KD_JSD  beta KL(p_t || m) + (1 - beta) KL(p_s || m),  m = beta p_t +
 *           (1 - beta) p_s: TRL's generalized_jsd_loss, whose beta 0 and 1
 *           are KD_FKL and KD_RKL exactly (not the mixture's limits). */
typedef enum { KD_FKL, KD_RKL, KD_JSD, KD_COUNT } KdDiv;
typedef struct KdSpec {
    int div;    /* KdDiv */
    float tau;  /* temperature > 0 of both distributions in D (the cross-entropy is at 1) */
    float beta; /* KD_JSD's teacher weight in [0, 1]; unused otherwise */
    float ce_w; /* weight of the cross-entropy on the targets */
    float kd_w; /* weight of D */
    int t2;     /* 1: D is multiplied by tau^2 in the loss (Hinton et al. 2015) */
} KdSpec;
/* "fkl", "rkl", "jsd" (the KdDiv order), for flags and logs */
extern const char *const kd_div_names[KD_COUNT];

/* The keys of each query of one batch row from its positions (the rule
 * above): query t sees [sp[3t], t] except the hole [sp[3t+1], sp[3t+2])
 * (empty, h0 == h1, outside branches). Returns -1, or the first column
 * whose position is inconsistent: negative, not 0 at a row's start, or a
 * branch from further than its document's first contiguous run reaches.
 * Document starts sp[3t] never decrease along t. */
static inline int attn_spans(const int *pos, int T, int *sp) {
    int d = 0, s = 0, trunk = 0; /* document start, branch start, end of the first run */
    for (int t = 0; t < T; t++) {
        int p = pos[t];
        if (p < 0 || (t == 0 && p != 0)) return t;
        if (p == 0) d = s = t, trunk = t + 1;
        else if (pos[t - 1] == p - 1) trunk += s == d && trunk == t;
        else if (p <= trunk - d) s = t;
        else return t;
        sp[3 * t] = d;
        sp[3 * t + 1] = s == d ? d : d + pos[s];
        sp[3 * t + 2] = s == d ? d : s;
    }
    return -1;
}

typedef struct Ops {
    const char *name;

    /* ---- memory: alloc returns zeroed memory or aborts */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p);
    void (*upload)(void *ctx, void *dst, const void *host_src, size_t bytes);
    void (*download)(void *ctx, void *host_dst, const void *src, size_t bytes);
    void (*zero)(void *ctx, void *p, size_t bytes);
    void (*sync)(void *ctx);

    /* Floats of scratch the attention and LM-head ops need for these shapes
     * (the model allocates it once at start-up). */
    size_t (*scratch_floats)(void *ctx, int B, int T, int H, int HS, int V, int D);

    /* out(N, D) = emb[tok[n]] */
    void (*embed_fwd)(void *ctx, float *out, const int *tok, const float *emb, int N, int D);
    /* demb(V, D) += scatter of dout(N, D) by tok; deterministic; demb NULL: nothing */
    void (*embed_bwd)(void *ctx, float *demb, const float *dout, const int *tok, int N, int D);

    /* out(N, D) = x * rstd * w, rstd(N) = 1/sqrt(mean(x^2) + eps) */
    void (*rmsnorm_fwd)(void *ctx, float *out, float *rstd, const float *x, const float *w,
                        int N, int D, float eps);
    /* dx(N, D) += (residual stream), dw(D) += (dw may be NULL: a frozen gain) */
    void (*rmsnorm_bwd)(void *ctx, float *dx, float *dw, const float *dout, const float *x,
                        const float *w, const float *rstd, int N, int D);

    /* out(N, Dout) = x(N, Din) w(Dout, Din)^T  (a torch.nn.Linear without bias) */
    void (*matmul_fwd)(void *ctx, float *out, const float *x, const float *w, int N, int Din, int Dout);
    /* dx(N, Din) = (or += if accum_dx) dout(N, Dout) w; dw(Dout, Din) += dout^T x.
     * dx or dw may be NULL to skip that product. */
    void (*matmul_bwd)(void *ctx, float *dx, float *dw, const float *dout, const float *x,
                       const float *w, int N, int Din, int Dout, int accum_dx);

    /* The LoRA side path of a linear (lora.h): with d = dropout(x), element
     * i of x kept iff lora_keep(seed, l, m, i, p) (kept values scaled by
     * 1/(1-p); p = 0: d = x, no hash),
     *   h(N, r) = d A^T,   y(N, Dout) += s * h B^T
     * x, y, h are activations; A (r, Din), B (Dout, r) float32 adapter
     * weights (in a bound buffer where the backend has bind_params). work
     * holds ops_lora_work_floats(N, Din, Dout, r, p) floats of scratch. */
    void (*lora_fwd)(void *ctx, float *y, float *h, const float *x, const float *A, const float *B,
                     float *work, int N, int Din, int Dout, int r, float s, float p, uint64_t seed,
                     int l, int m);
    /* From dy(N, Dout) and the forward's x, h (the mask is recomputed):
     * dB(Dout, r) += s * dy^T h;  dh = s * dy B;  dA(r, Din) += dh^T d;
     * dx(N, Din) += dropout'(dh A) (accumulates into the base linear's input
     * gradient). Any of dx, dA, dB may be NULL to skip it. */
    void (*lora_bwd)(void *ctx, float *dx, float *dA, float *dB, const float *dy, const float *x,
                     const float *h, const float *A, const float *B, float *work, int N, int Din,
                     int Dout, int r, float s, float p, uint64_t seed, int l, int m);

    /* In place on x(N, nh, HS): Hugging Face rotate_half RoPE, dimension i
     * paired with i + HS/2, angle pos[n] * inv_freq[i]; cos/sin tables are
     * (T, HS/2) indexed by pos. The backward applies the inverse rotation. */
    void (*rope_fwd)(void *ctx, float *x, const int *pos, const float *cos, const float *sin,
                     int N, int nh, int HS);
    void (*rope_bwd)(void *ctx, float *dx, const int *pos, const float *cos, const float *sin,
                     int N, int nh, int HS);

    /* Causal, grouped-query attention with the document mask of pos, given
     * as spans (B, T, 3): attn_spans of each batch row (the model makes
     * them once a batch, in llama_set_batch). q, out (B, T, H, HS); k, v
     * (B, T, KV, HS); lse (B, H, T) = the softmax log-sum-exp per query
     * row, all the backward keeps (O(T), not O(T^2)). Scale 1/sqrt(HS). */
    void (*attn_fwd)(void *ctx, float *out, float *lse, const float *q, const float *k,
                     const float *v, const int *spans, float *scratch, int B, int T, int H,
                     int KV, int HS);
    /* dq = ; dk, dv = (written, not accumulated) */
    void (*attn_bwd)(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                     const float *out, const float *lse, const float *q, const float *k,
                     const float *v, const int *spans, float *scratch, int B, int T, int H,
                     int KV, int HS);

    /* Generation with a KV cache: one query row q (H*HS) of a new token
     * attends to the S cached keys and values k, v (S, KV*HS), the last of
     * which is its own (so causal by construction); out (H*HS) =. Scratch
     * holds H*S floats. Inference only: no backward. Row r of k and v is at
     * float offset r*KV*HS (llama_decode writes rows through float pointer
     * arithmetic): a bf16 backend finds it at element 2*r*KV*HS. */
    void (*attn_decode)(void *ctx, float *out, const float *q, const float *k, const float *v,
                        float *scratch, int S, int H, int KV, int HS);

    /* ---- the sampling engine (engine.h): every op here computes each row
     * in one fixed order that depends on neither the number of rows N, nor
     * the row's place among them, nor the thread count, so that a
     * sequence's numbers do not depend on the batch it shares. */

    /* The engine's linear reads weights packed once in the backend's own
     * layout: rows_pack_floats floats (backend memory) hold w(Dout, Din)
     * after rows_pack (w float32 backend memory, e.g. a bound parameter
     * buffer). Repack after the weights change. */
    size_t (*rows_pack_floats)(void *ctx, int Din, int Dout);
    void (*rows_pack)(void *ctx, float *wp, const float *w, int Din, int Dout);
    /* out(N, Dout) = x(N, Din) w(Dout, Din)^T with add == 0; with add != 0,
     * out += add * (x w^T) (the product rounded to float first: LoRA's
     * side path). wp: w after rows_pack. Each output is summed over Din in
     * one order that does not depend on N (the CPU: one fused multiply-add
     * chain k = 0 .. Din-1); no split of Din. Inference only. */
    void (*matmul_rows)(void *ctx, float *out, const float *x, const float *wp, int N, int Din,
                        int Dout, float add);

    /* Paged causal attention: row n is the query q(n) (H*HS, after RoPE)
     * at position len[n] - 1 of the sequence whose page table is
     * ptab + slot[n] * maxp; it attends to that sequence's keys and values
     * at positions 0 .. len[n] - 1, found in the pools k, v (rows of KV*HS;
     * position p at row ptab[p / P] * P + p % P). out(N, H*HS) =. GQA:
     * query head h reads KV head h / (H / KV). Scale 1/sqrt(HS). Keys are
     * visited in position order in chunks of a fixed size (online softmax),
     * so a prompt's row gives the same result in a batched prefill as
     * decoded alone. ptab, slot, len: backend int arrays. Pools are
     * activations (float-sized slots; bf16 backends use the first half, as
     * attn_decode). */
    void (*attn_paged)(void *ctx, float *out, const float *q, const float *k, const float *v,
                       const int *ptab, const int *slot, const int *len, int N, int H, int KV,
                       int HS, int P, int maxp);

    /* Row copies of width W (activations): scatter dst[idx[n]] = src[n],
     * gather dst[n] = src[idx[n]], n < N; idx a backend int array. The
     * engine writes new K/V rows into the pools and picks the rows that
     * need logits. */
    void (*rows_scatter)(void *ctx, float *dst, const float *src, const int *idx, int N, int W);
    void (*rows_gather)(void *ctx, float *dst, const float *src, const int *idx, int N, int W);

    /* out(n) = silu(g) * u */
    void (*swiglu_fwd)(void *ctx, float *out, const float *g, const float *u, size_t n);
    /* dg, du = */
    void (*swiglu_bwd)(void *ctx, float *dg, float *du, const float *dout, const float *g,
                       const float *u, size_t n);

    /* LM head + cross-entropy, fused: logits = x(N, D) w(V, D)^T are made a
     * chunk of rows at a time in scratch, so the (N, V) logits never exist.
     * Returns the sum over rows with target != LC_IGNORE of
     * -log softmax(logits)[target], accumulated in double. If row_loss is
     * not NULL it gets each row's loss (0 for ignored rows). If dx is not
     * NULL: dx(N, D) = scale * dlogits w, and dw(V, D) += scale * dlogits^T x
     * (dw may be NULL), where dlogits = softmax - onehot(target), 0 for an
     * ignored row (the CPU makes no logits for those). scratch: at least
     * scratch_floats(ctx, B, T, ., ., V, D) floats with B * T >= N. */
    double (*lmhead_ce)(void *ctx, float *dx, float *dw, float *row_loss, const float *x,
                        const float *w, const int *targets, float *scratch, int N, int D, int V,
                        float scale);
    /* The LM head with a weight and statistics per row (DPO's sequence
     * log-probabilities, whose gradient weighs each token by its sequence's
     * d loss / d logp): as lmhead_ce, returning the same sum and row_loss;
     * row_mean (N, float32; may be NULL) = the mean of each row's V logits
     * (0 for ignored rows); if dx is not NULL: dx(N, D) = (row_scale[n] *
     * dlogits[n]) w and dw(V, D) += (row_scale * dlogits)^T x (dw may be
     * NULL), with row_scale (N) float32 backend memory. */
    double (*lmhead_rows)(void *ctx, float *dx, float *dw, float *row_loss, float *row_mean, const float *x,
                          const float *w, const int *targets, const float *row_scale, float *scratch, int N,
                          int D, int V);

    /* y(n) += x(n) */
    void (*add)(void *ctx, float *y, const float *x, size_t n);
    /* sum of squares in double (gradient norm) */
    double (*sumsq)(void *ctx, const float *x, size_t n);
    /* x(n) *= s */
    void (*scale)(void *ctx, float *x, float s, size_t n);
    /* AdamW (Loshchilov & Hutter; torch.optim.AdamW): g is multiplied by
     * gscale (clipping) first; p *= 1 - lr*wd; m, v moments; bias-corrected
     * step t >= 1. All float32, one pass. */
    void (*adamw)(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                  float b1, float b2, float eps, float wd, int t, float gscale);

    /* ---- quantised frozen weights (quant.h; DESIGN.md "Quantised
     * weights"): w is a QTensor (rows Dout, cols Din) whose data is backend
     * memory. Each op dequantises a tile of w's rows at a time into work
     * (qwork_floats(ctx, Din) floats of backend memory) and computes in
     * float32 as the float ops do, so the numbers are those of the float
     * ops on the dequantised matrix (qmatmul_rows: within rounding, below);
     * no float copy of w is ever whole. A
     * frozen weight has no gradient: only the input's. */
    size_t (*qwork_floats)(void *ctx, int Dmax);
    /* out(N, Dout) = x(N, Din) w^T */
    void (*qmatmul_fwd)(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N);
    /* dx(N, Din) = (or += if accum_dx) dout(N, Dout) w */
    void (*qmatmul_bwd)(void *ctx, float *dx, const float *dout, const QTensor *w, float *work, int N, int accum_dx);
    /* out(N, D) = row tok[n] of emb (V, D) */
    void (*qembed_fwd)(void *ctx, float *out, const int *tok, const QTensor *emb, float *work, int N);
    /* lmhead_rows with the head w (V, D) quantised and no dw: row_scale NULL
     * weighs every row's dlogits by scale (lmhead_ce), else by row_scale[n]
     * (lmhead_rows); the same returns, row_loss and row_mean. */
    double (*qlmhead)(void *ctx, float *dx, float *row_loss, float *row_mean, const float *x, const QTensor *w,
                      const int *targets, const float *row_scale, float scale, float *scratch, float *work, int N);
    /* matmul_rows on w as it is stored (no rows_pack): out(N, Dout) = (or
     * += add *, as matmul_rows) x(N, Din) w^T, each output the dot product
     * of x's row with w's dequantised row summed in one fixed order of the
     * backend's own (the engine's rule above: not N, not the row's place,
     * not the thread count; on the CPU the portable and AVX2 paths give the
     * same bits), so within float32 rounding of matmul_rows on the
     * dequantised matrix but not necessarily its bits (the CPU: eight lanes
     * of fused multiply-adds over the blocks' codes, each group's sum times
     * its scale, ops_cpu_qrows.c; CUDA: matmul_rows' kernel on bf16 tiles,
     * its bits). work: qwork_floats(ctx, Din). Inference only. */
    void (*qmatmul_rows)(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N, float add);

    /* ---- knowledge distillation: lmhead_ce's fused head with a teacher.
     * Floats of scratch lmhead_kd needs for calls of at most N rows and
     * vocabulary V (the student's chunk of logits and a dense teacher's). */
    size_t (*kd_scratch_floats)(void *ctx, int N, int V);
    /* The student's logits s = x(N, D) w(V, D)^T are made a chunk of rows at
     * a time in scratch (kd_scratch_floats), never (N, V) at once. The
     * teacher, per row, is either
     *   dense (tx not NULL): logits t = tx(N, Dt) tw(V, Dt)^T, chunk by
     *     chunk beside the student's (tw float32, or tq quantised with tw
     *     NULL: qlmhead's tiles, work = qwork_floats(ctx, Dt) floats); or
     *   sparse (tx NULL): tk_ids (N, K) int, distinct ids in [0, V), and
     *     tk_logp (N, K) float32 = the teacher's log-probabilities of those
     *     ids at temperature tau; the tail bucket holds the rest, r_t =
     *     max(0, 1 - sum exp(tk_logp)) and the student's r_s = 1 - sum of
     *     its probabilities at the K ids, so D is over K + 1 buckets
     *     (Megatron's ghost bucket; inside logs the tails are floored at
     *     1e-30); K == V: no tail bucket (D equals the dense one).
     * Rows with targets[n] == LC_IGNORE are skipped: row_ce = row_kd = 0,
     * no gradient. For the others (each may be NULL):
     *   row_ce(N) = -log softmax(s)[target] (temperature 1)
     *   row_kd(N) = D itself, not torchtune's logged H(p_t, p_s) (which adds
     *               the teacher's entropy; the same gradient)
     * Returns sum over rows of ce_w * row_ce + kd_w * f * row_kd, f = tau^2
     * if t2 else 1, accumulated in double. If dx is not NULL: dx(N, D) =
     * scale * dL/dx, and dw(V, D) += scale * dL/dw (dw may be NULL), L that
     * sum. The teacher gets no gradient. x, tx activations; w, tw float32
     * (bound where the backend binds); tk_ids, tk_logp, targets backend
     * memory. */
    double (*lmhead_kd)(void *ctx, float *dx, float *dw, float *row_ce, float *row_kd, const float *x,
                        const float *w, const float *tx, const float *tw, const QTensor *tq, const int *tk_ids,
                        const float *tk_logp, int K, const int *targets, const KdSpec *kd, float scale,
                        float *scratch, float *work, int N, int D, int Dt, int V);

    /* ---- optional hooks: NULL where the backend needs none (the CPU) */
    /* llama_init registers its parameter buffer (n floats from alloc); a
     * bf16 backend keeps a bf16 shadow of it for the GEMMs, refreshed by
     * adamw and after any upload/zero into the buffer. Freeing the buffer
     * unregisters it. */
    void (*bind_params)(void *ctx, float *params, size_t n);
    /* n activations at src (backend memory) to host float32 (NULL: the
     * activations are float32 and download does it). */
    void (*download_act)(void *ctx, float *host_dst, const float *src, size_t n);
    /* n host float32 values into activations at dst (backend memory; NULL:
     * the activations are float32 and upload does it): a gradient the host
     * computed for an activation (a reward model's d loss / d score). */
    void (*upload_act)(void *ctx, float *dst, const float *host_src, size_t n);
} Ops;

extern const Ops ops_cpu;
#ifdef LC_CUDA
extern const Ops ops_cuda;
#endif

/* Scratch floats of one lora_fwd/lora_bwd call: the (N, r) gradient of h,
 * the dropped input (N, Din) when p > 0, and per-chunk partial sums of dA
 * and dB (OPS_LORA_CHUNK rows each, a fixed split so that the sums do not
 * depend on the thread count), with room to align each. */
#define OPS_LORA_CHUNK 256
static inline size_t ops_lora_work_floats(int N, int Din, int Dout, int r, float p) {
    size_t chunks = ((size_t)N + OPS_LORA_CHUNK - 1) / OPS_LORA_CHUNK;
    return (size_t)N * r + (p > 0 ? (size_t)N * Din : 0) + chunks * r * ((size_t)Din + Dout) + 256;
}

/* Names of the OpIds, for test and benchmark tables. */
extern const char *const op_names[OP_COUNT];

/* The CPU backend's BLAS: the core OpenBLAS chose, and thread count. */
const char *ops_cpu_blas_core(void);
int ops_cpu_threads(void);
/* Give the whole pages inside [p, p + bytes) of a CPU buffer back to the
 * kernel (they read as zero afterwards): a pipeline stage drops the other
 * stages' weights. */
void ops_cpu_release(void *p, size_t bytes);

#endif
