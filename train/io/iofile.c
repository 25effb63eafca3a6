/*
 * iofile.c: what the model-file formats share (contract in iofile.h):
 * output directories written under a temporary name and renamed into place,
 * JSON written and fsync'd, the shortest text of a float, and the check of
 * every loaded tensor for NaN and Inf.
 */
#include "iofile.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

/* dir without trailing slashes into out */
static void strip_slashes(const char *dir, char *out, size_t n) {
    snprintf(out, n, "%s", dir);
    for (size_t k = strlen(out); k > 1 && out[k - 1] == '/'; k--) out[k - 1] = 0;
}
/* Set once at start-up from the command line (cli_parse), read by every
 * loader: the one process-wide switch, so no loader signature carries it. */
static int allow_nonfinite;

void iofile_allow_nonfinite(int on) { allow_nonfinite = on; }

/* The verdict on a tensor found holding non-finite values (what: "holds 3
 * non-finite values (NaN or Inf) of 64"): a warning under
 * --allow-nonfinite, else the error. */
static int nonfinite(const char *path, const char *name, const char *what, Err *e) {
    if (allow_nonfinite) {
        fprintf(stderr, "llamac: warning: %s: tensor %s %s; loaded anyway (--allow-nonfinite)\n", path, name, what);
        return 0;
    }
    return err_set(e, "%s: tensor %s %s (--allow-nonfinite loads it anyway)", path, name, what);
}

int iofile_check_finite(const char *path, const char *name, const float *x, size_t n, Err *e) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(x[i]);
    if (bad == 0) return 0;
    char what[96];
    snprintf(what, sizeof what, "holds %zu non-finite values (NaN or Inf) of %zu", bad, n);
    return nonfinite(path, name, what, e);
}

int iofile_nonfinite_rows(const char *path, const char *name, size_t bad, size_t rows, Err *e) {
    char what[128];
    snprintf(what, sizeof what, "has %zu of %zu rows with non-finite values (a NaN or Inf block scale)", bad, rows);
    return nonfinite(path, name, what, e);
}

/* The shortest decimal that reads back as f, as a double, so config.json
 * says 1e-05 rather than 9.99999974737875e-06. */
double iofile_short_real(float f) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}
static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_tree(const char *p) { nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int fsync_path(const char *p) {
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}
/* 1 if dir exists and holds anything but . and .. */
static int dir_nonempty(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    struct dirent *de;
    int n = 0;
    while (!n && (de = readdir(dp))) n = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(dp);
    return n;
}
int iofile_dir_begin(const char *dir, int force, char *tmp, size_t n, Err *e) {
    char d[4096];
    strip_slashes(dir, d, sizeof d);
    struct stat st;
    int exists = stat(d, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) return err_set(e, "%s: exists and is not a directory", d);
    if (exists && !force && dir_nonempty(d))
        return err_set(e, "%s: directory exists and is not empty (--force replaces it)", d);
    snprintf(tmp, n, "%s.tmp.%ld", d, (long)getpid());
    rm_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return err_set(e, "%s: cannot create: %s", tmp, strerror(errno));
    return 0;
}
void iofile_dir_abort(const char *tmp) { rm_tree(tmp); }

int iofile_dir_commit(const char *dir, const char *tmp, Err *e) {
    char d[4096], old[4200];
    strip_slashes(dir, d, sizeof d);
    snprintf(old, sizeof old, "%s.old.%ld", d, (long)getpid());
    if (fsync_path(tmp) != 0) {
        err_set(e, "%s: fsync failed: %s", tmp, strerror(errno));
        goto fail;
    }
    /* into place: an empty directory is replaced by rename itself; a full
     * one (force) is moved aside first and removed after */
    int moved = 0;
    if (dir_nonempty(d)) {
        if (rename(d, old) != 0) {
            err_set(e, "%s: cannot move aside: %s", d, strerror(errno));
            goto fail;
        }
        moved = 1;
    }
    if (rename(tmp, d) != 0) {
        err_set(e, "%s: cannot rename %s into place: %s", d, tmp, strerror(errno));
        if (moved) rename(old, d);
        goto fail;
    }
    if (moved) rm_tree(old);
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", d);
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    fsync_path(slash ? (parent[0] ? parent : "/") : ".");
    return 0;
fail:
    rm_tree(tmp);
    return -1;
}
int iofile_json_write(const char *path, const json_t *j, Err *e) {
    FILE *f = fopen(path, "w");
    int ok = f && json_dumpf(j, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) == 0 &&
             fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? 0 : err_set(e, "%s: cannot write: %s", path, strerror(errno));
}
