"""``ExplainedLogits``: a model as ``f(embeddings, attention_mask) -> logits (batch, classes)``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captum_mamba.model_calls import WideLogits, accepts_logits_to_keep, kept_positions
from captum_mamba.targets import last_token_positions


class ExplainedLogits(nn.Module):
    r"""
    ``f(embeds, attention_mask) -> logits (batch, classes)``: one forward function for every
    attribution method (Captum's own included). A classifier's logits are returned as they are;
    a causal LM's are read at each row's last real token (from the mask), computed at those
    positions only, and not narrowed to float32 in a float64 model.

    Args:
        model (nn.Module): a Hugging Face-style model taking ``inputs_embeds`` and
                    ``attention_mask`` and returning an object with ``logits``.

    Examples::

        >>> forward = ExplainedLogits(model)
        >>> relevance = IntegratedGradients(forward).attribute(embeds, target=label,
        ...                                                   additional_forward_args=(mask,))
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        r"""
        Args:
            embeds (Tensor): ``(batch, length, hidden)`` input embeddings.
            attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens.

        Returns:
            *Tensor* ``(batch, classes)``.
        """
        batch, length = embeds.shape[:2]
        if attention_mask is None:
            positions = torch.full((batch,), length - 1, dtype=torch.long, device=embeds.device)
        else:
            positions = last_token_positions(attention_mask).to(embeds.device)
        with WideLogits(self.model) as wide:
            if accepts_logits_to_keep(self.model):
                keep, index = kept_positions(positions, batch, length, embeds.device)
                logits = self.model(inputs_embeds=embeds, attention_mask=attention_mask, logits_to_keep=keep).logits
                positions = index
            else:
                logits = self.model(inputs_embeds=embeds, attention_mask=attention_mask).logits
        logits = wide.widen(logits)
        if logits.dim() == 2:
            return logits
        return logits[torch.arange(batch, device=logits.device), positions]
