/*
 * ftdata.c: the fine-tuning data flags and their checks (see ftdata.h).
 */
#include "ftdata.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../dist/dist.h"

void ftdata_default(FtData *d) {
    memset(d, 0, sizeof *d);
    d->bos = "auto";
    d->packing = 1;
}

void ftdata_flags(FtData *d, const FtDataHelp *h, FtDataFlags *f) {
    f->data = (CliFlag){"data", CLI_STR, &d->data, 0, 0, h->data};
    f->val = (CliFlag){"val", CLI_STR, &d->val, 0, 0, h->val};
    f->tpl = (CliFlag){"template", CLI_STR, &d->tpl_name, 0, 0, h->tpl};
    f->max_len = (CliFlag){"max-length", CLI_INT, &d->max_len, 0, 1 << 24, h->max_len};
    f->packing = (CliFlag){"packing", CLI_INT, &d->packing, 0, 1, h->packing};
    f->epochs = (CliFlag){"epochs", CLI_INT, &d->epochs, 0, 1 << 20, "passes over the data, when --steps is 0 (default 3)"};
    f->bos = (CliFlag){"bos", CLI_STR, &d->bos, 0, 0, h->bos};
}

int ftdata_parse(int argc, char **argv, const CliFlag *flags, int nf, const char *usage, const char *about,
                 Err *e) {
    int help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) cli_help(usage, about, flags, nf);
    return help ? 1 : 0;
}

int ftdata_require(const FtData *d, const char *model, const TrainOpts *o, Err *e) {
    if (!model) return err_set(e, "--model: required (a checkpoint, Hugging Face directory or GGUF file)");
    if (!d->data) return err_set(e, "--data: required (a JSONL file)");
    if (!o->tokpath) return err_set(e, "--tokenizer: required (the model's tokenizer)");
    return trainer_check(o, e);
}

int ftdata_check(FtData *d, const TrainOpts *o, int seqs, SftOpts *so, Err *e) {
    so->tpl = -1;
    if (d->tpl_name && strcmp(d->tpl_name, "none") != 0) {
        ChatTemplate tpl;
        if (chat_template_parse(d->tpl_name, &tpl, e)) return -1;
        so->tpl = (int)tpl;
    }
    long most = o->T / seqs + 1; /* an item's seqs sequences of n tokens fill n - 1 slots each */
    if (d->max_len == 0) d->max_len = most;
    if (d->max_len > most)
        return seqs == 1 ? err_set(e, "--max-length: %ld exceeds --seq + 1 = %ld", d->max_len, most)
                         : err_set(e, "--max-length: %ld does not fit a pair in a row of --seq %ld (at most --seq / 2 "
                                      "+ 1 = %ld)", d->max_len, o->T, most);
    so->max_len = (int)d->max_len;
    if (strcmp(d->bos, "auto") && strcmp(d->bos, "0") && strcmp(d->bos, "1"))
        return err_set(e, "--bos: expected auto, 0 or 1, got '%.40s'", d->bos);
    return 0;
}

int ftdata_open(ModelSource *ms, const char *model, const char *tokpath, Tokenizer *tok, Err *e) {
    if (source_open(ms, model, e) || tok_load(tok, tokpath, e)) return -1;
    if (ms->tokenizer_id && ms->tokenizer_id != tok->id)
        err_set(e, "%s: not the tokenizer %s was trained with", tokpath, model);
    else if (tok->vocab > ms->c.vocab)
        err_set(e, "%s: %d-word vocabulary, larger than the model's %d", tokpath, tok->vocab, ms->c.vocab);
    else
        return 0;
    tok_free(tok);
    return -1;
}

int ftdata_bos(const FtData *d, const Tokenizer *tok) {
    if (strcmp(d->bos, "auto")) return strcmp(d->bos, "1") == 0;
    return tok->bos >= 0 && (tok->kind == TOK_SPM || tok_special_id(tok, "<|begin_of_text|>") == tok->bos);
}

