"""Tiny bias-free causal LMs for the synthetic tasks (passkey, copying): build, train, save, load.

Three architectures (:data:`ARCHITECTURES`): ``"mamba"``, a Hugging Face ``MambaForCausalLM``;
``"qwen3_5"``, a Hugging Face ``Qwen3_5ForCausalLM`` text model with a Gated DeltaNet layer and a
gated-attention layer; and ``"gated_deltanet"``, the same Qwen3.5 text model with Gated DeltaNet
layers only (no attention). The training, the measurements and the files written are the same for all.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, MambaForCausalLM, PretrainedConfig, PreTrainedModel

from captum_mamba.default import load_quietly
from captum_mamba.evaluation.linear_time import linear_time_forward
from captum_mamba.evaluation.provenance import check_model_destination
from captum_mamba.evaluation.synthetic.tasks import VOCAB_SIZE
from captum_mamba.evaluation.synthetic.train import synthetic_config

BatchLoss = Callable[[PreTrainedModel, int, torch.Generator], Tensor]
"""``batch_loss(model, length, generator)``: the training loss on one fresh batch of ``length`` tokens."""

ARCHITECTURES: tuple[str, ...] = ("mamba", "qwen3_5", "gated_deltanet")
"""The architectures of the synthetic causal LMs (``--architecture`` of ``captum-mamba train``)."""

QWEN3_5_LAYERS: tuple[str, ...] = ("linear_attention", "full_attention")
"""The Qwen3.5 synthetic LM's layers: a Gated DeltaNet, then gated softmax attention."""
GATED_DELTANET_LAYERS: tuple[str, ...] = ("linear_attention", "linear_attention")
"""The Gated DeltaNet synthetic LM's layers: two Gated DeltaNets, no attention."""
QWEN3_5_TEXT_LAYERS: dict[str, tuple[str, ...]] = {"qwen3_5": QWEN3_5_LAYERS, "gated_deltanet": GATED_DELTANET_LAYERS}
"""The architectures built as a Qwen3.5 text model (``Qwen3_5ForCausalLM``), with their layer types."""
DECAY_STEP_INIT: dict[str, tuple[float, float]] = {"gated_deltanet": (1e-3, 1e-1)}
"""Architectures whose Gated DeltaNets start with long memories: the range of ``softplus(dt_bias)``,
the decay's time step, drawn log-uniformly (the Mamba-2 time-step initialisation) instead of
transformers' ``dt_bias = 1``. With transformers' ``A ~ U(0.01, 16)`` and ``dt_bias = 1`` a state
decays by ``exp(-1.31 A)`` per token at the start (by a factor below 0.3 in 94% of the heads), so a
model whose only token mixers are Gated DeltaNets starts unable to carry a token across a sequence
(in the hybrid ``"qwen3_5"``, which keeps transformers' initialisation, the attention layer copies)."""


def synthetic_lm_config(architecture: str = "mamba") -> PretrainedConfig:
    r"""
    The configuration of a synthetic causal LM: bias-free, untied LM head, the synthetic vocabulary
    (relevance is conserved exactly).

    Args:
        architecture (str, optional): ``"mamba"``: ``MambaConfig``, hidden 32, 2 layers, state 16,
                    expand 2, conv kernel 4. ``"qwen3_5"``: ``Qwen3_5TextConfig``, hidden 32, a
                    Gated DeltaNet layer (2 key heads of 16 serving 2 value heads of 16, conv kernel
                    4) then an attention layer (2 query heads of 16 over 1 key/value head, gated
                    output), SwiGLU MLPs of width 64. ``"gated_deltanet"``: the same with a second
                    Gated DeltaNet layer in place of the attention layer. Default: ``"mamba"``

    Returns:
        *PretrainedConfig*.

    Raises:
        ValueError: for an architecture not in :data:`ARCHITECTURES`.
    """
    if architecture == "mamba":
        return synthetic_config(32, 2, 16, tie_word_embeddings=False)
    if architecture in QWEN3_5_TEXT_LAYERS:
        from transformers import Qwen3_5TextConfig

        layers = QWEN3_5_TEXT_LAYERS[architecture]
        return Qwen3_5TextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=len(layers),
            layer_types=list(layers),
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            linear_conv_kernel_dim=4,
            linear_num_key_heads=2,
            linear_num_value_heads=2,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            attention_bias=False,
            tie_word_embeddings=False,
            use_cache=False,
        )
    raise ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")


def build_synthetic_lm(architecture: str = "mamba") -> PreTrainedModel:
    r"""
    A freshly initialised synthetic causal LM (see :func:`synthetic_lm_config`), drawn from
    torch's global random generator; the Gated DeltaNets of the architectures in
    :data:`DECAY_STEP_INIT` get long memories (:func:`init_decay_steps`).

    Args:
        architecture (str, optional): one of :data:`ARCHITECTURES`. Default: ``"mamba"``

    Returns:
        *PreTrainedModel*: ``MambaForCausalLM`` or ``Qwen3_5ForCausalLM``.
    """
    config = synthetic_lm_config(architecture)
    if architecture == "mamba":
        return MambaForCausalLM(config)
    model = AutoModelForCausalLM.from_config(config)
    if architecture in DECAY_STEP_INIT:
        init_decay_steps(model, *DECAY_STEP_INIT[architecture])
    return model


