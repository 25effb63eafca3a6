/*
 * cmd_inspect.c: `llamac inspect <preset>`: shape, parameter count (total,
 * per group, optionally per tensor), FLOPs per token and the memory a
 * training step needs at (B, T), full and with LoRA, with and without
 * activation recomputation (llama_memory_opts). Uses the parameter
 * table and llama_memory only: nothing is allocated, so the 8B shapes are
 * inspected in milliseconds. Given a checkpoint file it first summarises it
 * (ckpt_print) and then reports the shape it holds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/engine.h"
#include "../../model/llama.h"
#include "../../data/gguf.h"
#include "../io/ckpt.h"
#include "../io/gguf.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../io/source.h"

static const char *group_names[PG_COUNT] = {"embedding", "attention", "mlp", "norms", "lm_head"};

/* 1234567 -> "1,234,567" */
static const char *commas(size_t v, char *buf) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%zu", v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

/* One memory line: total = the parts of a training step's buffers. */
static void mem_line(const char *what, const LlamaMem *m) {
    size_t moments = 2 * (m->grads + m->lora_grads);
    if (m->lora)
        printf("  %s: %.3f GiB = frozen params %.3f + adapters with grads and AdamW m,v %.4f + activations %.3f\n",
               what, gib(llama_mem_step_total(m)), gib(m->params), gib(m->lora + m->lora_grads + moments),
               gib(m->acts));
    else
        printf("  %s: %.3f GiB = params %.3f + grads %.3f + AdamW m,v %.3f + activations %.3f\n", what,
               gib(llama_mem_step_total(m)), gib(m->params), gib(m->grads), gib(moments), gib(m->acts));
}

