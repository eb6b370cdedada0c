#!/usr/bin/env bats
# sae-info: the table, --json, --header, --head, --verify and --frames, on a stream whose statistics
# are known by hand.
load helper
load stream_helper

# Five rows of d=2: (3,4) (0,0) (NaN,1) (-3,-4) (6,8). The NaN row is counted and left out of the
# statistics: norms 5, 0, 5, 10 -> mean 5; dim 0: 3 0 -3 6 -> mean 1.5, std sqrt(11.25) = 3.3541;
# dim 1: 4 0 -4 8 -> mean 2, std sqrt(20) = 4.47214 (population std); values -4 .. 8.
known_npy() {
  { npy_header '<f4' '(5, 2)'
    printf '\x00\x00\x40\x40\x00\x00\x80\x40'   # 3 4
    printf '\x00\x00\x00\x00\x00\x00\x00\x00'   # 0 0
    printf '\x00\x00\xc0\x7f\x00\x00\x80\x3f'   # NaN 1
    printf '\x00\x00\x40\xc0\x00\x00\x80\xc0'   # -3 -4
    printf '\x00\x00\xc0\x40\x00\x00\x00\x41'   # 6 8
  } > "$1"
}

@test "the table shows the header, counts and statistics" {
  known_npy k.npy
  sae-npy import k.npy -o k.sae --batch-rows 2 --hook blocks.0.hook_resid_post --dtype f32
  run sae-info k.sae
  assert_success
  assert_line --regexp '^file +k\.sae$'
  assert_line --regexp '^format +saetools-stream version 1$'
  assert_line --regexp '^kind +activations$'
  assert_line --regexp '^d +2$'
  assert_line --regexp '^dtype +f32$'
  assert_line --regexp '^provenance +hook=blocks\.0\.hook_resid_post source=k\.npy tool=sae-npy tool_version=[0-9.]+(-[0-9]+-g[0-9a-f]+)?(-dirty)?$'
  assert_line --regexp '^rows +5$'
  assert_line --regexp '^batches +3$'
  assert_line --regexp '^streams +1$'
  assert_line --regexp '^columns +-$'
  assert_line --regexp '^compressed +[0-9]+ B \([0-9.]+ bytes/value\)$'
  assert_line --regexp '^nonfinite rows +1$'
  assert_line --regexp '^mean L2 norm +5$'
  assert_line --regexp '^dim mean +1\.5 \.\. 2$'
  assert_line --regexp '^dim std +3\.3541 \.\. 4\.47214$'
  assert_line --regexp '^values +-4 \.\. 8$'
}

@test "--json gives the same report for machines" {
  known_npy k.npy
  sae-npy import k.npy -o k.sae --batch-rows 2
  run sae-info --json k.sae
  assert_success
  # (keys are sorted; the last one in an object has no comma)
  assert_line --regexp '^  "rows": 5,?$'
  assert_line --regexp '^  "batches": 3,?$'
  assert_line --regexp '^  "streams": 1,?$'
  assert_line --regexp '^    "nonfinite_rows": 1,?$'
  assert_line --regexp '^    "mean_l2_norm": 5\.0,?$'
  assert_line --regexp '^    "dim_mean_min": 1\.5,?$'
  assert_line --regexp '^    "dim_mean_max": 2\.0,?$'
  assert_line --regexp '^    "dim_std_min": 3\.354101966249[0-9]*,?$'
  assert_line --regexp '^    "dim_std_max": 4\.47213595499[0-9]*,?$'
  assert_line --regexp '^    "value_min": -4\.0,?$'
  assert_line --regexp '^    "value_max": 8\.0,?$'
  assert_line --regexp '^    "d": 2,?$'
  assert_line --regexp '^    "dtype": "f32",?$'
}

@test "--header reads only the header: it works on a stream cut short" {
  gen_stream a.sae 3000 16 1 --hook h1
  head -c "$(frame_offset a.sae 2)" a.sae > cut.sae
  run sae-info --header cut.sae
  assert_success
  assert_line --regexp '^d +16$'
  assert_line --regexp '^provenance +hook=h1 source=a\.sae\.npy tool=sae-npy tool_version=[0-9.]+(-[0-9]+-g[0-9a-f]+)?(-dirty)?$'
  refute_line --regexp '^rows'
  run sae-info cut.sae
  assert_failure 1
  assert_output "sae-info: cut.sae: truncated stream (no footer after batch 1)"
}

