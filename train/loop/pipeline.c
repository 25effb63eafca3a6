/*
 * pipeline.c: the pipeline stages of the training loop (pipeline.h).
 *
 * Messages between the stages of one replica (world ranks s * DP + d and
 * (s +- 1) * DP + d): micro-batch j's activation goes forward with tag
 * 2j, its gradient backward with tag 2j + 1; every wait polls with a
 * deadline (--pp-timeout) so that a stage that died or hangs stops the job
 * with a line naming it instead of a wait forever.
 */
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../dist/dist.h"
#include "../../dist/pp.h"

struct Pipe {
    PipeCtx cx;             /* what the training loop lent (pipeline.h) */
    int P, s, kind, M;      /* stages, this stage, schedule, micro-batches per replica */
    int l0[LC_MAX_LAYERS + 1];
    int prev, next;         /* world ranks of the neighbouring stages (-1: none) */
    PpOp *ops;
    int nops, nslots;       /* micro-batches in flight at most */
    size_t set_floats;      /* one micro-batch's activations (llama_stage_floats) */
    float *sets;            /* nslots sets */
    float *grad;            /* nslots (N, D): last stage the head's gradient, else the gradient sent back */
    int *send_req;          /* nslots outstanding sends of each slot (-1: none), forward and backward */
    int *bsend_req;
    int tied;               /* the last stage's copy of a tied embedding */
    float *tie;             /* the first stage: room for the last stage's embedding gradient */
    /* accounting: this rank's time in the pipeline phase of each step */
    double busy, wall, tf, tb;
    long nsteps, nf, nb;
    int warm;               /* a step has run (the first is not counted) */
    double *events;         /* the last step's ops: (kind, mb, start, end) each */
};

void pipe_banner(const Pipe *p) {
    const DistGrid *g = dist_grid();
    const LlamaConfig *c = p->cx.c;
    int T = p->cx.m->T;
    printf("  pipeline: %d stages x %d replicas, %s schedule over %d micro-batches per replica; stage s = ranks "
           "[s*%d, (s+1)*%d); layers", p->P, g->dp, pp_schedule_name(p->kind), p->M, g->dp, g->dp);
    for (int s = 0; s < p->P; s++)
        printf("%s %d-%d (%.0f%% of the FLOPs)", s ? "," : "", p->l0[s], p->l0[s + 1] - 1,
               100 * pp_stage_flops(c, T, p->P, p->l0, s) / llama_flops_per_token(c, T));
    printf("\n");
}

void pipe_stage_range(const Pipe *p, int s, size_t *lo, size_t *hi) {
    *lo = s == 0 ? 0 : p->cx.bucket[p->l0[s]];
    *hi = s == p->P - 1 ? p->cx.size : p->cx.bucket[p->l0[s + 1]];
}

int pipe_open(Pipe **out, const PipeCtx *cx, Err *e) {
    const DistGrid *g = dist_grid();
    Pipe *p = xcalloc(1, sizeof *p);
    p->cx = *cx;
    p->P = g->pp;
    p->s = g->stage;
    *out = NULL;
    if (pp_schedule_parse(cx->schedule, &p->kind, e) || pp_split(cx->c, cx->m->T, p->P, cx->layers, p->l0, e)) {
        free(p);
        return -1;
    }
    p->M = (int)(cx->k1 - cx->k0);
    if (p->kind == PP_1F1B && p->M < p->P && g->rank == 0)
        fprintf(stderr, "warning: --pp-schedule 1f1b with %d micro-batches per replica for %d stages: the pipeline "
                        "never fills; each stage idles %.0f%% of the step (raise --batch-tokens to at least %d "
                        "micro-batches per replica)\n", p->M, p->P, 100 * pp_bubble(p->P, p->M), p->P);
    p->prev = p->s > 0 ? g->rank - g->dp : -1;
    p->next = p->s < p->P - 1 ? g->rank + g->dp : -1;
    p->ops = xmalloc((size_t)2 * p->M * sizeof *p->ops);
    p->nops = pp_schedule(p->kind, p->P, p->s, p->M, p->ops);
    p->nslots = pp_max_inflight(p->ops, p->nops);
    Llama *m = cx->m;
    int l0 = p->l0[p->s], l1 = p->l0[p->s + 1];
    size_t ND = (size_t)m->B * m->T * m->c.dim;
    p->set_floats = llama_stage_floats(m, l0, l1);
    p->sets = m->ops->alloc(m->ctx, (size_t)p->nslots * p->set_floats * sizeof(float));
    p->grad = m->ops->alloc(m->ctx, (size_t)p->nslots * ND * sizeof(float));
    p->send_req = xmalloc((size_t)2 * p->nslots * sizeof(int));
    p->bsend_req = p->send_req + p->nslots;
    for (int i = 0; i < 2 * p->nslots; i++) p->send_req[i] = -1;
    p->tied = cx->c->tied && !m->lora;
    if (p->tied && p->s == 0 && p->P > 1) p->tie = xmalloc(cx->bucket[0] * sizeof(float));
    p->events = xcalloc((size_t)p->nops * 4, sizeof(double));
    dist_set_timeout((double)cx->timeout);
    *out = p;
    return 0;
}

