"""Selective SSM rule (MambaLRP, Eqs. 6-7): ``delta``, ``A``-bar, ``B``-bar and ``C`` held constant."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from captum_mamba.kernels.cuda import load_chunk_scan_combined, load_selective_scan_fn, use_kernel
from captum_mamba.kernels.selective_scan import DEFAULT_CHUNK, differentiable_selective_scan, linear_selective_scan
from captum_mamba.kernels.ssd import DEFAULT_SSD_CHUNK, held_constant_ssd
from captum_mamba.kernels.ssd_cuda import held_constant_chunk_scan
from captum_mamba.options import BACKENDS, current_options
from captum_mamba.rules.base import MambaLRPRule


class SelectiveSSMRule(MambaLRPRule):
    r"""
    Relevance flows through the selective SSM only along its input ``u`` (and the ``D`` skip).

    The input-dependent step ``delta`` (after ``dt_proj``, bias and softplus) and the
    input-dependent ``B``, ``C`` are detached, as is ``A``, so the scan becomes a linear map of
    ``u``; the state starts at zero. The scans are linear-time (Mamba-1:
    :func:`captum_mamba.kernels.selective_scan.linear_selective_scan`; Mamba-2's SSD:
    :func:`captum_mamba.kernels.ssd.held_constant_ssd`).

    Args:
        chunk (int, optional): time steps per chunk of the PyTorch Mamba-1 scan. Default: 256
        backend (str, optional): ``"torch"`` (the linear-time PyTorch scan), ``"cuda"``
                    (mamba-ssm's ``selective_scan_fn`` with the detached ``delta``, ``B``, ``C``;
                    needs the ``gpu`` extra) or ``"auto"`` (CUDA kernels for CUDA tensors when
                    they import, else PyTorch). Default: "auto"
        ssd_chunk (int, optional): time steps per chunk of the PyTorch Mamba-2 (SSD) scan; any
                    value gives the same relevances (up to rounding). Default: 64
    """

    def __init__(self, chunk: int = DEFAULT_CHUNK, backend: str = "auto", ssd_chunk: int = DEFAULT_SSD_CHUNK) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.chunk = chunk
        self.backend = backend
        self.ssd_chunk = ssd_chunk
        if backend == "cuda":
            load_selective_scan_fn()

    def _use_cuda(self, u: Tensor, loader: Callable[[], Callable[..., Tensor]] = load_selective_scan_fn) -> bool:
        backend = self.backend if self.backend != "auto" else current_options().backend
        return use_kernel(u, loader, backend)

    def apply_heads(
        self,
        x: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None = None,
        chunk_size: int = 256,
    ) -> tuple[Tensor, Tensor]:
        r"""
        The rule on Mamba2's multi-head SSD layout (scalar decay per head, grouped ``B``, ``C``).

        Args:
            x (Tensor): ``(batch, length, heads, head_dim)``; carries relevance.
            delta (Tensor): ``(batch, length, heads)`` after bias, softplus and clamp; detached.
            A (Tensor): ``(heads,)``; detached.
            B (Tensor): ``(batch, length, groups, state)``; detached.
            C (Tensor): ``(batch, length, groups, state)``; detached.
            D (Tensor, optional): skip weights ``(heads,)``, or ``(heads * head_dim,)`` per channel:
                        ``y += D * x``.
            chunk_size (int, optional): chunk length of the CUDA SSD kernel (the PyTorch scan
                        uses ``ssd_chunk``). Default: 256

        Returns:
            *tuple* ``(y, last_state)``: ``(batch, length, heads, head_dim)`` and
            ``(batch, heads, head_dim, state)``.
        """
        if self._use_cuda(x, load_chunk_scan_combined):
            y, last = _cuda_ssd_scan(x, delta, A, B, C, None, chunk_size)
            return head_skip(y, x, D), last
        return held_constant_ssd(x, delta, A, B, C, D, chunk=self.ssd_chunk)  # D skip fused in

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
            y, last = _cuda_scan(u, delta, A, B, C, D)  # the D skip runs inside the kernel
        else:
            y, last = linear_selective_scan(u, delta, A, B, C, self.chunk, return_last_state=True)
            if D is not None:
                y = y + u * D
        return (y, last) if return_last_state else y


def _head_layout(
    x: Tensor, delta: Tensor, A: Tensor, D: Tensor | None, heads: slice
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Mamba2 heads (scalar decay per head) as Mamba-1 channels: one channel per (head, feature)."""
    batch, length, _, head_dim = x.shape
    u = x[:, :, heads].reshape(batch, length, -1)
    channel_delta = delta[:, :, heads].repeat_interleave(head_dim, dim=-1)
    channel_A = A[heads].repeat_interleave(head_dim)[:, None]
    channel_D = None if D is None else D[heads].repeat_interleave(head_dim)
    return u, channel_delta, channel_A, channel_D


