#!/usr/bin/env bats
# sae-explain's dashboard in a real browser: headless Chromium (tests/support/chromium.sh) opens
# index.html and latent pages from file://, and the DOM its scripts built must hold the expected
# table rows, contexts and shaded tokens, with nothing on the console. The dashboard is written by
# the real tool for an SAE trained here on stories260K (as in steer.bats); one more test opens the
# synthetic dashboard the unit tests write (tricky tokens such as "<script>", three data chunks).
# Every test skips, saying why, where Chromium cannot run.
load helper

chromium() { "$BATS_TEST_DIRNAME/../support/chromium.sh" "$@"; }

setup_file() {
  cd "$BATS_FILE_TMPDIR"
  # Whether Chromium runs here, checked once: the reason it does not, for the tests' skip.
  "$BATS_TEST_DIRNAME/../support/chromium.sh" --check >chromium-reason.txt 2>&1 && rm -f chromium-reason.txt
  [ -f chromium-reason.txt ] && return 0
  [ -d "${SAE_SHARED:-/nonexistent}/models" ] || return 0
  [ -x "$SAE_BIN/sae-explain" ] || return 0
  "$SAE_BIN/sae-collect" --model "$SAE_SHARED/models/stories260K" --hook blocks.2.hook_resid_post \
    --text "$SAE_SHARED/data/tinystories-sample.txt" -o acts.sae 2>/dev/null
  "$SAE_BIN/sae-train" --latents 128 --k 8 --arch topk -o sae acts.sae 2>/dev/null
  "$SAE_BIN/sae-explain" --model "$SAE_SHARED/models/stories260K" --sae sae \
    --text "$SAE_SHARED/data/tinystories-sample.txt" -o dash 2>explain.log
}

need_chromium() {
  [ ! -f "$BATS_FILE_TMPDIR/chromium-reason.txt" ] ||
    skip "headless Chromium cannot run here: $(head -c 300 "$BATS_FILE_TMPDIR/chromium-reason.txt")"
}

need_dashboard() {
  need_chromium
  need_shared
  [ -x "$SAE_BIN/sae-explain" ] || skip "sae-explain is not built"
  D="$BATS_FILE_TMPDIR/dash"
  [ -f "$D/index.html" ] || { cat "$BATS_FILE_TMPDIR/explain.log" >&2; false; }
}

# render PAGE: the DOM after the page's scripts ran, into dom.html; the console into console.txt.
render() {
  chromium --console console.txt "$1" >dom.html
}

# count PATTERN: how many times PATTERN (grep -E) occurs in dom.html.
count() { grep -oE "$1" dom.html | wc -l; }

# The console said nothing: no error, no exception, no failed data file.
assert_clean_console() {
  run cat console.txt
  assert_output ""
  run grep -c 'class="error"' dom.html
  assert_output 0
}

