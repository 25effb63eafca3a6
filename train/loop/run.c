/*
 * run.c: see run.h.
 */
#include "run.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

double run_eval_loss(Llama *m, Loader *L, long nbatches, long *ntok) {
    size_t n = (size_t)m->B * m->T;
    int32_t *tok = xmalloc(n * sizeof *tok), *tgt = xmalloc(n * sizeof *tgt), *pos = xmalloc(n * sizeof *pos);
    double sum = 0;
    long count = 0;
    Err e;
    for (long b = 0; b < nbatches; b++) {
        loader_next(L, tok, tgt, pos);
        if (llama_set_batch(m, tok, tgt, pos, &e)) LC_FATAL("eval batch: %s", e.msg); /* shards are validated at open */
        sum += llama_forward(m, 0, m->c.n_layers, 0);
        count += llama_count_targets(tgt, n);
    }
    free(tok); free(tgt); free(pos);
    if (ntok) *ntok = count;
    return count ? sum / count : 0;
}

int run_stream_token(void *ud, EngineSeq *s) {
    const RunStream *r = ud;
    int id = s->tokens[s->n - 1];
    for (int k = 0; k < r->nstop; k++)
        if (r->stop[k] == id) return 0;
    size_t len;
    const char *b = tok_token_bytes(r->tok, id, &len);
    if (r->out && len) {
        fwrite(b, 1, len, r->out);
        fflush(r->out);
    }
    return 0;
}

int run_stop_ids(const Tokenizer *tok, int extra, int ids[3]) {
    int cand[3] = {tok->eos, tok->eot, extra}, n = 0;
    for (int k = 0; k < 3; k++) {
        int dup = cand[k] < 0;
        for (int q = 0; q < n; q++) dup |= ids[q] == cand[k];
        if (!dup) ids[n++] = cand[k];
    }
    return n;
}

void run_stream_done(void *ud, EngineSeq *s) {
    RunStream *r = ud;
    if (s->n > r->cap) r->ids = xrealloc(r->ids, (size_t)(r->cap = s->n) * sizeof *r->ids);
    memcpy(r->ids, s->tokens, (size_t)s->n * sizeof *r->ids);
    r->n = s->n;
    r->finish = s->finish;
    r->t_first = s->t_first;
}

int run_generate(Llama *m, const Tokenizer *tok, const SampleParams *sp, uint64_t seed, const int32_t *prompt, int np,
                 int max_tokens, const EngineOpts *eo, FILE *out, double *prefill_s, double *gen_s, Err *e) {
    LC_ASSERT(np > 0 && np < eo->ctx);
    Engine *g;
    if (engine_init(&g, m, eo, e)) return -1;
    int stop[3];
    RunStream rs = {tok, stop, run_stop_ids(tok, -1, stop), out, NULL, 0, 0, 0, 0};
    EngineRequest r = {prompt, np, 1, max_tokens, *sp, seed, 0, stop, rs.nstop, 0, 0, NULL};
    double t0 = time_now();
    if (engine_add(g, &r, e) < 0) {
        engine_free(g);
        return -1;
    }
    EngineCallbacks cb = {run_stream_token, run_stream_done, &rs};
    engine_run(g, &cb);
    double t1 = time_now();
    engine_free(g);
    free(rs.ids);
    if (prefill_s) *prefill_s = rs.t_first;
    if (gen_s) *gen_s = t1 - t0 - rs.t_first;
    return rs.n;
}

double run_sgemm_peak(int n, int reps) {
    float *a = xalloc_aligned((size_t)n * n * 4), *b = xalloc_aligned((size_t)n * n * 4), *c = xalloc_aligned((size_t)n * n * 4);
    Rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = rng_uniform(&r), b[i] = rng_uniform(&r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = time_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double dt = time_now() - t0;
        if (dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

const char *run_clock(double s, char *buf, size_t cap) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
    return buf;
}
