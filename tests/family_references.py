"""How the shared family suite tests each declared family: its loop-based reference and the few facts it needs.

``REFERENCES`` maps a family's name to a :class:`FamilyReference`: the reference's forward (the
last position's logits of the rules' forward, written from the rules' equations in
``reference.py``, ``reference_attention.py``, ``reference_moe.py``, ``reference_hybrid.py``,
``reference_fz.py``, ``reference_gated_delta.py`` (Qwen3-Next, Qwen3.5, Qwen3.5-MoE, OLMo
hybrid: the Gated DeltaNet step by step) and ``reference_kimi_lfm2.py`` (Kimi Linear, LFM2,
LFM2-MoE: Kimi Delta Attention step by step, the gated short convolution), importing no package
rule code) and how it is called, the settings that give the family's models biases, the constant
its causal LM multiplies the LM head's output by, extra configurations (variants) the suite also
runs, the little preparation a model built from a configuration needs to be the model a
checkpoint gives, and the float32 casts of the family's own forwards to remove for float64
comparisons (``faithful_float64.py``).

The reference's relevances are Gradient x Input of its logit (:func:`reference_relevance`); its
delta is their sum minus that logit: zero for CP-LRP on a bias-free model (and for the Mamba
families, whose rules all conserve), not zero for AttnLRP (its softmax rule does not conserve),
the biases' share with biases.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from transformers import (
    JambaForSequenceClassification,
    LlamaForSequenceClassification,
    Qwen3ForSequenceClassification,
    Qwen3MoeForSequenceClassification,
)
from transformers.models.kimi_linear import modeling_kimi_linear
from transformers.models.olmo_hybrid import modeling_olmo_hybrid
from transformers.models.qwen3_5 import modeling_qwen3_5
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe
from transformers.models.qwen3_next import modeling_qwen3_next

from captum_mamba.families.olmo_hybrid import nope

import faithful_float64
import reference_attention
import reference_fz
import reference_gated_delta
import reference_hybrid
import reference_kimi_lfm2
import reference_moe
from reference import reference_hidden

#: ``logits(model, inputs_embeds, mode)``: the last position's logits of the rules' forward
#: (mode ``"attnlrp"`` or ``"cp"``; families without attention ignore it).
ReferenceLogits = Callable[[nn.Module, Tensor, str], Tensor]


def _mamba_logits(model: nn.Module, x: Tensor, mode: str) -> Tensor:
    """The Mamba families (Mamba-1, Mamba2, FalconMamba): the loop-based reference of ``reference.py``."""
    backbone = model.backbone
    conv_biases = [block.mixer.conv1d.bias for block in backbone.layers]
    return reference_hidden(backbone, x, conv_biases)[:, -1] @ model.lm_head.weight.T


def _tie_shared_blocks(model: nn.Module) -> None:
    """Zamba's hybrid layers share their attention blocks (``num_mem_blocks`` of them, in turn), as a checkpoint loads them."""
    hybrids = [layer for layer in model.base_model.layers if hasattr(layer, "mamba_decoder")]
    name = "shared_transf" if hybrids and hasattr(hybrids[0], "shared_transf") else "shared_transformer"
    blocks = getattr(model.config, "num_mem_blocks", 1)
    for index, layer in enumerate(hybrids):
        if index >= blocks:
            setattr(layer, name, getattr(hybrids[index % blocks], name))


def _no_preparation(model: nn.Module) -> None:
    return None


def _unit_scale(model: nn.Module) -> float:
    return 1.0


def _no_casts_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    return None


