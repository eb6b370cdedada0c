#!/usr/bin/env bats
# Hostile input and a hostile environment (issue 10): sizes claimed by a file are checked against
# what the file holds before anything is allocated, directory outputs never replace what is not a
# directory, no input can hold a tool past a signal, temporary files honour $TMPDIR, logs are
# whole lines, and text with no documents is one error everywhere.
load helper
load stream_helper

# Run a command under a 3 GB address-space limit: far above what the tools need here, far below
# the 8 GB and more that the crafted headers below claim. One BLAS thread and two malloc arenas
# keep the need the same on any number of cores; `timeout` turns a hang into a failure.
limited() {
  run timeout 60 bash -c "ulimit -v 3000000; OPENBLAS_NUM_THREADS=1 MALLOC_ARENA_MAX=2 $*"
}

@test "a header claiming d = 2^31 over an 8-byte payload: refused before any allocation, exit 1" {
  claim_stream wide.sae 2147483648 1
  for cmd in "sae-info" "sae-info --verify" "sae-info --json" "sae-train -o out" "sae-eval --sae none" \
             "sae-shuffle --memory 64M -o s.sae" "sae-npy export -o x.npy"; do
    limited "$cmd wide.sae"
    assert_failure 1
    tool=${cmd%% *}
    if [ "$tool" = sae-eval ]; then
      assert_output "sae-eval: none: not a directory (an SAE is a directory with cfg.json)"
      continue
    fi
    assert_output "$tool: wide.sae: batch 1: payload 'x' has 8 bytes, expected 8589934592"
  done
  assert_no_output_left . wide.sae
}

@test "a batch claiming rows = 2^31 over an 8-byte payload: refused before any allocation, exit 1" {
  claim_stream rows.sae 4 2147483648
  for cmd in "sae-info" "sae-info --verify" "sae-train -o out" "sae-shuffle --memory 64M -o s.sae" \
             "sae-npy export -o x.npy"; do
    limited "$cmd rows.sae"
    assert_failure 1
    assert_output "${cmd%% *}: rows.sae: batch 1: 'rows' is 2147483648, more than the frame could hold"
  done
  assert_no_output_left . rows.sae
}

@test "a valid latents stream of width 2^31 with one entry: statistics in memory that follows the data" {
  wide_latents lat.sae 2147483648
  limited "sae-info --json lat.sae"
  assert_success
  run jq -c '[.header.d, .rows, .stats.dead_latents, .stats.l0_mean, .stats.dim_mean_min, .stats.dim_mean_max,
              .stats.dim_std_min, .stats.dim_std_max]' <<<"$output"
  assert_output '[2147483648,1,2147483647,1,0,1,0,0]'
  limited "sae-info --verify lat.sae"
  assert_success
  assert_output "lat.sae: ok (1 row, 1 batch, 1 stream)"
}

@test "a .npy header claiming (2^40, 2^20) over 128 bytes: truncated, from a file and from a pipe" {
  { npy_header '<f4' '(1099511627776, 1048576)'; head -c 128 /dev/zero; } >huge.npy
  limited "sae-npy import huge.npy -o x.sae"
  assert_failure 1
  assert_output "sae-npy: huge.npy: truncated: shape (1099511627776, 1048576) of <f4 needs 4611686018427387904 bytes of data, the file holds 128"
  # From a pipe the size is unknown: the batch grows as data arrives, so the limit is never hit.
  limited "cat huge.npy | sae-npy import - -o x.sae"
  assert_failure 1
  assert_output "sae-npy: <stdin>: truncated: shape (1099511627776, 1048576) of <f4 needs 4611686018427387904 bytes of data, the file holds 128"
  # Row widths a stream cannot carry are refused from the header alone (read from a pipe here:
  # from a file, the missing data is found first).
  { npy_header '<f4' '(1, 2147483649)'; } >toowide.npy
  limited "cat toowide.npy | sae-npy import - -o x.sae"
  assert_failure 1
  assert_output "sae-npy: <stdin>: rows of 2147483649 values are wider than a stream allows (2^31)"
  { npy_header '<f4' '(1, 536870912)'; } >onerow.npy
  limited "cat onerow.npy | sae-npy import - -o x.sae"
  assert_failure 1
  assert_output "sae-npy: <stdin>: one row of 536870912 values (2147483664 bytes) does not fit in a stream batch (at most 1073741824 bytes)"
  assert_no_output_left . huge.npy toowide.npy onerow.npy
}

