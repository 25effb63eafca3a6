#!/usr/bin/env python3
"""make bench, tokenizer part: encoding speed on one core, llamac against the
reference libraries on the same text and the same vocabularies.

    python scripts/bench_tok.py [--llamac build/llamac] [--out build/bench_tok]

Trains (once, cached in --out) a --vocab byte-level BPE with Hugging Face
`tokenizers` (the Llama 3 pre-tokenizer, as scripts/tok_ref.py), writes it
as tokenizer.json and as a tiktoken file, a SentencePiece BPE with the
Llama 2 settings, and llamac's own BPE (`llamac tokenize train`), all on
tok_testtext.py --valid --seed 3 text. Then encodes the 1 MiB
tok_testtext.py --valid text (seed 1) whole, in one call, on one thread
pinned to one core (taskset -c 0): llamac through `llamac tokenize bench`
(median of --reps after one warm-up encode, as the libraries get), tokenizers
with RAYON_NUM_THREADS=1 / TOKENIZERS_PARALLELISM=false (the faster of
encode(whole text) and encode_batch(lines)), tiktoken's
encode_ordinary, sentencepiece with num_threads=1. Prints MB/s and
llamac / reference ratios. Valid UTF-8 text, so every side sees the same
characters.
"""
import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
sys.path.insert(0, HERE)


def pin():
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass


def median_time(fn, reps):
    fn()  # warm-up: caches, page faults
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def build(out, vocab, llamac):
    import tok_testtext
    from tok_ref import PATTERN, SPECIALS, byte_decoder, train
    os.makedirs(out, exist_ok=True)
    text_path = os.path.join(out, "text.txt")
    train_path = os.path.join(out, "train.txt")
    if not os.path.exists(text_path):
        with open(text_path, "wb") as f:
            f.write(tok_testtext.make(1.0, 1, True))
        with open(train_path, "wb") as f:
            f.write(tok_testtext.make(4.0, 3, True))
    with open(train_path, "rb") as f:
        train_text = f.read()
    hf = os.path.join(out, f"tokenizer{vocab}.json")
    tt = os.path.join(out, f"bpe{vocab}.tiktoken")
    if not os.path.exists(hf):
        tok, n_base = train(train_text, vocab - 256 - len(SPECIALS))
        tok.save(hf)
        bd = byte_decoder()
        ranks = {bytes(bd[c] for c in s): i for s, i in tok.get_vocab(with_added_tokens=False).items()}
        with open(tt, "w") as f:
            for b, r in sorted(ranks.items(), key=lambda kv: kv[1]):
                f.write(f"{base64.b64encode(b).decode()} {r}\n")
    own = os.path.join(out, f"own{vocab}.tok")
    if not os.path.exists(own):
        subprocess.run([llamac, "tokenize", "train", "--input", train_path, "--vocab", str(vocab),
                        "--out", own], check=True, stdout=subprocess.DEVNULL)
    sp_model = os.path.join(out, f"spm{vocab}.model")
    try:
        import sentencepiece as spm
        if not os.path.exists(sp_model):
            lines = train_text.decode("utf-8").splitlines()
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_prefix=sp_model[:-len(".model")],
                model_type="bpe", vocab_size=vocab, byte_fallback=True, split_digits=True,
                add_dummy_prefix=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                character_coverage=0.9995, max_sentence_length=1 << 20, minloglevel=2,
                hard_vocab_limit=False,  # 4 MB of text holds fewer pieces than --vocab
                num_threads=2)
    except ImportError:
        sp_model = None
    return text_path, hf, tt, own, sp_model, PATTERN, SPECIALS


def llamac_rate(llamac, tok, text, reps):
    cmd = ["taskset", "-c", "0", llamac, "tokenize", "bench", "--tokenizer", tok, "--reps",
           str(reps), text]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return float(re.search(r"encode ([0-9.]+) MB/s", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llamac", default=os.environ.get("LLAMAC", os.path.join(ROOT, "build", "llamac")))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench_tok"))
    ap.add_argument("--vocab", type=int, default=32000, help="vocabulary size of every kind")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    text_path, hf, tt, own, sp_model, pattern, specials = build(a.out, a.vocab, a.llamac)
    with open(text_path, "rb") as f:
        data = f.read()
    text = data.decode("utf-8")
    mb = len(data) / 1e6
    pin()

    from tokenizers import Tokenizer
    import tiktoken
    rows = []
    t = Tokenizer.from_file(hf)
    lines = text.splitlines(keepends=True)
    # the faster of one call on the whole text and one encode_batch of its lines
    ref = max(mb / median_time(lambda: t.encode(text, add_special_tokens=False), a.reps),
              mb / median_time(lambda: t.encode_batch(lines, add_special_tokens=False), a.reps))
    rows.append(("tokenizer.json", "tokenizers", llamac_rate(a.llamac, hf, text_path, a.reps), ref))
    n_base = sum(1 for _ in open(tt))
    ranks = {}
    for line in open(tt):
        b64, r = line.split()
        ranks[base64.b64decode(b64)] = int(r)
    enc = tiktoken.Encoding(name="bench", pat_str=pattern, mergeable_ranks=ranks,
                            special_tokens={s: n_base + i for i, s in enumerate(specials)})
    ref = mb / median_time(lambda: enc.encode_ordinary(text), a.reps)
    rows.append(("tiktoken", "tiktoken", llamac_rate(a.llamac, tt, text_path, a.reps), ref))
    if sp_model:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=sp_model, num_threads=1)
        ref = mb / median_time(lambda: sp.encode(text), a.reps)
        rows.append(("sentencepiece", "sentencepiece", llamac_rate(a.llamac, sp_model, text_path, a.reps), ref))
    rows.append(("llamac BPE", "-", llamac_rate(a.llamac, own, text_path, a.reps), None))

    print(f"tokenizers: encode {mb:.2f} MB of mixed text (tok_testtext.py --valid), vocab {a.vocab}, "
          f"one thread on core 0, median of {a.reps}")
    print(f"  {'kind':<15} {'llamac MB/s':>11} {'reference':>14} {'ref MB/s':>9} {'ratio':>6}")
    for kind, refname, ours, theirs in rows:
        r = f"{ours / theirs:5.2f}x" if theirs else "     -"
        ts = f"{theirs:9.2f}" if theirs else "        -"
        print(f"  {kind:<15} {ours:11.2f} {refname:>14} {ts} {r}")


if __name__ == "__main__":
    main()
