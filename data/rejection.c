/*
 * rejection.c: see rejection.h.
 */
#include "rejection.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/base.h"

int rejection_best(const double *r, int K, double threshold) {
    int best = -1;
    for (int j = 0; j < K; j++)
        if (!isnan(r[j]) && (best < 0 || r[j] > r[best])) best = j; /* strictly larger: a tie keeps the earlier */
    return best >= 0 && r[best] >= threshold ? best : -1;
}

int rejection_ks(int K, int ks[REJECTION_MAX_KS]) {
    int n = 0;
    for (long k = 1; k < K && n < REJECTION_MAX_KS - 1; k *= 2) ks[n++] = (int)k;
    if (K >= 1) ks[n++] = K;
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void rejection_curve(const double *r, size_t n, int K, const int *ks, int nk, double *best, double *median,
                     size_t *count) {
    double *tmp = xmalloc((size_t)K * sizeof *tmp);
    for (int c = 0; c < nk; c++) {
        LC_ASSERT(ks[c] >= 1 && ks[c] <= K);
        double sb = 0, sm = 0;
        size_t np = 0;
        for (size_t i = 0; i < n; i++) {
            int m = 0; /* the prompt's scored samples among its first ks[c] */
            for (int j = 0; j < ks[c]; j++)
                if (!isnan(r[i * (size_t)K + j])) tmp[m++] = r[i * (size_t)K + j];
            if (!m) continue;
            qsort(tmp, (size_t)m, sizeof *tmp, cmp_double);
            sb += tmp[m - 1];
            sm += m % 2 ? tmp[m / 2] : 0.5 * (tmp[m / 2 - 1] + tmp[m / 2]);
            np++;
        }
        best[c] = np ? sb / (double)np : NAN;
        median[c] = np ? sm / (double)np : NAN;
        if (count) count[c] = np;
    }
    free(tmp);
}

json_t *rejection_prompt(const json_t *obj) {
    json_t *v = json_object_get(obj, "messages");
    if (!v) v = json_object_get(obj, "prompt");
    return v ? json_incref(v) : NULL;
}

json_t *rejection_sft_example(const json_t *prompt, const char *text, size_t len) {
    json_t *reply = json_stringn(text ? text : "", text ? len : 0);
    if (!reply) return NULL;
    if (json_is_string(prompt)) return json_pack("{s:O,s:o}", "prompt", prompt, "completion", reply);
    if (!json_is_array(prompt)) {
        json_decref(reply);
        return NULL;
    }
    json_t *msgs = json_copy((json_t *)prompt); /* shallow: the prompt's messages are shared, not changed */
    json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "assistant", "content", reply));
    return json_pack("{s:o}", "messages", msgs);
}
