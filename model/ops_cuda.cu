/*
 * ops_cuda.cu: the CUDA backend of the op table (ops.h), bf16 mixed
 * precision. Same op names and order as ops_cpu.c (cuda_X for cpu_X).
 *
 * Storage: activations bf16 in the model's float-sized slots; rstd, lse,
 * row_loss float32; parameters, gradients, AdamW moments float32 (the
 * master copy). Every buffer passed to bind_params gets a bf16 shadow at
 * the same element offsets, which the GEMMs read: it is refreshed slice by
 * slice by the fused AdamW, and wholly (lazily, before the next GEMM) after
 * an upload or zero into the buffer. Arithmetic accumulates in float32;
 * the loss and the gradient norm are reduced in double, in a fixed order.
 *
 * One stream; every CUDA/cuBLASLt call checked with file:line (CK, LTK);
 * device memory is allocated only by alloc and, once at the first call of a
 * shape, by ws_get (the workspace grows, never shrinks). Deterministic: no
 * floating-point atomics; the embedding backward sorts token ids (CUB's
 * stable radix sort) and sums each token's rows in index order; column sums
 * (RMSNorm's dw) go through fixed row-block partials.
 *
 * GEMMs: cuBLASLt, bf16 A/B, float32 compute; the weight gradient reads bf16
 * activations and accumulates into the float32 gradient (C = D float32,
 * beta 1). The sampling engine's matmul_rows is the exception: a
 * hand-written kernel whose order of summation does not depend on the
 * number of rows (batch invariance, see its section). Attention:
 * cuda_attn.cu (flash-attention-style kernels, the paged one for the
 * engine; cuDNN's SDPA is not wired in yet, see that file). UNTESTED ON
 * HARDWARE as written: tests/test_gpu.c is the check.
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cub/device/device_radix_sort.cuh>

extern "C" {
#include "base.h"
#include "lora.h"
#include "ops.h"
#include "ops_cuda.h"
}
#include "cuda_impl.cuh"

// ----------------------------------------------------------------------------
// context

#define MAX_BOUND 8
#define MAX_PLANS 1024 /* shapes x tiles x chunks: the quantised ops add a plan per tile and chunk size */
#define LT_WS_BYTES (32u << 20) /* cuBLASLt workspace: 32 MiB is what NVIDIA suggests for Hopper */

typedef struct {
    float *p;              /* float32 master buffer */
    size_t n;
    __nv_bfloat16 *shadow; /* bf16 copy, same offsets */
    int dirty;             /* shadow stale (upload/zero since the last refresh) */
} Bound;

/* One cuBLASLt problem: descriptors and the heuristic's algorithm, made on
 * first use and kept (no heuristic query per call). */
typedef struct {
    int m, n, k, ta, tb, tD, beta1, align, lda, ldb, ldd;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} Plan;

struct CudaCtx {
    int dev;
    cudaDeviceProp prop;
    cudaStream_t s;
    cublasLtHandle_t lt;
    void *lt_ws;
    void *ws;       /* general workspace (ws_get) */
    size_t ws_bytes;
    double *dsum;   /* one double: reductions land here before download */
    Bound bound[MAX_BOUND];
    Plan plans[MAX_PLANS];
    int nplans;
    size_t allocated; /* bytes through alloc (start-up only), frees not subtracted */
    int prof;                  /* LC_CUDA_PROFILE=1: time every op (synchronising) */
    double op_time[OP_COUNT];  /* seconds per op id */
    long op_calls[OP_COUNT];
};

static CudaCtx *C(void *ctx) {
    LC_ASSERT(ctx != NULL); /* ops_cuda needs the context from cuda_ctx_init */
    return (CudaCtx *)ctx;
}

/* The general workspace: grows (with a sync) when a call needs more; in a
 * training run that happens during the first step only. */
static void *ws_get(CudaCtx *c, size_t bytes) {
    if (bytes <= c->ws_bytes) return c->ws;
    CK(cudaStreamSynchronize(c->s));
    if (c->ws) CK(cudaFree(c->ws));
    bytes = (bytes + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    cudaError_t r = cudaMalloc(&c->ws, bytes);
    if (r != cudaSuccess) LC_FATAL("CUDA workspace of %zu MiB: %s", bytes >> 20, cudaGetErrorString(r));
    c->ws_bytes = bytes;
    return c->ws;
}

extern "C" int cuda_device_check(Err *e) {
    int n = 0;
    cudaError_t r = cudaGetDeviceCount(&n);
    if (r != cudaSuccess || n == 0)
        return err_set(e, "--device cuda: no CUDA GPU found (%s)",
                       r != cudaSuccess ? cudaGetErrorString(r) : "no device");
    return 0;
}

/* Per-op times for "where does the step go": with LC_CUDA_PROFILE=1 every
 * op synchronises the stream before and after itself, so the wall time
 * between is its GPU time (the run gets slower; the shares hold). The table
 * goes to stderr when the context is freed. */
#define PROF_IN(c, t0) double t0 = prof_in(c)
#define PROF_OUT(c, id, t0) prof_out(c, id, t0)
static double prof_in(CudaCtx *c) {
    if (!c->prof) return 0.0;
    CK(cudaStreamSynchronize(c->s));
    return time_now();
}
static void prof_out(CudaCtx *c, int id, double t0) {
    if (!c->prof) return;
    CK(cudaStreamSynchronize(c->s));
    c->op_time[id] += time_now() - t0;
    c->op_calls[id]++;
}
static void prof_print(const CudaCtx *c) {
    double tot = 0.0;
    for (int i = 0; i < OP_COUNT; i++) tot += c->op_time[i];
    if (!c->prof || tot == 0.0) return;
    fprintf(stderr, "ops_cuda profile (LC_CUDA_PROFILE=1, synchronised per op):\n");
    for (int i = 0; i < OP_COUNT; i++)
        if (c->op_calls[i])
            fprintf(stderr, "  %-12s %8ld calls %10.1f ms %5.1f%%\n", op_names[i], c->op_calls[i],
                    1e3 * c->op_time[i], 100.0 * c->op_time[i] / tot);
}

extern "C" void *cuda_ctx_init(Err *e) {
    if (cuda_device_check(e)) return NULL;
    CudaCtx *c = (CudaCtx *)xcalloc(1, sizeof *c);
    c->dev = 0;
    CK(cudaSetDevice(0));
    CK(cudaGetDeviceProperties(&c->prop, 0));
    CK(cudaStreamCreateWithFlags(&c->s, cudaStreamNonBlocking));
    LTK(cublasLtCreate(&c->lt));
    CK(cudaMalloc(&c->lt_ws, LT_WS_BYTES));
    CK(cudaMalloc(&c->dsum, sizeof(double)));
    attn_init(&c->prop);
    cuda_quant_init();
    const char *pe = getenv("LC_CUDA_PROFILE");
    c->prof = pe && strcmp(pe, "0") != 0;
    return c;
}

extern "C" void cuda_ctx_free(void *ctx) {
    if (!ctx) return;
    CudaCtx *c = (CudaCtx *)ctx;
    CK(cudaStreamSynchronize(c->s));
    prof_print(c);
    for (int i = 0; i < c->nplans; i++) {
        Plan *p = &c->plans[i];
        cublasLtMatmulDescDestroy(p->op);
        cublasLtMatrixLayoutDestroy(p->a);
        cublasLtMatrixLayoutDestroy(p->b);
        cublasLtMatrixLayoutDestroy(p->c);
    }
    for (int i = 0; i < MAX_BOUND; i++)
        if (c->bound[i].shadow) CK(cudaFree(c->bound[i].shadow));
    if (c->ws) CK(cudaFree(c->ws));
    CK(cudaFree(c->lt_ws));
    CK(cudaFree(c->dsum));
    cublasLtDestroy(c->lt);
    CK(cudaStreamDestroy(c->s));
    free(c);
}

extern "C" void cuda_mem_info(void *ctx, size_t *free_b, size_t *total_b) {
    (void)ctx;
    CK(cudaMemGetInfo(free_b, total_b));
}

extern "C" size_t cuda_mem_peak(void *ctx) { return C(ctx)->allocated + C(ctx)->ws_bytes + LT_WS_BYTES; }
extern "C" const char *cuda_device_name(void *ctx) { return C(ctx)->prop.name; }

// ----------------------------------------------------------------------------
// memory

static void *cuda_alloc(void *ctx, size_t bytes) {
    CudaCtx *c = C(ctx);
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    cudaError_t r = cudaMalloc(&p, bytes);
    if (r != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        LC_FATAL("out of GPU memory: %.2f GiB asked, %.2f GiB free of %.2f GiB (%s); try a smaller --batch",
                 bytes / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0, cudaGetErrorString(r));
    }
    CK(cudaMemsetAsync(p, 0, bytes, c->s));
    c->allocated += bytes;
    return p;
}

static void cuda_free(void *ctx, void *p) {
    CudaCtx *c = C(ctx);
    if (!p) return;
    CK(cudaStreamSynchronize(c->s));
    for (int i = 0; i < MAX_BOUND; i++)
        if (c->bound[i].p == p) {
            CK(cudaFree(c->bound[i].shadow));
            memset(&c->bound[i], 0, sizeof c->bound[i]);
        }
    CK(cudaFree(p));
}

/* Mark shadows stale when [p, p+bytes) touches a bound buffer. */
static void touch(CudaCtx *c, const void *p, size_t bytes) {
    const char *a = (const char *)p;
    for (int i = 0; i < MAX_BOUND; i++) {
        Bound *b = &c->bound[i];
        const char *lo = (const char *)b->p, *hi = lo + b->n * sizeof(float);
        if (b->p && a < hi && a + bytes > lo) b->dirty = 1;
    }
}

static void cuda_upload(void *ctx, void *dst, const void *src, size_t bytes) {
    CudaCtx *c = C(ctx);
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->s));
    /* the host buffer may be reused at once by the caller */
    CK(cudaStreamSynchronize(c->s));
    touch(c, dst, bytes);
}

