#!/usr/bin/env bash
# Runs every test: the C++ unit tests through ctest, then the CLI tests through Bats.
# Ends with one line "N passed, N failed" over both.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build" && pwd)
export SAE_BIN="$build/bin"
# No single CLI test may hang the suite (bats fails a test that runs past this many seconds).
export BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-600}
export SAE_SHARED="${SAE_SHARED:-$root/../shared}"
jobs=$(nproc)
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

echo "== unit tests (ctest)"
(cd "$build" && ctest --output-on-failure -j "$jobs" 2>&1) | tee "$log/ctest.txt"
u_total=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p' "$log/ctest.txt" | tail -1)
u_failed=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p' "$log/ctest.txt" | tail -1)
u_total=${u_total:-0}
u_failed=${u_failed:-1}
u_passed=$((u_total - u_failed))

echo "== CLI tests (bats)"
par=()
command -v parallel >/dev/null && par=(--jobs "$jobs")
# install.bats runs `make install`, which relinks every tool when HEAD has moved since the build
# (the version stamp changes): it runs alone, after the others, so that no test executes a tool
# while it is being relinked.
files=()
for f in "$root"/tests/cli/*.bats; do [ "$(basename "$f")" = install.bats ] || files+=("$f"); done
{
  bats "${par[@]}" --tap -T "${files[@]}"
  bats --tap -T "$root/tests/cli/install.bats"
} 2>&1 | tee "$log/bats.txt"
b_passed=$(grep -c '^ok ' "$log/bats.txt")
b_failed=$(grep -c '^not ok ' "$log/bats.txt")
b_planned=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$log/bats.txt" | awk '{ n += $1 } END { print n + 0 }')
if [ -n "$b_planned" ] && [ $((b_passed + b_failed)) -lt "$b_planned" ]; then
  b_failed=$((b_planned - b_passed))
fi

passed=$((u_passed + b_passed))
failed=$((u_failed + b_failed))
echo
echo "unit: $u_passed passed, $u_failed failed; cli: $b_passed passed, $b_failed failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
