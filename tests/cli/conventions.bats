#!/usr/bin/env bats
# Tool conventions shared by every binary.
load helper

@test "sae-info --version prints the tool name and version" {
  run sae-info --version
  assert_success
  assert_output --regexp '^sae-info [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "unknown option: one-line message naming it, exit 1" {
  run sae-info --bogus
  assert_failure 1
  assert_line --index 0 "sae-info: unrecognised option '--bogus'"
}
