#!/usr/bin/env bash
# Create .venv and install captum_mamba with its test extra (the newest transformers in the tested
# range), and .venv-low with the oldest (scripts/low_env.sh). Idempotent; needs only PyPI.
# torch is pinned first: an open torch range would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
step() { echo "bootstrap: $*"; }  # one line per step: some steps are silent for minutes
if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $python"
    "$python" -m venv .venv
fi
step "installing torch 2.13.0 (CPU) into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
step "installing captum_mamba with its test extra into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# the kernel the tutorial notebooks run on (tests/test_tutorials.py): this environment's Python
step "registering the Jupyter kernel python3 of .venv"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
# browser tests: Debian's chromium + chromium-driver, and captum 0.8 (Insights) beside .venv
step "browser tests: Chromium and ChromeDriver (scripts/browser_deps.sh)"
bash scripts/browser_deps.sh
step "Captum Insights tests: .venv-insights with captum 0.8.0 (scripts/insights_env.sh)"
bash scripts/insights_env.sh
# the model-facing tests also run on the oldest transformers release in the tested range
step "oldest supported transformers: .venv-low (scripts/low_env.sh)"
bash scripts/low_env.sh
step "done"
