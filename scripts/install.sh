#!/usr/bin/env bash
# install.sh — installs lmc's build dependencies (Debian packages) when they
# are missing and builds lmc into build/ (warnings as errors). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="build-essential cmake pkg-config libopenblas-dev libcjson-dev libpcre2-dev libcivetweb-dev libopenmpi-dev openmpi-bin"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
cmake -S . -B build -DLMC_WERROR=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
