#!/usr/bin/env python3
"""SentencePiece reference for tests/test_spm.c: train BPE models with the
`sentencepiece` library and write what it encodes and decodes.

    python scripts/spm_ref.py OUTDIR

Writes into OUTDIR:
  llama.model      BPE with the Llama 2 settings (byte fallback, split digits,
                   dummy prefix, identity normalization, whitespace kept) plus
                   two user-defined symbols, trained on tok_testtext.py --valid
                   with seed 2
  plain.model      BPE with sentencepiece's defaults otherwise: no byte
                   fallback (unknown -> <unk>), extra whitespace removed
  unused.model     llama.model with every 5th multi-character piece turned
                   UNUSED (sentencepiece splits those back after merging)
  raw.model        llama.model without the dummy prefix and with spaces kept
                   as ' ' (no piece has one: they fall back to <0x20>)
  unigram.model    a UNIGRAM model (llamac must refuse it)
  NAME.cases       per BPE model, little-endian: b"SPMR", u32 version 1,
                   u32 n, n x (u32 len, text, u32 k, k x i32 ids, u32 len,
                   decode(ids)), u32 m, m x (u32 k, k x i32 ids, u32 len,
                   decode(ids)): the encode cases (the 1 MiB tok_testtext.py
                   text with invalid UTF-8 first, then hand-picked edge
                   cases, then random slices of the text) and decode-only
                   id sequences
  speed.txt        "sentencepiece_mb_s X": single-threaded encode of the
                   1 MiB text, best of 3
Texts go to sentencepiece as bytes (it takes str or bytes; bytes keep the
invalid UTF-8, which it normalizes byte by byte to U+FFFD).
"""
import os
import random
import struct
import sys
import time

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tok_testtext  # noqa: E402

SEED = 1234


def train(out, name, text, **kw):
    path = os.path.join(out, name + ".train.txt")
    with open(path, "wb") as f:
        f.write(text)
    spm.SentencePieceTrainer.train(input=path, model_prefix=os.path.join(out, name),
                                   num_threads=1, minloglevel=2,
                                   max_sentence_length=1 << 16, **kw)
    os.remove(path)
    os.remove(os.path.join(out, name + ".vocab"))
    return os.path.join(out, name + ".model")


# ---- a tiny protobuf wire-format editor (no protobuf package needed)
def varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def put_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def fields(b):
    """[(number, wire type, raw bytes of the whole field, payload)]"""
    i, out = 0, []
    while i < len(b):
        start = i
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 2:
            n, i = varint(b, i)
            v = b[i:i + n]
            i += n
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        else:
            raise ValueError("group")
        out.append((num, wt, b[start:i], v))
    return out


def make_unused(src, dst):
    """Copy model src to dst with every 5th NORMAL piece longer than one
    character re-typed UNUSED (type = 3, value 5)."""
    data = open(src, "rb").read()
    out, k = bytearray(), 0
    for num, wt, raw, v in fields(data):
        if num == 1:
            sub = fields(v)
            piece = [x[3] for x in sub if x[0] == 1][0].decode()
            types = [x[3] for x in sub if x[0] == 3]
            if (not types or types[0] == 1) and len(piece) > 1:
                k += 1
                if k % 5 == 0:
                    body = b"".join(x[2] for x in sub if x[0] != 3) + b"\x18\x05"
                    raw = b"\x0a" + put_varint(len(body)) + body
        out += raw
    open(dst, "wb").write(bytes(out))
    return dst


def patch_normalizer(src, dst, **flags):
    """Copy model src to dst with normalizer_spec fields set, e.g.
    add_dummy_prefix=False (sentencepiece cannot train without escaping
    whitespace, but it encodes with any of these)."""
    number = {"add_dummy_prefix": 3, "remove_extra_whitespaces": 4, "escape_whitespaces": 5}
    out = bytearray()
    for num, wt, raw, v in fields(open(src, "rb").read()):
        if num == 3:
            body = b"".join(x[2] for x in fields(v) if x[0] not in [number[k] for k in flags])
            body += b"".join(bytes([number[k] << 3]) + put_varint(int(b)) for k, b in flags.items())
            raw = b"\x1a" + put_varint(len(body)) + body
        out += raw
    open(dst, "wb").write(bytes(out))
    return dst


