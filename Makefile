# decon — one build for every target.  `make` builds the CPU binaries; `make test`
# runs every test and ends with "N passed, N failed"; `make bench` prints figures;
# `make run` is the README's one-command setup + main job.

# `make` alone builds everything (the GPU section defines rules before `all`).
.DEFAULT_GOAL := all
CC      := mpicc
PKGS    := hdf5-openmpi inih libcjson
# The OpenMP build of OpenBLAS shares our OpenMP thread pool; the default pthread build
# spins its own threads against ours (measured: 2 threads no faster than 1).
BLAS_DIR := /usr/lib/$(shell gcc -print-multiarch)/openblas-openmp
BLAS_INC := /usr/include/$(shell gcc -print-multiarch)/openblas-openmp
CFLAGS  ?= -O3 -march=native
# -std=c11 alone disables FMA contraction; -fno-math-errno lets sqrtf vectorise.
CFLAGS  += -std=c11 -ffp-contract=fast -fno-math-errno -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP -Isrc -Itests -I. \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -I$(BLAS_INC)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lm
LDFLAGS := -fopenmp
# The sentencepiece tokenizer (src/io/tokenizer.h) is C++ over Debian's libsentencepiece:
# one object outside libdecon.a (which stays C). A program or test that uses it links
# $(TOKENIZER_OBJ) before $(LIB) and $(TOKENIZER_LIBS) before $(LDLIBS).
CXX      := g++
CXXFLAGS ?= -O2
CXXFLAGS += -std=c++17 -Wall -Wextra -Werror -MMD -MP -Isrc
TOKENIZER_LIBS := -lsentencepiece -lstdc++

BUILD   := build
BIN     := bin

# ---- Sanitizers: `make test SANITIZE=1` ----------------------------------------------
# AddressSanitizer + UndefinedBehaviorSanitizer build in its own directory (objects,
# library, tests and programs under build-sanitize/), so it never mixes with build/ or
# bin/. Any report ends the program (-fno-sanitize-recover=all here; halt_on_error and
# the exit code in tests/sanitizers/options.sh, which tests/run_all.sh sources).
# float-cast-overflow: GCC's `undefined` leaves out out-of-range float-to-int conversions.
ifeq ($(SANITIZE),1)
SANITIZERS := -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all
CFLAGS     += $(SANITIZERS) -g -O1
CXXFLAGS   += $(SANITIZERS) -g -O1
LDFLAGS    += $(SANITIZERS)
BUILD      := build-sanitize
BIN        := $(BUILD)/bin
endif
# ----------------------------------------------------------------------------------------

