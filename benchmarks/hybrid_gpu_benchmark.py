"""GPU time and peak memory of MambaLRP against Gradient x Input on a 1B-sized random Bamba (hybrid).

A random Bamba configuration of about 1B parameters (hidden 2048, 24 layers, Mamba-2 mixers with
64 heads of 64 and state 128, attention in layers 6, 12 and 18, SwiGLU MLPs), one sequence of
each of ``--lengths`` tokens (8,192 by default), float32 and bfloat16, the logit of one token at the last
position (logits computed there only); every method through the same model and the same CUDA
kernels (causal-conv1d, mamba-ssm's SSD kernels, PyTorch's SDPA), parameters frozen:

* ``mamba_lrp``: ``MambaLRP(model)`` (AttnLRP on the attention layers);
* ``mamba_lrp_cp``: MambaLRP with CP-LRP on the attention layers;
* ``mamba_lrp_lean`` (from ``--lean-from`` tokens on): ``MambaLRP(model, memory_lean=True)``;
* ``input_x_gradient``: Captum ``InputXGradient`` through the model's own forward;
* ``forward``: a no-grad forward pass.

Timed alternately after a warm-up (medians of ``--repeats``); a method out of memory is recorded
as such. Each row also checks MambaLRP's relevance sum against the logit of a separate forward.
Usage (on the GPU machine):
``python benchmarks/hybrid_gpu_benchmark.py --lengths 8192 32768 --lean-from 32768 --json benchmarks/results/hybrid_gpu_h200.json``.
"""

from __future__ import annotations

import torch
from _methods import causal_lm_benchmark_main

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


def _attention() -> type[torch.nn.Module]:
    from transformers.models.bamba.modeling_bamba import BambaAttention

    return BambaAttention


if __name__ == "__main__":
    causal_lm_benchmark_main(
        __doc__.splitlines()[0], build, DTYPES, {"family": "bamba (random weights)", **BAMBA_1B}, _attention
    )
