"""The shipped Qwen3.5 copying LMs, each test once per model: the hybrid ``copying_qwen3_5`` (a Gated
DeltaNet and a gated-attention layer) and ``copying_gated_deltanet`` (two Gated DeltaNets, no
attention). Each loads offline, copies as its metrics.json says, MambaLRP (with CP-LRP for the
attention) conserves (float32; float64 exactly, with transformers' float32 casts removed as the
family suite removes them: faithful_float64.py), and the copying evaluation (top-1 = source, ΔA^F)
and its commands run on it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.models.qwen3_5 import modeling_qwen3_5

from captum_mamba import MambaLRP
from captum_mamba.cli import main
from captum_mamba.evaluation.methods import MethodNotApplicableError, token_attributions
from captum_mamba.evaluation.synthetic import causal_lm
from captum_mamba.evaluation.synthetic.copying import (
    COPY_LENGTH,
    copying_accuracy,
    copying_assets,
    copying_evaluation,
    copying_top1,
    load_copying_model,
    train_and_save,
)
from captum_mamba.evaluation.synthetic.tasks import copying_batch
from captum_mamba.rules.attention import AttentionRule

from faithful_float64 import gated_delta_hybrid

CP = {modeling_qwen3_5.Qwen3_5Attention: AttentionRule("cp")}  # changes nothing in a model without attention
LAYERS = {
    "qwen3_5": ["linear_attention", "full_attention"],
    "gated_deltanet": ["linear_attention", "linear_attention"],
}
"""The Qwen3.5 copying LMs (their architectures) and their layers."""


def _metrics(architecture: str) -> dict:
    return json.loads((copying_assets(architecture) / "metrics.json").read_text(encoding="utf-8"))


def _has_attention(architecture: str) -> bool:
    return "full_attention" in LAYERS[architecture]


@pytest.fixture(scope="module", params=list(LAYERS))
def architecture(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model32(architecture):
    return load_copying_model(architecture=architecture)


@pytest.fixture(scope="module")
def model64(architecture):
    return load_copying_model(torch.float64, architecture=architecture)


@pytest.fixture
def without_float32_casts(monkeypatch):
    """transformers' float32 casts in Qwen3.5 removed, the way the family suite removes them (faithful_float64.py)."""
    gated_delta_hybrid(modeling_qwen3_5, "Qwen3_5", monkeypatch)


def _logits(model, embeds, position, target):
    with torch.no_grad():
        return model(inputs_embeds=embeds).logits[torch.arange(len(embeds)), position, target]


def test_the_shipped_model_loads_offline_and_is_small(model32, architecture):
    metrics, folder = _metrics(architecture), copying_assets(architecture)
    assert isinstance(model32, modeling_qwen3_5.Qwen3_5ForCausalLM) and not model32.training
    assert model32.config.layer_types == LAYERS[architecture]
    assert not model32.config.tie_word_embeddings and model32.config.vocab_size == 16
    kinds = {type(module) for module in model32.modules()}
    assert modeling_qwen3_5.Qwen3_5GatedDeltaNet in kinds
    assert (modeling_qwen3_5.Qwen3_5Attention in kinds) == _has_attention(architecture)
    layers = [module for module in model32.modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d))]
    assert layers and all(layer.bias is None for layer in layers)  # bias-free: exact conservation
    assert (folder / "model.safetensors").stat().st_size < 500_000
    assert metrics["parameters"] == sum(p.numel() for p in model32.parameters())
    assert metrics["architecture"] == architecture and f"--architecture {architecture}" in metrics["command"]
    assert metrics["provenance"]["dirty"] is False and len(metrics["provenance"]["commit"]) == 40
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert metrics["command"] in card and metrics["provenance"]["commit"] in card


@pytest.mark.parametrize("length", [16, 64])
def test_the_shipped_model_has_its_recorded_accuracy(model32, architecture, length):
    recorded = _metrics(architecture)["accuracy_by_length"][str(length)]
    assert copying_accuracy(model32, length) == recorded  # the same 256 sequences (seed 1234)
    assert recorded["token"] >= 0.99
    fresh = copying_accuracy(model32, length, n=128, seed=98765)  # sequences the metrics never saw
    assert fresh["token"] >= recorded["token"] - 0.02 and fresh["sequence"] >= 0.95


