# The toy pipeline: synthetic activations with known features -> shuffle with a held-out split ->
# train -> evaluate on the held-out rows and against the ground truth.
#
#   make -f pipelines/toy.mk [OUT=out/toy] [D=64] [FEATURES=256] [ACTIVE=4] [ROWS=200000]
#                            [ARCH=topk] [K=8] [LATENTS=512] [SEED=1] [HELDOUT=0.05] [TOKENS=...]
#                            [BATCH=512] [LR=0.002] [EPOCHS=3] [MEMORY=256M] [TRAIN_EXTRA=...]
#
# Every stage's output depends on its inputs, on the binary that makes it and on the stage's own
# parameters (kept in OUT/*.args, rewritten only when they change), so a re-run redoes only what
# changed. The tools write their outputs atomically, so an interrupted run leaves nothing half
# written under a final name. Copy this file as the template for real-model pipelines and cron jobs.

# The tools: build/bin when run from a source tree, else wherever sae-collect is on PATH (an
# installed saetools); BIN=DIR chooses.
BIN ?= $(if $(wildcard build/bin/sae-collect),build/bin,$(patsubst %/,%,$(dir $(shell command -v sae-collect))))
ifeq ($(BIN),)
$(error no saetools found: run make in the source tree, install them on PATH, or set BIN=DIR)
endif
# This file's own directory, where toy-summary.jq sits beside it.
PIPELINES := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
OUT      ?= out/toy
D        ?= 64
FEATURES ?= 256
ACTIVE   ?= 4
ROWS     ?= 200000
ARCH     ?= topk
K        ?= 8
LATENTS  ?= 512
SEED     ?= 1
HELDOUT  ?= 0.05
MEMORY   ?= 256M
TOKENS   ?= 0
BATCH    ?= 512
LR       ?= 0.002
EPOCHS   ?= 3
TRAIN_EXTRA ?=

COLLECT_ARGS := --toy --d $(D) --features $(FEATURES) --active $(ACTIVE) --rows $(ROWS) --seed $(SEED)
SHUFFLE_ARGS := --seed $(SEED) --memory $(MEMORY) --split heldout=$(HELDOUT)
TRAIN_ARGS   := --arch $(ARCH) --latents $(LATENTS) $(if $(filter topk batchtopk matryoshka,$(ARCH)),--k $(K)) \
                --seed $(SEED) --batch $(BATCH) --lr $(LR) --epochs $(EPOCHS) $(if $(filter-out 0,$(TOKENS)),--tokens $(TOKENS)) $(TRAIN_EXTRA)
EVAL_ARGS    :=

.PHONY: all demo FORCE
all: $(OUT)/report.json

# A stage's parameters: the file changes (and so triggers the stage) only when they change.
$(OUT)/%.args: FORCE
	@mkdir -p $(OUT)
	@echo '$($(shell echo $* | tr a-z A-Z)_ARGS)' | cmp -s - $@ || echo '$($(shell echo $* | tr a-z A-Z)_ARGS)' > $@

$(OUT)/acts.sae: $(OUT)/collect.args $(BIN)/sae-collect
	$(BIN)/sae-collect $(COLLECT_ARGS) --truth $(OUT)/truth -o $@

$(OUT)/truth/cfg.json: $(OUT)/acts.sae

$(OUT)/train.sae: $(OUT)/acts.sae $(OUT)/shuffle.args $(BIN)/sae-shuffle
	$(BIN)/sae-shuffle $(SHUFFLE_ARGS) --split-output $(OUT)/heldout.sae -o $@ $<

$(OUT)/heldout.sae: $(OUT)/train.sae

$(OUT)/sae/cfg.json: $(OUT)/train.sae $(OUT)/train.args $(BIN)/sae-train
	$(BIN)/sae-train $(TRAIN_ARGS) -o $(OUT)/sae $<

$(OUT)/report.json: $(OUT)/sae/cfg.json $(OUT)/heldout.sae $(OUT)/truth/cfg.json $(OUT)/eval.args $(BIN)/sae-eval
	$(BIN)/sae-eval --sae $(OUT)/sae --compare $(OUT)/truth --plots $(OUT)/plots $(EVAL_ARGS) -o $@ $(OUT)/heldout.sae

demo: $(OUT)/report.json
	@echo
	@echo "toy pipeline done: $(ARCH) SAE with $(LATENTS) latents on $(FEATURES) true features in d=$(D)"
	@jq -r -f $(PIPELINES)/toy-summary.jq $(OUT)/report.json
	@echo "report: $(OUT)/report.json; plots (SVG, open in a browser): $(OUT)/plots/"
