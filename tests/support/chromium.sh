#!/usr/bin/env bash
# Renders a page in headless Chromium and prints its DOM after the page's scripts ran; used by the
# CLI tests that check pages in a real browser (tests/cli/explain_browser.bats).
#
#   chromium.sh [--console FILE] [--budget MS] [--timeout S] PAGE
#       PAGE: a file path (made absolute; a "#fragment" is kept) or a file:// URL.
#       Prints the serialized DOM on stdout. Every message the page wrote to its console (console.log,
#       console.error, uncaught exceptions) is written to FILE, one per line as Chromium logs it:
#       "MESSAGE", source: URL (LINE). Pages that want a clean console log nothing on success, so
#       a non-empty FILE means trouble.
#   chromium.sh --check
#       Renders a tiny page: exit 0 when Chromium runs here, else exit 3 with the reason on stdout.
#
# Exit status: 0 rendered; 3 Chromium cannot run here (not installed, crashed at start, no output),
# with the reason on stderr (--check: on stdout), so a test can `skip` with it; 2 bad usage.
#
# Built for CI: root (--no-sandbox), no display (headless), 2 cores, a small /dev/shm
# (--disable-dev-shm-usage), a fresh profile in a temporary directory removed at exit, no network
# traffic of its own (no sync, component updates or first-run pages), and a hard timeout.
# $CHROMIUM names the browser binary (default: the first of chromium, chromium-browser,
# google-chrome on PATH). One render takes about 2 s.
set -uo pipefail

console_out=/dev/null
budget=10000
limit=60
check=0
while [ $# -gt 0 ]; do
  case $1 in
    --console) console_out=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --timeout) limit=$2; shift 2 ;;
    --check) check=1; shift ;;
    -*) echo "chromium.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done

cannot_run() {
  if [ "$check" = 1 ]; then echo "$*"; else echo "chromium.sh: $*" >&2; fi
  exit 3
}

browser=${CHROMIUM:-}
if [ -z "$browser" ]; then
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
  done
fi
[ -n "$browser" ] || cannot_run "Chromium is not installed (no chromium, chromium-browser or google-chrome on PATH; scripts/install-deps.sh installs it)"
command -v timeout >/dev/null 2>&1 || cannot_run "timeout(1) is missing"

work=$(mktemp -d "${TMPDIR:-/tmp}/chromium-render.XXXXXX") || cannot_run "cannot make a temporary directory"
trap 'rm -rf "$work"' EXIT

if [ "$check" = 1 ]; then
  printf '<!DOCTYPE html><html><body><p id="x">static</p><script>document.getElementById("x").textContent = "scripted";</script></body></html>\n' >"$work/check.html"
  url="file://$work/check.html"
else
  [ $# -eq 1 ] || { echo "usage: chromium.sh [--console FILE] [--budget MS] [--timeout S] PAGE | --check" >&2; exit 2; }
  page=$1
  case $page in
    file://*) url=$page ;;
    *)
      # PATH or PATH#FRAGMENT (an existing file whose name holds a '#' is taken whole)
      path=$page
      frag=""
      if [ ! -f "$page" ] && [ "${page%#*}" != "$page" ]; then
        path=${page%#*}
        frag="#${page##*#}"
      fi
      [ -f "$path" ] || { echo "chromium.sh: $path: no such file" >&2; exit 2; }
      abs="$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
      abs=${abs//%/%25}
      abs=${abs// /%20}
      abs=${abs//#/%23}
      abs=${abs//\?/%3F}
      url="file://$abs$frag"
      ;;
  esac
fi

# --virtual-time-budget lets the page run (scripts, script loads it starts, timers) until it is
# idle or the budget of virtual milliseconds is spent, then --dump-dom prints the DOM.
# --enable-logging=stderr --v=0 makes Chromium log the page's console messages as INFO:CONSOLE lines.
timeout -k 5 "$limit" "$browser" \
  --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-extensions \
  --no-first-run --no-default-browser-check --disable-sync --disable-background-networking \
  --disable-component-update --disable-default-apps --mute-audio --hide-scrollbars \
  --user-data-dir="$work/profile" --crash-dumps-dir="$work/crashes" \
  --enable-logging=stderr --v=0 \
  --virtual-time-budget="$budget" --dump-dom "$url" >"$work/dom.html" 2>"$work/log.txt" </dev/null
rc=$?

# The page's console messages: '[...:INFO:CONSOLE:LINE] "message", source: URL (LINE)' (older
# versions: 'INFO:CONSOLE(LINE)]').
sed -n 's/^\[[^]]*:CONSOLE[^]]*\] //p' "$work/log.txt" >"$work/console.txt"

if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  cannot_run "Chromium did not finish within ${limit}s ($browser); its last log lines: $(grep -v -e dbus -e CONSOLE "$work/log.txt" | tail -3 | tr '\n' ' ')"
fi
if [ ! -s "$work/dom.html" ]; then
  cannot_run "Chromium ($browser) exited with status $rc and printed no DOM; its log: $(grep -v -e dbus "$work/log.txt" | tail -5 | tr '\n' ' ')"
fi
if [ "$check" = 1 ]; then
  grep -q '>scripted<' "$work/dom.html" || cannot_run "Chromium ($browser) rendered the page but did not run its script"
  exit 0
fi
cat "$work/console.txt" >"$console_out"
cat "$work/dom.html"
exit 0
