/*
 * trainer.c: the training loop shared by pretrain, sft and dpo (trainer.h).
 * Checkpoints are train/io/ckpt.h's HDF5 files; resume restores weights, AdamW
 * moments and step, the schedule position and the data cursor, so a resumed
 * run continues bit for bit on the CPU.
 *
 * Data parallelism (mpirun -np N): every rank draws the step's whole global
 * batch, trains its block of accum / N micro-batches and the gradients are
 * summed over the ranks, layer by layer as the backward finishes each
 * (llama.h's bwd_hook starts an MPI_Iallreduce per layer; it completes
 * before clipping); with --zero 1 a reduce-scatter instead, each rank
 * stepping its shard of the flat buffer and an all-gather of the weights.
 * Rank 0 alone writes metrics, checkpoints and outputs.
 */
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../dist/dist.h"
#include "../io/ckpt.h"
#include "../io/source.h"
#include "../io/hf.h"
#include "../io/peft.h"
#include "pipeline.h"
#include "run.h"
#include "../../dist/pp.h"

void trainer_opts_default(TrainOpts *o) {
    memset(o, 0, sizeof *o);
    o->B = 8;
    o->T = 256;
    o->steps = 1000;
    o->warmup = 2000;
    o->val_every = 100;
    o->val_batches = 20;
    o->seed = 1337;
    o->log_every = 1;
    o->keep = 3;
    o->lr = 5e-4;
    o->min_frac = 0.1;
    o->warmup_frac = SCHED_MAX_WARMUP_FRAC;
    o->wd = 0.1;
    o->clip = 1.0;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-5;
    o->out = "model.h5";
    o->ckpt_dir = "checkpoints";
    o->device = "cpu";
    o->prompt = "Once upon a time";
    o->lora_init = "kaiming";
    o->adapter_out = "adapter";
    o->pp = 1;
    o->pp_timeout = 300;
    o->pp_schedule = "1f1b";
}

int trainer_flags(TrainOpts *o, CliFlag *f) {
    const CliFlag rows[] = {
        {"batch", CLI_INT, &o->B, 1, 1 << 16, "micro-batch size B (rows per forward/backward)"},
        {"seq", CLI_INT, &o->T, 2, 1 << 20, "sequence length T"},
        {"batch-tokens", CLI_INT, &o->batch_tokens, 0, 1L << 40, "tokens per optimizer step, a multiple of B*T (0: B*T, no accumulation)"},
        {"steps", CLI_INT, &o->steps, 1, 1L << 40, "optimizer steps"},
        {"lr", CLI_FLOAT, &o->lr, 0, 10, "peak learning rate (> 0)"},
        {"warmup", CLI_INT, &o->warmup, 0, 1L << 40, "linear warmup steps (capped at --warmup-frac of --steps)"},
        {"warmup-frac", CLI_FLOAT, &o->warmup_frac, 0, 1, "largest fraction of the run warmup may take"},
        {"lr-min-frac", CLI_FLOAT, &o->min_frac, 0, 1, "cosine decay floor as a fraction of --lr"},
        {"weight-decay", CLI_FLOAT, &o->wd, 0, 10, "AdamW decoupled weight decay on 2-D weights"},
        {"beta1", CLI_FLOAT, &o->beta1, 0, 1, "AdamW beta1"},
        {"beta2", CLI_FLOAT, &o->beta2, 0, 1, "AdamW beta2"},
        {"eps", CLI_FLOAT, &o->eps, 0, 1, "AdamW epsilon"},
        {"clip", CLI_FLOAT, &o->clip, 0, 1e9, "global gradient-norm clip (0: off)"},
        {"val-every", CLI_INT, &o->val_every, 0, 1L << 40, "validation loss every N steps (0: only at the end)"},
        {"val-batches", CLI_INT, &o->val_batches, 1, 1L << 30, "batches per validation"},
        {"seed", CLI_INT, &o->seed, 0, 1L << 62, "seed for initialisation and data order"},
        {"out", CLI_STR, &o->out, 0, 0, "model written at the end (HDF5, weights only: for eval, generate, convert)"},
        {"ckpt-dir", CLI_STR, &o->ckpt_dir, 0, 0, "directory of the run's checkpoints (step-N.h5: weights, AdamW, data cursor)"},
        {"save-every", CLI_INT, &o->save_every, 0, 1L << 40, "checkpoint every N steps (0: only at the end and on SIGINT/SIGTERM)"},
        {"keep", CLI_INT, &o->keep, 1, 1 << 20, "checkpoints kept in --ckpt-dir (older ones are deleted)"},
        {"resume", CLI_STR, &o->resume, 0, 0, "continue from a checkpoint: a path, or auto (the newest in --ckpt-dir; none: start)"},
        {"metrics", CLI_STR, &o->metrics, 0, 0, "JSON-lines metrics file (one line per step and per validation)"},
        {"peak-gflops", CLI_FLOAT, &o->peak, 0, 1e9, "one rank's peak for MFU in GFLOP/s, summed over the ranks (0: measure SGEMM here)"},
        {"tokenizer", CLI_STR, &o->tokpath, 0, 0, "tokenizer file, for samples before and after training"},
        {"prompt", CLI_STR, &o->prompt, 0, 0, "prompt of the samples"},
        {"sample-tokens", CLI_INT, &o->sample_tokens, 0, 1 << 20, "tokens per sample (0: no samples)"},
        {"log-every", CLI_INT, &o->log_every, 1, 1L << 30, "progress line every N steps"},
        {"device", CLI_STR, &o->device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
        {"recompute", CLI_INT, &o->recompute, 0, 1, "1: keep only each layer's input, recompute the layer in the backward (less memory)"},
        {"lora-r", CLI_INT, &o->lora_r, 0, 1 << 16, "LoRA rank (0: train every weight; > 0: adapters on a frozen base)"},
        {"lora-alpha", CLI_FLOAT, &o->lora_alpha, -1e9, 1e9, "LoRA alpha: the adapters are scaled by alpha / r (0: alpha = r)"},
        {"lora-dropout", CLI_FLOAT, &o->lora_dropout, -1e9, 1e9, "dropout on the adapters' input, in [0, 1)"},
        {"lora-targets", CLI_STR, &o->lora_targets, 0, 0, "adapted modules: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all-linear (default q,k,v,o)"},
        {"lora-layers", CLI_STR, &o->lora_layers, 0, 0, "adapted layers, e.g. 0-3,7 (PEFT's layers_to_transform; default all)"},
        {"rslora", CLI_INT, &o->rslora, 0, 1, "1: rsLoRA, scale alpha / sqrt(r)"},
        {"base-quant", CLI_STR, &o->base_quant, 0, 0, "LoRA: hold the frozen base quantised (QLoRA): keep (a GGUF's own types), or quantise at load to nf4, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k"},
        {"lora-init", CLI_STR, &o->lora_init, 0, 0, "adapter initialisation: kaiming (PEFT's default; B = 0), gaussian, or a PEFT adapter directory to continue"},
        {"adapter-out", CLI_STR, &o->adapter_out, 0, 0, "LoRA: PEFT adapter directory written at the end (PeftModel.from_pretrained reads it)"},
        {"merged-out", CLI_STR, &o->merged_out, 0, 0, "LoRA: also write the base with the adapters merged, as a checkpoint (.h5)"},
        {"hf-out", CLI_STR, &o->hf_out, 0, 0, "also write the trained model (LoRA: merged) as a Hugging Face directory with the tokenizer"},
        {"zero", CLI_INT, &o->zero, 0, 1, "1: ZeRO-1 under mpirun: AdamW moments sharded over the data-parallel ranks"},
        {"pp", CLI_INT, &o->pp, 1, LC_MAX_LAYERS, "pipeline stages under mpirun: the ranks form P stages x N/P data-parallel replicas"},
        {"pp-schedule", CLI_STR, &o->pp_schedule, 0, 0, "pipeline schedule: 1f1b (at most P micro-batches in flight) or gpipe (all forwards, then all backwards)"},
        {"pp-layers", CLI_STR, &o->pp_layers, 0, 0, "layers per stage, e.g. 3,1 (default: balanced by FLOPs, the LM head counted with the last)"},
        {"pp-timeout", CLI_INT, &o->pp_timeout, 1, 1L << 30, "seconds a stage waits for a message before it stops every rank (a dead or hung stage)"},
        {"pp-timeline", CLI_STR, &o->pp_timeline, 0, 0, "JSON file of the last step's forwards and backwards per stage (start, end), for a timeline plot"},
    };
    int n = (int)(sizeof rows / sizeof rows[0]);
    LC_ASSERT(n <= TRAINER_NFLAGS);
    memcpy(f, rows, sizeof rows);
    return n;
}

int trainer_check(const TrainOpts *o, Err *e) {
    if (!(o->lr > 0)) return err_set(e, "--lr: must be positive, got %g", o->lr);
    if (strcmp(o->lora_init, "kaiming") && strcmp(o->lora_init, "gaussian") && !peft_is_dir(o->lora_init))
        return err_set(e, "--lora-init: expected kaiming, gaussian or a PEFT adapter directory, got '%.40s'",
                       o->lora_init);
    if (o->base_quant) {
        uint32_t ty;
        if (strcmp(o->base_quant, "keep") && quant_parse(o->base_quant, "--base-quant", &ty, e)) return -1;
        if (!o->lora_r && !peft_is_dir(o->lora_init))
            return err_set(e, "--base-quant: the base is frozen when quantised: train LoRA adapters on it (--lora-r)");
    }
    return device_check(o->device, e);
}

int trainer_mkdir(const char *dir, const char *flag, Err *e) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0777) && errno != EEXIST) return err_set(e, "%s: cannot create %s (%s)", flag, p, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    return 0;
}

