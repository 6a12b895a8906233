r"""Gated MLPs (SwiGLU): ``down(act(gate(x)) * up(x))``.

The activation module runs under its own rule (SiLU: ``x·[σ(x)]const``, MambaLRP Eq. 4; the
identity rule for the activation, as AttnLRP prescribes), the product of the two branches
gets the uniform (half) rule (as Mamba's gate, Eq. 9), the projections are linear. Constant
multipliers (FalconH1's µP ``gate_multiplier`` and ``down_multiplier``) scale a branch or the
output: linear maps, so relevance passes them as it is (LRP-0).
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
    ) -> None:
        self.gate_rule = gate
        self.names = (gate_proj, up_proj, down_proj, act)
        self.multipliers = (gate_multiplier, down_multiplier)

    def branches(self, mlp: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        r"""
        The gate branch before its activation (and multiplier) and the value branch.

        Args:
            mlp (nn.Module): the MLP module.
            x (Tensor): its input; ``args`` and ``kwargs`` are the rest of its call.

        Returns:
            *tuple* ``(gate pre-activation, values)``.
        """
        return getattr(mlp, self.names[0])(x), getattr(mlp, self.names[1])(x)

    def module_forward(self, mlp: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # type: ignore[override]
        down_proj, act = (getattr(mlp, name) for name in self.names[2:])
        gate_multiplier, down_multiplier = (None if name is None else getattr(mlp, name) for name in self.multipliers)
        gate, values = self.branches(mlp, x, *args, **kwargs)
        if gate_multiplier is not None:
            gate = gate * gate_multiplier  # a constant: LRP-0
        activated = act(gate)  # the activation module's own rule applies
        product = activated * values if self.gate_rule is None else self.gate_rule.apply(activated, values)
        out = down_proj(product)
        return out if down_multiplier is None else out * down_multiplier

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'half rule' if self.gate_rule is not None else 'plain product'})"
