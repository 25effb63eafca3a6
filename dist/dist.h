/*
 * dist.h: the MPI process grid and the collectives of data parallelism
 * (DESIGN.md, "Distribution").
 *
 * The N ranks of `mpirun -np N` (or `srun`) form a grid of PP pipeline
 * stages by DP = N / PP data-parallel replicas, stage-major: rank =
 * stage * DP + dp_rank. dist_init starts with PP = 1 (every rank a
 * replica); a training command that asks for stages (--pp) calls
 * dist_set_pp once its flags are read. The grid is process-wide state, as
 * MPI itself is (MPI_COMM_WORLD): one per process, read by everyone.
 *
 * The float32 gradient collectives (all-reduce, reduce-scatter, all-gather)
 * run over the replicas of this rank's stage; the small ones (losses,
 * counts, flags, broadcasts, barriers) over every rank. Neighbouring
 * stages exchange activations with the point-to-point calls at the end.
 *
 * Two implementations share this header: dist.c over MPI (built when the
 * Makefile's probe finds mpicc, MPI=0 disables it) and dist_none.c, one
 * process, where every collective is the identity. dist_none refuses to
 * start under a launcher that started several copies (OMPI_COMM_WORLD_SIZE,
 * PMI_SIZE, SLURM_NTASKS > 1): N independent runs would write the same
 * files.
 *
 * Reductions sum float32 buffers in place; a rank's bytes sent are counted
 * as the ring algorithms send them (2(N-1)/N of the buffer for an
 * all-reduce, (N-1)/N for a reduce-scatter or an all-gather), for
 * `make bench-dist`.
 */
#ifndef LLAMAC_DIST_DIST_H
#define LLAMAC_DIST_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "../model/params.h"

typedef struct DistGrid {
    int rank, world;       /* in MPI_COMM_WORLD */
    int dp, pp;            /* replicas, stages: dp * pp == world */
    int dp_rank, stage;    /* rank = stage * dp + dp_rank */
    int mpi;               /* 1: built with MPI (dist.c) */
} DistGrid;

/* Start the grid (MPI_Init_thread with MPI_THREAD_FUNNELED under MPI).
 * Call once, first thing in main after blas_env_fix. Errors (-1 with e):
 * dist_none under a launcher of several ranks. */
int dist_init(int *argc, char ***argv, Err *e);

/* Split the ranks into pp stages of world / pp replicas (collective: every
 * rank calls it with the same pp, before any collective of the run).
 * Errors (-1 with e): pp < 1 or not dividing the ranks; pp > 1 without MPI. */
int dist_set_pp(int pp, Err *e);

/* MPI_Finalize (nothing in dist_none). */
void dist_finalize(void);

/* Stop every rank now with exit status code (MPI_Abort; exit without MPI),
 * after the caller printed why. */
void dist_abort(int code) __attribute__((noreturn));

/* The grid (world 1 before dist_init). */
const DistGrid *dist_grid(void);
static inline int dist_rank(void) { return dist_grid()->rank; }
static inline int dist_world(void) { return dist_grid()->world; }

/* One line for the start-up banner, gathered on every rank: the grid, then
 * each rank's host, OpenMP threads and cores, e.g.
 * "dist: 2 ranks = 1 stage x 2 replicas | rank 0 host a 1 threads cores 0 | ...".
 * Collective: every rank calls it. Caller frees the string with free. */
char *dist_describe(void);

/* ---- collectives (all ranks call them, same order) */

/* buf[0..n) = its sum over the replicas of this rank's stage (in place,
 * float32: gradients). */
void dist_allreduce_f32(float *buf, size_t n);
/* Sums over every rank for doubles and longs (loss sums, token counts). */
void dist_allreduce_f64(double *buf, int n);
void dist_allreduce_long(long *buf, int n);
/* max over the ranks (error flags). */
int dist_allreduce_max_int(int v);
/* bitwise or over the ranks (checksums known to one rank, 0 elsewhere). */
void dist_allreduce_or_u64(uint64_t *buf, int n);

/* Start an all-reduce (sum) of buf[0..n) in place (MPI_Iallreduce) and
 * return at once; buf must not be touched until dist_wait. At most
 * DIST_MAX_PENDING at a time. dist_progress lets MPI advance the started
 * ones (MPI_Testall): without an asynchronous progress thread, OpenMPI moves
 * a non-blocking collective only inside MPI calls. */
#define DIST_MAX_PENDING 512
void dist_iallreduce_f32(float *buf, size_t n);
void dist_progress(void);
/* Wait for every started reduction. */
void dist_wait(void);

/* ZeRO-1 shards of a buffer laid out by table t over the dp ranks: replica r
 * owns [off[r], off[r+1]), cut at tensor boundaries (each tensor whole on
 * one rank, so a checkpoint's tensors are each written, and checksummed, by
 * one rank), the cut for r placed at the tensor start nearest r * size / dp.
 * off has dp + 1 entries; off[0] = 0, off[dp] = t->size. */
void dist_shards(const ParamTable *t, size_t *off);
/* The same for the part [lo, hi) of the buffer (a pipeline stage's own
 * tensors): off[0] = lo, off[dp] = hi. */
void dist_shards_range(const ParamTable *t, size_t lo, size_t hi, size_t *off);

/* Reduce-scatter (sum) over the replicas: afterwards buf[off[r], off[r+1])
 * of replica r holds the sum over the replicas of that range; the rest of
 * [off[0], off[dp]) is left undefined. off from dist_shards(_range). */
void dist_reduce_scatter_f32(float *buf, const size_t *off);
/* All-gather: every replica's range [off[r], off[r+1]) of buf is copied to
 * every replica. */
void dist_allgather_f32(float *buf, const size_t *off);
/* Rank root's bytes to every rank. */
void dist_bcast(void *buf, size_t bytes, int root);
void dist_barrier(void);

/* Bytes this rank sent in collectives so far (ring model, see above). */
uint64_t dist_bytes_sent(void);

/* ---- point to point (pipeline stages; world ranks, tags < 2^20) */

/* Start sending buf[0..n) to rank dst (MPI_Isend) or receiving it from
 * src (MPI_Irecv); the buffer must stay untouched until dist_req_wait.
 * Returns the request's id. At most DIST_MAX_PENDING at a time. */
int dist_isend_f32(const float *buf, size_t n, int dst, int tag);
int dist_irecv_f32(float *buf, size_t n, int src, int tag);
/* Wait for request id (at most dist_set_timeout's seconds). Returns the
 * seconds it waited. */
double dist_req_wait(int id, const char *what);
/* From now on a wait for a message, and the small collectives (sums of
 * doubles and longs, max, or, barrier), give up after seconds: the peer is
 * taken for dead or hung, and this rank prints "llamac: error: rank R of
 * N: <what>: nothing from rank Q (or another rank) for S s (it died or
 * hangs); stopping every rank" and aborts the job. 0 (the start): wait
 * forever, as MPI does. */
void dist_set_timeout(double seconds);
/* Blocking sends of bytes (small state: the tied embedding, a gather). */
void dist_send(const void *buf, size_t bytes, int dst, int tag);
void dist_recv(void *buf, size_t bytes, int src, int tag);

#endif
