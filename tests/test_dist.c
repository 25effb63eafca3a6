/*
 * test_dist.c: data parallelism through the real binary under mpirun
 * (OpenMPI; as root with --allow-run-as-root, and --oversubscribe for more
 * ranks than this machine's 2 cores). Equivalence: pretrain and sft (full
 * and LoRA) on 2 and 4 ranks, ZeRO-1 on and off, give the losses of one
 * process on the same global batch within 1e-6 relative for 10 steps and
 * weights within 1e-5; one rank under mpirun is the plain run bit for bit.
 * Then resume on another rank count, a killed rank, and bad input. Skipped
 * (with a line saying so) in a build without MPI or without mpirun.
 */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/shard.h"
#include "../data/tok.h"
#include "../dist/dist.h"
#include "../model/llama.h"
#include "../model/params.h"
#include "../optim/adamw.h"
#include "../train/io/ckpt.h"
#include "test.h"
#include "tests.h"

#define TD "build/tdist"
/* Under ASan (make SAN=1) each rank checks for leaks at exit, and OpenMPI
 * leaks its own state: tests/lsan-mpi.supp suppresses stacks through its
 * libraries (the file says why), the slow unwinder lets stacks reach them
 * past libc and unloaded MCA components, and -x hands the option to every
 * rank; the caller's LSAN_OPTIONS come after ours and win. */
#ifdef __SANITIZE_ADDRESS__
#define MPIRUN_SAN "-x \"LSAN_OPTIONS=suppressions=tests/lsan-mpi.supp:fast_unwind_on_malloc=0:print_suppressions=0" \
                   "${LSAN_OPTIONS:+:$LSAN_OPTIONS}\" "
#else
#define MPIRUN_SAN ""
#endif
#define MPIRUN "mpirun --oversubscribe --allow-run-as-root " MPIRUN_SAN "-np "
#define STEPS 10

int test_have_mpi(void) {
#ifdef LC_HAVE_MPI
    if (system("command -v mpirun >/dev/null 2>&1") == 0) return 1;
#endif
    printf("  (skipped: %s)\n", dist_grid()->mpi ? "mpirun not found" : "built without MPI");
    return 0;
}

