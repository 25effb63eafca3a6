/*
 * ops_cpu.c: the CPU backend. float32 everywhere; GEMMs through CBLAS
 * (OpenBLAS built for OpenMP, so a GEMM called inside a parallel region runs
 * on its calling thread); everything else hand-written loops parallelised
 * with OpenMP over rows, heads or columns. Reductions that feed gradients are
 * laid out so each output element is summed by one thread in a fixed order:
 * results do not depend on the thread count's scheduling.
 *
 * Attention is flash-attention shaped (Dao et al. 2022): the forward keeps
 * only the output and the per-row log-sum-exp, and the backward recomputes
 * the probabilities tile by tile. Its products are hand-tiled rather than
 * BLAS calls (see the attention section).
 */
#include "ops.h"
#include "ops_cpu_engine.h"
#include "ops_cpu_kd.h"
#include "vecmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "base.h"
#include "lora.h"

const char *const op_names[OP_COUNT] = {
    "embed", "rmsnorm", "matmul", "rope", "attn", "attn_decode", "swiglu", "lmhead_ce",
    "add", "sumsq", "scale", "adamw", "lora", "lmhead_rows", "matmul_rows", "attn_paged", "rows",
    "qmatmul", "qembed", "qlmhead", "qmatmul_rows", "lmhead_kd",
};

const char *const kd_div_names[KD_COUNT] = {"fkl", "rkl", "jsd"};

char *openblas_get_corename(void);
const char *ops_cpu_blas_core(void) { return openblas_get_corename(); }
int ops_cpu_threads(void) { return omp_get_max_threads(); }

/* LM head: at most 1024 rows or 128 MiB of logits per chunk; bigger chunks
 * give the dW GEMM a longer inner dimension (measured: 8M -> 32M floats took
 * the 15m step from 1145 to 1219 tokens/s). */
#define CE_ROWS_MAX 1024
#define CE_FLOATS 33554432
/* A quantised head has no dW GEMM to feed and is dequantised once per chunk
 * and direction: chunks of at most 48 MiB of logits (256 rows of a 49152
 * vocabulary), so a QLoRA run touches that much of the scratch, not 128 MiB. */
#define QCE_FLOATS 12582912

// ----------------------------------------------------------------------------
// memory

/* Buffers of a MiB or more are anonymous mappings: zero without being
 * written, so the pages a run never touches cost no memory (a pipeline
 * stage's parameters, gradients and activations of the other stages'
 * layers). The page before the buffer holds its size and a tag that tells
 * cpu_free which kind it is; smaller ones come from aligned_alloc with
 * their own header. */
#ifdef __SANITIZE_ADDRESS__
#define BIG_ALLOC SIZE_MAX /* AddressSanitizer watches heap buffers only: keep them all there */
#else
#define BIG_ALLOC ((size_t)1 << 20)
#endif
#define ALLOC_HDR 4096
typedef struct {
    uint64_t tag, bytes;
} AllocHdr;
enum { TAG_HEAP = 0x6c6c616d61636831ULL, TAG_MAP = 0x6c6c616d61636d32ULL };

static void *cpu_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    char *p;
    AllocHdr *h;
    if (bytes >= BIG_ALLOC) {
        char *base = mmap(NULL, bytes + ALLOC_HDR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) LC_FATAL("out of memory mapping %zu bytes", bytes);
        p = base + ALLOC_HDR;
        h = (AllocHdr *)p - 1;
        h->tag = TAG_MAP;
    } else {
        char *base = xalloc_aligned(bytes + 64); /* zeroed; the header in the 64 bytes before the buffer */
        p = base + 64;
        h = (AllocHdr *)p - 1;
        h->tag = TAG_HEAP;
    }
    h->bytes = bytes;
    return p;
}

static void cpu_free(void *ctx, void *ptr) {
    (void)ctx;
    if (!ptr) return;
    char *p = ptr;
    AllocHdr *h = (AllocHdr *)p - 1;
    if (h->tag == TAG_MAP) munmap(p - ALLOC_HDR, h->bytes + ALLOC_HDR);
    else if (h->tag == TAG_HEAP) free(p - 64);
    else LC_FATAL("cpu_free: %p was not allocated by cpu_alloc", ptr);
}

void ops_cpu_release(void *p, size_t bytes) {
    /* the whole pages inside [p, p + bytes) back to the kernel: they read as zero again */
    uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, b = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}
static void cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_zero(void *ctx, void *p, size_t bytes) { (void)ctx; if (bytes) memset(p, 0, bytes); }
static void cpu_sync(void *ctx) { (void)ctx; }

static int ce_rows(int V) {
    int r = CE_FLOATS / V;
    if (r > CE_ROWS_MAX) r = CE_ROWS_MAX;
    return r < 8 ? 8 : r;
}

static size_t attn_scratch_floats(int threads, int B, int T, int H, int HS);

static size_t cpu_scratch_floats(void *ctx, int B, int T, int H, int HS, int V, int D) {
    (void)ctx;
    size_t attn = attn_scratch_floats(omp_get_max_threads(), B, T, H, HS);
    size_t decode = (size_t)H * T;
    /* a chunk of the LM head's logits: never more rows than a batch has
     * (at T 512 that is 100 MB instead of 134 for a 49152 vocabulary) */
    size_t rows = (size_t)ce_rows(V) < (size_t)B * T ? (size_t)ce_rows(V) : (size_t)B * T;
    size_t ce = rows * ((size_t)V + 2 * (size_t)D); /* + the gathered rows' x and dx (lmhead) */
    attn = attn > decode ? attn : decode;
    return attn > ce ? attn : ce;
}

// ----------------------------------------------------------------------------
// vector math: softmax and SwiGLU spend their time in exp. libm's expf is a
// call per element and does not vectorise without -ffast-math, so exp is
// written as plain arithmetic (x = n ln2 + r, |r| <= ln2/2; e^r by its
// degree-6 Taylor polynomial, error r^7/7! < 1.3e-7; 2^n through the
// exponent bits) and the loops using it are compiled twice, for AVX2+FMA
// (x86-64-v3) and for baseline x86-64, picked at load time by CPU features
// (target_clones; "arch=haswell" would be picked by CPU model, never on AMD).

/* y = exp(x - sub) over n elements, in place; returns the sum (eight
 * partial sums in a fixed order, so vectorised and deterministic) */
VECTOR_CLONES static float vec_exp_sum(float *y, float sub, int n) {
    for (int i = 0; i < n; i++) y[i] = exp_approx(y[i] - sub);
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += y[i + k];
    for (; i < n; i++) acc[0] += y[i];
    float s = 0.0f;
    for (int k = 0; k < 8; k++) s += acc[k];
    return s;
}

VECTOR_CLONES static void vec_scale(float *x, float s, int n) {
    for (int i = 0; i < n; i++) x[i] *= s;
}

// ----------------------------------------------------------------------------
// embedding

static void cpu_embed_fwd(void *ctx, float *out, const int *tok, const float *emb, int N, int D) {
    (void)ctx;
#pragma omp parallel for
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * D, emb + (size_t)tok[n] * D, D * sizeof(float));
}

static void cpu_embed_bwd(void *ctx, float *demb, const float *dout, const int *tok, int N, int D) {
    (void)ctx;
    if (!demb) return; /* frozen embedding (LoRA) */
    /* Each thread owns a slice of the columns and walks the rows in order:
     * no atomics, and the sum order is fixed. */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), it = omp_get_thread_num();
        int j0 = (int)((long)D * it / nt), j1 = (int)((long)D * (it + 1) / nt);
        for (int n = 0; n < N; n++) {
            float *d = demb + (size_t)tok[n] * D;
            const float *s = dout + (size_t)n * D;
            for (int j = j0; j < j1; j++) d[j] += s[j];
        }
    }
}

// ----------------------------------------------------------------------------
// RMSNorm (Zhang & Sennrich 2019)

static void cpu_rmsnorm_fwd(void *ctx, float *out, float *rstd, const float *x, const float *w,
                            int N, int D, float eps) {
    (void)ctx;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D;
        float *o = out + (size_t)n * D;
        float ss = 0.0f;
        for (int j = 0; j < D; j++) ss += xn[j] * xn[j];
        float r = 1.0f / sqrtf(ss / D + eps);
        rstd[n] = r;
        for (int j = 0; j < D; j++) o[j] = xn[j] * r * w[j];
    }
}

