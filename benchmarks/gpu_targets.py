"""The GPU performance targets in one run: half precision, a 7B-sized model, Mamba-2, a million tokens.

Every timed comparison runs the methods through the same model on the same CUDA kernels
(causal-conv1d, mamba-ssm's selective scan or SSD kernels), parameters frozen, one sequence of
random token ids, the logit of one token at the last position (logits computed there only):

* ``mamba_lrp``: ``MambaLRP(model)`` (the fused mixer node where it applies);
* ``input_x_gradient``: Captum ``InputXGradient`` through the model's own forward;
* ``forward``: a no-grad forward pass (the floor).

Timed alternately after a warm-up (medians of ``--repeats``); peak memory is the largest
allocation above the model's own. Sections (``--sections``):

* ``trained_precision``: the shipped default model (trained) in bfloat16 / float16 against float32:
  token-relevance correlation, top-1 agreement and error on held-out sentences;
* ``mamba1``: 130m-sized Mamba in float32, bfloat16, float16 at 8k and 32k; 1.4b-sized in
  bfloat16 at 8k;
* ``falcon_mamba_7b``: FalconMamba-7B's size (d_model 4096, 64 layers) in bfloat16 at 8k and 32k;
* ``mamba2``: Hugging Face Mamba-2, 130m- and 1.3b-sized, float32 at 2k, 8k and 32k;
* ``mamba_ssm_mamba2``: mamba-ssm's own ``MambaLMHeadModel`` with ``Mamba2`` mixers, the same
  sizes and lengths (token ids in; relevance of the embedding output, against Captum's
  ``LayerGradientXActivation`` there; its training-style fused path
  ``mamba_split_conv1d_scan_combined`` is what InputXGradient differentiates);
* ``million``: 1,048,576 tokens through the 130m-sized model with ``memory_lean="offload"``;
* ``breakdown``: CUDA kernel time by kernel for each method (130m, float32, 8k);
* ``hybrid``: the 1.6B-sized Bamba of ``hybrid_gpu_benchmark.py`` in bfloat16 at 8k and 32k and
  in float32 at 8k (MambaLRP with AttnLRP and with CP-LRP, memory-lean from ``--lean-from``; in
  float32 at 32k neither InputXGradient nor the model's own forward fits on an H200, so that row
  times MambaLRP alone: ``hybrid_gpu_benchmark.py --dtypes float32 --lengths 32768``).

With ``--gpus N`` the sections are shared out over N GPUs of the machine (one process each,
``CUDA_VISIBLE_DEVICES``; the longest first, each to the least loaded GPU) and their results
merged into one JSON with one provenance record and the jobs' GPUs, sections and seconds: every
target in one run of one command, from one checkout.

The JSON records ``TRITON_F32_DEFAULT`` (``"ieee"`` makes the Triton SSD kernels' float32
matmuls IEEE instead of TF32; it must be set before the kernels compile).

Usage (on the GPU machine, from a clean checkout):
``python benchmarks/gpu_targets.py --gpus 2 --lean-from 32768 --json benchmarks/results/gpu_targets_h200.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _methods import compare_last_logit_methods, last_logit_methods, random_last_token_inputs
from _provenance import result_provenance, with_provenance
from _timing import timed_cuda

VOCAB = 50280
MAMBA_SIZES = {
    "130m": dict(hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4),
    "1.4b": dict(hidden_size=2048, num_hidden_layers=48, state_size=16, expand=2, conv_kernel=4),
}
FALCON_MAMBA_7B = dict(
    hidden_size=4096, intermediate_size=8192, num_hidden_layers=64, state_size=16, time_step_rank=256,
    conv_kernel=4, expand=16, use_conv_bias=True, use_bias=False, vocab_size=65024, mixer_rms_eps=1e-6,
)  # fmt: skip
MAMBA2_SIZES = {
    "130m": dict(hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64, state_size=128, n_groups=1),
    "1.3b": dict(hidden_size=2048, num_hidden_layers=48, num_heads=64, head_dim=64, state_size=128, n_groups=1),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SECTIONS = (
    "trained_precision", "mamba1", "falcon_mamba_7b", "mamba2", "mamba_ssm_mamba2", "million", "breakdown", "hybrid",
)  # fmt: skip
#: Rough seconds of each section on one H200 (this sitting's runs), to share the sections out over ``--gpus``.
SECTION_SECONDS = {
    "trained_precision": 30, "mamba1": 110, "falcon_mamba_7b": 100, "mamba2": 160, "mamba_ssm_mamba2": 160,
    "million": 110, "breakdown": 20, "hybrid": 170,
}  # fmt: skip


def build(family: str, settings: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    """A randomly initialised causal LM (seed 0) on the GPU, frozen, in eval mode."""
    import transformers

    config_class, model_class = {
        "mamba": (transformers.MambaConfig, transformers.MambaForCausalLM),
        "falcon_mamba": (transformers.FalconMambaConfig, transformers.FalconMambaForCausalLM),
        "mamba2": (transformers.Mamba2Config, transformers.Mamba2ForCausalLM),
    }[family]
    torch.manual_seed(0)
    config = config_class(**{"vocab_size": VOCAB, **settings}, use_cache=False)
    with torch.device("cuda"):
        model = model_class(config)
    return model.to(dtype).eval().requires_grad_(False)


def build_mamba_ssm_mamba2(settings: dict[str, Any]) -> torch.nn.Module:
    """mamba-ssm's ``MambaLMHeadModel`` with ``Mamba2`` mixers of a :data:`MAMBA2_SIZES` size (seed 0, float32)."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    torch.manual_seed(0)
    mixer = {"layer": "Mamba2", "d_state": settings["state_size"], "headdim": settings["head_dim"], "expand": 2}
    mixer["ngroups"] = settings["n_groups"]
    config = MambaConfig(
        d_model=settings["hidden_size"], n_layer=settings["num_hidden_layers"], vocab_size=VOCAB, ssm_cfg=mixer,
        rms_norm=True, fused_add_norm=True, residual_in_fp32=True, pad_vocab_size_multiple=8,
    )  # fmt: skip
    return MambaLMHeadModel(config, device="cuda", dtype=torch.float32).eval().requires_grad_(False)


