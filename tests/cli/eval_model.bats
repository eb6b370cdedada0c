#!/usr/bin/env bats
# sae-eval --model: LM-loss metrics with the SAE spliced into the model (lib/eval/lm_eval.h), from the
# command line; and pipelines/real.mk end to end. The numbers themselves are checked against
# reference NLLs and an independent splice by tests/unit/test_lm_eval.cpp; here: options, the
# report, exact identities that hold through the binary, bad input, and the Make recipe.
load helper
load stream_helper
load sae_helper

stories() { echo "$SAE_SHARED/models/stories260K"; }

# The first N stories of the sample text (blank-line separated documents).
stories_text() {
  awk -v n="$1" 'BEGIN { RS = ""; ORS = "\n\n" } NR <= n' "$SAE_SHARED/data/tinystories-sample.txt"
}

# identity_sae DIR HOOK [B_ENC]: the ±I SAE on d_in 64 (W_enc = [I, -I], W_dec = [I; -I], ReLU): x_hat = x
# exactly, negative coordinates included. HOOK "" leaves the hook out of cfg.json. A negative B_ENC (default
# 0) makes it a soft threshold, which loses the coordinates smaller than -B_ENC.
identity_sae() {
  mkdir -p "$1"
  local meta='"sae_lens_version": "6.5.0", "model_name": "stories260K"'
  [ -n "$2" ] && meta+=", \"hook_name\": \"$2\""
  cat >"$1/cfg.json" <<JSON
{"architecture": "standard", "d_in": 64, "d_sae": 128, "dtype": "float32", "device": "cpu",
 "apply_b_dec_to_input": true, "normalize_activations": "none", "metadata": {$meta}}
JSON
  local enc dec
  enc=$(awk 'BEGIN { for (i = 0; i < 64; i++) for (j = 0; j < 128; j++) printf "%d ", (j == i) - (j == i + 64) }')
  dec=$(awk 'BEGIN { for (j = 0; j < 128; j++) for (i = 0; i < 64; i++) printf "%d ", (j == i) - (j == i + 64) }')
  safetensors "$1/sae_weights.safetensors" W_enc "[64,128]" "$enc" b_enc "[128]" "$(printf -- "${3:-0} %.0s" {1..128})" \
    W_dec "[128,64]" "$dec" b_dec "[64]" "$(printf '0 %.0s' {1..64})"
}

@test "--help lists every LM-loss option with its default" {
  run sae-eval --help
  assert_success
  for opt in "--model arg" "--text arg" "--hook arg " "--context arg (=0)" "--batch arg (=8)" \
             "--max-tokens arg (=0)" "--keep-error" "--splice-bos arg (=auto)" "--jsonl-field arg " \
             "--lines" "--invalid-utf8 arg (=error)" "--device arg" "--compute arg (=f32)"; do
    assert_output --partial -- "$opt"
  done
}

@test "LM-loss options need --model, --model needs --text" {
  hand_sae h
  run sae-eval --sae h --keep-error
  assert_failure 1
  assert_line --index 0 "sae-eval: --keep-error is an option of the LM-loss evaluation: add --model DIR"
  run sae-eval --sae h --model m
  assert_failure 1
  assert_line --index 0 "sae-eval: --model needs --text FILE... (held-out text to run the model on)"
  run sae-eval --sae h --model m --text x --splice-bos maybe
  assert_failure 1
  assert_line --index 0 "sae-eval: --splice-bos must be true, false or auto, not 'maybe'"
  run sae-eval --sae h --compute bf16
  assert_failure 1
  assert_line --index 0 "sae-eval: --compute is an option of the LM-loss evaluation: add --model DIR"
  # bf16 is for the GPU: refused in one line before the model is read
  run sae-eval --sae h --model m --text x --compute bf16 --device cpu
  assert_failure 1
  assert_line --index 0 "sae-eval: --compute bf16 runs on the GPU only (--device cuda): the CPU computes in f32"
  run sae-eval --sae h --model m --text x --compute fp8
  assert_failure 1
  assert_line --index 0 "sae-eval: --compute: unknown compute type 'fp8' (expected f32 or bf16)"
}

