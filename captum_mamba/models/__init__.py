"""Model-family adapters: importing this package registers their rules."""

from captum_mamba.models.classification import MambaForSequenceClassification, pool_hidden_states
from captum_mamba.models.hf_mamba import MambaMixerRule

__all__ = ["MambaForSequenceClassification", "MambaMixerRule", "pool_hidden_states"]
