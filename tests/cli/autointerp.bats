#!/usr/bin/env bats
# sae-explain --explain/--score (docs/autointerp.md) against the OpenAI-compatible test server
# (tests/support/mock_llm_server.h) in its autointerp mode, whose answers follow from the prompt: it
# explains a latent by the span most often marked <<...>>, and says a context activates (detection),
# has the right marks (fuzzing) or fires at 10 (simulation) iff it contains that span.
#
# The input: 6000 rows in documents of 60 tokens over a vocabulary of 300, encoded by an identity
# ReLU SAE (hand-written safetensors) of 12 latents: latents 0-3 are 1.0 exactly on tokens 7-10
# (each about 2% of tokens); latents 4-11 fire at random (3% of rows). The known-token latents must
# score 1 by every method, the random ones near chance.
load helper
load stream_helper
load sae_helper
load llm_helper

D=12

setup_file() {
  cd "$BATS_FILE_TMPDIR"
  local n=6000 eye="" i j
  for ((i = 0; i < D; i++)); do for ((j = 0; j < D; j++)); do eye+="$([ $i = $j ] && echo 1 || echo 0) "; done; done
  mkdir -p sae
  cat >sae/cfg.json <<JSON
{"architecture": "standard", "d_in": $D, "d_sae": $D, "dtype": "float32", "device": "cpu",
 "apply_b_dec_to_input": false, "normalize_activations": "none", "reshape_activations": "none",
 "metadata": {"sae_lens_version": "6.5.0", "model_name": "toy", "hook_name": "toy"}}
JSON
  local zeros
  zeros=$(printf '0 %.0s' $(seq $D))
  safetensors sae/sae_weights.safetensors W_enc "[$D,$D]" "$eye" b_enc "[$D]" "$zeros" W_dec "[$D,$D]" "$eye" b_dec "[$D]" "$zeros"
  # tokens (int32), docs (int64) and the rows (float32), from one seeded awk.
  npy_header '<i4' "($n,)" >tok.npy
  npy_header '<i8' "($n,)" >doc.npy
  npy_header '<f4' "($n, $D)" >x.npy
  LC_ALL=C awk -v n=$n -v d=$D 'function le(v, w, f,   b) { for (b = 0; b < w; b++) { printf "%c", v % 256 > f; v = int(v / 256) } }
    function f32(v, f) {
      if (v == 0) printf "%c%c%c%c", 0, 0, 0, 0 > f
      else if (v == 1) printf "%c%c%c%c", 0, 0, 128, 63 > f
      else if (v == 0.5) printf "%c%c%c%c", 0, 0, 0, 63 > f
      else if (v == 1.5) printf "%c%c%c%c", 0, 0, 192, 63 > f
      else printf "%c%c%c%c", 0, 0, 0, 64 > f
    }
    BEGIN {
      srand(3)
      for (r = 0; r < n; r++) {
        t = rand() < 0.08 ? 7 + int(rand() * 4) : int(rand() * 300)
        le(t, 4, "tok.body"); le(int(r / 60), 8, "doc.body")
        for (j = 0; j < d; j++) {
          v = 0
          if (j < 4) v = (t == 7 + j) ? 1 : 0
          else if (rand() < 0.03) v = 0.5 * (1 + int(rand() * 4))
          f32(v, "x.body")
        }
      }
    }'
  cat tok.body >>tok.npy && cat doc.body >>doc.npy && cat x.body >>x.npy
  rm -f tok.body doc.body x.body
  "$SAE_BIN/sae-npy" import x.npy --token tok.npy --doc doc.npy --hook toy --model toy -o acts.sae 2>/dev/null
}


explain() { sae-explain --sae "$BATS_FILE_TMPDIR/sae" "$BATS_FILE_TMPDIR/acts.sae" --no-dashboard "$@"; }

@test "--help lists the autointerp options" {
  run sae-explain --help
  assert_success
  for opt in "--explain" "--score arg" "--mark-fraction arg (=0)" "--show-activations" "--score-batch arg (=10)" \
             "--no-logprobs" "--prompt-dir arg" "--llm-url arg" "--llm-model arg" "--llm-parallel arg (=8)" \
             "--llm-cache arg (=OUT.llm-cache)" "--llm-dry-run"; do
    assert_output --partial -- "$opt"
  done
}

