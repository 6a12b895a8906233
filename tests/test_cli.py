"""The ``captum-mamba`` command: its subcommands, their help, lazy imports, defaults shared with the code."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from captum_mamba.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "captum", "matplotlib")


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every subcommand path of ``parser``: ("explain",), ("evaluate",), ("evaluate", "bias"), ..."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths.append((*prefix, name))
                paths += _subcommand_paths(child, (*prefix, name))
    return paths


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "captum_mamba.cli", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert list(COMMANDS) == [
        "explain",
        "explain-image",
        "evaluate",
        "needle",
        "explain-dataset",
        "compare",
        "compare-images",
        "train",
        "insights",
    ]
    for name in COMMANDS:
        assert f"    {name} " in result.stdout, name


def test_every_subcommand_module_parses_and_runs():
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_parser) and callable(module.run), name
    assert {path[0] for path in _subcommand_paths(build_parser())} == set(COMMANDS)


@pytest.mark.parametrize("path", _subcommand_paths(build_parser()), ids=" ".join)
def test_every_subcommand_help_exits_0(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: captum-mamba {' '.join(path)}")


def test_nested_subcommands():
    paths = set(_subcommand_paths(build_parser()))
    assert {("train", model) for model in ("default", "needle", "passkey", "copying")} <= paths
    assert {("evaluate", kind) for kind in ("faithfulness", "conservation", "bias")} <= paths
    assert {("needle", "report"), ("needle", "xra")} <= paths


def test_importing_the_command_line_does_not_import_torch():
    result = _python("import captum_mamba.cli, sys; print('torch' in sys.modules)")
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_help_of_every_subcommand_imports_nothing_heavy():
    paths = [(), *_subcommand_paths(build_parser())]
    code = (
        "import sys, contextlib, io\n"
        "from captum_mamba.cli import main\n"
        f"for path in {paths!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([*path, '--help'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = _python(code)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["no-such-command"], ["train"], ["train", "default"], ["evaluate", "faithfulness", "--steps"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert "error: " in capsys.readouterr().err


@pytest.mark.parametrize("count, status", [("2", 0), ("0", 2)])
def test_the_process_entry_point_keeps_the_status_the_output_and_the_exit_handlers(tmp_path, count, status):
    """command() skips only the interpreter's teardown: exit handlers run, piped output is whole, status kept."""
    argv = ["captum-mamba", "explain-dataset", "--random-config", "tiny", "--length", "8", "--count", count]
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('exit handler ran', file=sys.stderr))\n"
        "from captum_mamba.cli import command\n"
        f"sys.argv = {[*argv, '--out', str(tmp_path)]!r}\n"
        "command()\n"
        "print('not reached')\n"
    )
    result = _python(code)
    assert result.returncode == status, result.stderr[-2000:]
    assert result.stderr.rstrip().endswith("exit handler ran") and "not reached" not in result.stdout
    if status == 0:  # the summary, printed to a pipe (block-buffered), arrives whole
        assert json.loads(result.stdout)["examples_this_run"] == 2
    else:
        assert "error: " in result.stderr and "--count" in result.stderr


def _parse(*argv: str) -> dict:
    return vars(build_parser().parse_args(list(argv)))