static void cpu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dout, const float *x,
                            const float *w, const float *rstd, int N, int D) {
    (void)ctx;
    /* dx = rstd * (dxh - xh * mean(dxh * xh)), xh = x * rstd, dxh = dout * w */
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D, *dn = dout + (size_t)n * D;
        float *dxn = dx + (size_t)n * D;
        float r = rstd[n], dot = 0.0f;
        for (int j = 0; j < D; j++) dot += dn[j] * w[j] * xn[j];
        float c = dot * r * r / D;
        for (int j = 0; j < D; j++) dxn[j] += r * (dn[j] * w[j] - xn[j] * c);
    }
    if (!dw) return; /* frozen gain (LoRA) */
    /* dw: column slices per thread, rows in order */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), it = omp_get_thread_num();
        int j0 = (int)((long)D * it / nt), j1 = (int)((long)D * (it + 1) / nt);
        for (int n = 0; n < N; n++) {
            const float *xn = x + (size_t)n * D, *dn = dout + (size_t)n * D;
            float r = rstd[n];
            for (int j = j0; j < j1; j++) dw[j] += dn[j] * xn[j] * r;
        }
    }
}

// ----------------------------------------------------------------------------
// linear

static void cpu_matmul_fwd(void *ctx, float *out, const float *x, const float *w, int N, int Din, int Dout) {
    (void)ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, Dout, Din, 1.0f, x, Din, w, Din, 0.0f, out, Dout);
}

static void cpu_matmul_bwd(void *ctx, float *dx, float *dw, const float *dout, const float *x,
                           const float *w, int N, int Din, int Dout, int accum_dx) {
    (void)ctx;
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Din, Dout, 1.0f, dout, Dout, w, Din,
                    accum_dx ? 1.0f : 0.0f, dx, Din);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Dout, Din, N, 1.0f, dout, Dout, x, Din, 1.0f,
                    dw, Din);
}

// ----------------------------------------------------------------------------
// quantised weights (ops.h, "quantised frozen weights"): a tile of the
// weight's rows dequantised into work, split over the threads, then one
// SGEMM against the tile; the tile is QWORK_FLOATS floats (4 MiB: at 1 MiB
// the tiles' SGEMMs ran 4-17% behind the whole matrix's on SmolLM2's
// shapes, at 4 MiB 2-5%), so the
// SGEMMs stay large (hundreds of columns) while the float copy stays small.

#define QWORK_FLOATS (1 << 20)

static size_t cpu_qwork_floats(void *ctx, int Dmax) {
    (void)ctx;
    size_t tile = QWORK_FLOATS > (size_t)16 * Dmax ? QWORK_FLOATS : (size_t)16 * Dmax;
    size_t rows = (size_t)omp_get_max_threads() * cpu_qrows_thread_floats(Dmax); /* the engine's panels */
    return (tile > rows ? tile : rows) + 64;
}

/* Rows of q per tile: as many as fit QWORK_FLOATS (at least 16), at most all. */
static int q_tile_rows(const QTensor *q) {
    int tr = QWORK_FLOATS / q->cols / 16 * 16;
    if (tr < 16) tr = 16;
    return tr < q->rows ? tr : q->rows;
}

static void q_tile(const QTensor *q, int r0, int n, float *dst) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) quant_rows(q, r0 + i, 1, dst + (size_t)i * q->cols);
}

/* out(N, rows) (row stride ldo) = x(N, cols) q^T */
static void q_gemm_nt(float *out, int ldo, const float *x, int N, const QTensor *q, float *work) {
    int K = q->cols, tr = q_tile_rows(q);
    for (int r0 = 0; r0 < q->rows; r0 += tr) {
        int n = q->rows - r0 < tr ? q->rows - r0 : tr;
        q_tile(q, r0, n, work);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n, K, 1.0f, x, K, work, K, 0.0f, out + r0, ldo);
    }
}

/* dx(N, cols) = (or += with accum) dy(N, rows) (row stride lddy) q */
static void q_gemm_nn(float *dx, const float *dy, int lddy, int N, const QTensor *q, float *work, int accum) {
    int K = q->cols, tr = q_tile_rows(q);
    for (int r0 = 0; r0 < q->rows; r0 += tr) {
        int n = q->rows - r0 < tr ? q->rows - r0 : tr;
        q_tile(q, r0, n, work);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, K, n, 1.0f, dy + r0, lddy, work, K,
                    accum || r0 > 0 ? 1.0f : 0.0f, dx, K);
    }
}

static void cpu_qmatmul_fwd(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N) {
    (void)ctx;
    q_gemm_nt(out, w->rows, x, N, w, work);
}

static void cpu_qmatmul_bwd(void *ctx, float *dx, const float *dout, const QTensor *w, float *work, int N,
                            int accum_dx) {
    (void)ctx;
    q_gemm_nn(dx, dout, w->rows, N, w, work, accum_dx);
}

static void cpu_qembed_fwd(void *ctx, float *out, const int *tok, const QTensor *emb, float *work, int N) {
    (void)ctx, (void)work;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) quant_rows(emb, tok[n], 1, out + (size_t)n * emb->cols);
}

// ----------------------------------------------------------------------------
// LoRA side path (ops.h): two thin GEMMs each way through the rank-r
// bottleneck; the dropout mask is recomputed from lora_keep, never stored

/* Rows of x of one chunk, dropped into xd (or x itself when p = 0); i0 is
 * the chunk's first element index (the mask counts from the batch start). */
static const float *lora_drop(float *xd, const float *x, size_t i0, size_t n, float p, uint64_t seed, int l,
                              int m) {
    if (p == 0) return x;
    float k = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) xd[i] = lora_keep(seed, l, m, i0 + i, p) ? x[i] * k : 0.0f;
    return xd;
}

static size_t r64f(size_t n) { return (n + 63) / 64 * 64; }

/* The products through the rank-r bottleneck are skinny (r ~ 8-64): as
 * single GEMMs OpenBLAS splits them over threads per call and spends more
 * time synchronising than computing (measured ~2 GFLOP/s). Here each
 * OPS_LORA_CHUNK-row chunk is one thread's work with single-threaded GEMMs
 * (the OpenMP OpenBLAS runs a GEMM inside a parallel region on its calling
 * thread); dA and dB are summed over chunks in chunk order afterwards. */
static void cpu_lora_fwd(void *ctx, float *y, float *h, const float *x, const float *A, const float *B,
                         float *work, int N, int Din, int Dout, int r, float s, float p, uint64_t seed,
                         int l, int m) {
    (void)ctx;
    float *xd = work + r64f((size_t)N * r);
    int nch = (N + OPS_LORA_CHUNK - 1) / OPS_LORA_CHUNK;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nch; c++) {
        int n0 = c * OPS_LORA_CHUNK, nr = N - n0 < OPS_LORA_CHUNK ? N - n0 : OPS_LORA_CHUNK;
        size_t i0 = (size_t)n0 * Din;
        const float *d = lora_drop(xd + i0, x + i0, i0, (size_t)nr * Din, p, seed, l, m);
        float *hc = h + (size_t)n0 * r;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, r, Din, 1.0f, d, Din, A, Din, 0.0f, hc, r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, Dout, r, s, hc, r, B, r, 1.0f,
                    y + (size_t)n0 * Dout, Dout);
    }
}

static void cpu_lora_bwd(void *ctx, float *dx, float *dA, float *dB, const float *dy, const float *x,
                         const float *h, const float *A, const float *B, float *work, int N, int Din,
                         int Dout, int r, float s, float p, uint64_t seed, int l, int m) {
    (void)ctx;
    int nch = (N + OPS_LORA_CHUNK - 1) / OPS_LORA_CHUNK;
    size_t na = (size_t)r * Din, nb = (size_t)Dout * r;
    float *dh = work, *xd = work + r64f((size_t)N * r);
    float *part = xd + (p > 0 ? r64f((size_t)N * Din) : 0); /* chunk c: dA (r, Din), then dB (Dout, r) */
    float k = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nch; c++) {
        int n0 = c * OPS_LORA_CHUNK, nr = N - n0 < OPS_LORA_CHUNK ? N - n0 : OPS_LORA_CHUNK;
        size_t i0 = (size_t)n0 * Din;
        const float *dyc = dy + (size_t)n0 * Dout, *hc = h + (size_t)n0 * r;
        float *dhc = dh + (size_t)n0 * r, *pa = part + (size_t)c * (na + nb), *pb = pa + na;
        if (dB) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Dout, r, nr, s, dyc, Dout, hc, r, 0.0f, pb, r);
        if (!dA && !dx) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, r, Dout, s, dyc, Dout, B, r, 0.0f, dhc, r);
        if (dA) {
            const float *d = lora_drop(xd + i0, x + i0, i0, (size_t)nr * Din, p, seed, l, m);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, Din, nr, 1.0f, dhc, r, d, Din, 0.0f, pa, Din);
        }
        if (!dx) continue;
        if (p == 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, Din, r, 1.0f, dhc, r, A, Din, 1.0f,
                        dx + i0, Din);
            continue;
        }
        float *t = xd + i0; /* its dropped input is used; now dh A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, Din, r, 1.0f, dhc, r, A, Din, 0.0f, t, Din);
        for (size_t i = 0; i < (size_t)nr * Din; i++)
            if (lora_keep(seed, l, m, i0 + i, p)) dx[i0 + i] += t[i] * k;
    }
    /* chunk partials in chunk order: one thread per output element */
    if (dA) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < na; i++) {
            float acc = part[i];
            for (int c = 1; c < nch; c++) acc += part[(size_t)c * (na + nb) + i];
            dA[i] += acc;
        }
    }
    if (dB) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < nb; i++) {
            float acc = part[na + i];
            for (int c = 1; c < nch; c++) acc += part[(size_t)c * (na + nb) + na + i];
            dB[i] += acc;
        }
    }
}