// ----------------------------------------------------------------------------
// data parallelism

/* One reduction per decoder layer: layer l's tensors are contiguous in the
 * table (Hugging Face order, full or LoRA), [bucket[l], bucket[l+1]); what
 * precedes layer 0 (the embedding) and follows the last layer (final norm,
 * LM head) are two more. With --zero 1, the shards of the flat buffer. */
static void dp_setup(Trainer *tr) {
    const ParamTable *t = tr->pt;
    int L = tr->c.n_layers;
    tr->bucket = xmalloc((size_t)(L + 1) * sizeof *tr->bucket);
    for (int l = 0; l <= L; l++) tr->bucket[l] = (size_t)-1;
    size_t end = 0;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        if (p->layer < 0) continue;
        if (tr->bucket[p->layer] == (size_t)-1) tr->bucket[p->layer] = p->offset;
        end = p->offset + p->numel;
    }
    /* the tail starts at the next tensor's offset (padding included) */
    tr->bucket[L] = t->size;
    for (int i = 0; i < t->n; i++)
        if (t->p[i].offset >= end && t->p[i].offset < tr->bucket[L]) tr->bucket[L] = t->p[i].offset;
    if (end == 0) tr->bucket[L] = 0;
    for (int l = L - 1; l >= 0; l--)
        if (tr->bucket[l] == (size_t)-1) tr->bucket[l] = tr->bucket[l + 1];
    for (int l = 0; l < L; l++) LC_ASSERT(tr->bucket[l] <= tr->bucket[l + 1]);
}

/* With --zero 1 the shards of this stage's part over its replicas, of
 * which this rank holds the moments. */
static void zero_setup(Trainer *tr) {
    tr->shard = xmalloc((size_t)(tr->dp + 1) * sizeof *tr->shard);
    dist_shards_range(tr->pt, tr->own_lo, tr->own_hi, tr->shard);
}

static void dp_reduce(Trainer *tr, size_t lo, size_t hi) {
    if (hi > lo) dist_iallreduce_f32(tr->grads + lo, hi - lo);
}

/* LLAMAC_DIST_OVERLAP=0 turns the per-layer reductions off (one blocking
 * all-reduce after the backward instead): for make bench-dist, which
 * measures what the overlap hides. */
static int dp_overlap(void) {
    const char *s = getenv("LLAMAC_DIST_OVERLAP");
    return !s || strcmp(s, "0") != 0;
}

/* llama_backward's hook on this rank's last micro-batch: layer l's
 * gradients are final, send them while the backward goes on. */
static void dp_hook(void *ud, int l) {
    Trainer *tr = ud;
    int L = tr->c.n_layers;
    if (l == L - 1) dp_reduce(tr, tr->bucket[L], tr->pt->size); /* norm and head: done before the layers */
    if (l >= 0) dp_reduce(tr, tr->bucket[l], tr->bucket[l + 1]);
    else dp_reduce(tr, 0, tr->bucket[0]);
    dist_progress();
}

/* AdamW (the op, as adamw_step applies it) on the part of the buffer whose
 * moments this rank holds (a stage's part, a ZeRO shard), then with ZeRO
 * the weights gathered. */
static void part_step(Trainer *tr, double norm, float lr) {
    AdamW *a = &tr->opt;
    const ParamTable *t = tr->pt;
    float gscale = 1.0f;
    if (a->cfg.clip > 0 && norm > a->cfg.clip) gscale = (float)(a->cfg.clip / (norm + 1e-6));
    a->t++;
    size_t s0 = tr->mlo, s1 = tr->mlo + a->size;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        size_t lo = p->offset > s0 ? p->offset : s0, hi = p->offset + p->numel < s1 ? p->offset + p->numel : s1;
        if (lo >= hi) continue;
        float wd = (p->decay || a->cfg.decay_all) ? a->cfg.weight_decay : 0.0f;
        a->ops->adamw(a->ctx, tr->params + lo, tr->grads + lo, a->m + (lo - s0), a->v + (lo - s0), hi - lo, lr,
                      a->cfg.beta1, a->cfg.beta2, a->cfg.eps, wd, (int)a->t, gscale);
    }
    if (tr->zero) dist_allgather_f32(tr->params, tr->shard);
}

/* The gradient norm after the step's gradients are summed over the ranks
 * (the hook's reductions waited for; with ZeRO the reduce-scatter, each
 * rank's shard norm summed). */
static double dp_grad_norm(Trainer *tr, int hooked) {
    if (tr->world == 1) return adamw_grad_norm(&tr->opt, tr->grads);
    double t0 = time_now();
    if (tr->zero) {
        dist_reduce_scatter_f32(tr->grads, tr->shard);
        tr->dp_wait += time_now() - t0;
        size_t s0 = tr->shard[tr->dp_rank], s1 = tr->shard[tr->dp_rank + 1];
        double ss = s1 > s0 ? tr->m.ops->sumsq(tr->m.ctx, tr->grads + s0, s1 - s0) : 0;
        dist_allreduce_f64(&ss, 1);
        return sqrt(ss);
    }
    if (hooked) dist_wait();
    else dist_allreduce_f32(tr->grads + tr->own_lo, tr->own_hi - tr->own_lo);
    tr->dp_wait += time_now() - t0;
    if (!tr->pipe) return adamw_grad_norm(&tr->opt, tr->grads);
    /* stages: each stage's part once (its first replica's), summed */
    size_t lo = tr->own_lo, hi = tr->own_hi;
    double ss = tr->dp_rank == 0 && hi > lo ? tr->m.ops->sumsq(tr->m.ctx, tr->grads + lo, hi - lo) : 0;
    dist_allreduce_f64(&ss, 1);
    return sqrt(ss);
}

/* Resume of a part (a stage, a ZeRO shard): room for the whole moments a
 * checkpoint holds, of which this rank keeps its part; a host AdamW freed
 * with zero_moments_free. */
