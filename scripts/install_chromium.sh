#!/usr/bin/env bash
# Debian's headless-capable Chromium, for the tests that render pages (the data-quality report).
# Idempotent: returns at once when `chromium` is already on the PATH. Needs root (apt-get).
set -euo pipefail

command -v chromium >/dev/null && exit 0
command -v apt-get >/dev/null || { echo "install_chromium: apt-get not found; install Chromium yourself" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "install_chromium: run as root (apt-get install chromium)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "install_chromium: $(chromium --version 2>/dev/null)"