// ----------------------------------------------------------------------------
// RoPE, Hugging Face rotate_half layout

static void rope_apply(float *x, const int *pos, const float *cos_t, const float *sin_t, int N,
                       int nh, int HS, float sign) {
    int half = HS / 2;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)pos[n] * half, *s = sin_t + (size_t)pos[n] * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + ((size_t)n * nh + h) * HS;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

static void cpu_rope_fwd(void *ctx, float *x, const int *pos, const float *cos_t, const float *sin_t,
                         int N, int nh, int HS) {
    (void)ctx;
    rope_apply(x, pos, cos_t, sin_t, N, nh, HS, 1.0f);
}

/* The rotation is orthogonal, so its transpose (the backward) rotates by -angle. */
static void cpu_rope_bwd(void *ctx, float *dx, const int *pos, const float *cos_t, const float *sin_t,
                         int N, int nh, int HS) {
    (void)ctx;
    rope_apply(dx, pos, cos_t, sin_t, N, nh, HS, -1.0f);
}

// ----------------------------------------------------------------------------
// attention
//
// Hand-tiled, not BLAS: with the head size (48-128) as the inner dimension,
// rows strided by H*HS and a GEMM per block of 64-128 rows, OpenBLAS ran
// these products at about half its large-GEMM rate. Here each task packs
// its head once into contiguous buffers (rows padded to a multiple of
// ATTN_KB, columns to ATTN_NR with zeros; k and v also transposed in panels
// of ATTN_NR keys), and all seven products go through one register tile,
// C (6 x 16) = or += sum_k A(i, k) B(k, :) in twelve 8-float accumulators,
// so each load of B feeds six multiply-adds.
//   forward: k, v of all heads packed first; then tasks of ATTN_QB query
//     rows of one head, six rows at a time against the keys they see:
//     scores, softmax, P V (six rows of scores fit L1 up to T ~ 1300).
//   backward, per (batch, kv head), its G query heads in turn: a block of
//     ATTN_KB keys at a time against the rows that see it, in chunks of
//     ATTN_QC rows. Per six rows: S and dP = dO V^T, P and dS = P (dP - D),
//     dQ += dS K; per chunk dV += P^T dO and dK += dS^T Q. Tiles no row sees
//     (above the diagonal, before a document) are skipped.
// Each output element is summed by one thread in a fixed order, as above.

#define ATTN_MR 6  /* rows of the register tile */
#define ATTN_NR 16 /* columns of the register tile: two 8-float vectors */
#define ATTN_KB 48 /* backward key block: a multiple of both */
#define ATTN_QC 96 /* backward query chunk: rows whose P, dS wait for dK, dV */
#define ATTN_QB 96 /* forward task: query rows of one head */

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* One thread's attention scratch: the backward's eight (T x HS) buffers
 * (k^T, v^T, k, q, dO, dq, dk, dv), D and lse rows, and its tiles; the
 * forward uses less. */
static size_t attn_thread_floats(int T, int HS) {
    size_t tp = (size_t)round_up(T, ATTN_KB), hsp = (size_t)round_up(HS, ATTN_NR);
    return 8 * tp * hsp + 2 * tp + 2 * ATTN_MR * ATTN_KB + 2 * ATTN_QC * ATTN_KB;
}

/* The forward's per-thread tiles: q and output (6 x hsp), scores (6 x T). */
static size_t attn_fwd_thread_floats(int T, int HS) {
    return 2 * ATTN_MR * (size_t)round_up(HS, ATTN_NR) + ATTN_MR * (size_t)round_up(T, ATTN_KB);
}

/* Attention scratch for `threads` threads: the backward's per-thread
 * buffers and its dq partial (B x H x T x HS), or the forward's tiles and
 * its packed k, v (B x KV x 2 x T x HS, bounded by H >= KV). */
static size_t attn_scratch_floats(int threads, int B, int T, int H, int HS) {
    size_t bwd = (size_t)threads * attn_thread_floats(T, HS) + (size_t)B * H * T * HS;
    size_t fwd = (size_t)threads * attn_fwd_thread_floats(T, HS) +
                 (size_t)B * H * 2 * round_up(T, ATTN_KB) * round_up(HS, ATTN_NR);
    return bwd > fwd ? bwd : fwd;
}

/* The three inner kernels, each written twice: with AVX2+FMA intrinsics and
 * in portable C, picked by CPU features (GCC's vector extensions under
 * -std=c11 give no FMA, and with twelve accumulators in an array GCC 12
 * moved them through the stack every iteration).
 *
 * tile: C (6 x 16, row stride cs) = (or += when acc) the sum over k < L of
 *   A(i, k) B(k, :), with A(i, k) at a[i * ais + k * aks] and B's row k the
 *   16 floats at b + k * bks.
 * softmax: one forward row s[0, nk) of scaled scores with visible keys
 *   [lo, hi]: s = exp(s - max) there and 0 elsewhere; returns the sum and
 *   sets *mx to the max.
 * probs: one backward row of a key block (ATTN_KB keys) with visible keys
 *   [lo, hi] (none when lo > hi): p = exp(s - l) there, 0 elsewhere;
 *   ds = p (dp - d). */
typedef struct {
    void (*tile)(float *c, int cs, const float *a, int ais, int aks, const float *b, int bks, int L,
                 int acc);
    float (*softmax)(float *s, int nk, int lo, int hi, float *mx);
    void (*probs)(float *p, float *ds, const float *s, const float *dp, float l, float d, int lo, int hi);
} AttnKernels;

/* Four-float vectors (SSE on x86-64, NEON on ARM), a 6 x 8 half of the tile
 * at a time: twelve accumulators fit the sixteen registers. */
typedef float v4f __attribute__((vector_size(16), aligned(4)));
#define ATTN_V4_LOAD(v, p) memcpy(&(v), (p), sizeof(v));
#define ATTN_V4_STORE(v, p) memcpy((p), &(v), sizeof(v));
#define ATTN_V4_ROW(op, i, c0, c1) op(c0, ch + (i) * (size_t)cs) op(c1, ch + (i) * (size_t)cs + 4)
#define ATTN_V4_FMA(i, c0, c1)                    \
    {                                             \
        float s_ = ak[(size_t)(i) * ais];         \
        v4f x = {s_, s_, s_, s_};                 \
        c0 += x * b0;                             \
        c1 += x * b1;                             \
    }

static void attn_tile_portable(float *c, int cs, const float *a, int ais, int aks, const float *b,
                               int bks, int L, int acc) {
    for (int h = 0; h < ATTN_NR; h += 8) {
        v4f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
        v4f c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
        float *ch = c + h;
        if (acc) {
            ATTN_V4_ROW(ATTN_V4_LOAD, 0, c00, c01) ATTN_V4_ROW(ATTN_V4_LOAD, 1, c10, c11)
            ATTN_V4_ROW(ATTN_V4_LOAD, 2, c20, c21) ATTN_V4_ROW(ATTN_V4_LOAD, 3, c30, c31)
            ATTN_V4_ROW(ATTN_V4_LOAD, 4, c40, c41) ATTN_V4_ROW(ATTN_V4_LOAD, 5, c50, c51)
        }
        for (int k = 0; k < L; k++) {
            const float *ak = a + (size_t)k * aks, *bk = b + (size_t)k * bks + h;
            v4f b0, b1;
            memcpy(&b0, bk, sizeof b0);
            memcpy(&b1, bk + 4, sizeof b1);
            ATTN_V4_FMA(0, c00, c01) ATTN_V4_FMA(1, c10, c11) ATTN_V4_FMA(2, c20, c21)
            ATTN_V4_FMA(3, c30, c31) ATTN_V4_FMA(4, c40, c41) ATTN_V4_FMA(5, c50, c51)
        }
        ATTN_V4_ROW(ATTN_V4_STORE, 0, c00, c01) ATTN_V4_ROW(ATTN_V4_STORE, 1, c10, c11)
        ATTN_V4_ROW(ATTN_V4_STORE, 2, c20, c21) ATTN_V4_ROW(ATTN_V4_STORE, 3, c30, c31)
        ATTN_V4_ROW(ATTN_V4_STORE, 4, c40, c41) ATTN_V4_ROW(ATTN_V4_STORE, 5, c50, c51)
    }
}

