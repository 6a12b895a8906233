"""GPU time and peak memory of MambaLRP against Gradient x Input on a 0.8B-sized random Qwen3.5 (Gated DeltaNet).

A random Qwen3.5 text configuration of about 0.8B parameters (hidden 1024, 24 layers in the
pattern three Gated DeltaNets then one gated attention layer, Gated DeltaNets with 16 key heads
and 16 value heads of 128, attention with 8 query heads of 256 over 2 key/value heads, SwiGLU
MLPs of 3584, vocabulary 248,320), one sequence of ``--length`` tokens (8,192 by default),
float32 and bfloat16, the logit of one token at the last position (logits computed there only):

* ``mamba_lrp``: ``MambaLRP(model)`` (the gated delta rule; AttnLRP on the attention layers);
* ``mamba_lrp_cp``: the same with CP-LRP on the attention layers;
* ``input_x_gradient``: Captum ``InputXGradient`` through the model's own forward;
* ``forward``: a no-grad forward pass.

Which kernels run is recorded: flash-linear-attention's chunk kernel where ``fla`` imports
(Hugging Face's own layer uses it for every dtype; the rule dispatches to it for half precision
and runs its chunked PyTorch kernel in float32), else the PyTorch paths. Timed alternately after
a warm-up (medians of ``--repeats``). Usage (on the GPU machine):
``python benchmarks/linear_attention_gpu_benchmark.py --json benchmarks/results/linear_attention_gpu_h200.json``.
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


def methods(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor, int], Any]]:
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5Attention

    return last_logit_methods(model, Qwen3_5Attention)


def _fla_available() -> bool:
    try:
        from captum_mamba.rules.delta import load_fla_chunk_gated_delta_rule

        load_fla_chunk_gated_delta_rule()
    except ImportError:
        return False
    return True


def run_dtype(name: str, length: int, repeats: int) -> dict[str, Any]:
    from captum_mamba import MambaLRP

    model = build(DTYPES[name])
    ids = torch.randint(0, QWEN3_5_08B["vocab_size"], (1, length), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids).detach()
    target = int(ids[0, -1])
    runs = methods(model)
    for run in runs.values():  # warm-up: kernels, Triton, allocator
        run(embeds[:, :1024], target)
    medians, times, peaks = alternate_cuda(
        {m: (lambda run=run: run(embeds, target)) for m, run in runs.items()}, repeats
    )
    relevance, delta = MambaLRP(model).attribute(embeds, target=target, return_convergence_delta=True)
    fla = _fla_available()
    row = {
        "dtype": name,
        "length": length,
        "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()),
        "fla_installed": fla,
        "rule_kernel": "fla chunk_gated_delta_rule" if fla and name != "float32" else "captum_mamba chunked PyTorch",
        "median_seconds": medians,
        "all_seconds": times,
        "peak_gib": peaks,
        "ratio_mamba_lrp_to_input_x_gradient": medians["mamba_lrp"] / medians["input_x_gradient"],
        "ratio_mamba_lrp_cp_to_input_x_gradient": medians["mamba_lrp_cp"] / medians["input_x_gradient"],
        "ratio_mamba_lrp_to_forward": medians["mamba_lrp"] / medians["forward"],
        "relevance_finite": bool(torch.isfinite(relevance).all()),
        "delta": float(delta.float().abs().max()),
        "note": "random weights; AttnLRP is not conservative: the delta includes its softmax share",
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
    rows = []
    for name in args.dtypes:
        try:
            rows.append(run_dtype(name, args.length, args.repeats))
        except Exception as error:  # noqa: BLE001 (the other dtype still runs; the error is recorded)
            import traceback

            traceback.print_exc()
            rows.append({"dtype": name, "error": f"{type(error).__name__}: {error}"[:2000]})
            torch.cuda.empty_cache()
    result = with_provenance({"model": {"family": "qwen3_5 (random weights)", **QWEN3_5_08B}, "rows": rows}, record)
    print(
        "| dtype | rule kernel | MambaLRP s | MambaLRP+CP s | InputXGradient s | ratio | CP ratio | forward s | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['dtype']} | error: {row['error'][:80]} |")
            continue
        m, p = row["median_seconds"], row["peak_gib"]
        print(
            f"| {row['dtype']} | {row['rule_kernel']} | {m['mamba_lrp']:.3f} | {m['mamba_lrp_cp']:.3f} | "
            f"{m['input_x_gradient']:.3f} | {row['ratio_mamba_lrp_to_input_x_gradient']:.2f} | "
            f"{row['ratio_mamba_lrp_cp_to_input_x_gradient']:.2f} | {m['forward']:.3f} | "
            f"{p['mamba_lrp']:.1f} / {p['input_x_gradient']:.1f} |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
