"""``captum-mamba explain-dataset``: explain a JSONL/CSV dataset, sharded with ``torchrun``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    r"""
    Explain the dataset (this process's shard under ``torchrun``) and print the summary.

    Args:
        args (argparse.Namespace): the parsed options of ``explain-dataset``.

    Returns:
        *int*: 0, or 2 (with ``error: ...`` on stderr) on a missing or malformed input.
    """
    import torch.distributed as dist

    from captum_mamba.evaluation.dataset import default_workload, random_workload, run

    try:
        if args.random_config:
            workload = random_workload(args.random_config, args.length, args.count)
        elif args.input:
            workload = default_workload(Path(args.input), args.text_column, args.label_column)
        else:
            raise ValueError("give --input FILE (.jsonl or .csv) or --random-config NAME")
        summary = run(workload, Path(args.out), args.methods, args.batch_size, args.warmup)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary is not None:
        print(json.dumps(summary, indent=1))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``explain-dataset``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``explain-dataset``.
    """
    parser = subparsers.add_parser(
        "explain-dataset",
        help="explain every example of a JSONL/CSV file (or random token sequences); shard with torchrun",
    )
    parser.add_argument("--input", help="a .jsonl or .csv file with a text column (default model)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument(
        "--random-config", help="explain random token ids with a random causal LM: mamba-130m, mamba-1.4b, tiny"
    )
    parser.add_argument("--length", type=int, default=2048, help="tokens per random sequence (default 2048)")
    parser.add_argument("--count", type=int, default=16, help="random sequences (default 16)")
    parser.add_argument("--methods", nargs="+", default=["mamba_lrp"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=0, help="untimed explanations before timing")
    parser.add_argument("--out", required=True, help="output folder (shards, results.jsonl, summary.json)")
    return parser
