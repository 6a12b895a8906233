"""Batched explanations equal one-by-one explanations; right padding is handled."""

from __future__ import annotations

import torch

from captum_mamba import LayerMambaLRP, MambaLRP

from conftest import embeddings_of, tiny_classifier, tiny_lm, token_ids


def test_batch_equals_one_by_one():
    model = tiny_lm(seed=41)
    embeds = embeddings_of(model, token_ids(batch=3, length=9, seed=4))
    targets = [0, 5, 7]
    batched = MambaLRP(model).attribute(embeds, target=targets)
    for row, target in enumerate(targets):
        single = MambaLRP(model).attribute(embeds[row : row + 1], target=target)
        torch.testing.assert_close(batched[row : row + 1], single, atol=1e-12, rtol=0)


def test_right_padded_lm_batch_explains_each_rows_last_real_token():
    model = tiny_lm(seed=42)
    lengths = [9, 6, 4]
    ids = token_ids(batch=3, length=9, seed=5)
    mask = (torch.arange(9)[None] < torch.tensor(lengths)[:, None]).long()
    padded_ids = ids * mask  # pad id 0
    last_real = [n - 1 for n in lengths]
    explainer = LayerMambaLRP(model, model.backbone.embeddings)
    batched = explainer.attribute(
        padded_ids, target=[1, 2, 3], additional_forward_args=mask, explained_position=last_real
    )
    for row, (n, target) in enumerate(zip(lengths, [1, 2, 3])):
        alone = explainer.attribute(ids[row : row + 1, :n], target=target)
        torch.testing.assert_close(batched[row : row + 1, :n], alone, atol=1e-10, rtol=0)
        assert torch.all(batched[row, n:] == 0)  # pad positions get exactly zero relevance


def test_right_padded_classifier_with_last_token_pooling():
    model = tiny_classifier(seed=43, pooling="last")
    lengths = [8, 5]
    ids = token_ids(batch=2, length=8, seed=6)
    mask = (torch.arange(8)[None] < torch.tensor(lengths)[:, None]).long()
    explainer = LayerMambaLRP(model, model.backbone.embeddings)
    batched, delta = explainer.attribute(
        ids * mask, target=2, additional_forward_args=mask, return_convergence_delta=True
    )
    for row, n in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :n], target=2)
        torch.testing.assert_close(batched[row : row + 1, :n], alone, atol=1e-10, rtol=0)
        assert torch.all(batched[row, n:] == 0)
    assert delta.abs().max() < 1e-10


def test_tuple_inputs_give_tuple_outputs():
    model = tiny_lm(seed=44)
    embeds = embeddings_of(model, token_ids(batch=2, length=7))
    half = embeds * 0.5

    def forward(a, b):
        return model(inputs_embeds=a + b).logits[:, -1]

    first, second = MambaLRP(forward, model=model).attribute((half, half.clone()), target=3)
    single = MambaLRP(model).attribute(embeds, target=3)
    torch.testing.assert_close(first + second, single, atol=1e-12, rtol=0)
