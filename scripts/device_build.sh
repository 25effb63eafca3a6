#!/usr/bin/env bash
# device_build.sh: build llamac with the CUDA backend on the lent GPU machine.
#
# That machine (/work/.library/device/KINDS.md) has nvcc 13 and PyTorch's
# CUDA libraries as pip wheels (nvidia-cublas, nvidia-cuda-runtime,
# nvidia-cudnn-cu13, nvidia-nccl-cu13) but no Debian packages and no network:
# no OpenBLAS, inih, jansson, PCRE2 or HDF5/OpenMPI. Decision: the CPU
# libraries and their headers travel from the build machine (Debian 12) as
# one compressed bundle, build-devdeps/cpu-deps.tar.xz (about 20 MB; the
# .so files uncompressed are ~60 MB, too close to the 64 MiB carry limit);
# build-* is already git-ignored, so `carry` names it. The CUDA libraries
# are the wheels' (found through python3 -c 'import nvidia.cublas ...'),
# or /usr/local/cuda/lib64 where it has them. Nothing is installed.
#
#   here:   DEMO_PREP_ONLY=1 make demo && bash scripts/device_build.sh pack
#           -> build-devdeps/cpu-deps.tar.xz (14 MB) and build-devdeps/data/
#              (the demo shards, for scripts/gpu_check.sh)
#   there:  run(carry=["build-devdeps"], command="bash scripts/gpu_first.sh")
#           or "bash scripts/device_build.sh build && ..."
#           -> build-cuda/llamac, build-cuda/tests, build-cuda/env.sh
#           `. build-cuda/env.sh` sets LD_LIBRARY_PATH for running them.
#
# Other verbs there: `env` (only write env.sh), `probe` (print what it
# finds: nvcc, the wheels' folders). Tested here on the build machine
# (Debian 12, no GPU): pack, then build against the bundle; not yet there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEPS=build-devdeps
verb=${1:-build}

