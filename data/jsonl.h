/*
 * jsonl.h: documents from input files. A file ending in .jsonl holds one
 * JSON object per line and the document is one string field of it; any
 * other file is one document (its bytes as they are). JSON is parsed with
 * jansson (Debian's libjansson).
 */
#ifndef LLAMAC_DATA_JSONL_H
#define LLAMAC_DATA_JSONL_H

#include <stddef.h>
#include <stdio.h>

#include "../model/base.h"

/* fopen(path, "rb") positioned after a UTF-8 byte-order mark (EF BB BF) at
 * the start of the file, if it has one: Windows editors write it, and JSON
 * parsers refuse it as the first line's first bytes. Every reader of JSONL
 * files opens them here. NULL (errno set) if the file cannot be opened;
 * the caller closes with fclose. */
FILE *jsonl_open(const char *path);

/* jsonl_each's flags: JSONL_OBJECT refuses a line that is JSON but not an
 * object ("<file>:<line>: not a JSON object"); JSONL_ALLOW_NUL lets
 * strings hold \u0000 (jansson's JSON_ALLOW_NUL; without it such a line is
 * not valid JSON). */
enum { JSONL_OBJECT = 1, JSONL_ALLOW_NUL = 2 };

/* Called once per parsed line with its value (borrowed: freed after the
 * call) and where = "<file>:<line>" for messages; return 0 to go on, -1
 * (with e set) to stop. */
struct json_t;
typedef int (*JsonlFn)(void *ud, struct json_t *value, const char *where, Err *e);

/* Walk the lines of the JSONL file path (opened with jsonl_open), one JSON
 * value each; line ends (\n, \r\n) are cut and empty lines skipped. The
 * one reading loop of every JSONL reader (documents, chats, SFT examples,
 * preference pairs). Errors: "<file>: cannot open", "<file>:<line>: not
 * valid JSON (<jansson's words>)", flags' refusals, fn's. Returns 0 or -1
 * (the first error stops the walk). */
int jsonl_each(const char *path, int flags, JsonlFn fn, void *ud, Err *e);

/* Called once per document; return 0 to go on, -1 (with e set) to stop. */
typedef int (*DocFn)(void *ud, const char *text, size_t len, Err *e);

/* Walk the documents of path. Errors name the file and line: cannot open,
 * "<file>:<line>: not valid JSON (...)", "<file>:<line>: no string field
 * 'text'". Empty lines are skipped. Returns 0 or -1. */
int docs_each(const char *path, const char *field, DocFn fn, void *ud, Err *e);

#endif
