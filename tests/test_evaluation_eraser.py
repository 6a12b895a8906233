"""ERASER comprehensiveness / sufficiency on models whose true relevances are known."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from captum_mamba.evaluation.eraser import ERASER_BINS, EraserResult, eraser_scores, rationale_masks

from conftest import tiny_classifier


def _two_class_bag(seed: int = 0, length: int = 10, hidden: int = 4):
    """logits = W * sum_t e_t with two classes: p(y) = sigmoid(sum_t r_t), r_t = e_t . (w_y - w_other)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(2, hidden, generator=generator, dtype=torch.float64)
    embeds = torch.randn(2, length, hidden, generator=generator, dtype=torch.float64)
    forward = lambda e, mask=None: (e * (1 if mask is None else mask[..., None])).sum(1) @ weight.T  # noqa: E731
    target = torch.tensor([0, 1])
    relevance = torch.einsum("bld,bd->bl", embeds, weight[target] - weight[1 - target])
    return forward, embeds, target, relevance


def test_values_of_a_linear_model_follow_the_definitions():
    forward, embeds, target, relevance = _two_class_bag()
    result = eraser_scores(forward, embeds, relevance, target)
    full = torch.sigmoid(relevance.sum(1))
    torch.testing.assert_close(result.probability.double(), full, atol=1e-6, rtol=0)
    ordered = relevance.sort(dim=1, descending=True).values
    for b, fraction in enumerate(ERASER_BINS):
        k = max(1, math.ceil(fraction * 10))
        top = ordered[:, :k].sum(1)
        torch.testing.assert_close(
            result.comprehensiveness[:, b].double(), full - torch.sigmoid(relevance.sum(1) - top), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(result.sufficiency[:, b].double(), full - torch.sigmoid(top), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.aopc_comprehensiveness, result.comprehensiveness.mean(1))


def test_the_true_ordering_is_the_most_comprehensive_and_sufficient():
    forward, embeds, target, relevance = _two_class_bag(seed=1, length=6)
    ideal = eraser_scores(forward, embeds, relevance, target, bins=(1 / 6, 2 / 6, 0.5))
    for permutation in itertools.permutations(range(6)):
        ranking = torch.tensor(permutation, dtype=torch.float64).expand(2, -1)
        other = eraser_scores(forward, embeds, ranking, target, bins=(1 / 6, 2 / 6, 0.5))
        assert (other.comprehensiveness <= ideal.comprehensiveness + 1e-6).all()
        assert (other.sufficiency >= ideal.sufficiency - 1e-6).all()
    flipped = eraser_scores(forward, embeds, -relevance, target, bins=(1 / 6, 2 / 6, 0.5))  # wrong sign
    assert (flipped.aopc_comprehensiveness < ideal.aopc_comprehensiveness).all()
    assert (flipped.aopc_sufficiency > ideal.aopc_sufficiency).all()


def test_deletion_shortens_the_input_and_replacement_keeps_positions():
    embeds = torch.arange(1.0, 6.0, dtype=torch.float64).view(1, 5, 1).repeat(1, 1, 2)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    seen = []

    def last_token(e, m=None):  # the logit is the last real token's embedding: sensitive to positions
        seen.append((e.clone(), None if m is None else m.clone()))
        last = (m.sum(1) - 1) if m is not None else torch.full((e.shape[0],), e.shape[1] - 1)
        value = e[torch.arange(e.shape[0]), last, 0]
        return torch.stack([value, -value], 1)

    scores = torch.tensor([[0.0, 3.0, 1.0, 2.0, 9.0]])  # position 4 is padding: never in a rationale
    rationale = rationale_masks(scores, mask, 0.5)
    assert rationale.tolist() == [[False, True, False, True, False]]
    seen.clear()
    eraser_scores(last_token, embeds, scores, 0, mask, bins=(0.5,))
    (_, _), (comp, comp_mask), (suff, suff_mask) = seen
    assert comp[0, :2, 0].tolist() == [1.0, 3.0] and comp_mask.tolist() == [[1, 1]]
    assert suff[0, :2, 0].tolist() == [2.0, 4.0] and suff_mask.tolist() == [[1, 1]]
    seen.clear()
    eraser_scores(last_token, embeds, scores, 0, mask, bins=(0.5,), removal="replace")
    (_, _), (comp, comp_mask), _ = seen
    assert comp[0, :, 0].tolist() == [1.0, 0.0, 3.0, 0.0, 5.0] and comp_mask.tolist() == mask.tolist()


def test_an_emptied_input_is_one_replacement_token_and_errors():
    forward, embeds, target, relevance = _two_class_bag(length=1)
    result = eraser_scores(forward, embeds, relevance, target, bins=(1.0,))
    # nothing left: a zero embedding, logits 0, p = 1/2
    torch.testing.assert_close(result.comprehensiveness[:, 0], result.probability - 0.5, atol=1e-6, rtol=0)
    assert torch.allclose(result.sufficiency, torch.zeros_like(result.sufficiency), atol=1e-6)
    with pytest.raises(ValueError, match="removal"):
        eraser_scores(forward, embeds, relevance, target, removal="mask")
    with pytest.raises(ValueError, match="fraction"):
        rationale_masks(relevance, None, 0.0)
    with pytest.raises(ValueError, match="scores must have shape"):
        eraser_scores(forward, embeds, relevance[:, :0], target)
    both = EraserResult.concatenate([result, result])
    assert both.summary()["n"] == 4


def test_evaluate_eraser_on_a_tiny_mamba():
    from captum_mamba.evaluation.eraser import eraser_markdown, eraser_table, evaluate_eraser

    model = tiny_classifier(seed=171)
    ids = [torch.tensor([3, 5, 7, 2, 9]), torch.tensor([4, 4, 1]), torch.tensor([8, 6, 2, 2, 1, 7, 5])]
    results, seconds = evaluate_eraser(model, ids, ["mamba_lrp", "random"], batch_size=2)
    assert results["mamba_lrp"].comprehensiveness.shape == (3, len(ERASER_BINS))
    # examples come back in the order given, whatever the batching
    alone, _ = evaluate_eraser(model, ids[1:2], ["mamba_lrp"])
    torch.testing.assert_close(results["mamba_lrp"].probability[1:2], alone["mamba_lrp"].probability)
    torch.testing.assert_close(results["mamba_lrp"].sufficiency[1:2], alone["mamba_lrp"].sufficiency)
    report = eraser_table(results, seconds, "captum-mamba evaluate eraser", "three sentences")
    assert report["n"] == 3 and {r["method"] for r in report["rows"]} == {"mamba_lrp", "random"}
    assert "| MambaLRP |" in eraser_markdown(report)
