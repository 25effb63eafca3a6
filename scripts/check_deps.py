#!/usr/bin/env python3
"""The module graph of the C/CUDA sources: no loops, folders in their order.

What: a module is a source stem (x.c or x.cu with its x.h / x.cuh: one
module, named by its path without extension, e.g. train/loop/trainer; a
header without a source is a module of its own, e.g. model/ops). Module A
depends on module B (A != B) when

  - one of A's files has `#include "..."` naming one of B's files (the
    include graph, read from the sources), or
  - A's object file has an undefined symbol (nm type U) that B's object
    defines (a global T/D/B/R/... symbol): the call graph, read from the
    built objects, so that a call through a forward declaration or an
    `extern` written by hand is seen too.

Two checks (STYLE.md, "Layout and layering"):

  1. loops: every strongly connected component (Tarjan) of more than one
     module is printed as "loop: a -> b -> ... -> a" (cycles covering each
     of its modules), with the evidence for each edge below it. tests/ and
     train/main are left out: tests may use anything, and nothing uses main.
  2. layers: model/base -> data/, model/ (side by side) -> dist/ -> optim/
     -> train/ -> tests/. A module may use its own folder and the layers
     below: model/base nothing, data/ only model/base and model/quant of
     model/, model/ nothing of data/. model/quant (the quantised types,
     libc and model/base only) sits in the bottom layer with model/base:
     the GGUF reader in data/ and the linear ops in model/ both read it. Each edge against that is printed as "layer: a -> b
     (...)".

Exit 1 when either finds something. Python 3 stdlib and binutils' nm only.

  scripts/check_deps.py [--root .] [--obj build/obj]   (make check-deps)
  scripts/check_deps.py --self-test                    a tiny tree in a temporary
                                                       folder, with a loop
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC_EXT = (".c", ".cu")
HDR_EXT = (".h", ".cuh")
TOP = ("model", "data", "dist", "optim", "train", "tests")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
# nm's global defined symbol types (lowercase ones are file-local, except
# GNU's indirect functions 'i'); 'U' is an undefined reference.
DEFINED = set("TDBRCGSVWi")

# Folder layers (STYLE.md): a module may use the layers strictly below its
# own, and its own folder. data/ and model/ sit side by side (neither uses
# the other); model/base is the layer under both.
# Inside train/ the roles are layers too (train/README.md): model files in
# and out know nothing of the process, the loop or the commands; the process
# plumbing opens models; the loop uses both; the commands use everything.
LAYER_RANK = {"base": 0, "data": 1, "model": 1, "dist": 2, "optim": 3, "train/io": 4.0, "train/proc": 4.1,
              "train/loop": 4.2, "train/cmd": 4.3, "train": 4.4, "tests": 5}
LAYER_RULE = {
    "base": "model/base uses libc only, model/quant model/base only",
    "data": "data/ may use only model/base and model/quant of the other folders",
    "model": "model/ uses no other folder",
    "dist": "dist/ may use model/ and data/",
    "optim": "optim/ may use model/, data/ and dist/",
    "train/io": "train/io/ may use the folders below train/ only",
    "train/proc": "train/proc/ may use train/io/ of train/",
    "train/loop": "train/loop/ may use train/io/ and train/proc/ of train/",
    "train/cmd": "train/cmd/ may use train/io/, proc/ and loop/ of train/",
    "train": "train/main may use every folder but tests/",
}
EXCLUDED = ("tests/", "train/main")  # from the loop check


BOTTOM = ("model/base", "model/quant")


def layer(mod):
    if mod in BOTTOM:
        return "base"
    top = mod.split("/", 1)[0]
    if top == "train" and mod.count("/") >= 2:
        return "train/" + mod.split("/")[1]
    return top


def layer_ok(a, b):
    la, lb = layer(a), layer(b)
    if la == "tests":
        return True
    if la == lb:
        return la != "base" or (a, b) == ("model/quant", "model/base")
    return LAYER_RANK[lb] < LAYER_RANK[la]


# ----------------------------------------------------------------------------
# the graph


def source_files(root):
    """Paths (relative to root, '/'-separated) of every source and header under the top folders."""
    out = []
    for top in TOP:
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            for f in sorted(files):
                if f.endswith(SRC_EXT + HDR_EXT):
                    out.append(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return out


def module_of(path):
    return os.path.splitext(path)[0]


def add_edge(graph, why, a, b, reason):
    if a == b:
        return
    graph.setdefault(a, set()).add(b)
    graph.setdefault(b, set())
    why.setdefault((a, b), []).append(reason)


def build_graph(root, obj):
    """{module: set(modules)} and {(a, b): [reasons]} from includes and nm."""
    files = source_files(root)
    known = set(files)
    graph, why = {}, {}
    for f in files:
        graph.setdefault(module_of(f), set())
    for f in files:
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for inc in INCLUDE.findall(text):
            t = os.path.normpath(os.path.join(os.path.dirname(f), inc)).replace(os.sep, "/")
            if t not in known:
                t = os.path.normpath(inc).replace(os.sep, "/")  # relative to the top
            if t in known:
                add_edge(graph, why, module_of(f), module_of(t), "%s includes %s" % (f, t))
    # objects of sources that exist (a stale object of a moved file is not a module)
    objs = []
    for d, dirs, names in os.walk(obj):
        dirs.sort()
        for n in sorted(names):
            if not n.endswith(".o"):
                continue
            p = os.path.join(d, n)
            mod = os.path.splitext(os.path.relpath(p, obj))[0].replace(os.sep, "/")
            if any(mod + e in known for e in SRC_EXT):
                objs.append((p, mod))
    if not objs:
        sys.exit("check_deps: no objects under %s: build first (make)" % obj)
    by_path = {p: m for p, m in objs}
    r = subprocess.run(["nm", "-A", "-P"] + [p for p, _ in objs], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("check_deps: nm failed: %s" % r.stderr.strip())
    defs, uses = {}, {}
    for line in r.stdout.splitlines():
        # "path.o: name type [value size]"
        head, _, rest = line.partition(": ")
        parts = rest.split()
        if head not in by_path or len(parts) < 2:
            continue
        mod, sym, kind = by_path[head], parts[0], parts[1]
        if kind == "U":
            uses.setdefault(mod, set()).add(sym)
        elif kind in DEFINED:
            defs.setdefault(sym, set()).add(mod)
    for mod, syms in uses.items():
        for sym in sorted(syms):
            for d in sorted(defs.get(sym, ())):
                add_edge(graph, why, mod, d, "calls " + sym)
    return graph, why


# ----------------------------------------------------------------------------
# loops


def tarjan(graph):
    """Strongly connected components, each a sorted list."""
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 4 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def shortest_cycle(graph, comp, start):
    """The shortest cycle start -> ... -> start inside comp (BFS)."""
    inside = set(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w in inside and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return None


def loops(graph):
    """Cycles (lists a, b, ..., a) covering every module of every SCC of
    more than one module, tests/ and train/main left out."""
    sub = {v: {w for w in ws if not w.startswith(EXCLUDED)}
           for v, ws in graph.items() if not v.startswith(EXCLUDED)}
    out = []
    for comp in tarjan(sub):
        if len(comp) < 2:
            continue
        covered = set()
        for v in comp:
            if v in covered:
                continue
            cyc = shortest_cycle(sub, comp, v)
            covered.update(cyc)
            out.append(cyc)
    return out


def layer_violations(graph):
    return [(a, b) for a in sorted(graph) for b in sorted(graph[a]) if not layer_ok(a, b)]


def evidence(why, a, b, most=3):
    rs = why[(a, b)]
    text = "; ".join(rs[:most])
    return text + ("; and %d more" % (len(rs) - most) if len(rs) > most else "")


def check(root, obj, out=sys.stdout):
    """Print what is wrong; return the number of loops + violations."""
    graph, why = build_graph(root, obj)
    found = loops(graph)
    for cyc in found:
        print("loop: " + " -> ".join(cyc), file=out)
        for a, b in zip(cyc, cyc[1:]):
            print("    %s -> %s: %s" % (a, b, evidence(why, a, b)), file=out)
    bad = layer_violations(graph)
    for a, b in bad:
        print("layer: %s -> %s (%s): %s" % (a, b, LAYER_RULE[layer(a)], evidence(why, a, b)), file=out)
    nedge = sum(len(v) for v in graph.values())
    print("check_deps: %d modules, %d dependencies: %d loop%s, %d layer violation%s"
          % (len(graph), nedge, len(found), "" if len(found) == 1 else "s", len(bad), "" if len(bad) == 1 else "s"),
          file=out)
    return len(found) + len(bad)


# ----------------------------------------------------------------------------
# self-test: a tiny tree with one loop of includes, one loop of calls only,
# a folder-order violation and an acyclic rest; each must be reported, and
# nothing else


SELF_TREE = {
    "model/base.h": "int base_f(void);\n",
    "model/base.c": '#include "base.h"\nint base_f(void) { return 1; }\n',
    "model/ops.h": "#define LC_IGNORE (-1)\n",
    # include loop: data/a.h -> data/b.h -> data/a.h
    "data/a.h": '#include "b.h"\nint a_f(void);\n',
    "data/a.c": '#include "a.h"\n#include "../model/base.h"\nint a_f(void) { return base_f(); }\n',
    "data/b.h": "int b_f(void);\n",
    "data/b.c": '#include "a.h"\nint b_f(void) { return 2; }\n',
    # call loop only: x calls y_f, y calls x_f, through hand-written externs
    "optim/x.h": "int x_f(int);\n",
    "optim/x.c": '#include "x.h"\nextern int y_f(int);\nint x_f(int n) { return n ? y_f(n - 1) : 0; }\n',
    "optim/y.h": "int y_f(int);\n",
    "optim/y.c": '#include "y.h"\nextern int x_f(int);\nint y_f(int n) { return n ? x_f(n - 1) : 1; }\n',
    # layer violation: data/ uses model/ops.h
    "data/c.h": "int c_f(void);\n",
    "data/c.c": '#include "c.h"\n#include "../model/ops.h"\nint c_f(void) { return LC_IGNORE; }\n',
    # fine: train uses everything below, tests use train and close a loop
    # that does not count
    "train/t.c": '#include "../data/c.h"\n#include "../optim/x.h"\nint t_f(void);\n'
                 'int t_f(void) { return c_f() + x_f(3); }\n',
    "tests/test_t.c": 'int t_f(void);\nint test_f(void);\nint test_f(void) { return t_f(); }\n',
}


def self_test():
    cc = os.environ.get("CC") or "cc"
    if not shutil.which(cc):
        sys.exit("check_deps: self-test needs a C compiler (%s)" % cc)
    tmp = tempfile.mkdtemp(prefix="check_deps.")
    try:
        for rel, text in SELF_TREE.items():
            p = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        obj = os.path.join(tmp, "build", "obj")
        for rel in SELF_TREE:
            if rel.endswith(".c"):
                o = os.path.join(obj, rel[:-2] + ".o")
                os.makedirs(os.path.dirname(o), exist_ok=True)
                subprocess.run([cc, "-c", os.path.join(tmp, rel), "-o", o], check=True)
        # a stale object whose source is gone is no module
        with open(os.path.join(obj, "data", "gone.o"), "wb") as f, open(os.path.join(obj, "data", "a.o"), "rb") as g:
            f.write(g.read())
        # Tarjan on a bare graph first
        comps = tarjan({1: {2}, 2: {3}, 3: {1, 4}, 4: {5}, 5: {4}, 6: set()})
        assert sorted(comps) == [[1, 2, 3], [4, 5], [6]], comps
        import io
        buf = io.StringIO()
        n = check(tmp, obj, buf)
        got = buf.getvalue()
        want = ["loop: data/a -> data/b -> data/a",
                "loop: optim/x -> optim/y -> optim/x",
                "layer: data/c -> model/ops "]
        missing = [w for w in want if w not in got]
        lines = [l for l in got.splitlines() if l.startswith(("loop:", "layer:"))]
        if missing or n != 3 or len(lines) != 3 or "data/gone" in got or "tests/" in got:
            sys.exit("check_deps: self-test FAILED (want %s, missing %s); it printed:\n%s" % (want, missing, got))
        print("check_deps: self-test passed (an include loop, a call loop and a layer violation found)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".", help="the repository (default .)")
    ap.add_argument("--obj", default="build/obj", help="the built objects (default build/obj)")
    ap.add_argument("--self-test", action="store_true", help="check the checker on a tiny tree with a loop")
    a = ap.parse_args()
    if a.self_test:
        self_test()
        return 0
    return 1 if check(a.root, a.obj) else 0


if __name__ == "__main__":
    sys.exit(main())
