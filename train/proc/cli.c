/*
 * cli.c: table-driven flag parsing. "--name value" and "--name=value";
 * numbers through parse_int/parse_float (base.h), never atoi, and nothing is
 * clamped: an out-of-range value is an error naming the flag.
 */
#include "cli.h"

#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/iofile.h"

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
            char q[ERR_QUOTE_CAP];
            if (*npos >= max_pos) return err_set(e, "unexpected argument '%s'", err_quote(q, sizeof q, a, strlen(a)));
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--allow-nonfinite") == 0) { /* every command: see cli.h */
            iofile_allow_nonfinite(1);
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const CliFlag *f = find(flags, nflags, name, len);
        char q[ERR_QUOTE_CAP];
        if (!f) return err_set(e, "unknown flag '--%s' (see --help)", err_quote(q, sizeof q, name, len));
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
        const char *sv = f->kind == CLI_STR ? *(const char **)f->dst : NULL;
        /* a help text that states its own default ("(default 3)", "; default
         * all") knows better than the variable, whose 0 or NULL means
         * "derived": one default per line; an empty string prints none */
        int own = strstr(f->help, "(default") || strstr(f->help, "; default");
        if (!own) switch (f->kind) {
        case CLI_INT: snprintf(def, sizeof def, " (default %ld)", *(long *)f->dst); break;
        case CLI_FLOAT: snprintf(def, sizeof def, " (default %g)", *(double *)f->dst); break;
        case CLI_STR:
            if (sv && sv[0]) snprintf(def, sizeof def, " (default %s)", sv);
            break;
        case CLI_BOOL: snprintf(def, sizeof def, " (default %d)", *(int *)f->dst); break;
        case CLI_LIST: break;
        }
        printf("  --%-16s %s%s\n", f->name, f->help, def);
    }
    printf("  --%-16s %s\n", "allow-nonfinite", "load model files holding NaN/Inf weights (warns; expert use)");
    printf("  --%-16s %s\n", "help", "show this help");
}

char *cli_dump(const CliFlag *flags, int nflags) {
    size_t cap = 4096, n = 0;
    char *s = xmalloc(cap);
    s[0] = '\0';
    for (int i = 0; i < nflags; i++) {
        const CliFlag *f = &flags[i];
        int nv = f->kind == CLI_LIST ? ((CliList *)f->dst)->n : 1;
        for (int k = 0; k < nv; k++) {
            char line[1200];
            switch (f->kind) {
            case CLI_INT: snprintf(line, sizeof line, "%s = %ld\n", f->name, *(long *)f->dst); break;
            case CLI_FLOAT: { /* the shortest of %.15g / %.17g that reads back exactly */
                double v = *(double *)f->dst;
                char num[40];
                snprintf(num, sizeof num, "%.15g", v);
                if (strtod(num, NULL) != v) snprintf(num, sizeof num, "%.17g", v);
                snprintf(line, sizeof line, "%s = %s\n", f->name, num);
                break;
            }
            case CLI_BOOL: snprintf(line, sizeof line, "%s = %d\n", f->name, *(int *)f->dst); break;
            case CLI_STR:
                if (!*(const char **)f->dst) continue;
                snprintf(line, sizeof line, "%s = %.1000s\n", f->name, *(const char **)f->dst);
                break;
            case CLI_LIST: snprintf(line, sizeof line, "%s = %.1000s\n", f->name, ((CliList *)f->dst)->v[k]); break;
            }
            size_t l = strlen(line);
            if (n + l + 1 > cap) s = xrealloc(s, cap = 2 * (n + l + 1));
            memcpy(s + n, line, l + 1);
            n += l;
        }
    }
    return s;
}

// ----------------------------------------------------------------------------
// config files (INI through inih, Debian's libinih)

