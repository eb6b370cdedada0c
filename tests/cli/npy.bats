#!/usr/bin/env bats
# sae-npy: streams to .npy and back, numpy's header versions, shapes, columns, and what it refuses.
load helper
load stream_helper

# The .npy data after the header (to compare arrays written with different header lengths).
npy_data() { local h=$(( $(od -An -tu2 -j8 -N2 "$1") + 10 )); tail -c +$((h + 1)) "$1"; }

@test "stream -> npy -> stream -> npy round-trips exactly (f32, bf16, f16)" {
  gen_stream a.sae 2500 24 1
  sae-npy export a.sae -o a.npy
  sae-npy import a.npy -o b.sae
  sae-npy export b.sae -o b.npy
  cmp a.npy b.npy
  diff <(sae-info --head 2500 a.sae) <(sae-info --head 2500 b.sae)
  # bf16 values are exact in f32: the trip back to bf16 loses nothing.
  sae-npy import a.npy --dtype bf16 -o h.sae
  sae-npy export h.sae -o h.npy
  head -c 128 h.npy | grep -q "'descr': '<f4'"
  sae-npy import h.npy --dtype bf16 -o h2.sae
  sae-npy export h2.sae -o h2.npy
  cmp h.npy h2.npy
  # f16 arrays give f16 streams (auto), and f16 arrays back.
  gen_npy f.npy 300 8 2 '<f2'
  sae-npy import f.npy -o f.sae
  run sae-info --header f.sae
  assert_line --regexp '^dtype +f16$'
  sae-npy export f.sae -o f2.npy
  cmp f.npy f2.npy
}

@test "stdin and stdout: cat a.npy | sae-npy import | sae-npy export" {
  gen_npy a.npy 700 12 3
  cat a.npy | sae-npy import | sae-npy export > b.npy
  cmp a.npy b.npy
  sae-npy import - < a.npy | sae-npy export - -o c.npy
  cmp a.npy c.npy
}

@test "numpy header versions 1.0, 2.0 and 3.0 are read; 4.0 is refused" {
  gen_npy a.npy 40 6 1
  hlen=$(od -An -tu2 -j8 -N2 a.npy | tr -d ' ')
  for v in 2 3; do
    { printf "\x93NUMPY\x0$v\x00"; printf "\\x$(printf %02x $((hlen % 256)))\\x$(printf %02x $((hlen / 256)))\x00\x00"
      tail -c +11 a.npy; } > v$v.npy
    sae-npy import v$v.npy -o v$v.sae
    sae-npy export v$v.sae -o back$v.npy
    cmp a.npy back$v.npy
  done
  { printf '\x93NUMPY\x04\x00'; tail -c +9 a.npy; } > v4.npy
  run sae-npy import v4.npy -o out.sae
  assert_failure 1
  assert_output "sae-npy: v4.npy: unsupported .npy format version 4.0"
  [ ! -e out.sae ]
}

@test "shapes: (rows, d) and (batch, seq, d) import; 1-D, 0-D and zero-width are refused" {
  gen_npy a.npy 10 4 1
  { npy_header '<f4' '(2, 5, 4)'; npy_data a.npy; } > b3.npy
  sae-npy import b3.npy -o b3.sae
  run sae-info --verify b3.sae
  assert_output "b3.sae: ok (10 rows, 1 batch, 1 stream)"
  sae-npy export b3.sae -o b3back.npy
  cmp a.npy b3back.npy
  { npy_header '<f4' '(40,)'; npy_data a.npy; } > one.npy
  run sae-npy import one.npy -o out.sae
  assert_failure 1
  assert_output "sae-npy: one.npy: shape (40,) has no row dimension; expected (rows, d) or more dimensions (all but the last count rows)"
  { npy_header '<f4' '()'; head -c 4 /dev/zero; } > zero.npy
  run sae-npy import zero.npy -o out.sae
  assert_output "sae-npy: zero.npy: shape () has no row dimension; expected (rows, d) or more dimensions (all but the last count rows)"
  npy_header '<f4' '(5, 0)' > w0.npy
  run sae-npy import w0.npy -o out.sae
  assert_output "sae-npy: w0.npy: shape (5, 0) has rows of width 0"
  [ ! -e out.sae ]
  # No rows at all is a valid, empty stream.
  npy_header '<f4' '(0, 8)' > empty.npy
  sae-npy import empty.npy -o empty.sae
  run sae-info --verify empty.sae
  assert_output "empty.sae: ok (0 rows, 0 batches, 1 stream)"
  sae-npy export empty.sae -o empty2.npy
  cmp empty.npy empty2.npy
}

