#!/usr/bin/env bash
# A second virtual environment, .venv-low, with the OLDEST transformers release in the tested
# range (captum_mamba/compat.py: TRANSFORMERS_LOW), for the model-facing tests in CI. It reuses
# .venv's packages (torch, captum, captum_mamba) through a .pth file; its own transformers (and
# whatever that release needs in other versions) come first on sys.path and shadow .venv's.
set -euo pipefail
cd "$(dirname "$0")/.."
low="$(sed -n 's/^TRANSFORMERS_LOW = "\(.*\)"/\1/p' captum_mamba/compat.py)"
if [ ! -x .venv-low/bin/python ]; then
    echo "low_env: making .venv-low (transformers $low, the oldest release in the tested range)"
    .venv/bin/python -m venv .venv-low
fi
main_site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
own_site="$(.venv-low/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$main_site" > "$own_site/_captum_mamba_main_venv.pth"
echo "low_env: installing transformers $low into .venv-low"
.venv-low/bin/python -m pip install --quiet --disable-pip-version-check "transformers==$low"
.venv-low/bin/python -c "import transformers, captum_mamba; print('transformers', transformers.__version__, 'in .venv-low')"
