r"""The Gated DeltaNet mixer, written once against the rule operations (Qwen3-Next, Qwen3.5, OLMo hybrid, and
Kimi Delta Attention with its per-channel decay).

From the (padding-masked) input ``h``: projections give ``q``, ``k``, ``v`` (key heads for ``q``
and ``k``, value heads for ``v``), the output gate ``z``, and per value head ``b`` and ``a``;
``q|k|v`` pass a depthwise causal convolution and a SiLU; ``q`` and ``k`` are L2-normalised (and
``q`` scaled by ``key_dim ** -0.5``); ``β = σ(b)`` (twice that where negative eigenvalues are
allowed) and the log decay ``g = -exp(A_log) · softplus(a + dt_bias)``; the gated delta rule runs;
its output goes through the gated RMSNorm ``rmsnorm(o) · w · silu(z)`` per head and the output
projection.

MambaLRP's rules, through :class:`~captum_mamba.mixers.ops.MixerOps`: the SiLU after the
convolution by its identity rule (``x·[σ(x)]const``: for ``v`` this routes relevance, for ``q``
and ``k`` the rule below stops it anyway); the delta rule with ``α``, ``β``, ``k`` and ``q`` held
constant (linear in ``v``); the gated norm under its module's rule (normaliser held constant,
SiLU rule on ``z``, half rule on the gate product). The L2 norms, ``β`` and ``g`` sit on the
held-constant path. The implementations differ only in their projections
(:meth:`GatedDeltaLayout.project`) and a few names, which the layouts below read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.mixers.calls import MixerCall, check_padding, check_prefill, mask_padding
from captum_mamba.mixers.layouts import MixerLayout
from captum_mamba.mixers.ops import MixerOps

#: transformers' (and flash-linear-attention's) epsilon of the L2 norms of q and k.
L2_NORM_EPS = 1e-6


@dataclass
class GatedDeltaProjections:
    r"""
    What a Gated DeltaNet's input projections give, for ``(batch, length)`` positions.

    Args:
        qkv (Tensor): ``q|k|v`` concatenated channel-wise ``(batch, length, 2 * key_dim + value_dim)``
                    (``key_dim = key_heads * head_k_dim``), the convolution's input.
        z (Tensor): the output gate's pre-activation ``(batch, length, value_dim)``.
        b (Tensor): the writing strength's pre-activation ``(batch, length, heads)``.
        a (Tensor): the decay's pre-activation ``(batch, length, heads)`` (per key channel:
                    ``(batch, length, heads * head_k_dim)``, Kimi Delta Attention).
    """

    qkv: Tensor
    z: Tensor
    b: Tensor
    a: Tensor


def l2_normalised(x: Tensor, eps: float = L2_NORM_EPS) -> Tensor:
    """``x / sqrt(sum(x²) + eps)`` over the last dimension (on the held-constant path of the rule)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


@dataclass(frozen=True)
class GatedDeltaSizes:
    r"""
    The head sizes of a gated-delta-rule mixer, whatever its implementation calls them.

    Args:
        key_heads (int): heads of ``q`` and ``k``.
        heads (int): heads of ``v`` (each key head serves ``heads // key_heads`` of them).
        key_dim (int): channels per key head.
        value_dim (int): channels per value head.
    """

    key_heads: int
    heads: int
    key_dim: int
    value_dim: int


