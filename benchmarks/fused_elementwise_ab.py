"""The fused Mamba-1 node's element-wise steps as Triton kernels or as PyTorch operations, paired.

Times ``MambaLRP`` on the random 130m-sized Mamba (float32, one sequence, CUDA kernels) with
``fused_mixer.use_triton_elementwise`` switched on and off in the same process, in alternating
blocks, at 512, 2,048 and 8,192 tokens; per call the median wall time and process CPU time of
the blocks (the CPU time includes the busy wait of ``torch.cuda.synchronize``: a wall time that
does not grow with the length is the host's), and the relevance sum of each path. A diagnostic
printed as text (JSON lines per length)::

    python benchmarks/fused_elementwise_ab.py
"""

import json
import sys
import time

sys.path.insert(0, "benchmarks")
import torch
from _methods import mamba_lrp, random_last_token_inputs
from gpu_targets import MAMBA_SIZES, build

import captum_mamba.kernels.fused_mixer as fm


def main() -> None:
    model = build("mamba", MAMBA_SIZES["130m"], torch.float32)
    explainer = mamba_lrp(model)
    original = fm.use_triton_elementwise
    out = {}
    for length, calls in ((512, 30), (2048, 30), (8192, 10)):
        embeds, target = random_last_token_inputs(model, length)
        sums = {}
        for name, switch in (("triton", original), ("torch", lambda x: False)):
            fm.use_triton_elementwise = switch
            r = explainer.attribute(embeds, target=target)
            torch.cuda.synchronize()
            sums[name] = r.double().sum().item()
        times = {"triton": [], "torch": []}
        cpu = {"triton": [], "torch": []}
        for block in range(6):
            for name, switch in (("triton", original), ("torch", lambda x: False))[:: 1 if block % 2 else -1]:
                fm.use_triton_elementwise = switch
                torch.cuda.synchronize()
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(calls // 6 + 1):
                    explainer.attribute(embeds, target=target)
                torch.cuda.synchronize()
                times[name].append((time.perf_counter() - w0) / (calls // 6 + 1))
                cpu[name].append((time.process_time() - c0) / (calls // 6 + 1))

        def med(v):
            return sorted(v)[len(v) // 2]

        out[length] = {
            k: {"wall_ms": 1000 * med(times[k]), "cpu_ms": 1000 * med(cpu[k]), "sum": sums[k]} for k in times
        }
        print(length, json.dumps(out[length]), flush=True)
    fm.use_triton_elementwise = original


if __name__ == "__main__":
    main()
