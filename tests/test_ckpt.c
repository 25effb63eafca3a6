/*
 * test_ckpt.c: HDF5 checkpoints. In-process: a save/load round trip of every
 * buffer, and each bad file (missing, empty, foreign, truncated, corrupted
 * data, another model's config, a missing tensor, an interrupted save).
 * Through the binary: a run of 2N steps against N steps + SIGKILL at a random
 * moment + --resume auto, a SIGTERM stop and resume, and a SIGKILL in the
 * middle of writing a checkpoint; weights and AdamW moments must be
 * bit-identical and the losses equal to the last printed digit.
 */
#include <hdf5.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/shard.h"
#include "../model/llama.h"
#include "../train/io/ckpt.h"
#include "../train/io/source.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tc"

static void setup_dir(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
}

static int copy_file(const char *from, const char *to, long max_bytes) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) {
        if (a) fclose(a);
        if (b) fclose(b);
        return -1;
    }
    char buf[1 << 16];
    long total = 0;
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, a)) > 0) {
        if (max_bytes >= 0 && total + (long)k > max_bytes) k = (size_t)(max_bytes - total);
        fwrite(buf, 1, k, b);
        total += (long)k;
        if (max_bytes >= 0 && total >= max_bytes) break;
    }
    fclose(a);
    fclose(b);
    return 0;
}

static long file_size(const char *p) {
    struct stat sb;
    return stat(p, &sb) ? -1 : (long)sb.st_size;
}

typedef struct {
    LlamaConfig c;
    ParamTable t;
    float *params;
    AdamW opt;
} Bundle;

/* A tiny model with random weights and moments. */
static void bundle_init(Bundle *b, uint64_t seed) {
    Err e = {{0}};
    LC_ASSERT(config_preset("tiny", &b->c, &e) == 0);
    LC_ASSERT(params_build(&b->c, &b->t, &e) == 0);
    b->params = xcalloc(b->t.size, sizeof(float));
    params_init(&b->t, b->params, b->c.n_layers, seed);
    AdamWConfig ac = ADAMW_DEFAULTS;
    LC_ASSERT(adamw_init(&b->opt, &ac, &b->t, &ops_cpu, NULL, &e) == 0);
    Rng r;
    rng_seed(&r, seed + 1);
    for (int i = 0; i < b->t.n; i++)
        for (size_t j = 0; j < b->t.p[i].numel; j++) {
            b->opt.m[b->t.p[i].offset + j] = rng_normal(&r);
            b->opt.v[b->t.p[i].offset + j] = rng_uniform(&r);
        }
    b->opt.t = 17;
}

static void bundle_free(Bundle *b) {
    adamw_free(&b->opt);
    free(b->params);
    params_free(&b->t);
}

static void save_bundle(const char *path, Bundle *b) {
    uint64_t cursor[2] = {3, 1234};
    CkptState st = {42, 42 * 256, 7, 3e-4, 1, cursor, {1, 2, 3, 4}, "lr = 0.0003\nsteps = 100\n", 0x5eed0fda7aULL, 0x0de1ULL, 2, NULL, 0};
    Err e = {{0}};
    EXPECT(ckpt_save(path, &b->c, &b->t, b->params, 0xabcdef, &b->opt, &st, &e) == 0, "save: %s", e.msg);
}

