#!/usr/bin/env bats
# sae-explain: the command line around lib/explain (whose miner tests/unit/explain/test_miner.cpp
# checks against brute force): the three input forms agree, the toy ground truth is recovered,
# every option does what it says, peak memory follows docs/explain.md's formula, and bad input
# gets one line, exit 1 and no output directory. The rendered pages are checked in a real browser
# by explain_browser.bats.
load helper
load stream_helper
load sae_helper

stories() { echo "$SAE_SHARED/models/stories260K"; }
hook=blocks.2.hook_resid_post

setup_file() {
  [ -d "${SAE_SHARED:-/nonexistent}/models" ] || return 0
  cd "$BATS_FILE_TMPDIR"
  head -c 300000 "$SAE_SHARED/data/tinystories-sample.txt" > text.txt
  "$SAE_BIN/sae-collect" --model "$SAE_SHARED/models/stories260K" --hook $hook --text text.txt -o acts.sae 2>/dev/null
  "$SAE_BIN/sae-train" --latents 128 --k 8 --arch topk -o sae acts.sae 2>/dev/null
}

F() { echo "$BATS_FILE_TMPDIR/$1"; }

@test "--help lists every option with its default" {
  run sae-explain --help
  assert_success
  for opt in "-o [ --output ] arg" "--force" "--sae arg" "--model arg" "--text arg" "--hook arg" \
             "--jsonl-field arg" "--lines" "--invalid-utf8 arg (=error)" "--context arg (=128)" "--batch arg (=8)" \
             "--compute arg (=f32)" "--latents arg" "--top arg (=20)" "--quantiles arg (=10)" \
             "--per-quantile arg (=5)" "--contrast arg (=10)" "--before arg (=24)" "--after arg (=8)" \
             "--logit-tokens arg (=10)" "--neighbours arg (=5)" "--cofire-rows arg (=65536)" "--seed arg (=0)" \
             "--max-tokens arg (=0)" "--no-dashboard" "--threads arg (=0)" "--device arg"; do
    assert_output --partial -- "$opt"
  done
}

@test "text through the model, its activations stream and the encoded latents stream give the same latents.jsonl" {
  need_shared
  run sae-explain --model "$(stories)" --sae "$(F sae)" --text "$(F text.txt)" -o from-text
  assert_success
  assert_line --partial "sae-explain: 128 latents ("
  assert_line "sae-explain: open from-text/index.html"
  sae-explain --model "$(stories)" --sae "$(F sae)" "$(F acts.sae)" -o from-acts 2>/dev/null
  cmp from-text/latents.jsonl from-acts/latents.jsonl
  sae-encode --sae "$(F sae)" "$(F acts.sae)" -o latents.sae 2>/dev/null
  sae-explain --model "$(stories)" --sae "$(F sae)" latents.sae -o from-latents 2>/dev/null
  cmp from-text/latents.jsonl from-latents/latents.jsonl
  # One record per latent, each with the parts the schema promises, windows inside their document.
  [ "$(wc -l < from-text/latents.jsonl)" -eq 128 ]
  jq -s -e 'map(.latent) == [range(128)]' from-text/latents.jsonl
  jq -s -e 'all(.[]; (.top | length) <= 20 and (.logit_lens.top | length) == 10
              and (.decoder_neighbours | length) == 5)' from-text/latents.jsonl
  jq -s -e '[.[] | .top[] | (.tokens | length) <= 33 and .peak <= 24 and .acts[.peak] == .activation] | all' \
    from-text/latents.jsonl
  jq -e '.rows > 0 and .latents_reported == 128' from-text/summary.json
  [ -f from-text/index.html ] && [ -f from-text/latent.html ]
}

@test "toy ground truth: with the true dictionary as the SAE, every top context is a row where that feature is active" {
  # 256 features in 256 dimensions: the truth's ReLU encoder sees interference of about 0.06 per
  # active feature, far below the magnitudes of the rows that lead each top list (up to 1.5). In
  # 64 dimensions a few rows of pure interference (4 in 2560 here) outrank the true ones.
  sae-collect --toy --d 256 --rows 20000 --context 64 --seed 3 --truth truth --latents-out codes.sae -o toy.sae 2>/dev/null
  run sae-explain --sae truth toy.sae -o dash --no-dashboard --top 10
  assert_success
  assert_line "sae-explain: no logit lens: it needs --model (the unembedding)"
  # (row, feature) for every true activation, and for every top context
  sae-info --head 20000 codes.sae | awk 'NR > 1 { for (i = 2; i <= NF; i++) { split($i, a, ":"); print $1, a[1] } }' |
    sort > active.txt
  jq -r '.latent as $l | .top[] | "\(.row) \($l)"' dash/latents.jsonl | sort > top.txt
  [ "$(wc -l < top.txt)" -eq 2560 ]
  run comm -23 top.txt active.txt
  assert_output ""
  # and the toy's doc column bounds every window: 64 rows per document
  jq -s -e '[.[] | .top[] | .doc == (.row / 64 | floor) and (.row - .peak) >= .doc * 64] | all' dash/latents.jsonl
}

