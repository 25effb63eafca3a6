/*
 * engine.c: the sampling engine (engine.h).
 *
 * State. A slot is a running sample: its token history (prompt, then what
 * it generated), how many of those tokens are in the KV cache, its page
 * table, and the pages it may still take (reserved at admission for its
 * longest possible length, so a step never runs out of pages: no
 * preemption). Pages of ENGINE_PAGE tokens come from one pool per layer and
 * are counted by reference: the K samples of a prompt share its full pages.
 *
 * A step: admit queued requests into free slots while pages allow (a
 * request's samples start as one prefilling slot); lay out the rows of one
 * forward: one decode row per running sample (its last sampled token), then
 * chunks of prompts being prefilled, up to max_rows; run the forward over
 * those rows (K and V of every row written to the pools before attention,
 * so a prompt chunk attends to itself); take the final norm and LM head of
 * the rows that need logits only; sample every such row's samples in
 * parallel, each from its own stream; then, in slot order, append the
 * tokens, fork a finished prompt into its samples, and finish samples.
 */
#include "engine.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const finish_names[] = {"", "stop", "length", "context"};

typedef struct Req {
    int *prompt, n_prompt, n, max_new, first_sample, logprobs, session;
    int *stop_ids, n_stop_ids;
    SampleParams sp;
    uint64_t seed;
    void *user;
    int admitted; /* samples given a slot so far */
    double t_add;
    int id;
} Req;

enum { SLOT_FREE = 0, SLOT_PREFILL, SLOT_WAIT_FORK, SLOT_RUN, SLOT_KEPT };

typedef struct Slot {
    int state;
    Req *req;        /* NULL for a kept session between requests */
    int sample;      /* index within the request (0 .. n-1) */
    int *hist;       /* prompt + generated (cap) */
    int cap, n_hist; /* tokens in hist */
    int n_prompt;    /* where this request's prompt ends in hist */
    int n_cached;    /* tokens of hist in the KV cache */
    int res;         /* pages it may still allocate (reserved) */
    int fork_from;   /* SLOT_WAIT_FORK: the prefilling slot */
    int session;
    uint64_t seed;
    float *lp, *lp1; /* (cap) log-probabilities of generated tokens */
    double t_first;
    SampleOut so;    /* this step's draw */
} Slot;

/* The linear weights packed for matmul_rows, in m's layer order. */
typedef struct Packed {
    float *w[LC_MAX_LAYERS][LORA_NMOD];  /* q k v o gate up down (LoraModule order) */
    float *A[LC_MAX_LAYERS][LORA_NMOD], *B[LC_MAX_LAYERS][LORA_NMOD]; /* adapted modules */
    float *head;
} Packed;

