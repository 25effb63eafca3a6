/*
 * rollout.c: see rollout.h. Taken out of `llamac sample` when rejection
 * sampling became the second command to sample prompt files.
 */
#include "rollout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/source.h"
#include "run.h"

void rollout_flags_default(RolloutFlags *f, double temperature) {
    *f = (RolloutFlags){.max_tokens = 256, .max_seqs = 64, .max_rows = 512, .temperature = temperature, .top_p = 1};
}

void rollout_flags(RolloutFlags *f, CliFlag sampler[ROLLOUT_NSAMPLER], CliFlag engine[ROLLOUT_NENGINE]) {
    const CliFlag s[ROLLOUT_NSAMPLER] = {
        {"max-tokens", CLI_INT, &f->max_tokens, 1, 1 << 24, "tokens per sample at most"},
        {"temperature", CLI_FLOAT, &f->temperature, 0, 100, "softmax temperature (0: greedy)"},
        {"top-p", CLI_FLOAT, &f->top_p, 0, 1, "nucleus sampling mass in (0, 1] (1: off)"},
        {"top-k", CLI_INT, &f->top_k, 0, 1 << 24, "sample from the k most likely tokens (0: off)"},
        {"min-p", CLI_FLOAT, &f->min_p, 0, 1, "drop tokens below min-p x the most likely one's probability (0: off)"},
    };
    const CliFlag g[ROLLOUT_NENGINE] = {
        {"max-seqs", CLI_INT, &f->max_seqs, 1, 1 << 16, "sequences decoded at once"},
        {"max-rows", CLI_INT, &f->max_rows, 1, 1 << 20, "token rows of one forward (decode rows + prefill chunks)"},
        {"kv-tokens", CLI_INT, &f->kv_tokens, 0, 1L << 40, "KV cache pool in tokens (0: --max-seqs x the context)"},
        {"ctx", CLI_INT, &f->ctx, 0, 1 << 24,
         "longest sequence, prompt + sample (0: the longest prompt + --max-tokens, at most the model's)"},
        {"threads", CLI_INT, &f->threads, 0, 4096, "OpenMP threads (0: as started)"},
    };
    memcpy(sampler, s, sizeof s);
    memcpy(engine, g, sizeof g);
}

int rollout_params(const RolloutFlags *f, double rep, SampleParams *sp, Err *e) {
    *sp = (SampleParams){(float)f->temperature, (int)f->top_k, (float)f->top_p, (float)f->min_p, (float)rep};
    return sample_params_check(sp, e);
}

