"""Where a result file came from: the commit, whether the tree was clean, versions and device.

Every JSON written under ``benchmarks/results/`` carries a ``"provenance"`` object made here, so
that a number quoted in the docs can be traced to the exact code that produced it:

* ``commit``: ``git rev-parse HEAD`` of the checkout the package was imported from;
* ``dirty``: whether that checkout had uncommitted changes (tracked or untracked files outside
  ``benchmarks/results/``, which holds outputs, not code);
* ``python``, ``torch``, ``transformers``, ``captum`` (and ``mamba_ssm``, ``causal_conv1d`` when
  installed): versions;
* ``device``: what the computation ran on; ``platform``, ``date`` and ``argv``.

A result written into ``benchmarks/results/`` from a dirty tree (or from outside a git checkout)
could not be traced, so :func:`check_destination` refuses it with :class:`UntraceableResultError`,
unless ``CAPTUM_MAMBA_ALLOW_DIRTY=1`` is set: then it warns and the file is marked
``"dirty": true`` (and fails ``tests/test_results_provenance.py``). Other destinations (scratch
folders, test directories) get the same record without the check.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RESULTS_FOLDER: tuple[str, str] = ("benchmarks", "results")
"""Path components of the folder whose files must be traceable."""
ALLOW_DIRTY_ENV = "CAPTUM_MAMBA_ALLOW_DIRTY"
"""Set to ``1`` to write into ``benchmarks/results/`` from a dirty tree anyway (marked ``dirty``)."""
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The ``captum_mamba`` package folder: the code whose commit is recorded."""
VERSIONED: tuple[str, ...] = ("torch", "transformers", "captum")
OPTIONAL_VERSIONED: tuple[str, ...] = ("mamba_ssm", "causal_conv1d")


class UntraceableResultError(RuntimeError):
    """A result would be written into ``benchmarks/results/`` without a clean commit behind it."""


