"""``captum-mamba needle``: long-range analysis on the shipped needle-detection model."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from captum_mamba.cli.errors import UsageError, output_folder, positive_int, unknown_names

XRA_METHODS: tuple[str, ...] = ("mamba_lrp", "naive_lrp", "input_x_gradient", "saliency")
"""Methods of the default XRA run: MambaLRP and three cheap baselines (any of METHODS with --methods)."""
HF_PATH_HELP = (
    "differentiate the baselines through Hugging Face's own CPU path (quadratic-time backward) instead of "
    "the package's linear-time scan; same gradients up to rounding"
)
THREADS_HELP = "torch CPU threads (default 1)"
SEED_HELP = "seed of the generated sequences (default 0)"
XRA_MODEL = "needle_multilength"
"""The default XRA model: the needle model trained on 32 to 256 tokens."""


def _load(args: argparse.Namespace, methods: list[str] | None) -> object:
    """Check the methods and ``--out``, then load the needle model of ``--model`` in float64."""
    import torch

    from captum_mamba.evaluation.methods import METHODS
    from captum_mamba.evaluation.synthetic.needle import load_needle_model

    if methods is not None:
        error = unknown_names("attribution method", methods, sorted(METHODS))
        if error is not None:
            raise error
    output_folder(args.out)
    torch.set_num_threads(args.threads)
    try:
        return load_needle_model(torch.float64, name=args.model)
    except ValueError as error:  # not a needle model: unknown name, missing folder, another task's model
        raise UsageError(
            f"{error}; give --model with one of them or a folder written by captum-mamba train needle"
        ) from None


def _report(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.methods import METHODS
    from captum_mamba.evaluation.report import write_json
    from captum_mamba.evaluation.synthetic.needle import needle_top1

    model = _load(args, args.methods)
    report = needle_top1(model, args.methods, n=args.n, length=args.length, seed=args.seed, fast=not args.hf_path)
    meta = report.pop("_model")
    meta.update(
        model=args.model,
        seed=args.seed,
        command=_command_line(args, ("model", "methods", "n", "length", "seed", "hf_path")),
    )
    lines = [
        f"Needle detection model `{args.model}`, {meta['n']} needle-containing sequences of {meta['length']} tokens "
        f"(seed {args.seed}; model accuracy on them {meta['accuracy_on_these']:.3f}), explaining the logit of "
        f"'present'. Command: `{meta['command']}`",
        "",
        "| method | top-1 = needle (read-out excluded) | top-1 = needle (read-out included) |",
        "|---|---:|---:|",
    ]
    for method, row in report.items():
        lines.append(f"| {METHODS[method].label} | {row['top1']:.3f} | {row['top1_with_readout']:.3f} |")
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    write_json({"model": meta, "methods": report}, out / "needle_top1.json")
    (out / "needle_top1.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _xra(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.methods import METHODS
    from captum_mamba.evaluation.report import write_json
    from captum_mamba.evaluation.synthetic.needle import model_accuracy_grid, plot_xra, xra_grid

    bad_depths = [d for d in args.depths if not 0.0 <= d <= 1.0]
    if bad_depths:
        raise UsageError(f"--depths {bad_depths} outside 0..1; give fractions (0 = first token, 1 = last)")
    model = _load(args, args.methods)
    grids, seconds = {}, {}
    for method in args.methods:
        start = time.perf_counter()
        grids[method] = xra_grid(
            model, method, args.lengths, args.depths, n=args.n, k=args.k, seed=args.seed, fast=not args.hf_path
        )
        seconds[method] = round(time.perf_counter() - start, 1)
        print(f"{method}: mean XRA@{args.k} {float(grids[method].mean()):.3f} ({seconds[method]} s)", flush=True)
    accuracy = model_accuracy_grid(model, args.lengths, args.depths, n=args.n, seed=args.seed)
    command = _command_line(args, ("model", "methods", "lengths", "depths", "n", "k", "seed", "hf_path"))
    out = Path(args.out)
    title = f"needle model '{args.model}': XRA@{args.k}, {args.n} sequences per cell"
    plot_xra(grids, args.lengths, args.depths, out / "needle_xra.png", k=args.k, accuracy=accuracy, title=title)
    write_json(
        {
            "model": args.model,
            "lengths": args.lengths,
            "depths": args.depths,
            "n": args.n,
            "k": args.k,
            "seed": args.seed,
            "xra": {m: g.tolist() for m, g in grids.items()},
            "model_accuracy": accuracy.tolist(),
            "seconds": seconds,
            "command": command,
        },
        out / "needle_xra.json",
    )
    panels = [(f"{METHODS[m].label}: XRA@{args.k}", g) for m, g in grids.items()] + [("model accuracy", accuracy)]
    lines = [
        f"Needle model `{args.model}`, {args.n} needle-containing sequences per cell (seed {args.seed}); rows: needle "
        f"depth (0 = first token, 1 = just before the read-out), columns: sequence length. Command: `{command}`",
        "",
    ]
    for label, grid in panels:
        lines += [f"**{label}** (mean {float(grid.mean()):.3f})", ""]
        lines += [
            "| depth | " + " | ".join(str(n) for n in args.lengths) + " |",
            "|---" * (len(args.lengths) + 1) + "|",
        ]
        lines += [
            f"| {depth:g} | " + " | ".join(f"{float(v):.2f}" for v in row) + " |"
            for depth, row in zip(args.depths, grid)
        ]
        lines.append("")
    (out / "needle_xra.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}/needle_xra.png, .json and .md")
    return 0


def _command_line(args: argparse.Namespace, options: tuple[str, ...]) -> str:
    """The command that reproduces this run, every option spelled out."""
    parts = ["captum-mamba", "needle", args.analysis]
    for option in options:
        value = getattr(args, option)
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f"--{option.replace('_', '-')}")
            continue
        flag = "-k" if option == "k" else f"--{option.replace('_', '-')}"
        values = value if isinstance(value, list) else [value]
        parts += [flag, *(shlex.quote(str(v)) for v in values)]
    if getattr(args, "out", None):
        parts += ["--out", shlex.quote(str(args.out))]
    return " ".join(parts)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``needle`` and its subcommands ``report`` and ``xra``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``needle``.
    """
    needle = subparsers.add_parser("needle", help="needle-in-a-haystack analysis on the shipped needle model")
    kinds = needle.add_subparsers(dest="analysis", required=True)
    report = kinds.add_parser("report", help="top-1 needle hits per method (table)")
    report.add_argument(
        "--methods", nargs="+", default=None, help="method names (default: every method registered in METHODS)"
    )
    report.add_argument("--model", default="needle", help="shipped needle model or trained folder (default: needle)")
    report.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    report.add_argument("--threads", type=positive_int, default=1, help=THREADS_HELP)
    report.add_argument("--hf-path", action="store_true", help=HF_PATH_HELP)
    report.add_argument("--n", type=positive_int, default=100, help="needle-containing sequences (default 100)")
    report.add_argument("--length", type=positive_int, default=64, help="tokens per sequence (default 64)")
    report.add_argument("--out", default="needle", help="output folder for needle_top1.json/.md (default: needle)")
    xra = kinds.add_parser("xra", help="explanation-based retrieval accuracy over depths x lengths (heatmap)")
    xra.add_argument(
        "--methods",
        nargs="+",
        default=list(XRA_METHODS),
        help=f"method names of captum_mamba.evaluation.METHODS (default: {' '.join(XRA_METHODS)})",
    )
    xra.add_argument(
        "--model",
        default=XRA_MODEL,
        help=f"shipped needle model or trained folder (default: {XRA_MODEL}, trained on 32-256 tokens)",
    )
    xra.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    xra.add_argument("--threads", type=positive_int, default=1, help=THREADS_HELP)
    xra.add_argument("--hf-path", action="store_true", help=HF_PATH_HELP)
    xra.add_argument(
        "--lengths",
        type=positive_int,
        nargs="+",
        default=[32, 64, 128, 256, 512],
        help="sequence lengths, the heatmap's columns (default: 32 64 128 256 512)",
    )
    xra.add_argument(
        "--depths",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="needle depths from 0 (first token) to 1 (last), the heatmap's rows (default: 0 0.25 0.5 0.75 1)",
    )
    xra.add_argument("--n", type=positive_int, default=32, help="sequences per cell (default 32)")
    xra.add_argument("-k", type=positive_int, default=1, help="XRA@k: the needle among the k most relevant (default 1)")
    xra.add_argument("--out", default="needle", help="output folder for needle_xra.png/.json/.md (default: needle)")
    return needle


_ANALYSES = {"report": _report, "xra": _xra}


def run(args: argparse.Namespace) -> int:
    r"""
    Run the chosen analysis on the needle model and write its table or heatmap under ``--out``.

    Args:
        args (argparse.Namespace): the parsed options of ``needle``.

    Returns:
        *int*: 0; a bad option raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    return _ANALYSES[args.analysis](args)
