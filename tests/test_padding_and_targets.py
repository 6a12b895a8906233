"""Padding-aware batches, multi-token targets and the unsupported-module safety net, all families."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_mamba import LayerMambaLRP, MambaLRP, TokenTargets, UnsupportedModuleError, last_token_positions

from conftest import embeddings_of, tiny_classifier, tiny_lm, token_ids

FAMILIES = ["mamba", "mamba2", "falcon_mamba"]
LENGTHS = [9, 6, 4]


def _padded(left: bool):
    ids = token_ids(batch=3, length=9, seed=9)
    positions = torch.arange(9)[None]
    lengths = torch.tensor(LENGTHS)[:, None]
    mask = (positions >= 9 - lengths) if left else (positions < lengths)
    return ids, mask.long()


def _row(ids: torch.Tensor, row: int, left: bool) -> torch.Tensor:
    n = LENGTHS[row]
    return ids[row : row + 1, -n:] if left else ids[row : row + 1, :n]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_padded_lm_batch_equals_rows_alone(family, left):
    model = tiny_lm(seed=10, family=family, use_conv_bias=True)
    ids, mask = _padded(left)
    padded_ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    explainer = LayerMambaLRP(model, model.backbone.embeddings)
    batched = explainer.attribute(
        padded_ids, target=[1, 2, 3], additional_forward_args=mask, explained_position="last_real"
    )
    for row, target in enumerate([1, 2, 3]):
        alone = explainer.attribute(_row(ids, row, left), target=target)
        real = mask[row].bool()
        torch.testing.assert_close(batched[row : row + 1, real], alone, atol=1e-10, rtol=0)
        assert torch.all(batched[row, ~real] == 0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_padded_classifier_batch_equals_rows_alone(family, pooling, left):
    model = tiny_classifier(seed=11, family=family, pooling=pooling)
    ids, mask = _padded(left)
    explainer = LayerMambaLRP(model, model.backbone.embeddings)
    batched, delta = explainer.attribute(
        ids * mask, target=2, additional_forward_args=mask, return_convergence_delta=True
    )
    for row in range(3):
        alone = explainer.attribute(_row(ids, row, left), target=2)
        real = mask[row].bool()
        torch.testing.assert_close(batched[row : row + 1, real], alone, atol=1e-10, rtol=0)
        assert torch.all(batched[row, ~real] == 0)
    assert delta.abs().max() < 1e-10


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_left_padding_with_in_proj_bias_is_refused(family):
    model = tiny_lm(seed=12, family=family, use_bias=True)
    ids, mask = _padded(left=True)
    with pytest.raises(ValueError, match="left padding"):
        LayerMambaLRP(model, model.backbone.embeddings).attribute(ids, target=0, additional_forward_args=mask)
    right_ids, right_mask = _padded(left=False)  # right padding stays fine with a bias
    LayerMambaLRP(model, model.backbone.embeddings).attribute(
        right_ids, target=0, additional_forward_args=right_mask, explained_position="last_real"
    )


def test_last_token_positions():
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    assert last_token_positions(mask).tolist() == [1, 3, 3]
    with pytest.raises(ValueError, match="no real token"):
        last_token_positions(torch.tensor([[0, 0]]))


@pytest.mark.parametrize("family", FAMILIES)
def test_span_target_is_the_sum_of_single_token_explanations(family):
    model = tiny_lm(seed=13, family=family)
    embeds = embeddings_of(model, token_ids(batch=2, length=8, seed=14))
    span = [(4, 7), (5, 1), (7, 30)]
    together, delta = MambaLRP(model, explained_position=None).attribute(
        embeds, target=TokenTargets(span), return_convergence_delta=True
    )
    singles = sum(MambaLRP(model, explained_position=p).attribute(embeds, target=t) for p, t in span)
    torch.testing.assert_close(together, singles, atol=1e-10, rtol=0)
    with torch.no_grad():
        from captum_mamba import mamba_lrp_rules

        with mamba_lrp_rules(model):
            logits = model.lm_head(model.backbone(inputs_embeds=embeds).last_hidden_state)  # before HF narrows
    summed = sum(logits[:, p, t] for p, t in span)
    torch.testing.assert_close(together.sum((1, 2)), summed, atol=1e-10, rtol=0)
    assert delta.abs().max() < 1e-10


def test_per_example_token_targets_and_errors():
    model = tiny_lm(seed=15)
    embeds = embeddings_of(model, token_ids(batch=2, length=6))
    per_row = TokenTargets([[(2, 3)], [(5, 1), (4, 4)]], per_example=True)
    relevance = MambaLRP(model).attribute(embeds, target=per_row)
    first = MambaLRP(model, explained_position=2).attribute(embeds[:1], target=3)
    torch.testing.assert_close(relevance[:1], first, atol=1e-12, rtol=0)
    with pytest.raises(IndexError, match="out of range"):
        MambaLRP(model).attribute(embeds, target=TokenTargets([(9, 1)]))
    with pytest.raises(ValueError, match="for 1 examples and a batch of 2"):
        MambaLRP(model).attribute(embeds, target=TokenTargets([[(1, 1)]], per_example=True))


class HybridAttention(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.query = nn.Linear(width, width)
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x):
        scores = torch.softmax(self.query(x) @ x.transpose(1, 2) / self.temperature, -1)
        return scores @ x


class Hybrid(nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.attention = HybridAttention()

    def forward(self, embeds):
        return self.lm(inputs_embeds=self.attention(embeds)).logits[:, -1]


def test_unknown_blocks_are_named_unless_the_fallback_is_chosen():
    model = Hybrid(tiny_lm(seed=16)).double()
    embeds = embeddings_of(model.lm, token_ids())
    with pytest.raises(UnsupportedModuleError, match="HybridAttention"):
        MambaLRP(model).attribute(embeds, target=1)
    with pytest.warns(UserWarning, match="no MambaLRP rule for HybridAttention"):
        relevance = MambaLRP(model, plain_gradient_fallback=[HybridAttention]).attribute(embeds, target=1)
    assert relevance.shape == embeds.shape and torch.isfinite(relevance).all()
