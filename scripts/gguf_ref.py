#!/usr/bin/env python3
"""GGUF reference files for llamac's GGUF reader (data/gguf.c), written by
llama.cpp's own Python package (gguf: GGUFWriter, gguf.quants).

    python scripts/gguf_ref.py quant OUT.gguf [--blocks N] [--seed S]
    python scripts/gguf_ref.py vocab OUT.gguf

Writes one GGUF (no architecture; tensors only) holding, for each type
llamac dequantises (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
Q5_K, Q6_K), a tensor named after the type with N rows of 2 blocks and the
tensor "<type>.want": gguf.quants.dequantize of it, float32. The blocks
come from gguf.quants.quantize of random normal values where the package
quantises the type; K-type blocks (which it cannot quantise) are random
bytes with sane float16 scales (d, dmin in [1e-3, 1e-1]), which cover every
bit pattern of the packed 6-bit scales and quants. F16 values are random
bit patterns (subnormals and infinities included, no NaN). Deterministic
for a given seed: the committed tests/fixtures/gguf_quant.gguf is
`gguf_ref.py quant tests/fixtures/gguf_quant.gguf` (N = 1, seed 1), which
scripts/test_gguf.py regenerates and compares byte for byte.

vocab: a small byte-level BPE (300 merges) trained with Hugging Face
`tokenizers` on 40,000 characters of tok_testtext.py's text, with
SmolLM2's pre-tokenizer (Digits with individual digits, then ByteLevel with
GPT-2's regex), written as llama.cpp's "gpt2" vocabulary with pre-tokenizer
"smollm": <|endoftext|>, <|im_start|>, <|im_end|> as CONTROL tokens,
<tool_call> as USER_DEFINED, bos/eos/eot/padding ids 1/2/2/0 and a ChatML
chat template. The file also carries its own expected results, as
metadata: llamac.test.count texts llamac.test.text.K with the ids
`tokenizers` gives them, special names as text (llamac.test.plain.K) and
as their ids (llamac.test.special.K). tests/fixtures/gguf_vocab.gguf is
`gguf_ref.py vocab tests/fixtures/gguf_vocab.gguf`.
"""
import argparse
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
# byte offsets of the float16 scales in a K-type block (gguf/quants.py layouts)
K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def block_bytes(rng, name, rows, cols):
    qt = Q[name]
    blk, size = GGML_QUANT_SIZES[qt]
    if name == "F32":
        return rng.standard_normal((rows, cols)).astype(np.float32)
    if name == "F16":
        bits = rng.integers(0, 1 << 16, size=(rows, cols), dtype=np.uint16)
        nan = (bits & 0x7C00) == 0x7C00
        bits[nan] &= 0xFC00  # keep the infinities, drop NaN payloads
        return bits.view(np.float16)
    if name in K_SCALES:
        raw = rng.integers(0, 256, size=(rows, cols // blk, size), dtype=np.uint8)
        for off in K_SCALES[name]:
            d = rng.uniform(1e-3, 1e-1, size=(rows, cols // blk)).astype(np.float16)
            raw[:, :, off:off + 2] = d.view(np.uint8).reshape(rows, cols // blk, 2)
        return raw.reshape(rows, cols // blk * size)
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2.0)).astype(np.float32)
    return quantize(x, qt)


def write_quant(path, blocks, seed):
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, arch=None)
    w.add_string("general.name", "llamac dequantisation reference")
    for name in TYPES:
        qt = Q[name]
        blk = GGML_QUANT_SIZES[qt][0]
        cols = max(2 * blk, 64)
        t = block_bytes(rng, name, blocks, cols)
        if t.dtype == np.uint8:
            w.add_tensor(name, t, raw_dtype=qt)
            want = dequantize(t, qt)
        elif name == "BF16":
            q = quantize(t, qt)
            w.add_tensor(name, q, raw_dtype=qt)
            want = dequantize(q, qt)
        else:
            w.add_tensor(name, t)
            want = dequantize(t.view(np.uint8).reshape(t.shape[0], -1), qt).reshape(t.shape) \
                if name != "F32" else t
        w.add_tensor(name + ".want", np.ascontiguousarray(want, dtype=np.float32).reshape(blocks, cols))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
VOCAB_TEXTS = [
    "Hello world", "The year 2024 had 366 days; 3.14159 is pi.", "  leading and trailing  ",
    "<|im_start|>user\nWhat is 12+30?<|im_end|>\n<|im_start|>assistant\n42<|im_end|>",
    "a<tool_call>{\"x\": 1}</tool_call>b", "na\u00efve caf\u00e9, \u4e2d\u6587 \U0001f600!",
    "tabs\tand\nnew\r\nlines   \n\n", "he's HE'S they'll 1,000,000", "<|endoftext|><|endoftext|>x",
]


def write_vocab(path):
    import json
    import os
    import subprocess
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    import gguf
    here = os.path.dirname(os.path.abspath(__file__))
    text = subprocess.run([sys.executable, os.path.join(here, "tok_testtext.py"), "/dev/stdout", "--seed", "4",
                           "--valid"], check=True, stdout=subprocess.PIPE).stdout.decode()[:40000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + 256 + 300, min_frequency=2, show_progress=False,
                                  special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False)])
    j = json.loads(tok.to_str())
    n = tok.get_vocab_size()
    strs = [None] * n
    for t, i in j["model"]["vocab"].items():
        strs[i] = t
    types = [gguf.TokenType.NORMAL] * n
    for a in j["added_tokens"]:
        strs[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    assert [tok.token_to_id(s) for s in specials] == [0, 1, 2]
    w = GGUFWriter(path, arch="llama")
    w.add_string("general.name", "llamac vocabulary reference")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(strs)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_eot_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(CHATML)
    w.add_uint32("llamac.test.count", len(VOCAB_TEXTS))
    for k, t in enumerate(VOCAB_TEXTS):
        w.add_string(f"llamac.test.text.{k}", t)
        for mode in ("plain", "special"):
            tok.encode_special_tokens = mode == "plain"
            w.add_array(f"llamac.test.{mode}.{k}", tok.encode(t, add_special_tokens=False).ids)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["quant", "vocab"])
    ap.add_argument("out")
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.what == "vocab":
        write_vocab(a.out)
        print(f"gguf_ref: vocabulary with {len(VOCAB_TEXTS)} test texts -> {a.out}", file=sys.stderr)
        return
    write_quant(a.out, a.blocks, a.seed)
    print(f"gguf_ref: {len(TYPES)} types x {a.blocks} rows -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
