#!/usr/bin/env python3
"""make bench-rl: online RL steps of `llamac rl` against TRL on this CPU.

GRPO: `llamac rl --algo grpo` against TRL 1.16.0's GRPOTrainer (reference
venv, generation by transformers). PPO: `llamac rl --algo ppo` against TRL
1.12.0's PPOTrainer (trl.experimental.ppo; its own venv
~/.cache/llamac-venv-trl112 from scripts/venv_trl112.sh; the PPO rows are
skipped with a line saying so where that venv is missing).

Same model (SmolLM2-135M-Instruct as a float32 Hugging Face directory, made
by scripts/bench_sft.py's prepare(): scripts/fetch_smollm2.sh's GGUF through
`llamac convert`), float32 on both sides (TRL bf16=False), the same threads
(OMP_NUM_THREADS and torch's), ChatML (SmolLM2's template), LoRA r 16
alpha 32 on every linear layer of the policy (q,k,v,o,gate,up,down; no
dropout), the same prompts: --prompts PATH, lines {"messages": [{"role":
"user", "content": ...}], "answer": ...}; by default 64 antonym questions
made here from WordNet 3.0's adjectives (/usr/share/wordnet, Debian's
wordnet-base). Each step: P prompts (--prompts-per-step), G completions
each (--group, TRL num_generations), at most --max-tokens tokens each at
temperature 1 (top-k off, top-p 1), then one optimizer step.

GRPO: beta 0 (TRL's default: no reference model), loss_type dapo,
scale_rewards group, one iteration (num_iterations 1), per-device batch =
generation batch = P x G (steps_per_generation 1). The reward: 1 if the
completion's final answer equals the line's "answer" field (the rule of
train/loop/rewards.h, mirrored in final_answer() below for TRL), else 0.
SmolLM2-135M rarely ends with "Answer: <word>", so most groups score all 0
(advantage 0): TRL still runs the whole backward for them, and so must
llamac for the rows to compare (the TRL worker writes its completions,
rewards and reward_mean beside its result.json).

PPO (TRL's PPOTrainer as TRL 1.12.0 runs it): a batch of P x G prompts per
step, one completion each; the policy with LoRA, the reference = the policy
with its adapters off (TRL with peft_config and ref_model None), a reward
model and a value model, both SmolLM2 with a new score head [1, 576]
(seeded, saved once to build/bench_rl/rm_hf: a timing stand-in, not a
trained reward model); TRL trains the whole value model. TRL's defaults
otherwise: 4 PPO epochs over one mini-batch, kl_coef 0.05 (k1), stop_token
eos.

Split of a step: generation (TRL: GRPOTrainer._generate / PPO's
batch_generation), reward (GRPOTrainer._calculate_rewards / PPO's
get_reward on the reward model), train = the rest of the step (log-prob
passes, value and reference passes, backward, optimizer). Wrappers and a
TrainerCallback time them; TRL's code is not edited. llamac's come from its
--metrics JSONL (METRIC_KEYS). Each run is its own process; medians over the
steps after --warmup, then over --rounds runs alternating llamac / TRL (the
order swapped every round); peak RSS is each child's ru_maxrss (os.wait4;
this parent never imports torch, see scripts/bench_dpo.py), the largest of
the rounds. Writes the log and the tables to bench/results/cpu-<date>-rl.txt
(--out). Orchestration is standard library only.

Quick check: --steps 1 --warmup 1 --rounds 1 --prompts-per-step 2.
"""
import argparse
import datetime
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sft import HF, ROOT, VENV, prepare, read_jsonl, run_child, run_worker  # noqa: E402

