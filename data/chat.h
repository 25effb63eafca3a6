/*
 * chat.h: the Llama 2, Llama 3 (3.0 and 3.1/3.2) and ChatML chat formats,
 * and their recognition from a Jinja template; turning a conversation
 * (system / user / assistant messages) into token ids plus a mask of the
 * tokens that belong to assistant replies (what SFT and DPO train on).
 *
 * Llama 2 (Meta's llama generation.py chat_completion; HF's Llama 2 chat
 * template renders the same): a first system message is folded into the
 * first user message as "<<SYS>>\n{system}\n<</SYS>>\n\n{user}"; then each
 * user/assistant pair is
 *     <s> encode("[INST] {user.strip()} [/INST] {assistant.strip()} ") </s>
 * and a last user message without a reply is <s> encode("[INST] {user} [/INST]").
 * Roles must alternate user, assistant, ... after the optional system.
 * Mask: the ids past those of encode("[INST] {user} [/INST]") (the reply
 * with its leading space) and </s>.
 *
 * Llama 3 (Meta's llama3 tokenizer.py ChatFormat; HF's template):
 *     <|begin_of_text|> then per message
 *     <|start_header_id|> encode(role) <|end_header_id|> encode("\n\n")
 *     encode(content.strip()) <|eot_id|>
 * and, when the last message is not the assistant's, the header of an
 * assistant reply (the prompt for generation). Mask: an assistant
 * message's content ids and its <|eot_id|>, never the header.
 *
 * Llama 3.1 / 3.2 (their HF templates, without tools): as Llama 3, but a
 * system block always comes first, its content the Jinja text
 *     "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n{system}"
 * with {system} the stripped first system message ("" without one) and
 * {date} "26 Jul 2024", the templates' own default (llamac never reads
 * the clock, so a rendering is reproducible; Llama 3.2's template puts
 * today's date there when the renderer offers strftime_now, as
 * transformers does). The text after
 * <|end_header_id|> up to <|eot_id|> is encoded as one string, as the
 * Hugging Face tokenizer sees the rendered template.
 *
 * ChatML (SmolLM2-Instruct's template, the one Qwen2 uses with its own
 * default system message): per message
 *     <|im_start|> encode(role + "\n" + content) <|im_end|> encode("\n")
 * with content as it is (not stripped); when the first message is not a
 * system message, a default system message goes first ("You are a helpful
 * AI assistant named SmolLM, trained by Hugging Face" for "chatml",
 * SmolLM2's; chat_encode_sys chooses another or none); and the prompt for
 * a reply is <|im_start|> encode("assistant\n"). Mask: an assistant
 * message's content ids and its <|im_end|>, not the "\n" after it: what
 * TRL's assistant_only_loss trains with its ChatML template, whose
 * {% generation %} block holds content + '<|im_end|>' and leaves '\n' out.
 * The content's ids are those past encode(role + "\n")'s (the split
 * Hugging Face's character offsets give).
 *
 * strip() is Python's: Unicode whitespace (str.isspace) off both ends.
 * Content is encoded with tok_encode: special-token text inside a message
 * stays text.
 */
#ifndef LLAMAC_DATA_CHAT_H
#define LLAMAC_DATA_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "../model/base.h"
#include "tok.h"

typedef enum { CHAT_LLAMA2, CHAT_LLAMA3, CHAT_LLAMA31, CHAT_CHATML, CHAT_TEMPLATE_COUNT } ChatTemplate;

/* SmolLM2-Instruct's default system message (its template's text) */
#define CHAT_SMOLLM2_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
/* the date Llama 3.1/3.2's templates put in their system block by default */
#define CHAT_LLAMA31_DATE "26 Jul 2024"
#define CHAT_MAX_SYSTEM 1024 /* longest default system message detection keeps */
typedef enum { CHAT_SYSTEM, CHAT_USER, CHAT_ASSISTANT, CHAT_ROLE_COUNT } ChatRole;

typedef struct ChatMsg {
    ChatRole role;
    const char *content; /* (len) bytes, borrowed */
    size_t len;
} ChatMsg;

typedef struct ChatTokens {
    int32_t *ids;   /* (n) token ids */
    uint8_t *mask;  /* (n) 1 = part of an assistant reply (train on it) */
    size_t n, cap;
} ChatTokens;

/* "llama2" / "llama3" / "llama3.1" / "chatml" -> *tpl; -1 with
 * "--template: unknown template '...' (expected ...)" otherwise. */
int chat_template_parse(const char *name, ChatTemplate *tpl, Err *e);

/* The name chat_template_parse takes for tpl ("?" if none). */
const char *chat_template_name(ChatTemplate tpl);

