#!/usr/bin/env bash
# Install Debian's headless-capable chromium for the report's browser test (idempotent).
# Does nothing when a chromium binary is already on PATH (or $ICBPL_CHROMIUM points to one).
# Needs root (or sudo) and Debian/Ubuntu apt; elsewhere it says so and exits 0, and the browser
# test then skips with a reason.
set -euo pipefail
for b in "${ICBPL_CHROMIUM:-}" chromium chromium-browser; do
  if [ -n "$b" ] && command -v "$b" >/dev/null 2>&1; then
    echo "install_browser: found $(command -v "$b")"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: apt-get not available; install chromium yourself (browser test will skip)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_browser: not root and no passwordless sudo; skipping (browser test will skip)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "install_browser: installed $(command -v chromium)"
