#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser tests (tests/test_compare_browser.py,
# tests/test_insights.py). Installs nothing when both are already there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "browser_deps: chromium and chromedriver already installed"
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "browser_deps: apt-get update (package lists)"
$sudo apt-get update -qq >/dev/null
echo "browser_deps: apt-get install chromium chromium-driver (a few hundred MB; often a minute or two)"
$sudo apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