static void cuda_download(void *ctx, void *dst, const void *src, size_t bytes) {
    CudaCtx *c = C(ctx);
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->s));
    CK(cudaStreamSynchronize(c->s));
}

static void cuda_zero(void *ctx, void *p, size_t bytes) {
    CudaCtx *c = C(ctx);
    CK(cudaMemsetAsync(p, 0, bytes, c->s));
    touch(c, p, bytes);
}

static void cuda_sync(void *ctx) { CK(cudaStreamSynchronize(C(ctx)->s)); }

// ----------------------------------------------------------------------------
// elementwise helpers

#define TPB 256
static unsigned blocks_for(size_t n) {
    size_t b = (n + TPB - 1) / TPB;
    return (unsigned)(b > 65535u * 16 ? 65535u * 16 : b); /* grid-stride loops cover the rest */
}

__global__ void k_f32_to_bf16(bf16 *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(x[i]);
}

static void cuda_bind_params(void *ctx, float *p, size_t n) {
    CudaCtx *c = C(ctx);
    for (int i = 0; i < MAX_BOUND; i++)
        if (!c->bound[i].p) {
            Bound *b = &c->bound[i];
            b->p = p;
            b->n = n;
            b->shadow = (bf16 *)cuda_alloc(ctx, n * sizeof(bf16));
            b->dirty = 1;
            return;
        }
    LC_FATAL("bind_params: more than %d parameter buffers bound", MAX_BOUND);
}

/* The bf16 shadow of weight w (a pointer into a bound buffer), refreshed
 * first if stale. */
static const bf16 *shadow_of(CudaCtx *c, const float *w) {
    for (int i = 0; i < MAX_BOUND; i++) {
        Bound *b = &c->bound[i];
        if (b->p && w >= b->p && w < b->p + b->n) {
            if (b->dirty) {
                k_f32_to_bf16<<<blocks_for(b->n), TPB, 0, c->s>>>(b->shadow, b->p, b->n);
                CK(cudaGetLastError());
                b->dirty = 0;
            }
            return b->shadow + (w - b->p);
        }
    }
    LC_FATAL("ops_cuda: weight %p is not in a buffer given to bind_params", (const void *)w);
}

static Bound *bound_of(CudaCtx *c, const float *p) {
    for (int i = 0; i < MAX_BOUND; i++)
        if (c->bound[i].p && p >= c->bound[i].p && p < c->bound[i].p + c->bound[i].n) return &c->bound[i];
    return NULL;
}

__global__ void k_bf16_to_f32(float *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

/* Activations to host float32: convert on the device into the workspace,
 * then one copy. */
static void cuda_download_act(void *ctx, float *host, const float *src, size_t n) {
    CudaCtx *c = C(ctx);
    float *tmp = (float *)ws_get(c, n * sizeof(float));
    k_bf16_to_f32<<<blocks_for(n), TPB, 0, c->s>>>(tmp, (const bf16 *)src, n);
    CK(cudaGetLastError());
    cuda_download(ctx, host, tmp, n * sizeof(float));
}

/* Host float32 into activations: one copy into the workspace, then
 * converted on the device. */
static void cuda_upload_act(void *ctx, float *dst, const float *host, size_t n) {
    CudaCtx *c = C(ctx);
    float *tmp = (float *)ws_get(c, n * sizeof(float));
    cuda_upload(ctx, tmp, host, n * sizeof(float));
    k_f32_to_bf16<<<blocks_for(n), TPB, 0, c->s>>>((bf16 *)dst, tmp, n);
    CK(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// GEMM through cuBLASLt (column-major): D(m, n) = op(A)(m, k) op(B)(k, n)
// (+ D when beta1). A and B bf16; D bf16 or float32 (tD = 0 / 1). The
// row-major products of the op table map onto it as in each caller. A plan
// is keyed by the leading dimensions too: the quantised ops pass column
// slices of wider matrices (a tile's logits inside a row of V).

static int align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    return (a % 16 == 0) ? 16 : (a % 8 == 0) ? 8 : (a % 4 == 0) ? 4 : 2;
}

static void gemm(CudaCtx *c, int ta, int tb, int m, int n, int k, const bf16 *A, int lda, const bf16 *B,
                 int ldb, void *D, int ldd, int tD, int beta1) {
    int al = align_of(A);
    if (align_of(B) < al) al = align_of(B);
    if (align_of(D) < al) al = align_of(D);
    Plan *p = NULL;
    for (int i = 0; i < c->nplans; i++) {
        Plan *q = &c->plans[i];
        if (q->m == m && q->n == n && q->k == k && q->ta == ta && q->tb == tb && q->tD == tD &&
            q->beta1 == beta1 && q->align == al && q->lda == lda && q->ldb == ldb && q->ldd == ldd) { p = q; break; }
    }
    if (!p) {
        LC_ASSERT(c->nplans < MAX_PLANS);
        p = &c->plans[c->nplans++];
        memset(p, 0, sizeof *p);
        p->m = m, p->n = n, p->k = k, p->ta = ta, p->tb = tb, p->tD = tD, p->beta1 = beta1, p->align = al;
        p->lda = lda, p->ldb = ldb, p->ldd = ldd;
        cudaDataType_t dt = tD ? CUDA_R_32F : CUDA_R_16BF;
        LTK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        LTK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa));
        LTK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob));
        /* stored shapes: A is (m, k) or, transposed, (k, m); likewise B */
        LTK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda));
        LTK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb));
        LTK(cublasLtMatrixLayoutCreate(&p->c, dt, m, n, ldd));
        cublasLtMatmulPreference_t pref;
        LTK(cublasLtMatmulPreferenceCreate(&pref));
        size_t wsb = LT_WS_BYTES;
        uint32_t a32 = (uint32_t)al;
        LTK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
        LTK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32, sizeof a32));
        LTK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a32, sizeof a32));
        LTK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a32, sizeof a32));
        LTK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a32, sizeof a32));
        cublasLtMatmulHeuristicResult_t h;
        int got = 0;
        LTK(cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &h, &got));
        cublasLtMatmulPreferenceDestroy(pref);
        if (got == 0)
            LC_FATAL("cuBLASLt: no algorithm for m=%d n=%d k=%d ta=%d tb=%d D=%s align=%d", m, n, k, ta, tb,
                     tD ? "f32" : "bf16", al);
        p->algo = h.algo;
    }
    float one = 1.0f, beta = beta1 ? 1.0f : 0.0f;
    LTK(cublasLtMatmul(c->lt, p->op, &one, A, p->a, B, p->b, &beta, D, p->c, D, p->c, &p->algo, c->lt_ws,
                       LT_WS_BYTES, c->s));
}

