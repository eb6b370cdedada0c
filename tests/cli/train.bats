#!/usr/bin/env bats
# sae-train end to end: the SAE directory format for every architecture, sweeps, logs, resume
# (after --stop-after and after SIGINT) giving identical bytes, bad input with exact messages, and
# sae-selftest.
load helper

# A small toy stream: 16 dimensions, 32 features, ~2 active per row.
toy() {
  sae-collect --toy --d 16 --features 32 --active 2 --rows "${1:-3000}" --seed 5 -o "${2:-toy.sae}"
}

# The tensor names in a safetensors file's JSON header.
tensors() {
  local n
  n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  tail -c +9 "$1" | head -c "$n" | jq -r 'keys[] | select(. != "__metadata__")' | sort | tr '\n' ' '
}

@test "--help lists every option with its default" {
  run sae-train --help
  assert_success
  for opt in arch latents k k-aux aux-coef lambda bandwidth init-threshold freq-scale prefixes threshold-lr \
             dec-init-norm batch tokens epochs lr beta1 beta2 lr-warmup lr-decay l1-warmup clip init-rows \
             no-scale dead-tokens resample-every density-window seed sweep checkpoint checkpoint-every \
             stop-after resume log log-every skip-nonfinite dtype device; do
    assert_output --partial "--$opt"
  done
  assert_output --partial "--arch arg (=topk)"
  assert_output --partial "--batch arg (=4096)"
}

@test "pipeline: sae-collect --toy | sae-train writes a SAELens directory (topk)" {
  run bash -c "sae-collect --toy --d 16 --features 32 --active 2 --rows 3000 --seed 5 | \
               sae-train --arch topk --latents 64 --k 4 --batch 256 -o sae"
  assert_success
  assert_output ""
  [ -f sae/cfg.json ] && [ -f sae/sae_weights.safetensors ] && [ -f sae/sparsity.safetensors ]
  run jq -c '[.architecture, .d_in, .d_sae, .k, .dtype, .apply_b_dec_to_input, .normalize_activations,
              .metadata.model_name, .metadata.hook_name, .metadata.saetools_training.tokens]' sae/cfg.json
  assert_output '["topk",16,64,4,"float32",true,"none","toy","toy",3000]'
  run tensors sae/sae_weights.safetensors
  assert_output "W_dec W_enc b_dec b_enc "
  run tensors sae/sparsity.safetensors
  assert_output "sparsity "
  assert_no_output_left . sae
}

@test "every architecture writes its SAELens tensors" {
  toy 2000
  for arch in relu topk batchtopk jumprelu gated matryoshka; do
    run sae-train --arch "$arch" --latents 48 --k 3 --batch 256 -o "sae-$arch" toy.sae
    assert_success
  done
  run jq -r .architecture sae-relu/cfg.json sae-topk/cfg.json sae-batchtopk/cfg.json sae-jumprelu/cfg.json \
      sae-gated/cfg.json sae-matryoshka/cfg.json
  assert_output "$(printf 'standard\ntopk\njumprelu\njumprelu\ngated\njumprelu')"
  run tensors sae-batchtopk/sae_weights.safetensors
  assert_output "W_dec W_enc b_dec b_enc threshold "
  run tensors sae-matryoshka/sae_weights.safetensors
  assert_output "W_dec W_enc b_dec b_enc threshold "
  run tensors sae-jumprelu/sae_weights.safetensors
  assert_output "W_dec W_enc b_dec b_enc threshold "
  run tensors sae-gated/sae_weights.safetensors
  assert_output "W_dec W_enc b_dec b_gate b_mag r_mag "
  run jq -c .metadata.saetools_training.prefixes sae-matryoshka/cfg.json
  assert_output "[3,12,48]"
}

@test "--sweep trains one SAE per combination from one read of stdin" {
  toy 2000
  run bash -c "sae-train --sweep 'k=2,4;seed=1,2' --latents 32 --batch 256 -o runs < toy.sae"
  assert_success
  run ls runs
  assert_output "$(printf 'k-2_seed-1\nk-2_seed-2\nk-4_seed-1\nk-4_seed-2')"
  run jq -c '[.k, .metadata.saetools_training.seed]' runs/k-4_seed-2/cfg.json
  assert_output "[4,2]"
  printf 'arch=relu lambda=2\narch=jumprelu\n' > runs.txt
  run sae-train --sweep @runs.txt --latents 32 --batch 256 -o runs2 toy.sae
  assert_success
  run jq -r .architecture runs2/arch-relu_lambda-2/cfg.json runs2/arch-jumprelu/cfg.json
  assert_output "$(printf 'standard\njumprelu')"
}

