/*
 * sft.h: supervised fine-tuning examples from JSONL, and the (B, T) rows
 * the trainer draws from them.
 *
 * Formats, one JSON object per line, detected from the fields of the first
 * line (or named by --format):
 *   messages     {"messages": [{"role", "content"}, ...]}  multi-turn chat
 *   prompt       {"prompt": P, "completion": C}, P and C strings or message
 *                lists (TRL's prompt-completion, standard or conversational)
 *   alpaca       {"instruction", "input" (may be empty or absent), "output"}
 *   text         {"<field>": "..."}  plain text (TRL's dataset_text_field)
 *
 * Rendering: messages (and message-list prompts/completions) go through
 * the chat template (data/chat.h). String prompt-completion pairs are the
 * prompt's ids then the completion's, alpaca examples are rendered as one
 * user turn (instruction, a blank line, input) and one assistant turn with
 * a template, or in the Stanford Alpaca prompt format without one; text is
 * its ids. Without a template (or for text), BOS is prepended when the
 * tokenizer has one and EOS appended, as TRL does for standard data; a
 * template writes its own BOS, so there is never a second one.
 *
 * Loss masks (--loss): assistant (the assistant turns' content and their
 * end-of-turn token, never role headers; the default for messages),
 * completion (the completion's ids, EOS included; the default for prompt
 * and alpaca), all (every token but a leading BOS; the default for text).
 * mask[i] = 1 means token i is a training target (predicted from i-1).
 *
 * Length: an example longer than max_len tokens is truncated (its first
 * max_len tokens kept) or dropped (SFT_DROP); examples left with no trained
 * token are dropped. The counts are in SftSet.
 *
 * Rows: with packing (the default) examples are packed best-fit-decreasing
 * into rows of T slots (an example of n tokens fills n - 1 slots: inputs
 * ids[0..n-1), targets ids[1..n)), each keeping its own positions so that
 * attention and RoPE restart at its start (the document mask); without
 * packing each example has a row of its own. Padding has target LC_IGNORE.
 * Rows are visited in an order shuffled per epoch from (seed, epoch); the
 * cursor (epoch, next row) is what a checkpoint saves.
 */
#ifndef LLAMAC_DATA_SFT_H
#define LLAMAC_DATA_SFT_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "chat.h"
#include "tok.h"

typedef enum { SFT_AUTO, SFT_MESSAGES, SFT_PROMPT, SFT_ALPACA, SFT_TEXT, SFT_FORMAT_COUNT } SftFormat;
typedef enum { SFT_LOSS_AUTO, SFT_LOSS_ASSISTANT, SFT_LOSS_COMPLETION, SFT_LOSS_ALL } SftLoss;

typedef struct SftOpts {
    SftFormat format;
    SftLoss loss;
    int tpl;                /* ChatTemplate, or -1 for none */
    const char *text_field; /* for SFT_TEXT ("text") */
    int max_len;            /* tokens per example, >= 2 */
    int drop_long;          /* 1: drop longer examples; 0: truncate */
    int bos;                /* 1: prepend BOS to untemplated examples (the tokenizer's, if any) */
    const char *date;       /* Llama 3.1/3.2's system-block date (NULL: the template's default) */
} SftOpts;

/* All examples of a file: tokens back to back. */
typedef struct SftSet {
    int32_t *ids;      /* all tokens */
    uint8_t *mask;     /* 1 = trained */
    size_t *off;       /* (n + 1) example i is ids[off[i] .. off[i+1]) */
    size_t n, ntok, cap_tok, cap_ex;
    SftFormat format;  /* as detected */
    long lines, truncated, dropped_long, dropped_empty;
    long trained;      /* trained tokens in all examples */
} SftSet;

/* Names: "messages" "prompt" "alpaca" "text" (and "auto"); "assistant"
 * "completion" "all" (and "auto"). -1 with "--format: ..." otherwise. */
int sft_format_parse(const char *s, SftFormat *f, Err *e);
int sft_loss_parse(const char *s, SftLoss *l, Err *e);
const char *sft_format_name(SftFormat f);

