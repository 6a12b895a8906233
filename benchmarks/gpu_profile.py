"""CUDA kernel-time breakdown of one explanation: MambaLRP vs InputXGradient on the same model.

Shows where MambaLRP's time goes relative to plain Gradient x Input (the rules run outside the
fused kernels). Usage: ``python benchmarks/gpu_profile.py --length 8192 --size 130m``; with
``--json PATH`` the totals and the top kernels of every method are also written as JSON, with the
run's provenance (commit, clean tree, versions, device).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from gpu_benchmark import SIZES, build_model, explainers
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="130m", choices=list(SIZES))
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--methods", nargs="+", default=["mamba_lrp", "input_x_gradient"])
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None, help="also write the totals and top kernels here")
    args = parser.parse_args()
    from _provenance import result_provenance

    record = result_provenance(args.json, "cuda")  # refuses an untraceable benchmarks/results/ file up front
    report: dict[str, Any] = {
        "benchmark": "gpu_profile",
        "provenance": record,
        "size": args.size,
        "length": args.length,
        "methods": {},
    }
    model = build_model(args.size)
    runs = explainers(model)
    ids = torch.randint(0, model.config.vocab_size, (1, args.length), device="cuda")
    embeds = model.get_input_embeddings()(ids).detach()
    for method in args.methods:
        for _ in range(2):
            runs[method](embeds.clone(), int(ids[0, -1]))
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as trace:
            runs[method](embeds.clone(), int(ids[0, -1]))
            torch.cuda.synchronize()
        events = trace.key_averages()
        total = sum(e.self_device_time_total for e in events) / 1e3
        print(f"\n## {method}, L={args.length}: {total:.1f} ms of CUDA kernel time")
        print(events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=70))
        top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[: args.rows]
        report["methods"][method] = {
            "cuda_kernel_ms": total,
            "top_kernels": [
                {"name": e.key, "self_cuda_ms": e.self_device_time_total / 1e3, "calls": e.count} for e in top
            ],
        }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
