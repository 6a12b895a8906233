"""``captum-mamba compare``: attribution methods side by side, as a local web app or an HTML report."""

from __future__ import annotations

import argparse

from captum_mamba.cli.errors import UsageError, output_file, positive_int, unknown_names
from captum_mamba.cli.evaluate import COPYING_ARCHITECTURES

DEFAULT_PORT = 8765


COPYING_MODEL_NAMES: tuple[str, ...] = tuple(
    "copying" if architecture == "mamba" else f"copying_{architecture}" for architecture in COPYING_ARCHITECTURES
)
"""The shipped copying LMs (``copying``: Mamba; ``copying_qwen3_5``: Qwen3.5, a Gated DeltaNet and an
attention layer; ``copying_gated_deltanet``: Gated DeltaNets only; the keys of
``captum_mamba.compare.COPYING_MODELS``)."""
MODEL_NAMES: tuple[str, ...] = ("default", "hybrid", *COPYING_MODEL_NAMES)
"""What ``--model`` chooses from: the shipped sentiment classifiers (``default``, ``hybrid``) and the
shipped copying LMs (:data:`COPYING_MODEL_NAMES`)."""
ATTENTION_MODELS: tuple[str, ...] = ("hybrid", "copying_qwen3_5")
"""The models with attention layers: their default rows add MambaLRP + CP-LRP after MambaLRP."""
DEFAULT_SEQUENCES = 2
"""Generated copying sequences explained by default (each output of each: 4 examples per sequence)."""
DEFAULT_LENGTH = 32
"""Tokens per generated copying sequence by default (the models were trained on 12-64)."""


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not fit the chosen model, before loading anything (argparse refuses an unknown one)."""
    if args.texts and args.held_out is not None:
        raise UsageError("give texts or --held-out N, not both")
    copying = args.model in COPYING_MODEL_NAMES
    if copying and args.held_out is not None:
        raise UsageError(
            f"--model {args.model} has no held-out set: it explains generated copying sequences (--sequences N, "
            "--length L) or the sequences you give; leave out --held-out"
        )
    if not copying:
        for option, value in (("--sequences", args.sequences), ("--length", args.length)):
            if value is not None:
                raise UsageError(
                    f"{option} applies to the copying LMs (--model {', '.join(COPYING_MODEL_NAMES[:-1])} or "
                    f"{COPYING_MODEL_NAMES[-1]}); the sentiment classifiers take texts or --held-out N"
                )
    if args.texts and (args.sequences is not None or args.length is not None):
        raise UsageError("give sequences or --sequences / --length (generated ones), not both")
    if args.length is not None and args.length < 9:
        raise UsageError(f"--length {args.length} is too short: a copying sequence has at least 9 tokens")


def _examples(args: argparse.Namespace) -> tuple[list[str], list[str | None]]:
    if args.model in COPYING_MODEL_NAMES:
        from captum_mamba.compare import copying_texts

        if args.texts:
            return list(args.texts), [None] * len(args.texts)
        texts = copying_texts(args.sequences or DEFAULT_SEQUENCES, args.length or DEFAULT_LENGTH, seed=0)
        return texts, [None] * len(texts)  # the label is the known source's token

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
        if model in ATTENTION_MODELS:  # the attention layers: AttnLRP (mamba_lrp) next to CP-LRP
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


def _text_model(args: argparse.Namespace) -> object:
    from captum_mamba.compare import TextModel, copying_text_model

    if args.model in COPYING_MODEL_NAMES:
        return copying_text_model(args.model, max_tokens=args.max_tokens)
    return TextModel.default(max_tokens=args.max_tokens, variant=args.model)


def run(args: argparse.Namespace) -> int:
    r"""
    Explain the texts with every method, then serve the comparison view or write the HTML report.

    Args:
        args (argparse.Namespace): the parsed options of ``compare``.

    Returns:
        *int*: 0; an unknown method, a bad text or option raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    from captum_mamba.compare import ComparisonInputError, ComparisonServer, compare_text, create_app
    from captum_mamba.compare.page import write_report

    _check_options(args)
    if args.html:
        output_file(args.html, "--html")
    try:
        methods = _methods(args.methods, args.model)
        texts, labels = _examples(args)
        text_model = _text_model(args)
        examples = []
        for number, (text, label) in enumerate(zip(texts, labels), 1):
            try:
                examples.append(compare_text(text_model, text, methods, label=label))
            except ComparisonInputError as error:
                raise UsageError(f"{_which(args, number, len(texts))}{error}") from None
            print(f"explained {len(examples)}/{len(texts)}: {examples[-1]['prediction']['name']}", flush=True)
    except ComparisonInputError as error:
        raise UsageError(str(error)) from None
    if args.html:
        path = write_report(args.html, examples, methods, text_model.name, text_model.max_tokens, text_model.about)
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


