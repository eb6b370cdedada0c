#!/usr/bin/env bats
# sae-shuffle: out-of-core shuffling (docs/shuffle.md). The permutation, uniformity (chi-square),
# column and split properties are checked row by row in tests/unit/test_shuffle.cpp; these tests
# run the real binary for what only a process shows: the peak resident memory, signals, a full
# temporary directory, leftovers, options and messages.
load helper

# Inputs from sae-collect --toy (doc and pos columns from --context). The big one is ~190 MB on
# disk, ~200 MB of rows: several times the --memory bounds used below.
setup_file() {
  export SMALL="$BATS_FILE_TMPDIR/small.sae" BIG="$BATS_FILE_TMPDIR/big.sae"
  sae-collect --toy --d 16 --features 64 --rows 20000 --batch-rows 1000 --context 100 --seed 3 -o "$SMALL"
  sae-collect --toy --d 256 --features 512 --rows 200000 --batch-rows 1024 --context 128 --level 1 -o "$BIG"
}

teardown() {
  if [ -n "${MOUNTED:-}" ]; then umount "$MOUNTED" 2>/dev/null || true; fi
}

# One line per row of stream $1 (which has $2 rows of width $3 f32, with doc and pos columns):
# its values in hex, its doc and its pos, sorted. Two streams give the same lines exactly when they
# hold the same rows with the same columns attached, in any order.
sorted_rows() {
  local s=$1 n=$2 d=$3 w=$(mktemp -d)
  sae-npy export "$s" -o "$w/x.npy"
  sae-npy export --column doc "$s" -o "$w/doc.npy"
  sae-npy export --column pos "$s" -o "$w/pos.npy"
  paste -d" " <(tail -c $((n * d * 4)) "$w/x.npy" | od -An -v -tx1 -w$((d * 4))) \
              <(tail -c $((n * 8)) "$w/doc.npy" | od -An -v -td8 -w8) \
              <(tail -c $((n * 4)) "$w/pos.npy" | od -An -v -td4 -w4) | sort
  rm -rf "$w"
}

# Mounts a tmpfs of the given size on $T/$1 (root only; the caller skips when it fails).
mount_tmpfs() {
  mkdir -p "$T/$1"
  mount -t tmpfs -o "size=$2" tmpfs "$T/$1" 2>/dev/null || return 1
  MOUNTED="$T/$1"
}

@test "sae-shuffle --help lists every option with its default" {
  run sae-shuffle --help
  assert_success
  for opt in "-o [ --output ] arg (=-)" "--seed arg (=0)" "--memory arg (=1G)" "--tmp arg (=" \
             "--batch-rows arg (=1024)" "--split arg" "--split-output arg" "--level arg (=3)" \
             "--threads arg (=0)" "-v [ --verbose ]"; do
    assert_line --partial -- "$opt"
  done
}

@test "the same seed and options give the same bytes (in memory and on disk), from a file or stdin, on any thread count" {
  sae-shuffle --seed 5 "$SMALL" -o mem.sae
  sae-shuffle --seed 5 "$SMALL" -o mem2.sae --threads 1
  cmp mem.sae mem2.sae
  # 20000 rows of 76 bytes (16 f32 + doc + pos) = 1.5 MB of rows; 10M leaves about 0.9 MiB for them
  # after the reserve for reading and writing batches.
  run sae-shuffle --seed 5 --memory 10M -v --tmp "$T" "$SMALL" -o disk.sae
  assert_success
  assert_line --regexp "^sae-shuffle: memory 10.0 MiB: .* [0-9]+ buckets$"
  assert_line --regexp "^sae-shuffle: shuffled 20000 rows through [0-9]+ buckets"
  sae-shuffle --seed 5 --memory 10M --tmp "$T" --threads 1 < "$SMALL" > disk2.sae
  sae-shuffle --seed 5 --memory 10M --tmp "$T" --threads 2 "$SMALL" > disk3.sae
  cmp disk.sae disk2.sae
  cmp disk.sae disk3.sae
  sae-shuffle --seed 6 "$SMALL" -o other.sae
  run cmp -s mem.sae other.sae
  assert_failure
  run sae-info disk.sae
  assert_success
  assert_line --regexp "^rows +20000$"
  # The rows are the input's, each once, with their doc and pos: a permutation.
  sorted_rows "$SMALL" 20000 16 > want.txt
  sorted_rows disk.sae 20000 16 > got.txt
  [ "$(wc -l < want.txt)" -eq 20000 ] && [ "$(sort -u want.txt | wc -l)" -eq 20000 ]
  cmp want.txt got.txt
  sorted_rows mem.sae 20000 16 | cmp want.txt -
  rm want.txt got.txt
  # Nothing left beside the outputs: no temporary output, no bucket file.
  assert_no_output_left "$T" mem.sae mem2.sae disk.sae disk2.sae disk3.sae other.sae
}

