"""``captum-mamba evaluate``: faithfulness, conservation and bias on the default model's held-out set
(``--model hybrid``: the shipped hybrid's), the image evaluation of the shipped Vision Mamba models
(``evaluate images``) and the known-truth evaluation of the shipped copying LMs (``evaluate copying``).

Methods that cannot explain the chosen model (the rollouts over Mamba-1's hidden attention on the
hybrid) are refused with a usage error when asked for by name; in the default method list they are
left out, and the report names them with the reason (``"not_applicable"`` in the JSON, a note under
the Markdown table)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from captum_mamba.cli.errors import UsageError, output_folder, positive_int, replacement, unknown_names

if TYPE_CHECKING:
    import torch


def _check_methods(names: list[str]) -> None:
    """Refuse unknown method names before loading anything (UsageError listing the known ones)."""
    from captum_mamba.evaluation.methods import METHODS

    error = unknown_names("attribution method", names, sorted(METHODS))
    if error is not None:
        raise error


MODEL_CHOICES: tuple[str, ...] = ("default", "hybrid")
"""The shipped text classifiers ``--model`` chooses from (the variants of ``load_default_classifier``)."""

DATASET = "Rotten Tomatoes held-out split (seed 0)"


def _held_out(limit: int | None, variant: str = "default") -> tuple[list[str], list[torch.Tensor], object, object]:
    import torch

    from captum_mamba.default import load_default_classifier
    from captum_mamba.default.data import split_rotten_tomatoes

    _, test = split_rotten_tomatoes(seed=0, test_fraction=0.1)
    texts = [text for text, _ in test][: limit or None]
    model, tokenizer = load_default_classifier(variant=variant)
    ids = [torch.tensor(e.ids[:128] or [1]) for e in tokenizer.encode_batch(texts)]
    return texts, ids, model, tokenizer


def _applicable(methods: list[str], model: object, chosen: bool) -> tuple[list[str], dict[str, str]]:
    r"""
    The methods to run on ``model`` and those left out with the reason.

    A method that cannot explain the model is a usage error when the user named it (``chosen``);
    from the default list it is left out and reported.
    """
    from captum_mamba.evaluation.methods import get_method

    reasons = {name: reason for name in methods if (reason := get_method(name).why_unsupported(model))}
    if reasons and chosen:
        listing = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        raise UsageError(f"{listing}. Leave these out of --methods")
    for name, reason in reasons.items():
        print(f"not running {name} (not applicable): {reason}", file=sys.stderr, flush=True)
    return [name for name in methods if name not in reasons], reasons


def _stem(kind: str, args: argparse.Namespace) -> str:
    """The output files' stem: ``faithfulness_default``, ``faithfulness_hybrid``, ..."""
    return f"{kind}_{args.model}"


def _model_name(variant: str) -> str:
    from captum_mamba.default import VARIANT_NAMES

    return VARIANT_NAMES[variant]


