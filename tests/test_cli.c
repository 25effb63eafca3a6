/*
 * test_cli.c: the real binary on good and bad command lines. Every bad input
 * must exit 1 with exactly one stderr line "llamac: error: ..." that names
 * the flag or value, and never crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test.h"
#include "tests.h"


static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

void cli_inspect(void) {
    int rc = test_llamac("inspect llama2-7b");
    EXPECT(rc == 0, "exit %d: %s", rc, test_err);
    EXPECT(strstr(test_out, "parameters: 6,738,415,616"), "llama2-7b count missing:\n%s", test_out);
    rc = test_llamac("inspect llama3-8b --batch 2 --seq 1024");
    EXPECT(rc == 0 && strstr(test_out, "parameters: 8,030,261,248"), "llama3-8b: %s", test_out);
    EXPECT(strstr(test_out, "full training:") && strstr(test_out, "LoRA r=16"), "memory lines missing");
    rc = test_llamac("inspect llama3.2-1b --tensors");
    EXPECT(rc == 0 && strstr(test_out, "parameters: 1,235,814,400"), "llama3.2-1b: %s", test_out);
    EXPECT(strstr(test_out, "model.layers.15.mlp.down_proj.weight") && !strstr(test_out, "lm_head.weight"),
           "tensor list of a tied model");
    rc = test_llamac("inspect --help");
    EXPECT(rc == 0 && strstr(test_out, "usage: llamac inspect"), "inspect --help");
    rc = test_llamac("--help");
    EXPECT(rc == 0 && strstr(test_out, "inspect") && strstr(test_out, "bench"), "llamac --help");
    rc = test_llamac("bench --preset tiny --batch 2 --seq 32 --steps 2 --json");
    EXPECT(rc == 0 && strstr(test_out, "\"tokens_per_s\""), "bench --json: %s%s", test_out, test_err);
    rc = test_llamac("bench --preset tiny --batch 2 --seq 32 --steps 2 --lora-r 4 --lora-targets all-linear --recompute");
    EXPECT(rc == 0 && strstr(test_out, "lora r=4") && strstr(test_out, "recompute"), "bench LoRA: %s%s", test_out, test_err);
}

void test_cli_refusals(const TestCliCase *cases, size_t n, const char *arg, const char *tail) {
    for (size_t i = 0; i < n; i++) {
        char args[1024];
        snprintf(args, sizeof args, cases[i].args, arg);
        int rc = test_llamac("%s%s", args, tail);
        EXPECT(rc == 1 && strstr(test_err, cases[i].want) && strchr(test_err, '\n') == strrchr(test_err, '\n'),
               "case %zu (%s): rc %d, '%s', want '%s'", i, args, rc, test_err, cases[i].want);
    }
}

void cli_errors(void) {
    static const struct { const char *args, *want; } cases[] = {
        {"", "usage"},
        {"frobnicate", "unknown command 'frobnicate'"},
        {"inspect", "expected one preset"},
        {"inspect llama9-70b", "unknown preset 'llama9-70b'"},
        {"inspect tiny --bogus 1", "unknown flag '--bogus'"},
        {"inspect tiny --batch", "--batch: missing value"},
        {"inspect tiny --batch abc", "--batch: 'abc' is not an integer"},
        {"inspect tiny --batch 0", "--batch: 0 is out of range"},
        {"inspect tiny --batch -3", "--batch: -3 is out of range"},
        {"inspect tiny --batch 4x", "--batch: '4x' is not an integer"},
        {"inspect tiny --seq 129", "--seq: 129 exceeds the context length 128"},
        {"inspect tiny --set n_kv_heads=3", "not divisible by n_kv_heads 3"},
        {"inspect tiny --set n_heads=5", "n_heads: 5 is not divisible by n_kv_heads 2"},
        {"inspect tiny --set n_heads=6 --set n_kv_heads=6", "dim: 64 is not divisible by n_heads 6"},
        {"inspect tiny --set bogus=1", "unknown model field 'bogus'"},
        {"inspect tiny --set dim", "--set: expected key=value"},
        {"inspect tiny --set norm_eps=nan", "norm_eps: 'nan' is not a finite number"},
        {"inspect tiny extra words", "unexpected argument 'extra'"},
        {"inspect tiny --lora-targets q_proj,bogus", "--lora-targets: unknown module 'bogus'"},
        {"inspect tiny --lora-r 65", "--lora-r: 65 exceeds min(in, out) = 64 of q_proj"},
        {"inspect tiny --lora-r 0", "--lora-r: 0 is out of range"},
        {"bench --preset tiny --lr -0.001", "--lr: -0.001 is out of range"},
        {"bench --preset tiny --lr 0", "--lr: must be positive"},
        {"bench --preset tiny --batch 0", "--batch: 0 is out of range"},
        {"bench --preset tiny --seq 4096", "sequence length: 4096 exceeds the model's context length 128"},
        {"bench --preset nope", "unknown preset 'nope'"},
        {"bench --preset tiny --steps 1e3", "--steps: '1e3' is not an integer"},
        {"bench --preset tiny --lora-r 8 --lora-targets q,x", "--lora-targets: unknown module 'x'"},
        {"bench --preset tiny --lora-r 8 --lora-dropout 1", "--lora-dropout: must be in [0, 1)"},
        {"bench --preset tiny --lora-r 33", "--lora-r: 33 exceeds min(in, out) = 32 of k_proj"},
        {"eval --device tpu --model m.h5 --data d.bin", "--device: 'tpu' is not one of cpu, cuda"},
#ifndef LC_CUDA
        {"pretrain --device cuda --train d.bin", "--device cuda: this llamac was built without CUDA (make CUDA=1)"},
        {"generate --device cuda --model m.h5 --tokenizer t --prompt hi", "--device cuda: this llamac was built without CUDA"},
#endif
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = test_llamac("%s", cases[i].args);
        EXPECT(rc == 1, "'%s': exit %d, expected 1", cases[i].args, rc);
        if (strcmp(cases[i].want, "usage") == 0) {
            EXPECT(strstr(test_err, "usage:"), "'%s': no usage on stderr", cases[i].args);
            continue;
        }
        EXPECT(count_lines(test_err) == 1 && strncmp(test_err, "llamac: error: ", 15) == 0,
               "'%s': stderr must be one 'llamac: error:' line, got: %s", cases[i].args, test_err);
        EXPECT(strstr(test_err, cases[i].want), "'%s': stderr '%s' lacks '%s'", cases[i].args, test_err, cases[i].want);
    }
}

/* The flag lines of one --help output: each states its default at most
 * once, and never an empty one ("(default )" from an empty string). */
