# The real-model pipeline (docs/pipelines.md): text -> a model's activations at one hook ->
# shuffle with a held-out split -> train an SAE -> evaluate it, structurally on the held-out rows
# and by LM loss with the SAE spliced into the model on held-out documents -> a dashboard of every
# latent (sae-explain) over the collected activations.
#
#   make -f pipelines/real.mk MODEL=DIR TEXT=FILE [OUT=out/real] [HOOK=blocks.0.hook_resid_post]
#        [CONTEXT=128] [ARCH=topk] [K=32] [LATENTS=0] [EPOCHS=1] [TOKENS=0] [SEED=1] ...
#
# Held-out data. Every HELDOUT_DOCS-th document of TEXT goes to OUT/heldout.txt for the LM-loss
# evaluation and never reaches training (give EVAL_TEXT to use another file and train on all of
# TEXT); of the training documents' activation rows, a fraction HELDOUT goes to OUT/heldout.sae
# for the structural metrics. Documents are separated by blank lines, or are single lines when
# TEXT_OPTS has --lines or --jsonl-field (TEXT_OPTS is passed to sae-collect and sae-eval).
#
# Every stage's output depends on its inputs, on the binary that makes it and on the stage's own
# parameters (kept in OUT/<stage>.args, rewritten only when they change), so a re-run does
# nothing, and changing a parameter redoes that stage and the ones after it. The tools write their
# outputs atomically: an interrupted run leaves nothing half written under a final name.

# The tools: build/bin when run from a source tree, else wherever sae-collect is on PATH (an
# installed saetools); BIN=DIR chooses.
BIN ?= $(if $(wildcard build/bin/sae-collect),build/bin,$(patsubst %/,%,$(dir $(shell command -v sae-collect))))
ifeq ($(BIN),)
$(error no saetools found: run make in the source tree, install them on PATH, or set BIN=DIR)
endif
OUT         ?= out/real
MODEL       ?=
TEXT        ?=
EVAL_TEXT   ?=
TEXT_OPTS   ?=
HOOK        ?= blocks.0.hook_resid_post
CONTEXT     ?= 128
BATCH       ?= 8
DEVICE      ?= auto
HELDOUT_DOCS ?= 10
HELDOUT     ?= 0.05
MEMORY      ?= 1G
ARCH        ?= topk
K           ?= 32
LATENTS     ?= 0
EPOCHS      ?= 1
TOKENS      ?= 0
SEED        ?= 1
EVAL_TOKENS ?= 0
TRAIN_EXTRA ?=
EVAL_EXTRA  ?=
EXPLAIN_EXTRA ?=

ifeq ($(strip $(MODEL)),)
$(error MODEL is not set: give the Hugging Face model directory, e.g. MODEL=../shared/models/stories260K)
endif
ifeq ($(strip $(TEXT)),)
$(error TEXT is not set: give the text file to collect activations from)
endif

# Whole lines are documents with --lines or JSONL; otherwise blank-line separated paragraphs.
SPLIT_RS := $(if $(filter --lines --jsonl-field,$(TEXT_OPTS)),line,paragraph)

# The text trained on and the held-out text of the LM-loss evaluation.
TRAIN_TEXT   := $(if $(EVAL_TEXT),$(TEXT),$(OUT)/train.txt)
HELDOUT_TEXT := $(if $(EVAL_TEXT),$(EVAL_TEXT),$(OUT)/heldout.txt)

SPLIT_ARGS   := $(strip $(if $(EVAL_TEXT),eval-text $(EVAL_TEXT),$(TEXT) every $(HELDOUT_DOCS) $(SPLIT_RS)))
COLLECT_ARGS := $(strip --model $(MODEL) --hook $(HOOK) --context $(CONTEXT) --batch $(BATCH) --device $(DEVICE) $(TEXT_OPTS) --text $(TRAIN_TEXT))
SHUFFLE_ARGS := $(strip --seed $(SEED) --memory $(MEMORY) --split heldout=$(HELDOUT))
TRAIN_ARGS   := $(strip --arch $(ARCH) --latents $(LATENTS) $(if $(filter topk batchtopk matryoshka,$(ARCH)),--k $(K)) \
                --seed $(SEED) --epochs $(EPOCHS) $(if $(filter-out 0,$(TOKENS)),--tokens $(TOKENS)) \
                --device $(DEVICE) $(TRAIN_EXTRA))
