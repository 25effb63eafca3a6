/*
 * llama.c: the decoder's forward and backward, written once against the op
 * table. No backend headers here: where the data lives is a property of the
 * buffers, chosen by the Ops table passed to llama_init.
 *
 * Per layer (pre-norm, Touvron et al. 2023):
 *   h   = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),
 *         n1 = rmsnorm(x) * ln1
 *   out = h + down_proj(silu(gate_proj(n2)) * up_proj(n2)), n2 = rmsnorm(h) * ln2
 * then the final norm and the LM head with cross-entropy, fused.
 */
#include "llama.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// the activation arena: one list of (pointer slot, size), walked twice, once
// to size and once to point (the table-and-point mechanism of params.c).
// With recompute only the layer inputs x are per layer; the rest of layer 0's
// LayerActs is the one shared set every layer's pointers alias. forward_only
// adds: layer l's input x is buffer l % 2 (a layer reads one, writes the other).

typedef struct {
    float **slot;
    size_t numel;
} ActSlot;

/* Scratch of the lora ops: the most any adapted module needs. */
static size_t lora_work(const LlamaConfig *c, const LoraConfig *lc, int N) {
    size_t mx = 0;
    for (int mod = 0; mod < LORA_NMOD; mod++) {
        int din, dout;
        lora_module_dims(c, mod, &din, &dout);
        size_t w = ops_lora_work_floats(N, din, dout, lc->r, lc->dropout);
        if ((lc->targets >> mod & 1u) && w > mx) mx = w;
    }
    return mx;
}

static int act_slots(Llama *m, int with_grads, ActSlot *s) {
    const LlamaConfig *c = &m->c;
    size_t N = (size_t)m->B * m->T, D = c->dim, HS = config_head_size(c);
    size_t Q = c->n_heads * HS, KVD = c->n_kv_heads * HS, F = c->hidden;
    int n = 0;
#define A(p, sz) (s[n].slot = &(p), s[n].numel = (sz), n++)
    for (int l = 0; l < c->n_layers; l++) {
        LayerActs *a = &m->acts[l];
        if (m->forward_only && l > 1) continue;
        A(a->x, N * D);
        if (m->recompute && l > 0) continue;
        A(a->xn1, N * D); A(a->rstd1, N);
        A(a->q, N * Q); A(a->k, N * KVD); A(a->v, N * KVD);
        A(a->att, N * Q); A(a->lse, (size_t)m->B * c->n_heads * m->T);
        A(a->h, N * D); A(a->xn2, N * D); A(a->rstd2, N);
        A(a->gate, N * F); A(a->up, N * F); A(a->act, N * F);
        for (int mod = 0; m->lora && mod < LORA_NMOD; mod++) {
            /* the shared set has one h per module adapted anywhere */
            int any = m->recompute ? (int)(m->lc.targets >> mod & 1u) : lora_adapted(&m->lc, l, mod);
            if (any) A(a->lh[mod], N * (size_t)m->lc.r);
        }
    }
    A(m->x_out, N * D); A(m->xf, N * D); A(m->rstdf, N); A(m->row_loss, N);
    A(m->logits, (size_t)c->vocab);
    A(m->rope_cos, (size_t)m->T * HS / 2); A(m->rope_sin, (size_t)m->T * HS / 2);
    if (m->lora)
        A(m->lora_work, lora_work(c, &m->lc, (int)N));
    if (with_grads) {
        A(m->dres, N * D); A(m->dxn, N * D); A(m->datt, N * Q);
        A(m->dq, N * Q); A(m->dk, N * KVD); A(m->dv, N * KVD);
        A(m->dgate, N * F); A(m->dup, N * F); A(m->dact, N * F);
    }
#undef A
    return n;
}

#define MAX_SLOTS ((14 + LORA_NMOD) * LC_MAX_LAYERS + 24)

static size_t round_up(size_t n) { return (n + PARAMS_ALIGN - 1) / PARAMS_ALIGN * PARAMS_ALIGN; }

static const LlamaOpts no_opts = {LLAMA_GRADS_NONE, NULL, 0, NULL, 0};

