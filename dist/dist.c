/*
 * dist.c: dist.h over MPI (OpenMPI; any MPI-3 library). Collectives run on
 * MPI_COMM_WORLD, which is the data-parallel group while PP is 1. Errors of
 * MPI calls abort (MPI_ERRORS_ARE_FATAL, the default): a lost rank makes
 * the launcher stop the others, naming it (mpirun: "process rank R ...
 * exited on signal 9").
 */
#include "dist.h"

#include <mpi.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static DistGrid grid = {0, 1, 1, 1, 0, 0, 1};
static MPI_Request pending[DIST_MAX_PENDING];
static int npending;
static uint64_t bytes_sent;

/* MPI counts are int: larger buffers go in pieces of this many elements. */
#define CHUNK ((size_t)1 << 30)

const DistGrid *dist_grid(void) { return &grid; }

/* Started by a launcher (mpirun, srun with PMI/PMIx)? A plain run does not
 * initialise MPI at all: a singleton MPI_Init would start a daemon and slow
 * every command (tokenize, eval, ...) for nothing. */
static int launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static int inited;

int dist_init(int *argc, char ***argv, Err *e) {
    (void)e;
    if (!launched()) return 0;
    int provided;
    inited = 1;
    /* FUNNELED: only the main thread calls MPI; OpenMP threads compute. */
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &grid.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &grid.world);
    grid.pp = 1;
    grid.dp = grid.world;
    grid.stage = grid.rank / grid.dp;
    grid.dp_rank = grid.rank % grid.dp;
    grid.mpi = 1;
    return 0;
}

void dist_finalize(void) {
    if (inited) MPI_Finalize();
    inited = 0;
}

void dist_abort(int code) {
    fflush(stdout);
    fflush(stderr);
    if (grid.world > 1) MPI_Abort(MPI_COMM_WORLD, code);
    dist_finalize();
    exit(code);
}

/* "0-1" / "0,2": the cores this process may run on. */
static void cores_of_self(char *s, size_t n) {
    cpu_set_t set;
    s[0] = '\0';
    if (sched_getaffinity(0, sizeof set, &set)) {
        snprintf(s, n, "?");
        return;
    }
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        int d = c;
        while (d + 1 < CPU_SETSIZE && CPU_ISSET(d + 1, &set)) d++;
        size_t k = strlen(s);
        if (d > c) snprintf(s + k, n - k, "%s%d-%d", k ? "," : "", c, d);
        else snprintf(s + k, n - k, "%s%d", k ? "," : "", c);
        c = d;
    }
}

#define DESC_ONE 160
char *dist_describe(void) {
    char mine[DESC_ONE], host[64] = "?", cores[64];
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    const char *places = getenv("OMP_PLACES");
    cores_of_self(cores, sizeof cores);
    snprintf(mine, sizeof mine, " | rank %d host %s %d threads cores %s", grid.rank, host, omp_get_max_threads(),
             places && *places ? places : cores);
    char *all = xmalloc((size_t)grid.world * DESC_ONE);
    if (inited) MPI_Allgather(mine, DESC_ONE, MPI_CHAR, all, DESC_ONE, MPI_CHAR, MPI_COMM_WORLD);
    else memcpy(all, mine, DESC_ONE);
    size_t cap = (size_t)grid.world * DESC_ONE + 128;
    char *s = xmalloc(cap);
    snprintf(s, cap, "dist: %d rank%s = %d stage%s x %d replica%s (%s)", grid.world, grid.world == 1 ? "" : "s", grid.pp, grid.pp == 1 ? "" : "s",
             grid.dp, grid.dp == 1 ? "" : "s", inited ? "MPI" : "MPI build, not under a launcher");
    for (int r = 0; r < grid.world; r++) strncat(s, all + (size_t)r * DESC_ONE, cap - strlen(s) - 1);
    free(all);
    return s;
}

// ----------------------------------------------------------------------------
// collectives

void dist_allreduce_f32(float *buf, size_t n) {
    if (grid.world == 1) return;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    bytes_sent += (uint64_t)(2.0 * (grid.world - 1) / grid.world * (double)n * sizeof(float));
}