@test "identity SAE: spliced loss equals the clean loss exactly, CE recovered 1, KL 0, error term too" {
  need_shared
  stories_text 12 > in.txt
  identity_sae id blocks.2.hook_resid_post
  run sae-eval --sae id --model "$(stories)" --text in.txt --keep-error -o r.json
  assert_success
  assert_output --partial "LM loss with the SAE spliced in at blocks.2.hook_resid_post of $(stories)"
  [ "$(num r.json .lm_loss.ce_loss_spliced)" = "$(num r.json .lm_loss.ce_loss_clean)" ]
  [ "$(num r.json .lm_loss.ce_loss_keep_error)" = "$(num r.json .lm_loss.ce_loss_clean)" ]
  [ "$(num r.json .lm_loss.ce_loss_recovered)" = 1 ]
  [ "$(num r.json .lm_loss.kl_div)" = 0 ]
  [ "$(num r.json .lm_loss.delta_lm_loss)" = 0 ]
  # zero ablation of the residual stream hurts: the recovered fraction is not 1 by accident
  jq -e '.lm_loss.ce_loss_zero_ablation > .lm_loss.ce_loss_clean + 1' r.json
  # every text token is scored once: as many as sae-collect's rows for the same text and context
  sae-collect --model "$(stories)" --hook blocks.2.hook_resid_post --text in.txt -o acts.sae
  rows=$(sae-info acts.sae | sed -n 's/^rows \{1,\}\([0-9]\{1,\}\).*/\1/p')
  [ "$(num r.json .lm_loss.tokens)" = "$rows" ]
  # without a stream, the structural metrics are those of the spliced rows (BOS left out)
  [ "$(num r.json .rows)" = "$rows" ]
  [ "$(num r.json .reconstruction.fvu)" = 0 ]
  [ "$(num r.json .lm_loss.splice_bos)" = false ]
  [ "$(num r.json .lm_loss.context)" = 128 ]
  [ "$(num r.json .lm_loss.compute)" = f32 ]
}

