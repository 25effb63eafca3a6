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
4. Pipeline parallelism (--pp, --pp-only for this part alone), one thread
   per rank: for GPipe and 1F1B at P = 2 (one rank per core) and two values
   of M micro-batches per step, each stage's measured idle fraction (1 -
   its compute time / the wall time of the step's pipeline phase, llamac's
   end-of-run line) against the bubble of equal stages (P-1)/(M+P-1) and
   against the schedule simulated on the stage's measured forward and
   backward times; at P = 4 (4 ranks on 2 cores: the measured idle means
   nothing there, the ranks take turns on the cores) the simulated one
   against theory; each stage's activation memory (micro-batches in flight,
   MB) for GPipe and 1F1B as M grows; tokens/s of PP 2 against DP 2 on the
   same global batch; one step's timeline per stage for both schedules as a
   PNG (scripts/plot_pp_timeline.py with matplotlib from the reference venv,
   installed there on first use by scripts/plot_metrics.sh's rule; no venv,
   no picture, the tables still print).

Standard library only (the PNG aside). LLAMAC=path/to/llamac (default build/llamac).
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


STAGE = re.compile(r"stage (\d+) \(layers (\d+)-(\d+)\): idle ([\d.]+)% of the step \(simulated from its forward "
                   r"([\d.]+) ms and backward ([\d.]+) ms: ([\d.]+)%\); (\d+) micro-batches in flight, ([\d.]+) MB")


def stages(out):
    """llamac's end-of-run pipeline lines: one dict per stage, with its share of the FLOPs from the start-up line."""
    flops = [int(x) for x in re.findall(r"\d+-\d+ \((\d+)% of the FLOPs\)", out)]
    st = [dict(zip(("stage", "l0", "l1", "idle", "fwd_ms", "bwd_ms", "sim", "inflight", "mb"),
                   [int(m[0]), int(m[1]), int(m[2]), float(m[3]), float(m[4]), float(m[5]), float(m[6]), int(m[7]),
                    float(m[8])])) for m in STAGE.findall(out)]
    if not st or len(flops) != len(st):
        sys.exit("bench-dist: no pipeline summary in llamac's output:\n" + out[-2000:])
    for d, f in zip(st, flops):
        d["flops"] = f
    return st


def plot_timelines(files, png, title):
    """scripts/plot_pp_timeline.py in the reference venv (matplotlib installed there on first use)."""
    venv = os.environ.get("LLAMAC_VENV", os.path.expanduser("~/.cache/llamac-venv"))
    py = os.path.join(venv, "bin", "python")
    if not os.access(py, os.X_OK):
        return "no reference venv at %s" % venv
    if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode and subprocess.run(
            [py, "-m", "pip", "install", "-q", "-r", os.path.join(ROOT, "scripts", "requirements-plot.txt")],
            capture_output=True).returncode:
        return "matplotlib would not install"
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    r = subprocess.run([py, os.path.join(ROOT, "scripts", "plot_pp_timeline.py")] + files +
                       ["--out", png, "--title", title], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or "plot_pp_timeline.py failed")


