"""The ``captum-mamba`` command: one module per subcommand, registered in :data:`COMMANDS`.

Each subcommand module exposes ``add_parser(subparsers)``, which adds its parser, and
``run(args)``, which runs it and returns the exit status. Parsing imports only the standard
library: torch, transformers and captum are imported inside ``run()``, so ``captum-mamba --help``
answers at once. ``python -m captum_mamba.cli`` and ``torchrun -m captum_mamba.cli`` run
:func:`main` too.

Errors follow one convention (:mod:`captum_mamba.cli.errors`): a user mistake raises
:class:`~captum_mamba.cli.errors.UsageError`, which :func:`main` prints as
``error: <what is wrong>; <what to do>`` with exit status 2; an unexpected exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from captum_mamba.cli.errors import UsageError, silence_gpu_advice
from captum_mamba.cli.explain import SentenceExplanation, explain_sentences

COMMANDS: dict[str, str] = {
    "explain": "captum_mamba.cli.explain",
    "explain-image": "captum_mamba.cli.explain_image",
    "evaluate": "captum_mamba.cli.evaluate",
    "needle": "captum_mamba.cli.needle",
    "explain-dataset": "captum_mamba.cli.explain_dataset",
    "compare": "captum_mamba.cli.compare",
    "compare-images": "captum_mamba.cli.compare_images",
    "train": "captum_mamba.cli.train",
    "insights": "captum_mamba.cli.insights",
}
"""Subcommand name -> the module that parses and runs it, in the order ``--help`` lists them."""

__all__ = ["COMMANDS", "SentenceExplanation", "UsageError", "build_parser", "command", "explain_sentences", "main"]


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    r"""
    The parser of ``captum-mamba`` with every subcommand of :data:`COMMANDS`.

    Returns:
        *argparse.ArgumentParser*.
    """
    from captum_mamba import __version__

    parser = argparse.ArgumentParser(prog="captum-mamba", description="MambaLRP explanations for Mamba models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        _command_module(name).add_parser(subparsers)
    return parser


def command() -> NoReturn:
    r"""
    The process entry point of ``captum-mamba`` and ``python -m captum_mamba.cli``: :func:`main`,
    then the exit without the interpreter's teardown.

    Once torch and transformers are imported, the interpreter's teardown (freeing every module and
    object one by one) takes a second or more, after the output is written; a dataset run under
    ``torchrun`` pays it on every rank. The exit handlers still run (logging, temporary folders,
    ``weakref.finalize``) and the standard streams are flushed; only the teardown is skipped. An
    exception leaves the normal way, with its traceback.

    Returns:
        Never: the process ends with :func:`main`'s exit status.
    """
    status = main()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's; elsewhere the normal exit
    if run_exit_handlers is None:
        raise SystemExit(status)
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    r"""
    Entry point of the ``captum-mamba`` command.

    Args:
        argv (Sequence[str], optional): the arguments after the program name. Default: ``sys.argv[1:]``

    Returns:
        *int*: the exit status (0 success, 2 bad input, as argparse's own usage errors).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as typed, recorded by the commands that write how to reproduce their output
    silence_gpu_advice()
    try:
        return _command_module(args.command).run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
