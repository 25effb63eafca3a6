/*
 * test_distill.c: `llamac distill` and `llamac teacher-cache` (issue 25),
 * end to end on tiny models (a 4-layer teacher, a 2-layer student, both
 * pretrained a few steps on one shard of one tokenizer).
 *
 * What is checked: with --kd-weight 0 distill is sft step for step (no teacher run); the
 * online teacher and a float32 cache of all V tokens give the same losses;
 * a top-K cache gives, before any training, exactly the divergence over
 * K + 1 buckets (the teacher's K most likely tokens and the tail) that
 * this file computes in double from the two models' full logits, and the
 * online run the full divergence, so their difference is the truncation
 * term, computed, not assumed; a killed and resumed run (cached teacher,
 * SFT rows) equals the straight one bit for bit, as does a LoRA student's
 * (online teacher, shards); two ranks, as replicas or as two pipeline
 * stages, equal one; every bad input is one stderr line.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/loader.h"
#include "../data/shard.h"
#include "../data/tcache.h"
#include "../data/tok.h"
#include "../model/llama.h"
#include "../train/io/ckpt.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tdistill"
#define SHAPE_T "--preset tiny --set dim=128 --set hidden=384 --set n_layers=4"
#define SHAPE_S "--preset tiny --set dim=64 --set hidden=192 --set n_layers=2"
#define RUN "--batch 2 --seq 32 --lr 1e-3 --warmup 0 --seed 4 --peak-gflops 1 "

static char tokp[256];

/* The inputs, made once: tokenizer, chat JSONL, a shard of text, the
 * teacher, a second teacher, the student. */
static void need_inputs(void) {
    static int done;
    if (done) return;
    done = 1;
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    Tokenizer t;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' " DIR "/own.tok", test_chat_tokenizer(&t));
    LC_ASSERT(system(cmd) == 0);
    tok_free(&t);
    snprintf(tokp, sizeof tokp, DIR "/own.tok");
    FILE *f = fopen(DIR "/chat.jsonl", "wb"), *g = fopen(DIR "/text.jsonl", "wb");
    LC_ASSERT(f && g);
    static const char *w[] = {"Hi", "there", "you", "are", "helpful", "Fine", "How", "Hello", "the", "cat"};
    Rng r;
    rng_seed(&r, 25);
    for (int i = 0; i < 160; i++) {
        char q[256] = "", a[256] = "";
        int k = 2 + (int)(rng_u64(&r) % 6);
        for (int j = 0; j < k; j++) {
            strcat(q, w[rng_u64(&r) % 10]), strcat(q, " ");
            strcat(a, w[rng_u64(&r) % 10]), strcat(a, " ");
        }
        fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, {\"role\": \"assistant\", \"content\": "
                   "\"%s\"}]}\n", q, a);
        fprintf(g, "{\"text\": \"%s%s\"}\n", q, a);
    }
    fclose(f);
    fclose(g);
    int rc = test_llamac("tokenize encode --tokenizer %s --input " DIR "/text.jsonl --out " DIR "/s.bin", tokp);
    EXPECT(rc == 0, "encode: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " SHAPE_T " " RUN "--steps 6 --ckpt-dir " DIR "/pt --out " DIR
                     "/teacher.h5");
    EXPECT(rc == 0, "teacher: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " SHAPE_T " " RUN "--steps 2 --seed 9 --ckpt-dir " DIR
                     "/pt2 --out " DIR "/teacher2.h5");
    EXPECT(rc == 0, "second teacher: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin " SHAPE_S " " RUN "--steps 2 --ckpt-dir " DIR "/ps --out " DIR
                     "/student.h5");
    EXPECT(rc == 0, "student: %s", test_err);
}

/* The values of key in a metrics file's lines that have it and "loss"
 * (key "loss": the step lines; "eval_kd": the validation lines). */
static int read_key(const char *path, const char *key, double *v, int max) {
    FILE *f = fopen(path, "r");
    char line[4096], pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    int n = 0;
    while (f && n < max && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, pat);
        if (p) v[n++] = strtod(p + strlen(pat), NULL);
    }
    if (f) fclose(f);
    return n;
}

