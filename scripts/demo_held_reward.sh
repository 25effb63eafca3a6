# demo_held_reward.sh: sourced by the demos that train on the reward-model
# demo's reward model (demo_rlhf.sh, demo_ppo.sh). Defines
#   held_reward OUT TAG TITLE POLICY [flags]
# which samples POLICY's greedy answers (`llamac sample`, 40 tokens, as
# rs and rl sample) to build/rlhf_demo/held_prompts.jsonl, scores them with
# build/rlhf_demo/rm.h5 (`llamac score`), prints "held-out words, TITLE
# (greedy): mean reward ..." and four answers, and leaves
# OUT/greedy_TAG{.jsonl,_items.jsonl,_scored.jsonl}. Reads $L (llamac) and
# $G (the SFT model's GGUF tokenizer, the reward model's too).
held_reward() {
    local out=$1 tag=$2 title=$3; shift 3
    local R=build/rlhf_demo
    rm -f "$out/greedy_$tag".* "$out/greedy_${tag}_"*
    $L sample --model "$@" --tokenizer "$G" --prompts "$R/held_prompts.jsonl" --n 1 --temperature 0 \
        --max-tokens 40 --out "$out/greedy_$tag.jsonl" >/dev/null
    python3 - "$out/greedy_$tag.jsonl" "$out/greedy_${tag}_items.jsonl" <<'EOF'
import json, sys
with open(sys.argv[2], "w") as f:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        f.write(json.dumps({"prompt": r["messages"], "completion": r["text"]}) + "\n")
EOF
    $L score --reward-model "$R/rm.h5" --reward-tokenizer "$G" --reward-template chatml \
        --data "$out/greedy_${tag}_items.jsonl" --out "$out/greedy_${tag}_scored.jsonl" >/dev/null 2>&1
    python3 - "$out/greedy_${tag}_scored.jsonl" "$title" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("---- held-out words, %s (greedy): mean reward %.3f over %d answers ----"
      % (sys.argv[2], sum(r["reward"] for r in rows) / len(rows), len(rows)))
for r in rows[:4]:
    print("Q: %s\nA: %s   (reward %.2f)" % (r["prompt"][-1]["content"], r["completion"].strip(), r["reward"]))
EOF
}
