"""A from-scratch MambaLRP for the package's Vision Mamba, written from the papers' equations.

It shares no code with the package (the causal convolution is the text reference's): explicit loops over time for the causal convolutions and both
selective scans, the rules written out inline (SiLU Eq. 4, SSM Eqs. 6-7, gate Eq. 9, norms held
constant), and the LRP-γ rule of the patch projection computed directly from its contributions
``z_jk = x_j w_jk`` patch by patch (no gradient trick).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reference import _causal_conv_silu as causal_conv_silu


def _rms_norm(norm: torch.nn.Module, x: Tensor) -> Tensor:
    scale = 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + norm.eps)
    return x * scale.detach() * norm.weight  # normaliser held constant


def _silu_rule(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x).detach()  # Eq. (4)


def _direction(mixer: torch.nn.Module, x: Tensor, z: Tensor, suffix: str) -> Tensor:
    """One scan direction under the rules, on sequences already in that direction's order."""
    conv = getattr(mixer, "conv1d" + suffix)
    x_proj = getattr(mixer, "x_proj" + suffix)
    dt_proj = getattr(mixer, "dt_proj" + suffix)
    A = -torch.exp(getattr(mixer, "A_b_log" if suffix else "A_log").float()).to(x.dtype)
    D = getattr(mixer, "D" + suffix).float().to(x.dtype)
    batch, length, channels = x.shape
    u = causal_conv_silu(conv, x, conv.bias, None)  # explicit loop over time; SiLU rule (Eq. 4)
    rank, state = mixer.dt_rank, mixer.d_state
    selection = u.detach() @ x_proj.weight.T  # the selection is held constant (Eqs. 6-7)
    dt, B, C = selection[..., :rank], selection[..., rank : rank + state], selection[..., rank + state :]
    delta = F.softplus(dt @ dt_proj.weight.T + dt_proj.bias.float())
    h = torch.zeros(batch, channels, state, dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    y = torch.stack(ys, 1)
    product = y * _silu_rule(z)
    return 0.5 * product + 0.5 * product.detach()  # Eq. (9): half rule on the gate


def reference_mixer(mixer: torch.nn.Module, hidden: Tensor) -> Tensor:
    """The bidirectional mixer under the rules: forward scan, scan of the reversed sequence, mean, ``out_proj``."""
    projected = hidden @ mixer.in_proj.weight.T
    x, z = projected[..., : mixer.d_inner], projected[..., mixer.d_inner :]
    forward = _direction(mixer, x, z, "")
    backward = torch.flip(_direction(mixer, torch.flip(x, [1]), torch.flip(z, [1]), "_b"), [1])
    summed = forward + backward
    mixed = summed / 2 if mixer.if_divide_out else summed
    return mixed @ mixer.out_proj.weight.T


def reference_block(block: torch.nn.Module, residual: Tensor) -> Tensor:
    """Vim's block on the residual stream: ``mixer(norm(residual))`` (the block's update)."""
    return reference_mixer(block.mixer, _rms_norm(block.norm, residual))


def reference_logits(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Logits from the token sequence entering the first block (add-norm-mix blocks, final add and norm)."""
    residual = tokens
    update = torch.zeros_like(tokens)
    for index, block in enumerate(model.layers):
        residual = residual if index == 0 else residual + update
        update = reference_block(block, residual)
    final = _rms_norm(model.norm_f, residual + update)
    pooled = final[:, model.token_position]
    return pooled @ model.head.weight.T + model.head.bias


def gamma_pixel_relevance(conv: torch.nn.Module, images: Tensor, output_relevance: Tensor, gamma: float) -> Tensor:
    r"""
    LRP-γ from the patch outputs ``R_k`` ``(batch, dim, h, w)`` to the pixels, patch by patch:
    ``R_j = Σ_k (z_jk + γ [z_jk]^±) / (Σ_j (z_jk + γ [z_jk]^±) + b_k + γ [b_k]^±) R_k``.
    """
    batch, channels, height, width = images.shape
    patch = conv.kernel_size[0]
    weight = conv.weight  # (dim, channels, p, p)
    bias = conv.bias if conv.bias is not None else torch.zeros(weight.shape[0], dtype=images.dtype)
    relevance = torch.zeros_like(images)
    for row in range(height // patch):
        for col in range(width // patch):
            window = images[:, :, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]
            z = window[:, None] * weight[None]  # (batch, dim, channels, p, p)
            total = z.flatten(2).sum(-1) + bias  # (batch, dim)
            positive = total >= 0
            favoured = torch.where(positive[..., None, None, None], z.clamp(min=0), z.clamp(max=0))
            bias_favoured = torch.where(positive, bias.clamp(min=0), bias.clamp(max=0))
            z_gamma = z + gamma * favoured
            denominator = z_gamma.flatten(2).sum(-1) + bias + gamma * bias_favoured
            share = output_relevance[:, :, row, col] / denominator
            relevance[:, :, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch] = (
                z_gamma * share[..., None, None, None]
            ).sum(1)
    return relevance


def reference_explanation(model: torch.nn.Module, images: Tensor, target: int, gamma: float = 0.25) -> Tensor:
    """Pixel relevances ``(batch, channels, H, W)`` of the logit ``target``: rules through the blocks, γ at the pixels."""
    with torch.enable_grad():
        proj = model.patch_embed.proj
        patches = F.conv2d(images, proj.weight, proj.bias, stride=proj.stride).detach().requires_grad_()
        tokens = patches.flatten(2).transpose(1, 2)
        position = model.token_position
        cls = model.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((tokens[:, :position], cls, tokens[:, position:]), dim=1) + model.pos_embed
        explained = reference_logits(model, tokens)[:, target]
        (gradient,) = torch.autograd.grad(explained.sum(), patches)
    return gamma_pixel_relevance(proj, images, (patches * gradient).detach(), gamma)