@test "refused arrays: fortran order, big-endian, integers as values, structured, truncated, trailing bytes" {
  gen_npy a.npy 10 4 1
  refuse() {
    run sae-npy import "$1" -o out.sae
    assert_failure 1
    assert_output "$2"
    [ ! -e out.sae ]
  }
  { npy_header '<f4' '(10, 4)' True; npy_data a.npy; } > fortran.npy
  refuse fortran.npy "sae-npy: fortran.npy: fortran_order arrays are not supported (save it with np.ascontiguousarray(a))"
  { npy_header '>f4' '(10, 4)'; npy_data a.npy; } > big.npy
  refuse big.npy "sae-npy: big.npy: big-endian data ('>f4') is not supported; convert it with arr.astype('<f4')"
  { npy_header '<i4' '(10, 4)'; npy_data a.npy; } > ints.npy
  refuse ints.npy "sae-npy: ints.npy: holds <i4 integers; activations must be <f4, <f2 or <f8"
  { npy_header '|u1' '(10, 4)'; npy_data a.npy; } > bytes.npy
  refuse bytes.npy "sae-npy: bytes.npy: unsupported dtype '|u1' (supported: <f4, <f2, <f8, and <i4, <i8 for integer columns)"
  npy_header_dict "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (10,), }" > struct.npy
  refuse struct.npy "sae-npy: struct.npy: 'descr' is not a simple dtype string (structured arrays are not supported)"
  head -c $(( $(file_size a.npy) - 7 )) a.npy > short.npy
  refuse short.npy "sae-npy: short.npy: truncated: shape (10, 4) of <f4 needs 160 bytes of data, the file holds 153"
  { cat a.npy; printf 'xyz'; } > long.npy
  refuse long.npy "sae-npy: long.npy: unexpected bytes after the array data (shape (10, 4))"
  gen_stream s.sae 10 4 1
  refuse s.sae "sae-npy: s.sae: not a .npy file (bad magic)"
  : > empty.npy
  refuse empty.npy "sae-npy: empty.npy: empty input (not a .npy file)"
}

@test "<f8 arrays import as f32 (rounded to nearest)" {
  # 1.0, -2.5, 0.1, 1e-3 as float64
  { npy_header '<f8' '(2, 2)'
    printf '\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\x04\xc0'
    printf '\x9a\x99\x99\x99\x99\x99\xb9\x3f\xfc\xa9\xf1\xd2\x4d\x62\x50\x3f'; } > d.npy
  sae-npy import d.npy -o d.sae
  run sae-info --head 2 d.sae
  assert_line --index 1 "0	1	-2.5"
  assert_line --index 2 "1	0.100000001	0.00100000005"
}

@test "token, doc and pos columns import from .npy files and export back" {
  gen_npy a.npy 3000 8 1
  gen_int_npy tok.npy 3000 '<i4' 13
  gen_int_npy doc.npy 3000 '<i8' 1
  gen_int_npy pos.npy 3000 '<i4' 7
  sae-npy import a.npy --token tok.npy --doc doc.npy --pos pos.npy -o a.sae
  run sae-info a.sae
  assert_line --regexp '^columns +token, doc, pos$'
  assert_line --regexp '^token ids +0 \.\. 38987$'
  assert_line --regexp '^doc ids +0 \.\. 2999$'
  for c in token doc pos; do
    sae-npy export a.sae --column $c -o $c.out.npy
  done
  cmp tok.npy token.out.npy
  cmp doc.npy doc.out.npy
  cmp pos.npy pos.out.npy
  # <i8 token ids that fit int32 are fine; the column must have one value per row.
  gen_int_npy tok8.npy 3000 '<i8' 13
  sae-npy import a.npy --token tok8.npy -o b.sae
  sae-npy export b.sae --column token -o b.tok.npy
  cmp tok.npy b.tok.npy
  gen_int_npy short.npy 2999 '<i4' 13
  run sae-npy import a.npy --pos short.npy -o c.sae
  assert_failure 1
  assert_output "sae-npy: short.npy: has 2999 values (shape (2999,)), expected one per row: 3000 rows in a.npy"
  run sae-npy import a.npy --token a.npy -o c.sae
  assert_output "sae-npy: a.npy: holds <f4 values; the token column must be integers (<i4 or <i8)"
  { npy_header '<i8' '(3000,)'; head -c 8 /dev/zero; printf '\x00\x00\x00\x00\x01\x00\x00\x00'; head -c $((2998 * 8)) /dev/zero; } > huge.npy
  run sae-npy import a.npy --token huge.npy -o c.sae
  assert_output "sae-npy: huge.npy: value 4294967296 at index 1 does not fit the int32 token column"
  [ ! -e c.sae ]
  # Exporting a column the stream does not have.
  gen_stream plain.sae 10 4 1
  run sae-npy export plain.sae --column token -o t.npy
  assert_failure 1
  assert_output "sae-npy: plain.sae: batch 1: has no 'token' column"
  [ ! -e t.npy ]
}

