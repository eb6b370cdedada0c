#!/usr/bin/env bats
# The house rules of docs/architecture.md: scripts/check-deps.sh passes on the tree as it is, and
# names the file, the line and the arrow of every forbidden include planted in a scratch copy.
load helper

ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
CHECK="$ROOT/scripts/check-deps.sh"

# A scratch copy of lib/ and the rules, to break on purpose.
copy_tree() {
  mkdir -p tree
  cp -r "$ROOT/lib" "$ROOT/docs" tree/
}

# Inserts `line` as line 2 of `file` (after the first line, which is a comment or an include).
plant() {
  sed -i "2i $2" "tree/lib/$1"
}

@test "the tree follows the rules of docs/architecture.md" {
  run "$CHECK"
  assert_success
  assert_output --regexp '^check-deps: [0-9]+ files, [0-9]+ includes, every arrow allowed$'
}

@test "--arrows lists the arrows in use, each one allowed" {
  run "$CHECK" --arrows
  assert_success
  assert_line --regexp '^sae -> backend \([0-9]+\)$'
  assert_line --regexp '^stream -> base \([0-9]+\)$'
  refute_line --regexp '^(base|stream|backend|tokenizer) -> (sae|model|data|eval)'
  refute_line --regexp '^backend -> '"(stream|tokenizer)"
}

@test "a forbidden arrow is named with its file and line: the stream knows no math" {
  copy_tree
  plant stream/stream.h '#include "sae/sae.h"'
  run "$CHECK" tree
  assert_failure 1
  assert_output 'lib/stream/stream.h:2: forbidden arrow stream -> sae ("sae/sae.h"): stream may include base
check-deps: 1 problem'
}

@test "backends know no architecture and no model" {
  copy_tree
  plant backend/device.cpp '#include "model/model.h"'
  plant backend/backend.h '#include "sae/arch.h"'
  run "$CHECK" tree
  assert_failure 1
  assert_line 'lib/backend/backend.h:2: forbidden arrow backend -> sae ("sae/arch.h"): backend may include base'
  assert_line 'lib/backend/device.cpp:2: forbidden arrow backend -> model ("model/model.h"): backend may include base'
  assert_line 'check-deps: 2 problems'
}

@test "sae and model do not know each other; base knows nobody" {
  copy_tree
  plant model/model.cpp '#include "sae/sae.h"'
  plant base/files.cpp '#include "stream/stream.h"'
  run "$CHECK" tree
  assert_failure 1
  assert_line 'lib/model/model.cpp:2: forbidden arrow model -> sae ("sae/sae.h"): model may include base, stream, backend'
  assert_line 'lib/base/files.cpp:2: forbidden arrow base -> stream ("stream/stream.h"): base may include nothing'
}

@test "nothing in lib/ includes tools/ or reaches outside lib/" {
  copy_tree
  plant sae/sae.cpp '#include "../../tools/sae-train.cpp"'
  plant eval/metrics.cpp '#include "tools/x.h"'
  run "$CHECK" tree
  assert_failure 1
  assert_line 'lib/sae/sae.cpp:2: lib/ never includes files outside lib/ ("../../tools/sae-train.cpp")'
  assert_line 'lib/eval/metrics.cpp:2: lib/ never includes files outside lib/ ("tools/x.h")'
}

@test "an include must name its area, and an existing file" {
  copy_tree
  plant sae/arch_topk.cpp '#include "arch.h"'
  plant sae/arch_relu.cpp '#include "sae/no_such_file.h"'
  plant sae/arch_gated.cpp '#include "nowhere.h"'
  run "$CHECK" tree
  assert_failure 1
  assert_line 'lib/sae/arch_topk.cpp:2: include "arch.h" does not name its area: write "sae/arch.h"'
  assert_line 'lib/sae/arch_relu.cpp:2: "sae/no_such_file.h" is not a file under lib/'
  assert_line 'lib/sae/arch_gated.cpp:2: include "nowhere.h" does not name its area'
}

@test "every file lives in an area that has a row" {
  copy_tree
  echo '// stray' > tree/lib/stray.cpp
  mkdir tree/lib/newarea
  echo '// new' > tree/lib/newarea/x.cpp
  run "$CHECK" tree
  assert_failure 1
  assert_line 'lib/newarea/: area "newarea" has no row in docs/architecture.md (add one naming what it may include)'
  assert_line 'lib/stray.cpp: every file in lib/ belongs to an area folder (lib/AREA/...)'
}

@test "machine-specific system headers stay in the areas that compute" {
  copy_tree
  plant stream/reader.cpp '#include <cblas.h>'
  plant tokenizer/bpe.cpp '#include <cuda_runtime.h>'
  plant sae/sae.cpp '#include <cblas.h>'
  plant model/model.cpp '#include <cblas.h>'
  run "$CHECK" tree
  assert_failure 1
  assert_line 'lib/stream/reader.cpp:2: stream may not include <cblas.h> (only backend may)'
  assert_line 'lib/tokenizer/bpe.cpp:2: tokenizer may not include <cuda_runtime.h> (only backend, sae, model may)'
  assert_line 'lib/model/model.cpp:2: model may not include <cblas.h> (only backend may)'
  assert_line 'lib/sae/sae.cpp:2: sae may not include <cblas.h> (only backend may)'
  assert_line 'check-deps: 4 problems'
}

@test "the rules come from the page: a row changed there changes the check" {
  copy_tree
  plant stream/stream.h '#include "sae/sae.h"'
  sed -i 's/^| `stream` | `base` |$/| `stream` | `base`, `sae` |/' tree/docs/architecture.md
  run "$CHECK" tree
  assert_success
  rm tree/docs/architecture.md
  run "$CHECK" tree
  assert_failure 2
  assert_output "check-deps: tree/docs/architecture.md: no such file"
}
