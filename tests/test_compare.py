"""The comparison view's data, page, web API and CLI (no browser; see test_compare_browser.py)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from captum.attr import IntegratedGradients

from captum_mamba import MambaLRP
from captum_mamba.cli import main
from captum_mamba.compare import (
    ComparisonInputError,
    TextModel,
    check_methods,
    compare_text,
    create_app,
    render_page,
)
from captum_mamba.evaluation.flipping import flipping_curves
from captum_mamba.evaluation.methods import METHODS, ExplainedLogits, MethodSpec

TEXT = "a gorgeous , witty and deeply moving film ."


@pytest.fixture(scope="module")
def text_model() -> TextModel:
    return TextModel.default(max_tokens=64)


@pytest.fixture(scope="module")
def example(text_model):
    return compare_text(text_model, TEXT, ["mamba_lrp", "integrated_gradients", "saliency"], label="positive")


def _rows(example):
    return {row["name"]: row for row in example["methods"]}


def test_rows_equal_the_methods_called_directly(text_model, example):
    model = text_model.model
    ids, tokens = text_model.encode(TEXT)
    assert example["tokens"] == tokens == TEXT.split()
    embeds = model.get_input_embeddings()(ids).detach()
    forward = ExplainedLogits(model)
    with torch.no_grad():
        logits = forward(embeds)[0]
    assert example["prediction"]["name"] == "positive" == example["label"]
    assert example["prediction"]["logit"] == pytest.approx(float(logits.max()), abs=1e-5)
    target = int(logits.argmax())

    relevance, delta = MambaLRP(forward, model=model).attribute(embeds, target=target, return_convergence_delta=True)
    lrp = _rows(example)["mamba_lrp"]
    assert lrp["scores"] == pytest.approx(relevance.sum(-1)[0].tolist(), abs=1e-5)
    assert lrp["delta"] == pytest.approx(float(delta), abs=1e-4)  # relevance absorbed by the model's biases
    assert abs(lrp["delta"]) < 0.05 * abs(example["prediction"]["logit"])

    # Integrated Gradients: Captum's delta is sum - (f(x) - f(0)), the row's is sum - f(x)
    _, ig_delta = IntegratedGradients(forward).attribute(
        embeds, target=target, n_steps=32, internal_batch_size=64, return_convergence_delta=True
    )
    with torch.no_grad():
        baseline_logit = float(forward(torch.zeros_like(embeds))[0, target])
    assert _rows(example)["integrated_gradients"]["delta"] == pytest.approx(float(ig_delta) - baseline_logit, abs=1e-3)
    assert _rows(example)["saliency"]["delta"] is None  # unsigned norms are not additive

    curves = flipping_curves(forward, embeds, relevance.sum(-1), torch.tensor([target]), steps=9)
    assert lrp["delta_af"] == pytest.approx(float(curves.delta_af[0]), abs=1e-5)
    assert lrp["morf"][0] == pytest.approx(example["prediction"]["logit"], abs=1e-5)
    assert len(lrp["fractions"]) == len(lrp["morf"]) == len(lrp["lerf"]) == len(tokens) + 1
    assert all(row["seconds"] > 0 for row in example["methods"])


def test_bad_input_is_named(text_model):
    with pytest.raises(ComparisonInputError, match="empty"):
        compare_text(text_model, "   ")
    with pytest.raises(ComparisonInputError, match="70 tokens, more than this model's limit of 64"):
        compare_text(text_model, "good " * 70)
    with pytest.raises(ComparisonInputError, match="unknown attribution method 'bogus'; known methods: .*mamba_lrp"):
        compare_text(text_model, TEXT, ["mamba_lrp", "bogus"])
    with pytest.raises(ComparisonInputError, match="at least one"):
        check_methods([])


def test_a_failing_method_reports_its_error_in_its_row(text_model, monkeypatch):
    def broken(forward, model):
        raise RuntimeError("this method needs a GPU")

    monkeypatch.setitem(METHODS, "broken", MethodSpec("broken", "Broken", broken))
    example = compare_text(text_model, TEXT, ["broken", "mamba_lrp"])
    rows = _rows(example)
    assert rows["broken"]["error"] == "RuntimeError: this method needs a GPU" and rows["broken"]["scores"] == []
    assert rows["mamba_lrp"]["error"] is None and len(rows["mamba_lrp"]["scores"]) == len(example["tokens"])


def test_page_embeds_the_data_safely(example):
    hostile = dict(example, text="</script><script>alert(1)</script>")
    page = render_page([hostile], ["mamba_lrp"], "model <b>", 64)
    assert page.count("</script>") == 2  # the data block and the code block, nothing injected
    data = re.search(r'<script type="application/json" id="comparison-data">(.*?)</script>', page, re.S).group(1)
    decoded = json.loads(data)
    assert decoded["examples"][0]["text"] == hostile["text"] and decoded["live"] is False
    assert [m["name"] for m in decoded["catalogue"]] == list(METHODS)
    assert "/*__JS__*/" not in page and "__DATA__" not in page and "http" not in page.split("<body>")[0]


def test_web_api_answers_bad_input_and_keeps_serving(text_model, example):
    client = create_app(text_model, [example], ["mamba_lrp"]).test_client()
    page = client.get("/")
    assert page.status_code == 200 and b'"live": true' in page.data
    for body, message in (
        ({"text": ""}, "empty"),
        ({"text": "good " * 70}, "limit of 64"),
        ({"text": TEXT, "methods": ["nope"]}, "unknown attribution method 'nope'"),
        ({"text": TEXT, "methods": "mamba_lrp"}, "list of method names"),
    ):
        answer = client.post("/api/explain", json=body)
        assert answer.status_code == 400 and message in answer.get_json()["error"]
    assert client.post("/api/explain", data="not json").status_code == 400
    answer = client.post("/api/explain", json={"text": "a dull mess .", "methods": ["mamba_lrp", "saliency"]})
    assert answer.status_code == 200
    assert [r["name"] for r in answer.get_json()["methods"]] == ["mamba_lrp", "saliency"]
    assert b"a dull mess ." in client.get("/").data  # kept for the next page load
    assert {m["name"] for m in client.get("/api/methods").get_json()} == set(METHODS)


def test_compare_command_writes_a_report_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["compare", TEXT, "--methods", "mamba_lrp", "input_x_gradient", "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Compare attribution methods" in page and '"mamba_lrp"' in page
    assert main(["compare", "--methods", "bogus", "--html", str(out)]) == 2
    assert "unknown attribution method 'bogus'" in capsys.readouterr().err
    assert main(["compare", "  ", "--html", str(out)]) == 2
    assert "the text is empty" in capsys.readouterr().err
    assert main(["compare", "good " * 20, "--max-tokens", "10", "--html", str(out)]) == 2
    assert "20 tokens, more than this model's limit of 10" in capsys.readouterr().err


def test_linear_time_forward_keeps_the_gradients_and_leaves_other_families_alone(text_model):
    from contextlib import nullcontext

    from transformers import Mamba2Config, Mamba2ForCausalLM

    from captum_mamba.evaluation.linear_time import linear_time_forward

    model = text_model.model
    embeds = model.get_input_embeddings()(text_model.encode(TEXT)[0]).detach()

    def gradient() -> torch.Tensor:
        leaf = embeds.clone().requires_grad_()
        ExplainedLogits(model)(leaf)[0, 1].backward()
        return leaf.grad

    reference = gradient()  # Hugging Face's own path
    with linear_time_forward(model):
        fast = gradient()
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)
    assert not torch.equal(fast, torch.zeros_like(fast))
    mamba2 = Mamba2ForCausalLM(
        Mamba2Config(
            vocab_size=16, hidden_size=16, num_hidden_layers=1, num_heads=4, head_dim=8, state_size=4, n_groups=1
        )
    )
    assert isinstance(linear_time_forward(mamba2), nullcontext)