# The libraries llamac links that are not glibc or CUDA: every ldd entry of
# a CPU build, minus the C library family, CUDA, and the compiler's runtime
# (libgomp, libstdc++, libgcc_s: the device's gcc, which nvcc needs, has
# newer ones, and an older copy first on the RUNPATH would shadow them).
pack() {
    make -j2 BUILD=build-cuda CUDA=1 >/dev/null
    rm -rf "$DEPS/root"
    mkdir -p "$DEPS/root/lib" "$DEPS/root/include/openblas" "$DEPS/root/include/hdf5" "$DEPS/root/include/mpi"
    ldd build-cuda/llamac | awk '$3 ~ /^\// {print $3}' |
        grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|libgomp|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/usr/local/cuda' |
        while read -r f; do cp -L "$f" "$DEPS/root/lib/"; done
    # link-time names (-lopenblas -lhdf5 -linih -ljansson -lpcre2-8)
    (cd "$DEPS/root/lib" &&
        ln -sf libopenblas.so.0 libopenblas.so && ln -sf libhdf5_openmpi.so.103 libhdf5.so &&
        ln -sf libinih.so.1 libinih.so && ln -sf libjansson.so.4 libjansson.so && ln -sf libpcre2-8.so.0 libpcre2-8.so)
    cp /usr/include/x86_64-linux-gnu/openblas-openmp/*.h "$DEPS/root/include/openblas/"
    cp -L /usr/include/hdf5/openmpi/*.h "$DEPS/root/include/hdf5/"
    cp -rL /usr/lib/x86_64-linux-gnu/openmpi/include/. "$DEPS/root/include/mpi/"
    cp /usr/include/ini.h /usr/include/jansson.h /usr/include/jansson_config.h /usr/include/pcre2.h "$DEPS/root/include/"
    tar -C "$DEPS/root" -cJf "$DEPS/cpu-deps.tar.xz" .
    # the demo shards for scripts/gpu_check.sh (make demo makes them)
    if [ -s build/demo/train.bin ]; then
        mkdir -p "$DEPS/data" && cp build/demo/train.bin build/demo/val.bin build/demo/tok.bin "$DEPS/data/"
    else
        echo "device_build: no build/demo/train.bin: run 'DEMO_PREP_ONLY=1 make demo' first for gpu_check.sh's data" >&2
    fi
    rm -rf "$DEPS/root"
    du -h "$DEPS/cpu-deps.tar.xz"
    echo "carry: build-devdeps (the device build makes build-cuda there)"
}

# CUDA library folders from the pip wheels (nvidia.* namespace packages).
wheel_dir() {
    python3 - "$1" <<'EOF' 2>/dev/null || true
import importlib, os, sys
try:
    m = importlib.import_module(sys.argv[1])
    p = list(getattr(m, "__path__", []))[0]
    print(p)
except Exception:
    pass
EOF
}

find_cuda() {
    NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
    [ -n "$NVCC" ] || { echo "device_build: nvcc not found" >&2; exit 1; }
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
    LIBDIRS=""
    INCDIRS=""
    for pkg in nvidia.cublas nvidia.cuda_runtime nvidia.cudnn nvidia.nccl nvidia.cu13; do
        d=$(wheel_dir "$pkg")
        [ -n "$d" ] || continue
        if [ -d "$d/lib" ]; then LIBDIRS="$LIBDIRS:$d/lib"; fi
        if [ -d "$d/include" ]; then INCDIRS="$INCDIRS $d/include"; fi
    done
    # the toolkit's own libraries, when it ships them
    for d in "$CUDA_HOME/lib64" "$CUDA_HOME/targets/x86_64-linux/lib"; do
        if ls "$d"/libcublasLt.so* >/dev/null 2>&1; then LIBDIRS="$LIBDIRS:$d"; fi
    done
    LIBDIRS=${LIBDIRS#:}
    # a folder where -lcublasLt -lcudart resolve: wheels ship only libX.so.N
    mkdir -p build-cuda/cudalink
    for lib in cublasLt cublas cudart cudnn; do
        [ -e build-cuda/cudalink/lib$lib.so ] && continue
        f=$( (IFS=:; for d in $LIBDIRS; do ls "$d"/lib$lib.so* 2>/dev/null || true; done) | head -1 || true)
        # the link-time name and the soname (wheels ship only libX.so.N)
        if [ -n "$f" ]; then ln -sf "$f" build-cuda/cudalink/lib$lib.so; ln -sf "$f" "build-cuda/cudalink/$(basename "$f")"; fi
    done
}

write_env() {
    mkdir -p build-cuda
    cat > build-cuda/env.sh <<EOF
# source me: the libraries llamac needs on this machine
export LD_LIBRARY_PATH=$PWD/$DEPS/root/lib:$LIBDIRS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OPENBLAS_NUM_THREADS=\${OPENBLAS_NUM_THREADS:-16}
EOF
}

unpack() {
    [ -f "$DEPS/cpu-deps.tar.xz" ] || { echo "device_build: $DEPS/cpu-deps.tar.xz missing: run 'bash scripts/device_build.sh pack' on the build machine and carry build-devdeps" >&2; exit 1; }
    [ -d "$DEPS/root/lib" ] || { mkdir -p "$DEPS/root" && tar -C "$DEPS/root" -xJf "$DEPS/cpu-deps.tar.xz"; }
}

case "$verb" in
pack) pack ;;
probe)
    find_cuda
    echo "nvcc: $NVCC ($("$NVCC" --version | tail -1))"
    echo "CUDA library folders: $LIBDIRS"
    echo "CUDA include folders: $INCDIRS"
    nvidia-smi -L || true
    ;;
env)
    unpack
    find_cuda
    write_env
    echo "wrote build-cuda/env.sh"
    ;;
build)
    unpack
    find_cuda
    R=$PWD/$DEPS/root
    INC_FLAGS=""
    for d in $INCDIRS; do INC_FLAGS="$INC_FLAGS -I$d"; done
    export LD_LIBRARY_PATH=$R/lib:$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    # -rpath-link: the bundle's libraries pull others from the same folder
    make -j"$(nproc)" CUDA=1 BUILD=build-cuda NVCC="$NVCC" CUDA_HOME="$CUDA_HOME" \
        OPENBLAS_DIR="$R/lib" OPENBLAS_INC="$R/include/openblas" HDF5_INC="$R/include/hdf5" HDF5_LIB="$R/lib" \
        MPI_INC="$R/include/mpi" SYS_INC="$R/include" SYS_LIB="$R/lib -Wl,-rpath-link,$R/lib" \
        CUDA_LIB="$PWD/build-cuda/cudalink" CUDNN_LIB="$PWD/build-cuda/cudalink" \
        CUDA_INC="$CUDA_HOME/include" \
        NVCCFLAGS_EXTRA="$INC_FLAGS" all
    write_env
    echo "built build-cuda/llamac and build-cuda/tests; run them after '. build-cuda/env.sh'"
    ;;
*) echo "usage: $0 pack|build|env|probe" >&2; exit 2 ;;
esac