class GatedDeltaLayout(MixerLayout):
    r"""
    A Gated DeltaNet mixer (see the module docstring), with transformers' attribute names for
    the sizes (``num_k_heads``, ``num_v_heads``, ``head_k_dim``, ``head_v_dim``), the
    convolution (``conv1d``), the decay (``A_log``, ``dt_bias``), the gated norm (:attr:`norm_name`)
    and the output projection (:attr:`out_name`). Subclasses implement :meth:`project`; mixers
    with other sizes or decays (Kimi Delta Attention) override :meth:`sizes` and :meth:`decay`.
    """

    kind = "gated_delta"
    #: The gated RMSNorm's and the output projection's attribute names.
    norm_name: ClassVar[str] = "norm"
    out_name: ClassVar[str] = "out_proj"

    def sizes(self, mixer: nn.Module) -> GatedDeltaSizes:
        """The mixer's head sizes."""
        return GatedDeltaSizes(mixer.num_k_heads, mixer.num_v_heads, mixer.head_k_dim, mixer.head_v_dim)

    def project(self, mixer: nn.Module, hidden: Tensor) -> GatedDeltaProjections:
        r"""
        The input projections of the (padding-masked) input ``hidden`` ``(batch, length, hidden)``.

        Returns:
            *GatedDeltaProjections*.
        """
        raise NotImplementedError

    def input_projection(self, mixer: nn.Module) -> nn.Module | None:
        """The projection of the input to ``q|k|v``: left padding is exact without its bias (see ``check_padding``)."""
        return None

    def beta(self, mixer: nn.Module, b: Tensor) -> Tensor:
        """The writing strength ``σ(b)`` (OLMo hybrid: doubled, allowing negative eigenvalues)."""
        return torch.sigmoid(b)

    def decay(self, mixer: nn.Module, a: Tensor, dtype: torch.dtype) -> Tensor:
        r"""
        The log decay ``g = -exp(A_log) · softplus(a + dt_bias)`` in ``dtype`` (on the held-constant path).

        Args:
            mixer (nn.Module): the mixer.
            a (Tensor): the decay's pre-activation ``(batch, length, heads)``.
            dtype (torch.dtype): the dtype of the held-constant path (at least float32).

        Returns:
            *Tensor* ``(batch, length, heads)`` (one decay per head), or ``(batch, length, heads,
            key_dim)`` (one per key channel).
        """
        return -torch.exp(mixer.A_log.to(dtype)) * F.softplus(a.to(dtype) + mixer.dt_bias.to(dtype))

    def mix(self, mixer: nn.Module, ops: MixerOps, call: MixerCall) -> Tensor:
        self.check(mixer)
        hidden, mask, cache = call.hidden_states, call.attention_mask, call.cache
        batch, length, _ = hidden.shape
        dtype = hidden.dtype
        sizes = self.sizes(mixer)
        check_prefill(cache, self.layer_index(mixer))
        check_padding(mask, self.input_projection(mixer))
        # the models zero padded positions at the input only (the convolution of a right-padded
        # row's real tokens sees no padding; left padding sees zeros, as after a masked input)
        p = self.project(mixer, mask_padding(hidden, mask))
        key_width = sizes.key_heads * sizes.key_dim
        mixed = ops.activated_conv(mixer, p.qkv, cache)
        q, k, v = torch.split(mixed, [key_width, key_width, sizes.heads * sizes.value_dim], dim=-1)
        # the held-constant path in at least float32, as the models compute it (never narrowing float64);
        # v stays in the model's dtype: the PyTorch kernel widens it, fla's takes half precision as it is
        wide = torch.promote_types(dtype, torch.float32)
        q = l2_normalised(q.reshape(batch, length, sizes.key_heads, sizes.key_dim).to(wide))
        k = l2_normalised(k.reshape(batch, length, sizes.key_heads, sizes.key_dim).to(wide))
        v = v.reshape(batch, length, sizes.heads, sizes.value_dim)
        beta = self.beta(mixer, p.b).to(wide)
        g = self.decay(mixer, p.a, wide)
        out, last_state = ops.gated_delta(mixer, q, k, v, g, beta, sizes.key_dim**-0.5)
        if cache is not None and hasattr(cache, "update_recurrent_state"):
            cache.update_recurrent_state(last_state, self.layer_index(mixer))
        # the gated norm per head: rmsnorm(o) · w · act(z), through the norm module's own rule
        out = out.to(dtype).reshape(-1, sizes.value_dim)
        z = p.z.reshape(-1, sizes.value_dim)
        normed = ops.gated_norm(mixer, getattr(mixer, self.norm_name), out, z)
        return getattr(mixer, self.out_name)(normed.reshape(batch, length, -1).to(dtype))


class Qwen3NextGatedDeltaLayout(GatedDeltaLayout):
    r"""
    Qwen3-Next's Gated DeltaNet: two fused projections whose outputs are grouped per key head,
    ``in_proj_qkvz`` → ``[q | k | v… | z…]`` and ``in_proj_ba`` → ``[b… | a…]`` for each key head
    (``…``: the value heads it serves). The regrouping is a permutation of channels (linear).
    """

    def input_projection(self, mixer: nn.Module) -> nn.Module:
        return mixer.in_proj_qkvz

    def project(self, mixer: nn.Module, hidden: Tensor) -> GatedDeltaProjections:
        batch, length, _ = hidden.shape
        key_heads, per_key = mixer.num_k_heads, mixer.num_v_heads // mixer.num_k_heads
        dk, dv = mixer.head_k_dim, mixer.head_v_dim
        qkvz = mixer.in_proj_qkvz(hidden).reshape(batch, length, key_heads, 2 * dk + 2 * per_key * dv)
        q, k, v, z = torch.split(qkvz, [dk, dk, per_key * dv, per_key * dv], dim=-1)
        ba = mixer.in_proj_ba(hidden).reshape(batch, length, key_heads, 2 * per_key)
        b, a = torch.split(ba, [per_key, per_key], dim=-1)

        def flat(x: Tensor) -> Tensor:  # (batch, length, key heads, per key head) -> channels, heads in order
            return x.reshape(batch, length, -1)

        return GatedDeltaProjections(torch.cat([flat(q), flat(k), flat(v)], dim=-1), flat(z), flat(b), flat(a))


