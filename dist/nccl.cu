/*
 * nccl.cu: dist/nccl.h over NCCL. The id travels by dist_bcast (MPI), the
 * calls are NCCL's own; errors abort with the NCCL message (a failed
 * collective cannot be recovered from: the other ranks are inside it).
 */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "../model/base.h"
#include "dist.h"
#include "nccl.h"
}

#define NCCL_CHECK(x)                                                                                  \
    do {                                                                                               \
        ncclResult_t r_ = (x);                                                                         \
        if (r_ != ncclSuccess) LC_FATAL("%s: %s", #x, ncclGetErrorString(r_));                         \
    } while (0)

struct DistNccl {
    ncclComm_t comm;
    int rank, world;
};

static ncclDataType_t nccl_type(DistNcclType t) { return t == DIST_NCCL_BF16 ? ncclBfloat16 : ncclFloat32; }
static size_t type_size(DistNcclType t) { return t == DIST_NCCL_BF16 ? 2 : 4; }

extern "C" DistNccl *dist_nccl_open(int device, Err *e) {
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess) {
        err_set(e, "--device: cannot use CUDA device %d (%s)", device, cudaGetErrorString(ce));
        return NULL;
    }
    ncclUniqueId id;
    const DistGrid *g = dist_grid();
    if (g->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) {
            err_set(e, "nccl: cannot make a communicator id (%s)", ncclGetErrorString(r));
            return NULL;
        }
    }
    dist_bcast(&id, sizeof id, 0);
    DistNccl *c = (DistNccl *)xmalloc(sizeof *c);
    c->rank = g->rank;
    c->world = g->world;
    ncclResult_t r = ncclCommInitRank(&c->comm, g->world, id, g->rank);
    if (r != ncclSuccess) {
        free(c);
        err_set(e, "nccl: cannot join the communicator of %d ranks (%s)", g->world, ncclGetErrorString(r));
        return NULL;
    }
    return c;
}

extern "C" void dist_nccl_close(DistNccl *c) {
    if (!c) return;
    ncclCommDestroy(c->comm);
    free(c);
}

extern "C" void dist_nccl_allreduce(DistNccl *c, void *buf, size_t n, DistNcclType t, void *stream) {
    NCCL_CHECK(ncclAllReduce(buf, buf, n, nccl_type(t), ncclSum, c->comm, (cudaStream_t)stream));
}

static int equal_ranges(const size_t *off, int world) {
    for (int r = 1; r < world; r++)
        if (off[r + 1] - off[r] != off[1] - off[0]) return 0;
    return off[0] == 0;
}

extern "C" void dist_nccl_reduce_scatter(DistNccl *c, void *buf, const size_t *off, DistNcclType t, void *stream) {
    char *b = (char *)buf;
    size_t es = type_size(t);
    cudaStream_t s = (cudaStream_t)stream;
    if (equal_ranges(off, c->world)) { /* the output is this rank's range of the input: in place */
        size_t cnt = off[1] - off[0];
        NCCL_CHECK(ncclReduceScatter(b, b + off[c->rank] * es, cnt, nccl_type(t), ncclSum, c->comm, s));
        return;
    }
    NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < c->world; r++)
        NCCL_CHECK(ncclReduce(b + off[r] * es, b + off[r] * es, off[r + 1] - off[r], nccl_type(t), ncclSum, r,
                              c->comm, s));
    NCCL_CHECK(ncclGroupEnd());
}

extern "C" void dist_nccl_allgather(DistNccl *c, void *buf, const size_t *off, DistNcclType t, void *stream) {
    char *b = (char *)buf;
    size_t es = type_size(t);
    cudaStream_t s = (cudaStream_t)stream;
    if (equal_ranges(off, c->world)) {
        size_t cnt = off[1] - off[0];
        NCCL_CHECK(ncclAllGather(b + off[c->rank] * es, b, cnt, nccl_type(t), c->comm, s));
        return;
    }
    NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < c->world; r++)
        NCCL_CHECK(ncclBroadcast(b + off[r] * es, b + off[r] * es, off[r + 1] - off[r], nccl_type(t), r, c->comm, s));
    NCCL_CHECK(ncclGroupEnd());
}

extern "C" void dist_nccl_send(DistNccl *c, const void *buf, size_t n, DistNcclType t, int peer, void *stream) {
    LC_ASSERT(peer >= 0 && peer < c->world && peer != c->rank);
    NCCL_CHECK(ncclSend(buf, n, nccl_type(t), peer, c->comm, (cudaStream_t)stream));
}

extern "C" void dist_nccl_recv(DistNccl *c, void *buf, size_t n, DistNcclType t, int peer, void *stream) {
    LC_ASSERT(peer >= 0 && peer < c->world && peer != c->rank);
    NCCL_CHECK(ncclRecv(buf, n, nccl_type(t), peer, c->comm, (cudaStream_t)stream));
}
