# llamac: one Makefile, no configure. `make help` lists the targets.
#
# Overrides (make VAR=value):
#   NATIVE=1   compile C with -march=native (off: the binary runs on any x86-64)
#   DEBUG=1    -O0 -g and LC_DASSERT checks on
#   SAN=1      AddressSanitizer + UBSan build in build-san/
#   WERROR=1   warnings are errors (CI sets it)
#   CUDA=1     also build the CUDA backend (bf16, cuBLASLt; --device cuda):
#              use BUILD=build-cuda or similar; needs nvcc and CUDA_HOME
#              (default /usr/local/cuda; scripts/device_build.sh sets the
#              paths on the GPU machine). Default 0: `make` never needs nvcc.
#   CUDA_HOME, CUDA_INC, CUDA_LIB, CUDNN_INC, CUDNN_LIB, CUDA_ARCH   paths and
#              the nvcc target (default sm_90: H100/H200)
#   V=1        echo the full compile commands
#   MPI=0      build without MPI (dist/dist_none.c: one process)

CC ?= cc
PYTHON ?= python3
BUILD := build
ifeq ($(SAN),1)
BUILD := build-san
endif

# -O3 without -ffast-math: fast-math assumes no NaN/Inf, which would defeat
# the NaN-loss checks and the finite-difference gradient checks.
# -fno-trapping-math says we never enable floating-point traps and
# -fno-math-errno that we never read errno after sqrtf/logf (both true); they
# let GCC if-convert the clamps of the vector exp and vectorise sqrtf in
# AdamW, and change no result.
# -ffp-contract=off is what -std=c11 already implies for GCC; it is spelled
# out because the dequantisers (model/quant*.c) promise gguf-py's bits, and
# a fused d * q + m would round once where gguf-py rounds twice.
FPFLAGS := -fno-trapping-math -fno-math-errno -ffp-contract=off
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O3 $(FPFLAGS) -fopenmp -MMD -MP
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(DEBUG),1)
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O0 -g $(FPFLAGS) -fopenmp -MMD -MP -DLC_DEBUG
endif
ifeq ($(SAN),1)
CFLAGS_BASE += -g -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS_SAN := -fsanitize=address,undefined
endif
ifeq ($(NATIVE),1)
CFLAGS_BASE += -march=native
endif
ifeq ($(WERROR),1)
WARN += -Werror
endif
# inih reads config files, jansson JSONL and tokenizer.json, PCRE2 the
# tokenizers' split regex (Debian: libinih-dev, libjansson-dev, libpcre2-dev).
LDLIBS := -lm -fopenmp -linih -ljansson -lpcre2-8
# Where inih/jansson/PCRE2 live when not in the system paths (the GPU
# machine has no Debian packages: scripts/device_build.sh points these at
# a carried bundle).
SYS_INC ?= /usr/include
SYS_LIB ?=
ifneq ($(SYS_INC),/usr/include)
CFLAGS_BASE += -I$(SYS_INC)
endif
ifneq ($(SYS_LIB),)
LDLIBS += -L$(SYS_LIB) -Wl,-rpath,$(SYS_LIB)
endif