@test "progress on stderr only when it is a terminal" {
  toy 2048
  run sae-train --latents 32 --k 2 --batch 256 -o quiet toy.sae
  assert_success
  assert_output ""
  command -v script >/dev/null || skip "script(1) is not installed"
  run script -qec "sae-train --latents 32 --k 2 --batch 256 --tokens 2048 -o shown toy.sae" /dev/null
  assert_success
  assert_output --regexp "sae-train: [0-9.]+k?/2.0k tokens, [0-9.]+[kMG]? tok/s, loss [0-9.]+, FVU [0-9.]+, L0 [0-9.]+, dead [0-9.]+%, ETA [0-9]+s"
  assert_output --partial "sae-train: wrote shown (topk, 32 latents, 2048 tokens; last batch FVU "
}

@test "--log writes one JSON line per logged step with the metrics" {
  toy 2048
  run sae-train --latents 32 --k 2 --batch 256 --log-every 2 --log log.jsonl -o sae toy.sae
  assert_success
  run wc -l < log.jsonl
  assert_output "4"
  run jq -c 'keys' <(tail -1 log.jsonl)
  assert_output '["aux","dead_frac","elapsed_s","fvu","l0","loss","lr","mse","sparsity","step","tokens","tokens_per_s"]'
  run jq -c '[.step, .tokens]' <(tail -1 log.jsonl)
  assert_output "[8,2048]"
}

@test "--stop-after then --resume gives the same bytes as one run" {
  toy 4000
  opts=(--arch batchtopk --latents 48 --k 3 --batch 256 --tokens 6000 --epochs 2 --lr-decay 0.2 --dead-tokens 500)
  run sae-train "${opts[@]}" -o one toy.sae
  assert_success
  run sae-train "${opts[@]}" --stop-after 4500 -o two toy.sae
  assert_success
  assert_output "sae-train: stopped after 4608 tokens; checkpoint written to two.ckpt (continue with --resume two.ckpt)"
  [ ! -e two ]
  run sae-train --resume two.ckpt toy.sae
  assert_success
  cmp one/sae_weights.safetensors two/sae_weights.safetensors
  cmp one/sparsity.safetensors two/sparsity.safetensors
  cmp one/cfg.json two/cfg.json
}

# SIGTERM rather than SIGINT: a shell starts background jobs with SIGINT ignored.
@test "SIGTERM writes a checkpoint; resuming gives the same bytes as an uninterrupted run" {
  toy 200000 big.sae
  opts=(--arch topk --latents 64 --k 4 --batch 128 --tokens 200000)
  run sae-train "${opts[@]}" -o ref big.sae
  assert_success
  sae-train "${opts[@]}" --checkpoint-every 1024 -o out big.sae 2> err &
  pid=$!
  for _ in $(seq 200); do [ -d out.ckpt ] && break; sleep 0.05; done
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -eq 0 ]; then skip "training finished before the signal arrived"; fi
  [ "$rc" -eq 130 ]
  run cat err
  assert_line --index 0 "sae-train: interrupted; finishing the current step and writing a checkpoint (signal again to stop at once)"
  assert_line --index 1 --regexp "^sae-train: interrupted after [0-9]+ tokens; checkpoint written to out.ckpt \(continue with --resume out.ckpt\)$"
  [ ! -e out ]
  run sae-train --resume out.ckpt
  assert_success
  cmp ref/sae_weights.safetensors out/sae_weights.safetensors
}

@test "resume: a stream whose d differs from the checkpoint's SAE" {
  toy 2000
  sae-collect --toy --d 12 --features 32 --active 2 --rows 2000 --seed 5 -o d12.sae
  run sae-train --latents 32 --k 2 --batch 256 --stop-after 512 -o sae toy.sae
  assert_success
  run sae-train --resume sae.ckpt d12.sae
  assert_failure 1
  assert_output "sae-train: d12.sae: rows have d=12 but the checkpoint was trained on d_in=16"
}

