"""Dataset-scale explanation on 1 vs 2 GPUs (torchrun): throughput with and without start-up, equal relevances.

Runs ``captum-mamba explain-dataset`` on random token sequences with a randomly initialised
130m-sized Mamba (d_model 768, 24 layers, vocab 50280; seed 0, drawn on each rank's GPU, identical
on every rank) once with one process and once with two (one GPU each), at each length, then checks
that the two runs give the same relevances (float32, 1e-5 relative) and writes a JSON report with
the device names and, per run, the explanations per second of the explaining loop (steady state)
and of the whole command (``end_to_end``: from launching torchrun to its exit), with both scaling
factors and the whole command's wall time in parts (``wall_parts_seconds``: torchrun and the
interpreter, imports, model and examples, process group and warm-up, loop, merge, exit). Before
the timed launches an untimed one (2 processes, 2 short examples each) warms the file-system cache
and the kernels' on-disk caches, so that the first timed launch does not pay for them alone, and
stops the benchmark early if the process group cannot form.

    python benchmarks/multi_gpu_dataset.py --out /tmp/multi_gpu --json benchmarks/results/multi_gpu_h200x2.json  # 2 GPUs
    python benchmarks/multi_gpu_dataset.py --smoke --out /tmp/smoke   # CPU, gloo, tiny model

The default GPU workload is 5,000 examples of 2,048 tokens, one example per batch. The process
group is ``cpu:gloo,cuda:nccl`` (the ranks exchange only counts and ids, on the CPU); NCCL settings
are left as the machine has them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch(processes: int, config: str, length: int, count: int, out: Path, warmup: int, batch_size: int = 1) -> dict:
    """One ``explain-dataset`` command under torchrun; its summary with the command's wall time added."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "captum_mamba.cli", "explain-dataset", "--random-config", config, "--length", str(length),
        "--count", str(count), "--batch-size", str(batch_size), "--warmup", str(warmup), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    shutil.rmtree(out, ignore_errors=True)  # a folder of an earlier run would be resumed: nothing left to explain
    launched_at, start = time.time(), time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall, ended_at = time.perf_counter() - start, time.time()
    if result.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} processes failed:\n{result.stderr[-4000:]}")
    summary = json.loads((out / "summary.json").read_text())
    summary["wall_seconds_with_startup"] = wall
    summary["end_to_end_explanations_per_second"] = summary["examples_this_run"] / wall
    # what the wall time holds besides the loop: torchrun, interpreter and imports, model and examples,
    # process group, warm-up, merge, exit (in parts: wall_parts_seconds)
    summary["startup_and_merge_seconds"] = wall - summary["seconds"]
    summary["wall_parts_seconds"] = wall_parts(summary, launched_at, ended_at)
    return summary


def wall_parts(summary: dict, launched_at: float, ended_at: float) -> dict[str, float]:
    """The command's wall time in its parts, in order, as rank 0 saw them (they add up to the wall time)."""
    parts = {
        # torchrun's start (its imports, the rendezvous, starting the workers), the interpreter's
        "launcher_and_interpreter": summary["command_started_at"] - launched_at,
        "imports": summary["imports_seconds"],  # torch, transformers, captum, the library
        "model_and_examples": summary["workload_seconds"],
        "process_group_and_warm_up": summary["rank_setup_seconds"][0],  # waits at a barrier for the slowest rank
        "loop": summary["rank_seconds"][0],
        "merge": summary["merge_seconds"],
        "exit": ended_at - summary["summary_written_at"],  # process group, interpreters and torchrun ending
    }
    # what falls between the measured parts (reading the output folder; rank 0 waiting for the slowest rank's loop)
    parts["unmeasured"] = (ended_at - launched_at) - sum(parts.values())
    return parts


def max_relative_difference(a: Path, b: Path) -> float:
    first = [json.loads(line) for line in (a / "results.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (b / "results.jsonl").read_text().splitlines()]
    if [r["id"] for r in first] != [r["id"] for r in second]:
        raise AssertionError("the runs explained different examples")
    worst = 0.0
    for x, y in zip(first, second):
        r1, r2 = x["relevances"]["mamba_lrp"], y["relevances"]["mamba_lrp"]
        scale = max(abs(v) for v in r1) or 1.0
        worst = max(worst, max(abs(p - q) for p, q in zip(r1, r2)) / scale)
    return worst


def _devices() -> str:
    """The GPUs the run uses (``"2 x NVIDIA H200"``), or ``"cpu"``."""
    try:
        import torch
    except ImportError:
        return "cpu"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if not names:
        return "cpu"
    return ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="CPU, gloo, tiny model, short sequences")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--counts", type=int, nargs="+", default=None, help="examples per length")
    parser.add_argument(
        "--threads", type=int, default=4, help="OMP_NUM_THREADS of every process, same for 1 and 2 processes"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="where to write the report (default: OUT/multi_gpu.json)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="examples per attribution batch (default 1)")
    args = parser.parse_args()
    report_path = args.json or args.out / "multi_gpu.json"
    from _provenance import result_provenance

    record = result_provenance(report_path, _devices())  # refuses an untraceable benchmarks/results/ file up front
    config = "tiny" if args.smoke else "mamba-130m"
    plan = {32: 6, 64: 4} if args.smoke else {2048: 5000}
    if args.lengths:
        plan = {n: plan.get(n, 8) for n in args.lengths}
    if args.counts:
        plan = dict(zip(plan, args.counts))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # torchrun would set 1 for 2 processes only
    report = {
        "provenance": record,
        "config": config,
        "smoke": args.smoke,
        "threads_per_process": args.threads,
        "batch_size": args.batch_size,
        "runs": [],
    }
    try:
        import torch

        report["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"]
        report["torch"] = torch.__version__
    except ImportError:
        pass
    # with 2 processes: it warms what both use and fails early, before the timed runs, if the process group cannot form
    warm = launch(2, config, min(plan), 4, args.out / "cache-warm-up", warmup=0, batch_size=args.batch_size)
    report["cache_warm_up_wall_seconds"] = warm["wall_seconds_with_startup"]
    for length, count in plan.items():
        summaries = {
            n: launch(n, config, length, count, args.out / f"L{length}-x{n}", 0 if args.smoke else 2, args.batch_size)
            for n in (1, 2)
        }
        one, two = summaries[1], summaries[2]
        row = {
            "length": length,
            "examples": count,
            "one_process": one,
            "two_processes": two,
            "explanations_per_second": {"1": one["explanations_per_second"], "2": two["explanations_per_second"]},
            "scaling": two["explanations_per_second"] / one["explanations_per_second"],
            "end_to_end_explanations_per_second": {
                "1": one["end_to_end_explanations_per_second"],
                "2": two["end_to_end_explanations_per_second"],
            },
            "end_to_end_scaling": one["wall_seconds_with_startup"] / two["wall_seconds_with_startup"],
            "max_relative_difference_2_vs_1": max_relative_difference(
                args.out / f"L{length}-x1", args.out / f"L{length}-x2"
            ),
        }
        report["runs"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("one_process", "two_processes")}), flush=True)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1))
    print(f"wrote {report_path}")


if __name__ == "__main__":
    main()
