# The OpenAI-compatible test server (tests/support/mock_llm_server.h) for the CLI tests of the tools
# that call an LLM (sae-steer's judge, sae-explain's autointerp): start it on a port of its own,
# read its request counts, stop it in teardown. need_curl TOOL skips where the build has no libcurl.

need_curl() {
  "$1" --version | grep -q 'libcurl.*not built in' && skip "built without libcurl"
  [ -x "$SAE_BIN/../tests/mock_llm_server" ] || fail "$SAE_BIN/../tests/mock_llm_server: not built (make builds it with the unit tests)"
}

# mock ARGS...: starts the test server (a port of its own), sets MOCK_URL; teardown stops it.
mock() {
  rm -f "$T/mock.port"
  "$SAE_BIN/../tests/mock_llm_server" --port 0 --port-file "$T/mock.port" --stats "$T/mock.stats" "$@" \
    >"$T/mock.out" 2>&1 3>&- &
  MOCK_PID=$!
  for _ in $(seq 200); do [ -s "$T/mock.port" ] && break; sleep 0.05; done
  [ -s "$T/mock.port" ] || fail "the test server did not start: $(cat "$T/mock.out")"
  MOCK_URL="http://127.0.0.1:$(cat "$T/mock.port")/v1"
}

stop_mock() {
  if [ -n "${MOCK_PID:-}" ]; then
    kill "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    MOCK_PID=
  fi
}

teardown() { stop_mock; }

mock_stat() { jq -r ".$1" "$T/mock.stats"; }
