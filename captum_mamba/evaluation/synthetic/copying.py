"""The copying task: a causal LM reproduces data tokens after a delimiter; does relevance find each source?

``captum-mamba train copying`` (:func:`train_and_save`) trains the shipped models, a Mamba LM
(``assets/copying``), with ``--architecture qwen3_5`` a Qwen3.5 LM with a Gated DeltaNet and an
attention layer (``assets/copying_qwen3_5``) and with ``--architecture gated_deltanet`` a Qwen3.5
LM of Gated DeltaNets only (``assets/copying_gated_deltanet``), and prints the top-1 report;
:func:`copying_top1` scores any method of :data:`~captum_mamba.evaluation.METHODS` on them: for the ``k``-th output the
relevant token is the ``k``-th data token, a known truth that moves with the explained position.
:func:`copying_evaluation` adds token flipping (ΔA^F) of the same explanations
(``captum-mamba evaluate copying``).
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from captum_mamba.evaluation.flipping import FlippingResult, Replacement, flipping_curves, replacement_vector
from captum_mamba.evaluation.methods import METHODS, ExplainedLogits, check_applicable, get_method
from captum_mamba.evaluation.synthetic.causal_lm import (
    ARCHITECTURES,
    DECAY_STEP_INIT,
    load_synthetic_lm,
    synthetic_lm_config,
    train_measure_save,
    train_synthetic_lm,
)
from captum_mamba.evaluation.synthetic.needle import method_scores
from captum_mamba.evaluation.synthetic.tasks import CopyingBatch, copying_batch

ASSETS_FOLDER = Path(__file__).resolve().parent / "assets"
COPYING_ASSETS = ASSETS_FOLDER / "copying"
"""The shipped Mamba copying model."""
COPYING_QWEN3_5_ASSETS = ASSETS_FOLDER / "copying_qwen3_5"
"""The shipped Qwen3.5 (Gated DeltaNet and attention) copying model."""
COPYING_GATED_DELTANET_ASSETS = ASSETS_FOLDER / "copying_gated_deltanet"
"""The shipped Gated DeltaNet copying model (a Qwen3.5 text model of Gated DeltaNets only, no attention)."""
COPY_LENGTH = 4
"""Data tokens per sequence the shipped models were trained to copy."""
TRAIN_LENGTHS: tuple[int, int] = (12, 64)
"""Shortest and longest training sequence of :func:`train_copying`."""
TRAIN_BATCH_SIZE = 64
"""Sequences per batch of :func:`train_copying`."""
TRAIN_LR = 5e-3
"""Peak learning rate of :func:`train_copying`."""
ACCURACY_LENGTHS: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
"""Sequence lengths of the accuracy check in ``metrics.json``."""


def copying_assets(architecture: str = "mamba") -> Path:
    r"""
    The folder of the shipped copying model of ``architecture``.

    Args:
        architecture (str, optional): one of :data:`~.causal_lm.ARCHITECTURES`. Default: ``"mamba"``

    Returns:
        *Path*: ``assets/copying`` for Mamba, ``assets/copying_<architecture>`` otherwise.

    Raises:
        ValueError: for an unknown architecture.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")
    return COPYING_ASSETS if architecture == "mamba" else ASSETS_FOLDER / f"copying_{architecture}"


def _output_logits(model: nn.Module, input_ids: Tensor, copy_length: int = COPY_LENGTH) -> Tensor:
    """The logits of the ``copy_length`` outputs, from the delimiter on: ``(batch, copy_length, vocab)``."""
    return model(input_ids=input_ids, logits_to_keep=copy_length).logits


@torch.no_grad()
def _copied_right(model: nn.Module, batch: CopyingBatch) -> Tensor:
    """Whether each output is the data token it copies: ``(batch, COPY_LENGTH)`` booleans."""
    return _output_logits(model, batch.input_ids).argmax(-1) == batch.labels[:, -COPY_LENGTH:]


