#!/usr/bin/env bash
# Checks the direction of dependencies between the areas of lib/ (docs/architecture.md).
#
#   scripts/check-deps.sh [--arrows] [ROOT]
#
# The rules are the two tables after the <!-- deps:areas --> and <!-- deps:headers --> markers of
# ROOT/docs/architecture.md, so the page a newcomer reads is the rule the build enforces:
#   | `area` | `other`, `other` |    an area, and the areas its files may include
#   | `<header>` | `area`, `area` |  a system header, and the only areas whose files may include
#                                    it (`<cuda*` stands for every header whose name starts so)
# Every #include line of every file under ROOT/lib is read. It is an error when
#   - a file sits directly in lib/ instead of an area folder, or in an area without a row;
#   - a quoted include does not name its area ("stream.h" instead of "stream/stream.h"), names a
#     file that does not exist under lib/, or reaches outside lib/ (tools/, tests/, "../");
#   - a file includes an area its own area may not include, or a system header kept to others.
# Each error is one line naming the file, the line and the arrow; the exit status is 1 when there
# are any, 2 when the rules cannot be read. --arrows also prints every area-to-area arrow in use
# with its number of includes.
set -euo pipefail
arrows=0
if [ "${1:-}" = "--arrows" ]; then
  arrows=1
  shift
fi
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
doc="$root/docs/architecture.md"
[ -f "$doc" ] || { echo "check-deps: $doc: no such file" >&2; exit 2; }
[ -d "$root/lib" ] || { echo "check-deps: $root/lib: no such directory" >&2; exit 2; }
doc="$(cd "$root/docs" && pwd)/architecture.md"
cd "$root"

files=$(find lib -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) | LC_ALL=C sort)
# "path:line:text" for every include line (grep -Hn).
includes=$(printf '%s\n' "$files" | xargs -r grep -Hn -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]' || true)

# Two inputs: the file list, then the include lines.
awk -v arrows="$arrows" -v doc="$doc" '
  # A rule row: | `name` | `a`, `b` | (an empty second cell allows nothing).
  function table_row(line, kind,    cells, n, name, list) {
    n = split(line, cells, "|")
    if (n < 4 || cells[2] !~ /`/) return
    name = cells[2]; list = cells[3]
    gsub(/[` \t]/, "", name)
    gsub(/[` \t]/, "", list)
    gsub(/—|-/, "", list)
    if (kind == "areas") { known[name] = 1; allowed[name] = "," list "," }
    else { nh++; header_pat[nh] = name; header_areas[nh] = "," list "," }
  }
  # ",a,b," -> "a, b", or "nothing".
  function pretty(list) { gsub(/^,|,$/, "", list); gsub(/,/, ", ", list); return list == "" ? "nothing" : list }
  function err(msg) { print msg; errors++ }
  BEGIN {
    mode = ""
    while ((getline line < doc) > 0) {
      if (line ~ /<!-- deps:areas -->/) { mode = "areas"; rows = 0; continue }
      if (line ~ /<!-- deps:headers -->/) { mode = "headers"; rows = 0; continue }
      if (mode == "") continue
      if (line ~ /^\|/) { table_row(line, mode); rows++ }
      else if (rows > 0) mode = ""
    }
    if (length(known) == 0) { print "check-deps: " doc ": no area table after <!-- deps:areas -->"; fatal = 1; exit 2 }
  }
  # The file list: each file in an area that has a row.
  FNR == NR {
    if ($0 == "") next
    nfiles++
    isfile[$0] = 1
    n = split($0, p, "/")
    if (n < 3) err($0 ": every file in lib/ belongs to an area folder (lib/AREA/...)")
    else if (!(p[2] in known) && !(p[2] in reported)) {
      reported[p[2]] = 1
      err("lib/" p[2] "/: area \"" p[2] "\" has no row in docs/architecture.md (add one naming what it may include)")
    }
    next
  }
  # The include lines: "path:line:text".
  $0 != "" {
    ninc++
    file = $0; sub(/:.*/, "", file)
    rest = substr($0, length(file) + 2)
    lineno = rest; sub(/:.*/, "", lineno)
    text = substr(rest, length(lineno) + 2)
    split(file, p, "/")
    from = p[2]
    where = file ":" lineno ": "
    if (match(text, /<[^>]+>/)) {
      h = substr(text, RSTART, RLENGTH)
      for (i = 1; i <= nh; i++) {
        pat = header_pat[i]
        if (pat ~ /\*$/) hit = index(h, substr(pat, 1, length(pat) - 1)) == 1
        else hit = (h == pat)
        if (hit && index(header_areas[i], "," from ",") == 0)
          err(where from " may not include " h " (only " pretty(header_areas[i]) " may)")
      }
      next
    }
    if (!match(text, /"[^"]+"/)) next
    inc = substr(text, RSTART + 1, RLENGTH - 2)
    if (inc ~ /^\.\.?\// || inc ~ /(^|\/)(tools|tests|bench)\//) {
      err(where "lib/ never includes files outside lib/ (\"" inc "\")")
      next
    }
    if (index(inc, "/") == 0) {
      dir = file; sub(/\/[^\/]*$/, "", dir)
      hint = ((dir "/" inc) in isfile) ? ": write \"" substr(dir, 5) "/" inc "\"" : ""
      err(where "include \"" inc "\" does not name its area" hint)
      next
    }
    if (!(("lib/" inc) in isfile)) { err(where "\"" inc "\" is not a file under lib/"); next }
    split(inc, q, "/")
    to = q[1]
    if (to == from || !(to in known)) next  # (an area without a row is reported above)
    count[from " -> " to]++
    if (index(allowed[from], "," to ",") == 0)
      err(where "forbidden arrow " from " -> " to " (\"" inc "\"): " from " may include " pretty(allowed[from]))
  }
  END {
    if (fatal) exit 2
    if (arrows) {
      n = 0
      for (a in count) order[++n] = a
      for (i = 2; i <= n; i++) {  # insertion sort: awk has no portable sort
        v = order[i]
        for (j = i - 1; j >= 1 && order[j] > v; j--) order[j + 1] = order[j]
        order[j + 1] = v
      }
      for (i = 1; i <= n; i++) printf "%s (%d)\n", order[i], count[order[i]]
    }
    if (errors) { printf "check-deps: %d problem%s\n", errors, errors == 1 ? "" : "s"; exit 1 }
    printf "check-deps: %d files, %d includes, every arrow allowed\n", nfiles, ninc
  }
' <(printf '%s\n' "$files") <(printf '%s\n' "$includes")
