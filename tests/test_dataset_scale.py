"""Dataset-scale explanations: torchrun with 2 processes (gloo) equals 1 process; resuming; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captum_mamba.cli import main
from captum_mamba.default import SAMPLE_SENTENCES, load_default_classifier

from bias_share import bias_share
from conftest import embeddings_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"text": SAMPLE_SENTENCES[i % 4] + " good" * (i % 3), "label": i % 2}) for i in range(14)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _launch(args: list[str], processes: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    result = subprocess.run(
        [*command, "-m", "captum_mamba.cli", "explain-dataset", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_equal_one(dataset, tmp_path):
    args = ["--input", str(dataset), "--methods", "mamba_lrp", "input_x_gradient", "--batch-size", "4"]
    _launch([*args, "--out", str(tmp_path / "one")], processes=1)
    _launch([*args, "--out", str(tmp_path / "two")], processes=2)
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert [r["id"] for r in one] == [r["id"] for r in two] == list(range(14))
    assert len(list((tmp_path / "two").glob("shard-*.jsonl"))) == 2
    for a, b in zip(one, two):
        assert a["tokens"] == b["tokens"] and a["target"] == b["target"]
        for method in ("mamba_lrp", "input_x_gradient"):
            scale = max(1.0, max(abs(v) for v in a["relevances"][method]))
            assert max(abs(x - y) for x, y in zip(a["relevances"][method], b["relevances"][method])) <= 1e-6 * scale
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo" and summary["examples_this_run"] == 14


def _plain_logits(records: list[dict]) -> list[float]:
    """Each record's explained logit from a plain forward of the shipped model, one text at a time, no attribution."""
    model, tokenizer = load_default_classifier()
    logits = []
    for record in records:
        ids = torch.tensor([tokenizer.encode(record["text"]).ids[:128]])
        with torch.no_grad():
            logits.append(float(model(input_ids=ids).logits[0, record["target"]]))
    return logits


def test_records_conserve_and_a_resumed_run_skips_what_is_done(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["explain-dataset", "--input", str(dataset), "--out", str(out), "--batch-size", "5"]) == 0
    full = _records(out)
    # the records' logits are the model's own (padded batches of 5 against one text at a time, float32) ...
    for record, logit in zip(full, _plain_logits(full)):
        assert record["logit"] == pytest.approx(logit, abs=2e-5)
        # ... and the relevances sum to them up to the delta: the share of the conv and classifier biases
        delta = record["convergence_delta"]["mamba_lrp"]
        assert sum(record["relevances"]["mamba_lrp"]) - delta == pytest.approx(logit, abs=2e-5)
    assert max(abs(r["convergence_delta"]["mamba_lrp"]) for r in full) > 1e-2  # the biases' share is not negligible
    # simulate a run killed after 6 examples (and a line cut short), then resume
    shard = out / "shard-00000.jsonl"
    kept = shard.read_text(encoding="utf-8").splitlines()[:6]
    shard.write_text("\n".join(kept) + '\n{"id": 9, "tok', encoding="utf-8")
    (out / "results.jsonl").unlink()
    assert main(["explain-dataset", "--input", str(dataset), "--out", str(out), "--batch-size", "5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["examples_this_run"] == 8 and summary["examples_total"] == 14
    resumed = _records(out)
    assert [r["id"] for r in resumed] == list(range(14))
    for a, b in zip(full, resumed):
        assert a["relevances"]["mamba_lrp"] == pytest.approx(b["relevances"]["mamba_lrp"], abs=1e-6)


def test_record_deltas_are_the_biases_share(dataset, tmp_path):
    """Every record's delta is minus the biases' share of its logit, computed apart from the explainer."""
    assert main(["explain-dataset", "--input", str(dataset), "--out", str(tmp_path), "--batch-size", "5"]) == 0
    model, tokenizer = load_default_classifier()
    for record in _records(tmp_path):
        ids = torch.tensor([tokenizer.encode(record["text"]).ids[:128]])
        target = record["target"]
        share = bias_share(model, lambda e, t=target: model(inputs_embeds=e).logits[0, t], embeddings_of(model, ids))
        assert record["convergence_delta"]["mamba_lrp"] == pytest.approx(-share, abs=2e-5)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ('{"sentence": "a film"}\n', [], "has no 'text' field"),
        ("", [], "no examples"),
        ('{"text": "   "}\n', [], "empty 'text'"),
        ('{"text": "a film"}\n', ["--methods", "magic"], "unknown attribution method 'magic'"),
        ("not json\n", [], "line 1 of"),
    ],
)
def test_bad_input_is_named(content, extra, message, tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text(content, encoding="utf-8")
    assert main(["explain-dataset", "--input", str(path), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert main(["explain-dataset", "--input", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "no input file" in capsys.readouterr().err


def test_random_config_smoke(tmp_path):
    assert (
        main(["explain-dataset", "--random-config", "tiny", "--length", "12", "--count", "3", "--out", str(tmp_path)])
        == 0
    )
    records = _records(tmp_path)
    assert len(records) == 3 and all(len(r["relevances"]["mamba_lrp"]) == 12 for r in records)
    assert all(abs(r["convergence_delta"]["mamba_lrp"]) < 1e-3 for r in records)