static void slurp_into(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

int test_mpi_llamac(int np, const char *fmt, ...) {
    static char args[8192], cmd[9216];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    mkdir("build", 0755);
    mkdir(TD, 0755);
    snprintf(cmd, sizeof cmd, MPIRUN "%d %s %s >" TD "/mpi.out 2>" TD "/mpi.err", np, test_llamac_path, args);
    int st = system(cmd);
    slurp_into(TD "/mpi.out", test_out, sizeof test_out);
    slurp_into(TD "/mpi.err", test_err, sizeof test_err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The "loss" of each step line of a metrics file; how many. */
static int read_losses(const char *path, double *loss, int max) {
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && n < max && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"loss\":");
        if (p) loss[n++] = strtod(p + 7, NULL);
    }
    if (f) fclose(f);
    return n;
}

/* got's losses are ref's from step first + 1 on, within 1e-6 relative. */
static void same_losses_from(const char *ref, const char *got, int first, const char *what) {
    double a[64], b[64];
    int na = read_losses(ref, a, 64), nb = read_losses(got, b, 64);
    EXPECT(na == STEPS && nb == STEPS - first, "%s: %d and %d loss lines, expected %d and %d", what, na, nb, STEPS,
           STEPS - first);
    for (int i = 0; i + first < na && i < nb; i++)
        EXPECT(fabs(a[i + first] - b[i]) <= 1e-6 * fabs(a[i + first]), "%s: step %d loss %.9g, one process %.9g",
               what, i + first + 1, b[i], a[i + first]);
}

static void same_losses(const char *ref, const char *got, const char *what) { same_losses_from(ref, got, 0, what); }

/* Largest |a - b| over the weights of two model files. */
static double weight_diff(const char *pa, const char *pb) {
    CkptInfo ia, ib;
    Err e = {{0}};
    if (ckpt_info(pa, &ia, &e) || ckpt_info(pb, &ib, &e)) {
        EXPECT(0, "%s", e.msg);
        return 1e30;
    }
    ParamTable t;
    LC_ASSERT(params_build(&ia.c, &t, &e) == 0);
    float *a = xcalloc(t.size, sizeof(float)), *b = xcalloc(t.size, sizeof(float));
    double d = 1e30;
    if (test_source_load(pa, &t, a, &e) || test_source_load(pb, &t, b, &e)) {
        EXPECT(0, "%s", e.msg);
    } else {
        d = 0;
        for (size_t i = 0; i < t.size; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    }
    free(a), free(b);
    params_free(&t);
    return d;
}

static int same_bits(const char *pa, const char *pb) {
    return weight_diff(pa, pb) == 0;
}

// ----------------------------------------------------------------------------
// fixtures: a token shard for pretraining, a tokenizer, chat data and a base
// model for sft

static void need_shard(void) {
    static int done;
    if (done) return;
    mkdir("build", 0755);
    mkdir(TD, 0755);
    Rng r;
    rng_seed(&r, 8);
    int n = 8000, V = 64;
    int32_t *tok = xmalloc((size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++) tok[i] = (i % 61 == 60) ? 0 : 1 + (int32_t)(rng_u64(&r) % (V - 1));
    Err e = {{0}};
    EXPECT(shard_write(TD "/train.bin", tok, (uint64_t)n, V, 0, 77, (uint32_t)(n / 61), &e) == 0, "shard: %s", e.msg);
    free(tok);
    done = 1;
}

/* 4 micro-batches of 2 x 32 per step: 1, 2 or 4 ranks take 4, 2 or 1 of them */
#define PRE_ARGS "pretrain --train " TD "/train.bin --preset tiny --set dim=64 --set hidden=160 --set n_layers=2 " \
                 "--batch 2 --seq 32 --batch-tokens 256 --steps 10 --lr 3e-3 --warmup 2 --seed 3 --peak-gflops 1 "

static void pretrain_ref(void) {
    static int done;
    if (done) return;
    need_shard();
    system("rm -rf " TD "/p1");
    int rc = test_llamac(PRE_ARGS "--save-every 5 --ckpt-dir " TD "/p1 --metrics " TD "/p1.jsonl --out " TD "/p1.h5");
    EXPECT(rc == 0, "one process: %s", test_err);
    done = 1;
}

void dist_pretrain_equiv(void) {
    if (!test_have_mpi()) return;
    pretrain_ref();
    static const struct { int np, zero; } runs[] = {{2, 0}, {2, 1}, {4, 0}, {4, 1}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char tag[64], ref_m[] = TD "/p1.jsonl", m[128], out[128];
        snprintf(tag, sizeof tag, "pretrain np %d zero %d", runs[i].np, runs[i].zero);
        snprintf(m, sizeof m, TD "/p%d_%d.jsonl", runs[i].np, runs[i].zero);
        snprintf(out, sizeof out, TD "/p%d_%d.h5", runs[i].np, runs[i].zero);
        int rc = test_mpi_llamac(runs[i].np, PRE_ARGS "--zero %d --ckpt-dir " TD "/pc%d_%d --metrics %s --out %s",
                            runs[i].zero, runs[i].np, runs[i].zero, m, out);
        EXPECT(rc == 0, "%s: exit %d: %s", tag, rc, test_err);
        if (rc) continue;
        char want[64];
        snprintf(want, sizeof want, "dist: %d ranks = 1 stage x %d replicas (MPI)", runs[i].np, runs[i].np);
        EXPECT(strstr(test_out, want) && strstr(test_out, "| rank 1 host "), "%s: start-up line: %s", tag, test_out);
        same_losses(ref_m, m, tag);
        double d = weight_diff(TD "/p1.h5", out);
        EXPECT(d <= 1e-5, "%s: weights differ by %g from one process", tag, d);
    }
}

/* One rank under mpirun is the plain run, bit for bit. */
void dist_one_rank(void) {
    if (!test_have_mpi()) return;
    pretrain_ref();
    system("rm -rf " TD "/q1");
    int rc = test_mpi_llamac(1, PRE_ARGS "--ckpt-dir " TD "/q1 --metrics " TD "/q1.jsonl --out " TD "/q1.h5");
    EXPECT(rc == 0, "mpirun -np 1: %s", test_err);
    EXPECT(strstr(test_out, "dist: 1 rank = 1 stage x 1 replica (MPI)"), "start-up line: %s", test_out);
    ckpt_test_same_losses(TD "/p1.jsonl", TD "/q1.jsonl", STEPS);
    EXPECT(same_bits(TD "/p1.h5", TD "/q1.h5"), "weights differ from the plain run");
}

/* sft (full and LoRA) over 2 and 4 ranks */
static char tokp[512];
#define SFT_ARGS "sft --model " TD "/base.h5 --data " TD "/chat.jsonl --template llama3 --batch 2 --seq 64 " \
                 "--batch-tokens 512 --steps 10 --lr 3e-3 --warmup 2 --seed 4 --peak-gflops 1 --tokenizer "

static void need_sft_inputs(void) {
    static int done;
    if (done) return;
    mkdir("build", 0755);
    mkdir(TD, 0755);
    Tokenizer t;
    snprintf(tokp, sizeof tokp, "%s", test_chat_tokenizer(&t));
    tok_free(&t);
    FILE *f = fopen(TD "/chat.jsonl", "wb"), *g = fopen(TD "/pc.jsonl", "wb");
    LC_ASSERT(f && g);
    static const char *w[] = {"Hi", "there", "you", "are", "helpful", "Fine", "How", "Hello"};
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < 120; i++) {
        char q[256] = "", a[256] = "";
        int k = 2 + (int)(rng_u64(&r) % 6);
        for (int j = 0; j < k; j++) {
            strcat(q, w[rng_u64(&r) % 8]), strcat(q, " ");
            strcat(a, w[rng_u64(&r) % 8]), strcat(a, " ");
        }
        fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, {\"role\": \"assistant\", "
                   "\"content\": \"%s\"}]}\n", q, a);
        fprintf(g, "{\"prompt\": \"%s\", \"completion\": \"%s\"}\n", q, a);
    }
    fclose(f);
    fclose(g);
    FILE *h = fopen(TD "/pairs.jsonl", "wb");
    LC_ASSERT(h);
    for (int i = 0; i < 80; i++) {
        char q[256] = "", a[256] = "", b[256] = "";
        int k = 2 + (int)(rng_u64(&r) % 4);
        for (int j = 0; j < k; j++) {
            strcat(q, w[rng_u64(&r) % 8]), strcat(q, " ");
            strcat(a, w[j % 4]), strcat(a, " ");
            strcat(b, w[rng_u64(&r) % 8]), strcat(b, " ");
        }
        fprintf(h, "{\"prompt\": [{\"role\": \"user\", \"content\": \"%s\"}], \"chosen\": [{\"role\": \"assistant\", "
                   "\"content\": \"%s\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"%s\"}]}\n", q, a, b);
    }
    fclose(h);
    int rc = test_llamac("tokenize encode --tokenizer %s --input " TD "/pc.jsonl --field prompt --out " TD "/s.bin",
                         tokp);
    EXPECT(rc == 0, "encode: %s", test_err);
    rc = test_llamac("pretrain --train " TD "/s.bin --preset tiny --set dim=64 --set hidden=160 --set n_layers=2 "
                     "--batch 2 --seq 32 --steps 2 --ckpt-dir " TD "/sb --out " TD "/base.h5 --peak-gflops 1");
    EXPECT(rc == 0, "base model: %s", test_err);
    done = 1;
}

void dist_sft_equiv(void) {
    if (!test_have_mpi()) return;
    need_sft_inputs();
    static const struct { int np, zero, lora; } runs[] = {{1, 0, 0}, {2, 0, 0}, {4, 1, 0}, {1, 0, 1}, {2, 0, 1}, {2, 1, 1}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char tag[64], m[128], ref[128], out[128], refout[128];
        const char *lora = runs[i].lora ? "--lora-r 4 --lora-targets all-linear " : "";
        snprintf(tag, sizeof tag, "sft%s np %d zero %d", runs[i].lora ? " lora" : "", runs[i].np, runs[i].zero);
        snprintf(m, sizeof m, TD "/s%d_%d_%d.jsonl", runs[i].lora, runs[i].np, runs[i].zero);
        snprintf(ref, sizeof ref, TD "/s%d_1_0.jsonl", runs[i].lora);
        snprintf(out, sizeof out, TD "/sc%d_%d_%d", runs[i].lora, runs[i].np, runs[i].zero);
        snprintf(refout, sizeof refout, TD "/sc%d_1_0/step-00000010.h5", runs[i].lora);
        char rm[256];
        snprintf(rm, sizeof rm, "rm -rf %s", out);
        system(rm);
        int rc = runs[i].np == 1
                     ? test_llamac(SFT_ARGS "%s %s--ckpt-dir %s --metrics %s --out %s.h5 --adapter-out %s.ad", tokp,
                                   lora, out, m, out, out)
                     : test_mpi_llamac(runs[i].np, SFT_ARGS "%s %s--zero %d --ckpt-dir %s --metrics %s --out %s.h5 "
                                  "--adapter-out %s.ad", tokp, lora, runs[i].zero, out, m, out, out);
        EXPECT(rc == 0, "%s: exit %d: %s", tag, rc, test_err);
        if (rc || runs[i].np == 1) continue;
        same_losses(ref, m, tag);
        if (!runs[i].lora) {
            char h5[160];
            snprintf(h5, sizeof h5, "%s/step-00000010.h5", out);
            double d = weight_diff(refout, h5);
            EXPECT(d <= 1e-5, "%s: weights differ by %g from one process", tag, d);
        }
    }
}

/* A metrics file's step lines: mfu and tokens_per_s of each; how many. */
static int read_mfu(const char *path, double *mfu, double *tps, int max) {
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && n < max && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"mfu\":"), *q = strstr(line, "\"tokens_per_s\":");
        if (!p || !q) continue;
        mfu[n] = strtod(p + 6, NULL), tps[n++] = strtod(q + 15, NULL);
    }
    if (f) fclose(f);
    return n;
}

/* MFU divides all ranks' tokens/s by all ranks' peak: at most 100% with
 * the SGEMM peak measured here (LoRA, one process and two ranks), and with
 * a given per-rank peak the FLOPs per token it implies (mfu x peak x ranks
 * / tokens/s) are the model's on one rank and on two (one rank's peak
 * against both ranks' tokens made them 2x). */
