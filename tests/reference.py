"""A from-scratch MambaLRP for Hugging Face Mamba-1 models, written from the paper's equations.

It shares no code with the package: explicit loops over time for the causal convolution and the
selective scan, the rules written out inline. Used as the independent reference in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _rms_norm(norm: torch.nn.Module, x: Tensor) -> Tensor:
    scale = 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + norm.variance_epsilon)
    return x * scale.detach() * norm.weight  # Eq. (App. C): normaliser held constant


def _linear(layer: torch.nn.Module, x: Tensor) -> Tensor:
    out = x @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


def _causal_conv_silu(conv1d: torch.nn.Module, xs: Tensor, conv_bias: Tensor | None, mask: Tensor | None) -> Tensor:
    batch, length, channels = xs.shape
    kernel = conv1d.weight[:, 0, :]  # (channels, K)
    width = kernel.shape[1]
    conv_steps = []
    for t in range(length):
        acc = torch.zeros(batch, channels, dtype=xs.dtype)
        for k in range(width):
            source = t - (width - 1) + k
            if source >= 0:
                acc = acc + kernel[:, k] * xs[:, source]
        if conv_bias is not None:
            acc = acc + conv_bias
        conv_steps.append(acc)
    conv = torch.stack(conv_steps, 1)
    u = conv * torch.sigmoid(conv).detach()  # Eq. (4): SiLU with the sigmoid held constant
    return u if mask is None else u * mask[..., None]


def _weightless_rms(x: Tensor, eps: float) -> Tensor:
    """FalconMamba's norm on dt, B, C (computed in float32 by the model)."""
    wide = x.float()
    return (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _mixer(mixer: torch.nn.Module, x: Tensor, conv_bias: Tensor | None, mask: Tensor | None = None) -> Tensor:
    if hasattr(mixer, "num_heads"):
        return _mamba2_mixer(mixer, x, conv_bias, mask)
    batch, length, _ = x.shape
    channels = mixer.intermediate_size
    if mask is not None:
        x = x * mask[..., None]
    projected = _linear(mixer.in_proj, x)
    xs, z = projected[..., :channels], projected[..., channels:]
    u = _causal_conv_silu(mixer.conv1d, xs, conv_bias, mask)

    rank, state = mixer.time_step_rank, mixer.ssm_state_size
    dbc = u @ mixer.x_proj.weight.T
    dt, B, C = dbc[..., :rank], dbc[..., rank : rank + state], dbc[..., rank + state :]
    if hasattr(mixer, "rms_eps"):  # FalconMamba: weightless norms on dt, B, C
        dt, B, C = (_weightless_rms(t, mixer.rms_eps) for t in (dt, B, C))
    elif hasattr(mixer, "b_layernorm"):  # Jamba: RMSNorms with weights on dt, B, C
        dt, B, C = _rms_norm(mixer.dt_layernorm, dt), _rms_norm(mixer.b_layernorm, B), _rms_norm(mixer.c_layernorm, C)
    delta = F.softplus(dt @ mixer.dt_proj.weight.T + mixer.dt_proj.bias.float()).detach()  # Eqs. (6-7)
    B, C = B.detach(), C.detach()
    A = -torch.exp(mixer.A_log.float()).to(x.dtype)
    D = mixer.D.float().to(x.dtype)

    h = torch.zeros(batch, channels, state, dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    y = torch.stack(ys, 1)

    gate = z * torch.sigmoid(z).detach()
    product = y * gate
    gated = 0.5 * product + 0.5 * product.detach()  # Eq. (9): half rule on the multiplicative gate
    return _linear(mixer.out_proj, gated)


def _mamba2_mixer(mixer: torch.nn.Module, x: Tensor, conv_bias: Tensor | None, mask: Tensor | None) -> Tensor:
    batch, length, _ = x.shape
    inner, heads, head_dim = mixer.intermediate_size, mixer.num_heads, mixer.head_dim
    groups, state = mixer.n_groups, mixer.ssm_state_size
    if mask is not None:
        x = x * mask[..., None]
    projected = _linear(mixer.in_proj, x * getattr(mixer, "ssm_in_multiplier", 1.0))
    if hasattr(mixer, "mup_vector"):  # Falcon-H1's µP constants on the z, x, B, C, dt parts
        projected = projected * mixer.mup_vector
    z, xBC, dt = projected[..., :inner], projected[..., inner : inner + mixer.conv_dim], projected[..., -heads:]
    xBC = _causal_conv_silu(mixer.conv1d, xBC, conv_bias, mask)
    xs = xBC[..., :inner].reshape(batch, length, heads, head_dim)
    B = xBC[..., inner : inner + groups * state].reshape(batch, length, groups, state).detach()
    C = xBC[..., inner + groups * state :].reshape(batch, length, groups, state).detach()
    low, high = mixer.time_step_limit
    delta = torch.clamp(F.softplus(dt + mixer.dt_bias), low, high).detach()  # (batch, length, heads)
    A = -torch.exp(mixer.A_log.float()).to(x.dtype)

    ys = []
    h = torch.zeros(batch, heads, head_dim, state, dtype=x.dtype)
    for t in range(length):
        new_h = []
        for head in range(heads):
            group = head // (heads // groups)
            decay = torch.exp(delta[:, t, head] * A[head])[:, None, None]
            drive = (delta[:, t, head, None] * xs[:, t, head])[:, :, None] * B[:, t, group, None, :]
            new_h.append(decay * h[:, head] + drive)
        h = torch.stack(new_h, 1)
        y_t = torch.stack(
            [(h[:, head] * C[:, t, head // (heads // groups), None, :]).sum(-1) for head in range(heads)], 1
        )
        ys.append(y_t + mixer.D[None, :, None] * xs[:, t])
    y = torch.stack(ys, 1).reshape(batch, length, inner)

    gate = z * torch.sigmoid(z).detach()
    if not getattr(mixer, "mamba_rms_norm", True):  # Falcon-H1 without its gated norm: y * silu(z)
        return _linear(mixer.out_proj, _half_product(y, gate))
    if getattr(mixer.norm, "norm_before_gate", False):  # Falcon-H1's option: rmsnorm(y) * silu(z)
        return _linear(mixer.out_proj, _half_product(_group_rms_norm(mixer.norm, y), gate))
    return _linear(mixer.out_proj, _group_rms_norm(mixer.norm, _half_product(y, gate)))


def _half_product(y: Tensor, gate: Tensor) -> Tensor:
    product = y * gate
    return 0.5 * product + 0.5 * product.detach()  # Eq. (9): half rule on the multiplicative gate


def _group_rms_norm(norm: torch.nn.Module, x: Tensor) -> Tensor:
    """Mamba-2's norm per group (one group before transformers 5.2x), normaliser held constant."""
    batch, length, inner = x.shape
    groups = getattr(norm, "n_groups", None) or inner // getattr(norm, "group_size", inner)
    grouped = x.reshape(batch, length, groups, inner // groups)
    scale = 1.0 / torch.sqrt((grouped * grouped).mean(-1, keepdim=True) + norm.variance_epsilon)
    return (grouped * scale.detach()).reshape(batch, length, inner) * norm.weight


def reference_hidden(
    backbone: torch.nn.Module, embeds: Tensor, conv_biases: list[Tensor | None], mask: Tensor | None = None
) -> Tensor:
    hidden = embeds
    for block, bias in zip(backbone.layers, conv_biases):
        hidden = hidden + _mixer(block.mixer, _rms_norm(block.norm, hidden), bias, mask)
    return _rms_norm(backbone.norm_f, hidden)


def reference_explanation(
    model: torch.nn.Module, embeds: Tensor, target: int, head: str = "lm", position: int = -1
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (relevance of the embeddings, explained logit, relevance absorbed by the conv biases)."""
    with torch.enable_grad():
        x = embeds.detach().clone().requires_grad_()
        backbone = model.backbone
        biases = [
            None if b.mixer.conv1d.bias is None else b.mixer.conv1d.bias.detach().clone().requires_grad_()
            for b in backbone.layers
        ]
        hidden = reference_hidden(backbone, x, biases)
        if head == "lm":
            logits = hidden[:, position] @ model.lm_head.weight.T
        else:
            pooled = hidden.mean(1) if model.pooling == "mean" else hidden[:, -1]
            logits = pooled @ model.score.weight.T
            if model.score.bias is not None:
                logits = logits + model.score.bias
        explained = logits[:, target]
        leaves = [x] + [b for b in biases if b is not None]
        relevance = torch.zeros_like(x)
        bias_relevance = torch.zeros(x.shape[0], dtype=x.dtype)
        for row in range(x.shape[0]):  # one backward per example: bias gradients are shared by the batch
            grads = torch.autograd.grad(explained[row], leaves, retain_graph=True)
            relevance[row] = (x * grads[0])[row]
            bias_relevance[row] = sum((g * b).sum() for g, b in zip(grads[1:], leaves[1:])) if len(leaves) > 1 else 0.0
    return relevance.detach(), explained.detach(), bias_relevance