# ---- probes: one line each for what was found -------------------------------
# OpenBLAS built for OpenMP: a GEMM called inside our parallel regions then
# runs on its caller's thread instead of oversubscribing the cores.
OPENBLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
OPENBLAS_INC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
# A fresh machine lacks it: install the Debian packages first (any target but
# clean/help), so `make test` works on a bare machine.
# HDF5 built for OpenMPI (checkpoints; DESIGN.md): Debian's libhdf5-openmpi-dev.
HDF5_INC ?= /usr/include/hdf5/openmpi
HDF5_LIB ?= /usr/lib/x86_64-linux-gnu/hdf5/openmpi
MPI_INC ?= /usr/lib/x86_64-linux-gnu/openmpi/include
REQUIRED := $(OPENBLAS_DIR)/libopenblas.so $(SYS_INC)/ini.h $(SYS_INC)/jansson.h $(SYS_INC)/pcre2.h $(HDF5_INC)/hdf5.h
ifneq ($(words $(wildcard $(REQUIRED))),$(words $(REQUIRED)))
ifeq ($(filter clean help test-gpu bench-gpu cuda-check,$(MAKECMDGOALS)),)
$(info ✗ missing $(filter-out $(wildcard $(REQUIRED)),$(REQUIRED)): running scripts/install_deps.sh)
$(shell bash scripts/install_deps.sh >&2)
endif
endif
ifneq ($(wildcard $(OPENBLAS_DIR)/libopenblas.so),)
$(info ✓ OpenBLAS (OpenMP build): $(OPENBLAS_DIR))
CFLAGS_BASE += -I$(OPENBLAS_INC)
LDLIBS += -L$(OPENBLAS_DIR) -Wl,-rpath,$(OPENBLAS_DIR) -lopenblas
else ifeq ($(filter clean help test-gpu bench-gpu cuda-check,$(MAKECMDGOALS)),)
$(error ✗ OpenBLAS (OpenMP build) not found in $(OPENBLAS_DIR): scripts/install_deps.sh failed)
endif
$(info ✓ OpenMP: $(shell $(CC) -dumpfullversion 2>/dev/null) -fopenmp)
$(info $(if $(wildcard $(SYS_INC)/ini.h),✓,✗) inih (config files), $(if $(wildcard $(SYS_INC)/jansson.h),✓,✗) jansson (JSONL))
CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls $(CUDA_HOME)/bin/nvcc 2>/dev/null)
ifneq ($(NVCC),)
$(info ✓ nvcc: $(NVCC) (CUDA backend: $(if $(filter 1,$(CUDA)),building,make CUDA=1 builds it)))
else
$(info ✗ nvcc: not found (CPU only))
endif
# MPI (data parallelism, dist/dist.c): found through mpicc's own flags;
# MPI=0, or no mpicc, builds dist/dist_none.c (one process, which refuses to
# run as N copies under mpirun).
MPICC := $(if $(filter 0,$(MPI)),,$(shell command -v mpicc 2>/dev/null))
ifneq ($(MPICC),)
$(info ✓ MPI: $(MPICC) (data parallelism: mpirun -np N build/llamac ...))
DIST_SRC := dist/dist.c
CFLAGS_BASE += -DLC_HAVE_MPI $(shell $(MPICC) --showme:compile)
LDLIBS += $(shell $(MPICC) --showme:link 2>/dev/null)
else
$(info ✗ MPI: $(if $(filter 0,$(MPI)),off (MPI=0),mpicc not found) (single process))
DIST_SRC := dist/dist_none.c
endif
ifneq ($(wildcard $(HDF5_INC)/hdf5.h),)
$(info ✓ HDF5 (OpenMPI build): $(HDF5_LIB) (checkpoints))
CFLAGS_BASE += -I$(HDF5_INC) -I$(MPI_INC)
LDLIBS += -L$(HDF5_LIB) -Wl,-rpath,$(HDF5_LIB) -lhdf5
else ifeq ($(filter clean help test-gpu bench-gpu cuda-check,$(MAKECMDGOALS)),)
$(error ✗ HDF5 (OpenMPI build) not found in $(HDF5_INC): scripts/install_deps.sh failed)
endif

# ---- CUDA backend (CUDA=1) ----------------------------------------------------
# The .cu files are C-style CUDA compiled as C++20 (nvcc's dialect; C++20 for
# the designated initialiser of ops_cuda), bf16 kernels for sm_90. Libraries:
# cuBLASLt (GEMMs), cuBLAS (its dependency), cudart. cuDNN is not used yet
# (its SDPA path is not wired in: model/cuda_attn.cu); CUDNN_INC/CUDNN_LIB
# are kept for it. CUB (header-only, in CCCL) sorts token ids for the
# deterministic embedding backward.
CUDA_SRC := model/ops_cuda.cu model/cuda_attn.cu model/cuda_quant.cu model/cuda_kd.cu
# NCCL reductions for data parallelism on GPUs (dist/nccl.h): compiled by
# cuda-check; not linked into CUDA=1 builds until the trainer calls them.
NCCL_SRC := dist/nccl.cu
CUDA_INC ?= $(CUDA_HOME)/include
CUDA_LIB ?= $(CUDA_HOME)/lib64
CUDNN_INC ?= $(CUDA_INC)
CUDNN_LIB ?= $(CUDA_LIB)
CUDA_ARCH ?= -gencode=arch=compute_90,code=sm_90
NVCCFLAGS := -std=c++20 -O3 $(CUDA_ARCH) -DLC_CUDA -I$(CUDA_INC) -I$(CUDNN_INC) \
             -Xcompiler -Wall,-Wextra -MMD -MP $(NVCCFLAGS_EXTRA)