EXPLAIN_ARGS := $(strip --model $(MODEL) --seed $(SEED) --device $(DEVICE) $(EXPLAIN_EXTRA))
EVAL_ARGS    := $(strip --model $(MODEL) --context $(CONTEXT) --batch $(BATCH) --max-tokens $(EVAL_TOKENS) \
                --device $(DEVICE) $(TEXT_OPTS) --text $(HELDOUT_TEXT) $(EVAL_EXTRA))

.PHONY: all demo FORCE
all: $(OUT)/report.json $(OUT)/dashboard/index.html

# A stage's parameters: the file changes (and so triggers the stage) only when they change.
$(OUT)/%.args: FORCE
	@mkdir -p $(OUT)
	@echo '$($(shell echo $* | tr a-z A-Z)_ARGS)' | cmp -s - $@ || echo '$($(shell echo $* | tr a-z A-Z)_ARGS)' > $@

# Split the text by documents: every HELDOUT_DOCS-th one is held out for the LM-loss evaluation.
# Each file is written under a temporary name and renamed, so neither is ever half written.
ifeq ($(strip $(EVAL_TEXT)),)
$(OUT)/train.txt: $(TEXT) $(OUT)/split.args
	awk -v every=$(HELDOUT_DOCS) -v train=$@.tmp -v held=$(OUT)/heldout.txt.tmp \
	    $(if $(filter paragraph,$(SPLIT_RS)),-v RS= -v 'ORS=\n\n') \
	    '{ print > ((NR % every == 0) ? held : train) } END { printf "" > train; printf "" > held }' $(TEXT)
	mv $(OUT)/heldout.txt.tmp $(OUT)/heldout.txt
	mv $@.tmp $@
$(OUT)/heldout.txt: $(OUT)/train.txt
endif

$(OUT)/acts.sae: $(TRAIN_TEXT) $(OUT)/collect.args $(BIN)/sae-collect $(MODEL)/config.json
	$(BIN)/sae-collect $(COLLECT_ARGS) -o $@

$(OUT)/train.sae: $(OUT)/acts.sae $(OUT)/shuffle.args $(BIN)/sae-shuffle
	$(BIN)/sae-shuffle $(SHUFFLE_ARGS) --split-output $(OUT)/heldout.sae -o $@ $<

$(OUT)/heldout.sae: $(OUT)/train.sae

$(OUT)/sae/cfg.json: $(OUT)/train.sae $(OUT)/train.args $(BIN)/sae-train
	$(BIN)/sae-train $(TRAIN_ARGS) -o $(OUT)/sae $<

# The report: structural metrics on the held-out rows, LM loss on the held-out documents. The
# table sae-eval prints on stderr is kept in report.txt and shown.
$(OUT)/report.json: $(OUT)/sae/cfg.json $(OUT)/heldout.sae $(HELDOUT_TEXT) $(OUT)/eval.args $(BIN)/sae-eval $(MODEL)/config.json
	$(BIN)/sae-eval --sae $(OUT)/sae $(EVAL_ARGS) --plots $(OUT)/plots \
	    -o $@ $(OUT)/heldout.sae 2> $(OUT)/report.txt; s=$$?; cat $(OUT)/report.txt >&2; exit $$s

# The dashboard: every latent over the collected activations, which are in document order (the
# shuffled ones are not: their contexts would be one token long).
$(OUT)/dashboard/index.html: $(OUT)/sae/cfg.json $(OUT)/acts.sae $(OUT)/explain.args $(BIN)/sae-explain
	$(BIN)/sae-explain --sae $(OUT)/sae $(EXPLAIN_ARGS) --force -o $(OUT)/dashboard $(OUT)/acts.sae

demo: $(OUT)/report.json $(OUT)/dashboard/index.html
	@echo
	@echo "real-model pipeline done: $(ARCH) SAE on $(HOOK) of $(MODEL)"
	@echo "report: $(OUT)/report.json (table: $(OUT)/report.txt); plots (SVG): $(OUT)/plots/"
	@echo "dashboard of every latent: open $(abspath $(OUT))/dashboard/index.html"
