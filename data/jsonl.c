/*
 * jsonl.c: see jsonl.h.
 */
#include "jsonl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int whole_file(const char *path, DocFn fn, void *ud, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 > cap) buf = xrealloc(buf, cap = 2 * cap + 65536);
        size_t k = fread(buf + len, 1, 65536, f);
        len += k;
        if (k < 65536) break;
    }
    int bad = ferror(f);
    fclose(f);
    int rc = bad ? err_set(e, "%s: read error", path) : fn(ud, buf, len, e);
    free(buf);
    return rc;
}

FILE *jsonl_open(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    int c = getc(f);
    if (c != 0xEF) { /* the usual case: one byte back, which works on pipes too */
        if (c != EOF) ungetc(c, f);
        return f;
    }
    if (getc(f) == 0xBB && getc(f) == 0xBF) return f;
    /* EF without BB BF: not a BOM, and not a JSON line's start either; from
     * the start again so the parser names what it found (a pipe cannot
     * rewind, and its first line then fails on what follows) */
    if (fseek(f, 0, SEEK_SET) != 0) clearerr(f);
    return f;
}

int jsonl_each(const char *path, int flags, JsonlFn fn, void *ud, Err *e) {
    FILE *f = jsonl_open(path);
    if (!f) return err_set(e, "%s: cannot open", path);
    char *line = NULL, where[600];
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        json_error_t je;
        json_t *obj = json_loadb(line, (size_t)n, flags & JSONL_ALLOW_NUL ? JSON_ALLOW_NUL : 0, &je);
        char jq[2 * ERR_QUOTE_CAP]; /* jansson quotes the text near the error */
        if (!obj)
            rc = err_set(e, "%s: not valid JSON (%s)", where, err_quote(jq, sizeof jq, je.text, strlen(je.text)));
        else if ((flags & JSONL_OBJECT) && !json_is_object(obj))
            rc = err_set(e, "%s: not a JSON object", where);
        else
            rc = fn(ud, obj, where, e);
        json_decref(obj);
    }
    free(line);
    fclose(f);
    return rc;
}

typedef struct {
    const char *field;
    DocFn fn;
    void *ud;
} DocWalk;

static int doc_line(void *ud, json_t *obj, const char *where, Err *e) {
    const DocWalk *w = ud;
    json_t *v = json_is_object(obj) ? json_object_get(obj, w->field) : NULL;
    if (!v || !json_is_string(v)) return err_set(e, "%s: no string field '%s'", where, w->field);
    return w->fn(w->ud, json_string_value(v), json_string_length(v), e);
}

int docs_each(const char *path, const char *field, DocFn fn, void *ud, Err *e) {
    if (!ends_with(path, ".jsonl")) return whole_file(path, fn, ud, e);
    DocWalk w = {field, fn, ud};
    return jsonl_each(path, JSONL_ALLOW_NUL, doc_line, &w, e);
}
