/*
 * nccl.h: the data-parallel reductions of dist.h on device buffers, through
 * NCCL (one GPU per rank), for the CUDA backend: all-reduce, and ZeRO-1's
 * reduce-scatter and all-gather over dist_shards' ranges, float32 or bf16 as
 * the buffers are (sums accumulate in the buffer's type, as NCCL does).
 * The communicator spans the ranks of dist.h's grid: rank 0 makes the NCCL
 * id and dist_bcast carries it (MPI), so it needs dist_init first; with one
 * rank it is a single-rank communicator (the GPU check against the MPI path).
 * The point-to-point calls carry a pipeline stage's activations and
 * gradients between device buffers. Compiled by `make cuda-check` (and into
 * CUDA=1 builds with NCCL); not yet called by the trainer (its pipeline and
 * data parallelism run on the CPU).
 */
#ifndef LLAMAC_DIST_NCCL_H
#define LLAMAC_DIST_NCCL_H

#include <stddef.h>

#include "../model/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct DistNccl DistNccl;
typedef enum { DIST_NCCL_F32, DIST_NCCL_BF16 } DistNcclType;

/* A communicator over all ranks on CUDA device `device` (cudaSetDevice).
 * Collective. Returns NULL with e on an NCCL or CUDA error. Release with
 * dist_nccl_close. */
DistNccl *dist_nccl_open(int device, Err *e);
void dist_nccl_close(DistNccl *c);

/* buf[0..n) = its sum over the ranks (in place), on stream (a
 * cudaStream_t; NULL: the default stream). Asynchronous like every NCCL
 * call: the stream orders it. */
void dist_nccl_allreduce(DistNccl *c, void *buf, size_t n, DistNcclType t, void *stream);

/* Reduce-scatter / all-gather in place over the ranges off[0..world] (in
 * elements, dist_shards): after the first, buf[off[rank], off[rank+1]) is
 * the sum of that range; after the second every range is everyone's.
 * Equal ranges use ncclReduceScatter / ncclAllGather, unequal ones a group
 * of ncclReduce / ncclBroadcast, one per range. */
void dist_nccl_reduce_scatter(DistNccl *c, void *buf, const size_t *off, DistNcclType t, void *stream);
void dist_nccl_allgather(DistNccl *c, void *buf, const size_t *off, DistNcclType t, void *stream);

/* Pipeline stages: n elements of buf to / from world rank peer
 * (ncclSend / ncclRecv; the two sides must be called in matching order).
 * Asynchronous on stream like the collectives. */
void dist_nccl_send(DistNccl *c, const void *buf, size_t n, DistNcclType t, int peer, void *stream);
void dist_nccl_recv(DistNccl *c, void *buf, size_t n, DistNcclType t, int peer, void *stream);

#ifdef __cplusplus
}
#endif

#endif
