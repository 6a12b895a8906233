"""MambaLRP in Captum Insights (captum 0.8.x; captum 0.9 removed ``captum.insights``).

:func:`register_mamba_lrp` adds MambaLRP to Insights' method list, next to Integrated
Gradients, Saliency, Input X Gradient, Deconvolution and Occlusion, with one option, the rule
set (all MambaLRP rules, naive LRP, or one rule switched off). :func:`default_visualizer` builds
an ``AttributionVisualizer`` for the embedded sentiment model; ``captum-mamba insights``
serves it on 127.0.0.1. With captum 0.9 or newer, both raise :class:`InsightsUnavailableError`,
which points to ``captum-mamba compare``, the comparison view that works with every Captum.

Example (in an environment with ``pip install 'captum-mamba[insights]'``)::

    >>> from captum_mamba.insights import default_visualizer, register_mamba_lrp
    >>> register_mamba_lrp()
    >>> default_visualizer().serve(port=6080)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_mamba.mamba_lrp import MambaLRP

RULE_SETS: dict[str, frozenset[str]] = {
    "all rules": frozenset(),
    "naive LRP (norm rule only)": frozenset({"silu", "ssm", "gate"}),
    "without SiLU rule": frozenset({"silu"}),
    "without SSM rule": frozenset({"ssm"}),
    "without gate rule": frozenset({"gate"}),
    "without norm rule": frozenset({"norm"}),
}
"""The choices of the ``rule_set`` option in Insights: which MambaLRP rules are switched off."""


class InsightsUnavailableError(ImportError):
    """``captum.insights`` cannot be imported (captum 0.9 removed it, or its extras are missing)."""


class InsightsMambaLRP(MambaLRP):
    r"""
    MambaLRP as Insights instantiates it (``cls(model)``), with the rule set as an
    ``attribute()`` option, since Insights passes options only there.
    """

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        rule_set: str = "all rules",
    ) -> Any:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): embeddings, as for :class:`MambaLRP`.
            target (int or Tensor, optional): the explained class.
            additional_forward_args (Any, optional): further forward arguments.
            rule_set (str, optional): a key of :data:`RULE_SETS`. Default: "all rules"

        Returns:
            *Tensor* or *tuple[Tensor, ...]*: relevances of the shape of ``inputs``.
        """
        from captum_mamba.evaluation.methods import ablated_rules

        if rule_set not in RULE_SETS:
            raise ValueError(f"unknown rule set {rule_set!r}; choose one of {list(RULE_SETS)}")
        disabled = RULE_SETS[rule_set]
        explainer = (
            self
            if not disabled
            else MambaLRP(self.forward_func, model=self.model, rules=ablated_rules(self.model, disabled))
        )
        return MambaLRP.attribute.__wrapped__(explainer, inputs, target, additional_forward_args)

    @classmethod
    def get_name(cls) -> str:
        return "MambaLRP"


def _insights_config():
    try:
        from captum.insights.attr_vis import config
    except ImportError as error:
        import captum

        raise InsightsUnavailableError(
            f"Captum Insights is not available with captum {captum.__version__} ({error}); captum 0.9 removed "
            "captum.insights. Install 'captum-mamba[insights]' (captum 0.8.x with flask and flask-compress) in a "
            "separate environment, or use the comparison view that works with every Captum: `captum-mamba compare` "
            "(or captum_mamba.compare in Python)."
        ) from error
    return config


def register_mamba_lrp() -> str:
    r"""
    Add MambaLRP to Captum Insights' methods (idempotent).

    Returns:
        *str*: the name Insights lists, ``"MambaLRP"``.

    Raises:
        InsightsUnavailableError: ``captum.insights`` cannot be imported (captum >= 0.9).
    """
    config = _insights_config()
    name = InsightsMambaLRP.get_name()
    config.ATTRIBUTION_NAMES_TO_METHODS[name] = InsightsMambaLRP
    config.ATTRIBUTION_METHOD_CONFIG[name] = config.ConfigParameters(
        params={"rule_set": config.StrEnumConfig(value="all rules", limit=list(RULE_SETS))},
        help_info="MambaLRP (Rezaei Jafari et al., 2024): relevances that sum to the explained logit",
    )
    return name


class EmbeddingClassifier(nn.Module):
    r"""
    ``embeddings -> logits`` of a Hugging Face-style classifier, the model form Insights needs
    for text (its ``TextFeature`` turns token ids into embeddings first).

    Args:
        model (nn.Module): a classifier taking ``inputs_embeds``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds: Tensor) -> Tensor:
        return self.model(inputs_embeds=inputs_embeds).logits


def default_visualizer(texts: Sequence[str] | None = None, labels: Sequence[int] | None = None) -> Any:
    r"""
    An Insights ``AttributionVisualizer`` for the embedded sentiment model, MambaLRP registered.

    Args:
        texts (Sequence[str], optional): sentences to show. Default: the labelled built-in samples.
        labels (Sequence[int], optional): their classes (0 negative, 1 positive).

    Returns:
        *captum.insights.AttributionVisualizer*.

    Raises:
        InsightsUnavailableError: ``captum.insights`` cannot be imported (captum >= 0.9).
    """
    register_mamba_lrp()
    from captum.insights import AttributionVisualizer, Batch
    from captum.insights.attr_vis.features import TextFeature

    from captum_mamba.default import LABELS, SAMPLE_LABELS, SAMPLE_SENTENCES, load_default_classifier

    if texts is None:
        pairs = [(t, y) for t, y in zip(SAMPLE_SENTENCES, SAMPLE_LABELS) if y is not None]
        texts, labels = [t for t, _ in pairs], [y for _, y in pairs]
    if labels is None or len(labels) != len(texts):
        raise ValueError("give one label per text")
    model, tokenizer = load_default_classifier()
    embedding = model.get_input_embeddings()

    def to_embeddings(ids: Tensor) -> Tensor:  # Insights drops the batch dimension around its transforms
        return embedding(ids.long()).detach()

    def to_tokens(ids: Tensor) -> list[str]:
        return [tokenizer.id_to_token(int(i)) for i in ids.flatten()]

    feature = TextFeature(
        "Sentence", baseline_transforms=None, input_transforms=[to_embeddings], visualization_transform=to_tokens
    )
    dataset = [
        Batch(inputs=torch.tensor([tokenizer.encode(text.lower()).ids]), labels=torch.tensor([label]))
        for text, label in zip(texts, labels)
    ]
    return AttributionVisualizer(
        models=[EmbeddingClassifier(model).eval()],
        classes=list(LABELS),
        features=[feature],
        dataset=dataset,
        score_func=lambda logits: logits.softmax(-1),
    )
