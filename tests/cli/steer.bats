#!/usr/bin/env bats
# sae-steer: the command line around lib/steer (whose arithmetic tests/unit/steer/test_steer.cpp
# checks): the records and pages it writes, the identities that hold through the binary, the same
# text on any thread count, and one-line messages for bad input. The SAE is trained here, on
# stories260K's blocks.2.hook_resid_post, in a few seconds.
load helper
load stream_helper
load sae_helper
load llm_helper

stories() { echo "$SAE_SHARED/models/stories260K"; }

setup_file() {
  [ -d "${SAE_SHARED:-/nonexistent}/models" ] || return 0
  cd "$BATS_FILE_TMPDIR"
  "$SAE_BIN/sae-collect" --model "$SAE_SHARED/models/stories260K" --hook blocks.2.hook_resid_post \
    --text "$SAE_SHARED/data/tinystories-sample.txt" -o acts.sae 2>/dev/null
  "$SAE_BIN/sae-train" --latents 128 --k 8 --arch topk -o sae acts.sae 2>/dev/null
}

sae() { echo "$BATS_FILE_TMPDIR/sae"; }

# every FILE SELECT COND: some records of FILE match SELECT, and COND holds for each of them.
every() {
  jq -s -e "[.[] | select($2)] | length > 0 and all($3)" "$1"
}

@test "--help lists every option with its default" {
  run sae-steer --help
  assert_success
  for opt in "--model arg" "--sae arg" "--hook arg" "--steer arg" "--prompt arg" "--prompts arg" "--alpha arg" \
             "--unit arg (=abs)" "--positions arg (=all)" "--max-new-tokens arg (=32)" "--temperature arg (=0)" \
             "--top-k arg (=0)" "--top-p arg (=1)" "--seed arg (=0)" "--ignore-eos" "--random-controls arg (=3)" \
             "--density-controls arg (=1)" "--control-seed arg (=1)" "--target-tokens arg" "--stats-text arg" \
             "--stats-tokens arg (=20000)" "-o [ --output ] arg (=-)" "--html arg" "--svg arg" "--compute arg (=f32)" "--device arg"; do
    assert_output --partial -- "$opt"
  done
}

@test "a sweep with controls: one record per prompt and run, alpha 0 is the unsteered text, pages written" {
  need_shared
  printf 'Once upon a time\n\nLily went to the park\n' > prompts.txt
  run sae-steer --model "$(stories)" --sae "$(sae)" --steer 5:add --alpha 0,6 --prompts prompts.txt \
    --max-new-tokens 12 --random-controls 2 --density-controls 1 --target-tokens Lily \
    --html steer.html --svg steer.svg -o steer.jsonl
  assert_success
  # 2 prompts x (unsteered + 2 alphas x (steered + 2 random + 1 density-matched))
  [ "$(wc -l < steer.jsonl)" = 18 ]
  [ "$(jq -r 'select(.setting == "unsteered") | .prompt' steer.jsonl | tr '\n' ' ')" = "0 1 " ]
  for p in 0 1; do
    un=$(jq -r "select(.setting == \"unsteered\" and .prompt == $p) | .text" steer.jsonl)
    zero=$(jq -r "select(.setting == \"steered\" and .alpha == 0 and .prompt == $p) | .text" steer.jsonl)
    [ -n "$un" ] && [ "$un" = "$zero" ]
  done
  every steer.jsonl '.setting == "steered" and .alpha == 0' '.measures.mean_kl == 0'
  every steer.jsonl '.setting == "steered" and .alpha == 6' '.measures.mean_kl > 0'
  every steer.jsonl '.setting == "random-direction"' '.interventions[0].direction == "random"'
  every steer.jsonl '.setting == "density-matched"' '.interventions[0].latent != 5'
  every steer.jsonl '.setting == "unsteered"' '(.measures.target_prob | type) == "number"'
  every steer.jsonl '.setting == "steered"' '(.measures.kl | length) == (.tokens | length)'
  # the sweep's means on stderr, a row per setting and alpha
  assert_output --partial "setting            alpha      runs  mean KL"
  assert_line --regexp '^random-direction +6 +4 '
  grep -q '<!DOCTYPE html>' steer.html
  [ "$(grep -c '<tr class=' steer.html)" = 18 ]
  grep -q 'Once upon a time' steer.html
  grep -q '<svg' steer.svg
  grep -q 'random-direction' steer.svg
}