/* The option checks and the adapter table, shared by init and memory. */
static int setup(Llama *m, const LlamaConfig *c, int B, int T, const LlamaOpts *o, Err *e) {
    memset(m, 0, sizeof *m);
    if (B <= 0) return err_set(e, "batch size: must be positive, got %d", B);
    if (T <= 0) return err_set(e, "sequence length: must be positive, got %d", T);
    if (T > c->max_seq)
        return err_set(e, "sequence length: %d exceeds the model's context length %d", T, c->max_seq);
    LC_ASSERT(o->grads >= LLAMA_GRADS_NONE && o->grads <= LLAMA_GRADS_INPUT);
    if (params_build(c, &m->t, e)) return -1;
    if (o->qtypes) {
        params_set_quant(&m->t, o->qtypes);
        if (o->grads == LLAMA_GRADS_FULL) {
            params_free(&m->t);
            return err_set(e, "full training on a quantised base: its weights are frozen (train LoRA adapters on "
                              "it with --lora-r, or load it as float32)");
        }
    }
    m->c = *c;
    m->B = B;
    m->T = T;
    m->grads_mode = o->grads;
    m->recompute = o->recompute != 0 || o->forward_only != 0;
    m->forward_only = o->forward_only != 0;
    LC_ASSERT(!m->forward_only || o->grads == LLAMA_GRADS_NONE);
    if (o->lora) {
        if (lora_build(o->lora, c, &m->lt, e)) {
            params_free(&m->t);
            return -1;
        }
        m->lora = 1;
        m->lc = *o->lora;
        m->lora_s = lora_scale(o->lora);
        m->lora_enabled = 1;
        m->lora_train = o->grads != LLAMA_GRADS_NONE;
    }
    return 0;
}

LlamaMem llama_memory_opts(const LlamaConfig *c, const Ops *ops, int B, int T, const LlamaOpts *o) {
    LlamaMem mem = {0, 0, 0, 0, 0};
    static Llama m; /* only shapes are read; the slots point into it */
    if (!o) o = &no_opts;
    if (setup(&m, c, B, T, o, NULL)) return mem;
    int with_grads = o->grads != LLAMA_GRADS_NONE;
    ActSlot s[MAX_SLOTS];
    int n = act_slots(&m, with_grads, s);
    size_t acts = 0;
    for (int i = 0; i < n; i++) acts += round_up(s[i].numel);
    int HS = config_head_size(c);
    acts += ops->scratch_floats(NULL, B, T, c->n_heads, HS, c->vocab, c->dim);
    mem.params = m.t.size * sizeof(float) + m.t.qsize;
    if (params_has_quant(&m.t)) acts += ops->qwork_floats(NULL, c->hidden > c->dim ? c->hidden : c->dim);
    mem.grads = o->grads == LLAMA_GRADS_FULL ? m.t.size * sizeof(float) : 0;
    mem.acts = acts * sizeof(float) + 3 * (size_t)B * T * sizeof(int);
    if (m.lora) {
        mem.lora = m.lt.size * sizeof(float);
        mem.lora_grads = with_grads ? mem.lora : 0;
    }
    params_free(&m.t);
    params_free(&m.lt);
    return mem;
}

LlamaMem llama_memory(const LlamaConfig *c, const Ops *ops, int B, int T, int with_grads) {
    LlamaOpts o = {with_grads ? LLAMA_GRADS_FULL : LLAMA_GRADS_NONE, NULL, 0, NULL, 0};
    return llama_memory_opts(c, ops, B, T, &o);
}

int llama_init(Llama *m, const LlamaConfig *c, const Ops *ops, void *ctx, int B, int T,
               int with_grads, Err *e) {
    LlamaOpts o = {with_grads ? LLAMA_GRADS_FULL : LLAMA_GRADS_NONE, NULL, 0, NULL, 0};
    return llama_init_opts(m, c, ops, ctx, B, T, &o, e);
}

int llama_init_opts(Llama *m, const LlamaConfig *c, const Ops *ops, void *ctx, int B, int T,
                    const LlamaOpts *o, Err *e) {
    if (!o) o = &no_opts;
    if (o->qtypes && !ops->qmatmul_fwd)
        return err_set(e, "a quantised base: the %s backend has no quantised ops yet", ops->name);
    if (setup(m, c, B, T, o, e)) return -1;
    int with_grads = o->grads != LLAMA_GRADS_NONE;
    m->ops = ops;
    m->ctx = ctx;
    m->params = ops->alloc(ctx, m->t.size * sizeof(float));
    params_point(c, &m->t, m->params, sizeof(float), &m->w);
    if (ops->bind_params) ops->bind_params(ctx, m->params, m->t.size);
    if (params_has_quant(&m->t)) {
        m->qdata = ops->alloc(ctx, m->t.qsize);
        m->qt = xcalloc((size_t)m->t.n, sizeof *m->qt);
        llama_quant_point(m);
        m->qwork = ops->alloc(ctx, ops->qwork_floats(ctx, c->hidden > c->dim ? c->hidden : c->dim) * sizeof(float));
    }
    if (o->grads == LLAMA_GRADS_FULL) {
        m->grads = ops->alloc(ctx, m->t.size * sizeof(float));
        params_point(c, &m->t, m->grads, sizeof(float), &m->g);
    }
    if (m->lora) {
        m->lora_params = ops->alloc(ctx, m->lt.size * sizeof(float));
        lora_point(&m->lc, c, &m->lt, m->lora_params, &m->la);
        if (ops->bind_params) ops->bind_params(ctx, m->lora_params, m->lt.size);
        if (with_grads) {
            m->lora_grads = ops->alloc(ctx, m->lt.size * sizeof(float));
            lora_point(&m->lc, c, &m->lt, m->lora_grads, &m->lg);
        }
    }
    ActSlot s[MAX_SLOTS];
    int n = act_slots(m, with_grads, s);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += round_up(s[i].numel);
    int HS = config_head_size(c);
    m->scratch_floats = ops->scratch_floats(ctx, B, T, c->n_heads, HS, c->vocab, c->dim);
    m->arena_floats = total + m->scratch_floats;
    m->arena = ops->alloc(ctx, m->arena_floats * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        *s[i].slot = m->arena + off;
        off += round_up(s[i].numel);
    }
    m->scratch = m->arena + off;
    if (m->recompute) {
        float *x1 = c->n_layers > 1 ? m->acts[1].x : NULL; /* forward_only's second buffer */
        for (int l = 1; l < c->n_layers; l++) {
            float *x = m->acts[l].x;
            m->acts[l] = m->acts[0];
            m->acts[l].x = m->forward_only ? (l % 2 ? x1 : m->acts[0].x) : x;
        }
    }
    size_t bt = (size_t)B * T * sizeof(int);
    m->tokens = ops->alloc(ctx, bt);
    m->targets = ops->alloc(ctx, bt);
    m->pos = ops->alloc(ctx, bt);
    m->spans = ops->alloc(ctx, 3 * bt);

    llama_rope_upload(c, ops, ctx, T, m->rope_cos, m->rope_sin);
    return 0;
}

