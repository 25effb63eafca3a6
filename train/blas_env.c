/*
 * blas_env.c: OPENBLAS_CORETYPE detection and re-exec (see blas_env.h).
 * Only cores the CPU really supports are chosen: forcing an AVX-512 kernel
 * on an AVX2-only CPU dies with an illegal instruction.
 */
#include "blas_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../model/ops.h"

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

void blas_env_fix(char **argv) {
    if (getenv("LLAMAC_REEXEC")) return; /* once only */
    const char *want = getenv("OPENBLAS_CORETYPE") ? NULL : wanted_core(ops_cpu_blas_core());
    /* Threads that migrate between the cores of these VMs run the step 1.5-2x
     * slower (measured: 15m preset, 459 vs 767 tokens/s); binding them to
     * places is what OpenMP's runtime reads at start-up only. */
    int bind = getenv("OMP_PROC_BIND") == NULL;
    if (!want && !bind) return;
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