void pipe_close(Pipe *p) {
    if (!p) return;
    Llama *m = p->cx.m;
    if (p->sets) m->ops->free(m->ctx, p->sets);
    if (p->grad) m->ops->free(m->ctx, p->grad);
    free(p->ops);
    free(p->send_req);
    free(p->events);
    free(p->tie);
    free(p);
}

/* A copy between two buffers of the backend. The pipeline runs on the CPU
 * (the trainer refuses several ranks on another device), where it is a
 * memcpy. */
static void d2d(Llama *m, float *dst, const float *src, size_t n) {
    LC_ASSERT(m->ops == &ops_cpu);
    memcpy(dst, src, n * sizeof(float));
}

static void wait_send(int *req) {
    if (*req >= 0) dist_req_wait(*req, "pipeline: a send to the next or previous stage");
    *req = -1;
}

/* Micro-batch k's data and dropout mask, and slot's activations. */
static int load_mb(Pipe *p, const int32_t *tk, const int32_t *tg, const int32_t *ps, long k, long step, int slot,
                   Err *e) {
    Llama *m = p->cx.m;
    size_t micro = (size_t)m->B * m->T;
    if (llama_set_batch(m, tk + k * micro, tg + k * micro, ps + k * micro, e)) return -1;
    llama_lora_seed(m, (uint64_t)p->cx.seed * 0x9e3779b97f4a7c15ULL + (uint64_t)step * 4096 + (uint64_t)k);
    llama_stage_bind(m, p->l0[p->s], p->l0[p->s + 1], p->sets + (size_t)slot * p->set_floats);
    return 0;
}

double pipe_step(Pipe *p, const int32_t *tk, const int32_t *tg, const int32_t *ps, float grad_scale, long step,
                 PipeHead head, void *hud, Err *e) {
    Llama *m = p->cx.m;
    const Ops *o = m->ops;
    int l0 = p->l0[p->s], l1 = p->l0[p->s + 1], last = p->s == p->P - 1;
    size_t ND = (size_t)m->B * m->T * m->c.dim;
    double loss = 0;
    char what[96];
    dist_barrier(); /* the stages start the step together: idle time is measured from here */
    double t0 = time_now(), busy = 0;
    for (int i = 0; i < p->nops; i++) {
        PpOp op = p->ops[i];
        int slot = op.mb % p->nslots;
        long k = p->cx.k0 + op.mb;
        double *ev = p->events + 4 * (size_t)i;
        if (op.kind == 'F') {
            wait_send(&p->send_req[slot]); /* the slot's last output and gradient have left */
            wait_send(&p->bsend_req[slot]);
            if (load_mb(p, tk, tg, ps, k, step, slot, e)) return NAN;
            if (p->prev >= 0) {
                snprintf(what, sizeof what, "pipeline stage %d: the activations of micro-batch %ld from stage %d", p->s, k, p->s - 1);
                dist_req_wait(dist_irecv_f32(m->acts[l0].x, ND, p->prev, 2 * op.mb), what);
            }
            double c0 = time_now();
            if (last && head) {
                double l = head(hud, m, l0, k, e);
                if (isnan(l) && e->msg[0]) return NAN;
                loss += l;
            } else {
                loss += llama_forward(m, l0, l1, last ? grad_scale : 0.0f);
            }
            if (last) d2d(m, p->grad + (size_t)slot * ND, m->dres, ND);
            o->sync(m->ctx);
            double c1 = time_now();
            if (p->next >= 0) p->send_req[slot] = dist_isend_f32(m->acts[l1].x, ND, p->next, 2 * op.mb);
            ev[2] = c0 - t0, ev[3] = c1 - t0;
            p->tf += c1 - c0, p->nf++;
            busy += c1 - c0;
        } else {
            wait_send(&p->bsend_req[slot]);
            if (load_mb(p, tk, tg, ps, k, step, slot, e)) return NAN;
            if (last) {
                d2d(m, m->dres, p->grad + (size_t)slot * ND, ND);
            } else {
                snprintf(what, sizeof what, "pipeline stage %d: the gradient of micro-batch %ld from stage %d", p->s, k, p->s + 1);
                dist_req_wait(dist_irecv_f32(m->dres, ND, p->next, 2 * op.mb + 1), what);
            }
            double c0 = time_now();
            llama_backward(m, l0, l1);
            if (p->prev >= 0) d2d(m, p->grad + (size_t)slot * ND, m->dres, ND);
            o->sync(m->ctx);
            double c1 = time_now();
            if (p->prev >= 0) p->bsend_req[slot] = dist_isend_f32(p->grad + (size_t)slot * ND, ND, p->prev, 2 * op.mb + 1);
            ev[2] = c0 - t0, ev[3] = c1 - t0;
            p->tb += c1 - c0, p->nb++;
            busy += c1 - c0;
        }
        ev[0] = op.kind, ev[1] = (double)k;
    }
    for (int i = 0; i < 2 * p->nslots; i++) wait_send(&p->send_req[i]);
    /* the tied embedding: the head's part of its gradient joins the first stage's */
    size_t E = p->cx.bucket[0];
    if (p->tied && p->P > 1) {
        int col = dist_grid()->dp_rank, first = col, lastr = (p->P - 1) * dist_grid()->dp + col;
        if (last) {
            dist_send(p->cx.grads, E * sizeof(float), first, 1 << 20);
        } else if (p->s == 0) {
            dist_recv(p->tie, E * sizeof(float), lastr, 1 << 20);
            for (size_t i = 0; i < E; i++) p->cx.grads[i] += p->tie[i];
        }
    }
    double wall = time_now() - t0;
    if (p->warm) { /* the first step warms caches and allocators: not counted */
        p->busy += busy;
        p->wall += wall;
        p->nsteps++;
    }
    p->warm = 1;
    return loss;
}