void llama_rope_upload(const LlamaConfig *c, const Ops *ops, void *ctx, int T, float *cos_t, float *sin_t) {
    /* angle = pos * inv_freq in float32 as transformers does, then cos/sin
     * of that float */
    int half = config_head_size(c) / 2;
    float inv_freq[4096];
    LC_ASSERT(half <= 4096);
    config_rope_inv_freq(c, inv_freq);
    float *cs = xmalloc((size_t)T * half * sizeof(float)), *sn = xmalloc((size_t)T * half * sizeof(float));
    for (int p = 0; p < T; p++)
        for (int i = 0; i < half; i++) {
            float ang = (float)p * inv_freq[i];
            cs[(size_t)p * half + i] = (float)cos((double)ang);
            sn[(size_t)p * half + i] = (float)sin((double)ang);
        }
    ops->upload(ctx, cos_t, cs, (size_t)T * half * sizeof(float));
    ops->upload(ctx, sin_t, sn, (size_t)T * half * sizeof(float));
    free(cs);
    free(sn);
}

/* Which arena slots belong to one micro-batch of stage [l0, l1): every
 * activation of those layers (with recompute only their inputs x; the
 * shared set is recomputed) and the stage's output, layer l1's input. */
static int stage_slot(const Llama *m, int l0, int l1, float *const *slot) {
    const char *p = (const char *)slot;
    for (int l = l0; l < l1; l++) {
        const LayerActs *a = &m->acts[l];
        if (m->recompute ? slot == &a->x : (p >= (const char *)a && p < (const char *)(a + 1))) return 1;
    }
    return l1 < m->c.n_layers && slot == &m->acts[l1].x;
}

size_t llama_stage_floats(const Llama *m, int l0, int l1) {
    ActSlot s[MAX_SLOTS];
    int n = act_slots((Llama *)m, 0, s); /* only the slots' addresses are taken */
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (stage_slot(m, l0, l1, s[i].slot)) total += round_up(s[i].numel);
    return total;
}

void llama_stage_bind(Llama *m, int l0, int l1, float *mem) {
    ActSlot s[MAX_SLOTS];
    int n = act_slots(m, 0, s);
    size_t off = 0;
    for (int i = 0; i < n; i++)
        if (stage_slot(m, l0, l1, s[i].slot)) {
            *s[i].slot = mem + off;
            off += round_up(s[i].numel);
        }
}

void llama_free(Llama *m) {
    if (m->ops) {
        void *ctx = m->ctx;
        m->ops->free(ctx, m->params);
        if (m->grads) m->ops->free(ctx, m->grads);
        if (m->lora_params) m->ops->free(ctx, m->lora_params);
        if (m->lora_grads) m->ops->free(ctx, m->lora_grads);
        m->ops->free(ctx, m->arena);
        if (m->qdata) m->ops->free(ctx, m->qdata);
        if (m->qwork) m->ops->free(ctx, m->qwork);
        m->ops->free(ctx, m->tokens);
        m->ops->free(ctx, m->targets);
        m->ops->free(ctx, m->pos);
        m->ops->free(ctx, m->spans);
    }
    free(m->qt);
    params_free(&m->t);
    params_free(&m->lt);
    memset(m, 0, sizeof *m);
}

