/*
 * shardset.c: expanding a dataset name into shard paths and opening them
 * (shardset.h). Directory listings and glob matches are sorted by name
 * (strcmp), so the order never depends on the file system.
 */
#include "shardset.h"

#include <dirent.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void shardset_name(char *out, size_t cap, const char *base, int k) {
    size_t n = strlen(base);
    if (n >= 4 && !strcmp(base + n - 4, ".bin")) n -= 4;
    snprintf(out, cap, "%.*s_%06d.bin", (int)n, base, k);
}

static void push(char ***paths, int *n, const char *p) {
    *paths = xrealloc(*paths, (size_t)(*n + 1) * sizeof **paths);
    size_t len = strlen(p);
    (*paths)[*n] = xmalloc(len + 1);
    memcpy((*paths)[*n], p, len + 1);
    (*n)++;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int from_dir(const char *dir, char ***paths, int *n, Err *e) {
    DIR *d = opendir(dir);
    if (!d) return err_set(e, "%s: cannot open the directory", dir);
    char **names = NULL;
    int k = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".bin")) continue;
        char p[SHARD_PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (is_file(p)) push(&names, &k, p);
    }
    closedir(d);
    if (!k) return err_set(e, "%s: no *.bin shard in this directory", dir);
    qsort(names, (size_t)k, sizeof *names, by_name);
    for (int i = 0; i < k; i++) {
        push(paths, n, names[i]);
        free(names[i]);
    }
    free(names);
    return 0;
}

int shardset_expand(const char *spec, char ***paths, int *n, Err *e) {
    struct stat sb;
    if (stat(spec, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return from_dir(spec, paths, n, e);
        push(paths, n, spec);
        return 0;
    }
    if (strpbrk(spec, "*?[")) {
        glob_t g;
        int rc = glob(spec, 0, NULL, &g); /* glob sorts its matches (no GLOB_NOSORT) */
        if (rc != 0) {
            if (rc != GLOB_NOMATCH) globfree(&g);
            return err_set(e, "%s: matches no file", spec);
        }
        qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, by_name); /* strcmp, not the locale's order */
        for (size_t i = 0; i < g.gl_pathc; i++) push(paths, n, g.gl_pathv[i]);
        globfree(&g);
        return 0;
    }
    char p[SHARD_PATH_MAX * 2];
    int k = 0;
    for (;; k++) {
        shardset_name(p, sizeof p, spec, k);
        if (!is_file(p)) break;
        push(paths, n, p);
    }
    if (!k) return err_set(e, "%s: cannot open (no shard, directory, pattern or split NAME_000000.bin of that name)", spec);
    return 0;
}

int shardset_open(ShardSet *set, const char *const *specs, int nspecs, const char *flag, Err *e) {
    memset(set, 0, sizeof *set);
    if (nspecs == 0) return err_set(e, "%s: no shard given", flag);
    char **paths = NULL;
    int np = 0, rc = 0;
    for (int i = 0; i < nspecs && !rc; i++) rc = shardset_expand(specs[i], &paths, &np, e);
    if (!rc) {
        set->s = xcalloc((size_t)np, sizeof *set->s);
        set->p = xcalloc((size_t)np, sizeof *set->p);
    }
    for (int i = 0; i < np && !rc; i++) {
        if ((rc = shard_open(&set->s[i], paths[i], e))) break;
        set->p[i] = &set->s[i];
        set->n++;
        if (set->s[i].tokenizer_id != set->s[0].tokenizer_id || set->s[i].vocab != set->s[0].vocab)
            rc = err_set(e, "%s: made by a different tokenizer than %s", paths[i], paths[0]);
    }
    for (int i = 0; i < np; i++) free(paths[i]);
    free(paths);
    return rc;
}

void shardset_close(ShardSet *set) {
    for (int i = 0; i < set->n; i++) shard_close(&set->s[i]);
    free(set->s);
    free(set->p);
    memset(set, 0, sizeof *set);
}