void pipe_release(Pipe *p) {
    Llama *m = p->cx.m;
    if (m->lora || m->ops != &ops_cpu) return; /* a frozen base stays whole: rank 0 merges and samples with it */
    size_t lo, hi, size = p->cx.size;
    pipe_stage_range(p, p->s, &lo, &hi);
    size_t keep = p->tied && p->s == p->P - 1 ? p->cx.bucket[0] : 0; /* the last stage's copy of a tied embedding */
    if (lo > keep) ops_cpu_release(p->cx.params + keep, (lo - keep) * sizeof(float));
    if (hi < size) ops_cpu_release(p->cx.params + hi, (size - hi) * sizeof(float));
}

void pipe_tie_weights(Pipe *p) {
    if (!p->tied || p->P == 1) return;
    int col = dist_grid()->dp_rank, lastr = (p->P - 1) * dist_grid()->dp + col;
    size_t E = p->cx.bucket[0];
    if (p->s == 0) dist_send(p->cx.params, E * sizeof(float), lastr, (1 << 20) + 1);
    else if (p->s == p->P - 1) dist_recv(p->cx.params, E * sizeof(float), col, (1 << 20) + 1);
}

void pipe_gather(Pipe *p) {
    const DistGrid *g = dist_grid();
    for (int s = 1; s < p->P; s++) {
        size_t lo, hi;
        pipe_stage_range(p, s, &lo, &hi);
        if (g->rank == s * g->dp) dist_send(p->cx.params + lo, (hi - lo) * sizeof(float), 0, (1 << 20) + 2);
        else if (g->rank == 0) dist_recv(p->cx.params + lo, (hi - lo) * sizeof(float), s * g->dp, (1 << 20) + 2);
    }
}

int pipe_last_rank(const Pipe *p) { return (p->P - 1) * dist_grid()->dp; }

int pipe_forward(Pipe *p, Llama *mm, const int32_t *tk, const int32_t *tg, const int32_t *ps, long k0, long k1,
                 PipeHead head, void *hud, Err *e) {
    int l0 = p->l0[p->s], l1 = p->l0[p->s + 1];
    size_t micro = (size_t)mm->B * mm->T, ND = micro * mm->c.dim;
    if (mm == p->cx.m) llama_stage_bind(mm, l0, l1, p->sets);
    for (long k = k0; k < k1; k++) {
        if (llama_set_batch(mm, tk + k * micro, tg + k * micro, ps + k * micro, e)) return -1;
        if (p->prev >= 0) dist_req_wait(dist_irecv_f32(mm->acts[l0].x, ND, p->prev, 2 * (int)k), "pipeline forward: the activations of the previous stage");
        if (p->next < 0) {
            double l = head(hud, mm, l0, k, e);
            if (isnan(l) && e->msg[0]) return -1;
        } else {
            llama_forward(mm, l0, l1, 0);
            dist_req_wait(dist_isend_f32(mm->acts[l1].x, ND, p->next, 2 * (int)k), "pipeline forward: a send to the next stage");
        }
    }
    return 0;
}

