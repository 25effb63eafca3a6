#!/usr/bin/env bash
# gpu_first.sh: the first command for a session that is lent a GPU, all in
# one device call (a machine start costs minutes; see
# /work/.library/device/README.md). Here first:
#   DEMO_PREP_ONLY=1 make demo          # the shards gpu_check.sh trains on
#   bash scripts/device_build.sh pack   # CPU libraries + shards -> build-devdeps/
# then: run(carry=["build-devdeps"], command="bash scripts/gpu_first.sh")
# It builds (scripts/device_build.sh build), runs the op-by-op comparison
# with the CPU (build-cuda/tests gpu_: gpu_ops, gpu_qops for the quantised
# weights, gpu_step, gpu_bench_engine), optionally under compute-sanitizer
# (SANITIZE=1), the 300-step loss-curve check (scripts/gpu_check.sh; STEPS=
# to shorten) and, with BENCH=1, scripts/bench_gpu.py. Logs (at most 6
# files) go to $OUT (the device tool brings them back) or build-cuda/out.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
O=${OUT:-build-cuda/out}
mkdir -p "$O"
export PYTHONUNBUFFERED=1
{
    nvidia-smi -L
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' || true
    bash scripts/device_build.sh probe
} 2>&1 | tee "$O/probe.log"
bash scripts/device_build.sh build > "$O/build.log" 2>&1 || { tail -30 "$O/build.log"; echo "gpu_first: build failed"; exit 1; }
tail -3 "$O/build.log"
. build-cuda/env.sh
if [ "${SANITIZE:-0}" = 1 ]; then
    { compute-sanitizer --tool memcheck build-cuda/tests gpu_ops; compute-sanitizer --tool memcheck build-cuda/tests gpu_qops; } \
        2>&1 | tee "$O/memcheck.log" | tail -30
fi
build-cuda/tests gpu_ 2>&1 | tee "$O/test_gpu.log"
GPU_CHECK_STEPS=${STEPS:-300} LLAMAC=build-cuda/llamac bash scripts/gpu_check.sh 2>&1 | tee "$O/gpu_check.log" | tail -12
if [ "${BENCH:-0}" = 1 ]; then
    # its shards, checkpoints and logs stay in build-cuda/bench-gpu ($OUT
    # brings back at most 8 files of 16 MB): only the log comes back
    python3 scripts/bench_gpu.py 2>&1 | tee "$O/bench.log"
fi
