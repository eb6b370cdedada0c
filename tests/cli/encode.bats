#!/usr/bin/env bats
# sae-encode: activations in, the SAE's sparse latents out (docs/stream-tools.md, "sae-encode").
load helper
load stream_helper
load sae_helper
bats_require_minimum_version 1.5.0

toy=(--toy --d 16 --features 64 --active 3 --noise 0.01)

# latents FILE: the rows of a latents stream as "index:value ..." lines (sae-info --head; an empty
# line for a row with no active latent).
latents() {
  sae-info --head 1000000 "$1" | awk -F'\t' 'NR > 1 { s = ""; for (i = 2; i <= NF; i++) if ($i ~ /:/) s = s (s == "" ? "" : " ") $i; print s }'
}

# close_latents A B: the same active latents in the same rows of two files of latents lines, values
# equal to 1e-5 (relative, or absolute below 1). The encoder's products may round differently in the last bit when rows
# sit at other places in its calls (other --batch-rows, streams read one after another).
close_latents() {
  [ "$(wc -l <"$1")" = "$(wc -l <"$2")" ]
  paste -d'|' "$1" "$2" | awk -F'|' '
    { na = split($1, a, " "); nb = split($2, b, " ")
      if (na != nb) { print "row " NR ": " na " against " nb " latents"; exit 1 }
      for (i = 1; i <= na; i++) {
        split(a[i], x, ":"); split(b[i], y, ":")
        d = x[2] - y[2]; if (d < 0) d = -d
        if (x[1] != y[1] || d > 1e-5 * (x[2] > 1 ? x[2] : 1)) { print "row " NR ": " a[i] " against " b[i]; exit 1 }
      } }'
}

@test "sae-encode --help lists every option with its default" {
  run sae-encode --help
  assert_success
  for opt in "--sae arg" "-o [ --output ] arg (=-)" "--dtype arg (=f32)" "--batch-rows arg (=4096)" \
             "--level arg (=3)" "--shuffle" "--threads arg (=0)" "--device arg"; do
    assert_line --partial -- "$opt"
  done
}

@test "hand fixture: the latents are the ReLU copies of the coordinates, as derived by hand" {
  hand_sae sae
  hand_rows rows.sae
  sae-encode --sae sae rows.sae -o lat.sae
  # Rows (2,0), (0,2), (-2,0), (0,-2): latent 0 fires with 2 on the first, latent 1 on the second,
  # nothing on the others (latent 2 never fires).
  run latents lat.sae
  assert_output "$(printf '0:2\n1:2\n\n')"
  [ "$(sae-info --json lat.sae | jq -r .rows)" = 4 ]
  # The same SAE as a sparsify TopK directory (k = 1) gives the same rows.
  hand_sparsify sp
  sae-encode --sae sp rows.sae -o lat-sp.sae
  [ "$(latents lat-sp.sae)" = "$(latents lat.sae)" ]
}

@test "toy stream with its truth SAE: kind, d, dtype, columns and provenance" {
  sae-collect "${toy[@]}" --rows 500 --context 50 --seed 3 --truth truth -o toy.sae
  sae-encode --sae truth toy.sae -o lat.sae
  sae-info --json lat.sae >info.json
  [ "$(jq -r .header.kind info.json)" = latents ]
  [ "$(jq -r .header.d info.json)" = 64 ]
  [ "$(jq -r .header.dtype info.json)" = f32 ]
  [ "$(jq -r .rows info.json)" = 500 ]
  # The input's provenance is kept; tool is sae-encode; the SAE is recorded under "sae".
  [ "$(jq -r .header.provenance.hook info.json)" = toy ]
  [ "$(jq -r .header.provenance.seed info.json)" = 3 ]
  [ "$(jq -r .header.provenance.toy.features info.json)" = 64 ]
  [ "$(jq -r .header.provenance.tool info.json)" = sae-encode ]
  [ "$(jq -c .header.provenance.sae info.json)" = \
    '{"architecture":"standard","d_in":16,"d_sae":64,"dir":"truth","format":"saetools","hook":"toy","model":"toy"}' ]
  # doc and pos are carried through row by row.
  sae-info --head 1000 toy.sae | cut -f1-3 >cols-in.txt
  sae-info --head 1000 lat.sae | tail -n +2 | cut -f1-3 >cols-out.txt
  head -1 cols-in.txt | grep -q $'^#row\tdoc\tpos$'
  [ "$(tail -n +2 cols-in.txt)" = "$(cut -f1-3 cols-out.txt)" ]
  sae-info --verify lat.sae
}

