#!/usr/bin/env python3
"""Write the tokenizer test text: deterministic bytes (seeded), at least
--mb MiB, mixing English prose, Chinese, source code, numbers, emoji, long
whitespace runs, other scripts, and invalid UTF-8 (lone continuation bytes,
truncated sequences, overlong forms, surrogates, 0xFF).

    python3 scripts/tok_testtext.py OUT [--mb 1.0] [--seed 1] [--valid]

--valid drops the invalid-UTF-8 pieces (for libraries that only take str).
Nothing is downloaded: every piece is generated from the tables below.
"""
import argparse
import random

WORDS = ("the of and to in a is that for it as was with be by on not he I this are or his from "
         "at which but have an they you were her she there been one all we their has would when "
         "what if can who will more no out so said up about into than them only time could new "
         "Llama model training token gradient attention layer weight loss batch sequence "
         "don't won't it's we're they've I'm you'll she'd O'Neil rock'n'roll "
         "naïve café résumé Zürich São Paulo façade coöperate").split()
CHINESE = ("我们在训练一个语言模型。今天天气很好，适合学习。机器学习是人工智能的一个分支，"
           "注意力机制让模型关注输入的不同部分。北京上海广州深圳，中华人民共和国成立于一九四九年。"
           "这是一个测试句子，包含标点符号：逗号、句号。以及「引号」和《书名号》！")
OTHER = ["Привет, мир! Как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם",
         "こんにちは世界、カタカナとひらがな", "안녕하세요 세계", "नमस्ते दुनिया", "สวัสดีชาวโลก",
         "Ünïcödé ÀÉÎÕÜ ß ẞ ﬁ ﬂ Å Ω µ", "ℕ ℤ ℚ ℝ ∀x∈ℝ: x²≥0 ∑ ∫ √ ∞ ≠ ≤ ≥",
         "e\u0301 a\u0308 n\u0303 (combining marks)", "zero\u200bwidth\u200djoiner\ufeffbom"]
EMOJI = ["😀", "🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "🔥", "🦙", "🚀", "✅", "🧑🏿‍💻", "🏳️‍🌈",
         "⌚", "☕", "🀄", "🂡", "𝕳𝖊𝖑𝖑𝖔", "𝟘𝟙𝟚"]
CODE = [
    "def train(model, data, lr=3e-4):\n    for step, (x, y) in enumerate(data):\n"
    "        loss = model(x).cross_entropy(y)\n        loss.backward()\n",
    "int main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; i++)\n"
    "\t\tprintf(\"%s\\n\", argv[i]);\n\treturn 0;\n}\n",
    "const x = {a: 1, 'b': [2, 3], \"c\": null}; // comment\nlet y = x?.a ?? 42;\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%ann%';\n",
    "<div class=\"row\"><a href=\"https://example.com/?q=1&r=2\">link</a></div>\n",
    "fn main() { let v: Vec<u32> = (0..10).map(|i| i * i).collect(); println!(\"{:?}\", v); }\n",
    "    if (x != y && z <= 0x7fffffff) { a[i] += b[j] >> 3; }\n",
    "$ make -j2 && ./build/llamac --help | grep -E '^  --[a-z-]+' 2>&1\n",
]
INVALID = [b"\x80", b"\xbf\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xe0\x80\xaf",
           b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xfe", b"\xff\xff", b"abc\x80def", b"\xc3(",
           b"\x00", b"\x01\x02\x1b[0m"]


def number(r):
    k = r.randrange(6)
    if k == 0:
        return str(r.randrange(10))
    if k == 1:
        return str(r.randrange(10 ** r.randrange(1, 20)))
    if k == 2:
        return f"{r.uniform(-1e6, 1e6):.{r.randrange(1, 8)}f}"
    if k == 3:
        return f"{r.randrange(1900, 2100)}-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}"
    if k == 4:
        return f"{r.randrange(1, 1000):,}".replace(",", r.choice([",", " ", "_"]))
    return f"{r.random():.3e}"


def whitespace(r):
    return r.choice([" " * r.randrange(2, 40), "\n" * r.randrange(2, 6), "\t" * r.randrange(1, 8),
                     " \n" * r.randrange(1, 4), "\r\n", " \t \n  ", "\n" + " " * r.randrange(4, 17),
                     "\u00a0", "\u3000", "   \n\n\n   "])


def sentence(r):
    n = r.randrange(3, 20)
    words = [r.choice(WORDS) for _ in range(n)]
    if r.random() < 0.3:
        words[0] = words[0].capitalize()
    if r.random() < 0.2:
        words[r.randrange(n)] = words[r.randrange(n)].upper()
    return " ".join(words) + r.choice([".", ",", "!", "?", ";", ":", "...", " --", ""])


def piece(r, valid):
    k = r.random()
    if k < 0.40:
        return sentence(r).encode()
    if k < 0.52:
        i = r.randrange(len(CHINESE))
        return CHINESE[i:i + r.randrange(1, 60)].encode()
    if k < 0.62:
        return r.choice(CODE).encode()
    if k < 0.72:
        return number(r).encode()
    if k < 0.79:
        return "".join(r.choice(EMOJI) for _ in range(r.randrange(1, 5))).encode()
    if k < 0.86:
        return r.choice(OTHER).encode()
    if k < 0.95 or valid:
        return whitespace(r).encode()
    return r.choice(INVALID)


def make(mb, seed, valid):
    r = random.Random(seed)
    out, n, target = [], 0, int(mb * (1 << 20))
    while n < target:
        p = piece(r, valid)
        sep = b"" if r.random() < 0.3 else r.choice([b" ", b" ", b"\n", b"  "])
        out.append(p + sep)
        n += len(p) + len(sep)
    return b"".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--valid", action="store_true", help="no invalid UTF-8")
    a = ap.parse_args()
    data = make(a.mb, a.seed, a.valid)
    with open(a.out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