static void same_values(const char *a, const char *b, const char *key, int want, double rtol, const char *what) {
    double x[64], y[64];
    int na = read_key(a, key, x, 64), nb = read_key(b, key, y, 64);
    EXPECT(na == want && nb == want, "%s: %d and %d %s values, expected %d", what, na, nb, key, want);
    for (int i = 0; i < na && i < nb; i++)
        EXPECT(fabs(x[i] - y[i]) <= rtol * fabs(x[i]) + 1e-12, "%s: %s %d: %.9g vs %.9g", what, key, i, x[i], y[i]);
}

/* --kd-weight 0 is sft: the same losses step for step (within 1e-5), with
 * no teacher loaded or run (lmhead_ce, as sft: a CE baseline at sft's cost). */
void distill_ce_equiv(void) {
    need_inputs();
    const char *common = "--data " DIR "/chat.jsonl --template llama3 --batch 4 --seq 64 --steps 6 --lr 1e-3 "
                         "--warmup 0 --seed 4 --peak-gflops 1";
    int rc = test_llamac("sft --model " DIR "/student.h5 %s --tokenizer %s --metrics " DIR "/ce_a.jsonl --ckpt-dir "
                         DIR "/ce_a --out " DIR "/ce_a.h5", common, tokp);
    EXPECT(rc == 0, "sft: %s", test_err);
    rc = test_llamac("distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --kd-weight 0 %s --tokenizer "
                     "%s --metrics " DIR "/ce_b.jsonl --ckpt-dir " DIR "/ce_b --out " DIR "/ce_b.h5", common, tokp);
    EXPECT(rc == 0, "distill: %s", test_err);
    EXPECT(strstr(test_out, "distill loss: (1 - 0) CE + 0 x KD"), "start-up line: %s", test_out);
    EXPECT(strstr(test_out, "not loaded: --kd-weight 0"), "teacher line: %s", test_out);
    same_values(DIR "/ce_a.jsonl", DIR "/ce_b.jsonl", "loss", 6, 1e-5, "kd-weight 0 vs sft");
}

/* Online teacher vs a float32 cache of every token (K = V): the same
 * losses, both terms, in training and validation. */
void distill_cache_exact(void) {
    need_inputs();
    int rc = test_llamac("teacher-cache --teacher " DIR "/teacher.h5 --train " DIR "/s.bin --val " DIR "/s.bin "
                         "--batch 3 --seq 32 --top-k 338 --cache-dtype f32 --tau 2 --out " DIR "/all.cache");
    EXPECT(rc == 0, "teacher-cache: %s", test_err);
    EXPECT(strstr(test_out, "2028 B per trained token"), "bytes per token (338 x (2 + 4)): %s", test_out);
    EXPECT(strstr(test_out, "tok/s") && strstr(test_out, "ETA"), "no progress line: %s", test_out);
    const char *args = "distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --val "
                       DIR "/s.bin --val-every 2 --val-batches 2 --tau 2 --kd-t2 1 " RUN "--steps 4";
    rc = test_llamac("%s --metrics " DIR "/on.jsonl --ckpt-dir " DIR "/on --out " DIR "/on.h5", args);
    EXPECT(rc == 0, "online: %s", test_err);
    rc = test_llamac("%s --teacher-cache " DIR "/all.cache --metrics " DIR "/ca.jsonl --ckpt-dir " DIR "/ca --out " DIR
                     "/ca.h5", args);
    EXPECT(rc == 0, "cached: %s", test_err);
    static const char *const keys[] = {"loss", "ce", "kd", "val_loss", "eval_kd"};
    static const int counts[] = {4, 4, 4, 3, 3};
    for (int k = 0; k < 5; k++) same_values(DIR "/on.jsonl", DIR "/ca.jsonl", keys[k], counts[k], 1e-5, "cache K = V");
}

