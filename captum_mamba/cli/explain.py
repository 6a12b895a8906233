"""``captum-mamba explain``: explain the embedded sentiment model's predictions (``--model hybrid``: the
shipped hybrid's, with the relevance split across its layers and layer kinds)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from captum_mamba.cli.errors import UsageError, output_folder, positive_int

if TYPE_CHECKING:
    from torch import Tensor, nn

DEFAULT_MAX_TOKENS = 128
"""Tokens explained per sentence unless ``--max-tokens`` says otherwise (longer ones are cut, with a warning)."""


@dataclass
class SentenceExplanation:
    """MambaLRP explanation of one sentence by the default classifier."""

    text: str
    tokens: list[str]
    relevances: list[float]
    predicted: str
    explained: str
    probability: float
    logit: float
    convergence_delta: float
    truncated: bool = False
    """Whether the sentence had more tokens than ``max_tokens`` (only the first ones are explained)."""
    original_tokens: int | None = None
    """The sentence's length in tokens before any truncation."""
    layer_split: list[dict] | None = None
    """For models with several layer kinds (the hybrid): per mixer, attention and MLP, ``{"module",
    "layer", "kind", "relevance"}``, the share of the explained logit flowing through its update
    (:func:`captum_mamba.relevance_split.relevance_split`); ``None`` otherwise."""


def parse_target(target: str | int, labels: Sequence[str]) -> int:
    r"""
    The class index named by ``target``: a label (any case) or an index.

    Args:
        target (str or int): e.g. ``"positive"``, ``"NEGATIVE"``, ``"1"`` or ``1``.
        labels (Sequence[str]): the class labels, in index order.

    Returns:
        *int*: the index; a ``ValueError`` listing the valid labels and indices for anything else.
    """
    lowered = [label.lower() for label in labels]
    text = str(target).strip()
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(labels):
        return int(text)
    raise ValueError(
        f"unknown target {str(target)!r}; give a label ({', '.join(labels)}, any case) "
        f"or an index from 0 to {len(labels) - 1}"
    )


def explain_sentences(
    texts: Sequence[str],
    target: str | None = None,
    float64: bool = False,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    model: str = "default",
) -> list[SentenceExplanation]:
    r"""
    Explain an embedded sentiment classifier on ``texts`` with MambaLRP (AttnLRP for attention).

    Args:
        texts (Sequence[str]): the sentences.
        target (str, optional): class to explain (``"positive"``/``"negative"`` in any case, or
                    its index); default: each sentence's predicted class.
        float64 (bool, optional): run in ``float64`` (exact conservation). Default: False
        max_tokens (int, optional): tokens explained per sentence; longer sentences are cut and
                    marked ``truncated`` (with ``original_tokens``). Default: 128
        model (str, optional): ``"default"`` (the Mamba model) or ``"hybrid"`` (the Bamba model;
                    each explanation then has its ``layer_split``). Default: "default"

    Returns:
        *list[SentenceExplanation]*: one per sentence.
    """
    import torch

    from captum_mamba.default import LABELS, encode, load_default_classifier
    from captum_mamba.layer_mamba_lrp import LayerMambaLRP

    texts = [t.strip() for t in texts]
    if not texts or any(not t for t in texts):
        raise ValueError("every sentence to explain must contain text")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    index = None if target is None else parse_target(target, LABELS)
    variant = model
    model, tokenizer = load_default_classifier(dtype=torch.float64 if float64 else torch.float32, variant=variant)
    lengths = [len(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))]
    input_ids, mask = encode(tokenizer, list(texts), max_length=max_tokens)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits
    predicted = logits.argmax(-1)
    targets = predicted if index is None else torch.full_like(predicted, index)
    explainer = LayerMambaLRP(model, model.get_input_embeddings())
    relevance, delta = explainer.attribute(
        input_ids, target=targets, additional_forward_args=mask, return_convergence_delta=True
    )
    splits = _layer_splits(model, input_ids, mask, targets)
    per_token = relevance.sum(-1)
    explained_logit = per_token.sum(-1) - delta  # the logit as the explanation computed it (delta's definition)
    probabilities = logits.softmax(-1)
    results = []
    for row, text in enumerate(texts):
        length = int(mask[row].sum())
        ids = input_ids[row, :length].tolist()
        results.append(
            SentenceExplanation(
                text=text,
                tokens=[tokenizer.id_to_token(i) for i in ids],
                relevances=per_token[row, :length].tolist(),
                predicted=LABELS[int(predicted[row])],
                explained=LABELS[int(targets[row])],
                probability=float(probabilities[row, targets[row]]),
                logit=float(explained_logit[row]),
                convergence_delta=float(delta[row]),
                truncated=lengths[row] > max_tokens,
                original_tokens=lengths[row],
                layer_split=None if splits is None else splits[row],
            )
        )
    return results