# The one ops backend linked into every program (src/ops/ops.h): src/ops/cpu/ by default;
# `make GPU=cuda CUDA_ARCH=sm_90` or `make GPU=hip HIP_ARCH=gfx942` links hip/*.hip instead
# (the GPU section below), into its own build-cuda/ or build-hip/ so objects never mix.
BACKEND ?= cpu
COMMON_SRC := $(wildcard src/core/*.c src/mixers/*.c src/model/*.c src/record/*.c \
                         src/train/*.c src/io/*.c src/par/*.c src/eval/*.c)
LIB_SRC := $(COMMON_SRC) $(wildcard src/ops/$(BACKEND)/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB     := $(BUILD)/libdecon.a
# Where the backend-independent objects live (the library's common sources, the programs'
# mains, the tokenizer): $(BUILD) here; a GPU build takes them from the CPU build's
# directory (the GPU section), compiled once with the same flags.
C_BUILD := $(BUILD)
TOKENIZER_OBJ := $(C_BUILD)/src/io/tokenizer.o

PROGRAMS := $(patsubst src/bin/%.c,$(BIN)/%,$(wildcard src/bin/*.c)) $(BIN)/decon-analyze $(BIN)/decon-lowrank
# Test support linked into every test program: the double references and shared helpers.
REF_SRC  := $(wildcard tests/reference/*.c tests/support/*.c)
REF_OBJ  := $(REF_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/*.c))
BENCHES  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
# Drivers the test scripts run with arguments (not test programs: run_all.sh runs only
# the files directly in build/tests/).
TEST_TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(wildcard tests/tools/*.c))
# Programs that read or write text through the tokenizer.
TOKENIZER_PROGRAMS := $(BIN)/decon-export $(BIN)/decon-generate
# decon-analyze and decon-lowrank (analysis/*.c, MPI + ScaLAPACK / LAPACK), their tests and bench_svd link ScaLAPACK,
# and LAPACK from the same OpenBLAS directory (so ScaLAPACK's liblapack.so.3 resolves there).
ANALYSIS_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(filter-out analysis/decon-analyze.c analysis/decon-lowrank.c,$(wildcard analysis/*.c)))
ANALYSIS_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_analysis*.c tests/unit/test_lowrank.c))
ANALYSIS_LIBS  := -L$(BLAS_DIR) -Wl,--push-state,--no-as-needed -lscalapack-openmpi -llapack -lblas -Wl,--pop-state

# ---- GPU backend (hip/; docs/design.md "GPU backend") ------------------------------------
# One HIP source tree: hipcc compiles it for AMD, nvcc compiles the same files as CUDA
# (-x cu, hip/gpu_compat.h maps the names). Programs and the GPU test land in
# build-$(GPU)/bin and build-$(GPU)/tests; the CPU build's bin/ is untouched. The C
# sources outside src/ops/cpu/ only call ops.h and compile with the same CC and CFLAGS in
# every build, so a GPU build links the CPU build's objects of them (build/src/..., made
# there when missing or stale, by the same rule) and compiles only hip/*.hip, its
# programs' test objects and the renamed CPU ops into build-$(GPU)/.
CUDA_HOME ?= /usr/local/cuda
CUDA_ARCH ?= sm_90
HIP_ARCH  ?= gfx942
MPI_CXX_FLAGS := $(shell mpicc -showme:compile 2>/dev/null)
GPU_CXXFLAGS  := -std=c++17 -O3 -Isrc -I. $(MPI_CXX_FLAGS)
ifneq ($(GPU),)
ifeq ($(GPU),cuda)
GPUCC     := $(CUDA_HOME)/bin/nvcc
GPU_FLAGS := -x cu -arch=$(CUDA_ARCH) $(GPU_CXXFLAGS) -Xcompiler -Wall,-Wextra -Werror all-warnings
GPU_LIBS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart -lstdc++
else ifeq ($(GPU),hip)
GPUCC     := hipcc
# rocBLAS where ROCm provides it; Debian's HIP has none (blas.h: our tiled kernel then).
ROCBLAS   := $(if $(wildcard /opt/rocm/include/rocblas/rocblas.h),-DDECON_ROCBLAS -I/opt/rocm/include,)
GPU_FLAGS := --offload-arch=$(HIP_ARCH) $(GPU_CXXFLAGS) $(ROCBLAS) -Wall -Wextra -Werror
GPU_LIBS  := $(if $(ROCBLAS),-L/opt/rocm/lib -lrocblas,) -lamdhip64 -lstdc++
else
$(error GPU=$(GPU): use GPU=cuda or GPU=hip)
endif
BACKEND  := gpu
BUILD    := build-$(GPU)
BIN      := $(BUILD)/bin
LIB_SRC  := $(COMMON_SRC)
LIB_OBJ  := $(LIB_SRC:%.c=$(C_BUILD)/%.o) $(patsubst hip/%.hip,$(BUILD)/hip/%.o,$(wildcard hip/*.hip))
LIB      := $(BUILD)/libdecon.a
LDLIBS   += $(GPU_LIBS)
PROGRAMS := $(patsubst src/bin/%.c,$(BIN)/%,$(wildcard src/bin/*.c))
# The GPU test links the CPU ops too, renamed cpu_* (tests/gpu/cpu_ops_prefix.h).
CPU_REF_OBJ := $(patsubst src/ops/cpu/%.c,$(BUILD)/cpu-reference/%.o,$(wildcard src/ops/cpu/*.c))
GPU_TESTS   := $(BUILD)/tests/test_gpu_ops $(BUILD)/tests/dump_step
TESTS    :=
BENCHES  :=
TEST_TOOLS :=
ANALYSIS_TESTS :=
TOKENIZER_PROGRAMS := $(BIN)/decon-export $(BIN)/decon-generate

$(C_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(C_BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/hip/%.o: hip/%.hip $(wildcard hip/*.h) src/ops/ops.h
	@mkdir -p $(dir $@)
	$(GPUCC) $(GPU_FLAGS) -c $< -o $@

$(BUILD)/cpu-reference/%.o: src/ops/cpu/%.c tests/gpu/cpu_ops_prefix.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -include tests/gpu/cpu_ops_prefix.h -c $< -o $@

# ops.h once more with every name renamed cpu_* (the shard type too: an anonymous struct
# cannot be declared twice), then the names restored, for test_gpu_ops.c.
$(BUILD)/generated/gpu/cpu_ops_decls.h: src/ops/ops.h tests/gpu/cpu_ops_prefix.h
	@mkdir -p $(dir $@)
	{ echo '#include "gpu/cpu_ops_prefix.h"'; echo '#define lm_head_vocab_shard cpu_lm_head_vocab_shard'; \
	  grep -v '^#pragma once' src/ops/ops.h; sed -n 's/^#define \([a-z_]*\) .*/#undef \1/p' tests/gpu/cpu_ops_prefix.h; \
	  echo '#undef lm_head_vocab_shard'; } > $@