/* Descending teacher logits, for the test's own top-K. */
static const float *cmp_z;
static int by_logit(const void *a, const void *b) {
    float x = cmp_z[*(const int *)a], y = cmp_z[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : *(const int *)a - *(const int *)b;
}

/* The mean forward KL at tau over the trained positions of the first
 * nb validation batches (windows in file order), in double from the full
 * logits: the whole vocabulary (full) and the teacher's top-K plus the
 * tail bucket (sparse). */
static void expected_kd(int B, int T, int nb, double tau, int K, double *full, double *sparse) {
    Err e = {{0}};
    Llama m[2];
    const char *paths[2] = {DIR "/teacher.h5", DIR "/student.h5"};
    for (int i = 0; i < 2; i++) {
        CkptInfo ci;
        LC_ASSERT(ckpt_info(paths[i], &ci, &e) == 0);
        LC_ASSERT(llama_init(&m[i], &ci.c, &ops_cpu, NULL, B, T, 0, &e) == 0);
        LC_ASSERT(test_source_load(paths[i], &m[i].t, m[i].params, &e) == 0);
    }
    Shard s;
    LC_ASSERT(shard_open(&s, DIR "/s.bin", &e) == 0);
    const Shard *sp = &s;
    Loader L;
    LC_ASSERT(loader_init(&L, &sp, 1, B, T, 0, 1, 0, 1, 4, &e) == 0);
    int N = B * T, V = m[0].c.vocab;
    int32_t *tok = xmalloc(N * sizeof *tok), *tgt = xmalloc(N * sizeof *tgt), *pos = xmalloc(N * sizeof *pos);
    float *z[2] = {xmalloc((size_t)N * V * sizeof(float)), xmalloc((size_t)N * V * sizeof(float))};
    int *idx = xmalloc(V * sizeof *idx);
    double sf = 0, ss = 0;
    long cnt = 0;
    for (int b = 0; b < nb; b++) {
        loader_next(&L, tok, tgt, pos);
        for (int i = 0; i < 2; i++) {
            LC_ASSERT(llama_set_batch(&m[i], tok, tgt, pos, &e) == 0);
            llama_forward_hidden(&m[i], 0);
            ops_cpu.matmul_fwd(NULL, z[i], m[i].xf, m[i].w.lm_head, N, m[i].c.dim, V);
        }
        for (int n = 0; n < N; n++) {
            double lt[1024], ls[1024], mt = -INFINITY, ms = -INFINITY, st = 0, sst = 0;
            LC_ASSERT(V <= 1024);
            const float *zt = z[0] + (size_t)n * V, *zs = z[1] + (size_t)n * V;
            for (int v = 0; v < V; v++) mt = fmax(mt, zt[v] / tau), ms = fmax(ms, zs[v] / tau);
            for (int v = 0; v < V; v++) st += exp(zt[v] / tau - mt), sst += exp(zs[v] / tau - ms);
            for (int v = 0; v < V; v++) lt[v] = zt[v] / tau - mt - log(st), ls[v] = zs[v] / tau - ms - log(sst);
            double kl = 0;
            for (int v = 0; v < V; v++) kl += exp(lt[v]) * (lt[v] - ls[v]);
            for (int v = 0; v < V; v++) idx[v] = v;
            cmp_z = zt;
            qsort(idx, (size_t)V, sizeof *idx, by_logit);
            double ks = 0, pt = 0, ps = 0;
            for (int j = 0; j < K; j++) {
                int v = idx[j];
                ks += exp(lt[v]) * (lt[v] - ls[v]);
                pt += exp(lt[v]), ps += exp(ls[v]);
            }
            double rt = fmax(0, 1 - pt), rs = 1 - ps; /* the tail bucket (floored at 1e-30 in the logs) */
            if (rt > 0) ks += rt * (log(fmax(rt, 1e-30)) - log(fmax(rs, 1e-30)));
            sf += kl, ss += ks, cnt++;
        }
    }
    *full = sf / (double)cnt;
    *sparse = ss / (double)cnt;
    free(tok), free(tgt), free(pos), free(z[0]), free(z[1]), free(idx);
    loader_free(&L);
    shard_close(&s);
    llama_free(&m[0]);
    llama_free(&m[1]);
}

/* A top-K cache (K = 8 of 338, float32) against the online teacher, before
 * any training (the validation at step 0): the online run's divergence is
 * the full one, the cached run's the K + 1 bucket one computed here, and
 * their difference, the truncation term, is positive. */
void distill_cache_topk(void) {
    need_inputs();
    int rc = test_llamac("teacher-cache --teacher " DIR "/teacher.h5 --train " DIR "/s.bin --val " DIR "/s.bin "
                         "--batch 2 --seq 32 --top-k 8 --cache-dtype f32 --tau 2 --out " DIR "/k8.cache");
    EXPECT(rc == 0, "teacher-cache: %s", test_err);
    EXPECT(strstr(test_out, "48 B per trained token"), "bytes per token (8 x (2 + 4)): %s", test_out);
    const char *args = "distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --val "
                       DIR "/s.bin --val-batches 2 --tau 2 " RUN "--steps 1";
    rc = test_llamac("%s --metrics " DIR "/k_on.jsonl --ckpt-dir " DIR "/k_on --out " DIR "/k_on.h5", args);
    EXPECT(rc == 0, "online: %s", test_err);
    rc = test_llamac("%s --teacher-cache " DIR "/k8.cache --metrics " DIR "/k_ca.jsonl --ckpt-dir " DIR "/k_ca --out "
                     DIR "/k_ca.h5", args);
    EXPECT(rc == 0, "cached: %s", test_err);
    double on[4], ca[4], full, sparse;
    int n1 = read_key(DIR "/k_on.jsonl", "eval_kd", on, 4), n2 = read_key(DIR "/k_ca.jsonl", "eval_kd", ca, 4);
    EXPECT(n1 >= 1 && n2 >= 1, "no validation kd");
    expected_kd(2, 32, 2, 2.0, 8, &full, &sparse);
    /* float32 logits and log-probabilities against double: 1e-4 relative */
    EXPECT(fabs(on[0] - full) <= 1e-4 * full, "online kd %.9g, expected %.9g", on[0], full);
    EXPECT(fabs(ca[0] - sparse) <= 1e-4 * sparse, "top-8 kd %.9g, expected %.9g", ca[0], sparse);
    EXPECT(full - sparse > 0 && fabs((on[0] - ca[0]) - (full - sparse)) <= 1e-4 * full,
           "truncation term %.9g, expected %.9g", on[0] - ca[0], full - sparse);
}

/* Killed and resumed: a cached teacher on SFT rows (the cursor and the
 * rows' keys), and a LoRA student with the online teacher on shards. */
void distill_resume(void) {
    need_inputs();
    int rc = test_llamac("teacher-cache --teacher " DIR "/teacher.h5 --data " DIR "/chat.jsonl --val " DIR "/chat.jsonl "
                         "--template llama3 --tokenizer %s --batch 4 --seq 64 --top-k 16 --out " DIR "/sft.cache", tokp);
    EXPECT(rc == 0, "teacher-cache: %s", test_err);
    for (int k = 0; k < 2; k++) {
        char a[2048], b[2048], ck[256], fa[256], fb[256], ma[256], mb[256];
        const char *fmt = k == 0 ? "distill --teacher-cache " DIR "/sft.cache --student " DIR "/student.h5 --data " DIR
                                   "/chat.jsonl --template llama3 --tokenizer %s --batch 4 --seq 64 --steps 16 --lr "
                                   "1e-3 --warmup 2 --seed 4 --peak-gflops 1 --save-every 4 --keep 2 --val " DIR
                                   "/chat.jsonl --val-every 8 --val-batches 2 --ckpt-dir " DIR "/r%c%d --metrics " DIR
                                   "/r%c%d.jsonl --out " DIR "/r%c%d.h5"
                                 : "distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR
                                   "/s.bin --tokenizer %s --batch 2 --seq 32 --steps 16 --lr 1e-3 --warmup 2 --seed 4 "
                                   "--peak-gflops 1 --save-every 4 --keep 2 --lora-r 4 --lora-dropout 0.1 --ckpt-dir "
                                   DIR "/r%c%d --metrics " DIR "/r%c%d.jsonl --adapter-out " DIR "/r%c%d.ad";
        snprintf(a, sizeof a, fmt, tokp, 'A', k, 'A', k, 'A', k);
        snprintf(b, sizeof b, fmt, tokp, 'B', k, 'B', k, 'B', k);
        snprintf(ck, sizeof ck, DIR "/rB%d/step-00000008.h5", k);
        snprintf(fa, sizeof fa, DIR "/rA%d/step-00000016.h5", k);
        snprintf(fb, sizeof fb, DIR "/rB%d/step-00000016.h5", k);
        snprintf(ma, sizeof ma, DIR "/rA%d.jsonl", k);
        snprintf(mb, sizeof mb, DIR "/rB%d.jsonl", k);
        char rm[512];
        snprintf(rm, sizeof rm, "rm -rf " DIR "/rA%d " DIR "/rB%d " DIR "/rA%d.jsonl " DIR "/rB%d.jsonl", k, k, k, k);
        system(rm);
        ckpt_test_kill_resume(a, b, ck, fa, fb, ma, mb, 16, 0);
        if (k == 1) EXPECT(access(DIR "/rA1.ad/adapter_config.json", F_OK) == 0, "no LoRA adapter written");
    }
}

/* Two ranks (each trains one of the step's two micro-batches) give one
 * process's losses. */
void dist_distill_equiv(void) {
    if (!test_have_mpi()) return;
    need_inputs();
    const char *args = "distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin "
                       "--batch 2 --seq 32 --batch-tokens 128 --steps 4 --lr 1e-3 --warmup 0 --seed 4 --peak-gflops 1";
    int rc = test_llamac("%s --metrics " DIR "/d1.jsonl --ckpt-dir " DIR "/d1 --out " DIR "/d1.h5", args);
    EXPECT(rc == 0, "one process: %s", test_err);
    rc = test_mpi_llamac(2, "%s --metrics " DIR "/d2.jsonl --ckpt-dir " DIR "/d2 --out " DIR "/d2.h5", args);
    EXPECT(rc == 0, "two ranks: %s", test_err);
    same_values(DIR "/d1.jsonl", DIR "/d2.jsonl", "loss", 4, 1e-6, "np 2 vs np 1");
    same_values(DIR "/d1.jsonl", DIR "/d2.jsonl", "kd", 4, 1e-6, "np 2 vs np 1");
}

/* A teacher as a Hugging Face directory or a GGUF file, the student a
 * checkpoint: with the student's --tokenizer the vocabularies are compared
 * token by token (the files' tokenizer ids differ) and the losses are the
 * checkpoint teacher's; without it the ids differ and the run is refused
 * with a hint. */
void distill_teacher_formats(void) {
    need_inputs();
    int rc = test_llamac("convert " DIR "/teacher.h5 " DIR "/thf --tokenizer %s --force", tokp);
    EXPECT(rc == 0, "convert hf: %s", test_err);
    rc = test_llamac("convert " DIR "/teacher.h5 " DIR "/t.gguf --tokenizer %s --force", tokp);
    EXPECT(rc == 0, "convert gguf: %s", test_err);
    static const char *const teachers[3] = {DIR "/teacher.h5", DIR "/thf", DIR "/t.gguf"};
    for (int k = 0; k < 3; k++) {
        rc = test_llamac("distill --teacher %s --student " DIR "/student.h5 --tokenizer %s --train " DIR "/s.bin " RUN
                         "--steps 2 --metrics " DIR "/tf%d.jsonl --ckpt-dir " DIR "/tf%d --out " DIR "/tf%d.h5",
                         teachers[k], tokp, k, k, k);
        EXPECT(rc == 0, "%s: %s", teachers[k], test_err);
        if (k) same_values(DIR "/tf0.jsonl", k == 1 ? DIR "/tf1.jsonl" : DIR "/tf2.jsonl", "kd", 2, 1e-5, teachers[k]);
    }
    rc = test_llamac("distill --teacher " DIR "/thf --student " DIR "/student.h5 --train " DIR "/s.bin " RUN "--steps 1 "
                     "--ckpt-dir " DIR "/tf9 --out " DIR "/tf9.h5");
    EXPECT(rc == 1 && strstr(test_err, "(or give --tokenizer to compare the vocabularies)"), "no hint: %s", test_err);
}

/* On two pipeline stages (the online teacher on the last), with
 * validation: one process's losses, both terms. */
void dist_pp_distill(void) {
    if (!test_have_mpi()) return;
    need_inputs();
    const char *args = "distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --val "
                       DIR "/s.bin --val-every 2 --val-batches 2 --batch 2 --seq 32 --batch-tokens 128 --steps 4 --lr "
                       "1e-3 --warmup 0 --seed 4 --peak-gflops 1";
    int rc = test_llamac("%s --metrics " DIR "/p1.jsonl --ckpt-dir " DIR "/p1 --out " DIR "/p1.h5", args);
    EXPECT(rc == 0, "one process: %s", test_err);
    rc = test_mpi_llamac(2, "%s --pp 2 --metrics " DIR "/p2.jsonl --ckpt-dir " DIR "/p2 --out " DIR "/p2.h5", args);
    EXPECT(rc == 0, "two stages: %s", test_err);
    static const char *const keys[] = {"loss", "ce", "kd", "val_loss", "eval_kd"};
    static const int counts[] = {4, 4, 4, 3, 3};
    for (int k = 0; k < 5; k++) same_values(DIR "/p1.jsonl", DIR "/p2.jsonl", keys[k], counts[k], 1e-6, "pp 2 vs one");
}

/* A teacher checkpoint like the student's teacher but with another
 * vocabulary size or tokenizer id. */
static void odd_teacher(const char *path, int dvocab, uint64_t tokxor) {
    Err e = {{0}};
    CkptInfo ci;
    LC_ASSERT(ckpt_info(DIR "/teacher.h5", &ci, &e) == 0);
    LlamaConfig c = ci.c;
    c.vocab += dvocab;
    ParamTable pt;
    LC_ASSERT(params_build(&c, &pt, &e) == 0);
    float *p = xcalloc(pt.size, sizeof(float));
    for (size_t i = 0; i < pt.size; i++) p[i] = 0.01f;
    LC_ASSERT(ckpt_save(path, &c, &pt, p, ci.tokenizer_id ^ tokxor, NULL, NULL, &e) == 0);
    free(p);
    params_free(&pt);
}

void distill_errors(void) {
    need_inputs();
    odd_teacher(DIR "/vocab.h5", 8, 0);
    odd_teacher(DIR "/tokid.h5", 0, 1);
    int rc = test_llamac("teacher-cache --teacher " DIR "/teacher.h5 --train " DIR "/s.bin --batch 2 --seq 32 --top-k 4 "
                         "--out " DIR "/e.cache");
    EXPECT(rc == 0, "teacher-cache: %s", test_err);
    static const TestCliCase cases[] = {
        {"distill --teacher " DIR "/vocab.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32",
         "the teacher's vocabulary has 346 tokens, the student " DIR "/student.h5's 338: distillation needs one tokenizer"},
        {"distill --teacher " DIR "/tokid.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32",
         "the teacher's tokenizer (id"},
        {"distill --teacher-cache " DIR "/e.cache --student " DIR "/student.h5 --data " DIR "/chat.jsonl --tokenizer %s "
         "--template llama3 --seq 64", "e.cache: made from other data than " DIR "/chat.jsonl"},
        {"distill --teacher-cache " DIR "/e.cache --student " DIR "/student.h5 --train " DIR "/s.bin --seq 16",
         "e.cache: made from other data than " DIR "/s.bin"},
        {"distill --teacher " DIR "/teacher2.h5 --teacher-cache " DIR "/e.cache --student " DIR "/student.h5 --train "
         DIR "/s.bin --seq 32", "e.cache: made by another teacher than " DIR "/teacher2.h5"},
        {"distill --teacher-cache " DIR "/e.cache --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 --tau 2",
         "log-probabilities at tau 1, this run's --tau is 2"},
        {"distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 --tau 0",
         "--tau: the temperature must be positive, got 0"},
        {"distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 --tau -1",
         "--tau: the temperature must be positive, got -1"},
        {"distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 --kd-weight 1.5",
         "--kd-weight: must be in [0, 1], got 1.5"},
        {"distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 --kd-weight -0.1",
         "--kd-weight: must be in [0, 1], got -0.1"},
        {"distill --teacher " DIR "/teacher.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 --kd-div tvd",
         "--kd-div: expected fkl, rkl or jsd"},
        {"distill --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32", "--teacher: required"},
        {"distill --teacher-cache " DIR "/e.cache --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 --val "
         DIR "/s.bin", "e.cache: holds no validation rows"},
        {"distill --teacher-cache " DIR "/student.h5 --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32",
         "student.h5: not a teacher cache of llamac"},
    };
    unlink(DIR "/ec.h5"); /* an earlier, failed run of this test may have left one */
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], tokp, " --batch 2 --peak-gflops 1 --steps 1 --ckpt-dir "
                      DIR "/ec --out " DIR "/ec.h5");
    static const TestCliCase cache_cases[] = {
        {"teacher-cache --teacher " DIR "/teacher.h5 --train " DIR "/s.bin --out x --tau 0",
         "--tau: the temperature must be positive, got 0"},
        {"teacher-cache --teacher " DIR "/teacher.h5 --train " DIR "/s.bin --out x --top-k 400",
         "--top-k: 400 is more than the teacher's vocabulary of 338 tokens"},
        {"teacher-cache --teacher " DIR "/teacher.h5 --train " DIR "/s.bin --out x --cache-dtype bf16",
         "--cache-dtype: expected f16 or f32"},
    };
    test_cli_refusals(cache_cases, sizeof cache_cases / sizeof cache_cases[0], tokp, " --batch 2 --seq 32");
    EXPECT(access(DIR "/ec.h5", F_OK) != 0, "a refused run wrote its --out");
    /* an f16 cache with a divergence that punishes a floored tail: a warning, and the run goes on */
    rc = test_llamac("distill --teacher-cache " DIR "/e.cache --student " DIR "/student.h5 --train " DIR "/s.bin --seq 32 "
                     "--batch 2 --peak-gflops 1 --steps 1 --kd-div rkl --ckpt-dir " DIR "/ew --out " DIR "/ew.h5");
    EXPECT(rc == 0 && strstr(test_err, "llamac: warning: ") && strstr(test_err, "f16 log-probabilities with --kd-div rkl"),
           "f16 + rkl: rc %d: %s", rc, test_err);
    /* a damaged cache: a token id beyond the vocabulary in the first record */
    char *raw = test_slurp(DIR "/e.cache");
    struct stat sb;
    EXPECT(raw && stat(DIR "/e.cache", &sb) == 0, "read e.cache");
    if (raw) {
        TCacheHeader h;
        memcpy(&h, raw, sizeof h);
        uint16_t big = 0xffff; /* in every record: whichever rows the step draws */
        for (uint64_t i = 0; i < h.npos[0]; i++) memcpy(raw + h.rec_off[0] + i * tcache_record_bytes(&h), &big, 2);
        FILE *f = fopen(DIR "/bad.cache", "wb");
        EXPECT(f && fwrite(raw, 1, (size_t)sb.st_size, f) == (size_t)sb.st_size && h.id_bytes == 2, "write bad.cache");
        if (f) fclose(f);
        free(raw);
        rc = test_llamac("distill --teacher-cache " DIR "/bad.cache --student " DIR "/student.h5 --train " DIR
                         "/s.bin --seq 32 --batch 2 --peak-gflops 1 --steps 1 --ckpt-dir " DIR "/ec --out " DIR "/ec.h5");
        EXPECT(rc == 1 && strstr(test_err, "bad.cache: teacher cache damaged (token id 65535, vocabulary 338)"),
               "damaged cache: rc %d: %s", rc, test_err);
    }
}
