"""The shipped passkey-retrieval LM: it solves the task, MambaLRP finds the value, relevance is conserved."""

from __future__ import annotations

import math

import pytest
import torch

from captum_mamba import MambaLRP
from captum_mamba.evaluation.methods import ExplainedLogits
from captum_mamba.evaluation.synthetic.passkey import (
    load_passkey_model,
    passkey_accuracy,
    passkey_top1,
    train_passkey,
)
from captum_mamba.evaluation.synthetic.tasks import passkey_batch


@pytest.fixture(scope="module")
def model():
    return load_passkey_model(torch.float64)


def test_the_shipped_model_retrieves_the_value(model):
    assert passkey_accuracy(model, 64, n=128) >= 0.95


def test_mamba_lrp_puts_the_value_first_and_conserves(model):
    report = passkey_top1(model, ["mamba_lrp", "input_x_gradient"], n=32, length=64)
    assert report["_model"]["accuracy_on_these"] >= 0.95
    assert report["mamba_lrp"]["top1_value"] >= 0.9
    assert report["mamba_lrp"]["top1_value"] > report["input_x_gradient"]["top1_value"]

    batch = passkey_batch(4, 48, torch.Generator().manual_seed(7))
    embeds = model.get_input_embeddings()(batch.input_ids).detach()
    forward = ExplainedLogits(model)
    relevance, delta = MambaLRP(forward, model=model).attribute(
        embeds, target=batch.values, return_convergence_delta=True
    )
    with torch.no_grad():
        logits = forward(embeds).gather(1, batch.values[:, None])[:, 0]
    assert (delta.abs() <= 1e-8 * logits.abs().clamp(min=1)).all()  # bias-free: exact conservation
    # against the model's own forward (Hugging Face computes parts of it in float32)
    torch.testing.assert_close(relevance.sum((1, 2)), logits.double(), atol=1e-5, rtol=0)


def test_training_runs_and_a_missing_model_is_named(tmp_path):
    trained, losses = train_passkey(steps=3, batch_size=4, min_length=8, max_length=10, log_every=0)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses) and not trained.training
    with pytest.raises(ValueError, match="no passkey model.*train one"):
        load_passkey_model(folder=tmp_path)