def methods(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor, int], Any]]:
    return last_logit_methods(model)


def trained_precision(sentences: int) -> dict[str, Any]:
    """The shipped (trained) default model in half precision against float32, sentence by sentence."""
    from captum_mamba import LayerMambaLRP
    from captum_mamba.default import encode, load_default_classifier
    from captum_mamba.default.data import split_rotten_tomatoes

    _, test = split_rotten_tomatoes()
    texts = [text for text, _ in test[:sentences]]
    relevances: dict[str, list[torch.Tensor]] = {}
    predictions: dict[str, list[int]] = {}
    for name, dtype in DTYPES.items():
        model, tokenizer = load_default_classifier(dtype=dtype)
        model = model.cuda().requires_grad_(False)
        explainer = LayerMambaLRP(model, model.get_input_embeddings())
        relevances[name], predictions[name] = [], []
        for text in texts:  # one at a time, no padding: the fused node runs
            ids, _ = encode(tokenizer, [text])
            ids = ids.cuda()
            with torch.no_grad():
                label = int(model(input_ids=ids).logits.argmax(-1))
            predictions[name].append(label)
            relevances[name].append(explainer.attribute(ids, target=label).float().sum(-1)[0].cpu())
        del model
    report: dict[str, Any] = {"model": "default sentiment classifier (trained)", "sentences": len(texts)}
    for name in ("bfloat16", "float16"):
        same = [i for i, (a, b) in enumerate(zip(predictions["float32"], predictions[name])) if a == b]
        correlations, top1, errors = [], 0, []
        for i in same:
            ref, half = relevances["float32"][i], relevances[name][i]
            top1 += int(ref.argmax() == half.argmax())
            errors.append(float((half - ref).abs().max() / ref.abs().max()))
            if ref.numel() > 2:
                correlations.append(float(torch.corrcoef(torch.stack([ref, half]))[0, 1]))
        correlations.sort()
        report[name] = {
            "same_prediction": len(same) / len(texts),
            "median_token_correlation": correlations[len(correlations) // 2],
            "lowest_token_correlation": correlations[0],
            "top1_token_agreement": top1 / len(same),
            "median_max_error_of_max": sorted(errors)[len(errors) // 2],
        }
    print(json.dumps(report), flush=True)
    return report


def million_tokens(length: int, prefix: int = 8192) -> dict[str, Any]:
    r"""
    ``memory_lean="offload"`` at ``length`` tokens through the 130m-sized model, float32: time, peak
    memory, the relevances' sum against the logit of a separate no-grad forward; then the first
    ``prefix`` tokens explained the same way and in float64 on the PyTorch path (same weights): the
    float64 run's delta shows what the rules conserve, its relevances what float32 rounding costs.
    (The model's own forward gives the logit in float32: its CUDA kernels take no float64.)
    """
    import copy

    from captum_mamba import MambaLRP

    model = build("mamba", MAMBA_SIZES["130m"], torch.float32)
    embeds, target = random_last_token_inputs(model, length)
    explainer = MambaLRP(model, memory_lean="offload")
    explainer.attribute(embeds[:, :4096], target=target)  # warm-up
    result: dict[str, Any] = {"length": length, "memory_lean": "offload", "dtype": "float32", "size": "130m"}
    forward = methods(model)["forward"]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        return explainer.attribute(embeds, target=target, return_convergence_delta=True)

    try:
        outputs: list[Any] = []
        seconds, peak = timed_cuda(lambda: outputs.append(run()))
        relevance, delta = outputs[0]
        logit = float(forward(embeds, target)[0, target].double())  # computed apart from the explanation
        total = float(relevance.double().sum())
        result.update(
            status="ok",
            seconds=seconds,
            peak_gib=peak,
            relevance_finite=bool(torch.isfinite(relevance).all()),
            delta=float(delta.double().abs().max()),
            logit=logit,
            relevance_sum=total,
            sum_minus_forward_logit=total - logit,
            relative_error=abs(total - logit) / max(1.0, abs(logit)),
        )
        del relevance
        outputs.clear()
    except torch.OutOfMemoryError as error:
        result.update(status="out of memory", message=str(error)[:500])
    print(json.dumps(result), flush=True)
    torch.cuda.empty_cache()
    short = embeds[:, :prefix]
    relevance32 = explainer.attribute(short, target=target)
    logit32 = float(forward(short, target)[0, target].double())  # the model's own forward (float32 kernels)
    reference = copy.deepcopy(model).double()
    relevance64, delta64 = MambaLRP(reference, backend="torch").attribute(
        short.double(), target=target, return_convergence_delta=True
    )
    result["float64_prefix"] = {
        "tokens": prefix,
        "float64_delta": float(delta64.abs().max()),
        "float64_sum_minus_float32_forward_logit": float(relevance64.sum()) - logit32,
        "float32_offload_sum_minus_float32_forward_logit": float(relevance32.double().sum()) - logit32,
        "max_relevance_error_float32_offload_vs_float64": float(
            (relevance32.double() - relevance64).abs().max() / relevance64.abs().max()
        ),
    }
    print(json.dumps(result), flush=True)
    del model, reference
    torch.cuda.empty_cache()
    return result


def breakdown(length: int, log: Path | None) -> dict[str, Any]:
    """CUDA kernel time by kernel (top 12) of each method, one profiled run after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    model = build("mamba", MAMBA_SIZES["130m"], torch.float32)
    embeds, target = random_last_token_inputs(model, length)
    report: dict[str, Any] = {"size": "130m", "dtype": "float32", "length": length}
    texts = []
    for name, run in methods(model).items():
        run(embeds, target)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(embeds, target)
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_time_total > 0]
        total = sum(e.device_time_total for e in events)
        events.sort(key=lambda e: -e.device_time_total)
        report[name] = {
            "cuda_ms": total / 1000,
            "kernels": [
                {"name": e.key[:90], "cuda_ms": e.device_time_total / 1000, "calls": e.count} for e in events[:12]
            ],
        }
        table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=90)
        texts.append(f"## {name}: {total / 1000:.1f} ms CUDA time\n" + table)
    report["mamba_lrp_to_forward_cuda_time"] = report["mamba_lrp"]["cuda_ms"] / report["forward"]["cuda_ms"]
    report["input_x_gradient_to_forward_cuda_time"] = (
        report["input_x_gradient"]["cuda_ms"] / report["forward"]["cuda_ms"]
    )
    if log is not None:
        log.write_text("\n\n".join(texts))
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}), flush=True)
    del model
    torch.cuda.empty_cache()
    return report


def share_out(sections: list[str], gpus: int) -> list[list[str]]:
    """The sections of each GPU: the longest first (:data:`SECTION_SECONDS`), each to the least loaded GPU."""
    shares: list[list[str]] = [[] for _ in range(gpus)]
    loads = [0.0] * gpus
    for section in sorted(sections, key=lambda name: -SECTION_SECONDS[name]):
        gpu = loads.index(min(loads))
        shares[gpu].append(section)
        loads[gpu] += SECTION_SECONDS[section]
    return [sorted(share, key=SECTIONS.index) for share in shares if share]


def run_on_gpus(args: argparse.Namespace, forwarded: list[str]) -> dict[str, Any]:
    r"""
    Run the sections over ``args.gpus`` GPUs, one child process of this script each, and merge
    their JSON: rows and hybrid rows in section order, the other sections' results, errors, and
    ``jobs`` (GPU, sections, seconds, return code).
    """
    import subprocess
    import tempfile
    import time

    folder = Path(tempfile.mkdtemp(prefix="gpu_targets_"))
    jobs = []
    for gpu, sections in enumerate(share_out(args.sections, args.gpus)):
        out = folder / f"gpu{gpu}.json"
        command = [sys.executable, __file__, *forwarded, "--sections", *sections, "--json", str(out)]
        if "breakdown" not in sections:
            command = [c for i, c in enumerate(command) if not _is_breakdown_log_argument(command, i)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
        print(f"GPU {gpu}: {' '.join(sections)}", flush=True)
        jobs.append((gpu, sections, out, time.perf_counter(), subprocess.Popen(command, env=env)))
    merged: dict[str, Any] = {"rows": [], "triton_f32_default": os.environ.get("TRITON_F32_DEFAULT"), "jobs": []}
    for gpu, sections, _out, start, process in jobs:
        code = process.wait()
        merged["jobs"].append(
            {"gpu": gpu, "sections": sections, "seconds": time.perf_counter() - start, "returncode": code}
        )
    for gpu, _sections, out, _, _ in sorted(jobs, key=lambda job: SECTIONS.index(job[1][0])):
        if not out.exists():
            merged.setdefault("errors", {})[f"gpu{gpu}"] = "the job wrote no result"
            continue
        part = json.loads(out.read_text())
        part.pop("provenance", None)
        merged["rows"].extend(part.pop("rows", []))
        merged.setdefault("errors", {}).update(part.pop("errors", {}))
        part.pop("triton_f32_default", None)
        merged.update(part)
    if not merged.get("errors"):
        merged.pop("errors", None)
    merged["rows"].sort(key=lambda row: SECTIONS.index(_section_of(row)))
    return merged


def _is_breakdown_log_argument(command: list[str], index: int) -> bool:
    """Whether ``command[index]`` is ``--breakdown-log`` or its value (only the breakdown's job writes the log)."""
    return command[index] == "--breakdown-log" or (index > 0 and command[index - 1] == "--breakdown-log")


def _section_of(row: dict[str, Any]) -> str:
    family = row.get("family")
    return {"mamba": "mamba1", "falcon_mamba": "falcon_mamba_7b"}.get(family, family)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--million", type=int, default=1_048_576, help="tokens of the million-token run")
    parser.add_argument("--sentences", type=int, default=200, help="held-out sentences of trained_precision")
    parser.add_argument("--breakdown-log", type=Path, default=None, help="the profiler tables (text)")
    parser.add_argument(
        "--lean-from", type=int, default=None, help="from this length on, also time MambaLRP(memory_lean=True)"
    )
    parser.add_argument("--mamba2-sizes", nargs="+", default=list(MAMBA2_SIZES), choices=list(MAMBA2_SIZES))
    parser.add_argument("--mamba2-lengths", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument(
        "--float64-up-to",
        type=int,
        default=None,
        help="HF Mamba-2 rows up to this length: also the float64 logit (slow)",
    )
    parser.add_argument(
        "--mamba1-dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="the 1.4b row runs with bfloat16"
    )
    parser.add_argument("--hybrid-repeats", type=int, default=3, help="timed runs of each method in the hybrid rows")
    parser.add_argument("--gpus", type=int, default=1, help="share the sections out over this many GPUs")
    args = parser.parse_args()
    record = result_provenance(args.json, "cuda")

    def save(result: dict[str, Any]) -> None:
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(with_provenance(dict(result), record), indent=1))

    if args.gpus > 1:
        forwarded = [a for i, a in enumerate(sys.argv[1:]) if not _is_own_argument(sys.argv[1:], i)]
        merged = run_on_gpus(args, forwarded)
        save(merged)
        print_rows(merged)
        return
    result: dict[str, Any] = {"rows": [], "triton_f32_default": os.environ.get("TRITON_F32_DEFAULT")}
    run_sections(args, result, lambda: save(result))
    print_rows(result)
    save(result)


def _is_own_argument(argv: list[str], index: int) -> bool:
    """Whether ``argv[index]`` belongs to ``--gpus``, ``--sections`` or ``--json`` (set per job by :func:`run_on_gpus`)."""
    own = ("--gpus", "--sections", "--json")
    for start in range(index, -1, -1):
        if argv[start].startswith("--"):
            return argv[start].split("=")[0] in own
    return False


def run_sections(args: argparse.Namespace, result: dict[str, Any], save: Callable[[], None]) -> None:
    """Run the chosen sections into ``result``, saving after each row and section."""

    def rows(family: str, settings: dict[str, Any], dtype: str, lengths: list[int], size: str, repeats: int) -> None:
        mamba_ssm = family == "mamba_ssm_mamba2"
        model = build_mamba_ssm_mamba2(settings) if mamba_ssm else build(family, settings, DTYPES[dtype])
        for length in lengths:
            label = {"family": family, "size": size, "dtype": dtype}
            lean = args.lean_from is not None and length >= args.lean_from
            float64_up_to = args.float64_up_to if family == "mamba2" else None
            row = compare_last_logit_methods(
                model, length, repeats, label, lean=lean, mamba_ssm=mamba_ssm, float64_up_to=float64_up_to
            )
            result["rows"].append(row)
            save()
        del model
        torch.cuda.empty_cache()

    def attempt(section: str, run: Callable[[], Any]) -> None:
        """Run one section; an error is recorded (and printed) and the next section runs."""
        if section not in args.sections:
            return
        try:
            run()
        except Exception as error:  # noqa: BLE001 (a benchmark run keeps going)
            import traceback

            traceback.print_exc()
            result.setdefault("errors", {})[section] = f"{type(error).__name__}: {error}"[:2000]
            torch.cuda.empty_cache()
        save()

    def mamba1() -> None:
        for dtype in args.mamba1_dtypes:
            rows("mamba", MAMBA_SIZES["130m"], dtype, [8192, 32768], "130m", args.repeats)
        if "bfloat16" in args.mamba1_dtypes:
            rows("mamba", MAMBA_SIZES["1.4b"], "bfloat16", [8192], "1.4b", args.repeats)

    def mamba2(family: str) -> None:
        for size in args.mamba2_sizes:
            rows(family, MAMBA2_SIZES[size], "float32", args.mamba2_lengths, size, args.repeats)

    attempt("trained_precision", lambda: result.update(trained_precision=trained_precision(args.sentences)))
    attempt("mamba1", mamba1)
    attempt(
        "falcon_mamba_7b",
        lambda: rows("falcon_mamba", FALCON_MAMBA_7B, "bfloat16", [8192, 32768], "7b", max(2, args.repeats // 2)),
    )
    attempt("mamba2", lambda: mamba2("mamba2"))
    attempt("mamba_ssm_mamba2", lambda: mamba2("mamba_ssm_mamba2"))
    attempt("million", lambda: result.update(million=million_tokens(args.million)))
    attempt("breakdown", lambda: result.update(breakdown=breakdown(8192, args.breakdown_log)))
    attempt("hybrid", lambda: result.update(hybrid=hybrid_rows(args.hybrid_repeats, args.lean_from)))


def hybrid_rows(repeats: int, lean_from: int | None) -> dict[str, Any]:
    """The 1.6B-sized Bamba of ``hybrid_gpu_benchmark.py``: bfloat16 at 8k and 32k tokens, float32 at 8k."""
    from _methods import compare_over_dtypes_and_lengths, markdown_table
    from hybrid_gpu_benchmark import DTYPES as HYBRID_DTYPES
    from hybrid_gpu_benchmark import _attention
    from hybrid_gpu_benchmark import build as build_bamba

    from captum_mamba.evaluation.dataset import BAMBA_1B

    attention = _attention()
    rows = []
    for dtype, lengths in (("bfloat16", [8192, 32768]), ("float32", [8192])):
        dtypes = {dtype: HYBRID_DTYPES[dtype]}
        rows += compare_over_dtypes_and_lengths(build_bamba, dtypes, lengths, repeats, attention, lean_from)
    print(markdown_table(rows), flush=True)
    return {"model": {"family": "bamba (random weights)", **BAMBA_1B}, "rows": rows}


def print_rows(result: dict[str, Any]) -> None:
    """The timed rows as a Markdown table."""
    print(
        "| family | size | dtype | tokens | MambaLRP s | IxG s | forward s | LRP/IxG | LRP/forward | peak GiB LRP / IxG |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in result["rows"]:
        m, p = row["median_seconds"], row["peak_gib"]

        def cell(name: str, values: dict[str, float] = m) -> str:
            return f"{values[name]:.3f}" if name in values else "OOM"

        print(
            f"| {row['family']} | {row['size']} | {row['dtype']} | {row['length']} | {cell('mamba_lrp')} | "
            f"{cell('input_x_gradient')} | {cell('forward')} | {row.get('time_mamba_lrp_to_input_x_gradient', 0):.2f} | "
            f"{row.get('time_mamba_lrp_to_forward', 0):.2f} | {cell('mamba_lrp', p)} / {cell('input_x_gradient', p)} |"
        )


if __name__ == "__main__":
    main()
