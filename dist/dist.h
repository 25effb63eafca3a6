/*
 * dist.h: the MPI process grid and the collectives of data parallelism
 * (DESIGN.md, "Distribution").
 *
 * The N ranks of `mpirun -np N` (or `srun`) form a grid of PP pipeline
 * stages by DP = N / PP data-parallel replicas, stage-major: rank =
 * stage * DP + dp_rank. PP is 1 until pipeline parallelism lands, so today
 * every rank is a replica. The grid is process-wide state, as MPI itself is
 * (MPI_COMM_WORLD): one per process, set by dist_init, read by everyone.
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

/* ---- collectives over the replicas (all ranks call them, same order) */

/* buf[0..n) = its sum over the ranks (in place, float32). */
void dist_allreduce_f32(float *buf, size_t n);
/* The same for doubles and longs (loss sums, token counts, flags). */
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

/* ZeRO-1 shards of a buffer laid out by table t over the dp ranks: rank r
 * owns [off[r], off[r+1]), cut at tensor boundaries (each tensor whole on
 * one rank, so a checkpoint's tensors are each written, and checksummed, by
 * one rank), the cut for r placed at the tensor start nearest r * size / dp.
 * off has dp + 1 entries; off[0] = 0, off[dp] = t->size. */
void dist_shards(const ParamTable *t, size_t *off);

/* Reduce-scatter (sum): afterwards buf[off[rank], off[rank+1]) holds the
 * sum over the ranks of that range; the rest of buf is left undefined.
 * off from dist_shards. */
void dist_reduce_scatter_f32(float *buf, const size_t *off);
/* All-gather: every rank's range [off[r], off[r+1]) of buf is copied to
 * every rank. */
void dist_allgather_f32(float *buf, const size_t *off);
/* Rank root's bytes to every rank. */
void dist_bcast(void *buf, size_t bytes, int root);
void dist_barrier(void);

/* Bytes this rank sent in collectives so far (ring model, see above). */
uint64_t dist_bytes_sent(void);

#endif
