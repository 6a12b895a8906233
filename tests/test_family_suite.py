"""The shared family suite on every declared family with a test configuration (derived from the declarations).

Each family's variants (further configurations: experts, latent experts, gated-norm options,
OLMo hybrid without rotary embeddings, Kimi Linear's full-rank query; ``family_references.py``)
get the checks their entry names (``variant_checks``). The random-configuration sweep draws each
family's ``random_config`` (50 draws for the Mamba families, fewer for the hybrids, whose loop
references are slower), with Hugging Face's float32 casts removed as in the other checks. Every
family with a test configuration is in the suite (one without a random drawer or a reference
would otherwise drop out of it unnoticed), and each has a classifier for the classifier check
(the package's, declared as ``classifier=``, or transformers' own, named in its entry).
"""

from __future__ import annotations

import pytest

from captum_mamba.families import FAMILIES as DECLARED

from conftest import FAMILIES
from family_checks import CHECKS, check_random_configurations
from family_references import reference_of

#: ``"family-variant-check"`` -> (family, overrides, check).
VARIANTS = {
    f"{name}-{variant}-{check}": (name, overrides, check)
    for name in FAMILIES
    for variant, overrides in reference_of(name).variants.items()
    for check in reference_of(name).variant_checks
}


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family(family, check, float64_faithful_hf):
    CHECKS[check](FAMILIES[family])


@pytest.mark.parametrize("variant", VARIANTS)
def test_family_variant(variant, float64_faithful_hf):
    name, overrides, check = VARIANTS[variant]
    CHECKS[check](FAMILIES[name], **overrides)


@pytest.mark.parametrize("family", FAMILIES)
def test_random_configuration_sweep(family, float64_faithful_hf):
    draws = reference_of(family).draws
    bias_free = check_random_configurations(FAMILIES[family], draws=draws)
    assert bias_free >= draws // 2  # most draws check exact conservation


def test_every_family_with_a_test_configuration_is_in_the_suite():
    """Each declared family with ``config`` also declares ``random_config`` and has a reference; the rest have neither."""
    configured = [family.name for family in DECLARED.families() if family.config is not None]
    assert configured == list(FAMILIES)
    for name in FAMILIES:
        reference_of(name)  # raises, naming the file to add it to
    assert {family.name for family in DECLARED.families()} - set(FAMILIES) <= {"vim", "mamba_ssm"}  # no tiny config


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_classifier_the_suite_checks(family):
    """The classifier check runs on something: the declared (package) classifier or transformers' own."""
    assert FAMILIES[family].classifier is not None or reference_of(family).classifiers
