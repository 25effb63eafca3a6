/*
 * docstream.h: documents from JSONL or text files through a function on
 * every core, in bounded memory, with results handed back in input order
 * (DESIGN.md "Pretraining data": every step between raw text and the
 * loader streams, and output compared bit for bit keeps input order).
 *
 * The stream reads whole lines into a batch of about batch_bytes or 16384
 * documents, whichever comes first (at least one line: a longer line makes
 * the batch grow to hold it), parses and maps
 * the batch's documents in parallel (OpenMP, dynamic schedule: documents
 * differ in length), then emits them one by one in input order on the
 * calling thread, and reads the next batch. Memory is the batch plus what
 * map keeps per slot (docstream_buf), whatever the corpus size.
 *
 * A file ending in .jsonl holds one JSON object per line whose string field
 * `field` is the document (empty lines skipped); any other file is one
 * document (its bytes), as docs_each (jsonl.h) reads them.
 */
#ifndef LLAMAC_DATA_DOCSTREAM_H
#define LLAMAC_DATA_DOCSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"

/* What to do with a document that is not well-formed UTF-8 (for JSONL, a
 * line whose raw bytes are not: JSON strings must be UTF-8). */
enum { DOCS_UTF8_REFUSE = 0, DOCS_UTF8_SKIP = 1 };

typedef struct DocStreamOpts {
    const char *field;  /* JSONL field holding the text ("text") */
    size_t batch_bytes; /* raw bytes per batch (0: 16 MiB) */
    int bad_utf8;       /* DOCS_UTF8_REFUSE (an error naming file:line) or DOCS_UTF8_SKIP (counted) */
    int need_json;      /* 1: keep each JSONL line's parsed object for map/emit (DocItem.json) */
    const char *progress; /* label of a progress line on stderr (MB/s, docs, ETA), or NULL: none */
} DocStreamOpts;

/* One document as map and emit see it. text/len: the document (valid until
 * emit returns); line/nline: the JSONL line as read (without its line end;
 * the document's bytes for a text file), to write back unchanged; index:
 * 0-based number of the document in the whole input (skipped ones
 * included); where: "<file>:<line>". The result fields are the map's, read
 * by emit: keep, reason, score and buf (docstream_buf). */
typedef struct DocItem {
    const char *text, *line;
    size_t len, nline;
    uint64_t index;
    const char *where;
    struct json_t *json; /* the parsed line (need_json), borrowed */
    /* results: written by map, read by emit */
    int keep, reason;
    double score;
    uint64_t u64;
    void *buf;           /* docstream_buf's memory, kept across batches */
    size_t nbuf;         /* bytes of buf in use: map's to set */
    /* private */
    size_t cap;
    int skip;            /* bad UTF-8, skipped: neither map nor emit see it */
    int bad_json;
} DocItem;

/* map: called in parallel (thread in [0, nthreads)) once per document; it
 * may only write its DocItem's result fields and per-thread state of ud.
 * Returns 0, or -1 with e (e is the item's own: the stream reports the
 * first error in input order). emit: called on the calling thread in
 * input order after the batch is mapped; 0 or -1 with e stops the stream.
 * Either may be NULL. */
typedef int (*DocMapFn)(void *ud, int thread, DocItem *d, Err *e);
typedef int (*DocEmitFn)(void *ud, DocItem *d, Err *e);

/* Counts of a run. */
typedef struct DocStreamStats {
    uint64_t docs;      /* documents read (mapped and emitted) */
    uint64_t bad_utf8;  /* skipped for bad UTF-8 (DOCS_UTF8_SKIP) */
    uint64_t bytes;     /* input bytes read */
    double seconds;
} DocStreamStats;

/* Stream the files paths[0..n) in order. Errors (-1 with e): "<file>:
 * cannot open", "<file>:<line>: not valid JSON (...)", "<file>:<line>: no
 * string field 'text'", "<file>:<line>: not valid UTF-8 (byte N)" (with
 * DOCS_UTF8_REFUSE), map's and emit's. Returns 0 or -1; st (may be NULL)
 * gets the counts either way. */
/* -1 with e unless every path ends in .jsonl: for steps that copy input
 * lines to a JSONL output unchanged (a text file's document is not a line). */
int docstream_require_jsonl(const char *const *paths, int n, Err *e);

int docstream_run(const char *const *paths, int n, const DocStreamOpts *o, DocMapFn map, DocEmitFn emit, void *ud,
                  DocStreamStats *st, Err *e);

/* Grow d's result buffer to at least bytes and return it (its contents
 * are kept; the stream frees it at the end). For map. */
void *docstream_buf(DocItem *d, size_t bytes);

/* Offset of the first byte of s[0..n) that does not start a well-formed
 * UTF-8 character, or n if all of it is well-formed. */
size_t docstream_utf8_check(const char *s, size_t n);

/* The number of threads map runs on (OpenMP's, 1 without it). */
int docstream_threads(void);

#endif