/* Row-major helpers shared by matmul and the LM head:
 *   fwd:  out(N, Dout) = x(N, Din) W(Dout, Din)^T  ->  col-major
 *         out^T(Dout, N) = W (op T on stored (Din, Dout)) . x^T
 *   dx:   dx(N, Din) = dout(N, Dout) W             ->  dx^T = W^T(Din, Dout) . dout^T
 *   dw:   dW(Dout, Din) += dout^T x                ->  dW^T(Din, Dout) = x^T(Din, N) . dout(N, Dout) */
static void gemm_fwd(CudaCtx *c, void *out, int tD, const bf16 *x, const bf16 *w, int N, int Din, int Dout) {
    gemm(c, 1, 0, Dout, N, Din, w, Din, x, Din, out, Dout, tD, 0);
}
static void gemm_dx(CudaCtx *c, bf16 *dx, const bf16 *dout, const bf16 *w, int N, int Din, int Dout, int acc) {
    gemm(c, 0, 0, Din, N, Dout, w, Din, dout, Dout, dx, Din, 0, acc);
}
static void gemm_dw(CudaCtx *c, float *dw, const bf16 *dout, const bf16 *x, int N, int Din, int Dout) {
    gemm(c, 0, 1, Din, Dout, N, x, Din, dout, Dout, dw, Din, 1, 1);
}

// ----------------------------------------------------------------------------
// scratch: the attention's per-row delta (B*H*T floats) or the LM head's
// chunk: float32 logits (rows x V), bf16 dlogits (rows x V) and N row
// losses. LM-head chunk rows: enough for 2^27 float32 logits (512 MiB),
// LC_CE_ROWS overrides (tests use it to exercise the chunking).

static int ce_rows(int N, int V) {
    long r = (1L << 27) / V;
    const char *s = getenv("LC_CE_ROWS");
    if (s && atol(s) > 0) r = atol(s);
    if (r < 1) r = 1;
    return r < N ? (int)r : N;
}

/* offsets in floats, rounded to 64 floats (256 B) for cuBLASLt's alignment */
static size_t r64(size_t n) { return (n + 63) / 64 * 64; }

static size_t cuda_scratch_floats(void *ctx, int B, int T, int H, int HS, int V, int D) {
    (void)ctx; (void)HS; (void)D;
    size_t N = (size_t)B * T, rows = (size_t)ce_rows((int)N, V);
    size_t attn = (size_t)B * H * T;
    size_t ce = r64(rows * V) + r64((rows * V + 1) / 2) + N;
    return attn > ce ? attn : ce;
}

// ----------------------------------------------------------------------------
// embedding

__global__ void k_embed_fwd(bf16 *out, const int *tok, const float *emb, int N, int D) {
    size_t n = (size_t)N * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / D, d = i % D;
        out[i] = __float2bfloat16(emb[(size_t)tok[r] * D + d]);
    }
}

static void cuda_embed_fwd(void *ctx, float *out, const int *tok, const float *emb, int N, int D) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_embed_fwd<<<blocks_for((size_t)N * D), TPB, 0, c->s>>>((bf16 *)out, tok, emb, N, D);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_EMBED, t0_);
}

/* After the stable sort, block i handles sorted index i if it starts a run
 * of equal tokens: it sums the run's dout rows in index order (float32) and
 * adds them to that token's gradient row. Blocks not at a run start exit. */
__global__ void k_embed_bwd(float *demb, const bf16 *dout, const int *skey, const int *sidx, int N, int D) {
    int i = blockIdx.x;
    if (i > 0 && skey[i] == skey[i - 1]) return;
    int tok = skey[i], end = i + 1;
    while (end < N && skey[end] == tok) end++;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float s = 0.0f;
        for (int j = i; j < end; j++) s += __bfloat162float(dout[(size_t)sidx[j] * D + d]);
        demb[(size_t)tok * D + d] += s;
    }
}

__global__ void k_iota(int *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = i;
}

static void cuda_embed_bwd(void *ctx, float *demb, const float *dout, const int *tok, int N, int D) {
    if (!demb) return; /* frozen embedding (LoRA) */
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    size_t tmp = 0;
    CK(cub::DeviceRadixSort::SortPairs(NULL, tmp, (const int *)NULL, (int *)NULL, (const int *)NULL,
                                       (int *)NULL, N, 0, 32, c->s));
    size_t ints = 3 * (size_t)N;
    char *w = (char *)ws_get(c, ints * sizeof(int) + tmp + 256);
    int *idx = (int *)w, *skey = idx + N, *sidx = skey + N;
    void *t = (void *)(((uintptr_t)(sidx + N) + 255) & ~(uintptr_t)255);
    k_iota<<<(N + TPB - 1) / TPB, TPB, 0, c->s>>>(idx, N);
    CK(cudaGetLastError());
    /* token ids are < 2^31: sorting all 32 bits of a non-negative int is exact */
    CK(cub::DeviceRadixSort::SortPairs(t, tmp, tok, skey, idx, sidx, N, 0, 32, c->s));
    k_embed_bwd<<<N, 128, 0, c->s>>>(demb, (const bf16 *)dout, skey, sidx, N, D);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_EMBED, t0_);
}

// ----------------------------------------------------------------------------
// RMSNorm: one warp per row; dw through row-block partials (deterministic)

__global__ void k_rmsnorm_fwd(bf16 *out, float *rstd, const bf16 *x, const float *w, int N, int D, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const bf16 *xr = x + (size_t)row * D;
    float ss = 0.0f;
    for (int d = lane; d < D; d += 32) {
        float v = __bfloat162float(xr[d]);
        ss += v * v;
    }
    ss = warp_sum(ss);
    float r = rsqrtf(ss / D + eps);
    for (int d = lane; d < D; d += 32) out[(size_t)row * D + d] = __float2bfloat16(__bfloat162float(xr[d]) * r * w[d]);
    if (lane == 0) rstd[row] = r;
}

static void cuda_rmsnorm_fwd(void *ctx, float *out, float *rstd, const float *x, const float *w, int N, int D,
                             float eps) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_rmsnorm_fwd<<<(N + 7) / 8, 256, 0, c->s>>>((bf16 *)out, rstd, (const bf16 *)x, w, N, D, eps);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_RMSNORM, t0_);
}

/* xhat = x * rstd, g = dout * w: dx += rstd * (g - xhat * mean(g * xhat)) */
__global__ void k_rmsnorm_bwd_dx(bf16 *dx, const bf16 *dout, const bf16 *x, const float *w, const float *rstd,
                                 int N, int D) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t o = (size_t)row * D;
    float r = rstd[row], dot = 0.0f;
    for (int d = lane; d < D; d += 32)
        dot += __bfloat162float(dout[o + d]) * w[d] * __bfloat162float(x[o + d]) * r;
    dot = warp_sum(dot) / D;
    for (int d = lane; d < D; d += 32) {
        float g = __bfloat162float(dout[o + d]) * w[d], xh = __bfloat162float(x[o + d]) * r;
        dx[o + d] = __float2bfloat16(__bfloat162float(dx[o + d]) + r * (g - xh * dot));
    }
}

#define RMS_RB 128 /* row blocks of the dw partial sums */

__global__ void k_rmsnorm_bwd_dw_part(float *part, const bf16 *dout, const bf16 *x, const float *rstd, int N,
                                      int D, int rows_per) {
    int d = blockIdx.x * blockDim.x + threadIdx.x, rb = blockIdx.y;
    if (d >= D) return;
    int r0 = rb * rows_per, r1 = min(N, r0 + rows_per);
    float s = 0.0f;
    for (int r = r0; r < r1; r++)
        s += __bfloat162float(dout[(size_t)r * D + d]) * __bfloat162float(x[(size_t)r * D + d]) * rstd[r];
    part[(size_t)rb * D + d] = s;
}

__global__ void k_colsum_add(float *dw, const float *part, int nb, int D) {
    int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D) return;
    float s = 0.0f;
    for (int b = 0; b < nb; b++) s += part[(size_t)b * D + d];
    dw[d] += s;
}

