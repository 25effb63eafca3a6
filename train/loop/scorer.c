/*
 * scorer.c: a placeholder for the reward scorer (scorer.h), which branch
 * rm-score implements; `llamac rs` links against this until that branch
 * is merged, which replaces this file whole. Every model fails to open.
 */
#include "scorer.h"

int scorer_open(Scorer **s, const ScorerOpts *o, Err *e) {
    *s = NULL;
    return err_set(e, "%s: reward models are not in this build yet (branch rm-score)", o->spec ? o->spec : "--reward-model");
}

int scorer_count(const Scorer *s) {
    (void)s;
    return 0;
}
const char *scorer_name(const Scorer *s, int k) {
    (void)s; (void)k;
    return NULL;
}
double scorer_weight(const Scorer *s, int k) {
    (void)s; (void)k;
    return 0;
}

int scorer_score(Scorer *s, const ScoreItem *items, size_t n, double *per, double *total, Err *e) {
    (void)s; (void)items; (void)n; (void)per; (void)total;
    return err_set(e, "reward models are not in this build yet (branch rm-score)");
}

void scorer_close(Scorer *s) { (void)s; }
