#!/usr/bin/env bats
# sae-collect --model: the command line around lib/collect_model (options, outputs, messages, bad
# input). The rows themselves are compared with ../shared's reference.safetensors, through this
# same binary, by tests/unit/test_model_collect.cpp (ModelCollect.BinaryWritesTheReferenceRows):
# Bats has no way to read a stream's floats or a safetensors file.
load helper

stories() { echo "$SAE_SHARED/models/stories260K"; }

# Row count of a stream, from sae-info.
rows_of() {
  sae-info "$1" | sed -n 's/^rows \{1,\}\([0-9]\{1,\}\).*/\1/p'
}

# Text tokens of each line of a file, by the model's tokenizer without BOS (sae-tokenize).
tokens_of_lines() {
  sae-tokenize --model "$1" --bos never --lines "$2" | wc -w
}

@test "--help lists every model option with its default" {
  run sae-collect --help
  assert_success
  for opt in "--model arg" "--hook arg" "--text arg" "--jsonl-field arg" "--lines" "--batch arg (=8)" \
             "--exclude-bos [=arg(=true)] (=true)" "--invalid-utf8 arg (=error)" "--device arg" \
             "-o [ --output ] arg (=-)" "--dtype arg (=f32)" "--context arg (=0)"; do
    assert_output --partial -- "$opt"
  done
  assert_output --partial "tokens per sequence with BOS included, default 128 here"
}

@test "stories260K over plain text: one row per text token, stdin or files, through a pipe" {
  need_shared
  sed -n 1,40p "$SAE_SHARED/data/tinystories-sample.txt" > in.txt
  want=$(tokens_of_lines "$(stories)" in.txt)
  [ "$want" -gt 100 ]
  run sae-collect --model "$(stories)" --hook blocks.3.hook_resid_post --lines --text in.txt -o a.sae
  assert_success
  # the blank lines between stories are empty documents in --lines mode
  assert_output "sae-collect: skipped $(grep -c '^$' in.txt) empty documents (no tokens)"
  [ "$(rows_of a.sae)" = "$want" ]
  # stdin in, stdout out
  sae-collect --model "$(stories)" --hook blocks.3.hook_resid_post --lines < in.txt | cat > b.sae
  [ "$(rows_of b.sae)" = "$want" ]
  # --exclude-bos false adds one row per window (context 32: windows of 31 text tokens)
  windows=$(sae-tokenize --model "$(stories)" --bos never --lines in.txt | awk '{ n += int((NF + 30) / 31) } END { print n }')
  run sae-collect --model "$(stories)" --hook blocks.3.hook_resid_post --lines --text in.txt --context 32 \
    --exclude-bos false -o c.sae
  assert_success
  [ "$(rows_of c.sae)" = "$((want + windows))" ]
}

@test "several hooks write one stream each through the {hook} pattern" {
  need_shared
  printf 'Once upon a time, there was a cat.\n\nThe cat sat on the mat.\n' > in.txt
  run sae-collect --model "$(stories)" --hook blocks.0.hook_resid_pre,blocks.4.hook_mlp_out \
    --hook blocks.2.hook_attn_out --text in.txt --dtype bf16 -o 'acts.{hook}.sae'
  assert_success
  n=$(rows_of acts.blocks.0.hook_resid_pre.sae)
  [ "$n" -gt 10 ]
  [ "$(rows_of acts.blocks.4.hook_mlp_out.sae)" = "$n" ]
  [ "$(rows_of acts.blocks.2.hook_attn_out.sae)" = "$n" ]
  assert_no_output_left . in.txt acts.blocks.0.hook_resid_pre.sae acts.blocks.4.hook_mlp_out.sae \
    acts.blocks.2.hook_attn_out.sae
}

@test "JSONL input and empty documents (skipped, counted on stderr)" {
  need_shared
  printf '{"text": "Lily saw a dog."}\n{"text": ""}\n\n{"text": "The dog ran.", "id": 2}\n{"text": ""}\n' > in.jsonl
  run sae-collect --model "$(stories)" --hook blocks.1.hook_resid_mid --jsonl-field text --text in.jsonl -o out.sae
  assert_success
  assert_output "sae-collect: skipped 2 empty documents (no tokens)"
  [ "$(rows_of out.sae)" -gt 5 ]
}

