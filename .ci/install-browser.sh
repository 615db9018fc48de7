#!/usr/bin/env bash
# Install Debian's chromium for the headless-browser test (tests/test_app_browser.py drives the
# system browser with Playwright: no browser download). Idempotent: when a working chromium is
# already there it only prints its version. Uses sudo (non-interactive) when not root.
set -euo pipefail

works() {
  command -v chromium >/dev/null 2>&1 &&
    timeout 60 chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank \
      >/dev/null 2>&1
}

if ! works; then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "install-browser: not root and no sudo: cannot apt-get install chromium" >&2
      exit 1
    fi
    SUDO=(sudo -n)
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  if ! works; then
    echo "install-browser: chromium is installed but does not start headless" >&2
    exit 1
  fi
fi
echo "== browser: $(chromium --version 2>/dev/null)"