static void zero_moments(const Trainer *tr, AdamW *full) {
    *full = tr->opt;
    full->size = tr->pt->size;
    full->m = xcalloc(full->size, sizeof(float));
    full->v = xcalloc(full->size, sizeof(float));
}

static void zero_moments_free(AdamW *full) {
    free(full->m);
    free(full->v);
}

int trainer_open(Trainer *tr, const TrainOpts *o, const char *mode, const LlamaConfig *c,
                 const ModelSource *init, Err *e) {
    memset(tr, 0, sizeof *tr);
    tr->o = *o;
    tr->mode = mode;
    tr->c = *c;
    long micro = o->B * o->T;
    if (tr->o.batch_tokens == 0) tr->o.batch_tokens = micro;
    if (tr->o.batch_tokens % micro != 0)
        return err_set(e, "--batch-tokens: %ld is not a multiple of B*T = %ld", tr->o.batch_tokens, micro);
    tr->accum = tr->o.batch_tokens / micro;
    tr->rank = dist_rank();
    tr->world = dist_world();
    int pp_kind;
    if (dist_set_pp((int)o->pp, e) || pp_schedule_parse(o->pp_schedule, &pp_kind, e)) return -1;
    tr->dp = dist_grid()->dp;
    tr->dp_rank = dist_grid()->dp_rank;
    if (tr->accum % tr->dp)
        return err_set(e, "--batch-tokens: %ld tokens are %ld micro-batches of B*T = %ld, which do not divide across %d "
                          "%s", tr->o.batch_tokens, tr->accum, micro, tr->dp,
                       tr->dp == tr->world ? "ranks" : "replicas (ranks / --pp)");
    tr->k0 = tr->accum / tr->dp * tr->dp_rank;
    tr->k1 = tr->k0 + tr->accum / tr->dp;
    tr->zero = o->zero && tr->dp > 1;
    if (o->zero && tr->dp == 1 && tr->rank == 0)
        fprintf(stderr, "warning: --zero 1 with one %s: nothing to shard, the optimizer runs whole\n",
                tr->world == 1 ? "rank" : "replica per stage");
    if (sched_init(&tr->sched, o->lr, o->warmup, o->steps, o->min_frac, o->warmup_frac, e)) return -1;
    AdamWConfig ac = {(float)o->beta1, (float)o->beta2, (float)o->eps, (float)o->wd, (float)o->clip, 0};
    if (device_open(&tr->dev, o->device, e)) return -1;
    tr->opened = 1;
    if (tr->world > 1 && tr->dev.ops != &ops_cpu) /* NCCL: dist/ point 6 */
        return err_set(e, "--device: %s with %d ranks is not supported yet (data parallelism runs on the CPU)",
                       o->device, tr->world);
    LoraConfig lc;
    LlamaOpts lo = {LLAMA_GRADS_FULL, NULL, (int)o->recompute, NULL, 0};
    PeftAdapter pa; /* --lora-init DIR: its config and weights */
    memset(&pa, 0, sizeof pa);
    int from_dir = peft_is_dir(o->lora_init);
    if (from_dir) {
        if (peft_load(o->lora_init, c, &pa, e)) return -1;
        lc = pa.lc;
    } else if (o->lora_r &&
               lora_config_from_flags(&lc, o->lora_r, o->lora_alpha, o->lora_dropout, o->lora_targets,
                                      o->lora_layers, (int)o->rslora, c, e)) {
        return -1;
    }
    if (o->lora_r || from_dir) {
        lc.init = strcmp(o->lora_init, "gaussian") == 0 ? LORA_INIT_GAUSSIAN : LORA_INIT_KAIMING;
        if (!from_dir) lc.head = o->lora_head && c->num_labels > 0;
        lo.grads = LLAMA_GRADS_INPUT;
        lo.lora = &lc;
    }
    uint32_t *qtypes = NULL;
    if (o->base_quant) {
        ParamTable qt;
        if (!init) return peft_free(&pa), err_set(e, "--base-quant: needs --model (the base to hold quantised)");
        if (params_build(c, &qt, e)) return peft_free(&pa), -1;
        qtypes = xcalloc((size_t)qt.n, sizeof *qtypes);
        int nq = source_quant_plan(init, c, &qt, o->base_quant, qtypes, e);
        params_free(&qt);
        if (nq < 0) return free(qtypes), peft_free(&pa), -1;
        lo.qtypes = qtypes;
    }
    int irc = device_check_fits(&tr->dev, c, (int)o->B, (int)o->T, 1, e) ||
              llama_init_opts(&tr->m, c, tr->dev.ops, tr->dev.ctx, (int)o->B, (int)o->T, &lo, e);
    free(qtypes);
    if (irc) {
        peft_free(&pa);
        return -1;
    }
    if (init) {
        HostView hv;
        device_host_view(&tr->m, NULL, &hv);
        Llama *m = &tr->m;
        uint8_t *qhost = m->qdata && tr->dev.gpu ? xcalloc(m->t.qsize, 1) : m->qdata;
        int rc = m->qdata ? source_load_quant(init, c, &m->t, hv.m.params, qhost, (uint64_t)o->seed, e)
                          : source_load_as(init, c, &m->t, hv.m.params, (uint64_t)o->seed, e);
        if (!rc) device_host_push(&hv, m, NULL);
        if (!rc && qhost != m->qdata) m->ops->upload(m->ctx, m->qdata, qhost, m->t.qsize);
        tr->model_id = m->qdata ? source_quant_hash(&m->t, hv.m.params, qhost)
                                : ckpt_hash(hv.m.params, tr->m.t.size * sizeof(float));
        if (qhost != m->qdata) free(qhost);
        tr->init = init->path;
        tr->base_ref = init->c.num_labels == c->num_labels ? init->path : NULL;
        if (!rc && m->qdata && !tr->base_ref)
            rc = err_set(e, "--base-quant: %s is a causal LM made a reward model here (a new score head), and a "
                            "quantised base is only referenced by its checkpoints: train on float32, or convert it to "
                            "a reward model first", init->path);
        device_host_free(&hv);
        if (rc) return peft_free(&pa), -1;
    } else {
        device_params_init(&tr->m, (uint64_t)o->seed);
    }
    if (from_dir) {
        tr->m.ops->upload(tr->m.ctx, tr->m.lora_params, pa.params, tr->m.lt.size * sizeof(float));
        peft_free(&pa);
    } else if (tr->m.lora) {
        llama_lora_init(&tr->m, (uint64_t)o->seed);
    }
    if (tr->m.lora) {
        tr->pt = &tr->m.lt;
        tr->params = tr->m.lora_params;
        tr->grads = tr->m.lora_grads;
    } else {
        tr->pt = &tr->m.t;
        tr->params = tr->m.params;
        tr->grads = tr->m.grads;
    }
    tr->own_lo = 0;
    tr->own_hi = tr->pt->size;
    if (tr->world > 1) dp_setup(tr);
    if (dist_grid()->pp > 1) {
        /* the pipeline borrows the model, the trained buffer and the layer map */
        PipeCtx pc = {.m = &tr->m, .c = &tr->c, .params = tr->params, .grads = tr->grads, .size = tr->pt->size,
                      .bucket = tr->bucket, .k0 = tr->k0, .k1 = tr->k1, .seed = tr->o.seed,
                      .timeout = tr->o.pp_timeout, .schedule = tr->o.pp_schedule, .layers = tr->o.pp_layers,
                      .timeline = tr->o.pp_timeline};
        if (pipe_open(&tr->pipe, &pc, e)) return -1;
        pipe_stage_range(tr->pipe, dist_grid()->stage, &tr->own_lo, &tr->own_hi);
    }
    if (tr->zero) zero_setup(tr);
    /* only this rank's part of the moments is ever allocated: its stage's,
     * with ZeRO-1 its shard of that */
    tr->mlo = tr->zero ? tr->shard[tr->dp_rank] : tr->own_lo;
    size_t nm = tr->zero ? tr->shard[tr->dp_rank + 1] - tr->shard[tr->dp_rank] : tr->own_hi - tr->own_lo;
    if (adamw_init_n(&tr->opt, &ac, nm, tr->m.ops, tr->m.ctx, e)) return -1;
    return 0;
}

