#!/usr/bin/env bats
# Installing like a Unix tool (README.md "Installing"): make install and make uninstall with
# PREFIX and DESTDIR, the man pages, bash completion, --version, and the Debian package of make deb.
# These tests run make in the source tree on the build the suite tests; they run one at a time.
load helper

ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
BUILD=$(cd "$SAE_BIN/.." && pwd)

setup_file() {
  export BATS_NO_PARALLELIZE_WITHIN_FILE=true
}

tools() {
  (cd "$SAE_BIN" && ls sae-*)
}

# Every file and directory under $1, relative, sorted.
tree() {
  (cd "$1" && find . | LC_ALL=C sort)
}

# Runs `make TARGET ...` in the source tree against the tested build.
run_make() {
  run make -C "$ROOT" --no-print-directory BUILD="$BUILD" "$@"
}

@test "make install PREFIX=~/.local: tools, man pages, completion, recipes, docs; they run with only that bin/ on PATH" {
  home="$T/home"
  prefix="$home/.local"
  mkdir -p "$home"
  run_make install PREFIX="$prefix"
  assert_success
  assert_output --partial "installed saetools in $prefix"
  for t in $(tools); do
    [ -x "$prefix/bin/$t" ] || fail "$t: not installed"
    [ -s "$prefix/share/man/man1/$t.1" ] || fail "$t.1: no man page"
    [ -s "$prefix/share/bash-completion/completions/$t" ] || fail "$t: no completion script"
  done
  for f in pipelines/toy.mk pipelines/real.mk pipelines/toy-summary.jq doc/README.md doc/docs/training.md \
           doc/docs/architecture.md install-manifest.txt; do
    [ -s "$prefix/share/saetools/$f" ] || fail "share/saetools/$f: not installed"
  done
  [ ! -e "$prefix/share/saetools/doc/docs/man" ] || fail "the manual sources were installed as docs"

  # A new shell, nothing inherited, only the installed bin/ on PATH.
  run env -i HOME="$home" PATH="$prefix/bin" /bin/bash --noprofile --norc -c \
    'sae-collect --toy --d 16 --features 32 --rows 3000 --seed 3 | sae-info --json'
  assert_success
  assert_output --partial '"rows": 3000'
  assert_output --partial '"d": 16'

  # The installed toy recipe finds the installed tools on PATH, and its jq file beside itself.
  run env -i HOME="$home" PATH="$prefix/bin:/usr/bin:/bin" /bin/bash --noprofile --norc -c \
    "cd '$T' && make --no-print-directory -f '$prefix/share/saetools/pipelines/toy.mk' OUT=out ROWS=20000 EPOCHS=1 demo"
  assert_success
  assert_output --partial "toy pipeline done"
  assert_output --partial "$prefix/bin/sae-train"
}

@test "man finds the installed page from PATH and shows it; every page renders without a groff warning" {
  prefix="$T/p"
  run_make install PREFIX="$prefix"
  assert_success
  # man-db derives the man path from PATH (PREFIX/bin -> PREFIX/share/man).
  run env -i HOME="$T" PATH="$prefix/bin:/usr/bin:/bin" MANWIDTH=80 MANPAGER=cat PAGER=cat man sae-train
  assert_success
  assert_line --regexp '^SAE-TRAIN\(1\) +saetools manual +SAE-TRAIN\(1\)$'
  assert_line --regexp '^ +sae-train - '
  assert_line --regexp '^ +--arch arg$'
  assert_line --regexp '^EXIT STATUS$'
  assert_line --regexp '^EXAMPLES$'
  assert_output --partial "Train sparse autoencoders on activation streams"
  for t in $(tools); do
    run bash -c "MANWIDTH=80 man --warnings=all -l '$prefix/share/man/man1/$t.1' 2>&1 >/dev/null"
    assert_success
    assert_output ""
    # Every option --help lists is on the page.
    for opt in $("$SAE_BIN/$t" --help | grep -oE '^  (-. \[ )?--[a-z0-9-]+' | grep -oE -- '--[a-z0-9-]+$'); do
      MANWIDTH=200 man -l "$prefix/share/man/man1/$t.1" 2>/dev/null | grep -qE -- "(^|[ ,])$opt( |$)" || fail "$t: $opt is not on its man page"
    done
  done
}