static float attn_softmax_portable(float *s, int nk, int lo, int hi, float *mx) {
    int n = hi - lo + 1;
    *mx = vec_max(s + lo, n);
    memset(s, 0, lo * sizeof(float));
    memset(s + hi + 1, 0, (nk - hi - 1) * sizeof(float));
    return vec_exp_sum(s + lo, *mx, n);
}

VECTOR_CLONES static void attn_probs_portable(float *p, float *ds, const float *s, const float *dp,
                                              float l, float d, int lo, int hi) {
    for (int j = 0; j < ATTN_KB; j++) {
        float e = exp_approx(s[j] - l);
        e = j >= lo && j <= hi ? e : 0.0f;
        p[j] = e;
        ds[j] = e * (dp[j] - d);
    }
}

static const AttnKernels attn_portable = {attn_tile_portable, attn_softmax_portable, attn_probs_portable};

#if defined(__x86_64__) && defined(__GNUC__)
#define ATTN_HAVE_AVX2 1
#define ATTN_AVX2 __attribute__((target("avx2,fma")))

/* Twelve named accumulators, two per row of the tile. */
#define ATTN_LOAD(i, c0, c1)                                                    \
    c0 = acc ? _mm256_loadu_ps(c + (i) * (size_t)cs) : _mm256_setzero_ps();     \
    c1 = acc ? _mm256_loadu_ps(c + (i) * (size_t)cs + 8) : _mm256_setzero_ps();
#define ATTN_FMA(i, c0, c1)                  \
    x = _mm256_broadcast_ss(a + (i) * s);    \
    c0 = _mm256_fmadd_ps(x, b0, c0);         \
    c1 = _mm256_fmadd_ps(x, b1, c1);
#define ATTN_STORE(i, c0, c1)                         \
    _mm256_storeu_ps(c + (i) * (size_t)cs, c0);       \
    _mm256_storeu_ps(c + (i) * (size_t)cs + 8, c1);

ATTN_AVX2 static void attn_tile_avx2(float *c, int cs, const float *a, int ais, int aks, const float *b,
                                     int bks, int L, int acc) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, x;
    ATTN_LOAD(0, c00, c01) ATTN_LOAD(1, c10, c11) ATTN_LOAD(2, c20, c21)
    ATTN_LOAD(3, c30, c31) ATTN_LOAD(4, c40, c41) ATTN_LOAD(5, c50, c51)
    size_t s = (size_t)ais;
    for (int k = 0; k < L; k++, a += aks, b += bks) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        ATTN_FMA(0, c00, c01) ATTN_FMA(1, c10, c11) ATTN_FMA(2, c20, c21)
        ATTN_FMA(3, c30, c31) ATTN_FMA(4, c40, c41) ATTN_FMA(5, c50, c51)
    }
    ATTN_STORE(0, c00, c01) ATTN_STORE(1, c10, c11) ATTN_STORE(2, c20, c21)
    ATTN_STORE(3, c30, c31) ATTN_STORE(4, c40, c41) ATTN_STORE(5, c50, c51)
}

/* exp_approx on eight lanes for x <= 0 (scores minus their max or lse), its
 * polynomial in FMAs; round(x / ln2) by adding 1.5 * 2^23, whose low bits
 * then hold it as an integer (so no conversion). */
ATTN_AVX2 static inline __m256 exp8(__m256 x) {
    /* max_ps returns its second operand when one is NaN: x second keeps a
     * NaN score NaN; below -87 (and -Inf) the lane is 0, as exp_approx */
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), _mm256_set1_ps(12582912.0f));
    __m256 n = _mm256_sub_ps(t, _mm256_set1_ps(12582912.0f));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.3888889e-3f), r, _mm256_set1_ps(8.3333333e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1666667e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666667e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(t), 23), _mm256_set1_epi32(127 << 23));
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* lanes j0 + [0, 8) inside [lo, hi] */
ATTN_AVX2 static inline __m256 lanes_in(int j0, int lo, int hi) {
    __m256i j = _mm256_add_epi32(_mm256_set1_epi32(j0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(lo), j),
                                     _mm256_cmpgt_epi32(_mm256_set1_epi32(hi + 1), j));
    return _mm256_castsi256_ps(in);
}

/* The max over [lo, hi] in whole vectors, the last one overlapping the one
 * before (max does not mind); the exp over the 8-lane groups from the one
 * holding lo to the one holding hi (inside [0, nk), nk a multiple of 16),
 * only the first and last masked. */
ATTN_AVX2 static float attn_softmax_avx2(float *s, int nk, int lo, int hi, float *mx) {
    int g0 = lo / 8 * 8, g1 = hi / 8 * 8 + 8;
    float m1 = s[lo];
    if (hi - lo + 1 >= 8) {
        __m256 m = _mm256_loadu_ps(s + hi - 7);
        for (int j = lo; j + 8 <= hi + 1; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + j));
        m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
        m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4e));
        m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xb1));
        m1 = _mm256_cvtss_f32(m);
    } else
        for (int j = lo; j <= hi; j++) m1 = s[j] > m1 ? s[j] : m1;
    __m256 m = _mm256_set1_ps(m1), sum = _mm256_setzero_ps();
    for (int j = g0; j < g1; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
        if (j == g0 || j + 8 == g1) e = _mm256_and_ps(e, lanes_in(j, lo, hi));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    memset(s, 0, g0 * sizeof(float));
    memset(s + g1, 0, (nk - g1) * sizeof(float));
    float lane[8], total = 0.0f;
    _mm256_storeu_ps(lane, sum);
    for (int i = 0; i < 8; i++) total += lane[i];
    *mx = m1;
    return total;
}

/* Masks only rows that see part of the block (on the diagonal, at a
 * document start). Masked lanes may hold any finite score: exp8 of a
 * positive x is garbage bits, cleared by the mask. */
ATTN_AVX2 static void attn_probs_avx2(float *p, float *ds, const float *s, const float *dp, float l,
                                      float d, int lo, int hi) {
    __m256 lv = _mm256_set1_ps(l), dv = _mm256_set1_ps(d);
    int full = lo <= 0 && hi >= ATTN_KB - 1;
    for (int j = 0; j < ATTN_KB; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), lv));
        if (!full) e = _mm256_and_ps(e, lanes_in(j, lo, hi));
        _mm256_storeu_ps(p + j, e);
        _mm256_storeu_ps(ds + j, _mm256_mul_ps(e, _mm256_sub_ps(_mm256_loadu_ps(dp + j), dv)));
    }
}

static const AttnKernels attn_avx2 = {attn_tile_avx2, attn_softmax_avx2, attn_probs_avx2};
#endif

/* The kernels for this CPU; LLAMAC_ATTN_PORTABLE=1 in the environment forces
 * the portable ones (the tests run both). */
static const AttnKernels *attn_kernels(void) {
#ifdef ATTN_HAVE_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !getenv("LLAMAC_ATTN_PORTABLE"))
        return &attn_avx2;
#endif
    return &attn_portable;
}

/* Packs the first T rows of one head of src (row stride ld, HS wide), in
 * one pass over the source (it comes from memory, not cache):
 *   rows (may be NULL): (tp x hsp), scaled by s, zero padded;
 *   panels (may be NULL): src^T in panels of 16 keys, the (HS x 16) panel of
 *     keys [16 p, 16 p + 16) at panels + 16 p HS; keys past T are zero. */
static void pack_head(float *rows, float *panels, const float *src, int ld, float s, int T, int tp,
                      int HS, int hsp) {
    for (int t = 0; t < tp; t++) {
        const float *x = src + (size_t)t * ld;
        for (int c = 0; t + 8 < T && c < HS; c += 16) __builtin_prefetch(x + 8 * (size_t)ld + c);
        if (rows) {
            float *d = rows + (size_t)t * hsp;
            int c = 0;
            if (t < T)
                for (; c < HS; c++) d[c] = x[c] * s;
            for (; c < hsp; c++) d[c] = 0.0f;
        }
        if (panels) {
            float *d = panels + (size_t)(t / ATTN_NR) * HS * ATTN_NR + t % ATTN_NR;
            for (int c = 0; c < HS; c++) d[c * ATTN_NR] = t < T ? x[c] : 0.0f;
        }
    }
}