@torch.no_grad()
def init_decay_steps(model: nn.Module, low: float, high: float) -> nn.Module:
    r"""
    Re-initialise the decay time step of every Gated DeltaNet in ``model``: ``softplus(dt_bias)``
    drawn log-uniformly from ``[low, high]`` per value head (from torch's global random generator),
    as Mamba-2 initialises its time steps. The state then decays by ``exp(-A · softplus(a + dt_bias))``
    per token with ``a`` near 0 at the start, slowly for most heads.

    Args:
        model (nn.Module): a model whose Gated DeltaNets hold ``dt_bias`` and ``A_log`` parameters.
        low (float): the smallest time step, above 0.
        high (float): the largest time step, at least ``low``.

    Returns:
        *nn.Module*: ``model``, changed in place.

    Raises:
        ValueError: ``model`` has no Gated DeltaNet, or ``not 0 < low <= high``.
    """
    if not 0 < low <= high:
        raise ValueError(f"the time steps need 0 < low <= high, got low {low}, high {high}")
    mixers = [module for module in model.modules() if hasattr(module, "dt_bias") and hasattr(module, "A_log")]
    if not mixers:
        raise ValueError(f"{type(model).__name__} has no Gated DeltaNet (no module with dt_bias and A_log)")
    for mixer in mixers:
        step = torch.empty_like(mixer.dt_bias).uniform_(math.log(low), math.log(high)).exp()
        mixer.dt_bias.copy_(step + torch.log(-torch.expm1(-step)))  # the inverse of softplus
    return model


def train_synthetic_lm(
    batch_loss: BatchLoss,
    steps: int,
    min_length: int,
    max_length: int,
    lr: float = 5e-3,
    seed: int = 0,
    log_every: int = 100,
    architecture: str = "mamba",
) -> tuple[PreTrainedModel, list[float]]:
    r"""
    Train :func:`build_synthetic_lm` with AdamW (one-cycle schedule, weight decay 0.01, gradient
    clipping 1.0) on fresh batches, one length per batch drawn from ``[min_length, max_length]``;
    Mamba through the linear-time scan.

    Args:
        batch_loss (BatchLoss): draws a batch and returns its loss.
        steps (int): optimiser steps.
        min_length (int): shortest sequence. max_length (int): longest sequence.
        lr (float, optional): peak learning rate. Default: ``5e-3``
        seed (int, optional): seeds the initialisation, the lengths and the batches. Default: ``0``
        log_every (int, optional): print the mean loss every so many steps (0: never). Default: ``100``
        architecture (str, optional): one of :data:`ARCHITECTURES`. Default: ``"mamba"``

    Returns:
        *tuple* ``(model, losses)``, the model in eval mode.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    model = build_synthetic_lm(architecture).train()
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


def training_command(task: str, architecture: str, steps: int, seed: int, report_n: int, out: Path) -> str:
    """The ``captum-mamba train TASK`` command with every option spelled out (``--architecture`` unless Mamba)."""
    words = ["captum-mamba", "train", task] + ([] if architecture == "mamba" else ["--architecture", architecture])
    words += ["--steps", str(steps), "--seed", str(seed), "--report-n", str(report_n), "--out", str(out)]
    return shlex.join(words)


def load_synthetic_lm(
    folder: str | Path, task: str, dtype: torch.dtype, architecture: str = "mamba"
) -> PreTrainedModel:
    r"""
    A saved synthetic LM, offline, in eval mode; its class is read from its ``config.json``.

    Args:
        folder (str or Path): the folder the training wrote.
        task (str): the task's name (``captum-mamba train TASK`` trains it), for the error message.
        dtype (torch.dtype): parameter type.
        architecture (str, optional): the architecture named in the error message. Default: ``"mamba"``

    Returns:
        *PreTrainedModel*: ``MambaForCausalLM`` or ``Qwen3_5ForCausalLM``.

    Raises:
        ValueError: ``folder`` holds no model.
    """
    if not (Path(folder) / "model.safetensors").is_file():
        option = "" if architecture == "mamba" else f" --architecture {architecture}"
        raise ValueError(
            f"no {task} model in {folder}; train one with captum-mamba train {task}{option} --out {folder}"
        )
    return load_quietly(AutoModelForCausalLM, Path(folder), dtype)


def parameter_count(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(parameter.numel() for parameter in model.parameters())


def train_measure_save(
    task: str,
    out: str | Path,
    steps: int,
    seed: int,
    report_n: int,
    train: Callable[[int, int], tuple[PreTrainedModel, list[float]]],
    measure: Callable[[PreTrainedModel], dict[str, Any]],
    top1: Callable[[PreTrainedModel, int], dict[str, Any]],
    command: str | None = None,
    architecture: str = "mamba",
    shipped: Iterable[Path] = (),
    card: Callable[[Path, dict[str, Any]], Path] | None = None,
) -> dict[str, Any]:
    r"""
    The training of a synthetic LM (``captum-mamba train TASK``): train on one thread
    (bit-reproducible), measure, report every method's top-1 in float64, save the float32 model,
    ``metrics.json`` (with a ``"provenance"`` record naming the commit) and, with ``card``, the
    model card.

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
        architecture (str, optional): the model's architecture, recorded. Default: ``"mamba"``
        shipped (Iterable[Path], optional): the shipped models' folders, written only from a clean
                    commit. Default: none
        card (Callable, optional): ``card(out, metrics) -> path`` writes the model card. Default: none

    Returns:
        *dict*: the metrics written to ``OUT/metrics.json`` (also printed).

    Raises:
        UntraceableResultError: ``out`` is one of ``shipped`` and the checkout has uncommitted
            changes (checked before training; see
            :func:`~captum_mamba.evaluation.provenance.check_model_destination`).
    """
    out = Path(out)
    if command is None:
        command = training_command(task, architecture, steps, seed, report_n, out)
    provenance = check_model_destination(out, shipped)
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
        "architecture": architecture,
        "parameters": parameter_count(model),
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
    record = {**metrics, "train_seconds": seconds, "provenance": provenance}
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    if card is not None:
        card(out, record)
    print(json.dumps(record, indent=1))
    return record