@test "index.html in Chromium: one table row per latent (up to a page of 500), no console errors" {
  need_dashboard
  render "$D/index.html"
  assert_clean_console
  n=$(wc -l <"$D/latents.jsonl")
  [ "$n" -gt 0 ]
  want=$((n < 500 ? n : 500))
  rows=$(grep -o '<tbody>.*</tbody>' dom.html | grep -o '<tr>' | wc -l)
  [ "$rows" -eq "$want" ]
  grep -q "$n of $n latents" dom.html
  # every row links to its latent's page; the first is the lowest latent
  [ "$(count 'href="latent\.html#[0-9]+"')" -eq "$want" ]
  first=$(head -1 "$D/latents.jsonl" | jq .latent)
  grep -q "<a href=\"latent.html#$first\">$first</a>" dom.html
  # the firing-density histogram, inline
  grep -q '<svg' dom.html
}

@test "latent.html#N in Chromium: every context of latent N, its tokens shaded, the peaks marked, no console errors" {
  need_dashboard
  # A latent that fires, with its numbers from latents.jsonl.
  line=$(jq -c 'select(.fires > 0 and (.top | length) > 0)' "$D/latents.jsonl" | head -1)
  [ -n "$line" ]
  N=$(jq .latent <<<"$line")
  top=$(jq '.top | length' <<<"$line")
  quant=$(jq '[.quantiles[].examples | length] | add // 0' <<<"$line")
  contrast=$(jq '.contrast | length' <<<"$line")
  groups=$(jq '.quantiles | length' <<<"$line")
  shaded=$(jq '[.top[], .quantiles[].examples[] | .acts[] | select(. != 0)] | length' <<<"$line")
  render "$D/latent.html#$N"
  assert_clean_console
  grep -q "<h1>Latent $N</h1>" dom.html
  [ "$(count 'class="ctx top"')" -eq "$top" ]
  [ "$(count 'class="ctx quantile"')" -eq "$quant" ]
  [ "$(count 'class="ctx contrast"')" -eq "$contrast" ]
  [ "$(count 'class="qgroup"')" -eq "$groups" ]
  # one marked peak per context; a shaded token for each nonzero activation of the firing contexts
  [ "$(count 'class="tok peak[^"]*"')" -eq $((top + quant + contrast)) ]
  [ "$(count '<span class="tok[^"]*"[^>]*style="background')" -eq "$shaded" ]
  [ "$shaded" -ge "$top" ]
  # the activation histogram, the logit lens and the neighbour links
  grep -q '<svg[^>]*class="hist"' dom.html
  [ "$(count '<table class="logits">')" -eq 4 ]
  grep -q '<section id="neighbours">' dom.html
}

@test "latent.html: a hash change shows another latent, loading its chunk" {
  need_dashboard
  last=$(tail -1 "$D/latents.jsonl" | jq .latent)
  first=$(head -1 "$D/latents.jsonl" | jq .latent)
  # The viewer itself, plus a script that moves to the last latent once the first is shown.
  sed "s|</body></html>|<script>setTimeout(function () { location.hash = '#$last'; }, 200);</script></body></html>|" \
    "$D/latent.html" >"$D/nav-test.html"
  render "$D/nav-test.html#$first"
  rm -f "$D/nav-test.html"
  assert_clean_console
  grep -q "<h1>Latent $last</h1>" dom.html
  grep -q 'id="next" class="off"' dom.html  # the last latent has no next
}

@test "the unit tests' synthetic dashboard in Chromium: tricky tokens stay text, three chunks, no console errors" {
  need_chromium
  ut="$SAE_BIN/../unit_tests"
  [ -x "$ut" ] || skip "the unit test binary is not built ($ut)"
  SAE_DASHBOARD_OUT="$T/fixture" "$ut" --gtest_filter='DashboardBrowser.WritesTheFixture' >/dev/null
  F="$T/fixture/small"

  render "$F/index.html"
  assert_clean_console
  [ "$(grep -o '<tbody>.*</tbody>' dom.html | grep -o '<tr>' | wc -l)" -eq 130 ]
  grep -q 'fixture explanation 2 &lt;i&gt;not italic&lt;/i&gt;' dom.html
  ! grep -q '<i>not italic' dom.html

  # Latent 3's first top context: "<script>", a newline, three spaces, an empty token, a tab,
  # "</span><b>bold</b>", and the unknown ids -1 and 500.
  render "$F/latent.html#3"
  assert_clean_console
  [ "$(count 'class="ctx top"')" -eq 5 ]
  [ "$(count 'class="ctx quantile"')" -eq 6 ]
  [ "$(count 'class="ctx contrast"')" -eq 2 ]
  grep -q '>&lt;script&gt;</span>' dom.html
  grep -q '>&lt;/span&gt;&lt;b&gt;bold&lt;/b&gt;</span>' dom.html
  ! grep -q '<b>bold' dom.html
  grep -q '>↵</span>' dom.html
  grep -q '>⇥</span>' dom.html
  grep -q '>   </span>' dom.html
  grep -q 'class="tok empty"[^>]*>∅</span>' dom.html
  grep -q 'class="tok peak unk"[^>]*>\[-1\]</span>' dom.html
  grep -q '>\[500\]</span>' dom.html
  grep -q '<title>Latent 3 · fixture &lt;SAE&gt;</title>' dom.html

  # A dead latent, a latent in the last chunk, one that is not in the dashboard.
  render "$F/latent.html#7"
  assert_clean_console
  [ "$(count 'class="ctx top"')" -eq 0 ]
  grep -q 'No activations: the latent never fired.</p>' dom.html
  render "$F/latent.html#129"
  assert_clean_console
  grep -q '<h1>Latent 129</h1>' dom.html
  grep -q 'id="prev" href="#128"' dom.html
  render "$F/latent.html#5000"
  assert_clean_console
  grep -q 'Latent 5000 is not in this dashboard.</p>' dom.html
}