# ---- cases
EDGE = [
    b"", b" ", b"  ", b"      ", b" " * 100, b"a", b" a", b"a ", b" a ", b"  leading", b"trailing  ",
    b"  both  ", b"a  b   c    d", b"\n", b"\n\n", b" \n \n ", b"\t\tx\t", b"\r\n", b"hello world",
    b"Hello World!", b"12345678901234567890", b"3.14159 and 2,718,281", b"x1y22z333",
    "🦙🚀".encode(), "🧬🪐🫎".encode(), "我们在训练一个语言模型。".encode(), "こんにちは世界".encode(),
    "naïve café".encode(), "\u2581hello \u2581\u2581x\u2581".encode(), "\u2581".encode(), "\u2581 ".encode(),
    b"<s>hi</s><unk><pad>", b"<0x41><0x0A>", b"<|user|>hi llamac!<|user|><|user|>", b"llamacllamac",
    b" llamac", b"\xff", b"\xff\xfe", b"abc\x80def", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82 x",
    b"\xf0\x9f\x98", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xef\xbf\xbd",
    b"\x00", b"a\x00b", b"\x01\x02\x1b[0m", "e\u0301 a\u0308".encode(), "\u00a0x\u3000y".encode(),
    b"the the the the the", b"don't won't it's", b"def f(x):\n    return x * 2\n",
]


def long_cases(r):
    letters = bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(100_000))
    return [letters, b"a" * 100_000, b" " * 100_000, "我".encode() * 30_000,
            b"ab" * 50_000, bytes(r.randrange(256) for _ in range(20_000))]


def slices(text, r, n=300):
    out = []
    for _ in range(n):
        a = r.randrange(len(text))
        out.append(text[a:a + r.choice([1, 2, 3, 5, 10, 50, 300])])
    return out


def decode_cases(sp, r):
    """Id sequences for decode only: control ids, byte runs that are not
    UTF-8, byte pieces before a "▁" piece, <unk>, random ids."""
    v = sp.get_piece_size()
    byte = {i: sp.piece_to_id("<0x%02X>" % i) for i in range(256)}
    has_bytes = byte[0] != sp.unk_id()
    ws, word = sp.piece_to_id("\u2581"), sp.piece_to_id("\u2581the")
    out = [[], [sp.unk_id()], [sp.bos_id(), ws, word], [ws, ws, word], [word, word],
           [sp.bos_id(), sp.unk_id(), word], [sp.eos_id()], [sp.bos_id(), sp.eos_id(), word]]
    if has_bytes:
        out += [[byte[0xFF]], [byte[0xE2], byte[0x82]], [byte[0xE2], byte[0x82], byte[0xAC], word],
                [byte[0x41], word], [byte[0x20], word], [byte[0xE2], byte[0x96], byte[0x81], word],
                [byte[0xF0], byte[0x9F], byte[0xA6], byte[0x99]], [byte[0xC0], byte[0xAF], ws],
                [sp.bos_id(), byte[0x80], word]]
    for _ in range(200):
        out.append([r.randrange(v) for _ in range(r.randrange(1, 12))])
    return out


def write_cases(path, sp, texts, dec):
    with open(path, "wb") as f:
        f.write(b"SPMR" + struct.pack("<II", 1, len(texts)))
        for t in texts:
            ids = sp.encode(t)
            d = sp.decode(ids).encode("utf-8")
            f.write(struct.pack("<I", len(t)) + t + struct.pack("<I", len(ids)))
            f.write(struct.pack("<%di" % len(ids), *ids) + struct.pack("<I", len(d)) + d)
        f.write(struct.pack("<I", len(dec)))
        for ids in dec:
            d = sp.decode(ids).encode("utf-8")
            f.write(struct.pack("<I", len(ids)) + struct.pack("<%di" % len(ids), *ids))
            f.write(struct.pack("<I", len(d)) + d)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1].strip())
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    r = random.Random(SEED)
    train_text = tok_testtext.make(1.0, 2, True)
    test_text = tok_testtext.make(1.0, 1, False)
    llama = train(out, "llama", train_text, model_type="bpe", vocab_size=4000, byte_fallback=True,
                  split_digits=True, add_dummy_prefix=True, normalization_rule_name="identity",
                  remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                  character_coverage=0.9995, user_defined_symbols=["<|user|>", "llamac"])
    plain = train(out, "plain", train_text[:300_000], model_type="bpe", vocab_size=1500,
                  normalization_rule_name="identity", character_coverage=0.995)
    unused = make_unused(llama, os.path.join(out, "unused.model"))
    raw = patch_normalizer(llama, os.path.join(out, "raw.model"), add_dummy_prefix=False,
                           escape_whitespaces=False)
    train(out, "unigram", train_text[:100_000], model_type="unigram", vocab_size=500)

    texts = [test_text] + EDGE + long_cases(r) + slices(test_text, r)
    for name, path in (("llama", llama), ("plain", plain), ("unused", unused), ("raw", raw)):
        sp = spm.SentencePieceProcessor(model_file=path)
        write_cases(os.path.join(out, name + ".cases"), sp, texts, decode_cases(sp, r))

    sp = spm.SentencePieceProcessor(model_file=llama, num_threads=1)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        sp.encode(test_text)
        best = min(best, time.perf_counter() - t)
    with open(os.path.join(out, "speed.txt"), "w") as f:
        f.write("sentencepiece_mb_s %.3f\n" % (len(test_text) / best / 1e6))


if __name__ == "__main__":
    main()
