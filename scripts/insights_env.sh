#!/usr/bin/env bash
# A second virtual environment, .venv-insights, with captum 0.8.x (the last Captum with Insights)
# for tests/test_insights.py. It reuses .venv's packages (torch, transformers, captum_mamba) through
# a .pth file, so only captum 0.8.0 and flask-compress are installed; its own captum 0.8.0 comes
# first on sys.path and shadows .venv's captum 0.9. captum 0.8.0 pins numpy<2 only for old
# releases: it is installed without dependencies and runs with .venv's numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-insights/bin/python ]; then
    echo "insights_env: creating .venv-insights"
    .venv/bin/python -m venv .venv-insights
fi
main_site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
own_site="$(.venv-insights/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$main_site" > "$own_site/_captum_mamba_main_venv.pth"
echo "insights_env: installing captum 0.8.0 and flask-compress into .venv-insights"
.venv-insights/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "captum==0.8.0"
.venv-insights/bin/python -m pip install --quiet --disable-pip-version-check "flask-compress>=1.13"
.venv-insights/bin/python -c "import captum.insights, captum_mamba; print('captum', captum.__version__, 'with Insights in .venv-insights')"