static void cuda_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int N, int D) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_rmsnorm_bwd_dx<<<(N + 7) / 8, 256, 0, c->s>>>((bf16 *)dx, (const bf16 *)dout, (const bf16 *)x, w, rstd, N, D);
    CK(cudaGetLastError());
    if (!dw) { PROF_OUT(C(ctx), OP_RMSNORM, t0_); return; } /* frozen gain (LoRA) */
    int nb = N < RMS_RB ? N : RMS_RB, rows_per = (N + nb - 1) / nb;
    nb = (N + rows_per - 1) / rows_per;
    float *part = (float *)ws_get(c, (size_t)nb * D * sizeof(float));
    dim3 g((D + TPB - 1) / TPB, nb);
    k_rmsnorm_bwd_dw_part<<<g, TPB, 0, c->s>>>(part, (const bf16 *)dout, (const bf16 *)x, rstd, N, D, rows_per);
    CK(cudaGetLastError());
    k_colsum_add<<<(D + TPB - 1) / TPB, TPB, 0, c->s>>>(dw, part, nb, D);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_RMSNORM, t0_);
}

// ----------------------------------------------------------------------------
// matmul

static void cuda_matmul_fwd(void *ctx, float *out, const float *x, const float *w, int N, int Din, int Dout) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    gemm_fwd(c, out, 0, (const bf16 *)x, shadow_of(c, w), N, Din, Dout);
    PROF_OUT(C(ctx), OP_MATMUL, t0_);
}

static void cuda_matmul_bwd(void *ctx, float *dx, float *dw, const float *dout, const float *x, const float *w,
                            int N, int Din, int Dout, int accum_dx) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    if (dx) gemm_dx(c, (bf16 *)dx, (const bf16 *)dout, shadow_of(c, w), N, Din, Dout, accum_dx);
    if (dw) gemm_dw(c, dw, (const bf16 *)dout, (const bf16 *)x, N, Din, Dout);
    PROF_OUT(C(ctx), OP_MATMUL, t0_);
}

// ----------------------------------------------------------------------------
// quantised weights (ops.h, "quantised frozen weights"), as ops_cpu.c: a
// tile of the weight's rows dequantised to bf16 in work (cuda_quant.cu:
// quant_rows' float32 values rounded to bf16, the rounding the bf16 shadow
// gives a float weight), then the cuBLASLt GEMM of the float op against the
// tile (bf16 operands, float32 accumulation). The forward's tiles are
// column slices of out, written once. The input gradient sums over the
// tiles in float32 (a workspace buffer of at most QACC floats, N taken in
// chunks beyond that) and is rounded to bf16 once at the end; when one tile
// holds the whole matrix it goes straight into dx as matmul_bwd does.

#define QTILE (1 << 23) /* bf16 elements of a tile (16 MiB): GEMMs of thousands of columns */
#define QACC (1 << 26)  /* floats of the input gradient's float32 sums (256 MiB) at most */

/* Called with ctx NULL by llama's memory estimate. */
static size_t cuda_qwork_floats(void *ctx, int Dmax) {
    (void)ctx;
    size_t tile = (size_t)16 * Dmax > QTILE ? (size_t)16 * Dmax : QTILE;
    return (tile + 1) / 2 + 64;
}

/* Rows of q per tile: as many as fit QTILE, a multiple of 16 (so column
 * slices stay 32-byte aligned), at least 16, at most all. */
static int q_tile_rows(const QTensor *q) {
    long tr = (long)QTILE / q->cols / 16 * 16;
    if (tr < 16) tr = 16;
    return tr < q->rows ? (int)tr : q->rows;
}

/* out(N, rows) (bf16, or float32 with tD; row stride ldo) = x(N, cols) q^T */
static void q_gemm_nt(CudaCtx *c, void *out, int tD, int ldo, const bf16 *x, int N, const QTensor *q, bf16 *tile) {
    int K = q->cols, tr = q_tile_rows(q);
    for (int r0 = 0; r0 < q->rows; r0 += tr) {
        int n = q->rows - r0 < tr ? q->rows - r0 : tr;
        cuda_quant_rows(c->s, tile, q, r0, n, NULL);
        void *o = tD ? (void *)((float *)out + r0) : (void *)((bf16 *)out + r0);
        gemm(c, 1, 0, n, N, K, tile, K, x, K, o, ldo, tD, 0);
    }
}

/* y = bf16(a), or bf16(y + a) with accum */
__global__ void k_acc_bf16(bf16 *y, const float *a, size_t n, int accum) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(accum ? __bfloat162float(y[i]) + a[i] : a[i]);
}

/* dx(N, cols) = (or += with accum) dy(N, rows) (row stride lddy) q; bf16 */
static void q_gemm_nn(CudaCtx *c, bf16 *dx, const bf16 *dy, int lddy, int N, const QTensor *q, bf16 *tile,
                      int accum) {
    int K = q->cols, tr = q_tile_rows(q);
    if (tr == q->rows) {
        cuda_quant_rows(c->s, tile, q, 0, q->rows, NULL);
        gemm(c, 0, 0, K, N, q->rows, tile, K, dy, lddy, dx, K, 0, accum);
        return;
    }
    int nc = QACC / K < N ? QACC / K : N;
    if (nc < 1) nc = 1;
    float *acc = (float *)ws_get(c, (size_t)nc * K * sizeof(float));
    for (int n0 = 0; n0 < N; n0 += nc) {
        int m = N - n0 < nc ? N - n0 : nc;
        for (int r0 = 0; r0 < q->rows; r0 += tr) {
            int n = q->rows - r0 < tr ? q->rows - r0 : tr;
            cuda_quant_rows(c->s, tile, q, r0, n, NULL);
            gemm(c, 0, 0, K, m, n, tile, K, dy + (size_t)n0 * lddy + r0, lddy, acc, K, 1, r0 > 0);
        }
        k_acc_bf16<<<blocks_for((size_t)m * K), TPB, 0, c->s>>>(dx + (size_t)n0 * K, acc, (size_t)m * K, accum);
        CK(cudaGetLastError());
    }
}

static void cuda_qmatmul_fwd(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N) {
    if (N <= 0) return;
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    q_gemm_nt(c, out, 0, w->rows, (const bf16 *)x, N, w, (bf16 *)work);
    PROF_OUT(C(ctx), OP_QMATMUL, t0_);
}

static void cuda_qmatmul_bwd(void *ctx, float *dx, const float *dout, const QTensor *w, float *work, int N,
                             int accum_dx) {
    if (N <= 0) return;
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    q_gemm_nn(c, (bf16 *)dx, (const bf16 *)dout, w->rows, N, w, (bf16 *)work, accum_dx);
    PROF_OUT(C(ctx), OP_QMATMUL, t0_);
}

/* rows tok[n] dequantised straight into the bf16 activations (no tile) */
static void cuda_qembed_fwd(void *ctx, float *out, const int *tok, const QTensor *emb, float *work, int N) {
    (void)work;
    PROF_IN(C(ctx), t0_);
    cuda_quant_rows(C(ctx)->s, (bf16 *)out, emb, 0, N, tok);
    PROF_OUT(C(ctx), OP_QEMBED, t0_);
}

// ----------------------------------------------------------------------------
// LoRA side path: the adapter weights are a bound buffer, so A and B reach
// cuBLASLt as their bf16 shadows (refreshed by the fused AdamW); the rank-r
// intermediates are bf16 in work, the weight gradients float32 (gemm_dw).
// cuBLASLt's alpha is fixed at 1 here, so s scales h (forward, dB) and dh.

__global__ void k_lora_drop(bf16 *d, const bf16 *x, size_t n, float p, float k, uint64_t seed, int l, int m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = lora_keep(seed, l, m, i, p) ? __float2bfloat16(__bfloat162float(x[i]) * k) : __float2bfloat16(0.0f);
}

/* dx += mask * t * k */
__global__ void k_lora_mask_add(bf16 *dx, const bf16 *t, size_t n, float p, float k, uint64_t seed, int l, int m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        if (lora_keep(seed, l, m, i, p))
            dx[i] = __float2bfloat16(__bfloat162float(dx[i]) + __bfloat162float(t[i]) * k);
}

__global__ void k_scale_bf16(bf16 *y, const bf16 *x, float s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(__bfloat162float(x[i]) * s);
}

/* work as bf16: two (N, r) pieces, then (N, Din); offsets 128-element
 * aligned (ops_lora_work_floats leaves the room) */
static bf16 *lora_piece(float *work, int N, int r, int k) {
    size_t nr = ((size_t)N * r + 127) / 128 * 128;
    return (bf16 *)work + (size_t)k * nr;
}

