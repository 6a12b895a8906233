r"""Gated MLPs (SwiGLU): ``down(act(gate(x)) * up(x))``.

The activation module runs under its own rule (SiLU: ``x·[σ(x)]const``, MambaLRP Eq. 4; the
identity rule for the activation, as AttnLRP prescribes), the product of the two branches
gets the uniform (half) rule (as Mamba's gate, Eq. 9), the projections are linear.
"""

from __future__ import annotations

from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.gate import GateHalfRule


class GatedMLPRule(MambaLRPRule):
    r"""
    A gated MLP module whose sub-modules are named by the arguments (Hugging Face Llama / Qwen
    names by default).

    Args:
        gate (GateHalfRule, optional): rule of the branch product; ``None`` for the plain
                    product (ablation). Default: ``GateHalfRule()``
        gate_proj (str, optional): the gate branch's projection. Default: "gate_proj"
        up_proj (str, optional): the value branch's projection. Default: "up_proj"
        down_proj (str, optional): the output projection. Default: "down_proj"
        act (str, optional): the activation module on the gate branch. Default: "act_fn"
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
    ) -> None:
        self.gate_rule = gate
        self.names = (gate_proj, up_proj, down_proj, act)

    def module_forward(self, mlp: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        gate_proj, up_proj, down_proj, act = (getattr(mlp, name) for name in self.names)
        activated = act(gate_proj(x))  # the activation module's own rule applies
        values = up_proj(x)
        product = activated * values if self.gate_rule is None else self.gate_rule.apply(activated, values)
        return down_proj(product)

    def __repr__(self) -> str:
        return f"GatedMLPRule({'half rule' if self.gate_rule is not None else 'plain product'})"
