#!/usr/bin/env bats
# sae-eval: structural metrics of an SAE over an activation stream (docs/eval.md).
load helper
load stream_helper
load sae_helper
bats_require_minimum_version 1.5.0

toy=(--toy --d 16 --features 64 --active 3 --noise 0.01)

@test "sae-eval --help lists every option with its default" {
  run sae-eval --help
  assert_success
  for opt in "--sae arg" "-o [ --output ] arg (=-)" "--format arg (=json)" "--plots arg" "--density-out arg" \
             "--compare arg" "--max-rows arg (=0)" "--skip-geometry"; do
    assert_line --partial -- "$opt"
  done
}

@test "hand fixture: every number as derived by hand (docs/eval.md)" {
  hand_sae sae
  hand_rows rows.sae
  sae-eval --sae sae rows.sae >r.json 2>table.txt
  [ "$(num r.json .rows)" = 4 ]
  [ "$(num r.json .reconstruction.mse)" = 1 ]
  [ "$(num r.json .reconstruction.squared_error_per_row)" = 2 ]
  [ "$(num r.json .reconstruction.total_variance)" = 16 ]
  [ "$(num r.json .reconstruction.fvu)" = 0.5 ]
  [ "$(num r.json .reconstruction.explained_variance)" = 0.5 ]
  [ "$(num r.json .reconstruction.cosine_similarity)" = 0.5 ]
  [ "$(num r.json .reconstruction.l2_ratio)" = 0.5 ]
  [ "$(num r.json .reconstruction.l2_norm_in)" = 2 ]
  [ "$(num r.json .reconstruction.l2_norm_out)" = 1 ]
  [ "$(num r.json .reconstruction.relative_reconstruction_bias)" = 1 ]
  [ "$(num r.json .sparsity.l0.mean)" = 0.5 ]
  [ "$(num r.json .sparsity.l0.median)" = 0 ]
  [ "$(num r.json .sparsity.l0.max)" = 1 ]
  [ "$(num r.json .sparsity.l1)" = 1 ]
  [ "$(jq -c .sparsity.l0.histogram r.json)" = "[[0,2],[1,2]]" ]
  [ "$(num r.json .latents.dead)" = 1 ]
  [ "$(num r.json .latents.dense)" = 2 ]
  [ "$(num r.json .latents.alive)" = 2 ]
  # Every decoder row's best match is at 45 degrees.
  [ "$(jq '.decoder_geometry.max_cosine | (.min - 0.70710678 | fabs) < 1e-6 and (.max - 0.70710678 | fabs) < 1e-6' r.json)" = true ]
  [ "$(num r.json .sae.format)" = saelens ]
  [ "$(num r.json .sae.hook)" = hand ]
  # The table went to stderr.
  grep -q '^  fvu  *0.50000$' table.txt
  grep -q '^  dead (never fired)  *1 (33.33%)$' table.txt
}

@test "--format table prints only the table, on stdout" {
  hand_sae sae
  hand_rows rows.sae
  run --separate-stderr sae-eval --sae sae --format table rows.sae
  assert_success
  assert_line --index 0 "SAE sae (saelens, standard, d_in 2, d_sae 3) on 4 rows"
  assert_line "  explained variance             0.50000"
  [ -z "$stderr" ]
}

@test "-o FILE writes the JSON atomically; stdin is read when no file is given" {
  hand_sae sae
  hand_rows rows.sae
  run sae-eval --sae sae -o out/r.json <rows.sae
  assert_failure 1
  assert_output --partial "out/r.json: output directory out does not exist"
  sae-eval --sae sae -o r.json <rows.sae 2>/dev/null
  [ "$(num r.json .reconstruction.fvu)" = 0.5 ]
  [ "$(jq -c .inputs r.json)" = '["-"]' ]
  assert_no_output_left . sae rows.sae r.json
}

