#!/usr/bin/env bash
# The fuzz-only install step (`make fuzz`): clang with libFuzzer and the
# sanitizer runtimes, and LLVM's OpenMP runtime for clang -fopenmp (Debian:
# clang, libclang-rt-dev, libomp-dev). The main build never needs them.
# Idempotent; needs root or sudo.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/install_deps.sh" clang libclang-rt-dev libomp-dev
