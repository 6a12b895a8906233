"""Sequence-classification heads for Mamba and hybrid backbones (transformers ships none for Mamba, Mamba2,
FalconMamba, Bamba, Nemotron-H, Granite 4.0 hybrids, Falcon-H1, Qwen3.5-MoE, OLMo hybrid, Kimi Linear, LFM2 and
LFM2-MoE)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    BambaConfig,
    BambaModel,
    FalconMambaConfig,
    FalconMambaModel,
    Mamba2Config,
    Mamba2Model,
    MambaConfig,
    MambaModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bamba.modeling_bamba import BambaPreTrainedModel
from transformers.models.falcon_h1.modeling_falcon_h1 import FalconH1Model, FalconH1PreTrainedModel
from transformers.models.falcon_mamba.modeling_falcon_mamba import FalconMambaPreTrainedModel
from transformers.models.granitemoehybrid.modeling_granitemoehybrid import (
    GraniteMoeHybridModel,
    GraniteMoeHybridPreTrainedModel,
)
from transformers.models.kimi_linear.modeling_kimi_linear import KimiLinearModel, KimiLinearPreTrainedModel
from transformers.models.lfm2.modeling_lfm2 import Lfm2Model, Lfm2PreTrainedModel
from transformers.models.lfm2_moe.modeling_lfm2_moe import Lfm2MoeModel, Lfm2MoePreTrainedModel
from transformers.models.mamba.modeling_mamba import MambaPreTrainedModel
from transformers.models.mamba2.modeling_mamba2 import Mamba2PreTrainedModel
from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHModel, NemotronHPreTrainedModel
from transformers.models.olmo_hybrid.modeling_olmo_hybrid import OlmoHybridModel, OlmoHybridPreTrainedModel
from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeTextConfig
from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import Qwen3_5MoePreTrainedModel, Qwen3_5MoeTextModel

POOLINGS = ("mean", "last")


def pool_hidden_states(hidden: Tensor, attention_mask: Tensor | None, pooling: str) -> Tensor:
    r"""
    Pool ``(batch, length, hidden)`` states over the real (unmasked) tokens.

    Args:
        hidden (Tensor): the backbone's final hidden states.
        attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens (right or left padding).
        pooling (str): ``"mean"`` (average of real tokens) or ``"last"`` (last real token).

    Returns:
        *Tensor* of shape ``(batch, hidden)``. Both poolings are linear in ``hidden``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    last = attention_mask.long().cumsum(1).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class TokenPooling(nn.Module):
    r"""
    Pooling of hidden states over real tokens (linear: relevance follows the gradient). The
    attention mask is a keyword argument, so Captum's hooks see only the hidden states.

    Args:
        pooling (str): ``"mean"`` or ``"last"``.
    """

    def __init__(self, pooling: str) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling

    def forward(self, hidden: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        return pool_hidden_states(hidden, attention_mask, self.pooling)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


class SequenceClassifier:
    r"""
    A Mamba (or hybrid) backbone, pooling over tokens, and a linear classifier (shared by the families).

    Configured through the family's config with two extra fields: ``pooling`` (``"mean"`` or
    ``"last"``, default ``"mean"``) and ``classifier_bias`` (default ``True``); ``num_labels``
    sets the number of classes. Saved and loaded with ``save_pretrained`` /
    ``from_pretrained`` like any Hugging Face model.
    """

    backbone_class: type[nn.Module]

    def _build(self, config: Any) -> None:
        self.pooling = getattr(config, "pooling", "mean")
        if self.pooling not in POOLINGS:
            raise ValueError(f"config.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        self.backbone = self.backbone_class(config)
        self.pool = TokenPooling(self.pooling)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=getattr(config, "classifier_bias", True))

    def get_input_embeddings(self) -> nn.Embedding:
        """The backbone's token embedding (``embeddings`` of Mamba backbones, ``embed_tokens`` of Bamba)."""
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        """Replace the backbone's token embedding."""
        self.backbone.set_input_embeddings(new_embeddings)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = False,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        r"""
        Args:
            input_ids (Tensor, optional): token ids ``(batch, length)``.
            attention_mask (Tensor, optional): 1 for real tokens (right or left padding).
            inputs_embeds (Tensor, optional): embeddings instead of ``input_ids``.
            labels (Tensor, optional): class indices; adds a cross-entropy ``loss``.

        Returns:
            *SequenceClassifierOutput* with ``logits`` of shape ``(batch, num_labels)``.
        """
        hidden = self.backbone(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        pooled = self.pool(hidden, attention_mask=attention_mask)
        # the backbone may return a wider stream (residual_in_fp32 in a half-precision model): the head's
        # dtype, as the causal-LM heads do
        logits = self.score(pooled.to(self.score.weight.dtype))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MambaForSequenceClassification(SequenceClassifier, MambaPreTrainedModel):
    __doc__ = SequenceClassifier.__doc__
    backbone_class = MambaModel

    def __init__(self, config: MambaConfig) -> None:
        MambaPreTrainedModel.__init__(self, config)
        self._build(config)
        self.post_init()


class Mamba2ForSequenceClassification(SequenceClassifier, Mamba2PreTrainedModel):
    __doc__ = SequenceClassifier.__doc__
    backbone_class = Mamba2Model

    def __init__(self, config: Mamba2Config) -> None:
        Mamba2PreTrainedModel.__init__(self, config)
        self._build(config)
        self.post_init()


class FalconMambaForSequenceClassification(SequenceClassifier, FalconMambaPreTrainedModel):
    __doc__ = SequenceClassifier.__doc__
    backbone_class = FalconMambaModel

    def __init__(self, config: FalconMambaConfig) -> None:
        FalconMambaPreTrainedModel.__init__(self, config)
        self._build(config)
        self.post_init()


class BambaForSequenceClassification(SequenceClassifier, BambaPreTrainedModel):
    r"""
    A Bamba backbone (Mamba-2 mixers, attention layers at ``config.attn_layer_indices``, gated
    MLPs in every layer), pooling over tokens, and a linear classifier.

    Configured through a ``BambaConfig`` with two extra fields: ``pooling`` (``"mean"`` or
    ``"last"``, default ``"mean"``) and ``classifier_bias`` (default ``True``); ``num_labels``
    sets the number of classes. Saved and loaded with ``save_pretrained`` /
    ``from_pretrained`` like any Hugging Face model.
    """

    backbone_class = BambaModel

    def __init__(self, config: BambaConfig) -> None:
        BambaPreTrainedModel.__init__(self, config)
        self._build(config)
        self.post_init()


class _HybridClassifier(SequenceClassifier):
    r"""
    A hybrid backbone for which transformers ships no sequence classifier, pooling over tokens,
    and a linear classifier; configured as :class:`BambaForSequenceClassification` (``pooling``,
    ``classifier_bias``, ``num_labels`` on the family's config).
    """

    pretrained_class: type[nn.Module]

    def __init__(self, config: Any) -> None:
        self.pretrained_class.__init__(self, config)
        self._build(config)
        self.post_init()


class NemotronHForSequenceClassification(_HybridClassifier, NemotronHPreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    backbone_class = NemotronHModel
    pretrained_class = NemotronHPreTrainedModel


class GraniteMoeHybridForSequenceClassification(_HybridClassifier, GraniteMoeHybridPreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    backbone_class = GraniteMoeHybridModel
    pretrained_class = GraniteMoeHybridPreTrainedModel


class FalconH1ForSequenceClassification(_HybridClassifier, FalconH1PreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    backbone_class = FalconH1Model
    pretrained_class = FalconH1PreTrainedModel


class Qwen3_5MoeForSequenceClassification(_HybridClassifier, Qwen3_5MoePreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    config_class = Qwen3_5MoeTextConfig  # the text model's, as Qwen3_5MoeForCausalLM's
    backbone_class = Qwen3_5MoeTextModel
    pretrained_class = Qwen3_5MoePreTrainedModel


class OlmoHybridForSequenceClassification(_HybridClassifier, OlmoHybridPreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    backbone_class = OlmoHybridModel
    pretrained_class = OlmoHybridPreTrainedModel


class KimiLinearForSequenceClassification(_HybridClassifier, KimiLinearPreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    backbone_class = KimiLinearModel
    pretrained_class = KimiLinearPreTrainedModel


class Lfm2ForSequenceClassification(_HybridClassifier, Lfm2PreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    backbone_class = Lfm2Model
    pretrained_class = Lfm2PreTrainedModel


class Lfm2MoeForSequenceClassification(_HybridClassifier, Lfm2MoePreTrainedModel):
    __doc__ = _HybridClassifier.__doc__
    backbone_class = Lfm2MoeModel
    pretrained_class = Lfm2MoePreTrainedModel
