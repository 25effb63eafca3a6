/*
 * chat.h: the Llama 2 and Llama 3 chat formats, turning a conversation
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

typedef enum { CHAT_LLAMA2, CHAT_LLAMA3, CHAT_TEMPLATE_COUNT } ChatTemplate;
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

/* "llama2" / "llama3" -> *tpl; -1 with "--template: ..." otherwise. */
int chat_template_parse(const char *name, ChatTemplate *tpl, Err *e);

/* "system" / "user" / "assistant", or "?" */
const char *chat_role_name(ChatRole r);

/* Render msgs[0..n) with template tpl and tokenizer t into *out (out->n
 * is reset to 0 first; ids and mask grow with realloc; free with
 * chat_tokens_free). Returns 0, or -1 with e = "<where>: ..." when the
 * tokenizer lacks a token the template needs or the roles break the
 * template's order. */
int chat_encode(const Tokenizer *t, ChatTemplate tpl, const ChatMsg *msgs, int n,
                ChatTokens *out, const char *where, Err *e);

/* Release out's buffers and zero it; a zeroed one is fine. */
void chat_tokens_free(ChatTokens *out);

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
