#!/usr/bin/env bash
# Install the Debian packages llamac builds against (or, given as arguments, others). Idempotent; needs root
# (CI and the dev machines run as root) or sudo.
set -euo pipefail
# openmpi-bin / libopenmpi-dev: data parallelism (mpicc, mpirun; the MPI tests)
pkgs=(build-essential libopenblas-openmp-dev libinih-dev libjansson-dev libpcre2-dev
      libhdf5-openmpi-dev hdf5-tools openmpi-bin libopenmpi-dev)
# another caller (scripts/install_fuzz_deps.sh) names its own packages
[ $# -gt 0 ] && pkgs=("$@")
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
