"""CUDA kernel-time breakdown of one explanation: MambaLRP vs InputXGradient on the same model.

Shows where MambaLRP's time goes relative to plain Gradient x Input (the rules run outside the
fused kernels). Usage: ``python benchmarks/gpu_profile.py --length 8192 --size 130m``.
"""

from __future__ import annotations

import argparse

import torch
from gpu_benchmark import SIZES, build_model, explainers
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="130m", choices=list(SIZES))
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--methods", nargs="+", default=["mamba_lrp", "input_x_gradient"])
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
