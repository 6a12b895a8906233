"""Start-up time of ``captum-mamba --help``: how long a new user waits for the command's help.

Each command runs ``--repeats`` times (default 5) in a fresh Python process, so every run pays the
interpreter start and the imports; the table and the JSON give the minimum (the least disturbed
run), the median and every run. Measured: ``python -m captum_mamba.cli --help`` from this
checkout, ``python -m captum_mamba.cli explain --help`` (a subcommand's help), and the installed
``captum-mamba --help`` when that console script is on ``PATH`` (it may belong to another
installation of the package, which the JSON records).

Usage::

    python benchmarks/cli_help_time.py --json benchmarks/results/cli_help_time.json
    python benchmarks/cli_help_time.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _provenance import REPO_ROOT, result_provenance, with_provenance

TARGET_SECONDS = 2.0
"""The help should answer within this many seconds (issue 17)."""


def time_command(command: Sequence[str], repeats: int) -> list[float]:
    r"""
    Wall time of ``command`` in fresh processes.

    Args:
        command (Sequence[str]): the program and its arguments.
        repeats (int): how many runs.

    Returns:
        *list[float]*: the seconds of each run, in order.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # the checkout's package, whatever the working folder
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)
        seconds.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr[-2000:]}")
    return seconds


def commands() -> dict[str, list[str]]:
    r"""
    The commands measured, by label.

    Returns:
        *dict* label -> argv.
    """
    measured = {
        "python -m captum_mamba.cli --help": [sys.executable, "-m", "captum_mamba.cli", "--help"],
        "python -m captum_mamba.cli explain --help": [sys.executable, "-m", "captum_mamba.cli", "explain", "--help"],
    }
    script = shutil.which("captum-mamba")
    if script is not None:
        measured["captum-mamba --help"] = [script, "--help"]
    return measured


def main(argv: Sequence[str] | None = None) -> int:
    r"""
    Time the commands, print the table and write the JSON.

    Args:
        argv (Sequence[str], optional): the arguments. Default: ``sys.argv[1:]``

    Returns:
        *int*: 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    record = result_provenance(args.json, "cpu")  # refuses an untraceable benchmarks/results/ file up front
    rows: list[dict[str, Any]] = []
    for label, command in commands().items():
        seconds = time_command(command, args.repeats)
        rows.append(
            {
                "command": label,
                "executable": command[0],
                "min_seconds": round(min(seconds), 3),
                "median_seconds": round(statistics.median(seconds), 3),
                "runs_seconds": [round(s, 3) for s in seconds],
                "under_target": min(seconds) < TARGET_SECONDS,
            }
        )
    width = max(len(row["command"]) for row in rows)
    print(f"{'command':{width}s}  min (s)  median (s)  under {TARGET_SECONDS:g} s")
    for row in rows:
        print(
            f"{row['command']:{width}s}  {row['min_seconds']:7.3f}  {row['median_seconds']:10.3f}  {row['under_target']}"
        )
    if args.json is not None:
        document = {"repeats": args.repeats, "target_seconds": TARGET_SECONDS, "results": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(with_provenance(document, record), indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