struct Engine {
    Llama *m;
    Packed pk;
    int drop;             /* pack_all gives back each source weight's pages once packed */
    float *pack_buf;
    size_t pack_floats;
    const Ops *o;
    void *ctx;
    int S, R, ctx_len, P, maxp, n_pages;
    float **kp, **vp;     /* [L] pools (n_pages * P, KVD) */
    int *ref, *free_pages, n_free, reserved;
    int *ptab, *ptab_d;   /* (S, maxp) host and backend */
    Slot *slots;
    Req **queue;          /* FIFO of requests with samples not yet admitted */
    int nq, capq, qhead, next_id;
    Req **reqs;           /* every request, freed when its samples are done */
    int *req_live;
    int nreq, capreq;
    /* rows of a step: host and backend */
    int *tok, *pos, *rslot, *len, *kvrow, *orow;
    int *tok_d, *pos_d, *rslot_d, *len_d, *kvrow_d, *orow_d;
    int *out_slot;        /* (S) the slot whose logits each output row is */
    /* activations (R rows) */
    float *x, *xn, *q, *k, *v, *att, *h, *gate, *up, *lh, *rstd;
    float *xo, *xf, *logits, *logits_h; /* (S, D), (S, D), (S, V) */
    float *rope_cos, *rope_sin;
    SampleWork *work;     /* one per thread */
    int nwork;
    EngineStats st;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

size_t engine_kv_bytes_per_token(const LlamaConfig *c, const Ops *ops) {
    (void)ops; /* float-sized slots on every backend (a bf16 backend uses half of each) */
    return 2 * (size_t)c->n_layers * c->n_kv_heads * config_head_size(c) * sizeof(float);
}

/* module mod of layer l: its (Dout, Din) weight */
static const float *module_weight(const Llama *m, int l, int mod) {
    const LayerWeights *w = &m->w.layer[l];
    const float *ws[LORA_NMOD] = {w->wq, w->wk, w->wv, w->wo, w->wg, w->wu, w->wd};
    return ws[mod];
}

/* Floats of one packed weight, rounded up so that every panel starts on 64
 * bytes. */
static size_t packed_floats(const Ops *o, int din, int dout) {
    return (o->rows_pack_floats(NULL, din, dout) + 15) / 16 * 16;
}

/* The packed weights of every linear, the adapters of lc, and the head;
 * weights m holds quantised (m may be NULL: none) are read as they are and
 * take nothing here. */
static size_t packed_total(const LlamaConfig *c, const LoraConfig *lc, const Ops *o, const Llama *m) {
    size_t n = m && m->qhead ? 0 : packed_floats(o, c->dim, c->vocab);
    for (int l = 0; l < c->n_layers; l++)
        for (int mod = 0; mod < LORA_NMOD; mod++) {
            int din, dout;
            lora_module_dims(c, mod, &din, &dout);
            if (!(m && m->ql[l][mod])) n += packed_floats(o, din, dout);
            if (lc && lora_adapted(lc, l, mod)) n += packed_floats(o, din, lc->r) + packed_floats(o, lc->r, dout);
        }
    return n;
}

/* Pack m's weights into pack_buf, laid out as packed_total counts them. */
static void pack_all(Engine *g) {
    Llama *m = g->m;
    const LlamaConfig *c = &m->c;
    const Ops *o = g->o;
    float *at = g->pack_buf;
#define PACK(dst, src, din, dout)                          \
    do {                                                   \
        (dst) = at;                                        \
        o->rows_pack(g->ctx, at, (src), (din), (dout));    \
        at += packed_floats(o, (din), (dout));             \
    } while (0)
    if (!m->qhead) PACK(g->pk.head, m->w.lm_head, c->dim, c->vocab);
    if (g->drop && !c->tied && !m->qhead) ops_cpu_release(m->w.lm_head, (size_t)c->vocab * c->dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++)
        for (int mod = 0; mod < LORA_NMOD; mod++) {
            int din, dout;
            lora_module_dims(c, mod, &din, &dout);
            if (!m->ql[l][mod]) PACK(g->pk.w[l][mod], module_weight(m, l, mod), din, dout);
            /* given back at once: the peak is one copy of the weights, not two */
            if (g->drop && !m->ql[l][mod])
                ops_cpu_release((void *)module_weight(m, l, mod), (size_t)din * dout * sizeof(float));
            if (m->lora && lora_adapted(&m->lc, l, mod)) {
                const LoraPair *p = &m->la.layer[l][mod];
                PACK(g->pk.A[l][mod], p->A, din, m->lc.r);
                PACK(g->pk.B[l][mod], p->B, m->lc.r, dout);
            }
        }
#undef PACK
    LC_ASSERT((size_t)(at - g->pack_buf) == g->pack_floats);
}

void engine_sync_weights(Engine *g) { pack_all(g); }

/* The options with their defaults filled in. */
static EngineOpts complete(const LlamaConfig *c, const EngineOpts *opt) {
    EngineOpts o = *opt;
    if (o.max_seqs <= 0) o.max_seqs = 64;
    if (o.max_rows <= 0) o.max_rows = 512;
    if (o.ctx <= 0 || o.ctx > c->max_seq) o.ctx = c->max_seq;
    if (o.max_rows < o.max_seqs + 1) o.max_rows = o.max_seqs + 1; /* room for a prompt beside full decode */
    if (o.max_rows < 2 * ENGINE_PAGE) o.max_rows = 2 * ENGINE_PAGE; /* fork_samples copies a page through the rows */
    if (o.kv_tokens <= 0) o.kv_tokens = (long)o.max_seqs * o.ctx;
    o.kv_tokens = (o.kv_tokens + ENGINE_PAGE - 1) / ENGINE_PAGE * ENGINE_PAGE;
    return o;
}

/* Floats of one step's activations: R rows of x, xn, h (D), q, att (Q),
 * k, v (KVD), gate, up (F), rstd and the adapter's h (r); S rows of the
 * output residual and norm (D) and the logits (V). */
static size_t act_floats(const LlamaConfig *c, const LoraConfig *lc, int R, int S) {
    size_t HS = config_head_size(c), Q = c->n_heads * HS, KVD = c->n_kv_heads * HS;
    size_t row = 3 * (size_t)c->dim + 2 * Q + 2 * KVD + 2 * (size_t)c->hidden + 1 + (lc ? lc->r : 1);
    return (size_t)R * row + (size_t)S * (2 * (size_t)c->dim + c->vocab);
}

EngineMem engine_memory(const LlamaConfig *c, const LoraConfig *lc, const Ops *ops, const EngineOpts *opt) {
    EngineOpts o = complete(c, opt);
    EngineMem m = {packed_total(c, lc, ops, NULL) * sizeof(float), (size_t)o.kv_tokens * engine_kv_bytes_per_token(c, ops),
                   act_floats(c, lc, o.max_rows, o.max_seqs) * sizeof(float), o.kv_tokens, o.max_seqs, o.max_rows,
                   o.ctx};
    return m;
}

int engine_init(Engine **out, Llama *m, const EngineOpts *opt, Err *e) {
    const LlamaConfig *c = &m->c;
    if (c->num_labels)
        return err_set(e, "a classification model (a reward model: score head of %d label%s) has no language-model "
                          "head to sample from", c->num_labels, c->num_labels > 1 ? "s" : "");
    EngineOpts o = complete(c, opt);
    int P = ENGINE_PAGE;
    long pages = (o.kv_tokens + P - 1) / P;
    if (pages < (o.ctx + P - 1) / P) return err_set(e, "--kv-tokens: %ld tokens hold less than one sequence of --ctx %d", o.kv_tokens, o.ctx);
    if (pages > (1L << 30) / 1) return err_set(e, "--kv-tokens: %ld is too many", o.kv_tokens);
    Engine *g = xcalloc(1, sizeof *g);
    g->m = m;
    g->o = m->ops;
    g->ctx = m->ctx;
    g->S = o.max_seqs;
    g->R = o.max_rows;
    g->ctx_len = o.ctx;
    g->P = P;
    g->maxp = (o.ctx + P - 1) / P;
    g->n_pages = (int)pages;
    const Ops *ops = g->o;
    void *cx = g->ctx;
    int L = c->n_layers, D = c->dim, HS = config_head_size(c), Q = c->n_heads * HS, KVD = c->n_kv_heads * HS;
    int F = c->hidden, V = c->vocab, S = g->S, R = g->R;
    size_t pool = (size_t)g->n_pages * P * KVD * sizeof(float);
    g->kp = xcalloc((size_t)L, sizeof *g->kp);
    g->vp = xcalloc((size_t)L, sizeof *g->vp);
    for (int l = 0; l < L; l++) {
        g->kp[l] = ops->alloc(cx, pool);
        g->vp[l] = ops->alloc(cx, pool);
    }
    g->ref = xcalloc((size_t)g->n_pages, sizeof(int));
    g->free_pages = xmalloc((size_t)g->n_pages * sizeof(int));
    for (int i = 0; i < g->n_pages; i++) g->free_pages[i] = g->n_pages - 1 - i; /* pop gives 0, 1, ... */
    g->n_free = g->n_pages;
    g->ptab = xmalloc((size_t)S * g->maxp * sizeof(int));
    for (size_t i = 0; i < (size_t)S * g->maxp; i++) g->ptab[i] = -1;
    g->ptab_d = ops->alloc(cx, (size_t)S * g->maxp * sizeof(int));
    g->slots = xcalloc((size_t)S, sizeof(Slot));
    size_t ri = (size_t)R * sizeof(int);
    g->tok = xmalloc(ri); g->pos = xmalloc(ri); g->rslot = xmalloc(ri); g->len = xmalloc(ri);
    g->kvrow = xmalloc(ri); g->orow = xmalloc(ri);
    g->out_slot = xmalloc((size_t)S * sizeof(int));
    g->tok_d = ops->alloc(cx, ri); g->pos_d = ops->alloc(cx, ri); g->rslot_d = ops->alloc(cx, ri);
    g->len_d = ops->alloc(cx, ri); g->kvrow_d = ops->alloc(cx, ri); g->orow_d = ops->alloc(cx, ri);
#define ACT(p, w) p = ops->alloc(cx, (size_t)R * (w) * sizeof(float))
    ACT(g->x, D); ACT(g->xn, D); ACT(g->q, Q); ACT(g->k, KVD); ACT(g->v, KVD); ACT(g->att, Q);
    ACT(g->h, D); ACT(g->gate, F); ACT(g->up, F); ACT(g->rstd, 1);
    ACT(g->lh, m->lora ? m->lc.r : 1);
#undef ACT
    g->xo = ops->alloc(cx, (size_t)S * D * sizeof(float));
    g->xf = ops->alloc(cx, (size_t)S * D * sizeof(float));
    g->logits = ops->alloc(cx, (size_t)S * V * sizeof(float));
    g->logits_h = xmalloc((size_t)S * V * sizeof(float));
    g->rope_cos = ops->alloc(cx, (size_t)o.ctx * HS / 2 * sizeof(float));
    g->rope_sin = ops->alloc(cx, (size_t)o.ctx * HS / 2 * sizeof(float));
    llama_rope_upload(c, ops, cx, o.ctx, g->rope_cos, g->rope_sin);
    g->nwork = omp_get_max_threads();
    g->work = xcalloc((size_t)g->nwork, sizeof(SampleWork));
    for (int i = 0; i < g->nwork; i++) sample_work_init(&g->work[i], V);
    g->pack_floats = packed_total(c, m->lora ? &m->lc : NULL, ops, m);
    g->pack_buf = ops->alloc(cx, g->pack_floats * sizeof(float));
    g->drop = o.drop_source && ops == &ops_cpu;
    pack_all(g);
    g->drop = 0; /* a later engine_sync_weights has nothing to give back */
    g->st.weight_bytes = g->pack_floats * sizeof(float) + m->t.qsize;
    g->st.kv_tokens_cap = (long)g->n_pages * P;
    g->st.kv_bytes = (size_t)g->n_pages * P * engine_kv_bytes_per_token(c, ops);
    *out = g;
    return 0;
}

static void slot_release(Engine *g, int s);

void engine_free(Engine *g) {
    if (!g) return;
    const Ops *ops = g->o;
    void *cx = g->ctx;
    for (int s = 0; s < g->S; s++) {
        if (g->slots[s].state != SLOT_FREE) slot_release(g, s);
    }
    for (int l = 0; l < g->m->c.n_layers; l++) {
        ops->free(cx, g->kp[l]);
        ops->free(cx, g->vp[l]);
    }
    free(g->kp); free(g->vp); free(g->ref); free(g->free_pages); free(g->ptab);
    ops->free(cx, g->ptab_d);
    free(g->slots);
    free(g->tok); free(g->pos); free(g->rslot); free(g->len); free(g->kvrow); free(g->orow); free(g->out_slot);
    ops->free(cx, g->tok_d); ops->free(cx, g->pos_d); ops->free(cx, g->rslot_d); ops->free(cx, g->len_d);
    ops->free(cx, g->kvrow_d); ops->free(cx, g->orow_d);
    float *acts[] = {g->x, g->xn, g->q, g->k, g->v, g->att, g->h, g->gate, g->up, g->rstd, g->lh,
                     g->xo, g->xf, g->logits, g->rope_cos, g->rope_sin};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) ops->free(cx, acts[i]);
    free(g->logits_h);
    ops->free(cx, g->pack_buf);
    for (int i = 0; i < g->nwork; i++) sample_work_free(&g->work[i]);
    free(g->work);
    for (int i = 0; i < g->nreq; i++)
        if (g->reqs[i]) {
            free(g->reqs[i]->prompt);
            free(g->reqs[i]->stop_ids);
            free(g->reqs[i]);
        }
    free(g->reqs);
    free(g->req_live);
    free(g->queue);
    free(g);
}

