"""Pieces shared by the Hugging Face Mamba families (Mamba, Mamba2, FalconMamba)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule


def widened(tensor: Tensor) -> Tensor:
    """``tensor`` in at least ``float32``; ``float64`` stays ``float64``."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def mask_padding(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Zero the states of padding tokens, as the Hugging Face mixers do."""
    if attention_mask is None:
        return hidden
    return (hidden * attention_mask[:, :, None]).to(hidden.dtype)


class CausalLMHeadRule(MambaLRPRule):
    r"""
    ``lm_head(backbone(x))``: LRP-0 through the (usually tied, bias-free) output projection.

    The Hugging Face ``*ForCausalLM`` forward casts logits with ``.float()``, which narrows a
    ``float64`` model's output; this forward widens to at least ``float32`` instead, so relevance
    and the explained logit agree to ``float64`` precision. Everything else is as in the model.

    Args:
        output_class (type): the model's ``ModelOutput`` class for causal-LM outputs.
    """

    replaces_forward = True

    def __init__(self, output_class: type) -> None:
        self.output_class = output_class

    def module_forward(  # type: ignore[override]
        self,
        model: nn.Module,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        cache_params: Any = None,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> Any:
        outputs = model.backbone(
            input_ids,
            cache_params=cache_params,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            use_cache=use_cache,
            attention_mask=attention_mask,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = widened(model.lm_head(hidden[:, keep].to(model.lm_head.weight.dtype)))
        loss = None
        if labels is not None:
            loss = model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size, **kwargs)
        result = self.output_class(
            loss=loss, logits=logits, cache_params=outputs.cache_params, hidden_states=outputs.hidden_states
        )
        use_dict = return_dict if return_dict is not None else model.config.return_dict
        return result if use_dict else result.to_tuple()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.output_class.__name__})"