@dataclass(frozen=True)
class FamilyReference:
    r"""
    How the suite tests one family.

    Args:
        logits (ReferenceLogits): the reference's forward (see :data:`ReferenceLogits`).
        conv_bias (Mapping, optional): the settings that give the mixers' convolutions a bias;
                    ``None`` where the family has no convolution, ``{}`` where they always have one
                    (Zamba2: the suite zeroes it for bias-free models).
        linear_bias (Mapping, optional): the settings that give the projections (attention, MLPs,
                    the mixers' ``in_proj`` / ``out_proj``) biases.
        head_scale (Callable, optional): the constant the causal LM multiplies its LM head's output by.
        prepare (Callable, optional): makes a model built from a configuration the model a
                    checkpoint loads (Zamba: one shared block).
        variants (Mapping, optional): ``{name: overrides}``: further configurations the suite runs.
        variant_checks (tuple, optional): the checks the variants get (default: forward, reference,
                    conservation at every layer, batches).
        classifiers (tuple, optional): transformers' own sequence classifiers of the family (last
                    token, no bias), checked besides the declared ``classifier``.
        routing_atol (float, optional): the tolerance between a batch and its rows alone when the
                    model routes tokens to experts (float32 routing weights, held constant, may
                    round an ulp apart in a batch).
        narrowing_experts (Mapping, optional): ``{implementation: faithful one}``: experts
                    implementations whose Hugging Face forward narrows float64 to float32 (the
                    forward equivalence is then checked to 1e-5), and the implementation the
                    plain logits use instead.
        draws (int, optional): random configurations in the sweep.
        faithful_float64 (Callable, optional): ``faithful_float64(monkeypatch)`` removes the
                    float32 casts of the family's own forwards that the shared fixture
                    (``conftest.float64_faithful_hf``: RMSNorms, gated norms, eager attention,
                    the Mamba scans) does not: the linear-attention hybrids' delta rules, gated
                    norms, decays, zero-centred norms, routers (``faithful_float64.py``).
    """

    logits: ReferenceLogits
    conv_bias: Mapping[str, Any] | None = None
    linear_bias: Mapping[str, Any] = field(default_factory=dict)
    head_scale: Callable[[nn.Module], float] = _unit_scale
    prepare: Callable[[nn.Module], None] = _no_preparation
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variant_checks: tuple[str, ...] = (
        "forward_equivalence",
        "conservation_at_every_layer",
        "reference",
        "batch_equals_one_by_one",
    )
    classifiers: tuple[type[nn.Module], ...] = ()
    routing_atol: float = 1e-10
    narrowing_experts: Mapping[str, str] = field(default_factory=dict)
    draws: int = 50
    faithful_float64: Callable[[pytest.MonkeyPatch], None] = _no_casts_of_its_own


def _zamba_classifiers() -> tuple[type[nn.Module], ...]:
    from transformers import ZambaForSequenceClassification

    return (ZambaForSequenceClassification,)


def _zamba2_classifiers() -> tuple[type[nn.Module], ...]:
    from transformers import Zamba2ForSequenceClassification

    return (Zamba2ForSequenceClassification,)


def _gated_delta(module: Any, prefix: str, **fields: Any) -> FamilyReference:
    """A Gated DeltaNet hybrid: the step-by-step reference of ``reference_gated_delta.py``; biases on its attention."""
    return FamilyReference(
        reference_gated_delta.reference_logits,
        linear_bias={"attention_bias": True},  # its only biases: q, k, v, o (the Gated DeltaNets have none)
        faithful_float64=functools.partial(faithful_float64.gated_delta_hybrid, module, prefix),
        draws=_HYBRID_DRAWS,
        **fields,
    )


_MAMBA = FamilyReference(_mamba_logits, conv_bias={"use_conv_bias": True}, linear_bias={"use_bias": True})
_HYBRID_DRAWS = 12

#: Nemotron-H with experts: the first MLP layer a mixture of six squared-ReLU experts in two groups (the best group,
#: then its top 2; a correction bias on the choice; renormalised, scaled weights; a shared expert).
NEMOTRON_H_MOE: dict[str, Any] = dict(
    layers_block_type=["linear_attention", "moe", "full_attention", "mlp"],
    n_routed_experts=6,
    num_experts_per_tok=2,
    n_group=2,
    topk_group=1,
    norm_topk_prob=True,
    routed_scaling_factor=1.5,
    moe_intermediate_size=12,
    moe_shared_expert_intermediate_size=10,
)

