#!/usr/bin/env bash
# Create (once) the venv with llama.cpp's Python binding for make
# bench-sample, at ${LLAMAC_VENV_LLAMACPP:-$HOME/.cache/llamac-venv-llamacpp},
# and print its python. The binding is compiled from the PyPI source
# distribution (scripts/requirements-llamacpp.txt), which builds llama.cpp
# itself with CMake and a C++ compiler: about 15-30 minutes on 2 cores.
#
# CPU build, tuned for this machine: GGML_NATIVE=ON (-march=native, ggml's own
# default for a source build) so llama.cpp uses every SIMD extension the CPU
# has, as its users get it; OpenMP threads like llamac's; no BLAS (ggml's own
# kernels, which is what llama.cpp decodes with by default); no GPU backends.
# Nothing is done when the venv already imports llama_cpp.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${LLAMAC_VENV_LLAMACPP:-$HOME/.cache/llamac-venv-llamacpp}"
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c 'import llama_cpp' >/dev/null 2>&1; then
    echo "$PY"
    exit 0
fi
for tool in cmake c++; do
    command -v "$tool" >/dev/null || { echo "venv-llamacpp: $tool not found (needed to build llama.cpp)" >&2; exit 1; }
done
[ -x "$PY" ] || { echo "venv-llamacpp: creating venv $VENV" >&2; python3 -m venv "$VENV"; }
echo "venv-llamacpp: building llama-cpp-python from source into $VENV (many minutes)" >&2
start=$(date +%s)
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$PY" -m pip install --no-binary llama-cpp-python -r scripts/requirements-llamacpp.txt >&2
echo "venv-llamacpp: built in $(( $(date +%s) - start )) s" >&2
echo "$PY"
