/*
 * outfile.c: outputs that replace their path only on success (outfile.h).
 */
#include "outfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "docstream.h"

int outfile_distinct(const char *const *paths, int n, Err *e) {
    for (int i = 0; i < n; i++) {
        if (!paths[i]) continue;
        struct stat si;
        int has_i = stat(paths[i], &si) == 0;
        for (int j = 0; j < i; j++) {
            if (!paths[j]) continue;
            struct stat sj;
            int same = strcmp(paths[i], paths[j]) == 0 ||
                       (has_i && stat(paths[j], &sj) == 0 && si.st_dev == sj.st_dev && si.st_ino == sj.st_ino);
            if (same) return err_set(e, "%s and %s are the same file: an output must not be an input or another output",
                                     paths[j], paths[i]);
        }
    }
    return 0;
}

int outfile_step_check(const char *const *ins, int nin, const char *const *outs, int nout, Err *e) {
    const char *all[40];
    LC_ASSERT(nin >= 0 && nin <= 32 && nout >= 0 && nout <= 8);
    for (int i = 0; i < nin; i++) all[i] = ins[i];
    for (int i = 0; i < nout; i++) all[nin + i] = outs[i];
    return docstream_require_jsonl(ins, nin, e) || outfile_distinct(all, nin + nout, e) ? -1 : 0;
}

int outfile_open(OutFile *o, const char *path, Err *e) {
    memset(o, 0, sizeof *o);
    size_t n = strlen(path);
    o->path = xmalloc(n + 1);
    memcpy(o->path, path, n + 1);
    o->tmp = xmalloc(n + 5);
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmp", 5);
    if (!(o->f = fopen(o->tmp, "wb"))) {
        int rc = err_set(e, "%s: cannot create (%s)", o->tmp, strerror(errno));
        outfile_drop(o);
        return rc;
    }
    return 0;
}

int outfile_commit(OutFile *o, Err *e) {
    if (!o->f) return 0;
    int bad = fflush(o->f) != 0 || ferror(o->f);
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (bad) {
        remove(o->tmp);
        return err_set(e, "%s: write error", o->path);
    }
    if (rename(o->tmp, o->path)) {
        int rc = err_set(e, "%s: cannot rename %s over it (%s)", o->path, o->tmp, strerror(errno));
        remove(o->tmp);
        return rc;
    }
    return 0;
}

void outfile_drop(OutFile *o) {
    if (o->f) {
        fclose(o->f);
        remove(o->tmp);
    }
    free(o->path);
    free(o->tmp);
    memset(o, 0, sizeof *o);
}
