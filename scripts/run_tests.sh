#!/usr/bin/env bash
# README's tests: the whole suite on the newest transformers in the tested range (.venv), then the
# model-facing tests on the oldest (.venv-low). Run scripts/bootstrap.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
version() { "$1" -c 'import transformers; print(transformers.__version__)'; }
echo "== the whole suite, transformers $(version .venv/bin/python) (.venv)"
.venv/bin/python -m pytest -q "$@"
echo "== the model-facing tests, transformers $(version .venv-low/bin/python) (.venv-low, oldest in the tested range)"
.venv-low/bin/python -m pytest -q -m model_facing "$@"