@test "invalid UTF-8 is refused with file, line and offset, or replaced on request" {
  need_shared
  printf 'good text\nbad \xff text\n' > in.txt
  run sae-collect --model "$(stories)" --hook blocks.0.hook_mlp_out --lines --text in.txt -o out.sae
  assert_failure 1
  assert_output "sae-collect: in.txt: line 2: invalid UTF-8 at byte offset 14 (byte 0xFF); --invalid-utf8 replace reads it as U+FFFD"
  [ ! -e out.sae ]
  run sae-collect --model "$(stories)" --hook blocks.0.hook_mlp_out --lines --text in.txt --invalid-utf8 replace -o out.sae
  assert_success
  [ -s out.sae ]
}

@test "bad options and bad models: exit 1, one line naming the problem, nothing written" {
  need_shared
  printf 'Some text.\n' > in.txt
  check() {
    local want=$1
    shift
    run sae-collect "$@" -o out.sae
    assert_failure 1
    assert_line --index 0 "sae-collect: $want"
    [ ! -e out.sae ]
  }
  local m
  m=$(stories)
  check "--hook: hook 'blocks.7.hook_resid_post': layer 7 is out of range (the model has 5 layers, 0-4)" \
    --model "$m" --hook blocks.7.hook_resid_post --text in.txt
  check "--hook: hook 'blocks.0.hook_resid': unknown hook name (expected blocks.L.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post})" \
    --model "$m" --hook blocks.0.hook_resid --text in.txt
  check "--context 600 is longer than the model's 512 positions (max_position_embeddings in $m/config.json)" \
    --model "$m" --hook blocks.0.hook_resid_pre --context 600 --text in.txt
  check "--hook: 2 hooks need one output each: give -o a pattern with {hook}, e.g. -o acts.{hook}.sae" \
    --model "$m" --hook blocks.0.hook_resid_pre,blocks.1.hook_resid_pre --text in.txt
  check "--model needs --hook (e.g. --hook blocks.0.hook_resid_post)" --model "$m" --text in.txt
  check "--toy and --model are two sources: choose one" --toy --model "$m" --hook blocks.0.hook_resid_pre
  check "--features is an option of the toy source, not of --model" --model "$m" --hook blocks.0.hook_resid_pre --features 3
  check "--hook is an option of the model source: add --model DIR" --hook blocks.0.hook_resid_pre
  check "--invalid-utf8 must be error or replace, not 'skip'" --model "$m" --hook blocks.0.hook_resid_pre --invalid-utf8 skip
  check "--batch must be at least 1, got 0" --model "$m" --hook blocks.0.hook_resid_pre --batch 0 --text in.txt
  check "nope.txt: No such file or directory" --model "$m" --hook blocks.0.hook_resid_pre --text nope.txt
  check "nope: not a model directory (no such directory)" --model nope --hook blocks.0.hook_resid_pre --text in.txt

  # An architecture we do not run, a corrupt weights file, a missing shard.
  mkdir bert
  sed 's/"model_type": "llama"/"model_type": "bert"/' "$m/config.json" > bert/config.json
  check "bert/config.json: model_type: 'bert' is not supported (supported: gpt2, llama, mistral, qwen2)" \
    --model bert --hook blocks.0.hook_resid_pre --text in.txt
  mkdir corrupt
  cp "$m/config.json" corrupt/
  head -c 100000 "$m/model.safetensors" > corrupt/model.safetensors
  run sae-collect --model corrupt --hook blocks.0.hook_resid_pre --text in.txt -o out.sae
  assert_failure 1
  assert_output --regexp "^sae-collect: corrupt/model.safetensors: tensor '.*': data runs past the end of the file \(truncated file\?"
  [ ! -e out.sae ]
  mkdir sharded
  cp "$m/config.json" sharded/
  printf '{"metadata": {}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}' \
    > sharded/model.safetensors.index.json
  check "sharded/model.safetensors.index.json: shard 'model-00002-of-00002.safetensors' is missing (it holds tensor 'model.norm.weight')" \
    --model sharded --hook blocks.0.hook_resid_pre --text in.txt
}
