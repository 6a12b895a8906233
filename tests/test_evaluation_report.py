"""Bias analysis and the evaluation report on tiny constructed cases."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from captum_mamba.evaluation.flipping import FlippingResult
from captum_mamba.evaluation.report import (
    evaluate_faithfulness,
    faithfulness_table,
    markdown_table,
    top_tokens_by_class,
    word_list_share,
)

from conftest import tiny_classifier


def test_word_list_share_counts_the_top_k_slots():
    counts = {0: Counter({"he": 3, "bad": 5, "She": 2}), 1: Counter({"great": 4})}
    shares = word_list_share(counts, ["he", "she"])
    assert shares == {0: pytest.approx(0.5), 1: 0.0}


def test_top_tokens_follow_the_relevance(monkeypatch):
    model = tiny_classifier(seed=121)
    ids = [torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8, 9])]

    def planted(method, model, input_ids, target, attention_mask):
        scores = torch.zeros(input_ids.shape, dtype=torch.float64)
        scores[input_ids == 5] = 2.0  # token 5 is made the most relevant wherever it appears
        scores[input_ids == 9] = 1.0
        return scores

    monkeypatch.setattr("captum_mamba.evaluation.report.token_attributions", planted)
    counts = top_tokens_by_class(model, ids, lambda i: f"t{i}", k=1)
    picked = Counter()
    for counter in counts.values():
        picked.update(counter)
    assert picked == Counter({"t5": 1, "t9": 1})


def _known(delta_af: float) -> FlippingResult:
    """Two examples whose deletion curves give ΔA^F = ``delta_af`` (and ΔA^I = ``delta_af`` / 2)."""
    fractions = [0.0, 0.5, 1.0]
    morf = torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    lerf = torch.tensor([[1.0, 2 * delta_af, 0.0]] * 2, dtype=torch.float64)  # area 0.25 + delta_af, MoRF's 0.25
    return FlippingResult(fractions, morf, lerf, morf_insertion=lerf, lerf_insertion=morf + 0.5 * (lerf - morf))


def test_faithfulness_report_ranks_known_scores():
    scores = {
        "saliency": 0.10,
        "mamba_lrp": 0.40,
        "input_x_gradient": 0.60,  # the best of the ranked methods
        "occlusion": 0.20,
        "random": 0.90,  # a control and an ablation score higher still: neither may be ranked
        "mamba_lrp_no_gate": 0.95,
    }
    results = {method: _known(score) for method, score in scores.items()}
    seconds = dict.fromkeys(scores, 1.0)
    report = faithfulness_table(results, seconds, "cmd", "constructed")
    rows = {row["method"]: row for row in report["rows"]}
    for method, score in scores.items():
        assert rows[method]["delta_af"] == pytest.approx(score) and rows[method]["delta_ai"] == pytest.approx(score / 2)
    assert report["n"] == 2 and report["best_method"] == "input_x_gradient"
    labels = [line.split(" | ")[0].removeprefix("| ") for line in markdown_table(report).splitlines()[4:]]
    assert labels == [
        "Gradient x Input",
        "MambaLRP",
        "Occlusion",
        "Saliency",
        "random",
        "MambaLRP w/o gate rule (ablation)",
    ]  # methods by ΔA^F, then controls, then ablations


def test_faithfulness_report_end_to_end():
    model = tiny_classifier(seed=122)
    ids = [torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 7, 6, 9)]
    methods = ["mamba_lrp", "input_x_gradient", "random", "mamba_lrp_no_gate"]
    results, seconds = evaluate_faithfulness(model, ids, methods, steps=3, batch_size=2)
    assert all(r.morf.shape == (4, 4) for r in results.values())
    report = faithfulness_table(results, seconds, "cmd", "tiny")
    ranked = {m: float(results[m].delta_af.mean()) for m in ("mamba_lrp", "input_x_gradient")}
    assert ranked["mamba_lrp"] != ranked["input_x_gradient"]  # two rankable methods with different scores
    assert report["n"] == 4 and report["best_method"] == max(ranked, key=ranked.get)
    table = markdown_table(report)
    assert "| MambaLRP |" in table and "(ablation)" in table and "cmd" in table
    with pytest.raises(KeyError, match="unknown methods"):
        evaluate_faithfulness(model, ids, ["nope"])
    with pytest.raises(ValueError, match="no inputs"):
        evaluate_faithfulness(model, [], ["mamba_lrp"])
