"""Canonizers: restructure Mamba models into leaf modules so Captum's own ``LRP`` / ``LayerLRP`` run MambaLRP.

Usage::

    >>> from captum.attr import LRP
    >>> from captum_mamba import canonize
    >>> from captum_mamba.evaluation import ExplainedLogits
    >>> with canonize(model):
    ...     relevance = LRP(ExplainedLogits(model)).attribute(embeds, target=label)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from transformers.models.mamba import modeling_mamba

from captum_mamba.canonizers.hf_mamba import (
    CanonicalMambaBlock,
    canonical_embedding,
    classifier_forward,
    detached_norm,
)
from captum_mamba.canonizers.leaves import TokenPooling, register_with_captum
from captum_mamba.errors import UnsupportedModuleError

_MISSING = object()


def _backbone(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, modeling_mamba.MambaModel):
        raise UnsupportedModuleError(
            {type(backbone if backbone is not None else model).__name__: ["backbone"]},
            hint="canonize supports Hugging Face Mamba (MambaModel) backbones; for Mamba2 and FalconMamba "
            "use MambaLRP / LayerMambaLRP, which need no canonization",
        )
    return backbone


@contextmanager
def canonize(model: nn.Module) -> Iterator[nn.Module]:
    r"""
    Restructure a Hugging Face Mamba model into leaf modules for Captum's ``LRP`` / ``LayerLRP``,
    inside a ``with`` block; the original modules are put back on exit (also after an exception).

    Inside the block, every ``MambaBlock`` is a :class:`CanonicalMambaBlock` (norm with the
    normaliser held constant, mixer leaves with the SiLU, SSM and gate rules, the residual sum
    as Captum's ``Addition_Module``), the final norm a ``DetachedRMSNorm``, the embedding a
    ``TokenEmbedding`` and a classifier's pooling a ``TokenPooling`` leaf, all sharing the
    model's parameters. Their types are in Captum's ``SUPPORTED_LAYERS_WITH_RULES``, so Captum
    attaches their rules itself at every ``attribute()`` call (it deletes ``module.rule`` after
    each call, captum issue #1059).

    Args:
        model (nn.Module): ``MambaForCausalLM``, ``MambaModel`` or
                    :class:`~captum_mamba.MambaForSequenceClassification`.

    Returns:
        *nn.Module*: the same ``model`` object, restructured for the duration of the block.

    Raises:
        UnsupportedModuleError: for other families (Mamba2, FalconMamba) and hybrids.
    """
    register_with_captum()
    backbone = model if isinstance(model, modeling_mamba.MambaModel) else _backbone(model)
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    patched_forward = _MISSING
    try:
        for index, block in enumerate(list(backbone.layers)):
            if not isinstance(block, modeling_mamba.MambaBlock) or type(block.mixer) is not modeling_mamba.MambaMixer:
                raise UnsupportedModuleError({type(block).__name__: [f"backbone.layers.{index}"]})
            replaced.append((backbone.layers, str(index), block))
            backbone.layers[index] = CanonicalMambaBlock(block)
        for name, build in (("norm_f", detached_norm), ("embeddings", canonical_embedding)):
            original = getattr(backbone, name)
            replaced.append((backbone, name, original))
            setattr(backbone, name, build(original))
        if hasattr(model, "score") and hasattr(model, "pooling"):
            pool = TokenPooling(model.pooling)
            model.pool = pool
            patched_forward = model.__dict__.get("forward", _MISSING)
            model.forward = classifier_forward(model, pool)
        yield model
    finally:
        for parent, name, original in reversed(replaced):
            if isinstance(parent, nn.ModuleList):
                parent[int(name)] = original
            else:
                setattr(parent, name, original)
        if "pool" in model._modules:
            del model.pool
            if patched_forward is _MISSING:
                del model.forward
            else:
                model.forward = patched_forward


__all__ = ["canonize"]
