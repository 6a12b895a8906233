"""``captum-mamba train default|needle|passkey|copying|vim-digits|vim-shapes``: train (and save) a shipped model.

The training code lives with each model: :mod:`captum_mamba.default.train`,
:mod:`captum_mamba.evaluation.synthetic.train` (needle), :mod:`~captum_mamba.evaluation.synthetic.passkey`,
:mod:`~captum_mamba.evaluation.synthetic.copying` and :mod:`captum_mamba.images.train` (the tiny
Vision Mamba image classifiers); this module parses their options.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from captum_mamba.cli.errors import UsageError, check_writable, positive_int
from captum_mamba.cli.evaluate import COPYING_ARCHITECTURES

SYNTHETIC_REPORT_N: dict[str, int] = {"passkey": 100, "copying": 50}
"""Default sequences of the top-1 report printed after training each synthetic causal LM."""


def _lengths(text: str) -> list[int]:
    """``"32,64,128"`` -> ``[32, 64, 128]`` (the format of ``--eval-lengths``)."""
    return [int(part) for part in text.split(",") if part]


def _add_default(models: argparse._SubParsersAction) -> None:
    parser = models.add_parser(
        "default",
        help="the embedded sentiment classifier (Rotten Tomatoes; CPU, about 1-2 minutes)",
        description="Train the default Mamba sentiment classifier (or, with --architecture bamba, the hybrid) "
        "on the Rotten Tomatoes sentences.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--architecture",
        choices=("mamba", "bamba"),
        default="mamba",
        help="mamba: 2 Mamba-1 layers (the default model); bamba: the hybrid, Mamba-2 / attention / Mamba-2 "
        "with gated MLPs, bias-free (shipped in captum_mamba/default/hybrid) (default: mamba)",
    )
    parser.add_argument("--epochs", type=int, default=2, help="passes over the training split (default: 2)")
    parser.add_argument("--max-train", type=int, default=None, help="use only the first N training sentences")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 1 is bit-reproducible (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the initialization and the batches")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="held-out share of the data (default: 0.1)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="word-level vocabulary size incl. specials")
    parser.add_argument("--max-length", type=int, default=64, help="tokens kept per sentence (default: 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per training batch (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate (default: 3e-3)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: 0.01)")
    parser.add_argument(
        "--hidden-size", type=positive_int, default=64, help="model width (bamba: a multiple of 16) (default: 64)"
    )
    parser.add_argument(
        "--layers",
        type=positive_int,
        default=None,
        help="layers; for bamba the middle one is the attention layer (default: 2 for mamba, 3 for bamba)",
    )
    parser.add_argument("--state-size", type=int, default=16, help="SSM state size per channel (default: 16)")


def _add_needle(models: argparse._SubParsersAction) -> None:
    parser = models.add_parser(
        "needle",
        help="the needle-detection classifier (synthetic; CPU)",
        description="Train the needle-detection model (does the needle token appear in the sequence?).",
    )
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps (default: 800)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the shipped model's, assets/needle)"
    )
    parser.add_argument("--min-length", type=int, default=32, help="shortest training sequence (default: 32)")
    parser.add_argument("--max-length", type=int, default=64, help="longest training sequence (default: 64)")
    parser.add_argument("--lr", type=float, default=5e-3, help="peak learning rate (default: 5e-3)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per training batch (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialization and the data (default: 0)")
    parser.add_argument(
        "--eval-lengths",
        type=_lengths,
        default=[32, 64, 128, 256],
        help="lengths of the accuracy check (default: 32,64,128,256)",
    )
    parser.add_argument("--init", type=Path, help="continue from this saved model folder instead of from scratch")
    parser.add_argument("--card", action="store_true", help="also write MODEL_CARD.md (model card from the metrics)")


def _add_synthetic_lm(
    models: argparse._SubParsersAction, task: str, summary: str, architectures: tuple[str, ...] = ()
) -> None:
    parser = models.add_parser(
        task,
        help=f"the {task} causal LM (synthetic; CPU)",
        description=f"{summary} Trains the shipped model and prints the top-1 report.",
    )
    if architectures:
        parser.add_argument(
            "--architecture",
            choices=architectures,
            default=architectures[0],
            help="mamba: MambaForCausalLM, 2 Mamba-1 layers (assets/copying); qwen3_5: Qwen3_5ForCausalLM, a Gated "
            "DeltaNet and a gated-attention layer (assets/copying_qwen3_5); gated_deltanet: Qwen3_5ForCausalLM, 2 "
            f"Gated DeltaNet layers, no attention (assets/copying_gated_deltanet) (default: {architectures[0]})",
        )
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps (default: 600)")
    default_out = f"assets/{task}" + (
        f", or assets/{task}_ARCHITECTURE for another architecture" if architectures else ""
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default: the shipped model's, {default_out})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialization and the data (default: 0)")
    parser.add_argument(
        "--report-n",
        type=int,
        default=SYNTHETIC_REPORT_N[task],
        help=f"sequences of the top-1 report (0: none; default: {SYNTHETIC_REPORT_N[task]})",
    )


VIM_TASKS: dict[str, str] = {
    "vim-digits": "the tiny Vision Mamba on scikit-learn's digits (CPU, a few minutes)",
    "vim-shapes": "the tiny Vision Mamba on the red-shape task with known masks (CPU, a few minutes)",
}
"""The image models' subcommands of ``train`` (``vim-<task>``) and their one-line help."""


