#!/usr/bin/env bash
# Seeds the stream fuzzer's corpus with small valid streams made by the tools: every dtype, with
# and without byte shuffle, one and several batches, token/doc/pos columns, provenance, an f16
# source, a concatenation and an empty stream. (Latent streams, which no CLI tool writes yet, come
# from the fuzz target itself: see SAE_FUZZ_SEEDS in tests/fuzz/fuzz_stream.cpp.)
# Usage: scripts/fuzz-seeds.sh BIN_DIR CORPUS_DIR
set -euo pipefail
bin=$1
corpus=$2
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$bin/sae-npy" ]; then
  echo "fuzz-seeds: $bin/sae-npy is not built: only the fuzz target's own seeds will be used" >&2
  exit 0
fi
mkdir -p "$corpus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=../tests/cli/stream_helper.bash
source "$root/tests/cli/stream_helper.bash"
gen_npy "$tmp/a.npy" 12 6 1
gen_npy "$tmp/h.npy" 9 5 2 '<f2'
gen_npy "$tmp/nan.npy" 6 3 3 '<f4' 2
gen_int_npy "$tmp/t.npy" 12 '<i4'
gen_int_npy "$tmp/d.npy" 12 '<i8'
npy_header '<f4' '(0, 4)' > "$tmp/empty.npy"
imp() { "$bin/sae-npy" import "$@"; }
n=0
for dtype in f32 f16 bf16; do
  for shuffle in "" --shuffle; do
    for rows in 5 12; do
      imp "$tmp/a.npy" --dtype $dtype $shuffle --batch-rows $rows -o "$corpus/seed-$n.sae"
      n=$((n + 1))
    done
  done
done
imp "$tmp/a.npy" --token "$tmp/t.npy" --doc "$tmp/d.npy" --pos "$tmp/t.npy" --batch-rows 5 -o "$corpus/seed-cols.sae"
imp "$tmp/a.npy" --hook blocks.1.hook_resid_post --model m --meta 'seed=7' --meta 'list=[1,2.5,"x"]' \
  -o "$corpus/seed-meta.sae"
imp "$tmp/h.npy" --shuffle -o "$corpus/seed-f16.sae"
imp "$tmp/nan.npy" --batch-rows 4 -o "$corpus/seed-nan.sae"
imp "$tmp/empty.npy" -o "$corpus/seed-empty.sae"
cat "$corpus/seed-0.sae" "$corpus/seed-1.sae" > "$corpus/seed-cat.sae"
echo "fuzz-seeds: $(ls "$corpus" | wc -l) files in $corpus" >&2
