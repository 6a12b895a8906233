r"""MLP rules: gated MLPs (SwiGLU) ``down(act(gate(x)) * up(x))`` and plain MLPs ``down(act(up(x)))``.

The activation module runs under its own rule, an identity rule that passes relevance element-wise
(SiLU: ``x·[σ(x)]const``, MambaLRP Eq. 4; squared ReLU: ``x·[relu(x)]const``, see
:mod:`captum_mamba.rules.activation`; GELU: ``x·[Φ(x)]const``; the identity rule for activations,
as AttnLRP prescribes), the product of a gated MLP's two branches gets the uniform (half) rule (as
Mamba's gate, Eq. 9), the projections are linear (LRP-0). Constant multipliers (Falcon-H1's µP
``gate_multiplier`` and ``down_multiplier``) scale a branch or the output: linear maps, so
relevance passes them as it is (LRP-0).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.gate import GateHalfRule


class GatedMLPRule(MambaLRPRule):
    r"""
    A gated MLP module whose sub-modules are named by the arguments (Hugging Face Llama / Qwen
    names by default). MLPs that form their branches differently (a fused ``gate_up_proj``,
    adapters) override :meth:`branches`.

    Args:
        gate (GateHalfRule, optional): rule of the branch product; ``None`` for the plain
                    product (ablation). Default: ``GateHalfRule()``
        gate_proj (str, optional): the gate branch's projection. Default: "gate_proj"
        up_proj (str, optional): the value branch's projection. Default: "up_proj"
        down_proj (str, optional): the output projection. Default: "down_proj"
        act (str, optional): the activation module on the gate branch. Default: "act_fn"
        gate_multiplier (str, optional): the module's attribute holding a constant that scales
                    the gate pre-activation (``act(gate(x) * m)``); ``None``: no multiplier.
                    Default: None
        down_multiplier (str, optional): the module's attribute holding a constant that scales
                    the output (``down(...) * m``); ``None``: no multiplier. Default: None
        gate_up_proj (str, optional): one projection whose output holds both branches, the gate
                    branch's half first (IBM Granite's ``input_linear``); replaces ``gate_proj``
                    and ``up_proj``. Default: None
        activation (MambaLRPRule, optional): the activation's rule, applied with its ``apply``, for
                    MLPs that call their activation as a function rather than a module (LFM2's
                    ``F.silu``: :class:`~captum_mamba.rules.SiLUIdentityRule`); replaces ``act``.
                    Default: None (the activation module ``act`` runs under its own rule)
    """

    replaces_forward = True
    components = {"gate": "gate_rule"}

    def __init__(
        self,
        gate: GateHalfRule | None = GateHalfRule(),
        gate_proj: str = "gate_proj",
        up_proj: str = "up_proj",
        down_proj: str = "down_proj",
        act: str = "act_fn",
        gate_multiplier: str | None = None,
        down_multiplier: str | None = None,
        gate_up_proj: str | None = None,
        activation: MambaLRPRule | None = None,
    ) -> None:
        self.gate_rule = gate
        self.names = (gate_proj, up_proj, down_proj, act)
        self.multipliers = (gate_multiplier, down_multiplier)
        self.gate_up_proj = gate_up_proj
        self.activation = activation

    def branches(self, mlp: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        r"""
        The gate branch before its activation (and multiplier) and the value branch.

        Args:
            mlp (nn.Module): the MLP module.
            x (Tensor): its input; ``args`` and ``kwargs`` are the rest of its call.

        Returns:
            *tuple* ``(gate pre-activation, values)``.
        """
        if self.gate_up_proj is not None:  # one linear map, split in two: still linear in x for each branch
            gate, values = getattr(mlp, self.gate_up_proj)(x).chunk(2, dim=-1)
            return gate, values
        return getattr(mlp, self.names[0])(x), getattr(mlp, self.names[1])(x)

    def module_forward(self, mlp: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # type: ignore[override]
        down_proj = getattr(mlp, self.names[2])
        gate_multiplier, down_multiplier = (None if name is None else getattr(mlp, name) for name in self.multipliers)
        gate, values = self.branches(mlp, x, *args, **kwargs)
        if gate_multiplier is not None:
            gate = gate * gate_multiplier  # a constant: LRP-0
        if self.activation is not None:  # an activation function: its identity rule, applied here
            activated = self.activation.apply(gate)
        else:
            activated = getattr(mlp, self.names[3])(gate)  # the activation module's own rule applies
        product = activated * values if self.gate_rule is None else self.gate_rule.apply(activated, values)
        out = down_proj(product)
        return out if down_multiplier is None else out * down_multiplier

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'half rule' if self.gate_rule is not None else 'plain product'})"


class MLPRule(MambaLRPRule):
    r"""
    A plain (ungated) MLP ``down(act(up(x)))`` (Nemotron-H's, with a squared ReLU): the two
    projections are linear (LRP-0) and the activation gets an identity-style rule, which passes
    relevance element-wise, so the MLP conserves it.

    Args:
        activation (MambaLRPRule, optional): the activation's rule, applied with its ``apply``
                    (e.g. :class:`~captum_mamba.rules.activation.SquaredReLUIdentityRule` for a
                    squared ReLU kept as a function). Default: None (the activation module runs
                    under its own declared rule, e.g. Hugging Face's ``ReLUSquaredActivation``
                    under ``SquaredReLUIdentityRule``)
        up_proj (str, optional): the input projection. Default: "up_proj"
        down_proj (str, optional): the output projection. Default: "down_proj"
        act (str, optional): the activation module (used when ``activation`` is None).
                    Default: "act_fn"
    """

    replaces_forward = True

    def __init__(
        self,
        activation: MambaLRPRule | None = None,
        up_proj: str = "up_proj",
        down_proj: str = "down_proj",
        act: str = "act_fn",
    ) -> None:
        self.activation = activation
        self.names = (up_proj, down_proj, act)

    def module_forward(self, mlp: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        up_proj, down_proj, act = self.names
        hidden = getattr(mlp, up_proj)(x)
        # the activation passes relevance element-wise (identity-style rule), the projections are linear
        activated = getattr(mlp, act)(hidden) if self.activation is None else self.activation.apply(hidden)
        return getattr(mlp, down_proj)(activated)

    def __repr__(self) -> str:
        return f"MLPRule({self.activation!r})" if self.activation is not None else "MLPRule()"
