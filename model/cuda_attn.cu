/*
 * cuda_attn.cu: causal grouped-query attention with the document mask, the
 * hand-written flash-attention-style path of the CUDA backend (Dao et al.
 * 2022: online softmax over key tiles, only the log-sum-exp kept, the
 * backward recomputes the probabilities).
 *
 * Mask (ops.h): query t attends key j iff t - pos[t] <= j <= t, except in
 * a branch (prefix-shared packing), which skips the branches before it:
 * the kernels read each query's first key and hole from the spans
 * (attn_spans, made once a batch by llama_set_batch). Document starts never
 * decrease along t, so a block of consecutive queries needs keys
 * [start(first), last] and nothing else, less the hole all of them share.
 *
 * Shape of the work: a block is AW warps; in the forward and dq kernels
 * warp w owns query row t (one (b, h)), in the dk/dv kernel key row j (one
 * (b, kv-head)). Tiles of AK = 32 rows of the other side sit in shared memory
 * as float32 (rows padded to HS + 1 floats so lane-per-row dot products hit
 * 32 different banks). A lane computes one score of the tile (lane-per-key),
 * the warp reduces max and sum by shuffles, and each lane accumulates the
 * output dimensions d = lane + 32 i (i < HS_MAX / 32) with the tile's
 * probabilities broadcast by shuffles. Every output is written by one warp:
 * no atomics, deterministic. Float32 arithmetic throughout; bf16 only at
 * loads and stores. Correct first, not fast: no tensor cores (that is what
 * cuDNN's SDPA, below, is for). The sampling engine's paged attention
 * (k_attn_paged) is the forward's pattern with the keys found through a
 * page table, one query row per block.
 *
 * cuDNN (not wired in yet; facts for whoever does it, from the cuDNN 9.19
 * headers under /usr/local/cuda here): the backend C API has a one-node
 * CUDNN_BACKEND_OPERATION_SDPA_FWD/BWD_DESCRIPTOR (Q, K, V, O, stats = our
 * lse, by-value scale, per-batch SEQ_LEN_Q/KV, a BLOCK_MASK) but in 9.19 no
 * causal attribute; the DIAGONAL_BAND_MASK operation that gives it one is
 * cuDNN >= 9.20. The route that works across cuDNN 9 is the composite graph
 * the fused flash engine recognises: MATMUL(Q, K^T) -> POINTWISE MUL by the
 * scale -> GEN_INDEX (axis 2 and 3) + CMP_GE + BINARY_SELECT(-inf) for the
 * causal mask -> max/sub/exp/sum/log reductions (stats = max + log sum) ->
 * MATMUL(P, V), and its larger backward. The document mask fits either as
 * ragged offsets (CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC: each document its
 * own sequence, THD layout, per-document lengths) or as a second
 * comparison against a per-row start tensor (t - pos[t]) if the engine
 * accepts one. GQA: K/V with KV heads in the tensor dims. The device
 * machine's cuDNN is the pip wheel's (nvidia-cudnn-cu13), whose version
 * decides which of these exist: check cudnnGetVersion() there first.
 */
#include "cuda_impl.cuh"

#define AW 8        /* warps (rows) per block */
#define AK 32       /* rows per shared-memory tile: one per lane */
#define HS_MAX 256  /* head sizes up to this (Llama: 64 or 128) */
#define NI (HS_MAX / 32)
#define FULL 0xffffffffu

static size_t smem_bytes(int HS) {
    /* two per-warp rows of HS floats, two tiles of AK x (HS + 1), two AK vectors */
    return ((size_t)2 * AW * HS + 2 * (size_t)AK * (HS + 1) + 2 * AK) * sizeof(float);
}

static __device__ inline float dot_sm(const float *a, const float *b, int HS) {
    float s = 0.0f;
    for (int d = 0; d < HS; d++) s += a[d] * b[d];
    return s;
}

/* Load rows [r0, r0 + AK) of a (.., stride) bf16 matrix at column offset col
 * into tile (AK, HS + 1); rows >= n are zero. */
static __device__ inline void load_tile(float *tile, const bf16 *src, int r0, int n, size_t stride, int HS) {
    for (int i = threadIdx.x; i < AK * HS; i += blockDim.x) {
        int r = i / HS, d = i % HS, j = r0 + r;
        tile[r * (HS + 1) + d] = j < n ? __bfloat162float(src[(size_t)j * stride + d]) : 0.0f;
    }
}