void dist_mfu(void) {
    if (!test_have_mpi()) return;
    need_sft_inputs();
    CkptInfo ci;
    Err e = {{0}};
    LC_ASSERT(ckpt_info(TD "/base.h5", &ci, &e) == 0);
    static const struct { int np, lora; double peak; } runs[] = {
        {1, 1, 0}, {2, 1, 0}, {1, 0, 10}, {2, 0, 10}, {1, 1, 10}, {2, 1, 10}};
    double fpt[2][3] = {{0}}; /* [lora][np], from the given-peak runs */
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char tag[64], m[128], out[128];
        const char *lora = runs[i].lora ? "--lora-r 4 " : "";
        snprintf(tag, sizeof tag, "%s np %d peak %g", runs[i].lora ? "lora" : "full", runs[i].np, runs[i].peak);
        snprintf(m, sizeof m, TD "/mfu%zu.jsonl", i);
        snprintf(out, sizeof out, TD "/mfu%zu", i);
        const char *a = SFT_ARGS "%s %s--steps 3 --peak-gflops %g --ckpt-dir %s --metrics %s --out %s.h5 --adapter-out %s.ad";
        int rc = runs[i].np == 1 ? test_llamac(a, tokp, lora, runs[i].peak, out, m, out, out)
                                 : test_mpi_llamac(runs[i].np, a, tokp, lora, runs[i].peak, out, m, out, out);
        EXPECT(rc == 0, "%s: exit %d: %s", tag, rc, test_err);
        double mfu[8], tps[8];
        int n = read_mfu(m, mfu, tps, 8);
        EXPECT(n == 3, "%s: %d step lines", tag, n);
        for (int k = 0; k < n; k++) {
            EXPECT(mfu[k] > 0 && tps[k] > 0, "%s: step %d: mfu %g, %g tokens/s", tag, k + 1, mfu[k], tps[k]);
            if (runs[i].peak == 0) EXPECT(mfu[k] <= 1.0, "%s: step %d: MFU %.1f%% over 100%%", tag, k + 1, 100 * mfu[k]);
            else fpt[runs[i].lora][runs[i].np] = mfu[k] * runs[i].peak * 1e9 * runs[i].np / tps[k];
        }
    }
    double full = llama_flops_per_token(&ci.c, 64); /* --seq 64 */
    for (int np = 1; np <= 2; np++) {
        EXPECT(fabs(fpt[0][np] - full) <= 0.02 * full, "full np %d: MFU implies %.4g FLOPs/token, the model does %.4g",
               np, fpt[0][np], full);
        EXPECT(fpt[1][np] > 0.5 * full && fpt[1][np] < 0.8 * full, "lora np %d: %.4g FLOPs/token, full %.4g", np,
               fpt[1][np], full);
    }
    EXPECT(fabs(fpt[1][2] - fpt[1][1]) <= 0.02 * fpt[1][1], "lora: %.4g FLOPs/token on 2 ranks, %.4g on one",
           fpt[1][2], fpt[1][1]);
}

/* A checkpoint save that fails for want of space (RLIMIT_FSIZE with SIGXFSZ
 * ignored: a write past it fails with EFBIG, as one on a full disk fails with
 * ENOSPC) ends the run with its one error line and exit status 1 (libhdf5
 * once crashed at exit on the file a failed save left open), leaves no
 * temporary file, and the earlier checkpoints still resume; one process and
 * two ranks (parallel HDF5). */
void dist_save_no_space(void) {
    need_shard();
    int have = test_have_mpi();
    for (int np = 1; np <= (have ? 2 : 1); np++) {
        char dir[128], cmd[4096];
        snprintf(dir, sizeof dir, TD "/nospace%d", np);
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        system(cmd);
        /* (TCP between the ranks: OpenMPI's shared-memory segment is a file the
         * limit would refuse) */
        const char *launch = np == 1 ? "" : MPIRUN "2 --mca btl self,tcp ";
        /* 4 steps saved at 2 and 4, with room */
        snprintf(cmd, sizeof cmd, "%s%s " PRE_ARGS "--steps 4 --save-every 2 --ckpt-dir %s --out %s/out.h5 >" TD
                 "/mpi.out 2>" TD "/mpi.err", launch, test_llamac_path, dir, dir);
        int st = system(cmd);
        slurp_into(TD "/mpi.err", test_err, sizeof test_err);
        EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "np %d: first run: %d %s", np, st, test_err);
        /* then on to 6 with files limited to 1000 KiB, less than a checkpoint */
        snprintf(cmd, sizeof cmd, "%ssh -c 'trap \"\" XFSZ; ulimit -f 1000; exec %s " PRE_ARGS "--steps 6 "
                 "--save-every 2 --ckpt-dir %s --out %s/out.h5 --resume auto' >" TD "/mpi.out 2>" TD "/mpi.err",
                 launch, test_llamac_path, dir, dir);
        st = system(cmd);
        slurp_into(TD "/mpi.err", test_err, sizeof test_err);
        int lines = 0; /* llamac's lines (mpirun adds its own about the exits) */
        for (const char *p = test_err; (p = strstr(p, "llamac: ")); p++) lines++;
        EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 1, "np %d: status %d (want exit 1), stderr: %s", np, st, test_err);
        EXPECT(lines == np && strstr(test_err, "step-00000006.h5: cannot write the checkpoint: File too large") &&
                   !strstr(test_err, "Segmentation") && !strstr(test_err, "signal"),
               "np %d: want one error line per rank: %s", np, test_err);
        snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", dir);
        EXPECT(system(cmd) != 0, "np %d: a temporary file was left in %s", np, dir);
        /* the earlier checkpoints are whole: the run resumes from step 4 */
        snprintf(cmd, sizeof cmd, "%s/step-00000004.h5", dir);
        CkptInfo info;
        Err e;
        EXPECT(ckpt_info(cmd, &info, &e) == 0 && info.step == 4, "np %d: step 4: %s", np, e.msg);
        int rc = test_llamac(PRE_ARGS "--steps 6 --save-every 2 --ckpt-dir %s --out %s/out.h5 --resume auto", dir, dir);
        EXPECT(rc == 0 && strstr(test_out, "step 6/6"), "np %d: resume after the failed save: %s", np, test_err);
    }
}