@test "every new family: the identity SAE and the error term give the clean loss; a lossy SAE does not" {
  need_shared
  stories_text 4 > in.txt
  for case in gemma2-random:blocks.1.hook_resid_post gemma3-random:blocks.0.attn.hook_z \
              qwen3-random:blocks.2.hook_mlp_out pythia-random:blocks.1.attn.hook_z pythia-random:blocks.2.hook_attn_out; do
    model=$SAE_SHARED/models/${case%%:*} hook=${case#*:}
    identity_sae id "$hook"
    run sae-eval --sae id --model "$model" --text in.txt --keep-error -o r.json
    assert_success
    [ "$(num r.json .lm_loss.ce_loss_spliced)" = "$(num r.json .lm_loss.ce_loss_clean)" ]
    [ "$(num r.json .lm_loss.kl_div)" = 0 ]
    # a soft threshold at 0.3 changes what the model sees, but x_hat + (x - x_hat) puts it back
    # (to an ulp: two f32 roundings)
    identity_sae lossy "$hook" -0.3
    run sae-eval --sae lossy --model "$model" --text in.txt --keep-error -o r.json
    assert_success
    jq -e '.lm_loss.kl_div > 1e-4 and .lm_loss.ce_loss_spliced != .lm_loss.ce_loss_clean' r.json
    jq -e '(.lm_loss.ce_loss_keep_error - .lm_loss.ce_loss_clean | if . < 0 then -. else . end) < 1e-5' r.json
    jq -e '.lm_loss.kl_div_keep_error < 1e-6' r.json
    rm -rf id lossy
  done
}

@test "an attn.hook_z SAE must be n_heads x head_dim wide: the message names the heads" {
  need_shared
  stories_text 1 > in.txt
  identity_sae id blocks.1.attn.hook_z
  run sae-eval --sae id --model "$SAE_SHARED/models/gemma2-random" --text in.txt -o r.json
  assert_failure 1
  assert_output "sae-eval: id: the SAE's d_in 64 does not match n_heads x head_dim 4 x 24 = 96 of blocks.1.attn.hook_z of the model $SAE_SHARED/models/gemma2-random"
  [ ! -e r.json ]
  hand_sae narrow
  run sae-eval --sae narrow --model "$SAE_SHARED/models/gemma2-random" --text in.txt --hook blocks.1.attn.hook_z -o r.json
  assert_failure 1
  assert_output "sae-eval: narrow: the SAE's d_in 2 does not match n_heads x head_dim 4 x 24 = 96 of blocks.1.attn.hook_z (2 is not a whole number of the 4 heads) of the model $SAE_SHARED/models/gemma2-random"
}

@test "a stream given with --model gives the structural metrics; --max-tokens, --splice-bos, --context" {
  need_shared
  stories_text 12 > in.txt
  identity_sae id blocks.1.hook_mlp_out
  sae-collect --model "$(stories)" --hook blocks.1.hook_mlp_out --text in.txt --context 32 -o acts.sae
  rows=$(sae-info acts.sae | sed -n 's/^rows \{1,\}\([0-9]\{1,\}\).*/\1/p')
  run sae-eval --sae id --model "$(stories)" --text in.txt --max-tokens 300 --splice-bos true --context 32 \
    --format table --skip-geometry acts.sae
  assert_success
  assert_output --partial "on $rows rows"
  assert_output --partial "(300 tokens in "
  assert_output --partial "windows of <= 32, BOS spliced)"
  assert_output --partial "CE loss recovered              1.0000"
}

@test "the SAE's hook must be one of the model's, and d_in its d_model: one line naming both" {
  need_shared
  stories_text 2 > in.txt
  identity_sae deep blocks.7.hook_resid_post
  run sae-eval --sae deep --model "$(stories)" --text in.txt -o r.json
  assert_failure 1
  assert_output "sae-eval: deep: the SAE's hook blocks.7.hook_resid_post is not a hook of the model $(stories) (hook 'blocks.7.hook_resid_post': layer 7 is out of range (the model has 5 layers, 0-4))"
  [ ! -e r.json ]
  hand_sae narrow
  run sae-eval --sae narrow --model "$(stories)" --text in.txt --hook blocks.0.hook_resid_post -o r.json
  assert_failure 1
  assert_output "sae-eval: narrow: the SAE's d_in 2 does not match d_model 64 of the model $(stories)"
  [ ! -e r.json ]
}

@test "--hook names the hook when the SAE records none (or another name for it)" {
  need_shared
  stories_text 2 > in.txt
  identity_sae nohook ""
  run sae-eval --sae nohook --model "$(stories)" --text in.txt
  assert_failure 1
  assert_line --index 0 "sae-eval: nohook records no hook (cfg.json hook_name): give the hook with --hook"
  run sae-eval --sae nohook --model "$(stories)" --text in.txt --hook blocks.0.hook_attn_out -o r.json
  assert_success
  [ "$(num r.json .lm_loss.hook)" = blocks.0.hook_attn_out ]
  identity_sae other blocks.3.hook_resid_post
  run sae-eval --sae other --model "$(stories)" --text in.txt --hook blocks.0.hook_attn_out -o r.json
  assert_success
  assert_line "sae-eval: note: evaluating at --hook blocks.0.hook_attn_out, not at the SAE's recorded hook blocks.3.hook_resid_post"
}

@test "a model directory without weights, missing text, empty text: one line, no report" {
  need_shared
  stories_text 2 > in.txt
  identity_sae id blocks.0.hook_resid_post
  mkdir bare
  cp "$(stories)"/config.json "$(stories)"/tokenizer.model "$(stories)"/tokenizer_config.json bare/
  run sae-eval --sae id --model bare --text in.txt -o r.json
  assert_failure 1
  assert_output --partial "sae-eval: bare"
  [ "${#lines[@]}" -eq 1 ]
  [ ! -e r.json ]
  run sae-eval --sae id --model "$(stories)" --text missing.txt -o r.json
  assert_failure 1
  [ "${#lines[@]}" -eq 1 ]
  assert_output --partial "missing.txt"
  [ ! -e r.json ]
  printf '\n\n' > empty.txt
  run sae-eval --sae id --model "$(stories)" --text empty.txt -o r.json
  assert_failure 1
  assert_output "sae-eval: empty.txt: no text (the input is empty or holds only blank documents)"
  [ ! -e r.json ]
  run sae-eval --sae id - --model "$(stories)" --text -
  assert_failure 1
  assert_line --index 0 "sae-eval: --text - and a stream from stdin: only one of them can read stdin"
}

# ---- pipelines/real.mk ----

real_mk() {
  # Run as a top-level make even under `make test` (a sub-make would print "Entering directory").
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -f "$BATS_TEST_DIRNAME/../../pipelines/real.mk" BIN="$SAE_BIN" OUT=out MODEL="$(stories)" TEXT=text.txt \
    HOOK=blocks.1.hook_resid_post CONTEXT=64 LATENTS=128 HELDOUT_DOCS=5 DEVICE=cpu MEMORY=64M "$@"
}

@test "real.mk: end to end, a second run does nothing, a changed parameter re-runs only what follows it" {
  need_shared
  stories_text 40 > text.txt
  run real_mk K=8
  assert_success
  for stage in "awk " "sae-collect " "sae-shuffle " "sae-train " "sae-eval " "sae-explain "; do assert_output --partial "$stage"; done
  # held-out documents: every 5th of 40, the rest trained on
  [ "$(awk 'BEGIN { RS = "" } END { print NR }' out/heldout.txt)" = 8 ]
  [ "$(awk 'BEGIN { RS = "" } END { print NR }' out/train.txt)" = 32 ]
  jq -e '.lm_loss.tokens > 500 and .rows > 0 and .sae.k == 8' out/report.json
  # a trained SAE does better than zero ablation
  jq -e '.lm_loss.ce_loss_spliced < .lm_loss.ce_loss_zero_ablation' out/report.json
  grep -q "CE loss recovered" out/report.txt
  [ -f out/plots/freq_hist.svg ]
  # the dashboard of every latent, over the unshuffled rows
  [ "$(wc -l < out/dashboard/latents.jsonl)" = 128 ] && [ -f out/dashboard/index.html ]

  before=$(stat -c %Y out/acts.sae out/train.sae out/sae/cfg.json out/report.json out/dashboard/index.html)
  run real_mk K=8
  assert_success
  assert_output ""
  [ "$(stat -c %Y out/acts.sae out/train.sae out/sae/cfg.json out/report.json out/dashboard/index.html)" = "$before" ]

  run real_mk K=4
  assert_success
  refute_output --partial "awk "
  refute_output --partial "sae-collect "
  refute_output --partial "sae-shuffle "
  assert_output --partial "sae-train "
  assert_output --partial "sae-eval "
  assert_output --partial "sae-explain "
  jq -e '.sae.k == 4' out/report.json

  run real_mk K=4 EVAL_TOKENS=200
  assert_success
  refute_output --partial "sae-train "
  assert_output --partial "sae-eval "
  jq -e '.lm_loss.tokens == 200' out/report.json
}

@test "real.mk: MODEL and TEXT are required" {
  run make -f "$BATS_TEST_DIRNAME/../../pipelines/real.mk" BIN="$SAE_BIN" TEXT=t.txt
  assert_failure
  assert_output --partial "MODEL is not set"
  run make -f "$BATS_TEST_DIRNAME/../../pipelines/real.mk" BIN="$SAE_BIN" MODEL=m
  assert_failure
  assert_output --partial "TEXT is not set"
}
