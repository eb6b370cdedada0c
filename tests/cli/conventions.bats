#!/usr/bin/env bats
# Tool conventions shared by every binary (DESIGN.md §6), checked on sae-info and sae-npy: --help
# with defaults, --version, usage errors, terminals, broken pipes, signals, atomic outputs.
load helper
load stream_helper

@test "--version prints the tool name and version" {
  for t in sae-info sae-npy; do
    run $t --version
    assert_success
    # The version's first line; the build facts after it are tested in install.bats.
    assert_line --index 0 --regexp "^$t [0-9]+\.[0-9]+\.[0-9]+(-[0-9]+-g[0-9a-f]+)?(-dirty)?$"
  done
}

@test "--help lists every option with its default" {
  run sae-npy --help
  assert_success
  assert_line --index 0 "Usage: sae-npy export [options] [STREAM...]"
  for opt in '-o \[ --output \] arg \(=-\)' '--threads arg \(=0\)' '--dtype arg \(=auto\)' '--column arg \(=x\)' \
             '--nonfinite arg \(=allow\)' '--batch-rows arg \(=1024\)' '--level arg \(=3\)' '--shuffle' '--hook arg' \
             '--model arg' '--meta arg' '--token arg' '--doc arg' '--pos arg' '-h \[ --help \]' '--version' \
             '--man' '--completion'; do
    assert_line --regexp "^  $opt "
  done
  refute_line --partial -- '--command'
  refute_line --partial -- '--input'
  run sae-info --help
  assert_success
  for opt in '--json' '--verify' '--header' '--frames' '--head arg' '--threads arg \(=0\)'; do
    assert_line --regexp "^  $opt "
  done
  refute_line --partial -- '--input'
}

@test "unknown option: message naming it on stderr, exit 1" {
  run sae-info --bogus
  assert_failure 1
  assert_line --index 0 "sae-info: unrecognised option '--bogus'"
  assert_line --index 1 "sae-info: try 'sae-info --help'"
  run sae-npy export --bogus
  assert_failure 1
  assert_line --index 0 "sae-npy: unrecognised option '--bogus'"
  # Nothing on stdout.
  run bash -c 'sae-npy export --bogus 2>/dev/null'
  assert_output ""
}

@test "bad option value: message naming the option, exit 1" {
  run sae-info --threads many
  assert_failure 1
  assert_line --index 0 "sae-info: the argument ('many') for option '--threads' is invalid"
  run sae-npy import --level fast
  assert_failure 1
  assert_line --index 0 "sae-npy: the argument ('fast') for option '--level' is invalid"
  run sae-info --head
  assert_failure 1
  assert_line --index 0 "sae-info: the required argument for option '--head' is missing"
}

@test "binary output to a terminal is refused; so is binary input from one" {
  gen_npy a.npy 10 4 1
  run script -qec "sae-npy import a.npy" /dev/null
  assert_failure 1
  assert_line --partial "sae-npy: refusing to write a binary stream to a terminal (use -o FILE or a pipe)"
  run script -qec "sae-info" /dev/null
  assert_failure 1
  assert_line --partial "sae-info: <stdin>: refusing to read a binary stream from a terminal (give a file or pipe one in)"
  # A file output is fine from a terminal, and the progress line shows there (stderr is a tty).
  run script -qec "sae-npy import a.npy -o a.sae" /dev/null
  assert_success
  assert_output --partial "sae-npy: "
  assert_output --partial "rows"
  # ...and not when stderr is not a terminal.
  run bash -c 'sae-npy import a.npy -o b.sae 2>&1'
  assert_output ""
}

@test "broken pipe ends quietly with exit 0" {
  gen_npy big.npy 20000 64 1
  sae-npy import big.npy -o big.sae
  run bash -c 'sae-npy import big.npy | head -c 10 > /dev/null; echo "rc=${PIPESTATUS[0]}"'
  assert_output "rc=0"
  run bash -c 'sae-npy export big.sae | head -c 10 > /dev/null; echo "rc=${PIPESTATUS[0]}"'
  assert_output "rc=0"
  run bash -c 'sae-info --head 20000 big.sae | head -n 1 > /dev/null; echo "rc=${PIPESTATUS[0]}"'
  assert_output "rc=0"
}

