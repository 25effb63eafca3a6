#!/usr/bin/env python3
"""make bench-sample: `llamac sample` against llama.cpp and transformers on this CPU.

One model for all three: SmolLM2-135M-Instruct (scripts/fetch_smollm2.sh's
Q4_1 GGUF) dequantised once by `llamac convert` to an F32 GGUF (llamac and
llama.cpp read it) and an F32 Hugging Face directory (transformers), so all
three compute in float32 on the same weights. The prompts are token ids,
made once with the Hugging Face tokenizer (from the GGUF's vocabulary, as
scripts/bench_sft.py does) and SmolLM2's ChatML template, from the WordNet
chat data of scripts/prepare_sft_wordnet.py (build/sft_demo); every system
gets the same ids and generates the same number of tokens (EOS ignored).

Scenarios (each system each round, its own process):
  a  one sequence, greedy, one short chat prompt, 200 new tokens:
     decode tokens/s, the tokens after the first over the seconds after the
     first (prefill excluded)
  b  64 prompts x 8 samples x 128 new tokens, temperature 0.8, top-p 0.95
     (top-k off): generated tokens / wall seconds (prefill included)
  c  time to first token of a 512-token prompt, greedy (prefill + one token)
The ways in:
  llamac        build/llamac sample (CLI, --stats JSON; llamac_run() holds
                the whole call so it is easy to adapt)
  llama.cpp     llama-cpp-python 0.3.36's low-level API, built from source
                (scripts/venv_llamacpp.sh): one context with n_seq_max =
                --max-seqs KV streams (kv_unified false: one stream per
                sequence); each prompt is decoded once into its first
                sample's sequence and copied to the other seven with
                llama_memory_seq_cp (parallel.cpp's system-prompt copy), then
                all sequences decode together, one llama_batch row each, with
                one sampler chain per sequence (temp -> top_p -> dist, the
                order transformers applies them); the KV cache and flash
                attention at llama.cpp's defaults (F16, auto: on this CPU
                F32 KV with flash attention at auto ran scenario b at half the
                speed, 92 against 201 tok/s; --llamacpp-kv f32 for it)
  transformers  model.generate (SDPA attention, DynamicCache), a streamer's
                timestamps for scenario a; scenario b: num_return_sequences 8
                over batches of --tf-batch left-padded prompts. 16 prompts
                (128 sequences) a call was the fastest: 16 prompts x 8 x 64
                tokens, quiet machine, 2026-12-07: --tf-batch 2, 4, 8, 16 gave
                70, 79, 96, 103 tok/s
Scenario b decodes 128 sequences at once on every side (--max-seqs 128 for
llamac and llama.cpp, --tf-batch 16 for transformers).
Threads: 2 everywhere (--threads): OMP_NUM_THREADS / OPENBLAS_NUM_THREADS for
llamac, n_threads / n_threads_batch for llama.cpp, torch.set_num_threads.
llama.cpp and transformers serve one untimed 8-token request first (graph
set-up, page faults on the weights); llamac's numbers are its --stats.

Peak RSS is each child's ru_maxrss from os.wait4 (the parent imports no
torch or llama_cpp: a child's ru_maxrss starts from its parent's RSS at
fork, see scripts/bench_dpo.py). Medians over --rounds (the order of the
systems rotates every round), the largest RSS. The machine's read
bandwidth (bench/membw.c) and the bytes of F32 weights one decode step reads
give scenario a's fraction of the bandwidth. Everything printed is also
saved to bench/results/cpu-YYYY-MM-DD-sample.txt (--out).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_REF = os.environ.get("LLAMAC_VENV", os.path.expanduser("~/.cache/llamac-venv"))
VENV_LLAMACPP = os.environ.get("LLAMAC_VENV_LLAMACPP", os.path.expanduser("~/.cache/llamac-venv-llamacpp"))
WORK = os.path.join(ROOT, "build", "bench_sample")
F32 = os.path.join(WORK, "smollm2-f32.gguf")
TOKENIZER = None  # the Q4_1 GGUF (prepare)
HF = os.path.join(WORK, "smollm2_hf")
SFT = os.path.join(ROOT, "build", "sft_demo")
SYSTEMS = ("llamac", "llama.cpp", "transformers")
# prompts, samples per prompt, new tokens, temperature, top-p; what each reports
SCENARIOS = {
    "a": dict(n=1, max_tokens=200, temperature=0.0, top_p=1.0, unit="tok/s",
              what="1 sequence, greedy, 200 new tokens: decode tok/s"),
    "b": dict(n=8, max_tokens=128, temperature=0.8, top_p=0.95, unit="tok/s",
              what="PROMPTS prompts x 8 samples x 128 tokens, T 0.8, top-p 0.95: tok/s"),
    "c": dict(n=1, max_tokens=1, temperature=0.0, top_p=1.0, unit="ms",
              what="512-token prompt: time to first token, ms"),
}
C_PROMPT = 512  # scenario c's prompt length in tokens


def env_threads(threads):
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return e


def measured(cmd, log, env=None):
    """Run cmd to completion, stdout and stderr to the file log; (exit status,
    peak RSS of the child in MB, the log's last non-empty line)."""
    with open(log, "w") as f:
        try:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        except OSError as e:
            return 127, None, f"{cmd[0]}: {e.strerror}"
        _, status, ru = os.wait4(p.pid, 0)
    with open(log, errors="replace") as f:
        lines = [x.strip() for x in f if x.strip()]
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss / 1024.0, lines[-1] if lines else ""  # Linux: KiB


def py_ref():
    return os.path.join(VENV_REF, "bin", "python")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- inputs

def prepare(args):
    """The F32 GGUF, the F32 HF directory with its tokenizer, the WordNet
    data and the three prompt files; returns {scenario: prompts path}."""
    os.makedirs(WORK, exist_ok=True)
    gguf = subprocess.run(["sh", "scripts/fetch_smollm2.sh"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    global TOKENIZER
    TOKENIZER = gguf  # the F32 GGUF holds no vocabulary: llamac reads the ids' tokenizer from the original
    if not os.path.exists(F32):
        subprocess.run([args.llamac, "convert", gguf, F32, "--type", "f32", "--force"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    if not os.path.exists(os.path.join(HF, "model.safetensors")):
        subprocess.run([args.llamac, "convert", gguf, HF, "--force"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    # transformers' tokenizer from the GGUF's vocabulary (llamac convert
    # --tokenizer's tokenizer.json keeps the 17 special tokens out of the BPE
    # vocabulary, and `tokenizers` then gives <|im_start|> the id 49136, not 1)
    if not os.path.exists(os.path.join(HF, "tokenizer.json")):
        subprocess.run([py_ref(), __file__, "--worker", "tokenizer", "--gguf", gguf], cwd=ROOT, check=True)
    if not os.path.exists(os.path.join(SFT, "val.jsonl")):
        subprocess.run([sys.executable, "scripts/prepare_sft_wordnet.py", "--out", SFT], cwd=ROOT, check=True)
    files = {s: os.path.join(WORK, f"prompts_{s}.jsonl") for s in SCENARIOS}
    subprocess.run([py_ref(), __file__, "--worker", "prompts", "--prompts-b", str(args.prompts_b)], cwd=ROOT,
                   check=True)
    return files


def save_tokenizer(gguf):
    from transformers import AutoTokenizer
    t = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    t.save_pretrained(HF)


def make_prompts(args):
    """Writes prompts_{a,b,c}.jsonl: {"prompt_ids": [...]} a line, ChatML
    with SmolLM2's default system turn and the assistant's header.
    a: the first held-out question; b: the held-out questions (64), then
    training questions if --prompts-b asks for more; c: one user turn of
    training answers cut to C_PROMPT tokens in all."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(HF)
    val = [x["messages"] for x in read_jsonl(os.path.join(SFT, "val.jsonl"))]
    train = [x["messages"] for x in read_jsonl(os.path.join(SFT, "train.jsonl"))]

    def chat(text):
        return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"])

    questions = [m[0]["content"] for m in val + train]
    prompts = {"a": [chat(questions[0])], "b": [chat(q) for q in questions[:args.prompts_b]]}
    mark = "\x01MARK\x01"
    head, tail = tok.apply_chat_template([{"role": "user", "content": mark}], add_generation_prompt=True,
                                         tokenize=False).split(mark)
    head, tail = (tok(x, add_special_tokens=False)["input_ids"] for x in (head, tail))
    body = tok("\n".join(m[1]["content"] for m in train[:200]), add_special_tokens=False)["input_ids"]
    body = body[:C_PROMPT - len(head) - len(tail)]
    assert len(body) == C_PROMPT - len(head) - len(tail), "not enough text for scenario c's prompt"
    prompts["c"] = [head + body + tail]
    for s, ps in prompts.items():
        with open(os.path.join(WORK, f"prompts_{s}.jsonl"), "w") as f:
            for ids in ps:
                f.write(json.dumps({"prompt_ids": ids}) + "\n")


def weight_bytes():
    """(bytes of F32 weights one decode step reads, parameters), from the HF
    config: every matrix and norm once; the embedding only as the LM head
    when tied (its lookup reads one row)."""
    with open(os.path.join(HF, "config.json")) as f:
        c = json.load(f)
    D, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    H, KV = c["num_attention_heads"], c["num_key_value_heads"]
    HS = c.get("head_dim") or D // H
    layer = D * H * HS + 2 * D * KV * HS + H * HS * D + 3 * D * F + 2 * D
    read = L * layer + D + V * D + (0 if c.get("tie_word_embeddings") else D)
    params = L * layer + D + V * D * (1 if c.get("tie_word_embeddings") else 2)
    return 4 * read, params


def bandwidth(threads):
    """(GB/s, the probe's line) from bench/membw.c, compiled here once."""
    exe = os.path.join(WORK, "membw")
    src = os.path.join(ROOT, "bench", "membw.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run(["cc", "-O2", "-march=native", "-fopenmp", src, "-o", exe], check=True)
    line = subprocess.run([exe], env=env_threads(threads), check=True, capture_output=True, text=True).stdout.strip()
    return float(line.split(": ")[-1].split()[0]), line


# ---------------------------------------------------------------- llamac

def llamac_run(args, sc, prompts, tag):
    """One `llamac sample` run of scenario sc; {"value", "gen_tokens", "rss",
    "tokens" (the first sequence's), ...} or {"error": its last line}. The
    engine's CLI lives on another branch for now: its flags and the keys of
    its --stats JSON are the assumptions here and nowhere else."""
    d = os.path.join(WORK, tag)
    os.makedirs(d, exist_ok=True)
    out, stats = os.path.join(d, "out.jsonl"), os.path.join(d, "stats.json")
    for p in (out, stats):
        if os.path.exists(p):
            os.remove(p)
    s = SCENARIOS[sc]
    cmd = [args.llamac, "sample", "--model", args.model, "--tokenizer", TOKENIZER, "--prompts", prompts, "--n", str(s["n"]),
           "--max-tokens", str(s["max_tokens"]), "--temperature", str(s["temperature"]), "--top-p", str(s["top_p"]),
           "--seed", str(args.seed), "--ignore-eos", "--max-seqs", str(args.max_seqs if sc == "b" else 1),
           "--threads", str(args.threads), "--out", out, "--stats", stats] + (["--quant", args.quant] if args.quant else [])
    rc, rss, last = measured(cmd, os.path.join(d, "log.txt"), env_threads(args.threads))
    if rc != 0:
        return {"error": f"exit {rc}: {last}"[:160], "rss": None}
    try:
        with open(stats) as f:
            st = json.load(f)
        # a: the tokens after the first over the seconds after the first (as
        # the others); b: the sampling loop, prefill included, model loading
        # and packing not (as the others' timers); c: prefill + first token
        value = {"a": lambda: (st["gen_tokens"] - 1) / (st["gen_s"] - st["ttft_s"]),
                 "b": lambda: st["gen_tokens"] / st["gen_s"],
                 "c": lambda: 1000.0 * st["ttft_s"]}[sc]()
        first = read_jsonl(out)[0]
        toks = next((first[k] for k in ("tokens", "token_ids", "completion_ids", "ids") if k in first), [])
    except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError) as e:
        return {"error": f"stats/out unreadable: {e!r}"[:160], "rss": None}
    return {"value": value, "gen_tokens": st["gen_tokens"], "rss": rss, "tokens": toks,
            "kv_bytes_per_token": st.get("kv_bytes_per_token")}


# ---------------------------------------------------------------- llama.cpp (worker process)

def llamacpp_worker(a):
    """One scenario with llama.cpp's batched low-level API in this process;
    writes {"value", "gen_tokens", "tokens", ...} to a.result."""
    import ctypes
    import llama_cpp as L

    s = SCENARIOS[a.scenario]
    prompts = [p["prompt_ids"] for p in read_jsonl(a.prompts)]
    n, new = s["n"], s["max_tokens"]
    quiet = L.llama_log_callback(lambda level, text, user: None)  # kept referenced while the library may call it
    L.llama_log_set(quiet, ctypes.c_void_p())
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit(f"llama.cpp: cannot load {a.model}")
    # sequences at once: a multiple of n, at most --max-seqs (and llama.cpp's 256)
    S = n * max(1, min(a.max_seqs, 256, n * len(prompts)) // n)
    longest = max(len(p) for p in prompts)
    cp = L.llama_context_default_params()
    cp.n_seq_max = S
    cp.kv_unified = False  # one KV stream per sequence (PR #14363's high-throughput mode)
    cp.n_ctx = S * (longest + new + 1)  # each stream gets n_ctx / S cells (llama.cpp pads them to 256)
    cp.n_batch = cp.n_ubatch = max(512, S, longest)
    cp.n_threads = cp.n_threads_batch = a.threads
    cp.type_k = cp.type_v = {"f32": L.GGML_TYPE_F32, "f16": L.GGML_TYPE_F16}[a.llamacpp_kv]
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("llama.cpp: cannot create the context")
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(cp.n_batch, 0, 1)

    def chain(seed):
        c = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if s["temperature"] == 0:
            L.llama_sampler_chain_add(c, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(c, L.llama_sampler_init_temp(s["temperature"]))
            L.llama_sampler_chain_add(c, L.llama_sampler_init_top_p(s["top_p"], 1))
            L.llama_sampler_chain_add(c, L.llama_sampler_init_dist(seed))
        return c

    def add(i, token, pos, seq, logits):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits

    spent = {"decode_s": 0.0}  # time inside llama_decode (the rest: sampling, batch filling)

    def decode(rows):
        batch.n_tokens = rows
        t = time.perf_counter()
        rc = L.llama_decode(ctx, batch)
        spent["decode_s"] += time.perf_counter() - t
        if rc != 0:
            sys.exit(f"llama.cpp: llama_decode returned {rc}")

    def group(ps, seed0, stamps):
        """Generate n samples of each prompt in ps (len(ps) * n <= S sequences);
        returns the sequences' tokens. stamps gets the time of every step."""
        L.llama_memory_clear(mem, True)
        samplers = [chain(seed0 + q) for q in range(len(ps) * n)]
        out = [[] for _ in samplers]
        pos = [0] * len(samplers)
        for i, ids in enumerate(ps):  # each prompt once, into its first sample's sequence
            for k, t in enumerate(ids):
                add(k, t, k, i * n, k == len(ids) - 1)
            decode(len(ids))
            for j in range(1, n):  # the other samples share it: a copy of the stream
                L.llama_memory_seq_cp(mem, i * n, i * n + j, -1, -1)
            for j in range(n):
                q = i * n + j
                out[q].append(L.llama_sampler_sample(samplers[q], ctx, len(ids) - 1))
                pos[q] = len(ids)
            stamps.append(time.perf_counter())
        while len(out[0]) < new:  # every sequence has the same length (EOS ignored)
            for q in range(len(out)):
                add(q, out[q][-1], pos[q], q, True)
            decode(len(out))
            for q in range(len(out)):
                out[q].append(L.llama_sampler_sample(samplers[q], ctx, q))
                pos[q] += 1
            stamps.append(time.perf_counter())
        for c in samplers:
            L.llama_sampler_free(c)
        return out

    warm = prompts[0][:8]
    group([warm], a.seed, [])  # untimed: graph set-up, the weights' pages
    spent["decode_s"] = 0.0
    stamps = []
    t0 = time.perf_counter()
    seqs = []
    per = S // n
    for g in range(0, len(prompts), per):
        seqs += group(prompts[g:g + per], a.seed + g * n, stamps)
    wall = time.perf_counter() - t0
    gen = sum(len(x) for x in seqs)
    if a.scenario == "a":
        value = (gen - 1) / (stamps[-1] - stamps[0])
    elif a.scenario == "b":
        value = gen / wall
    else:
        value = 1000.0 * (stamps[0] - t0)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    with open(a.result, "w") as f:
        json.dump({"value": value, "gen_tokens": gen, "tokens": seqs[0], "heads": [x[:8] for x in seqs[:8]],
                   "wall_s": wall, "decode_s": spent["decode_s"], "seqs_at_once": S,
                   "version": L.__version__}, f)


# ---------------------------------------------------------------- transformers (worker process)

def transformers_worker(a):
    """One scenario with transformers' generate in this process."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(a.threads)
    s = SCENARIOS[a.scenario]
    prompts = [p["prompt_ids"] for p in read_jsonl(a.prompts)]
    model = AutoModelForCausalLM.from_pretrained(HF, dtype=torch.float32, attn_implementation="sdpa").eval()
    # EOS ignored: no EOS id anywhere generate looks for one; pad with <|endoftext|>
    model.generation_config.eos_token_id = None
    pad = 0
    sample = s["temperature"] > 0
    gc = GenerationConfig(max_new_tokens=s["max_tokens"], do_sample=sample,
                          temperature=s["temperature"] if sample else None, top_p=s["top_p"] if sample else None,
                          top_k=0 if sample else None, num_return_sequences=s["n"], eos_token_id=None,
                          pad_token_id=pad, bos_token_id=1, use_cache=True)

    class Clock(BaseStreamer):
        """generate calls put() with the prompt, then with each new token"""
        def __init__(self):
            self.t = []

        def put(self, value):
            self.t.append(time.perf_counter())

        def end(self):
            pass

    def generate(ps, streamer=None):
        T = max(len(p) for p in ps)
        ids = torch.tensor([[pad] * (T - len(p)) + p for p in ps])  # left padding
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in ps])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc, streamer=streamer)
        return out[:, T:]

    torch.manual_seed(a.seed)
    with torch.inference_mode():  # untimed: 8 tokens of the first prompt, 2 new
        model.generate(input_ids=torch.tensor([prompts[0][:8]]), generation_config=GenerationConfig(
            max_new_tokens=2, do_sample=False, eos_token_id=None, pad_token_id=pad))
    t0 = time.perf_counter()
    clock = Clock() if a.scenario == "a" else None
    outs = [generate(prompts[g:g + a.tf_batch], clock) for g in range(0, len(prompts), a.tf_batch)]
    wall = time.perf_counter() - t0
    gen = sum(o.numel() for o in outs)
    if a.scenario == "a":  # clock.t[0]: the prompt; [1]: the first new token
        value = (gen - 1) / (clock.t[-1] - clock.t[1])
    elif a.scenario == "b":
        value = gen / wall
    else:
        value = 1000.0 * wall
    with open(a.result, "w") as f:
        json.dump({"value": value, "gen_tokens": gen, "tokens": outs[0][0].tolist(),
                   "heads": outs[0][:8, :8].tolist(), "wall_s": wall,
                   "threads": torch.get_num_threads(), "version": f"transformers {transformers.__version__}, "
                   f"torch {torch.__version__}"}, f)


def peer_run(args, system, sc, prompts, tag):
    """One llama.cpp or transformers worker process for scenario sc."""
    d = os.path.join(WORK, tag)
    os.makedirs(d, exist_ok=True)
    res = os.path.join(d, "result.json")
    if os.path.exists(res):
        os.remove(res)
    py = os.path.join(VENV_LLAMACPP if system == "llama.cpp" else VENV_REF, "bin", "python")
    cmd = [py, __file__, "--worker", "llamacpp" if system == "llama.cpp" else "transformers", "--scenario", sc,
           "--prompts", prompts, "--result", res, "--seed", str(args.seed), "--threads", str(args.threads),
           "--max-seqs", str(args.max_seqs), "--tf-batch", str(args.tf_batch), "--llamacpp-kv", args.llamacpp_kv,
           "--model", args.model]
    rc, rss, last = measured(cmd, os.path.join(d, "log.txt"), env_threads(args.threads))
    if rc != 0 or not os.path.exists(res):
        return {"error": f"exit {rc}: {last}"[:160], "rss": None}
    with open(res) as f:
        r = json.load(f)
    r["rss"] = rss
    return r


# ---------------------------------------------------------------- main

class Tee:
    """stdout that is also written to a file"""
    def __init__(self, path):
        self.f, self.out = open(path, "w"), sys.stdout

    def write(self, s):
        self.out.write(s)
        self.f.write(s)

    def flush(self):
        self.out.flush()
        self.f.flush()


def machine_line():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; commit {rev.strip()}{' (modified)' if dirty else ''}")


def common_prefix(x, y):
    k = 0
    while k < min(len(x), len(y)) and x[k] == y[k]:
        k += 1
    return k


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="runs of every system and scenario (medians)")
    ap.add_argument("--scenarios", default="a,b,c", help="comma-separated among a, b, c")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated among " + ", ".join(SYSTEMS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seqs", type=int, default=64,
                    help="scenario b: sequences decoded at once by llamac and llama.cpp (a multiple of 8)")
    ap.add_argument("--tf-batch", type=int, default=16,
                    help="scenario b: prompts per transformers generate call (x 8 samples = sequences at once)")
    ap.add_argument("--prompts-b", type=int, default=64, help="scenario b's prompts")
    ap.add_argument("--llamacpp-kv", choices=["f16", "f32"], default="f16",
                    help="llama.cpp's KV cache type (f16, its default; f32 with its flash attention at auto ran "
                         "scenario b at half the speed)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--llamac", default=os.path.join(ROOT, "build", "llamac"))
    ap.add_argument("--out", help="raw output (default bench/results/cpu-YYYY-MM-DD-sample.txt)")
    ap.add_argument("--model", default=F32, help="the GGUF llamac and llama.cpp decode (default: SmolLM2 dequantised "
                    "to F32; another file of SmolLM2, e.g. its Q4_1 GGUF, for the kept-quantised rows of "
                    "scripts/bench_qlora.py); transformers always runs the F32 HF directory")
    ap.add_argument("--quant", help="llamac sample --quant (keep: decode on the file's own quantised types)")
    ap.add_argument("--json", help="also write the medians and peak RSS per system and scenario to this file")
    ap.add_argument("--worker", choices=["tokenizer", "prompts", "llamacpp", "transformers"], help=argparse.SUPPRESS)
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--prompts", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--gguf", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "tokenizer":
        return save_tokenizer(args.gguf)
    if args.worker == "prompts":
        return make_prompts(args)
    if args.worker == "llamacpp":
        return llamacpp_worker(args)
    if args.worker == "transformers":
        return transformers_worker(args)

    scen = [s for s in args.scenarios.split(",") if s]
    systems = [s for s in args.systems.split(",") if s]
    if any(s not in SCENARIOS for s in scen) or any(s not in SYSTEMS for s in systems):
        sys.exit(f"bench-sample: --scenarios among {','.join(SCENARIOS)}, --systems among {','.join(SYSTEMS)}")
    if args.max_seqs % 8 or args.max_seqs < 8:
        sys.exit("bench-sample: --max-seqs must be a positive multiple of 8 (the samples of a prompt)")
    for sysname, venv, mods in (("transformers", VENV_REF, "torch, transformers"),
                                ("llama.cpp", VENV_LLAMACPP, "llama_cpp")):
        ok = subprocess.run([os.path.join(venv, "bin", "python"), "-c", f"import {mods}"],
                            capture_output=True).returncode == 0 if os.path.exists(venv) else False
        if sysname in systems and not ok and sysname == "transformers":
            sys.exit(f"bench-sample: no {mods} in {venv} (make test-ref creates it; also needed for the prompts)")
        if sysname in systems and not ok:
            print(f"bench-sample: no {mods} in {venv} (scripts/venv_llamacpp.sh builds it); {sysname} skipped")
            systems.remove(sysname)
    files = prepare(args)
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   f"cpu-{datetime.date.today().isoformat()}-sample.txt")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    sys.stdout = Tee(out)

    gbs, probe = bandwidth(args.threads)  # again after the runs: the better of the two counts
    wbytes, params = weight_bytes()
    what = "F32"
    if os.path.abspath(args.model) != os.path.abspath(F32):  # a quantised file: its matrices as stored
        wbytes, what = os.path.getsize(args.model), os.path.basename(args.model)
    lens = {s: [len(p["prompt_ids"]) for p in read_jsonl(files[s])] for s in SCENARIOS}
    print(f"bench-sample: {machine_line()}; load average {loadavg()}")
    print(f"  {probe}")
    print(f"  SmolLM2-135M-Instruct {what} ({params / 1e6:.1f}M parameters); one decode step reads "
          f"{wbytes / 1e6:.0f} MB of weights (the tied embedding once, as the LM head; a quantised file: its size)"
          + (f"; llamac --quant {args.quant}" if args.quant else ""))
    print(f"  prompts: a {lens['a'][0]} tokens; b {len(lens['b'])} prompts of {min(lens['b'])}-{max(lens['b'])} "
          f"tokens; c {lens['c'][0]} tokens; {args.threads} threads each; {args.rounds} rounds; scenario b: "
          f"llamac and llama.cpp {args.max_seqs} sequences at once, transformers {args.tf_batch} prompts x 8 "
          f"per generate; llama.cpp KV {args.llamacpp_kv}", flush=True)

    res = {(sy, sc): [] for sy in systems for sc in scen}
    for r in range(args.rounds):
        for sc in scen:
            order = systems[r % len(systems):] + systems[:r % len(systems)]
            for sy in order:
                tag = f"{sy.replace('.', '')}_{sc}"
                load = loadavg()
                x = (llamac_run(args, sc, files[sc], tag) if sy == "llamac"
                     else peer_run(args, sy, sc, files[sc], tag))
                res[(sy, sc)].append(x)
                shown = (f"error: {x['error']}" if "error" in x else
                         f"{x['value']:.1f} {SCENARIOS[sc]['unit']}, {x['gen_tokens']} tokens")
                rss_s = "" if x["rss"] is None else f", peak RSS {x['rss']:.0f} MB"
                print(f"  round {r + 1} {sc} {sy}: {shown}{rss_s} (load average before: {load})", flush=True)

    def med(sy, sc):
        ok = [x["value"] for x in res.get((sy, sc), []) if "value" in x]
        return statistics.median(ok) if ok else None

    def rss(sy, sc):
        xs = [x["rss"] for x in res.get((sy, sc), []) if x["rss"] is not None]
        return max(xs) if xs else None

    def err(sy, sc):
        return next((x["error"] for x in res.get((sy, sc), []) if "error" in x), None)

    def cell(sy, sc):
        v = med(sy, sc)
        if v is not None:
            return f"{v:.1f}" if SCENARIOS[sc]["unit"] == "ms" or v < 100 else f"{v:.0f}"
        e = err(sy, sc)
        return f"error ({e})" if e else "-"

    def ratio(sc, other):
        lc, ot = med("llamac", sc), med(other, sc)
        if lc is None or ot is None:
            return "-"
        return f"{(ot / lc if SCENARIOS[sc]['unit'] == 'ms' else lc / ot):.2f}x"

    def mb(v):
        return "-" if v is None else f"{v:.0f}"

    gbs2, probe2 = bandwidth(args.threads)
    print(f"  after the runs: {probe2}")
    gbs = max(gbs, gbs2)
    print()
    print(f"SmolLM2-135M-Instruct {what}, {args.threads} threads, median of {args.rounds} rounds; "
          "ratio = llamac's speed over the other's (> 1: llamac faster; TTFT: their ms / llamac's ms)")
    print()
    print("| scenario | llamac | llama.cpp | transformers | llamac / llama.cpp | llamac / transformers "
          "| peak RSS MB llamac | llama.cpp | transformers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for sc in scen:
        print(f"| {sc}: {SCENARIOS[sc]['what'].replace('PROMPTS', str(args.prompts_b))} | " + " | ".join(cell(sy, sc) for sy in SYSTEMS) + " | "
              + f"{ratio(sc, 'llama.cpp')} | {ratio(sc, 'transformers')} | "
              + " | ".join(mb(rss(sy, sc)) for sy in SYSTEMS) + " |")
    if "a" in scen:
        fr = []
        for sy in SYSTEMS:
            v = med(sy, "a")
            fr.append("-" if v is None else f"{100 * v * wbytes / 1e9 / gbs:.0f}%")
        print(f"| a: weight bytes read / s, share of {gbs:.1f} GB/s | " + " | ".join(fr) + " | | | | | |")
        toks = {sy: next((x["tokens"] for x in res.get((sy, "a"), []) if x.get("tokens")), None) for sy in SYSTEMS}
        have = [sy for sy in SYSTEMS if toks[sy]]
        pairs = [f"{p} / {q} {common_prefix(toks[p], toks[q])}" for i, p in enumerate(have) for q in have[i + 1:]]
        if pairs:
            print()
            print(f"scenario a, greedy: tokens in common from the start (of {SCENARIOS['a']['max_tokens']}): "
                  + ", ".join(pairs))
    share = [x["decode_s"] / x["wall_s"] for x in res.get(("llama.cpp", "b"), []) if "decode_s" in x]
    if share:
        print()
        print(f"llama.cpp, scenario b: {100 * statistics.median(share):.0f}% of the wall time inside llama_decode "
              "(the rest: its sampler chains, called once per sequence and token, and the Python loop)")
    vers = {sy: next((x["version"] for xs in [res.get((sy, sc), []) for sc in scen] for x in xs if "version" in x),
                     None) for sy in ("llama.cpp", "transformers")}
    print()
    print("versions: llama-cpp-python " + (vers["llama.cpp"] or "-") + " (built from source, GGML_NATIVE); "
          + (vers["transformers"] or "transformers -") + f"; llamac {os.path.relpath(args.llamac, ROOT)}")
    print(f"raw output: {os.path.relpath(out, ROOT)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({sy: {sc: {"value": med(sy, sc), "rss": rss(sy, sc), "error": err(sy, sc)} for sc in scen}
                       for sy in systems}, f)


if __name__ == "__main__":
    sys.exit(main())
