"""``captum-mamba explain-dataset``: explain a JSONL/CSV dataset, sharded with ``torchrun``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from captum_mamba.cli.errors import UsageError, output_folder, positive_int, unknown_names

RANDOM_CONFIG_NAMES: tuple[str, ...] = ("mamba-130m", "mamba-1.4b", "tiny", "bamba-1b")
"""The names of :data:`~captum_mamba.evaluation.dataset.RANDOM_CONFIGS` (listed here: parsing imports no torch);
``<family>-tiny`` names each declared family's tiny test configuration (checked when the command runs)."""
DEFAULT_MAX_TOKENS = 128
"""Same as :data:`captum_mamba.evaluation.dataset.DEFAULT_MAX_TOKENS`."""


def _warn(message: warnings.WarningMessage) -> None:
    print(f"warning: {message.message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    r"""
    Explain the dataset (this process's shard under ``torchrun``) and print the summary.

    Args:
        args (argparse.Namespace): the parsed options of ``explain-dataset``.

    Returns:
        *int*: 0; a missing or malformed input raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    started_at = time.time()  # before torch and the library are imported: the summary reports the imports' time
    import torch.distributed as dist

    from captum_mamba.errors import UnsupportedModuleError
    from captum_mamba.evaluation.dataset import local_device, random_config_names, random_workload, run, text_workload
    from captum_mamba.evaluation.methods import METHODS

    imports_seconds = time.time() - started_at

    if not args.input and not args.random_config:
        raise UsageError("give --input FILE (.jsonl or .csv) or --random-config NAME")
    if args.input and args.random_config:
        raise UsageError("give --input or --random-config, not both")
    error = unknown_names("attribution method", args.methods, sorted(METHODS))
    if error is not None:
        raise error
    if args.random_config:
        if list(args.methods) != ["mamba_lrp"]:
            raise UsageError("random-config (causal LM) runs explain with mamba_lrp only; leave out --methods")
        if args.model != "default":
            raise UsageError("--model chooses the model of --input; --random-config builds its own, leave out --model")
        error = unknown_names("random config", [args.random_config], random_config_names())
        if error is not None:
            raise error
    out = output_folder(args.out)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            started = time.perf_counter()
            try:
                if args.random_config:
                    workload = random_workload(args.random_config, args.length, args.count, local_device())
                else:
                    workload = text_workload(
                        Path(args.input), args.model, args.text_column, args.label_column, args.max_tokens
                    )
            except (ValueError, FileNotFoundError) as problem:  # the input file or checkpoint: missing, malformed
                raise UsageError(str(problem)) from None
            # rank 0's model and examples (every rank builds its own); the summary reports it
            workload.description["workload_seconds"] = time.perf_counter() - started
            workload.description["imports_seconds"] = imports_seconds
            workload.description["command_started_at"] = started_at  # seconds since the epoch, as time.time()
            for message in caught:
                _warn(message)
            caught.clear()
            try:
                summary = run(workload, out, args.methods, args.batch_size, args.warmup)
            except UnsupportedModuleError as problem:  # a checkpoint with layers no declared family covers
                raise UsageError(
                    f"{problem} (or explain it with a gradient method only, e.g. --methods input_x_gradient)"
                ) from None
            for message in caught:
                _warn(message)
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
    parser.add_argument("--input", help="a .jsonl or .csv file with a text column")
    parser.add_argument(
        "--model",
        default="default",
        help="the model explaining --input: default (shipped Mamba classifier), hybrid (shipped Bamba classifier) "
        "or a local checkpoint directory (save_pretrained of a model and its tokenizer: a classifier's predicted "
        "class or a causal LM's predicted next token is explained) (default: default)",
    )
    parser.add_argument(
        "--text-column", default="text", help="field (JSONL) or column (CSV) of the text (default: text)"
    )
    parser.add_argument(
        "--label-column", default="label", help="field or column of an integer label, if any (default: label)"
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=DEFAULT_MAX_TOKENS,
        help="tokens explained per text; longer texts are cut, with a warning, and their records say truncated "
        f"and original_tokens (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument(
        "--random-config",
        help="explain random token ids with a random causal LM: " + ", ".join(RANDOM_CONFIG_NAMES) + ", or "
        "<family>-tiny for any declared family with a test configuration (e.g. jamba-tiny)",
    )
    parser.add_argument("--length", type=positive_int, default=2048, help="tokens per random sequence (default 2048)")
    parser.add_argument("--count", type=positive_int, default=16, help="random sequences (default 16)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["mamba_lrp"],
        help="method names of captum_mamba.evaluation.METHODS (default: mamba_lrp)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="examples per attribution batch (default 32)"
    )
    parser.add_argument("--warmup", type=int, default=0, help="untimed explanations before timing")
    parser.add_argument(
        "--out", required=True, help="output folder (shards, results.jsonl, summary.json); a rerun resumes there"
    )
    return parser
