"""attribute() and the rule context leave the model bit-identical, also after exceptions."""

from __future__ import annotations

import pytest
import torch

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules

from conftest import embeddings_of, tiny_lm


def _snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "instance_forwards": [n for n, m in model.named_modules() if "forward" in m.__dict__],
        "hooks": {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for n, m in model.named_modules()
        },
        "rules": [n for n, m in model.named_modules() if hasattr(m, "rule")],
    }


def _assert_same(model, before, ids, logits):
    after = _snapshot(model)
    assert after["instance_forwards"] == [] and before["instance_forwards"] == []
    assert after["hooks"] == before["hooks"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["rules"] == before["rules"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, logits)


@pytest.fixture
def model_and_reference(ids):
    model = tiny_lm(seed=31)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return model, _snapshot(model), logits


def test_unchanged_after_attribute(model_and_reference, ids):
    model, before, logits = model_and_reference
    MambaLRP(model).attribute(embeddings_of(model, ids), target=1)
    LayerMambaLRP(model, model.backbone.layers[0]).attribute(ids, target=1)
    _assert_same(model, before, ids, logits)


def test_unchanged_after_exception_inside_context(model_and_reference, ids):
    model, before, logits = model_and_reference
    with pytest.raises(RuntimeError, match="boom"):
        with mamba_lrp_rules(model):
            assert "forward" in model.backbone.layers[0].mixer.__dict__
            raise RuntimeError("boom")
    _assert_same(model, before, ids, logits)


def test_unchanged_after_failing_attribute(model_and_reference, ids):
    model, before, logits = model_and_reference
    with pytest.raises(IndexError, match="out of range"):
        MambaLRP(model).attribute(embeddings_of(model, ids), target=10_000)
    with pytest.raises(RuntimeError, match="was not called"):  # the mixer rule uses its SiLU functionally
        LayerMambaLRP(model, model.backbone.layers[0].mixer.act).attribute(ids, target=1)
    _assert_same(model, before, ids, logits)


def test_existing_instance_forward_and_user_hooks_survive(ids):
    model = tiny_lm(seed=32)
    calls = []
    handle = model.backbone.layers[1].register_forward_hook(lambda m, a, o: calls.append(1))
    custom = model.backbone.norm_f.forward
    model.backbone.norm_f.forward = custom  # an instance attribute the user set
    MambaLRP(model).attribute(embeddings_of(model, ids), target=0)
    assert calls == [1]
    assert model.backbone.norm_f.__dict__["forward"] is custom
    handle.remove()
