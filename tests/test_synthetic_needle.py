"""Synthetic needle task, its training script (smoke), the shipped needle model and the XRA analysis."""

from __future__ import annotations

import pytest
import torch

from captum_mamba import MambaLRP
from captum_mamba.evaluation.synthetic.needle import hits, load_needle_model, needle_top1, xra_grid
from captum_mamba.evaluation.synthetic.tasks import NEEDLE_ID, READOUT_ID, needle_batch
from captum_mamba.evaluation.synthetic.train import ASSETS, train


def test_needle_batches_are_what_they_say():
    batch = needle_batch(64, 20, torch.Generator().manual_seed(0))
    assert batch.input_ids.shape == (64, 20) and (batch.input_ids[:, -1] == READOUT_ID).all()
    present = batch.labels == 1
    assert 10 < int(present.sum()) < 54
    assert ((batch.input_ids == NEEDLE_ID).sum(1) == batch.labels).all()  # exactly one needle when present
    rows = present.nonzero()[:, 0]
    assert (batch.input_ids[rows, batch.needle_position[rows]] == NEEDLE_ID).all()
    assert (batch.needle_position[~present] == -1).all()
    at_depth = needle_batch(4, 11, torch.Generator().manual_seed(1), depth=0.5, present=True)
    assert (at_depth.needle_position == 4).all() and (at_depth.input_ids[:, 4] == NEEDLE_ID).all()
    again = needle_batch(64, 20, torch.Generator().manual_seed(0))
    assert torch.equal(again.input_ids, batch.input_ids)
    with pytest.raises(ValueError, match="depth"):
        needle_batch(1, 10, torch.Generator(), depth=1.5)


def test_training_smoke():
    model, losses = train(steps=3, batch_size=8, min_length=8, max_length=12, log_every=0)
    assert len(losses) == 3 and all(loss == loss for loss in losses)
    assert not model.training


def test_hits_top_k():
    scores = torch.tensor([[0.1, 0.9, 0.3, 5.0], [0.8, 0.1, 0.2, 0.0]])
    needle = torch.tensor([1, 2])
    assert hits(scores, needle).tolist() == [True, False]
    assert hits(scores, needle, include_readout=True).tolist() == [False, False]
    assert hits(scores, needle, k=2).tolist() == [True, True]


@pytest.fixture(scope="module")
def needle_model():
    if not (ASSETS / "model.safetensors").is_file():
        pytest.fail("the needle model is not shipped: run captum-mamba train needle")
    return load_needle_model(torch.float64)


def test_shipped_needle_model_is_accurate_and_conserves(needle_model):
    batch = needle_batch(256, 64, torch.Generator().manual_seed(99))
    with torch.no_grad():
        logits = needle_model(input_ids=batch.input_ids).logits
    assert float((logits.argmax(-1) == batch.labels).double().mean()) >= 0.97
    embeds = needle_model.get_input_embeddings()(batch.input_ids[:16]).detach()
    relevance, delta = MambaLRP(needle_model).attribute(embeds, target=1, return_convergence_delta=True)
    assert float(delta.abs().max()) <= 1e-8 * max(1.0, float(logits[:16, 1].abs().max()))


def test_mamba_lrp_finds_the_needle_where_gradient_x_input_does_not(needle_model):
    report = needle_top1(needle_model, ["mamba_lrp", "input_x_gradient"], n=60, length=64, seed=7)
    assert report["mamba_lrp"]["top1"] >= 0.9
    assert report["mamba_lrp"]["top1"] > report["input_x_gradient"]["top1"] + 0.3


def test_xra_grid_values(needle_model):
    grid = xra_grid(needle_model, "mamba_lrp", lengths=(16, 32), depths=(0.0, 1.0), n=8)
    assert grid.shape == (2, 2) and ((grid >= 0) & (grid <= 1)).all()