def _git(repo: Path, *args: str) -> str | None:
    """Output of ``git -C repo args``, or ``None`` when git or the checkout is missing."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(repo: Path | None = None) -> tuple[str | None, bool | None, list[str]]:
    """
    The commit of the checkout holding ``repo`` and whether it has uncommitted changes.

    Args:
        repo (Path, optional): any folder inside the checkout. Default: the package's folder.

    Returns:
        *tuple* ``(commit, dirty, changed_paths)``: ``commit`` is the 40-hex ``HEAD``;
        ``dirty`` is ``True`` when tracked or untracked (not ignored) files outside
        ``benchmarks/results/`` differ from it; ``changed_paths`` are ``git status --porcelain``
        lines. ``(None, None, [])`` outside a git checkout.
    """
    folder = Path(repo) if repo is not None else PACKAGE_ROOT
    top = _git(folder, "rev-parse", "--show-toplevel")
    commit = _git(folder, "rev-parse", "--verify", "HEAD")
    if top is None or commit is None:
        return None, None, []
    exclude = ":(exclude)" + "/".join(RESULTS_FOLDER)
    status = _git(Path(top.strip()), "status", "--porcelain", "--untracked-files=normal", "--", ".", exclude)
    if status is None:
        return commit.strip(), None, []
    changed = [line for line in status.splitlines() if line.strip()]
    return commit.strip(), bool(changed), changed


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_device(device: Any = None) -> str:
    """
    A readable name of the device a result was computed on.

    Args:
        device (optional): a ``torch.device``, a device string (``"cuda:0"``, ``"cpu"``), or a
                    description that is returned as given. Default: the CPU.

    Returns:
        *str*, e.g. ``"cpu (x86_64, 2 cores)"`` or ``"NVIDIA H100 80GB HBM3"``.
    """
    text = "cpu" if device is None else str(device)
    if text.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(text))
    if text == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return text


def provenance(device: Any = None, repo: Path | None = None) -> dict[str, Any]:
    """
    The provenance record of a result computed now.

    Args:
        device (optional): what the result was computed on (see :func:`describe_device`).
        repo (Path, optional): a folder of the checkout to describe. Default: the package's.

    Returns:
        *dict* with ``commit``, ``dirty``, ``changed_paths`` (when dirty), ``python``, the
        package versions, ``device``, ``platform``, ``date`` and ``argv``.
    """
    commit, dirty, changed = git_state(repo)
    record: dict[str, Any] = {"commit": commit, "dirty": dirty}
    if dirty:
        record["changed_paths"] = changed[:50]
    record["python"] = platform.python_version()
    record.update({name: _version(name) for name in VERSIONED})
    record.update({name: v for name in OPTIONAL_VERSIONED if (v := _version(name.replace("_", "-"))) is not None})
    record.update(
        device=describe_device(device),
        platform=platform.platform(),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        argv=list(sys.argv),
    )
    return record


def is_results_path(path: Path | str) -> bool:
    """Whether ``path`` lies in a ``benchmarks/results/`` folder (where results must be traceable)."""
    parts = Path(path).resolve().parts
    size = len(RESULTS_FOLDER)
    return any(parts[i : i + size] == RESULTS_FOLDER for i in range(len(parts) - size + 1))


def check_destination(path: Path | str, device: Any = None, repo: Path | None = None) -> dict[str, Any]:
    """
    The provenance record for a result file about to be written to ``path``, refusing an untraceable one.

    Call it before the computation (so a refusal costs nothing) and store the returned record.

    Args:
        path (Path or str): the file to be written.
        device (optional): what the result is computed on (see :func:`describe_device`).
        repo (Path, optional): a folder of the checkout to describe. Default: the package's.

    Returns:
        *dict*: :func:`provenance`'s record.

    Raises:
        UntraceableResultError: ``path`` is under ``benchmarks/results/`` and the checkout is
            dirty or unknown, and ``CAPTUM_MAMBA_ALLOW_DIRTY=1`` is not set.
    """
    record = provenance(device, repo)
    if not is_results_path(path) or (record["commit"] is not None and record["dirty"] is False):
        return record
    if record["commit"] is None:
        problem = "the code is not in a git checkout (no commit to record)"
    else:
        changed = "; ".join(record.get("changed_paths", [])[:10])
        problem = f"the checkout at {record['commit'][:12]} has uncommitted changes ({changed})"
    message = (
        f"refusing to write {path}: results under benchmarks/results/ must come from a committed, clean tree, "
        f"but {problem}. Commit or stash first, or write elsewhere"
    )
    if os.environ.get(ALLOW_DIRTY_ENV) != "1":
        raise UntraceableResultError(message + f" ({ALLOW_DIRTY_ENV}=1 writes it anyway, marked dirty).")
    record["dirty"] = True
    warnings.warn(
        f'{message}. Writing it anyway because {ALLOW_DIRTY_ENV}=1: it is marked "dirty": true and is NOT '
        "a traceable result.",
        stacklevel=2,
    )
    print(f"WARNING: {path} is written from an untraceable tree and marked dirty", file=sys.stderr, flush=True)
    return record


def check_model_destination(
    folder: Path | str, shipped: Iterable[Path | str], repo: Path | None = None
) -> dict[str, Any]:
    """
    The provenance record of a training run writing a model into ``folder``, refusing to write a
    shipped model's folder (one of ``shipped``) from an untraceable tree.

    Call it before training (so a refusal costs nothing) and store the record in the model's
    ``metrics.json``.

    Args:
        folder (Path or str): the output folder of the run.
        shipped (Iterable[Path or str]): the folders of the models shipped with the package.
        repo (Path, optional): a folder of the checkout to describe. Default: the package's.

    Returns:
        *dict*: :func:`provenance`'s record (``"dirty": true`` when overridden).

    Raises:
        UntraceableResultError: ``folder`` is a shipped model's folder (or lies under
            ``benchmarks/results/``) and the checkout is dirty or unknown, and
            ``CAPTUM_MAMBA_ALLOW_DIRTY=1`` is not set.
    """
    folder = Path(folder)
    record = check_destination(folder / "metrics.json", repo=repo)
    if not any(folder.resolve() == Path(path).resolve() for path in shipped):
        return record
    if record["commit"] is not None and record["dirty"] is False:
        return record
    message = (
        f"refusing to train into the shipped folder {folder}: its metrics.json must name a clean commit, "
        f"but the checkout {record['commit'] or '(none)'} has uncommitted changes "
        f"({'; '.join(record.get('changed_paths', [])[:5])}). Commit first, or write elsewhere"
    )
    if os.environ.get(ALLOW_DIRTY_ENV) != "1":
        raise UntraceableResultError(message + f" ({ALLOW_DIRTY_ENV}=1 writes it anyway, marked dirty).")
    warnings.warn(message + f"; writing anyway because {ALLOW_DIRTY_ENV}=1", stacklevel=2)
    record["dirty"] = True
    return record


def with_provenance(document: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with a top-level ``"provenance"`` entry (``record``), for writing as JSON."""
    if "provenance" in document and document["provenance"] != record:
        raise ValueError("the document already has a different 'provenance' entry")
    return {**document, "provenance": dict(record)}