ifeq ($(WERROR),1)
NVCCFLAGS += -Werror all-warnings
endif
ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error ✗ CUDA=1 but nvcc was not found (set NVCC or CUDA_HOME))
endif
CFLAGS_BASE += -DLC_CUDA
LDLIBS += -L$(CUDA_LIB) -Wl,-rpath,$(CUDA_LIB) -L$(CUDNN_LIB) -Wl,-rpath,$(CUDNN_LIB) \
          -lcublasLt -lcublas -lcudart -lstdc++
endif

CFLAGS := $(CFLAGS_BASE) $(WARN)

# ---- sources ----------------------------------------------------------------
LIB_SRC := model/base.c model/config.c model/params.c model/quant.c model/ops_cpu.c model/ops_cpu_engine.c model/ops_cpu_qrows.c model/engine.c model/llama.c model/lora.c model/sample.c \
           data/bpe.c data/bbpe.c data/merges.c data/chunkcache.c data/spm.c data/gguf.c data/tok.c data/chat.c data/shard.c data/shardset.c data/tokstream.c data/loader.c data/jsonl.c data/docstream.c data/wordsplit.c data/textfilter.c data/sft.c data/dpo.c data/pack.c data/prompts.c data/rejection.c data/tcache.c \
           $(DIST_SRC) dist/pp.c optim/adamw.c optim/sched.c \
           train/proc/cli.c train/proc/blas_env.c train/io/ckpt.c train/loop/run.c train/loop/rollout.c \
           train/cmd/cmd_inspect.c train/cmd/cmd_bench.c train/cmd/cmd_tokenize.c train/cmd/cmd_data.c train/cmd/cmd_data_filter.c train/cmd/cmd_data_dedup.c train/cmd/cmd_data_quality.c train/cmd/cmd_pretrain.c train/cmd/cmd_sft.c train/cmd/cmd_dpo.c train/cmd/cmd_reward.c train/cmd/cmd_distill.c train/loop/trainer.c train/loop/ftdata.c train/loop/trdata.c train/loop/pipeline.c train/loop/scorer.c \
           train/cmd/cmd_eval.c train/cmd/cmd_generate.c train/cmd/cmd_chat.c train/cmd/cmd_sample.c train/cmd/cmd_rs.c train/proc/device.c \
           train/io/safetensors.c train/io/gguf.c train/io/hf.c train/io/iofile.c train/io/source.c train/io/peft.c train/cmd/cmd_convert.c train/cmd/cmd_quantize.c train/cmd/cmd_logits.c train/cmd/cmd_score.c
LIB_SRC += data/mixture.c
# pretraining-data dedup and quality classifier (llamac data dedup, quality)
LIB_SRC += data/dedup.c data/qclass.c data/outfile.c
MAIN_SRC := train/main.c
TEST_SRC := tests/test_main.c tests/test_textfilter.c tests/test_ops.c tests/test_model.c tests/test_optim.c \
            tests/test_ref.c tests/test_cli.c tests/gradcheck.c tests/test_data.c tests/test_tokstream.c tests/test_bpe.c \
            tests/test_pipeline.c tests/test_ckpt.c tests/test_convert.c tests/test_spm.c tests/test_tok.c tests/test_chat.c \
            tests/test_lora.c tests/test_sft.c tests/test_dpo.c tests/test_export.c tests/test_gguf.c tests/test_peft.c \
            tests/test_sft_batches.c tests/test_engine.c tests/test_dist.c tests/test_pp.c tests/test_robust.c tests/test_fuzz.c \
            tests/fuzz_targets.c tests/test_sample.c tests/test_cmd_sample.c tests/test_reward.c tests/test_cmd_score.c tests/test_rs.c \
            tests/test_nf4.c tests/test_quant.c tests/test_qlora.c tests/test_mixture.c tests/test_distill.c
# pretraining-data dedup and quality classifier
TEST_SRC += tests/test_dedup.c