int cmd_inspect(int argc, char **argv, Err *e) {
    long B = 1, T = 0, rank = 16, max_seqs = 64, kv_tokens = 0;
    int tensors = 0, recompute = 0;
    const char *targets = NULL, *base_quant = NULL;
    CliList set = {{0}, 0};
    CliFlag flags[] = {
        {"batch", CLI_INT, &B, 1, 1 << 20, "micro-batch size B for the memory estimate"},
        {"seq", CLI_INT, &T, 1, 1 << 24, "sequence length T (default: min(context, 2048))"},
        {"lora-r", CLI_INT, &rank, 1, 4096, "LoRA rank for the LoRA estimate"},
        {"lora-targets", CLI_STR, &targets, 0, 0, "LoRA target modules (default q_proj,k_proj,v_proj,o_proj)"},
        {"recompute", CLI_BOOL, &recompute, 0, 1, "estimate with activation recomputation first"},
        {"tensors", CLI_BOOL, &tensors, 0, 1, "list every tensor: name, shape, offset"},
        {"max-seqs", CLI_INT, &max_seqs, 1, 1 << 20, "sequences decoded at once for the sampling estimate"},
        {"kv-tokens", CLI_INT, &kv_tokens, 0, 1L << 40, "KV pool in tokens for the sampling estimate (0: max-seqs x T)"},
        {"set", CLI_LIST, &set, 0, 0, "override a model field, e.g. --set n_kv_heads=2 (repeatable)"},
        {"base-quant", CLI_STR, &base_quant, 0, 0, "also estimate QLoRA with the base held quantised: keep (a GGUF's own types) or a type (nf4, q8_0, q4_0, ...)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse(argc, argv, flags, nf, pos, 1, &npos, &help, e)) return -1;
    if (help) {
        char about[1024] = "Print a model's shape, parameter count per tensor group, training FLOPs per\n"
                           "token and the memory a training step needs at (B, T). Presets:";
        for (const char *const *p = config_preset_names(); *p; p++) {
            strcat(about, " ");
            strcat(about, *p);
        }
        cli_help("llamac inspect <preset | checkpoint.h5 | model.gguf> [flags]", about, flags, nf);
        return 0;
    }
    if (npos != 1) return err_set(e, "inspect: expected one preset name or checkpoint (see llamac inspect --help)");
    LlamaConfig c;
    if (ckpt_is_hdf5(pos[0])) { /* a checkpoint: its summary, then its shape below */
        CkptInfo info;
        if (ckpt_print(pos[0], stdout, e) || ckpt_info(pos[0], &info, e)) return -1;
        c = info.c;
        printf("\n");
    } else if (gguf_is_file(pos[0])) { /* GGUF: the file's summary, then its shape */
        if (gguf_llama_print(pos[0], stdout, e) || gguf_llama_config(pos[0], &c, e)) return -1;
        printf("\n");
    } else if (config_preset(pos[0], &c, e)) {
        return -1;
    }
    for (int i = 0; i < set.n; i++)
        if (config_set_kv(&c, set.v[i], e)) return -1;
    if (config_validate(&c, e)) return -1;
    if (T == 0) T = c.max_seq < 2048 ? c.max_seq : 2048;
    if (T > c.max_seq)
        return err_set(e, "--seq: %ld exceeds the context length %d of %s", T, c.max_seq, c.name);

    LoraConfig lc; /* checked before anything is printed */
    if (lora_config_from_flags(&lc, rank, 0, 0, targets, NULL, 0, &c, e)) return -1;
    ParamTable t;
    if (params_build(&c, &t, e)) return -1;
    char b1[32], b2[32];
    int HS = config_head_size(&c);
    printf("model %s: dim %d, layers %d, heads %d, kv heads %d, head size %d, hidden %d, vocab %d\n",
           c.name, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, HS, c.hidden, c.vocab);
    printf("  context %d, rope theta %g", c.max_seq, c.rope_theta);
    if (c.rope_scaling == ROPE_SCALING_LLAMA3)
        printf(", llama3 rope scaling (factor %g, low %g, high %g, original context %d)",
               c.rope_factor, c.rope_low_freq, c.rope_high_freq, c.rope_orig_ctx);
    if (c.num_labels) /* a classifier (reward model): the head is score.weight */
        printf(", norm eps %g, untied embeddings, head score (%d x %d), pad id %d\n", c.norm_eps, c.num_labels, c.dim,
               c.pad_id);
    else
        printf(", norm eps %g, %s embeddings\n", c.norm_eps, c.tied ? "tied" : "untied");
    printf("parameters: %s (%.3f B)\n", commas(t.numel, b1), t.numel / 1e9);
    size_t per[PG_COUNT] = {0};
    for (int i = 0; i < t.n; i++) per[t.p[i].group] += t.p[i].numel;
    for (int g = 0; g < PG_COUNT; g++) {
        if (g == PG_HEAD && c.tied) {
            printf("  %-10s %17s  (tied to the embedding)\n", group_names[g], "0");
            continue;
        }
        if (g == PG_HEAD && c.num_labels) {
            printf("  %-10s %17s  %5.1f%%  score (%d x %d)\n", "head", commas(per[g], b1), 100.0 * per[g] / t.numel,
                   c.num_labels, c.dim);
            continue;
        }
        printf("  %-10s %17s  %5.1f%%\n", group_names[g], commas(per[g], b1), 100.0 * per[g] / t.numel);
    }
    if (tensors) {
        printf("tensors (Hugging Face names, buffer offsets in floats):\n");
        for (int i = 0; i < t.n; i++) {
            const ParamInfo *p = &t.p[i];
            char shape[48];
            if (p->ndim == 2) snprintf(shape, sizeof shape, "(%lld, %lld)", (long long)p->shape[0], (long long)p->shape[1]);
            else snprintf(shape, sizeof shape, "(%lld)", (long long)p->shape[0]);
            printf("  %-52s %-16s %14s%s\n", p->name, shape, commas(p->offset, b1), p->decay ? "  decay" : "");
        }
    }
    double fpt = llama_flops_per_token(&c, (int)T);
    printf("training FLOPs per token at T=%ld: %.4g (6N + 12*L*H*HS*T)\n", T, fpt);

    char tnames[128] = "";
    for (int m = 0; m < LORA_NMOD; m++)
        if (lc.targets >> m & 1u) {
            if (*tnames) strcat(tnames, ",");
            strcat(tnames, lora_module_name(m));
        }
    ParamTable lt;
    if (lora_build(&lc, &c, &lt, e)) { params_free(&t); return -1; }
    uint32_t *qtypes = NULL;
    if (base_quant) { /* the plan training would make (source.h) */
        ModelSource ms;
        memset(&ms, 0, sizeof ms);
        if (ckpt_is_hdf5(pos[0]) || gguf_is_file(pos[0])) {
            if (source_open(&ms, pos[0], e)) return params_free(&t), params_free(&lt), -1;
        } else {
            ms.kind = SOURCE_CKPT;
            snprintf(ms.path, sizeof ms.path, "preset %s", pos[0]);
        }
        qtypes = xcalloc((size_t)t.n, sizeof *qtypes);
        if (source_quant_plan(&ms, &c, &t, base_quant, qtypes, e) < 0)
            return free(qtypes), params_free(&t), params_free(&lt), -1;
    }
    for (int k = 0; k < 2; k++) {
        int rc = k == 0 ? recompute : !recompute;
        LlamaOpts full = {LLAMA_GRADS_FULL, NULL, rc, NULL, 0}, lora = {LLAMA_GRADS_INPUT, &lc, rc, NULL, 0};
        LlamaOpts qlora = {LLAMA_GRADS_INPUT, &lc, rc, qtypes, 0};
        LlamaMem mf = llama_memory_opts(&c, &ops_cpu, (int)B, (int)T, &full);
        LlamaMem ml = llama_memory_opts(&c, &ops_cpu, (int)B, (int)T, &lora);
        char what[256];
        printf("memory for one training step at B=%ld, T=%ld (float32, CPU backend), %s:\n", B, T,
               rc ? "with activation recomputation (--recompute: only each layer's input kept)"
                  : "without activation recomputation");
        mem_line("full training", &mf);
        snprintf(what, sizeof what, "LoRA r=%ld on %s (%s trainable)", rank, tnames, commas(lt.numel, b2));
        mem_line(what, &ml);
        if (qtypes) {
            LlamaMem mq = llama_memory_opts(&c, &ops_cpu, (int)B, (int)T, &qlora);
            snprintf(what, sizeof what, "QLoRA (--base-quant %s) r=%ld on %s", base_quant, rank, tnames);
            mem_line(what, &mq);
        }
    }
    free(qtypes);
    if (c.num_labels) { /* engine_init refuses it too */
        printf("sampling: none (a classifier has no vocabulary head to sample from)\n");
        params_free(&lt);
        params_free(&t);
        return 0;
    }
    EngineOpts eo = {(int)max_seqs, 0, (int)T, kv_tokens, 0};
    EngineMem em = engine_memory(&c, NULL, &ops_cpu, &eo);
    printf("sampling (llamac sample --max-seqs %d, sequences up to %d tokens, float32, CPU backend):\n", em.max_seqs,
           em.ctx);
    printf("  KV cache %s bytes per token; pool of %s tokens %.3f GiB; packed weights %.3f GiB; "
           "activations %.3f GiB\n",
           commas(engine_kv_bytes_per_token(&c, &ops_cpu), b1), commas((size_t)em.kv_tokens, b2), gib(em.kv),
           gib(em.weights), gib(em.acts));
    params_free(&lt);
    params_free(&t);
    return 0;
}
