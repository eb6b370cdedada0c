# SAE directory fixtures for the CLI tests, written without Python: float32 bytes and safetensors
# files from awk and printf, cfg.json from heredocs. Load after `load helper` and `load stream_helper`.

# f32_bytes V...: the little-endian float32 bytes of each value, rounded to nearest ("nan" = quiet NaN).
f32_bytes() {
  LC_ALL=C awk -v vals="$*" '
    function emit(v,   s, e, m, be, mi) {
      if (v == "nan") { printf "%c%c%c%c", 0, 0, 192, 127; return }
      v += 0
      if (v == 0) { printf "%c%c%c%c", 0, 0, 0, 0; return }
      s = v < 0 ? 1 : 0; if (s) v = -v
      e = int(log(v) / log(2)); while (2 ^ e > v) e--; while (2 ^ (e + 1) <= v) e++
      mi = int((v / 2 ^ e - 1) * 8388608 + 0.5); if (mi == 8388608) { mi = 0; e++ }
      be = e + 127
      printf "%c%c%c%c", mi % 256, int(mi / 256) % 256, int(mi / 65536) + (be % 2) * 128, s * 128 + int(be / 2)
    }
    BEGIN { n = split(vals, a, " "); for (i = 1; i <= n; i++) emit(a[i]) }'
}

# le64 N: N as 8 little-endian bytes (the safetensors header length).
le64() {
  local n=$1 i
  for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (n >> (8 * i)) & 255 )))"; done
}

# safetensors FILE NAME SHAPE "V ..." [NAME SHAPE "V ..."]...: an F32 safetensors file.
safetensors() {
  local file=$1
  shift
  local hdr="{" off=0 sep="" data
  data=$(mktemp)
  while [ $# -gt 0 ]; do
    local name=$1 shape=$2 vals=$3 n
    shift 3
    n=$(wc -w <<<"$vals")
    hdr+="$sep\"$name\":{\"dtype\":\"F32\",\"shape\":$shape,\"data_offsets\":[$off,$((off + 4 * n))]}"
    f32_bytes $vals >>"$data"
    off=$((off + 4 * n))
    sep=","
  done
  hdr+="}"
  while [ $((${#hdr} % 8)) -ne 0 ]; do hdr+=" "; done
  { le64 ${#hdr}; printf '%s' "$hdr"; cat "$data"; } >"$file"
  rm -f "$data"
}

# npy_f32 FILE ROWS D "V ...": a (ROWS, D) float32 .npy array.
npy_f32() {
  { npy_header '<f4' "($2, $3)"; f32_bytes $4; } >"$1"
}

# The hand fixture (docs/eval.md): d_in 2, d_sae 3; latents 0 and 1 are ReLU copies of the two
# coordinates, latent 2 never fires (zero encoder column, bias -1) and its decoder row is
# (1, 1)/sqrt(2). hand_sae DIR [ARCH_JSON_FIELDS] writes it as a SAELens 6 directory.
hand_sae() {
  mkdir -p "$1"
  cat >"$1/cfg.json" <<JSON
{"architecture": "standard", "d_in": 2, "d_sae": 3, "dtype": "float32", "device": "cpu",
 "apply_b_dec_to_input": true, "normalize_activations": "none", "reshape_activations": "none"${2:+, $2},
 "metadata": {"sae_lens_version": "6.5.0", "model_name": "hand", "hook_name": "hand"}}
JSON
  safetensors "$1/sae_weights.safetensors" W_enc "[2,3]" "1 0 0 0 1 0" b_enc "[3]" "0 0 -1" \
    W_dec "[3,2]" "1 0 0 1 0.70710678 0.70710678" b_dec "[2]" "0 0"
}

# The same SAE as an EleutherAI sparsify directory (TopK with k = 1: on these rows the single
# largest ReLU pre-activation is the standard SAE's only active latent).
hand_sparsify() {
  mkdir -p "$1"
  echo '{"activation": "topk", "expansion_factor": 32, "normalize_decoder": true, "num_latents": 0, "k": 1, "multi_topk": false, "skip_connection": false, "transcode": false, "d_in": 2}' >"$1/cfg.json"
  safetensors "$1/sae.safetensors" encoder.weight "[3,2]" "1 0 0 1 0 0" encoder.bias "[3]" "0 0 -1" \
    W_dec "[3,2]" "1 0 0 1 0.70710678 0.70710678" b_dec "[2]" "0 0"
}

# hand_rows FILE: the four rows (2,0), (0,2), (-2,0), (0,-2) as an activations stream.
hand_rows() {
  npy_f32 hand-rows.npy 4 2 "2 0 0 2 -2 0 0 -2"
  sae-npy import hand-rows.npy -o "$1"
  rm -f hand-rows.npy
}

# num FILE.json JQ-PATH: the number at a path of a JSON report.
num() { jq -r "$2" "$1"; }
