# llamac: one Makefile, no configure. `make help` lists the targets.
#
# Overrides (make VAR=value):
#   NATIVE=1   compile C with -march=native (off: the binary runs on any x86-64)
#   DEBUG=1    -O0 -g and LC_DASSERT checks on
#   SAN=1      AddressSanitizer + UBSan build in build-san/
#   WERROR=1   warnings are errors (CI sets it)
#   CUDA=0|1|auto  build the CUDA backend (auto: when nvcc is found; later issue)
#   V=1        echo the full compile commands

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
FPFLAGS := -fno-trapping-math -fno-math-errno
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
REQUIRED := $(OPENBLAS_DIR)/libopenblas.so /usr/include/ini.h /usr/include/jansson.h /usr/include/pcre2.h $(HDF5_INC)/hdf5.h
ifneq ($(words $(wildcard $(REQUIRED))),$(words $(REQUIRED)))
ifeq ($(filter clean help,$(MAKECMDGOALS)),)
$(info ✗ missing $(filter-out $(wildcard $(REQUIRED)),$(REQUIRED)): running scripts/install_deps.sh)
$(shell bash scripts/install_deps.sh >&2)
endif
endif
ifneq ($(wildcard $(OPENBLAS_DIR)/libopenblas.so),)
$(info ✓ OpenBLAS (OpenMP build): $(OPENBLAS_DIR))
CFLAGS_BASE += -I$(OPENBLAS_INC)
LDLIBS += -L$(OPENBLAS_DIR) -Wl,-rpath,$(OPENBLAS_DIR) -lopenblas
else ifeq ($(filter clean help,$(MAKECMDGOALS)),)
$(error ✗ OpenBLAS (OpenMP build) not found in $(OPENBLAS_DIR): scripts/install_deps.sh failed)
endif
$(info ✓ OpenMP: $(shell $(CC) -dumpfullversion 2>/dev/null) -fopenmp)
$(info $(if $(wildcard /usr/include/ini.h),✓,✗) inih (config files), $(if $(wildcard /usr/include/jansson.h),✓,✗) jansson (JSONL))
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifneq ($(NVCC),)
$(info ✓ nvcc: $(NVCC) (CUDA backend: later issue, not built yet))
else
$(info ✗ nvcc: not found (CPU only))
endif
ifneq ($(shell command -v mpicc 2>/dev/null),)
$(info ✓ MPI: $(shell command -v mpicc) (not used yet))
else
$(info ✗ MPI: mpicc not found (single process))
endif
ifneq ($(wildcard $(HDF5_INC)/hdf5.h),)
$(info ✓ HDF5 (OpenMPI build): $(HDF5_LIB) (checkpoints))
CFLAGS_BASE += -I$(HDF5_INC) -I$(MPI_INC)
LDLIBS += -L$(HDF5_LIB) -Wl,-rpath,$(HDF5_LIB) -lhdf5
else ifeq ($(filter clean help,$(MAKECMDGOALS)),)
$(error ✗ HDF5 (OpenMPI build) not found in $(HDF5_INC): scripts/install_deps.sh failed)
endif

CFLAGS := $(CFLAGS_BASE) $(WARN)

# ---- sources ----------------------------------------------------------------
LIB_SRC := model/base.c model/config.c model/params.c model/ops_cpu.c model/llama.c model/sample.c \
           data/bpe.c data/bbpe.c data/spm.c data/tok.c data/chat.c data/shard.c data/loader.c data/jsonl.c \
           optim/adamw.c optim/sched.c \
           train/cli.c train/blas_env.c train/ckpt.c train/run.c \
           train/cmd_inspect.c train/cmd_bench.c train/cmd_tokenize.c train/cmd_pretrain.c \
           train/cmd_eval.c train/cmd_generate.c \
           train/safetensors.c train/gguf.c train/convert.c train/cmd_convert.c train/cmd_logits.c
MAIN_SRC := train/main.c
TEST_SRC := tests/test_main.c tests/test_ops.c tests/test_model.c tests/test_optim.c \
            tests/test_ref.c tests/test_cli.c tests/gradcheck.c tests/test_data.c tests/test_bpe.c \
            tests/test_pipeline.c tests/test_ckpt.c tests/test_convert.c tests/test_spm.c tests/test_tok.c tests/test_chat.c

OBJ := $(BUILD)/obj
LIB_OBJ := $(LIB_SRC:%.c=$(OBJ)/%.o)
ALL_OBJ := $(LIB_OBJ) $(MAIN_SRC:%.c=$(OBJ)/%.o) $(TEST_SRC:%.c=$(OBJ)/%.o)

ifneq ($(V),1)
Q := @
endif

.PHONY: all test test-ref test-full demo bench clean help deps

all: $(BUILD)/llamac $(BUILD)/tests

# Changing flags rebuilds everything (Redis's .make-settings).
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(LDLIBS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(LDLIBS)' > $@
FORCE:

$(OBJ)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/llamac: $(LIB_OBJ) $(OBJ)/train/main.o
	$(Q)$(CC) $^ -o $@ $(LDFLAGS_SAN) $(LDLIBS)
$(BUILD)/tests: $(LIB_OBJ) $(TEST_SRC:%.c=$(OBJ)/%.o)
	$(Q)$(CC) $^ -o $@ $(LDFLAGS_SAN) $(LDLIBS)

deps:
	@bash scripts/install_deps.sh

# The quick tier CI runs: C unit tests, gradient checks, the committed
# PyTorch fixtures, and the command-line error paths.
test: all
	$(Q)$(BUILD)/tests

# Regenerate the PyTorch reference fixtures with transformers (PyPI, cached
# in ~/.cache/llamac-venv) and fail if they drift from the committed ones.
test-ref: all
	$(Q)LLAMAC=$(BUILD)/llamac bash scripts/test_ref.sh

test-full: test test-ref

demo: all
	$(Q)bash scripts/demo.sh

# Step benchmark against PyTorch on this CPU, with the SGEMM peak; tokenizer
# encoding speed against tokenizers / tiktoken / sentencepiece (bench_tok.py).
bench: all
	$(Q)bash scripts/bench.sh

clean:
	rm -rf build build-san

help:
	@echo "make            build build/llamac and build/tests"
	@echo "make test       quick tests (what CI runs; ends with 'N passed, N failed')"
	@echo "make test-ref   regenerate PyTorch fixtures and compare to the committed ones"
	@echo "make bench      training-step benchmark vs PyTorch, with the SGEMM peak; tokenizer MB/s"
	@echo "make demo       train the tiny model on the CPU and show the loss fall"
	@echo "make deps       install Debian packages the build needs"
	@echo "overrides: NATIVE=1 DEBUG=1 SAN=1 WERROR=1 V=1"

-include $(ALL_OBJ:.o=.d)
