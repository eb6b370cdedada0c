# saetools top-level entry points. `make demo` and `make test` do all the set-up on a fresh
# Debian machine: install missing packages, configure, build, run.
BUILD    ?= build
JOBS     ?= $(shell nproc)
CMAKE_FLAGS ?=
BIN      := $(BUILD)/bin
FUZZ_SECONDS ?= 600
SHARED   ?= $(or $(SAE_SHARED),../shared)

PREFIX   ?= /usr/local
DESTDIR  ?=
# make deb: a separate tree, portable (no -march=native), without tests and benchmarks.
DEB_BUILD ?= build-deb
DEB_CMAKE_FLAGS ?= -DSAE_NATIVE=OFF -DSAE_TESTS=OFF -DSAE_BENCH=OFF

.PHONY: all deps configure build test unit cli demo install uninstall deb fuzz fuzz-build fuzz-stream fuzz-npy fuzz-npz bench gpu-selftest clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	@bash scripts/run-tests.sh $(BUILD)

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

cli: build
	SAE_BIN=$(abspath $(BIN)) bats tests/cli

demo: build
	@$(MAKE) --no-print-directory -f pipelines/toy.mk BIN=$(abspath $(BIN)) demo
	@if [ -d $(SHARED)/models/stories260K ] && [ -f $(SHARED)/data/tinystories-sample.txt ]; then \
	  $(MAKE) --no-print-directory -f pipelines/real.mk BIN=$(abspath $(BIN)) OUT=out/real-stories260K \
	    MODEL=$(SHARED)/models/stories260K TEXT=$(SHARED)/data/tinystories-sample.txt \
	    HOOK=blocks.2.hook_resid_post LATENTS=512 K=16 EPOCHS=5 demo; \
	else echo "real-model demo skipped: $(SHARED)/models/stories260K or $(SHARED)/data/tinystories-sample.txt is absent"; fi

# The tools into PREFIX/bin, man pages into PREFIX/share/man/man1, bash completion into
# PREFIX/share/bash-completion/completions, recipes and docs into PREFIX/share/saetools; DESTDIR
# stages it elsewhere. The manifest it writes lets `make uninstall` remove exactly that.
install: build
	@bash scripts/install.sh $(BUILD) "$(PREFIX)" "$(DESTDIR)"

uninstall:
	@bash scripts/uninstall.sh "$(PREFIX)" "$(DESTDIR)"

# A Debian package (CPack) of the same install under /usr, in $(DEB_BUILD). Its Depends come from
# dpkg-shlibdeps; with nvcc the CUDA backend is in it and its description says so.
deb: deps
	cmake -S . -B $(DEB_BUILD) -DCMAKE_BUILD_TYPE=Release $(DEB_CMAKE_FLAGS) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(DEB_BUILD) -j $(JOBS)
	rm -f $(DEB_BUILD)/saetools_*.deb
	cd $(DEB_BUILD) && cpack -G DEB >/dev/null
	@ls $(DEB_BUILD)/saetools_*.deb

# libFuzzer targets for the stream reader, the .npy reader and the .npz reader, built with clang in
# their own tree (ASan + UBSan), each run for FUZZ_SECONDS (`make -j3 fuzz` runs all three at
# once). The stream corpus starts from small streams made by sae-npy and the target's own
# latent-stream seeds, the .npy and .npz corpora from the targets' own arrays and archives. All run
# with a 2 GB RSS limit and a 64 MB limit on any one allocation, so a buffer sized from a header's
# claim is a finding. Findings land in .fuzz/ (crash-*, timeout-*, leak-*, oom-*).
FUZZ_FLAGS = -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -malloc_limit_mb=64 -print_final_stats=1 -artifact_prefix=.fuzz/

fuzz: fuzz-stream fuzz-npy fuzz-npz

fuzz-build: configure
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSAE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build-fuzz -j $(JOBS) --target fuzz_stream fuzz_npy fuzz_npz
	cmake --build $(BUILD) -j $(JOBS) --target sae-npy

fuzz-stream: fuzz-build
	mkdir -p .fuzz/corpus
	bash scripts/fuzz-seeds.sh $(BIN) .fuzz/corpus
	SAE_FUZZ_SEEDS=.fuzz/corpus ./build-fuzz/fuzz_stream $(FUZZ_FLAGS) .fuzz/corpus tests/fuzz/seeds

fuzz-npy: fuzz-build
	mkdir -p .fuzz/npy-corpus
	SAE_FUZZ_SEEDS=.fuzz/npy-corpus ./build-fuzz/fuzz_npy $(FUZZ_FLAGS) .fuzz/npy-corpus

fuzz-npz: fuzz-build
	mkdir -p .fuzz/npz-corpus
	SAE_FUZZ_SEEDS=.fuzz/npz-corpus ./build-fuzz/fuzz_npz $(FUZZ_FLAGS) .fuzz/npz-corpus

bench: build
	@for b in $(BUILD)/bench/*; do echo "== $$b"; $$b || exit 1; done

# Runs every op and a full training step on CUDA and on the CPU and compares them (needs a GPU).
gpu-selftest: build
	$(BIN)/sae-selftest --device cuda

clean:
	rm -rf $(BUILD) build-fuzz $(DEB_BUILD)