/* Bad input under mpirun: one line per failing rank and a non-zero exit. */
void dist_errors(void) {
    if (!test_have_mpi()) return;
    need_shard();
    /* 4 micro-batches do not divide across 3 ranks. Every rank finds it and
     * aborts; whichever rank aborts first may kill the others before they
     * print, so the line is looked for from any rank. */
    int rc = test_mpi_llamac(3, PRE_ARGS "--ckpt-dir " TD "/e1 --out " TD "/e1.h5");
    const char *line = strstr(test_err, "llamac: error: rank ");
    EXPECT(rc != 0 && line && line[20] >= '0' && line[20] <= '2' &&
               strncmp(line + 21, " of 3: --batch-tokens: 256 tokens are 4 micro-batches of B*T = 64, which do not "
                                  "divide across 3 ranks", 101) == 0,
           "3 ranks: %d %s", rc, test_err);
    /* --zero 1 on one rank: a warning */
    rc = test_llamac(PRE_ARGS "--steps 1 --zero 1 --ckpt-dir " TD "/e2 --out " TD "/e2.h5");
    EXPECT(rc == 0 && strstr(test_err, "warning: --zero 1 with one rank"), "zero on one rank: %d %s", rc, test_err);
    /* a shard missing on one rank's host (here: a per-rank path) stops all, not a hang */
    system("cp " TD "/train.bin " TD "/r0.bin; rm -f " TD "/r1.bin");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "timeout 60 " MPIRUN "2 sh -c 'exec %s " PRE_ARGS "--ckpt-dir " TD "/e4 --out " TD "/e4.h5 "
             "--train " TD "/r$OMPI_COMM_WORLD_RANK.bin' >" TD "/mpi.out 2>" TD "/mpi.err", test_llamac_path);
    double t0 = time_now();
    int st = system(cmd);
    slurp_into(TD "/mpi.err", test_err, sizeof test_err);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 124, "missing shard: status %d", st);
    EXPECT(strstr(test_err, "llamac: error: rank 1 of 2: " TD "/r1.bin"), "missing shard: %s", test_err);
    EXPECT(time_now() - t0 < 30, "missing shard: %.0f s to stop", time_now() - t0);
    /* resuming a checkpoint of another model */
    pretrain_ref();
    rc = test_mpi_llamac(2, PRE_ARGS "--set dim=96 --ckpt-dir " TD "/e3 --resume " TD "/p1/step-00000010.h5 --steps 12");
    EXPECT(rc != 0 && strstr(test_err, "the checkpoint's model does not match"), "other model: %d %s", rc, test_err);
}

/* A run saved on 4 ranks (ZeRO or not) resumes on 2 or 1, one saved on 1
 * resumes on 4 with ZeRO: the same losses as one process from there on,
 * the same weights at the end. */
void dist_resume_other_size(void) {
    if (!test_have_mpi()) return;
    pretrain_ref();
    static const struct { int np_save, zero_save, np, zero; } runs[] = {{4, 1, 2, 0}, {4, 0, 1, 0}, {4, 1, 1, 0},
                                                                        {1, 0, 4, 1}, {2, 1, 4, 0}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char tag[96], dir[128], m[128], out[128], step5[160];
        snprintf(tag, sizeof tag, "saved on %d (zero %d), resumed on %d (zero %d)", runs[i].np_save, runs[i].zero_save,
                 runs[i].np, runs[i].zero);
        snprintf(dir, sizeof dir, TD "/r%zu", i);
        snprintf(m, sizeof m, TD "/r%zu.jsonl", i);
        snprintf(out, sizeof out, TD "/r%zu.h5", i);
        snprintf(step5, sizeof step5, "%s/step-00000005.h5", dir);
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf %s %s; mkdir -p %s", dir, m, dir);
        system(cmd);
        int rc;
        if (runs[i].np_save == 1) { /* the one-process run's own step-5 checkpoint */
            snprintf(cmd, sizeof cmd, "cp " TD "/p1/step-00000005.h5 %s", step5);
            rc = system(cmd);
        } else {
            rc = test_mpi_llamac(runs[i].np_save, PRE_ARGS "--steps 10 --save-every 5 --zero %d --ckpt-dir %s --out %s",
                            runs[i].zero_save, dir, out);
            snprintf(cmd, sizeof cmd, "rm -f %s/step-00000010.h5", dir);
            system(cmd);
        }
        EXPECT(rc == 0 && access(step5, F_OK) == 0, "%s: saving: %s", tag, test_err);
        if (rc) continue;
        const char *a = PRE_ARGS "--zero %d --ckpt-dir %s --metrics %s --out %s --resume auto";
        rc = runs[i].np == 1 ? test_llamac(PRE_ARGS "--ckpt-dir %s --metrics %s --out %s --resume auto", dir, m, out)
                             : test_mpi_llamac(runs[i].np, a, runs[i].zero, dir, m, out);
        EXPECT(rc == 0, "%s: %s", tag, test_err);
        EXPECT(strstr(test_out, "resume: ") && strstr(test_out, "at step 5"), "%s: no resume line: %s", tag, test_out);
        same_losses_from(TD "/p1.jsonl", m, 5, tag);
        double d = weight_diff(TD "/p1.h5", out);
        EXPECT(d <= 1e-5, "%s: weights differ by %g from one process", tag, d);
    }
}

/* The pid of rank `rank` among mpirun's children (OMPI_COMM_WORLD_RANK in
 * its environment), or -1. */
static pid_t rank_pid(pid_t mpirun, int rank) {
    char want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t found = -1;
    while (d && found < 0 && (de = readdir(d))) {
        char path[300], buf[1 << 15];
        long pid = strtol(de->d_name, NULL, 10);
        if (pid <= 0) continue;
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        long ppid = 0;
        if (!f) continue;
        int ok = fscanf(f, "%*d %*s %*c %ld", &ppid) == 1;
        fclose(f);
        if (!ok || ppid != mpirun) continue;
        snprintf(path, sizeof path, "/proc/%ld/environ", pid);
        if (!(f = fopen(path, "rb"))) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
            if (strcmp(buf + i, want) == 0) found = (pid_t)pid;
    }
    if (d) closedir(d);
    return found;
}

/* 30-100 ms a step on 2 ranks here (quiet to loaded), so the kill lands mid-run */
#define KILL_ARGS "pretrain --train " TD "/train.bin --preset tiny --set dim=128 --set hidden=384 --set n_layers=2 " \
                  "--batch 4 --seq 128 --batch-tokens 1024 --steps 60 --lr 3e-3 --warmup 2 --seed 3 --peak-gflops 1 " \
                  "--save-every 5 --keep 2 "

/* SIGKILL of rank 1 mid-run: every rank gone within 30 s with a line naming
 * it; --resume auto continues from the intact last checkpoint to the end,
 * with the straight run's losses. */
/* the uninterrupted 2-rank run both fault tests compare with */
static void kill_straight(void) {
    static int done;
    if (done) return;
    need_shard();
    system("rm -rf " TD "/ks");
    int rc = test_mpi_llamac(2, KILL_ARGS "--ckpt-dir " TD "/ks --out " TD "/ks.h5");
    EXPECT(rc == 0, "straight run: %s", test_err);
    done = 1;
}

void dist_rank_killed(void) {
    if (!test_have_mpi()) return;
    kill_straight();
    system("rm -rf " TD "/k " TD "/k.jsonl");
    int rc;
    pid_t pid = fork();
    LC_ASSERT(pid >= 0);
    if (pid == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "exec " MPIRUN "2 %s " KILL_ARGS "--ckpt-dir " TD "/k --metrics " TD "/k.jsonl "
                 "--out " TD "/k.h5 >" TD "/k.log 2>&1", test_llamac_path);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    EXPECT(ckpt_test_wait_for(TD "/k/step-00000005.h5", pid) == 0, "no step-5 checkpoint appeared");
    pid_t victim = rank_pid(pid, 1);
    EXPECT(victim > 0, "rank 1 of mpirun %d not found", (int)pid);
    if (victim > 0) kill(victim, SIGKILL);
    double t0 = time_now();
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0 && time_now() - t0 < 30) usleep(20000);
    double dt = time_now() - t0;
    if (dt >= 30) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    EXPECT(dt < 30, "mpirun still running %.0f s after the kill", dt);
    EXPECT(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "mpirun exited 0 after a rank was killed");
    char log[TEST_ERR_MAX];
    slurp_into(TD "/k/../k.log", log, sizeof log);
    EXPECT(strstr(log, "rank 1") && strstr(log, "signal 9"), "no line naming the lost rank: %s", log);
    EXPECT(access(TD "/k/step-00000060.h5", F_OK) != 0, "the run finished before the kill: make it longer");
    rc = test_mpi_llamac(2, KILL_ARGS "--ckpt-dir " TD "/k --metrics " TD "/k.jsonl --out " TD "/k.h5 --resume auto");
    EXPECT(rc == 0 && strstr(test_out, "resume: "), "resume auto: %s", test_err);
    double d = weight_diff(TD "/ks.h5", TD "/k.h5");
    EXPECT(d == 0, "resumed weights differ by %g from the straight run", d);
}

