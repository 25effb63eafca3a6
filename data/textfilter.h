/*
 * textfilter.h: the heuristic quality rules of Gopher (Rae et al. 2021,
 * Table A1 and section A.1.1) and C4 (Raffel et al. 2020, section 2.2), as
 * Hugging Face datatrove 0.10.1 implements them (GopherQualityFilter,
 * GopherRepetitionFilter, C4QualityFilter), so that the same documents and
 * thresholds keep the same documents, dropped for the same reason.
 *
 * One table, TEXTFILTER_RULES, lists every check: its filter, its name
 * (datatrove's drop reason), its threshold flag and default, and what it
 * means; the command's flags, --help and report are built from it. Checks
 * run in the table's order, which is datatrove's order inside each filter
 * (filters run gopher, gopher-rep, c4: a FineWeb-style pipeline), and a
 * document is dropped by the first check it fails. Words are spaCy English
 * tokens (wordsplit.h), as datatrove counts them.
 */
#ifndef LLAMAC_DATA_TEXTFILTER_H
#define LLAMAC_DATA_TEXTFILTER_H

#include <stddef.h>

#include "wordsplit.h"

enum { TF_GOPHER = 0, TF_GOPHER_REP = 1, TF_C4 = 2, TF_NFILTERS = 3 };

/* How a rule's threshold reads: a number (a count, length or fraction), or a
 * switch (1 on, 0 off) for rules without one. */
enum { TF_NUM = 0, TF_SWITCH = 1 };

typedef struct TextRule {
    int filter;          /* TF_GOPHER, ... */
    const char *reason;  /* datatrove's drop reason, e.g. "gopher_short_doc" */
    const char *flag;    /* threshold flag without "--", e.g. "gopher-min-words" */
    int kind;            /* TF_NUM or TF_SWITCH */
    double def;          /* datatrove's default */
    double lo, hi;       /* accepted range of the flag */
    const char *help;    /* one line */
} TextRule;

extern const TextRule TEXTFILTER_RULES[];
extern const int TEXTFILTER_NRULES;
extern const char *const TEXTFILTER_NAMES[TF_NFILTERS]; /* "gopher", "gopher-rep", "c4" */

/* The settings of a run: which filters are on, and each rule's threshold
 * (thr[i] for TEXTFILTER_RULES[i]; a number rule is off at 0 where datatrove's
 * "falsy" threshold turns it off; C4's counts are off at -1, as datatrove's). */
typedef struct TextFilter {
    int on[TF_NFILTERS];
    double thr[64];
} TextFilter;

/* Defaults: every filter on, datatrove's thresholds. */
void textfilter_defaults(TextFilter *f);

/* Per-thread scratch (zeroed to start, textfilter_scratch_free at the end). */
typedef struct TextScratch {
    WordSplit ws, line;
    void *buf;
    size_t cap;
} TextScratch;

/* Run the enabled filters on text[0..len) (valid UTF-8). Returns -1 if the
 * document is kept, or the index in TEXTFILTER_RULES of the first check it
 * fails. wordsplit_init must have run. */
int textfilter_check(const TextFilter *f, TextScratch *s, const char *text, size_t len);

void textfilter_scratch_free(TextScratch *s);

#endif
