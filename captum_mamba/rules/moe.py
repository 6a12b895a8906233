r"""Mixture-of-experts rule at transformers' experts-function interface.

A transformers 5.x experts module (a class decorated with ``use_experts_implementation``) keeps
its experts' weights as stacked tensors (``gate_up_proj``: ``(experts, 2·inner, hidden)``,
``down_proj``: ``(experts, hidden, inner)``) and, when called with the tokens, the indices of
their chosen experts and the routing weights, dispatches through ``ALL_EXPERTS_FUNCTIONS`` by
``config._experts_implementation``. While an :class:`ExpertsRule` runs such a module, that name
is switched to :data:`EXPERTS_NAME`, a function registered here that computes the same mixture
with the rule applied (the decorator's layout flags ``has_gate``, ``is_concatenated``,
``is_transposed``, ``has_bias`` and ``has_post_expert_norm`` are honoured), so every family's
experts are covered without copying their modeling code.

The rule, for token ``x`` routed to experts ``e`` with weights ``w_e``:

.. math::

    y = \sum_{e \in \mathrm{top}k(x)} [w_e]_\mathrm{const} \cdot
        \mathrm{down}_e\big(\mathrm{act}(\mathrm{gate}_e(x)) \odot \mathrm{up}_e(x)\big)

* the **routing weights are held constant** (as the attention weights in CP-LRP and the
  selection in the SSM rule): the mixture is then a weighted sum of the chosen experts, linear
  in their outputs, and relevance flows through the chosen experts only; the router (its
  logits, softmax and top-k) carries none;
* each expert is a gated MLP: the activation module runs under its own rule (SiLU:
  ``x·[σ(x)]const``), the product ``act(gate)·up`` gets the uniform (half) rule, the
  projections are linear (their biases, where present, absorb relevance).

The sparse-MoE block around the experts (flatten the tokens, route, call the experts, reshape)
does nothing non-linear beyond the router and the experts, so it needs no rule of its own: it
is a container, and so is the router.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.dispatch import dispatched_to
from captum_mamba.rules.gate import GateHalfRule, SigmoidGateRule
from captum_mamba.rules.silu import SiLUIdentityRule

#: The experts-implementation name the rule registers with transformers.
EXPERTS_NAME = "captum_mamba_lrp"
#: Activations that experts hold as plain functions (LFM2-MoE's ``act_fn = F.silu``), with their identity rules.
_FUNCTIONAL_ACTIVATIONS: dict[Any, MambaLRPRule] = {F.silu: SiLUIdentityRule()}


@dataclass
class _Run:
    """The rule running an experts module, and whether its forward reached the registered function."""

    rule: ExpertsRule
    dispatched: bool = False


_ACTIVE: ContextVar[_Run | None] = ContextVar("captum_mamba_experts_rule", default=None)


def _default_gate() -> Any:
    """transformers' default ``_apply_gate`` (``act(gate) * up``), or ``None`` if it has none."""
    from transformers.integrations import moe

    return getattr(moe, "_default_apply_gate", None)


def _check_layout(module: nn.Module) -> None:
    """Refuse experts whose computation the rule does not cover, naming what is not covered."""
    name = type(module).__name__
    gate = getattr(type(module), "_apply_gate", None)
    if getattr(module, "has_gate", True) and gate is not None and gate is not _default_gate():
        raise NotImplementedError(
            f"{name} gates its experts with its own _apply_gate (e.g. a clamped or scaled SwiGLU); "
            "ExpertsRule covers act(gate) * up only"
        )
    if getattr(module, "_is_expert_parallel", False):
        raise NotImplementedError(f"ExpertsRule explains experts on one device; {name} is expert-parallel")
    act = getattr(module, "act_fn", None)
    if not isinstance(act, nn.Module) and act not in _FUNCTIONAL_ACTIVATIONS:
        raise NotImplementedError(
            f"ExpertsRule needs the experts' activation as a module named act_fn (or one of the functions "
            f"{', '.join(f.__name__ for f in _FUNCTIONAL_ACTIVATIONS)}); {name} has {act!r}"
        )


def _activation(module: nn.Module) -> Any:
    """The experts' activation under its rule: the module (its own declared rule applies) or a function's rule."""
    act = module.act_fn
    return act if isinstance(act, nn.Module) else _FUNCTIONAL_ACTIVATIONS[act].apply


def _project(module: nn.Module, name: str, expert: int, x: Tensor) -> Tensor:
    """``x`` through expert ``expert``'s projection ``name`` (stored ``(out, in)``, or ``(in, out)`` if transposed)."""
    weight = getattr(module, name)[expert]
    out = x @ weight if getattr(module, "is_transposed", False) else x @ weight.transpose(0, 1)
    if getattr(module, "has_bias", False):
        out = out + getattr(module, f"{name}_bias")[expert]
    return out


def experts_with_rules(
    module: nn.Module, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor, *args: Any, **kwargs: Any
) -> Tensor:
    r"""
    The experts function registered as :data:`EXPERTS_NAME` (transformers' interface:
    ``(module, hidden_states, top_k_index, top_k_weights) -> hidden_states``), with the rule of
    the :class:`ExpertsRule` running the module.

    Args:
        module (nn.Module): the experts module.
        hidden_states (Tensor): the tokens ``(tokens, hidden)``.
        top_k_index (Tensor): each token's chosen experts ``(tokens, k)``; indices outside
                    ``[0, num_experts)`` (expert-parallel sentinels) are skipped.
        top_k_weights (Tensor): their routing weights ``(tokens, k)``; held constant.

    Returns:
        *Tensor* ``(tokens, hidden)``: the weighted sum of the chosen experts' outputs.
    """
    run = _ACTIVE.get()
    if run is None:
        raise RuntimeError(f"the {EXPERTS_NAME!r} experts function runs only inside an ExpertsRule")
    run.dispatched = True
    _check_layout(module)
    weights = top_k_weights.detach()  # the routing weights held constant: no relevance to the router
    output = torch.zeros_like(hidden_states)
    num_experts = getattr(module, "num_experts", None)
    for expert in torch.unique(top_k_index).tolist():
        if expert < 0 or (num_experts is not None and expert >= num_experts):
            continue
        tokens, slots = torch.where(top_k_index == expert)
        expert_output = run.rule.expert(module, expert, hidden_states[tokens])
        weighted = expert_output * weights[tokens, slots, None].to(expert_output.dtype)
        # out of place: a sum over the chosen experts, relevance splits over it as the gradient says
        output = output.index_add(0, tokens, weighted.to(output.dtype))
    return output


