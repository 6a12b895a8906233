"""CPU scaling benchmark: wall time and peak memory of MambaLRP against its baselines.

A 4-layer Hugging Face ``MambaForCausalLM`` (random seeded weights, float32, eval mode, batch 1)
is explained at sequence lengths ``L`` (default 128 ... 4096) by

* ``forward_nograd``: the model's own forward (Hugging Face's pure-PyTorch path) under
  ``torch.no_grad``, taking the logits at the last position -- the reference cost;
* ``mamba_lrp``: ``captum_mamba.MambaLRP(model).attribute(embeds, target=t)``;
* ``input_x_gradient``: Captum ``InputXGradient`` on ``f(e) = model(inputs_embeds=e).logits[:, -1]``;
* ``integrated_gradients``: Captum ``IntegratedGradients`` on the same ``f`` (50 steps).

Every (method, L) measurement runs in a fresh Python subprocess (this script with the hidden
``--worker`` flag), so that its peak memory is its own: the worker builds the model and inputs,
warms the method up on a short sequence, then resets the RSS high-water mark (Linux
``/proc/self/clear_refs``), records the RSS, times one call and reports the peak RSS during it
(``ru_maxrss``) minus the RSS before it -- the peak RSS increase over the post-construction RSS.

The baselines are slow on CPU (Hugging Face's backward through its PyTorch scan grows
quadratically with ``L``), so each (method, L) whose predicted time -- extrapolated from the
previous length, quadratically for the gradient baselines and linearly otherwise -- exceeds
``--max-seconds`` is skipped and recorded as such.

Usage::

    python benchmarks/cpu_scaling.py --json benchmarks/results/cpu_scaling.json
    python benchmarks/cpu_scaling.py --lengths 128 256 --methods forward_nograd mamba_lrp --max-seconds 60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

METHODS: tuple[str, ...] = ("forward_nograd", "mamba_lrp", "input_x_gradient", "integrated_gradients")
# Exponent of the growth of time with L used to predict the next length's time.
GROWTH_EXPONENT: dict[str, float] = {
    "forward_nograd": 1.0,
    "mamba_lrp": 1.0,
    "input_x_gradient": 2.0,
    "integrated_gradients": 2.0,
}
DEFAULT_LENGTHS: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
MODEL_CONFIG: dict[str, int] = {
    "vocab_size": 1000,
    "hidden_size": 128,
    "state_size": 16,
    "num_hidden_layers": 4,
    "expand": 2,
}
# Per family: the causal-LM class and the config fields beyond MODEL_CONFIG (Mamba2: 8 heads of 32;
# Bamba, a hybrid: Mamba-2 layers with 8 heads of 32 and one attention layer of 4 heads, SwiGLU MLPs).
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mamba": ("MambaConfig", "MambaForCausalLM", {}),
    "mamba2": ("Mamba2Config", "Mamba2ForCausalLM", {"num_heads": 8, "head_dim": 32, "n_groups": 1, "chunk_size": 64}),
    "falcon_mamba": ("FalconMambaConfig", "FalconMambaForCausalLM", {}),
    "bamba": (
        "BambaConfig",
        "BambaForCausalLM",
        {
            "intermediate_size": 256,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "attn_layer_indices": [1],
            "mamba_n_heads": 8,
            "mamba_d_head": 32,
            "mamba_n_groups": 1,
            "mamba_d_state": 16,
            "mamba_chunk_size": 64,
            "use_cache": False,
        },
    ),
}
SEED = 0
IG_STEPS = 50
WARMUP_LENGTH = 16
RATIO_LENGTH = 1024
LINEARITY_LENGTHS = (1024, 4096)
MAX_LRP_OVER_FORWARD = 2.0
MIN_IXG_OVER_LRP = 50.0
#: The family whose InputXGradient runs Hugging Face's step-by-step CPU scan, where the >= 50x target applies
#: (Mamba2's reference path is chunked: its InputXGradient is a few times MambaLRP, and no target is set).
IXG_TARGET_FAMILY = "mamba"
KIB_PER_MIB = 1024.0
RESULT_PREFIX = "CPU_SCALING_RESULT "


# --------------------------------------------------------------------------------------------
# Worker side: one measurement in this (fresh) process.
# --------------------------------------------------------------------------------------------


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (interop threads can be set once only)
        pass


def _build_model(family: str) -> Any:
    import torch
    import transformers

    config_name, model_name, extra = FAMILIES[family]
    torch.manual_seed(SEED)
    config = getattr(transformers, config_name)(**MODEL_CONFIG, **extra)
    return getattr(transformers, model_name)(config).to(torch.float32).eval()


def _inputs(model: Any, length: int) -> tuple[Any, int]:
    """Embeddings of seeded random token ids (batch 1, detached) and a seeded target class."""
    import torch

    generator = torch.Generator().manual_seed(SEED + length)
    vocab = MODEL_CONFIG["vocab_size"]
    ids = torch.randint(0, vocab, (1, length), generator=generator)
    target = int(torch.randint(0, vocab, (1,), generator=generator))
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids).detach().clone()
    return embeds, target


def _last_logits(model: Any) -> Callable[[Any], Any]:
    def forward(embeds: Any) -> Any:
        return model(inputs_embeds=embeds, use_cache=False).logits[:, -1]

    return forward


def _runner(method: str, model: Any, ig_batch_size: int) -> Callable[[Any, int], Any]:
    """The measured call for ``method``: ``run(embeds, target)``."""
    import torch
    from captum.attr import InputXGradient, IntegratedGradients

    from captum_mamba import MambaLRP

    forward = _last_logits(model)
    if method == "forward_nograd":

        def run(embeds: Any, target: int) -> Any:
            with torch.no_grad():
                return forward(embeds)

    elif method == "mamba_lrp":
        explainer = MambaLRP(model)

        def run(embeds: Any, target: int) -> Any:
            return explainer.attribute(embeds, target=target)

    elif method == "input_x_gradient":
        ixg = InputXGradient(forward)

        def run(embeds: Any, target: int) -> Any:
            return ixg.attribute(embeds, target=target)

    elif method == "integrated_gradients":
        ig = IntegratedGradients(forward)

        def run(embeds: Any, target: int) -> Any:
            return ig.attribute(embeds, target=target, n_steps=IG_STEPS, internal_batch_size=ig_batch_size)

    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return run


def _maxrss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0, ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _current_rss_kib() -> int | None:
    """Resident set size now (Linux ``/proc``), or ``None`` where unavailable."""
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(method: str, length: int, threads: int, ig_batch_size: int, family: str = "mamba") -> dict[str, Any]:
    """Time one call of ``method`` at ``length`` and its peak RSS increase (run in a fresh process)."""
    import gc

    _set_threads(threads)
    model = _build_model(family)
    run = _runner(method, model, ig_batch_size)
    run(*_inputs(model, WARMUP_LENGTH))  # one-time costs (lazy imports, first-call setup)
    embeds, target = _inputs(model, length)
    gc.collect()

    peak_reset = _reset_peak_rss()
    rss_before = _current_rss_kib()
    maxrss_before = _maxrss_kib()
    start = time.perf_counter()
    output = run(embeds, target)
    seconds = time.perf_counter() - start
    maxrss_after = _maxrss_kib()
    del output
    return {
        "seconds": seconds,
        "peak_rss_increase_mib": _peak_increase_kib(rss_before, maxrss_before, maxrss_after) / KIB_PER_MIB,
        "rss_before_mib": None if rss_before is None else rss_before / KIB_PER_MIB,
        "baseline_slack_mib": None if rss_before is None else max(maxrss_before - rss_before, 0) / KIB_PER_MIB,
        "peak_reset": peak_reset,
    }


def _peak_increase_kib(rss_before: int | None, maxrss_before: int, maxrss_after: int) -> int:
    r"""
    Peak RSS during the call minus the RSS right before it, from the ``ru_maxrss`` high-water mark.

    When the call raised the high-water mark, its peak is ``maxrss_after`` exactly. Otherwise the
    peak stayed below the mark it started with (``rss_before`` plus the ``baseline_slack``, which
    is about zero once the mark was reset right before the call) and 0 is reported.
    """
    if maxrss_after <= maxrss_before:
        return 0
    baseline = maxrss_before if rss_before is None else min(rss_before, maxrss_before)
    return maxrss_after - baseline


def worker_main(args: argparse.Namespace) -> None:
    result = measure(args.method, args.length, args.threads, args.ig_internal_batch_size, args.family)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# Driver side: schedule measurements in subprocesses, skip over-budget ones, report.
# --------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    method: str
    length: int
    status: str  # "ok", "skipped", "timeout" or "error"
    seconds: float | None = None
    peak_rss_increase_mib: float | None = None
    predicted_seconds: float | None = None
    reason: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)


def predict_seconds(method: str, length: int, previous: tuple[int, float] | None) -> float | None:
    """Time at ``length`` extrapolated from ``(previous_length, previous_seconds)``."""
    if previous is None:
        return None
    previous_length, previous_seconds = previous
    return previous_seconds * (length / previous_length) ** GROWTH_EXPONENT[method]


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


class WorkerError(RuntimeError):
    """A measurement subprocess failed (``status`` is ``"error"``) or ran out of time (``"timeout"``)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def worker_timeout(args: argparse.Namespace) -> float:
    """Hard limit for one worker: ``--timeout``, else 3 x ``--max-seconds`` plus a minute of setup."""
    return args.timeout if args.timeout is not None else 3 * args.max_seconds + 60