@test "resume refuses options that the checkpoint fixes" {
  toy 2000
  run sae-train --latents 32 --k 2 --batch 256 --stop-after 512 -o sae toy.sae
  assert_success
  run sae-train --resume sae.ckpt --k 3 toy.sae
  assert_failure 1
  assert_line --index 0 "sae-train: --k cannot be given with --resume (the checkpoint fixes the run's options)"
}

@test "NaN activations: an error naming the batch, or skipped and counted with --skip-nonfinite" {
  command -v sae-npy >/dev/null || skip "sae-npy (stream <-> .npy) is not in this build"
  # A (300, 4) float32 .npy array of ones with a NaN in rows 5 and 290.
  {
    printf '\x93NUMPY\x01\x00\x76\x00'
    printf "%-117s\n" "{'descr': '<f4', 'fortran_order': False, 'shape': (300, 4), }"
    for i in $(seq 0 299); do
      if [ "$i" = 5 ] || [ "$i" = 290 ]; then printf '\x00\x00\xc0\x7f\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f'
      else printf '\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f'; fi
    done
  } > nan.npy
  sae-npy import --batch-rows 100 -o nan.sae nan.npy
  run sae-train --latents 8 --k 2 --batch 64 -o sae nan.sae
  assert_failure 1
  assert_output "sae-train: nan.sae: batch 1: row 5 has a NaN or Inf value (1 such row in this batch)"
  [ ! -e sae ]
  run sae-train --latents 8 --k 2 --batch 64 --skip-nonfinite -o sae nan.sae
  assert_success
  assert_output "sae-train: skipped 2 rows with NaN or Inf values"
  run jq .metadata.saetools_training.tokens sae/cfg.json
  assert_output "298"
}

@test "an empty stream is an error" {
  : > empty.sae
  run sae-train -o sae empty.sae
  assert_failure 1
  assert_output "sae-train: empty.sae: empty input (no stream header)"
  run bash -c "sae-train -o sae < /dev/null"
  assert_failure 1
  assert_output "sae-train: <stdin>: empty input (no stream header)"
  assert_no_output_left . empty.sae
}

@test "an unwritable output directory is refused before training" {
  toy 1000
  run sae-train --latents 32 --k 2 -o /nonexistent/dir/sae toy.sae
  assert_failure 1
  assert_output "sae-train: /nonexistent/dir/sae: cannot write the output: directory /nonexistent/dir does not exist"
  run sae-train --latents 32 --k 2 -o /proc/sae toy.sae
  assert_failure 1
  assert_output --regexp "^sae-train: /proc/sae: cannot write the output: cannot create files in /proc \(.+\)$"
}

@test "out-of-range options are usage errors naming the option" {
  toy 1000
  run sae-train --latents 64 --k 100 -o sae toy.sae
  assert_failure 1
  assert_line --index 0 "sae-train: --k 100 exceeds --latents 64"
  run sae-train --arch relu --lambda -1 -o sae toy.sae
  assert_failure 1
  assert_line --index 0 "sae-train: --lambda must be >= 0 (got -1)"
  run sae-train --arch sparse -o sae toy.sae
  assert_failure 1
  assert_line --index 0 "sae-train: --arch: unknown architecture 'sparse' (expected relu, topk, batchtopk, jumprelu, gated, matryoshka)"
  run bash -c "sae-train --epochs 2 -o sae < toy.sae"
  assert_failure 1
  assert_line --index 0 "sae-train: --epochs 2 needs input files (stdin cannot be read twice)"
  run sae-train --lr-decay 0.2 -o sae toy.sae
  assert_failure 1
  assert_line --index 0 "sae-train: --lr-decay needs --tokens (it is a fraction of it)"
  run sae-train toy.sae
  assert_failure 1
  assert_line --index 0 "sae-train: missing -o DIR (the SAE directory to write)"
  assert_no_output_left . toy.sae
}

@test "sae-selftest --device cpu: the CPU ops agree with the plain reference" {
  run sae-selftest --device cpu
  assert_success
  assert_line --index 0 "comparing cpu against reference"
  assert_line --regexp "^[0-9]+ checks: [0-9]+ passed, 0 failed$"
}

@test "sae-selftest --device cuda without a GPU says so and exits 1" {
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then skip "this machine has a GPU"; fi
  run sae-selftest --device cuda
  assert_failure 1
  assert_output --regexp "^sae-selftest: --device cuda: (this build has no CUDA backend \(nvcc was not found at build time\)|no CUDA GPU is available \(.*\))$"
}