# Each directory output against a FIFO, a regular file, a symlink to /dev/null and (where this
# user may make one) a character device: refused with exit 1, and the node is still there.
@test "directory outputs never replace a device, FIFO, file or link to a device" {
  gen_stream a.sae 256 8 1
  sae-train a.sae --latents 16 --k 2 -o sae
  mkfifo fifo
  touch file
  ln -s /dev/null devlink
  nodes=(fifo file devlink)
  if mknod chardev c 1 3 2>/dev/null; then nodes+=(chardev); fi
  for x in "${nodes[@]}"; do
    before=$(stat -c '%F %t:%T' "$x")
    run sae-convert sae -o "$x"
    assert_failure 1
    assert_output "sae-convert: $x: cannot write the output: exists and is not a directory"
    run sae-eval --sae sae a.sae --plots "$x"
    assert_failure 1
    assert_output "sae-eval: $x: cannot write the plots: exists and is not a directory"
    run sae-train a.sae --latents 16 --k 2 -o "$x"
    assert_failure 1
    assert_output "sae-train: $x: cannot write the output: exists and is not a directory"
    run sae-train a.sae --latents 16 --k 2 -o out --checkpoint "$x"
    assert_failure 1
    assert_output "sae-train: $x: cannot write the checkpoint: exists and is not a directory"
    run sae-collect --toy --d 8 --rows 10 -o t.sae --truth "$x"
    assert_failure 1
    assert_output "sae-collect: $x: cannot write the truth: exists and is not a directory"
    [ "$(stat -c '%F %t:%T' "$x")" = "$before" ]
  done
  [ "$(readlink devlink)" = /dev/null ] && [ -c /dev/null ]
  assert_no_output_left . a.sae sae "${nodes[@]}"
  # A symlink to a directory is replaced as a link; the directory it pointed to is left alone.
  mkdir target
  ln -s target link
  run sae-convert sae -o link
  assert_success
  [ -d link ] && [ ! -L link ] && [ -f link/cfg.json ] && [ -z "$(ls -A target)" ]
}

# The input is a FIFO no one writes to: a tool that read it before checking its outputs would
# wait until `timeout` killed it (exit 124).
@test "sae-eval and sae-train check every output before they read their input" {
  gen_stream a.sae 256 8 1
  sae-train a.sae --latents 16 --k 2 -o sae
  mkfifo idle
  touch file
  run timeout 10 sae-eval --sae sae idle -o missing/r.json
  assert_failure 1
  assert_output "sae-eval: missing/r.json: output directory missing does not exist"
  run timeout 10 sae-eval --sae sae idle --density-out missing/d.safetensors
  assert_failure 1
  assert_output "sae-eval: missing/d.safetensors: output directory missing does not exist"
  run timeout 10 sae-eval --sae sae idle --plots file
  assert_failure 1
  assert_output "sae-eval: file: cannot write the plots: exists and is not a directory"
  run timeout 10 sae-train idle -o file
  assert_failure 1
  assert_output "sae-train: file: cannot write the output: exists and is not a directory"
  run timeout 10 sae-train idle -o out --checkpoint missing/ck
  assert_failure 1
  assert_output "sae-train: missing/ck: cannot write the checkpoint: directory missing does not exist"
  assert_no_output_left . a.sae sae idle file
}

@test "--epochs 2 on a FIFO is refused up front, like stdin" {
  mkfifo p
  run timeout 10 sae-train p --epochs 2 -o out
  assert_failure 1
  assert_line --index 0 "sae-train: --epochs 2 needs input files (p is a named pipe, which cannot be read twice)"
  run timeout 10 sae-train --epochs 3 -o out </dev/null
  assert_failure 1
  assert_line --index 0 "sae-train: --epochs 3 needs input files (stdin cannot be read twice)"
}

# Signals are sent from the test and the tool must be gone well within the test's patience; a
# tool held by a blocked open or read would sit there until `timeout` killed it (exit 124).
# `timeout --foreground`: a signal sent to timeout then reaches the tool once. Without it, timeout
# passes the signal on to the tool and again to its whole process group, so the tool may see two
# SIGTERMs, and sae-train takes a second one as "stop at once" (a flaky exit 143).
@test "SIGTERM ends sae-train waiting on a FIFO with no writer" {
  mkfifo p
  timeout --foreground 20 sae-train p -o out 2>err &
  pid=$!
  sleep 0.5
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 143 ]
  run cat err
  assert_output "sae-train: interrupted"
  assert_no_output_left . p err
}

