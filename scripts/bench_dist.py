#!/usr/bin/env python3
"""make bench-dist: data parallelism over MPI on this machine (a benchmark, not a test).

1. Bytes sent per step per rank, measured on the wire: the ranks talk over
   TCP on the loopback interface only (--mca btl self,tcp), with OpenMPI's
   ring algorithms chosen for the all-reduce (blocking and MPI_Iallreduce),
   the reduce-scatter and the all-gather, and the bytes are the loopback
   interface's transmit counter (/proc/net/dev) over a run of S2 steps minus
   one of S1 steps (start-up traffic cancels), divided by the ranks and by
   S2 - S1. Compared with the ring bound 2(N-1)/N x the gradient bytes, for
   the all-reduce and for ZeRO-1's reduce-scatter + all-gather (the same
   bound: (N-1)/N each). Loopback traffic of other processes on the machine
   adds noise; TCP/IP headers add about 0.1%.
2. tokens/s of 2 ranks x 1 thread against 1 rank x 2 threads on the same
   global batch (median over the steps after the first).
3. AdamW state per rank with and without ZeRO-1, and how long each step
   waited for its gradient reductions after the backward (the part of the
   communication the per-layer all-reduces did not hide), against one
   blocking all-reduce after the backward (LLAMAC_DIST_OVERLAP=0).

Standard library only. LLAMAC=path/to/llamac (default build/llamac).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root"]
# the wire: TCP over loopback only, ring algorithms everywhere
WIRE = ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo",
        "--mca", "coll_tuned_use_dynamic_rules", "1", "--mca", "coll_tuned_allreduce_algorithm", "4",
        "--mca", "coll_tuned_reduce_scatter_algorithm", "3", "--mca", "coll_tuned_allgatherv_algorithm", "3",
        "--mca", "coll_libnbc_iallreduce_algorithm", "1"]


def sh(cmd, **kw):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    if r.returncode:
        sys.exit("bench-dist: %s failed:\n%s%s" % (" ".join(cmd[:8]), r.stdout[-2000:], r.stderr[-2000:]))
    return r.stdout


def lo_tx():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                return int(line.split(":")[1].split()[8])
    sys.exit("bench-dist: no loopback interface in /proc/net/dev")


def data(work, llamac):
    """A shard of random words through llamac's own tokenizer."""
    shard = os.path.join(work, "train.bin")
    if os.path.exists(shard):
        return shard
    os.makedirs(work, exist_ok=True)
    import random
    rnd = random.Random(7)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 8))) for _ in range(3000)]
    text = os.path.join(work, "text.txt")
    with open(text, "w") as f:
        for _ in range(40000):
            f.write(" ".join(rnd.choice(words) for _ in range(12)) + ".\n")
    tok = os.path.join(work, "tok.bin")
    sh([llamac, "tokenize", "train", "--input", text, "--vocab", "2048", "--out", tok])
    sh([llamac, "tokenize", "encode", "--tokenizer", tok, "--input", text, "--out", shard])
    return shard


def train(llamac, np_, args, extra=(), wire=False, threads=None):
    cmd = [llamac, "pretrain"] + args + list(extra)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if np_:
        cmd = MPIRUN + (WIRE if wire else []) + ["-np", str(np_)] + cmd
    return sh(cmd, env=env)


