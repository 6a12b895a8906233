"""The error convention of the ``captum-mamba`` command, in one place.

A user mistake (a bad option value, a missing or malformed input file, an unknown model, method
or label, an output folder that cannot be written) raises :class:`UsageError`; :func:`main
<captum_mamba.cli.main>` catches it once and prints ``error: <what is wrong>; <what to do>`` on
stderr with exit status 2, as argparse does for its own usage errors, and no traceback. Any other
exception is a bug and keeps its traceback.

The argparse types below reject bad values while parsing (argparse turns their
``ArgumentTypeError`` into the same ``error: ...`` line and exit status 2). This module imports
only the standard library, so ``captum-mamba --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable
from pathlib import Path


class UsageError(Exception):
    r"""
    A mistake in how the command was called; its message says what is wrong and what to do.

    Args:
        message (str): ``"<what is wrong>; <what to do>"``, printed after ``error: ``.
    """


def positive_int(text: str) -> int:
    r"""
    argparse type: an integer of at least 1.

    Args:
        text (str): the option's value as typed.

    Returns:
        *int*.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (1 or more), got {value}")
    return value


def replacement(text: str) -> str:
    r"""
    argparse type: a token-flipping baseline, ``zero``, ``mean`` or a token id.

    Args:
        text (str): the option's value as typed (case-insensitive).

    Returns:
        *str*: ``"zero"``, ``"mean"`` or the token id's digits.
    """
    value = text.strip().lower()
    if value in ("zero", "mean") or value.isdigit():
        return value
    raise argparse.ArgumentTypeError(f"expected zero, mean or a token id (an integer of 0 or more), got {text!r}")


def unknown_names(kind: str, given: Iterable[str], known: Iterable[str], hint: str = "") -> UsageError | None:
    r"""
    The :class:`UsageError` naming the unknown entries of ``given``, or None when all are known.

    Args:
        kind (str): what the names are, e.g. ``"attribution method"``.
        given (Iterable[str]): the names as typed.
        known (Iterable[str]): the valid names, listed in the message.
        hint (str, optional): extra advice appended to the message. Default: ""

    Returns:
        *UsageError* or *None*.
    """
    known = list(known)
    unknown = [name for name in given if name not in known]
    if not unknown:
        return None
    plural = "s" if len(unknown) > 1 else ""
    return UsageError(
        f"unknown {kind}{plural} {', '.join(repr(name) for name in unknown)}; choose from {', '.join(known)}{hint}"
    )


def output_folder(path: str | Path, option: str = "--out") -> Path:
    r"""
    Create the output folder ``path`` (and its parents) and check that it can be written, before
    any long computation.

    Args:
        path (str or Path): the folder given with ``option``.
        option (str, optional): the option's name, for the message. Default: "--out"

    Returns:
        *Path*: the folder.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create the output folder {option} {folder}: {error.strerror or error}; choose a writable folder"
        ) from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write to the output folder {option} {folder}; choose a writable folder")
    return folder


def check_writable(path: str | Path, option: str = "--out") -> Path:
    r"""
    Check, without creating anything, that the folder ``path`` could be created and written: its
    nearest existing ancestor must be a writable folder.

    Args:
        path (str or Path): the folder given with ``option``.
        option (str, optional): the option's name, for the message. Default: "--out"

    Returns:
        *Path*: the folder.
    """
    folder = Path(path)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"cannot write the output folder {option} {folder} (in {existing}); choose a writable folder")
    return folder


def output_file(path: str | Path, option: str) -> Path:
    r"""
    Check that the file ``path`` can be written (its folder is created), before any long computation.

    Args:
        path (str or Path): the file given with ``option``.
        option (str): the option's name, for the message.

    Returns:
        *Path*: the file.
    """
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{option} {file} is a folder; give a file name")
    output_folder(file.parent, f"{option}'s folder")
    return file


_GPU_ADVICE_LOGGERS = ("transformers.integrations.hub_kernels", "transformers.models.mamba.modeling_mamba")
"""The loggers of transformers that advise installing the CUDA kernels of causal_conv1d / mamba_ssm."""


class _NoGPUAdvice(logging.Filter):
    """Drops transformers' advice to install GPU kernels (meaningless on a machine without a GPU)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        advice = ("causal_conv1d" in message or "mamba_ssm" in message or "mamba-ssm" in message) and (
            "falling back" in message or "fast path" in message
        )
        return not advice


_FILTER = _NoGPUAdvice()


def silence_gpu_advice() -> bool:
    r"""
    Without a CUDA GPU, hide transformers' log lines advising to install ``causal_conv1d`` or
    ``mamba_ssm`` (CUDA-only kernels). Call it where torch is imported anyway: it imports torch.

    Returns:
        *bool*: whether the advice is now hidden.
    """
    import torch

    if torch.cuda.is_available():
        return False
    for name in _GPU_ADVICE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return True
