/*
 * test_textfilter.c: the heuristic quality filters (data/textfilter.h) on
 * hand-made documents at each rule's threshold (one side kept, the other
 * dropped with the rule's reason), the spaCy-English word splitting
 * (data/wordsplit.h) on the cases its special-case matcher and affix rules
 * decide, and `llamac data filter` end to end: counts, input order,
 * --rejected, and each bad input's one error line. The datatrove comparison
 * on real text is scripts/test_filters_ref.py (make test-ref).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/textfilter.h"
#include "test.h"
#include "tests.h"

static int rule_index(const char *reason) {
    for (int i = 0; i < TEXTFILTER_NRULES; i++)
        if (TEXTFILTER_RULES[i].reason && !strcmp(TEXTFILTER_RULES[i].reason, reason)) return i;
    LC_FATAL("no rule %s", reason);
}

/* text repeated n times into buf (with an optional prefix) */
static char *rep(char *buf, const char *pre, const char *unit, int n) {
    strcpy(buf, pre);
    for (int i = 0; i < n; i++) strcat(buf, unit);
    return buf;
}

/* unit appended n times to buf */
static char *cat(char *buf, const char *unit, int n) {
    for (int i = 0; i < n; i++) strcat(buf, unit);
    return buf;
}

/* the reason textfilter_check gives (or "kept") with only filter `only` on */
static const char *verdict(TextFilter *f, int only, const char *text) {
    static TextScratch s;
    for (int i = 0; i < TF_NFILTERS; i++) f->on[i] = i == only;
    int r = textfilter_check(f, &s, text, strlen(text));
    return r < 0 ? "kept" : TEXTFILTER_RULES[r].reason;
}

