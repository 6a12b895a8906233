"""GPU time and peak memory of MambaLRP against Gradient x Input on a 1B-sized random Bamba (hybrid).

A random Bamba configuration of about 1B parameters (hidden 2048, 24 layers, Mamba-2 mixers with
64 heads of 64 and state 128, attention in layers 6, 12 and 18, SwiGLU MLPs), one sequence of
``--length`` tokens (8,192 by default), float32 and bfloat16, the logit of one token at the last
position (logits computed there only); every method through the same model and the same CUDA
kernels (causal-conv1d, mamba-ssm's SSD kernels, PyTorch's SDPA), parameters frozen:

* ``mamba_lrp``: ``MambaLRP(model)`` (AttnLRP on the attention layers);
* ``mamba_lrp_cp``: MambaLRP with CP-LRP on the attention layers;
* ``input_x_gradient``: Captum ``InputXGradient`` through the model's own forward;
* ``forward``: a no-grad forward pass.

Timed alternately after a warm-up (medians of ``--repeats``). Usage (on the GPU machine):
``python benchmarks/hybrid_gpu_benchmark.py --json benchmarks/results/hybrid_gpu_h200.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _methods import last_logit_methods
from _provenance import result_provenance, with_provenance
from _timing import alternate_cuda

from captum_mamba.evaluation.dataset import BAMBA_1B  # the 1B-sized configuration, also explain-dataset's bamba-1b

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(dtype: torch.dtype) -> torch.nn.Module:
    from transformers import BambaConfig, BambaForCausalLM

    torch.manual_seed(0)
    config = BambaConfig(**BAMBA_1B, use_cache=False)
    config._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = BambaForCausalLM(config)
    return model.to(dtype).eval().requires_grad_(False)


def methods(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor, int], Any]]:
    from transformers.models.bamba.modeling_bamba import BambaAttention

    return last_logit_methods(model, BambaAttention)


def run_dtype(name: str, length: int, repeats: int) -> dict[str, Any]:
    from captum_mamba import MambaLRP

    model = build(DTYPES[name])
    ids = torch.randint(0, BAMBA_1B["vocab_size"], (1, length), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids).detach()
    target = int(ids[0, -1])
    runs = methods(model)
    for run in runs.values():  # warm-up: kernels, Triton, allocator
        run(embeds[:, :512], target)
    medians, times, peaks = alternate_cuda(
        {m: (lambda run=run: run(embeds, target)) for m, run in runs.items()}, repeats
    )
    relevance, delta = MambaLRP(model, rules=None).attribute(embeds, target=target, return_convergence_delta=True)
    row = {
        "dtype": name,
        "length": length,
        "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()),
        "median_seconds": medians,
        "all_seconds": times,
        "peak_gib": peaks,
        "ratio_mamba_lrp_to_input_x_gradient": medians["mamba_lrp"] / medians["input_x_gradient"],
        "ratio_mamba_lrp_cp_to_input_x_gradient": medians["mamba_lrp_cp"] / medians["input_x_gradient"],
        "ratio_mamba_lrp_to_forward": medians["mamba_lrp"] / medians["forward"],
        "relevance_finite": bool(torch.isfinite(relevance).all()),
        "delta": float(delta.float().abs().max()),
        "note": "random weights with conv biases; AttnLRP is not conservative: the delta includes its softmax share",
    }
    print(json.dumps({k: v for k, v in row.items() if k != "all_seconds"}), flush=True)
    del model, runs, relevance
    torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = parser.parse_args()
    record = result_provenance(args.json, "cuda")
    rows = [run_dtype(name, args.length, args.repeats) for name in args.dtypes]
    result = with_provenance({"model": {"family": "bamba (random weights)", **BAMBA_1B}, "rows": rows}, record)
    print(
        "| dtype | MambaLRP s | MambaLRP+CP s | InputXGradient s | ratio | CP ratio | forward s | peak GiB (LRP / IxG) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        m, p = row["median_seconds"], row["peak_gib"]
        print(
            f"| {row['dtype']} | {m['mamba_lrp']:.3f} | {m['mamba_lrp_cp']:.3f} | {m['input_x_gradient']:.3f} | "
            f"{row['ratio_mamba_lrp_to_input_x_gradient']:.2f} | {row['ratio_mamba_lrp_cp_to_input_x_gradient']:.2f} | "
            f"{m['forward']:.3f} | {p['mamba_lrp']:.1f} / {p['input_x_gradient']:.1f} |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
