/*
 * main.c: the llamac command. Only main and the subcommand table live here;
 * each subcommand is a cmd_<name> in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "../dist/dist.h"
#include "proc/blas_env.h"
#include "cmd/cmds.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv, Err *e);
    const char *about;
} Command;

static const Command commands[] = {
    {"tokenize", cmd_tokenize, "train a BPE tokenizer; encode text or JSONL into token shards"},
    {"data", cmd_data, "JSONL in, JSONL out: quality filters, dedup (exact, MinHash), a quality classifier"},
    {"pretrain", cmd_pretrain, "pretrain a Llama from scratch on token shards"},
    {"sft", cmd_sft, "supervised fine-tuning on chat / instruction JSONL (prompt-masked, packed)"},
    {"dpo", cmd_dpo, "preference training on chosen / rejected pairs (DPO, robust, IPO, hinge)"},
    {"distill", cmd_distill, "a student trained on a teacher's next-token distributions (KL / JSD at a temperature, mixed with CE)"},
    {"teacher-cache", cmd_teacher_cache, "a teacher's top-K log-probabilities over the data, written once for distill --teacher-cache"},
    {"reward", cmd_reward, "a reward model on chosen / rejected pairs (Bradley-Terry with margins, as Llama 2 and TRL)"},
    {"eval", cmd_eval, "loss and perplexity of a model on a shard"},
    {"generate", cmd_generate, "continue a prompt with a trained model (KV cache)"},
    {"rl", cmd_rl, "online RL from rewards: GRPO, RLOO, online DPO (reward models, answer checks, a reward program)"},
    {"rs", cmd_rs, "rejection-sampling fine-tuning: K samples a prompt, reward models keep the best, sft on them"},
    {"sample", cmd_sample, "K samples of every prompt of a JSONL file, batched; resumable, MPI-split"},
    {"score", cmd_score, "rewards of JSONL texts or pairs under reward models (weighted); pair accuracy"},
    {"chat", cmd_chat, "talk with a model: user lines on stdin, replies on stdout (chat template, KV cache)"},
    {"convert", cmd_convert, "Hugging Face directory -> checkpoint -> Hugging Face directory or GGUF"},
    {"prune", cmd_prune, "a smaller Llama by structured pruning: layers, heads, MLP and width by measured importance"},
    {"quantize", cmd_quantize, "a model to a quantised GGUF for llama.cpp (Q8_0 ... Q6_K, the Q4_K_M / Q5_K_M mixes)"},
    {"logits", cmd_logits, "next-token logits of a token sequence as float32 (for reference tests)"},
    {"inspect", cmd_inspect, "model shape, parameter counts, FLOPs and training memory"},
    {"bench", cmd_bench, "time training steps of a preset: tokens/s, GFLOP/s, memory"},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: llamac <command> [flags]   (llamac <command> --help for its flags)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].about);
}

/* Under mpirun only rank 0 speaks on stdout (progress, samples); every rank
 * keeps stderr. A failing rank names itself and stops the others (a rank
 * that returned would leave them waiting in a collective). */
static int finish(int rc, const char *msg) {
    const DistGrid *g = dist_grid();
    if (rc == 0) {
        dist_finalize();
        return 0;
    }
    if (g->world > 1) {
        fprintf(stderr, "llamac: error: rank %d of %d: %s\n", g->rank, g->world, msg);
        dist_abort(1);
    }
    fprintf(stderr, "llamac: error: %s\n", msg);
    dist_finalize();
    return 1;
}

int main(int argc, char **argv) {
    blas_env_fix(argv);
    Err de = {{0}};
    if (dist_init(&argc, &argv, &de)) {
        fprintf(stderr, "llamac: error: %s\n", de.msg);
        return 1;
    }
    if (dist_rank() > 0 && !freopen("/dev/null", "w", stdout)) return finish(-1, "cannot silence stdout");
    if (argc < 2) {
        usage(stderr);
        dist_finalize();
        return 1;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return finish(0, NULL);
    }
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        Err e = {{0}};
        return finish(commands[i].fn(argc - 2, argv + 2, &e), e.msg);
    }
    char msg[160];
    snprintf(msg, sizeof msg, "unknown command '%.64s' (see llamac --help)", argv[1]);
    return finish(-1, msg);
}
