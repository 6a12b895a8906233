"""Canonical (leaf-module) forms of Hugging Face Mamba blocks and heads, for Captum's LRP engine."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers.models.mamba import modeling_mamba

from captum_mamba.canonizers.leaves import (
    Addition_Module,
    CausalDepthwiseConv1d,
    DetachedRMSNorm,
    GateHalfProduct,
    SelectiveSSMCore,
    SiLUIdentity,
    TokenEmbedding,
    TokenPooling,
)
from captum_mamba.models.hf_common import check_cache, check_padding, mask_padding


def detached_norm(norm: nn.Module) -> DetachedRMSNorm:
    """The leaf form of a Hugging Face ``MambaRMSNorm`` (same weight parameter)."""
    return DetachedRMSNorm(norm.weight, norm.variance_epsilon)


class CanonicalMambaMixer(nn.Module):
    r"""
    A Mamba-1 mixer as leaves: ``in_proj`` -> (conv -> SiLU -> SSM core, SiLU(z)) -> gate -> ``out_proj``.
    ``in_proj`` and ``out_proj`` are the original ``nn.Linear`` modules; the other leaves share
    the original parameters.
    """

    def __init__(self, mixer: modeling_mamba.MambaMixer) -> None:
        super().__init__()
        self.layer_idx = mixer.layer_idx
        self.in_proj = mixer.in_proj
        self.conv = CausalDepthwiseConv1d(mixer.conv1d.weight, mixer.conv1d.bias)
        self.conv_activation = SiLUIdentity()
        self.ssm = SelectiveSSMCore(mixer, mixer.time_step_rank, mixer.ssm_state_size)
        self.gate_activation = SiLUIdentity()
        self.gate = GateHalfProduct()
        self.out_proj = mixer.out_proj

    def forward(self, hidden_states: Tensor, cache_params: Any = None, attention_mask: Tensor | None = None) -> Tensor:
        check_cache(cache_params, self.layer_idx)
        check_padding(attention_mask, self.in_proj)
        x, z = self.in_proj(mask_padding(hidden_states, attention_mask)).chunk(2, dim=-1)
        u = mask_padding(self.conv_activation(self.conv(x)), attention_mask)
        return self.out_proj(self.gate(self.ssm(u), self.gate_activation(z)))


class CanonicalMambaBlock(nn.Module):
    r"""``add(x, mixer(norm(x)))`` with the residual sum as Captum's ``Addition_Module`` leaf."""

    def __init__(self, block: modeling_mamba.MambaBlock) -> None:
        super().__init__()
        self.norm = detached_norm(block.norm)
        self.mixer = CanonicalMambaMixer(block.mixer)
        self.add = Addition_Module()

    def forward(self, hidden_states: Tensor, cache_params: Any = None, attention_mask: Tensor | None = None, **_: Any):
        mixed = self.mixer(self.norm(hidden_states), cache_params=cache_params, attention_mask=attention_mask)
        return self.add(hidden_states, mixed)


def canonical_embedding(embedding: nn.Embedding) -> TokenEmbedding:
    return TokenEmbedding(embedding.weight, embedding.padding_idx)


def classifier_forward(model: nn.Module, pool: TokenPooling):
    """A sequence classifier's forward with the pooling as a leaf (the mask is handed to the leaf)."""

    def forward(
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        **_: Any,
    ) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = model.backbone(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        pool.attention_mask = attention_mask
        return SequenceClassifierOutput(logits=model.score(pool(hidden)))

    return forward
