# Test inputs for the stream tools, made without Python: .npy files written by awk, streams made
# from them with sae-npy. Load after `load helper`.

# npy_header DESCR SHAPE [FORTRAN]: the .npy 1.0 preamble, e.g. npy_header '<f4' '(10, 4)'.
npy_header() {
  npy_header_dict "{'descr': '$1', 'fortran_order': ${3:-False}, 'shape': $2, }"
}

# npy_header_dict DICT: the .npy 1.0 preamble around any header dict text, padded as numpy does.
npy_header_dict() {
  local dict=$1
  local total=$(( (10 + ${#dict} + 1 + 63) / 64 * 64 ))
  local hlen=$(( total - 10 ))
  printf '\x93NUMPY\x01\x00'
  printf "\\x$(printf %02x $((hlen % 256)))\\x$(printf %02x $((hlen / 256)))"
  printf '%s' "$dict"
  printf '%*s\n' $(( total - 10 - ${#dict} - 1 )) ''
}

# gen_npy FILE ROWS D [SEED] [DESCR] [NAN_ROWS]: a (ROWS, D) array of finite values of both signs
# with magnitudes between 2^-7 and 2^3 (<f4) or 2^-5 and 2^5 (<f2), the same for the same SEED.
# NAN_ROWS: comma-separated row numbers whose element 1 is NaN and element 0 is +Inf.
gen_npy() {
  local file=$1 rows=$2 d=$3 seed=${4:-1} descr=${5:-<f4} nan=${6:-}
  {
    npy_header "$descr" "($rows, $d)"
    LC_ALL=C awk -v rows="$rows" -v d="$d" -v seed="$seed" -v descr="$descr" -v nan="$nan" 'BEGIN {
      srand(seed)
      n = split(nan, nr, ",")
      for (i = 1; i <= n; i++) isnan[nr[i]] = 1
      for (r = 0; r < rows; r++) for (j = 0; j < d; j++) {
        s = rand() < 0.5 ? 1 : 0
        if (descr == "<f2") {
          bits = s * 32768 + (10 + int(rand() * 10)) * 1024 + int(rand() * 1024)
          if (r in isnan && j == 0) bits = 31744
          if (r in isnan && j == 1) bits = 32256
          printf "%c%c", bits % 256, int(bits / 256)
        } else {
          e = 120 + int(rand() * 10); m = int(rand() * 8388608)
          b0 = m % 256; b1 = int(m / 256) % 256; b2 = int(m / 65536) + (e % 2) * 128; b3 = s * 128 + int(e / 2)
          if (r in isnan && j == 0) { b0 = 0; b1 = 0; b2 = 128; b3 = 127 }
          if (r in isnan && j == 1) { b0 = 0; b1 = 0; b2 = 192; b3 = 127 }
          printf "%c%c%c%c", b0, b1, b2, b3
        }
      }
    }'
  } > "$file"
}

# gen_int_npy FILE N DESCR MUL: a 1-D array of N integers i*MUL % 50021 (<i4 or <i8).
gen_int_npy() {
  local file=$1 n=$2 descr=$3 mul=${4:-13}
  {
    npy_header "$descr" "($n,)"
    LC_ALL=C awk -v n="$n" -v w="$([ "$descr" = '<i8' ] && echo 8 || echo 4)" -v mul="$mul" 'BEGIN {
      for (i = 0; i < n; i++) {
        v = (i * mul) % 50021
        for (b = 0; b < w; b++) { printf "%c", v % 256; v = int(v / 256) }
      }
    }'
  } > "$file"
}

# gen_stream FILE ROWS D [SEED] [sae-npy import options...]: a stream made from gen_npy data.
gen_stream() {
  local file=$1 rows=$2 d=$3 seed=${4:-1}
  shift 4 2>/dev/null || shift $#
  gen_npy "$file.npy" "$rows" "$d" "$seed"
  sae-npy import "$file.npy" -o "$file" "$@"
  rm -f "$file.npy"
}

file_size() { stat -c %s "$1"; }

# frame_offset FILE N: the byte offset where frame N (0: the header) starts, from sae-info --frames.
frame_offset() { sae-info --frames "$1" | awk -v n="$2" '$1 == n { print $2 }'; }

# Hand-made streams for hostile-input tests: msgpack written with printf, each frame compressed
# by the zstd tool from a file (so it records the content size and a checksum, as the format
# requires).

# mp_str S: a msgpack string (fixstr, or str 8 from 32 bytes).
mp_str() {
  local n=${#1}
  if [ "$n" -lt 32 ]; then printf "\\x$(printf %02x $((0xa0 + n)))"; else printf "\\xd9\\x$(printf %02x "$n")"; fi
  printf '%s' "$1"
}

# mp_uint N: N as a msgpack uint 32 (or uint 64 from 2^32), big-endian.
mp_uint() {
  local n=$1 bytes=4 i
  if [ "$n" -ge 4294967296 ]; then printf '\xcf'; bytes=8; else printf '\xce'; fi
  for ((i = bytes - 1; i >= 0; i--)); do printf "\\x$(printf %02x $(((n >> (8 * i)) & 255)))"; done
}

# mp_zeros_bin N: a msgpack bin 8 of N (< 256) zero bytes.
mp_zeros_bin() {
  printf "\\xc4\\x$(printf %02x "$1")"
  head -c "$1" /dev/zero
}

# append_frame FILE < BYTES: appends the bytes on stdin to FILE as one zstd frame.
append_frame() {
  local content
  content=$(mktemp)
  cat >"$content"
  zstd -q -c "$content" >>"$1"
  rm -f "$content"
}

# header_map KIND D DTYPE: a stream header's msgpack map.
header_map() {
  printf '\x86'
  mp_str type; mp_str header; mp_str format; mp_str saetools-stream; mp_str version; printf '\x01'
  mp_str kind; mp_str "$1"; mp_str d; mp_uint "$2"; mp_str dtype; mp_str "$3"
}

# footer_map ROWS BATCHES: a stream footer's msgpack map.
footer_map() {
  printf '\x83'
  mp_str type; mp_str footer; mp_str rows; mp_uint "$1"; mp_str batches; mp_uint "$2"
}

# claim_stream FILE D ROWS: an f32 activations stream whose header says d=D and whose one batch
# says rows=ROWS, over a payload of just 8 bytes, with a footer that agrees.
claim_stream() {
  local file=$1 d=$2 rows=$3
  : >"$file"
  header_map activations "$d" f32 | append_frame "$file"
  { printf '\x83'; mp_str type; mp_str batch; mp_str rows; mp_uint "$rows"; mp_str x; mp_zeros_bin 8; } |
    append_frame "$file"
  footer_map "$rows" 1 | append_frame "$file"
}

# le32 N: N as 4 little-endian bytes.
le32() {
  local i
  for i in 0 1 2 3; do printf "\\x$(printf %02x $((($1 >> (8 * i)) & 255)))"; done
}

# wide_latents FILE D: a valid latents stream of width D holding one row with one entry, latent
# D-1 = 1.0 (so nothing but the header's D is large).
wide_latents() {
  local file=$1 d=$2
  : >"$file"
  header_map latents "$d" f32 | append_frame "$file"
  {
    printf '\x85'
    mp_str type; mp_str batch; mp_str rows; mp_uint 1
    mp_str count; printf '\xc4\x04'; le32 1
    mp_str index; printf '\xc4\x04'; le32 $((d - 1))
    mp_str value; printf '\xc4\x04\x00\x00\x80\x3f'
  } | append_frame "$file"
  footer_map 1 1 | append_frame "$file"
}
