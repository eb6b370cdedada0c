#!/usr/bin/env bash
# Removes what scripts/install.sh installed under DESTDIR/PREFIX: the files its manifest lists,
# then the directories that install created, when they are empty. Nothing else is touched.
#
#   scripts/uninstall.sh PREFIX [DESTDIR]
set -euo pipefail
prefix=${1:?usage: uninstall.sh PREFIX [DESTDIR]}
destdir=${2:-}
case $prefix in
  /*) ;;
  *) echo "uninstall: PREFIX must be an absolute path, not '$prefix'" >&2; exit 1 ;;
esac
prefix=${prefix%/}
root="$destdir$prefix"
manifest="$root/share/saetools/install-manifest.txt"
[ -f "$manifest" ] || { echo "uninstall: $manifest: no such file (nothing of saetools is installed under $root)" >&2; exit 1; }

list=$(cat "$manifest")
n=0
while read -r kind path; do
  [ "$kind" = f ] || continue
  case $path in /* | *..*) echo "uninstall: $manifest: refusing path '$path'" >&2; exit 1 ;; esac
  if [ -e "$root/$path" ] || [ -L "$root/$path" ]; then
    rm -f "$root/$path"
    n=$((n + 1))
  fi
done <<< "$list"
# Deepest directories first, so a parent is empty by the time it is tried.
while read -r kind path; do
  [ "$kind" = d ] || continue
  case $path in /* | *..*) echo "uninstall: $manifest: refusing path '$path'" >&2; exit 1 ;; esac
  rmdir "$root/$path" 2>/dev/null || true
done <<< "$(printf '%s\n' "$list" | awk '$1 == "d" { print length($2), $0 }' | LC_ALL=C sort -rn | cut -d' ' -f2-)"
echo "removed $n files of saetools from $root"
