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

int run_generate_at(Llama *m, const Tokenizer *tok, Sampler *s, const int32_t *prompt, int np, int pos0,
                    int stop, int max_tokens, FILE *out, int32_t *gen, int *end, double *prefill_s,
                    double *gen_s) {
    LC_ASSERT(np > 0 && pos0 >= 0 && pos0 + np < m->T);
    float *logits = xmalloc((size_t)m->c.vocab * sizeof(float));
    double t0 = time_now();
    int i = 0;
    if (pos0 == 0 && np > 1 && !m->recompute) { /* a new sequence: all but the last token in one forward */
        llama_prefill(m, prompt, np - 1);
        i = np - 1;
    }
    for (; i < np; i++) llama_decode(m, prompt[i], pos0 + i);
    double t1 = time_now();
    int n = 0, p = pos0 + np;
    for (; n < max_tokens && p < m->T; p++) {
        if (m->ops->download_act) m->ops->download_act(m->ctx, logits, m->logits, (size_t)m->c.vocab);
        else m->ops->download(m->ctx, logits, m->logits, (size_t)m->c.vocab * sizeof(float));
        int next = sample_next(s, logits);
        if (gen) gen[n] = next;
        n++;
        if (next == tok->eos || next == tok->eot || next == stop) break;
        if (out) {
            size_t len;
            const char *b = tok_token_bytes(tok, next, &len);
            fwrite(b, 1, len, out);
            fflush(out);
        }
        if (p + 1 < m->T) llama_decode(m, next, p);
        else break;
    }
    double t2 = time_now();
    free(logits);
    if (end) *end = p;
    if (prefill_s) *prefill_s = t1 - t0;
    if (gen_s) *gen_s = t2 - t1;
    return n;
}

int run_generate(Llama *m, const Tokenizer *tok, Sampler *s, const int32_t *prompt, int np,
                 int max_tokens, FILE *out, double *prefill_s, double *gen_s) {
    return run_generate_at(m, tok, s, prompt, np, 0, -1, max_tokens, out, NULL, NULL, prefill_s, gen_s);
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