def train_copying(
    steps: int = 600,
    batch_size: int = TRAIN_BATCH_SIZE,
    min_length: int = TRAIN_LENGTHS[0],
    max_length: int = TRAIN_LENGTHS[1],
    copy_length: int = COPY_LENGTH,
    lr: float = TRAIN_LR,
    seed: int = 0,
    log_every: int = 100,
    architecture: str = "mamba",
) -> tuple[PreTrainedModel, list[float]]:
    r"""
    Train on copying batches of random lengths in ``[min_length, max_length]``, loss on the
    ``copy_length`` outputs from the delimiter on (see :func:`~.causal_lm.train_synthetic_lm`).

    Args:
        steps (int, optional): optimiser steps. Default: 600
        batch_size (int, optional): sequences per batch. Default: 64
        min_length (int, optional): shortest sequence. Default: 12
        max_length (int, optional): longest sequence. Default: 64
        copy_length (int, optional): data tokens per sequence. Default: 4
        lr (float, optional): peak learning rate. Default: 5e-3
        seed (int, optional): seed of the initialisation, the lengths and the batches. Default: 0
        log_every (int, optional): print the mean loss every so many steps (0: never). Default: 100
        architecture (str, optional): one of :data:`~.causal_lm.ARCHITECTURES` (see
                    :func:`~.causal_lm.synthetic_lm_config`). Default: ``"mamba"``

    Returns:
        *tuple* ``(model, losses)``.
    """

    def batch_loss(model: PreTrainedModel, length: int, generator: torch.Generator) -> Tensor:
        batch = copying_batch(batch_size, length, generator, copy_length)
        logits = _output_logits(model, batch.input_ids, copy_length)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels[:, -copy_length:].flatten())

    return train_synthetic_lm(
        batch_loss, steps, min_length, max_length, lr=lr, seed=seed, log_every=log_every, architecture=architecture
    )


def copying_accuracy(model: nn.Module, length: int, n: int = 256, seed: int = 1234) -> dict[str, float]:
    r"""
    Accuracy on ``n`` fresh sequences of ``length`` tokens with :data:`COPY_LENGTH` data tokens.

    Returns:
        *dict* ``{"token": share of outputs right, "sequence": share of sequences copied whole}``.
    """
    right = _copied_right(model, copying_batch(n, length, torch.Generator().manual_seed(seed), COPY_LENGTH))
    return {"token": float(right.double().mean()), "sequence": float(right.all(1).double().mean())}


def load_copying_model(
    dtype: torch.dtype = torch.float32, folder: str | Path | None = None, architecture: str = "mamba"
) -> PreTrainedModel:
    r"""
    A shipped copying model (``assets/copying*/MODEL_CARD.md``), offline, in eval mode.

    Args:
        dtype (torch.dtype, optional): parameter type; ``torch.float64`` conserves exactly.
                    Default: ``torch.float32``
        folder (str or Path, optional): a folder written by this module's training.
                    Default: the shipped model of ``architecture`` (:func:`copying_assets`)
        architecture (str, optional): ``"mamba"`` (``MambaForCausalLM``), ``"qwen3_5"``
                    (``Qwen3_5ForCausalLM``: a Gated DeltaNet and an attention layer) or
                    ``"gated_deltanet"`` (``Qwen3_5ForCausalLM``: Gated DeltaNets only). Default: ``"mamba"``

    Returns:
        *PreTrainedModel*: the class named in the folder's ``config.json``.
    """
    folder = copying_assets(architecture) if folder is None else folder
    return load_synthetic_lm(folder, "copying", dtype, architecture)


