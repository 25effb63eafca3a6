/*
 * dist.c: dist.h over MPI (OpenMPI; any MPI-3 library). The gradient
 * collectives run on the replicas' communicator (MPI_COMM_WORLD until
 * dist_set_pp splits it by stage), the rest on MPI_COMM_WORLD. Errors of
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
static MPI_Comm reps = MPI_COMM_WORLD; /* this stage's replicas */
static MPI_Request pending[DIST_MAX_PENDING];
static int npending;
static MPI_Request p2p[DIST_MAX_PENDING]; /* point-to-point, MPI_REQUEST_NULL when free */
static int p2p_peer[DIST_MAX_PENDING];
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
    for (int i = 0; i < DIST_MAX_PENDING; i++) p2p[i] = MPI_REQUEST_NULL;
    return 0;
}

int dist_set_pp(int pp, Err *e) {
    if (pp < 1) return err_set(e, "--pp: must be at least 1, got %d", pp);
    if (grid.world % pp)
        return err_set(e, "--pp: %d stages do not divide the %d ranks (mpirun -np must be a multiple of --pp)", pp,
                       grid.world);
    if (pp == grid.pp) return 0;
    if (reps != MPI_COMM_WORLD) MPI_Comm_free(&reps);
    grid.pp = pp;
    grid.dp = grid.world / pp;
    grid.stage = grid.rank / grid.dp;
    grid.dp_rank = grid.rank % grid.dp;
    reps = MPI_COMM_WORLD;
    if (pp > 1) MPI_Comm_split(MPI_COMM_WORLD, grid.stage, grid.dp_rank, &reps);
    return 0;
}

void dist_finalize(void) {
    if (reps != MPI_COMM_WORLD) MPI_Comm_free(&reps);
    reps = MPI_COMM_WORLD;
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
    if (grid.dp == 1) return;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_FLOAT, MPI_SUM, reps);
    }
    bytes_sent += (uint64_t)(2.0 * (grid.dp - 1) / grid.dp * (double)n * sizeof(float));
}

/* dist_set_timeout's deadline for the small collectives (0: none). */
static double timeout_s;

void dist_set_timeout(double seconds) { timeout_s = seconds; }

/* Complete a non-blocking request: at once without a deadline, else
 * polling until it passes (then what names the wait, peer the rank waited
 * for or -1 for a collective). */
static void finish(MPI_Request *r, const char *what, int peer) {
    if (timeout_s <= 0) {
        MPI_Wait(r, MPI_STATUS_IGNORE);
        return;
    }
    double t0 = time_now();
    int done = 0;
    MPI_Test(r, &done, MPI_STATUS_IGNORE);
    while (!done) {
        double dt = time_now() - t0;
        if (dt > timeout_s) {
            char who[32] = "another rank";
            if (peer >= 0) snprintf(who, sizeof who, "rank %d", peer);
            fprintf(stderr, "llamac: error: rank %d of %d: %s: nothing from %s for %.0f s (it died or hangs); "
                            "stopping every rank\n", grid.rank, grid.world, what, who, dt);
            dist_abort(1);
        }
        if (dt > 1e-3) usleep(dt > 0.1 ? 1000 : 50);
        MPI_Test(r, &done, MPI_STATUS_IGNORE);
    }
}

static void allreduce_world(void *buf, int n, MPI_Datatype t, MPI_Op op) {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, buf, n, t, op, MPI_COMM_WORLD, &r);
    finish(&r, "a collective of every rank", -1);
}

void dist_allreduce_f64(double *buf, int n) {
    if (grid.world > 1) allreduce_world(buf, n, MPI_DOUBLE, MPI_SUM);
}

void dist_allreduce_long(long *buf, int n) {
    if (grid.world > 1) allreduce_world(buf, n, MPI_LONG, MPI_SUM);
}

int dist_allreduce_max_int(int v) {
    if (grid.world > 1) allreduce_world(&v, 1, MPI_INT, MPI_MAX);
    return v;
}

void dist_iallreduce_f32(float *buf, size_t n) {
    if (grid.dp == 1) return;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        LC_ASSERT(npending < DIST_MAX_PENDING);
        MPI_Iallreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_FLOAT, MPI_SUM, reps, &pending[npending++]);
    }
    bytes_sent += (uint64_t)(2.0 * (grid.dp - 1) / grid.dp * (double)n * sizeof(float));
}

void dist_progress(void) {
    int done;
    if (npending) MPI_Testall(npending, pending, &done, MPI_STATUSES_IGNORE);
}

void dist_wait(void) {
    if (npending) MPI_Waitall(npending, pending, MPI_STATUSES_IGNORE);
    npending = 0;
}

