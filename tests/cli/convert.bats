#!/usr/bin/env bats
# sae-convert: any SAE directory load_sae reads -> the SAELens 6 layout (docs/sae-format.md).
load helper
load stream_helper
load sae_helper

toy=(--toy --d 16 --features 64 --active 3 --noise 0.01)

# The encodings of an SAE on a stream, as its report's per-latent numbers and reconstruction:
# identical encodings give identical reports (everything but the .sae block, which names the
# directory and its format).
encodings() { sae-eval --sae "$1" "$2" 2>/dev/null | jq -c 'del(.sae)'; }

@test "sae-convert --help lists every option with its default" {
  run sae-convert --help
  assert_success
  for opt in "-o [ --output ] arg" "--dtype arg (=f32)"; do
    assert_line --partial -- "$opt"
  done
}

@test "sparsify -> SAELens: the layout SAELens reads, and the same encodings" {
  hand_rows rows.sae
  hand_sparsify layers.3
  run sae-convert layers.3 -o out
  assert_success
  assert_output ""
  [ "$(ls out | tr '\n' ' ')" = "cfg.json sae_weights.safetensors " ]
  [ "$(jq -c '[.architecture, .k, .d_in, .d_sae, .apply_b_dec_to_input, .normalize_activations, .dtype]' out/cfg.json)" \
    = '["topk",1,2,3,true,"none","float32"]' ]
  [ "$(jq -r '.metadata.sae_lens_version + " " + .metadata.hook_name' out/cfg.json)" = "6.0.0 layers.3" ]
  # W_enc is the transpose of sparsify's encoder.weight [3, 2].
  hlen=$(od -An -tu8 -N8 out/sae_weights.safetensors | tr -d ' ')
  [ "$(tail -c +9 out/sae_weights.safetensors | head -c "$hlen" | jq -c '[.W_enc.shape, .W_dec.shape, .b_enc.shape, .b_dec.shape]')" \
    = '[[2,3],[3,2],[3],[2]]' ]
  [ "$(encodings layers.3 rows.sae)" = "$(encodings out rows.sae)" ]
  [ "$(sae-eval --sae out rows.sae 2>/dev/null | jq -r .sae.format)" = saetools ]
}

@test "f32 conversion of the toy truth gives identical encodings on toy data" {
  sae-collect "${toy[@]}" --rows 3000 --truth truth -o toy.sae
  sae-convert truth -o copy
  [ "$(encodings truth toy.sae)" = "$(encodings copy toy.sae)" ]
  # The feature density file comes along.
  cmp truth/sparsity.safetensors copy/sparsity.safetensors
}

@test "--dtype bf16 and f16: weights stored at that precision; metrics within 1%" {
  # bf16 keeps 8 significant bits (relative rounding <= 2^-9 per weight), so pre-activations move
  # by ~0.2% of their scale; the fvu and cosine of a whole stream move by well under 1%.
  sae-collect "${toy[@]}" --rows 3000 --truth truth -o toy.sae
  for dt in bf16 f16; do
    sae-convert truth -o $dt --dtype $dt
    hlen=$(od -An -tu8 -N8 $dt/sae_weights.safetensors | tr -d ' ')
    want=$([ $dt = bf16 ] && echo BF16 || echo F16)
    [ "$(tail -c +9 $dt/sae_weights.safetensors | head -c "$hlen" | jq -r .W_enc.dtype)" = "$want" ]
    [ "$(jq -r .dtype $dt/cfg.json)" = "$([ $dt = bf16 ] && echo bfloat16 || echo float16)" ]
    sae-eval --sae truth --skip-geometry toy.sae >a.json 2>/dev/null
    sae-eval --sae $dt --skip-geometry toy.sae >b.json 2>/dev/null
    jq -n --slurpfile a a.json --slurpfile b b.json -e '
      def close(x; y): ((x - y) | fabs) <= 0.01 * (y | fabs);
      close($b[0].reconstruction.fvu; $a[0].reconstruction.fvu) and
      close($b[0].reconstruction.cosine_similarity; $a[0].reconstruction.cosine_similarity) and
      close($b[0].sparsity.l0.mean; $a[0].sparsity.l0.mean)'
  done
}

@test "legacy SAELens -> SAELens 6: version and metadata keys move, encodings unchanged" {
  hand_rows rows.sae
  mkdir legacy
  safetensors legacy/sae_weights.safetensors W_enc "[2,3]" "1 0 0 0 1 0" b_enc "[3]" "0 0 -1" \
    W_dec "[3,2]" "1 0 0 1 0.70710678 0.70710678" b_dec "[2]" "0 0"
  echo '{"d_in": 2, "d_sae": 3, "dtype": "float32", "model_name": "gpt2-small", "hook_point": "blocks.0.hook_resid_pre",
         "hook_point_layer": 0, "activation_fn_str": "relu", "normalize_activations": false,
         "apply_b_dec_to_input": true, "sae_lens_version": "3.12.0", "context_size": 128}' >legacy/cfg.json
  sae-convert legacy -o new
  [ "$(jq -c '[has("sae_lens_version"), has("activation_fn_str"), has("hook_point"), has("model_name")]' new/cfg.json)" \
    = '[false,false,false,false]' ]
  [ "$(jq -c '.metadata | [.sae_lens_version, .hook_name, .hook_layer, .model_name, .context_size]' new/cfg.json)" \
    = '["6.0.0","blocks.0.hook_resid_pre",0,"gpt2-small",128]' ]
  [ "$(jq -r .normalize_activations new/cfg.json)" = none ]
  [ "$(encodings legacy rows.sae)" = "$(encodings new rows.sae)" ]
}