WORK = os.path.join(ROOT, "build", "bench_rl")
LLAMAC = os.path.join(ROOT, "build", "llamac")
RM = os.path.join(WORK, "rm_hf")  # SmolLM2 + a new score head: PPO's reward and value models
VENV_PPO = os.environ.get("LLAMAC_VENV_TRL112", os.path.expanduser("~/.cache/llamac-venv-trl112"))
LORA_R, LORA_ALPHA = 16, 32
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LR = 1e-5  # both sides; a step's cost does not depend on it
PPO_EPOCHS, KL_COEF = 4, 0.05  # TRL 1.12.0 PPOConfig's num_ppo_epochs and kl_coef defaults
TARGET_SPEED, TARGET_MEM = 3.0, 0.5  # llamac >= 3x TRL's steps/s at <= 0.5x its peak RSS
PARTS = ("generation", "reward", "train")

# ---------------------------------------------------------------- llamac rl: PROVISIONAL
# `llamac rl` is being written: its flag names and metric keys below are
# assumed, all in this one place. Fix them here when the command lands.

# Per-step keys of its --metrics rows, seconds: PARTS -> key.
METRIC_KEYS = {"generation": "time/generation", "reward": "time/reward", "train": "time/train"}
# llamac's reference and (PPO) value forwards at the rollout: TRL's runs count them in training
REF_KEY = "time/reference"


def llamac_rl_cmd(algo, a, prompts, d, copy=False):
    """the `llamac rl` command line of one run into folder d; a PPO "step" is a rollout (TRL's), PPO_EPOCHS
    optimizer steps of llamac's"""
    tok = os.path.join(HF, "tokenizer.json")
    cmd = [LLAMAC, "rl", "--algo", algo, "--policy", HF, "--tokenizer", tok, "--template", "chatml",
           "--prompts", prompts, "--max-tokens", str(a.max_tokens), "--temperature", "1",
           "--lora-r", str(LORA_R), "--lora-alpha", str(LORA_ALPHA), "--lora-targets", "all-linear",
           "--lr", str(LR), "--steps", str((a.warmup + a.steps) * (PPO_EPOCHS if algo == "ppo" else 1)), "--seed", "1",
           "--prompts-per-step", str(a.prompts_per_step if algo == "grpo" else a.prompts_per_step * a.group),
           "--metrics", os.path.join(d, "metrics.jsonl"), "--ckpt-dir", os.path.join(d, "ck"),
           "--adapter-out", os.path.join(d, "adapter")] + (["--no-shared-prompt"] if copy else [])
    if algo == "grpo":
        cmd += ["--batch", str(a.prompts_per_step), "--group", str(a.group), "--beta", "0", "--loss-type", "dapo",
                "--scale-rewards", "group", "--reward-answer", "answer"]
    else:  # ppo: P x G prompts, one completion each; TRL 1.12.0's defaults spelled out
        # micro-batches of 4 rows (a step still trains all P x G): llamac's activations for 4 rows, not 16
        cmd += ["--batch", "4", "--group", "1", "--reward-model", RM, "--reward-template", "chatml", "--value-model", RM, "--num-iterations", str(PPO_EPOCHS),
                "--beta", str(KL_COEF)]
    return cmd

# ---------------------------------------------------------------- prompts


