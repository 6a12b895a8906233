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
# Triton: its interpreter runs the fused Mamba-1 node's Triton kernels in
# tests/test_fused_mixer_stand_ins.py; on the GPU machine it comes with mamba-ssm
step "installing Triton 3.9.0 into .venv (its interpreter runs the Triton kernels' tests on the CPU)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check "triton==3.9.0"
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