@test "known-token latents score 1, random ones near chance; summary and table; a re-run is answered by the cache" {
  need_curl sae-explain
  mock --mode autointerp
  run explain -o out --score all --llm-url "$MOCK_URL" --llm-model mock --llm-parallel 4
  assert_success
  assert_output --partial "uniform mean [95% CI]"
  assert_output --partial "weighted by firing [95% CI]"
  [ -d out.llm-cache ]
  [ "$(wc -l < out/latents.jsonl)" = $D ]
  for l in 0 1 2 3; do
    jq -s -e --argjson l $l 'map(select(.latent == $l))[0] |
      .explanation == "the token \"[\($l + 7)]\"" and .score == 1 and
      .autointerp.scores.detection.balanced_accuracy == 1 and .autointerp.scores.detection.auc == 1 and
      .autointerp.scores.fuzzing.balanced_accuracy == 1 and .autointerp.scores.simulation.spearman == 1' out/latents.jsonl
  done
  jq -s -e '[.[] | select(.latent >= 4) | .autointerp.scores.detection.balanced_accuracy] | add / length | . > 0.3 and . < 0.7' out/latents.jsonl
  jq -s -e '[.[] | select(.latent >= 4) | .autointerp.scores.simulation.spearman // 0] | add / length | . > -0.3 and . < 0.3' out/latents.jsonl
  jq -e '.autointerp.detection.latents == 12 and (.autointerp.detection.uniform_mean | type) == "number" and
         (.autointerp.detection.weighted_ci95 | length) == 2 and (.autointerp.simulation.deciles | length) == 10' out/summary.json
  [ "$(mock_stat max_same)" = 1 ]
  sent=$(mock_stat requests)
  run explain -o out --force --score all --llm-url "$MOCK_URL" --llm-model mock
  assert_success
  assert_output --partial "llm: 0 requests sent, $sent answered from the cache"
  [ "$(mock_stat requests)" = "$sent" ]
}

