#!/usr/bin/env bash
# Installs the Debian packages saetools needs, only those missing.
# One `apt-get update` first when something is missing; silent when all is present.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config
  libzstd-dev zstd zlib1g-dev zip
  libmsgpack-cxx-dev
  libboost-program-options-dev
  libopenblas-dev libomp-dev
  nlohmann-json3-dev
  libsentencepiece-dev
  libpcre2-dev libicu-dev
  libthrust-dev
  libgtest-dev
  bats bats-assert bats-support
  clang
  parallel
  time
  jq libxml2-utils
  man-db groff-base bash-completion dpkg-dev
  libcurl4-openssl-dev
  chromium
)
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