def _layer_splits(model: nn.Module, input_ids: Tensor, mask: Tensor, targets: Tensor) -> list[list[dict]] | None:
    """Per sentence, the relevance through each mixer, attention and MLP (None for one layer kind)."""
    from captum_mamba.mamba_lrp import MambaLRP
    from captum_mamba.relevance_split import model_layer_kinds, relevance_split

    explainer = MambaLRP(model)
    if len(model_layer_kinds(explainer)) < 2:
        return None
    embeds = model.get_input_embeddings()(input_ids).detach()
    rows = relevance_split(explainer, embeds, target=targets, additional_forward_args=mask)
    return [
        [{"module": r.module, "layer": r.layer, "kind": r.kind, "relevance": float(r.relevance[i])} for r in rows]
        for i in range(input_ids.shape[0])
    ]


def _print(result: SentenceExplanation) -> None:
    print(f'"{result.text}"')
    print(
        f"  prediction: {result.predicted}; explaining '{result.explained}' "
        f"(p = {result.probability:.3f}, logit = {result.logit:+.4f}); "
        f"sum of relevances = {sum(result.relevances):+.4f} (convergence delta {result.convergence_delta:+.1e})"
    )
    for token, value in zip(result.tokens, result.relevances):
        bar = ("+" if value >= 0 else "-") * min(30, int(round(abs(value) * 20)))
        print(f"    {token:>16s} {value:+.4f} {bar}")
    if result.layer_split:
        print("  relevance through each layer's update (share of the explained logit; the rest passes the skip):")
        totals: dict[str, float] = {}
        for row in result.layer_split:
            totals[row["kind"]] = totals.get(row["kind"], 0.0) + row["relevance"]
            share = row["relevance"] / result.logit if result.logit else float("nan")
            print(
                f"    layer {row['layer']} {row['kind']:>9s} {row['module']:<32s} {row['relevance']:+.4f} ({share:.1%})"
            )
        print("  by kind: " + ", ".join(f"{kind} {value:+.4f}" for kind, value in totals.items()))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``explain``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``explain``.
    """
    parser = subparsers.add_parser(
        "explain", help="explain the embedded sentiment model on sentences (default: built-in samples)"
    )
    parser.add_argument("sentences", nargs="*", help="sentences to explain")
    parser.add_argument(
        "--model",
        choices=("default", "hybrid"),
        default="default",
        help="the shipped classifier: default (Mamba) or hybrid (Bamba: Mamba-2 + attention; also prints the "
        "relevance through each layer and layer kind) (default: default)",
    )
    parser.add_argument(
        "--target", help="class to explain: positive, negative (any case), 0 or 1 (default: the predicted class)"
    )
    parser.add_argument(
        "--out", default="explanation", help="output folder for heatmap.png/.html (default: explanation)"
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens explained per sentence; longer ones are cut, with a warning (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument("--float64", action="store_true", help="compute in float64 (exact conservation)")
    return parser


def run(args: argparse.Namespace) -> int:
    r"""
    Explain the sentences, print the relevances, write ``heatmap.png``, ``heatmap.html`` and
    ``relevances.json``.

    Args:
        args (argparse.Namespace): the parsed options of ``explain``.

    Returns:
        *int*: 0; a bad sentence, target or ``--out`` raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    from captum_mamba.default import SAMPLE_SENTENCES
    from captum_mamba.visualization import TokenExplanation, heatmap_html, save_heatmap

    texts = args.sentences or SAMPLE_SENTENCES
    out = output_folder(args.out)
    try:
        results = explain_sentences(
            texts, target=args.target, float64=args.float64, max_tokens=args.max_tokens, model=args.model
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    for result in results:
        if result.truncated:
            print(
                f"warning: {result.text[:40]!r}... has {result.original_tokens} tokens; explaining the first "
                f"{args.max_tokens} (raise --max-tokens to explain more)",
                file=sys.stderr,
            )
        _print(result)
    rendered = [
        TokenExplanation(
            r.tokens,
            r.relevances,
            title=f"{r.text}  ->  {r.predicted} (explaining {r.explained}, p = {r.probability:.2f})",
            subtitle=f"logit {r.logit:+.3f}; sum of relevances {sum(r.relevances):+.3f}",
        )
        for r in results
    ]
    png = save_heatmap(rendered, out / "heatmap.png")
    page = out / "heatmap.html"
    title = (
        "MambaLRP: default sentiment model" if args.model == "default" else f"MambaLRP: {args.model} sentiment model"
    )
    page.write_text(heatmap_html(rendered, title), encoding="utf-8")
    (out / "relevances.json").write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    print(f"wrote {png}, {page} and {out / 'relevances.json'}")
    return 0