void llama_quant_point(Llama *m) {
    const ParamTable *t = &m->t;
    memset(m->ql, 0, sizeof m->ql);
    m->qembed = m->qhead = NULL;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        memset(&m->qt[i], 0, sizeof m->qt[i]);
        if (!p->qtype) continue;
        m->qt[i] = quant_tensor(p->qtype, (int)p->shape[0], (int)p->shape[1], m->qdata + p->qoffset);
    }
    /* the typed views, in params_build's order: embed, 9 per layer, norm, head */
    int i = 0;
    if (t->p[i].qtype) m->qembed = &m->qt[i];
    i++;
    for (int l = 0; l < m->c.n_layers; l++, i += 2)
        for (int mod = 0; mod < LORA_NMOD; mod++, i++)
            if (t->p[i].qtype) m->ql[l][mod] = &m->qt[i];
    i++; /* final norm */
    if (m->c.tied && !m->c.num_labels) m->qhead = m->qembed;
    else if (i < t->n && t->p[i].qtype) m->qhead = &m->qt[i];
}

void llama_lora_init(Llama *m, uint64_t seed) {
    LC_ASSERT(m->lora);
    float *h = xcalloc(m->lt.size, sizeof(float));
    lora_init_weights(&m->lc, &m->lt, h, seed);
    if (m->lc.head) /* PEFT's modules_to_save: the trained copy starts as the base's head */
        m->ops->download(m->ctx, h + m->lt.p[m->lt.n - 1].offset, m->w.lm_head,
                         (size_t)m->c.num_labels * m->c.dim * sizeof(float));
    m->ops->upload(m->ctx, m->lora_params, h, m->lt.size * sizeof(float));
    free(h);
}

void llama_doc_pos(const int *tokens, int B, int T, int sep, int *pos) {
    for (int b = 0; b < B; b++) {
        int p = 0;
        for (int t = 0; t < T; t++) {
            pos[(size_t)b * T + t] = p++;
            if (sep >= 0 && tokens[(size_t)b * T + t] == sep) p = 0;
        }
    }
}

int llama_set_batch(Llama *m, const int *tokens, const int *targets, const int *pos, Err *e) {
    int B = m->B, T = m->T, V = m->c.vocab;
    size_t n = (size_t)B * T;
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return err_set(e, "batch: token %d at index %zu is outside the vocabulary [0, %d)",
                           tokens[i], i, V);
        if (targets && targets[i] != LC_IGNORE && (targets[i] < 0 || targets[i] >= V))
            return err_set(e, "batch: target %d at index %zu is outside the vocabulary [0, %d)",
                           targets[i], i, V);
    }
    int *own = NULL;
    if (!pos) {
        own = xmalloc(n * sizeof(int));
        llama_doc_pos(tokens, B, T, -1, own);
        pos = own;
    }
    /* a document starts at position 0 and counts up by one; a branch
     * restarts within its document's first run (ops.h) */
    int *sp = xmalloc(n * 3 * sizeof(int));
    for (int b = 0; b < B; b++) {
        int t = attn_spans(pos + (size_t)b * T, T, sp + (size_t)b * T * 3);
        if (t >= 0) {
            int p = pos[(size_t)b * T + t];
            free(own), free(sp);
            return err_set(e, "batch: position %d at row %d, column %d is inconsistent", p, b, t);
        }
    }
    m->ops->upload(m->ctx, m->tokens, tokens, n * sizeof(int));
    if (targets) {
        m->ops->upload(m->ctx, m->targets, targets, n * sizeof(int));
    } else {
        int *ig = xmalloc(n * sizeof(int));
        for (size_t i = 0; i < n; i++) ig[i] = LC_IGNORE;
        m->ops->upload(m->ctx, m->targets, ig, n * sizeof(int));
        free(ig);
    }
    m->ops->upload(m->ctx, m->pos, pos, n * sizeof(int));
    m->ops->upload(m->ctx, m->spans, sp, n * 3 * sizeof(int));
    free(own), free(sp);
    return 0;
}

long llama_count_targets(const int *targets, size_t n) {
    long k = 0;
    for (size_t i = 0; i < n; i++) k += targets[i] != LC_IGNORE;
    return k;
}

double llama_flops_per_token(const LlamaConfig *c, int T) {
    ParamTable t;
    if (params_build(c, &t, NULL)) return 0;
    double n = (double)t.numel - (c->tied ? 0.0 : (double)c->vocab * c->dim);
    params_free(&t);
    return 6.0 * n + 12.0 * c->n_layers * c->n_heads * config_head_size(c) * (double)T;
}

// ----------------------------------------------------------------------------
// the linears with their LoRA side path

/* out(N, Dout) = x W^T (+ the adapter of module mod in layer l); h is the
 * adapter's (N, r) activation (NULL: the layer's own). */
