"""Bad input raises clear errors naming the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import captum_mamba
from captum_mamba import LayerMambaLRP, MambaLRP, MissingDependencyError, UnsupportedModuleError
from captum_mamba.rules import SelectiveSSMRule

from conftest import embeddings_of, tiny_lm


class FancyActivation(nn.Module):
    def forward(self, x):
        return torch.tanh(x) * x


class UnknownMixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.decay = nn.Parameter(torch.ones(16))
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        return self.proj(x) * torch.sigmoid(self.decay)


def test_unsupported_module_types_are_named(ids):
    model = tiny_lm(seed=51)
    model.backbone.layers[0].mixer.out_proj = nn.Sequential(model.backbone.layers[0].mixer.out_proj, FancyActivation())
    model.backbone.extra = UnknownMixer()
    with pytest.raises(UnsupportedModuleError, match=r"FancyActivation .*UnknownMixer|UnknownMixer .*FancyActivation"):
        MambaLRP(model).attribute(embeddings_of(model, ids), target=0)


def test_registering_a_rule_adds_support(ids):
    model = tiny_lm(seed=52)
    mixer = model.backbone.layers[0].mixer
    mixer.out_proj = nn.Sequential(mixer.out_proj, FancyActivation())
    with pytest.raises(UnsupportedModuleError, match="FancyActivation"):
        MambaLRP(model).attribute(embeddings_of(model, ids), target=0)
    with captum_mamba.DEFAULT_REGISTRY.registered(FancyActivation, captum_mamba.rules.GradientRule):
        MambaLRP(model).attribute(embeddings_of(model, ids), target=0)
    assert FancyActivation not in captum_mamba.DEFAULT_REGISTRY


@pytest.mark.parametrize("target", [40, -1, [0, 99], 2.5])
def test_bad_targets(target, ids):
    model = tiny_lm(seed=53)
    with pytest.raises((IndexError, TypeError), match="out of range|target must be"):
        MambaLRP(model).attribute(embeddings_of(model, ids), target=target)


def test_wrong_number_of_targets(ids):
    model = tiny_lm(seed=53)
    with pytest.raises(ValueError, match="3 targets for a batch of 2"):
        MambaLRP(model).attribute(embeddings_of(model, ids), target=[1, 2, 3])


def test_missing_target_for_vector_outputs(ids):
    model = tiny_lm(seed=53)
    with pytest.raises(ValueError, match="pass target="):
        MambaLRP(model).attribute(embeddings_of(model, ids))


def test_token_ids_given_to_mamba_lrp(ids):
    model = tiny_lm(seed=54)
    with pytest.raises(TypeError, match="LayerMambaLRP"):
        MambaLRP(model).attribute(ids, target=0)


def test_explained_position_out_of_range(ids):
    model = tiny_lm(seed=54)
    with pytest.raises(IndexError, match="explained position 50"):
        LayerMambaLRP(model, model.backbone.embeddings, explained_position=50).attribute(ids, target=0)


def test_forward_function_without_a_model():
    with pytest.raises(captum_mamba.ModelNotFoundError, match="model="):
        MambaLRP(lambda x: x)


def test_missing_gpu_dependency_is_named():
    pytest.importorskip("torch")
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"mamba-ssm.*captum-mamba\[gpu\]"):
            SelectiveSSMRule(backend="cuda")
    else:
        pytest.skip("mamba-ssm is installed here")


def test_bad_rule_registration():
    with pytest.raises(TypeError, match="PropagationRule"):
        captum_mamba.register_rule(nn.GELU, object())
    with pytest.raises(TypeError, match="nn.Module subclass"):
        captum_mamba.register_rule(int, None)
