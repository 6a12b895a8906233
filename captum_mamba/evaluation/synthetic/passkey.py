"""Passkey retrieval: a causal LM outputs the value that followed a marker; does relevance find it?

``captum-mamba train passkey`` (:func:`train_and_save`) trains the shipped model
(``assets/passkey``) and prints the top-1 report; :func:`passkey_top1` scores any method of
:data:`~captum_mamba.evaluation.METHODS` on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from captum_mamba.evaluation.methods import METHODS
from captum_mamba.evaluation.synthetic.causal_lm import (
    load_synthetic_lm,
    train_measure_save,
    train_synthetic_lm,
)
from captum_mamba.evaluation.synthetic.needle import method_scores
from captum_mamba.evaluation.synthetic.tasks import passkey_batch

PASSKEY_ASSETS = Path(__file__).resolve().parent / "assets" / "passkey"


def _answer_logits(model: nn.Module, input_ids: Tensor) -> Tensor:
    return model(input_ids=input_ids, logits_to_keep=1).logits[:, -1]


def train_passkey(
    steps: int = 600,
    batch_size: int = 64,
    min_length: int = 16,
    max_length: int = 64,
    lr: float = 5e-3,
    seed: int = 0,
    log_every: int = 100,
) -> tuple[PreTrainedModel, list[float]]:
    r"""
    Train on passkey batches of random lengths in ``[min_length, max_length]``, loss on the
    answer at the last position only (see :func:`~.causal_lm.train_synthetic_lm`).

    Returns:
        *tuple* ``(model, losses)``.
    """

    def batch_loss(model: PreTrainedModel, length: int, generator: torch.Generator) -> Tensor:
        batch = passkey_batch(batch_size, length, generator)
        return nn.functional.cross_entropy(_answer_logits(model, batch.input_ids), batch.values)

    return train_synthetic_lm(batch_loss, steps, min_length, max_length, lr=lr, seed=seed, log_every=log_every)


@torch.no_grad()
def passkey_accuracy(model: nn.Module, length: int, n: int = 512, seed: int = 1234) -> float:
    """Share of ``n`` fresh sequences of ``length`` tokens whose answer is the value."""
    batch = passkey_batch(n, length, torch.Generator().manual_seed(seed))
    return float((_answer_logits(model, batch.input_ids).argmax(-1) == batch.values).double().mean())


def load_passkey_model(dtype: torch.dtype = torch.float32, folder: str | Path = PASSKEY_ASSETS) -> PreTrainedModel:
    r"""
    The shipped passkey model (``assets/passkey/MODEL_CARD.md``), offline, in eval mode.

    Args:
        dtype (torch.dtype, optional): parameter type; ``torch.float64`` conserves exactly.
                    Default: ``torch.float32``
        folder (str or Path, optional): a folder written by this module's training. Default: the shipped one

    Returns:
        *MambaForCausalLM*.
    """
    return load_synthetic_lm(folder, "passkey", dtype)


def passkey_top1(
    model: nn.Module, methods: Sequence[str] | None = None, n: int = 100, length: int = 64, seed: int = 0
) -> dict[str, dict[str, float]]:
    r"""
    Per method, the share of sequences whose most relevant token (the query excluded) is the
    value, and the share where it is the value or its marker; the explained output is the
    logit of the true value at the query.

    Args:
        model (nn.Module): a passkey model (see :func:`load_passkey_model`).
        methods (Sequence[str], optional): names in ``METHODS``; default: every registered one.
        n (int): sequences. length (int): their length. seed (int): sample seed.

    Returns:
        *dict* ``{method: {"top1_value": ..., "top1_value_or_marker": ...}}`` and ``"_model"``.
    """
    batch = passkey_batch(n, length, torch.Generator().manual_seed(seed))
    report: dict[str, dict[str, float]] = {}
    for method in list(METHODS) if methods is None else methods:
        scores = method_scores(method, model, batch.input_ids, target=batch.values)[:, :-1]
        top = scores.argmax(1)
        report[method] = {
            "top1_value": float((top == batch.value_position).double().mean()),
            "top1_value_or_marker": float(
                ((top == batch.value_position) | (top == batch.value_position - 1)).double().mean()
            ),
        }
    with torch.no_grad():
        correct = (_answer_logits(model, batch.input_ids).argmax(-1) == batch.values).double().mean()
    report["_model"] = {"accuracy_on_these": float(correct), "n": n, "length": length}
    return report


def train_and_save(
    out: str | Path = PASSKEY_ASSETS,
    steps: int = 600,
    seed: int = 0,
    report_n: int = 100,
    command: str | None = None,
) -> dict:
    r"""
    Train, measure and save the passkey model, then print the top-1 report: ``captum-mamba train passkey``.

    Args:
        out (str or Path, optional): output folder. Default: the shipped model's folder, ``assets/passkey``
        steps (int, optional): optimiser steps. Default: 600
        seed (int, optional): seed of the training. Default: 0
        report_n (int, optional): sequences of the top-1 report (0: none). Default: 100
        command (str, optional): the command line recorded in ``metrics.json``.
                    Default: the ``captum-mamba train passkey`` command with every option spelled out

    Returns:
        *dict*: the metrics written to ``OUT/metrics.json`` (with a provenance record naming the commit).

    Raises:
        UntraceableResultError: writing the shipped model's folder from a tree with uncommitted
            changes (checked before training).
    """
    return train_measure_save(
        "passkey",
        out,
        steps,
        seed,
        report_n,
        train=lambda steps, seed: train_passkey(steps=steps, seed=seed),
        measure=lambda model: {
            "accuracy_by_length": {length: passkey_accuracy(model, length) for length in (32, 64, 128, 256)}
        },
        top1=lambda model, n: passkey_top1(model, n=n),
        command=command,
        shipped=[PASSKEY_ASSETS],
    )