/* Whether query t (spans st = sp + 3 t) sees key j. */
static __device__ inline int sees(const int *st, int t, int j) {
    return j >= st[0] && j <= t && (j < st[1] || j >= st[2]);
}

/* The keys in the hole of every query of rows [t0, t0 + AW) (mostly one
 * branch): [*h0, *h1), empty when one has no hole. The same in every
 * thread, so a key tile inside it is skipped by the whole block. */
static __device__ inline void block_hole(const int *sb, int t0, int T, int *h0, int *h1) {
    *h0 = *h1 = 0;
    for (int t = t0; t < min(t0 + AW, T); t++) {
        int a = sb[3 * t + 1], b = sb[3 * t + 2];
        if (a >= b) {
            *h0 = *h1 = 0;
            return;
        }
        *h0 = t == t0 ? a : max(*h0, a);
        *h1 = t == t0 ? b : min(*h1, b);
    }
}

/* Whether query t sees a key of [j0, j1]. */
static __device__ inline int sees_range(const int *sb, int t, int j0, int j1) {
    int lo = max(sb[3 * t], j0), hi = min(t, j1), h0 = sb[3 * t + 1], h1 = sb[3 * t + 2];
    if (h0 <= lo && lo < h1) lo = h1;
    if (h0 <= hi && hi < h1) hi = h0 - 1;
    return lo <= hi;
}

// ----------------------------------------------------------------------------
// forward: grid (ceil(T / AW), H, B)

__global__ void __launch_bounds__(AW * 32) k_attn_fwd(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                     const bf16 *v, const int *spans, int T, int H, int KV, int HS,
                                                     float scale) {
    extern __shared__ float sm[];
    int b = blockIdx.z, h = blockIdx.y, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    int g = h / (H / KV), t0 = blockIdx.x * AW, t = t0 + w;
    const int *sb = spans + (size_t)b * T * 3, *st = sb + 3 * (size_t)t;
    int jlo = sb[3 * t0], jhi = min(t0 + AW, T) - 1, h0, h1;
    block_hole(sb, t0, T, &h0, &h1);
    float *qs = sm + w * HS, *ks = sm + 2 * AW * HS, *vs = ks + AK * (HS + 1);
    size_t qst = (size_t)H * HS, kst = (size_t)KV * HS;
    int valid = t < T;
    if (valid)
        for (int d = lane; d < HS; d += 32) qs[d] = __bfloat162float(q[((size_t)b * T + t) * qst + h * HS + d]);
    float mrow = -INFINITY, l = 0.0f, acc[NI];
#pragma unroll
    for (int i = 0; i < NI; i++) acc[i] = 0.0f;
    const bf16 *kb = k + (size_t)b * T * kst + g * HS, *vb = v + (size_t)b * T * kst + g * HS;
    for (int j0 = jlo; j0 <= jhi; j0 += AK) {
        if (j0 >= h0 && j0 + AK <= h1) continue; /* no row sees the tile (block-uniform) */
        __syncthreads(); /* the previous tile is consumed */
        load_tile(ks, kb, j0, T, kst, HS);
        load_tile(vs, vb, j0, T, kst, HS);
        __syncthreads();
        if (!valid) continue;
        int j = j0 + lane;
        float s = -INFINITY;
        if (sees(st, t, j)) s = dot_sm(qs, ks + lane * (HS + 1), HS) * scale;
        float mt = warp_max(s);
        if (mt == -INFINITY) continue; /* nothing of this tile is visible to row t */
        float mnew = fmaxf(mrow, mt), corr = expf(mrow - mnew);
        float p = s == -INFINITY ? 0.0f : expf(s - mnew);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < NI; i++) acc[i] *= corr;
        for (int jj = 0; jj < AK; jj++) {
            float pj = __shfl_sync(FULL, p, jj);
            if (pj == 0.0f) continue; /* warp-uniform */
            const float *vr = vs + jj * (HS + 1);
#pragma unroll
            for (int i = 0; i < NI; i++) {
                int d = lane + 32 * i;
                if (d < HS) acc[i] += pj * vr[d];
            }
        }
        mrow = mnew;
    }
    if (!valid) return;
    bf16 *o = out + ((size_t)b * T + t) * qst + h * HS;
#pragma unroll
    for (int i = 0; i < NI; i++) {
        int d = lane + 32 * i;
        if (d < HS) o[d] = __float2bfloat16(acc[i] / l);
    }
    if (lane == 0) lse[((size_t)b * H + h) * T + t] = mrow + logf(l);
}

