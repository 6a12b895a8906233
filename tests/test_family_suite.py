"""The shared family suite on every declared family with a test configuration (derived from the declarations)."""

from __future__ import annotations

import pytest

from conftest import FAMILIES
from family_checks import CHECKS, check_random_configurations


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family(family, check, float64_faithful_hf):
    CHECKS[check](FAMILIES[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_random_configuration_sweep(family):
    bias_free = check_random_configurations(FAMILIES[family], draws=50)
    assert bias_free >= 25  # most draws check exact conservation
