"""Which rule for LFM2's gated short convolution: gates held constant or the half rule? Measured by token flipping.

LFM2's operator ``y = C ⊙ conv(B ⊙ x)`` (``B | C | x = in_proj(h)``) has two input-dependent
products. :class:`captum_mamba.rules.ShortConvGateRule` offers two conservative rules for them:

* ``"constant"``: ``B`` and ``C`` held constant (relevance through ``x`` only, as the SSM rule holds
  Mamba's selection constant);
* ``"half"``: the half rule on both products (``C`` half of ``y``'s relevance, ``B`` and ``x`` a
  quarter each, as Mamba's output gate).

This script trains a tiny bias-free LFM2 (gated short convolution, attention, gated short
convolution; 2000 steps, seeded, one CPU thread, about 70 s) on the package's synthetic copying task
(:func:`captum_mamba.evaluation.synthetic.tasks.copying_batch`: four data tokens, blanks, a
delimiter, then the model outputs the data), explains each of the four outputs on held-out
sequences (the logit of the copied token at the output's position, the sequence cut there) with
both gate choices (under each attention rule, AttnLRP and CP-LRP), plain Gradient x Input and
random scores, and measures token-flipping faithfulness (``captum_mamba.evaluation``'s
:func:`~captum_mamba.evaluation.flipping.flipping_curves`): ΔA^F = A_LeRF - A_MoRF of the deletion
curves of the explained logit over 10 steps (higher is better), a removed token replaced by the
blank token's embedding (the task's own filler) and, as a second measurement, by the zero vector.

Usage::

    python benchmarks/lfm2_gate_choice.py                       # prints the table
    python benchmarks/lfm2_gate_choice.py --json benchmarks/results/lfm2_gate_choice.json

Writing into ``benchmarks/results/`` needs a clean checkout (the JSON records its commit).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from _provenance import result_provenance, with_provenance
from torch import Tensor, nn

from captum_mamba import MambaLRP
from captum_mamba.evaluation.flipping import FlippingResult, flipping_curves, replacement_vector
from captum_mamba.evaluation.synthetic.tasks import BLANK_ID, VOCAB_SIZE, copying_batch
from captum_mamba.explained_logits import ExplainedLogits
from captum_mamba.families import LFM2
from captum_mamba.rules import AttentionRule, MixerRule, ShortConvGateRule

COPY_LENGTH = 4


def build_model(hidden: int, seed: int) -> nn.Module:
    """A tiny bias-free LFM2 over the synthetic vocabulary: short convolution, attention, short convolution."""
    torch.manual_seed(seed)
    config = LFM2.config(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LFM2.causal_lm(config)


def copy_loss(model: nn.Module, length: int, batch_size: int, generator: torch.Generator) -> Tensor:
    batch = copying_batch(batch_size, length, generator, COPY_LENGTH)
    logits = model(input_ids=batch.input_ids, logits_to_keep=COPY_LENGTH).logits
    return nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels[:, -COPY_LENGTH:].flatten())


def train(model: nn.Module, steps: int, batch_size: int, lengths: tuple[int, int], lr: float, seed: int) -> list[float]:
    """AdamW, one-cycle schedule, gradient clipping 1.0; one random length per batch."""
    random.seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    model.train()
    for step in range(steps):
        loss = copy_loss(model, random.randint(*lengths), batch_size, generator)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: loss {sum(losses[-100:]) / 100:.4f}", flush=True)
    model.eval()
    return losses


@torch.no_grad()
def token_accuracy(model: nn.Module, length: int, n: int, seed: int) -> float:
    batch = copying_batch(n, length, torch.Generator().manual_seed(seed), COPY_LENGTH)
    logits = model(input_ids=batch.input_ids, logits_to_keep=COPY_LENGTH).logits
    return float((logits.argmax(-1) == batch.labels[:, -COPY_LENGTH:]).double().mean())


Scorer = Callable[[nn.Module, Tensor, Tensor], Tensor]


def lrp_scorer(gates: str, attention: str) -> Scorer:
    """MambaLRP with the gate choice ``gates`` and the attention rule ``attention``: token scores (batch, length)."""
    conv_type, attention_type = next(iter(LFM2.mixers)), next(t for t in LFM2.rules if t.__name__.endswith("Attention"))
    rules = {conv_type: MixerRule(conv_gate=ShortConvGateRule(gates)), attention_type: AttentionRule(attention)}

    def scores(model: nn.Module, embeds: Tensor, target: Tensor) -> Tensor:
        return MambaLRP(model, rules=rules).attribute(embeds, target=target).sum(-1)

    return scores


def gradient_x_input(model: nn.Module, embeds: Tensor, target: Tensor) -> Tensor:
    leaf = embeds.clone().requires_grad_()
    logits = ExplainedLogits(model)(leaf)
    (gradient,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), leaf)
    return (leaf * gradient).detach().sum(-1)


def random_scores(seed: int) -> Scorer:
    generator = torch.Generator().manual_seed(seed)

    def scores(model: nn.Module, embeds: Tensor, target: Tensor) -> Tensor:
        return torch.rand(embeds.shape[:2], generator=generator, dtype=embeds.dtype)

    return scores


def flip(model: nn.Module, scorer: Scorer, n: int, length: int, seed: int, replacement: Tensor) -> FlippingResult:
    """Each of the four outputs explained on its prefix (the sequence cut after the output's position)."""
    batch = copying_batch(n, length, torch.Generator().manual_seed(seed), COPY_LENGTH)
    start = length - COPY_LENGTH
    forward = ExplainedLogits(model)
    results = []
    for k in range(COPY_LENGTH):
        ids = batch.input_ids[:, : start + k + 1]
        target = batch.labels[:, start + k]
        embeds = model.get_input_embeddings()(ids).detach()
        scores = scorer(model, embeds, target)
        results.append(flipping_curves(forward, embeds, scores, target, replacement=replacement, steps=10))
    return FlippingResult.concatenate(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=128, help="held-out sequences explained (four outputs each)")
    parser.add_argument("--length", type=int, default=32, help="length of the held-out sequences")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    record = result_provenance(args.json, "cpu")  # refuses an untraceable benchmarks/results/ file up front
    torch.set_num_threads(1)

    model = build_model(args.hidden, args.seed)
    began = time.perf_counter()
    losses = train(model, args.steps, args.batch_size, (12, args.length), args.lr, args.seed)
    training_seconds = time.perf_counter() - began
    accuracy = {length: token_accuracy(model, length, 256, 1234) for length in (16, args.length)}
    print(f"trained in {training_seconds:.0f} s; held-out token accuracy {accuracy}")

    methods: dict[str, Scorer] = {
        "mamba_lrp gates=constant, attnlrp": lrp_scorer("constant", "attnlrp"),
        "mamba_lrp gates=half, attnlrp": lrp_scorer("half", "attnlrp"),
        "mamba_lrp gates=constant, cp": lrp_scorer("constant", "cp"),
        "mamba_lrp gates=half, cp": lrp_scorer("half", "cp"),
        "gradient_x_input": gradient_x_input,
        "random": random_scores(args.seed + 1),
    }
    embedding = model.get_input_embeddings()
    replacements = {"blank": replacement_vector(embedding, BLANK_ID), "zero": replacement_vector(embedding, "zero")}
    table: dict[str, dict[str, dict[str, float]]] = {}
    per_example: dict[tuple[str, str], Tensor] = {}
    for name, scorer in methods.items():
        table[name] = {}
        for replaced, vector in replacements.items():
            result = flip(model, scorer, args.n, args.length, args.seed + 2, vector)
            summary = result.summary()
            table[name][replaced] = {
                key: summary[key] for key in ("n", "delta_af", "delta_af_sem", "area_morf", "area_lerf")
            }
            per_example[name, replaced] = result.delta_af.double()
    # the choice: half minus constant on the same explained outputs (paired), per attention rule and replacement
    paired = {}
    for attention in ("attnlrp", "cp"):
        for replaced in replacements:
            difference = (
                per_example[f"mamba_lrp gates=half, {attention}", replaced]
                - per_example[f"mamba_lrp gates=constant, {attention}", replaced]
            )
            paired[f"{attention}, {replaced}"] = {
                "mean": float(difference.mean()),
                "sem": float(difference.std() / difference.numel() ** 0.5),
                "half_better_share": float((difference > 0).double().mean()),
            }

    print(f"\nΔA^F on {args.n} held-out sequences x {COPY_LENGTH} outputs (higher is better; ± standard error)")
    print(f"{'method':36s} {'replaced by blank':>22s} {'replaced by zero':>22s}")
    for name, rows in table.items():
        cells = [f"{rows[r]['delta_af']:8.3f} ± {rows[r]['delta_af_sem']:.3f}" for r in replacements]
        print(f"{name:36s} {cells[0]:>22s} {cells[1]:>22s}")
    print("\nΔA^F(half) - ΔA^F(constant) on the same explained outputs (± standard error; share where half is better)")
    for key, row in paired.items():
        print(f"{key:36s} {row['mean']:8.3f} ± {row['sem']:.3f}   {row['half_better_share']:.2f}")

    if args.json is not None:
        document = {
            "task": "copying",
            "copy_length": COPY_LENGTH,
            "model": {
                "family": "lfm2",
                "hidden_size": args.hidden,
                "layer_types": model.config.layer_types,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "training": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "seed": args.seed,
                "lengths": [12, args.length],
                "seconds": round(training_seconds, 1),
                "final_loss": sum(losses[-50:]) / min(50, len(losses)),
                "token_accuracy": accuracy,
            },
            "evaluation": {"n": args.n, "length": args.length, "steps": 10, "score": "logit"},
            "delta_af": table,
            "half_minus_constant": paired,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(with_provenance(document, record), indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