def run_worker(method: str, length: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh subprocess; raises ``WorkerError`` if it fails or times out."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--method", method,
        "--length", str(length),
        "--threads", str(args.threads),
        "--ig-internal-batch-size", str(args.ig_internal_batch_size),
        "--family", args.family,
    ]  # fmt: skip
    timeout = worker_timeout(args)
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=_worker_env(args.threads), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise WorkerError("timeout", f"worker killed after {timeout:g} s (--timeout)") from None
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
    raise WorkerError("error", f"worker exited with status {completed.returncode}: " + " | ".join(tail))


def measure_with_repeats(
    method: str, length: int, args: argparse.Namespace, predicted: float | None, repeats: int | None = None
) -> Measurement:
    """``repeats`` (default ``--repeats``) fresh-process runs of ``(method, length)`` in a row."""
    runs: list[dict[str, Any]] = []
    try:
        for _ in range(args.repeats if repeats is None else repeats):
            runs.append(run_worker(method, length, args))
    except WorkerError as error:
        return Measurement(method, length, error.status, predicted_seconds=predicted, reason=str(error), runs=runs)
    return Measurement(
        method,
        length,
        "ok",
        seconds=min(run["seconds"] for run in runs),
        peak_rss_increase_mib=max(run["peak_rss_increase_mib"] for run in runs),
        predicted_seconds=predicted,
        runs=runs,
    )