@test "bash completion: bash-completion loads the installed script; options, enumerated values and commands complete" {
  home="$T/home"
  prefix="$home/.local"
  mkdir -p "$home"
  run_make install PREFIX="$prefix"
  assert_success
  cat > "$T/complete.sh" <<'SH'
source /usr/share/bash-completion/bash_completion
# complete WORD... : what pressing TAB after the last word offers, one per line.
complete_words() {
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  __load_completion "$1" || { echo "no completion for $1"; return; }
  local fn
  fn=$(complete -p "$1" | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
  "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
  # In brackets: bats leaves empty lines out of $lines.
  echo "[$(printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort | paste -sd' ')]"
}
complete_words sae-train --ar
complete_words sae-train --arch b
complete_words sae-train --arch = j
complete_words sae-train --dtype ''
complete_words sae-npy ''
complete_words sae-npy ex
complete_words sae-npy export --col
complete_words sae-npy export --column t
complete_words sae-npy --dtype f16 import ''
complete_words sae-collect --device c
complete_words sae-collect --toy --magnitude ''
complete_words sae-train -o ''
SH
  run env -i HOME="$home" PATH="$prefix/bin:/usr/bin:/bin" /bin/bash --noprofile --norc "$T/complete.sh"
  assert_success
  assert_equal "${#lines[@]}" 12
  assert_equal "${lines[0]}" "[--arch]"
  assert_equal "${lines[1]}" "[batchtopk]"
  assert_equal "${lines[2]}" "[jumprelu]"
  assert_equal "${lines[3]}" "[bf16 f16 f32]"
  assert_equal "${lines[4]}" "[export import]"
  assert_equal "${lines[5]}" "[export]"
  assert_equal "${lines[6]}" "[--column]"
  assert_equal "${lines[7]}" "[token]"
  # After the command, operands are files (complete -o default): nothing from the script.
  assert_equal "${lines[8]}" "[]"
  assert_equal "${lines[9]}" "[cpu cuda]"
  assert_equal "${lines[10]}" "[constant exponential uniform]"
  assert_equal "${lines[11]}" "[]"
}

@test "every value completion offers for an option is one --help names for it" {
  for t in $(tools); do
    script=$("$SAE_BIN/$t" --completion)
    help=$("$SAE_BIN/$t" --help)
    arms=$(printf '%s\n' "$script" | grep -E "^    -.*\) COMPREPLY=\(\\$\(compgen -W '" || true)
    [ -n "$arms" ] || continue
    while IFS= read -r arm; do
      names=${arm%%)*}
      names=${names#    }
      long=$(printf '%s\n' "${names//|/$'\n'}" | grep -- '^--' | head -1)
      values=$(printf '%s\n' "$arm" | sed -E "s/.*-W '([^']*)'.*/\1/")
      # The option's lines in --help: its own, and the description's continuation lines.
      block=$(printf '%s\n' "$help" | awk -v o="$long" '
        { is_opt = ($0 ~ /^  -/) }
        is_opt && on { on = 0 }
        is_opt { n = $0; sub(/^  (-. \[ )?/, "", n); split(n, w, /[ \]]/); if (w[1] == o) on = 1 }
        on { print }')
      [ -n "$block" ] || fail "$t: $long is not in --help"
      for v in $values; do
        printf '%s\n' "$block" | grep -qw -- "$v" || fail "$t: --help for $long does not name '$v', which completion offers"
      done
    done <<< "$arms"
  done
}

@test "make uninstall removes exactly what make install put there, and nothing else" {
  prefix="$T/usr-local"
  mkdir -p "$prefix/bin" "$prefix/share/man/man1" "$prefix/lib"
  echo "#!/bin/sh" > "$prefix/bin/other-tool"
  echo ".TH OTHER 1" > "$prefix/share/man/man1/other-tool.1"
  echo keep > "$prefix/lib/data"
  before=$(tree "$prefix")
  run_make install PREFIX="$prefix"
  assert_success
  [ "$(tree "$prefix")" != "$before" ]
  # Installing twice over itself changes nothing uninstall needs.
  run_make install PREFIX="$prefix"
  assert_success
  run_make uninstall PREFIX="$prefix"
  assert_success
  assert_output --regexp "^removed [0-9]+ files of saetools from $prefix$"
  assert_equal "$(tree "$prefix")" "$before"

  # DESTDIR stages the same layout under another root, and uninstall takes the same DESTDIR.
  run_make install PREFIX=/usr/local DESTDIR="$T/stage"
  assert_success
  [ -x "$T/stage/usr/local/bin/sae-train" ]
  [ -f "$T/stage/usr/local/share/man/man1/sae-train.1" ]
  run_make uninstall PREFIX=/usr/local DESTDIR="$T/stage"
  assert_success
  assert_equal "$(cd "$T/stage" && find . -type f -o -type l)" ""
  assert_equal "$(tree "$T/stage")" "$(printf '.\n./usr\n./usr/local')"
}

@test "install and uninstall refuse a relative PREFIX, and uninstall says when nothing is installed" {
  run_make install PREFIX=relative/dir
  assert_failure
  assert_output --partial "install: PREFIX must be an absolute path, not 'relative/dir'"
  run_make uninstall PREFIX="$T/none"
  assert_failure
  assert_output --partial "uninstall: $T/none/share/saetools/install-manifest.txt: no such file (nothing of saetools is installed under $T/none)"
}

@test "--version: the version from git, the compiler, which optional parts are built in, the OpenBLAS kernels" {
  cuda=no
  grep -q '^SAE_CUDA_BUILT:INTERNAL=ON$' "$BUILD/CMakeCache.txt" && cuda=yes
  version_re='[0-9]+\.[0-9]+\.[0-9]+'
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    version_re="$version_re(-[0-9]+-g[0-9a-f]{7,})?(-dirty)?"
  fi
  for t in $(tools); do
    run "$SAE_BIN/$t" --version
    assert_success
    assert_line --index 0 --regexp "^$t $version_re$"
    assert_line --regexp '^compiler: (GCC|clang) [0-9]+\.[0-9]+.*, C\+\+17, Release$'
    assert_line --regexp '^host code: (tuned for the build machine|portable)'
    if [ $cuda = yes ]; then
      assert_line --regexp '^CUDA backend: built in \(CUDA [0-9]+\.[0-9]+\.[0-9]+, GPU code for sm_80 and sm_90, PTX for compute_90\)$'
    else
      assert_line --regexp '^CUDA backend: not built in'
    fi
    assert_line --regexp '^MPI: '
    assert_line --regexp '^sentencepiece: (built in|not built in)'
  done
  # A tool that runs GEMMs reports the OpenBLAS kernel set this CPU gets; sae-info runs none.
  run sae-train --version
  assert_line --regexp '^OpenBLAS: kernel set [A-Za-z0-9]+.*; OpenBLAS [0-9]+\.[0-9]+'
  run sae-info --version
  assert_line "OpenBLAS: not used by sae-info"
  # The same version is recorded in what the tools write.
  v=$(sae-info --version | head -1 | cut -d' ' -f2)
  sae-collect --toy --d 8 --features 8 --rows 10 -o t.sae
  run sae-info --header t.sae
  assert_output --partial "tool_version=$v"
}

@test "make deb: a package with the Debian libraries it links as Depends, which runs from a throwaway root" {
  command -v dpkg-deb >/dev/null || skip "dpkg-deb is not installed"
  rm -f "$BUILD"/saetools_*.deb
  # The tested build, packaged (make deb's own default is a separate portable tree).
  run_make deb DEB_BUILD="$BUILD" DEB_CMAKE_FLAGS=
  assert_success
  deb=$(ls "$BUILD"/saetools_*.deb)
  [ -f "$deb" ]
  run dpkg-deb -f "$deb" Package Version Architecture Depends Description
  assert_success
  assert_line "Package: saetools"
  assert_line --regexp "^Version: [0-9]+\.[0-9]+\.[0-9]+(\+[0-9a-z.]+)?$"
  assert_line "Architecture: $(dpkg --print-architecture)"
  for lib in libzstd1 libopenblas0 libboost-program-options1 libpcre2-8-0 libicu libsentencepiece0 libgomp1 'libstdc\+\+6' libc6; do
    assert_line --regexp "^Depends: (.*, )?$lib"
  done
  if grep -q '^SAE_CUDA_BUILT:INTERNAL=ON$' "$BUILD/CMakeCache.txt"; then
    assert_output --partial "Backends: CPU and CUDA"
  else
    assert_output --partial "Backends: CPU only"
  fi
  run dpkg-deb -c "$deb"
  assert_success
  for f in ./usr/bin/sae-train ./usr/share/man/man1/sae-train.1 ./usr/share/bash-completion/completions/sae-train \
           ./usr/share/saetools/pipelines/toy.mk ./usr/share/saetools/doc/README.md; do
    assert_line --regexp " ${f//./\\.}$"
  done

  root="$T/root"
  run dpkg -x "$deb" "$root"
  assert_success
  run env -i PATH="$root/usr/bin" /bin/bash --noprofile --norc -c \
    'sae-collect --toy --d 16 --features 32 --rows 2000 | sae-info --json'
  assert_success
  assert_output --partial '"rows": 2000'
  rm -rf "$root"
  [ ! -e "$root" ]
  rm -f "$deb"
}
