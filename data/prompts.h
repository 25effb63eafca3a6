/*
 * prompts.h: prompts to sample from (llamac sample; rejection sampling and
 * RL rollouts next), read from JSONL, and the stop strings that end a
 * sample's text.
 *
 * One JSON object per line (empty lines skipped); a prompt's index is its
 * place among the objects, from 0. Exactly one of:
 *   "prompt": "text"          tokenised as it is (no BOS, no template;
 *                             special-token names stay text unless the
 *                             caller asks for them, as generate's --special)
 *   "prompt": [messages]      TRL's conversational prompt: as "messages"
 *   "messages": [messages]    {"role": "system" | "user" | "assistant",
 *                             "content": "..."}: the chat template with the
 *                             header of the assistant's reply after them
 *                             (the generation prompt); the last message
 *                             must not be the assistant's
 *   "prompt_ids": [ids]       token ids, used as given
 * and optionally "stop": a string or a list of strings, stop strings of
 * this prompt alone. Every field is kept (PromptSet.obj) for the caller to
 * pass through.
 *
 * Stop strings are matched on the bytes of the text as it is decoded, new
 * tokens at a time (stop_find); a stop string may straddle tokens.
 */
#ifndef LLAMAC_DATA_PROMPTS_H
#define LLAMAC_DATA_PROMPTS_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "tok.h"

struct json_t;

typedef struct PromptOpts {
    int tpl;             /* ChatTemplate of "messages" lines, -1: none */
    const char *tpl_why; /* with tpl -1: why there is none, said for a "messages" line */
    const char *system;  /* ChatML's default system message (chat_encode_sys; NULL: SmolLM2's) */
    int special;         /* "prompt" text: special-token names become their ids */
    int max_len;         /* refuse a prompt of max_len tokens or more (0: no limit) */
    const char *max_why; /* what max_len is, for that message ("the context of 256 tokens (--ctx)") */
} PromptOpts;

/* Every prompt of a file. */
typedef struct PromptSet {
    size_t n;             /* prompts */
    int32_t *ids;         /* their token ids back to back */
    size_t *off;          /* (n + 1) prompt i is ids[off[i] .. off[i+1]) */
    long *line;           /* (n) its line in the file, from 1 */
    struct json_t **obj;  /* (n) its line's object (owned) */
    char **stop;          /* the prompts' own stop strings back to back (owned) */
    size_t *stop_off;     /* (n + 1) prompt i's are stop[stop_off[i] .. stop_off[i+1]) */
    size_t ntok, cap_tok, cap, nstop, cap_stop;
    int messages;         /* some line was rendered with the chat template */
} PromptSet;

/* Read path into *s (free with prompts_free; on -1 nothing is left to
 * free). Errors, one line naming "<file>:<line>": not valid JSON, not an
 * object, "no \"prompt\", \"messages\" or \"prompt_ids\"", more than one of
 * them, a wrong type, an empty prompt, an id outside the tokenizer's
 * vocabulary, "messages" without a template (o->tpl_why), the template's
 * own errors, the last message the assistant's, a bad "stop", "prompt N has
 * M tokens: ..." past o->max_len; and a file with no prompt. */
int prompts_load(PromptSet *s, const char *path, const Tokenizer *t, const PromptOpts *o, Err *e);
void prompts_free(PromptSet *s);

/* Stop strings from a JSON value v (a jansson json_t): a string, or a list
 * of strings, appended to (*out)[*n ...) (grown with realloc; each string
 * a copy; free each and *out). An empty string, or any other value, is -1
 * with "<what>: expected a string or a list of strings ...". */
int prompts_stops_json(const struct json_t *v, char ***out, size_t *n, size_t *cap, const char *what, Err *e);

/* The same from text: a JSON string or list of strings, as --stop takes it
 * ("\"\\n\\n\"" or "[\"\\n\", \"User:\"]"); anything else (bare text
 * included) is -1 with "<what>: expected a JSON string or a list of
 * strings (e.g. ...), got '<text>'". */
int prompts_stops_parse(const char *text, char ***out, size_t *n, size_t *cap, const char *what, Err *e);

/* The start of the earliest occurrence of any of stops[0..n) in
 * text[0..len) that ends at or past byte `from` (text[0..from) was searched
 * before, so only matches using new bytes count), or -1 if none. */
long stop_find(char *const *stops, size_t n, const char *text, size_t len, size_t from);

#endif