// ----------------------------------------------------------------------------
// pages

static int pages_for(int tokens, int P) { return (tokens + P - 1) / P; }

static int page_take(Engine *g, Slot *sl) {
    LC_ASSERT(g->n_free > 0 && sl->res > 0);
    int p = g->free_pages[--g->n_free];
    g->ref[p] = 1;
    sl->res--;
    g->reserved--;
    long used = g->n_pages - g->n_free;
    if (used > g->st.kv_pages_peak) g->st.kv_pages_peak = used;
    return p;
}

static void page_drop(Engine *g, int p) {
    LC_ASSERT(g->ref[p] > 0);
    if (--g->ref[p] == 0) g->free_pages[g->n_free++] = p;
}

static void slot_release(Engine *g, int s) {
    Slot *sl = &g->slots[s];
    int *pt = g->ptab + (size_t)s * g->maxp;
    for (int i = 0; i < g->maxp; i++)
        if (pt[i] >= 0) {
            page_drop(g, pt[i]);
            pt[i] = -1;
        }
    g->reserved -= sl->res;
    free(sl->hist);
    free(sl->lp);
    free(sl->lp1);
    memset(sl, 0, sizeof *sl);
}

// ----------------------------------------------------------------------------
// requests

int engine_add(Engine *g, const EngineRequest *r, Err *e) {
    if (r->n < 1) return err_set(e, "--n: must be >= 1, got %d", r->n);
    if (r->n_prompt < 1) return err_set(e, "empty prompt");
    if (r->max_new < 1) return err_set(e, "--max-tokens: must be >= 1, got %d", r->max_new);
    if (sample_params_check(&r->sp, e)) return -1;
    int have = r->session > 0 ? engine_session_len(g, r->session) : 0;
    if (r->session > 0 && r->n != 1) return err_set(e, "a session request samples once (n = %d)", r->n);
    if (have + r->n_prompt >= g->ctx_len)
        return err_set(e, "prompt of %d tokens%s does not fit the context of %d tokens", r->n_prompt,
                       have ? " after the conversation so far" : "", g->ctx_len);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= g->m->c.vocab)
            return err_set(e, "prompt token %d at %d is outside the vocabulary of %d", r->prompt[i], i, g->m->c.vocab);
    Req *q = xcalloc(1, sizeof *q);
    q->prompt = xmalloc((size_t)r->n_prompt * sizeof(int));
    memcpy(q->prompt, r->prompt, (size_t)r->n_prompt * sizeof(int));
    q->n_prompt = r->n_prompt;
    q->n = r->n;
    q->max_new = r->max_new;
    q->first_sample = r->first_sample;
    q->logprobs = r->logprobs;
    q->session = r->session;
    q->sp = r->sp;
    q->seed = r->seed;
    q->user = r->user;
    q->n_stop_ids = r->n_stop_ids;
    if (r->n_stop_ids > 0) {
        q->stop_ids = xmalloc((size_t)r->n_stop_ids * sizeof(int));
        memcpy(q->stop_ids, r->stop_ids, (size_t)r->n_stop_ids * sizeof(int));
    }
    q->t_add = now();
    q->id = g->next_id++;
    if (g->nreq == g->capreq) {
        g->capreq = g->capreq ? 2 * g->capreq : 64;
        g->reqs = xrealloc(g->reqs, (size_t)g->capreq * sizeof *g->reqs);
        g->req_live = xrealloc(g->req_live, (size_t)g->capreq * sizeof(int));
    }
    g->reqs[g->nreq] = q;
    g->req_live[g->nreq++] = q->n;
    if (g->nq == g->capq) {
        /* compact, then grow */
        if (g->qhead > 0) memmove(g->queue, g->queue + g->qhead, (size_t)(g->nq - g->qhead) * sizeof *g->queue);
        g->nq -= g->qhead;
        g->qhead = 0;
        if (g->nq == g->capq) {
            g->capq = g->capq ? 2 * g->capq : 64;
            g->queue = xrealloc(g->queue, (size_t)g->capq * sizeof *g->queue);
        }
    }
    g->queue[g->nq++] = q;
    return q->id;
}

