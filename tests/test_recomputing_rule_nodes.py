"""The rule nodes that keep less for the backward pass give the composed rules' values and gradients.

* the gated norm ``rmsnorm(y * silu(z)) * w`` with its three default rules as one node
  (:class:`~captum_mamba.rules.norm.GatedRMSNormRule`), against the gate, SiLU and RMSNorm rules
  composed (forced by a gate rule of another type with the same behaviour);
* ``silu(conv(x))`` with the convolution recomputed in the backward pass
  (:meth:`~captum_mamba.rules.silu.SiLUIdentityRule.apply_recomputed`), against the SiLU rule on
  the kept convolution output;
* what one Mamba-2 layer keeps for the backward pass under MambaLRP: two channel-sized tensors
  fewer than with the composed rules, the relevances unchanged.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captum_mamba import MambaLRP
from captum_mamba.rules.gate import GateHalfRule
from captum_mamba.rules.norm import GatedRMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

from conftest import embeddings_of, tiny_lm


class ComposedGateHalfRule(GateHalfRule):
    """The gate rule under another type: :class:`GatedRMSNormRule` then composes its three rules."""


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("group_size", [None, 3])
@pytest.mark.parametrize("with_weight", [True, False])
def test_gated_norm_node_equals_the_composed_rules(group_size, with_weight):
    generator = torch.Generator().manual_seed(0)
    y, z, grad = (torch.randn(2, 5, 6, generator=generator, dtype=torch.float64) for _ in range(3))
    weight = 1 + 0.3 * torch.randn(6, generator=generator, dtype=torch.float64) if with_weight else None
    outputs, gradients = [], []
    for rule in (GatedRMSNormRule(), GatedRMSNormRule(gate=ComposedGateHalfRule())):
        y_leaf, z_leaf = _leaves(y, z)
        out = rule.apply(y_leaf, z_leaf, weight, 1e-5, group_size)
        outputs.append(out)
        gradients.append(torch.autograd.grad(out, (y_leaf, z_leaf), grad))
    fused_node = outputs[0].grad_fn is not None and "HeldConstantGatedRMSNorm" in type(outputs[0].grad_fn).__name__
    assert fused_node and "HeldConstantGatedRMSNorm" not in type(outputs[1].grad_fn).__name__
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)
    for fused, composed in zip(gradients[0], gradients[1]):
        torch.testing.assert_close(fused, composed, rtol=1e-12, atol=1e-12)
    # an independent check of the rules: the gradients are half of the plain product's to y and z
    # (z's through sigmoid only), with the normaliser constant
    wide = (y * F.silu(z)).reshape(2, 5, -1, group_size or 6)
    inverse_rms = torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + 1e-5).expand_as(wide).reshape(2, 5, 6)
    scaled = grad * inverse_rms * (1 if weight is None else weight)
    torch.testing.assert_close(gradients[0][0], 0.5 * scaled * F.silu(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gradients[0][1], 0.5 * scaled * y * torch.sigmoid(z), rtol=1e-12, atol=1e-12)


def test_gated_norm_node_in_bfloat16_matches_the_composed_rules_to_its_rounding():
    generator = torch.Generator().manual_seed(1)
    y, z, grad = (torch.randn(3, 8, generator=generator).bfloat16() for _ in range(3))
    weight = torch.ones(8, dtype=torch.bfloat16)
    results = []
    for rule in (GatedRMSNormRule(), GatedRMSNormRule(gate=ComposedGateHalfRule())):
        y_leaf, z_leaf = _leaves(y, z)
        out = rule.apply(y_leaf, z_leaf, weight, 1e-5, None)
        results.append((out, *torch.autograd.grad(out, (y_leaf, z_leaf), grad)))
    for fused, composed in zip(*results):
        assert fused.dtype == composed.dtype == torch.bfloat16
        torch.testing.assert_close(fused.float(), composed.float(), rtol=2e-2, atol=2e-2)


def test_silu_of_a_recomputed_convolution_equals_the_rule_on_the_kept_output():
    generator = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv1d(4, 4, 3, groups=4, padding=2, dtype=torch.float64).requires_grad_(False)
    x = torch.randn(2, 4, 9, generator=generator, dtype=torch.float64)
    grad = torch.randn(2, 4, 9, generator=generator, dtype=torch.float64)

    def causal(t: torch.Tensor) -> torch.Tensor:
        return conv(t)[..., : t.shape[-1]]

    recomputed_leaf, kept_leaf = _leaves(x, x)
    recomputed = SiLUIdentityRule().apply_recomputed(causal, recomputed_leaf)
    kept = SiLUIdentityRule().apply(causal(kept_leaf))
    torch.testing.assert_close(recomputed, kept, rtol=0, atol=0)
    (grad_recomputed,) = torch.autograd.grad(recomputed, recomputed_leaf, grad)
    (grad_kept,) = torch.autograd.grad(kept, kept_leaf, grad)
    torch.testing.assert_close(grad_recomputed, grad_kept, rtol=1e-12, atol=1e-12)
    # the rule's gradient is conv^T(grad * sigmoid(conv x)), not SiLU's true derivative
    (true_gradient,) = torch.autograd.grad(F.silu(causal(kept_leaf)), kept_leaf, grad)
    assert not torch.allclose(grad_recomputed, true_gradient)


def _kept_bytes(run) -> int:
    """The bytes of distinct storages autograd keeps for the backward pass while ``run()`` builds its graph."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


def test_a_mamba2_layer_keeps_two_channel_sized_tensors_fewer_with_the_same_relevances():
    model = tiny_lm(seed=5, family="mamba2", num_hidden_layers=1)
    ids = torch.randint(0, 32, (1, 64), generator=torch.Generator().manual_seed(5))
    embeds = embeddings_of(model, ids)
    composed_rules = {type(model.backbone.layers[0].mixer.norm): GatedRMSNormRule(gate=ComposedGateHalfRule())}

    class ComposedSiLU(SiLUIdentityRule):
        """The SiLU rule under another type: the convolution's output is kept."""

    from captum_mamba.rules.mixer import MixerRule

    mixer_type = type(model.backbone.layers[0].mixer)
    composed_rules[mixer_type] = MixerRule(silu=ComposedSiLU())
    relevance = {}

    def explain(name, rules):
        def run():
            relevance[name] = MambaLRP(model, rules=rules).attribute(embeds, target=3)

        return run

    lean = _kept_bytes(explain("nodes", None))
    composed = _kept_bytes(explain("composed", composed_rules))
    torch.testing.assert_close(relevance["nodes"], relevance["composed"], rtol=1e-10, atol=1e-12)
    channels = model.config.num_heads * model.config.head_dim  # the SSM's channels
    channel_sized = 64 * channels * 8  # one (1, 64, channels) float64 tensor
    print(
        f"kept for the backward pass: {lean} bytes with the nodes, {composed} composed; one channel-sized tensor {channel_sized}"
    )
    assert composed - lean >= 2 * channel_sized, (composed, lean, channel_sized)