#define VERDICT(f, only, text, want)                                                                    \
    do {                                                                                                \
        const char *got_ = verdict(f, only, text);                                                      \
        EXPECT(!strcmp(got_, want), "%s: got %s, expected %s", #text, got_, want);                      \
    } while (0)

void textfilter_gopher(void) {
    wordsplit_init();
    static char b[1 << 15];
    TextFilter f;
    textfilter_defaults(&f);
    /* 50 non-symbol words keep, 49 drop (stop words "the" and "and" in both) */
    VERDICT(&f, TF_GOPHER, rep(b, "the and ", "word ", 48), "kept");
    VERDICT(&f, TF_GOPHER, rep(b, "the and ", "word ", 47), "gopher_short_doc");
    f.thr[rule_index("gopher_short_doc")] = 0; /* the word count off for the ratio rules below */
    /* '#' per word: 5 of 50 words is 0.1, not above; 6 of 51 is */
    VERDICT(&f, TF_GOPHER, cat(rep(b, "the and ", "word ", 43), "# ", 5), "kept");
    VERDICT(&f, TF_GOPHER, cat(rep(b, "the and ", "word ", 43), "# ", 6), "gopher_too_many_hashes");
    /* mean word length: "ab" words pull it under 3 */
    VERDICT(&f, TF_GOPHER, rep(b, "the and ", "ab ", 10), "gopher_below_avg_threshold");
    VERDICT(&f, TF_GOPHER, rep(b, "the and ", "abcdefghijkl ", 10), "gopher_above_avg_threshold");
    /* bullet lines: 9 of 10 is 0.9, not above; 10 of 10 is */
    f.thr[rule_index("gopher_below_alpha_threshold")] = 0; /* each "-" is a word without a letter */
    VERDICT(&f, TF_GOPHER, rep(b, "the and word\n", "- word word word\n", 9), "kept");
    VERDICT(&f, TF_GOPHER, rep(b, "- the and word\n", "- word word word\n", 9), "gopher_too_many_bullets");
    f.thr[rule_index("gopher_below_alpha_threshold")] = 0.8;
    /* lines ending in an ellipsis: 3 of 10 kept, 4 of 10 dropped (and few enough "..." per word) */
    VERDICT(&f, TF_GOPHER, cat(rep(b, "the and word word word\n", "word word word word word word word...\n", 3),
                               "word word word word word word word.\n", 6), "kept");
    VERDICT(&f, TF_GOPHER, cat(rep(b, "the and word word word\n", "word word word word word word word...\n", 4),
                               "word word word word word word word.\n", 5), "gopher_too_many_end_ellipsis");
    /* words with a letter: 40 of 50 is 0.8, not below; 39 of 50 is */
    VERDICT(&f, TF_GOPHER, cat(rep(b, "the and ", "word ", 38), "1234 ", 10), "kept");
    VERDICT(&f, TF_GOPHER, cat(rep(b, "the and ", "word ", 37), "1234 ", 11), "gopher_below_alpha_threshold");
    /* stop words are case-sensitive and counted once each */
    VERDICT(&f, TF_GOPHER, rep(b, "the the The and ", "word ", 10), "kept");
    VERDICT(&f, TF_GOPHER, rep(b, "the the The And ", "word ", 10), "gopher_enough_stop_words");
}

void textfilter_repetition(void) {
    wordsplit_init();
    static char b[1 << 15];
    TextFilter f;
    textfilter_defaults(&f);
    VERDICT(&f, TF_GOPHER_REP, "", "empty");
    TextScratch fresh; /* a thread's first document may be empty: nothing allocated yet */
    memset(&fresh, 0, sizeof fresh);
    EXPECT(textfilter_check(&f, &fresh, "", 0) == rule_index("empty"), "empty document on fresh scratch");
    textfilter_scratch_free(&fresh);
    /* 10 lines, 3 repeats of the first: 0.3 is not above 0.3; 4 are (n-gram rules off: the lines repeat words) */
    f.thr[rule_index("dup_line_char_frac")] = 0;
    for (int i = rule_index("top_2_gram"); i <= rule_index("duplicated_10_n_grams"); i++) f.thr[i] = 0;
    for (int i = 0; i < 7; i++) sprintf(b + 14 * i, "line %08d\n", i + 1);
    rep(b + strlen(b), "", "line 00000001\n", 3);
    VERDICT(&f, TF_GOPHER_REP, b, "kept");
    sprintf(b + 13 * 0, "line 00000001");
    b[13] = '\n';
    for (int i = 1; i < 6; i++) sprintf(b + 14 * i, "line %08d\n", i + 1);
    rep(b + 14 * 6, "", "line 00000001\n", 4);
    VERDICT(&f, TF_GOPHER_REP, b, "dup_line_frac");
    textfilter_defaults(&f);
    /* paragraphs: the same at blank lines */
    VERDICT(&f, TF_GOPHER_REP, "alpha beta\n\nalpha beta\n\nalpha beta\n\ngamma delta epsilon zeta eta theta", "dup_para_frac");
    VERDICT(&f, TF_GOPHER_REP, "alpha beta gamma delta\n\nalpha beta gamma delta\n\nepsilon zeta eta\n\niota kappa",
            "dup_para_char_frac");
    /* the most frequent 2-gram: "ab cd" (5 characters) 9 times in 228 is 0.197, 10 times in 240 is 0.208 */
    f.thr[rule_index("dup_line_char_frac")] = 0;
    f.thr[rule_index("dup_line_frac")] = 0;
    for (int n = 9; n <= 10; n++) {
        b[0] = 0;
        for (int i = 0; i < n; i++) sprintf(b + strlen(b), "ab cd w%02d x%02d y%02d z%02d\n", i, i, i, i);
        int rows = (240 - (int)strlen(b)) / 6;
        for (int i = 0; i < rows; i++) sprintf(b + strlen(b), "q%03d\n", i);
        VERDICT(&f, TF_GOPHER_REP, b, n == 9 ? "kept" : "top_2_gram");
    }
    /* a repeated 10-gram is also a repeated 5..9-gram: the 5-gram rule reports it (top n-grams off) */
    textfilter_defaults(&f);
    for (int i = rule_index("top_2_gram"); i <= rule_index("top_4_gram"); i++) f.thr[i] = 0;
    VERDICT(&f, TF_GOPHER_REP,
            "one two three four five six seven eight nine ten and then one two three four five six seven eight nine ten "
            "with many other words that are all different from each other so that the fraction stays low enough here",
            "duplicated_5_n_grams");
}

void textfilter_c4(void) {
    wordsplit_init();
    TextFilter f;
    textfilter_defaults(&f);
    /* five sentences kept, four dropped ("e." style single letters are one token in spaCy: words here) */
    VERDICT(&f, TF_C4, "One two three. Four five six. Seven eight nine! Ten eleven twelve? Last line here.", "kept");
    VERDICT(&f, TF_C4, "One two three. Four five six. Seven eight nine! Ten eleven twelve? Last line here", "too_few_sentences");
    /* lines too short, without terminal punctuation, with javascript or a policy do not count */
    VERDICT(&f, TF_C4, "The cat sat. The dog ran. The sun set. The moon rose.\nToo short.\nEnable javascript now please.\n"
                       "We use cookies here ok.\nNo end to this line", "too_few_sentences");
    VERDICT(&f, TF_C4, "The cat sat. The dog ran. The sun set. The moon rose. Birds sang.\nToo short.\nEnable javascript now please.",
            "kept");
    VERDICT(&f, TF_C4, "Lorem ipsum dolor sit amet.", "lorem_ipsum");
    VERDICT(&f, TF_C4, "No lorem ipsum here as the line has no end", "too_few_sentences");
    VERDICT(&f, TF_C4, "The code is { x }. One two three. Four five six. A b c. D e f.", "curly_bracket");
    f.thr[rule_index("too_few_sentences")] = -1;
    VERDICT(&f, TF_C4, "hello", "kept");
}

void textfilter_words(void) {
    wordsplit_init();
    static const struct {
        const char *text, *want;
    } cases[] = {
        /* expected: what spaCy 3.8.18's blank English tokenizer returns */
        {"Don't \"go\" there,\tMr. Smith:) ok", "Do|n't|\"|go|\"|there|,|Mr.|Smith|:)|ok"},
        {"He said--Mr. Jones--that (a.m.) 3.5km... U.S. e.g.", "He|said|--|Mr.|Jones|--|that|(|a.m.|)|3.5|km|...|U.S.|e.g."},
        {"well-known x--y http://x.com/a?b=1 isn't", "well|-|known|x|--|y|http://x.com/a?b=1|is|n't"},
        {"  lead\n\ntrail  ", "lead|trail"},
    };
    WordSplit ws;
    memset(&ws, 0, sizeof ws);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char got[512] = "";
        wordsplit_run(&ws, cases[c].text, strlen(cases[c].text));
        for (size_t i = 0; i < ws.n; i++) {
            if (ws.tok[i].space) continue;
            if (got[0]) strcat(got, "|");
            strncat(got, cases[c].text + ws.tok[i].off, ws.tok[i].len);
        }
        EXPECT(!strcmp(got, cases[c].want), "words of %s: %s, expected %s", cases[c].text, got, cases[c].want);
    }
    wordsplit_free(&ws);
}

