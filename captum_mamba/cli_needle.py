"""``captum-mamba needle``: long-range analysis on the shipped needle-detection model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def _report(args: argparse.Namespace) -> int:
    from captum_mamba.evaluation.methods import METHODS
    from captum_mamba.evaluation.report import write_json
    from captum_mamba.evaluation.synthetic.needle import load_needle_model, needle_top1

    model = load_needle_model(torch.float64)
    report = needle_top1(model, args.methods, n=args.n, length=args.length)
    meta = report.pop("_model")
    lines = [
        f"Needle detection model, {meta['n']} needle-containing sequences of {meta['length']} tokens "
        f"(model accuracy on them {meta['accuracy_on_these']:.3f}). Command: `captum-mamba needle report --n {args.n}`",
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
    from captum_mamba.evaluation.report import write_json
    from captum_mamba.evaluation.synthetic.needle import load_needle_model, plot_xra, xra_grid

    model = load_needle_model(torch.float64)
    grids = {m: xra_grid(model, m, args.lengths, args.depths, n=args.n, k=args.k) for m in args.methods}
    out = Path(args.out)
    plot_xra(grids, args.lengths, args.depths, out / "needle_xra.png", k=args.k)
    write_json(
        {
            "lengths": args.lengths,
            "depths": args.depths,
            "n": args.n,
            "k": args.k,
            "xra": {m: g.tolist() for m, g in grids.items()},
        },
        out / "needle_xra.json",
    )
    for method, grid in grids.items():
        print(f"{method}: mean XRA@{args.k} {float(grid.mean()):.3f}")
    print(f"wrote {out}/needle_xra.png and .json")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``needle`` and its sub-commands."""
    from captum_mamba.evaluation.synthetic.needle import NEEDLE_METHODS

    needle = commands.add_parser("needle", help="needle-in-a-haystack analysis on the shipped needle model")
    kinds = needle.add_subparsers(dest="analysis", required=True)
    report = kinds.add_parser("report", help="top-1 needle hits per method (table)")
    report.add_argument("--methods", nargs="+", default=list(NEEDLE_METHODS))
    report.add_argument("--n", type=int, default=200)
    report.add_argument("--length", type=int, default=64)
    report.add_argument("--out", default="needle")
    report.set_defaults(handler=_report)
    xra = kinds.add_parser("xra", help="explanation-based retrieval accuracy over depths x lengths (heatmap)")
    xra.add_argument(
        "--methods",
        nargs="+",
        default=["mamba_lrp", "input_x_gradient", "integrated_gradients", "gradient_attention_rollout"],
    )
    xra.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256])
    xra.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    xra.add_argument("--n", type=int, default=32)
    xra.add_argument("-k", type=int, default=1)
    xra.add_argument("--out", default="needle")
    xra.set_defaults(handler=_xra)