static int find_session(const Engine *g, int session) {
    for (int s = 0; s < g->S; s++)
        if (g->slots[s].state != SLOT_FREE && g->slots[s].session == session) return s;
    return -1;
}

int engine_session_len(const Engine *g, int session) {
    int s = find_session(g, session);
    return s < 0 ? 0 : g->slots[s].n_cached;
}

void engine_end_session(Engine *g, int session) {
    int s = find_session(g, session);
    if (s >= 0 && g->slots[s].state == SLOT_KEPT) slot_release(g, s);
}

/* Give a slot sample j of request q (hist = prompt; or a kept session's
 * slot gets the prompt appended). */
static void slot_start(Engine *g, int s, Req *q, int j, int state) {
    Slot *sl = &g->slots[s];
    /* a kept session continues after its cached tokens (the caller resends
     * the last sampled one, which never went through the model) */
    int base = sl->state == SLOT_KEPT ? sl->n_cached : 0;
    if (sl->state != SLOT_KEPT) memset(sl, 0, sizeof *sl);
    sl->hist = xrealloc(sl->hist, (size_t)(base + q->n_prompt + q->max_new) * sizeof(int));
    memcpy(sl->hist + base, q->prompt, (size_t)q->n_prompt * sizeof(int));
    sl->cap = base + q->n_prompt + q->max_new;
    sl->n_hist = base + q->n_prompt;
    sl->n_prompt = sl->n_hist;
    sl->state = state;
    sl->req = q;
    sl->sample = j;
    sl->session = q->session;
    sl->seed = sample_seed(q->seed, (uint64_t)(q->first_sample + j));
    free(sl->lp);
    free(sl->lp1);
    sl->lp = q->logprobs ? xmalloc((size_t)q->max_new * sizeof(float)) : NULL;
    sl->lp1 = q->logprobs ? xmalloc((size_t)q->max_new * sizeof(float)) : NULL;
}