/* A checkpoint written by 4 ranks with ZeRO-1 (each its shard's tensors,
 * through MPI-IO) has the one-process layout: the same datasets and
 * shapes (h5ls) for the tensors, checksums that verify, and moments within 1e-5 of one
 * process's. */
void dist_ckpt_layout(void) {
    if (!test_have_mpi()) return;
    pretrain_ref();
    system("rm -rf " TD "/l4");
    int rc = test_mpi_llamac(4, PRE_ARGS "--zero 1 --ckpt-dir " TD "/l4 --out " TD "/l4.h5");
    EXPECT(rc == 0, "4 ranks: %s", test_err);
    const char *a = TD "/p1/step-00000010.h5", *b = TD "/l4/step-00000010.h5";
    /* the tensors' layout (/state differs by design: one cursor per rank, the run's flags) */
    rc = system("h5ls -r " TD "/p1/step-00000010.h5 | grep -v /state >" TD "/l1.ls && h5ls -r " TD
                "/l4/step-00000010.h5 | grep -v /state >" TD "/l4.ls && cmp -s " TD "/l1.ls " TD "/l4.ls");
    EXPECT(rc == 0, "h5ls -r of %s and %s differ", a, b);
    CkptInfo info;
    Err e = {{0}};
    if (ckpt_info(b, &info, &e)) {
        EXPECT(0, "%s", e.msg);
        return;
    }
    ParamTable t;
    LC_ASSERT(params_build(&info.c, &t, &e) == 0);
    AdamWConfig ac = ADAMW_DEFAULTS;
    AdamW oa, ob;
    LC_ASSERT(adamw_init(&oa, &ac, &t, &ops_cpu, NULL, &e) == 0 && adamw_init(&ob, &ac, &t, &ops_cpu, NULL, &e) == 0);
    float *pa = xcalloc(t.size, sizeof(float)), *pb = xcalloc(t.size, sizeof(float));
    CkptState sa, sb;
    EXPECT(ckpt_load(a, &info.c, &t, pa, &oa, &sa, &e) == 0, "%s", e.msg);
    EXPECT(ckpt_load(b, &info.c, &t, pb, &ob, &sb, &e) == 0, "%s", e.msg);
    double dm = 0, dv = 0;
    for (size_t i = 0; i < t.size; i++) {
        dm = fmax(dm, fabs((double)oa.m[i] - ob.m[i]));
        dv = fmax(dv, fabs((double)oa.v[i] - ob.v[i]));
    }
    EXPECT(dm <= 1e-5 && dv <= 1e-5, "moments differ: m by %g, v by %g", dm, dv);
    EXPECT(oa.t == ob.t && sa.step == sb.step && sb.world == 4 && sa.cursor[0] == sb.cursor[6] &&
           sa.cursor[1] == sb.cursor[7], "state differs: t %ld/%ld step %ld/%ld world %d", oa.t, ob.t, sa.step, sb.step,
           sb.world);
    ckpt_state_free(&sa), ckpt_state_free(&sb);
    adamw_free(&oa), adamw_free(&ob);
    free(pa), free(pb);
    params_free(&t);
}

/* A build without MPI (dist_none.c; build/llamac-nompi links it instead of
 * dist.c) started as N copies by mpirun refuses with one line each, and
 * runs as one process otherwise. */
void dist_none_refuses(void) {
    if (!test_have_mpi()) return;
    need_shard();
    char bin[4200], cmd[8192];
    snprintf(bin, sizeof bin, "%s-nompi", test_llamac_path);
    if (access(bin, X_OK) != 0) {
        EXPECT(0, "%s missing (make builds it)", bin);
        return;
    }
    snprintf(cmd, sizeof cmd, MPIRUN "2 %s " PRE_ARGS "--steps 1 --ckpt-dir " TD "/n1 --out " TD "/n1.h5 >" TD
             "/mpi.out 2>" TD "/mpi.err", bin);
    int st = system(cmd);
    slurp_into(TD "/mpi.err", test_err, sizeof test_err);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) != 0, "status %d", st);
    EXPECT(strstr(test_err, "llamac: error: mpirun: this llamac was built without MPI, but OMPI_COMM_WORLD_SIZE=2 "
                            "asks for 2 ranks"), "no refusal: %s", test_err);
    EXPECT(access(TD "/n1.h5", F_OK) != 0, "a copy ran and wrote its output");
    snprintf(cmd, sizeof cmd, "%s " PRE_ARGS "--steps 1 --ckpt-dir " TD "/n2 --out " TD "/n2.h5 >" TD "/mpi.out 2>"
             TD "/mpi.err", bin);
    st = system(cmd);
    slurp_into(TD "/mpi.out", test_out, sizeof test_out);
    EXPECT(st == 0 && strstr(test_out, "dist: 1 rank (built without MPI)"), "plain run: %d %s", st, test_out);
}

/* SIGTERM to mpirun (which forwards it to every rank): all ranks stop
 * after the same step with a checkpoint, and --resume auto finishes with
 * the straight run's weights. */
void dist_sigterm(void) {
    if (!test_have_mpi()) return;
    kill_straight();
    system("rm -rf " TD "/t");
    int rc;
    pid_t pid = fork();
    LC_ASSERT(pid >= 0);
    if (pid == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "exec " MPIRUN "2 %s " KILL_ARGS "--ckpt-dir " TD "/t --out " TD "/t.h5 >" TD
                 "/t.log 2>&1", test_llamac_path);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    EXPECT(ckpt_test_wait_for(TD "/t/step-00000005.h5", pid) == 0, "no step-5 checkpoint appeared");
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    char log[TEST_ERR_MAX];
    slurp_into(TD "/t.log", log, sizeof log);
    EXPECT(strstr(log, "stopped by SIGTERM after step"), "no stop line: %s", log);
    EXPECT(access(TD "/t/step-00000060.h5", F_OK) != 0, "the run finished before the signal: make it longer");
    rc = test_mpi_llamac(2, KILL_ARGS "--ckpt-dir " TD "/t --out " TD "/t.h5 --resume auto");
    EXPECT(rc == 0 && strstr(test_out, "resume: "), "resume auto: %s", test_err);
    double d = weight_diff(TD "/ks.h5", TD "/t.h5");
    EXPECT(d == 0, "resumed weights differ by %g from the straight run", d);
}