def _register() -> None:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if EXPERTS_NAME not in ALL_EXPERTS_FUNCTIONS:
        # a class-wide registration: every ExpertsInterface instance (a model's own included) knows the name
        ALL_EXPERTS_FUNCTIONS.register(EXPERTS_NAME, experts_with_rules)


class ExpertsRule(MambaLRPRule):
    r"""
    The rule of a transformers experts module (any class decorated with
    ``use_experts_implementation``): the module's own forward runs, and its call of the experts
    function computes the mixture under the rule (see the module docstring): routing weights
    held constant, each chosen expert a gated MLP with its activation's own rule and the half
    rule on ``act(gate) * up``.

    Args:
        gate (GateHalfRule, optional): rule of each expert's product ``act(gate) * up``; ``None``
                    for the plain product (ablation). Default: ``GateHalfRule()``
    """

    replaces_forward = True
    components = {"gate": "gate_rule"}

    def __init__(self, gate: GateHalfRule | None = GateHalfRule()) -> None:
        self.gate_rule = gate

    def expert(self, module: nn.Module, expert: int, x: Tensor) -> Tensor:
        r"""
        One expert's MLP on the tokens routed to it, under the rule.

        Args:
            module (nn.Module): the experts module.
            expert (int): the expert's index.
            x (Tensor): its tokens ``(tokens, hidden)``.

        Returns:
            *Tensor* ``(tokens, hidden)``, before the routing weight.
        """
        if getattr(module, "has_gate", True):
            gate_up = _project(module, "gate_up_proj", expert, x)
            if getattr(module, "is_concatenated", True):
                gate, up = gate_up.chunk(2, dim=-1)  # [gate; up]
            else:  # interleaved [g0, u0, g1, u1, ...], as the flag declares (transformers' own functions
                # leave the split to _apply_gate, so its classes with this layout bring their own gate)
                gate, up = gate_up[..., ::2], gate_up[..., 1::2]
            activated = _activation(module)(gate)  # the activation's identity rule (SiLU: x·[σ(x)]const)
            hidden = activated * up if self.gate_rule is None else self.gate_rule.apply(activated, up)
        else:
            hidden = _activation(module)(_project(module, "up_proj", expert, x))
        out = _project(module, "down_proj", expert, hidden)
        if getattr(module, "has_post_expert_norm", False):
            out = module.post_expert_norm(out)  # the norm module's own rule
        return out

    def module_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        _register()
        config = getattr(module, "config", None)
        if config is None or not hasattr(config, "_experts_implementation") or not hasattr(module, "has_gate"):
            raise TypeError(
                f"ExpertsRule runs experts modules that dispatch through transformers' experts interface "
                f"(use_experts_implementation); {type(module).__name__} does not"
            )
        run = _Run(self)
        with dispatched_to(config, "_experts_implementation", EXPERTS_NAME, _ACTIVE, run):
            output = type(module).forward(module, *args, **kwargs)
        if not run.dispatched:
            raise TypeError(
                f"{type(module).__name__}'s forward did not call transformers' experts interface, so ExpertsRule "
                "could not apply; declare a rule for it that computes its experts"
            )
        return output

    def __repr__(self) -> str:
        return f"ExpertsRule({'half rule' if self.gate_rule is not None else 'plain product'})"


class MoEBlockRule(MambaLRPRule):
    r"""
    A sparse mixture-of-experts block whose own forward adds a sigmoid-gated shared expert,
    ``experts(x) + σ(gate(x)) · shared(x)`` (Qwen3-Next, Qwen3.5-MoE). The block's own forward
    runs (the router, the experts under :class:`ExpertsRule`, the shared expert under its MLP
    rule); the shared expert's gate, a routing weight of the shared expert, is held constant as
    the routed experts' weights are: all of the shared term's relevance flows into the shared
    expert, none into its gate.

    Args:
        shared_gate (SigmoidGateRule, optional): the rule of ``σ(gate(x)) · shared(x)``;
                    ``None``: the plain product (ablation). Default: ``SigmoidGateRule("constant")``
    """

    replaces_forward = True
    components = {"gate": "shared_gate"}

    def __init__(self, shared_gate: SigmoidGateRule | None = SigmoidGateRule("constant")) -> None:
        self.shared_gate = shared_gate

    def module_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.shared_gate is None:
            return type(module).forward(module, *args, **kwargs)
        with self.shared_gate.in_forward() as applied:
            output = type(module).forward(module, *args, **kwargs)
        if not applied:
            raise TypeError(
                f"{type(module).__name__}'s forward formed no product with a sigmoid gate, so MoEBlockRule could "
                "not apply; declare it a container if it has no gated shared expert"
            )
        return output

    def __repr__(self) -> str:
        return f"MoEBlockRule({self.shared_gate!r})"


__all__ = ["EXPERTS_NAME", "ExpertsRule", "MoEBlockRule", "experts_with_rules"]