void ftdata_steps(const FtData *d, TrainOpts *o, uint64_t batches_per_epoch, long accum) {
    if (o->steps == 0) {
        uint64_t per_epoch = batches_per_epoch / (uint64_t)(accum > 0 ? accum : 1);
        o->steps = (long)(per_epoch ? per_epoch : 1) * (d->epochs ? d->epochs : 3);
    } else if (d->epochs) {
        fprintf(stderr, "warning: --steps %ld given: --epochs %ld is ignored\n", o->steps, d->epochs);
    }
}

int ftdata_out_open(FtOut *w, const char *flag, const char *path, Err *e) {
    w->flag = flag;
    w->path = path;
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
    w->f = fopen(w->tmp, "w");
    return w->f ? 0 : err_set(e, "%s: cannot create %s", flag, w->tmp);
}

int ftdata_out_close(FtOut *w, int keep, Err *e) {
    if (!w->f) return 0;
    int bad = ferror(w->f) | fclose(w->f);
    w->f = NULL;
    if (!keep) {
        remove(w->tmp);
        return 0;
    }
    if (bad || rename(w->tmp, w->path)) {
        remove(w->tmp);
        return err_set(e, "%s: cannot write %s", w->flag, w->path);
    }
    return 0;
}

void ftdata_train_defaults(TrainOpts *o, double lr, const char *out, const char *ckpt_dir) {
    trainer_opts_default(o);
    o->lr = lr;
    o->warmup = 0;
    o->steps = 0;
    o->B = 4;
    o->T = 1024;
    o->val_every = 50;
    o->val_batches = 10;
    o->out = out;
    o->ckpt_dir = ckpt_dir;
    o->prompt = "";
}

// ----------------------------------------------------------------------------
// preference-pair rows as the trainer's data

static int pair_next(void *ud, int32_t *tok, int32_t *tgt, int32_t *pos, Err *e) {
    (void)e;
    dpo_rows_next(ud, tok, tgt, pos);
    return 0;
}

static void pair_tell(const void *ud, uint64_t cur[2]) {
    const DpoRows *r = ud;
    cur[0] = r->epoch;
    cur[1] = r->pos;
}

static int pair_seek(void *ud, const uint64_t cur[2], Err *e) { return dpo_rows_seek(ud, cur[0], cur[1], e); }

TrainData ftdata_pair_data(DpoRows *r, const char *name, uint64_t tokenizer_id, uint64_t data_id, int masked) {
    TrainData d = {r, name, tokenizer_id, data_id, pair_next, pair_tell, pair_seek, r->nrows, "rows", masked, 2, NULL, 0, NULL, NULL, NULL};
    return d;
}

int ftdata_pair_eval(Trainer *tr, DpoRows *r, long nbatches, FtPairFn one, void *ud, Err *e) {
    Llama *m = &tr->m;
    size_t N = (size_t)m->B * m->T;
    int32_t *tok = xmalloc(N * sizeof *tok), *tgt = xmalloc(N * sizeof *tgt), *pos = xmalloc(N * sizeof *pos);
    int drop = m->lora_train, rc = dpo_rows_seek(r, 0, 0, e);
    m->lora_train = 0; /* no dropout in evaluation */
    for (long b = 0; !rc && b < nbatches; b++) {
        dpo_rows_next(r, tok, tgt, pos);
        if (tr->pipe && tr->dp_rank != 0) continue; /* stages: the first replica validates */
        rc = one(ud, tok, tgt, pos, dpo_rows_last(r, 0), e);
    }
    if (tr->pipe && dist_allreduce_max_int(rc != 0) && !rc) rc = err_set(e, "validation failed on another rank");
    m->lora_train = drop;
    if (!rc) rc = dpo_rows_seek(r, 0, 0, e);
    free(tok); free(tgt); free(pos);
    return rc;
}

void ftdata_extra_format(int validation, const char *const *names, const double *v, int n, char *line, size_t nline,
                         char *json, size_t njson) {
    const char *pre = validation ? "eval_" : "";
    size_t a = 0, b = 0;
    line[0] = json[0] = 0;
    for (int i = 0; i < n; i++) {
        if (a < nline) a += (size_t)snprintf(line + a, nline - a, " | %s%s %.4g", pre, names[i], v[i]);
        if (b < njson) b += (size_t)snprintf(json + b, njson - b, ",\"%s%s\":%.17g", pre, names[i], v[i]);
    }
}