# llamac prune (model/prune.c, train/cmd/cmd_prune.c)
LIB_SRC += model/prune.c train/cmd/cmd_prune.c
TEST_SRC += tests/test_prune.c
OBJ := $(BUILD)/obj
# the fused distillation head's rows (lmhead_kd) and its tests
LIB_SRC += model/ops_cpu_kd.c
TEST_SRC += tests/test_kd.c
# online RL (train/cmd/cmd_rl.c; its arithmetic and rewards in train/loop)
LIB_SRC += train/cmd/cmd_rl.c
TEST_SRC += tests/test_rl.c
# the RL arithmetic (GRPO, RLOO, PPO advantages and losses) and its tests
LIB_SRC += train/loop/rlalgo.c
TEST_SRC += tests/test_rlalgo.c
# the rewards of RL completions (reward models, built-in checks, a reward program)
LIB_SRC += train/loop/rewards.c
TEST_SRC += tests/test_rewards.c
LIB_OBJ := $(LIB_SRC:%.c=$(OBJ)/%.o)
ifeq ($(CUDA),1)
LIB_OBJ += $(CUDA_SRC:%.cu=$(OBJ)/%.o)
TEST_SRC += tests/test_gpu.c
endif
ALL_OBJ := $(LIB_OBJ) $(MAIN_SRC:%.c=$(OBJ)/%.o) $(TEST_SRC:%.c=$(OBJ)/%.o) $(OBJ)/dist/dist_none.o

ifneq ($(V),1)
Q := @
endif

.PHONY: all test check-deps test-ref test-full demo demo-sft bench bench-lora bench-sft bench-sample demo-dpo demo-rlhf demo-grpo demo-ppo demo-data demo-distill bench-data bench-dpo bench-reward bench-rl bench-qlora bench-distill bench-dist bench-tokenize clean help deps cuda-check test-gpu bench-gpu \
        fuzz fuzz-build fuzz-deps

all: $(BUILD)/llamac $(BUILD)/tests $(if $(MPICC),$(BUILD)/llamac-nompi)

