"""The shipped copying-task LM: it copies, MambaLRP finds each output's source token, relevance is conserved."""

from __future__ import annotations

import json
import math

import pytest
import torch

from captum_mamba import MambaLRP
from captum_mamba.evaluation.synthetic.causal_lm import train_measure_save
from captum_mamba.evaluation.synthetic.copying import (
    COPY_LENGTH,
    copying_accuracy,
    copying_evaluation,
    copying_top1,
    load_copying_model,
    train_copying,
)
from captum_mamba.evaluation.synthetic.tasks import copying_batch


@pytest.fixture(scope="module")
def model():
    return load_copying_model(torch.float64)


def test_the_shipped_model_copies(model):
    accuracy = copying_accuracy(model, 64, n=128)
    assert accuracy["token"] >= 0.99 and accuracy["sequence"] >= 0.95


def test_mamba_lrp_finds_every_source_token(model):
    report = copying_top1(model, ["mamba_lrp", "input_x_gradient"], n=24, length=48)
    assert report["_model"]["accuracy_on_these"] >= 0.95
    assert min(report["mamba_lrp"]["top1_source_by_output"]) >= 0.9
    assert report["mamba_lrp"]["top1_source"] > report["input_x_gradient"]["top1_source"] + 0.3


@pytest.mark.parametrize("k", range(COPY_LENGTH))
def test_explaining_a_cut_sequence_equals_explaining_that_position_of_the_whole(model, k):
    """copying_top1 cuts the sequence after the explained output; causality makes that exact."""
    batch = copying_batch(3, 40, torch.Generator().manual_seed(3), COPY_LENGTH)
    position = 40 - COPY_LENGTH + k
    token = batch.labels[:, position]
    embed = model.get_input_embeddings()
    whole = embed(batch.input_ids).detach()
    explainer = MambaLRP(model, explained_position=position)
    relevance, delta = explainer.attribute(whole, target=token, return_convergence_delta=True)
    cut, cut_delta = MambaLRP(model).attribute(
        whole[:, : position + 1].clone(), target=token, return_convergence_delta=True
    )
    torch.testing.assert_close(relevance[:, : position + 1], cut, atol=1e-10, rtol=0)
    assert (relevance[:, position + 1 :] == 0).all()
    with torch.no_grad():
        logits = model(inputs_embeds=whole).logits[torch.arange(3), position, token]
    assert (delta.abs() <= 1e-8 * logits.abs().clamp(min=1)).all()  # bias-free: exact conservation
    torch.testing.assert_close(cut_delta, delta, atol=1e-8, rtol=0)


def test_training_runs_and_a_missing_model_is_named(tmp_path):
    trained, losses = train_copying(steps=3, batch_size=4, min_length=10, max_length=12, log_every=0)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses) and not trained.training
    with pytest.raises(ValueError, match="no copying model.*train one"):
        load_copying_model(folder=tmp_path)


def test_the_training_command_saves_a_loadable_model_and_its_metrics(tmp_path):
    threads = torch.get_num_threads()
    seen = {}

    def train(steps, seed):
        seen["threads"] = torch.get_num_threads()
        return train_copying(steps=steps, seed=seed, batch_size=4, min_length=10, max_length=12, log_every=0)

    def top1(model, n):
        seen["top1_dtype"] = next(model.parameters()).dtype
        return {"n": n}

    record = train_measure_save(
        "copying",
        tmp_path,
        steps=2,
        seed=5,
        report_n=3,
        train=train,
        measure=lambda model: {"accuracy": copying_accuracy(model, 12, n=4)},
        top1=top1,
    )
    assert seen == {"threads": 1, "top1_dtype": torch.float64} and torch.get_num_threads() == threads
    assert json.loads((tmp_path / "metrics.json").read_text()) == record
    assert record["steps"] == 2 and record["seed"] == 5 and record["top1"] == {"n": 3}
    assert record["command"] == f"captum-mamba train copying --steps 2 --seed 5 --report-n 3 --out {tmp_path}"
    reloaded = load_copying_model(folder=tmp_path)
    assert next(reloaded.parameters()).dtype == torch.float32
    assert copying_accuracy(reloaded, 12, n=4) == record["accuracy"]


def test_the_copying_evaluation_holds_the_explained_position(model):
    """Zeroing the explained position's input sets a bias-free Mamba's logit to exactly 0 (every layer's
    input there is 0, so its gate and output are): flipping it too makes MoRF the same for any method
    that ranks it high, so copying_evaluation holds it, as top-1 excludes it."""
    batch = copying_batch(2, 20, torch.Generator().manual_seed(5), COPY_LENGTH)
    embeds = model.get_input_embeddings()(batch.input_ids[:, :17]).detach()
    embeds[:, -1] = 0
    with torch.no_grad():
        assert (model(inputs_embeds=embeds).logits[:, -1] == 0).all()
    methods = ["mamba_lrp", "saliency"]
    flipped = copying_evaluation(model, methods, n=4, length=20, steps=4, flip_explained=True)
    held = copying_evaluation(model, methods, n=4, length=20, steps=4)
    assert flipped["mamba_lrp"]["area_morf"] == pytest.approx(flipped["saliency"]["area_morf"], abs=1e-6)
    assert held["mamba_lrp"]["area_morf"] != pytest.approx(held["saliency"]["area_morf"], abs=1e-3)
    assert held["_model"]["flip_explained"] is False and flipped["_model"]["flip_explained"] is True
    for name in methods:  # the explanations are the same; only the flipped positions differ
        assert held[name]["top1_source_by_output"] == flipped[name]["top1_source_by_output"]


def test_the_evaluation_reports_the_relevance_shares_on_source_and_explained_position(model):
    """share_on_source / share_on_explained_position are the mean |R| shares of those two tokens,
    recomputed here from MambaLRP called directly on each cut sequence."""
    report = copying_evaluation(model, ["mamba_lrp"], n=3, length=16, steps=2)
    batch = copying_batch(3, 16, torch.Generator().manual_seed(0), COPY_LENGTH)
    start = 16 - COPY_LENGTH
    on_source, on_explained = [], []
    for k in range(COPY_LENGTH):
        for row in range(3):
            ids = batch.input_ids[row : row + 1, : start + k + 1]
            embeds = model.get_input_embeddings()(ids).detach()
            target = int(batch.labels[row, start + k])
            magnitude = MambaLRP(model).attribute(embeds, target=target).sum(-1)[0].abs()
            on_source.append(float(magnitude[int(batch.source_position[row, start + k])] / magnitude.sum()))
            on_explained.append(float(magnitude[-1] / magnitude.sum()))
    row = report["mamba_lrp"]
    assert row["share_on_source"] == pytest.approx(sum(on_source) / len(on_source), abs=1e-9)
    assert row["share_on_explained_position"] == pytest.approx(sum(on_explained) / len(on_explained), abs=1e-9)
    assert 0 < row["share_on_source"] + row["share_on_explained_position"] <= 1