/* Read path into *s. Errors name the file and line: not JSON, missing
 * fields, wrong types, unknown role, empty content, no assistant turn,
 * roles that the template cannot order, a template the tokenizer cannot
 * render; and a file with no usable example. Free with sft_free. */
int sft_load(SftSet *s, const char *path, const Tokenizer *t, const SftOpts *o, Err *e);
void sft_free(SftSet *s);

/* Identity of a set's examples (tokens and masks; packed or not), for
 * resume checks. */
uint64_t sft_hash(const SftSet *s, int packed);

/* Rendering one example as sft_load does, for the other builders of
 * examples (data/dpo.c). The fields are the renderer's working buffers. */
typedef struct SftRender {
    const Tokenizer *t;   /* borrowed */
    const SftOpts *o;     /* borrowed: tpl, bos */
    SftLoss loss;
    ChatTokens ex;        /* the last example rendered: ids, mask (1 = trained) */
    ChatTokens tmp;
    int32_t *enc;
    size_t enc_cap;
    ChatMsg *msgs;
    int msg_cap;
} SftRender;

void sft_render_init(SftRender *b, const Tokenizer *t, const SftOpts *o, SftLoss loss);
void sft_render_free(SftRender *b);

/* One prompt-completion example into b->ex as sft_load renders the prompt
 * format: prompt and completion (jansson json_t values) both strings (BOS
 * when o->bos, the completion's ids past the longest common prefix of the
 * prompt's and the whole text's, EOS) or both message lists (the chat
 * template; the completion is what follows the rendered prompt with its
 * generation header). Mask 1 on the completion tokens (SFT_LOSS_ALL: every
 * token but the first). cname names the completion field in errors
 * ("<where>: empty \"chosen\"", bad messages, template errors). */
int sft_render_prompt(SftRender *b, const void *prompt, const void *completion, const char *cname,
                      const char *where, Err *e);

/* Rows of T slots built from a set. */
typedef struct SftRows {
    int B, T, packed;
    uint64_t seed;
    int pad;              /* token id of padding (eos, or 0) */
    size_t nrows;
    size_t *row_off;      /* (nrows + 1) into items */
    uint32_t *items;      /* example indices, row by row */
    const SftSet *set;    /* borrowed */
    uint64_t epoch, pos;  /* cursor: next row in epoch `epoch`'s order */
    uint64_t *order;      /* (nrows) this epoch's row order */
    uint64_t order_epoch;
    long slots_used;      /* slots holding example tokens (packing efficiency) */
} SftRows;

/* Build rows (B rows per micro-batch, T slots each) over s, which must
 * outlive them. Needs at least B rows: else "<name>: N examples make M
 * rows, fewer than one batch of B". Free with sft_rows_free. */
int sft_rows_init(SftRows *r, const SftSet *s, int B, int T, int packed, int pad, uint64_t seed,
                  const char *name, Err *e);
void sft_rows_free(SftRows *r);

/* The next micro-batch (B x T host arrays, =): tokens, targets (LC_IGNORE
 * where untrained) and positions. Rows left over at an epoch's end
 * (fewer than B) are skipped. */
void sft_rows_next(SftRows *r, int32_t *tok, int32_t *tgt, int32_t *pos);

/* sft_rows_next that also writes ids[b] (B, may be NULL) = the storage
 * index of row b (the packing's order, which depends on the set, T and
 * packing alone, not on B or the seed): distill's teacher-cache key. */
void sft_rows_next_ids(SftRows *r, int32_t *tok, int32_t *tgt, int32_t *pos, uint64_t *ids);
/* Row `row` (storage index < nrows) into one row's T tokens, targets and
 * positions (host, =), as sft_rows_next draws it. */
void sft_rows_fill(const SftRows *r, size_t row, int32_t *tok, int32_t *tgt, int32_t *pos);
/* Cursor (epoch, pos) and seek; pos a multiple of B at most nrows. */
int sft_rows_seek(SftRows *r, uint64_t epoch, uint64_t pos, Err *e);

/* Micro-batches per epoch. */
static inline uint64_t sft_rows_batches(const SftRows *r) { return r->nrows / (size_t)r->B; }

#endif