@test "input from a pipe (size unknown) uses the most buckets memory allows, and every row comes out" {
  run bash -c "cat '$SMALL' | sae-shuffle --memory 10M -v --tmp '$T' > piped.sae"
  assert_success
  assert_line --regexp "input of unknown size in records: [0-9]+ buckets$"
  run sae-info piped.sae
  assert_success
  assert_line --regexp "^rows +20000$"
}

@test "--split sends each row to exactly one of the two outputs" {
  run sae-shuffle --seed 1 --split heldout=0.05 --split-output held.sae -v "$SMALL" -o rest.sae
  assert_success
  # Binomial(20000, 0.05): 1000 expected, sd 31; the seed is fixed, so the count is too.
  [[ "${lines[-1]}" =~ ^sae-shuffle:\ shuffled\ 20000\ rows\ \(([0-9]+)\ to\ the\ main\ output,\ ([0-9]+)\ to\ \'heldout\'\) ]]
  main=${BASH_REMATCH[1]} held=${BASH_REMATCH[2]}
  [ $((main + held)) -eq 20000 ]
  [ "$held" -gt 845 ] && [ "$held" -lt 1155 ]
  run sae-info held.sae
  assert_line --regexp "^rows +$held$"
  run sae-info rest.sae
  assert_line --regexp "^rows +$main$"
  # Together the two outputs hold every input row exactly once.
  cmp <(sorted_rows "$SMALL" 20000 16) <({ sorted_rows held.sae "$held" 16; sorted_rows rest.sae "$main" 16; } | sort)
}

@test "peak resident memory stays within --memory 32M on a 200 MB input" {
  command -v /usr/bin/time >/dev/null || skip "GNU time (package 'time') is not installed"
  # The allowance for the binary, its libraries and the runtime is measured, not guessed: the
  # same command on a 100-row input. Everything above it is what the shuffle allocates.
  sae-collect --toy --d 256 --features 512 --rows 100 --context 128 -o tiny.sae
  /usr/bin/time -f %M -o base.rss sae-shuffle --memory 32M --level 1 --tmp "$T" tiny.sae -o tiny.out
  run /usr/bin/time -f %M -o big.rss sae-shuffle --memory 32M --level 1 --tmp "$T" -v "$BIG" -o big.out
  assert_success
  assert_line --regexp "^sae-shuffle: shuffled 200000 rows through [0-9]+ buckets"
  base=$(tail -1 base.rss) peak=$(tail -1 big.rss)
  echo "baseline $base KiB, peak $peak KiB, bound $((base + 32768)) KiB"
  [ "$peak" -lt $((base + 32768)) ]
  # With --split two writers take turns; the first is dropped before the second starts.
  run /usr/bin/time -f %M -o split.rss sae-shuffle --memory 32M --level 1 --tmp "$T" -v \
    --split heldout=0.2 --split-output held.out "$BIG" -o big.out
  assert_success
  assert_line --regexp "^sae-shuffle: shuffled 200000 rows \\([0-9]+ to the main output, [0-9]+ to 'heldout'\\) through"
  peak=$(tail -1 split.rss)
  echo "with --split: peak $peak KiB"
  [ "$peak" -lt $((base + 32768)) ]
}

@test "SIGINT: no output, no temporary output and no bucket files remain" {
  mkdir buckets
  if mount_tmpfs buckets 400M; then tmpfs=1; else tmpfs=0; fi
  # Background jobs of a non-interactive shell start with SIGINT ignored, and the tools keep a
  # signal ignored on entry ignored (as nohup expects): restore the default for this one.
  env --default-signal=INT sae-shuffle --memory 32M --tmp "$T/buckets" "$BIG" -o out.sae 2> err.txt &
  pid=$!
  # Wait until bucket files are open (anonymous files in the temp directory show in /proc as
  # "(deleted)" links), so the signal lands in the middle of the work.
  for _ in $(seq 1 300); do
    if ls -l /proc/$pid/fd 2>/dev/null | grep -q "$T/buckets/.*(deleted)"; then break; fi
    sleep 0.05
  done
  ls -l /proc/$pid/fd | grep -q "$T/buckets/.*(deleted)"
  kill -INT $pid
  rc=0
  wait $pid || rc=$?
  [ $rc -eq 130 ]
  run cat err.txt
  assert_output "sae-shuffle: interrupted"
  assert_no_output_left "$T" buckets err.txt
  assert_no_output_left "$T/buckets"
  if [ $tmpfs = 1 ]; then
    # The space the buckets held is free again.
    [ "$(df --output=used -B1 "$T/buckets" | tail -1 | tr -d ' ')" -lt 1048576 ]
  fi
}

@test "a full temporary directory: an early warning, then an error naming it; nothing left" {
  mount_tmpfs tiny 1M || skip "cannot mount a tmpfs here (needs root); the full-disk error path is untested"
  run sae-shuffle --memory 10M --tmp "$T/tiny" "$SMALL" -o out.sae
  assert_failure 1
  # An early warning (the estimate already shows the space is short), then the error.
  assert_line --index 0 --regexp "^sae-shuffle: warning: $T/tiny has 1.0 MiB free, but this input needs about [0-9.]+ MiB of temporary files there$"
  assert_line --index 1 --regexp "^sae-shuffle: $T/tiny: temporary directory is full \(No space left on device\) after writing [0-9.]+ MiB of bucket files; this input needs about [0-9.]+ MiB there \(point --tmp at a directory with more free space\)$"
  assert_no_output_left "$T" tiny
  assert_no_output_left "$T/tiny"
}

@test "bad input: a truncated stream fails naming it, and leaves no output or bucket files" {
  head -c 1000000 "$SMALL" > cut.sae
  run sae-shuffle --memory 10M --tmp "$T" cut.sae -o out.sae
  assert_failure 1
  assert_output --regexp "^sae-shuffle: cut.sae: truncated stream"
  assert_no_output_left "$T" cut.sae
}

@test "a latents stream is refused" {
  sae-collect --toy --d 8 --features 32 --rows 100 --latents-out lat.sae -o acts.sae
  run sae-shuffle lat.sae -o out.sae
  assert_failure 1
  assert_output "sae-shuffle: lat.sae: holds latents; sae-shuffle shuffles activation streams"
  assert_no_output_left "$T" lat.sae acts.sae
}

@test "bad options: one clear message each, exit 1, no output" {
  run sae-shuffle --memory 12Q "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --memory: bad size '12Q' (expected a number of bytes with an optional K, M, G or T suffix, e.g. 64M)"
  run sae-shuffle --memory 4M "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 --regexp "^sae-shuffle: --memory 4.0 MiB is too small for rows of d=16 f32 read in batches of 1000 rows and written in batches of 1024 \(--batch-rows\): needs at least [0-9.]+ MiB$"
  run sae-shuffle --split heldout=0.05 "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --split needs --split-output FILE for the 'heldout' rows"
  run sae-shuffle --split heldout=1.5 --split-output h.sae "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --split: the fraction in 'heldout=1.5' must be a number between 0 and 1 (exclusive)"
  run sae-shuffle --split 0.05 --split-output h.sae "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --split: expected NAME=FRACTION with a name of letters, digits, '_', '-' or '.' (e.g. heldout=0.05), got '0.05'"
  run sae-shuffle --split-output h.sae "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --split-output is only used with --split NAME=FRACTION"
  run bash -c "sae-shuffle --split a=0.1 --split-output - '$SMALL' > /dev/null"
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --split-output and the main output cannot both be stdout"
  run sae-shuffle --batch-rows 0 "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --batch-rows must be at least 1"
  run sae-shuffle --tmp "$T/nope" "$SMALL" -o out.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --tmp $T/nope: no such directory"
  run sae-shuffle "$T/missing.sae" -o out.sae
  assert_failure 1
  assert_output "sae-shuffle: $T/missing.sae: No such file or directory"
  assert_no_output_left "$T"
}

@test "a reader that goes away (broken pipe) ends the shuffle quietly, exit 0, no bucket files left" {
  run bash -c "sae-shuffle --memory 10M --tmp '$T' '$SMALL' | head -c 100 > /dev/null; echo rc=\${PIPESTATUS[0]}"
  assert_success
  assert_output "rc=0"
  assert_no_output_left "$T"
}
