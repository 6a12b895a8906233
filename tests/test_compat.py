"""The tested transformers range: declared once in pyproject and the package, warned about outside it."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import tomllib
import transformers

from captum_mamba import compat

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_package_s_tested_range():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in dependencies if re.match(r"transformers\b", d))
    assert spec == f"transformers>={compat.TRANSFORMERS_LOW},<{compat.TRANSFORMERS_NEXT}"


def test_installed_release_is_in_range_and_the_range_is_checked():
    assert compat.transformers_in_tested_range(transformers.__version__)
    assert compat.transformers_in_tested_range(compat.TRANSFORMERS_LOW)
    assert compat.transformers_in_tested_range("5.24.0")
    assert not compat.transformers_in_tested_range(compat.TRANSFORMERS_NEXT + ".0")
    assert not compat.transformers_in_tested_range("5.16.1")
    assert not compat.transformers_in_tested_range("4.57.1")


def test_a_release_outside_the_range_warns_once(monkeypatch):
    monkeypatch.setattr(transformers, "__version__", "6.0.0")
    compat.check_transformers_version.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compat.check_transformers_version()
            compat.check_transformers_version()
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1
        assert "tested with transformers >=" in messages[0] and "6.0.0" in messages[0]
    finally:
        compat.check_transformers_version.cache_clear()
