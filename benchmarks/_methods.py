"""The methods the GPU benchmark scripts time, on a causal LM's last-position logits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def last_logit_methods(model: nn.Module, cp_attention: type[nn.Module] | None = None) -> dict[str, Callable[..., Any]]:
    r"""
    ``{name: run(embeds, target)}`` through the model's own forward, the logit of ``target`` at
    the last position (logits computed there only):

    * ``mamba_lrp``: ``MambaLRP(model)``;
    * ``mamba_lrp_cp`` (with ``cp_attention``): CP-LRP on the model's attention modules of that type;
    * ``input_x_gradient``: Captum ``InputXGradient``;
    * ``forward``: a no-grad forward pass.
    """
    from captum.attr import InputXGradient

    from captum_mamba import MambaLRP
    from captum_mamba.rules.attention import AttentionRule

    def last_logits(embeds: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[:, -1]

    def forward(embeds: torch.Tensor, target: int) -> torch.Tensor:
        with torch.no_grad():
            return last_logits(embeds)

    methods: dict[str, Callable[..., Any]] = {"mamba_lrp": lambda e, t: MambaLRP(model).attribute(e, target=t)}
    if cp_attention is not None:
        cp_rules = {cp_attention: AttentionRule("cp")}
        methods["mamba_lrp_cp"] = lambda e, t: MambaLRP(model, rules=cp_rules).attribute(e, target=t)
    methods["input_x_gradient"] = lambda e, t: InputXGradient(last_logits).attribute(
        e.clone().requires_grad_(), target=t
    )
    methods["forward"] = forward
    return methods
