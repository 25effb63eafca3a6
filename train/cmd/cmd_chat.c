/*
 * cmd_chat.c: `llamac chat`: a conversation on stdin/stdout. Each line of
 * stdin is a user message; the reply streams to stdout, then a newline.
 *
 * The conversation lives in the sampling engine's KV cache as a session
 * (engine.h): each turn appends only its new tokens to what the cache
 * holds. The cache keeps the replies as the model sampled them; a turn
 * renders the whole conversation with the chat template (data/chat.h: the
 * ids SFT trains on) and appends what follows the last reply there: the
 * reply's end-of-turn token (the template's, in place of the stop id the
 * model sampled; after the reply's last token when it was cut short), then
 * the new user message and the header of the next reply. When a turn does
 * not fit the context, the conversation starts over from the system
 * message with that user message, saying so on stderr. One stderr line per
 * turn gives the counts.
 *
 * The template: --template, else the chat_template of tokenizer_config.json
 * beside the tokenizer file (a Hugging Face directory), recognised by
 * chat_template_detect. Reading a GGUF or tokenizer file's own template
 * comes with the tokenizer's chat_template field (the GGUF import).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/chat.h"
#include "../io/ckpt.h"
#include "../io/source.h"
#include "../proc/cli.h"
#include "cmds.h"
#include "../proc/device.h"
#include "../loop/run.h"

/* The conversation: messages whose contents it owns. */
typedef struct {
    ChatMsg *m;
    int n, cap;
} Conv;

static void conv_add(Conv *c, ChatRole r, const char *s, size_t len) {
    if (c->n == c->cap) c->m = xrealloc(c->m, (size_t)(c->cap = 2 * c->cap + 8) * sizeof *c->m);
    char *copy = xmalloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = 0;
    c->m[c->n++] = (ChatMsg){r, copy, len};
}

static void conv_truncate(Conv *c, int n) {
    while (c->n > n) free((char *)c->m[--c->n].content);
}

