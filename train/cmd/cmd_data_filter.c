/*
 * cmd_data_filter.c: `llamac data filter`: Gopher quality, Gopher
 * repetition and C4 rules (data/textfilter.h) over JSONL on every core
 * (data/docstream.h). Kept lines are written unchanged in input order;
 * dropped ones optionally to --rejected with the reason added; the counts
 * (in, kept, dropped per rule: the first rule a document fails, in
 * datatrove's pipeline order) go to stdout. The threshold flags come from
 * the rule table, one per row.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/docstream.h"
#include "../../data/outfile.h"
#include "../../data/textfilter.h"
#include "../proc/cli.h"
#include "cmds.h"

#define MAX_THREADS 256

typedef struct {
    TextFilter f;
    TextScratch s[MAX_THREADS];
    FILE *out, *rej, *words; /* of[0..2].f */
    OutFile of[3];
    const char *out_path, *rej_path, *words_path;
    uint64_t kept, dropped[64];
} FilterRun;

/* --words: the document's words as a JSON array of strings, into d's buffer */
static void words_json(DocItem *d, TextScratch *s) {
    WordSplit *ws = &s->ws;
    wordsplit_run(ws, d->text, d->len);
    size_t cap = 3, n = 0;
    for (size_t i = 0; i < ws->n; i++) cap += 6 * ws->tok[i].len + 3;
    char *b = docstream_buf(d, cap);
    b[n++] = '[';
    for (size_t i = 0, k = 0; i < ws->n; i++) {
        if (ws->tok[i].space) continue;
        if (k++) b[n++] = ',';
        b[n++] = '"';
        for (uint32_t j = 0; j < ws->tok[i].len; j++) {
            unsigned char c = (unsigned char)d->text[ws->tok[i].off + j];
            if (c == '"' || c == '\\') b[n++] = '\\', b[n++] = (char)c;
            else if (c < 0x20) n += (size_t)sprintf(b + n, "\\u%04x", c);
            else b[n++] = (char)c;
        }
        b[n++] = '"';
    }
    b[n++] = ']';
    d->nbuf = n;
}

static int filter_map(void *ud, int thread, DocItem *d, Err *e) {
    (void)e;
    FilterRun *r = ud;
    d->reason = textfilter_check(&r->f, &r->s[thread], d->text, d->len);
    d->keep = d->reason < 0;
    if (r->words) words_json(d, &r->s[thread]);
    return 0;
}

static int filter_emit(void *ud, DocItem *d, Err *e) {
    FilterRun *r = ud;
    if (r->words && (fwrite(d->buf, 1, d->nbuf, r->words) != d->nbuf || fputc('\n', r->words) == EOF))
        return err_set(e, "%s: write error", r->words_path);
    if (d->keep) {
        r->kept++;
        if (fwrite(d->line, 1, d->nline, r->out) != d->nline || fputc('\n', r->out) == EOF)
            return err_set(e, "%s: write error", r->out_path);
        return 0;
    }
    r->dropped[d->reason]++;
    if (!r->rej) return 0;
    /* the line as read with "filter_reason" added before its closing brace (datatrove's metadata key) */
    size_t n = d->nline;
    while (n && d->line[n - 1] != '}') n--;
    const char *reason = TEXTFILTER_RULES[d->reason].reason;
    if (!n) fprintf(r->rej, "{\"filter_reason\": \"%s\"}\n", reason);
    else {
        size_t k = n - 1;
        while (k && (d->line[k - 1] == ' ' || d->line[k - 1] == '\t')) k--;
        int empty = k && d->line[k - 1] == '{';
        fwrite(d->line, 1, k, r->rej);
        fprintf(r->rej, "%s\"filter_reason\": \"%s\"}\n", empty ? "" : ", ", reason);
    }
    return ferror(r->rej) ? err_set(e, "%s: write error", r->rej_path) : 0;
}

/* --rules gopher,c4: which filters run */
static int parse_rules(const char *spec, TextFilter *f, Err *e) {
    for (int i = 0; i < TF_NFILTERS; i++) f->on[i] = 0;
    const char *p = spec;
    while (*p) {
        size_t n = strcspn(p, ",");
        int hit = 0;
        for (int i = 0; i < TF_NFILTERS; i++)
            if (strlen(TEXTFILTER_NAMES[i]) == n && !strncmp(p, TEXTFILTER_NAMES[i], n)) f->on[i] = hit = 1;
        if (!hit) return err_set(e, "--rules: unknown filter '%.*s' (gopher, gopher-rep, c4)", (int)n, p);
        p += n + (p[n] == ',');
    }
    return 0;
}

static void print_rule_table(void) {
    printf("\nRules, in checking order (a document is dropped by the first it fails; 0 turns a number rule off,\n"
           "-1 a C4 count):\n");
    for (int i = 0; i < TEXTFILTER_NRULES; i++) {
        const TextRule *r = &TEXTFILTER_RULES[i];
        char flag[48];
        snprintf(flag, sizeof flag, "%s%s", r->flag ? "--" : "", r->flag ? r->flag : "");
        printf("  %-10s %-29s %-28s %-7g %s\n", TEXTFILTER_NAMES[r->filter], r->reason ? r->reason : "(line rule)",
               flag, r->def, r->help);
    }
}

