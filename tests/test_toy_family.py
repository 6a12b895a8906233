"""A model family declared in a test, with one declaration and no other change, gets everything.

The toy family's mixer is a Mamba-1 mixer under a new name and without a Mamba base class, so
the package cannot know it; its block, backbone and causal LM are the toy's own classes. One
``ModelFamily`` declaration gives MambaLRP, LayerMambaLRP, canonize (Captum's LRP / LayerLRP) and
the whole shared family suite (whose loop-based reference for it is Mamba's: the fixture gives the
toy that entry of ``family_references.py``).
"""

from __future__ import annotations

import pytest
from torch import nn
from transformers.models.mamba.modeling_mamba import (
    MambaBlock,
    MambaForCausalLM,
    MambaMixer,
    MambaModel,
    MambaRMSNorm,
)

from captum_mamba import LayerMambaLRP, MambaLRP, UnsupportedModuleError, canonize
from captum_mamba.families import FAMILIES, ModelFamily
from captum_mamba.families.mamba import random_config, tiny_config
from captum_mamba.mixers import Mamba1Layout
from captum_mamba.rules import BlockRule, MixerRule, RMSNormRule

from family_checks import CHECKS, check_random_configurations, ids_of, lm_of
from family_references import REFERENCES


class ToyMixer(nn.Module):
    """A Mamba-1 mixer under a new name: Hugging Face's methods on a class that is no MambaMixer."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        donor = MambaMixer(config, layer_idx)  # its sub-modules, parameters and sizes
        self.__dict__.update({name: value for name, value in vars(donor).items() if name != "training"})


for _name, _method in vars(MambaMixer).items():  # the methods themselves, not copied code
    if callable(_method) and _name != "__init__" and not _name.startswith("__"):
        setattr(ToyMixer, _name, _method)


class ToyBlock(MambaBlock):
    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        self.mixer = ToyMixer(config, layer_idx)


class ToyModel(MambaModel):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList([ToyBlock(config, i) for i in range(config.num_hidden_layers)])


class ToyForCausalLM(MambaForCausalLM):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.backbone = ToyModel(config)


#: The one declaration.
TOY = ModelFamily(
    name="toy",
    mixers={ToyMixer: Mamba1Layout()},
    norms={MambaRMSNorm: RMSNormRule},
    blocks={ToyBlock: BlockRule()},
    containers=(ToyModel, ToyForCausalLM),
    causal_lm=ToyForCausalLM,
    config=tiny_config,
    random_config=random_config,
)


@pytest.fixture(autouse=True)
def toy_reference(monkeypatch):
    """The toy's reference is Mamba's (its mixer is a Mamba-1 mixer): the suite's entry for it."""
    monkeypatch.setitem(REFERENCES, "toy", REFERENCES["mamba"])


@pytest.fixture
def toy():
    with FAMILIES.registered(TOY) as family:
        yield family


def test_undeclared_toy_is_unknown_and_declared_toy_is_explained():
    model = lm_of(TOY, seed=0)
    embeds = model.get_input_embeddings()(ids_of(1, 4, 0)).detach()
    with pytest.raises(UnsupportedModuleError, match="ToyMixer"):
        MambaLRP(model).attribute(embeds, target=1)
    with FAMILIES.registered(TOY):
        assert FAMILIES.family_of(ToyMixer) is TOY
        plan = MambaLRP(model).rule_plan()
        assert isinstance(plan.rules["backbone.layers.0.mixer"], MixerRule)
        MambaLRP(model).attribute(embeds, target=1)
        LayerMambaLRP(model, model.backbone.layers[0]).attribute(embeds, target=1)
        with canonize(model) as canonization:
            assert len(canonization.blocks) == len(model.backbone.layers)
    with pytest.raises(UnsupportedModuleError, match="ToyMixer"):  # unregistered again
        MambaLRP(model).attribute(embeds, target=1)


@pytest.mark.parametrize("check", CHECKS)
def test_toy_family_gets_the_shared_suite(check, toy, float64_faithful_hf):
    CHECKS[check](toy)


def test_toy_family_random_configurations(toy):
    check_random_configurations(toy, draws=10)