def pipeline(llamac, args, work, shard):
    """Section 4: the pipeline's idle time against the bubble, its activation memory, PP 2 against DP 2."""
    B, T = args.pp_batch, args.seq
    base = ["--train", shard, "--preset", args.preset, "--set", "vocab=2048", "--batch", str(B), "--seq", str(T),
            "--lr", "1e-3", "--warmup", "2", "--peak-gflops", "1", "--ckpt-dir", os.path.join(work, "ckpt-pp"),
            "--out", os.path.join(work, "out-pp.h5"), "--save-every", "0"]
    runs = {}

    def pp(P, sched, M, steps, timeline=False):
        """One pipelined run on P ranks (P stages, one replica); outputs kept by (P, schedule, M)."""
        key = (P, sched, M)
        if key in runs:
            return runs[key]
        extra = ["--pp", str(P), "--pp-schedule", sched, "--batch-tokens", str(M * B * T), "--steps", str(steps)]
        if timeline:
            extra += ["--pp-timeline", os.path.join(work, "pp-timeline-%d-%s-%d.json" % (P, sched, M))]
        st = stages(train(llamac, P, base + extra, threads=1))
        runs[key] = st
        return st

    print("\n## Pipeline parallelism\n\npreset %s (vocab 2048), B %d, T %d, one thread per rank; a stage's measured idle "
          "is 1 - its compute time / the wall time of each step's pipeline phase (after a barrier), over the steps "
          "after the first; simulated: the schedule run on the stage's mean forward and backward times with free "
          "messages; theory: equal stages, (P-1)/(M+P-1)." % (args.preset, B, T))
    Ms = [int(x) for x in args.pp_m.split(",")]
    print("\nP = 2 (2 ranks, one per core), %d steps a run:\n" % args.pp_steps)
    print("| schedule | M | stage | layers (FLOPs) | forward ms | backward ms | measured idle | simulated idle | theory |")
    print("|---|---|---|---|---|---|---|---|---|")
    for sched in ("gpipe", "1f1b"):
        for M in Ms:
            for d in pp(2, sched, M, args.pp_steps, timeline=M == max(Ms)):
                print("| %s | %d | %d | %d-%d (%d%%) | %.1f | %.1f | %.1f%% | %.1f%% | %.1f%% |" % (
                    sched, M, d["stage"], d["l0"], d["l1"], d["flops"], d["fwd_ms"], d["bwd_ms"], d["idle"],
                    d["sim"], 100 * (2 - 1) / (M + 2 - 1)), flush=True)

    print("\nP = 4 (4 ranks on 2 cores: the measured idle is meaningless here, the ranks take turns on the cores; "
          "the simulated idle is the schedule's own accounting on each stage's measured op times, which here include the "
          "time a rank waited for a core), %d steps a run:\n"
          % args.pp_steps)
    print("| schedule | M | stage | layers (FLOPs) | forward ms | backward ms | simulated idle | theory | "
          "(measured, meaningless) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for sched in ("gpipe", "1f1b"):
        for M in [int(x) for x in args.pp4_m.split(",")]:
            for d in pp(4, sched, M, args.pp_steps):
                print("| %s | %d | %d | %d-%d (%d%%) | %.1f | %.1f | %.1f%% | %.1f%% | (%.1f%%) |" % (
                    sched, M, d["stage"], d["l0"], d["l1"], d["flops"], d["fwd_ms"], d["bwd_ms"], d["sim"],
                    100 * (4 - 1) / (M + 4 - 1), d["idle"]), flush=True)

    mem_ms = sorted(set(int(x) for x in args.pp_mem_m.split(",")))
    print("\nActivation memory per stage at P = 2 (the schedule's accounting of the activation sets a stage holds at "
          "once; micro-batches in flight, MB):\n")
    print("| M | " + " | ".join("%s stage %d" % (s, k) for s in ("gpipe", "1f1b") for k in range(2)) + " |")
    print("|---|" + "---|" * 4)
    for M in mem_ms:
        cells = []
        for sched in ("gpipe", "1f1b"):
            for d in pp(2, sched, M, 2):
                cells.append("%d, %.1f MB" % (d["inflight"], d["mb"]))
        print("| %d | %s |" % (M, " | ".join(cells)), flush=True)

    M = max(Ms)
    g = ["--batch-tokens", str(M * B * T), "--steps", str(args.pp_steps)]
    print("\ntokens/s of PP 2 (1f1b, %d micro-batches on each stage) against DP 2 (%d micro-batches on each rank) on "
          "the same two cores and global batch (%d tokens/step), median over %d alternating runs of the median of the "
          "%d steps after the first:" % (M, M // 2, M * B * T, args.rounds, args.pp_steps - 1))
    dps, pps = [], []
    for _ in range(args.rounds):
        dps.append(rates(train(llamac, 2, base + g, threads=1)))
        pps.append(rates(train(llamac, 2, base + g + ["--pp", "2", "--pp-schedule", "1f1b"], threads=1)))
    print("  runs: DP 2 %s; PP 2 %s" % (dps, pps))
    dp, pp2 = statistics.median(dps), statistics.median(pps)
    print("\n| run | tokens/s |\n|---|---|")
    print("| DP 2 (2 replicas x 1 stage) | %.0f |" % dp)
    print("| PP 2 (1 replica x 2 stages, 1f1b) | %.0f |" % pp2)
    print("PP 2 / DP 2: %.1f%% (the bubble of equal stages costs %.1f%% at M = %d)" % (
        100 * pp2 / dp, 100 / (M + 1), M))

    files = [os.path.join(work, "pp-timeline-2-%s-%d.json" % (s, M)) for s in ("gpipe", "1f1b")]
    why = plot_timelines(files, args.pp_png, "one step per stage, %s (vocab 2048), B %d, T %d, 2 ranks x 1 thread" % (
        args.preset, B, T))
    print("\ntimeline of the last step: %s" % (args.pp_png if why is None else "no picture (%s); the JSON is in %s"
                                               % (why, " ".join(files))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="15m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="steps of the tokens/s runs")
    ap.add_argument("--rounds", type=int, default=3, help="alternating tokens/s runs of each (median)")
    ap.add_argument("--no-bytes", action="store_true", help="skip the byte counts")
    ap.add_argument("--no-pp", action="store_true", help="skip the pipeline section")
    ap.add_argument("--pp-only", action="store_true", help="only the pipeline section")
    ap.add_argument("--pp-batch", type=int, default=1, help="B of the pipeline runs (one micro-batch)")
    ap.add_argument("--pp-m", default="2,8", help="micro-batches per step of the idle-time runs")
    ap.add_argument("--pp4-m", default="4,8", help="micro-batches per step of the P = 4 runs")
    ap.add_argument("--pp-mem-m", default="2,4,8,16", help="micro-batches per step of the memory runs")
    ap.add_argument("--pp-steps", type=int, default=6, help="steps of the idle-time and PP/DP tokens/s runs")
    ap.add_argument("--pp-png", default=os.path.join(ROOT, "build", "bench-dist", "pp-timeline.png"),
                    help="the timeline picture")
    args = ap.parse_args()
    llamac = os.environ.get("LLAMAC", os.path.join(ROOT, "build", "llamac"))
    work = os.path.join(ROOT, "build", "bench-dist")
    shard = data(work, llamac)
    micro = args.batch * args.seq
    base = ["--train", shard, "--preset", args.preset, "--set", "vocab=2048", "--batch", str(args.batch),
            "--seq", str(args.seq), "--lr", "1e-3", "--warmup", "2", "--peak-gflops", "1",
            "--ckpt-dir", os.path.join(work, "ckpt"), "--out", os.path.join(work, "out.h5"), "--save-every", "0"]
    if args.pp_only:
        pipeline(llamac, args, work, shard)
        return
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
    if not args.no_pp:
        pipeline(llamac, args, work, shard)


if __name__ == "__main__":
    main()
