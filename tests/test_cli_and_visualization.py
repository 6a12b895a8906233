"""The main job (captum-mamba explain) and the renderings it writes."""

from __future__ import annotations

import json

import pytest
import torch

import captum_mamba.default
from captum_mamba.cli import explain_sentences, main
from captum_mamba.default import LABELS, encode, load_default_classifier
from captum_mamba.visualization import TokenExplanation, heatmap_html
from captum_mamba.visualization.colors import relevance_rgb, scale_of

from bias_share import bias_share
from conftest import embeddings_of

DULL = "a dull , lifeless and boring mess ."


def plain_logit(text: str, label: str) -> float:
    """The shipped model's logit of ``label`` for ``text``: a plain float64 forward, no attribution."""
    model, tokenizer = load_default_classifier(dtype=torch.float64)
    input_ids, mask = encode(tokenizer, [text])
    with torch.no_grad():
        return float(model(input_ids=input_ids, attention_mask=mask).logits[0, LABELS.index(label)])


def test_explain_writes_heatmaps_and_conserving_relevances(tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path), "--float64", DULL]) == 0
    printed = capsys.readouterr().out
    assert "prediction: negative" in printed and "lifeless" in printed
    for name in ("heatmap.png", "heatmap.html", "relevances.json"):
        assert (tmp_path / name).stat().st_size > 0
    page = (tmp_path / "heatmap.html").read_text()
    assert "red: toward the explained class" in page and "largest |relevance| of each sentence" in page
    (record,) = json.loads((tmp_path / "relevances.json").read_text())
    assert record["tokens"] == ["a", "dull", ",", "lifeless", "and", "boring", "mess", "."]
    # the logit, computed here without any attribution, is the sum of relevances minus the delta (to
    # float32 precision: Hugging Face's forward narrows float64 to float32 in places, the rules do not)
    logit = plain_logit(DULL, record["explained"])
    assert record["logit"] == pytest.approx(logit, abs=1e-6)
    assert sum(record["relevances"]) - record["convergence_delta"] == pytest.approx(logit, abs=1e-6)
    # the shipped model has conv and classifier biases: their share of the logit is not negligible
    assert abs(record["convergence_delta"]) > 1e-3
    assert max(record["relevances"]) == max(record["relevances"][i] for i in (1, 3, 5, 6))  # a negative word leads


def test_convergence_delta_is_the_biases_share(monkeypatch):
    """The delta is minus the biases' share of the logit (computed apart from the explainer), 0 without biases."""
    (result,) = explain_sentences([DULL], float64=True)
    model, tokenizer = load_default_classifier(dtype=torch.float64)
    input_ids, mask = encode(tokenizer, [DULL])
    label = LABELS.index(result.explained)
    share = bias_share(
        model, lambda e: model(inputs_embeds=e, attention_mask=mask).logits[0, label], embeddings_of(model, input_ids)
    )
    assert abs(share) > 1e-3 and result.convergence_delta == pytest.approx(-share, abs=1e-9)

    def bias_free(dtype: torch.dtype = torch.float32, variant: str = "default"):
        model, tokenizer = load_default_classifier(dtype, variant=variant)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("bias") and "dt_proj" not in name:  # dt's bias sits on the held-constant path
                    parameter.zero_()
        return model, tokenizer

    monkeypatch.setattr(captum_mamba.default, "load_default_classifier", bias_free)
    (unbiased,) = explain_sentences([DULL], float64=True)
    assert abs(unbiased.convergence_delta) < 1e-9 * max(1.0, abs(unbiased.logit))  # no bias, no delta


def test_explain_rejects_empty_text_and_bad_target(tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path), "   "]) == 2
    assert "must contain text" in capsys.readouterr().err
    assert main(["explain", "--out", str(tmp_path), "--target", "7", "fine ."]) == 2
    assert "unknown target '7'; give a label (negative, positive, any case) or an index from 0 to 1" in (
        capsys.readouterr().err
    )


def test_html_colours_follow_the_sign():
    page = heatmap_html([TokenExplanation(["good", "bad", "<b>"], [2.0, -1.0, 0.0], title="t")])
    assert page.count('class="tok"') == 3
    assert "rgb(255,0,0)" in page and "rgb(128,128,255)" in page and "rgb(255,255,255)" in page
    assert "&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1]


def test_colour_scale():
    assert scale_of([0.0, 0.0]) == 1.0 and scale_of([-3.0, 1.0]) == 3.0
    assert relevance_rgb(5.0, 1.0) == (255, 0, 0) and relevance_rgb(-0.5, 1.0) == (128, 128, 255)
