#!/usr/bin/env bats
# sae-tokenize: reference ids, formats, decoding, BOS options, invalid UTF-8, bad usage.
load helper
bats_require_minimum_version 1.5.0

M() { echo "$SAE_SHARED/models/$1"; }

# stories260K needs libsentencepiece, which the build may lack.
need_sentencepiece() {
  need_shared
  if sae-tokenize -m "$(M stories260K)" --info 2>&1 | grep -q "built without libsentencepiece"; then
    skip "saetools was built without libsentencepiece"
  fi
}

@test "sae-tokenize --help lists every option with its default" {
  run sae-tokenize --help
  assert_success
  for opt in --model --bos --format --lines --no-special --invalid-utf8 --decode --info --output; do
    assert_output --partial -- "$opt"
  done
  assert_output --partial '(=auto)'
  assert_output --partial '(=ids)'
  assert_output --partial '(=error)'
}

@test "GPT-2 reference ids with --bos always (as the references and TransformerLens prepend BOS)" {
  need_shared
  printf 'Once upon a time, there was a little girl named Lily. She loved to play outside.' > t.txt
  run sae-tokenize -m "$(M gpt2-random)" --bos always t.txt
  assert_success
  assert_output "50256 7454 2402 257 640 11 612 373 257 1310 2576 3706 20037 13 1375 6151 284 711 2354 13"
  # HF's own default for GPT-2 adds no BOS.
  run sae-tokenize -m "$(M gpt2-random)" t.txt
  assert_output "7454 2402 257 640 11 612 373 257 1310 2576 3706 20037 13 1375 6151 284 711 2354 13"
}

@test "stories260K reference ids: sentencepiece with BOS from tokenizer_config.json" {
  need_sentencepiece
  printf 'Once upon a time, there was a little girl named Lily. She loved to play outside.' > t.txt
  run sae-tokenize -m "$(M stories260K)" t.txt
  assert_success
  assert_output "1 403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 426"
}

@test "--lines: one text per line, CRLF endings dropped" {
  need_shared
  printf 'Hello world\r\n\nab\n' | sae-tokenize -m "$(M gpt2-random)" --lines > out.txt
  run cat out.txt
  assert_output "$(printf '15496 995\n\n397')"
}

@test "--format tsv and json show the token texts" {
  need_shared
  run bash -c "printf 'a<|endoftext|> b\n' | sae-tokenize -m '$(M gpt2-random)' --format tsv"
  assert_success
  assert_line --index 0 "$(printf '64\ta')"
  assert_line --index 1 "$(printf '50256\t<|endoftext|>')"
  assert_line --index 2 "$(printf '275\t b')"
  assert_line --index 3 "$(printf '198\t\\n')"
  run bash -c "printf 'caf\xc3\xa9' | sae-tokenize -m '$(M gpt2-random)' --format json"
  assert_output '{"ids":[66,1878,2634],"tokens":["c","af","é"]}'
}

@test "--no-special reads <|endoftext|> as plain text" {
  need_shared
  run bash -c "printf '<|endoftext|>' | sae-tokenize -m '$(M gpt2-random)' --no-special"
  assert_output "27 91 437 1659 5239 91 29"
}

@test "--decode turns ids back into the text" {
  need_shared
  printf 'Tom and Sue went to the park.\n"Look!"  said Tom.' > t.txt
  sae-tokenize -m "$(M gpt2-random)" t.txt > ids.txt
  run sae-tokenize -m "$(M gpt2-random)" --decode ids.txt
  assert_success
  assert_output "$(cat t.txt)"
}

@test "--decode: a bad id is a one-line error naming file and line" {
  need_shared
  printf '1 2 3\n4 99999\n' > ids.txt
  # The first line is already out on stdout (a filter streams); the error goes to stderr.
  run --separate-stderr sae-tokenize -m "$(M gpt2-random)" --decode ids.txt
  assert_failure 1
  [ "$stderr" = "sae-tokenize: ids.txt: line 2: token id 99999 is not in the vocabulary (size 50257)" ]
  printf '1 x\n' > bad.txt
  run sae-tokenize -m "$(M gpt2-random)" --decode bad.txt
  assert_failure 1
  assert_output 'sae-tokenize: bad.txt: line 1: "x" is not a token id'
}

@test "invalid UTF-8 is refused with its byte offset; --invalid-utf8 replace reads U+FFFD" {
  need_shared
  printf 'fine\nok \xff then\n' > bad.txt
  run sae-tokenize -m "$(M gpt2-random)" -o out.txt bad.txt
  assert_failure 1
  assert_output "sae-tokenize: bad.txt: line 2: invalid UTF-8 at byte offset 8 (byte 0xFF); --invalid-utf8 replace reads it as U+FFFD"
  assert_no_output_left . bad.txt
  run sae-tokenize -m "$(M gpt2-random)" --invalid-utf8 replace bad.txt
  assert_success
  printf 'fine\nok \xef\xbf\xbd then\n' > fixed.txt
  assert_output "$(sae-tokenize -m "$(M gpt2-random)" fixed.txt)"
}

@test "--info prints the tokenizer facts as JSON" {
  need_shared
  run sae-tokenize -m "$(M tiny-gpt2)" --info
  assert_success
  assert_output --partial '"identity": "hf-bpe:sha256:1fe93b6152957cf9cfd6d89002467f789ce8b3f3e000b3a2edf27c808ddd0b9e"'
  assert_output --partial '"bos_id": 50256'
  assert_output --partial '"add_bos": false'
  assert_output --partial '"vocab_size": 50257'
}

@test "-o writes the output file atomically" {
  need_shared
  printf 'hello' | sae-tokenize -m "$(M gpt2-random)" -o ids.txt
  run cat ids.txt
  assert_output "31373"
  assert_no_output_left . ids.txt
}

@test "bad usage and missing models: one-line messages, exit 1" {
  run sae-tokenize
  assert_failure 1
  assert_line --index 0 "sae-tokenize: the option '--model' is required but missing"
  run sae-tokenize -m /nonexistent/model
  assert_failure 1
  assert_output "sae-tokenize: /nonexistent/model: cannot open (No such file or directory)"
  mkdir empty
  run sae-tokenize -m empty
  assert_failure 1
  assert_output "sae-tokenize: empty: no tokenizer found (tokenizer.json, tokenizer.model, or vocab.json with merges.txt)"
  need_shared
  run sae-tokenize -m "$(M gpt2-random)" --bos sometimes
  assert_failure 1
  assert_line --index 0 "sae-tokenize: --bos must be auto, always or never, not 'sometimes'"
  run sae-tokenize -m "$(M gpt2-random)" missing.txt
  assert_failure 1
  assert_output "sae-tokenize: missing.txt: No such file or directory"
}

@test "a corrupt tokenizer.json is named in the error" {
  mkdir m
  printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]}}' > m/tokenizer.json
  run sae-tokenize -m m --info
  assert_failure 1
  assert_output 'sae-tokenize: m/tokenizer.json model: merge 0 "a" is not two tokens separated by one space'
}