def test_mamba_lrp_with_cp_lrp_conserves_in_float32(model32):
    batch = copying_batch(4, 40, torch.Generator().manual_seed(21), COPY_LENGTH)
    position = 40 - COPY_LENGTH + 2
    token = batch.labels[:, position]
    embeds = model32.get_input_embeddings()(batch.input_ids[:, : position + 1]).detach()
    relevance = MambaLRP(model32, rules=CP).attribute(embeds, target=token)
    logit = _logits(model32, embeds, -1, token)
    assert logit.abs().min() > 1.0  # a confident copy: the tolerance is a relative one too
    torch.testing.assert_close(relevance.sum((1, 2)), logit, atol=1e-4, rtol=0)


def test_mamba_lrp_with_cp_lrp_conserves_exactly_in_float64(model64, architecture, without_float32_casts):
    batch = copying_batch(3, 33, torch.Generator().manual_seed(22), COPY_LENGTH)
    token = batch.labels[:, -1]  # the last output, d3
    embeds = model64.get_input_embeddings()(batch.input_ids).detach()
    relevance, delta = MambaLRP(model64, rules=CP).attribute(embeds, target=token, return_convergence_delta=True)
    logit = _logits(model64, embeds, -1, token)  # the model's own forward, casts removed
    torch.testing.assert_close(relevance.sum((1, 2)), logit, atol=1e-8, rtol=0)
    assert delta.abs().max() < 1e-8
    by_method = token_attributions("mamba_lrp_cp", model64, batch.input_ids, token)
    torch.testing.assert_close(by_method.sum(1), logit, atol=1e-8, rtol=0)
    plain = token_attributions("mamba_lrp", model64, batch.input_ids, token)
    if _has_attention(architecture):  # AttnLRP for the attention layer: not conservative
        assert (plain.sum(1) - logit).abs().max() > 1e-6
    else:  # no attention: MambaLRP is the same explanation, conservative
        torch.testing.assert_close(plain, by_method, atol=0, rtol=0)


def test_copying_top1_reports_every_applicable_method(model64):
    report = copying_top1(model64, n=4, length=24, seed=3)
    skipped = report["_model"]["not_applicable"]
    assert set(skipped) == {"attention_rollout", "gradient_attention_rollout"}  # Mamba-1 hidden attention only
    methods = {name for name in report if not name.startswith("_")}
    assert {"mamba_lrp", "mamba_lrp_cp", "input_x_gradient", "integrated_gradients", "smoothgrad", "random"} <= methods
    for name in methods:
        row = report[name]
        assert len(row["top1_source_by_output"]) == COPY_LENGTH
        assert all(0.0 <= value <= 1.0 for value in [row["top1_source"], *row["top1_source_by_output"]])
        assert all(value * 4 == round(value * 4) for value in row["top1_source_by_output"])  # shares of 4
    assert report["_model"]["accuracy_on_these"] == 1.0
    assert min(report["mamba_lrp_cp"]["top1_source_by_output"]) == 1.0  # the known source, every output
    with pytest.raises(MethodNotApplicableError, match="attention_rollout"):
        copying_top1(model64, ["mamba_lrp", "attention_rollout"], n=2, length=12)


def test_copying_evaluation_flips_the_tokens_before_the_explained_output(model64):
    report = copying_evaluation(model64, ["mamba_lrp_cp", "random"], n=6, length=20, steps=4)
    rows = {name: report[name] for name in ("mamba_lrp_cp", "random")}
    for row in rows.values():
        assert row["n"] == 6 * COPY_LENGTH and len(row["delta_af_by_output"]) == COPY_LENGTH
        assert row["delta_af"] == pytest.approx(row["area_lerf"] - row["area_morf"])
    # deleting the known source first destroys the copied token's logit, deleting it last keeps it
    assert rows["mamba_lrp_cp"]["area_morf"] < rows["mamba_lrp_cp"]["area_lerf"]
    assert rows["mamba_lrp_cp"]["delta_af"] > rows["random"]["delta_af"] + 1.0
    again = copying_top1(model64, ["mamba_lrp_cp"], n=6, length=20)
    assert again["mamba_lrp_cp"]["top1_source_by_output"] == rows["mamba_lrp_cp"]["top1_source_by_output"]