/* Recognise a Jinja chat template (a tokenizer's chat_template, e.g.
 * tokenizer_config.json's or GGUF's tokenizer.chat_template) by its markers:
 * "<|im_start|>" + "<|im_end|>" -> CHAT_CHATML (unless it has Qwen3's
 * <think> handling); "<|start_header_id|>" + "<|eot_id|>" -> CHAT_LLAMA31
 * when it writes "Cutting Knowledge Date", else CHAT_LLAMA3; "[INST]" +
 * "<<SYS>>" -> CHAT_LLAMA2. A ChatML template's default system message (the
 * literal it renders when messages[0] is not a system message; "" for none)
 * goes to system[0..CHAT_MAX_SYSTEM) when system is not NULL. Returns 0, or
 * -1 with "chat template not supported: <name or first characters>". */
int chat_template_detect(const char *jinja, ChatTemplate *tpl, char *system, Err *e);

/* A Jinja template that renders tpl as chat_encode does (what exports write
 * as tokenizer_config.json's chat_template and GGUF's
 * tokenizer.chat_template): SmolLM2-Instruct's own for chatml, Llama 2 and
 * Llama 3 Instruct's own, and for llama3.1 the no-tools path of Llama
 * 3.1's with the date fixed. Static storage; "" for an unknown tpl. */
const char *chat_template_jinja(ChatTemplate tpl);

/* The chat_template of tokenizer_config.json in the directory of the file
 * tokpath (a Hugging Face tokenizer directory) into *jinja (caller frees
 * with free()); *jinja = NULL when there is no such file or key. Returns 0,
 * or -1 with "<dir>/tokenizer_config.json: ..." when it is not valid JSON or
 * the template is not a string. */
int chat_template_beside(const char *tokpath, char **jinja, Err *e);

/* The template a tokenizer comes with: its own chat_template (a GGUF's),
 * else tokenizer_config.json's beside tokpath, recognised by
 * chat_template_detect (system as there, may be NULL). Returns 1 with *tpl
 * set, 0 when there is none, -1 with e naming the file whose template is
 * unreadable or not one llamac renders. */
int chat_template_of(const Tokenizer *t, const char *tokpath, ChatTemplate *tpl, char *system, Err *e);

/* "system" / "user" / "assistant", or "?" */
const char *chat_role_name(ChatRole r);

/* Render msgs[0..n) with template tpl and tokenizer t into *out (out->n
 * is reset to 0 first; ids and mask grow with realloc; free with
 * chat_tokens_free). Returns 0, or -1 with e = "<where>: ..." when the
 * tokenizer lacks a token the template needs or the roles break the
 * template's order. */
int chat_encode(const Tokenizer *t, ChatTemplate tpl, const ChatMsg *msgs, int n,
                ChatTokens *out, const char *where, Err *e);

/* chat_encode with ChatML's default system message given: system (NULL or
 * "": none) replaces CHAT_SMOLLM2_SYSTEM; other templates ignore it. */
int chat_encode_sys(const Tokenizer *t, ChatTemplate tpl, const char *system, const ChatMsg *msgs,
                    int n, ChatTokens *out, const char *where, Err *e);

/* chat_encode_sys with Llama 3.1/3.2's "Today Date" given (NULL or "":
 * CHAT_LLAMA31_DATE): a run's date comes from a flag, never the clock. */
int chat_encode_opts(const Tokenizer *t, ChatTemplate tpl, const char *system, const char *date, const ChatMsg *msgs,
                     int n, ChatTokens *out, const char *where, Err *e);

/* Release out's buffers and zero it; a zeroed one is fine. */
void chat_tokens_free(ChatTokens *out);

/* Append ids[0..n) to o, each with mask `mask` (0 or 1), growing its
 * buffers (n == 0 leaves a zeroed o untouched). */
void chat_tokens_push(ChatTokens *o, const int32_t *ids, size_t n, int mask);

/* The messages of a parsed JSON list (a jansson json_t array) into
 * (*msgs)[0..*n), grown with realloc (*cap entries; caller frees *msgs),
 * borrowing the list's strings. Errors as chat_jsonl_each's, after where. */
int chat_msgs_from_json(const void *json_list, ChatMsg **msgs, int *cap, int *n, const char *where,
                        Err *e);

/* Called once per conversation of a chat JSONL file; where is "<file>:<line>".
 * Return 0 to go on, -1 (e set) to stop. */
typedef int (*ChatFn)(void *ud, const ChatMsg *msgs, int n, const char *where, Err *e);

/* Walk path, one JSON object per line: {"messages": [{"role": "system" |
 * "user" | "assistant", "content": "..."}, ...]}; empty lines are skipped.
 * Errors name the file and line: "not valid JSON (...)", "no \"messages\"
 * list", "message 2: unknown role 'bot' (expected system, user or
 * assistant)", "message 1: no string \"content\"". Returns 0 or -1. */
int chat_jsonl_each(const char *path, ChatFn fn, void *ud, Err *e);

#endif
