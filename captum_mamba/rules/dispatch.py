"""Rules at transformers' function interfaces (attention, experts): the module's own forward runs
while its config names a function registered by the package, and that function reads the rule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def dispatched_to(config: Any, attribute: str, name: str, active: ContextVar[T | None], value: T) -> Iterator[None]:
    r"""
    For a ``with`` block, ``config.<attribute>`` (e.g. ``_attn_implementation``) names ``name``
    and ``active`` holds ``value`` (the rule the registered function applies); both are restored
    after, also after an exception.

    Args:
        config (Any): the module's config.
        attribute (str): the config attribute the module dispatches by.
        name (str): the registered function's name.
        active (ContextVar): where the registered function finds the rule.
        value: the rule (or the rule's run record).
    """
    saved = getattr(config, attribute)
    setattr(config, attribute, name)  # the config's own setter runs (sub-configs follow)
    token = active.set(value)
    try:
        yield
    finally:
        active.reset(token)
        setattr(config, attribute, saved)
