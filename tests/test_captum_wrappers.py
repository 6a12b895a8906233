"""MambaLRP inside Captum's wrappers and metrics: NoiseTunnel variants, infidelity, sensitivity_max."""

from __future__ import annotations

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity, sensitivity_max

from captum_mamba import MambaLRP

from conftest import embeddings_of, tiny_classifier, tiny_lm


def _noisy_samples(explainer: MambaLRP, embeds: torch.Tensor, target: int, stdev: float, n: int, seed: int):
    """MambaLRP on the noisy copies NoiseTunnel draws (same seed, same float32 Gaussian draws), in one call."""
    torch.manual_seed(seed)
    repeated = embeds.repeat_interleave(n, dim=0)
    noisy = repeated + torch.normal(0, torch.tensor(stdev).repeat(repeated.shape))
    return explainer.attribute(noisy, target=target).view(embeds.shape[0], n, *embeds.shape[1:])


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_variants_equal_their_definition(nt_type, ids):
    model = tiny_lm(seed=71)
    embeds = embeddings_of(model, ids)
    explainer = MambaLRP(model)
    torch.manual_seed(7)
    tunnel = NoiseTunnel(explainer).attribute(embeds, nt_type=nt_type, nt_samples=4, stdevs=0.05, target=2)
    samples = _noisy_samples(explainer, embeds, target=2, stdev=0.05, n=4, seed=7)
    expected = {
        "smoothgrad": samples.mean(1),
        "smoothgrad_sq": (samples**2).mean(1),
        "vargrad": (samples**2).mean(1) - samples.mean(1) ** 2,
    }[nt_type]
    torch.testing.assert_close(tunnel, expected, atol=1e-10, rtol=1e-8)
    if nt_type != "smoothgrad":
        assert (tunnel >= -1e-12).all()


def test_noise_tunnel_sample_batching_does_not_change_the_result(ids):
    model = tiny_classifier(seed=72)
    embeds = embeddings_of(model, ids)
    explainer = MambaLRP(model)
    results = []
    for batch_size in (None, 2, 3):
        torch.manual_seed(11)
        results.append(
            NoiseTunnel(explainer).attribute(
                embeds, nt_type="smoothgrad", nt_samples=6, nt_samples_batch_size=batch_size, stdevs=0.1, target=1
            )
        )
    # Captum draws the noise batch by batch, so the draws differ; the noiseless limit must not
    torch.manual_seed(11)
    noiseless = NoiseTunnel(explainer).attribute(
        embeds, nt_type="smoothgrad", nt_samples=6, nt_samples_batch_size=4, stdevs=0.0, target=1
    )
    torch.testing.assert_close(noiseless, explainer.attribute(embeds, target=1), atol=1e-12, rtol=0)
    for result in results:
        assert result.shape == embeds.shape and torch.isfinite(result).all()
    unbatched = _noisy_samples(explainer, embeds, target=1, stdev=0.1, n=6, seed=11).mean(1)
    torch.testing.assert_close(results[0], unbatched, atol=1e-10, rtol=1e-8)


def test_noise_tunnel_keeps_the_convergence_delta(ids):
    model = tiny_lm(seed=73)
    embeds = embeddings_of(model, ids)
    attributions, delta = NoiseTunnel(MambaLRP(model)).attribute(
        embeds, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=5, return_convergence_delta=True
    )
    assert delta.shape == (3 * embeds.shape[0],) and float(delta.abs().max()) < 1e-8


def test_infidelity_and_sensitivity_with_mamba_lrp(ids):
    model = tiny_classifier(seed=74)
    embeds = embeddings_of(model, ids)
    explainer = MambaLRP(model)
    forward = lambda e: model(inputs_embeds=e).logits  # noqa: E731

    def drop_tokens(inputs: torch.Tensor):
        keep = (torch.rand(inputs.shape[:2], dtype=inputs.dtype) > 0.3).to(inputs.dtype)[..., None]
        perturbation = inputs * (1 - keep)
        return perturbation, inputs - perturbation

    attributions = explainer.attribute(embeds, target=1)
    torch.manual_seed(3)
    score = infidelity(forward, drop_tokens, embeds, attributions, target=1, n_perturb_samples=8)
    torch.manual_seed(3)
    shuffled = attributions[:, torch.randperm(attributions.shape[1])]
    shuffled_score = infidelity(forward, drop_tokens, embeds, shuffled, target=1, n_perturb_samples=8)
    assert score.shape == (embeds.shape[0],) and torch.isfinite(score).all() and (score >= 0).all()
    assert not torch.allclose(score, shuffled_score)

    still = sensitivity_max(explainer.attribute, embeds, target=1, perturb_radius=0.0, n_perturb_samples=3)
    # deterministic: identical inputs, identical relevances (up to batched-matmul rounding)
    assert float(still.max()) < 1e-12
    moved = sensitivity_max(explainer.attribute, embeds, target=1, perturb_radius=0.05, n_perturb_samples=3)
    assert (moved > 0).all() and torch.isfinite(moved).all()
