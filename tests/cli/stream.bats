#!/usr/bin/env bats
# The stream format through the tools: pipes, concatenation, and every kind of bad input. Each bad
# input gets one line naming the file and what is wrong, exit 1, and nothing under the output's
# final name (sae-npy export -o is the writer here; sae-info only reads).
load helper
load stream_helper

# Runs sae-npy export on "$@" into out.npy and checks the failure: exit 1, exactly one stderr line
# equal to $want, no out.npy and no temporary beside it.
export_fails_with() {
  local want=$1
  shift
  run sae-npy export "$@" -o out.npy
  assert_failure 1
  assert_output "$want"
  [ ! -e out.npy ]
  run bash -c "ls -A | grep -c '^\.out\.npy\.tmp' || true"
  assert_output 0
}

@test "a stream goes through a pipe and reads back the same" {
  gen_npy a.npy 3000 16 1
  sae-npy import a.npy | sae-npy export > b.npy
  cmp a.npy b.npy
  run bash -c 'sae-npy import a.npy | sae-info --verify'
  assert_output "<stdin>: ok (3000 rows, 3 batches, 1 stream)"
}

@test "cat a b reads as one stream, and so do two file arguments" {
  gen_stream a.sae 300 8 1
  gen_stream b.sae 200 8 2
  run bash -c 'cat a.sae b.sae | sae-info --verify'
  assert_success
  assert_output "<stdin>: ok (500 rows, 2 batches, 2 streams)"
  run sae-info --verify a.sae b.sae
  assert_output "a.sae b.sae: ok (500 rows, 2 batches, 2 streams)"
  # The rows come out in order: a's, then b's.
  sae-npy export a.sae -o a.npy
  sae-npy export b.sae -o b.npy
  sae-npy export a.sae b.sae -o ab.npy
  [ "$(tail -c $((500 * 32)) ab.npy | md5sum)" = "$( (tail -c $((300 * 32)) a.npy; tail -c $((200 * 32)) b.npy) | md5sum)" ]
}

@test "bad input: empty file and empty stdin" {
  : > empty.sae
  export_fails_with "sae-npy: empty.sae: empty input (no stream header)" empty.sae
  run bash -c 'sae-info < empty.sae'
  assert_failure 1
  assert_output "sae-info: <stdin>: empty input (no stream header)"
}

@test "bad input: random bytes and a text file" {
  head -c 4096 /dev/urandom > random.sae
  export_fails_with "sae-npy: random.sae: not a saetools stream (bad magic)" random.sae
  printf 'rows,d\n1,2\n' > text.sae
  export_fails_with "sae-npy: text.sae: not a saetools stream (bad magic)" text.sae
}

@test "bad input: a zstd file that is not a stream" {
  printf 'hello, world\n' > hello.txt
  zstd -q hello.txt -o hello.zst
  export_fails_with "sae-npy: hello.zst: frame holds a msgpack integer, not a map" hello.zst
}

@test "bad input: a wrong format version" {
  gen_stream a.sae 100 4 1
  # Rewrite the header frame with version 2 (zstd keeps the checksum and, from a file, the size).
  hsize=$(frame_offset a.sae 1)
  head -c "$hsize" a.sae | zstd -q -d > header.bin
  LC_ALL=C sed 's/\xa7version\x01/\xa7version\x02/' header.bin > header2.bin
  ! cmp -s header.bin header2.bin
  zstd -q header2.bin -o header2.zst
  { cat header2.zst; tail -c +$((hsize + 1)) a.sae; } > v2.sae
  export_fails_with "sae-npy: v2.sae: unsupported format version 2 (this build reads version 1)" v2.sae
}

@test "bad input: truncated mid-frame, after a batch before the footer, and after the header" {
  gen_stream a.sae 3000 16 1
  head -c $(( $(file_size a.sae) - 10 )) a.sae > mid-footer.sae
  export_fails_with "sae-npy: mid-footer.sae: truncated stream (ends inside the frame after batch 3)" mid-footer.sae
  head -c $(( ($(frame_offset a.sae 2) + $(frame_offset a.sae 3)) / 2 )) a.sae > mid-batch.sae
  export_fails_with "sae-npy: mid-batch.sae: truncated stream (ends inside the frame after batch 1)" mid-batch.sae
  head -c "$(frame_offset a.sae 4)" a.sae > no-footer.sae
  export_fails_with "sae-npy: no-footer.sae: truncated stream (no footer after batch 3)" no-footer.sae
  head -c "$(frame_offset a.sae 1)" a.sae > header-only.sae
  export_fails_with "sae-npy: header-only.sae: truncated stream (no batches and no footer after the header)" header-only.sae
}

