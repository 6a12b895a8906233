"""From-scratch AttnLRP / CP-LRP for Falcon-H1, Zamba and Zamba2, written from the rules' equations.

It shares no code with the package. The mixers and the attention come from the loop references
(``reference.py``: the Mamba-1 and Mamba-2 mixers; ``reference_attention.py``: attention with
explicit loops over heads and positions); this module writes each family's layer structure:

* Falcon-H1: attention and the Mamba-2 mixer in parallel on the same normed input, their
  outputs scaled by the µP multipliers and summed into the residual; the MLP's multipliers,
  the LM head's multiplier (all constants).
* Zamba / Zamba2: Mamba layers; every hybrid layer runs the shared block on
  ``concat(h, embeddings)`` (norm, attention, norm, MLP), projects it back and adds it to the
  mixer's input, ``h + mixer(norm(h + linear(block)))``. Zamba's multi-head Mamba-1 mixer is the
  sum over its heads of Mamba-1 mixers on each head's channels (``in_proj`` interleaves ``x``
  and ``z``); Zamba2's adapters are added to their projections (folded into the weights).

Rules: normalisers held constant, SiLU / GELU by the identity rule (``x·[σ(x)]`` / ``x·[Φ(x)]``
with the factor detached), the half rule on the MLP's product.

The shared family suite calls :func:`reference_logits` through ``family_references.py`` (the
relevances are Gradient x Input of its logit).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from reference import _mamba2_mixer, _mixer
from reference_attention import _attention, _half, _rms


def _activation(act: nn.Module, x: Tensor) -> Tensor:
    """The identity rule: SiLU as ``x·[σ(x)]const``, the exact GELU as ``x·[Φ(x)]const``."""
    if "GELU" in type(act).__name__:
        return x * (0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))).detach()
    return x * torch.sigmoid(x).detach()


def _gated_mlp(act: nn.Module, gate: Tensor, values: Tensor, down: Tensor) -> Tensor:
    return _half(_activation(act, gate), values) @ down.T


# --- Falcon-H1 ----------------------------------------------------------------------------------


def _falcon_h1_layer(layer: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, mode: str) -> Tensor:
    normed = _rms(layer.input_layernorm, hidden)
    mixer = layer.mamba
    ssm = _mamba2_mixer(mixer, normed, mixer.conv1d.bias, None) * layer.ssm_out_multiplier
    attention = _attention(layer.self_attn, normed * layer.attention_in_multiplier, cos, sin, mode)
    hidden = hidden + ssm + attention * layer.attn_out_multiplier  # the two branches in parallel
    mlp = layer.feed_forward
    x = _rms(layer.pre_ff_layernorm, hidden)
    gate = (x @ mlp.gate_proj.weight.T) * mlp.gate_multiplier
    return hidden + _gated_mlp(mlp.act_fn, gate, x @ mlp.up_proj.weight.T, mlp.down_proj.weight) * mlp.down_multiplier


def _falcon_h1_logits(model: nn.Module, x: Tensor, mode: str) -> Tensor:
    positions = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
    cos, sin = model.model.rotary_emb(x, positions)  # constants of the positions
    hidden = x
    for layer in model.model.layers:
        hidden = _falcon_h1_layer(layer, hidden, cos, sin, mode)
    hidden = _rms(model.model.final_layernorm, hidden)
    return (hidden[:, -1] @ model.lm_head.weight.T) * model.model.lm_head_multiplier


# --- Zamba and Zamba2 ---------------------------------------------------------------------------


def _linear_of(weight: Tensor, bias: Tensor | None = None) -> SimpleNamespace:
    return SimpleNamespace(weight=weight, bias=bias)


def _zamba_mixer(mixer: nn.Module, x: Tensor) -> Tensor:
    """Zamba's mixer: the sum over heads of a Mamba-1 mixer on each head's channels."""
    width, inner = mixer.mamba_head_dim, mixer.intermediate_size
    weight, bias = mixer.in_proj.weight, mixer.in_proj.bias
    x_rows, z_rows = weight[0::2], weight[1::2]  # in_proj's output channels alternate x, z
    conv_bias = mixer.conv1d.bias
    total = 0.0
    for head in range(mixer.n_mamba_heads):
        channels = slice(head * width, (head + 1) * width)
        in_bias = None if bias is None else torch.cat([bias[0::2][channels], bias[1::2][channels]])
        one_head = SimpleNamespace(
            intermediate_size=width,
            in_proj=_linear_of(torch.cat([x_rows[channels], z_rows[channels]]), in_bias),
            conv1d=SimpleNamespace(weight=mixer.conv1d.weight[channels]),
            time_step_rank=mixer.time_step_rank,
            ssm_state_size=mixer.ssm_state_size,
            x_proj=_linear_of(mixer.x_proj_weight[head]),
            dt_proj=_linear_of(mixer.dt_proj_weight[head], mixer.dt_proj_bias[head]),
            A_log=mixer.A_log[head],
            D=mixer.D[head],
            out_proj=_linear_of(mixer.out_proj.weight[:, channels]),
        )
        total = total + _mixer(one_head, x, None if conv_bias is None else conv_bias[channels])
    assert inner == width * mixer.n_mamba_heads
    out_bias = mixer.out_proj.bias
    return total if out_bias is None else total + out_bias


def _folded(projection: nn.Linear, adapter: nn.Module) -> SimpleNamespace:
    """``projection(x) + adapter(x)`` as one linear map (the adapter is two linear layers, or none)."""
    if isinstance(adapter, nn.Sequential):
        return _linear_of(projection.weight + adapter[1].weight @ adapter[0].weight)
    return _linear_of(projection.weight)


def _shared_block(block: nn.Module, hidden: Tensor, embeds: Tensor, layer_idx: int, cos, sin, mode: str) -> Tensor:
    """The shared attention block on ``concat(hidden, embeddings)``: no residual inside."""
    x = _rms(block.input_layernorm, torch.cat([hidden, embeds], dim=-1))
    attention, mlp = block.self_attn, block.feed_forward
    if getattr(attention.config, "use_shared_attention_adapter", False):  # Zamba2: this use's adapters
        slot = attention.layer_dic[layer_idx]
        attention = SimpleNamespace(
            config=attention.config,
            head_dim=attention.head_dim,
            scaling=attention.scaling,
            q_proj=_folded(attention.q_proj, attention.linear_q_adapter_list[slot]),
            k_proj=_folded(attention.k_proj, attention.linear_k_adapter_list[slot]),
            v_proj=_folded(attention.v_proj, attention.linear_v_adapter_list[slot]),
            o_proj=attention.o_proj,
        )
    x = _rms(block.pre_ff_layernorm, _attention(attention, x, cos, sin, mode))
    if hasattr(mlp, "gate_up_proj"):  # Zamba2: fused gate|up projection plus this use's adapter
        fused = _folded(mlp.gate_up_proj, mlp.gate_up_proj_adapter_list[mlp.layer_dic[layer_idx]])
        gate, values = (x @ fused.weight.T).chunk(2, dim=-1)
    else:
        gate, values = x @ mlp.gate_proj.weight.T, x @ mlp.up_proj.weight.T
    return _gated_mlp(mlp.act_fn, gate, values, mlp.down_proj.weight)


def _zamba_logits(model: nn.Module, x: Tensor, mode: str, through_copy: bool = True) -> Tensor:
    backbone = model.model
    copy = x if through_copy else x.detach()  # the embeddings the hybrid layers concatenate
    cos = sin = None
    if getattr(model.config, "use_mem_rope", False):  # Zamba2's optional rotary embeddings
        positions = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
        cos, sin = backbone.rotary_emb(x, positions)
    hidden = x
    for index, layer in enumerate(backbone.layers):
        mamba_layer, update = layer, hidden
        block = getattr(layer, "shared_transf", None) or getattr(layer, "shared_transformer", None)
        if block is not None:  # a hybrid layer: the shared block's output joins the mixer's input
            mamba_layer = layer.mamba_decoder
            shared = _shared_block(block, hidden, copy, index, cos, sin, mode) @ layer.linear.weight.T
            update = hidden + shared
        normed = _rms(mamba_layer.input_layernorm, update)
        mixer = mamba_layer.mamba
        if hasattr(mixer, "n_mamba_heads"):
            hidden = hidden + _zamba_mixer(mixer, normed)
        else:
            hidden = hidden + _mamba2_mixer(mixer, normed, mixer.conv1d.bias, None)
    return _rms(backbone.final_layernorm, hidden)[:, -1] @ model.lm_head.weight.T


# --- both ---------------------------------------------------------------------------------------


def reference_logits(model: nn.Module, x: Tensor, mode: str, through_copy: bool = True) -> Tensor:
    r"""
    The last position's logits of the rules' forward for ``inputs_embeds`` ``x`` (float64 throughout);
    ``through_copy=False`` holds Zamba's concatenated copy of the embeddings constant (a control).
    """
    if model.config.model_type == "falcon_h1":
        return _falcon_h1_logits(model, x, mode)
    return _zamba_logits(model, x, mode, through_copy)
