/*
 * blas_env.h: make OpenBLAS pick fast kernels without the user knowing.
 * Debian's OpenBLAS 0.3.21 detects some CPUs as a generic core ("Prescott")
 * and runs SGEMM about 3.5x slower than with the right kernel; the core can
 * only be chosen by OPENBLAS_CORETYPE before the library loads. So at
 * start-up, if the variable is unset and the detected core is weaker than
 * what the CPU supports, set it and re-exec ourselves once. The same re-exec
 * binds OpenMP threads to cores (OMP_PROC_BIND=close) unless the user chose
 * a binding: also read only at start-up. Under mpirun or srun, the ranks
 * of one machine get disjoint blocks of its cores (OMP_PLACES,
 * OMP_NUM_THREADS) in the same re-exec.
 */
#ifndef LLAMAC_TRAIN_BLAS_ENV_H
#define LLAMAC_TRAIN_BLAS_ENV_H

/* Call first thing in main. Returns only if no re-exec was needed (or it
 * failed, in which case the slow kernel runs and a note is printed). */
void blas_env_fix(char **argv);

/* The OpenBLAS core in use and whether llamac chose it, for benchmarks:
 * e.g. "Haswell (detected)" or "SkylakeX (set by llamac)". Static buffer. */
const char *blas_env_describe(void);

#endif
