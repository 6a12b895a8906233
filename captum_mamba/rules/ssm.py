"""Selective SSM rule (MambaLRP, Eqs. 6-7): ``delta``, ``A``-bar, ``B``-bar and ``C`` held constant."""

from __future__ import annotations

from torch import Tensor

from captum_mamba.kernels.cuda import kernels_available, load_selective_scan_fn
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
        chunk (int, optional): time steps per chunk of the PyTorch scan. Default: 128
        backend (str, optional): ``"torch"`` (the linear-time PyTorch scan), ``"cuda"``
                    (mamba-ssm's ``selective_scan_fn`` with the detached ``delta``, ``B``, ``C``;
                    needs the ``gpu`` extra) or ``"auto"`` (CUDA kernels for CUDA tensors when
                    they import, else PyTorch). Default: "auto"
    """

    BACKENDS = ("auto", "torch", "cuda")

    def __init__(self, chunk: int = 128, backend: str = "auto") -> None:
        if backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {self.BACKENDS}, got {backend!r}")
        self.chunk = chunk
        self.backend = backend
        if backend == "cuda":
            load_selective_scan_fn()

    def _use_cuda(self, u: Tensor) -> bool:
        if self.backend == "cuda":
            if not u.is_cuda:
                raise ValueError("SelectiveSSMRule(backend='cuda') needs CUDA tensors; use backend='torch' on CPU")
            return True
        return self.backend == "auto" and u.is_cuda and kernels_available()

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
        if self._use_cuda(u):
            y, last = _cuda_scan(u, delta, A, B, C)
        else:
            y, last = linear_selective_scan(u, delta, A, B, C, self.chunk, return_last_state=True)
        if D is not None:
            y = y + u * D
        return (y, last) if return_last_state else y


def _cuda_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """mamba-ssm's kernel in its (batch, channels, length) layout; only ``u`` carries gradient."""
    scan = load_selective_scan_fn()
    y, last = scan(
        u.transpose(1, 2),
        delta.detach().transpose(1, 2).contiguous(),
        A.detach().float().contiguous(),
        B.detach().transpose(1, 2).contiguous(),
        C.detach().transpose(1, 2).contiguous(),
        return_last_state=True,
    )
    return y.transpose(1, 2), last


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