/* First key query t sees (its document's start); sp: a row's spans. */
static int doc_start(const int *sp, int t) { return sp[3 * t]; }

/* The keys of [j0, jl] that query t sees, as [*lo, *hi] less a hole in the
 * middle (masked): its document from j0 on, up to itself, trimmed where the
 * hole covers an end. 0 when it sees none. */
static int visible_keys(const int *sp, int t, int j0, int jl, int *lo, int *hi) {
    int h0 = sp[3 * t + 1], h1 = sp[3 * t + 2];
    *lo = sp[3 * t] > j0 ? sp[3 * t] : j0, *hi = t < jl ? t : jl;
    if (h0 <= *lo && *lo < h1) *lo = h1;
    if (h0 <= *hi && *hi < h1) *hi = h0 - 1;
    return *lo <= *hi;
}

/* Scores of the hole of query t (the branches before its own) to -Inf in a
 * row s of keys from base whose columns from base + cut on are gap keys
 * further on (the forward leaves tiles inside every row's hole out): the
 * softmax's exp makes them 0. */
static void mask_hole(float *s, const int *sp, int t, int base, int cut, int gap, int nk) {
    int h0 = sp[3 * t + 1] - base, h1 = sp[3 * t + 2] - base;
    h0 = h0 > cut ? (h0 - gap > cut ? h0 - gap : cut) : h0, h1 = h1 > cut ? (h1 - gap > cut ? h1 - gap : cut) : h1;
    h0 = h0 > 0 ? h0 : 0, h1 = h1 < nk ? h1 : nk;
    for (int j = h0; j < h1; j++) s[j] = -INFINITY;
}

/* The keys in the hole of every query in rows [t0, t0 + n) (the rows of a
 * tile are mostly one branch): [*h0, *h1), empty when one has no hole. */
static void common_hole(const int *sp, int t0, int n, int *h0, int *h1) {
    *h0 = 0, *h1 = 0;
    for (int t = t0; t < t0 + n; t++) {
        int a = sp[3 * t + 1], b = sp[3 * t + 2];
        if (a >= b) {
            *h0 = *h1 = 0;
            return;
        }
        *h0 = t == t0 || a > *h0 ? a : *h0;
        *h1 = t == t0 || b < *h1 ? b : *h1;
    }
}

/* The 16-key tiles from base inside the hole [h0, h1): [*a, *b). */
static void hole_tiles(int h0, int h1, int base, int *a, int *b) {
    *a = round_up(h0 - base > 0 ? h0 - base : 0, ATTN_NR);
    *b = (h1 - base > 0 ? h1 - base : 0) / ATTN_NR * ATTN_NR;
    if (*b < *a) *b = *a;
}

/* Forward for query rows [i0, i0 + 6) of one head: qt their packed q
 * (6 x hsp, scaled by 1/sqrt(HS)), kt, vp the packed k, v; o, lb the head's
 * output rows (stride qs) and lse row. */
static void attn_fwd_tile(const AttnKernels *kern, float *o, int qs, float *lb, const float *qt, const float *kt,
                          const float *vp, float *sb, float *ot, const int *pb, int i0, int T,
                          int HS, int hsp) {
    int nr = T - i0 < ATTN_MR ? T - i0 : ATTN_MR, kmin = i0;
    for (int r = 0; r < nr; r++)
        if (doc_start(pb, i0 + r) < kmin) kmin = doc_start(pb, i0 + r);
    int base = kmin / ATTN_NR * ATTN_NR, nk = round_up(i0 + nr - base, ATTN_NR); /* keys [base, base + nk) */
    /* tiles [ha, hb) are in every row's hole: left out of the scores (columns from ha on are keys base +
     * hb on), so neither the products nor the softmax see them */
    int h0, h1, ha, hb;
    common_hole(pb, i0, nr, &h0, &h1);
    hole_tiles(h0, h1, base, &ha, &hb);
    int gap = hb - ha;
    for (int j = 0; j < nk; j += ATTN_NR)
        if (j < ha || j >= hb)
            kern->tile(sb + (j < ha ? j : j - gap), nk - gap, qt, hsp, 1, kt + (size_t)(base + j) * HS, ATTN_NR, HS, 0);
    nk -= gap;
    float inv[ATTN_MR] = {0};
    for (int r = 0; r < ATTN_MR; r++) {
        float *s = sb + (size_t)r * nk;
        if (r >= nr) {
            memset(s, 0, nk * sizeof(float));
            continue;
        }
        int t = i0 + r;
        mask_hole(s, pb, t, base, ha, gap, nk);
        float mx, sum = kern->softmax(s, nk, doc_start(pb, t) - base, t - base - gap, &mx);
        inv[r] = 1.0f / sum;
        lb[t] = mx + logf(sum);
    }
    for (int c = 0; c < hsp; c += ATTN_NR) {
        kern->tile(ot + c, hsp, sb, nk, 1, vp + (size_t)base * hsp + c, hsp, ha, 0);
        kern->tile(ot + c, hsp, sb + ha, nk, 1, vp + (size_t)(base + hb) * hsp + c, hsp, nk - ha, 1);
    }
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < HS; c++) o[(size_t)(i0 + r) * qs + c] = ot[r * hsp + c] * inv[r];
}

/* Forward: k, v of every (batch, kv head) are packed first (in scratch,
 * after the per-thread tiles); then tasks of ATTN_QB query rows of one head,
 * the later (heavier: they see more keys) first, so the two threads finish
 * together even when another process takes a core for a while. */
static void cpu_attn_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                         const float *v, const int *sp, float *scratch, int B, int T, int H,
                         int KV, int HS) {
    (void)ctx;
    int G = H / KV, qs = H * HS, ks = KV * HS, tp = round_up(T, ATTN_KB), hsp = round_up(HS, ATTN_NR);
    int nqb = (T + ATTN_QB - 1) / ATTN_QB;
    size_t m = (size_t)tp * hsp;
    float *packed = scratch + (size_t)omp_get_max_threads() * attn_fwd_thread_floats(T, HS);
    float scale = 1.0f / sqrtf((float)HS);
    const AttnKernels *kern = attn_kernels();
#pragma omp parallel
    {
        float *qt = scratch + (size_t)omp_get_thread_num() * attn_fwd_thread_floats(T, HS);
        float *ot = qt + ATTN_MR * hsp, *sb = ot + ATTN_MR * hsp;
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int kh = 0; kh < KV; kh++) {
                size_t kvo = (size_t)b * T * ks + (size_t)kh * HS;
                float *kt = packed + ((size_t)b * KV + kh) * 2 * m;
                pack_head(NULL, kt, k + kvo, ks, 1.0f, T, tp, HS, hsp);
                pack_head(kt + m, NULL, v + kvo, ks, 1.0f, T, tp, HS, hsp);
            }
#pragma omp for collapse(3) schedule(dynamic)
        for (int x = 0; x < nqb; x++)
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++) {
                    int i0 = (nqb - 1 - x) * ATTN_QB, i1 = i0 + ATTN_QB < T ? i0 + ATTN_QB : T;
                    const float *kt = packed + ((size_t)b * KV + h / G) * 2 * m;
                    size_t qo = (size_t)b * T * qs + (size_t)h * HS;
                    for (int i = i0; i < i1; i += ATTN_MR) {
                        int nr = T - i < ATTN_MR ? T - i : ATTN_MR;
                        pack_head(qt, NULL, q + qo + (size_t)i * qs, qs, scale, nr, ATTN_MR, HS, hsp);
                        attn_fwd_tile(kern, out + qo, qs, lse + ((size_t)b * H + h) * T, qt, kt, kt + m, sb, ot,
                                      sp + (size_t)b * T * 3, i, T, HS, hsp);
                    }
                }
    }
}

/* Packed buffers of one backward task (see cpu_attn_bwd). */
typedef struct {
    const AttnKernels *kern;
    float *kt, *vt, *kp, *qp, *dop, *dq, *dk, *dv, *drow, *lrow, *s, *dp, *p, *ds;
} AttnBwdBufs;

/* Backward of one head against the keys [j0, j0 + ATTN_KB). Tiles of
 * scores that no row of six sees (above the diagonal, before a document)
 * are not computed, and the products skip the rows and keys they would
 * multiply by zero. */