@test "--head N prints the first rows exactly, with their columns" {
  known_npy k.npy
  gen_int_npy tok.npy 5 '<i4' 100
  sae-npy import k.npy --token tok.npy -o k.sae --batch-rows 2
  run sae-info --head 4 k.sae
  assert_success
  assert_output "$(printf '#row\ttoken\tx[0..1]\n0\t0\t3\t4\n1\t100\t0\t0\n2\t200\tnan\t1\n3\t300\t-3\t-4')"
  run sae-info --head 0 k.sae
  assert_output ""
}

@test "--verify: one line when sound, exit 1 with the defect otherwise" {
  gen_stream a.sae 3000 16 1
  run sae-info --verify a.sae
  assert_success
  assert_output "a.sae: ok (3000 rows, 3 batches, 1 stream)"
  known_npy k.npy
  sae-npy import k.npy -o k.sae --batch-rows 2
  run sae-info --verify k.sae
  assert_failure 1
  assert_output "sae-info: k.sae: batch 2: row 0 has a NaN or Inf value (1 such row in this batch)"
  head -c $(( $(file_size a.sae) - 1 )) a.sae > cut.sae
  run sae-info --verify cut.sae
  assert_failure 1
  assert_output "sae-info: cut.sae: truncated stream (ends inside the frame after batch 3)"
  # --verify --json: the full report, marked verified.
  run sae-info --verify --json a.sae
  assert_success
  assert_line '  "verified": true'
}

@test "--verify finds a column present in some batches only" {
  gen_npy a.npy 100 4 1
  gen_int_npy tok.npy 100 '<i4'
  sae-npy import a.npy --token tok.npy -o with.sae
  sae-npy import a.npy -o without.sae
  run sae-info --verify with.sae without.sae
  assert_failure 1
  assert_output "sae-info: without.sae: batch 1: has no 'token' column, but the first batch has one"
  run sae-info with.sae without.sae
  assert_success
  assert_line --regexp '^columns +token \(100 of 200 rows\)$'
}

@test "--frames lists every frame with its offset, size, type and rows" {
  gen_stream a.sae 2500 8 1
  run sae-info --frames a.sae
  assert_success
  assert_line --index 0 "$(printf '#frame\toffset\tbytes\tcontent\ttype\trows')"
  assert_line --index 1 --regexp "^0	0	[0-9]+	[0-9]+	header	-$"
  assert_line --index 2 --regexp "^1	[0-9]+	[0-9]+	[0-9]+	batch	1024$"
  assert_line --index 4 --regexp "^3	[0-9]+	[0-9]+	[0-9]+	batch	452$"
  assert_line --index 5 --regexp "^4	[0-9]+	[0-9]+	[0-9]+	footer	2500$"
  # offsets add up to the file size
  [ "$(sae-info --frames a.sae | awk 'NR > 1 { s += $3 } END { print s }')" -eq "$(file_size a.sae)" ]
  run sae-info --frames a.sae a.sae
  assert_failure 1
  assert_line --index 0 "sae-info: --frames lists one file"
}

@test "several files and stdin read as one stream" {
  gen_stream a.sae 300 8 1
  gen_stream b.sae 200 8 2
  run sae-info a.sae b.sae
  assert_line --regexp '^file +a\.sae b\.sae$'
  assert_line --regexp '^rows +500$'
  assert_line --regexp '^streams +2$'
  run bash -c 'cat a.sae - b.sae < a.sae | sae-info -'
  assert_line --regexp '^rows +800$'
  assert_line --regexp '^file +<stdin>$'
}

@test "options that do not go together are refused" {
  gen_stream a.sae 10 4 1
  run sae-info --head 3 --json a.sae
  assert_failure 1
  assert_line --index 0 "sae-info: --head prints text; it does not go with --json"
  run sae-info --verify --header a.sae
  assert_line --index 0 "sae-info: --head, --header, --frames and --verify do not go together"
  run sae-info --threads -1 a.sae
  assert_line --index 0 "sae-info: --threads must be 0 (all cores) or more"
}
