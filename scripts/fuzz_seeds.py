#!/usr/bin/env python3
"""Write the fuzz seed corpus tests/fuzz/<target>/ (committed; issue 16).

Small valid files of every format, most of them the files llamac's own
tests write into build/ (run `build/tests spm convert tok sft peft qlora_cli_errors` first),
a few written here. Two-file inputs (hf, peft) are packed as fuzz_targets.c
splits them: a 2-byte little-endian length of the first file, then both.
Plain python3, no packages. Crashers are not written here: they are added
by hand once fixed (see README "Fuzzing").
"""
import base64, os, shutil, struct, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
os.chdir(root)
out = "tests/fuzz"


def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def copy(target, name, src):
    if not os.path.exists(src):
        sys.exit("fuzz_seeds: %s missing (run build/tests spm convert tok sft peft qlora_cli_errors first)" % src)
    put(target, name, open(src, "rb").read())


def pair(target, name, a, b):
    da, db = open(a, "rb").read(), open(b, "rb").read()
    assert len(da) < 65536
    put(target, name, struct.pack("<H", len(da)) + da + db)


copy("tok_llamac", "v1.tok", "tests/fixtures/bpe_v1.tok")
copy("tok_llamac", "v2.tok", "build/tconv/tok_a.bin")
copy("tokenizer_json", "tokenizer.json", "build/tconv/tok_out/tokenizer.json")
ranks = [bytes([i]) for i in range(256)] + [b"he", b"ll", b"hell", b"hello", b" w", b" wor", b" world"]
put("tiktoken", "bytes.tiktoken", b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(ranks)))
copy("spm", "tiny.model", "build/spm_tiny.model")
copy("spm", "bytes.model", "build/spm_bytes.model")
copy("shard", "s.bin", "build/tsft/s.bin")
pair("hf", "hf_rt0", "build/tconv/hf_rt0/config.json", "build/tconv/hf_rt0/model.safetensors")
copy("ckpt", "small.h5", "build/tconv/small.h5")
put("ini", "15m.ini", open("configs/15m.ini", "rb").read())
put("ini", "model.ini", b"# a run\nsteps = 3\nlr = 1e-3\n\n[model]\ndim = 64\nn_layers = 2\n")
put("jsonl", "docs.jsonl", b'{"text": "Hello world"}\n\n{"text": "caf\\u00e9 \\n two", "id": 2}\r\n{"text": ""}\n')
put("chat_jsonl", "chat.jsonl", b"".join(open("build/tsft/chat.jsonl", "rb").read().splitlines(True)[:3]))
copy("gguf", "quant.gguf", "tests/fixtures/gguf_quant.gguf")
copy("gguf", "vocab.gguf", "tests/fixtures/gguf_vocab.gguf")
copy("gguf", "llama_q8.gguf", "build/tqlora/seed_q8.gguf")  # build/tests qlora_cli_errors
pair("peft", "adapter", "build/tpeft/rt/adapter_config.json", "build/tpeft/rt/adapter_model.safetensors")
# reward models: a LlamaForSequenceClassification directory, a PEFT adapter with the score head
pair("hf", "cls_hf", "build/tconv/cls_hf/config.json", "build/tconv/cls_hf/model.safetensors")
pair("peft", "head", "build/tpeft/head/adapter_config.json", "build/tpeft/head/adapter_model.safetensors")
put("dpo", "margin.jsonl", b'{"prompt": "a b", "chosen": " c", "rejected": " d", "margin": 2.5}\n'
    b'{"prompt": "a", "chosen": " e", "rejected": " f", "margin": -1e308}\n')
put("reward_spec", "specs", b"rm-a:1.0,rm-b:0.5,base+adapter:-2")
put("sft", "formats.jsonl",
    open("build/tsft/x.jsonl", "rb").read()
    + b'{"prompt": "Hi there", "completion": " Fine."}\n'
    + b'{"instruction": "Say hi", "input": "", "output": "Hi"}\n'
    + b'{"text": "Hello how are you"}\n')
put("dpo", "pairs.jsonl",
    b'{"prompt": "Hi there", "chosen": " Hello!", "rejected": " How are you?"}\n'
    b'{"chosen": "Hi there Hello!", "rejected": "Hi there How are you?"}\n'
    b'{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Fine."}], '
    b'"rejected": [{"role": "assistant", "content": "No"}]}\n')
put("prompts", "prompts.jsonl",
    b'{"prompt": "Hi there", "id": 1, "stop": "\\n"}\n'
    b'\n'
    b'{"messages": [{"role": "user", "content": "Hi"}], "stop": ["User:", "e"]}\n'
    b'{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}\n'
    b'{"prompt_ids": [1, 2, 3]}\n')
put("prompts", "stop.txt", b'["\\n\\n", "User:"]')
