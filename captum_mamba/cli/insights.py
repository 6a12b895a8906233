"""``captum-mamba insights``: Captum Insights with MambaLRP for the default model (captum 0.8.x)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 6080


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``insights``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``insights``.
    """
    parser = subparsers.add_parser(
        "insights",
        help="serve Captum Insights with MambaLRP for the default model on 127.0.0.1 (needs captum 0.8.x)",
        description="Serve Captum Insights for the default model on 127.0.0.1, MambaLRP in its method list "
        "(captum 0.8.x: pip install 'captum-mamba[insights]'; with newer Captum, use captum-mamba compare).",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    return parser


def run(args: argparse.Namespace) -> int:
    r"""
    Serve Insights until interrupted.

    Args:
        args (argparse.Namespace): the parsed options of ``insights``.

    Returns:
        *int*: 0, or 2 (with ``error: ...`` on stderr) when ``captum.insights`` cannot be imported.
    """
    from captum_mamba.insights import InsightsUnavailableError, default_visualizer

    try:
        visualizer = default_visualizer()
    except InsightsUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    visualizer.serve(blocking=True, port=args.port)
    return 0
