#!/usr/bin/env python3
"""`llamac sft` against TRL, transformers and PEFT (run by scripts/test_ref.sh).

What: trains two small byte-level BPE tokenizers with Hugging Face
`tokenizers` (Llama 3's split regex + ByteLevel, as scripts/test_chat_ref.py
does): a Llama 3 one (<|begin_of_text|> added by a TemplateProcessing
post-processor, as Meta's tokenizer.json does) and a ChatML one (SmolLM2's
special tokens, no BOS). Builds a tiny random Llama with transformers, saved
as a HF directory that `llamac sft --model` reads. Then:

  (a) data: the examples `llamac sft --dump` writes ({"ids", "mask"}) equal
      TRL SFTTrainer's processed train_dataset (input_ids; mask = labels !=
      -100) for conversations (assistant_only_loss=True: TRL's assistant
      masks, with the training template: TRL's llama3_training.jinja, and
      SmolLM2's ChatML as llamac renders it with {% generation %} around
      content + <|im_end|>: scripts/test_chat_ref.py's SMOLLM2_GEN),
      conversational prompt-completion pairs (completion_mask) and string
      prompt-completion pairs (BOS from the Llama 3 post-processor, EOS
      appended by TRL: tokenizer_config.json's eos_token, which llamac
      reads beside tokenizer.json, <|im_end|> for SmolLM2's vocabulary);
  (b) loss: llamac's first-step loss over all examples (one optimizer step,
      the loss is taken before the update), unpacked (--packing 0) and
      packed (--packing 1: the document mask and restarting positions must
      make it the same number), equals transformers' loss with labels -100
      on the untrained positions, computed example by example, unpacked;
  (c) training: 10 LoRA SFT steps on packed data with gradient accumulation
      (2 micro-batches per step), warmup + cosine, clipping, weight decay,
      from the same PEFT adapter (B nonzero, --lora-init DIR): llamac's
      per-step losses (--metrics) and final adapter (--adapter-out) equal
      PEFT + torch AdamW replaying the exact micro-batches llamac trained on
      (--dump-batches; document mask as a 4-D additive mask and per-example
      position_ids, as scripts/ref_llama.py does) within REL.

Prints PASS/FAIL per check and "test_sft_ref: N passed, M failed"; exit 1 on
any failure.
"""

import argparse
import json
import math
import os
import re
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_llama import doc_mask  # noqa: E402  (the additive document mask)
from test_chat_ref import PATTERN, SMOLLM2_GEN  # noqa: E402  (split regex; ChatML + generation markers)
from refcheck import check, run, summary  # noqa: E402

# (b), (c): relative tolerance on losses and adapter weights (|a - b| <=
# REL * max|b| per tensor). Both sides are float32 with different summation
# orders (OpenBLAS vs torch's CPU GEMMs); measured here: losses ~1e-7,
# adapters after ten AdamW steps up to ~3e-6 (Adam's m / sqrt(v) amplifies
# the gradients' last-bit differences where v is small).
REL = 1e-5

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

SPEC = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, max_position_embeddings=256, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)

S = {"role": "system"}
U = {"role": "user"}
A = {"role": "assistant"}


def m(base, content):
    return dict(base, content=content)


# single- and multi-turn, with and without a system message; whitespace at the
# ends (Llama 3 trims it), newlines, non-ASCII
CONVS = [
    [m(U, "What is the capital of France?"), m(A, "Paris.")],
    [m(S, "You are a terse assistant."), m(U, "What is 2 + 2?"), m(A, "4.")],
    [m(S, "Answer in one word."), m(U, "Colour of the sky?"), m(A, "Blue."), m(U, "  And of grass?\n"),
     m(A, " Green, usually.\n\nAnything else?")],
    [m(U, "Hello there!"), m(A, "Hi! How can I help you today?"), m(U, "Tell me a joke about caf\u00e9s."),
     m(A, "Why did the espresso file a report? It got mugged.")],
    [m(U, "first"), m(A, "second"), m(U, "third"), m(A, "fourth"), m(U, "fifth"), m(A, "sixth and last.")],
    [m(S, "\tSystem with tabs\t"), m(U, "Count to five."), m(A, "\n\n1, 2, 3, 4, 5 \u4e2d\u6587")],
]
# conversational prompt-completion: the prompt ends on a user turn
PAIRS = [
    ([m(U, "Define: apple")], [m(A, "A round fruit with red or green skin.")]),
    ([m(S, "Be brief."), m(U, "Define: river")], [m(A, "A large natural stream of water.")]),
    ([m(U, "Hi"), m(A, "Hello."), m(U, "Define: cloud")], [m(A, "A visible mass of water droplets.")]),
]
# standard (string) prompt-completion
TEXT_PAIRS = [
    ("Question: what is 3 + 4?\nAnswer:", " 7"),
    ("Translate to French: cat\n", "chat"),
    ("The quick brown fox", " jumps over the lazy dog."),
]

