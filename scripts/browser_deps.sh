#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser tests (tests/test_compare_browser.py,
# tests/test_insights.py). Installs nothing when both are already there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