static void cuda_lora_fwd(void *ctx, float *y, float *h, const float *x, const float *A, const float *B,
                          float *work, int N, int Din, int Dout, int r, float s, float p, uint64_t seed,
                          int l, int m) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    size_t nx = (size_t)N * Din, nh = (size_t)N * r;
    bf16 *hs = lora_piece(work, N, r, 0), *d = lora_piece(work, N, r, 2);
    const bf16 *xin = (const bf16 *)x;
    if (p > 0) {
        k_lora_drop<<<blocks_for(nx), TPB, 0, c->s>>>(d, xin, nx, p, 1.0f / (1.0f - p), seed, l, m);
        CK(cudaGetLastError());
        xin = d;
    }
    gemm_fwd(c, h, 0, xin, shadow_of(c, A), N, Din, r);
    k_scale_bf16<<<blocks_for(nh), TPB, 0, c->s>>>(hs, (const bf16 *)h, s, nh);
    CK(cudaGetLastError());
    gemm(c, 1, 0, Dout, N, r, shadow_of(c, B), r, hs, r, y, Dout, 0, 1); /* y += hs B^T */
    PROF_OUT(C(ctx), OP_LORA, t0_);
}

static void cuda_lora_bwd(void *ctx, float *dx, float *dA, float *dB, const float *dy, const float *x,
                          const float *h, const float *A, const float *B, float *work, int N, int Din,
                          int Dout, int r, float s, float p, uint64_t seed, int l, int m) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    size_t nx = (size_t)N * Din, nh = (size_t)N * r;
    bf16 *hs = lora_piece(work, N, r, 0), *dh = lora_piece(work, N, r, 1), *d = lora_piece(work, N, r, 2);
    const bf16 *dyb = (const bf16 *)dy;
    float k = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    if (dB) {
        k_scale_bf16<<<blocks_for(nh), TPB, 0, c->s>>>(hs, (const bf16 *)h, s, nh);
        CK(cudaGetLastError());
        gemm_dw(c, dB, dyb, hs, N, r, Dout); /* dB += dy^T (s h) */
    }
    if (dA || dx) {
        gemm_dx(c, dh, dyb, shadow_of(c, B), N, r, Dout, 0); /* dh = dy B, then * s */
        k_scale_bf16<<<blocks_for(nh), TPB, 0, c->s>>>(dh, dh, s, nh);
        CK(cudaGetLastError());
    }
    if (dA) {
        const bf16 *xin = (const bf16 *)x;
        if (p > 0) {
            k_lora_drop<<<blocks_for(nx), TPB, 0, c->s>>>(d, xin, nx, p, k, seed, l, m);
            CK(cudaGetLastError());
            xin = d;
        }
        gemm_dw(c, dA, dh, xin, N, Din, r); /* dA += dh^T d */
    }
    if (dx && p == 0) gemm_dx(c, (bf16 *)dx, dh, shadow_of(c, A), N, Din, r, 1);
    if (dx && p > 0) {
        gemm_dx(c, d, dh, shadow_of(c, A), N, Din, r, 0);
        k_lora_mask_add<<<blocks_for(nx), TPB, 0, c->s>>>((bf16 *)dx, d, nx, p, k, seed, l, m);
        CK(cudaGetLastError());
    }
    PROF_OUT(C(ctx), OP_LORA, t0_);
}

// ----------------------------------------------------------------------------
// RoPE (rotate_half): pairs (i, i + HS/2), angle pos * inv_freq[i] via the
// float32 tables; sign -1 is the inverse rotation (the backward)

__global__ void k_rope(bf16 *x, const int *pos, const float *cs, const float *sn, int N, int nh, int HS,
                       float sign) {
    int half = HS / 2;
    size_t n = (size_t)N * nh * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(i % half);
        size_t rh = i / half; /* row * nh + head */
        int row = (int)(rh / nh);
        size_t t = (size_t)pos[row] * half + j;
        bf16 *v = x + rh * HS;
        float a = __bfloat162float(v[j]), b = __bfloat162float(v[j + half]), co = cs[t], si = sign * sn[t];
        v[j] = __float2bfloat16(a * co - b * si);
        v[j + half] = __float2bfloat16(b * co + a * si);
    }
}

static void cuda_rope_fwd(void *ctx, float *x, const int *pos, const float *cs, const float *sn, int N, int nh,
                          int HS) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_rope<<<blocks_for((size_t)N * nh * HS / 2), TPB, 0, c->s>>>((bf16 *)x, pos, cs, sn, N, nh, HS, 1.0f);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_ROPE, t0_);
}

static void cuda_rope_bwd(void *ctx, float *dx, const int *pos, const float *cs, const float *sn, int N, int nh,
                          int HS) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_rope<<<blocks_for((size_t)N * nh * HS / 2), TPB, 0, c->s>>>((bf16 *)dx, pos, cs, sn, N, nh, HS, -1.0f);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_ROPE, t0_);
}

// ----------------------------------------------------------------------------
// attention: kernels in cuda_attn.cu

static void cuda_attn_fwd(void *ctx, float *out, float *lse, const float *q, const float *k, const float *v,
                          const int *spans, float *scratch, int B, int T, int H, int KV, int HS) {
    PROF_IN(C(ctx), t0_);
    (void)scratch;
    attn_fwd(C(ctx)->s, (bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, spans, B, T, H, KV, HS);
    PROF_OUT(C(ctx), OP_ATTN, t0_);
}

static void cuda_attn_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *out,
                          const float *lse, const float *q, const float *k, const float *v, const int *spans,
                          float *scratch, int B, int T, int H, int KV, int HS) {
    PROF_IN(C(ctx), t0_);
    attn_bwd(C(ctx)->s, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, (const bf16 *)out, lse,
             (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, spans, scratch, B, T, H, KV, HS);
    PROF_OUT(C(ctx), OP_ATTN, t0_);
}

static void cuda_attn_decode(void *ctx, float *out, const float *q, const float *k, const float *v,
                             float *scratch, int S, int H, int KV, int HS) {
    PROF_IN(C(ctx), t0_);
    attn_decode(C(ctx)->s, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, scratch, S, H, KV, HS);
    PROF_OUT(C(ctx), OP_ATTN_DECODE, t0_);
}

// ----------------------------------------------------------------------------
// the sampling engine (ops.h): each row computed the same way whatever the
// batch. matmul_rows is a hand-written kernel, not cuBLASLt: cuBLASLt picks
// its kernel (tile, split-K, stages) by shape, and even one algorithm pinned
// for every N with split-K off gives no documented promise that an output's
// reduction order stays the same when the tile it falls in, or the number of
// tiles, changes. Here the order is written down and does not depend on N:
// Din is cut into chunks of MR_CH = 8 elements, chunk c goes to lane c % 32,
// a lane sums its chunks in increasing c with one fmaf per element (starting
// at +0), and the 32 lane sums meet in a fixed xor-butterfly. How many rows
// (RM) and outputs (MR_RO) a warp carries along only changes which sums a
// lane holds at once, never the arithmetic of one sum, so RM is chosen by N
// for speed and the result stays bit-identical (tests/test_gpu.c checks row
// by row against N = 1). Float32 accumulation from the bf16 x and the bf16
// shadow of w; 16-byte loads when rows are 16-byte aligned, scalar loads
// otherwise, the same sums either way. Memory-bound at decode (N <= ~16),
// CUDA cores rather than tensor cores for the big prefill chunks: correct
// and invariant first (a tensor-core tile with a fixed K order is the speed
// route, measured by gpu_bench_engine).

#define MR_CH 8    /* elements of Din per lane chunk: one 16-byte bf16 load */
#define MR_RO 4    /* outputs (rows of w) per warp */
#define MR_WARPS 8 /* warps per block; a block covers MR_WARPS * MR_RO outputs */

/* Chunk k0 .. k0 + 7 of a bf16 row as floats (zeros past Din). */
template <bool VEC> static __device__ inline void mr_load(float *f, const bf16 *row, int k0, int Din) {
    if (VEC) {
        uint4 u = *(const uint4 *)(row + k0);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int e = 0; e < MR_CH / 2; e++) {
            float2 t = __bfloat1622float2(h[e]);
            f[2 * e] = t.x, f[2 * e + 1] = t.y;
        }
    } else {
#pragma unroll
        for (int e = 0; e < MR_CH; e++) f[e] = k0 + e < Din ? __bfloat162float(row[k0 + e]) : 0.0f;
    }
}

