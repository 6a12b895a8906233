"""The methods the GPU benchmark scripts time on a causal LM's last-position logits, and one timed comparison of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from _timing import alternate_cuda
from torch import nn


def mamba_lrp(model: nn.Module, mamba_ssm: bool = False, **options: Any) -> Any:
    r"""
    The MambaLRP explainer the methods time and the conservation check uses: ``MambaLRP(model)``
    on embeddings, or for a mamba-ssm ``MambaLMHeadModel`` (token ids in) ``LayerMambaLRP`` on its
    embedding layer (the model is called with ``num_last_tokens``, logits at the explained
    position only); ``options`` are the explainer's (``rules``, ``memory_lean``, ``backend``).
    """
    from captum_mamba import LayerMambaLRP, MambaLRP

    if mamba_ssm:
        return LayerMambaLRP(model, model.backbone.embedding, **options)
    return MambaLRP(model, **options)


def last_logit_methods(
    model: nn.Module, cp_attention: type[nn.Module] | None = None, lean: bool = False
) -> dict[str, Callable[..., Any]]:
    r"""
    ``{name: run(embeds, target)}`` through the model's own forward, the logit of ``target`` at
    the last position (logits computed there only):

    * ``mamba_lrp``: ``MambaLRP(model)``;
    * ``mamba_lrp_cp`` (with ``cp_attention``): CP-LRP on the model's attention modules of that type;
    * ``mamba_lrp_lean`` (with ``lean``): ``MambaLRP(model, memory_lean=True)`` (block inputs kept,
      each block recomputed in the backward pass);
    * ``input_x_gradient``: Captum ``InputXGradient``;
    * ``forward``: a no-grad forward pass.
    """
    from captum.attr import InputXGradient

    from captum_mamba.rules.attention import AttentionRule

    def last_logits(embeds: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[:, -1]

    def forward(embeds: torch.Tensor, target: int) -> torch.Tensor:
        with torch.no_grad():
            return last_logits(embeds)

    methods: dict[str, Callable[..., Any]] = {"mamba_lrp": lambda e, t: mamba_lrp(model).attribute(e, target=t)}
    if cp_attention is not None:
        cp_rules = {cp_attention: AttentionRule("cp")}
        methods["mamba_lrp_cp"] = lambda e, t: mamba_lrp(model, rules=cp_rules).attribute(e, target=t)
    if lean:
        methods["mamba_lrp_lean"] = lambda e, t: mamba_lrp(model, memory_lean=True).attribute(e, target=t)
    methods["input_x_gradient"] = lambda e, t: InputXGradient(last_logits).attribute(
        e.clone().requires_grad_(), target=t
    )
    methods["forward"] = forward
    return methods


def mamba_ssm_last_logit_methods(model: nn.Module, lean: bool = False) -> dict[str, Callable[..., Any]]:
    r"""
    :func:`last_logit_methods` for a mamba-ssm ``MambaLMHeadModel`` (token ids in, no
    ``inputs_embeds``): ``{name: run(ids, target)}`` with the relevance of the embedding layer's
    output, the logits computed at the last position only (``num_last_tokens=1``):

    * ``mamba_lrp`` (and ``mamba_lrp_lean`` with ``lean``): :func:`mamba_lrp`, ``LayerMambaLRP`` on ``model.backbone.embedding``;
    * ``input_x_gradient``: Captum ``LayerGradientXActivation`` on the same layer (gradient x embedding);
    * ``forward``: a no-grad forward pass.
    """
    from captum.attr import LayerGradientXActivation

    def last_logits(ids: torch.Tensor) -> torch.Tensor:
        return model(ids, num_last_tokens=1).logits[:, -1]

    def forward(ids: torch.Tensor, target: int) -> torch.Tensor:
        with torch.no_grad():
            return last_logits(ids)

    methods: dict[str, Callable[..., Any]] = {
        "mamba_lrp": lambda i, t: mamba_lrp(model, mamba_ssm=True).attribute(i, target=t)
    }
    if lean:
        methods["mamba_lrp_lean"] = lambda i, t: mamba_lrp(model, mamba_ssm=True, memory_lean=True).attribute(
            i, target=t
        )
    methods["input_x_gradient"] = lambda i, t: LayerGradientXActivation(
        last_logits, model.backbone.embedding
    ).attribute(i, target=t)
    methods["forward"] = forward
    return methods


def random_token_ids(vocab: int, length: int) -> tuple[torch.Tensor, int]:
    """``length`` random token ids (seeded by the length) on the GPU, and the last id (the explained token)."""
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(length)).cuda()
    return ids, int(ids[0, -1])


def random_last_token_inputs(model: nn.Module, length: int) -> tuple[torch.Tensor, int]:
    """The embeddings of ``length`` random token ids (seeded by the length) on the GPU, and the last id (the explained token)."""
    ids, target = random_token_ids(model.get_input_embeddings().num_embeddings, length)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids).detach()
    return embeds, target


def compare_last_logit_methods(
    model: nn.Module,
    length: int,
    repeats: int,
    label: dict[str, Any],
    cp_attention: type[nn.Module] | None = None,
    lean: bool = False,
    mamba_ssm: bool = False,
    float64_up_to: int | None = None,
) -> dict[str, Any]:
    r"""
    Time :func:`last_logit_methods` alternately on one sequence of ``length`` random token ids
    (seeded by the length), after one untimed warm-up run of each method on the same sequence
    (kernels, Triton autotuning, the allocator's blocks; a warm-up out of GPU memory is passed
    over); a method out of GPU memory is recorded as such. Then one MambaLRP explanation (the plain
    one if it fitted, else the memory-lean one) against the logit of a separate no-grad forward.

    Args:
        model (nn.Module): a causal LM on the GPU, frozen, in eval mode.
        length (int): tokens.
        repeats (int): timed runs of each method.
        label (dict): what the row says of the model (family, size, dtype ...).
        cp_attention (type, optional): the attention class CP-LRP is timed on (``mamba_lrp_cp``).
        lean (bool): also time ``MambaLRP(model, memory_lean=True)`` (``mamba_lrp_lean``).
        mamba_ssm (bool): ``model`` is a mamba-ssm ``MambaLMHeadModel``: token ids in,
                    :func:`mamba_ssm_last_logit_methods` (``cp_attention`` does not apply).
        float64_up_to (int, optional): up to this length, also the logit of a float64 copy of the
                    model on the PyTorch path (``float64_logit``; the kernels have no float64), and how
                    far the float32 relevance sum and the float32 forward's logit are from it.

    Returns:
        *dict*: the label, medians / all times / peak GiB by method, the methods out of memory,
        ``time_<method>_to_input_x_gradient`` and ``time_<method>_to_forward`` for each MambaLRP
        variant that fitted, ``memory_<method>_to_input_x_gradient``, and the conservation check
        (``relevance_sum``, ``logit`` of the forward, their difference, the reported ``delta``).
    """
    if mamba_ssm:
        embeds, target = random_token_ids(model.backbone.embedding.num_embeddings, length)
        runs = mamba_ssm_last_logit_methods(model, lean)
    else:
        embeds, target = random_last_token_inputs(model, length)
        runs = last_logit_methods(model, cp_attention, lean)
    for run in runs.values():
        try:
            run(embeds, target)
        except torch.OutOfMemoryError:
            pass  # the timed runs record it
        torch.cuda.empty_cache()
    medians, times, peaks, failed = alternate_cuda(
        {name: (lambda run=run: run(embeds, target)) for name, run in runs.items()}, repeats
    )
    row: dict[str, Any] = {
        **label,
        "length": length,
        "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()),
        "median_seconds": medians,
        "all_seconds": times,
        "peak_gib": peaks,
        "out_of_memory": failed,
    }
    for name in [n for n in medians if n.startswith("mamba_lrp")]:
        for other in ("input_x_gradient", "forward"):
            if other in medians:
                row[f"time_{name}_to_{other}"] = medians[name] / medians[other]
        if peaks.get("input_x_gradient"):
            row[f"memory_{name}_to_input_x_gradient"] = peaks[name] / peaks["input_x_gradient"]
    print(json.dumps({k: v for k, v in row.items() if k != "all_seconds"}), flush=True)
    explained = "mamba_lrp" if "mamba_lrp" in medians else "mamba_lrp_lean" if "mamba_lrp_lean" in medians else None
    if explained is not None and "forward" in medians:
        try:
            explainer = mamba_lrp(model, mamba_ssm, memory_lean=explained == "mamba_lrp_lean")
            relevance, delta = explainer.attribute(embeds, target=target, return_convergence_delta=True)
            logit = float(runs["forward"](embeds, target)[0, target].double())  # computed apart from the explanation
            total = float(relevance.double().sum())
            row.update(
                conservation_checked_on=explained,
                relevance_finite=bool(torch.isfinite(relevance).all()),
                relevance_sum=total,
                logit=logit,
                sum_minus_forward_logit=total - logit,
                delta=float(delta.double().sum()),  # one sequence; signed: the sum minus MambaLRP's own logit
            )
            del relevance
        except torch.OutOfMemoryError as error:
            row["conservation_check"] = f"out of memory: {error}"[:300]
        print(
            json.dumps(
                {k: row[k] for k in row if k.startswith(("conservation", "relevance", "logit", "sum_", "delta"))}
            )
        )
    if float64_up_to is not None and length <= float64_up_to and not mamba_ssm and "logit" in row:
        row.update(_float64_logit_check(model, embeds, target, row))
    torch.cuda.empty_cache()
    return row


def _float64_logit_check(model: nn.Module, embeds: torch.Tensor, target: int, row: dict[str, Any]) -> dict[str, Any]:
    r"""
    The explained logit in float64 (a float64 copy of ``model``; MambaLRP on the PyTorch path,
    memory-lean, whose float64 relevances sum to that logit up to ~1e-15: the logit is their sum
    minus the reported delta) against the row's float32 relevance sum and forward logit, and
    against the float32 relevance sum on the PyTorch path (no Triton kernels, so no TF32 matmuls).
    """
    import copy

    try:
        reference = copy.deepcopy(model).double()
        explainer = mamba_lrp(reference, backend="torch", memory_lean=True)
        relevance, delta = explainer.attribute(embeds.double(), target=target, return_convergence_delta=True)
        logit = float(relevance.sum() - delta.sum())
        result = {
            "float64_logit": logit,
            "float64_delta": float(delta.sum()),
            "relevance_sum_minus_float64_logit": row["relevance_sum"] - logit,
            "forward_logit_minus_float64_logit": row["logit"] - logit,
        }
        del reference, relevance
        torch_path = mamba_lrp(model, backend="torch", memory_lean=True).attribute(embeds, target=target)
        result["torch_path_float32_sum_minus_float64_logit"] = float(torch_path.double().sum()) - logit
    except torch.OutOfMemoryError as error:
        result = {"float64_check": f"out of memory: {error}"[:300]}
    torch.cuda.empty_cache()
    print(json.dumps(result), flush=True)
    return result


def compare_over_dtypes_and_lengths(
    build: Callable[[torch.dtype], nn.Module],
    dtypes: dict[str, torch.dtype],
    lengths: list[int],
    repeats: int,
    cp_attention: type[nn.Module] | None = None,
    lean_from: int | None = None,
    label: Callable[[str], dict[str, Any]] = lambda dtype: {},
) -> list[dict[str, Any]]:
    r"""
    :func:`compare_last_logit_methods` for each dtype (one model each, from ``build(dtype)``) and
    length; an error in one row is recorded in that row and the next row runs.

    Args:
        build (Callable): ``build(dtype)``: the model on the GPU, frozen, in eval mode.
        dtypes (dict): ``{name: torch dtype}``.
        lengths (list): tokens of each row.
        repeats (int): timed runs of each method.
        cp_attention (type, optional): the attention class CP-LRP is timed on.
        lean_from (int, optional): from this length on, also time the memory-lean MambaLRP.
        label (Callable): ``label(dtype name)``: more of the row's description.

    Returns:
        *list* of the rows.
    """
    rows: list[dict[str, Any]] = []
    for name, dtype in dtypes.items():
        model = build(dtype)
        for length in lengths:
            lean = lean_from is not None and length >= lean_from
            try:
                rows.append(
                    compare_last_logit_methods(
                        model, length, repeats, {"dtype": name, **label(name)}, cp_attention, lean
                    )
                )
            except Exception as error:  # noqa: BLE001 (a benchmark run keeps going; the error is recorded)
                import traceback

                traceback.print_exc()
                rows.append({"dtype": name, "length": length, "error": f"{type(error).__name__}: {error}"[:2000]})
                torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`compare_over_dtypes_and_lengths` as a Markdown table (seconds, ratios to InputXGradient, peak GiB)."""
    methods = ["mamba_lrp", "mamba_lrp_cp", "mamba_lrp_lean", "input_x_gradient", "forward"]
    present = [
        m
        for m in methods
        if any(m in row.get("median_seconds", {}) or m in row.get("out_of_memory", []) for row in rows)
    ]
    lines = [
        "| dtype | tokens | " + " | ".join(f"{m} s (GiB)" for m in present) + " | "
        + " | ".join(f"{m} / IxG" for m in present if m.startswith("mamba_lrp")) + " |",
        "|---|---:|" + "---:|" * (len(present) + sum(m.startswith("mamba_lrp") for m in present)),
    ]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['dtype']} | {row['length']} | error: {row['error'][:100]} |")
            continue
        medians, peaks = row["median_seconds"], row["peak_gib"]
        cells = [
            f"{medians[m]:.3f} ({peaks[m]:.1f})"
            if m in medians
            else "out of memory"
            if m in row["out_of_memory"]
            else "-"
            for m in present
        ]
        ratios = [
            f"{row[f'time_{m}_to_input_x_gradient']:.2f}" if f"time_{m}_to_input_x_gradient" in row else "-"
            for m in present
            if m.startswith("mamba_lrp")
        ]
        lines.append(f"| {row['dtype']} | {row['length']} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def causal_lm_benchmark_main(
    description: str,
    build: Callable[[torch.dtype], nn.Module],
    dtypes: dict[str, torch.dtype],
    model: dict[str, Any],
    cp_attention: Callable[[], type[nn.Module]],
    label: Callable[[str], dict[str, Any]] = lambda dtype: {},
) -> None:
    r"""
    The command line of a causal-LM GPU benchmark script: ``--json``, ``--lengths``, ``--repeats``,
    ``--dtypes``, ``--lean-from``; the rows of :func:`compare_over_dtypes_and_lengths`, printed as
    a Markdown table and written with the provenance record.

    Args:
        description (str): the script's one-line description.
        build (Callable): ``build(dtype)``: the model on the GPU, frozen, in eval mode.
        dtypes (dict): the dtypes it may run, ``{name: torch dtype}`` (all by default).
        model (dict): what the JSON says of the model.
        cp_attention (Callable): returns the attention class CP-LRP is timed on (imported late).
        label (Callable): ``label(dtype name)``: more of each row's description.
    """
    import argparse
    from pathlib import Path

    from _provenance import result_provenance, with_provenance

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", nargs="+", default=list(dtypes), choices=list(dtypes))
    parser.add_argument(
        "--lean-from", type=int, default=None, help="from this length on, also time MambaLRP(memory_lean=True)"
    )
    args = parser.parse_args()
    record = result_provenance(args.json, "cuda")
    chosen = {name: dtypes[name] for name in args.dtypes}
    rows = compare_over_dtypes_and_lengths(
        build, chosen, args.lengths, args.repeats, cp_attention(), args.lean_from, label
    )
    result = with_provenance({"model": model, "rows": rows}, record)
    print(markdown_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
