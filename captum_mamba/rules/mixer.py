"""The mixer rule: MambaLRP's component rules as the operations of the mixer functions."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.kernels.causal_conv import time_major_causal_conv, time_major_conv_applies
from captum_mamba.kernels.cuda import load_causal_conv1d_fn, use_kernel
from captum_mamba.kernels.fused_mixer import bidirectional_fusable, fusable, fused_bidirectional_mixer, fused_mixer
from captum_mamba.mixers.calls import MixerCall, bind_mixer_call
from captum_mamba.mixers.layouts import BidirectionalMamba1Layout, Mamba1Layout, MixerLayout
from captum_mamba.mixers.ops import MixerOps
from captum_mamba.options import carrying_options, current_options
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.delta import GatedDeltaRule, plain_gated_delta
from captum_mamba.rules.gate import GateHalfRule, ShortConvGateRule
from captum_mamba.rules.silu import SiLUIdentityRule
from captum_mamba.rules.ssm import SelectiveSSMRule, plain_scan_heads, plain_selective_ssm


class MixerRule(MambaLRPRule, MixerOps):
    r"""
    MambaLRP for a Mamba mixer (Mamba-1 or Mamba-2, any implementation a model family declares),
    a Gated DeltaNet mixer (Kimi Delta Attention too) or a gated short convolution (LFM2): the
    mixer function of its layout, with the component rules below.
    A component set to ``None`` runs plainly (gradients through everything): that is how
    ablations switch one rule off, e.g. ``MambaLRP(model, rules={MambaMixer: MixerRule(ssm=None)})``.

    Args:
        silu (SiLUIdentityRule, optional): rule for the SiLUs. Default: ``SiLUIdentityRule()``
        ssm (SelectiveSSMRule, optional): rule for the selective scan. Default: ``SelectiveSSMRule()``
        gate (GateHalfRule, optional): rule for the multiplicative gates applied by the mixer
                    (Mamba-2's gate inside its gated norm follows the norm's rule). Default:
                    ``GateHalfRule()``
        fused (bool, optional): on the CUDA kernels, with all three rules and float32, bfloat16 or float16
                    inputs, run
                    a Mamba-1 mixer as one autograd node
                    (:mod:`captum_mamba.kernels.fused_mixer`; same relevances). Default: True
        layout (MixerLayout, optional): how to read the mixer; ``None`` takes the layout the
                    model family declares for the mixer's type.
        delta (GatedDeltaRule, optional): rule for the gated delta rule of a Gated DeltaNet
                    mixer (decay, writing strength, keys and queries held constant). Default:
                    ``GatedDeltaRule()``
        conv_gate (ShortConvGateRule, optional): rule for the gates ``B``, ``C`` of a gated short
                    convolution ``C ⊙ conv(B ⊙ x)`` (LFM2): the half rule on both products
                    (``"half"``) or held constant (``"constant"``). Default: ``ShortConvGateRule()``
                    (``"half"``)
    """

    replaces_forward = True
    components = {
        "silu": "silu_rule",
        "ssm": "ssm_rule",
        "gate": "gate_rule",
        "delta": "delta_rule",
        "conv_gate": "conv_gate_rule",
    }

    def __init__(
        self,
        silu: SiLUIdentityRule | None = SiLUIdentityRule(),
        ssm: SelectiveSSMRule | None = SelectiveSSMRule(),
        gate: GateHalfRule | None = GateHalfRule(),
        fused: bool = True,
        layout: MixerLayout | None = None,
        delta: GatedDeltaRule | None = GatedDeltaRule(),
        conv_gate: ShortConvGateRule | None = ShortConvGateRule(),
    ) -> None:
        self.silu_rule = silu
        self.ssm_rule = ssm
        self.gate_rule = gate
        self.fused_node = fused
        self.layout = layout
        self.delta_rule = delta
        self.conv_gate_rule = conv_gate

    def without(self, names: Iterable[str]) -> MambaLRPRule:
        r"""
        A copy with the named components switched off (see :meth:`MambaLRPRule.without`); ``"ssm"``
        also switches off ``"delta"``: the gated delta rule is a Gated DeltaNet's SSM rule (a linear
        recurrence whose input-dependent coefficients are held constant); ``"gate"`` also switches
        off ``"conv_gate"``: a gated short convolution's gates are its multiplicative gates.
        """
        names = set(names)
        if "ssm" in names:
            names.add("delta")
        if "gate" in names:
            names.add("conv_gate")
        return super().without(names)

    def with_layout(self, layout: MixerLayout) -> MixerRule:
        """A copy of this rule bound to ``layout`` (the component rules are shared)."""
        return MixerRule(
            self.silu_rule,
            self.ssm_rule,
            self.gate_rule,
            self.fused_node,
            layout,
            self.delta_rule,
            self.conv_gate_rule,
        )

    def module_forward(self, mixer: nn.Module, *args: Any, **kwargs: Any) -> Tensor:  # type: ignore[override]
        """The mixer's own call signature; the computation is the layout's mixer function."""
        if self.layout is None:
            raise TypeError(
                f"MixerRule has no layout for {type(mixer).__name__}: declare the mixer in a model family "
                "(captum_mamba.families) or pass MixerRule(layout=...)"
            )
        return self.layout.mix(mixer, self, bind_mixer_call(mixer, args, kwargs))

    # --- the rule operations -------------------------------------------------------------------

    def silu(self, mixer: nn.Module, x: Tensor, site: str) -> Tensor:
        return F.silu(x) if self.silu_rule is None else self.silu_rule.apply(x)

    def gate(self, mixer: nn.Module, y: Tensor, gate: Tensor) -> Tensor:
        return y * gate if self.gate_rule is None else self.gate_rule.apply(y, gate)

    def conv(self, mixer: nn.Module, x: Tensor, cache: Any) -> Tensor:
        return causal_conv(mixer, x, cache)

    def activated_conv(self, mixer: nn.Module, x: Tensor, cache: Any) -> Tensor:
        r"""
        ``silu(conv(x))`` under the SiLU rule; with the default rule, a frozen convolution without
        hooks and no cache to fill, as one step that keeps only ``x`` (a view of the input
        projection) and recomputes the convolution in the backward pass, instead of keeping its
        output: a channel-sized activation less per layer.
        """
        conv = mixer.conv1d
        if (
            type(self.silu_rule) is SiLUIdentityRule
            and not (cache is not None and hasattr(cache, "update_conv_state"))
            and not (conv._forward_hooks or conv._forward_pre_hooks)
            and not any(p.requires_grad for p in conv.parameters())
        ):
            convolve = carrying_options(functools.partial(causal_conv, mixer, cache=None))  # run again in the backward
            return self.silu_rule.apply_recomputed(convolve, x)
        return super().activated_conv(mixer, x, cache)

    def scan(
        self, mixer: nn.Module, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        scan = plain_selective_ssm if self.ssm_rule is None else self.ssm_rule.apply
        return scan(u, delta, A, B, C, D, return_last_state=True)  # type: ignore[return-value]

    def scan_heads(
        self,
        mixer: nn.Module,
        x: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor]:
        if self.ssm_rule is None:
            return plain_scan_heads(x, delta, A, B, C, D)
        return self.ssm_rule.apply_heads(x, delta, A, B, C, D, chunk_size=chunk_size)

    def gated_delta(
        self, mixer: nn.Module, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float
    ) -> tuple[Tensor, Tensor]:
        if self.delta_rule is None:
            return plain_gated_delta(q, k, v, g, beta, scale)
        return self.delta_rule.apply(q, k, v, g, beta, scale)

    def conv_gate(self, mixer: nn.Module, gate: Tensor, x: Tensor, site: str) -> Tensor:
        return gate * x if self.conv_gate_rule is None else self.conv_gate_rule.apply(gate, x)

    def gated_norm(self, mixer: nn.Module, norm: nn.Module, y: Tensor, gate: Tensor) -> Tensor:
        return norm(y, gate)  # the norm module's own rule (GatedRMSNormRule) applies

    def fused(self, mixer: nn.Module, call: MixerCall, layout: Any) -> Tensor | None:
        if not self._fuses(mixer, call, layout):
            return None
        rank, state = layout.sizes(mixer)
        if isinstance(layout, BidirectionalMamba1Layout):
            return fused_bidirectional_mixer(mixer, call.hidden_states, rank, state)
        normalise = None
        if type(layout).normalise_selection is not Mamba1Layout.normalise_selection:  # FalconMamba's dt/B/C norms
            normalise = functools.partial(layout.normalise_selection, mixer)
        return fused_mixer(mixer, call.hidden_states, rank, state, normalise)

    def _fuses(self, mixer: nn.Module, call: MixerCall, layout: Any) -> bool:
        """Whether the fused node computes exactly this rule: the default components, no mask or cache."""
        hidden = call.hidden_states
        return (
            self.fused_node
            and type(layout).selection is Mamba1Layout.selection
            and call.attention_mask is None
            and call.cache is None
            and type(self.silu_rule) is SiLUIdentityRule
            and type(self.gate_rule) is GateHalfRule
            and type(self.ssm_rule) is SelectiveSSMRule
            and getattr(mixer.x_proj, "bias", None) is None
            and self.ssm_rule._use_cuda(hidden)
            and use_kernel(hidden, load_causal_conv1d_fn, current_options().backend)
            and (
                bidirectional_fusable(mixer, hidden)
                if isinstance(layout, BidirectionalMamba1Layout)
                else fusable(mixer, hidden)
            )
        )

    def __repr__(self) -> str:
        components = [
            ("silu", self.silu_rule),
            ("ssm", self.ssm_rule),
            ("gate", self.gate_rule),
            ("delta", self.delta_rule),
        ]
        kind = getattr(self.layout, "kind", None)
        if kind == "gated_conv":  # a gated short convolution uses its gates' rule only
            components = [("conv_gate", self.conv_gate_rule)]
        elif kind is not None:  # the components the layout's mixer uses: the delta rule or the selective scan's
            components = [c for c in components if c[0] != ("ssm" if kind == "gated_delta" else "delta")]
        off = [name for name, rule in components if rule is None]
        layout = "" if self.layout is None else f"{type(self.layout).__name__}, "
        mode = f", gates {self.conv_gate_rule.mode!r}" if kind == "gated_conv" and self.conv_gate_rule else ""
        return f"MixerRule({layout}{'without ' + '/'.join(off) if off else 'all rules'}{mode})"


def causal_conv(mixer: nn.Module, x: Tensor, cache: Any) -> Tensor:
    r"""
    The mixer's depthwise causal ``conv1d`` on ``x`` ``(batch, length, channels)``, through the
    module (so a rule or a hook set on it applies), causal-conv1d's kernel, or on the CPU
    without either, the same convolution in time-major layout
    (:func:`~captum_mamba.kernels.causal_conv.time_major_causal_conv`); a prefill cache is
    filled as the Hugging Face mixers do.

    Returns:
        *Tensor* ``(batch, length, channels)`` before the activation.
    """
    length = x.shape[1]
    conv = mixer.conv1d
    prefill = cache is not None and hasattr(cache, "update_conv_state")
    if not prefill and x.device.type == "cpu" and time_major_conv_applies(conv, x):
        # the same convolution in the mixer's (batch, length, channels) layout: no transposes, and
        # the SiLU and the scan after it read contiguous rows forward and backward
        return time_major_causal_conv(conv, x)
    conv_input = x.transpose(1, 2)
    if prefill:
        conv_input = cache.update_conv_state(conv_input, mixer.layer_idx, conv_kernel_size=conv.kernel_size[0])
    if "forward" not in conv.__dict__ and use_kernel(conv_input, load_causal_conv1d_fn, current_options().backend):
        # The fused kernel, without its activation: the SiLU rule is applied outside.
        if conv_input.stride(1) != 1 or conv_input.stride(0) % 8 or conv_input.stride(2) % 8:
            conv_input = conv_input.contiguous()  # else the kernel reads the channel-last view directly
        causal = load_causal_conv1d_fn()(conv_input, conv.weight.squeeze(1), conv.bias, activation=None)
    else:
        causal = conv(conv_input)[..., : conv_input.shape[-1]]  # drop the right padding: causal
    return causal[..., -length:].transpose(1, 2)