int rollout_open(Rollout *r, const RolloutOpts *o, Err *e) {
    memset(r, 0, sizeof *r);
    ModelSource ms;
    if (source_open(&ms, o->model, e)) return -1;
    r->c = ms.c;
    const char *tokpath = o->tokpath;
    if (!tokpath) {
        const char *t = source_tokenizer(&ms, NULL, e);
        if (!t) return -1;
        tokpath = t;
    }
    snprintf(r->tokpath, sizeof r->tokpath, "%s", tokpath);
    if (tok_load(&r->tok, r->tokpath, e)) return -1;
    if ((ms.tokenizer_id && r->tok.id != ms.tokenizer_id) || r->tok.vocab > r->c.vocab) {
        tok_free(&r->tok);
        return err_set(e, "%s: not the tokenizer %s was trained with", r->tokpath, o->model);
    }
    if (o->ctx > r->c.max_seq) {
        tok_free(&r->tok);
        return err_set(e, "--ctx: %ld exceeds the model's context length %d", o->ctx, r->c.max_seq);
    }
    /* the template of message prompts: the named one, else the tokenizer's */
    static char sys_default[CHAT_MAX_SYSTEM];
    char tpl_why[256];
    snprintf(sys_default, sizeof sys_default, "%s", CHAT_SMOLLM2_SYSTEM);
    snprintf(tpl_why, sizeof tpl_why, "give --template (llama2, llama3, llama3.1 or chatml): %.160s comes with none",
             r->tokpath);
    r->tpl = CHAT_LLAMA3;
    if (o->tname && strcmp(o->tname, "none") == 0) {
        snprintf(tpl_why, sizeof tpl_why, "--template none");
    } else if (o->tname) {
        if (chat_template_parse(o->tname, &r->tpl, e)) {
            tok_free(&r->tok);
            return -1;
        }
        r->have_tpl = 1;
    } else {
        Err te = {{0}};
        int found = chat_template_of(&r->tok, r->tokpath, &r->tpl, sys_default, &te);
        if (found < 0) snprintf(tpl_why, sizeof tpl_why, "%s", te.msg);
        r->have_tpl = found > 0;
    }
    char max_why[96];
    long most = o->ctx ? o->ctx : r->c.max_seq;
    snprintf(max_why, sizeof max_why, "the context of %ld tokens (%s)", most, o->ctx ? "--ctx" : "the model's");
    PromptOpts po = {r->have_tpl ? (int)r->tpl : -1, tpl_why, sys_default, o->special, (int)most, max_why};
    if (prompts_load(&r->ps, o->prompts, &r->tok, &po, e)) {
        tok_free(&r->tok);
        return -1;
    }
    /* the cache holds what this run can reach, not the model's whole context */
    size_t longest = 0;
    for (size_t i = 0; i < r->ps.n; i++)
        if (r->ps.off[i + 1] - r->ps.off[i] > longest) longest = r->ps.off[i + 1] - r->ps.off[i];
    r->ctx = o->ctx;
    if (r->ctx == 0) r->ctx = (long)longest + o->max_tokens < r->c.max_seq ? (long)longest + o->max_tokens : r->c.max_seq;
    /* the stop ids: end of text and end of turn (ChatML's <|im_end|> when
     * its template rendered the prompts) */
    if (!o->ignore_eos)
        r->n_stop_ids = run_stop_ids(&r->tok, r->have_tpl && r->tpl == CHAT_CHATML ? tok_special_id(&r->tok, "<|im_end|>")
                                                                                 : -1, r->stop_ids);
    return 0;
}

void rollout_free(Rollout *r) {
    prompts_free(&r->ps);
    tok_free(&r->tok);
}

int rollout_add(Engine *g, const Rollout *r, const char *prompts, size_t i, int n, int max_new, const SampleParams *sp,
                uint64_t seed, void *user, Err *e) {
    const PromptSet *ps = &r->ps;
    EngineRequest rq = {ps->ids + ps->off[i], (int)(ps->off[i + 1] - ps->off[i]), n, max_new, *sp,
                        sample_seed(seed, i), 0, r->stop_ids, r->n_stop_ids, 1, 0, user};
    if (engine_add(g, &rq, e) < 0) {
        Err ae = *e;
        return err_set(e, "%s:%ld: prompt %zu: %s", prompts, ps->line[i], i, ae.msg);
    }
    return 0;
}

int rollout_text_token(RolloutText *t, const Rollout *r, int id, char *const *stops, size_t nstops, char *const *own,
                       size_t nown) {
    if (t->stopped) return 1;
    for (int k = 0; k < r->n_stop_ids; k++)
        if (r->stop_ids[k] == id) return 0; /* the engine ends the sample; EOS is not text */
    size_t len;
    const char *b = tok_token_bytes(&r->tok, id, &len);
    if (t->len + len + 1 > t->cap) t->text = xrealloc(t->text, t->cap = 2 * (t->len + len) + 64);
    if (len) memcpy(t->text + t->len, b, len);
    t->len += len;
    if (!nstops && !nown) return 0;
    long a = stop_find(stops, nstops, t->text, t->len, t->checked);
    long c = stop_find(own, nown, t->text, t->len, t->checked);
    if (a < 0 || (c >= 0 && c < a)) a = c;
    t->checked = t->len;
    if (a < 0) return 0;
    t->len = (size_t)a;
    t->stopped = 1;
    return 1;
}

void rollout_text_free(RolloutText *t) {
    free(t->text);
    memset(t, 0, sizeof *t);
}
