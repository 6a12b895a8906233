"""Tiny bias-free Mamba causal LMs for the synthetic tasks (passkey, copying): build, train, save, load."""

from __future__ import annotations

import json
import random
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import MambaForCausalLM

from captum_mamba.evaluation.linear_time import linear_time_forward
from captum_mamba.evaluation.synthetic.train import load_quietly, synthetic_config

BatchLoss = Callable[[MambaForCausalLM, int, torch.Generator], Tensor]
"""``batch_loss(model, length, generator)``: the training loss on one fresh batch of ``length`` tokens."""


def build_synthetic_lm(hidden: int = 32, layers: int = 2, state: int = 16) -> MambaForCausalLM:
    """A bias-free Mamba causal LM over the synthetic vocabulary (relevance is conserved exactly)."""
    return MambaForCausalLM(synthetic_config(hidden, layers, state, tie_word_embeddings=False))


def train_synthetic_lm(
    batch_loss: BatchLoss,
    steps: int,
    min_length: int,
    max_length: int,
    lr: float = 5e-3,
    seed: int = 0,
    log_every: int = 100,
) -> tuple[MambaForCausalLM, list[float]]:
    r"""
    Train :func:`build_synthetic_lm` with AdamW (one-cycle schedule, weight decay 0.01, gradient
    clipping 1.0) on fresh batches, one length per batch drawn from ``[min_length, max_length]``,
    through the linear-time scan.

    Args:
        batch_loss (BatchLoss): draws a batch and returns its loss.
        steps (int): optimiser steps.
        min_length (int): shortest sequence. max_length (int): longest sequence.
        lr (float, optional): peak learning rate. Default: ``5e-3``
        seed (int, optional): seeds the initialisation, the lengths and the batches. Default: ``0``
        log_every (int, optional): print the mean loss every so many steps (0: never). Default: ``100``

    Returns:
        *tuple* ``(model, losses)``, the model in eval mode.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    model = build_synthetic_lm().train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    with linear_time_forward(model):
        for step in range(steps):
            loss = batch_loss(model, random.randint(min_length, max_length), generator)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if log_every and (step + 1) % log_every == 0:
                print(f"step {step + 1}: loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    return model.eval(), losses


def load_synthetic_lm(folder: str | Path, task: str, dtype: torch.dtype) -> MambaForCausalLM:
    r"""
    A saved synthetic LM, offline, in eval mode.

    Args:
        folder (str or Path): the folder the training wrote.
        task (str): the task's name (``captum-mamba train TASK`` trains it), for the error message.
        dtype (torch.dtype): parameter type.

    Returns:
        *MambaForCausalLM*.
    """
    if not (Path(folder) / "model.safetensors").is_file():
        raise ValueError(f"no {task} model in {folder}; train one with captum-mamba train {task} --out {folder}")
    return load_quietly(MambaForCausalLM, Path(folder), dtype)


def train_measure_save(
    task: str,
    out: str | Path,
    steps: int,
    seed: int,
    report_n: int,
    train: Callable[[int, int], tuple[MambaForCausalLM, list[float]]],
    measure: Callable[[MambaForCausalLM], dict[str, Any]],
    top1: Callable[[MambaForCausalLM, int], dict[str, Any]],
    command: str | None = None,
) -> dict[str, Any]:
    r"""
    The training of a synthetic LM (``captum-mamba train TASK``): train on one thread
    (bit-reproducible), measure, report every method's top-1 in float64, save the float32 model
    and ``metrics.json``.

    Args:
        task (str): the task's name, as in ``captum-mamba train TASK``.
        out (str or Path): output folder (created if missing).
        steps (int): optimiser steps.
        seed (int): seed of the training.
        report_n (int): sequences of the top-1 report (0: no report).
        train (Callable): ``train(steps, seed) -> (model, losses)``.
        measure (Callable): ``measure(model) -> metrics`` (accuracy and task settings).
        top1 (Callable): ``top1(model, n) -> report``.
        command (str, optional): the command line recorded in ``metrics.json``.
                    Default: the ``captum-mamba train TASK`` command with every option spelled out

    Returns:
        *dict*: the metrics written to ``OUT/metrics.json`` (also printed).
    """
    out = Path(out)
    if command is None:
        command = shlex.join(
            ["captum-mamba", "train", task, "--steps", str(steps), "--seed", str(seed), "--report-n", str(report_n)]
            + ["--out", str(out)]
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        model, losses = train(steps, seed)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    metrics = {
        **measure(model),
        "steps": steps,
        "final_loss": losses[-1],
        "seed": seed,
        "command": command,
    }
    if report_n:
        metrics["top1"] = top1(model.double(), report_n)
    model.float()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "model.safetensors").chmod(0o644)
    record = {**metrics, "train_seconds": seconds}
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    return record
