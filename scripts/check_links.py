#!/usr/bin/env python3
"""check_links.py: every relative link of the repository's Markdown pages resolves.

A link [text](target), ![alt](target) or a reference definition [id]: target
in a *.md file of the repository (tests/fixtures/ and shared/ excepted)
must name a file of the repository (tracked, or new and not ignored) or a
folder holding some, and its #anchor, if any, must be a heading of the page
it names. Anchors follow
GitHub's slugs: lowercase, each space a '-', every character other than a
letter, a digit, '-' or '_' dropped, '-1', '-2' ... after repeated headings.
Links with a scheme (https:, mailto:) are not checked; fenced code blocks
and inline code are skipped.

Prints one line per broken link, "page:line: target: why", and exits 1 if
there is any. Python 3 standard library only.

    python3 scripts/check_links.py [ROOT]     # ROOT defaults to the repository
    python3 scripts/check_links.py --self-test
"""
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
from urllib.parse import unquote

EXCLUDED = ("tests/fixtures/", "shared/")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); text may hold one level of [].
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def slug(text):
    """GitHub's anchor for a heading's text."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text)                     # HTML tags go
    out = []
    for ch in text.lower():
        if ch == " ":
            out.append("-")
        elif ch in "-_" or ch.isalnum() or unicodedata.category(ch).startswith("M"):
            out.append(ch)
    return "".join(out)


def lines_outside_fences(text):
    """(line number, line) of each line outside fenced code, as written."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        yield n, line


def blank_inline_code(line):
    return INLINE_CODE.sub(lambda c: " " * len(c.group(0)), line)


def lines_outside_code(text):
    """(line number, line) of each line outside fenced code, inline code blanked."""
    for n, line in lines_outside_fences(text):
        yield n, blank_inline_code(line)


def anchors(text):
    """Every anchor a page defines: its headings' slugs and <a name/id>."""
    seen, out = {}, set()
    for _, line in lines_outside_fences(text):
        out.update(HTML_ANCHOR.findall(blank_inline_code(line)))
        h = HEADING.match(line)  # headings keep their code spans
        if not h:
            continue
        s = slug(h.group(2))
        k = seen.get(s, 0)
        seen[s] = k + 1
        out.add(s if k == 0 else "%s-%d" % (s, k))
    return out


def links(text):
    """(line number, target) of every link on a page."""
    for n, line in lines_outside_code(text):
        m = REF_DEF.match(line)
        if m:
            yield n, m.group(1)
            continue
        for m in INLINE_LINK.finditer(line):
            yield n, m.group(1)


def tracked_files(root):
    """The repository's files as a clone gets them (relative, '/'): tracked,
    or new and not ignored; every file when ROOT is not a git checkout (as in
    the self-test)."""
    try:
        r = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True)
        names = [p for p in r.stdout.decode().split("\0") if p]
        if names:
            return set(names)
    except (OSError, subprocess.CalledProcessError):
        pass
    out = set()
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git"]
        for f in files:
            out.add(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return out


def check(root):
    """Lines describing each broken link under ROOT."""
    files = tracked_files(root)
    folders = set()
    for f in files:
        parts = f.split("/")
        for i in range(1, len(parts)):
            folders.add("/".join(parts[:i]))
    pages = sorted(f for f in files if f.endswith(".md") and not f.startswith(EXCLUDED))
    cache, bad = {}, []

    def page_anchors(rel):
        if rel not in cache:
            with open(os.path.join(root, rel), encoding="utf-8") as fh:
                cache[rel] = anchors(fh.read())
        return cache[rel]

    for page in pages:
        with open(os.path.join(root, page), encoding="utf-8") as fh:
            text = fh.read()
        for n, target in links(text):
            t = target[1:-1] if target.startswith("<") else target
            if not t or SCHEME.match(t):
                continue
            path, _, anchor = t.partition("#")
            path = unquote(path)
            where = "%s:%d: %s: " % (page, n, target)
            if path.startswith("/"):
                bad.append(where + "absolute path (GitHub resolves it from the site, not the repository)")
                continue
            if path:
                rel = os.path.normpath(os.path.join(os.path.dirname(page), path)).replace(os.sep, "/")
                if rel == ".." or rel.startswith("../"):
                    bad.append(where + "outside the repository")
                    continue
                if rel not in files and rel not in folders and rel != ".":
                    bad.append(where + "no such file in the repository")
                    continue
            else:
                rel = page
            if not anchor:
                continue
            if rel.endswith(".md") and rel in files:
                if unquote(anchor) not in page_anchors(rel):
                    bad.append(where + "no heading #%s in %s" % (anchor, rel))
            elif not re.fullmatch(r"L\d+(-L\d+)?", anchor):
                bad.append(where + "an anchor into %s, which has no headings" % rel)
    return bad


def self_test():
    """A tree with one good and two broken links: both broken ones, and only
    they, must be reported."""
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "docs"))
        os.makedirs(os.path.join(root, "tests", "fixtures"))
        with open(os.path.join(root, "README.md"), "w") as fh:
            fh.write("# Top\n\nSee [the guide](docs/guide.md#a-b_c-d) and [gone](docs/missing.md).\n"
                     "Also [here](#top), `[not a link](nowhere.md)` and\n```\n[in code](nowhere.md)\n```\n")
        with open(os.path.join(root, "docs", "guide.md"), "w") as fh:
            fh.write("# Guide\n\n## A b_c (`d`)!\n\nBack to [the top](../README.md#no-such-heading).\n")
        with open(os.path.join(root, "tests", "fixtures", "x.md"), "w") as fh:
            fh.write("[ignored](nowhere.md)\n")
        got = check(root)
    want = ["README.md:3: docs/missing.md: ", "docs/guide.md:5: ../README.md#no-such-heading: "]
    ok = len(got) == len(want) and all(g.startswith(w) for g, w in zip(got, want))
    if not ok:
        print("check_links self-test: FAILED: expected %r, got %r" % (want, got))
        return 1
    print("check_links self-test: a broken file link and a broken anchor were both reported")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        print("usage: check_links.py [ROOT] | --self-test", file=sys.stderr)
        return 2
    root = argv[1] if len(argv) == 2 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bad = check(root)
    for line in bad:
        print(line)
    if bad:
        return 1
    print("check_links: every link of the Markdown pages resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