static void lin_fwd(Llama *m, int l, int mod, float *out, const float *x, const float *w, int N, int Din,
                    int Dout, int base, int train) {
    const QTensor *q = m->ql[l][mod];
    if (base && q) m->ops->qmatmul_fwd(m->ctx, out, x, q, m->qwork, N);
    else if (base) m->ops->matmul_fwd(m->ctx, out, x, w, N, Din, Dout);
    if (!m->lora || !m->lora_enabled || !lora_adapted(&m->lc, l, mod)) return;
    const LoraPair *p = &m->la.layer[l][mod];
    float drop = train && m->lora_train ? m->lc.dropout : 0.0f;
    m->ops->lora_fwd(m->ctx, out, m->acts[l].lh[mod], x, p->A, p->B, m->lora_work, N, Din, Dout, m->lc.r,
                     m->lora_s, drop, m->lora_seed, l, mod);
}

/* dx = (or += with accum) dout W, dW += (FULL only), then the adapter's
 * dA, dB += and dx += */
static void lin_bwd(Llama *m, int l, int mod, float *dx, float *dw, const float *dout, const float *x,
                    const float *w, int N, int Din, int Dout, int accum) {
    const QTensor *q = m->ql[l][mod];
    if (q) m->ops->qmatmul_bwd(m->ctx, dx, dout, q, m->qwork, N, accum);
    else m->ops->matmul_bwd(m->ctx, dx, dw, dout, x, w, N, Din, Dout, accum);
    if (!m->lora || !m->lora_enabled || !lora_adapted(&m->lc, l, mod)) return;
    const LoraPair *p = &m->la.layer[l][mod], *g = &m->lg.layer[l][mod];
    float drop = m->lora_train ? m->lc.dropout : 0.0f;
    m->ops->lora_bwd(m->ctx, dx, g->A, g->B, dout, x, m->acts[l].lh[mod], p->A, p->B, m->lora_work, N, Din,
                     Dout, m->lc.r, m->lora_s, drop, m->lora_seed, l, mod);
}

/* Full training: DESIGN.md's 6N + 12*L*H*HS*T. With adapters on a frozen
 * base (per token, N base weights): the forward's GEMMs are 2N, the
 * backward's input gradients (dx = dout W) another 2N, and the weight
 * gradients (dW = dout^T x, the other 2N of 6N) are never computed for
 * frozen weights: 4N. Each adapter (A: r x Din, B: Dout x r) does its own
 * 2 x params forward (h = x A^T, out += s h B^T) and 4 x params backward
 * (dB, dh, dA, dx +=): 6 x the adapter parameters. The attention term
 * (QK^T and AV, forward and both backward products) is there either way. */
double llama_train_flops_per_token(const Llama *m) {
    const LlamaConfig *c = &m->c;
    double fpt = llama_flops_per_token(c, m->T);
    if (!m->lora) return fpt;
    double attn = 12.0 * c->n_layers * c->n_heads * config_head_size(c) * (double)m->T, nb = (fpt - attn) / 6;
    return 4 * nb + attn + 6.0 * (double)m->lt.numel;
}

// ----------------------------------------------------------------------------
// the embedding and the LM head, float32 or quantised

static void embed_rows(Llama *m, float *out, const int *tok, int N) {
    if (m->qembed) m->ops->qembed_fwd(m->ctx, out, tok, m->qembed, m->qwork, N);
    else m->ops->embed_fwd(m->ctx, out, tok, m->w.embed, N, m->c.dim);
}

/* lmhead_ce (row_scale NULL: every row by scale) or lmhead_rows over the
 * final norm's output; dw only for a float head */
static double head_rows(Llama *m, float *dx, float *dw, float *row_mean, const float *row_scale, float scale) {
    const LlamaConfig *c = &m->c;
    int N = m->B * m->T;
    if (m->qhead)
        return m->ops->qlmhead(m->ctx, dx, m->row_loss, row_mean, m->xf, m->qhead, m->targets, row_scale, scale,
                               m->scratch, m->qwork, N);
    if (!row_scale && !row_mean)
        return m->ops->lmhead_ce(m->ctx, dx, dw, m->row_loss, m->xf, m->w.lm_head, m->targets, m->scratch, N, c->dim,
                                 c->vocab, scale);
    return m->ops->lmhead_rows(m->ctx, dx, dw, m->row_loss, row_mean, m->xf, m->w.lm_head, m->targets, row_scale,
                               m->scratch, N, c->dim, c->vocab);
}

// ----------------------------------------------------------------------------
// forward

/* One decoder layer from acts[l].x into out. out == NULL is the backward's
 * recomputation: everything the backward reads, without the down
 * projection's output (only its adapter's h, into the free dxn buffer). */