class SplitGatedDeltaLayout(GatedDeltaLayout):
    r"""
    Qwen3.5's (and Qwen3.5-MoE's) Gated DeltaNet: separate projections ``in_proj_qkv`` (``q|k|v``),
    ``in_proj_z``, ``in_proj_b`` and ``in_proj_a``.
    """

    def input_projection(self, mixer: nn.Module) -> nn.Module:
        return mixer.in_proj_qkv

    def project(self, mixer: nn.Module, hidden: Tensor) -> GatedDeltaProjections:
        return GatedDeltaProjections(
            mixer.in_proj_qkv(hidden), mixer.in_proj_z(hidden), mixer.in_proj_b(hidden), mixer.in_proj_a(hidden)
        )


class OlmoHybridGatedDeltaLayout(GatedDeltaLayout):
    r"""
    OLMo hybrid's Gated DeltaNet: one projection each (``q_proj``, ``k_proj``, ``v_proj``, the gate
    ``g_proj``, ``b_proj``, ``a_proj``), the gated norm ``o_norm``, the output projection ``o_proj``,
    and ``β = 2σ(b)`` when ``allow_neg_eigval`` (the state's transition ``I - β k kᵀ`` may then
    reflect; held constant like any ``β``).
    """

    norm_name = "o_norm"
    out_name = "o_proj"

    def input_projection(self, mixer: nn.Module) -> nn.Module:
        return mixer.q_proj

    def project(self, mixer: nn.Module, hidden: Tensor) -> GatedDeltaProjections:
        qkv = torch.cat([mixer.q_proj(hidden), mixer.k_proj(hidden), mixer.v_proj(hidden)], dim=-1)
        return GatedDeltaProjections(qkv, mixer.g_proj(hidden), mixer.b_proj(hidden), mixer.a_proj(hidden))

    def beta(self, mixer: nn.Module, b: Tensor) -> Tensor:
        beta = torch.sigmoid(b)
        return beta * 2.0 if getattr(mixer, "allow_neg_eigval", False) else beta


class KimiDeltaLayout(GatedDeltaLayout):
    r"""
    Kimi Delta Attention (Kimi Linear's linear-attention layer): the gated delta rule with one
    decay per **key channel**, ``S_t = (I - β_t k_t k_tᵀ) Diag(α_t) S_{t-1} + β_t k_t v_tᵀ``,
    ``α_t ∈ (0, 1]^{key_dim}``, ``o_t = S_tᵀ q_t``.

    As many query/key heads as value heads (``num_heads`` of ``head_dim``); ``q_proj``, ``k_proj``,
    ``v_proj`` feed the short convolution and its SiLU; ``β = σ(b_proj(h))`` per head; the forget
    gate (``forget_gate``: a low-rank ``f_b_proj(f_a_proj(h))``, ``dt_bias`` and a per-head
    ``A_log``) gives ``g = -exp(A_log) · softplus(f + dt_bias)`` per channel, read here from its
    parameters (on the held-constant path, it carries no relevance); the output gate
    ``g_b_proj(g_a_proj(h))`` enters the gated norm ``o_norm``, ``rmsnorm(o) · w · σ(gate)`` (a
    sigmoid, not a SiLU: :class:`~captum_mamba.rules.GatedRMSNormRule` reads the module's
    ``activation``), and ``o_proj`` projects. The rule is the gated delta rule's (``α``, ``β``,
    ``k``, ``q`` held constant) with the per-channel chunk operators of
    :mod:`captum_mamba.kernels.gated_delta`.
    """

    norm_name = "o_norm"
    out_name = "o_proj"

    def sizes(self, mixer: nn.Module) -> GatedDeltaSizes:
        return GatedDeltaSizes(mixer.num_heads, mixer.num_heads, mixer.head_dim, mixer.head_dim)

    def input_projection(self, mixer: nn.Module) -> nn.Module:
        return mixer.q_proj

    def project(self, mixer: nn.Module, hidden: Tensor) -> GatedDeltaProjections:
        qkv = torch.cat([mixer.q_proj(hidden), mixer.k_proj(hidden), mixer.v_proj(hidden)], dim=-1)
        gate = mixer.g_b_proj(mixer.g_a_proj(hidden))
        forget = mixer.forget_gate
        return GatedDeltaProjections(qkv, gate, mixer.b_proj(hidden), forget.f_b_proj(forget.f_a_proj(hidden)))

    def decay(self, mixer: nn.Module, a: Tensor, dtype: torch.dtype) -> Tensor:
        # per key channel: a is (batch, length, heads * head_dim), A_log one rate per head
        forget = mixer.forget_gate
        a = (a.to(dtype) + forget.dt_bias.to(dtype)).reshape(*a.shape[:2], mixer.num_heads, mixer.head_dim)
        return -torch.exp(forget.A_log.to(dtype).reshape(mixer.num_heads, 1)) * F.softplus(a)
