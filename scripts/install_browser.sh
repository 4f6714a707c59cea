#!/usr/bin/env bash
# Headless Chromium for the report's browser test (pytest -m browser), from Debian's own archive.
# Idempotent: does nothing when a chromium binary is already on PATH; refreshes the apt lists only
# when they are missing or when the first install attempt cannot find the package.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "chromium present: $(command -v chromium || command -v chromium-browser)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_browser.sh: need root (or sudo) to apt-get install chromium" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive

# An image with emptied apt lists cannot resolve the package: update first in that case only.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' || true)" ]; then
  $SUDO apt-get update -q
fi
if ! $SUDO apt-get install -y -q --no-install-recommends chromium; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends chromium
fi
echo "chromium installed: $(command -v chromium)"