// ----------------------------------------------------------------------------
// backward: delta = rowsum(dout * out), then dq (per query row) and dk, dv
// (per key row), each recomputing p = exp(s - lse)

__global__ void k_attn_delta(float *delta, const bf16 *dout, const bf16 *out, int B, int T, int H, int HS) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; /* (b, t, h) */
    int lane = threadIdx.x % 32;
    if (row >= (size_t)B * T * H) return;
    const bf16 *a = dout + row * HS, *o = out + row * HS;
    float s = 0.0f;
    for (int d = lane; d < HS; d += 32) s += __bfloat162float(a[d]) * __bfloat162float(o[d]);
    s = warp_sum(s);
    int h = (int)(row % H);
    size_t bt = row / H;
    int b = (int)(bt / T), t = (int)(bt % T);
    if (lane == 0) delta[((size_t)b * H + h) * T + t] = s;
}

__global__ void __launch_bounds__(AW * 32) k_attn_dq(bf16 *dq, const bf16 *dout, const float *lse,
                                                    const float *delta, const bf16 *q, const bf16 *k,
                                                    const bf16 *v, const int *spans, int T, int H, int KV, int HS,
                                                    float scale) {
    extern __shared__ float sm[];
    int b = blockIdx.z, h = blockIdx.y, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    int g = h / (H / KV), t0 = blockIdx.x * AW, t = t0 + w;
    const int *sb = spans + (size_t)b * T * 3, *st = sb + 3 * (size_t)t;
    int jlo = sb[3 * t0], jhi = min(t0 + AW, T) - 1, h0, h1;
    block_hole(sb, t0, T, &h0, &h1);
    float *qs = sm + w * HS, *dos = sm + (AW + w) * HS, *ks = sm + 2 * AW * HS, *vs = ks + AK * (HS + 1);
    size_t qst = (size_t)H * HS, kst = (size_t)KV * HS;
    int valid = t < T;
    float L = 0.0f, Dt = 0.0f;
    if (valid) {
        size_t o = ((size_t)b * T + t) * qst + h * HS;
        for (int d = lane; d < HS; d += 32) {
            qs[d] = __bfloat162float(q[o + d]);
            dos[d] = __bfloat162float(dout[o + d]);
        }
        L = lse[((size_t)b * H + h) * T + t];
        Dt = delta[((size_t)b * H + h) * T + t];
    }
    float acc[NI];
#pragma unroll
    for (int i = 0; i < NI; i++) acc[i] = 0.0f;
    const bf16 *kb = k + (size_t)b * T * kst + g * HS, *vb = v + (size_t)b * T * kst + g * HS;
    for (int j0 = jlo; j0 <= jhi; j0 += AK) {
        if (j0 >= h0 && j0 + AK <= h1) continue; /* no row sees the tile (block-uniform) */
        __syncthreads();
        load_tile(ks, kb, j0, T, kst, HS);
        load_tile(vs, vb, j0, T, kst, HS);
        __syncthreads();
        if (!valid) continue;
        int j = j0 + lane;
        float ds = 0.0f;
        if (sees(st, t, j)) {
            float p = expf(dot_sm(qs, ks + lane * (HS + 1), HS) * scale - L);
            float dp = dot_sm(dos, vs + lane * (HS + 1), HS);
            ds = p * (dp - Dt);
        }
        for (int jj = 0; jj < AK; jj++) {
            float dj = __shfl_sync(FULL, ds, jj);
            if (dj == 0.0f) continue;
            const float *kr = ks + jj * (HS + 1);
#pragma unroll
            for (int i = 0; i < NI; i++) {
                int d = lane + 32 * i;
                if (d < HS) acc[i] += dj * kr[d];
            }
        }
    }
    if (!valid) return;
    bf16 *o = dq + ((size_t)b * T + t) * qst + h * HS;
#pragma unroll
    for (int i = 0; i < NI; i++) {
        int d = lane + 32 * i;
        if (d < HS) o[d] = __float2bfloat16(acc[i] * scale);
    }
}

/* grid (ceil(T / AW), KV, B); warp w owns key row j of kv head g and sums
 * over the H / KV query heads of its group and every query that sees j. */