@test "SIGTERM while the input idles mid-stream: the rows that came are trained, then a checkpoint" {
  gen_stream a.sae 256 8 1
  mkfifo p
  # The header and the one batch, then a writer that keeps the pipe open and sends nothing.
  ( head -c "$(frame_offset a.sae 2)" a.sae; sleep 30 ) >p &
  writer=$!
  timeout --foreground 20 sae-train p --latents 16 --k 2 --batch 1000 --init-rows 8 --log log.jsonl -o out 2>err &
  pid=$!
  # The log opens once the first rows are in and training (and graceful interrupts) has begun.
  for _ in $(seq 300); do [ -e log.jsonl ] && break; sleep 0.05; done
  [ -e log.jsonl ]
  sleep 0.3
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  kill "$writer" 2>/dev/null || true
  [ "$rc" -eq 130 ]
  run cat err
  assert_line --index 0 "sae-train: interrupted; finishing the current step and writing a checkpoint (signal again to stop at once)"
  assert_line --index 1 "sae-train: interrupted after 256 tokens; checkpoint written to out.ckpt (continue with --resume out.ckpt)"
  run jq -c '[.tokens, .steps, .rows_in_epoch]' out.ckpt/trainer.json
  assert_output '[256,1,256]'
  [ ! -e out ]
}

@test "temporary files honour \$TMPDIR; failing to make one is exit 1 naming the directory" {
  gen_stream a.sae 64 8 1
  sae-npy export a.sae -o ref.npy
  mkdir tmp
  run bash -c "TMPDIR=tmp sae-npy export a.sae | cmp - ref.npy"
  assert_success
  [ -z "$(ls -A tmp)" ]
  run bash -c "TMPDIR=/nonexistent/dir sae-npy export a.sae | cat >/dev/null; exit \${PIPESTATUS[0]}"
  assert_failure 1
  assert_output "sae-npy: /nonexistent/dir: cannot create temporary files: No such file or directory"
  touch plain
  run bash -c "TMPDIR=plain sae-npy export a.sae | cat >/dev/null; exit \${PIPESTATUS[0]}"
  assert_failure 1
  assert_output "sae-npy: plain: cannot create temporary files: Not a directory"
  run env TMPDIR=/nonexistent/dir sae-shuffle a.sae -o s.sae
  assert_failure 1
  assert_line --index 0 "sae-shuffle: --tmp /nonexistent/dir: no such directory"
}

# ulimit -f stands in for a full disk (with SIGXFSZ ignored, a write past it fails with EFBIG
# after writing what fits): the line that did not fit is cut back off.
@test "--log is whole lines: a write that fails part-way leaves a valid prefix, exit 1" {
  gen_stream a.sae 256 8 1
  run bash -c "trap '' XFSZ; ulimit -f 2; sae-train a.sae --latents 16 --k 2 --batch 4 --log log.jsonl --log-every 1 -o out"
  assert_failure 1
  assert_output "sae-train: log.jsonl: write failed: File too large"
  size=$(stat -c %s log.jsonl)
  [ "$size" -le 2048 ] && [ "$size" -gt 1500 ]
  [ "$(tail -c 1 log.jsonl | od -An -c | tr -d ' ')" = '\n' ]
  run jq -c .step log.jsonl
  assert_success
  assert_output "$(seq 1 "$(wc -l <log.jsonl)")"
  [ ! -e out ]
}

# sae-eval --model follows the same policy through the same function (tests/cli/eval_model.bats).
@test "text with no documents is an input error for every tool that reads documents" {
  need_shared
  model="$SAE_SHARED/models/stories260K"
  : >empty.txt
  printf '\n  \n\n\t\n' >blank.txt  # blank lines separate documents: none here
  printf '\n\n\n' >lines.txt       # with --lines each line is a document, here all empty
  for f in empty.txt blank.txt; do
    run sae-collect --model "$model" --hook blocks.0.hook_resid_post --text "$f" -o c.sae
    assert_failure 1
    assert_output "sae-collect: $f: no text (the input is empty or holds only blank documents)"
  done
  run sae-collect --model "$model" --hook blocks.0.hook_resid_post --lines --text lines.txt -o c.sae
  assert_failure 1
  assert_output "sae-collect: lines.txt: no text (the input is empty or holds only blank documents)"
  run bash -c "sae-collect --model '$model' --hook blocks.0.hook_resid_post -o c.sae </dev/null"
  assert_failure 1
  assert_output "sae-collect: <stdin>: no text (the input is empty or holds only blank documents)"
  run sae-collect --model "$model" --hook blocks.0.hook_resid_post --text empty.txt blank.txt -o c.sae
  assert_failure 1
  assert_output "sae-collect: empty.txt, blank.txt: no text (the input is empty or holds only blank documents)"
  assert_no_output_left . empty.txt blank.txt lines.txt
}