static void layer_fwd(Llama *m, int l, float *out) {
    const LlamaConfig *c = &m->c;
    const Ops *o = m->ops;
    void *ctx = m->ctx;
    int B = m->B, T = m->T, N = B * T, D = c->dim, H = c->n_heads, KV = c->n_kv_heads;
    int HS = config_head_size(c), Q = H * HS, KVD = KV * HS, F = c->hidden;
    LayerActs *a = &m->acts[l];
    const LayerWeights *w = &m->w.layer[l];
    o->rmsnorm_fwd(ctx, a->xn1, a->rstd1, a->x, w->ln1, N, D, c->norm_eps);
    lin_fwd(m, l, LORA_Q, a->q, a->xn1, w->wq, N, D, Q, 1, 1);
    lin_fwd(m, l, LORA_K, a->k, a->xn1, w->wk, N, D, KVD, 1, 1);
    lin_fwd(m, l, LORA_V, a->v, a->xn1, w->wv, N, D, KVD, 1, 1);
    o->rope_fwd(ctx, a->q, m->pos, m->rope_cos, m->rope_sin, N, H, HS);
    o->rope_fwd(ctx, a->k, m->pos, m->rope_cos, m->rope_sin, N, KV, HS);
    o->attn_fwd(ctx, a->att, a->lse, a->q, a->k, a->v, m->spans, m->scratch, B, T, H, KV, HS);
    lin_fwd(m, l, LORA_O, a->h, a->att, w->wo, N, Q, D, 1, 1);
    o->add(ctx, a->h, a->x, (size_t)N * D);
    o->rmsnorm_fwd(ctx, a->xn2, a->rstd2, a->h, w->ln2, N, D, c->norm_eps);
    lin_fwd(m, l, LORA_GATE, a->gate, a->xn2, w->wg, N, D, F, 1, 1);
    lin_fwd(m, l, LORA_UP, a->up, a->xn2, w->wu, N, D, F, 1, 1);
    o->swiglu_fwd(ctx, a->act, a->gate, a->up, (size_t)N * F);
    if (!out) {
        lin_fwd(m, l, LORA_DOWN, m->dxn, a->act, w->wd, N, F, D, 0, 1);
        return;
    }
    lin_fwd(m, l, LORA_DOWN, out, a->act, w->wd, N, F, D, 1, 1);
    o->add(ctx, out, a->h, (size_t)N * D);
}

double llama_forward(Llama *m, int l0, int l1, float grad_scale) {
    const LlamaConfig *c = &m->c;
    const Ops *o = m->ops;
    void *ctx = m->ctx;
    int N = m->B * m->T, D = c->dim, L = c->n_layers;
    LC_ASSERT(0 <= l0 && l0 <= l1 && l1 <= L);

    if (l0 == 0) embed_rows(m, m->acts[0].x, m->tokens, N);
    for (int l = l0; l < l1; l++) layer_fwd(m, l, l + 1 < L ? m->acts[l + 1].x : m->x_out);
    if (l1 < L) return 0.0;

    o->rmsnorm_fwd(ctx, m->xf, m->rstdf, m->x_out, m->w.norm_f, N, D, c->norm_eps);
    int train = grad_scale > 0 && m->dres;
    double loss = head_rows(m, train ? m->dxn : NULL, train ? m->g.lm_head : NULL, NULL, NULL, grad_scale);
    if (train) {
        o->zero(ctx, m->dres, (size_t)N * D * sizeof(float));
        o->rmsnorm_bwd(ctx, m->dres, m->g.norm_f, m->dxn, m->x_out, m->w.norm_f, m->rstdf, N, D);
    }
    return loss;
}

double llama_forward_rows(Llama *m, float *row_mean) { return llama_forward_rows_from(m, 0, row_mean); }

void llama_forward_hidden(Llama *m, int l0) {
    const LlamaConfig *c = &m->c;
    int N = m->B * m->T, L = c->n_layers;
    LC_ASSERT(0 <= l0 && l0 < L);
    if (l0 == 0) embed_rows(m, m->acts[0].x, m->tokens, N);
    for (int l = l0; l < L; l++) layer_fwd(m, l, l + 1 < L ? m->acts[l + 1].x : m->x_out);
    m->ops->rmsnorm_fwd(m->ctx, m->xf, m->rstdf, m->x_out, m->w.norm_f, N, c->dim, c->norm_eps);
}

void llama_hidden_backward(Llama *m) {
    int N = m->B * m->T, D = m->c.dim;
    LC_ASSERT(m->dres);
    m->ops->zero(m->ctx, m->dres, (size_t)N * D * sizeof(float));
    m->ops->rmsnorm_bwd(m->ctx, m->dres, m->g.norm_f, m->dxn, m->x_out, m->w.norm_f, m->rstdf, N, D);
}

double llama_forward_rows_from(Llama *m, int l0, float *row_mean) {
    const LlamaConfig *c = &m->c;
    int N = m->B * m->T, D = c->dim;
    llama_forward_hidden(m, l0);
    /* logits / T = (xf / T) W^T: the head reads the scaled state (the norm's
     * backward reads x_out, not xf) */
    if (m->head_temp > 0 && m->head_temp != 1) m->ops->scale(m->ctx, m->xf, 1.0f / m->head_temp, (size_t)N * D);
    if (!row_mean && !m->qhead) /* lmhead_rows without dx is lmhead_ce's forward */
        return m->ops->lmhead_rows(m->ctx, NULL, NULL, m->row_loss, NULL, m->xf, m->w.lm_head, m->targets, NULL,
                                   m->scratch, N, D, c->vocab);
    return head_rows(m, NULL, NULL, row_mean, NULL, 0.0f);
}