@test "bad input: one flipped byte inside a frame" {
  gen_stream a.sae 3000 16 1
  cp a.sae flipped.sae
  printf '\xff' | dd of=flipped.sae bs=1 seek=$(( $(frame_offset a.sae 2) + 30000 )) conv=notrunc 2>/dev/null
  export_fails_with "sae-npy: flipped.sae: batch 2: corrupt frame (checksum mismatch)" flipped.sae
  # --frames locates it.
  run sae-info --frames flipped.sae
  assert_failure 1
  assert_line "sae-info: flipped.sae: frame 2 at offset $(frame_offset a.sae 2): corrupt (Restored data doesn't match checksum)"
}

@test "bad input: concatenated streams with different d, dtype or hook" {
  gen_stream a.sae 100 16 1 --hook blocks.1.hook_resid_post
  gen_stream d32.sae 100 32 2 --hook blocks.1.hook_resid_post
  gen_stream bf16.sae 100 16 3 --hook blocks.1.hook_resid_post --dtype bf16
  gen_stream hook.sae 100 16 4 --hook blocks.2.hook_resid_post
  export_fails_with "sae-npy: d32.sae: does not match the first stream (a.sae): d=32 here, d=16 there" a.sae d32.sae
  export_fails_with "sae-npy: bf16.sae: does not match the first stream (a.sae): dtype bf16 here, f32 there" a.sae bf16.sae
  export_fails_with "sae-npy: hook.sae: does not match the first stream (a.sae): hook 'blocks.2.hook_resid_post' here, 'blocks.1.hook_resid_post' there" a.sae hook.sae
  cat a.sae d32.sae > cat.sae
  export_fails_with "sae-npy: cat.sae: stream 2: does not match the first stream (cat.sae): d=32 here, d=16 there" cat.sae
  run bash -c 'cat a.sae bf16.sae | sae-info'
  assert_failure 1
  assert_output "sae-info: <stdin>: stream 2: does not match the first stream (<stdin>): dtype bf16 here, f32 there"
}

@test "bad input: missing and unreadable input files" {
  gen_stream a.sae 10 4 1
  export_fails_with "sae-npy: nope.sae: No such file or directory" nope.sae
  export_fails_with "sae-npy: nope.sae: No such file or directory" a.sae nope.sae
  mkdir dir.sae
  export_fails_with "sae-npy: dir.sae: is a directory" dir.sae
  [ "$(id -u)" != 0 ] || skip "root reads unreadable files"
  cp a.sae locked.sae
  chmod 000 locked.sae
  export_fails_with "sae-npy: locked.sae: Permission denied" locked.sae
}

@test "bad input: a missing output directory" {
  gen_stream a.sae 10 4 1
  run sae-npy export a.sae -o no/such/dir/out.npy
  assert_failure 1
  assert_output "sae-npy: no/such/dir/out.npy: output directory no/such/dir does not exist"
  [ ! -e no ]
}

@test "NaN/Inf rows: allowed by default, an error or skipped on request" {
  gen_npy nan.npy 50 4 1 '<f4' 7,30
  sae-npy import nan.npy -o nan.sae --batch-rows 20
  sae-npy export nan.sae -o all.npy
  cmp nan.npy all.npy
  run sae-npy export nan.sae -o out.npy --nonfinite error
  assert_failure 1
  assert_output "sae-npy: nan.sae: batch 1: row 7 has a NaN or Inf value (1 such row in this batch)"
  [ ! -e out.npy ]
  sae-npy export nan.sae -o kept.npy --nonfinite skip
  sae-npy import kept.npy -o kept.sae
  run sae-info --verify kept.sae
  assert_output "kept.sae: ok (48 rows, 1 batch, 1 stream)"
  run sae-info --verify nan.sae
  assert_failure 1
  assert_output "sae-info: nan.sae: batch 1: row 7 has a NaN or Inf value (1 such row in this batch)"
}