/* Positions a sample can ever hold in the cache: every token but the last
 * sampled one, at most the context. */
static int max_cached(const Engine *g, int n_hist_prompt, int max_new) {
    long t = (long)n_hist_prompt + max_new - 1;
    return t < g->ctx_len ? (int)t : g->ctx_len;
}

static void admit(Engine *g) {
    while (g->qhead < g->nq) {
        Req *q = g->queue[g->qhead];
        if (q->session > 0) {
            int s = find_session(g, q->session);
            if (s >= 0 && g->slots[s].state != SLOT_KEPT) return; /* its previous turn still runs */
            if (s < 0) {
                for (s = 0; s < g->S && g->slots[s].state != SLOT_FREE; s++) {}
                if (s == g->S) return;
            }
            Slot *sl = &g->slots[s];
            int have_pages = 0;
            for (int i = 0; i < g->maxp; i++) have_pages += g->ptab[(size_t)s * g->maxp + i] >= 0;
            int base = sl->state == SLOT_KEPT ? sl->n_cached : 0;
            int need = pages_for(max_cached(g, base + q->n_prompt, q->max_new), g->P) - have_pages;
            if (need < 0) need = 0;
            if (g->n_free - g->reserved < need) return;
            slot_start(g, s, q, 0, SLOT_PREFILL);
            sl->res = need;
            g->reserved += need;
            q->admitted = 1;
            g->qhead++;
            continue;
        }
        int nfree = 0;
        for (int s = 0; s < g->S; s++) nfree += g->slots[s].state == SLOT_FREE;
        int k = q->n - q->admitted;
        if (k > nfree) k = nfree;
        int P = g->P, shared = q->n_prompt / P; /* full prompt pages, prefilled once */
        int own = pages_for(max_cached(g, q->n_prompt, q->max_new), P) - shared;
        int avail = g->n_free - g->reserved;
        if (k > 0 && shared + k * own > avail) k = own > 0 ? (avail - shared) / own : 0;
        if (k <= 0) return;
        int first = -1;
        for (int s = 0, j = 0; s < g->S && j < k; s++) {
            if (g->slots[s].state != SLOT_FREE) continue;
            slot_start(g, s, q, q->admitted + j, j == 0 ? SLOT_PREFILL : SLOT_WAIT_FORK);
            g->slots[s].res = own + (j == 0 ? shared : 0);
            g->slots[s].fork_from = first;
            if (j == 0) first = s;
            j++;
        }
        g->reserved += shared + k * own;
        q->admitted += k;
        if (q->admitted == q->n) g->qhead++;
    }
}

