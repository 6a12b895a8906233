"""Each kind of Mamba mixer (and the Gated DeltaNet and gated short-convolution mixers) written once, against a
small set of rule operations.

A mixer function (:func:`~captum_mamba.mixers.mamba1.mix_mamba1`,
:func:`~captum_mamba.mixers.mamba2.mix_mamba2`) computes the mixer's output from its input and
calls a :class:`~captum_mamba.mixers.ops.MixerOps` object wherever a MambaLRP rule applies: the
SiLUs, the causal convolution, the selective scan, the multiplicative gate and the gated norm.
The two engines supply the operations: :class:`~captum_mamba.rules.MixerRule` (functional rules,
for :class:`~captum_mamba.MambaLRP`) and the canonizer's leaf operations (leaf modules, for
Captum's own ``LRP``). A :class:`~captum_mamba.mixers.layouts.MixerLayout` says where an
implementation keeps its sizes and sub-modules (Hugging Face, mamba-ssm, ...).
"""

from captum_mamba.mixers.calls import MixerCall, bind_mixer_call, check_padding, check_prefill, mask_padding
from captum_mamba.mixers.gated_delta import (
    GatedDeltaLayout,
    GatedDeltaProjections,
    GatedDeltaSizes,
    KimiDeltaLayout,
    OlmoHybridGatedDeltaLayout,
    Qwen3NextGatedDeltaLayout,
    SplitGatedDeltaLayout,
)
from captum_mamba.mixers.layouts import (
    BidirectionalMamba1Layout,
    Mamba1Layout,
    Mamba2Layout,
    Mamba2Sizes,
    MixerLayout,
    MixerView,
    NormalisedSelectionLayout,
)
from captum_mamba.mixers.ops import MixerOps
from captum_mamba.mixers.short_conv import GatedShortConvLayout

__all__ = [
    "BidirectionalMamba1Layout",
    "GatedDeltaLayout",
    "GatedDeltaProjections",
    "GatedDeltaSizes",
    "GatedShortConvLayout",
    "KimiDeltaLayout",
    "OlmoHybridGatedDeltaLayout",
    "Qwen3NextGatedDeltaLayout",
    "SplitGatedDeltaLayout",
    "Mamba1Layout",
    "Mamba2Layout",
    "Mamba2Sizes",
    "MixerCall",
    "MixerLayout",
    "MixerOps",
    "MixerView",
    "NormalisedSelectionLayout",
    "bind_mixer_call",
    "check_padding",
    "check_prefill",
    "mask_padding",
]