/* out (N, Dout) with row stride ldo (a column slice of a wider matrix for
 * qmatmul_rows' tiles). grid (ceil(N / RM), ceil(Dout / (MR_WARPS * MR_RO))); warp w computes rows
 * [blockIdx.x * RM, + RM) x outputs [(blockIdx.y * MR_WARPS + w) * MR_RO, + MR_RO).
 * Row tiles vary fastest, so blocks that read the same slice of w run
 * together and find it in L2. */
template <int RM, bool VEC>
__global__ void __launch_bounds__(MR_WARPS * 32) k_matmul_rows(bf16 *out, const bf16 *x, const bf16 *w, int N,
                                                              int Din, int Dout, int ldo, float add) {
    int lane = threadIdx.x % 32;
    int o0 = (blockIdx.y * MR_WARPS + threadIdx.x / 32) * MR_RO, n0 = blockIdx.x * RM;
    if (o0 >= Dout) return; /* the whole warp */
    float acc[RM][MR_RO];
#pragma unroll
    for (int r = 0; r < RM; r++)
#pragma unroll
        for (int j = 0; j < MR_RO; j++) acc[r][j] = 0.0f;
    int nch = (Din + MR_CH - 1) / MR_CH;
    for (int c = lane; c < nch; c += 32) {
        int k0 = c * MR_CH;
        float wv[MR_RO][MR_CH], xv[MR_CH];
#pragma unroll
        for (int j = 0; j < MR_RO; j++) {
            if (o0 + j < Dout) mr_load<VEC>(wv[j], w + (size_t)(o0 + j) * Din, k0, Din);
            else
#pragma unroll
                for (int e = 0; e < MR_CH; e++) wv[j][e] = 0.0f;
        }
#pragma unroll
        for (int r = 0; r < RM; r++) {
            if (n0 + r >= N) break; /* rows past N are never stored */
            mr_load<VEC>(xv, x + (size_t)(n0 + r) * Din, k0, Din);
#pragma unroll
            for (int j = 0; j < MR_RO; j++)
#pragma unroll
                for (int e = 0; e < MR_CH; e++) acc[r][j] = fmaf(xv[e], wv[j][e], acc[r][j]);
        }
    }
#pragma unroll
    for (int r = 0; r < RM; r++)
#pragma unroll
        for (int j = 0; j < MR_RO; j++) {
            float s = acc[r][j];
            for (int o = 16; o > 0; o /= 2) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
            /* every lane holds the same total; lane r * MR_RO + j (mod 32) stores it */
            int n = n0 + r, oo = o0 + j;
            if (lane == (r * MR_RO + j) % 32 && n < N && oo < Dout) {
                bf16 *y = out + (size_t)n * ldo + oo;
                /* ops.h: the product rounded to float, then out += add * it */
                float v = add == 0.0f ? s : __fadd_rn(__bfloat162float(*y), __fmul_rn(add, s));
                *y = __float2bfloat16(v);
            }
        }
}

template <int RM>
static void matmul_rows_launch(CudaCtx *c, bf16 *out, const bf16 *x, const bf16 *w, int N, int Din, int Dout,
                               int ldo, float add) {
    dim3 grid((N + RM - 1) / RM, (Dout + MR_WARPS * MR_RO - 1) / (MR_WARPS * MR_RO));
    LC_ASSERT(grid.y <= 65535);
    /* the vector path needs every row start 16-byte aligned; both paths do the same sums */
    int vec = Din % MR_CH == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0;
    if (vec) k_matmul_rows<RM, true><<<grid, MR_WARPS * 32, 0, c->s>>>(out, x, w, N, Din, Dout, ldo, add);
    else k_matmul_rows<RM, false><<<grid, MR_WARPS * 32, 0, c->s>>>(out, x, w, N, Din, Dout, ldo, add);
    CK(cudaGetLastError());
}

/* The engine's packed weights: a bf16 copy of w (Dout, Din), row-major,
 * in the engine's own buffer (no shadow lookup). */
static size_t cuda_rows_pack_floats(void *ctx, int Din, int Dout) {
    (void)ctx;
    return ((size_t)Din * Dout + 1) / 2;
}

static void cuda_rows_pack(void *ctx, float *wp, const float *w, int Din, int Dout) {
    CudaCtx *c = C(ctx);
    size_t n = (size_t)Din * Dout;
    k_f32_to_bf16<<<blocks_for(n), TPB, 0, c->s>>>((bf16 *)wp, w, n);
    CK(cudaGetLastError());
}

/* rows per warp by N, for speed only (see above): 1 at decode, where the
 * weights dominate, more when rows can share each weight load */
static void matmul_rows_any(CudaCtx *c, bf16 *out, const bf16 *x, const bf16 *w, int N, int Din, int Dout, int ldo,
                            float add) {
    if (N < 4) matmul_rows_launch<1>(c, out, x, w, N, Din, Dout, ldo, add);
    else if (N < 32) matmul_rows_launch<4>(c, out, x, w, N, Din, Dout, ldo, add);
    else matmul_rows_launch<8>(c, out, x, w, N, Din, Dout, ldo, add);
}

static void cuda_matmul_rows(void *ctx, float *out, const float *x, const float *wp, int N, int Din, int Dout,
                             float add) {
    if (N <= 0 || Dout <= 0) return;
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    matmul_rows_any(c, (bf16 *)out, (const bf16 *)x, (const bf16 *)wp, N, Din, Dout, Dout, add);
    PROF_OUT(C(ctx), OP_MATMUL_ROWS, t0_);
}

/* qmatmul_rows: a tile of w's rows dequantised to bf16 in work (the values
 * rows_pack gives the dequantised float matrix: quant_rows' float32 rounded
 * to nearest bf16), then matmul_rows' kernel on the tile into its columns
 * of out. Each output is one sum of the kernel's fixed order, so the result
 * is matmul_rows' on the dequantised, packed matrix bit for bit, whatever N
 * and wherever the tiles end. The tile is dequantised once per call and
 * read by all N rows (at decode the dequantisation is the price: a fused
 * kernel reading the blocks directly is the speed route). */
static void cuda_qmatmul_rows(void *ctx, float *out, const float *x, const QTensor *w, float *work, int N, float add) {
    if (N <= 0) return;
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    bf16 *tile = (bf16 *)work;
    int tr = q_tile_rows(w);
    for (int r0 = 0; r0 < w->rows; r0 += tr) {
        int n = w->rows - r0 < tr ? w->rows - r0 : tr;
        cuda_quant_rows(c->s, tile, w, r0, n, NULL);
        matmul_rows_any(c, (bf16 *)out + r0, (const bf16 *)x, tile, N, w->cols, n, w->rows, add);
    }
    PROF_OUT(C(ctx), OP_QMATMUL_ROWS, t0_);
}

/* Paged attention: the kernel is in cuda_attn.cu. A pool is one (rows,
 * KV*HS) activation: bf16 row r at element r*KV*HS, the layout rows_scatter
 * writes (not attn_decode's float-strided cache rows). */
static void cuda_attn_paged(void *ctx, float *out, const float *q, const float *k, const float *v, const int *ptab,
                            const int *slot, const int *len, int N, int H, int KV, int HS, int P, int maxp) {
    if (N <= 0) return;
    PROF_IN(C(ctx), t0_);
    attn_paged(C(ctx)->s, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, ptab, slot, len, N, H, KV,
               HS, P, maxp);
    PROF_OUT(C(ctx), OP_ATTN_PAGED, t0_);
}

/* Row copies of bf16 activations, W wide: scatter dst[idx[n]] = src[n],
 * gather dst[n] = src[idx[n]]. Bit copies: nothing to round. */
__global__ void k_rows(bf16 *dst, const bf16 *src, const int *idx, int N, int W, int scatter) {
    size_t n = (size_t)N * W;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / W, e = i % W, j = (size_t)idx[r] * W + e;
        if (scatter) dst[j] = src[i];
        else dst[i] = src[j];
    }
}

static void cuda_rows_scatter(void *ctx, float *dst, const float *src, const int *idx, int N, int W) {
    if (N <= 0 || W <= 0) return;
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_rows<<<blocks_for((size_t)N * W), TPB, 0, c->s>>>((bf16 *)dst, (const bf16 *)src, idx, N, W, 1);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_ROWS, t0_);
}

