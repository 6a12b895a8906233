"""A from-scratch AttnLRP / CP-LRP for Nemotron-H and Granite 4.0 hybrid decoders, written from the rules' equations.

It shares no code with the package: the attention with explicit loops over heads and positions
(scaled by the model's own scaling: ``1/sqrt(head_dim)`` for Nemotron-H, the ``attention_multiplier``
for Granite; rotary embeddings where the model has them), the uniform (half) rule on q·kᵀ and A·V
(AttnLRP) or the attention weights held constant (CP-LRP); the MLPs with their activations'
identity rules (squared ReLU ``x·[relu(x)]const``, SiLU ``x·[σ(x)]const``) and the half rule on a
gated MLP's product; the µP multipliers as the constants they are. The Mamba-2 mixers come from
the Mamba reference (``reference.py``), the RMSNorm and the rotary embedding from
``reference_attention.py``.
"""

from __future__ import annotations

import torch

from reference import _mamba2_mixer
from reference_attention import _half, _rms, _rotate


def _attention(attention: torch.nn.Module, x: torch.Tensor, scaling: float, mode: str, cos=None, sin=None):
    batch, length, _ = x.shape
    config = attention.config
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, attention.head_dim
    q = (x @ attention.q_proj.weight.T).reshape(batch, length, heads, dim)
    k = (x @ attention.k_proj.weight.T).reshape(batch, length, kv_heads, dim)
    v = (x @ attention.v_proj.weight.T).reshape(batch, length, kv_heads, dim)
    rows = []
    for b in range(batch):
        head_outputs = []
        for h in range(heads):
            g = h // (heads // kv_heads)  # grouped-query: query head h reads key/value head g
            qh, kh = q[b, :, h], k[b, :, g]
            if cos is not None:
                qh, kh = _rotate(qh, cos[b], sin[b]), _rotate(kh, cos[b], sin[b])
            outputs = []
            for t in range(length):
                scores = []
                for s in range(t + 1):  # causal
                    product = _half(qh[t], kh[s]) if mode == "attnlrp" else qh[t] * kh[s]
                    scores.append(product.sum() * scaling)
                weights = torch.softmax(torch.stack(scores), dim=0)
                out = torch.zeros(dim, dtype=x.dtype)
                for s in range(t + 1):
                    value = v[b, s, g]
                    out = out + (_half(weights[s], value) if mode == "attnlrp" else weights[s].detach() * value)
                outputs.append(out)
            head_outputs.append(torch.stack(outputs))
        rows.append(torch.cat(head_outputs, dim=-1))
    return torch.stack(rows) @ attention.o_proj.weight.T


def _squared_relu_mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Nemotron-H's MLP ``down(relu(up(x))²)``: the squared ReLU as ``x·[relu(x)]const``."""
    up = x @ mlp.up_proj.weight.T
    activated = up * torch.relu(up).detach()
    return activated @ mlp.down_proj.weight.T


def _granite_mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Granite's shared MLP: one projection to both branches (gate first), SiLU rule, half rule on the product."""
    projected = x @ mlp.input_linear.weight.T
    width = projected.shape[-1] // 2
    gate, values = projected[..., :width], projected[..., width:]
    activated = gate * torch.sigmoid(gate).detach()
    return _half(activated, values) @ mlp.output_linear.weight.T


def _nemotron_h_hidden(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    hidden = x
    for block in model.model.layers:  # each layer: h + mixer(norm(h)), the mixer by the hybrid pattern
        normed = _rms(block.norm, hidden)
        kind = model.config.layers_block_type[block.layer_idx]
        if kind == "linear_attention":
            update = _mamba2_mixer(block.mixer, normed, block.mixer.conv1d.bias, None)
        elif kind == "full_attention":  # no positional embedding
            update = _attention(block.mixer, normed, model.config.head_dim**-0.5, mode)
        elif kind == "mlp":
            update = _squared_relu_mlp(block.mixer, normed)
        else:
            raise NotImplementedError(f"the reference has no {kind!r} layer")
        hidden = hidden + update
    return _rms(model.model.norm_f, hidden)


def _granite_hidden(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    config = model.config
    hidden = x * config.embedding_multiplier
    cos = sin = None
    if model.model.rotary_emb is not None:
        positions = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
        cos, sin = model.model.rotary_emb(hidden, positions)  # constants of the positions
    residual = config.residual_multiplier
    for index, layer in enumerate(model.model.layers):
        normed = _rms(layer.input_layernorm, hidden)
        if config.layers_block_type[index] == "linear_attention":
            update = _mamba2_mixer(layer.mamba, normed, layer.mamba.conv1d.bias, None)
        else:
            update = _attention(layer.self_attn, normed, config.attention_multiplier, mode, cos, sin)
        hidden = hidden + residual * update
        hidden = hidden + residual * _granite_mlp(layer.shared_mlp, _rms(layer.post_attention_layernorm, hidden))
    return _rms(model.model.norm, hidden)


def reference_logits(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The last position's logits of the rules' forward (its value is the model's, in float64 throughout)."""
    if model.config.model_type == "nemotron_h":
        return _nemotron_h_hidden(model, x, mode)[:, -1] @ model.lm_head.weight.T
    return _granite_hidden(model, x, mode)[:, -1] @ model.lm_head.weight.T / model.config.logits_scaling


def reference(
    model: torch.nn.Module, embeds: torch.Tensor, target: int, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevance of the embeddings, explained logit at the last position)."""
    x = embeds.clone().requires_grad_()
    logit = reference_logits(model, x, mode)[:, target]
    (gradient,) = torch.autograd.grad(logit.sum(), x)
    return (x * gradient).detach(), logit.detach()
