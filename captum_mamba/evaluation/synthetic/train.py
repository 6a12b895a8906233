"""Train the needle-detection model: ``captum-mamba train needle`` (:func:`train_and_save`)."""

from __future__ import annotations

import json
import random
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import MambaConfig
from transformers.utils import logging as hf_logging

from captum_mamba.evaluation.linear_time import linear_time_forward
from captum_mamba.evaluation.synthetic.tasks import VOCAB_SIZE, needle_batch
from captum_mamba.heads import MambaForSequenceClassification

ASSETS = Path(__file__).resolve().parent / "assets" / "needle"


def synthetic_config(hidden: int, layers: int, state: int, **extra: Any) -> MambaConfig:
    """A bias-free Mamba configuration over the synthetic vocabulary (relevance is conserved exactly)."""
    return MambaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        state_size=state,
        num_hidden_layers=layers,
        expand=2,
        conv_kernel=4,
        use_conv_bias=False,
        use_bias=False,
        use_cache=False,
        **extra,
    )


def build_model(hidden: int = 32, layers: int = 2, state: int = 8) -> MambaForSequenceClassification:
    """A bias-free Mamba classifier reading the last token (so relevance is conserved exactly)."""
    config = synthetic_config(hidden, layers, state, num_labels=2)
    config.pooling = "last"
    config.classifier_bias = False
    config.id2label = {0: "absent", 1: "present"}
    config.label2id = {"absent": 0, "present": 1}
    return MambaForSequenceClassification(config)


@torch.no_grad()
def accuracy(model: torch.nn.Module, length: int, n: int = 512, seed: int = 1234) -> float:
    """Accuracy on ``n`` fresh sequences of ``length`` tokens."""
    batch = needle_batch(n, length, torch.Generator().manual_seed(seed))
    return float((model(input_ids=batch.input_ids).logits.argmax(-1) == batch.labels).float().mean())