@test "the same text whatever the thread count, sampling included" {
  need_shared
  args=(--model "$(stories)" --sae "$(sae)" --steer 5:add=4 --prompt "Once upon a time" --max-new-tokens 16
        --temperature 1 --top-p 0.9 --random-controls 1 --density-controls 0)
  OMP_NUM_THREADS=1 sae-steer "${args[@]}" --seed 7 -o one.jsonl 2>/dev/null
  OMP_NUM_THREADS=2 sae-steer "${args[@]}" --seed 7 -o two.jsonl 2>/dev/null
  [ -s one.jsonl ]
  run diff <(jq -c '[.setting, .tokens]' one.jsonl) <(jq -c '[.setting, .tokens]' two.jsonl)
  assert_success
  # another seed samples another text
  sae-steer "${args[@]}" --seed 8 -o other.jsonl 2>/dev/null
  run diff <(jq -c '.tokens' one.jsonl) <(jq -c '.tokens' other.jsonl)
  assert_failure
}

@test "--ignore-eos, --top-k, --control-seed do what they say" {
  need_shared
  # A model whose EOS is the third token greedy decoding writes (stories260K itself never ends a
  # story with EOS): without --ignore-eos the unsteered continuation stops there, EOS kept.
  common=(--sae "$(sae)" --steer 5:add=0 --prompt "Once upon a time" --max-new-tokens 12 --random-controls 0 --density-controls 0)
  sae-steer --model "$(stories)" "${common[@]}" -o greedy.jsonl 2>/dev/null
  eos=$(jq -r 'select(.setting == "unsteered") | .tokens[2]' greedy.jsonl)
  mkdir m
  for f in "$(stories)"/*; do ln -s "$f" m/; done
  rm m/config.json
  jq ".eos_token_id = $eos" "$(stories)/config.json" > m/config.json
  sae-steer --model m "${common[@]}" -o stop.jsonl 2>/dev/null
  every stop.jsonl '.setting == "unsteered"' ".ended_at_eos and (.tokens | length) == 3 and .tokens[-1] == $eos"
  sae-steer --model m "${common[@]}" --ignore-eos -o go.jsonl 2>/dev/null
  every go.jsonl '.setting == "unsteered"' '(.ended_at_eos | not) and (.tokens | length) == 12'
  # top-k 1 samples the most likely token: greedy, whatever the temperature and seed
  sae-steer --model "$(stories)" "${common[@]}" --temperature 1.5 --top-k 1 --seed 9 -o topk.jsonl 2>/dev/null
  [ "$(jq -c .tokens topk.jsonl)" = "$(jq -c .tokens greedy.jsonl)" ]
  # the control seed moves the random directions and nothing else
  args=(--model "$(stories)" --sae "$(sae)" --steer 5:add=6 --prompt "Once upon a time" --max-new-tokens 12
        --random-controls 1 --density-controls 0)
  sae-steer "${args[@]}" --control-seed 1 -o c1.jsonl 2>/dev/null
  sae-steer "${args[@]}" --control-seed 2 -o c2.jsonl 2>/dev/null
  [ "$(jq -c 'select(.setting != "random-direction") | .tokens' c1.jsonl)" = "$(jq -c 'select(.setting != "random-direction") | .tokens' c2.jsonl)" ]
  [ "$(jq -c 'select(.setting == "random-direction") | .measures.mean_kl' c1.jsonl)" != "$(jq -c 'select(.setting == "random-direction") | .measures.mean_kl' c2.jsonl)" ]
}

@test "clamp and ablate; steering only the generated tokens leaves the first one as it was" {
  need_shared
  run sae-steer --model "$(stories)" --sae "$(sae)" --steer 5:clamp=20 --steer 9:ablate --positions generated \
    --prompt "Once upon a time" --max-new-tokens 10 --random-controls 1 --density-controls 0 -o r.jsonl
  assert_success
  first_un=$(jq -r 'select(.setting == "unsteered") | .tokens[0]' r.jsonl)
  first_st=$(jq -r 'select(.setting == "steered") | .tokens[0]' r.jsonl)
  [ "$first_un" = "$first_st" ]
  every r.jsonl '.setting == "steered"' '.measures.mean_kl > 0 and .positions == "generated"'
  every r.jsonl '.setting == "steered"' '[.interventions[].spec] == ["5:clamp=20", "9:ablate"]'
  # ablating to the mean and --unit max need the latents' statistics
  run sae-steer --model "$(stories)" --sae "$(sae)" --steer 5:ablate=mean --prompt "Once" -o r.jsonl
  assert_failure 1
  assert_line --index 0 "sae-steer: --steer '5:ablate=mean': ablating to the mean needs each latent's mean activation: give --stats-text"
  run sae-steer --model "$(stories)" --sae "$(sae)" --steer 5:ablate=mean --steer 5:add=1 --unit max --prompt "Once" \
    --stats-text "$SAE_SHARED/data/tinystories-sample.txt" --stats-tokens 3000 --max-new-tokens 4 -o r.jsonl
  assert_success
  # --stats-tokens bounds the text measured: another budget, other statistics, another effect
  run sae-steer --model "$(stories)" --sae "$(sae)" --steer 5:ablate=mean --steer 5:add=1 --unit max --prompt "Once" \
    --stats-text "$SAE_SHARED/data/tinystories-sample.txt" --stats-tokens 40 --max-new-tokens 4 -o r40.jsonl
  assert_success
  [ "$(jq -c 'select(.setting == "steered") | .measures.kl' r.jsonl)" != "$(jq -c 'select(.setting == "steered") | .measures.kl' r40.jsonl)" ]
}

@test "bad input: one line naming the problem, exit 1, no output left" {
  need_shared
  check() {
    local want=$1
    shift
    run sae-steer --model "$(stories)" "$@" -o out.jsonl
    assert_failure 1
    assert_line --index 0 "$want"
    [ ! -e out.jsonl ]
  }
  check "sae-steer: --steer '999:add=1': latent 999 is out of range ($(sae) has 128 latents, 0-127)" \
    --sae "$(sae)" --steer 999:add=1 --prompt hi
  check "sae-steer: --alpha: 'x' is not a number (expected a comma-separated list, e.g. 0,5,10)" \
    --sae "$(sae)" --steer 3:add --alpha 1,x --prompt hi
  check "sae-steer: --steer '3:add' has no value: give it one, or --alpha" --sae "$(sae)" --steer 3:add --prompt hi
  check "sae-steer: --target-tokens: 'hello world' is 6 tokens of the model's vocabulary, not one" \
    --sae "$(sae)" --steer 3:add=2 --prompt hi --target-tokens "hello world"
  check "sae-steer: --max-new-tokens 600 after a prompt of 3 tokens needs 602 positions, more than the model's 512 (max_position_embeddings)" \
    --sae "$(sae)" --steer 3:add=2 --prompt hi --max-new-tokens 600
  printf 'Once upon a time %.0s' {1..200} > long.txt
  check "sae-steer: prompt 'Once upon a time Once upon a time Once u' is 801 tokens, longer than the model's 512 positions (max_position_embeddings)" \
    --sae "$(sae)" --steer 3:add=2 --prompts long.txt
  hand_sae narrow
  check "sae-steer: narrow: the SAE's d_in 2 does not match d_model 64 of the model $(stories)" \
    --sae narrow --hook blocks.0.hook_resid_post --steer 1:add=1 --prompt hi
  cp -r "$(sae)" deep
  sed -i 's/blocks\.2\.hook_resid_post/blocks.9.hook_resid_post/' deep/cfg.json
  check "sae-steer: deep: the SAE's hook blocks.9.hook_resid_post is not a hook of the model $(stories) (hook 'blocks.9.hook_resid_post': layer 9 is out of range (the model has 5 layers, 0-4))" \
    --sae deep --steer 1:add=1 --prompt hi
  check "sae-steer: no prompts: give --prompt TEXT or --prompts FILE" --sae "$(sae)" --steer 3:add=2
  check "sae-steer: --compute bf16 runs on the GPU only (--device cuda): the CPU computes in f32" \
    --sae "$(sae)" --steer 3:add=2 --prompt hi --compute bf16
}

# ---- the LLM judge (--llm-url), against the OpenAI-compatible test server
# (tests/support/mock_llm_server.h), whose judge mode rates by rules these tests predict from the
# JSONL: concept 2 if the continuation contains the concept (case folded) else 0; instruction 0 for
# an empty continuation, else 2 if it contains the prompt's first word, else 1; fluency 0 for an
# empty continuation, else 2 if it holds a '.', else 1.


judge_args() {
  echo --model "$(stories)" --sae "$(sae)" --steer 5:add=4 --max-new-tokens 12 --random-controls 1 --density-controls 0
}

# The ratings each record should have, by the test server's rules, against those it has.
judge_predicted() {
  jq -e -s --arg c "$1" '
    length > 0 and all(.[];
      (.text | gsub("^\\s+|\\s+$"; "")) as $t | ($t | ascii_downcase) as $low |
      (.prompt_text | split(" ")[0] | ascii_downcase) as $first |
      (if ($low | contains($c | ascii_downcase)) then 2 else 0 end) as $concept |
      (if $t == "" then 0 elif ($low | contains($first)) then 2 else 1 end) as $instr |
      (if $t == "" then 0 elif ($t | contains(".")) then 2 else 1 end) as $flu |
      (if ($concept * $instr * $flu) == 0 then 0 else 3 / (1 / $concept + 1 / $instr + 1 / $flu) end) as $h |
      .measures.judge == {concept: $concept, instruction: $instr, fluency: $flu, harmonic: $h})' "$2"
}

@test "--help and --version: the judge's options, and whether libcurl is built in" {
  run sae-steer --help
  assert_success
  for opt in "--judge-concept arg" "--llm-url arg" "--llm-model arg" "--llm-key-env arg (=OPENAI_API_KEY)" \
             "--llm-parallel arg (=8)" "--llm-timeout arg (=120)" "--llm-retries arg (=4)" "--llm-max-requests arg (=0)" \
             "--llm-max-tokens arg (=0)" "--llm-cache arg" "--llm-dry-run"; do
    assert_output --partial -- "$opt"
  done
  run sae-steer --version
  assert_output --regexp 'libcurl.*(built in|not built in)'
}

@test "--llm-url: every continuation judged, in parallel, as the server's rules predict; the cache answers a re-run" {
  need_shared
  need_curl sae-steer
  mock --mode judge --delay-ms 100
  run sae-steer $(judge_args) --prompt "Once upon a time" --prompt "Lily went to the park" \
    --llm-url "$MOCK_URL" --llm-model mock --judge-concept lily --llm-parallel 4 --llm-cache cache \
    --html j.html -o j.jsonl
  assert_success
  # 2 prompts x (unsteered, steered, 1 random control), 3 requests each
  [ "$(wc -l < j.jsonl)" = 6 ]
  judge_predicted lily j.jsonl
  [ "$(mock_stat requests)" = 18 ]
  [ "$(mock_stat max_same)" = 1 ]
  [ "$(mock_stat max_in_flight)" = 4 ]
  assert_output --partial "sae-steer: llm: 18 requests sent, 0 answered from the cache; "
  assert_output --partial "concept  instruct  fluency  harmonic"
  grep -q '<th>judge: concept</th>' j.html
  # again with the cache: the same ratings, no request
  run sae-steer $(judge_args) --prompt "Once upon a time" --prompt "Lily went to the park" \
    --llm-url "$MOCK_URL" --llm-model mock --judge-concept lily --llm-cache cache -o again.jsonl
  assert_success
  assert_output --partial "sae-steer: llm: 0 requests sent, 18 answered from the cache"
  [ "$(mock_stat requests)" = 18 ]
  [ "$(jq -c .measures.judge j.jsonl)" = "$(jq -c .measures.judge again.jsonl)" ]
  # another concept: the concept prompts are new requests (3), the instruction and fluency ones of the
  # same continuations are answered from the cache
  run sae-steer $(judge_args) --prompt "Once upon a time" --llm-url "$MOCK_URL" --llm-model mock --judge-concept park \
    --llm-cache cache -o park.jsonl
  assert_success
  judge_predicted park park.jsonl
  [ "$(mock_stat requests)" = 21 ]
  # alpha 0: the steered and control texts are the unsteered one, and each distinct request goes out once
  run sae-steer --model "$(stories)" --sae "$(sae)" --steer 5:add=0 --max-new-tokens 12 --random-controls 1 \
    --density-controls 0 --prompt "Lily went to the park" --llm-url "$MOCK_URL" --llm-model mock --judge-concept dog -o zero.jsonl
  assert_success
  judge_predicted dog zero.jsonl
  [ "$(jq -r .text zero.jsonl | sort -u | wc -l)" = 1 ]
  [ "$(mock_stat requests)" = 24 ]  # 3 records, 3 requests each, 3 distinct
}

@test "--llm-url: a 429 with Retry-After is waited out; --llm-dry-run sends nothing" {
  need_shared
  need_curl sae-steer
  mock --mode judge --fail 429 --fail-first 1 --retry-after 1
  run sae-steer $(judge_args) --prompt "Once upon a time" --llm-url "$MOCK_URL" --llm-model mock --judge-concept girl -o r.jsonl
  assert_success
  judge_predicted girl r.jsonl
  [ "$(mock_stat requests)" = 10 ]
  assert_output --partial "llm: 9 requests sent (1 retry)"
  stop_mock
  mock --mode judge
  run sae-steer $(judge_args) --prompt "Once upon a time" --llm-url "$MOCK_URL" --llm-model mock --judge-concept girl \
    --llm-dry-run --llm-cache c -o d.jsonl
  assert_success
  [ "$(mock_stat requests)" = 0 ]
  [ "$(wc -l < c/dry-run.jsonl)" = 9 ]
  jq -e -s 'all(.[]; (.messages[0].content | contains("<text>")) and .model == "mock")' c/dry-run.jsonl
  jq -e -s 'all(.[]; .measures.judge == null)' d.jsonl
}

@test "--llm-url errors: one line naming the endpoint, exit 1, no output, the key never printed" {
  need_shared
  need_curl sae-steer
  judge_fails() {
    local want=$1
    shift
    run sae-steer $(judge_args) --prompt "Once upon a time" --llm-model mock --judge-concept girl "$@" -o out.jsonl
    assert_failure 1
    assert_line --index 0 "$want"
    [ ! -e out.jsonl ]
  }
  run sae-steer $(judge_args) --prompt hi --llm-url http://127.0.0.1:9/v1 --llm-model mock -o out.jsonl
  assert_failure 1
  assert_line --index 0 "sae-steer: --llm-url needs --judge-concept TEXT, the concept the judge rates each continuation on"
  run sae-steer $(judge_args) --prompt hi --judge-concept girl -o out.jsonl
  assert_failure 1
  assert_line --index 0 "sae-steer: --judge-concept needs --llm-url, the LLM that judges"
  run sae-steer $(judge_args) --prompt hi --judge-concept girl --llm-url http://127.0.0.1:9/v1 --llm-model "" -o out.jsonl
  assert_failure 1
  assert_line --index 0 "sae-steer: --llm-url needs --llm-model (the name the endpoint serves the model under)"
  judge_fails "sae-steer: --llm-url: 'localhost:8000/v1' is not an http:// or https:// URL" --llm-url localhost:8000/v1
  # nothing listens: a port the test server had, then gave back
  mock
  dead=$MOCK_URL
  stop_mock
  run sae-steer $(judge_args) --prompt "Once upon a time" --llm-model mock --judge-concept girl --llm-url "$dead" \
    --llm-retries 1 -o out.jsonl
  assert_failure 1
  assert_line --index 0 --regexp "^sae-steer: judge: $dead/chat/completions: cannot connect \(.*\); is the server running\? \(after 2 tries\)$"
  [ ! -e out.jsonl ]

  mock --mode judge --key right-key
  SAE_TEST_JUDGE_KEY=wrong-secret-key judge_fails \
    "sae-steer: judge: $MOCK_URL/chat/completions: HTTP 401, the key was refused: check the key in \$SAE_TEST_JUDGE_KEY (--llm-key-env names the variable)" \
    --llm-url "$MOCK_URL" --llm-key-env SAE_TEST_JUDGE_KEY
  refute_output --partial wrong-secret-key
  # the right key passes
  SAE_TEST_JUDGE_KEY=right-key run sae-steer $(judge_args) --prompt "Once upon a time" --llm-model mock \
    --judge-concept girl --llm-url "$MOCK_URL" --llm-key-env SAE_TEST_JUDGE_KEY -o ok.jsonl
  assert_success
  stop_mock

  mock --mode judge --fail 429 --retry-after 0
  judge_fails "sae-steer: judge: $MOCK_URL/chat/completions: HTTP 429, rate limited (after 2 tries); lower --llm-parallel or raise --llm-retries" \
    --llm-url "$MOCK_URL" --llm-retries 1
  stop_mock
  mock --mode judge --fail 500
  judge_fails "sae-steer: judge: $MOCK_URL/chat/completions: HTTP 500 (server error: mock internal error)" \
    --llm-url "$MOCK_URL" --llm-retries 0
  stop_mock
  mock --mode judge --fail malformed
  judge_fails "sae-steer: judge: $MOCK_URL/chat/completions: the response is not JSON: '{\"choices\": [{\"message\": '" \
    --llm-url "$MOCK_URL"
  stop_mock
  mock --mode judge --fail no-choices
  judge_fails "sae-steer: judge: $MOCK_URL/chat/completions: the response has no choices" --llm-url "$MOCK_URL"
  stop_mock
  mock --mode judge --fail slow --slow-ms 5000
  judge_fails "sae-steer: judge: $MOCK_URL/chat/completions: no answer within --llm-timeout 0.5 s" \
    --llm-url "$MOCK_URL" --llm-timeout 0.5 --llm-retries 0
  stop_mock
  # the budget: what was answered is kept in the cache, and the next run sends only the rest
  mock --mode judge
  judge_fails "sae-steer: judge: $MOCK_URL/chat/completions: the budget is spent (--llm-max-requests 4); the answers received are kept in cache" \
    --llm-url "$MOCK_URL" --llm-parallel 2 --llm-max-requests 4 --llm-cache cache
  [ "$(mock_stat requests)" = 4 ]
  run sae-steer $(judge_args) --prompt "Once upon a time" --llm-model mock --judge-concept girl --llm-url "$MOCK_URL" \
    --llm-cache cache -o out.jsonl
  assert_success
  assert_output --partial "llm: 5 requests sent, 4 answered from the cache"
  [ "$(mock_stat requests)" = 9 ]
}
