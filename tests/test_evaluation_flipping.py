"""Token flipping on models whose true relevances are known."""

from __future__ import annotations

import itertools

import pytest
import torch

from captum_mamba.evaluation.flipping import FlippingResult, deletion_curves, flipping_curves, replacement_vector


def _bag_of_embeddings(seed: int = 0, length: int = 5, hidden: int = 4, classes: int = 3):
    """logits = W * sum_t e_t: removing token t (zero embedding) subtracts exactly W e_t."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, hidden, generator=generator, dtype=torch.float64)
    embeds = torch.randn(2, length, hidden, generator=generator, dtype=torch.float64)
    forward = lambda e, mask=None: e.sum(1) @ weight.T  # noqa: E731
    target = torch.tensor([0, 2])
    true_relevance = torch.einsum("bld,bd->bl", embeds, weight[target])
    return forward, embeds, target, true_relevance


def test_curves_of_a_linear_model_are_cumulative_sums_of_the_relevances():
    forward, embeds, target, relevance = _bag_of_embeddings()
    result = flipping_curves(forward, embeds, relevance, target, steps=None)
    ordered = relevance.sort(dim=1, descending=True).values
    logit = relevance.sum(1, keepdim=True)
    expected_morf = torch.cat([logit, logit - ordered.cumsum(1)], dim=1)
    torch.testing.assert_close(result.morf.double(), expected_morf, atol=1e-5, rtol=1e-5)
    expected_insertion = torch.cat([torch.zeros_like(logit), ordered.cumsum(1)], dim=1)
    torch.testing.assert_close(result.morf_insertion.double(), expected_insertion, atol=1e-5, rtol=1e-5)
    assert result.fractions == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_deletion_curves_are_the_deletion_half_of_flipping_curves():
    forward, embeds, target, relevance = _bag_of_embeddings(seed=2)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    full = flipping_curves(forward, embeds, relevance, target, mask, steps=3)
    fractions, morf, lerf = deletion_curves(forward, embeds, relevance, target, mask, steps=3)
    assert fractions == full.fractions
    torch.testing.assert_close(morf, full.morf)
    torch.testing.assert_close(lerf, full.lerf)


def test_tokens_held_fixed_are_never_replaced_and_do_not_count():
    """A causal LM's explained position held: the curves are those of the other tokens plus its constant part."""
    forward, embeds, target, relevance = _bag_of_embeddings(seed=3)
    changeable = torch.ones(2, 5, dtype=torch.bool)
    changeable[:, -1] = False
    result = flipping_curves(forward, embeds, relevance, target, steps=None, changeable=changeable)
    assert result.fractions == [0, 0.25, 0.5, 0.75, 1.0]  # one step per changeable token
    held = relevance[:, -1]
    ordered = relevance[:, :4].sort(dim=1, descending=True).values
    logit = relevance.sum(1, keepdim=True)
    expected_morf = torch.cat([logit, logit - ordered.cumsum(1)], dim=1)  # ends at the held token's part
    torch.testing.assert_close(result.morf.double(), expected_morf, atol=1e-5, rtol=1e-5)
    expected_insertion = torch.cat([held[:, None], held[:, None] + ordered.cumsum(1)], dim=1)
    torch.testing.assert_close(result.morf_insertion.double(), expected_insertion, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="changeable must have shape"):
        flipping_curves(forward, embeds, relevance, target, steps=3, changeable=changeable[:, :4])