@test "--latents, --top, --before/--after, --quantiles/--per-quantile, --contrast, --max-tokens, --seed and --threads do what they say" {
  need_shared
  sae-explain --model "$(stories)" --sae "$(F sae)" "$(F acts.sae)" -o a --latents 3,5-6 --top 3 --before 2 --after 1 \
    --quantiles 2 --per-quantile 4 --contrast 2 --logit-tokens 4 --neighbours 2 --max-tokens 5000 --no-dashboard 2>/dev/null
  jq -s -e 'map(.latent) == [3, 5, 6]' a/latents.jsonl
  jq -s -e 'all(.[]; (.top | length) == 3 and (.quantiles | length) == 2 and all(.quantiles[]; (.examples | length) == 4)
              and (.contrast | length) == 2 and (.logit_lens.top | length) == 4 and (.cofire_neighbours | length) <= 2)' a/latents.jsonl
  jq -s -e '[.[] | (.top + .contrast)[] | (.tokens | length) <= 4 and .peak <= 2] | all' a/latents.jsonl
  jq -e '.rows == 5000' a/summary.json
  [ ! -e a/index.html ]
  sae-explain --model "$(stories)" --sae "$(F sae)" "$(F acts.sae)" -o b --latents 3,5-6 --max-tokens 5000 --seed 1 --no-dashboard 2>/dev/null
  sae-explain --model "$(stories)" --sae "$(F sae)" "$(F acts.sae)" -o c --latents 3,5-6 --max-tokens 5000 --seed 1 --no-dashboard 2>/dev/null
  cmp b/latents.jsonl c/latents.jsonl
  # nor does the thread count change anything
  sae-explain --model "$(stories)" --sae "$(F sae)" "$(F acts.sae)" -o t1 --latents 3,5-6 --max-tokens 5000 --seed 1 --no-dashboard --threads 1 2>/dev/null
  cmp b/latents.jsonl t1/latents.jsonl
  sae-explain --model "$(stories)" --sae "$(F sae)" "$(F acts.sae)" -o d --latents 3,5-6 --max-tokens 5000 --seed 2 --no-dashboard 2>/dev/null
  # the seed moves the samples, never the top contexts
  ! cmp -s b/latents.jsonl d/latents.jsonl
  [ "$(jq -c .top b/latents.jsonl)" = "$(jq -c .top d/latents.jsonl)" ]
}

@test "--hook overrides the SAE's recorded hook for text input, and says so" {
  need_shared
  run sae-explain --model "$(stories)" --sae "$(F sae)" --text "$(F text.txt)" --hook blocks.1.hook_resid_post \
    --max-tokens 500 --no-dashboard -o h
  assert_success
  assert_line "sae-explain: running the model to --hook blocks.1.hook_resid_post, not to the SAE's recorded hook $hook"
  jq -e '.hook == "blocks.1.hook_resid_post" and .rows == 500' h/summary.json
  run sae-explain --sae "$(F sae)" "$(F acts.sae)" --hook $hook -o h2
  assert_failure 1
  assert_line --index 0 "sae-explain: --hook is an option of --text input"
}

@test "an existing output directory is refused, and replaced with --force" {
  need_shared
  mkdir dash
  touch dash/mine
  run sae-explain --sae "$(F sae)" "$(F acts.sae)" -o dash --max-tokens 100
  assert_failure 1
  assert_output "sae-explain: dash: exists (give --force to replace it)"
  [ -f dash/mine ]
  sae-explain --sae "$(F sae)" "$(F acts.sae)" -o dash --max-tokens 100 --force 2>/dev/null
  [ ! -e dash/mine ] && [ -f dash/latents.jsonl ]
  assert_no_output_left . dash
}

