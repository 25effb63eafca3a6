/*
 * device.c: see device.h.
 */
#include "device.h"

#include <stdlib.h>
#include <string.h>

#include "../io/ckpt.h"
#include "../io/source.h"
#include "../io/peft.h"

#ifdef LC_CUDA
#include "../../model/ops_cuda.h"
#endif

int device_open(Device *d, const char *name, Err *e) {
    memset(d, 0, sizeof *d);
    if (!name || strcmp(name, "cpu") == 0) {
        d->ops = &ops_cpu;
        return 0;
    }
    if (strcmp(name, "cuda") != 0) return err_set(e, "--device: '%s' is not one of cpu, cuda", name);
#ifdef LC_CUDA
    d->ctx = cuda_ctx_init(e);
    if (!d->ctx) return -1;
    d->ops = &ops_cuda;
    d->gpu = 1;
    return 0;
#else
    return err_set(e, "--device cuda: this llamac was built without CUDA (make CUDA=1)");
#endif
}

int device_check(const char *name, Err *e) {
    if (!name || strcmp(name, "cpu") == 0) return 0;
    if (strcmp(name, "cuda") != 0) return err_set(e, "--device: '%s' is not one of cpu, cuda", name);
#ifdef LC_CUDA
    return cuda_device_check(e);
#else
    return err_set(e, "--device cuda: this llamac was built without CUDA (make CUDA=1)");
#endif
}

void device_close(Device *d) {
#ifdef LC_CUDA
    if (d->gpu) cuda_ctx_free(d->ctx);
#endif
    memset(d, 0, sizeof *d);
}

int device_check_fits(const Device *d, const LlamaConfig *c, int B, int T, int train, Err *e) {
    LlamaOpts o = {train ? LLAMA_GRADS_FULL : LLAMA_GRADS_NONE, NULL, 0, NULL, 0};
    return device_check_fits_opts(d, c, B, T, &o, e);
}

int device_check_fits_opts(const Device *d, const LlamaConfig *c, int B, int T, const LlamaOpts *o, Err *e) {
    if (!d->gpu) return 0;
#ifdef LC_CUDA
    int train = o->grads == LLAMA_GRADS_FULL;
    LlamaMem mem = llama_memory_opts(c, d->ops, B, T, o);
    /* + AdamW m and v when training, + the bf16 shadow of the float weights,
     * + about 1 GiB of workspaces (cuBLASLt, the first step's ws_get) */
    double gib = 1073741824.0, adam = train ? 2.0 * mem.params : 0.0;
    double need = mem.params + mem.grads + adam + mem.acts + mem.params / 2.0 + gib;
    size_t fr = 0, tot = 0;
    cuda_mem_info(d->ctx, &fr, &tot);
    if (need > (double)fr)
        return err_set(e, "--batch %d: B=%d T=%d needs about %.1f GiB of GPU memory (weights %.1f, gradients and "
                          "AdamW %.1f, activations %.1f), %.1f GiB free on %s; try a smaller --batch",
                       B, B, T, need / gib, mem.params * 1.5 / gib, (mem.grads + adam) / gib, mem.acts / gib,
                       fr / gib, cuda_device_name(d->ctx));
#else
    (void)c; (void)B; (void)T; (void)o; (void)e;
#endif
    return 0;
}

void device_host_view(const Llama *m, const AdamW *opt, HostView *v) {
    memset(v, 0, sizeof *v);
    v->m = *m;
    if (opt) v->opt = *opt;
    if (m->ops == &ops_cpu) return;
    size_t bytes = m->t.size * sizeof(float), lb = m->lt.size * sizeof(float);
    v->owned = 1;
    v->m.params = xmalloc(bytes);
    m->ops->download(m->ctx, v->m.params, m->params, bytes);
    if (m->lora) {
        v->m.lora_params = xmalloc(lb);
        m->ops->download(m->ctx, v->m.lora_params, m->lora_params, lb);
    }
    if (opt) { /* the moments of what the optimizer steps: base or adapters */
        size_t ob = opt->size * sizeof(float);
        v->opt.m = xmalloc(ob);
        v->opt.v = xmalloc(ob);
        m->ops->download(m->ctx, v->opt.m, opt->m, ob);
        m->ops->download(m->ctx, v->opt.v, opt->v, ob);
    }
}