@test "token, doc and pos columns from sae-npy; a TopK SAE records k" {
  gen_npy x.npy 40 4 5
  gen_int_npy tok.npy 40 '<i4' 7
  gen_int_npy doc.npy 40 '<i8' 3
  gen_int_npy pos.npy 40 '<i4' 11
  sae-npy import x.npy --token tok.npy --doc doc.npy --pos pos.npy --hook blocks.0.hook_resid_post -o x.sae
  mkdir -p k
  cat >k/cfg.json <<'JSON'
{"architecture": "topk", "k": 2, "d_in": 4, "d_sae": 5, "dtype": "float32", "device": "cpu",
 "apply_b_dec_to_input": false, "normalize_activations": "none", "reshape_activations": "none",
 "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.0.hook_resid_post"}}
JSON
  safetensors k/sae_weights.safetensors W_enc "[4,5]" "1 0 0 0 1  0 1 0 0 1  0 0 1 0 1  0 0 0 1 1" \
    b_enc "[5]" "0 0 0 0 0" W_dec "[5,4]" "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 0.5 0.5 0.5 0.5" b_dec "[4]" "0 0 0 0"
  sae-encode --sae k x.sae -o lat.sae
  [ "$(sae-info --json lat.sae | jq -c .header.provenance.sae)" = \
    '{"architecture":"topk","d_in":4,"d_sae":5,"dir":"k","format":"saelens","hook":"blocks.0.hook_resid_post","k":2}' ]
  for c in token doc pos; do
    sae-npy export x.sae --column $c -o in-$c.npy
  done
  # The columns of the latents stream, as sae-info prints them, equal the input's.
  [ "$(sae-info --head 1000 lat.sae | head -1)" = $'#row\ttoken\tdoc\tpos\tindex:value...' ]
  [ "$(sae-info --head 1000 lat.sae | tail -n +2 | cut -f2-4)" = "$(sae-info --head 1000 x.sae | tail -n +2 | cut -f2-4)" ]
  # Every row has at most k = 2 active latents, in ascending order.
  latents lat.sae | awk '{ if (NF > 2) exit 1; if (NF == 2) { split($1, a, ":"); split($2, b, ":"); if (a[1] + 0 >= b[1] + 0) exit 1 } }'
}

@test "the values equal a second path: sae-eval's L0 and L1 of the same SAE on the same rows" {
  sae-collect "${toy[@]}" --rows 2000 --seed 5 --truth truth -o toy.sae
  sae-encode --sae truth toy.sae -o lat.sae
  sae-eval --sae truth --skip-geometry toy.sae >eval.json 2>/dev/null
  # L0: exactly the mean number of entries per row.
  [ "$(sae-info --json lat.sae | jq .stats.l0_mean)" = "$(jq .sparsity.l0.mean eval.json)" ]
  # L1: the mean of each row's sum of values, to float rounding.
  latents lat.sae | awk -v want="$(jq .sparsity.l1 eval.json)" '
    { for (i = 1; i <= NF; i++) { split($i, a, ":"); s += a[2] } n++ }
    END { got = s / n; d = got - want; if (d < 0) d = -d; if (n != 2000 || d > 1e-5 * want) { print got, want; exit 1 } }'
}

@test "stdin, stdout and -o give the same bytes; several inputs read as one" {
  sae-collect "${toy[@]}" --rows 300 --seed 1 --truth truth -o a.sae
  sae-collect "${toy[@]}" --rows 200 --seed 2 -o b.sae
  sae-encode --sae truth a.sae -o out.sae
  sae-encode --sae truth <a.sae >stdout.sae
  cmp out.sae stdout.sae
  sae-encode --sae truth a.sae b.sae -o both.sae
  cat a.sae b.sae | sae-encode --sae truth -o cat.sae
  cmp both.sae cat.sae
  [ "$(sae-info --json both.sae | jq .rows)" = 500 ]
  sae-encode --sae truth b.sae -o b-lat.sae
  latents both.sae >both.txt
  { latents out.sae; latents b-lat.sae; } >apart.txt
  close_latents both.txt apart.txt
  assert_no_output_left . truth a.sae b.sae out.sae stdout.sae both.sae cat.sae b-lat.sae both.txt apart.txt
}