@test "import options: batch rows, level, shuffle, dtype and provenance" {
  gen_npy a.npy 1000 16 1
  sae-npy import a.npy --batch-rows 300 -o a.sae
  run sae-info --verify a.sae
  assert_output "a.sae: ok (1000 rows, 4 batches, 1 stream)"
  sae-npy import a.npy --dtype bf16 -o plain.sae
  sae-npy import a.npy --dtype bf16 --shuffle -o shuffled.sae
  [ "$(file_size shuffled.sae)" -lt "$(file_size plain.sae)" ]
  diff <(sae-info --head 1000 plain.sae) <(sae-info --head 1000 shuffled.sae)
  sae-npy import a.npy --level 19 -o small.sae
  sae-npy import a.npy --level -5 --threads 2 -o fast.sae
  diff <(sae-info --head 1000 small.sae) <(sae-info --head 1000 fast.sae)
  sae-npy export fast.sae -o fast.npy
  cmp a.npy fast.npy
  sae-npy import a.npy --hook blocks.3.hook_resid_post --model gpt2 --meta layer=3 --meta note='two words' \
    --meta 'ids=[1,2]' -o p.sae
  run sae-info --header --json p.sae
  assert_line --partial '"hook": "blocks.3.hook_resid_post"'
  assert_line --partial '"model": "gpt2"'
  assert_line --partial '"layer": 3'
  assert_line --partial '"note": "two words"'
  assert_line --partial '"source": "a.npy"'
  assert_line --partial '"tool": "sae-npy"'
  # export --dtype f16 stores half precision.
  sae-npy export a.sae --dtype f16 -o h.npy
  head -c 128 h.npy | grep -q "'descr': '<f2'"
  [ "$(file_size h.npy)" -eq $((128 + 1000 * 16 * 2)) ]
}

@test "bad option values name the option" {
  gen_npy a.npy 10 4 1
  run sae-npy import a.npy --dtype f64
  assert_failure 1
  assert_line --index 0 "sae-npy: --dtype: unknown dtype 'f64' (expected f32, f16 or bf16)"
  run sae-npy export --dtype bf16
  assert_line --index 0 "sae-npy: --dtype: 'bf16' is not an array dtype for export (expected auto, f32 or f16)"
  run sae-npy import a.npy --batch-rows 0
  assert_line --index 0 "sae-npy: --batch-rows must be at least 1"
  run sae-npy import a.npy --level 99 -o x.sae
  assert_line --index 0 "sae-npy: zstd level 99 is out of range (-131072 to 22)"
  [ ! -e x.sae ]
  run sae-npy import a.npy --meta novalue
  assert_line --index 0 "sae-npy: --meta: expected KEY=VALUE, got 'novalue'"
  run sae-npy export --column bogus
  assert_line --index 0 "sae-npy: --column: unknown column 'bogus' (expected x, token, doc or pos)"
  run sae-npy export --nonfinite maybe
  assert_line --index 0 "sae-npy: --nonfinite: unknown policy 'maybe' (expected allow, skip or error)"
  run sae-npy import a.npy a.npy
  assert_line --index 0 "sae-npy: import takes one .npy file (got 2)"
  run sae-npy export --shuffle
  assert_line --index 0 "sae-npy: --shuffle applies to import only"
  run sae-npy import a.npy --column token
  assert_line --index 0 "sae-npy: --column applies to export only"
  run sae-npy frobnicate
  assert_line --index 0 "sae-npy: unknown command 'frobnicate' (expected export or import)"
  run sae-npy
  assert_line --index 0 "sae-npy: missing command: export or import"
}
