"""Where the host (CPU) time of one MambaLRP call goes on the GPU: 130m-sized Mamba, float32, 2,048 tokens, batch 1.

At short lengths an explanation is bound by the host's Python and launch work, not by the GPU
(``docs/dataset_scale.md``). Prints the mean wall time of a call and of a no-grad forward, the
PyTorch profiler's CPU-side table of one call, and cProfile's tables of 20 calls (Python 3.12's
cProfile also sees the autograd engine's thread). A diagnostic printed as text::

    python benchmarks/gpu_host_profile.py
"""

import cProfile
import pstats
import sys
import time

sys.path.insert(0, "benchmarks")
import torch
from _methods import mamba_lrp, random_last_token_inputs
from gpu_targets import MAMBA_SIZES, build
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    model = build("mamba", MAMBA_SIZES["130m"], torch.float32)
    explainer = mamba_lrp(model)
    embeds, target = random_last_token_inputs(model, 2048)
    for _ in range(3):
        explainer.attribute(embeds, target=target)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        explainer.attribute(embeds, target=target)
    torch.cuda.synchronize()
    print("attribute ms", (time.perf_counter() - t) / 20 * 1000)
    with torch.no_grad():
        t = time.perf_counter()
        for _ in range(20):
            model(inputs_embeds=embeds, logits_to_keep=1)
        torch.cuda.synchronize()
    print("no-grad forward ms", (time.perf_counter() - t) / 20 * 1000)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        explainer.attribute(embeds, target=target)
        torch.cuda.synchronize()
    ev = prof.key_averages()
    print(
        "ops launched (CPU-side events):",
        sum(e.count for e in ev if e.cpu_time_total > 0 and not e.key.startswith("cuda")),
    )
    print(ev.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60))
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(20):
        explainer.attribute(embeds, target=target)
    torch.cuda.synchronize()
    pr.disable()
    s = pstats.Stats(pr)
    s.sort_stats("tottime").print_stats(45)
    s.sort_stats("cumulative").print_stats(60)


if __name__ == "__main__":
    main()
