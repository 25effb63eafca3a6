/*
 * test_pipeline.c: the pretraining pipeline through the real binary, on a
 * small synthetic corpus written by the test: tokenizer training, shards, a
 * short pretraining run whose validation loss must fall, eval, reproducible
 * generation, and the bad inputs of each command (one error line naming the
 * file, exit 1, nothing already written lost).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../model/base.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tp"

/* Run `llamac <args>` in the repository root; stdout/stderr captured. */

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A corpus with learnable structure: sentences from a small grammar. */
static void make_corpus(void) {
    static const char *subj[] = {"the cat", "a dog", "the old king", "my friend", "the bird"};
    static const char *verb[] = {"sees", "likes", "finds", "follows", "hears"};
    static const char *obj[] = {"the river.", "a red ball.", "the castle.", "her song.", " 42 apples."};
    Rng r;
    rng_seed(&r, 99);
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    const char *names[2] = {DIR "/train.jsonl", DIR "/val.jsonl"};
    for (int s = 0; s < 2; s++) {
        FILE *f = fopen(names[s], "w");
        LC_ASSERT(f);
        for (int d = 0; d < (s ? 30 : 400); d++) {
            fputs("{\"text\": \"", f);
            for (int k = 0; k < 6; k++)
                fprintf(f, "%s%s %s %s", k ? " " : "", subj[rng_u64(&r) % 5], verb[rng_u64(&r) % 5], obj[rng_u64(&r) % 5]);
            fputs("\"}\n", f);
        }
        fclose(f);
    }
}

static int tokenized;

static void need_shards(void) {
    if (tokenized) return;
    make_corpus();
    int rc = test_llamac("tokenize train --input " DIR "/train.jsonl --vocab 300 --out " DIR "/tok.bin");
    EXPECT(rc == 0, "tokenize train: %s", test_err);
    rc = test_llamac("tokenize encode --tokenizer " DIR "/tok.bin --input " DIR "/train.jsonl --out " DIR "/train.bin");
    EXPECT(rc == 0, "tokenize encode: %s", test_err);
    rc = test_llamac("tokenize encode --tokenizer " DIR "/tok.bin --input " DIR "/val.jsonl --out " DIR "/val.bin");
    EXPECT(rc == 0, "tokenize encode val: %s", test_err);
    tokenized = 1;
}

#define TRAIN_ARGS "pretrain --train " DIR "/train.bin --val " DIR "/val.bin --preset tiny --batch 8 --seq 32 --ckpt-dir " DIR "/ckpt "

void pipeline_pretrain(void) {
    need_shards();
    int rc = test_llamac(TRAIN_ARGS "--steps 60 --lr 3e-3 --val-every 30 --val-batches 4 --seed 1 --metrics " DIR
                "/m.jsonl --out " DIR "/model.h5");
    EXPECT(rc == 0, "pretrain failed: %s", test_err);
    const char *p = strstr(test_out, "val loss ");
    double first = 0, last = 0;
    p = strstr(test_out, "done:");
    EXPECT(p && sscanf(strstr(p, "val loss ") + 9, "%lf -> %lf", &first, &last) == 2, "no summary in:\n%s", test_out);
    EXPECT(last < first - 1.0, "validation loss %.3f -> %.3f did not fall by 1 nat", first, last);
    EXPECT(strstr(test_out, "tok/s") && strstr(test_out, "MFU") && strstr(test_out, "ETA"), "progress line fields");
    FILE *f = fopen(DIR "/m.jsonl", "r");
    int lines = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f)) lines += strstr(line, "\"loss\"") != NULL;
    if (f) fclose(f);
    EXPECT(lines == 60, "metrics file has %d step lines, expected 60", lines);
    rc = test_llamac("eval --model " DIR "/model.h5 --data " DIR "/val.bin --seq 32 --batch 4");
    EXPECT(rc == 0 && strstr(test_out, "perplexity"), "eval: %s%s", test_out, test_err);
}

void pipeline_generate(void) {
    need_shards();
    if (access(DIR "/model.h5", R_OK) != 0) pipeline_pretrain();
    static char a[4096], b[4096];
    int rc = test_llamac("generate --model " DIR "/model.h5 --tokenizer " DIR "/tok.bin --prompt 'the cat' --max-tokens 40 --seed 7");
    EXPECT(rc == 0, "generate: %s", test_err);
    snprintf(a, sizeof a, "%.4000s", test_out);
    rc = test_llamac("generate --model " DIR "/model.h5 --tokenizer " DIR "/tok.bin --prompt 'the cat' --max-tokens 40 --seed 7");
    snprintf(b, sizeof b, "%.4000s", test_out);
    EXPECT(rc == 0 && strcmp(a, b) == 0, "same seed, different text:\n%s\n%s", a, b);
    EXPECT(strncmp(a, "the cat", 7) == 0 && strlen(a) > 20, "generated: %s", a);
    EXPECT(strstr(test_err, "tok/s"), "tokens/s report on stderr: %s", test_err);
    rc = test_llamac("generate --model " DIR "/model.h5 --tokenizer " DIR "/tok.bin --prompt 'the cat' --max-tokens 40 --seed 8");
    EXPECT(rc == 0 && strcmp(a, test_out) != 0, "a different seed gave the same text");
}