KNOWN = []  # differences from the reference that are understood and reported, not hidden


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- inputs

def train_tokenizer(path, specials, bos=None):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    text = []
    for conv in CONVS:
        text += [x["role"] + "\n" + x["content"] for x in conv]
    for p, c in PAIRS:
        text += [x["content"] for x in p + c]
    text += [p + c for p, c in TEXT_PAIRS]
    text += ["You are a helpful AI assistant named SmolLM, trained by Hugging Face",
             "assistant user system\n\n" * 5, "The quick brown fox jumps over the lazy dog. " * 3]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=480, show_progress=False,
                             special_tokens=[AddedToken(s, special=True) for s in specials],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text * 20, tr)
    if bos:  # Meta's Llama 3 tokenizer.json: BOS prepended by the post-processor
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    tok.save(path)
    return tok


def hf_tokenizer(path, family):
    from transformers import PreTrainedTokenizerFast
    if family == "llama3":
        import trl
        src = os.path.join(os.path.dirname(trl.__file__), "chat_templates", "llama3_training.jinja")
        with open(src) as f:
            template = f.read()
        t = PreTrainedTokenizerFast(tokenizer_file=path, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    else:
        template = SMOLLM2_GEN  # SmolLM2's tokenizer_config.json: eos_token (and pad) <|im_end|>
        t = PreTrainedTokenizerFast(tokenizer_file=path, eos_token="<|im_end|>")
    t.chat_template = template
    t.pad_token = t.eos_token
    return t


def build_model(path, vocab, seed=7):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**SPEC, vocab_size=vocab, attention_bias=False, mlp_bias=False, hidden_act="silu",
                      use_cache=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so the losses are not all ~log(V)
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
            elif p.ndim == 2:
                p.mul_(4.0)
    model.save_pretrained(path)


def load_model(path):
    import torch
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


# ---------------------------------------------------------------- (a) data

def trl_processed(hft, model, rows, work, **cfg):
    """SFTTrainer's processed train_dataset: (input_ids, labels != -100) per example."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    args = SFTConfig(output_dir=os.path.join(work, "trl_out"), packing=False, max_length=None, report_to=[],
                     use_cpu=True, shuffle_dataset=False, **cfg)
    tr = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=hft)
    return [(list(x["input_ids"]), [int(v != -100) for v in x["labels"]]) for x in tr.train_dataset]


def part_a(llamac, work, fam, tpath, hft, hf, model):
    cases = [("messages", [{"messages": c} for c in CONVS], dict(assistant_only_loss=True)),
             ("prompt-completion (messages)", [{"prompt": p, "completion": c} for p, c in PAIRS], {})]
    # string pairs: TRL appends the tokenizer's eos_token, llamac the EOS tokenizer_config.json beside
    # tokenizer.json names (<|end_of_text|> with Llama 3, SmolLM2's <|im_end|> with ChatML)
    cases.append(("prompt-completion (strings)", [{"prompt": p, "completion": c} for p, c in TEXT_PAIRS], {}))
    out = {}
    for tag, rows, cfg in cases:
        data = os.path.join(work, f"{fam}_{tag.split()[0]}_{len(rows)}.jsonl")
        write_jsonl(data, rows)
        dump = data + ".dump"
        r = run(llamac, "sft", "--model", hf, "--tokenizer", tpath, "--data", data, "--template", fam,
                "--dump", dump)
        if not check(f"{fam} {tag}: llamac sft --dump runs", r.returncode == 0):
            continue
        got = [(d["ids"], d["mask"]) for d in read_jsonl(dump)]
        want = trl_processed(hft, model, rows, work, **cfg)
        check(f"{fam} {tag}: {len(want)} examples, as TRL", len(got) == len(want), f"{len(got)} vs {len(want)}")
        for k, (g, w) in enumerate(zip(got, want)):
            check(f"{fam} {tag} {k}: ids equal TRL's input_ids ({len(w[0])} tokens)", g[0] == w[0],
                  f"\n  got  {g[0]}\n  want {w[0]}\n  text {hft.decode(w[0])!r}")
            check(f"{fam} {tag} {k}: mask equals TRL's labels != -100 ({sum(w[1])} trained)", g[1] == w[1],
                  f"\n  got  {g[1]}\n  want {w[1]}")
        if fam == "llama3":
            check(f"{fam} {tag}: one BOS per example, first",
                  all(ids[0] == hft.bos_token_id and ids.count(hft.bos_token_id) == 1 for ids, _ in got))
        out[tag] = data
    return out


# ---------------------------------------------------------------- (b) loss

def first_step_loss(llamac, work, tag, hf, tpath, fam, data, packing, seq):
    """llamac's loss of step 1 (before any update) over every row of data, in one step."""
    base = ["sft", "--model", hf, "--tokenizer", tpath, "--data", data, "--template", fam, "--seq", seq,
            "--packing", packing, "--steps", 1, "--lr", 1e-6, "--peak-gflops", 1, "--out",
            os.path.join(work, f"{tag}.h5"), "--ckpt-dir", os.path.join(work, f"{tag}_ck")]
    rows_m = None
    r = run(llamac, *base, "--batch", 1)  # prints "... N rows of T (packed|padded ...)"
    shutil.rmtree(os.path.join(work, f"{tag}_ck"), ignore_errors=True)
    if r.returncode == 0:
        rows_m = re.search(r"(\d+) rows of", r.stdout)
    if not rows_m:
        return None, None
    nrows = int(rows_m.group(1))
    met = os.path.join(work, f"{tag}.jsonl")
    if os.path.exists(met):
        os.remove(met)
    r = run(llamac, *base, "--batch", nrows, "--metrics", met)
    if r.returncode != 0:
        return None, nrows
    return read_jsonl(met)[0]["loss"], nrows


def reference_loss(model, examples):
    """Mean cross-entropy over every trained token of every example, each
    example on its own (labels -100 where untrained; transformers shifts)."""
    import torch
    import torch.nn.functional as F
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex["ids"]])
            labels = torch.tensor([[t if k else -100 for t, k in zip(ex["ids"], ex["mask"])]])
            logits = model(input_ids=ids, use_cache=False).logits.double()
            V = logits.shape[-1]
            total += F.cross_entropy(logits[0, :-1].reshape(-1, V), labels[0, 1:], ignore_index=-100,
                                     reduction="sum").item()
            count += int((labels[0, 1:] != -100).sum())
            # transformers' own loss on the example agrees with the hand-shifted one
            hl = model(input_ids=ids, labels=labels, use_cache=False).loss.item()
            n = int((labels[0, 1:] != -100).sum())
            assert n == 0 or abs(hl - F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100).item()) \
                < 1e-4 * max(1.0, abs(hl)), "transformers' shifted loss"
    return total / count


