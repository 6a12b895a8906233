"""Dataset-scale explanations: torchrun with 2 processes (gloo) equals 1 process; resuming; bad input."""

from __future__ import annotations

import json
import math
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
    # the start-up the benchmark separates from the loop: set-up, merge, model and examples
    for part in ("setup_seconds", "merge_seconds", "workload_seconds"):
        assert 0 <= summary[part] < 240


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


def test_merge_takes_this_runs_lines_as_written_and_parses_the_older_ones(tmp_path, monkeypatch):
    """shard_records: a cut line and a stale record of a killed run are left out; this run's lines are not parsed again."""
    from captum_mamba.evaluation import dataset as dataset_module
    from captum_mamba.evaluation.dataset import Appended, shard_records

    def line(i: int, digest: str) -> str:
        return json.dumps({"id": i, "input_hash": digest, "relevances": {"mamba_lrp": [0.5, i]}})

    hashes = {0: "a", 1: "b", 2: "c", 3: "d"}
    older = [line(0, "a"), line(1, "old"), '{"id": 2, "input_ha']  # current, stale (input changed), cut short
    shard = tmp_path / "shard-00000.jsonl"
    shard.write_text("\n".join(older) + "\n", encoding="utf-8")
    start = shard.stat().st_size
    newer = [line(2, "c"), line(1, "b"), line(3, "d")]
    with shard.open("a", encoding="utf-8") as file:
        file.write("".join(n + "\n" for n in newer))
    parsed = []
    loads = dataset_module.json.loads
    monkeypatch.setattr(dataset_module.json, "loads", lambda text: parsed.append(text) or loads(text))
    records = dict(shard_records(shard, hashes, Appended(shard.name, start, [2, 1, 3])))
    older_bytes, newer_bytes = [o.encode() for o in older], [n.encode() for n in newer]
    assert records == {0: older_bytes[0], 2: newer_bytes[0], 1: newer_bytes[1], 3: newer_bytes[2]}
    assert parsed == older_bytes  # only the lines written before this run
    # without what this run appended, or when the count does not match the file (a negative control), all is parsed
    parsed.clear()
    assert dict(shard_records(shard, hashes)) == records and parsed == older_bytes + newer_bytes
    parsed.clear()
    assert dict(shard_records(shard, hashes, Appended(shard.name, start, [2, 1]))) == records
    assert parsed == older_bytes + newer_bytes


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


def _plain_prediction(model: torch.nn.Module, ids: list[int]) -> tuple[int, float]:
    """The top class (or next token) at the last token and its logit, from the model's own forward, no attribution."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits.double()
    logits = logits[0, -1] if logits.dim() == 3 else logits[0]
    return int(logits.argmax()), float(logits.max())


def _tiny_bamba_lm(vocab_size: int) -> torch.nn.Module:
    """A bias-free 2-layer Bamba causal LM (Mamba-2, then attention) with random weights."""
    from transformers import BambaConfig, BambaForCausalLM

    config = BambaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2, attn_layer_indices=[1],
        num_attention_heads=4, num_key_value_heads=2, mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1,
        mamba_d_state=8, mamba_chunk_size=16, mamba_conv_bias=False, use_cache=False, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(3)
    return BambaForCausalLM(config).eval()


@pytest.mark.parametrize("kind", ["shipped hybrid", "classifier checkpoint", "causal LM checkpoint"])
def test_hybrid_models_and_checkpoint_directories(kind, dataset, tmp_path):
    """Hybrid models explain their own predictions; CP-LRP relevances sum to the plain forward's logit (bias-free)."""
    model, tokenizer = load_default_classifier(variant="hybrid")
    folder = tmp_path / "checkpoint"
    if kind == "causal LM checkpoint":
        model = _tiny_bamba_lm(tokenizer.get_vocab_size())
    if kind != "shipped hybrid":
        model.save_pretrained(folder)
        tokenizer.save(str(folder / "tokenizer.json"))
    out = tmp_path / "run"
    spec = "hybrid" if kind == "shipped hybrid" else str(folder)
    methods = ["mamba_lrp", "mamba_lrp_cp", "input_x_gradient"]
    assert (
        main(["explain-dataset", "--input", str(dataset), "--model", spec, "--methods", *methods, "--out", str(out)])
        == 0
    )
    records = _records(out)
    assert len(records) == 14
    for record in records:
        ids = tokenizer.encode(record["text"]).ids
        target, logit = _plain_prediction(model, ids)
        assert record["target"] == target and record["logit"] == pytest.approx(logit, abs=1e-5)
        assert sum(record["relevances"]["mamba_lrp_cp"]) == pytest.approx(logit, rel=1e-4, abs=1e-4)
        assert len(record["relevances"]["mamba_lrp"]) == len(ids) == len(record["tokens"])
    summary = json.loads((out / "summary.json").read_text())
    assert ("checkpoint" in summary["model"]) == (kind != "shipped hybrid")


