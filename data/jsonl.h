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

/* Called once per document; return 0 to go on, -1 (with e set) to stop. */
typedef int (*DocFn)(void *ud, const char *text, size_t len, Err *e);

/* Walk the documents of path. Errors name the file and line: cannot open,
 * "<file>:<line>: not valid JSON (...)", "<file>:<line>: no string field
 * 'text'". Empty lines are skipped. Returns 0 or -1. */
int docs_each(const char *path, const char *field, DocFn fn, void *ud, Err *e);

#endif
