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