def _methods_for(model: nn.Module, methods: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The methods to run (``None``: every registered one that applies) and those left out, with the reason."""
    if methods is not None:
        check_applicable(list(methods), model)
        return list(methods), {}
    skipped = {name: reason for name in METHODS if (reason := get_method(name).why_unsupported(model))}
    return [name for name in METHODS if name not in skipped], skipped


def _explained_outputs(
    method: str, model: nn.Module, batch: CopyingBatch
) -> Iterator[tuple[Tensor, Tensor, Tensor, float]]:
    """Per output ``k``: the sequences cut after it, the explained tokens, the scores and the seconds spent."""
    start = batch.input_ids.shape[1] - COPY_LENGTH
    for k in range(COPY_LENGTH):
        prefix = batch.input_ids[:, : start + k + 1]
        target = batch.labels[:, start + k]
        began = time.perf_counter()
        scores = method_scores(method, model, prefix, target=target)
        yield prefix, target, scores, time.perf_counter() - began


def _hits(scores: Tensor, batch: CopyingBatch, k: int) -> float:
    """Share of rows whose most relevant token (the explained position excluded) is output ``k``'s source."""
    source = batch.source_position[:, batch.input_ids.shape[1] - COPY_LENGTH + k]
    return float((scores[:, :-1].argmax(1) == source).double().mean())


def _shares(scores: Tensor, batch: CopyingBatch, k: int) -> tuple[float, float]:
    r"""
    Mean share of ``|scores|`` on output ``k``'s source and on the explained position itself
    (``|R_i| / Σ_j |R_j|`` per row; a row of zeros counts 0): how concentrated an explanation is
    on the two tokens the copy reads.
    """
    source = batch.source_position[:, batch.input_ids.shape[1] - COPY_LENGTH + k]
    magnitude = scores.double().abs()
    total = magnitude.sum(1).clamp(min=torch.finfo(torch.float64).tiny)
    on_source = magnitude.gather(1, source[:, None])[:, 0] / total
    return float(on_source.mean()), float((magnitude[:, -1] / total).mean())


def copying_top1(
    model: nn.Module, methods: Sequence[str] | None = None, n: int = 50, length: int = 64, seed: int = 0
) -> dict[str, dict[str, Any]]:
    r"""
    Per method, the share of outputs whose most relevant token (the explained position itself
    excluded) is the data token they copy. The ``k``-th output is explained on the sequence cut
    after its position (a causal LM's output there sees nothing later), as the logit of the true
    token.

    Args:
        model (nn.Module): a copying model (see :func:`load_copying_model`).
        methods (Sequence[str], optional): names in ``METHODS``; default: every registered one
                    that can explain ``model`` (the others are named under ``"_model"``).
        n (int): sequences. length (int): their length. seed (int): sample seed (and the seed of
                    the methods' random draws, e.g. SmoothGrad's noise).

    Returns:
        *dict* ``{method: {"top1_source": ..., "top1_source_by_output": [one per output]}}``
        and ``"_model"`` (token accuracy on these sequences; ``"not_applicable"``: the methods
        left out, with the reason).

    Raises:
        MethodNotApplicableError: a method named in ``methods`` cannot explain ``model``.
    """
    names, skipped = _methods_for(model, methods)
    batch = copying_batch(n, length, torch.Generator().manual_seed(seed), COPY_LENGTH)
    report: dict[str, dict[str, Any]] = {}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for method in names:
            by_output = [
                _hits(scores, batch, k) for k, (*_, scores, _) in enumerate(_explained_outputs(method, model, batch))
            ]
            report[method] = {"top1_source": sum(by_output) / COPY_LENGTH, "top1_source_by_output": by_output}
    accuracy = float(_copied_right(model, batch).double().mean())
    report["_model"] = {"accuracy_on_these": accuracy, "n": n, "length": length}
    if skipped:
        report["_model"]["not_applicable"] = skipped
    return report


def copying_evaluation(
    model: nn.Module,
    methods: Sequence[str] | None = None,
    n: int = 50,
    length: int = 64,
    seed: int = 0,
    steps: int = 10,
    replacement: Replacement = "zero",
    progress: bool = False,
    flip_explained: bool = False,
) -> dict[str, dict[str, Any]]:
    r"""
    :func:`copying_top1` and token flipping (ΔA^F, :mod:`~captum_mamba.evaluation.flipping`) of
    the same explanations: for each output ``k``, the sequence cut after it, the explained logit
    that of the copied token at its last position (a causal LM's, through
    :class:`~captum_mamba.evaluation.ExplainedLogits`). The tokens before the explained position
    are flipped; the explained position's own input is held, as top-1 excludes it (replacing it
    by the zero embedding sets a bias-free Mamba's logit to exactly 0, whatever the method).

    Args:
        model (nn.Module): a copying model (see :func:`load_copying_model`).
        methods (Sequence[str], optional): names in ``METHODS``; default: every registered one
                    that can explain ``model``.
        n (int, optional): sequences. Default: 50
        length (int, optional): their length. Default: 64
        seed (int, optional): sample seed (and the methods' random draws). Default: 0
        steps (int, optional): flipping steps (fractions ``0, 1/steps, ..., 1``). Default: 10
        replacement (str, int or Tensor, optional): the embedding of a removed token (see
                    :func:`~captum_mamba.evaluation.flipping.replacement_vector`). Default: ``"zero"``
        progress (bool, optional): print one line per method. Default: False
        flip_explained (bool, optional): flip the explained position too. Default: False

    Returns:
        *dict* ``{method: row}``, each row :func:`copying_top1`'s two entries, the
        :meth:`~captum_mamba.evaluation.flipping.FlippingResult.summary` over all outputs
        (``n * COPY_LENGTH`` explanations: ``delta_af``, ``delta_af_sem``, ``area_morf``, ...),
        ``delta_af_by_output``, ``share_on_source`` and ``share_on_explained_position`` (the mean
        share of ``|R|`` on the copied token and on the explained position: what an explanation
        leaves for the other tokens, whose order token flipping also scores) and ``seconds``
        (attribution time); and ``"_model"`` as in :func:`copying_top1`.

    Raises:
        MethodNotApplicableError: a method named in ``methods`` cannot explain ``model``.
    """
    names, skipped = _methods_for(model, methods)
    batch = copying_batch(n, length, torch.Generator().manual_seed(seed), COPY_LENGTH)
    embedding = model.get_input_embeddings()
    filler = replacement_vector(embedding, replacement)
    forward = ExplainedLogits(model)
    report: dict[str, dict[str, Any]] = {}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for method in names:
            hits, parts, seconds, shares = [], [], 0.0, []
            for k, (prefix, target, scores, spent) in enumerate(_explained_outputs(method, model, batch)):
                hits.append(_hits(scores, batch, k))
                shares.append(_shares(scores, batch, k))
                embeds = embedding(prefix).detach()
                changeable = torch.ones(prefix.shape, dtype=torch.bool)
                changeable[:, -1] = flip_explained
                curves = flipping_curves(
                    forward, embeds, scores.to(embeds.dtype), target, None, filler, steps, changeable=changeable
                )
                parts.append(curves)
                seconds += spent
            row = {
                "top1_source": sum(hits) / COPY_LENGTH,
                "top1_source_by_output": hits,
                "share_on_source": sum(share for share, _ in shares) / COPY_LENGTH,
                "share_on_explained_position": sum(share for _, share in shares) / COPY_LENGTH,
                **FlippingResult.concatenate(parts).summary(),
                "delta_af_by_output": [float(part.delta_af.double().mean()) for part in parts],
                "seconds": seconds,
            }
            report[method] = row
            if progress:
                print(
                    f"{method:28s} top-1 {row['top1_source']:.3f}  ΔA^F {row['delta_af']:+.4f} ± "
                    f"{row['delta_af_sem']:.4f}  ({seconds:.1f} s)",
                    flush=True,
                )
    accuracy = float(_copied_right(model, batch).double().mean())
    report["_model"] = {
        "accuracy_on_these": accuracy,
        "n": n,
        "length": length,
        "steps": steps,
        "flip_explained": flip_explained,
    }
    if skipped:
        report["_model"]["not_applicable"] = skipped
    return report


def copying_markdown(report: dict[str, Any]) -> str:
    r"""
    A Markdown table of :func:`copying_top1`'s or :func:`copying_evaluation`'s report: top-1 =
    source over all outputs and per output, and ΔA^F (with its standard error, A_MoRF and A_LeRF)
    and the shares of ``|R|`` on the source and on the explained position where the report has them. Methods in the report's order; ablations and controls after the others.

    Args:
        report (dict): the report (``"_model"`` and names starting with ``_`` are not rows).

    Returns:
        *str*: the table, one line per method.
    """
    rows = {name: row for name, row in report.items() if not name.startswith("_")}
    if not rows:
        return ""
    outputs = len(next(iter(rows.values()))["top1_source_by_output"])
    flipping = all("delta_af" in row for row in rows.values())
    header = ["method", "top-1 = source", *(f"d{k}" for k in range(outputs))]
    header += ["ΔA^F (↑)", "A_MoRF", "A_LeRF", "\\|R\\| on source", "on explained position"] if flipping else []
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    order = {"ablation": 2, "control": 1}
    for name in sorted(rows, key=lambda name: order.get(METHODS[name].family, 0)):
        row = rows[name]
        label = METHODS[name].label + (" (ablation)" if METHODS[name].family == "ablation" else "")
        cells = [label, f"{row['top1_source']:.2f}", *(f"{value:.2f}" for value in row["top1_source_by_output"])]
        if flipping:
            cells += [f"{row['delta_af']:.3f} ± {row['delta_af_sem']:.3f}", f"{row['area_morf']:.3f}"]
            cells += [f"{row['area_lerf']:.3f}"]
            cells += [
                f"{row[key]:.2f}" if key in row else "" for key in ("share_on_source", "share_on_explained_position")
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _describe_model(metrics: dict[str, Any]) -> str:
    """The model paragraph of the card, from the saved configuration of ``metrics['architecture']``."""
    architecture = metrics["architecture"]
    config = synthetic_lm_config(architecture)
    if architecture == "mamba":
        return (
            f"Hugging Face `MambaForCausalLM`, hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
            f"state {config.state_size}, expand {config.expand}, conv kernel {config.conv_kernel}, no conv / "
            "projection biases, untied LM head (relevances sum exactly to the explained logit)"
        )
    attention = "full_attention" in config.layer_types
    layers = ", ".join(
        "Gated DeltaNet" if kind == "linear_attention" else "gated softmax attention" for kind in config.layer_types
    )
    text = (
        f"Hugging Face `Qwen3_5ForCausalLM` (the Qwen3.5 text model), hidden {config.hidden_size}, "
        f"{config.num_hidden_layers} layers ({layers}{'' if attention else '; no attention'}), each with a SwiGLU "
        f"MLP of width {config.intermediate_size} and zero-centred RMSNorms. "
        f"{'The Gated DeltaNet' if attention else 'Each Gated DeltaNet'}: {config.linear_num_key_heads} key heads of "
        f"{config.linear_key_head_dim} serving {config.linear_num_value_heads} value heads of "
        f"{config.linear_value_head_dim}, causal conv kernel {config.linear_conv_kernel_dim}, gated RMSNorm on "
        "its output"
    )
    if architecture in DECAY_STEP_INIT:
        low, high = DECAY_STEP_INIT[architecture]
        text += (
            f"; its decay time step `softplus(dt_bias)` initialised log-uniformly in [{low:g}, {high:g}] "
            "(`causal_lm.init_decay_steps`; with transformers' `dt_bias = 1` most heads forget within a few tokens)"
        )
    if not attention:
        return text + ". No biases, untied LM head (relevances sum exactly to the explained logit)"
    return text + (
        f". The attention: {config.num_attention_heads} query heads of {config.head_dim} over "
        f"{config.num_key_value_heads} key/value head, rotary embeddings, q/k norms, sigmoid output gate. No "
        "biases, untied LM head (with CP-LRP for the attention, relevances sum exactly to the explained logit)"
    )


def write_model_card(out: Path, metrics: dict[str, Any]) -> Path:
    r"""
    Write ``MODEL_CARD.md`` for a copying model trained by :func:`train_and_save` from its metrics.

    Args:
        out (Path): the model's folder.
        metrics (dict): what :func:`train_and_save` wrote to ``metrics.json``.

    Returns:
        *Path* of the card.
    """
    low, high = metrics["train_lengths"]
    rows = "\n".join(
        f"| {length} | {value['token']:.3f} | {value['sequence']:.3f} |"
        for length, value in metrics["accuracy_by_length"].items()
    )
    record = metrics["provenance"]
    loader = "" if metrics["architecture"] == "mamba" else f'architecture="{metrics["architecture"]}"'
    top1 = metrics.get("top1") or {}
    top1_text = (
        f"""
## Top-1 = source per method ({top1["_model"]["n"]} sequences of {top1["_model"]["length"]} tokens, float64)

Explaining the logit of the true token at output `k` on the sequence cut after it; the share whose
most relevant token (the explained position excluded) is the source `d_k`, over all outputs and per
output.

{copying_markdown(top1)}"""
        if copying_markdown(top1)
        else ""
    )
    model = textwrap.fill(
        f'- Model (`causal_lm.build_synthetic_lm("{metrics["architecture"]}")`): {_describe_model(metrics)}. '
        f"{metrics['parameters']:,} parameters.",
        width=100,
        subsequent_indent="  ",
        break_on_hyphens=False,
    )
    text = f"""# Copying model `{out.name}` (synthetic, shipped with captum_mamba)

A tiny causal LM that reproduces the {metrics["copy_length"]} data tokens at the start of a sequence, one per
position, after a delimiter at the end. The evidence of each output is known (the data token it
copies, a different position for each output), so it tests whether an explanation follows the
explained output through the state; load it with
`captum_mamba.evaluation.synthetic.copying.load_copying_model({loader})`.

- Task (`captum_mamba.evaluation.synthetic.tasks.copying_batch`, `copy_length={metrics["copy_length"]}`): vocabulary 16;
  `[d0, d1, d2, d3, BLANK (id 1)..., DELIMITER (id 0), BLANK, BLANK, BLANK]`, data drawn uniformly from
  ids 2-15, generated on the fly (seeded; no data set); the outputs at the delimiter and the three
  positions after it are `d0 ... d3`.
{model}
- Training (`copying.train_copying`): seed {metrics["seed"]}, 1 CPU thread, float32; {metrics["steps"]} steps of AdamW
  (lr {metrics["lr"]}, one-cycle schedule, weight decay 0.01, batch {metrics["batch_size"]}, gradient clipping 1.0), loss on
  the {metrics["copy_length"]} outputs only, one length per batch drawn uniformly from {low}-{high}; {metrics["train_seconds"]:.0f} s
  on the development machine (2 cores shared with other jobs; the time varies with the load), final
  loss {metrics["final_loss"]:.4f}.
- Code: commit `{record["commit"]}` (clean tree: {record["dirty"] is False}); torch {record["torch"]},
  transformers {record["transformers"]}, Python {record["python"]}.

## Held-out accuracy (256 fresh sequences per length, seed 1234)

| length | token accuracy | sequence copied whole |
|---|---|---|
{rows}

Trained on at most {high} tokens.
{top1_text}
## Reproduce

```
{metrics["command"]}
```

With one thread the weights are bit-identical across runs on the same software versions.
"""
    path = out / "MODEL_CARD.md"
    path.write_text(text, encoding="utf-8")
    return path


def train_and_save(
    out: str | Path | None = None,
    steps: int = 600,
    seed: int = 0,
    report_n: int = 50,
    command: str | None = None,
    architecture: str = "mamba",
) -> dict:
    r"""
    Train, measure and save a copying model, then print the top-1 report: ``captum-mamba train copying``.

    Writes ``config.json``, ``model.safetensors``, ``metrics.json`` (held-out accuracy by length,
    the top-1 report, the command and a provenance record naming the commit) and ``MODEL_CARD.md``.

    Args:
        out (str or Path, optional): output folder. Default: the shipped model's folder of
                    ``architecture`` (:func:`copying_assets`)
        steps (int, optional): optimiser steps. Default: 600
        seed (int, optional): seed of the training. Default: 0
        report_n (int, optional): sequences of the top-1 report (0: none). Default: 50
        command (str, optional): the command line recorded in ``metrics.json``.
                    Default: the ``captum-mamba train copying`` command with every option spelled out
        architecture (str, optional): one of :data:`~.causal_lm.ARCHITECTURES`. Default: ``"mamba"``

    Returns:
        *dict*: the metrics written to ``OUT/metrics.json``.

    Raises:
        UntraceableResultError: writing a shipped model's folder from a tree with uncommitted
            changes (checked before training).
    """
    out = copying_assets(architecture) if out is None else Path(out)
    return train_measure_save(
        "copying",
        out,
        steps,
        seed,
        report_n,
        train=lambda steps, seed: train_copying(steps=steps, seed=seed, architecture=architecture),
        measure=lambda model: {
            "accuracy_by_length": {length: copying_accuracy(model, length) for length in ACCURACY_LENGTHS},
            "copy_length": COPY_LENGTH,
            "train_lengths": list(TRAIN_LENGTHS),
            "batch_size": TRAIN_BATCH_SIZE,
            "lr": TRAIN_LR,
        },
        top1=lambda model, n: copying_top1(model, n=n),
        command=command,
        architecture=architecture,
        shipped=[copying_assets(name) for name in ARCHITECTURES],
        card=write_model_card,
    )
