"""``captum-mamba compare``: attribution methods side by side, as a local web app or an HTML report."""

from __future__ import annotations

import argparse

from captum_mamba.cli.errors import UsageError, output_file, positive_int, unknown_names

DEFAULT_PORT = 8765


def _examples(args: argparse.Namespace) -> tuple[list[str], list[str | None]]:
    from captum_mamba.default import LABELS, SAMPLE_LABELS, SAMPLE_SENTENCES

    if args.texts:
        return list(args.texts), [None] * len(args.texts)
    if args.held_out is not None:
        from captum_mamba.default.data import split_rotten_tomatoes

        _, test = split_rotten_tomatoes(seed=0, test_fraction=0.1)
        if args.held_out > len(test):
            raise UsageError(f"--held-out {args.held_out} is more than the {len(test)} held-out sentences; give fewer")
        chosen = test[: args.held_out]
        return [text for text, _ in chosen], [LABELS[label] for _, label in chosen]
    return list(SAMPLE_SENTENCES), [None if label is None else LABELS[label] for label in SAMPLE_LABELS]


def _methods(names: list[str] | None, model: str = "default") -> list[str]:
    from captum_mamba.compare import DEFAULT_COMPARE_METHODS
    from captum_mamba.evaluation.methods import METHODS

    if names is None:
        methods = list(DEFAULT_COMPARE_METHODS)
        if model == "hybrid":  # the hybrid's attention layers: AttnLRP (mamba_lrp) next to CP-LRP
            methods.insert(methods.index("mamba_lrp") + 1, "mamba_lrp_cp")
        return methods
    # --methods takes every word after it, so texts typed after it land here: say so
    hint = (
        "; --methods takes every word after it: put the texts before --methods, or after -- "
        "(compare --methods all -- 'a text')"
    )
    error = unknown_names("attribution method", names, ["all", *sorted(METHODS)], hint)
    if error is not None:
        raise error
    return list(METHODS) if "all" in names else list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    r"""
    Explain the texts with every method, then serve the comparison view or write the HTML report.

    Args:
        args (argparse.Namespace): the parsed options of ``compare``.

    Returns:
        *int*: 0; an unknown method, a bad text or option raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    from captum_mamba.compare import ComparisonInputError, ComparisonServer, TextModel, compare_text, create_app
    from captum_mamba.compare.page import write_report

    if args.texts and args.held_out is not None:
        raise UsageError("give texts or --held-out N, not both")
    if args.html:
        output_file(args.html, "--html")
    try:
        methods = _methods(args.methods, args.model)
        texts, labels = _examples(args)
        text_model = TextModel.default(max_tokens=args.max_tokens, variant=args.model)
        examples = []
        for text, label in zip(texts, labels):
            examples.append(compare_text(text_model, text, methods, label=label))
            print(f"explained {len(examples)}/{len(texts)}: {examples[-1]['prediction']['name']}", flush=True)
    except ComparisonInputError as error:
        raise UsageError(str(error)) from None
    if args.html:
        path = write_report(args.html, examples, methods, text_model.name, text_model.max_tokens)
        print(f"wrote {path}")
        return 0
    server = ComparisonServer(create_app(text_model, examples, methods), port=args.port)
    print(f"comparison view at {server.url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``compare``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``compare``.
    """
    compare = subparsers.add_parser(
        "compare",
        help="compare attribution methods side by side on the default (or hybrid) model (web app on 127.0.0.1 or "
        "HTML report)",
    )
    compare.add_argument("texts", nargs="*", help="texts to explain (default: the built-in sample sentences)")
    compare.add_argument(
        "--held-out",
        type=positive_int,
        default=None,
        metavar="N",
        help="explain the first N held-out sentences, with labels (N of 1 or more)",
    )
    compare.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names of captum_mamba.evaluation.METHODS, or 'all' (default: MambaLRP, Integrated Gradients, "
        "SmoothGrad, Gradient x Input, Saliency, naive LRP); takes every word after it, so put texts before it",
    )
    compare.add_argument(
        "--model",
        choices=("default", "hybrid"),
        default="default",
        help="the shipped classifier: default (Mamba) or hybrid (Bamba: Mamba-2 + attention; adds MambaLRP + "
        "CP-LRP to the default methods and a table of the relevance by layer and layer kind) (default: default)",
    )
    compare.add_argument("--html", metavar="PATH", help="write a self-contained HTML report instead of serving")
    compare.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    compare.add_argument(
        "--max-tokens", type=positive_int, default=2048, help="longest text accepted, in tokens (default 2048)"
    )
    return compare