void dist_allreduce_f64(double *buf, int n) {
    if (grid.world > 1) MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void dist_allreduce_long(long *buf, int n) {
    if (grid.world > 1) MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
}

int dist_allreduce_max_int(int v) {
    if (grid.world > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return v;
}

void dist_iallreduce_f32(float *buf, size_t n) {
    if (grid.world == 1) return;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        LC_ASSERT(npending < DIST_MAX_PENDING);
        MPI_Iallreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &pending[npending++]);
    }
    bytes_sent += (uint64_t)(2.0 * (grid.world - 1) / grid.world * (double)n * sizeof(float));
}

void dist_progress(void) {
    int done;
    if (npending) MPI_Testall(npending, pending, &done, MPI_STATUSES_IGNORE);
}

void dist_wait(void) {
    if (npending) MPI_Waitall(npending, pending, MPI_STATUSES_IGNORE);
    npending = 0;
}

void dist_shards(const ParamTable *t, size_t *off) {
    int w = grid.dp;
    off[0] = 0;
    for (int r = 1; r < w; r++) {
        size_t want = (size_t)((double)t->size * r / w), best = off[r - 1];
        for (int i = 0; i < t->n; i++) { /* the tensor start nearest want, not before the previous cut */
            size_t o = t->p[i].offset;
            if (o >= off[r - 1] && (o > want ? o - want : want - o) < (best > want ? best - want : want - best)) best = o;
        }
        off[r] = best;
    }
    off[w] = t->size;
}

void dist_allreduce_or_u64(uint64_t *buf, int n) {
    if (grid.world > 1) MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_UINT64_T, MPI_BOR, MPI_COMM_WORLD);
}

/* counts and displacements in elements, as MPI's int arrays */
static void counts_of(const size_t *off, int *cnt, int *dsp) {
    for (int r = 0; r < grid.world; r++) {
        LC_ASSERT(off[r + 1] - off[r] <= (size_t)0x7fffffff && off[r] <= (size_t)0x7fffffff);
        cnt[r] = (int)(off[r + 1] - off[r]);
        dsp[r] = (int)off[r];
    }
}

void dist_reduce_scatter_f32(float *buf, const size_t *off) {
    if (grid.world == 1) return;
    int *cnt = xmalloc(2 * (size_t)grid.world * sizeof(int)), *dsp = cnt + grid.world;
    counts_of(off, cnt, dsp);
    /* in place: the input is the whole buffer, this rank's block lands at
     * the start of recvbuf, which is its own range */
    float *mine = buf + off[grid.rank];
    size_t n = off[grid.world] - off[0];
    float *tmp = xmalloc((off[grid.rank + 1] - off[grid.rank] + 1) * sizeof(float));
    MPI_Reduce_scatter(buf, tmp, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    memcpy(mine, tmp, (off[grid.rank + 1] - off[grid.rank]) * sizeof(float));
    free(tmp);
    free(cnt);
    bytes_sent += (uint64_t)((double)(grid.world - 1) / grid.world * (double)n * sizeof(float));
}

void dist_allgather_f32(float *buf, const size_t *off) {
    if (grid.world == 1) return;
    int *cnt = xmalloc(2 * (size_t)grid.world * sizeof(int)), *dsp = cnt + grid.world;
    counts_of(off, cnt, dsp);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, dsp, MPI_FLOAT, MPI_COMM_WORLD);
    free(cnt);
    size_t n = off[grid.world] - off[0];
    bytes_sent += (uint64_t)((double)(grid.world - 1) / grid.world * (double)n * sizeof(float));
}

void dist_bcast(void *buf, size_t bytes, int root) {
    if (grid.world == 1) return;
    char *p = buf;
    for (size_t i = 0; i < bytes; i += CHUNK) {
        size_t k = bytes - i < CHUNK ? bytes - i : CHUNK;
        MPI_Bcast(p + i, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
    }
}

void dist_barrier(void) {
    if (grid.world > 1) MPI_Barrier(MPI_COMM_WORLD);
}

uint64_t dist_bytes_sent(void) { return bytes_sent; }