def _defaults(function_or_signature) -> dict:
    signature = (
        function_or_signature
        if isinstance(function_or_signature, inspect.Signature)
        else inspect.signature(function_or_signature)
    )
    return {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def test_train_defaults_are_the_training_code_defaults():
    from captum_mamba.default.train import TrainingOptions
    from captum_mamba.evaluation.synthetic import copying, passkey
    from captum_mamba.evaluation.synthetic import train as needle_train

    parsed = _parse("train", "default", "--out", "x")
    assert {f.name: parsed[f.name] for f in fields(TrainingOptions)} == {
        f.name: getattr(TrainingOptions(), f.name) for f in fields(TrainingOptions)
    }
    parsed = _parse("train", "needle")
    expected = _defaults(needle_train.train_and_save)
    assert parsed["out"] is None and expected["out"] == needle_train.ASSETS
    for name in ("steps", "min_length", "max_length", "lr", "batch_size", "seed", "init", "card"):
        assert parsed[name] == expected[name], name
    assert parsed["eval_lengths"] == list(expected["eval_lengths"])
    for module, assets in ((passkey, passkey.PASSKEY_ASSETS), (copying, None)):  # copying: by architecture
        task = module.__name__.rsplit(".", 1)[1]
        parsed, expected = _parse("train", task), _defaults(module.train_and_save)
        assert parsed["out"] is None and expected["out"] == assets
        assert [parsed[n] for n in ("steps", "seed", "report_n")] == [
            expected[n] for n in ("steps", "seed", "report_n")
        ]
    assert _parse("train", "copying")["architecture"] == _defaults(copying.train_and_save)["architecture"] == "mamba"
    assert copying.copying_assets("mamba") == copying.COPYING_ASSETS
    assert copying.copying_assets("qwen3_5") == copying.COPYING_QWEN3_5_ASSETS
    assert copying.copying_assets("gated_deltanet") == copying.COPYING_GATED_DELTANET_ASSETS


def test_the_command_line_knows_every_synthetic_architecture():
    """The CLI lists the architectures literally (it imports no torch); they must be the training code's."""
    from captum_mamba.cli.evaluate import COPYING_ARCHITECTURES
    from captum_mamba.evaluation.synthetic.causal_lm import ARCHITECTURES

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    copying = train._subparsers._group_actions[0].choices["copying"]
    choices = next(action.choices for action in copying._actions if action.dest == "architecture")
    assert tuple(choices) == COPYING_ARCHITECTURES == ARCHITECTURES


def test_eval_lengths_are_parsed_and_checked(capsys):
    assert _parse("train", "needle", "--eval-lengths", "8,16,")["eval_lengths"] == [8, 16]
    with pytest.raises(SystemExit) as exit_info:
        _parse("train", "needle", "--eval-lengths", "8,x")
    assert exit_info.value.code == 2 and "--eval-lengths" in capsys.readouterr().err


def test_public_names_stay_importable_lazily():
    code = (
        "import sys, captum_mamba\n"
        "assert 'torch' not in sys.modules\n"
        "from captum_mamba import MambaLRP, __all__\n"
        "assert set(__all__) == set(captum_mamba._SOURCES) and set(__all__) <= set(dir(captum_mamba))\n"
        "assert all(getattr(captum_mamba, name) is not None for name in __all__)\n"
        "assert captum_mamba.MambaLRP is MambaLRP and captum_mamba.families.FAMILIES is captum_mamba.FAMILIES\n"
        "print('ok')\n"
    )
    result = _python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_a_library_submodule_import_checks_transformers_and_the_command_line_does_not():
    code = (
        "import warnings, transformers\n"
        "transformers.__version__ = '6.0.0'\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    import captum_mamba.cli\n"
        "print(len(caught))\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    from captum_mamba.mamba_lrp import MambaLRP\n"
        "print(sum('tested with transformers' in str(w.message) for w in caught))\n"
        "from captum_mamba.registry import DEFAULT_REGISTRY\n"
        "from transformers.models.mamba.modeling_mamba import MambaMixer\n"
        "print(MambaMixer in DEFAULT_REGISTRY)\n"
    )
    result = _python(code)
    assert result.returncode == 0 and result.stdout.split() == ["0", "1", "True"], result.stderr


@pytest.mark.parametrize(
    ("model", "module_name", "options", "expected"),
    [
        (
            "default",
            "captum_mamba.default.train",
            ["--out", "d", "--epochs", "3", "--lr", "0.01", "--max-train", "50"],
            {"out": Path("d")},
        ),
        (
            "needle",
            "captum_mamba.evaluation.synthetic.train",
            [
                "--steps",
                "5",
                "--min-length",
                "6",
                "--max-length",
                "9",
                "--eval-lengths",
                "8,16",
                "--init",
                "i",
                "--card",
            ],
            {"steps": 5, "min_length": 6, "max_length": 9, "eval_lengths": [8, 16], "init": Path("i"), "card": True},
        ),
        (
            "passkey",
            "captum_mamba.evaluation.synthetic.passkey",
            ["--steps", "7", "--seed", "2", "--report-n", "0", "--out", "p"],
            {"out": Path("p"), "steps": 7, "seed": 2, "report_n": 0},
        ),
        (
            "copying",
            "captum_mamba.evaluation.synthetic.copying",
            ["--seed", "4"],
            {"out": None, "steps": 600, "seed": 4, "report_n": 50, "architecture": "mamba"},
        ),
        (
            "copying",
            "captum_mamba.evaluation.synthetic.copying",
            ["--architecture", "qwen3_5", "--steps", "3", "--out", "q"],
            {"out": Path("q"), "steps": 3, "seed": 0, "report_n": 50, "architecture": "qwen3_5"},
        ),
    ],
)
def test_train_passes_the_options_and_the_command_to_the_training_code(
    monkeypatch, model, module_name, options, expected
):
    module = importlib.import_module(module_name)
    signature = inspect.signature(module.train_and_save)
    calls = []
    monkeypatch.setattr(module, "train_and_save", lambda *args, **kwargs: calls.append(signature.bind(*args, **kwargs)))
    assert main(["train", model, *options]) == 0
    passed = calls[0].arguments
    assert passed["command"] == "captum-mamba train " + " ".join([model, *options])
    for name, value in expected.items():
        assert passed[name] == value, name
    if model == "default":
        assert passed["options"] == module.TrainingOptions(epochs=3, lr=0.01, max_train=50)
    elif "out" not in expected:
        assert passed["out"] == _defaults(signature)["out"]