static void check_help_defaults(const char *what, const char *out) {
    for (const char *p = out; *p;) {
        size_t n = strcspn(p, "\n");
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line - 1 ? n : sizeof line - 1), p);
        const char *d = strstr(line, "(default");
        EXPECT(!d || !strstr(d + 1, "(default"), "%s: two defaults: %s", what, line);
        EXPECT(!strstr(line, "(default)") && !strstr(line, "(default )"), "%s: empty default: %s", what, line);
        p += n + (p[n] == '\n');
    }
}

/* Every command of `llamac --help` (main.c's table), and the verbs a
 * command's usage line lists as a|b|c (tokenize train|encode|...). */
void cli_help_defaults(void) {
    int rc = test_llamac("--help");
    EXPECT(rc == 0, "llamac --help: exit %d", rc);
    static char cmds[TEST_OUT_MAX];
    memcpy(cmds, test_out, sizeof cmds);
    int ncmd = 0;
    for (char *line = strtok(cmds, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        if (strncmp(line, "  ", 2) != 0 || sscanf(line, "%63s", name) != 1) continue;
        ncmd++;
        rc = test_llamac("%s --help", name);
        EXPECT(rc == 0, "%s --help: exit %d: %s", name, rc, test_err);
        check_help_defaults(name, test_out);
        /* "usage: llamac NAME a|b|c [flags]": each verb's own help */
        char prefix[96], verbs[256];
        snprintf(prefix, sizeof prefix, "usage: llamac %s %%255s", name);
        if (sscanf(test_out, prefix, verbs) != 1 || !strchr(verbs, '|')) continue;
        for (char *v = verbs, *bar; v; v = bar ? bar + 1 : NULL) {
            bar = strchr(v, '|');
            if (bar) *bar = '\0';
            char what[64 + 256 + 2];
            snprintf(what, sizeof what, "%s %s", name, v);
            rc = test_llamac("%s --help", what);
            EXPECT(rc == 0, "%s --help: exit %d: %s", what, rc, test_err);
            check_help_defaults(what, test_out);
        }
    }
    EXPECT(ncmd >= 11, "only %d commands in llamac --help", ncmd);
}
