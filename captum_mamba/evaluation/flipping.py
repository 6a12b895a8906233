"""Token-flipping faithfulness: MoRF / LeRF perturbation curves, their areas, ΔA^F and ΔA^I.

An explanation orders the tokens of an input. *Deletion* (flipping) replaces tokens in that order
and records the explained output after each step: removing the most relevant tokens first
(MoRF) should make the output drop fast, removing the least relevant first (LeRF) should keep it.
The main metric of the MambaLRP paper is

    ΔA^F = A_LeRF - A_MoRF        (higher is better),

the areas being those under the two deletion curves. *Insertion* starts from the fully replaced
input and puts tokens back in the same orders: ΔA^I = A_MoRF - A_LeRF of the insertion curves.
With one replacement for both, inserting the k most relevant tokens is the same input as
deleting the n - k least relevant ones, so ΔA^I equals ΔA^F exactly; give insertion a baseline
of its own (``insertion_replacement``, e.g. the mean embedding while deletion uses zeros) to make
ΔA^I a second, independent measurement.

Conventions here: the curve is the explained *logit* (``score="logit"``, default; or the
class probability with ``score="probability"``) against the fraction of real tokens changed,
``0, 1/steps, ..., 1``; step ``k`` changes ``round(k / steps * n)`` of an example's ``n`` real
tokens (``steps=None``: one token per step, ``steps = n``). Areas are trapezoidal over the
fraction axis ``[0, 1]``, i.e. the mean output along the curve, so inputs of different lengths
weigh alike. Tokens are ordered by signed relevance (largest first for MoRF); padding positions
are never changed, nor those held fixed (``changeable``, e.g. a causal LM's explained position). A token is removed by replacing its embedding with the ``replacement``
(the zero vector by default, the embedding of a given token id such as ``[PAD]`` / ``[UNK]``, or
the mean embedding of the vocabulary).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Replacement = Literal["zero", "mean"] | int | Tensor
Score = Literal["logit", "probability"]


@dataclass
class FlippingResult:
    r"""
    Per-example faithfulness of one explanation method.

    Args:
        fractions (list[float]): the x-axis of the curves (``steps + 1`` points).
        morf (Tensor): deletion curves, most relevant first, ``(batch, steps + 1)``.
        lerf (Tensor): deletion curves, least relevant first.
        morf_insertion (Tensor): insertion curves, most relevant first.
        lerf_insertion (Tensor): insertion curves, least relevant first.
    """

    fractions: list[float]
    morf: Tensor
    lerf: Tensor
    morf_insertion: Tensor
    lerf_insertion: Tensor

    def area(self, curves: Tensor) -> Tensor:
        """Trapezoidal area of each curve over the fraction axis ``[0, 1]``."""
        return torch.trapezoid(curves, torch.tensor(self.fractions, dtype=curves.dtype, device=curves.device), dim=-1)

    @property
    def delta_af(self) -> Tensor:
        """ΔA^F = A_LeRF - A_MoRF of the deletion curves, per example (higher is better)."""
        return self.area(self.lerf) - self.area(self.morf)

    @property
    def delta_ai(self) -> Tensor:
        """ΔA^I = A_MoRF - A_LeRF of the insertion curves, per example (higher is better)."""
        return self.area(self.morf_insertion) - self.area(self.lerf_insertion)

    def summary(self) -> dict[str, float]:
        """Means (and standard errors) over the examples."""
        result = {"n": int(self.morf.shape[0])}
        for name, values in (("delta_af", self.delta_af), ("delta_ai", self.delta_ai)):
            values = values.double()
            result[name] = float(values.mean())
            result[f"{name}_sem"] = float(values.std() / values.numel() ** 0.5) if values.numel() > 1 else 0.0
        for name in ("morf", "lerf", "morf_insertion", "lerf_insertion"):
            result[f"area_{name}"] = float(self.area(getattr(self, name)).double().mean())
        return result

    def to_json(self) -> str:
        """Curves (mean over examples) and the summary, as JSON."""
        curves = {k: v.double().mean(0).tolist() for k, v in asdict(self).items() if isinstance(v, Tensor)}
        return json.dumps({"fractions": self.fractions, "mean_curves": curves, **self.summary()})

    @staticmethod
    def concatenate(results: list[FlippingResult]) -> FlippingResult:
        """Stack the examples of several results with the same fractions."""
        if len({tuple(r.fractions) for r in results}) != 1:
            raise ValueError("results with different fraction grids cannot be concatenated")
        curves = {
            k: torch.cat([getattr(r, k) for r in results]) for k in ("morf", "lerf", "morf_insertion", "lerf_insertion")
        }
        return FlippingResult(fractions=results[0].fractions, **curves)


def replacement_vector(embedding: nn.Embedding, replacement: Replacement | str) -> Tensor:
    r"""
    The embedding that stands for a removed token.

    Args:
        embedding (nn.Embedding): the model's input embeddings.
        replacement (str, int or Tensor): ``"zero"``, ``"mean"`` (mean over the vocabulary), a
                    token id (e.g. the pad or unk id) or a vector ``(hidden,)``.

    Returns:
        *Tensor* ``(hidden,)``.
    """
    weight = embedding.weight.detach()
    if isinstance(replacement, Tensor):
        if replacement.shape != weight.shape[1:]:
            raise ValueError(
                f"a replacement vector must have shape {tuple(weight.shape[1:])}, got {tuple(replacement.shape)}"
            )
        return replacement.to(weight)
    if replacement == "zero":
        return torch.zeros_like(weight[0])
    if replacement == "mean":
        return weight.mean(0)
    if isinstance(replacement, str) and replacement.isdigit():
        replacement = int(replacement)
    if isinstance(replacement, int) and not isinstance(replacement, bool):
        if not 0 <= replacement < weight.shape[0]:
            raise ValueError(f"replacement token id {replacement} is outside the vocabulary (size {weight.shape[0]})")
        return weight[replacement]
    raise ValueError(f"replacement must be 'zero', 'mean', a token id or a vector, got {replacement!r}")


def _orders(scores: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Positions by decreasing (MoRF) and increasing (LeRF) score; padding last in both."""
    low, high = torch.finfo(scores.dtype).min, torch.finfo(scores.dtype).max
    morf = torch.where(mask, scores, torch.full_like(scores, low)).argsort(dim=1, descending=True, stable=True)
    lerf = torch.where(mask, scores, torch.full_like(scores, high)).argsort(dim=1, stable=True)
    return morf, lerf


