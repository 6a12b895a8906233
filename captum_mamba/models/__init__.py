"""Model-family adapters: importing this package registers their rules."""

from captum_mamba.models.classification import (
    FalconMambaForSequenceClassification,
    Mamba2ForSequenceClassification,
    MambaForSequenceClassification,
    pool_hidden_states,
)
from captum_mamba.models.hf_falcon_mamba import FalconMambaMixerRule
from captum_mamba.models.hf_mamba import MambaBlockRule, MambaMixerRule
from captum_mamba.models.hf_mamba2 import Mamba2MixerRule

__all__ = [
    "FalconMambaForSequenceClassification",
    "FalconMambaMixerRule",
    "Mamba2ForSequenceClassification",
    "Mamba2MixerRule",
    "MambaBlockRule",
    "MambaForSequenceClassification",
    "MambaMixerRule",
    "pool_hidden_states",
]

try:  # mamba-ssm (the `gpu` extra) needs CUDA builds; without it its modules simply have no rules
    from captum_mamba.models import mamba_ssm as _mamba_ssm  # noqa: F401
except (ImportError, OSError):
    _mamba_ssm = None
