#!/usr/bin/env bash
# make demo: what llamac can do today on this machine, in about a minute.
# (The pretraining demo on a real corpus arrives with `llamac pretrain`.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=build/llamac
echo "== llamac inspect llama3.2-1b --seq 2048: shape, parameter count, memory of a training step"
$L inspect llama3.2-1b --seq 2048
echo
echo "== llamac bench --preset 15m: training steps of the 15M TinyStories shape, with the SGEMM peak and the time per op"
$L bench --preset 15m --batch 8 --seq 256 --steps 3 --sgemm 2048 --ops