__global__ void __launch_bounds__(AW * 32) k_attn_dkdv(bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse,
                                                      const float *delta, const bf16 *q, const bf16 *k,
                                                      const bf16 *v, const int *spans, int T, int H, int KV,
                                                      int HS, float scale) {
    extern __shared__ float sm[];
    int b = blockIdx.z, g = blockIdx.y, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    int j0r = blockIdx.x * AW, j = j0r + w, j1r = min(j0r + AW, T) - 1, hg = H / KV;
    const int *sb = spans + (size_t)b * T * 3;
    float *kj = sm + w * HS, *vj = sm + (AW + w) * HS, *qs = sm + 2 * AW * HS, *dos = qs + AK * (HS + 1);
    float *ls = dos + AK * (HS + 1), *Ds = ls + AK;
    size_t qst = (size_t)H * HS, kst = (size_t)KV * HS;
    int valid = j < T;
    if (valid) {
        size_t o = ((size_t)b * T + j) * kst + g * HS;
        for (int d = lane; d < HS; d += 32) {
            kj[d] = __bfloat162float(k[o + d]);
            vj[d] = __bfloat162float(v[o + d]);
        }
    }
    float ak[NI], av[NI];
#pragma unroll
    for (int i = 0; i < NI; i++) ak[i] = av[i] = 0.0f;
    for (int hh = 0; hh < hg; hh++) {
        int h = g * hg + hh;
        const bf16 *qb = q + (size_t)b * T * qst + h * HS, *db = dout + (size_t)b * T * qst + h * HS;
        const float *lb = lse + ((size_t)b * H + h) * T, *Db = delta + ((size_t)b * H + h) * T;
        /* queries from the block's first key on, until a tile starts past the
         * document of the block's last key */
        for (int i0 = j0r; i0 < T && sb[3 * i0] <= j1r; i0 += AK) {
            /* a tile of queries none of which sees the block's keys (later branches: their hole) is
             * skipped; the barrier makes the decision the block's */
            int iq = i0 + (int)threadIdx.x;
            if (!__syncthreads_or(threadIdx.x < AK && iq < T && sees_range(sb, iq, j0r, j1r))) continue;
            load_tile(qs, qb, i0, T, qst, HS);
            load_tile(dos, db, i0, T, qst, HS);
            if (threadIdx.x < AK) {
                int i = i0 + threadIdx.x;
                ls[threadIdx.x] = i < T ? lb[i] : 0.0f;
                Ds[threadIdx.x] = i < T ? Db[i] : 0.0f;
            }
            __syncthreads();
            if (!valid) continue;
            int i = i0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (i < T && sees(sb + 3 * (size_t)i, i, j)) {
                p = expf(dot_sm(qs + lane * (HS + 1), kj, HS) * scale - ls[lane]);
                ds = p * (dot_sm(dos + lane * (HS + 1), vj, HS) - Ds[lane]);
            }
            for (int ii = 0; ii < AK; ii++) {
                float pi = __shfl_sync(FULL, p, ii), di = __shfl_sync(FULL, ds, ii);
                if (pi == 0.0f && di == 0.0f) continue;
                const float *qr = qs + ii * (HS + 1), *dr = dos + ii * (HS + 1);
#pragma unroll
                for (int x = 0; x < NI; x++) {
                    int d = lane + 32 * x;
                    if (d < HS) {
                        av[x] += pi * dr[d];
                        ak[x] += di * qr[d];
                    }
                }
            }
        }
    }
    if (!valid) return;
    size_t o = ((size_t)b * T + j) * kst + g * HS;
#pragma unroll
    for (int x = 0; x < NI; x++) {
        int d = lane + 32 * x;
        if (d < HS) {
            dk[o + d] = __float2bfloat16(ak[x] * scale);
            dv[o + d] = __float2bfloat16(av[x]);
        }
    }
}

// ----------------------------------------------------------------------------
// decode: one block per query head over the S cached keys; scratch (H, S).
// The cache rows were written one at a time by llama_decode at float offsets
// r * KV * HS of float-sized slots, so in bf16 row r starts at element
// 2 * r * KV * HS: the row stride here is twice the row width.

