"""The rule operations a mixer function calls: what each engine supplies."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class MixerOps:
    r"""
    The operations of a Mamba (Gated DeltaNet, gated short convolution) mixer that MambaLRP rewrites. A mixer function computes
    everything else itself (projections through the mixer's own modules, splits, re-indexing,
    padding masks, dtype casts) and calls these for the non-linear or relevance-routing steps.

    Each method receives the mixer module, so that an implementation may use modules the mixer
    holds (the canonizer's leaves) or its parameters (the CUDA kernels).
    """

    def silu(self, mixer: nn.Module, x: Tensor, site: str) -> Tensor:
        r"""
        ``silu(x)``.

        Args:
            mixer (nn.Module): the mixer.
            x (Tensor): pre-activation.
            site (str): ``"conv"`` (after the causal convolution) or ``"gate"`` (the gate branch).
        """
        raise NotImplementedError

    def gate(self, mixer: nn.Module, y: Tensor, gate: Tensor) -> Tensor:
        """The multiplicative gate ``y * gate`` (both factors carry relevance)."""
        raise NotImplementedError

    def conv(self, mixer: nn.Module, x: Tensor, cache: Any) -> Tensor:
        r"""
        The mixer's depthwise causal convolution of ``x`` ``(batch, length, channels)``, before the
        activation; a prefill ``cache`` is filled with the convolution's input.

        Returns:
            *Tensor* ``(batch, length, channels)``.
        """
        raise NotImplementedError

    def activated_conv(self, mixer: nn.Module, x: Tensor, cache: Any) -> Tensor:
        r"""
        ``silu(conv(x))``: :meth:`conv`, then :meth:`silu` at the ``"conv"`` site (an engine may
        run the two as one step).
        """
        return self.silu(mixer, self.conv(mixer, x, cache), "conv")

    def scan(
        self, mixer: nn.Module, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        r"""
        The Mamba-1 selective scan ``y = SSM(u; delta, A, B, C) + D u``.

        Args:
            u (Tensor): ``(batch, length, channels)``, carries relevance.
            delta (Tensor): ``(batch, length, channels)`` (after ``dt_proj``, bias, softplus).
            A (Tensor): ``(channels, state)``.
            B (Tensor): ``(batch, length, state)``.
            C (Tensor): ``(batch, length, state)``.
            D (Tensor, optional): ``(channels,)``.

        Returns:
            *tuple* ``(y, last_state)``: ``(batch, length, channels)``, ``(batch, channels, state)``.
        """
        raise NotImplementedError

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
        r"""
        The Mamba-2 (SSD) scan with its ``D`` skip.

        Args:
            x (Tensor): ``(batch, length, heads, head_dim)``, carries relevance.
            delta (Tensor): ``(batch, length, heads)`` after bias, softplus and clamp.
            A (Tensor): ``(heads,)``.
            B (Tensor): ``(batch, length, groups, state)``.
            C (Tensor): ``(batch, length, groups, state)``.
            D (Tensor, optional): ``(heads,)`` or ``(heads * head_dim,)``.
            chunk_size (int): chunk length of the SSD kernel.

        Returns:
            *tuple* ``(y, last_state)``: ``(batch, length, heads, head_dim)``,
            ``(batch, heads, head_dim, state)``.
        """
        raise NotImplementedError

    def gated_delta(
        self, mixer: nn.Module, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float
    ) -> tuple[Tensor, Tensor]:
        r"""
        The gated delta rule ``S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ``,
        ``o_t = S_tᵀ (scale · q_t)``, ``α_t = exp(g_t)`` (Gated DeltaNet); with one decay per key
        channel ``S_t = (I - β_t k_t k_tᵀ) Diag(α_t) S_{t-1} + β_t k_t v_tᵀ`` (Kimi Delta Attention).

        Args:
            q (Tensor): L2-normalised queries ``(batch, length, key_heads, key_dim)``.
            k (Tensor): L2-normalised keys, same shape.
            v (Tensor): values ``(batch, length, heads, value_dim)``, carry relevance.
            g (Tensor): log decays ``(batch, length, heads)`` or ``(batch, length, heads, key_dim)``.
            beta (Tensor): writing strengths ``(batch, length, heads)``.
            scale (float): factor on the queries.

        Returns:
            *tuple* ``(o, last_state)``: ``(batch, length, heads, value_dim)``,
            ``(batch, heads, key_dim, value_dim)``.
        """
        raise NotImplementedError

    def conv_gate(self, mixer: nn.Module, gate: Tensor, x: Tensor, site: str) -> Tensor:
        r"""
        A gate of a gated short convolution, ``gate * x`` (LFM2's ``B ⊙ x`` before the convolution
        and ``C ⊙ conv(B ⊙ x)`` after it).

        Args:
            mixer (nn.Module): the mixer.
            gate (Tensor): ``B`` or ``C``.
            x (Tensor): the gated factor, same shape.
            site (str): ``"input"`` (``B ⊙ x``) or ``"output"`` (``C ⊙ conv(…)``).
        """
        raise NotImplementedError

    def gated_norm(self, mixer: nn.Module, norm: nn.Module, y: Tensor, gate: Tensor) -> Tensor:
        """Mamba-2's gated group norm ``norm(y * silu(gate))`` through the mixer's ``norm`` module."""
        raise NotImplementedError

    def fused(self, mixer: nn.Module, call: Any, layout: Any) -> Tensor | None:
        r"""
        The whole mixer as one fused computation when this engine has one that gives exactly the
        same result for this call (the CUDA Mamba-1 node), else ``None``.
        """
        return None