void device_host_push(const HostView *v, Llama *m, AdamW *opt) {
    if (opt) opt->t = v->opt.t; /* ckpt_load sets the step count on the view */
    if (!v->owned) return;
    size_t bytes = m->t.size * sizeof(float);
    m->ops->upload(m->ctx, m->params, v->m.params, bytes);
    if (m->lora) m->ops->upload(m->ctx, m->lora_params, v->m.lora_params, m->lt.size * sizeof(float));
    if (opt) {
        size_t ob = opt->size * sizeof(float);
        m->ops->upload(m->ctx, opt->m, v->opt.m, ob);
        m->ops->upload(m->ctx, opt->v, v->opt.v, ob);
    }
}

void device_host_free(HostView *v) {
    if (v->owned) {
        free(v->m.params);
        free(v->m.lora_params);
        free(v->opt.m);
        free(v->opt.v);
    }
    memset(v, 0, sizeof *v);
}

void device_params_init(Llama *m, uint64_t seed) {
    HostView v;
    device_host_view(m, NULL, &v);
    params_init(&m->t, v.m.params, m->c.n_layers, seed);
    device_host_push(&v, m, NULL);
    device_host_free(&v);
}

int device_load_model(Device *d, const char *name, const char *path, const char *adapter, const char *quant,
                      const LlamaConfig *c, Llama *m, int B, int T, Err *e) {
    memset(m, 0, sizeof *m);
    if (device_open(d, name, e)) return -1;
    if (device_load_into(d, path, adapter, quant, c, m, B, T, 0, e)) {
        device_close(d);
        return -1;
    }
    return 0;
}

int device_load_into(const Device *d, const char *path, const char *adapter, const char *quant, const LlamaConfig *c,
                     Llama *m, int B, int T, int forward_only, Err *e) {
    memset(m, 0, sizeof *m);
    PeftAdapter a;
    memset(&a, 0, sizeof a);
    if (adapter && peft_load(adapter, c, &a, e)) return -1; /* before anything big: a bad adapter fails fast */
    ModelSource ms;
    uint32_t *qtypes = NULL;
    if (quant) { /* which tensors stay quantised, before the model is built without their floats */
        ParamTable qt;
        int rc = source_open(&ms, path, e);
        if (rc == 0) rc = params_build(c, &qt, e);
        if (rc == 0) {
            qtypes = xcalloc((size_t)qt.n, sizeof *qtypes);
            rc = source_quant_plan(&ms, c, &qt, quant, qtypes, e) < 0 ? -1 : 0;
            params_free(&qt);
        }
        if (rc) return free(qtypes), peft_free(&a), -1;
    }
    LlamaOpts o = {LLAMA_GRADS_NONE, adapter ? &a.lc : NULL, 0, qtypes, forward_only};
    int irc = device_check_fits_opts(d, c, B, T, &o, e) || llama_init_opts(m, c, d->ops, d->ctx, B, T, &o, e);
    free(qtypes);
    if (irc) {
        peft_free(&a);
        llama_free(m);
        return -1;
    }
    HostView hv;
    device_host_view(m, NULL, &hv);
    int rc = source_open(&ms, path, e);
    uint8_t *qhost = m->qdata && d->gpu ? xcalloc(m->t.qsize, 1) : m->qdata;
    if (rc == 0) rc = m->qdata ? source_load_quant(&ms, c, &m->t, hv.m.params, qhost, 0, e)
                               : source_load(&ms, &m->t, hv.m.params, e);
    if (rc == 0 && qhost != m->qdata) m->ops->upload(m->ctx, m->qdata, qhost, m->t.qsize);
    if (qhost != m->qdata) free(qhost);
    if (rc == 0 && adapter) memcpy(hv.m.lora_params, a.params, m->lt.size * sizeof(float));
    if (rc == 0) device_host_push(&hv, m, NULL);
    device_host_free(&hv);
    peft_free(&a);
    if (rc) llama_free(m);
    return rc;
}
