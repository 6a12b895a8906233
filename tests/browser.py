"""Headless Chromium for the browser tests (Debian's chromium + chromium-driver, driven by Selenium).

The tests skip when no browser is installed, except where ``CAPTUM_MAMBA_REQUIRE_BROWSER=1``
(set by ``.ci/run``): there a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("CAPTUM_MAMBA_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
REQUIRED = os.environ.get("CAPTUM_MAMBA_REQUIRE_BROWSER") == "1"


def _missing(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (CAPTUM_MAMBA_REQUIRE_BROWSER=1: scripts/browser_deps.sh installs it)")
    pytest.skip(reason)


def chromium_driver():
    """A headless Chromium WebDriver that records the browser console; the caller quits it."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        _missing("Debian's chromium and chromium-driver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tempfile.mkdtemp(prefix='captum-mamba-chromium-')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE since the last call (favicon misses excluded)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]


def save_screenshot(driver, name: str) -> Path:
    """Save a PNG of the page under the test-artifacts folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path