void pipeline_errors(void) {
    need_shards();
    if (access(DIR "/model.h5", R_OK) != 0) pipeline_pretrain();
    /* bad files */
    write_file(DIR "/empty.bin", "", 0);
    write_file(DIR "/bad.ini", "steps = 10\n\xff\xfe bogus\n", 17);
    write_file(DIR "/syntax.ini", "steps 10\n", 9);
    write_file(DIR "/unknown.ini", "stepz = 10\n", 11);
    write_file(DIR "/bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n", 27);
    write_file(DIR "/broken.jsonl", "{\"text\": \"ok\"\n", 14);
    FILE *src = fopen(DIR "/train.bin", "rb");
    static char buf[4096];
    size_t n = src ? fread(buf, 1, sizeof buf, src) : 0;
    if (src) fclose(src);
    write_file(DIR "/trunc.bin", buf, n > 100 ? 100 : n);
    /* a second tokenizer, whose shards do not match the first */
    test_llamac("tokenize train --input " DIR "/val.jsonl --vocab 280 --out " DIR "/tok2.bin");
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    for (int i = 0; i < 2999; i += 2) big[i] = ' ';
    static char gen_long[4000];
    snprintf(gen_long, sizeof gen_long, "generate --model " DIR "/model.h5 --tokenizer " DIR "/tok.bin --prompt '%s'", big);
    struct { const char *args, *want; } cases[] = {
        {"pretrain --train " DIR "/missing.bin", DIR "/missing.bin: cannot open"},
        {"pretrain --train " DIR "/empty.bin", DIR "/empty.bin"},
        {"pretrain --train " DIR "/trunc.bin", DIR "/trunc.bin: truncated"},
        {"pretrain --train " DIR "/tok.bin", "not a llamac token shard"},
        {"pretrain --train " DIR "/val.bin --preset tiny --batch 64 --seq 128", "shorter than one batch"},
        {TRAIN_ARGS "--steps 1 --tokenizer " DIR "/tok2.bin --sample-tokens 4", DIR "/tok2.bin: not the tokenizer"},
        {TRAIN_ARGS "--lr -1", "--lr: -1 is out of range"},
        {TRAIN_ARGS "--batch 0", "--batch: 0 is out of range"},
        {TRAIN_ARGS "--seq 4096", "exceeds the model's context length"},
        {TRAIN_ARGS "--batch-tokens 1000", "--batch-tokens: 1000 is not a multiple"},
        {TRAIN_ARGS "--set n_kv_heads=3", "not divisible by n_kv_heads 3"},
        {"pretrain " DIR "/bad.ini --train " DIR "/train.bin", DIR "/bad.ini: line 2 is not valid UTF-8"},
        {"pretrain " DIR "/syntax.ini --train " DIR "/train.bin", DIR "/syntax.ini: line 1"},
        {"pretrain " DIR "/unknown.ini --train " DIR "/train.bin", "unknown flag '--stepz'"},
        {"pretrain " DIR "/nope.ini --train " DIR "/train.bin", DIR "/nope.ini: cannot open config file"},
        {"tokenize train --input " DIR "/bad.jsonl --out " DIR "/t.bin", DIR "/bad.jsonl:2: no string field 'text'"},
        {"tokenize train --input " DIR "/broken.jsonl --out " DIR "/t.bin", DIR "/broken.jsonl:1: not valid JSON"},
        {"tokenize train --input " DIR "/train.jsonl --vocab 10 --out " DIR "/t.bin", "--vocab: 10 is out of range"},
        {"tokenize encode --tokenizer " DIR "/train.bin --input " DIR "/val.jsonl --out " DIR "/t.bin", DIR "/train.bin"},
        {"tokenize frob", "expected 'train' or 'encode'"},
        {"eval --model " DIR "/model.h5 --data " DIR "/missing.bin", DIR "/missing.bin: cannot open"},
        {"eval --model " DIR "/train.bin --data " DIR "/val.bin", DIR "/train.bin: neither a Hugging Face directory, a GGUF file nor an llamac checkpoint (HDF5)"},
        {"eval --model " DIR "/trunc.bin --data " DIR "/val.bin", DIR "/trunc.bin"},
        {"generate --model " DIR "/model.h5 --tokenizer " DIR "/tok2.bin --prompt hi", DIR "/tok2.bin: not the tokenizer"},
        {"generate --model " DIR "/model.h5 --tokenizer " DIR "/tok.bin --top-p 0", "--top-p: must be in (0, 1]"},
        {"generate --model " DIR "/model.h5 --tokenizer " DIR "/tok.bin --temperature -1", "--temperature: -1 is out of range"},
        {gen_long, "do not fit the context of 128 tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = test_llamac("%s", cases[i].args);
        int lines = 0;
        for (const char *p = test_err; *p; p++) lines += *p == '\n';
        EXPECT(rc == 1 && lines == 1 && strncmp(test_err, "llamac: error: ", 15) == 0,
               "'%.80s': exit %d, stderr: %s", cases[i].args, rc, test_err);
        EXPECT(strstr(test_err, cases[i].want), "'%.80s': stderr '%s' lacks '%s'", cases[i].args, test_err, cases[i].want);
    }
    /* a failing run does not touch an existing model file */
    struct stat before, after;
    stat(DIR "/model.h5", &before);
    test_llamac(TRAIN_ARGS "--steps 1 --out " DIR "/model.h5 --val " DIR "/trunc.bin");
    stat(DIR "/model.h5", &after);
    EXPECT(before.st_mtime == after.st_mtime && before.st_size == after.st_size, "model file changed by a failed run");
}