/* 1-based line of the first invalid UTF-8 sequence or NUL, or 0. */
static int utf8_bad_line(const unsigned char *s, size_t n) {
    int line = 1;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq_len(s + i, n - i);
        if (len == 0 || s[i] == 0) return line;
        if (s[i] == '\n') line++;
        i += len;
    }
    return 0;
}

typedef struct {
    CliArgs *out;
    int overflow;
} IniCtx;

static int on_ini(void *user, const char *section, const char *name, const char *value) {
    IniCtx *x = user;
    if (x->out->n >= 256) { x->overflow = 1; return 0; }
    size_t n = strlen(name) + strlen(value) + 16;
    char *w = xmalloc(n);
    if (section[0] && strcmp(section, "model") == 0) snprintf(w, n, "--set=%s=%s", name, value);
    else if (section[0] && strcmp(section, "data") == 0) snprintf(w, n, "--train=%s=%s", name, value);
    else if (section[0]) { free(w); return 0; } /* unknown sections: reported below */
    else snprintf(w, n, "--%s=%s", name, value);
    x->out->v[x->out->n++] = w;
    return 1;
}

/* The first section header other than [model] and [data], its name in name (quoted
 * for a message). A '[' line without its ']' is left to inih, which reports
 * its line: the name never runs into the next lines. */
static int has_unknown_section(const char *text, char *name, size_t cap) {
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        while (*p == ' ' || *p == '\t') p++;
        if (*p != '[') continue;
        size_t eol = strcspn(p, "\n");
        const char *q = memchr(p, ']', eol);
        if (!q) continue;
        size_t len = (size_t)(q - p - 1);
        if ((len == 5 && memcmp(p + 1, "model", 5) == 0) || (len == 4 && memcmp(p + 1, "data", 4) == 0)) continue;
        err_quote(name, cap, p + 1, len);
        return 1;
    }
    return 0;
}

int cli_config(const char *path, CliArgs *out, Err *e) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open config file", path);
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) text = xrealloc(text, cap = 2 * cap + 8192);
        size_t k = fread(text + len, 1, 4096, f);
        len += k;
        if (k < 4096) break;
    }
    fclose(f);
    text[len] = 0;
    int line = utf8_bad_line((const unsigned char *)text, len);
    if (line) {
        free(text);
        return err_set(e, "%s: line %d is not valid UTF-8 text (a config file is UTF-8 'key = value' lines)", path, line);
    }
    char sec[ERR_QUOTE_CAP];
    if (has_unknown_section(text, sec, sizeof sec)) {
        free(text);
        return err_set(e, "%s: unknown section [%s] (only [model] and [data] are known)", path, sec);
    }
    IniCtx x = {out, 0};
    int rc = ini_parse_string(text, on_ini, &x);
    free(text);
    if (x.overflow) { cli_args_free(out); return err_set(e, "%s: more than 256 settings", path); }
    if (rc > 0) { cli_args_free(out); return err_set(e, "%s: line %d: expected 'key = value'", path, rc); }
    if (rc < 0) { cli_args_free(out); return err_set(e, "%s: cannot parse", path); }
    return 0;
}

void cli_args_free(CliArgs *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    memset(a, 0, sizeof *a);
}

/* The words of the config file: string flags point into them, so they live
 * as long as the process (one config per command). */
static CliArgs config_words;

int cli_parse_all(int argc, char **argv, const CliFlag *flags, int nflags, const char **pos,
                  int max_pos, int *npos, int *help, Err *e) {
    if (argc > 0 && argv[0][0] != '-') {
        cli_args_free(&config_words);
        if (cli_config(argv[0], &config_words, e)) return -1;
        int ignored_pos, ignored_help;
        Err ce;
        if (cli_parse(config_words.n, config_words.v, flags, nflags, pos, 0, &ignored_pos, &ignored_help, &ce))
            return err_set(e, "%s: %s", argv[0], ce.msg);
        argc--;
        argv++;
    }
    return cli_parse(argc, argv, flags, nflags, pos, max_pos, npos, help, e);
}
