"""The transformers releases the package is tested on, and a warning outside them."""

from __future__ import annotations

import functools
import re
import warnings

#: The tested range of transformers releases: the oldest and newest releases the whole test suite
#: runs on in CI, and the next minor release (excluded). pyproject.toml declares the same range.
TRANSFORMERS_LOW = "5.17.0"
TRANSFORMERS_NEXT = "5.25"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def transformers_in_tested_range(version: str) -> bool:
    """Whether a transformers ``version`` lies in the tested range ``[LOW, NEXT)``."""
    parsed = _version_tuple(version)
    return _version_tuple(TRANSFORMERS_LOW) <= parsed < _version_tuple(TRANSFORMERS_NEXT)


@functools.cache
def check_transformers_version() -> None:
    """Warn once if the installed transformers lies outside the tested range."""
    import transformers

    if not transformers_in_tested_range(transformers.__version__):
        warnings.warn(
            f"captum_mamba is tested with transformers >={TRANSFORMERS_LOW},<{TRANSFORMERS_NEXT}; "
            f"transformers {transformers.__version__} is installed. Model families may break where a "
            f"release renames what the package patches: install a release in the tested range "
            f"(pip install 'transformers>={TRANSFORMERS_LOW},<{TRANSFORMERS_NEXT}').",
            stacklevel=3,
        )
