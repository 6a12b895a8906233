"""Shipped synthetic needle models (stated accuracy, MambaLRP finds the needle, conservation),
the trainer (smoke: the loss goes down), XRA over depths x lengths, and the ``needle`` CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from captum_mamba import MambaLRP
from captum_mamba.cli import main
from captum_mamba.evaluation.synthetic.needle import (
    load_needle_model,
    method_scores,
    model_accuracy_grid,
    needle_top1,
    shipped_needle_models,
    xra_grid,
)
from captum_mamba.evaluation.synthetic.tasks import needle_batch
from captum_mamba.evaluation.synthetic.train import ASSETS, build_model, train

MULTILENGTH = "needle_multilength"


def test_training_smoke_loss_goes_down():
    held_out = needle_batch(128, 8, torch.Generator().manual_seed(5))

    def loss(model):
        with torch.no_grad():
            return float(F.cross_entropy(model(input_ids=held_out.input_ids).logits, held_out.labels))

    torch.manual_seed(0)
    untrained = build_model().eval()  # train() draws the same initialisation from seed 0
    trained, losses = train(steps=20, batch_size=16, min_length=8, max_length=8, log_every=0)
    assert len(losses) == 20
    assert loss(trained) < loss(untrained) - 0.05


def test_trainer_writes_model_metrics_and_card(tmp_path, capsys):
    out = tmp_path / "tiny"
    args = [
        "--steps",
        "2",
        "--min-length",
        "6",
        "--max-length",
        "8",
        "--eval-lengths",
        "8",
        "--card",
        "--out",
        str(out),
    ]
    assert main(["train", "needle", *args]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "metrics.json", "MODEL_CARD.md"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_lengths"] == [6, 8] and list(metrics["accuracy_by_length"]) == ["8"]
    assert metrics["command"] == "captum-mamba train needle " + " ".join(args)
    assert metrics["command"] in (out / "MODEL_CARD.md").read_text()
    reloaded = load_needle_model(name=str(out))
    assert 0.0 <= needle_top1(reloaded, ["mamba_lrp"], n=4, length=8)["mamba_lrp"]["top1"] <= 1.0
    capsys.readouterr()
    assert main(["train", "needle", "--min-length", "9", "--max-length", "8", "--out", str(out)]) == 2
    assert "error: need 2 <= --min-length <= --max-length" in capsys.readouterr().err


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="no needle model 'haystack'.*needle"):
        load_needle_model(name="haystack")


@pytest.fixture(scope="module")
def multilength():
    if MULTILENGTH not in shipped_needle_models():
        pytest.fail(f"{MULTILENGTH} is not shipped: see its MODEL_CARD.md for the training command")
    return load_needle_model(torch.float64, name=MULTILENGTH)


@pytest.mark.parametrize("length", [64, 256])
def test_multilength_model_has_its_stated_accuracy(multilength, length):
    stated = json.loads((ASSETS.parent / MULTILENGTH / "metrics.json").read_text())["accuracy_by_length"][str(length)]
    batch = needle_batch(200, length, torch.Generator().manual_seed(4321 + length))  # not the card's sample
    with torch.no_grad():
        predicted = multilength(input_ids=batch.input_ids).logits.argmax(-1)
    measured = float((predicted == batch.labels).double().mean())
    assert measured >= stated - 0.05, (measured, stated)


def test_mamba_lrp_finds_the_needle_in_long_sequences(multilength):
    report = needle_top1(multilength, ["mamba_lrp", "input_x_gradient"], n=50, length=192, seed=11)
    assert report["_model"]["accuracy_on_these"] >= 0.9
    assert report["mamba_lrp"]["top1"] >= 0.9
    assert report["mamba_lrp"]["top1"] > report["input_x_gradient"]["top1"]


def test_multilength_model_conserves(multilength):
    ids = needle_batch(4, 128, torch.Generator().manual_seed(2)).input_ids
    embeds = multilength.get_input_embeddings()(ids).detach()
    relevance, delta = MambaLRP(multilength).attribute(embeds, target=1, return_convergence_delta=True)
    with torch.no_grad():
        logits = multilength(inputs_embeds=embeds).logits[:, 1]
    assert float(delta.abs().max()) < 1e-12  # exact against the explained forward pass
    # HF's own forward keeps the residual stream in float32 (config.residual_in_fp32): agreement to ~1e-7
    assert torch.allclose(relevance.sum((1, 2)), logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["input_x_gradient", "saliency", "gradient_attention_rollout"])
def test_baselines_through_the_linear_time_scan_match_the_hf_path(multilength, method):
    ids = needle_batch(3, 24, torch.Generator().manual_seed(8)).input_ids
    fast = method_scores(method, multilength, ids, fast=True)
    reference = method_scores(method, multilength, ids, fast=False)
    assert torch.allclose(fast, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
    assert float(reference.abs().max()) > 0


def test_xra_and_accuracy_grids_are_shares(multilength):
    grid = xra_grid(multilength, "mamba_lrp", lengths=(16, 48), depths=(0.0, 0.5, 1.0), n=6, k=2)
    accuracy = model_accuracy_grid(multilength, lengths=(16, 48), depths=(0.0, 0.5, 1.0), n=6)
    for values in (grid, accuracy):
        assert values.shape == (3, 2) and ((values >= 0) & (values <= 1)).all()
        assert torch.equal(values * 6, (values * 6).round())  # shares of 6 sequences
    k_all = xra_grid(multilength, "random", lengths=(8,), depths=(0.5,), n=6, k=7)
    assert float(k_all) == 1.0  # top-7 of the 7 positions before the read-out always hits


def test_needle_command_writes_the_report_and_the_heatmap(tmp_path, capsys):
    out = tmp_path / "needle"
    assert main(["needle", "report", "--methods", "mamba_lrp", "saliency", "--n", "6", "--out", str(out)]) == 0
    table = (out / "needle_top1.md").read_text()
    assert "| MambaLRP |" in table and "captum-mamba needle report --model needle --methods mamba_lrp saliency" in table
    args = ["needle", "xra", "--model", MULTILENGTH, "--methods", "mamba_lrp", "input_x_gradient"]
    args += ["--lengths", "12", "24", "--depths", "0", "1", "--n", "3", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "needle_xra.json").read_text())
    assert set(result["xra"]) == {"mamba_lrp", "input_x_gradient"} and len(result["model_accuracy"]) == 2
    assert all(0 <= v <= 1 for grid in result["xra"].values() for row in grid for v in row)
    assert (out / "needle_xra.png").stat().st_size > 1000 and "**model accuracy**" in (
        out / "needle_xra.md"
    ).read_text()