// ----------------------------------------------------------------------------
// the forward over a step's rows

static void lin(Engine *g, int l, int mod, float *out, const float *x, int N, int Din, int Dout) {
    Llama *m = g->m;
    if (m->ql[l][mod]) g->o->qmatmul_rows(g->ctx, out, x, m->ql[l][mod], m->qwork, N, 0.0f);
    else g->o->matmul_rows(g->ctx, out, x, g->pk.w[l][mod], N, Din, Dout, 0.0f);
    if (!m->lora || !m->lora_enabled || !g->pk.A[l][mod]) return;
    g->o->matmul_rows(g->ctx, g->lh, x, g->pk.A[l][mod], N, Din, m->lc.r, 0.0f);
    g->o->matmul_rows(g->ctx, out, g->lh, g->pk.B[l][mod], N, m->lc.r, Dout, m->lora_s);
}

static void forward(Engine *g, int N, int NO) {
    Llama *m = g->m;
    const LlamaConfig *c = &m->c;
    const Ops *o = g->o;
    void *cx = g->ctx;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, HS = config_head_size(c);
    int Q = H * HS, KVD = KV * HS, F = c->hidden, L = c->n_layers;
    if (m->qembed) o->qembed_fwd(cx, g->x, g->tok_d, m->qembed, m->qwork, N);
    else o->embed_fwd(cx, g->x, g->tok_d, m->w.embed, N, D);
    for (int l = 0; l < L; l++) {
        const LayerWeights *w = &m->w.layer[l];
        o->rmsnorm_fwd(cx, g->xn, g->rstd, g->x, w->ln1, N, D, c->norm_eps);
        lin(g, l, LORA_Q, g->q, g->xn, N, D, Q);
        lin(g, l, LORA_K, g->k, g->xn, N, D, KVD);
        lin(g, l, LORA_V, g->v, g->xn, N, D, KVD);
        o->rope_fwd(cx, g->q, g->pos_d, g->rope_cos, g->rope_sin, N, H, HS);
        o->rope_fwd(cx, g->k, g->pos_d, g->rope_cos, g->rope_sin, N, KV, HS);
        o->rows_scatter(cx, g->kp[l], g->k, g->kvrow_d, N, KVD);
        o->rows_scatter(cx, g->vp[l], g->v, g->kvrow_d, N, KVD);
        o->attn_paged(cx, g->att, g->q, g->kp[l], g->vp[l], g->ptab_d, g->rslot_d, g->len_d, N, H, KV, HS, g->P,
                      g->maxp);
        lin(g, l, LORA_O, g->h, g->att, N, Q, D);
        o->add(cx, g->h, g->x, (size_t)N * D);
        o->rmsnorm_fwd(cx, g->xn, g->rstd, g->h, w->ln2, N, D, c->norm_eps);
        lin(g, l, LORA_GATE, g->gate, g->xn, N, D, F);
        lin(g, l, LORA_UP, g->up, g->xn, N, D, F);
        o->swiglu_fwd(cx, g->gate, g->gate, g->up, (size_t)N * F);
        lin(g, l, LORA_DOWN, g->x, g->gate, N, F, D);
        o->add(cx, g->x, g->h, (size_t)N * D);
    }
    o->rows_gather(cx, g->xo, g->x, g->orow_d, NO, D);
    o->rmsnorm_fwd(cx, g->xf, g->rstd, g->xo, m->w.norm_f, NO, D, c->norm_eps);
    if (m->qhead) o->qmatmul_rows(cx, g->logits, g->xf, m->qhead, m->qwork, NO, 0.0f);
    else o->matmul_rows(cx, g->logits, g->xf, g->pk.head, NO, D, c->vocab, 0.0f);
    size_t nl = (size_t)NO * c->vocab;
    if (o->download_act)
        o->download_act(cx, g->logits_h, g->logits, nl);
    else
        o->download(cx, g->logits_h, g->logits, nl * sizeof(float));
}

