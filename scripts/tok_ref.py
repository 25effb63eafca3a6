#!/usr/bin/env python3
"""Reference ids for llamac's tokenizer test (tests/test_tok.c), from the
libraries Llama 3's tokenizers come from.

    python scripts/tok_ref.py OUT_DIR

Writes into OUT_DIR:
  tokenizer.json        byte-level BPE trained with Hugging Face `tokenizers`
                        on tok_testtext.py --valid --seed 2: Llama 3's
                        pre-tokenizer (Split on its regex, Isolated, then
                        ByteLevel(use_regex=False)), ByteLevel decoder,
                        ignore_merges=True, merges as [a, b] lists, Meta's 256
                        special tokens plus two non-special added tokens
  tokenizer_str.json    the same with merges as "a b" strings and
                        ignore_merges=False
  tokenizer_gpt2.json   the same with GPT-2's pre-tokenizer instead:
                        ByteLevel(add_prefix_space=True, use_regex=True)
  llama3.tiktoken       the same base vocabulary as tiktoken "base64 rank"
                        lines (rank = id), loaded back by tiktoken.Encoding
                        with the Llama 3 pattern and Meta's special tokens
  cases.bin             u32 n, then n x (u32 len, bytes): the 1 MiB
                        tok_testtext.py text (seed 1, with invalid UTF-8)
                        and hand-picked edge cases
  <tok>_<mode>.bin      for tok in hf, hfstr, hfgpt2, tiktoken and mode in plain
                        (special-token text is text) and special (it becomes
                        the special id): per case u32 n_ids, n_ids x int32,
                        u32 n_bytes, the decoded bytes

  chat.jsonl            conversations (system/user/assistant; whitespace to
                        strip) and chat_<template>.bin their ids (per
                        conversation u32 n, n x int32): llama3 = the HF
                        Llama 3 Instruct template's string (header tokens,
                        content stripped, <|eot_id|>) tokenized whole with
                        special tokens parsed; llama2 = Meta's chat_completion
                        turns, <s> encode("[INST] {user} [/INST] {reply} ") </s>

Input convention: the libraries only take str, so each case's bytes are
given to them as bytes.decode("utf-8", "replace"); llamac gets the raw
bytes and must do the same replacement. Decoded text: tokenizers' decode
(skip_special_tokens=False) as UTF-8; tiktoken's decode_bytes, raw.
"""
import base64
import os
import struct
import subprocess
import sys

import tiktoken
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
           r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
MERGES = 3000

# Meta's llama3 tokenizer.py: these follow the base ranks, in this order.
SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>"]
            + [f"<|reserved_special_token_{i}|>" for i in range(4)]
            + ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>",
               "<|eot_id|>"]
            + [f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)])
assert len(SPECIALS) == 256

EDGE = [
    b"", b" ", b"  ", b"   \n", b"\n", b"\r\n", b"\r\n\r\n", b"\n\n\n", b"a\r\nb", b"\t\t",
    b" \t \n ", b"hello world", b"Hello  world", b"  leading", b"trailing   ", b"a \n b",
    b"He's", b"HE'S", b"she'LL", b"'s", b"I'M", b"we'Re", b"they'VE", b"it'D", b"don't",
    "x'\u017f y'\u212a".encode(), b"'''", b"1", b"12", b"123", b"1234", b"12345", b"123456",
    b"1234567", b"3.14159", b"10,000,000", b"x1y22z333", "\u0663\u0664\u0665 \u2460\u2461 \u216b".encode(),
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466".encode(),
    "\U0001f3f3\ufe0f\u200d\U0001f308".encode(), "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5".encode(),
    "\U0001f44d\U0001f3fd ok".encode(), "\U0001f999\U0001f999\U0001f999".encode(),
    b"<|begin_of_text|>", b"a<|eot_id|>b", b"<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    b"<|reserved_special_token_100|>", b"<|begin_of_text", b"<<|eot_id|>>", b"<|eot_id|><|eot_id|>",
    b"<tool_call>{\"a\": 1}</tool_call>", b"[[ref]] x [[ref]][[ref]]", b"<tool_call><|eot_id|>",
    "\u4e2d\u6587\u6d4b\u8bd5\uff0c\u6807\u70b9\u3002".encode(), "na\u00efve caf\u00e9".encode(),
    "e\u0301 a\u0308".encode(), "\u00a0x \u00a0 y".encode(), "\u3000\u4e2d\u3000".encode(),
    "a\u180e b \u180e\u180e (\u180e)!\u180e".encode(), "x  \u180e|x   \u180ey".encode(), "a\u0085b \u0085".encode(), "a\u2028b\u2029c".encode(),
    "x\u200bY\ufeff".encode(), "\x1c\x1d\x1e\x1f x \x0b\x0c".encode(), b"\x00", b"a\x00b",
    b"\xff", b"abc\x80", b"\xe2\x82", b"\xe2\x82x", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
    b"\xf0\x9f\x98 \xf0\x9f\x98\x80", b" " * 1000, b" " * 999 + b"x", b"a" * 5000, b"=" * 300,
    b"\n" * 100 + b"x", b"    def f():\n        return 1\n", b"!!!???", b"...", b"$$$ 100",
    b"http://example.com/a?q=1&r=2#x", "\U0001d573\U0001d58a\U0001d591".encode(),
    "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947".encode(),
]


def testtext(seed, valid):
    args = [sys.executable, os.path.join(HERE, "tok_testtext.py"), "/dev/stdout", "--seed", str(seed)]
    if valid:
        args.append("--valid")
    return subprocess.run(args, check=True, stdout=subprocess.PIPE).stdout