def benchmark_method(
    method: str, args: argparse.Namespace, on_result: Callable[[Measurement], None]
) -> list[Measurement]:
    """Measure ``method`` once at increasing lengths, skipping those predicted to exceed the budget."""
    results: list[Measurement] = []
    previous: tuple[int, float] | None = None  # (length, seconds): measured, or predicted if skipped
    for length in sorted(args.lengths):
        predicted = predict_seconds(method, length, previous)
        if previous is not None and predicted is not None and predicted > args.max_seconds:
            reason = (
                f"predicted {predicted:.0f} s (from {previous[1]:.1f} s at L={previous[0]}, "
                f"L^{GROWTH_EXPONENT[method]:g} growth) exceeds --max-seconds {args.max_seconds:g}"
            )
            result = Measurement(method, length, "skipped", predicted_seconds=predicted, reason=reason)
            previous = (length, predicted)
        else:
            result = measure_with_repeats(method, length, args, predicted, repeats=1)
            if result.seconds is not None:
                previous = (length, result.seconds)
            elif result.status == "timeout":  # a lower bound on its time: longer ones will be skipped
                previous = (length, worker_timeout(args))
        results.append(result)
        on_result(result)
    return results


def repeat_rounds(
    results: Sequence[Measurement], args: argparse.Namespace, on_run: Callable[[Measurement], None]
) -> None:
    r"""
    Rounds 2 to ``--repeats``: every ``(method, L)`` measured in the first round runs once more
    per round, all of them in turn. On a shared machine a busy spell then slows every method
    alike, instead of all the runs of one ``(method, L)`` in a row, which skews the ratios.
    """
    for _ in range(1, args.repeats):
        for result in results:
            if result.status != "ok":
                continue
            try:
                run = run_worker(result.method, result.length, args)
            except WorkerError as error:
                result.status, result.reason = error.status, str(error)
                result.seconds = result.peak_rss_increase_mib = None
            else:
                result.runs.append(run)
                result.seconds = min(each["seconds"] for each in result.runs)
                result.peak_rss_increase_mib = max(each["peak_rss_increase_mib"] for each in result.runs)
            on_run(result)


def _lookup(results: Sequence[Measurement], method: str, length: int) -> Measurement | None:
    for result in results:
        if result.method == method and result.length == length and result.status == "ok":
            return result
    return None