@test "the dashboard carries the explanations and scores, the index sorted by score" {
  need_curl sae-explain
  mock --mode autointerp
  run sae-explain --sae "$BATS_FILE_TMPDIR/sae" "$BATS_FILE_TMPDIR/acts.sae" -o dash --score detection \
    --llm-url "$MOCK_URL" --llm-model mock
  assert_success
  grep -q 'the token' dash/data/index.js
  grep -q 'balanced_accuracy' dash/data/*.js
}

@test "--llm-dry-run writes the explanation prompts, sends nothing and writes no output" {
  need_curl sae-explain
  mock --mode autointerp
  run explain -o dry --score detection --llm-url "$MOCK_URL" --llm-model mock --llm-dry-run
  assert_success
  assert_output --partial "dry run: $D requests written to dry.llm-cache/dry-run.jsonl"
  [ ! -e dry ]
  [ "$(wc -l < dry.llm-cache/dry-run.jsonl)" = $D ]
  [ "$(mock_stat requests)" = 0 ]
  jq -r '.messages[-1].content' dry.llm-cache/dry-run.jsonl | grep -q '^# Explain a latent'
  jq -r '.messages[-1].content' dry.llm-cache/dry-run.jsonl | grep -q '<<\[7\]>>'
}

@test "a budget stops the run with one line; the same command resumes and never sends a request twice" {
  need_curl sae-explain
  mock --mode autointerp
  run explain -o b --score detection --llm-url "$MOCK_URL" --llm-model mock --llm-parallel 1 --llm-max-requests 5
  assert_failure 1
  assert_output --partial "the budget is spent (--llm-max-requests 5)"
  [ "${#lines[@]}" = 1 ]
  [ ! -e b ]
  [ "$(mock_stat requests)" = 5 ]
  run explain -o b --score detection --llm-url "$MOCK_URL" --llm-model mock
  assert_success
  assert_output --partial "answered from the cache"
  [ "$(mock_stat max_same)" = 1 ]
  jq -s -e 'map(select(.latent == 0))[0] | .score == 1' b/latents.jsonl
}

@test "a signal stops the run (exit 143, no output) after the requests in flight are in the cache; the next run resumes" {
  need_curl sae-explain
  mock --mode autointerp --delay-ms 300
  # SIGTERM: a background job of a non-interactive shell ignores SIGINT; the tool treats both alike.
  sae-explain --sae "$BATS_FILE_TMPDIR/sae" "$BATS_FILE_TMPDIR/acts.sae" --no-dashboard -o s --score detection \
    --llm-url "$MOCK_URL" --llm-model mock --llm-parallel 2 2>err &
  pid=$!
  sleep 1.5
  kill -TERM $pid
  st=0
  wait $pid || st=$?
  [ "$st" = 143 ] || fail "exit $st: $(cat err)"
  [ ! -e s ]
  sent=$(mock_stat requests)
  [ "$sent" -ge 2 ]
  # every request the server received was answered into the cache
  [ "$(find s.llm-cache -name '*.json' | wc -l)" = "$sent" ]
  run explain -o s --score detection --llm-url "$MOCK_URL" --llm-model mock --llm-parallel 8
  assert_success
  assert_output --partial "answered from the cache"
  [ "$(mock_stat max_same)" = 1 ]
}

@test "--prompt-dir replaces a template; a bad one is refused" {
  need_curl sae-explain
  mock --mode autointerp
  mkdir prompts
  printf 'SYS\n----\n# Explain a latent\nCUSTOM PROMPT\n{{examples}}\n' > prompts/explain.txt
  run explain -o p --explain --llm-url "$MOCK_URL" --llm-model mock --llm-dry-run --prompt-dir prompts
  assert_success
  jq -r '.messages[-1].content' p.llm-cache/dry-run.jsonl | grep -q 'CUSTOM PROMPT'
  run explain -o p --explain --llm-url "$MOCK_URL" --llm-model mock --prompt-dir nowhere
  assert_failure 1
  assert_output "sae-explain: nowhere: not a directory (--prompt-dir)"
  run explain -o p --score detect --llm-url "$MOCK_URL" --llm-model mock
  assert_failure 1
  assert_output --partial "--score: unknown method 'detect'"
  run explain -o p --explain
  assert_failure 1
  assert_output --partial "--llm-url"
}

# ---- error paths: each one line, exit 1, no output directory, the cache kept

fails_with() {
  assert_failure 1
  [ "${#lines[@]}" = 1 ] || fail "not one line: $output"
  assert_output --partial "$1"
  [ ! -e e ]
}

@test "errors: connection refused" {
  need_curl sae-explain
  mock --mode autointerp
  port=$(cat "$T/mock.port")
  stop_mock
  run explain -o e --explain --llm-url "http://127.0.0.1:$port/v1" --llm-model mock --llm-retries 0
  fails_with "http://127.0.0.1:$port/v1/chat/completions: cannot connect"
}

@test "errors: 401 names the key variable, never the key" {
  need_curl sae-explain
  mock --mode autointerp --fail 401
  export MY_SECRET_KEY=sk-very-secret
  run explain -o e --explain --llm-url "$MOCK_URL" --llm-model mock --llm-key-env MY_SECRET_KEY
  fails_with 'HTTP 401, the key was refused: check the key in $MY_SECRET_KEY'
  refute_output --partial "sk-very-secret"
  ! grep -rq "sk-very-secret" e.llm-cache 2>/dev/null
}

@test "errors: 429 with Retry-After is honoured, then the run completes" {
  need_curl sae-explain
  mock --mode autointerp --fail 429 --fail-first 2 --retry-after 1
  run explain -o ok --explain --llm-url "$MOCK_URL" --llm-model mock --llm-parallel 1 --latents 0-1
  assert_success
  # both first tries got 429 with Retry-After: 1; their retries came a second later
  [ "$(mock_stat requests)" = 4 ]
  jq -e ".arrivals[2] - .arrivals[0] >= 0.95" "$T/mock.stats"
  jq -s -e 'map(select(.latent == 0))[0] | .explanation == "the token \"[7]\""' ok/latents.jsonl
}

@test "errors: 500, malformed JSON, no choices, a server slower than the timeout" {
  need_curl sae-explain
  mock --mode autointerp --fail 500
  run explain -o e --explain --llm-url "$MOCK_URL" --llm-model mock --llm-retries 0
  fails_with "/chat/completions: HTTP 500"
  stop_mock
  mock --mode autointerp --fail malformed
  run explain -o e --explain --llm-url "$MOCK_URL" --llm-model mock
  fails_with "the response is not JSON"
  stop_mock
  mock --mode autointerp --fail no-choices
  run explain -o e --explain --llm-url "$MOCK_URL" --llm-model mock
  fails_with "the response has no choices"
  stop_mock
  mock --mode autointerp --fail slow --slow-ms 3000
  run explain -o e --explain --llm-url "$MOCK_URL" --llm-model mock --llm-timeout 1 --llm-retries 0
  fails_with "no answer within --llm-timeout 1 s"
  assert_output --partial "(the answers received are kept in e.llm-cache: the same command resumes from them)"
}
