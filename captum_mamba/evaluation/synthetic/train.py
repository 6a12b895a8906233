"""Train the needle-detection model: ``python -m captum_mamba.evaluation.synthetic.train``."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer, MambaRMSNorm
from transformers.utils import logging as hf_logging

from captum_mamba.context import mamba_lrp_rules
from captum_mamba.evaluation.synthetic.tasks import VOCAB_SIZE, needle_batch
from captum_mamba.models import MambaForSequenceClassification
from captum_mamba.models.hf_mamba import MambaMixerRule

ASSETS = Path(__file__).resolve().parent / "assets" / "needle"


def build_model(hidden: int = 32, layers: int = 2, state: int = 8) -> MambaForSequenceClassification:
    """A bias-free Mamba classifier reading the last token (so relevance is conserved exactly)."""
    config = MambaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        state_size=state,
        num_hidden_layers=layers,
        expand=2,
        conv_kernel=4,
        use_conv_bias=False,
        use_bias=False,
        use_cache=False,
        num_labels=2,
    )
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
) -> tuple[MambaForSequenceClassification, list[float]]:
    r"""
    Train on sequences of random lengths in ``[min_length, max_length]`` (one length per batch).
    The forward runs through the package's linear-time differentiable scan (the mixer rule with
    every MambaLRP component off, i.e. the plain model), whose backward is faster than the
    Hugging Face reference path's on CPU.

    Returns:
        *tuple* ``(model, losses)``.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    model = build_model()
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    plain = {MambaMixer: MambaMixerRule(silu=None, ssm=None, gate=None), MambaRMSNorm: None}
    with mamba_lrp_rules(model, plain):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--out", type=Path, default=ASSETS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    model, losses = train(steps=args.steps)
    seconds = time.perf_counter() - start
    metrics = {length: accuracy(model, length) for length in (32, 64, 128, 256)}
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    (args.out / "metrics.json").write_text(
        json.dumps(
            {"accuracy_by_length": metrics, "train_seconds": seconds, "steps": args.steps, "final_loss": losses[-1]},
            indent=1,
        )
    )
    print(f"accuracy by length {metrics}; {seconds:.0f} s")


if __name__ == "__main__":
    main()
