"""Restructuring of a declared model family's modules into canonical leaves.

Everything here is derived from the family declarations (:mod:`captum_mamba.families`): a
declared mixer is given leaves for its rule operations and runs its layout's mixer function on
them (the same function MambaLRP runs with functional rules); a declared residual block keeps
its own forward, and hooks give its residual stream an explicit fan-out and add; RMSNorms,
linear layers and the token embedding are replaced by leaves sharing their parameters. Each
edit goes through a :class:`ModelEdits` log and is undone on exit.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor, nn

from captum_mamba.canonizers.edits import ModelEdits
from captum_mamba.canonizers.leaf_modules import (
    CausalDepthwiseConv,
    FanOut,
    GateProduct,
    HeldConstant,
    LinearLeaf,
    ResidualAdd,
    RMSNormLeaf,
    SelectiveSSMCore,
    SiLULeaf,
    TokenEmbedding,
)
from captum_mamba.canonizers.leaf_rules import BlockRelevance
from captum_mamba.mixers.calls import bind_mixer_call
from captum_mamba.mixers.layouts import Mamba2Layout, MixerLayout
from captum_mamba.mixers.ops import MixerOps


class LeafOps(MixerOps):
    r"""
    The rule operations on a canonized mixer's leaves: ``act`` and ``gate_act`` (SiLU leaves),
    ``conv1d`` (causal depthwise conv leaf), ``ssm`` (SSM core leaf), ``gate`` (gate product
    leaf) and, for Mamba-2, ``norm`` (RMSNorm leaf after the gate product).
    """

    def silu(self, mixer: nn.Module, x: Tensor, site: str) -> Tensor:
        return mixer.act(x) if site == "conv" else mixer.gate_act(x)

    def gate(self, mixer: nn.Module, y: Tensor, gate: Tensor) -> Tensor:
        return mixer.gate(y, gate)

    def conv(self, mixer: nn.Module, x: Tensor, cache: Any) -> Tensor:
        if cache is not None and hasattr(cache, "update_conv_state"):
            cache.update_conv_state(
                x.detach().transpose(1, 2), mixer.layer_idx, conv_kernel_size=mixer.conv1d.weight.shape[-1]
            )
        return mixer.conv1d(x)

    def scan(
        self, mixer: nn.Module, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        y = mixer.ssm(u, delta=delta, A=A, B=B, C=C, D=D)
        return y, mixer.ssm.last_state

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
        batch, length, heads, head_dim = x.shape
        flat = x.reshape(batch, length, heads * head_dim)  # the leaf sees (batch, length, channels)
        y = mixer.ssm(flat, delta=delta, A=A, B=B, C=C, D=D, head_dim=head_dim, chunk_size=chunk_size)
        return y.reshape(x.shape), mixer.ssm.last_state

    def gated_norm(self, mixer: nn.Module, norm: nn.Module, y: Tensor, gate: Tensor) -> Tensor:
        return norm(mixer.gate(y, mixer.gate_act(gate.to(y.dtype))))


LEAF_OPS = LeafOps()


def _canonical_mixer_forward(mixer: nn.Module, layout: MixerLayout, *args: Any, **kwargs: Any) -> Tensor:
    return layout.mix(mixer, LEAF_OPS, bind_mixer_call(mixer, args, kwargs))


def canonize_mixer(mixer: nn.Module, layout: MixerLayout, edits: ModelEdits) -> None:
    r"""
    A declared mixer: ``in_proj`` / ``out_proj`` become linear leaves, ``conv1d`` the causal
    depthwise conv leaf, ``act`` and ``gate_act`` (new) SiLU leaves, ``ssm`` (new) the SSM core
    leaf, ``gate`` (new) the gate product leaf, the layout's held-constant modules (``x_proj``,
    ``dt_proj``, FalconMamba's norms on ``dt``, ``B``, ``C``) held-constant leaves, and a
    Mamba-2 gated norm the RMSNorm leaf after the gate product. The forward is the layout's
    mixer function on :class:`LeafOps`.
    """
    layout.check(mixer)
    edits.replace_child(mixer, "in_proj", LinearLeaf(mixer.in_proj))
    edits.replace_child(mixer, "conv1d", CausalDepthwiseConv(mixer.conv1d))
    if "act" in mixer._modules:
        edits.replace_child(mixer, "act", SiLULeaf())
    else:
        edits.add_child(mixer, "act", SiLULeaf())
    for name in layout.held_constant:
        if name in mixer._modules:
            edits.replace_child(mixer, name, HeldConstant(mixer._modules[name]))
    edits.add_child(mixer, "gate_act", SiLULeaf())
    edits.add_child(mixer, "ssm", SelectiveSSMCore())
    edits.add_child(mixer, "gate", GateProduct())
    if isinstance(layout, Mamba2Layout) and layout.norm(mixer) is not None:
        edits.replace_child(mixer, "norm", RMSNormLeaf(mixer.norm))
    edits.replace_child(mixer, "out_proj", LinearLeaf(mixer.out_proj))
    edits.patch_forward(mixer, functools.partial(_canonical_mixer_forward, mixer, layout))


def canonize_block(block: nn.Module, edits: ModelEdits, mixer_name: str = "mixer") -> None:
    r"""
    A residual block ``x + mixer(norm(x))``, whose own forward keeps running: a pre-hook sends the
    input through ``fan_out`` (new; one copy for the norm, one for the residual), a hook on the
    mixer keeps its output, and a hook on the block returns ``residual_add`` (new) of the
    residual copy and the mixer's output in place of the block's own sum (same value).
    ``block.rule`` lets ``LayerLRP(model, block)`` read the block's relevance.
    """
    edits.add_child(block, "fan_out", FanOut(copies=2))
    edits.add_child(block, "residual_add", ResidualAdd())
    edits.set_attribute(block, "rule", BlockRelevance(block.fan_out, block.residual_add))
    pending: dict[str, Tensor] = {}

    def split_stream(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            hidden, args = args[0], args[1:]
        else:
            hidden = kwargs.pop("hidden_states")
        copies = module.fan_out(hidden)
        pending["residual"] = copies[:, 1]
        return (copies[:, 0], *args), kwargs

    def keep_update(module: nn.Module, args: Any, output: Tensor) -> None:
        pending["update"] = output

    def add_explicitly(module: nn.Module, args: Any, kwargs: Any, output: Tensor) -> Tensor:
        residual, update = pending.pop("residual"), pending.pop("update")
        return module.residual_add(residual.to(output.dtype), update)

    edits.add_hook(block.register_forward_pre_hook(split_stream, with_kwargs=True))
    edits.add_hook(getattr(block, mixer_name).register_forward_hook(keep_update))
    edits.add_hook(block.register_forward_hook(add_explicitly, with_kwargs=True))


def leaf_for(module: nn.Module, rms_norm_types: tuple[type[nn.Module], ...]) -> nn.Module | None:
    """The leaf standing in for a linear layer, an embedding or a declared RMSNorm (else ``None``)."""
    if type(module) is nn.Linear:
        return LinearLeaf(module)
    if type(module) is nn.Embedding:
        return TokenEmbedding(module)
    if isinstance(module, rms_norm_types):
        return RMSNormLeaf(module)
    return None
