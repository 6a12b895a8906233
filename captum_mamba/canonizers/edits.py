"""Reversible edits of a module tree: each edit records how to undo itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_MISSING = object()


class ModelEdits:
    """A log of edits to a model, undone in reverse order by :meth:`undo`."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def replace_child(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        """Put ``new`` in place of ``parent``'s child ``name`` (same position in the module order)."""
        original = parent._modules[name]
        parent._modules[name] = new
        self._undo.append(lambda: parent._modules.__setitem__(name, original))

    def add_child(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        """Add ``new`` as ``parent``'s child ``name`` (which must not exist yet)."""
        if name in parent._modules or name in parent.__dict__:
            raise ValueError(f"{type(parent).__name__} already has an attribute {name!r}")
        parent.add_module(name, new)
        self._undo.append(lambda: parent._modules.pop(name))

    def add_hook(self, handle: Any) -> None:
        """Record a hook's removable handle (``module.register_forward_hook(...)``); removed on undo."""
        self._undo.append(handle.remove)

    def patch_forward(self, module: nn.Module, forward: Callable[..., Any]) -> None:
        """Make ``forward`` the instance's forward (the class's stays untouched)."""
        self.set_attribute(module, "forward", forward)

    def set_attribute(self, module: nn.Module, name: str, value: Any) -> None:
        """Set a plain (non-module, non-parameter) instance attribute; restore or delete it on undo."""
        previous = module.__dict__.get(name, _MISSING)
        module.__dict__[name] = value

        def undo() -> None:
            if previous is _MISSING:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = previous

        self._undo.append(undo)

    def __bool__(self) -> bool:
        return bool(self._undo)

    def undo(self) -> None:
        """Undo every edit, newest first; the log is empty afterwards."""
        while self._undo:
            self._undo.pop()()


#: Attributes Captum's LRP leaves on modules (``_clear_properties`` deletes ``activation``, not these).
CAPTUM_ATTRIBUTES = ("rule", "activations", "activation")


def snapshot_captum_attributes(model: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Each module's Captum attributes (present ones with their values), to restore them later."""
    return [
        (module, {name: module.__dict__[name] for name in CAPTUM_ATTRIBUTES if name in module.__dict__})
        for module in model.modules()
    ]


def restore_captum_attributes(snapshot: list[tuple[nn.Module, dict[str, Any]]]) -> None:
    """Remove what Captum added (``activations`` caches, rules) and put back what it deleted."""
    for module, saved in snapshot:
        for name in CAPTUM_ATTRIBUTES:
            module.__dict__.pop(name, None)
        module.__dict__.update(saved)