def test_training_writes_a_loadable_model_its_metrics_and_card(tmp_path, capsys, architecture):
    out = tmp_path / architecture
    args = ["train", "copying", "--architecture", architecture, "--steps", "2", "--report-n", "2", "--out", str(out)]
    assert main(args) == 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "metrics.json", "MODEL_CARD.md"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == "captum-mamba " + " ".join(args) and metrics["architecture"] == architecture
    assert metrics["steps"] == 2 and set(metrics["accuracy_by_length"]) == {"16", "32", "64", "128", "256", "512"}
    assert "attention_rollout" in metrics["top1"]["_model"]["not_applicable"]
    card = (out / "MODEL_CARD.md").read_text()
    assert metrics["provenance"]["commit"] in card
    assert ("The attention:" in card) == _has_attention(architecture)
    assert ("initialised log-uniformly" in card) == (architecture in causal_lm.DECAY_STEP_INIT)
    reloaded = load_copying_model(folder=out)
    assert isinstance(reloaded, modeling_qwen3_5.Qwen3_5ForCausalLM)
    assert reloaded.config.layer_types == LAYERS[architecture]
    assert copying_accuracy(reloaded, 16) == metrics["accuracy_by_length"]["16"]
    capsys.readouterr()


def test_only_the_gated_deltanet_model_starts_with_long_memories():
    torch.manual_seed(0)
    steps = [
        torch.nn.functional.softplus(module.dt_bias)
        for module in causal_lm.build_synthetic_lm("gated_deltanet").modules()
        if isinstance(module, modeling_qwen3_5.Qwen3_5GatedDeltaNet)
    ]
    low, high = causal_lm.DECAY_STEP_INIT["gated_deltanet"]
    assert len(steps) == 2 and all(((low <= step) & (step <= high)).all() for step in steps)
    hybrid = causal_lm.build_synthetic_lm("qwen3_5")  # transformers' own initialisation
    assert all((module.dt_bias.detach() == 1.0).all() for module in hybrid.modules() if hasattr(module, "dt_bias"))
    with pytest.raises(ValueError, match="no Gated DeltaNet"):
        causal_lm.init_decay_steps(causal_lm.build_synthetic_lm("mamba"), low, high)
    with pytest.raises(ValueError, match="0 < low <= high"):
        causal_lm.init_decay_steps(hybrid, high, low)


def test_training_into_the_shipped_folders_checks_the_tree(monkeypatch, architecture):
    seen = {}

    def refuse(folder, shipped, repo=None):
        seen.update(folder=folder, shipped=list(shipped))
        raise RuntimeError("checked before training")

    monkeypatch.setattr(causal_lm, "check_model_destination", refuse)
    with pytest.raises(RuntimeError, match="checked before training"):
        train_and_save(architecture=architecture)
    folder = copying_assets(architecture)
    assert seen["folder"] == folder and folder in seen["shipped"]


def test_evaluate_copying_command_writes_the_tables(tmp_path, capsys, architecture):
    out = tmp_path / "evaluation"
    args = ["evaluate", "copying", "--architecture", architecture, "--methods", "mamba_lrp_cp", "random"]
    args += ["--n", "3", "--length", "16", "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    document = json.loads((out / f"copying_{architecture}.json").read_text())
    assert document["command"] == "captum-mamba " + " ".join(args) and document["architecture"] == "Qwen3_5ForCausalLM"
    assert [row["method"] for row in document["rows"]] == ["mamba_lrp_cp", "random"]
    assert "commit" in document["provenance"]
    table = (out / f"copying_{architecture}.md").read_text()
    assert "| MambaLRP + CP-LRP | 1.00 |" in table and "ΔA^F" in table
    capsys.readouterr()
    assert main([*args[:4], "--methods", "attention_rollout", "--out", str(out)]) == 2
    assert "attention_rollout" in capsys.readouterr().err