void ckpt_roundtrip(void) {
    setup_dir();
    Bundle a, b;
    bundle_init(&a, 1);
    bundle_init(&b, 2);
    save_bundle(DIR "/rt.h5", &a);
    EXPECT(access(DIR "/rt.h5.tmp", F_OK) != 0, "the temporary file is gone after a save");
    Err e = {{0}};
    CkptInfo info;
    EXPECT(ckpt_info(DIR "/rt.h5", &info, &e) == 0, "info: %s", e.msg);
    char diff[128];
    EXPECT(ckpt_config_diff(&info.c, &a.c, diff, sizeof diff) == 0, "config differs: %s", diff);
    EXPECT(info.tokenizer_id == 0xabcdef && info.has_optim && info.has_state && info.step == 42,
           "info: tok %llx optim %d state %d step %ld", (unsigned long long)info.tokenizer_id, info.has_optim,
           info.has_state, info.step);
    CkptState st;
    EXPECT(ckpt_load(DIR "/rt.h5", &b.c, &b.t, b.params, &b.opt, &st, &e) == 0, "load: %s", e.msg);
    EXPECT(memcmp(a.params, b.params, a.t.size * sizeof(float)) == 0, "parameters differ after load");
    EXPECT(memcmp(a.opt.m, b.opt.m, a.t.size * sizeof(float)) == 0, "m differs after load");
    EXPECT(memcmp(a.opt.v, b.opt.v, a.t.size * sizeof(float)) == 0, "v differs after load");
    EXPECT(b.opt.t == 17, "adamw t %ld", b.opt.t);
    if (st.cursor) {
        EXPECT(st.step == 42 && st.tokens == 42 * 256 && st.seed == 7 && st.lr == 3e-4 && st.world == 1,
               "state scalars");
        EXPECT(st.cursor[0] == 3 && st.cursor[1] == 1234, "cursor %llu %llu", (unsigned long long)st.cursor[0],
               (unsigned long long)st.cursor[1]);
        EXPECT(st.rng[0] == 1 && st.rng[3] == 4, "rng");
        EXPECT(st.data_id == 0x5eed0fda7aULL && st.model_id == 0x0de1ULL, "data_id %llx", (unsigned long long)st.data_id);
        EXPECT(strcmp(st.run_config, "lr = 0.0003\nsteps = 100\n") == 0, "run config '%s'", st.run_config);
        ckpt_state_free(&st);
    }
    /* weights only */
    EXPECT(ckpt_save(DIR "/w.h5", &a.c, &a.t, a.params, 5, NULL, NULL, &e) == 0, "save weights: %s", e.msg);
    EXPECT(ckpt_info(DIR "/w.h5", &info, &e) == 0 && !info.has_optim && !info.has_state, "weights-only info");
    EXPECT(ckpt_load(DIR "/w.h5", &b.c, &b.t, b.params, &b.opt, NULL, &e) != 0 &&
               strstr(e.msg, "no optimizer state"), "loading moments from a weights-only file: '%s'", e.msg);
    /* the hash does not depend on the thread count and sees one flipped bit */
    size_t n = 3u << 20;
    unsigned char *buf = xmalloc(n);
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 7 + (i >> 11));
    uint64_t h = ckpt_hash(buf, n);
    buf[n / 2] ^= 1;
    EXPECT(ckpt_hash(buf, n) != h, "hash misses a flipped bit");
    free(buf);
    bundle_free(&a);
    bundle_free(&b);
}

/* Byte offset of the data of dataset `name` in an HDF5 file. */
static long dset_offset(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    long off = d < 0 ? -1 : (long)H5Dget_offset(d);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    return off;
}

static void expect_load_error(const char *path, Bundle *b, const char *want) {
    Err e = {{0}};
    int rc = ckpt_load(path, &b->c, &b->t, b->params, &b->opt, NULL, &e);
    EXPECT(rc != 0, "%s: loaded, expected '%s'", path, want);
    EXPECT(strstr(e.msg, want) != NULL, "%s: error '%s' lacks '%s'", path, e.msg, want);
    EXPECT(strstr(e.msg, path) == e.msg, "%s: error '%s' does not start with the file name", path, e.msg);
    EXPECT(strchr(e.msg, '\n') == NULL, "error is not one line: '%s'", e.msg);
}

