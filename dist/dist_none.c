/*
 * dist_none.c: dist.h for a build without MPI (MPI=0, or no mpicc found):
 * one process, every collective the identity. Started by a launcher as
 * several copies it refuses to run: they would train the same model N times
 * and write the same checkpoint files.
 */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static DistGrid grid = {0, 1, 1, 1, 0, 0, 0};

const DistGrid *dist_grid(void) { return &grid; }

/* The size a launcher gave the job: OpenMPI, MPICH/Hydra (PMI), Slurm. */
static long launcher_size(const char **who) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        char *end;
        long n = v ? strtol(v, &end, 10) : 0;
        if (v && *end == '\0' && n > 1) {
            *who = vars[i];
            return n;
        }
    }
    return 1;
}

int dist_init(int *argc, char ***argv, Err *e) {
    (void)argc;
    (void)argv;
    const char *who = NULL;
    long n = launcher_size(&who);
    if (n > 1)
        return err_set(e, "mpirun: this llamac was built without MPI, but %s=%ld asks for %ld ranks (rebuild with "
                          "libopenmpi-dev installed, or run one process)", who, n, n);
    return 0;
}

int dist_set_pp(int pp, Err *e) {
    if (pp < 1) return err_set(e, "--pp: must be at least 1, got %d", pp);
    if (pp > 1) return err_set(e, "--pp: %d stages need %d or more ranks under mpirun; this is one process", pp, pp);
    return 0;
}

void dist_finalize(void) {}

void dist_abort(int code) {
    fflush(stdout);
    exit(code);
}

char *dist_describe(void) {
    const char *s = "dist: 1 rank (built without MPI)";
    char *d = xmalloc(strlen(s) + 1);
    memcpy(d, s, strlen(s) + 1);
    return d;
}

void dist_allreduce_f32(float *buf, size_t n) { (void)buf, (void)n; }
void dist_allreduce_f64(double *buf, int n) { (void)buf, (void)n; }
void dist_allreduce_long(long *buf, int n) { (void)buf, (void)n; }
int dist_allreduce_max_int(int v) { return v; }
void dist_iallreduce_f32(float *buf, size_t n) { (void)buf, (void)n; }
void dist_progress(void) {}
void dist_wait(void) {}
void dist_shards(const ParamTable *t, size_t *off) {
    off[0] = 0;
    off[1] = t->size;
}
void dist_shards_range(const ParamTable *t, size_t lo, size_t hi, size_t *off) {
    (void)t;
    off[0] = lo;
    off[1] = hi;
}
void dist_allreduce_or_u64(uint64_t *buf, int n) { (void)buf, (void)n; }
void dist_reduce_scatter_f32(float *buf, const size_t *off) { (void)buf, (void)off; }
void dist_allgather_f32(float *buf, const size_t *off) { (void)buf, (void)off; }
void dist_bcast(void *buf, size_t bytes, int root) { (void)buf, (void)bytes, (void)root; }
void dist_barrier(void) {}
uint64_t dist_bytes_sent(void) { return 0; }

/* one process has no peers */
int dist_isend_f32(const float *buf, size_t n, int dst, int tag) { (void)buf, (void)n, (void)dst, (void)tag; LC_FATAL("dist: no peers"); }
int dist_irecv_f32(float *buf, size_t n, int src, int tag) { (void)buf, (void)n, (void)src, (void)tag; LC_FATAL("dist: no peers"); }
double dist_req_wait(int id, const char *what) { (void)id, (void)what; return 0; }
void dist_set_timeout(double seconds) { (void)seconds; }
void dist_send(const void *buf, size_t bytes, int dst, int tag) { (void)buf, (void)bytes, (void)dst, (void)tag; LC_FATAL("dist: no peers"); }
void dist_recv(void *buf, size_t bytes, int src, int tag) { (void)buf, (void)bytes, (void)src, (void)tag; LC_FATAL("dist: no peers"); }
