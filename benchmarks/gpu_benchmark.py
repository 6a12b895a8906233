"""GPU wall time and peak memory of MambaLRP and Captum baselines on Hugging Face Mamba models.

Runs on a CUDA machine with the ``gpu`` extra (mamba-ssm, causal-conv1d): every method goes
through the same model on the same CUDA kernels, explains the same target (the logit of one
token at the last position, logits computed at that position only) for the same batch of one.

Methods:

* ``mamba_lrp``: ``MambaLRP(model)`` (kernel path: causal-conv1d without its activation,
  ``selective_scan_fn`` with delta, B, C detached, rules outside the kernels);
* ``mamba_lrp_lean``: ``MambaLRP(model, memory_lean=True)`` (per-block recomputation);
* ``mamba_lrp_torch``: ``MambaLRP(model, backend="torch")`` (the pure-PyTorch scan, for contrast);
* ``input_x_gradient``: Captum ``InputXGradient``;
* ``integrated_gradients``: Captum ``IntegratedGradients`` (``n_steps=50``, ``internal_batch_size=10``);
* ``smoothgrad``: Captum ``NoiseTunnel(InputXGradient)`` (``nt_samples=10``, batches of 2).

Usage: ``python benchmarks/gpu_benchmark.py --json results.json --plot results.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

SIZES: dict[str, dict[str, int]] = {
    "130m": {"hidden_size": 768, "num_hidden_layers": 24},
    "1.4b": {"hidden_size": 2048, "num_hidden_layers": 48},
}
COMMON = {"vocab_size": 50280, "state_size": 16, "expand": 2, "conv_kernel": 4}
GROWTH = {
    "mamba_lrp": 1.0,
    "mamba_lrp_lean": 1.0,
    "mamba_lrp_torch": 1.0,
    "input_x_gradient": 1.0,
    "integrated_gradients": 1.0,
    "smoothgrad": 1.0,
}


def build_model(size: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(**COMMON, **SIZES[size], use_cache=False)
    with torch.device("cuda"):
        model = MambaForCausalLM(config)
    return model.to(dtype).eval().requires_grad_(False)


def explainers(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor, int], torch.Tensor]]:
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel

    from captum_mamba import MambaLRP

    def last_logits(embeds: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[:, -1]

    return {
        "mamba_lrp": lambda e, t: MambaLRP(model).attribute(e, target=t),
        "mamba_lrp_lean": lambda e, t: MambaLRP(model, memory_lean=True).attribute(e, target=t),
        "mamba_lrp_torch": lambda e, t: MambaLRP(model, backend="torch").attribute(e, target=t),
        "input_x_gradient": lambda e, t: InputXGradient(last_logits).attribute(e.requires_grad_(), target=t),
        "integrated_gradients": lambda e, t: IntegratedGradients(last_logits).attribute(
            e, target=t, n_steps=50, internal_batch_size=10
        ),
        "smoothgrad": lambda e, t: NoiseTunnel(InputXGradient(last_logits)).attribute(
            e, target=t, nt_type="smoothgrad", nt_samples=10, nt_samples_batch_size=2, stdevs=0.01
        ),
    }


def measure(
    run: Callable[[torch.Tensor, int], torch.Tensor], model: torch.nn.Module, length: int, repeats: int = 1
) -> dict[str, Any]:
    """Median wall time and the largest peak memory over ``repeats`` runs (after the caller's warm-up)."""
    results = [_measure_once(run, model, length) for _ in range(repeats)]
    if any(r["status"] != "ok" for r in results):
        return {"status": "oom"}
    seconds = sorted(r["seconds"] for r in results)
    return {
        "status": "ok",
        "seconds": seconds[len(seconds) // 2],
        "seconds_all": seconds,
        "peak_gib": max(r["peak_gib"] for r in results),
        "finite": all(r["finite"] for r in results),
    }


def _measure_once(
    run: Callable[[torch.Tensor, int], torch.Tensor], model: torch.nn.Module, length: int
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(0, COMMON["vocab_size"], (1, length), generator=generator).cuda()
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids).detach()
    target = int(ids[0, -1])
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    try:
        relevance = run(embeds, target)
        torch.cuda.synchronize()
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"status": "oom"}
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - before
    finite = bool(torch.isfinite(relevance).all())
    del relevance
    return {"status": "ok", "seconds": seconds, "peak_gib": peak / 2**30, "finite": finite}


def run_size(
    size: str, lengths: list[int], methods: list[str], budget: float, log: Callable[[dict], None], repeats: int = 1
) -> None:
    model = build_model(size)
    runs = explainers(model)
    for method in methods:
        measure(runs[method], model, 512)  # warm-up: kernels, Triton, allocator
        previous: tuple[int, float] | None = None
        for length in sorted(lengths):
            if previous is not None and previous[1] * (length / previous[0]) ** GROWTH[method] > budget:
                log({"size": size, "method": method, "length": length, "status": "skipped (time budget)"})
                continue
            result = measure(runs[method], model, length, repeats if previous is None or previous[1] < 2 else 1)
            log({"size": size, "method": method, "length": length, **result})
            if result["status"] != "ok":
                break
            previous = (length, result["seconds"])
    del model, runs
    torch.cuda.empty_cache()


def paired_ratios(size: str, lengths: list[int], methods: tuple[str, str], repeats: int) -> list[dict[str, Any]]:
    """Time two methods alternately (A, B, A, B, ...) at each length, so drift hits both alike."""
    model = build_model(size)
    runs = explainers(model)
    for method in methods:
        measure(runs[method], model, 512)
    rows = []
    for length in lengths:
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(repeats):
            for method in methods:
                times[method].append(_measure_once(runs[method], model, length)["seconds"])
        medians = {m: sorted(t)[len(t) // 2] for m, t in times.items()}
        rows.append(
            {
                "size": size,
                "length": length,
                "methods": list(methods),
                "median_seconds": medians,
                "min_seconds": {m: min(t) for m, t in times.items()},
                "ratio_of_medians": medians[methods[0]] / medians[methods[1]],
                "repeats": repeats,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    del model, runs
    torch.cuda.empty_cache()
    return rows


def precision_report(length: int) -> dict[str, Any]:
    """bf16 / fp16 relevances against float32 on the 130m-sized model (same weights)."""
    from captum_mamba import LayerMambaLRP

    ids = torch.randint(0, COMMON["vocab_size"], (1, length), generator=torch.Generator().manual_seed(7)).cuda()
    reference = None
    report: dict[str, Any] = {"length": length}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        model = build_model("130m", dtype)
        relevance = LayerMambaLRP(model, model.backbone.embeddings).attribute(ids, target=11).float().sum(-1)
        if reference is None:
            reference = relevance
        else:
            error = float((relevance - reference).abs().max() / reference.abs().max())
            correlation = float(torch.corrcoef(torch.stack([relevance.flatten(), reference.flatten()]))[0, 1])
            top = set(reference.flatten().topk(10).indices.tolist())
            overlap = len(top & set(relevance.flatten().topk(10).indices.tolist())) / 10
            report[name] = {"max_error_of_max": error, "correlation": correlation, "top10_overlap": overlap}
        del model
        torch.cuda.empty_cache()
    return report


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    for size in SIZES:
        for method in GROWTH:
            points = [r for r in results if r["size"] == size and r["method"] == method and r["status"] == "ok"]
            if not points:
                continue
            style = "-" if size == "130m" else "--"
            label = f"{method} ({size})"
            time_axis.plot(
                [p["length"] for p in points], [p["seconds"] for p in points], style, marker="o", label=label
            )
            memory_axis.plot(
                [p["length"] for p in points], [p["peak_gib"] for p in points], style, marker="o", label=label
            )
    for axis, name in ((time_axis, "wall time (s)"), (memory_axis, "peak GPU memory (GiB)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("tokens")
        axis.set_ylabel(name)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=7)
    figure.suptitle(f"MambaLRP vs Captum baselines on {torch.cuda.get_device_name()} (float32)")
    figure.tight_layout()
    figure.savefig(path, dpi=130)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| size | method | tokens | time (s) | peak (GiB) |", "|---|---|---:|---:|---:|"]
    for r in results:
        if r["status"] == "ok":
            lines.append(f"| {r['size']} | {r['method']} | {r['length']} | {r['seconds']:.3f} | {r['peak_gib']:.2f} |")
        else:
            lines.append(f"| {r['size']} | {r['method']} | {r['length']} | {r['status']} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 32768])
    parser.add_argument("--long-lengths", type=int, nargs="+", default=[65536, 131072, 262144],
                        help="extra lengths for mamba_lrp_lean on the 130m size")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(GROWTH), choices=list(GROWTH))
    parser.add_argument("--budget", type=float, default=40.0, help="skip runs predicted to take longer (s)")
    parser.add_argument("--precision-length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per point (median); runs over 2 s once")
    parser.add_argument(
        "--ratio-repeats", type=int, default=0, help="then time mamba_lrp vs input_x_gradient alternately (130m)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    from _provenance import result_provenance

    record = result_provenance(args.json, "cuda")  # refuses an untraceable benchmarks/results/ file up front

    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "benchmark": "gpu_benchmark",
        "provenance": record,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dtype": "float32",
        "results": results,
    }

    def log(entry: dict[str, Any]) -> None:
        results.append(entry)
        print(json.dumps(entry), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))

    if args.precision_length:
        report["precision"] = precision_report(args.precision_length)
        print(json.dumps(report["precision"]), flush=True)
    for size in args.sizes:
        run_size(size, args.lengths, args.methods, args.budget, log, args.repeats)
        if size == "130m" and "mamba_lrp_lean" in args.methods and args.long_lengths:
            run_size(size, args.long_lengths, ["mamba_lrp_lean"], 10 * args.budget, log)
        if args.plot:  # after each size, so that a run cut short still leaves a plot
            plot(results, args.plot)
    if args.ratio_repeats:
        report["paired_ratios"] = paired_ratios(
            "130m", [n for n in args.lengths if n >= 2048], ("mamba_lrp", "input_x_gradient"), args.ratio_repeats
        )
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
