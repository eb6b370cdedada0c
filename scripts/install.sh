#!/usr/bin/env bash
# Installs a built tree under DESTDIR/PREFIX and records what it put there.
#
#   scripts/install.sh BUILD PREFIX [DESTDIR]
#
# PREFIX must be absolute (/usr/local, $HOME/.local). CMake's install rules (CMakeLists.txt)
# choose the files. To know what is ours, the install is first staged in a temporary directory;
# PREFIX/share/saetools/install-manifest.txt then lists every file installed ("f PATH") and every
# directory the install created because it was not there before ("d PATH"), relative to PREFIX,
# so scripts/uninstall.sh removes exactly those and nothing else.
set -euo pipefail
build=${1:?usage: install.sh BUILD PREFIX [DESTDIR]}
prefix=${2:?usage: install.sh BUILD PREFIX [DESTDIR]}
destdir=${3:-}
case $prefix in
  /*) ;;
  *) echo "install: PREFIX must be an absolute path, not '$prefix'" >&2; exit 1 ;;
esac
prefix=${prefix%/}
root="$destdir$prefix"
manifest_rel=share/saetools/install-manifest.txt

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR="$stage" cmake --install "$build" --prefix "$prefix" >/dev/null
staged="$stage$prefix"
{
  (cd "$staged" && find . -mindepth 1 -type d | sed 's|^\./||' | LC_ALL=C sort) | while read -r d; do
    [ -e "$root/$d" ] || echo "d $d"
  done
  (cd "$staged" && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort) | sed 's/^/f /'
  echo "f $manifest_rel"
} | LC_ALL=C sort -u > "$stage/manifest"

# Over an earlier install, its manifest still counts: the directories it created are ours, and a
# file it installed that this version no longer has must still go at uninstall.
if [ -f "$root/$manifest_rel" ]; then
  cat "$root/$manifest_rel" >> "$stage/manifest"
  LC_ALL=C sort -u -o "$stage/manifest" "$stage/manifest"
fi

DESTDIR="$destdir" cmake --install "$build" --prefix "$prefix" >/dev/null
mkdir -p "$root/share/saetools"
cp "$stage/manifest" "$root/$manifest_rel.tmp"
mv "$root/$manifest_rel.tmp" "$root/$manifest_rel"
echo "installed saetools in $root ($(grep -c '^f ' "$root/$manifest_rel") files); make uninstall PREFIX=$prefix${destdir:+ DESTDIR=$destdir} removes them"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH; add it, e.g. export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
