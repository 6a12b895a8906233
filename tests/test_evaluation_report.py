"""Bias analysis and the evaluation report on tiny constructed cases."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

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


def test_faithfulness_report_ranks_and_formats():
    model = tiny_classifier(seed=122)
    ids = [torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 7, 6, 9)]
    results, seconds = evaluate_faithfulness(
        model, ids, ["mamba_lrp", "random", "mamba_lrp_no_gate"], steps=3, batch_size=2
    )
    assert all(r.morf.shape == (4, 4) for r in results.values())
    report = faithfulness_table(results, seconds, "cmd", "tiny")
    assert report["n"] == 4 and report["best_method"] == "mamba_lrp"  # ablations and controls are not ranked
    table = markdown_table(report)
    assert "| MambaLRP |" in table and "(ablation)" in table and "cmd" in table
    with pytest.raises(KeyError, match="unknown methods"):
        evaluate_faithfulness(model, ids, ["nope"])
    with pytest.raises(ValueError, match="no inputs"):
        evaluate_faithfulness(model, [], ["mamba_lrp"])