void textfilter_cmd(void) {
    char in[128], out[128], rej[128];
    snprintf(in, sizeof in, "/tmp/llamac_test_%d_tf_in.jsonl", (int)getpid());
    snprintf(out, sizeof out, "/tmp/llamac_test_%d_tf_out.jsonl", (int)getpid());
    snprintf(rej, sizeof rej, "/tmp/llamac_test_%d_tf_rej.jsonl", (int)getpid());
    static char doc[1 << 14], text[1 << 15];
    rep(doc, "", "The cat sat with the dog on the mat and that was the end of it. ", 1);
    strcat(doc, "Then the dog ran off to the park with a ball. A bird sang in the tree by the road. "
                "The sun was warm on the grass of the field. Children played near the old stone wall. "
                "Nobody knew where the ball had gone at the end of the day.");
    snprintf(text, sizeof text,
             "{\"id\": 0, \"text\": \"%s\"}\n{\"id\": 1, \"text\": \"too short.\"}\n\n{\"id\": 2, \"text\": \"%s\"}\n"
             "{\"id\": 3,\"text\":\"Lorem ipsum dolor sit amet.\"}\n",
             doc, doc);
    test_put(in, text);
    int rc = test_llamac("data filter --input %s --out %s --rejected %s --quiet", in, out, rej);
    EXPECT(rc == 0, "rc %d: %s", rc, test_err);
    EXPECT(strstr(test_out, "4 documents in, 2 kept") && strstr(test_out, "gopher_short_doc              2"),
           "counts: %s", test_out);
    FILE *f = fopen(out, "rb");
    char got[1 << 15];
    size_t n = f ? fread(got, 1, sizeof got - 1, f) : 0;
    got[n] = 0;
    if (f) fclose(f);
    EXPECT(!strncmp(got, "{\"id\": 0, ", 10) && strstr(got, "\n{\"id\": 2, ") && n == 2 * (strlen(doc) + 22),
           "kept lines unchanged, in order (%zu bytes)", n);
    f = fopen(rej, "rb");
    n = f ? fread(got, 1, sizeof got - 1, f) : 0;
    got[n] = 0;
    if (f) fclose(f);
    EXPECT(!strcmp(got, "{\"id\": 1, \"text\": \"too short.\", \"filter_reason\": \"gopher_short_doc\"}\n"
                        "{\"id\": 3,\"text\":\"Lorem ipsum dolor sit amet.\", \"filter_reason\": \"gopher_short_doc\"}\n"),
           "rejected: %s", got);
    /* bad inputs: one error line each */
    test_put(in, "{\"id\": 0, \"body\": \"x\"}\n");
    rc = test_llamac("data filter --input %s --out %s --quiet", in, out);
    EXPECT(rc == 1 && strstr(test_err, "llamac: error: ") && strstr(test_err, ":1: no string field 'text'") &&
               !strchr(strchr(test_err, '\n') + 1, '\n'),
           "missing field: rc %d: %s", rc, test_err);
    test_put(in, "{\"text\": \"ok.\"}\n{\"text\": \"bad \xff byte\"}\n");
    rc = test_llamac("data filter --input %s --out %s --quiet", in, out);
    EXPECT(rc == 1 && strstr(test_err, ":2: not valid UTF-8"), "bad utf8 refused: rc %d: %s", rc, test_err);
    rc = test_llamac("data filter --input %s --out %s --quiet --bad-utf8 skip", in, out);
    EXPECT(rc == 0 && strstr(test_out, "1 documents in") && strstr(test_out, "1 skipped (not valid UTF-8)"),
           "bad utf8 skipped: rc %d: %s %s", rc, test_out, test_err);
    rc = test_llamac("data filter --input %s --out %s --gopher-max-bullet-lines 2", in, out);
    EXPECT(rc == 1 && strstr(test_err, "gopher-max-bullet-lines"), "bad threshold: rc %d: %s", rc, test_err);
    rc = test_llamac("data filter --input %s --out %s --c4-lorem-ipsum 0.5", in, out);
    EXPECT(rc == 1 && strstr(test_err, "--c4-lorem-ipsum: expected 1 (on) or 0 (off)"), "bad switch: rc %d: %s", rc, test_err);
    rc = test_llamac("data filter --input %s --out %s --rules gopher,nsfw", in, out);
    EXPECT(rc == 1 && strstr(test_err, "--rules: unknown filter 'nsfw'"), "bad rules: rc %d: %s", rc, test_err);
    unlink(in);
    unlink(out);
    unlink(rej);
}

