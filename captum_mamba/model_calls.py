"""How the attribution classes call the model and pick the explained output.

The model's own ``forward`` always runs. For Hugging Face models given directly, a few
conveniences apply: the single input goes in as ``inputs_embeds`` or ``input_ids``, the
additional argument is the ``attention_mask`` (or a dict of keyword arguments), logits are
computed at the explained positions only (``logits_to_keep``) and read from the output
embedding's own output where the model narrowed them with ``.float()`` (float64 models).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args
from captum._utils.typing import TargetType
from torch import Tensor, nn

from captum_mamba.errors import ModelNotFoundError

Position = int | Sequence[int] | Tensor | str | None


def resolve_model(forward_func: Callable[..., Any], model: nn.Module | None) -> nn.Module:
    r"""
    The module whose Mamba layers get the rules: ``model`` if given, else the forward function
    itself if it is an ``nn.Module``, else the module a bound method belongs to.
    """
    if model is not None:
        if not isinstance(model, nn.Module):
            raise ModelNotFoundError(f"model= must be an nn.Module, got {type(model).__name__}")
        return model
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner
    raise ModelNotFoundError(
        f"cannot find the model behind forward function {forward_func!r}: pass the model itself, "
        "one of its bound methods, or the model as model=..."
    )


def _forward_parameters(forward_func: Callable[..., Any]) -> set[str] | None:
    """The parameter names of a module's own ``forward`` (its class's: not a rule-patched one); ``None`` otherwise."""
    if not isinstance(forward_func, nn.Module):
        return None
    try:
        return set(inspect.signature(type(forward_func).forward).parameters)
    except (TypeError, ValueError):
        return None


#: What a Hugging Face-style model's forward takes (either input).
_HF_INPUTS = {"input_ids", "inputs_embeds"}


def _hf_style_parameters(forward_func: Callable[..., Any]) -> set[str] | None:
    parameters = _forward_parameters(forward_func)
    return parameters if parameters is not None and _HF_INPUTS <= parameters else None


def position_index(position: Any, batch: int, length: int, device: torch.device) -> int | Tensor:
    r"""
    Check explained positions against the batch and the sequence length, and make them
    non-negative.

    Returns:
        *int* (one position for all examples) or *LongTensor* ``(batch,)``.
    """
    if isinstance(position, int):
        if not -length <= position < length:
            raise IndexError(f"explained position {position} is out of range for sequences of length {length}")
        return position % length
    index = torch.as_tensor(position, device=device).long().reshape(-1)
    if index.numel() != batch:
        raise ValueError(f"got {index.numel()} explained positions for a batch of {batch}")
    if ((index < -length) | (index >= length)).any():
        raise IndexError(f"explained positions {index.tolist()} out of range for sequences of length {length}")
    return index % length


def accepts_logits_to_keep(forward_func: Callable[..., Any]) -> bool:
    """Whether ``forward_func`` is a Hugging Face model that can compute logits at chosen positions only."""
    parameters = _hf_style_parameters(forward_func)
    return parameters is not None and "logits_to_keep" in parameters


def accepts_num_last_tokens(forward_func: Callable[..., Any]) -> bool:
    r"""
    Whether ``forward_func`` is a model whose forward computes logits at the last positions only
    when asked (``num_last_tokens``: mamba-ssm's ``MambaLMHeadModel``); Hugging Face models use
    ``logits_to_keep`` instead.
    """
    parameters = _forward_parameters(forward_func)
    return parameters is not None and "num_last_tokens" in parameters and not _HF_INPUTS <= parameters


def last_tokens_for(position: Any, batch: int, length: int, device: torch.device) -> tuple[int, Any]:
    r"""
    How many last positions a ``num_last_tokens`` model must compute logits at to cover the
    explained positions, and the positions rewritten to index those logits.

    Returns:
        *tuple* ``(num_last_tokens, index)``.
    """
    index = position_index(position, batch, length, device)
    first = index if isinstance(index, int) else int(index.min())
    return length - first, index - first


def kept_positions(position: Any, batch: int, length: int, device: torch.device) -> tuple[Tensor, Any]:
    r"""
    The positions whose logits are needed and each example's index among them, so that a long
    input never materialises ``(length, vocab)`` logits when one position is explained.

    Returns:
        *tuple* ``(keep, index)``: sorted unique positions for ``logits_to_keep`` and the position
        argument rewritten to index the kept logits.
    """
    index = position_index(position, batch, length, device)
    if isinstance(index, int):
        return torch.tensor([index], device=device), 0
    keep, inverse = torch.unique(index, sorted=True, return_inverse=True)
    return keep, inverse


def is_hf_model(forward_func: Callable[..., Any]) -> bool:
    """Whether ``forward_func`` is a Hugging Face-style model (its forward takes ``input_ids`` and ``inputs_embeds``)."""
    return _hf_style_parameters(forward_func) is not None


def _hf_keyword_arguments(additional_forward_args: Any) -> dict[str, Any]:
    """A Hugging Face model's extra keyword arguments: the attention mask, or a dict of keyword arguments."""
    if additional_forward_args is None:
        return {}
    if isinstance(additional_forward_args, Mapping):
        return dict(additional_forward_args)
    extra = _format_additional_forward_args(additional_forward_args) or ()
    if not extra:
        return {}
    if len(extra) == 1 and isinstance(extra[0], Mapping):
        return dict(extra[0])
    if len(extra) > 1:
        raise ValueError(
            "a Hugging Face model takes one additional forward argument, the attention_mask; pass other "
            "keyword arguments as a dict, e.g. additional_forward_args={'attention_mask': mask}"
        )
    return {} if extra[0] is None else {"attention_mask": extra[0]}


def attention_mask_of(forward_func: Callable[..., Any], additional_forward_args: Any) -> Tensor | None:
    r"""
    The attention mask among ``additional_forward_args``, where the package knows which argument
    it is: a Hugging Face model's one additional argument or its ``"attention_mask"`` keyword.
    """
    if not is_hf_model(forward_func):
        return None
    mask = _hf_keyword_arguments(additional_forward_args).get("attention_mask")
    return mask if isinstance(mask, Tensor) else None


def check_model_inputs(forward_func: Callable[..., Any], inputs: tuple[Tensor, ...]) -> None:
    r"""
    Check the inputs' shapes where they are known: a Hugging Face model takes embeddings
    ``(batch, length, hidden)`` or token ids ``(batch, length)``, with at least one example and
    one token.

    Raises:
        ValueError: naming the expected shape.
    """
    for tensor in inputs:
        if tensor.dim() >= 1 and tensor.shape[0] == 0:
            raise ValueError(f"the input batch is empty (shape {tuple(tensor.shape)}); pass at least one example")
    if not is_hf_model(forward_func) or len(inputs) != 1:
        return
    tensor = inputs[0]
    if tensor.is_floating_point():
        expected, name = 3, "embeddings (batch, length, hidden)"
    else:
        expected, name = 2, "token ids (batch, length)"
    if tensor.dim() != expected:
        raise ValueError(
            f"expected {name}, got a tensor of shape {tuple(tensor.shape)}; add the batch dimension "
            "with tensor.unsqueeze(0) for a single example"
        )
    if tensor.shape[1] == 0:
        raise ValueError(f"the input sequence is empty (shape {tuple(tensor.shape)}); explain at least one token")


class WideLogits:
    r"""
    Undo a causal LM's narrowing of its logits (Hugging Face's ``*ForCausalLM`` call ``.float()``
    on them, which narrows a float64 model's logits to float32): a forward hook keeps the output
    embedding's own output, and :meth:`widen` returns it where the model's logits are exactly that
    output, narrowed. Anything else (a scaled output, a half-precision model whose logits are
    widened) is returned as the model gave it.

    Args:
        model (nn.Module): the model (its ``get_output_embeddings()`` is hooked, if it has one).
    """

    def __init__(self, model: nn.Module) -> None:
        getter = getattr(model, "get_output_embeddings", None)
        layer = getter() if callable(getter) else None
        self.layer = layer if isinstance(layer, nn.Module) else None
        self.output: Tensor | None = None
        self._handle: Any = None

    def __enter__(self) -> WideLogits:
        if self.layer is not None:
            self._handle = self.layer.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()

    def _keep(self, module: nn.Module, args: Any, output: Any) -> None:
        self.output = output if isinstance(output, Tensor) else None

    def widen(self, logits: Tensor) -> Tensor:
        """``logits``, or the wider output they were narrowed from."""
        wide = self.output
        if (
            wide is None
            or wide.shape != logits.shape
            or wide.dtype == logits.dtype
            or torch.promote_types(wide.dtype, logits.dtype) != wide.dtype
            or not torch.equal(wide.detach().to(logits.dtype), logits.detach())
        ):
            return logits
        return wide


def run_forward(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    additional_forward_args: Any,
    logits_to_keep: Tensor | None = None,
    num_last_tokens: int | None = None,
) -> Tensor:
    r"""
    Call the forward function the way Captum does and return the tensor to explain, with the
    conveniences for Hugging Face models (modules whose forward takes ``input_ids`` and
    ``inputs_embeds``): the single input goes in as ``inputs_embeds`` when it is floating point
    and as ``input_ids`` otherwise; ``additional_forward_args`` is the ``attention_mask`` or a dict
    of keyword arguments; ``logits_to_keep`` (positions) is passed on to models that take it,
    ``num_last_tokens`` to mamba-ssm's language models; float64 logits are not narrowed
    (:class:`WideLogits`).

    Returns:
        *Tensor*: the output itself, its ``logits`` or its first tensor (see :func:`output_tensor`).
    """
    hf_parameters = _hf_style_parameters(forward_func)
    if hf_parameters is None:
        extra = _format_additional_forward_args(additional_forward_args) or ()
        if num_last_tokens is not None:
            return output_tensor(forward_func(*inputs, *extra, num_last_tokens=num_last_tokens))
        return output_tensor(forward_func(*inputs, *extra))
    if len(inputs) != 1:
        raise ValueError(
            "a Hugging Face model takes one input tensor (input_ids or inputs_embeds); wrap the model in a "
            "function for more"
        )
    key = "inputs_embeds" if inputs[0].is_floating_point() else "input_ids"
    kwargs: dict[str, Any] = {key: inputs[0], **_hf_keyword_arguments(additional_forward_args)}
    if "use_cache" in hf_parameters:
        kwargs.setdefault("use_cache", False)
    if logits_to_keep is not None:
        kwargs["logits_to_keep"] = logits_to_keep
    with WideLogits(forward_func) as wide:  # type: ignore[arg-type]
        output = output_tensor(forward_func(**kwargs))
    return wide.widen(output)


def output_tensor(output: Any) -> Tensor:
    """The tensor to explain: the output itself, its ``.logits``, or its first tensor (``last_hidden_state``)."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if hasattr(output, "to_tuple"):  # a ModelOutput without logits, e.g. MambaModel's
        output = output.to_tuple()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find a tensor to explain in a model output of type {type(output).__name__}")


def select_position(output: Tensor, position: Position) -> Tensor:
    r"""
    For sequence outputs ``(batch, length, classes)`` pick one position per example.

    Args:
        output (Tensor): the model output.
        position (int, sequence of int, Tensor or None): one index for all examples, one per
                    example, or ``None`` to keep the sequence dimension.
    """
    if output.dim() != 3 or position is None:
        return output
    batch, length = output.shape[:2]
    index = position_index(position, batch, length, output.device)
    if isinstance(index, int):
        return output[:, index]
    return output[torch.arange(batch, device=output.device), index]


def select_target(output: Tensor, target: TargetType) -> Tensor:
    r"""
    The explained scalar per example, with Captum's target conventions and range checks.

    Returns:
        *Tensor* of shape ``(batch,)``.
    """
    batch = output.shape[0]
    if output.dim() == 1:
        if target is not None:
            raise ValueError("the model returns one value per example; target must be None")
        return output
    if target is None:
        if output[0].numel() == 1:
            return output.reshape(batch)
        raise ValueError(f"the model returns {tuple(output.shape[1:])} values per example; pass target= to choose one")
    if output.dim() > 2:
        return _select_tuple_targets(output, target)
    classes = output.shape[1]
    index = torch.as_tensor(target, device=output.device)
    if index.is_floating_point() or index.dim() > 1:
        raise TypeError(f"target must be an int, a list of ints or an integer tensor, got {target!r}")
    index = index.long().reshape(-1)
    if index.numel() == 1:
        index = index.expand(batch)
    if index.numel() != batch:
        raise ValueError(f"got {index.numel()} targets for a batch of {batch}")
    if ((index < 0) | (index >= classes)).any():
        raise IndexError(f"target {index.tolist()} is out of range for an output with {classes} classes")
    return output.gather(1, index[:, None]).squeeze(1)


def _select_tuple_targets(output: Tensor, target: TargetType) -> Tensor:
    batch, inner = output.shape[0], tuple(output.shape[1:])
    targets = [target] * batch if isinstance(target, tuple) else target
    if not (isinstance(targets, list) and all(isinstance(t, tuple) for t in targets)):
        raise ValueError(
            f"an output of shape {tuple(output.shape)} needs a tuple target {tuple('i' * len(inner))} "
            "(or one per example), or an explained_position"
        )
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch}")
    for t in targets:
        if len(t) != len(inner) or any(not 0 <= i < n for i, n in zip(t, inner)):
            raise IndexError(f"target {t} is out of range for per-example outputs of shape {inner}")
    columns = [torch.tensor(c, device=output.device) for c in zip(*targets)]
    return output[(torch.arange(batch, device=output.device), *columns)]


def check_float_inputs(inputs: tuple[Tensor, ...]) -> None:
    for tensor in inputs:
        if not tensor.is_floating_point():
            raise TypeError(
                f"MambaLRP explains floating-point inputs (e.g. inputs_embeds), got {tensor.dtype}. "
                "For token ids use LayerMambaLRP(model, model.backbone.embeddings), as with "
                "LayerIntegratedGradients."
            )


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Stop autograd from recording parameter paths during an explanation; restore the flags after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 or wider (sums and deltas of half-precision relevances are formed there)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def summed_per_example(attributions: Sequence[Tensor]) -> Tensor:
    """Sum every attribution tensor over all but the batch dimension, then over tensors, in float32 or wider."""
    return sum(at_least_float32(a).reshape(a.shape[0], -1).sum(1) for a in attributions)  # type: ignore[return-value]


def convergence_delta(attributions: Sequence[Tensor], explained: Tensor) -> Tensor:
    r"""
    Captum's convergence delta of a relevance method: per example, the sum of all relevances
    minus the explained output, both in float32 or wider.

    Returns:
        *Tensor* ``(batch,)``.
    """
    return summed_per_example(attributions) - at_least_float32(explained)
