"""The main job (captum-mamba explain) and the renderings it writes."""

from __future__ import annotations

import json

import pytest

from captum_mamba.cli import main
from captum_mamba.visualization import TokenExplanation, heatmap_html
from captum_mamba.visualization.colors import relevance_rgb, scale_of


def test_explain_writes_heatmaps_and_conserving_relevances(tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path), "--float64", "a dull , lifeless and boring mess ."]) == 0
    printed = capsys.readouterr().out
    assert "prediction: negative" in printed and "lifeless" in printed
    for name in ("heatmap.png", "heatmap.html", "relevances.json"):
        assert (tmp_path / name).stat().st_size > 0
    (record,) = json.loads((tmp_path / "relevances.json").read_text())
    assert record["tokens"] == ["a", "dull", ",", "lifeless", "and", "boring", "mess", "."]
    # sum of relevances = logit + convergence delta (the delta is what the biases absorb)
    assert sum(record["relevances"]) == pytest.approx(record["logit"] + record["convergence_delta"], abs=1e-9)
    assert max(record["relevances"]) == max(record["relevances"][i] for i in (1, 3, 5, 6))  # a negative word leads


def test_explain_rejects_empty_text_and_bad_target(tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path), "   "]) == 2
    assert "must contain text" in capsys.readouterr().err
    assert main(["explain", "--out", str(tmp_path), "--target", "7", "fine ."]) == 2
    assert "target must be one of" in capsys.readouterr().err


def test_html_colours_follow_the_sign():
    page = heatmap_html([TokenExplanation(["good", "bad", "<b>"], [2.0, -1.0, 0.0], title="t")])
    assert page.count('class="tok"') == 3
    assert "rgb(255,0,0)" in page and "rgb(128,128,255)" in page and "rgb(255,255,255)" in page
    assert "&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1]


def test_colour_scale():
    assert scale_of([0.0, 0.0]) == 1.0 and scale_of([-3.0, 1.0]) == 3.0
    assert relevance_rgb(5.0, 1.0) == (255, 0, 0) and relevance_rgb(-0.5, 1.0) == (128, 128, 255)
