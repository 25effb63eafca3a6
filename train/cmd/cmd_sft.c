/*
 * cmd_sft.c: `llamac sft`: supervised fine-tuning of a pretrained model on
 * chat or instruction JSONL (data/sft.h: formats, templates, loss masks,
 * packing). The loop is train/loop/trainer.c's; this file supplies the model
 * source, the examples as (B, T) rows and the SFT defaults (TRL's SFTConfig
 * where it has one: lr 2e-5, 3 epochs' worth of steps unless --steps).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/sft.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../io/source.h"
#include "../loop/ftdata.h"
#include "../loop/trainer.h"
#include "../loop/trdata.h"

/* --dump: the examples as JSONL, for a look at what trains (and the TRL
 * reference test). Written to a temporary name and renamed. */
static int dump_examples(const SftSet *s, const char *path, Err *e) {
    FtOut w;
    if (ftdata_out_open(&w, "--dump", path, e)) return -1;
    FILE *f = w.f;
    for (size_t i = 0; i < s->n; i++) {
        for (int part = 0; part < 2; part++) {
            fputs(part ? "], \"mask\": [" : "{\"ids\": [", f);
            for (size_t k = s->off[i]; k < s->off[i + 1]; k++)
                fprintf(f, "%s%d", k > s->off[i] ? ", " : "", part ? s->mask[k] : s->ids[k]);
        }
        fputs("]}\n", f);
    }
    return ftdata_out_close(&w, 1, e);
}