double trainer_update(Trainer *tr, long step) {
    LC_ASSERT(!tr->pipe);
    double norm = dp_grad_norm(tr, 0);
    float lr = (float)sched_lr(&tr->sched, step);
    if (tr->zero) part_step(tr, norm, lr);
    else adamw_step(&tr->opt, tr->pt, tr->params, tr->grads, norm, lr);
    tr->m.ops->sync(tr->m.ctx);
    return norm;
}

void trainer_close(Trainer *tr) {
    pipe_close(tr->pipe);
    free(tr->bucket);
    free(tr->shard);
    if (tr->gen.params) llama_free(&tr->gen);
    if (tr->has_tok) tok_free(&tr->tok);
    adamw_free(&tr->opt);
    llama_free(&tr->m);
    if (tr->opened) device_close(&tr->dev);
    memset(tr, 0, sizeof *tr);
}

/* Trained rows of the last forward whose argmax logit is the target: the
 * LM head again, a chunk of rows at a time into a backend buffer. */
static long count_correct(Llama *m, const int32_t *tgt, float *buf, float *host, int chunk) {
    int N = m->B * m->T, D = m->c.dim, V = m->c.vocab;
    long ok = 0;
    for (int n0 = 0; n0 < N; n0 += chunk) {
        int rows = N - n0 < chunk ? N - n0 : chunk, any = 0;
        for (int r = 0; r < rows; r++) any |= tgt[n0 + r] != LC_IGNORE;
        if (!any) continue;
        if (m->qhead) m->ops->qmatmul_fwd(m->ctx, buf, m->xf + (size_t)n0 * D, m->qhead, m->qwork, rows);
        else m->ops->matmul_fwd(m->ctx, buf, m->xf + (size_t)n0 * D, m->w.lm_head, rows, D, V);
        if (m->ops->download_act) m->ops->download_act(m->ctx, host, buf, (size_t)rows * V);
        else m->ops->download(m->ctx, host, buf, (size_t)rows * V * sizeof(float));
        for (int r = 0; r < rows; r++) {
            if (tgt[n0 + r] == LC_IGNORE) continue;
            const float *l = host + (size_t)r * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (l[v] > l[best]) best = v;
            ok += best == tgt[n0 + r];
        }
    }
    return ok;
}

long trainer_count_correct(Trainer *tr, const int32_t *tgt) {
    Llama *m = &tr->m;
    const int chunk = 64;
    float *buf = m->ops->alloc(m->ctx, (size_t)chunk * m->c.vocab * sizeof(float));
    float *host = xmalloc((size_t)chunk * m->c.vocab * sizeof(float));
    long ok = count_correct(m, tgt, buf, host, chunk);
    m->ops->free(m->ctx, buf);
    free(host);
    return ok;
}

/* Validation through the pipeline stages: the first replica's stages
 * forward each batch, its last stage's head sums the loss, the trained
 * tokens and (count_ok) the correct argmax predictions into agg. */
typedef struct {
    Trainer *tr;
    double agg[3];
    const int32_t *tgt;
    int count_ok;
} EvalHead;

static double eval_head(void *ud, Llama *m, int l0, long k, Err *e) {
    (void)k, (void)e;
    EvalHead *h = ud;
    double l = llama_forward(m, l0, m->c.n_layers, 0);
    h->agg[0] += l;
    h->agg[1] += (double)llama_count_targets(h->tgt, (size_t)m->B * m->T);
    if (h->count_ok) h->agg[2] += (double)trainer_count_correct(h->tr, h->tgt);
    return l;
}

/* The summed loss and count of trained tokens (and correct predictions
 * when correct != NULL) of nbatches micro-batches of d, on every rank.
 * Collective. */
static int stages_eval(Trainer *tr, TrainData *d, long nbatches, double *sum, long *count, long *correct, Err *e) {
    Llama *m = &tr->m;
    size_t n = (size_t)m->B * m->T;
    int32_t *tok = xmalloc(n * sizeof *tok), *tgt = xmalloc(n * sizeof *tgt), *pos = xmalloc(n * sizeof *pos);
    static const uint64_t zero[TRAIN_CURSOR_MAX];
    EvalHead h = {tr, {0, 0, 0}, tgt, correct != NULL}; /* the first replica's last stage fills agg */
    int mine = dist_grid()->dp_rank == 0, rc = d->seek(d->ud, zero, e);
    for (long b = 0; !rc && b < nbatches; b++) {
        rc = d->next(d->ud, tok, tgt, pos, e);
        if (!rc && mine) rc = pipe_forward(tr->pipe, m, tok, tgt, pos, 0, 1, eval_head, &h, e);
    }
    if (!rc) rc = d->seek(d->ud, zero, e);
    free(tok); free(tgt); free(pos);
    if (dist_allreduce_max_int(rc != 0)) return rc ? -1 : err_set(e, "validation failed on another rank");
    dist_allreduce_f64(h.agg, 3);
    *sum = h.agg[0];
    *count = (long)h.agg[1];
    if (correct) *correct = (long)h.agg[2];
    return 0;
}

double trainer_eval(Trainer *tr, TrainData *d, long nbatches, double *acc, Err *e) {
    Llama *m = &tr->m;
    if (tr->pipe) {
        double sum = 0;
        long count = 0, correct = 0;
        if (stages_eval(tr, d, nbatches, &sum, &count, acc ? &correct : NULL, e)) return NAN;
        if (acc) *acc = count ? (double)correct / count : 0;
        return count ? sum / count : 0;
    }
    size_t n = (size_t)m->B * m->T;
    int32_t *tok = xmalloc(n * sizeof *tok), *tgt = xmalloc(n * sizeof *tgt), *pos = xmalloc(n * sizeof *pos);
    const int chunk = 64;
    float *buf = acc ? m->ops->alloc(m->ctx, (size_t)chunk * m->c.vocab * sizeof(float)) : NULL;
    float *host = acc ? xmalloc((size_t)chunk * m->c.vocab * sizeof(float)) : NULL;
    static const uint64_t zero[TRAIN_CURSOR_MAX];
    double sum = 0;
    long count = 0, correct = 0;
    int rc = d->seek(d->ud, zero, e);
    for (long b = 0; !rc && b < nbatches; b++) {
        rc = d->next(d->ud, tok, tgt, pos, e) || llama_set_batch(m, tok, tgt, pos, e);
        if (rc) break;
        sum += llama_forward(m, 0, m->c.n_layers, 0);
        count += llama_count_targets(tgt, n);
        if (acc) correct += count_correct(m, tgt, buf, host, chunk);
    }
    if (!rc) rc = d->seek(d->ud, zero, e);
    free(tok); free(tgt); free(pos);
    if (buf) m->ops->free(m->ctx, buf);
    free(host);
    if (rc) return NAN;
    if (acc) *acc = count ? (double)correct / count : 0;
    return count ? sum / count : 0;
}

// ----------------------------------------------------------------------------
// checkpoints

/* SIGINT / SIGTERM: finish the step, save a checkpoint, stop. */
static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static int save_file(Trainer *tr, const TrainData *d, const char *path, const CkptState *stp, Err *e);

/* Save the run after `step` steps into --ckpt-dir/step-N.h5 and prune:
 * with several ranks all write it together (ckpt_save_dist), each its
 * tensors (with ZeRO its shard of the moments); rank 0 prunes. */
