"""LayerMambaLRP: MambaLRP relevance read at any layer (token embeddings, residual streams, ...)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from captum._utils.typing import TargetType
from captum.attr import LayerGradientXActivation
from captum.log import log_usage
from torch import Tensor, nn

from captum_mamba.attribution_base import _DEFAULT, MambaLRPBase
from captum_mamba.model_calls import Position, convergence_delta
from captum_mamba.registry import RuleRegistry, RuleSpec
from captum_mamba.rule_context import Fallback


def _as_leaf(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().requires_grad_()
    return value


class _LayerTap:
    """Forward hooks that swap a layer's output (or input) for leaves to differentiate against."""

    def __init__(self, layer: nn.Module, to_input: bool) -> None:
        self.leaves: tuple[Tensor, ...] | None = None
        self.is_tuple = False
        if to_input:
            self.handle = layer.register_forward_pre_hook(self._on_input)
        else:
            self.handle = layer.register_forward_hook(self._on_output)

    def _capture(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.leaves is not None:
            raise RuntimeError("the attributed layer is called more than once in one forward pass")
        replaced = tuple(_as_leaf(v) for v in values)
        self.leaves = tuple(v for v in replaced if isinstance(v, Tensor) and v.requires_grad)
        if not self.leaves:
            raise TypeError("the attributed layer has no floating-point tensor to attribute to")
        return replaced

    def _on_input(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        self.is_tuple = len([a for a in args if isinstance(a, Tensor) and a.is_floating_point()]) > 1
        return self._capture(args)

    def _on_output(self, module: nn.Module, args: Any, output: Any) -> Any:
        self.is_tuple = isinstance(output, tuple)
        replaced = self._capture(output if self.is_tuple else (output,))
        return replaced if self.is_tuple else replaced[0]


class LayerMambaLRP(MambaLRPBase, LayerGradientXActivation):
    r"""
    MambaLRP relevance at the output (or input) of a layer: relevance x activation there.

    Use it on the embedding layer to explain token-id models the way
    ``LayerIntegratedGradients(model, model.backbone.embeddings)`` does, or on a block to read
    relevance at a residual stream (it sums to the explained logit at every block of a bias-free
    model). Works with Captum's ``LLMGradientAttribution``.

    Args:
        forward_func (Callable): the model or a function calling it (see :class:`MambaLRP`).
        layer (nn.Module): the layer whose activations get relevance.
        model (nn.Module, optional): the module to apply rules to, if it cannot be found from
                    ``forward_func``.
        rules (Mapping, optional): ``{module_type: rule}`` overriding the registry.
        registry (RuleRegistry, optional): the rule registry. Default: the package's.
        explained_position (int, list, Tensor, str or None, optional): position explained in
                    sequence outputs, as in :class:`MambaLRP`. Default: "auto"
        plain_gradient_fallback (bool or Iterable[type], optional): as in :class:`MambaLRP`.
                    Default: False
        memory_lean (bool or str, optional): per-block recomputation (``True``), with the block
                    inputs in host memory (``"offload"``), as in :class:`MambaLRP`. Default: False
        backend (str, optional): ``"auto"``, ``"torch"`` or ``"cuda"``, as in :class:`MambaLRP`.
                    Default: "auto"
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module,
        model: nn.Module | None = None,
        rules: Mapping[type[nn.Module], RuleSpec] | None = None,
        registry: RuleRegistry | None = None,
        explained_position: Position = "auto",
        plain_gradient_fallback: Fallback = False,
        memory_lean: bool | str = False,
        backend: str = "auto",
    ) -> None:
        LayerGradientXActivation.__init__(self, forward_func, layer)
        self._configure(
            forward_func, model, rules, registry, explained_position, plain_gradient_fallback, memory_lean, backend
        )

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        return_convergence_delta: bool = False,
        explained_position: Any = _DEFAULT,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Tensor | tuple[Tensor, ...], Tensor]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): model inputs (token ids or embeddings).
            target (int, tuple, Tensor, list or TokenTargets, optional): the explained output,
                        as in :class:`MambaLRP`.
            additional_forward_args (Any, optional): further forward arguments (for Hugging
                        Face models the ``attention_mask``, or a dict of keyword arguments).
            attribute_to_layer_input (bool, optional): relevance of the layer's input instead of
                        its output. Default: False
            return_convergence_delta (bool, optional): also return sum of relevances minus the
                        explained output, per example. Default: False
            explained_position (int, list or Tensor, optional): overrides the explainer's setting.
            **kwargs: accepted for compatibility with Captum wrappers (e.g. ``layer_baselines``
                        passed by ``LLMGradientAttribution``) and ignored.

        Returns:
            **attributions** (*Tensor* or *tuple[Tensor, ...]*): relevances shaped like the
            layer's output (or input); **delta** (*Tensor*, if ``return_convergence_delta``).
        """
        inputs_tuple = inputs if isinstance(inputs, tuple) else (inputs,)
        tap = _LayerTap(self.layer, attribute_to_layer_input)

        def run() -> tuple[Tensor, tuple[Tensor, ...]]:
            explained = self._explained_output(inputs_tuple, additional_forward_args, target, explained_position)
            if tap.leaves is None:
                raise RuntimeError(f"layer {type(self.layer).__name__} was not called by the forward function")
            return explained, tap.leaves

        try:
            explained, attributions = self._relevances(
                run, "layer's " + ("input" if attribute_to_layer_input else "output")
            )
        finally:
            tap.handle.remove()
        formatted = attributions if tap.is_tuple else attributions[0]
        if not return_convergence_delta:
            return formatted
        return formatted, convergence_delta(attributions, explained)

    def has_convergence_delta(self) -> bool:
        return True


__all__ = ["LayerMambaLRP"]
