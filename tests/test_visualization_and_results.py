"""Visualizers (Captum's visualize_text, matplotlib, terminal, HTML) and the JSON result object."""

from __future__ import annotations

import re

import pytest
import torch
from captum.attr import IntegratedGradients

from captum_mamba import MambaLRP
from captum_mamba.results import ExplanationResult
from captum_mamba.visualization import (
    TokenExplanation,
    compare_methods_figure,
    heatmap_figure,
    heatmap_html,
    render_terminal,
    visualization_record,
    visualize_text,
)
from captum_mamba.visualization.heatmap import COLORBAR_LABEL, wrap_title

from bias_share import bias_share
from conftest import embeddings_of, tiny_classifier

TOKENS = ["a", "gorgeous", ",", "witty", "film", "."]


@pytest.fixture
def explained():
    # conv and classifier biases: the convergence delta (their share of the logit) is far from zero
    model = tiny_classifier(seed=91, classifier_bias=True, use_conv_bias=True)
    ids = torch.arange(3, 3 + len(TOKENS))[None]
    embeds = embeddings_of(model, ids)
    relevance, delta = MambaLRP(model).attribute(embeds, target=1, return_convergence_delta=True)
    probability = float(model(input_ids=ids).logits.softmax(-1)[0, 1])
    return model, embeds, relevance[0], float(delta[0]), probability


def test_captum_visualize_text_renders_every_token(explained):
    _, _, relevance, delta, probability = explained
    record = visualization_record(
        TOKENS, relevance, probability, "positive", true_label="positive", convergence_delta=delta
    )
    assert record.attr_score == pytest.approx(float(relevance.sum()))
    assert record.convergence_score == delta and record.word_attributions.shape == (len(TOKENS),)
    page = visualize_text([record]).data
    for token in ("gorgeous", "witty", "film"):
        assert token in page
    assert page.count("<mark") >= len(TOKENS)
    with pytest.raises(ValueError, match="one relevance per token"):
        visualization_record(TOKENS[:-1], relevance, probability, "positive")


def test_side_by_side_heatmap_and_wrapping(explained, tmp_path):
    model, embeds, relevance, _, _ = explained
    ig = IntegratedGradients(lambda e: model(inputs_embeds=e).logits).attribute(embeds, target=1, n_steps=8)[0]
    figure = compare_methods_figure(
        TOKENS * 20, {"MambaLRP": relevance.sum(-1).tolist() * 20, "IG": ig.sum(-1).tolist() * 20}, title="sample"
    )
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts.count("gorgeous") == 40 and any("MambaLRP" in t for t in texts) and any("IG" in t for t in texts)
    rows = {round(t.get_position()[1], 3) for t in figure.axes[0].texts if t.get_text() == "gorgeous"}
    assert len(rows) > 2  # 120 tokens per method do not fit one line: wrapped
    for suffix in ("png", "svg"):
        figure.savefig(tmp_path / f"compare.{suffix}")
        assert (tmp_path / f"compare.{suffix}").stat().st_size > 1000
    with pytest.raises(ValueError, match="relevances for"):
        compare_methods_figure(TOKENS, {"MambaLRP": [1.0]})


def test_heatmap_has_a_colour_legend_that_states_the_scale(tmp_path):
    rows = [TokenExplanation(["good", "bad"], [2.0, -1.0], title="one"), TokenExplanation(["ok"], [0.5], title="two")]
    figure = heatmap_figure(rows)
    tokens_axis, bar_axis = figure.axes
    assert bar_axis.get_xlabel() == COLORBAR_LABEL
    assert "red: toward the explained class" in COLORBAR_LABEL and "blue: against it" in COLORBAR_LABEL
    assert [t.get_text() for t in bar_axis.get_xticklabels()] == ["−max |R|", "0", "+max |R|"]
    notes = " ".join(t.get_text() for t in figure.texts)
    assert "scaled to the largest |relevance| of each sentence" in notes
    texts = [t.get_text() for t in tokens_axis.texts]
    assert "full colour = ±2" in texts and "full colour = ±0.5" in texts  # each sentence's own scale
    shared = heatmap_figure(rows, shared_scale=True)
    assert [t.get_text() for t in shared.axes[1].get_xticklabels()] == ["-2", "0", "+2"]
    assert "one scale for all sentences" in " ".join(t.get_text() for t in shared.texts)
    assert not any("full colour" in t.get_text() for t in shared.axes[0].texts)
    assert len(heatmap_figure(rows, legend=False).axes) == 1
    assert figure._repr_png_().startswith(b"\x89PNG")  # shown in notebooks without pyplot


