"""Tiny random Mamba models, built in float64, shared by the tests."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from captum_mamba.models import MambaForSequenceClassification

VOCAB = 40


def tiny_config(**overrides) -> MambaConfig:
    settings = dict(
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
    settings.update(overrides)
    return MambaConfig(**settings)


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights of order one, so that every non-linearity matters (HF's init is near-linear)."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        if name.endswith("A_log"):
            parameter.copy_(torch.log(torch.rand(parameter.shape, generator=generator, dtype=parameter.dtype) * 4 + 0.5))
        elif name.endswith("dt_proj.bias"):
            parameter.copy_(torch.log(torch.expm1(torch.rand(parameter.shape, generator=generator).double() * 0.3 + 0.05)))
        elif name.endswith(".D"):
            parameter.copy_(1 + 0.5 * noise)
        elif "norm" in name:
            parameter.copy_(1 + 0.2 * noise)
        elif parameter.dim() >= 2:
            fan_in = parameter[0].numel()
            parameter.copy_(noise / math.sqrt(fan_in) * (1.5 if "conv1d" in name else 1.0))
        else:
            parameter.copy_(0.3 * noise)
    return model


def tiny_lm(seed: int = 0, dtype: torch.dtype = torch.float64, **overrides) -> MambaForCausalLM:
    torch.manual_seed(seed)
    model = MambaForCausalLM(tiny_config(**overrides))
    return randomise(model, seed).to(dtype).eval()


def tiny_classifier(
    seed: int = 0, pooling: str = "mean", classifier_bias: bool = False, dtype: torch.dtype = torch.float64, **overrides
) -> MambaForSequenceClassification:
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    config.pooling = pooling
    config.classifier_bias = classifier_bias
    config.num_labels = 3
    model = MambaForSequenceClassification(config)
    return randomise(model, seed).to(dtype).eval()


def embeddings_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model.get_input_embeddings()(ids).detach()


def token_ids(batch: int = 2, length: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def ids() -> torch.Tensor:
    return token_ids()