# Starts sae-npy import reading from a FIFO fed a header that promises many rows and then only a
# few, so the tool is mid-write; sends it $1 and checks what it leaves behind.
interrupt_import() {
  local sig=$1 code=$2
  gen_npy a.npy 64 16 1
  mkfifo in.fifo
  # Background jobs of a non-interactive shell start with SIGINT ignored, and the tools keep a
  # signal ignored on entry ignored (as nohup expects): restore the default for this one.
  env --default-signal=INT sae-npy import in.fifo -o out.sae 2> err.txt &
  local pid=$!
  exec 8> in.fifo
  { npy_header '<f4' '(100000, 16)'; npy_data_of a.npy; } >&8
  for _ in $(seq 100); do
    ls -A | grep -q '^\.out\.sae\.tmp\.' && break
    sleep 0.05
  done
  ls -A | grep -q '^\.out\.sae\.tmp\.'  # the temporary exists: the write is under way
  kill -"$sig" "$pid"
  local rc=0
  wait "$pid" || rc=$?
  exec 8>&-
  [ "$rc" -eq "$code" ]
  run cat err.txt
  assert_output "sae-npy: interrupted"
  assert_no_output_left "$T" a.npy in.fifo err.txt
}
npy_data_of() { tail -c +$(( $(od -An -tu2 -j8 -N2 "$1") + 11 )) "$1"; }

@test "SIGTERM during a long write leaves no file under the final name and no temporary" {
  interrupt_import TERM 143
}

@test "SIGINT during a long write leaves no file under the final name and no temporary" {
  interrupt_import INT 130
}

@test "SIGTERM while exporting from a slow stream leaves nothing either" {
  gen_stream a.sae 3000 16 1
  mkfifo in.fifo
  sae-npy export in.fifo -o out.npy 2> err.txt &
  pid=$!
  exec 8> in.fifo
  head -c "$(frame_offset a.sae 3)" a.sae >&8
  for _ in $(seq 100); do
    ls -A | grep -q '^\.out\.npy\.tmp\.' && break
    sleep 0.05
  done
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  exec 8>&-
  [ "$rc" -eq 143 ]
  assert_no_output_left "$T" a.sae in.fifo err.txt
}

@test "a failed conversion leaves an existing output untouched" {
  echo "old contents" > out.sae
  printf 'not an array' > bad.npy
  run sae-npy import bad.npy -o out.sae
  assert_failure 1
  assert_output "sae-npy: bad.npy: not a .npy file (bad magic)"
  [ "$(cat out.sae)" = "old contents" ]
  assert_no_output_left "$T" out.sae bad.npy
}

@test "-o /dev/null or a named pipe is written into, not replaced" {
  gen_npy a.npy 10 4 1
  sae-npy import a.npy -o a.sae
  # A named pipe: the reader gets the bytes, the pipe stays a pipe.
  mkfifo p.fifo
  cat p.fifo > got.npy &
  local reader=$!
  sae-npy export a.sae -o p.fifo
  wait "$reader"  # not a bare wait: bats' own test-timeout watcher is a background job too
  [ -p p.fifo ]
  cmp a.npy got.npy
  # /dev/null (other processes on a shared machine may have broken it: then there is nothing to check)
  [ -c /dev/null ] || skip "/dev/null is not a character device on this machine"
  inode=$(stat -c %i /dev/null)
  sae-npy import a.npy -o /dev/null
  sae-npy export a.sae -o /dev/null
  [ -c /dev/null ]
  [ "$(stat -c %i /dev/null)" = "$inode" ]
  run sae-npy export a.sae -o "$T"
  assert_failure 1
  assert_output "sae-npy: $T: is a directory"
}

@test "a missing output directory is named" {
  gen_npy a.npy 10 4 1
  run sae-npy import a.npy -o missing/dir/a.sae
  assert_failure 1
  assert_output "sae-npy: missing/dir/a.sae: output directory missing/dir does not exist"
}

@test "a report to a full disk (stdout on /dev/full) is an error, not a silent success" {
  gen_npy a.npy 10 4 1
  sae-npy import a.npy -o a.sae
  run bash -c 'sae-info --json a.sae > /dev/full'
  assert_failure 1
  assert_output "sae-info: <stdout>: write failed: No space left on device"
}

@test "--help, --version, --man and --completion: a full disk is an error; a reader that leaves early is not" {
  for opt in --help --version --man --completion; do
    run bash -c "sae-train $opt > /dev/full"
    assert_failure 1
    assert_output "sae-train: <stdout>: write failed: No space left on device"
    # The reader is gone before the tool writes: EPIPE.
    run bash -c "{ sleep 0.2; sae-train $opt; } | true; exit \${PIPESTATUS[0]}"
    assert_success
    assert_output ""
  done
}