def _value(result: Measurement | None, attribute: str) -> float | None:
    return None if result is None else getattr(result, attribute)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def compute_ratios(results: Sequence[Measurement], family: str = IXG_TARGET_FAMILY) -> dict[str, Any]:
    """The acceptance ratios at L=1024 and MambaLRP's per-token cost growth from 1024 to 4096."""
    lrp = _lookup(results, "mamba_lrp", RATIO_LENGTH)
    forward = _lookup(results, "forward_nograd", RATIO_LENGTH)
    ixg = _lookup(results, "input_x_gradient", RATIO_LENGTH)
    lrp_over_forward = _ratio(_value(lrp, "seconds"), _value(forward, "seconds"))
    ixg_over_lrp = _ratio(_value(ixg, "seconds"), _value(lrp, "seconds"))
    return {
        "length": RATIO_LENGTH,
        "mamba_lrp_over_forward_nograd_time": lrp_over_forward,
        "mamba_lrp_over_forward_nograd_target": f"<= {MAX_LRP_OVER_FORWARD:g}",
        "mamba_lrp_over_forward_nograd_ok": _meets(lrp_over_forward, maximum=MAX_LRP_OVER_FORWARD),
        "input_x_gradient_over_mamba_lrp_time": ixg_over_lrp,
        **(
            {
                "input_x_gradient_over_mamba_lrp_target": f">= {MIN_IXG_OVER_LRP:g}",
                "input_x_gradient_over_mamba_lrp_ok": _meets(ixg_over_lrp, minimum=MIN_IXG_OVER_LRP),
            }
            if family == IXG_TARGET_FAMILY
            else {"input_x_gradient_over_mamba_lrp_target": None, "input_x_gradient_over_mamba_lrp_ok": None}
        ),
        "mamba_lrp_linearity": linearity(results, "mamba_lrp", *LINEARITY_LENGTHS),
    }


def _meets(value: float | None, minimum: float = -math.inf, maximum: float = math.inf) -> bool | None:
    return None if value is None else minimum <= value <= maximum


def linearity(results: Sequence[Measurement], method: str, short: int, long: int) -> dict[str, Any]:
    r"""
    Per-token cost at ``long`` over per-token cost at ``short`` (1 for linear scaling, ``long/short``
    for quadratic) and the exponent ``k`` of ``cost ~ L^k`` through the two points, for time and memory.
    """
    first, last = _lookup(results, method, short), _lookup(results, method, long)
    summary: dict[str, Any] = {"from_length": short, "to_length": long}
    for key, attribute in (("time", "seconds"), ("memory", "peak_rss_increase_mib")):
        a, b = _value(first, attribute), _value(last, attribute)
        per_token = _ratio(None if b is None else b / long, None if a is None else a / short)
        summary[f"{key}_per_token_ratio"] = per_token
        summary[f"{key}_exponent"] = (
            None if per_token is None or per_token <= 0 else 1.0 + math.log(per_token) / math.log(long / short)
        )
    return summary


