/*
 * main.c: the llamac command. Only main and the subcommand table live here;
 * each subcommand is a cmd_<name> in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "blas_env.h"
#include "cmds.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv, Err *e);
    const char *about;
} Command;

static const Command commands[] = {
    {"tokenize", cmd_tokenize, "train a BPE tokenizer; encode text or JSONL into token shards"},
    {"pretrain", cmd_pretrain, "pretrain a Llama from scratch on token shards"},
    {"sft", cmd_sft, "supervised fine-tuning on chat / instruction JSONL (prompt-masked, packed)"},
    {"dpo", cmd_dpo, "preference training on chosen / rejected pairs (DPO, robust, IPO, hinge)"},
    {"eval", cmd_eval, "loss and perplexity of a model on a shard"},
    {"generate", cmd_generate, "continue a prompt with a trained model (KV cache)"},
    {"chat", cmd_chat, "talk with a model: user lines on stdin, replies on stdout (chat template, KV cache)"},
    {"convert", cmd_convert, "Hugging Face directory -> checkpoint -> Hugging Face directory or GGUF"},
    {"logits", cmd_logits, "next-token logits of a token sequence as float32 (for reference tests)"},
    {"inspect", cmd_inspect, "model shape, parameter counts, FLOPs and training memory"},
    {"bench", cmd_bench, "time training steps of a preset: tokens/s, GFLOP/s, memory"},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: llamac <command> [flags]   (llamac <command> --help for its flags)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].about);
}

int main(int argc, char **argv) {
    blas_env_fix(argv);
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        Err e = {{0}};
        if (commands[i].fn(argc - 2, argv + 2, &e) == 0) return 0;
        fprintf(stderr, "llamac: error: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "llamac: error: unknown command '%s' (see llamac --help)\n", argv[1]);
    return 1;
}
