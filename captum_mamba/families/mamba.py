"""Hugging Face ``transformers`` Mamba (Mamba-1).

Its tiny test configuration (``config``: :func:`tiny_config`, two bias-free layers of width 16)
and ``random_config`` (sizes, state, kernel and time-step rank) are FalconMamba's too.
"""

from __future__ import annotations

import random
from typing import Any

from transformers import MambaConfig
from transformers.activations import SiLUActivation
from transformers.models.mamba import modeling_mamba

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import VOCAB
from captum_mamba.heads import MambaForSequenceClassification
from captum_mamba.mixers.layouts import Mamba1Layout
from captum_mamba.rules.block import BlockRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

#: A tiny bias-free Mamba-1 configuration for tests (also FalconMamba's).
TINY_SETTINGS: dict[str, Any] = dict(
    vocab_size=VOCAB,
    hidden_size=16,
    state_size=4,
    num_hidden_layers=2,
    expand=2,
    conv_kernel=4,
    time_step_rank=4,
    use_conv_bias=False,
    use_bias=False,
    residual_in_fp32=False,
    use_cache=False,
)


def tiny_config(**overrides: Any) -> MambaConfig:
    """A tiny bias-free Mamba configuration for tests (vocabulary of 40)."""
    return MambaConfig(**{**TINY_SETTINGS, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep (overrides of :func:`tiny_config`)."""
    return dict(
        hidden_size=rng.choice([4, 6, 8, 12]),
        state_size=rng.randint(1, 5),
        num_hidden_layers=rng.randint(1, 3),
        expand=rng.choice([1, 2]),
        conv_kernel=rng.randint(1, 5),
        time_step_rank=rng.randint(1, 4),
        residual_in_fp32=rng.random() < 0.5,
    )


MAMBA = ModelFamily(
    name="mamba",
    mixers={modeling_mamba.MambaMixer: Mamba1Layout()},
    norms={modeling_mamba.MambaRMSNorm: RMSNormRule},
    blocks={modeling_mamba.MambaBlock: BlockRule()},
    containers=(modeling_mamba.MambaModel, modeling_mamba.MambaForCausalLM, MambaForSequenceClassification),
    rules={SiLUActivation: SiLUIdentityRule},
    causal_lm=modeling_mamba.MambaForCausalLM,
    classifier=MambaForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
)
