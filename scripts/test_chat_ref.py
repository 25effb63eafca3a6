#!/usr/bin/env python3
"""llamac's chat templates against the Jinja templates they stand for (run by
scripts/test_ref.sh).

What: trains a small byte-level BPE tokenizer.json with Hugging Face
`tokenizers` (Llama 3's split regex + ByteLevel, ChatML's and Llama 3's
special tokens), writes multi-turn conversations with and without a system
message (whitespace at the ends, newlines, non-ASCII, special-token text in a
message) and runs `llamac tokenize chat --template T`. For each conversation:

  ids   equal the tokenizer's ids of the text jinja2 renders from the
        published template (SmolLM2-135M-Instruct's ChatML, Llama 3 8B
        Instruct's, Llama 3.1 8B Instruct's without its tool branches), rendered as transformers' apply_chat_template renders
        (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks), with
        add_generation_prompt when the last message is not the assistant's,
        and encoded with the template's special tokens parsed (special-token
        text inside a message stays text in llamac, by design: data/chat.h;
        the reference then encodes the message's text with
        encode_special_tokens on, where transformers would parse it);
  mask  (chatml) equals transformers' return_assistant_tokens_mask with the
        same template wrapped in TRL's {% generation %} markers around
        content + '<|im_end|>' (what assistant_only_loss trains on);
        (llama3) the assistant content and <|eot_id|>, by the same
        generation-marked template.

Prints PASS/FAIL per check and "test_chat_ref: N passed, M failed"; exit 1
on any failure.
"""

import argparse
import json
import os
import subprocess
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from refcheck import check, summary

PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
           r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|end_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

# SmolLM2-135M-Instruct's tokenizer_config.json chat_template, as published
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
           "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
           "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# the same with TRL's generation markers (renders the same text)
SMOLLM2_GEN = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
               "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'"
               " }}{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
               "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}"
               "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endif %}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Llama 3 8B Instruct's, as published (bos_token = <|begin_of_text|>)
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{% endif %}")
LLAMA3_GEN = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\\n\\n' }}{% if message['role'] == 'assistant' %}{% generation %}"
              "{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}{% else %}"
              "{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

# Llama 3.1 8B Instruct's, as published, less the branches for tools (custom_tools, builtin_tools,
# tools_in_user_message, ipython / tool messages, tool_calls), which a conversation without tools
# never takes; date_string undefined -> its default
LLAMA31 = ('''{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
''')
LLAMA31_GEN = LLAMA31.replace(
    """        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}""",
    """        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}{%- if message['role'] == 'assistant' %}{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}""")
assert LLAMA31_GEN != LLAMA31

CONVS = [
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "What is 2 + 2?"},
     {"role": "assistant", "content": "4."},
     {"role": "user", "content": "  And 3 + 3?\n"},
     {"role": "assistant", "content": " Six, of course.\n\nAnything else?"}],
    [{"role": "user", "content": "Hello there!"},
     {"role": "assistant", "content": "Hi! How can I help you today?"},
     {"role": "user", "content": "Tell me a joke about caf\u00e9s."}],
    [{"role": "user", "content": "no system, one turn"}],
    [{"role": "system", "content": "\tSystem with tabs\t"},
     {"role": "user", "content": "text with <|im_end|> and <|eot_id|> inside"},
     {"role": "assistant", "content": "\n\nleading newlines, \u4e2d\u6587, 12345"}],
    [{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"},
     {"role": "user", "content": "third"}, {"role": "assistant", "content": "fourth"},
     {"role": "user", "content": "fifth"}, {"role": "assistant", "content": "sixth and last."}],
]


def train_tokenizer(path):
    text = []
    for conv in CONVS:
        for m in conv:
            text.append(m["role"] + "\n" + m["content"])
    text += ["The quick brown fox jumps over the lazy dog. " * 3, "You are a helpful AI assistant named SmolLM, "
             "trained by Hugging Face", "assistant user system\n\n" * 5]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=[AddedToken(s, special=True)
                                                                                    for s in SPECIALS],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text * 20, tr)
    tok.save(path)
    return tok


