"""bootstrap.sh says what it is doing: every slow step (venv, pip, apt) is announced on its own line."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SLOW = re.compile(r"(-m venv|pip install|apt-get (update|install)|ipykernel install)")
ANNOUNCES = re.compile(r"^\s*(step |echo )")


@pytest.mark.parametrize("script", ["bootstrap.sh", "browser_deps.sh", "insights_env.sh", "low_env.sh"])
def test_every_slow_step_is_announced(script):
    lines = [line for line in (SCRIPTS / script).read_text().splitlines() if not line.strip().startswith("#")]
    silent = []
    for number, line in enumerate(lines):
        if SLOW.search(line) and not ANNOUNCES.match(line):
            before = [previous for previous in lines[max(0, number - 3) : number] if previous.strip()]
            if not any(ANNOUNCES.match(previous) for previous in before):
                silent.append(line.strip())
    assert not silent, f"{script}: slow steps without a message before them: {silent}"


def test_browser_deps_says_when_there_is_nothing_to_install():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Chromium is not installed here (bootstrap installs it)")
    done = subprocess.run(["bash", str(SCRIPTS / "browser_deps.sh")], capture_output=True, text=True, check=True)
    assert "already installed" in done.stdout