@test "--dtype bf16 and f16: the same latents, values rounded to 16 bits" {
  sae-collect "${toy[@]}" --rows 400 --seed 4 --truth truth -o toy.sae
  sae-encode --sae truth toy.sae -o f32.sae
  for dt in bf16 f16; do
    sae-encode --sae truth toy.sae --dtype $dt -o $dt.sae
    [ "$(sae-info --json $dt.sae | jq -r .header.dtype)" = $dt ]
    paste -d' ' <(latents f32.sae | tr ' ' '\n') <(latents $dt.sae | tr ' ' '\n') | awk -v dt=$dt '
      { split($1, a, ":"); split($2, b, ":"); if (a[1] != b[1]) exit 1
        d = a[2] - b[2]; if (d < 0) d = -d
        # Half a unit in the last place: 2^-8 (bf16) or 2^-11 (f16) relative, 2^-25 among f16 subnormals.
        if (d > (dt == "bf16" ? 2^-8 : 2^-11) * a[2] + (dt == "f16" ? 2^-25 : 0)) exit 1 }'
  done
  # Not the f32 bytes: the values really were rounded.
  run cmp -s <(latents f32.sae) <(latents bf16.sae)
  assert_failure
}

@test "--batch-rows, --level, --shuffle and --threads change the framing, never the rows" {
  sae-collect "${toy[@]}" --rows 1000 --seed 6 --truth truth -o toy.sae
  sae-encode --sae truth toy.sae -o ref.sae
  [ "$(sae-info --json ref.sae | jq .batches)" = 1 ]
  sae-encode --sae truth toy.sae --batch-rows 300 -o b300.sae
  [ "$(sae-info --json b300.sae | jq .batches)" = 4 ]
  sae-encode --sae truth toy.sae --level 19 -o l19.sae
  [ "$(stat -c %s l19.sae)" -lt "$(stat -c %s ref.sae)" ]
  sae-encode --sae truth toy.sae --dtype bf16 -o plain16.sae
  sae-encode --sae truth toy.sae --dtype bf16 --shuffle -o shuf16.sae
  run cmp -s plain16.sae shuf16.sae
  assert_failure
  [ "$(latents shuf16.sae)" = "$(latents plain16.sae)" ]
  sae-encode --sae truth toy.sae --threads 1 -o t1.sae
  sae-encode --sae truth toy.sae --threads 2 --device cpu -o t2.sae
  cmp ref.sae t1.sae
  cmp ref.sae t2.sae
  [ "$(latents l19.sae)" = "$(latents ref.sae)" ]
  latents ref.sae >ref.txt
  latents b300.sae >b300.txt
  close_latents ref.txt b300.txt
}

@test "bad options: one line, exit 1" {
  hand_sae sae
  run sae-encode --sae sae --batch-rows 0
  assert_failure 1
  assert_line --index 0 "sae-encode: --batch-rows must be at least 1, got 0"
  run sae-encode --sae sae --threads -1
  assert_failure 1
  assert_line --index 0 "sae-encode: --threads must be 0 (all cores) or more, got -1"
  run sae-encode --sae sae --dtype f64
  assert_failure 1
  assert_line --index 0 --partial "f64"
  run sae-encode rows.sae
  assert_failure 1
  assert_line --index 0 --partial "sae"
}

@test "--device cuda: the CPU's rows with a GPU, one line and nothing written without" {
  hand_sae sae
  hand_rows rows.sae
  sae-encode --sae sae --device cpu rows.sae -o cpu.sae
  run sae-encode --sae sae --device cuda rows.sae -o out.sae
  if [ "$status" -eq 0 ]; then
    [ "$(latents out.sae)" = "$(latents cpu.sae)" ]
  else
    assert_failure 1
    assert_output --regexp "^sae-encode: --device cuda: "
    [ "${#lines[@]}" = 1 ]
    assert_no_output_left . sae rows.sae cpu.sae
  fi
}

@test "a latents stream as input: refused, nothing written" {
  sae-collect "${toy[@]}" --rows 10 --truth truth --latents-out codes.sae -o toy.sae
  run sae-encode --sae truth codes.sae -o out.sae
  assert_failure 1
  assert_output "sae-encode: codes.sae: is a latents stream; sae-encode needs an activations stream"
  assert_no_output_left . truth codes.sae toy.sae
}

@test "rows of another width: refused naming both numbers, nothing written" {
  hand_sae sae
  sae-collect "${toy[@]}" --rows 10 -o toy.sae
  run sae-encode --sae sae toy.sae -o out.sae
  assert_failure 1
  assert_output "sae-encode: toy.sae: rows have d=16 but sae expects d_in=2"
  assert_no_output_left . sae toy.sae
}

