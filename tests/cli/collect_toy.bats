#!/usr/bin/env bats
# sae-collect --toy: synthetic activations with known features (docs/toy.md).
load helper

small=(--toy --d 8 --features 32 --active 3 --rows 1000)

@test "sae-collect --help: toy options in their own group, each with its default" {
  run sae-collect --help
  assert_success
  assert_line --partial "Source (choose one):"
  assert_line --partial "Output:"
  assert_line --partial "Toy source (--toy)"
  for opt in "--d arg (=64)" "--features arg (=256)" "--active arg (=4)" "--freq arg (=uniform)" \
             "--freq-exponent arg (=1)" "--magnitude arg (=uniform)" "--mag-lo arg (=0.5)" \
             "--mag-hi arg (=1.5)" "--mag-mean arg (=1)" "--hierarchy arg" "--noise arg (=0.01)" \
             "--rows arg (=100000)" "--seed arg (=0)" "--context arg (=0)" "--truth arg" \
             "--latents-out arg" "--dtype arg (=f32)" "--batch-rows arg (=4096)" "--threads arg (=0)"; do
    assert_line --partial -- "$opt"
  done
}

@test "writes a stream of the requested shape to -o, and the same bytes to stdout" {
  run sae-collect "${small[@]}" --batch-rows 300 -o a.sae
  assert_success
  assert_output ""
  run sae-info a.sae
  assert_success
  assert_line --regexp "^rows +1000$"
  assert_line --regexp "^d +8$"
  sae-collect "${small[@]}" --batch-rows 300 > b.sae
  cmp a.sae b.sae
  assert_no_output_left . a.sae b.sae
}

@test "same options and seed: same bytes, whatever the thread count; another seed: other bytes" {
  sae-collect "${small[@]}" --hierarchy 2:3 --freq power --seed 9 --threads 1 -o a.sae
  sae-collect "${small[@]}" --hierarchy 2:3 --freq power --seed 9 --threads 2 -o b.sae
  sae-collect "${small[@]}" --hierarchy 2:3 --freq power --seed 10 -o c.sae
  cmp a.sae b.sae
  run cmp -s a.sae c.sae
  assert_failure
}

@test "f16 and bf16 outputs read back with the right shape" {
  sae-collect "${small[@]}" --dtype bf16 --level 1 -o h.sae
  run sae-info h.sae
  assert_line --regexp "^rows +1000$"
  assert_line --regexp "^d +8$"
  sae-collect "${small[@]}" --dtype f16 -o f.sae
  run sae-info f.sae
  assert_line --regexp "^rows +1000$"
  assert_line --regexp "^d +8$"
}

@test "--truth writes the ground-truth SAE directory, --latents-out the true codes" {
  run sae-collect "${small[@]}" -o a.sae --truth truth --latents-out codes.sae
  assert_success
  [ -f truth/cfg.json ]
  [ -f truth/sae_weights.safetensors ]
  [ -f truth/sparsity.safetensors ]
  run grep -c '"toy_truth": true' truth/cfg.json
  assert_output 1
  run grep -E '"d_sae": 32' truth/cfg.json
  assert_success
  run sae-info codes.sae
  assert_success
  assert_line --regexp "^rows +1000$"
  assert_line --regexp "^d +32$"
  assert_no_output_left . a.sae truth codes.sae
}

@test "bad options: one-line message naming the option, exit 1, nothing written" {
  check() {
    local want=$1
    shift
    run sae-collect "$@" -o out.sae
    assert_failure 1
    assert_line --index 0 "sae-collect: $want"
    [ ! -e out.sae ]
  }
  check "--d must be at least 1, got -5" --toy --d -5
  check "--d must be at least 1, got -5" --toy --d=-5
  check "--features must be at least 1, got 0" --toy --features 0
  check "--active (300) must be at most --features (256)" --toy --active 300
  check "--active (30) must be at most 24 with this hierarchy (every free feature and parent, one child per parent)" \
    --toy --features 32 --hierarchy 4:3 --active 30
  check "--dtype: unknown dtype 'f8' (expected f32, f16 or bf16)" --toy --dtype f8
  check "--hierarchy: expected PARENTS:CHILDREN with positive integers (e.g. 8:4), got '4x2'" --toy --hierarchy 4x2
  check "--hierarchy 100:4 needs 500 features, more than --features 256" --toy --hierarchy 100:4
  check "--freq: unknown frequency law 'zipf' (expected uniform or power)" --toy --freq zipf
  check "--magnitude: unknown magnitude law 'gamma' (expected uniform, exponential or constant)" --toy --magnitude gamma
  check "--noise must be non-negative, got -1" --toy --noise -1
  check "--rows must be at least 1, got 0" --toy --rows 0
  check "--batch-rows must be at least 1, got 0" --toy --batch-rows 0
  check "the argument ('abc') for option '--d' is invalid" --toy --d abc
  check "--latents-out and -o name the same file: out.sae" --toy --latents-out ./out.sae
  check "no source given: use --toy (synthetic activations) or --model DIR (a model over text)"
  check "--features is an option of the toy source: add --toy" --features 10
  assert_no_output_left .
}

@test "-o or --truth into a missing directory: exit 1, nothing left" {
  run sae-collect "${small[@]}" -o missing/a.sae
  assert_failure 1
  assert_output "sae-collect: missing/a.sae: output directory missing does not exist"
  run sae-collect "${small[@]}" -o a.sae --truth missing/truth
  assert_failure 1
  assert_output "sae-collect: missing/truth: cannot write the truth: directory missing does not exist"
  assert_no_output_left .
}

@test "--latents-out - needs the activations in a file" {
  run bash -c "sae-collect ${small[*]} --latents-out - > a.sae"
  assert_failure 1
  assert_line --index 0 "sae-collect: --latents-out - needs -o FILE: the activations already go to stdout"
}

@test "the size other tools' tests use is generated in well under a second" {
  # 20000 x 64 rows; the bound is loose because CI machines are shared (typically 0.1 s).
  start=$(date +%s%N)
  sae-collect --toy --d 64 --features 256 --rows 20000 -o a.sae
  end=$(date +%s%N)
  [ $(( (end - start) / 1000000 )) -lt 3000 ]
}

@test "terminated (SIGTERM) mid-run: nothing left under the final names, no temporaries" {
  # Far more rows than can be generated before the signal arrives. (SIGTERM rather than SIGINT: a
  # shell starts background jobs with SIGINT ignored, and the tool rightly leaves it so.)
  sae-collect --toy --d 256 --rows 100000000 --threads 1 -o big.sae --truth truth --latents-out codes.sae 2>err &
  pid=$!
  sleep 0.5
  kill -TERM "$pid"
  status=0
  wait "$pid" || status=$?
  assert_equal "$status" 143
  assert_equal "$(cat err)" "sae-collect: interrupted"
  rm err
  assert_no_output_left .
}
