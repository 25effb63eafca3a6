/*
 * cli.h: flag tables for the subcommands. A subcommand declares its flags as
 * a table of CliFlag rows (name, kind, destination, range, help); cli_parse
 * fills the destinations with strict parsing and range checks, collects
 * positional arguments, and cli_help prints the table. Errors name the flag.
 */
#ifndef LLAMAC_TRAIN_CLI_H
#define LLAMAC_TRAIN_CLI_H

#include "../../model/base.h"

typedef enum { CLI_INT, CLI_FLOAT, CLI_STR, CLI_BOOL, CLI_LIST } CliKind;

typedef struct CliFlag {
    const char *name;   /* without the leading "--" */
    CliKind kind;
    void *dst;          /* long*, double*, const char**, int* (BOOL), CliList* */
    double lo, hi;      /* range for INT and FLOAT */
    const char *help;
} CliFlag;

/* Repeatable string flag (e.g. --set key=value). */
typedef struct CliList {
    const char *v[32];
    int n;
} CliList;

/* Parse argv[0..argc) (the words after the subcommand). Positionals go to
 * pos[0..*npos) up to max_pos. --help / -h sets *help. --allow-nonfinite,
 * known to every command, lets the model loaders take NaN/Inf weights with
 * a warning (iofile_allow_nonfinite). Returns 0 or -1. */
int cli_parse(int argc, char **argv, const CliFlag *flags, int nflags, const char **pos,
              int max_pos, int *npos, int *help, Err *e);

/* Words read from a config file, owned. */
typedef struct CliArgs {
    char *v[256];
    int n;
} CliArgs;

/* Read an INI config file (key = value, # comments; keys are the flag names;
 * keys under [model] are model fields and become --set key=value; keys under
 * [data] are pretraining sources, name = SHARDS:WEIGHT becoming
 * --train name=SHARDS:WEIGHT) into
 * "--key=value" words. Errors: cannot open, not valid UTF-8 (with the line),
 * syntax error (with the line), more than 256 keys. Returns 0 or -1. */
int cli_config(const char *path, CliArgs *out, Err *e);
void cli_args_free(CliArgs *a);

/* The usual entry of a subcommand: if argv[0] is not a flag it names a
 * config file, whose values are parsed first; then the flags, which win. */
int cli_parse_all(int argc, char **argv, const CliFlag *flags, int nflags, const char **pos,
                  int max_pos, int *npos, int *help, Err *e);

/* The flags' current values as config-file text, one "key = value" line
 * each (lists repeat the key; unset strings are left out): what a checkpoint
 * records of its run, and a valid config file for cli_config. Caller frees. */
char *cli_dump(const CliFlag *flags, int nflags);

/* Print "usage" then one line per flag with its default, once: none where
 * the help text states its own ("(default 3)", "; default all") or the
 * string default is empty. */
void cli_help(const char *usage, const char *about, const CliFlag *flags, int nflags);

#endif
