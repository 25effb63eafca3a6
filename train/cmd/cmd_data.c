/*
 * cmd_data.c: `llamac data`: the pretraining-data steps between raw JSONL
 * and `llamac tokenize encode` (DESIGN.md "Pretraining data"): heuristic
 * quality filters, exact and near-duplicate removal, and a trained quality
 * classifier. Each step reads JSONL and writes JSONL (the kept lines as
 * they were), streaming on every core through data/docstream.h, and says
 * how many documents it kept and why it dropped the rest. This file is the
 * subcommand table; each step lives in its own cmd_data_<step>.c.
 */
#include <stdio.h>
#include <string.h>

#include "cmds.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv, Err *e);
    const char *help;
} subs[] = {
    {"filter", data_filter, "heuristic quality filters: Gopher and C4 rules, each on or off with its thresholds"},
    {"dedup", data_dedup, "exact (normalised text hash) and near-duplicate (MinHash + LSH) removal"},
    {"quality-train", data_quality_train, "train a fastText-style quality classifier on labelled JSONL"},
    {"quality", data_quality, "score documents with a quality classifier and keep those above a threshold"},
};

int cmd_data(int argc, char **argv, Err *e) {
    int ns = (int)(sizeof subs / sizeof subs[0]);
    for (int i = 0; argc >= 1 && i < ns; i++)
        if (strcmp(argv[0], subs[i].name) == 0) return subs[i].fn(argc - 1, argv + 1, e);
    if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        printf("usage: llamac data filter|dedup|quality-train|quality [flags]   (llamac data filter --help)\n\n");
        for (int i = 0; i < ns; i++) printf("  %-14s %s\n", subs[i].name, subs[i].help);
        printf("\nEach step reads JSONL (--input, repeatable) and writes the kept lines unchanged to --out,\n"
               "in input order, on every core; chain them, then llamac tokenize encode the result.\n");
        return 0;
    }
    return err_set(e, "data: expected filter, dedup, quality-train or quality (see llamac data --help)");
}