/* dpo (LoRA: the reference is the adapters switched off; full: a frozen
 * copy) over 2 and 4 ranks against one process. */
#define DPO_ARGS "dpo --model " TD "/base.h5 --data " TD "/pairs.jsonl --template llama3 --batch 2 --seq 64 " \
                 "--batch-tokens 512 --steps 10 --lr 2e-3 --warmup 2 --seed 4 --beta 0.5 --peak-gflops 1 --tokenizer "

void dist_dpo_equiv(void) {
    if (!test_have_mpi()) return;
    need_sft_inputs();
    static const struct { int np, zero, lora; } runs[] = {{1, 0, 1}, {2, 0, 1}, {4, 1, 1}, {1, 0, 0}, {2, 1, 0}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char tag[64], m[128], ref[128], out[128];
        const char *lora = runs[i].lora ? "--lora-r 4 " : "";
        snprintf(tag, sizeof tag, "dpo%s np %d zero %d", runs[i].lora ? " lora" : "", runs[i].np, runs[i].zero);
        snprintf(m, sizeof m, TD "/d%d_%d_%d.jsonl", runs[i].lora, runs[i].np, runs[i].zero);
        snprintf(ref, sizeof ref, TD "/d%d_1_0.jsonl", runs[i].lora);
        snprintf(out, sizeof out, TD "/dc%d_%d_%d", runs[i].lora, runs[i].np, runs[i].zero);
        char rm[320];
        snprintf(rm, sizeof rm, "rm -rf %s %s", out, m);
        system(rm);
        int rc = runs[i].np == 1
                     ? test_llamac(DPO_ARGS "%s %s--ckpt-dir %s --metrics %s --out %s.h5 --adapter-out %s.ad", tokp,
                                   lora, out, m, out, out)
                     : test_mpi_llamac(runs[i].np, DPO_ARGS "%s %s--zero %d --ckpt-dir %s --metrics %s --out %s.h5 "
                                  "--adapter-out %s.ad", tokp, lora, runs[i].zero, out, m, out, out);
        EXPECT(rc == 0, "%s: exit %d: %s", tag, rc, test_err);
        if (rc || runs[i].np == 1) continue;
        same_losses(ref, m, tag);
    }
}

// ----------------------------------------------------------------------------
// pipeline parallelism: the same runs on stages of layers

/* 8 micro-batches of 2 x 32 per step on a 4-layer model */
#define PP_ARGS "pretrain --train " TD "/train.bin --preset tiny --set dim=64 --set hidden=160 --set n_layers=4 " \
                "--batch 2 --seq 32 --batch-tokens 512 --steps 10 --lr 3e-3 --warmup 2 --seed 3 --peak-gflops 1 "

/* The one-process runs they are compared with (untied and tied head). */
static void pp_ref(int tied) {
    static int done[2];
    if (done[tied]) return;
    need_shard();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf " TD "/pr%d " TD "/pr%d.jsonl", tied, tied);
    system(cmd);
    int rc = test_llamac(PP_ARGS "--set tied=%d --save-every 5 --ckpt-dir " TD "/pr%d --metrics " TD "/pr%d.jsonl "
                         "--out " TD "/pr%d.h5", tied, tied, tied, tied);
    EXPECT(rc == 0, "one process (tied %d): %s", tied, test_err);
    done[tied] = 1;
}

/* PP 2 and 4, DP x PP 2 x 2 (with ZeRO-1), both schedules, tied and
 * untied: one process's losses within 1e-6, weights within 1e-5. */
void dist_pp_equiv(void) {
    if (!test_have_mpi()) return;
    static const struct { int np, pp, zero, tied; const char *sched; } runs[] = {
        {2, 2, 0, 0, "gpipe"}, {2, 2, 0, 0, "1f1b"}, {4, 4, 0, 0, "1f1b"}, {4, 2, 1, 0, "1f1b"},
        {2, 2, 0, 1, "1f1b"}, {4, 4, 0, 1, "gpipe"}, {4, 2, 0, 1, "gpipe"}, {3, 3, 0, 1, "1f1b"},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        pp_ref(runs[i].tied);
        char tag[96], m[128], out[128], ref[64], refout[64], want[96];
        snprintf(tag, sizeof tag, "np %d pp %d %s zero %d tied %d", runs[i].np, runs[i].pp, runs[i].sched,
                 runs[i].zero, runs[i].tied);
        snprintf(m, sizeof m, TD "/pp%zu.jsonl", i);
        snprintf(out, sizeof out, TD "/pp%zu.h5", i);
        snprintf(ref, sizeof ref, TD "/pr%d.jsonl", runs[i].tied);
        snprintf(refout, sizeof refout, TD "/pr%d.h5", runs[i].tied);
        int rc = test_mpi_llamac(runs[i].np, PP_ARGS "--set tied=%d --pp %d --pp-schedule %s --zero %d --ckpt-dir " TD
                            "/ppc%zu --metrics %s --out %s", runs[i].tied, runs[i].pp, runs[i].sched, runs[i].zero, i,
                            m, out);
        EXPECT(rc == 0, "%s: exit %d: %s", tag, rc, test_err);
        if (rc) continue;
        int dp = runs[i].np / runs[i].pp;
        snprintf(want, sizeof want, "dist: %d ranks = %d stages x %d replica%s (MPI)", runs[i].np, runs[i].pp, dp,
                 dp == 1 ? "" : "s");
        EXPECT(strstr(test_out, want) && strstr(test_out, "pipeline: ") && strstr(test_out, "  stage 1 (layers "),
               "%s: start-up or report lines: %s", tag, test_out);
        same_losses(ref, m, tag);
        double d = weight_diff(refout, out);
        EXPECT(d <= 1e-5, "%s: weights differ by %g from one process", tag, d);
    }
}

/* sft on stages: full with DP x PP and ZeRO-1, LoRA with recomputation,
 * validation (loss and accuracy) included. */