@test "bad input: one line naming the file and the problem, exit 1, no output directory" {
  need_shared
  local S=$(F sae)
  # an activations stream of another width
  sae-collect --toy --d 32 --rows 100 -o toy32.sae 2>/dev/null
  run sae-explain --sae "$S" toy32.sae -o out
  assert_failure 1
  assert_output "sae-explain: toy32.sae: rows have d=32 but $S expects d_in=64"
  # an SAE of another width than the model's hook
  sae-train --latents 16 --k 2 --arch topk -o sae32 toy32.sae 2>/dev/null
  run sae-explain --model "$(stories)" --sae sae32 --hook $hook --text "$(F text.txt)" -o out
  assert_failure 1
  assert_output "sae-explain: sae32: the SAE reads 32-wide rows, but $(stories)'s $hook is 64 wide"
  # a stream from another hook
  sae-collect --model "$(stories)" --hook blocks.1.hook_resid_post --text "$(F text.txt)" -o acts1.sae 2>/dev/null
  run sae-explain --sae "$S" acts1.sae -o out
  assert_failure 1
  assert_output "sae-explain: acts1.sae: stream hook 'blocks.1.hook_resid_post' differs from the SAE's hook '$hook'"
  # an SAE recorded for another model than the one given, or than the stream's
  cp -r "$S" other && jq '.metadata.model_name = "gpt2"' "$S/cfg.json" > other/cfg.json
  run sae-explain --model "$(stories)" --sae other --text "$(F text.txt)" -o out
  assert_failure 1
  assert_output "sae-explain: other is for model 'gpt2', but --model $(stories) is 'karpathy/tinyllamas/stories260K'"
  run sae-explain --sae other "$(F acts.sae)" -o out
  assert_failure 1
  assert_output "sae-explain: $(F acts.sae): stream model '$(stories)' differs from the SAE's model 'gpt2'"
  # a latents stream without token and doc columns, and one of another width
  sae-collect --toy --rows 100 --features 128 --latents-out codes.sae -o /dev/null 2>/dev/null
  run sae-explain --model "$(stories)" codes.sae -o out
  assert_failure 1
  assert_output "sae-explain: codes.sae: batch 1: the latents stream has no token and doc columns: sae-explain needs token and doc columns to rebuild each context (sae-collect --model records them, sae-encode carries them through)"
  sae-collect --toy --rows 100 --features 100 --latents-out codes100.sae -o /dev/null 2>/dev/null
  run sae-explain --sae "$S" codes100.sae -o out
  assert_failure 1
  assert_output "sae-explain: codes100.sae: a latents stream of 100 latents, but $S has 128"
  # latents out of range, or not numbers
  run sae-explain --sae "$S" "$(F acts.sae)" -o out --latents 0-9,128
  assert_failure 1
  assert_line --index 0 "sae-explain: --latents: 128 is out of range: the SAE has 128 latents (0-127)"
  run sae-explain --sae "$S" "$(F acts.sae)" -o out --latents 3-x
  assert_failure 1
  assert_line --index 0 "sae-explain: --latents: 'x' is not a latent number (expected e.g. 0-99,512)"
  # empty input: a stream of no rows, and text with no tokens
  npy_f32 empty.npy 0 64 ""
  sae-npy import empty.npy -o empty.sae
  run sae-explain --sae "$S" empty.sae -o out
  assert_failure 1
  assert_output "sae-explain: empty.sae: the input holds no rows"
  printf '\n\n' > blank.txt
  run sae-explain --model "$(stories)" --sae "$S" --text blank.txt -o out
  assert_failure 1
  assert_output --partial "sae-explain: blank.txt"
  # an activations stream with no SAE
  run sae-explain "$(F acts.sae)" -o out
  assert_failure 1
  assert_line --index 0 "sae-explain: $(F acts.sae) is an activations stream: give --sae DIR to encode it"
  [ ! -e out ]
  assert_no_output_left . toy32.sae sae32 acts1.sae other codes.sae codes100.sae empty.npy empty.sae blank.txt
}

# Peak memory is bounded by the examples kept plus 4 bytes per token (docs/explain.md): at 16,384
# latents it stays under the same run's footprint with one latent reported (the binary, its
# libraries, the encoder's blocks, OpenBLAS's and the reader's buffers) plus the formula and a
# small allowance; and 2.5 times the tokens (both runs past the first 32,768-row chunk of firings)
# add no more than their token ids.
@test "peak RSS at d_sae 16384 follows the formula and does not grow with the tokens" {
  [ -x /usr/bin/time ] || skip "/usr/bin/time is absent (Debian package time)"
  sae-collect --toy --d 64 --features 16384 --active 16 --rows 100000 --context 128 --truth truth -o toy.sae 2>/dev/null
  jq '.architecture = "topk" | .k = 16' truth/cfg.json > cfg && mv cfg truth/cfg.json
  rss() {
    /usr/bin/time -f %M -o rss.txt sae-explain --sae truth toy.sae -o "$1" --max-tokens "$2" --cofire-rows 8192 "${@:3}" 2>/dev/null
    cat rss.txt
  }
  base=$(rss one 100000 --latents 0)
  small=$(rss a 40000)
  large=$(rss b 100000)
  # docs/explain.md: d_sae x ((N + Q*S) x (4 (before + 1 + after) + 48) + 1.2 kB) + 4 B per token
  # + 4 B per active latent of each co-firing sample row (k = 16 here) + a chunk of 32,768 rows'
  # firings (24 B each) + the decoder-cosine pass (a copy of W_dec and a 256 x d_sae block)
  formula_kb=$(( (16384 * (70 * (4 * 33 + 48) + 1200) + 4 * 100000 + 4 * 16 * 8192 + 24 * 16 * 32768 +
                  4 * 16384 * (64 + 256)) / 1024 ))
  echo "rss ${small} kB at 40k tokens, ${large} kB at 100k; with one latent ${base} kB; formula ${formula_kb} kB" >&3
  [ "$large" -le $(( base + formula_kb + 24 * 1024 )) ]
  [ $(( large - small )) -le $(( 60000 * 4 / 1024 + 16 * 1024 )) ]
  jq -e '.latents_reported == 16384' b/summary.json
  [ "$(wc -l < b/latents.jsonl)" -eq 16384 ]
}
