#!/usr/bin/env python3
"""Accuracy of `llamac sample` completions against a prompt file's answers.

The rule is `llamac rl --reward-answer answer` as train/loop/rewards.h
states it (1 right, 0 wrong): the final answer is the text inside the last
\\boxed{...}, else what follows the last "answer:", "Answer:" or "ANSWER:"
to the end of its line, else the last non-empty line; trimmed of white
space, surrounding quotes, '*' and '`', and trailing '.', '!', ',' (repeated
until nothing changes, so '"plant".' is plant); equal to "answer" ignoring
ASCII case, or numerically when both are numbers (|a - b| <= 1e-6 max(1,
|b|)); a list of answers accepts any of them. Samples are matched to prompts
by their "index" (the prompt's line number).

    check_rl_answers.py PROMPTS.jsonl SAMPLES.jsonl [--show N]
"""
import argparse
import json
import re


def extract(text):
    """the completion's final answer, as the reward reads it"""
    i = text.rfind("\\boxed{")
    if i >= 0:
        j, depth = i + 7, 1
        k = j
        while k < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            k += 1
        s = text[j:k - 1] if depth == 0 else text[j:]
    else:
        m = list(re.finditer(r"answer:|Answer:|ANSWER:", text))
        if m:
            s = text[m[-1].end():].split("\n", 1)[0]
        else:
            lines = [l for l in text.split("\n") if l.strip()]
            s = lines[-1] if lines else ""
    prev = None
    while s != prev:  # strip until stable: '"cold".' and '**cold**' both become cold
        prev = s
        s = s.strip().strip("\"'*`").rstrip(".!,")
    return s


def number(s):
    if "_" in s:  # float() reads 1_000, strtod does not
        return None
    try:
        return float(s)
    except ValueError:
        return None


def correct(text, answer):
    got = extract(text)
    for a in answer if isinstance(answer, list) else [answer]:
        a = str(a)
        x, y = number(got), number(a)
        if x is not None and y is not None:
            if abs(x - y) <= 1e-6 * max(1.0, abs(y)):
                return True
        elif got.lower() == a.lower():  # str.lower on ASCII answers = ASCII case folding
            return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prompts", help="JSONL prompts with \"answer\"")
    ap.add_argument("samples", help="JSONL from llamac sample (\"index\", \"text\")")
    ap.add_argument("--show", type=int, default=0, help="print the first N samples with their verdicts")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.prompts) if l.strip()]
    n = right = 0
    per = {}
    for line in open(a.samples):
        s = json.loads(line)
        r = rows[s["index"]]
        ok = correct(s["text"], r["answer"])
        n += 1
        right += ok
        per.setdefault(s["index"], []).append(ok)
        if n <= a.show:
            q = r["messages"][-1]["content"]
            print(f"{'RIGHT' if ok else 'WRONG'}  {q}  ->  {extract(s['text'])!r}   (said {s['text'].strip()!r}; "
                  f"accepted {r['answer']})")
    mixed = sum(1 for v in per.values() if 0 < sum(v) < len(v))
    print(f"accuracy {right}/{n} = {100.0 * right / max(n, 1):.1f}% over {len(per)} prompts; "
          f"{mixed} prompts with both right and wrong samples")


if __name__ == "__main__":
    main()