__global__ void k_attn_decode(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, float *sc, int S, int H,
                              int KV, int HS, float scale) {
    __shared__ float qs[HS_MAX], red[32];
    int h = blockIdx.x, g = h / (H / KV);
    size_t kst = 2 * (size_t)KV * HS; /* see above */
    for (int d = threadIdx.x; d < HS; d += blockDim.x) qs[d] = __bfloat162float(q[h * HS + d]);
    __syncthreads();
    float *s = sc + (size_t)h * S, mx = -INFINITY;
    for (int j = threadIdx.x; j < S; j += blockDim.x) {
        const bf16 *kr = k + j * kst + g * HS;
        float a = 0.0f;
        for (int d = 0; d < HS; d++) a += qs[d] * __bfloat162float(kr[d]);
        s[j] = a * scale;
        mx = fmaxf(mx, s[j]);
    }
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < S; j += blockDim.x) sum += (s[j] = expf(s[j] - mx));
    sum = block_sum(sum, red);
    __syncthreads(); /* every s[j] written before any thread reads them all */
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float a = 0.0f;
        for (int j = 0; j < S; j++) a += s[j] * __bfloat162float(v[j * kst + g * HS + d]);
        out[h * HS + d] = __float2bfloat16(a / sum);
    }
}

// ----------------------------------------------------------------------------
// paged attention (ops.h attn_paged): block (group sub-block, row n); warp w
// owns query head h of KV head g's group, all warps of the block share each
// K/V tile load. Keys are visited from position 0 in tiles of AK positions
// (page-table lookups per row of the tile), online softmax as k_attn_fwd: a
// row's arithmetic depends on its q, its len and its keys only, never on N,
// on the other rows or on the page size, so a prompt row of a batched
// prefill gives the bits it gives decoded alone. A group larger than PG_GW
// heads (MQA) is split over blocks that load the same tiles each.

#define PG_GW 8 /* query heads per block at most */

static size_t paged_smem_bytes(int HS, int nw) {
    /* K and V tiles AK x (HS + 1), nw query rows of HS, AK pool-row indices */
    return (2 * (size_t)AK * (HS + 1) + (size_t)nw * HS) * sizeof(float) + AK * sizeof(int);
}

__global__ void __launch_bounds__(PG_GW * 32) k_attn_paged(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v,
                                                          const int *ptab, const int *slot, const int *len, int H,
                                                          int KV, int HS, int P, int maxp, float scale) {
    extern __shared__ float sm[];
    int n = blockIdx.y, G = H / KV, nsub = (G + PG_GW - 1) / PG_GW;
    int g = blockIdx.x / nsub, hw = (blockIdx.x % nsub) * PG_GW + threadIdx.x / 32, lane = threadIdx.x % 32;
    int nw = blockDim.x / 32, valid = hw < G, h = g * G + hw;
    float *ks = sm, *vs = ks + AK * (HS + 1), *qs = vs + AK * (HS + 1) + (threadIdx.x / 32) * HS;
    int *rows = (int *)(vs + AK * (HS + 1) + nw * HS);
    int L = len[n];
    const int *pt = ptab + (size_t)slot[n] * maxp;
    size_t kst = (size_t)KV * HS;
    if (valid)
        for (int d = lane; d < HS; d += 32) qs[d] = __bfloat162float(q[(size_t)n * H * HS + (size_t)h * HS + d]);
    float mrow = -INFINITY, l = 0.0f, acc[NI];
#pragma unroll
    for (int i = 0; i < NI; i++) acc[i] = 0.0f;
    for (int j0 = 0; j0 < L; j0 += AK) {
        __syncthreads(); /* the previous tile is consumed */
        if (threadIdx.x < AK) {
            int p = j0 + threadIdx.x;
            rows[threadIdx.x] = p < L ? pt[p / P] * P + p % P : -1;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < AK * HS; i += blockDim.x) {
            int r = i / HS, d = i % HS, row = rows[r];
            size_t o = (size_t)row * kst + (size_t)g * HS + d;
            ks[r * (HS + 1) + d] = row >= 0 ? __bfloat162float(k[o]) : 0.0f;
            vs[r * (HS + 1) + d] = row >= 0 ? __bfloat162float(v[o]) : 0.0f;
        }
        __syncthreads();
        if (!valid) continue;
        int j = j0 + lane;
        float s = j < L ? dot_sm(qs, ks + lane * (HS + 1), HS) * scale : -INFINITY;
        float mt = warp_max(s); /* finite: position j0 < L is in the tile */
        float mnew = fmaxf(mrow, mt), corr = expf(mrow - mnew);
        float p = j < L ? expf(s - mnew) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < NI; i++) acc[i] *= corr;
        for (int jj = 0; jj < AK; jj++) {
            float pj = __shfl_sync(FULL, p, jj);
            if (pj == 0.0f) continue; /* warp-uniform */
            const float *vr = vs + jj * (HS + 1);
#pragma unroll
            for (int i = 0; i < NI; i++) {
                int d = lane + 32 * i;
                if (d < HS) acc[i] += pj * vr[d];
            }
        }
        mrow = mnew;
    }
    if (!valid) return;
    bf16 *o = out + (size_t)n * H * HS + (size_t)h * HS;