def _changed_masks(order: Tensor, counts: Tensor, length: int) -> Tensor:
    """``(batch, points, length)``: True where a position is among the first ``counts`` of ``order``."""
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(length, device=order.device).expand_as(order))
    return ranks[:, None, :] < counts[:, :, None]


@torch.no_grad()
def flipping_curves(
    forward: Callable[[Tensor, Tensor | None], Tensor],
    embeds: Tensor,
    scores: Tensor,
    target: Tensor | int,
    attention_mask: Tensor | None = None,
    replacement: Tensor | None = None,
    steps: int | None = 10,
    score: Score = "logit",
    batch_size: int = 256,
    progress: bool = False,
    insertion_replacement: Tensor | None = None,
    changeable: Tensor | None = None,
) -> FlippingResult:
    r"""
    MoRF / LeRF deletion and insertion curves for precomputed token scores (from any method).

    Args:
        forward (Callable): ``forward(embeds, attention_mask) -> (batch, classes)`` logits, e.g.
                    :class:`~captum_mamba.evaluation.ExplainedLogits`.
        embeds (Tensor): ``(batch, length, hidden)`` input embeddings.
        scores (Tensor): ``(batch, length)`` token relevances (signed; larger = more relevant).
        target (Tensor or int): the explained class per example (or one for all).
        attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens.
        replacement (Tensor, optional): ``(hidden,)`` embedding of a removed token. Default: zeros
        steps (int, optional): points of the fraction grid minus one; ``None``: one token per
                    step (needs examples of equal real length). Default: 10
        score (str, optional): ``"logit"`` or ``"probability"`` of the target. Default: "logit"
        batch_size (int, optional): perturbed inputs per forward call. Default: 256
        progress (bool, optional): show a tqdm progress bar if tqdm is installed. Default: False
        insertion_replacement (Tensor, optional): ``(hidden,)`` embedding of a not yet inserted
                    token on the insertion curves. Default: ``replacement`` (then ΔA^I = ΔA^F)
        changeable (Tensor, optional): ``(batch, length)`` booleans, the tokens that may be
                    replaced; the others are held as they are on every curve and do not count in
                    the fractions (e.g. a causal LM's explained position). Default: every real token

    Returns:
        *FlippingResult*.
    """
    fractions, curves = _curves(
        forward,
        embeds,
        scores,
        target,
        attention_mask,
        replacement,
        steps,
        score,
        batch_size,
        progress,
        insertion_replacement=insertion_replacement,
        insertion=True,
        changeable=changeable,
    )
    return FlippingResult(fractions, morf=curves[0], morf_insertion=curves[1], lerf=curves[2], lerf_insertion=curves[3])


@torch.no_grad()
def deletion_curves(
    forward: Callable[[Tensor, Tensor | None], Tensor],
    embeds: Tensor,
    scores: Tensor,
    target: Tensor | int,
    attention_mask: Tensor | None = None,
    replacement: Tensor | None = None,
    steps: int | None = 10,
    score: Score = "logit",
    batch_size: int = 256,
    progress: bool = False,
    changeable: Tensor | None = None,
) -> tuple[list[float], Tensor, Tensor]:
    r"""
    The MoRF / LeRF deletion curves of :func:`flipping_curves` alone (half the forward calls).

    Args: as :func:`flipping_curves` (without ``insertion_replacement``).

    Returns:
        *tuple* ``(fractions, morf, lerf)``: the fraction grid and the two ``(batch, steps + 1)``
        curves, equal to :func:`flipping_curves`'s ``morf`` and ``lerf``.
    """
    fractions, (morf, lerf) = _curves(
        forward,
        embeds,
        scores,
        target,
        attention_mask,
        replacement,
        steps,
        score,
        batch_size,
        progress,
        insertion_replacement=None,
        insertion=False,
        changeable=changeable,
    )
    return fractions, morf, lerf