void ckpt_bad_files(void) {
    setup_dir();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    Bundle a;
    bundle_init(&a, 3);
    save_bundle(DIR "/good.h5", &a);
    long size = file_size(DIR "/good.h5");

    expect_load_error(DIR "/missing.h5", &a, "cannot open");
    FILE *f = fopen(DIR "/empty.h5", "wb");
    fclose(f);
    expect_load_error(DIR "/empty.h5", &a, "not an HDF5 file");
    f = fopen(DIR "/text.h5", "w");
    fputs("{\"not\": \"hdf5\"}\n", f);
    fclose(f);
    expect_load_error(DIR "/text.h5", &a, "not an HDF5 file");
    copy_file(DIR "/good.h5", DIR "/trunc.h5", size / 2);
    expect_load_error(DIR "/trunc.h5", &a, "damaged or truncated");
    copy_file(DIR "/good.h5", DIR "/trunc2.h5", size - 100);
    expect_load_error(DIR "/trunc2.h5", &a, "truncated");

    /* a flipped bit in the data of one tensor */
    const char *victim = "/model/model.layers.1.mlp.up_proj.weight";
    long off = dset_offset(DIR "/good.h5", victim);
    EXPECT(off > 0, "offset of %s", victim);
    copy_file(DIR "/good.h5", DIR "/flip.h5", -1);
    f = fopen(DIR "/flip.h5", "r+b");
    fseek(f, off + 40, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, off + 40, SEEK_SET);
    fputc(ch ^ 0x10, f);
    fclose(f);
    expect_load_error(DIR "/flip.h5", &a, "model.layers.1.mlp.up_proj.weight is corrupted (checksum mismatch)");

    /* another HDF5 file */
    hid_t h = H5Fcreate(DIR "/other.h5", H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(h);
    expect_load_error(DIR "/other.h5", &a, "not a llamac checkpoint");

    /* a missing tensor, and an interrupted save (no completion mark) */
    copy_file(DIR "/good.h5", DIR "/hole.h5", -1);
    h = H5Fopen(DIR "/hole.h5", H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(h, "/model/model.layers.0.self_attn.k_proj.weight", H5P_DEFAULT);
    H5Fclose(h);
    /* an edit of HDF5's structure is damage to the content table's hash,
     * refused before libhdf5 reads it ... */
    expect_load_error(DIR "/hole.h5", &a, "damaged checkpoint (its HDF5 structure does not match the hash");
    /* ... and, with the table rewritten, the checks inside still hold */
    ckpt_restamp(DIR "/hole.h5");
    expect_load_error(DIR "/hole.h5", &a, "missing tensor model.layers.0.self_attn.k_proj.weight");
    copy_file(DIR "/good.h5", DIR "/partial.h5", -1);
    h = H5Fopen(DIR "/partial.h5", H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(h, "complete");
    H5Fclose(h);
    ckpt_restamp(DIR "/partial.h5");
    expect_load_error(DIR "/partial.h5", &a, "incomplete checkpoint");
    /* a save cut before its content table was written */
    copy_file(DIR "/good.h5", DIR "/nostamp.h5", -1);
    f = fopen(DIR "/nostamp.h5", "r+b");
    static const char zeros[64];
    fwrite(zeros, 1, sizeof zeros, f);
    fclose(f);
    expect_load_error(DIR "/nostamp.h5", &a, "incomplete checkpoint (the save was interrupted: no content table)");
    /* a flipped byte in HDF5's structure (the superblock) */
    copy_file(DIR "/good.h5", DIR "/meta.h5", -1);
    f = fopen(DIR "/meta.h5", "r+b");
    fseek(f, CKPT_UB + 20, SEEK_SET);
    ch = fgetc(f);
    fseek(f, CKPT_UB + 20, SEEK_SET);
    fputc(ch ^ 0x01, f);
    fclose(f);
    expect_load_error(DIR "/meta.h5", &a, "damaged checkpoint (its HDF5 structure does not match the hash");

    /* another model's config */
    Bundle w;
    bundle_init(&w, 3);
    params_free(&w.t);
    w.c.hidden += 8;
    Err e = {{0}};
    LC_ASSERT(params_build(&w.c, &w.t, &e) == 0);
    free(w.params);
    w.params = xcalloc(w.t.size, sizeof(float));
    expect_load_error(DIR "/good.h5", &w, "does not match the requested model (hidden");
    /* nothing above touched the good file */
    EXPECT(file_size(DIR "/good.h5") == size, "good file changed");
    e.msg[0] = 0;
    EXPECT(ckpt_load(DIR "/good.h5", &a.c, &a.t, a.params, &a.opt, NULL, &e) == 0, "good file: %s", e.msg);
    /* a save that cannot be written leaves the old file */
    EXPECT(ckpt_save(DIR "/nodir/x.h5", &a.c, &a.t, a.params, 0, NULL, NULL, &e) != 0 &&
               strstr(e.msg, "cannot create"), "save into a missing directory: '%s'", e.msg);
    bundle_free(&w);
    bundle_free(&a);
}

// ----------------------------------------------------------------------------
// through the binary


/* Start `llamac <args>` in the background; returns its pid. */
void ckpt_test_bases(const char *dir, const char *base_h5, char bases[3][256]) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s/rb*", dir);
    system(cmd);
    snprintf(bases[0], 256, "%s", base_h5);
    snprintf(bases[1], 256, "%s/rb_hf", dir);
    snprintf(bases[2], 256, "%s/rb_base.gguf", dir);
    for (int k = 1; k < 3; k++)
        EXPECT(test_llamac("convert %s %s", base_h5, bases[k]) == 0, "%s: %s", bases[k], test_err);
}

int test_source_load(const char *path, const ParamTable *t, float *params, Err *e) {
    ModelSource ms;
    return source_open(&ms, path, e) || source_load(&ms, t, params, e) ? -1 : 0;
}

pid_t ckpt_test_spawn(const char *args, const char *outfile) {
    pid_t pid = fork();
    LC_ASSERT(pid >= 0);
    if (pid == 0) {
        char cmd[8704];
        snprintf(cmd, sizeof cmd, "exec %s %s >%s 2>&1", test_llamac_path, args, outfile);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Wait until path exists (up to 60 s); returns 0 if it does. */
int ckpt_test_wait_for(const char *path, pid_t pid) {
    for (int i = 0; i < 6000; i++) {
        if (access(path, F_OK) == 0) return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return access(path, F_OK) == 0 ? 0 : -1;
        usleep(10000);
    }
    return -1;
}

static void need_shards(void) {
    static int done;
    if (done) return;
    setup_dir();
    Rng r;
    rng_seed(&r, 5);
    int n = 20000, V = 64;
    int32_t *tok = xmalloc((size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++) tok[i] = (i % 97 == 96) ? 0 : 1 + (int32_t)(rng_u64(&r) % (V - 1));
    Err e = {{0}};
    EXPECT(shard_write(DIR "/train.bin", tok, (uint64_t)n, V, 0, 77, (uint32_t)(n / 97), &e) == 0, "shard: %s", e.msg);
    free(tok);
    done = 1;
}

#define STEPS 24
/* about 70 ms a step here, so a kill lands mid-run */
#define RUN_ARGS "pretrain --train " DIR "/train.bin --preset tiny --set dim=128 --set hidden=384 " \
                 "--set n_layers=4 --batch 8 --seq 128 --steps 24 --lr 3e-3 --warmup 4 --seed 3 " \
                 "--peak-gflops 1 --save-every 4 --keep 2 "

/* Weights and moments of two checkpoints are the same bits. */
void ckpt_test_same(const char *pa, const char *pb) {
    Bundle a, b;
    bundle_init(&a, 10);
    bundle_init(&b, 11);
    Err e = {{0}};
    CkptInfo ia;
    if (ckpt_info(pa, &ia, &e)) {
        EXPECT(0, "%s", e.msg);
        goto out;
    }
    a.c = b.c = ia.c;
    if (ia.has_lora) { /* a LoRA run: the adapters and their moments */
        ParamTable lt;
        LC_ASSERT(lora_build(&ia.lora, &ia.c, &lt, &e) == 0);
        float *ba = xcalloc(a.t.size, sizeof(float)), *bb = xcalloc(a.t.size, sizeof(float));
        float *la = xcalloc(lt.size, sizeof(float)), *lb = xcalloc(lt.size, sizeof(float));
        AdamW oa, ob;
        AdamWConfig ac = ADAMW_DEFAULTS;
        ParamTable bt;
        LC_ASSERT(params_build(&ia.c, &bt, &e) == 0);
        free(ba), free(bb);
        ba = xcalloc(bt.size, sizeof(float)), bb = xcalloc(bt.size, sizeof(float));
        LC_ASSERT(adamw_init(&oa, &ac, &lt, &ops_cpu, NULL, &e) == 0 && adamw_init(&ob, &ac, &lt, &ops_cpu, NULL, &e) == 0);
        CkptLora ca = {ia.lora, &lt, la, NULL, NULL, 0}, cb = {ia.lora, &lt, lb, NULL, NULL, 0};
        EXPECT(source_load_lora(pa, &ia.c, &bt, ba, &ca, &oa, NULL, &e) == 0, "%s", e.msg);
        EXPECT(source_load_lora(pb, &ia.c, &bt, bb, &cb, &ob, NULL, &e) == 0, "%s", e.msg);
        EXPECT(memcmp(ba, bb, bt.size * sizeof(float)) == 0, "%s and %s: base weights differ", pa, pb);
        EXPECT(memcmp(la, lb, lt.size * sizeof(float)) == 0, "%s and %s: adapters differ", pa, pb);
        EXPECT(memcmp(oa.m, ob.m, lt.size * sizeof(float)) == 0, "%s and %s: AdamW m differs", pa, pb);
        EXPECT(memcmp(oa.v, ob.v, lt.size * sizeof(float)) == 0, "%s and %s: AdamW v differs", pa, pb);
        EXPECT(oa.t == ob.t && oa.t > 0, "adamw t %ld vs %ld", oa.t, ob.t);
        adamw_free(&oa), adamw_free(&ob);
        free(ba), free(bb), free(la), free(lb);
        params_free(&lt), params_free(&bt);
        goto out;
    }
    params_free(&a.t);
    params_free(&b.t);
    free(a.params);
    free(b.params);
    adamw_free(&a.opt);
    adamw_free(&b.opt);
    AdamWConfig ac = ADAMW_DEFAULTS;
    LC_ASSERT(params_build(&a.c, &a.t, &e) == 0 && params_build(&b.c, &b.t, &e) == 0);
    a.params = xcalloc(a.t.size, sizeof(float));
    b.params = xcalloc(b.t.size, sizeof(float));
    LC_ASSERT(adamw_init(&a.opt, &ac, &a.t, &ops_cpu, NULL, &e) == 0 && adamw_init(&b.opt, &ac, &b.t, &ops_cpu, NULL, &e) == 0);
    EXPECT(ckpt_load(pa, &a.c, &a.t, a.params, &a.opt, NULL, &e) == 0, "%s", e.msg);
    EXPECT(ckpt_load(pb, &b.c, &b.t, b.params, &b.opt, NULL, &e) == 0, "%s", e.msg);
    EXPECT(memcmp(a.params, b.params, a.t.size * sizeof(float)) == 0, "%s and %s: weights differ", pa, pb);
    EXPECT(memcmp(a.opt.m, b.opt.m, a.t.size * sizeof(float)) == 0, "%s and %s: AdamW m differs", pa, pb);
    EXPECT(memcmp(a.opt.v, b.opt.v, a.t.size * sizeof(float)) == 0, "%s and %s: AdamW v differs", pa, pb);
    EXPECT(a.opt.t == b.opt.t, "adamw t %ld vs %ld", a.opt.t, b.opt.t);
out:
    bundle_free(&a);
    bundle_free(&b);
}

/* Loss of each step from a metrics file; the last line of a step wins (a
 * resumed run repeats the steps after its checkpoint). */
#define MAX_STEPS 64
static void read_losses(const char *path, char losses[][40], int steps) {
    for (int i = 0; i <= steps; i++) losses[i][0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        int step;
        char loss[40];
        if (sscanf(line, "{\"step\":%d,\"loss\":%39[^,]", &step, loss) == 2 && step >= 1 && step <= steps)
            snprintf(losses[step], 40, "%s", loss);
    }
    fclose(f);
}

void ckpt_test_same_losses(const char *ma, const char *mb, int steps) {
    LC_ASSERT(steps <= MAX_STEPS);
    char la[MAX_STEPS + 1][40], lb[MAX_STEPS + 1][40];
    read_losses(ma, la, steps);
    read_losses(mb, lb, steps);
    for (int s = 1; s <= steps; s++)
        EXPECT(la[s][0] && strcmp(la[s], lb[s]) == 0, "step %d: loss '%s' straight, '%s' resumed", s, la[s], lb[s]);
}

void ckpt_test_kill_resume(const char *straight_args, const char *resumed_args, const char *kill_after_ckpt,
                           const char *final_a, const char *final_b, const char *metrics_a, const char *metrics_b,
                           int steps, unsigned max_delay_us) {
    if (straight_args) {
        int rc = test_llamac("%s", straight_args);
        EXPECT(rc == 0, "straight run (%s): %s", straight_args, test_err);
    }
    char log[1024];
    const char *slash = strrchr(kill_after_ckpt, '/');
    snprintf(log, sizeof log, "%.*s.log", slash ? (int)(slash - kill_after_ckpt) : 0, kill_after_ckpt);
    pid_t pid = ckpt_test_spawn(resumed_args, log);
    EXPECT(ckpt_test_wait_for(kill_after_ckpt, pid) == 0, "no %s appeared", kill_after_ckpt);
    if (max_delay_us) { /* kill at a random moment after that checkpoint */
        Rng r;
        rng_seed(&r, (uint64_t)time_now() * 1000);
        usleep((useconds_t)(rng_u64(&r) % max_delay_us));
    }
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    EXPECT(access(final_b, F_OK) != 0, "%s: the run finished before the kill: make it longer", final_b);
    int rc = test_llamac("%s --resume auto", resumed_args);
    EXPECT(rc == 0, "resume to %s: %s", final_b, test_err);
    ckpt_test_same(final_a, final_b);
    ckpt_test_same_losses(metrics_a, metrics_b, steps);
}

static void straight_run(void) {
    static int done;
    if (done) return;
    need_shards();
    system("rm -rf " DIR "/A " DIR "/A.jsonl");
    int rc = test_llamac(RUN_ARGS "--ckpt-dir " DIR "/A --metrics " DIR "/A.jsonl --out " DIR "/A.h5");
    EXPECT(rc == 0, "straight run: %s", test_err);
    done = 1;
}

void ckpt_resume_sigkill(void) {
    straight_run();
    system("rm -rf " DIR "/B " DIR "/B.jsonl " DIR "/B.log");
    /* killed at a random moment (up to half a second) after the step-8 checkpoint */
    ckpt_test_kill_resume(NULL, RUN_ARGS "--ckpt-dir " DIR "/B --metrics " DIR "/B.jsonl --out " DIR "/B.h5",
                          DIR "/B/step-00000008.h5", DIR "/A/step-00000024.h5", DIR "/B/step-00000024.h5",
                          DIR "/A.jsonl", DIR "/B.jsonl", STEPS, 500000);
    /* --keep 2 */
    EXPECT(access(DIR "/B/step-00000020.h5", F_OK) == 0 && access(DIR "/B/step-00000016.h5", F_OK) != 0,
           "--keep 2 did not keep exactly the last two");
}

void ckpt_resume_sigterm(void) {
    straight_run();
    system("rm -rf " DIR "/C " DIR "/C.jsonl " DIR "/C.log");
    /* SIGTERM: the step ends, a checkpoint is written, exit 1 with a message */
    pid_t pid = ckpt_test_spawn(RUN_ARGS "--ckpt-dir " DIR "/C --metrics " DIR "/C.jsonl --out " DIR "/C.h5 --save-every 0",
                      DIR "/C.log");
    for (int i = 0; i < 3000; i++) { /* until step 5 is logged */
        FILE *m = fopen(DIR "/C.jsonl", "r");
        char buf[8192];
        size_t k = m ? fread(buf, 1, sizeof buf - 1, m) : 0;
        buf[k] = 0;
        if (m) fclose(m);
        if (strstr(buf, "{\"step\":5,")) break;
        usleep(10000);
    }
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 1, "SIGTERM: exit status %d", st);
    FILE *f = fopen(DIR "/C.log", "r");
    char log[1 << 14];
    size_t k = f ? fread(log, 1, sizeof log - 1, f) : 0;
    log[k] = 0;
    if (f) fclose(f);
    EXPECT(strstr(log, "stopped by SIGTERM after step"), "no stop message in: %s", log);
    EXPECT(strstr(log, "checkpoint: " DIR "/C/step-"), "no checkpoint written on SIGTERM: %s", log);
    int rc = test_llamac(RUN_ARGS "--ckpt-dir " DIR "/C --metrics " DIR "/C.jsonl --out " DIR "/C.h5 --resume auto --save-every 0");
    EXPECT(rc == 0, "resume: %s", test_err);
    ckpt_test_same(DIR "/A/step-00000024.h5", DIR "/C/step-00000024.h5");
    ckpt_test_same_losses(DIR "/A.jsonl", DIR "/C.jsonl", STEPS);
}

void ckpt_kill_during_save(void) {
    straight_run();
    system("rm -rf " DIR "/D " DIR "/D.jsonl " DIR "/D.log");
    /* The run dies half-way through writing its third checkpoint (step 12):
     * each holds 3 x 39 tensors (weights, m, v) for this 4-layer model. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LLAMAC_CKPT_KILL_AFTER=%d %s " RUN_ARGS "--ckpt-dir " DIR "/D --metrics " DIR
             "/D.jsonl --out " DIR "/D.h5 >" DIR "/D.log 2>&1", 2 * 117 + 60, test_llamac_path);
    int st = system(cmd);
    long size8 = file_size(DIR "/D/step-00000008.h5");
    EXPECT(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL) || WEXITSTATUS(st) == 137,
           "the save was not killed (status %d)", st);
    EXPECT(access(DIR "/D/step-00000012.h5", F_OK) != 0, "a half-written checkpoint exists under its real name");
    EXPECT(access(DIR "/D/step-00000012.h5.tmp", F_OK) == 0, "the kill did not happen during the write");
    EXPECT(size8 > 0 && access(DIR "/D/step-00000008.h5.tmp", F_OK) != 0, "no complete step-8 checkpoint");
    /* a damaged newer file is skipped by auto too */
    FILE *f = fopen(DIR "/D/step-00000016.h5", "wb");
    fputs("garbage", f);
    fclose(f);
    int rc = test_llamac(RUN_ARGS "--ckpt-dir " DIR "/D --metrics " DIR "/D.jsonl --out " DIR "/D.h5 --resume auto");
    EXPECT(rc == 0, "resume after the crash: %s", test_err);
    EXPECT(strstr(test_err, "skipping " DIR "/D/step-00000016.h5"), "no warning for the damaged file: %s", test_err);
    EXPECT(strstr(test_err, "skipping") == NULL || strstr(test_err, "step-00000008") == NULL, "step 8 skipped: %s", test_err);
    ckpt_test_same(DIR "/A/step-00000024.h5", DIR "/D/step-00000024.h5");
    ckpt_test_same_losses(DIR "/A.jsonl", DIR "/D.jsonl", STEPS);
    EXPECT(access(DIR "/D/step-00000012.h5.tmp", F_OK) != 0, "the stale .tmp was not cleaned up");
}

void ckpt_cli_errors(void) {
    straight_run();
    /* a checkpoint of another shape */
    int rc = test_llamac(RUN_ARGS "--ckpt-dir " DIR "/A --out " DIR "/E.h5 --resume " DIR "/A/step-00000024.h5 --set hidden=72 --steps 30");
    EXPECT(rc == 1 && strstr(test_err, "does not match the requested one (hidden"), "shape mismatch: %s", test_err);
    rc = test_llamac(RUN_ARGS "--ckpt-dir " DIR "/A --out " DIR "/E.h5 --resume " DIR "/A.h5");
    EXPECT(rc == 1 && strstr(test_err, "no optimizer state"), "weights-only resume: %s", test_err);
    rc = test_llamac(RUN_ARGS "--ckpt-dir " DIR "/A --out " DIR "/E.h5 --resume " DIR "/A/step-00000024.h5");
    EXPECT(rc == 1 && strstr(test_err, "nothing to do"), "resume at the end: %s", test_err);
    rc = test_llamac(RUN_ARGS "--ckpt-dir " DIR "/A --out " DIR "/E.h5 --resume " DIR "/nope.h5");
    EXPECT(rc == 1 && strstr(test_err, DIR "/nope.h5: cannot open"), "missing resume file: %s", test_err);
    EXPECT(access(DIR "/E.h5", F_OK) != 0, "a failed run wrote its --out");
    /* inspect summarises a checkpoint */
    rc = test_llamac("inspect " DIR "/A/step-00000024.h5");
    EXPECT(rc == 0 && strstr(test_out, "training state: step 24") && strstr(test_out, "AdamW moments"),
           "inspect: rc %d, %s %s", rc, test_out, test_err);
}