def _which(args: argparse.Namespace, number: int, count: int) -> str:
    """``"sequence 2 of 3: "`` before a typed input's error when several were given, else nothing."""
    if not args.texts or count == 1:
        return ""
    kind = "sequence" if args.model in COPYING_MODEL_NAMES else "text"
    return f"{kind} {number} of {count}: "


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
        help="compare attribution methods side by side on a shipped model: the sentiment classifiers (default, "
        f"hybrid) or the copying LMs ({', '.join(COPYING_MODEL_NAMES)}) (web app on 127.0.0.1 or HTML report)",
        description="Explain texts (or copying sequences) with several attribution methods and show them side by "
        "side, as a local web app or a self-contained HTML report (--html). With a copying LM the explained output "
        "is the next token predicted at the last position, and the page marks the token it copies (the known truth) "
        "and whether each method ranks it first.",
    )
    compare.add_argument(
        "texts",
        nargs="*",
        help="texts to explain (default: the built-in sample sentences); for a copying LM, quoted sequences such "
        "as '7 3 12 9 _ _ _ _ | _' (data ids 2-15, _ blank, | delimiter; the sequence ends at the output to "
        "explain: at | or 1-3 blanks after it) (default: generated ones)",
    )
    compare.add_argument(
        "--held-out",
        type=positive_int,
        default=None,
        metavar="N",
        help="explain the first N held-out sentences, with labels (N of 1 or more; the sentiment classifiers)",
    )
    compare.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names of captum_mamba.evaluation.METHODS, or 'all' (default: MambaLRP, Integrated Gradients, "
        "SmoothGrad, Gradient x Input, Saliency, naive LRP, and MambaLRP + CP-LRP for the models with attention: "
        "hybrid, copying_qwen3_5); takes every word after it, so put texts before it",
    )
    compare.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default="default",
        help="the shipped model: default (Mamba sentiment classifier), hybrid (Bamba: Mamba-2 + attention; a table "
        "of the relevance by layer and layer kind), copying (Mamba copying LM), copying_qwen3_5 (Qwen3.5 copying "
        "LM: a Gated DeltaNet and an attention layer) or copying_gated_deltanet (Qwen3.5 copying LM of Gated "
        "DeltaNets only) (default: default)",
    )
    compare.add_argument(
        "--sequences",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"copying LMs: generated sequences (seed 0), each explained at its 4 outputs (default {DEFAULT_SEQUENCES})",
    )
    compare.add_argument(
        "--length",
        type=positive_int,
        default=None,
        metavar="L",
        help=f"copying LMs: tokens per generated sequence, at least 9 (default {DEFAULT_LENGTH}; trained on 12-64)",
    )
    compare.add_argument("--html", metavar="PATH", help="write a self-contained HTML report instead of serving")
    compare.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    compare.add_argument(
        "--max-tokens", type=positive_int, default=2048, help="longest text accepted, in tokens (default 2048)"
    )
    return compare
