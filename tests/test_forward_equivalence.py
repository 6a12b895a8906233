"""With the rules applied, the model computes the same outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.mamba import modeling_mamba

from captum_mamba import mamba_lrp_rules

from conftest import embeddings_of, tiny_classifier, tiny_lm


def _scan_without_narrowing(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **_):
    """Hugging Face's sequential scan, minus its casts of B and u to float32."""
    if delta_bias is not None:
        dt = dt + delta_bias[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    decay = torch.exp(A[None, :, None, :] * dt[..., None])
    drive = dt[..., None] * B.transpose(1, 2)[:, None] * hidden_states[..., None]
    state = torch.zeros_like(decay[:, :, 0])
    outputs = []
    for t in range(hidden_states.shape[-1]):
        state = decay[:, :, t] * state + drive[:, :, t]
        outputs.append((state * C[:, None, :, t]).sum(-1))
    y = torch.stack(outputs, -1) + hidden_states * D[None, :, None]
    return y * F.silu(z)


def _rms_norm_without_narrowing(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * hidden_states * torch.rsqrt(variance + self.variance_epsilon)


@pytest.fixture
def float64_faithful_hf(monkeypatch):
    """HF's torch path narrows a float64 model to float32 in the scan and norms; undo that."""
    monkeypatch.setattr(modeling_mamba, "mamba_selective_scan", _scan_without_narrowing)
    monkeypatch.setattr(modeling_mamba.MambaRMSNorm, "forward", _rms_norm_without_narrowing)


@pytest.mark.parametrize("conv_bias", [False, True])
def test_float64_backbone_outputs_equal(conv_bias, ids, float64_faithful_hf):
    model = tiny_lm(seed=21, use_conv_bias=conv_bias)
    embeds = embeddings_of(model, ids)
    with torch.no_grad():
        original = model.backbone(inputs_embeds=embeds).last_hidden_state
        with mamba_lrp_rules(model):
            ruled = model.backbone(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)


def test_float64_classifier_logits_equal(ids, float64_faithful_hf):
    model = tiny_classifier(seed=22, classifier_bias=True, pooling="last")
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    with torch.no_grad():
        original = model(input_ids=ids, attention_mask=mask).logits
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)


def test_float64_lm_logits_equal_to_float32_precision_of_unpatched_hf(ids):
    model = tiny_lm(seed=23, residual_in_fp32=True)
    with torch.no_grad():
        original = model(input_ids=ids).logits
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids).logits
    assert ruled.dtype == torch.float64  # the rules never narrow a float64 model
    torch.testing.assert_close(ruled.float(), original, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv_bias", [False, True])
def test_float32_lm_logits_equal(conv_bias, ids):
    model = tiny_lm(seed=24, dtype=torch.float32, use_conv_bias=conv_bias, residual_in_fp32=True)
    with torch.no_grad():
        original = model(input_ids=ids).logits
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids).logits
    torch.testing.assert_close(ruled, original, atol=1e-5, rtol=0)


def test_cache_prefill_matches_and_fills_cache(ids):
    model = tiny_lm(seed=25, dtype=torch.float32)
    with torch.no_grad():
        original = model(input_ids=ids, use_cache=True)
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids, use_cache=True)
    torch.testing.assert_close(ruled.logits, original.logits, atol=1e-5, rtol=0)
    for layer in range(model.config.num_hidden_layers):
        torch.testing.assert_close(
            ruled.cache_params.get_recurrent_state(layer), original.cache_params.get_recurrent_state(layer),
            atol=1e-5, rtol=0,
        )
        torch.testing.assert_close(
            ruled.cache_params.get_conv_state(layer), original.cache_params.get_conv_state(layer), atol=1e-5, rtol=0
        )
