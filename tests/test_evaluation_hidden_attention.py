"""Hidden attention of Mamba-1 mixers (checked against the mixer's own SSM) and the rollout baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captum_mamba.evaluation import ExplainedLogits, token_attributions
from captum_mamba.evaluation.hidden_attention import AttentionRollout, GradientAttentionRollout, hidden_attention
from captum_mamba.kernels.selective_scan import differentiable_selective_scan
from captum_mamba.rules.mixer import causal_conv

from conftest import embeddings_of, tiny_classifier, tiny_lm


@pytest.mark.parametrize("family", ["mamba", "falcon_mamba"])
def test_hidden_attention_reproduces_the_ssm_output(family, ids):
    model = tiny_lm(seed=111, family=family)
    mixer = model.backbone.layers[1].mixer
    hidden = torch.randn(2, ids.shape[1], model.config.hidden_size, dtype=torch.float64)
    alpha, u, gate = hidden_attention(mixer, hidden)
    assert torch.equal(alpha.triu(1), torch.zeros_like(alpha))  # causal
    # the reference: the recurrence itself, on the same u, delta, B, C
    from captum_mamba.families import FAMILIES

    dt, B, C = FAMILIES.mixer_layout(type(mixer)).selection(mixer, u)
    delta = F.softplus(dt @ mixer.dt_proj.weight.T + mixer.dt_proj.bias)
    y = differentiable_selective_scan(u, delta, -torch.exp(mixer.A_log), B, C)
    torch.testing.assert_close(torch.einsum("bdtj,bjd->btd", alpha, u), y, atol=1e-10, rtol=1e-8)
    x, z = mixer.in_proj(hidden).chunk(2, dim=-1)
    torch.testing.assert_close(u, F.silu(causal_conv(mixer, x, None)))
    torch.testing.assert_close(gate, F.silu(z))


def test_rollouts_are_token_scores_and_respect_padding():
    model = tiny_classifier(seed=112)
    ids = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    for name in ("attention_rollout", "gradient_attention_rollout"):
        scores = token_attributions(name, model, ids, torch.tensor([0, 1]), mask)
        assert scores.shape == (2, 8) and torch.isfinite(scores).all()
        assert torch.equal(scores[1, 5:], torch.zeros(3, dtype=scores.dtype))
        assert (scores[mask.bool()] >= 0).all()


def test_plain_rollout_rows_are_distributions():
    model = tiny_lm(seed=113)
    embeds = embeddings_of(model, torch.randint(0, 40, (1, 6), generator=torch.Generator().manual_seed(2)))
    scores = AttentionRollout(ExplainedLogits(model)).attribute(embeds, target=3)
    assert scores.shape == (1, 6, 1) and float(scores.sum()) == pytest.approx(1.0, abs=1e-10)


def test_long_inputs_and_other_families_are_refused():
    model = tiny_lm(seed=114)
    embeds = torch.zeros(1, 20, model.config.hidden_size, dtype=torch.float64)
    with pytest.raises(ValueError, match="quadratic"):
        GradientAttentionRollout(ExplainedLogits(model), max_length=16).attribute(embeds, target=1)
    with pytest.raises(TypeError, match="Mamba-1 mixers"):
        AttentionRollout(ExplainedLogits(tiny_lm(seed=115, family="mamba2")))