def antonym_prompts(path, n, wordnet="/usr/share/wordnet", seed=7):
    """n questions 'What is the opposite of "X"? ...', "answer" the list of X's antonyms (a list always: one
    JSON type per column, as datasets needs), from WordNet's direct antonyms of adjectives whose first sense
    is SemCor-tagged at least 3 times (so the model has seen them)"""
    common = set()
    with open(os.path.join(wordnet, "index.adj"), encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            p = line.split()
            pc = int(p[3])
            if int(p[5 + pc]) >= 3:  # tagsense_cnt
                common.add(p[0])
    words, ants = {}, []  # synset offset -> its words; (offset, source word, target offset, target word)
    with open(os.path.join(wordnet, "data.adj"), encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            p = line.split("|")[0].split()
            off, wc = p[0], int(p[3], 16)
            words[off] = [re.sub(r"\(.*\)$", "", w) for w in p[4:4 + 2 * wc:2]]
            k = 4 + 2 * wc
            for i in range(int(p[k])):
                sym, to, st = p[k + 1 + 4 * i], p[k + 2 + 4 * i], p[k + 4 + 4 * i]
                if sym == "!":
                    ants.append((off, int(st[:2], 16), to, int(st[2:], 16)))
    pairs = set()
    for off, s, to, t in ants:
        x, y = words[off][s - 1], words[to][t - 1]
        if x in common and y in common and re.fullmatch(r"[a-z]{3,12}", x) and re.fullmatch(r"[a-z]{3,12}", y):
            pairs.add((x, y))
    accepted = {}  # every antonym of a word is accepted
    for x, y in sorted(pairs):
        accepted.setdefault(x, []).append(y)
    qs = sorted(accepted)
    random.Random(seed).shuffle(qs)
    if len(qs) < n:
        sys.exit(f"bench-rl: only {len(qs)} words with antonyms in {wordnet}, fewer than {n}")
    with open(path, "w") as f:
        for x in qs[:n]:
            q = f'What is the opposite of "{x}"? End your reply with "Answer: " and the word.'
            f.write(json.dumps({"messages": [{"role": "user", "content": q}], "answer": accepted[x]}) + "\n")


def final_answer(text):
    """train/loop/rewards.h's final answer: inside the last \\boxed{...}, else after the last answer: (to the
    end of that line), else the last non-empty line; trimmed of white space, quotes, '*', '`' and trailing
    '.', '!', ','"""
    s = None
    i = text.rfind("\\boxed{")
    if i >= 0:
        depth, j = 1, i + 7
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        s = text[i + 7:j - 1 if depth == 0 else j]
    else:
        k = max(text.rfind(w) for w in ("answer:", "Answer:", "ANSWER:"))
        if k >= 0:
            s = text[k + 7:].split("\n", 1)[0]
        else:
            lines = [x for x in text.split("\n") if x.strip()]
            s = lines[-1] if lines else ""
    while True:
        t = s.strip().strip("\"'*`").rstrip(".!,")
        if t == s:
            return s
        s = t


def answer_match(ans, accepted):
    """rewards_answer_match: numbers within 1e-6 relative, else equal ignoring ASCII case"""
    for v in accepted if isinstance(accepted, list) else [accepted]:
        try:
            a, b = float(ans), float(v)
            if abs(a - b) <= 1e-6 * max(1.0, abs(b)):
                return True
            continue
        except (TypeError, ValueError):
            pass
        if ans.lower() == str(v).lower():
            return True
    return False

# ---------------------------------------------------------------- the llamac side


def run_llamac(algo, a, prompts, copy=False):
    d = os.path.join(WORK, f"llamac_{algo}" + ("_copy" if copy else ""))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    rc, rss = run_child(llamac_rl_cmd(algo, a, prompts, d, copy), os.path.join(d, "log.txt"))
    if rc != 0:
        sys.exit(f"bench-rl: llamac rl --algo {algo} failed (exit {rc}); see {d}/log.txt")
    rows = [x for x in read_jsonl(os.path.join(d, "metrics.jsonl")) if METRIC_KEYS["train"] in x]
    for x in rows:
        x[METRIC_KEYS["train"]] = float(x[METRIC_KEYS["train"]]) + float(x.get(REF_KEY, 0))
    if algo == "ppo":  # a rollout's PPO_EPOCHS optimizer steps summed: one TRL step
        rows = [{k: sum(float(r[k]) for r in rows[i:i + PPO_EPOCHS]) for k in METRIC_KEYS.values()}
                for i in range(0, len(rows), PPO_EPOCHS)]
    if len(rows) != a.warmup + a.steps:
        sys.exit(f"bench-rl: {d}/metrics.jsonl: {len(rows)} rows with {METRIC_KEYS['train']}, expected "
                 f"{a.warmup + a.steps}")
    res = {p: statistics.median(float(x[METRIC_KEYS[p]]) for x in rows[a.warmup:]) for p in PARTS}
    res["step"] = statistics.median(sum(float(x[METRIC_KEYS[p]]) for p in PARTS) for x in rows[a.warmup:])
    res["rss"] = rss
    return res

# ---------------------------------------------------------------- the TRL side (workers, in the venvs)


def medians(steps, warmup):
    """per-part medians of the step dicts after warmup"""
    return {k: statistics.median(s[k] for s in steps[warmup:]) for k in ("step",) + PARTS}


def grpo_worker(a):
    """One TRL GRPOTrainer run in this process; writes its timings to --result."""
    import torch
    import trl
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from test_chat_ref import SMOLLM2

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(HF)
    tok.chat_template = SMOLLM2
    model = AutoModelForCausalLM.from_pretrained(HF, dtype=torch.float32, attn_implementation="sdpa")
    B = a.prompts_per_step * a.group
    cfg = GRPOConfig(output_dir=os.path.join(WORK, "trl_grpo_out"), per_device_train_batch_size=B,
                     gradient_accumulation_steps=1, num_generations=a.group, max_completion_length=a.max_tokens,
                     temperature=1.0, top_k=0, top_p=1.0, beta=0.0, loss_type="dapo", scale_rewards="group",
                     num_iterations=1, learning_rate=LR, lr_scheduler_type="constant", max_steps=a.warmup + a.steps,
                     gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True, logging_steps=1,
                     save_strategy="no", report_to=[], dataloader_num_workers=0, seed=1, disable_tqdm=True)
    lc = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                    target_modules=LORA_MODULES)

    seen = open(os.path.join(os.path.dirname(a.result), "completions.jsonl"), "w")

    def answer_reward(completions, answer, **kw):
        """1 if the final answer matches the line's "answer" (conversational: [{"role", "content"}])"""
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        r = [1.0 if answer_match(final_answer(t), x) else 0.0 for t, x in zip(texts, answer)]
        rewards.extend(r)
        for t, x, v in zip(texts, answer, r):  # to check that the rewards are not all 0
            seen.write(json.dumps({"completion": t, "answer": x, "reward": v}) + "\n")
        return r

    steps, cur, comp, rewards = [], {}, [], []

    class Timed(GRPOTrainer):
        def _generate(self, prompts):
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            cur["generation"] += time.perf_counter() - t0
            comp.append(sum(len(c) for c in out[1]))  # completion tokens
            return out

        def _calculate_rewards(self, *x, **k):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(*x, **k)
            cur["reward"] += time.perf_counter() - t0
            return out

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            cur.update(generation=0.0, reward=0.0, t0=time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            s = time.perf_counter() - cur["t0"]
            steps.append({"step": s, "generation": cur["generation"], "reward": cur["reward"],
                          "train": s - cur["generation"] - cur["reward"]})

    # GRPOTrainer reads the prompt from a "prompt" column (a message list: conversational); "answer" goes to
    # the reward function as a keyword argument
    ds = load_dataset("json", data_files=a.prompts, split="train").rename_column("messages", "prompt")
    tr = Timed(model=model, reward_funcs=answer_reward, args=cfg, train_dataset=ds, processing_class=tok,
               peft_config=lc, callbacks=[Timer()])
    tr.train()
    seen.close()
    res = medians(steps, a.warmup)
    res.update(steps_all=steps, completion_tokens=comp, reward_mean=sum(rewards) / max(1, len(rewards)), threads=torch.get_num_threads(), torch=torch.__version__,
               trl=trl.__version__, trained=sum(p.numel() for p in tr.model.parameters() if p.requires_grad))
    with open(a.result, "w") as f:
        json.dump(res, f)


def ppo_worker(a):
    """One TRL 1.12.0 PPOTrainer run in this process; writes its timings to --result."""
    import torch
    import trl
    import trl.experimental.ppo.ppo_trainer as ppo_mod
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from test_chat_ref import SMOLLM2

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(HF, padding_side="left")
    tok.chat_template = SMOLLM2
    # PPO masks every pad id out of the sequences (attention_mask = ids != pad): the pad must not be the
    # eos (<|im_end|>, this tokenizer's pad), or the stops would vanish; <|endoftext|> is never generated here
    tok.pad_token = "<|endoftext|>"
    B = a.prompts_per_step * a.group
    lines = read_jsonl(a.prompts)
    # (apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5, a list before)
    ids = [tok(tok.apply_chat_template(x["messages"], add_generation_prompt=True, tokenize=False),
               add_special_tokens=False)["input_ids"] for x in lines]
    ds = Dataset.from_dict({"input_ids": ids})
    policy = AutoModelForCausalLM.from_pretrained(HF, dtype=torch.float32, attn_implementation="sdpa")
    value = AutoModelForSequenceClassification.from_pretrained(RM, num_labels=1, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(RM, num_labels=1, dtype=torch.float32)
    for m in (policy, value, reward):
        m.config.pad_token_id = tok.pad_token_id
    cfg = PPOConfig(output_dir=os.path.join(WORK, "trl_ppo_out"), per_device_train_batch_size=B,
                    gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=PPO_EPOCHS,
                    total_episodes=B * (a.warmup + a.steps), response_length=a.max_tokens, temperature=1.0,
                    stop_token="eos", kl_coef=KL_COEF, local_rollout_forward_batch_size=B,
                    num_sample_generations=0, learning_rate=LR, lr_scheduler_type="constant",
                    gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True, logging_steps=1,
                    save_strategy="no", report_to=[], dataloader_num_workers=0, seed=1, disable_tqdm=True)
    lc = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                    target_modules=LORA_MODULES)
    steps, cur = [], {"generation": 0.0, "reward": 0.0}
    gen0, rew0 = ppo_mod.batch_generation, ppo_mod.get_reward

    def timed_generation(*x, **k):
        t0 = time.perf_counter()
        out = gen0(*x, **k)
        cur["generation"] += time.perf_counter() - t0
        return out

    def timed_reward(model, *x, **k):  # called on the value model too: only the reward model's calls count
        t0 = time.perf_counter()
        out = rew0(model, *x, **k)
        if model is reward:
            cur["reward"] += time.perf_counter() - t0
        return out

    ppo_mod.batch_generation, ppo_mod.get_reward = timed_generation, timed_reward

    class Timer(TrainerCallback):  # PPOTrainer's loop calls on_step_end only: a step runs from the last one
        def on_train_begin(self, args, state, control, **kw):
            cur["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            s = now - cur["t0"]
            steps.append({"step": s, "generation": cur["generation"], "reward": cur["reward"],
                          "train": s - cur["generation"] - cur["reward"]})
            cur.update(generation=0.0, reward=0.0, t0=now)

    tr = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                    value_model=value, train_dataset=ds, eval_dataset=ds, peft_config=lc, callbacks=[Timer()])
    tr.train()
    res = medians(steps, a.warmup)
    res.update(steps_all=steps, threads=torch.get_num_threads(), torch=torch.__version__, trl=trl.__version__,
               trained=sum(p.numel() for p in tr.model.parameters() if p.requires_grad))
    with open(a.result, "w") as f:
        json.dump(res, f)


def rm_worker(a):
    """SmolLM2 with a new score head (seeded) into RM, with its tokenizer"""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.manual_seed(3)
    m = AutoModelForSequenceClassification.from_pretrained(HF, num_labels=1, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(HF)
    m.config.pad_token_id = tok.pad_token_id
    m.save_pretrained(RM + ".tmp", safe_serialization=True)
    tok.save_pretrained(RM + ".tmp")
    os.replace(RM + ".tmp", RM)


def run_trl(algo, a, prompts, py):
    d = os.path.join(WORK, f"trl_{algo}")
    os.makedirs(d, exist_ok=True)
    cmd = [py, os.path.abspath(__file__), "--worker", algo, "--prompts", prompts, "--prompts-per-step",
           str(a.prompts_per_step), "--group", str(a.group), "--max-tokens", str(a.max_tokens), "--steps",
           str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads)]
    return run_worker(cmd, d, f"bench-rl: TRL {algo}")

# ---------------------------------------------------------------- main


def llamac_has_rl():
    return subprocess.run([LLAMAC, "rl", "--help"], capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--algos", default="grpo,ppo", help="comma-separated among grpo, ppo")
    ap.add_argument("--sides", default="llamac,llamac-copy,trl",
                    help="comma-separated among llamac, llamac-copy (llamac rl --no-shared-prompt: a prompt copy per "
                    "completion in training; GRPO only) and trl")
    ap.add_argument("--prompts", help="prompt lines {messages, answer} (default: WordNet antonyms, made here)")
    ap.add_argument("--n-prompts", type=int, default=64, help="antonym questions made when --prompts is not given")
    ap.add_argument("--prompts-per-step", type=int, default=4, help="P: prompts per step (PPO: P x G)")
    ap.add_argument("--group", type=int, default=4, help="G: completions per prompt (TRL num_generations)")
    ap.add_argument("--max-tokens", type=int, default=24, help="completion tokens at most (max_completion_length)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    ap.add_argument("--threads", type=int, default=2, help="threads of each side")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  f"cpu-{datetime.date.today().isoformat()}-rl.txt"))
    ap.add_argument("--worker", choices=["grpo", "ppo", "rm"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return {"grpo": grpo_worker, "ppo": ppo_worker, "rm": rm_worker}[a.worker](a)
    algos = [x for x in a.algos.split(",") if x]
    sides = [x for x in a.sides.split(",") if x]
    if not algos or any(x not in ("grpo", "ppo") for x in algos):
        sys.exit("bench-rl: --algos: among grpo, ppo")
    if not sides or any(x not in ("llamac", "llamac-copy", "trl") for x in sides):
        sys.exit("bench-rl: --sides: among llamac, llamac-copy, trl")
    py = os.path.join(VENV, "bin", "python")
    if subprocess.run([py, "-c", "import torch, transformers, peft, trl, datasets"], capture_output=True).returncode:
        sys.exit(f"bench-rl: no torch/transformers/peft/trl/datasets in {VENV} (pip install -r "
                 "scripts/requirements-ref.txt there)")
    py_ppo = os.path.join(VENV_PPO, "bin", "python")
    prepare(py)
    os.makedirs(WORK, exist_ok=True)
    prompts = a.prompts
    if not prompts:
        prompts = os.path.join(WORK, f"antonyms_{a.n_prompts}.jsonl")
        if not os.path.exists(prompts):
            antonym_prompts(prompts, a.n_prompts)
    if "ppo" in algos and not os.path.exists(os.path.join(RM, "model.safetensors")):
        subprocess.run([py, os.path.abspath(__file__), "--worker", "rm"], cwd=ROOT, check=True)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # llamac's threads; the children inherit it
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    load = os.getloadavg()
    say(f"bench-rl: SmolLM2-135M-Instruct (float32), LoRA r {LORA_R} alpha {LORA_ALPHA} all linear layers, "
        f"{len(read_jsonl(prompts))} prompts ({os.path.relpath(prompts, ROOT)}), P {a.prompts_per_step} x G "
        f"{a.group}, at most {a.max_tokens} tokens at temperature 1, {a.warmup} + {a.steps} steps, {a.rounds} "
        f"rounds, {a.threads} threads each, {os.cpu_count()} CPUs, load average {load[0]:.2f} at the start")
    run_sides = {}
    for algo in algos:
        s = list(sides)
        if algo == "ppo" and "llamac-copy" in s:  # G 1: nothing to share
            s.remove("llamac-copy")
        if any(x.startswith("llamac") for x in s) and not llamac_has_rl():
            say(f"  {algo}: llamac side skipped: `{os.path.relpath(LLAMAC, ROOT)} rl` does not run (not written yet)")
            s = [x for x in s if not x.startswith("llamac")]
        if algo == "ppo" and "trl" in s and subprocess.run(
                [py_ppo, "-c", "import trl.experimental.ppo, peft"], capture_output=True).returncode:
            say(f"  ppo: TRL side skipped: no TRL 1.12.0 with trl.experimental.ppo and peft in {VENV_PPO} "
                "(scripts/venv_trl112.sh makes it)")
            s.remove("trl")
        run_sides[algo] = s
    tables = []
    for algo in algos:
        res = {s: [] for s in run_sides[algo]}
        if not res:
            continue
        for r in range(a.rounds):
            for side in (run_sides[algo] if r % 2 == 0 else run_sides[algo][::-1]):
                res[side].append(run_llamac(algo, a, prompts, side == "llamac-copy") if side.startswith("llamac") else
                                 run_trl(algo, a, prompts, py if algo == "grpo" else py_ppo))
            say(f"  {algo} round {r + 1}: " + ", ".join(
                f"{s} {res[s][-1]['step']:.2f} s/step (" + " + ".join(f"{res[s][-1][p]:.2f}" for p in PARTS) +
                f") {res[s][-1]['rss']:.0f} MiB" for s in res))
        tables.append((algo, res))
    for algo, res in tables:
        table(a, algo, res, say)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"bench-rl: wrote {os.path.relpath(a.out, ROOT)}")


def table(a, algo, res, say):
    """one algorithm's rows: medians of the rounds (RSS: the largest), ratios, the targets"""
    med = {s: {k: statistics.median(x[k] for x in res[s]) for k in ("step",) + PARTS} for s in res}
    for s in res:
        med[s]["rss"] = max(x["rss"] for x in res[s])
    trl = res.get("trl", [{}])[-1]
    peer = {"grpo": "TRL GRPOTrainer", "ppo": "TRL PPOTrainer"}[algo]
    say()
    say(f"{algo.upper()} step, SmolLM2-135M-Instruct, P {a.prompts_per_step} x G {a.group} completions of at most "
        f"{a.max_tokens} tokens, median of {a.rounds} rounds x {a.steps} steps (after {a.warmup} warm-up), "
        f"{date_and_load()}" + (f"; TRL {trl['trl']}, torch {trl['torch']} ({trl['threads']} threads), "
                                f"{trl['trained'] / 1e6:.2f}M trained parameters" if trl else "") + ":")
    say()
    say("| side | s/step | generation | reward | train | steps/s | peak RSS |")
    say("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in med:
        m = med[s]
        name = {"llamac": "llamac rl", "llamac-copy": "llamac rl --no-shared-prompt"}.get(s, peer)
        say(f"| {name} | {m['step']:.2f} | " +
            " | ".join(f"{m[p]:.2f} s" for p in PARTS) + f" | {1 / m['step']:.3f} | {m['rss']:.0f} MiB |")
    if "llamac-copy" in med and "llamac" in med:
        say()
        say(f"a prompt laid out once before its {a.group} completions (the default) against a copy each: "
            f"{med['llamac-copy']['train'] / med['llamac']['train']:.2f}x faster training, "
            f"{med['llamac-copy']['step'] / med['llamac']['step']:.2f}x the steps/s")
    if "llamac" in med and "trl" in med:
        speed, mem = med["trl"]["step"] / med["llamac"]["step"], med["llamac"]["rss"] / med["trl"]["rss"]
        say()
        say(f"llamac: {speed:.2f}x {peer}'s steps/s, {mem:.2f}x its peak RSS; targets (>= {TARGET_SPEED:g}x, <= "
            f"{TARGET_MEM:g}x): speed " + ("met" if speed >= TARGET_SPEED else "missed") + ", memory " +
            ("met" if mem <= TARGET_MEM else "missed"))


def date_and_load():
    load = os.getloadavg()
    return f"{datetime.date.today().isoformat()}, load average {load[0]:.2f} / {load[2]:.2f} (1 / 15 min) at the end"


if __name__ == "__main__":
    sys.exit(main())