def _curves(
    forward: Callable[[Tensor, Tensor | None], Tensor],
    embeds: Tensor,
    scores: Tensor,
    target: Tensor | int,
    attention_mask: Tensor | None,
    replacement: Tensor | None,
    steps: int | None,
    score: Score,
    batch_size: int,
    progress: bool,
    insertion_replacement: Tensor | None,
    insertion: bool,
    changeable: Tensor | None = None,
) -> tuple[list[float], list[Tensor]]:
    """The fraction grid and the curves: MoRF deletion, [MoRF insertion,] LeRF deletion, [LeRF insertion]."""
    if score not in ("logit", "probability"):
        raise ValueError(f"score must be 'logit' or 'probability', got {score!r}")
    batch, length, _ = embeds.shape
    if scores.shape != (batch, length):
        raise ValueError(f"scores must have shape {(batch, length)}, got {tuple(scores.shape)}")
    mask = (
        torch.ones(batch, length, dtype=torch.bool, device=embeds.device)
        if attention_mask is None
        else attention_mask.bool()
    )
    if changeable is not None:
        if changeable.shape != (batch, length):
            raise ValueError(f"changeable must have shape {(batch, length)}, got {tuple(changeable.shape)}")
        mask = mask & changeable.to(device=embeds.device, dtype=torch.bool)
    real = mask.sum(1)
    if steps is None:
        if (real != real[0]).any():
            raise ValueError(
                "steps=None (one token per step) needs inputs of equal real length; give a number of steps"
            )
        steps = int(real[0])
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    fractions = [k / steps for k in range(steps + 1)]
    counts = torch.round(torch.tensor(fractions, device=embeds.device)[None, :] * real[:, None]).long()
    target = torch.as_tensor(target, device=embeds.device).long().expand(batch)
    filler = torch.zeros_like(embeds[0, 0]) if replacement is None else replacement.to(embeds)
    insertion_filler = filler if insertion_replacement is None else insertion_replacement.to(embeds)
    if filler.shape != embeds.shape[-1:] or insertion_filler.shape != embeds.shape[-1:]:
        raise ValueError(f"replacement vectors must have shape ({embeds.shape[-1]},)")
    morf_order, lerf_order = _orders(scores.to(embeds.device).double(), mask)

    jobs = []
    for order in (morf_order, lerf_order):
        changed = _changed_masks(order, counts, length)
        jobs.append((changed, filler))  # deletion: the first k positions replaced
        if insertion:
            jobs.append((~changed & mask[:, None, :], insertion_filler))  # insertion: all but the first k replaced
    curves = [
        _evaluate(forward, embeds, attention_mask, changed, fill, target, score, batch_size, progress)
        for changed, fill in jobs
    ]
    return fractions, curves


def _evaluate(
    forward: Callable[[Tensor, Tensor | None], Tensor],
    embeds: Tensor,
    attention_mask: Tensor | None,
    changed: Tensor,
    filler: Tensor,
    target: Tensor,
    score: Score,
    batch_size: int,
    progress: bool,
) -> Tensor:
    batch, points, length = changed.shape
    flat_changed = changed.reshape(batch * points, length)
    example = torch.arange(batch, device=embeds.device).repeat_interleave(points)
    outputs = []
    starts = range(0, batch * points, batch_size)
    for start in _progress(starts, progress):
        rows = example[start : start + batch_size]
        replaced = torch.where(flat_changed[start : start + batch_size, :, None], filler, embeds[rows])
        mask = None if attention_mask is None else attention_mask[rows]
        logits = forward(replaced, mask)
        values = logits.softmax(-1) if score == "probability" else logits
        outputs.append(values.gather(1, target[rows][:, None])[:, 0])
    return torch.cat(outputs).view(batch, points).float()


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc="token flipping", leave=False)


def evaluate_method(
    method: str,
    model: nn.Module,
    input_ids: Tensor,
    target: Tensor | int,
    attention_mask: Tensor | None = None,
    replacement: Replacement = "zero",
    steps: int | None = 10,
    score: Score = "logit",
    batch_size: int = 256,
    insertion_replacement: Replacement | None = None,
) -> tuple[FlippingResult, Tensor]:
    r"""
    Explain with a registered method (see :data:`~captum_mamba.evaluation.METHODS`) and flip.

    Returns:
        *tuple* ``(FlippingResult, scores)`` with the token scores ``(batch, length)``.
    """
    from captum_mamba.evaluation.methods import ExplainedLogits, token_attributions

    scores = token_attributions(method, model, input_ids, target, attention_mask)
    embedding = model.get_input_embeddings()
    embeds = embedding(input_ids).detach()
    filler = replacement_vector(embedding, replacement)
    insertion_filler = None if insertion_replacement is None else replacement_vector(embedding, insertion_replacement)
    result = flipping_curves(
        ExplainedLogits(model),
        embeds,
        scores,
        target,
        attention_mask,
        filler,
        steps,
        score,
        batch_size,
        insertion_replacement=insertion_filler,
    )
    return result, scores