$(BUILD)/tests/gpu/test_gpu_ops.o: CFLAGS += -I$(BUILD)/generated
$(BUILD)/tests/gpu/test_gpu_ops.o: $(BUILD)/generated/gpu/cpu_ops_decls.h

$(BUILD)/tests/test_gpu_ops: $(BUILD)/tests/gpu/test_gpu_ops.o $(CPU_REF_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# dump_step is built by both builds: build/tests/dump_step (CPU) and build-$(GPU)/tests/dump_step.
$(BUILD)/tests/dump_step: $(BUILD)/tests/gpu/dump_step.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

all: $(PROGRAMS) $(GPU_TESTS)

# On a machine with a GPU: every op against the CPU backend, the standard model's loss
# and gradients after one step, 50 steps of tiny, tokens/s and MFU, checkpoints CPU<->GPU.
gpu-test: all
	$(MAKE) GPU= all build/tests/dump_step
	bash tests/gpu/run_gpu_test.sh $(BUILD)
-include $(BUILD)/cpu-reference/*.d $(BUILD)/tests/gpu/*.d
else
$(BUILD)/tests/dump_step: $(BUILD)/tests/gpu/dump_step.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

gpu-test:
	@echo "make gpu-test needs GPU=cuda (CUDA_ARCH=sm_90) or GPU=hip (HIP_ARCH=gfx942)" >&2; exit 2
endif

# The three build checks of the GPU backend, no GPU needed (tests/scripts/test_gpu_build.sh):
# the CUDA build links, every .hip file compiles to gfx942 device code with clang-19, and
# the HIP build links with Debian's hipcc (gfx90a: hipcc 5.2 predates gfx942).
gpu-check:
	bash tests/scripts/test_gpu_build.sh

# Check 2's device code: each hip/*.hip compiled for gfx942 (MI300X) by Debian's clang-19,
# assembly only (no link: hipcc 5.2 predates gfx942); files in parallel under -j.
GFX942_BUILD := build-gfx942
gfx942-asm: $(patsubst hip/%.hip,$(GFX942_BUILD)/%.s,$(wildcard hip/*.hip))
$(GFX942_BUILD)/%.s: hip/%.hip $(wildcard hip/*.h) src/ops/ops.h
	@mkdir -p $(dir $@)
	clang-19 -x hip --offload-arch=gfx942 -nogpulib --offload-device-only -S -std=c++17 -O2 -Isrc -I. \
	    $(MPI_CXX_FLAGS) -Wall -Wextra -Werror $< -o $@.tmp && mv $@.tmp $@
# ---------------------------------------------------------------------------------------

.PHONY: all test bench clean setup corpus run lint report lowrank-sweep gpu-test gpu-check gfx942-asm
# Keep object files of programs and tests (they are intermediates of two-step rules).
.SECONDARY:
all: $(PROGRAMS) $(TESTS) $(BENCHES) $(TEST_TOOLS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/decon-%: $(C_BUILD)/src/bin/decon-%.o $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(TOKENIZER_PROGRAMS): $(BIN)/decon-%: $(C_BUILD)/src/bin/decon-%.o $(TOKENIZER_OBJ) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $< $(TOKENIZER_OBJ) $(LIB) $(TOKENIZER_LIBS) $(LDLIBS) -o $@

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(TOKENIZER_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(TOKENIZER_OBJ) $(LIB) $(TOKENIZER_LIBS) $(LDLIBS) -o $@

$(BIN)/decon-analyze: $(BUILD)/analysis/decon-analyze.o $(ANALYSIS_OBJ) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(ANALYSIS_LIBS) $(LDLIBS) -o $@

$(BIN)/decon-lowrank: $(BUILD)/analysis/decon-lowrank.o $(ANALYSIS_OBJ) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(ANALYSIS_LIBS) $(LDLIBS) -o $@

$(ANALYSIS_TESTS): $(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(ANALYSIS_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(ANALYSIS_LIBS) $(LDLIBS) -o $@

$(BUILD)/bench/bench_svd: $(BUILD)/bench/bench_svd.o $(ANALYSIS_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(ANALYSIS_LIBS) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(REF_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(REF_OBJ) $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# Debian packages the build, the corpus and the tests need (idempotent).
setup:
	bash tests/scripts/install_deps.sh

corpus: setup
	bash input/corpus/build.sh data/corpus

ifeq ($(SANITIZE),1)
# The C test programs, sanitized, and the proof that a sanitizer report fails a test
# (tests/sanitizers/test_sanitizers.c); the shell scripts stay with the normal `make test`.
test: $(TESTS) $(BUILD)/tests/test_sanitizers
	bash tests/run_all.sh $(BUILD)/tests

$(BUILD)/tests/test_sanitizers: $(BUILD)/tests/sanitizers/test_sanitizers.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

-include $(BUILD)/tests/sanitizers/*.d
else
test: all
	bash tests/run_all.sh
endif

bench: all
	bash bench/run_all.sh

# The main job: install, build, prepare the corpus, train the tiny preset, evaluate it,
# print a sample of its text.
run: setup
	$(MAKE) all
	bash input/corpus/build.sh data/corpus
	bin/decon-train input/models/tiny.ini --run-dir runs/tiny
	bash input/tasks/build.sh data/corpus data/tasks
	bin/decon-eval runs/tiny/ckpt/latest.h5 --ppl data/corpus/test.bin --ctx 64,128,256,512 \
	    --cloze data/tasks/cloze.jsonl --choice data/tasks/choice.jsonl --json runs/tiny/eval.json
	@echo "A greedy sample from runs/tiny (bin/decon-generate, README \"Generating text\"):"
	bin/decon-generate runs/tiny/ckpt/latest.h5 --prompt "The history of the city" --greedy --max-new 40 \
	    --json runs/tiny/sample.json

# Plots and report.md across runs (README.md, "Analysing recordings"):
#   make report RUNS="runs/a runs/b" [REPORT=reports/latest] [SVD=0] [LOWRANK=reports/lowrank/lowrank.jsonl]
REPORT ?= reports/latest
SVD    ?= 1
LOWRANK ?=
report: bin/decon-analyze
	bash analysis/plot/make_report.sh --out $(REPORT) --svd $(SVD) $(if $(LOWRANK),--lowrank $(LOWRANK)) $(RUNS)

# The low-rank sweep (README.md, "Compressing a checkpoint"): A3 and SVD at each budget, test
# perplexity against parameter and KV-cache reduction -> $(LOWRANK_OUT)/{lowrank.jsonl,lowrank.png,table.md}.
#   make lowrank-sweep [CKPT=runs/tiny/ckpt/latest.h5] [BUDGETS=1,0.75,0.5,0.25] [LOWRANK_OUT=reports/lowrank]
CKPT        ?= runs/tiny/ckpt/latest.h5
BUDGETS     ?= 1,0.75,0.5,0.25
LOWRANK_OUT ?= reports/lowrank
lowrank-sweep: bin/decon-lowrank bin/decon-eval
	/usr/bin/python3 analysis/plot/lowrank_sweep.py $(CKPT) $(LOWRANK_OUT) --budgets $(BUDGETS)
	/usr/bin/python3 analysis/plot/lowrank_figure.py $(LOWRANK_OUT)/lowrank.jsonl $(LOWRANK_OUT)/lowrank.png \
	    --table $(LOWRANK_OUT)/table.md

# clang-tidy's bugprone checks over every C file (must print no warnings). clang-tidy-19:
# its omp.h comes with libomp-19-dev, which clang-19's fuzz build needs too (Debian's
# libomp-14-dev and libomp-19-dev conflict, so only one LLVM version can be installed).
lint:
	clang-tidy-19 --quiet -checks='-*,bugprone-*,-bugprone-easily-swappable-parameters' \
	    --warnings-as-errors='*' $(LIB_SRC) $(wildcard src/bin/*.c analysis/*.c tests/unit/*.c tests/reference/*.c tests/support/*.c tests/sanitizers/*.c tests/fuzz/*.c tests/tools/*.c bench/*.c) tests/gpu/dump_step.c \
	    -- $(filter-out -MMD -MP -march=native,$(CFLAGS)) -isystem /usr/lib/x86_64-linux-gnu/openmpi/include -DFUZZ_DIR='"$(CURDIR)/tests/fuzz"'

clean:
	rm -rf build build-sanitize build-cuda build-hip bin $(FUZZ_BUILD)

# ---- Fuzzing (libFuzzer, clang-19; docs/design.md "Fuzzing") -----------------------------
# The library and the harnesses of tests/fuzz/ built by clang-19 with ASan + UBSan and
# libFuzzer's coverage into build-fuzz/ (MPI through mpicc's own flags). `make fuzz` runs
# every harness FUZZ_SECONDS seconds from its committed seeds and replays the committed
# regression inputs; `make test` does the same for 20 s each (tests/scripts/test_fuzz.sh).
FUZZ_CC      := clang-19
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
# -Wno-pass-failed: at -O1 the vectoriser does not run, so every `omp simd` would warn.
FUZZ_CFLAGS  := -g -O1 -fno-omit-frame-pointer -std=c11 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP \
                -Wno-pass-failed \
                -Isrc -Itests -I. $(shell mpicc -showme:compile 2>/dev/null) \
                $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -I$(BLAS_INC) $(FUZZ_SAN) \
                -DFUZZ_DIR='"$(CURDIR)/tests/fuzz"'
FUZZ_LIB      := $(FUZZ_BUILD)/libdecon.a
FUZZ_LIB_OBJ  := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o) $(FUZZ_BUILD)/analysis/recording.o $(FUZZ_BUILD)/analysis/why.o
FUZZ_SUPPORT  := $(FUZZ_BUILD)/tests/fuzz/fuzz_support.o
FUZZ_TARGETS  := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS  := $(filter-out $(FUZZ_BUILD)/fuzz_support,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_TARGETS)

fuzz: setup
	$(MAKE) fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_KEEP=$(FUZZ_BUILD) bash tests/scripts/test_fuzz.sh

# Library code: coverage for libFuzzer, no main.
$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

# The harness support is not fuzzed: no coverage feedback from its bookkeeping.
$(FUZZ_SUPPORT): tests/fuzz/fuzz_support.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_SUPPORT) $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -fopenmp $^ $(shell mpicc -showme:link 2>/dev/null) $(LDLIBS) -o $@

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_BUILD)/tests/fuzz/*.d
# ---- end of fuzzing ------------------------------------------------------------------------

-include $(LIB_OBJ:.o=.d) $(REF_OBJ:.o=.d) $(TOKENIZER_OBJ:.o=.d) $(BUILD)/tests/tools/*.d $(C_BUILD)/src/bin/*.d $(BUILD)/analysis/*.d $(BUILD)/tests/unit/*.d $(BUILD)/bench/*.d
