"""Run-time options of an explanation, visible to the rules while it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, TypeVar

BACKENDS = ("auto", "torch", "cuda")


@dataclass(frozen=True)
class ExplanationOptions:
    r"""
    Args:
        checkpoint_blocks (bool): recompute each residual block during the backward pass instead
                    of keeping its activations (memory grows with the number of blocks times the
                    hidden size, not with everything inside a block). Default: False
        offload_blocks (bool): with ``checkpoint_blocks``, keep each block's input in host memory
                    until the backward pass recomputes the block (GPU memory then holds about one
                    block's activations, for inputs of a million tokens). Default: False
        backend (str): ``"auto"`` (CUDA kernels for CUDA tensors when the ``gpu`` extra imports,
                    else PyTorch), ``"torch"`` (always the pure-PyTorch path) or ``"cuda"``
                    (always the kernels; an error if they are missing). Default: "auto"
    """

    checkpoint_blocks: bool = False
    offload_blocks: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


_OPTIONS: ContextVar[ExplanationOptions] = ContextVar("captum_mamba_options", default=ExplanationOptions())  # noqa: B039 (frozen)


def current_options() -> ExplanationOptions:
    """The options of the explanation running now (defaults outside one)."""
    return _OPTIONS.get()


@contextmanager
def explanation_options(**changes: object) -> Iterator[ExplanationOptions]:
    """Set options (see :class:`ExplanationOptions`) for the duration of a ``with`` block."""
    options = replace(_OPTIONS.get(), **changes)  # type: ignore[arg-type]
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


_Result = TypeVar("_Result")


def carrying_options(function: Callable[..., _Result]) -> Callable[..., _Result]:
    r"""
    ``function`` bound to the options set now, for work deferred to the backward pass (a block or
    a convolution recomputed there): on CUDA autograd runs the backward pass on a thread of its
    own, where the options of the explanation (a context variable) are not set.

    Returns:
        *Callable*: ``function`` called under the current options.
    """
    options = current_options()

    def under_options(*args: Any, **kwargs: Any) -> _Result:
        with explanation_options(**vars(options)):
            return function(*args, **kwargs)

    return under_options
