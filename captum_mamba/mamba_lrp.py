"""MambaLRP: Layer-wise Relevance Propagation for Mamba models, as a Captum attribution method."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from captum._utils.common import _format_output, _format_tensor_into_tuples, _is_tuple
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import InputXGradient
from captum.log import log_usage
from torch import Tensor, nn

from captum_mamba.attribution_base import _DEFAULT, MambaLRPBase
from captum_mamba.model_calls import Position, check_float_inputs, convergence_delta
from captum_mamba.registry import RuleRegistry, RuleSpec
from captum_mamba.rule_context import Fallback


class MambaLRP(MambaLRPBase, InputXGradient):
    r"""
    MambaLRP (Rezaei Jafari, Montavon, Müller and Eberle, NeurIPS 2024,
    https://arxiv.org/abs/2406.07592): relevance propagation for selective state space models.

    The model's SiLUs, selective SSMs, multiplicative gates and norms are rewritten by
    relevance-conserving rules (see :mod:`captum_mamba.rules`), then Gradient x Input is taken
    in one forward and one backward pass. Relevances sum to the explained output up to what
    biases absorb, reported as the convergence delta.

    A drop-in for ``InputXGradient`` / ``IntegratedGradients`` on embedding inputs; for token
    ids use :class:`LayerMambaLRP` on the embedding layer.

    Args:
        forward_func (Callable): the model (e.g. a Hugging Face ``MambaForCausalLM``) or a
                    function calling it. Hugging Face models get floating inputs as
                    ``inputs_embeds`` and ``additional_forward_args`` as ``attention_mask``.
        model (nn.Module, optional): the module to apply rules to, when ``forward_func`` is
                    neither a module nor a bound method of one.
        rules (Mapping, optional): ``{module_type: rule}`` overriding the registry for this
                    explainer; ``None`` as a rule means plain gradient (LRP-0).
        registry (RuleRegistry, optional): the rule registry. Default: the package's.
        explained_position (int, list, Tensor, str or None, optional): for sequence outputs
                    ``(batch, length, vocab)``, the position explained: one for all examples, one
                    per example, ``"last_real"`` (each row's last real token, from the attention
                    mask given as ``additional_forward_args``), ``"auto"`` (``"last_real"`` when a
                    Hugging Face model is given its attention mask, else the last position), or
                    ``None`` to keep the sequence dimension (then ``target`` is a tuple
                    ``(position, class)`` or a :class:`~captum_mamba.TokenTargets`).
                    Default: "auto"
        plain_gradient_fallback (bool or Iterable[type], optional): module types without a rule
                    that may run with the plain gradient (with a warning) instead of raising
                    :class:`~captum_mamba.UnsupportedModuleError`; ``True`` for all. Default: False
        memory_lean (bool or str, optional): ``True``: recompute each residual block in the
                    backward pass (per-block checkpointing), so memory no longer holds every
                    block's activations: for very long inputs; ``"offload"``: also keep the
                    blocks' inputs in host memory (a million tokens on one GPU). Same
                    relevances. A run out of GPU memory says which mode to ask for.
                    Default: False
        backend (str, optional): ``"auto"`` (mamba-ssm / causal-conv1d CUDA kernels for CUDA
                    inputs when the ``gpu`` extra is installed, else PyTorch), ``"torch"`` or
                    ``"cuda"`` (an error naming the missing package if the kernels are absent).
                    Default: "auto"
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        model: nn.Module | None = None,
        rules: Mapping[type[nn.Module], RuleSpec] | None = None,
        registry: RuleRegistry | None = None,
        explained_position: Position = "auto",
        plain_gradient_fallback: Fallback = False,
        memory_lean: bool | str = False,
        backend: str = "auto",
    ) -> None:
        InputXGradient.__init__(self, forward_func)
        self._configure(
            forward_func, model, rules, registry, explained_position, plain_gradient_fallback, memory_lean, backend
        )

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        explained_position: Any = _DEFAULT,
    ) -> TensorOrTupleOfTensorsGeneric | tuple[TensorOrTupleOfTensorsGeneric, Tensor]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): floating-point inputs (e.g. ``inputs_embeds``
                        of shape ``(batch, length, hidden)``); dimension 0 is the batch.
            target (int, tuple, Tensor, list or TokenTargets, optional): the output index
                        explained, as in Captum: one for all examples or one per example; a
                        :class:`~captum_mamba.TokenTargets` explains a sum of several
                        ``(position, token)`` logits. Logits are explained (no softmax is
                        applied). Default: None (scalar outputs)
            additional_forward_args (Any, optional): further arguments of the forward function
                        (for Hugging Face models the ``attention_mask``, or a dict of keyword
                        arguments such as ``{"attention_mask": mask}``). Default: None
            return_convergence_delta (bool, optional): also return, per example, the sum of all
                        relevances minus the explained output. Default: False
            explained_position (int, list or Tensor, optional): overrides the explainer's
                        ``explained_position`` for this call.

        Returns:
            **attributions** (*Tensor* or *tuple[Tensor, ...]*): relevances of the same shape as
            ``inputs``; **delta** (*Tensor*, if ``return_convergence_delta``): shape ``(batch,)``.

        Examples::

            >>> model = MambaForCausalLM.from_pretrained("state-spaces/mamba-130m-hf")
            >>> embeds = model.get_input_embeddings()(input_ids)
            >>> relevance, delta = MambaLRP(model).attribute(
            ...     embeds, target=next_token_id, return_convergence_delta=True)
            >>> token_relevance = relevance.sum(-1)
        """
        is_tuple = _is_tuple(inputs)
        inputs_tuple = _format_tensor_into_tuples(inputs)
        check_float_inputs(inputs_tuple)

        def run() -> tuple[Tensor, tuple[Tensor, ...]]:
            leaves = tuple(x.detach().requires_grad_() for x in inputs_tuple)
            return self._explained_output(leaves, additional_forward_args, target, explained_position), leaves

        explained, attributions = self._relevances(run, "inputs")
        formatted = _format_output(is_tuple, attributions)
        if not return_convergence_delta:
            return formatted  # type: ignore[return-value]
        return formatted, convergence_delta(attributions, explained)  # type: ignore[return-value]

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return True