int cmd_sft(int argc, char **argv, Err *e) {
    const char *model = NULL, *format = "auto", *loss = "auto";
    const char *text_field = "text", *truncation = "keep", *dump = NULL, *dump_batches = NULL;
    const char *date = CHAT_LLAMA31_DATE;
    FtData fd;
    ftdata_default(&fd);
    FtDataFlags ff;
    ftdata_flags(&fd, &(FtDataHelp){
        "training examples (JSONL; see --format)",
        "held-out examples (JSONL): masked loss every --val-every steps",
        "chat template: llama2, llama3, llama3.1, chatml or none (default: the tokenizer's own, from a GGUF or tokenizer_config.json)",
        "tokens per example (0: --seq + 1)",
        "1: pack examples into rows (document mask); 0: one padded row each",
        "prepend BOS to untemplated examples: auto (if the tokenizer has one), 1, 0"}, &ff);
    TrainOpts o;
    ftdata_train_defaults(&o, 2e-5, "sft.h5", "checkpoints-sft");
    CliFlag flags[16 + TRAINER_NFLAGS] = {
        ff.data, ff.val,
        {"model", CLI_STR, &model, 0, 0, "model to fine-tune: an llamac checkpoint, a Hugging Face directory or a GGUF file"},
        ff.tpl,
        {"format", CLI_STR, &format, 0, 0, "auto (from the first line's fields), messages, prompt, alpaca or text"},
        {"loss", CLI_STR, &loss, 0, 0, "tokens trained: auto, assistant (turns), completion, all"},
        {"text-field", CLI_STR, &text_field, 0, 0, "field of the text format (TRL's dataset_text_field)"},
        ff.max_len,
        {"truncation", CLI_STR, &truncation, 0, 0, "longer examples: keep (truncated to --max-length) or drop"},
        ff.packing, ff.epochs, ff.bos,
        {"date", CLI_STR, &date, 0, 0, "llama3.1 template: the system block's \"Today Date\" (a flag, never the clock, so runs reproduce)"},
        {"dump", CLI_STR, &dump, 0, 0, "write the examples as JSONL {\"ids\", \"mask\"} (mask 1: trained) to this file and stop"},
        {"dump-batches", CLI_STR, &dump_batches, 0, 0, "also write each training micro-batch as JSONL {\"tokens\", \"targets\", \"pos\"} (B*T each) to this file"},
    };
    int nf = 15;
    nf += trainer_flags(&o, flags + nf);
    int parsed = ftdata_parse(argc, argv, flags, nf,
                              "llamac sft [config.ini] --model M --tokenizer T --data FILE.jsonl [--val FILE.jsonl] [flags]",
                              "Supervised fine-tuning on chat or instruction data: conversations ({\"messages\": [...]}),\n"
                              "prompt-completion pairs, Alpaca records or plain text, rendered with a chat template and\n"
                              "trained on the assistant / completion tokens only. Examples are packed into rows with the\n"
                              "document mask, so attention never crosses from one example to the next.", e);
    if (parsed) return parsed < 0 ? -1 : 0;
    if (ftdata_require(&fd, model, &o, e)) return -1;
    SftOpts so = {SFT_AUTO, SFT_LOSS_AUTO, -1, text_field, 0, 0, 0, date};
    if (sft_format_parse(format, &so.format, e) || sft_loss_parse(loss, &so.loss, e)) return -1;
    if (strcmp(truncation, "keep") && strcmp(truncation, "drop"))
        return err_set(e, "--truncation: expected keep or drop, got '%.40s'", truncation);
    so.drop_long = strcmp(truncation, "drop") == 0;
    if (ftdata_check(&fd, &o, 1, &so, e)) return -1;

    ModelSource ms;
    Tokenizer tok;
    if (ftdata_open(&ms, model, o.tokpath, &tok, e)) return -1;
    LlamaConfig c = ms.c;
    int rc = -1;
    SftSet ts, vs;
    SftRows tr, vr;
    Trainer t;
    RowSource src = {&tr, NULL, NULL}, vsrc = {&vr, NULL, NULL};
    FtOut batches = {0};
    memset(&ts, 0, sizeof ts); memset(&vs, 0, sizeof vs);
    memset(&tr, 0, sizeof tr); memset(&vr, 0, sizeof vr);
    memset(&t, 0, sizeof t);
    if (!fd.tpl_name) { /* the template the tokenizer comes with, if any */
        ChatTemplate tpl;
        int found = chat_template_of(&tok, o.tokpath, &tpl, NULL, e);
        if (found < 0) goto out;
        if (found) so.tpl = (int)tpl;
    }
    so.bos = ftdata_bos(&fd, &tok);
    if (dump) {
        if (sft_load(&ts, fd.data, &tok, &so, e) || dump_examples(&ts, dump, e)) goto out;
        printf("sft: %zu examples of %s written to %s\n", ts.n, fd.data, dump);
        rc = 0;
        goto out;
    }
    if (trdata_sft_load("sft", fd.data, &tok, &so, &o, (int)fd.packing, "train", &ts, &tr, e)) goto out;
    if (fd.val && trdata_sft_load("sft", fd.val, &tok, &so, &o, (int)fd.packing, "val", &vs, &vr, e)) goto out;
    ftdata_steps(&fd, &o, sft_rows_batches(&tr), o.batch_tokens ? o.batch_tokens / (o.B * o.T) : 1);
    if (trainer_open(&t, &o, "sft", &c, &ms, e)) goto out;
    if (dump_batches) {
        if (ftdata_out_open(&batches, "--dump-batches", dump_batches, e)) goto out;
        src.dump = batches.f;
    }
    TrainData dt = trdata_rows(&src, fd.data, tok.id, sft_hash(&ts, (int)fd.packing));
    TrainData dv = trdata_rows(&vsrc, fd.val, tok.id, 0);
    rc = trainer_run(&t, &dt, fd.val ? &dv : NULL, NULL, flags, nf, e);
    int wrc = ftdata_out_close(&batches, rc == 0, e); /* renamed only after a run that finished */
    if (rc == 0) rc = wrc;
out:
    ftdata_out_close(&batches, 0, e);
    trainer_close(&t);
    sft_rows_free(&vr);
    sft_rows_free(&tr);
    sft_free(&vs);
    sft_free(&ts);
    tok_free(&tok);
    return rc;
}