void dist_pp_sft(void) {
    if (!test_have_mpi()) return;
    need_sft_inputs();
    static const struct { int np, lora; const char *extra; } runs[] = {
        {1, 0, ""}, {4, 0, "--pp 2 --zero 1 --pp-schedule gpipe "}, {1, 1, ""}, {2, 1, "--pp 2 --recompute 1 "},
        /* QLoRA: the base held as Q8_0 on every stage and replica */
        {1, 2, ""}, {2, 2, "--pp 2 --recompute 1 "}, {2, 2, "--zero 1 "},
    };
    static const char *const loras[3] = {"", "--lora-r 4 --lora-targets all-linear ",
                                         "--lora-r 4 --lora-targets all-linear --base-quant q8_0 "};
    static const int first[3] = {0, 2, 4}; /* each kind's one-process run */
    char ref_val[3][256] = {"", "", ""};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char tag[96], m[128], dir[128], ref[128], refck[160], ck[160];
        const char *lora = loras[runs[i].lora];
        snprintf(tag, sizeof tag, "sft%s np %d %s", runs[i].lora == 2 ? " qlora" : runs[i].lora ? " lora" : "",
                 runs[i].np, runs[i].extra);
        snprintf(m, sizeof m, TD "/pps%zu.jsonl", i);
        snprintf(dir, sizeof dir, TD "/ppsc%zu", i);
        snprintf(ref, sizeof ref, TD "/pps%d.jsonl", first[runs[i].lora]);
        snprintf(refck, sizeof refck, TD "/ppsc%d/step-00000010.h5", first[runs[i].lora]);
        snprintf(ck, sizeof ck, "%s/step-00000010.h5", dir);
        char rm[320];
        snprintf(rm, sizeof rm, "rm -rf %s %s", dir, m);
        system(rm);
        const char *a = SFT_ARGS "%s %s%s--val " TD "/chat.jsonl --val-batches 3 --val-every 5 --ckpt-dir %s "
                                 "--metrics %s --out %s.h5 --adapter-out %s.ad";
        int rc = runs[i].np == 1 ? test_llamac(a, tokp, lora, runs[i].extra, dir, m, dir, dir)
                                 : test_mpi_llamac(runs[i].np, a, tokp, lora, runs[i].extra, dir, m, dir, dir);
        EXPECT(rc == 0, "%s: exit %d: %s", tag, rc, test_err);
        if (rc) continue;
        const char *v = strstr(test_out, "step 10 | val loss ");
        EXPECT(v != NULL, "%s: no validation line: %s", tag, test_out);
        if (!v) continue;
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)strcspn(v, "\n"), v);
        if (runs[i].np == 1) {
            snprintf(ref_val[runs[i].lora], sizeof ref_val[0], "%s", line);
            continue;
        }
        EXPECT(strcmp(line, ref_val[runs[i].lora]) == 0, "%s: '%s', one process '%s'", tag, line,
               ref_val[runs[i].lora]);
        same_losses(ref, m, tag);
        double d = weight_diff(refck, ck); /* a LoRA checkpoint loads as its merged model */
        EXPECT(d <= 1e-5, "%s: weights differ by %g from one process", tag, d);
    }
}

/* Checkpoints of a pipelined run (DP x PP with ZeRO-1) resume on one
 * process, on 4 stages, on 2 stages with the other schedule and on plain
 * data parallelism; one process's resumes on DP x PP: one process's losses
 * from step 5 on and its weights at the end. */
void dist_pp_resume(void) {
    if (!test_have_mpi()) return;
    pp_ref(0);
    system("rm -rf " TD "/prs");
    int rc = test_mpi_llamac(4, PP_ARGS "--set tied=0 --pp 2 --zero 1 --save-every 5 --ckpt-dir " TD "/prs --out " TD "/prs.h5");
    EXPECT(rc == 0 && access(TD "/prs/step-00000005.h5", F_OK) == 0, "saving on 2 x 2: %s", test_err);
    if (rc) return;
    static const struct { int np; const char *from, *extra; } runs[] = {
        {1, "prs", ""}, {4, "prs", "--pp 4 "}, {2, "prs", "--pp 2 --pp-schedule gpipe "}, {2, "prs", ""},
        {4, "pr0", "--pp 2 "},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char tag[96], dir[128], m[128], out[128], cmd[1024];
        snprintf(tag, sizeof tag, "saved by %s, resumed on %d %s", strcmp(runs[i].from, "prs") ? "one process" : "2 x 2",
                 runs[i].np, runs[i].extra);
        snprintf(dir, sizeof dir, TD "/prr%zu", i);
        snprintf(m, sizeof m, TD "/prr%zu.jsonl", i);
        snprintf(out, sizeof out, TD "/prr%zu.h5", i);
        snprintf(cmd, sizeof cmd, "rm -rf %s %s; mkdir -p %s && cp " TD "/%s/step-00000005.h5 %s/", dir, m, dir,
                 runs[i].from, dir);
        EXPECT(system(cmd) == 0, "%s: copy", tag);
        const char *a = PP_ARGS "--set tied=0 %s--ckpt-dir %s --metrics %s --out %s --resume auto";
        rc = runs[i].np == 1 ? test_llamac(a, runs[i].extra, dir, m, out)
                             : test_mpi_llamac(runs[i].np, a, runs[i].extra, dir, m, out);
        EXPECT(rc == 0 && strstr(test_out, "at step 5"), "%s: %s %s", tag, test_err, test_out);
        if (rc) continue;
        same_losses_from(TD "/pr0.jsonl", m, 5, tag);
        double d = weight_diff(TD "/pr0.h5", out);
        EXPECT(d <= 1e-5, "%s: weights differ by %g from one process", tag, d);
    }
}

