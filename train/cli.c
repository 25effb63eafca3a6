/*
 * cli.c: table-driven flag parsing. "--name value" and "--name=value";
 * numbers through parse_int/parse_float (base.h), never atoi, and nothing is
 * clamped: an out-of-range value is an error naming the flag.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const CliFlag *find(const CliFlag *flags, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0) return &flags[i];
    return NULL;
}

int cli_parse(int argc, char **argv, const CliFlag *flags, int nflags, const char **pos,
              int max_pos, int *npos, int *help, Err *e) {
    *npos = 0;
    *help = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (*npos >= max_pos) return err_set(e, "unexpected argument '%s'", a);
            pos[(*npos)++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const CliFlag *f = find(flags, nflags, name, len);
        if (!f) return err_set(e, "unknown flag '--%.*s' (see --help)", (int)len, name);
        char what[64];
        snprintf(what, sizeof what, "--%s", f->name);
        if (f->kind == CLI_BOOL && !eq) {
            *(int *)f->dst = 1;
            continue;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc) return err_set(e, "%s: missing value", what);
            val = argv[++i];
        }
        switch (f->kind) {
        case CLI_INT: {
            long v;
            if (parse_int(val, (long)f->lo, (long)f->hi, &v, what, e)) return -1;
            *(long *)f->dst = v;
            break;
        }
        case CLI_FLOAT: {
            double v;
            if (parse_float(val, f->lo, f->hi, &v, what, e)) return -1;
            *(double *)f->dst = v;
            break;
        }
        case CLI_STR:
            *(const char **)f->dst = val;
            break;
        case CLI_BOOL: {
            long v;
            if (parse_int(val, 0, 1, &v, what, e)) return -1;
            *(int *)f->dst = (int)v;
            break;
        }
        case CLI_LIST: {
            CliList *l = f->dst;
            if (l->n >= 32) return err_set(e, "%s: given more than 32 times", what);
            l->v[l->n++] = val;
            break;
        }
        }
    }
    return 0;
}

void cli_help(const char *usage, const char *about, const CliFlag *flags, int nflags) {
    printf("usage: %s\n\n%s\n\nflags:\n", usage, about);
    for (int i = 0; i < nflags; i++) {
        const CliFlag *f = &flags[i];
        char def[64] = "";
        switch (f->kind) {
        case CLI_INT: snprintf(def, sizeof def, " (default %ld)", *(long *)f->dst); break;
        case CLI_FLOAT: snprintf(def, sizeof def, " (default %g)", *(double *)f->dst); break;
        case CLI_STR:
            if (*(const char **)f->dst) snprintf(def, sizeof def, " (default %s)", *(const char **)f->dst);
            break;
        case CLI_BOOL: snprintf(def, sizeof def, " (default %d)", *(int *)f->dst); break;
        case CLI_LIST: break;
        }
        printf("  --%-16s %s%s\n", f->name, f->help, def);
    }
    printf("  --%-16s %s\n", "help", "show this help");
}