def rates(out):
    r = [float(x) for x in re.findall(r"\| (\d+) tok/s", out)]
    return statistics.median(r[1:] if len(r) > 1 else r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="15m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="steps of the tokens/s runs")
    ap.add_argument("--rounds", type=int, default=3, help="alternating tokens/s runs of each (median)")
    ap.add_argument("--no-bytes", action="store_true", help="skip the byte counts")
    args = ap.parse_args()
    llamac = os.environ.get("LLAMAC", os.path.join(ROOT, "build", "llamac"))
    work = os.path.join(ROOT, "build", "bench-dist")
    shard = data(work, llamac)
    micro = args.batch * args.seq
    base = ["--train", shard, "--preset", args.preset, "--set", "vocab=2048", "--batch", str(args.batch),
            "--seq", str(args.seq), "--lr", "1e-3", "--warmup", "2", "--peak-gflops", "1",
            "--ckpt-dir", os.path.join(work, "ckpt"), "--out", os.path.join(work, "out.h5"), "--save-every", "0"]
    print("bench-dist: preset %s (vocab 2048), B %d, T %d; OpenMPI over loopback TCP for the byte counts" % (
        args.preset, args.batch, args.seq))

    if not args.no_bytes:
        print("\n| ranks | ZeRO-1 | gradient MB | measured MB sent/step/rank | ring bound MB | measured / bound |"
              " AdamW MB/rank | wait after backward ms/step |")
        print("|---|---|---|---|---|---|---|---|")
    for n in () if args.no_bytes else (2, 4):
        for zero in (0, 1):
            g = ["--batch-tokens", str(micro * n), "--zero", str(zero)]
            s1, s2 = 2, 6
            t0 = lo_tx()
            train(llamac, n, base + g + ["--steps", str(s1)], wire=True)
            t1 = lo_tx()
            out = train(llamac, n, base + g + ["--steps", str(s2)], wire=True)
            t2 = lo_tx()
            per = ((t2 - t1) - (t1 - t0)) / n / (s2 - s1)
            m = re.search(r"\((\d+) gradient bytes; ring bound 2\(N-1\)/N x that = (\d+)\); ([\d.]+) ms per step", out)
            gb, bound, wait = int(m.group(1)), int(m.group(2)), float(m.group(3))
            mem = float(re.search(r"AdamW state ([\d.]+) MB on this rank", out).group(1))
            print("| %d | %s | %.2f | %.2f | %.2f | %.3f | %.1f | %.1f |" % (
                n, "on" if zero else "off", gb / 1e6, per / 1e6, bound / 1e6, per / bound, mem, wait), flush=True)

    if not args.no_bytes:
        print("\nOverlap: 2 ranks over loopback TCP, the per-layer MPI_Iallreduce during the backward against one "
              "blocking all-reduce after it (LLAMAC_DIST_OVERLAP=0):")
        print("| reductions | wait after backward ms/step | tokens/s |\n|---|---|---|")
        for ov in ("1", "0"):
            os.environ["LLAMAC_DIST_OVERLAP"] = ov
            out = train(llamac, 2, base + ["--batch-tokens", str(micro * 2), "--steps", "6"], wire=True)
            wait = float(re.search(r"; ([\d.]+) ms per step waiting", out).group(1))
            print("| %s | %.1f | %.0f |" % ("per layer, during the backward" if ov == "1" else "one, after the backward",
                                         wait, rates(out)), flush=True)
        del os.environ["LLAMAC_DIST_OVERLAP"]

    print("\ntokens/s on the same global batch (%d tokens/step), median over %d alternating runs of the median of "
          "%d steps:" % (2 * micro, args.rounds, args.steps))
    g = ["--batch-tokens", str(2 * micro), "--steps", str(args.steps)]
    ones, twos = [], []
    for _ in range(args.rounds):
        ones.append(rates(train(llamac, 0, base + g, threads=2)))
        twos.append(rates(train(llamac, 2, base + g)))
    print("  runs: 1 rank x 2 threads %s; 2 ranks x 1 thread %s" % (ones, twos))
    one, two = statistics.median(ones), statistics.median(twos)
    print("| run | tokens/s |\n|---|---|")
    print("| 1 rank x 2 threads | %.0f |" % one)
    print("| 2 ranks x 1 thread (mpirun, shared memory) | %.0f |" % two)
    print("2 ranks / 1 rank: %.1f%% (target >= 90%%)" % (100 * two / one))


if __name__ == "__main__":
    main()