static void attn_bwd_block(const AttnBwdBufs *w, const int *pb, int j0, int T, int HS, int hsp) {
    int jl = (j0 + ATTN_KB < T ? j0 + ATTN_KB : T) - 1, qend = j0;
    for (int t = j0; t < T && doc_start(pb, t) <= jl; t++) { /* the rows that see a key of the block: within [j0, qend) */
        int lo, hi;
        if (visible_keys(pb, t, j0, jl, &lo, &hi)) qend = t + 1;
    }
    qend = round_up(qend, ATTN_MR);
    for (int c0 = j0; c0 < qend; c0 += ATTN_QC) {
        int c1 = c0 + ATTN_QC < qend ? c0 + ATTN_QC : qend;
        for (int i0 = c0; i0 < c1; i0 += ATTN_MR) {
            float *p = w->p + (size_t)(i0 - c0) * ATTN_KB, *ds = w->ds + (size_t)(i0 - c0) * ATTN_KB;
            int lo[ATTN_MR], hi[ATTN_MR], klo = ATTN_KB, khi = -1; /* visible keys of each row, of all */
            for (int r = 0; r < ATTN_MR; r++) {
                int t = i0 + r;
                lo[r] = 1, hi[r] = 0;
                if (t < T && visible_keys(pb, t, j0, jl, &lo[r], &hi[r])) lo[r] -= j0, hi[r] -= j0;
                if (lo[r] <= hi[r]) {
                    klo = lo[r] < klo ? lo[r] : klo;
                    khi = hi[r] > khi ? hi[r] : khi;
                }
            }
            int j1 = khi < 0 ? 0 : khi / ATTN_NR * ATTN_NR + ATTN_NR, ja = klo / ATTN_NR * ATTN_NR;
            if (ja > j1) ja = j1;
            int h0, h1, ha, hb, nr = T - i0 < ATTN_MR ? T - i0 : ATTN_MR; /* tiles [ha, hb): in every row's hole */
            common_hole(pb, i0, nr, &h0, &h1);
            hole_tiles(h0, h1, j0, &ha, &hb);
            ha = ha > ja ? ha : ja, hb = hb < j1 ? hb : j1, hb = hb > ha ? hb : ha;
            for (int j = 0; j < ATTN_KB; j += ATTN_NR) {
                if (j < ja || j >= j1 || (j >= ha && j < hb)) {
                    for (int r = 0; r < ATTN_MR; r++) {
                        memset(w->s + r * ATTN_KB + j, 0, ATTN_NR * sizeof(float));
                        memset(w->dp + r * ATTN_KB + j, 0, ATTN_NR * sizeof(float));
                    }
                    continue;
                }
                w->kern->tile(w->s + j, ATTN_KB, w->qp + (size_t)i0 * hsp, hsp, 1,
                              w->kt + (size_t)(j0 + j) * HS, ATTN_NR, HS, 0);
                w->kern->tile(w->dp + j, ATTN_KB, w->dop + (size_t)i0 * hsp, hsp, 1,
                              w->vt + (size_t)(j0 + j) * HS, ATTN_NR, HS, 0);
            }
            for (int r = 0; r < ATTN_MR && i0 + r < T; r++) mask_hole(w->s + r * ATTN_KB, pb, i0 + r, j0, ATTN_KB, 0, ATTN_KB);
            for (int r = 0; r < ATTN_MR; r++)
                w->kern->probs(p + r * ATTN_KB, ds + r * ATTN_KB, w->s + r * ATTN_KB, w->dp + r * ATTN_KB,
                               w->lrow[i0 + r], w->drow[i0 + r], lo[r], hi[r]);
            for (int c = 0; c < hsp && ja < j1; c += ATTN_NR) { /* dq += dS k, around the hole */
                w->kern->tile(w->dq + (size_t)i0 * hsp + c, hsp, ds + ja, ATTN_KB, 1,
                              w->kp + (size_t)(j0 + ja) * hsp + c, hsp, ha - ja, 1);
                w->kern->tile(w->dq + (size_t)i0 * hsp + c, hsp, ds + hb, ATTN_KB, 1,
                              w->kp + (size_t)(j0 + hb) * hsp + c, hsp, j1 - hb, 1);
            }
        }
        for (int i = 0; i < ATTN_KB; i += ATTN_MR) { /* dv += P^T dO, dk += dS^T q */
            int k0 = j0 + i > c0 ? j0 + i - c0 : 0; /* rows before key j0 + i do not see it */
            for (int c = 0; c < hsp && c0 + k0 < c1; c += ATTN_NR) {
                size_t row = (size_t)(j0 + i) * hsp + c, col = (size_t)(c0 + k0) * hsp + c;
                w->kern->tile(w->dv + row, hsp, w->p + (size_t)k0 * ATTN_KB + i, 1, ATTN_KB, w->dop + col, hsp,
                              c1 - c0 - k0, 1);
                w->kern->tile(w->dk + row, hsp, w->ds + (size_t)k0 * ATTN_KB + i, 1, ATTN_KB, w->qp + col, hsp,
                              c1 - c0 - k0, 1);
            }
        }
    }
}

/* (Row, key block) pairs with the block before key s: the backward's work
 * up to s (each costs about one tile of rows against a block). */
static long attn_pairs_before(const int *pb, int T, int s) {
    long n = 0;
    for (int t = 0; t < T; t++) {
        int b0 = doc_start(pb, t) / ATTN_KB, b1 = t / ATTN_KB, last = s / ATTN_KB - 1;
        b1 = b1 < last ? b1 : last;
        n += b1 >= b0 ? b1 - b0 + 1 : 0;
        /* less the blocks inside its hole, which it skips */
        int k0 = (pb[3 * t + 1] + ATTN_KB - 1) / ATTN_KB, k1 = pb[3 * t + 2] / ATTN_KB - 1;
        k0 = k0 > b0 ? k0 : b0, k1 = k1 < b1 ? k1 : b1;
        n -= k1 >= k0 ? k1 - k0 + 1 : 0;
    }
    return n;
}

/* The backward splits the key blocks of a batch row into two parts of
 * about equal work, [0, split) and [split, T): the first key of the second. */
static int attn_bwd_split(const int *pb, int T) {
    int lo = 0, hi = (T + ATTN_KB - 1) / ATTN_KB;
    long total = attn_pairs_before(pb, T, hi * ATTN_KB);
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (2 * attn_pairs_before(pb, T, mid * ATTN_KB) >= total) hi = mid;
        else lo = mid + 1;
    }
    return lo * ATTN_KB;
}

/* Backward: one task per (part, batch, kv head), the part a range of key
 * blocks [k0, k1) split by equal work. The G query heads sharing the kv
 * head accumulate into its dk, dv rows [k0, k1) on one thread, in a fixed
 * order, and write them whole. dq gets both parts: the first writes it, the
 * second (rows >= k0 only: rows before do not see its keys) writes a partial
 * in scratch that is added after, always in that order, so the result does
 * not depend on the threads. q is packed scaled, so dS^T q carries the
 * scale of dk; dq gets it on the way out. */
