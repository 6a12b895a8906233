r"""The gated short convolution (LFM2, LFM2-MoE), written once against the rule operations.

From the (padding-masked) input ``h``, one projection gives three streams, ``B | C | x =
in_proj(h)``; the layer is

.. math::

    y = C \odot \mathrm{conv}(B \odot x), \qquad \mathrm{out} = \mathrm{out\_proj}(y)

with ``conv`` a depthwise causal convolution of a few taps (``conv_L_cache``) and no activation.
The two products are the only non-linear steps: their rule (:class:`~captum_mamba.rules.
ShortConvGateRule`, through :meth:`MixerOps.conv_gate <captum_mamba.mixers.ops.MixerOps.conv_gate>`)
either holds ``B`` and ``C`` constant, so that ``y`` is linear in ``x`` (the SSM rule's idea), or
gives both products the half rule (Mamba's gate rule). The convolution and the projections are
linear (LRP-0); the convolution runs through the mixer's own ``conv`` module (or causal-conv1d's
kernel), filling a prefill cache as the model does.
"""

from __future__ import annotations

from torch import Tensor, nn

from captum_mamba.mixers.calls import MixerCall, check_padding, check_prefill, mask_padding
from captum_mamba.mixers.layouts import MixerLayout, MixerView
from captum_mamba.mixers.ops import MixerOps


class GatedShortConvLayout(MixerLayout):
    r"""
    A gated short convolution ``out_proj(C ⊙ conv(B ⊙ x))``, ``B | C | x = in_proj(h)`` (see the
    module docstring), with transformers' LFM2 names: ``in_proj``, ``conv`` (a depthwise
    ``nn.Conv1d`` padded for causality), ``out_proj`` and ``layer_idx``.
    """

    kind = "gated_conv"
    #: The convolution's attribute name (read as ``conv1d`` by the convolution operation).
    conv_name = "conv"

    def check(self, mixer: nn.Module) -> None:
        """Nothing to refuse: the layer has no activation (its products get their own rule)."""

    def mix(self, mixer: nn.Module, ops: MixerOps, call: MixerCall) -> Tensor:
        hidden, mask, cache = call.hidden_states, call.attention_mask, call.cache
        check_prefill(cache, self.layer_index(mixer))
        check_padding(mask, mixer.in_proj)
        B, C, x = mixer.in_proj(mask_padding(hidden, mask)).chunk(3, dim=-1)
        gated = ops.conv_gate(mixer, B, x, "input")  # B ⊙ x
        convolved = ops.conv(MixerView(mixer, {"conv1d": self.conv_name}), gated, cache)
        return mixer.out_proj(ops.conv_gate(mixer, C, convolved, "output"))  # C ⊙ conv(B ⊙ x)


__all__ = ["GatedShortConvLayout"]
