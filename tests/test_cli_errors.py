"""One error convention across the ``captum-mamba`` command (issue 17): a user mistake prints
``error: <what is wrong>; <what to do>`` on stderr and exits 2 without a traceback; a bug keeps its
traceback. Each test drives the real command line."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from captum_mamba.cli import build_parser, main
from captum_mamba.cli.errors import silence_gpu_advice

ROOT = Path(__file__).resolve().parents[1]


def _usage_error(argv: list[str], capsys) -> str:
    """Run the command in this process; assert exit status 2 and no traceback; return stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert "Traceback" not in err, err
    assert "error: " in err, err
    return err


def _cli(*argv: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "captum_mamba.cli", *argv], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


# row 1: tracebacks for bad option values, unknown methods/models, unwritable --out


def test_a_usage_error_in_a_fresh_process_has_no_traceback():
    result = _cli("evaluate", "bias", "--method", "nope")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown attribution method 'nope'; choose from")
    assert "mamba_lrp" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "bias", "--method", "nope"], "unknown attribution method 'nope'; choose from"),
        (["evaluate", "faithfulness", "--methods", "foo"], "unknown attribution method 'foo'; choose from"),
        (["evaluate", "faithfulness", "--replacement", "banana"], "expected zero, mean or a token id"),
        (["evaluate", "conservation", "--out", "/proc/nope"], "output folder --out /proc/nope"),
        (["evaluate", "eraser", "--methods", "foo"], "unknown attribution method 'foo'; choose from"),
        (["evaluate", "eraser", "--out", "/proc/nope"], "output folder --out /proc/nope"),
        (["evaluate", "quantus", "--methods", "foo"], "unknown attribution method 'foo'; choose from"),
        (["evaluate", "quantus", "--limit", "0"], "expected a positive integer"),
        (["needle", "report", "--n", "0"], "argument --n: expected a positive integer"),
        (["needle", "report", "--model", "nope"], "no needle model 'nope'; shipped: needle, needle_multilength"),
        (["needle", "xra", "--methods", "foo"], "unknown attribution method 'foo'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_values_are_usage_errors(argv, message, capsys):
    err = _usage_error(argv, capsys)
    assert message in err
    if "choose from" in message:
        assert "mamba_lrp" in err and "saliency" in err  # the valid choices


def test_a_bug_keeps_its_traceback(monkeypatch):
    import captum_mamba.cli.explain as explain

    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(explain, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["explain", "x"])


# row 2: --limit 0 ran everything; no progress inside a method


def test_limit_0_is_refused(capsys):
    assert "argument --limit: expected a positive integer (1 or more), got 0" in _usage_error(
        ["evaluate", "faithfulness", "--limit", "0"], capsys
    )


def test_faithfulness_reports_progress_per_batch(capsys):
    import torch

    from captum_mamba.default import load_default_classifier
    from captum_mamba.evaluation.report import evaluate_faithfulness

    model, _ = load_default_classifier()
    ids = [torch.tensor([5, 6, 7]), torch.tensor([8, 9]), torch.tensor([10, 11, 12, 13])]
    evaluate_faithfulness(model, ids, ["saliency"], steps=2, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "saliency: batch 1/2 (0/3 inputs done)" in err and "saliency: batch 2/2 (2/3 inputs done)" in err


# row 3: needle report on a model that is not a needle model


def test_needle_report_refuses_a_model_of_another_task(capsys):
    err = _usage_error(["needle", "report", "--model", "passkey", "--n", "2"], capsys)
    assert "'passkey' is not a needle-detection model" in err and "needle_multilength" in err


def test_shipped_needle_models_are_only_needle_classifiers():
    from captum_mamba.evaluation.synthetic.needle import load_needle_model, shipped_needle_models

    assert shipped_needle_models() == ["needle", "needle_multilength"]
    with pytest.raises(ValueError, match="not a needle-detection model"):
        load_needle_model(name="copying")


# row 4: compare --held-out 0


def test_compare_held_out_0_is_refused(capsys):
    assert "argument --held-out: expected a positive integer" in _usage_error(["compare", "--held-out", "0"], capsys)
    assert "not both" in _usage_error(["compare", "a text", "--held-out", "2"], capsys)


# row 5: texts after --methods


def test_compare_says_when_methods_swallowed_the_text(tmp_path, capsys):
    err = _usage_error(["compare", "--methods", "all", "good", "--html", str(tmp_path / "out.html")], capsys)
    assert "unknown attribution method 'good'" in err and "'all'" not in err.split(";")[0]
    assert "put the texts before --methods, or after --" in err
    args = build_parser().parse_args(["compare", "--methods", "all", "--", "good"])
    assert args.methods == ["all"] and args.texts == ["good"]


# row 6: --target labels


def test_explain_target_labels_are_case_insensitive_and_unknown_ones_listed(tmp_path, capsys):
    err = _usage_error(["explain", "great", "--target", "neutral", "--out", str(tmp_path)], capsys)
    assert "unknown target 'neutral'; give a label (negative, positive, any case) or an index from 0 to 1" in err
    result = _cli("explain", "great", "--target", "NEGATIVE", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "relevances.json").read_text())[0]["explained"] == "negative"
    # row 11: no advice to install the CUDA kernels on a machine without a GPU
    import torch

    if not torch.cuda.is_available():
        assert "causal_conv1d" not in result.stderr and "mamba_ssm" not in result.stderr, result.stderr


# row 7: silent truncation


def test_explain_warns_and_records_truncation(tmp_path, capsys):
    text = " ".join(["good"] * 200)
    assert main(["explain", text, "--max-tokens", "16", "--out", str(tmp_path)]) == 0
    assert "has 200 tokens; explaining the first 16 (raise --max-tokens" in capsys.readouterr().err
    (record,) = json.loads((tmp_path / "relevances.json").read_text())
    assert record["truncated"] is True and record["original_tokens"] == 200 and len(record["relevances"]) == 16
    assert "argument --max-tokens" in _usage_error(["explain", "x", "--max-tokens", "0"], capsys)


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_explain_dataset_warns_and_records_truncation(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": " ".join(["good"] * 200)}, {"text": "fine"}])
    out = tmp_path / "out"
    assert main(["explain-dataset", "--input", str(data), "--out", str(out), "--max-tokens", "32"]) == 0
    assert "1 of 2 examples have more than 32 tokens (longest 200)" in capsys.readouterr().err
    long, short = (json.loads(line) for line in (out / "results.jsonl").read_text().splitlines())
    assert long["truncated"] is True and long["original_tokens"] == 200 and len(long["relevances"]["mamba_lrp"]) == 32
    assert short["truncated"] is False and short["original_tokens"] == 1


# rows 8 and 9: malformed JSONL


def test_a_bad_jsonl_line_is_named_by_its_line_number(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "a fine film"}, '{"text": "bad" "x"}'])
    err = _usage_error(["explain-dataset", "--input", str(data), "--out", str(tmp_path / "o")], capsys)
    assert f"line 2 of {data} is not valid JSON (Expecting ',' delimiter at column 16)" in err