# Changing flags rebuilds everything (Redis's .make-settings).
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(LDLIBS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(LDLIBS)' > $@
FORCE:

$(OBJ)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(OBJ)/%.o: %.cu $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/llamac: $(LIB_OBJ) $(OBJ)/train/main.o
	$(Q)$(CC) $^ -o $@ $(LDFLAGS_SAN) $(LDLIBS)
$(BUILD)/tests: $(LIB_OBJ) $(TEST_SRC:%.c=$(OBJ)/%.o)
	$(Q)$(CC) $^ -o $@ $(LDFLAGS_SAN) $(LDLIBS)
# The same objects with dist_none.c instead of dist.c: what a build without
# MPI does under mpirun (tests/test_dist.c checks it refuses to run).
$(BUILD)/llamac-nompi: $(filter-out $(OBJ)/dist/dist.o,$(LIB_OBJ)) $(OBJ)/dist/dist_none.o $(OBJ)/train/main.o
	$(Q)$(CC) $^ -o $@ $(LDFLAGS_SAN) $(LDLIBS)

deps:
	@bash scripts/install_deps.sh

# The quick tier CI runs: every link of the Markdown pages (after a self-test
# that proves the checker fails on a broken link), the module graph
# (check-deps), then C unit tests, gradient checks, the committed PyTorch
# fixtures and the command-line error paths; the C suite's "N passed, N
# failed" stays the last line.
test: all check-deps
	$(Q)python3 scripts/check_links.py --self-test
	$(Q)python3 scripts/check_links.py
	$(Q)$(BUILD)/tests

# No two modules depend on each other, directly or round a loop, and the
# folders keep their order (STYLE.md, "Layout and layering"): includes read
# from the sources, calls from nm on the built objects (scripts/check_deps.py;
# its --self-test first checks that it finds a planted loop).
check-deps: all
	$(Q)$(PYTHON) scripts/check_deps.py --self-test
	$(Q)$(PYTHON) scripts/check_deps.py --root . --obj $(OBJ)

# Regenerate the PyTorch reference fixtures with transformers (PyPI, cached
# in ~/.cache/llamac-venv) and fail if they drift from the committed ones.
test-ref: all
	$(Q)LLAMAC=$(BUILD)/llamac bash scripts/test_ref.sh

test-full: test test-ref

demo: all
	$(Q)bash scripts/demo.sh

# LoRA fine-tuning of SmolLM2-135M-Instruct (GGUF from PyPI) on WordNet
# definitions (Debian's wordnet-base): answers before and after, the adapter.
demo-sft: all
	$(Q)bash scripts/demo_sft.sh

# DPO on demo-sft's fine-tuned model (run first if missing) with WordNet
# preference pairs: held-out reward accuracy, answers before and after.
demo-dpo: all
	$(Q)bash scripts/demo_dpo.sh

# Reward model on WordNet preference pairs from demo-sft's model (run first
# if missing), then two rounds of rejection sampling with it: held-out
# reward-model accuracy, held-out reward of the greedy answers before and
# after, the best/median-of-k curves.
demo-rlhf: all
	$(Q)bash scripts/demo_rlhf.sh

# PPO (llamac rl --algo ppo) of demo-sft's model on demo-rlhf's reward model
# (its steps up to the reward model run first if missing): reward and KL per
# rollout, held-out reward and answers before and after, curves.png
# (scripts/demo_ppo.sh; sizes are variables: ROLLOUTS=16 make demo-ppo).
demo-ppo: all
	$(Q)bash scripts/demo_ppo.sh

# The pretraining-data steps on the demo corpus before tokenising (dedup when
# built, then the Gopher and C4 filters), with what each kept and dropped.
demo-data: all
	$(Q)bash scripts/demo_data.sh

# SmolLM2-135M-Instruct pruned to half its non-embedding parameters (width
# and depth), then trained on the demo corpus for the same tokens with
# cross-entropy only and with distillation from the full model: a held-out
# loss table and curves in build/distill_demo (scripts/demo_distill.sh; its
# sizes are variables: STEPS=8 make demo-distill).
demo-distill: all
	$(Q)bash scripts/demo_distill.sh

# GRPO with a verifiable reward (WordNet categories) on SmolLM2-135M-Instruct
# with LoRA: held-out reward before and after, the reward and KL curves
# (docs/rl.md; STEPS=12 by default).
demo-grpo: all
	$(Q)bash scripts/demo_grpo.sh

# llamac data steps against datatrove on the same documents and cores:
# docs/s and peak RSS (scripts/bench_data.py; BENCH_DATA_ARGS="--docs 2000"
# for a quick one).
bench-data: all
	$(Q)$(HOME)/.cache/llamac-venv/bin/python scripts/bench_data.py $(BENCH_DATA_ARGS)

# llamac dpo against TRL's DPOTrainer + PEFT on this CPU: tokens/s, peak RSS.
bench-dpo: all
	$(Q)$(HOME)/.cache/llamac-venv/bin/python scripts/bench_dpo.py $(BENCH_DPO_ARGS)

# llamac reward against TRL's RewardTrainer (full and LoRA r 16) on SmolLM2-135M
# on this CPU: tokens/s and peak RSS, medians of 3 rounds; then one round of
# llamac rs (samples/s, the time split into sampling, scoring, training). The
# tables also go to bench/results/cpu-<date>-reward.txt. BENCH_REWARD_ARGS="--steps 2
# --warmup 1 --rounds 1 --configs lora" for a quick one.
bench-reward: all
	$(Q)python3 scripts/bench_reward.py $(BENCH_REWARD_ARGS)

# Step benchmark against PyTorch on this CPU, with the SGEMM peak; tokenizer
# encoding speed against tokenizers / tiktoken / sentencepiece (bench_tok.py).
bench: all
	$(Q)bash scripts/bench.sh

# LoRA training step against transformers + PEFT on this CPU (15m/42m/110m at
# T 256 and 1024, r 16 on q,k,v,o and all-linear), with llamac's full step and
# recomputation beside it; BENCH_LORA_ARGS="--configs 15m:256:8 --rounds 1"
# for a quick one. Also part of `make bench` with BENCH_LORA=1.
bench-lora: all
	$(Q)python3 scripts/bench_lora.py $(BENCH_LORA_ARGS)

# LoRA SFT of SmolLM2-135M-Instruct against TRL SFTTrainer + PEFT on this CPU
# (scripts/bench_sft.py; TRL from the reference venv). Quick by default;
# BENCH_SFT_ARGS="--steps 10 --rounds 5" for the README's numbers.
bench-sft: all
	$(Q)python3 scripts/bench_sft.py $(BENCH_SFT_ARGS)

# The sampling engine against llama.cpp and transformers on SmolLM2-135M-Instruct
# (F32, 2 threads each; scripts/bench_sample.py): decode tok/s of one sequence,
# batched sampling tok/s, time to first token, peak RSS, the memory bandwidth.
# Builds llama.cpp's Python binding from source into ~/.cache/llamac-venv-llamacpp
# the first time (scripts/venv_llamacpp.sh, 15-30 minutes on 2 cores).
# BENCH_SAMPLE_ARGS passes through (e.g. "--rounds 5", "--scenarios a,c").
bench-sample: all
	$(Q)bash scripts/bench_sample.sh $(BENCH_SAMPLE_ARGS)

# QLoRA (scripts/bench_qlora.py): SmolLM2-135M's Q4_1 GGUF trained with
# --base-quant keep against float32 LoRA, against PEFT + bitsandbytes NF4
# (and llamac --base-quant nf4); one step of a random Llama 3.2 1B shape as
# Q4_K_M at T 2048 (peak RSS); decoding with --quant keep against llama.cpp
# on the Q4_1 and a Q8_0 file. Into bench/results/cpu-<date>-qlora.txt.
# BENCH_QLORA_ARGS="--parts keep --steps 2 --rounds 1" for a quick one.
bench-qlora: all
	$(Q)python3 scripts/bench_qlora.py $(BENCH_QLORA_ARGS)

# Distillation (scripts/bench_distill.py): SmolLM2-135M teacher -> its
# width-pruned half, full training, B 4, T 256: llamac distill with an online
# teacher (float32; Q4_1 held as its own types), with a top-50 teacher cache
# (its write time and bytes/token) and with no teacher, against torchtune
# 0.6.1's KD step and its CE-only step on the same shapes: tokens/s, peak RSS.
# Into bench/results/cpu-<date>-distill.txt. BENCH_DISTILL_ARGS="--batch 1
# --seq 32 --steps 1 --warmup 1 --rounds 1 --sgemm 256" for a quick one.
bench-distill: all
	$(Q)python3 scripts/bench_distill.py $(BENCH_DISTILL_ARGS)

# Online RL (scripts/bench_rl.py): llamac rl --algo grpo against TRL 1.16.0's
# GRPOTrainer, --algo ppo against TRL 1.12.0's PPOTrainer (its venv from
# scripts/venv_trl112.sh; the PPO rows are skipped without it), SmolLM2-135M,
# LoRA r 16 on all linear layers, P 4 prompts x G 4 completions of at most 24
# tokens per step: seconds per step split into generation, reward and
# training, peak RSS, medians of 3 rounds. Into bench/results/cpu-<date>-rl.txt.
# BENCH_RL_ARGS="--algos grpo --steps 1 --warmup 1 --rounds 1
# --prompts-per-step 2" for a quick one (about 2 minutes on 2 cores).
bench-rl: all
	$(Q)python3 scripts/bench_rl.py $(BENCH_RL_ARGS)

# Data parallelism over MPI (scripts/bench_dist.py): bytes sent per step per
# rank on the wire (loopback TCP) against the ring bound, tokens/s of 2
# ranks x 1 thread against 1 rank x 2 threads, AdamW memory with ZeRO-1;
# pipeline idle time against the bubble, activation memory, PP 2 against
# DP 2, a timeline PNG (BENCH_DIST_ARGS=--pp-only for that part alone).
bench-dist: all
	$(Q)LLAMAC=$(BUILD)/llamac python3 scripts/bench_dist.py $(BENCH_DIST_ARGS)

# tokenize encode on every core vs Hugging Face tokenizers encode_batch on the
# same threads, tokenizer.json and demo text repeated to 250 MB (MB/s, peak
# RSS, 1 thread vs all), and llamac's peak RSS per corpus size
# (scripts/bench_tokenize.py). BENCH_TOKENIZE_ARGS="--sizes 250,2500" for the
# bounded-memory check; "--sizes 2" for a quick one.
bench-tokenize: all
	$(Q)$(HOME)/.cache/llamac-venv/bin/python scripts/bench_tokenize.py --llamac $(BUILD)/llamac $(BENCH_TOKENIZE_ARGS)

# CI without a GPU: compile every .cu with warnings as errors, so the CUDA
# backend never rots (nothing runs).
cuda-check:
	@test -n "$(NVCC)" || { echo "cuda-check: skipped, nvcc not found"; exit 0; }
	@mkdir -p $(BUILD)/cuda-check
	$(Q)for f in $(CUDA_SRC) $(NCCL_SRC); do echo "  NVCC $$f"; \
	  $(NVCC) $(NVCCFLAGS) -Werror all-warnings -Xcompiler -Werror -c $$f -o $(BUILD)/cuda-check/$$(basename $$f .cu).o || exit 1; done

# The GPU tiers: every CUDA op against the CPU op, a training step, and the
# 300-step loss curve (scripts/gpu_check.sh); the step benchmark against
# PyTorch (scripts/bench_gpu.py). Both skip with a message (exit 0) where no
# GPU is present. They build into build-cuda/ (CUDA=1).
GPU_PRESENT = $(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo 1)
# On the lent GPU machine (no Debian packages) the build goes through
# scripts/device_build.sh and its carried bundle of CPU libraries.
GPU_BUILD = if [ -f build-devdeps/cpu-deps.tar.xz ] && [ ! -e $(OPENBLAS_DIR)/libopenblas.so ]; \
	then bash scripts/device_build.sh build; else $(MAKE) --no-print-directory CUDA=1 BUILD=build-cuda all; fi
GPU_ENV = if [ -f build-cuda/env.sh ]; then . build-cuda/env.sh; fi
test-gpu:
ifeq ($(GPU_PRESENT),1)
	$(Q)$(GPU_BUILD)
	$(Q)$(GPU_ENV); build-cuda/tests gpu_
	$(Q)$(GPU_ENV); LLAMAC=build-cuda/llamac bash scripts/gpu_check.sh
else
	@echo "SKIP test-gpu: no CUDA GPU here (nvidia-smi finds none)"
endif

bench-gpu:
ifeq ($(GPU_PRESENT),1)
	$(Q)$(GPU_BUILD)
	$(Q)$(GPU_ENV); LLAMAC=build-cuda/llamac $(PYTHON) scripts/bench_gpu.py
else
	@echo "SKIP bench-gpu: no CUDA GPU here (nvidia-smi finds none)"
endif

# ---- fuzzing: libFuzzer harnesses (clang, ASan + UBSan) in build-fuzz/ --------
# One binary per parser (tests/fuzz_targets.c), each run for FUZZ_SECONDS from
# its committed seed corpus tests/fuzz/<target>/ (scripts/fuzz.sh; new corpus
# entries go to build-fuzz/corpus/, crashers to build-fuzz/crash/). clang is
# installed here only (scripts/install_fuzz_deps.sh), never for `make`.
# FUZZ_TARGETS=gguf picks some; FUZZ_JOBS runs that many at once (default 1).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 180
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?= tok_llamac tokenizer_json tiktoken spm shard hf ckpt ini jsonl chat_jsonl gguf peft sft dpo prompts reward_spec
FUZZ_BUILD := build-fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
# -O1 -g: libFuzzer's recommendation (fast enough, exact reports); no
# -Werror: these are clang's warnings, the gate is gcc's.
FUZZ_CFLAGS := $(filter-out -O3 -O0 -MMD -MP,$(CFLAGS_BASE)) -O1 -g -fno-omit-frame-pointer \
               $(filter-out -Werror,$(WARN)) -fsanitize=fuzzer-no-link $(FUZZ_SAN)
FUZZ_OBJS := $(LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_BUILD)/obj/tests/fuzz_targets.o
.SECONDARY: $(FUZZ_OBJS)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: tests/fuzz_main.c $(FUZZ_OBJS)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_NAME='"$*"' tests/fuzz_main.c $(FUZZ_OBJS) -o $@ \
	    -fsanitize=fuzzer $(FUZZ_SAN) $(LDLIBS)

fuzz-deps:
	@bash scripts/install_fuzz_deps.sh

fuzz-build: fuzz-deps
	$(Q)$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

fuzz: fuzz-build
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) bash scripts/fuzz.sh $(FUZZ_TARGETS)