def test_long_titles_wrap_at_spaces_and_keep_phrases():
    sentence = "the acting is wonderful , but the plot is a tedious mess ."
    title = f"{sentence}  ->  negative (explaining negative, p = 0.75)"
    assert wrap_title(title, 70) == [sentence, "-> negative (explaining negative, p = 0.75)"]
    long = " ".join(f"word{i}" for i in range(40))
    lines = wrap_title(long, 50, max_lines=10)
    assert len(lines) > 1 and all(len(line) <= 50 for line in lines)
    assert " ".join(lines).split() == long.split()  # broken at spaces only: every word intact
    clipped = wrap_title(long, 50, max_lines=2)
    assert len(clipped) == 2 and clipped[-1].endswith("…") and len(clipped[-1]) <= 50
    assert wrap_title("short  |  MambaLRP", 70) == ["short  | MambaLRP"]
    assert wrap_title("a sentence\nMambaLRP", 70) == ["a sentence", "MambaLRP"]  # newlines kept
    figure = heatmap_figure([TokenExplanation(["a"], [1.0], title=title)], width=50)
    drawn = [t.get_text() for t in figure.axes[0].texts if t.get_fontweight() == "bold"]
    assert drawn and all(len(line) <= 50 for line in drawn) and " ".join(drawn).split() == title.split()


def test_html_heatmap_legend_and_phrases():
    rows = [TokenExplanation(["good", "bad"], [2.0, -1.0], title="a film  ->  positive (p = 0.9)", subtitle="s")]
    page = heatmap_html(rows)
    assert "red: toward the explained class, blue: against it" in page
    assert "scaled to the largest |relevance| of each sentence" in page and "s; full colour = ±2" in page
    assert '<span class="phrase">-&gt; positive (p = 0.9)</span>' in page and 'class="bar"' in page
    assert "<br>" in heatmap_html([TokenExplanation(["a"], [1.0], title="a text\nMambaLRP")])
    shared = heatmap_html(rows + [TokenExplanation(["x"], [4.0])], shared_scale=True)
    assert "one scale for all sentences" in shared and "+4" in shared and "full colour = ±" not in shared


def test_terminal_rendering_colours_by_sign():
    explanation = TokenExplanation(["good", "bad", "so-so"], [2.0, -1.0, 0.0], title="t")
    coloured = render_terminal(explanation)
    assert "\x1b[48;2;255;0;0m" in coloured  # the largest positive: full red
    assert "\x1b[48;2;127;127;255m" in coloured or "\x1b[48;2;128;128;255m" in coloured  # half-strength blue
    assert "\x1b[48;2;255;255;255m" in coloured  # zero: white
    plain = render_terminal(explanation, color=False, width=12)
    assert (
        "\x1b" not in plain
        and "good[+2.00]" in plain
        and plain.splitlines() == ["t", "good[+2.00]", "bad[-1.00]", "so-so[+0.00]"]
    )


def test_html_export_without_jupyter():
    page = heatmap_html([TokenExplanation(["<b>", "x"], [1.0, -1.0], title="escape & show")], "h")
    assert page.startswith("<!DOCTYPE html>") and "&lt;b&gt;" in page and "<script" not in page
    assert len(re.findall(r'class="tok"', page)) == 2


def test_result_json_round_trip(explained, tmp_path):
    model, embeds, relevance, delta, _ = explained
    with torch.no_grad():  # the explained logit from a plain forward, without any attribution
        logit = float(model(inputs_embeds=embeds).logits[0, 1])
    assert abs(delta) > 1e-2  # the biases' share
    result = ExplanationResult(
        tokens=TOKENS,
        relevances={"MambaLRP": relevance},
        target="positive",
        prediction="positive",
        explained_output=logit,
        convergence_delta={"MambaLRP": delta},
        model_name="tiny",
        rules="MambaMixer: MixerRule()",
        metadata={"seed": 91},
    )
    result.add_method("IG", [0.5] * len(TOKENS))
    loaded = ExplanationResult.load(result.save(tmp_path / "r.json"))
    assert loaded == result
    # float32 precision: Hugging Face's forward narrows float64 to float32 in places, the rules do not
    assert sum(loaded.relevances["MambaLRP"]) - loaded.convergence_delta["MambaLRP"] == pytest.approx(
        loaded.explained_output, abs=1e-6
    )


def test_delta_is_the_biases_share(explained):
    """The delta is minus the biases' share of the logit, computed apart from the explainer."""
    model, embeds, _, delta, _ = explained
    share = bias_share(model, lambda e: model(inputs_embeds=e).logits[0, 1], embeds)
    assert abs(share) > 1e-2 and delta == pytest.approx(-share, abs=1e-10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a JSON"),
        ("[1, 2]", "JSON object"),
        ('{"tokens": ["a"], "target": 1}', "lacks relevances"),
        ('{"tokens": ["a"], "relevances": {"m": [1, 2]}, "target": 1}', "2 relevances for 1 tokens"),
        ('{"tokens": ["a"], "relevances": {}, "target": 1, "colour": 3}', "unknown fields"),
        ('{"format_version": 9, "tokens": [], "relevances": {}, "target": 1}', "version 9"),
    ],
)
def test_bad_result_documents(text, message):
    with pytest.raises(ValueError, match=message):
        ExplanationResult.from_json(text)
