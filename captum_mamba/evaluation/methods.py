"""Attribution methods by name, all behind one Captum-style interface, so evaluations treat them alike.

Every method explains a logit of a Hugging Face-style model (``model(inputs_embeds=...,
attention_mask=...).logits``) with respect to its input embeddings and returns one score per
token. A classifier's logits ``(batch, classes)`` are explained directly; a causal LM's
``(batch, length, vocab)`` at each row's last real token.

Methods register with :func:`register_method`; the built-in ones are MambaLRP (with AttnLRP for
the attention layers of hybrids), MambaLRP with CP-LRP for attention, its rule ablations and
naive LRP, and the usual Captum baselines. :func:`token_attributions` runs any of them::

    >>> scores = token_attributions("mamba_lrp", model, input_ids, target, attention_mask)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from captum.attr import (
    Attribution,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from captum_mamba.explained_logits import ExplainedLogits
from captum_mamba.mamba_lrp import MambaLRP
from captum_mamba.registry import DEFAULT_REGISTRY, RuleSpec
from captum_mamba.rule_context import plan_rules
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.norm import LayerNormRule, RMSNormRule

Reduction = Literal["sum", "mean", "l2"]
RULE_COMPONENTS: tuple[str, ...] = ("silu", "ssm", "gate", "norm")
"""The MambaLRP rule components that an ablation can switch off."""


@dataclass(frozen=True)
class MethodSpec:
    r"""
    An attribution method known to the evaluation tools.

    Args:
        name (str): registry key, e.g. ``"mamba_lrp"``.
        label (str): display name, e.g. ``"MambaLRP"``.
        build (Callable): ``build(forward, model) -> captum.attr.Attribution`` where ``forward``
                    is the :class:`ExplainedLogits` of ``model``.
        attribute_kwargs (dict): extra keyword arguments of ``attribute()`` (``n_steps``, ...).
        reduction (str): how per-embedding-dimension attributions become token scores:
                    ``"sum"`` (signed; relevance-like methods), ``"mean"`` (signed; methods that
                    give every dimension the token's whole score, like occlusion) or ``"l2"``
                    (unsigned norm; gradient-only methods).
        description (str): one line for tables and the comparison view.
        family (str): ``"lrp"``, ``"gradient"``, ``"perturbation"``, ``"attention"``,
                    ``"ablation"`` or ``"control"``.
        unsupported (Callable, optional): ``unsupported(model) -> str | None``: why the method
                    cannot explain ``model`` (e.g. a rollout over Mamba-1's hidden attention on a
                    hybrid), or ``None`` when it can. Default: every model is supported.
    """

    name: str
    label: str
    build: Callable[[nn.Module, nn.Module], Attribution]
    attribute_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reduction: Reduction = "sum"
    description: str = ""
    family: str = "gradient"
    unsupported: Callable[[nn.Module], str | None] | None = None

    def why_unsupported(self, model: nn.Module) -> str | None:
        r"""
        Why this method cannot explain ``model``, or ``None`` when it can.

        Args:
            model (nn.Module): the model to explain.

        Returns:
            *str* or *None*.
        """
        return None if self.unsupported is None else self.unsupported(model)


class MethodNotApplicableError(TypeError):
    """An attribution method cannot explain this kind of model (e.g. a rollout over Mamba-1's hidden
    attention on a hybrid)."""


def check_applicable(methods: list[str], model: nn.Module) -> None:
    r"""
    Check that every method of ``methods`` (names in :data:`METHODS`) can explain ``model``.

    Args:
        methods (list[str]): method names.
        model (nn.Module): the model to explain.

    Raises:
        MethodNotApplicableError: naming each method of ``methods`` that cannot explain
            ``model``, and why.
    """
    reasons = {name: reason for name in methods if (reason := get_method(name).why_unsupported(model))}
    if reasons:
        listing = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        raise MethodNotApplicableError(f"{len(reasons)} method(s) cannot explain {type(model).__name__}: {listing}")


METHODS: dict[str, MethodSpec] = {}
"""The registered methods by name (see :func:`register_method`)."""


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method in :data:`METHODS`; returns ``spec``."""
    METHODS[spec.name] = spec
    return spec


def check_methods(names: list[str]) -> None:
    r"""
    Raises:
        KeyError: naming the unknown method names and listing the known ones.
    """
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise KeyError(f"unknown methods {unknown}; known: {', '.join(sorted(METHODS))}")


def get_method(name: str) -> MethodSpec:
    """The registered method called ``name``; a ``KeyError`` listing the known names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown attribution method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


def ablated_rules(model: nn.Module, disabled: set[str] | frozenset[str]) -> dict[type[nn.Module], RuleSpec]:
    r"""
    MambaLRP rules for ``model`` with some rule components replaced by the plain computation.

    Args:
        model (nn.Module): the model (its module types select the registry entries changed).
        disabled (set[str]): components of :data:`RULE_COMPONENTS` to switch off.

    Returns:
        *dict* ``{module_type: rule}`` to pass as ``MambaLRP(..., rules=...)``.
    """
    unknown = set(disabled) - set(RULE_COMPONENTS)
    if unknown:
        raise ValueError(f"unknown rule components {sorted(unknown)}; choose from {RULE_COMPONENTS}")
    overrides: dict[type[nn.Module], RuleSpec] = {}
    for module_type in {type(module) for module in model.modules()}:
        rule = DEFAULT_REGISTRY.lookup(module_type)
        if rule is None:
            continue
        if isinstance(rule, (RMSNormRule, LayerNormRule)):
            if "norm" in disabled:
                overrides[module_type] = None
            continue
        if isinstance(rule, MambaLRPRule) and rule.components:
            changed = rule.without(disabled)
            if changed is not rule:
                overrides[module_type] = changed
    return overrides


def attention_rules(model: nn.Module, mode: str = "cp") -> dict[type[nn.Module], RuleSpec]:
    r"""
    MambaLRP rules for ``model`` with every attention module's rule switched to
    ``AttentionRule(mode)``.

    The attention module types are those whose planned rule (:func:`~captum_mamba.plan_rules`:
    the declared model families, the registry and ``module.rule`` attributes) is an
    :class:`~captum_mamba.rules.attention.AttentionRule`, so every declared hybrid or attention
    family is covered without naming its classes.

    Args:
        model (nn.Module): the model.
        mode (str, optional): ``"cp"`` (CP-LRP: attention weights held constant, conservative) or
                    ``"attnlrp"``. Default: "cp"

    Returns:
        *dict* ``{module_type: AttentionRule(mode)}`` to pass as ``MambaLRP(..., rules=...)``;
        empty for models without attention.
    """
    plan = plan_rules(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    return {
        type(modules[name]): AttentionRule(mode)
        for name, rule in plan.rules.items()
        if isinstance(rule, AttentionRule) and name in modules
    }


def _mamba_lrp(
    disabled: frozenset[str] = frozenset(), attention: str | None = None
) -> Callable[[nn.Module, nn.Module], Attribution]:
    def build(forward: nn.Module, model: nn.Module) -> Attribution:
        rules = ablated_rules(model, disabled) if disabled else {}
        if attention is not None:
            rules.update(attention_rules(model, attention))
        return MambaLRP(forward, model=model, rules=rules or None)

    return build


def _embedding_scale(embeds: Tensor, attention_mask: Tensor | None) -> float:
    if attention_mask is None:
        return float(embeds.std())
    return float(embeds[attention_mask.bool()].std()) if attention_mask.any() else 1.0


def token_attributions(
    method: str | MethodSpec,
    model: nn.Module,
    input_ids: Tensor,
    target: Tensor | int,
    attention_mask: Tensor | None = None,
    **attribute_kwargs: Any,
) -> Tensor:
    r"""
    Token scores of ``method`` for ``target`` on a batch of token ids.

    Args:
        method (str or MethodSpec): a registered name (see :data:`METHODS`) or a spec.
        model (nn.Module): a Hugging Face-style model with ``get_input_embeddings()``.
        input_ids (Tensor): ``(batch, length)`` token ids (right padding).
        target (Tensor or int): the class (or next token) explained, one per example or one for all.
        attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens.
        **attribute_kwargs: override the method's ``attribute()`` keyword arguments.

    Returns:
        *Tensor* ``(batch, length)`` of token scores (``float32`` or the model's dtype); padding
        positions are 0.
    """
    embeds = model.get_input_embeddings()(input_ids).detach()
    return embedding_attributions(method, model, embeds, target, attention_mask, **attribute_kwargs)


def embedding_attributions(
    method: str | MethodSpec,
    model: nn.Module,
    embeds: Tensor,
    target: Tensor | int,
    attention_mask: Tensor | None = None,
    **attribute_kwargs: Any,
) -> Tensor:
    r"""
    Token scores of ``method`` for ``target`` on given input embeddings (e.g. perturbed ones).

    :func:`token_attributions` looks the embeddings of its token ids up and calls this.

    Args:
        method (str or MethodSpec): a registered name (see :data:`METHODS`) or a spec.
        model (nn.Module): a Hugging Face-style model (``inputs_embeds``, ``attention_mask``).
        embeds (Tensor): ``(batch, length, hidden)`` input embeddings.
        target (Tensor or int): the class (or next token) explained, one per example or one for all.
        attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens.
        **attribute_kwargs: override the method's ``attribute()`` keyword arguments.

    Returns:
        *Tensor* ``(batch, length)`` of token scores; padding positions are 0.
    """
    spec = get_method(method) if isinstance(method, str) else method
    forward = ExplainedLogits(model)
    embeds = embeds.detach()
    kwargs = dict(spec.attribute_kwargs)
    kwargs.update(attribute_kwargs)
    if spec.name.startswith("smoothgrad") and "stdevs" not in attribute_kwargs:
        kwargs["stdevs"] = kwargs.get("stdevs", 0.1) * _embedding_scale(embeds, attention_mask)
    if isinstance(target, int):
        target = torch.full((embeds.shape[0],), target, dtype=torch.long, device=embeds.device)
    explainer = spec.build(forward, model)
    additional = None if attention_mask is None else (attention_mask,)
    attributions = explainer.attribute(embeds, target=target, additional_forward_args=additional, **kwargs)
    reduce = {"sum": lambda a: a.sum(-1), "mean": lambda a: a.mean(-1), "l2": lambda a: a.norm(dim=-1)}
    scores = reduce[spec.reduction](attributions)
    if attention_mask is not None:
        scores = scores * attention_mask.to(scores.dtype)
    return scores.detach()


def _builtin_methods() -> None:
    register_method(
        MethodSpec(
            "mamba_lrp",
            "MambaLRP",
            _mamba_lrp(),
            description="all MambaLRP rules (SiLU, SSM, gate, norm; AttnLRP for attention layers), Gradient x Input",
            family="lrp",
        )
    )
    register_method(
        MethodSpec(
            "mamba_lrp_cp",
            "MambaLRP + CP-LRP",
            _mamba_lrp(attention="cp"),
            description="MambaLRP with CP-LRP for attention layers (attention weights held constant; "
            "conservative); the same as MambaLRP on models without attention",
            family="lrp",
        )
    )
    for component in RULE_COMPONENTS:
        register_method(
            MethodSpec(
                f"mamba_lrp_no_{component}",
                f"MambaLRP w/o {component.upper() if component in ('ssm',) else component} rule",
                _mamba_lrp(frozenset({component})),
                description=f"MambaLRP with the {component} rule switched off (ablation)",
                family="ablation",
            )
        )
    register_method(
        MethodSpec(
            "naive_lrp",
            "naive LRP",
            _mamba_lrp(frozenset({"silu", "ssm", "gate"})),
            description="LRP with only the norm rule (Gradient x Input through the rest)",
            family="lrp",
        )
    )
    register_method(
        MethodSpec(
            "input_x_gradient",
            "Gradient x Input",
            lambda forward, model: InputXGradient(forward),
            description="Gradient x Input on the unmodified model",
        )
    )
    register_method(
        MethodSpec(
            "integrated_gradients",
            "Integrated Gradients",
            lambda forward, model: IntegratedGradients(forward),
            attribute_kwargs={"n_steps": 32, "internal_batch_size": 64},
            description="Integrated Gradients from the zero embedding, 32 steps",
        )
    )
    register_method(
        MethodSpec(
            "smoothgrad",
            "SmoothGrad",
            lambda forward, model: NoiseTunnel(InputXGradient(forward)),
            attribute_kwargs={"nt_type": "smoothgrad", "nt_samples": 16, "nt_samples_batch_size": 16, "stdevs": 0.1},
            description="NoiseTunnel(InputXGradient), 16 samples, noise 0.1 x the embeddings' std",
        )
    )
    register_method(
        MethodSpec(
            "saliency",
            "Saliency",
            lambda forward, model: Saliency(forward),
            attribute_kwargs={"abs": False},
            reduction="l2",
            description="L2 norm of the gradient per token (unsigned)",
        )
    )
    register_method(
        MethodSpec(
            "attention_rollout",
            "AttnRoll",
            lambda forward, model: _rollout("AttentionRollout", forward),
            description="attention rollout over Mamba's hidden attention (quadratic memory; Mamba-1 models only)",
            family="attention",
            unsupported=_rollout_unsupported,
        )
    )
    register_method(
        MethodSpec(
            "gradient_attention_rollout",
            "G x AttnRoll",
            lambda forward, model: _rollout("GradientAttentionRollout", forward),
            description="gradient-weighted rollout over Mamba's hidden attention (quadratic memory; Mamba-1 models only)",
            family="attention",
            unsupported=_rollout_unsupported,
        )
    )
    register_method(
        MethodSpec(
            "occlusion",
            "Occlusion",
            lambda forward, model: _TokenOcclusion(forward),
            reduction="mean",
            description="logit drop when one token's embedding is set to zero",
            family="perturbation",
        )
    )


def _rollout_unsupported(model: nn.Module) -> str | None:
    from captum_mamba.evaluation.hidden_attention import rollout_unsupported

    return rollout_unsupported(model)


def _rollout(name: str, forward: nn.Module) -> Attribution:
    from captum_mamba.evaluation import hidden_attention

    return getattr(hidden_attention, name)(forward)


class _RandomScores(Attribution):
    """Uniform random token scores (seeded): the control every method should beat."""

    def __init__(self, forward_func: nn.Module, seed: int = 0) -> None:
        super().__init__(forward_func)
        self.generator = torch.Generator().manual_seed(seed)

    def attribute(self, inputs: Tensor, **kwargs: Any) -> Tensor:  # type: ignore[override]
        scores = torch.rand(inputs.shape[:2], generator=self.generator, dtype=torch.float64)
        return scores.to(inputs)[..., None]


class _TokenOcclusion(Occlusion):
    """Captum's Occlusion with one-token windows over ``(batch, length, hidden)`` embeddings."""

    def attribute(self, inputs: Tensor, **kwargs: Any) -> Tensor:  # type: ignore[override]
        return super().attribute(inputs, sliding_window_shapes=(1, inputs.shape[-1]), baselines=0.0, **kwargs)


_builtin_methods()
register_method(
    MethodSpec(
        "random",
        "random",
        lambda forward, model: _RandomScores(forward),
        description="uniform random token scores (control)",
        family="control",
    )
)
