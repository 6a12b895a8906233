"""Residual blocks: the block's own forward, with what the rules need set around it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from captum_mamba.options import carrying_options, current_options
from captum_mamba.rules.base import MambaLRPRule

_MISSING = object()


@contextmanager
def attributes_set(module: nn.Module, values: Mapping[str, Any]) -> Iterator[None]:
    """Set plain attributes of ``module`` for a ``with`` block; restore (or remove) them after."""
    saved = {name: module.__dict__.get(name, _MISSING) for name in values}
    try:
        module.__dict__.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value


def _first_tensor(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor | None:
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)


class OwnForwardRule(MambaLRPRule):
    r"""
    A module whose own forward only composes modules that have rules (LRP-0 through the sums it
    forms), run with what the rules need set around it:

    * ``residual_in_fp32`` switched off for float64 inputs: the module would cast the residual
      stream to float32 and narrow a float64 explanation (for other dtypes it widens, and stays);
    * attributes that route computations through rule-carrying modules (``overrides``, e.g.
      mamba-ssm's ``fused_add_norm=False``, so the norm module runs instead of a fused kernel).

    Args:
        overrides (Mapping, optional): ``{attribute: value}`` set on the module during its forward.
    """

    replaces_forward = True

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def module_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._run(module, *args, **kwargs)

    def _run(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        values = dict(self.overrides)
        first = _first_tensor(args, kwargs)
        if getattr(module, "residual_in_fp32", False) and first is not None and first.dtype == torch.float64:
            values["residual_in_fp32"] = False
        with attributes_set(module, values):
            return type(module).forward(module, *args, **kwargs)


class BlockRule(OwnForwardRule):
    r"""
    A residual block ``x + mixer(norm(x))``: relevance splits over the sum as the gradient says
    (LRP-0); the norm and the mixer get their own rules. The block's own forward runs as in
    :class:`OwnForwardRule`; in memory-lean mode (``checkpoint_blocks``) the block is recomputed
    in the backward pass, from a copy of its input kept in host memory with ``offload_blocks``.

    Args:
        overrides (Mapping, optional): ``{attribute: value}`` set on the block during its forward.
    """

    def module_forward(self, block: nn.Module, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        options = current_options()
        if not (options.checkpoint_blocks and torch.is_grad_enabled()):
            return self._run(block, *args, **kwargs)
        if options.offload_blocks and _offloadable(args, kwargs):
            return _OffloadedBlock.apply(carrying_options(functools.partial(self._run, block, **kwargs)), *args)
        return checkpoint(carrying_options(self._run), block, *args, use_reentrant=False, **kwargs)


def _offloadable(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether only the block's first argument (its input) needs a gradient: the others are constants."""
    if not (args and isinstance(args[0], Tensor)):
        return False
    rest = (*args[1:], *kwargs.values())
    return not any(isinstance(a, Tensor) and a.requires_grad for a in rest)


def _host_copy(tensor: Tensor) -> Tensor:
    """A copy in (pinned, for CUDA tensors) host memory, made without waiting for it."""
    if not tensor.is_cuda:
        return tensor.detach().clone()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor.detach(), non_blocking=True)


class _OffloadedBlock(torch.autograd.Function):
    r"""
    A residual block recomputed in the backward pass from a copy of its input kept in host
    memory: the forward runs the block without a graph and keeps only that copy; the backward
    brings the copy back, runs the block again with a graph (``run`` carries the explanation's
    options: :func:`~captum_mamba.options.carrying_options`) and backpropagates through it. The
    gradient stays on the device.
    """

    @staticmethod
    def forward(ctx, run: Callable[..., Tensor], hidden: Tensor, *rest: Any) -> Tensor:  # type: ignore[override]
        ctx.run, ctx.rest, ctx.device = run, rest, hidden.device
        ctx.host = _host_copy(hidden)
        ctx.input_requires_grad = hidden.requires_grad
        with torch.no_grad():
            output = run(hidden, *rest)
        if not isinstance(output, Tensor):
            raise TypeError(f"memory_lean='offload' needs blocks that return a tensor, got {type(output).__name__}")
        return output

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        hidden = ctx.host.to(ctx.device, non_blocking=True).requires_grad_(ctx.input_requires_grad)
        with torch.enable_grad():
            output = ctx.run(hidden, *ctx.rest)
        torch.autograd.backward(output, grad)
        return (None, hidden.grad, *(None for _ in ctx.rest))
