"""GPU time and peak memory of MambaLRP against Gradient x Input on a 0.8B-sized random Qwen3.5 (Gated DeltaNet).

A random Qwen3.5 text configuration of about 0.8B parameters (hidden 1024, 24 layers in the
pattern three Gated DeltaNets then one gated attention layer, Gated DeltaNets with 16 key heads
and 16 value heads of 128, attention with 8 query heads of 256 over 2 key/value heads, SwiGLU
MLPs of 3584, vocabulary 248,320), one sequence of each of ``--lengths`` tokens (8,192 by default),
float32 and bfloat16, the logit of one token at the last position (logits computed there only):

* ``mamba_lrp``: ``MambaLRP(model)`` (the gated delta rule; AttnLRP on the attention layers);
* ``mamba_lrp_cp``: the same with CP-LRP on the attention layers;
* ``input_x_gradient``: Captum ``InputXGradient`` through the model's own forward;
* ``forward``: a no-grad forward pass.

Which kernels run is recorded: flash-linear-attention's chunk kernel where ``fla`` imports
(Hugging Face's own layer uses it for every dtype; the rule dispatches to it for half precision
and runs its chunked PyTorch kernel in float32), else the PyTorch paths. Timed alternately after
a warm-up (medians of ``--repeats``); a method out of memory is recorded as such; each row also
checks MambaLRP's relevance sum against the logit of a separate forward. Usage (on the GPU machine):
``python benchmarks/linear_attention_gpu_benchmark.py --json benchmarks/results/linear_attention_gpu_h200.json``.
"""

from __future__ import annotations

from typing import Any

import torch
from _methods import causal_lm_benchmark_main

QWEN3_5_08B: dict[str, Any] = dict(
    vocab_size=248320,
    hidden_size=1024,
    intermediate_size=3584,
    num_hidden_layers=24,
    layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 6,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=256,
    linear_conv_kernel_dim=4,
    linear_num_key_heads=16,
    linear_num_value_heads=16,
    linear_key_head_dim=128,
    linear_value_head_dim=128,
    tie_word_embeddings=True,
    use_cache=False,
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(dtype: torch.dtype) -> torch.nn.Module:
    from transformers.models.qwen3_5 import configuration_qwen3_5, modeling_qwen3_5

    torch.manual_seed(0)
    config = configuration_qwen3_5.Qwen3_5TextConfig(**QWEN3_5_08B)
    config._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = modeling_qwen3_5.Qwen3_5ForCausalLM(config)
    return model.to(dtype).eval().requires_grad_(False)


def _fla_available() -> bool:
    try:
        from captum_mamba.rules.delta import load_fla_chunk_gated_delta_rule

        load_fla_chunk_gated_delta_rule()
    except ImportError:
        return False
    return True


def _attention() -> type[torch.nn.Module]:
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5Attention

    return Qwen3_5Attention


def _kernels(dtype: str) -> dict[str, Any]:
    """Which kernel the gated delta rule runs (fla's for half precision where it imports)."""
    fla = _fla_available()
    kernel = "fla chunk_gated_delta_rule" if fla and dtype != "float32" else "captum_mamba chunked PyTorch"
    return {"fla_installed": fla, "rule_kernel": kernel}


if __name__ == "__main__":
    causal_lm_benchmark_main(
        __doc__.splitlines()[0],
        build,
        DTYPES,
        {"family": "qwen3_5 (random weights)", **QWEN3_5_08B},
        _attention,
        _kernels,
    )
