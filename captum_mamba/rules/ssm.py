"""Selective SSM rule (MambaLRP, Eqs. 6-7): ``delta``, ``A``-bar, ``B``-bar and ``C`` held constant."""

from __future__ import annotations

from torch import Tensor

from captum_mamba.kernels.selective_scan import differentiable_selective_scan, linear_selective_scan
from captum_mamba.rules.base import MambaLRPRule


class SelectiveSSMRule(MambaLRPRule):
    r"""
    Relevance flows through the selective SSM only along its input ``u`` (and the ``D`` skip).

    The input-dependent step ``delta`` (after ``dt_proj``, bias and softplus) and the
    input-dependent ``B``, ``C`` are detached, as is ``A``, so the scan becomes a linear map of
    ``u``; the state starts at zero. The scan is linear-time (see
    :func:`captum_mamba.kernels.selective_scan.linear_selective_scan`).

    Args:
        chunk (int, optional): time steps per chunk of the CPU scan. Default: 128
    """

    def __init__(self, chunk: int = 128) -> None:
        self.chunk = chunk

    def apply(
        self,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None = None,
        return_last_state: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""
        Args:
            u (Tensor): scan input ``(batch, length, channels)``; carries relevance.
            delta (Tensor): step sizes ``(batch, length, channels)``; detached.
            A (Tensor): ``(channels, state)``; detached.
            B (Tensor): ``(batch, length, state)``; detached.
            C (Tensor): ``(batch, length, state)``; detached.
            D (Tensor, optional): skip weights ``(channels,)``: ``y += D * u``.
            return_last_state (bool, optional): also return the final state.

        Returns:
            *Tensor* ``y`` ``(batch, length, channels)`` and optionally the last state.
        """
        y, last = linear_selective_scan(u, delta, A, B, C, self.chunk, return_last_state=True)
        if D is not None:
            y = y + u * D
        return (y, last) if return_last_state else y


def plain_selective_ssm(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The SSM with gradients to every input: the computation when the SSM rule is switched off."""
    y, last = differentiable_selective_scan(u, delta, A, B, C, return_last_state=True)
    if D is not None:
        y = y + u * D
    return (y, last) if return_last_state else y