static void cpu_attn_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                         const float *out, const float *lse, const float *q, const float *k,
                         const float *v, const int *sp, float *scratch, int B, int T, int H,
                         int KV, int HS) {
    (void)ctx;
    int G = H / KV, qs = H * HS, ks = KV * HS, tp = round_up(T, ATTN_KB), hsp = round_up(HS, ATTN_NR);
    size_t m = (size_t)tp * hsp;
    float *partial = scratch + (size_t)omp_get_max_threads() * attn_thread_floats(T, HS); /* (B, H, T, HS) */
    float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel
    {
        AttnBwdBufs w;
        w.kern = attn_kernels();
        w.kt = scratch + (size_t)omp_get_thread_num() * attn_thread_floats(T, HS);
        w.vt = w.kt + m; w.kp = w.vt + m; w.qp = w.kp + m; w.dop = w.qp + m;
        w.dq = w.dop + m; w.dk = w.dq + m; w.dv = w.dk + m; w.drow = w.dv + m; w.lrow = w.drow + tp;
        w.s = w.lrow + tp; w.dp = w.s + ATTN_MR * ATTN_KB; w.p = w.dp + ATTN_MR * ATTN_KB;
        w.ds = w.p + ATTN_QC * ATTN_KB;
#pragma omp for collapse(3) schedule(dynamic)
        for (int part = 0; part < 2; part++)
            for (int b = 0; b < B; b++)
                for (int kh = 0; kh < KV; kh++) {
                    const int *pb = sp + (size_t)b * T * 3;
                    int split = attn_bwd_split(pb, T), k0 = part ? split : 0, k1 = part ? T : split;
                    k1 = k1 < T ? k1 : T;
                    if (k0 >= k1) continue;
                    int kend = part ? tp : k1; /* packed key rows [k0, kend) */
                    size_t kvo = (size_t)b * T * ks + (size_t)kh * HS;
                    pack_head(w.kp + (size_t)k0 * hsp, w.kt + (size_t)k0 * HS, k + kvo + (size_t)k0 * ks, ks, 1.0f,
                              k1 - k0, kend - k0, HS, hsp);
                    pack_head(NULL, w.vt + (size_t)k0 * HS, v + kvo + (size_t)k0 * ks, ks, 1.0f, k1 - k0, kend - k0,
                              HS, hsp);
                    memset(w.dk + (size_t)k0 * hsp, 0, (size_t)(kend - k0) * hsp * sizeof(float));
                    memset(w.dv + (size_t)k0 * hsp, 0, (size_t)(kend - k0) * hsp * sizeof(float));
                    for (int h = kh * G; h < (kh + 1) * G; h++) {
                        size_t qo = (size_t)b * T * qs + (size_t)h * HS, r0 = (size_t)k0 * hsp;
                        pack_head(w.qp + r0, NULL, q + qo + (size_t)k0 * qs, qs, scale, T - k0, tp - k0, HS, hsp);
                        pack_head(w.dop + r0, NULL, dout + qo + (size_t)k0 * qs, qs, 1.0f, T - k0, tp - k0, HS, hsp);
                        memset(w.dq + r0, 0, (m - r0) * sizeof(float));
                        for (int t = k0; t < tp; t++) { /* D_t = rowsum(dO * O) = sum_j P_tj dP_tj */
                            const float *o = out + qo + (size_t)t * qs, *d = w.dop + (size_t)t * hsp;
                            for (int c = 0; t + 8 < T && c < HS; c += 16) __builtin_prefetch(o + 8 * (size_t)qs + c);
                            float dt = 0.0f;
                            for (int c = 0; t < T && c < HS; c++) dt += d[c] * o[c];
                            w.drow[t] = dt;
                            w.lrow[t] = t < T ? lse[((size_t)b * H + h) * T + t] : 0.0f;
                        }
                        for (int j0 = k0; j0 < k1; j0 += ATTN_KB) attn_bwd_block(&w, pb, j0, T, HS, hsp);
                        float *dst = part ? partial + ((size_t)b * H + h) * T * HS : dq + qo;
                        int ld = part ? HS : qs;
                        for (int t = k0; t < T; t++)
                            for (int c = 0; c < HS; c++) dst[(size_t)t * ld + c] = w.dq[(size_t)t * hsp + c] * scale;
                    }
                    for (int t = k0; t < k1; t++)
                        for (int c = 0; c < HS; c++) {
                            dk[kvo + (size_t)t * ks + c] = w.dk[(size_t)t * hsp + c];
                            dv[kvo + (size_t)t * ks + c] = w.dv[(size_t)t * hsp + c];
                        }
                }
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                const float *src = partial + ((size_t)b * H + h) * T * HS;
                float *dst = dq + (size_t)b * T * qs + (size_t)h * HS;
                for (int t = attn_bwd_split(sp + (size_t)b * T * 3, T); t < T; t++)
                    for (int c = 0; c < HS; c++) dst[(size_t)t * qs + c] += src[(size_t)t * HS + c];
            }
    }
}

static void cpu_attn_decode(void *ctx, float *out, const float *q, const float *k, const float *v,
                            float *scratch, int S, int H, int KV, int HS) {
    (void)ctx;
    int G = H / KV, ks = KV * HS;
    float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel for
    for (int h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * HS, *kh = k + (size_t)(h / G) * HS, *vh = v + (size_t)(h / G) * HS;
        float *s = scratch + (size_t)h * S, *o = out + (size_t)h * HS;
        for (int j = 0; j < S; j++) {
            float d = 0.0f;
            for (int c = 0; c < HS; c++) d += qh[c] * kh[(size_t)j * ks + c];
            s[j] = d * scale;
        }
        float sum = vec_exp_sum(s, vec_max(s, S), S);
        for (int c = 0; c < HS; c++) o[c] = 0.0f;
        for (int j = 0; j < S; j++) {
            float p = s[j] / sum;
            for (int c = 0; c < HS; c++) o[c] += p * vh[(size_t)j * ks + c];
        }
    }
}

// ----------------------------------------------------------------------------
// SwiGLU (Shazeer 2020)

#define SWIGLU_BLOCK 4096

VECTOR_CLONES static void swiglu_fwd_block(float *out, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) out[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
}

VECTOR_CLONES static void swiglu_bwd_block(float *dg, float *du, const float *dout, const float *g,
                                           const float *u, int n) {
    for (int i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + exp_approx(-g[i]));
        float silu = g[i] * s;
        dg[i] = dout[i] * u[i] * (s + silu * (1.0f - s));
        du[i] = dout[i] * silu;
    }
}

static void cpu_swiglu_fwd(void *ctx, float *out, const float *g, const float *u, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i += SWIGLU_BLOCK)
        swiglu_fwd_block(out + i, g + i, u + i, (int)(n - i < SWIGLU_BLOCK ? n - i : SWIGLU_BLOCK));
}

static void cpu_swiglu_bwd(void *ctx, float *dg, float *du, const float *dout, const float *g,
                           const float *u, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i += SWIGLU_BLOCK) {
        int k = (int)(n - i < SWIGLU_BLOCK ? n - i : SWIGLU_BLOCK);
        swiglu_bwd_block(dg + i, du + i, dout + i, g + i, u + i, k);
    }
}

// ----------------------------------------------------------------------------
// LM head + cross-entropy

/* Chunked over rows of tokens rather than over the vocabulary: a chunk's
 * (rows x V) logits live in scratch, so memory is bounded by CE_FLOATS and
 * no GEMM is recomputed (a vocabulary split needs an online log-sum-exp and
 * a second logits GEMM in the backward; the LM head is the largest GEMM of
 * the small models). */
/* A chunk is the next (up to R) rows whose target is not LC_IGNORE: an
 * ignored row only gets row_loss 0, row_mean 0 and a zero dx row, and costs
 * no GEMM (RL and completion-only SFT ignore most rows: 97% of the RL
 * benchmark's). A chunk of scattered rows is gathered into xg (after the
 * logits in scratch) and its dx computed into dxg and scattered back; a
 * contiguous one (every dense batch) reads x and writes dx in place, as
 * before. The gradient sums over the same rows; only dW's order can change. */
static int lmhead_chunk(int *idx, float *dx, float *row_loss, float *row_mean, const int *targets, int *n, int N,
                        int D, int R) {
    int nr = 0;
    for (; *n < N && nr < R; (*n)++) {
        if (targets[*n] != LC_IGNORE) {
            idx[nr++] = *n;
            continue;
        }
        if (row_loss) row_loss[*n] = 0.0f;
        if (row_mean) row_mean[*n] = 0.0f;
        if (dx) memset(dx + (size_t)*n * D, 0, (size_t)D * sizeof(float));
    }
    return nr;
}

/* Both heads: row_scale (NULL: scale for every row) weighs each row's
 * dlogits; row_mean gets the rows' mean logits when not NULL. */