static int save_run(Trainer *tr, const TrainData *d, const char *run_config, long step, long tokens,
                    double lr, Err *e) {
    char path[4096];
    ckpt_step_path(tr->o.ckpt_dir, step, path, sizeof path);
    /* every rank's cursor is the global one (each draws the whole batch) */
    int nc = trainer_cursor_words(d);
    uint64_t *cursor = xmalloc((size_t)nc * (size_t)tr->world * sizeof *cursor);
    d->tell(d->ud, cursor);
    for (int r = 1; r < tr->world; r++) memcpy(cursor + (size_t)nc * r, cursor, (size_t)nc * sizeof *cursor);
    CkptState st = {step, tokens, (uint64_t)tr->o.seed, lr, tr->world, cursor, {0}, (char *)run_config, d->data_id,
                    tr->model_id, nc, NULL, 0};
    if (d->aux_save) st.aux = d->aux_save(d->ud, &st.naux);
    int src = save_file(tr, d, path, &st, e);
    free(st.aux);
    free(cursor);
    return src;
}

/* What each rank holds of the trained buffer for ckpt_save_dist: rank r's
 * part [own[2r], own[2r+1]) (its stage's, with ZeRO its shard of that);
 * NULL when every rank holds all of it. */
static size_t *own_map(const Trainer *tr) {
    if (!tr->pipe && !tr->zero) return NULL;
    size_t *own = xmalloc(2 * (size_t)tr->world * sizeof *own), *sh = xmalloc((size_t)(tr->dp + 1) * sizeof *sh);
    for (int r = 0; r < tr->world; r++) {
        size_t lo = 0, hi = tr->pt->size;
        if (tr->pipe) pipe_stage_range(tr->pipe, r / tr->dp, &lo, &hi);
        if (tr->zero) {
            dist_shards_range(tr->pt, lo, hi, sh);
            lo = sh[r % tr->dp];
            hi = sh[r % tr->dp + 1];
        }
        own[2 * r] = lo;
        own[2 * r + 1] = hi;
    }
    free(sh);
    return own;
}

static int save_file(Trainer *tr, const TrainData *d, const char *path, const CkptState *stp, Err *e) {
    CkptState st = *stp;
    Rng r;
    rng_seed(&r, (uint64_t)tr->o.seed);
    memcpy(st.rng, r.s, sizeof st.rng);
    double t0 = time_now();
    HostView hv; /* host copies of a GPU's buffers for the HDF5 writer */
    device_host_view(&tr->m, &tr->opt, &hv);
    int src;
    if (tr->world > 1) {
        CkptLora cl = {tr->m.lc, &tr->m.lt, hv.m.lora_params, tr->base_ref, tr->m.qdata ? tr->o.base_quant : NULL,
                       tr->m.qdata ? tr->model_id : 0};
        size_t *own = own_map(tr);
        src = ckpt_save_dist(path, &tr->c, &tr->m.t, hv.m.params, d->tokenizer_id, tr->m.lora ? &cl : NULL, &hv.opt,
                             own, &st, e);
        free(own);
    } else if (tr->m.lora) { /* the adapters and their moments; a fine-tuned base by reference */
        CkptLora cl = {tr->m.lc, &tr->m.lt, hv.m.lora_params, tr->base_ref, tr->m.qdata ? tr->o.base_quant : NULL,
                       tr->m.qdata ? tr->model_id : 0};
        src = ckpt_save_lora(path, &tr->c, &tr->m.t, hv.m.params, d->tokenizer_id, &cl, &hv.opt, &st, e);
    } else {
        src = ckpt_save(path, &tr->c, &tr->m.t, hv.m.params, d->tokenizer_id, &hv.opt, &st, e);
    }
    device_host_free(&hv);
    if (src) return -1;
    if (tr->rank != 0) return 0;
    double dt = time_now() - t0;
    struct stat sb;
    stat(path, &sb);
    ckpt_prune(tr->o.ckpt_dir, (int)tr->o.keep, NULL);
    printf("checkpoint: %s (%.1f MB in %.2f s, %.0f MB/s)\n", path, sb.st_size / 1e6, dt, sb.st_size / 1e6 / dt);
    fflush(stdout);
    return 0;
}

/* --resume: the same model, optimizer and data position as when saved.
 * *start gets the step to continue from (0 when nothing was found). */
static int resume_run(Trainer *tr, TrainData *d, long *start, long *tokens, Err *e) {
    const TrainOpts *o = &tr->o;
    char rpath[4096] = "";
    *start = 0;
    if (!o->resume) return 0;
    if (strcmp(o->resume, "auto") == 0) {
        int found = ckpt_latest(o->ckpt_dir, rpath, sizeof rpath, e);
        if (found < 0) return -1;
        if (!found) {
            printf("resume: no checkpoint in %s; starting from scratch\n", o->ckpt_dir);
            return 0;
        }
    } else {
        snprintf(rpath, sizeof rpath, "%s", o->resume);
    }
    CkptInfo info;
    CkptState st;
    char diff[128];
    if (ckpt_info(rpath, &info, e)) return -1;
    if (ckpt_config_diff(&info.c, &tr->c, diff, sizeof diff))
        return err_set(e, "%s: the checkpoint's model does not match the requested one (%s: checkpoint vs "
                          "--preset/--set)", rpath, diff);
    if (info.tokenizer_id != d->tokenizer_id)
        return err_set(e, "%s: trained on shards of another tokenizer than %s", rpath, d->name);
    if (info.has_lora != tr->m.lora)
        return err_set(e, "%s: %s, this run %s", rpath, info.has_lora ? "a LoRA run's checkpoint" : "a full training run's checkpoint",
                       tr->m.lora ? "trains LoRA adapters (--lora-r)" : "trains every weight (no --lora-r)");
    HostView hv;
    AdamW full; /* a part (stage, ZeRO shard): the whole moments read, this rank's part kept */
    int part = tr->opt.size != tr->pt->size;
    if (part) zero_moments(tr, &full);
    device_host_view(&tr->m, part ? &full : &tr->opt, &hv);
    int lrc;
    if (tr->m.lora) {
        CkptLora cl = {tr->m.lc, &tr->m.lt, hv.m.lora_params, NULL, NULL, 0};
        /* a quantised base stays as loaded: the state's model_id (its hash) says it is the same */
        lrc = source_load_lora(rpath, &tr->c, &tr->m.t, tr->m.qdata ? NULL : hv.m.params, &cl, &hv.opt, &st, e);
        if (!lrc && strcmp(info.lora_base_quant, tr->m.qdata ? tr->o.base_quant : ""))
            lrc = err_set(e, "%s: trained on a base %s%s, this run's is %s%s", rpath,
                          info.lora_base_quant[0] ? "held as --base-quant " : "in float32", info.lora_base_quant,
                          tr->m.qdata ? "held as --base-quant " : "in float32", tr->m.qdata ? tr->o.base_quant : "");
    } else {
        lrc = ckpt_load(rpath, &tr->c, &tr->m.t, hv.m.params, &hv.opt, &st, e);
    }
    if (!lrc) device_host_push(&hv, &tr->m, part ? &full : &tr->opt);
    device_host_free(&hv);
    if (part) {
        size_t s0 = tr->mlo;
        memcpy(tr->opt.m, full.m + s0, tr->opt.size * sizeof(float));
        memcpy(tr->opt.v, full.v + s0, tr->opt.size * sizeof(float));
        tr->opt.t = full.t;
        zero_moments_free(&full);
    }
    if (lrc) return -1;
    /* the cursors of all ranks are the global one: any rank count resumes */
    if (st.model_id != tr->model_id) {
        err_set(e, "%s: fine-tuned from another model than %s", rpath, tr->init ? tr->init : "a fresh one");
        ckpt_state_free(&st);
        return -1;
    }
    int nc = trainer_cursor_words(d);
    if (st.ncursor != nc) {
        err_set(e, "%s: its data cursor has %d words, this run's data needs %d (one source: 2, a mixture of K "
                   "sources: 1 + 2K): resume with the same --train sources", rpath, st.ncursor, nc);
        ckpt_state_free(&st);
        return -1;
    }
    if (st.data_id != d->data_id) {
        err_set(e, "%s: trained on other data than %s (data id %016llx, this run's %016llx)", rpath, d->name,
                (unsigned long long)st.data_id, (unsigned long long)d->data_id);
        ckpt_state_free(&st);
        return -1;
    }
    if (st.seed != (uint64_t)o->seed)
        fprintf(stderr, "warning: %s was trained with --seed %llu, this run has %ld: the data order "
                        "changes\n", rpath, (unsigned long long)st.seed, o->seed);
    uint64_t cur[TRAIN_CURSOR_MAX];
    memcpy(cur, st.cursor, (size_t)nc * sizeof *cur);
    int rc = d->seek(d->ud, cur, e);
    if (rc == 0 && d->aux_load) rc = d->aux_load(d->ud, st.aux, st.naux, e);
    *start = st.step;
    *tokens = st.tokens;
    ckpt_state_free(&st);
    if (rc) return -1;
    if (*start >= o->steps)
        return err_set(e, "%s: already at step %ld of --steps %ld: nothing to do (raise --steps)", rpath, *start,
                       o->steps);
    d->tell(d->ud, cur);
    if (nc == 2)
        printf("resume: %s at step %ld (data epoch %llu, window %llu)\n", rpath, *start, (unsigned long long)cur[0],
               (unsigned long long)cur[1]);
    else
        printf("resume: %s at step %ld (data row %llu of the mixture)\n", rpath, *start, (unsigned long long)cur[0]);
    return 0;
}

