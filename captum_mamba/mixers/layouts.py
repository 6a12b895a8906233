"""The two mixer kinds, each written once: Mamba-1 (selective scan) and Mamba-2 (SSD).

A layout reads an implementation's sizes and sub-modules (Hugging Face and mamba-ssm name them
differently) and computes the mixer with a :class:`~captum_mamba.mixers.ops.MixerOps`. The same
:meth:`MixerLayout.mix` serves MambaLRP (functional rules) and ``canonize`` (leaf modules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.mixers.calls import MixerCall, check_padding, check_prefill, mask_padding
from captum_mamba.mixers.ops import MixerOps

_SILU_NAMES = ("silu", "swish")


class MixerLayout:
    r"""
    Where a mixer implementation keeps what the mixer function needs, and the function itself.

    Subclasses set :attr:`kind` and implement :meth:`mix`; implementations with other attribute
    names override the small accessors.
    """

    #: ``"mamba1"`` or ``"mamba2"``: which canonical leaves the canonizer builds.
    kind: ClassVar[str] = ""
    #: Sub-modules on the held-constant path of the SSM rule (they carry no relevance).
    held_constant: ClassVar[tuple[str, ...]] = ()

    def layer_index(self, mixer: nn.Module) -> int | None:
        """The mixer's index in the model's cache."""
        return getattr(mixer, "layer_idx", None)

    def activation(self, mixer: nn.Module) -> str:
        """The name of the mixer's activation (only SiLU is supported)."""
        return getattr(mixer, "activation", "silu")

    def check(self, mixer: nn.Module) -> None:
        r"""
        Raises:
            ValueError: for mixers the rules do not cover (an activation other than SiLU).
        """
        if self.activation(mixer) not in _SILU_NAMES:
            raise ValueError(
                f"MambaLRP supports SiLU mixers only; {type(mixer).__name__} uses {self.activation(mixer)!r}"
            )

    def mix(self, mixer: nn.Module, ops: MixerOps, call: MixerCall) -> Tensor:
        r"""
        The mixer's output for ``call``, with ``ops`` applying the rules.

        Returns:
            *Tensor* ``(batch, length, hidden)`` in the input's dtype.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Mamba1Layout(MixerLayout):
    r"""
    A Mamba-1 mixer: ``out_proj(gate(SSM(silu(conv(x))), silu(z)))`` with ``x, z = in_proj(h)``
    and the selection ``dt, B, C = x_proj(u)``, ``delta = softplus(dt_proj(dt))``.

    MambaLRP (Rezaei Jafari et al., 2024): the SiLUs keep their sigmoid constant (Eq. 4), the
    scan holds ``delta``, ``A``, ``B``, ``C`` constant so it is linear in ``u`` (Eqs. 6-7), the
    gate splits relevance evenly (Eq. 9). ``x_proj``, ``dt_proj`` (and any norm on the
    selection) sit on the held-constant path. Hugging Face attribute names
    (``time_step_rank``, ``ssm_state_size``).
    """

    kind = "mamba1"
    held_constant = ("x_proj", "dt_proj")

    def sizes(self, mixer: nn.Module) -> tuple[int, int]:
        """The rank of ``dt`` and the state size."""
        return mixer.time_step_rank, mixer.ssm_state_size

    def selection(self, mixer: nn.Module, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The input-dependent ``dt`` (before ``dt_proj``), ``B`` and ``C``."""
        rank, state = self.sizes(mixer)
        dt, B, C = torch.split(mixer.x_proj(u), [rank, state, state], dim=-1)
        return self.normalise_selection(mixer, dt, B, C)

    def normalise_selection(self, mixer: nn.Module, dt: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Any normalisation of ``x_proj``'s outputs ``(..., features)`` (none here; held constant where there is)."""
        return dt, B, C

    def mix(self, mixer: nn.Module, ops: MixerOps, call: MixerCall) -> Tensor:
        self.check(mixer)
        fused = ops.fused(mixer, call, self)
        if fused is not None:
            return fused
        hidden, mask, cache = call.hidden_states, call.attention_mask, call.cache
        dtype = hidden.dtype
        check_prefill(cache, self.layer_index(mixer))
        check_padding(mask, mixer.in_proj)
        x, z = mixer.in_proj(mask_padding(hidden, mask)).chunk(2, dim=-1)
        return mixer.out_proj(self.scan_direction(mixer, ops, x, z, mask, cache).to(dtype))

    def scan_direction(
        self, mixer: Any, ops: MixerOps, x: Tensor, z: Tensor, mask: Tensor | None = None, cache: Any = None
    ) -> Tensor:
        r"""
        ``gate(SSM(silu(conv(x))), silu(z))``: the mixer between its two projections.

        Args:
            mixer (nn.Module): the mixer (or a view of one of its scan directions).
            ops (MixerOps): the rule operations.
            x (Tensor): the SSM half of ``in_proj``'s output ``(batch, length, inner)``.
            z (Tensor): the gate half, same shape.
            mask (Tensor, optional): the padding mask.
            cache (Any, optional): a prefill cache.

        Returns:
            *Tensor* ``(batch, length, inner)``, before ``out_proj``.
        """
        u = mask_padding(ops.activated_conv(mixer, x, cache), mask)
        dt, B, C = self.selection(mixer, u)
        # The model's own precision for its SSM parameters (float32, also in half-precision
        # models), channel-major: the layout the CUDA scan takes without a copy.
        bias = mixer.dt_proj.bias
        delta = mixer.dt_proj.weight @ dt.transpose(1, 2)
        if bias is not None:
            delta = delta + bias.float()[:, None]
        delta = F.softplus(delta).transpose(1, 2)
        A = -torch.exp(mixer.A_log.float())
        y, last_state = ops.scan(mixer, u, delta, A, B, C, mixer.D.float())
        if cache is not None and hasattr(cache, "update_recurrent_state"):
            cache.update_recurrent_state(last_state.to(x.dtype), self.layer_index(mixer))
        return ops.gate(mixer, y, ops.silu(mixer, z, "gate"))


class MixerView:
    r"""
    A mixer seen with some attributes renamed, so that code written against one implementation's
    names reads another's: one scan direction of a bidirectional mixer (its own modules by the
    forward direction's names), or LFM2's ``conv`` read as ``conv1d``.

    Args:
        mixer (nn.Module): the mixer.
        names (Mapping): ``{name read: attribute of the mixer}``; other names read the mixer's own.
    """

    def __init__(self, mixer: nn.Module, names: Mapping[str, str]) -> None:
        self._mixer = mixer
        self._names = names

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mixer, self._names.get(name, name))