def _note(report: dict) -> str:
    """Markdown lines naming the methods left out as not applicable (empty when none)."""
    skipped = report.get("not_applicable") or {}
    if not skipped:
        return ""
    lines = ["", "Not applicable to this model (not run):"]
    lines += [f"- `{name}`: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines) + "\n"


class _MethodRun(NamedTuple):
    """What the method evaluations share: the methods that apply, the skipped ones, the report's place, the data."""

    methods: list[str]
    skipped: dict[str, str]
    out: Path
    stem: str
    ids: list[torch.Tensor]
    model: object


def _method_run(kind: str, args: argparse.Namespace) -> _MethodRun:
    """Check the methods, refuse an untraceable destination up front, load the held-out data and model."""
    from captum_mamba.evaluation.report import DEFAULT_EVALUATION_METHODS

    methods = list(DEFAULT_EVALUATION_METHODS) if args.methods is None else args.methods
    _check_methods(methods)
    out = output_folder(args.out)
    stem = _stem(kind, args)
    _refuse_untraceable(out / f"{stem}.json")
    _, ids, model, _ = _held_out(args.limit, args.model)
    methods, skipped = _applicable(methods, model, args.methods is not None)
    return _MethodRun(methods, skipped, out, stem, ids, model)


def _command(args: argparse.Namespace) -> str:
    """The command line recorded in a report."""
    return "captum-mamba " + shlex.join(args.argv) if args.command_line is None else args.command_line


def _write_report(run: _MethodRun, report: dict, markdown: Callable[[dict], str]) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` (with the not-applicable note) and print the table."""
    from captum_mamba.evaluation.report import write_json

    if run.skipped:
        report["not_applicable"] = run.skipped
    write_json(report, run.out / f"{run.stem}.json")
    text = markdown(report) + _note(report)
    (run.out / f"{run.stem}.md").write_text(text, encoding="utf-8")
    print(text)


def _faithfulness(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.report import (
        evaluate_faithfulness,
        faithfulness_table,
        markdown_table,
        plot_faithfulness,
    )

    run = _method_run("faithfulness", args)
    vocabulary = run.model.get_input_embeddings().num_embeddings
    for option, value in (("--replacement", args.replacement), ("--insertion-replacement", args.insertion_replacement)):
        if value is not None and value.isdigit() and int(value) >= vocabulary:
            raise UsageError(
                f"{option} {value} is not a token id of the model (0 to {vocabulary - 1}); give a smaller id"
            )
    print(
        f"faithfulness of {len(run.methods)} methods on {len(run.ids)} held-out sentences ({args.model} model)",
        file=sys.stderr,
        flush=True,
    )
    results, seconds = evaluate_faithfulness(
        run.model,
        run.ids,
        run.methods,
        steps=args.steps,
        replacement=args.replacement,
        insertion_replacement=args.insertion_replacement,
        progress=True,
    )
    report = faithfulness_table(results, seconds, _command(args), DATASET, model=_model_name(args.model))
    _write_report(run, report, markdown_table)
    plot_faithfulness(report, run.out / f"{run.stem}.png")
    print(f"wrote {run.out}/{run.stem}.json, .md and .png")
    return 0


def _refuse_untraceable(path: object) -> None:
    """Refuse a destination under benchmarks/results/ from a dirty tree before the computation, not after it."""
    from captum_mamba.evaluation.provenance import UntraceableResultError, check_destination

    try:
        check_destination(path)
    except UntraceableResultError as refusal:
        raise UsageError(f"{refusal} Or give --out a folder outside benchmarks/results/") from None


def _conservation(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.report import conservation_points, plot_conservation, write_json

    out = output_folder(args.out)
    stem = _stem("conservation", args)
    _refuse_untraceable(out / f"{stem}.json")
    _, ids, model, _ = _held_out(args.limit, args.model)
    points = conservation_points(model.double(), ids)
    write_json(points, out / f"{stem}.json")
    plot_conservation(points, out / f"{stem}.png", f"{args.model} model, held-out set (n = {len(ids)}), float64")
    for method, pairs in points.items():
        print(f"{method}: mean |sum R - logit| = {sum(abs(s - x) for x, s in pairs) / len(pairs):.4f}")
    print(f"wrote {out}/{stem}.png and .json")
    return 0


def _bias(args: argparse.Namespace) -> int:
    from captum_mamba.default import LABELS
    from captum_mamba.evaluation.report import top_tokens_by_class, word_list_share, write_json

    _check_methods([args.method])
    out = output_folder(args.out)
    stem = _stem("bias", args)
    _refuse_untraceable(out / f"{stem}.json")
    _, ids, model, tokenizer = _held_out(args.limit, args.model)
    _applicable([args.method], model, True)
    counts = top_tokens_by_class(model, ids, tokenizer.id_to_token, method=args.method, k=args.k)
    shares = word_list_share(counts, args.words)
    document = {
        "model": _model_name(args.model),
        "method": args.method,
        "k": args.k,
        "words": args.words,
        "share_of_top_k": {LABELS[c]: s for c, s in shares.items()},
        "top_tokens": {LABELS[c]: counter.most_common(25) for c, counter in counts.items()},
    }
    write_json(document, out / f"{stem}.json")
    for label, counter in sorted(counts.items()):
        print(f"{LABELS[label]}: share of the word list {shares[label]:.4f}; top: {counter.most_common(12)}")
    return 0


def _eraser(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.eraser import eraser_markdown, eraser_table, evaluate_eraser

    run = _method_run("eraser", args)
    results, seconds = evaluate_eraser(
        run.model, run.ids, run.methods, removal=args.removal, replacement=args.replacement, progress=True
    )
    report = eraser_table(results, seconds, _command(args), DATASET, args.removal)
    report["model"] = _model_name(args.model)
    _write_report(run, report, eraser_markdown)
    print(f"wrote {run.out}/{run.stem}.json and .md")
    return 0


def _quantus(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.quantus_metrics import evaluate_quantus, quantus_markdown, quantus_table

    run = _method_run("quantus", args)
    results, seconds = evaluate_quantus(
        run.model,
        run.ids,
        run.methods,
        replacement=args.replacement,
        nr_runs=args.nr_runs,
        nr_samples=args.nr_samples,
        progress=True,
    )
    report = quantus_table(results, seconds, _command(args), DATASET)
    report["model"] = _model_name(args.model)
    _write_report(run, report, quantus_markdown)
    print(f"wrote {run.out}/{run.stem}.json and .md")
    return 0


IMAGE_TASK_NAMES: tuple[str, ...] = ("digits", "shapes")
"""The image tasks of ``evaluate images`` (those of ``captum_mamba.images.tasks.IMAGE_TASKS``)."""
DEFAULT_IMAGE_OUT = "benchmarks/results/images"


def _images(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.provenance import UntraceableResultError, check_destination
    from captum_mamba.images.methods import EVALUATED_IMAGE_METHODS, IMAGE_METHODS

    methods = list(EVALUATED_IMAGE_METHODS) if args.methods is None else args.methods
    error = unknown_names("image attribution method", methods, list(IMAGE_METHODS))
    if error is not None:
        raise error
    out = output_folder(args.out)
    stem = f"images_{args.task}"
    try:  # refuse an untraceable destination before the computation, not after it
        check_destination(out / f"{stem}.json")
    except UntraceableResultError as refusal:
        raise UsageError(f"{refusal} Or give --out a folder outside benchmarks/results/") from None

    from captum_mamba.images.evaluation import evaluate_images, image_markdown, image_table, write_image_report
    from captum_mamba.images.tasks import IMAGE_TASKS, class_names, load_image_model, sample_images

    if args.task not in IMAGE_TASKS:
        raise UsageError(f"unknown image task {args.task!r}; choose from {', '.join(IMAGE_TASKS)}")
    model = load_image_model(args.task).eval()
    split = sample_images(args.task, args.n)
    count = int(split.images.shape[0])
    print(f"image evaluation of {len(methods)} methods on {count} {args.task} images", file=sys.stderr, flush=True)
    evaluation = evaluate_images(
        model,
        split,
        methods,
        steps=args.steps,
        batch_size=args.batch_size,
        explained=args.explain,
        keep=min(args.examples, count),
        progress=True,
    )
    command = _command(args)
    dataset = f"{args.task}: {count} images of sample_images({args.task!r}, {args.n})"
    write_image_report(evaluation, out, stem, command, dataset, split.denormalise, class_names(args.task))
    print(image_markdown(image_table(evaluation, command, dataset)))
    print(f"wrote {out}/{stem}.json, {stem}.md and {stem}_heatmaps.png")
    return 0


COPYING_ARCHITECTURES: tuple[str, ...] = ("mamba", "qwen3_5", "gated_deltanet")
"""The shipped copying models of ``evaluate copying`` and ``train copying``
(``captum_mamba.evaluation.synthetic.causal_lm.ARCHITECTURES``, listed here so that parsing imports no torch)."""


def _copying(args: argparse.Namespace) -> int:
    if args.methods is not None:
        _check_methods(args.methods)
    out = output_folder(args.out)
    stem = f"copying_{args.architecture}"
    _refuse_untraceable(out / f"{stem}.json")

    import torch

    from captum_mamba.evaluation.methods import METHODS, MethodNotApplicableError
    from captum_mamba.evaluation.report import write_json
    from captum_mamba.evaluation.synthetic.copying import (
        COPY_LENGTH,
        copying_evaluation,
        copying_markdown,
        load_copying_model,
    )

    if args.length < 2 * COPY_LENGTH + 1:
        raise UsageError(f"--length {args.length} is too short: give at least {2 * COPY_LENGTH + 1} tokens")
    torch.set_num_threads(args.threads)
    model = load_copying_model(torch.float64, architecture=args.architecture)
    try:
        report = copying_evaluation(
            model,
            args.methods,
            n=args.n,
            length=args.length,
            seed=args.seed,
            steps=args.steps,
            replacement=args.replacement,
            progress=True,
        )
    except MethodNotApplicableError as refusal:  # raised before any attribution
        raise UsageError(f"{refusal}. Leave these out of --methods") from None
    meta = report.pop("_model")
    command = _command(args)
    document = {
        "model": f"copying_{args.architecture}" if args.architecture != "mamba" else "copying",
        "architecture": type(model).__name__,
        "dataset": f"copying_batch({args.n}, {args.length}, seed {args.seed}, copy_length={COPY_LENGTH}): "
        f"{args.n * COPY_LENGTH} explained outputs, each on its sequence cut after it",
        "command": command,
        "dtype": "float64",
        "metric": "top-1 = source: share of outputs whose most relevant token (explained position excluded) is "
        "the data token they copy; ΔA^F = A_LeRF - A_MoRF of the copied token's logit under deletion of the tokens "
        f"before the explained position ({args.replacement} embedding, {args.steps} steps), areas over the fraction "
        "of those tokens changed, 0..1",
        "model_accuracy_on_these": meta["accuracy_on_these"],
        "n": args.n,
        "length": args.length,
        "seed": args.seed,
        "steps": args.steps,
        "replacement": args.replacement,
        "rows": [{"method": name, "label": METHODS[name].label, **row} for name, row in report.items()],
        **({"not_applicable": meta["not_applicable"]} if meta.get("not_applicable") else {}),
    }
    write_json(document, out / f"{stem}.json")
    text = (
        f"Copying model `{document['model']}` ({document['architecture']}), {document['dataset']} "
        f"(model token accuracy on them {meta['accuracy_on_these']:.3f}), float64. Command: `{command}`\n\n"
        + copying_markdown(report)
        + _note(document)
    )
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out}/{stem}.json and .md")
    return 0


GENDERED = ["he", "she", "him", "her", "his", "hers", "man", "woman", "men", "women", "boy", "girl", "actor", "actress"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``evaluate`` and its subcommands ``faithfulness``, ``conservation``, ``bias``, ``eraser``,
    ``quantus``, ``images`` and ``copying``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``evaluate``.
    """
    evaluate = subparsers.add_parser(
        "evaluate", help="evaluate explanations on the default (or hybrid) model's held-out set (or the image models)"
    )
    kinds = evaluate.add_subparsers(dest="evaluation", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--limit", type=positive_int, default=None, help="first N held-out sentences, N of 1 or more (default: all 853)"
    )
    common.add_argument("--out", default="evaluation", help="output folder, created if missing (default: evaluation)")
    common.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="default",
        help="the shipped classifier: default (Mamba) or hybrid (Bamba: Mamba-2 + attention); output files "
        "are named <evaluation>_<model> (default: default)",
    )

    faith = kinds.add_parser("faithfulness", parents=[common], help="token flipping: ΔA^F, ΔA^I per method, bar plot")
    faith.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names of captum_mamba.evaluation.METHODS (default: DEFAULT_EVALUATION_METHODS of "
        "captum_mamba.evaluation.report)",
    )
    faith.add_argument("--steps", type=positive_int, default=10, help="flipping steps (default 10)")
    faith.add_argument(
        "--replacement", type=replacement, default="zero", help="zero, mean or a token id (default zero)"
    )
    faith.add_argument(
        "--insertion-replacement",
        type=replacement,
        default=None,
        help="baseline of the insertion curves: zero, mean or a token id (default: --replacement, then ΔA^I = ΔA^F)",
    )
    faith.add_argument("--command-line", default=None, help=argparse.SUPPRESS)

    kinds.add_parser("conservation", parents=[common], help="sum of relevances vs logit, scatter PNG")

    bias = kinds.add_parser("bias", parents=[common], help="top-k relevant tokens per class, share of a word list")
    bias.add_argument("--words", nargs="+", default=GENDERED, help="word list (default: gendered words)")
    bias.add_argument(
        "--method", default="mamba_lrp", help="method name of captum_mamba.evaluation.METHODS (default: mamba_lrp)"
    )
    bias.add_argument("-k", type=positive_int, default=3, help="most relevant tokens counted per sentence (default 3)")
    _add_metric_parsers(kinds, common)
    _add_images_parser(kinds)
    _add_copying_parser(kinds)
    return evaluate


def _add_copying_parser(kinds: argparse._SubParsersAction) -> None:
    """The ``copying`` subcommand of ``evaluate`` (the shipped copying LMs; its own options)."""
    copying = kinds.add_parser(
        "copying",
        help="the shipped copying LMs (Mamba, Qwen3.5 hybrid or Gated DeltaNet): top-1 = copied source and token "
        "flipping (ΔA^F) per method",
        description="Explain each of the four outputs of the shipped copying model on generated sequences (the "
        "logit of the copied token, on the sequence cut after it): the share whose most relevant token is the "
        "copied source, and the MoRF / LeRF token-flipping curves of the same explanations. Writes "
        "copying_<architecture>.json and .md.",
    )
    copying.add_argument(
        "--architecture",
        choices=COPYING_ARCHITECTURES,
        default="mamba",
        help="mamba: assets/copying; qwen3_5: assets/copying_qwen3_5 (Gated DeltaNet + attention); gated_deltanet: "
        "assets/copying_gated_deltanet (Gated DeltaNets only) (default: mamba)",
    )
    copying.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names of captum_mamba.evaluation.METHODS (default: every one that applies to the model)",
    )
    copying.add_argument("--n", type=positive_int, default=50, help="generated sequences (default 50)")
    copying.add_argument("--length", type=positive_int, default=64, help="tokens per sequence, at least 9 (default 64)")
    copying.add_argument(
        "--seed", type=int, default=0, help="seed of the sequences and of SmoothGrad's noise (default 0)"
    )
    copying.add_argument("--steps", type=positive_int, default=10, help="flipping steps (default 10)")
    copying.add_argument(
        "--replacement", type=replacement, default="zero", help="zero, mean or a token id (default zero)"
    )
    copying.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    copying.add_argument("--out", default="evaluation", help="output folder, created if missing (default: evaluation)")
    copying.add_argument("--command-line", default=None, help=argparse.SUPPRESS)


def _add_images_parser(kinds: argparse._SubParsersAction) -> None:
    """The ``images`` subcommand of ``evaluate`` (its own options: no ``--limit``, another ``--out``)."""
    images = kinds.add_parser(
        "images",
        help="Vision Mamba image explanations: patch flipping (ΔA^F), pointing game and mass accuracy, heatmap grid",
    )
    images.add_argument("--task", required=True, choices=IMAGE_TASK_NAMES, help="the shipped image task")
    images.add_argument("--n", type=positive_int, default=64, help="images sampled from the task (default 64)")
    images.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names of captum_mamba.images.methods.IMAGE_METHODS (default: all: mamba_lrp, naive_lrp, "
        "input_x_gradient, integrated_gradients, smoothgrad, attention_rollout, random)",
    )
    images.add_argument(
        "--out",
        default=DEFAULT_IMAGE_OUT,
        help=f"output folder, created if missing (default: {DEFAULT_IMAGE_OUT}; needs a clean, committed tree)",
    )
    images.add_argument("--steps", type=positive_int, default=16, help="patch-flipping steps (default 16)")
    images.add_argument(
        "--explain",
        choices=("prediction", "label"),
        default="prediction",
        help="the class explained: the model's prediction or the true label (default prediction)",
    )
    images.add_argument("--batch-size", type=positive_int, default=16, help="images per attribution batch (default 16)")
    images.add_argument(
        "--examples", type=positive_int, default=4, help="rows (images) of the heatmap grid PNG (default 4)"
    )
    images.add_argument("--command-line", default=None, help=argparse.SUPPRESS)


def _add_metric_parsers(kinds: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``eraser`` and ``quantus`` subcommands of ``evaluate``."""
    methods_help = (
        "method names of captum_mamba.evaluation.METHODS (default: DEFAULT_EVALUATION_METHODS of "
        "captum_mamba.evaluation.report)"
    )
    eraser = kinds.add_parser(
        "eraser", parents=[common], help="ERASER AOPC comprehensiveness and sufficiency per method (JSON, Markdown)"
    )
    eraser.add_argument("--methods", nargs="+", default=None, help=methods_help)
    eraser.add_argument(
        "--removal",
        choices=("delete", "replace"),
        default="delete",
        help="delete removed tokens from the sequence (ERASER) or replace their embeddings (default delete)",
    )
    eraser.add_argument(
        "--replacement", default="zero", help="embedding of a replaced token: zero, mean or a token id (default zero)"
    )
    eraser.add_argument("--command-line", default=None, help=argparse.SUPPRESS)

    quantus = kinds.add_parser(
        "quantus",
        parents=[common],
        help="Quantus faithfulness correlation, monotonicity correlation, region perturbation, completeness",
    )
    quantus.add_argument("--methods", nargs="+", default=None, help=methods_help)
    quantus.add_argument(
        "--replacement", default="zero", help="embedding of a removed token: zero, mean or a token id (default zero)"
    )
    quantus.add_argument(
        "--nr-runs", type=int, default=50, help="random subsets of faithfulness correlation (default 50)"
    )
    quantus.add_argument(
        "--nr-samples", type=int, default=10, help="noise samples per token of monotonicity correlation (default 10)"
    )
    quantus.add_argument("--command-line", default=None, help=argparse.SUPPRESS)


_EVALUATIONS = {
    "faithfulness": _faithfulness,
    "conservation": _conservation,
    "bias": _bias,
    "eraser": _eraser,
    "quantus": _quantus,
    "images": _images,
    "copying": _copying,
}


def run(args: argparse.Namespace) -> int:
    r"""
    Run the chosen evaluation and write its JSON, table or plot under ``--out``.

    Args:
        args (argparse.Namespace): the parsed options of ``evaluate``.

    Returns:
        *int*: 0; a bad option raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    return _EVALUATIONS[args.evaluation](args)