/* Size of a file, -1 when it does not exist. */
static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* The data steps' outputs (data/outfile.h): an output that names an input
 * or another output is refused before anything is written; a run that fails
 * halfway leaves the earlier output as it was and no .tmp; a text file is
 * refused where the output copies JSONL lines; a classifier file with
 * non-finite weights is refused at load. For filter, dedup and quality. */
void data_outputs(void) {
    char in[128], out[128], tmp[140], txt[128], qc[128];
    int pid = (int)getpid();
    snprintf(in, sizeof in, "/tmp/llamac_test_%d_do_in.jsonl", pid);
    snprintf(out, sizeof out, "/tmp/llamac_test_%d_do_out.jsonl", pid);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    snprintf(txt, sizeof txt, "/tmp/llamac_test_%d_do_in.txt", pid);
    snprintf(qc, sizeof qc, "/tmp/llamac_test_%d_do.qclass", pid);
    const char *good = "{\"text\": \"one two three four five.\"}\n{\"text\": \"six seven eight nine ten.\"}\n";
    test_put(in, good);
    const char *steps[3] = {"data filter --quiet --rules gopher-rep --rep-top-2 0 --rep-top-3 0 --rep-top-4 0", "data dedup", "data quality --threshold 0 --model"};
    for (int k = 0; k < 3; k++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, k == 2 ? "%s %s" : "%s", steps[k], qc);
        if (k == 2) { /* a model to score with: trained on the two lines, labels from a field */
            char lab[140];
            snprintf(lab, sizeof lab, "/tmp/llamac_test_%d_do_lab.jsonl", pid);
            test_put(lab, "{\"text\": \"a b c\", \"label\": 1}\n{\"text\": \"d e f\", \"label\": 0}\n");
            int rc = test_llamac("data quality-train --input %s --out %s --label-field label --val-frac 0", lab, qc);
            unlink(lab);
            EXPECT(rc == 0, "quality-train: rc %d: %s", rc, test_err);
        }
        int rc = test_llamac("%s --input %s --out %s", cmd, in, in);
        EXPECT(rc == 1 && strstr(test_err, "are the same file") && file_size(in) == (long)strlen(good),
               "%s --out = --input: rc %d, %ld bytes left: %s", steps[k], rc, file_size(in), test_err);
        /* a good run, then a failing one: the first output stays */
        rc = test_llamac("%s --input %s --out %s", cmd, in, out);
        long before = file_size(out);
        EXPECT(rc == 0 && before > 0, "%s: rc %d, %ld bytes: %s", steps[k], rc, before, test_err);
        test_put(in, "{\"text\": \"one two three four five.\"}\n{\"text\": \"six seven eight nine ten.\"}\nnot json\n");
        rc = test_llamac("%s --input %s --out %s", cmd, in, out);
        EXPECT(rc == 1 && strstr(test_err, ":3: not valid JSON") && file_size(out) == before && file_size(tmp) < 0,
               "%s failing: rc %d, out %ld bytes (was %ld), tmp %ld: %s", steps[k], rc, file_size(out), before,
               file_size(tmp), test_err);
        test_put(in, good);
        test_put(txt, "plain text, one document\n");
        rc = test_llamac("%s --input %s --out %s", cmd, txt, out);
        EXPECT(rc == 1 && strstr(test_err, "not a .jsonl file") && file_size(out) == before, "%s on text: rc %d: %s",
               steps[k], rc, test_err);
    }
    /* a classifier whose weights are not finite: refused at load */
    FILE *f = fopen(qc, "r+b");
    float nan = NAN;
    EXPECT(f && fseek(f, 4 + 5 * 4, SEEK_SET) == 0 && fwrite(&nan, 4, 1, f) == 1, "patch the bias");
    if (f) fclose(f);
    int rc = test_llamac("data quality --model %s --input %s --out %s", qc, in, out);
    EXPECT(rc == 1 && strstr(test_err, "not finite"), "NaN classifier: rc %d: %s", rc, test_err);
    unlink(in), unlink(out), unlink(txt), unlink(qc);
}