static double lmhead(float *dx, float *dw, float *row_loss, float *row_mean, const float *x, const float *w,
                     const QTensor *qw, float *work, const int *targets, const float *row_scale, float *scratch, int N,
                     int D, int V, float scale) {
    int R = ce_rows(V);
    if (qw && R > QCE_FLOATS / V) R = QCE_FLOATS / V > 8 ? QCE_FLOATS / V : 8;
    int Rc = R < N ? R : N, idx[CE_ROWS_MAX];
    /* scratch: logits (Rc, V), then x and dx of a gathered chunk (Rc, D) each */
    float *lg = scratch, *xg = scratch + (size_t)Rc * V, *dxg = xg + (size_t)Rc * D;
    double total = 0.0;
    int next = 0, nr;
    while ((nr = lmhead_chunk(idx, dx, row_loss, row_mean, targets, &next, N, D, R)) > 0) {
        int dense = idx[nr - 1] - idx[0] == nr - 1;
        const float *xc = x + (size_t)idx[0] * D;
        if (!dense) {
#pragma omp parallel for
            for (int r = 0; r < nr; r++)
                memcpy(xg + (size_t)r * D, x + (size_t)idx[r] * D, (size_t)D * sizeof(float));
            xc = xg;
        }
        if (qw)
            q_gemm_nt(lg, V, xc, nr, qw, work);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, V, D, 1.0f, xc, D, w, D, 0.0f, lg, V);
        double chunk = 0.0;
#pragma omp parallel for reduction(+ : chunk)
        for (int r = 0; r < nr; r++) {
            float *l = lg + (size_t)r * V;
            int n = idx[r], tgt = targets[n];
            if (row_mean) {
                double s = 0.0;
                for (int v = 0; v < V; v++) s += l[v];
                row_mean[n] = (float)(s / V);
            }
            float lt = l[tgt], mx = vec_max(l, V);
            float sum = vec_exp_sum(l, mx, V); /* l now holds exp(logit - max) */
            float loss = mx + logf(sum) - lt;
            if (row_loss) row_loss[n] = loss;
            chunk += loss;
            if (dx) {
                float sc = row_scale ? row_scale[n] : scale;
                vec_scale(l, sc / sum, V); /* sc * softmax */
                l[tgt] -= sc;
            }
        }
        total += chunk;
        if (dx) {
            float *dxc = dense ? dx + (size_t)idx[0] * D : dxg;
            if (qw)
                q_gemm_nn(dxc, lg, V, nr, qw, work, 0);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, D, V, 1.0f, lg, V, w, D, 0.0f, dxc, D);
            if (!dense)
#pragma omp parallel for
                for (int r = 0; r < nr; r++)
                    memcpy(dx + (size_t)idx[r] * D, dxg + (size_t)r * D, (size_t)D * sizeof(float));
            if (dw) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, D, nr, 1.0f, lg, V, xc, D, 1.0f, dw, D);
        }
    }
    return total;
}

static double cpu_lmhead_ce(void *ctx, float *dx, float *dw, float *row_loss, const float *x,
                            const float *w, const int *targets, float *scratch, int N, int D, int V,
                            float scale) {
    (void)ctx;
    return lmhead(dx, dw, row_loss, NULL, x, w, NULL, NULL, targets, NULL, scratch, N, D, V, scale);
}

static double cpu_lmhead_rows(void *ctx, float *dx, float *dw, float *row_loss, float *row_mean, const float *x,
                              const float *w, const int *targets, const float *row_scale, float *scratch, int N,
                              int D, int V) {
    (void)ctx;
    return lmhead(dx, dw, row_loss, row_mean, x, w, NULL, NULL, targets, row_scale, scratch, N, D, V, 0.0f);
}

static double cpu_qlmhead(void *ctx, float *dx, float *row_loss, float *row_mean, const float *x, const QTensor *w,
                          const int *targets, const float *row_scale, float scale, float *scratch, float *work,
                          int N) {
    (void)ctx;
    return lmhead(dx, NULL, row_loss, row_mean, x, NULL, w, work, targets, row_scale, scratch, N, w->cols, w->rows,
                  scale);
}

// ----------------------------------------------------------------------------
// LM head + distillation: lmhead's chunk loop with the teacher's logits (or
// its top-K) beside the student's; each row's arithmetic is kd_row
// (ops_cpu_kd.c). Half of lmhead's rows per chunk, so the two chunks of
// logits take the memory lmhead's one does.

static int kd_rows(int N, int V) {
    int r = ce_rows(V) / 2 < 8 ? 8 : ce_rows(V) / 2;
    return N > 0 && N < r ? N : r;
}

static size_t cpu_kd_scratch_floats(void *ctx, int N, int V) {
    (void)ctx;
    return (size_t)2 * kd_rows(N, V) * V;
}

static double cpu_lmhead_kd(void *ctx, float *dx, float *dw, float *row_ce, float *row_kd, const float *x,
                            const float *w, const float *tx, const float *tw, const QTensor *tq, const int *tk_ids,
                            const float *tk_logp, int K, const int *targets, const KdSpec *kd, float scale,
                            float *scratch, float *work, int N, int D, int Dt, int V) {
    (void)ctx;
    KdRowArgs a;
    kd_prepare(&a, kd, scale);
    LC_ASSERT(tx ? (tw != NULL) != (tq != NULL) : (tk_ids && tk_logp && K >= 1 && K <= V));
    LC_ASSERT(!tq || (tq->rows == V && tq->cols == Dt));
    int R = kd_rows(N, V);
    float *lg = scratch, *tl = scratch + (size_t)R * V;
    double total = 0.0;
    for (int n0 = 0; n0 < N; n0 += R) {
        int nr = n0 + R < N ? R : N - n0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, V, D, 1.0f, x + (size_t)n0 * D, D, w, D, 0.0f, lg, V);
        if (tq)
            q_gemm_nt(tl, V, tx + (size_t)n0 * Dt, nr, tq, work);
        else if (tx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, V, Dt, 1.0f, tx + (size_t)n0 * Dt, Dt, tw, Dt,
                        0.0f, tl, V);
        double chunk = 0.0;
#pragma omp parallel for reduction(+ : chunk)
        for (int r = 0; r < nr; r++) {
            int n = n0 + r, tgt = targets[n];
            float *l = lg + (size_t)r * V;
            double ce = 0.0, d = 0.0;
            if (tgt == LC_IGNORE) {
                if (dx) memset(l, 0, (size_t)V * sizeof(float));
            } else {
                const int *ids = tx ? NULL : tk_ids + (size_t)n * K;
                const float *lp = tx ? NULL : tk_logp + (size_t)n * K;
                kd_row(&a, l, tl + (size_t)r * V, ids, lp, K, tgt, V, dx != NULL, &ce, &d);
            }
            if (row_ce) row_ce[n] = (float)ce;
            if (row_kd) row_kd[n] = (float)d;
            chunk += a.ce_w * ce + a.kdf * d;
        }
        total += chunk;
        if (dx) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, D, V, 1.0f, lg, V, w, D, 0.0f,
                        dx + (size_t)n0 * D, D);
            if (dw)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, D, nr, 1.0f, lg, V, x + (size_t)n0 * D, D,
                            1.0f, dw, D);
        }
    }
    return total;
}

// ----------------------------------------------------------------------------
// vector ops and AdamW

static void cpu_add(void *ctx, float *y, const float *x, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static double cpu_sumsq(void *ctx, const float *x, size_t n) {
    (void)ctx;
    /* Fixed-size blocks summed in order: the result does not depend on the
     * thread count. */
    enum { BLK = 4096 };
    size_t nb = (n + BLK - 1) / BLK;
    double total = 0.0;
    for (size_t b0 = 0; b0 < nb; b0 += 256) {
        double part[256];
        size_t b1 = b0 + 256 < nb ? b0 + 256 : nb;
#pragma omp parallel for
        for (size_t b = b0; b < b1; b++) {
            size_t i1 = (b + 1) * BLK < n ? (b + 1) * BLK : n;
            double s = 0.0;
            for (size_t i = b * BLK; i < i1; i++) s += (double)x[i] * x[i];
            part[b - b0] = s;
        }
        for (size_t b = b0; b < b1; b++) total += part[b - b0];
    }
    return total;
}

static void cpu_scale(void *ctx, float *x, float s, size_t n) {
    (void)ctx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                      float b1, float b2, float eps, float wd, int t, float gscale) {
    (void)ctx;
    /* torch.optim.AdamW (foreach=False): p *= 1 - lr*wd;
     * p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps) */
    float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
    float step = lr / bc1, bc2s = sqrtf(bc2), decay = 1.0f - lr * wd;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        float mi = m[i] = b1 * m[i] + (1.0f - b1) * gi;
        float vi = v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) / bc2s + eps);
    }
}

const Ops ops_cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .scratch_floats = cpu_scratch_floats,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .lora_fwd = cpu_lora_fwd,
    .lora_bwd = cpu_lora_bwd,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .attn_decode = cpu_attn_decode,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .lmhead_ce = cpu_lmhead_ce,
    .lmhead_rows = cpu_lmhead_rows,
    .rows_pack_floats = cpu_rows_pack_floats,
    .rows_pack = cpu_rows_pack,
    .matmul_rows = cpu_matmul_rows,
    .attn_paged = cpu_attn_paged,
    .rows_scatter = cpu_rows_scatter,
    .rows_gather = cpu_rows_gather,
    .add = cpu_add,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .adamw = cpu_adamw,
    .qwork_floats = cpu_qwork_floats,
    .qmatmul_fwd = cpu_qmatmul_fwd,
    .qmatmul_bwd = cpu_qmatmul_bwd,
    .qembed_fwd = cpu_qembed_fwd,
    .qlmhead = cpu_qlmhead,
    .qmatmul_rows = cpu_qmatmul_rows,
    .kd_scratch_floats = cpu_kd_scratch_floats,
    .lmhead_kd = cpu_lmhead_kd,
};