// ----------------------------------------------------------------------------
// the loop

/* The base as float32 in gen's layout (params_build's table ft): what the
 * model holds (params: host copy of m->params), the tensors held quantised
 * dequantised. Adapters trained on a quantised base merge into this. */
static void dense_base(Llama *m, const float *params, const ParamTable *ft, float *out) {
    uint8_t *q = NULL;
    if (m->qdata) {
        q = xmalloc(m->t.qsize);
        m->ops->download(m->ctx, q, m->qdata, m->t.qsize);
    }
    source_quant_dense(&m->t, params, q, ft, out);
    free(q);
}

/* The trained model as float32 in the plain table's layout (caller frees):
 * with LoRA the adapters merged into the base (dequantised if quantised). */
static float *merged_model(Trainer *tr, const float *params, const float *lora_params, ParamTable *ft) {
    Llama *m = &tr->m;
    LC_ASSERT(params_build(&tr->c, ft, NULL) == 0);
    float *w = xalloc_aligned(ft->size * sizeof(float));
    if (m->qdata) dense_base(m, params, ft, w);
    else memcpy(w, params, ft->size * sizeof(float));
    if (m->lora) lora_merge(&m->lc, &tr->c, ft, w, &m->lt, lora_params, 1);
    return w;
}

static void print_sample(Trainer *tr, const char *when) {
    Llama *gen = &tr->gen, *m = &tr->m;
    if (m->qdata) { /* gen is on the CPU: a dense float copy */
        float *h = xmalloc(m->t.size * sizeof(float));
        m->ops->download(m->ctx, h, m->params, m->t.size * sizeof(float));
        dense_base(m, h, &gen->t, gen->params);
        free(h);
    } else {
        m->ops->download(m->ctx, gen->params, m->params, m->t.size * sizeof(float)); /* gen is on the CPU */
    }
    if (m->lora) { /* the adapters merged into the sampling copy */
        float *lp = xmalloc(m->lt.size * sizeof(float));
        m->ops->download(m->ctx, lp, m->lora_params, m->lt.size * sizeof(float));
        lora_merge(&m->lc, &m->c, &gen->t, gen->params, &m->lt, lp, 1);
        free(lp);
    }
    int32_t *ids = NULL;
    size_t cap = 0, n = tok_encode(&tr->tok, tr->o.prompt, strlen(tr->o.prompt), &ids, &cap);
    int T = (int)tr->o.T; /* the sample's context: the training length */
    if ((int)n + 1 >= T) n = (size_t)T / 2;
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = 0.8f;
    sp.top_p = 0.95f;
    printf("---- sample %s ----\n%s", when, tr->o.prompt);
    fflush(stdout);
    Err e = {{0}};
    EngineOpts eo = {1, 0, T, T, 0}; /* one sequence; gen is refreshed for the next sample */
    if (run_generate(gen, &tr->tok, &sp, (uint64_t)tr->o.seed, ids, (int)n, (int)tr->o.sample_tokens, &eo, stdout,
                     NULL, NULL, &e) < 0)
        printf("(no sample: %s)", e.msg);
    printf("\n--------\n");
    fflush(stdout);
    free(ids);
}

static int write_hf(Trainer *tr, const float *params, const float *lora_params, Err *e);

/* The run's result: the weights (--out), or the PEFT adapter and on request
 * the merged model; with --hf-out also a Hugging Face directory. */
static int write_outputs(Trainer *tr, uint64_t tok_id, Err *e) {
    const TrainOpts *o = &tr->o;
    Llama *m = &tr->m;
    HostView hv;
    device_host_view(m, NULL, &hv);
    int rc;
    if (!m->lora) {
        rc = ckpt_save(o->out, &tr->c, &m->t, hv.m.params, tok_id, NULL, NULL, e);
    } else {
        rc = peft_save(o->adapter_out, &m->lc, &m->lt, hv.m.lora_params, tr->init, 1, e);
        if (!rc && o->merged_out) {
            ParamTable ft;
            float *merged = merged_model(tr, hv.m.params, hv.m.lora_params, &ft);
            rc = ckpt_save(o->merged_out, &tr->c, &ft, merged, tok_id, NULL, NULL, e);
            free(merged);
            params_free(&ft);
        }
    }
    if (!rc && o->hf_out) rc = write_hf(tr, hv.m.params, hv.m.lora_params, e);
    device_host_free(&hv);
    return rc;
}

/* --hf-out: the weights (merged with LoRA) as a Hugging Face directory with
 * the tokenizer and its chat template; a classifier gets the pad id its
 * rewards were read with. */
static int write_hf(Trainer *tr, const float *params, const float *lora_params, Err *e) {
    ParamTable ft;
    float *merged = merged_model(tr, params, lora_params, &ft);
    LlamaConfig c = tr->c;
    if (c.num_labels && c.pad_id < 0 && tr->has_tok) c.pad_id = tr->tok.eos;
    HfTok tk = {tr->has_tok ? &tr->tok : NULL, tr->o.tokpath, tr->has_tok ? tr->tok.chat_template : NULL};
    int rc = hf_save_tok(tr->o.hf_out, &c, &ft, merged, &tk, 1, e);
    free(merged);
    params_free(&ft);
    if (!rc) printf("Hugging Face directory: %s\n", tr->o.hf_out);
    return rc;
}

/* Validation of each part (a mixture's sources): the mean of their losses,
 * each named on the line and in the record. */
static double validate_parts(Trainer *tr, TrainData *val, FILE *mf, long step, Err *e) {
    char line[2048] = "", json[4096] = "";
    double mean = 0;
    for (int k = 0; k < val->nparts; k++) {
        TrainData *p = &val->parts[k];
        double v = trainer_eval(tr, p, tr->o.val_batches, NULL, e);
        if (isnan(v) && e->msg[0]) return v;
        mean += v / val->nparts;
        snprintf(line + strlen(line), sizeof line - strlen(line), " | %s %.4f", p->name, v);
        snprintf(json + strlen(json), sizeof json - strlen(json), ",\"val_loss/%s\":%.6f", p->name, v);
    }
    printf("step %ld | val loss %.4f%s\n", step, mean, line);
    if (mf) fprintf(mf, "{\"step\":%ld,\"val_loss\":%.6f%s}\n", step, mean, json);
    return mean;
}