void pipe_report(Pipe *p) {
    const DistGrid *g = dist_grid();
    int W = g->world;
    /* per rank: idle fraction, mean forward and backward seconds, activation MB */
    double *v = xcalloc((size_t)W * 5, sizeof(double));
    double *me = v + (size_t)g->rank * 5;
    me[0] = p->wall > 0 ? 1 - p->busy / p->wall : 0;
    me[1] = p->nf ? p->tf / p->nf : 0;
    me[2] = p->nb ? p->tb / p->nb : 0;
    const Llama *m = p->cx.m;
    size_t ND = (size_t)m->B * m->T * m->c.dim;
    me[3] = (double)p->nslots * (p->set_floats + ND) * sizeof(float) / 1e6;
    me[4] = p->nslots;
    dist_allreduce_f64(v, W * 5);
    if (g->rank == 0) {
        double tf[LC_MAX_LAYERS], tb[LC_MAX_LAYERS], sim[LC_MAX_LAYERS];
        for (int s = 0; s < p->P; s++) {
            tf[s] = v[(size_t)s * g->dp * 5 + 1];
            tb[s] = v[(size_t)s * g->dp * 5 + 2];
        }
        pp_simulate(p->kind, p->P, p->M, tf, tb, sim);
        printf("pipeline: %s, %d stages x %d micro-batches per step and replica (bubble (P-1)/(M+P-1) = %.1f%%), "
               "over %ld steps after the first:\n", pp_schedule_name(p->kind), p->P, p->M, 100 * pp_bubble(p->P, p->M),
               p->nsteps);
        for (int s = 0; s < p->P; s++) {
            const double *r = v + (size_t)s * g->dp * 5;
            printf("  stage %d (layers %d-%d): idle %.1f%% of the step (simulated from its forward %.1f ms and "
                   "backward %.1f ms: %.1f%%); %d micro-batches in flight, %.2f MB of activations\n",
                   s, p->l0[s], p->l0[s + 1] - 1, 100 * r[0], 1e3 * r[1], 1e3 * r[2], 100 * sim[s], (int)r[4], r[3]);
        }
    }
    free(v);
    if (!p->cx.timeline) return;
    /* the last step's ops of each first replica's stage, to rank 0 */
    size_t ne = (size_t)p->nops * 4;
    double *all = g->rank == 0 ? xmalloc((size_t)p->P * ne * sizeof(double)) : NULL;
    for (int s = 0; s < p->P; s++) {
        if (s == 0 && g->rank == 0) memcpy(all, p->events, ne * sizeof(double));
        else if (g->rank == s * g->dp) dist_send(p->events, ne * sizeof(double), 0, (1 << 20) + 3);
        else if (g->rank == 0) dist_recv(all + (size_t)s * ne, ne * sizeof(double), s * g->dp, (1 << 20) + 3);
    }
    if (g->rank != 0) return;
    FILE *f = fopen(p->cx.timeline, "w");
    if (!f) {
        fprintf(stderr, "warning: --pp-timeline: cannot create %s\n", p->cx.timeline);
        free(all);
        return;
    }
    fprintf(f, "{\"schedule\":\"%s\",\"stages\":%d,\"micro_batches\":%d,\"bubble\":%.6f,\"ops\":[", pp_schedule_name(p->kind),
            p->P, p->M, pp_bubble(p->P, p->M));
    for (int s = 0; s < p->P; s++)
        for (int i = 0; i < p->nops; i++) {
            const double *ev = all + (size_t)s * ne + 4 * (size_t)i;
            fprintf(f, "%s{\"stage\":%d,\"op\":\"%c\",\"mb\":%d,\"start\":%.6f,\"end\":%.6f}", s || i ? "," : "", s,
                    (char)ev[0], (int)ev[1], ev[2], ev[3]);
        }
    fprintf(f, "]}\n");
    fclose(f);
    free(all);
    printf("pipeline: the last step's timeline in %s\n", p->cx.timeline);
}