@test "recorded hook or model that differs from the SAE's: refused; absent or equal: accepted" {
  hand_sae sae  # records hook "hand" and model "hand"
  npy_f32 rows.npy 2 2 "1 0 0 1"
  sae-npy import rows.npy --hook blocks.1.hook_resid_post -o hook.sae
  run sae-encode --sae sae hook.sae -o out.sae
  assert_failure 1
  assert_output "sae-encode: hook.sae: stream hook 'blocks.1.hook_resid_post' differs from the SAE's hook 'hand' (sae)"
  sae-npy import rows.npy --hook hand --model gpt2 -o model.sae
  run sae-encode --sae sae model.sae -o out.sae
  assert_failure 1
  assert_output "sae-encode: model.sae: stream model 'gpt2' differs from the SAE's model 'hand' (sae)"
  # Through stdin the message names <stdin>.
  run sae-encode --sae sae -o out.sae <model.sae
  assert_failure 1
  assert_output "sae-encode: <stdin>: stream model 'gpt2' differs from the SAE's model 'hand' (sae)"
  assert_no_output_left . sae rows.npy hook.sae model.sae
  # Nothing recorded, the same names, or a model directory whose last component is the SAE's: accepted.
  sae-npy import rows.npy -o none.sae
  sae-npy import rows.npy --hook hand --model /models/hand/ -o same.sae
  sae-encode --sae sae none.sae -o a.sae
  sae-encode --sae sae same.sae -o b.sae
  [ "$(latents a.sae)" = "$(printf '0:1\n1:1')" ]
  [ "$(latents b.sae)" = "$(latents a.sae)" ]
}

@test "NaN rows and a missing SAE: one line naming the file, nothing written" {
  hand_sae sae
  gen_npy nan.npy 3 2 1 '<f4' 1
  sae-npy import nan.npy -o nan.sae
  run sae-encode --sae sae nan.sae -o out.sae
  assert_failure 1
  assert_output --regexp "^sae-encode: nan.sae: batch 1: row 1 has a NaN or Inf value"
  run sae-encode --sae nosuch nan.sae -o out.sae
  assert_failure 1
  assert_output --regexp "^sae-encode: nosuch"
  [ "${#lines[@]}" = 1 ]
  assert_no_output_left . sae nan.npy nan.sae
}

# gemma_scope DIR: a Gemma Scope release directory (params.npz packed by Info-ZIP), as in
# convert.bats: d_in 2, d_sae 2, identity encoder and decoder, b_enc 0, threshold 0.5, b_dec (1, 1).
gemma_scope() {
  local dir=$1 tmp
  tmp=$(mktemp -d)
  mkdir -p "$dir"
  { npy_header '<f4' '(2, 2)'; f32_bytes 1 0 0 1; } >"$tmp/W_enc.npy"
  { npy_header '<f4' '(2, 2)'; f32_bytes 1 0 0 1; } >"$tmp/W_dec.npy"
  { npy_header '<f4' '(2,)'; f32_bytes 0 0; } >"$tmp/b_enc.npy"
  { npy_header '<f4' '(2,)'; f32_bytes 1 1; } >"$tmp/b_dec.npy"
  { npy_header '<f4' '(2,)'; f32_bytes 0.5 0.5; } >"$tmp/threshold.npy"
  (cd "$tmp" && zip -q -X -9 params.npz ./*.npy)
  mv "$tmp/params.npz" "$dir/"
  rm -rf "$tmp"
}

@test "Gemma Scope params.npz: JumpReLU on x itself, at and above the threshold" {
  command -v zip >/dev/null || skip "zip is not installed (scripts/install-deps.sh installs it)"
  # Gemma Scope does not subtract b_dec: (1.25, 0.25) fires latent 0 only; 0.5 is exactly the
  # threshold and does not fire; had b_dec been subtracted, nothing would.
  npy_f32 rows.npy 3 2 "1.25 0.25 0.25 1.25 0.5 0.75"
  sae-npy import rows.npy -o rows.sae
  d=gs/gemma-scope-2b-pt-res/layer_6/width_16k/average_l0_10
  gemma_scope "$d"
  sae-encode --sae "$d" rows.sae -o lat.sae
  [ "$(latents lat.sae)" = "$(printf '0:1.25\n1:1.25\n1:0.75')" ]
  [ "$(sae-info --json lat.sae | jq -c '.header.provenance.sae | [.format, .architecture, .hook]')" \
    = '["gemma-scope","jumprelu","blocks.6.hook_resid_post"]' ]
}