def train(text, merges=MERGES):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + merges, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = text.decode("utf-8").splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer)
    n_base = tok.get_vocab_size()
    tok.add_special_tokens(SPECIALS)
    tok.add_tokens([AddedToken("<tool_call>", special=False),
                    AddedToken("</tool_call>", special=False),
                    AddedToken("[[ref]]", special=False, normalized=False)])
    return tok, n_base


def byte_decoder():
    # GPT-2's byte-to-unicode table, inverted (the table is a published fact)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xa1, 0xad)) + list(range(0xae, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def write_cases(path, cases):
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(cases)))
        for c in cases:
            f.write(struct.pack("<I", len(c)) + c)


def write_expect(path, results):
    with open(path, "wb") as f:
        for ids, dec in results:
            f.write(struct.pack("<I", len(ids)) + struct.pack(f"<{len(ids)}i", *ids))
            f.write(struct.pack("<I", len(dec)) + dec)


CHATS = [
    [{"role": "system", "content": "You are a terse assistant. "},
     {"role": "user", "content": "  What is 2+2?\n"}, {"role": "assistant", "content": "4."},
     {"role": "user", "content": "And 3 x 3?"}, {"role": "assistant", "content": "\t9, naturally.  "}],
    [{"role": "user", "content": "Translate 'chat' to French."},
     {"role": "assistant", "content": "Le chat. \u732b means cat in Chinese."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
]


def write_chat(out, tok):
    import json
    with open(os.path.join(out, "chat.jsonl"), "w", encoding="utf-8") as f:
        for c in CHATS:
            f.write(json.dumps({"messages": c}) + "\n")
    tok.encode_special_tokens = False
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    with open(os.path.join(out, "chat_llama3.bin"), "wb") as f:
        for c in CHATS:
            s = "<|begin_of_text|>" + "".join(
                f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
                for m in c)
            if c[-1]["role"] != "assistant":
                s += "<|start_header_id|>assistant<|end_header_id|>\n\n"
            ids = tok.encode(s, add_special_tokens=False).ids
            f.write(struct.pack("<I", len(ids)) + struct.pack(f"<{len(ids)}i", *ids))
    with open(os.path.join(out, "chat_llama2.bin"), "wb") as f:
        for c in CHATS:
            if c[0]["role"] == "system":  # Meta's generation.py folds it into the first user turn
                c = [{"role": "user", "content": "<<SYS>>\n" + c[0]["content"] + "\n<</SYS>>\n\n"
                      + c[1]["content"]}] + c[2:]
            ids = []
            for u, a in zip(c[::2], c[1::2]):
                text = f"[INST] {u['content'].strip()} [/INST] {a['content'].strip()} "
                ids += [bos] + tok.encode(text, add_special_tokens=False).ids + [eos]
            if len(c) % 2:
                ids += [bos] + tok.encode(f"[INST] {c[-1]['content'].strip()} [/INST]",
                                          add_special_tokens=False).ids
            f.write(struct.pack("<I", len(ids)) + struct.pack(f"<{len(ids)}i", *ids))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tok, n_base = train(testtext(2, True))
    tok.save(os.path.join(out, "tokenizer.json"))

    # the same tokenizer with "a b" string merges and ignore_merges off
    import json
    with open(os.path.join(out, "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    assert isinstance(j["model"]["merges"][0], list) and j["model"]["ignore_merges"] is True
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    j["model"]["ignore_merges"] = False
    with open(os.path.join(out, "tokenizer_str.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    tok_str = Tokenizer.from_file(os.path.join(out, "tokenizer_str.json"))
    j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                          "use_regex": True}
    with open(os.path.join(out, "tokenizer_gpt2.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    tok_gpt2 = Tokenizer.from_file(os.path.join(out, "tokenizer_gpt2.json"))

    # tiktoken: rank = id of the base token, its bytes through the byte table
    bd = byte_decoder()
    ranks = {bytes(bd[ch] for ch in s): i for s, i in tok.get_vocab(with_added_tokens=False).items()}
    assert len(ranks) == n_base and sorted(ranks.values()) == list(range(n_base))
    with open(os.path.join(out, "llama3.tiktoken"), "w") as f:
        for b, r in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(b).decode()} {r}\n")
    enc = tiktoken.Encoding(name="llamac_test", pat_str=PATTERN, mergeable_ranks=ranks,
                            special_tokens={s: n_base + i for i, s in enumerate(SPECIALS)})

    cases = [testtext(1, False)] + EDGE
    write_cases(os.path.join(out, "cases.bin"), cases)
    texts = [c.decode("utf-8", "replace") for c in cases]
    for name, t in (("hf", tok), ("hfstr", tok_str), ("hfgpt2", tok_gpt2)):
        for mode in ("plain", "special"):
            t.encode_special_tokens = mode == "plain"
            res = []
            for s in texts:
                ids = t.encode(s, add_special_tokens=False).ids
                res.append((ids, t.decode(ids, skip_special_tokens=False).encode("utf-8")))
            write_expect(os.path.join(out, f"{name}_{mode}.bin"), res)
    for mode in ("plain", "special"):
        res = []
        for s in texts:
            ids = enc.encode_ordinary(s) if mode == "plain" else enc.encode(s, allowed_special="all")
            res.append((ids, enc.decode_bytes(ids)))
        write_expect(os.path.join(out, f"tiktoken_{mode}.bin"), res)
    write_chat(out, tok)
    print(f"tok_ref: {n_base} base tokens + {len(SPECIALS)} special, {len(cases)} cases in {out}")


if __name__ == "__main__":
    main()