def test_a_jsonl_line_without_text_is_named(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "a fine film"}, {"sentence": "x"}])
    err = _usage_error(["explain-dataset", "--input", str(data), "--out", str(tmp_path / "o")], capsys)
    assert "example 1 (line 2 of d.jsonl) has no 'text' field; fields: sentence" in err and "--text-column" in err
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "a fine film", "label": "pos"}])
    err = _usage_error(["explain-dataset", "--input", str(data), "--out", str(tmp_path / "o")], capsys)
    assert "example 0 (line 1 of d.jsonl) has the label 'pos', not an integer" in err


# row 10: resume after an edited input line


def test_resume_redoes_an_example_whose_text_changed(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "a fine film"}, {"text": "great"}, {"text": "dull"}])
    out = tmp_path / "out"
    assert main(["explain-dataset", "--input", str(data), "--out", str(out)]) == 0
    capsys.readouterr()
    _jsonl(data, [{"text": "a fine film"}, {"text": "awful"}, {"text": "dull"}])
    assert main(["explain-dataset", "--input", str(data), "--out", str(out)]) == 0
    assert "1 examples changed since" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == ["a fine film", "awful", "dull"]
    assert json.loads((out / "summary.json").read_text())["examples_this_run"] == 1


# row 11: GPU advice on a CPU machine


def test_gpu_kernel_advice_is_silenced_without_a_gpu(monkeypatch, caplog):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert silence_gpu_advice() is True
    logger = logging.getLogger("transformers.integrations.hub_kernels")
    with caplog.at_level(logging.WARNING):
        logger.warning(
            "`causal_conv1d_fn` is falling back to its reference PyTorch implementation because `causal_conv1d` "
            "is not installed. This is correct but much slower; install `causal_conv1d` for the optimized kernel."
        )
        logger.warning("another warning")
    assert "causal_conv1d" not in caplog.text and "another warning" in caplog.text


# row 12: --version and help on every option


def test_version():
    from captum_mamba import __version__

    result = _cli("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"captum-mamba {__version__}"


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_every_option_of_every_subcommand_has_help():
    missing = [
        f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
        and not (action.help or "").strip()
    ]
    assert missing == []


def test_train_refuses_an_unwritable_out_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "model"  # its folder would be inside a file
    assert f"output folder --out {out}" in _usage_error(["train", "passkey", "--out", str(out)], capsys)
