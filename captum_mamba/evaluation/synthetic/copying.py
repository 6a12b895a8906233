"""The copying task: a causal LM reproduces data tokens after a delimiter; does relevance find each source?

``captum-mamba train copying`` (:func:`train_and_save`) trains the shipped model
(``assets/copying``) and prints the top-1 report; :func:`copying_top1` scores any method of
:data:`~captum_mamba.evaluation.METHODS` on it: for the ``k``-th output the relevant token is
the ``k``-th data token, a known truth that moves with the explained position.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import MambaForCausalLM

from captum_mamba.evaluation.methods import METHODS
from captum_mamba.evaluation.synthetic.causal_lm import (
    load_synthetic_lm,
    train_measure_save,
    train_synthetic_lm,
)
from captum_mamba.evaluation.synthetic.needle import method_scores
from captum_mamba.evaluation.synthetic.tasks import CopyingBatch, copying_batch

COPYING_ASSETS = Path(__file__).resolve().parent / "assets" / "copying"
COPY_LENGTH = 4
"""Data tokens per sequence the shipped model was trained to copy."""


def _output_logits(model: nn.Module, input_ids: Tensor, copy_length: int = COPY_LENGTH) -> Tensor:
    """The logits of the ``copy_length`` outputs, from the delimiter on: ``(batch, copy_length, vocab)``."""
    return model(input_ids=input_ids, logits_to_keep=copy_length).logits


@torch.no_grad()
def _copied_right(model: nn.Module, batch: CopyingBatch) -> Tensor:
    """Whether each output is the data token it copies: ``(batch, COPY_LENGTH)`` booleans."""
    return _output_logits(model, batch.input_ids).argmax(-1) == batch.labels[:, -COPY_LENGTH:]


def train_copying(
    steps: int = 600,
    batch_size: int = 64,
    min_length: int = 12,
    max_length: int = 64,
    copy_length: int = COPY_LENGTH,
    lr: float = 5e-3,
    seed: int = 0,
    log_every: int = 100,
) -> tuple[MambaForCausalLM, list[float]]:
    r"""
    Train on copying batches of random lengths in ``[min_length, max_length]``, loss on the
    ``copy_length`` outputs from the delimiter on (see :func:`~.causal_lm.train_synthetic_lm`).

    Returns:
        *tuple* ``(model, losses)``.
    """

    def batch_loss(model: MambaForCausalLM, length: int, generator: torch.Generator) -> Tensor:
        batch = copying_batch(batch_size, length, generator, copy_length)
        logits = _output_logits(model, batch.input_ids, copy_length)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels[:, -copy_length:].flatten())

    return train_synthetic_lm(batch_loss, steps, min_length, max_length, lr=lr, seed=seed, log_every=log_every)


def copying_accuracy(model: nn.Module, length: int, n: int = 256, seed: int = 1234) -> dict[str, float]:
    r"""
    Accuracy on ``n`` fresh sequences of ``length`` tokens with :data:`COPY_LENGTH` data tokens.

    Returns:
        *dict* ``{"token": share of outputs right, "sequence": share of sequences copied whole}``.
    """
    right = _copied_right(model, copying_batch(n, length, torch.Generator().manual_seed(seed), COPY_LENGTH))
    return {"token": float(right.double().mean()), "sequence": float(right.all(1).double().mean())}


def load_copying_model(dtype: torch.dtype = torch.float32, folder: str | Path = COPYING_ASSETS) -> MambaForCausalLM:
    r"""
    The shipped copying model (``assets/copying/MODEL_CARD.md``), offline, in eval mode.

    Args:
        dtype (torch.dtype, optional): parameter type; ``torch.float64`` conserves exactly.
                    Default: ``torch.float32``
        folder (str or Path, optional): a folder written by this module's training. Default: the shipped one

    Returns:
        *MambaForCausalLM*.
    """
    return load_synthetic_lm(folder, "copying", dtype)


def copying_top1(
    model: nn.Module, methods: Sequence[str] | None = None, n: int = 50, length: int = 64, seed: int = 0
) -> dict[str, dict[str, float | list[float]]]:
    r"""
    Per method, the share of outputs whose most relevant token (the explained position itself
    excluded) is the data token they copy. The ``k``-th output is explained on the sequence cut
    after its position (a causal LM's output there sees nothing later), as the logit of the true
    token.

    Args:
        model (nn.Module): a copying model (see :func:`load_copying_model`).
        methods (Sequence[str], optional): names in ``METHODS``; default: every registered one.
        n (int): sequences. length (int): their length. seed (int): sample seed.

    Returns:
        *dict* ``{method: {"top1_source": ..., "top1_source_by_output": [one per output]}}``
        and ``"_model"`` (token accuracy on these sequences).
    """
    batch = copying_batch(n, length, torch.Generator().manual_seed(seed), COPY_LENGTH)
    start = length - COPY_LENGTH
    report: dict[str, dict[str, float | list[float]]] = {}
    for method in list(METHODS) if methods is None else methods:
        by_output = []
        for k in range(COPY_LENGTH):
            prefix = batch.input_ids[:, : start + k + 1]
            scores = method_scores(method, model, prefix, target=batch.labels[:, start + k])[:, :-1]
            by_output.append(float((scores.argmax(1) == batch.source_position[:, start + k]).double().mean()))
        report[method] = {"top1_source": sum(by_output) / COPY_LENGTH, "top1_source_by_output": by_output}
    accuracy = float(_copied_right(model, batch).double().mean())
    report["_model"] = {"accuracy_on_these": accuracy, "n": n, "length": length}
    return report


def train_and_save(
    out: str | Path = COPYING_ASSETS,
    steps: int = 600,
    seed: int = 0,
    report_n: int = 50,
    command: str | None = None,
) -> dict:
    r"""
    Train, measure and save the copying model, then print the top-1 report: ``captum-mamba train copying``.

    Args:
        out (str or Path, optional): output folder. Default: the shipped model's folder, ``assets/copying``
        steps (int, optional): optimiser steps. Default: 600
        seed (int, optional): seed of the training. Default: 0
        report_n (int, optional): sequences of the top-1 report (0: none). Default: 50
        command (str, optional): the command line recorded in ``metrics.json``.
                    Default: the ``captum-mamba train copying`` command with every option spelled out

    Returns:
        *dict*: the metrics written to ``OUT/metrics.json``.
    """
    return train_measure_save(
        "copying",
        out,
        steps,
        seed,
        report_n,
        train=lambda steps, seed: train_copying(steps=steps, seed=seed),
        measure=lambda model: {
            "accuracy_by_length": {length: copying_accuracy(model, length) for length in (16, 32, 64, 128, 256, 512)},
            "copy_length": COPY_LENGTH,
        },
        top1=lambda model, n: copying_top1(model, n=n),
        command=command,
    )
