"""MambaLRP in Captum's LLM attribution API (``LLMGradientAttribution``).

Captum's own ``LLMGradientAttribution(LayerMambaLRP(model, model.backbone.embeddings), tokenizer)``
works as it is: it explains the log-probability of each target token with any
``LayerGradientXActivation``. :class:`MambaLLMAttribution` is that class with two additions:

* ``explain="logit"`` explains the target token's logit instead, so that the relevances of the
  prompt (and of the earlier target tokens) sum to it: conservation, the MambaLRP contract. The
  log-probability ``logit_t - logsumexp(logits)`` is not a sum over tokens, and explaining it
  through the log-softmax mixes in every other token's logit.
* ``TextTemplateInput`` is accepted (Captum's gradient class takes ``TextTokenInput`` only): the
  template is filled in and tokenized, and each template value gets the summed relevance of the
  tokens it produced.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LLMAttributionResult, LLMGradientAttribution, TextTemplateInput, TextTokenInput
from captum.attr._core.llm_attr import GradientForwardFunc
from torch import Tensor, nn

from captum_mamba.layer_mamba_lrp import LayerMambaLRP

EXPLAINED = ("log_prob", "logit")


class _TargetLogit(GradientForwardFunc):
    """Captum's forward for gradient LLM attribution, returning the target token's logit."""

    def forward(  # type: ignore[override]
        self, perturbed_tensor: Tensor, inp: Any, target_tokens: Tensor, cur_target_idx: int
    ) -> Tensor:
        input_ids = self.attr._format_model_input(inp.to_model_input(perturbed_tensor))["input_ids"]
        if cur_target_idx:
            earlier = target_tokens[:cur_target_idx].unsqueeze(0).expand(input_ids.size(0), -1)
            input_ids = torch.cat([input_ids, earlier.to(input_ids.device)], dim=1)
        logits = self.model(input_ids).logits[:, -1]
        return logits[:, target_tokens[cur_target_idx]]


class MambaLLMAttribution(LLMGradientAttribution):
    r"""
    Captum's ``LLMGradientAttribution`` with MambaLRP on the embedding layer of a causal LM.

    Args:
        model (nn.Module): a Hugging Face causal LM of a declared family (Mamba, Mamba2,
                    FalconMamba, Llama, Qwen3, Bamba, ...) with ``get_input_embeddings()`` and
                    ``generate()``.
        tokenizer: its Hugging Face tokenizer.
        explain (str, optional): ``"log_prob"`` (Captum's convention: the log-probability of
                    each target token) or ``"logit"`` (its logit; relevances then sum to it).
                    Default: "log_prob"
        layer (nn.Module, optional): the layer whose output relevance is read. Default: the
                    input embeddings.
        **mamba_lrp_kwargs: passed to :class:`~captum_mamba.LayerMambaLRP` (``rules``,
                    ``memory_lean``, ``backend``, ...).

    Example::

        >>> llm = MambaLLMAttribution(model, tokenizer, explain="logit")
        >>> result = llm.attribute(TextTokenInput("The capital of France is", tokenizer), target=" Paris")
        >>> result.plot_token_attr()
    """

    SUPPORTED_INPUTS = (TextTokenInput, TextTemplateInput)

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        explain: str = "log_prob",
        layer: nn.Module | None = None,
        **mamba_lrp_kwargs: Any,
    ) -> None:
        if explain not in EXPLAINED:
            raise ValueError(f"explain must be one of {EXPLAINED}, got {explain!r}")
        if not hasattr(model, "get_input_embeddings"):
            raise TypeError(f"{type(model).__name__} has no get_input_embeddings(); pass the embedding layer as layer=")
        method = LayerMambaLRP(model, layer if layer is not None else model.get_input_embeddings(), **mamba_lrp_kwargs)
        super().__init__(method, tokenizer)
        self.explain = explain
        if explain == "logit":
            self.attr_method.forward_func = _TargetLogit(self)

    def attribute(  # type: ignore[override]
        self,
        inp: TextTokenInput | TextTemplateInput,
        target: str | Tensor | None = None,
        gen_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMAttributionResult:
        r"""
        Args:
            inp (TextTokenInput or TextTemplateInput): the prompt.
            target (str or Tensor, optional): the response explained; ``None`` generates it
                        with ``gen_args``. Default: None
            gen_args (dict, optional): ``model.generate`` arguments when ``target`` is None.
            **kwargs: passed to ``LayerMambaLRP.attribute``.

        Returns:
            *LLMAttributionResult*: ``token_attr`` ``(n_target_tokens, n_features)`` and
            ``seq_attr`` (their sum); features are the prompt tokens, or the template values
            for a ``TextTemplateInput``.
        """
        if not isinstance(inp, TextTemplateInput):
            return super().attribute(inp, target=target, gen_args=gen_args, **kwargs)
        if inp.mask is not None:
            raise ValueError("TextTemplateInput with a feature mask is not supported; group the values in the template")
        text = inp.to_model_input()
        tokens = TextTokenInput(text, self.tokenizer)
        per_token = super().attribute(tokens, target=target, gen_args=gen_args, **kwargs)
        membership = _value_membership(inp, text, self.tokenizer, per_token.token_attr.shape[1]).to(
            per_token.token_attr
        )
        token_attr = per_token.token_attr @ membership
        return LLMAttributionResult(
            seq_attr=token_attr.sum(0),
            token_attr=token_attr,
            input_tokens=list(inp.dict_keys or inp.values),
            output_tokens=per_token.output_tokens,
        )


def _value_spans(inp: TextTemplateInput) -> list[tuple[int, int]]:
    """Character span of each template value in the filled-in template."""
    marker = "\x00"
    spans = []
    for index, value in enumerate(inp.values):
        values = list(inp.values)
        values[index] = marker
        filled = inp.format_fn(**dict(zip(inp.dict_keys, values))) if inp.dict_keys else inp.format_fn(*values)
        start = filled.index(marker)
        spans.append((start, start + len(value)))
    return spans


def _value_membership(inp: TextTemplateInput, text: str, tokenizer: Any, n_tokens: int) -> Tensor:
    """``(n_tokens, n_values)``: 1 where a token's characters overlap a value's span."""
    encoding = tokenizer(text, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    if len(offsets) != n_tokens:
        raise ValueError(
            f"the tokenizer's offsets cover {len(offsets)} tokens but the prompt has {n_tokens}; "
            "a fast (Rust) Hugging Face tokenizer is needed for TextTemplateInput"
        )
    membership = torch.zeros(n_tokens, len(inp.values))
    for value, (begin, end) in enumerate(_value_spans(inp)):
        for token, (start, stop) in enumerate(offsets):
            if stop > start and start < end and stop > begin:
                membership[token, value] = 1.0
    return membership
