"""A from-scratch AttnLRP / CP-LRP for Hugging Face decoders, written from the rules' equations.

It shares no code with the package: explicit loops over heads and positions, RMSNorms with the
normaliser held constant, rotary embeddings (full or partial) on q and k, the uniform (half)
rule on q·kᵀ and A·V (AttnLRP) or the attention weights held constant (CP-LRP), the SwiGLU MLP
with the SiLU identity rule and the half rule on its product. Mamba-2 mixers of hybrid models
come from the Mamba reference (``reference.py``), which reads the same attribute names.

The shared family suite calls :func:`reference_logits` through ``family_references.py`` (the
relevances are Gradient x Input of its logit).
"""

from __future__ import annotations

import torch

from reference import _mamba2_mixer


def _rms(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    scale = 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + norm.variance_epsilon)
    return x * scale.detach() * norm.weight


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of the first ``cos.shape[-1]`` dimensions (all, or Bamba's partial half)."""
    width = cos.shape[-1]
    part, rest = x[..., :width], x[..., width:]
    half = width // 2
    rotated = torch.cat((-part[..., half:], part[..., :half]), dim=-1)
    return torch.cat((part * cos + rotated * sin, rest), dim=-1)


def _half(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The uniform rule on a product of two relevance carriers."""
    return 0.5 * a * b.detach() + 0.5 * a.detach() * b


def _attention(attention: torch.nn.Module, x: torch.Tensor, cos, sin, mode: str) -> torch.Tensor:
    batch, length, _ = x.shape
    config = attention.config
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, attention.head_dim
    scale = getattr(attention, "scaling", dim**-0.5)  # Zamba: (head_dim / 2) ** -0.5
    q = (x @ attention.q_proj.weight.T).reshape(batch, length, heads, dim)
    k = (x @ attention.k_proj.weight.T).reshape(batch, length, kv_heads, dim)
    k = k * getattr(attention, "key_multiplier", 1.0)  # Falcon-H1's µP key multiplier: a constant
    v = (x @ attention.v_proj.weight.T).reshape(batch, length, kv_heads, dim)
    if hasattr(attention, "q_norm"):  # Qwen3: RMSNorm per head on q and k
        q, k = _rms(attention.q_norm, q), _rms(attention.k_norm, k)
    rows = []
    for b in range(batch):
        head_outputs = []
        for h in range(heads):
            g = h // (heads // kv_heads)  # grouped-query: query head h reads key/value head g
            qh, kh = q[b, :, h], k[b, :, g]
            if cos is not None:  # rotary embeddings (Zamba has none)
                qh, kh = _rotate(qh, cos[b], sin[b]), _rotate(kh, cos[b], sin[b])
            outputs = []
            for t in range(length):
                scores = []
                for s in range(t + 1):  # causal
                    product = _half(qh[t], kh[s]) if mode == "attnlrp" else qh[t] * kh[s]
                    scores.append(product.sum() * scale)
                weights = torch.softmax(torch.stack(scores), dim=0)
                out = torch.zeros(dim, dtype=x.dtype)
                for s in range(t + 1):
                    value = v[b, s, g]
                    out = out + (_half(weights[s], value) if mode == "attnlrp" else weights[s].detach() * value)
                outputs.append(out)
            head_outputs.append(torch.stack(outputs))
        rows.append(torch.cat(head_outputs, dim=-1))
    return torch.stack(rows) @ attention.o_proj.weight.T


def _mlp(mlp: torch.nn.Module, x: torch.Tensor, product_rule: bool = True) -> torch.Tensor:
    gate = x @ mlp.gate_proj.weight.T
    activated = gate * torch.sigmoid(gate).detach()  # SiLU identity rule
    values = x @ mlp.up_proj.weight.T
    product = _half(activated, values) if product_rule else activated * values
    return product @ mlp.down_proj.weight.T


def _layer(layer: torch.nn.Module, hidden: torch.Tensor, cos, sin, mode: str) -> torch.Tensor:
    """One decoder layer: ``h + mixer(norm(h))``, then ``h + mlp(norm(h))`` (Llama / Qwen3 / Bamba names)."""
    normed = _rms(layer.input_layernorm, hidden)
    if hasattr(layer, "mamba"):  # a Bamba Mamba-2 layer
        update = _mamba2_mixer(layer.mamba, normed, layer.mamba.conv1d.bias, None)
    else:
        update = _attention(layer.self_attn, normed, cos, sin, mode)
    hidden = hidden + update
    if hasattr(layer, "feed_forward"):  # Bamba's names
        return hidden + _mlp(layer.feed_forward, _rms(layer.pre_ff_layernorm, hidden))
    return hidden + _mlp(layer.mlp, _rms(layer.post_attention_layernorm, hidden))


def reference_logits(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The last position's logits of the rules' forward (its value is the model's, in float64 throughout)."""
    positions = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
    cos, sin = model.model.rotary_emb(x, positions)  # constants of the positions
    hidden = x
    for layer in model.model.layers:
        hidden = _layer(layer, hidden, cos, sin, mode)
    final = model.model.final_layernorm if hasattr(model.model, "final_layernorm") else model.model.norm
    return _rms(final, hidden)[:, -1] @ model.lm_head.weight.T