/* mpirun -np np <llamac> args in the background, output to log; its pid. */
static pid_t mpi_start(int np, const char *args, const char *log) {
    pid_t pid = fork();
    LC_ASSERT(pid >= 0);
    if (pid == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "exec " MPIRUN "%d %s %s >%s 2>&1", np, test_llamac_path, args, log);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Seconds until pid exits (at most limit; then it is killed). */
static double mpi_wait_exit(pid_t pid, double limit, int *st) {
    double t0 = time_now();
    while (waitpid(pid, st, WNOHANG) == 0 && time_now() - t0 < limit) usleep(20000);
    double dt = time_now() - t0;
    if (dt >= limit) {
        kill(pid, SIGKILL);
        waitpid(pid, st, 0);
    }
    return dt;
}

/* A stage killed mid-run: every rank gone within 30 s, the lost rank
 * named. A stage that hangs (SIGSTOP): the others give up after
 * --pp-timeout with a line naming it and stop the job. */
void dist_pp_faults(void) {
    if (!test_have_mpi()) return;
    need_shard();
    for (int hang = 0; hang <= 1; hang++) {
        char dir[64], log[64], args[2048];
        snprintf(dir, sizeof dir, TD "/pf%d", hang);
        snprintf(log, sizeof log, TD "/pf%d.log", hang);
        snprintf(args, sizeof args, KILL_ARGS "--pp 2 --pp-timeout 4 --ckpt-dir %s --out %s.h5", dir, dir);
        char rm[160];
        snprintf(rm, sizeof rm, "rm -rf %s", dir);
        system(rm);
        pid_t pid = mpi_start(2, args, log);
        char ck[128];
        snprintf(ck, sizeof ck, "%s/step-00000005.h5", dir);
        EXPECT(ckpt_test_wait_for(ck, pid) == 0, "no step-5 checkpoint appeared");
        pid_t victim = rank_pid(pid, 1);
        EXPECT(victim > 0, "rank 1 of mpirun %d not found", (int)pid);
        if (victim > 0) kill(victim, hang ? SIGSTOP : SIGKILL);
        int st = 0;
        double dt = mpi_wait_exit(pid, 30, &st);
        if (victim > 0 && hang) kill(victim, SIGKILL); /* if mpirun left it stopped */
        EXPECT(dt < 30, "%s: mpirun still running %.0f s later", hang ? "a stopped stage" : "a killed stage", dt);
        EXPECT(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "mpirun exited 0 after a stage was lost");
        char text[TEST_ERR_MAX];
        slurp_into(log, text, sizeof text);
        if (hang)
            EXPECT(strstr(text, "llamac: error: rank 0 of 2: ") && strstr(text, "nothing from rank 1 for 4 s (it died "
                                                                               "or hangs); stopping every rank"),
                   "no line naming the hung stage: %s", text);
        else
            EXPECT(strstr(text, "rank 1") && strstr(text, "signal 9"), "no line naming the lost stage: %s", text);
        snprintf(ck, sizeof ck, "%s/step-00000060.h5", dir);
        EXPECT(access(ck, F_OK) != 0, "the run finished before the fault: make it longer");
    }
}

/* Bad input: one line, a non-zero exit, nothing written. */
void dist_pp_errors(void) {
    if (!test_have_mpi()) return;
    need_sft_inputs();
    static const struct { int np; const char *args, *msg; } bad[] = {
        {2, "--pp 3", "llamac: error: rank 0 of 2: --pp: 3 stages do not divide the 2 ranks"},
        {4, "--pp 4", "llamac: error: rank 0 of 4: --pp: 4 stages for a model of 2 layers (each stage needs a layer)"},
        {2, "--pp 2 --pp-layers 1,2", "llamac: error: rank 0 of 2: --pp-layers: '1,2' adds up to 3 layers, the model has 2"},
        {2, "--pp 2 --pp-schedule zigzag", "llamac: error: rank 0 of 2: --pp-schedule: expected gpipe or 1f1b, got 'zigzag'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        system("rm -rf " TD "/pe " TD "/pe.h5");
        int rc = test_mpi_llamac(bad[i].np, PRE_ARGS "%s --ckpt-dir " TD "/pe --out " TD "/pe.h5", bad[i].args);
        EXPECT(rc != 0 && strstr(test_err, bad[i].msg), "%s: %d %s", bad[i].args, rc, test_err);
        EXPECT(access(TD "/pe.h5", F_OK) != 0, "%s: an output was written", bad[i].args);
    }
    /* one micro-batch per replica on 2 stages with 1F1B: a warning with the bubble */
    int rc = test_mpi_llamac(2, PRE_ARGS "--steps 1 --batch-tokens 64 --pp 2 --ckpt-dir " TD "/pw --out " TD "/pw.h5");
    EXPECT(rc == 0 && strstr(test_err, "warning: --pp-schedule 1f1b with 1 micro-batches per replica for 2 stages: "
                                       "the pipeline never fills; each stage idles 50% of the step"),
           "few micro-batches: %d %s", rc, test_err);
    rc = test_llamac(PRE_ARGS "--pp 2 --ckpt-dir " TD "/pe --out " TD "/pe.h5");
    EXPECT(rc != 0 && strstr(test_err, "--pp: 2 stages"), "one process: %d %s", rc, test_err);
}

/* dpo on stages (DP x PP 2 x 2): LoRA and full, the reference per step
 * and cached; losses and the validation line of one process. */
void dist_pp_dpo(void) {
    if (!test_have_mpi()) return;
    need_sft_inputs();
    static const char *const kinds[] = {"--lora-r 4 ", "--lora-r 4 --ref-cache " TD "/pdrc.bin ", "",
                                        "--ref-cache " TD "/pdrc.bin "};
    for (int i = 0; i < 4; i++) {
        char ref_line[256] = "";
        for (int pp = 0; pp <= 1; pp++) {
            char m[64], dir[64], tag[128];
            snprintf(m, sizeof m, TD "/pd%d_%d.jsonl", i, pp);
            snprintf(dir, sizeof dir, TD "/pdc%d_%d", i, pp);
            snprintf(tag, sizeof tag, "dpo %son 2 x 2", kinds[i]);
            system("rm -rf " TD "/pdrc.bin " TD "/pdc*");
            const char *a = DPO_ARGS "%s %s--val " TD "/pairs.jsonl --val-batches 2 --val-every 5 %s--ckpt-dir %s "
                                     "--metrics %s --out %s.h5 --adapter-out %s.ad";
            int rc = pp ? test_mpi_llamac(4, a, tokp, kinds[i], "--pp 2 ", dir, m, dir, dir)
                        : test_llamac(a, tokp, kinds[i], "", dir, m, dir, dir);
            EXPECT(rc == 0, "%s (pp %d): exit %d: %s", tag, pp, rc, test_err);
            if (rc) break;
            const char *v = strstr(test_out, "step 10 | val loss ");
            EXPECT(v != NULL, "%s: no validation line", tag);
            if (!v) break;
            char line[256];
            snprintf(line, sizeof line, "%.*s", (int)strcspn(v, "\n"), v);
            if (!pp) {
                snprintf(ref_line, sizeof ref_line, "%s", line);
                continue;
            }
            EXPECT(strcmp(line, ref_line) == 0, "%s: '%s', one process '%s'", tag, line, ref_line);
            char ref[64];
            snprintf(ref, sizeof ref, TD "/pd%d_0.jsonl", i);
            same_losses(ref, m, tag);
        }
    }
}

/* The key of the last line of a metrics file that has it (NAN: none). */
static double val_metric(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    char line[4096], k[96];
    snprintf(k, sizeof k, "\"%s\":", key);
    double v = NAN;
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, k);
        if (p) v = strtod(p + strlen(k), NULL);
    }
    if (f) fclose(f);
    return v;
}

/* reward models over 2 ranks (LoRA with the whole head; full with ZeRO-1)
 * and on 2 x 2 stages: one process's losses and validation line. */
#define RM_DIST_ARGS "reward --model " TD "/base.h5 --data " TD "/pairs.jsonl --template llama3 --batch 2 --seq 64 " \
                     "--batch-tokens 512 --steps 10 --lr 5e-4 --warmup 2 --seed 4 --peak-gflops 1 --val " TD       \
                     "/pairs.jsonl --val-batches 2 --val-every 3 --tokenizer "

void dist_reward_equiv(void) {
    if (!test_have_mpi()) return;
    need_sft_inputs();
    static const struct { int np; const char *flags; } runs[] = {
        {1, "--lora-r 4 "}, {2, "--lora-r 4 "}, {4, "--lora-r 4 --pp 2 "}, {1, ""}, {2, "--zero 1 "}, {4, "--pp 2 "}};
    static const char *const keys[] = {"val_loss", "eval_accuracy", "eval_margin", "eval_min_reward", "eval_max_reward"};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char m[64], dir[64], rm[160];
        snprintf(m, sizeof m, TD "/rw%zu.jsonl", i);
        snprintf(dir, sizeof dir, TD "/rwc%zu", i);
        snprintf(rm, sizeof rm, "rm -rf %s %s", dir, m);
        system(rm);
        const char *a = RM_DIST_ARGS "%s %s--ckpt-dir %s --metrics %s --out %s.h5 --adapter-out %s.ad";
        int rc = runs[i].np == 1 ? test_llamac(a, tokp, runs[i].flags, dir, m, dir, dir)
                                 : test_mpi_llamac(runs[i].np, a, tokp, runs[i].flags, dir, m, dir, dir);
        EXPECT(rc == 0, "reward %s(np %d): exit %d: %s", runs[i].flags, runs[i].np, rc, test_err);
        if (rc || runs[i].np == 1) continue;
        char ref[64];
        snprintf(ref, sizeof ref, TD "/rw%zu.jsonl", i < 3 ? (size_t)0 : (size_t)3);
        same_losses(ref, m, runs[i].flags);
        for (int k = 0; k < 5; k++) { /* the last validation: the ranks' sums in another order */
            double x = val_metric(ref, keys[k]), y = val_metric(m, keys[k]);
            EXPECT(fabs(x - y) <= 1e-5 * (1 + fabs(x)), "reward %s: %s %.9g, one process %.9g", runs[i].flags, keys[k],
                   y, x);
        }
    }
}