def test_the_true_ordering_maximises_delta_af_and_random_orderings_average_zero():
    forward, embeds, target, relevance = _bag_of_embeddings(seed=1)
    ideal = flipping_curves(forward, embeds, relevance, target, steps=None)
    best = torch.full((2,), -float("inf"))
    all_orderings = []
    for permutation in itertools.permutations(range(5)):
        ranking = torch.tensor(permutation, dtype=torch.float64).expand(2, -1)
        delta = flipping_curves(forward, embeds, ranking, target, steps=None).delta_af
        best = torch.maximum(best, delta)
        all_orderings.append(delta)
    torch.testing.assert_close(ideal.delta_af, best, atol=1e-5, rtol=0)  # nothing beats the truth
    assert (ideal.delta_af > 0).all()
    # every ordering and its reverse give opposite ΔA^F: the average over all orderings is zero
    torch.testing.assert_close(torch.stack(all_orderings).mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(ideal.delta_ai, ideal.delta_af, atol=1e-5, rtol=0)  # linear model: same area gap


def test_random_scores_average_about_zero_on_a_longer_input():
    forward, embeds, target, relevance = _bag_of_embeddings(seed=2, length=30)
    generator = torch.Generator().manual_seed(0)
    deltas = torch.stack(
        [
            flipping_curves(
                forward, embeds, torch.rand(2, 30, generator=generator, dtype=torch.float64), target
            ).delta_af
            for _ in range(200)
        ]
    )
    ideal = flipping_curves(forward, embeds, relevance, target).delta_af
    assert (deltas.mean(0).abs() < 0.1 * ideal).all()


def test_padding_is_never_flipped_and_fraction_steps():
    forward, embeds, target, relevance = _bag_of_embeddings(seed=3, length=6)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    result = flipping_curves(forward, embeds * mask[..., None], relevance * mask, target, mask, steps=2)
    assert result.morf.shape == (2, 3)
    # at fraction 1 every real token is removed: only padding (zero) is left
    torch.testing.assert_close(result.morf[:, -1].double(), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    # row 1 has 4 real tokens: half of them (2) are removed at fraction 0.5
    top2 = (relevance[1, :4]).sort(descending=True).values[:2].sum()
    assert float(result.morf[1, 1]) == pytest.approx(float(relevance[1, :4].sum() - top2), abs=1e-5)


def test_replacements_and_errors():
    embedding = torch.nn.Embedding(7, 3)
    torch.testing.assert_close(replacement_vector(embedding, "zero"), torch.zeros(3))
    torch.testing.assert_close(replacement_vector(embedding, "mean"), embedding.weight.detach().mean(0))
    torch.testing.assert_close(replacement_vector(embedding, 4), embedding.weight.detach()[4])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        replacement_vector(embedding, 9)
    with pytest.raises(ValueError, match="replacement must be"):
        replacement_vector(embedding, "unk")
    forward, embeds, target, relevance = _bag_of_embeddings()
    with pytest.raises(ValueError, match="scores must have shape"):
        flipping_curves(forward, embeds, relevance[:, :3], target)
    with pytest.raises(ValueError, match="score must be"):
        flipping_curves(forward, embeds, relevance, target, score="loss")
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, -1] = 0
    with pytest.raises(ValueError, match="equal real length"):
        flipping_curves(forward, embeds, relevance, target, mask, steps=None)


def test_probability_score_and_json_summary():
    forward, embeds, target, relevance = _bag_of_embeddings()
    result = flipping_curves(forward, embeds, relevance, target, score="probability", steps=4)
    assert ((result.morf >= 0) & (result.morf <= 1)).all()
    summary = result.summary()
    assert summary["n"] == 2 and set(summary) >= {"delta_af", "delta_af_sem", "delta_ai", "area_morf"}
    both = FlippingResult.concatenate([result, result])
    assert both.morf.shape == (4, 5) and both.summary()["delta_af"] == pytest.approx(summary["delta_af"])
    assert '"delta_af"' in result.to_json()


def test_insertion_mirrors_deletion_with_one_baseline_and_not_with_its_own():
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    embeds = torch.randn(2, 7, 4, generator=generator, dtype=torch.float64)
    forward = lambda e, mask=None: torch.tanh(e.sum(1)).pow(2) @ weight.T  # noqa: E731  (tokens interact)
    scores = torch.randn(2, 7, generator=generator, dtype=torch.float64)
    target = torch.tensor([1, 0])
    same = flipping_curves(forward, embeds, scores, target, steps=None)
    # inserting the k most relevant tokens is the input with the n - k least relevant deleted
    torch.testing.assert_close(same.morf_insertion, same.lerf.flip(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(same.delta_ai, same.delta_af, atol=1e-6, rtol=0)

    baseline = torch.full((4,), 0.7, dtype=torch.float64)
    own = flipping_curves(forward, embeds, scores, target, steps=None, insertion_replacement=baseline)
    torch.testing.assert_close(own.morf, same.morf)  # deletion untouched
    start = forward(baseline.expand(2, 7, 4), None).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(own.morf_insertion[:, 0].double(), start, atol=1e-6, rtol=0)
    torch.testing.assert_close(own.morf_insertion[:, -1], same.morf[:, 0])  # everything inserted: the input
    assert (own.delta_ai - own.delta_af).abs().max() > 1e-3
    with pytest.raises(ValueError, match="shape"):
        flipping_curves(forward, embeds, scores, target, insertion_replacement=torch.zeros(3))
