"""GPU time and peak memory of MambaLRP against Gradient x Input on a Vim-small-sized Vision Mamba.

A random Vim-small configuration (embed 384, depth 24, patch 16, 224 x 224, 1,000 classes,
middle class token), batch 32, float32 and bfloat16, same model and CUDA kernels for every
method (parameters frozen):

* ``mamba_lrp``: ``MambaLRP(model)`` (both scan directions of a block as one fused node);
* ``mamba_lrp_unfused``: ``MambaLRP`` with ``MixerRule(fused=False)`` (rule by rule, for contrast);
* ``input_x_gradient``: Captum ``InputXGradient`` through the model's own forward
  (causal-conv1d and mamba-ssm's ``selective_scan_fn``);
* ``forward``: a no-grad forward pass.

Methods are timed alternately (A, B, C, ...) ``--repeats`` times after a warm-up; medians are
reported with the ratio MambaLRP / InputXGradient. Usage (on the GPU machine):
``python benchmarks/vim_gpu_benchmark.py --json benchmarks/results/vim_gpu_h200.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _provenance import result_provenance, with_provenance
from _timing import alternate_cuda

VIM_SMALL = dict(
    img_size=224, patch_size=16, stride=16, embed_dim=384, depth=24, d_state=16, channels=3, num_classes=1000
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(dtype: torch.dtype) -> torch.nn.Module:
    from captum_mamba.models import VisionMamba

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = VisionMamba(**VIM_SMALL)
    return model.to(dtype).eval().requires_grad_(False)


def methods(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    from captum.attr import InputXGradient

    from captum_mamba import MambaLRP
    from captum_mamba.models.vim import VimMamba
    from captum_mamba.rules import MixerRule

    def forward(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(images)

    return {
        "mamba_lrp": lambda x, t: MambaLRP(model).attribute(x, target=t),
        "mamba_lrp_unfused": lambda x, t: MambaLRP(model, rules={VimMamba: MixerRule(fused=False)}).attribute(
            x, target=t
        ),
        "input_x_gradient": lambda x, t: InputXGradient(model).attribute(x.clone().requires_grad_(), target=t),
        "forward": forward,
    }


def run_dtype(name: str, batch: int, repeats: int) -> dict[str, Any]:
    from captum_mamba import MambaLRP

    dtype = DTYPES[name]
    model = build(dtype)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=generator).to(device="cuda", dtype=dtype)
    targets = torch.arange(batch, device="cuda") % VIM_SMALL["num_classes"]
    runs = methods(model)
    for run in runs.values():  # warm-up: kernels, allocator
        run(images, targets)
    medians, times, peaks, _ = alternate_cuda(
        {m: (lambda run=run: run(images, targets)) for m, run in runs.items()}, repeats
    )
    relevance, delta = MambaLRP(model).attribute(images, target=targets, return_convergence_delta=True)
    logits = model(images).float().gather(1, targets[:, None])[:, 0]
    row = {
        "dtype": name,
        "batch": batch,
        "repeats": repeats,
        "median_seconds": medians,
        "all_seconds": times,
        "peak_gib": peaks,
        "ratio_mamba_lrp_to_input_x_gradient": medians["mamba_lrp"] / medians["input_x_gradient"],
        "ratio_unfused_to_input_x_gradient": medians["mamba_lrp_unfused"] / medians["input_x_gradient"],
        "ratio_mamba_lrp_to_forward": medians["mamba_lrp"] / medians["forward"],
        "relevance_finite": bool(torch.isfinite(relevance).all()),
        "max_abs_delta": float(delta.abs().max()),
        "max_abs_logit": float(logits.abs().max()),
        "note": "random weights with biases and position embeddings: the delta is what they absorb",
    }
    print(json.dumps({k: v for k, v in row.items() if k != "all_seconds"}), flush=True)
    del model, runs, relevance
    torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = parser.parse_args()
    record = result_provenance(args.json, "cuda")
    rows = [run_dtype(name, args.batch, args.repeats) for name in args.dtypes]
    result = with_provenance({"model": {"variant": "vim-small (random weights)", **VIM_SMALL}, "rows": rows}, record)
    print("| dtype | MambaLRP s | InputXGradient s | ratio | unfused ratio | forward s | peak GiB (LRP / IxG) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        medians, peaks = row["median_seconds"], row["peak_gib"]
        print(
            f"| {row['dtype']} | {medians['mamba_lrp']:.4f} | {medians['input_x_gradient']:.4f} | "
            f"{row['ratio_mamba_lrp_to_input_x_gradient']:.2f} | {row['ratio_unfused_to_input_x_gradient']:.2f} | "
            f"{medians['forward']:.4f} | {peaks['mamba_lrp']:.2f} / {peaks['input_x_gradient']:.2f} |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