def train(
    steps: int = 800,
    batch_size: int = 32,
    min_length: int = 32,
    max_length: int = 64,
    lr: float = 5e-3,
    seed: int = 0,
    log_every: int = 50,
    init: Path | None = None,
) -> tuple[MambaForSequenceClassification, list[float]]:
    r"""
    Train on sequences of random lengths in ``[min_length, max_length]`` (one length per batch),
    from scratch or, with ``init`` (a saved model folder), continuing from a trained model.
    The forward runs through the package's linear-time differentiable scan (the mixer rule with
    every MambaLRP component off, i.e. the plain model), whose backward is faster than the
    Hugging Face reference path's on CPU.

    Returns:
        *tuple* ``(model, losses)``.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    model = build_model() if init is None else MambaForSequenceClassification.from_pretrained(init)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    with linear_time_forward(model):
        for step in range(steps):
            _step(model, optimiser, schedule, generator, batch_size, random.randint(min_length, max_length), losses)
            if log_every and (step + 1) % log_every == 0:
                print(f"step {step + 1}: loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    return model.eval(), losses


def _step(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    batch_size: int,
    length: int,
    losses: list[float],
) -> None:
    batch = needle_batch(batch_size, length, generator)
    loss = torch.nn.functional.cross_entropy(model(input_ids=batch.input_ids).logits, batch.labels)
    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()
    schedule.step()
    losses.append(float(loss.detach()))


def train_and_save(
    out: str | Path = ASSETS,
    steps: int = 800,
    min_length: int = 32,
    max_length: int = 64,
    lr: float = 5e-3,
    batch_size: int = 32,
    seed: int = 0,
    eval_lengths: Sequence[int] = (32, 64, 128, 256),
    init: str | Path | None = None,
    card: bool = False,
    command: str | None = None,
) -> dict:
    r"""
    Train, measure and save a needle model (``config.json``, ``model.safetensors``, ``metrics.json``),
    on one CPU thread: ``captum-mamba train needle``.

    Args:
        out (str or Path, optional): output folder. Default: the shipped model's folder, ``assets/needle``
        steps (int, optional): optimiser steps. Default: 800
        min_length (int, optional): shortest training sequence. Default: 32
        max_length (int, optional): longest training sequence. Default: 64
        lr (float, optional): peak learning rate. Default: 5e-3
        batch_size (int, optional): sequences per batch. Default: 32
        seed (int, optional): seed of the initialisation, the lengths and the batches. Default: 0
        eval_lengths (Sequence[int], optional): lengths of the accuracy check. Default: (32, 64, 128, 256)
        init (str or Path, optional): continue from this saved model folder instead of from scratch.
        card (bool, optional): also write ``MODEL_CARD.md`` from the metrics. Default: False
        command (str, optional): the command line recorded in ``metrics.json`` and the model card.
                    Default: the ``captum-mamba train needle`` command with every option spelled out

    Returns:
        *dict*, the metrics written to ``OUT/metrics.json``.

    Raises:
        ValueError: unless ``2 <= min_length <= max_length``.
    """
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= --min-length <= --max-length, got {min_length} and {max_length}")
    out = Path(out)
    if command is None:
        words = ["captum-mamba", "train", "needle", "--steps", str(steps), "--min-length", str(min_length)]
        words += ["--max-length", str(max_length), "--lr", str(lr), "--batch-size", str(batch_size)]
        words += ["--seed", str(seed), "--eval-lengths", ",".join(str(n) for n in eval_lengths)]
        words += [] if init is None else ["--init", str(init)]
        command = shlex.join([*words, *(["--card"] if card else []), "--out", str(out)])
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    model, losses = train(
        steps=steps,
        batch_size=batch_size,
        min_length=min_length,
        max_length=max_length,
        lr=lr,
        seed=seed,
        init=None if init is None else Path(init),
    )
    seconds = time.perf_counter() - start
    metrics = {length: accuracy(model, length) for length in eval_lengths}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "model.safetensors").chmod(0o644)
    record = {
        "accuracy_by_length": metrics,
        "train_seconds": seconds,
        "steps": steps,
        "final_loss": losses[-1],
        "seed": seed,
        "train_lengths": [min_length, max_length],
        "lr": lr,
        "batch_size": batch_size,
        "init": None if init is None else str(init),
        "command": command,
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    if card:
        write_model_card(out, record, sum(p.numel() for p in model.parameters()))
    print(f"accuracy by length {metrics}; {seconds:.0f} s")
    return record


def write_model_card(out: Path, metrics: dict, parameters: int) -> Path:
    """Write ``MODEL_CARD.md`` for a needle model trained by :func:`train_and_save` from its ``metrics``."""
    low, high = metrics["train_lengths"]
    rows = "\n".join(f"| {length} | 512 | {value:.3f} |" for length, value in metrics["accuracy_by_length"].items())
    init_note = (
        f"\n- Initialised from the trained model in `{metrics['init']}` (a curriculum: short sequences first)."
        if metrics.get("init")
        else ""
    )
    text = f"""# Needle-detection model `{out.name}` (synthetic, shipped with captum_mamba)

A tiny Mamba classifier that answers "does the needle token appear in the sequence?", trained on
sequences of {low} to {high} tokens. Its true evidence is known (the single needle token), so it
separates faithful explanations from unfaithful ones; load it with
`captum_mamba.evaluation.synthetic.needle.load_needle_model(name="{out.name}")`.

- Task (`captum_mamba.evaluation.synthetic.tasks.needle_batch`): vocabulary 16; filler tokens
  2-15 drawn uniformly; the needle (id 1) at one uniformly drawn position in half of the
  sequences; the read-out token (id 0) last. Label 1 iff the needle is present.
- Model (`captum_mamba.evaluation.synthetic.train.build_model`): `MambaForSequenceClassification`
  with a Hugging Face `MambaModel` backbone: hidden 32, 2 layers, state 8, expand 2, conv kernel
  4, no conv / projection / classifier biases (MambaLRP's relevances sum exactly to the logit),
  last-token pooling (the read-out), 2 classes (absent, present). {parameters:,} parameters.
- Training: seed {metrics["seed"]}, 1 CPU thread, float32; {metrics["steps"]} steps of AdamW (lr {metrics["lr"]},
  one-cycle schedule, weight decay 0.01, batch {metrics["batch_size"]}, gradient clipping 1.0) on freshly generated
  batches, one length per batch drawn uniformly from {low}-{high}; {metrics["train_seconds"]:.0f} s on the
  development machine (2 cores shared with other jobs; the time varies with the load).{init_note}

## Accuracy (512 fresh sequences per length, half with the needle, seed 1234)

| length | sequences | accuracy |
|---|---|---|
{rows}

## Reproduce

```
{metrics["command"]}
```
"""
    path = out / "MODEL_CARD.md"
    path.write_text(text, encoding="utf-8")
    return path