void dist_shards_range(const ParamTable *t, size_t lo, size_t hi, size_t *off) {
    int w = grid.dp;
    off[0] = lo;
    for (int r = 1; r < w; r++) {
        size_t want = lo + (size_t)((double)(hi - lo) * r / w), best = off[r - 1];
        for (int i = 0; i < t->n; i++) { /* the tensor start nearest want, not before the previous cut */
            size_t o = t->p[i].offset;
            if (o >= off[r - 1] && o <= hi && (o > want ? o - want : want - o) < (best > want ? best - want : want - best))
                best = o;
        }
        off[r] = best;
    }
    off[w] = hi;
}

void dist_shards(const ParamTable *t, size_t *off) { dist_shards_range(t, 0, t->size, off); }

void dist_allreduce_or_u64(uint64_t *buf, int n) {
    if (grid.world > 1) allreduce_world(buf, n, MPI_UINT64_T, MPI_BOR);
}

/* counts and displacements in elements, as MPI's int arrays */
static void counts_of(const size_t *off, int *cnt, int *dsp) {
    for (int r = 0; r < grid.dp; r++) {
        LC_ASSERT(off[r + 1] - off[r] <= (size_t)0x7fffffff && off[r] - off[0] <= (size_t)0x7fffffff);
        cnt[r] = (int)(off[r + 1] - off[r]);
        dsp[r] = (int)(off[r] - off[0]);
    }
}

void dist_reduce_scatter_f32(float *buf, const size_t *off) {
    int w = grid.dp, r = grid.dp_rank;
    if (w == 1) return;
    int *cnt = xmalloc(2 * (size_t)w * sizeof(int)), *dsp = cnt + w;
    counts_of(off, cnt, dsp);
    /* the input is the whole range, this replica's block lands in tmp,
     * then in its own place */
    size_t n = off[w] - off[0];
    float *tmp = xmalloc((off[r + 1] - off[r] + 1) * sizeof(float));
    MPI_Reduce_scatter(buf + off[0], tmp, cnt, MPI_FLOAT, MPI_SUM, reps);
    memcpy(buf + off[r], tmp, (off[r + 1] - off[r]) * sizeof(float));
    free(tmp);
    free(cnt);
    bytes_sent += (uint64_t)((double)(w - 1) / w * (double)n * sizeof(float));
}

void dist_allgather_f32(float *buf, const size_t *off) {
    int w = grid.dp;
    if (w == 1) return;
    int *cnt = xmalloc(2 * (size_t)w * sizeof(int)), *dsp = cnt + w;
    counts_of(off, cnt, dsp);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + off[0], cnt, dsp, MPI_FLOAT, reps);
    free(cnt);
    size_t n = off[w] - off[0];
    bytes_sent += (uint64_t)((double)(w - 1) / w * (double)n * sizeof(float));
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
    if (grid.world == 1) return;
    MPI_Request r;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    finish(&r, "a barrier of every rank", -1);
}

uint64_t dist_bytes_sent(void) { return bytes_sent; }

// ----------------------------------------------------------------------------
// point to point

static int p2p_start(int peer) {
    for (int i = 0; i < DIST_MAX_PENDING; i++)
        if (p2p[i] == MPI_REQUEST_NULL) {
            p2p_peer[i] = peer;
            return i;
        }
    LC_FATAL("dist: more than %d messages in flight", DIST_MAX_PENDING);
}

int dist_isend_f32(const float *buf, size_t n, int dst, int tag) {
    LC_ASSERT(n < CHUNK);
    int id = p2p_start(dst);
    MPI_Isend(buf, (int)n, MPI_FLOAT, dst, tag, MPI_COMM_WORLD, &p2p[id]);
    return id;
}

int dist_irecv_f32(float *buf, size_t n, int src, int tag) {
    LC_ASSERT(n < CHUNK);
    int id = p2p_start(src);
    MPI_Irecv(buf, (int)n, MPI_FLOAT, src, tag, MPI_COMM_WORLD, &p2p[id]);
    return id;
}

double dist_req_wait(int id, const char *what) {
    LC_ASSERT(id >= 0 && id < DIST_MAX_PENDING);
    double t0 = time_now();
    /* polled (dist_set_timeout), so that a peer that died or hangs is
     * noticed: MPI itself waits forever for a message that will not come */
    finish(&p2p[id], what, p2p_peer[id]);
    return time_now() - t0;
}

void dist_send(const void *buf, size_t bytes, int dst, int tag) {
    const char *p = buf;
    for (size_t i = 0; i < bytes; i += CHUNK) {
        size_t k = bytes - i < CHUNK ? bytes - i : CHUNK;
        MPI_Request r;
        MPI_Isend(p + i, (int)k, MPI_BYTE, dst, tag, MPI_COMM_WORLD, &r);
        finish(&r, "a send", dst);
    }
}

void dist_recv(void *buf, size_t bytes, int src, int tag) {
    char *p = buf;
    for (size_t i = 0; i < bytes; i += CHUNK) {
        size_t k = bytes - i < CHUNK ? bytes - i : CHUNK;
        MPI_Request r;
        MPI_Irecv(p + i, (int)k, MPI_BYTE, src, tag, MPI_COMM_WORLD, &r);
        finish(&r, "a receive", src);
    }
}
