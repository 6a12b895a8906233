"""Hugging Face Nemotron-H (NVIDIA; Mamba-2 mixers, a few attention layers, squared-ReLU MLPs and experts as layers).

Each layer of the hybrid pattern (``config.layers_block_type``: ``linear_attention``,
``full_attention``, ``mlp``, ``moe``) is one residual block ``h + mixer(norm(h))`` whose
``mixer`` is a Mamba-2 mixer, an attention module (no positional embedding), a plain MLP
``down(relu(up(x))²)`` or a mixture of experts; the block's own forward picks it. The attention
module calls transformers' attention interface (AttnLRP / CP-LRP), the MLP's squared ReLU gets
the identity-style rule ``x·[relu(x)]const``.

A mixture-of-experts layer (``NemotronHMoE``) is ``fc2(experts(fc1(x))) + shared(x)``: the router
(``NemotronHTopkRouter``: sigmoid scores in float32, a correction bias for the choice only, group-
limited top-k, renormalised and scaled weights) feeds the experts only their indices and weights,
which the experts rule holds constant; the experts (``NemotronHExperts``) are ungated squared-ReLU
MLPs under :class:`~captum_mamba.rules.moe.ExpertsRule` (their ``act_fn`` under the squared-ReLU
rule); the optional latent projections ``fc1`` / ``fc2`` are linear layers (or identities) and the
shared expert is a ``NemotronHMLP``. The wrapper adds nothing non-linear of its own: a container.

Its tiny test configuration (``config``) is the pattern Mamba-2, MLP, attention, MLP (two groups,
so the gated norm is grouped) with SDPA attention (and eager experts where a ``moe`` layer is
asked for); ``random_config`` draws the sizes, the layer pattern (all four kinds), the head and
group counts and the experts' routing (counts, groups, top-k, latent size) (see
:mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import NemotronHConfig
from transformers.activations import ReLUSquaredActivation
from transformers.models.nemotron_h import modeling_nemotron_h

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_EXPERTS, VOCAB, attention_heads, divisor
from captum_mamba.heads import NemotronHForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.activation import SquaredReLUIdentityRule
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import MLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule

# The mixer's gated group norm has its own class from transformers 5.2x on; before, the mixer
# builds Zamba2's (the same computation and attribute names).
if hasattr(modeling_nemotron_h, "NemotronHRMSNormGated"):
    _GATED_NORM = modeling_nemotron_h.NemotronHRMSNormGated
else:  # pragma: no cover - depends on the installed transformers release
    from transformers.models.zamba2.modeling_zamba2 import Zamba2RMSNormGated as _GATED_NORM

#: The kinds of layers of Nemotron-H's hybrid pattern (``layers_block_type``).
LAYER_KINDS = ("linear_attention", "full_attention", "mlp", "moe")


def tiny_config(**overrides: Any) -> NemotronHConfig:
    """A tiny bias-free Nemotron-H configuration for tests: Mamba-2, MLP, attention, MLP (vocabulary of 40)."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        layers_block_type=["linear_attention", "mlp", "full_attention", "mlp"],
        intermediate_size=24,
        mlp_hidden_act="relu2",
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        mamba_num_heads=4,
        mamba_head_dim=8,
        n_groups=2,
        ssm_state_size=8,
        conv_kernel=4,
        chunk_size=16,
        use_conv_bias=False,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_EXPERTS,
    )
    return NemotronHConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: the layer pattern, heads and groups, the experts' routing."""
    mamba_heads = rng.choice([1, 2, 4])
    experts = rng.choice([2, 4, 6])
    groups = rng.choice([g for g in (1, 2, 3) if experts % g == 0 and experts // g >= 2])  # a group's best two
    topk_group = rng.randint(1, groups)
    return dict(
        hidden_size=rng.choice([4, 8, 12]),
        layers_block_type=[rng.choice(LAYER_KINDS) for _ in range(rng.randint(1, 4))],
        intermediate_size=rng.choice([4, 8]),
        head_dim=rng.choice([2, 4]),  # no positional embedding: any head size
        **attention_heads(rng),
        mamba_num_heads=mamba_heads,
        mamba_head_dim=rng.choice([2, 4]),
        n_groups=divisor(rng, mamba_heads),
        ssm_state_size=rng.randint(1, 6),
        conv_kernel=rng.randint(1, 4),
        chunk_size=rng.randint(1, 8),
        n_routed_experts=experts,
        n_group=groups,
        topk_group=topk_group,
        num_experts_per_tok=rng.randint(1, min(2, topk_group * experts // groups)),
        norm_topk_prob=rng.random() < 0.5,
        routed_scaling_factor=rng.choice([0.5, 1.0, 1.5]),
        moe_intermediate_size=rng.choice([4, 6]),
        moe_shared_expert_intermediate_size=rng.choice([4, 6]),
        moe_latent_size=rng.choice([None, 4]),
    )


NEMOTRON_H = ModelFamily(
    name="nemotron_h",
    mixers={modeling_nemotron_h.NemotronHMamba2Mixer: Mamba2Layout()},
    norms={modeling_nemotron_h.NemotronHRMSNorm: RMSNormRule, _GATED_NORM: GatedRMSNormRule},
    containers=(
        modeling_nemotron_h.NemotronHModel,
        modeling_nemotron_h.NemotronHForCausalLM,
        NemotronHForSequenceClassification,
        modeling_nemotron_h.NemotronHMoE,  # route, latent projections, experts, + shared expert: linear around them
        modeling_nemotron_h.NemotronHTopkRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling_nemotron_h.NemotronHBlock: OwnForwardRule(),
        modeling_nemotron_h.NemotronHAttention: AttentionRule(),
        modeling_nemotron_h.NemotronHMLP: MLPRule(),  # the MLP layers and the MoE layers' shared expert
        modeling_nemotron_h.NemotronHExperts: ExpertsRule(),  # ungated (has_gate=False): down(act(up(x)))
        ReLUSquaredActivation: SquaredReLUIdentityRule,
    },
    causal_lm=modeling_nemotron_h.NemotronHForCausalLM,
    classifier=NemotronHForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
