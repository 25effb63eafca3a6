#!/usr/bin/env bash
# The fuzz-only install step (`make fuzz`): clang with libFuzzer and the
# sanitizer runtimes, and LLVM's OpenMP runtime for clang -fopenmp (Debian:
# clang, libclang-rt-dev, libomp-dev). The main build never needs them.
# Idempotent; needs root or sudo.
set -euo pipefail
pkgs=(clang libclang-rt-dev libomp-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq "${missing[@]}" >&2