def part_b(llamac, work, fam, tpath, hf, data):
    model = load_model(hf)
    dump = data + ".dump"
    examples = read_jsonl(dump)
    ref = reference_loss(model, examples)
    for packing in (0, 1):
        tag = f"b_{fam}_p{packing}"
        loss, nrows = first_step_loss(llamac, work, tag, hf, tpath, fam, data, packing, 128)
        if not check(f"{fam} loss, packing {packing}: llamac sft ran ({nrows} rows)", loss is not None):
            continue
        rel = abs(loss - ref) / abs(ref)
        check(f"{fam} loss, packing {packing}: llamac {loss:.7f} == transformers (labels -100) {ref:.7f} "
              f"(rel {rel:.1e})", rel <= REL, f"exceeds {REL}")
        if packing:
            check(f"{fam} loss, packed: {len(examples)} examples share {nrows} rows", nrows < len(examples))


# ---------------------------------------------------------------- (c) training

def sched_lr(step, lr, warmup, total, min_frac, warmup_frac):
    """optim/sched.c: warmup capped at floor(warmup_frac * total), then cosine to min_frac * lr."""
    warmup = min(warmup, math.floor(warmup_frac * total))
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    p = min((step - warmup) / span, 1.0)
    lo = min_frac * lr
    return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