def _non_negative_int(text: str) -> int:
    """argparse type: an integer of 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a float above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _add_vim(models: argparse._SubParsersAction, name: str) -> None:
    # the defaults shown are the shipped model's; None means "the task's default" (captum_mamba.images.train.TASK_DEFAULTS)
    task = name.removeprefix("vim-")
    parser = models.add_parser(
        name,
        help=VIM_TASKS[name],
        description=f"Train the tiny Vision Mamba classifier of the {task} image task "
        f"(the shipped one: --out captum_mamba/images/assets/{task}).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="passes over the training images")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the data, init and batches")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch CPU threads; 1 is bit-reproducible (default: 1)"
    )
    parser.add_argument("--max-train", type=positive_int, default=None, help="use only the first N training images")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="images per optimiser step")
    parser.add_argument("--lr", type=_positive_float, default=None, help="AdamW peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    parser.add_argument("--embed-dim", type=positive_int, default=None, help="model width")
    parser.add_argument("--depth", type=positive_int, default=None, help="Vim blocks")
    parser.add_argument("--d-state", type=positive_int, default=None, help="SSM state size")
    parser.add_argument("--shift", type=_non_negative_int, default=None, help="random translation in pixels")
    if task == "shapes":
        parser.add_argument("--train-size", type=positive_int, default=None, help="generated training scenes")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``train`` and its models ``default``, ``needle``, ``passkey``, ``copying``,
    ``vim-digits`` and ``vim-shapes``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``train``.
    """
    train = subparsers.add_parser(
        "train", help="train a shipped model: default, needle, passkey, copying, vim-digits or vim-shapes"
    )
    models = train.add_subparsers(dest="model", required=True)
    _add_default(models)
    _add_needle(models)
    _add_synthetic_lm(
        models,
        "passkey",
        "Passkey retrieval: a causal LM outputs the value that followed a marker.",
    )
    _add_synthetic_lm(
        models,
        "copying",
        "The copying task: a causal LM reproduces data tokens after a delimiter.",
        architectures=COPYING_ARCHITECTURES,
    )
    for name in VIM_TASKS:
        _add_vim(models, name)
    return train


def _train_default(args: argparse.Namespace, command: str) -> int:
    from dataclasses import fields

    from captum_mamba.default.train import TrainingOptions, train_and_save
    from captum_mamba.evaluation.provenance import UntraceableResultError

    try:
        options = TrainingOptions(**{field.name: getattr(args, field.name) for field in fields(TrainingOptions)})
    except ValueError as error:  # an invalid setting, checked before training
        raise UsageError(f"{error}; see captum-mamba train default --help") from None
    try:
        train_and_save(args.out, options, command=command)
    except UntraceableResultError as refusal:  # raised before training
        raise UsageError(str(refusal)) from None
    return 0


def _train_needle(args: argparse.Namespace, command: str) -> int:
    from captum_mamba.evaluation.synthetic.train import ASSETS, train_and_save

    try:
        train_and_save(
            ASSETS if args.out is None else args.out,
            steps=args.steps,
            min_length=args.min_length,
            max_length=args.max_length,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            eval_lengths=args.eval_lengths,
            init=args.init,
            card=args.card,
            command=command,
        )
    except ValueError as error:  # the training lengths (checked before training)
        raise UsageError(str(error)) from None
    return 0


def _train_passkey(args: argparse.Namespace, command: str) -> int:
    from captum_mamba.evaluation.provenance import UntraceableResultError
    from captum_mamba.evaluation.synthetic.passkey import PASSKEY_ASSETS, train_and_save

    out = PASSKEY_ASSETS if args.out is None else args.out
    try:
        train_and_save(out, steps=args.steps, seed=args.seed, report_n=args.report_n, command=command)
    except UntraceableResultError as refusal:  # raised before training
        raise UsageError(str(refusal)) from None
    return 0


def _train_copying(args: argparse.Namespace, command: str) -> int:
    from captum_mamba.evaluation.provenance import UntraceableResultError
    from captum_mamba.evaluation.synthetic.copying import train_and_save

    try:
        train_and_save(
            args.out,
            steps=args.steps,
            seed=args.seed,
            report_n=args.report_n,
            command=command,
            architecture=args.architecture,
        )
    except UntraceableResultError as refusal:  # raised before training
        raise UsageError(str(refusal)) from None
    return 0


def _train_vim(args: argparse.Namespace, command: str) -> int:
    from captum_mamba.images.train import train_vim

    names = ("batch_size", "lr", "weight_decay", "embed_dim", "depth", "d_state", "shift", "train_size")
    hyperparameters = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    try:
        train_vim(
            args.model.removeprefix("vim-"),
            args.out,
            seed=args.seed,
            epochs=args.epochs,
            threads=args.threads,
            max_train=args.max_train,
            command=command,
            **hyperparameters,
        )
    except ValueError as error:  # an invalid setting, checked before training
        raise UsageError(f"{error}; see captum-mamba train {args.model} --help") from None
    return 0


_TRAINERS = {
    "default": _train_default,
    "needle": _train_needle,
    "passkey": _train_passkey,
    "copying": _train_copying,
    "vim-digits": _train_vim,
    "vim-shapes": _train_vim,
}


def run(args: argparse.Namespace) -> int:
    r"""
    Train the chosen model and save it, its ``metrics.json`` (with the command line) and, where
    asked, its model card under ``--out``.

    Args:
        args (argparse.Namespace): the parsed options of ``train``.

    Returns:
        *int*: 0; invalid training lengths of ``needle``, invalid settings of ``vim-<task>`` or an
        unwritable ``--out`` raise :class:`~captum_mamba.cli.errors.UsageError`.
    """
    if args.out is not None:
        check_writable(args.out)
    return _TRAINERS[args.model](args, "captum-mamba " + shlex.join(args.argv))
