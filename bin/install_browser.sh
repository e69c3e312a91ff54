#!/usr/bin/env bash
# What the browser tests (tests/browser) need beside the Python packages: Debian's Chromium at
# /usr/bin/chromium (Playwright drives it; it cannot download a browser of its own here) and
# axe-core from npm in .cache/axe (injected into pages by the accessibility test).
# Idempotent: installs only what is missing. Playwright itself is in requirements-dev.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

AXE_VERSION=4.14.1
AXE_DIR=.cache/axe

if [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null | head -n 1

installed=$(node -p "require('./$AXE_DIR/node_modules/axe-core/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$AXE_VERSION" ]; then
  echo "Installing axe-core $AXE_VERSION into $AXE_DIR"
  mkdir -p "$AXE_DIR"
  npm install --prefix "$AXE_DIR" --no-save --no-audit --no-fund --loglevel=error "axe-core@$AXE_VERSION"
fi
test -f "$AXE_DIR/node_modules/axe-core/axe.min.js"
echo "axe-core $AXE_VERSION in $AXE_DIR"