/* Validation line and metrics record. */
static double validate(Trainer *tr, TrainData *val, const TrainLoss *lf, FILE *mf, long step, Err *e) {
    if (val->nparts && !(lf && lf->eval)) return validate_parts(tr, val, mf, step, e);
    if (lf && lf->eval) {
        double v = lf->eval(lf->ud, tr, val, tr->o.val_batches, e);
        if (isnan(v) && e->msg[0]) return v;
        char xl[512] = "", xj[16384] = "";
        if (lf->extra) lf->extra(lf->ud, 1, xl, sizeof xl, xj, sizeof xj);
        const char *vn = lf->val_name ? lf->val_name : "loss";
        printf("step %ld | val %s %.4f%s\n", step, vn, v, xl);
        if (mf) fprintf(mf, "{\"step\":%ld,\"val_%s\":%.6f%s}\n", step, vn, v, xj);
        return v;
    }
    double acc = 0, v = trainer_eval(tr, val, tr->o.val_batches, val->masked ? &acc : NULL, e);
    if (isnan(v) && e->msg[0]) return v;
    if (val->masked) {
        printf("step %ld | val loss %.4f | val accuracy %.4f\n", step, v, acc);
        if (mf) fprintf(mf, "{\"step\":%ld,\"val_loss\":%.6f,\"val_accuracy\":%.6f}\n", step, v, acc);
    } else {
        printf("step %ld | val loss %.4f\n", step, v);
        if (mf) fprintf(mf, "{\"step\":%ld,\"val_loss\":%.6f}\n", step, v);
    }
    return v;
}

