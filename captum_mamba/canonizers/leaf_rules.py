"""Captum ``PropagationRule``s for the leaves that carry no relevance, and a block's relevance view.

The relevance-carrying leaves use the package's MambaLRP rules (``SiLUIdentityRule``,
``GateHalfRule``, ``RMSNormRule``, ``SelectiveSSMRule``, ``GradientRule``), which Captum applies
as z-rules (no weight manipulation) on the leaves' modified forwards.
"""

from __future__ import annotations

from typing import Any

from captum.attr._utils.lrp_rules import PropagationRule
from torch import Tensor, nn


class HeldConstantRule(PropagationRule):
    r"""
    For a leaf on a held-constant path (its inputs and output are detached): registers no
    tensor hooks, records no activations and leaves the weights alone, so Captum treats it as
    a constant.
    """

    def forward_hook(self, module: nn.Module, inputs: Any, outputs: Tensor) -> None:
        return None

    def forward_hook_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        return None

    def forward_pre_hook_activations(self, module: nn.Module, inputs: Any) -> None:
        return None

    def _manipulate_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        return None


class TokenEmbeddingRule(HeldConstantRule):
    """Raises a clear error when token ids reach the embedding during a Captum attribution."""

    def forward_hook_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        raise TypeError(
            "Captum's LRP attributes to floating-point inputs, but the canonized model was called with "
            "token ids: explain inputs_embeds (model.get_input_embeddings()(input_ids)) instead, e.g. "
            "LRP(ExplainedLogits(model)).attribute(inputs_embeds, target=...)"
        )

    forward_hook = forward_hook_weights  # type: ignore[assignment]


class BlockRelevance(PropagationRule):
    r"""
    Set as ``rule`` on a canonized residual block (a container) so that
    ``LayerLRP(model, block)`` works: the block's output relevance is that of its residual-add
    leaf's output, its input relevance (``attribute_to_layer_input=True``) that of its fan-out
    leaf's input. Captum never hooks containers; this rule only reads the leaves' relevances.

    Args:
        fan_out (nn.Module): the block's :class:`~captum_mamba.canonizers.leaf_modules.FanOut`.
        residual_add (nn.Module): the block's
                    :class:`~captum_mamba.canonizers.leaf_modules.ResidualAdd`.
    """

    def __init__(self, fan_out: nn.Module, residual_add: nn.Module) -> None:
        self._fan_out = fan_out
        self._residual_add = residual_add

    @staticmethod
    def _rule_of(leaf: nn.Module) -> PropagationRule:
        rule = getattr(leaf, "rule", None)
        if rule is None:
            raise RuntimeError("the block's leaves have no rules yet: read block relevance inside a Captum attribution")
        return rule

    @property  # type: ignore[override]
    def relevance_output(self) -> dict[Any, Tensor]:
        return self._rule_of(self._residual_add).relevance_output

    @property  # type: ignore[override]
    def relevance_input(self) -> dict[Any, Any]:
        return self._rule_of(self._fan_out).relevance_input

    def _manipulate_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
