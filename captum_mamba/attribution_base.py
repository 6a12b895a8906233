"""What MambaLRP and LayerMambaLRP share: configuration and the one-forward-one-backward pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from captum._utils.typing import TargetType
from torch import Tensor, nn

from captum_mamba.input_relevance import collecting_input_relevance
from captum_mamba.model_calls import (
    Position,
    accepts_logits_to_keep,
    accepts_num_last_tokens,
    attention_mask_of,
    check_model_inputs,
    frozen_parameters,
    kept_positions,
    last_tokens_for,
    resolve_model,
    run_forward,
    select_position,
    select_target,
)
from captum_mamba.options import ExplanationOptions, explanation_options
from captum_mamba.registry import RuleRegistry, RuleSpec
from captum_mamba.rule_context import Fallback, RulePlan, mamba_lrp_rules, plan_rules
from captum_mamba.targets import TokenTargets, last_token_positions

_DEFAULT = object()
POSITION_WORDS = ("auto", "last_real")


def _positions_from_words(position: str, forward_func: Callable[..., Any], additional_forward_args: Any) -> Position:
    r"""
    ``"last_real"``: each row's last real token, from the attention mask; ``"auto"``: the same
    when an attention mask is given, else the last position.
    """
    if position not in POSITION_WORDS:
        raise ValueError(
            f"explained_position must be an int, ints, a tensor, None, 'auto' or 'last_real'; got {position!r}"
        )
    mask = attention_mask_of(forward_func, additional_forward_args)
    if mask is None and position == "last_real":
        mask = additional_forward_args[0] if isinstance(additional_forward_args, tuple) else additional_forward_args
        if not isinstance(mask, Tensor):
            raise ValueError("explained_position='last_real' needs the attention mask as additional_forward_args")
    if mask is None:
        return -1
    return last_token_positions(mask)


MEMORY_LEAN_MODES: tuple[bool | str, ...] = (False, True, "offload")
"""What ``memory_lean`` takes: off, per-block recomputation, and recomputation with the block inputs in host memory."""


class MambaLRPBase:
    """Configuration shared by the MambaLRP attribution classes (mixed into Captum classes)."""

    forward_func: Callable[..., Any]

    def _configure(
        self,
        forward_func: Callable[..., Any],
        model: nn.Module | None,
        rules: Mapping[type[nn.Module], RuleSpec] | None,
        registry: RuleRegistry | None,
        explained_position: Position,
        plain_gradient_fallback: Fallback,
        memory_lean: bool | str = False,
        backend: str = "auto",
    ) -> None:
        if memory_lean not in MEMORY_LEAN_MODES:
            raise ValueError(
                f"memory_lean must be False, True (recompute each block in the backward pass) or 'offload' "
                f"(also keep the block inputs in host memory), got {memory_lean!r}"
            )
        self.options = ExplanationOptions(
            checkpoint_blocks=bool(memory_lean), offload_blocks=memory_lean == "offload", backend=backend
        )
        self.model = resolve_model(forward_func, model)
        self.rules = dict(rules or {})
        self.registry = registry
        self.explained_position = explained_position
        self.plain_gradient_fallback = plain_gradient_fallback

    @classmethod
    def get_name(cls) -> str:
        return cls.__name__

    def _out_of_memory_advice(self, message: str) -> str:
        """The allocator's message, with the memory-lean mode the explanation could switch to."""
        if not self.options.checkpoint_blocks:
            advice = (
                "memory_lean=True recomputes each block in the backward pass (same relevances, memory of one "
                "block's activations plus the blocks' inputs); memory_lean='offload' also keeps those inputs in "
                "host memory"
            )
        elif not self.options.offload_blocks:
            advice = "memory_lean='offload' also keeps the blocks' inputs in host memory (same relevances)"
        else:
            advice = "even one block does not fit: explain a shorter input, or a smaller batch"
        return f"MambaLRP ran out of GPU memory; {advice}. ({message.splitlines()[0] if message else ''})"

    def rule_plan(self) -> RulePlan:
        """The rule each module of the model gets (without applying anything)."""
        return plan_rules(self.model, self.rules, self.registry, self.plain_gradient_fallback)

    def _explained_output(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any,
        target: TargetType,
        explained_position: Any,
    ) -> Tensor:
        check_model_inputs(self.forward_func, inputs)
        position = self.explained_position if explained_position is _DEFAULT else explained_position
        if isinstance(position, str):
            position = _positions_from_words(position, self.forward_func, additional_forward_args)
        keep, last_tokens = None, None
        if not isinstance(target, TokenTargets) and position is not None:
            batch, length, device = inputs[0].shape[0], inputs[0].shape[1], inputs[0].device
            if accepts_logits_to_keep(self.forward_func):  # Hugging Face: logits at these positions only
                keep, position = kept_positions(position, batch, length, device)
            elif accepts_num_last_tokens(self.forward_func):  # mamba-ssm: logits at the last positions only
                last_tokens, position = last_tokens_for(position, batch, length, device)
        output = run_forward(self.forward_func, inputs, additional_forward_args, keep, last_tokens)
        if isinstance(target, TokenTargets):
            return target.select(output)
        return select_target(select_position(output, position), target)

    def _relevances(
        self, run: Callable[[], tuple[Tensor, Sequence[Tensor]]], what: str = "inputs"
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        r"""
        Run ``run`` (forward returning the explained scalars and the leaves) under the rules,
        backprop once; the relevance of each leaf: Gradient x Input plus what a rule recorded for
        it (:mod:`captum_mamba.input_relevance`).

        Returns:
            *tuple* ``(explained, relevances)``.
        """
        with (
            torch.enable_grad(),
            frozen_parameters(self.model),
            mamba_lrp_rules(self.model, self.rules, self.registry, self.plain_gradient_fallback),
            explanation_options(**vars(self.options)),
            collecting_input_relevance() as recorded,
        ):
            try:
                explained, leaves = run()
                if not explained.requires_grad:
                    raise RuntimeError("the explained output does not depend on the attributed tensors")
                gradients = torch.autograd.grad(explained.sum(), tuple(leaves), allow_unused=True)
            except torch.OutOfMemoryError as error:
                raise torch.OutOfMemoryError(self._out_of_memory_advice(str(error))) from None
        products = tuple(
            leaf.detach() * (torch.zeros_like(leaf) if g is None else g) for leaf, g in zip(leaves, gradients)
        )
        return explained.detach(), recorded.completed(leaves, products, what)
