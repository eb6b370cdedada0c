# Common set-up for the CLI tests: bats-support/bats-assert, the built binaries on PATH, a scratch
# directory per test, and the shared test data location.
load /usr/lib/bats/bats-support/load
load /usr/lib/bats/bats-assert/load

: "${SAE_BIN:?SAE_BIN must point at the built binaries (make test sets it)}"
export PATH="$SAE_BIN:$PATH"
export SAE_DEVICE=cpu

setup() {
  T="$BATS_TEST_TMPDIR"
  cd "$T"
}

# Skip (saying why) when ../shared is not beside the checkout.
need_shared() {
  [ -d "${SAE_SHARED:-/nonexistent}/models" ] || skip "../shared is absent (test data lives there)"
}

# No file or temporary left in a directory except those listed.
assert_no_output_left() {
  local dir=$1
  shift
  run bash -c "ls -A '$dir' | grep -v -x -F $(printf -- "-e %q " "$@" 'DUMMY-NONE')"
  assert_output ""
}
