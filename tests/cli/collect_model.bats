#!/usr/bin/env bats
# sae-collect --model: the stream's rows against ../shared's reference.safetensors (read with od),
# and the command line around lib/data/collect_model (options, outputs, messages, bad input). Every hook
# of every reference case is compared by tests/unit/data/test_collect_model.cpp.
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

# Values of tensor NAME in safetensors FILE, one per line, as od prints TYPE (f4: float32, d4:
# int32): the 8-byte header length, then the tensor's data_offsets in the JSON header.
st_values() {
  local file=$1 name=$2 type=$3 hlen entry begin end
  hlen=$(od -An -t u8 -N 8 "$file" | tr -d ' ')
  entry=$(head -c $((8 + hlen)) "$file" | tail -c "$hlen" | grep -o "\"$name\":{[^}]*}")
  begin=$(sed 's/.*"data_offsets":\[\([0-9]*\),.*/\1/' <<<"$entry")
  end=$(sed 's/.*"data_offsets":\[[0-9]*,\([0-9]*\)\].*/\1/' <<<"$entry")
  od -An -v -t "$type" -j $((8 + hlen + begin)) -N $((end - begin)) "$file" | tr -s ' ' '\n' | sed '/^$/d'
}

# Case 0 of a shared model's reference through sae-collect: the token column equals the reference
# tokens (after BOS) exactly, doc is 0, pos counts from 1, and every value is within 1e-4 of the
# tensor's largest magnitude (f32 arithmetic against a float64 reference: the unit tests measure
# ~1e-6; sae-info prints 9 significant digits).
check_case0() {
  local model=$SAE_SHARED/models/$1 hook=$2 d=$3
  sed -n 's/^   "text": "\(.*\)",$/\1/p' "$model/reference.json" | head -1 > case0.txt
  [ -s case0.txt ]
  run sae-collect --model "$model" --hook "$hook" --lines --text case0.txt -o out.sae
  assert_success
  sae-info --head 1000 out.sae | tail -n +2 > rows.tsv
  st_values "$model/reference.safetensors" case0.tokens d4 | tail -n +2 > want_tokens.txt
  cut -f 2 rows.tsv > got_tokens.txt
  run diff want_tokens.txt got_tokens.txt
  assert_success
  run awk -F '\t' '$3 != 0 || $4 != NR { bad++ } END { print NR, bad + 0 }' rows.tsv
  assert_output "$(wc -l < want_tokens.txt) 0"
  st_values "$model/reference.safetensors" "case0.$hook" f4 | tail -n +$((d + 1)) > want.txt
  run awk -F '\t' -v d="$d" '
    NR == FNR { want[n++] = $1; next }
    { for (i = 5; i <= NF; i++) {
        k = (FNR - 1) * d + (i - 5); e = $i - want[k]; e = e < 0 ? -e : e; m = want[k] < 0 ? -want[k] : want[k]
        if (e > err) err = e; if (m > big) big = m; seen++ } }
    END { print seen == n ? "all " n " values" : "compared " seen " of " n; exit !(seen == n && err <= 1e-4 * big) }' want.txt rows.tsv
  assert_success
}

@test "stories260K rows equal the reference: tokens exactly, activations within 1e-4" {
  need_shared
  check_case0 stories260K blocks.3.hook_mlp_out 64
  check_case0 stories260K blocks.0.hook_resid_pre 64
}

@test "gpt2-random rows equal the reference: tokens exactly, activations within 1e-4" {
  need_shared
  check_case0 gpt2-random blocks.2.hook_resid_post 64
}

@test "qwen3-random rows equal the reference: tokens exactly, activations within 1e-4" {
  need_shared
  check_case0 qwen3-random blocks.1.hook_attn_out 64
  check_case0 qwen3-random blocks.2.hook_resid_post 64
  check_case0 qwen3-random blocks.0.attn.hook_z 64
}

@test "gemma2-random rows equal the reference: sliding windows, soft-capping, hook_z of 4 heads x 24" {
  need_shared
  check_case0 gemma2-random blocks.0.hook_attn_out 64
  check_case0 gemma2-random blocks.2.hook_resid_post 64
  check_case0 gemma2-random blocks.1.attn.hook_z 96
}

@test "gemma3-random rows equal the reference: bf16 weights, per-layer rope, q/k norms" {
  need_shared
  check_case0 gemma3-random blocks.2.hook_mlp_out 64
  check_case0 gemma3-random blocks.1.hook_resid_mid 64
  check_case0 gemma3-random blocks.2.attn.hook_z 64
}

@test "pythia-random rows equal the reference: parallel residual, partial rotary, f16 weights" {
  need_shared
  check_case0 pythia-random blocks.2.hook_resid_post 64
  check_case0 pythia-random blocks.1.hook_mlp_out 64
  check_case0 pythia-random blocks.0.attn.hook_z 64
}

@test "a hook the family lacks is refused by name: resid_mid under GPT-NeoX's parallel residual" {
  need_shared
  echo "Once upon a time" > t.txt
  run sae-collect --model "$SAE_SHARED/models/pythia-random" --hook blocks.1.hook_resid_mid --text t.txt -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-collect: --hook: hook 'blocks.1.hook_resid_mid': this gpt_neox model has a parallel residual (attention and the MLP both read resid_pre), so there is no resid_mid; resid_post = resid_pre + attn_out + mlp_out"
  [ ! -e out.sae ]
}

@test "--help lists every model option with its default" {
  run sae-collect --help
  assert_success
  for opt in "--model arg" "--hook arg" "--text arg" "--jsonl-field arg" "--lines" "--batch arg (=8)" \
             "--exclude-bos [=arg(=true)] (=true)" "--invalid-utf8 arg (=error)" "--device arg" \
             "-o [ --output ] arg (=-)" "--dtype arg (=f32)" "--context arg (=0)" "--compute arg (=f32)"; do
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
  check "--hook: hook 'blocks.0.hook_resid': unknown hook name (expected blocks.L.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post} or blocks.L.attn.hook_z)" \
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
  check "bert/config.json: model_type: 'bert' is not supported (supported: gpt2, llama, mistral, qwen2, qwen3, gemma2, gemma3_text, gemma3, gpt_neox)" \
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

@test "--compute: bf16 is refused on the CPU in one line before the model is read; bad values too" {
  run sae-collect --model nope --hook blocks.0.hook_resid_pre --compute bf16 --device cpu -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-collect: --compute bf16 runs on the GPU only (--device cuda): the CPU computes in f32"
  run sae-collect --model nope --hook blocks.0.hook_resid_pre --compute f16 --device cpu -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-collect: --compute: unknown compute type 'f16' (expected f32 or bf16)"
  run sae-collect --toy --compute bf16 -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-collect: --compute is an option of the model source: add --model DIR"
  [ ! -e out.sae ]
}

@test "the stream's provenance records the compute type" {
  need_shared
  printf 'Once upon a time\n' | sae-collect --model "$(stories)" --hook blocks.0.hook_resid_pre --device cpu -o out.sae
  run sae-info --header out.sae
  assert_success
  assert_output --partial " compute=f32 "
}