def render(src, conv, **kw):
    # as transformers' apply_chat_template compiles a template
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(src).render(messages=conv, add_generation_prompt=conv[-1]["role"] != "assistant",
                                       bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", **kw)


def reference_ids(tok, src, conv):
    """ids of the rendered template, its own special tokens parsed, the messages' text as text"""
    import re
    ph = [dict(m, content=f"\ue000{i}\ue001") for i, m in enumerate(conv)]
    text = render(src, ph)
    parts = re.split("(" + "|".join(re.escape(s) for s in SPECIALS) + ")", text)
    ids = []
    for part in parts:
        if part in SPECIALS:
            ids.append(tok.token_to_id(part))
        elif part:
            # the llama templates trim the content (a no-op on the placeholder), so trim it here
            trim = (lambda c: c.strip()) if "| trim" in src else (lambda c: c)
            seg = re.sub("\ue000(\\d+)\ue001", lambda m: trim(conv[int(m.group(1))]["content"]), part)
            tok.encode_special_tokens = True
            ids += tok.encode(seg, add_special_tokens=False).ids
            tok.encode_special_tokens = False
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_chat_ref")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    tpath = os.path.join(args.work, "tokenizer.json")
    tok = train_tokenizer(tpath)
    from transformers import PreTrainedTokenizerFast
    hft = PreTrainedTokenizerFast(tokenizer_file=tpath, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    chats = os.path.join(args.work, "chats.jsonl")
    with open(chats, "w") as f:
        for conv in CONVS:
            f.write(json.dumps({"messages": conv}) + "\n")
    for name, src, gen in (("chatml", SMOLLM2, SMOLLM2_GEN), ("llama3", LLAMA3, LLAMA3_GEN),
                           ("llama3.1", LLAMA31, LLAMA31_GEN)):
        out = os.path.join(args.work, f"ids_{name}.jsonl")
        r = subprocess.run([args.llamac, "tokenize", "chat", "--tokenizer", tpath, "--template", name, chats,
                            "--out", out], capture_output=True, text=True)
        if not check(f"{name}: llamac tokenize chat runs", r.returncode == 0, r.stderr.strip()):
            continue
        got = [json.loads(line) for line in open(out)]
        check(f"{name}: one line per conversation", len(got) == len(CONVS), f"{len(got)}")
        for k, (conv, g) in enumerate(zip(CONVS, got)):
            text = render(src, conv)
            gtext = hft.apply_chat_template(conv, chat_template=gen, tokenize=False,
                                            add_generation_prompt=conv[-1]["role"] != "assistant")
            check(f"{name} conversation {k}: the generation-marked template renders the same text (transformers)",
                  gtext == text, f"{gtext!r} vs {text!r}")
            want = reference_ids(tok, src, conv)
            plain = tok.encode(text, add_special_tokens=False).ids
            check(f"{name} conversation {k} ({len(conv)} messages): ids equal jinja2 + tokenizers ({len(want)})",
                  g["ids"] == want, f"\n  got  {g['ids']}\n  want {want}\n  text {text!r}")
            if plain != want:  # special-token text in a message: transformers would parse it
                check(f"{name} conversation {k}: differs from transformers' only by the messages' special text",
                      any(s in m["content"] for m in conv for s in SPECIALS), "")
                continue
            enc = hft.apply_chat_template(conv, chat_template=gen, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True,
                                          add_generation_prompt=conv[-1]["role"] != "assistant")
            wmask = list(enc["assistant_masks"])
            check(f"{name} conversation {k}: mask equals transformers' assistant mask ({sum(wmask)} tokens)",
                  list(enc["input_ids"]) == want and g["mask"] == wmask, f"\n  got  {g['mask']}\n  want {wmask}")
    return summary("test_chat_ref")


if __name__ == "__main__":
    sys.exit(main())