def scan_heads(
    scan: Callable[..., tuple[Tensor, Tensor]],
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""
    Run a Mamba-1 style ``scan(u, delta, A, B, C, D, return_last_state=True)`` over Mamba2's
    multi-head, multi-group SSD layout.

    Args:
        scan (Callable): :meth:`SelectiveSSMRule.apply` or :func:`plain_selective_ssm`.
        x (Tensor): ``(batch, length, heads, head_dim)``.
        delta (Tensor): ``(batch, length, heads)``.
        A (Tensor): ``(heads,)``, one scalar decay rate per head.
        B (Tensor): ``(batch, length, groups, state)``; heads are split evenly over groups.
        C (Tensor): ``(batch, length, groups, state)``.
        D (Tensor, optional): ``(heads,)`` skip weights.

    Returns:
        *tuple* ``(y, last_state)``: ``(batch, length, heads, head_dim)`` and
        ``(batch, heads, head_dim, state)``.
    """
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[2], B.shape[3]
    per_group = heads // groups
    outputs, states = [], []
    for group in range(groups):
        members = slice(group * per_group, (group + 1) * per_group)
        u, channel_delta, channel_A, channel_D = _head_layout(x, delta, A, D, members)
        y, last = scan(
            u,
            channel_delta,
            channel_A.expand(-1, state),
            B[:, :, group],
            C[:, :, group],
            channel_D,
            return_last_state=True,
        )
        outputs.append(y.reshape(batch, length, per_group, head_dim))
        states.append(last.reshape(batch, per_group, head_dim, state))
    return torch.cat(outputs, dim=2), torch.cat(states, dim=1)


def head_skip(y: Tensor, x: Tensor, D: Tensor | None) -> Tensor:
    r"""
    Mamba2's ``D`` skip ``y + D * x`` on ``(batch, length, heads, head_dim)`` tensors, for ``D`` of
    shape ``(heads,)`` or ``(heads * head_dim,)`` (per channel).
    """
    if D is None:
        return y
    return y + x * D.reshape(x.shape[2], -1)


def plain_scan_heads(
    x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The multi-head scan with gradients to every input (the SSM rule switched off), ``D`` skip included."""
    y, last = scan_heads(plain_selective_ssm, x, delta, A, B, C, None)
    return head_skip(y, x, D), last


def _cuda_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """mamba-ssm's kernel in its (batch, channels, length) layout, in at least float32; only ``u`` has gradient."""
    scan = load_selective_scan_fn()
    dtype = torch.promote_types(u.dtype, torch.float32)
    y, last = scan(
        u.to(dtype).transpose(1, 2),
        delta.detach().to(dtype).transpose(1, 2).contiguous(),
        A.detach().float().contiguous(),
        B.detach().to(dtype).transpose(1, 2).contiguous(),
        C.detach().to(dtype).transpose(1, 2).contiguous(),
        D=None if D is None else D.detach().float(),
        return_last_state=True,
    )
    return y.transpose(1, 2), last


def _cuda_ssd_scan(
    x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, chunk_size: int
) -> tuple[Tensor, Tensor]:
    r"""
    mamba-ssm's SSD kernels in at least float32, with a backward to ``x`` only
    (:func:`~captum_mamba.kernels.ssd_cuda.held_constant_chunk_scan`); ``delta`` arrives
    processed (no bias, softplus, limit).
    """
    load_chunk_scan_combined()  # raises the missing-package error if mamba-ssm is absent
    dtype = torch.promote_types(x.dtype, torch.float32)
    y, last = held_constant_chunk_scan(
        x.to(dtype),
        delta.detach().to(dtype),
        A.detach().float(),
        B.detach().to(dtype),
        C.detach().to(dtype),
        chunk_size,
        D=None if D is None else D.detach().float(),
    )
    return y, last


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
