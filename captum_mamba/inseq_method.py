"""MambaLRP as an `inseq <https://github.com/inseq-team/inseq>`__ attribution method (``"mamba_lrp"``).

inseq (tested with 0.7.1) is optional: ``pip install inseq``. Importing this module does not import
inseq; :func:`register_inseq_method` does, and adds ``"mamba_lrp"`` to
``inseq.list_feature_attribution_methods()``::

    import inseq
    from captum_mamba.inseq_method import register_inseq_method

    register_inseq_method()
    model = inseq.load_model("state-spaces/mamba-130m-hf", "mamba_lrp")
    out = model.attribute("The capital of France is", "The capital of France is Paris")
    out.show()
"""

from __future__ import annotations

from typing import Any

#: The name of the method in inseq's registry.
INSEQ_METHOD_NAME = "mamba_lrp"

_registered: type | None = None


def register_inseq_method() -> type:
    r"""
    Register MambaLRP in inseq's registry of feature attribution methods as ``"mamba_lrp"``.

    Registering twice returns the class registered first. The method attributes the input
    embeddings of decoder-only Hugging Face Mamba models (tested with ``MambaForCausalLM``) with
    :class:`~captum_mamba.MambaLRP`. Loading a model with it makes the model's default
    attributed function ``"logit"``: each generated token's relevances (over the prompt and the
    earlier generated tokens) then sum to its logit up to what biases absorb, which inseq reports
    as the step score ``"deltas"`` when called with
    ``attribution_args={"return_convergence_delta": True}``. An explicit ``attributed_fn`` (for
    example ``"probability"``, inseq's usual default) is explained by Gradient x Input through the
    MambaLRP rules, without that conservation.

    Keyword arguments given to ``inseq.load_model(..., "mamba_lrp", **kwargs)`` reach
    :class:`~captum_mamba.MambaLRP` (``rules``, ``plain_gradient_fallback``, ``memory_lean``,
    ``backend``, ...).

    Returns:
        *type*: the registered class (a subclass of inseq's ``GradientAttributionRegistry``).

    Raises:
        ImportError: inseq is not installed.
    """
    global _registered
    if _registered is not None:
        return _registered
    try:
        from inseq.attr.feat.gradient_attribution import GradientAttributionRegistry
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the inseq method needs inseq: pip install inseq") from error

    from captum_mamba.mamba_lrp import MambaLRP

    class MambaLRPAttribution(GradientAttributionRegistry):
        """MambaLRP (relevance propagation for Mamba models) in inseq, on the input embeddings."""

        method_name = INSEQ_METHOD_NAME

        def __init__(self, attribution_model: Any, **kwargs: Any) -> None:
            super().__init__(attribution_model)
            # inseq's forward returns one score per example (the attributed function at the
            # current step): no position or class left to select
            kwargs.setdefault("explained_position", None)
            self.method = MambaLRP(self.attribution_model, model=attribution_model.model, **kwargs)
            # inseq 0.7.1 names this property's setter ``set_attributed_fn`` (the property
            # ``default_attributed_fn_id`` itself is read-only)
            attribution_model.set_attributed_fn = "logit"

    _registered = MambaLRPAttribution
    return MambaLRPAttribution