void llama_head_backward(Llama *m, const float *row_scale) {
    LC_ASSERT(m->dres);
    head_rows(m, m->dxn, m->g.lm_head, NULL, row_scale, 0.0f);
    if (m->head_temp > 0 && m->head_temp != 1) /* d / d xf = (d / d (xf / T)) / T */
        m->ops->scale(m->ctx, m->dxn, 1.0f / m->head_temp, (size_t)m->B * m->T * m->c.dim);
    llama_hidden_backward(m);
}

// ----------------------------------------------------------------------------
// a classifier's head (reward models): score.weight over every row

/* The head's weight and its gradient: the adapters' trained copy when they
 * carry one (PEFT's modules_to_save) and are on, else the base's. */
static const float *score_w(const Llama *m) {
    return m->lora && m->lc.head && m->lora_enabled ? m->la.head : m->w.lm_head;
}

static float *score_g(const Llama *m) {
    return m->lora && m->lc.head && m->lora_enabled ? m->lg.head : m->g.lm_head;
}

void llama_forward_score(Llama *m, int l0, float *score) {
    const LlamaConfig *c = &m->c;
    LC_ASSERT(c->num_labels > 0 && 0 <= l0 && l0 < c->n_layers);
    llama_forward_hidden(m, l0);
    m->ops->matmul_fwd(m->ctx, score, m->xf, score_w(m), m->B * m->T, c->dim, c->num_labels);
}

void llama_score_backward(Llama *m, const float *dscore) {
    const LlamaConfig *c = &m->c;
    LC_ASSERT(m->dres && c->num_labels > 0);
    m->ops->matmul_bwd(m->ctx, m->dxn, score_g(m), dscore, m->xf, score_w(m), m->B * m->T, c->dim, c->num_labels, 0);
    llama_hidden_backward(m);
}

// ----------------------------------------------------------------------------
// generation: one position at a time, every buffer used at row `pos` of
// batch row 0, so the k and v rows of earlier positions are the cache

void llama_decode(Llama *m, int token, int pos) {
    const LlamaConfig *c = &m->c;
    const Ops *o = m->ops;
    void *ctx = m->ctx;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, HS = config_head_size(c);
    int Q = H * HS, KVD = KV * HS, F = c->hidden, L = c->n_layers;
    LC_ASSERT(pos >= 0 && pos < m->T && token >= 0 && token < c->vocab);
    LC_ASSERT(!m->recompute); /* the cache is every layer's k and v */
    o->upload(ctx, m->tokens + pos, &token, sizeof(int));
    o->upload(ctx, m->pos + pos, &pos, sizeof(int));
    size_t r = (size_t)pos;
    embed_rows(m, m->acts[0].x + r * D, m->tokens + pos, 1);
    for (int l = 0; l < L; l++) {
        LayerActs *a = &m->acts[l];
        const LayerWeights *w = &m->w.layer[l];
        float *x = a->x + r * D, *xn1 = a->xn1 + r * D, *q = a->q + r * Q, *k = a->k + r * KVD;
        float *v = a->v + r * KVD, *att = a->att + r * Q, *h = a->h + r * D, *xn2 = a->xn2 + r * D;
        float *gate = a->gate + r * F, *up = a->up + r * F, *act = a->act + r * F;
        float *out = (l + 1 < L ? m->acts[l + 1].x : m->x_out) + r * D;
        o->rmsnorm_fwd(ctx, xn1, a->rstd1 + r, x, w->ln1, 1, D, c->norm_eps);
        lin_fwd(m, l, LORA_Q, q, xn1, w->wq, 1, D, Q, 1, 0);
        lin_fwd(m, l, LORA_K, k, xn1, w->wk, 1, D, KVD, 1, 0);
        lin_fwd(m, l, LORA_V, v, xn1, w->wv, 1, D, KVD, 1, 0);
        o->rope_fwd(ctx, q, m->pos + pos, m->rope_cos, m->rope_sin, 1, H, HS);
        o->rope_fwd(ctx, k, m->pos + pos, m->rope_cos, m->rope_sin, 1, KV, HS);
        o->attn_decode(ctx, att, q, a->k, a->v, m->scratch, pos + 1, H, KV, HS);
        lin_fwd(m, l, LORA_O, h, att, w->wo, 1, Q, D, 1, 0);
        o->add(ctx, h, x, D);
        o->rmsnorm_fwd(ctx, xn2, a->rstd2 + r, h, w->ln2, 1, D, c->norm_eps);
        lin_fwd(m, l, LORA_GATE, gate, xn2, w->wg, 1, D, F, 1, 0);
        lin_fwd(m, l, LORA_UP, up, xn2, w->wu, 1, D, F, 1, 0);
        o->swiglu_fwd(ctx, act, gate, up, F);
        lin_fwd(m, l, LORA_DOWN, out, act, w->wd, 1, F, D, 1, 0);
        o->add(ctx, out, h, D);
    }
    o->rmsnorm_fwd(ctx, m->xf + r * D, m->rstdf + r, m->x_out + r * D, m->w.norm_f, 1, D, c->norm_eps);
    if (m->qhead) o->qmatmul_fwd(ctx, m->logits, m->xf + r * D, m->qhead, m->qwork, 1);
    else o->matmul_fwd(ctx, m->logits, m->xf + r * D, m->w.lm_head, 1, D, c->vocab);
}

