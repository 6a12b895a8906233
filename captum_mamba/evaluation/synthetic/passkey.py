"""Passkey retrieval: a causal LM outputs the value that followed a marker; does relevance find it?

``python -m captum_mamba.evaluation.synthetic.passkey`` trains the shipped model
(``assets/passkey``) and prints the top-1 report; :func:`passkey_top1` scores any method of
:data:`~captum_mamba.evaluation.METHODS` on it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import MambaForCausalLM

from captum_mamba.evaluation.linear_time import linear_time_forward
from captum_mamba.evaluation.methods import METHODS
from captum_mamba.evaluation.synthetic.needle import method_scores
from captum_mamba.evaluation.synthetic.tasks import passkey_batch
from captum_mamba.evaluation.synthetic.train import load_quietly, synthetic_config

PASSKEY_ASSETS = Path(__file__).resolve().parent / "assets" / "passkey"


def build_passkey_model(hidden: int = 32, layers: int = 2, state: int = 16) -> MambaForCausalLM:
    """A bias-free Mamba causal LM over the synthetic vocabulary (relevance is conserved exactly)."""
    return MambaForCausalLM(synthetic_config(hidden, layers, state, tie_word_embeddings=False))


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
) -> tuple[MambaForCausalLM, list[float]]:
    r"""
    Train on passkey batches of random lengths in ``[min_length, max_length]``, loss on the
    answer at the last position only, through the linear-time scan.

    Returns:
        *tuple* ``(model, losses)``.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    model = build_passkey_model().train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    with linear_time_forward(model):
        for step in range(steps):
            batch = passkey_batch(batch_size, random.randint(min_length, max_length), generator)
            loss = nn.functional.cross_entropy(_answer_logits(model, batch.input_ids), batch.values)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if log_every and (step + 1) % log_every == 0:
                print(f"step {step + 1}: loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    return model.eval(), losses


@torch.no_grad()
def passkey_accuracy(model: nn.Module, length: int, n: int = 512, seed: int = 1234) -> float:
    """Share of ``n`` fresh sequences of ``length`` tokens whose answer is the value."""
    batch = passkey_batch(n, length, torch.Generator().manual_seed(seed))
    return float((_answer_logits(model, batch.input_ids).argmax(-1) == batch.values).double().mean())


def load_passkey_model(dtype: torch.dtype = torch.float32, folder: str | Path = PASSKEY_ASSETS) -> MambaForCausalLM:
    r"""
    The shipped passkey model (``assets/passkey/MODEL_CARD.md``), offline, in eval mode.

    Args:
        dtype (torch.dtype, optional): parameter type; ``torch.float64`` conserves exactly.
                    Default: ``torch.float32``
        folder (str or Path, optional): a folder written by this module's training. Default: the shipped one

    Returns:
        *MambaForCausalLM*.
    """
    if not (Path(folder) / "model.safetensors").is_file():
        raise ValueError(f"no passkey model in {folder}; train one with python -m {__name__} --out {folder}")
    return load_quietly(MambaForCausalLM, Path(folder), dtype)


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


def main(argv: list[str] | None = None) -> dict:
    r"""
    Train, measure and save the passkey model, then print the top-1 report.

    Returns:
        *dict*: the metrics written to ``OUT/metrics.json``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", type=Path, default=PASSKEY_ASSETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-n", type=int, default=100, help="sequences of the top-1 report (0: none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model, losses = train_passkey(steps=args.steps, seed=args.seed)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    metrics = {
        "accuracy_by_length": {length: passkey_accuracy(model, length) for length in (32, 64, 128, 256)},
        "train_seconds": seconds,
        "steps": args.steps,
        "final_loss": losses[-1],
        "seed": args.seed,
        "command": " ".join([f"python -m {__name__}", *argv]),
    }
    if args.report_n:
        metrics["top1"] = passkey_top1(model.double(), n=args.report_n)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":
    main()