@test "bad input and usage: one line, exit 1, nothing created" {
  hand_sae sae
  run sae-convert sae
  assert_failure 1
  assert_line --index 0 "sae-convert: the option '--output' is required but missing"
  run sae-convert sae -o out --dtype f64
  assert_failure 1
  assert_line --index 0 "sae-convert: --dtype: unknown dtype 'f64' (expected f32, f16 or bf16)"
  run sae-convert nowhere -o out
  assert_failure 1
  assert_output "sae-convert: nowhere: not a directory (an SAE is a directory with cfg.json)"
  hand_sae nan
  safetensors nan/sae_weights.safetensors W_enc "[2,3]" "1 0 0 0 1 0" b_enc "[3]" "0 0 -1" \
    W_dec "[3,2]" "1 0 nan 1 1 1" b_dec "[2]" "0 0"
  run sae-convert nan -o out
  assert_failure 1
  assert_output "sae-convert: nan: tensor 'W_dec' has a NaN or Inf value at element 2"
  run sae-convert sae -o missing/out
  assert_failure 1
  assert_output "sae-convert: missing/out: cannot write the output: directory missing does not exist"
  assert_no_output_left . sae nan
}

@test "converting over an existing directory replaces it whole" {
  hand_sae sae
  mkdir out
  touch out/stale-file
  sae-convert sae -o out
  [ "$(ls out | tr '\n' ' ')" = "cfg.json sae_weights.safetensors " ]
  assert_no_output_left . sae out
}

# gemma_scope DIR ZIP_FLAG: a Gemma Scope release directory whose params.npz Info-ZIP's zip packs
# (-0 stores, -9 deflates), as an independent writer of the zip format: d_in 2, d_sae 2, identity
# encoder and decoder, b_enc 0, threshold 0.5, b_dec (1, 1).
gemma_scope() {
  local dir=$1 flag=$2 tmp
  tmp=$(mktemp -d)
  mkdir -p "$dir"
  { npy_header '<f4' '(2, 2)'; f32_bytes 1 0 0 1; } >"$tmp/W_enc.npy"
  { npy_header '<f4' '(2, 2)'; f32_bytes 1 0 0 1; } >"$tmp/W_dec.npy"
  { npy_header '<f4' '(2,)'; f32_bytes 0 0; } >"$tmp/b_enc.npy"
  { npy_header '<f4' '(2,)'; f32_bytes 1 1; } >"$tmp/b_dec.npy"
  { npy_header '<f4' '(2,)'; f32_bytes 0.5 0.5; } >"$tmp/threshold.npy"
  (cd "$tmp" && zip -q -X "$flag" params.npz ./*.npy)  # -X: no extra fields, so offsets below are exact
  mv "$tmp/params.npz" "$dir/"
  rm -rf "$tmp"
}

@test "Gemma Scope params.npz, stored or deflated (by Info-ZIP) -> SAELens: JumpReLU on x itself, hook from the path" {
  command -v zip >/dev/null || skip "zip is not installed (scripts/install-deps.sh installs it)"
  # (1.25, 0.25) and (0.25, 1.25): one latent each fires on x itself; had b_dec been subtracted
  # first, none would ((0.25, -0.75) is under the threshold).
  npy_f32 rows.npy 2 2 "1.25 0.25 0.25 1.25"
  sae-npy import rows.npy -o rows.sae
  for flag in -0 -9; do
    d="gs$flag/gemma-scope-2b-pt-res/layer_6/width_16k/average_l0_10"
    gemma_scope "$d" "$flag"
    run sae-eval --sae "$d" rows.sae
    assert_success
    [ "$(jq -c '[.sae.format, .sae.architecture, .sae.hook, .sae.apply_b_dec_to_input, .sparsity.l0.mean]' <<<"$output")" \
      = '["gemma-scope","jumprelu","blocks.6.hook_resid_post",false,1]' ]
    # x_hat = f W_dec + b_dec: (2.25, 1) and (1, 2.25); squared error per row 1 + 0.5625.
    [ "$(jq -c '.reconstruction.squared_error_per_row' <<<"$output")" = 1.5625 ]
    run sae-convert "$d" -o "out$flag"
    assert_success
    [ "$(jq -c '[.architecture, .d_in, .d_sae, .apply_b_dec_to_input, .metadata.hook_name]' "out$flag/cfg.json")" \
      = '["jumprelu",2,2,false,"blocks.6.hook_resid_post"]' ]
    [ "$(encodings "$d" rows.sae)" = "$(encodings "out$flag" rows.sae)" ]
  done
}

@test "a damaged params.npz is named with its member and the problem" {
  command -v zip >/dev/null || skip "zip is not installed (scripts/install-deps.sh installs it)"
  gemma_scope gs -0
  # Flip a byte of W_dec's second value (name, 128-byte .npy header, 4 bytes): its CRC-32 no longer matches.
  off=$(grep -obUaP 'W_dec\.npy' gs/params.npz | head -1 | cut -d: -f1)
  printf '\xff' | dd of=gs/params.npz bs=1 seek=$((off + 9 + 128 + 4)) conv=notrunc status=none
  run sae-convert gs -o out
  assert_failure 1
  assert_output "sae-convert: gs/params.npz: member W_dec.npy: CRC-32 mismatch (the archive is corrupt)"
  [ ! -e out ]
}