class BidirectionalMamba1Layout(Mamba1Layout):
    r"""
    Vision Mamba's bidirectional Mamba-1 mixer (hustvl/Vim, ``bimamba_type="v2"``): one
    ``in_proj``, a forward scan and a scan over the reversed sequence with its own ``conv1d_b``,
    ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``, their gated outputs summed (halved with
    ``if_divide_out``), then ``out_proj`` (and the optional layer scale ``gamma``).

    Each direction is :meth:`Mamba1Layout.scan_direction` with the MambaLRP rules; the flips,
    the sum and the halving are linear and pass relevance as they are (LRP-0), so relevance
    from both directions meets at ``in_proj``'s output. mamba-ssm attribute names
    (``dt_rank``, ``d_state``).
    """

    kind = "bimamba1"
    held_constant = ("x_proj", "dt_proj", "x_proj_b", "dt_proj_b")
    #: The backward direction's names for the forward direction's modules and parameters.
    backward_names: ClassVar[dict[str, str]] = {
        "conv1d": "conv1d_b",
        "x_proj": "x_proj_b",
        "dt_proj": "dt_proj_b",
        "A_log": "A_b_log",
        "D": "D_b",
    }

    def sizes(self, mixer: nn.Module) -> tuple[int, int]:
        return mixer.dt_rank, mixer.d_state

    def backward(self, mixer: nn.Module) -> Any:
        r"""
        The backward scan direction of ``mixer`` as a mixer-like view.

        Args:
            mixer (nn.Module): the bidirectional mixer.

        Returns:
            A view whose ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log`` and ``D`` are the backward
            direction's (``conv1d_b``, ...); every other attribute is the mixer's own. It runs on
            the reversed sequence.
        """
        return MixerView(mixer, self.backward_names)

    def mix(self, mixer: nn.Module, ops: MixerOps, call: MixerCall) -> Tensor:
        self.check(mixer)
        hidden = call.hidden_states
        if call.attention_mask is not None or call.cache is not None:
            raise ValueError("a bidirectional Vim mixer explains whole sequences: pass no attention mask or cache")
        out = ops.fused(mixer, call, self)  # both directions as one node on the CUDA kernels
        if out is None:
            x, z = mixer.in_proj(hidden).chunk(2, dim=-1)
            forward = self.scan_direction(mixer, ops, x, z)
            reverse = self.scan_direction(self.backward(mixer), ops, x.flip(1), z.flip(1)).flip(1)
            summed = forward + reverse
            out = mixer.out_proj((summed / 2 if mixer.if_divide_out else summed).to(hidden.dtype))
        return out * mixer.gamma if getattr(mixer, "init_layer_scale", None) is not None else out


