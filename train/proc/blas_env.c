/*
 * blas_env.c: OPENBLAS_CORETYPE detection and re-exec (see blas_env.h).
 * Only cores the CPU really supports are chosen: forcing an AVX-512 kernel
 * on an AVX2-only CPU dies with an illegal instruction.
 */
#include "blas_env.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../../model/ops.h"

static int is_one_of(const char *s, const char *const *names) {
    for (; *names; names++)
        if (strcasecmp(s, *names) == 0) return 1;
    return 0;
}

static const char *wanted_core(const char *core) {
#if defined(__x86_64__)
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "Sapphirerapids", NULL};
    static const char *const avx2[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "Sapphirerapids", NULL};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && !is_one_of(core, avx512))
        return __builtin_cpu_supports("avx512bf16") ? "COOPERLAKE" : "SKYLAKEX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !is_one_of(core, avx2))
        return "HASWELL";
#else
    (void)core;
#endif
    return NULL;
}

/* This process's rank among the ranks a launcher started on this machine,
 * and how many there are (OpenMPI, MPICH/Hydra, Slurm); 0 if none. */
static int local_rank(int *size) {
    static const char *const vars[][2] = {{"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
                                          {"MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
                                          {"SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"}};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *r = getenv(vars[i][0]), *n = getenv(vars[i][1]);
        char *e1, *e2;
        long lr = r ? strtol(r, &e1, 10) : -1, ln = n ? strtol(n, &e2, 10) : 0;
        if (r && n && *e1 == '\0' && *e2 == '\0' && ln > 1 && lr >= 0 && lr < ln) {
            *size = (int)ln;
            return (int)lr;
        }
    }
    *size = 1;
    return 0;
}

/* Ranks sharing a machine get disjoint blocks of its cores: OMP_PLACES and
 * OMP_NUM_THREADS for this rank, unless the launcher already bound it to a
 * subset (mpirun --bind-to, srun --cpu-bind: then its threads stay there)
 * or the user chose places. With more ranks than cores (mpirun
 * --oversubscribe) each rank gets one core, shared round-robin: the only
 * case two ranks share one. Returns 1 if it set anything. */
static int bind_rank_cores(void) {
    int size, lr = local_rank(&size);
    if (size <= 1 || getenv("OMP_PLACES")) return 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set)) return 0;
    int cores[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) cores[n++] = c;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (n == 0 || n < online) return 0; /* bound by the launcher */
    int first, count;
    if (size >= n) {
        first = lr % n;
        count = 1;
    } else { /* the remainder goes one core each to the first ranks */
        int base = n / size, extra = n % size;
        first = lr * base + (lr < extra ? lr : extra);
        count = base + (lr < extra);
    }
    char places[1024] = "", num[16];
    for (int i = 0; i < count; i++) {
        size_t k = strlen(places);
        snprintf(places + k, sizeof places - k, "%s{%d}", i ? "," : "", cores[first + i]);
    }
    setenv("OMP_PLACES", places, 1);
    if (!getenv("OMP_NUM_THREADS")) {
        snprintf(num, sizeof num, "%d", count);
        setenv("OMP_NUM_THREADS", num, 1);
    }
    return 1;
}

void blas_env_fix(char **argv) {
    if (getenv("LLAMAC_REEXEC")) return; /* once only */
    const char *want = getenv("OPENBLAS_CORETYPE") ? NULL : wanted_core(ops_cpu_blas_core());
    /* Threads that migrate between the cores of these VMs run the step 1.5-2x
     * slower (measured: 15m preset, 459 vs 767 tokens/s); binding them to
     * places is what OpenMP's runtime reads at start-up only. */
    int bind = getenv("OMP_PROC_BIND") == NULL;
    int pinned = bind_rank_cores();
    if (!want && !bind && !pinned) return;
    if (want) {
        setenv("OPENBLAS_CORETYPE", want, 1);
        setenv("LLAMAC_CORETYPE_SET", "1", 1);
    }
    if (bind) setenv("OMP_PROC_BIND", "close", 1);
    setenv("LLAMAC_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "llamac: note: could not re-exec to set OPENBLAS_CORETYPE / OMP_PROC_BIND; running as is\n");
}

const char *blas_env_describe(void) {
    static char buf[96];
    const char *how = getenv("LLAMAC_CORETYPE_SET") ? "set by llamac"
                      : getenv("OPENBLAS_CORETYPE") ? "OPENBLAS_CORETYPE from the environment"
                                                    : "detected";
    snprintf(buf, sizeof buf, "%s (%s)", ops_cpu_blas_core(), how);
    return buf;
}
