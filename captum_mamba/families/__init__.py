"""Model families, each declared once (see :class:`ModelFamily`).

The rule registry, the canonizer and the shared test suite derive from :data:`FAMILIES`, the
declared families: the package's own (Hugging Face Mamba, Mamba2, FalconMamba, Vision Mamba, Llama,
Qwen3, Bamba, Nemotron-H, Granite 4.0 hybrid, Jamba, Qwen3-MoE, Falcon-H1, Zamba, Zamba2, the
Gated DeltaNet hybrids Qwen3-Next, Qwen3.5, Qwen3.5-MoE, OLMo hybrid and Kimi Linear, the gated
short-convolution hybrids LFM2 and LFM2-MoE; mamba-ssm when it imports) and those declared with
:func:`register_family`. Importing this package changes no global table.

Every Hugging Face family declares a tiny test configuration (``config``: ``config(**overrides)``
returns the configuration of a tiny bias-free model, float64-ready on the CPU) and a drawer of
random ones (``random_config``); the shared test suite builds its models from them
(:mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

from captum_mamba.families.bamba import BAMBA
from captum_mamba.families.declaration import FamilyRegistry, ModelFamily
from captum_mamba.families.falcon_h1 import FALCON_H1
from captum_mamba.families.falcon_mamba import FALCON_MAMBA
from captum_mamba.families.granitemoehybrid import GRANITEMOEHYBRID
from captum_mamba.families.jamba import JAMBA
from captum_mamba.families.kimi_linear import KIMI_LINEAR
from captum_mamba.families.lfm2 import LFM2, LFM2_MOE
from captum_mamba.families.llama import LLAMA, QWEN3
from captum_mamba.families.mamba import MAMBA
from captum_mamba.families.mamba2 import MAMBA2
from captum_mamba.families.nemotron_h import NEMOTRON_H
from captum_mamba.families.olmo_hybrid import OLMO_HYBRID
from captum_mamba.families.qwen3_5 import QWEN3_5, QWEN3_5_MOE
from captum_mamba.families.qwen3_moe import QWEN3_MOE
from captum_mamba.families.qwen3_next import QWEN3_NEXT
from captum_mamba.families.vim import VIM
from captum_mamba.families.zamba import ZAMBA, ZAMBA2


def _builtin() -> tuple[ModelFamily, ...]:
    families = [
        MAMBA,
        MAMBA2,
        FALCON_MAMBA,
        VIM,
        LLAMA,
        QWEN3,
        BAMBA,
        NEMOTRON_H,
        GRANITEMOEHYBRID,
        JAMBA,
        QWEN3_MOE,
        FALCON_H1,
        ZAMBA,
        ZAMBA2,
        QWEN3_NEXT,
        QWEN3_5,
        QWEN3_5_MOE,
        OLMO_HYBRID,
        KIMI_LINEAR,
        LFM2,
        LFM2_MOE,
    ]
    try:  # mamba-ssm (the `gpu` extra) needs CUDA builds; without it its modules simply have no rules
        from captum_mamba.families.mamba_ssm import MAMBA_SSM
    except (ImportError, OSError):
        pass
    else:
        families.append(MAMBA_SSM)
    return tuple(families)


#: The declared model families.
FAMILIES = FamilyRegistry(_builtin())


def register_family(family: ModelFamily) -> None:
    r"""
    Declare a model family, so that MambaLRP, LayerMambaLRP and ``canonize`` support its models.

    Args:
        family (ModelFamily): the declaration.
    """
    FAMILIES.register(family)


__all__ = [
    "BAMBA",
    "FALCON_H1",
    "FALCON_MAMBA",
    "FAMILIES",
    "GRANITEMOEHYBRID",
    "JAMBA",
    "KIMI_LINEAR",
    "LFM2",
    "LFM2_MOE",
    "LLAMA",
    "MAMBA",
    "MAMBA2",
    "NEMOTRON_H",
    "OLMO_HYBRID",
    "QWEN3",
    "QWEN3_5",
    "QWEN3_5_MOE",
    "QWEN3_MOE",
    "QWEN3_NEXT",
    "VIM",
    "ZAMBA",
    "ZAMBA2",
    "FamilyRegistry",
    "ModelFamily",
    "register_family",
]
