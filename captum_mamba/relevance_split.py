r"""How relevance splits across the layer kinds of a model: SSM mixers, linear attention (Gated DeltaNets),
gated short convolutions, attention, MLPs, experts.

Each block adds its update to the residual stream, ``h + update(norm(h))``; the relevance of an
update (the sum of its output's relevances) is the share of the explained output that flows
through that mixer, attention, MLP or mixture of experts, the rest passing the skip connection.
One forward and one backward pass give every module's share (:func:`relevance_split`), the same
numbers as ``LayerMambaLRP(model, module)`` would give one module at a time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from captum._utils.common import _format_tensor_into_tuples
from captum.attr._utils.lrp_rules import PropagationRule
from torch import Tensor

from captum_mamba.attribution_base import _DEFAULT, MambaLRPBase
from captum_mamba.model_calls import check_float_inputs
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.mixer import MixerRule
from captum_mamba.rules.mlp import GatedMLPRule, MLPRule
from captum_mamba.rules.moe import ExpertsRule

#: The layer kind of a module by the class of its rule (extended by :func:`register_layer_kind`).
LAYER_KINDS: dict[type[PropagationRule], str] = {
    MixerRule: "ssm",
    AttentionRule: "attention",
    GatedMLPRule: "mlp",
    MLPRule: "mlp",
    ExpertsRule: "moe",  # the experts module: the routed part of a mixture of experts (a shared expert is an MLP)
}


def register_layer_kind(rule_type: type[PropagationRule], kind: str) -> None:
    r"""
    Report the modules whose rule is a ``rule_type`` as layer kind ``kind`` (e.g. ``"moe"``).

    Args:
        rule_type (type): a rule class.
        kind (str): the kind's name.
    """
    LAYER_KINDS[rule_type] = kind


#: The layer kind of a mixer by its layout's kind, where it is not an SSM (transformers' names for those layers).
MIXER_KINDS: dict[str, str] = {"gated_delta": "linear_attention", "gated_conv": "conv"}


def layer_kind(rule: PropagationRule) -> str | None:
    """The layer kind of a module with ``rule`` (``None`` for other modules); a Gated DeltaNet's mixer rule
    (Kimi Delta Attention's too) reports ``"linear_attention"`` and a gated short convolution's (LFM2) ``"conv"``
    (transformers' names for those layers), other mixers ``"ssm"``."""
    if isinstance(rule, MixerRule) and getattr(rule.layout, "kind", None) in MIXER_KINDS:
        return MIXER_KINDS[rule.layout.kind]
    for rule_type, kind in LAYER_KINDS.items():
        if isinstance(rule, rule_type):
            return kind
    return None


@dataclass
class SplitRow:
    r"""
    One module's share of the explained output.

    Args:
        module (str): the module's name in the model.
        kind (str): ``"ssm"``, ``"linear_attention"``, ``"attention"``, ``"mlp"``, ``"moe"``, ...
        layer (int or None): the index of the layer (the first number in the name), if any.
        relevance (Tensor): ``(batch,)`` the sum of the relevances of the module's output (summed
                    over its calls, for a block shared by several layers; an output with the
                    tokens flattened, ``(batch·length, ...)`` as an experts module's, summed per
                    sequence).
    """

    module: str
    kind: str
    layer: int | None
    relevance: Tensor


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((item for item in output if isinstance(item, Tensor)), None)
    return None


def relevance_split(
    explainer: MambaLRPBase,
    inputs: Tensor | tuple[Tensor, ...],
    target: Any = None,
    additional_forward_args: Any = None,
    explained_position: Any = _DEFAULT,
) -> list[SplitRow]:
    r"""
    The relevance flowing through every mixer, attention, MLP (and other registered kind) of the
    model, in one forward and one backward pass under the explainer's rules.

    Args:
        explainer (MambaLRP): the explainer (its model, rules and options are used).
        inputs (Tensor or tuple[Tensor, ...]): floating inputs, as for ``MambaLRP.attribute``.
        target: the explained output, as for ``MambaLRP.attribute``.
        additional_forward_args: further forward arguments (e.g. the attention mask).
        explained_position: overrides the explainer's explained position.

    Returns:
        *list[SplitRow]*: one row per module that ran, in the order of their first calls.

    Example::

        >>> rows = relevance_split(MambaLRP(bamba), embeds, target=token)
        >>> {(row.layer, row.kind): float(row.relevance[0]) for row in rows}
    """
    inputs_tuple = _format_tensor_into_tuples(inputs)
    check_float_inputs(inputs_tuple)
    plan = explainer.rule_plan()
    modules = dict(explainer.model.named_modules(remove_duplicate=False))
    kinds: Mapping[str, str] = {name: kind for name, rule in plan.rules.items() if (kind := layer_kind(rule))}
    outputs: dict[str, list[Tensor]] = {name: [] for name in kinds}
    called: dict[str, int] = {}  # the order of the modules' first calls

    def keep(name: str):
        def hook(module: Any, args: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is not None and tensor.requires_grad:
                outputs[name].append(tensor)
                called.setdefault(name, len(called))

        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in kinds]
    order: list[tuple[str, int]] = []
    try:

        def run() -> tuple[Tensor, tuple[Tensor, ...]]:
            leaves = tuple(x.detach().requires_grad_() for x in inputs_tuple)
            explained = explainer._explained_output(leaves, additional_forward_args, target, explained_position)
            taps = []
            for name, tensors in outputs.items():
                order.extend((name, index) for index in range(len(tensors)))
                taps.extend(tensors)
            return explained, (*leaves, *taps)

        _, relevances = explainer._relevances(run, "module outputs")
    finally:
        for handle in handles:
            handle.remove()
    per_module: dict[str, Tensor] = {}
    batch = inputs_tuple[0].shape[0]
    for (name, _), relevance in zip(order, relevances[len(inputs_tuple) :]):
        # (batch, ...), or the tokens flattened batch-major, (batch·length, ...), as experts take them
        total = relevance.reshape(batch, -1).sum(1)
        per_module[name] = per_module[name] + total if name in per_module else total
    rows = []
    for name in sorted(per_module, key=called.__getitem__):
        found = re.search(r"\d+", name)
        rows.append(SplitRow(name, kinds[name], int(found.group()) if found else None, per_module[name]))
    return rows


def model_layer_kinds(explainer: MambaLRPBase) -> list[str]:
    r"""
    The layer kinds of the explainer's model, in the order of their modules.

    Args:
        explainer (MambaLRP): the explainer (its rule plan decides each module's kind).

    Returns:
        *list[str]*, e.g. ``["ssm", "mlp", "attention"]`` for a Bamba model, ``["ssm"]`` for Mamba.
    """
    kinds = (layer_kind(rule) for rule in explainer.rule_plan().rules.values())
    return list(dict.fromkeys(kind for kind in kinds if kind is not None))


def kind_totals(rows: list[SplitRow]) -> dict[str, Tensor]:
    r"""
    The relevance of each layer kind: the sum of its modules' rows.

    Args:
        rows (list[SplitRow]): from :func:`relevance_split`.

    Returns:
        *dict* ``{kind: (batch,) Tensor}``, in the order of the kinds' first rows.
    """
    totals: dict[str, Tensor] = {}
    for row in rows:
        totals[row.kind] = totals[row.kind] + row.relevance if row.kind in totals else row.relevance
    return totals