class NormalisedSelectionLayout(Mamba1Layout):
    r"""
    FalconMamba's Mamba-1 mixer: weightless RMSNorms on ``dt``, ``B`` and ``C`` (on the
    held-constant path, so they carry no relevance).
    """

    held_constant = ("x_proj", "dt_proj", "dt_layernorm", "b_layernorm", "c_layernorm")

    def normalise_selection(self, mixer: nn.Module, dt: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return mixer.dt_layernorm(dt), mixer.b_layernorm(B), mixer.c_layernorm(C)


@dataclass(frozen=True)
class Mamba2Sizes:
    """Sizes of a Mamba-2 mixer, whatever its implementation calls them."""

    mlp: int  # width of the optional gated-MLP part of in_proj (mamba-ssm's d_mlp; 0 in Hugging Face)
    ssm: int  # width of the SSM part (heads x head_dim)
    heads: int
    head_dim: int
    groups: int
    state: int
    time_step_limit: tuple[float, float]
    chunk_size: int


class Mamba2Layout(MixerLayout):
    r"""
    A Mamba-2 mixer: ``in_proj`` gives the gate ``z``, the ``x|B|C`` stream and ``dt``; the
    stream goes through the depthwise causal conv and a SiLU (SiLU rule); ``x`` carries
    relevance into the SSD scan while ``B``, ``C``, ``dt`` (after bias, softplus and clamp) and
    the per-head decays are held constant (SSM rule, ``D`` skip kept); the gated group norm
    ``norm(y * silu(z))`` (gate rule, SiLU rule, normaliser held constant), then ``out_proj``.
    Hugging Face attribute names.
    """

    kind = "mamba2"

    def sizes(self, mixer: nn.Module) -> Mamba2Sizes:
        """The mixer's sizes."""
        return Mamba2Sizes(
            mlp=0,
            ssm=mixer.intermediate_size,
            heads=mixer.num_heads,
            head_dim=mixer.head_dim,
            groups=mixer.n_groups,
            state=mixer.ssm_state_size,
            time_step_limit=tuple(mixer.time_step_limit),
            chunk_size=mixer.chunk_size,
        )

    def norm(self, mixer: nn.Module) -> nn.Module | None:
        """The gated norm, or ``None`` where the mixer gates without one."""
        norm = getattr(mixer, "norm", None)
        return norm if isinstance(norm, nn.Module) and getattr(mixer, "rmsnorm", True) else None

    def project(self, mixer: nn.Module, hidden: Tensor) -> Tensor:
        r"""
        ``in_proj``'s output ``(batch, length, 2 * mlp + 2 * ssm + 2 * groups * state + heads)``
        for the (padding-masked) input; implementations that scale the input or the projection
        by constants override it (a linear map: relevance passes as it is).
        """
        return mixer.in_proj(hidden)

    def mix(self, mixer: nn.Module, ops: MixerOps, call: MixerCall) -> Tensor:
        self.check(mixer)
        hidden, mask, cache = call.hidden_states, call.attention_mask, call.cache
        batch, length, _ = hidden.shape
        dtype = hidden.dtype
        sizes = self.sizes(mixer)
        check_prefill(cache, self.layer_index(mixer))
        check_padding(mask, mixer.in_proj)
        projected = self.project(mixer, mask_padding(hidden, mask))
        state_width = sizes.groups * sizes.state
        z0, x0, gate, xBC, dt = projected.split(
            [sizes.mlp, sizes.mlp, sizes.ssm, sizes.ssm + 2 * state_width, sizes.heads], dim=-1
        )
        xBC = mask_padding(ops.activated_conv(mixer, xBC, cache), mask)
        x, B, C = torch.split(xBC, [sizes.ssm, state_width, state_width], dim=-1)
        low, high = sizes.time_step_limit
        delta = torch.clamp(F.softplus(dt + mixer.dt_bias.to(dt.dtype)), min=low, max=high)
        A = -torch.exp(mixer.A_log.float())
        y, last_state = ops.scan_heads(
            mixer,
            x.reshape(batch, length, sizes.heads, sizes.head_dim),
            delta,
            A,
            B.reshape(batch, length, sizes.groups, sizes.state),
            C.reshape(batch, length, sizes.groups, sizes.state),
            mixer.D.float(),
            sizes.chunk_size,
        )
        y = y.reshape(batch, length, sizes.ssm)
        if cache is not None and hasattr(cache, "update_recurrent_state"):
            cache.update_recurrent_state(last_state.to(dtype), self.layer_index(mixer))
        norm = self.norm(mixer)
        if norm is not None:
            y = ops.gated_norm(mixer, norm, y, gate)
        else:
            y = ops.gate(mixer, y, ops.silu(mixer, gate.to(y.dtype), "gate"))
        if sizes.mlp:
            y = torch.cat([ops.gate(mixer, x0, ops.silu(mixer, z0, "gate")), y.to(dtype)], dim=-1)
        return mixer.out_proj(y.to(dtype))