-include $(wildcard $(FUZZ_BUILD)/obj/*/*.d $(FUZZ_BUILD)/obj/*/*/*.d)

clean:
	rm -rf build build-san build-cuda build-fuzz

help:
	@echo "make            build build/llamac and build/tests"
	@echo "make test       quick tests (what CI runs; ends with 'N passed, N failed')"
	@echo "make check-deps no loops between modules, folders in order (includes + nm; part of make test)"
	@echo "make test-ref   regenerate PyTorch fixtures and compare to the committed ones"
	@echo "make bench      training-step benchmark vs PyTorch, with the SGEMM peak; tokenizer MB/s"
	@echo "make bench-lora LoRA step vs transformers + PEFT, tokens/s and peak RSS (BENCH_LORA=1 make bench too)"
	@echo "make bench-sft  LoRA SFT of SmolLM2-135M vs TRL SFTTrainer + PEFT: tokens/s, peak RSS"
	@echo "make bench-sample llamac sample vs llama.cpp and transformers on SmolLM2-135M: decode and batched"
	@echo "                tok/s, time to first token, peak RSS, memory bandwidth (BENCH_SAMPLE_ARGS)"
	@echo "make bench-dist MPI data parallelism: bytes/step vs the ring bound, 2 ranks vs 2 threads, ZeRO-1 memory;"
	@echo "                pipeline idle vs the bubble, activation memory, PP 2 vs DP 2 (BENCH_DIST_ARGS=--pp-only)"
	@echo "make bench-tokenize tokenize encode vs tokenizers encode_batch: MB/s, peak RSS, 1 vs all threads;"
	@echo "                peak RSS by corpus size (BENCH_TOKENIZE_ARGS=\"--sizes 250,2500\")"
	@echo "make demo       train the tiny model on the CPU and show the loss fall"
	@echo "make demo-sft   LoRA fine-tuning of SmolLM2-135M-Instruct on WordNet definitions"
	@echo "make demo-dpo   DPO of the SFT demo's model on WordNet preference pairs (held-out reward accuracy)"
	@echo "make demo-rlhf  reward model + rejection sampling on the SFT demo's model (held-out accuracy and reward)"
	@echo "make demo-grpo  GRPO with a verifiable reward on SmolLM2 + LoRA (held-out reward before and after)"
	@echo "make demo-ppo   PPO of the SFT demo's model on demo-rlhf's reward model (reward and KL per rollout, held-out reward)"
	@echo "make demo-data  dedup + Gopher/C4 quality filters on the demo corpus, then tokenise (counts per rule)"
	@echo "make demo-distill  SmolLM2-135M pruned to half, trained back with CE vs distillation (held-out loss table)"
	@echo "make bench-data llamac data steps vs datatrove on the same documents: docs/s, peak RSS (BENCH_DATA_ARGS)"
	@echo "make bench-dpo  llamac dpo vs TRL DPOTrainer + PEFT on this CPU: tokens/s, peak RSS"
	@echo "make bench-qlora QLoRA (--base-quant keep/nf4) vs float LoRA and PEFT + bitsandbytes; 1B Q4_K_M RSS;"
	@echo "                decoding --quant keep vs llama.cpp; into bench/results/cpu-<date>-qlora.txt"
	@echo "make bench-reward llamac reward vs TRL RewardTrainer on SmolLM2-135M, full and LoRA: tokens/s,"
	@echo "                peak RSS; llamac rs samples/s by phase; into bench/results/cpu-<date>-reward.txt"
	@echo "make bench-rl   llamac rl (GRPO, PPO) vs TRL GRPOTrainer / PPOTrainer on SmolLM2-135M: s/step split"
	@echo "                into generation, reward, training; peak RSS; into bench/results/cpu-<date>-rl.txt"
	@echo "make bench-distill llamac distill (online teacher, teacher cache, none) vs torchtune's KD step:"
	@echo "                tokens/s, peak RSS, cache bytes/token; into bench/results/cpu-<date>-distill.txt"
	@echo "make deps       install Debian packages the build needs"
	@echo "make CUDA=1 BUILD=build-cuda   also build the CUDA backend (--device cuda)"
	@echo "make cuda-check compile the CUDA sources with warnings as errors (no GPU needed)"
	@echo "make test-gpu   CUDA ops vs CPU, a training step, a 300-step loss curve (skips without a GPU)"
	@echo "make bench-gpu  step benchmark against PyTorch on the GPU (skips without a GPU)"
	@echo "make fuzz       libFuzzer + ASan/UBSan on every file parser, FUZZ_SECONDS each (default 180; clang)"
	@echo "overrides: NATIVE=1 DEBUG=1 SAN=1 WERROR=1 V=1 CUDA=1 MPI=0"

-include $(ALL_OBJ:.o=.d)