def machine_info(threads: int) -> dict[str, Any]:
    """The CPU the run measures on and its thread count (versions and commit: ``provenance``)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }


def report(args: argparse.Namespace, results: Sequence[Measurement], record: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: machine, configuration, measurements, ratios and ``provenance`` (``record``)."""
    return {
        "benchmark": "cpu_scaling",
        "provenance": record,
        "machine": machine_info(args.threads),
        "config": {
            "model": {"class": FAMILIES[args.family][1], **MODEL_CONFIG, **FAMILIES[args.family][2]},
            "dtype": "float32",
            "batch_size": 1,
            "seed": SEED,
            "lengths": sorted(args.lengths),
            "methods": list(args.methods),
            "repeats": args.repeats,
            "max_seconds": args.max_seconds,
            "timeout_seconds": worker_timeout(args),
            "integrated_gradients": {"n_steps": IG_STEPS, "internal_batch_size": args.ig_internal_batch_size},
            "time": (
                "min over repeats of one call's wall time (after a warm-up call at L=16); the repeats "
                "run in rounds over all (method, L) pairs"
            ),
            "memory": (
                "max over repeats of the peak RSS during the call (ru_maxrss, high-water mark reset right "
                "before it) minus the RSS right before it, each repeat in a fresh process"
            ),
        },
        "results": [asdict(result) for result in results],
        "ratios": compute_ratios(results, args.family),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _cell(result: Measurement | None, attribute: str, precision: int) -> str:
    if result is None:
        return "-"
    if result.status != "ok":
        return result.status
    return f"{getattr(result, attribute):.{precision}f}"


def format_table(results: Sequence[Measurement], methods: Sequence[str], lengths: Sequence[int]) -> str:
    def table(title: str, attribute: str, precision: int) -> list[str]:
        header = f"{title:<22}" + "".join(f"{f'L={length}':>11}" for length in lengths)
        rows = [header, "-" * len(header)]
        for method in methods:
            by_length = {r.length: r for r in results if r.method == method}
            cells = (_cell(by_length.get(length), attribute, precision) for length in lengths)
            rows.append(f"{method:<22}" + "".join(f"{cell:>11}" for cell in cells))
        return rows

    lines = table("wall time (s)", "seconds", 3) + [""] + table("peak RSS increase (MiB)", "peak_rss_increase_mib", 1)
    notes = [f"  {r.method} L={r.length}: {r.status}: {r.reason}" for r in results if r.status != "ok"]
    return "\n".join(lines + ([""] + notes if notes else []))


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def format_ratios(ratios: dict[str, Any]) -> str:
    linear = ratios["mamba_lrp_linearity"]
    span = f"L={linear['from_length']} -> {linear['to_length']}"
    return "\n".join(
        [
            f"at L={ratios['length']}:",
            f"  mamba_lrp / forward_nograd time     = {_fmt(ratios['mamba_lrp_over_forward_nograd_time'])}"
            f"  (target {ratios['mamba_lrp_over_forward_nograd_target']})",
            f"  input_x_gradient / mamba_lrp time   = {_fmt(ratios['input_x_gradient_over_mamba_lrp_time'], '.1f')}"
            f"  (target {ratios['input_x_gradient_over_mamba_lrp_target'] or 'none for this family'})",
            f"mamba_lrp per-token cost ratio, {span} (1 = linear):",
            f"  time   {_fmt(linear['time_per_token_ratio'])}  (exponent {_fmt(linear['time_exponent'])})",
            f"  memory {_fmt(linear['memory_per_token_ratio'])}  (exponent {_fmt(linear['memory_exponent'])})",
        ]
    )


def driver_main(args: argparse.Namespace) -> None:
    from _provenance import result_provenance

    record = result_provenance(args.json, "cpu")  # refuses an untraceable benchmarks/results/ file up front
    results: list[Measurement] = []

    def on_result(result: Measurement, first: bool = True) -> None:
        if first:
            results.append(result)
        if result.status == "ok":
            outcome = f"{result.seconds:9.3f} s {result.peak_rss_increase_mib:9.1f} MiB"
        else:
            outcome = f"{result.status}: {result.reason}"
        runs = "" if first else f"  (min of {len(result.runs)} runs)"
        print(f"{result.method:<22} L={result.length:<6} {outcome}{runs}")
        sys.stdout.flush()
        if args.json:  # keep partial results if a long run is interrupted
            write_json(args.json, report(args, results, record))

    info = machine_info(args.threads)
    print(
        f"{info['platform']}, {info['cpu_count']} CPUs, torch {record['torch']}, {args.threads} threads, "
        f"budget {args.max_seconds:g} s per measurement\n"
    )
    for method in args.methods:
        benchmark_method(method, args, on_result)
    repeat_rounds(results, args, lambda result: on_result(result, first=False))
    print()
    print(format_table(results, args.methods, sorted(args.lengths)))
    print()
    print(format_ratios(compute_ratios(results, args.family)))
    if args.json:
        write_json(args.json, report(args, results, record))
        print(f"\nwrote {args.json}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), help="sequence lengths")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to measure")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="fresh-process runs per (method, L), in rounds over all pairs; the min time is reported",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (and OMP/MKL threads)")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="skip a (method, L) whose predicted time exceeds this"
    )
    parser.add_argument(
        "--ig-internal-batch-size", type=int, default=10, help="IntegratedGradients internal_batch_size"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="kill a measurement subprocess after this many seconds (default: 3 x --max-seconds + 60)",
    )
    parser.add_argument(
        "--family", choices=sorted(FAMILIES), default="mamba", help="model family (Hugging Face causal LM)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write results and machine info to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.ig_internal_batch_size < 1:
        parser.error("--repeats, --threads and --ig-internal-batch-size must be positive")
    if any(length < 1 for length in args.lengths):
        parser.error("--lengths must be positive")
    args.lengths = sorted(set(args.lengths))
    if args.worker and (args.method is None or args.length is None):
        parser.error("--worker needs --method and --length")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
            sys.path.insert(0, str(REPO_ROOT))
        worker_main(args)
    else:
        driver_main(args)


if __name__ == "__main__":
    main()