int data_filter(int argc, char **argv, Err *e) {
    FilterRun *r = xcalloc(1, sizeof *r);
    textfilter_defaults(&r->f);
    CliList in = {0};
    const char *out = NULL, *rej = NULL, *words = NULL, *rules = "gopher,gopher-rep,c4", *field = "text", *bad = "refuse";
    int quiet = 0;
    CliFlag flags[9 + 64];
    int nf = 0;
    flags[nf++] = (CliFlag){"input", CLI_LIST, &in, 0, 0, "JSONL input (one document a line); repeatable, read in order"};
    flags[nf++] = (CliFlag){"out", CLI_STR, &out, 0, 0, "JSONL of the kept lines, unchanged, in input order"};
    flags[nf++] = (CliFlag){"rejected", CLI_STR, &rej, 0, 0, "also write the dropped lines here, with \"filter_reason\" added"};
    flags[nf++] = (CliFlag){"rules", CLI_STR, &rules, 0, 0, "filters to run, comma-separated: gopher, gopher-rep, c4 (they run in that order)"};
    flags[nf++] = (CliFlag){"field", CLI_STR, &field, 0, 0, "JSON string field holding the text"};
    flags[nf++] = (CliFlag){"bad-utf8", CLI_STR, &bad, 0, 0, "a line that is not UTF-8: refuse (stop with an error) or skip (count it)"};
    flags[nf++] = (CliFlag){"words", CLI_STR, &words, 0, 0, "also write each document's words (what the rules count) as a JSON array a line"};
    flags[nf++] = (CliFlag){"quiet", CLI_BOOL, &quiet, 0, 0, "no progress line"};
    for (int i = 0; i < TEXTFILTER_NRULES; i++)
        if (TEXTFILTER_RULES[i].flag)
            flags[nf++] = (CliFlag){TEXTFILTER_RULES[i].flag, CLI_FLOAT, &r->f.thr[i], TEXTFILTER_RULES[i].lo,
                                    TEXTFILTER_RULES[i].hi, TEXTFILTER_RULES[i].help};
    int help = 0, npos = 0, rc = -1;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) goto done;
    if (help) {
        cli_help("llamac data filter [config.ini] --input IN.jsonl... --out OUT.jsonl [--rules gopher,gopher-rep,c4] [--RULE v ...]",
                 "Heuristic quality filters (Gopher quality and repetition, C4) as datatrove 0.10.1 applies them,\n"
                 "words split as its spaCy English tokenizer splits them; prints documents in, kept, and dropped per rule.",
                 flags, nf);
        print_rule_table();
        rc = 0;
        goto done;
    }
    if (!in.n) { rc = err_set(e, "data filter: --input is required"); goto done; }
    if (!out) { rc = err_set(e, "data filter: --out is required"); goto done; }
    if (parse_rules(rules, &r->f, e)) goto done;
    int bad_utf8;
    if (!strcmp(bad, "refuse")) bad_utf8 = DOCS_UTF8_REFUSE;
    else if (!strcmp(bad, "skip")) bad_utf8 = DOCS_UTF8_SKIP;
    else { rc = err_set(e, "--bad-utf8: expected refuse or skip, got '%s'", bad); goto done; }
    for (int i = 0; i < TEXTFILTER_NRULES; i++)
        if (TEXTFILTER_RULES[i].kind == TF_SWITCH && r->f.thr[i] != 0 && r->f.thr[i] != 1) {
            rc = err_set(e, "--%s: expected 1 (on) or 0 (off), got %g", TEXTFILTER_RULES[i].flag, r->f.thr[i]);
            goto done;
        }
    if (docstream_threads() > MAX_THREADS) { rc = err_set(e, "data filter: more than %d threads", MAX_THREADS); goto done; }
    wordsplit_init();
    r->out_path = out;
    r->rej_path = rej;
    r->words_path = words;
    const char *outs[3] = {out, rej, words};
    rc = -1;
    if (outfile_step_check(in.v, in.n, outs, 3, e)) goto done;
    if (outfile_open(&r->of[0], out, e) || (rej && outfile_open(&r->of[1], rej, e)) ||
        (words && outfile_open(&r->of[2], words, e)))
        goto done;
    r->out = r->of[0].f, r->rej = r->of[1].f, r->words = r->of[2].f;
    DocStreamOpts o = {field, 0, bad_utf8, 0, quiet ? NULL : "data filter"};
    DocStreamStats st;
    rc = docstream_run(in.v, in.n, &o, filter_map, filter_emit, r, &st, e);
    for (int i = 0; i < 3 && !rc; i++) rc = outfile_commit(&r->of[i], e);
    if (rc) goto done;
    uint64_t nd = 0;
    for (int i = 0; i < TEXTFILTER_NRULES; i++) nd += r->dropped[i];
    printf("data filter: %llu documents in, %llu kept (%.1f%%), %llu dropped", (unsigned long long)st.docs,
           (unsigned long long)r->kept, st.docs ? 100.0 * r->kept / st.docs : 0.0, (unsigned long long)nd);
    if (st.bad_utf8) printf(", %llu skipped (not valid UTF-8)", (unsigned long long)st.bad_utf8);
    printf(" in %.2f s (%.0f docs/s, %d threads)\n", st.seconds, st.seconds > 0 ? st.docs / st.seconds : 0.0,
           docstream_threads());
    for (int i = 0; i < TEXTFILTER_NRULES; i++)
        if (r->dropped[i])
            printf("  dropped %-10s %-29s %llu\n", TEXTFILTER_NAMES[TEXTFILTER_RULES[i].filter],
                   TEXTFILTER_RULES[i].reason, (unsigned long long)r->dropped[i]);
done:
    for (int i = 0; i < 3; i++) outfile_drop(&r->of[i]);
    for (int i = 0; i < MAX_THREADS; i++) textfilter_scratch_free(&r->s[i]);
    free(r);
    return rc;
}