int trainer_run(Trainer *tr, TrainData *train, TrainData *val, const TrainLoss *lf, const CliFlag *run_flags,
                int nflags, Err *e) {
    const TrainOpts *o = &tr->o;
    Llama *m = &tr->m;
    const LlamaConfig *c = &tr->c;
    int rc = -1;
    e->msg[0] = '\0';
    if (o->tokpath) {
        if (tok_load(&tr->tok, o->tokpath, e)) return -1;
        tr->has_tok = 1;
        if (tr->tok.id != train->tokenizer_id)
            return err_set(e, "%s: not the tokenizer that made %s", o->tokpath, train->name);
        /* the sampling copy: weights only (the engine has its own buffers) */
        if (o->sample_tokens && llama_init(&tr->gen, c, &ops_cpu, NULL, 1, 1, 0, e)) return -1;
    }
    long start;
    long start_tokens = 0;
    if (resume_run(tr, train, &start, &start_tokens, e)) return -1;
    if (trainer_mkdir(o->ckpt_dir, "--ckpt-dir", e)) return -1;
    char *run_config = cli_dump(run_flags, nflags);
    FILE *mf = NULL;
    if (o->metrics && tr->rank == 0 && !(mf = fopen(o->metrics, start ? "a" : "w"))) {
        free(run_config);
        return err_set(e, "--metrics: cannot create %s", o->metrics);
    }
    /* MFU = FLOPs/token x tokens/s of the whole global batch / the peak of
     * every rank together: each rank's own (given, or its SGEMM measured
     * while the others measure theirs, so cores they share are shared as in
     * the steps), summed. One rank's peak against all ranks' tokens read 2x
     * too high on two ranks (148% on SmolLM2-135M LoRA, mpirun -np 2). */
    double peak = o->peak;
    dist_barrier();
    if (peak == 0) peak = tr->dev.gpu ? 989e3 : run_sgemm_peak(2048, 5); /* GPU: H100 bf16 dense (DESIGN.md) */
    dist_allreduce_f64(&peak, 1);
    double fpt = llama_train_flops_per_token(m);
    long micro = o->B * o->T, steps = o->steps;
    char *grid = dist_describe(); /* collective */
    printf("%s\n", grid);
    free(grid);
    if (tr->dp > 1)
        printf("  data parallel: replica r trains micro-batches [r*%ld, (r+1)*%ld) of each step's %ld; %s; AdamW "
               "state %.2f MB on this rank\n", tr->k1 - tr->k0, tr->k1 - tr->k0, tr->accum,
               tr->zero ? "ZeRO-1: gradients reduce-scattered, AdamW on this rank's shard, weights all-gathered"
                        : "gradients all-reduced layer by layer during the backward",
               2.0 * tr->opt.size * sizeof(float) / 1e6);
    if (tr->pipe) pipe_banner(tr->pipe);
    uint64_t sent0 = dist_bytes_sent();
    int overlap = dp_overlap();
    printf("%s: dim %d, %d layers, %d/%d heads, hidden %d, vocab %d: %.2fM parameters; %llu train %s"
           " of %ld tokens%s\n", tr->mode, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->hidden, c->vocab,
           m->t.numel / 1e6, (unsigned long long)train->count, train->unit ? train->unit : "rows", o->T, val ? ", validation on" : "");
    printf("  B=%ld T=%ld x %ld micro-batches = %ld tokens/step, %ld steps, lr %g (warmup %ld, cosine to %g), "
           "MFU against %.1f GFLOP/s%s\n", o->B, o->T, tr->accum, o->batch_tokens, steps, o->lr, tr->sched.warmup,
           o->lr * o->min_frac, peak, tr->world > 1 ? " (all ranks)" : "");
    if (m->lora) {
        char mods[128] = "";
        for (int k = 0; k < LORA_NMOD; k++)
            if (m->lc.targets >> k & 1) snprintf(mods + strlen(mods), sizeof mods - strlen(mods), "%s%s", mods[0] ? "," : "", lora_module_name(k));
        printf("  LoRA r %d, alpha %g%s, dropout %g on %s: %.3fM trainable parameters (%.2f%% of %.2fM), the base "
               "frozen%s\n", m->lc.r, (double)m->lc.alpha, m->lc.rslora ? " (rsLoRA)" : "", (double)m->lc.dropout,
               mods, m->lt.numel / 1e6, 100.0 * m->lt.numel / m->t.numel, m->t.numel / 1e6,
               m->recompute ? "; activations recomputed" : "");
        if (m->qdata) { /* QLoRA: what stays quantised */
            char types[256] = "";
            int cnt[QUANT_NF4 + 1] = {0};
            size_t qn = 0;
            for (int i = 0; i < m->t.n; i++)
                if (m->t.p[i].qtype) cnt[m->t.p[i].qtype]++, qn += m->t.p[i].numel;
            for (int ty = 0; ty <= QUANT_NF4; ty++)
                if (cnt[ty])
                    snprintf(types + strlen(types), sizeof types - strlen(types), "%s%d %s", types[0] ? ", " : "",
                             cnt[ty], quant_name((uint32_t)ty));
            printf("  base held quantised (--base-quant %s): %s tensors, %.2fM parameters in %.1f MB (float32: %.1f "
                   "MB)\n", o->base_quant, types, qn / 1e6, m->t.qsize / 1e6, qn * 4 / 1e6);
        }
    } else if (m->recompute) {
        printf("  activations recomputed in the backward (--recompute 1)\n");
    }
    if (tr->gen.params && start == 0 && tr->rank == 0) print_sample(tr, "before training");
    if (tr->pipe) pipe_release(tr->pipe);

    size_t n = (size_t)micro * tr->accum;
    int32_t *tk = xmalloc(n * sizeof *tk), *tg = xmalloc(n * sizeof *tg), *ps = xmalloc(n * sizeof *ps);
    double t_start = time_now(), first_val = NAN, last_val = NAN;
    char c1[32], c2[32];
    stop_signal = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (val && start == 0) {
        last_val = first_val = validate(tr, val, lf, mf, 0, e);
        if (isnan(first_val) && e->msg[0]) goto out;
    }
    double lr_now = sched_lr(&tr->sched, start);
    long tokens_seen = start_tokens;
    for (long step = start; step < steps; step++) {
        double t0 = time_now();
        for (long k = 0; k < tr->accum; k++)
            if (train->next(train->ud, tk + k * micro, tg + k * micro, ps + k * micro, e)) goto out;
        long ntgt = llama_count_targets(tg, n);
        if (tr->pipe) { /* a stage writes only its own gradients (and a tied embedding's copy) */
            m->ops->zero(m->ctx, tr->grads + tr->own_lo, (tr->own_hi - tr->own_lo) * sizeof(float));
            if (c->tied && !m->lora) m->ops->zero(m->ctx, tr->grads, tr->bucket[0] * sizeof(float));
        } else {
            m->ops->zero(m->ctx, tr->grads, tr->pt->size * sizeof(float));
        }
        double loss = 0;
        if (tr->pipe && !lf) {
            loss = pipe_step(tr->pipe, tk, tg, ps, ntgt ? 1.0f / ntgt : 0.0f, step, NULL, NULL, e);
            if (isnan(loss) && e->msg[0]) goto out;
        } else if (lf) {
            loss = lf->step(lf->ud, tr, tk, tg, ps, tr->accum, step, e);
            if (isnan(loss) && e->msg[0]) goto out;
        }
        /* this rank's block of the global batch (all of it on one rank); ntgt
         * counts the whole batch's trained tokens, the same on every rank */
        int hooked = 0;
        for (long k = tr->k0; !lf && !tr->pipe && k < tr->k1; k++) {
            if (llama_set_batch(m, tk + k * micro, tg + k * micro, ps + k * micro, e)) goto out;
            /* the LoRA dropout mask of (step, micro-batch): a resumed run draws the same */
            llama_lora_seed(m, (uint64_t)o->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)step * 4096 + (uint64_t)k);
            loss += llama_forward(m, 0, c->n_layers, ntgt ? 1.0f / ntgt : 0.0f);
            hooked = tr->world > 1 && !tr->zero && k == tr->k1 - 1 && overlap;
            m->bwd_hook = hooked ? dp_hook : NULL;
            m->bwd_ud = tr;
            llama_backward(m, 0, c->n_layers);
            m->bwd_hook = NULL;
        }
        dist_allreduce_f64(&loss, 1);
        if (!lf) loss /= ntgt ? ntgt : 1;
        double norm = dp_grad_norm(tr, hooked);
        /* a NaN/Inf on any rank stops every rank */
        if (dist_allreduce_max_int(!isfinite(loss) || !isfinite(norm))) {
            err_set(e, "step %ld: loss %g, gradient norm %g: training diverged (try a lower --lr)", step, loss, norm);
            goto out;
        }
        lr_now = sched_lr(&tr->sched, step);
        if (tr->zero || tr->pipe) part_step(tr, norm, (float)lr_now);
        else adamw_step(&tr->opt, tr->pt, tr->params, tr->grads, norm, (float)lr_now);
        if (tr->pipe) pipe_tie_weights(tr->pipe);
        m->ops->sync(m->ctx);
        double dt = time_now() - t0, el = time_now() - t_start;
        long ran = lf && lf->tokens ? lf->tokens(lf->ud) : (long)n; /* tokens forward and backward */
        tokens_seen += ran;
        double tps = ran / dt, mfu = fpt * tps / (peak * 1e9);
        char trained[48] = "", xl[512] = "", xj[16384] = "";
        if (train->masked) snprintf(trained, sizeof trained, " (%.0f trained)", ntgt / dt);
        if (lf && lf->extra) lf->extra(lf->ud, 0, xl, sizeof xl, xj, sizeof xj);
        if (train->report) train->report(train->ud, xj + strlen(xj), sizeof xj - strlen(xj));
        if ((step + 1) % o->log_every == 0 || step + 1 == steps)
            printf("step %ld/%ld | loss %.4f%s | lr %.2e | norm %.3f | %.0f tok/s%s | MFU %.1f%% | %s elapsed | ETA %s\n",
                   step + 1, steps, loss, xl, lr_now, norm, tps, trained, 100 * mfu, run_clock(el, c1, sizeof c1),
                   run_clock(el / (step + 1 - start) * (steps - step - 1), c2, sizeof c2));
        if (mf && train->masked)
            fprintf(mf, "{\"step\":%ld,\"loss\":%.17g,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                        "\"trained_tokens_per_s\":%.1f,\"mfu\":%.4f,\"elapsed_s\":%.3f,\"tokens\":%ld,"
                        "\"trained_tokens\":%ld%s}\n",
                    step + 1, loss, lr_now, norm, tps, ntgt / dt, mfu, el, tokens_seen, ntgt, xj);
        else if (mf)
            fprintf(mf, "{\"step\":%ld,\"loss\":%.17g,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                        "\"mfu\":%.4f,\"elapsed_s\":%.3f,\"tokens\":%ld%s}\n",
                    step + 1, loss, lr_now, norm, tps, mfu, el, tokens_seen, xj);
        if (val && ((o->val_every && (step + 1) % o->val_every == 0) || step + 1 == steps)) {
            last_val = validate(tr, val, lf, mf, step + 1, e);
            if (isnan(last_val) && e->msg[0]) goto out;
        }
        fflush(stdout);
        if (mf) fflush(mf);
        /* a signal seen by any rank stops all after the same step (mpirun forwards SIGTERM to each) */
        if (tr->world > 1) stop_signal = dist_allreduce_max_int(stop_signal);
        if ((o->save_every && (step + 1) % o->save_every == 0) || step + 1 == steps || stop_signal) {
            if (save_run(tr, train, run_config, step + 1, tokens_seen, lr_now, e)) goto out;
        }
        if (stop_signal) {
            err_set(e, "stopped by %s after step %ld; resume with --resume auto (--ckpt-dir %s)",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", step + 1, o->ckpt_dir);
            goto out;
        }
    }
    if (tr->pipe) {
        pipe_report(tr->pipe);
        pipe_gather(tr->pipe); /* rank 0 writes the outputs */
    }
    if (tr->gen.params && tr->rank == 0) print_sample(tr, "after training");
    if (tr->rank == 0 && write_outputs(tr, train->tokenizer_id, e)) goto out;
    if (tr->dp > 1)
        printf("dist: %.0f bytes sent per step by rank 0 in the gradient reductions (%zu gradient bytes; ring "
               "bound 2(N-1)/N x that = %.0f); %.1f ms per step waiting for them after the backward\n",
               (double)(dist_bytes_sent() - sent0) / (double)(steps - start), (tr->own_hi - tr->own_lo) * sizeof(float),
               2.0 * (tr->dp - 1) / tr->dp * (double)((tr->own_hi - tr->own_lo) * sizeof(float)),
               1e3 * tr->dp_wait / (double)(steps - start));
    printf("done: %ld steps in %s", steps - start, run_clock(time_now() - t_start, c1, sizeof c1));
    const char *vn = lf && lf->val_name ? lf->val_name : "loss";
    if (val && start == 0) printf(", val %s %.4f -> %.4f", vn, first_val, last_val);
    else if (val) printf(", val %s %.4f", vn, last_val);
    if (m->lora) printf("; adapter written to %s%s%s\n", o->adapter_out, o->merged_out ? ", merged model to " : "",
                        o->merged_out ? o->merged_out : "");
    else printf("; model written to %s\n", o->out);
    rc = 0;
out:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(tk); free(tg); free(ps);
    free(run_config);
    if (mf) fclose(mf);
    return rc;
}