#pragma unroll
    for (int i = 0; i < NI; i++) {
        int d = lane + 32 * i;
        if (d < HS) o[d] = __float2bfloat16(acc[i] / l);
    }
}

// ----------------------------------------------------------------------------

void attn_init(const cudaDeviceProp *prop) {
    size_t need = smem_bytes(HS_MAX);
    if (need > prop->sharedMemPerBlockOptin)
        LC_FATAL("attention: %zu bytes of shared memory needed, the GPU allows %zu", need,
                 (size_t)prop->sharedMemPerBlockOptin);
    CK(cudaFuncSetAttribute(k_attn_fwd, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    CK(cudaFuncSetAttribute(k_attn_dq, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    CK(cudaFuncSetAttribute(k_attn_dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    size_t pneed = paged_smem_bytes(HS_MAX, PG_GW);
    if (pneed > prop->sharedMemPerBlockOptin)
        LC_FATAL("paged attention: %zu bytes of shared memory needed, the GPU allows %zu", pneed,
                 (size_t)prop->sharedMemPerBlockOptin);
    CK(cudaFuncSetAttribute(k_attn_paged, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)pneed));
}

void attn_fwd(cudaStream_t s, bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const int *sp,
              int B, int T, int H, int KV, int HS) {
    LC_ASSERT(HS <= HS_MAX && H % KV == 0);
    dim3 grid((T + AW - 1) / AW, H, B);
    k_attn_fwd<<<grid, AW * 32, smem_bytes(HS), s>>>(out, lse, q, k, v, sp, T, H, KV, HS, 1.0f / sqrtf((float)HS));
    CK(cudaGetLastError());
}

void attn_bwd(cudaStream_t s, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out, const float *lse,
              const bf16 *q, const bf16 *k, const bf16 *v, const int *sp, float *scratch, int B, int T, int H,
              int KV, int HS) {
    LC_ASSERT(HS <= HS_MAX && H % KV == 0);
    float scale = 1.0f / sqrtf((float)HS), *delta = scratch;
    size_t rows = (size_t)B * T * H;
    k_attn_delta<<<(unsigned)((rows + 7) / 8), 256, 0, s>>>(delta, dout, out, B, T, H, HS);
    CK(cudaGetLastError());
    dim3 gq((T + AW - 1) / AW, H, B), gk((T + AW - 1) / AW, KV, B);
    k_attn_dq<<<gq, AW * 32, smem_bytes(HS), s>>>(dq, dout, lse, delta, q, k, v, sp, T, H, KV, HS, scale);
    CK(cudaGetLastError());
    k_attn_dkdv<<<gk, AW * 32, smem_bytes(HS), s>>>(dk, dv, dout, lse, delta, q, k, v, sp, T, H, KV, HS, scale);
    CK(cudaGetLastError());
}

void attn_decode(cudaStream_t s, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, float *scratch, int S,
                 int H, int KV, int HS) {
    LC_ASSERT(HS <= HS_MAX && H % KV == 0);
    k_attn_decode<<<H, 256, 0, s>>>(out, q, k, v, scratch, S, H, KV, HS, 1.0f / sqrtf((float)HS));
    CK(cudaGetLastError());
}

void attn_paged(cudaStream_t s, bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, const int *ptab,
                const int *slot, const int *len, int N, int H, int KV, int HS, int P, int maxp) {
    LC_ASSERT(HS <= HS_MAX && KV > 0 && H % KV == 0 && P > 0 && maxp > 0 && N <= 65535);
    int G = H / KV, nsub = (G + PG_GW - 1) / PG_GW, nw = G < PG_GW ? G : PG_GW;
    dim3 grid(KV * nsub, N);
    k_attn_paged<<<grid, nw * 32, paged_smem_bytes(HS, nw), s>>>(out, q, k, v, ptab, slot, len, H, KV, HS, P, maxp,
                                                                1.0f / sqrtf((float)HS));
    CK(cudaGetLastError());
}