int cmd_chat(int argc, char **argv, Err *e) {
    const char *model = NULL, *tokpath = NULL, *system = NULL, *tname = NULL, *device = "cpu", *adapter = NULL, *quant = NULL;
    long max_tokens = 256, top_k = 0, seed = 42, ctx = 0;
    double temperature = 0.8, top_p = 0.95;
    CliFlag flags[] = {
        {"model", CLI_STR, &model, 0, 0, "model or checkpoint (HDF5, from llamac pretrain or convert)"},
        {"tokenizer", CLI_STR, &tokpath, 0, 0, "tokenizer file the model was trained with (default: the one a GGUF or HF directory carries)"},
        {"system", CLI_STR, &system, 0, 0, "system message (default: the template's, if it has one)"},
        {"template", CLI_STR, &tname, 0, 0,
         "llama2, llama3, llama3.1 or chatml (default: tokenizer_config.json's chat_template beside the tokenizer)"},
        {"max-tokens", CLI_INT, &max_tokens, 1, 1 << 24, "tokens per reply at most"},
        {"temperature", CLI_FLOAT, &temperature, 0, 100, "softmax temperature (0: greedy)"},
        {"top-k", CLI_INT, &top_k, 0, 1 << 24, "sample from the k most likely tokens (0: off)"},
        {"top-p", CLI_FLOAT, &top_p, 0, 1, "nucleus sampling mass in (0, 1] (1: off)"},
        {"seed", CLI_INT, &seed, 0, 1L << 62, "sampling seed"},
        {"ctx", CLI_INT, &ctx, 0, 1 << 24, "context length for the KV cache (0: the model's, at most 2048)"},
        {"adapter", CLI_STR, &adapter, 0, 0, "PEFT LoRA adapter directory to apply (from llamac sft or PEFT)"},
        {"quant", CLI_STR, &quant, 0, 0, "hold the weights quantised while decoding: keep (a GGUF file's own types), or quantise at load to nf4, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k"},
        {"device", CLI_STR, &device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac chat --model FILE [--tokenizer FILE] [--template NAME] [--system TEXT] [flags]",
                 "Chat with a model: each line of stdin is a user message, each reply streams to stdout\n"
                 "followed by a newline. The conversation stays in the KV cache: a turn prefills only\n"
                 "its new tokens. When the context is full the conversation starts over (said on stderr).",
                 flags, nf);
        return 0;
    }
    if (!model) return err_set(e, "--model: required");
    ChatTemplate tpl = CHAT_LLAMA3;
    static char sys_default[CHAT_MAX_SYSTEM];
    snprintf(sys_default, sizeof sys_default, "%s", CHAT_SMOLLM2_SYSTEM);
    if (tname && chat_template_parse(tname, &tpl, e)) return -1;
    if (device_check(device, e)) return -1;
    ModelSource ms;
    if (source_open(&ms, model, e)) return -1;
    if (!(tokpath = source_tokenizer(&ms, tokpath, e))) return -1;
    LlamaConfig c = ms.c;
    uint64_t model_tok = ms.tokenizer_id;
    Tokenizer tok;
    if (tok_load(&tok, tokpath, e)) return -1;
    if (!tname) { /* the tokenizer's own template (GGUF, tokenizer_config.json) */
        int found = chat_template_of(&tok, tokpath, &tpl, sys_default, e);
        if (found <= 0) {
            if (found == 0)
                err_set(e, "--template: required: %s comes with no chat template (give llama2, llama3, llama3.1 or "
                           "chatml)", tokpath);
            tok_free(&tok);
            return -1;
        }
    }
    int rc = -1;
    Conv cv = {0};
    ChatTokens ct = {0};
    RunStream rs = {0};
    int32_t *hist = NULL;
    char *line = NULL, *text = NULL;
    size_t lcap = 0, tcap = 0;
    if ((model_tok && tok.id != model_tok) || tok.vocab > c.vocab) {
        err_set(e, "%s: not the tokenizer %s was trained with", tokpath, model);
        goto out_tok;
    }
    /* the KV cache holds every layer's keys and values for ctx positions: a
     * 30-layer model's full 8192 would be gigabytes (--ctx asks for more) */
    if (ctx == 0) ctx = c.max_seq < 2048 ? c.max_seq : 2048;
    if (ctx > c.max_seq) {
        err_set(e, "--ctx: %ld exceeds the model's context length %d", ctx, c.max_seq);
        goto out_tok;
    }
    /* the template's tokens, checked before the model loads */
    ChatMsg probe = {CHAT_USER, "", 0};
    if (chat_encode_sys(&tok, tpl, sys_default, &probe, 1, &ct, tokpath, e)) goto out_tok;
    /* the reply's end: ChatML's <|im_end|>; the others end on tok.eos / tok.eot */
    int stop[3];
    rs = (RunStream){&tok, stop, run_stop_ids(&tok, tpl == CHAT_CHATML ? tok_special_id(&tok, "<|im_end|>") : -1, stop),
                     stdout, NULL, 0, 0, 0, 0};
    SampleParams sp = SAMPLE_PARAMS_DEFAULT;
    sp.temperature = (float)temperature;
    sp.top_k = (int)top_k;
    sp.top_p = (float)top_p;
    if (sample_params_check(&sp, e)) goto out_tok;
    Llama m;
    Device dev;
    Engine *g = NULL;
    /* the engine keeps its own KV cache and activations: the model is its weights */
    if (device_load_model(&dev, device, model, adapter, quant, &c, &m, 1, 1, e)) goto out_tok;
    EngineOpts eo = {1, 0, (int)ctx, ctx, 1}; /* one sequence: the conversation; m's copies go once packed */
    if (engine_init(&g, &m, &eo, e)) goto out_model;
    EngineCallbacks cb = {run_stream_token, run_stream_done, &rs};
    const int session = 1;
    hist = xmalloc(((size_t)ctx + 2) * sizeof *hist); /* a turn's new tokens */
    if (system) conv_add(&cv, CHAT_SYSTEM, system, strlen(system));
    int base = cv.n, turn = 0;
    ssize_t len;
    long lineno = 0;
    while ((len = getline(&line, &lcap, stdin)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        turn++;
        conv_add(&cv, CHAT_USER, line, (size_t)len);
        char where[64];
        snprintf(where, sizeof where, "stdin:%ld", lineno);
        if (chat_encode_sys(&tok, tpl, sys_default, cv.m, cv.n, &ct, where, e)) goto out_model;
        int cached = engine_session_len(g, session), np = 0;
        const int32_t *p = ct.ids;
        if (cached > 0) { /* what follows the last reply: its end-of-turn token, then the new turn */
            size_t b = ct.n;
            while (b > 0 && !ct.mask[b - 1]) b--; /* past the last reply's masked ids */
            int end = b > 0 ? ct.ids[b - 1] : -1, last = rs.n > 0 ? rs.ids[rs.n - 1] : -1;
            np = 0;
            if (end >= 0 && last >= 0) {
                if (rs.finish != FINISH_STOP) hist[np++] = last; /* cut short: its last token is not cached */
                hist[np++] = end;
                for (size_t k = b; k < ct.n && np < ctx; k++) hist[np++] = ct.ids[k];
                p = hist;
            } else { /* no reply to follow: start over */
                engine_end_session(g, session);
                cached = 0;
            }
        }
        if (cached == 0) np = (int)ct.n;
        if ((long)cached + np >= ctx) { /* no room for a reply: start over from the system message */
            fprintf(stderr, "llamac: turn %d: the context of %ld tokens is full; starting a new conversation\n",
                    turn, ctx);
            for (int k = base; k < cv.n - 1; k++) free((char *)cv.m[k].content);
            cv.m[base] = cv.m[cv.n - 1];
            cv.n = base + 1;
            engine_end_session(g, session);
            cached = 0;
            if (chat_encode_sys(&tok, tpl, sys_default, cv.m, cv.n, &ct, where, e)) goto out_model;
            if ((long)ct.n >= ctx) {
                err_set(e, "%s: the message takes %zu tokens with the template, more than the context of %ld",
                        where, ct.n, ctx);
                goto out_model;
            }
            p = ct.ids;
            np = (int)ct.n;
        }
        /* each turn draws from its own stream of --seed */
        EngineRequest r = {p, np, 1, (int)max_tokens, sp, sample_seed((uint64_t)seed, (uint64_t)turn), 0, stop,
                           rs.nstop, 0, session, NULL};
        double t0 = time_now();
        if (engine_add(g, &r, e) < 0) goto out_model;
        engine_run(g, &cb);
        double t_gen = time_now() - t0 - rs.t_first;
        printf("\n");
        fflush(stdout);
        int n = rs.n, used = cached + np + n;
        int stopped = n > 0 && rs.finish == FINISH_STOP;
        size_t tl = tok_decode(&tok, rs.ids, (size_t)(n - stopped), &text, &tcap);
        conv_add(&cv, CHAT_ASSISTANT, text ? text : "", tl);
        fprintf(stderr, "llamac: turn %d: %d prompt tokens prefilled (%d from the cache), %d generated "
                        "(%.1f tok/s), %d of %ld context tokens used\n",
                turn, np, cached, n, t_gen > 0 ? n / t_gen : 0.0, used, ctx);
        if (used >= ctx - 1)
            fprintf(stderr, "llamac: turn %d: the reply filled the context of %ld tokens; the next message starts "
                            "a new conversation\n", turn, ctx);
    }
    rc = 0;
out_model:
    engine_free(g);
    llama_free(&m);
    device_close(&dev);
out_tok:
    conv_truncate(&cv, 0);
    free(cv.m);
    chat_tokens_free(&ct);
    free(hist);
    free(rs.ids);
    free(line);
    free(text);
    tok_free(&tok);
    return rc;
}