static void cuda_rows_gather(void *ctx, float *dst, const float *src, const int *idx, int N, int W) {
    if (N <= 0 || W <= 0) return;
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_rows<<<blocks_for((size_t)N * W), TPB, 0, c->s>>>((bf16 *)dst, (const bf16 *)src, idx, N, W, 0);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_ROWS, t0_);
}

// ----------------------------------------------------------------------------
// SwiGLU: out = silu(g) * u; dg = dout * u * s * (1 + g * (1 - s)), du = dout * silu(g)

__global__ void k_swiglu_fwd(bf16 *out, const bf16 *g, const bf16 *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = __bfloat162float(g[i]);
        out[i] = __float2bfloat16(gi / (1.0f + expf(-gi)) * __bfloat162float(u[i]));
    }
}

__global__ void k_swiglu_bwd(bf16 *dg, bf16 *du, const bf16 *dout, const bf16 *g, const bf16 *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = __bfloat162float(g[i]), ui = __bfloat162float(u[i]), d = __bfloat162float(dout[i]);
        float s = 1.0f / (1.0f + expf(-gi));
        dg[i] = __float2bfloat16(d * ui * s * (1.0f + gi * (1.0f - s)));
        du[i] = __float2bfloat16(d * gi * s);
    }
}

static void cuda_swiglu_fwd(void *ctx, float *out, const float *g, const float *u, size_t n) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_swiglu_fwd<<<blocks_for(n), TPB, 0, c->s>>>((bf16 *)out, (const bf16 *)g, (const bf16 *)u, n);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_SWIGLU, t0_);
}

static void cuda_swiglu_bwd(void *ctx, float *dg, float *du, const float *dout, const float *g, const float *u,
                            size_t n) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_swiglu_bwd<<<blocks_for(n), TPB, 0, c->s>>>((bf16 *)dg, (bf16 *)du, (const bf16 *)dout, (const bf16 *)g,
                                                  (const bf16 *)u, n);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_SWIGLU, t0_);
}

// ----------------------------------------------------------------------------
// LM head + cross-entropy, a chunk of rows at a time: GEMM to float32
// logits, one block per row for the softmax (loss into row_loss, bf16
// dlogits = scale * (softmax - onehot)), then the two GEMMs of the backward.

__global__ void k_ce(float *loss, bf16 *dl, const float *logits, const int *tgt, int rows, int V, float scale,
                     int want_grad, float *mean, const float *rscale) {
    int r = blockIdx.x;
    if (r >= rows) return;
    const float *z = logits + (size_t)r * V;
    __shared__ float red[32];
    if (mean) { /* lmhead_rows: the row's mean logit */
        float a = 0.0f;
        for (int v = threadIdx.x; v < V; v += blockDim.x) a += z[v];
        a = block_sum(a, red);
        if (threadIdx.x == 0) mean[r] = tgt[r] == LC_IGNORE ? 0.0f : a / V;
    }
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, z[v]);
    mx = block_max(mx, red);
    float s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += expf(z[v] - mx);
    s = block_sum(s, red);
    int t = tgt[r];
    float lse = mx + logf(s);
    if (threadIdx.x == 0) loss[r] = t == LC_IGNORE ? 0.0f : lse - z[t];
    if (!want_grad) return;
    bf16 *d = dl + (size_t)r * V;
    float sc = t == LC_IGNORE ? 0.0f : rscale ? rscale[r] : scale;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        d[v] = __float2bfloat16(sc * (expf(z[v] - lse) - (v == t ? 1.0f : 0.0f)));
}

/* The block's total of each thread's s, as a tree in a fixed order (so the
 * same inputs give the same bits on every GPU); blockDim a power of two, red
 * blockDim doubles of shared memory. */
static __device__ double block_tree_sum(double s, double *red) {
    red[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    return red[0];
}

/* sum of x(n) (float or double) in double, one block of 1024, fixed order: *out = */
template <typename T> __global__ void k_sum(double *out, const T *x, size_t n) {
    __shared__ double red[1024];
    double s = 0.0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = block_tree_sum(s, red);
    if (threadIdx.x == 0) *out = s;
}

/* All heads: row_scale NULL (scale for every row) or per row; row_mean NULL
 * or per row; the head w (float32, bound) or qw (quantised: the logits and
 * dx GEMMs go through its tiles in work, no dw). */
static double lmhead(void *ctx, float *dx, float *dw, float *row_loss, float *row_mean, const float *x, const float *w,
                     const QTensor *qw, float *work, const int *targets, const float *row_scale, float *scratch, int N,
                     int D, int V, float scale) {
    CudaCtx *c = C(ctx);
    int rows = ce_rows(N, V);
    size_t cv = (size_t)rows * V;
    float *logits = scratch;
    bf16 *dl = (bf16 *)(scratch + r64(cv));
    float *loss = row_loss ? row_loss : scratch + r64(cv) + r64((cv + 1) / 2);
    const bf16 *wb = qw ? NULL : shadow_of(c, w), *xb = (const bf16 *)x;
    for (int r0 = 0; r0 < N; r0 += rows) {
        int n = N - r0 < rows ? N - r0 : rows;
        if (qw) q_gemm_nt(c, logits, 1, V, xb + (size_t)r0 * D, n, qw, (bf16 *)work);
        else gemm_fwd(c, logits, 1, xb + (size_t)r0 * D, wb, n, D, V);
        k_ce<<<n, 1024, 0, c->s>>>(loss + r0, dl, logits, targets + r0, n, V, scale, dx != NULL,
                                   row_mean ? row_mean + r0 : NULL, row_scale ? row_scale + r0 : NULL);
        CK(cudaGetLastError());
        if (dx) {
            if (qw) q_gemm_nn(c, (bf16 *)dx + (size_t)r0 * D, dl, V, n, qw, (bf16 *)work, 0);
            else gemm_dx(c, (bf16 *)dx + (size_t)r0 * D, dl, wb, n, D, V, 0);
            if (dw) gemm_dw(c, dw, dl, xb + (size_t)r0 * D, n, D, V);
        }
    }
    k_sum<<<1, 1024, 0, c->s>>>(c->dsum, loss, (size_t)N);
    CK(cudaGetLastError());
    double sum;
    cuda_download(ctx, &sum, c->dsum, sizeof sum);
    return sum;
}

static double cuda_lmhead_ce(void *ctx, float *dx, float *dw, float *row_loss, const float *x, const float *w,
                             const int *targets, float *scratch, int N, int D, int V, float scale) {
    PROF_IN(C(ctx), t0_);
    double sum = lmhead(ctx, dx, dw, row_loss, NULL, x, w, NULL, NULL, targets, NULL, scratch, N, D, V, scale);
    PROF_OUT(C(ctx), OP_LMHEAD_CE, t0_);
    return sum;
}

static double cuda_lmhead_rows(void *ctx, float *dx, float *dw, float *row_loss, float *row_mean, const float *x,
                               const float *w, const int *targets, const float *row_scale, float *scratch, int N,
                               int D, int V) {
    PROF_IN(C(ctx), t0_);
    double sum = lmhead(ctx, dx, dw, row_loss, row_mean, x, w, NULL, NULL, targets, row_scale, scratch, N, D, V, 0.0f);
    PROF_OUT(C(ctx), OP_LMHEAD_ROWS, t0_);
    return sum;
}

static double cuda_qlmhead(void *ctx, float *dx, float *row_loss, float *row_mean, const float *x, const QTensor *w,
                           const int *targets, const float *row_scale, float scale, float *scratch, float *work,
                           int N) {
    PROF_IN(C(ctx), t0_);
    double sum = lmhead(ctx, dx, NULL, row_loss, row_mean, x, NULL, w, work, targets, row_scale, scratch, N, w->cols,
                        w->rows, scale);
    PROF_OUT(C(ctx), OP_QLMHEAD, t0_);
    return sum;
}

// ----------------------------------------------------------------------------
// LM head + distillation: lmhead's chunk loop with the teacher's logits
// beside the student's (a dense teacher: its GEMM, or its quantised tiles)
// or its top K; the rows' arithmetic is cuda_kd.cu's. Chunks of half
// lmhead's rows. Scratch: student and teacher logits float32 (rows x V
// each), bf16 dlogits, and three float32 values per row (the weighted
// total, and row_ce / row_kd where the caller passes NULL).

static int kd_rows(int N, int V) {
    int r = ce_rows(N, V) / 2;
    return r < 1 ? 1 : r;
}

static size_t cuda_kd_scratch_floats(void *ctx, int N, int V) {
    (void)ctx;
    size_t cv = (size_t)kd_rows(N, V) * V;
    return 2 * r64(cv) + r64((cv + 1) / 2) + 3 * r64((size_t)N);
}

static double cuda_lmhead_kd(void *ctx, float *dx, float *dw, float *row_ce, float *row_kd, const float *x,
                             const float *w, const float *tx, const float *tw, const QTensor *tq, const int *tk_ids,
                             const float *tk_logp, int K, const int *targets, const KdSpec *kd, float scale,
                             float *scratch, float *work, int N, int D, int Dt, int V) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    LC_ASSERT(kd->div >= 0 && kd->div < KD_COUNT && kd->tau > 0.0f && kd->beta >= 0.0f && kd->beta <= 1.0f);
    LC_ASSERT(tx ? (tw != NULL) != (tq != NULL) : (tk_ids && tk_logp && K >= 1 && K <= V));
    LC_ASSERT(!tq || (tq->rows == V && tq->cols == Dt));
    int rows = kd_rows(N, V);
    size_t cv = (size_t)rows * V;
    float *logits = scratch, *tlogits = scratch + r64(cv);
    bf16 *dl = (bf16 *)(scratch + 2 * r64(cv));
    float *tot = scratch + 2 * r64(cv) + r64((cv + 1) / 2);
    float *rce = row_ce ? row_ce : tot + r64((size_t)N), *rkd = row_kd ? row_kd : tot + 2 * r64((size_t)N);
    const bf16 *wb = shadow_of(c, w), *xb = (const bf16 *)x, *txb = (const bf16 *)tx;
    const bf16 *twb = tx && !tq ? shadow_of(c, tw) : NULL;
    for (int r0 = 0; r0 < N; r0 += rows) {
        int n = N - r0 < rows ? N - r0 : rows;
        gemm_fwd(c, logits, 1, xb + (size_t)r0 * D, wb, n, D, V);
        if (tq) q_gemm_nt(c, tlogits, 1, V, txb + (size_t)r0 * Dt, n, tq, (bf16 *)work);
        else if (tx) gemm_fwd(c, tlogits, 1, txb + (size_t)r0 * Dt, twb, n, Dt, V);
        kd_rows_launch(c->s, tot + r0, rce + r0, rkd + r0, dl, logits, tx ? tlogits : NULL,
                       tx ? NULL : tk_ids + (size_t)r0 * K, tx ? NULL : tk_logp + (size_t)r0 * K, K, targets + r0, n,
                       V, kd, scale, dx != NULL);
        if (dx) {
            gemm_dx(c, (bf16 *)dx + (size_t)r0 * D, dl, wb, n, D, V, 0);
            if (dw) gemm_dw(c, dw, dl, xb + (size_t)r0 * D, n, D, V);
        }
    }
    k_sum<<<1, 1024, 0, c->s>>>(c->dsum, tot, (size_t)N);
    CK(cudaGetLastError());
    double sum;
    cuda_download(ctx, &sum, c->dsum, sizeof sum);
    PROF_OUT(C(ctx), OP_LMHEAD_KD, t0_);
    return sum;
}