/* Row r: token t at position p of slot s (pages taken as needed). */
static void add_row(Engine *g, int r, int s, int t, int p) {
    Slot *sl = &g->slots[s];
    int *pt = g->ptab + (size_t)s * g->maxp;
    if (pt[p / g->P] < 0) pt[p / g->P] = page_take(g, sl);
    g->tok[r] = t;
    g->pos[r] = p;
    g->rslot[r] = s;
    g->len[r] = p + 1;
    g->kvrow[r] = pt[p / g->P] * g->P + p % g->P;
}

/* The prompt of slot s0 is in the cache: the other samples of its request
 * get the full pages by reference and a copy of the partial last one, and
 * draw their first token from the prompt's logits (row r: src). */
static void fork_samples(Engine *g, int s0, int r, int *src) {
    int P = g->P, n = g->slots[s0].n_cached, full = n / P, part = n % P;
    const int *pt0 = g->ptab + (size_t)s0 * g->maxp;
    const LlamaConfig *c = &g->m->c;
    int KVD = c->n_kv_heads * config_head_size(c);
    g->slots[s0].state = SLOT_RUN;
    src[s0] = r;
    for (int s = 0; s < g->S; s++) {
        Slot *sl = &g->slots[s];
        if (sl->state != SLOT_WAIT_FORK || sl->fork_from != s0) continue;
        int *pt = g->ptab + (size_t)s * g->maxp;
        for (int i = 0; i < full; i++) {
            pt[i] = pt0[i];
            g->ref[pt0[i]]++;
        }
        if (part) {
            /* rows of the pools only through index arrays: a backend may
             * pack them (bf16) */
            pt[full] = page_take(g, sl);
            int idx[2 * ENGINE_PAGE];
            for (int i = 0; i < part; i++) {
                idx[i] = pt0[full] * P + i;
                idx[ENGINE_PAGE + i] = pt[full] * P + i;
            }
            g->o->upload(g->ctx, g->kvrow_d, idx, sizeof idx);
            for (int l = 0; l < c->n_layers; l++) {
                g->o->rows_gather(g->ctx, g->k, g->kp[l], g->kvrow_d, part, KVD);
                g->o->rows_scatter(g->ctx, g->kp[l], g->k, g->kvrow_d + ENGINE_PAGE, part, KVD);
                g->o->rows_gather(g->ctx, g->v, g->vp[l], g->kvrow_d, part, KVD);
                g->o->rows_scatter(g->ctx, g->vp[l], g->v, g->kvrow_d + ENGINE_PAGE, part, KVD);
            }
        }
        sl->n_cached = n;
        sl->state = SLOT_RUN;
        src[s] = r;
    }
}

static int is_stop(const Req *q, int t) {
    for (int i = 0; i < q->n_stop_ids; i++)
        if (q->stop_ids[i] == t) return 1;
    return 0;
}

static void finish(Engine *g, int s, int why, const EngineCallbacks *cb) {
    Slot *sl = &g->slots[s];
    Req *q = sl->req;
    if (cb && cb->on_done) {
        EngineSeq es = {q->id, q->first_sample + sl->sample, q->user, q->prompt, q->n_prompt,
                        sl->hist + sl->n_prompt, sl->lp, sl->lp1, sl->n_hist - sl->n_prompt, why, NULL, sl->t_first};
        cb->on_done(cb->ud, &es);
    }
    g->st.samples_done++;
    int rid = q->id; /* requests are numbered in the order of g->reqs */
    if (--g->req_live[rid] == 0) {
        free(q->prompt);
        free(q->stop_ids);
        free(q);
        g->reqs[rid] = NULL;
    }
    if (sl->session > 0) {
        /* keep the cache: later requests of the session continue it */
        sl->state = SLOT_KEPT;
        sl->req = NULL;
        g->reserved -= sl->res;
        sl->res = 0;
        return;
    }
    slot_release(g, s);
}

