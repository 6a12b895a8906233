"""The base class shared by all MambaLRP rules."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from captum.attr._utils.lrp_rules import PropagationRule
from torch import Tensor, nn


class MambaLRPRule(PropagationRule):
    r"""
    A Captum :class:`~captum.attr._utils.lrp_rules.PropagationRule` that expresses its
    relevance propagation as a rewritten forward pass.

    The rewritten forward has the same value as the original, but some factors are detached
    (held constant), so that Gradient x Input through it redistributes relevance by the rule
    (the MambaLRP recipe, Rezaei Jafari et al., 2024). MambaLRP's engine swaps
    :meth:`module_forward` in for a module's own ``forward``; Captum's ``LRP`` engine can use the
    same rule on a leaf module whose forward is the rewritten one.

    Subclasses that rewrite a whole module implement :meth:`module_forward` and set
    ``replaces_forward = True``. Rules that only provide functional pieces (used by a
    module-level rule of a model family) leave it ``False``.
    """

    #: Whether the rule context replaces the module's ``forward`` with :meth:`module_forward`.
    replaces_forward: bool = False
    #: The component rules a composite rule is made of, ``{component name: attribute}``
    #: (e.g. ``"ssm"`` for the selective scan); :meth:`without` switches them off.
    components: ClassVar[dict[str, str]] = {}

    def without(self, names: Iterable[str]) -> MambaLRPRule:
        r"""
        A copy of this rule with the named components switched off (their computation runs
        plainly, with gradients through everything): the ablation of those rules.

        Args:
            names (Iterable[str]): component names; those the rule does not have are ignored.

        Returns:
            *MambaLRPRule*: the copy (``self`` when nothing changes).
        """
        switched = [self.components[name] for name in names if name in self.components]
        if not switched:
            return self
        changed = copy.copy(self)
        for attribute in switched:
            setattr(changed, attribute, None)
        return changed

    def module_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        r"""
        The module's forward with this rule applied.

        Args:
            module (nn.Module): the module the rule is attached to.
            *args, **kwargs: the arguments of the module's own forward.

        Returns:
            Whatever the module's forward returns, with the same value.
        """
        raise NotImplementedError(f"{type(self).__name__} does not rewrite a module's forward")

    def _manipulate_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        """MambaLRP rules leave weights untouched (Captum's hook for LRP-gamma style rules)."""

    def _create_backward_hook_output(self, outputs: Tensor) -> Any:
        r"""
        Captum's output hook divides the arriving relevance by the output, stabilised by
        ``STABILITY_FACTOR``. A MambaLRP rule's forward is exactly linear in the relevance-carrying
        inputs, so the division is exact here: ``R / z`` where ``z != 0``; where ``z == 0`` the
        relevance ``R = z * dR/dz`` is zero as well, and zero is passed on.
        """

        def backward_hook_output(grad: Tensor) -> Tensor:
            self.relevance_output[grad.device] = grad.data
            return grad / torch.where(outputs == 0, torch.ones_like(outputs), outputs)

        return backward_hook_output

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