def test_checkpoint_directories_that_cannot_load_are_named(dataset, tmp_path, capsys):
    model, tokenizer = load_default_classifier(variant="hybrid")
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)

    def error() -> str:
        args = ["explain-dataset", "--input", str(dataset), "--model", str(folder), "--out", str(tmp_path / "o")]
        assert main(args) == 2
        return capsys.readouterr().err

    assert "has no tokenizer.json" in error()
    tokenizer.save(str(folder / "tokenizer.json"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchModelForCausalLM"]}))
    assert "'NoSuchModelForCausalLM', which neither a declared model family nor transformers provides" in error()
    (folder / "config.json").unlink()
    assert "not a checkpoint directory (no config.json)" in error()
    # a transformers model that no declared family covers: MambaLRP names its layers, gradient methods still run
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=tokenizer.get_vocab_size(), n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
        )
    )
    gpt2.save_pretrained(folder)
    message = error()
    assert (
        "MambaLRP has no rule for these module types" in message and "Conv1D (at transformer.h.0.attn.c_attn" in message
    )
    assert "--methods input_x_gradient" in message
    args = ["explain-dataset", "--input", str(dataset), "--model", str(folder), "--methods", "input_x_gradient"]
    assert main([*args, "--out", str(tmp_path / "gradients")]) == 0


def test_random_config_names_in_the_cli_are_the_sized_configurations():
    from captum_mamba.cli.explain_dataset import RANDOM_CONFIG_NAMES
    from captum_mamba.evaluation.dataset import RANDOM_CONFIGS

    assert RANDOM_CONFIG_NAMES == tuple(RANDOM_CONFIGS)


def _tiny_names() -> list[str]:
    from captum_mamba.evaluation.dataset import random_config_names

    return [name for name in random_config_names() if name.endswith("-tiny")]


@pytest.mark.parametrize("name", _tiny_names())
def test_random_tiny_configuration_of_every_family(name, tmp_path):
    """``--random-config <family>-tiny``: records conserve up to their delta, equal to a plain forward's logit."""
    from captum_mamba.evaluation.dataset import build_random_lm

    assert (
        main(["explain-dataset", "--random-config", name, "--length", "7", "--count", "2", "--out", str(tmp_path)]) == 0
    )
    model = build_random_lm(name)
    for record in _records(tmp_path):
        ids = torch.randint(0, model.config.vocab_size, (7,), generator=torch.Generator().manual_seed(record["id"]))
        assert record["target"] == int(ids[-1])
        with torch.no_grad():
            logit = float(model(input_ids=ids[None]).logits[0, -1, ids[-1]])
        assert record["logit"] == pytest.approx(logit, rel=1e-4, abs=1e-4)
        assert all(math.isfinite(v) for v in record["relevances"]["mamba_lrp"])


def test_random_model_is_drawn_where_asked_and_the_same_each_time():
    """build_random_lm: seed 0 gives equal weights on every call (every rank); ``device`` is where they are made."""
    from captum_mamba.evaluation.dataset import build_random_lm

    first, second = build_random_lm("tiny"), build_random_lm("tiny")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for p in first.parameters())  # drawn, not left empty
    on_meta = build_random_lm("tiny", "meta")  # no storage: made on the device, not made on the CPU and moved
    assert {t.device.type for t in [*on_meta.parameters(), *on_meta.buffers()]} == {"meta"}