int engine_step(Engine *g, const EngineCallbacks *cb) {
    admit(g);
    int S = g->S, N = 0, NO = 0;
    /* decode rows: running samples' last sampled tokens */
    for (int s = 0; s < S; s++) {
        Slot *sl = &g->slots[s];
        if (sl->state != SLOT_RUN) continue;
        add_row(g, N, s, sl->hist[sl->n_hist - 1], sl->n_cached);
        g->orow[NO] = N;
        g->out_slot[NO++] = s;
        N++;
    }
    long decode_rows = N;
    /* prompt chunks in admission (slot) order */
    for (int s = 0; s < S && N < g->R; s++) {
        Slot *sl = &g->slots[s];
        if (sl->state != SLOT_PREFILL) continue;
        int take = sl->n_hist - sl->n_cached;
        if (take > g->R - N) take = g->R - N;
        for (int i = 0; i < take; i++, N++) add_row(g, N, s, sl->hist[sl->n_cached + i], sl->n_cached + i);
        sl->n_cached += take;
        if (sl->n_cached == sl->n_hist) {
            g->orow[NO] = N - 1;
            g->out_slot[NO++] = s;
        }
    }
    int live = 0;
    for (int s = 0; s < S; s++) live += g->slots[s].state != SLOT_FREE && g->slots[s].state != SLOT_KEPT;
    if (N == 0) return live + (g->nq - g->qhead);
    /* a decode row's token is in the cache after this forward */
    for (int s = 0; s < S; s++)
        if (g->slots[s].state == SLOT_RUN) g->slots[s].n_cached++;
    const Ops *o = g->o;
    size_t ri = (size_t)N * sizeof(int);
    o->upload(g->ctx, g->tok_d, g->tok, ri);
    o->upload(g->ctx, g->pos_d, g->pos, ri);
    o->upload(g->ctx, g->rslot_d, g->rslot, ri);
    o->upload(g->ctx, g->len_d, g->len, ri);
    o->upload(g->ctx, g->kvrow_d, g->kvrow, ri);
    o->upload(g->ctx, g->orow_d, g->orow, (size_t)NO * sizeof(int));
    o->upload(g->ctx, g->ptab_d, g->ptab, (size_t)S * g->maxp * sizeof(int));
    double t0 = now();
    forward(g, N, NO);
    double t1 = now();
    g->st.t_forward += t1 - t0;
    g->st.steps++;
    g->st.rows += N;
    g->st.decode_tokens += decode_rows;
    g->st.prefill_tokens += N - decode_rows;

    /* each running slot samples from its output row; a finished prompt
     * becomes its samples, all drawing from its row */
    int *src = xmalloc((size_t)S * sizeof(int)); /* slot -> output row, or -1 */
    for (int s = 0; s < S; s++) src[s] = -1;
    for (int r = 0; r < NO; r++) {
        int s = g->out_slot[r];
        if (g->slots[s].state == SLOT_PREFILL)
            fork_samples(g, s, r, src);
        else
            src[s] = r;
    }
    int V = g->m->c.vocab;
#pragma omp parallel for schedule(dynamic)
    for (int s = 0; s < S; s++) {
        if (src[s] < 0) continue;
        Slot *sl = &g->slots[s];
        int step = sl->n_hist - sl->n_prompt;
        sl->so = sample_token(&sl->req->sp, g->logits_h + (size_t)src[s] * V, sl->hist, sl->n_hist,
                              sample_uniform(sl->seed, (uint64_t)step), &g->work[omp_get_thread_num()]);
    }
    double t2 = now();
    g->st.t_sample += t2 - t1;
    for (int s = 0; s < S; s++) {
        if (src[s] < 0) continue;
        Slot *sl = &g->slots[s];
        Req *q = sl->req;
        int step = sl->n_hist - sl->n_prompt;
        if (step == 0) sl->t_first = t2 - q->t_add;
        sl->hist[sl->n_hist++] = sl->so.token;
        if (sl->lp) {
            sl->lp[step] = sl->so.logprob;
            sl->lp1[step] = sl->so.logprob_t1;
        }
        int why = FINISH_NONE;
        if (is_stop(q, sl->so.token))
            why = FINISH_STOP;
        else if (step + 1 >= q->max_new)
            why = FINISH_LENGTH;
        else if (sl->n_cached >= g->ctx_len)
            why = FINISH_CTX;
        if (cb && cb->on_token) {
            EngineSeq es = {q->id, q->first_sample + sl->sample, q->user, q->prompt, q->n_prompt,
                            sl->hist + sl->n_prompt, sl->lp, sl->lp1, sl->n_hist - sl->n_prompt, why,
                            g->logits_h + (size_t)src[s] * g->m->c.vocab, sl->t_first};
            if (cb->on_token(cb->ud, &es) && why == FINISH_NONE) why = FINISH_STOP;
        }
        if (why != FINISH_NONE) finish(g, s, why, cb);
    }
    free(src);
    live = 0;
    for (int s = 0; s < S; s++) live += g->slots[s].state != SLOT_FREE && g->slots[s].state != SLOT_KEPT;
    return live + (g->nq - g->qhead);
}

void engine_run(Engine *g, const EngineCallbacks *cb) {
    while (engine_step(g, cb) > 0) {}
}

EngineStats engine_stats(const Engine *g) {
    EngineStats s = g->st;
    s.kv_pages = g->n_pages - g->n_free;
    return s;
}