@test "--density-out writes SAELens's sparsity.safetensors: log10(freq + 1e-10), -10 when dead" {
  hand_sae sae
  hand_rows rows.sae
  sae-eval --sae sae --density-out dens.safetensors rows.sae >/dev/null 2>&1
  # Header: one F32 tensor "sparsity" of shape [3]; data: log10(0.25 + 1e-10) twice, then -10.
  hlen=$(od -An -tu8 -N8 dens.safetensors | tr -d ' ')
  [ "$(tail -c +9 dens.safetensors | head -c "$hlen" | jq -c .sparsity)" = '{"data_offsets":[0,12],"dtype":"F32","shape":[3]}' ]
  [ "$(tail -c 12 dens.safetensors | od -An -tx1 | tr -d ' \n')" = "$(f32_bytes -0.6020599913 -0.6020599913 -10 | od -An -tx1 | tr -d ' \n')" ]
}

@test "--plots writes three SVG plots with titles and axis labels" {
  hand_sae sae
  sae-collect "${toy[@]}" --rows 3000 -o toy.sae
  run sae-eval --sae sae --plots plots toy.sae
  assert_failure 1  # d mismatch: the toy rows have d=16
  [ ! -e plots ]
  sae-collect "${toy[@]}" --rows 3000 --truth truth -o toy.sae
  sae-eval --sae truth --plots plots toy.sae >/dev/null 2>&1
  [ "$(ls plots | tr '\n' ' ')" = "decoder_cos_hist.svg freq_hist.svg l0_hist.svg " ]
  for f in plots/*.svg; do
    head -c 40 "$f" | grep -q '^<svg xmlns="http://www.w3.org/2000/svg"'
    xmllint --noout "$f"
  done
  grep -q '>Latent firing frequency<' plots/freq_hist.svg
  grep -q '>log10(firing frequency)' plots/freq_hist.svg
  grep -q '>L0 (number of non-zero latents in a row)<' plots/l0_hist.svg
  grep -q '>Decoder geometry<' plots/decoder_cos_hist.svg
  assert_no_output_left . sae toy.sae truth plots
}

@test "--skip-geometry leaves out the decoder pass and its plot" {
  hand_sae sae
  hand_rows rows.sae
  sae-eval --sae sae --skip-geometry --plots plots rows.sae >r.json 2>/dev/null
  [ "$(jq 'has("decoder_geometry")' r.json)" = false ]
  [ "$(ls plots | tr '\n' ' ')" = "freq_hist.svg l0_hist.svg " ]
}

@test "--compare: the toy truth against itself matches everything; another seed's truth nothing" {
  sae-collect "${toy[@]}" --rows 2000 --seed 1 --truth truth1 -o toy1.sae
  sae-collect "${toy[@]}" --rows 10 --seed 2 --truth truth2 -o toy2.sae
  sae-eval --sae truth1 --compare truth1 toy1.sae >same.json 2>/dev/null
  [ "$(jq '.compare.sae_to_compare.mean > 0.999999 and .compare.compare_to_sae.mean > 0.999999' same.json)" = true ]
  [ "$(num same.json .compare.sae_to_compare.fraction_matched)" = 1 ]
  [ "$(num same.json .compare.compare_to_sae.fraction_matched)" = 1 ]
  # 64 random unit directions in 16 dimensions: the best match of one among another seed's 64
  # stays well under 0.9.
  sae-eval --sae truth1 --compare truth2 toy1.sae >other.json 2>/dev/null
  [ "$(num other.json .compare.sae_to_compare.fraction_matched)" = 0 ]
  [ "$(num other.json .compare.compare_to_sae.fraction_matched)" = 0 ]
  [ "$(jq '.compare.sae_to_compare.mean < 0.9' other.json)" = true ]
  [ "$(num other.json .compare.d_sae)" = 64 ]
}

@test "--compare with a different d_in: one-line error, exit 1" {
  hand_sae sae
  hand_rows rows.sae
  sae-collect "${toy[@]}" --rows 10 --truth truth -o toy.sae
  run sae-eval --sae sae --compare truth rows.sae
  assert_failure 1
  assert_output "sae-eval: truth: d_in 16 differs from sae's d_in 2"
}

@test "several input files read as one stream; --max-rows stops early" {
  sae-collect "${toy[@]}" --rows 1500 --seed 1 --truth truth -o a.sae
  sae-collect "${toy[@]}" --rows 700 --seed 1 -o b.sae
  sae-eval --sae truth --skip-geometry a.sae b.sae >ab.json 2>/dev/null
  [ "$(num ab.json .rows)" = 2200 ]
  [ "$(jq -c .inputs ab.json)" = '["a.sae","b.sae"]' ]
  sae-eval --sae truth --skip-geometry --max-rows 1000 a.sae b.sae >m.json 2>/dev/null
  [ "$(num m.json .rows)" = 1000 ]
  sae-eval --sae truth --skip-geometry --max-rows 1800 a.sae b.sae >m2.json 2>/dev/null
  [ "$(num m2.json .rows)" = 1800 ]
}

@test "streams: memory does not grow with the rows (10x the rows: same peak RSS beyond the reader's)" {
  # The stream reader's own buffers grow to a steady state in the first few hundred thousand rows
  # (sae-info shows the same); what sae-eval adds on top of it must not grow. 400k rows of 16
  # floats would add 25 MB if any per-row data were kept; the allowance is 4 MB.
  sae-collect "${toy[@]}" --rows 10 --truth truth -o /dev/null
  sae-collect "${toy[@]}" --rows 40000 --batch-rows 1000 -o small.sae
  sae-collect "${toy[@]}" --rows 400000 --batch-rows 1000 -o large.sae
  for n in small large; do
    /usr/bin/time -f %M -o $n.eval.rss sae-eval --sae truth $n.sae >$n.json 2>/dev/null
    /usr/bin/time -f %M -o $n.info.rss sae-info $n.sae >/dev/null
  done
  [ "$(num small.json .rows)" = 40000 ]
  [ "$(num large.json .rows)" = 400000 ]
  small=$(( $(tail -1 small.eval.rss) - $(tail -1 small.info.rss) ))
  large=$(( $(tail -1 large.eval.rss) - $(tail -1 large.info.rss) ))
  echo "peak RSS above sae-info's: $small kB for 40k rows, $large kB for 400k rows"
  [ $((large - small)) -lt 4096 ]
}

# ---- bad input ----

@test "the SAE's d_in differs from the stream's d: one line naming both, exit 1" {
  hand_sae sae
  sae-collect "${toy[@]}" --rows 10 -o toy.sae
  run sae-eval --sae sae toy.sae
  assert_failure 1
  assert_output "sae-eval: toy.sae: rows have d=16 but sae expects d_in=2"
}

@test "a latents stream where activations are expected" {
  sae-collect "${toy[@]}" --rows 10 --truth truth --latents-out codes.sae -o toy.sae
  run sae-eval --sae truth codes.sae
  assert_failure 1
  assert_output "sae-eval: codes.sae: is a latents stream; sae-eval needs an activations stream"
}

@test "missing tensor, wrong shape, NaN weight, unknown architecture: one line each, exit 1" {
  hand_rows rows.sae
  hand_sae missing
  safetensors missing/sae_weights.safetensors W_enc "[2,3]" "1 0 0 0 1 0" b_enc "[3]" "0 0 -1" W_dec "[3,2]" "1 0 0 1 1 1"
  run sae-eval --sae missing rows.sae
  assert_failure 1
  assert_output "sae-eval: missing/sae_weights.safetensors: missing tensor 'b_dec'"

  hand_sae shape
  safetensors shape/sae_weights.safetensors W_enc "[3,2]" "1 0 0 0 1 0" b_enc "[3]" "0 0 -1" \
    W_dec "[3,2]" "1 0 0 1 1 1" b_dec "[2]" "0 0"
  run sae-eval --sae shape rows.sae
  assert_failure 1
  assert_output --regexp "^sae-eval: shape/sae_weights.safetensors: tensor 'W_enc'.*\[3, 2\].*\[2, 3\]"
  [ "${#lines[@]}" -eq 1 ]

  hand_sae nan
  safetensors nan/sae_weights.safetensors W_enc "[2,3]" "1 0 0 0 1 0" b_enc "[3]" "0 nan -1" \
    W_dec "[3,2]" "1 0 0 1 1 1" b_dec "[2]" "0 0"
  run sae-eval --sae nan rows.sae
  assert_failure 1
  assert_output "sae-eval: nan: tensor 'b_enc' has a NaN or Inf value at element 1"

  hand_sae arch
  sed -i 's/"standard"/"crosscoder"/' arch/cfg.json
  run sae-eval --sae arch rows.sae
  assert_failure 1
  assert_output "sae-eval: arch: unknown architecture 'crosscoder' (expected standard, topk, jumprelu or gated)"

  run sae-eval --sae nowhere rows.sae
  assert_failure 1
  assert_output "sae-eval: nowhere: not a directory (an SAE is a directory with cfg.json)"
}

@test "NaN rows, an empty stream and a truncated stream: exit 1, nothing written" {
  hand_sae sae
  gen_npy nan.npy 10 2 1 '<f4' 3
  sae-npy import nan.npy -o nan.sae
  run sae-eval --sae sae -o r.json --plots plots --density-out d.st nan.sae
  assert_failure 1
  assert_output --partial "nan.sae"
  assert_output --partial "NaN"
  [ "${#lines[@]}" -eq 1 ]
  npy_f32 empty.npy 0 2 ""
  sae-npy import empty.npy -o empty.sae
  run sae-eval --sae sae -o r.json --plots plots --density-out d.st empty.sae
  assert_failure 1
  assert_output "sae-eval: empty.sae: no rows to evaluate"
  sae-collect --toy --d 2 --features 4 --active 1 --rows 5000 -o big.sae
  head -c 20000 big.sae >cut.sae
  run sae-eval --sae sae -o r.json --plots plots --density-out d.st cut.sae
  assert_failure 1
  assert_output --partial "cut.sae"
  assert_no_output_left . sae nan.npy nan.sae empty.npy empty.sae big.sae cut.sae
}

@test "bad usage: no --sae, unknown --format, negative --max-rows" {
  run sae-eval
  assert_failure 1
  assert_line --index 0 "sae-eval: the option '--sae' is required but missing"
  hand_sae sae
  run sae-eval --sae sae --format yaml
  assert_failure 1
  assert_line --index 0 "sae-eval: --format: unknown format 'yaml' (expected json or table)"
  run sae-eval --sae sae --max-rows -1
  assert_failure 1
  assert_line --index 0 "sae-eval: --max-rows: must be >= 0"
}

@test "every supported format of the same SAE gives the same report" {
  hand_rows rows.sae
  hand_sae saelens
  hand_sparsify layers.0
  mkdir legacy
  safetensors legacy/sae_weights.safetensors W_enc "[2,3]" "1 0 0 0 1 0" b_enc "[3]" "0 0 -1" \
    W_dec "[3,2]" "1 0 0 1 0.70710678 0.70710678" b_dec "[2]" "0 0"
  echo '{"d_in": 2, "d_sae": 3, "dtype": "float32", "model_name": "hand", "hook_point": "hand",
         "activation_fn_str": "relu", "normalize_activations": false, "apply_b_dec_to_input": true}' >legacy/cfg.json
  for d in saelens layers.0 legacy; do
    sae-eval --sae $d rows.sae 2>/dev/null | jq -c 'del(.sae)' >$d.json
  done
  cmp saelens.json layers.0.json
  cmp saelens.json legacy.json
  [ "$(sae-eval --sae layers.0 rows.sae 2>/dev/null | jq -r '.sae.format + " " + .sae.architecture + " " + (.sae.k|tostring)')" = "sparsify topk 1" ]
  [ "$(sae-eval --sae legacy rows.sae 2>/dev/null | jq -r .sae.format)" = saelens-legacy ]
}

@test "a stream hook other than the SAE's: a warning, not an error" {
  sae-collect "${toy[@]}" --rows 100 --truth truth -o toy.sae
  run --separate-stderr sae-eval --sae truth --skip-geometry toy.sae
  assert_success
  [[ "$stderr" != *warning* ]]
  jq '.metadata.hook_name = "blocks.6.hook_resid_post"' truth/cfg.json >cfg && mv cfg truth/cfg.json
  run --separate-stderr sae-eval --sae truth --skip-geometry toy.sae
  assert_success
  [ "${stderr_lines[0]}" = "sae-eval: warning: stream hook 'toy' differs from the SAE's hook 'blocks.6.hook_resid_post'" ]
  [ "$(jq -r .rows <<<"$output")" = 100 ]
}