// ----------------------------------------------------------------------------
// backward

void llama_backward(Llama *m, int l0, int l1) {
    const LlamaConfig *c = &m->c;
    const Ops *o = m->ops;
    void *ctx = m->ctx;
    int B = m->B, T = m->T, N = B * T, D = c->dim, H = c->n_heads, KV = c->n_kv_heads;
    int HS = config_head_size(c), Q = H * HS, KVD = KV * HS, F = c->hidden;
    LC_ASSERT(m->dres && 0 <= l0 && l0 <= l1 && l1 <= c->n_layers);

    for (int l = l1 - 1; l >= l0; l--) {
        if (m->recompute) layer_fwd(m, l, NULL);
        LayerActs *a = &m->acts[l];
        const LayerWeights *w = &m->w.layer[l];
        LayerWeights *g = &m->g.layer[l]; /* all NULL without FULL gradients */
        /* out = h + down(act): dres flows to h unchanged */
        lin_bwd(m, l, LORA_DOWN, m->dact, g->wd, m->dres, a->act, w->wd, N, F, D, 0);
        o->swiglu_bwd(ctx, m->dgate, m->dup, m->dact, a->gate, a->up, (size_t)N * F);
        lin_bwd(m, l, LORA_GATE, m->dxn, g->wg, m->dgate, a->xn2, w->wg, N, D, F, 0);
        lin_bwd(m, l, LORA_UP, m->dxn, g->wu, m->dup, a->xn2, w->wu, N, D, F, 1);
        o->rmsnorm_bwd(ctx, m->dres, g->ln2, m->dxn, a->h, w->ln2, a->rstd2, N, D);
        /* h = x + o_proj(att) */
        lin_bwd(m, l, LORA_O, m->datt, g->wo, m->dres, a->att, w->wo, N, Q, D, 0);
        o->attn_bwd(ctx, m->dq, m->dk, m->dv, m->datt, a->att, a->lse, a->q, a->k, a->v, m->spans,
                    m->scratch, B, T, H, KV, HS);
        o->rope_bwd(ctx, m->dq, m->pos, m->rope_cos, m->rope_sin, N, H, HS);
        o->rope_bwd(ctx, m->dk, m->pos, m->rope_cos, m->rope_sin, N, KV, HS);
        lin_bwd(m, l, LORA_Q, m->dxn, g->wq, m->dq, a->xn1, w->wq, N, D, Q, 0);
        lin_bwd(m, l, LORA_K, m->dxn, g->wk, m->dk, a->xn1, w->wk, N, D, KVD, 1);
        lin_bwd(m, l, LORA_V, m->dxn, g->wv, m->dv, a->xn1, w->wv, N, D, KVD, 1);
        o->rmsnorm_bwd(ctx, m->dres, g->ln1, m->dxn, a->x, w->ln1, a->rstd1, N, D);
        if (m->bwd_hook) m->bwd_hook(m->bwd_ud, l);
    }
    if (l0 == 0 && m->g.embed) o->embed_bwd(ctx, m->g.embed, m->dres, m->tokens, N, D);
    if (l0 == 0 && m->bwd_hook) m->bwd_hook(m->bwd_ud, -1);
}

// ----------------------------------------------------------------------------
// prefill: the KV cache of a prompt in one batched forward

void llama_prefill(Llama *m, const int *tokens, int n) {
    LC_ASSERT(m->B == 1 && n >= 1 && n <= m->T && !m->recompute);
    /* The forward over the first n positions writes the k and v rows that
     * llama_decode reads as its cache; every buffer is sized for m->T and
     * row-major with B = 1, so running with T = n only uses their first
     * rows. The head's loss over the (ignored) targets is discarded. */
    int T = m->T;
    m->T = n;
    Err e;
    int rc = llama_set_batch(m, tokens, NULL, NULL, &e);
    LC_ASSERT(rc == 0); /* ids were checked by the caller's tokenizer */
    llama_forward(m, 0, m->c.n_layers, 0);
    m->T = T;
}
