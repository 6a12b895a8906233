"""Quantus metrics through the token-presence adapter: agreement with the project's own ΔA^F."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_classifier

pytest.importorskip("quantus")

from captum_mamba.evaluation.quantus_metrics import (  # noqa: E402
    TokenPresenceModel,
    evaluate_quantus,
    quantus_accepts,
    quantus_explain_func,
    quantus_markdown,
    quantus_table,
)


def test_presences_map_to_embeddings_and_the_adapter_returns_token_scores():
    model = tiny_classifier(seed=172)
    ids = torch.tensor([[3, 5, 7, 2], [1, 4, 4, 9]])
    embeds = model.get_input_embeddings()(ids).detach()
    replacement = torch.full((embeds.shape[-1],), 0.5, dtype=embeds.dtype)
    wrapped = TokenPresenceModel(model, embeds, replacement)
    gates = np.ones((2, 1, 1, 4))
    gates[0, 0, 0, 1] = 0
    mixed = wrapped.embeddings(gates)
    torch.testing.assert_close(mixed[0, 1], replacement)
    torch.testing.assert_close(mixed[1], embeds[1])
    relevance = quantus_explain_func(wrapped, np.ones((2, 1, 1, 4)), np.array([0, 2]), method="mamba_lrp")
    assert relevance.shape == (2, 1, 1, 4)
    from captum_mamba.evaluation import token_attributions

    expected = token_attributions("mamba_lrp", model, ids, torch.tensor([0, 2]))
    np.testing.assert_allclose(relevance.reshape(2, 4), expected.numpy(), atol=1e-8)
    with pytest.raises(ValueError, match="holds 2 inputs"):
        wrapped.embeddings(np.ones((3, 1, 1, 4)))


def test_quantus_region_perturbation_equals_the_projects_delta_af():
    model = tiny_classifier(seed=173)
    generator = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 40, (n,), generator=generator) for n in (6, 6, 5, 1)]
    results, seconds = evaluate_quantus(model, ids, ["mamba_lrp", "random"], nr_runs=8, nr_samples=2)
    for result in results.values():
        assert len(result.region_perturbation) == 3  # the one-token input is left out
        np.testing.assert_allclose(result.region_perturbation, result.delta_af_one_token, atol=1e-6)
        assert all(-1 - 1e-9 <= v <= 1 + 1e-9 for v in result.faithfulness_correlation)
    lrp = results["mamba_lrp"].summary()
    assert lrp["completeness_gap"] < 0.5  # MambaLRP is (nearly) conservative; the rest is the baseline's logit
    report = quantus_table(results, seconds, "captum-mamba evaluate quantus", "four sentences")
    assert set(report["ordering_region_perturbation"]) == {"mamba_lrp", "random"}
    assert "region perturbation" in quantus_markdown(report)


def test_batches_quantus_refuses_get_undefined_quantus_metrics_and_keep_delta_af():
    from captum_mamba.evaluation.methods import METHODS, MethodSpec, register_method

    class AgainstEverything:  # a method whose relevances are all negative
        def __init__(self, forward, model):
            self.forward = forward

        def attribute(self, inputs, target=None, additional_forward_args=None):
            return -inputs.abs() - 1.0

    assert not quantus_accepts(-np.ones((1, 1, 1, 3))) and not quantus_accepts(np.zeros((1, 1, 1, 3)))
    assert quantus_accepts(np.array([[[[-1.0, 0.5]]]]))
    register_method(MethodSpec("all_negative", "all negative", AgainstEverything, reduction="sum"))
    try:
        model = tiny_classifier(seed=174)
        ids = [torch.tensor([3, 5, 7]), torch.tensor([1, 4, 9, 2])]
        results, _ = evaluate_quantus(model, ids, ["all_negative"], nr_runs=4, nr_samples=2)
    finally:
        del METHODS["all_negative"]
    result = results["all_negative"]
    assert all(np.isnan(v) for v in result.region_perturbation + result.faithfulness_correlation)
    assert all(np.isfinite(v) for v in result.delta_af_one_token)
    assert result.summary()["quantus_undefined"] == 2
