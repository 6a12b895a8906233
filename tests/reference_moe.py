"""A from-scratch AttnLRP / CP-LRP for Hugging Face mixture-of-experts decoders (Jamba, Qwen3-MoE).

It shares no code with the package: the router written out (logits, softmax, top-k, Qwen3-MoE's
renormalisation), the experts as an explicit loop over tokens and their chosen experts with the
routing weights held constant, each expert's SwiGLU with the SiLU identity rule and the half
rule on ``act(gate) * up``, its weights read as the module's layout flags say (``[gate; up]`` or
interleaved, ``(out, in)`` or transposed, biases, no gate). Attention, dense MLPs and RMSNorms
come from the attention reference (``reference_attention.py``), Jamba's Mamba-1 mixer with its
dt/B/C norms from the Mamba reference (``reference.py``).

The shared family suite calls :func:`reference_logits` through ``family_references.py`` (the
relevances are Gradient x Input of its logit).
"""

from __future__ import annotations

import torch
from torch import Tensor

from reference import _mixer
from reference_attention import _attention, _half, _mlp, _rms


def route(router: torch.nn.Module, x: Tensor, top_k: int, renormalise: bool) -> tuple[Tensor, Tensor]:
    r"""
    The routing of tokens ``x`` ``(tokens, hidden)``: (weights, experts), each ``(tokens, top_k)``.

    The softmax is computed in float32, as both models compute it: the routing weights are held
    constant, so their precision is the model's, not the rule's.
    """
    logits = x @ router.weight.T
    probabilities = torch.softmax(logits.float(), dim=-1)
    weights, experts = torch.topk(probabilities, top_k, dim=-1)
    if renormalise:  # Qwen3-MoE's norm_topk_prob
        weights = weights / weights.sum(-1, keepdim=True)
    return weights.to(x.dtype), experts


def _projection(experts: torch.nn.Module, name: str, expert: int, x: Tensor) -> Tensor:
    """One token through an expert's projection: weights ``(out, in)``, or ``(in, out)`` when transposed."""
    weight = getattr(experts, name)[expert]
    out = weight.T @ x if experts.is_transposed else weight @ x
    return out + getattr(experts, f"{name}_bias")[expert] if experts.has_bias else out


def _expert(experts: torch.nn.Module, expert: int, x: Tensor) -> Tensor:
    """One expert's MLP on one token: the SiLU identity rule, the half rule on ``act(gate) * up``."""
    if not experts.has_gate:
        up = _projection(experts, "up_proj", expert, x)
        return _projection(experts, "down_proj", expert, up * torch.sigmoid(up).detach())
    gate_up = _projection(experts, "gate_up_proj", expert, x)
    if experts.is_concatenated:  # [gate; up]
        gate, up = gate_up[: gate_up.shape[0] // 2], gate_up[gate_up.shape[0] // 2 :]
    else:  # interleaved [g0, u0, g1, u1, ...]
        gate, up = gate_up[0::2], gate_up[1::2]
    activated = gate * torch.sigmoid(gate).detach()  # SiLU identity rule
    return _projection(experts, "down_proj", expert, _half(activated, up))  # half rule on the product


def experts_loop(experts: torch.nn.Module, x: Tensor, weights: Tensor, chosen: Tensor, expert=_expert) -> Tensor:
    """Each token's sum over its chosen experts, weighted by the routing weights held constant.

    ``expert(experts, index, token)`` is one expert's MLP on one token (by default the SwiGLU above).
    """
    rows = []
    for token in range(x.shape[0]):
        out = torch.zeros(x.shape[-1], dtype=x.dtype)
        for slot in range(chosen.shape[1]):
            out = out + weights[token, slot].detach() * expert(experts, int(chosen[token, slot]), x[token])
        rows.append(out)
    return torch.stack(rows)


def _sparse_moe(block: torch.nn.Module, x: Tensor) -> Tensor:
    batch, length, hidden = x.shape
    tokens = x.reshape(batch * length, hidden)
    config = block.experts.config
    router = block.router if hasattr(block, "router") else block.gate  # Jamba's name, Qwen3-MoE's
    weights, chosen = route(router, tokens, config.num_experts_per_tok, getattr(config, "norm_topk_prob", False))
    return experts_loop(block.experts, tokens, weights, chosen).reshape(batch, length, hidden)


def _feed_forward(module: torch.nn.Module, x: Tensor) -> Tensor:
    return _sparse_moe(module, x) if hasattr(module, "experts") else _mlp(module, x)


def _layer(layer: torch.nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, mode: str) -> Tensor:
    """``h + mixer(norm(h))``, then ``h + ffn(norm(h))`` (Jamba's and Qwen3-MoE's names)."""
    normed = _rms(layer.input_layernorm, hidden)
    if hasattr(layer, "mamba"):  # a Jamba Mamba-1 layer
        update = _mixer(layer.mamba, normed, layer.mamba.conv1d.bias)
    else:
        update = _attention(layer.self_attn, normed, cos, sin, mode)
    hidden = hidden + update
    if hasattr(layer, "feed_forward"):  # Jamba
        return hidden + _feed_forward(layer.feed_forward, _rms(layer.pre_ff_layernorm, hidden))
    return hidden + _feed_forward(layer.mlp, _rms(layer.post_attention_layernorm, hidden))


def reference_logits(model: torch.nn.Module, x: Tensor, mode: str) -> Tensor:
    """The last position's logits of the rules' forward (its value is the model's, in float64 throughout)."""
    batch, length, _ = x.shape
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is not None:
        cos, sin = rotary(x, torch.arange(length)[None].expand(batch, -1))  # constants of the positions
    else:  # Jamba: no positional embedding (a rotation by zero)
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        cos, sin = (
            torch.ones(batch, length, head_dim, dtype=x.dtype),
            torch.zeros(batch, length, head_dim, dtype=x.dtype),
        )
    hidden = x
    for layer in model.model.layers:
        hidden = _layer(layer, hidden, cos, sin, mode)
    final = model.model.final_layernorm if hasattr(model.model, "final_layernorm") else model.model.norm
    return _rms(final, hidden)[:, -1] @ model.lm_head.weight.T