REFERENCES: dict[str, FamilyReference] = {
    "mamba": _MAMBA,
    "mamba2": _MAMBA,
    "falcon_mamba": _MAMBA,
    "llama": FamilyReference(
        reference_attention.reference_logits,
        linear_bias={"attention_bias": True, "mlp_bias": True},
        classifiers=(LlamaForSequenceClassification,),
        draws=_HYBRID_DRAWS,
    ),
    "qwen3": FamilyReference(
        reference_attention.reference_logits,
        linear_bias={"attention_bias": True},
        classifiers=(Qwen3ForSequenceClassification,),
        draws=_HYBRID_DRAWS,
    ),
    "bamba": FamilyReference(
        reference_attention.reference_logits,
        conv_bias={"mamba_conv_bias": True},
        linear_bias={"attention_bias": True, "mlp_bias": True, "mamba_proj_bias": True},
        draws=_HYBRID_DRAWS,
    ),
    "jamba": FamilyReference(
        reference_moe.reference_logits,
        conv_bias={"mamba_conv_bias": True},
        linear_bias={"mamba_proj_bias": True},
        classifiers=(JambaForSequenceClassification,),
        draws=_HYBRID_DRAWS,
    ),
    "qwen3_moe": FamilyReference(
        reference_moe.reference_logits,
        linear_bias={"attention_bias": True},
        classifiers=(Qwen3MoeForSequenceClassification,),
        draws=_HYBRID_DRAWS,
    ),
    "nemotron_h": FamilyReference(
        reference_hybrid.reference_logits,
        conv_bias={"use_conv_bias": True},
        linear_bias={"attention_bias": True, "mlp_bias": True, "use_bias": True},
        variants={
            "moe": NEMOTRON_H_MOE,
            "moe_latent": {**NEMOTRON_H_MOE, "moe_latent_size": 8},  # the experts work in 8 dimensions
        },
        routing_atol=1e-6,  # sigmoid scores in float32
        narrowing_experts={"eager": "batched_mm"},  # its eager experts sum in the routing weights' float32
        draws=_HYBRID_DRAWS,
    ),
    "granitemoehybrid": FamilyReference(
        reference_hybrid.reference_logits,
        conv_bias={"mamba_conv_bias": True},
        linear_bias={"attention_bias": True, "mamba_proj_bias": True},
        head_scale=lambda model: 1.0 / model.config.logits_scaling,
        variants={"moe": {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 12}},
        routing_atol=1e-6,  # softmax of float32 logits
        draws=_HYBRID_DRAWS,
    ),
    "falcon_h1": FamilyReference(
        reference_fz.reference_logits,
        conv_bias={"mamba_conv_bias": True},
        linear_bias={"attention_bias": True, "mlp_bias": True, "mamba_proj_bias": True, "projectors_bias": True},
        head_scale=lambda model: model.model.lm_head_multiplier,
        variants={
            "norm_before_gate": {"mamba_norm_before_gate": True},  # rmsnorm(y) * silu(z)
            "no_norm": {"mamba_rms_norm": False},  # y * silu(z), no norm (the configuration's default)
        },
        variant_checks=("forward_equivalence", "reference"),  # the mixer's gating: its forward and relevances
        draws=_HYBRID_DRAWS,
    ),
    "zamba": FamilyReference(
        reference_fz.reference_logits,
        conv_bias={"mamba_conv_bias": True},
        linear_bias={"mamba_proj_bias": True},
        prepare=_tie_shared_blocks,
        classifiers=_zamba_classifiers(),
        draws=_HYBRID_DRAWS,
    ),
    "zamba2": FamilyReference(
        reference_fz.reference_logits,
        conv_bias={},  # its convolutions always have a bias
        linear_bias={"add_bias_linear": True},
        prepare=_tie_shared_blocks,
        classifiers=_zamba2_classifiers(),
        draws=_HYBRID_DRAWS,
    ),
    "qwen3_next": _gated_delta(
        modeling_qwen3_next,
        "Qwen3Next",
        classifiers=(modeling_qwen3_next.Qwen3NextForSequenceClassification,),
    ),
    "qwen3_5": _gated_delta(
        modeling_qwen3_5,
        "Qwen3_5",
        classifiers=(modeling_qwen3_5.Qwen3_5TextForSequenceClassification,),
    ),
    "qwen3_5_moe": _gated_delta(modeling_qwen3_5_moe, "Qwen3_5Moe"),
    "olmo_hybrid": _gated_delta(
        modeling_olmo_hybrid,
        "OlmoHybrid",
        variants={"nope": nope()},  # no rotary embeddings
    ),
    "kimi_linear": FamilyReference(
        reference_kimi_lfm2.reference_logits,
        linear_bias={"attention_bias": True},  # MLA's q_a_proj, kv_a_proj_with_mqa, o_proj
        variants={"full_rank_query": {"q_lora_rank": None}},  # q_proj instead of q_b_proj(norm(q_a_proj(h)))
        faithful_float64=functools.partial(faithful_float64.kimi_linear, modeling_kimi_linear),
        draws=_HYBRID_DRAWS,
    ),
    "lfm2": FamilyReference(
        reference_kimi_lfm2.reference_logits,
        conv_bias={"conv_bias": True},  # the convolutions' biases and the operators' in_proj / out_proj ones
        draws=_HYBRID_DRAWS,
    ),
    "lfm2_moe": FamilyReference(
        reference_kimi_lfm2.reference_logits,
        conv_bias={"conv_bias": True},
        draws=_HYBRID_DRAWS,
    ),
}


def reference_of(name: str) -> FamilyReference:
    """The family's entry (a family declared without one gets an error saying where to add it)."""
    if name not in REFERENCES:
        raise KeyError(
            f"the shared suite has no reference for the {name!r} family: add it to tests/family_references.py"
        )
    return REFERENCES[name]


def reference_relevance(
    name: str, model: nn.Module, embeds: Tensor, target: int, mode: str, **options: Any
) -> tuple[Tensor, Tensor]:
    """(relevance of ``embeds``, explained logit at the last position) by the family's reference (``options``: its own)."""
    with torch.enable_grad():
        x = embeds.detach().clone().requires_grad_()
        logit = reference_of(name).logits(model, x, mode, **options)[:, target]
        (gradient,) = torch.autograd.grad(logit.sum(), x)  # the rows are independent: one backward for all
    return (x * gradient).detach(), logit.detach()
