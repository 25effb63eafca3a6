#!/usr/bin/env bash
# The SFT demo's model as one checkpoint, for the demos that start from it
# (demo-dpo, demo-rlhf): build/sft_demo's LoRA adapter merged into
# SmolLM2-135M-Instruct. Runs scripts/demo_sft.sh first when its adapter is
# missing; (re)makes the files when missing or unreadable (e.g. left by an
# older llamac). Prints the checkpoint's path on stdout, everything else on
# stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=build/llamac
S=build/sft_demo
G=$(sh scripts/fetch_smollm2.sh)
[ -f "$S/adapter/adapter_config.json" ] || bash scripts/demo_sft.sh >&2
$L inspect "$S/base.h5" >/dev/null 2>&1 || $L convert "$G" "$S/base.h5" --force >&2
$L inspect "$S/merged.h5" >/dev/null 2>&1 || $L convert "$S/base.h5" "$S/merged.h5" --adapter "$S/adapter" --force >&2
echo "$S/merged.h5"