def part_c(llamac, work, fam, tpath, hf, data, pad):
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    STEPS, LR, WARMUP, WFRAC, MINF, WD, CLIP, B, T, ACCUM = 10, 3e-3, 3, 0.5, 0.1, 0.1, 1.0, 2, 128, 2
    cases = [("qkvo", dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
              ["--lora-r", 4, "--lora-alpha", 8]),
             # PEFT 0.21.2 saves target_modules="all-linear" on a model with fewer
             # than 20 linear layers as the list of full module names
             # ("model.layers.0.self_attn.k_proj", ...), which llamac's PEFT
             # reader refuses (train/io/peft.c takes short names); the short names
             # of every linear layer are the same adapter
             ("all_rs", dict(r=3, lora_alpha=6, use_rslora=True, target_modules=[
                 "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
              ["--lora-r", 3, "--lora-alpha", 6, "--lora-targets", "all-linear", "--rslora", 1])]
    for i, (tag, kw, flags) in enumerate(cases):
        name = f"{fam} LoRA {tag}"
        init = os.path.join(work, f"c_{fam}_{tag}_init")
        shutil.rmtree(init, ignore_errors=True)
        pm = get_peft_model(load_model(hf), LoraConfig(task_type="CAUSAL_LM", **kw))
        torch.manual_seed(50 + i)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(0.1 * torch.randn(p.shape))
        pm.save_pretrained(init)
        out_ad = os.path.join(work, f"c_{fam}_{tag}_out")
        shutil.rmtree(out_ad, ignore_errors=True)
        met, bat = os.path.join(work, f"c_{fam}_{tag}.jsonl"), os.path.join(work, f"c_{fam}_{tag}.batches")
        for p in (met, bat):
            if os.path.exists(p):
                os.remove(p)
        r = run(llamac, "sft", "--model", hf, "--tokenizer", tpath, "--data", data, "--template", fam,
                "--seq", T, "--batch", B, "--batch-tokens", B * T * ACCUM, "--steps", STEPS, "--lr", LR,
                "--warmup", WARMUP, "--warmup-frac", WFRAC, "--lr-min-frac", MINF, "--weight-decay", WD,
                "--clip", CLIP, "--seed", 11, "--peak-gflops", 1, *flags, "--lora-init", init,
                "--adapter-out", out_ad, "--metrics", met, "--dump-batches", bat,
                "--ckpt-dir", os.path.join(work, f"c_{fam}_{tag}_ck"), "--out", os.path.join(work, "c.h5"))
        if not check(f"{name}: llamac sft --lora-init PEFT_DIR runs {STEPS} steps", r.returncode == 0):
            continue
        steps = [x for x in read_jsonl(met) if "grad_norm" in x]
        losses, norms = [x["loss"] for x in steps], [x["grad_norm"] for x in steps]
        batches = read_jsonl(bat)
        if not check(f"{name}: {STEPS * ACCUM} micro-batches dumped", len(batches) == STEPS * ACCUM and
                     len(losses) == STEPS, f"{len(batches)} batches, {len(losses)} losses"):
            continue
        # an example (not padding, whose token is the pad id) starting inside a row
        packed = sum(1 for b in batches for k in range(1, B * T) if k % T and b["pos"][k] == 0
                     and b["tokens"][k] != pad)
        check(f"{name}: the batches are packed (several examples per row)", packed > 0)

        ref = PeftModel.from_pretrained(load_model(hf), init, is_trainable=True)
        ref.train()  # dropout 0: train mode changes nothing but is what training uses
        params = [p for n, p in ref.named_parameters() if p.requires_grad]
        assert params and all("lora_" in n for n, p in ref.named_parameters() if p.requires_grad)
        opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), eps=1e-5, weight_decay=WD, foreach=False)
        ref_losses, ref_norms = [], []
        for s in range(STEPS):
            mbs = batches[s * ACCUM:(s + 1) * ACCUM]
            ntgt = sum(sum(1 for t in b["targets"] if t != -1) for b in mbs)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for b in mbs:
                tok = torch.tensor(b["tokens"]).view(B, T)
                tgt = torch.tensor(b["targets"]).view(B, T)
                pos = torch.tensor(b["pos"]).view(B, T)
                doc = torch.cumsum((pos == 0).long(), dim=1)
                logits = ref(input_ids=tok, position_ids=pos, attention_mask=doc_mask(doc), use_cache=False).logits
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-1,
                                       reduction="sum") / ntgt
                loss.backward()
                total += loss.item()
            ref_norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
            for g in opt.param_groups:
                g["lr"] = sched_lr(s, LR, WARMUP, STEPS, MINF, WFRAC)
            opt.step()
            ref_losses.append(total)
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
        check(f"{name}: {STEPS} losses equal PEFT + torch AdamW (worst rel {worst:.1e}; "
              f"{ref_losses[0]:.4f} -> {ref_losses[-1]:.4f})", worst <= REL,
              f"\n  llamac {losses}\n  torch  {ref_losses}")
        check(f"{name}: the loss falls", ref_losses[-1] < ref_losses[0])
        # grad_norm is written with 6 decimals
        gworst = max(abs(a - b) for a, b in zip(norms, ref_norms))
        check(f"{name}: pre-clip gradient norms equal torch's (worst |diff| {gworst:.1e}; clipped at steps "
              f"{[k for k, g in enumerate(ref_norms) if g > CLIP]})", gworst <= 1e-6 + REL * max(ref_norms),
              f"\n  llamac {norms}\n  torch  {ref_norms}")
        if tag == "qkvo":  # both branches of the clip (norms here ~0.8-1.15; all_rs clips every step)
            nclip = sum(g > CLIP for g in ref_norms)
            check(f"{name}: clipping active on {nclip} of {STEPS} steps", 0 < nclip < STEPS)
        ref_dir = os.path.join(work, f"c_{fam}_{tag}_ref")
        ref.save_pretrained(ref_dir)
        got = load_file(os.path.join(out_ad, "adapter_model.safetensors"))
        want = load_file(os.path.join(ref_dir, "adapter_model.safetensors"))
        start = load_file(os.path.join(init, "adapter_model.safetensors"))
        if not check(f"{name}: the adapter has PEFT's {len(want)} tensors", set(got) == set(want),
                     f"{sorted(set(got) ^ set(want))[:6]}"):
            continue
        errs = {k: float((got[k] - want[k]).abs().max() / want[k].abs().max()) for k in want}
        k_worst = max(errs, key=errs.get)
        check(f"{name}: final adapter equals PEFT's (worst rel {errs[k_worst]:.1e}, {k_worst})",
              errs[k_worst] <= REL, f"exceeds {REL}")
        moved = min(float((want[k] - start[k]).abs().max() / start[k].abs().max()) for k in want)
        check(f"{name}: every tensor moved in training (least {moved:.1e} relative)", moved > 100 * REL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_sft_ref")
    args = ap.parse_args()
    llamac = os.path.abspath(args.llamac)
    os.makedirs(args.work, exist_ok=True)
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for fam, specials, bos in (("llama3", LLAMA3_SPECIALS, "<|begin_of_text|>"), ("chatml", CHATML_SPECIALS, None)):
        print(f"== {fam}")
        work = os.path.join(args.work, fam)
        os.makedirs(work, exist_ok=True)
        tpath = os.path.join(work, "tokenizer.json")
        tok = train_tokenizer(tpath, specials, bos)
        hft = hf_tokenizer(tpath, fam)
        # a Hugging Face tokenizer directory: tokenizer_config.json beside
        # tokenizer.json names the specials (llamac reads bos/eos from it)
        with open(os.path.join(work, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": hft.bos_token, "eos_token": hft.eos_token}, f)
        hf = os.path.join(work, "model_hf")
        shutil.rmtree(hf, ignore_errors=True)
        build_model(hf, tok.get_vocab_size())
        model = load_model(hf)
        data = part_a(llamac, work, fam, tpath, hft, hf, model)
        if "messages" in data:
            part_b(llamac, work, fam, tpath, hf, data["messages"])
            part_c(llamac, work, fam, tpath, hf, data["messages"], hft.eos_token_id)  # llamac pads with EOS
    for k in KNOWN:
        print(f"KNOWN {k}")
    return summary("test_sft_ref")


if __name__ == "__main__":
    sys.exit(main())