// ----------------------------------------------------------------------------
// add, sumsq, scale, AdamW

__global__ void k_add(bf16 *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(__bfloat162float(y[i]) + __bfloat162float(x[i]));
}

static void cuda_add(void *ctx, float *y, const float *x, size_t n) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_add<<<blocks_for(n), TPB, 0, c->s>>>((bf16 *)y, (const bf16 *)x, n);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_ADD, t0_);
}

#define SS_BLOCKS 1024 /* fixed grid: the partials and their order do not depend on the GPU */

__global__ void k_sumsq_part(double *part, const float *x, size_t n) {
    __shared__ double red[TPB];
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    s = block_tree_sum(s, red);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

static double cuda_sumsq(void *ctx, const float *x, size_t n) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    double *part = (double *)ws_get(c, SS_BLOCKS * sizeof(double));
    k_sumsq_part<<<SS_BLOCKS, TPB, 0, c->s>>>(part, x, n);
    CK(cudaGetLastError());
    k_sum<<<1, 1024, 0, c->s>>>(c->dsum, part, (size_t)SS_BLOCKS);
    CK(cudaGetLastError());
    double s;
    cuda_download(ctx, &s, c->dsum, sizeof s);
    PROF_OUT(C(ctx), OP_SUMSQ, t0_);
    return s;
}

__global__ void k_scale(float *x, float s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

static void cuda_scale(void *ctx, float *x, float s, size_t n) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    k_scale<<<blocks_for(n), TPB, 0, c->s>>>(x, s, n);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_SCALE, t0_);
}

/* torch.optim.AdamW, as cpu_adamw; also writes the bf16 shadow of p when p
 * is bound (sh != NULL), so the GEMMs of the next step read fresh weights. */
__global__ void k_adamw(float *p, bf16 *sh, const float *g, float *m, float *v, size_t n, float b1, float b2,
                        float eps, float step, float bc2s, float decay, float gscale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i] * gscale;
        float mi = m[i] = b1 * m[i] + (1.0f - b1) * gi;
        float vi = v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float pi = p[i] = p[i] * decay - step * mi / (sqrtf(vi) / bc2s + eps);
        if (sh) sh[i] = __float2bfloat16(pi);
    }
}

static void cuda_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                       float b2, float eps, float wd, int t, float gscale) {
    PROF_IN(C(ctx), t0_);
    CudaCtx *c = C(ctx);
    /* the same float32 host arithmetic for the constants as cpu_adamw */
    float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
    float step = lr / bc1, bc2s = sqrtf(bc2), decay = 1.0f - lr * wd;
    Bound *b = bound_of(c, p);
    bf16 *sh = b && !b->dirty ? b->shadow + (p - b->p) : NULL; /* a stale shadow is redone whole later */
    k_adamw<<<blocks_for(n), TPB, 0, c->s>>>(p, sh, g, m, v, n, b1, b2, eps, step, bc2s, decay, gscale);
    CK(cudaGetLastError());
    PROF_OUT(C(ctx), OP_ADAMW, t0_);
}

// ----------------------------------------------------------------------------

const Ops ops_cuda = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .zero = cuda_zero,
    .sync = cuda_sync,
    .scratch_floats = cuda_scratch_floats,
    .embed_fwd = cuda_embed_fwd,
    .embed_bwd = cuda_embed_bwd,
    .rmsnorm_fwd = cuda_rmsnorm_fwd,
    .rmsnorm_bwd = cuda_rmsnorm_bwd,
    .matmul_fwd = cuda_matmul_fwd,
    .matmul_bwd = cuda_matmul_bwd,
    .lora_fwd = cuda_lora_fwd,
    .lora_bwd = cuda_lora_bwd,
    .rope_fwd = cuda_rope_fwd,
    .rope_bwd = cuda_rope_bwd,
    .attn_fwd = cuda_attn_fwd,
    .attn_bwd = cuda_attn_bwd,
    .attn_decode = cuda_attn_decode,
    .rows_pack_floats = cuda_rows_pack_floats,
    .rows_pack = cuda_rows_pack,
    .matmul_rows = cuda_matmul_rows,
    .attn_paged = cuda_attn_paged,
    .rows_scatter = cuda_rows_scatter,
    .rows_gather = cuda_rows_gather,
    .swiglu_fwd = cuda_swiglu_fwd,
    .swiglu_bwd = cuda_swiglu_bwd,
    .lmhead_ce = cuda_lmhead_ce,
    .lmhead_rows = cuda_lmhead_rows,
    .add = cuda_add,
    .sumsq = cuda_sumsq,
    .scale = cuda_scale,
    .adamw = cuda_adamw,
    .qwork_floats = cuda_qwork_floats,
    .qmatmul_fwd = cuda_qmatmul_fwd,
    .qmatmul_bwd = cuda_qmatmul_bwd,
    .qembed_fwd = cuda_qembed_fwd,
    .qlmhead = cuda_qlmhead,
    .qmatmul_rows = cuda_qmatmul_rows,
    .kd_scratch_floats = cuda_kd_scratch_floats,
    .lmhead_kd = cuda_lmhead_kd,
    .bind_params = cuda_bind_params,
    .download_act = cuda_download_act,
    .upload_act = cuda_upload_act,
};
